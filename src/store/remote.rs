//! One object in an object store, and the blocking calls the data code makes on it. The calls
//! run on a small tokio runtime of their own, so any thread (the loader's included) may make
//! them; each request and each wait for body bytes is bounded by the settings' timeout.

use super::Settings;
use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as OPath;
use object_store::{
    ClientConfigKey, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt,
    ObjectStoreScheme, PutPayload, RetryConfig, WriteMultipart,
};
use std::collections::HashMap;
use std::future::Future;
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;

/// Uploads up to this size are one request; larger ones are multipart uploads of such parts.
const PART_BYTES: usize = 8 << 20;
/// Body chunks buffered ahead of a reader (with the prefetch, what bounds a read's memory).
const CHUNKS_AHEAD: usize = 64;

/// An object (or a prefix, for `list`) in a store.
#[derive(Clone)]
pub struct Object {
    store: Arc<dyn ObjectStore>,
    path: OPath,
    url: String,
    set: Settings,
    /// A plain HTTP(S) server, which dfm only reads from.
    read_only: bool,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dfm-store")
            .enable_all()
            .build()
            .expect("cannot start the object store's runtime")
    })
}

/// Runs `fut` on the store runtime and waits for it from this (non-async) thread.
fn wait<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> anyhow::Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| anyhow::anyhow!("an object store call panicked"))
}

/// One client per store (scheme and host), shared by every object in it.
fn store_for(
    scheme: ObjectStoreScheme,
    url: &url::Url,
    set: &Settings,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let key = url[..url::Position::BeforePath].to_string();
    let mut stores = STORES.get_or_init(Default::default).lock().unwrap();
    if let Some(s) = stores.get(&key) {
        return Ok(s.clone());
    }
    let store = build(scheme, url, set)?;
    stores.insert(key, store.clone());
    Ok(store)
}

/// A new client for a store, with dfm's retries and timeouts.
fn build(
    scheme: ObjectStoreScheme,
    url: &url::Url,
    set: &Settings,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let retry = RetryConfig {
        max_retries: set.retries,
        retry_timeout: set.timeout * (set.retries as u32 + 1),
        ..Default::default()
    };
    // A whole shard may take longer than one request's limit: the timeouts that matter are
    // dfm's own (no answer, or no body bytes, for `set.timeout`), so the request's is an hour.
    let connect = format!("{}s", set.timeout.as_secs());
    macro_rules! cloud {
        ($builder:ty, $key:path) => {
            Arc::new(
                <$builder>::from_env()
                    .with_url(url.as_str())
                    .with_retry(retry)
                    .with_config($key(ClientConfigKey::Timeout), "3600s")
                    .with_config($key(ClientConfigKey::ConnectTimeout), connect)
                    .build()?,
            )
        };
    }
    Ok(match scheme {
        ObjectStoreScheme::AmazonS3 => {
            cloud!(
                object_store::aws::AmazonS3Builder,
                object_store::aws::AmazonS3ConfigKey::Client
            )
        }
        ObjectStoreScheme::GoogleCloudStorage => cloud!(
            object_store::gcp::GoogleCloudStorageBuilder,
            object_store::gcp::GoogleConfigKey::Client
        ),
        ObjectStoreScheme::MicrosoftAzure => cloud!(
            object_store::azure::MicrosoftAzureBuilder,
            object_store::azure::AzureConfigKey::Client
        ),
        ObjectStoreScheme::Http => {
            let opts = ClientOptions::new()
                .with_allow_http(url.scheme() == "http")
                .with_timeout(std::time::Duration::from_secs(3600))
                .with_connect_timeout(set.timeout);
            Arc::new(
                object_store::http::HttpBuilder::new()
                    .with_url(&url[..url::Position::BeforePath])
                    .with_client_options(opts)
                    .with_retry(retry)
                    .build()?,
            )
        }
        other => bail!("{}: {other:?} is not a store dfm reads", url.scheme()),
    })
}

