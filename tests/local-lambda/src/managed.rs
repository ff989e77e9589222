//! # Lambda Managed Instances (LMI) mode
//!
//! Lambda selects it when the function's environment has
//! `AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances`; so does this emulator (the CLI's
//! `--managed-instances N` only sets that variable and `AWS_LAMBDA_MAX_CONCURRENCY=N`). One
//! environment then runs up to `AWS_LAMBDA_MAX_CONCURRENCY` invocations at once:
//!
//! ```text
//!  init ──▶ extensions register (SHUTDOWN only) ──▶ runtime ──first invocation/next──▶ ready
//!  invoke ──▶ an outstanding invocation/next gets the event ──response|error by request id──▶ report
//!         └─ none outstanding ──▶ rejected: 400 {"errorType":"Runtime.Unavailable"}
//!  process exit while ready ──▶ in-flight invocations fail ──▶ shutdown(failure)
//!  shutdown ──▶ in-flight invocations end ──▶ SIGTERM runtime (600 ms) ──▶ Telemetry flush
//!           ──▶ SHUTDOWN to extensions (deadline start + 2 s) ──▶ SIGKILL at the deadline
//! ```
//!
//! ## Where it follows AWS's Runtime Interface Emulator
//!
//! The reference is the RIE's `internal/lambda-managed-instances` as built by
//! `tests/tools/build-rie.sh` (pseudo-version `v0.0.0-20261030222936-bef5c4ba774d`), read in its
//! source and checked against the binary:
//! - `AWS_LAMBDA_MAX_CONCURRENCY` defaults to 1 (a value that is not a positive integer warns and
//!   falls back to 1); every process gets it (that RIE version moved it into the variables the
//!   extensions share; older ones gave it to the runtime only). No freeze, whatever
//!   [`crate::Config::freeze`] says.
//! - Extensions register for `SHUTDOWN` only: any other event is answered
//!   `403 {"errorMessage":"INVOKE: ErrorInvalidEventType","errorType":"Extension.InvalidEventType"}`
//!   (the first offending event names the message); internal extensions may register no event
//!   at all (`403 Extension.InvalidEventType`, "No events allowed for internal extensions").
//!   `event/next` only ever returns SHUTDOWN.
//! - Every runtime `invocation/next` is an idle worker; an invoke takes the oldest, none left is
//!   `400`, header `Error-Type: Runtime.Unavailable`, body `{"errorType":"Runtime.Unavailable"}`,
//!   and no platform event. The RIE does not cap outstanding `/next` calls at the concurrency
//!   (its pool holds 10,000), nor does this emulator: the rejection depends on idle workers only.
//!   Each event carries the usual headers plus `Lambda-Runtime-Invocation-Id`.
//! - Init ends when the runtime called `/next` once and every registered extension is in
//!   `event/next`. `platform.initStart` carries `instanceId` (the log stream name),
//!   `instanceMaxMemory` (bytes), `runtimeVersion`/`runtimeVersionArn` (empty);
//!   `platform.extension` records come once per extension at the end of init, before
//!   `platform.initReport`; an init failure reports `error` (or `timeout`), never `failure`.
//! - No `platform.runtimeDone`. `platform.start` adds `functionArn`. `platform.report` has
//!   `metrics: {durationMs}` only (start to the end of the answer, 3 decimals) and the spans
//!   `responseLatency` (start to the answer's arrival) and `responseDuration` (its body), each
//!   only when it happened. Events of concurrent invocations interleave as they happen.
//! - A timeout ends that invocation only (`Sandbox.Timedout`, "Task timed out after 3.00
//!   seconds"); the worker stays busy until the runtime answers, and that late answer gets
//!   `410 {"errorMessage":"Invoke timeout","errorType":"InvokeTimeout"}`; the environment is not
//!   reset. An answer for an unknown or already answered id gets `400 InvalidRequestID` (the
//!   RIE's answer once the first one is through; its `Runtime.InvokeResponseInProgress` for
//!   an overlapping second answer does not happen here, as bodies are read whole first).
//! - Telemetry API: only `schemaVersion` `2025-01-29`; anything else is `400` with
//!   `Content-Type: text/plain; charset=utf-8` and the RIE's `ValidationError` message
//!   (`schema validation error: jsonschema: '/schemaVersion' does not validate with
//!   file://<cwd>/telemetry-subscription-schema.json#/properties/schemaVersion/enum: value must
//!   be "2025-01-29"`). The path stays `/2022-07-01/telemetry`.
//! - A process that exits while the environment is ready fails it: the in-flight invocations
//!   end with `Runtime.ExitError` or `Extension.Crash` (status `error`), then shutdown `failure`.
//! - Shutdown: the in-flight invocations end first (`Client.ExecutionEnvironmentShutDown`,
//!   status `failure`); then SIGTERM to the runtime's process group, SIGKILL after
//!   [`RUNTIME_SHUTDOWN_GRACE`] (600 ms); with no extension at all the runtime is SIGKILLed at
//!   once; then the Telemetry API is flushed (up to 1 s); then SHUTDOWN to the extensions
//!   registered for it, `deadlineMs` = shutdown start + 2 s, SIGKILL at that deadline. Reasons
//!   are `spindown` and `failure` only.
//!
//! ## What the timeline records
//!
//! Besides the kinds of on-demand mode (`process.start`, `process.exit`, `extension.register`,
//! `extension.next`, `extension.event_delivered`, `telemetry.*`, `shutdown.end`):
//! `runtime.next` `{worker, idleWorkers, inFlight, peer}` (one per call, `worker` numbers the
//! call), `runtime.next_cancelled` `{worker}`, `runtime.event_delivered` `{requestId, worker}`,
//! `invoke.start` `{requestId, worker, inFlight, coldStart, traceHeader}`, `invoke.rejected`
//! `{errorType, inFlight}`, `invoke.end` `{requestId, status, errorType, durationMs, worker,
//! inFlight}`, `extension.register_refused` `{name, events, errorType, errorMessage}`,
//! `environment.failed` `{role, name, errorType, exitCode, signal}`, `shutdown.start`
//! `{reason, deadlineMs, abortedRequestIds}`, `runtime.sigterm` `{pid}`, `runtime.sigkill`
//! `{pid, afterMs}`, `extensions.shutdown` `{names, reason, deadlineMs}`.
//!
//! ## Where it deliberately differs
//!
//! - An INVOKE registration fails the init (`Extension.InvalidEventType`) as soon as that
//!   extension exits, or [`REFUSAL_GRACE`] (500 ms) after the refusal, even if it registers
//!   again for SHUTDOWN only; the RIE leaves it unregistered, accepts a second registration,
//!   and fails only when it exits (`Extension.Crash`) or at the init timeout.
//! - After a failed environment the next invoke initialises a new one (Lambda replaces failed
//!   environments); the RIE answers every later invoke `400 Client.ExecutionEnvironmentUnhealthy`
//!   and exits. An invoke that had to initialise is marked `coldStart`, and a failed init is
//!   returned as that invoke's result (no `platform.report`).
//! - The Telemetry API's refusal body is valid JSON (the RIE's embeds unescaped quotes); batches
//!   go to the destination's path (the RIE posts to `/`).
//! - `Lambda-Runtime-Trace-Id` is always sent (the RIE omits it without a caller header), and
//!   `deadlineMs`, memory and function name come from [`crate::Config`] as in on-demand mode
//!   (the RIE's defaults are 300 s and 3008 MB). The runtime's error type is taken as posted
//!   (the RIE maps names that do not match `(Runtime|Function).Xx+` to `Function.Unknown`).
//! - Not emulated: the metadata endpoint (`AWS_LAMBDA_METADATA_API`/`_TOKEN`), long-running
//!   invocations (reserve/reconnect), `Telemetry.SubscriptionClosed` after init, response
//!   streaming limits, `platform.logsDropped`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::http::{Request, Response};
use crate::ids;
use crate::lifecycle::{self, InitFailure, ms};
use crate::model::{
    InvokeError, InvokeRequest, InvokeResult, InvokeStatus, InvokeTimings, Rejection,
};
use crate::process::{self, Role};
use crate::state::{Abort, Current, Outcome, Phase, RuntimeEvent, Shared, State, Worker};
use crate::{Config, ShutdownReport};

