//! [`FaultProxy`]: a loopback HTTP/1.1 proxy that sits between an S3 client and a real S3
//! server (the in-process [`crate::S3TestServer`], or moto in CI) and misbehaves on command.
//!
//! The client is pointed at the proxy's endpoint instead of the server's; requests pass through
//! unchanged (the `Host` header too, so SigV4 signatures still verify upstream). Each client
//! connection gets its own upstream connection, opened on its first forwarded request and kept
//! while both sides keep alive.
//!
//! Faults ([`ProxyFault`]) are chosen per request by [`FaultRule`]s, checked in the order they
//! were added; the first rule that matches the request (method, a substring of the path and
//! query) and wins its seeded coin toss applies:
//!
//! - answer `500 InternalError` or `503 SlowDown` (an S3-style XML error body) without
//!   forwarding;
//! - delay the response (forward, then hold the answer back);
//! - reset the connection (TCP RST) before forwarding, or after forwarding without answering:
//!   the request was applied upstream but the client saw an error;
//! - truncate the response body: send the headers with the full `Content-Length`, half the
//!   body, then reset the connection;
//! - corrupt the response body: flip the bits of one byte (same length), with the headers as
//!   they were (damage on the way) or without the `x-amz-checksum-*` headers (damage at rest:
//!   only the object's own checksums can tell).
//!
//! Body faults apply only to answers with a 2xx status and a non-empty body; a rule limited to
//! N uses spends one only when it applies. [`FaultProxy::disappear`] closes the listener (new
//! connections are refused) and resets every open connection; [`FaultProxy::reappear`] listens
//! again on the same port. [`ProxyStats`] counts requests and every injected fault.
//!
//! The proxy runs on its own small tokio runtime, so blocking tests can use it directly.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

/// What the proxy does to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFault {
    /// Answer `500 InternalError` without forwarding.
    Status500,
    /// Answer `503 SlowDown` without forwarding.
    Status503,
    /// Forward, then hold the answer back this long.
    Delay(Duration),
    /// Reset the connection without forwarding.
    ResetBeforeForward,
    /// Forward (the request is applied upstream, its answer read in full), then reset the
    /// connection without answering.
    ResetAfterForward,
    /// Send the answer's headers (full `Content-Length`) and half its body, then reset.
    TruncateBody,
    /// Flip the bits of one byte of the answer's body (damage on the way: the headers, any
    /// `x-amz-checksum-*` included, are left as they are).
    CorruptBody,
    /// Flip the bits of one byte of the answer's body and drop its `x-amz-checksum-*` headers:
    /// what a server holding damaged bytes without a checksum (or one that sends none) would
    /// answer. Only the object's own checksums can tell.
    CorruptStoredBody,
}

impl ProxyFault {
    fn is_body_fault(self) -> bool {
        matches!(
            self,
            ProxyFault::TruncateBody | ProxyFault::CorruptBody | ProxyFault::CorruptStoredBody
        )
    }
}

/// When a fault applies. Build with [`FaultRule::new`] and the chained setters.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// The fault.
    pub fault: ProxyFault,
    /// Only requests with this method (`GET`, `PUT`, `HEAD`, `POST`, `DELETE`); any if `None`.
    pub method: Option<String>,
    /// Only requests whose path and query contain this (an object key, or part of one).
    pub key_contains: Option<String>,
    /// Uses left; `None`: unlimited.
    pub remaining: Option<u64>,
    /// Chance that a matching request gets the fault (drawn from the proxy's seeded RNG).
    pub probability: f64,
}

impl FaultRule {
    /// Every request, unlimited, always.
    pub fn new(fault: ProxyFault) -> FaultRule {
        FaultRule {
            fault,
            method: None,
            key_contains: None,
            remaining: None,
            probability: 1.0,
        }
    }

    /// Only requests with this method.
    pub fn method(mut self, method: &str) -> FaultRule {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path and query contain `s`.
    pub fn key(mut self, s: &str) -> FaultRule {
        self.key_contains = Some(s.to_string());
        self
    }

    /// At most `n` uses.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.remaining = Some(n);
        self
    }

