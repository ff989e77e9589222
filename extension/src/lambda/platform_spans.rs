//! Invocation and init spans built from Telemetry API platform events, following AWS's
//! "Converting Telemetry API events to OpenTelemetry spans" (the span-events variant):
//!
//! - one SERVER span per invocation from `platform.start` / `platform.runtimeDone` /
//!   `platform.report`: trace id and parent from the X-Ray header in `tracing.value`
//!   (`Root=…;Parent=…;Sampled=…`), span id from `tracing.spanId` (else generated), start at
//!   `platform.start` (else `runtimeDone.time − metrics.durationMs`), end at `runtimeDone`,
//!   status Ok, or Error with the error type when the status is not `success`, the record's
//!   `spans` (`responseLatency`, `responseDuration`, …) as span events. The span is finished at
//!   `runtimeDone`, which arrives before the end-of-invocation flush; `platform.report` arrives
//!   only after the extension has asked for the next event, so it finishes the span only when no
//!   `runtimeDone` was seen (a crash or timeout);
//! - on the cold-start invocation, an INTERNAL `Init` child span from `platform.initStart` to
//!   `platform.initRuntimeDone` (or `initReport`), and likewise a `Restore` span for SnapStart's
//!   `platform.restoreStart` / `restoreRuntimeDone`.
//!
//! FaaS semantic conventions on the invocation span: `faas.invocation_id`, `faas.trigger=other`,
//! `faas.coldstart`, `cloud.resource_id` and `aws.lambda.invoked_arn` (the INVOKE event's ARN),
//! `cloud.account.id` (register's `accountId`). The resource carries `service.name`,
//! `cloud.provider=aws`, `cloud.platform=aws_lambda`, `cloud.region`, `faas.name`,
//! `faas.version`, and `OTEL_RESOURCE_ATTRIBUTES`.
//!
//! When the Runtime API proxy records a request's invocation span ([`PlatformSpans::claim`]),
//! no invocation span is built here for it; the cold start's `Init` / `Restore` spans hang under
//! the proxy's span instead (exactly one invocation span per request id).
//!
//! `Sampled=0` → nothing is emitted for that request. Every span is emitted at most once, however
//! often Lambda re-delivers the events. The builder is pure: no clock (callers pass `now`), no
//! randomness of its own (an [`IdSource`] is injected), no I/O.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::extensions_api::InvokeEvent;
use super::invocation::RecentIds;
use super::telemetry::{
    PhaseDone, PhaseReport, PlatformSpan, Report, RuntimeDone, Start, TelemetryEvent,
    TelemetryRecord, TraceContext, parse_rfc3339_unix_nano,
};
use super::trace_header::{XRayTraceHeader, parse_hex};

/// Name of the instrumentation scope of these spans.
pub const SCOPE_NAME: &str = "otel-xray.lambda.platform";
/// Invocations tracked at once (older ones are forgotten), at the least; concurrent
/// environments track [`PENDING_PER_CONCURRENCY`] per concurrent invocation when that is more.
const MAX_PENDING: usize = 32;
const PENDING_PER_CONCURRENCY: usize = 2;
/// Request ids remembered as finished, for idempotency.
const MAX_FINISHED: usize = 128;
/// W3C sampled flag | OTLP "has is_remote" | "is_remote".
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// Where span and trace ids come from.
pub trait IdSource {
    /// A new, non-zero trace id.
    fn trace_id(&mut self) -> [u8; 16];
    /// A new, non-zero span id.
    fn span_id(&mut self) -> [u8; 8];
}

/// Random ids drawn from the operating system (`getrandom`, through ring) for every id: no
/// state is carried in the process, so sandboxes restored from one SnapStart snapshot never
/// repeat each other's ids. Should the system call fail, a randomly keyed SipHash of a counter
/// and the wall clock stands in.
#[derive(Debug)]
pub struct RandomIds {
    system: ring::rand::SystemRandom,
    fallback: RandomState,
    counter: u64,
}

impl Default for RandomIds {
    fn default() -> Self {
        RandomIds {
            system: ring::rand::SystemRandom::new(),
            fallback: RandomState::new(),
            counter: 0,
        }
    }
}

impl RandomIds {
    fn next(&mut self) -> u64 {
        use ring::rand::SecureRandom;
        loop {
            let mut bytes = [0u8; 8];
            let v = if self.system.fill(&mut bytes).is_ok() {
                u64::from_be_bytes(bytes)
            } else {
                self.counter = self.counter.wrapping_add(1);
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                self.fallback.hash_one((self.counter, nanos))
            };
            if v != 0 {
                return v;
            }
        }
    }
}

impl IdSource for RandomIds {
    fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next().to_be_bytes());
        id[8..].copy_from_slice(&self.next().to_be_bytes());
        id
    }

    fn span_id(&mut self) -> [u8; 8] {
        self.next().to_be_bytes()
    }
}