/// `AWS_LAMBDA_INITIALIZATION_TYPE` on Lambda Managed Instances.
pub const INITIALIZATION_TYPE: &str = "lambda-managed-instances";
/// The variable that selects the mode.
pub const INITIALIZATION_TYPE_VAR: &str = "AWS_LAMBDA_INITIALIZATION_TYPE";
/// Invocations one environment runs at once.
pub const MAX_CONCURRENCY_VAR: &str = "AWS_LAMBDA_MAX_CONCURRENCY";
/// The RIE's default for a missing or malformed `AWS_LAMBDA_MAX_CONCURRENCY`.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 1;
/// SIGTERM to SIGKILL for the runtime at shutdown (the RIE's `defaultRuntimeShutdownTimeout`).
pub const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_millis(600);
/// The one Telemetry API schema version accepted.
pub const SCHEMA_VERSION: &str = "2025-01-29";
/// Register answer for an event other than SHUTDOWN.
pub const INVALID_EVENT_TYPE: &str = "Extension.InvalidEventType";
/// Invoke answer when no runtime worker waits in `invocation/next`.
pub const RUNTIME_UNAVAILABLE: &str = "Runtime.Unavailable";
/// Invoke answer when the environment is not ready (initialising, shutting down).
pub const ENVIRONMENT_UNHEALTHY: &str = "Client.ExecutionEnvironmentUnhealthy";
/// What in-flight invocations end with when the environment spins down.
pub const ENVIRONMENT_SHUTDOWN: &str = "Client.ExecutionEnvironmentShutDown";
/// How long an extension whose registration was refused has to exit before the init fails
/// anyway.
pub const REFUSAL_GRACE: Duration = Duration::from_millis(500);
/// Request ids of timed-out invocations remembered for their late answers.
const TIMED_OUT_MEMORY: usize = 1024;

