//! OTLP receivers on loopback: HTTP `/v1/traces` ([`http`]) and gRPC TraceService/Export
//! ([`grpc`]), both decoding through [`decode`] and pushing into the span buffer.
//!
//! Start-up binds first ([`bind`], before the extension registers, so a taken port is reported
//! before Lambda starts the runtime), then serves ([`BoundReceivers::serve`]) until cancelled.
//!
//! ```text
//! socket ──▶ accept loop ──▶ connection task ──▶ route by Content-Type ──▶ http.rs / grpc.rs
//!            (one task per   (hyper: HTTP/1.1     application/grpc* → gRPC,   │ decode.rs: size cap,
//!             listener)       keep-alive, or       anything else → OTLP/HTTP   │ gzip/deflate with an
//!                             HTTP/2 by preface)                               │ output cap, protobuf
//!                                                                              ▼ or OTLP/JSON
//!                                        response ◀── BufferHandle::push (partial_success if full)
//! ```
//!
//! Both ports serve both protocols (the OTLP spec allows multiplexing by Content-Type): an SDK
//! left with `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` but the HTTP port, or the other way round, still
//! delivers its spans instead of failing.
//!
//! Everything runs on the extension's current-thread runtime. Idle keep-alive connections are
//! kept open without a timer: the function's SDK reuses them across invocations, and a timer would
//! fire right after a thaw and close connections the SDK is about to use.
//!
//! Memory and connections are bounded ([`ReceiverLimits`], docs/architecture.md "Receiver"):
//! - a body is read into a buffer that grows as its bytes arrive (never reserved from the
//!   declared length beyond [`INITIAL_BODY_CAPACITY`]), and every byte of capacity is first taken
//!   from one [`BodyBudget`] shared by every connection of both receivers; a request that cannot
//!   get its bytes within [`BUDGET_WAIT`] is refused as retryable (HTTP 429 with `Retry-After`,
//!   gRPC UNAVAILABLE) and counted;
//! - at most [`MAX_CONNECTIONS`] connections per receiver: a connection past it is accepted and
//!   closed at once, the others are left alone;
//! - a request whose head (HTTP/1) or body stops arriving for [`STALL_TIMEOUT`], or whose
//!   HTTP/1 head is not complete within [`HEAD_DEADLINE_STALLS`] of them, has its connection
//!   closed (slow-loris). Between requests there is no timer.
//!
//! Shutdown: on `cancel` the accept loops stop accepting, ask every connection to shut down
//! gracefully (idle HTTP/1 connections close at once, HTTP/2 sends GOAWAY), let in-flight requests
//! finish for at most [`SHUTDOWN_GRACE`], then abort what is left and return.

pub mod decode;
pub mod grpc;
pub mod http;
pub mod otlp_json;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::{Request, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::buffer::{BufferClosed, BufferHandle, PushOutcome, SpanBatch};
use crate::config::Config;

/// How long in-flight requests may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// Most connections open at once on each receiver (an SDK keeps one or a few).
pub const MAX_CONNECTIONS: usize = 64;
/// A request that has started (its head or its body) and sends no byte for this long is closed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// An HTTP/1 request head must be complete within this many stall timeouts of its first byte.
pub const HEAD_DEADLINE_STALLS: u64 = 3;
/// How long a request may wait for body bytes from the [`BodyBudget`] before it is refused.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// A body's first allocation, made when its first bytes arrive, whatever its Content-Length;
/// it then doubles as bytes come, up to the declared length or the cap.
pub const INITIAL_BODY_CAPACITY: usize = 16 * 1024;
/// The largest HTTP/1 read buffer, which bounds a request head (hyper's default is ~400 KB).
const MAX_HTTP1_BUF: usize = 64 * 1024;
/// The budget counts in units of this many bytes.
const BUDGET_UNIT: usize = 1024;

/// The bytes of request bodies being read at once, shared by every connection of both
/// receivers. A body takes its capacity from here before growing and gives it back when its
/// request is answered.
#[derive(Debug)]
pub struct BodyBudget {
    units: tokio::sync::Semaphore,
    total_units: usize,
}

impl BodyBudget {
    /// A budget of `bytes` (rounded up to a KiB).
    pub fn new(bytes: usize) -> Self {
        let total_units = bytes
            .div_ceil(BUDGET_UNIT)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        BodyBudget {
            units: tokio::sync::Semaphore::new(total_units),
            total_units,
        }
    }

    /// The whole budget, in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.total_units * BUDGET_UNIT
    }

    /// What is not taken now, in bytes.
    pub fn available_bytes(&self) -> usize {
        self.units.available_permits() * BUDGET_UNIT
    }

