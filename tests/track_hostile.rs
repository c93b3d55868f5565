//! Tracking against hostile or misconfigured servers (a fake on loopback, `common::fake_mlflow`):
//! credentials leave the process only in the Authorization header; a server cannot make dfm
//! write outside a folder the user allowed, make it read a huge answer, take the run's data
//! elsewhere with a redirect, or hold a command past `run.track_flush_s`; `https://` works with
//! the CA the user names (MLflow's `MLFLOW_TRACKING_SERVER_CERT_PATH`).

mod common;
use common::fake_mlflow::{Fake, Mode};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A finished tiny run (not tracked) that the tests export to their servers.
fn shared_run() -> &'static Path {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &RUN.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = tiny_dataset(tmp.path(), 91);
        let run = tmp.path().join("run");
        let mut sets = tiny_model();
        sets.extend([
            format!("data.path={}", data.display()),
            format!("run.dir={}", run.display()),
            "train.max_steps=4".into(),
            "run.track_flush_s=1".into(),
        ]);
        train_with(&sets);
        (tmp, run)
    })
    .1
}

/// Runs dfm with extra environment variables (and none of MLflow's own from the caller);
/// returns (success, stdout + stderr, wall time).
fn dfm_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, Duration) {
    let mut c = Command::new(dfm_bin());
    c.args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir());
    for k in [
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
    ] {
        c.env_remove(k);
    }
    c.envs(env.iter().copied());
    let t = Instant::now();
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, t.elapsed())
}

/// `dfm export` of the shared run, tracked to `uri`.
fn export_to(uri: &str, env: &[(&str, &str)]) -> (bool, String, Duration) {
    let out = tempfile::tempdir().unwrap().keep().join("bundle");
    let run = shared_run().to_str().unwrap();
    dfm_env(
        &[
            "export",
            "--run",
            run,
            "--out",
            out.to_str().unwrap(),
            "--track",
            uri,
        ],
        env,
    )
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            hits.extend(files_holding(&p, needle));
        } else if let Ok(b) = std::fs::read(&p)
            && b.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            hits.push(p);
        }
    }
    hits
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {b}")
}

#[test]
fn credentials_leave_the_process_only_in_the_authorization_header() {
    const SECRET: &str = "s3cret-Pw";
    let fake = Fake::start(Mode::Ok);
    let uri = format!("http://alice:{SECRET}@127.0.0.1:{}", fake.port);
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny_dataset(tmp.path(), 92);
    let run = tmp.path().join("run");
    let mut args: Vec<String> = ["train", "--device", "flex", "--track", &uri]
        .map(String::from)
        .to_vec();
    for s in tiny_model().into_iter().chain([
        format!("data.path={}", data.display()),
        format!("run.dir={}", run.display()),
        "train.max_steps=4".into(),
        "train.checkpoint_every=2".into(),
        "run.track_flush_s=10".into(),
    ]) {
        args.extend(["--set".into(), s]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, text, _) = dfm_env(&args, &[]);
    assert!(ok, "{text}");
    let bundle = tmp.path().join("bundle");
    let (ok, text2, _) = dfm_env(
        &[
            "export",
            "--run",
            run.to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
            "--track",
            &uri,
        ],
        &[],
    );
    assert!(ok, "{text2}");
    for t in [&text, &text2] {
        assert!(!t.contains(SECRET), "printed: {t}");
        assert!(t.contains("tracking:") && !t.contains("NOT logged"), "{t}");
    }
    assert_eq!(files_holding(&run, SECRET), Vec::<PathBuf>::new());
    assert_eq!(files_holding(&bundle, SECRET), Vec::<PathBuf>::new());
    let reqs = fake.requests();
    assert!(reqs.len() > 5, "{reqs:?}");
    for r in &reqs {
        assert_eq!(
            r.auth.as_deref(),
            Some(basic("alice", SECRET).as_str()),
            "{r:?}"
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains(SECRET),
            "sent in {}",
            r.path
        );
    }
    let clean = format!("http://127.0.0.1:{}", fake.port);
    assert!(
        reqs.iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains(&format!("\"value\":\"{clean}\""))),
        "run.track is logged without its credentials"
    );

    // MLflow's own variables, as its clients read them.
    let fake = Fake::start(Mode::Ok);
    let (ok, t, _) = export_to(
        &fake.uri(),
        &[
            ("MLFLOW_TRACKING_USERNAME", "bob"),
            ("MLFLOW_TRACKING_PASSWORD", SECRET),
        ],
    );
    assert!(ok && !t.contains(SECRET), "{t}");
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.auth == Some(basic("bob", SECRET)))
    );
    let fake = Fake::start(Mode::Ok);
    let (ok, t, _) = export_to(&fake.uri(), &[("MLFLOW_TRACKING_TOKEN", SECRET)]);
    assert!(ok && !t.contains(SECRET), "{t}");
    let bearer = format!("Bearer {SECRET}");
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.auth.as_deref() == Some(&bearer))
    );
}

