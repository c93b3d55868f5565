//! The `dfm` command line: parses the arguments and runs the command (`dfm::cli`).

use clap::Parser;
use std::process::ExitCode;

/// mimalloc keeps freed tensor buffers for reuse. With the system allocator every large tensor
/// of a training step was a fresh `mmap`, paid again in page faults and zeroing: mimalloc made
/// the quickstart's training step about 5% faster on flex (README "Performance").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: set before any thread starts.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match dfm::cli::run(dfm::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
