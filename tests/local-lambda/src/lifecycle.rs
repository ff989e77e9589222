//! The execution environment lifecycle as Lambda runs it: Init, Invoke, Shutdown, resets
//! after a timeout or crash, and (optionally) freezing the sandbox between invocations.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::ids;
use crate::model::{
    ExtensionShutdown, ExtensionTiming, InvokeError, InvokeRequest, InvokeResult, InvokeStatus,
    InvokeTimings, ProcessExit, ShutdownReport,
};
use crate::process::{self, Role};
use crate::state::{Current, Env, Exit, Ext, Mailbox, Outcome, Phase, Proc, RuntimeEvent, Shared};

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Why init failed.
#[derive(Debug, Clone)]
pub struct InitFailure {
    pub status: InvokeStatus,
    pub error_type: String,
    pub message: String,
    pub duration_ms: f64,
}

// ------------------------------------------------------------------ environment & processes

/// The environment every process of the sandbox gets.
fn lambda_env(shared: &Shared, log_stream: &str) -> Vec<(String, String)> {
    let cfg = &shared.cfg;
    let mut env: Vec<(String, String)> = Vec::new();
    if cfg.inherit_env {
        env.extend(std::env::vars());
    } else {
        // Only what a process needs to find its interpreter on this machine.
        env.extend(
            std::env::vars().filter(|(k, _)| k == "PATH" || k == "HOME" || k.starts_with("PYENV")),
        );
    }
    let task_root = cfg
        .task_root
        .clone()
        .unwrap_or_else(|| shared.log_dir.clone());
    let s = |v: &str| v.to_owned();
    env.extend([
        (s("LANG"), s("en_US.UTF-8")),
        (s("TZ"), s(":UTC")),
        (s("AWS_LAMBDA_RUNTIME_API"), shared.api_addr.to_string()),
        (s("AWS_REGION"), cfg.region.clone()),
        (s("AWS_DEFAULT_REGION"), cfg.region.clone()),
        (s("AWS_LAMBDA_FUNCTION_NAME"), cfg.function_name.clone()),
        (
            s("AWS_LAMBDA_FUNCTION_VERSION"),
            cfg.function_version.clone(),
        ),
        (
            s("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
            cfg.memory_mb.to_string(),
        ),
        (
            s("AWS_LAMBDA_LOG_GROUP_NAME"),
            format!("/aws/lambda/{}", cfg.function_name),
        ),
        (s("AWS_LAMBDA_LOG_STREAM_NAME"), log_stream.to_owned()),
        (s("AWS_LAMBDA_INITIALIZATION_TYPE"), s("on-demand")),
        (s("AWS_ACCESS_KEY_ID"), s("AKIAIOSFODNN7EXAMPLE")),
        (
            s("AWS_SECRET_ACCESS_KEY"),
            s("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ),
        (
            s("AWS_SESSION_TOKEN"),
            s("local-lambda-dummy-session-token"),
        ),
        (s("AWS_XRAY_CONTEXT_MISSING"), s("LOG_ERROR")),
        (
            s("LAMBDA_TASK_ROOT"),
            task_root.to_string_lossy().into_owned(),
        ),
        (
            s("LAMBDA_RUNTIME_DIR"),
            task_root.to_string_lossy().into_owned(),
        ),
        (s("_HANDLER"), cfg.handler.clone()),
    ]);
    env.extend(cfg.env.iter().cloned());
    if let Some(m) = &shared.managed {
        // The value in use, whatever the function set (the RIE sets it after the function's
        // variables), for the runtime and, as the RIE's October 2026 release, the extensions.
        env.push((
            s(crate::managed::MAX_CONCURRENCY_VAR),
            m.max_concurrency.to_string(),
        ));
    }
    // Later entries win: keep the last value of each name.
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        if let Some(slot) = out.iter_mut().find(|(ok, _)| *ok == k) {
            slot.1 = v;
        } else {
            out.push((k, v));
        }
    }
    out
}

/// External extensions: every executable in `<layer>/extensions/` (by name), then the extra ones.
pub fn discover_extensions(cfg: &crate::Config) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    if let Some(layer) = &cfg.layer_dir
        && let Ok(rd) = std::fs::read_dir(layer.join("extensions"))
    {
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        found.extend(paths.into_iter().filter(|p| process::is_executable(p)));
    }
    found.extend(cfg.extra_extensions.iter().cloned());
    found
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, p)
        })
        .collect()
}

