//! Video clips in datasets: a clip is a `KEY.video.npy` member (uint8 [T, H, W, 3], what numpy
//! reads) with its frame times in the sample's JSON; it reads back frame for frame, and a clip
//! of the wrong size, with a frame time out of order or a truncated member is a bad record named
//! by file, key and field.

mod common;
use common::*;
use dfm::data::video::{Frames, Video};
use std::path::{Path, PathBuf};

const FRAMES: usize = 4;
const SIDE: usize = 8;

/// A clip for a sample: frames 1 s apart ending at `t0`, pixels drawn from the key.
fn clip(key: &str, t0: f64, side: usize) -> Video {
    let seed = key
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    let data = (0..FRAMES * side * side * 3)
        .map(|i| seed.wrapping_add((i * 13 % 251) as u8))
        .collect();
    Video {
        t: (0..FRAMES).map(|k| t0 - (FRAMES - 1 - k) as f64).collect(),
        fov_deg: Some(90.0),
        file: None,
        npy_base64: None,
        frames: Some(Frames {
            count: FRAMES,
            height: side,
            width: side,
            data,
        }),
    }
}

/// The tiny simulated dataset rewritten with a clip on every sample.
fn with_clips(tmp: &Path) -> PathBuf {
    let src = tiny_dataset(tmp, 31);
    let m = dfm::data::manifest::Manifest::load(&src).unwrap();
    let mut spec = m.spec.clone();
    spec.video_frames = FRAMES;
    spec.video_size = SIDE;
    let out = tmp.join("video");
    let mut w = dfm::data::writer::DatasetWriter::new(&out, spec, 100, false).unwrap();
    for (split, samples) in all_samples(&src) {
        for mut s in samples.into_values() {
            s.video = Some(clip(&s.key, s.t0, SIDE));
            w.add(&split, &s).unwrap();
        }
    }
    w.finish("test", serde_json::json!({})).unwrap();
    out
}

#[test]
fn clips_round_trip_as_numpy_members() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_clips(tmp.path());
    dfm::data::inspect::inspect(&dir, false, 2).expect("a valid dataset");
    let (ok, out, err) = dfm(&["data", "inspect", dir.to_str().unwrap()]);
    assert!(ok, "{out}{err}");

    let mut n = 0;
    for samples in all_samples(&dir).values() {
        for s in samples.values() {
            let want = clip(&s.key, s.t0, SIDE);
            let got = s.video.as_ref().expect("a clip");
            assert_eq!(got.t, want.t);
            assert_eq!(got.frames, want.frames, "{}", s.key);
            n += 1;
        }
    }
    assert!(n > 50, "{n} samples");
    let m = dfm::data::manifest::Manifest::load(&dir).unwrap();
    assert_eq!(
        m.coverage.modalities.get("video"),
        Some(&m.coverage.samples)
    );
    let src = dfm::data::manifest::Manifest::load(&tmp.path().join("world31")).unwrap();
    assert!(!src.coverage.modalities.contains_key("video"));

    // What Python's webdataset sees: KEY.json naming the member, KEY.video.npy as numpy writes it.
    let m = read_tar(&dir.join("train-000000.tar"));
    let (name, npy) = m.iter().find(|(n, _)| n.ends_with(".video.npy")).unwrap();
    let end = npy.iter().position(|&b| b == b'\n').unwrap();
    let head = String::from_utf8_lossy(&npy[..end]);
    assert!(
        npy.starts_with(b"\x93NUMPY")
            && head.contains("'descr': '|u1'")
            && head.contains(&format!("'shape': ({FRAMES}, {SIDE}, {SIDE}, 3)")),
        "{head}"
    );
    let key = name.trim_end_matches(".video.npy");
    let json = &m
        .iter()
        .find(|(n, _)| *n == format!("{key}.json"))
        .unwrap()
        .1;
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    assert_eq!(v["video"]["file"], "video.npy");
    assert_eq!(v["video"]["t"].as_array().unwrap().len(), FRAMES);
}

#[test]
fn bad_clips_are_named_by_file_key_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let src = with_clips(tmp.path());

    // Frames of another size than the dataset's.
    let (dir, shard) = copy(&src, tmp.path(), "size");
    let key = edit_member(&shard, ".video.npy", 2, |b| {
        *b = dfm::data::npy::write_u8(&vec![0; FRAMES * 6 * 6 * 3], &[FRAMES, 6, 6, 3])
    });
    let e = inspect_err(&dir);
    assert!(
        e.contains("train-000000.tar")
            && e.contains(&format!("record `{key}`"))
            && e.contains("field `video.file`")
            && e.contains("6x6"),
        "{e}"
    );

    // A frame time that does not follow the one before.
    let (dir, shard) = copy(&src, tmp.path(), "order");
    let key = edit_member(&shard, ".json", 1, |b| {
        let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
        let t1 = v["video"]["t"][1].clone();
        v["video"]["t"][2] = t1;
        *b = serde_json::to_vec(&v).unwrap();
    });
    let e = inspect_err(&dir);
    assert!(
        e.contains(&format!("record `{key}`")) && e.contains("field `video.t[2]`"),
        "{e}"
    );

    // A truncated member.
    let (dir, shard) = copy(&src, tmp.path(), "truncated");
    let key = edit_member(&shard, ".video.npy", 0, |b| b.truncate(b.len() - 10));
    let e = inspect_err(&dir);
    assert!(
        e.contains(&format!("record `{key}`"))
            && e.contains("field `video.file`")
            && e.contains("truncated"),
        "{e}"
    );
}

#[test]
fn requests_carry_clips_inline_within_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = with_clips(tmp.path());
    let s = all_samples(&dir)["test"].values().next().unwrap().clone();
    let limits = dfm::predict::RequestLimits {
        max_image_side: 64,
        max_horizon_s: 3600.0,
    };
    // `dfm data sample`'s form: the clip as base64 .npy, no member reference.
    let req = dfm::predict::to_request_json(&s).unwrap();
    assert!(req["video"]["file"].is_null() && req["video"]["npy_base64"].is_string());
    let back = dfm::predict::parse_sample(&serde_json::to_vec(&req).unwrap(), &limits).unwrap();
    assert_eq!(back.video.unwrap().frames, s.video.as_ref().unwrap().frames);

    let bad = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut r = req.clone();
        edit(&mut r);
        dfm::predict::parse_sample(&serde_json::to_vec(&r).unwrap(), &limits).unwrap_err()
    };
    let e = bad(&|r| r["video"]["npy_base64"] = serde_json::Value::Null);
    assert_eq!(e.field, "video.npy_base64", "{e}");
    // More frames than a clip may have: refused from the header.
    let n = dfm::data::video::MAX_FRAMES + 1;
    let too_many = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        dfm::data::npy::write_u8(&vec![0; n * 2 * 2 * 3], &[n, 2, 2, 3]),
    );
    let e = bad(&|r| r["video"]["npy_base64"] = too_many.clone().into());
    assert!(
        e.field == "video.npy_base64" && e.error.contains("frames"),
        "{e}"
    );
    let e = bad(&|r| r["video"]["t"][0] = (s.t0 + 5.0).into());
    assert!(e.field.starts_with("video.t["), "{e}");
}
