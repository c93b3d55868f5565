//! `dfm predict`, `dfm serve`, `dfm data sample`.

use super::ranges::*;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct PredictArgs {
    /// An export bundle or a run folder.
    #[arg(long)]
    pub model: PathBuf,
    /// JSON lines, one sample per line (images inline as png_base64, IMU rows inline).
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    pub input: Option<PathBuf>,
    /// Where to write the predictions of --input (JSON lines); standard output by default.
    #[arg(long, conflicts_with = "data")]
    pub output: Option<PathBuf>,
    /// A dataset folder: predict a split of it into Parquet under --out.
    #[arg(long, requires = "out")]
    pub data: Option<PathBuf>,
    /// The split of --data (train, val, test, test_days, all).
    #[arg(long, default_value = "test", requires = "data")]
    pub split: String,
    /// Folder for the Parquet file(s) of --data.
    #[arg(long, requires = "data")]
    pub out: Option<PathBuf>,
    /// This process's part of the split (array jobs): every --num-shards-th shard from this one.
    #[arg(value_parser = usize_in(0, 999_999), long, default_value_t = 0, requires = "data")]
    pub shard_index: usize,
    #[arg(value_parser = usize_in(1, 1_000_000), long, default_value_t = 1, requires = "data")]
    pub num_shards: usize,
    /// Loader workers for --data (decoding and features).
    #[arg(value_parser = usize_in(1, 256), long, default_value_t = 2)]
    pub workers: usize,
    /// Predict --data whose statistics differ from the model's training data.
    #[arg(long)]
    pub allow_shift: bool,
    #[arg(value_parser = usize_in(1, 65_536), long, default_value_t = 64)]
    pub batch_size: usize,
    /// auto | flex | wgpu | cuda[:N] (default: auto).
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(Args)]
pub struct ServeArgs {
    /// An export bundle or a run folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    #[arg(value_parser = usize_in(1, 4096), long, default_value_t = 32)]
    pub max_batch: usize,
    /// How long a forward pass waits for more requests (0: it takes what is queued; requests
    /// arriving meanwhile form the next batch).
    #[arg(value_parser = u64_in(0, 10_000), long, default_value_t = 0)]
    pub max_wait_ms: u64,
    /// Largest request body, bytes.
    #[arg(value_parser = usize_in(1024, 1 << 30), long, default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Most samples in one request (413 above).
    #[arg(value_parser = usize_in(1, 100_000), long, default_value_t = 256)]
    pub max_samples: usize,
    /// Most samples waiting for the model, all requests together (503 with Retry-After above).
    #[arg(value_parser = usize_in(1, 10_000_000), long, default_value_t = 4096)]
    pub max_queue_samples: usize,
    /// Longest a request may take, milliseconds (408 after).
    #[arg(value_parser = u64_in(1, 3_600_000), long, default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Longest a client may take to send its request headers, milliseconds.
    #[arg(value_parser = u64_in(1, 600_000), long, default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Longest shutdown waits for in-flight requests, milliseconds.
    #[arg(value_parser = u64_in(0, 3_600_000), long, default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Forward passes at once (0: one per core on a CPU, at most 16; one on a GPU).
    #[arg(value_parser = usize_in(0, 256), long, default_value_t = 0)]
    pub model_workers: usize,
    /// A file holding a bearer token that requests must present.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The model's name in the Open Inference Protocol (`/v2/models/NAME/infer`).
    #[arg(long, default_value = "dfm")]
    pub model_name: String,
    /// Also answer SageMaker's container contract: `GET /ping` and `POST /invocations` (the
    /// body and answer of `/v1/predict`). SageMaker sends to port 8080 on every interface:
    /// `--addr 0.0.0.0:8080`.
    #[arg(long)]
    pub sagemaker: bool,
    /// auto | flex | wgpu | cuda[:N] (default: auto).
    #[arg(long)]
    pub device: Option<String>,
}

#[derive(Args)]
pub struct SampleArgs {
    /// Dataset folder.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value = "test")]
    pub split: String,
    #[arg(value_parser = usize_in(1, 10_000_000), long, default_value_t = 10)]
    pub limit: usize,
    /// JSON lines of request-ready samples (images inline); standard output by default.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `dfm predict`: predictions for a JSON-lines file.
pub fn predict(a: PredictArgs) -> anyhow::Result<()> {
    let sel = crate::device::choose(a.device.as_deref(), None)?;
    let p = crate::predict::Predictor::load(&a.model, sel.device)?;
    if let (Some(data), Some(out)) = (&a.data, &a.out) {
        let w = crate::predict::data::run(
            &p,
            &crate::predict::data::DataPredict {
                data,
                split: &a.split,
                out,
                shard_index: a.shard_index,
                num_shards: a.num_shards,
                batch_size: a.batch_size,
                workers: a.workers,
                allow_shift: a.allow_shift,
            },
        )?;
        eprintln!(
            "{} predictions ({} shards) written to {} in {:.1} s: {:.0} samples/s",
            w.rows,
            w.shards,
            w.file.display(),
            w.seconds,
            w.samples_per_s()
        );
        return Ok(());
    }
    let input = a
        .input
        .as_deref()
        .expect("clap requires --input without --data");
    let (out, n) = crate::predict::predict_jsonl(&p, input, a.batch_size)?;
    match &a.output {
        Some(path) => {
            crate::util::write_atomic(path, out.as_bytes())?;
            eprintln!("{n} predictions written to {}", path.display());
        }
        None => print!("{out}"),
    }
    Ok(())
}

/// `dfm serve`: the model over HTTP until SIGTERM or Ctrl-C.
pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let sel = crate::device::choose(a.device.as_deref(), None)?;
    let p = crate::predict::Predictor::load(&a.model, sel.device)?;
    let token = a
        .token_file
        .as_deref()
        .map(crate::serve::read_token)
        .transpose()?;
    let o = crate::serve::ServeOptions {
        addr: a.addr,
        max_batch: a.max_batch,
        max_wait_ms: a.max_wait_ms,
        max_body_bytes: a.max_body_bytes,
        max_samples: a.max_samples,
        max_queue_samples: a.max_queue_samples,
        request_timeout_ms: a.request_timeout_ms,
        header_timeout_ms: a.header_timeout_ms,
        shutdown_grace_ms: a.shutdown_grace_ms,
        token,
        model_workers: a.model_workers,
        model_name: a.model_name,
        sagemaker: a.sagemaker,
    };
    crate::serve::serve_blocking(p, &o, &a.model.display().to_string())
}

/// `dfm data sample`: request-ready JSON lines of a split's first samples.
pub fn sample(a: SampleArgs) -> anyhow::Result<()> {
    let out = crate::predict::request_lines(&a.data, &a.split, a.limit)?;
    match &a.out {
        Some(p) => crate::util::write_atomic(p, out.as_bytes())?,
        None => print!("{out}"),
    }
    Ok(())
}
