//! Small shared helpers.

use anyhow::Context;
use std::io::Write;
use std::path::Path;

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

/// Writes a folder atomically: `fill` writes into `NAME.tmp/`, every file is synced, then the
/// folder is renamed into place (an older folder of that name is replaced). A crash leaves the
/// old folder or the new one, plus at worst a `.tmp` folder that readers ignore.
pub fn write_dir_atomic(
    dst: &Path,
    fill: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let parent = dst
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let name = dst.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
    let tmp = parent.join(format!("{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    fill(&tmp)?;
    for e in std::fs::read_dir(&tmp)? {
        std::fs::File::open(e?.path())?.sync_all()?;
    }
    let old = parent.join(format!("{name}.old"));
    if dst.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        std::fs::rename(dst, &old)?;
    }
    std::fs::rename(&tmp, dst)
        .with_context(|| format!("cannot move {} into place", tmp.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old)?;
    }
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}
