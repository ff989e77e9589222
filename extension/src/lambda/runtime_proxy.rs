//! The Runtime API proxy: the function's runtime talks to Lambda through it (the wrapper points
//! the runtime's `AWS_LAMBDA_RUNTIME_API` at `127.0.0.1:OTEL_XRAY_PROXY_PORT`), so the extension
//! sees every invocation begin and end.
//!
//! ```text
//!  runtime ──HTTP/1.1──▶ proxy (127.0.0.1:9009) ──HTTP/1.1──▶ Lambda's Runtime API ($AWS_LAMBDA_RUNTIME_API)
//!     GET  /2018-06-01/runtime/invocation/next       response read whole: context extracted
//!                                                     (event_context.rs), invocation span
//!                                                     started, Lambda-Runtime-Trace-Id rewritten
//!     POST /2018-06-01/runtime/invocation/{id}/response|error
//!                                                     streamed both ways (chunked, trailers kept);
//!                                                     once Lambda accepted it (2xx): span ended
//!                                                     and buffered, then InvocationEndSender
//!     GET  /otel-xray/health                          answered here: 200 {"name","version"}
//!     anything else                                   forwarded untouched
//! ```
//!
//! Forwarding keeps the method, path, query, headers (minus hop-by-hop ones) and streams bodies
//! frame by frame, so response streaming (`Lambda-Runtime-Function-Response-Mode: streaming`,
//! chunked bodies with `Lambda-Runtime-Function-Error-Type` trailers) passes through; hyper sends
//! the trailers the `Trailer` header declares, and the runtime declares them.
//!
//! Failing open: the listener is bound before the extension registers; a taken port leaves the
//! proxy out (logged with the variable), the wrapper's health probe then fails and the runtime
//! talks to Lambda directly. When Lambda cannot be reached the runtime gets a 502, as it would
//! get a connection error without the proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::invocation::{EndSource, InvocationEndSender};
use super::invocation_span::{InvocationOutcome, NextInvocation, SharedInvocationSpans};
use crate::buffer::{BufferHandle, SpanBatch};

/// The proxy's own path.
pub const HEALTH_PATH: &str = "/otel-xray/health";
/// The Runtime API's prefix.
const RUNTIME_PREFIX: &str = "/2018-06-01/runtime/invocation/";
/// `Lambda-Runtime-Trace-Id`.
pub const TRACE_HEADER: &str = "lambda-runtime-trace-id";
const REQUEST_ID_HEADER: &str = "lambda-runtime-aws-request-id";
const DEADLINE_HEADER: &str = "lambda-runtime-deadline-ms";
const ARN_HEADER: &str = "lambda-runtime-invoked-function-arn";
const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";
/// `Lambda-Runtime-Aws-Tenant-Id` (tenant isolation mode); passed on, and recorded on the span.
const TENANT_ID_HEADER: &str = "lambda-runtime-aws-tenant-id";
/// Largest event read whole (Lambda's synchronous payload limit is 6 MB; leave room).
const MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;
/// How much of an error body is kept for the span's message.
const ERROR_BODY_PREFIX: usize = 4096;
/// In-flight requests get this long once the extension stops.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

/// The proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The port is taken.
    #[error("cannot listen on {addr} (Runtime API proxy): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// `AWS_LAMBDA_RUNTIME_API` is not a `host:port`.
    #[error("invalid Runtime API address {0:?}")]
    Upstream(String),
}

/// Binds 127.0.0.1:`port` (0 for an ephemeral port).
pub async fn bind(port: u16) -> Result<TcpListener, ProxyError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Bind { addr, source })
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// What the proxy needs to do its work.
#[derive(Debug, Clone)]
pub struct ProxyParts {
    /// `host:port` of Lambda's Runtime API.
    pub upstream: String,
    /// End-of-invocation signals to the lifecycle.
    pub end: InvocationEndSender,
    /// Where finished invocation spans go.
    pub buffer: BufferHandle,
    /// The invocation spans (None: the proxy only forwards and signals).
    pub spans: Option<SharedInvocationSpans>,
    /// Hold the runtime's answer until the lifecycle's `event/next` is on its way (on-demand
    /// Lambda). False on Managed Instances, where there is no `event/next` per invocation: the
    /// runtime is answered as soon as Lambda has answered.
    pub hold_answers: bool,
}

