//! The read engine: what one open file reads from the store, and when.
//!
//! A [`ReadAhead`] serves one handle of one object version. It tells two access patterns
//! apart by the offsets it is asked for:
//!
//! - Sequential (a read starts where the last ended, or lands inside the window already
//!   fetched, which covers the kernel's concurrent read-ahead requests arriving out of
//!   order): reads are served from a window of parts fetched ahead in parallel, each one
//!   ranged GET. The window starts at `initial_window` (so `head` of a large file costs
//!   one small GET) and doubles with every part consumed up to `max_window`; parts grow
//!   with it up to `part_size`. The part just consumed is kept, so a small backward seek
//!   costs nothing.
//! - Random (anything else): the read is rounded out to aligned blocks sized to the
//!   access, 64 KiB to 1 MiB, fetched with one GET per miss into a [`BlockCache`] shared
//!   by all handles of the version. A 4 KiB reader downloads 16 times what it asks for at
//!   most, where a read-ahead window would download hundreds.
//!
//! Memory: every prefetched part holds permits of one global [`ReadBudget`]; when the
//! budget is spent, windows stop growing instead of the daemon. The part a reader is
//! waiting for is always fetched, so a reader never deadlocks on others' prefetch.
//!
//! Every GET carries If-Match with the ETag the file was opened at: a replaced object
//! fails the read (EIO) instead of mixing versions. A body cut mid-way (reset, timeout)
//! is fetched again, a few times with backoff and jitter, before the read fails.

mod block_cache;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

pub use block_cache::{BlockCache, BlockId};

use crate::object::{ByteStream, ObjectClient, ObjectError, ObjectId};

/// Read-engine settings.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    /// First window of a sequential reader: Linux's 1 MiB read plus the extra 128 KiB its
    /// read-ahead asks for right after, so that `head` costs one GET.
    pub initial_window: u64,
    /// Largest window ahead of a sequential reader.
    pub max_window: u64,
    /// Largest single GET of a sequential window.
    pub part_size: u64,
    /// The largest read one FUSE request carries: sequential parts end on this grid, so
    /// a request is a slice of one part rather than a copy joining two.
    pub request_size: u64,
    /// How far ahead of a reader the kernel's read-ahead sends requests (the mount's
    /// read_ahead_kb). Those requests run concurrently and arrive in any order within
    /// that distance.
    pub kernel_readahead: u64,
    /// Smallest block of a random read.
    pub min_block: u64,
    /// Largest block of a random read.
    pub max_block: u64,
    /// All read buffers together (windows and block cache).
    pub max_memory: u64,
    /// A body that sends nothing for this long is abandoned.
    pub stall_timeout: Duration,
    /// Fetches of one part or block after its body broke, first included.
    pub attempts: u32,
    /// Whether plain objects without an `rgrid-sha256` are checked against the MD5 their
    /// ETag is, where it is one (`--no-etag-check` turns it off).
    pub etag_md5: bool,
    /// `--verify-first`: checked content is fetched whole and checked before its first
    /// byte is served.
    pub verify_first: bool,
}

impl Default for ReadConfig {
    fn default() -> Self {
        ReadConfig {
            initial_window: (1 << 20) + (128 << 10),
            max_window: 64 << 20,
            part_size: 8 << 20,
            request_size: 1 << 20,
            kernel_readahead: 4 << 20,
            min_block: 64 << 10,
            max_block: 1 << 20,
            max_memory: 128 << 20,
            stall_timeout: Duration::from_secs(20),
            attempts: 3,
            etag_md5: true,
            verify_first: false,
        }
    }
}

/// What can go wrong reading.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The store closed the body before the promised length.
    #[error("{key}: body ended {missing} bytes early")]
    Truncated {
        /// Object key.
        key: String,
        /// Bytes still expected.
        missing: u64,
    },
    /// No byte arrived within the stall timeout.
    #[error("{key}: no data for {timeout:?}")]
    Stalled {
        /// Object key.
        key: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Object(#[from] ObjectError),
    /// The body broke off mid-way (connection reset).
    #[error("body interrupted: {0}")]
    Interrupted(ObjectError),
    /// A fetch task died (runtime shutting down).
    #[error("read task failed: {0}")]
    Task(String),
}

impl ReadError {
    /// Broken bodies are fetched again; a failed request is not, because the SDK has
    /// already retried it (a dead store must give EIO in seconds, not minutes).
    fn is_retryable(&self) -> bool {
        self.retry_cause().is_some()
    }

    /// Why a body is fetched again, for the retry metric; `None` when it is not.
    fn retry_cause(&self) -> Option<&'static str> {
        match self {
            ReadError::Truncated { .. } => Some("truncated"),
            ReadError::Stalled { .. } => Some("stalled"),
            ReadError::Interrupted(_) => Some("interrupted"),
            ReadError::Object(_) | ReadError::Task(_) => None,
        }
    }
}

