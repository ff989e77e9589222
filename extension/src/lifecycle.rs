//! The extension's life: init, INVOKE, SHUTDOWN (DESIGN.md "Lifecycle contract").
//!
//! ```text
//!  main_entry ─▶ run_with_lookup ─▶ run(config, options) ─▶ RunSummary ─▶ exit code
//!
//!  init      parse config → logging → bind the OTLP receivers and the Runtime API proxy on
//!            127.0.0.1 (a taken receiver or proxy port leaves that one out) → build the exporter
//!            (cheap: no credentials, TLS or DNS until the first export) → spawn the span buffer
//!            and the servers; bind the Telemetry API listener on sandbox.localdomain's address
//!            when /etc/hosts has it → register (otherwise resolve and bind meanwhile) → serve
//!            the Runtime API proxy → subscribe to the Telemetry API → event loop. A
//!            configuration that leaves nothing to do → [`pass_through`] (SHUTDOWN only,
//!            nothing bound, exit 0): nothing the user configures fails the function's init.
//!
//!  loop      GET event/next ──INVOKE──▶ ask the flush policy (flush.rs):
//!              │                          flush at this invocation's end?
//!              │                 no ──────────┤ yes
//!              │                              ▼
//!              │                wait for the first of: platform.runtimeDone(request id)
//!              │                (Telemetry API), InvocationEnd from the Runtime API proxy,
//!              │                or the deadline − INVOKE_END_MARGIN; then flush
//!              │◀──────────────────────────────┘  (exporter deadline ≤ invocation deadline)
//!              │
//!              │  all the while: telemetry batches → invocation/init spans → buffer;
//!              │  buffer pressure → flush at once
//!              │
//!           ──SHUTDOWN──▶ flush what is left within deadlineMs − SHUTDOWN_MARGIN, stop the
//!                         servers, count what is still buffered as dropped (shutdown), log
//!                         one summary line, exit 0 (also when X-Ray is unreachable).
//!  fatal     event/next keeps failing → `exit/error`, flush, summary, exit 1.
//!
//!  Managed   register SHUTDOWN only; no INVOKE: event/next waits for SHUTDOWN while a
//!  Instances background timer (every `periodic,<ms>`) expires overdue invocation spans and
//!            flushes; pressure still flushes at once.
//! ```
//!
//! Async structure: one current-thread tokio runtime; one root [`CancellationToken`] whose
//! children stop the servers after the final flush; a [`JoinSet`] for the server tasks; every
//! wait is a `tokio::select! { biased; … }` with cancellation first. The lifecycle task alone
//! owns the flush policy, the platform-span builder and the exporter, so none of them needs a
//! lock: telemetry batches and end-of-invocation signals reach it through channels.
//!
//! In-process use (tests, the local emulator): build a [`Config`] by hand (ports 0 for
//! ephemeral ports, `runtime_api` pointing at a fake Extensions API) and call [`run`] with
//! [`RunOptions`]; `RunOptions::ready` receives a [`Ready`] with the bound addresses, the buffer
//! handle, the counters and the [`InvocationEndSender`]; `RunOptions::cancel` stops the
//! extension as if SHUTDOWN had come.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::buffer::{self, BufferHandle, SpanBatch};
use crate::config::{
    AWS_LAMBDA_RUNTIME_API, Config, ConfigError, ExporterKind, FlushMode, OTEL_XRAY_GRPC_PORT,
    OTEL_XRAY_HTTP_PORT, OTEL_XRAY_PROXY, OTEL_XRAY_PROXY_PORT, Platform,
};
use crate::export::{ExportReport, Exporter};
use crate::flush::{FlushPolicy, FlushReason};
use crate::lambda::extensions_api::{
    Events, ExtensionsClient, InvokeEvent, NextEvent, Registration, ShutdownReason,
};
use crate::lambda::invocation::{
    AnswerHold, EndSource, InvocationEnd, InvocationEndReceiver, InvocationEndSender, RecentIds,
    invocation_end_channel,
};
use crate::lambda::invocation_span::{
    InvocationOutcome, InvocationSpans, Replaced, SharedInvocationSpans, SpanSettings,
    merge_encoded_function_spans,
};
use crate::lambda::platform_spans::{FunctionInfo, PlatformSpans};
use crate::lambda::runtime_proxy::{self, ProxyParts};
use crate::lambda::telemetry::{
    self, Delivery, TelemetryCounters, TelemetryCountersSnapshot, TelemetryRecord,
};
use crate::receiver::{self, ReceiveError};
use crate::self_metrics::{self, FlushFigures, SelfMetrics};
use crate::stats::{DropReason, Stats, StatsSnapshot};
use crate::upstream_breaker::{self, Change, Outcome, UpstreamBreaker};

/// The final flush must be done this long before SHUTDOWN's `deadlineMs`.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_millis(200);
/// Without an end signal, stop waiting for the end of an invocation this long before its
/// deadline, so that the flush still fits.
pub const INVOKE_END_MARGIN: Duration = Duration::from_millis(200);
/// A flush during an invocation must end this long before the invocation's deadline, so that
/// `event/next` is called in time.
pub const INVOKE_FLUSH_MARGIN: Duration = Duration::from_millis(20);
/// Without a usable Telemetry API, how long the proxy gets to see an INVOKE's request before
/// the invocation is taken to have no end signal (the runtime is already waiting in
/// `invocation/next` when Lambda sends INVOKE, so the proxy sees it within a millisecond or so).
const PROXY_GRACE: Duration = Duration::from_millis(50);
/// A flush with less time than this is not attempted (the spans wait for the next one).
const MIN_FLUSH_BUDGET: Duration = Duration::from_millis(10);
/// The exporter is given this much past its own deadline before the lifecycle stops waiting.
const EXPORT_GRACE: Duration = Duration::from_millis(50);
/// Consecutive `event/next` failures before the extension gives up (`exit/error`).
const NEXT_EVENT_ATTEMPTS: u32 = 3;
/// How long stopped servers get to finish in-flight requests.
const SERVER_STOP_GRACE: Duration = Duration::from_millis(100);
/// Budget of an invocation whose INVOKE event has no deadline (a non-conforming emulator).
const MISSING_DEADLINE_BUDGET: Duration = Duration::from_secs(3);
/// Budget of a SHUTDOWN without a deadline (Lambda gives 2,000 ms with external extensions).
const MISSING_SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);
/// Telemetry batches waiting for the lifecycle.
const TELEMETRY_CHANNEL: usize = 64;
/// Request ids remembered as ended.
const RECENT_ENDS: usize = 32;
/// The name the extension registers with when its file name cannot be read.
pub const DEFAULT_EXTENSION_NAME: &str = "otel-xray";