/// What the builder knows about the function, from register and the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionInfo {
    /// `functionName` from register.
    pub function_name: String,
    /// `functionVersion` from register.
    pub function_version: String,
    /// `accountId` from register.
    pub account_id: Option<String>,
    /// `AWS_REGION`.
    pub region: Option<String>,
    /// `OTEL_SERVICE_NAME` (or the function name).
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: Vec<(String, String)>,
}

/// The trace position of a finished invocation span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SpanContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

#[derive(Debug, Default)]
struct Pending {
    request_id: String,
    start_nanos: Option<u64>,
    invoked_arn: Option<String>,
    /// From platform.start, else the INVOKE event.
    header: Option<XRayTraceHeader>,
    span_id: Option<[u8; 8]>,
}

/// Init or restore: collected until the cold-start invocation gives it a trace.
#[derive(Debug, Default)]
struct Phase {
    start_nanos: Option<u64>,
    end_nanos: Option<u64>,
    report_duration_ms: Option<f64>,
    report_time: Option<u64>,
    init_type: Option<String>,
    status: Option<(bool, String, Option<String>)>,
    emitted: bool,
}

impl Phase {
    fn seen(&self) -> bool {
        self.start_nanos.is_some() || self.end_nanos.is_some() || self.report_time.is_some()
    }

    fn times(&self) -> Option<(u64, u64)> {
        let duration = self.report_duration_ms.map(ms_to_nanos);
        let end = self
            .end_nanos
            .or_else(|| Some(self.start_nanos? + duration?))
            .or(self.report_time)?;
        let start = self
            .start_nanos
            .or_else(|| Some(end.saturating_sub(duration?)))?;
        Some((start, end.max(start)))
    }

    fn record_done(&mut self, time: Option<u64>, done: &PhaseDone) {
        self.end_nanos = self.end_nanos.or(time);
        if self.init_type.is_none() {
            self.init_type.clone_from(&done.initialization_type);
        }
        // The first outcome wins, like the first end time (a re-delivery changes nothing).
        if self.status.is_none() {
            self.status = Some((
                done.status.is_success(),
                done.status.as_str().to_owned(),
                done.error_type.clone(),
            ));
        }
    }

    fn record_report(&mut self, time: Option<u64>, report: &PhaseReport) {
        self.report_time = time;
        self.report_duration_ms = Some(report.metrics.duration_ms);
        if self.init_type.is_none() {
            self.init_type.clone_from(&report.initialization_type);
        }
        if self.status.is_none()
            && let Some(s) = &report.status
        {
            self.status = Some((
                s.is_success(),
                s.as_str().to_owned(),
                report.error_type.clone(),
            ));
        }
    }
}

/// Builds platform spans from INVOKE events and Telemetry API events.
#[derive(Debug)]
pub struct PlatformSpans<I: IdSource = RandomIds> {
    info: FunctionInfo,
    resource: Resource,
    ids: I,
    pending: VecDeque<Pending>,
    finished: RecentIds,
    /// The first request of this sandbox: the cold start.
    coldstart_request: Option<String>,
    coldstart_context: Option<SpanContext>,
    provisioned: bool,
    init: Phase,
    restore: Phase,
    /// Requests whose invocation span the Runtime API proxy records: (request id, its span
    /// context, `None` when unsampled).
    claimed: VecDeque<(String, Option<SpanContext>)>,
    max_pending: usize,
}

impl PlatformSpans<RandomIds> {
    /// A builder with random ids.
    pub fn new(info: FunctionInfo) -> Self {
        Self::with_ids(info, RandomIds::default())
    }
}

impl<I: IdSource> PlatformSpans<I> {
    /// A builder with the given id source (tests use a deterministic one).
    pub fn with_ids(info: FunctionInfo, ids: I) -> Self {
        let resource = build_resource(&info);
        PlatformSpans {
            info,
            resource,
            ids,
            pending: VecDeque::new(),
            finished: RecentIds::new(MAX_FINISHED),
            coldstart_request: None,
            coldstart_context: None,
            provisioned: false,
            init: Phase::default(),
            restore: Phase::default(),
            claimed: VecDeque::new(),
            max_pending: MAX_PENDING,
        }
    }

    /// Sized for `max_concurrency` invocations at once (Lambda Managed Instances).
    #[must_use]
    pub fn with_concurrency(mut self, max_concurrency: u32) -> Self {
        self.max_pending = (max_concurrency as usize)
            .saturating_mul(PENDING_PER_CONCURRENCY)
            .max(MAX_PENDING);
        self
    }

    /// The Runtime API proxy records `request_id`'s invocation span (`Some((trace, span))`) or
    /// saw it unsampled (`None`): no second invocation span is made for it, and the `Init` /
    /// `Restore` spans of a cold start hang under the proxy's span.
    pub fn claim(&mut self, request_id: &str, context: Option<([u8; 16], [u8; 8])>) {
        if self.claimed.iter().any(|(id, _)| id == request_id) {
            return;
        }
        if self.claimed.len() >= self.max_pending {
            self.claimed.pop_front();
        }
        let context = context.map(|(trace_id, span_id)| SpanContext { trace_id, span_id });
        self.claimed.push_back((request_id.to_owned(), context));
    }

