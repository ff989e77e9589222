//! The lifecycle on Lambda Managed Instances (`AWS_LAMBDA_INITIALIZATION_TYPE=
//! lambda-managed-instances`), run in-process against the fake Lambda API, which refuses an
//! `INVOKE` registration as Managed Instances do and serves the Runtime API to several
//! runtime workers at once: SHUTDOWN-only registration, schema 2025-01-29, background flushes
//! while `event/next` is outstanding, one span per concurrent request with no cross-talk,
//! timeouts ended by the background tick, exact accounting at SHUTDOWN.

// Test helpers outside #[test] functions panic on broken expectations too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lifecycle_support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lifecycle_support::{FakeLambda, Invocation, config, options, sdk_batch};
use otel_xray::config::Config;
use otel_xray::lifecycle::{Exit, RunSummary, run};
use tokio::net::UdpSocket;
use tokio::sync::Barrier;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

/// A Managed Instances configuration whose daemon exporter points at a UDP socket, flushing in
/// the background every 50 ms.
async fn lmi_config(fake: SocketAddr) -> (Config, UdpSocket) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap().to_string();
    let config = config(
        fake,
        &[
            ("AWS_XRAY_DAEMON_ADDRESS", addr.as_str()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances"),
            ("AWS_LAMBDA_MAX_CONCURRENCY", "16"),
            ("OTEL_XRAY_FLUSH", "periodic,50"),
        ],
    );
    assert!(config.managed_instances);
    (config, udp)
}

/// Every document the daemon socket receives within `within`, parsed.
async fn documents(udp: &UdpSocket, want: usize, within: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    let mut docs = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while docs.len() < want {
        let Ok(Ok(n)) = tokio::time::timeout_at(deadline, udp.recv(&mut buf)).await else {
            break;
        };
        let datagram = std::str::from_utf8(&buf[..n]).unwrap();
        let (header, doc) = datagram.split_once('\n').unwrap();
        assert_eq!(header, r#"{"format": "json", "version": 1}"#);
        docs.push(serde_json::from_str(doc).unwrap());
    }
    docs
}

fn check_accounting(summary: &RunSummary) {
    let s = &summary.stats;
    assert_eq!(s.exported + s.dropped_total(), s.received, "{s}");
    assert_eq!(s.in_flight(), 0, "{s}");
}

#[tokio::test]
async fn registers_for_shutdown_only_and_flushes_while_event_next_is_outstanding() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    fake.refuse_invoke_registration();
    let (config, udp) = lmi_config(fake.addr).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let reg = &fake.requests_to("/2020-01-01/extension/register")[0];
        assert_eq!(reg.json(), serde_json::json!({"events": ["SHUTDOWN"]}));
        let sub = &fake.requests_to("/2022-07-01/telemetry")[0];
        assert_eq!(sub.json()["schemaVersion"], "2025-01-29");
        assert!(ready.telemetry_subscribed);
        // event/next is outstanding for the whole life of the environment.
        let next = fake.next_call(5 * SECOND).await;
        ready.buffer.push(sdk_batch(3)).await.unwrap();
        let docs = documents(&udp, 3, 5 * SECOND).await;
        assert_eq!(docs.len(), 3, "the background flush sent {docs:?}");
        for d in &docs {
            assert_eq!(d["trace_id"], "1-66432ccf-5e8a4b7c9d0e1f2a3b4c5d6e");
        }
        assert_eq!(ready.stats.snapshot().exported, 3);
        // More spans later: flushed again, without any INVOKE.
        ready.buffer.push(sdk_batch(2)).await.unwrap();
        assert_eq!(documents(&udp, 2, 5 * SECOND).await.len(), 2);
        next.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    assert_eq!(summary.invocations, 0);
    assert_eq!(summary.stats.received, 5);
    assert_eq!(summary.stats.exported, 5);
    check_accounting(&summary);
    assert!(
        fake.requests_to("/2020-01-01/extension/init/error")
            .is_empty()
    );
}

/// What one runtime worker saw of its invocation.
#[derive(Debug)]
struct Seen {
    request_id: String,
    trace_header: String,
    tenant_id: Option<String>,
}

async fn get_next(client: &Client<HttpConnector, Full<Bytes>>, proxy: SocketAddr) -> Seen {
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{proxy}/2018-06-01/runtime/invocation/next"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let seen = Seen {
        request_id: h("lambda-runtime-aws-request-id").unwrap(),
        trace_header: h("lambda-runtime-trace-id").unwrap(),
        tenant_id: h("lambda-runtime-aws-tenant-id"),
    };
    resp.into_body().collect().await.unwrap();
    seen
}

