//! Request caps the receiver tests do not cover: the Telemetry API listener refuses a delivery
//! over `MAX_BATCH_BYTES` (413) without reading past the cap, counts nothing from it, and keeps
//! serving. (The OTLP receivers' body and decompression caps are in `receiver_http.rs` and
//! `receiver_grpc.rs`; the decompression cap is also a fuzz invariant, `fuzz_corpus.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lifecycle_support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use otel_xray::lambda::telemetry::{self, MAX_BATCH_BYTES, TelemetryCounters};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn telemetry_delivery_over_the_cap_is_refused_and_the_listener_keeps_serving() {
    let listener = telemetry::bind_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)
        .await
        .unwrap();
    let url = format!("http://{}/", listener.local_addr());
    let counters = Arc::new(TelemetryCounters::default());
    let (tx, mut rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    listener.serve(tx, Arc::clone(&counters), cancel.clone(), &mut tasks);

    // A valid JSON array just over the cap: refused for its size, not its content.
    let mut big = Vec::with_capacity(MAX_BATCH_BYTES + 16);
    big.push(b'[');
    big.resize(MAX_BATCH_BYTES + 8, b' ');
    big.push(b']');
    assert_eq!(
        lifecycle_support::post(&url, big).await,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(
        rx.try_recv().is_err(),
        "an oversized delivery reached the lifecycle"
    );
    assert_eq!(counters.snapshot().events, 0);

    // Still serving: a small delivery goes through.
    let ok = br#"[{"time":"2024-05-14T09:21:03.640Z","type":"platform.start","record":{"requestId":"r-1"}}]"#;
    assert_eq!(
        lifecycle_support::post(&url, ok.to_vec()).await,
        StatusCode::OK
    );
    let batch = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.events.len(), 1);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .unwrap();
}
