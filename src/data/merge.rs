//! `dfm data merge --out DIR PART...`: one dataset from the parts of an array job (`part.rs`).
//!
//! Every part's shards are hard-linked (copied across file systems) under `pNNN-<file>`, so
//! names cannot collide and the hashes stay valid; each split's sample counts and route lists
//! are joined; the normalization statistics are pooled by count (what one process that saw
//! every training sample computes, to the manifest's precision); coverage is summed. The parts
//! must agree on format, schema version, source and sample shapes, hold no route twice, and be
//! the complete set of one job (each manifest names its job, index and count); every shard must
//! match its SHA-256. The merged dataset is built beside `--out` and moved into place only when
//! complete (`staged.rs`), so a failed merge leaves a dataset already there as it was.

use super::manifest::{ChannelStats, Coverage, Manifest, SplitInfo};
use super::part::PartNote;
use super::shards::ShardInfo;
use super::staged::Staged;
use anyhow::{Context, bail, ensure};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Merges the datasets in `parts` into `out` (refusing a dataset already there unless `force`).
pub fn merge(out: &Path, parts: &[PathBuf], force: bool) -> anyhow::Result<Manifest> {
    ensure!(!parts.is_empty(), "no parts to merge");
    let manifests: Vec<Manifest> = parts
        .iter()
        .map(|p| Manifest::load(p).map_err(anyhow::Error::from))
        .collect::<anyhow::Result<_>>()?;
    check_parts(parts, &manifests)?;
    check_job(parts, &manifests)?;
    for p in parts {
        ensure!(
            !same_dir(p, out),
            "--out {} is one of the parts: merge into a new folder",
            out.display()
        );
    }
    let mut staged = Staged::begin(out, force)?;
    let mut splits: BTreeMap<String, SplitInfo> = BTreeMap::new();
    for (pi, (dir, m)) in parts.iter().zip(&manifests).enumerate() {
        for (name, info) in &m.splits {
            let e = splits.entry(name.clone()).or_default();
            e.samples += info.samples;
            e.routes.extend(info.routes.iter().cloned());
            for sh in &info.shards {
                let placed = place_shard(dir, sh, staged.dir(), pi)?;
                staged.ship(&placed.file)?;
                e.shards.push(placed);
            }
        }
    }
    for info in splits.values_mut() {
        info.routes.sort();
    }
    let mut coverage = Coverage::default();
    for m in &manifests {
        coverage.merge(&m.coverage);
    }
    let first = &manifests[0];
    let manifest = Manifest {
        format: first.format.clone(),
        schema_version: first.schema_version,
        source: first.source.clone(),
        spec: first.spec.clone(),
        splits,
        norm: ChannelStats::pool(&manifests.iter().map(|m| &m.norm).collect::<Vec<_>>()),
        coverage,
        generator: serde_json::json!({
            "merged": manifests.iter().map(|m| m.generator.clone()).collect::<Vec<_>>()
        }),
    };
    manifest.write(staged.dir())?;
    staged.commit()?;
    Ok(manifest)
}

/// The parts agree on what a sample is, and no route is in two of them.
fn check_parts(parts: &[PathBuf], ms: &[Manifest]) -> anyhow::Result<()> {
    let (p0, m0) = (&parts[0], &ms[0]);
    for (p, m) in parts.iter().zip(ms).skip(1) {
        let differ = |what: &str, a: String, b: String| {
            anyhow::anyhow!(
                "{}: {what} {a} differs from {}'s {b}: these are not parts of one job",
                Manifest::path(p).display(),
                p0.display()
            )
        };
        if m.source != m0.source {
            return Err(differ("source", m.source.clone(), m0.source.clone()));
        }
        if m.schema_version != m0.schema_version {
            let v = |m: &Manifest| m.schema_version.to_string();
            return Err(differ("schema version", v(m), v(m0)));
        }
        if m.spec != m0.spec {
            let s = |m: &Manifest| serde_json::to_string(&m.spec).unwrap_or_default();
            return Err(differ("spec", s(m), s(m0)));
        }
    }
    let mut owner: BTreeMap<&str, usize> = BTreeMap::new();
    for (pi, m) in ms.iter().enumerate() {
        for r in m.splits.values().flat_map(|s| &s.routes) {
            if let Some(&other) = owner.get(r.as_str())
                && other != pi
            {
                bail!(
                    "route {r} is in both {} and {}: parts of one job never share a route",
                    parts[other].display(),
                    parts[pi].display()
                );
            }
            owner.insert(r, pi);
        }
    }
    Ok(())
}

