//! Writing datasets never loses one and never makes a wrong one: sample keys are unique (and
//! `inspect` finds them when they are not), an endless CSV row is an error naming it, a failed
//! `--force` write leaves the old dataset as it was and nothing beside it, `--force` never
//! deletes a file dfm did not write, and `merge` takes only the whole set of one job's parts,
//! each shard as it was written.

mod common;
use common::*;
use dfm::data::import::gps_csv;
use dfm::data::part::Part;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file of a folder (names, bytes), to compare a folder before and after.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// The names in a folder.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// A GPS CSV of moving vehicles, 60 fixes each (10 s apart), one id per vehicle.
fn vehicles_csv(dir: &Path, ids: &[&str]) -> PathBuf {
    let mut text = String::from("trajectory_id,timestamp,lat,lon\n");
    for (v, id) in ids.iter().enumerate() {
        for k in 0..60 {
            let t = 1_641_600_000 + 10 * k + 100_000 * v as i64;
            let lat = 48.0 + k as f64 * 9e-4;
            text.push_str(&format!("\"{id}\",{t},{lat:.7},11.0\n"));
        }
    }
    let p = dir.join("vehicles.csv");
    std::fs::write(&p, text).unwrap();
    p
}

fn options() -> gps_csv::CsvOptions {
    let mut o = gps_csv::CsvOptions {
        test_days: 0.0,
        ..Default::default()
    };
    o.window.history_len = 3;
    o.window.future_len = 3;
    o
}

#[test]
fn ids_a_file_name_cannot_hold_still_give_one_key_per_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let input = vehicles_csv(tmp.path(), &["a b", "a_b", "a.b", "a/b"]);
    let out = tmp.path().join("ds");
    gps_csv::import(&input, &out, &options(), false, false).unwrap();
    let samples: Vec<dfm::Sample> = all_samples(&out)
        .into_values()
        .flat_map(|s| s.into_values())
        .collect();
    let keys: std::collections::BTreeSet<&str> = samples.iter().map(|s| s.key.as_str()).collect();
    assert!(samples.len() > 100, "{}", samples.len());
    let m = dfm::data::manifest::Manifest::load(&out).unwrap();
    assert_eq!(keys.len(), m.coverage.samples, "one key per sample");
    let routes: std::collections::BTreeSet<&str> =
        samples.iter().map(|s| s.route_id.as_str()).collect();
    assert_eq!(routes.len(), 4);
    let rep = dfm::data::inspect::inspect(&out, false, 2).unwrap();
    assert!(rep.duplicate_keys.is_empty());

    // A dataset that holds a shard twice: inspect names the keys, the command fails.
    let train = &m.splits["train"].shards[0];
    std::fs::copy(out.join(&train.file), out.join("train-copy.tar")).unwrap();
    edit_manifest(&out, |v| {
        let mut sh = v["splits"]["train"]["shards"][0].clone();
        sh["file"] = "train-copy.tar".into();
        let n = sh["samples"].as_u64().unwrap();
        v["splits"]["train"]["shards"]
            .as_array_mut()
            .unwrap()
            .push(sh);
        let total = v["splits"]["train"]["samples"].as_u64().unwrap() + n;
        v["splits"]["train"]["samples"] = total.into();
    });
    let rep = dfm::data::inspect::inspect(&out, false, 2).unwrap();
    assert_eq!(
        rep.duplicate_keys.len(),
        train.samples,
        "{:?}",
        rep.duplicate_keys
    );
    assert!(
        rep.render()
            .contains("sample keys name more than one sample")
    );
    let (ok, _, err) = dfm(&["data", "inspect", out.to_str().unwrap()]);
    assert!(!ok && err.contains("used more than once"), "{err}");
}

#[test]
fn an_endless_csv_row_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("endless.csv");
    let mut text = String::from("trajectory_id,timestamp,lat,lon\na,1641600000,48.0,11.0\nb,");
    text.push_str(&"7".repeat(3 << 20));
    std::fs::write(&input, text).unwrap();
    let e = gps_csv::import(&input, &tmp.path().join("x"), &options(), true, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("endless.csv") && e.contains("row 3") && e.contains("longer than"),
        "{e}"
    );
}

