//! The loader's order depends only on (seed, epoch), resumes mid-epoch exactly, and batches carry
//! masks for missing modalities.

mod common;
use burn::data::dataloader::batcher::Batcher;
use burn::tensor::Device;
use common::*;
use dfm::batch::FeatureBatcher;
use dfm::data::loader::{Loader, LoaderOptions};
use dfm::data::manifest::Manifest;
use dfm::features::Featurizer;
use std::sync::Arc;

fn keys(
    dir: &std::path::Path,
    m: &Manifest,
    workers: usize,
    seed: u64,
    epoch: u64,
    skip: usize,
) -> Vec<Vec<String>> {
    let opts = LoaderOptions {
        batch_size: 16,
        workers,
        shuffle_buffer: 100,
        seed,
        drop_last: true,
        ..Default::default()
    };
    let l = Loader::new(dir, m, "train", opts).unwrap();
    l.epoch(
        epoch,
        skip,
        Arc::new(|s: dfm::Sample| s.key),
        Arc::new(|b: Vec<String>| b),
    )
    .map(|b| b.unwrap())
    .collect()
}

#[test]
fn order_is_a_function_of_seed_and_epoch_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_dataset(tmp.path(), 21);
    let m = Manifest::load(&dir).unwrap();
    let a = keys(&dir, &m, 1, 5, 0, 0);
    assert_eq!(a.len(), m.splits["train"].samples / 16, "drop_last batches");
    assert_eq!(
        a,
        keys(&dir, &m, 3, 5, 0, 0),
        "worker count does not change the order"
    );
    assert_eq!(
        a,
        keys(&dir, &m, 8, 5, 0, 0),
        "more workers than shards: the same order"
    );
    assert_ne!(a, keys(&dir, &m, 1, 5, 1, 0), "next epoch, another order");
    assert_ne!(a, keys(&dir, &m, 1, 6, 0, 0), "another seed, another order");
    let mut flat: Vec<String> = a.concat();
    let n = flat.len();
    flat.sort();
    flat.dedup();
    assert_eq!(flat.len(), n, "no sample twice in an epoch");
    // Resume after 3 batches: exactly the rest of the epoch.
    assert_eq!(keys(&dir, &m, 2, 5, 0, 3), a[3..].to_vec());
}

#[test]
fn batches_have_shapes_and_masks_for_missing_modalities() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_dataset(tmp.path(), 22);
    let m = Manifest::load(&dir).unwrap();
    let norm = Arc::new(Featurizer::new(&m.spec, &m.norm, 32));
    let opts = LoaderOptions {
        batch_size: 64,
        workers: 2,
        shuffle_buffer: 0,
        ..Default::default()
    };
    let l = Loader::new(&dir, &m, "val", opts).unwrap();
    let samples: Vec<dfm::Sample> = l
        .epoch(0, 0, Arc::new(|s| s), Arc::new(|b| b))
        .flat_map(|b| b.unwrap())
        .collect();
    assert_eq!(samples.len(), m.splits["val"].samples);
    let feats: Vec<_> = samples.iter().take(64).map(|s| norm.features(s)).collect();
    let device = Device::flex();
    let b = FeatureBatcher.batch(feats, &device);
    let n = b.len();
    let sp = &m.spec;
    assert_eq!(b.hist.dims(), [n, sp.history_len, dfm::features::HIST_CH]);
    assert_eq!(b.imu.dims(), [n, sp.imu_len, 4]);
    assert_eq!(b.image.dims(), [n, 3, 32, 32]);
    assert_eq!(b.stops.dims(), [n, sp.max_stops, dfm::features::STOP_CH]);
    assert_eq!(b.targets.future.dims(), [n, sp.future_len, 2]);
    let img_mask: Vec<f32> = b.image_mask.to_data().try_to_vec::<f32>().unwrap();
    let imu_mask: Vec<f32> = b.imu_mask.to_data().try_to_vec::<f32>().unwrap();
    let stops_mask: Vec<f32> = b.stops_mask.to_data().try_to_vec::<f32>().unwrap();
    let image: Vec<f32> = b.image.to_data().try_to_vec::<f32>().unwrap();
    let per_img = 3 * 32 * 32;
    for (i, s) in samples.iter().take(n).enumerate() {
        assert_eq!(
            img_mask[i],
            if s.images.is_empty() { 0.0 } else { 1.0 },
            "image mask of {}",
            s.key
        );
        assert_eq!(
            imu_mask[i],
            if s.imu.is_none() { 0.0 } else { 1.0 },
            "imu mask of {}",
            s.key
        );
        let ns: f32 = stops_mask[i * sp.max_stops..(i + 1) * sp.max_stops]
            .iter()
            .sum();
        assert_eq!(ns as usize, s.stops.len());
        let px = &image[i * per_img..(i + 1) * per_img];
        if s.images.is_empty() {
            assert!(
                px.iter().all(|&v| v == 0.0),
                "a missing image is zeros behind a zero mask, not a fake image"
            );
        } else {
            // Standardized per image and channel: mean 0, variance 1.
            for c in px.chunks(32 * 32) {
                let mean = c.iter().sum::<f32>() / c.len() as f32;
                let var = c.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c.len() as f32;
                assert!(
                    mean.abs() < 1e-3 && (var - 1.0).abs() < 1e-2,
                    "mean {mean} var {var}"
                );
            }
        }
    }
    assert!(
        img_mask.contains(&0.0) || imu_mask.contains(&0.0),
        "this batch has a missing modality to mask"
    );
    // Future targets: the local frame puts the vehicle at the origin heading along +x, so on
    // average the future lies ahead.
    let fut: Vec<f32> = b.targets.future.to_data().try_to_vec::<f32>().unwrap();
    let fl = sp.future_len;
    let mean_x: f32 = (0..n).map(|i| fut[(i * fl + fl - 1) * 2]).sum::<f32>() / n as f32;
    assert!(
        mean_x > 0.3,
        "final future x ahead of the vehicle on average: {mean_x}"
    );
}

/// NormalizationFile statistics come from the training split only: held-out samples moving ten
/// times faster do not move the speed statistics.
#[test]
fn normalization_statistics_come_from_the_training_split_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tiny_dataset(tmp.path(), 23);
    let m = Manifest::load(&dir).unwrap();
    let samples = dfm::data::loader::first_samples(&dir, "train", 40).unwrap();
    let write = |out: &std::path::Path, held_out_speed: f32| {
        let mut w = dfm::data::writer::DatasetWriter::new(out, m.spec.clone(), 100, false).unwrap();
        for (i, s) in samples.iter().enumerate() {
            let mut s = s.clone();
            let (split, speed) = if i % 2 == 0 {
                ("train", 5.0)
            } else {
                ("test", held_out_speed)
            };
            s.route_id = format!("{split}-{}", s.route_id);
            for f in &mut s.history {
                f.speed = Some(speed);
            }
            w.add(split, &s).unwrap();
        }
        w.finish("test", serde_json::json!({})).unwrap();
        Manifest::load(out).unwrap().norm.get("speed")
    };
    let slow = write(&tmp.path().join("slow"), 5.0);
    let fast = write(&tmp.path().join("fast"), 50.0);
    assert!((slow.0 - 5.0).abs() < 1e-4, "{slow:?}");
    assert_eq!(slow, fast, "held-out samples do not change the statistics");
}