/// How the extension ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SHUTDOWN (or cancellation) handled: exit 0.
    Clean,
    /// It could not start (no Lambda API to talk to, or register failed): exit 1. Nothing the
    /// user configures leads here: configuration problems run [`Exit::PassThrough`].
    InitFailed,
    /// The configuration left nothing to do: registered for SHUTDOWN only, collected nothing,
    /// ended at SHUTDOWN: exit 0.
    PassThrough,
    /// A fatal error after init; `exit/error` was reported: exit 1.
    Fatal,
}

/// What [`run`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// How it ended.
    pub exit: Exit,
    /// The span counters at the end.
    pub stats: StatsSnapshot,
    /// The Telemetry API listener's counters.
    pub telemetry: TelemetryCountersSnapshot,
    /// INVOKE events handled.
    pub invocations: u64,
    /// SHUTDOWN's reason, when a SHUTDOWN came.
    pub shutdown_reason: Option<ShutdownReason>,
    /// The error that ended it, if any.
    pub error: Option<String>,
}

impl RunSummary {
    fn failed(exit: Exit, error: String, stats: StatsSnapshot) -> Self {
        RunSummary {
            exit,
            stats,
            telemetry: TelemetryCountersSnapshot::default(),
            invocations: 0,
            shutdown_reason: None,
            error: Some(error),
        }
    }

    /// 0 for [`Exit::Clean`], 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self.exit {
            Exit::Clean | Exit::PassThrough => ExitCode::SUCCESS,
            Exit::InitFailed | Exit::Fatal => ExitCode::FAILURE,
        }
    }
}

/// Handed to [`RunOptions::ready`] once the extension is registered and subscribed.
#[derive(Debug)]
pub struct Ready {
    /// What register returned.
    pub registration: Registration,
    /// Where the Telemetry API listener listens (None: it could not bind; the extension runs
    /// without the Telemetry API).
    pub telemetry_addr: Option<SocketAddr>,
    /// False when the Telemetry API subscription failed.
    pub telemetry_subscribed: bool,
    /// Where the OTLP/HTTP receiver listens.
    pub otlp_http_addr: Option<SocketAddr>,
    /// Where the OTLP/gRPC receiver listens.
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// The span buffer.
    pub buffer: BufferHandle,
    /// The span counters.
    pub stats: Arc<Stats>,
    /// End-of-invocation signals (what the Runtime API proxy uses).
    pub invocation_end: InvocationEndSender,
    /// Where the Runtime API proxy listens (None: off or its port taken).
    pub proxy_addr: Option<SocketAddr>,
}

/// Options of [`run`] beyond the configuration.
#[derive(Debug)]
pub struct RunOptions {
    /// The name to register with: the executable's file name.
    pub extension_name: String,
    /// Cancelling it ends the extension as SHUTDOWN would (flush, summary, [`Exit::Clean`]).
    pub cancel: CancellationToken,
    /// Receives a [`Ready`] after register and subscribe.
    pub ready: Option<oneshot::Sender<Ready>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            extension_name: default_extension_name(),
            cancel: CancellationToken::new(),
            ready: None,
        }
    }
}

/// The executable's file name (`otel-xray` in the layer's `extensions/`), which Lambda requires
/// as the registration name.
pub fn default_extension_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_EXTENSION_NAME)
        .to_owned()
}

/// The binary's entry point: a current-thread runtime (low RSS, fast start), the process
/// environment, and the exit code.
pub fn main_entry() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            init_fallback_logging();
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let summary = runtime.block_on(run_with_lookup(
        |k| std::env::var(k).ok(),
        RunOptions::default(),
    ));
    // Dropping a runtime waits for its blocking threads: a resolver call stuck on a silent DNS
    // server would hold the exit for seconds, past SHUTDOWN's deadline. Nothing is left to do.
    runtime.shutdown_background();
    summary.exit_code()
}

/// Parses the configuration from `lookup`, sets up logging and runs. A configuration that
/// leaves nothing to do runs the extension as a pass-through ([`Exit::PassThrough`]): it never
/// fails the function's init (DESIGN.md "Lifecycle contract").
pub async fn run_with_lookup<F>(lookup: F, options: RunOptions) -> RunSummary
where
    F: Fn(&str) -> Option<String>,
{
    match Config::from_lookup(&lookup) {
        Ok((config, warnings)) => {
            crate::logging::init(&config);
            for w in &warnings {
                warn!(variable = w.var, "{w}");
            }
            run(config, options).await
        }
        Err(e) => {
            init_fallback_logging();
            let platform = Platform::from_lookup(&lookup);
            pass_through_unconfigured(&platform, &e, options).await
        }
    }
}

/// Logging for failures that happen before the configuration (and its log settings) exists.
fn init_fallback_logging() {
    crate::logging::init_fallback();
}

/// The pass-through of a configuration error: the Extensions API client from the platform's
/// variables, then [`pass_through`].
async fn pass_through_unconfigured(
    platform: &Platform,
    error: &ConfigError,
    options: RunOptions,
) -> RunSummary {
    let message = error.to_string();
    let Some(api) = &platform.runtime_api else {
        error!(
            variable = error.variable(),
            "{message} (and {AWS_LAMBDA_RUNTIME_API} is not set)"
        );
        return RunSummary::failed(Exit::InitFailed, message, Stats::default().snapshot());
    };
    match ExtensionsClient::new(api) {
        Ok(client) => {
            error!(variable = error.variable(), "{message}");
            pass_through(client, &options.extension_name, message, &options.cancel).await
        }
        Err(api_err) => {
            error!(error = %api_err, "{message}");
            RunSummary::failed(Exit::InitFailed, message, Stats::default().snapshot())
        }
    }
}

