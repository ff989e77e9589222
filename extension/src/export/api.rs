//! The PutTraceSegments exporter: `POST {endpoint}/TraceSegments` with
//! `{"TraceSegmentDocuments": ["<document>", …]}`, SigV4-signed for service `xray`.
//!
//! - At most [`MAX_DOCUMENTS_PER_CALL`] documents and about [`MAX_BODY_BYTES`] per call.
//! - `UnprocessedTraceSegments` in a 200 response: those documents are sent once more; what is
//!   still unprocessed then is dropped as [`DropReason::ExportRejected`].
//! - 5xx, 429 and throttling errors, and transport failures: retried with a short exponential
//!   backoff, at most [`MAX_ATTEMPTS`] attempts, never past the deadline; then
//!   [`DropReason::ExportFailed`].
//! - Other 4xx (bad credentials, bad request): [`DropReason::ExportRejected`], no retry.
//! - The deadline: a call is started only while the slowest call of this flush so far, and half
//!   again, would still end by it, so that a call the endpoint accepts is not cut off and miscounted;
//!   [`DropReason::ExportTimeout`] for what was not sent, or still in flight at the deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, StatusCode, Uri};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::credentials::{CredentialsCache, CredentialsError, CredentialsSource};
use super::http_client::{HttpClient, Response};
use super::{
    Causes, ExportError, ExportReport, Failure, backoff, log_failure, sigv4, sleep_within,
};
use crate::stats::DropReason;
use crate::xray::Document;

/// PutTraceSegments takes at most 50 documents a call (the X-Ray daemon's and the Collector's
/// batch size).
pub const MAX_DOCUMENTS_PER_CALL: usize = 50;

/// Body size aimed for per call. Fifty 64 KiB documents, JSON-escaped, would be close to 4 MiB;
/// calls are cut earlier when documents are large, so no single request gets near the service's
/// limits and a slow one does not hold the whole flush.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Attempts per call for retryable failures (the first included).
pub const MAX_ATTEMPTS: u32 = 3;

/// Base of the retry backoff.
const BACKOFF_BASE: Duration = Duration::from_millis(25);
/// PutTraceSegments calls in flight at once during one flush.
const CONCURRENT_CALLS: usize = 8;
/// How long the slowest call of a send admits the calls of later sends without a new probe.
const SLOWEST_FRESH_FOR: Duration = Duration::from_secs(30);

/// Responses are small JSON documents; anything bigger is not X-Ray.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Sends documents with PutTraceSegments.
#[derive(Debug)]
pub struct ApiExporter {
    url: Uri,
    region: String,
    http: Arc<HttpClient>,
    credentials: CredentialsCache,
    causes: Causes,
    /// The slowest call of the last send that completed one, and when: the first calls of the
    /// next send (the next chunk of the same flush, or the next flush) are admitted by it too.
    slowest: std::sync::Mutex<(Duration, Option<Instant>)>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PutTraceSegmentsRequest<'a> {
    trace_segment_documents: Vec<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct PutTraceSegmentsResponse {
    #[serde(default)]
    unprocessed_trace_segments: Vec<UnprocessedTraceSegment>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "PascalCase")]
struct UnprocessedTraceSegment {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl ApiExporter {
    /// An exporter for `endpoint` (base URL, no path) signing for `region`. Builds nothing yet.
    pub fn new(
        endpoint: &str,
        region: &str,
        credentials: CredentialsSource,
    ) -> Result<Self, ExportError> {
        let base = endpoint.trim_end_matches('/');
        let url: Uri = format!("{base}/TraceSegments")
            .parse()
            .map_err(|e| ExportError::Config(format!("api endpoint {endpoint:?}: {e}")))?;
        if url.host().is_none() || !matches!(url.scheme_str(), Some("http" | "https")) {
            return Err(ExportError::Config(format!(
                "api endpoint {endpoint:?} is not an http(s) URL"
            )));
        }
        let http = HttpClient::new(url.scheme_str() == Some("https"));
        let credentials = CredentialsCache::new(credentials, Arc::clone(&http));
        Ok(ApiExporter {
            url,
            region: region.to_owned(),
            http,
            credentials,
            causes: Causes::default(),
            slowest: std::sync::Mutex::new((Duration::ZERO, None)),
        })
    }

    /// The PutTraceSegments URL.
    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// The failure causes logged so far.
    pub fn logged_causes(&self) -> Vec<String> {
        self.causes.logged()
    }

