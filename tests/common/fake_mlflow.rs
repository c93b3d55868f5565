//! A stand-in for an MLflow tracking server on loopback, friendly or hostile, that records what it
//! receives: the answers of `mlflow server` to the calls dfm makes, or a huge answer, no answer,
//! a redirect, a local artifact root, or a body a test sets (fuzzing).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub enum Mode {
    /// Answers as `mlflow server` does (artifacts through its proxy).
    Ok,
    /// Every answer is this many bytes of JSON-ish padding, without a length (read to the end).
    Huge(usize),
    /// Reads the request and never answers.
    Hang,
    /// Answers 307 to the same path on this port.
    Redirect(u16),
    /// Answers as `Ok`, with runs whose artifact root is this local folder.
    LocalRoot(PathBuf),
    /// Every answer is 200 with the body the test put here.
    Scripted(Arc<Mutex<Vec<u8>>>),
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub auth: Option<String>,
    pub body: Vec<u8>,
}

pub struct Fake {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    pub fn start(mode: Mode) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, s2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (mode, log, stop) = (mode.clone(), l2.clone(), s2.clone());
                std::thread::spawn(move || serve(conn, &mode, &log, &stop));
            }
        });
        Fake { port, log, stop }
    }

    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut len, mut auth) = (0usize, None);
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok()?,
            "authorization" => auth = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        auth,
        body,
    })
}

fn serve(mut conn: TcpStream, mode: &Mode, log: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    let Some(req) = read_request(&conn) else {
        return;
    };
    log.lock().unwrap().push(req.clone());
    let answer = |conn: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            body.len()
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(body);
    };
    match mode {
        Mode::Hang => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Mode::Huge(n) => {
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            );
            let chunk = vec![b' '; 1 << 16];
            let mut left = *n;
            while left > 0 {
                let k = left.min(chunk.len());
                if conn.write_all(&chunk[..k]).is_err() {
                    break;
                }
                left -= k;
            }
        }
        Mode::Redirect(port) => {
            let to = format!("Location: http://127.0.0.1:{port}{}\r\n", req.path);
            answer(&mut conn, "307 Temporary Redirect", &to, b"");
        }
        Mode::Scripted(body) => {
            let b = body.lock().unwrap().clone();
            answer(&mut conn, "200 OK", "", &b);
        }
        Mode::Ok | Mode::LocalRoot(_) => {
            let root = match mode {
                Mode::LocalRoot(p) => format!("file://{}", p.display()),
                _ => "mlflow-artifacts:/1/r1/artifacts".to_string(),
            };
            answer(
                &mut conn,
                "200 OK",
                "",
                mlflow_answer(&req.path, &root).as_bytes(),
            );
        }
    }
}

/// What `mlflow server` answers to the calls dfm makes.
fn mlflow_answer(path: &str, artifact_root: &str) -> String {
    let info = serde_json::json!({
        "run_id": "r1", "experiment_id": "1", "artifact_uri": artifact_root, "status": "RUNNING"
    });
    let v = if path.contains("experiments/get-by-name") {
        serde_json::json!({"experiment": {"experiment_id": "1", "name": "dfm"}})
    } else if path.contains("experiments/create") {
        serde_json::json!({"experiment_id": "1"})
    } else if path.contains("runs/create") || path.contains("runs/get") {
        serde_json::json!({"run": {"info": info, "data": {}}})
    } else {
        serde_json::json!({})
    };
    v.to_string()
}
