//! The PutTraceSegments exporter against a fake X-Ray on 127.0.0.1 that decodes every request,
//! checks its SigV4 signature from scratch, and answers as the test needs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod export_common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use export_common::*;
use otel_xray::buffer::SpanBatch;
use otel_xray::config::Config;
use otel_xray::export::{
    ApiExporter, CredentialsSource, Exporter, ExporterOptions, api::MAX_BODY_BYTES,
    api::MAX_DOCUMENTS_PER_CALL,
};
use otel_xray::stats::DropReason;
use otel_xray::xray::{Document, translate};
use tokio::time::Instant;

const REGION: &str = "eu-central-1";

fn exporter(url: &str) -> ApiExporter {
    ApiExporter::new(url, REGION, CredentialsSource::Provider(credentials())).unwrap()
}

fn deadline(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// Decodes a PutTraceSegments request the way X-Ray would, checking everything it can.
fn decode_put(req: &Recorded) -> Vec<String> {
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/TraceSegments");
    assert_eq!(req.headers["content-type"], "application/json");
    let auth = verify_sigv4(req, SECRET_KEY, REGION, "xray").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(auth.access_key, ACCESS_KEY);
    assert_eq!(req.headers["x-amz-security-token"], SESSION_TOKEN);
    let body: serde_json::Value = serde_json::from_slice(&req.body).expect("JSON body");
    let obj = body.as_object().expect("object body");
    assert_eq!(obj.len(), 1, "only TraceSegmentDocuments: {body}");
    let docs: Vec<String> = obj["TraceSegmentDocuments"]
        .as_array()
        .expect("TraceSegmentDocuments array")
        .iter()
        .map(|d| d.as_str().expect("documents are strings").to_owned())
        .collect();
    assert!(
        !docs.is_empty() && docs.len() <= MAX_DOCUMENTS_PER_CALL,
        "{} documents",
        docs.len()
    );
    for d in &docs {
        let v: serde_json::Value = serde_json::from_str(d).expect("each document is JSON");
        for key in ["name", "id", "trace_id", "start_time"] {
            assert!(v.get(key).is_some(), "document without {key}: {d}");
        }
    }
    docs
}

fn ok_empty() -> Reply {
    Reply::json(200, serde_json::json!({"UnprocessedTraceSegments": []}))
}

fn jsons(docs: &[Document]) -> Vec<String> {
    docs.iter().map(|d| d.json.clone()).collect()
}

fn spans(docs: &[Document]) -> usize {
    docs.iter().map(|d| d.spans).sum()
}

#[tokio::test]
async fn a_slow_endpoint_gets_no_call_it_cannot_answer_in_time() {
    // Every call takes 200 ms; with 700 ms the waves of calls end at 200, 400 and 600 ms, and a
    // fourth would end after the deadline: it is not sent, so what the endpoint accepted is
    // exactly what is counted exported.
    let docs = documents(50 * 40);
    let span_counts: std::collections::HashMap<String, usize> =
        docs.iter().map(|d| (d.json.clone(), d.spans)).collect();
    let answered = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&answered);
    let server = FakeServer::start(move |_, req| {
        let spans: usize = decode_put(req).iter().map(|d| span_counts[d]).sum();
        *counter.lock().unwrap() += spans;
        Reply::After(Duration::from_millis(200), Box::new(ok_empty()))
    })
    .await;
    let report = exporter(&server.url()).send(&docs, deadline(700)).await;
    let answered = *answered.lock().unwrap();
    assert!(answered > 0 && answered < spans(&docs), "{answered}");
    assert_eq!(report.exported, answered, "{report:?}");
    assert_eq!(
        report.dropped,
        vec![(DropReason::ExportTimeout, spans(&docs) - answered)],
        "{report:?}"
    );
}

#[tokio::test]
async fn sends_every_document_signed_in_calls_of_at_most_50() {
    let server = FakeServer::start(|_, _| ok_empty()).await;
    let docs = documents(120);
    let report = exporter(&server.url()).send(&docs, deadline(5000)).await;

    let received = server.recorded();
    assert_eq!(received.len(), 3, "120 documents → 50 + 50 + 20");
    let mut arrived: Vec<String> = received.iter().flat_map(decode_put).collect();
    let mut given = jsons(&docs);
    // Calls run a few at a time, so they may complete in any order.
    arrived.sort();
    given.sort();
    assert_eq!(arrived, given, "exactly the documents given");
    assert_eq!(report.exported, spans(&docs));
    assert!(report.dropped.is_empty(), "{report:?}");
    assert_eq!(report.errors, 0);
}