async fn post_response(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    request_id: &str,
) -> StatusCode {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!(
            "http://{proxy}/2018-06-01/runtime/invocation/{request_id}/response"
        ))
        .body(Full::new(Bytes::from_static(b"{\"ok\":true}")))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    status
}

fn header_part<'a>(header: &'a str, key: &str) -> &'a str {
    header
        .split(';')
        .find_map(|p| p.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .unwrap_or("")
}

#[tokio::test]
async fn concurrent_invocations_each_get_their_own_span_and_header() {
    const WORKERS: usize = 8;
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    fake.refuse_invoke_registration();
    let (config, udp) = lmi_config(fake.addr).await;
    let (options, ready_rx, _) = options();
    let mut roots = HashMap::new();
    for i in 0..WORKERS {
        let request_id = format!("req-{i}");
        let root = format!("1-66432cd{i}-5e8a4b7c9d0e1f2a3b4c5d{i:02x}");
        roots.insert(request_id.clone(), root.clone());
        fake.queue_invocation(Invocation {
            request_id,
            trace_header: Some(format!("Root={root};Parent=7a8b9c0d1e2f3a4{i};Sampled=1")),
            tenant_id: (i == 3).then(|| "tenant-blue".to_owned()),
            deadline_in: 30 * SECOND,
            event: serde_json::json!({"n": i}),
        });
    }
    let script = async {
        let ready = ready_rx.await.unwrap();
        let proxy = ready.proxy_addr.expect("the proxy listens");
        let next = fake.next_call(5 * SECOND).await;
        // Every worker holds its invocation before any answers: they really overlap.
        let barrier = Arc::new(Barrier::new(WORKERS));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..WORKERS {
            let barrier = Arc::clone(&barrier);
            workers.spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
                let seen = get_next(&client, proxy).await;
                barrier.wait().await;
                let answered = Instant::now();
                assert_eq!(
                    post_response(&client, proxy, &seen.request_id).await,
                    StatusCode::ACCEPTED
                );
                (seen, answered.elapsed())
            });
        }
        let mut seen = Vec::new();
        while let Some(r) = workers.join_next().await {
            seen.push(r.unwrap());
        }
        assert_eq!(seen.len(), WORKERS);
        let docs = documents(&udp, WORKERS, 5 * SECOND).await;
        assert_eq!(docs.len(), WORKERS, "{docs:?}");
        let by_id: HashMap<String, &serde_json::Value> = docs
            .iter()
            .map(|d| (d["id"].as_str().unwrap().to_owned(), d))
            .collect();
        for (s, answer_took) in &seen {
            // The runtime's answer is not held for an event/next that Managed Instances lack.
            assert!(
                *answer_took < Duration::from_millis(90),
                "{}: the response took {answer_took:?}",
                s.request_id
            );
            let root = &roots[&s.request_id];
            assert_eq!(header_part(&s.trace_header, "Root"), root);
            assert_eq!(header_part(&s.trace_header, "Sampled"), "1");
            let parent = header_part(&s.trace_header, "Parent");
            let doc = by_id
                .get(parent)
                .unwrap_or_else(|| panic!("no document for {} (parent {parent})", s.request_id));
            assert_eq!(doc["trace_id"], root.as_str(), "{doc}");
            // Ended by its own response: none was taken for abandoned by another's /next.
            assert!(
                doc.get("fault").is_none() && doc.get("error").is_none(),
                "{doc}"
            );
            let text = doc.to_string();
            assert!(text.contains(&s.request_id), "{doc}");
            for other in roots.keys().filter(|k| **k != s.request_id) {
                assert!(
                    !text.contains(&format!("\"{other}\"")),
                    "{other} leaked into {doc}"
                );
            }
            assert_eq!(
                s.tenant_id.as_deref() == Some("tenant-blue"),
                text.contains("tenant-blue")
            );
        }
        next.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    assert_eq!(summary.stats.received, WORKERS as u64);
    assert_eq!(summary.stats.exported, WORKERS as u64);
    check_accounting(&summary);
}

