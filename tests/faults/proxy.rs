//! A fault-injecting HTTP proxy between a mount and a real S3 store (the embedded one,
//! or moto). Each request is classified by the S3 operation it is, counted, and either
//! forwarded untouched or met by the first matching [`Rule`]: an error status, a
//! connection reset after some body bytes, a stall, a pause mid-body, a body shorter
//! than its Content-Length, a flipped byte, or another version's bytes.
//!
//! Requests go to the store on a fresh connection each, headers as received: the
//! signature covers the Host header, which stays the proxy's, and the store checks it
//! as it came.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::common::Endpoint;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The S3 operation a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Get,
    Head,
    List,
    ListUploads,
    Put,
    CreateUpload,
    UploadPart,
    Complete,
    AbortUpload,
    Copy,
    Delete,
    DeleteMany,
    /// Bucket calls, tagging, lifecycle: everything else.
    Other,
}

impl Op {
    /// The operation of a path-style request (`/bucket/key?query`).
    fn of<B>(request: &Request<B>) -> Op {
        let query = request.uri().query().unwrap_or("");
        let has = |name: &str| {
            query
                .split('&')
                .any(|pair| pair.split('=').next() == Some(name))
        };
        let path = request.uri().path().trim_start_matches('/');
        let has_key = path.split_once('/').is_some_and(|(_, key)| !key.is_empty());
        let copy = request.headers().contains_key("x-amz-copy-source");
        match *request.method() {
            _ if has("tagging") || has("lifecycle") => Op::Other,
            Method::GET if has("uploads") => Op::ListUploads,
            Method::GET if !has_key => Op::List,
            Method::GET => Op::Get,
            Method::HEAD if has_key => Op::Head,
            Method::PUT if has("partNumber") => Op::UploadPart,
            Method::PUT if copy && has_key => Op::Copy,
            Method::PUT if has_key => Op::Put,
            Method::POST if has("uploads") => Op::CreateUpload,
            Method::POST if has("uploadId") => Op::Complete,
            Method::POST if has("delete") => Op::DeleteMany,
            Method::DELETE if has("uploadId") => Op::AbortUpload,
            Method::DELETE if has_key => Op::Delete,
            _ => Op::Other,
        }
    }
}

/// What the proxy does instead of forwarding, or to what it forwards.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An S3 error answer, the request body read first as a store does.
    Status {
        status: u16,
        code: &'static str,
        retry_after: Option<u32>,
    },
    /// Forwards, then cuts the connection after this many response body bytes.
    ResetAfter(u64),
    /// Accepts the request and never answers.
    Stall,
    /// Forwards, and pauses the response body this long after this many bytes.
    PauseAfter { bytes: u64, pause: Duration },
    /// Forwards, and pauses the response body this long where it reaches this offset
    /// of the object (at once for a range starting past it): a store that cannot go
    /// past that point, however the reader asks again.
    PauseAtObjectOffset { offset: u64, pause: Duration },
    /// Forwards, and ends the response body after this many bytes, its
    /// Content-Length unchanged.
    ShortBody(u64),
    /// Forwards, with the response body's byte at this offset flipped.
    FlipByte(u64),
    /// Answers a GET with these bytes under this ETag, whatever its If-Match asked:
    /// a store serving another version.
    Substitute { body: Bytes, etag: String },
    /// Forwards, with every `from` in the answer's body replaced by `to`: a store that
    /// writes what another would not (a listing's keys).
    Rewrite { from: String, to: String },
}

impl Fault {
    pub fn status(status: u16) -> Fault {
        let code = match status {
            403 => "AccessDenied",
            404 => "NoSuchKey",
            412 => "PreconditionFailed",
            503 => "SlowDown",
            _ => "InternalError",
        };
        Fault::Status {
            status,
            code,
            retry_after: None,
        }
    }

    /// 503 SlowDown, with a Retry-After of `seconds` if given.
    pub fn slow_down(retry_after: Option<u32>) -> Fault {
        Fault::Status {
            status: 503,
            code: "SlowDown",
            retry_after,
        }
    }
}

/// Which of the matching requests a rule meets.
#[derive(Clone, Debug)]
pub enum When {
    /// The next `n`.
    Next(u32),
    /// Every one.
    Always,
    /// Each with this probability (a seeded generator: runs repeat).
    Probability(f64),
    /// Every one from now until `Duration` from now.
    For(Duration),
}

