//! `manifest.json`: what a dataset folder holds. Shards per split with their sample counts and
//! SHA-256, the schema version and spec, the route ids of each split (splits are by held-out
//! route, plus held-out days), coverage counts, and the normalization statistics computed on the
//! training split with the same feature code that runs at training and serving time.

use super::sample::{SCHEMA_VERSION, Spec};
use super::shards::{ShardInfo, ShardRef};
use crate::error::DataError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";

/// Whether a file in a dataset folder is one dfm writes there.
pub fn is_dataset_file(name: &str) -> bool {
    name == MANIFEST
        || name.ends_with(".tar")
        || name.ends_with(".tar.tmp")
        || name == "bad_records.jsonl"
        || name == "bad_records.txt"
}
pub const FORMAT: &str = "dfm-shards";
pub const SPLITS: [&str; 4] = ["train", "val", "test", "test_days"];

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub schema_version: u32,
    /// Where the data came from: `synth`, `geolife`, `gps-csv`, `lmrc`.
    pub source: String,
    pub spec: Spec,
    /// `train`, `val`, `test` (held-out routes) and `test_days` (held-out days), when present.
    pub splits: BTreeMap<String, SplitInfo>,
    pub norm: ChannelStats,
    pub coverage: Coverage,
    /// How the data was made (simulator settings, importer options).
    pub generator: serde_json::Value,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SplitInfo {
    pub samples: usize,
    pub routes: Vec<String>,
    pub shards: Vec<ShardInfo>,
}

/// Sample counts per region and per modality (how many samples carry each input / label).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Coverage {
    pub samples: usize,
    pub regions: BTreeMap<String, usize>,
    pub modalities: BTreeMap<String, usize>,
}

impl Coverage {
    pub fn add(&mut self, s: &super::sample::Sample) {
        self.samples += 1;
        *self.regions.entry(s.region.name().to_string()).or_default() += 1;
        let mut m = |k: &str, present: bool| {
            if present {
                *self.modalities.entry(k.to_string()).or_default() += 1;
            }
        };
        m("history", !s.history.is_empty());
        m("imu", s.imu.is_some());
        m("image", !s.images.is_empty());
        m("video", s.video.is_some());
        m("stops", !s.stops.is_empty());
        m("context.weather", s.context.weather.is_some());
        let t = s.target.as_ref();
        m("target.future", t.is_some_and(|t| !t.future.is_empty()));
        m(
            "target.arrival",
            t.is_some_and(|t| t.arrival_s.iter().any(Option::is_some)),
        );
        m(
            "target.on_time",
            t.is_some_and(|t| t.on_time.iter().any(Option::is_some)),
        );
        m("target.delivered", t.is_some_and(|t| t.delivered.is_some()));
        m("target.next_stop", t.is_some_and(|t| t.next_stop.is_some()));
    }
    pub fn merge(&mut self, o: &Coverage) {
        self.samples += o.samples;
        for (k, v) in &o.regions {
            *self.regions.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.modalities {
            *self.modalities.entry(k.clone()).or_default() += v;
        }
    }
}

/// Mean and standard deviation of a feature channel over the training split.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    pub std: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct ChannelStats {
    pub channels: BTreeMap<String, Moments>,
}

impl ChannelStats {
    /// The statistics of a mixture: each channel pooled over the sources that have it, each
    /// source counting by its weight (its share of training batches), so the features are
    /// normalized for the distribution the model trains on. One normalization for all
    /// sources: a served request does not say where it comes from.
    pub fn mix(parts: &[(&ChannelStats, f64)]) -> ChannelStats {
        if let [(one, _)] = parts {
            return (*one).clone();
        }
        let names: std::collections::BTreeSet<&String> =
            parts.iter().flat_map(|(n, _)| n.channels.keys()).collect();
        let mut channels = BTreeMap::new();
        for name in names {
            let have: Vec<(&Moments, f64)> = parts
                .iter()
                .filter_map(|(n, w)| {
                    n.channels
                        .get(name)
                        .filter(|m| m.count > 0)
                        .map(|m| (m, *w))
                })
                .collect();
            let total: f64 = have.iter().map(|(_, w)| w).sum();
            if have.is_empty() || total <= 0.0 {
                continue;
            }
            let mean: f64 = have.iter().map(|(m, w)| w * m.mean).sum::<f64>() / total;
            let second: f64 = have
                .iter()
                .map(|(m, w)| w * (m.std * m.std + m.mean * m.mean))
                .sum::<f64>()
                / total;
            channels.insert(
                name.clone(),
                Moments {
                    count: have.iter().map(|(m, _)| m.count).sum(),
                    mean,
                    std: (second - mean * mean).max(0.0).sqrt(),
                },
            );
        }
        ChannelStats { channels }
    }

