//! A local folder kept in step with a prefix of an object store. A run whose `run.dir` is a URL
//! works in a local copy of its folder; [`Mirror::push`] sends what changed after each
//! checkpoint, so that a job preempted on one machine resumes on another from the bucket.
//!
//! A bucket has no rename, so the order of the requests does what the swaps of a local run
//! folder do. In every folder its other files go up before its commit file (`state.json` of a
//! checkpoint, `bundle.json` of a bundle), and a commit file is deleted before the rest of its
//! folder. Files at the top go up before the folders (the metrics a checkpoint's step needs are
//! there before the checkpoint), and deletions come last (a pruned checkpoint goes once its
//! successor is whole). A checkpoint folder without its commit file was cut off: [`Mirror::pull`]
//! leaves it out and the next push deletes it. So a push cut off at any request leaves the
//! checkpoints before it whole.

use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Files that commit their folder: sent after, deleted before its other files.
pub const COMMIT_FILES: [&str; 2] = ["state.json", "bundle.json"];
/// Objects a mirrored folder may hold.
const MAX_OBJECTS: usize = 100_000;
/// Folder depth a mirror walks.
const MAX_DEPTH: usize = 4;

/// What a local file was when it was sent: its size and modification time.
type Stamp = (u64, Option<SystemTime>);

pub struct Mirror {
    remote: PathBuf,
    local: PathBuf,
    /// What the prefix holds, by path below it: the stamp of the local file sent there.
    sent: BTreeMap<String, Stamp>,
}

/// Whether a folder of this name holds a checkpoint, which is whole only with its `state.json`.
fn needs_commit(folder: &str) -> bool {
    folder == "best" || folder.starts_with("ckpt-")
}

fn folder_of(rel: &str) -> &str {
    rel.split_once('/').map_or("", |(f, _)| f)
}

fn is_commit(rel: &str) -> bool {
    COMMIT_FILES.contains(&rel.rsplit('/').next().unwrap_or(rel))
}

impl Mirror {
    /// Copies what `remote` holds into the folder `local` (created; what it held of the same
    /// names is replaced), leaving out the files `skip` names and the checkpoint folders cut off
    /// before their commit file, and mirrors `local` there from then on.
    pub fn pull(remote: &Path, local: &Path, skip: impl Fn(&str) -> bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(local)
            .with_context(|| format!("cannot create {}", local.display()))?;
        let listed = super::list_tree(remote, MAX_OBJECTS)?;
        let whole = |f: &str| {
            let commit = format!("{f}/state.json");
            !needs_commit(f) || listed.iter().any(|(r, _)| *r == commit)
        };
        let mut sent = BTreeMap::new();
        for (rel, _) in &listed {
            safe_rel(rel).with_context(|| super::scrub(&remote.display().to_string()))?;
            if !whole(folder_of(rel)) {
                sent.insert(rel.clone(), (0, None));
                continue;
            }
            if skip(rel) {
                continue;
            }
            let dst = local.join(rel);
            if let Some(d) = dst.parent() {
                std::fs::create_dir_all(d)?;
            }
            super::download(&remote.join(rel), &dst)?;
            sent.insert(rel.clone(), stamp(&dst)?);
        }
        Ok(Mirror {
            remote: remote.to_path_buf(),
            local: local.to_path_buf(),
            sent,
        })
    }

    /// A mirror of `local` at `remote`, replacing what `remote` holds: everything there counts
    /// as sent from another folder, so the first push sends every local file and deletes what
    /// `local` does not hold.
    pub fn over(remote: &Path, local: &Path) -> anyhow::Result<Self> {
        let mut sent = BTreeMap::new();
        for (rel, size) in super::list_tree(remote, MAX_OBJECTS)? {
            safe_rel(&rel)?;
            sent.insert(rel, (size, None));
        }
        Ok(Mirror {
            remote: remote.to_path_buf(),
            local: local.to_path_buf(),
            sent,
        })
    }

