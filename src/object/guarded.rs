//! `GuardedClient`: a deadline on every request of the client it wraps, and a "store
//! unreachable" state. A request that gets no answer within the deadline, or whose body
//! sends nothing for as long, fails with [`ObjectError::Unreachable`], and so does one
//! whose connection fails. Then the store is unreachable: requests fail at once (the
//! program gets EIO in well under a second, not one timeout per request) while a probe
//! in the background asks for the bucket every [`PROBE_EVERY`]; the first answer of any
//! kind (even an error status), to the probe or to a request that was already out,
//! ends the state, and the mount goes on by itself. No program's request waits for a
//! probe.

use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::{
    ByteStream, ExpiryRule, ListPage, ObjectClient, ObjectError, ObjectHeaders, ObjectInfo,
    PartBody, Tags,
};

/// While the store is unreachable, how often the probe asks it.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The client it wraps, with deadlines and the unreachable state.
#[derive(Debug)]
pub struct GuardedClient {
    inner: Arc<dyn ObjectClient>,
    reach: Arc<Reach>,
}

/// Whether the store answers, shared with the bodies being read.
#[derive(Debug)]
struct Reach {
    deadline: Duration,
    down: Mutex<Option<Down>>,
    /// What the probe asks.
    inner: Arc<dyn ObjectClient>,
    /// A probe task is running.
    probing: AtomicBool,
}

/// Since when the store has not answered, and why.
#[derive(Debug)]
struct Down {
    since: Instant,
    cause: String,
}

impl Reach {
    /// Whether a request may go out now: only while the store answers.
    fn admit(&self, target: &str) -> Result<(), ObjectError> {
        let down = lock(&self.down);
        let Some(state) = down.as_ref() else {
            return Ok(());
        };
        Err(ObjectError::Unreachable {
            target: target.to_owned(),
            message: format!(
                "store unreachable for {}s ({}); trying again shortly",
                state.since.elapsed().as_secs(),
                state.cause
            ),
        })
    }

    /// Takes note of what a request got: no answer marks the store down, any answer up.
    fn observe<T>(self: &Arc<Self>, result: &Result<T, ObjectError>) {
        match result {
            Err(ObjectError::Unreachable { message, .. }) => self.mark_down(message),
            _ => self.mark_up(),
        }
    }

    fn mark_down(self: &Arc<Self>, cause: &str) {
        let mut down = lock(&self.down);
        if down.is_none() {
            tracing::warn!("store unreachable: {cause}; requests fail at once until it answers");
        }
        let since = down.as_ref().map_or_else(Instant::now, |d| d.since);
        *down = Some(Down {
            since,
            cause: cause.to_owned(),
        });
        drop(down);
        self.start_probe();
    }

    /// Asks for the bucket every [`PROBE_EVERY`] until the store answers, unless a
    /// probe runs already (or there is no runtime to run one: then no request waits).
    fn start_probe(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let reach = Arc::downgrade(self);
        let mut next = Instant::now() + PROBE_EVERY;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep_until(next).await;
                next += PROBE_EVERY;
                let Some(reach) = reach.upgrade() else {
                    return;
                };
                if lock(&reach.down).is_none() || reach.probe().await {
                    reach.mark_up();
                    reach.probing.store(false, Ordering::Release);
                    return;
                }
            }
        });
    }

    /// Whether the store answers the probe, with anything.
    async fn probe(&self) -> bool {
        let answer = tokio::time::timeout(self.deadline, self.inner.check_bucket()).await;
        !matches!(answer, Err(_) | Ok(Err(ObjectError::Unreachable { .. })))
    }

    fn mark_up(&self) {
        if let Some(state) = lock(&self.down).take() {
            let secs = state.since.elapsed().as_secs();
            tracing::info!("store reachable again after {secs}s");
        }
    }

    /// `request` for `target`, admitted, within the deadline, and observed.
    async fn call<T>(
        self: &Arc<Self>,
        target: &str,
        request: impl Future<Output = Result<T, ObjectError>>,
    ) -> Result<T, ObjectError> {
        self.call_sending(target, 0, request).await
    }

    /// [`Reach::call`] of a request that sends a body of `len` bytes: one more second
    /// per MiB to send it.
    async fn call_sending<T>(
        self: &Arc<Self>,
        target: &str,
        len: usize,
        request: impl Future<Output = Result<T, ObjectError>>,
    ) -> Result<T, ObjectError> {
        self.admit(target)?;
        let deadline = self.deadline + Duration::from_secs((len >> 20) as u64);
        let result = match tokio::time::timeout(deadline, request).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(target, "no answer")),
        };
        self.observe(&result);
        result
    }

    fn timed_out(&self, target: &str, what: &str) -> ObjectError {
        ObjectError::Unreachable {
            target: target.to_owned(),
            message: format!("{what} within the request timeout ({:?})", self.deadline),
        }
    }
}

