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
//! Shutdown: on `cancel` the accept loops stop accepting, ask every connection to shut down
//! gracefully (idle HTTP/1 connections close at once, HTTP/2 sends GOAWAY), let in-flight requests
//! finish for at most [`SHUTDOWN_GRACE`], then abort what is left and return.

pub mod decode;
pub mod grpc;
pub mod http;
pub mod otlp_json;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::http::{Request, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::buffer::{BufferClosed, BufferHandle, PushOutcome, SpanBatch};
use crate::config::Config;

/// How long in-flight requests may take to finish once shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

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
    pub fn serve(self, buffer: BufferHandle, cancel: CancellationToken, tasks: &mut JoinSet<()>) {
        let shared = Arc::new(Shared {
            buffer,
            max_request_bytes: self.max_request_bytes,
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
        "span buffer full: {} of {} spans refused (raise OTEL_XRAY_BUFFER_MAX_SPANS or flush more often)",
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
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
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
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(route(req, &shared).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
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
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!(receiver = what, %error, "connection ended with an error");
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

/// Reads a request body into memory, stopping as soon as it passes `cap` bytes. `hint` (the
/// Content-Length, already checked against `cap`) sizes the allocation.
pub(crate) async fn read_capped(
    mut body: Incoming,
    cap: usize,
    hint: Option<usize>,
) -> Result<Bytes, BodyError> {
    let mut out = Vec::with_capacity(hint.unwrap_or(0).min(cap));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Transport)?;
        if let Ok(data) = frame.into_data()
            && decode::extend_capped(&mut out, &data, cap).is_err()
        {
            return Err(BodyError::TooLarge(body));
        }
    }
    // The body may be buffered until the next flush: give back what doubling left over (a
    // no-op when the Content-Length sized it).
    out.shrink_to_fit();
    Ok(Bytes::from(out))
}