/// Runs as a pass-through: registers for SHUTDOWN only (unless `client` is registered
/// already), binds nothing (so the wrapper's probe finds no otel-xray and leaves the runtime
/// alone), waits for SHUTDOWN and exits 0. Costs nothing per invocation. `problem` was logged
/// by the caller, naming the variable and the fix.
async fn pass_through(
    mut client: ExtensionsClient,
    name: &str,
    problem: String,
    cancel: &CancellationToken,
) -> RunSummary {
    error!(
        "otel-xray runs as a pass-through: it collects nothing and the function runs as it \
         would without the layer"
    );
    let mut summary = RunSummary {
        exit: Exit::PassThrough,
        stats: Stats::default().snapshot(),
        telemetry: TelemetryCountersSnapshot::default(),
        invocations: 0,
        shutdown_reason: None,
        error: Some(problem),
    };
    if client.extension_id().is_none()
        && let Err(e) = client.register(name, Events::ShutdownOnly).await
    {
        error!(error = %e, "cannot register with the Extensions API");
        summary.exit = Exit::InitFailed;
        return summary;
    }
    let mut failures = 0u32;
    loop {
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            next = client.next_event() => next,
        };
        match next {
            Ok(NextEvent::Shutdown(s)) => {
                summary.shutdown_reason = Some(s.reason);
                break;
            }
            Ok(NextEvent::Invoke(_)) => {
                failures = 0;
                summary.invocations += 1;
            }
            Ok(NextEvent::Other(_)) => failures = 0,
            Err(e) => {
                failures += 1;
                if failures >= NEXT_EVENT_ATTEMPTS {
                    warn!(error = %e, "event/next keeps failing; the pass-through ends");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10 * u64::from(failures))).await;
            }
        }
    }
    info!(
        reason = summary
            .shutdown_reason
            .as_ref()
            .map_or("cancelled", ShutdownReason::as_str),
        "shutdown: pass-through, nothing collected"
    );
    summary
}

/// The variable that moves a receiver, for bind error messages.
fn receiver_port_hint(e: &ReceiveError) -> String {
    match e {
        ReceiveError::Bind { what, .. } => {
            let var = if what.contains("gRPC") {
                OTEL_XRAY_GRPC_PORT
            } else {
                OTEL_XRAY_HTTP_PORT
            };
            format!("{e}; set {var} to a free port")
        }
    }
}

