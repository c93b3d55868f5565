//! A dashcam clip: frames from the vehicle's forward-facing camera over the history window.
//!
//! Stored as the WebDataset member `KEY.video.npy` (uint8, shape [T, H, W, 3], C order: what
//! `numpy.load` and Python's `webdataset` read as they are), with the frames' times in the
//! sample's JSON (`video.t`). Requests carry the same `.npy` inline as `video.npy_base64`. A
//! dataset's spec says how many frames of what size its clips have (`video_frames`,
//! `video_size`; 0 = no video); absent video is a mask, as for every modality.

use super::npy;
use serde::{Deserialize, Serialize};

/// Most frames one clip may have.
pub const MAX_FRAMES: usize = 64;
/// Largest frame side, pixels.
pub const MAX_SIDE: usize = 512;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Video {
    /// UTC seconds of each frame, increasing, inside the history window (the last at most `t0`).
    pub t: Vec<f64>,
    /// Horizontal field of view of the camera, degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fov_deg: Option<f32>,
    /// Tar member holding the frames (`video.npy`) inside a shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The frames' `.npy`, base64-encoded, when given inline (serving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub npy_base64: Option<String>,
    /// Decoded frames, once loaded (never serialized).
    #[serde(skip)]
    pub frames: Option<Frames>,
}

/// Decoded frames: `count` RGB images of `height` x `width`, row-major, [T, H, W, 3].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Frames {
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

impl Frames {
    /// The `.npy` bytes of the frames.
    pub fn to_npy(&self) -> Vec<u8> {
        npy::write_u8(&self.data, &[self.count, self.height, self.width, 3])
    }

    /// Frames from `.npy` bytes: uint8 of shape [T, H, W, 3], at most `MAX_FRAMES` frames of
    /// `MAX_SIDE` pixels a side (checked on the header, before the data is copied).
    pub fn from_npy(bytes: &[u8]) -> Result<Frames, String> {
        let (data, shape) = npy::read_u8_in_place(bytes)?;
        let &[count, height, width, 3] = shape.as_slice() else {
            return Err(format!(
                "shape {shape:?}, expected [frames, height, width, 3]"
            ));
        };
        if count == 0 || count > MAX_FRAMES {
            return Err(format!("{count} frames, expected 1 to {MAX_FRAMES}"));
        }
        if height == 0 || width == 0 || height > MAX_SIDE || width > MAX_SIDE {
            return Err(format!(
                "frames of {height}x{width} pixels, expected 1 to {MAX_SIDE} a side"
            ));
        }
        Ok(Frames {
            count,
            height,
            width,
            data: data.to_vec(),
        })
    }
}

/// A bad field of a clip: (field path, message).
pub type BadField = (String, String);

fn err(field: impl Into<String>, message: impl Into<String>) -> BadField {
    (field.into(), message.into())
}

/// What a dataset's spec promises of its clips.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expected {
    /// Frames per clip (0: the dataset has no video).
    pub frames: usize,
    /// Frame side, pixels.
    pub size: usize,
    /// The history window, seconds before `t0`: frames lie inside it.
    pub window_s: f64,
}

/// Loads a clip's frames from its member (through `member`) or inline `.npy`, once.
pub fn resolve(
    v: &mut Video,
    member: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<(), (String, String)> {
    if v.frames.is_some() {
        return Ok(());
    }
    let (field, bytes) = if let Some(b64) = &v.npy_base64 {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| {
                (
                    "video.npy_base64".to_string(),
                    format!("does not decode: {e}"),
                )
            })?;
        ("video.npy_base64", b)
    } else if let Some(name) = &v.file {
        let b = member(name).ok_or_else(|| {
            (
                "video.file".to_string(),
                format!("member `{name}` is missing"),
            )
        })?;
        ("video.file", b)
    } else {
        return Err((
            "video".into(),
            "neither `file` nor `npy_base64` given".into(),
        ));
    };
    v.frames = Some(Frames::from_npy(&bytes).map_err(|m| (field.to_string(), m))?);
    Ok(())
}

