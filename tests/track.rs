//! Experiment tracking against a real MLflow server (`mlflow server` on loopback with a SQLite
//! store and a local artifact root, started by the test; `.ci/run` installs MLflow): a tracked
//! run reads back through the REST API with its params, tags, metric histories, final
//! evaluation and artifacts, `dfm eval --track` and `dfm export --track` add to the same run, and
//! a run whose server dies mid-run finishes and says what it could not log.

mod common;
use common::*;
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An `mlflow server` in its own process group (killed with its workers on drop).
struct Server {
    child: Child,
    uri: String,
    log: PathBuf,
}

impl Server {
    /// A server of our own on a free port, ready to answer the REST API. A port picked free can
    /// be taken again before `mlflow` binds it (by the other test's server, or as a client's
    /// port), and then the health check would answer from someone else's server: a server counts
    /// as up only when it is alive and its own log names its address; otherwise it is started
    /// again on another port.
    fn start(dir: &Path) -> Option<Server> {
        for attempt in 0..3 {
            let mut s = Self::spawn(dir, attempt)?;
            if s.wait_up() {
                return Some(s);
            }
            eprintln!(
                "mlflow server on {} did not come up as ours; trying another port:\n{}",
                s.uri,
                s.log_tail()
            );
        }
        panic!("mlflow server did not come up in 3 tries");
    }

    fn spawn(dir: &Path, attempt: usize) -> Option<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("server-{attempt}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("mlflow")
            .args([
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
            ])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn();
        let Ok(child) = child else {
            skip("`mlflow` is not installed (pip install mlflow)");
            return None;
        };
        Some(Server {
            child,
            uri: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    /// Waits (3 minutes at most) until this server answers the health check and an API call;
    /// false when it exits or the answer comes from another process.
    fn wait_up(&mut self) -> bool {
        let addr = self.uri.trim_start_matches("http://").to_string();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(180) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            let named = self.log_tail().contains(&addr);
            if named && get(&format!("{}/health", self.uri)).is_some() {
                let probe = format!(
                    "{}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default",
                    self.uri
                );
                return get(&probe).is_some() && matches!(self.child.try_wait(), Ok(None));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("mlflow server did not come up: {}", self.log_tail());
    }

    /// The end of what the server printed (for failure messages).
    fn log_tail(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&text[text.len().saturating_sub(4000)..]).into_owned()
    }

    fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A GET through curl-free std: a blocking HTTP/1.0 request on loopback.
fn get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

fn api(s: &Server, path: &str) -> Value {
    let url = format!("{}/api/2.0/mlflow/{path}", s.uri);
    serde_json::from_str(&get(&url).unwrap_or_else(|| panic!("GET {url}"))).unwrap()
}

fn run_id(s: &Server, run: &Path) -> String {
    let text = std::fs::read_to_string(run.join("tracking.json")).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the server said:\n{}",
            run.join("tracking.json").display(),
            s.log_tail()
        )
    });
    let link: Value = serde_json::from_str(&text).unwrap();
    link["run_id"].as_str().unwrap().to_string()
}

fn history(s: &Server, id: &str, key: &str) -> Vec<(u64, f64)> {
    api(
        s,
        &format!("metrics/get-history?run_id={id}&metric_key={key}"),
    )["metrics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|m| (m["step"].as_u64().unwrap(), m["value"].as_f64().unwrap()))
        .collect()
}

fn artifacts(s: &Server, id: &str, path: &str) -> Vec<String> {
    api(s, &format!("artifacts/list?run_id={id}&path={path}"))["files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect()
}

fn kv(list: &Value, key: &str) -> Option<String> {
    list.as_array()?
        .iter()
        .find(|p| p["key"] == key)
        .and_then(|p| p["value"].as_str().map(String::from))
}

fn tiny_run(data: &Path, run: &Path, uri: &str, extra: &[&str]) -> Vec<String> {
    let mut o = tiny_model();
    o.extend([
        format!("data.path={}", data.display()),
        format!("run.dir={}", run.display()),
        format!("run.track={uri}"),
        "run.experiment=dfm-tests".into(),
        "train.max_steps=30".into(),
        "train.log_every=10".into(),
    ]);
    o.extend(extra.iter().map(|s| s.to_string()));
    o
}

#[test]
fn a_tracked_run_reads_back_from_a_real_mlflow_server() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(server) = Server::start(tmp.path()) else {
        return;
    };
    let data = tiny_dataset(tmp.path(), 61);
    let run = tmp.path().join("tracked");
    let sets = tiny_run(&data, &run, &server.uri, &["train.checkpoint_every=10"]);
    train_with(&sets);
    let id = run_id(&server, &run);

    let r = api(&server, &format!("runs/get?run_id={id}"))["run"].clone();
    assert_eq!(r["info"]["status"], "FINISHED");
    let (params, tags) = (&r["data"]["params"], &r["data"]["tags"]);
    assert_eq!(kv(params, "train.max_steps").as_deref(), Some("30"));
    assert_eq!(kv(params, "model.d_model").as_deref(), Some("32"));
    assert_eq!(
        kv(tags, "dfm.data_sha256"),
        Some(dfm::data::manifest::Manifest::hash(&data).unwrap())
    );
    assert!(kv(tags, "dfm.git_commit").is_some_and(|c| !c.is_empty()));
    assert!(kv(tags, "dfm.device").is_some());

    // Every logged step's loss, as in metrics.jsonl.
    let logged: Vec<(u64, f64)> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Some((v["step"].as_u64()?, v["loss"].as_f64()?))
        })
        .collect();
    assert_eq!(logged.len(), 3);
    let mut loss = history(&server, &id, "loss");
    loss.sort_by_key(|x| x.0);
    assert_eq!(loss.len(), logged.len(), "{loss:?}");
    for ((s1, v1), (s2, v2)) in loss.iter().zip(&logged) {
        assert_eq!(s1, s2);
        assert!((v1 - v2).abs() < 1e-9 * v2.abs().max(1.0));
    }
    assert!(!history(&server, &id, "val_loss").is_empty());