/// Start one process of environment `generation`, capture its output, and watch its exit.
fn start_process(
    shared: &Arc<Shared>,
    generation: u64,
    role: Role,
    name: &str,
    argv: &[String],
    env: &[(String, String)],
) -> std::io::Result<i32> {
    let cwd = shared.cfg.task_root.as_deref();
    let mut child = process::spawn(argv, env, cwd)?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| std::io::Error::other("spawned process has no pid"))?;
    let file_base = format!("{}-{}", role.as_str(), name.replace('/', "_"));
    if let Some(out) = child.stdout.take() {
        process::capture(
            out,
            shared.log_dir.join(format!("{file_base}.stdout.log")),
            role,
            name.to_owned(),
            shared.cfg.echo_output,
            Arc::clone(&shared.hub),
        );
    }
    if let Some(err) = child.stderr.take() {
        process::capture(
            err,
            shared.log_dir.join(format!("{file_base}.stderr.log")),
            role,
            name.to_owned(),
            shared.cfg.echo_output,
            Arc::clone(&shared.hub),
        );
    }
    shared.lock().all_pgids.push(pid);
    shared.timeline.record(
        "process.start",
        json!({"role": role.as_str(), "name": name, "pid": pid, "argv": argv, "generation": generation}),
    );
    let waiter_shared = Arc::clone(shared);
    let name = name.to_owned();
    tokio::spawn(async move {
        let status = child.wait().await;
        let at = Instant::now();
        let (code, signal) = match &status {
            Ok(s) => (s.code(), s.signal()),
            Err(_) => (None, None),
        };
        {
            let mut st = waiter_shared.lock();
            if let Some(env) = st.env.as_mut().filter(|e| e.generation == generation) {
                let proc = match role {
                    Role::Runtime => env.runtime.as_mut(),
                    Role::Extension => env
                        .extensions
                        .iter_mut()
                        .find(|e| e.name == name && e.external)
                        .and_then(|e| e.proc.as_mut()),
                };
                if let Some(p) = proc.filter(|p| p.pid == pid) {
                    p.exit = Some(Exit { code, signal, at });
                }
            }
        }
        waiter_shared.timeline.record_at(
            at,
            "process.exit",
            json!({"role": role.as_str(), "name": name, "pid": pid, "exitCode": code, "signal": signal,
                   "generation": generation}),
        );
        waiter_shared.bump();
        if waiter_shared.managed.is_some() {
            crate::managed::on_process_exit(&waiter_shared, generation, role, &name, code, signal);
        }
    });
    Ok(pid)
}

// ------------------------------------------------------------------ freeze

/// SIGSTOP every process of the sandbox (Lambda freezes the environment between invocations,
/// once no event is pending: telemetry deliveries in flight finish first).
pub async fn freeze(shared: &Shared) {
    let can_freeze = shared.lock().env.as_ref().is_some_and(|e| !e.frozen);
    if !can_freeze {
        return;
    }
    shared.hub.freeze(Duration::from_secs(1)).await;
    let pids = {
        let mut st = shared.lock();
        match st.env.as_mut() {
            Some(env) if !env.frozen => {
                env.frozen = true;
                env.pids()
            }
            _ => {
                drop(st);
                shared.hub.thaw();
                return;
            }
        }
    };
    for p in &pids {
        process::signal_group(*p, Signal::SIGSTOP);
    }
    shared.timeline.record("freeze", json!({"pids": pids}));
}

/// SIGCONT every process of the sandbox.
pub fn thaw(shared: &Shared) {
    let pids = {
        let mut st = shared.lock();
        let Some(env) = st.env.as_mut() else { return };
        if !env.frozen {
            return;
        }
        env.frozen = false;
        env.pids()
    };
    for p in &pids {
        process::signal_group(*p, Signal::SIGCONT);
    }
    shared.hub.thaw();
    shared.timeline.record("thaw", json!({"pids": pids}));
}

// ------------------------------------------------------------------ init

/// `initializationType` of the platform events, and `AWS_LAMBDA_INITIALIZATION_TYPE`.
pub fn initialization_type(shared: &Shared) -> &'static str {
    if shared.managed.is_some() {
        crate::managed::INITIALIZATION_TYPE
    } else {
        "on-demand"
    }
}

enum InitWait {
    Ok,
    Fail(InvokeStatus, String, String),
}

fn extension_problem(env: &Env) -> Option<InitWait> {
    if let Some((name, message, at)) = &env.refused_registration {
        // Its chance to log and exit first (it is killed at once at the shutdown that follows).
        let exited = env.extensions.iter().any(|e| e.name == *name && e.exited());
        if exited || at.elapsed() >= crate::managed::REFUSAL_GRACE {
            return Some(InitWait::Fail(
                InvokeStatus::Error,
                crate::managed::INVALID_EVENT_TYPE.to_owned(),
                format!(
                    "extension {name} registered for an event Lambda Managed Instances do not send: {message}"
                ),
            ));
        }
    }
    for e in &env.extensions {
        if let Some(t) = &e.init_error {
            return Some(InitWait::Fail(
                InvokeStatus::Error,
                t.clone(),
                format!("extension {} reported an init error: {t}", e.name),
            ));
        }
        if let Some(t) = &e.exit_error {
            return Some(InitWait::Fail(
                InvokeStatus::Failure,
                t.clone(),
                format!("extension {} reported an exit error: {t}", e.name),
            ));
        }
        if e.exited() {
            return Some(InitWait::Fail(
                InvokeStatus::Failure,
                "Extension.Crash".to_owned(),
                format!("extension {} exited during init", e.name),
            ));
        }
    }
    None
}