#[tokio::test]
async fn an_invocation_past_its_deadline_is_ended_as_a_timeout_in_the_background() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    fake.refuse_invoke_registration();
    let (config, udp) = lmi_config(fake.addr).await;
    let (options, ready_rx, _) = options();
    fake.queue_invocation(Invocation {
        request_id: "req-stuck".into(),
        trace_header: Some(
            "Root=1-66432ccf-5e8a4b7c9d0e1f2a3b4c5d6e;Parent=7a8b9c0d1e2f3a4b;Sampled=1".into(),
        ),
        tenant_id: None,
        deadline_in: Duration::from_millis(100),
        event: serde_json::json!({}),
    });
    let script = async {
        let ready = ready_rx.await.unwrap();
        let proxy = ready.proxy_addr.unwrap();
        let next = fake.next_call(5 * SECOND).await;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let seen = get_next(&client, proxy).await;
        assert_eq!(seen.request_id, "req-stuck");
        // The runtime never answers; the deadline passes (plus the 200 ms margin).
        let docs = documents(&udp, 1, 5 * SECOND).await;
        assert_eq!(docs.len(), 1);
        let doc = &docs[0];
        assert_eq!(doc["id"], header_part(&seen.trace_header, "Parent"));
        assert_eq!(doc["fault"], true, "{doc}");
        assert!(doc.to_string().contains("timeout"), "{doc}");
        next.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    assert_eq!(summary.stats.received, 1);
    assert_eq!(summary.stats.exported, 1);
    check_accounting(&summary);
}

#[tokio::test]
async fn spans_left_at_shutdown_are_flushed_within_its_deadline() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    fake.refuse_invoke_registration();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap().to_string();
    // A background period far longer than the test: only SHUTDOWN can flush.
    let config = config(
        fake.addr,
        &[
            ("AWS_XRAY_DAEMON_ADDRESS", addr.as_str()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances"),
            ("OTEL_XRAY_FLUSH", "periodic,600000"),
        ],
    );
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let next = fake.next_call(5 * SECOND).await;
        ready.buffer.push(sdk_batch(4)).await.unwrap();
        next.shutdown("spindown", 2 * SECOND);
    };
    let started = Instant::now();
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert!(started.elapsed() < 2 * SECOND, "{:?}", started.elapsed());
    assert_eq!(summary.stats.received, 4);
    assert_eq!(summary.stats.exported, 4);
    check_accounting(&summary);
    assert_eq!(documents(&udp, 4, SECOND).await.len(), 4);
}

/// The function's own FaaS SERVER span for a request, as an SDK exports it before its handler
/// returns: under the proxy's span, `faas.invocation_id` = the request id.
fn function_server_span(trace_header: &str, request_id: &str) -> otel_xray::buffer::SpanBatch {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let root = header_part(trace_header, "Root").replace('-', "");
    let trace_id = hex(&root[1..]);
    let parent = hex(header_part(trace_header, "Parent"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    otel_xray::buffer::SpanBatch::new(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id,
                span_id: vec![9, 8, 7, 6, 5, 4, 3, 2],
                parent_span_id: parent,
                name: "handler".into(),
                kind: 2,
                start_time_unix_nano: now - 1_000_000,
                end_time_unix_nano: now,
                attributes: vec![KeyValue {
                    key: "faas.invocation_id".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(request_id.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }])
}

#[tokio::test]
async fn the_functions_own_span_replaces_the_proxys_across_background_flushes() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    fake.refuse_invoke_registration();
    let (config, udp) = lmi_config(fake.addr).await;
    let (options, ready_rx, _) = options();
    fake.queue_invocation(Invocation {
        request_id: "req-m".into(),
        trace_header: Some(
            "Root=1-66432ccf-5e8a4b7c9d0e1f2a3b4c5d6e;Parent=7a8b9c0d1e2f3a4b;Sampled=1".into(),
        ),
        tenant_id: None,
        deadline_in: 30 * SECOND,
        event: serde_json::json!({}),
    });
    let script = async {
        let ready = ready_rx.await.unwrap();
        let proxy = ready.proxy_addr.unwrap();
        let next = fake.next_call(5 * SECOND).await;
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let seen = get_next(&client, proxy).await;
        // The SDK exports the handler's span, then the handler goes on for several background
        // flush periods (50 ms) before it answers.
        ready
            .buffer
            .push(function_server_span(&seen.trace_header, "req-m"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            post_response(&client, proxy, "req-m").await,
            StatusCode::ACCEPTED
        );
        let docs = documents(&udp, 2, 2 * SECOND).await;
        // One invocation span: the function's, in the proxy's place (its parent the caller's).
        assert_eq!(docs.len(), 1, "{docs:?}");
        assert_eq!(docs[0]["id"], "0908070605040302", "{}", docs[0]);
        assert_eq!(docs[0]["parent_id"], "7a8b9c0d1e2f3a4b", "{}", docs[0]);
        next.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    check_accounting(&summary);
}