/// A fault for requests of one operation (or of any, `op: None`).
#[derive(Clone, Debug)]
struct Rule {
    op: Option<Op>,
    fault: Fault,
    when: When,
    until: Option<Instant>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    seen: HashMap<Op, u64>,
    faulted: HashMap<Op, u64>,
    random: u64,
}

impl State {
    /// The fault for a request of `op`, if a rule meets it.
    fn fault_for(&mut self, op: Op) -> Option<Fault> {
        *self.seen.entry(op).or_default() += 1;
        let now = Instant::now();
        self.rules.retain(|r| r.until.is_none_or(|t| now < t));
        let draw = self.next_random();
        let rule = self
            .rules
            .iter_mut()
            .find(|r| r.op.is_none_or(|o| o == op))?;
        let fault = rule.fault.clone();
        let met = match &mut rule.when {
            When::Next(n) => {
                *n -= 1;
                true
            }
            When::Always | When::For(_) => true,
            When::Probability(p) => draw < *p,
        };
        self.rules.retain(|r| !matches!(r.when, When::Next(0)));
        if met {
            *self.faulted.entry(op).or_default() += 1;
        }
        met.then_some(fault)
    }

    /// xorshift, in [0, 1).
    fn next_random(&mut self) -> f64 {
        let mut x = self.random | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The proxy, on its own runtime; it stops on drop.
pub struct FaultProxy {
    /// Serves the proxy; dropped, it stops it.
    _runtime: tokio::runtime::Runtime,
    pub endpoint: String,
    keys: (String, String),
    state: Arc<Mutex<State>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `store`.
    pub fn start(store: &dyn Endpoint) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let upstream: SocketAddr = store
            .url()
            .trim_start_matches("http://")
            .parse()
            .expect("an http://ip:port store");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            random: 0x9e37_79b9_7f4a_7c15,
            ..State::default()
        }));
        runtime.spawn(accept(listener, upstream, state.clone()));
        let (access, secret) = store.keys();
        FaultProxy {
            _runtime: runtime,
            endpoint,
            keys: (access.to_owned(), secret.to_owned()),
            state,
        }
    }

    /// Meets requests of `op` (all, for `None`) with `fault`, `when`. Earlier rules
    /// come first.
    pub fn inject(&self, op: impl Into<Option<Op>>, fault: Fault, when: When) {
        let until = match when {
            When::For(d) => Some(Instant::now() + d),
            _ => None,
        };
        self.state.lock().unwrap().rules.push(Rule {
            op: op.into(),
            fault,
            when,
            until,
        });
    }

    /// Removes every rule: requests are forwarded untouched.
    pub fn heal(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Requests of `op` received so far, faulted or not.
    pub fn count(&self, op: Op) -> u64 {
        let state = self.state.lock().unwrap();
        state.seen.get(&op).copied().unwrap_or(0)
    }

    /// Requests of every operation received so far.
    pub fn total(&self) -> u64 {
        self.state.lock().unwrap().seen.values().sum()
    }

    /// Requests that met a fault so far.
    pub fn faulted(&self) -> u64 {
        self.state.lock().unwrap().faulted.values().sum()
    }

    /// Forgets the counts.
    pub fn reset_counts(&self) {
        let mut state = self.state.lock().unwrap();
        state.seen.clear();
        state.faulted.clear();
    }
}

impl Endpoint for FaultProxy {
    fn url(&self) -> &str {
        &self.endpoint
    }
    fn keys(&self) -> (&str, &str) {
        (&self.keys.0, &self.keys.1)
    }
}

async fn accept(listener: tokio::net::TcpListener, upstream: SocketAddr, state: Arc<Mutex<State>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(request, upstream, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    request: Request<Incoming>,
    upstream: SocketAddr,
    state: &Mutex<State>,
) -> Response<Body> {
    let op = Op::of(&request);
    let fault = state.lock().unwrap().fault_for(op);
    match fault {
        None => forward(request, upstream).await,
        Some(Fault::Status {
            status,
            code,
            retry_after,
        }) => {
            let _ = request.into_body().collect().await;
            error_answer(status, code, retry_after)
        }
        Some(Fault::Stall) => std::future::pending::<Response<Body>>().await,
        Some(Fault::Substitute { body, etag }) => substitute(&request, body, &etag),
        Some(Fault::Rewrite { from, to }) => {
            let (mut parts, body) = forward(request, upstream).await.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body).replace(&from, &to);
            parts.headers.insert("content-length", text.len().into());
            Response::from_parts(parts, full(text))
        }
        Some(body_fault) => {
            let response = forward(request, upstream).await;
            let (parts, body) = response.into_parts();
            let frames = body.into_data_stream();
            let body_fault = in_body(body_fault, &parts.headers);
            Response::from_parts(parts, boxed(spoil(frames, body_fault)))
        }
    }
}

