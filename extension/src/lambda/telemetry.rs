//! The Lambda Telemetry API: the subscription (`PUT /2022-07-01/telemetry`), the HTTP listener
//! Lambda delivers event batches to, and the typed events.
//!
//! The listener binds the address `sandbox.localdomain` resolves to (127.0.0.1 where that name
//! does not resolve, as on a developer's machine; never 0.0.0.0) before the extension
//! registers, so a taken port is reported at init. Each delivery is a JSON array of
//! `{time, type, record}`: every documented type is parsed into a typed record, an unknown type
//! is kept as raw JSON, a known type whose record does not match its schema is kept raw too
//! (and counted); only a body that is not such an array is refused with 400 (and counted).
//! Lambda retries a refused delivery, so a refusal must be rare and deliberate.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::extensions_api::{
    ApiError, CALL_TIMEOUT, EXTENSION_ID_HEADER, ExtensionsClient, expect_status,
};
use super::invocation::{AnswerHold, hold_answer};
use crate::config::OTEL_XRAY_TELEMETRY_PORT;

/// The host name Lambda delivers telemetry to (the only one it accepts in a destination URI).
pub const SANDBOX_HOST: &str = "sandbox.localdomain";
/// How long resolving [`SANDBOX_HOST`] may take before falling back to 127.0.0.1. In Lambda the
/// name is in `/etc/hosts`, so it resolves in microseconds; elsewhere a DNS miss must not slow
/// the start.
pub const SANDBOX_RESOLVE_TIMEOUT: Duration = Duration::from_millis(10);
/// Schema version of the subscription: the newest, and the only one Lambda Managed Instances
/// accept.
pub const SCHEMA_VERSION: &str = "2025-01-29";
/// The schema asked for when Lambda refuses [`SCHEMA_VERSION`] (an older platform or emulator).
pub const FALLBACK_SCHEMA_VERSION: &str = "2022-12-13";
/// Largest delivery accepted (Lambda's `maxBytes` tops out at 1 MiB).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

// ───────────────────────────── events ─────────────────────────────

/// One Telemetry API event.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryEvent {
    /// The `time` field, RFC 3339 (see [`TelemetryEvent::time_unix_nano`]).
    pub time: String,
    /// The typed record.
    pub record: TelemetryRecord,
}

impl TelemetryEvent {
    /// `time` in Unix nanoseconds, if it parses.
    pub fn time_unix_nano(&self) -> Option<u64> {
        parse_rfc3339_unix_nano(&self.time)
    }
}

/// The record of an event, by `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryRecord {
    /// `platform.initStart`.
    InitStart(InitStart),
    /// `platform.initRuntimeDone`.
    InitRuntimeDone(PhaseDone),
    /// `platform.initReport`.
    InitReport(PhaseReport),
    /// `platform.start`.
    Start(Start),
    /// `platform.runtimeDone`.
    RuntimeDone(RuntimeDone),
    /// `platform.report`.
    Report(Report),
    /// `platform.restoreStart` (SnapStart).
    RestoreStart(RestoreStart),
    /// `platform.restoreRuntimeDone`.
    RestoreRuntimeDone(PhaseDone),
    /// `platform.restoreReport`.
    RestoreReport(PhaseReport),
    /// `platform.extension`.
    Extension(ExtensionState),
    /// `platform.telemetrySubscription`.
    TelemetrySubscription(Subscription),
    /// `platform.logsDropped`.
    LogsDropped(LogsDropped),
    /// `function`: a log line of the function (a string, or an object with JSON logging).
    FunctionLog(Value),
    /// `extension`: a log line of an extension.
    ExtensionLog(Value),
    /// A type this build does not know, kept as sent.
    Unknown {
        /// The `type`.
        event_type: String,
        /// The `record`.
        record: Value,
    },
    /// A known type whose record does not match its documented shape, kept as sent.
    Invalid {
        /// The `type`.
        event_type: String,
        /// The `record`.
        record: Value,
        /// Why it did not parse.
        error: String,
    },
}

