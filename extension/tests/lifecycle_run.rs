//! The lifecycle, run in-process against a fake Extensions + Telemetry API on 127.0.0.1 that
//! checks what it receives: register → INVOKE → end of invocation (runtimeDone, proxy signal or
//! deadline) → flush → event/next → SHUTDOWN, plus the failure paths.

// Test helpers outside #[test] functions panic on broken expectations too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lifecycle_support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use lifecycle_support::{
    ACCOUNT_ID, EXTENSION_ID, FakeLambda, TRACE_HEADER, config, options, post, runtime_done_event,
    sdk_batch, start_event,
};
use otel_xray::config::Config;
use otel_xray::lambda::EndSource;
use otel_xray::lambda::extensions_api::ShutdownReason;
use otel_xray::lifecycle::{Exit, RunSummary, run, run_with_lookup};
use tokio::net::UdpSocket;
use tokio::time::Instant;

const SECOND: Duration = Duration::from_secs(1);

/// A UDP socket playing the X-Ray daemon, and a config whose exporter points at it.
async fn daemon_config(fake: SocketAddr, extra: &[(&str, &str)]) -> (Config, UdpSocket) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap().to_string();
    let mut vars = vec![("AWS_XRAY_DAEMON_ADDRESS", addr.as_str())];
    vars.extend_from_slice(extra);
    (config(fake, &vars), udp)
}

/// Every span is accounted for; where the exporter reports exports, the daemon really got
/// documents of our trace.
async fn check_accounting(summary: &RunSummary, udp: &UdpSocket, expect_received: u64) {
    let s = &summary.stats;
    assert_eq!(s.received, expect_received, "{s}");
    assert_eq!(s.exported + s.dropped_total(), s.received, "{s}");
    assert_eq!(s.in_flight(), 0, "{s}");
    if s.exported > 0 {
        let mut buf = vec![0u8; 65_536];
        let n = tokio::time::timeout(SECOND, udp.recv(&mut buf))
            .await
            .expect("exported spans must reach the daemon")
            .unwrap();
        let datagram = std::str::from_utf8(&buf[..n]).unwrap();
        let (header, doc) = datagram.split_once('\n').unwrap();
        let header: serde_json::Value = serde_json::from_str(header).unwrap();
        assert_eq!(header, serde_json::json!({"format": "json", "version": 1}));
        let doc: serde_json::Value = serde_json::from_str(doc).unwrap();
        assert_eq!(doc["trace_id"], "1-66432ccf-5e8a4b7c9d0e1f2a3b4c5d6e");
    }
}

fn telemetry_batch(events: &[serde_json::Value]) -> String {
    serde_json::Value::Array(events.to_vec()).to_string()
}