/// The Lambda Managed Instances settings of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManagedInstances {
    /// `AWS_LAMBDA_MAX_CONCURRENCY`.
    pub max_concurrency: u32,
}

impl ManagedInstances {
    /// `Some` when the function's environment selects the mode.
    pub fn from_config(cfg: &Config) -> Option<Self> {
        (cfg.env_var(INITIALIZATION_TYPE_VAR) == Some(INITIALIZATION_TYPE)).then(|| Self {
            max_concurrency: parse_max_concurrency(cfg.env_var(MAX_CONCURRENCY_VAR)),
        })
    }
}

fn parse_max_concurrency(value: Option<&str>) -> u32 {
    let Some(v) = value else {
        return DEFAULT_MAX_CONCURRENCY;
    };
    match v.trim().parse::<u32>() {
        Ok(n) if n >= 1 => n,
        _ => {
            tracing::warn!(
                variable = MAX_CONCURRENCY_VAR,
                value = v,
                "not a positive integer; using {DEFAULT_MAX_CONCURRENCY}"
            );
            DEFAULT_MAX_CONCURRENCY
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn no_env() -> Response {
    Response::error(
        500,
        "ServiceException",
        "the execution environment is not running",
    )
}

fn invalid_request_id() -> Response {
    Response::error(400, "InvalidRequestID", "Invalid request ID")
}

// ------------------------------------------------------------------ platform records

/// `platform.initStart` as the RIE's LMI mode sends it.
pub fn init_start_record(cfg: &Config, log_stream: &str) -> Value {
    json!({
        "initializationType": INITIALIZATION_TYPE,
        "runtimeVersion": "",
        "runtimeVersionArn": "",
        "functionName": cfg.function_name,
        "functionVersion": cfg.function_version,
        "instanceId": log_stream,
        "instanceMaxMemory": u64::from(cfg.memory_mb) * 1024 * 1024,
        "phase": "init",
    })
}

/// `platform.initReport` as the RIE's LMI mode sends it.
pub fn init_report_record(status: &str, error_type: Option<&str>, duration_ms: f64) -> Value {
    let mut record = json!({
        "initializationType": INITIALIZATION_TYPE,
        "metrics": {"durationMs": round3(duration_ms)},
        "phase": "init",
        "status": status,
    });
    if let Some(t) = error_type {
        record["errorType"] = json!(t);
    }
    record
}

/// One `platform.extension` per extension, at the end of init.
pub(crate) fn emit_extension_states(shared: &Shared) {
    let records: Vec<Value> = shared
        .lock()
        .env
        .as_ref()
        .map(|env| {
            env.extensions
                .iter()
                .map(|e| {
                    let state = if e.ready {
                        "Ready"
                    } else if e.registered() {
                        "Registered"
                    } else if e.exited() {
                        "Exited"
                    } else {
                        "Started"
                    };
                    let mut r = json!({"name": e.name, "state": state, "events": e.events});
                    if let Some(t) = e.init_error.as_ref().or(e.exit_error.as_ref()) {
                        r["errorType"] = json!(t);
                    }
                    r
                })
                .collect()
        })
        .unwrap_or_default();
    for r in records {
        shared.hub.emit("platform.extension", r);
    }
}

/// `platform.report`: `metrics.durationMs` only, plus the response spans that happened.
fn report_record(
    shared: &Shared,
    cur: &Current,
    status: InvokeStatus,
    error_type: Option<&str>,
    sent: Instant,
) -> Value {
    let mut record = json!({
        "requestId": cur.request_id,
        "status": status.as_str(),
        "metrics": {"durationMs": round3(ms(sent.saturating_duration_since(cur.started)))},
    });
    if cur.trace.sampled {
        record["tracing"] =
            json!({"spanId": cur.span_id, "type": "X-Amzn-Trace-Id", "value": cur.trace.header});
    }
    let mut spans = Vec::new();
    if let Some(head) = cur.response_head_at {
        spans.push(json!({"name": "responseLatency",
            "start": crate::time::rfc3339_ms(cur.started_epoch_ms),
            "durationMs": round3(ms(head.saturating_duration_since(cur.started)))}));
        if let Some(done) = cur.response_done_at {
            spans.push(json!({"name": "responseDuration",
                "start": crate::time::rfc3339_ms(shared.epoch_ms_of(cur, head)),
                "durationMs": round3(ms(done.saturating_duration_since(head)))}));
        }
    }
    if !spans.is_empty() {
        record["spans"] = Value::Array(spans);
    }
    if let Some(t) = error_type {
        record["errorType"] = json!(t);
    }
    record
}

/// Re-check the init when [`REFUSAL_GRACE`] is over.
pub(crate) fn wake_after_refusal(shared: &Arc<Shared>) {
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        tokio::time::sleep(REFUSAL_GRACE).await;
        shared.bump();
    });
}

// ------------------------------------------------------------------ Runtime API

/// Takes an idle worker out of the queue if its `invocation/next` call goes away first.
struct IdleGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for IdleGuard<'_> {
    fn drop(&mut self) {
        let removed = {
            let mut st = self.shared.lock();
            st.env.as_mut().is_some_and(|env| {
                let before = env.idle_workers.len();
                env.idle_workers.retain(|w| w.id != self.id);
                env.idle_workers.len() != before
            })
        };
        if removed {
            self.shared
                .timeline
                .record("runtime.next_cancelled", json!({"worker": self.id}));
            self.shared.bump();
        }
    }
}