    /// The resource of every span built here.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }

    /// Records an INVOKE event: the invoked ARN and, when the Telemetry API's events carry no
    /// tracing, the trace header.
    pub fn on_invoke(&mut self, invoke: &InvokeEvent) {
        if self.finished.contains(&invoke.request_id) {
            return;
        }
        let header = invoke
            .tracing
            .as_ref()
            .map(|t| XRayTraceHeader::parse(&t.value));
        let p = self.pending_mut(&invoke.request_id);
        p.invoked_arn = Some(invoke.invoked_function_arn.clone()).filter(|a| !a.is_empty());
        if p.header.is_none() {
            p.header = header;
        }
    }

    /// Feeds one event; finished spans are appended to `out`. `now_unix_nano` is used only when
    /// an event's own time is missing or unreadable.
    pub fn on_event(&mut self, event: &TelemetryEvent, now_unix_nano: u64, out: &mut Vec<Span>) {
        let time = event.time_unix_nano();
        match &event.record {
            TelemetryRecord::InitStart(s) => {
                self.init.start_nanos = self.init.start_nanos.or(time);
                if !s.initialization_type.is_empty() {
                    self.provisioned = s.initialization_type == "provisioned-concurrency";
                    self.init.init_type = Some(s.initialization_type.clone());
                }
            }
            TelemetryRecord::InitRuntimeDone(d) => self.init.record_done(time, d),
            TelemetryRecord::InitReport(r) => self.init.record_report(time, r),
            TelemetryRecord::RestoreStart(_) => {
                self.restore.start_nanos = self.restore.start_nanos.or(time);
            }
            TelemetryRecord::RestoreRuntimeDone(d) => self.restore.record_done(time, d),
            TelemetryRecord::RestoreReport(r) => self.restore.record_report(time, r),
            TelemetryRecord::Start(s) => self.on_start(s, time),
            TelemetryRecord::RuntimeDone(d) => {
                self.on_runtime_done(d, time.unwrap_or(now_unix_nano), out);
            }
            TelemetryRecord::Report(r) => self.on_report(r, time.unwrap_or(now_unix_nano), out),
            _ => {}
        }
        self.emit_phases(out);
    }