/// The parts are the whole of one job: each manifest says it is part `i` of `n` of a job, every
/// part names the same job and count, and each index from 0 to n-1 is given once.
fn check_job(parts: &[PathBuf], ms: &[Manifest]) -> anyhow::Result<()> {
    let mut notes = Vec::new();
    for (p, m) in parts.iter().zip(ms) {
        let note = PartNote::of(&m.generator)
            .with_context(|| format!("{}", Manifest::path(p).display()))?
            .with_context(|| {
                format!(
                    "{}: not a part of an array job (a dataset made without --shard-index and --num-shards); merge joins the parts of one job",
                    p.display()
                )
            })?;
        notes.push(note);
    }
    let (p0, n0) = (&parts[0], &notes[0]);
    let mut given: BTreeMap<usize, &PathBuf> = BTreeMap::new();
    for (p, n) in parts.iter().zip(&notes) {
        ensure!(
            n.num_shards == n0.num_shards && n.job == n0.job,
            "{} is part {} of {} of another job than {} (part {} of {}): these are not parts of one job",
            p.display(),
            n.shard_index,
            n.num_shards,
            p0.display(),
            n0.shard_index,
            n0.num_shards
        );
        if let Some(other) = given.insert(n.shard_index, p) {
            bail!(
                "{} and {} are both part {} of {}: give each part once",
                other.display(),
                p.display(),
                n.shard_index,
                n.num_shards
            );
        }
    }
    let missing: Vec<String> = (0..n0.num_shards)
        .filter(|i| !given.contains_key(i))
        .map(|i| i.to_string())
        .collect();
    ensure!(
        missing.is_empty(),
        "the job has {} parts; part(s) {} are missing: merge needs every part",
        n0.num_shards,
        missing.join(", ")
    );
    Ok(())
}

/// A part's shard, linked (or copied) into `out` under a name of its own; its size and SHA-256
/// checked against the part's manifest.
fn place_shard(dir: &Path, sh: &ShardInfo, out: &Path, part: usize) -> anyhow::Result<ShardInfo> {
    let (src, file) = (dir.join(&sh.file), format!("p{part:03}-{}", sh.file));
    let dst = out.join(&file);
    let unreadable = || format!("{}: listed in its manifest, cannot be read", src.display());
    let (reader, len) = match crate::store::is_remote(&src) {
        true => {
            let (r, len) = crate::store::open(&src).with_context(unreadable)?;
            (Some(r), len)
        }
        false => (
            None,
            std::fs::metadata(&src).with_context(unreadable)?.len(),
        ),
    };
    ensure!(
        len == sh.bytes,
        "{}: {len} bytes, its manifest says {}",
        src.display(),
        sh.bytes
    );
    let copy_failed = || format!("cannot copy {} to {}", src.display(), dst.display());
    if let Some(mut r) = reader {
        let mut f = std::fs::File::create(&dst).with_context(copy_failed)?;
        std::io::copy(&mut r, &mut f).with_context(copy_failed)?;
    } else if std::fs::hard_link(&src, &dst).is_err() {
        std::fs::copy(&src, &dst).with_context(copy_failed)?;
    }
    let sha = super::shards::sha256_file(&dst)
        .with_context(|| format!("cannot read {}", dst.display()))?;
    ensure!(
        sha == sh.sha256,
        "{}: its SHA-256 differs from its manifest's (the shard changed after it was written)",
        src.display()
    );
    Ok(ShardInfo { file, ..sh.clone() })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    if crate::store::is_url(a) || crate::store::is_url(b) {
        let norm = |p: &Path| p.to_string_lossy().trim_end_matches('/').to_string();
        return norm(a) == norm(b);
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