impl GuardedClient {
    /// `inner` with a `deadline` on every request and on every wait for body bytes.
    pub fn new(inner: Arc<dyn ObjectClient>, deadline: Duration) -> GuardedClient {
        GuardedClient {
            inner: inner.clone(),
            reach: Arc::new(Reach {
                deadline,
                down: Mutex::new(None),
                inner,
                probing: AtomicBool::new(false),
            }),
        }
    }
}

/// `body` with the deadline between its chunks: a body that stops sending fails with
/// `Unreachable`, and marks the store so.
fn guard_body(body: ByteStream, key: String, reach: Arc<Reach>) -> ByteStream {
    let state = (body, key, reach, false);
    Box::pin(futures::stream::unfold(
        state,
        |(mut body, key, reach, over)| async move {
            if over {
                return None;
            }
            let item = match tokio::time::timeout(reach.deadline, body.next()).await {
                Ok(None) => return None,
                Ok(Some(item)) => item,
                Err(_) => Err(reach.timed_out(&key, "no body bytes")),
            };
            if let Err(ObjectError::Unreachable { message, .. }) = &item {
                reach.mark_down(message);
            }
            let over = item.is_err();
            Some((item, (body, key, reach, over)))
        },
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl ObjectClient for GuardedClient {
    async fn check_bucket(&self) -> Result<(), ObjectError> {
        self.reach.call("bucket", self.inner.check_bucket()).await
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        self.reach.call(key, self.inner.head(key)).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max_keys: Option<u32>,
    ) -> Result<ListPage, ObjectError> {
        let list = self.inner.list_page(prefix, token, max_keys);
        self.reach.call(prefix, list).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<ByteStream, ObjectError> {
        let get = self.inner.get_range(key, range, if_match);
        let body = self.reach.call(key, get).await?;
        Ok(guard_body(body, key.to_owned(), self.reach.clone()))
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        headers: ObjectHeaders,
    ) -> Result<Option<String>, ObjectError> {
        let len = body.len();
        let put = self.inner.put(key, body, headers);
        self.reach.call_sending(key, len, put).await
    }

    async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.reach.call(key, self.inner.delete(key)).await
    }

    async fn create_multipart(
        &self,
        key: &str,
        headers: ObjectHeaders,
    ) -> Result<String, ObjectError> {
        let create = self.inner.create_multipart(key, headers);
        self.reach.call(key, create).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: PartBody,
    ) -> Result<String, ObjectError> {
        let len = body.len() as usize;
        let part = self.inner.upload_part(key, upload_id, number, body);
        self.reach.call_sending(key, len, part).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<Option<String>, ObjectError> {
        let complete = self.inner.complete_multipart(key, upload_id, parts);
        self.reach.call(key, complete).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), ObjectError> {
        let abort = self.inner.abort_multipart(key, upload_id);
        self.reach.call(key, abort).await
    }

    async fn expiry_rules(&self) -> Result<Vec<ExpiryRule>, ObjectError> {
        self.reach
            .call("lifecycle", self.inner.expiry_rules())
            .await
    }

    async fn tags(&self, key: &str) -> Result<Tags, ObjectError> {
        self.reach.call(key, self.inner.tags(key)).await
    }

    async fn set_tags(&self, key: &str, tags: Tags) -> Result<(), ObjectError> {
        self.reach.call(key, self.inner.set_tags(key, tags)).await
    }

    async fn update_expiry_rules(
        &self,
        replaced: &(dyn for<'k> Fn(&'k str) -> bool + Send + Sync),
        rules: Vec<ExpiryRule>,
    ) -> Result<(), ObjectError> {
        let put = self.inner.update_expiry_rules(replaced, rules);
        self.reach.call("lifecycle", put).await
    }

    async fn presign_get(
        &self,
        key: &str,
        ttl: Duration,
        content_encoding: Option<&str>,
    ) -> Result<String, ObjectError> {
        // Signed here: no request, nothing to wait for.
        self.inner.presign_get(key, ttl, content_encoding).await
    }

    async fn restore(&self, key: &str, days: u32) -> Result<(), ObjectError> {
        self.reach.call(key, self.inner.restore(key, days)).await
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        headers: Option<ObjectHeaders>,
        if_match: Option<&str>,
    ) -> Result<Option<String>, ObjectError> {
        let copy = self.inner.copy(from, to, headers, if_match);
        self.reach.call(to, copy).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{MemoryClient, Operation};

    /// The probe interval passes, and the probe task runs.
    async fn probe_runs() {
        tokio::time::advance(PROBE_EVERY).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn guarded(memory: &MemoryClient, deadline: Duration) -> GuardedClient {
        GuardedClient::new(Arc::new(memory.clone()), deadline)
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_store_fails_fast_until_it_answers_again() {
        let memory = MemoryClient::new();
        memory.insert("a", "bytes", ObjectHeaders::default());
        let client = guarded(&memory, Duration::from_secs(5));
        memory.slow_uploads(Duration::from_secs(3600));
        let started = tokio::time::Instant::now();
        let put = client.put("b", Bytes::from_static(b"x"), ObjectHeaders::default());
        assert!(matches!(put.await, Err(ObjectError::Unreachable { .. })));
        assert_eq!(started.elapsed(), Duration::from_secs(5), "the deadline");
        // Unreachable now: no request goes out, the answer is at once.
        let heads = memory.count(Operation::Head);
        let at = tokio::time::Instant::now();
        assert!(matches!(
            client.head("a").await,
            Err(ObjectError::Unreachable { .. })
        ));
        assert_eq!(at.elapsed(), Duration::ZERO);
        assert_eq!(memory.count(Operation::Head), heads);
        // The probe's answer ends the state.
        probe_runs().await;
        assert!(client.head("a").await.is_ok());
        assert!(client.head("a").await.is_ok());
        assert_eq!(memory.count(Operation::Head), heads + 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_is_an_error_still_ends_the_state() {
        let memory = MemoryClient::new();
        let client = guarded(&memory, Duration::from_secs(1));
        memory.slow_uploads(Duration::from_secs(3600));
        let put = client
            .put("b", Bytes::new(), ObjectHeaders::default())
            .await;
        assert!(matches!(put, Err(ObjectError::Unreachable { .. })));
        probe_runs().await;
        // The store answers "no such key": it is reachable.
        assert!(matches!(
            client.head("nope").await,
            Err(ObjectError::NotFound { .. })
        ));
        assert!(matches!(
            client.head("nope").await,
            Err(ObjectError::NotFound { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_sending_fails_and_marks_the_store() {
        let stalled: ByteStream = Box::pin(
            futures::stream::iter([Ok(Bytes::from_static(b"half"))])
                .chain(futures::stream::pending()),
        );
        let reach = Arc::new(Reach {
            deadline: Duration::from_secs(2),
            down: Mutex::new(None),
            inner: Arc::new(MemoryClient::new()),
            probing: AtomicBool::new(false),
        });
        let mut body = guard_body(stalled, "k".into(), reach.clone());
        assert_eq!(
            body.next().await.unwrap().unwrap(),
            Bytes::from_static(b"half")
        );
        assert!(matches!(
            body.next().await,
            Some(Err(ObjectError::Unreachable { .. }))
        ));
        assert!(body.next().await.is_none(), "over after the failure");
        assert!(reach.admit("k").is_err(), "unreachable now");
    }
}