impl Object {
    /// The object a URL names. A URL with user information or a query string is refused:
    /// credentials come from the environment.
    pub fn parse(s: &str) -> anyhow::Result<Object> {
        let shown = super::scrub(s);
        let url = url::Url::parse(s).with_context(|| format!("{shown}: not a URL"))?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            bail!(
                "{}: credentials in a dataset URL are refused (user information or a query string); give them through the store's environment variables (AWS_*, GOOGLE_*, AZURE_*)",
                shown.split('?').next().unwrap_or_default()
            );
        }
        let (scheme, path) = ObjectStoreScheme::parse(&url).map_err(|_| {
            anyhow::anyhow!(
                "{shown}: `{}` URLs are not a store dfm reads (s3, gs, az, http(s), file, or a plain path)",
                url.scheme()
            )
        })?;
        let set = Settings::from_env()?;
        let path = OPath::parse(path).with_context(|| format!("{shown}: not an object path"))?;
        Ok(Object {
            read_only: scheme == ObjectStoreScheme::Http,
            store: store_for(scheme, &url, &set)?,
            path,
            url: shown,
            set,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Refuses to write to a plain HTTP(S) server.
    pub fn check_writable(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.read_only,
            "{}: dfm reads datasets over plain http(s) but does not write there; write to an s3, gs or az bucket or a folder",
            self.url
        );
        Ok(())
    }

    /// The object's size and version tag, or none when it does not exist.
    pub fn head(&self) -> anyhow::Result<Option<(u64, Option<String>)>> {
        let (store, path, t) = (self.store.clone(), self.path.clone(), self.set.timeout);
        let r = wait(async move { tokio::time::timeout(t, store.head(&path)).await })?;
        match r {
            Err(_) => bail!("{}: no answer in {} s", self.url, t.as_secs()),
            Ok(Err(object_store::Error::NotFound { .. })) => Ok(None),
            Ok(Err(e)) => Err(anyhow::anyhow!(e).context(format!("cannot read {}", self.url))),
            Ok(Ok(m)) => Ok(Some((m.size, m.e_tag))),
        }
    }

    /// A stream of the object's bytes, and its size; the bytes start arriving at once.
    /// One request: its answer's headers give the size and version, its body is the stream.
    pub fn open(&self) -> anyhow::Result<(Reader, u64)> {
        let (store, path, t) = (self.store.clone(), self.path.clone(), self.set.timeout);
        let first = match wait(async move { tokio::time::timeout(t, store.get(&path)).await })? {
            Err(_) => bail!("{}: no answer in {} s", self.url, t.as_secs()),
            Ok(Err(object_store::Error::NotFound { .. })) => {
                bail!("{}: no such object", self.url)
            }
            Ok(Err(e)) => {
                return Err(anyhow::anyhow!(e).context(format!("cannot read {}", self.url)));
            }
            Ok(Ok(r)) => r,
        };
        let (size, e_tag) = (first.meta.size, first.meta.e_tag.clone());
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let task = runtime().spawn(pump(self.clone(), size, e_tag, first, tx));
        Ok((
            Reader {
                rx,
                cur: Bytes::new(),
                task,
                url: self.url.clone(),
            },
            size,
        ))
    }

    /// The names directly under this prefix, with their sizes.
    pub fn list(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let (store, path, t) = (self.store.clone(), self.path.clone(), self.set.timeout);
        let r = wait(async move {
            tokio::time::timeout(t * 4, store.list_with_delimiter(Some(&path))).await
        })?;
        let listed = r
            .map_err(|_| anyhow::anyhow!("{}: no answer in {} s", self.url, t.as_secs() * 4))?
            .with_context(|| format!("cannot list {}", self.url))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|m| Some((m.location.filename()?.to_string(), m.size)))
            .collect())
    }

    /// Every object under this prefix, at any depth: its path below the prefix and its size.
    /// At most `max` objects; more is an error.
    pub fn list_tree(&self, max: usize) -> anyhow::Result<Vec<(String, u64)>> {
        let (store, path, t) = (self.store.clone(), self.path.clone(), self.set.timeout);
        let r = wait(async move {
            let mut s = store.list(Some(&path));
            let mut out = Vec::new();
            loop {
                match tokio::time::timeout(t, s.next()).await {
                    Err(_) => return Err(anyhow::anyhow!("no answer in {} s", t.as_secs())),
                    Ok(None) => return Ok(out),
                    Ok(Some(m)) => {
                        let m = m?;
                        let rel = m.location.prefix_match(&path).map(|p| {
                            p.map(|x| x.as_ref().to_string())
                                .collect::<Vec<_>>()
                                .join("/")
                        });
                        out.push((rel.unwrap_or_default(), m.size));
                        anyhow::ensure!(out.len() <= max, "more than {max} objects");
                    }
                }
            }
        })?;
        r.with_context(|| format!("cannot list {}", self.url))
    }

    /// Writes the local file `src` here.
    pub fn upload(&self, src: &std::path::Path) -> anyhow::Result<()> {
        let (store, path, src2) = (self.store.clone(), self.path.clone(), src.to_path_buf());
        wait(async move { upload(store, path, &src2).await })?
            .with_context(|| format!("cannot upload {} to {}", src.display(), self.url))
    }

    pub fn delete(&self) -> anyhow::Result<()> {
        let (store, path) = (self.store.clone(), self.path.clone());
        wait(async move { store.delete(&path).await })?
            .with_context(|| format!("cannot delete {}", self.url))
    }
}

