//! Exporters: the last stage of a span's path. One of three, chosen by `OTEL_XRAY_EXPORTER`:
//!
//! ```text
//! SpanBatch ──translate_requests()──▶ Documents ──▶ daemon.rs  UDP datagrams to the X-Ray daemon
//! (encoded OTLP requests)                       └─▶ api.rs     PutTraceSegments, SigV4 (sigv4.rs, credentials.rs)
//! SpanBatch ──────────────────────────────────────▶ otlp.rs    the requests forwarded as they are,
//!                                                              OTLP/HTTP protobuf, SigV4 optional
//!                                                              (api and otlp share http_client.rs)
//! ```
//!
//! Contract of [`Exporter::export`]: it returns by the deadline it is given (every connect,
//! request and retry is bounded by it), never panics, and accounts for every span it was handed
//! in its [`ExportReport`], as exported or dropped by reason. A failure is logged once per
//! distinct cause ([`Causes`]) and counted every time.
//!
//! Start-up is cheap: [`Exporter::from_config`] parses URLs and nothing else. The UDP socket, the
//! HTTP client (TLS roots included) and the AWS credential providers are built on the first export
//! that needs them and reused afterwards.

pub mod api;
pub mod credentials;
pub mod daemon;
pub mod http_client;
pub mod otlp;
pub mod sigv4;

use std::collections::HashSet;
use std::sync::Mutex;

use aws_credential_types::provider::SharedCredentialsProvider;
use tokio::time::Instant;

use crate::buffer::{EncodedRequest, SpanBatch};
use crate::config::{Config, ExporterKind};
use crate::stats::DropReason;
use crate::xray::{Document, TranslateOptions, Translation};

pub use api::ApiExporter;
pub use credentials::{CredentialsCache, CredentialsSource};
pub use daemon::DaemonExporter;
pub use otlp::{Gzip, OtlpExporter, OtlpSettings};

/// What became of the spans handed to one export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Spans the upstream accepted.
    pub exported: usize,
    /// Spans dropped, by reason (each reason at most once, no zero counts).
    pub dropped: Vec<(DropReason, usize)>,
    /// Requests or datagrams that failed for good (after their retries): one per failed send,
    /// for `Stats::add_export_error`.
    pub errors: usize,
}

impl ExportReport {
    /// Adds `spans` dropped for `reason`.
    pub fn add_dropped(&mut self, reason: DropReason, spans: usize) {
        if spans == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += spans,
            None => self.dropped.push((reason, spans)),
        }
    }

    /// Spans dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> usize {
        self.dropped
            .iter()
            .filter(|(r, _)| *r == reason)
            .map(|(_, n)| n)
            .sum()
    }

    /// Spans dropped for any reason.
    pub fn dropped_total(&self) -> usize {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    /// Every span accounted for: exported plus dropped.
    pub fn spans(&self) -> usize {
        self.exported + self.dropped_total()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: ExportReport) {
        self.exported += other.exported;
        self.errors += other.errors;
        for (reason, n) in other.dropped {
            self.add_dropped(reason, n);
        }
    }

    /// Makes the report account for exactly `spans` spans. The translator promises that its
    /// documents and invalid spans add up to its input; if they ever do not, the missing spans are
    /// counted as invalid and an excess is taken back from `exported`, then from the drops.
    /// Returns the difference found (input minus accounted), for logging.
    fn reconcile(&mut self, spans: usize) -> isize {
        let accounted = self.spans();
        if accounted < spans {
            self.add_dropped(DropReason::InvalidSpan, spans - accounted);
        } else if accounted > spans {
            let mut excess = accounted - spans;
            let take = excess.min(self.exported);
            self.exported -= take;
            excess -= take;
            for (_, n) in self.dropped.iter_mut() {
                let take = excess.min(*n);
                *n -= take;
                excess -= take;
            }
            self.dropped.retain(|(_, n)| *n > 0);
        }
        spans as isize - accounted as isize
    }
}

/// `User-Agent` of the HTTP exporters.
pub(crate) const USER_AGENT: &str = concat!("otel-xray/", env!("CARGO_PKG_VERSION"));

/// The exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A setting is unusable.
    #[error("exporter configuration: {0}")]
    Config(String),
}

/// Causes of failure already logged, so that each distinct cause is logged once (at `warn`) and
/// later occurrences only at `debug`. Bounded: after [`Causes::MAX`] distinct causes, new ones are
/// no longer remembered (and still logged at `debug`).
#[derive(Debug, Default)]
pub struct Causes {
    seen: Mutex<HashSet<String>>,
}

impl Causes {
    /// Most distinct causes remembered.
    pub const MAX: usize = 64;

