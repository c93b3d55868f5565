//! Small shared helpers.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

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
    anyhow::ensure!(
        !path.is_dir(),
        "{} is a folder: give a file name",
        path.display()
    );
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> anyhow::Result<()> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    };
    let done = write();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
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

/// `s` with every byte `keep` refuses written as `~` and two hex digits (`~` itself is never
/// kept): distinct strings stay distinct, and the result holds only kept bytes and `~XX`.
pub fn escape(s: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b != b'~' && keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02x}"));
        }
    }
    out
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
    at: impl FnMut(SwapStep),
) -> anyhow::Result<()> {
    let swap = Swap::beside(dst);
    swap.begin()?;
    fill(&swap.tmp)?;
    swap.finish(at)
}

/// The three names of a folder swap: the destination, the folder being filled, and where the
/// old folder waits for the moment of the swap.
#[derive(Clone, Debug)]
pub struct Swap {
    pub dst: PathBuf,
    pub tmp: PathBuf,
    pub old: PathBuf,
}

impl Swap {
    /// `NAME.tmp` and `NAME.old`: for folders inside one dfm owns (a run's checkpoints).
    pub fn beside(dst: &Path) -> Swap {
        let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
        Swap {
            dst: dst.to_path_buf(),
            tmp: dst.with_file_name(format!("{name}.tmp")),
            old: dst.with_file_name(format!("{name}.old")),
        }
    }

    /// `.NAME.dfm-new` and `.NAME.dfm-old`: for folders among a user's own (datasets,
    /// bundles), where `NAME.tmp` could be the user's.
    pub fn hidden(dst: &Path) -> Swap {
        let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
        Swap {
            dst: dst.to_path_buf(),
            tmp: dst.with_file_name(format!(".{name}.dfm-new")),
            old: dst.with_file_name(format!(".{name}.dfm-old")),
        }
    }

    fn parent(&self) -> &Path {
        self.dst
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    /// Puts an interrupted swap in order and leaves an empty folder to fill at `tmp`.
    pub fn begin(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.parent())
            .with_context(|| format!("cannot create {}", self.parent().display()))?;
        self.recover()?;
        if self.tmp.exists() {
            std::fs::remove_dir_all(&self.tmp)
                .with_context(|| format!("cannot remove {}", self.tmp.display()))?;
        }
        std::fs::create_dir_all(&self.tmp)
            .with_context(|| format!("cannot create {}", self.tmp.display()))?;
        Ok(())
    }

    /// Syncs the filled folder and swaps it into place, calling `at` after each step.
    pub fn finish(&self, mut at: impl FnMut(SwapStep)) -> anyhow::Result<()> {
        let parent = self.parent();
        for e in std::fs::read_dir(&self.tmp)? {
            std::fs::File::open(e?.path())?.sync_all()?;
        }
        sync_dir(&self.tmp);
        at(SwapStep::Filled);
        if self.dst.exists() {
            std::fs::rename(&self.dst, &self.old).with_context(|| {
                format!("cannot move {} aside to replace it", self.dst.display())
            })?;
            sync_dir(parent);
            at(SwapStep::OldMoved);
        }
        std::fs::rename(&self.tmp, &self.dst)
            .with_context(|| format!("cannot move {} into place", self.tmp.display()))?;
        sync_dir(parent);
        at(SwapStep::NewInPlace);
        if self.old.exists() {
            std::fs::remove_dir_all(&self.old)?;
        }
        sync_dir(parent);
        Ok(())
    }

    /// Finishes or undoes a swap that a crash interrupted. With `NAME` missing and `old`
    /// present, the crash came after the new folder was complete in `tmp` (the old one only
    /// moves then): the new folder goes into place, or the old one back when `tmp` is gone.
    /// Leftover `tmp` (an unfinished fill) and `old` are removed once `NAME` exists. Returns
    /// what it did, if anything.
    pub fn recover(&self) -> anyhow::Result<Option<String>> {
        let (dst, tmp, old) = (&self.dst, &self.tmp, &self.old);
        let mut did = None;
        if !dst.exists() && old.exists() {
            let from = if tmp.exists() { tmp } else { old };
            std::fs::rename(from, dst)
                .with_context(|| format!("cannot move {} back into place", from.display()))?;
            sync_dir(self.parent());
            did = Some(format!(
                "{}: finished an interrupted swap from {}",
                dst.display(),
                from.display()
            ));
        }
        if dst.exists() {
            for p in [tmp, old] {
                if p.exists() {
                    std::fs::remove_dir_all(p)
                        .with_context(|| format!("cannot remove {}", p.display()))?;
                }
            }
        }
        Ok(did)
    }
}

/// [`Swap::recover`] for a folder written by [`write_dir_atomic`].
pub fn recover_dir(dst: &Path) -> anyhow::Result<Option<String>> {
    Swap::beside(dst).recover()
}

/// Size limits of the files dfm reads whole (larger ones are refused, naming the file).
pub mod limits {
    /// A config, token, link or state file.
    pub const SMALL: u64 = 1 << 20;
    /// A JSON document of metadata: a manifest, an evaluation report, normalization statistics.
    pub const METADATA: u64 = 256 << 20;
    /// A run's `metrics.jsonl`.
    pub const METRICS: u64 = 1 << 30;
    /// An input a command reads whole: an importer's JSON or track file, a JSONL of requests.
    pub const INPUT: u64 = 8 << 30;
}

/// Reads a whole regular file of at most `max` bytes. A larger file, or one that is not a
/// regular file (a FIFO, a device: reading one could block for ever), is an error naming it.
pub fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let md = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(md.is_file(), "{} is not a regular file", path.display());
    anyhow::ensure!(
        md.len() <= max,
        "{}: {} bytes, more than the {max} bytes dfm reads from such a file",
        path.display(),
        md.len()
    );
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::with_capacity(md.len() as usize);
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(
        bytes.len() as u64 <= max,
        "{}: grew past the {max} bytes dfm reads from such a file while it was read",
        path.display()
    );
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text_bounded(path: &Path, max: u64) -> anyhow::Result<String> {
    String::from_utf8(read_bounded(path, max)?)
        .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text ({e})", path.display()))
}

/// The message of a caught panic.
pub fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}