#[tokio::test]
async fn runtime_done_ends_the_invocation_and_the_flush_precedes_event_next() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, udp) = daemon_config(fake.addr, &[]).await;
    let (options, ready_rx, _) = options();

    let script = async {
        let ready = ready_rx.await.unwrap();
        assert!(ready.telemetry_subscribed);
        assert_eq!(ready.registration.extension_id, EXTENSION_ID);
        assert_eq!(ready.registration.account_id.as_deref(), Some(ACCOUNT_ID));
        assert_eq!(ready.registration.function_name, "orders");

        let first = fake.next_call(5 * SECOND).await;
        // Register, then subscribe, then event/next — and what they carried.
        let paths: Vec<_> = fake.recorded().iter().map(|r| r.path.clone()).collect();
        assert_eq!(
            paths,
            [
                "/2020-01-01/extension/register",
                "/2022-07-01/telemetry",
                "/2020-01-01/extension/event/next"
            ]
        );
        let reg = &fake.requests_to("/2020-01-01/extension/register")[0];
        assert_eq!(reg.header("lambda-extension-name"), Some("otel-xray"));
        assert_eq!(
            reg.header("lambda-extension-accept-feature"),
            Some("accountId")
        );
        assert_eq!(
            reg.json(),
            serde_json::json!({"events": ["INVOKE", "SHUTDOWN"]})
        );
        let sub = &fake.requests_to("/2022-07-01/telemetry")[0];
        assert_eq!(sub.method, http::Method::PUT);
        assert_eq!(
            sub.header("lambda-extension-identifier"),
            Some(EXTENSION_ID)
        );
        let body = sub.json();
        assert_eq!(body["schemaVersion"], "2025-01-29");
        assert_eq!(body["types"], serde_json::json!(["platform"]));
        assert_eq!(body["buffering"]["timeoutMs"], 25);
        assert_eq!(body["destination"]["protocol"], "HTTP");
        assert_eq!(
            body["destination"]["URI"],
            format!(
                "http://sandbox.localdomain:{}",
                ready.telemetry_addr.unwrap().port()
            )
        );
        assert!(!ready.telemetry_addr.unwrap().ip().is_unspecified());
        assert_eq!(
            fake.requests_to("/2020-01-01/extension/event/next")[0]
                .header("lambda-extension-identifier"),
            Some(EXTENSION_ID)
        );

        first.invoke("req-1", 30 * SECOND, Some(TRACE_HEADER));
        // The function runs and its SDK exports three spans.
        ready.buffer.push(sdk_batch(3)).await.unwrap();
        // While the runtime has not answered, the extension does not ask for the next event.
        assert!(fake.no_next_call_for(Duration::from_millis(300)).await);

        let url = fake.telemetry_url();
        let batch =
            telemetry_batch(&[start_event("req-1"), runtime_done_event("req-1", "success")]);
        // A malformed delivery on the way is refused and counted, and changes nothing.
        assert_eq!(post(&url, "[{").await, StatusCode::BAD_REQUEST);
        let sent = Instant::now();
        assert_eq!(post(&url, batch.clone()).await, StatusCode::OK);
        let second = fake.next_call(5 * SECOND).await;
        assert!(
            second.at.duration_since(sent) < 5 * SECOND,
            "runtimeDone must end the wait long before the 30 s deadline"
        );
        // The lifecycle is blocked on this call: what the counters say now happened before it.
        let snap = ready.stats.snapshot();
        assert_eq!(
            snap.received, 4,
            "3 SDK spans + the invocation span: {snap}"
        );
        assert_eq!(snap.in_flight(), 0, "flushed before event/next: {snap}");
        assert_eq!(snap.flushes, 1, "{snap}");

        // Lambda re-delivers the same events: no second invocation span.
        assert_eq!(post(&url, batch).await, StatusCode::OK);
        second.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean, "{summary:?}");
    assert_eq!(summary.shutdown_reason, Some(ShutdownReason::Spindown));
    assert_eq!(summary.invocations, 1);
    assert_eq!(summary.telemetry.malformed_batches, 1);
    assert_eq!(summary.telemetry.batches, 2);
    check_accounting(&summary, &udp, 4).await;
}

