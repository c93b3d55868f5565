//! Bad input gets a clear error naming the file, the record key and the field, a non-zero exit
//! and no panic; `--skip-bad` skips and reports instead.

mod common;
use common::*;
use std::path::Path;

/// Replaces the first number after `after` + `"field":` in a JSON text.
fn set_json_number(bytes: &mut Vec<u8>, after: &str, field: &str, value: &str) {
    let s = String::from_utf8(bytes.clone()).unwrap();
    let start = s.find(after).expect("anchor") + after.len();
    let pat = format!("\"{field}\":");
    let at = start + s[start..].find(&pat).expect("field") + pat.len();
    let end = at + s[at..].find([',', '}']).unwrap();
    *bytes = format!("{}{}{}", &s[..at], value, &s[end..]).into_bytes();
}

#[test]
fn each_corruption_is_named_by_file_key_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny_dataset(tmp.path(), 11);

    // A truncated shard.
    let (dir, shard) = copy(&src, tmp.path(), "truncated");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() * 3 / 5 + 100]).unwrap();
    let e = inspect_err(&dir);
    assert!(
        e.contains("train-000000.tar") && e.contains("record `syn"),
        "{e}"
    );

    // A PNG that does not decode.
    let (dir, shard) = copy(&src, tmp.path(), "png");
    let key = edit_member(&shard, ".map.png", 3, |b| b.truncate(40));
    let e = inspect_err(&dir);
    assert!(
        e.contains("train-000000.tar")
            && e.contains(&format!("record `{key}`"))
            && e.contains("field `images[0]`")
            && e.contains("PNG"),
        "{e}"
    );

    // NaN coordinates (a bare NaN token, as Python writes it).
    let (dir, shard) = copy(&src, tmp.path(), "nan");
    let key = edit_member(&shard, ".json", 2, |b| {
        set_json_number(b, "\"history\":", "lat", "NaN")
    });
    let e = inspect_err(&dir);
    assert!(
        e.contains(&format!("record `{key}`")) && e.contains("field `history[0].lat`"),
        "{e}"
    );

    // Out-of-range latitude.
    let (dir, shard) = copy(&src, tmp.path(), "range");
    let key = edit_member(&shard, ".json", 5, |b| {
        set_json_number(b, "\"history\":", "lat", "123.4")
    });
    let e = inspect_err(&dir);
    assert!(
        e.contains(&format!("record `{key}`"))
            && e.contains("history[0].lat")
            && e.contains("[-85, 85]"),
        "{e}"
    );

    // A missing required field.
    let (dir, shard) = copy(&src, tmp.path(), "missing");
    let key = edit_member(&shard, ".json", 0, |b| {
        let s = String::from_utf8(b.clone()).unwrap();
        let at = s.find("\"route_id\":").unwrap();
        let end = at + s[at..].find(',').unwrap() + 1;
        *b = format!("{}{}", &s[..at], &s[end..]).into_bytes();
    });
    let e = inspect_err(&dir);
    assert!(
        e.contains("train-000000.tar")
            && e.contains(&format!("record `{key}`"))
            && e.contains("route_id"),
        "{e}"
    );

    // A manifest naming a missing shard.
    let (dir, shard) = copy(&src, tmp.path(), "gone");
    std::fs::remove_file(&shard).unwrap();
    let e = inspect_err(&dir);
    assert!(
        e.contains("manifest.json") && e.contains("train-000000.tar") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn skip_bad_skips_counts_and_reports_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny_dataset(tmp.path(), 12);
    let (dir, shard) = copy(&src, tmp.path(), "skip");
    let k1 = edit_member(&shard, ".map.png", 1, |b| b.truncate(10));
    let k2 = edit_member(&shard, ".json", 4, |b| {
        set_json_number(b, "\"history\":", "lon", "NaN")
    });
    let total = dfm::data::manifest::Manifest::load(&dir)
        .unwrap()
        .coverage
        .samples;
    let rep = dfm::data::inspect::inspect(&dir, true, 2).unwrap();
    let seen: usize = rep.splits.values().map(|s| s.samples).sum();
    assert_eq!(seen, total - 2, "two records skipped");
    let keys: Vec<_> = rep.bad.iter().filter_map(|b| b.key.clone()).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&k1) && keys.contains(&k2), "{keys:?}");
    let report = tmp.path().join("bad.jsonl");
    let (ok, out, err) = dfm(&[
        "data",
        "inspect",
        dir.to_str().unwrap(),
        "--skip-bad",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("bad records skipped"), "{out}");
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(text.contains(&k1) && text.contains(&k2), "{text}");
}

/// Rewrites the size field of the tar header at `offset` as base-256 `size` (GNU), with a
/// valid checksum, so only the claimed size is wrong.
fn claim_size(shard: &Path, offset: usize, size: u64) {
    let mut b = std::fs::read(shard).unwrap();
    let h = &mut b[offset..offset + 512];
    let mut field = [0u8; 12];
    field[0] = 0x80;
    field[4..].copy_from_slice(&size.to_be_bytes());
    h[124..136].copy_from_slice(&field);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&x| x as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    std::fs::write(shard, b).unwrap();
}