    /// Apply to a matching request with probability `p`.
    pub fn probability(mut self, p: f64) -> FaultRule {
        self.probability = p.clamp(0.0, 1.0);
        self
    }

    fn matches(&self, method: &str, target: &str) -> bool {
        self.remaining != Some(0)
            && self.method.as_deref().is_none_or(|m| m == method)
            && self
                .key_contains
                .as_deref()
                .is_none_or(|k| target.contains(k))
    }
}

/// What the proxy has seen and done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Requests received.
    pub requests: u64,
    /// Requests forwarded upstream and answered (faulty answers included).
    pub forwarded: u64,
    /// Requests that could not be forwarded (upstream unreachable): their connection was reset.
    pub upstream_failures: u64,
    /// Injected `500`s.
    pub status_500: u64,
    /// Injected `503`s.
    pub status_503: u64,
    /// Delayed answers.
    pub delays: u64,
    /// Connections reset before forwarding.
    pub resets_before: u64,
    /// Connections reset after forwarding.
    pub resets_after: u64,
    /// Truncated bodies.
    pub truncated: u64,
    /// Corrupted bodies.
    pub corrupted: u64,
    /// Times the proxy disappeared.
    pub disappearances: u64,
    /// Connections reset because the proxy disappeared.
    pub dropped_connections: u64,
}

impl ProxyStats {
    /// Faults injected (disappearances not included).
    pub fn faults(&self) -> u64 {
        self.status_500
            + self.status_503
            + self.delays
            + self.resets_before
            + self.resets_after
            + self.truncated
            + self.corrupted
    }
}

impl fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections, {} requests ({} forwarded, {} upstream failures); faults: {} x 500, \
             {} x 503, {} delays, {} resets before and {} after forwarding, {} truncated, \
             {} corrupted; {} disappearances ({} connections dropped)",
            self.connections,
            self.requests,
            self.forwarded,
            self.upstream_failures,
            self.status_500,
            self.status_503,
            self.delays,
            self.resets_before,
            self.resets_after,
            self.truncated,
            self.corrupted,
            self.disappearances,
            self.dropped_connections
        )
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    forwarded: AtomicU64,
    upstream_failures: AtomicU64,
    status_500: AtomicU64,
    status_503: AtomicU64,
    delays: AtomicU64,
    resets_before: AtomicU64,
    resets_after: AtomicU64,
    truncated: AtomicU64,
    corrupted: AtomicU64,
    disappearances: AtomicU64,
    dropped_connections: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Rules {
    rules: Vec<FaultRule>,
    rng: StdRng,
}

/// The listener's accept task and the signal that resets its connections.
struct Up {
    accept: tokio::task::JoinHandle<()>,
    /// Dropped (or sent to) when the proxy disappears: every connection resets.
    kill: tokio::sync::watch::Sender<bool>,
}

struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Rules>,
    counters: Counters,
    requests_seq: AtomicU64,
}