/// Runs the extension with `config` until SHUTDOWN, cancellation or a fatal error.
pub async fn run(config: Config, options: RunOptions) -> RunSummary {
    let name = options.extension_name.clone();
    let Some(runtime_api) = config.runtime_api.clone() else {
        let msg = format!("{AWS_LAMBDA_RUNTIME_API} is not set: not running in Lambda");
        error!("{msg}");
        return RunSummary::failed(Exit::InitFailed, msg, Stats::default().snapshot());
    };
    let mut client = match ExtensionsClient::new(&runtime_api) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot start");
            return RunSummary::failed(
                Exit::InitFailed,
                e.to_string(),
                Stats::default().snapshot(),
            );
        }
    };
    // Cheap (no credentials, TLS or DNS until the first export); before any bind, so that an
    // exporter that cannot be built leaves nothing bound for the wrapper to find.
    let exporter = match Exporter::from_config(&config) {
        Ok(e) => e,
        Err(e) => {
            let message = e.to_string();
            error!(error = %e, "the exporter cannot be built");
            return pass_through(client, &name, message, &options.cancel).await;
        }
    };
    // Managed Instances accept SHUTDOWN only and never freeze: invocations run at once and the
    // buffer is flushed in the background (docs/managed-instances.md).
    let events = if config.managed_instances {
        Events::ShutdownOnly
    } else {
        Events::InvokeAndShutdown
    };

    // Bind every listener before registering. A port another process holds must not fail the
    // function: the receiver on it is left out (logged once, with the variable that moves it) and
    // the Telemetry API listener moves to a free port (Lambda only needs the one we subscribe).
    let (receivers, bind_errors) = receiver::bind_each(&config).await;
    for e in &bind_errors {
        error!(
            "{}; spans sent there will not reach otel-xray",
            receiver_port_hint(e)
        );
    }
    // The Runtime API proxy, bound before register so that it is up before the runtime starts.
    // A taken port leaves it out: the wrapper's health probe fails and the runtime talks to
    // Lambda directly.
    let proxy_listener = if config.proxy {
        match runtime_proxy::bind(config.proxy_port).await {
            Ok(l) => Some(l),
            Err(e) => {
                error!(
                    "{e}; set {OTEL_XRAY_PROXY_PORT} to a free port (or {OTEL_XRAY_PROXY}=false); \
                     the runtime will talk to Lambda directly, without invocation spans from the proxy"
                );
                None
            }
        }
    } else {
        None
    };
    let proxy_addr = proxy_listener.as_ref().and_then(|l| l.local_addr().ok());
    // The Telemetry API listener is bound on the address of `sandbox.localdomain`. Where
    // /etc/hosts names it (Lambda), that is a read of a small file: bound here, with the others,
    // and no resolver thread competes with the start-up. Where it does not (emulators, developer
    // machines), the system resolver needs a blocking thread and DNS: that runs while register
    // is in flight, since Lambda needs the listener only before we subscribe
    // (docs/performance.md "Start-up").
    let early_listener = match telemetry::sandbox_address_from_hosts() {
        Some(ip) => Some(telemetry::bind_or_any(ip, config.telemetry_port).await),
        None => None,
    };
    let telemetry_bind = async {
        match early_listener {
            Some(bound) => bound,
            None => {
                let ip = telemetry::resolve_sandbox_address().await;
                telemetry::bind_or_any(ip, config.telemetry_port).await
            }
        }
    };

    // Spawn the buffer and the servers.
    let root = CancellationToken::new();
    let stats = Arc::new(Stats::default());
    // The X-Ray exporters' buffer translates requests ahead, while the function runs, so that
    // the flush at the end of an invocation mostly only sends (docs/performance.md).
    let prepare =
        (exporter.kind() != ExporterKind::Otlp).then(|| exporter.translate_options().clone());
    let (buffer, buffer_task) =
        buffer::spawn_preparing(config.buffer_limits, Arc::clone(&stats), prepare);
    let mut servers = JoinSet::new();
    let otlp_http_addr = receivers.http.as_ref().and_then(|l| l.local_addr().ok());
    let otlp_grpc_addr = receivers.grpc.as_ref().and_then(|l| l.local_addr().ok());
    receivers.serve(buffer.clone(), root.child_token(), &mut servers);
    // The Runtime API proxy is bound with the other listeners and served here with a clone of
    // `end_tx`; it calls `InvocationEndSender::invocation_ended` when the runtime posts a
    // response or an error.
    let (end_tx, end_rx) = invocation_end_channel();

    let (registered, listener) = tokio::join!(client.register(&name, events), telemetry_bind);
    let registration = match registered {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot register with the Extensions API");
            root.cancel();
            stop_servers(&mut servers).await;
            buffer_task.abort();
            return RunSummary::failed(Exit::InitFailed, e.to_string(), stats.snapshot());
        }
    };
    // The Runtime API proxy is served as soon as the registration names the function: the
    // runtime starts once every extension has registered, and the wrapper's health probe must
    // find the proxy answering (it waits only briefly), not still behind the Telemetry API
    // set-up below.
    let info = FunctionInfo {
        function_name: registration.function_name.clone(),
        function_version: registration.function_version.clone(),
        account_id: registration.account_id.clone(),
        region: config.region.clone(),
        service_name: config.service_name.clone(),
        resource_attributes: config.resource_attributes.clone(),
    };
    let platform = config
        .platform_spans
        .then(|| PlatformSpans::new(info.clone()).with_concurrency(config.max_concurrency));
    let invocation_spans = proxy_listener.map(|listener| {
        let spans = InvocationSpans::shared(
            &info,
            SpanSettings {
                precedence: config.context_precedence.clone(),
                baggage_attributes: config.baggage_attributes.clone(),
                provisioned: config.initialization_type.as_deref()
                    == Some("provisioned-concurrency"),
                concurrent: config.managed_instances,
                max_concurrency: config.max_concurrency,
            },
        );
        let parts = ProxyParts {
            upstream: runtime_api.clone(),
            end: end_tx.clone(),
            buffer: buffer.clone(),
            spans: Some(Arc::clone(&spans)),
            // Answers are held only for an `event/next` to go first; Managed Instances have none.
            hold_answers: !config.managed_instances,
        };
        if let Err(e) = runtime_proxy::serve(listener, parts, root.child_token(), &mut servers) {
            error!(error = %e, "Runtime API proxy not started");
        }
        spans
    });

    let counters = Arc::new(TelemetryCounters::default());
    let (telemetry_tx, telemetry_rx) = mpsc::channel(TELEMETRY_CHANNEL);
    let (telemetry_addr, destination) = match listener {
        Ok(listener) => {
            let addr = listener.local_addr();
            let destination = listener.destination_uri();
            listener.serve(
                telemetry_tx,
                Arc::clone(&counters),
                root.child_token(),
                &mut servers,
            );
            (Some(addr), Some(destination))
        }
        Err(e) => {
            // Without a listener there is no Telemetry API: the proxy and the deadline still
            // end invocations.
            warn!(error = %e, "running without the Telemetry API");
            drop(telemetry_tx);
            (None, None)
        }
    };
    info!(
        extension = %name,
        function = %registration.function_name,
        version = %registration.function_version,
        flush = ?config.flush,
        exporter = ?config.exporter,
        managed_instances = config.managed_instances,
        "registered"
    );

    let subscribed = match &destination {
        Some(destination) => telemetry::subscribe(&client, destination).await,
        None => Err(telemetry::SubscribeError::NoListener),
    };
    let telemetry_subscribed = match subscribed {
        Ok(schema) => {
            debug!(destination = ?destination, schema, "subscribed to the Telemetry API");
            true
        }
        Err(e) => {
            warn!(
                error = %e,
                "Telemetry API unavailable: invocations are taken to end at their deadline \
                 (or when the Runtime API proxy says so)"
            );
            false
        }
    };

    let self_metrics = SelfMetrics::stdout(config.self_metrics, &registration.function_name);
    if let Some(ready) = options.ready {
        let _ = ready.send(Ready {
            registration,
            telemetry_addr,
            telemetry_subscribed,
            otlp_http_addr,
            otlp_grpc_addr,
            buffer: buffer.clone(),
            stats: Arc::clone(&stats),
            invocation_end: end_tx.clone(),
            proxy_addr,
        });
    }

    let mut lifecycle = Lifecycle {
        pressure: Arc::clone(buffer.pressure()),
        buffer,
        stats,
        exporter,
        policy: FlushPolicy::new(config.flush),
        background: match config.flush {
            FlushMode::Periodic(period) if config.managed_instances => Some(period),
            _ => None,
        },
        next_background: Instant::now(),
        managed_instances: config.managed_instances,
        telemetry_usable: telemetry_subscribed,
        pressure_deferred: false,
        breaker: UpstreamBreaker::new(),
        platform,
        telemetry_rx,
        held_answers: Vec::new(),
        end_rx,
        ended: RecentIds::new(RECENT_ENDS),
        export_timeout: config.export_timeout,
        invocations: 0,
        invocation_spans,
        merge_invocation_spans: config.merge_invocation_spans,
        replaced: Replaced::default(),
        self_metrics,
    };
    let end = lifecycle.event_loop(&client, &options.cancel).await;
    drop(end_tx);

    let now = Instant::now();
    let (exit, reason, shutdown_deadline, error) = match end {
        LoopEnd::Shutdown {
            reason,
            deadline_ms,
        } => {
            let deadline = if deadline_ms == 0 {
                now + MISSING_SHUTDOWN_BUDGET
            } else {
                instant_from_unix_ms(deadline_ms, SystemTime::now(), now)
            };
            (Exit::Clean, Some(reason), deadline, None)
        }
        LoopEnd::Cancelled => (
            Exit::Clean,
            None,
            now + lifecycle.export_timeout + SHUTDOWN_MARGIN,
            None,
        ),
        LoopEnd::Fatal(message) => {
            error!("fatal: {message}");
            if let Err(e) = client.exit_error("EventLoopError", &message).await {
                warn!(error = %e, "cannot report the fatal error");
            }
            (
                Exit::Fatal,
                None,
                now + lifecycle.export_timeout + SHUTDOWN_MARGIN,
                Some(message),
            )
        }
    };
    // Invocations still open never got an answer: their spans end as faults.
    let why = match (&reason, exit) {
        (Some(r), _) => format!("shutdown: {}", r.as_str()),
        (None, Exit::Fatal) => "shutdown: fatal".to_owned(),
        (None, _) => "shutdown".to_owned(),
    };
    lifecycle.fail_open_invocations(&why).await;
    let stats = lifecycle
        .shutdown(shutdown_deadline, &root, &mut servers)
        .await;
    buffer_task.abort();
    lifecycle.self_metrics.emit("shutdown", &stats, None);
    let telemetry = counters.snapshot();
    info!(
        reason = match (&reason, exit) {
            (Some(r), _) => r.as_str(),
            (None, Exit::Fatal) => "fatal",
            (None, _) => "cancelled",
        },
        invocations = lifecycle.invocations,
        telemetry_batches = telemetry.batches,
        telemetry_malformed = telemetry.malformed_batches,
        "shutdown: {stats}"
    );
    RunSummary {
        exit,
        stats,
        telemetry,
        invocations: lifecycle.invocations,
        shutdown_reason: reason,
        error,
    }
}