#[test]
fn a_failed_write_over_a_dataset_keeps_it_and_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let good = vehicles_csv(tmp.path(), &["a", "b", "c"]);
    let out = tmp.path().join("ds");
    gps_csv::import(&good, &out, &options(), false, false).unwrap();
    let before = snapshot(&out);
    let around = names(tmp.path());

    // A bad record half way: the import stops, the dataset is the one before.
    let mut text = std::fs::read_to_string(&good).unwrap();
    text.push_str("d,1641700000,abc,11.0\n");
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, text).unwrap();
    let e = gps_csv::import(&bad, &out, &options(), false, true).unwrap_err();
    assert!(e.to_string().contains("bad.csv"), "{e}");
    assert_eq!(snapshot(&out), before, "the old dataset is untouched");
    let mut now = names(tmp.path());
    now.retain(|n| n != "bad.csv");
    assert_eq!(now, around, "no staging folder or temporary file is left");

    // --force replaces a dataset, never a file dfm did not write.
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let e = gps_csv::import(&good, &out, &options(), false, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("notes.txt") && e.contains("did not write"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    std::fs::remove_file(out.join("notes.txt")).unwrap();
    // Without --force a dataset is refused; with it, replaced whole.
    let e = gps_csv::import(&good, &out, &options(), false, false).unwrap_err();
    assert!(e.to_string().contains("--force"), "{e}");
    gps_csv::import(&good, &out, &options(), false, true).unwrap();
    assert_eq!(
        snapshot(&out),
        before,
        "the same import writes the same bytes"
    );
}

/// Parts of a tiny world's simulation.
fn parts(dir: &Path, name: &str, routes: usize, n: usize) -> Vec<PathBuf> {
    let mut cfg = tiny_config(79);
    cfg.routes = routes;
    (0..n)
        .map(|i| {
            let p = dir.join(format!("{name}{i}"));
            dfm::data::synth::generate_part(&p, &cfg, false, Part::new(i, n).unwrap()).unwrap();
            p
        })
        .collect()
}

fn merge_err(out: &Path, parts: &[PathBuf], force: bool) -> String {
    format!(
        "{:#}",
        dfm::data::merge::merge(out, parts, force).unwrap_err()
    )
}

#[test]
fn merge_takes_only_the_whole_set_of_one_job_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let a = parts(t, "a", 12, 3);
    let e = merge_err(&t.join("m1"), &a[..2], false);
    assert!(e.contains("part(s) 2 are missing"), "{e}");

    // Parts of two jobs (2 and 4 parts) that share no route: still not one dataset.
    let (two, four) = (parts(t, "two", 4, 2), parts(t, "four", 4, 4));
    let e = merge_err(&t.join("m2"), &[two[0].clone(), four[1].clone()], false);
    assert!(
        e.contains("of another job") && e.contains("not parts of one job"),
        "{e}"
    );
    // A whole dataset is not a part.
    let whole = t.join("whole");
    dfm::data::synth::generate(&whole, &tiny_config(80), false).unwrap();
    let e = merge_err(&t.join("m3"), &[whole], false);
    assert!(e.contains("not a part of an array job"), "{e}");

    // One byte flipped in a shard (same size): refused, naming the shard.
    let flipped = t.join("flipped");
    copy_dir(&a[1], &flipped);
    let m = dfm::data::manifest::Manifest::load(&flipped).unwrap();
    let shard = flipped.join(&m.splits["train"].shards[0].file);
    let mut b = std::fs::read(&shard).unwrap();
    b[700] ^= 0x01;
    std::fs::write(&shard, b).unwrap();
    let e = merge_err(&t.join("m4"), &[a[0].clone(), flipped, a[2].clone()], false);
    assert!(
        e.contains("SHA-256") && e.contains(&m.splits["train"].shards[0].file),
        "{e}"
    );

    // A merge over a dataset that fails (a truncated part) leaves that dataset as it was.
    let out = t.join("merged");
    dfm::data::merge::merge(&out, &a, false).unwrap();
    let before = snapshot(&out);
    let cut = t.join("cut");
    copy_dir(&a[2], &cut);
    let m = dfm::data::manifest::Manifest::load(&cut).unwrap();
    let shard = cut.join(&m.splits["train"].shards[0].file);
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let around = names(t);
    let e = merge_err(&out, &[a[0].clone(), a[1].clone(), cut], true);
    assert!(e.contains("bytes, its manifest says"), "{e}");
    assert_eq!(snapshot(&out), before, "the merged dataset is untouched");
    assert_eq!(names(t), around, "nothing is left beside it");
    // The same merge with every part: replaced, the same dataset.
    dfm::data::merge::merge(&out, &a, true).unwrap();
    assert_eq!(snapshot(&out), before);
}
