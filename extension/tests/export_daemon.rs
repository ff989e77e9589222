//! The X-Ray daemon exporter against a real UDP socket on 127.0.0.1 that decodes every datagram.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod export_common;

use std::time::Duration;

use export_common::*;
use otel_xray::buffer::SpanBatch;
use otel_xray::config::Config;
use otel_xray::export::daemon::{HEADER, MAX_DOCUMENT_BYTES};
use otel_xray::export::{DaemonExporter, Exporter};
use otel_xray::stats::DropReason;
use otel_xray::xray::{Document, translate};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Reads datagrams until `quiet` passes without one (bounded: at most `max`).
async fn receive(socket: &UdpSocket, max: usize, quiet: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70 * 1024];
    while out.len() < max {
        match tokio::time::timeout(quiet, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => out.push(buf[..n].to_vec()),
            Ok(Err(e)) => panic!("recv: {e}"),
            Err(_) => break,
        }
    }
    out
}

/// Checks the header line and returns the document of one datagram.
fn decode(datagram: &[u8]) -> String {
    let newline = datagram
        .iter()
        .position(|b| *b == b'\n')
        .expect("a header line");
    let header: serde_json::Value =
        serde_json::from_slice(&datagram[..newline]).expect("JSON header");
    assert_eq!(header, serde_json::json!({"format": "json", "version": 1}));
    assert_eq!(
        &datagram[..=newline],
        HEADER,
        "the header exactly as the daemon expects it"
    );
    let doc = std::str::from_utf8(&datagram[newline + 1..]).expect("UTF-8 document");
    let v: serde_json::Value = serde_json::from_str(doc).expect("JSON document");
    assert!(v["trace_id"].is_string() && v["id"].is_string());
    doc.to_owned()
}

