//! The Runtime API proxy end to end on this machine: the real extension binary in our Lambda
//! emulator (`local-lambda`), this test acting as the function's runtime through the proxy
//! (exactly the Runtime API calls a runtime makes, plus the OTLP export of a function's SDK), and
//! a UDP X-Ray daemon stand-in that decodes and schema-checks every document.
//!
//! Every caller shape checks that the invocation's documents form one trace with exactly one
//! root (or one segment whose parent is the caller's span) and no orphan parent ids.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use local_lambda::{Config, InvokeRequest, InvokeStatus, LocalLambda};
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One sandbox at a time: the ports chosen by [`free_port`] are released before the extension
/// binds them, and another sandbox's ephemeral listener could take one meanwhile.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the test runtime does with the next event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Respond; the "SDK" exports one INTERNAL span under the invocation span.
    Respond,
    /// Respond; the "SDK" also made its own FaaS SERVER span for the request (like the OTel
    /// Lambda instrumentations), with the INTERNAL span under it.
    RespondWithOwnServerSpan,
    /// Post an invocation error.
    Error,
    /// Never answer (the function times out).
    Hang,
    /// A streamed response (chunked), ending with error trailers when `true`.
    Stream(bool),
}

/// What the runtime was handed.
#[derive(Debug, Clone)]
struct Seen {
    request_id: String,
    trace_header: String,
}

struct Sandbox {
    /// The cold start's trace and invocation span: the `Init` span (built from telemetry that
    /// may arrive after the first flush) must hang there, whichever flush carries it.
    cold: Option<(String, String)>,
    inits: usize,
    lambda: LocalLambda,
    udp: UdpSocket,
    plans: mpsc::UnboundedSender<Plan>,
    seen: mpsc::UnboundedReceiver<Seen>,
    proxy: SocketAddr,
}

impl Sandbox {
    async fn start(active_tracing: bool, extra_env: &[(&str, &str)]) -> Sandbox {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let proxy_port = free_port();
        let http_port = free_port();
        let mut env: Vec<(String, String)> = vec![
            (
                "AWS_XRAY_DAEMON_ADDRESS".into(),
                udp.local_addr().unwrap().to_string(),
            ),
            ("OTEL_XRAY_PROXY_PORT".into(), proxy_port.to_string()),
            ("OTEL_XRAY_HTTP_PORT".into(), http_port.to_string()),
            ("OTEL_XRAY_GRPC_PORT".into(), free_port().to_string()),
            ("OTEL_XRAY_TELEMETRY_PORT".into(), free_port().to_string()),
            ("OTEL_XRAY_LOG_LEVEL".into(), "debug".into()),
        ];
        env.extend(extra_env.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        let cfg = Config {
            extra_extensions: vec![PathBuf::from(env!("CARGO_BIN_EXE_otel-xray"))],
            // The runtime process only has to live; this test speaks the Runtime API for it.
            runtime_cmd: vec!["sleep".into(), "60".into()],
            env,
            active_tracing,
            function_name: "orders".into(),
            timeout: Duration::from_secs(2),
            eager_init: false,
            ..Config::default()
        };
        let proxy = SocketAddr::from(([127, 0, 0, 1], proxy_port));
        let (plans, plan_rx) = mpsc::unbounded_channel();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(runtime(proxy, http_port, plan_rx, seen_tx));
        let lambda = LocalLambda::start(cfg).await.unwrap();
        Sandbox {
            cold: None,
            inits: 0,
            lambda,
            udp,
            plans,
            seen,
            proxy,
        }
    }

    /// Invokes once; returns what the runtime saw, Lambda's result and the documents exported.
    async fn invoke(
        &mut self,
        event: Value,
        caller_header: Option<&str>,
        plan: Plan,
    ) -> (Seen, local_lambda::InvokeResult, Vec<Value>) {
        self.plans.send(plan).unwrap();
        let mut req = InvokeRequest::json(&event);
        if let Some(h) = caller_header {
            req = req.with_trace_header(h);
        }
        let result = self.lambda.invoke(req).await.unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), self.seen.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.request_id, result.request_id);
        let (trace, span, _) = parse_header(&seen.trace_header);
        if self.cold.is_none() {
            self.cold = Some((xray_trace(&trace), span));
        }
        let docs = self.documents().await;
        (seen, result, docs)
    }

    /// The nodes of `docs` without the cold start's `Init` span, which is checked here.
    fn nodes(&mut self, docs: &[Value]) -> Vec<Node> {
        let (init, rest): (Vec<Node>, Vec<Node>) = flatten(docs)
            .into_iter()
            .partition(|n| n.doc["name"] == "Init");
        let (trace, span) = self.cold.clone().unwrap();
        for n in &init {
            assert_eq!(n.trace_id, trace, "{n:?}");
            assert_eq!(n.parent.as_deref(), Some(span.as_str()), "{n:?}");
        }
        self.inits += init.len();
        rest
    }

    /// Every document the daemon stand-in received until it has been quiet for a while.
    async fn documents(&self) -> Vec<Value> {
        let mut docs = Vec::new();
        let mut buf = vec![0u8; 70_000];
        for _ in 0..1000 {
            match tokio::time::timeout(Duration::from_millis(300), self.udp.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let text = std::str::from_utf8(&buf[..n]).unwrap();
                    let (header, doc) = text.split_once('\n').unwrap();
                    assert_eq!(
                        serde_json::from_str::<Value>(header).unwrap(),
                        json!({"format": "json", "version": 1})
                    );
                    common::assert_valid_xray_document(doc);
                    docs.push(serde_json::from_str(doc).unwrap());
                }
                _ => break,
            }
        }
        docs
    }
}

