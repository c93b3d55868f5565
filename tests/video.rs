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
        video: Some((FRAMES, SIDE)),
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
    // A clip of another size than the model reads.
    let small = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        dfm::data::npy::write_u8(&[0; FRAMES * 4 * 4 * 3], &[FRAMES, 4, 4, 3]),
    );
    let e = bad(&|r| r["video"]["npy_base64"] = small.clone().into());
    assert!(
        e.field == "video.npy_base64" && e.error.contains("4x4"),
        "{e}"
    );
}

/// The simulator's camera sees the light ahead: where a sample approaches a light that is red
/// at `t0`, the last frame mostly shows a red lamp (a light far ahead may be out of sight), and
/// where it is green, mostly a green one; and a
/// world with video is the same world (same samples, trajectories and labels) as without.
#[test]
fn simulated_clips_show_the_light_ahead() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(5);
    cfg.routes = 16;
    let plain = tmp.path().join("plain");
    dfm::data::synth::generate(&plain, &cfg, false).unwrap();
    let video = tmp.path().join("video");
    let m = dfm::data::synth::generate(&video, &cfg.clone().with_video(), false).unwrap();
    dfm::data::inspect::inspect(&video, false, 2).expect("a valid dataset");
    assert_eq!(m.spec.video_frames, dfm::data::synth::VIDEO_FRAMES);
    let (a, b) = (all_samples(&plain), all_samples(&video));
    let lamp = |v: &Video, rgb: [u8; 3]| {
        let f = v.frames.as_ref().unwrap();
        let last = &f.data[(f.count - 1) * f.height * f.width * 3..];
        last.chunks_exact(3).any(|p| p == rgb)
    };
    // (samples, with a red lamp, with a green lamp) per colour ahead.
    let mut seen = std::collections::BTreeMap::<&str, (usize, usize, usize)>::new();
    for (split, samples) in &b {
        assert_eq!(samples.len(), a[split].len(), "{split}");
        for (key, s) in samples {
            let mut same = s.clone();
            let light = same.target.as_mut().unwrap().light_ahead.take();
            let v = same
                .video
                .take()
                .expect("every simulated sample has a clip");
            assert!(
                same == a[split][key],
                "{key}: the same sample besides video"
            );
            assert_eq!(v.t.len(), dfm::data::synth::VIDEO_FRAMES);
            assert_eq!(*v.t.last().unwrap(), s.t0);
            if let Some(l) = light {
                let e = seen.entry(l.name()).or_default();
                e.0 += 1;
                e.1 += lamp(&v, [240, 30, 30]) as usize;
                e.2 += lamp(&v, [40, 230, 70]) as usize;
            }
        }
    }
    let (red, green) = (seen["red"], seen["green"]);
    assert!(red.0 >= 20 && green.0 >= 20, "{seen:?}");
    let share = |n: usize, of: usize| n as f64 / of as f64;
    // Most red lights ahead show red (a light far ahead, or off the camera's axis on a bend, may
    // not), few green ones do (another light down the road); most green ones show green.
    assert!(share(red.1, red.0) > 0.55, "red lights show red: {seen:?}");
    assert!(share(green.1, green.0) < 0.2, "{seen:?}");
    assert!(
        share(green.2, green.0) > 0.5,
        "green lights show green: {seen:?}"
    );
}

/// The dashcam fixture (a folder per trip: gps.csv, frames/ named by UNIX seconds; see its
/// make.py) imports into a dataset with clips: each window's clip is the frames of its last
/// seconds, in order, the last at t0, cropped and resized; windows that need missing frames keep
/// their trajectory without a clip; a frame whose name is not a time is an error naming it.
#[test]
fn dashcam_trips_import_with_their_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dashcam");
    let out = tmp.path().join("cam");
    let args = [
        "--history",
        "10",
        "--future",
        "5",
        "--stride",
        "1",
        "--frames",
        "4",
        "--frame-step",
        "1",
        "--size",
        "8",
    ];
    let mut cmd = vec![
        "data",
        "import",
        "dashcam",
        "--in",
        fixture.to_str().unwrap(),
    ];
    cmd.extend(["--out", out.to_str().unwrap()]);
    cmd.extend(args);
    let (ok, stdout, err) = dfm(&cmd);
    assert!(ok, "{stdout}{err}");
    dfm::data::inspect::inspect(&out, false, 2).expect("a valid dataset");
    let m = dfm::data::manifest::Manifest::load(&out).unwrap();
    assert_eq!((m.spec.video_frames, m.spec.video_size), (4, 8));
    let (mut with, mut without) = (0, 0);
    for samples in all_samples(&out).values() {
        for s in samples.values() {
            let trip_start = if s.route_id == "trip-a" {
                1.7e9
            } else {
                1.7e9 + 3600.0
            };
            let Some(v) = &s.video else {
                // trip-b has no frames for seconds 12 to 16.
                let secs = s.t0 - trip_start;
                assert!(
                    s.route_id == "trip-b" && (12.0..=19.0).contains(&secs),
                    "{}",
                    s.key
                );
                without += 1;
                continue;
            };
            with += 1;
            assert_eq!(
                v.t,
                (0..4).map(|k| s.t0 - 3.0 + k as f64).collect::<Vec<_>>()
            );
            let f = v.frames.as_ref().unwrap();
            assert_eq!((f.count, f.height, f.width), (4, 8, 8));
            for (k, &t) in v.t.iter().enumerate() {
                // The red channel is 8 x the seconds since the trip started (JPEG: about).
                let red = f.data[k * 8 * 8 * 3 + (4 * 8 + 4) * 3] as f64;
                let want = 8.0 * (t - trip_start);
                assert!(
                    (red - want).abs() <= 3.0,
                    "{} frame {k}: {red} vs {want}",
                    s.key
                );
            }
        }
    }
    assert!(
        with >= 20 && without >= 4,
        "{with} with clips, {without} without"
    );

    // A frame named otherwise than by its time.
    let bad = tmp.path().join("bad");
    for trip in ["trip-a"] {
        let from = fixture.join(trip);
        let to = bad.join(trip).join("frames");
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(from.join("gps.csv"), bad.join(trip).join("gps.csv")).unwrap();
        for e in std::fs::read_dir(from.join("frames")).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
        std::fs::copy(to.join("1700000003.000.png"), to.join("frame-3.png")).unwrap();
    }
    let mut cmd = vec!["data", "import", "dashcam", "--in", bad.to_str().unwrap()];
    let bad_out = tmp.path().join("bad-out");
    cmd.extend(["--out", bad_out.to_str().unwrap()]);
    cmd.extend(args);
    let (ok, _, err) = dfm(&cmd);
    assert!(
        !ok && err.contains("frame-3.png") && err.contains("not a time"),
        "{err}"
    );
}

