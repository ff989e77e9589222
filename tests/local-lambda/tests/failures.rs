//! Timeouts, crashes, init failures, the shutdown deadline, and freezing.

// Test helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Layer, eventually};
use local_lambda::{InitOutcome, InvokeRequest, InvokeStatus, LocalLambda};
use serde_json::json;

fn shutdown_events(layer: &Layer, name: &str) -> Vec<serde_json::Value> {
    layer
        .records_of(name, "event")
        .into_iter()
        .filter(|e| e["event"]["eventType"] == "SHUTDOWN")
        .map(|e| e["event"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_resets_the_environment() {
    let layer = Layer::new();
    layer.extension("ext");
    let mut cfg = layer.config();
    cfg.timeout = Duration::from_millis(800);
    let ll = LocalLambda::start(cfg).await.unwrap();
    let first_pids = ll.pids();
    let r = ll
        .invoke(InvokeRequest::json(
            &json!({"action": "sleep", "seconds": 30}),
        ))
        .await
        .unwrap();
    assert_eq!(r.status, InvokeStatus::Timeout);
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.error_type, "Sandbox.Timedout");
    assert!(
        e.error_message.ends_with(&format!(
            "{} Task timed out after 0.80 seconds",
            r.request_id
        )),
        "{e:?}"
    );
    assert!(r.reset);
    assert!(r.timings.duration_ms >= 790.0);

    let emitted = ll.telemetry_emitted();
    let rd = emitted
        .iter()
        .find(|e| e["type"] == "platform.runtimeDone")
        .unwrap();
    assert_eq!(rd["record"]["status"], "timeout");
    let report = emitted
        .iter()
        .find(|e| e["type"] == "platform.report")
        .unwrap();
    assert_eq!(report["record"]["status"], "timeout");

    // Reset: runtime killed first, then SHUTDOWN(timeout) to the extension, which exits.
    let resets = ll.resets();
    assert_eq!(resets.len(), 1);
    let reset = &resets[0];
    assert_eq!(reset.reason, "timeout");
    let rt = reset.runtime.as_ref().unwrap();
    assert!(rt.killed && rt.signal == Some(9), "{rt:?}");
    assert_eq!(reset.extensions[0].exit.exit_code, Some(0));
    let sd = shutdown_events(&layer, "ext");
    assert_eq!(sd.len(), 1);
    assert_eq!(sd[0]["shutdownReason"], "timeout");
    assert_eq!(sd[0]["deadlineMs"], reset.deadline_ms);
    let rt_exit = ll
        .events("process.exit")
        .into_iter()
        .find(|e| e.str("role") == Some("runtime"))
        .unwrap();
    let ext_shutdown = ll
        .events("extension.event_delivered")
        .into_iter()
        .find(|e| e.fields["eventType"] == "SHUTDOWN")
        .unwrap();
    assert!(rt_exit.at_ms <= ext_shutdown.at_ms);

    // The next invoke initialises a new environment: new processes, cold start.
    let r2 = ll
        .invoke(InvokeRequest::json(&json!({"n": 2})))
        .await
        .unwrap();
    assert_eq!(r2.status, InvokeStatus::Success, "{r2:?}");
    assert!(r2.cold_start && r2.timings.init_ms.is_some());
    let new_pids = ll.pids();
    assert_eq!(new_pids.len(), 2);
    assert!(new_pids.iter().all(|p| !first_pids.contains(p)));
    assert_eq!(layer.records_of("ext", "registered").len(), 2);
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_crash_is_a_failure_and_resets() {
    let layer = Layer::new();
    layer.extension("ext");
    let ll = LocalLambda::start(layer.config()).await.unwrap();
    let r = ll
        .invoke(InvokeRequest::json(&json!({"action": "crash", "code": 7})))
        .await
        .unwrap();
    assert_eq!(r.status, InvokeStatus::Failure);
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.error_type, "Runtime.ExitError");
    assert!(e.error_message.contains("exit status 7"), "{e:?}");
    assert!(r.reset);
    let rd = ll
        .telemetry_emitted()
        .into_iter()
        .find(|e| e["type"] == "platform.runtimeDone")
        .unwrap();
    assert_eq!(rd["record"]["status"], "failure");
    assert_eq!(rd["record"]["errorType"], "Runtime.ExitError");
    assert_eq!(
        shutdown_events(&layer, "ext")[0]["shutdownReason"],
        "failure"
    );
    let ok = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(ok.status, InvokeStatus::Success);
    assert!(ok.cold_start);
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_crash_during_invoke_is_a_failure() {
    let layer = Layer::new();
    layer.extension("fragile");
    let mut cfg = layer.config();
    cfg.env
        .push(("FRAGILE_EXT_CRASH_ON_INVOKE".into(), "1".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    let r = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert!(r.reset);
    let report = ll
        .telemetry_emitted()
        .into_iter()
        .find(|e| e["type"] == "platform.report")
        .unwrap();
    assert_eq!(report["record"]["status"], "failure");
    assert_eq!(report["record"]["errorType"], "Extension.Crash");
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_failures() {
    // An extension that exits before registering.
    let layer = Layer::new();
    layer.extension("quitter");
    let mut cfg = layer.config();
    cfg.env
        .push(("QUITTER_EXT_EXIT_BEFORE_REGISTER".into(), "1".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    match ll.init_outcome() {
        Some(InitOutcome::Failed { error_type, .. }) => assert_eq!(error_type, "Extension.Crash"),
        other => panic!("{other:?}"),
    }
    // The runtime never started: Lambda starts it only after every extension registered.
    assert!(
        ll.events("process.start")
            .iter()
            .all(|e| e.str("role") != Some("runtime"))
    );
    let r = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(r.status, InvokeStatus::Failure);
    assert_eq!(r.error.unwrap().error_type, "Extension.Crash");
    drop(ll);

    // A runtime that reports an init error.
    let layer = Layer::new();
    let mut cfg = layer.config();
    cfg.env.push(("RUNTIME_INIT_ERROR".into(), "1".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    match ll.init_outcome() {
        Some(InitOutcome::Failed {
            error_type, status, ..
        }) => {
            assert_eq!(error_type, "Runtime.TestInit");
            assert_eq!(*status, InvokeStatus::Error);
        }
        other => panic!("{other:?}"),
    }
    let init_report = ll
        .telemetry_emitted()
        .into_iter()
        .find(|e| e["type"] == "platform.initReport")
        .unwrap();
    assert_eq!(init_report["record"]["status"], "error");
    assert_eq!(init_report["record"]["errorType"], "Runtime.TestInit");
    drop(ll);

    // An extension that never registers: the init timeout.
    let layer = Layer::new();
    layer.extension("sleepy");
    let mut cfg = layer.config();
    cfg.init_timeout = Duration::from_millis(500);
    cfg.env
        .push(("SLEEPY_EXT_REGISTER_DELAY_MS".into(), "60000".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    match ll.init_outcome() {
        Some(InitOutcome::Failed {
            error_type, status, ..
        }) => {
            assert_eq!(error_type, "Sandbox.Timedout");
            assert_eq!(*status, InvokeStatus::Timeout);
        }
        other => panic!("{other:?}"),
    }
    assert!(ll.pids().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sigkills_a_stuck_extension_at_the_deadline() {
    let layer = Layer::new();
    layer
        .extension("stuck")
        .extension("tidy")
        .extension("invoke-only");
    let mut cfg = layer.config();
    cfg.env
        .push(("STUCK_EXT_SHUTDOWN_MODE".into(), "hang".into()));
    cfg.env
        .push(("INVOKE_ONLY_EXT_EVENTS".into(), "INVOKE".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    let report = ll.shutdown().await.unwrap();
    let get = |n: &str| report.extensions.iter().find(|e| e.name == n).unwrap();
    let stuck = get("stuck");
    assert!(stuck.received_shutdown);
    assert!(
        stuck.exit.killed && stuck.exit.signal == Some(9),
        "{stuck:?}"
    );
    let after = stuck.exit.exited_after_ms.unwrap();
    assert!((1950.0..4000.0).contains(&after), "{after}");
    let tidy = get("tidy");
    assert_eq!(tidy.exit.exit_code, Some(0));
    assert!(!tidy.exit.killed);
    assert!(tidy.exit.exited_after_ms.unwrap() < 1500.0);
    // Not registered for SHUTDOWN: gets no event, is stopped.
    let inv = get("invoke-only");
    assert!(!inv.received_shutdown && inv.exit.killed);
    assert!(shutdown_events(&layer, "invoke-only").is_empty());
    assert!(report.duration_ms >= 1950.0);
    assert!(ll.pids().is_empty());
}

fn proc_state(pid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // "pid (comm) S ..."
    stat.rsplit(')')
        .next()
        .unwrap()
        .trim()
        .chars()
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_stops_the_sandbox_between_invocations() {
    let layer = Layer::new();
    layer.extension("tele");
    let mut cfg = layer.config();
    cfg.freeze = true;
    cfg.env.push(("TELE_EXT_TELEMETRY".into(), "1".into()));
    // Batches wait 1 s: invocation 1's report is still buffered when the sandbox freezes.
    cfg.env
        .push(("TELE_EXT_TELEMETRY_TIMEOUT_MS".into(), "1000".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    let r1 = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(r1.status, InvokeStatus::Success);
    let pids = ll.pids();
    assert_eq!(pids.len(), 2);
    for p in &pids {
        let st = eventually(Duration::from_secs(2), || {
            let s = proc_state(*p);
            (s == 'T').then_some(s)
        })
        .await;
        assert_eq!(st, Some('T'), "pid {p} not stopped");
    }
    // The report of invocation 1 waits for the thaw.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let has_report = |rid: &str| {
        layer
            .telemetry("tele")
            .iter()
            .any(|e| e["type"] == "platform.report" && e["record"]["requestId"] == rid)
    };
    assert!(!has_report(&r1.request_id));
    // Invocation 2 keeps the sandbox thawed for 1.5 s: the buffered report goes out meanwhile
    // (as on Lambda, where a report often arrives during the next invocation).
    let r2 = ll
        .invoke(InvokeRequest::json(
            &json!({"action": "sleep", "seconds": 1.5}),
        ))
        .await
        .unwrap();
    assert_eq!(r2.status, InvokeStatus::Success);
    assert!(!r2.cold_start);
    assert!(ll.events("thaw").len() == 1 && ll.events("freeze").len() == 2);
    assert!(has_report(&r1.request_id));
    let delivered = ll
        .telemetry_deliveries()
        .into_iter()
        .find(|d| {
            d.ok && d.events.iter().any(|e| {
                e["record"]["requestId"] == r1.request_id.as_str() && e["type"] == "platform.report"
            })
        })
        .unwrap();
    assert!(delivered.at_ms > ll.events("thaw")[0].at_ms);
    let report = ll.shutdown().await.unwrap();
    assert_eq!(report.extensions[0].exit.exit_code, Some(0));
}
