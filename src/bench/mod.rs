//! Benchmarks (`dfm bench ...`): each prints a table and can write `--json`.

pub mod infer;
pub mod loader;
pub mod serve;
pub mod train;