/// `status` of a phase: `success`, `failure`, `error`, `timeout`, or anything newer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum Status {
    /// `success`.
    Success,
    /// `failure`.
    Failure,
    /// `error`.
    Error,
    /// `timeout`.
    Timeout,
    /// Anything else, as sent.
    Other(String),
}

impl From<String> for Status {
    fn from(s: String) -> Self {
        match s.as_str() {
            "success" => Status::Success,
            "failure" => Status::Failure,
            "error" => Status::Error,
            "timeout" => Status::Timeout,
            _ => Status::Other(s),
        }
    }
}

impl Status {
    /// As sent.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::Other(s) => s,
        }
    }

    /// Only `success` is a success.
    pub fn is_success(&self) -> bool {
        *self == Status::Success
    }
}

/// `tracing` of start/runtimeDone/report.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceContext {
    /// The span id Lambda chose for the invocation, if any.
    #[serde(default)]
    pub span_id: Option<String>,
    /// `X-Amzn-Trace-Id`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The X-Ray trace header.
    #[serde(default)]
    pub value: String,
}

/// A span in a record (`responseLatency`, `responseDuration`, `runtimeOverhead`, …).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSpan {
    /// Its name.
    pub name: String,
    /// Its start, RFC 3339.
    pub start: String,
    /// Its duration.
    #[serde(default)]
    pub duration_ms: f64,
}

/// `platform.initStart`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitStart {
    /// `on-demand`, `provisioned-concurrency`, `snap-start`.
    #[serde(default)]
    pub initialization_type: String,
    /// `init` or `invoke` (a suppressed init re-run during an invocation).
    #[serde(default)]
    pub phase: String,
    /// E.g. `python:3.12.v20`.
    #[serde(default)]
    pub runtime_version: Option<String>,
    /// The runtime version's ARN.
    #[serde(default)]
    pub runtime_version_arn: Option<String>,
    /// Newer schemas: the function's name.
    #[serde(default)]
    pub function_name: Option<String>,
    /// Newer schemas: the function's version.
    #[serde(default)]
    pub function_version: Option<String>,
}

/// `platform.initRuntimeDone` / `platform.restoreRuntimeDone`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseDone {
    /// `on-demand`, … (init only).
    #[serde(default)]
    pub initialization_type: Option<String>,
    /// `init` or `invoke` (init only).
    #[serde(default)]
    pub phase: Option<String>,
    /// The outcome.
    pub status: Status,
    /// When not successful, e.g. `Runtime.ExitError`.
    #[serde(default)]
    pub error_type: Option<String>,
    /// Sub-spans.
    #[serde(default)]
    pub spans: Vec<PlatformSpan>,
}

/// `metrics` of initReport / restoreReport.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseMetrics {
    /// Duration of the phase.
    #[serde(default)]
    pub duration_ms: f64,
}

/// `platform.initReport` / `platform.restoreReport`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    /// `on-demand`, … (init only).
    #[serde(default)]
    pub initialization_type: Option<String>,
    /// `init` or `invoke` (init only).
    #[serde(default)]
    pub phase: Option<String>,
    /// The outcome (newer schemas).
    #[serde(default)]
    pub status: Option<Status>,
    /// When not successful.
    #[serde(default)]
    pub error_type: Option<String>,
    /// Metrics.
    pub metrics: PhaseMetrics,
    /// Sub-spans.
    #[serde(default)]
    pub spans: Vec<PlatformSpan>,
}

/// `platform.start`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    /// The request id.
    pub request_id: String,
    /// The function version.
    #[serde(default)]
    pub version: Option<String>,
    /// Trace context.
    #[serde(default)]
    pub tracing: Option<TraceContext>,
}

/// `metrics` of runtimeDone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeDoneMetrics {
    /// Time the runtime spent on the invocation.
    #[serde(default)]
    pub duration_ms: f64,
    /// Size of the response.
    #[serde(default)]
    pub produced_bytes: Option<u64>,
}

