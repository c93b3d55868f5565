//! Forward passes side by side on a CPU. flex's kernels use more cores for little (a batch-64
//! pass runs at 0.73-0.92 of its two-core rate on one core, and no faster on 16 cores than on
//! 2), so a server's model workers, `dfm predict --data` and `dfm eval` run several passes at
//! once, each in a rayon pool of its own (the pool flex's kernels and gemm compute in). A GPU
//! runs one pass at a time on its queue.

use rayon::ThreadPool;

/// How many forward passes run at once, and the threads each computes with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub workers: usize,
    pub threads: usize,
}

/// Most forward passes at once that [`plan`] picks by itself on a CPU: each holds its own
/// activations, and 16 is as many as were measured.
const MAX_AUTO_WORKERS: usize = 16;

/// The workers for `requested` (0: pick) on a CPU or a GPU with `cores` cores. On a CPU one
/// pass per core, each on one thread: flex's kernels scale across passes, not within one (the
/// quickstart model served on 16 cores: 1,004 samples/s one pass at a time on all 16, 4,757
/// with 16 passes of one thread; `bench/cpu_passes.sh`). A GPU runs one pass at a time on its
/// queue (two passes at once served at half the rate on an H100).
pub fn plan(requested: usize, on_cpu: bool, cores: usize) -> Plan {
    let cores = cores.max(1);
    let workers = match (requested, on_cpu) {
        (0, true) => cores.min(MAX_AUTO_WORKERS),
        (0, false) => 1,
        (n, _) => n,
    };
    Plan {
        workers,
        threads: (cores / workers).max(1),
    }
}

/// [`plan`] for a model on `device`, on this machine's cores.
pub fn plan_for(requested: usize, device: &burn::prelude::Device) -> Plan {
    plan(
        requested,
        crate::model::dropout::on_cpu(device),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )
}

/// One rayon pool per worker of a [`Plan`].
pub struct Passes {
    pools: Vec<ThreadPool>,
}

impl Passes {
    pub fn new(plan: Plan) -> anyhow::Result<Self> {
        Self::niced(plan, 0)
    }

    /// Passes whose threads run at `nice` (Linux; ignored elsewhere): a server's passes at 10
    /// leave the cores to its request threads whenever these have work, so that requests are
    /// parsed and answered while passes run (p99 at concurrency 32 on 2 cores: 43-48 ms before,
    /// 35-44 after).
    pub fn niced(plan: Plan, nice: i32) -> anyhow::Result<Self> {
        let pools = (0..plan.workers)
            .map(|i| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(plan.threads)
                    .thread_name(move |t| format!("dfm-pass-{i}-{t}"))
                    .start_handler(move |_| set_nice(nice))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Passes { pools })
    }

    pub fn workers(&self) -> usize {
        self.pools.len()
    }

    /// Runs `f` in worker `i`'s pool (`i` modulo the workers) on the calling thread.
    pub fn install<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        self.pools[i % self.pools.len()].install(f)
    }

    /// Runs `f` on each worker's thread, in its pool, until every `f` returns.
    pub fn each(&self, f: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for (i, pool) in self.pools.iter().enumerate() {
                s.spawn(move || pool.install(|| f(i)));
            }
        });
    }

    /// `f` of every item, item `i` in pool `i % workers`, all at once; in the items' order.
    pub fn map<I: Send, T: Send>(&self, items: Vec<I>, f: &(dyn Fn(I) -> T + Sync)) -> Vec<T> {
        std::thread::scope(|s| {
            let handles: Vec<_> = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let pool = &self.pools[i % self.pools.len()];
                    s.spawn(move || pool.install(|| f(item)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    }

    /// Streams `items` through `f`, as many at once as there are workers, and hands each output
    /// to `sink` in the items' order; stops at the first error of either.
    pub fn stream<I: Send, T: Send, E>(
        &self,
        items: impl Iterator<Item = Result<I, E>>,
        f: &(dyn Fn(I) -> T + Sync),
        mut sink: impl FnMut(T) -> anyhow::Result<()>,
    ) -> anyhow::Result<()>
    where
        anyhow::Error: From<E>,
    {
        let mut items = items.peekable();
        while items.peek().is_some() {
            let group = items
                .by_ref()
                .take(self.workers())
                .collect::<Result<Vec<_>, E>>()?;
            for out in self.map(group, f) {
                sink(out)?;
            }
        }
        Ok(())
    }
}

/// Sets the calling thread's nice value (Linux: per thread); best effort.
#[cfg(target_os = "linux")]
fn set_nice(nice: i32) {
    if nice != 0 {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
            tracing::debug!("setpriority({nice}) failed: {e}");
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn set_nice(_nice: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_share_the_cores() {
        let p = |r, cpu, c| {
            let p = plan(r, cpu, c);
            (p.workers, p.threads)
        };
        assert_eq!(p(0, true, 2), (2, 1));
        assert_eq!(p(0, true, 16), (16, 1));
        assert_eq!(p(0, true, 100), (16, 6));
        assert_eq!(p(0, true, 1), (1, 1));
        assert_eq!(p(0, false, 16), (1, 16));
        assert_eq!(p(3, true, 2), (3, 1), "asked for: kept, each on one thread");
    }

    #[test]
    fn map_keeps_the_order_and_runs_in_the_pools() {
        let passes = Passes::new(plan(2, true, 2)).unwrap();
        let out = passes.map((0..5).collect(), &|i: i32| {
            (i * 10, rayon::current_num_threads())
        });
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            [0, 10, 20, 30, 40]
        );
        assert!(out.iter().all(|o| o.1 == 1), "one thread per pass: {out:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn niced_passes_run_below_the_callers_priority() {
        use rustix::process::getpriority_process;
        let own = getpriority_process(None).unwrap();
        let passes = Passes::niced(plan(1, true, 1), 7).unwrap();
        let got = passes.map(vec![()], &|_| {
            getpriority_process(Some(rustix::thread::gettid())).unwrap()
        });
        // Raising one's nice value is always allowed; lowering it back is not.
        assert_eq!(got[0], own.max(7));
        assert_eq!(
            getpriority_process(None).unwrap(),
            own,
            "the caller's is unchanged"
        );
    }
}
