//! The OTLP/HTTP exporter: `ExportTraceServiceRequest` (protobuf, optionally gzip) POSTed to
//! `OTEL_XRAY_OTLP_ENDPOINT`, with the headers of `OTEL_XRAY_OTLP_HEADERS`, SigV4-signed
//! (service `xray`) when `OTEL_XRAY_OTLP_SIGV4` is on, for X-Ray's own endpoint
//! `https://xray.<region>.amazonaws.com/v1/traces`.
//!
//! Spans are sent as received (no X-Ray translation, no decoding): the buffered requests'
//! encodings are joined into requests of at most [`MAX_SPANS_PER_REQUEST`] spans and
//! [`MAX_REQUEST_BYTES`] uncompressed bytes each (X-Ray's OTLP limits), on request boundaries.
//! Only a single buffered request over a limit is decoded and cut between spans; a span that
//! cannot fit in any request is dropped as [`DropReason::TooLarge`].
//!
//! Responses, per the OTLP specification: 2xx with `partial_success.rejected_spans` → those
//! spans [`DropReason::ExportRejected`]; 429, 502, 503, 504 (and transport failures) → retried,
//! honouring `Retry-After`, within the deadline, then [`DropReason::ExportFailed`]; other 4xx →
//! [`DropReason::ExportRejected`]; other 5xx → [`DropReason::ExportFailed`].

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use http::{Method, StatusCode, Uri};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message as _;
use tokio::time::Instant;

use super::credentials::{CredentialsCache, CredentialsError, CredentialsSource};
use super::http_client::{HttpClient, Response};
use super::{
    Causes, ExportError, ExportReport, Failure, backoff, log_failure, sigv4, sleep_within,
};
use crate::buffer::EncodedRequest;
use crate::stats::DropReason;

/// X-Ray's OTLP endpoint takes at most 10,000 spans a request.
pub const MAX_SPANS_PER_REQUEST: usize = 10_000;

/// X-Ray's OTLP endpoint takes at most 5 MB (uncompressed) a request; kept a little under.
pub const MAX_REQUEST_BYTES: usize = 5_000_000;

/// Attempts per request for retryable failures (the first included).
pub const MAX_ATTEMPTS: u32 = 3;

/// Base of the retry backoff when the server gives no `Retry-After`.
const BACKOFF_BASE: Duration = Duration::from_millis(25);

/// Bodies at least this large are gzipped under [`Gzip::Auto`].
const GZIP_MIN_BYTES: usize = 1024;

/// Responses are small; anything bigger is not an OTLP receiver.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Compression of request bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Gzip {
    /// Gzip bodies of 1 KiB and more (the fastest level: the flush runs while the sandbox
    /// waits), except to a loopback endpoint, where compressing only costs CPU: gzip takes longer
    /// than decoding and translating the same spans (docs/performance.md).
    #[default]
    Auto,
    /// Always gzip.
    Always,
    /// Never gzip.
    Never,
}

/// How to reach the OTLP endpoint.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The traces URL, e.g. `https://xray.us-east-1.amazonaws.com/v1/traces`.
    pub endpoint: String,
    /// Extra headers (names and values are checked; invalid ones are skipped with a warning).
    pub headers: Vec<(String, String)>,
    /// Sign with SigV4 for this region (service `xray`); `None`: do not sign.
    pub sigv4_region: Option<String>,
    /// Credentials for signing.
    pub credentials: CredentialsSource,
    /// Compression.
    pub gzip: Gzip,
}

/// Sends spans over OTLP/HTTP.
#[derive(Debug)]
pub struct OtlpExporter {
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    sigv4_region: Option<String>,
    gzip: Gzip,
    /// The endpoint is on this host (`Gzip::Auto` does not compress then).
    loopback: bool,
    max_spans: usize,
    max_bytes: usize,
    http: Arc<HttpClient>,
    credentials: CredentialsCache,
    causes: Causes,
}

/// One request's worth of spans: buffered requests sent as the concatenation of their encodings
/// (concatenated encodings of a message are one message whose repeated fields are joined, so
/// this is one `ExportTraceServiceRequest` holding all their `resource_spans`).
#[derive(Debug, Default)]
struct Chunk {
    parts: Vec<Bytes>,
    spans: usize,
    bytes: usize,
}

