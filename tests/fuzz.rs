//! Mutation fuzzing of every reader of outside bytes: the tar shard reader (with record
//! decoding), the sample JSON parser and validator, the `.npy` reader, PNG members, the server's
//! request parser, the GPS CSV, GeoLife PLT and LMRC importers, and the newer readers: dashcam
//! frames and trips, part manifests (merge), a tracking server's answers (from a hostile fake
//! server), sweep grids and run folders. Inputs are random bytes and
//! mutations of valid records (bit flips, interesting bytes, cuts, insertions, duplicated
//! ranges, extreme numbers). Every case must end in Ok or a clear Err: a panic fails the test,
//! naming the target and the case's seed; a case that runs for more than 60 s aborts the binary.
//!
//! `DFM_FUZZ_CASES` sets the cases per target (default 2,000, what CI runs);
//! `DFM_FUZZ_CASES=1000000 cargo test --release --test fuzz -- --nocapture` is the full run;
//! `DFM_FUZZ_ONLY=TEXT` runs only the targets whose name holds TEXT (or one of
//! several, comma-separated).

mod common;
use common::*;
use dfm::data::sample::Spec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn cases() -> u64 {
    std::env::var("DFM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Request limits of a model with 64 px images and a 30 s horizon.
const LIMITS: dfm::predict::RequestLimits = dfm::predict::RequestLimits {
    max_image_side: 256,
    max_horizon_s: 30.0,
    video: None,
};

const INTERESTING: [&[u8]; 14] = [
    b"0",
    b"-1",
    b"1e309",
    b"-1e309",
    b"NaN",
    b"99999999999999999999",
    b"4294967296",
    b"\"\"",
    b"null",
    b"[]",
    b"{}",
    b"\xff\xff\xff\xff",
    b"\x00",
    b"2e17",
];

/// One to four random edits of `input`.
fn mutate(input: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut b = input.to_vec();
    if rng.gen_bool(0.05) {
        // Pure noise now and then.
        let n = rng.gen_range(0..512);
        return (0..n).map(|_| rng.r#gen()).collect();
    }
    for _ in 0..rng.gen_range(1..=4) {
        let len = b.len();
        let at = if len == 0 { 0 } else { rng.gen_range(0..len) };
        match rng.gen_range(0..8) {
            0 if len > 0 => b[at] ^= 1 << rng.gen_range(0..8),
            1 if len > 0 => b[at] = rng.r#gen(),
            2 if len > 0 => {
                let end = (at + rng.gen_range(1..64)).min(len);
                b.drain(at..end);
            }
            3 => {
                let n = rng.gen_range(1..32);
                let noise: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
                b.splice(at..at, noise);
            }
            4 if len > 0 => {
                let end = (at + rng.gen_range(1..256)).min(len);
                let copy = b[at..end].to_vec();
                let to = rng.gen_range(0..=b.len());
                b.splice(to..to, copy);
            }
            5 => b.truncate(at),
            6 => {
                // Replace a run of digits (a number in text) by an extreme value.
                if let Some(start) = (at..len).find(|&i| b[i].is_ascii_digit()) {
                    let end = (start..len)
                        .find(|&i| !(b[i].is_ascii_digit() || b[i] == b'.'))
                        .unwrap_or(len);
                    let v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                    b.splice(start..end, v.iter().copied());
                }
            }
            _ => {
                let v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                b.splice(at..at, v.iter().copied());
            }
        }
    }
    b
}

/// Runs `cases()` mutations of the seeds through `check`; fails on any panic. Returns the number
/// of cases run and how many ended in an error (a clear refusal).
fn fuzz(target: &str, seeds: &[Vec<u8>], check: impl Fn(&[u8]) -> bool) -> (u64, u64) {
    if let Ok(only) = std::env::var("DFM_FUZZ_ONLY")
        && !only.split(',').any(|part| target.contains(part))
    {
        return (0, 0);
    }
    // When the current case started, in seconds since this target started (per target: tests
    // run in parallel).
    let last = std::sync::Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let since = move || start.elapsed().as_secs();
    let last_wd = last.clone();
    let name = target.to_string();
    let watchdog_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let wd = watchdog_done.clone();
    let watchdog = std::thread::spawn(move || {
        while !wd.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            if since().saturating_sub(last_wd.load(Ordering::SeqCst)) > 60 {
                eprintln!("fuzz {name}: a case ran for more than 60 s (a hang)");
                std::process::exit(3);
            }
        }
    });
    for (i, seed) in seeds.iter().enumerate() {
        assert!(
            check(seed),
            "{target}: the unmutated input {i} must be accepted"
        );
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0x5EED ^ target.len() as u64);
    let (n, mut refused) = (cases(), 0u64);
    let mut panics = Vec::new();
    for case in 0..n {
        let seed = &seeds[rng.gen_range(0..seeds.len())];
        let input = mutate(seed, &mut rng);
        last.store(since(), Ordering::SeqCst);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input))) {
            Ok(ok) => refused += (!ok) as u64,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panics.push(format!("case {case}: {msg}"));
            }
        }
    }
    watchdog_done.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();
    println!(
        "fuzz {target}: {n} cases in {:.1} s, {refused} refused with an error, {} panics",
        start.elapsed().as_secs_f64(),
        panics.len()
    );
    assert!(
        panics.is_empty(),
        "{target}: {} panics: {:?}",
        panics.len(),
        &panics[..panics.len().min(5)]
    );
    (n, refused)
}

