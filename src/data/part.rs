//! Data jobs as array jobs: part `index` of `count` takes every `count`-th unit of work (a
//! simulated route; an imported user, trajectory or route) from the `index`-th, and writes a
//! dataset of its own; `dfm data merge` makes one dataset of the parts (`merge.rs`).

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Part {
    pub shard_index: usize,
    pub num_shards: usize,
}

impl Default for Part {
    fn default() -> Self {
        Part::WHOLE
    }
}

impl Part {
    /// The whole job in one process.
    pub const WHOLE: Part = Part {
        shard_index: 0,
        num_shards: 1,
    };

    pub fn new(shard_index: usize, num_shards: usize) -> anyhow::Result<Part> {
        anyhow::ensure!(
            num_shards >= 1 && shard_index < num_shards,
            "--shard-index {shard_index} must be below --num-shards {num_shards}"
        );
        Ok(Part {
            shard_index,
            num_shards,
        })
    }

    /// Whether unit `i` (in the job's own order) is this part's.
    pub fn takes(&self, i: usize) -> bool {
        i % self.num_shards == self.shard_index
    }

    /// This part's units of a job's units, in order.
    pub fn select<T>(self, units: impl IntoIterator<Item = T>) -> impl Iterator<Item = T> {
        units
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| self.takes(*i))
            .map(|(_, u)| u)
    }

    /// Notes the part in a manifest's generator (a whole job's generator stays as it was).
    pub fn note(&self, generator: &mut serde_json::Value) {
        if *self != Part::WHOLE {
            generator["part"] = serde_json::to_value(self).expect("two integers");
        }
    }
}