/// `GET /runtime/invocation/next`: one more idle worker; answers with the event an invoke
/// hands it.
pub(crate) async fn runtime_next(shared: &Arc<Shared>, req: &Request) -> Response {
    let (rx, id, first, generation, idle, inflight) = {
        let mut st = shared.lock();
        let Some(env) = st.env.as_mut() else {
            return no_env();
        };
        env.runtime_ready = true;
        env.runtime_next_count += 1;
        let first = env.runtime_next_count == 1 && env.phase == Phase::Init;
        env.next_worker_id += 1;
        let id = env.next_worker_id;
        let (tx, rx) = oneshot::channel();
        env.idle_workers.push_back(Worker { id, tx });
        (
            rx,
            id,
            first,
            env.generation,
            env.idle_workers.len(),
            env.inflight.len(),
        )
    };
    shared.timeline.record(
        "runtime.next",
        json!({"generation": generation, "worker": id, "idleWorkers": idle, "inFlight": inflight,
               "peer": req.peer.to_string()}),
    );
    if first {
        shared.hub.emit(
            "platform.initRuntimeDone",
            json!({"initializationType": INITIALIZATION_TYPE, "phase": "init", "status": "success"}),
        );
    }
    shared.bump();
    let guard = IdleGuard { shared, id };
    let ev = match rx.await {
        Ok(ev) => ev,
        // The environment is gone: the runtime is about to be stopped.
        Err(_) => std::future::pending().await,
    };
    drop(guard);
    shared.timeline.record(
        "runtime.event_delivered",
        json!({"requestId": ev.request_id, "worker": id}),
    );
    crate::api::event_response(ev)
}

/// Record the runtime's answer for in-flight invocation `id`.
pub(crate) fn finish(
    shared: &Shared,
    id: &str,
    req: &Request,
    outcome: Outcome,
) -> Result<(), Response> {
    let now = Instant::now();
    {
        let mut st = shared.lock();
        let Some(env) = st.env.as_mut() else {
            return Err(no_env());
        };
        let Some(cur) = env.inflight_mut(id) else {
            if let Some(pos) = env.timed_out.iter().position(|t| t == id) {
                env.timed_out.remove(pos);
                return Err(Response::error(410, "InvokeTimeout", "Invoke timeout"));
            }
            return Err(invalid_request_id());
        };
        if cur.outcome.is_some() || cur.aborted.is_some() {
            return Err(invalid_request_id());
        }
        cur.first_byte_at = Some(req.body_first_byte_at.max(cur.started));
        cur.response_head_at = Some(req.head_at.max(cur.started));
        cur.response_done_at = Some(req.body_done_at.max(cur.started));
        cur.runtime_done_at = Some(now);
        cur.outcome = Some(outcome);
    }
    shared.bump();
    Ok(())
}

// ------------------------------------------------------------------ invoke

/// Initialise the environment unless it is ready (a failed one is shut down first).
pub(crate) async fn ensure_ready(shared: &Arc<Shared>) -> Result<(), InitFailure> {
    let (exists, ready) = {
        let st = shared.lock();
        (
            st.env.is_some(),
            st.env.as_ref().is_some_and(|e| e.phase == Phase::Idle),
        )
    };
    if ready {
        return Ok(());
    }
    if exists {
        lifecycle::reset(shared, "failure").await;
    }
    lifecycle::init(shared).await.map(|_| ())
}

