//! `dfm data inspect DIR`: reads and validates every record of every split, checks that splits
//! share no route, that no sample key is used twice, that counts and SHA-256 match the
//! manifest, and prints counts per split, region and modality.

use super::loader::{BadRecord, Loader, LoaderOptions};
use super::manifest::Manifest;
use super::sample::Sample;
use crate::error::DataError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

#[derive(Default, Debug)]
pub struct SplitReport {
    pub samples: usize,
    pub routes: BTreeSet<String>,
    pub regions: BTreeMap<String, usize>,
    pub modalities: BTreeMap<&'static str, usize>,
}

#[derive(Debug)]
pub struct Report {
    pub splits: BTreeMap<String, SplitReport>,
    pub bad: Vec<BadRecord>,
    /// Route ids found in more than one split.
    pub shared_routes: Vec<String>,
    /// Sample keys found more than once (in one split or across splits).
    pub duplicate_keys: Vec<String>,
}

struct Seen {
    key: String,
    route: String,
    region: &'static str,
    modalities: Vec<&'static str>,
}

fn summarize(s: Sample) -> Seen {
    let mut m = vec!["history"];
    if s.imu.is_some() {
        m.push("imu");
    }
    if !s.images.is_empty() {
        m.push("image");
    }
    if s.video.is_some() {
        m.push("video");
    }
    if !s.stops.is_empty() {
        m.push("stops");
    }
    if s.context.weather.is_some() {
        m.push("context");
    }
    if let Some(t) = &s.target {
        if !t.future.is_empty() {
            m.push("label:future");
        }
        if t.arrival_s.iter().any(Option::is_some) {
            m.push("label:eta");
        }
        if t.on_time.iter().any(Option::is_some) {
            m.push("label:on_time");
        }
        if t.delivered.is_some() {
            m.push("label:delivered");
        }
        if t.next_stop.is_some() {
            m.push("label:next_stop");
        }
    }
    Seen {
        key: s.key,
        route: s.route_id,
        region: s.region.name(),
        modalities: m,
    }
}

pub fn inspect(dir: &Path, skip_bad: bool, workers: usize) -> Result<Report, DataError> {
    let manifest = Manifest::load(dir)?;
    let total: usize = manifest.splits.values().map(|s| s.samples).sum();
    let bar = crate::progress::bar(total as u64, "validating records");
    let mut splits = BTreeMap::new();
    let mut bad = Vec::new();
    let (mut keys, mut duplicate_keys) = (std::collections::HashSet::new(), BTreeSet::new());
    for name in manifest.splits.keys() {
        let opts = LoaderOptions {
            batch_size: 256,
            workers,
            shuffle_buffer: 0,
            skip_bad,
            ..Default::default()
        };
        let loader = Loader::new(dir, &manifest, name, opts)?;
        let mut rep = SplitReport::default();
        let bar2 = bar.clone();
        for batch in loader.epoch(
            0,
            0,
            Arc::new(summarize),
            Arc::new(move |b: Vec<Seen>| {
                bar2.inc(b.len() as u64);
                b
            }),
        ) {
            for s in batch? {
                if !keys.insert(super::writer::key_digest(&s.key)) {
                    duplicate_keys.insert(s.key);
                }
                rep.samples += 1;
                rep.routes.insert(s.route);
                *rep.regions.entry(s.region.to_string()).or_default() += 1;
                for m in s.modalities {
                    *rep.modalities.entry(m).or_default() += 1;
                }
            }
        }
        bad.extend(loader.bad_records());
        splits.insert(name.clone(), rep);
    }
    bar.finish_and_clear();
    check_hashes(dir, &manifest, skip_bad, &mut bad)?;
    let shared = shared_routes(&splits);
    Ok(Report {
        splits,
        bad,
        shared_routes: shared,
        duplicate_keys: duplicate_keys.into_iter().collect(),
    })
}

/// Every shard's SHA-256 against the manifest: records can decode and still differ from what
/// was written. A mismatch is an error, or with `skip_bad` a bad record.
fn check_hashes(
    dir: &Path,
    manifest: &Manifest,
    skip_bad: bool,
    bad: &mut Vec<BadRecord>,
) -> Result<(), DataError> {
    for (split, info) in &manifest.splits {
        for sh in &info.shards {
            let p = dir.join(&sh.file);
            // Through the shard cache where one is set (its copies were checked when kept).
            let h = crate::store::open_shard(&p, &sh.sha256, sh.bytes)
                .and_then(|(r, _)| Ok(crate::store::sha256_of(r)?))
                .map_err(|e| DataError::file(&p, format!("cannot read: {e:#}")))?;
            if h != sh.sha256 {
                let e = DataError::file(
                    &p,
                    format!(
                        "SHA-256 {h} differs from the manifest's {} (split {split}): the shard was modified",
                        sh.sha256
                    ),
                );
                if skip_bad {
                    bad.push(BadRecord::from(&e));
                } else {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Route ids found in more than one split.
fn shared_routes(splits: &BTreeMap<String, SplitReport>) -> Vec<String> {
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    let mut shared = BTreeSet::new();
    for (name, rep) in splits {
        for r in &rep.routes {
            if let Some(prev) = owner.insert(r, name)
                && prev != name
            {
                shared.insert(r.clone());
            }
        }
    }
    shared.into_iter().collect()
}

impl Report {
    /// The share of samples of each split that have each modality and label.
    fn render_coverage(&self, s: &mut String) {
        let mods: BTreeSet<&&str> = self
            .splits
            .values()
            .flat_map(|r| r.modalities.keys())
            .collect();
        s.push_str("\nmodality / label coverage (share of samples)\n");
        let _ = write!(s, "{:<17}", "");
        for name in self.splits.keys() {
            let _ = write!(s, " {:>9}", name);
        }
        s.push('\n');
        for m in mods {
            let _ = write!(s, "{:<17}", m);
            for rep in self.splits.values() {
                let n = rep.modalities.get(*m).copied().unwrap_or(0);
                let _ = write!(s, " {:>8.1}%", 100.0 * n as f64 / rep.samples.max(1) as f64);
            }
            s.push('\n');
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let regions: BTreeSet<&String> = self
            .splits
            .values()
            .flat_map(|r| r.regions.keys())
            .collect();
        let _ = write!(s, "{:<10} {:>8} {:>7}", "split", "samples", "routes");
        for r in &regions {
            let _ = write!(s, " {:>9}", r);
        }
        s.push('\n');
        for (name, rep) in &self.splits {
            let _ = write!(s, "{:<10} {:>8} {:>7}", name, rep.samples, rep.routes.len());
            for r in &regions {
                let _ = write!(s, " {:>9}", rep.regions.get(*r).copied().unwrap_or(0));
            }
            s.push('\n');
        }
        self.render_coverage(&mut s);
        let routes: usize = self.splits.values().map(|r| r.routes.len()).sum();
        if self.shared_routes.is_empty() {
            let _ = writeln!(s, "\nsplits share no route id ({routes} routes in all)");
        } else {
            let _ = writeln!(
                s,
                "\nERROR: {} route ids appear in more than one split: {:?}",
                self.shared_routes.len(),
                &self.shared_routes[..self.shared_routes.len().min(5)]
            );
        }
        if !self.duplicate_keys.is_empty() {
            let _ = writeln!(
                s,
                "ERROR: {} sample keys name more than one sample: {:?}",
                self.duplicate_keys.len(),
                &self.duplicate_keys[..self.duplicate_keys.len().min(5)]
            );
        }
        if !self.bad.is_empty() {
            let _ = writeln!(s, "{} bad records skipped", self.bad.len());
        }
        s
    }
}