    /// Taken now, in bytes.
    pub fn used_bytes(&self) -> usize {
        self.capacity_bytes() - self.available_bytes()
    }
}

/// How the receivers bound connections and the bodies they read.
#[derive(Debug, Clone)]
pub struct ReceiverLimits {
    /// Bytes of bodies being read at once, across both receivers.
    pub body_budget: Arc<BodyBudget>,
    /// Most connections per receiver.
    pub max_connections: usize,
    /// A started request that sends nothing for this long is closed.
    pub stall_timeout: Duration,
}

impl ReceiverLimits {
    /// The defaults, with a body budget of `in_flight_bytes`.
    pub fn new(in_flight_bytes: usize) -> Self {
        ReceiverLimits {
            body_budget: Arc::new(BodyBudget::new(in_flight_bytes)),
            max_connections: MAX_CONNECTIONS,
            stall_timeout: STALL_TIMEOUT,
        }
    }
}

/// A receiver could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The port is taken or not allowed.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// `OTLP/HTTP` or `OTLP/gRPC`.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Listeners bound on loopback, not yet serving.
#[derive(Debug)]
pub struct BoundReceivers {
    /// OTLP/HTTP listener.
    pub http: Option<tokio::net::TcpListener>,
    /// OTLP/gRPC listener.
    pub grpc: Option<tokio::net::TcpListener>,
    /// Request size cap.
    pub max_request_bytes: usize,
}

/// Binds 127.0.0.1:`http_port` and 127.0.0.1:`grpc_port`; fails if either cannot be bound.
pub async fn bind(config: &Config) -> Result<BoundReceivers, ReceiveError> {
    let (bound, mut errors) = bind_each(config).await;
    match errors.pop() {
        Some(e) => Err(e),
        None => Ok(bound),
    }
}

/// Binds what it can: a port another process holds is left out (its listener is `None`) and its
/// error returned, so the extension keeps serving the other one and never fails the function.
pub async fn bind_each(config: &Config) -> (BoundReceivers, Vec<ReceiveError>) {
    let mut errors = Vec::new();
    let mut bind_one = async |port: u16, what: &'static str| {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(source) => {
                errors.push(ReceiveError::Bind { addr, what, source });
                None
            }
        }
    };
    let http = bind_one(config.http_port, "OTLP/HTTP").await;
    let grpc = bind_one(config.grpc_port, "OTLP/gRPC").await;
    (
        BoundReceivers {
            http,
            grpc,
            max_request_bytes: config.max_request_bytes,
        },
        errors,
    )
}

impl BoundReceivers {
    /// Serves until `cancel` fires, pushing decoded spans into `buffer`. The servers' tasks are
    /// spawned into `tasks`; after cancellation they finish in-flight requests and return.
    /// The body budget is the buffer's `in_flight_bytes`; the other limits are the defaults.
    pub fn serve(self, buffer: BufferHandle, cancel: CancellationToken, tasks: &mut JoinSet<()>) {
        let limits = ReceiverLimits::new(buffer.limits().in_flight_bytes);
        self.serve_with(buffer, limits, cancel, tasks);
    }

    /// [`BoundReceivers::serve`] with explicit limits.
    pub fn serve_with(
        self,
        buffer: BufferHandle,
        limits: ReceiverLimits,
        cancel: CancellationToken,
        tasks: &mut JoinSet<()>,
    ) {
        let shared = Arc::new(Shared {
            buffer,
            max_request_bytes: self.max_request_bytes,
            limits,
        });
        if let Some(http) = self.http {
            tasks.spawn(accept_loop(
                http,
                "OTLP/HTTP",
                Arc::clone(&shared),
                cancel.clone(),
            ));
        }
        if let Some(grpc) = self.grpc {
            tasks.spawn(accept_loop(grpc, "OTLP/gRPC", shared, cancel));
        }
    }
}

/// What every request handler needs.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) buffer: BufferHandle,
    pub(crate) max_request_bytes: usize,
    pub(crate) limits: ReceiverLimits,
}

impl Shared {
    /// Pushes decoded spans; the buffer counts them as received (and dropped when full).
    pub(crate) async fn push(&self, batch: SpanBatch) -> Result<PushOutcome, BufferClosed> {
        self.buffer.push(batch).await
    }
}

/// The `error_message` of a partial success.
pub(crate) fn partial_success_message(outcome: PushOutcome) -> String {
    format!(
        "span buffer full: {} of {} spans refused (raise OTEL_XRAY_BUFFER_MAX_SPANS or OTEL_XRAY_BUFFER_MAX_BYTES, or flush more often)",
        outcome.rejected,
        outcome.accepted + outcome.rejected
    )
}

