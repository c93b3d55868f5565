//! A dataset folder written beside its destination and moved into place only when complete.
//!
//! Every dataset writer (simulator, importers, subset, merge) fills `.NAME.dfm-new/` next to
//! `NAME`. When it finishes, the new folder replaces a dataset already at `NAME` in one swap
//! (`--force`), or its files move into a folder that held no dataset (manifest last). A writer
//! that fails, or is killed, never touches the old dataset; what it wrote is removed (at once on
//! an error, by the next writer of that folder after a kill). `--force` replaces only folders
//! that hold nothing but a dataset: a file dfm did not write is never deleted.

use super::manifest::is_dataset_file;
use crate::util::Swap;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The lock a writer holds inside its staging folder (two writers of one folder at once are
/// refused).
const LOCK: &str = ".dfm-writer.lock";

/// A dataset being written: [`Staged::dir`] is where its files go until [`Staged::commit`].
/// `--out` in an object store is staged on this machine and uploaded (`staged_remote.rs`).
pub enum Staged {
    Local(LocalStaged),
    Remote(super::staged_remote::RemoteStaged),
}

impl Staged {
    /// Checks `out` (refusing a dataset there unless `force`, and a folder with files dfm did
    /// not write even then) and opens an empty staging folder.
    pub fn begin(out: &Path, force: bool) -> anyhow::Result<Staged> {
        Ok(match crate::store::locate(out)? {
            crate::store::Loc::Local(p) => Staged::Local(LocalStaged::begin(&p, force)?),
            crate::store::Loc::Remote(_) => {
                Staged::Remote(super::staged_remote::RemoteStaged::begin(out, force)?)
            }
        })
    }

    /// Where the dataset's files are written.
    pub fn dir(&self) -> &Path {
        match self {
            Staged::Local(s) => s.dir(),
            Staged::Remote(s) => s.dir(),
        }
    }

    /// Where the dataset ends up.
    pub fn out(&self) -> &Path {
        match self {
            Staged::Local(s) => s.out(),
            Staged::Remote(s) => s.out(),
        }
    }

    /// A shard the writer has closed: bound for a bucket, it is uploaded now and its local
    /// copy removed (a local dataset keeps it in the staging folder).
    pub fn ship(&mut self, file: &str) -> anyhow::Result<()> {
        match self {
            Staged::Local(_) => Ok(()),
            Staged::Remote(s) => s.ship(file),
        }
    }

    /// Moves (or uploads) the complete dataset into place.
    pub fn commit(self) -> anyhow::Result<()> {
        match self {
            Staged::Local(s) => s.commit(),
            Staged::Remote(s) => s.commit(),
        }
    }
}

/// A dataset being written into a local folder.
pub struct LocalStaged {
    swap: Swap,
    /// `NAME` holds a dataset that the new one replaces.
    replace: bool,
    lock: Option<std::fs::File>,
    committed: bool,
}

impl LocalStaged {
    /// Checks `out` (refusing a dataset there unless `force`, and a folder with files dfm did
    /// not write even then) and opens an empty staging folder beside it.
    fn begin(out: &Path, force: bool) -> anyhow::Result<LocalStaged> {
        let out = resolve(out)?;
        let (ours, theirs) = entries(&out)?;
        if !ours.is_empty() && !force {
            bail!(
                "{} already holds a dataset; pass --force to replace it",
                out.display()
            );
        }
        if !ours.is_empty() && !theirs.is_empty() {
            bail!(
                "{} holds a dataset and files dfm did not write ({}): --force replaces the folder as a whole, so move those files elsewhere first or choose another --out",
                out.display(),
                theirs.join(", ")
            );
        }
        let swap = Swap::hidden(&out);
        let lock = claim(&swap)?;
        Ok(LocalStaged {
            swap,
            replace: !ours.is_empty(),
            lock: Some(lock),
            committed: false,
        })
    }

    fn dir(&self) -> &Path {
        &self.swap.tmp
    }

    fn out(&self) -> &Path {
        &self.swap.dst
    }

    /// Moves the complete dataset into place.
    fn commit(mut self) -> anyhow::Result<()> {
        let lock = self.dir().join(LOCK);
        std::fs::remove_file(&lock).with_context(|| format!("cannot remove {}", lock.display()))?;
        self.lock = None;
        if self.replace || !self.out().exists() {
            self.swap.finish(|_| {})?;
        } else {
            move_files_into(self.dir(), self.out())?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for LocalStaged {
    /// A writer that did not finish leaves nothing behind.
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.swap.tmp);
        }
    }
}

/// `out` as a folder path with a name of its own (`.` and symbolic links resolved).
fn resolve(out: &Path) -> anyhow::Result<PathBuf> {
    if out.exists() {
        anyhow::ensure!(out.is_dir(), "{} exists and is not a folder", out.display());
        return out
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", out.display()));
    }
    anyhow::ensure!(
        out.file_name().is_some(),
        "{}: a dataset needs a folder name",
        out.display()
    );
    Ok(out.to_path_buf())
}

/// The names in `out` dfm writes there, and the others.
fn entries(out: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    if !out.exists() {
        return Ok((ours, theirs));
    }
    for e in std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))? {
        let name = e?.file_name().to_string_lossy().to_string();
        if is_dataset_file(&name) {
            ours.push(name);
        } else {
            theirs.push(name);
        }
    }
    theirs.sort();
    Ok((ours, theirs))
}

/// Puts a swap a crash interrupted in order, removes what a killed writer left, and creates the
/// staging folder with this writer's lock in it.
fn claim(swap: &Swap) -> anyhow::Result<std::fs::File> {
    let lock_of = |dir: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
    };
    if swap.tmp.is_dir()
        && let Ok(f) = lock_of(&swap.tmp)
        && f.try_lock().is_err()
    {
        bail!(
            "another dfm process is writing {} (it holds {}); wait for it or stop it",
            swap.dst.display(),
            swap.tmp.join(LOCK).display()
        );
    }
    if let Some(line) = swap.recover()? {
        eprintln!("{line}");
    }
    swap.begin()?;
    let f = lock_of(&swap.tmp)
        .with_context(|| format!("cannot create {}", swap.tmp.join(LOCK).display()))?;
    if f.try_lock().is_err() {
        bail!(
            "another dfm process is writing {}; wait for it or stop it",
            swap.dst.display()
        );
    }
    Ok(f)
}

/// Moves the files of `from` into the existing folder `to` (the manifest last, so the folder
/// is a dataset only once every shard is there), then removes `from`.
fn move_files_into(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(from)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_by_key(|n| n == crate::data::manifest::MANIFEST);
    for n in names {
        let (a, b) = (from.join(&n), to.join(&n));
        std::fs::File::open(&a)?.sync_all()?;
        std::fs::rename(&a, &b)
            .with_context(|| format!("cannot move {} to {}", a.display(), b.display()))?;
    }
    crate::util::sync_dir(to);
    std::fs::remove_dir(from).with_context(|| format!("cannot remove {}", from.display()))
}