/// The function's runtime: the Runtime API through the proxy, and an SDK's OTLP/JSON export.
async fn runtime(
    proxy: SocketAddr,
    otlp_port: u16,
    mut plans: mpsc::UnboundedReceiver<Plan>,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let http = client();
    // The wrapper's probe: wait until the proxy is up (bounded).
    let health = format!("http://{proxy}/otel-xray/health");
    let mut up = false;
    for _ in 0..400 {
        if let Ok(resp) = http.get(health.parse().unwrap()).await
            && resp.status() == 200
        {
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["name"], "otel-xray");
            assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "the proxy never answered its health path");
    let base = format!("http://{proxy}/2018-06-01/runtime/invocation");
    for _ in 0..50 {
        let resp = http
            .get(format!("{base}/next").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let request_id = header("lambda-runtime-aws-request-id").unwrap();
        let trace_header = header("lambda-runtime-trace-id").unwrap_or_default();
        assert!(header("lambda-runtime-deadline-ms").is_some());
        let _event = resp.into_body().collect().await.unwrap().to_bytes();
        let Some(plan) = plans.recv().await else {
            return;
        };
        seen.send(Seen {
            request_id: request_id.clone(),
            trace_header: trace_header.clone(),
        })
        .unwrap();
        let (trace, parent, sampled) = parse_header(&trace_header);
        if sampled && plan != Plan::Hang {
            export_sdk_spans(
                &http,
                otlp_port,
                &trace,
                &parent,
                &request_id,
                plan == Plan::RespondWithOwnServerSpan,
            )
            .await;
        }
        if let Plan::Stream(fail) = plan {
            post_streamed(&base, &request_id, fail).await;
            continue;
        }
        let (path, body, error_type) = match plan {
            Plan::Hang => return,
            Plan::Error => (
                "error",
                r#"{"errorMessage":"card declined","errorType":"PaymentError","stackTrace":[]}"#,
                Some("PaymentError"),
            ),
            _ => ("response", r#"{"ok":true}"#, None),
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("{base}/{request_id}/{path}"));
        if let Some(t) = error_type {
            req = req.header("Lambda-Runtime-Function-Error-Type", t);
        }
        let resp = http
            .request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
}

/// A streamed response as the runtimes send it: chunked, with the error in trailers.
async fn post_streamed(base: &str, request_id: &str, fail: bool) {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"first chunk,"))),
        Ok(Frame::data(Bytes::from_static(b"second chunk"))),
    ];
    if fail {
        let mut trailers = http::HeaderMap::new();
        trailers.insert(
            "lambda-runtime-function-error-type",
            "StreamBroke".parse().unwrap(),
        );
        trailers.insert(
            "lambda-runtime-function-error-body",
            "c3RyZWFtIGJyb2tl".parse().unwrap(),
        );
        frames.push(Ok(Frame::trailers(trailers)));
    }
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/{request_id}/response"))
        .header("Lambda-Runtime-Function-Response-Mode", "streaming")
        .header("Transfer-Encoding", "chunked")
        .header(
            "Trailer",
            "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
        )
        .body(body)
        .unwrap();
    let http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let resp = http.request(req).await.unwrap();
    assert_eq!(resp.status(), 202);
}