/// A fault-injecting HTTP/1.1 proxy on `127.0.0.1`. See the module documentation. Dropping it
/// stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    endpoint: String,
    shared: Arc<Shared>,
    up: Mutex<Option<Up>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("endpoint", &self.endpoint)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultProxy {
    /// Start a proxy in front of `upstream` (`http://HOST:PORT`), with no fault rule and the
    /// RNG seeded with `seed`.
    pub fn start(upstream: &str, seed: u64) -> io::Result<FaultProxy> {
        let hostport = upstream
            .strip_prefix("http://")
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{upstream}: only http:// upstreams"),
                )
            })?
            .trim_end_matches('/');
        let upstream_addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)?
            .next()
            .ok_or_else(|| io::Error::other(format!("{upstream}: no address")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-fault-proxy")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            upstream: upstream_addr,
            rules: Mutex::new(Rules {
                rules: Vec::new(),
                rng: StdRng::seed_from_u64(seed),
            }),
            counters: Counters::default(),
            requests_seq: AtomicU64::new(0),
        });
        let listener = {
            let _enter = runtime.enter();
            bind(SocketAddr::from(([127, 0, 0, 1], 0)))?
        };
        let addr = listener.local_addr()?;
        let up = spawn_accept(&runtime, listener, shared.clone());
        Ok(FaultProxy {
            addr,
            endpoint: format!("http://{addr}"),
            shared,
            up: Mutex::new(Some(up)),
            runtime: Some(runtime),
        })
    }

    /// `http://127.0.0.1:PORT`: where the client should connect.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Add a rule (checked after the rules already there).
    pub fn add_rule(&self, rule: FaultRule) {
        lock(&self.shared.rules).rules.push(rule);
    }

    /// Remove every rule: requests pass through untouched.
    pub fn clear_rules(&self) {
        lock(&self.shared.rules).rules.clear();
    }

    /// Uses left of each rule, in order (`None`: unlimited).
    pub fn remaining(&self) -> Vec<Option<u64>> {
        lock(&self.shared.rules)
            .rules
            .iter()
            .map(|r| r.remaining)
            .collect()
    }

    /// Stop listening (connections are refused) and reset every open connection. Does nothing
    /// if the proxy is already gone.
    pub fn disappear(&self) {
        let Some(up) = lock(&self.up).take() else {
            return;
        };
        up.accept.abort();
        let _ = up.kill.send(true);
        bump(&self.shared.counters.disappearances);
        tracing::info!(addr = %self.addr, "fault proxy disappeared");
    }

    /// Listen again on the same port. Retries the bind for a few seconds (the port may be
    /// briefly taken); does nothing if the proxy is up.
    pub fn reappear(&self) -> io::Result<()> {
        let mut up = lock(&self.up);
        if up.is_some() {
            return Ok(());
        }
        let Some(rt) = &self.runtime else {
            return Err(io::Error::other("the proxy's runtime is gone"));
        };
        let mut tries = 0;
        let listener = loop {
            let r = {
                let _enter = rt.enter();
                bind(self.addr)
            };
            match r {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::debug!(error = %e, "rebinding the fault proxy; trying again");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        };
        *up = Some(spawn_accept(rt, listener, self.shared.clone()));
        tracing::info!(addr = %self.addr, "fault proxy is back");
        Ok(())
    }

    /// Whether the proxy is listening.
    pub fn is_up(&self) -> bool {
        lock(&self.up).is_some()
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            connections: get(&c.connections),
            requests: get(&c.requests),
            forwarded: get(&c.forwarded),
            upstream_failures: get(&c.upstream_failures),
            status_500: get(&c.status_500),
            status_503: get(&c.status_503),
            delays: get(&c.delays),
            resets_before: get(&c.resets_before),
            resets_after: get(&c.resets_after),
            truncated: get(&c.truncated),
            corrupted: get(&c.corrupted),
            disappearances: get(&c.disappearances),
            dropped_connections: get(&c.dropped_connections),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(up) = lock(&self.up).take() {
            up.accept.abort();
            let _ = up.kill.send(true);
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A listening socket with `SO_REUSEADDR`, so that the same port can be taken again at once.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn spawn_accept(rt: &tokio::runtime::Runtime, listener: TcpListener, shared: Arc<Shared>) -> Up {
    let (kill, kill_rx) = tokio::sync::watch::channel(false);
    let accept = rt.spawn(async move {
        loop {
            let socket = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!(error = %e, "fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            bump(&shared.counters.connections);
            tokio::spawn(serve_connection(shared.clone(), socket, kill_rx.clone()));
        }
    });
    Up { accept, kill }
}

/// A client connection that resets (RST, not FIN) when dropped with `reset` set.
struct ResetOnDrop {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResetOnDrop {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResetOnDrop {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reset.load(Ordering::SeqCst) {
            // No FIN: the drop resets.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The error a service returns to make hyper drop the connection (which then resets).
#[derive(Debug)]
struct Reset(&'static str);

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection reset by the fault proxy: {}", self.0)
    }
}

impl std::error::Error for Reset {}

/// Per client connection: its upstream connection, opened on first use.
struct Conn {
    shared: Arc<Shared>,
    upstream: tokio::sync::Mutex<Option<SendRequest<Incoming>>>,
    reset: Arc<AtomicBool>,
}

async fn serve_connection(
    shared: Arc<Shared>,
    socket: TcpStream,
    mut kill: tokio::sync::watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    let reset = Arc::new(AtomicBool::new(false));
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        upstream: tokio::sync::Mutex::new(None),
        reset: reset.clone(),
    });
    let io = TokioIo::new(ResetOnDrop {
        stream: socket,
        reset: reset.clone(),
    });
    let service = service_fn(move |req| {
        let conn = conn.clone();
        async move { conn.handle(req).await }
    });
    let serving = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service);
    let killed = async move {
        // Either a kill signal or the sender dropped: the proxy is gone.
        while !*kill.borrow_and_update() {
            if kill.changed().await.is_err() {
                break;
            }
        }
    };
    let serving = std::pin::pin!(serving);
    let killed = std::pin::pin!(killed);
    match futures::future::select(serving, killed).await {
        futures::future::Either::Left((r, _)) => {
            if let Err(e) = r {
                tracing::trace!(error = %e, "fault proxy connection ended");
            }
        }
        futures::future::Either::Right(((), _)) => {
            // The connection (pinned above) is dropped on return, and resets.
            reset.store(true, Ordering::SeqCst);
            bump(&shared.counters.dropped_connections);
        }
    }
}

fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn error_response(status: StatusCode, code: &str, seq: u64) -> Response<ProxyBody> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the fault proxy</Message><RequestId>fault-{seq}</RequestId></Error>"
    );
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    resp
}

impl Conn {
    /// The fault for this request, if any. Body faults are chosen here and paid for (their use
    /// counted) only when they apply: the returned index names the rule.
    fn choose(&self, method: &str, target: &str) -> Option<(usize, ProxyFault)> {
        let mut rules = lock(&self.shared.rules);
        let Rules { rules, rng } = &mut *rules;
        for (i, r) in rules.iter_mut().enumerate() {
            if !r.matches(method, target) {
                continue;
            }
            if r.probability < 1.0 && !rng.random_bool(r.probability) {
                continue;
            }
            if !r.fault.is_body_fault()
                && let Some(n) = &mut r.remaining
            {
                *n -= 1;
            }
            return Some((i, r.fault));
        }
        None
    }

    /// Spend a use of body-fault rule `i`; false if none is left (another request took it).
    fn spend(&self, i: usize) -> bool {
        let mut rules = lock(&self.shared.rules);
        match rules.rules.get_mut(i).map(|r| &mut r.remaining) {
            Some(Some(0)) => false,
            Some(Some(n)) => {
                *n -= 1;
                true
            }
            Some(None) => true,
            // The rules were cleared meanwhile.
            None => false,
        }
    }

    fn random_index(&self, len: usize) -> usize {
        lock(&self.shared.rules).rng.random_range(0..len)
    }

    async fn handle(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, Reset> {
        let c = &self.shared.counters;
        bump(&c.requests);
        let seq = self.shared.requests_seq.fetch_add(1, Ordering::Relaxed);
        let method = req.method().as_str().to_string();
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let fault = self.choose(&method, &target);
        if fault.is_some() {
            tracing::debug!(%method, %target, ?fault, "fault proxy: injecting");
        }
        match fault.map(|(_, f)| f) {
            Some(ProxyFault::Status500) => {
                bump(&c.status_500);
                return Ok(error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    seq,
                ));
            }
            Some(ProxyFault::Status503) => {
                bump(&c.status_503);
                return Ok(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                    seq,
                ));
            }
            Some(ProxyFault::ResetBeforeForward) => {
                bump(&c.resets_before);
                return Err(self.reset("before forwarding"));
            }
            _ => {}
        }
        let resp = self.forward(req).await?;
        bump(&c.forwarded);
        match fault {
            None => Ok(resp.map(|b| b.map_err(BoxError::from).boxed())),
            Some((_, ProxyFault::Delay(d))) => {
                bump(&c.delays);
                tokio::time::sleep(d).await;
                Ok(resp.map(|b| b.map_err(BoxError::from).boxed()))
            }
            Some((_, ProxyFault::ResetAfterForward)) => {
                // Read the whole answer first: the request has surely been applied.
                let _ = resp.into_body().collect().await;
                bump(&c.resets_after);
                Err(self.reset("after forwarding"))
            }
            Some((
                i,
                f @ (ProxyFault::TruncateBody
                | ProxyFault::CorruptBody
                | ProxyFault::CorruptStoredBody),
            )) => {
                let (mut parts, body) = resp.into_parts();
                let body = match body.collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(_) => return Err(self.reset("the upstream body failed")),
                };
                if !parts.status.is_success() || body.is_empty() || !self.spend(i) {
                    return Ok(Response::from_parts(parts, full(body)));
                }
                if f == ProxyFault::TruncateBody {
                    bump(&c.truncated);
                    let half = body.slice(..body.len() / 2);
                    let reset = self.reset.clone();
                    let frames = futures::stream::iter([Ok(half), Err(())]).map(
                        move |r: Result<Bytes, ()>| match r {
                            Ok(b) => Ok(Frame::data(b)),
                            Err(()) => {
                                reset.store(true, Ordering::SeqCst);
                                Err(BoxError::from(Reset("body cut short")))
                            }
                        },
                    );
                    Ok(Response::from_parts(
                        parts,
                        BodyExt::boxed(StreamBody::new(frames)),
                    ))
                } else {
                    bump(&c.corrupted);
                    if f == ProxyFault::CorruptStoredBody {
                        let names: Vec<_> = parts
                            .headers
                            .keys()
                            .filter(|n| n.as_str().starts_with("x-amz-checksum-"))
                            .cloned()
                            .collect();
                        for n in names {
                            parts.headers.remove(n);
                        }
                    }
                    let mut bytes = body.to_vec();
                    let at = self.random_index(bytes.len());
                    bytes[at] ^= 0xFF;
                    tracing::debug!(%target, at, "fault proxy: corrupted a body byte");
                    Ok(Response::from_parts(parts, full(bytes)))
                }
            }
            Some((_, ProxyFault::Status500 | ProxyFault::Status503))
            | Some((_, ProxyFault::ResetBeforeForward)) => {
                Err(self.reset("unreachable fault state"))
            }
        }
    }

    fn reset(&self, why: &'static str) -> Reset {
        self.reset.store(true, Ordering::SeqCst);
        Reset(why)
    }

    async fn open_upstream(&self) -> io::Result<SendRequest<Incoming>> {
        let stream = TcpStream::connect(self.shared.upstream).await?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Send the request on this connection's upstream connection (opened if needed).
    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Incoming>, Reset> {
        let mut slot = self.upstream.lock().await;
        if let Some(s) = slot.as_mut()
            && (s.is_closed() || s.ready().await.is_err())
        {
            *slot = None;
        }
        let sender = match slot.take() {
            Some(s) => slot.insert(s),
            None => match self.open_upstream().await {
                Ok(s) => slot.insert(s),
                Err(e) => {
                    tracing::debug!(error = %e, "fault proxy: upstream unreachable");
                    bump(&self.shared.counters.upstream_failures);
                    return Err(self.reset("upstream unreachable"));
                }
            },
        };
        match sender.send_request(req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::debug!(error = %e, "fault proxy: upstream request failed");
                bump(&self.shared.counters.upstream_failures);
                *slot = None;
                Err(self.reset("upstream request failed"))
            }
        }
    }
}