    /// Sends `documents`, in calls of at most 50, by `deadline`.
    pub async fn send(&self, documents: &[Document], deadline: Instant) -> ExportReport {
        let mut report = ExportReport::default();
        if documents.is_empty() {
            return report;
        }
        let credentials = match self.credentials.get(deadline).await {
            Ok(c) => c,
            Err(e) => {
                let spans = documents.iter().map(|d| d.spans).sum();
                let reason = match e {
                    CredentialsError::Timeout => DropReason::ExportTimeout,
                    CredentialsError::Unavailable(_) => DropReason::ExportFailed,
                };
                report.add_dropped(reason, spans);
                report.errors += 1;
                let cause = match e {
                    CredentialsError::Timeout => "credentials: timed out",
                    CredentialsError::Unavailable(_) => "credentials: unavailable",
                };
                log_failure!(self.causes, "api", cause, spans, e);
                return report;
            }
        };
        // Calls go out a few at a time: a large flush against a distant endpoint then fits
        // its budget (200 calls of 50 documents at 50 ms each take 10 s one by one).
        let mut pending = calls(documents).into_iter();
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        let (before, measured) = *self
            .slowest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A measurement this old may no longer hold: one call goes anyway and measures anew, so
        // that a slow spell once cannot stop every later export.
        let stale = measured.is_none_or(|at| at.elapsed() > SLOWEST_FRESH_FOR);
        // Half again the slowest seen: a loaded machine answers later than it did.
        let fits = |slowest: Duration| Instant::now() + slowest + slowest / 2 <= deadline;
        let mut slowest = Duration::ZERO;
        while in_flight.len() < CONCURRENT_CALLS {
            let Some(call) = pending.next() else {
                break;
            };
            if (stale && in_flight.is_empty()) || fits(before) {
                in_flight.push(self.send_one(call, &credentials, deadline));
            } else {
                // It would not be answered in time: not sent, so surely not delivered.
                report.add_dropped(
                    DropReason::ExportTimeout,
                    call.iter().map(|d| d.spans).sum(),
                );
            }
        }
        while let Some((part, took)) = in_flight.next().await {
            report.merge(part);
            slowest = slowest.max(took);
            for call in pending.by_ref() {
                if fits(slowest) {
                    in_flight.push(self.send_one(call, &credentials, deadline));
                    break;
                }
                report.add_dropped(
                    DropReason::ExportTimeout,
                    call.iter().map(|d| d.spans).sum(),
                );
            }
        }
        if slowest > Duration::ZERO {
            *self
                .slowest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                (slowest, Some(Instant::now()));
        }
        report
    }

    /// One call, unless the deadline has passed already; with how long it took.
    async fn send_one(
        &self,
        call: Vec<&Document>,
        credentials: &Credentials,
        deadline: Instant,
    ) -> (ExportReport, Duration) {
        let started = Instant::now();
        let mut part = ExportReport::default();
        if Instant::now() >= deadline {
            part.add_dropped(
                DropReason::ExportTimeout,
                call.iter().map(|d| d.spans).sum(),
            );
        } else {
            self.send_call(&call, credentials, deadline, &mut part)
                .await;
        }
        (part, started.elapsed())
    }

    /// One call plus, for unprocessed documents, one more.
    async fn send_call(
        &self,
        call: &[&Document],
        credentials: &Credentials,
        deadline: Instant,
        report: &mut ExportReport,
    ) {
        let unprocessed = match self.put(call, credentials, deadline).await {
            Ok(u) => u,
            Err(f) => {
                self.fail(report, f, call.iter().map(|d| d.spans).sum());
                return;
            }
        };
        let (retry, done) = split_unprocessed(call, &unprocessed);
        report.exported += done.iter().map(|d| d.spans).sum::<usize>();
        if retry.is_empty() {
            return;
        }
        self.log_unprocessed(&unprocessed, retry.iter().map(|d| d.spans).sum(), false);
        let retry_spans: usize = retry.iter().map(|d| d.spans).sum();
        if !sleep_within(backoff(0, BACKOFF_BASE), deadline).await {
            report.add_dropped(DropReason::ExportTimeout, retry_spans);
            return;
        }
        match self.put(&retry, credentials, deadline).await {
            Ok(still) => {
                let (rejected, done) = split_unprocessed(&retry, &still);
                report.exported += done.iter().map(|d| d.spans).sum::<usize>();
                let rejected_spans: usize = rejected.iter().map(|d| d.spans).sum();
                if !rejected.is_empty() {
                    report.add_dropped(DropReason::ExportRejected, rejected_spans);
                    report.errors += 1;
                    self.log_unprocessed(&still, rejected_spans, true);
                }
            }
            Err(f) => self.fail(report, f, retry_spans),
        }
    }