    /// Wraps spans built here in one `ResourceSpans` with this function's resource.
    pub fn resource_spans(&self, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(self.resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    fn pending_mut(&mut self, request_id: &str) -> &mut Pending {
        if self.coldstart_request.is_none() {
            self.coldstart_request = Some(request_id.to_owned());
        }
        let idx = match self.pending.iter().position(|p| p.request_id == request_id) {
            Some(i) => i,
            None => {
                if self.pending.len() >= self.max_pending {
                    self.pending.pop_front();
                }
                self.pending.push_back(Pending {
                    request_id: request_id.to_owned(),
                    ..Default::default()
                });
                self.pending.len() - 1
            }
        };
        &mut self.pending[idx]
    }

    fn take_pending(&mut self, request_id: &str) -> Pending {
        match self.pending.iter().position(|p| p.request_id == request_id) {
            Some(i) => self.pending.remove(i).unwrap_or_default(),
            None => {
                if self.coldstart_request.is_none() {
                    self.coldstart_request = Some(request_id.to_owned());
                }
                Pending {
                    request_id: request_id.to_owned(),
                    ..Default::default()
                }
            }
        }
    }

    fn on_start(&mut self, start: &Start, time: Option<u64>) {
        if self.finished.contains(&start.request_id) {
            return;
        }
        let header = start
            .tracing
            .as_ref()
            .map(|t| XRayTraceHeader::parse(&t.value));
        let span_id = start.tracing.as_ref().and_then(span_id_of);
        let p = self.pending_mut(&start.request_id);
        p.start_nanos = p.start_nanos.or(time);
        if header.is_some_and(|h| h.trace_id.is_some()) {
            p.header = header;
        }
        p.span_id = p.span_id.or(span_id);
    }

    fn on_runtime_done(&mut self, done: &RuntimeDone, end: u64, out: &mut Vec<Span>) {
        if self.finished.contains(&done.request_id) {
            return;
        }
        let duration_ms = done.metrics.as_ref().map(|m| m.duration_ms);
        let end_info = EndInfo {
            end,
            duration_ms,
            tracing: done.tracing.as_ref(),
            success: done.status.is_success(),
            status: done.status.as_str(),
            error_type: done.error_type.as_deref(),
            events: &done.spans,
        };
        self.finish(&done.request_id, end_info, out);
    }

    fn on_report(&mut self, report: &Report, end: u64, out: &mut Vec<Span>) {
        if self.finished.contains(&report.request_id) {
            return;
        }
        let (success, status) = match &report.status {
            Some(s) => (s.is_success(), s.as_str()),
            None => (true, "success"),
        };
        let end_info = EndInfo {
            end,
            duration_ms: Some(report.metrics.duration_ms),
            tracing: report.tracing.as_ref(),
            success,
            status,
            error_type: report.error_type.as_deref(),
            events: &report.spans,
        };
        self.finish(&report.request_id, end_info, out);
    }

    fn finish(&mut self, request_id: &str, end: EndInfo<'_>, out: &mut Vec<Span>) {
        self.finished.insert(request_id);
        let p = self.take_pending(request_id);
        if let Some((_, claimed)) = self.claimed.iter().find(|(id, _)| id == request_id) {
            if self.coldstart_request.as_deref() == Some(request_id) {
                self.coldstart_context = *claimed;
            }
            return;
        }
        // The first header with a trace id: platform.start / INVOKE, then the ending event.
        let from_end = end.tracing.map(|t| XRayTraceHeader::parse(&t.value));
        let header = [p.header, from_end]
            .into_iter()
            .flatten()
            .find(|h| h.trace_id.is_some())
            .or(p.header)
            .or(from_end)
            .unwrap_or_default();
        if !header.is_sampled() {
            return;
        }
        let trace_id = header.trace_id.unwrap_or_else(|| self.ids.trace_id());
        let span_id = p
            .span_id
            .or_else(|| end.tracing.and_then(span_id_of))
            .unwrap_or_else(|| self.ids.span_id());
        let start = p.start_nanos.unwrap_or_else(|| {
            end.duration_ms
                .map_or(end.end, |ms| end.end.saturating_sub(ms_to_nanos(ms)))
        });
        let coldstart = self.coldstart_request.as_deref() == Some(request_id) && !self.provisioned;

        let mut attributes = vec![
            kv_str("faas.invocation_id", request_id),
            kv_str("faas.trigger", "other"),
            kv_bool("faas.coldstart", coldstart),
        ];
        if let Some(arn) = &p.invoked_arn {
            attributes.push(kv_str("cloud.resource_id", arn));
            attributes.push(kv_str("aws.lambda.invoked_arn", arn));
        }
        if let Some(account) = &self.info.account_id {
            attributes.push(kv_str("cloud.account.id", account));
        }
        let status = if end.success {
            Status {
                code: StatusCode::Ok as i32,
                message: String::new(),
            }
        } else {
            let error_type = end.error_type.unwrap_or(end.status);
            attributes.push(kv_str("error.type", error_type));
            Status {
                code: StatusCode::Error as i32,
                message: error_type.to_owned(),
            }
        };
        let events = end
            .events
            .iter()
            .map(|s| platform_span_event(s, end.end))
            .collect();
        let mut flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE;
        if header.parent_id.is_some() {
            flags |= FLAG_IS_REMOTE;
        }
        out.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: header.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags,
            name: self.span_name(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: start.min(end.end),
            end_time_unix_nano: end.end,
            attributes,
            events,
            status: Some(status),
            ..Default::default()
        });
        if self.coldstart_request.as_deref() == Some(request_id) {
            self.coldstart_context = Some(SpanContext { trace_id, span_id });
        }
    }

    fn span_name(&self) -> String {
        if self.info.function_name.is_empty() {
            "invocation".to_owned()
        } else {
            self.info.function_name.clone()
        }
    }

    /// Emits the Init / Restore spans once the cold-start invocation's trace is known.
    fn emit_phases(&mut self, out: &mut Vec<Span>) {
        let Some(ctx) = self.coldstart_context else {
            return;
        };
        for (is_init, name) in [(true, "Init"), (false, "Restore")] {
            let phase = if is_init {
                &mut self.init
            } else {
                &mut self.restore
            };
            if phase.emitted || !phase.seen() {
                continue;
            }
            let Some((start, end)) = phase.times() else {
                continue;
            };
            if phase.status.is_none() && phase.end_nanos.is_none() {
                continue;
            }
            phase.emitted = true;
            let mut attributes = vec![kv_bool("faas.coldstart", true)];
            if let Some(t) = &phase.init_type {
                attributes.push(kv_str("aws.lambda.initialization_type", t));
            }
            let status = match &phase.status {
                Some((false, status, error_type)) => {
                    let e = error_type.as_deref().unwrap_or(status);
                    attributes.push(kv_str("error.type", e));
                    Status {
                        code: StatusCode::Error as i32,
                        message: e.to_owned(),
                    }
                }
                _ => Status {
                    code: StatusCode::Ok as i32,
                    message: String::new(),
                },
            };
            let span_id = self.ids.span_id();
            out.push(Span {
                trace_id: ctx.trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: ctx.span_id.to_vec(),
                flags: FLAG_SAMPLED | FLAG_HAS_IS_REMOTE,
                name: name.to_owned(),
                kind: SpanKind::Internal as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                status: Some(status),
                ..Default::default()
            });
        }
    }
}

struct EndInfo<'a> {
    end: u64,
    duration_ms: Option<f64>,
    tracing: Option<&'a TraceContext>,
    success: bool,
    status: &'a str,
    error_type: Option<&'a str>,
    events: &'a [PlatformSpan],
}

