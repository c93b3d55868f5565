//! The simulator is deterministic, covers every region and modality, and splits by route.

mod common;
use common::*;
use dfm::data::manifest::Manifest;
use std::collections::BTreeSet;

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tiny_dataset(tmp.path(), 7);
    let b = tmp.path().join("again");
    dfm::data::synth::generate(&b, &tiny_config(7), false).unwrap();
    let (fa, fb) = (file_bytes(&a), file_bytes(&b));
    assert!(fa.len() > 4, "several shards and a manifest");
    assert_eq!(fa, fb, "same seed, byte-identical shards and manifest");
    let c = tiny_dataset(tmp.path(), 8);
    assert_ne!(file_bytes(&c), fa, "another seed, another world");
}

#[test]
fn inspect_sees_all_regions_modalities_and_disjoint_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_dataset(tmp.path(), 3);
    let m = Manifest::load(&dir).unwrap();
    let rep = dfm::data::inspect::inspect(&dir, false, 2).unwrap();
    assert!(rep.bad.is_empty());
    assert!(rep.shared_routes.is_empty());
    for split in ["train", "val", "test", "test_days"] {
        let s = rep
            .splits
            .get(split)
            .unwrap_or_else(|| panic!("split {split} present"));
        assert!(s.samples > 0, "{split} has samples");
        assert_eq!(
            s.samples, m.splits[split].samples,
            "{split}: counted = manifest"
        );
    }
    let regions: BTreeSet<&String> = rep.splits.values().flat_map(|s| s.regions.keys()).collect();
    assert_eq!(
        regions.into_iter().cloned().collect::<Vec<_>>(),
        ["rural", "suburban", "urban"]
    );
    let train = &rep.splits["train"];
    for m in [
        "history",
        "imu",
        "image",
        "stops",
        "context",
        "label:future",
        "label:eta",
        "label:on_time",
        "label:delivered",
        "label:next_stop",
    ] {
        assert!(
            train.modalities.get(m).copied().unwrap_or(0) > 0,
            "modality {m} present"
        );
    }
    // Missing modalities do occur (masks matter), but are the exception.
    assert!(
        train.modalities["imu"] < train.samples && train.modalities["imu"] * 10 > train.samples * 7
    );
    let mut all = BTreeSet::new();
    for s in rep.splits.values() {
        for r in &s.routes {
            assert!(all.insert(r.clone()), "route {r} in two splits");
        }
    }
    // The CLI shows the same and exits 0.
    let (ok, out, err) = dfm(&["data", "inspect", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("urban")
            && out.contains("rural")
            && out.contains("suburban")
            && out.contains("share no route id"),
        "{out}"
    );
}

#[test]
fn synth_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_dataset(tmp.path(), 5);
    let err = dfm::data::synth::generate(&dir, &tiny_config(5), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--force"), "{err}");
    dfm::data::synth::generate(&dir, &tiny_config(5), true).unwrap();
}

/// `dfm data subset`: a share of the training routes (the smaller subset inside the larger one
/// for a seed), the other splits whole, statistics of the kept routes; at least one route.
#[test]
fn subsets_keep_a_share_of_training_routes_and_every_other_split() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_dataset(tmp.path(), 9);
    let m = Manifest::load(&dir).unwrap();
    let routes = |m: &Manifest, s: &str| -> BTreeSet<String> {
        m.split(s).unwrap().routes.iter().cloned().collect()
    };
    let (small, large) = (tmp.path().join("small"), tmp.path().join("large"));
    let out = |d: &std::path::Path, f: &str| {
        let (ok, o, e) = dfm(&[
            "data",
            "subset",
            "--in",
            dir.to_str().unwrap(),
            "--out",
            d.to_str().unwrap(),
            "--fraction",
            f,
            "--seed",
            "4",
        ]);
        assert!(ok, "{o}\n{e}");
        Manifest::load(d).unwrap()
    };
    let (ms, ml) = (out(&small, "0.2"), out(&large, "0.6"));
    let all = routes(&m, "train");
    let (rs, rl) = (routes(&ms, "train"), routes(&ml, "train"));
    assert!(
        !rs.is_empty() && rs.len() < rl.len() && rl.len() < all.len(),
        "{} {} {}",
        rs.len(),
        rl.len(),
        all.len()
    );
    assert!(
        rs.is_subset(&rl) && rl.is_subset(&all),
        "nested subsets of the training routes"
    );
    for split in ["val", "test"] {
        assert_eq!(
            ms.split(split).unwrap().samples,
            m.split(split).unwrap().samples
        );
    }
    assert!(ms.split("train").unwrap().samples < m.split("train").unwrap().samples);
    assert_ne!(ms.norm, m.norm, "statistics of the kept routes");
    let tiny = tmp.path().join("tiny");
    assert_eq!(
        routes(&out(&tiny, "0.000001"), "train").len(),
        1,
        "at least one route"
    );
    let (ok, _, e) = dfm(&[
        "data",
        "subset",
        "--in",
        dir.to_str().unwrap(),
        "--out",
        "x",
        "--fraction",
        "1.5",
    ]);
    assert!(!ok && e.contains("--fraction"), "{e}");
}

/// A simulation run as an array job (two parts, `--shard-index 0|1 --num-shards 2`), merged,
/// is the one-process dataset: same samples in the same splits, same statistics to the
/// manifest's precision; the merged shards pass `dfm data inspect`. Parts that share a route,
/// or disagree on the sample shapes, are refused.
#[test]
fn a_sharded_simulation_merged_equals_the_one_process_run() {
    use dfm::data::part::Part;
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(77);
    let whole = tmp.path().join("whole");
    dfm::data::synth::generate(&whole, &cfg, false).unwrap();
    let parts: Vec<_> = (0..2)
        .map(|i| {
            let p = tmp.path().join(format!("part{i}"));
            dfm::data::synth::generate_part(&p, &cfg, false, Part::new(i, 2).unwrap()).unwrap();
            p
        })
        .collect();
    let merged = tmp.path().join("merged");
    let (ok, out, err) = dfm(&[
        "data",
        "merge",
        "--out",
        merged.to_str().unwrap(),
        parts[0].to_str().unwrap(),
        parts[1].to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("2 parts merged"), "{out}");
    assert_same_dataset(&whole, &merged);
    let rep = dfm::data::inspect::inspect(&merged, false, 2).unwrap();
    assert!(rep.shared_routes.is_empty());

    // A part twice: its routes are in both.
    let copy = tmp.path().join("copy");
    copy_dir(&parts[0], &copy);
    let err = dfm::data::merge::merge(&tmp.path().join("m2"), &[parts[0].clone(), copy], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is in both"), "{err}");
    // Another shape: not parts of one job.
    let mut other = cfg.clone();
    other.spec.future_len = 5;
    let odd = tmp.path().join("odd");
    dfm::data::synth::generate_part(&odd, &other, false, Part::new(1, 2).unwrap()).unwrap();
    let err = dfm::data::merge::merge(&tmp.path().join("m3"), &[parts[0].clone(), odd], false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec") && err.contains("not parts of one job"),
        "{err}"
    );
    // A part index outside the parts is refused by the command line, naming both flags.
    let (ok, _, err) = dfm(&[
        "data",
        "synth",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
        "--routes",
        "4",
        "--shard-index",
        "3",
        "--num-shards",
        "2",
    ]);
    assert!(
        !ok && err.contains("--shard-index 3 must be below --num-shards 2"),
        "{err}"
    );
}
