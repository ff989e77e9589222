//! Test doubles for the lifecycle tests: a fake Lambda Extensions + Telemetry API on 127.0.0.1
//! that decodes and records what the extension sends it, and lets the test answer each
//! `event/next` call itself.

// Test code: panicking on a broken expectation is the point.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use otel_xray::config::Config;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub const EXTENSION_ID: &str = "0f8b2c1d-test-extension-id";
pub const ACCOUNT_ID: &str = "123456789012";
pub const FUNCTION_ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:orders:live";
pub const TRACE_HEADER: &str =
    "Root=1-66432ccf-5e8a4b7c9d0e1f2a3b4c5d6e;Parent=7a8b9c0d1e2f3a4b;Sampled=1";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// An `event/next` call waiting for the test's answer.
#[derive(Debug)]
pub struct NextCall {
    pub n: usize,
    pub at: Instant,
    reply: oneshot::Sender<Response<Full<Bytes>>>,
}

pub fn unix_ms_in(d: Duration) -> u64 {
    (SystemTime::now() + d)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl NextCall {
    pub fn invoke(self, request_id: &str, deadline_in: Duration, trace_header: Option<&str>) {
        let mut event = serde_json::json!({
            "eventType": "INVOKE",
            "deadlineMs": unix_ms_in(deadline_in),
            "requestId": request_id,
            "invokedFunctionArn": FUNCTION_ARN,
            "futureField": {"ignored": true},
        });
        if let Some(h) = trace_header {
            event["tracing"] = serde_json::json!({"type": "X-Amzn-Trace-Id", "value": h});
        }
        self.json(event);
    }

    pub fn shutdown(self, reason: &str, deadline_in: Duration) {
        self.json(serde_json::json!({
            "eventType": "SHUTDOWN",
            "shutdownReason": reason,
            "deadlineMs": unix_ms_in(deadline_in),
        }));
    }

    pub fn json(self, body: Value) {
        let _ = self.reply.send(
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("lambda-extension-event-identifier", "evt")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
        );
    }

    pub fn status(self, status: StatusCode) {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"{\"errorMessage\":\"boom\"}",
        )));
        *r.status_mut() = status;
        let _ = self.reply.send(r);
    }
}

struct Shared {
    recorded: Mutex<Vec<Recorded>>,
    subscribe_status: StatusCode,
    next_tx: mpsc::UnboundedSender<NextCall>,
    next_count: Mutex<usize>,
    /// Invocations waiting for a runtime's `GET /runtime/invocation/next`.
    invocations: Mutex<std::collections::VecDeque<Invocation>>,
    queued: tokio::sync::Notify,
    /// Answer an `INVOKE` registration with 403, as Lambda Managed Instances do.
    refuse_invoke: std::sync::atomic::AtomicBool,
    /// Answer a subscription with this `schemaVersion` with 400 (an older platform).
    refuse_schema: Mutex<Option<String>>,
}

/// One invocation the fake Runtime API hands a runtime.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub trace_header: Option<String>,
    pub tenant_id: Option<String>,
    pub deadline_in: Duration,
    pub event: Value,
}

/// The fake Lambda API.
pub struct FakeLambda {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    next_rx: mpsc::UnboundedReceiver<NextCall>,
}

