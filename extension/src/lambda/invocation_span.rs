//! The invocation span the Runtime API proxy records: one SERVER span per request, from the
//! runtime receiving its event to Lambda accepting the response or error (pure: times passed
//! in, ids from an [`IdSource`], no I/O).
//!
//! ```text
//!  invocation/next  ──▶ start(): event_context::extract + choose_parent → span opened,
//!                        returns the Lambda-Runtime-Trace-Id the runtime gets:
//!                        Root=<trace>;Parent=<this span>;Sampled=<0|1>[;Lineage=…;other keys]
//!  {id}/response    ──▶ end(Response)               status Ok
//!  {id}/error       ──▶ end(Error{type, message})   status Error, error.type
//!  deadline, runtimeDone timeout/failure, SHUTDOWN, or a new /next for another id
//!                   ──▶ end(Fault{reason}) / fail_open()   status Error, error.type = reason
//! ```
//!
//! Concurrent invocations (Lambda Managed Instances, [`SpanSettings::concurrent`]): several
//! spans are open at once, each keyed by its request id; a new `/next` ends none of them, and
//! [`InvocationSpans::expire`] ends those whose deadline has passed.
//!
//! The Telemetry API's platform spans ask [`InvocationSpans::owner_context`] whether the proxy
//! owns a request (then they make no second invocation span and hang `Init` under this one), and
//! [`merge_function_spans`] runs at flush: when the function's own instrumentation made a FaaS
//! SERVER span for the same request, that span takes this one's place (docs/propagation.md).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use crate::buffer::{SpanBatch, encode_request};

use super::event_context::{
    self, ContextSource, DEFAULT_PRECEDENCE, Extracted, Parent, RemoteContext, Trigger,
};
use super::platform_spans::{
    FunctionInfo, IdSource, RandomIds, build_resource, kv_bool, kv_int, kv_str,
};

/// Name of the instrumentation scope of the proxy's invocation spans.
pub const SCOPE_NAME: &str = "otel-xray.lambda.invocation";
/// Invocations open at once, per concurrent invocation (normally one; a crashed runtime may
/// leave one behind). At least [`MIN_OPEN`].
const OPEN_PER_CONCURRENCY: usize = 2;
const MIN_OPEN: usize = 8;
/// Request ids remembered with their span context, for platform spans and late signals, per
/// concurrent invocation; at least [`MIN_OWNED`].
const OWNED_PER_CONCURRENCY: usize = 8;
const MIN_OWNED: usize = 64;
/// The tenant of a tenant-isolated function (`Lambda-Runtime-Aws-Tenant-Id`).
pub const TENANT_ID_ATTRIBUTE: &str = "aws.lambda.tenant_id";
/// The durable execution a durable function's invocation belongs to (`DurableExecutionArn`).
pub const DURABLE_EXECUTION_ATTRIBUTE: &str = "aws.lambda.durable_execution.arn";
/// W3C sampled flag | OTLP "has is_remote" | "is_remote".
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

/// A (trace id, span id) pair.
pub type TraceSpan = ([u8; 16], [u8; 8]);

/// The proxy and the lifecycle share one of these.
pub type SharedInvocationSpans = Arc<Mutex<InvocationSpans>>;

