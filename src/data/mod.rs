//! Data: the sample schema, the simulator, shards, manifest, loader and inspection.

pub mod augment;
pub mod import;
pub mod inspect;
pub mod loader;
pub mod manifest;
pub mod merge;
pub mod mixture;
pub mod npy;
pub mod part;
pub mod pipeline;
pub mod sample;
pub mod shards;
pub mod staged;
pub mod staged_remote;
pub mod stats;
pub mod stop_set;
pub mod subset;
pub mod synth;
pub mod video;
pub mod writer;