/// Members of the first records of a train shard of a tiny world, and that world's spec.
fn valid_members(tmp: &Path) -> (Vec<(String, Vec<u8>)>, Spec) {
    let dir = tiny_dataset(tmp, 71);
    let m = dfm::data::manifest::Manifest::load(&dir).unwrap();
    let mut members = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(dir.join("train-000000.tar")).unwrap());
    for e in ar.entries().unwrap().take(16) {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().to_string();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut b).unwrap();
        members.push((name, b));
    }
    // Whole records only: drop the members of the last (maybe cut) record.
    let key = |n: &str| n.split('.').next().unwrap().to_string();
    let last = key(&members.last().unwrap().0);
    members.retain(|(n, _)| key(n) != last);
    (members, m.spec)
}

fn tar_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn shard_sample_npy_png_and_request_readers_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (members, spec) = valid_members(tmp.path());
    let of = |ext: &str| -> Vec<Vec<u8>> {
        members
            .iter()
            .filter(|(n, _)| n.ends_with(ext))
            .map(|(_, b)| b.clone())
            .collect()
    };
    let (jsons, pngs, npys) = (of(".json"), of(".png"), of(".npy"));
    assert!(!jsons.is_empty() && !pngs.is_empty() && !npys.is_empty());

    // The tar shard reader and record decoding, on a file as the loader reads it.
    let shard = tmp.path().join("fuzz.tar");
    let tars = vec![tar_of(&members)];
    fuzz("tar shard", &tars, |bytes| {
        std::fs::write(&shard, bytes).unwrap();
        let mut ok = true;
        let r = dfm::data::shards::for_each_record(&shard, None, |rec| {
            ok &= dfm::data::shards::decode(&rec, &shard, Some(&spec)).is_ok();
            true
        });
        ok && r.is_ok()
    });
    // Member names resolve against the valid record's members, so validation past the images
    // is reached.
    let member = |n: &str| {
        members
            .iter()
            .find(|(m, _)| m.ends_with(n))
            .map(|x| x.1.clone())
    };
    fuzz(
        "sample json",
        &jsons,
        |bytes| match dfm::data::shards::parse_json(bytes) {
            Ok(s) => dfm::data::shards::resolve(s, &member, Some(&spec), 4096).is_ok(),
            Err(_) => false,
        },
    );
    fuzz("npy", &npys, |bytes| {
        dfm::data::npy::read_f32(bytes).is_ok()
    });
    fuzz("png", &pngs, |bytes| {
        dfm::data::shards::decode_png(bytes, 256).is_ok()
    });
    // The server's request parser, on request bodies (a sample and a list).
    let mut requests = Vec::new();
    for j in &jsons {
        if let Ok(s) = dfm::data::shards::parse_json(j)
            && let Ok(s) = dfm::data::shards::resolve(s, &member, None, 4096)
        {
            let v = dfm::predict::to_request_json(&s).unwrap();
            requests.push(serde_json::to_vec(&v).unwrap());
            requests.push(serde_json::to_vec(&vec![v.clone(), v]).unwrap());
        }
    }
    assert!(!requests.is_empty());
    fuzz("request body", &requests, |bytes| {
        dfm::serve::handlers::parse_body(bytes, 64, &LIMITS).is_ok()
    });
}