/// `deadlineMs` (Unix milliseconds) as a monotonic instant; a past deadline is `now`.
pub fn instant_from_unix_ms(unix_ms: u64, now_system: SystemTime, now: Instant) -> Instant {
    let now_ms = now_system
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    now + Duration::from_millis(unix_ms.saturating_sub(now_ms))
}

/// The request id of the telemetry records that carry one.
fn request_id_of(record: &TelemetryRecord) -> Option<&str> {
    match record {
        TelemetryRecord::Start(s) => Some(&s.request_id),
        TelemetryRecord::RuntimeDone(d) => Some(&d.request_id),
        TelemetryRecord::Report(r) => Some(&r.request_id),
        _ => None,
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_nanos_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

async fn stop_servers(servers: &mut JoinSet<()>) {
    let _ = tokio::time::timeout(SERVER_STOP_GRACE, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    servers.abort_all();
}

enum LoopEnd {
    Shutdown {
        reason: ShutdownReason,
        deadline_ms: u64,
    },
    Cancelled,
    Fatal(String),
}

enum Waited {
    Event(Result<NextEvent, crate::lambda::extensions_api::ApiError>),
    Cancelled,
}

/// The state the event loop owns.
struct Lifecycle {
    buffer: BufferHandle,
    pressure: Arc<Notify>,
    stats: Arc<Stats>,
    exporter: Exporter,
    policy: FlushPolicy,
    /// Managed Instances: the background flush period (no INVOKE events to flush at).
    background: Option<Duration>,
    /// When the next background flush is due.
    next_background: Instant,
    /// Lambda Managed Instances: never frozen, so a flush may run while `event/next` waits.
    managed_instances: bool,
    /// The Telemetry API is subscribed and has not gone silent: an invocation end may be
    /// waited for on its word. Cleared when an invocation ends by its deadline with no signal,
    /// set again by the next `platform.runtimeDone`.
    telemetry_usable: bool,
    /// Buffer pressure came while `event/next` was outstanding (on-demand Lambda may freeze the
    /// sandbox then): the flush waits for the next INVOKE.
    pressure_deferred: bool,
    /// Pauses exports while the upstream cannot be reached (upstream_breaker.rs).
    breaker: UpstreamBreaker,
    platform: Option<PlatformSpans>,
    telemetry_rx: mpsc::Receiver<Delivery>,
    /// Answers to the signallers of invocation ends, held until `event/next` is on its way.
    held_answers: Vec<AnswerHold>,
    end_rx: InvocationEndReceiver,
    ended: RecentIds,
    export_timeout: Duration,
    invocations: u64,
    /// The Runtime API proxy's invocation spans (None: no proxy).
    invocation_spans: Option<SharedInvocationSpans>,
    /// `OTEL_XRAY_INVOCATION_SPAN=merge`.
    merge_invocation_spans: bool,
    /// Proxy spans replaced by the function's own, across flushes.
    replaced: Replaced,
    self_metrics: SelfMetrics<std::io::Stdout>,
}

impl Lifecycle {
    async fn event_loop(
        &mut self,
        client: &ExtensionsClient,
        cancel: &CancellationToken,
    ) -> LoopEnd {
        let mut failures = 0u32;
        loop {
            let event = match self.wait_for_next_event(client, cancel).await {
                Waited::Cancelled => return LoopEnd::Cancelled,
                Waited::Event(Ok(event)) => {
                    failures = 0;
                    event
                }
                Waited::Event(Err(e)) => {
                    failures += 1;
                    if failures >= NEXT_EVENT_ATTEMPTS {
                        return LoopEnd::Fatal(format!(
                            "event/next failed {failures} times in a row: {e}"
                        ));
                    }
                    warn!(error = %e, attempt = failures, "event/next failed; retrying");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(failures))).await;
                    continue;
                }
            };
            match event {
                NextEvent::Invoke(invoke) => {
                    if let Some(end) = self.on_invoke(invoke, cancel).await {
                        return end;
                    }
                }
                NextEvent::Shutdown(s) => {
                    info!(reason = %s.reason, "SHUTDOWN");
                    return LoopEnd::Shutdown {
                        reason: s.reason,
                        deadline_ms: s.deadline_ms,
                    };
                }
                NextEvent::Other(kind) => debug!(event_type = %kind, "ignoring event"),
            }
        }
    }

    /// Blocks on `event/next` while serving telemetry, end signals and buffer pressure.
    async fn wait_for_next_event(
        &mut self,
        client: &ExtensionsClient,
        cancel: &CancellationToken,
    ) -> Waited {
        let next = client.next_event();
        tokio::pin!(next);
        // `event/next` is handed to its connection (one poll) before the held answers to
        // Lambda's deliveries are let go, so that it is written first.
        let first = std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await;
        self.held_answers.clear();
        if let Poll::Ready(result) = first {
            return Waited::Event(result);
        }
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Waited::Cancelled,
                result = &mut next => return Waited::Event(result),
                Some(batch) = self.telemetry_rx.recv() => {
                    self.on_telemetry(batch).await;
                    self.held_answers.clear();
                }
                Some(mut end) = self.end_rx.recv() => {
                    self.on_end_signal(&mut end);
                    self.held_answers.clear();
                }
                () = self.pressure.notified() => {
                    if self.managed_instances {
                        self.flush(FlushReason::Pressure, None).await;
                    } else {
                        // Lambda may freeze the sandbox any time now: an export cut by a freeze
                        // would be lost. Flushed as soon as the next INVOKE thaws it.
                        debug!("buffer pressure between invocations: flushed at the next INVOKE");
                        self.pressure_deferred = true;
                    }
                }
                () = tokio::time::sleep_until(self.next_background), if self.background.is_some() => {
                    self.background_flush().await;
                }
            }
        }
    }

    /// Managed Instances: ends the invocation spans whose deadline has passed (as timeouts),
    /// then flushes whatever is buffered; the next one is due a period later. Never overlaps
    /// another flush: the lifecycle task alone flushes, one at a time.
    async fn background_flush(&mut self) {
        let period = self
            .background
            .unwrap_or(crate::config::defaults::MANAGED_INSTANCES_FLUSH);
        self.expire_invocations().await;
        let buffered = self.buffer.len().await.unwrap_or(0);
        if buffered > 0 {
            self.flush(FlushReason::Interval, None).await;
        }
        self.next_background = Instant::now() + period;
    }

    /// Ends, as timeouts, the proxy's invocation spans whose deadline passed more than
    /// [`INVOKE_END_MARGIN`] ago without an answer from the runtime.
    async fn expire_invocations(&mut self) {
        let Some(shared) = &self.invocation_spans else {
            return;
        };
        let now_ms = unix_nanos_now() / 1_000_000;
        let margin = u64::try_from(INVOKE_END_MARGIN.as_millis()).unwrap_or(u64::MAX);
        let rs = {
            let mut spans = lock(shared);
            let expired = spans.expire(now_ms.saturating_sub(margin), unix_nanos_now());
            (!expired.is_empty()).then(|| spans.resource_spans(expired))
        };
        if let Some(rs) = rs
            && let Err(e) = self.buffer.push(SpanBatch::new(vec![rs])).await
        {
            debug!(error = %e, "expired invocation spans not buffered");
        }
    }

    /// Handles one INVOKE; returns how the loop must end if cancellation came meanwhile.
    async fn on_invoke(
        &mut self,
        invoke: InvokeEvent,
        cancel: &CancellationToken,
    ) -> Option<LoopEnd> {
        let now = Instant::now();
        self.invocations += 1;
        let deadline = if invoke.deadline_ms == 0 {
            now + MISSING_DEADLINE_BUDGET
        } else {
            instant_from_unix_ms(invoke.deadline_ms, SystemTime::now(), now)
        };
        if let Some(platform) = &mut self.platform {
            platform.on_invoke(&invoke);
        }
        if std::mem::take(&mut self.pressure_deferred) {
            self.flush(FlushReason::Pressure, Some(deadline)).await;
        }
        let plan = self.policy.on_invocation_start(now);
        debug!(
            request_id = %invoke.request_id,
            flush_at_end = plan.map_or("no", FlushReason::as_str),
            deadline_in_ms = deadline.saturating_duration_since(now).as_millis() as u64,
            "INVOKE"
        );
        let reason = plan?;

        let wait_until = deadline.checked_sub(INVOKE_END_MARGIN).unwrap_or(now);
        // Without a Telemetry API to trust, only the proxy can say when this invocation ends:
        // it must have seen the request by the time the grace is over, or nothing will.
        let mut grace_until = if self.telemetry_usable {
            None
        } else if self.invocation_spans.is_some() {
            Some(now + PROXY_GRACE)
        } else {
            Some(now)
        };
        let ended_by = if self.ended.contains(&invoke.request_id) {
            "already_ended"
        } else {
            loop {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return Some(LoopEnd::Cancelled),
                    Some(batch) = self.telemetry_rx.recv() => {
                        self.on_telemetry(batch).await;
                        if self.ended.contains(&invoke.request_id) {
                            break EndSource::Telemetry.as_str();
                        }
                    }
                    Some(mut end) = self.end_rx.recv() => {
                        self.on_end_signal(&mut end);
                        if end.request_id == invoke.request_id {
                            break end.source.as_str();
                        }
                    }
                    () = tokio::time::sleep_until(grace_until.unwrap_or(wait_until)),
                        if grace_until.is_some() => {
                        if !self.proxy_saw(&invoke.request_id) {
                            break "no_signal";
                        }
                        grace_until = None;
                    }
                    () = tokio::time::sleep_until(wait_until) => break "deadline",
                    () = self.pressure.notified() => {
                        self.flush(FlushReason::Pressure, Some(deadline)).await;
                    }
                }
            }
        };
        debug!(
            request_id = %invoke.request_id,
            ended_by,
            waited_ms = now.elapsed().as_millis() as u64,
            "invocation ended"
        );
        if ended_by == "no_signal" {
            // Nothing will say when the runtime answers: do not hold `event/next` (that would
            // bill every invocation to its timeout). What is buffered now goes out before
            // `event/next`, while the sandbox cannot freeze; this invocation's own spans go at
            // the next INVOKE or at SHUTDOWN.
            self.flush(reason, Some(deadline)).await;
            return None;
        }
        if ended_by == "deadline" {
            if self.telemetry_usable && !self.proxy_saw(&invoke.request_id) {
                warn!(
                    request_id = %invoke.request_id,
                    "no end-of-invocation signal came (the Telemetry API is silent and the \
                     runtime does not use the proxy): invocations are no longer held; spans \
                     are flushed at the next INVOKE and at SHUTDOWN"
                );
                self.telemetry_usable = false;
            }
            self.end_invocation_span(
                &invoke.request_id,
                InvocationOutcome::Fault {
                    reason: "timeout".to_owned(),
                },
            )
            .await;
        }
        self.flush(reason, Some(deadline)).await;
        None
    }

    fn on_end_signal(&mut self, end: &mut InvocationEnd) {
        self.held_answers.extend(end.hold.take());
        debug!(
            request_id = %end.request_id,
            source = end.source.as_str(),
            error_type = end.error_type.as_deref().unwrap_or(""),
            "end of invocation signalled"
        );
        self.ended.insert(&end.request_id);
    }

    /// Feeds a delivery to the platform-span builder, pushes the spans it finished into the
    /// buffer (before anyone can flush for the same `runtimeDone`), and notes ended requests.
    async fn on_telemetry(&mut self, delivery: Delivery) {
        let Delivery {
            events: batch,
            hold,
        } = delivery;
        self.held_answers.extend(hold);
        let now = unix_nanos_now();
        let mut spans = Vec::new();
        for event in &batch {
            match &event.record {
                TelemetryRecord::RuntimeDone(done) => {
                    self.telemetry_usable = true;
                    debug!(
                        request_id = %done.request_id,
                        status = done.status.as_str(),
                        "platform.runtimeDone"
                    );
                    self.ended.insert(&done.request_id);
                    // Lambda saw the end first (or the runtime never answered: timeout, crash).
                    let outcome = if done.status.is_success() {
                        InvocationOutcome::Response
                    } else {
                        InvocationOutcome::Fault {
                            reason: done
                                .error_type
                                .clone()
                                .unwrap_or_else(|| done.status.as_str().to_owned()),
                        }
                    };
                    self.end_invocation_span(&done.request_id, outcome).await;
                }
                // Managed Instances send no runtimeDone: a failed report ends the proxy's span.
                TelemetryRecord::Report(report)
                    if report.status.as_ref().is_some_and(|s| !s.is_success()) =>
                {
                    let reason = report.error_type.clone().unwrap_or_else(|| {
                        report
                            .status
                            .as_ref()
                            .map_or("failure", |s| s.as_str())
                            .to_owned()
                    });
                    self.end_invocation_span(
                        &report.request_id,
                        InvocationOutcome::Fault { reason },
                    )
                    .await;
                }
                TelemetryRecord::LogsDropped(d) => warn!(
                    dropped_records = d.dropped_records,
                    reason = %d.reason,
                    "Lambda dropped telemetry for this extension"
                ),
                TelemetryRecord::Unknown { event_type, .. } => {
                    debug!(event_type = %event_type, "unknown telemetry event kept raw");
                }
                TelemetryRecord::Invalid {
                    event_type, error, ..
                } => {
                    debug!(event_type = %event_type, error = %error, "telemetry record not understood")
                }
                _ => {}
            }
            if let Some(platform) = &mut self.platform {
                if let (Some(shared), Some(request_id)) =
                    (&self.invocation_spans, request_id_of(&event.record))
                    && let Some(context) = lock(shared).owner_context(request_id)
                {
                    platform.claim(request_id, context);
                }
                if crate::contain::contain("building platform spans", || {
                    platform.on_event(event, now, &mut spans);
                })
                .is_none()
                {
                    debug!("platform event skipped after a contained bug");
                }
            }
        }
        if spans.is_empty() {
            return;
        }
        if let Some(platform) = &self.platform {
            let batch = SpanBatch::new(vec![platform.resource_spans(spans)]);
            if let Err(e) = self.buffer.push(batch).await {
                debug!(error = %e, "platform spans not buffered");
            }
        }
    }

    /// True when the Runtime API proxy has seen `request_id` (so it will signal its end).
    fn proxy_saw(&self, request_id: &str) -> bool {
        self.invocation_spans
            .as_ref()
            .is_some_and(|shared| lock(shared).owner_context(request_id).is_some())
            || self.ended.contains(request_id)
    }

    /// Ends the proxy's span of `request_id` if it is still open, and buffers it.
    async fn end_invocation_span(&mut self, request_id: &str, outcome: InvocationOutcome) {
        let Some(shared) = &self.invocation_spans else {
            return;
        };
        let rs = {
            let mut spans = lock(shared);
            spans
                .end(request_id, outcome, unix_nanos_now())
                .map(|span| spans.resource_spans(vec![span]))
        };
        if let Some(rs) = rs
            && let Err(e) = self.buffer.push(SpanBatch::new(vec![rs])).await
        {
            debug!(error = %e, "invocation span not buffered");
        }
    }

    /// Ends every open proxy span as a fault (SHUTDOWN: the runtime never answered).
    async fn fail_open_invocations(&mut self, reason: &str) {
        let Some(shared) = &self.invocation_spans else {
            return;
        };
        let rs = {
            let mut spans = lock(shared);
            let failed = spans.fail_open(reason, unix_nanos_now());
            (!failed.is_empty()).then(|| spans.resource_spans(failed))
        };
        if let Some(rs) = rs
            && let Err(e) = self.buffer.push(SpanBatch::new(vec![rs])).await
        {
            debug!(error = %e, "invocation spans not buffered");
        }
    }

    /// Flushes now; `limit` is the invocation deadline the flush must end before.
    async fn flush(&mut self, reason: FlushReason, limit: Option<Instant>) {
        let now = Instant::now();
        let mut deadline = now + self.export_timeout;
        if let Some(limit) = limit {
            deadline = deadline.min(limit.checked_sub(INVOKE_FLUSH_MARGIN).unwrap_or(now));
        }
        if deadline <= now + MIN_FLUSH_BUDGET {
            debug!(reason = %reason, "flush skipped: too close to the invocation deadline");
            return;
        }
        self.flush_until(reason, deadline).await;
    }

    /// Drains the buffer and exports it by `deadline`. Returns the spans handed to the exporter.
    async fn flush_until(&mut self, reason: FlushReason, deadline: Instant) -> usize {
        let started = Instant::now();
        if reason != FlushReason::Shutdown && !self.breaker.allows(started) {
            debug!(reason = %reason, "flush skipped: the upstream is unreachable, exports are paused");
            return 0;
        }
        let Ok(mut batch) = self.buffer.drain().await else {
            return 0;
        };
        if self.managed_instances
            && reason != FlushReason::Shutdown
            && self.merge_invocation_spans
            && let Some(shared) = &self.invocation_spans
        {
            // Managed Instances flush while invocations run: the function's own FaaS span of a
            // request whose proxy span is still open would be sent before the proxy span it
            // must replace. Requests naming an open request id wait for a flush after its end.
            let open = lock(shared).open_request_ids();
            let needles: Vec<&[u8]> = open.iter().map(|id| id.as_bytes()).collect();
            let held = batch.take_containing(&needles);
            let held_spans = held.spans;
            if held_spans > 0 {
                debug!(
                    held = held_spans,
                    "spans of running invocations held for a later flush"
                );
                if let Err(e) = self.buffer.requeue(held).await {
                    warn!(error = %e, spans = held_spans, "held spans could not be requeued");
                    self.stats
                        .add_dropped(DropReason::Shutdown, held_spans as u64);
                }
            }
        }
        if self.merge_invocation_spans && self.invocation_spans.is_some() {
            // The function's own FaaS span took the proxy span's place: the proxy span's content
            // goes out (or is dropped) inside it, so the proxy span leaves the accounting rather
            // than being counted as exported before the export has happened.
            let merged = merge_encoded_function_spans(&mut batch, &mut self.replaced);
            if merged > 0 {
                self.stats.remove_folded(merged as u64);
                debug!(merged, "invocation spans merged into the function's own");
            }
        }
        self.policy.record_flush(started);
        if batch.is_empty() {
            debug!(reason = %reason, spans = 0, "flush: nothing buffered");
            return 0;
        }
        let spans = batch.spans;
        let report = match tokio::time::timeout_at(
            deadline + EXPORT_GRACE,
            self.exporter.export(batch, deadline),
        )
        .await
        {
            Ok(report) => report,
            Err(_) => ExportReport {
                exported: 0,
                dropped: vec![(DropReason::ExportTimeout, spans)],
                errors: 1,
            },
        };
        for _ in 0..report.errors {
            self.stats.add_export_error();
        }
        let outcome = if report.exported > 0 || report.dropped(DropReason::ExportRejected) > 0 {
            Outcome::Reached
        } else if report.errors > 0 {
            Outcome::Unreachable
        } else {
            Outcome::Reached
        };
        match self.breaker.record(outcome, Instant::now()) {
            Change::Opened(pause) => warn!(
                pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                "the upstream could not be reached in {} flushes in a row: exports pause, then \
                 one flush probes it; spans stay buffered meanwhile (beyond \
                 OTEL_XRAY_BUFFER_MAX_SPANS they are refused and counted as buffer_full)",
                upstream_breaker::FAILURES_TO_OPEN
            ),
            Change::Closed => info!("the upstream answers again: exports resume"),
            Change::None => {}
        }
        let exported = report.exported;
        let mut dropped = 0;
        self.stats.add_exported(exported as u64);
        for &(why, n) in &report.dropped {
            self.stats.add_dropped(why, n as u64);
            dropped += n;
        }
        if exported + dropped < spans {
            // The exporter must account for every span; never lose one silently.
            let missing = spans - exported - dropped;
            warn!(
                missing,
                "exporter report is short; counting the rest as failed"
            );
            self.stats
                .add_dropped(DropReason::ExportFailed, missing as u64);
            dropped += missing;
            self.stats.add_export_error();
        }
        self.stats.add_flush();
        let figures = FlushFigures {
            reason: reason.to_string(),
            spans: spans as u64,
            exported: exported as u64,
            dropped: dropped as u64,
            elapsed: started.elapsed(),
        };
        let totals = self.stats.snapshot();
        self_metrics::log_flush(&figures, &totals);
        self.self_metrics.emit("flush", &totals, Some(&figures));
        spans
    }

    /// The final flush, then servers stopped and leftovers counted. Returns the final counters.
    async fn shutdown(
        &mut self,
        deadline: Instant,
        root: &CancellationToken,
        servers: &mut JoinSet<()>,
    ) -> StatsSnapshot {
        // Telemetry already delivered may still finish spans (e.g. the last runtimeDone).
        while let Ok(batch) = self.telemetry_rx.try_recv() {
            self.on_telemetry(batch).await;
        }
        self.held_answers.clear();
        let now = Instant::now();
        let flush_deadline = match deadline.checked_sub(SHUTDOWN_MARGIN) {
            Some(d) if d > now + MIN_FLUSH_BUDGET => d,
            // Less than the margin left: a short attempt beats none.
            _ => (now + MIN_FLUSH_BUDGET * 5).min(deadline.max(now + MIN_FLUSH_BUDGET)),
        };
        let reason = self.policy.on_shutdown();
        for _ in 0..3 {
            let flushed = self.flush_until(reason, flush_deadline).await;
            let left = self.buffer.len().await.unwrap_or(0);
            if flushed == 0 || left == 0 || Instant::now() + MIN_FLUSH_BUDGET >= flush_deadline {
                break;
            }
        }
        root.cancel();
        stop_servers(servers).await;
        if let Ok(left) = self.buffer.drain().await
            && !left.is_empty()
        {
            self.stats
                .add_dropped(DropReason::Shutdown, left.spans as u64);
        }
        self.stats.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_ms_to_instant() {
        let now = Instant::now();
        let sys = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        assert_eq!(
            instant_from_unix_ms(1_700_000_001_500, sys, now),
            now + Duration::from_millis(1500)
        );
        assert_eq!(instant_from_unix_ms(1_600_000_000_000, sys, now), now);
        assert_eq!(instant_from_unix_ms(0, sys, now), now);
    }

    #[test]
    fn exit_codes() {
        let s = RunSummary::failed(Exit::InitFailed, "x".into(), Stats::default().snapshot());
        assert_eq!(s.exit_code(), ExitCode::FAILURE);
        let clean = RunSummary {
            exit: Exit::Clean,
            ..s
        };
        assert_eq!(clean.exit_code(), ExitCode::SUCCESS);
    }

    #[test]
    fn receiver_hints_name_the_variable() {
        let http = ReceiveError::Bind {
            addr: "127.0.0.1:4318".parse().unwrap(),
            what: "OTLP/HTTP",
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(receiver_port_hint(&http).contains(OTEL_XRAY_HTTP_PORT));
        let grpc = ReceiveError::Bind {
            addr: "127.0.0.1:4317".parse().unwrap(),
            what: "OTLP/gRPC",
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let hint = receiver_port_hint(&grpc);
        assert!(
            hint.contains(OTEL_XRAY_GRPC_PORT) && hint.contains("4317"),
            "{hint}"
        );
    }

    #[test]
    fn extension_name_is_a_file_name() {
        let name = default_extension_name();
        assert!(!name.is_empty());
        assert!(!name.contains('/'));
    }
}