#[tokio::test]
async fn without_the_telemetry_api_or_the_proxy_event_next_is_not_held() {
    let mut fake = FakeLambda::start(StatusCode::NOT_FOUND).await;
    let (config, udp) = daemon_config(fake.addr, &[]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        assert!(
            !ready.telemetry_subscribed,
            "404 on subscribe is a warning, not fatal"
        );
        let first = fake.next_call(5 * SECOND).await;
        let invoked = Instant::now();
        first.invoke("req-1", 30 * SECOND, Some(TRACE_HEADER));
        ready.buffer.push(sdk_batch(2)).await.unwrap();
        // Nothing will say when req-1 ends (the runtime does not use the proxy): event/next
        // comes after the proxy's grace, not near the 30 s deadline.
        let second = fake.next_call(5 * SECOND).await;
        let waited = second.at.duration_since(invoked);
        assert!(waited < Duration::from_millis(500), "{waited:?}");
        // The next INVOKE thaws the sandbox: whatever is buffered goes out before event/next.
        second.invoke("req-2", 30 * SECOND, Some(TRACE_HEADER));
        let third = fake.next_call(5 * SECOND).await;
        let snap = ready.stats.snapshot();
        assert_eq!(snap.in_flight(), 0, "{snap}");
        assert_eq!(snap.exported, 2, "{snap}");
        third.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    check_accounting(&summary, &udp, 2).await;
}

#[tokio::test]
async fn a_silent_telemetry_api_holds_at_most_one_invocation_to_its_deadline() {
    // Subscribed, but Lambda never delivers, and the runtime does not use the proxy.
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, udp) = daemon_config(fake.addr, &[]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        assert!(ready.telemetry_subscribed);
        let first = fake.next_call(5 * SECOND).await;
        let deadline = Duration::from_millis(900);
        let invoked = Instant::now();
        first.invoke("req-1", deadline, Some(TRACE_HEADER));
        ready.buffer.push(sdk_batch(2)).await.unwrap();
        let second = fake.next_call(5 * SECOND).await;
        let waited = second.at.duration_since(invoked);
        // The first waits until about deadline − 200 ms, and calls event/next before the deadline.
        assert!(waited >= Duration::from_millis(550), "{waited:?}");
        assert!(waited < deadline, "{waited:?}");
        assert_eq!(ready.stats.snapshot().flushes, 1);
        // From then on nothing is held.
        let invoked = Instant::now();
        second.invoke("req-2", 30 * SECOND, Some(TRACE_HEADER));
        let third = fake.next_call(5 * SECOND).await;
        let waited = third.at.duration_since(invoked);
        assert!(waited < Duration::from_millis(500), "{waited:?}");
        third.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    check_accounting(&summary, &udp, 2).await;
}

#[tokio::test]
async fn the_runtime_proxy_signal_ends_the_invocation() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, udp) = daemon_config(fake.addr, &[]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let first = fake.next_call(5 * SECOND).await;
        first.invoke("req-1", 30 * SECOND, Some(TRACE_HEADER));
        ready.buffer.push(sdk_batch(1)).await.unwrap();
        // A signal for another request does not end this one.
        assert!(
            ready
                .invocation_end
                .invocation_ended("req-0", EndSource::RuntimeProxy, None)
                .is_some()
        );
        assert!(fake.no_next_call_for(Duration::from_millis(200)).await);
        let signalled = Instant::now();
        let held = ready
            .invocation_end
            .invocation_ended(
                "req-1",
                EndSource::RuntimeProxy,
                Some("Runtime.HandlerError".into()),
            )
            .unwrap();
        // The lifecycle lets the proxy answer once its event/next is on its way, not at the cap.
        held.released().await;
        assert!(signalled.elapsed() < otel_xray::lambda::invocation::ANSWER_HOLD_MAX);
        let second = fake.next_call(5 * SECOND).await;
        assert!(second.at.duration_since(signalled) < 5 * SECOND);
        assert_eq!(ready.stats.snapshot().in_flight(), 0);
        second.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    check_accounting(&summary, &udp, 1).await;
}

#[tokio::test]
async fn periodic_mode_does_not_hold_invocations_and_shutdown_flushes_the_rest() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, udp) = daemon_config(fake.addr, &[("OTEL_XRAY_FLUSH", "periodic,60000")]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let url = fake.telemetry_url();
        // First invocation: nothing flushed yet, so it ends with a flush.
        fake.next_call(5 * SECOND)
            .await
            .invoke("req-1", 30 * SECOND, Some(TRACE_HEADER));
        assert!(fake.no_next_call_for(Duration::from_millis(200)).await);
        let done = telemetry_batch(&[start_event("req-1"), runtime_done_event("req-1", "success")]);
        assert_eq!(post(&url, done).await, StatusCode::OK);
        let second = fake.next_call(5 * SECOND).await;
        assert_eq!(ready.stats.snapshot().flushes, 1);

        // Second invocation, well within the interval: event/next comes at once, without
        // waiting for runtimeDone, and the function's spans stay buffered.
        let invoked = Instant::now();
        second.invoke("req-2", 30 * SECOND, Some(TRACE_HEADER));
        let third = fake.next_call(5 * SECOND).await;
        assert!(third.at.duration_since(invoked) < 5 * SECOND);
        ready.buffer.push(sdk_batch(5)).await.unwrap();
        let snap = ready.stats.snapshot();
        assert_eq!(snap.flushes, 1, "{snap}");
        assert_eq!(snap.in_flight(), 5, "{snap}");
        third.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    assert_eq!(summary.invocations, 2);
    assert_eq!(summary.stats.flushes, 2, "SHUTDOWN flushes the rest");
    check_accounting(&summary, &udp, 6).await;
}