impl FakeLambda {
    /// Starts the fake; `subscribe_status` is what `PUT /telemetry` answers (200, or 404 to
    /// play a sandbox without the Telemetry API).
    pub async fn start(subscribe_status: StatusCode) -> FakeLambda {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (next_tx, next_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            recorded: Mutex::new(Vec::new()),
            subscribe_status,
            next_tx,
            next_count: Mutex::new(0),
            invocations: Mutex::new(std::collections::VecDeque::new()),
            queued: tokio::sync::Notify::new(),
            refuse_invoke: std::sync::atomic::AtomicBool::new(false),
            refuse_schema: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, Arc::clone(&s)));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeLambda {
            addr,
            shared,
            next_rx,
        }
    }

    /// Queues an invocation for the next runtime `GET /runtime/invocation/next`.
    pub fn queue_invocation(&self, invocation: Invocation) {
        self.shared
            .invocations
            .lock()
            .unwrap()
            .push_back(invocation);
        self.shared.queued.notify_waiters();
        self.shared.queued.notify_one();
    }

    /// From now on a subscription with `schema` is refused with 400.
    pub fn refuse_schema(&self, schema: &str) {
        *self.shared.refuse_schema.lock().unwrap() = Some(schema.to_owned());
    }

    /// From now on an `INVOKE` registration is refused as Lambda Managed Instances refuse it.
    pub fn refuse_invoke_registration(&self) {
        self.shared
            .refuse_invoke
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next `event/next` call (bounded wait).
    pub async fn next_call(&mut self, within: Duration) -> NextCall {
        tokio::time::timeout(within, self.next_rx.recv())
            .await
            .expect("the extension did not call event/next in time")
            .expect("fake closed")
    }

    /// No further `event/next` call for `d`.
    pub async fn no_next_call_for(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.next_rx.recv()).await.is_err()
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.recorded()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// The destination the extension subscribed with, mapped to 127.0.0.1 (what a local
    /// emulator does with `sandbox.localdomain`).
    pub fn telemetry_url(&self) -> String {
        let sub = self
            .requests_to("/2022-07-01/telemetry")
            .pop()
            .expect("no subscription");
        let uri = sub.json()["destination"]["URI"]
            .as_str()
            .unwrap()
            .to_owned();
        uri.replace("sandbox.localdomain", "127.0.0.1")
    }
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let rec = Recorded {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body,
        at: Instant::now(),
    };
    shared.recorded.lock().unwrap().push(rec.clone());
    let id_ok = rec.header("lambda-extension-identifier") == Some(EXTENSION_ID);
    let reply = |status: u16, body: &str| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    Ok(match (rec.method.clone(), rec.path.as_str()) {
        (Method::POST, "/2020-01-01/extension/register")
            if shared
                .refuse_invoke
                .load(std::sync::atomic::Ordering::SeqCst)
                && rec.body.windows(6).any(|w| w == b"INVOKE") =>
        {
            reply(
                403,
                r#"{"errorType":"Extension.InvalidEventType","errorMessage":"INVOKE: ErrorInvalidEventType"}"#,
            )
        }
        (Method::GET, "/2018-06-01/runtime/invocation/next") => loop {
            let waiting = shared.queued.notified();
            tokio::pin!(waiting);
            waiting.as_mut().enable();
            let next = shared.invocations.lock().unwrap().pop_front();
            if let Some(inv) = next {
                let mut b = Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .header("lambda-runtime-aws-request-id", &inv.request_id)
                    .header(
                        "lambda-runtime-deadline-ms",
                        unix_ms_in(inv.deadline_in).to_string(),
                    )
                    .header("lambda-runtime-invoked-function-arn", FUNCTION_ARN);
                if let Some(h) = &inv.trace_header {
                    b = b.header("lambda-runtime-trace-id", h);
                }
                if let Some(t) = &inv.tenant_id {
                    b = b.header("lambda-runtime-aws-tenant-id", t);
                }
                break b
                    .body(Full::new(Bytes::from(inv.event.to_string())))
                    .unwrap();
            }
            waiting.await;
        },
        // SnapStart: after the restore the runtime asks for its restore event, or reports the
        // failure of its after-restore hooks.
        (Method::GET, "/2018-06-01/runtime/restore/next") => reply(200, ""),
        (Method::POST, "/2018-06-01/runtime/restore/error") => reply(202, r#"{"status":"OK"}"#),
        (Method::POST, path)
            if path.starts_with("/2018-06-01/runtime/invocation/")
                && (path.ends_with("/response") || path.ends_with("/error")) =>
        {
            reply(202, r#"{"status":"OK"}"#)
        }
        (Method::POST, "/2020-01-01/extension/register") => Response::builder()
            .status(200)
            .header("lambda-extension-identifier", EXTENSION_ID)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                serde_json::json!({
                    "functionName": "orders",
                    "functionVersion": "$LATEST",
                    "handler": "app.handler",
                    "accountId": ACCOUNT_ID,
                })
                .to_string(),
            )))
            .unwrap(),
        (_, _) if !id_ok => reply(403, r#"{"errorType":"Extension.Forbidden"}"#),
        (Method::GET, "/2020-01-01/extension/event/next") => {
            let (tx, rx) = oneshot::channel();
            let n = {
                let mut c = shared.next_count.lock().unwrap();
                *c += 1;
                *c
            };
            let _ = shared.next_tx.send(NextCall {
                n,
                at: Instant::now(),
                reply: tx,
            });
            match rx.await {
                Ok(r) => r,
                Err(_) => reply(500, "test dropped the call"),
            }
        }
        (Method::PUT, "/2022-07-01/telemetry")
            if shared.refuse_schema.lock().unwrap().as_deref()
                == serde_json::from_slice::<Value>(&rec.body)
                    .ok()
                    .and_then(|b| b["schemaVersion"].as_str().map(str::to_owned))
                    .as_deref() =>
        {
            reply(
                400,
                r#"{"errorType":"ValidationError","errorMessage":"schemaVersion"}"#,
            )
        }
        (Method::PUT, "/2022-07-01/telemetry") => reply(shared.subscribe_status.as_u16(), "\"OK\""),
        (Method::POST, "/2020-01-01/extension/init/error")
        | (Method::POST, "/2020-01-01/extension/exit/error") => reply(202, r#"{"status":"OK"}"#),
        _ => reply(404, "not found"),
    })
}

/// POSTs `body` to `url`, returns the status.
pub async fn post(url: &str, body: impl Into<Bytes>) -> StatusCode {
    request(Method::POST, url, body).await
}

pub async fn request(method: Method, url: &str, body: impl Into<Bytes>) -> StatusCode {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("request timed out")
        .expect("request failed")
        .status()
}

/// Options for an in-process run: its `Ready` and a token that ends it as SHUTDOWN would.
pub fn options() -> (
    otel_xray::lifecycle::RunOptions,
    oneshot::Receiver<otel_xray::lifecycle::Ready>,
    tokio_util::sync::CancellationToken,
) {
    let (tx, rx) = oneshot::channel();
    let cancel = tokio_util::sync::CancellationToken::new();
    (
        otel_xray::lifecycle::RunOptions {
            extension_name: "otel-xray".into(),
            cancel: cancel.clone(),
            ready: Some(tx),
        },
        rx,
        cancel,
    )
}

/// A configuration for in-process runs: every port ephemeral, the Lambda APIs at `fake`.
pub fn config(fake: SocketAddr, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("AWS_REGION", "eu-west-1"),
        ("AWS_LAMBDA_FUNCTION_NAME", "orders"),
        ("OTEL_XRAY_EXPORTER", "daemon"),
        ("AWS_XRAY_DAEMON_ADDRESS", "127.0.0.1:9"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    vars.insert("AWS_LAMBDA_RUNTIME_API".into(), fake.to_string());
    let (mut config, warnings) = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    if !extra.iter().any(|(k, _)| *k == "OTEL_XRAY_HTTP_PORT") {
        config.http_port = 0;
    }
    config.grpc_port = 0;
    if !extra.iter().any(|(k, _)| *k == "OTEL_XRAY_PROXY_PORT") {
        config.proxy_port = 0;
    }
    if !extra.iter().any(|(k, _)| *k == "OTEL_XRAY_TELEMETRY_PORT") {
        config.telemetry_port = 0;
    }
    config
}

/// Platform events of one invocation, as Lambda would deliver them.
pub fn start_event(request_id: &str) -> Value {
    serde_json::json!({
        "time": now_rfc3339(Duration::ZERO),
        "type": "platform.start",
        "record": {
            "requestId": request_id,
            "version": "$LATEST",
            "tracing": {"spanId": "3c6d1e2f4a5b6c7d", "type": "X-Amzn-Trace-Id", "value": TRACE_HEADER}
        }
    })
}

pub fn runtime_done_event(request_id: &str, status: &str) -> Value {
    serde_json::json!({
        "time": now_rfc3339(Duration::from_millis(5)),
        "type": "platform.runtimeDone",
        "record": {
            "requestId": request_id,
            "status": status,
            "tracing": {"spanId": "3c6d1e2f4a5b6c7d", "type": "X-Amzn-Trace-Id", "value": TRACE_HEADER},
            "metrics": {"durationMs": 5.0, "producedBytes": 2},
            "spans": [{"name": "responseLatency", "start": now_rfc3339(Duration::ZERO), "durationMs": 4.0}]
        }
    })
}

/// An RFC 3339 time `d` from now (UTC).
pub fn now_rfc3339(d: Duration) -> String {
    let t = (SystemTime::now() + d).duration_since(UNIX_EPOCH).unwrap();
    let secs = t.as_secs() as i64;
    let ms = t.subsec_millis();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A small OTLP batch, as an SDK would export it, for pushing straight into the buffer.
pub fn sdk_batch(spans: usize) -> otel_xray::buffer::SpanBatch {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    otel_xray::buffer::SpanBatch::new(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: (0..spans)
                .map(|i| Span {
                    trace_id: vec![
                        0x66, 0x43, 0x2c, 0xcf, 0x5e, 0x8a, 0x4b, 0x7c, 0x9d, 0x0e, 0x1f, 0x2a,
                        0x3b, 0x4c, 0x5d, 0x6e,
                    ],
                    span_id: vec![1, 2, 3, 4, 5, 6, 7, i as u8 + 1],
                    parent_span_id: vec![0x3c, 0x6d, 0x1e, 0x2f, 0x4a, 0x5b, 0x6c, 0x7d],
                    name: format!("sdk-span-{i}"),
                    kind: 1,
                    start_time_unix_nano: 1_715_678_463_640_000_000,
                    end_time_unix_nano: 1_715_678_463_650_000_000,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }])
}
