//! A dataset written to an object store (`--out s3://...`): each shard is uploaded as soon as
//! the writer closes it, and its local copy (staged under `$TMPDIR`) removed, so the machine
//! never holds the whole dataset; the manifest goes last, so that the prefix holds a dataset
//! only once every shard is there (a shard is one request, or a multipart upload that becomes
//! visible only when complete). A writer killed before the manifest leaves no dataset; what it
//! uploaded is removed by the next writer of that prefix. `--force` replaces a dataset without
//! ever showing a mix of two: new shards that would take an old shard's name get a name of
//! their own, the manifest is replaced in one request, and only then are the old shards
//! deleted.

use super::manifest::{MANIFEST, Manifest, is_dataset_file};
use anyhow::bail;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

pub struct RemoteStaged {
    out: PathBuf,
    dir: crate::store::Staging,
    /// Dataset files at `out` before this writer (the dataset it replaces, or a killed
    /// writer's shards).
    old: Vec<String>,
    /// Shards already uploaded, by their staged name: the name each has in the bucket.
    sent: BTreeMap<String, String>,
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
            sent: BTreeMap::new(),
        })
    }

    /// Uploads a complete staged shard and removes its local copy, so that a dataset larger
    /// than this machine's disk passes through it a shard at a time. It is not part of a
    /// dataset until the manifest is uploaded.
    pub fn ship(&mut self, file: &str) -> anyhow::Result<()> {
        let name = self.bucket_name(file);
        let src = self.dir.path().join(file);
        crate::store::upload(&src, &self.out.join(&name))?;
        std::fs::remove_file(&src)?;
        self.sent.insert(file.to_string(), name);
        Ok(())
    }

    /// The name a staged shard gets in the bucket: its own, or, when an old object has it,
    /// `STEM.<tag>.tar` with a tag no old object has (the old dataset stays whole until the new
    /// manifest replaces it).
    fn bucket_name(&self, staged: &str) -> String {
        if !self.old.iter().any(|o| o == staged) {
            return staged.to_string();
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.old.join("\n").as_bytes());
        let tag = &format!("{digest:x}")[..12];
        let stem = staged.strip_suffix(".tar").unwrap_or(staged);
        (0..)
            .map(|k| match k {
                0 => format!("{stem}.{tag}.tar"),
                _ => format!("{stem}.{tag}{k}.tar"),
            })
            .find(|n| !self.old.contains(n))
            .expect("a free name")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    /// Uploads the shards not sent yet, then the manifest (naming the shards as the bucket
    /// does), then deletes the old dataset's shards.
    pub fn commit(mut self) -> anyhow::Result<()> {
        let dir = self.dir.path().to_path_buf();
        let mut staged: Vec<String> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().to_string()))
            .collect::<Result<_, _>>()?;
        staged.retain(|n| is_dataset_file(n) && !n.ends_with(".tmp") && n != MANIFEST);
        staged.sort();
        for n in &staged {
            self.ship(n)?;
        }
        let path = Manifest::path(&dir);
        anyhow::ensure!(
            path.is_file(),
            "{}: the staged dataset has no manifest",
            dir.display()
        );
        if self.sent.iter().any(|(a, b)| a != b) {
            renamed_in_manifest(&path, &self.sent)?;
        }
        crate::store::upload(&path, &self.out.join(MANIFEST))?;
        let new: HashSet<&str> = self.sent.values().map(String::as_str).collect();
        for n in self
            .old
            .iter()
            .filter(|n| !new.contains(n.as_str()) && *n != MANIFEST)
        {
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

/// Rewrites a staged manifest with the names its shards have in the bucket.
fn renamed_in_manifest(path: &Path, names: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let bytes = crate::util::read_bounded(path, crate::util::limits::METADATA)?;
    let mut m: Manifest = serde_json::from_slice(&bytes)?;
    for info in m.splits.values_mut() {
        for sh in &mut info.shards {
            if let Some(n) = names.get(&sh.file) {
                sh.file = n.clone();
            }
        }
    }
    m.write(path.parent().expect("a manifest is in a folder"))
}