impl Chunk {
    fn push(&mut self, bytes: Bytes, spans: usize) {
        self.bytes += bytes.len();
        self.spans += spans;
        self.parts.push(bytes);
    }

    /// The request body: the one part as it is, or the parts concatenated.
    fn body(mut self) -> Bytes {
        if self.parts.len() == 1
            && let Some(only) = self.parts.pop()
        {
            return only;
        }
        let mut body = Vec::with_capacity(self.bytes);
        for part in &self.parts {
            body.extend_from_slice(part);
        }
        Bytes::from(body)
    }
}

/// Decoded spans cut to fit in one request (a single buffered request over the limits).
#[derive(Debug, Default)]
struct Split {
    request: ExportTraceServiceRequest,
    spans: usize,
    bytes: usize,
}

impl OtlpExporter {
    /// An exporter for `settings`. Builds nothing yet.
    pub fn new(settings: OtlpSettings) -> Result<Self, ExportError> {
        let url: Uri = settings.endpoint.parse().map_err(|e| {
            ExportError::Config(format!("otlp endpoint {:?}: {e}", settings.endpoint))
        })?;
        if url.host().is_none() || !matches!(url.scheme_str(), Some("http" | "https")) {
            return Err(ExportError::Config(format!(
                "otlp endpoint {:?} is not an http(s) URL",
                settings.endpoint
            )));
        }
        let mut headers = Vec::with_capacity(settings.headers.len());
        for (name, value) in &settings.headers {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(mut v)) => {
                    // Extra headers often carry API keys.
                    v.set_sensitive(true);
                    headers.push((n, v));
                }
                _ => tracing::warn!(
                    header = %name,
                    "OTEL_XRAY_OTLP_HEADERS: invalid header name or value; skipped"
                ),
            }
        }
        let http = HttpClient::new(url.scheme_str() == Some("https"));
        let credentials = CredentialsCache::new(settings.credentials, Arc::clone(&http));
        let loopback = url.host().is_some_and(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        Ok(OtlpExporter {
            url,
            headers,
            sigv4_region: settings.sigv4_region,
            gzip: settings.gzip,
            loopback,
            max_spans: MAX_SPANS_PER_REQUEST,
            max_bytes: MAX_REQUEST_BYTES,
            http,
            credentials,
            causes: Causes::default(),
        })
    }

    /// Lowers the per-request limits (tests; a backend with smaller limits).
    pub fn with_limits(mut self, max_spans: usize, max_bytes: usize) -> Self {
        self.max_spans = max_spans.clamp(1, MAX_SPANS_PER_REQUEST);
        self.max_bytes = max_bytes.clamp(1, MAX_REQUEST_BYTES);
        self
    }

    /// The failure causes logged so far.
    pub fn logged_causes(&self) -> Vec<String> {
        self.causes.logged()
    }

    /// Sends buffered requests, joined into requests within the limits, by `deadline`.
    pub async fn send(&self, requests: Vec<EncodedRequest>, deadline: Instant) -> ExportReport {
        let mut report = ExportReport::default();
        let Plan {
            chunks,
            too_large,
            undecodable,
        } = plan(requests, self.max_spans, self.max_bytes);
        report.add_dropped(DropReason::InvalidSpan, undecodable);
        if too_large > 0 {
            report.add_dropped(DropReason::TooLarge, too_large);
            log_failure!(
                self.causes,
                "otlp",
                "span larger than a request",
                too_large,
                format_args!("limit {} bytes", self.max_bytes)
            );
        }
        if chunks.is_empty() {
            return report;
        }
        let credentials = match &self.sigv4_region {
            None => None,
            Some(_) => match self.credentials.get(deadline).await {
                Ok(c) => Some(c),
                Err(e) => {
                    let spans = chunks.iter().map(|c| c.spans).sum();
                    let (reason, cause) = match e {
                        CredentialsError::Timeout => {
                            (DropReason::ExportTimeout, "credentials: timed out")
                        }
                        CredentialsError::Unavailable(_) => {
                            (DropReason::ExportFailed, "credentials: unavailable")
                        }
                    };
                    report.add_dropped(reason, spans);
                    report.errors += 1;
                    log_failure!(self.causes, "otlp", cause, spans, e);
                    return report;
                }
            },
        };
        for chunk in chunks {
            if Instant::now() >= deadline {
                report.add_dropped(DropReason::ExportTimeout, chunk.spans);
                continue;
            }
            let spans = chunk.spans;
            match self.post(chunk, credentials.as_ref(), deadline).await {
                Ok((rejected, message)) => {
                    let rejected = rejected.min(spans);
                    report.exported += spans - rejected;
                    if rejected > 0 {
                        report.add_dropped(DropReason::ExportRejected, rejected);
                        report.errors += 1;
                        log_failure!(
                            self.causes,
                            "otlp",
                            format!("partial success: {}", first_words(&message)),
                            rejected,
                            message
                        );
                    } else if !message.is_empty() && self.causes.first(&message) {
                        tracing::info!(exporter = "otlp", message = %message, "OTLP endpoint says");
                    }
                }
                Err(f) => {
                    report.add_dropped(f.reason, spans);
                    report.errors += 1;
                    log_failure!(self.causes, "otlp", f.cause, spans, f.detail);
                }
            }
        }
        report
    }

    /// One request with bounded retries; `(rejected spans, message)` on success.
    async fn post(
        &self,
        chunk: Chunk,
        credentials: Option<&Credentials>,
        deadline: Instant,
    ) -> Result<(usize, String), Failure> {
        let raw = chunk.body();
        let gzip = match self.gzip {
            Gzip::Always => true,
            Gzip::Never => false,
            Gzip::Auto => raw.len() >= GZIP_MIN_BYTES && !self.loopback,
        };
        let body = if gzip {
            gzip_fast(&raw)
                .map_err(|e| Failure {
                    reason: DropReason::ExportFailed,
                    cause: "gzip".into(),
                    detail: e.to_string(),
                })?
                .into()
        } else {
            raw
        };
        let mut attempt = 0;
        loop {
            let last = attempt + 1 >= MAX_ATTEMPTS;
            let request = self.request(body.clone(), gzip, credentials)?;
            let (failure, retry_after) =
                match self.http.send(request, deadline, MAX_RESPONSE_BYTES).await {
                    Ok(resp) if resp.status.is_success() => return Ok(partial_success(&resp)),
                    Ok(resp) => {
                        let retryable = matches!(resp.status.as_u16(), 429 | 502 | 503 | 504);
                        let failure = Failure {
                            reason: if resp.status.is_client_error() && !retryable {
                                DropReason::ExportRejected
                            } else {
                                DropReason::ExportFailed
                            },
                            cause: format!("HTTP {}", resp.status.as_u16()),
                            detail: body_excerpt(&resp),
                        };
                        if !retryable || last {
                            return Err(failure);
                        }
                        (failure, retry_after(&resp))
                    }
                    Err(e) => {
                        let (failure, retryable) = Failure::from_transport(e, &self.url);
                        if !retryable || last {
                            return Err(failure);
                        }
                        (failure, None)
                    }
                };
            let delay = retry_after.unwrap_or_else(|| backoff(attempt, BACKOFF_BASE));
            tracing::debug!(exporter = "otlp", attempt, cause = %failure.cause, ?delay, "retrying");
            if !sleep_within(delay, deadline).await {
                return Err(failure);
            }
            attempt += 1;
        }
    }

    fn request(
        &self,
        body: Bytes,
        gzip: bool,
        credentials: Option<&Credentials>,
    ) -> Result<http::Request<Bytes>, Failure> {
        let mut builder = http::Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, super::USER_AGENT);
        if gzip {
            builder = builder.header(CONTENT_ENCODING, "gzip");
        }
        let mut request = builder.body(body).map_err(|e| Failure {
            reason: DropReason::ExportFailed,
            cause: "build request".into(),
            detail: e.to_string(),
        })?;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        if let (Some(region), Some(credentials)) = (&self.sigv4_region, credentials) {
            sigv4::sign(
                &mut request,
                credentials,
                region,
                sigv4::XRAY_SERVICE,
                SystemTime::now(),
            )
            .map_err(|e| Failure {
                reason: DropReason::ExportFailed,
                cause: "sign request".into(),
                detail: e.to_string(),
            })?;
        }
        Ok(request)
    }
}