/// `platform.runtimeDone`: the runtime has answered (or failed, or timed out).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeDone {
    /// The request id.
    pub request_id: String,
    /// The outcome.
    pub status: Status,
    /// When not successful, e.g. `Runtime.HandlerError`.
    #[serde(default)]
    pub error_type: Option<String>,
    /// Metrics.
    #[serde(default)]
    pub metrics: Option<RuntimeDoneMetrics>,
    /// `responseLatency`, `responseDuration`, `runtimeOverhead`.
    #[serde(default)]
    pub spans: Vec<PlatformSpan>,
    /// Trace context.
    #[serde(default)]
    pub tracing: Option<TraceContext>,
}

/// `metrics` of report.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportMetrics {
    /// Invocation duration.
    #[serde(default)]
    pub duration_ms: f64,
    /// Billed duration.
    #[serde(default)]
    pub billed_duration_ms: f64,
    /// Configured memory.
    #[serde(rename = "memorySizeMB", default)]
    pub memory_size_mb: u64,
    /// Peak memory.
    #[serde(rename = "maxMemoryUsedMB", default)]
    pub max_memory_used_mb: u64,
    /// On a cold start.
    #[serde(default)]
    pub init_duration_ms: Option<f64>,
    /// After a SnapStart restore.
    #[serde(default)]
    pub restore_duration_ms: Option<f64>,
}

/// `platform.report`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The request id.
    pub request_id: String,
    /// The outcome (absent in old schemas).
    #[serde(default)]
    pub status: Option<Status>,
    /// When not successful.
    #[serde(default)]
    pub error_type: Option<String>,
    /// Metrics.
    pub metrics: ReportMetrics,
    /// Sub-spans.
    #[serde(default)]
    pub spans: Vec<PlatformSpan>,
    /// Trace context.
    #[serde(default)]
    pub tracing: Option<TraceContext>,
}

/// `platform.restoreStart`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStart {
    /// Runtime version.
    #[serde(default)]
    pub runtime_version: Option<String>,
    /// Runtime version ARN.
    #[serde(default)]
    pub runtime_version_arn: Option<String>,
    /// The function's name.
    #[serde(default)]
    pub function_name: Option<String>,
    /// The function's version.
    #[serde(default)]
    pub function_version: Option<String>,
}

/// `platform.extension`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionState {
    /// The extension's name.
    pub name: String,
    /// `Ready`, …
    #[serde(default)]
    pub state: String,
    /// Events it registered for.
    #[serde(default)]
    pub events: Vec<String>,
    /// When it failed to register (newer schemas).
    #[serde(default)]
    pub error_type: Option<String>,
}

/// `platform.telemetrySubscription`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// The subscriber.
    pub name: String,
    /// `Subscribed`, …
    #[serde(default)]
    pub state: String,
    /// Subscribed types.
    #[serde(default)]
    pub types: Vec<String>,
}

/// `platform.logsDropped`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsDropped {
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// How many.
    #[serde(default)]
    pub dropped_records: u64,
    /// How many bytes.
    #[serde(default)]
    pub dropped_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct RawEvent {
    #[serde(default)]
    time: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    record: Value,
}