    /// Sends what changed in the local folder since the last push or pull, in the order the
    /// module describes. Returns the number of files sent.
    pub fn push(&mut self) -> anyhow::Result<usize> {
        let now = scan(&self.local)?;
        let changed: Vec<String> = now
            .iter()
            .filter(|(k, v)| self.sent.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        let root_changed = changed.iter().any(|r| folder_of(r).is_empty());
        let root_commits: Vec<String> = COMMIT_FILES.iter().map(|c| c.to_string()).collect();
        if root_changed {
            self.unsend(&root_commits)?;
        }
        for rel in changed
            .iter()
            .filter(|r| folder_of(r).is_empty() && !is_commit(r))
        {
            self.send(rel, &now)?;
        }
        let folders: std::collections::BTreeSet<&str> = changed
            .iter()
            .map(|r| folder_of(r))
            .filter(|f| !f.is_empty())
            .collect();
        for f in folders {
            self.send_folder(f, &changed, &now)?;
        }
        if root_changed {
            for c in root_commits.iter().filter(|c| now.contains_key(*c)) {
                self.send(c, &now)?;
            }
        }
        self.delete_gone(&now)?;
        Ok(changed.len())
    }

    /// Deletes those of `rels` the prefix holds.
    fn unsend(&mut self, rels: &[String]) -> anyhow::Result<()> {
        for c in rels {
            if self.sent.contains_key(c) {
                self.delete(c)?;
            }
        }
        Ok(())
    }

    /// A folder with changes: its old commit files out, the changed files up, its commit
    /// files up.
    fn send_folder(
        &mut self,
        f: &str,
        changed: &[String],
        now: &BTreeMap<String, Stamp>,
    ) -> anyhow::Result<()> {
        let commits: Vec<String> = COMMIT_FILES.iter().map(|c| format!("{f}/{c}")).collect();
        self.unsend(&commits)?;
        for rel in changed
            .iter()
            .filter(|r| folder_of(r) == f && !is_commit(r))
        {
            self.send(rel, now)?;
        }
        for c in commits.iter().filter(|c| now.contains_key(*c)) {
            self.send(c, now)?;
        }
        Ok(())
    }

    /// Deletes what the local folder no longer holds: in folders, commit files first; files
    /// at the top last.
    fn delete_gone(&mut self, now: &BTreeMap<String, Stamp>) -> anyhow::Result<()> {
        let mut gone: Vec<String> = self
            .sent
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        gone.sort_by_key(|r| {
            (
                folder_of(r).is_empty(),
                folder_of(r).to_string(),
                !is_commit(r),
            )
        });
        for rel in gone {
            self.delete(&rel)?;
        }
        Ok(())
    }

    fn send(&mut self, rel: &str, now: &BTreeMap<String, Stamp>) -> anyhow::Result<()> {
        super::upload(&self.local.join(rel), &self.remote.join(rel))?;
        self.sent.insert(rel.to_string(), now[rel]);
        Ok(())
    }

    fn delete(&mut self, rel: &str) -> anyhow::Result<()> {
        super::delete(&self.remote.join(rel))?;
        self.sent.remove(rel);
        Ok(())
    }
}

/// Refuses an object path that would land outside the local folder.
fn safe_rel(rel: &str) -> anyhow::Result<()> {
    let ok = !rel.is_empty()
        && rel.split('/').count() <= MAX_DEPTH
        && rel
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('\\'));
    anyhow::ensure!(ok, "`{rel}`: not a file a run folder or bundle holds");
    Ok(())
}

fn stamp(p: &Path) -> anyhow::Result<Stamp> {
    let m = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok((m.len(), m.modified().ok()))
}

/// The files of a local folder by path below it, leaving out what is dfm's own bookkeeping:
/// the lock, hidden names, and the `.tmp`/`.old` folders of swaps in progress.
fn scan(local: &Path) -> anyhow::Result<BTreeMap<String, Stamp>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(local.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = todo.pop() {
        for e in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            let skip = name.starts_with('.')
                || name.ends_with(".tmp")
                || name.ends_with(".old")
                || name.ends_with(".dfm-part");
            if skip {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let t = e.file_type()?;
            if t.is_dir() && depth + 1 < MAX_DEPTH {
                todo.push((e.path(), format!("{rel}/"), depth + 1));
            } else if t.is_file() {
                out.insert(rel, stamp(&e.path())?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_stay_inside_the_folder() {
        assert!(safe_rel("ckpt-00000005/model.bpk").is_ok());
        for bad in [
            "",
            "../x",
            "a/../../x",
            "a//b",
            "/x",
            "a\\..\\b",
            "a/b/c/d/e",
        ] {
            assert!(safe_rel(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commit_files_and_checkpoint_folders_are_known() {
        assert!(is_commit("ckpt-00000005/state.json") && is_commit("bundle.json"));
        assert!(!is_commit("ckpt-00000005/model.bpk"));
        assert_eq!(folder_of("best/model.bpk"), "best");
        assert_eq!(folder_of("metrics.jsonl"), "");
        assert!(needs_commit("ckpt-00000005") && needs_commit("best") && !needs_commit("plots"));
    }
}