    /// True the first time `cause` is seen: the caller logs it at `warn` then.
    pub fn first(&self, cause: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(cause) || seen.len() >= Self::MAX {
            return false;
        }
        seen.insert(cause.to_owned())
    }

    /// The causes logged so far, sorted.
    pub fn logged(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = seen.iter().cloned().collect();
        v.sort();
        v
    }
}

/// Logs a failure: at `warn` the first time its cause is seen, at `debug` afterwards.
macro_rules! log_failure {
    ($causes:expr, $exporter:expr, $cause:expr, $spans:expr, $detail:expr) => {{
        let cause_value = $cause;
        let cause: &str = ::std::convert::AsRef::<str>::as_ref(&cause_value);
        if $causes.first(cause) {
            tracing::warn!(
                exporter = $exporter,
                cause = cause,
                spans = $spans,
                detail = %$detail,
                "export failed; later failures with this cause are only counted"
            );
        } else {
            tracing::debug!(exporter = $exporter, cause = cause, spans = $spans, "export failed");
        }
    }};
}
pub(crate) use log_failure;

/// Why a request to an HTTP upstream failed for good (or, before its last attempt, for now).
struct Failure {
    reason: DropReason,
    cause: String,
    detail: String,
}

impl Failure {
    /// A transport error of a request to `url`, and whether another attempt may help: a
    /// timeout means the deadline is spent, so it never is retried.
    fn from_transport(error: http_client::HttpError, url: &http::Uri) -> (Failure, bool) {
        match error {
            http_client::HttpError::Timeout => (
                Failure {
                    reason: DropReason::ExportTimeout,
                    cause: "timed out".into(),
                    detail: format!("no response from {url} by the deadline"),
                },
                false,
            ),
            e => (
                Failure {
                    reason: DropReason::ExportFailed,
                    cause: e.cause().to_owned(),
                    detail: e.to_string(),
                },
                e.is_transient(),
            ),
        }
    }
}

/// Choices that are not environment settings: for tests, and for whoever embeds the exporter.
#[derive(Debug, Clone, Default)]
pub struct ExporterOptions {
    /// Use this credentials provider instead of the standard chain (tests inject fixed keys so
    /// that they need not touch the process environment).
    pub credentials: Option<SharedCredentialsProvider>,
    /// Compression of OTLP requests.
    pub otlp_gzip: Gzip,
}

/// The configured exporter.
#[derive(Debug)]
pub struct Exporter {
    backend: Backend,
    translate: TranslateOptions,
}

#[derive(Debug)]
enum Backend {
    Daemon(DaemonExporter),
    Api(ApiExporter),
    Otlp(OtlpExporter),
}

impl Exporter {
    /// Builds the exporter; cheap: no credentials, TLS or DNS until the first export needs them.
    pub fn from_config(config: &Config) -> Result<Exporter, ExportError> {
        Self::from_config_with(config, ExporterOptions::default())
    }

    /// [`Exporter::from_config`] with [`ExporterOptions`].
    pub fn from_config_with(
        config: &Config,
        options: ExporterOptions,
    ) -> Result<Exporter, ExportError> {
        let mut translate = TranslateOptions {
            indexed_attributes: config.indexed_attributes.clone(),
            index_all_attributes: config.index_all_attributes,
            ..TranslateOptions::default()
        };
        let credentials = match options.credentials {
            Some(p) => CredentialsSource::Provider(p),
            None => CredentialsSource::Chain,
        };
        let backend = match config.exporter {
            ExporterKind::Daemon => {
                let addr = config.daemon_address.ok_or_else(|| {
                    ExportError::Config("the daemon exporter needs AWS_XRAY_DAEMON_ADDRESS".into())
                })?;
                // A document must fit in one datagram with its header.
                translate.max_document_bytes =
                    translate.max_document_bytes.min(daemon::MAX_DOCUMENT_BYTES);
                Backend::Daemon(DaemonExporter::new(addr))
            }
            ExporterKind::Api => {
                let endpoint = config.api_endpoint.as_deref().ok_or_else(|| {
                    ExportError::Config(
                        "the api exporter needs AWS_REGION or OTEL_XRAY_API_ENDPOINT".into(),
                    )
                })?;
                let region = config
                    .region
                    .clone()
                    .or_else(|| region_from_url(endpoint))
                    .ok_or_else(|| {
                        ExportError::Config("the api exporter needs AWS_REGION to sign".into())
                    })?;
                Backend::Api(ApiExporter::new(endpoint, &region, credentials)?)
            }
            ExporterKind::Otlp => {
                let endpoint = config.otlp_endpoint.clone().ok_or_else(|| {
                    ExportError::Config("the otlp exporter needs OTEL_XRAY_OTLP_ENDPOINT".into())
                })?;
                let sigv4_region = if config.otlp_sigv4 {
                    Some(
                        config
                            .region
                            .clone()
                            .or_else(|| region_from_url(&endpoint))
                            .ok_or_else(|| {
                                ExportError::Config(
                                    "OTEL_XRAY_OTLP_SIGV4 needs AWS_REGION to sign".into(),
                                )
                            })?,
                    )
                } else {
                    None
                };
                Backend::Otlp(OtlpExporter::new(OtlpSettings {
                    endpoint,
                    headers: config.otlp_headers.clone(),
                    sigv4_region,
                    credentials,
                    gzip: options.otlp_gzip,
                })?)
            }
        };
        Ok(Exporter { backend, translate })
    }

