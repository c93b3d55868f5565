//! Dashcam trips: a folder per trip (or per clip) holding the GPS track and the camera's frames,
//! the common layout of driving datasets once their videos are split into frames:
//!
//! ```text
//! IN/
//!   <trip>/
//!     gps.csv          timestamp,lat,lon[,speed,heading]  (as a GPS CSV: UNIX seconds or ISO 8601)
//!     frames/          one image per frame (.png, .jpg), named by its UNIX time in seconds,
//!       1700000000.000.jpg      e.g. 1700000000.500.png
//! ```
//!
//! The track is cut into history -> future windows as GPS CSVs are (`gps_csv`); each window gets
//! the clip of its last seconds: `frames` frames `frame_step_s` apart ending at `t0`, each the
//! trip's frame nearest that time (within half a step), centre-cropped to a square and resized to
//! `size` pixels. A window whose frames are missing keeps its trajectory and has no clip (a
//! mask, as for every modality), and so does every window of a trip without `frames/`. A frame
//! that cannot be read (corrupt, not a regular file, over [`MAX_FRAME_SIDE`] pixels a side) is
//! an error naming it, or with `--skip-bad` a bad record: the windows that need it get no clip.
//! Splits: trips by a hash of their folder name.

use super::gps_csv::{Columns, read};
use super::{ImportReport, WindowOptions, hash_split, resample, windows};
use crate::data::sample::{Region, Spec};
use crate::data::video::{Frames, MAX_FRAMES, MAX_SIDE, Video};
use crate::data::writer::DatasetWriter;
use crate::error::DataError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(serde::Serialize, Clone, Debug)]
pub struct DashcamOptions {
    pub window: WindowOptions,
    /// Frames per clip, seconds between them, and the side they are resized to.
    pub frames: usize,
    pub frame_step_s: f64,
    pub size: usize,
    pub val_frac: f64,
    pub test_frac: f64,
    pub seed: u64,
    pub shard_size: usize,
    #[serde(skip)]
    pub part: crate::data::part::Part,
}

impl Default for DashcamOptions {
    fn default() -> Self {
        DashcamOptions {
            window: WindowOptions {
                step_s: 1.0,
                max_gap_s: 5.0,
                history_len: 10,
                future_len: 10,
                stride: 5,
                min_move_m: 5.0,
                utc_offset_h: 0.0,
                tz: None,
            },
            frames: 8,
            frame_step_s: 0.5,
            size: 32,
            val_frac: 0.1,
            test_frac: 0.1,
            seed: 1,
            shard_size: 1000,
            part: Default::default(),
        }
    }
}

impl DashcamOptions {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=MAX_FRAMES).contains(&self.frames),
            "--frames {}: expected 1 to {MAX_FRAMES}",
            self.frames
        );
        anyhow::ensure!(
            (1..=MAX_SIDE).contains(&self.size),
            "--size {}: expected 1 to {MAX_SIDE}",
            self.size
        );
        let span = (self.frames - 1) as f64 * self.frame_step_s;
        let window = (self.window.history_len.saturating_sub(1)) as f64 * self.window.step_s;
        anyhow::ensure!(
            self.frame_step_s > 0.0 && span <= window,
            "--frames {} every --frame-step {} s span {span} s: more than the history window ({window} s); clips lie inside it",
            self.frames,
            self.frame_step_s
        );
        Ok(())
    }
}

/// The largest frame side dfm decodes (a camera's frames are at most a few thousand pixels; a
/// small file can claim a huge image).
pub const MAX_FRAME_SIDE: u32 = 8192;