    /// The statistics of the union of the parts' samples (each channel pooled by its counts):
    /// what one process that saw every part's training samples computes, to the manifest's
    /// precision (`dfm data merge`).
    pub fn pool(parts: &[&ChannelStats]) -> ChannelStats {
        let mut acc: BTreeMap<String, (u64, f64, f64)> = BTreeMap::new();
        for p in parts {
            for (k, m) in &p.channels {
                let e = acc.entry(k.clone()).or_insert((0, 0.0, 0.0));
                *e = pool_moments(*e, m.to_acc());
            }
        }
        ChannelStats {
            channels: acc
                .into_iter()
                .map(|(k, a)| (k, Moments::from_acc(a)))
                .collect(),
        }
    }

    /// (mean, std) of a channel; (0, 1) when the channel was never seen. The std has a floor so
    /// a constant channel does not blow up.
    pub fn get(&self, name: &str) -> (f32, f32) {
        match self.channels.get(name) {
            Some(m) if m.count > 1 => (m.mean as f32, (m.std as f32).max(1e-3)),
            _ => (0.0, 1.0),
        }
    }
    /// Root mean square of a channel (used as an isotropic scale for positions).
    pub fn rms(&self, names: &[&str]) -> f32 {
        let (mut s, mut n) = (0.0f64, 0u64);
        for name in names {
            if let Some(m) = self.channels.get(*name) {
                s += m.count as f64 * (m.std * m.std + m.mean * m.mean);
                n += m.count;
            }
        }
        if n == 0 {
            1.0
        } else {
            ((s / n as f64).sqrt() as f32).max(1e-3)
        }
    }
}

/// Running moments (Welford), merged in a fixed order so results are reproducible.
#[derive(Clone, Debug, Default)]
pub struct StatsAcc {
    acc: BTreeMap<&'static str, (u64, f64, f64)>,
}

impl StatsAcc {
    pub fn push(&mut self, name: &'static str, x: f64) {
        if !x.is_finite() {
            return;
        }
        let e = self.acc.entry(name).or_insert((0, 0.0, 0.0));
        e.0 += 1;
        let d = x - e.1;
        e.1 += d / e.0 as f64;
        e.2 += d * (x - e.1);
    }
    pub fn merge(&mut self, o: &StatsAcc) {
        for (k, &b) in &o.acc {
            let e = self.acc.entry(k).or_insert((0, 0.0, 0.0));
            *e = pool_moments(*e, b);
        }
    }
    pub fn finish(&self) -> ChannelStats {
        ChannelStats {
            channels: self
                .acc
                .iter()
                .map(|(k, &acc)| (k.to_string(), Moments::from_acc(acc)))
                .collect(),
        }
    }
}

/// Two (count, mean, sum of squared deviations) of one channel, pooled (Chan et al.).
fn pool_moments((na, ma, m2a): (u64, f64, f64), (nb, mb, m2b): (u64, f64, f64)) -> (u64, f64, f64) {
    let n = na + nb;
    if n == 0 {
        return (na, ma, m2a);
    }
    let d = mb - ma;
    (
        n,
        ma + d * nb as f64 / n as f64,
        m2a + m2b + d * d * na as f64 * nb as f64 / n as f64,
    )
}