/// An invoke whose init failed: its result, without a `platform.report` (Lambda Managed
/// Instances initialise ahead of invokes).
pub(crate) fn init_failed_result(
    shared: &Shared,
    req: &InvokeRequest,
    f: InitFailure,
) -> InvokeResult {
    let trace = ids::invocation_trace(
        req.trace_header.as_deref(),
        shared.cfg.active_tracing,
        crate::time::now_epoch_ms() / 1000,
    );
    lifecycle::failed_init_result(shared, ids::request_id(), trace.header, f)
}

enum Waited {
    Answered,
    Aborted(Abort),
}

/// Run one invocation on an idle worker of a ready environment, concurrently with others;
/// rejected when no worker waits in `invocation/next`.
pub(crate) async fn invoke(
    shared: &Arc<Shared>,
    req: InvokeRequest,
) -> Result<InvokeResult, Rejection> {
    let cfg = &shared.cfg;
    let mut cur = Current::start(req.trace_header.as_deref(), cfg.active_tracing, cfg.timeout);
    let request_id = cur.request_id.clone();
    let trace = cur.trace.clone();
    let started = cur.started;
    let deadline = cur.deadline;
    let event = RuntimeEvent {
        request_id: request_id.clone(),
        deadline_ms: cur.deadline_epoch_ms,
        function_arn: cfg.function_arn(),
        trace_header: trace.header.clone(),
        client_context: req.client_context.clone(),
        cognito_identity: req.cognito_identity.clone(),
        payload: req.payload,
        invocation_id: Some(uuid::Uuid::new_v4().to_string()),
    };

    // Hand the event to the oldest idle worker whose call is still there.
    let dispatched = {
        let mut guard = shared.lock();
        let st: &mut State = &mut guard;
        match st.env.as_mut() {
            Some(env) if env.phase == Phase::Idle => {
                let mut event = event;
                let worker = loop {
                    let Some(w) = env.idle_workers.pop_front() else {
                        break None;
                    };
                    match w.tx.send(event) {
                        Ok(()) => break Some(w.id),
                        Err(back) => event = back,
                    }
                };
                match worker {
                    Some(w) => {
                        cur.worker = Some(w);
                        env.inflight.push(cur.clone());
                        Ok((w, env.inflight.len(), st.pending_init_ms.take()))
                    }
                    None => Err((RUNTIME_UNAVAILABLE, env.inflight.len())),
                }
            }
            Some(env) => Err((ENVIRONMENT_UNHEALTHY, env.inflight.len())),
            None => Err((ENVIRONMENT_UNHEALTHY, 0)),
        }
    };
    let (worker, inflight, init_ms) = match dispatched {
        Ok(d) => d,
        Err((error_type, inflight)) => {
            shared.timeline.record(
                "invoke.rejected",
                json!({"errorType": error_type, "inFlight": inflight, "idleWorkers": 0}),
            );
            return Err(Rejection {
                http_status: 400,
                error_type: error_type.to_owned(),
                body: json!({"errorType": error_type}).to_string(),
            });
        }
    };
    shared.timeline.record_at(
        started,
        "invoke.start",
        json!({"requestId": request_id, "traceHeader": trace.header, "coldStart": init_ms.is_some(),
               "worker": worker, "inFlight": inflight}),
    );
    let mut start_record = json!({"requestId": request_id, "version": cfg.function_version,
                                  "functionArn": cfg.function_arn()});
    if trace.sampled {
        start_record["tracing"] =
            json!({"spanId": cur.span_id, "type": "X-Amzn-Trace-Id", "value": trace.header});
    }
    shared.hub.emit("platform.start", start_record);
    shared.bump();

    // The runtime answers, the environment ends the invocation, or the timeout elapses.
    let waited = shared
        .wait_until(Some(deadline), |st| {
            let Some(c) = st.env.as_mut().and_then(|e| e.inflight_mut(&request_id)) else {
                return Some(Waited::Aborted(Abort {
                    status: InvokeStatus::Failure,
                    error_type: "Sandbox.Failure".to_owned(),
                    message: "the execution environment went away".to_owned(),
                }));
            };
            if c.outcome.is_some() {
                return Some(Waited::Answered);
            }
            c.aborted.clone().map(Waited::Aborted)
        })
        .await;
    let now = Instant::now();
    let (taken, left) = {
        let mut st = shared.lock();
        match st.env.as_mut() {
            Some(env) => {
                let taken = env
                    .inflight
                    .iter()
                    .position(|c| c.request_id == request_id)
                    .map(|p| env.inflight.remove(p));
                if waited.is_none() {
                    env.timed_out.push_back(request_id.clone());
                    while env.timed_out.len() > TIMED_OUT_MEMORY {
                        env.timed_out.pop_front();
                    }
                }
                (taken, env.inflight.len())
            }
            None => (None, 0),
        }
    };
    let cur = taken.unwrap_or(cur);

    let mut response = None;
    let mut error = None;
    let mut aborted = false;
    let status = match (&waited, &cur.outcome) {
        (Some(Waited::Answered), Some(Outcome::Response { body })) => {
            response = Some(body.clone());
            InvokeStatus::Success
        }
        (
            Some(Waited::Answered),
            Some(Outcome::Error {
                error_type,
                body,
                status,
            }),
        ) => {
            let message = serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|v| {
                    v.get("errorMessage")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            error = Some(InvokeError {
                error_type: error_type.clone(),
                error_message: message,
                body: body.clone(),
            });
            *status
        }
        (Some(Waited::Aborted(a)), _) => {
            aborted = true;
            error = Some(abort_error(a));
            a.status
        }
        _ => {
            let message = format!(
                "Task timed out after {:.2} seconds",
                cfg.timeout.as_secs_f64()
            );
            error = Some(InvokeError {
                body: json!({"errorMessage": message, "errorType": "Sandbox.Timedout"}).to_string(),
                error_type: "Sandbox.Timedout".to_owned(),
                error_message: message,
            });
            InvokeStatus::Timeout
        }
    };
    // The answer went to the caller when its body was complete; otherwise now.
    let sent = match &waited {
        Some(Waited::Answered) => cur.response_done_at.unwrap_or(now),
        _ => now,
    };
    let error_type = error.as_ref().map(|e| e.error_type.as_str());
    shared.hub.emit(
        "platform.report",
        report_record(shared, &cur, status, error_type, sent),
    );
    let duration_ms = ms(sent.saturating_duration_since(started));
    shared.timeline.record_at(
        sent,
        "invoke.end",
        json!({"requestId": request_id, "status": status.as_str(), "errorType": error_type,
               "durationMs": duration_ms, "worker": worker, "inFlight": left}),
    );
    shared.bump();

    let done = cur
        .response_done_at
        .filter(|_| matches!(waited, Some(Waited::Answered)));
    let timings = InvokeTimings {
        init_ms,
        started_at_ms: shared.timeline.ms(started),
        runtime_done_at_ms: done.map(|t| shared.timeline.ms(t)),
        completed_at_ms: shared.timeline.ms(sent),
        runtime_ms: done.map(|t| ms(t.saturating_duration_since(started))),
        duration_ms,
        post_runtime_ms: done.map(|t| ms(sent.saturating_duration_since(t))),
        response_latency_ms: cur
            .response_head_at
            .map(|t| ms(t.saturating_duration_since(started))),
        response_duration_ms: match (cur.response_head_at, done) {
            (Some(a), Some(b)) => Some(ms(b.saturating_duration_since(a))),
            _ => None,
        },
        extensions: Vec::new(),
    };
    Ok(InvokeResult {
        request_id,
        status,
        response,
        error,
        trace_header: trace.header,
        cold_start: init_ms.is_some(),
        reset: aborted,
        timings,
    })
}

fn abort_error(a: &Abort) -> InvokeError {
    let mut body = json!({"errorType": a.error_type});
    if !a.message.is_empty() {
        body["errorMessage"] = json!(a.message);
    }
    InvokeError {
        error_type: a.error_type.clone(),
        error_message: a.message.clone(),
        body: body.to_string(),
    }
}

// ------------------------------------------------------------------ failures and shutdown

/// A process of a ready environment exited: the environment fails (as the RIE's process
/// termination monitor does), its in-flight invocations end, and it is shut down (`failure`).
pub(crate) fn on_process_exit(
    shared: &Arc<Shared>,
    generation: u64,
    role: Role,
    name: &str,
    code: Option<i32>,
    signal: Option<i32>,
) {
    let abort = {
        let mut st = shared.lock();
        let Some(env) = st.env.as_mut().filter(|e| e.generation == generation) else {
            return;
        };
        // Init watches its own processes; a shutdown under way stops them on purpose.
        if env.phase != Phase::Idle || env.abort_cause.is_some() {
            return;
        }
        let how = match (code, signal) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("signal: {s}"),
            (None, None) => "unknown exit".to_owned(),
        };
        let (error_type, message) = match role {
            Role::Runtime if code == Some(0) => (
                "Runtime.ExitError",
                "Runtime exited without providing a reason".to_owned(),
            ),
            Role::Runtime => (
                "Runtime.ExitError",
                format!("Runtime exited with error: {how}"),
            ),
            Role::Extension => ("Extension.Crash", format!("extension {name} exited: {how}")),
        };
        let abort = Abort {
            status: InvokeStatus::Error,
            error_type: error_type.to_owned(),
            message,
        };
        env.abort_cause = Some(abort.clone());
        abort
    };
    shared.timeline.record(
        "environment.failed",
        json!({"generation": generation, "role": role.as_str(), "name": name,
               "errorType": abort.error_type, "exitCode": code, "signal": signal}),
    );
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        lifecycle::reset(&shared, "failure").await;
    });
}

