//! Where datasets live: a local folder, or a prefix in an object store. Every dataset path dfm
//! reads or writes may be a URL: `s3://bucket/prefix` (and S3-compatible servers through
//! `AWS_ENDPOINT_URL`), `gs://`, `az://`, `http(s)://` (read-only), `file://`, or a plain path.
//! The `object_store` crate speaks each store's protocol; credentials come from each store's
//! usual environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`), never from the URL, and are
//! never printed.
//!
//! Reads stream: a shard is read as its bytes arrive, a few shards ahead (`remote::Reader`),
//! with retries that resume where the bytes stopped and a timeout on a server that stalls
//! (`DFM_STORE_TIMEOUT_S`, `DFM_STORE_RETRIES`). Writes go through `data::staged`, which stages a
//! dataset on this machine and uploads it shards first, manifest last.

pub mod cache;
pub mod mirror;
mod remote;
mod settings;

pub use remote::Reader;
pub use settings::Settings;

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where one file or folder of a dataset is.
pub enum Loc {
    Local(PathBuf),
    Remote(remote::Object),
}

/// Whether `p` is written as a URL (`scheme://...`), `file://` included.
pub fn is_url(p: &Path) -> bool {
    p.to_str().and_then(scheme_of).is_some()
}

/// Whether `p` names something in an object store (a URL other than `file://`).
pub fn is_remote(p: &Path) -> bool {
    p.to_str()
        .and_then(scheme_of)
        .is_some_and(|s| !s.eq_ignore_ascii_case("file"))
}

fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    ok.then_some(scheme)
}

/// Resolves a path or URL: `file://` URLs become local paths.
pub fn locate(p: &Path) -> anyhow::Result<Loc> {
    let Some(s) = p.to_str().filter(|s| scheme_of(s).is_some()) else {
        return Ok(Loc::Local(p.to_path_buf()));
    };
    if scheme_of(s).is_some_and(|x| x.eq_ignore_ascii_case("file")) {
        let url = url::Url::parse(s).with_context(|| format!("{}: not a file URL", scrub(s)))?;
        let path = url
            .to_file_path()
            .map_err(|()| anyhow::anyhow!("{}: not a local file URL", scrub(s)))?;
        return Ok(Loc::Local(path));
    }
    Ok(Loc::Remote(remote::Object::parse(s)?))
}

/// Whether `s` is a URL with user information or a query string (where stores take keys and
/// signatures).
pub fn has_credentials(s: &str) -> bool {
    scheme_of(s).is_some() && (scrub(s) != s || s.contains('?'))
}

/// `text` with the user information and query string of every URL in it removed
/// (`scheme://user:secret@host/p` -> `scheme://host/p`): error messages pass through this
/// before they are printed, so a secret typed into a URL is never shown.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        out.push_str(
            authority
                .rsplit_once('@')
                .map_or(authority, |(_, host)| host),
        );
        // The path is kept; a query string (where stores take signatures) is not.
        let tail = &tail[end..];
        let path_end = tail
            .find(|c: char| c == '?' || c.is_whitespace())
            .unwrap_or(tail.len());
        out.push_str(&tail[..path_end]);
        rest = &tail[path_end..];
        if rest.starts_with('?') {
            out.push_str("?***");
            let q = rest
                .find(|c: char| c.is_whitespace() || c == ')')
                .unwrap_or(rest.len());
            rest = &rest[q..];
        }
    }
    out.push_str(rest);
    out
}

/// Whether a file exists there.
pub fn exists(p: &Path) -> anyhow::Result<bool> {
    match locate(p)? {
        Loc::Local(l) => Ok(l.is_file()),
        Loc::Remote(o) => Ok(o.head()?.is_some()),
    }
}

/// A whole file, refusing one larger than `max` bytes.
pub fn read_bounded(p: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    match locate(p)? {
        Loc::Local(l) => crate::util::read_bounded(&l, max),
        Loc::Remote(o) => {
            let (mut r, len) = o.open()?;
            anyhow::ensure!(
                len <= max,
                "{}: {len} bytes, more than the {max} bytes dfm reads from such a file",
                o.url()
            );
            let mut bytes = Vec::with_capacity(len as usize);
            r.read_to_end(&mut bytes)
                .with_context(|| format!("cannot read {}", o.url()))?;
            Ok(bytes)
        }
    }
}

/// A file opened for reading as a stream, and its size.
pub fn open(p: &Path) -> anyhow::Result<(Box<dyn Read + Send>, u64)> {
    match locate(p)? {
        Loc::Local(l) => {
            let f = std::fs::File::open(&l)?;
            let len = f.metadata()?.len();
            Ok((Box::new(std::io::BufReader::with_capacity(1 << 16, f)), len))
        }
        Loc::Remote(o) => {
            let (r, len) = o.open()?;
            Ok((Box::new(r), len))
        }
    }
}

/// A shard whose manifest gives its hash and size: through the shard cache when one is set
/// and the shard is in an object store (`cache.rs`), else as [`open`] reads it.
pub fn open_shard(
    p: &Path,
    sha256: &str,
    bytes: u64,
) -> anyhow::Result<(Box<dyn Read + Send>, u64)> {
    match cache::current() {
        Some(c) if is_remote(p) => c.open(sha256, bytes, || open(p)),
        _ => open(p),
    }
}

