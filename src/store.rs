//! The embedded store: an S3-compatible HTTP server on 127.0.0.1, in process, over a
//! directory. `--local DIR` mounts it, and the test suite uses it as a real S3 endpoint.
//!
//! It is built on the s3s crate (HTTP, SigV4, XML) with a storage layer of our own
//! ([`disk::DiskStore`]) instead of s3s-fs 0.14, whose GETs stream in 4 KiB chunks, whose
//! every listing rescans the prefix subtree, and which cannot hold a key `a` beside `a/b`.

mod disk;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s::{s3_error, S3Result};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use disk::DiskStore;

/// A running embedded store. Dropping it (or [`EmbeddedStore::stop`]) closes the listener
/// and every open connection at once, as a crashed server would.
#[derive(Debug)]
pub struct EmbeddedStore {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    /// Access key the server accepts.
    pub access_key: String,
    /// Secret key the server accepts.
    pub secret_key: String,
    probe: Probe,
    server: tokio::task::JoinHandle<()>,
    /// The lifecycle pass: deletes objects past their rule, every `lifecycle_every`.
    lifecycle: tokio::task::JoinHandle<()>,
    lifecycle_every: Arc<AtomicU64>,
}

/// How often the lifecycle pass runs unless told otherwise; MinIO's scanner takes
/// minutes to come round, too.
const LIFECYCLE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Deletes what the lifecycle rules say is due, every `every` milliseconds (read each
/// tick, so that a shorter period applies at once).
fn lifecycle_pass(store: DiskStore, every: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tick = std::time::Duration::from_millis(100);
        let mut since = std::time::Instant::now();
        loop {
            tokio::time::sleep(tick).await;
            let every = std::time::Duration::from_millis(every.load(Ordering::Relaxed));
            if since.elapsed() < every {
                continue;
            }
            since = std::time::Instant::now();
            let store = store.clone();
            let deleted = tokio::task::spawn_blocking(move || store.expire()).await;
            if let Ok(n @ 1..) = deleted {
                tracing::info!("embedded store: lifecycle deleted {n} objects");
            }
        }
    })
}

/// Sees every authenticated request before it runs: counts it by operation, and fails it
/// with a 500 while injected failures remain. Tests and benchmarks read the counts to
/// prove request budgets ("one LIST per 1000 entries") at the store itself.
#[derive(Debug, Default, Clone)]
struct Probe {
    counts: Arc<Mutex<HashMap<String, u64>>>,
    failures: Arc<AtomicU32>,
    /// Bytes asked for by ranged GETs (`Range: bytes=a-b`).
    range_bytes: Arc<AtomicU64>,
    /// Milliseconds each upload body (PutObject, UploadPart) waits before it is taken:
    /// a slow store, for tests that watch an upload in flight.
    upload_delay_ms: Arc<AtomicU64>,
    /// Uploads (PutObject, CreateMultipartUpload, UploadPart) are refused with 403, as a
    /// store whose policy forbids the key would: other requests go on working.
    refuse_uploads: Arc<std::sync::atomic::AtomicBool>,
}

/// Length of a `bytes=a-b` range; other forms count as 0.
fn range_len(header: &str) -> u64 {
    let Some((a, b)) = header
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
    else {
        return 0;
    };
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) if b >= a => b - a + 1,
        _ => 0,
    }
}

#[async_trait::async_trait]
impl S3Access for Probe {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "Signature is required"));
        }
        let op = cx.s3_op().name().to_owned();
        if let Some(range) = cx.headers().get("range").and_then(|v| v.to_str().ok()) {
            self.range_bytes
                .fetch_add(range_len(range), Ordering::Relaxed);
        }
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op.clone())
            .or_default() += 1;
        if matches!(op.as_str(), "PutObject" | "UploadPart") {
            let delay = self.upload_delay_ms.load(Ordering::Relaxed);
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let upload = matches!(
            op.as_str(),
            "PutObject" | "UploadPart" | "CreateMultipartUpload"
        );
        if upload && self.refuse_uploads.load(Ordering::Relaxed) {
            return Err(s3_error!(AccessDenied, "uploads refused (test switch)"));
        }
        let injected = self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        match injected {
            Ok(_) => Err(s3_error!(InternalError, "injected failure")),
            Err(_) => Ok(()),
        }
    }
}

/// A certificate chain and its key, PEM, for serving HTTPS as `host`.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first.
    pub cert_pem: String,
    /// The leaf's private key.
    pub key_pem: String,
    /// The name clients connect to, which the certificate must carry.
    pub host: String,
}

