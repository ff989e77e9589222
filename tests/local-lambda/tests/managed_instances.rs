//! Lambda Managed Instances mode against real processes: the multi-worker Python test runtime
//! and the Python test extension (registered for SHUTDOWN only).

// Test helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Layer, eventually, now_epoch_ms};
use local_lambda::http::request;
use local_lambda::{Error, InitOutcome, InvokeRequest, InvokeStatus, LocalLambda};
use serde_json::{Value, json};

const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:local-function";

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Wait until `n` runtime workers are blocked in `invocation/next`.
async fn idle_workers(ll: &LocalLambda, n: usize) {
    eventually(Duration::from_secs(5), || {
        (ll.concurrency_now().1 == n).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{n} idle workers expected, have {:?}", ll.concurrency_now()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_registration_is_refused_and_fails_the_init() {
    let layer = Layer::new();
    layer.extension("greedy");
    let mut cfg = layer.lmi_config(2);
    cfg.env
        .push(("GREEDY_EXT_EVENTS".into(), "INVOKE,SHUTDOWN".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    match ll.init_outcome() {
        Some(InitOutcome::Failed {
            status, error_type, ..
        }) => {
            assert_eq!(error_type, "Extension.InvalidEventType");
            assert_eq!(*status, InvokeStatus::Error);
        }
        other => panic!("{other:?}"),
    }
    // The RIE's exact answer.
    let reg = &layer.records_of("greedy", "registered")[0];
    assert_eq!(reg["status"], 403);
    assert_eq!(
        reg["body"],
        json!({"errorMessage": "INVOKE: ErrorInvalidEventType", "errorType": "Extension.InvalidEventType"})
    );
    let refused = ll.events("extension.register_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].str("name"), Some("greedy"));
    // The runtime never started; the init was reported as an error, then shut down (failure).
    assert!(
        ll.events("process.start")
            .iter()
            .all(|e| e.str("role") != Some("runtime"))
    );
    let emitted = ll.telemetry_emitted();
    assert!(!types(&emitted).contains(&"platform.initRuntimeDone".to_owned()));
    let report = emitted
        .iter()
        .find(|e| e["type"] == "platform.initReport")
        .unwrap();
    assert_eq!(
        report["record"]["initializationType"],
        "lambda-managed-instances"
    );
    assert_eq!(report["record"]["status"], "error");
    assert_eq!(report["record"]["errorType"], "Extension.InvalidEventType");
    assert_eq!(ll.resets()[0].reason, "failure");
    // The next invoke tries a new environment, which fails the same way.
    let r = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(r.status, InvokeStatus::Error);
    assert_eq!(r.error.unwrap().error_type, "Extension.InvalidEventType");
    assert_eq!(layer.records_of("greedy", "registered").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invocations_each_on_its_own_worker() {
    let layer = Layer::new();
    layer.extension("watcher");
    let mut cfg = layer.lmi_config(4);
    cfg.freeze = true; // ignored: Lambda Managed Instances never freeze
    for (k, v) in [
        ("WATCHER_EXT_EVENTS", "SHUTDOWN"),
        ("WATCHER_EXT_TELEMETRY", "1"),
        ("WATCHER_EXT_TELEMETRY_SCHEMA", "2022-12-13,2025-01-29"),
    ] {
        cfg.env.push((k.into(), v.into()));
    }
    let ll = LocalLambda::start(cfg).await.unwrap();
    assert!(
        matches!(ll.init_outcome(), Some(InitOutcome::Ready(_))),
        "{:?}",
        ll.init_outcome()
    );
    assert_eq!(ll.managed_instances().unwrap().max_concurrency, 4);

    // Every process sees the mode and the concurrency.
    let start = &layer.records_of("runtime", "start")[0];
    assert_eq!(
        start["env"],
        json!({"AWS_LAMBDA_INITIALIZATION_TYPE": "lambda-managed-instances", "AWS_LAMBDA_MAX_CONCURRENCY": "4"})
    );
    let reg = &layer.records_of("watcher", "registered")[0];
    assert_eq!(reg["status"], 200);
    assert_eq!(reg["body"]["functionName"], "local-function");
    assert_eq!(reg["env"], start["env"]);

    // Telemetry API: 2022-12-13 refused as the RIE refuses it, 2025-01-29 accepted.
    let subs = layer.records_of("watcher", "subscribed");
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert_eq!(subs[0]["status"], 400);
    assert_eq!(subs[0]["contentType"], "text/plain; charset=utf-8");
    assert_eq!(subs[0]["body"]["errorType"], "ValidationError");
    let msg = subs[0]["body"]["errorMessage"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "schema validation error: jsonschema: '/schemaVersion' does not validate with file://"
        ) && msg.ends_with("#/properties/schemaVersion/enum: value must be \"2025-01-29\""),
        "{msg}"
    );
    assert_eq!(subs[1]["schemaVersion"], "2025-01-29");
    assert_eq!(subs[1]["status"], 200);
    assert_eq!(subs[1]["body"], "OK");

    // Four invocations at once, each answered by its own worker under its own request id.
    idle_workers(&ll, 4).await;
    let mut reqs: Vec<InvokeRequest> = (0..4)
        .map(|i| InvokeRequest::json(&json!({"sleep": 0.6, "i": i})))
        .collect();
    reqs[2].client_context = Some(r#"{"custom":{"k":"v"}}"#.into());
    let t = Instant::now();
    let results = ll.invoke_many(reqs).await;
    let elapsed = t.elapsed();
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    let mut ids = HashSet::new();
    let mut workers = HashSet::new();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.status, InvokeStatus::Success, "{r:?}");
        let resp = r.response_json().unwrap();
        assert_eq!(resp["requestId"], r.request_id.as_str());
        assert_eq!(resp["echo"]["i"], i);
        ids.insert(r.request_id.clone());
        workers.insert(resp["worker"].as_u64().unwrap());
        assert!(!r.reset && !r.cold_start || i == 0, "{r:?}");
    }
    assert_eq!(ids.len(), 4);
    assert_eq!(workers.len(), 4);
    assert!(elapsed < Duration::from_millis(1800), "{elapsed:?}");
    // All four were in flight at once: every start precedes the first end.
    let starts = ll.events("invoke.start");
    let ends = ll.events("invoke.end");
    assert_eq!((starts.len(), ends.len()), (4, 4));
    let first_end = ends.iter().map(|e| e.at_ms).fold(f64::MAX, f64::min);
    assert!(starts.iter().all(|s| s.at_ms < first_end));
    assert_eq!(
        starts
            .iter()
            .filter_map(|s| s.fields["inFlight"].as_u64())
            .max(),
        Some(4)
    );
    // What each worker got: its own event, with the usual headers.
    let events = layer.records_of("runtime", "event");
    assert_eq!(events.len(), 4);
    let last_received = events
        .iter()
        .map(|e| e["t"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let first_posted = layer
        .records_of("runtime", "posted")
        .iter()
        .map(|e| e["t"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    assert!(last_received < first_posted);
    for ev in &events {
        let h = &ev["headers"];
        let rid = h["Lambda-Runtime-Aws-Request-Id"].as_str().unwrap();
        assert!(ids.contains(rid));
        assert_eq!(h["Lambda-Runtime-Invoked-Function-Arn"], ARN);
        assert!(h["Lambda-Runtime-Deadline-Ms"].is_string());
        assert!(
            h["Lambda-Runtime-Trace-Id"]
                .as_str()
                .unwrap()
                .starts_with("Root=1-")
        );
        assert!(uuid::Uuid::parse_str(h["Lambda-Runtime-Invocation-Id"].as_str().unwrap()).is_ok());
        let with_context = ev["event"]["i"] == 2;
        assert_eq!(
            h.get("Lambda-Runtime-Client-Context").is_some(),
            with_context,
            "{h}"
        );
    }
    assert!(ll.events("freeze").is_empty());
    // The extension got no INVOKE: nothing but SHUTDOWN will come.
    assert!(layer.records_of("watcher", "event").is_empty());

    // Telemetry: interleaved, no runtimeDone, the LMI record shapes.
    let delivered = eventually(Duration::from_secs(5), || {
        let ev = layer.telemetry("watcher");
        (ev.iter().filter(|e| e["type"] == "platform.report").count() == 4).then_some(ev)
    })
    .await
    .expect("four reports delivered");
    let tys = types(&delivered);
    assert!(
        !tys.iter()
            .any(|t| t.contains("runtimeDone") && t != "platform.initRuntimeDone")
    );
    assert!(!types(&ll.telemetry_emitted()).contains(&"platform.runtimeDone".to_owned()));
    let pos = |t: &str| tys.iter().position(|x| x == t).unwrap();
    assert!(pos("platform.initStart") < pos("platform.initRuntimeDone"));
    assert!(pos("platform.initRuntimeDone") < pos("platform.extension"));
    assert!(pos("platform.extension") < pos("platform.initReport"));
    let last_start = tys.iter().rposition(|x| x == "platform.start").unwrap();
    assert!(
        last_start < pos("platform.report"),
        "not interleaved: {tys:?}"
    );
    let record = |ty: &str| delivered.iter().find(|e| e["type"] == ty).unwrap()["record"].clone();
    let init_start = record("platform.initStart");
    assert_eq!(init_start["initializationType"], "lambda-managed-instances");
    assert_eq!(init_start["instanceMaxMemory"], 128u64 * 1024 * 1024);
    assert!(
        init_start["instanceId"]
            .as_str()
            .unwrap()
            .contains("[$LATEST]")
    );
    assert_eq!(
        record("platform.extension"),
        json!({"name": "watcher", "state": "Ready", "events": ["SHUTDOWN"]})
    );
    assert_eq!(
        record("platform.initReport")["initializationType"],
        "lambda-managed-instances"
    );
    for e in delivered.iter().filter(|e| e["type"] == "platform.start") {
        let r = &e["record"];
        assert_eq!(r["functionArn"], ARN);
        assert_eq!(r["version"], "$LATEST");
        assert!(ids.contains(r["requestId"].as_str().unwrap()));
    }
    for e in delivered.iter().filter(|e| e["type"] == "platform.report") {
        let r = &e["record"];
        assert_eq!(r["status"], "success");
        let metrics = r["metrics"].as_object().unwrap();
        assert_eq!(metrics.keys().collect::<Vec<_>>(), vec!["durationMs"]);
        assert!(metrics["durationMs"].as_f64().unwrap() >= 590.0, "{r}");
        let spans: Vec<&str> = r["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(spans, ["responseLatency", "responseDuration"]);
        assert!(r["spans"][0]["durationMs"].as_f64().unwrap() >= 590.0);
        assert!(r.get("errorType").is_none() && r.get("tracing").is_none());
    }

    let report = ll.shutdown().await.unwrap();
    assert_eq!(report.reason, "spindown");
    let ext = &report.extensions[0];
    assert!(
        ext.received_shutdown && ext.exit.exit_code == Some(0),
        "{ext:?}"
    );
    assert_eq!(ext.event_next_count, 1); // the call made after init got SHUTDOWN
    let ext_events = layer.records_of("watcher", "event");
    assert_eq!(ext_events.len(), 1);
    assert_eq!(ext_events[0]["event"]["eventType"], "SHUTDOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoke_with_every_worker_busy_is_rejected() {
    let layer = Layer::new();
    let ll = LocalLambda::start(layer.lmi_config(2)).await.unwrap();
    idle_workers(&ll, 2).await;
    let reqs = vec![
        InvokeRequest::json(&json!({"sleep": 0.8})),
        InvokeRequest::json(&json!({"sleep": 0.8})),
        InvokeRequest::json(&json!({})),
    ];
    let mut results = ll.invoke_many(reqs).await.into_iter();
    for _ in 0..2 {
        assert_eq!(
            results.next().unwrap().unwrap().status,
            InvokeStatus::Success
        );
    }
    match results.next().unwrap() {
        Err(Error::Rejected(r)) => {
            assert_eq!(r.http_status, 400);
            assert_eq!(r.error_type, "Runtime.Unavailable");
            assert_eq!(r.body, r#"{"errorType":"Runtime.Unavailable"}"#);
        }
        other => panic!("{other:?}"),
    }
    let rejected = ll.events("invoke.rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].fields["inFlight"], 2);
    // Nothing of the rejected invoke reached the Telemetry API.
    let emitted = types(&ll.telemetry_emitted());
    assert_eq!(emitted.iter().filter(|t| *t == "platform.start").count(), 2);
    // The workers come back to next; the environment takes invokes again.
    idle_workers(&ll, 2).await;
    let ok = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(ok.status, InvokeStatus::Success);
    assert!(!ok.cold_start);
    // No extension at all: the RIE SIGKILLs the runtime at shutdown, no SIGTERM.
    let report = ll.shutdown().await.unwrap();
    let rt = report.runtime.unwrap();
    assert!(rt.killed && rt.signal == Some(9), "{rt:?}");
    assert!(ll.events("runtime.sigterm").is_empty());
    assert!(layer.records_of("runtime", "sigterm").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_ends_that_invocation_only() {
    let layer = Layer::new();
    let mut cfg = layer.lmi_config(2);
    cfg.timeout = Duration::from_millis(500);
    let ll = LocalLambda::start(cfg).await.unwrap();
    idle_workers(&ll, 2).await;
    let pids = ll.pids();
    let results = ll
        .invoke_many(vec![
            InvokeRequest::json(&json!({"action": "late", "sleep": 1.0})),
            InvokeRequest::json(&json!({"sleep": 0.1})),
        ])
        .await;
    let late = results[0].as_ref().unwrap();
    assert_eq!(late.status, InvokeStatus::Timeout);
    let e = late.error.as_ref().unwrap();
    assert_eq!(e.error_type, "Sandbox.Timedout");
    assert_eq!(e.error_message, "Task timed out after 0.50 seconds");
    assert!(!late.reset);
    assert!(late.timings.duration_ms >= 490.0);
    assert_eq!(results[1].as_ref().unwrap().status, InvokeStatus::Success);
    let report = ll
        .telemetry_emitted()
        .into_iter()
        .find(|e| {
            e["type"] == "platform.report" && e["record"]["requestId"] == late.request_id.as_str()
        })
        .unwrap();
    assert_eq!(report["record"]["status"], "timeout");
    assert_eq!(report["record"]["errorType"], "Sandbox.Timedout");
    assert!(report["record"].get("spans").is_none(), "{report}");
    // The answer that comes after the timeout is gone.
    let answer = eventually(Duration::from_secs(3), || {
        layer.records_of("runtime", "late_answer").pop()
    })
    .await
    .unwrap();
    assert_eq!(answer["status"], 410);
    assert_eq!(
        answer["body"],
        json!({"errorMessage": "Invoke timeout", "errorType": "InvokeTimeout"})
    );
    // The environment was not reset.
    assert!(ll.resets().is_empty());
    assert_eq!(ll.pids(), pids);
    idle_workers(&ll, 2).await;
    let ok = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(ok.status, InvokeStatus::Success);
    assert!(!ok.cold_start);
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_crash_fails_the_environment() {
    let layer = Layer::new();
    layer.extension("ext");
    let mut cfg = layer.lmi_config(2);
    cfg.env.push(("EXT_EVENTS".into(), "SHUTDOWN".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    idle_workers(&ll, 2).await;
    let results = ll
        .invoke_many(vec![
            InvokeRequest::json(&json!({"sleep": 2.0})),
            InvokeRequest::json(&json!({"action": "crash", "sleep": 0.2})),
        ])
        .await;
    // Both the crashing invocation and the one beside it end with the runtime's exit.
    for r in &results {
        let r = r.as_ref().unwrap();
        assert_eq!(r.status, InvokeStatus::Error, "{r:?}");
        assert_eq!(r.error.as_ref().unwrap().error_type, "Runtime.ExitError");
        assert!(r.reset);
        assert!(r.timings.duration_ms < 1500.0, "{:?}", r.timings);
    }
    let failed = ll.events("environment.failed");
    assert_eq!(failed[0].str("role"), Some("runtime"));
    let resets = eventually(Duration::from_secs(5), || {
        let r = ll.resets();
        (!r.is_empty()).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(resets[0].reason, "failure");
    let shutdown = eventually(Duration::from_secs(3), || {
        layer
            .records_of("ext", "event")
            .into_iter()
            .find(|e| e["event"]["eventType"] == "SHUTDOWN")
    })
    .await
    .unwrap();
    assert_eq!(shutdown["event"]["shutdownReason"], "failure");
    // A new environment serves the next invoke.
    let r = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(r.status, InvokeStatus::Success, "{r:?}");
    assert!(r.cold_start);
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_terminates_the_runtime_before_the_extensions_hear_of_it() {
    let layer = Layer::new();
    layer.extension("ext");
    let mut cfg = layer.lmi_config(2);
    cfg.env.push(("EXT_EVENTS".into(), "SHUTDOWN".into()));
    let ll = Arc::new(LocalLambda::start(cfg).await.unwrap());
    idle_workers(&ll, 2).await;
    let running = tokio::spawn({
        let ll = Arc::clone(&ll);
        async move { ll.invoke(InvokeRequest::json(&json!({"sleep": 5}))).await }
    });
    eventually(Duration::from_secs(3), || {
        (ll.concurrency_now().0 == 1).then_some(())
    })
    .await
    .unwrap();
    let before = now_epoch_ms();
    let report = ll.shutdown().await.unwrap();
    // The invocation in flight ended first.
    let r = running.await.unwrap().unwrap();
    assert_eq!(r.status, InvokeStatus::Failure);
    assert_eq!(
        r.error.unwrap().error_type,
        "Client.ExecutionEnvironmentShutDown"
    );
    // SIGTERM to the runtime, its exit, then SHUTDOWN(spindown, start + 2 s) to the extension.
    assert_eq!(report.reason, "spindown");
    assert!(
        report.deadline_ms >= before + 1990 && report.deadline_ms <= now_epoch_ms() + 2000,
        "{}",
        report.deadline_ms
    );
    let at = |kind: &str| ll.events(kind)[0].at_ms;
    let delivered = ll
        .events("extension.event_delivered")
        .into_iter()
        .find(|e| e.fields["eventType"] == "SHUTDOWN")
        .unwrap();
    let runtime_exit = ll
        .events("process.exit")
        .into_iter()
        .find(|e| e.str("role") == Some("runtime"))
        .unwrap();
    assert!(at("shutdown.start") <= at("runtime.sigterm"));
    assert!(at("runtime.sigterm") <= runtime_exit.at_ms);
    assert!(runtime_exit.at_ms <= delivered.at_ms);
    let sigterm = &layer.records_of("runtime", "sigterm")[0];
    let ext_shutdown = layer
        .records_of("ext", "event")
        .into_iter()
        .find(|e| e["event"]["eventType"] == "SHUTDOWN")
        .unwrap();
    assert!(sigterm["t"].as_f64().unwrap() <= ext_shutdown["t"].as_f64().unwrap());
    assert_eq!(
        ext_shutdown["event"],
        json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": report.deadline_ms})
    );
    let rt = report.runtime.unwrap();
    assert_eq!(rt.exit_code, Some(0));
    assert!(!rt.killed);
    let ext = &report.extensions[0];
    assert_eq!(ext.exit.exit_code, Some(0));
    assert!(!ext.exit.killed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadlines_600_ms_for_the_runtime_2_s_for_the_extensions() {
    let layer = Layer::new();
    layer.extension("stuck");
    let mut cfg = layer.lmi_config(1);
    for (k, v) in [
        ("EXT_EVENTS", "SHUTDOWN"),
        ("STUCK_EXT_SHUTDOWN_MODE", "hang"),
        ("RUNTIME_IGNORE_SIGTERM", "1"),
    ] {
        cfg.env.push((k.into(), v.into()));
    }
    let ll = LocalLambda::start(cfg).await.unwrap();
    let report = ll.shutdown().await.unwrap();
    // The runtime ignored SIGTERM: SIGKILLed 600 ms later.
    let rt = report.runtime.unwrap();
    assert!(rt.killed && rt.signal == Some(9), "{rt:?}");
    let after = rt.exited_after_ms.unwrap();
    assert!((550.0..1500.0).contains(&after), "{after}");
    assert_eq!(layer.records_of("runtime", "sigterm").len(), 1);
    let sigkill = &ll.events("runtime.sigkill")[0];
    // Only then the extension's SHUTDOWN, whose deadline still counts from the start.
    let delivered = ll
        .events("extension.event_delivered")
        .into_iter()
        .find(|e| e.fields["eventType"] == "SHUTDOWN")
        .unwrap();
    assert!(delivered.at_ms >= sigkill.at_ms);
    let stuck = &report.extensions[0];
    assert!(stuck.received_shutdown);
    assert!(
        stuck.exit.killed && stuck.exit.signal == Some(9),
        "{stuck:?}"
    );
    let after = stuck.exit.exited_after_ms.unwrap();
    assert!((1950.0..4000.0).contains(&after), "{after}");
    assert!(report.duration_ms >= 1950.0);
    assert!(ll.pids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_extensions_may_register_no_event() {
    let layer = Layer::new();
    let mut cfg = layer.lmi_config(1);
    cfg.env
        .push(("RUNTIME_INTERNAL_EXTENSION".into(), "INVOKE".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    assert!(matches!(ll.init_outcome(), Some(InitOutcome::Ready(_))));
    let reg = &layer.records_of("runtime", "internal_register")[0];
    assert_eq!(reg["status"], 403);
    assert_eq!(
        reg["body"],
        json!({"errorMessage": "No events allowed for internal extensions",
               "errorType": "Extension.InvalidEventType"})
    );
    // Init is over: registration is closed to newcomers.
    let r = request(
        ll.runtime_api(),
        "POST",
        "/2020-01-01/extension/register",
        &[("Lambda-Extension-Name", "late")],
        br#"{"events":[]}"#,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["errorType"], "Extension.RegistrationClosed");
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_runs_many_invocations_and_rejects_when_busy() {
    let layer = Layer::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-lambda"))
        .args(["--managed-instances", "2", "--timeout-ms", "3000"])
        .args([
            "--env",
            &format!("RUNTIME_LOG={}", layer.runtime_log().display()),
        ])
        .args(["--log-dir", layer.dir.join("logs").to_str().unwrap()])
        .arg("--")
        .arg(common::python())
        .arg(common::fixtures().join("runtime_lmi.py"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let hello: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(hello["init"]["status"], "success", "{hello}");
    assert_eq!(hello["maxConcurrency"], 2);
    let control: SocketAddr = hello["control"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let call = |method: &'static str, path: &'static str, body: Value| async move {
        let r = request(
            control,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        (r.status, r.header("error-type").map(str::to_owned), v)
    };
    let health = || async move {
        let (_, _, h) = call("GET", "/health", json!(null)).await;
        h
    };
    eventually_async(|| async { (health().await["idleWorkers"] == 2).then_some(()) }).await;
    let h = health().await;
    assert_eq!(h["initializationType"], "lambda-managed-instances");
    assert_eq!(h["maxConcurrency"], 2);

    // Three at once on two workers: two answered, one rejected as the RIE rejects it.
    let (status, _, many) = call(
        "POST",
        "/invoke-many",
        json!({"count": 3, "payload": {"sleep": 0.5}}),
    )
    .await;
    assert_eq!(status, 200);
    let results = many["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    let ok: Vec<&Value> = results
        .iter()
        .filter(|r| r["status"] == "success")
        .collect();
    assert_eq!(ok.len(), 2, "{many}");
    assert_ne!(ok[0]["requestId"], ok[1]["requestId"]);
    for r in &ok {
        assert_eq!(r["response"]["requestId"], r["requestId"]);
    }
    let rejected = results.iter().find(|r| r["status"] == "rejected").unwrap();
    assert_eq!(
        rejected,
        &json!({"status": "rejected", "httpStatus": 400, "errorType": "Runtime.Unavailable",
                "body": "{\"errorType\":\"Runtime.Unavailable\"}"})
    );

    // A single /invoke while both workers are busy: 400 with the RIE's Error-Type.
    eventually_async(|| async { (health().await["idleWorkers"] == 2).then_some(()) }).await;
    let busy = tokio::spawn(call(
        "POST",
        "/invoke-many",
        json!({"invokes": [{"payload": {"sleep": 1.0}}, {"payload": {"sleep": 1.0}}]}),
    ));
    eventually_async(|| async { (health().await["inFlight"] == 2).then_some(()) }).await;
    let (status, error_type, body) = call("POST", "/invoke", json!({"payload": {}})).await;
    assert_eq!(status, 400);
    assert_eq!(error_type.as_deref(), Some("Runtime.Unavailable"));
    assert_eq!(body["status"], "rejected");
    let (_, _, both) = busy.await.unwrap();
    assert!(
        both["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "success"),
        "{both}"
    );

    let (status, _, report) = call("POST", "/shutdown", json!(null)).await;
    assert_eq!(status, 200);
    assert_eq!(report["reason"], "spindown");
    let end = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "local-lambda did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success());
}

/// Poll an async check every 20 ms for at most 5 s.
async fn eventually_async<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        if f().await.is_some() {
            return;
        }
        assert!(Instant::now() < end, "condition not met in 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