/// Run the Init phase: start the extensions, wait for their registration, start the runtime,
/// wait until the runtime and every extension call `next`.
pub async fn init(shared: &Arc<Shared>) -> Result<f64, InitFailure> {
    let cfg = &shared.cfg;
    let started = Instant::now();
    let deadline = started + cfg.init_timeout;
    let generation = {
        let mut st = shared.lock();
        st.generation += 1;
        let g = st.generation;
        st.env = Some(Env::new(g));
        g
    };
    shared.hub.new_environment();
    let managed = shared.managed.is_some();
    let init_type = initialization_type(shared);
    shared.timeline.record(
        "init.start",
        json!({"generation": generation, "initializationType": init_type}),
    );
    let log_stream = format!(
        "{}/[{}]{}",
        crate::time::ymd_slash(crate::time::now_epoch_ms()),
        cfg.function_version,
        ids::hex32()
    );
    if managed {
        shared.hub.emit(
            "platform.initStart",
            crate::managed::init_start_record(cfg, &log_stream),
        );
    } else {
        shared.hub.emit(
            "platform.initStart",
            json!({"initializationType": "on-demand", "phase": "init",
                   "functionName": cfg.function_name, "functionVersion": cfg.function_version}),
        );
    }
    let base_env = lambda_env(shared, &log_stream);

    let result = init_steps(shared, generation, deadline, &base_env).await;
    let duration_ms = ms(started.elapsed());
    match result {
        Ok(()) => {
            {
                let mut st = shared.lock();
                st.pending_init_ms = Some(duration_ms);
                if let Some(env) = st.env.as_mut() {
                    env.phase = Phase::Idle;
                    env.registration_closed = true;
                }
            }
            if managed {
                crate::managed::emit_extension_states(shared);
                shared.hub.emit(
                    "platform.initReport",
                    crate::managed::init_report_record("success", None, duration_ms),
                );
            } else {
                shared.hub.emit(
                    "platform.initReport",
                    json!({"initializationType": "on-demand", "phase": "init", "status": "success",
                           "metrics": {"durationMs": round2(duration_ms)}}),
                );
            }
            shared.timeline.record(
                "init.end",
                json!({"generation": generation, "durationMs": duration_ms}),
            );
            shared.bump();
            Ok(duration_ms)
        }
        Err((status, error_type, message)) => {
            // The RIE's LMI mode reports every customer error as `error` (only a timeout differs).
            let status = if managed && status == InvokeStatus::Failure {
                InvokeStatus::Error
            } else {
                status
            };
            let (runtime_called_next, runtime_started) =
                shared.lock().env.as_ref().map_or((false, false), |e| {
                    (e.runtime_next_count > 0, e.runtime.is_some())
                });
            if managed {
                // As the RIE: initRuntimeDone only for a runtime that was started and did not
                // time out; the extensions' states; then the report.
                if runtime_started && !runtime_called_next && status != InvokeStatus::Timeout {
                    shared.hub.emit(
                        "platform.initRuntimeDone",
                        json!({"initializationType": init_type, "phase": "init",
                               "status": status.as_str(), "errorType": error_type}),
                    );
                }
                crate::managed::emit_extension_states(shared);
                shared.hub.emit(
                    "platform.initReport",
                    crate::managed::init_report_record(
                        status.as_str(),
                        Some(&error_type),
                        duration_ms,
                    ),
                );
            } else {
                if !runtime_called_next {
                    shared.hub.emit(
                        "platform.initRuntimeDone",
                        json!({"initializationType": "on-demand", "phase": "init",
                               "status": status.as_str(), "errorType": error_type}),
                    );
                }
                shared.hub.emit(
                    "platform.initReport",
                    json!({"initializationType": "on-demand", "phase": "init", "status": status.as_str(),
                           "errorType": error_type, "metrics": {"durationMs": round2(duration_ms)}}),
                );
            }
            shared.timeline.record(
                "init.failed",
                json!({"generation": generation, "status": status.as_str(), "errorType": error_type,
                       "message": message}),
            );
            // Lambda Managed Instances know two shutdown reasons only: spindown and failure.
            let reason = if status == InvokeStatus::Timeout && !managed {
                "timeout"
            } else {
                "failure"
            };
            reset(shared, reason).await;
            Err(InitFailure {
                status,
                error_type,
                message,
                duration_ms,
            })
        }
    }
}

type Failure = (InvokeStatus, String, String);