#[test]
fn a_tar_header_claiming_a_huge_size_is_an_error_not_an_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny_dataset(tmp.path(), 14);
    let (dir, shard) = copy(&src, tmp.path(), "huge");
    let first = read_tar(&shard)[0].0.clone();
    claim_size(&shard, 0, 1 << 62);
    let e = inspect_err(&dir);
    assert!(e.contains("train-000000.tar"), "{e}");
    assert!(e.contains(&first) && e.contains("claims"), "{e}");
    // The training loader stops with the same error instead of ending the epoch.
    let m = dfm::data::manifest::Manifest::load(&dir).unwrap();
    let l = dfm::data::loader::Loader::new(&dir, &m, "train", Default::default()).unwrap();
    let items: Vec<_> = l
        .epoch(
            0,
            0,
            std::sync::Arc::new(|s: dfm::Sample| s.key),
            std::sync::Arc::new(|b: Vec<String>| b),
        )
        .collect();
    let err = items
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("an error");
    assert!(err.to_string().contains("claims"), "{err}");
}

#[test]
fn a_panic_while_reading_a_record_stops_the_epoch_with_the_record_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_dataset(tmp.path(), 15);
    let m = dfm::data::manifest::Manifest::load(&dir).unwrap();
    let opts = dfm::data::loader::LoaderOptions {
        shuffle_buffer: 0,
        batch_size: 4,
        ..Default::default()
    };
    let l = dfm::data::loader::Loader::new(&dir, &m, "train", opts).unwrap();
    // The third sample read panics in the per-sample code.
    let victim = std::sync::Arc::new(std::sync::Mutex::new((0usize, None::<String>)));
    let v2 = victim.clone();
    let items: Vec<_> = l
        .epoch(
            0,
            0,
            std::sync::Arc::new(move |s: dfm::Sample| {
                let mut v = v2.lock().unwrap();
                v.0 += 1;
                if v.0 == 3 {
                    v.1 = Some(s.key.clone());
                    drop(v);
                    panic!("feature code failed");
                }
                s.key
            }),
            std::sync::Arc::new(|b: Vec<String>| b),
        )
        .collect();
    let key = victim.lock().unwrap().1.clone().expect("a third sample");
    let err = items
        .iter()
        .find_map(|r| r.as_ref().err())
        .expect("the panic is an error, not the end of the epoch");
    let text = err.to_string();
    assert!(
        text.contains(&key) && text.contains("feature code failed"),
        "{text}"
    );
    // A panic while building a batch is an error too.
    let l = dfm::data::loader::Loader::new(&dir, &m, "train", Default::default()).unwrap();
    let items: Vec<_> = l
        .epoch(
            0,
            0,
            std::sync::Arc::new(|s: dfm::Sample| s.key),
            std::sync::Arc::new(|_b: Vec<String>| -> Vec<String> { panic!("batcher failed") }),
        )
        .collect();
    assert_eq!(items.len(), 1, "stops at the first failed batch");
    let e = items[0].as_ref().unwrap_err().to_string();
    assert!(e.contains("batcher failed") && e.contains(".tar"), "{e}");
}

/// Every number a user passes on the command line has a checked range, the flag named.
#[test]
fn numeric_flags_are_range_checked_with_the_flag_named() {
    for (args, flag) in [
        (
            vec!["serve", "--model", "x", "--max-batch", "0"],
            "--max-batch",
        ),
        (
            vec!["serve", "--model", "x", "--max-samples", "1e9"],
            "--max-samples",
        ),
        (
            vec!["data", "synth", "--out", "x", "--history-step", "inf"],
            "--history-step",
        ),
        (
            vec!["data", "synth", "--out", "x", "--routes", "0"],
            "--routes",
        ),
        (
            vec!["bench", "infer", "--model", "x", "--batch-sizes", "1,0"],
            "--batch-sizes",
        ),
        (
            vec!["eval", "--model", "x", "--miss-threshold", "NaN"],
            "--miss-threshold",
        ),
        (
            vec![
                "data",
                "import",
                "lmrc",
                "--in",
                "x",
                "--out",
                "y",
                "--speed=-3",
            ],
            "--speed",
        ),
    ] {
        let (ok, _, err) = dfm(&args);
        assert!(!ok, "{args:?} refused");
        assert!(
            err.contains(flag) && err.contains("outside") || err.contains("not a"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_manifest_may_list_only_shards_inside_its_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tiny_dataset(tmp.path(), 16);
    let (dir, _) = copy(&src, tmp.path(), "escape");
    let m = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        m.replacen("\"train-000000.tar\"", "\"../world16/train-000000.tar\"", 1),
    )
    .unwrap();
    let e = dfm::data::manifest::Manifest::load(&dir)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a plain file name") && e.contains("shards[0].file"),
        "{e}"
    );
}