/// A delivery that is not a JSON array of `{time, type, record}` objects.
#[derive(Debug, thiserror::Error)]
#[error("malformed Telemetry API batch: {0}")]
pub struct MalformedBatch(#[from] serde_json::Error);

/// Parses one delivery.
pub fn parse_batch(body: &[u8]) -> Result<Vec<TelemetryEvent>, MalformedBatch> {
    let raw: Vec<RawEvent> = serde_json::from_slice(body)?;
    Ok(raw.into_iter().map(type_event).collect())
}

fn typed<'a, T: Deserialize<'a>>(
    record: &'a Value,
    wrap: fn(T) -> TelemetryRecord,
) -> Result<TelemetryRecord, serde_json::Error> {
    T::deserialize(record).map(wrap)
}

fn type_event(raw: RawEvent) -> TelemetryEvent {
    let r = &raw.record;
    let parsed = match raw.event_type.as_str() {
        "platform.initStart" => typed(r, TelemetryRecord::InitStart),
        "platform.initRuntimeDone" => typed(r, TelemetryRecord::InitRuntimeDone),
        "platform.initReport" => typed(r, TelemetryRecord::InitReport),
        "platform.start" => typed(r, TelemetryRecord::Start),
        "platform.runtimeDone" => typed(r, TelemetryRecord::RuntimeDone),
        "platform.report" => typed(r, TelemetryRecord::Report),
        "platform.restoreStart" => typed(r, TelemetryRecord::RestoreStart),
        "platform.restoreRuntimeDone" => typed(r, TelemetryRecord::RestoreRuntimeDone),
        "platform.restoreReport" => typed(r, TelemetryRecord::RestoreReport),
        "platform.extension" => typed(r, TelemetryRecord::Extension),
        "platform.telemetrySubscription" => typed(r, TelemetryRecord::TelemetrySubscription),
        "platform.logsDropped" => typed(r, TelemetryRecord::LogsDropped),
        "function" => Ok(TelemetryRecord::FunctionLog(raw.record.clone())),
        "extension" => Ok(TelemetryRecord::ExtensionLog(raw.record.clone())),
        _ => {
            return TelemetryEvent {
                time: raw.time,
                record: TelemetryRecord::Unknown {
                    event_type: raw.event_type,
                    record: raw.record,
                },
            };
        }
    };
    let record = match parsed {
        Ok(rec) => rec,
        Err(e) => TelemetryRecord::Invalid {
            error: e.to_string(),
            event_type: raw.event_type,
            record: raw.record,
        },
    };
    TelemetryEvent {
        time: raw.time,
        record,
    }
}

/// RFC 3339 (`2022-10-12T00:00:15.064Z`, `…+02:00`, any number of fraction digits) → Unix
/// nanoseconds. Also takes `:` before the fraction, a typo found in AWS's own examples.
pub fn parse_rfc3339_unix_nano(s: &str) -> Option<u64> {
    let b = s.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        let mut n = 0i64;
        for &d in digits {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(d - b'0');
        }
        Some(n)
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if matches!(b.get(i), Some(b'.') | Some(b':')) && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        let mut scale = 100_000_000i64;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            nanos += i64::from(d - b'0') * scale;
            scale /= 10;
            i += 1;
        }
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let secs = num(i + 1..i + 3)? * 3600 + num(i + 4..i + 6)? * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(nanos).ok()?)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ───────────────────────────── subscription ─────────────────────────────

/// The body of `PUT /2022-07-01/telemetry`: `platform` events, the smallest buffering delay
/// Lambda allows (25 ms) so that `runtimeDone` arrives as soon as possible.
pub fn subscription_body(destination_uri: &str, schema: &str) -> Value {
    serde_json::json!({
        "schemaVersion": schema,
        "types": ["platform"],
        "buffering": { "maxItems": 1000, "maxBytes": 262_144, "timeoutMs": 25 },
        "destination": { "protocol": "HTTP", "URI": destination_uri },
    })
}

/// The Telemetry API subscription did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The listener could not bind, so there is nowhere for Lambda to deliver.
    #[error("no Telemetry API listener")]
    NoListener,
    /// Lambda refused or did not answer.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Subscribes the registered extension to `platform` events delivered to `destination_uri`,
/// with [`SCHEMA_VERSION`]; a 4xx answer to it is retried once with
/// [`FALLBACK_SCHEMA_VERSION`]. Returns the schema Lambda accepted.
pub async fn subscribe(
    client: &ExtensionsClient,
    destination_uri: &str,
) -> Result<&'static str, SubscribeError> {
    match subscribe_with(client, destination_uri, SCHEMA_VERSION).await {
        Ok(()) => Ok(SCHEMA_VERSION),
        Err(ApiError::Status { status, body, .. }) if status.is_client_error() => {
            tracing::debug!(%status, body, "schema {SCHEMA_VERSION} refused; trying {FALLBACK_SCHEMA_VERSION}");
            subscribe_with(client, destination_uri, FALLBACK_SCHEMA_VERSION).await?;
            Ok(FALLBACK_SCHEMA_VERSION)
        }
        Err(e) => Err(e.into()),
    }
}