#[test]
fn a_server_cannot_make_dfm_write_outside_a_folder_the_user_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("config.toml"), "mine").unwrap();
    let fake = Fake::start(Mode::LocalRoot(victim.clone()));
    let (ok, text, _) = export_to(&fake.uri(), &[]);
    assert!(ok, "the export itself succeeds: {text}");
    assert_eq!(
        std::fs::read_to_string(victim.join("config.toml")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        1,
        "nothing written there"
    );
    assert!(
        text.contains("run.track_artifact_root") && text.contains("NOT logged"),
        "{text}"
    );
}

#[test]
fn a_huge_answer_is_refused_and_the_command_goes_on() {
    let fake = Fake::start(Mode::Huge(64 << 20));
    let (ok, text, _) = export_to(&fake.uri(), &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("longer than 16777216 bytes") && text.contains("NOT logged"),
        "{text}"
    );
}

#[test]
fn redirects_are_not_followed() {
    let elsewhere = Fake::start(Mode::Ok);
    let fake = Fake::start(Mode::Redirect(elsewhere.port));
    let (ok, text, _) = export_to(&fake.uri(), &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("redirects to http://127.0.0.1:{}", elsewhere.port))
            && text.contains("NOT logged"),
        "{text}"
    );
    assert!(
        elsewhere.requests().is_empty(),
        "nothing went to the other address"
    );
}

#[test]
fn the_flush_deadline_holds_against_a_server_that_never_answers() {
    // The shared run has run.track_flush_s = 1; one request waits up to 30 s on its own.
    let fake = Fake::start(Mode::Hang);
    let (ok, text, took) = export_to(&fake.uri(), &[]);
    assert!(ok, "{text}");
    assert!(text.contains("NOT logged"), "{text}");
    assert!(
        took < Duration::from_secs(15),
        "the export waited {took:?} for a server that never answers (flush: 1 s)"
    );
    assert!(!fake.requests().is_empty());
}

/// An MLflow stand-in over TLS (Python's http.server and ssl) with a certificate for localhost.
const TLS_FAKE: &str = r#"
import http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        info = {"run_id": "r1", "experiment_id": "1", "artifact_uri": "mlflow-artifacts:/1/r1/artifacts"}
        p = self.path
        if "get-by-name" in p: v = {"experiment": {"experiment_id": "1"}}
        elif "experiments/create" in p: v = {"experiment_id": "1"}
        elif "runs/create" in p or "runs/get" in p: v = {"run": {"info": info, "data": {}}}
        else: v = {}
        b = json.dumps(v).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    do_GET = do_POST = do_PUT = answer
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

#[test]
fn https_works_with_the_ca_the_user_names() {
    let tmp = tempfile::tempdir().unwrap();
    // A private CA, and the server's certificate signed by it (as a company's CA would).
    let p = |n: &str| tmp.path().join(n);
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    std::fs::write(p("ext"), "subjectAltName=DNS:localhost\n").unwrap();
    let openssl = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(tmp.path())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dfm-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]) && openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "srv.csr",
    ]) && openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext",
        "-out",
        "cert.pem",
    ]);
    if !made {
        return skip("openssl could not make a test CA and certificate");
    }
    let Ok(mut server) = Command::new("python3")
        .arg("-c")
        .arg(TLS_FAKE)
        .arg(&cert)
        .arg(&key)
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        return skip("python3 is not installed");
    };
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let uri = format!("https://localhost:{}", line.trim());
    let cert_env = ca.to_str().unwrap();
    let (ok, text, _) = export_to(&uri, &[("MLFLOW_TRACKING_SERVER_CERT_PATH", cert_env)]);
    let (ok2, untrusted, _) = export_to(&uri, &[]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(ok, "{text}");
    assert!(
        text.contains("artifacts logged to https://localhost") && !text.contains("NOT logged"),
        "{text}"
    );
    assert!(
        ok2 && untrusted.contains("NOT logged"),
        "a certificate no CA signs is refused: {untrusted}"
    );
}