fn span_id_of(t: &TraceContext) -> Option<[u8; 8]> {
    t.span_id.as_deref().and_then(parse_hex::<8>)
}

fn ms_to_nanos(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1_000_000.0) as u64
    } else {
        0
    }
}

fn platform_span_event(s: &PlatformSpan, fallback: u64) -> Event {
    Event {
        time_unix_nano: parse_rfc3339_unix_nano(&s.start).unwrap_or(fallback),
        name: s.name.clone(),
        attributes: vec![KeyValue {
            key: "duration_ms".to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::DoubleValue(s.duration_ms)),
            }),
            ..Default::default()
        }],
        dropped_attributes_count: 0,
    }
}

/// An attribute; the typed helpers below are shared with the Runtime API proxy's invocation spans.
fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

pub(super) fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

pub(super) fn kv_bool(key: &str, value: bool) -> KeyValue {
    kv(key, any_value::Value::BoolValue(value))
}

pub(super) fn kv_int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

/// The resource: detected Lambda attributes, then `OTEL_RESOURCE_ATTRIBUTES` (which may override
/// them, except `service.name` when `OTEL_SERVICE_NAME` set one).
pub(crate) fn build_resource(info: &FunctionInfo) -> Resource {
    let mut attrs: Vec<(String, String)> = Vec::new();
    let user_service = info
        .resource_attributes
        .iter()
        .find(|(k, _)| k == "service.name")
        .map(|(_, v)| v.clone());
    let service = info
        .service_name
        .clone()
        .or(user_service)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            if info.function_name.is_empty() {
                "unknown_service".to_owned()
            } else {
                info.function_name.clone()
            }
        });
    attrs.push(("service.name".into(), service));
    attrs.push(("cloud.provider".into(), "aws".into()));
    attrs.push(("cloud.platform".into(), "aws_lambda".into()));
    if let Some(r) = &info.region {
        attrs.push(("cloud.region".into(), r.clone()));
    }
    if !info.function_name.is_empty() {
        attrs.push(("faas.name".into(), info.function_name.clone()));
    }
    if !info.function_version.is_empty() {
        attrs.push(("faas.version".into(), info.function_version.clone()));
    }
    if let Some(a) = &info.account_id {
        attrs.push(("cloud.account.id".into(), a.clone()));
    }
    for (k, v) in &info.resource_attributes {
        if k == "service.name" {
            continue;
        }
        match attrs.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1.clone_from(v),
            None => attrs.push((k.clone(), v.clone())),
        }
    }
    Resource {
        attributes: attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
        ..Default::default()
    }
}

/// Ids 1, 2, 3, … so that test expectations are exact (platform and invocation span tests).
#[cfg(test)]
#[derive(Debug, Default)]
pub(super) struct SeqIds(u8);