/// Every response body.
pub(crate) type ResponseBody = BoxBody<Bytes, Infallible>;

async fn accept_loop(
    listener: TcpListener,
    what: &'static str,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let addr = listener.local_addr().ok();
    debug!(receiver = what, addr = ?addr, "receiver listening");
    let mut connections = JoinSet::new();
    // Connections closed at the limit since the last one served (logged once per burst).
    let mut refused = 0u64;
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() >= shared.limits.max_connections => {
                    // Closed at once: the open connections (the SDK's pooled one among them)
                    // are not disturbed.
                    drop(stream);
                    refused += 1;
                    if refused == 1 {
                        warn!(
                            receiver = what,
                            %peer,
                            limit = shared.limits.max_connections,
                            "too many connections; new ones are closed until some end"
                        );
                    }
                }
                Ok((stream, peer)) => {
                    if refused > 0 {
                        debug!(receiver = what, refused, "connections closed at the limit");
                        refused = 0;
                    }
                    let _ = stream.set_nodelay(true);
                    debug!(receiver = what, %peer, "connection accepted");
                    connections.spawn(serve_connection(
                        stream,
                        what,
                        Arc::clone(&shared),
                        cancel.clone(),
                    ));
                }
                Err(error) => {
                    // Out of file descriptors or a connection reset before accept: keep serving,
                    // without spinning.
                    warn!(receiver = what, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    drop(listener);
    let in_flight = connections.len();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            receiver = what,
            left = connections.len(),
            "connections still busy after the shutdown grace period; closing them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    debug!(receiver = what, in_flight, "receiver stopped");
}

/// Serves one accepted connection until it closes, or until `cancel` (then gracefully: an idle
/// HTTP/1 connection closes at once, HTTP/2 sends GOAWAY and finishes its streams).
async fn serve_connection(
    stream: TcpStream,
    what: &'static str,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let stall = shared.limits.stall_timeout;
    let activity = Arc::new(Activity::new());
    let stream = Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    };
    let in_service = Arc::clone(&activity);
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        let guard = InService::enter(Arc::clone(&in_service));
        async move {
            let response = route(req, &shared).await;
            drop(guard);
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A request head must fit in this (hyper's default read buffer grows to ~400 KB).
    builder.http1().max_buf_size(MAX_HTTP1_BUF);
    // Larger windows than the 64 KiB default: a 4 MiB export needs fewer round trips.
    builder
        .http2()
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(2 << 20)
        .max_concurrent_streams(128);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = activity.stalled(stall) => {
            debug!(receiver = what, "request head stalled; connection closed");
            return;
        }
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!(receiver = what, %error, "connection ended with an error");
    }
}

/// What the slow-loris watchdog knows of one connection.
#[derive(Debug)]
struct Activity {
    start: tokio::time::Instant,
    /// When a byte last arrived, in milliseconds since `start`.
    last_read_ms: AtomicU64,
    /// Bytes arrived while no request was being served: a request head is under way (HTTP/1).
    head_started: AtomicBool,
    /// When the head under way started, in milliseconds since `start`.
    head_since_ms: AtomicU64,
    /// Requests being served (an HTTP/2 connection can serve several at once).
    in_service: AtomicUsize,
    /// The connection speaks HTTP/2 (its control frames arrive between requests: not watched).
    http2: AtomicBool,
    /// Bytes seen, up to the length of the HTTP/2 preface.
    seen: AtomicUsize,
}

/// The first bytes of an HTTP/2 connection (`PRI * HTTP/2.0`).
const H2_PREFACE_START: &[u8] = b"PRI ";

impl Activity {
    fn new() -> Self {
        Activity {
            start: tokio::time::Instant::now(),
            last_read_ms: AtomicU64::new(0),
            head_started: AtomicBool::new(false),
            head_since_ms: AtomicU64::new(0),
            in_service: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            seen: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived (`data` is what was read).
    fn read(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let seen = self.seen.load(Ordering::Relaxed);
        if seen < H2_PREFACE_START.len() {
            let upto = (H2_PREFACE_START.len() - seen).min(data.len());
            if data[..upto] == H2_PREFACE_START[seen..seen + upto] {
                if seen + upto == H2_PREFACE_START.len() {
                    self.http2.store(true, Ordering::Relaxed);
                }
            } else {
                // Not HTTP/2: stop comparing.
                self.seen.store(usize::MAX, Ordering::Relaxed);
            }
            if self.seen.load(Ordering::Relaxed) != usize::MAX {
                self.seen.store(seen + upto, Ordering::Relaxed);
            }
        }
        let now = self.now_ms();
        self.last_read_ms.store(now, Ordering::Relaxed);
        // A new HTTP/1 request starts with its method (upper-case letters; a stray CR LF may
        // precede it). Anything else read between requests is the tail of a body hyper drains
        // after the handler answered without reading it (a 404), not a new head.
        if self.in_service.load(Ordering::Relaxed) == 0
            && (self.head_started.load(Ordering::Relaxed)
                || data[0].is_ascii_uppercase()
                || data[0] == b'\r'
                || data[0] == b'\n')
            && !self.head_started.swap(true, Ordering::Relaxed)
        {
            self.head_since_ms.store(now, Ordering::Relaxed);
        }
    }

    /// Completes when an HTTP/1 request head has been under way with no byte for `stall`, or
    /// for [`HEAD_DEADLINE_STALLS`] times `stall` in all (a byte now and then does not keep a
    /// head open for ever); never while the connection is idle between requests, or serving one
    /// (the handler bounds a stalled body itself), or on HTTP/2.
    async fn stalled(&self, stall: Duration) {
        let stall_ms = u64::try_from(stall.as_millis()).unwrap_or(u64::MAX).max(1);
        let deadline_ms = stall_ms.saturating_mul(HEAD_DEADLINE_STALLS);
        loop {
            let last = self.last_read_ms.load(Ordering::Relaxed);
            let since = self.head_since_ms.load(Ordering::Relaxed);
            let watched = self.head_started.load(Ordering::Relaxed)
                && self.in_service.load(Ordering::Relaxed) == 0
                && !self.http2.load(Ordering::Relaxed);
            let now = self.now_ms();
            let (quiet, open) = (now.saturating_sub(last), now.saturating_sub(since));
            if watched && (quiet >= stall_ms || open >= deadline_ms) {
                return;
            }
            // Looked at again when the first of the two bounds could be reached (or a stall from
            // now when idle: a check every few seconds on an idle connection costs nothing and
            // closes nothing).
            let wait = if watched {
                (stall_ms - quiet).min(deadline_ms - open)
            } else {
                stall_ms
            };
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

/// Counts one request as being served for as long as it lives.
struct InService(Arc<Activity>);

impl InService {
    fn enter(activity: Arc<Activity>) -> Self {
        activity.in_service.fetch_add(1, Ordering::Relaxed);
        // The head is complete: hyper has handed over the request.
        activity.head_started.store(false, Ordering::Relaxed);
        InService(activity)
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        self.0.in_service.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's socket, telling its [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// gRPC by Content-Type, OTLP/HTTP otherwise.
async fn route(req: Request<Incoming>, shared: &Shared) -> Response<ResponseBody> {
    if grpc::is_grpc(req.headers()) {
        grpc::handle(req, shared).await
    } else {
        http::handle(req, shared).await.map(BodyExt::boxed)
    }
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// More than the cap arrived; reading stopped there. The rest of the body, for
    /// [`drain_in_background`].
    TooLarge(Incoming),
    /// The client went away or broke the protocol.
    Transport(hyper::Error),
    /// No byte of the body came for the stall timeout.
    Stalled,
    /// The [`BodyBudget`] could not give the body its bytes in time. The rest of the body, for
    /// [`drain_in_background`].
    Busy(Incoming),
}

/// At most this much of a refused body is read and thrown away so that its client reads the
/// refusal (closing a socket with unread data resets it, and the client sees a broken pipe).
const DRAIN_MAX_BYTES: usize = 64 * 1024 * 1024;
/// And for at most this long.
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads what is left of a refused request's body in a task of its own and throws it away,
/// bounded in bytes and time, so that the connection closes after the client has sent its body
/// and reads the answer, instead of being reset under it.
pub(crate) fn drain_in_background(mut body: Incoming) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen = seen.saturating_add(data.len());
                    if seen > DRAIN_MAX_BYTES {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

/// The next frame of a body, or [`BodyError::Stalled`] when none comes for `stall`.
pub(crate) async fn next_frame(
    body: &mut Incoming,
    stall: Duration,
) -> Result<Option<hyper::body::Frame<Bytes>>, BodyError> {
    match tokio::time::timeout(stall, body.frame()).await {
        Err(_) => Err(BodyError::Stalled),
        Ok(None) => Ok(None),
        Ok(Some(frame)) => frame.map(Some).map_err(BodyError::Transport),
    }
}

/// A body's bytes being read, and the share of the [`BodyBudget`] they hold; the share goes
/// back when this is dropped (when the request has been answered).
pub(crate) struct BodyBuffer<'a> {
    out: Vec<u8>,
    cap: usize,
    hint: Option<usize>,
    budget: &'a BodyBudget,
    held: Option<tokio::sync::SemaphorePermit<'a>>,
}

/// Why [`BodyBuffer::extend`] did not take the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shortfall {
    /// Past the cap.
    OverCap,
    /// The budget could not give the bytes within [`BUDGET_WAIT`].
    Busy,
}

impl<'a> BodyBuffer<'a> {
    /// An empty body of at most `cap` bytes; `hint` (a declared length) bounds how far the
    /// buffer grows ahead of the bytes, never how much it reserves before they arrive.
    pub(crate) fn new(budget: &'a BodyBudget, cap: usize, hint: Option<usize>) -> Self {
        BodyBuffer {
            out: Vec::new(),
            cap,
            hint,
            budget,
            held: None,
        }
    }

    /// Bounds growth by a length learnt from the data (a gRPC message prefix).
    pub(crate) fn set_hint(&mut self, hint: usize) {
        self.hint = Some(hint);
    }

    /// Bytes so far.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.out
    }

    /// Appends `data`, first taking the capacity it needs from the budget: doubling from
    /// [`INITIAL_BODY_CAPACITY`], never beyond the declared length or the cap (so at most twice
    /// the bytes received are held).
    pub(crate) async fn extend(&mut self, data: &[u8]) -> Result<(), Shortfall> {
        let needed = self
            .out
            .len()
            .checked_add(data.len())
            .ok_or(Shortfall::OverCap)?;
        if needed > self.cap {
            return Err(Shortfall::OverCap);
        }
        if needed > self.out.capacity() {
            let mut target = self
                .out
                .capacity()
                .saturating_mul(2)
                .max(INITIAL_BODY_CAPACITY)
                .min(self.cap);
            if let Some(hint) = self.hint {
                target = target.min(hint);
            }
            let target = target.max(needed);
            self.take_budget(target).await?;
            self.out.reserve_exact(target - self.out.len());
        }
        self.out.extend_from_slice(data);
        Ok(())
    }

    /// Holds budget for `bytes` of capacity in all.
    async fn take_budget(&mut self, bytes: usize) -> Result<(), Shortfall> {
        let held = self.held.as_ref().map_or(0, |p| p.num_permits());
        let want = bytes.div_ceil(BUDGET_UNIT);
        if want <= held {
            return Ok(());
        }
        if want > self.budget.total_units {
            return Err(Shortfall::Busy);
        }
        let more = u32::try_from(want - held).map_err(|_| Shortfall::Busy)?;
        let permit = match self.budget.units.try_acquire_many(more) {
            Ok(permit) => permit,
            Err(_) => tokio::time::timeout(BUDGET_WAIT, self.budget.units.acquire_many(more))
                .await
                .map_err(|_| Shortfall::Busy)?
                .map_err(|_| Shortfall::Busy)?,
        };
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }

    /// The bytes, and the budget they hold (drop it once the request is answered).
    pub(crate) fn finish(self) -> (Vec<u8>, Option<tokio::sync::SemaphorePermit<'a>>) {
        (self.out, self.held)
    }
}

/// Reads a request body into memory, stopping as soon as it passes `cap` bytes, taking its
/// bytes from `shared`'s [`BodyBudget`] as they arrive. `hint` (the Content-Length, already
/// checked against `cap`) bounds the buffer's growth. The permit returned holds the body's share
/// of the budget: keep it until the request is answered.
pub(crate) async fn read_capped<'a>(
    mut body: Incoming,
    shared: &'a Shared,
    cap: usize,
    hint: Option<usize>,
) -> Result<(Bytes, Option<tokio::sync::SemaphorePermit<'a>>), BodyError> {
    let mut buffer = BodyBuffer::new(&shared.limits.body_budget, cap, hint);
    while let Some(frame) = next_frame(&mut body, shared.limits.stall_timeout).await? {
        if let Ok(data) = frame.into_data() {
            match buffer.extend(&data).await {
                Ok(()) => {}
                Err(Shortfall::OverCap) => return Err(BodyError::TooLarge(body)),
                Err(Shortfall::Busy) => return Err(BodyError::Busy(body)),
            }
        }
    }
    let (mut out, held) = buffer.finish();
    // The body may be buffered until the next flush: give back what doubling left over (a
    // no-op when the Content-Length sized it).
    out.shrink_to_fit();
    Ok((Bytes::from(out), held))
}