/// One trip's frames: (UNIX time, file), sorted by time; none when the trip has no `frames/`.
fn list_frames(dir: &Path) -> Result<Vec<(f64, PathBuf)>, DataError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| DataError::file(dir, format!("cannot read: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let path = e.map_err(|e| DataError::file(dir, e.to_string()))?.path();
        let ext = path
            .extension()
            .and_then(|x| x.to_str())
            .map(|x| x.to_ascii_lowercase());
        if !matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
            continue;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let t = stem
            .parse::<f64>()
            .map_err(|_| format!("`{stem}` is not a time"))
            .and_then(super::check_unix_time)
            .map_err(|m| {
                DataError::file(
                    &path,
                    format!("frame name: {m} (frames are named by UNIX seconds)"),
                )
            })?;
        out.push((t, path));
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(out)
}

/// A frame file decoded, centre-cropped to a square and resized to `size` (RGB, row-major).
/// Its size is checked on its header, before anything is decoded.
pub fn read_frame(path: &Path, size: usize) -> Result<Vec<u8>, DataError> {
    let bad = |m: String| DataError::file(path, m);
    let reader = || -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>, DataError> {
        let f = super::open_regular(path)?;
        image::ImageReader::new(std::io::BufReader::new(f))
            .with_guessed_format()
            .map_err(|e| bad(format!("cannot read: {e}")))
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| bad(format!("not a readable image: {e}")))?;
    if w > MAX_FRAME_SIDE || h > MAX_FRAME_SIDE {
        return Err(bad(format!(
            "a {w}x{h} frame; frames are at most {MAX_FRAME_SIDE} pixels a side"
        )));
    }
    let mut r = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_FRAME_SIDE);
    limits.max_image_height = Some(MAX_FRAME_SIDE);
    r.limits(limits);
    let img = r
        .decode()
        .map_err(|e| bad(format!("not a readable image: {e}")))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let side = w.min(h);
    let square = image::imageops::crop_imm(&img, (w - side) / 2, (h - side) / 2, side, side);
    let s = size as u32;
    Ok(image::imageops::resize(
        &square.to_image(),
        s,
        s,
        image::imageops::FilterType::Triangle,
    )
    .into_raw())
}

/// Decoded frames of a trip by index; `None` for one that could not be read (reported once).
type FrameCache = HashMap<usize, Option<Vec<u8>>>;

/// The frame nearest each of the clip's times (`o.frames` of them, `o.frame_step_s` apart, the
/// last at `t0`), none after `t0`, each within half a step of its time and after the one before;
/// None when a time has no such frame.
fn pick_frames(frames: &[(f64, PathBuf)], t0: f64, o: &DashcamOptions) -> Option<Vec<usize>> {
    let mut picked: Vec<usize> = Vec::with_capacity(o.frames);
    for k in 0..o.frames {
        let want = t0 - (o.frames - 1 - k) as f64 * o.frame_step_s;
        let i = frames.partition_point(|f| f.0 < want);
        let best = [i.checked_sub(1), (i < frames.len()).then_some(i)]
            .into_iter()
            .flatten()
            .filter(|&j| frames[j].0 <= t0 + 1e-6)
            .min_by(|&a, &b| {
                (frames[a].0 - want)
                    .abs()
                    .total_cmp(&(frames[b].0 - want).abs())
            });
        match best {
            Some(j)
                if (frames[j].0 - want).abs() <= o.frame_step_s / 2.0
                    && picked.last().is_none_or(|&p| p < j) =>
            {
                picked.push(j)
            }
            _ => return None,
        }
    }
    Some(picked)
}