async fn init_steps(
    shared: &Arc<Shared>,
    generation: u64,
    deadline: Instant,
    base_env: &[(String, String)],
) -> Result<(), Failure> {
    let cfg = &shared.cfg;
    // 1. Extension init: start every extension, wait for all to register.
    let extensions = discover_extensions(cfg);
    let mut ext_env = base_env.to_vec();
    ext_env.extend(cfg.extension_env.iter().cloned());
    for (name, path) in &extensions {
        {
            let mut st = shared.lock();
            if let Some(env) = st.env.as_mut() {
                env.extensions.push(Ext {
                    name: name.clone(),
                    external: true,
                    proc: None,
                    id: None,
                    events: Vec::new(),
                    account_id_feature: false,
                    mailbox: Mailbox::new(),
                    ready: false,
                    next_count: 0,
                    last_next_at: None,
                    received_shutdown: false,
                    init_error: None,
                    exit_error: None,
                });
            }
        }
        let argv = vec![path.to_string_lossy().into_owned()];
        match start_process(shared, generation, Role::Extension, name, &argv, &ext_env) {
            Ok(pid) => {
                let mut st = shared.lock();
                if let Some(ext) = st
                    .env
                    .as_mut()
                    .and_then(|e| e.extensions.iter_mut().find(|x| x.name == *name))
                {
                    ext.proc = Some(Proc {
                        pid,
                        exit: None,
                        killed: false,
                    });
                }
            }
            Err(e) => {
                return Err((
                    InvokeStatus::Failure,
                    "Extension.LaunchError".to_owned(),
                    format!("cannot start extension {}: {e}", path.display()),
                ));
            }
        }
    }
    let registered = shared
        .wait_until(Some(deadline), |st| {
            let env = st.env.as_ref()?;
            if let Some(p) = extension_problem(env) {
                return Some(p);
            }
            env.extensions
                .iter()
                .filter(|e| e.external)
                .all(Ext::registered)
                .then_some(InitWait::Ok)
        })
        .await;
    match registered {
        Some(InitWait::Ok) => {}
        Some(InitWait::Fail(s, t, m)) => return Err((s, t, m)),
        None => {
            return Err((
                InvokeStatus::Timeout,
                "Sandbox.Timedout".to_owned(),
                format!(
                    "extensions did not register within the init timeout ({} ms)",
                    cfg.init_timeout.as_millis()
                ),
            ));
        }
    }
    shared.timeline.record(
        "extensions.registered",
        json!({"generation": generation, "count": extensions.len()}),
    );

    // 2. Runtime init: start the runtime (through AWS_LAMBDA_EXEC_WRAPPER when set).
    let mut argv = Vec::new();
    if let Some(wrapper) = cfg
        .env_var("AWS_LAMBDA_EXEC_WRAPPER")
        .filter(|w| !w.is_empty())
    {
        argv.push(wrapper.to_owned());
    }
    argv.extend(cfg.runtime_cmd.iter().cloned());
    match start_process(
        shared,
        generation,
        Role::Runtime,
        "runtime",
        &argv,
        base_env,
    ) {
        Ok(pid) => {
            let mut st = shared.lock();
            if let Some(env) = st.env.as_mut() {
                env.runtime = Some(Proc {
                    pid,
                    exit: None,
                    killed: false,
                });
            }
        }
        Err(e) => {
            return Err((
                InvokeStatus::Failure,
                "Runtime.InvalidEntrypoint".to_owned(),
                format!("cannot start the runtime {argv:?}: {e}"),
            ));
        }
    }

    // 3. Init ends when the runtime and every extension have called next.
    let ready = shared
        .wait_until(Some(deadline), |st| {
            let env = st.env.as_ref()?;
            if let Some((t, body)) = &env.init_error {
                return Some(InitWait::Fail(InvokeStatus::Error, t.clone(), body.clone()));
            }
            if let Some(exit) = env.runtime.as_ref().and_then(|r| r.exit) {
                return Some(InitWait::Fail(
                    InvokeStatus::Failure,
                    "Runtime.ExitError".to_owned(),
                    format!("Runtime exited during init: {}", describe_exit(&exit)),
                ));
            }
            if let Some(p) = extension_problem(env) {
                return Some(p);
            }
            (env.runtime_next_count > 0
                && env
                    .extensions
                    .iter()
                    .filter(|e| e.registered())
                    .all(|e| e.ready))
            .then_some(InitWait::Ok)
        })
        .await;
    match ready {
        Some(InitWait::Ok) => Ok(()),
        Some(InitWait::Fail(s, t, m)) => Err((s, t, m)),
        None => Err((
            InvokeStatus::Timeout,
            "Sandbox.Timedout".to_owned(),
            format!(
                "the runtime and extensions did not finish init within {} ms",
                cfg.init_timeout.as_millis()
            ),
        )),
    }
}

fn describe_exit(exit: &Exit) -> String {
    match (exit.code, exit.signal) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(9)) => "signal: killed".to_owned(),
        (None, Some(s)) => format!("signal: {s}"),
        (None, None) => "unknown exit".to_owned(),
    }
}

// ------------------------------------------------------------------ invoke

/// Emit `platform.runtimeDone` for `cur` (called when the runtime answers, times out or crashes).
pub fn emit_runtime_done(
    shared: &Shared,
    cur: &Current,
    status: InvokeStatus,
    error_type: Option<&str>,
    produced_bytes: Option<usize>,
    body_done_at: Instant,
    at: Instant,
) {
    let mut record = json!({
        "requestId": cur.request_id,
        "status": status.as_str(),
        "metrics": {"durationMs": round2(ms(at.saturating_duration_since(cur.started)))},
    });
    if let Some(t) = error_type {
        record["errorType"] = json!(t);
    }
    if let Some(n) = produced_bytes {
        record["metrics"]["producedBytes"] = json!(n);
    }
    if cur.trace.sampled {
        record["tracing"] = tracing_json(cur);
    }
    if let Some(first) = cur.first_byte_at {
        let start_wall = crate::time::rfc3339_ms(cur.started_epoch_ms);
        let first_wall = crate::time::rfc3339_ms(shared.epoch_ms_of(cur, first));
        record["spans"] = json!([
            {"name": "responseLatency", "start": start_wall,
             "durationMs": round2(ms(first.saturating_duration_since(cur.started)))},
            {"name": "responseDuration", "start": first_wall,
             "durationMs": round2(ms(body_done_at.saturating_duration_since(first)))},
        ]);
    }
    shared.hub.emit("platform.runtimeDone", record);
    shared.timeline.record_at(
        at,
        "runtimeDone",
        json!({"requestId": cur.request_id, "status": status.as_str(), "errorType": error_type}),
    );
}