#[cfg(test)]
impl IdSource for SeqIds {
    fn trace_id(&mut self) -> [u8; 16] {
        self.0 += 1;
        [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, self.0]
    }
    fn span_id(&mut self) -> [u8; 8] {
        self.0 += 1;
        [0xb0, 0, 0, 0, 0, 0, 0, self.0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lambda::extensions_api::InvokeTracing;
    use crate::lambda::telemetry::parse_batch;

    const HEADER: &str =
        "Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1";
    const TRACE: [u8; 16] = [
        0x62, 0xe9, 0x00, 0xb2, 0x71, 0x0d, 0x76, 0xf0, 0x09, 0xd6, 0xe7, 0x78, 0x59, 0x05, 0x44,
        0x9a,
    ];
    const PARENT: [u8; 8] = [0x0e, 0xfb, 0xd1, 0x99, 0x62, 0xd9, 0x5b, 0x05];
    const SPAN: [u8; 8] = [0x54, 0x56, 0x5f, 0xb4, 0x1a, 0xc7, 0x96, 0x32];

    fn info() -> FunctionInfo {
        FunctionInfo {
            function_name: "orders".into(),
            function_version: "$LATEST".into(),
            account_id: Some("123456789012".into()),
            region: Some("eu-west-1".into()),
            service_name: Some("checkout".into()),
            resource_attributes: vec![
                ("team".into(), "payments".into()),
                ("cloud.region".into(), "override-1".into()),
                ("service.name".into(), "ignored".into()),
            ],
        }
    }

    fn builder() -> PlatformSpans<SeqIds> {
        PlatformSpans::with_ids(info(), SeqIds::default())
    }

    fn invoke(id: &str, header: Option<&str>) -> InvokeEvent {
        InvokeEvent {
            request_id: id.into(),
            deadline_ms: 0,
            invoked_function_arn: "arn:aws:lambda:eu-west-1:123456789012:function:orders:live"
                .into(),
            tracing: header.map(|v| InvokeTracing {
                kind: "X-Amzn-Trace-Id".into(),
                value: v.into(),
            }),
        }
    }

    fn feed(b: &mut PlatformSpans<SeqIds>, json: &str) -> Vec<Span> {
        let mut out = Vec::new();
        for e in parse_batch(json.as_bytes()).unwrap() {
            b.on_event(&e, 999, &mut out);
        }
        out
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    fn start_json(id: &str, header: &str, span_id: Option<&str>) -> String {
        let span = span_id.map_or(String::new(), |s| format!(r#""spanId":"{s}","#));
        format!(
            r#"[{{"time":"2022-10-12T00:00:15.064Z","type":"platform.start","record":{{"requestId":"{id}","version":"$LATEST","tracing":{{{span}"type":"X-Amzn-Trace-Id","value":"{header}"}}}}}}]"#
        )
    }

    fn done_json(id: &str, status: &str, extra: &str) -> String {
        format!(
            r#"[{{"time":"2022-10-12T00:00:15.264Z","type":"platform.runtimeDone","record":{{"requestId":"{id}","status":"{status}"{extra},"metrics":{{"durationMs":200.0,"producedBytes":16}},"spans":[{{"name":"responseLatency","start":"2022-10-12T00:00:15.065Z","durationMs":190.5}},{{"name":"responseDuration","start":"2022-10-12T00:00:15.255Z","durationMs":8.0}}]}}}}]"#
        )
    }

    #[test]
    fn invocation_span_from_start_and_runtime_done() {
        let mut b = builder();
        b.on_invoke(&invoke("req-1", Some(HEADER)));
        assert!(
            feed(
                &mut b,
                &start_json("req-1", HEADER, Some("54565fb41ac79632"))
            )
            .is_empty()
        );
        let spans = feed(&mut b, &done_json("req-1", "success", ""));
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.trace_id, TRACE);
        assert_eq!(span.parent_span_id, PARENT);
        assert_eq!(span.span_id, SPAN);
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.name, "orders");
        assert_eq!(span.start_time_unix_nano, 1_665_532_815_064_000_000);
        assert_eq!(span.end_time_unix_nano, 1_665_532_815_264_000_000);
        assert_eq!(
            span.flags,
            FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
        );
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Ok as i32);
        let a = &span.attributes;
        assert_eq!(attr(a, "faas.invocation_id"), Some(&s("req-1")));
        assert_eq!(attr(a, "faas.trigger"), Some(&s("other")));
        assert_eq!(
            attr(a, "faas.coldstart"),
            Some(&any_value::Value::BoolValue(true))
        );
        assert_eq!(
            attr(a, "cloud.resource_id"),
            Some(&s(
                "arn:aws:lambda:eu-west-1:123456789012:function:orders:live"
            ))
        );
        assert_eq!(
            attr(a, "aws.lambda.invoked_arn"),
            attr(a, "cloud.resource_id")
        );
        assert_eq!(attr(a, "cloud.account.id"), Some(&s("123456789012")));
        assert_eq!(attr(a, "error.type"), None);
        let names: Vec<_> = span.events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["responseLatency", "responseDuration"]);
        assert_eq!(span.events[0].time_unix_nano, 1_665_532_815_065_000_000);
    }

    #[test]
    fn resource_attributes() {
        let b = builder();
        let r = b.resource();
        assert_eq!(attr(&r.attributes, "service.name"), Some(&s("checkout")));
        assert_eq!(attr(&r.attributes, "cloud.provider"), Some(&s("aws")));
        assert_eq!(
            attr(&r.attributes, "cloud.platform"),
            Some(&s("aws_lambda"))
        );
        assert_eq!(attr(&r.attributes, "cloud.region"), Some(&s("override-1")));
        assert_eq!(attr(&r.attributes, "faas.name"), Some(&s("orders")));
        assert_eq!(attr(&r.attributes, "faas.version"), Some(&s("$LATEST")));
        assert_eq!(attr(&r.attributes, "team"), Some(&s("payments")));
        assert_eq!(
            r.attributes
                .iter()
                .filter(|kv| kv.key == "service.name")
                .count(),
            1
        );
        let rs = b.resource_spans(vec![Span::default()]);
        assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, SCOPE_NAME);
        assert_eq!(rs.scope_spans[0].spans.len(), 1);

        let mut no_name = info();
        no_name.service_name = None;
        let b = PlatformSpans::with_ids(no_name, SeqIds::default());
        assert_eq!(
            attr(&b.resource().attributes, "service.name"),
            Some(&s("ignored"))
        );
    }

