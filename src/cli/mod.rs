//! The `dfm` command line: argument structs (clap) and one library function per command, so
//! that the binary only parses and dispatches, and every command can be called from a test.

pub mod bench;
pub mod dashcam;
pub mod data;
pub mod eval;
pub mod import_args;
pub mod ranges;
pub mod runs;
pub mod serve;
pub mod train;

use bench::BenchCmd;
use clap::{Parser, Subcommand};
use data::DataCmd;
use eval::EvalArgs;
use serve::{PredictArgs, ServeArgs};
use train::{ExportArgs, QuickstartArgs, TrainArgs};

#[derive(Parser)]
#[command(
    name = "dfm",
    version,
    about = "Delivery foundation-model trainer: simulate or import delivery data, train, evaluate, export, serve"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Make, import and check datasets.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
    },
    /// Train a model from a config file (or continue a run with --resume).
    Train(TrainArgs),
    /// Evaluate a model on held-out routes, next to the baselines.
    Eval(EvalArgs),
    /// Export a trained model as a self-contained bundle.
    Export(ExportArgs),
    /// The main job: simulate a delivery world, train the quickstart model, evaluate it on
    /// held-out routes and export it.
    Quickstart(QuickstartArgs),
    /// Predict for samples in a JSON-lines file.
    Predict(PredictArgs),
    /// Serve a model over HTTP.
    Serve(ServeArgs),
    /// List and compare run folders.
    Runs {
        #[command(subcommand)]
        cmd: runs::RunsCmd,
    },
    /// Train every combination of a grid of config values, then compare them.
    Sweep(runs::SweepArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Data { cmd } => data::run(cmd),
        Cmd::Train(a) => train::train(a),
        Cmd::Eval(a) => eval::eval(a),
        Cmd::Export(a) => train::export(a),
        Cmd::Quickstart(a) => train::quickstart(a),
        Cmd::Predict(a) => serve::predict(a),
        Cmd::Serve(a) => serve::serve(a),
        Cmd::Runs { cmd } => runs::runs(cmd),
        Cmd::Sweep(a) => runs::sweep(a),
        Cmd::Bench { cmd } => bench::run(cmd),
    }
}