/// The one memory budget for read buffers of a mount, in bytes.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    permits: Arc<Semaphore>,
    total: u64,
}

impl ReadBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> Self {
        let permits = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        ReadBudget {
            permits: Arc::new(Semaphore::new(permits)),
            total: permits as u64,
        }
    }

    /// Bytes in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn try_take(&self, bytes: u64) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes).ok()?;
        self.permits.clone().try_acquire_many_owned(n).ok()
    }

    /// Bytes not held by any buffer now.
    pub fn available(&self) -> u64 {
        self.permits.available_permits() as u64
    }
}

/// What all handles of a mount share: the client, settings, budget and block cache.
#[derive(Debug)]
pub struct ReadEngine {
    client: Arc<dyn ObjectClient>,
    config: ReadConfig,
    budget: ReadBudget,
    cache: BlockCache,
}

impl ReadEngine {
    /// An engine over `client`; a quarter of the memory budget goes to the block cache.
    pub fn new(client: Arc<dyn ObjectClient>, config: ReadConfig) -> Arc<ReadEngine> {
        let cache = BlockCache::new((config.max_memory / 4) as usize);
        let budget = ReadBudget::new(config.max_memory - config.max_memory / 4);
        Arc::new(ReadEngine {
            client,
            config,
            budget,
            cache,
        })
    }

    /// Its settings.
    pub fn config(&self) -> &ReadConfig {
        &self.config
    }

    /// The budget the windows draw from.
    pub fn budget(&self) -> &ReadBudget {
        &self.budget
    }

    /// Bytes the block cache holds now, and may hold.
    pub fn cache_use(&self) -> (u64, u64) {
        let (used, capacity) = self.cache.usage();
        (used as u64, capacity as u64)
    }

    /// `range` of version `id` in one GET, whole: small bodies that no handle streams
    /// (a gzip trailer, a link target).
    pub async fn read_small(&self, id: &ObjectId, range: Range<u64>) -> Result<Vec<u8>, ReadError> {
        Ok(self.client.read_range(id, range).await?)
    }

    /// A reader of object version `id`, `size` bytes long.
    pub fn open(self: &Arc<Self>, id: ObjectId, size: u64) -> ReadAhead {
        let version = Arc::new(id);
        ReadAhead {
            engine: self.clone(),
            version,
            size,
            window: Window::default(),
            last_end: None,
            streak: 0,
        }
    }