/// `fault` in offsets of this response's body, which starts where its Content-Range
/// says (the object's start without one).
fn in_body(fault: Fault, headers: &hyper::HeaderMap) -> Fault {
    let Fault::PauseAtObjectOffset { offset, pause } = fault else {
        return fault;
    };
    let start = headers
        .get("content-range")
        .and_then(|range| range.to_str().ok())
        .and_then(|range| range.strip_prefix("bytes "))
        .and_then(|range| range.split('-').next())
        .and_then(|first| first.parse::<u64>().ok())
        .unwrap_or(0);
    Fault::PauseAfter {
        bytes: offset.saturating_sub(start),
        pause,
    }
}

/// The request sent on to the store, its answer streamed back.
async fn forward(request: Request<Incoming>, upstream: SocketAddr) -> Response<Body> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(upstream).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await?;
        Ok::<_, BoxError>(response.map(|body| body.map_err(BoxError::from).boxed_unsync()))
    };
    match attempt.await {
        Ok(response) => response,
        // The store is down: as a store that is down looks, a cut connection.
        Err(e) => Response::new(boxed(futures::stream::once(async move { Err(e) }))),
    }
}

/// Where a spoiled body is.
enum Spoiling {
    Flowing(u64),
    /// The cut comes next.
    Cut,
    Ended,
}

/// A response body stream with `fault` applied to it.
fn spoil(
    body: impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static,
    fault: Fault,
) -> impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static {
    let start = (body.boxed(), Spoiling::Flowing(0));
    futures::stream::unfold(start, move |(mut body, spoiling)| {
        let fault = fault.clone();
        async move {
            let offset = match spoiling {
                Spoiling::Ended => return None,
                Spoiling::Cut => {
                    let cut = BoxError::from("connection cut by the fault proxy");
                    return Some((Err(cut), (body, Spoiling::Ended)));
                }
                Spoiling::Flowing(offset) => offset,
            };
            let mut bytes = match body.next().await? {
                Ok(bytes) => bytes.to_vec(),
                Err(e) => return Some((Err(e), (body, Spoiling::Ended))),
            };
            let end = offset + bytes.len() as u64;
            let mut next = Spoiling::Flowing(end);
            match fault {
                Fault::ResetAfter(at) | Fault::ShortBody(at) if end > at => {
                    bytes.truncate(at.saturating_sub(offset) as usize);
                    let cut = matches!(fault, Fault::ResetAfter(_));
                    next = if cut { Spoiling::Cut } else { Spoiling::Ended };
                }
                Fault::PauseAfter { bytes: at, pause } if offset <= at && at < end => {
                    tokio::time::sleep(pause).await;
                }
                Fault::FlipByte(at) if offset <= at && at < end => {
                    bytes[(at - offset) as usize] ^= 0x01;
                }
                _ => {}
            }
            Some((Ok(Bytes::from(bytes)), (body, next)))
        }
    })
}

fn boxed(stream: impl Stream<Item = Result<Bytes, BoxError>> + Send + 'static) -> Body {
    UnsyncBoxBody::new(StreamBody::new(stream.map(|r| r.map(Frame::data))))
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn error_answer(status: u16, code: &str, retry_after: Option<u32>) -> Response<Body> {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the fault proxy</Message><RequestId>fault</RequestId></Error>"
    );
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .header("x-amz-request-id", "fault");
    if let Some(seconds) = retry_after {
        response = response.header("retry-after", seconds.to_string());
    }
    response.body(full(xml)).unwrap()
}

/// `body` served as the object, ranged as the request asks.
fn substitute(request: &Request<Incoming>, body: Bytes, etag: &str) -> Response<Body> {
    let total = body.len() as u64;
    let range = request
        .headers()
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
    let response = Response::builder()
        .header("etag", format!("\"{}\"", etag.trim_matches('"')))
        .header("accept-ranges", "bytes");
    match range {
        Some((first, last)) if first < total => {
            let last = last.min(total - 1);
            response
                .status(StatusCode::PARTIAL_CONTENT)
                .header("content-range", format!("bytes {first}-{last}/{total}"))
                .header("content-length", last - first + 1)
                .body(full(body.slice(first as usize..=last as usize)))
                .unwrap()
        }
        _ => response
            .header("content-length", total)
            .body(full(body))
            .unwrap(),
    }
}