#[tokio::test]
async fn buffer_pressure_flushes_during_the_invocation() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, udp) = daemon_config(fake.addr, &[("OTEL_XRAY_BUFFER_MAX_SPANS", "10")]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        fake.next_call(5 * SECOND)
            .await
            .invoke("req-1", 30 * SECOND, Some(TRACE_HEADER));
        // Half the capacity: an early flush, while the invocation is still running.
        ready.buffer.push(sdk_batch(6)).await.unwrap();
        let mut flushed = false;
        for _ in 0..100 {
            let snap = ready.stats.snapshot();
            if snap.flushes >= 1 && snap.in_flight() == 0 {
                flushed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(flushed, "{}", ready.stats.snapshot());
        assert!(fake.no_next_call_for(Duration::from_millis(100)).await);
        let url = fake.telemetry_url();
        let done = telemetry_batch(&[start_event("req-1"), runtime_done_event("req-1", "success")]);
        assert_eq!(post(&url, done).await, StatusCode::OK);
        let second = fake.next_call(5 * SECOND).await;
        assert_eq!(ready.stats.snapshot().flushes, 2);
        second.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    check_accounting(&summary, &udp, 7).await;
}

#[tokio::test]
async fn buffer_pressure_between_invocations_waits_for_the_next_invoke() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, udp) = daemon_config(fake.addr, &[("OTEL_XRAY_BUFFER_MAX_SPANS", "10")]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let first = fake.next_call(5 * SECOND).await;
        // event/next is outstanding: Lambda may freeze the sandbox at any moment, so the
        // pressure must not start an export that a freeze would cut.
        ready.buffer.push(sdk_batch(6)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            ready.stats.snapshot().flushes,
            0,
            "{}",
            ready.stats.snapshot()
        );
        first.invoke("req-1", 30 * SECOND, Some(TRACE_HEADER));
        let mut flushed = false;
        for _ in 0..100 {
            let snap = ready.stats.snapshot();
            if snap.flushes >= 1 && snap.exported == 6 {
                flushed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(flushed, "{}", ready.stats.snapshot());
        let url = fake.telemetry_url();
        let done = telemetry_batch(&[start_event("req-1"), runtime_done_event("req-1", "success")]);
        assert_eq!(post(&url, done).await, StatusCode::OK);
        fake.next_call(5 * SECOND)
            .await
            .shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    check_accounting(&summary, &udp, 7).await;
}

#[tokio::test]
async fn an_unreachable_upstream_pauses_exports_instead_of_costing_every_invocation() {
    // An OTLP endpoint that accepts connections and closes them at once: every request fails.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", upstream.local_addr().unwrap());
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&attempts);
    tokio::spawn(async move {
        for _ in 0..10_000 {
            let Ok((conn, _)) = upstream.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let config = lifecycle_support::config(
        fake.addr,
        &[
            ("OTEL_XRAY_EXPORTER", "otlp"),
            ("OTEL_XRAY_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_XRAY_EXPORT_TIMEOUT_MS", "300"),
        ],
    );
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let mut next = fake.next_call(5 * SECOND).await;
        let mut per_invocation = Vec::new();
        for i in 0..6 {
            let id = format!("req-{i}");
            let before = attempts.load(std::sync::atomic::Ordering::SeqCst);
            next.invoke(&id, 30 * SECOND, Some(TRACE_HEADER));
            ready.buffer.push(sdk_batch(2)).await.unwrap();
            let _held =
                ready
                    .invocation_end
                    .invocation_ended(id.as_str(), EndSource::RuntimeProxy, None);
            next = fake.next_call(5 * SECOND).await;
            per_invocation.push(attempts.load(std::sync::atomic::Ordering::SeqCst) - before);
        }
        // Three flushes try (and fail); then the breaker pauses exports: no connection at all.
        assert!(
            per_invocation[..3].iter().all(|&n| n > 0),
            "{per_invocation:?}"
        );
        assert_eq!(&per_invocation[3..], &[0, 0, 0], "{per_invocation:?}");
        let snap = ready.stats.snapshot();
        // The spans of the paused invocations are still buffered, not dropped.
        assert_eq!(snap.in_flight(), 6, "{snap}");
        next.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    let s = &summary.stats;
    // SHUTDOWN's flush tries once more; everything is accounted for.
    assert_eq!(s.received, 12, "{s}");
    assert_eq!(s.exported, 0, "{s}");
    assert_eq!(s.dropped_total(), 12, "{s}");
    assert_eq!(s.in_flight(), 0, "{s}");
}

#[tokio::test]
async fn taken_ports_never_fail_the_function() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let ip = otel_xray::lambda::telemetry::sandbox_address().await;
    let taken_telemetry = std::net::TcpListener::bind((ip, 0)).unwrap();
    let taken_http = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let telemetry_port = taken_telemetry.local_addr().unwrap().port();
    let http_port = taken_http.local_addr().unwrap().port();
    let (config, udp) = daemon_config(
        fake.addr,
        &[
            ("OTEL_XRAY_TELEMETRY_PORT", &telemetry_port.to_string()),
            ("OTEL_XRAY_HTTP_PORT", &http_port.to_string()),
        ],
    )
    .await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        // The Telemetry API listener moved to a free port and was subscribed with it.
        assert!(ready.telemetry_subscribed);
        assert_ne!(ready.telemetry_addr.unwrap().port(), telemetry_port);
        let subscribe = &fake.requests_to("/2022-07-01/telemetry")[0];
        let uri = subscribe.json()["destination"]["URI"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            uri.ends_with(&format!(":{}", ready.telemetry_addr.unwrap().port())),
            "{uri}"
        );
        // The OTLP/HTTP receiver is left out; gRPC still serves.
        assert_eq!(ready.otlp_http_addr, None);
        assert!(ready.otlp_grpc_addr.is_some());
        let first = fake.next_call(5 * SECOND).await;
        first.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    assert!(
        fake.requests_to("/2020-01-01/extension/init/error")
            .is_empty(),
        "a taken port must not fail the init"
    );
    check_accounting(&summary, &udp, 0).await;
    drop((taken_telemetry, taken_http));
}

#[tokio::test]
async fn a_configuration_error_runs_a_pass_through_that_never_fails_the_init() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let api = fake.addr.to_string();
    // Ports nobody else uses: the pass-through must bind none of them.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    drop(http);
    let lookup = move |k: &str| match k {
        "AWS_LAMBDA_RUNTIME_API" => Some(api.clone()),
        "OTEL_XRAY_EXPORTER" => Some("otlp".to_owned()),
        "OTEL_XRAY_HTTP_PORT" => Some(http_port.to_string()),
        _ => None,
    };
    let (options, _ready, _) = options();
    let script = async {
        // Registered for SHUTDOWN only: never woken per invocation.
        let first = fake.next_call(5 * SECOND).await;
        let reg = &fake.requests_to("/2020-01-01/extension/register")[0];
        assert_eq!(reg.json(), serde_json::json!({"events": ["SHUTDOWN"]}));
        // Nothing listens where the receiver would.
        assert!(std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err());
        first.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run_with_lookup(lookup, options), script);
    assert_eq!(summary.exit, Exit::PassThrough);
    assert_eq!(summary.exit_code(), std::process::ExitCode::SUCCESS);
    assert_eq!(summary.shutdown_reason, Some(ShutdownReason::Spindown));
    assert!(
        summary
            .error
            .as_deref()
            .unwrap()
            .contains("OTEL_XRAY_OTLP_ENDPOINT"),
        "{summary:?}"
    );
    assert!(
        fake.requests_to("/2020-01-01/extension/init/error")
            .is_empty(),
        "a configuration error must not fail the function's init"
    );
    assert!(
        fake.requests_to("/2022-07-01/telemetry").is_empty(),
        "the pass-through subscribes to nothing"
    );
}

#[tokio::test]
async fn a_platform_that_refuses_the_newest_telemetry_schema_gets_the_older_one() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    fake.refuse_schema("2025-01-29");
    let (config, _udp) = daemon_config(fake.addr, &[]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        assert!(ready.telemetry_subscribed);
        let schemas: Vec<_> = fake
            .requests_to("/2022-07-01/telemetry")
            .iter()
            .map(|r| r.json()["schemaVersion"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(schemas, ["2025-01-29", "2022-12-13"]);
        fake.next_call(5 * SECOND)
            .await
            .shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
}

#[tokio::test]
async fn snapstart_restore_calls_pass_through_the_proxy_unchanged() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, _udp) = daemon_config(fake.addr, &[]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let proxy = ready.proxy_addr.unwrap();
        let next = fake.next_call(5 * SECOND).await;
        let get = lifecycle_support::request(
            http::Method::GET,
            &format!("http://{proxy}/2018-06-01/runtime/restore/next"),
            "",
        )
        .await;
        assert_eq!(get, StatusCode::OK);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let req = http::Request::post(format!("http://{proxy}/2018-06-01/runtime/restore/error"))
            .header(
                "lambda-runtime-function-error-type",
                "Runtime.AfterRestoreError",
            )
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                br#"{"errorMessage":"hook failed","errorType":"Runtime.AfterRestoreError"}"#,
            )))
            .unwrap();
        assert_eq!(
            client.request(req).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
        let restore_error = &fake.requests_to("/2018-06-01/runtime/restore/error")[0];
        assert_eq!(
            restore_error.header("lambda-runtime-function-error-type"),
            Some("Runtime.AfterRestoreError")
        );
        assert_eq!(restore_error.json()["errorMessage"], "hook failed");
        assert_eq!(
            fake.requests_to("/2018-06-01/runtime/restore/next").len(),
            1
        );
        next.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
}

#[tokio::test]
async fn event_next_failing_for_good_reports_exit_error() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, _udp) = daemon_config(fake.addr, &[]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        ready.buffer.push(sdk_batch(2)).await.unwrap();
        for _ in 0..3 {
            fake.next_call(5 * SECOND)
                .await
                .status(StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Fatal);
    assert!(summary.error.as_deref().unwrap().contains("500"));
    let report = &fake.requests_to("/2020-01-01/extension/exit/error")[0];
    assert_eq!(
        report.header("lambda-extension-function-error-type"),
        Some("Extension.EventLoopError")
    );
    assert_eq!(report.json()["errorType"], "Extension.EventLoopError");
    // What was buffered was still flushed.
    assert_eq!(summary.stats.in_flight(), 0);
    assert_eq!(summary.stats.flushes, 1);
}

#[tokio::test]
async fn an_end_that_arrives_before_its_invoke_is_remembered() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, udp) = daemon_config(fake.addr, &[]).await;
    let (options, ready_rx, _) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let first = fake.next_call(5 * SECOND).await;
        // Telemetry overtakes the event/next answer.
        let url = fake.telemetry_url();
        let done = telemetry_batch(&[start_event("req-1"), runtime_done_event("req-1", "success")]);
        assert_eq!(post(&url, done).await, StatusCode::OK);
        for _ in 0..100 {
            if ready.stats.snapshot().received == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            ready.stats.snapshot().received,
            1,
            "invocation span buffered"
        );
        let invoked = Instant::now();
        first.invoke("req-1", 30 * SECOND, Some(TRACE_HEADER));
        let second = fake.next_call(5 * SECOND).await;
        assert!(second.at.duration_since(invoked) < 5 * SECOND);
        let snap = ready.stats.snapshot();
        assert_eq!((snap.flushes, snap.in_flight()), (1, 0), "{snap}");
        second.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    check_accounting(&summary, &udp, 1).await;
}

/// The emulator and other embedders may spawn the lifecycle on a multi-thread runtime.
#[test]
fn run_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let config = config("127.0.0.1:9".parse().unwrap(), &[]);
    let (options, _ready, _) = options();
    let fut = run(config, options);
    assert_send(&fut);
}

#[tokio::test]
async fn cancellation_flushes_and_exits_cleanly() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let (config, udp) = daemon_config(fake.addr, &[]).await;
    let (options, ready_rx, cancel) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let _pending = fake.next_call(5 * SECOND).await;
        ready.buffer.push(sdk_batch(3)).await.unwrap();
        cancel.cancel();
        _pending
    };
    let (summary, _pending) = tokio::join!(run(config, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    assert_eq!(summary.shutdown_reason, None);
    assert_eq!(summary.stats.flushes, 1);
    check_accounting(&summary, &udp, 3).await;
}