#[tokio::test]
async fn large_documents_are_cut_into_calls_under_the_body_limit() {
    let server = FakeServer::start(|_, _| ok_empty()).await;
    let mut docs = documents(30);
    for d in &mut docs {
        let mut v: serde_json::Value = serde_json::from_str(&d.json).unwrap();
        v["metadata"]["default"]["blob"] = serde_json::Value::String("b".repeat(60 * 1024));
        d.json = v.to_string();
    }
    let report = exporter(&server.url()).send(&docs, deadline(5000)).await;
    let received = server.recorded();
    assert!(received.len() >= 2, "{} calls", received.len());
    for r in &received {
        assert!(
            r.body.len() <= MAX_BODY_BYTES + 64 * 1024,
            "{} bytes",
            r.body.len()
        );
    }
    let mut arrived: Vec<String> = received.iter().flat_map(decode_put).collect();
    let mut given = jsons(&docs);
    arrived.sort();
    given.sort();
    assert_eq!(arrived, given);
    assert_eq!(report.exported, spans(&docs));
}

#[tokio::test]
async fn unprocessed_segments_are_sent_once_more_then_rejected() {
    let docs = documents(10);
    let always = docs[3].id.clone();
    let once = docs[7].id.clone();
    let (a, o) = (always.clone(), once.clone());
    let server = FakeServer::start(move |i, req| {
        let sent = decode_put(req);
        let mut unprocessed = vec![serde_json::json!({
            "Id": a, "ErrorCode": "InvalidSegment", "Message": "bad segment"
        })];
        if i == 0 {
            unprocessed.push(serde_json::json!({
                "Id": o, "ErrorCode": "ThrottledException", "Message": "slow down"
            }));
        }
        // Only ids that were in this call.
        unprocessed.retain(|u| sent.iter().any(|d| d.contains(u["Id"].as_str().unwrap())));
        Reply::json(
            200,
            serde_json::json!({"UnprocessedTraceSegments": unprocessed}),
        )
    })
    .await;
    let exp = exporter(&server.url());
    let report = exp.send(&docs, deadline(5000)).await;

    let received = server.recorded();
    assert_eq!(
        received.len(),
        2,
        "one call, one retry of the unprocessed, no more"
    );
    assert_eq!(decode_put(&received[0]), jsons(&docs));
    assert_eq!(
        decode_put(&received[1]),
        vec![docs[3].json.clone(), docs[7].json.clone()],
        "the retry carries exactly the unprocessed documents"
    );
    assert_eq!(report.exported, spans(&docs) - docs[3].spans);
    assert_eq!(
        report.dropped,
        vec![(DropReason::ExportRejected, docs[3].spans)]
    );
    assert_eq!(report.errors, 1);
    assert!(
        exp.logged_causes()
            .contains(&"unprocessed segments: InvalidSegment".to_owned()),
        "{:?}",
        exp.logged_causes()
    );
}

#[tokio::test]
async fn server_errors_and_throttling_are_retried() {
    let server = FakeServer::start(|i, req| {
        decode_put(req);
        match i {
            0 => Reply::json(500, serde_json::json!({"message": "internal"})),
            1 => Reply::Respond {
                status: 400,
                headers: vec![("x-amzn-ErrorType".into(), "ThrottledException:".into())],
                body: br#"{"message":"Rate exceeded"}"#.to_vec(),
            },
            _ => ok_empty(),
        }
    })
    .await;
    let docs = documents(4);
    let report = exporter(&server.url()).send(&docs, deadline(5000)).await;
    let received = server.recorded();
    assert_eq!(received.len(), 3);
    for r in &received {
        assert_eq!(
            decode_put(r),
            jsons(&docs),
            "every attempt sends the same documents"
        );
    }
    assert_eq!(report.exported, spans(&docs));
    assert_eq!(report.errors, 0);
}

#[tokio::test]
async fn persistent_server_errors_stop_after_bounded_attempts() {
    let server = FakeServer::start(|_, _| Reply::json(503, serde_json::json!({}))).await;
    let docs = documents(3);
    let report = exporter(&server.url()).send(&docs, deadline(5000)).await;
    assert_eq!(
        server.recorded().len(),
        otel_xray::export::api::MAX_ATTEMPTS as usize
    );
    assert_eq!(
        report.dropped,
        vec![(DropReason::ExportFailed, spans(&docs))]
    );
    assert_eq!(report.errors, 1);
}