/// The trip's clip ending at `t0`: `None` when a wanted frame has no frame within half a step,
/// or (with `skip_bad`) one of them cannot be read.
fn clip(
    frames: &[(f64, PathBuf)],
    t0: f64,
    o: &DashcamOptions,
    cache: &mut FrameCache,
    report: &mut ImportReport,
    skip_bad: bool,
) -> Result<Option<Video>, DataError> {
    let Some(picked) = pick_frames(frames, t0, o) else {
        return Ok(None);
    };
    let mut data = Vec::with_capacity(o.frames * o.size * o.size * 3);
    for &j in &picked {
        if let std::collections::hash_map::Entry::Vacant(e) = cache.entry(j) {
            let frame = match read_frame(&frames[j].1, o.size) {
                Ok(f) => Some(f),
                Err(e) => {
                    report.bad(e, skip_bad)?;
                    None
                }
            };
            e.insert(frame);
        }
        match &cache[&j] {
            Some(f) => data.extend_from_slice(f),
            None => return Ok(None),
        }
    }
    Ok(Some(Video {
        t: picked.iter().map(|&j| frames[j].0).collect(),
        fov_deg: None,
        file: None,
        npy_base64: None,
        frames: Some(Frames {
            count: o.frames,
            height: o.size,
            width: o.size,
            data,
        }),
    }))
}

/// The trip folders of `input` (each holding `gps.csv`), sorted; at least one.
fn trip_folders(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut trips: Vec<PathBuf> = std::fs::read_dir(input)
        .map_err(|e| DataError::file(input, format!("cannot read: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("gps.csv").is_file())
        .collect();
    trips.sort();
    anyhow::ensure!(
        !trips.is_empty(),
        "{}: no trip folders (a folder per trip holding gps.csv and frames/)",
        input.display()
    );
    Ok(trips)
}

/// A trip's `gps.csv`: one trajectory (no id column; the trip folder's name is its id).
fn read_track(
    path: &Path,
    clock: &super::Clock,
    report: &mut ImportReport,
    skip_bad: bool,
) -> Result<std::collections::BTreeMap<String, Vec<super::RawFix>>, DataError> {
    let columns = Columns {
        id: String::new(),
        ..Default::default()
    };
    read(path, &columns, clock, report, skip_bad)
}

/// Imports every trip folder of `input` into a dataset with clips.
pub fn import(
    input: &Path,
    out: &Path,
    o: &DashcamOptions,
    skip_bad: bool,
    force: bool,
) -> anyhow::Result<ImportReport> {
    let shares = [("val_frac", o.val_frac), ("test_frac", o.test_frac)];
    let clock = super::check_trajectory_import(&o.window, &shares, o.shard_size)?;
    o.validate()?;
    let trips = trip_folders(input)?;
    let spec = Spec {
        video_frames: o.frames,
        video_size: o.size,
        ..super::geolife::spec(&o.window)
    };
    let mut writer = DatasetWriter::new(out, spec, o.shard_size, force)?;
    let mut report = ImportReport::default();
    for trip in o.part.select(&trips) {
        let id = trip.file_name().unwrap_or_default().to_string_lossy();
        let id = id.to_string();
        report.files += 1;
        let track = read_track(&trip.join("gps.csv"), &clock, &mut report, skip_bad)?;
        let frames = list_frames(&trip.join("frames"))?;
        let split = hash_split(o.seed, &id, o.val_frac, o.test_frac);
        let mut cache = HashMap::new();
        for fixes in track.values() {
            report.records_kept += fixes.len();
            let (pieces, cuts) = resample(fixes, &o.window);
            report.drop("trajectory cut at a gap (cuts)", cuts);
            for (pi, piece) in pieces.iter().enumerate() {
                let key = format!("cam{}-{pi:03}", super::key_part(&id));
                let (samples, still) = windows(piece, &o.window, clock, &id, &key, Region::Unknown);
                report.drop("window does not move", still);
                for mut s in samples {
                    s.video = clip(&frames, s.t0, o, &mut cache, &mut report, skip_bad)?;
                    if s.video.is_none() {
                        report.drop("window without a full clip (kept, no video)", 1);
                    }
                    writer.add(split, &s)?;
                    *report.samples.entry(split.to_string()).or_default() += 1;
                }
            }
        }
    }
    let mut generator = o.part.generator(o)?;
    generator["report"] = serde_json::to_value(&report)?;
    writer.finish("dashcam", generator)?;
    Ok(report)
}
