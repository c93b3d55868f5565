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

    /// A manifest's generator: the job's `options`, and for a part of a job its place in it
    /// (`part`: index, count, and `job`, a digest of the options every part of the job shares),
    /// which `dfm data merge` checks. A whole job's generator is its options alone.
    pub fn generator(&self, options: &impl Serialize) -> anyhow::Result<serde_json::Value> {
        let mut g = serde_json::to_value(options)?;
        if *self != Part::WHOLE {
            g["part"] = serde_json::to_value(PartNote {
                shard_index: self.shard_index,
                num_shards: self.num_shards,
                job: job_digest(&g),
            })?;
        }
        Ok(g)
    }
}

/// Where a part's manifest says it belongs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PartNote {
    pub shard_index: usize,
    pub num_shards: usize,
    /// SHA-256 of the job's options (absent in parts written before dfm noted it).
    #[serde(default)]
    pub job: Option<String>,
}

impl PartNote {
    /// The note in a manifest's generator, if it is a part of a job.
    pub fn of(generator: &serde_json::Value) -> anyhow::Result<Option<PartNote>> {
        match generator.get("part") {
            None => Ok(None),
            Some(v) => Ok(Some(serde_json::from_value(v.clone()).map_err(|e| {
                anyhow::anyhow!("generator.part is not a part note ({e})")
            })?)),
        }
    }
}

fn job_digest(options: &serde_json::Value) -> Option<String> {
    use sha2::Digest;
    let bytes = serde_json::to_vec(options).ok()?;
    Some(crate::data::shards::hex(&sha2::Sha256::digest(&bytes)))
}