#[tokio::test]
async fn forbidden_is_rejected_without_retry_and_logged_once() {
    let logs = LogCapture::start();
    let server = FakeServer::start(|_, _| Reply::Respond {
        status: 403,
        headers: vec![(
            "x-amzn-ErrorType".into(),
            "UnrecognizedClientException:http://internal.amazon.com/coral/".into(),
        )],
        body: br#"{"message":"The security token included in the request is invalid."}"#.to_vec(),
    })
    .await;
    let exp = exporter(&server.url());
    let docs = documents(5);
    let first = exp.send(&docs, deadline(5000)).await;
    let second = exp.send(&docs, deadline(5000)).await;
    for report in [&first, &second] {
        assert_eq!(report.exported, 0);
        assert_eq!(
            report.dropped,
            vec![(DropReason::ExportRejected, spans(&docs))]
        );
        assert_eq!(report.errors, 1);
    }
    assert_eq!(server.recorded().len(), 2, "a 403 is not retried");
    assert_eq!(
        exp.logged_causes(),
        vec!["HTTP 403 UnrecognizedClientException".to_owned()]
    );
    assert_eq!(logs.warnings_with("HTTP 403"), 1, "{:#?}", logs.lines());
    assert!(
        !logs
            .lines()
            .iter()
            .any(|l| l.contains(SECRET_KEY) || l.contains(SESSION_TOKEN)),
        "credentials never reach the logs"
    );
}

#[tokio::test]
async fn a_hanging_endpoint_costs_the_deadline_and_no_more() {
    let server = FakeServer::start(|_, _| Reply::Hang).await;
    let docs = documents(60);
    let budget = Duration::from_millis(300);
    let started = Instant::now();
    let report = exporter(&server.url()).send(&docs, started + budget).await;
    let took = started.elapsed();
    assert!(took >= budget - Duration::from_millis(5), "{took:?}");
    assert!(took < budget + Duration::from_millis(500), "{took:?}");
    assert_eq!(report.exported, 0);
    assert_eq!(
        report.dropped,
        vec![(DropReason::ExportTimeout, spans(&docs))]
    );
    assert_eq!(
        server.recorded().len(),
        2,
        "both calls start at once (concurrently) and none is started again"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_counted_within_the_deadline() {
    let url = format!("http://{}", closed_port());
    let docs = documents(7);
    let budget = Duration::from_millis(800);
    let started = Instant::now();
    let exp = exporter(&url);
    let report = exp.send(&docs, started + budget).await;
    assert!(started.elapsed() < budget + Duration::from_millis(500));
    assert_eq!(report.exported, 0);
    assert_eq!(report.spans(), spans(&docs));
    assert_eq!(report.dropped(DropReason::ExportFailed), spans(&docs));
    assert_eq!(exp.logged_causes(), vec!["connect failed".to_owned()]);
}

#[tokio::test]
async fn the_configured_exporter_sends_what_translate_produces() {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&received);
    let server = FakeServer::start(move |_, req| {
        sink.lock().unwrap().extend(decode_put(req));
        ok_empty()
    })
    .await;
    let url = server.url();
    let (config, warnings) = Config::from_lookup(|k| match k {
        "OTEL_XRAY_EXPORTER" => Some("api".into()),
        "OTEL_XRAY_API_ENDPOINT" => Some(url.clone()),
        "AWS_REGION" => Some(REGION.into()),
        "OTEL_XRAY_INDEXED_ATTRIBUTES" => Some("http.request.method".into()),
        _ => None,
    })
    .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let exporter = Exporter::from_config_with(
        &config,
        ExporterOptions {
            credentials: Some(credentials()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        exporter.translate_options().indexed_attributes,
        vec!["http.request.method".to_owned()]
    );

    let rs = resource_spans(3);
    let batch = SpanBatch::new(rs.clone());
    let expected = translate(&rs, exporter.translate_options());
    let report = exporter.export(batch.clone(), deadline(5000)).await;

    assert_eq!(*received.lock().unwrap(), jsons(&expected.documents));
    assert_eq!(report.exported, spans(&expected.documents));
    assert_eq!(
        report.spans(),
        batch.spans,
        "every span accounted for: {report:?}"
    );
    assert!(report.dropped(DropReason::InvalidSpan) >= expected.invalid_spans);
    let ids: HashSet<&str> = expected.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        expected.documents.len(),
        "document ids are unique"
    );
}

#[tokio::test]
async fn the_signature_check_is_not_vacuous() {
    let server = FakeServer::start(|_, _| ok_empty()).await;
    exporter(&server.url())
        .send(&documents(2), deadline(5000))
        .await;
    let good = server.recorded().remove(0);
    assert!(verify_sigv4(&good, SECRET_KEY, REGION, "xray").is_ok());
    assert!(verify_sigv4(&good, "another-secret", REGION, "xray").is_err());
    assert!(verify_sigv4(&good, SECRET_KEY, "us-east-1", "xray").is_err());
    let mut tampered = good.clone();
    tampered.body = bytes::Bytes::from(good.body.iter().rev().copied().collect::<Vec<u8>>());
    assert!(verify_sigv4(&tampered, SECRET_KEY, REGION, "xray").is_err());
    let mut tampered = good.clone();
    tampered
        .headers
        .insert("x-amz-security-token", "other".parse().unwrap());
    assert!(verify_sigv4(&tampered, SECRET_KEY, REGION, "xray").is_err());
    let mut tampered = good;
    tampered.path = "/Traces".into();
    assert!(verify_sigv4(&tampered, SECRET_KEY, REGION, "xray").is_err());
}

/// Hands out fixed credentials, counting the calls.
#[derive(Debug)]
struct CountingProvider(Arc<std::sync::atomic::AtomicUsize>);

impl aws_credential_types::provider::ProvideCredentials for CountingProvider {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        aws_credential_types::provider::future::ProvideCredentials::ready(Ok(
            aws_credential_types::Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                Some(SESSION_TOKEN.into()),
                None,
                "counting",
            ),
        ))
    }
}

