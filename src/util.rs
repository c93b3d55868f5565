//! Small shared helpers.

use anyhow::Context;
use std::io::Write;
use std::path::Path;

/// The `q` quantile of sorted values, by nearest rank; NaN when there are none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Writes a file atomically: a temporary file beside it, fsync, then rename. A crash at any
/// point leaves either the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}

/// Whether `name` is a plain file name (a bundle's or a dataset's file, named in its metadata):
/// no folder, no `..`, no absolute path; only letters, digits, `.`, `_` and `-`.
pub fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Syncs a folder's entries (names) to disk; a no-op where folders cannot be opened.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes a folder atomically: `fill` writes into `NAME.tmp/`, every file and the folder are
/// synced, then the folder is swapped into place (an older folder of that name becomes
/// `NAME.old/` for the moment of the swap). A crash at any point leaves a state that
/// [`recover_dir`] turns back into the old folder or the new one, never neither.
pub fn write_dir_atomic(
    dst: &Path,
    fill: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    write_dir_atomic_with(dst, fill, |_| {})
}

/// The steps of a folder swap, for tests that crash inside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapStep {
    /// The new folder is complete and synced in `NAME.tmp/`.
    Filled,
    /// The old folder has moved to `NAME.old/`; `NAME` does not exist.
    OldMoved,
    /// The new folder is in place; `NAME.old/` is still there.
    NewInPlace,
}

/// [`write_dir_atomic`] calling `at` after each step of the swap (a test's crash point).
pub fn write_dir_atomic_with(
    dst: &Path,
    fill: impl FnOnce(&Path) -> anyhow::Result<()>,
    mut at: impl FnMut(SwapStep),
) -> anyhow::Result<()> {
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    recover_dir(dst)?;
    let (tmp, old) = swap_names(dst);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    fill(&tmp)?;
    for e in std::fs::read_dir(&tmp)? {
        std::fs::File::open(e?.path())?.sync_all()?;
    }
    sync_dir(&tmp);
    at(SwapStep::Filled);
    if dst.exists() {
        std::fs::rename(dst, &old)?;
        sync_dir(parent);
        at(SwapStep::OldMoved);
    }
    std::fs::rename(&tmp, dst)
        .with_context(|| format!("cannot move {} into place", tmp.display()))?;
    sync_dir(parent);
    at(SwapStep::NewInPlace);
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    sync_dir(parent);
    Ok(())
}

/// `NAME.tmp` and `NAME.old` beside `NAME`.
fn swap_names(dst: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
    (
        dst.with_file_name(format!("{name}.tmp")),
        dst.with_file_name(format!("{name}.old")),
    )
}

/// Finishes or undoes a folder swap that a crash interrupted. With `NAME` missing and
/// `NAME.old` present, the crash came after the new folder was complete in `NAME.tmp` (the old
/// one only moves then): the new folder goes into place, or the old one back when `NAME.tmp` is
/// gone. Leftover `NAME.tmp` (an unfinished fill) and `NAME.old` are removed once `NAME` exists.
/// Returns what it did, if anything.
pub fn recover_dir(dst: &Path) -> anyhow::Result<Option<String>> {
    let (tmp, old) = swap_names(dst);
    let parent = dst.parent().unwrap_or(Path::new("."));
    let mut did = None;
    if !dst.exists() && old.exists() {
        let from = if tmp.exists() { &tmp } else { &old };
        std::fs::rename(from, dst)
            .with_context(|| format!("cannot move {} back into place", from.display()))?;
        sync_dir(parent);
        did = Some(format!(
            "{}: finished an interrupted swap from {}",
            dst.display(),
            from.display()
        ));
    }
    if dst.exists() {
        for p in [&tmp, &old] {
            if p.exists() {
                std::fs::remove_dir_all(p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
    }
    Ok(did)
}