fn tracing_json(cur: &Current) -> Value {
    json!({"spanId": cur.span_id, "type": "X-Amzn-Trace-Id", "value": cur.trace.header})
}

enum RuntimeWait {
    Answered,
    RuntimeExit(Exit),
    ExtensionFailed(String, String),
}

fn ext_failure(env: &Env) -> Option<(String, String)> {
    env.extensions.iter().find_map(|e| {
        if let Some(t) = &e.exit_error {
            Some((e.name.clone(), t.clone()))
        } else if e.exited() {
            Some((e.name.clone(), "Extension.Crash".to_owned()))
        } else {
            None
        }
    })
}

/// Run one invocation (initialising the sandbox first when needed).
pub async fn invoke(shared: &Arc<Shared>, req: InvokeRequest) -> InvokeResult {
    let cfg = &shared.cfg;
    let needs_init = shared
        .lock()
        .env
        .as_ref()
        .is_none_or(|e| e.phase != Phase::Idle);
    if needs_init {
        if shared.lock().env.is_some() {
            reset(shared, "failure").await;
        }
        if let Err(f) = init(shared).await {
            return init_failed_result(shared, &req, f);
        }
    }
    // The first invocation after an init (eager or just now) is the cold start.
    let init_ms = shared.lock().pending_init_ms.take();
    thaw(shared);

    let cur = Current::start(req.trace_header.as_deref(), cfg.active_tracing, cfg.timeout);
    let request_id = cur.request_id.clone();
    let trace = cur.trace.clone();
    let started = cur.started;
    let deadline = cur.deadline;
    let invoke_event = json!({
        "eventType": "INVOKE",
        "deadlineMs": cur.deadline_epoch_ms,
        "requestId": request_id,
        "invokedFunctionArn": cfg.function_arn(),
        "tracing": {"type": "X-Amzn-Trace-Id", "value": trace.header},
    });
    let runtime_event = RuntimeEvent {
        request_id: request_id.clone(),
        deadline_ms: cur.deadline_epoch_ms,
        function_arn: cfg.function_arn(),
        trace_header: trace.header.clone(),
        client_context: req.client_context.clone(),
        cognito_identity: req.cognito_identity.clone(),
        payload: req.payload.clone(),
        invocation_id: None,
    };
    {
        let mut st = shared.lock();
        if let Some(env) = st.env.as_mut() {
            env.phase = Phase::Invoke;
            let mut cur = cur.clone();
            // INVOKE to the extensions and the event to the runtime at the same moment.
            for ext in env
                .extensions
                .iter_mut()
                .filter(|e| e.registered() && e.wants("INVOKE"))
            {
                ext.ready = false;
                let _ = ext.mailbox.tx.send(invoke_event.clone());
                cur.ext_next.push((ext.name.clone(), None));
            }
            env.runtime_ready = false;
            let _ = env.runtime_mailbox.tx.send(runtime_event);
            env.current = Some(cur);
        }
    }
    shared.timeline.record_at(
        started,
        "invoke.start",
        json!({"requestId": request_id, "traceHeader": trace.header, "coldStart": init_ms.is_some()}),
    );
    let mut start_record = json!({"requestId": request_id, "version": cfg.function_version});
    if trace.sampled {
        start_record["tracing"] = tracing_json(&cur);
    }
    shared.hub.emit("platform.start", start_record);
    shared.bump();

    // The runtime answers, crashes, an extension fails, or the timeout elapses.
    let waited = shared
        .wait_until(Some(deadline), |st| {
            let env = st.env.as_ref()?;
            if env.current.as_ref()?.outcome.is_some() {
                return Some(RuntimeWait::Answered);
            }
            if let Some(exit) = env.runtime.as_ref().and_then(|r| r.exit) {
                return Some(RuntimeWait::RuntimeExit(exit));
            }
            ext_failure(env).map(|(n, t)| RuntimeWait::ExtensionFailed(n, t))
        })
        .await;

    let status;
    let mut error: Option<InvokeError> = None;
    let mut response = None;
    let mut reset_reason: Option<&str> = None;
    let mut report_status;
    let mut report_error_type: Option<String> = None;
    match waited {
        Some(RuntimeWait::Answered) => {
            let outcome = shared
                .lock()
                .env
                .as_ref()
                .and_then(|e| e.current.as_ref())
                .and_then(|c| c.outcome.clone());
            match outcome {
                Some(Outcome::Response { body }) => {
                    status = InvokeStatus::Success;
                    response = Some(body);
                }
                Some(Outcome::Error {
                    error_type,
                    body,
                    status: s,
                }) => {
                    status = s;
                    let message = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| {
                            v.get("errorMessage")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .unwrap_or_default();
                    report_error_type = Some(error_type.clone());
                    error = Some(InvokeError {
                        error_type,
                        error_message: message,
                        body,
                    });
                }
                None => {
                    status = InvokeStatus::Failure;
                }
            }
            report_status = status;
        }
        other => {
            let now = Instant::now();
            let (s, error_type, message) = match other {
                Some(RuntimeWait::RuntimeExit(exit)) => (
                    InvokeStatus::Failure,
                    "Runtime.ExitError".to_owned(),
                    format!(
                        "RequestId: {request_id} Error: Runtime exited with error: {}",
                        describe_exit(&exit)
                    ),
                ),
                Some(RuntimeWait::ExtensionFailed(name, t)) => (
                    InvokeStatus::Failure,
                    t.clone(),
                    format!("RequestId: {request_id} Error: extension {name} failed: {t}"),
                ),
                _ => (
                    InvokeStatus::Timeout,
                    "Sandbox.Timedout".to_owned(),
                    format!(
                        "{} {request_id} Task timed out after {:.2} seconds",
                        crate::time::rfc3339_ms(crate::time::now_epoch_ms()),
                        cfg.timeout.as_secs_f64()
                    ),
                ),
            };
            {
                let mut st = shared.lock();
                if let Some(c) = st.env.as_mut().and_then(|e| e.current.as_mut()) {
                    c.runtime_done_at = Some(now);
                    emit_runtime_done(shared, c, s, Some(&error_type), None, now, now);
                }
            }
            reset_reason = Some(if s == InvokeStatus::Timeout {
                "timeout"
            } else {
                "failure"
            });
            status = s;
            report_status = s;
            report_error_type = Some(error_type.clone());
            let body = json!({"errorMessage": message, "errorType": error_type}).to_string();
            error = Some(InvokeError {
                error_type,
                error_message: message,
                body,
            });
        }
    }

    // The invoke phase ends when every extension that got INVOKE is back in event/next.
    if reset_reason.is_none() {
        let done = shared
            .wait_until(Some(deadline), |st| {
                let env = st.env.as_ref()?;
                if let Some(f) = ext_failure(env) {
                    return Some(Err(f));
                }
                env.extensions
                    .iter()
                    .filter(|e| e.registered())
                    .all(|e| e.ready)
                    .then_some(Ok(()))
            })
            .await;
        match done {
            Some(Ok(())) => {}
            Some(Err((_, t))) => {
                report_status = InvokeStatus::Failure;
                report_error_type = Some(t);
                reset_reason = Some("failure");
            }
            None => {
                report_status = InvokeStatus::Timeout;
                report_error_type = Some("Sandbox.Timedout".to_owned());
                reset_reason = Some("timeout");
            }
        }
    }
    let completed = Instant::now();

    // A runtime that exited after answering still needs a new environment.
    let (taken, pids, runtime_gone) = {
        let mut st = shared.lock();
        match st.env.as_mut() {
            Some(env) => {
                let cur = env.current.take();
                env.phase = Phase::Idle;
                let gone = env.runtime.as_ref().is_none_or(|r| !r.alive());
                (cur, env.pids(), gone)
            }
            None => (None, Vec::new(), true),
        }
    };
    if reset_reason.is_none() && runtime_gone {
        reset_reason = Some("failure");
    }
    let cur = taken.unwrap_or(cur);
    let duration_ms = ms(completed.saturating_duration_since(started));
    let mut metrics = json!({
        "durationMs": round2(duration_ms),
        "billedDurationMs": duration_ms.ceil() as u64,
        "memorySizeMB": cfg.memory_mb,
        "maxMemoryUsedMB": process::max_memory_used_mb(&pids),
    });
    if let Some(i) = init_ms {
        metrics["initDurationMs"] = json!(round2(i));
    }
    let mut report =
        json!({"requestId": request_id, "status": report_status.as_str(), "metrics": metrics});
    if let Some(t) = &report_error_type {
        report["errorType"] = json!(t);
    }
    if trace.sampled {
        report["tracing"] = tracing_json(&cur);
    }
    shared.hub.emit("platform.report", report);
    shared.timeline.record_at(
        completed,
        "invoke.end",
        json!({"requestId": request_id, "status": status.as_str(), "reportStatus": report_status.as_str(),
               "durationMs": duration_ms}),
    );

    let runtime_done_at = cur.runtime_done_at;
    let timings = InvokeTimings {
        init_ms,
        started_at_ms: shared.timeline.ms(started),
        runtime_done_at_ms: runtime_done_at.map(|t| shared.timeline.ms(t)),
        completed_at_ms: shared.timeline.ms(completed),
        runtime_ms: runtime_done_at.map(|t| ms(t.saturating_duration_since(started))),
        duration_ms,
        post_runtime_ms: runtime_done_at.map(|t| ms(completed.saturating_duration_since(t))),
        response_latency_ms: cur
            .first_byte_at
            .map(|t| ms(t.saturating_duration_since(started))),
        response_duration_ms: match (cur.first_byte_at, runtime_done_at) {
            (Some(a), Some(b)) => Some(ms(b.saturating_duration_since(a))),
            _ => None,
        },
        extensions: cur
            .ext_next
            .iter()
            .map(|(name, at)| ExtensionTiming {
                name: name.clone(),
                next_at_ms: at.map(|t| shared.timeline.ms(t)),
                after_runtime_done_ms: match (at, runtime_done_at) {
                    (Some(a), Some(d)) => Some(shared.timeline.ms(*a) - shared.timeline.ms(d)),
                    _ => None,
                },
            })
            .collect(),
    };

    let reset_done = if let Some(reason) = reset_reason {
        reset(shared, reason).await;
        true
    } else {
        if cfg.freeze {
            // Lambda freezes once the runtime is back in next too.
            let _ = shared
                .wait_until(Some(Instant::now() + Duration::from_secs(1)), |st| {
                    st.env.as_ref().and_then(|e| e.runtime_ready.then_some(()))
                })
                .await;
            freeze(shared).await;
        }
        false
    };

    InvokeResult {
        request_id,
        status,
        response,
        error,
        trace_header: trace.header,
        cold_start: init_ms.is_some(),
        reset: reset_done,
        timings,
    }
}

fn init_failed_result(shared: &Shared, req: &InvokeRequest, f: InitFailure) -> InvokeResult {
    let request_id = ids::request_id();
    let now_ms = crate::time::now_epoch_ms();
    let trace = ids::invocation_trace(
        req.trace_header.as_deref(),
        shared.cfg.active_tracing,
        now_ms / 1000,
    );
    shared.hub.emit(
        "platform.report",
        json!({"requestId": request_id, "status": f.status.as_str(), "errorType": f.error_type,
               "metrics": {"durationMs": 0.0, "billedDurationMs": 0, "memorySizeMB": shared.cfg.memory_mb,
                           "maxMemoryUsedMB": 0, "initDurationMs": round2(f.duration_ms)}}),
    );
    failed_init_result(shared, request_id, trace.header, f)
}

/// The result of an invoke whose init failed: the init's error, no invocation.
pub(crate) fn failed_init_result(
    shared: &Shared,
    request_id: String,
    trace_header: String,
    f: InitFailure,
) -> InvokeResult {
    let body = json!({"errorMessage": f.message, "errorType": f.error_type}).to_string();
    let at = shared.timeline.now_ms();
    InvokeResult {
        request_id,
        status: f.status,
        response: None,
        error: Some(InvokeError {
            error_type: f.error_type,
            error_message: f.message,
            body,
        }),
        trace_header,
        cold_start: true,
        reset: true,
        timings: InvokeTimings {
            init_ms: Some(f.duration_ms),
            started_at_ms: at,
            runtime_done_at_ms: None,
            completed_at_ms: at,
            runtime_ms: None,
            duration_ms: 0.0,
            post_runtime_ms: None,
            response_latency_ms: None,
            response_duration_ms: None,
            extensions: Vec::new(),
        },
    }
}

// ------------------------------------------------------------------ shutdown and reset

fn exit_report(p: Option<&Proc>, t0: Instant) -> ProcessExit {
    match p {
        None => ProcessExit {
            exit_code: None,
            signal: None,
            killed: false,
            exited_after_ms: None,
        },
        Some(p) => ProcessExit {
            exit_code: p.exit.and_then(|e| e.code),
            signal: p.exit.and_then(|e| e.signal),
            killed: p.killed,
            exited_after_ms: p.exit.map(|e| {
                if e.at >= t0 {
                    ms(e.at - t0)
                } else {
                    -ms(t0 - e.at)
                }
            }),
        },
    }
}

/// SIGKILL the groups of the given processes and mark them killed.
pub(crate) fn kill_marked(shared: &Shared, runtime: bool, ext_names: &[String]) {
    let mut st = shared.lock();
    let Some(env) = st.env.as_mut() else { return };
    if runtime && let Some(r) = env.runtime.as_mut().filter(|r| r.alive()) {
        r.killed = true;
        process::signal_group(r.pid, Signal::SIGKILL);
    }
    for e in env.extensions.iter_mut() {
        if ext_names.contains(&e.name)
            && let Some(p) = e.proc.as_mut().filter(|p| p.alive())
        {
            p.killed = true;
            process::signal_group(p.pid, Signal::SIGKILL);
        }
    }
}

/// A reset after a timeout or crash: the runtime is shut down, then the extensions get
/// SHUTDOWN with the reason; the next invoke initialises a new environment.
pub async fn reset(shared: &Arc<Shared>, reason: &str) -> ShutdownReport {
    let report = shut_down_environment(shared, reason).await;
    shared.lock().resets.push(report.clone());
    report
}

/// The Shutdown phase (reason `spindown`), or a reset (`timeout`, `failure`).
pub async fn shut_down_environment(shared: &Arc<Shared>, reason: &str) -> ShutdownReport {
    if shared.managed.is_some() {
        return crate::managed::shut_down(shared, reason).await;
    }
    let cfg = &shared.cfg;
    thaw(shared);
    let t0 = Instant::now();
    let deadline = t0 + cfg.shutdown_budget;
    let deadline_ms =
        crate::time::now_epoch_ms() + u64::try_from(cfg.shutdown_budget.as_millis()).unwrap_or(0);
    let info = {
        let mut st = shared.lock();
        st.env.as_mut().map(|env| {
            env.phase = Phase::Shutdown;
            let runtime = env.runtime.as_ref().filter(|r| r.alive()).map(|r| r.pid);
            let has_external = env.extensions.iter().any(|e| e.external && e.registered());
            (runtime, has_external, env.generation)
        })
    };
    let Some((runtime_pid, has_external, generation)) = info else {
        return ShutdownReport {
            reason: reason.to_owned(),
            deadline_ms,
            duration_ms: 0.0,
            extensions: Vec::new(),
            runtime: None,
        };
    };
    shared.hub.flush_all();
    shared.timeline.record(
        "shutdown.start",
        json!({"reason": reason, "deadlineMs": deadline_ms, "generation": generation}),
    );
    let runtime_gone = |st: &mut crate::state::State| {
        st.env
            .as_ref()
            .and_then(|e| e.runtime.as_ref().is_none_or(|r| !r.alive()).then_some(()))
    };

    // The runtime: SIGTERM with a short grace when external extensions are registered
    // (graceful shutdown), else SIGKILL. On a reset Lambda shuts the runtime down first.
    let graceful = reason == "spindown" && has_external;
    if let Some(pid) = runtime_pid {
        if graceful {
            process::signal_pid(pid, Signal::SIGTERM);
            shared
                .timeline
                .record("runtime.sigterm", json!({"pid": pid}));
        } else {
            kill_marked(shared, true, &[]);
            let _ = shared
                .wait_until(Some(Instant::now() + Duration::from_secs(1)), runtime_gone)
                .await;
        }
    }

    send_shutdown(shared, reason, deadline_ms);

    if graceful {
        let grace_end = (t0 + cfg.runtime_shutdown_grace).min(deadline);
        if shared
            .wait_until(Some(grace_end), runtime_gone)
            .await
            .is_none()
        {
            kill_marked(shared, true, &[]);
            shared.timeline.record("runtime.sigkill", json!({}));
        }
    }

    finish_shutdown(shared, reason, deadline, deadline_ms, t0).await
}

/// SHUTDOWN to the extensions registered for it; the others are stopped. Returns the names of
/// those that got the event.
pub(crate) fn send_shutdown(shared: &Shared, reason: &str, deadline_ms: u64) -> Vec<String> {
    let (sent, others) = {
        let mut st = shared.lock();
        let (mut sent, mut others) = (Vec::new(), Vec::new());
        if let Some(env) = st.env.as_mut() {
            let event = json!({"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms});
            for e in env.extensions.iter_mut() {
                if !e.external || e.exited() {
                    continue;
                }
                if e.registered() && e.wants("SHUTDOWN") {
                    e.received_shutdown = true;
                    let _ = e.mailbox.tx.send(event.clone());
                    sent.push(e.name.clone());
                } else {
                    others.push(e.name.clone());
                }
            }
        }
        (sent, others)
    };
    kill_marked(shared, false, &others);
    shared.bump();
    sent
}

/// Wait for every extension to exit (SIGKILL at `deadline`), then discard the environment
/// and report.
pub(crate) async fn finish_shutdown(
    shared: &Shared,
    reason: &str,
    deadline: Instant,
    deadline_ms: u64,
    t0: Instant,
) -> ShutdownReport {
    let runtime_gone = |st: &mut crate::state::State| {
        st.env
            .as_ref()
            .and_then(|e| e.runtime.as_ref().is_none_or(|r| !r.alive()).then_some(()))
    };
    // Wait for every extension to exit; SIGKILL at the deadline.
    let all_exited = |st: &mut crate::state::State| {
        st.env.as_ref().and_then(|e| {
            e.extensions
                .iter()
                .filter_map(|x| x.proc.as_ref())
                .all(|p| !p.alive())
                .then_some(())
        })
    };
    if shared
        .wait_until(Some(deadline), all_exited)
        .await
        .is_none()
    {
        let stuck: Vec<String> = shared
            .lock()
            .env
            .as_ref()
            .map(|e| {
                e.extensions
                    .iter()
                    .filter(|x| x.proc.as_ref().is_some_and(Proc::alive))
                    .map(|x| x.name.clone())
                    .collect()
            })
            .unwrap_or_default();
        shared
            .timeline
            .record("extensions.sigkill", json!({"names": stuck}));
        kill_marked(shared, true, &stuck);
    }
    let settle = Instant::now() + Duration::from_secs(2);
    let _ = shared.wait_until(Some(settle), all_exited).await;
    let _ = shared.wait_until(Some(settle), runtime_gone).await;

    // Build the report and discard the environment (and whatever its processes left behind).
    let env = shared.lock().env.take();
    let Some(env) = env else {
        return ShutdownReport {
            reason: reason.to_owned(),
            deadline_ms,
            duration_ms: ms(t0.elapsed()),
            extensions: Vec::new(),
            runtime: None,
        };
    };
    for p in env
        .runtime
        .iter()
        .chain(env.extensions.iter().filter_map(|e| e.proc.as_ref()))
    {
        process::signal_group(p.pid, Signal::SIGKILL);
    }
    shared.hub.new_environment();
    let report = ShutdownReport {
        reason: reason.to_owned(),
        deadline_ms,
        duration_ms: ms(t0.elapsed()),
        extensions: env
            .extensions
            .iter()
            .map(|e| ExtensionShutdown {
                name: e.name.clone(),
                registered: e.registered(),
                events: e.events.clone(),
                event_next_count: e.next_count,
                received_shutdown: e.received_shutdown,
                exit: exit_report(e.proc.as_ref(), t0),
            })
            .collect(),
        runtime: env.runtime.as_ref().map(|r| exit_report(Some(r), t0)),
    };
    shared.timeline.record(
        "shutdown.end",
        serde_json::to_value(&report).unwrap_or(Value::Null),
    );
    shared.bump();
    report
}
