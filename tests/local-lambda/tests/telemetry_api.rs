//! The Telemetry API against a real subscriber (the Python test extension), and the
//! Extensions/Runtime APIs' error answers.

// Test helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Layer, eventually, is_hex};
use local_lambda::http::request;
use local_lambda::{InvokeRequest, InvokeStatus, LocalLambda};
use serde_json::{Value, json};

fn is_rfc3339_ms(s: &str) -> bool {
    s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T' && s.as_bytes()[19] == b'.'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_events_are_delivered_with_their_shapes() {
    let layer = Layer::new();
    layer.extension("tele");
    let mut cfg = layer.config();
    cfg.active_tracing = true;
    cfg.memory_mb = 256;
    cfg.env.push(("TELE_EXT_TELEMETRY".into(), "1".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    let sub = &layer.records_of("tele", "subscribed")[0];
    assert_eq!(sub["status"], 200);
    assert_eq!(sub["body"], "OK");

    let r = ll
        .invoke(InvokeRequest::json(&json!({"x": 1})))
        .await
        .unwrap();
    assert_eq!(r.status, InvokeStatus::Success);
    let rid = r.request_id.clone();
    let events = eventually(Duration::from_secs(5), || {
        let ev = layer.telemetry("tele");
        ev.iter()
            .any(|e| e["type"] == "platform.report" && e["record"]["requestId"] == rid.as_str())
            .then_some(ev)
    })
    .await
    .expect("platform.report delivered");
    // Every batch was a JSON array of {time, type, record} POSTed to the subscriber's path.
    for b in layer.records_of("tele", "telemetry") {
        assert_eq!(b["path"], "/telemetry");
    }
    for e in &events {
        assert!(is_rfc3339_ms(e["time"].as_str().unwrap()), "{e}");
        assert!(e["record"].is_object(), "{e}");
    }
    let one = |ty: &str| -> Value {
        events
            .iter()
            .find(|e| e["type"] == ty)
            .unwrap_or_else(|| panic!("no {ty} in {events:?}"))["record"]
            .clone()
    };
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let pos = |t: &str| types.iter().position(|x| *x == t).unwrap();
    assert!(pos("platform.initStart") < pos("platform.initRuntimeDone"));
    assert!(pos("platform.initRuntimeDone") < pos("platform.initReport"));
    assert!(pos("platform.initReport") < pos("platform.start"));
    assert!(pos("platform.start") < pos("platform.runtimeDone"));
    assert!(pos("platform.runtimeDone") < pos("platform.report"));

    let init_start = one("platform.initStart");
    assert_eq!(init_start["initializationType"], "on-demand");
    assert_eq!(init_start["phase"], "init");
    assert_eq!(one("platform.initRuntimeDone")["status"], "success");
    let init_report = one("platform.initReport");
    assert_eq!(init_report["status"], "success");
    assert!(init_report["metrics"]["durationMs"].as_f64().unwrap() > 0.0);
    assert_eq!(
        one("platform.extension"),
        json!({"name": "tele", "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]})
    );
    assert_eq!(
        one("platform.telemetrySubscription"),
        json!({"name": "tele", "state": "Subscribed", "types": ["platform"]})
    );

    // Active tracing: sampled header with a new Parent; tracing on start/runtimeDone/report.
    let trace = r.trace_header.clone();
    assert!(
        trace.starts_with("Root=1-") && trace.ends_with(";Sampled=1"),
        "{trace}"
    );
    let start = one("platform.start");
    assert_eq!(start["requestId"], rid.as_str());
    assert_eq!(start["version"], "$LATEST");
    assert_eq!(start["tracing"]["type"], "X-Amzn-Trace-Id");
    assert_eq!(start["tracing"]["value"], trace.as_str());
    assert!(is_hex(start["tracing"]["spanId"].as_str().unwrap(), 16));

    let rd = one("platform.runtimeDone");
    assert_eq!(rd["requestId"], rid.as_str());
    assert_eq!(rd["status"], "success");
    assert_eq!(rd["tracing"], start["tracing"]);
    assert_eq!(
        rd["metrics"]["producedBytes"].as_u64().unwrap() as usize,
        r.response.as_ref().unwrap().len()
    );
    assert!(rd["metrics"]["durationMs"].as_f64().unwrap() > 0.0);
    let spans = rd["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0]["name"], "responseLatency");
    assert_eq!(spans[1]["name"], "responseDuration");
    assert!(is_rfc3339_ms(spans[0]["start"].as_str().unwrap()));

    let report = one("platform.report");
    assert_eq!(report["status"], "success");
    assert_eq!(report["tracing"], start["tracing"]);
    let m = &report["metrics"];
    let d = m["durationMs"].as_f64().unwrap();
    assert_eq!(m["billedDurationMs"].as_u64().unwrap(), d.ceil() as u64);
    assert_eq!(m["memorySizeMB"], 256);
    assert!(m["maxMemoryUsedMB"].as_u64().unwrap() > 0);
    assert!(m["initDurationMs"].as_f64().unwrap() > 0.0);

    // A warm invocation's report has no initDurationMs.
    let r2 = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    let report2 = eventually(Duration::from_secs(5), || {
        layer.telemetry("tele").into_iter().find(|e| {
            e["type"] == "platform.report" && e["record"]["requestId"] == r2.request_id.as_str()
        })
    })
    .await
    .unwrap();
    assert!(report2["record"]["metrics"].get("initDurationMs").is_none());
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_lambda_rejects() {
    let layer = Layer::new();
    layer.extension("reserved").extension("outside");
    let mut cfg = layer.config();
    cfg.env.push(("RESERVED_EXT_TELEMETRY".into(), "1".into()));
    cfg.env
        .push(("RESERVED_EXT_TELEMETRY_PORT".into(), "9001".into()));
    cfg.env.push(("OUTSIDE_EXT_TELEMETRY".into(), "1".into()));
    cfg.env
        .push(("OUTSIDE_EXT_TELEMETRY_HOST".into(), "example.com".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    for (name, needle) in [("reserved", "9001"), ("outside", "example.com")] {
        let s = &layer.records_of(name, "subscribed")[0];
        assert_eq!(s["status"], 400, "{s}");
        assert_eq!(s["body"]["errorType"], "ValidationError");
        assert!(
            s["body"]["errorMessage"].as_str().unwrap().contains(needle),
            "{s}"
        );
    }
    assert_eq!(ll.events("telemetry.subscribe_rejected").len(), 2);
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_knobs_twice_delayed_and_never() {
    let layer = Layer::new();
    layer.extension("tele");
    let mut cfg = layer.config();
    cfg.env.push(("TELE_EXT_TELEMETRY".into(), "1".into()));
    cfg.telemetry.deliver_twice = true;
    cfg.telemetry.delay = Duration::from_millis(100);
    let ll = LocalLambda::start(cfg).await.unwrap();
    let r = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    let count = |rid: &str| {
        layer
            .telemetry("tele")
            .iter()
            .filter(|e| e["type"] == "platform.report" && e["record"]["requestId"] == rid)
            .count()
    };
    let n = eventually(Duration::from_secs(5), || {
        (count(&r.request_id) >= 2).then_some(())
    })
    .await;
    assert!(n.is_some());
    assert_eq!(count(&r.request_id), 2);
    ll.shutdown().await.unwrap();
    drop(ll);

    let layer = Layer::new();
    layer.extension("tele");
    let mut cfg = layer.config();
    cfg.env.push(("TELE_EXT_TELEMETRY".into(), "1".into()));
    cfg.telemetry.never_deliver = true;
    let ll = LocalLambda::start(cfg).await.unwrap();
    ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(layer.records_of("tele", "subscribed")[0]["status"], 200);
    assert!(layer.telemetry("tele").is_empty());
    assert!(ll.telemetry_deliveries().iter().all(|d| !d.ok));
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_a_bounded_number_of_times() {
    let layer = Layer::new();
    layer.extension("tele");
    let mut cfg = layer.config();
    cfg.env.push(("TELE_EXT_TELEMETRY".into(), "1".into()));
    // A port nothing listens on: every attempt fails.
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    cfg.env
        .push(("TELE_EXT_TELEMETRY_PORT".into(), unused.to_string()));
    cfg.telemetry.max_attempts = 3;
    let ll = LocalLambda::start(cfg).await.unwrap();
    let attempts = eventually(Duration::from_secs(5), || {
        let d = ll.telemetry_deliveries();
        (d.len() >= 3).then_some(d)
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = ll.telemetry_deliveries();
    assert!(!attempts.is_empty());
    // Each batch: attempts 1, 2, 3 of the same events, then it is dropped (never re-sent).
    assert_eq!(d.len() % 3, 0, "{d:?}");
    for batch in d.chunks(3) {
        assert_eq!(
            batch.iter().map(|x| x.attempt).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(batch.iter().all(|x| !x.ok && x.events == batch[0].events));
    }
    let first_types: Vec<_> = d[0].events.iter().map(|e| e["type"].clone()).collect();
    assert!(first_types.contains(&json!("platform.initStart")));
    assert!(
        d[3..]
            .iter()
            .all(|x| !x.events.iter().any(|e| e["type"] == "platform.initStart"))
    );
    drop(ll);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_as_lambda_returns_them() {
    let layer = Layer::new();
    layer.extension("ext");
    let ll = LocalLambda::start(layer.config()).await.unwrap();
    let api = ll.runtime_api();
    let t = Duration::from_secs(5);
    let err = |r: local_lambda::http::ClientResponse| -> (u16, String) {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["errorMessage"].is_string(), "{v}");
        (r.status, v["errorType"].as_str().unwrap().to_owned())
    };
    let reg = |name: &'static str, body: &'static str| async move {
        let mut h = vec![("Content-Type", "application/json")];
        if !name.is_empty() {
            h.push(("Lambda-Extension-Name", name));
        }
        request(
            api,
            "POST",
            "/2020-01-01/extension/register",
            &h,
            body.as_bytes(),
            t,
        )
        .await
        .unwrap()
    };
    assert_eq!(
        err(reg("", r#"{"events":[]}"#).await),
        (403, "Extension.InvalidExtensionName".into())
    );
    assert_eq!(
        err(reg("ext", r#"{"events":["INVOKE"]}"#).await),
        (403, "Extension.InvalidExtensionState".into())
    );
    assert_eq!(
        err(reg("late", r#"{"events":["INVOKE"]}"#).await),
        (403, "Extension.RegistrationClosed".into())
    );
    assert_eq!(
        err(reg("late", "not json").await),
        (403, "InvalidRequestFormat".into())
    );

    let next = |id: Option<&'static str>| async move {
        let h: Vec<(&str, &str)> = id
            .map(|i| vec![("Lambda-Extension-Identifier", i)])
            .unwrap_or_default();
        request(api, "GET", "/2020-01-01/extension/event/next", &h, b"", t)
            .await
            .unwrap()
    };
    assert_eq!(
        err(next(None).await),
        (403, "Extension.MissingExtensionIdentifier".into())
    );
    assert_eq!(
        err(next(Some("nope")).await),
        (403, "Extension.InvalidExtensionIdentifier".into())
    );
    assert_eq!(
        err(next(Some("6f1d3a8e-0000-4000-8000-000000000000")).await),
        (403, "Extension.UnknownExtensionIdentifier".into())
    );
    let r = request(
        api,
        "POST",
        "/2018-06-01/runtime/invocation/not-a-request/response",
        &[],
        b"{}",
        t,
    )
    .await
    .unwrap();
    assert_eq!(err(r), (400, "InvalidRequestID".into()));
    let r = request(api, "PUT", "/2022-07-01/telemetry", &[], b"{}", t)
        .await
        .unwrap();
    assert_eq!(err(r), (403, "Extension.MissingExtensionIdentifier".into()));
    // Responses carry Content-Length and keep the connection usable.
    let r = request(api, "GET", "/nowhere", &[], b"", t).await.unwrap();
    assert_eq!(r.status, 404);
    assert!(r.header("content-length").is_some());
    // The sandbox still works.
    let ok = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(ok.status, InvokeStatus::Success);
    ll.shutdown().await.unwrap();
}
