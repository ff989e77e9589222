//! A bug costs one request or one batch, never the process: panics injected (feature
//! `fault-injection`, which `make test` turns on) while decoding a request, translating a batch,
//! reading an invocation's event and reading a Telemetry API delivery. Each check sends one
//! marked piece of work between clean ones, and asserts what was counted, what still arrived and
//! that the extension goes on serving.
#![cfg(feature = "fault-injection")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lifecycle_support;
mod receiver_support;

use std::time::Duration;

use http::StatusCode;
use lifecycle_support::{FakeLambda, Invocation, config, options};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use otel_xray::config::Config;
use otel_xray::export::Exporter;
use otel_xray::lifecycle::{Exit, run};
use otel_xray::stats::{DropReason, RejectReason, Stats};
use prost::Message;
use receiver_support::{Harness, Http1, full, post, sample_request};
use tokio::net::UdpSocket;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);
const PROTOBUF: &str = "application/x-protobuf";

fn marked(point: &str, spans: usize) -> ExportTraceServiceRequest {
    let mut req = sample_request("marked", spans);
    req.resource_spans[0].scope_spans[0].spans[0].name = format!("otel-xray-inject-panic:{point}");
    req
}

#[tokio::test]
async fn a_panic_while_decoding_costs_that_request_only() {
    let h = Harness::start(1024 * 1024, 1000);
    let mut c = Http1::connect(h.http).await;
    let good = |tag: &str| {
        post(
            "/v1/traces",
            Some(PROTOBUF),
            None,
            full(sample_request(tag, 2).encode_to_vec()),
        )
    };
    assert_eq!(c.send(good("before")).await.status, 200);
    let bad = post(
        "/v1/traces",
        Some(PROTOBUF),
        None,
        full(marked("receiver", 3).encode_to_vec()),
    );
    let reply = c.send(bad).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(c.send(good("after")).await.status, 200);
    let snap = h.stats.snapshot();
    let internal = snap
        .requests_rejected
        .iter()
        .find(|(r, _)| *r == RejectReason::Internal)
        .unwrap()
        .1;
    assert_eq!(internal, 1);
    assert_eq!(snap.received, 4, "{snap}");
    assert_eq!(h.drain().await.spans, 4);
}

#[tokio::test]
async fn a_panic_while_translating_costs_that_request_only() {
    let daemon = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = daemon.local_addr().unwrap().to_string();
    let (config, _) = Config::from_lookup(|k| match k {
        "AWS_XRAY_DAEMON_ADDRESS" => Some(addr.clone()),
        _ => None,
    })
    .unwrap();
    let exporter = Exporter::from_config(&config).unwrap();
    // Three requests in one flush; the middle one makes the translator panic.
    let (buffer, _task) = otel_xray::buffer::spawn(1000, std::sync::Arc::new(Stats::default()));
    for req in [
        sample_request("a", 2),
        marked("translate", 3),
        sample_request("c", 2),
    ] {
        buffer
            .push(otel_xray::buffer::SpanBatch::new(req.resource_spans))
            .await
            .unwrap();
    }
    let batch = buffer.drain().await.unwrap();
    assert_eq!(batch.spans, 7);
    let report = exporter.export(batch, Instant::now() + 2 * SECOND).await;
    assert_eq!(report.exported, 4, "{report:?}");
    assert_eq!(report.dropped(DropReason::Internal), 3, "{report:?}");
    let mut buf = vec![0u8; 65_536];
    let mut docs = 0;
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(300), daemon.recv(&mut buf)).await
    {
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(!text.contains("otel-xray-inject-panic"), "{text}");
        docs += 1;
    }
    assert!(docs > 0);
}

#[tokio::test]
async fn panics_reading_an_event_or_a_telemetry_delivery_cost_only_that() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    fake.refuse_invoke_registration();
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap().to_string();
    let config = config(
        fake.addr,
        &[
            ("AWS_XRAY_DAEMON_ADDRESS", addr.as_str()),
            ("AWS_LAMBDA_INITIALIZATION_TYPE", "lambda-managed-instances"),
            ("OTEL_XRAY_FLUSH", "periodic,50"),
        ],
    );
    let lambda_header =
        "Root=1-66432ccf-5e8a4b7c9d0e1f2a3b4c5d6e;Parent=7a8b9c0d1e2f3a4b;Sampled=1";
    for (id, event) in [
        (
            "req-bad",
            serde_json::json!({"note": "otel-xray-inject-panic:proxy"}),
        ),
        ("req-good", serde_json::json!({"note": "fine"})),
    ] {
        fake.queue_invocation(Invocation {
            request_id: id.into(),
            trace_header: Some(lambda_header.into()),
            tenant_id: None,
            deadline_in: 30 * SECOND,
            event,
        });
    }
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let proxy = ready.proxy_addr.unwrap();
        let next = fake.next_call(5 * SECOND).await;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        for (id, rewritten) in [("req-bad", false), ("req-good", true)] {
            let req =
                http::Request::get(format!("http://{proxy}/2018-06-01/runtime/invocation/next"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
            let resp = client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let header = resp.headers()["lambda-runtime-trace-id"]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(resp.headers()["lambda-runtime-aws-request-id"], id);
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            // The runtime always gets its event; only the span is lost for the bad one.
            assert!(!body.is_empty());
            assert_eq!(header != lambda_header, rewritten, "{id}: {header}");
        }
        // A Telemetry delivery that makes the parser panic is taken (no retry loop), then the
        // next one is read as usual.
        let url = fake.telemetry_url();
        let bad = r#"[{"time":"2026-12-06T00:00:00Z","type":"platform.start","record":{"requestId":"otel-xray-inject-panic:telemetry"}}]"#;
        assert_eq!(lifecycle_support::post(&url, bad).await, StatusCode::OK);
        let good = r#"[{"time":"2026-12-06T00:00:00Z","type":"platform.start","record":{"requestId":"x"}}]"#;
        assert_eq!(lifecycle_support::post(&url, good).await, StatusCode::OK);
        next.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    assert_eq!(
        summary.telemetry.malformed_batches, 1,
        "{:?}",
        summary.telemetry
    );
    assert!(summary.telemetry.batches >= 1, "{:?}", summary.telemetry);
    // Only the good request's span was made, still open at SHUTDOWN: ended and exported.
    let s = &summary.stats;
    assert_eq!(s.received, 1, "{s}");
    assert_eq!(s.exported + s.dropped_total(), s.received, "{s}");
}