#[tokio::test]
async fn nothing_happens_before_the_first_export_and_everything_is_reused_after() {
    let server = FakeServer::start(|_, _| ok_empty()).await;
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let provider = aws_credential_types::provider::SharedCredentialsProvider::new(
        CountingProvider(Arc::clone(&calls)),
    );
    let exp =
        ApiExporter::new(&server.url(), REGION, CredentialsSource::Provider(provider)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no credentials at start-up"
    );
    assert!(server.recorded().is_empty(), "no connection at start-up");

    let docs = documents(3);
    for _ in 0..3 {
        let report = exp.send(&docs, deadline(5000)).await;
        assert_eq!(report.exported, spans(&docs));
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "credentials cached"
    );
    let received = server.recorded();
    assert_eq!(received.len(), 3);
    assert!(
        received.iter().all(|r| r.peer == received[0].peer),
        "one kept-alive connection: {:?}",
        received.iter().map(|r| r.peer).collect::<Vec<_>>()
    );
    for r in &received {
        assert_eq!(decode_put(r), jsons(&docs));
    }
}

const CONTAINER_KEY: &str = "ASIACONTAINERKEY";
const CONTAINER_SECRET: &str = "container/secret/key";
const CONTAINER_TOKEN: &str = "container-session-token";
const CONTAINER_AUTH: &str = "Bearer-like-authorization-token";

/// The real credential chain, in a child process whose environment looks like a SnapStart
/// sandbox: no access keys, container credentials at a 127.0.0.1 URI. The chain must fetch them
/// (once) through the exporter's HTTP client and sign with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_chain_uses_container_credentials() {
    if let Ok(endpoint) = std::env::var("OTEL_XRAY_TEST_CHILD_ENDPOINT") {
        // The child: exports twice with the standard chain.
        let exp = ApiExporter::new(&endpoint, REGION, CredentialsSource::Chain).unwrap();
        for _ in 0..2 {
            let report = exp.send(&documents(2), deadline(5000)).await;
            assert_eq!(report.exported, 3, "{report:?} {:?}", exp.logged_causes());
        }
        return;
    }
    let server = FakeServer::start(|_, req| {
        if req.method == "GET" && req.path == "/creds" {
            if req
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap())
                != Some(CONTAINER_AUTH)
            {
                return Reply::json(401, serde_json::json!({"message": "bad token"}));
            }
            return Reply::json(
                200,
                serde_json::json!({
                    "AccessKeyId": CONTAINER_KEY,
                    "SecretAccessKey": CONTAINER_SECRET,
                    "Token": CONTAINER_TOKEN,
                    "Expiration": "2099-01-01T00:00:00Z",
                }),
            );
        }
        match verify_sigv4(req, CONTAINER_SECRET, REGION, "xray") {
            Ok(auth)
                if auth.access_key == CONTAINER_KEY
                    && req.headers["x-amz-security-token"] == CONTAINER_TOKEN =>
            {
                ok_empty()
            }
            Ok(auth) => Reply::json(403, serde_json::json!({"message": format!("{auth:?}")})),
            Err(e) => Reply::json(403, serde_json::json!({"message": e})),
        }
    })
    .await;
    let url = server.url();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_standard_chain_uses_container_credentials",
                "--nocapture",
            ])
            .env("OTEL_XRAY_TEST_CHILD_ENDPOINT", &url)
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", format!("{url}/creds"))
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN", CONTAINER_AUTH)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .env_remove("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let received = server.recorded();
    let fetches = received.iter().filter(|r| r.path == "/creds").count();
    let puts: Vec<&Recorded> = received
        .iter()
        .filter(|r| r.path == "/TraceSegments")
        .collect();
    assert_eq!(
        fetches, 1,
        "container credentials fetched once, then cached"
    );
    assert_eq!(puts.len(), 2);
    for put in puts {
        verify_sigv4(put, CONTAINER_SECRET, REGION, "xray").unwrap();
    }
}