fn tls_acceptor(tls: &TlsIdentity) -> io::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{self, ServerConfig};
    let certs = CertificateDer::pem_slice_iter(tls.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(io::Error::other)?;
    let key = PrivateKeyDer::from_pem_slice(tls.key_pem.as_bytes()).map_err(io::Error::other)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Credentials unique to this process and moment; the store only listens on loopback, so
/// they guard against mix-ups between stores more than against attackers.
fn generated_credentials() -> (String, String) {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{}-{nanos}-{n}", std::process::id());
    let hex = disk::sha_hex(&seed);
    (
        format!("RGRID{}", &hex[..15]).to_uppercase(),
        hex[16..56].to_owned(),
    )
}

impl EmbeddedStore {
    /// Serves `root` on `addr` (port 0 picks a free one), creating `bucket` if missing,
    /// with fresh credentials. Must be called inside a tokio runtime, which runs the server.
    pub async fn start(root: &Path, bucket: &str, addr: SocketAddr) -> io::Result<EmbeddedStore> {
        Self::start_with_credentials(root, bucket, addr, generated_credentials()).await
    }

    /// [`EmbeddedStore::start`] with given credentials, e.g. to restart a stopped store
    /// where its clients expect it.
    pub async fn start_with_credentials(
        root: &Path,
        bucket: &str,
        addr: SocketAddr,
        credentials: (String, String),
    ) -> io::Result<EmbeddedStore> {
        Self::serve(root, bucket, addr, credentials, None).await
    }

    /// [`EmbeddedStore::start`] over HTTPS with `tls`'s certificate: the endpoint is
    /// `https://HOST:PORT`, for clients that must verify it (a private CA).
    pub async fn start_tls(
        root: &Path,
        bucket: &str,
        addr: SocketAddr,
        tls: &TlsIdentity,
    ) -> io::Result<EmbeddedStore> {
        let acceptor = tls_acceptor(tls)?;
        let (host, acceptor) = (tls.host.clone(), Some(acceptor));
        let mut store = Self::serve(root, bucket, addr, generated_credentials(), acceptor).await?;
        let port = store
            .endpoint
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        store.endpoint = format!("https://{host}:{port}");
        Ok(store)
    }

    async fn serve(
        root: &Path,
        bucket: &str,
        addr: SocketAddr,
        (access_key, secret_key): (String, String),
        tls: Option<TlsAcceptor>,
    ) -> io::Result<EmbeddedStore> {
        let store = DiskStore::open(root)?;
        store.ensure_bucket(bucket)?;
        let lifecycle_every = Arc::new(AtomicU64::new(LIFECYCLE_EVERY.as_millis() as u64));
        let lifecycle = lifecycle_pass(store.clone(), lifecycle_every.clone());
        let mut builder = S3ServiceBuilder::new(store);
        builder.set_auth(SimpleAuth::from_single(
            access_key.clone(),
            secret_key.clone(),
        ));
        let probe = Probe::default();
        builder.set_access(probe.clone());
        let service = builder.build();
        let listener = TcpListener::bind(addr).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // Without it, small responses wait ~40 ms for delayed ACKs.
                let _ = socket.set_nodelay(true);
                let (http, service, tls) = (http.clone(), service.clone(), tls.clone());
                // The TLS handshake runs in the connection's task, not in the accept loop.
                connections.spawn(async move {
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(socket), service).await,
                        Some(tls) => match tls.accept(socket).await {
                            Ok(stream) => {
                                http.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => Ok(()),
                        },
                    };
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(EmbeddedStore {
            endpoint,
            access_key,
            secret_key,
            probe,
            server,
            lifecycle,
            lifecycle_every,
        })
    }

    /// Runs the lifecycle pass every `every` from now on.
    pub fn lifecycle_every(&self, every: std::time::Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        self.lifecycle_every.store(ms.max(1), Ordering::Relaxed);
    }

    /// Requests served so far for operation `op` (S3's name: "GetObject", "ListObjectsV2").
    pub fn requests(&self, op: &str) -> u64 {
        let counts = self.probe.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(op).copied().unwrap_or(0)
    }

    /// Bytes requested by ranged GETs so far.
    pub fn range_bytes(&self) -> u64 {
        self.probe.range_bytes.load(Ordering::Relaxed)
    }

    /// Answers the next `n` requests with 500 InternalError.
    pub fn fail_next(&self, n: u32) {
        self.probe.failures.store(n, Ordering::Relaxed);
    }

    /// Makes every upload body (PutObject, UploadPart) wait `delay` before it is taken.
    pub fn slow_uploads(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.probe.upload_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Refuses uploads with 403 AccessDenied while `on`.
    pub fn refuse_uploads(&self, on: bool) {
        self.probe.refuse_uploads.store(on, Ordering::Relaxed);
    }

    /// Stops serving: the port closes and open connections are cut.
    pub fn stop(&self) {
        self.server.abort();
        self.lifecycle.abort();
    }

    /// [`EmbeddedStore::stop`], returning once the port is closed.
    pub async fn shutdown(mut self) {
        self.stop();
        let _ = (&mut self.server).await;
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.stop();
    }
}