impl Moments {
    /// From (count, mean, sum of squared deviations): the sample standard deviation, both
    /// rounded to 7 significant digits (the manifest's precision).
    fn from_acc((n, mean, m2): (u64, f64, f64)) -> Moments {
        let round = |x: f64| {
            if x == 0.0 {
                0.0
            } else {
                format!("{x:.6e}").parse().unwrap_or(x)
            }
        };
        let std = if n > 1 {
            (m2 / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Moments {
            count: n,
            mean: round(mean),
            std: round(std),
        }
    }

    fn to_acc(self) -> (u64, f64, f64) {
        let dof = self.count.saturating_sub(1) as f64;
        (self.count, self.mean, self.std * self.std * dof)
    }
}

impl Manifest {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(MANIFEST)
    }

    /// Loads and checks a dataset folder's manifest: format, schema version, and that every
    /// listed shard exists. (A truncated shard is reported by the reader, which can name the
    /// record where the data stops.)
    pub fn load(dir: &Path) -> Result<Manifest, DataError> {
        let path = Self::path(dir);
        let bytes = crate::store::read_bounded(&path, crate::util::limits::METADATA).map_err(|e| {
            DataError::file(&path, format!("cannot read the dataset manifest ({e:#}); is this a dataset folder made by `dfm data`?"))
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let m: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            DataError {
                field: Some(field),
                ..DataError::file(&path, e.into_inner().to_string())
            }
        })?;
        if m.format != FORMAT {
            return Err(DataError {
                field: Some("format".into()),
                ..DataError::file(&path, format!("`{}` is not `{FORMAT}`", m.format))
            });
        }
        if m.schema_version != SCHEMA_VERSION {
            return Err(DataError {
                field: Some("schema_version".into()),
                ..DataError::file(
                    &path,
                    format!(
                        "schema version {} is not the version this dfm reads ({SCHEMA_VERSION})",
                        m.schema_version
                    ),
                )
            });
        }
        // In an object store, one listing says which shards are there (a store that cannot
        // list, plain HTTP, leaves it to the reader, which names a missing shard's URL).
        let listed: Option<std::collections::HashSet<String>> = crate::store::is_remote(dir)
            .then(|| crate::store::list(dir).ok())
            .flatten()
            .map(|l| l.into_iter().map(|(n, _)| n).collect());
        for (split, info) in &m.splits {
            for (i, sh) in info.shards.iter().enumerate() {
                if !crate::util::plain_file_name(&sh.file) {
                    return Err(DataError {
                        field: Some(format!("splits.{split}.shards[{i}].file")),
                        ..DataError::file(
                            &path,
                            format!(
                                "lists `{}`, not a plain file name inside the dataset folder",
                                sh.file
                            ),
                        )
                    });
                }
                let p = dir.join(&sh.file);
                let present = match &listed {
                    Some(names) => names.contains(&sh.file),
                    None => crate::store::is_remote(dir) || p.is_file(),
                };
                if !present {
                    return Err(DataError {
                        field: Some(format!("splits.{split}.shards[{i}].file")),
                        ..DataError::file(
                            &path,
                            format!(
                                "lists shard `{}`, which is missing ({})",
                                sh.file,
                                p.display()
                            ),
                        )
                    });
                }
            }
        }
        Ok(m)
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        crate::util::write_atomic(&Self::path(dir), &bytes)
    }

    /// SHA-256 of the manifest file (identifies the training data of a model).
    pub fn hash(dir: &Path) -> anyhow::Result<String> {
        crate::store::sha256(&Self::path(dir))
    }

    pub fn split(&self, name: &str) -> Option<&SplitInfo> {
        self.splits.get(name)
    }

    /// Shard paths of one split, or of every split for `all`.
    pub fn shards(&self, dir: &Path, split: &str) -> Result<Vec<ShardRef>, DataError> {
        let pick: Vec<&SplitInfo> = if split == "all" {
            self.splits.values().collect()
        } else {
            vec![self.splits.get(split).ok_or_else(|| {
                let have: Vec<&str> = self.splits.keys().map(String::as_str).collect();
                DataError::file(
                    Self::path(dir),
                    format!(
                        "has no split `{split}` (it has: {}, or `all`)",
                        have.join(", ")
                    ),
                )
            })?]
        };
        Ok(pick
            .into_iter()
            .flat_map(|s| s.shards.iter())
            .map(|sh| ShardRef {
                path: dir.join(&sh.file),
                info: sh.clone(),
            })
            .collect())
    }
}