    fn fail(&self, report: &mut ExportReport, failure: Failure, spans: usize) {
        report.add_dropped(failure.reason, spans);
        report.errors += 1;
        log_failure!(self.causes, "api", failure.cause, spans, failure.detail);
    }

    fn log_unprocessed(&self, unprocessed: &[UnprocessedTraceSegment], spans: usize, final_: bool) {
        for u in unprocessed {
            let code = u.error_code.as_deref().unwrap_or("unknown");
            let cause = if final_ {
                format!("unprocessed segments: {code}")
            } else {
                format!("unprocessed segments (retrying): {code}")
            };
            if final_ {
                log_failure!(
                    self.causes,
                    "api",
                    cause,
                    spans,
                    u.message.as_deref().unwrap_or("")
                );
            } else if self.causes.first(&cause) {
                tracing::info!(
                    exporter = "api",
                    cause = %cause,
                    detail = u.message.as_deref().unwrap_or(""),
                    "X-Ray left segments unprocessed; sending them once more"
                );
            }
        }
    }

    /// One PutTraceSegments call with bounded retries; the unprocessed segments on success.
    async fn put(
        &self,
        documents: &[&Document],
        credentials: &Credentials,
        deadline: Instant,
    ) -> Result<Vec<UnprocessedTraceSegment>, Failure> {
        let body = serde_json::to_vec(&PutTraceSegmentsRequest {
            trace_segment_documents: documents.iter().map(|d| d.json.as_str()).collect(),
        })
        .map_err(|e| Failure {
            reason: DropReason::ExportFailed,
            cause: "encode request".into(),
            detail: e.to_string(),
        })?;
        let body = Bytes::from(body);
        let mut attempt = 0;
        loop {
            let last = attempt + 1 >= MAX_ATTEMPTS;
            let request = self.request(body.clone(), credentials)?;
            let outcome = self.http.send(request, deadline, MAX_RESPONSE_BYTES).await;
            let failure = match outcome {
                Ok(resp) if resp.status.is_success() => return Ok(parse_unprocessed(&resp)),
                Ok(resp) => {
                    let error_type = error_type(&resp);
                    let retryable = is_retryable(resp.status, &error_type);
                    let failure = Failure {
                        reason: if retryable {
                            DropReason::ExportFailed
                        } else {
                            DropReason::ExportRejected
                        },
                        cause: format!("HTTP {} {}", resp.status.as_u16(), error_type),
                        detail: error_message(&resp),
                    };
                    if !retryable || last {
                        return Err(failure);
                    }
                    failure
                }
                Err(e) => {
                    let (failure, retryable) = Failure::from_transport(e, &self.url);
                    if !retryable || last {
                        return Err(failure);
                    }
                    failure
                }
            };
            tracing::debug!(exporter = "api", attempt, cause = %failure.cause, "retrying");
            if !sleep_within(backoff(attempt, BACKOFF_BASE), deadline).await {
                return Err(failure);
            }
            attempt += 1;
        }
    }

    fn request(
        &self,
        body: Bytes,
        credentials: &Credentials,
    ) -> Result<http::Request<Bytes>, Failure> {
        let mut request = http::Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, super::USER_AGENT)
            .body(body)
            .map_err(|e| Failure {
                reason: DropReason::ExportFailed,
                cause: "build request".into(),
                detail: e.to_string(),
            })?;
        sigv4::sign(
            &mut request,
            credentials,
            &self.region,
            sigv4::XRAY_SERVICE,
            SystemTime::now(),
        )
        .map_err(|e| Failure {
            reason: DropReason::ExportFailed,
            cause: "sign request".into(),
            detail: e.to_string(),
        })?;
        Ok(request)
    }
}

