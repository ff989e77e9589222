//! Telemetry API: every documented event type parses from AWS-shaped fixtures, unknown types
//! stay raw, malformed deliveries are refused (400) and counted by a real listener, and
//! fixture events become the expected platform spans.

// Test helpers outside #[test] functions panic on broken expectations too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lifecycle_support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use otel_xray::lambda::platform_spans::{FunctionInfo, PlatformSpans};
use otel_xray::lambda::telemetry::{
    self, Status, TelemetryCounters, TelemetryEvent, TelemetryRecord, parse_batch,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Every `type` the Telemetry API documents.
const DOCUMENTED: [&str; 14] = [
    "platform.initStart",
    "platform.initRuntimeDone",
    "platform.initReport",
    "platform.start",
    "platform.runtimeDone",
    "platform.report",
    "platform.restoreStart",
    "platform.restoreRuntimeDone",
    "platform.restoreReport",
    "platform.extension",
    "platform.telemetrySubscription",
    "platform.logsDropped",
    "function",
    "extension",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/telemetry")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

fn parse_fixture(name: &str) -> Vec<TelemetryEvent> {
    parse_batch(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn there_is_a_fixture_for_every_documented_type() {
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let raw: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            for e in raw.as_array().unwrap() {
                seen.insert(e["type"].as_str().unwrap().to_owned());
            }
        }
    }
    for t in DOCUMENTED {
        assert!(seen.contains(t), "no fixture for {t}");
    }
}

#[test]
fn every_documented_type_parses_into_its_typed_record() {
    for t in DOCUMENTED {
        let events = parse_fixture(&format!("{t}.json"));
        assert!(!events.is_empty(), "{t}");
        for e in &events {
            assert!(
                !matches!(
                    e.record,
                    TelemetryRecord::Unknown { .. } | TelemetryRecord::Invalid { .. }
                ),
                "{t}: {:?}",
                e.record
            );
            assert!(e.time_unix_nano().is_some(), "{t}: time {}", e.time);
        }
    }
}

#[test]
fn fields_of_each_type() {
    let e = parse_fixture("platform.initStart.json");
    let TelemetryRecord::InitStart(r) = &e[0].record else {
        panic!()
    };
    assert_eq!(r.initialization_type, "on-demand");
    assert_eq!(r.phase, "init");
    assert_eq!(r.runtime_version.as_deref(), Some("python:3.12.v27"));
    assert_eq!(r.function_name.as_deref(), Some("orders"));

    let e = parse_fixture("platform.initRuntimeDone.json");
    let TelemetryRecord::InitRuntimeDone(ok) = &e[0].record else {
        panic!()
    };
    assert_eq!(ok.status, Status::Success);
    assert_eq!(ok.spans[0].name, "someTimeSpan");
    let TelemetryRecord::InitRuntimeDone(failed) = &e[1].record else {
        panic!()
    };
    assert_eq!(failed.status, Status::Error);
    assert_eq!(failed.phase.as_deref(), Some("invoke"));
    assert_eq!(failed.error_type.as_deref(), Some("Runtime.ExitError"));

    let e = parse_fixture("platform.initReport.json");
    let TelemetryRecord::InitReport(r) = &e[0].record else {
        panic!()
    };
    assert!((r.metrics.duration_ms - 492.71).abs() < 1e-9);
    assert_eq!(r.status, Some(Status::Success));

    let e = parse_fixture("platform.start.json");
    let TelemetryRecord::Start(r) = &e[0].record else {
        panic!()
    };
    assert_eq!(r.request_id, "8f2c4a0e-55d1-4c39-9a6b-3f0e7d9a1b2c");
    let tracing = r.tracing.as_ref().unwrap();
    assert_eq!(tracing.span_id.as_deref(), Some("3c6d1e2f4a5b6c7d"));
    assert_eq!(tracing.kind, "X-Amzn-Trace-Id");

    let e = parse_fixture("platform.runtimeDone.json");
    let TelemetryRecord::RuntimeDone(r) = &e[0].record else {
        panic!()
    };
    assert_eq!(r.status, Status::Success);
    assert_eq!(r.metrics.as_ref().unwrap().produced_bytes, Some(53));
    assert_eq!(r.spans.len(), 3);
    let TelemetryRecord::RuntimeDone(r) = &e[1].record else {
        panic!()
    };
    assert_eq!(r.error_type.as_deref(), Some("Runtime.HandlerError"));
    assert!(r.tracing.is_none());

    let e = parse_fixture("platform.report.json");
    let TelemetryRecord::Report(r) = &e[0].record else {
        panic!()
    };
    assert_eq!(r.metrics.memory_size_mb, 128);
    assert_eq!(r.metrics.max_memory_used_mb, 71);
    assert_eq!(r.metrics.init_duration_ms, Some(492.71));
    assert_eq!(r.metrics.restore_duration_ms, None);

    let e = parse_fixture("platform.restoreStart.json");
    let TelemetryRecord::RestoreStart(r) = &e[0].record else {
        panic!()
    };
    assert_eq!(r.function_version.as_deref(), Some("7"));
    let e = parse_fixture("platform.restoreRuntimeDone.json");
    assert!(
        matches!(&e[0].record, TelemetryRecord::RestoreRuntimeDone(d) if d.status.is_success())
    );
    let e = parse_fixture("platform.restoreReport.json");
    assert!(
        matches!(&e[0].record, TelemetryRecord::RestoreReport(r) if (r.metrics.duration_ms - 217.5).abs() < 1e-9)
    );

    let e = parse_fixture("platform.extension.json");
    let TelemetryRecord::Extension(r) = &e[0].record else {
        panic!()
    };
    assert_eq!(r.events, ["INVOKE", "SHUTDOWN"]);
    let e = parse_fixture("platform.telemetrySubscription.json");
    let TelemetryRecord::TelemetrySubscription(r) = &e[0].record else {
        panic!()
    };
    assert_eq!(r.state, "Subscribed");
    let e = parse_fixture("platform.logsDropped.json");
    let TelemetryRecord::LogsDropped(r) = &e[0].record else {
        panic!()
    };
    assert_eq!((r.dropped_records, r.dropped_bytes), (123, 12345));

    let e = parse_fixture("function.json");
    assert!(matches!(&e[0].record, TelemetryRecord::FunctionLog(v) if v.is_string()));
    assert!(matches!(&e[1].record, TelemetryRecord::FunctionLog(v) if v["level"] == "INFO"));
    let e = parse_fixture("extension.json");
    assert!(matches!(&e[0].record, TelemetryRecord::ExtensionLog(v) if v.is_string()));
}

#[test]
fn unknown_types_are_kept_raw() {
    let e = parse_fixture("unknown.json");
    match &e[0].record {
        TelemetryRecord::Unknown { event_type, record } => {
            assert_eq!(event_type, "platform.somethingAwsAddsLater");
            assert_eq!(record["nested"]["list"][1], "two");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &e[1].record,
        TelemetryRecord::Invalid { event_type, .. } if event_type == "platform.runtimeDone"
    ));
}

#[test]
fn malformed_fixtures_are_errors() {
    let mut n = 0;
    for entry in std::fs::read_dir(fixtures().join("malformed")).unwrap() {
        let path = entry.unwrap().path();
        assert!(
            parse_batch(&std::fs::read(&path).unwrap()).is_err(),
            "{}",
            path.display()
        );
        n += 1;
    }
    assert!(n >= 5);
}

#[test]
fn fixture_events_become_the_expected_invocation_span() {
    let mut b = PlatformSpans::new(FunctionInfo {
        function_name: "orders".into(),
        function_version: "$LATEST".into(),
        account_id: Some("123456789012".into()),
        region: Some("eu-west-1".into()),
        ..Default::default()
    });
    let mut spans = Vec::new();
    for name in [
        "platform.initStart.json",
        "platform.initRuntimeDone.json",
        "platform.initReport.json",
        "platform.start.json",
        "platform.runtimeDone.json",
        "platform.report.json",
        // Lambda retries deliveries: the same events again change nothing.
        "platform.start.json",
        "platform.runtimeDone.json",
        "platform.report.json",
    ] {
        for e in parse_fixture(name) {
            b.on_event(&e, 0, &mut spans);
        }
    }
    // The fixture's runtimeDone holds two requests (success and a handler error), and the
    // cold start brings the Init span.
    let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["orders", "Init", "orders"], "{names:?}");
    let inv = &spans[0];
    assert_eq!(hex(&inv.trace_id), "66432ccf5e8a4b7c9d0e1f2a3b4c5d6e");
    assert_eq!(hex(&inv.parent_span_id), "7a8b9c0d1e2f3a4b");
    assert_eq!(hex(&inv.span_id), "3c6d1e2f4a5b6c7d");
    assert_eq!(inv.kind, SpanKind::Server as i32);
    assert_eq!(
        inv.end_time_unix_nano - inv.start_time_unix_nano,
        265_000_000
    );
    let coldstart = inv
        .attributes
        .iter()
        .find(|kv| kv.key == "faas.coldstart")
        .and_then(|kv| kv.value.as_ref()?.value.clone());
    assert_eq!(coldstart, Some(any_value::Value::BoolValue(true)));
    let init = &spans[1];
    assert_eq!(init.parent_span_id, inv.span_id);
    assert_eq!(init.trace_id, inv.trace_id);
    assert_eq!(
        init.end_time_unix_nano - init.start_time_unix_nano,
        492_000_000
    );
    // The failed request, with no tracing anywhere, is a root span with an error status.
    let failed = &spans[2];
    assert!(failed.parent_span_id.is_empty());
    assert_eq!(
        failed.status.as_ref().unwrap().message,
        "Runtime.HandlerError"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A Telemetry API listener on 127.0.0.1, served into a channel: its URL, the lifecycle's end of
/// the channel, the counters, and what stops it.
struct Served {
    url: String,
    rx: mpsc::Receiver<telemetry::Delivery>,
    counters: Arc<TelemetryCounters>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

async fn serve_listener() -> Served {
    let listener = telemetry::bind_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
        .await
        .unwrap();
    let url = format!("http://{}/", listener.local_addr());
    let counters = Arc::new(TelemetryCounters::default());
    let (tx, rx) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    listener.serve(tx, Arc::clone(&counters), cancel.clone(), &mut tasks);
    Served {
        url,
        rx,
        counters,
        cancel,
        tasks,
    }
}

/// The answer to a delivery carrying `platform.runtimeDone` waits until the lifecycle drops
/// its hold (or `invocation::ANSWER_HOLD_MAX` passes); other deliveries are answered at once.
#[tokio::test]
async fn a_runtime_done_delivery_is_answered_when_its_hold_is_dropped() {
    let Served {
        url,
        mut rx,
        cancel,
        tasks: _serving,
        ..
    } = serve_listener().await;
    let post = |name: &str| {
        let (url, body) = (url.clone(), fixture(name));
        tokio::spawn(async move { lifecycle_support::post(&url, body).await })
    };
    let recv = async |rx: &mut mpsc::Receiver<_>| {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap()
    };

    // Held while the hold lives, answered once it is dropped.
    let answer = post("platform.runtimeDone.json");
    let delivery: telemetry::Delivery = recv(&mut rx).await;
    assert!(delivery.hold.is_some());
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(!answer.is_finished(), "answered while held");
    drop(delivery);
    let status = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    // No runtimeDone, no hold: answered before the delivery is even taken.
    let answer = post("platform.start.json");
    let status = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(recv(&mut rx).await.hold.is_none());

    // A hold nobody drops is let go after ANSWER_HOLD_MAX.
    let started = std::time::Instant::now();
    let answer = post("platform.runtimeDone.json");
    let kept = recv(&mut rx).await;
    let status = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= otel_xray::lambda::invocation::ANSWER_HOLD_MAX);
    assert!(kept.hold.is_some());
    cancel.cancel();
}

#[tokio::test]
async fn listener_accepts_fixtures_and_refuses_malformed_batches() {
    let Served {
        url,
        mut rx,
        counters,
        cancel,
        mut tasks,
    } = serve_listener().await;

    let mut expected_events = 0;
    let mut posted = 0;
    for t in DOCUMENTED
        .iter()
        .map(|t| format!("{t}.json"))
        .chain(["unknown.json".into()])
    {
        let body = fixture(&t);
        expected_events += parse_batch(&body).unwrap().len();
        assert_eq!(
            lifecycle_support::post(&url, body).await,
            StatusCode::OK,
            "{t}"
        );
        posted += 1;
    }
    let mut received = 0;
    while received < expected_events {
        let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        received += batch.events.len();
    }
    assert_eq!(received, expected_events);

    let mut malformed = 0;
    for entry in std::fs::read_dir(fixtures().join("malformed")).unwrap() {
        let body = std::fs::read(entry.unwrap().path()).unwrap();
        assert_eq!(
            lifecycle_support::post(&url, body).await,
            StatusCode::BAD_REQUEST
        );
        malformed += 1;
    }
    assert_eq!(
        lifecycle_support::request(Method::GET, &url, "").await,
        StatusCode::METHOD_NOT_ALLOWED
    );

    let c = counters.snapshot();
    assert_eq!(c.batches, posted);
    assert_eq!(c.events, expected_events as u64);
    assert_eq!(c.malformed_batches, malformed);
    assert_eq!(c.unparsed_events, 2);
    assert!(
        rx.try_recv().is_err(),
        "malformed batches must not reach the lifecycle"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .expect("listener stops when cancelled");
}
