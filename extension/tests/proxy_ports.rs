//! The Runtime API proxy fails open: a taken port or `OTEL_XRAY_PROXY=false` leaves it out and the
//! extension runs as before (the wrapper's health probe then fails and the runtime talks to Lambda
//! directly). Against the lifecycle tests' fake Extensions API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lifecycle_support;

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use lifecycle_support::{FakeLambda, config};
use otel_xray::lifecycle::{Exit, Ready, RunOptions, run};
use tokio::sync::oneshot;

const SECOND: Duration = Duration::from_secs(1);

fn options() -> (RunOptions, oneshot::Receiver<Ready>) {
    let (tx, rx) = oneshot::channel();
    (
        RunOptions {
            extension_name: "otel-xray".into(),
            ready: Some(tx),
            ..RunOptions::default()
        },
        rx,
    )
}

async fn run_once(extra: &[(&str, &str)]) -> Option<std::net::SocketAddr> {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let cfg = config(fake.addr, extra);
    let (options, ready_rx) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let first = fake.next_call(5 * SECOND).await;
        first.shutdown("spindown", 2 * SECOND);
        ready.proxy_addr
    };
    let (summary, proxy) = tokio::join!(run(cfg, options), script);
    assert_eq!(summary.exit, Exit::Clean);
    assert!(
        fake.requests_to("/2020-01-01/extension/init/error")
            .is_empty(),
        "the proxy must never fail the init"
    );
    proxy
}

#[tokio::test]
async fn a_taken_proxy_port_leaves_the_proxy_out() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    assert_eq!(run_once(&[("OTEL_XRAY_PROXY_PORT", &port)]).await, None);
    drop(taken);
}

#[tokio::test]
async fn the_proxy_can_be_turned_off() {
    assert_eq!(run_once(&[("OTEL_XRAY_PROXY", "false")]).await, None);
}

#[tokio::test]
async fn the_health_path_names_the_extension() {
    let mut fake = FakeLambda::start(StatusCode::OK).await;
    let cfg = config(fake.addr, &[]);
    let (options, ready_rx) = options();
    let script = async {
        let ready = ready_rx.await.unwrap();
        let addr = ready.proxy_addr.expect("the proxy is up once registered");
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let resp = client
            .get(format!("http://{addr}/otel-xray/health").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "otel-xray", "version": env!("CARGO_PKG_VERSION")})
        );
        let first = fake.next_call(5 * SECOND).await;
        first.shutdown("spindown", 2 * SECOND);
    };
    let (summary, ()) = tokio::join!(run(cfg, options), script);
    assert_eq!(summary.exit, Exit::Clean);
}