struct Proxy {
    parts: ProxyParts,
    upstream_authority: http::uri::Authority,
    client: Client<HttpConnector, ProxyBody>,
}

/// Serves `listener` until `cancel`, spawning its task into `tasks`.
pub fn serve(
    listener: TcpListener,
    parts: ProxyParts,
    cancel: CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<(), ProxyError> {
    let upstream_authority: http::uri::Authority = parts
        .upstream
        .parse()
        .map_err(|_| ProxyError::Upstream(parts.upstream.clone()))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // No idle timer on pooled connections: a timer firing right after a thaw would close a
    // connection the runtime is about to need; Lambda's server keeps them open.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4)
        .build(connector);
    let proxy = Arc::new(Proxy {
        parts,
        upstream_authority,
        client,
    });
    tasks.spawn(accept_loop(listener, proxy, cancel));
    Ok(())
}

async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>, cancel: CancellationToken) {
    let addr = listener.local_addr().ok();
    info!(addr = ?addr, upstream = %proxy.parts.upstream, "Runtime API proxy listening");
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, Arc::clone(&proxy), cancel.clone()));
                }
                Err(error) => {
                    warn!(%error, "Runtime API proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
    drop(listener);
    // A runtime blocked in invocation/next would hold its connection for ever: bounded wait.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    debug!("Runtime API proxy stopped");
}

async fn serve_connection(stream: TcpStream, proxy: Arc<Proxy>, cancel: CancellationToken) {
    let service = service_fn(move |req: Request<Incoming>| {
        let proxy = Arc::clone(&proxy);
        async move { Ok::<_, Infallible>(proxy.handle(req).await) }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        debug!(%error, "Runtime API proxy connection ended with an error");
    }
}

/// What kind of Runtime API call a request is.
#[derive(Debug, PartialEq, Eq)]
enum Call<'a> {
    Health,
    Next,
    Response(&'a str),
    Error(&'a str),
    Other,
}

fn classify<'a>(method: &Method, path: &'a str) -> Call<'a> {
    if path == HEALTH_PATH {
        return Call::Health;
    }
    let Some(rest) = path.strip_prefix(RUNTIME_PREFIX) else {
        return Call::Other;
    };
    if rest == "next" && method == Method::GET {
        return Call::Next;
    }
    if method != Method::POST {
        return Call::Other;
    }
    match rest.split_once('/') {
        Some((id, "response")) if !id.is_empty() => Call::Response(id),
        Some((id, "error")) if !id.is_empty() => Call::Error(id),
        _ => Call::Other,
    }
}

impl Proxy {
    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let path = req.uri().path().to_owned();
        match classify(req.method(), &path) {
            Call::Health => health(),
            Call::Next => self.next(req).await,
            Call::Response(id) => self.end(req, id.to_owned(), false).await,
            Call::Error(id) => self.end(req, id.to_owned(), true).await,
            Call::Other => match self.forward(req.map(BodyExt::boxed)).await {
                Ok(resp) => resp.map(BodyExt::boxed),
                Err(resp) => resp,
            },
        }
    }

    /// Sends `req` to Lambda, headers and body untouched but for hop-by-hop headers.
    async fn forward(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, Response<ProxyBody>> {
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.upstream_authority.clone())
            .path_and_query(path_and_query)
            .build();
        let Ok(uri) = uri else {
            return Err(bad_gateway("cannot build the upstream URI"));
        };
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(HOST);
        let path = parts.uri.path().to_owned();
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => Ok(resp),
            Err(e) => {
                warn!(error = %e, path, "Runtime API proxy: Lambda's Runtime API unreachable");
                Err(bad_gateway(&format!("Runtime API unreachable: {e}")))
            }
        }
    }

    /// `invocation/next`: the event is read whole, the invocation span started and the trace
    /// header rewritten for the runtime.
    async fn next(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let resp = match self.forward(req.map(BodyExt::boxed)).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        if !resp.status().is_success() {
            return resp.map(BodyExt::boxed);
        }
        let (mut parts, body) = resp.into_parts();
        let event = match Limited::new(body, MAX_EVENT_BYTES).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                warn!(error = %e, "Runtime API proxy: cannot read the event");
                return bad_gateway("cannot read the event from the Runtime API");
            }
        };
        let request_id = header_str(&parts.headers, REQUEST_ID_HEADER).map(str::to_owned);
        if let (Some(spans), Some(request_id)) = (&self.parts.spans, request_id) {
            let next = NextInvocation {
                request_id: &request_id,
                deadline_ms: header_str(&parts.headers, DEADLINE_HEADER)
                    .and_then(|d| d.trim().parse().ok()),
                invoked_arn: header_str(&parts.headers, ARN_HEADER),
                trace_header: header_str(&parts.headers, TRACE_HEADER),
                tenant_id: header_str(&parts.headers, TENANT_ID_HEADER),
                event: &event,
            };
            // A bug while reading the event costs this request its span; the runtime gets the
            // event and Lambda's header as they came.
            let started = crate::contain::contain("reading an invocation's event", || {
                crate::contain::inject("proxy", &event);
                lock(spans).start(&next, unix_nanos_now())
            });
            if let Some((started, failed)) = started {
                self.push(failed).await;
                if let Some(value) = started
                    .runtime_trace_header
                    .and_then(|v| HeaderValue::from_str(&v).ok())
                {
                    parts
                        .headers
                        .insert(HeaderName::from_static(TRACE_HEADER), value);
                }
                debug!(
                    request_id = %request_id,
                    sampled = started.sampled,
                    parent_source = started.parent_source,
                    "invocation started"
                );
            }
        }
        parts.headers.remove(TRANSFER_ENCODING);
        parts.headers.remove(CONTENT_LENGTH);
        Response::from_parts(parts, full(event))
    }

    /// `invocation/{id}/response|error`: streamed to Lambda; once accepted, the span ends and
    /// the lifecycle is told.
    async fn end(
        &self,
        req: Request<Incoming>,
        request_id: String,
        is_error: bool,
    ) -> Response<ProxyBody> {
        let header_error_type = header_str(req.headers(), ERROR_TYPE_HEADER).map(str::to_owned);
        let tap = Arc::new(Mutex::new(Tap::default()));
        let body_tap = Arc::clone(&tap);
        let keep_body = is_error;
        let req = req.map(move |body| {
            body.map_frame(move |frame: Frame<Bytes>| {
                let mut t = lock(&body_tap);
                if let Some(trailers) = frame.trailers_ref() {
                    t.trailer_error_type =
                        header_str(trailers, ERROR_TYPE_HEADER).map(str::to_owned);
                } else if keep_body && let Some(data) = frame.data_ref() {
                    let room = ERROR_BODY_PREFIX.saturating_sub(t.body_prefix.len());
                    t.body_prefix
                        .extend_from_slice(&data[..data.len().min(room)]);
                }
                frame
            })
            .boxed()
        });
        let resp = match self.forward(req).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        if resp.status().is_success() {
            let (trailer_error_type, body_prefix) = {
                let mut t = lock(&tap);
                (
                    t.trailer_error_type.take(),
                    std::mem::take(&mut t.body_prefix),
                )
            };
            // A streamed response that failed midway names its error in the trailers.
            let error_type = if is_error {
                Some(
                    header_error_type
                        .or_else(|| error_type_of_body(&body_prefix))
                        .unwrap_or_else(|| "Runtime.Unknown".to_owned()),
                )
            } else {
                trailer_error_type
            };
            if let Some(spans) = &self.parts.spans {
                let outcome = match &error_type {
                    None => InvocationOutcome::Response,
                    Some(t) => InvocationOutcome::Error {
                        error_type: t.clone(),
                        message: error_message_of_body(&body_prefix),
                    },
                };
                let span = lock(spans).end(&request_id, outcome, unix_nanos_now());
                self.push(span.into_iter().collect()).await;
            }
            let held = self.parts.end.invocation_ended(
                request_id.clone(),
                EndSource::RuntimeProxy,
                error_type.clone(),
            );
            debug!(
                request_id = %request_id,
                error_type = error_type.as_deref().unwrap_or(""),
                "runtime posted its result"
            );
            // The runtime is answered once the extension's `event/next` is on its way.
            match held {
                Some(held) if self.parts.hold_answers => held.released().await,
                Some(_) => {}
                None => debug!(request_id = %request_id, "end signal not queued"),
            }
        }
        resp.map(BodyExt::boxed)
    }

    /// Buffers finished invocation spans (before any end signal, so the flush includes them).
    async fn push(&self, spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) {
        if spans.is_empty() {
            return;
        }
        let Some(shared) = &self.parts.spans else {
            return;
        };
        let rs = lock(shared).resource_spans(spans);
        if let Err(e) = self.parts.buffer.push(SpanBatch::new(vec![rs])).await {
            debug!(error = %e, "invocation span not buffered");
        }
    }
}