#[test]
fn importers_never_panic_on_mutated_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("trajectory_id,timestamp,lat,lon,speed,heading\n");
    for k in 0..40 {
        let id = if k < 20 { "a" } else { "b" };
        csv.push_str(&format!(
            "{id},{},{:.6},11.0,{}.5,{}\n",
            1_641_600_000 + 10 * k,
            48.0 + k as f64 * 1e-4,
            k % 9,
            (k * 37) % 360
        ));
    }
    let path = tmp.path().join("fuzz.csv");
    let cols = dfm::data::import::gps_csv::Columns::default();
    fuzz("gps csv", &[csv.into_bytes()], |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let mut r = dfm::data::import::ImportReport::default();
        let utc = dfm::data::import::Clock::Offset(0.0);
        dfm::data::import::gps_csv::read(&path, &cols, &utc, &mut r, false).is_ok()
    });

    let mut plt = String::from(
        "Geolife trajectory\nWGS 84\nAltitude is in Feet\nReserved 3\n0,2,255,My Track,0,0,2,8421376\n0\n",
    );
    for k in 0..30 {
        plt.push_str(&format!(
            "39.9{k:02},116.3{k:02},0,100,39872.1,2009-02-28,02:{:02}:{:02}\n",
            k * 5 / 60,
            k * 5 % 60
        ));
    }
    let path = tmp.path().join("fuzz.plt");
    fuzz("geolife plt", &[plt.into_bytes()], |bytes| {
        std::fs::write(&path, bytes).unwrap();
        let mut r = dfm::data::import::ImportReport::default();
        dfm::data::import::geolife::read_plt(&path, &mut r, false).is_ok()
    });

    // LMRC: one of the three files mutated at a time.
    let lm = tmp.path().join("lmrc");
    std::fs::create_dir_all(&lm).unwrap();
    let route = r#"{"R1": {"station_code": "DLA3", "date_YYYY_MM_DD": "2018-07-20", "departure_time_utc": "14:37:26", "stops": {"S": {"lat": 34.0, "lng": -118.0, "type": "Station", "zone_id": NaN}, "A": {"lat": 34.01, "lng": -118.0, "type": "Dropoff", "zone_id": "A-1.1A"}, "B": {"lat": 34.02, "lng": -118.01, "type": "Dropoff", "zone_id": "A-1.2A"}}}}"#;
    let packages = r#"{"R1": {"A": {"P1": {"scan_status": "DELIVERED", "time_window": {"start_time_utc": "2018-07-20 15:00:00", "end_time_utc": "2018-07-20 18:00:00"}, "planned_service_time_seconds": 50.0, "dimensions": {"depth_cm": 10.0, "height_cm": 5.0, "width_cm": 8.0}}}, "B": {"P2": {"scan_status": "DELIVERED", "time_window": {"start_time_utc": NaN, "end_time_utc": NaN}, "planned_service_time_seconds": 30.0, "dimensions": {"depth_cm": 1.0, "height_cm": 2.0, "width_cm": 3.0}}}}}"#;
    let actual = r#"{"R1": {"actual": {"S": 0, "A": 1, "B": 2}}}"#;
    let files = [
        "route_data.json",
        "package_data.json",
        "actual_sequences.json",
    ];
    let valid = [route, packages, actual];
    for (f, v) in files.iter().zip(valid) {
        std::fs::write(lm.join(f), v).unwrap();
    }
    {
        let mut r = dfm::data::import::ImportReport::default();
        assert_eq!(
            dfm::data::import::lmrc::read(&lm, &mut r, false)
                .unwrap()
                .len(),
            1
        );
    }
    for (i, f) in files.iter().enumerate() {
        fuzz(
            &format!("lmrc {f}"),
            &[valid[i].as_bytes().to_vec()],
            |bytes| {
                std::fs::write(lm.join(f), bytes).unwrap();
                let mut r = dfm::data::import::ImportReport::default();

                dfm::data::import::lmrc::read(&lm, &mut r, false)
                    .map(|routes| routes.iter().all(|route| !route.samples(8.0).is_empty()))
                    .unwrap_or(false)
            },
        );
        std::fs::write(lm.join(f), valid[i]).unwrap();
    }
}

