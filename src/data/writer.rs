//! Writing a dataset folder: samples go to the shards of their split, the training split feeds
//! the normalization statistics, every sample the coverage counts, and `finish` writes the
//! manifest last, then moves the complete dataset into place (`staged.rs`): a writer that fails
//! or is killed leaves the folder as it was. The simulator and every importer go through this.

use super::manifest::{Coverage, FORMAT, Manifest, SplitInfo, StatsAcc};
use super::sample::{SCHEMA_VERSION, Sample, Spec};
use super::shards::{Record, ShardWriter, encode};
use super::staged::Staged;
use crate::data::stats::accumulate_stats;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

pub struct DatasetWriter {
    staged: Staged,
    shard_size: usize,
    spec: Spec,
    writers: BTreeMap<String, ShardWriter>,
    splits: BTreeMap<String, SplitInfo>,
    stats: StatsAcc,
    coverage: Coverage,
    /// A 128-bit digest of every key written so far: a key names one sample.
    keys: HashSet<u128>,
}

impl DatasetWriter {
    /// Prepares `out` (refusing to overwrite a dataset unless `force`).
    pub fn new(out: &Path, spec: Spec, shard_size: usize, force: bool) -> anyhow::Result<Self> {
        Ok(DatasetWriter {
            staged: Staged::begin(out, force)?,
            shard_size,
            spec,
            writers: BTreeMap::new(),
            splits: BTreeMap::new(),
            stats: StatsAcc::default(),
            coverage: Coverage::default(),
            keys: HashSet::new(),
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
        anyhow::ensure!(
            self.keys.insert(key_digest(&rec.key)),
            "sample key `{}` is written twice into {}: keys must name one sample each",
            rec.key,
            self.staged.out().display()
        );
        let info = self.splits.entry(split.to_string()).or_default();
        info.samples += 1;
        if info.routes.last().is_none_or(|r| r != route_id)
            && !info.routes.iter().rev().take(64).any(|r| r == route_id)
        {
            info.routes.push(route_id.to_string());
        }
        let (out, size) = (self.staged.dir().to_path_buf(), self.shard_size);
        let w = self
            .writers
            .entry(split.to_string())
            .or_insert_with(|| ShardWriter::new(&out, split, size));
        let closed = w.done.len();
        w.append(rec)?;
        // A shard just closed goes on its way (to a bucket: uploaded now).
        match w.done.get(closed) {
            Some(sh) => self.staged.ship(&sh.file.clone()),
            None => Ok(()),
        }
    }

    pub fn merge_stats(&mut self, stats: &StatsAcc, coverage: &Coverage) {
        self.stats.merge(stats);
        self.coverage.merge(coverage);
    }

    /// Closes the shards, writes `manifest.json` and moves the dataset into place.
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
        manifest.write(self.staged.dir())?;
        self.staged.commit()?;
        Ok(manifest)
    }
}

/// 128 bits of the SHA-256 of a sample key (a set of them finds a key written twice in a dataset
/// of millions without keeping the keys).
pub fn key_digest(key: &str) -> u128 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key.as_bytes());
    u128::from_le_bytes(d[..16].try_into().expect("32 bytes"))
}