/// SHA-256 of a file, read as a stream.
pub fn sha256(p: &Path) -> anyhow::Result<String> {
    Ok(sha256_of(open(p)?.0)?)
}

/// SHA-256 of what a reader holds.
pub fn sha256_of(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The names directly inside a folder or prefix, with their sizes (none for a missing folder).
pub fn list(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    match locate(dir)? {
        Loc::Local(l) if !l.exists() => Ok(Vec::new()),
        Loc::Local(l) => {
            let mut out = Vec::new();
            for e in
                std::fs::read_dir(&l).with_context(|| format!("cannot read {}", l.display()))?
            {
                let e = e?;
                out.push((
                    e.file_name().to_string_lossy().to_string(),
                    e.metadata()?.len(),
                ));
            }
            Ok(out)
        }
        Loc::Remote(o) => o.list(),
    }
}

/// Every object under a prefix of a store (a URL), at any depth, with its path below the
/// prefix and its size; more than `max` is an error.
pub fn list_tree(dir: &Path, max: usize) -> anyhow::Result<Vec<(String, u64)>> {
    remote_of(dir)?.list_tree(max)
}

/// The object at `src` (a URL) copied to the local file `dst`, streamed; the file appears
/// under its name only once whole.
pub fn download(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let (mut r, _) = remote_of(src)?.open()?;
    let name = dst
        .file_name()
        .map_or("file".into(), |n| n.to_string_lossy());
    let part = dst.with_file_name(format!("{name}.dfm-part"));
    let mut copy = || -> anyhow::Result<()> {
        let mut f = std::fs::File::create(&part)?;
        std::io::copy(&mut r, &mut f)?;
        f.sync_all()?;
        Ok(std::fs::rename(&part, dst)?)
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(&part);
        e.context(format!(
            "cannot copy {} to {}",
            scrub(&src.display().to_string()),
            dst.display()
        ))
    })
}

/// The object at `dst` (a URL) becomes the local file `src`: one request for a small file, a
/// multipart upload for a large one (visible only once complete).
pub fn upload(src: &Path, dst: &Path) -> anyhow::Result<()> {
    remote_of(dst)?.upload(src)
}

/// Deletes the object at `dst` (a URL).
pub fn delete(dst: &Path) -> anyhow::Result<()> {
    remote_of(dst)?.delete()
}

/// A local folder where files bound for an object store are written first; removed when
/// dropped.
pub struct Staging(PathBuf);

impl Staging {
    /// A new empty folder under the system's temporary folder (`$TMPDIR`).
    pub fn new(what: &str) -> anyhow::Result<Staging> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("dfm-{what}-{}-{stamp:x}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the staging folder {}", dir.display()))?;
        Ok(Staging(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Refuses a destination dfm cannot write (a plain HTTP(S) URL).
pub fn check_writable(p: &Path) -> anyhow::Result<()> {
    match locate(p)? {
        Loc::Remote(o) => o.check_writable(),
        Loc::Local(_) => Ok(()),
    }
}

fn remote_of(p: &Path) -> anyhow::Result<remote::Object> {
    match locate(p)? {
        Loc::Remote(o) => Ok(o),
        Loc::Local(l) => anyhow::bail!("{}: not an object store URL", l.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert!(is_remote(Path::new("s3://b/p")));
        assert!(is_remote(Path::new("https://h/p")));
        assert!(!is_remote(Path::new("file:///tmp/x")));
        assert!(is_url(Path::new("file:///tmp/x")));
        assert!(!is_url(Path::new("data/quickstart")));
        assert!(!is_url(Path::new("C:\\data")));
        assert!(!is_url(Path::new("a://")) || scheme_of("a://") == Some("a"));
        match locate(Path::new("file:///tmp/x")).unwrap() {
            Loc::Local(p) => assert_eq!(p, Path::new("/tmp/x")),
            Loc::Remote(_) => panic!("file:// is local"),
        }
        assert_eq!(
            Path::new("s3://b/prefix").join("manifest.json"),
            Path::new("s3://b/prefix/manifest.json")
        );
    }

    #[test]
    fn secrets_are_redacted_and_refused() {
        assert_eq!(scrub("https://u:pw@h/x"), "https://h/x");
        assert_eq!(scrub("s3://b/x@y"), "s3://b/x@y");
        assert_eq!(
            scrub("error: https://u:pw@h/x/m.json: cannot read (s3://k:s@b/p)"),
            "error: https://h/x/m.json: cannot read (s3://b/p)"
        );
        assert_eq!(scrub("az://c/p?sig=abc/manifest.json x"), "az://c/p?*** x");
        assert!(has_credentials("az://c/p?sig=abc") && has_credentials("s3://k@b/p"));
        assert!(!has_credentials("s3://b/p") && !has_credentials("data/x?"));
        let e = locate(Path::new("https://u:pw@example.org/d"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("credentials") && !e.contains("pw"), "{e}");
        let e = locate(Path::new("ftp://h/d")).err().unwrap().to_string();
        assert!(e.contains("ftp"), "{e}");
    }
}