    /// Which exporter this is.
    pub fn kind(&self) -> ExporterKind {
        match self.backend {
            Backend::Daemon(_) => ExporterKind::Daemon,
            Backend::Api(_) => ExporterKind::Api,
            Backend::Otlp(_) => ExporterKind::Otlp,
        }
    }

    /// The options the X-Ray exporters translate with.
    pub fn translate_options(&self) -> &TranslateOptions {
        &self.translate
    }

    /// Sends `batch`, giving up at `deadline`. Never panics; every span is in the report.
    /// The X-Ray exporters translate it [`TRANSLATE_CHUNK_SPANS`] spans (in whole requests) at a
    /// time.
    pub async fn export(&self, batch: SpanBatch, deadline: Instant) -> ExportReport {
        if batch.is_empty() {
            return ExportReport::default();
        }
        let mut report = match &self.backend {
            Backend::Otlp(otlp) => otlp.send(batch.requests, deadline).await,
            Backend::Daemon(_) | Backend::Api(_) => {
                // Translated and sent a chunk at a time, each chunk's requests freed as soon as
                // it is translated: a large flush never holds all its documents at once
                // (docs/performance.md). Traces stay whole within a chunk of whole requests;
                // requests the buffer translated ahead bring their own documents.
                let mut report = ExportReport::default();
                let mut rest = batch.requests.into_iter();
                loop {
                    let mut chunk = Vec::new();
                    let mut ready = Translation::default();
                    let mut spans = 0;
                    for mut request in rest.by_ref() {
                        spans += request.spans;
                        match request.prepared.take() {
                            Some(prepared) => ready.append(*prepared),
                            None => chunk.push(request),
                        }
                        if spans >= TRANSLATE_CHUNK_SPANS {
                            break;
                        }
                    }
                    if spans == 0 {
                        break;
                    }
                    if !chunk.is_empty() {
                        match translate_contained(&chunk, &self.translate) {
                            Some(translation) => ready.append(translation),
                            // A bug: one request at a time, so that it costs only the
                            // request(s) it is in.
                            None => {
                                for request in &chunk {
                                    match translate_contained(
                                        std::slice::from_ref(request),
                                        &self.translate,
                                    ) {
                                        Some(translation) => ready.append(translation),
                                        None => {
                                            report.add_dropped(DropReason::Internal, request.spans)
                                        }
                                    }
                                }
                            }
                        }
                        drop(chunk);
                    }
                    report.merge(self.send_translation(&ready, deadline).await);
                }
                report
            }
        };
        let missing = report.reconcile(batch.spans);
        if missing != 0 {
            tracing::debug!(
                spans = batch.spans,
                difference = missing,
                "export report did not add up to the batch; corrected"
            );
        }
        report
    }

    /// Sends already translated documents (X-Ray exporters; the OTLP exporter has no use for
    /// documents and drops them as [`DropReason::ExportFailed`]). Invalid spans of the
    /// translation are reported as [`DropReason::InvalidSpan`], spans too large for any
    /// document as [`DropReason::TooLarge`].
    pub async fn send_translation(
        &self,
        translation: &Translation,
        deadline: Instant,
    ) -> ExportReport {
        let mut report = self.send_documents(&translation.documents, deadline).await;
        report.add_dropped(DropReason::InvalidSpan, translation.invalid_spans);
        report.add_dropped(DropReason::TooLarge, translation.too_large_spans);
        report
    }

    async fn send_documents(&self, documents: &[Document], deadline: Instant) -> ExportReport {
        match &self.backend {
            Backend::Daemon(d) => d.send(documents, deadline).await,
            Backend::Api(a) => a.send(documents, deadline).await,
            Backend::Otlp(_) => {
                let mut report = ExportReport::default();
                report.add_dropped(
                    DropReason::ExportFailed,
                    documents.iter().map(|d| d.spans).sum(),
                );
                report
            }
        }
    }

    /// The failure causes logged so far (each once).
    pub fn logged_causes(&self) -> Vec<String> {
        match &self.backend {
            Backend::Daemon(d) => d.logged_causes(),
            Backend::Api(a) => a.logged_causes(),
            Backend::Otlp(o) => o.logged_causes(),
        }
    }
}