/// The fixture's dashcam trip `trip-a` copied into `dir` (gps.csv and its first `n` frames).
fn dashcam_trip(dir: &Path, n: usize) -> std::path::PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dashcam/trip-a");
    let trip = dir.join("trip-a");
    std::fs::create_dir_all(trip.join("frames")).unwrap();
    std::fs::copy(fixture.join("gps.csv"), trip.join("gps.csv")).unwrap();
    let mut frames: Vec<_> = std::fs::read_dir(fixture.join("frames"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    frames.sort();
    for f in frames.into_iter().take(n) {
        std::fs::copy(&f, trip.join("frames").join(f.file_name().unwrap())).unwrap();
    }
    trip
}

#[test]
fn dashcam_and_merge_readers_never_panic() {
    use dfm::data::import::dashcam;
    let tmp = tempfile::tempdir().unwrap();
    let trip = dashcam_trip(&tmp.path().join("in"), 12);
    let frame = trip.join("frames/1700000005.000.png");
    let png = std::fs::read(&frame).unwrap();
    let mut jpg = Vec::new();
    image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([x as u8 * 9, y as u8 * 9, 99]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    let probe = tmp.path().join("frame.img");
    fuzz("dashcam frame", &[png.clone(), jpg], |bytes| {
        std::fs::write(&probe, bytes).unwrap();
        dashcam::read_frame(&probe, 8).is_ok()
    });

    // A trip: its gps.csv or one of its frames mutated, imported whole.
    let mut o = dashcam::DashcamOptions::default();
    o.window.history_len = 6;
    o.window.future_len = 3;
    o.window.stride = 2;
    (o.frames, o.frame_step_s, o.size) = (3, 1.0, 8);
    let csv = std::fs::read(trip.join("gps.csv")).unwrap();
    let out = tmp.path().join("cam");
    let import = || dashcam::import(&tmp.path().join("in"), &out, &o, false, true).is_ok();
    fuzz(
        "dashcam trip gps.csv",
        std::slice::from_ref(&csv),
        |bytes| {
            std::fs::write(trip.join("gps.csv"), bytes).unwrap();
            import()
        },
    );
    std::fs::write(trip.join("gps.csv"), &csv).unwrap();
    fuzz("dashcam trip frame", std::slice::from_ref(&png), |bytes| {
        std::fs::write(&frame, bytes).unwrap();
        import()
    });
    std::fs::write(&frame, &png).unwrap();

    // Merge: one part's manifest mutated.
    let mut cfg = tiny_config(73);
    cfg.routes = 6;
    let parts: Vec<_> = (0..2)
        .map(|i| {
            let p = tmp.path().join(format!("part{i}"));
            let part = dfm::data::part::Part::new(i, 2).unwrap();
            dfm::data::synth::generate_part(&p, &cfg, false, part).unwrap();
            p
        })
        .collect();
    let manifest = parts[1].join("manifest.json");
    let valid = std::fs::read(&manifest).unwrap();
    let merged = tmp.path().join("merged");
    fuzz("part manifest", std::slice::from_ref(&valid), |bytes| {
        std::fs::write(&manifest, bytes).unwrap();
        dfm::data::merge::merge(&merged, &parts, true).is_ok()
    });
    std::fs::write(&manifest, valid).unwrap();
}

#[test]
fn tracking_answers_sweep_grids_and_run_folders_never_panic() {
    use common::fake_mlflow::{Fake, Mode};
    use dfm::track::mlflow::Client;
    let tmp = tempfile::tempdir().unwrap();

    // A tracking server's answers: whatever the body, each call ends in Ok or an error.
    let body = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let fake = Fake::start(Mode::Scripted(body.clone()));
    let client = Client::new(&fake.uri(), Default::default(), None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let info = r#"{"run_id": "r1", "experiment_id": "1", "artifact_uri": "mlflow-artifacts:/1/r1/artifacts"}"#;
    let answers: Vec<Vec<u8>> = [
        r#"{"experiment": {"experiment_id": "1", "name": "dfm"}}"#.to_string(),
        format!(
            r#"{{"experiment_id": "1", "run": {{"info": {info}, "data": {{"metrics": [{{"key": "loss", "value": 1.5, "step": 20}}]}}}}}}"#
        ),
    ]
    .map(String::into_bytes)
    .to_vec();
    fuzz("tracking answers", &answers, |bytes| {
        *body.lock().unwrap() = bytes.to_vec();
        rt.block_on(async {
            let a = client.experiment_id("dfm").await.is_ok();
            let b = client.create_run("1", "x", &[]).await.is_ok();
            let c = client.get_run("r1").await.is_ok();
            a || b || c
        })
    });

    // Sweep grids.
    let grids = [
        "train.lr=1e-3,3e-4",
        "model.d_model=32,64",
        "run.name=a b,a_b",
    ]
    .map(|g| g.as_bytes().to_vec())
    .to_vec();
    let out = tmp.path().join("sweep");
    fuzz("sweep grid", &grids, |bytes| {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return false;
        };
        match text.parse::<dfm::sweep::Axis>() {
            Ok(axis) => dfm::sweep::plan(None, &[], &[axis], &[1, 2], &out).is_ok(),
            Err(_) => false,
        }
    });

    // Run folders: each file a run keeps, mutated in turn.
    let run = tmp.path().join("run");
    let ckpt = run.join("ckpt-00000010");
    std::fs::create_dir_all(&ckpt).unwrap();
    let mut cfg = dfm::config::Config::default();
    cfg.run.dir = run.display().to_string();
    let state = dfm::checkpoint::TrainState {
        step: 10,
        epoch: 1,
        batches_in_epoch: 3,
        best_val: Some(2.5),
        best_step: Some(10),
        skipped_steps: 0,
        val_loss: Some(2.5),
        manifest_sha256: "ab".repeat(32),
    };
    let files: Vec<(std::path::PathBuf, Vec<u8>)> = vec![
        (run.join("config.toml"), cfg.to_toml().unwrap().into_bytes()),
        (
            ckpt.join("config.toml"),
            cfg.to_toml().unwrap().into_bytes(),
        ),
        (
            run.join("metrics.jsonl"),
            b"{\"step\":5,\"loss\":3.1}\n{\"step\":10,\"loss\":2.9,\"val_loss\":2.5}\n".to_vec(),
        ),
        (
            run.join("eval_test.json"),
            br#"{"trajectory": {"at_1": {"min_fde_m": 3.5}}}"#.to_vec(),
        ),
        (
            run.join("tracking.json"),
            format!(
                r#"{{"uri": "http://127.0.0.1:9", {}}}"#,
                &info[1..info.len() - 1]
            )
            .into_bytes(),
        ),
        (ckpt.join("state.json"), serde_json::to_vec(&state).unwrap()),
        (ckpt.join("checksums.json"), b"{}".to_vec()),
    ];
    for (p, b) in &files {
        std::fs::write(p, b).unwrap();
    }
    for (p, valid) in &files {
        let name = p.strip_prefix(&run).unwrap().display().to_string();
        fuzz(
            &format!("run folder {name}"),
            std::slice::from_ref(valid),
            |bytes| {
                std::fs::write(p, bytes).unwrap();
                let a = dfm::runs::summarize(&run).is_ok();
                let b = dfm::checkpoint::read_state(&ckpt).is_ok();
                let c = dfm::checkpoint::verify(&ckpt).is_ok();
                let d = dfm::track::Link::load(&run).is_some();
                let e = dfm::train::resume_config(&run, cfg.clone()).is_ok();
                a && b && c && d && e
            },
        );
        std::fs::write(p, valid).unwrap();
    }
}