async fn subscribe_with(
    client: &ExtensionsClient,
    destination_uri: &str,
    schema: &str,
) -> Result<(), ApiError> {
    const CALL: &str = "telemetry subscribe";
    let id = client.id_header(CALL)?;
    let req = Request::builder()
        .method(Method::PUT)
        .uri(client.api().uri("/2022-07-01/telemetry")?)
        .header(HeaderName::from_static(EXTENSION_ID_HEADER), id)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(Bytes::from(
            subscription_body(destination_uri, schema).to_string(),
        )))
        .map_err(|_| ApiError::NotRegistered { call: CALL })?;
    let resp = client.api().send(CALL, req, Some(CALL_TIMEOUT)).await?;
    expect_status(CALL, &resp, &[StatusCode::OK, StatusCode::ACCEPTED])?;
    // AWS's emulator accepts with 202 and an error body when it has no Telemetry API
    // (`Telemetry.NotSupported`): nothing will be delivered.
    if let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&resp.body)
        && body.contains_key("errorType")
    {
        return Err(ApiError::Status {
            call: CALL,
            status: resp.status,
            body: String::from_utf8_lossy(&resp.body[..resp.body.len().min(512)]).into_owned(),
        });
    }
    Ok(())
}

// ───────────────────────────── listener ─────────────────────────────

/// The listener could not bind.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen for the Telemetry API on {addr}: {source}; set {var} to a free port",
    var = OTEL_XRAY_TELEMETRY_PORT
)]
pub struct TelemetryBindError {
    /// The address tried.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: std::io::Error,
}

/// Counters of the listener, shared with the lifecycle's summary.
#[derive(Debug, Default)]
pub struct TelemetryCounters {
    batches: AtomicU64,
    events: AtomicU64,
    malformed_batches: AtomicU64,
    unparsed_events: AtomicU64,
}

/// A copy of [`TelemetryCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TelemetryCountersSnapshot {
    /// Deliveries accepted.
    pub batches: u64,
    /// Events in them.
    pub events: u64,
    /// Deliveries refused with 400.
    pub malformed_batches: u64,
    /// Events of an unknown type or with a record that did not parse (kept raw).
    pub unparsed_events: u64,
}

impl TelemetryCounters {
    /// Reads the counters.
    pub fn snapshot(&self) -> TelemetryCountersSnapshot {
        TelemetryCountersSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            malformed_batches: self.malformed_batches.load(Ordering::Relaxed),
            unparsed_events: self.unparsed_events.load(Ordering::Relaxed),
        }
    }
}

/// One delivery, as the lifecycle receives it: the parsed events and, when they end an
/// invocation (`platform.runtimeDone`), the hold on Lambda's answer ([`AnswerHold`]).
#[derive(Debug)]
pub struct Delivery {
    pub events: Vec<TelemetryEvent>,
    pub hold: Option<AnswerHold>,
}

/// Where the system's resolver looks first for a host name.
pub const HOSTS_FILE: &str = "/etc/hosts";

/// The address of `sandbox.localdomain` from [`HOSTS_FILE`], read on the calling thread: no
/// resolver thread, no DNS. `None` when the file cannot be read or does not name the host.
pub fn sandbox_address_from_hosts() -> Option<IpAddr> {
    let text = std::fs::read_to_string(HOSTS_FILE).ok()?;
    hosts_lookup(&text, SANDBOX_HOST)
}

/// The address a hosts file (`hosts`, its text) gives `name`: the first IPv4 address of the
/// lines naming it (case-insensitively, as canonical name or alias), else the first other
/// address; unspecified addresses are skipped. Comments (`#` to the end of a line) and lines
/// that do not start with an address are ignored.
pub fn hosts_lookup(hosts: &str, name: &str) -> Option<IpAddr> {
    let mut other = None;
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if ip.is_unspecified() || !fields.any(|n| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        if ip.is_ipv4() {
            return Some(ip);
        }
        other = other.or(Some(ip));
    }
    other
}

