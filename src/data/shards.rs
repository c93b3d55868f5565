//! WebDataset-style tar shards. A sample is a group of consecutive tar members sharing a key:
//! `KEY.json` (the [`Sample`] with `file` references), `KEY.map.png` (images), `KEY.imu.npy`
//! (float32 [n, 4]), `KEY.video.npy` (uint8 [T, H, W, 3]). Python's `webdataset` reads them as
//! they are.
//!
//! Writing is deterministic (fixed mtime, owner and mode; members in a fixed order) so the same
//! samples give byte-identical shards, and atomic (a shard is written to `NAME.tmp`, then renamed).

use super::npy;
use super::sample::{Image, Rgb8, Sample};
use crate::error::DataError;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A sample encoded as tar members: (extension, bytes), e.g. ("json", ...), ("map.png", ...).
#[derive(Clone, Debug)]
pub struct Record {
    pub key: String,
    pub members: Vec<(String, Vec<u8>)>,
}

impl Record {
    fn member(&self, ext: &str) -> Option<&[u8]> {
        self.members
            .iter()
            .find(|(e, _)| e == ext)
            .map(|(_, b)| b.as_slice())
    }
}

/// Encodes a sample: pixels to PNG members, IMU rows and video frames to `.npy` members, the rest
/// to JSON.
pub fn encode(sample: &Sample) -> anyhow::Result<Record> {
    let mut s = sample.clone();
    let mut members = Vec::new();
    let mut used = Vec::new();
    for (i, im) in s.images.iter_mut().enumerate() {
        let px = im
            .pixels
            .take()
            .ok_or_else(|| anyhow::anyhow!("sample {}: images[{i}] has no pixels", sample.key))?;
        let mut name = format!("{}.png", im.kind.name());
        if used.contains(&name) {
            name = format!("{}{i}.png", im.kind.name());
        }
        used.push(name.clone());
        members.push((name.clone(), png_bytes(&px)?));
        im.file = Some(name);
        im.png_base64 = None;
    }
    if let Some(imu) = s.imu.as_mut() {
        members.push(("imu.npy".to_string(), imu.to_npy()));
        imu.data.clear();
        imu.file = Some("imu.npy".to_string());
    }
    if let Some(v) = s.video.as_mut() {
        let fr = v
            .frames
            .take()
            .ok_or_else(|| anyhow::anyhow!("sample {}: video has no frames", sample.key))?;
        members.push(("video.npy".to_string(), fr.to_npy()));
        v.file = Some("video.npy".to_string());
        v.npy_base64 = None;
    }
    let json = serde_json::to_vec(&s)?;
    members.insert(0, ("json".to_string(), json));
    Ok(Record {
        key: sample.key.clone(),
        members,
    })
}

pub fn png_bytes(px: &Rgb8) -> anyhow::Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(px.width, px.height, px.data.clone())
        .ok_or_else(|| anyhow::anyhow!("pixel buffer does not match {}x{}", px.width, px.height))?;
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)?;
    Ok(out)
}

/// Largest side of an image in a shard, pixels (requests get the bundle's own limit).
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// Decodes a PNG of at most `max_side` pixels a side: the header's dimensions are checked
/// before any pixel is decoded, so a small file claiming a huge image (a decompression bomb)
/// costs nothing.
pub fn decode_png(bytes: &[u8], max_side: u32) -> Result<Rgb8, String> {
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(bytes), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(max_side);
    limits.max_image_height = Some(max_side);
    // The decoded image and its RGB copy.
    limits.max_alloc = Some(2 * 4 * max_side as u64 * max_side as u64 + (1 << 20));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => {
            format!("PNG larger than {max_side}x{max_side} pixels (or too large to decode): {e}")
        }
        e => format!("PNG does not decode: {e}"),
    })?;
    let rgb = img.into_rgb8();
    Ok(Rgb8 {
        width: rgb.width(),
        height: rgb.height(),
        data: rgb.into_raw(),
    })
}