/// Buffered requests grouped into the requests to send.
#[derive(Debug, Default)]
struct Plan {
    chunks: Vec<Chunk>,
    /// Spans too large for any request.
    too_large: usize,
    /// Spans of a buffered request that did not decode when it had to be split.
    undecodable: usize,
}

/// Groups buffered requests, in order and whole, into requests of at most `max_spans` spans and
/// `max_bytes` bytes, without decoding them. A single buffered request over a limit is decoded
/// and cut with [`split`] (rare: receivers take at most `OTEL_XRAY_MAX_REQUEST_BYTES` a request).
fn plan(requests: Vec<EncodedRequest>, max_spans: usize, max_bytes: usize) -> Plan {
    let mut plan = Plan::default();
    let mut current = Chunk::default();
    for request in requests {
        let len = request.bytes.len();
        if request.spans > max_spans || len > max_bytes {
            if current.spans > 0 {
                plan.chunks.push(std::mem::take(&mut current));
            }
            let Ok(resource_spans) = request.decode() else {
                plan.undecodable += request.spans;
                continue;
            };
            let (pieces, too_large) = split(resource_spans, max_spans, max_bytes);
            plan.too_large += too_large;
            for piece in pieces {
                let mut chunk = Chunk::default();
                chunk.push(Bytes::from(piece.request.encode_to_vec()), piece.spans);
                plan.chunks.push(chunk);
            }
            continue;
        }
        if current.spans > 0
            && (current.spans + request.spans > max_spans || current.bytes + len > max_bytes)
        {
            plan.chunks.push(std::mem::take(&mut current));
        }
        current.push(request.bytes, request.spans);
    }
    if current.spans > 0 {
        plan.chunks.push(current);
    }
    plan
}