    #[test]
    fn error_status_and_second_invocation_is_warm() {
        let mut b = builder();
        b.on_invoke(&invoke("req-1", Some(HEADER)));
        feed(&mut b, &start_json("req-1", HEADER, None));
        let first = feed(&mut b, &done_json("req-1", "success", ""));
        assert_eq!(first.len(), 1);
        // No spanId anywhere: generated.
        assert_eq!(first[0].span_id, [0xb0, 0, 0, 0, 0, 0, 0, 1]);

        b.on_invoke(&invoke("req-2", Some(HEADER)));
        let spans = feed(
            &mut b,
            &done_json("req-2", "error", r#","errorType":"Runtime.HandlerError""#),
        );
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        let status = span.status.as_ref().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "Runtime.HandlerError");
        assert_eq!(
            attr(&span.attributes, "error.type"),
            Some(&s("Runtime.HandlerError"))
        );
        assert_eq!(
            attr(&span.attributes, "faas.coldstart"),
            Some(&any_value::Value::BoolValue(false))
        );
        // No platform.start: start = runtimeDone.time − durationMs.
        assert_eq!(span.start_time_unix_nano, 1_665_532_815_064_000_000);

        let timeout = feed(&mut b, &done_json("req-3", "timeout", ""));
        assert_eq!(timeout[0].status.as_ref().unwrap().message, "timeout");
    }

    #[test]
    fn duplicates_and_late_reports_emit_nothing_twice() {
        let mut b = builder();
        let start = start_json("req-1", HEADER, Some("54565fb41ac79632"));
        let done = done_json("req-1", "success", "");
        feed(&mut b, &start);
        feed(&mut b, &start);
        assert_eq!(feed(&mut b, &done).len(), 1);
        assert!(feed(&mut b, &done).is_empty());
        assert!(feed(&mut b, &start).is_empty());
        let report = format!(
            r#"[{{"time":"2022-10-12T00:00:15.300Z","type":"platform.report","record":{{"requestId":"req-1","status":"success","metrics":{{"durationMs":200.5,"billedDurationMs":201,"memorySizeMB":128,"maxMemoryUsedMB":60}},"tracing":{{"type":"X-Amzn-Trace-Id","value":"{HEADER}"}}}}}}]"#
        );
        assert!(feed(&mut b, &report).is_empty());
        b.on_invoke(&invoke("req-1", Some(HEADER)));
        assert!(b.pending.is_empty());
    }

