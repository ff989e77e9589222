//! The `local-lambda` binary and its control API, as the Python suite and `make demo` use it.

// Test helpers outside #[test] functions may panic too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Layer;
use local_lambda::http::request;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_invoke_timeline_shutdown() {
    let layer = Layer::new();
    layer.extension("ext");
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-lambda"))
        .args(["--layer", layer.dir.to_str().unwrap()])
        .args([
            "--function-name",
            "cli-fn",
            "--timeout-ms",
            "2000",
            "--memory-mb",
            "512",
        ])
        .args([
            "--env",
            &format!("RUNTIME_LOG={}", layer.runtime_log().display()),
        ])
        .args(["--env", &format!("EXT_LOG_DIR={}", layer.out().display())])
        .args([
            "--log-dir",
            layer.dir.join("logs").to_str().unwrap(),
            "--active-tracing",
        ])
        .arg("--")
        .arg(common::python())
        .arg(common::fixtures().join("runtime.py"))
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
    let control: SocketAddr = hello["control"]
        .as_str()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    assert!(control.ip().is_loopback());
    let api: SocketAddr = hello["runtimeApi"].as_str().unwrap().parse().unwrap();
    assert!(api.ip().is_loopback());
    let t = Duration::from_secs(10);
    let call = |method: &'static str, path: &'static str, body: Value| async move {
        let r = request(
            control,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
            t,
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        serde_json::from_slice::<Value>(&r.body).unwrap()
    };

    let health = call("GET", "/health", json!(null)).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["pids"].as_array().unwrap().len(), 2);

    let given = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";
    let r = call(
        "POST",
        "/invoke",
        json!({"payload": {"q": 1}, "traceHeader": given}),
    )
    .await;
    assert_eq!(r["status"], "success");
    assert_eq!(r["response"]["echo"], json!({"q": 1}));
    assert_eq!(r["coldStart"], true);
    // Active tracing keeps the caller's Root, sets a new Parent, samples.
    let th = r["traceHeader"].as_str().unwrap();
    assert!(
        th.starts_with("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=")
            && th.ends_with(";Sampled=1")
    );
    let timings = &r["timings"];
    assert!(timings["runtimeMs"].as_f64().unwrap() > 0.0);
    assert_eq!(timings["extensions"][0]["name"], "ext");
    assert!(timings["extensions"][0]["afterRuntimeDoneMs"].is_number());

    let timeout = call(
        "POST",
        "/invoke",
        json!({"payload": {"action": "sleep", "seconds": 10}}),
    )
    .await;
    assert_eq!(timeout["status"], "timeout");
    assert_eq!(timeout["error"]["errorType"], "Sandbox.Timedout");
    assert_eq!(timeout["reset"], true);

    let timeline = call("GET", "/timeline", json!(null)).await;
    let kinds: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "sandbox.start",
        "extension.register",
        "runtime.next",
        "invoke.start",
        "runtimeDone",
        "extension.next",
        "invoke.end",
        "shutdown.start",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    let ats: Vec<f64> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["atMs"].as_f64().unwrap())
        .collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]));
    let resets = call("GET", "/resets", json!(null)).await;
    assert_eq!(resets[0]["reason"], "timeout");

    // The reset discarded the environment; the next invoke initialises a new one.
    let again = call("POST", "/invoke", json!({"payloadText": "\"raw\""})).await;
    assert_eq!(again["status"], "success");
    assert_eq!(again["coldStart"], true);
    assert_eq!(again["response"]["echo"], "raw");

    let report = call("POST", "/shutdown", json!(null)).await;
    assert_eq!(report["reason"], "spindown");
    assert_eq!(report["extensions"][0]["name"], "ext");
    assert_eq!(report["extensions"][0]["exitCode"], 0);
    assert_eq!(report["extensions"][0]["receivedShutdown"], true);

    // The process exits by itself.
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "local-lambda did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
}

#[test]
fn bad_arguments_fail_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_local-lambda"))
        .args(["--bogus"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument"));
    let out = Command::new(env!("CARGO_BIN_EXE_local-lambda"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no runtime command"));
}
