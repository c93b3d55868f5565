//! dfm: a delivery foundation-model trainer. See README.md and DESIGN notes.
//!
//! The library has no `unsafe` code (the one `unsafe` of the project, setting an environment
//! variable before any thread starts, is in the binary's `main`).
#![forbid(unsafe_code)]

pub mod batch;
pub mod bench;
pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod draw;
pub mod error;
pub mod features;
pub mod frame;
pub mod kinematics;
pub mod modality;
pub mod progress;
pub mod util;
pub mod zones;

pub use data::sample::{SCHEMA_VERSION, Sample};
pub mod bundle;
pub mod checkpoint;
pub mod eval;
pub mod model;
pub mod normalization;
pub mod passes;
pub mod plot;
pub mod predict;
pub mod quickstart;
pub mod runs;
pub mod seed;
pub mod serve;
pub mod sweep;
pub mod time_grid;
pub mod track;
pub mod train;