    #[test]
    fn report_finishes_a_span_without_runtime_done() {
        let mut b = builder();
        feed(
            &mut b,
            &start_json("req-9", HEADER, Some("54565fb41ac79632")),
        );
        let report = format!(
            r#"[{{"time":"2022-10-12T00:00:18.064Z","type":"platform.report","record":{{"requestId":"req-9","status":"timeout","errorType":"Sandbox.Timedout","metrics":{{"durationMs":3000.0,"billedDurationMs":3000,"memorySizeMB":128,"maxMemoryUsedMB":60}},"tracing":{{"spanId":"54565fb41ac79632","type":"X-Amzn-Trace-Id","value":"{HEADER}"}}}}}}]"#
        );
        let spans = feed(&mut b, &report);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].span_id, SPAN);
        assert_eq!(spans[0].start_time_unix_nano, 1_665_532_815_064_000_000);
        assert_eq!(spans[0].end_time_unix_nano, 1_665_532_818_064_000_000);
        assert_eq!(
            spans[0].status.as_ref().unwrap().message,
            "Sandbox.Timedout"
        );
    }

    #[test]
    fn unsampled_requests_emit_nothing() {
        let mut b = builder();
        let unsampled =
            "Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=0";
        b.on_invoke(&invoke("req-1", Some(unsampled)));
        feed(&mut b, &start_json("req-1", unsampled, None));
        assert!(feed(&mut b, &done_json("req-1", "success", "")).is_empty());
        // Nor the init span of that (cold) invocation.
        let init = r#"[{"time":"2022-10-12T00:00:14.000Z","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init"}},
                       {"time":"2022-10-12T00:00:14.500Z","type":"platform.initRuntimeDone","record":{"initializationType":"on-demand","phase":"init","status":"success"}}]"#;
        assert!(feed(&mut b, init).is_empty());
    }

    #[test]
    fn no_tracing_at_all_makes_a_root_span() {
        let mut b = builder();
        b.on_invoke(&invoke("req-1", None));
        let spans = feed(&mut b, &done_json("req-1", "success", ""));
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].trace_id[0], 0xa0);
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(spans[0].flags, FLAG_SAMPLED | FLAG_HAS_IS_REMOTE);
    }

    #[test]
    fn invoke_header_is_used_when_telemetry_has_none() {
        let mut b = builder();
        b.on_invoke(&invoke("req-1", Some(HEADER)));
        let spans = feed(&mut b, &done_json("req-1", "success", ""));
        assert_eq!(spans[0].trace_id, TRACE);
        assert_eq!(spans[0].parent_span_id, PARENT);
    }

    #[test]
    fn init_span_joins_the_cold_start_trace() {
        let mut b = builder();
        let init = r#"[{"time":"2022-10-12T00:00:14.000Z","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init","runtimeVersion":"python:3.12.v20"}},
                       {"time":"2022-10-12T00:00:14.500Z","type":"platform.initRuntimeDone","record":{"initializationType":"on-demand","phase":"init","status":"success"}},
                       {"time":"2022-10-12T00:00:14.501Z","type":"platform.initReport","record":{"initializationType":"on-demand","phase":"init","status":"success","metrics":{"durationMs":500.0}}}]"#;
        assert!(feed(&mut b, init).is_empty());
        b.on_invoke(&invoke("req-1", Some(HEADER)));
        feed(
            &mut b,
            &start_json("req-1", HEADER, Some("54565fb41ac79632")),
        );
        let spans = feed(&mut b, &done_json("req-1", "success", ""));
        assert_eq!(spans.len(), 2);
        let init = &spans[1];
        assert_eq!(init.name, "Init");
        assert_eq!(init.kind, SpanKind::Internal as i32);
        assert_eq!(init.trace_id, TRACE);
        assert_eq!(init.parent_span_id, SPAN);
        assert_eq!(init.start_time_unix_nano, 1_665_532_814_000_000_000);
        assert_eq!(init.end_time_unix_nano, 1_665_532_814_500_000_000);
        assert_eq!(
            attr(&init.attributes, "faas.coldstart"),
            Some(&any_value::Value::BoolValue(true))
        );
        assert_eq!(
            attr(&init.attributes, "aws.lambda.initialization_type"),
            Some(&s("on-demand"))
        );
        // Once only.
        b.on_invoke(&invoke("req-2", Some(HEADER)));
        let spans = feed(&mut b, &done_json("req-2", "success", ""));
        assert_eq!(spans.len(), 1);
    }

    #[test]
    fn late_init_events_and_failed_init() {
        let mut b = builder();
        b.on_invoke(&invoke("req-1", Some(HEADER)));
        assert_eq!(feed(&mut b, &done_json("req-1", "success", "")).len(), 1);
        // Only a report, arriving after the invocation: start = time − duration.
        let spans = feed(
            &mut b,
            r#"[{"time":"2022-10-12T00:00:14.500Z","type":"platform.initReport","record":{"initializationType":"on-demand","phase":"init","status":"error","errorType":"Runtime.ExitError","metrics":{"durationMs":250.0}}}]"#,
        );
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].start_time_unix_nano, 1_665_532_814_250_000_000);
        assert_eq!(spans[0].end_time_unix_nano, 1_665_532_814_500_000_000);
        assert_eq!(
            spans[0].status.as_ref().unwrap().message,
            "Runtime.ExitError"
        );
    }

    #[test]
    fn provisioned_concurrency_is_not_a_cold_start_and_restore_spans() {
        let mut b = builder();
        feed(
            &mut b,
            r#"[{"time":"2022-10-12T00:00:01.000Z","type":"platform.initStart","record":{"initializationType":"provisioned-concurrency","phase":"init"}},
                {"time":"2022-10-12T00:00:02.000Z","type":"platform.restoreStart","record":{"functionName":"orders"}},
                {"time":"2022-10-12T00:00:02.300Z","type":"platform.restoreRuntimeDone","record":{"status":"success"}}]"#,
        );
        b.on_invoke(&invoke("req-1", Some(HEADER)));
        let spans = feed(&mut b, &done_json("req-1", "success", ""));
        assert_eq!(
            attr(&spans[0].attributes, "faas.coldstart"),
            Some(&any_value::Value::BoolValue(false))
        );
        // The init phase has no end yet, the restore phase is complete.
        let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["orders", "Restore"]);
    }

    #[test]
    fn a_request_the_proxy_claimed_gets_no_second_invocation_span() {
        let mut b = builder();
        let init = r#"[{"time":"2022-10-12T00:00:14.000Z","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init"}},
                       {"time":"2022-10-12T00:00:14.500Z","type":"platform.initRuntimeDone","record":{"initializationType":"on-demand","phase":"init","status":"success"}}]"#;
        assert!(feed(&mut b, init).is_empty());
        b.on_invoke(&invoke("req-1", Some(HEADER)));
        b.claim("req-1", Some((TRACE, [7; 8])));
        let spans = feed(&mut b, &done_json("req-1", "success", ""));
        // Only the Init span, under the proxy's invocation span.
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "Init");
        assert_eq!(spans[0].parent_span_id, [7; 8]);
        // Unsampled by the proxy: nothing at all.
        b.on_invoke(&invoke("req-2", Some(HEADER)));
        b.claim("req-2", None);
        assert!(feed(&mut b, &done_json("req-2", "success", "")).is_empty());
    }

    #[test]
    fn pending_invocations_are_bounded() {
        let mut b = builder();
        for i in 0..(MAX_PENDING + 10) {
            b.on_invoke(&invoke(&format!("r{i}"), Some(HEADER)));
        }
        assert_eq!(b.pending.len(), MAX_PENDING);
    }

    #[test]
    fn random_ids_are_non_zero_and_differ() {
        let mut ids = RandomIds::default();
        let a = ids.span_id();
        let b = ids.span_id();
        assert_ne!(a, b);
        assert_ne!(a, [0; 8]);
        assert_ne!(ids.trace_id(), [0; 16]);
    }
}
