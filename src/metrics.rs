//! Prometheus metrics (`--metrics-addr`): every name and label of the mount's metrics in
//! one place. Layers record through these functions, over the `metrics` facade (the one
//! mountpoint-s3 uses): until [`serve`] installs the exporter they cost a relaxed load
//! and do nothing. `metrics-exporter-prometheus` serves the text exposition over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;

/// Starts serving `/metrics` on `addr`, from the runtime the caller is in.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ])
        .map_err(|e| anyhow::anyhow!("metrics buckets: {e}"))?
        .install()
        .map_err(|e| anyhow::anyhow!("serving metrics on {addr}: {e}"))
}

/// A request to the store: its S3 operation, outcome (`ok` or the error's class) and
/// duration.
pub fn store_request(operation: &'static str, outcome: &'static str, took: Duration) {
    counter!("rgrid_store_requests_total", "operation" => operation, "outcome" => outcome)
        .increment(1);
    histogram!("rgrid_store_request_seconds", "operation" => operation).record(took);
}

/// Body bytes received from the store.
pub fn bytes_from_store(bytes: usize) {
    counter!("rgrid_store_bytes_total", "direction" => "from_store").increment(bytes as u64);
}

/// Body bytes sent to the store.
pub fn bytes_to_store(bytes: usize) {
    counter!("rgrid_store_bytes_total", "direction" => "to_store").increment(bytes as u64);
}

/// A FUSE operation served, and how long it took.
pub fn fuse_operation(operation: &'static str, took: Duration) {
    histogram!("rgrid_fuse_operation_seconds", "operation" => operation).record(took);
}

/// A lookup in the block cache of random reads.
pub fn read_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!("rgrid_read_cache_total", "result" => result).increment(1);
}

/// An upload attempt ended.
pub fn upload_finished(ok: bool) {
    let outcome = if ok { "committed" } else { "failed" };
    counter!("rgrid_uploads_total", "outcome" => outcome).increment(1);
}

/// Uploads not yet in the store (waiting, in flight, or failed and journaled).
pub fn uploads_pending(n: usize) {
    gauge!("rgrid_uploads_pending").set(n as f64);
}

/// Something was tried again: a journaled upload (`upload`), or a read whose body broke
/// (`truncated`, `stalled`, `interrupted`).
pub fn retry(cause: &'static str) {
    counter!("rgrid_retries_total", "cause" => cause).increment(1);
}

/// An open of a stored file, served from the object cache or not.
pub fn object_cache(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!("rgrid_object_cache_total", "result" => result).increment(1);
}

/// Bytes read from object cache entries.
pub fn object_cache_bytes(bytes: usize) {
    counter!("rgrid_object_cache_bytes_total").increment(bytes as u64);
}

/// An object cache entry evicted to stay within the bound.
pub fn object_cache_eviction() {
    counter!("rgrid_object_cache_evictions_total").increment(1);
}