    // The final evaluation, model and baselines.
    let eval: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval_test.json")).unwrap())
            .unwrap();
    for (key, want) in [
        (
            "test.trajectory.at_1.min_fde_m",
            &eval["trajectory"]["at_1"]["min_fde_m"],
        ),
        (
            "test.baselines.constant_velocity.trajectory.at_k.min_fde_m",
            &eval["baselines"]["constant_velocity"]["trajectory"]["at_k"]["min_fde_m"],
        ),
    ] {
        let h = history(&server, &id, key);
        assert_eq!(h.len(), 1, "{key}");
        assert!((h[0].1 - want.as_f64().unwrap()).abs() < 1e-9, "{key}");
    }
    let files = artifacts(&server, &id, "");
    for f in [
        "config.toml",
        "normalization.json",
        "metrics.jsonl",
        "loss.png",
        "eval_test.json",
    ] {
        assert!(files.iter().any(|x| x == f), "{f} in {files:?}");
    }

    // `dfm eval --track` and `dfm export --track` add to the same run.
    let (ok, out, err) = dfm(&[
        "eval",
        "--model",
        run.to_str().unwrap(),
        "--split",
        "val",
        "--device",
        "flex",
        "--track",
        &server.uri,
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        history(&server, &id, "val.trajectory.at_1.min_fde_m").len(),
        1
    );
    assert!(artifacts(&server, &id, "eval").contains(&"eval/val.json".to_string()));
    let bundle = tmp.path().join("bundle");
    let (ok, out, err) = dfm(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
        "--track",
        &server.uri,
    ]);
    assert!(ok, "{out}{err}");
    let shipped = artifacts(&server, &id, "bundle");
    assert!(
        shipped.contains(&"bundle/bundle.json".to_string()),
        "{shipped:?}"
    );
    let count = std::fs::read_dir(&bundle).unwrap().count();
    assert_eq!(shipped.len(), count, "every bundle file");

    // Resumed from an earlier checkpoint (as after a crash between the last metrics and the last
    // checkpoint), the run trains steps 21-30 again and evaluates again: the server keeps one
    // point per step, as metrics.jsonl does.
    std::fs::remove_dir_all(run.join("ckpt-00000030")).unwrap();
    let cfg = dfm::config::Config::load(Some(&run.join("config.toml")), &[]).unwrap();
    dfm::train::train(cfg, true, &burn::prelude::Device::flex(), true).unwrap();
    let mut again = history(&server, &id, "loss");
    again.sort_by_key(|x| x.0);
    assert_eq!(
        again, loss,
        "one point per step, the same values (exact resume)"
    );
    assert_eq!(
        history(&server, &id, "test.trajectory.at_1.min_fde_m").len(),
        1
    );
    let r = api(&server, &format!("runs/get?run_id={id}"))["run"].clone();
    assert_eq!(r["info"]["status"], "FINISHED");
}

#[test]
fn training_outlives_its_tracking_server() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut server) = Server::start(tmp.path()) else {
        return;
    };
    let data = tiny_dataset(tmp.path(), 62);
    let run: PathBuf = tmp.path().join("orphan");
    let sets = tiny_run(
        &data,
        &run,
        &server.uri,
        &[
            "train.max_steps=600",
            "train.epochs=1000",
            "train.log_every=1",
            "run.track_flush_s=2",
        ],
    );
    let mut cmd = Command::new(dfm_bin());
    cmd.args(["train", "--device", "flex"]);
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let child = cmd
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server as soon as the run exists on it.
    let t = Instant::now();
    while !run.join("tracking.json").exists() {
        assert!(t.elapsed() < Duration::from_secs(120), "no MLflow run");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(run.join("eval_test.json").is_file(), "the run finished");
    let last = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(last.contains("\"step\":600"), "every step logged locally");
    assert!(text.contains("training goes on"), "warned: {text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("tracking:") && l.contains("NOT logged"))
        .unwrap_or_else(|| panic!("says what was not logged: {text}"));
    let lost: usize = line
        .split("NOT logged: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(lost > 0, "{line}");
}