/// Cuts documents into calls of at most [`MAX_DOCUMENTS_PER_CALL`] documents and about
/// [`MAX_BODY_BYTES`] (a document larger than that goes alone).
fn calls(documents: &[Document]) -> Vec<Vec<&Document>> {
    let mut out: Vec<Vec<&Document>> = Vec::new();
    let mut current: Vec<&Document> = Vec::new();
    let mut bytes = 0;
    for doc in documents {
        // JSON string escaping: quotes and backslashes double, control characters grow more
        // (the translator's documents have few of those); 10% plus quotes and comma covers it.
        let cost = doc.json.len() + doc.json.len() / 10 + 3;
        if !current.is_empty()
            && (current.len() >= MAX_DOCUMENTS_PER_CALL || bytes + cost > MAX_BODY_BYTES)
        {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += cost;
        current.push(doc);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The documents to send again (their id is listed as unprocessed) and the others.
fn split_unprocessed<'a>(
    call: &[&'a Document],
    unprocessed: &[UnprocessedTraceSegment],
) -> (Vec<&'a Document>, Vec<&'a Document>) {
    if unprocessed.is_empty() {
        return (Vec::new(), call.to_vec());
    }
    let ids: HashMap<&str, ()> = unprocessed
        .iter()
        .filter_map(|u| u.id.as_deref())
        .map(|id| (id, ()))
        .collect();
    call.iter().partition(|d| ids.contains_key(d.id.as_str()))
}

fn parse_unprocessed(resp: &Response) -> Vec<UnprocessedTraceSegment> {
    if resp.body.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice::<PutTraceSegmentsResponse>(&resp.body)
        .map(|r| r.unprocessed_trace_segments)
        .unwrap_or_default()
}

/// The AWS error type: `x-amzn-ErrorType` (up to its first `:`), else the body's `__type`/`code`.
fn error_type(resp: &Response) -> String {
    if let Some(t) = resp
        .headers
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
    {
        return t.split(':').next().unwrap_or(t).to_owned();
    }
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    for key in ["__type", "code", "Code"] {
        if let Some(t) = body.get(key).and_then(|v| v.as_str()) {
            return t.rsplit('#').next().unwrap_or(t).to_owned();
        }
    }
    String::new()
}

fn error_message(resp: &Response) -> String {
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    for key in ["message", "Message"] {
        if let Some(m) = body.get(key).and_then(|v| v.as_str()) {
            return m.chars().take(300).collect();
        }
    }
    String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)]).into_owned()
}

fn is_retryable(status: StatusCode, error_type: &str) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || error_type.contains("Throttl")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: usize, len: usize) -> Document {
        Document {
            trace_id: "1-5759e988-bd862e3fe1be46a994272793".into(),
            id: format!("{id:016x}"),
            json: "x".repeat(len),
            spans: 1,
        }
    }

    #[test]
    fn calls_respect_count_and_size() {
        let docs: Vec<Document> = (0..120).map(|i| doc(i, 100)).collect();
        let c = calls(&docs);
        assert_eq!(c.iter().map(Vec::len).collect::<Vec<_>>(), vec![50, 50, 20]);
        let docs: Vec<Document> = (0..40).map(|i| doc(i, 60 * 1024)).collect();
        let c = calls(&docs);
        assert!(c.len() > 1);
        for call in &c {
            let bytes: usize = call.iter().map(|d| d.json.len()).sum();
            assert!(bytes <= MAX_BODY_BYTES, "{bytes}");
        }
        assert_eq!(c.iter().map(Vec::len).sum::<usize>(), 40);
        // A document over the limit still goes, alone.
        let docs = vec![doc(1, 10), doc(2, 2 * MAX_BODY_BYTES), doc(3, 10)];
        assert_eq!(
            calls(&docs).iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
    }

    #[test]
    fn unprocessed_ids_select_documents() {
        let docs: Vec<Document> = (0..4).map(|i| doc(i, 10)).collect();
        let refs: Vec<&Document> = docs.iter().collect();
        let unprocessed = vec![UnprocessedTraceSegment {
            id: Some(format!("{:016x}", 2)),
            error_code: Some("ThrottledException".into()),
            message: None,
        }];
        let (retry, done) = split_unprocessed(&refs, &unprocessed);
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].id, docs[2].id);
        assert_eq!(done.len(), 3);
    }

    #[test]
    fn errors_are_classified() {
        let resp = |status: u16, header: Option<&str>, body: &str| Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: header
                .map(|h| {
                    let mut m = http::HeaderMap::new();
                    m.insert("x-amzn-errortype", h.parse().unwrap());
                    m
                })
                .unwrap_or_default(),
            body: Bytes::from(body.to_owned()),
        };
        let r = resp(
            403,
            Some("UnrecognizedClientException:http://internal.amazon.com/"),
            r#"{"message":"The security token included in the request is invalid."}"#,
        );
        assert_eq!(error_type(&r), "UnrecognizedClientException");
        assert!(error_message(&r).contains("security token"));
        assert!(!is_retryable(r.status, &error_type(&r)));
        let r = resp(400, None, r#"{"__type":"com.amazon#ThrottledException"}"#);
        assert_eq!(error_type(&r), "ThrottledException");
        assert!(is_retryable(r.status, &error_type(&r)));
        assert!(is_retryable(StatusCode::SERVICE_UNAVAILABLE, ""));
        assert!(is_retryable(StatusCode::TOO_MANY_REQUESTS, ""));
    }
}