/// Protobuf framing of a nested message: one tag byte and a length varint of up to 5 bytes.
const FRAME: usize = 6;

/// Cuts spans into requests of at most `max_spans` spans and (an upper bound of) `max_bytes`
/// encoded bytes, keeping each span with its resource and scope. Returns the requests and the
/// number of spans too large for any request.
fn split(
    resource_spans: Vec<ResourceSpans>,
    max_spans: usize,
    max_bytes: usize,
) -> (Vec<Split>, usize) {
    let mut chunks = Vec::new();
    let mut current = Split::default();
    let mut too_large = 0;
    for rs in resource_spans {
        let ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        } = rs;
        let rs_header = ResourceSpans {
            resource,
            scope_spans: Vec::new(),
            schema_url,
        };
        let rs_cost = rs_header.encoded_len() + FRAME;
        let mut rs_open = false;
        for ss in scope_spans {
            let ScopeSpans {
                scope,
                spans,
                schema_url,
            } = ss;
            let ss_header = ScopeSpans {
                scope,
                spans: Vec::new(),
                schema_url,
            };
            let ss_cost = ss_header.encoded_len() + FRAME;
            let mut ss_open = false;
            for span in spans {
                let span_cost = span.encoded_len() + FRAME;
                if rs_cost + ss_cost + span_cost > max_bytes {
                    too_large += 1;
                    continue;
                }
                let extra = span_cost
                    + if rs_open { 0 } else { rs_cost }
                    + if ss_open { 0 } else { ss_cost };
                if current.spans > 0
                    && (current.spans >= max_spans || current.bytes + extra > max_bytes)
                {
                    chunks.push(std::mem::take(&mut current));
                    rs_open = false;
                    ss_open = false;
                }
                if !rs_open {
                    current.request.resource_spans.push(rs_header.clone());
                    current.bytes += rs_cost;
                    rs_open = true;
                    ss_open = false;
                }
                let Some(rs_out) = current.request.resource_spans.last_mut() else {
                    continue;
                };
                if !ss_open {
                    rs_out.scope_spans.push(ss_header.clone());
                    current.bytes += ss_cost;
                    ss_open = true;
                }
                let Some(ss_out) = rs_out.scope_spans.last_mut() else {
                    continue;
                };
                ss_out.spans.push(span);
                current.spans += 1;
                current.bytes += span_cost;
            }
        }
    }
    if current.spans > 0 {
        chunks.push(current);
    }
    (chunks, too_large)
}

