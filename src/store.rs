//! The embedded store: an S3-compatible HTTP server on 127.0.0.1, in process, over a
//! directory. `--local DIR` mounts it, and the test suite uses it as a real S3 endpoint.
//!
//! It is built on the s3s crate (HTTP, SigV4, XML) with a storage layer of our own
//! ([`disk::DiskStore`]) instead of s3s-fs 0.14, whose GETs stream in 4 KiB chunks, whose
//! every listing rescans the prefix subtree, and which cannot hold a key `a` beside `a/b`.

mod disk;

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use sha2::Digest;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

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
    server: tokio::task::JoinHandle<()>,
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
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    (
        format!("RGRID{}", &hex[..15]).to_uppercase(),
        hex[16..56].to_owned(),
    )
}

impl EmbeddedStore {
    /// Serves `root` on `addr` (port 0 picks a free one), creating `bucket` if missing.
    /// Must be called inside a tokio runtime, which then runs the server.
    pub async fn start(root: &Path, bucket: &str, addr: SocketAddr) -> io::Result<EmbeddedStore> {
        let store = DiskStore::open(root)?;
        store.ensure_bucket(bucket)?;
        let (access_key, secret_key) = generated_credentials();
        let mut builder = S3ServiceBuilder::new(store);
        builder.set_auth(SimpleAuth::from_single(
            access_key.clone(),
            secret_key.clone(),
        ));
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
                let conn = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                connections.spawn(conn);
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(EmbeddedStore {
            endpoint,
            access_key,
            secret_key,
            server,
        })
    }

    /// Stops serving: the port closes and open connections are cut.
    pub fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.stop();
    }
}