fn jsons(docs: &[Document]) -> Vec<String> {
    docs.iter().map(|d| d.json.clone()).collect()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

#[tokio::test]
async fn one_datagram_per_document_with_the_daemon_header() {
    let daemon = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let exporter = DaemonExporter::new(daemon.local_addr().unwrap());
    let docs = documents(25);
    let report = exporter.send(&docs, soon()).await;

    let got = receive(&daemon, 100, Duration::from_millis(300)).await;
    let arrived: Vec<String> = got.iter().map(|d| decode(d)).collect();
    assert_eq!(arrived, jsons(&docs), "exactly the documents given");
    assert_eq!(report.exported, docs.iter().map(|d| d.spans).sum::<usize>());
    assert!(report.dropped.is_empty());

    // The socket is reused: a second export arrives from the same source port.
    let daemon_addr = daemon.local_addr().unwrap();
    let mut buf = vec![0u8; 70 * 1024];
    exporter.send(&docs[..1], soon()).await;
    let (_, from1) = daemon.recv_from(&mut buf).await.unwrap();
    exporter.send(&docs[..1], soon()).await;
    let (_, from2) = daemon.recv_from(&mut buf).await.unwrap();
    assert_eq!(from1, from2);
    assert!(
        from1.ip().is_loopback(),
        "bound to loopback for a loopback daemon"
    );
    assert_ne!(from1, daemon_addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_documents_leave_in_batches_each_whole_and_in_order() {
    let daemon = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let exporter = DaemonExporter::new(daemon.local_addr().unwrap());
    // More than two sendmmsg batches of 64, the last one partial; a document too large for a
    // datagram in the middle of a batch is left out without disturbing the others.
    let mut docs = documents(150);
    docs[70].json = format!(
        r#"{{"name":"big","id":"{}","trace_id":"{}","start_time":1,"end_time":2,"metadata":{{"default":{{"x":"{}"}}}}}}"#,
        docs[70].id,
        docs[70].trace_id,
        "x".repeat(MAX_DOCUMENT_BYTES)
    );
    let reader = tokio::spawn(async move {
        let got = receive(&daemon, 200, Duration::from_millis(300)).await;
        got.iter().map(|d| decode(d)).collect::<Vec<String>>()
    });
    let report = exporter.send(&docs, soon()).await;
    let arrived = reader.await.unwrap();
    let mut expected = jsons(&docs);
    expected.remove(70);
    assert_eq!(arrived, expected);
    let total: usize = docs.iter().map(|d| d.spans).sum();
    assert_eq!(report.exported, total - docs[70].spans);
    assert_eq!(report.dropped, vec![(DropReason::TooLarge, docs[70].spans)]);
    assert_eq!(report.errors, 0);
}

#[tokio::test]
async fn a_document_too_large_for_a_datagram_is_dropped_and_the_rest_sent() {
    let daemon = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let exporter = DaemonExporter::new(daemon.local_addr().unwrap());
    let mut docs = documents(3);
    docs[1].json = format!(
        r#"{{"name":"big","id":"{}","trace_id":"{}","start_time":1,"end_time":2,"metadata":{{"default":{{"x":"{}"}}}}}}"#,
        docs[1].id,
        docs[1].trace_id,
        "x".repeat(MAX_DOCUMENT_BYTES)
    );
    // The largest document that fits does go.
    let pad = MAX_DOCUMENT_BYTES - docs[2].json.len();
    let mut v: serde_json::Value = serde_json::from_str(&docs[2].json).unwrap();
    v["metadata"]["default"]["pad"] = serde_json::Value::String(String::new());
    let base = v.to_string().len();
    v["metadata"]["default"]["pad"] =
        serde_json::Value::String("p".repeat(pad + docs[2].json.len() - base));
    docs[2].json = v.to_string();
    assert_eq!(docs[2].json.len(), MAX_DOCUMENT_BYTES);

    let report = exporter.send(&docs, soon()).await;
    let got = receive(&daemon, 10, Duration::from_millis(300)).await;
    let arrived: Vec<String> = got.iter().map(|d| decode(d)).collect();
    assert_eq!(arrived, vec![docs[0].json.clone(), docs[2].json.clone()]);
    assert_eq!(report.exported, docs[0].spans + docs[2].spans);
    assert_eq!(report.dropped, vec![(DropReason::TooLarge, docs[1].spans)]);
}

#[tokio::test]
async fn a_missing_daemon_is_counted_not_hidden() {
    // A UDP port with nothing behind it: the kernel answers with ICMP port unreachable, which
    // the connected socket reports on the next send.
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let exporter = DaemonExporter::new(closed);
    let docs = documents(10);
    let started = Instant::now();
    let report = exporter
        .send(&docs, started + Duration::from_millis(500))
        .await;
    assert!(started.elapsed() < Duration::from_millis(1000));
    let total: usize = docs.iter().map(|d| d.spans).sum();
    assert_eq!(report.spans(), total);
    assert!(report.dropped(DropReason::ExportFailed) > 0, "{report:?}");
    assert!(report.errors > 0);
    assert_eq!(
        exporter.logged_causes(),
        vec!["udp send: connection refused".to_owned()]
    );
}

/// A UDP socket playing the daemon, and the exporter the configuration with only
/// `AWS_XRAY_DAEMON_ADDRESS` pointing at it builds.
async fn configured_daemon_exporter() -> (UdpSocket, Exporter) {
    let daemon = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = daemon.local_addr().unwrap().to_string();
    let (config, _) = Config::from_lookup(|k| match k {
        "AWS_XRAY_DAEMON_ADDRESS" => Some(addr.clone()),
        _ => None,
    })
    .unwrap();
    (daemon, Exporter::from_config(&config).unwrap())
}

#[tokio::test]
async fn the_configured_exporter_sends_what_translate_produces() {
    let (daemon, exporter) = configured_daemon_exporter().await;
    assert_eq!(
        exporter.kind(),
        otel_xray::config::ExporterKind::Daemon,
        "auto picks the daemon"
    );
    assert!(exporter.translate_options().max_document_bytes <= MAX_DOCUMENT_BYTES);

    let rs = resource_spans(4);
    let batch = SpanBatch::new(rs.clone());
    let expected = translate(&rs, exporter.translate_options());
    let report = exporter.export(batch.clone(), soon()).await;
    let got = receive(&daemon, 1000, Duration::from_millis(300)).await;
    let arrived: Vec<String> = got.iter().map(|d| decode(d)).collect();
    assert_eq!(arrived, jsons(&expected.documents));
    assert_eq!(
        report.exported,
        expected.documents.iter().map(|d| d.spans).sum::<usize>()
    );
    assert_eq!(
        report.spans(),
        batch.spans,
        "every span accounted for: {report:?}"
    );
}

#[tokio::test]
async fn requests_translated_ahead_are_sent_as_prepared_and_the_rest_translated() {
    let (daemon, exporter) = configured_daemon_exporter().await;
    let options = exporter.translate_options().clone();

    // Request 1 was translated ahead with every attribute indexed, so its documents differ from
    // what the exporter's own options make: they show which documents were sent. It also holds
    // a span with no valid ids, which its translation counts as invalid.
    let mut ahead_rs = resource_spans(1);
    ahead_rs[0].scope_spans[0]
        .spans
        .push(opentelemetry_proto::tonic::trace::v1::Span {
            name: "no ids".into(),
            ..Default::default()
        });
    let ahead_options = otel_xray::xray::TranslateOptions {
        index_all_attributes: true,
        ..options.clone()
    };
    let mut ahead = SpanBatch::new(ahead_rs.clone());
    let prepared = translate(&ahead_rs, &ahead_options);
    assert_eq!(prepared.invalid_spans, 1);
    assert_ne!(prepared, translate(&ahead_rs, &options));
    ahead.requests[0].prepared = Some(Box::new(prepared.clone()));
    // Request 2 was not translated ahead (it came just before the flush).
    let late_rs = resource_spans(2);
    let late = SpanBatch::new(late_rs.clone());

    let mut batch = ahead.clone();
    batch.append(late.clone());
    let report = exporter.export(batch.clone(), soon()).await;
    let got = receive(&daemon, 1000, Duration::from_millis(300)).await;
    let mut arrived: Vec<String> = got.iter().map(|d| decode(d)).collect();
    let mut expected = jsons(&prepared.documents);
    expected.extend(jsons(&translate(&late_rs, &options).documents));
    arrived.sort();
    expected.sort();
    assert_eq!(arrived, expected);
    assert_eq!(report.dropped(DropReason::InvalidSpan), 1);
    assert_eq!(report.exported, batch.spans - 1);
    assert_eq!(report.spans(), batch.spans, "{report:?}");
}
