//! The receiver's health check (`GET /otel-xray/health`), which the wrapper probes before it
//! points the function's SDK at the receiver when the Runtime API proxy is off or not answering:
//! the same answer as the proxy's, on both ports, over HTTP/1.1 and h2c, without touching the
//! buffer or the counters.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod receiver_support;

use std::time::Duration;

use bytes::Bytes;
use otel_xray::receiver::http::HEALTH_PATH;
use receiver_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn get(path: &str) -> http::Request<TestBody> {
    http::Request::get(path)
        .header(http::header::HOST, "127.0.0.1")
        .body(full(Bytes::new()))
        .unwrap()
}

fn assert_health(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    assert_eq!(reply.content_type(), "application/json", "{what}");
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "otel-xray", "version": env!("CARGO_PKG_VERSION")}),
        "{what}"
    );
}

#[test]
fn the_path_is_the_proxys() {
    assert_eq!(HEALTH_PATH, otel_xray::lambda::runtime_proxy::HEALTH_PATH);
}

#[tokio::test]
async fn answered_on_both_ports_over_http1_and_h2c() {
    let h = Harness::start(1024 * 1024, 100);
    for (addr, port) in [(h.http, "HTTP port"), (h.grpc, "gRPC port")] {
        let mut c = Http1::connect(addr).await;
        assert_health(
            &c.send(get(HEALTH_PATH)).await,
            &format!("{port}, HTTP/1.1"),
        );
        // Keep-alive: a second check on the same connection.
        assert_health(&c.send(get(HEALTH_PATH)).await, &format!("{port}, again"));
        let mut c = Http2::connect(addr).await;
        assert_health(&c.send(get(HEALTH_PATH)).await, &format!("{port}, h2c"));
    }
    let snap = h.stats.snapshot();
    assert_eq!(snap.received, 0);
    assert!(
        snap.requests_rejected.iter().all(|(_, n)| *n == 0),
        "{:?}",
        snap.requests_rejected
    );
    assert_eq!(h.drain().await.spans, 0);
}

/// The wrapper's request, byte for byte (`wrapper/src/probe.rs`): one request on a fresh
/// connection with `Connection: close`; the answer carries a Content-Length and the connection
/// then closes, so the wrapper reads it whole within its 50 ms budget.
#[tokio::test]
async fn the_wrappers_raw_request() {
    let h = Harness::start(1024 * 1024, 100);
    let mut s = TcpStream::connect(h.http).await.unwrap();
    let request = format!(
        "GET {HEALTH_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        h.http.port()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "{text}");
    assert!(body.contains(r#""name":"otel-xray""#), "{body}");
}

#[tokio::test]
async fn other_methods_are_refused_and_other_paths_unchanged() {
    let h = Harness::start(1024 * 1024, 100);
    let mut c = Http1::connect(h.http).await;
    let reply = c
        .send(post(
            HEALTH_PATH,
            None,
            None,
            full(Bytes::from_static(b"{}")),
        ))
        .await;
    assert_eq!(reply.status, 405, "{}", reply.text());
    assert_eq!(reply.headers.get(http::header::ALLOW).unwrap(), "GET, HEAD");
    let head = http::Request::head(HEALTH_PATH)
        .header(http::header::HOST, "127.0.0.1")
        .body(full(Bytes::new()))
        .unwrap();
    let reply = c.send(head).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    // Near misses are not the health check.
    for path in ["/otel-xray/health/", "/otel-xray", "/health"] {
        assert_eq!(c.send(get(path)).await.status, 404, "{path}");
    }
}
