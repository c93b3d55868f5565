//! dfm: a delivery foundation-model trainer. See README.md, and docs/layout.md for the map.
//!
//! The library has no `unsafe` code. The binary's `main` has the project's two `unsafe` blocks,
//! both before any thread starts: SIGPIPE's default action, and `XDG_RUNTIME_DIR` for wgpu.
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
pub mod store;
pub mod util;
pub mod zones;

pub use data::sample::{SCHEMA_VERSION, Sample};
pub mod bundle;
pub mod checkpoint;
pub mod eval;
pub mod forward_pools;
pub mod model;
pub mod normalization;
pub mod optim;
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