/// What the user configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanSettings {
    /// `OTEL_XRAY_CONTEXT_PRECEDENCE`.
    pub precedence: Vec<ContextSource>,
    /// `OTEL_XRAY_BAGGAGE_ATTRIBUTES`.
    pub baggage_attributes: Vec<String>,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency`: no invocation is a cold start.
    pub provisioned: bool,
    /// Invocations run at once (Lambda Managed Instances): a new `/next` does not end the
    /// open ones.
    pub concurrent: bool,
    /// `AWS_LAMBDA_MAX_CONCURRENCY`: sizes the tables of open and remembered invocations.
    pub max_concurrency: u32,
}

impl Default for SpanSettings {
    fn default() -> Self {
        SpanSettings {
            precedence: DEFAULT_PRECEDENCE.to_vec(),
            baggage_attributes: Vec::new(),
            provisioned: false,
            concurrent: false,
            max_concurrency: 1,
        }
    }
}

/// What `invocation/next` told the runtime.
#[derive(Debug, Clone, Copy)]
pub struct NextInvocation<'a> {
    /// `Lambda-Runtime-Aws-Request-Id`.
    pub request_id: &'a str,
    /// `Lambda-Runtime-Deadline-Ms`.
    pub deadline_ms: Option<u64>,
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    pub invoked_arn: Option<&'a str>,
    /// `Lambda-Runtime-Trace-Id`.
    pub trace_header: Option<&'a str>,
    /// `Lambda-Runtime-Aws-Tenant-Id` (tenant isolation mode).
    pub tenant_id: Option<&'a str>,
    /// The event.
    pub event: &'a [u8],
}

/// What [`InvocationSpans::start`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The `Lambda-Runtime-Trace-Id` to hand the runtime (None: leave Lambda's).
    pub runtime_trace_header: Option<String>,
    /// False: nothing is recorded for this request.
    pub sampled: bool,
    /// Which context became the parent (`none` for a new trace), for logs.
    pub parent_source: &'static str,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvocationOutcome {
    /// The runtime posted a response.
    Response,
    /// The runtime posted an error (or a streamed response ended with error trailers).
    Error {
        /// `Lambda-Runtime-Function-Error-Type` or the body's `errorType`.
        error_type: String,
        /// The body's `errorMessage`.
        message: Option<String>,
    },
    /// No answer: timeout, crash, shutdown.
    Fault {
        /// e.g. `timeout`, `Runtime.ExitError`, `shutdown`.
        reason: String,
    },
}

#[derive(Debug)]
struct Open {
    request_id: String,
    /// `Lambda-Runtime-Deadline-Ms`, when Lambda sent it.
    deadline_ms: Option<u64>,
    span: Span,
}

/// The open and recent invocation spans.
#[derive(Debug)]
pub struct InvocationSpans<I: IdSource = RandomIds> {
    resource: Resource,
    account_id: Option<String>,
    span_name: String,
    settings: SpanSettings,
    ids: I,
    open: VecDeque<Open>,
    owned: VecDeque<(String, Option<TraceSpan>)>,
    started: u64,
    max_open: usize,
    max_owned: usize,
}

impl InvocationSpans<RandomIds> {
    /// With random ids.
    pub fn new(info: &FunctionInfo, settings: SpanSettings) -> Self {
        Self::with_ids(info, settings, RandomIds::default())
    }

    /// Shared between the proxy and the lifecycle.
    pub fn shared(info: &FunctionInfo, settings: SpanSettings) -> SharedInvocationSpans {
        Arc::new(Mutex::new(Self::new(info, settings)))
    }
}

impl<I: IdSource> InvocationSpans<I> {
    /// With the given id source (tests use a deterministic one).
    pub fn with_ids(info: &FunctionInfo, settings: SpanSettings, ids: I) -> Self {
        InvocationSpans {
            resource: build_resource(info),
            account_id: info.account_id.clone(),
            span_name: if info.function_name.is_empty() {
                "invocation".to_owned()
            } else {
                info.function_name.clone()
            },
            ids,
            open: VecDeque::new(),
            owned: VecDeque::new(),
            started: 0,
            max_open: (settings.max_concurrency as usize)
                .saturating_mul(OPEN_PER_CONCURRENCY)
                .max(MIN_OPEN),
            max_owned: (settings.max_concurrency as usize)
                .saturating_mul(OWNED_PER_CONCURRENCY)
                .max(MIN_OWNED),
            settings,
        }
    }

    /// Opens the span of a new invocation. One at a time (on-demand Lambda): invocations still
    /// open are ended as faults (the runtime asked for another event without answering them)
    /// and returned. Concurrent: none is ended, but past the table's size the oldest open one
    /// is (returned too, never dropped unseen).
    pub fn start(&mut self, next: &NextInvocation<'_>, now_unix_nano: u64) -> (Started, Vec<Span>) {
        let mut failed = if self.settings.concurrent {
            Vec::new()
        } else {
            self.fail_open("Runtime.NoResponse", now_unix_nano)
        };
        let coldstart = self.started == 0 && !self.settings.provisioned;
        self.started += 1;
        let ex = event_context::extract(next.event, next.trace_header);
        let parent = event_context::choose_parent(&ex, &self.settings.precedence);
        let parent_source = parent.as_ref().map_or("none", |p| p.source.as_str());
        let sampled = parent.as_ref().is_none_or(|p| p.sampled);
        if !sampled {
            self.remember(next.request_id, None);
            // The caller decided: the runtime's SDK must not record either.
            let header = parent.as_ref().map(|p| {
                rewrite_trace_header(
                    next.trace_header,
                    p.context.trace_id,
                    p.context.parent_id,
                    false,
                )
            });
            let started = Started {
                runtime_trace_header: header,
                sampled: false,
                parent_source,
            };
            return (started, failed);
        }
        let trace_id = parent
            .as_ref()
            .map_or_else(|| self.new_trace_id(now_unix_nano), |p| p.context.trace_id);
        let span_id = self.ids.span_id();
        let span = self.build(
            next,
            &ex,
            parent.as_ref(),
            trace_id,
            span_id,
            coldstart,
            now_unix_nano,
        );
        self.remember(next.request_id, Some((trace_id, span_id)));
        if self.open.len() >= self.max_open
            && let Some(oldest) = self.open.front().map(|o| o.request_id.clone())
            && let Some(span) = self.end(
                &oldest,
                InvocationOutcome::Fault {
                    reason: "Runtime.NoResponse".to_owned(),
                },
                now_unix_nano,
            )
        {
            failed.push(span);
        }
        self.open.push_back(Open {
            request_id: next.request_id.to_owned(),
            deadline_ms: next.deadline_ms,
            span,
        });
        let started = Started {
            runtime_trace_header: Some(rewrite_trace_header(
                next.trace_header,
                trace_id,
                Some(span_id),
                true,
            )),
            sampled: true,
            parent_source,
        };
        (started, failed)
    }

    /// Ends `request_id`'s span; `None` when it is not open (unsampled, or ended already).
    pub fn end(
        &mut self,
        request_id: &str,
        outcome: InvocationOutcome,
        now_unix_nano: u64,
    ) -> Option<Span> {
        let idx = self.open.iter().position(|o| o.request_id == request_id)?;
        let Open { mut span, .. } = self.open.remove(idx)?;
        span.end_time_unix_nano = now_unix_nano.max(span.start_time_unix_nano);
        let (status, error_type) = match outcome {
            InvocationOutcome::Response => (
                Status {
                    code: StatusCode::Ok as i32,
                    message: String::new(),
                },
                None,
            ),
            InvocationOutcome::Error {
                error_type,
                message,
            } => {
                let message = match message {
                    Some(m) if !m.is_empty() => format!("{error_type}: {m}"),
                    _ => error_type.clone(),
                };
                (
                    Status {
                        code: StatusCode::Error as i32,
                        message,
                    },
                    Some(error_type),
                )
            }
            InvocationOutcome::Fault { reason } => (
                Status {
                    code: StatusCode::Error as i32,
                    message: format!("the invocation did not complete: {reason}"),
                },
                Some(reason),
            ),
        };
        if let Some(t) = error_type {
            span.attributes.push(kv_str("error.type", &t));
        }
        span.status = Some(status);
        Some(span)
    }

    /// Ends, as `timeout` faults, the open spans whose deadline is before `cutoff_unix_ms`
    /// (Managed Instances: no INVOKE deadline wait ends them).
    pub fn expire(&mut self, cutoff_unix_ms: u64, now_unix_nano: u64) -> Vec<Span> {
        let ids: Vec<String> = self
            .open
            .iter()
            .filter(|o| o.deadline_ms.is_some_and(|d| d < cutoff_unix_ms))
            .map(|o| o.request_id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| {
                self.end(
                    id,
                    InvocationOutcome::Fault {
                        reason: "timeout".to_owned(),
                    },
                    now_unix_nano,
                )
            })
            .collect()
    }

    /// Number of open spans.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The request ids of the open spans.
    pub fn open_request_ids(&self) -> Vec<String> {
        self.open.iter().map(|o| o.request_id.clone()).collect()
    }

    /// Ends every open span as a fault with `reason` (SHUTDOWN, a crashed runtime).
    pub fn fail_open(&mut self, reason: &str, now_unix_nano: u64) -> Vec<Span> {
        let ids: Vec<String> = self.open.iter().map(|o| o.request_id.clone()).collect();
        ids.iter()
            .filter_map(|id| {
                self.end(
                    id,
                    InvocationOutcome::Fault {
                        reason: reason.to_owned(),
                    },
                    now_unix_nano,
                )
            })
            .collect()
    }

    /// `Some(Some((trace, span)))` when the proxy recorded `request_id`, `Some(None)` when it
    /// saw it unsampled, `None` when it never saw it (no proxy in the path).
    pub fn owner_context(&self, request_id: &str) -> Option<Option<TraceSpan>> {
        self.owned
            .iter()
            .find(|(id, _)| id == request_id)
            .map(|(_, ctx)| *ctx)
    }

    /// True while `request_id`'s span is open.
    pub fn is_open(&self, request_id: &str) -> bool {
        self.open.iter().any(|o| o.request_id == request_id)
    }

    /// Wraps spans built here with the function's resource.
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

    fn remember(&mut self, request_id: &str, ctx: Option<TraceSpan>) {
        self.owned.retain(|(id, _)| id != request_id);
        if self.owned.len() >= self.max_owned {
            self.owned.pop_front();
        }
        self.owned.push_back((request_id.to_owned(), ctx));
    }

    /// A new trace id whose first 4 bytes are the epoch seconds, as X-Ray ids have.
    fn new_trace_id(&mut self, now_unix_nano: u64) -> [u8; 16] {
        let mut id = self.ids.trace_id();
        let secs = u32::try_from(now_unix_nano / 1_000_000_000).unwrap_or(u32::MAX);
        id[..4].copy_from_slice(&secs.to_be_bytes());
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        next: &NextInvocation<'_>,
        ex: &Extracted,
        parent: Option<&Parent>,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        coldstart: bool,
        now: u64,
    ) -> Span {
        let mut attributes = vec![
            kv_str("faas.invocation_id", next.request_id),
            kv_str("faas.trigger", ex.trigger.as_str()),
            kv_bool("faas.coldstart", coldstart),
        ];
        if let Some(arn) = next.invoked_arn {
            attributes.push(kv_str("cloud.resource_id", arn));
            attributes.push(kv_str("aws.lambda.invoked_arn", arn));
        }
        if let Some(account) = &self.account_id {
            attributes.push(kv_str("cloud.account.id", account));
        }
        if let Some(tenant) = next.tenant_id {
            attributes.push(kv_str(TENANT_ID_ATTRIBUTE, tenant));
        }
        if let Some(arn) = &ex.durable_execution_arn {
            attributes.push(kv_str(DURABLE_EXECUTION_ATTRIBUTE, arn));
        }
        if ex.trigger == Trigger::PubSub && ex.message_count > 0 {
            attributes.push(kv_str("messaging.system", "aws_sqs"));
            attributes.push(kv_int(
                "messaging.batch.message_count",
                i64::try_from(ex.message_count).unwrap_or(i64::MAX),
            ));
        }
        if let Some(p) = parent {
            attributes.push(kv_str("otel_xray.parent_context", p.source.as_str()));
        }
        for (k, v) in &ex.baggage {
            if self.settings.baggage_attributes.iter().any(|a| a == k)
                && !attributes.iter().any(|kv| &kv.key == k)
            {
                attributes.push(kv_str(k, v));
            }
        }
        let mut links: Vec<Link> = ex.links.iter().map(link).collect();
        links.extend(
            event_context::other_contexts(ex, parent)
                .into_iter()
                .map(link),
        );
        let parent_id = parent.and_then(|p| p.context.parent_id);
        let mut flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE;
        if parent_id.is_some() {
            flags |= FLAG_IS_REMOTE;
        }
        Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            trace_state: parent
                .and_then(|p| p.context.tracestate.clone())
                .unwrap_or_default(),
            parent_span_id: parent_id.map(|p| p.to_vec()).unwrap_or_default(),
            flags,
            name: self.span_name.clone(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: now,
            end_time_unix_nano: now,
            attributes,
            links,
            ..Default::default()
        }
    }
}

fn link(c: &RemoteContext) -> Link {
    Link {
        trace_id: c.trace_id.to_vec(),
        span_id: c.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
        trace_state: c.tracestate.clone().unwrap_or_default(),
        flags: if c.sampled == Some(false) {
            FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
        } else {
            FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | FLAG_IS_REMOTE
        },
        ..Default::default()
    }
}

/// Lambda's header with `Root`, `Parent` and `Sampled` replaced and every other key (`Lineage`,
/// unknown ones) kept in place; a header is built when Lambda sent none.
pub fn rewrite_trace_header(
    original: Option<&str>,
    trace_id: [u8; 16],
    parent: Option<[u8; 8]>,
    sampled: bool,
) -> String {
    let root = format!("1-{}-{}", hex(&trace_id[..4]), hex(&trace_id[4..]));
    let mut parts: Vec<String> = Vec::new();
    let (mut has_root, mut has_parent, mut has_sampled) = (false, false, false);
    for part in original.unwrap_or("").split(';') {
        let trimmed = part.trim();
        if trimmed.is_empty() {
            continue;
        }
        let key = trimmed.split_once('=').map_or(trimmed, |(k, _)| k).trim();
        if key.eq_ignore_ascii_case("root") {
            has_root = true;
            parts.push(format!("Root={root}"));
        } else if key.eq_ignore_ascii_case("parent") {
            has_parent = true;
            if let Some(p) = parent {
                parts.push(format!("Parent={}", hex(&p)));
            }
        } else if key.eq_ignore_ascii_case("sampled") {
            has_sampled = true;
            parts.push(format!("Sampled={}", u8::from(sampled)));
        } else {
            parts.push(trimmed.to_owned());
        }
    }
    let mut front = Vec::new();
    if !has_root {
        front.push(format!("Root={root}"));
    }
    if !has_parent && let Some(p) = parent {
        front.push(format!("Parent={}", hex(&p)));
    }
    if !has_sampled {
        front.push(format!("Sampled={}", u8::from(sampled)));
    }
    front.extend(parts);
    front.join(";")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

/// Where a span sits in a batch.
type At = (usize, usize, usize);

/// Proxy spans already replaced by the function's own, remembered across flushes: a span built
/// later under a replaced proxy span (the cold start's `Init`, from telemetry that came after the
/// flush) is moved under its replacement, so it never points at a span that was not exported.
#[derive(Debug, Default)]
pub struct Replaced {
    /// (trace id, proxy span id, replacement span id), oldest first.
    ids: VecDeque<(Vec<u8>, Vec<u8>, Vec<u8>)>,
}

/// Replacements remembered.
const MAX_REPLACED: usize = 64;

impl Replaced {
    fn insert(&mut self, trace: &[u8], old: &[u8], new: &[u8]) {
        if self.ids.len() == MAX_REPLACED {
            self.ids.pop_front();
        }
        self.ids
            .push_back((trace.to_vec(), old.to_vec(), new.to_vec()));
    }

    /// Re-parents spans whose parent was replaced; returns how many moved.
    fn apply(&self, batch: &mut [ResourceSpans]) -> usize {
        if self.ids.is_empty() {
            return 0;
        }
        let mut moved = 0;
        for span in batch
            .iter_mut()
            .flat_map(|rs| rs.scope_spans.iter_mut())
            .flat_map(|ss| ss.spans.iter_mut())
        {
            if let Some((_, _, new)) = self
                .ids
                .iter()
                .find(|(t, old, _)| *t == span.trace_id && *old == span.parent_span_id)
            {
                span.parent_span_id.clone_from(new);
                moved += 1;
            }
        }
        moved
    }
}

/// At flush: where the function's own instrumentation made a FaaS SERVER span for a request the
/// proxy also recorded (same trace, `faas.invocation_id` or `faas.execution` = the request id,
/// child or sibling of the proxy's span), the function's span takes the proxy's place: it gets
/// the proxy span's parent, the attributes it lacks, its links and its error status; children of
/// the proxy span move under it; the proxy span is removed. Returns how many were removed.
/// `replaced` carries the replacements from one flush to the next.
pub fn merge_function_spans(batch: &mut [ResourceSpans], replaced: &mut Replaced) -> usize {
    replaced.apply(batch);
    let mut ours: Vec<At> = Vec::new();
    for (r, rs) in batch.iter().enumerate() {
        for (s, ss) in rs.scope_spans.iter().enumerate() {
            if ss.scope.as_ref().is_some_and(|sc| sc.name == SCOPE_NAME) {
                ours.extend((0..ss.spans.len()).map(|i| (r, s, i)));
            }
        }
    }
    if ours.is_empty() {
        return 0;
    }
    let mut removed: Vec<At> = Vec::new();
    for &(r, s, i) in &ours {
        let proxy = batch[r].scope_spans[s].spans[i].clone();
        let Some(request_id) = str_attr(&proxy.attributes, "faas.invocation_id") else {
            continue;
        };
        let Some(theirs) = find_function_span(batch, &proxy, request_id) else {
            continue;
        };
        let (tr, ts, ti) = theirs;
        let their_id = batch[tr].scope_spans[ts].spans[ti].span_id.clone();
        // Children of the proxy span move under the function's span.
        for rs in batch.iter_mut() {
            for ss in &mut rs.scope_spans {
                for span in &mut ss.spans {
                    if span.trace_id == proxy.trace_id
                        && span.parent_span_id == proxy.span_id
                        && span.span_id != their_id
                    {
                        span.parent_span_id.clone_from(&their_id);
                    }
                }
            }
        }
        let span = &mut batch[tr].scope_spans[ts].spans[ti];
        span.parent_span_id.clone_from(&proxy.parent_span_id);
        for kv in &proxy.attributes {
            if !span.attributes.iter().any(|a| a.key == kv.key) {
                span.attributes.push(kv.clone());
            }
        }
        span.links.extend(proxy.links.iter().cloned());
        let proxy_failed = proxy
            .status
            .as_ref()
            .is_some_and(|st| st.code == StatusCode::Error as i32);
        let theirs_failed = span
            .status
            .as_ref()
            .is_some_and(|st| st.code == StatusCode::Error as i32);
        if proxy_failed && !theirs_failed {
            span.status.clone_from(&proxy.status);
        }
        if span.trace_state.is_empty() {
            span.trace_state.clone_from(&proxy.trace_state);
        }
        replaced.insert(&proxy.trace_id, &proxy.span_id, &their_id);
        removed.push((r, s, i));
    }
    // Remove from the back so that indices stay valid.
    removed.sort_unstable();
    for &(r, s, i) in removed.iter().rev() {
        batch[r].scope_spans[s].spans.remove(i);
    }
    for rs in batch.iter_mut() {
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    removed.len()
}

/// [`merge_function_spans`] on the buffer's encoded requests, decoding only those that can
/// take part: the requests holding proxy spans (the extension's own, marked when encoded), and
/// those whose bytes contain a proxy span's request id (which the function's FaaS span carries
/// as `faas.invocation_id` or `faas.execution`), a proxy span's id (its children name it as
/// parent) or the id of a proxy span replaced in an earlier flush. A request holding none of
/// them cannot match, so a flush without proxy spans or replacements decodes nothing. The
/// requests decoded are encoded again and the batch's count updated; returns the spans removed.
pub fn merge_encoded_function_spans(batch: &mut SpanBatch, replaced: &mut Replaced) -> usize {
    let mut needles: Vec<Vec<u8>> = replaced.ids.iter().map(|(_, old, _)| old.clone()).collect();
    let mut decoded: Vec<Option<Vec<ResourceSpans>>> = vec![None; batch.requests.len()];
    for (slot, request) in decoded.iter_mut().zip(&batch.requests) {
        if !request.proxy_spans {
            continue;
        }
        let Ok(resource_spans) = request.decode() else {
            continue;
        };
        for ss in resource_spans.iter().flat_map(|rs| &rs.scope_spans) {
            if ss.scope.as_ref().is_none_or(|sc| sc.name != SCOPE_NAME) {
                continue;
            }
            for span in &ss.spans {
                if let Some(request_id) = str_attr(&span.attributes, "faas.invocation_id") {
                    needles.push(request_id.as_bytes().to_vec());
                    needles.push(span.span_id.clone());
                }
            }
        }
        *slot = Some(resource_spans);
    }
    if needles.is_empty() {
        return 0;
    }
    let finders: Vec<memchr::memmem::Finder<'_>> =
        needles.iter().map(memchr::memmem::Finder::new).collect();
    for (slot, request) in decoded.iter_mut().zip(&batch.requests) {
        if slot.is_none() && finders.iter().any(|f| f.find(&request.bytes).is_some()) {
            *slot = request.decode().ok();
        }
    }
    // The candidates, in batch order, as one slice for the merge; then back to their requests.
    let mut counts = Vec::new();
    let mut joined = Vec::new();
    for resource_spans in decoded.iter_mut().flatten() {
        counts.push(resource_spans.len());
        joined.append(resource_spans);
    }
    if joined.is_empty() {
        return 0;
    }
    merge_function_spans(&mut joined, replaced);
    let mut rest = joined.into_iter();
    let mut counts = counts.into_iter();
    let requests = std::mem::take(&mut batch.requests);
    let mut merged = Vec::with_capacity(requests.len());
    for (request, slot) in requests.into_iter().zip(decoded) {
        if slot.is_none() {
            merged.push(request);
            continue;
        }
        let n = counts.next().unwrap_or(0);
        let encoded = encode_request(rest.by_ref().take(n).collect());
        // A request the merge read but left as it was keeps its own encoding, and with it the
        // documents the buffer may have translated ahead.
        if encoded.bytes == request.bytes {
            merged.push(request);
        } else {
            merged.push(encoded);
        }
    }
    let before = batch.spans;
    *batch = SpanBatch::from_requests(merged);
    // Counted from what the batch now holds, which is what the accounting must follow.
    before.saturating_sub(batch.spans)
}

fn find_function_span(batch: &[ResourceSpans], proxy: &Span, request_id: &str) -> Option<At> {
    for (r, rs) in batch.iter().enumerate() {
        for (s, ss) in rs.scope_spans.iter().enumerate() {
            if ss.scope.as_ref().is_some_and(|sc| sc.name == SCOPE_NAME) {
                continue;
            }
            for (i, span) in ss.spans.iter().enumerate() {
                let same_request = str_attr(&span.attributes, "faas.invocation_id")
                    .or_else(|| str_attr(&span.attributes, "faas.execution"))
                    == Some(request_id);
                let placed = span.parent_span_id == proxy.span_id
                    || (!proxy.parent_span_id.is_empty()
                        && span.parent_span_id == proxy.parent_span_id);
                if span.kind == SpanKind::Server as i32
                    && span.trace_id == proxy.trace_id
                    && same_request
                    && placed
                {
                    return Some((r, s, i));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use serde_json::json;
    use std::collections::HashSet;

    use crate::lambda::platform_spans::SeqIds;

    const ACTIVE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a87bd80c:1";
    const PASSTHROUGH: &str =
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
    const NOW: u64 = 1_700_000_000_000_000_000;

    fn info() -> FunctionInfo {
        FunctionInfo {
            function_name: "orders".into(),
            function_version: "$LATEST".into(),
            account_id: Some("123456789012".into()),
            region: Some("eu-west-1".into()),
            service_name: None,
            resource_attributes: vec![],
        }
    }

    fn spans(settings: SpanSettings) -> InvocationSpans<SeqIds> {
        InvocationSpans::with_ids(&info(), settings, SeqIds::default())
    }

    fn next<'a>(id: &'a str, header: Option<&'a str>, event: &'a [u8]) -> NextInvocation<'a> {
        NextInvocation {
            request_id: id,
            deadline_ms: None,
            invoked_arn: Some("arn:aws:lambda:eu-west-1:123456789012:function:orders"),
            trace_header: header,
            tenant_id: None,
            event,
        }
    }

    fn next_with_deadline<'a>(id: &'a str, deadline_ms: u64) -> NextInvocation<'a> {
        NextInvocation {
            deadline_ms: Some(deadline_ms),
            ..next(id, None, b"{}")
        }
    }

    #[test]
    fn concurrent_invocations_stay_open_side_by_side() {
        let mut s = spans(SpanSettings {
            concurrent: true,
            max_concurrency: 16,
            ..SpanSettings::default()
        });
        for i in 0..16 {
            let (started, failed) = s.start(&next_with_deadline(&format!("r{i}"), 10_000), 1);
            assert!(started.sampled);
            assert!(failed.is_empty(), "a new /next ended {failed:?}");
        }
        assert_eq!(s.open_count(), 16);
        // Each ends by its own id, in any order.
        let ended = s.end("r7", InvocationOutcome::Response, 5).unwrap();
        assert!(
            ended
                .attributes
                .contains(&kv_str("faas.invocation_id", "r7"))
        );
        assert_eq!(s.open_count(), 15);
        // Past its deadline (cut-off 10,001 ms), every open one is a timeout; none twice.
        let expired = s.expire(10_001, 9);
        assert_eq!(expired.len(), 15);
        assert!(
            expired
                .iter()
                .all(|sp| sp.status.as_ref().unwrap().code == StatusCode::Error as i32)
        );
        assert!(s.expire(20_000, 10).is_empty());
    }

    #[test]
    fn a_full_table_ends_the_oldest_as_a_fault_and_says_so() {
        let mut s = spans(SpanSettings {
            concurrent: true,
            max_concurrency: 1,
            ..SpanSettings::default()
        });
        for i in 0..MIN_OPEN {
            assert!(
                s.start(&next_with_deadline(&format!("r{i}"), 1), 1)
                    .1
                    .is_empty()
            );
        }
        let (_, failed) = s.start(&next_with_deadline("late", 1), 2);
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0]
                .attributes
                .contains(&kv_str("faas.invocation_id", "r0"))
        );
        assert!(
            failed[0]
                .attributes
                .contains(&kv_str("error.type", "Runtime.NoResponse"))
        );
        assert_eq!(s.open_count(), MIN_OPEN);
    }

    #[test]
    fn one_at_a_time_a_new_next_ends_the_unanswered_one() {
        let mut s = spans(SpanSettings::default());
        assert!(s.start(&next("a", None, b"{}"), 1).1.is_empty());
        let (_, failed) = s.start(&next("b", None, b"{}"), 2);
        assert_eq!(failed.len(), 1);
        assert_eq!(s.open_count(), 1);
    }

    #[test]
    fn tenant_and_durable_execution_are_recorded() {
        let mut s = spans(SpanSettings::default());
        let event = br#"{"DurableExecutionArn":"arn:aws:lambda:eu-west-1:123456789012:function:orders:1/durable-execution/checkout/abc","CheckpointToken":"t"}"#;
        let n = NextInvocation {
            tenant_id: Some("tenant-blue"),
            ..next("r", None, event)
        };
        s.start(&n, 1);
        let span = s.end("r", InvocationOutcome::Response, 2).unwrap();
        assert!(
            span.attributes
                .contains(&kv_str(TENANT_ID_ATTRIBUTE, "tenant-blue"))
        );
        assert!(span.attributes.contains(&kv_str(
            DURABLE_EXECUTION_ATTRIBUTE,
            "arn:aws:lambda:eu-west-1:123456789012:function:orders:1/durable-execution/checkout/abc"
        )));
    }

    #[test]
    fn header_rewrite_keeps_lineage_and_unknown_keys() {
        let t = [
            0x57, 0x59, 0xe9, 0x88, 0xbd, 0x86, 0x2e, 0x3f, 0xe1, 0xbe, 0x46, 0xa9, 0x94, 0x27,
            0x27, 0x93,
        ];
        assert_eq!(
            rewrite_trace_header(Some(ACTIVE), t, Some([0xb0, 0, 0, 0, 0, 0, 0, 2]), true),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=b000000000000002;Sampled=1;Lineage=a87bd80c:1"
        );
        assert_eq!(
            rewrite_trace_header(
                Some("Self=1-x;Root=1-00000000-000000000000000000000000;Foo=bar"),
                t,
                None,
                false
            ),
            "Sampled=0;Self=1-x;Root=1-5759e988-bd862e3fe1be46a994272793;Foo=bar"
        );
        assert_eq!(
            rewrite_trace_header(None, t, Some([1; 8]), true),
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0101010101010101;Sampled=1"
        );
    }

    #[test]
    fn active_tracing_parents_under_the_function_segment() {
        let mut s = spans(SpanSettings::default());
        let (started, failed) = s.start(&next("r1", Some(ACTIVE), b"{}"), NOW);
        assert!(failed.is_empty());
        assert!(started.sampled);
        assert_eq!(started.parent_source, "lambda-sampled");
        let header = started.runtime_trace_header.unwrap();
        assert!(
            header.starts_with(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=b000000000000001;Sampled=1"
            ),
            "{header}"
        );
        assert_eq!(
            s.owner_context("r1").unwrap().unwrap().1,
            [0xb0, 0, 0, 0, 0, 0, 0, 1]
        );
        let span = s.end("r1", InvocationOutcome::Response, NOW + 5).unwrap();
        assert_eq!(
            span.parent_span_id,
            [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8]
        );
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.end_time_unix_nano, NOW + 5);
        assert_eq!(str_attr(&span.attributes, "faas.invocation_id"), Some("r1"));
        assert_eq!(str_attr(&span.attributes, "faas.trigger"), Some("other"));
        assert_eq!(
            str_attr(&span.attributes, "cloud.account.id"),
            Some("123456789012")
        );
        assert_eq!(span.status.unwrap().code, StatusCode::Ok as i32);
        assert!(s.end("r1", InvocationOutcome::Response, NOW).is_none());
    }

    #[test]
    fn no_context_starts_a_root_in_lambdas_trace() {
        let mut s = spans(SpanSettings::default());
        let (started, _) = s.start(&next("r1", Some(PASSTHROUGH), b"{}"), NOW);
        assert!(started.sampled);
        let span = s.end("r1", InvocationOutcome::Response, NOW).unwrap();
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.trace_id[..4], [0x57, 0x59, 0xe9, 0x88]);
        // Without any header: a new trace stamped with the time.
        let (started, _) = s.start(&next("r2", None, b"{}"), NOW);
        assert!(
            started
                .runtime_trace_header
                .unwrap()
                .starts_with("Root=1-6553f100-")
        );
    }

    #[test]
    fn unsampled_callers_record_nothing() {
        let mut s = spans(SpanSettings::default());
        let event = json!({"httpMethod":"GET","requestContext":{},"headers":{"X-Amzn-Trace-Id":"Root=1-67891233-abcdef012345678912345678;Parent=463ac35c9f6413ad;Sampled=0"}}).to_string();
        let (started, _) = s.start(&next("r1", Some(PASSTHROUGH), event.as_bytes()), NOW);
        assert!(!started.sampled);
        assert_eq!(
            started.runtime_trace_header.as_deref(),
            Some("Root=1-67891233-abcdef012345678912345678;Parent=463ac35c9f6413ad;Sampled=0")
        );
        assert_eq!(s.owner_context("r1"), Some(None));
        assert!(s.end("r1", InvocationOutcome::Response, NOW).is_none());
    }

    #[test]
    fn baggage_allow_list_links_and_errors() {
        let settings = SpanSettings {
            baggage_attributes: vec!["user.id".into(), "faas.trigger".into()],
            ..SpanSettings::default()
        };
        let mut s = spans(settings);
        let event = json!({"version":"2.0","requestContext":{"http":{}},"headers":{
            "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "baggage":"user.id=alice,secret=x,faas.trigger=evil"}})
        .to_string();
        s.start(&next("r1", Some(ACTIVE), event.as_bytes()), NOW);
        let span = s
            .end(
                "r1",
                InvocationOutcome::Error {
                    error_type: "ValueError".into(),
                    message: Some("boom".into()),
                },
                NOW,
            )
            .unwrap();
        assert_eq!(str_attr(&span.attributes, "user.id"), Some("alice"));
        assert_eq!(str_attr(&span.attributes, "secret"), None);
        assert_eq!(str_attr(&span.attributes, "faas.trigger"), Some("http"));
        assert_eq!(str_attr(&span.attributes, "error.type"), Some("ValueError"));
        assert_eq!(span.status.unwrap().message, "ValueError: boom");
        // Active tracing won; the W3C caller is a link.
        assert_eq!(span.links.len(), 1);
        assert_eq!(span.links[0].trace_id[0], 0x4b);
    }

    #[test]
    fn a_new_next_fails_the_unanswered_invocation() {
        let mut s = spans(SpanSettings::default());
        s.start(&next("r1", None, b"{}"), NOW);
        let (_, failed) = s.start(&next("r2", None, b"{}"), NOW + 10);
        assert_eq!(failed.len(), 1);
        assert_eq!(
            str_attr(&failed[0].attributes, "error.type"),
            Some("Runtime.NoResponse")
        );
        assert_eq!(
            str_attr(&failed[0].attributes, "faas.invocation_id"),
            Some("r1")
        );
        let f = s.fail_open("shutdown", NOW + 20);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert!(!s.is_open("r2"));
        let mut warm = spans(SpanSettings {
            provisioned: true,
            ..SpanSettings::default()
        });
        warm.start(&next("p1", None, b"{}"), NOW);
        let span = warm.end("p1", InvocationOutcome::Response, NOW).unwrap();
        assert!(span.attributes.contains(&kv_bool("faas.coldstart", false)));
        // Cold start only once.
        assert_eq!(
            failed[0]
                .attributes
                .iter()
                .find(|k| k.key == "faas.coldstart")
                .unwrap()
                .value,
            Some(AnyValue {
                value: Some(any_value::Value::BoolValue(true))
            })
        );
    }

    fn rs(scope: &str, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_functions_own_server_span_takes_the_proxys_place() {
        let mut s = spans(SpanSettings::default());
        s.start(&next("r1", Some(ACTIVE), b"{}"), NOW);
        let ours = s.end("r1", InvocationOutcome::Response, NOW + 9).unwrap();
        let theirs = Span {
            trace_id: ours.trace_id.clone(),
            span_id: vec![0xc1; 8],
            parent_span_id: ours.span_id.clone(),
            kind: SpanKind::Server as i32,
            attributes: vec![
                kv_str("faas.execution", "r1"),
                kv_str("faas.trigger", "mine"),
            ],
            ..Default::default()
        };
        let child = Span {
            trace_id: ours.trace_id.clone(),
            span_id: vec![0xc2; 8],
            parent_span_id: vec![0xc1; 8],
            kind: SpanKind::Client as i32,
            ..Default::default()
        };
        let mut batch = vec![
            s.resource_spans(vec![ours.clone()]),
            rs("sdk", vec![theirs, child]),
        ];
        assert_eq!(
            merge_function_spans(&mut batch, &mut Replaced::default()),
            1
        );
        assert!(batch[0].scope_spans.is_empty());
        let merged = &batch[1].scope_spans[0].spans[0];
        assert_eq!(merged.parent_span_id, ours.parent_span_id);
        assert_eq!(str_attr(&merged.attributes, "faas.trigger"), Some("mine"));
        assert_eq!(
            str_attr(&merged.attributes, "cloud.account.id"),
            Some("123456789012")
        );
        assert_eq!(
            batch[1].scope_spans[0].spans[1].parent_span_id,
            vec![0xc1; 8]
        );

        // A span built later under the replaced proxy span (Init) moves under the replacement.
        let mut replaced = Replaced::default();
        let mut first = vec![
            s.resource_spans(vec![ours.clone()]),
            rs(
                "sdk",
                vec![Span {
                    trace_id: ours.trace_id.clone(),
                    span_id: vec![0xc1; 8],
                    parent_span_id: ours.span_id.clone(),
                    kind: SpanKind::Server as i32,
                    attributes: vec![kv_str("faas.invocation_id", "r1")],
                    ..Default::default()
                }],
            ),
        ];
        assert_eq!(merge_function_spans(&mut first, &mut replaced), 1);
        let mut later = vec![rs(
            "platform",
            vec![Span {
                trace_id: ours.trace_id.clone(),
                span_id: vec![0xc9; 8],
                parent_span_id: ours.span_id.clone(),
                name: "Init".into(),
                ..Default::default()
            }],
        )];
        assert_eq!(merge_function_spans(&mut later, &mut replaced), 0);
        assert_eq!(
            later[0].scope_spans[0].spans[0].parent_span_id,
            vec![0xc1; 8]
        );

        // Another request's span is left alone.
        s.start(&next("r2", Some(ACTIVE), b"{}"), NOW);
        let ours = s.end("r2", InvocationOutcome::Response, NOW).unwrap();
        let other = Span {
            trace_id: ours.trace_id.clone(),
            span_id: vec![0xc3; 8],
            parent_span_id: ours.span_id.clone(),
            kind: SpanKind::Server as i32,
            attributes: vec![kv_str("faas.invocation_id", "r9")],
            ..Default::default()
        };
        let mut batch = vec![s.resource_spans(vec![ours]), rs("sdk", vec![other])];
        assert_eq!(
            merge_function_spans(&mut batch, &mut Replaced::default()),
            0
        );
        assert_eq!(batch[0].scope_spans[0].spans.len(), 1);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A batch: proxy spans for requests 0..n, and SDK spans that may or may not be the
        /// function's own FaaS span for one of them (child, sibling, or elsewhere).
        fn batch() -> impl Strategy<Value = Vec<ResourceSpans>> {
            let sdk_span = (0u8..4, 0u8..6, 0u8..3, any::<bool>(), 0u8..4);
            (1u8..4, prop::collection::vec(sdk_span, 0..10)).prop_map(|(n, sdk)| {
                let trace = vec![7u8; 16];
                let ours: Vec<Span> = (0..n)
                    .map(|i| Span {
                        trace_id: trace.clone(),
                        span_id: vec![0x10 + i; 8],
                        parent_span_id: vec![0x01; 8],
                        kind: SpanKind::Server as i32,
                        attributes: vec![kv_str("faas.invocation_id", &format!("r{i}"))],
                        ..Default::default()
                    })
                    .collect();
                let theirs: Vec<Span> = sdk
                    .into_iter()
                    .enumerate()
                    .map(|(j, (req, parent, kind, exec_key, id))| {
                        let parent_span_id = match parent {
                            0..=3 => vec![0x10 + parent; 8],
                            4 => vec![0x01; 8],
                            _ => vec![0x20 + id; 8],
                        };
                        let key = if exec_key {
                            "faas.execution"
                        } else {
                            "faas.invocation_id"
                        };
                        Span {
                            trace_id: trace.clone(),
                            span_id: vec![0x20 + u8::try_from(j).unwrap(); 8],
                            parent_span_id,
                            kind: [SpanKind::Server, SpanKind::Internal, SpanKind::Client]
                                [kind as usize] as i32,
                            attributes: vec![kv_str(key, &format!("r{req}"))],
                            ..Default::default()
                        }
                    })
                    .collect();
                vec![
                    ResourceSpans {
                        scope_spans: vec![ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: SCOPE_NAME.into(),
                                ..Default::default()
                            }),
                            spans: ours,
                            schema_url: String::new(),
                        }],
                        ..Default::default()
                    },
                    rs("sdk", theirs),
                ]
            })
        }

        fn all(batch: &[ResourceSpans]) -> Vec<Span> {
            batch
                .iter()
                .flat_map(|r| r.scope_spans.iter().flat_map(|s| s.spans.iter().cloned()))
                .collect()
        }

        proptest! {
            #[test]
            fn merging_loses_no_sdk_span_and_leaves_no_dangling_parent(mut b in batch()) {
                let before = all(&b);
                let proxy_ids: HashSet<Vec<u8>> = b[0].scope_spans[0].spans.iter().map(|s| s.span_id.clone()).collect();
                let mut replaced = Replaced::default();
                let removed = merge_function_spans(&mut b, &mut replaced);
                let after = all(&b);
                prop_assert_eq!(after.len() + removed, before.len());
                // Only proxy spans are removed, and every SDK span is still there.
                let after_ids: HashSet<Vec<u8>> = after.iter().map(|s| s.span_id.clone()).collect();
                for s in &before {
                    if !proxy_ids.contains(&s.span_id) {
                        prop_assert!(after_ids.contains(&s.span_id));
                    }
                }
                // No span points at a proxy span that was removed.
                let removed_ids: Vec<&Vec<u8>> = proxy_ids.iter().filter(|id| !after_ids.contains(*id)).collect();
                prop_assert_eq!(removed_ids.len(), removed);
                for s in &after {
                    prop_assert!(!removed_ids.contains(&&s.parent_span_id), "{:?}", s);
                }
                // Merging twice changes nothing more.
                let again = merge_function_spans(&mut b, &mut replaced);
                prop_assert_eq!(again, 0);
            }

            #[test]
            fn the_encoded_merge_is_the_merge(b in batch(), per_request in 1usize..4) {
                // The same spans as buffered requests: the proxy's request (marked when
                // encoded), the SDK spans a few per request, and a request that cannot take part.
                let filler = rs("other", vec![Span {
                    trace_id: vec![9; 16],
                    span_id: vec![0x99; 8],
                    name: "unrelated".into(),
                    ..Default::default()
                }]);
                let later = rs("platform", vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![0x77; 8],
                    parent_span_id: vec![0x10; 8],
                    name: "Init".into(),
                    ..Default::default()
                }]);
                let mut requests = vec![
                    crate::buffer::encode_request(vec![filler.clone()]),
                    crate::buffer::encode_request(vec![b[0].clone()]),
                ];
                for chunk in b[1].scope_spans[0].spans.chunks(per_request) {
                    requests.push(crate::buffer::encode_request(vec![rs("sdk", chunk.to_vec())]));
                }
                // Every request was translated ahead (the marker stands for its documents).
                for r in &mut requests {
                    r.prepared = Some(Box::new(crate::xray::Translation {
                        invalid_spans: r.spans,
                        ..Default::default()
                    }));
                }
                let originals = requests.clone();
                let mut encoded = SpanBatch::from_requests(requests);
                let spans_before = encoded.spans;
                let mut decoded = encoded.decode().unwrap();
                let (mut r1, mut r2) = (Replaced::default(), Replaced::default());
                let removed = merge_function_spans(&mut decoded, &mut r1);
                let removed_encoded = merge_encoded_function_spans(&mut encoded, &mut r2);
                prop_assert_eq!(removed, removed_encoded);
                // A request the merge changed has no documents, so the flush translates what it
                // now holds; one it left as it was keeps its own (and its documents).
                for r in &encoded.requests {
                    match originals.iter().find(|o| o.bytes == r.bytes) {
                        Some(o) => prop_assert_eq!(&r.prepared, &o.prepared),
                        None => prop_assert!(r.prepared.is_none()),
                    }
                }
                prop_assert!(encoded.requests[0].prepared.is_some());
                prop_assert_eq!(encoded.spans, spans_before - removed);
                prop_assert_eq!(all(&encoded.decode().unwrap()), all(&decoded));
                // The request that could not take part was not decoded and encoded again.
                prop_assert_eq!(&encoded.requests[0].bytes, &crate::buffer::encode_request(vec![filler.clone()]).bytes);

                // The next flush: replacements apply to spans built later, and only then.
                let mut decoded = vec![filler.clone(), later.clone()];
                let mut encoded = SpanBatch::from_requests(vec![
                    crate::buffer::encode_request(vec![filler]),
                    crate::buffer::encode_request(vec![later]),
                ]);
                prop_assert_eq!(merge_function_spans(&mut decoded, &mut r1), 0);
                prop_assert_eq!(merge_encoded_function_spans(&mut encoded, &mut r2), 0);
                prop_assert_eq!(all(&encoded.decode().unwrap()), all(&decoded));
            }
        }
    }
}
