//! Object stores on loopback for the storage tests: a real S3-compatible server (`moto_server`,
//! from PyPI's `moto[server]`, which `.ci/run` installs), Python's `http.server` for plain
//! HTTP reads, and a server that accepts connections and never answers.

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as OPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "dfm-test";

/// A process that is killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(port: u16, child: &mut Child, what: &str) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("{what} exited ({st}) before it listened");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what} did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn on_path(exe: &str) -> bool {
    Command::new(exe)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// `moto_server` on a free loopback port with the test bucket made, or `None` (after
/// `common::skip`) where it is not installed.
pub fn moto() -> Option<Server> {
    if !on_path("moto_server") {
        super::skip("moto_server is not installed (pip install 'moto[server]')");
        return None;
    }
    let port = free_port();
    let mut child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(port, &mut child, "moto_server");
    let s = Server { child, port };
    rt().block_on(async {
        let put = format!("http://127.0.0.1:{port}/{BUCKET}");
        // moto makes a bucket on an unsigned PUT.
        let client = reqwest::Client::new();
        let r = client.put(&put).send().await.unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    });
    Some(s)
}

impl Server {
    /// The environment a dfm process needs to reach this server (credentials included, as a
    /// user's shell would have them).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "testing-key".into()),
            (
                "AWS_SECRET_ACCESS_KEY",
                "testing-secret-do-not-print".into(),
            ),
            ("AWS_REGION", "us-east-1".into()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    pub fn client(&self) -> AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_access_key_id("testing-key")
            .with_secret_access_key("testing-secret-do-not-print")
            .with_region("us-east-1")
            .build()
            .unwrap()
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let c = self.client();
        rt().block_on(async {
            c.get(&OPath::from(key))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        })
        .to_vec()
    }

    pub fn put(&self, key: &str, bytes: Vec<u8>) {
        let c = self.client();
        rt().block_on(async {
            c.put(&OPath::from(key), PutPayload::from(bytes))
                .await
                .unwrap()
        });
    }

    pub fn delete(&self, key: &str) {
        let c = self.client();
        rt().block_on(async { c.delete(&OPath::from(key)).await.unwrap() });
    }

    /// Object names directly under `prefix`.
    pub fn names(&self, prefix: &str) -> Vec<String> {
        let c = self.client();
        let l = rt().block_on(async {
            c.list_with_delimiter(Some(&OPath::from(prefix)))
                .await
                .unwrap()
        });
        let mut n: Vec<String> = l
            .objects
            .iter()
            .map(|o| o.location.filename().unwrap().to_string())
            .collect();
        n.sort();
        n
    }
}

impl Server {
    /// Every object under `prefix`, at any depth, by its path below it, sorted.
    pub fn tree(&self, prefix: &str) -> Vec<String> {
        use futures_util::StreamExt;
        let c = self.client();
        let p = OPath::from(prefix);
        let mut n: Vec<String> = rt().block_on(async {
            c.list(Some(&p))
                .map(|m| m.unwrap().location.to_string())
                .collect::<Vec<_>>()
                .await
        });
        for x in &mut n {
            *x = x[prefix.len() + 1..].to_string();
        }
        n.sort();
        n
    }

    /// Copies every object under `prefix` into the folder `dir`.
    pub fn download(&self, prefix: &str, dir: &std::path::Path) {
        for rel in self.tree(prefix) {
            let p = dir.join(&rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, self.get(&format!("{prefix}/{rel}"))).unwrap();
        }
    }
}

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Python's `http.server` serving `dir` on a free loopback port.
pub fn http_server(dir: &Path) -> Server {
    let port = free_port();
    let mut child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(port, &mut child, "python3 -m http.server");
    Server { child, port }
}

/// A listener that accepts connections and never answers (a stalled server); it lives as long
/// as the test process.
pub fn silent_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            held.push(c);
        }
    });
    port
}