fn empty_report(reason: &str, deadline_ms: u64, t0: Instant) -> ShutdownReport {
    ShutdownReport {
        reason: reason.to_owned(),
        deadline_ms,
        duration_ms: ms(t0.elapsed()),
        extensions: Vec::new(),
        runtime: None,
    }
}

/// The Shutdown phase of a Lambda Managed Instances environment (`spindown`, or `failure`
/// for anything else), in the RIE's order.
pub(crate) async fn shut_down(shared: &Arc<Shared>, reason: &str) -> ShutdownReport {
    let cfg = &shared.cfg;
    let reason = if reason == "spindown" {
        "spindown"
    } else {
        "failure"
    };
    let begun = Instant::now();
    let budget_ms = u64::try_from(cfg.shutdown_budget.as_millis()).unwrap_or(0);
    enum Start {
        NoEnv,
        InProgress(u64),
        Go(Option<i32>, bool, u64, Vec<String>),
    }
    let start = {
        let mut st = shared.lock();
        match st.env.as_mut() {
            None => Start::NoEnv,
            Some(env) if env.phase == Phase::Shutdown => Start::InProgress(env.generation),
            Some(env) => {
                env.phase = Phase::Shutdown;
                let abort = env.abort_cause.clone().unwrap_or_else(|| Abort {
                    status: InvokeStatus::Failure,
                    error_type: ENVIRONMENT_SHUTDOWN.to_owned(),
                    message: String::new(),
                });
                let mut aborted = Vec::new();
                for c in env
                    .inflight
                    .iter_mut()
                    .filter(|c| c.outcome.is_none() && c.aborted.is_none())
                {
                    c.aborted = Some(abort.clone());
                    aborted.push(c.request_id.clone());
                }
                let runtime = env.runtime.as_ref().filter(|r| r.alive()).map(|r| r.pid);
                Start::Go(runtime, !env.extensions.is_empty(), env.generation, aborted)
            }
        }
    };
    let (runtime_pid, any_extension, generation, aborted) = match start {
        Start::NoEnv => {
            return empty_report(reason, crate::time::now_epoch_ms() + budget_ms, begun);
        }
        Start::InProgress(generation) => {
            // Another shutdown of this environment is under way: wait for it to finish.
            let _ = shared
                .wait_until(
                    Some(begun + cfg.shutdown_budget + Duration::from_secs(5)),
                    |st| {
                        st.env
                            .as_ref()
                            .is_none_or(|e| e.generation != generation)
                            .then_some(())
                    },
                )
                .await;
            return empty_report(reason, crate::time::now_epoch_ms() + budget_ms, begun);
        }
        Start::Go(r, e, g, a) => (r, e, g, a),
    };
    shared.bump();
    // The in-flight invocations end first (the RIE waits for them before the deadlines start).
    let _ = shared
        .wait_until(Some(begun + Duration::from_secs(1)), |st| {
            st.env
                .as_ref()
                .is_none_or(|e| e.inflight.is_empty())
                .then_some(())
        })
        .await;

    let t0 = Instant::now();
    let deadline = t0 + cfg.shutdown_budget;
    let deadline_ms = crate::time::now_epoch_ms() + budget_ms;
    shared.timeline.record_at(
        t0,
        "shutdown.start",
        json!({"reason": reason, "deadlineMs": deadline_ms, "generation": generation,
               "abortedRequestIds": aborted}),
    );
    let runtime_gone = |st: &mut State| {
        st.env
            .as_ref()
            .and_then(|e| e.runtime.as_ref().is_none_or(|r| !r.alive()).then_some(()))
    };
    if let Some(pid) = runtime_pid {
        if any_extension {
            process::signal_group(pid, Signal::SIGTERM);
            shared
                .timeline
                .record("runtime.sigterm", json!({"pid": pid}));
            let grace_end = (t0 + cfg.managed_runtime_shutdown_grace).min(deadline);
            if shared
                .wait_until(Some(grace_end), runtime_gone)
                .await
                .is_none()
            {
                lifecycle::kill_marked(shared, true, &[]);
                shared.timeline.record(
                    "runtime.sigkill",
                    json!({"pid": pid, "afterMs": ms(t0.elapsed())}),
                );
            }
        } else {
            lifecycle::kill_marked(shared, true, &[]);
            shared.timeline.record(
                "runtime.sigkill",
                json!({"pid": pid, "afterMs": ms(t0.elapsed())}),
            );
        }
        let _ = shared
            .wait_until(Some(Instant::now() + Duration::from_secs(1)), runtime_gone)
            .await;
    }
    // What the Telemetry API holds goes out before the extensions hear of the shutdown.
    shared.hub.flush_wait(Duration::from_secs(1)).await;
    let sent = lifecycle::send_shutdown(shared, reason, deadline_ms);
    shared.timeline.record(
        "extensions.shutdown",
        json!({"names": sent, "reason": reason, "deadlineMs": deadline_ms}),
    );
    lifecycle::finish_shutdown(shared, reason, deadline, deadline_ms, t0).await
}

