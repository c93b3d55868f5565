//! Writing a dataset folder: samples go to the shards of their split, the training split feeds
//! the normalization statistics, every sample the coverage counts, and `finish` writes the
//! manifest last (atomically). The simulator and every importer go through this.

use super::manifest::{Coverage, FORMAT, Manifest, SplitInfo, StatsAcc};
use super::sample::{SCHEMA_VERSION, Sample, Spec};
use super::shards::{Record, ShardWriter, encode};
use crate::features::accumulate_stats;
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct DatasetWriter {
    out: PathBuf,
    shard_size: usize,
    spec: Spec,
    writers: BTreeMap<String, ShardWriter>,
    splits: BTreeMap<String, SplitInfo>,
    stats: StatsAcc,
    coverage: Coverage,
}

impl DatasetWriter {
    /// Prepares `out` (refusing to overwrite a dataset unless `force`).
    pub fn new(out: &Path, spec: Spec, shard_size: usize, force: bool) -> anyhow::Result<Self> {
        prepare_out_dir(out, force)?;
        Ok(DatasetWriter {
            out: out.to_path_buf(),
            shard_size,
            spec,
            writers: BTreeMap::new(),
            splits: BTreeMap::new(),
            stats: StatsAcc::default(),
            coverage: Coverage::default(),
        })
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Validates and writes one sample into `split`.
    pub fn add(&mut self, split: &str, s: &Sample) -> anyhow::Result<()> {
        s.validate(Some(&self.spec))
            .map_err(|e| anyhow::anyhow!("sample {}: {e}", s.key))?;
        if split == "train" {
            accumulate_stats(s, &mut self.stats);
        }
        self.coverage.add(s);
        self.add_encoded(split, &s.route_id, &encode(s)?)
    }

    /// Writes an already encoded (and validated) record; statistics and coverage are the
    /// caller's (see [`DatasetWriter::merge_stats`]).
    pub fn add_encoded(&mut self, split: &str, route_id: &str, rec: &Record) -> anyhow::Result<()> {
        let info = self.splits.entry(split.to_string()).or_default();
        info.samples += 1;
        if info.routes.last().is_none_or(|r| r != route_id)
            && !info.routes.iter().rev().take(64).any(|r| r == route_id)
        {
            info.routes.push(route_id.to_string());
        }
        let (out, size) = (self.out.clone(), self.shard_size);
        self.writers
            .entry(split.to_string())
            .or_insert_with(|| ShardWriter::new(&out, split, size))
            .append(rec)
    }

    pub fn merge_stats(&mut self, stats: &StatsAcc, coverage: &Coverage) {
        self.stats.merge(stats);
        self.coverage.merge(coverage);
    }

    /// Closes the shards and writes `manifest.json`.
    pub fn finish(
        mut self,
        source: &str,
        generator: serde_json::Value,
    ) -> anyhow::Result<Manifest> {
        for (split, w) in std::mem::take(&mut self.writers) {
            self.splits.entry(split).or_default().shards = w.finish()?;
        }
        for info in self.splits.values_mut() {
            info.routes.sort();
            info.routes.dedup();
        }
        let manifest = Manifest {
            format: FORMAT.to_string(),
            schema_version: SCHEMA_VERSION,
            source: source.to_string(),
            spec: self.spec,
            splits: self.splits,
            norm: self.stats.finish(),
            coverage: self.coverage,
            generator,
        };
        manifest.write(&self.out)?;
        Ok(manifest)
    }
}

/// Refuses to overwrite a dataset unless `force`; with `force`, removes the old shards and
/// manifest (only files dfm writes).
pub fn prepare_out_dir(out: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let ours: Vec<_> = std::fs::read_dir(out)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n == crate::data::manifest::MANIFEST
                || n.ends_with(".tar")
                || n.ends_with(".tar.tmp")
                || n == "bad_records.jsonl"
        })
        .collect();
    if !ours.is_empty() && !force {
        anyhow::bail!(
            "{} already holds a dataset; pass --force to replace it",
            out.display()
        );
    }
    for p in ours {
        std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}
