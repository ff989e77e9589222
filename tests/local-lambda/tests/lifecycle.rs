//! The lifecycle against real processes: the Python test runtime and extensions.

// Test helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Layer, eventually, now_epoch_ms};
use local_lambda::{InitOutcome, InvokeRequest, InvokeStatus, LocalLambda};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_invoke_and_shutdown_as_lambda_does() {
    let layer = Layer::new();
    layer.extension("alpha").extension("beta");
    let mut cfg = layer.config();
    cfg.function_name = "fn-under-test".into();
    cfg.env.push(("USER_VAR".into(), "user-value".into()));
    // beta registers late: the runtime must still start only after it.
    cfg.env
        .push(("BETA_EXT_REGISTER_DELAY_MS".into(), "300".into()));
    cfg.env
        .push(("ALPHA_EXT_ACCEPT_ACCOUNT_ID".into(), "1".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    assert!(
        matches!(ll.init_outcome(), Some(InitOutcome::Ready(_))),
        "{:?}",
        ll.init_outcome()
    );

    // Registration before runtime start.
    let registers = ll.events("extension.register");
    assert_eq!(registers.len(), 2);
    let runtime_start = ll
        .events("process.start")
        .into_iter()
        .find(|e| e.str("role") == Some("runtime"))
        .unwrap();
    for r in &registers {
        assert!(
            r.at_ms < runtime_start.at_ms,
            "{r:?} after {runtime_start:?}"
        );
    }
    // Register responses: identifier, function metadata, accountId only when asked.
    let alpha_reg = &layer.records_of("alpha", "registered")[0];
    assert_eq!(alpha_reg["status"], 200);
    assert_eq!(alpha_reg["body"]["functionName"], "fn-under-test");
    assert_eq!(alpha_reg["body"]["functionVersion"], "$LATEST");
    assert_eq!(alpha_reg["body"]["handler"], "index.handler");
    assert_eq!(alpha_reg["body"]["accountId"], "123456789012");
    let beta_reg = &layer.records_of("beta", "registered")[0];
    assert!(beta_reg["body"].get("accountId").is_none());
    assert!(uuid::Uuid::parse_str(beta_reg["id"].as_str().unwrap()).is_ok());

    // The runtime's environment.
    let start = &layer.records("runtime")[0];
    assert_eq!(start["kind"], "start");
    assert_eq!(start["env"]["AWS_LAMBDA_FUNCTION_NAME"], "fn-under-test");
    assert_eq!(start["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
    assert_eq!(start["env"]["USER_VAR"], "user-value");
    assert_eq!(start["env"]["TZ"], ":UTC");
    assert!(start["env"]["AWS_ACCESS_KEY_ID"].is_string());

    // First invoke: cold start, the event and its headers.
    let before = now_epoch_ms();
    let mut req = InvokeRequest::json(&json!({"hello": "world"}));
    req.client_context = Some(r#"{"custom":{"k":"v"}}"#.into());
    let r = ll.invoke(req).await.unwrap();
    assert_eq!(r.status, InvokeStatus::Success, "{r:?}");
    assert!(r.cold_start);
    assert!(r.timings.init_ms.is_some());
    let resp = r.response_json().unwrap();
    assert_eq!(resp["echo"], json!({"hello": "world"}));
    assert_eq!(resp["requestId"], r.request_id.as_str());
    // PassThrough tracing without a caller header: Root, Parent, Sampled=0.
    let trace = resp["traceId"].as_str().unwrap();
    assert_eq!(trace, r.trace_header);
    assert!(
        trace.starts_with("Root=1-") && trace.ends_with(";Sampled=0"),
        "{trace}"
    );

    let ev = &layer.records_of("runtime", "event")[0];
    let h = &ev["headers"];
    assert_eq!(h["Lambda-Runtime-Aws-Request-Id"], r.request_id.as_str());
    assert_eq!(
        h["Lambda-Runtime-Invoked-Function-Arn"],
        "arn:aws:lambda:us-east-1:123456789012:function:fn-under-test"
    );
    assert_eq!(
        h["Lambda-Runtime-Client-Context"],
        r#"{"custom":{"k":"v"}}"#
    );
    assert!(h.get("Lambda-Runtime-Cognito-Identity").is_none());
    let deadline: u64 = h["Lambda-Runtime-Deadline-Ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        deadline >= before + 3000 && deadline <= now_epoch_ms() + 3000,
        "{deadline}"
    );

    // Both extensions got the same INVOKE, shaped as the Extensions API says.
    for name in ["alpha", "beta"] {
        let invokes: Vec<_> = layer
            .records_of(name, "event")
            .into_iter()
            .filter(|e| e["event"]["eventType"] == "INVOKE")
            .collect();
        assert_eq!(invokes.len(), 1, "{name}");
        let e = &invokes[0]["event"];
        assert_eq!(e["requestId"], r.request_id.as_str());
        assert_eq!(e["deadlineMs"], deadline);
        assert_eq!(
            e["invokedFunctionArn"],
            "arn:aws:lambda:us-east-1:123456789012:function:fn-under-test"
        );
        assert_eq!(
            e["tracing"],
            json!({"type": "X-Amzn-Trace-Id", "value": trace})
        );
        assert!(invokes[0]["eventId"].is_string());
    }

    // Second invoke: warm, with a caller trace header passed through unchanged.
    let given = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let r2 = ll
        .invoke(InvokeRequest::json(&json!({"n": 2})).with_trace_header(given))
        .await
        .unwrap();
    assert_eq!(r2.status, InvokeStatus::Success);
    assert!(!r2.cold_start);
    assert!(r2.timings.init_ms.is_none());
    assert_eq!(r2.response_json().unwrap()["traceId"], given);

    // A second answer for the same request is refused.
    let r3 = ll
        .invoke(InvokeRequest::json(&json!({"answerTwice": true})))
        .await
        .unwrap();
    assert_eq!(r3.status, InvokeStatus::Success);
    let second = eventually(Duration::from_secs(3), || {
        layer.records_of("runtime", "second_answer").pop()
    })
    .await
    .unwrap();
    assert_eq!(second["status"], 400);
    assert_eq!(second["body"]["errorType"], "InvalidRequestID");

    // Shutdown: SIGTERM to the runtime, SHUTDOWN(spindown) to the extensions, all exit.
    let t = now_epoch_ms();
    let report = ll.shutdown().await.unwrap();
    assert_eq!(report.reason, "spindown");
    assert!(report.deadline_ms >= t + 1900 && report.deadline_ms <= now_epoch_ms() + 2000);
    for ext in &report.extensions {
        assert!(ext.registered && ext.received_shutdown, "{ext:?}");
        assert_eq!(ext.exit.exit_code, Some(0), "{ext:?}");
        assert!(!ext.exit.killed);
        assert_eq!(ext.event_next_count, 4, "{ext:?}"); // after init, after each of 3 invokes (the last gets SHUTDOWN)
        let shutdown = layer
            .records_of(&ext.name, "event")
            .into_iter()
            .find(|e| e["event"]["eventType"] == "SHUTDOWN")
            .unwrap();
        assert_eq!(
            shutdown["event"],
            json!({"eventType": "SHUTDOWN", "shutdownReason": "spindown", "deadlineMs": report.deadline_ms})
        );
    }
    let runtime = report.runtime.unwrap();
    assert!(!runtime.killed, "{runtime:?}");
    assert_eq!(runtime.exit_code, Some(0));
    assert_eq!(layer.records_of("runtime", "sigterm").len(), 1);
    assert!(ll.invoke(InvokeRequest::default()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invocation_ends_when_every_extension_is_back_in_next() {
    let layer = Layer::new();
    layer.extension("slow").extension("quick");
    let mut cfg = layer.config();
    cfg.env
        .push(("SLOW_EXT_POST_INVOKE_SLEEP_MS".into(), "300".into()));
    let ll = LocalLambda::start(cfg).await.unwrap();
    let r = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(r.status, InvokeStatus::Success);
    let t = &r.timings;
    let slow = t.extensions.iter().find(|e| e.name == "slow").unwrap();
    let quick = t.extensions.iter().find(|e| e.name == "quick").unwrap();
    assert!(slow.after_runtime_done_ms.unwrap() >= 250.0, "{t:?}");
    assert!(quick.after_runtime_done_ms.unwrap() < slow.after_runtime_done_ms.unwrap());
    // The invoke phase ended with the slow extension's event/next, not with the response.
    assert!(t.post_runtime_ms.unwrap() >= 250.0, "{t:?}");
    assert!(t.completed_at_ms >= slow.next_at_ms.unwrap());
    assert!(t.runtime_done_at_ms.unwrap() + 250.0 <= t.completed_at_ms);
    // The timeline has the same facts.
    let nexts: Vec<_> = ll
        .events("extension.next")
        .into_iter()
        .filter(|e| e.str("requestId") == Some(r.request_id.as_str()))
        .collect();
    assert_eq!(nexts.len(), 2);
    let slow_next = nexts
        .iter()
        .find(|e| e.str("name") == Some("slow"))
        .unwrap();
    assert!(slow_next.fields["afterRuntimeDoneMs"].as_f64().unwrap() >= 250.0);
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_wrapper_starts_the_runtime() {
    let layer = Layer::new();
    let mut cfg = layer.config();
    let wrapper = common::fixtures().join("wrapper.sh");
    cfg.env.push((
        "AWS_LAMBDA_EXEC_WRAPPER".into(),
        wrapper.to_string_lossy().into_owned(),
    ));
    let ll = LocalLambda::start(cfg.clone()).await.unwrap();
    let r = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(r.response_json().unwrap()["wrapped"], "1");
    let start = ll
        .events("process.start")
        .into_iter()
        .find(|e| e.str("role") == Some("runtime"))
        .unwrap();
    let argv: Vec<String> = serde_json::from_value(start.fields["argv"].clone()).unwrap();
    assert_eq!(argv[0], wrapper.to_string_lossy());
    assert_eq!(argv[1..], cfg.runtime_cmd[..]);
    let rt = &layer.records("runtime")[0];
    assert_eq!(rt["wrapped"], "1");
    assert_eq!(
        rt["env"]["AWS_LAMBDA_EXEC_WRAPPER"],
        wrapper.to_string_lossy().as_ref()
    );
    ll.shutdown().await.unwrap();
    // Each process's output is captured to its own files.
    let out = std::fs::read_to_string(ll.output_path("runtime", "runtime", "stdout")).unwrap();
    assert_eq!(out, "runtime started\n");
    let err = std::fs::read_to_string(ll.output_path("runtime", "runtime", "stderr")).unwrap();
    assert_eq!(err, "runtime stderr line\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_error_is_reported_without_reset() {
    let layer = Layer::new();
    layer.extension("ext");
    let ll = LocalLambda::start(layer.config()).await.unwrap();
    let r = ll
        .invoke(InvokeRequest::json(&json!({"action": "error"})))
        .await
        .unwrap();
    assert_eq!(r.status, InvokeStatus::Error);
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.error_type, "Function.TestError");
    assert_eq!(e.error_message, "it failed");
    assert!(!r.reset);
    let rd = ll
        .telemetry_emitted()
        .into_iter()
        .find(|e| e["type"] == "platform.runtimeDone")
        .unwrap();
    assert_eq!(rd["record"]["status"], "error");
    assert_eq!(rd["record"]["errorType"], "Function.TestError");
    // Same processes serve the next invoke.
    let pids = ll.pids();
    let ok = ll.invoke(InvokeRequest::json(&json!({}))).await.unwrap();
    assert_eq!(ok.status, InvokeStatus::Success);
    assert!(!ok.cold_start);
    assert_eq!(ll.pids(), pids);
    ll.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_responses_and_stream_errors() {
    let layer = Layer::new();
    let ll = LocalLambda::start(layer.config()).await.unwrap();
    let r = ll
        .invoke(InvokeRequest::json(&json!({"action": "stream"})))
        .await
        .unwrap();
    assert_eq!(r.status, InvokeStatus::Success, "{r:?}");
    assert_eq!(
        r.response_json().unwrap(),
        json!({"part": "one", "done": true})
    );
    // Three chunks 50 ms apart: the response took a while after its first byte.
    assert!(
        r.timings.response_duration_ms.unwrap() >= 80.0,
        "{:?}",
        r.timings
    );
    let rd = ll
        .telemetry_emitted()
        .into_iter()
        .find(|e| e["type"] == "platform.runtimeDone")
        .unwrap();
    let spans = rd["record"]["spans"].as_array().unwrap();
    assert_eq!(spans[0]["name"], "responseLatency");
    assert_eq!(spans[1]["name"], "responseDuration");
    assert!(spans[1]["durationMs"].as_f64().unwrap() >= 80.0);
    assert_eq!(rd["record"]["metrics"]["producedBytes"], 26);

    let r = ll
        .invoke(InvokeRequest::json(&json!({"action": "stream_error"})))
        .await
        .unwrap();
    assert_eq!(r.status, InvokeStatus::Error);
    assert_eq!(r.error.unwrap().error_type, "Function.StreamFailed");
    ll.shutdown().await.unwrap();
}