/// The address of `sandbox.localdomain`, or 127.0.0.1 when it does not resolve within
/// [`SANDBOX_RESOLVE_TIMEOUT`] or resolves to nothing usable. Never an unspecified address.
/// [`HOSTS_FILE`] is read first, on the calling thread; only a name it lacks goes to the
/// system resolver (on a blocking thread: DNS).
pub async fn sandbox_address() -> IpAddr {
    match sandbox_address_from_hosts() {
        Some(ip) => ip,
        None => resolve_sandbox_address().await,
    }
}

/// The address of `sandbox.localdomain` from the system resolver (a blocking thread, DNS), or
/// 127.0.0.1 as [`sandbox_address`] says; for a name [`HOSTS_FILE`] was already found to lack.
pub async fn resolve_sandbox_address() -> IpAddr {
    let lookup = tokio::net::lookup_host((SANDBOX_HOST, 0));
    let resolved = match tokio::time::timeout(SANDBOX_RESOLVE_TIMEOUT, lookup).await {
        Ok(Ok(addrs)) => {
            let addrs: Vec<IpAddr> = addrs
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified())
                .collect();
            addrs
                .iter()
                .find(|ip| ip.is_ipv4())
                .or_else(|| addrs.first())
                .copied()
        }
        _ => None,
    };
    resolved.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A bound, not yet serving, Telemetry API listener.
#[derive(Debug)]
pub struct TelemetryListener {
    listener: TcpListener,
    addr: SocketAddr,
}

/// Binds `port` on the sandbox address.
pub async fn bind(port: u16) -> Result<TelemetryListener, TelemetryBindError> {
    bind_on(sandbox_address().await, port).await
}

/// Binds `port` on `ip`, or a free port there when `port` is taken (logged: Lambda only needs
/// the port we subscribe with).
pub async fn bind_or_any(ip: IpAddr, port: u16) -> Result<TelemetryListener, TelemetryBindError> {
    match bind_on(ip, port).await {
        Ok(l) => Ok(l),
        Err(e) => {
            tracing::warn!(error = %e, "Telemetry API port taken; listening on a free port instead");
            bind_on(ip, 0).await
        }
    }
}

/// Binds `ip:port` (tests use it with 127.0.0.1 and port 0).
pub async fn bind_on(ip: IpAddr, port: u16) -> Result<TelemetryListener, TelemetryBindError> {
    let ip = if ip.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        ip
    };
    let addr = SocketAddr::new(ip, port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| TelemetryBindError { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| TelemetryBindError { addr, source })?;
    Ok(TelemetryListener { listener, addr })
}

impl TelemetryListener {
    /// Where it listens (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The destination to subscribe with: `http://sandbox.localdomain:<port>`. Lambda accepts
    /// no other host; a local emulator maps the name to 127.0.0.1.
    pub fn destination_uri(&self) -> String {
        format!("http://{SANDBOX_HOST}:{}", self.addr.port())
    }

    /// Serves until `cancel` fires. Each accepted delivery is sent, parsed, to `sink`.
    pub fn serve(
        self,
        sink: mpsc::Sender<Delivery>,
        counters: Arc<TelemetryCounters>,
        cancel: CancellationToken,
        tasks: &mut JoinSet<()>,
    ) {
        tasks.spawn(accept_loop(self.listener, sink, counters, cancel));
    }
}

