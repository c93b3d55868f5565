//! A tiny trained model, exported, shared by a test binary's serving tests; a server on
//! loopback; and the helpers that talk to it.

use super::*;
use burn::prelude::*;
use dfm::data::loader::{Loader, LoaderOptions};
use dfm::data::manifest::Manifest;
use dfm::predict::Predictor;
use dfm::serve::ServeOptions;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The tiny trained model and samples every test of this binary shares (trained once).
pub fn setup(_tmp: &Path) -> (PathBuf, Vec<dfm::Sample>) {
    static SHARED: std::sync::OnceLock<(tempfile::TempDir, PathBuf, Vec<dfm::Sample>)> =
        std::sync::OnceLock::new();
    let (_, bundle, samples) = SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (b, s) = train_and_export(dir.path());
        (dir, b, s)
    });
    (bundle.clone(), samples.clone())
}

/// A tiny trained model, exported; and some test samples.
pub fn train_and_export(tmp: &Path) -> (PathBuf, Vec<dfm::Sample>) {
    train_and_export_with(tmp, &[])
}

/// [`train_and_export`] with more config overrides (`model.support_guard=true`, ...).
pub fn train_and_export_with(tmp: &Path, extra: &[&str]) -> (PathBuf, Vec<dfm::Sample>) {
    train_and_export_on(tmp, &tiny_dataset(tmp, 61), extra)
}

/// [`train_and_export_with`] on the dataset at `data`.
pub fn train_and_export_on(tmp: &Path, data: &Path, extra: &[&str]) -> (PathBuf, Vec<dfm::Sample>) {
    let data = data.to_path_buf();
    let run = tmp.join("run");
    let mut o: Vec<String> = [
        format!("data.path={}", data.display()),
        format!("run.dir={}", run.display()),
        "data.image_size=16".into(),
        "model.d_model=32".into(),
        "model.layers=1".into(),
        "model.heads=2".into(),
        "train.batch_size=16".into(),
        "train.max_steps=40".into(),
        "eval.split=val".into(),
    ]
    .to_vec();
    o.extend(extra.iter().map(|s| s.to_string()));
    train_with(&o);
    let bundle = tmp.join("bundle");
    dfm::bundle::export(&run, dfm::bundle::Which::Best, &bundle).unwrap();
    let m = Manifest::load(&data).unwrap();
    let l = Loader::new(
        &data,
        &m,
        "test",
        LoaderOptions {
            batch_size: 12,
            shuffle_buffer: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let samples: Vec<dfm::Sample> = l
        .epoch(0, 0, Arc::new(|s| s), Arc::new(|b| b))
        .next()
        .unwrap()
        .unwrap();
    assert!(
        samples.iter().any(|s| !s.images.is_empty()) && samples.iter().any(|s| s.imu.is_some())
    );
    (bundle, samples)
}

pub fn predictor(bundle: &Path) -> Predictor {
    Predictor::new(
        dfm::bundle::load_trained(bundle, &Device::flex()).unwrap(),
        Device::flex(),
    )
}

pub struct Server {
    pub url: String,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<anyhow::Result<Arc<dfm::serve::metrics::Metrics>>>,
}

pub async fn start(bundle: &Path, o: ServeOptions) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let p = predictor(bundle);
    let handle = tokio::spawn(async move {
        dfm::serve::run(listener, p, &o, async move {
            let _ = rx.await;
        })
        .await
    });
    Server {
        url,
        stop: Some(tx),
        handle,
    }
}

pub async fn post(
    c: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut r = c
        .post(format!("{url}/v1/predict"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-5 * (1.0 + x.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| close(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| close(v, w)))
        }
        _ => a == b,
    }
}
