//! The OTLP/HTTP exporter against a sink on 127.0.0.1 that decodes every request
//! (`ExportTraceServiceRequest`, gzip or not), checks headers and SigV4, and answers as needed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod export_common;

use std::io::Read;
use std::time::Duration;

use export_common::*;
use flate2::read::GzDecoder;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_xray::buffer::{EncodedRequest, SpanBatch};
use otel_xray::config::Config;
use otel_xray::export::otlp::{MAX_ATTEMPTS, MAX_SPANS_PER_REQUEST};
use otel_xray::export::{
    CredentialsSource, Exporter, ExporterOptions, Gzip, OtlpExporter, OtlpSettings,
};
use otel_xray::stats::DropReason;
use prost::Message;
use tokio::time::Instant;

const REGION: &str = "us-west-2";

/// Decodes one OTLP request as a receiver would.
fn decode(req: &Recorded) -> ExportTraceServiceRequest {
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/traces");
    assert_eq!(req.headers["content-type"], "application/x-protobuf");
    let raw = match req
        .headers
        .get("content-encoding")
        .map(|v| v.to_str().unwrap())
    {
        Some("gzip") => {
            let mut out = Vec::new();
            GzDecoder::new(req.body.as_ref())
                .read_to_end(&mut out)
                .expect("valid gzip");
            out
        }
        None => req.body.to_vec(),
        Some(other) => panic!("unexpected content-encoding {other}"),
    };
    assert!(raw.len() <= 5_000_000, "{} bytes uncompressed", raw.len());
    ExportTraceServiceRequest::decode(raw.as_slice()).expect("valid protobuf")
}

/// Every span with its resource and scope, in order: what must arrive.
fn flatten(rs: &[ResourceSpans]) -> Vec<(Vec<u8>, Vec<u8>, Span)> {
    let mut out = Vec::new();
    for r in rs {
        let resource = r
            .resource
            .as_ref()
            .map(Message::encode_to_vec)
            .unwrap_or_default();
        for s in &r.scope_spans {
            let scope = s
                .scope
                .as_ref()
                .map(Message::encode_to_vec)
                .unwrap_or_default();
            for span in &s.spans {
                out.push((resource.clone(), scope.clone(), span.clone()));
            }
        }
    }
    out
}

fn arrived(server: &FakeServer) -> Vec<(Vec<u8>, Vec<u8>, Span)> {
    server
        .recorded()
        .iter()
        .flat_map(|r| flatten(&decode(r).resource_spans))
        .collect()
}

fn ok() -> Reply {
    Reply::Respond {
        status: 200,
        headers: vec![("content-type".into(), "application/x-protobuf".into())],
        body: ExportTraceServiceResponse::default().encode_to_vec(),
    }
}

fn settings(url: &str, gzip: Gzip) -> OtlpSettings {
    OtlpSettings {
        endpoint: format!("{url}/v1/traces"),
        headers: vec![("x-tenant".into(), "t-1".into())],
        sigv4_region: None,
        credentials: CredentialsSource::Provider(credentials()),
        gzip,
    }
}

/// Spans as the buffer holds them: one encoded request.
fn encoded(rs: Vec<ResourceSpans>) -> Vec<EncodedRequest> {
    SpanBatch::new(rs).requests
}

