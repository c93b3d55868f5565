//! Bundles and model loading, in one place:
//! - `export.rs`: a run's checkpoint becomes a self-contained bundle (weights as burnpack and
//!   safetensors, config, normalization, the ridge baseline, SHA-256 of every file), and a
//!   bundle is loaded with every file verified;
//! - `load.rs`: a bundle or a run folder becomes a [`LoadedModel`] (the model with what its
//!   feature code needs), for `eval`, `predict`, `serve` and the benchmarks, and data is checked
//!   against the model it is given to;
//! - `remote.rs`: run folders and bundles at URLs (copied here to be read, sent to be written).

pub mod export;
pub mod load;
pub mod remote;

pub use crate::normalization::{NORMALIZATION, NormalizationFile, check_data, check_features};
pub use export::{Bundle, BundleMeta, FORMAT, Which, checkpoint_dir, export, read_bundle};
pub use load::{LoadedModel, load_trained};
