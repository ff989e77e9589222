//! Spans from the real OpenTelemetry Python and Node.js SDKs arrive intact: Python over
//! HTTP/protobuf (plain, gzip, deflate), gRPC (grpcio; plain, gzip) and HTTP/JSON; Node over
//! HTTP/JSON and HTTP/protobuf (chunked bodies; plain, gzip). Each SDK is configured only through
//! the standard `OTEL_EXPORTER_OTLP_*` variables, as in a Lambda function.
//!
//! They need the SDKs installed, so they are ignored by default:
//!
//! ```sh
//! python3 -m venv /tmp/sdkvenv && /tmp/sdkvenv/bin/pip install opentelemetry-sdk \
//!     opentelemetry-exporter-otlp-proto-http opentelemetry-exporter-otlp-proto-grpc
//! # the JSON exporter pins other versions of shared packages: a venv of its own
//! python3 -m venv /tmp/jsonvenv && /tmp/jsonvenv/bin/pip install opentelemetry-sdk \
//!     opentelemetry-exporter-otlp-json-http
//! mkdir /tmp/nodecheck && cd /tmp/nodecheck && npm init -y && npm install @opentelemetry/api \
//!     @opentelemetry/resources @opentelemetry/sdk-trace-base \
//!     @opentelemetry/exporter-trace-otlp-http @opentelemetry/exporter-trace-otlp-proto
//! OTEL_XRAY_TEST_PYTHON=/tmp/sdkvenv/bin/python OTEL_XRAY_TEST_PYTHON_JSON=/tmp/jsonvenv/bin/python \
//!     OTEL_XRAY_TEST_NODE_MODULES=/tmp/nodecheck/node_modules \
//!     cargo test -p otel-xray-extension --test receiver_other_sdks -- --ignored
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod receiver_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use receiver_support::Harness;

const MB: usize = 1024 * 1024;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs an export script (`cmd`) and checks the two spans in the buffer.
fn script_round_trip(mut cmd: Command, protocol: &str, compression: &str) {
    let h = Harness::start(4 * MB, 1000);
    let port = if protocol == "grpc" {
        h.grpc.port()
    } else {
        h.http.port()
    };
    cmd.arg(protocol)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    )
    .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    .env("OTEL_EXPORTER_OTLP_INSECURE", "true");
    // The Python gRPC exporter refuses "none": leave the variable unset instead.
    if compression != "none" {
        cmd.env("OTEL_EXPORTER_OTLP_COMPRESSION", compression);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{protocol}/{compression}: the exporter did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{protocol}/{compression}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let batch = rt.block_on(h.drain());
    assert_eq!(batch.spans, 2, "{protocol}/{compression}");
    let decoded = batch.decode().unwrap();
    let rs = &decoded[0];
    let service = rs
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    let service = match service {
        Some(Value::StringValue(s)) => s,
        other => panic!("service.name {other:?}"),
    };
    assert!(service.ends_with("-sdk-test"), "{service}");
    let spans: Vec<_> = rs.scope_spans.iter().flat_map(|ss| &ss.spans).collect();
    let server = spans.iter().find(|s| s.name == "GET /orders").unwrap();
    let client = spans.iter().find(|s| s.name == "SELECT orders").unwrap();
    assert_eq!(hex(&server.trace_id), ids["trace_id"]);
    assert_eq!(hex(&server.span_id), ids["parent"]);
    assert_eq!(hex(&client.span_id), ids["child"]);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!((server.kind, client.kind), (2, 3));
    let code = server
        .attributes
        .iter()
        .find(|kv| kv.key == "http.response.status_code")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(code, Some(Value::IntValue(502)));
    let status = client.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, "db down"));
    assert_eq!(client.events[0].name, "exception");
}

fn script(name: &str) -> String {
    format!(
        "{}/tests/fixtures/receiver/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn python(var: &str) -> Command {
    let py = std::env::var(var)
        .unwrap_or_else(|_| panic!("set {var} to a Python with the OpenTelemetry SDK"));
    let mut cmd = Command::new(py);
    cmd.arg(script("python_export.py"));
    cmd
}

fn node() -> Command {
    let modules = std::env::var("OTEL_XRAY_TEST_NODE_MODULES").unwrap_or_else(|_| {
        panic!("set OTEL_XRAY_TEST_NODE_MODULES to a node_modules with the OpenTelemetry SDK")
    });
    let mut cmd = Command::new("node");
    cmd.arg(script("node_export.js")).env("NODE_PATH", modules);
    cmd
}

#[test]
#[ignore = "needs the OpenTelemetry Python SDK: set OTEL_XRAY_TEST_PYTHON"]
fn python_sdk_http_protobuf_and_grpc() {
    for (protocol, compression) in [
        ("http/protobuf", "none"),
        ("http/protobuf", "gzip"),
        ("http/protobuf", "deflate"),
        ("grpc", "none"),
        // The Python gRPC exporter takes only gzip from the environment.
        ("grpc", "gzip"),
    ] {
        script_round_trip(python("OTEL_XRAY_TEST_PYTHON"), protocol, compression);
    }
}

#[test]
#[ignore = "needs the OpenTelemetry Python JSON exporter: set OTEL_XRAY_TEST_PYTHON_JSON"]
fn python_sdk_http_json() {
    for compression in ["none", "gzip"] {
        script_round_trip(
            python("OTEL_XRAY_TEST_PYTHON_JSON"),
            "http/json",
            compression,
        );
    }
}

#[test]
#[ignore = "needs the OpenTelemetry JS SDK: set OTEL_XRAY_TEST_NODE_MODULES"]
fn node_sdk_http_json_and_protobuf() {
    for (protocol, compression) in [
        ("http/json", "none"),
        ("http/json", "gzip"),
        ("http/protobuf", "none"),
        ("http/protobuf", "gzip"),
    ] {
        script_round_trip(node(), protocol, compression);
    }
}