fn deadline(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// `n` spans in one resource and scope, with distinct ids and names.
fn many_spans(n: usize) -> Vec<ResourceSpans> {
    let mut rs = resource_spans(1);
    rs.truncate(1);
    let template = rs[0].scope_spans[0].spans[0].clone();
    rs[0].scope_spans[0].spans = (0..n)
        .map(|i| Span {
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("span {i}"),
            ..template.clone()
        })
        .collect();
    rs
}

#[tokio::test]
async fn spans_arrive_as_given_with_the_configured_headers() {
    for gzip in [Gzip::Never, Gzip::Always, Gzip::Auto] {
        let server = FakeServer::start(|_, _| ok()).await;
        let exporter = OtlpExporter::new(settings(&server.url(), gzip)).unwrap();
        let input = resource_spans(5);
        let report = exporter.send(encoded(input.clone()), deadline(5000)).await;

        let received = server.recorded();
        assert_eq!(received.len(), 1);
        let req = &received[0];
        assert_eq!(req.headers["x-tenant"], "t-1");
        assert!(
            req.headers["user-agent"]
                .to_str()
                .unwrap()
                .starts_with("otel-xray/")
        );
        assert!(
            !req.headers.contains_key("authorization"),
            "not signed unless asked"
        );
        let gzipped = req.headers.get("content-encoding").is_some();
        // Auto does not compress for a loopback endpoint (the fake server is one).
        assert_eq!(gzipped, gzip == Gzip::Always, "{gzip:?}");
        assert_eq!(
            decode(req).resource_spans,
            input,
            "the request is the input, unchanged"
        );
        assert_eq!(report.exported, 30);
        assert!(report.dropped.is_empty());
    }
}

#[tokio::test]
async fn buffered_requests_are_joined_into_one_request() {
    let server = FakeServer::start(|_, _| ok()).await;
    let exporter = OtlpExporter::new(settings(&server.url(), Gzip::Never)).unwrap();
    let parts = [resource_spans(1), resource_spans(2), many_spans(7)];
    let mut requests = Vec::new();
    for p in &parts {
        requests.extend(encoded(p.clone()));
    }
    let expected: Vec<ResourceSpans> = parts.concat();
    let report = exporter.send(requests, deadline(5000)).await;
    let received = server.recorded();
    assert_eq!(received.len(), 1, "one request for all three");
    assert_eq!(decode(&received[0]).resource_spans, expected);
    assert_eq!(report.exported, flatten(&expected).len());
}

#[tokio::test]
async fn requests_are_cut_at_the_span_limit() {
    let server = FakeServer::start(|_, _| ok()).await;
    let exporter = OtlpExporter::new(settings(&server.url(), Gzip::Auto)).unwrap();
    let input = many_spans(MAX_SPANS_PER_REQUEST + 1);
    let report = exporter
        .send(encoded(input.clone()), deadline(20_000))
        .await;
    let received = server.recorded();
    let sizes: Vec<usize> = received
        .iter()
        .map(|r| flatten(&decode(r).resource_spans).len())
        .collect();
    assert_eq!(sizes, vec![MAX_SPANS_PER_REQUEST, 1]);
    assert_eq!(arrived(&server), flatten(&input));
    assert_eq!(report.exported, MAX_SPANS_PER_REQUEST + 1);
}

#[tokio::test]
async fn requests_are_cut_at_the_byte_limit_keeping_resources() {
    let server = FakeServer::start(|_, _| ok()).await;
    let exporter = OtlpExporter::new(settings(&server.url(), Gzip::Always))
        .unwrap()
        .with_limits(7, 2_000);
    let input = resource_spans(6); // 2 resources × 18 spans
    let report = exporter.send(encoded(input.clone()), deadline(5000)).await;
    let received = server.recorded();
    assert!(received.len() >= 6, "{} requests", received.len());
    for r in &received {
        let req = decode(r);
        assert!(req.encoded_len() <= 2_000);
        assert!(flatten(&req.resource_spans).len() <= 7);
        for rs in &req.resource_spans {
            assert!(rs.resource.is_some(), "every part keeps its resource");
            assert!(
                rs.scope_spans
                    .iter()
                    .all(|s: &ScopeSpans| s.scope.is_some())
            );
        }
    }
    assert_eq!(arrived(&server), flatten(&input));
    assert_eq!(report.exported, 36);
}

#[tokio::test]
async fn sigv4_signs_the_body_as_sent() {
    let server = FakeServer::start(|_, _| ok()).await;
    let url = server.url();
    let (config, _) = Config::from_lookup(|k| match k {
        "OTEL_XRAY_EXPORTER" => Some("otlp".into()),
        "OTEL_XRAY_OTLP_ENDPOINT" => Some(format!("{url}/v1/traces")),
        "OTEL_XRAY_OTLP_SIGV4" => Some("true".into()),
        "OTEL_XRAY_OTLP_HEADERS" => Some("x-api-key=abc%3D,x-tenant=t-2".into()),
        "AWS_REGION" => Some(REGION.into()),
        _ => None,
    })
    .unwrap();
    assert!(config.otlp_sigv4);
    for gzip in [Gzip::Always, Gzip::Never] {
        let exporter = Exporter::from_config_with(
            &config,
            ExporterOptions {
                credentials: Some(credentials()),
                otlp_gzip: gzip,
            },
        )
        .unwrap();
        let input = resource_spans(2);
        let batch = SpanBatch::new(input.clone());
        let report = exporter.export(batch, deadline(5000)).await;
        assert_eq!(report.exported, 12);
        let req = server.recorded().pop().unwrap();
        let auth = verify_sigv4(&req, SECRET_KEY, REGION, "xray").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(auth.access_key, ACCESS_KEY);
        assert_eq!(req.headers["x-api-key"], "abc=");
        assert_eq!(req.headers["x-tenant"], "t-2");
        assert_eq!(req.headers["x-amz-security-token"], SESSION_TOKEN);
        if gzip == Gzip::Always {
            assert!(auth.signed_headers.contains(&"content-encoding".to_owned()));
        }
        assert_eq!(decode(&req).resource_spans, input);
    }
}

#[tokio::test]
async fn partial_success_counts_rejected_spans() {
    let server = FakeServer::start(|i, _| {
        if i == 0 {
            Reply::Respond {
                status: 200,
                headers: vec![("content-type".into(), "application/x-protobuf".into())],
                body: ExportTraceServiceResponse {
                    partial_success: Some(ExportTracePartialSuccess {
                        rejected_spans: 4,
                        error_message: "span timestamps too old".into(),
                    }),
                }
                .encode_to_vec(),
            }
        } else {
            Reply::json(
                200,
                serde_json::json!({"partialSuccess": {"rejectedSpans": "1", "errorMessage": "invalid span id"}}),
            )
        }
    })
    .await;
    let exporter = OtlpExporter::new(settings(&server.url(), Gzip::Auto)).unwrap();
    let first = exporter
        .send(encoded(resource_spans(3)), deadline(5000))
        .await;
    assert_eq!(first.exported, 14);
    assert_eq!(first.dropped, vec![(DropReason::ExportRejected, 4)]);
    let second = exporter
        .send(encoded(resource_spans(3)), deadline(5000))
        .await;
    assert_eq!(second.exported, 17);
    assert_eq!(second.dropped, vec![(DropReason::ExportRejected, 1)]);
    assert_eq!(server.recorded().len(), 2, "partial success is not retried");
    assert_eq!(exporter.logged_causes().len(), 2);
}

#[tokio::test]
async fn retryable_statuses_are_retried_honouring_retry_after() {
    let server = FakeServer::start(|i, _| match i {
        0 => Reply::Respond {
            status: 503,
            headers: vec![("retry-after".into(), "0".into())],
            body: Vec::new(),
        },
        1 => Reply::Respond {
            status: 429,
            headers: Vec::new(),
            body: Vec::new(),
        },
        _ => ok(),
    })
    .await;
    let exporter = OtlpExporter::new(settings(&server.url(), Gzip::Auto)).unwrap();
    let input = resource_spans(2);
    let report = exporter.send(encoded(input.clone()), deadline(5000)).await;
    assert_eq!(report.exported, 12);
    assert_eq!(report.errors, 0);
    let received = server.recorded();
    assert_eq!(received.len(), 3);
    for r in &received {
        assert_eq!(decode(r).resource_spans, input);
    }
}

#[tokio::test]
async fn a_retry_after_beyond_the_deadline_gives_up_at_once() {
    let server = FakeServer::start(|_, _| Reply::Respond {
        status: 429,
        headers: vec![("retry-after".into(), "30".into())],
        body: Vec::new(),
    })
    .await;
    let exporter = OtlpExporter::new(settings(&server.url(), Gzip::Auto)).unwrap();
    let started = Instant::now();
    let report = exporter
        .send(encoded(resource_spans(1)), started + Duration::from_secs(3))
        .await;
    // Waiting for Retry-After would pass the deadline: give up now, not at the deadline.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.dropped, vec![(DropReason::ExportFailed, 6)]);
    assert_eq!(server.recorded().len(), 1);
}

#[tokio::test]
async fn client_errors_are_rejected_and_other_server_errors_fail_without_retry() {
    for (status, reason) in [
        (400, DropReason::ExportRejected),
        (500, DropReason::ExportFailed),
    ] {
        let server = FakeServer::start(move |_, _| Reply::Respond {
            status,
            headers: Vec::new(),
            body: b"nope".to_vec(),
        })
        .await;
        let exporter = OtlpExporter::new(settings(&server.url(), Gzip::Auto)).unwrap();
        let report = exporter
            .send(encoded(resource_spans(1)), deadline(5000))
            .await;
        assert_eq!(report.dropped, vec![(reason, 6)], "{status}");
        assert_eq!(report.errors, 1);
        assert_eq!(server.recorded().len(), 1, "{status} is not retried");
        assert_eq!(exporter.logged_causes(), vec![format!("HTTP {status}")]);
    }
}

#[tokio::test]
async fn persistent_unavailability_stops_after_bounded_attempts() {
    let server = FakeServer::start(|_, _| Reply::Respond {
        status: 502,
        headers: Vec::new(),
        body: Vec::new(),
    })
    .await;
    let exporter = OtlpExporter::new(settings(&server.url(), Gzip::Auto)).unwrap();
    let report = exporter
        .send(encoded(resource_spans(1)), deadline(5000))
        .await;
    assert_eq!(server.recorded().len(), MAX_ATTEMPTS as usize);
    assert_eq!(report.dropped, vec![(DropReason::ExportFailed, 6)]);
}

#[tokio::test]
async fn unreachable_and_hanging_endpoints_stay_within_the_deadline() {
    let closed = format!("http://{}", closed_port());
    let exporter = OtlpExporter::new(settings(&closed, Gzip::Auto)).unwrap();
    let started = Instant::now();
    let report = exporter
        .send(
            encoded(resource_spans(2)),
            started + Duration::from_millis(800),
        )
        .await;
    assert!(started.elapsed() < Duration::from_millis(1300));
    assert_eq!(report.dropped, vec![(DropReason::ExportFailed, 12)]);
    assert_eq!(exporter.logged_causes(), vec!["connect failed".to_owned()]);

    let server = FakeServer::start(|_, _| Reply::Hang).await;
    let exporter = OtlpExporter::new(settings(&server.url(), Gzip::Auto))
        .unwrap()
        .with_limits(5, 5_000_000);
    let budget = Duration::from_millis(300);
    let started = Instant::now();
    let report = exporter
        .send(encoded(resource_spans(2)), started + budget)
        .await;
    let took = started.elapsed();
    assert!(
        took >= budget - Duration::from_millis(5) && took < budget + Duration::from_millis(500),
        "{took:?}"
    );
    assert_eq!(report.exported, 0);
    assert_eq!(report.dropped, vec![(DropReason::ExportTimeout, 12)]);
    assert_eq!(
        server.recorded().len(),
        1,
        "later requests are not started after the deadline"
    );
}

#[tokio::test]
async fn sigv4_needs_a_region() {
    let (config, _) = Config::from_lookup(|k| match k {
        "OTEL_XRAY_EXPORTER" => Some("otlp".into()),
        "OTEL_XRAY_OTLP_ENDPOINT" => Some("http://127.0.0.1:9/v1/traces".into()),
        "OTEL_XRAY_OTLP_SIGV4" => Some("true".into()),
        _ => None,
    })
    .unwrap();
    assert!(Exporter::from_config(&config).is_err());
    // The region comes from X-Ray's own endpoint when AWS_REGION is missing.
    let (config, _) = Config::from_lookup(|k| match k {
        "OTEL_XRAY_EXPORTER" => Some("otlp".into()),
        "OTEL_XRAY_OTLP_ENDPOINT" => Some("https://xray.ap-south-1.amazonaws.com/v1/traces".into()),
        _ => None,
    })
    .unwrap();
    assert!(config.otlp_sigv4);
    assert!(Exporter::from_config(&config).is_ok());
}