/// Translates a chunk of buffered requests: the one place the X-Ray exporters turn encoded
/// requests into documents: the chunk is read as borrowed views and translated at once (a trace
/// split across requests still makes one document); a request that does not parse (receivers
/// validate every request, so none should) counts as invalid spans.
pub fn translate_requests(chunk: &[EncodedRequest], options: &TranslateOptions) -> Translation {
    crate::xray::translate::translate_encoded(
        chunk.iter().map(|r| (r.bytes.as_ref(), r.spans)),
        options,
    )
}

/// [`translate_requests`] with a bug contained: `None` when it panicked (the chunk is then
/// counted [`DropReason::Internal`] by the caller).
pub fn translate_contained(
    chunk: &[EncodedRequest],
    options: &TranslateOptions,
) -> Option<Translation> {
    crate::contain::contain("translating spans to X-Ray documents", || {
        for r in chunk {
            crate::contain::inject("translate", &r.bytes);
        }
        translate_requests(chunk, options)
    })
}

/// Spans (in whole OTLP requests) translated and sent at a time by the X-Ray exporters: bounds
/// the documents a large flush holds at once; small flushes are one chunk.
pub const TRANSLATE_CHUNK_SPANS: usize = 2_000;

/// The region in an AWS endpoint URL such as `https://xray.eu-west-1.amazonaws.com/v1/traces`.
pub fn region_from_url(url: &str) -> Option<String> {
    let host = crate::config::url_host(url)?;
    let rest = host.strip_suffix(".amazonaws.com")?;
    let mut labels = rest.split('.');
    let _service = labels.next()?;
    let region = labels.next()?;
    let valid = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then(|| region.to_owned())
}

/// A bounded retry delay: exponential from `base`, plus up to `base` of jitter.
pub(crate) fn backoff(attempt: u32, base: std::time::Duration) -> std::time::Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(6));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter_ns = u64::from(nanos) % (base.as_nanos().max(1) as u64);
    exp + std::time::Duration::from_nanos(jitter_ns)
}

/// Sleeps `delay` unless that would pass `deadline`; false when it would (give up instead).
pub(crate) async fn sleep_within(delay: std::time::Duration, deadline: Instant) -> bool {
    let wake = Instant::now() + delay;
    if wake >= deadline {
        return false;
    }
    tokio::time::sleep_until(wake).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_merges_and_reconciles() {
        let mut r = ExportReport {
            exported: 5,
            ..Default::default()
        };
        r.add_dropped(DropReason::ExportFailed, 2);
        r.add_dropped(DropReason::ExportFailed, 1);
        r.add_dropped(DropReason::TooLarge, 0);
        assert_eq!(r.dropped, vec![(DropReason::ExportFailed, 3)]);
        let mut other = ExportReport {
            exported: 1,
            dropped: vec![(DropReason::InvalidSpan, 4)],
            errors: 2,
        };
        other.add_dropped(DropReason::ExportFailed, 1);
        r.merge(other);
        assert_eq!(r.exported, 6);
        assert_eq!(r.errors, 2);
        assert_eq!(r.dropped(DropReason::ExportFailed), 4);
        assert_eq!(r.spans(), 14);

        assert_eq!(r.reconcile(16), 2);
        assert_eq!(r.dropped(DropReason::InvalidSpan), 6);
        assert_eq!(r.spans(), 16);
        assert_eq!(r.reconcile(3), -13);
        assert_eq!(r.spans(), 3);
        assert_eq!(r.exported, 0);
    }

    #[test]
    fn causes_are_logged_once_and_bounded() {
        let c = Causes::default();
        assert!(c.first("a"));
        assert!(!c.first("a"));
        for i in 0..Causes::MAX * 2 {
            c.first(&format!("cause {i}"));
        }
        assert_eq!(c.logged().len(), Causes::MAX);
    }

    #[test]
    fn regions_from_aws_urls() {
        assert_eq!(
            region_from_url("https://xray.eu-west-1.amazonaws.com/v1/traces").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            region_from_url("https://xray.us-gov-west-1.amazonaws.com").as_deref(),
            Some("us-gov-west-1")
        );
        assert_eq!(region_from_url("http://127.0.0.1:4318/v1/traces"), None);
        assert_eq!(region_from_url("https://amazonaws.com"), None);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        let base = std::time::Duration::from_millis(10);
        let b0 = backoff(0, base);
        assert!(b0 >= base && b0 < base * 2);
        let b3 = backoff(3, base);
        assert!(b3 >= base * 8 && b3 < base * 9);
        assert!(backoff(60, base) < base * 65);
    }
}