async fn upload(
    store: Arc<dyn ObjectStore>,
    path: OPath,
    src: &std::path::Path,
) -> anyhow::Result<()> {
    let mut f = std::fs::File::open(src)?;
    if f.metadata()?.len() <= PART_BYTES as u64 {
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        store.put(&path, PutPayload::from(bytes)).await?;
        return Ok(());
    }
    let mut w = WriteMultipart::new_with_chunk_size(store.put_multipart(&path).await?, PART_BYTES);
    let mut buf = vec![0u8; PART_BYTES];
    let r: anyhow::Result<()> = async {
        loop {
            w.wait_for_capacity(4).await?;
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            w.write(&buf[..n]);
        }
    }
    .await;
    match r {
        Ok(()) => {
            w.finish().await?;
            Ok(())
        }
        Err(e) => {
            let _ = w.abort().await;
            Err(e)
        }
    }
}

/// A blocking reader of an object's bytes, fed by a task that streams them.
pub struct Reader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    cur: Bytes,
    task: tokio::task::JoinHandle<()>,
    url: String,
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => {
                    return Err(std::io::Error::other(format!("{}: {e}", self.url)));
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Streams the object into `tx`, from the answer `open` got. A failed request or a body that breaks off or stalls is tried
/// again from the byte it stopped at, up to the settings' retries, with backoff; the version
/// tag pins the object, so a shard replaced while it is read is an error, not a mix of two.
async fn pump(
    o: Object,
    size: u64,
    e_tag: Option<String>,
    first: object_store::GetResult,
    tx: mpsc::Sender<Result<Bytes, String>>,
) {
    let (mut offset, mut failures) = (0u64, 0usize);
    let t = o.set.timeout;
    let mut first = Some(first);
    while offset < size {
        let opts = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            if_match: e_tag.clone(),
            ..Default::default()
        };
        let fatal = |what: &str, e: &object_store::Error| format!("{what} ({e})");
        let answer = match first.take() {
            Some(r) => Ok(Ok(r)),
            None => tokio::time::timeout(t, o.store.get_opts(&o.path, opts)).await,
        };
        let err = match answer {
            Err(_) => format!("no answer in {} s", t.as_secs()),
            Ok(Err(e @ object_store::Error::NotFound { .. })) => {
                let _ = tx.send(Err(fatal("the object is gone", &e))).await;
                return;
            }
            Ok(Err(e @ object_store::Error::Precondition { .. })) => {
                let what = "the object changed while it was read";
                let _ = tx.send(Err(fatal(what, &e))).await;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Ok(Ok(r)) => {
                let before = offset;
                let Some(err) = relay(r, &mut offset, size, t, &tx).await else {
                    return;
                };
                if offset > before {
                    failures = 0;
                }
                err
            }
        };
        failures += 1;
        if failures > o.set.retries {
            let _ = tx
                .send(Err(format!("{err} (tried {failures} times)")))
                .await;
            return;
        }
        tokio::time::sleep(Settings::backoff(failures)).await;
    }
}

/// Sends one response's body on to the reader, counting `offset`. `None`: done (the whole
/// object was sent, the reader has gone, or an error it cannot retry was sent); else the
/// reason the body broke off, to retry from `offset`.
async fn relay(
    r: object_store::GetResult,
    offset: &mut u64,
    size: u64,
    t: std::time::Duration,
    tx: &mpsc::Sender<Result<Bytes, String>>,
) -> Option<String> {
    let mut body = r.into_stream();
    loop {
        let b = match tokio::time::timeout(t, body.next()).await {
            Err(_) => return Some(format!("no bytes for {} s (stalled server)", t.as_secs())),
            Ok(None) if *offset == size => return None,
            Ok(None) => return Some(format!("the body ended after {offset} of {size} bytes")),
            Ok(Some(Err(e))) => return Some(e.to_string()),
            Ok(Some(Ok(b))) => b,
        };
        *offset += b.len() as u64;
        if *offset > size {
            let what = format!("more than the {size} bytes it had when opened (replaced?)");
            let _ = tx.send(Err(what)).await;
            return None;
        }
        if tx.send(Ok(b)).await.is_err() {
            return None;
        }
    }
}