/// `Root=1-a-b;Parent=p;Sampled=s` → (32-hex trace id, parent, sampled).
fn parse_header(h: &str) -> (String, String, bool) {
    let field = |k: &str| {
        h.split(';')
            .find_map(|p| p.trim().strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .unwrap_or_default()
            .to_owned()
    };
    let root = field("Root");
    let trace = root.strip_prefix("1-").unwrap_or(&root).replace('-', "");
    (trace, field("Parent"), field("Sampled") == "1")
}

async fn export_sdk_spans(
    http: &HttpClient,
    port: u16,
    trace: &str,
    parent: &str,
    request_id: &str,
    own_server_span: bool,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut spans = Vec::new();
    let mut work_parent = parent.to_owned();
    if own_server_span {
        spans.push(json!({
            "traceId": trace, "spanId": "c1c1c1c1c1c1c1c1", "parentSpanId": parent,
            "name": "handler", "kind": 2,
            "startTimeUnixNano": (now - 3_000_000).to_string(), "endTimeUnixNano": now.to_string(),
            "attributes": [{"key": "faas.invocation_id", "value": {"stringValue": request_id}},
                           {"key": "faas.trigger", "value": {"stringValue": "other"}}]
        }));
        work_parent = "c1c1c1c1c1c1c1c1".into();
    }
    spans.push(json!({
        "traceId": trace, "spanId": "d2d2d2d2d2d2d2d2", "parentSpanId": work_parent,
        "name": "charge card", "kind": 1,
        "startTimeUnixNano": (now - 2_000_000).to_string(), "endTimeUnixNano": (now - 1_000_000).to_string()
    }));
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]},
        "scopeSpans": [{"scope": {"name": "test-sdk"}, "spans": spans}]
    }]});
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = http.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// One segment or subsegment, flattened out of the documents.
#[derive(Debug, Clone)]
struct Node {
    id: String,
    parent: Option<String>,
    trace_id: String,
    doc: Value,
}

fn flatten(docs: &[Value]) -> Vec<Node> {
    fn walk(v: &Value, parent: Option<String>, trace: &str, out: &mut Vec<Node>) {
        let id = v["id"].as_str().unwrap().to_owned();
        let parent = v["parent_id"].as_str().map(str::to_owned).or(parent);
        out.push(Node {
            id: id.clone(),
            parent,
            trace_id: trace.to_owned(),
            doc: v.clone(),
        });
        for sub in v["subsegments"].as_array().into_iter().flatten() {
            walk(sub, Some(id.clone()), trace, out);
        }
    }
    let mut out = Vec::new();
    for d in docs {
        walk(d, None, d["trace_id"].as_str().unwrap(), &mut out);
    }
    out
}