/// Runs dfm, killed after `limit` (a hang fails the test instead of holding it).
fn dfm_within(args: &[&str], limit: std::time::Duration) -> (bool, String) {
    let mut child = std::process::Command::new(dfm_bin())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("dfm {args:?} ran past {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Hostile dashcam trips: a small frame file claiming 13,000 x 13,000 pixels is refused on its
/// header (named; with --skip-bad a bad record, the windows needing it keep no clip), a FIFO
/// among the frames is refused instead of blocking, a trip without `frames/` keeps its
/// trajectory, and a failed import leaves nothing behind (no `.tar.tmp`, no half dataset).
#[test]
fn hostile_dashcam_trips_are_refused_or_skipped_never_decoded_or_waited_on() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dashcam");
    let trips = tmp.path().join("trips");
    copy_dir(&fixture.join("trip-a/frames"), &trips.join("trip-a/frames"));
    for t in ["trip-a", "trip-b"] {
        std::fs::create_dir_all(trips.join(t)).unwrap();
        std::fs::copy(
            fixture.join(t).join("gps.csv"),
            trips.join(t).join("gps.csv"),
        )
        .unwrap();
    }
    // Frames 12 and 13 are in clips (a clip ends at t0, 9 s or more into the trip).
    let huge = trips.join("trip-a/frames/1700000012.000.png");
    std::fs::write(&huge, png_claiming(13_000)).unwrap();
    let out = tmp.path().join("cam");
    let run = |extra: &[&str]| {
        let mut cmd = vec!["data", "import", "dashcam", "--in", trips.to_str().unwrap()];
        cmd.extend([
            "--out",
            out.to_str().unwrap(),
            "--history",
            "10",
            "--future",
            "5",
        ]);
        cmd.extend([
            "--stride",
            "1",
            "--frames",
            "4",
            "--frame-step",
            "1",
            "--size",
            "8",
        ]);
        cmd.extend(extra);
        dfm_within(&cmd, std::time::Duration::from_secs(120))
    };
    let (ok, text) = run(&[]);
    assert!(
        !ok && text.contains("1700000012.000.png") && text.contains("13000x13000"),
        "{text}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        !out.exists() && left.len() == 1,
        "a failed import leaves nothing: {left:?}"
    );

    let (ok, text) = run(&["--skip-bad"]);
    assert!(ok, "{text}");
    let bad = std::fs::read_to_string(out.join("bad_records.txt")).unwrap();
    assert!(bad.contains("1700000012.000.png"), "{bad}");
    let samples: Vec<dfm::Sample> = all_samples(&out)
        .into_values()
        .flat_map(|s| s.into_values())
        .collect();
    let clip_has = |s: &dfm::Sample, t: f64| s.video.as_ref().is_some_and(|v| v.t.contains(&t));
    assert!(samples.iter().all(|s| !clip_has(s, 1_700_000_012.0)));
    assert!(
        samples
            .iter()
            .any(|s| s.video.is_none() && s.t0 == 1_700_000_013.0)
    );
    assert!(
        samples
            .iter()
            .any(|s| s.route_id == "trip-a" && s.video.is_some())
    );
    let b: Vec<_> = samples.iter().filter(|s| s.route_id == "trip-b").collect();
    assert!(
        !b.is_empty() && b.iter().all(|s| s.video.is_none()),
        "trip-b: kept, without clips"
    );
    let rep = dfm::data::inspect::inspect(&out, false, 2).unwrap();
    assert!(
        rep.render().contains("video"),
        "inspect has a video row:\n{}",
        rep.render()
    );

    // A FIFO named as a frame: refused, not waited on (opening it would block for ever).
    std::fs::copy(trips.join("trip-a/frames/1700000011.000.png"), &huge).unwrap();
    let fifo = trips.join("trip-a/frames/1700000013.000.png");
    std::fs::remove_file(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (ok, text) = run(&["--force"]);
    assert!(
        !ok && text.contains("1700000013.000.png") && text.contains("not a regular file"),
        "{text}"
    );
    assert_eq!(
        dfm::data::inspect::inspect(&out, false, 2)
            .unwrap()
            .bad
            .len(),
        0,
        "the old dataset is intact"
    );
}