/// Parses a sample's JSON, naming the field that fails (`history[3].lat`).
pub fn parse_json(bytes: &[u8]) -> Result<Sample, (String, String)> {
    // Tracking the path costs about as much as parsing; only a bad sample needs it, so it is
    // parsed again with the path when the plain parse fails (the same error, now located).
    if let Ok(s) = serde_json::from_slice(bytes) {
        return Ok(s);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = if path == "." {
            "(json)".to_string()
        } else {
            path
        };
        let mut msg = inner.to_string();
        if msg.starts_with("expected value") {
            msg.push_str(" (not a JSON value: NaN and Infinity are not numbers in JSON)");
        }
        (path, msg)
    })
}

/// Resolves images and the video clip (members or inline base64) and the IMU array, then
/// validates the sample.
pub fn resolve(
    mut s: Sample,
    member: &dyn Fn(&str) -> Option<Vec<u8>>,
    spec: Option<&super::sample::Spec>,
    max_image_side: u32,
) -> Result<Sample, (String, String)> {
    for (i, im) in s.images.iter_mut().enumerate() {
        if im.pixels.is_some() {
            continue;
        }
        let bytes = load_image_bytes(im, member).map_err(|m| (format!("images[{i}]"), m))?;
        im.pixels =
            Some(decode_png(&bytes, max_image_side).map_err(|m| (format!("images[{i}]"), m))?);
    }
    if let Some(imu) = s.imu.as_mut() {
        resolve_imu(imu, member)?;
    }
    if let Some(v) = s.video.as_mut() {
        super::video::resolve(v, member)?;
    }
    s.validate(spec).map_err(|e| (e.field, e.message))?;
    Ok(s)
}

/// Loads the IMU rows from inline `.npy` bytes (`npy_base64`) or the `file` member, unless they
/// are given as `data` rows; `[n, 4]` float32.
fn resolve_imu(
    imu: &mut super::sample::Imu,
    member: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<(), (String, String)> {
    if !imu.data.is_empty() {
        return Ok(());
    }
    let (field, bytes) = if let Some(b64) = imu.npy_base64.take() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                (
                    "imu.npy_base64".to_string(),
                    format!("does not decode: {e}"),
                )
            })?;
        ("imu.npy_base64", bytes)
    } else if let Some(name) = &imu.file {
        let bytes = member(name).ok_or_else(|| {
            (
                "imu.file".to_string(),
                format!("member `{name}` is missing"),
            )
        })?;
        ("imu.file", bytes)
    } else {
        return Ok(());
    };
    let (v, shape) = npy::read_f32(&bytes).map_err(|m| (field.to_string(), m))?;
    if shape.len() != 2 || shape[1] != 4 {
        return Err((
            field.to_string(),
            format!("shape {shape:?}, expected [n, 4]"),
        ));
    }
    imu.data = v
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    Ok(())
}

fn load_image_bytes(
    im: &Image,
    member: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, String> {
    if let Some(b64) = &im.png_base64 {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("png_base64 does not decode: {e}"));
    }
    match &im.file {
        Some(name) => member(name).ok_or_else(|| format!("member `{name}` is missing")),
        None => Err("neither `file` nor `png_base64` given".into()),
    }
}

/// Decodes a record read from `file` into a validated sample.
pub fn decode(
    rec: &Record,
    file: &Path,
    spec: Option<&super::sample::Spec>,
) -> Result<Sample, DataError> {
    let json = rec
        .member("json")
        .ok_or_else(|| DataError::field(file, &rec.key, "json", "member KEY.json is missing"))?;
    let s = parse_json(json).map_err(|(f, m)| DataError::field(file, &rec.key, f, m))?;
    if s.key != rec.key {
        return Err(DataError::field(
            file,
            &rec.key,
            "key",
            format!("`{}` differs from the tar key", s.key),
        ));
    }
    let member = |name: &str| rec.member(name).map(<[u8]>::to_vec);
    resolve(s, &member, spec, MAX_IMAGE_SIDE)
        .map_err(|(f, m)| DataError::field(file, &rec.key, f, m))
}

/// One finished shard, as listed in the manifest.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    pub file: String,
    pub samples: usize,
    pub bytes: u64,
    pub sha256: String,
}

struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct OpenShard {
    name: String,
    tmp: PathBuf,
    builder: tar::Builder<HashWriter<BufWriter<File>>>,
    count: usize,
}

/// Writes records into `PREFIX-000000.tar`, `PREFIX-000001.tar`, ... of at most `shard_size`.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    shard_size: usize,
    open: Option<OpenShard>,
    pub done: Vec<ShardInfo>,
}

impl ShardWriter {
    pub fn new(dir: &Path, prefix: &str, shard_size: usize) -> Self {
        ShardWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            shard_size: shard_size.max(1),
            open: None,
            done: Vec::new(),
        }
    }

    pub fn append(&mut self, rec: &Record) -> anyhow::Result<()> {
        if self.open.is_none() {
            let name = format!("{}-{:06}.tar", self.prefix, self.done.len());
            let tmp = self.dir.join(format!("{name}.tmp"));
            let f = File::create(&tmp).map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
            let w = HashWriter {
                inner: BufWriter::new(f),
                hash: Sha256::new(),
                bytes: 0,
            };
            let mut builder = tar::Builder::new(w);
            builder.mode(tar::HeaderMode::Deterministic);
            self.open = Some(OpenShard {
                name,
                tmp,
                builder,
                count: 0,
            });
        }
        let sh = self.open.as_mut().unwrap();
        for (ext, bytes) in &rec.members {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            sh.builder
                .append_data(&mut h, format!("{}.{ext}", rec.key), bytes.as_slice())?;
        }
        sh.count += 1;
        if sh.count >= self.shard_size {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> anyhow::Result<()> {
        if let Some(sh) = self.open.take() {
            let mut w = sh.builder.into_inner()?;
            w.flush()?;
            let HashWriter { inner, hash, bytes } = w;
            let f = inner
                .into_inner()
                .map_err(|e| anyhow::anyhow!("{}: {e}", sh.tmp.display()))?;
            f.sync_all()?;
            drop(f);
            let dst = self.dir.join(&sh.name);
            std::fs::rename(&sh.tmp, &dst)?;
            self.done.push(ShardInfo {
                file: sh.name,
                samples: sh.count,
                bytes,
                sha256: hex(&hash.finalize()),
            });
        }
        Ok(())
    }

    pub fn finish(mut self) -> anyhow::Result<Vec<ShardInfo>> {
        self.close()?;
        Ok(self.done)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    crate::store::sha256_of(File::open(path)?)
}

/// The largest member a shard may hold (a record's JSON, PNG or `.npy`), bytes.
pub const MAX_MEMBER_BYTES: u64 = 256 << 20;

/// One tar member of a shard: its path, the record key and extension of its file name, and
/// its bytes.
struct Member {
    name: String,
    key: String,
    ext: String,
    bytes: Vec<u8>,
}

/// Reads a tar member whole, refusing a name without an extension and a size the shard cannot
/// hold (`file_len`) or the read does not deliver; `at` says where in the shard it is.
fn read_member<R: Read>(
    path: &Path,
    mut entry: tar::Entry<'_, R>,
    file_len: u64,
    at: impl Fn() -> String,
) -> Result<Member, DataError> {
    let name = entry
        .path()
        .map_err(|e| DataError::file(path, format!("bad member name {}: {e}", at())))?
        .to_string_lossy()
        .to_string();
    let base = name.rsplit('/').next().unwrap_or(&name).to_string();
    let Some((key, ext)) = base.split_once('.') else {
        return Err(DataError::file(
            path,
            format!("member `{name}` has no extension"),
        ));
    };
    let size = entry.size();
    // A header may claim any size (base-256 sizes reach 2^95): believe it only when the
    // shard can hold it, so a corrupt header is an error, not an allocation failure.
    if size > file_len.min(MAX_MEMBER_BYTES) {
        return Err(DataError::record(
            path,
            key,
            format!(
                "member `{name}` claims {size} bytes in its tar header; the shard has {file_len} bytes and a member may have at most {MAX_MEMBER_BYTES} (corrupt header?)"
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    (&mut entry)
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::record(path, key, format!("cannot read member `{name}`: {e}")))?;
    if bytes.len() as u64 != size {
        return Err(DataError::record(
            path,
            key,
            format!(
                "member `{name}` is truncated: {} of {size} bytes (truncated shard?)",
                bytes.len()
            ),
        ));
    }
    Ok(Member {
        key: key.to_string(),
        ext: ext.to_string(),
        name,
        bytes,
    })
}

/// A shard opened for reading (a local file or an object's byte stream), and its size.
pub type ShardStream = (Box<dyn Read + Send>, u64);

/// A shard to read: where it is, and what its manifest says of it.
#[derive(Clone, Debug)]
pub struct ShardRef {
    pub path: PathBuf,
    pub info: ShardInfo,
}

/// Opens a shard a manifest lists (through the shard cache, when one is set).
pub fn open_listed(s: &ShardRef) -> Result<ShardStream, DataError> {
    crate::store::open_shard(&s.path, &s.info.sha256, s.info.bytes)
        .map_err(|e| DataError::file(&s.path, format!("cannot open shard: {e:#}")))
}

/// Opens a shard for reading.
pub fn open_shard(path: &Path) -> Result<ShardStream, DataError> {
    crate::store::open(path).map_err(|e| DataError::file(path, format!("cannot open shard: {e:#}")))
}

/// Adds a member to its record; a record holds each member once.
fn add_member(
    path: &Path,
    rec: &mut Record,
    name: &str,
    ext: String,
    bytes: Vec<u8>,
) -> Result<(), DataError> {
    if rec.members.iter().any(|(e, _)| *e == ext) {
        return Err(DataError::record(
            path,
            &rec.key,
            format!("member `{name}` appears twice"),
        ));
    }
    rec.members.push((ext, bytes));
    Ok(())
}

/// Reads the records of a shard in order, calling `f` for each; `f` returns `false` to stop.
/// A truncated or malformed archive is an error naming the shard and the record being read.
/// With `expected`, a shard holding another number of records is an error too.
pub fn for_each_record(
    path: &Path,
    expected: Option<usize>,
    f: impl FnMut(Record) -> bool,
) -> Result<usize, DataError> {
    records_of(path, open_shard(path)?, expected, f)
}

/// [`for_each_record`] of a shard already opened (`path` names it in messages).
pub fn records_of(
    path: &Path,
    (file, file_len): ShardStream,
    expected: Option<usize>,
    mut f: impl FnMut(Record) -> bool,
) -> Result<usize, DataError> {
    let mut ar = tar::Archive::new(file);
    let entries = ar
        .entries()
        .map_err(|e| DataError::file(path, format!("not a tar archive: {e}")))?;
    let mut cur: Option<Record> = None;
    let mut count = 0usize;
    let after = |cur: &Option<Record>| match cur {
        Some(r) => format!("in or after record `{}`", r.key),
        None => "before the first record".to_string(),
    };
    for entry in entries {
        let entry = entry.map_err(|e| {
            DataError::file(
                path,
                format!("corrupt or truncated tar {}: {e}", after(&cur)),
            )
        })?;
        let Member {
            name,
            key,
            ext,
            bytes: buf,
        } = read_member(path, entry, file_len, || after(&cur))?;
        if cur.as_ref().is_some_and(|r| r.key != key) {
            count += 1;
            if !f(cur.take().unwrap()) {
                return Ok(count);
            }
        }
        let rec = cur.get_or_insert_with(|| Record {
            key,
            members: Vec::new(),
        });
        add_member(path, rec, &name, ext, buf)?;
    }
    if let Some(r) = cur.take() {
        count += 1;
        if !f(r) {
            return Ok(count);
        }
    }
    // The archive's end blocks: read to the end, so that a shard cache sees the whole shard.
    let _ = std::io::copy(&mut ar.into_inner().take(file_len), &mut std::io::sink());
    if let Some(n) = expected
        && n != count
    {
        return Err(DataError::file(
            path,
            format!("holds {count} records, the manifest lists {n} (truncated or replaced shard?)"),
        ));
    }
    Ok(count)
}