async fn accept_loop(
    listener: TcpListener,
    sink: mpsc::Sender<Delivery>,
    counters: Arc<TelemetryCounters>,
    cancel: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, _) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "telemetry listener: accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let sink = sink.clone();
        let counters = Arc::clone(&counters);
        let cancel = cancel.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(req, sink.clone(), Arc::clone(&counters)));
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
                _ = conn.as_mut() => {}
            }
        });
    }
    // Let in-flight deliveries finish briefly, then stop.
    let _ = tokio::time::timeout(Duration::from_millis(50), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

fn respond(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp
}

async fn handle(
    req: Request<Incoming>,
    sink: mpsc::Sender<Delivery>,
    counters: Arc<TelemetryCounters>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST {
        return Ok(respond(StatusCode::METHOD_NOT_ALLOWED, ""));
    }
    let body = match Limited::new(req.into_body(), MAX_BATCH_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            counters.malformed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "telemetry delivery refused: body unreadable or too large");
            return Ok(respond(StatusCode::PAYLOAD_TOO_LARGE, ""));
        }
    };
    let parsed = crate::contain::contain("reading a Telemetry API delivery", || {
        crate::contain::inject("telemetry", &body);
        parse_batch(&body)
    });
    let events = match parsed {
        Some(Ok(events)) => events,
        Some(Err(e)) => {
            counters.malformed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, bytes = body.len(), "telemetry delivery refused");
            return Ok(respond(StatusCode::BAD_REQUEST, "malformed batch"));
        }
        None => {
            // A bug of ours: accepted and dropped (counted), so that Lambda does not retry it.
            counters.malformed_batches.fetch_add(1, Ordering::Relaxed);
            return Ok(respond(StatusCode::OK, ""));
        }
    };
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters
        .events
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    let unparsed = events
        .iter()
        .filter(|e| {
            matches!(
                e.record,
                TelemetryRecord::Unknown { .. } | TelemetryRecord::Invalid { .. }
            )
        })
        .count();
    if unparsed > 0 {
        counters
            .unparsed_events
            .fetch_add(unparsed as u64, Ordering::Relaxed);
    }
    if events.is_empty() {
        return Ok(respond(StatusCode::OK, ""));
    }
    let ends = events
        .iter()
        .any(|e| matches!(e.record, TelemetryRecord::RuntimeDone(_)));
    let (hold, held) = if ends {
        let (hold, held) = hold_answer();
        (Some(hold), Some(held))
    } else {
        (None, None)
    };
    if sink.send(Delivery { events, hold }).await.is_err() {
        tracing::debug!("telemetry delivery after the lifecycle stopped; ignored");
    }
    // Released when the lifecycle drops the hold (at once if the delivery was not taken).
    if let Some(held) = held {
        held.released().await;
    }
    Ok(respond(StatusCode::OK, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_unix_nano("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_unix_nano("2022-10-12T00:00:15.064Z"),
            Some(1_665_532_815_064_000_000)
        );
        assert_eq!(
            parse_rfc3339_unix_nano("2022-10-12T02:00:15.064+02:00"),
            Some(1_665_532_815_064_000_000)
        );
        assert_eq!(
            parse_rfc3339_unix_nano("2022-10-11T23:00:15.064123456-01:00"),
            Some(1_665_532_815_064_123_456)
        );
        assert_eq!(
            parse_rfc3339_unix_nano("2022-08-02T12:01:23:521Z"),
            parse_rfc3339_unix_nano("2022-08-02T12:01:23.521Z")
        );
        assert_eq!(
            parse_rfc3339_unix_nano("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000_000_000)
        );
        for bad in [
            "",
            "2022-10-12",
            "2022-13-12T00:00:15Z",
            "2022-10-12T00:00:15",
            "2022-10-12T00:00:15.064",
            "2022-10-12T00:00:15.064Zjunk",
            "1969-12-31T23:59:59Z",
            "2022-10-12T0a:00:15Z",
        ] {
            assert_eq!(parse_rfc3339_unix_nano(bad), None, "{bad}");
        }
    }

    #[test]
    fn unknown_types_are_kept_raw_and_bad_records_are_invalid() {
        let events = parse_batch(
            br#"[
                {"time":"2024-01-01T00:00:00Z","type":"platform.somethingNew","record":{"a":[1,2]}},
                {"time":"2024-01-01T00:00:00Z","type":"platform.runtimeDone","record":{"status":"success"}},
                {"type":"function","record":"hello"}
            ]"#,
        )
        .unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0].record,
            TelemetryRecord::Unknown {
                event_type: "platform.somethingNew".into(),
                record: serde_json::json!({"a": [1, 2]})
            }
        );
        match &events[1].record {
            TelemetryRecord::Invalid {
                event_type, error, ..
            } => {
                assert_eq!(event_type, "platform.runtimeDone");
                assert!(error.contains("requestId"), "{error}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            events[2].record,
            TelemetryRecord::FunctionLog(Value::String("hello".into()))
        );
        assert_eq!(events[2].time, "");
    }

    #[test]
    fn malformed_batches_are_errors() {
        for bad in [
            &b""[..],
            b"{}",
            b"[1]",
            b"[{\"time\":\"x\"}]",
            b"[{\"type\":3}]",
            b"not json",
        ] {
            assert!(
                parse_batch(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_batch(b"[]").unwrap().is_empty());
    }

    #[test]
    fn subscription_body_matches_the_api() {
        let body = subscription_body("http://sandbox.localdomain:4319", SCHEMA_VERSION);
        assert_eq!(body["schemaVersion"], "2025-01-29");
        assert_eq!(body["types"], serde_json::json!(["platform"]));
        assert_eq!(body["buffering"]["timeoutMs"], 25);
        assert_eq!(body["buffering"]["maxItems"], 1000);
        assert_eq!(body["buffering"]["maxBytes"], 262_144);
        assert_eq!(body["destination"]["protocol"], "HTTP");
        assert_eq!(
            body["destination"]["URI"],
            "http://sandbox.localdomain:4319"
        );
    }

    #[tokio::test]
    async fn sandbox_address_is_never_unspecified() {
        let ip = sandbox_address().await;
        assert!(!ip.is_unspecified());
        let l = bind_on(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).await.unwrap();
        assert_eq!(l.local_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(
            l.destination_uri()
                .starts_with("http://sandbox.localdomain:")
        );
    }

    #[test]
    fn hosts_lookup_reads_the_hosts_file_format() {
        let hosts = "# comment\n127.0.0.1 localhost\n\n::1 ip6-localhost Sandbox.LocalDomain\n\
                     169.254.100.1\tsandbox.localdomain sandbox # the sandbox\n\
                     10.0.0.1 sandbox.localdomain\n";
        assert_eq!(
            hosts_lookup(hosts, SANDBOX_HOST),
            Some("169.254.100.1".parse().unwrap())
        );
        assert_eq!(
            hosts_lookup(hosts, "sandbox"),
            Some("169.254.100.1".parse().unwrap())
        );
        // Only an IPv6 line names it: that address.
        assert_eq!(
            hosts_lookup("::1 ip6-localhost sandbox.localdomain\n", SANDBOX_HOST),
            Some("::1".parse().unwrap())
        );
        // A commented-out name, an unspecified address, a bad address, a bare address: no.
        for hosts in [
            "127.0.0.1 localhost # sandbox.localdomain\n",
            "0.0.0.0 sandbox.localdomain\n",
            "169.254.100.300 sandbox.localdomain\n",
            "sandbox.localdomain 127.0.0.1\n",
            "127.0.0.1\n",
            "",
        ] {
            assert_eq!(hosts_lookup(hosts, SANDBOX_HOST), None, "{hosts:?}");
        }
        assert_eq!(
            hosts_lookup("127.0.0.1 sandbox.localdomainx\n", SANDBOX_HOST),
            None
        );
    }

    #[tokio::test]
    async fn sandbox_address_agrees_with_the_hosts_file() {
        // Where the machine's hosts file names the host, that address is used as it is.
        if let Some(ip) = sandbox_address_from_hosts() {
            assert_eq!(sandbox_address().await, ip);
        }
    }

    #[tokio::test]
    async fn taken_port_moves_to_a_free_one() {
        let first = bind_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0).await.unwrap();
        let port = first.local_addr().port();
        let moved = bind_or_any(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
            .await
            .unwrap();
        assert_ne!(moved.local_addr().port(), port);
        assert_eq!(moved.local_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn taken_port_names_the_variable() {
        let first = bind_on(IpAddr::V4(Ipv4Addr::LOCALHOST), 0).await.unwrap();
        let port = first.local_addr().port();
        let err = bind_on(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&port.to_string()), "{msg}");
        assert!(msg.contains("OTEL_XRAY_TELEMETRY_PORT"), "{msg}");
    }
}