/// X-Ray's form of a 32-hex trace id.
fn xray_trace(hex32: &str) -> String {
    format!("1-{}-{}", &hex32[..8], &hex32[8..])
}

/// One trace, one entry node (whose parent is `external_parent`), no orphans; returns the
/// entry node (the invocation segment).
fn assert_one_connected_trace(nodes: &[Node], trace: &str, external_parent: Option<&str>) -> Node {
    assert!(!nodes.is_empty(), "no documents");
    for n in nodes {
        assert_eq!(n.trace_id, trace, "{n:?}");
    }
    let ids: HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids.len(), nodes.len(), "duplicate ids: {nodes:#?}");
    let entries: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.parent.as_deref().is_none_or(|p| !ids.contains(p)))
        .collect();
    assert_eq!(entries.len(), 1, "entries: {entries:#?}");
    assert_eq!(entries[0].parent.as_deref(), external_parent);
    entries[0].clone()
}

fn invocation_segments(nodes: &[Node], request_id: &str) -> Vec<Node> {
    nodes
        .iter()
        .filter(|n| {
            let attr = |k: &str| {
                n.doc["metadata"]["default"][k]
                    .as_str()
                    .or_else(|| n.doc["annotations"][k.replace('.', "_")].as_str())
                    .map(str::to_owned)
            };
            attr("faas.invocation_id").as_deref() == Some(request_id)
                || attr("faas.execution").as_deref() == Some(request_id)
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_shapes_without_active_tracing() {
    let _serial = SERIAL.lock().await;
    let mut sb = Sandbox::start(false, &[("OTEL_XRAY_BAGGAGE_ATTRIBUTES", "user.id")]).await;

    // 1. No context (direct invoke, PassThrough: Lambda's header says Sampled=0).
    let (seen, result, docs) = sb.invoke(json!({"order": 1}), None, Plan::Respond).await;
    assert_eq!(result.status, InvokeStatus::Success);
    let (lambda_trace, _, lambda_sampled) = parse_header(&result.trace_header);
    assert!(!lambda_sampled);
    let (trace, our_span, sampled) = parse_header(&seen.trace_header);
    assert!(sampled, "{}", seen.trace_header);
    assert_eq!(trace, lambda_trace, "Lambda's trace id is kept");
    let nodes = sb.nodes(&docs);
    let root = assert_one_connected_trace(&nodes, &xray_trace(&trace), None);
    assert_eq!(root.id, our_span);
    let inv = invocation_segments(&nodes, &seen.request_id);
    assert_eq!(inv.len(), 1, "exactly one invocation span: {nodes:#?}");
    assert_eq!(inv[0].doc["metadata"]["default"]["faas.trigger"], "other");
    assert_eq!(inv[0].doc["metadata"]["default"]["faas.coldstart"], true);
    assert!(
        nodes
            .iter()
            .any(|n| n.doc["name"] == "charge card"
                && n.parent.as_deref() == Some(our_span.as_str()))
    );

    // 3. API Gateway (REST) with traceparent and baggage.
    let tp_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let event = json!({"httpMethod": "POST", "path": "/orders", "requestContext": {"stage": "prod"},
        "headers": {"TraceParent": format!("00-{tp_trace}-00f067aa0ba902b7-01"), "baggage": "user.id=alice,secret=s3cr3t"}});
    let (seen, _, docs) = sb.invoke(event, None, Plan::Respond).await;
    let (trace, our_span, _) = parse_header(&seen.trace_header);
    assert_eq!(trace, tp_trace);
    let nodes = sb.nodes(&docs);
    let entry = assert_one_connected_trace(&nodes, &xray_trace(tp_trace), Some("00f067aa0ba902b7"));
    assert_eq!(entry.id, our_span);
    let md = &entry.doc["metadata"]["default"];
    assert_eq!(md["faas.trigger"], "http");
    assert_eq!(md["faas.coldstart"], false);
    assert_eq!(md["user.id"], "alice");
    assert_eq!(md["secret"], Value::Null);
    assert!(
        entry.doc["annotations"]["user_id"].is_null(),
        "baggage is never an annotation by default"
    );

    // 4. SQS batch: each message's AWSTraceHeader is a link, the invocation span a root.
    let rec = |n: u32| {
        json!({"eventSource": "aws:sqs", "messageId": n.to_string(), "body": "{}",
        "attributes": {"AWSTraceHeader": format!("Root=1-5759e988-bd862e3fe1be46a99427279{n};Parent=53995c3f42cd8ad{n};Sampled=1")}})
    };
    let (seen, result, docs) = sb
        .invoke(
            json!({"Records": [rec(1), rec(2), rec(3)]}),
            None,
            Plan::Respond,
        )
        .await;
    let (trace, our_span, _) = parse_header(&seen.trace_header);
    assert_eq!(trace, parse_header(&result.trace_header).0);
    let nodes = sb.nodes(&docs);
    let root = assert_one_connected_trace(&nodes, &xray_trace(&trace), None);
    assert_eq!(root.id, our_span);
    assert_eq!(root.doc["metadata"]["default"]["faas.trigger"], "pubsub");
    assert_eq!(
        root.doc["metadata"]["default"]["messaging.batch.message_count"],
        3
    );
    let links: Vec<&str> = root.doc["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        links,
        ["53995c3f42cd8ad1", "53995c3f42cd8ad2", "53995c3f42cd8ad3"],
        "one link per message"
    );

    // 5a. X-Amzn-Trace-Id with Sampled=0 in the event: nothing exported, the SDK told so too.
    let event = json!({"httpMethod": "GET", "requestContext": {}, "multiValueHeaders": {
        "x-amzn-trace-id": ["Root=1-67891233-abcdef012345678912345678;Parent=463ac35c9f6413ad;Sampled=0"]}});
    let (seen, _, docs) = sb.invoke(event, None, Plan::Respond).await;
    assert!(
        seen.trace_header.ends_with("Sampled=0"),
        "{}",
        seen.trace_header
    );
    assert!(docs.is_empty(), "{docs:#?}");

    // 5b. ALB: Root without Parent → same trace, the invocation span is the root.
    let event = json!({"requestContext": {"elb": {"targetGroupArn": "arn:aws:elasticloadbalancing:tg"}},
        "httpMethod": "GET", "headers": {"x-amzn-trace-id": "Root=1-67891233-abcdef012345678912345679"}});
    let (seen, _, docs) = sb.invoke(event, None, Plan::Respond).await;
    let (trace, our_span, sampled) = parse_header(&seen.trace_header);
    assert!(sampled);
    assert_eq!(trace, "67891233abcdef012345678912345679");
    let nodes = sb.nodes(&docs);
    let root = assert_one_connected_trace(&nodes, "1-67891233-abcdef012345678912345679", None);
    assert_eq!(root.id, our_span);

    // An invocation error: the segment is a fault with the error type.
    let (seen, result, docs) = sb.invoke(json!({}), None, Plan::Error).await;
    assert_eq!(result.status, InvokeStatus::Error);
    let nodes = sb.nodes(&docs);
    let (trace, _, _) = parse_header(&seen.trace_header);
    let root = assert_one_connected_trace(&nodes, &xray_trace(&trace), None);
    assert_eq!(root.doc["fault"], true);
    assert_eq!(
        root.doc["metadata"]["default"]["error.type"],
        "PaymentError"
    );

    // A timeout: the runtime never answers; the invocation span still arrives, as a fault.
    let (seen, result, docs) = sb.invoke(json!({}), None, Plan::Hang).await;
    assert_eq!(result.status, InvokeStatus::Timeout);
    let nodes = sb.nodes(&docs);
    let inv = invocation_segments(&nodes, &seen.request_id);
    assert_eq!(inv.len(), 1, "{nodes:#?}");
    assert_eq!(inv[0].doc["fault"], true);
    assert_eq!(
        sb.inits, 1,
        "one Init span, under the cold start's invocation span"
    );
    let _ = sb.lambda.shutdown().await;
    let _ = sb.proxy;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_tracing_and_the_functions_own_invocation_span() {
    let _serial = SERIAL.lock().await;
    let mut sb = Sandbox::start(true, &[]).await;

    // 2. Active tracing: everything under Lambda's function segment.
    let caller = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1";
    let (seen, result, docs) = sb.invoke(json!({}), Some(caller), Plan::Respond).await;
    let (lambda_trace, function_segment, sampled) = parse_header(&result.trace_header);
    assert!(sampled);
    let (trace, our_span, _) = parse_header(&seen.trace_header);
    assert_eq!(trace, lambda_trace);
    assert!(
        seen.trace_header.contains("Lineage=a87bd80c:1"),
        "{}",
        seen.trace_header
    );
    let nodes = sb.nodes(&docs);
    let entry = assert_one_connected_trace(&nodes, &xray_trace(&trace), Some(&function_segment));
    assert_eq!(entry.id, our_span);
    // The platform spans made no second invocation span; Init hangs under ours.
    assert_eq!(
        invocation_segments(&nodes, &seen.request_id).len(),
        1,
        "{nodes:#?}"
    );

    // The function's instrumentation made its own FaaS SERVER span (child of ours): it takes
    // our place, exactly one invocation span remains, its work stays under it.
    let (seen, result, docs) = sb
        .invoke(json!({}), Some(caller), Plan::RespondWithOwnServerSpan)
        .await;
    let (_, function_segment, _) = parse_header(&result.trace_header);
    let (trace, _, _) = parse_header(&seen.trace_header);
    let nodes = sb.nodes(&docs);
    let entry = assert_one_connected_trace(&nodes, &xray_trace(&trace), Some(&function_segment));
    assert_eq!(entry.id, "c1c1c1c1c1c1c1c1", "{nodes:#?}");
    let inv = invocation_segments(&nodes, &seen.request_id);
    assert_eq!(inv.len(), 1, "{nodes:#?}");
    assert_eq!(
        inv[0].doc["metadata"]["default"]["cloud.account.id"],
        "123456789012"
    );
    assert!(
        nodes
            .iter()
            .any(|n| n.doc["name"] == "charge card"
                && n.parent.as_deref() == Some("c1c1c1c1c1c1c1c1"))
    );
    assert_eq!(
        sb.inits, 1,
        "one Init span, under the cold start's invocation span"
    );
    let _ = sb.lambda.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_responses_and_their_error_trailers_pass_through() {
    let _serial = SERIAL.lock().await;
    let mut sb = Sandbox::start(false, &[]).await;
    let (seen, result, docs) = sb.invoke(json!({}), None, Plan::Stream(false)).await;
    assert_eq!(result.status, InvokeStatus::Success);
    assert_eq!(
        result.response.as_deref(),
        Some(&b"first chunk,second chunk"[..])
    );
    let nodes = sb.nodes(&docs);
    let inv = invocation_segments(&nodes, &seen.request_id);
    assert_eq!(inv.len(), 1);
    assert!(inv[0].doc["fault"].is_null(), "{:?}", inv[0].doc);

    let (seen, result, docs) = sb.invoke(json!({}), None, Plan::Stream(true)).await;
    // Lambda read the trailers the runtime sent through the proxy.
    assert_eq!(result.status, InvokeStatus::Error);
    assert_eq!(result.error.as_ref().unwrap().error_type, "StreamBroke");
    let nodes = sb.nodes(&docs);
    let inv = invocation_segments(&nodes, &seen.request_id);
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].doc["fault"], true);
    assert_eq!(
        inv[0].doc["metadata"]["default"]["error.type"],
        "StreamBroke"
    );
    let _ = sb.lambda.shutdown().await;
}
