//! Training batches drawn from several datasets at once (`data.sources`).
//!
//! Each batch comes from one source, picked by weight: its samples share a sampling and a set
//! of labels, so nothing is padded and a source without some labels (GeoLife has no stops)
//! simply leaves those losses masked in its batches. An epoch is as many batches as all the
//! sources hold together (with weights proportional to their sizes, one pass over each); a
//! source drawn more often than it holds starts another pass, shuffled anew. The picks of an
//! epoch come from the run's seed, so a resumed run knows how far each source had gone and
//! draws exactly what an uninterrupted one draws. One source behaves as its loader alone.

use super::loader::{Epoch, Loader};
use crate::data::sample::Sample;
use crate::error::DataError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

/// The loaders of a mixture's sources (the same split of each), with their weights.
pub struct Mixture {
    loaders: Vec<Loader>,
    weights: Vec<f64>,
    seed: u64,
}

/// Seed of a source's `pass`-th pass within `epoch` (pass 0: the epoch itself, as for a lone
/// loader).
fn pass_seed(epoch: u64, pass: usize) -> u64 {
    epoch.wrapping_add((pass as u64) << 32)
}

impl Mixture {
    pub fn new(loaders: Vec<Loader>, weights: Vec<f64>, seed: u64) -> Self {
        assert_eq!(loaders.len(), weights.len());
        assert!(!loaders.is_empty(), "a mixture of no source");
        Mixture {
            loaders,
            weights,
            seed,
        }
    }

    /// Samples listed over all sources.
    pub fn num_samples(&self) -> usize {
        self.loaders.iter().map(Loader::num_samples).sum()
    }

    /// Batches per epoch: all the sources' together.
    pub fn num_batches(&self) -> usize {
        self.loaders.iter().map(Loader::num_batches).sum()
    }

    /// Batches per source per pass.
    pub fn source_batches(&self) -> Vec<usize> {
        self.loaders.iter().map(Loader::num_batches).collect()
    }

    /// The source of each batch of `epoch`, drawn by weight from the run's seed (sources with
    /// no full batch are never drawn).
    pub fn picks(&self, epoch: u64) -> Vec<usize> {
        let n = self.num_batches();
        if self.loaders.len() == 1 {
            return vec![0; n];
        }
        let w: Vec<f64> = self
            .loaders
            .iter()
            .zip(&self.weights)
            .map(|(l, &w)| if l.num_batches() > 0 { w } else { 0.0 })
            .collect();
        let total: f64 = w.iter().sum();
        let mut rng = ChaCha8Rng::seed_from_u64(crate::seed::hash(self.seed, "mixture", &[epoch]));
        (0..n)
            .map(|_| {
                let mut u = rng.r#gen::<f64>() * total;
                for (i, &x) in w.iter().enumerate() {
                    if u < x {
                        return i;
                    }
                    u -= x;
                }
                w.iter().rposition(|&x| x > 0.0).unwrap_or(0)
            })
            .collect()
    }

    /// Starts an epoch, `skip_batches` in (mid-epoch resume); see [`Loader::epoch`].
    pub fn epoch<F, T>(
        &self,
        epoch: u64,
        skip_batches: usize,
        per_sample: Arc<dyn Fn(Sample) -> F + Send + Sync>,
        per_batch: Arc<dyn Fn(Vec<F>) -> T + Send + Sync>,
    ) -> MixEpoch<F, T>
    where
        F: Send + 'static,
        T: Send + 'static,
    {
        let picks = self.picks(epoch);
        let per_pass = self.source_batches();
        let skip_batches = skip_batches.min(picks.len());
        // Where each source stands after the skipped batches: its pass, and batches into it.
        let mut done = vec![0usize; self.loaders.len()];
        for &s in &picks[..skip_batches] {
            done[s] += 1;
        }
        let pos: Vec<(usize, usize)> = done
            .iter()
            .zip(&per_pass)
            .map(|(&d, &n)| d.checked_div(n).map_or((0, 0), |q| (q, d % n)))
            .collect();
        MixEpoch {
            loaders: self.loaders.clone(),
            epoch,
            picks,
            next: skip_batches,
            pos,
            open: (0..self.loaders.len()).map(|_| None).collect(),
            per_sample,
            per_batch,
        }
    }
}

/// One epoch of a mixture: an iterator of batches (or the first error).
pub struct MixEpoch<F, T> {
    loaders: Vec<Loader>,
    epoch: u64,
    picks: Vec<usize>,
    /// Index of the next batch in `picks`.
    next: usize,
    /// Per source: (pass, batches to skip when it opens).
    pos: Vec<(usize, usize)>,
    /// Per source: its open pass, and whether it has given a batch yet.
    open: Vec<Option<(Epoch<T>, bool)>>,
    per_sample: Arc<dyn Fn(Sample) -> F + Send + Sync>,
    per_batch: Arc<dyn Fn(Vec<F>) -> T + Send + Sync>,
}

impl<F: Send + 'static, T: Send + 'static> Iterator for MixEpoch<F, T> {
    type Item = Result<T, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let s = *self.picks.get(self.next)?;
        loop {
            if self.open[s].is_none() {
                let (pass, skip) = self.pos[s];
                let e = self.loaders[s].epoch(
                    pass_seed(self.epoch, pass),
                    skip,
                    self.per_sample.clone(),
                    self.per_batch.clone(),
                );
                self.open[s] = Some((e, false));
            }
            let (e, gave) = self.open[s].as_mut().expect("opened above");
            match e.next() {
                Some(Ok(b)) => {
                    *gave = true;
                    self.next += 1;
                    return Some(Ok(b));
                }
                Some(Err(err)) => return Some(Err(err)),
                // The source's pass is over. A lone source ends the epoch with it (as its
                // loader alone does); a pass that gave nothing (every record bad) ends it too,
                // instead of reopening forever; otherwise the source starts its next pass.
                None => {
                    if self.loaders.len() == 1 || !*gave {
                        return None;
                    }
                    self.open[s] = None;
                    self.pos[s] = (self.pos[s].0 + 1, 0);
                }
            }
        }
    }
}