    /// One ranged GET read to its end, with retries for broken bodies.
    async fn fetch(&self, version: &ObjectId, range: Range<u64>) -> Result<Bytes, ReadError> {
        let mut attempt = 1;
        loop {
            match self.fetch_once(version, range.clone()).await {
                Err(e) if e.is_retryable() && attempt < self.config.attempts => {
                    tracing::debug!(key = %version.key, attempt, "refetching {range:?}: {e}");
                    crate::metrics::retry(e.retry_cause().unwrap_or("other"));
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn fetch_once(
        &self,
        ObjectId { key, etag }: &ObjectId,
        range: Range<u64>,
    ) -> Result<Bytes, ReadError> {
        let if_match = etag.as_deref();
        let len = (range.end - range.start) as usize;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let mut body = self.client.get_range(key, range.clone(), if_match).await?;
        let first = self.next_chunk(key, &mut body, len).await?;
        if first.len() >= len {
            return Ok(first.slice(..len)); // the whole range in one chunk: no copy
        }
        let mut out = BytesMut::with_capacity(len);
        out.extend_from_slice(&first);
        while out.len() < len {
            out.extend_from_slice(&self.next_chunk(key, &mut body, len - out.len()).await?);
        }
        out.truncate(len);
        Ok(out.freeze())
    }

    async fn next_chunk(
        &self,
        key: &str,
        body: &mut ByteStream,
        missing: usize,
    ) -> Result<Bytes, ReadError> {
        let timeout = self.config.stall_timeout;
        match tokio::time::timeout(timeout, body.next()).await {
            Err(_) => Err(ReadError::Stalled {
                key: key.to_owned(),
                timeout,
            }),
            Ok(None) => Err(ReadError::Truncated {
                key: key.to_owned(),
                missing: missing as u64,
            }),
            Ok(Some(chunk)) => chunk.map_err(ReadError::Interrupted),
        }
    }
}

/// 100 ms, 200 ms, 400 ms... with up to 50% jitter, so that readers of a store that is
/// restarting do not come back in lockstep.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.saturating_pow(attempt - 1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// One part of a sequential window: fetching, or fetched.
#[derive(Debug)]
struct Part {
    range: Range<u64>,
    state: PartState,
    /// Budget held while the part is in memory; `None` for a part fetched over budget.
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
enum PartState {
    Fetching(JoinHandle<Result<Bytes, ReadError>>),
    Ready(Bytes),
}

impl Drop for Part {
    fn drop(&mut self) {
        if let PartState::Fetching(task) = &self.state {
            task.abort();
        }
    }
}

/// The parts ahead of a sequential reader, contiguous, in offset order.
#[derive(Debug, Default)]
struct Window {
    parts: VecDeque<Part>,
    /// How far ahead of the reader to fetch; 0 when no window is open.
    size: u64,
}

impl Window {
    fn range(&self) -> Option<Range<u64>> {
        Some(self.parts.front()?.range.start..self.parts.back()?.range.end)
    }

    /// Whether `offset` is in the window or within one window size (or the kernel's
    /// read-ahead) past it: the kernel's concurrent read-ahead requests arrive out of
    /// order, and must not reset the stream.
    fn reaches(&self, offset: u64, kernel_readahead: u64) -> bool {
        let ahead = self.size.max(kernel_readahead);
        self.range()
            .is_some_and(|r| r.start <= offset && offset < r.end + ahead)
    }
}

/// Reads of one open file. Not shared between handles: each has its own window.
pub struct ReadAhead {
    engine: Arc<ReadEngine>,
    version: Arc<ObjectId>,
    size: u64,
    window: Window,
    /// Where the previous read ended.
    last_end: Option<u64>,
    /// Reads in a row that each started where the previous one ended.
    streak: u32,
}

/// Reads in a row, each where the last ended, that make a reader sequential. Two random
/// reads that happen to touch are not a stream, and a window would over-fetch for them.
const SEQUENTIAL_STREAK: u32 = 2;

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("key", &self.version.key)
            .field("last_end", &self.last_end)
            .finish()
    }
}

impl ReadAhead {
    /// The key of the object read.
    pub fn key(&self) -> &str {
        &self.version.key
    }

    /// The object version read, and its size.
    pub fn version(&self) -> (&ObjectId, u64) {
        (&self.version, self.size)
    }

    /// The engine it reads through.
    pub fn engine(&self) -> &Arc<ReadEngine> {
        &self.engine
    }

    /// Up to `len` bytes at `offset`; fewer only at the end of the file.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Bytes, ReadError> {
        let end = self.size.min(offset.saturating_add(u64::from(len)));
        if offset >= end {
            return Ok(Bytes::new());
        }
        self.streak = match self.last_end {
            Some(last) if last == offset => self.streak + 1,
            None if offset == 0 => SEQUENTIAL_STREAK, // `cat`, `cp`: a window right away
            _ => 0,
        };
        self.last_end = Some(end);
        let kernel_readahead = self.engine.config.kernel_readahead;
        let sequential =
            self.streak >= SEQUENTIAL_STREAK || self.window.reaches(offset, kernel_readahead);
        if sequential {
            self.read_window(offset..end).await
        } else {
            // A read a little ahead of the window is the kernel's read-ahead overtaking
            // itself: serve it from blocks, but keep the stream. Anything else ends it.
            let max_window = self.engine.config.max_window;
            if !self
                .window
                .range()
                .is_some_and(|r| r.start <= offset && offset < r.end + max_window)
            {
                self.window = Window::default();
            }
            self.read_blocks(offset..end).await
        }
    }

    async fn read_window(&mut self, want: Range<u64>) -> Result<Bytes, ReadError> {
        let kernel_readahead = self.engine.config.kernel_readahead;
        if !self.window.reaches(want.start, kernel_readahead) {
            self.window = Window {
                parts: VecDeque::new(),
                size: self.engine.config.initial_window,
            };
        }
        // Keep the parts the kernel's read-ahead requests still in flight may want (they
        // arrive out of order), and at least the part before the one being read: small
        // backward seeks stay free.
        let behind = want.start.saturating_sub(kernel_readahead);
        while self.window.parts.len() > 1 && self.window.parts[1].range.end <= behind {
            self.window.parts.pop_front();
        }
        self.schedule(want.clone());
        let result = copy_out(&mut self.window.parts, want).await;
        match result {
            Ok(_) => self.grow(),
            // A failed part is never retried from here; the next read starts afresh.
            Err(_) => self.window = Window::default(),
        }
        result
    }

    /// Doubles the window, up to its maximum.
    fn grow(&mut self) {
        let max = self.engine.config.max_window;
        self.window.size = (self.window.size * 2).min(max);
    }

    /// Starts fetches so the window reaches `want.end` (always) and `window.size` past
    /// `want.start` (while the budget allows).
    fn schedule(&mut self, want: Range<u64>) {
        let config = &self.engine.config;
        let mut next = self.window.range().map_or(want.start, |r| r.end);
        let target = self
            .size
            .min(want.start + self.window.size.max(want.end - want.start));
        while next < target {
            let mut len = config.part_size.min(self.window.size);
            let grid = config.request_size;
            if len >= 2 * grid {
                // Parts end on the grid the kernel's requests are cut on: a request
                // inside one part is a slice, one across two a copy. (Not the window's
                // first, small part: `head` is one GET of it.)
                len = (next + len) / grid * grid - next;
            }
            len = len.min(self.size - next);
            let permit = self.engine.budget.try_take(len);
            if permit.is_none() {
                if next >= want.end {
                    break; // over budget: no prefetch
                }
                // Over budget, fetch just what the reader waits for: the overshoot stays
                // at one request per reader instead of one part.
                len = len.min(want.end - next);
            }
            let range = next..next + len;
            let engine = self.engine.clone();
            let version = self.version.clone();
            let task = tokio::spawn({
                let range = range.clone();
                async move { engine.fetch(&version, range).await }
            });
            self.window.parts.push_back(Part {
                range,
                state: PartState::Fetching(task),
                _permit: permit,
            });
            next += len;
        }
    }

    /// Serves a random read from aligned blocks: cached ones, and one GET for the span
    /// from the first to the last missing block.
    async fn read_blocks(&mut self, want: Range<u64>) -> Result<Bytes, ReadError> {
        let config = &self.engine.config;
        let block = (want.end - want.start)
            .next_power_of_two()
            .clamp(config.min_block, config.max_block);
        let block_range = |start: u64| start..(start + block).min(self.size);
        let starts: Vec<u64> = (want.start / block * block..want.end)
            .step_by(block as usize)
            .collect();
        let mut blocks: Vec<Option<Bytes>> = starts
            .iter()
            .map(|&start| {
                let data = self.engine.cache.get(&BlockId {
                    version: self.version.clone(),
                    start,
                })?;
                (data.len() as u64 == block_range(start).end - start).then_some(data)
            })
            .collect();
        let first_miss = blocks.iter().position(Option::is_none);
        let last_miss = blocks.iter().rposition(Option::is_none);
        if let (Some(first), Some(last)) = (first_miss, last_miss) {
            let span = starts[first]..block_range(starts[last]).end;
            let data = self.engine.fetch(&self.version, span.clone()).await?;
            for i in first..=last {
                let range = block_range(starts[i]);
                let piece = data
                    .slice((range.start - span.start) as usize..(range.end - span.start) as usize);
                self.engine.cache.insert(
                    BlockId {
                        version: self.version.clone(),
                        start: range.start,
                    },
                    piece.clone(),
                );
                blocks[i] = Some(piece);
            }
        }
        let mut out = BytesMut::with_capacity((want.end - want.start) as usize);
        for (start, data) in starts.into_iter().zip(blocks.into_iter().flatten()) {
            let from = want.start.saturating_sub(start) as usize;
            let to = ((want.end - start) as usize).min(data.len());
            out.extend_from_slice(&data[from..to]);
        }
        Ok(out.freeze())
    }
}

/// The bytes of `want` from the window's parts, waiting for fetches as needed.
async fn copy_out(parts: &mut VecDeque<Part>, want: Range<u64>) -> Result<Bytes, ReadError> {
    let mut out = BytesMut::new();
    let mut pos = want.start;
    for part in parts.iter_mut().skip_while(|p| p.range.end <= want.start) {
        if pos >= want.end {
            break;
        }
        let data = ready(part).await?;
        let from = (pos - part.range.start) as usize;
        let to = (want.end.min(part.range.end) - part.range.start) as usize;
        if out.is_empty() {
            if want.end <= part.range.end {
                return Ok(data.slice(from..to)); // inside one part: a slice, no copy
            }
            out.reserve((want.end - want.start) as usize);
        }
        out.extend_from_slice(&data[from..to]);
        pos = part.range.start + to as u64;
    }
    Ok(out.freeze())
}

/// The part's bytes, waiting for its fetch if needed.
async fn ready(part: &mut Part) -> Result<Bytes, ReadError> {
    let data = match &mut part.state {
        PartState::Ready(data) => return Ok(data.clone()),
        PartState::Fetching(task) => task.await.map_err(|e| ReadError::Task(e.to_string()))??,
    };
    part.state = PartState::Ready(data.clone());
    Ok(data)
}

#[cfg(test)]
pub(crate) mod tests;