/// The clip's frame times: finite, increasing, not after `t0`, and inside the history
/// `window` (seconds before `t0`) when the dataset's spec gives one.
fn check_times(v: &Video, t0: f64, window: Option<f64>) -> Result<(), BadField> {
    for (i, &t) in v.t.iter().enumerate() {
        let field = format!("video.t[{i}]");
        if !t.is_finite() {
            return Err(err(field, format!("{t} is not a time")));
        }
        if i > 0 && t <= v.t[i - 1] {
            return Err(err(
                field,
                format!("{t} is not after the frame before ({})", v.t[i - 1]),
            ));
        }
        if t > t0 + 1e-6 {
            return Err(err(field, format!("{t} is after t0 ({t0})")));
        }
        if let Some(w) = window
            && t < t0 - w - 1e-6
        {
            return Err(err(
                field,
                format!("{t} is before the history window ({w} s before t0 {t0})"),
            ));
        }
    }
    Ok(())
}

/// Checks a clip of a sample decided at `t0`: frame times (finite, increasing, inside the
/// history window when a spec gives it), field of view, and the decoded frames against the times
/// and the spec's frame count and size.
pub fn validate(v: &Video, t0: f64, spec: Option<Expected>) -> Result<(), BadField> {
    if let Some(s) = spec
        && s.frames == 0
    {
        return Err(err(
            "video",
            "the dataset's spec has no video (video_frames 0)",
        ));
    }
    if v.t.is_empty() || v.t.len() > MAX_FRAMES {
        return Err(err(
            "video.t",
            format!("{} frame times, expected 1 to {MAX_FRAMES}", v.t.len()),
        ));
    }
    check_times(v, t0, spec.map(|s| s.window_s))?;
    if let Some(f) = v.fov_deg
        && (!f.is_finite() || f <= 0.0 || f >= 180.0)
    {
        return Err(err("video.fov_deg", format!("{f} is outside (0, 180)")));
    }
    let Some(fr) = &v.frames else {
        return Err(err("video", "no frames (missing or undecoded clip)"));
    };
    let field = if v.npy_base64.is_some() {
        "video.npy_base64"
    } else {
        "video.file"
    };
    if fr.data.len() != fr.count * fr.height * fr.width * 3 {
        return Err(err(field, "pixel buffer does not match its shape"));
    }
    if fr.count != v.t.len() {
        return Err(err(
            field,
            format!(
                "{} frames for {} frame times (video.t)",
                fr.count,
                v.t.len()
            ),
        ));
    }
    if let Some(s) = spec
        && (fr.count != s.frames || fr.height != s.size || fr.width != s.size)
    {
        return Err(err(
            field,
            format!(
                "{} frames of {}x{}, the dataset's clips are {} frames of {}x{}",
                fr.count, fr.height, fr.width, s.frames, s.size, s.size
            ),
        ));
    }
    Ok(())
}

/// Pixel scaling of the model's input: `(v / 255 - MEAN) / STD`, fixed, so a lamp's colour means
/// the same in every clip.
const PIXEL_MEAN: f32 = 0.5;
const PIXEL_STD: f32 = 0.25;

/// The model's video input of a sample: the clip as [T, S, S, 3] floats (the `.npy` order) and
/// its mask (1 when the sample has a clip of the spec's shape: `t` frames of `s` pixels), or
/// zeros and 0. Empty for a spec without video (`t` 0).
pub fn features(v: Option<&Video>, (t, s): (usize, usize)) -> (Vec<f32>, f32) {
    if t == 0 {
        return (Vec::new(), 0.0);
    }
    let Some(fr) = v
        .and_then(|v| v.frames.as_ref())
        .filter(|f| (f.count, f.height, f.width) == (t, s, s))
    else {
        return (vec![0f32; t * s * s * 3], 0.0);
    };
    let scaled = fr
        .data
        .iter()
        .map(|&b| (b as f32 / 255.0 - PIXEL_MEAN) / PIXEL_STD)
        .collect();
    (scaled, 1.0)
}