// ------------------------------------------------------------------ Telemetry API

/// The RIE's LMI mode accepts one schema version; its refusal names the JSON schema it
/// validated against (a file next to its working directory).
pub fn check_schema_version(body: &[u8]) -> Result<(), String> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        // Not a JSON object: the ordinary validation says so.
        return Ok(());
    };
    let cwd = std::env::current_dir()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default();
    let schema = format!("file://{cwd}/telemetry-subscription-schema.json");
    match obj.get("schemaVersion") {
        Some(Value::String(v)) if v == SCHEMA_VERSION => Ok(()),
        Some(_) => Err(format!(
            "schema validation error: jsonschema: '/schemaVersion' does not validate with \
             {schema}#/properties/schemaVersion/enum: value must be \"{SCHEMA_VERSION}\""
        )),
        None => Err(format!(
            "schema validation error: jsonschema: '' does not validate with {schema}#/required: \
             missing properties: 'schemaVersion'"
        )),
    }
}

/// The Telemetry API's `400 ValidationError` as the RIE's LMI mode sends it (`text/plain`).
pub fn validation_error(message: &str) -> Response {
    Response::new(400)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(
            json!({"errorType": "ValidationError", "errorMessage": message})
                .to_string()
                .into_bytes(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(env: &[(&str, &str)]) -> Config {
        Config {
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Config::default()
        }
    }

    #[test]
    fn selected_by_the_initialization_type_with_the_rie_default_concurrency() {
        assert_eq!(cfg(&[]).managed_instances(), None);
        assert_eq!(
            cfg(&[(MAX_CONCURRENCY_VAR, "4")]).managed_instances(),
            None,
            "the concurrency alone does not select the mode"
        );
        let lmi = |v: Option<&str>| {
            let mut env = vec![(INITIALIZATION_TYPE_VAR, INITIALIZATION_TYPE)];
            if let Some(v) = v {
                env.push((MAX_CONCURRENCY_VAR, v));
            }
            cfg(&env).managed_instances().map(|m| m.max_concurrency)
        };
        assert_eq!(lmi(None), Some(1));
        assert_eq!(lmi(Some("8")), Some(8));
        for bad in ["0", "-2", "many", ""] {
            assert_eq!(lmi(Some(bad)), Some(1), "{bad:?}");
        }
    }

    #[test]
    fn only_the_2025_schema_is_accepted() {
        assert!(check_schema_version(br#"{"schemaVersion":"2025-01-29"}"#).is_ok());
        let e = check_schema_version(br#"{"schemaVersion":"2022-12-13","types":["platform"]}"#)
            .unwrap_err();
        assert!(e.starts_with("schema validation error: jsonschema: '/schemaVersion' does not validate with file://"), "{e}");
        assert!(e.ends_with(
            "telemetry-subscription-schema.json#/properties/schemaVersion/enum: value must be \"2025-01-29\""
        ), "{e}");
        let e = check_schema_version(br#"{"types":["platform"]}"#).unwrap_err();
        assert!(
            e.ends_with("#/required: missing properties: 'schemaVersion'"),
            "{e}"
        );
        assert!(check_schema_version(b"not json").is_ok());
        let r = validation_error("x");
        assert_eq!(r.status, 400);
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            json!({"errorType": "ValidationError", "errorMessage": "x"})
        );
    }

    #[test]
    fn init_records_have_the_lmi_shapes() {
        let c = Config {
            memory_mb: 2048,
            ..Config::default()
        };
        let r = init_start_record(&c, "2026/01/01/[$LATEST]abc");
        assert_eq!(r["instanceMaxMemory"], 2048u64 * 1024 * 1024);
        assert_eq!(r["instanceId"], "2026/01/01/[$LATEST]abc");
        assert_eq!(r["initializationType"], INITIALIZATION_TYPE);
        assert_eq!(r["runtimeVersion"], "");
        let r = init_report_record("error", Some("Extension.Crash"), 12.34567);
        assert_eq!(
            r,
            json!({"initializationType": INITIALIZATION_TYPE, "phase": "init", "status": "error",
                   "errorType": "Extension.Crash", "metrics": {"durationMs": 12.346}})
        );
    }
}