#[derive(Debug, Default)]
struct Tap {
    trailer_error_type: Option<String>,
    body_prefix: Vec<u8>,
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
}

/// `errorType` of a Runtime API error body (`{"errorMessage","errorType","stackTrace"}`).
fn error_type_of_body(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("errorType")?.as_str().map(str::to_owned)
}

fn error_message_of_body(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("errorMessage")?.as_str().map(str::to_owned)
}

/// Connection-level headers that a proxy must not pass on (RFC 9110 §7.6.1). `Trailer` and
/// `TE` are end-to-end here: the runtime's `Trailer` declaration is what makes hyper send the
/// trailers on.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn health() -> Response<ProxyBody> {
    let body = serde_json::json!({"name": "otel-xray", "version": env!("CARGO_PKG_VERSION")});
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn bad_gateway(message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"errorMessage": message, "errorType": "OtelXray.ProxyError"});
    let mut resp = Response::new(full(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_runtime_api_calls() {
        let p = "/2018-06-01/runtime/invocation/";
        assert_eq!(classify(&Method::GET, HEALTH_PATH), Call::Health);
        assert_eq!(classify(&Method::GET, &format!("{p}next")), Call::Next);
        assert_eq!(classify(&Method::POST, &format!("{p}next")), Call::Other);
        assert_eq!(
            classify(&Method::POST, &format!("{p}abc-1/response")),
            Call::Response("abc-1")
        );
        assert_eq!(
            classify(&Method::POST, &format!("{p}abc-1/error")),
            Call::Error("abc-1")
        );
        assert_eq!(
            classify(&Method::GET, &format!("{p}abc-1/response")),
            Call::Other
        );
        assert_eq!(
            classify(&Method::POST, &format!("{p}/response")),
            Call::Other
        );
        assert_eq!(
            classify(&Method::POST, "/2018-06-01/runtime/init/error"),
            Call::Other
        );
    }

    #[test]
    fn error_bodies() {
        let b = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":[]}"#;
        assert_eq!(error_type_of_body(b).as_deref(), Some("ValueError"));
        assert_eq!(error_message_of_body(b).as_deref(), Some("boom"));
        assert_eq!(error_type_of_body(b"not json"), None);
    }
}
