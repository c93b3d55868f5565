//! A dataset written to an object store (`--out s3://...`): its files are staged in a local
//! folder, then uploaded shards first and the manifest last, so that the prefix holds a dataset
//! only once every shard is there (a shard is one request, or a multipart upload that becomes
//! visible only when complete). A writer killed before the manifest leaves no dataset; what it
//! uploaded is removed by the next writer of that prefix. `--force` replaces a dataset without
//! ever showing a mix of two: new shards that would take an old shard's name get a name of
//! their own, the manifest is replaced in one request, and only then are the old shards
//! deleted.

use super::manifest::{MANIFEST, Manifest, is_dataset_file};
use anyhow::bail;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub struct RemoteStaged {
    out: PathBuf,
    dir: crate::store::Staging,
    /// Dataset files at `out` before this writer (the dataset it replaces, or a killed
    /// writer's shards).
    old: Vec<String>,
}

impl RemoteStaged {
    /// Checks what `out` holds (a dataset only with `force`, and then nothing but a dataset)
    /// and opens a local staging folder.
    pub fn begin(out: &Path, force: bool) -> anyhow::Result<RemoteStaged> {
        crate::store::check_writable(out)?;
        let listed = crate::store::list(out)?;
        let has_dataset = listed.iter().any(|(n, _)| n == MANIFEST);
        let (old, mut theirs): (Vec<String>, Vec<String>) = listed
            .into_iter()
            .map(|(n, _)| n)
            .partition(|n| is_dataset_file(n));
        theirs.sort();
        if has_dataset && !force {
            bail!(
                "{} already holds a dataset; pass --force to replace it",
                out.display()
            );
        }
        if has_dataset && !theirs.is_empty() {
            bail!(
                "{} holds a dataset and objects dfm did not write ({}): --force replaces only datasets, so move those objects elsewhere first or choose another --out",
                out.display(),
                theirs.join(", ")
            );
        }
        Ok(RemoteStaged {
            out: out.to_path_buf(),
            dir: crate::store::Staging::new("upload")?,
            old,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Uploads the staged dataset (manifest last), then deletes the old dataset's shards.
    pub fn commit(self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let old: HashSet<&str> = self.old.iter().map(String::as_str).collect();
        rename_colliding(dir, &old)?;
        let mut names: Vec<String> = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().to_string()))
            .collect::<Result<_, _>>()?;
        names.retain(|n| is_dataset_file(n) && !n.ends_with(".tmp"));
        names.sort_by_key(|n| n == MANIFEST);
        anyhow::ensure!(
            names.last().is_some_and(|n| n == MANIFEST),
            "{}: the staged dataset has no manifest",
            dir.display()
        );
        for n in &names {
            crate::store::upload(&dir.join(n), &self.out.join(n))?;
        }
        let new: HashSet<&str> = names.iter().map(String::as_str).collect();
        for n in self.old.iter().filter(|n| !new.contains(n.as_str())) {
            if let Err(e) = crate::store::delete(&self.out.join(n)) {
                eprintln!(
                    "warning: the old {n} stays in {}: {e:#}",
                    self.out.display()
                );
            }
        }
        Ok(())
    }
}

/// Gives the staged shards whose names an old object holds a name of their own
/// (`train-000000.tar` -> `train-000000.<tag>.tar`, the tag from the new manifest's hash) and
/// rewrites the manifest to match.
fn rename_colliding(dir: &Path, old: &HashSet<&str>) -> anyhow::Result<()> {
    let mut m = Manifest::load(dir)?;
    if !m
        .splits
        .values()
        .flat_map(|s| &s.shards)
        .any(|sh| old.contains(sh.file.as_str()))
    {
        return Ok(());
    }
    let tag = &Manifest::hash(dir)?[..12];
    for info in m.splits.values_mut() {
        for sh in &mut info.shards {
            let stem = sh.file.strip_suffix(".tar").unwrap_or(&sh.file);
            let file = format!("{stem}.{tag}.tar");
            std::fs::rename(dir.join(&sh.file), dir.join(&file))?;
            sh.file = file;
        }
    }
    m.write(dir)
}
