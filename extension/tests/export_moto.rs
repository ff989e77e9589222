//! The PutTraceSegments exporter against a real X-Ray API: moto's server on 127.0.0.1.
//!
//! `MOTO_SERVER` names the command (default `python3 -m moto.server`); the test adds
//! `-H 127.0.0.1 -p <port>`. If moto cannot be started the test fails, with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod export_common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use export_common::*;
use otel_xray::buffer::SpanBatch;
use otel_xray::config::Config;
use otel_xray::export::http_client::HttpClient;
use otel_xray::export::{ApiExporter, CredentialsSource, Exporter, ExporterOptions, sigv4};
use otel_xray::xray::translate;
use tokio::time::Instant;

const REGION: &str = "us-east-1";

/// The moto server process; killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto() -> Moto {
    let command = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "python3 -m moto.server".into());
    let mut parts = command.split_whitespace();
    let program = parts.next().expect("MOTO_SERVER is empty");
    let port = closed_port().port();
    let child = Command::new(program)
        .args(parts)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start moto with {command:?} (set MOTO_SERVER to the moto_server command): {e}")
        });
    let mut moto = Moto { child, port };
    // Bounded wait for the port to accept connections.
    for _ in 0..300 {
        if let Ok(Some(status)) = moto.child.try_wait() {
            let mut err = String::new();
            if let Some(mut stderr) = moto.child.stderr.take() {
                use std::io::Read;
                let _ = stderr.read_to_string(&mut err);
            }
            panic!("moto ({command:?}) exited with {status} before listening:\n{err}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            // Drain stderr in the background so moto never blocks on a full pipe.
            if let Some(mut stderr) = moto.child.stderr.take() {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                });
            }
            return moto;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto ({command:?}) did not listen on 127.0.0.1:{port} within 30 s");
}

/// BatchGetTraces (signed like any AWS call), five trace ids a call as the real API allows:
/// trace id → its stored documents.
async fn batch_get_traces(
    port: u16,
    trace_ids: &BTreeSet<String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let http = HttpClient::new(false);
    let creds = aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    let ids: Vec<&String> = trace_ids.iter().collect();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for chunk in ids.chunks(5) {
        let body = serde_json::json!({ "TraceIds": chunk }).to_string();
        let mut req = http::Request::post(format!("http://127.0.0.1:{port}/Traces"))
            .header("content-type", "application/json")
            .body(Bytes::from(body))
            .unwrap();
        sigv4::sign(
            &mut req,
            &creds,
            REGION,
            sigv4::XRAY_SERVICE,
            SystemTime::now(),
        )
        .unwrap();
        let resp = http
            .send(
                req,
                Instant::now() + Duration::from_secs(10),
                16 * 1024 * 1024,
            )
            .await
            .expect("BatchGetTraces answered");
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        for trace in v["Traces"].as_array().expect("Traces") {
            let id = trace["Id"].as_str().unwrap().to_owned();
            for seg in trace["Segments"].as_array().unwrap() {
                out.entry(id.clone())
                    .or_default()
                    .insert(seg["Document"].as_str().unwrap().to_owned());
            }
        }
    }
    out
}

fn by_trace<'a>(
    docs: impl Iterator<Item = &'a otel_xray::xray::Document>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in docs {
        out.entry(d.trace_id.clone())
            .or_default()
            .insert(d.json.clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_put_into_moto_come_back_from_batch_get_traces() {
    let moto = tokio::task::spawn_blocking(start_moto).await.unwrap();
    let url = format!("http://127.0.0.1:{}", moto.port);

    // Documents given directly: 60 of them, so two PutTraceSegments calls.
    let exporter =
        ApiExporter::new(&url, REGION, CredentialsSource::Provider(credentials())).unwrap();
    let docs = documents(60);
    let report = exporter
        .send(&docs, Instant::now() + Duration::from_secs(10))
        .await;
    assert!(
        report.dropped.is_empty(),
        "{report:?} {:?}",
        exporter.logged_causes()
    );
    assert_eq!(report.exported, docs.iter().map(|d| d.spans).sum::<usize>());
    let expected = by_trace(docs.iter());
    let ids: BTreeSet<String> = expected.keys().cloned().collect();
    assert_eq!(
        batch_get_traces(moto.port, &ids).await,
        expected,
        "exactly the documents sent"
    );

    // Spans through the configured exporter: moto holds exactly what translate() produced.
    let (config, _) = Config::from_lookup(|k| match k {
        "OTEL_XRAY_EXPORTER" => Some("api".into()),
        "OTEL_XRAY_API_ENDPOINT" => Some(url.clone()),
        "AWS_REGION" => Some(REGION.into()),
        _ => None,
    })
    .unwrap();
    let exporter = Exporter::from_config_with(
        &config,
        ExporterOptions {
            credentials: Some(credentials()),
            ..Default::default()
        },
    )
    .unwrap();
    let rs = resource_spans(3);
    let translation = translate(&rs, exporter.translate_options());
    let batch = SpanBatch::new(rs);
    let report = exporter
        .export(batch.clone(), Instant::now() + Duration::from_secs(10))
        .await;
    assert_eq!(report.spans(), batch.spans);
    assert_eq!(
        report.exported,
        translation.documents.iter().map(|d| d.spans).sum::<usize>()
    );
    let expected = by_trace(translation.documents.iter());
    let ids: BTreeSet<String> = expected.keys().cloned().collect();
    if !ids.is_empty() {
        assert_eq!(batch_get_traces(moto.port, &ids).await, expected);
    }
}
