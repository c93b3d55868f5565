//! Where a run's files are written: its folder on this machine, or, for a run whose `run.dir`
//! is a URL (`s3://bucket/runs/r1`), a local copy of the run folder mirrored to the bucket
//! after every checkpoint and at the end (`store::mirror`). A job preempted on one machine
//! resumes on another with `dfm train --resume URL`: the copy is pulled from the bucket, newest
//! whole checkpoint included, and the run goes on as from a local folder.
//!
//! The local copy sits under `$TMPDIR/dfm-runs/` and holds the run's lock, so two processes of
//! one machine never train a run at once; it is removed once the run's files are in the bucket.
//! (Two machines resuming one run at once are not detected: a bucket has no lock.)

use super::run_folder::lock_run;
use crate::store::mirror::Mirror;
use anyhow::Context;
use std::path::{Path, PathBuf};

pub struct RunPlace {
    /// Where the run's files are written: the run folder, or the local copy of one in a bucket.
    pub local: PathBuf,
    /// What the user calls the run: its folder or its URL.
    pub name: PathBuf,
    mirror: Option<Mirror>,
    /// The local copy's lock, taken before it was filled.
    lock: Option<std::fs::File>,
    /// Whether everything is in the bucket (the local copy can go).
    sent: bool,
}

impl RunPlace {
    /// The place of the run at `run` (a folder or a URL); a run in a bucket is pulled into its
    /// local copy first.
    pub fn open(run: &Path) -> anyhow::Result<RunPlace> {
        if !crate::store::is_remote(run) {
            return Ok(RunPlace {
                local: run.to_path_buf(),
                name: run.to_path_buf(),
                mirror: None,
                lock: None,
                sent: true,
            });
        }
        crate::store::check_writable(run)?;
        let local = local_copy(run);
        let lock = lock_run(&local)?;
        clear_but_lock(&local)?;
        let mirror = Mirror::pull(run, &local, |_| false)?;
        Ok(RunPlace {
            local,
            name: run.to_path_buf(),
            mirror: Some(mirror),
            lock: Some(lock),
            sent: false,
        })
    }

    /// Whether the run lives in an object store.
    pub fn is_remote(&self) -> bool {
        self.mirror.is_some()
    }

    /// The lock of a run folder that exists, for the trainer to hold: an existing folder is
    /// locked before anything is read from it (a run in a bucket: its local copy, locked when
    /// it was pulled); a new one is not, and is locked once the data is known to be good (a
    /// failed start leaves no folder behind).
    pub fn lock_existing(&mut self) -> anyhow::Result<Option<std::fs::File>> {
        match self.lock.take() {
            Some(l) => Ok(Some(l)),
            None => self
                .local
                .exists()
                .then(|| lock_run(&self.local))
                .transpose(),
        }
    }

    /// An error about the run's files naming the run as the user does (its URL, not the local
    /// copy's path).
    pub fn named(&self, e: anyhow::Error) -> anyhow::Error {
        if !self.is_remote() {
            return e;
        }
        let shown = crate::store::scrub(&self.name.display().to_string());
        let text = format!("{e:#}").replace(&self.local.display().to_string(), &shown);
        anyhow::anyhow!(text)
    }

    /// Sends what changed to the bucket (nothing for a local run).
    pub fn push(&mut self) -> anyhow::Result<()> {
        let Some(m) = &mut self.mirror else {
            return Ok(());
        };
        self.sent = false;
        m.push().with_context(|| {
            format!(
                "cannot send the run's files to {} (they are kept on this machine in {})",
                crate::store::scrub(&self.name.display().to_string()),
                self.local.display()
            )
        })?;
        self.sent = true;
        Ok(())
    }
}

impl Drop for RunPlace {
    /// A run in a bucket: its local copy goes once everything is sent (a run that failed sends
    /// what it has first); kept, and named, when that cannot be done.
    fn drop(&mut self) {
        if self.mirror.is_none() {
            return;
        }
        if !self.sent
            && let Err(e) = self.push()
        {
            eprintln!("warning: {}", crate::store::scrub(&format!("{e:#}")));
            return;
        }
        let _ = std::fs::remove_dir_all(&self.local);
        if let Some(parent) = self.local.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The local copy of the run at `url`: `$TMPDIR/dfm-runs/<hash of the URL>/<its last part>`
/// (the last part names the run, as a folder's name does).
fn local_copy(url: &Path) -> PathBuf {
    use sha2::{Digest, Sha256};
    let s = url.display().to_string();
    let h = format!("{:x}", Sha256::digest(s.as_bytes()));
    let last = s
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|x| !x.is_empty() && !x.contains("://") && *x != "." && *x != "..")
        .unwrap_or("run");
    std::env::temp_dir()
        .join("dfm-runs")
        .join(&h[..16])
        .join(last)
}

/// Empties a local copy left by an earlier process (the bucket holds what counts), keeping
/// the lock this process holds.
fn clear_but_lock(local: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(local).with_context(|| format!("cannot read {}", local.display()))? {
        let p = e?.path();
        if p.file_name().is_some_and(|n| n == ".lock") {
            continue;
        }
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.with_context(|| format!("cannot remove {}", p.display()))?;
    }
    Ok(())
}