fn gzip_fast(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(raw.len() / 4 + 64), Compression::fast());
    enc.write_all(raw)?;
    enc.finish()
}

/// `(rejected spans, message)` from a successful response (protobuf or JSON; empty is fine).
fn partial_success(resp: &Response) -> (usize, String) {
    if resp.body.is_empty() {
        return (0, String::new());
    }
    let is_json = resp
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if is_json {
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        let ps = &v["partialSuccess"];
        let rejected = match &ps["rejectedSpans"] {
            serde_json::Value::Number(n) => n.as_u64().unwrap_or(0),
            serde_json::Value::String(s) => s.parse().unwrap_or(0),
            _ => 0,
        };
        let message = ps["errorMessage"].as_str().unwrap_or("").to_owned();
        return (usize::try_from(rejected).unwrap_or(usize::MAX), message);
    }
    match ExportTraceServiceResponse::decode(resp.body.as_ref()) {
        Ok(r) => match r.partial_success {
            Some(ps) => (
                usize::try_from(ps.rejected_spans.max(0)).unwrap_or(usize::MAX),
                ps.error_message,
            ),
            None => (0, String::new()),
        },
        Err(_) => (0, String::new()),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by OTLP servers in practice).
fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn body_excerpt(resp: &Response) -> String {
    if resp.status == StatusCode::NOT_FOUND {
        return "not found: check the endpoint path (…/v1/traces)".into();
    }
    let text = String::from_utf8_lossy(&resp.body[..resp.body.len().min(300)]);
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The first few words of a message: a stable enough cause key.
fn first_words(message: &str) -> String {
    message
        .split_whitespace()
        .take(6)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn input(resources: usize, scopes: usize, spans: usize, name_len: usize) -> Vec<ResourceSpans> {
        (0..resources)
            .map(|r| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!("svc{r}"))),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: (0..scopes)
                    .map(|s| ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: format!("scope{s}"),
                            ..Default::default()
                        }),
                        spans: (0..spans)
                            .map(|i| Span {
                                name: format!("{r}.{s}.{i}:{}", "n".repeat(name_len)),
                                trace_id: vec![1; 16],
                                span_id: vec![2; 8],
                                ..Default::default()
                            })
                            .collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: String::new(),
            })
            .collect()
    }

    fn names(rs: &[ResourceSpans]) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for r in rs {
            let svc = match &r.resource.as_ref().unwrap().attributes[0].value {
                Some(AnyValue {
                    value: Some(any_value::Value::StringValue(s)),
                }) => s.clone(),
                _ => String::new(),
            };
            for s in &r.scope_spans {
                for span in &s.spans {
                    out.push((
                        svc.clone(),
                        s.scope.as_ref().unwrap().name.clone(),
                        span.name.clone(),
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn split_keeps_everything_in_order_within_limits() {
        let original = input(3, 2, 7, 10);
        let (chunks, too_large) = split(original.clone(), 5, 10_000);
        assert_eq!(too_large, 0);
        assert_eq!(chunks.len(), 9); // 42 spans, 5 a request
        let mut rejoined = Vec::new();
        for c in &chunks {
            assert!(c.spans <= 5);
            assert!(
                c.request.encoded_len() <= c.bytes,
                "estimate is an upper bound"
            );
            rejoined.extend(names(&c.request.resource_spans));
        }
        assert_eq!(rejoined, names(&original));

        let (chunks, _) = split(original.clone(), 10_000, 600);
        assert!(chunks.len() > 1);
        for c in &chunks {
            let len = c.request.encoded_len();
            assert!(len <= 600, "{len}");
            assert!(len <= c.bytes);
        }
        let total: usize = chunks.iter().map(|c| c.spans).sum();
        assert_eq!(total, 42);
    }

    fn encoded(rs: Vec<ResourceSpans>) -> EncodedRequest {
        crate::buffer::encode_request(rs)
    }

    fn decoded_names(chunk: Chunk) -> Vec<(String, String, String)> {
        let body = chunk.body();
        names(
            &ExportTraceServiceRequest::decode(body)
                .unwrap()
                .resource_spans,
        )
    }

    #[test]
    fn concatenated_requests_are_one_request() {
        let a = input(2, 1, 3, 5);
        let b = input(1, 2, 2, 7);
        let mut joined = ExportTraceServiceRequest {
            resource_spans: a.clone(),
        }
        .encode_to_vec();
        joined.extend(
            ExportTraceServiceRequest {
                resource_spans: b.clone(),
            }
            .encode_to_vec(),
        );
        let decoded = ExportTraceServiceRequest::decode(&joined[..]).unwrap();
        let mut expected = a;
        expected.extend(b);
        assert_eq!(decoded.resource_spans, expected);
    }

    #[test]
    fn plan_joins_whole_requests_within_limits() {
        let requests: Vec<EncodedRequest> = (0..5).map(|_| encoded(input(1, 1, 3, 5))).collect();
        let one = requests[0].bytes.len();
        let expected: Vec<_> = requests
            .iter()
            .flat_map(|r| names(&r.decode().unwrap()))
            .collect();

        let plan = plan(requests.clone(), 7, MAX_REQUEST_BYTES);
        assert_eq!((plan.too_large, plan.undecodable), (0, 0));
        let spans: Vec<usize> = plan.chunks.iter().map(|c| c.spans).collect();
        assert_eq!(spans, [6, 6, 3]);
        // Whole requests, not re-encoded: each body is its parts' bytes.
        assert!(plan.chunks.iter().all(|c| c.bytes == c.parts.len() * one));
        let got: Vec<_> = plan.chunks.into_iter().flat_map(decoded_names).collect();
        assert_eq!(got, expected);

        let plan = super::plan(requests, 10_000, 2 * one + 1);
        let spans: Vec<usize> = plan.chunks.iter().map(|c| c.spans).collect();
        assert_eq!(spans, [6, 6, 3]);
        assert!(plan.chunks.iter().all(|c| c.bytes <= 2 * one + 1));
    }

    #[test]
    fn plan_splits_only_a_request_over_the_limits() {
        let small = encoded(input(1, 1, 2, 5));
        let big = encoded(input(2, 2, 3, 5));
        let requests = vec![small.clone(), big.clone(), small.clone()];
        let expected: Vec<_> = requests
            .iter()
            .flat_map(|r| names(&r.decode().unwrap()))
            .collect();
        let plan = plan(requests, 5, MAX_REQUEST_BYTES);
        assert_eq!((plan.too_large, plan.undecodable), (0, 0));
        let spans: Vec<usize> = plan.chunks.iter().map(|c| c.spans).collect();
        assert_eq!(spans, [2, 5, 5, 2, 2]);
        assert_eq!(plan.chunks[0].parts[0], small.bytes);
        let got: Vec<_> = plan.chunks.into_iter().flat_map(decoded_names).collect();
        assert_eq!(got, expected);

        let broken = EncodedRequest {
            bytes: Bytes::from_static(&[0x0a, 0x05, 0x01]),
            spans: 9,
            proxy_spans: false,
            prepared: None,
        };
        let plan = super::plan(vec![broken, small], 5, MAX_REQUEST_BYTES);
        assert_eq!(plan.undecodable, 9);
        assert_eq!(plan.chunks.len(), 1);
    }

    #[test]
    fn split_drops_spans_that_fit_nowhere() {
        let mut rs = input(1, 1, 3, 10);
        rs[0].scope_spans[0].spans[1].name = "x".repeat(2000);
        let (chunks, too_large) = split(rs, 100, 1000);
        assert_eq!(too_large, 1);
        assert_eq!(chunks.iter().map(|c| c.spans).sum::<usize>(), 2);
    }

    #[test]
    fn partial_success_from_protobuf_and_json() {
        let body = ExportTraceServiceResponse {
            partial_success: Some(
                opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                    rejected_spans: 3,
                    error_message: "too old".into(),
                },
            ),
        }
        .encode_to_vec();
        let resp = Response {
            status: StatusCode::OK,
            headers: http::HeaderMap::new(),
            body: Bytes::from(body),
        };
        assert_eq!(partial_success(&resp), (3, "too old".to_owned()));
        let mut headers = http::HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let resp = Response {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(
                br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"bad"}}"#,
            ),
        };
        assert_eq!(partial_success(&resp), (2, "bad".to_owned()));
    }
}
