//! The sandbox's shared state: one execution environment (processes, registrations, the
//! current invocation), guarded by one mutex, with a version counter that wakes waiters.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::ids::InvocationTrace;
use crate::managed::ManagedInstances;
use crate::telemetry::TelemetryHub;
use crate::timeline::Timeline;

/// A queue a long-polling `next` call takes its events from. The receiver sits behind an async
/// mutex so that a second poller waits for the first; `recv` is cancel-safe, so an event is
/// never lost when a poller goes away.
#[derive(Debug, Clone)]
pub struct Mailbox<T> {
    pub tx: mpsc::UnboundedSender<T>,
    pub rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<T>>>,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Mailbox<T> {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }

    /// Wait for the next event; pends forever once the environment is gone.
    pub async fn recv(&self) -> T {
        let mut rx = self.rx.lock().await;
        match rx.recv().await {
            Some(v) => v,
            None => std::future::pending().await,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at: Instant,
}

/// One process of the sandbox.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    pub exit: Option<Exit>,
    pub killed: bool,
}

impl Proc {
    pub fn alive(&self) -> bool {
        self.exit.is_none()
    }
}

/// One extension: external (a process started from the layer) or internal (registered from
/// the runtime process).
#[derive(Debug)]
pub struct Ext {
    pub name: String,
    pub external: bool,
    pub proc: Option<Proc>,
    pub id: Option<String>,
    pub events: Vec<String>,
    pub account_id_feature: bool,
    pub mailbox: Mailbox<Value>,
    /// Blocked in (or done and about to call) `event/next`: has nothing left to do.
    pub ready: bool,
    pub next_count: u32,
    pub last_next_at: Option<Instant>,
    pub received_shutdown: bool,
    pub init_error: Option<String>,
    pub exit_error: Option<String>,
}

impl Ext {
    pub fn registered(&self) -> bool {
        self.id.is_some()
    }

    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }

    pub fn exited(&self) -> bool {
        self.proc.as_ref().is_some_and(|p| !p.alive())
    }
}

/// What the runtime receives from `invocation/next`.
#[derive(Debug, Clone)]
pub struct RuntimeEvent {
    pub request_id: String,
    pub deadline_ms: u64,
    pub function_arn: String,
    pub trace_header: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub payload: Vec<u8>,
    /// `Lambda-Runtime-Invocation-Id` (Lambda Managed Instances only).
    pub invocation_id: Option<String>,
}

/// The runtime's answer to one invocation.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response {
        body: Vec<u8>,
    },
    Error {
        error_type: String,
        body: String,
        /// Set for errors Lambda itself decides (e.g. a response that is too large).
        status: crate::model::InvokeStatus,
    },
}

/// The invocation in progress.
#[derive(Debug, Clone)]
pub struct Current {
    pub request_id: String,
    pub trace: InvocationTrace,
    pub span_id: String,
    pub started: Instant,
    pub started_epoch_ms: u64,
    pub deadline: Instant,
    pub deadline_epoch_ms: u64,
    pub outcome: Option<Outcome>,
    pub first_byte_at: Option<Instant>,
    pub runtime_done_at: Option<Instant>,
    /// Names of the extensions that got this INVOKE, with the time of their next `event/next`.
    pub ext_next: Vec<(String, Option<Instant>)>,
    /// Lambda Managed Instances: the `invocation/next` call (worker slot) that got this event.
    pub worker: Option<u64>,
    /// Lambda Managed Instances: when the runtime's answer arrived (its request head) and when
    /// its body was complete (the RIE's "get response" and "sent response" times).
    pub response_head_at: Option<Instant>,
    pub response_done_at: Option<Instant>,
    /// Lambda Managed Instances: why the environment cut this invocation short.
    pub aborted: Option<Abort>,
}

impl Current {
    /// A new invocation starting now, with its trace (from the caller's header, if any) and its
    /// deadline `timeout` from now.
    pub fn start(
        trace_header: Option<&str>,
        active_tracing: bool,
        timeout: std::time::Duration,
    ) -> Current {
        let started_epoch_ms = crate::time::now_epoch_ms();
        let started = Instant::now();
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        Current {
            request_id: crate::ids::request_id(),
            trace: crate::ids::invocation_trace(
                trace_header,
                active_tracing,
                started_epoch_ms / 1000,
            ),
            span_id: crate::ids::span_id(),
            started,
            started_epoch_ms,
            deadline: started + timeout,
            deadline_epoch_ms: started_epoch_ms + timeout_ms,
            outcome: None,
            first_byte_at: None,
            runtime_done_at: None,
            ext_next: Vec::new(),
            worker: None,
            response_head_at: None,
            response_done_at: None,
            aborted: None,
        }
    }
}

/// Why a Lambda Managed Instances environment ended an invocation before it was answered
/// (the environment shuts down, or a process of it crashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abort {
    pub status: crate::model::InvokeStatus,
    pub error_type: String,
    pub message: String,
}

/// A runtime `invocation/next` call waiting for an event (Lambda Managed Instances).
#[derive(Debug)]
pub struct Worker {
    pub id: u64,
    pub tx: oneshot::Sender<RuntimeEvent>,
}

/// Phase of the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Init,
    Idle,
    Invoke,
    Shutdown,
}

/// One execution environment (what a reset throws away).
#[derive(Debug)]
pub struct Env {
    pub generation: u64,
    pub phase: Phase,
    pub init_started: Instant,
    pub extensions: Vec<Ext>,
    pub runtime: Option<Proc>,
    pub runtime_mailbox: Mailbox<RuntimeEvent>,
    pub runtime_ready: bool,
    pub runtime_next_count: u32,
    pub init_error: Option<(String, String)>,
    pub registration_closed: bool,
    pub current: Option<Current>,
    pub frozen: bool,
    /// Lambda Managed Instances: outstanding runtime `invocation/next` calls, oldest first.
    pub idle_workers: VecDeque<Worker>,
    pub next_worker_id: u64,
    /// Lambda Managed Instances: invocations in flight.
    pub inflight: Vec<Current>,
    /// Lambda Managed Instances: request ids that timed out (a late answer gets 410), newest last.
    pub timed_out: VecDeque<String>,
    /// Lambda Managed Instances: an extension's refused registration `(name, message, when)`,
    /// which fails the init once that extension exits or [`crate::managed::REFUSAL_GRACE`] passed.
    pub refused_registration: Option<(String, String, Instant)>,
    /// Lambda Managed Instances: what the next shutdown tells in-flight invocations.
    pub abort_cause: Option<Abort>,
}

impl Env {
    pub fn new(generation: u64) -> Self {
        Self {
            generation,
            phase: Phase::Init,
            init_started: Instant::now(),
            extensions: Vec::new(),
            runtime: None,
            runtime_mailbox: Mailbox::new(),
            runtime_ready: false,
            runtime_next_count: 0,
            init_error: None,
            registration_closed: false,
            current: None,
            frozen: false,
            idle_workers: VecDeque::new(),
            next_worker_id: 0,
            inflight: Vec::new(),
            timed_out: VecDeque::new(),
            refused_registration: None,
            abort_cause: None,
        }
    }

    /// The in-flight invocation `request_id` (Lambda Managed Instances).
    pub fn inflight_mut(&mut self, request_id: &str) -> Option<&mut Current> {
        self.inflight
            .iter_mut()
            .find(|c| c.request_id == request_id)
    }

    pub fn ext_by_id(&mut self, id: &str) -> Option<&mut Ext> {
        self.extensions
            .iter_mut()
            .find(|e| e.id.as_deref() == Some(id))
    }

    /// Process ids of every live process (for signals and memory).
    pub fn pids(&self) -> Vec<i32> {
        self.runtime
            .iter()
            .chain(self.extensions.iter().filter_map(|e| e.proc.as_ref()))
            .filter(|p| p.alive())
            .map(|p| p.pid)
            .collect()
    }
}

/// Everything the API server and the lifecycle share.
#[derive(Debug)]
pub struct State {
    pub generation: u64,
    pub env: Option<Env>,
    /// Process groups ever started, killed when the sandbox is dropped.
    pub all_pgids: Vec<i32>,
    pub shut_down: bool,
    /// Init duration of the environment, until the first invocation (its cold start) takes it.
    pub pending_init_ms: Option<f64>,
    /// Reports of every reset (timeout, crash) so far.
    pub resets: Vec<crate::model::ShutdownReport>,
}

pub struct Shared {
    pub cfg: Config,
    /// Lambda Managed Instances mode (from the function's environment), or on-demand.
    pub managed: Option<ManagedInstances>,
    pub started: Instant,
    pub api_addr: std::net::SocketAddr,
    pub log_dir: PathBuf,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    pub timeline: Arc<Timeline>,
    pub hub: Arc<TelemetryHub>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("api_addr", &self.api_addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(
        cfg: Config,
        started: Instant,
        api_addr: std::net::SocketAddr,
        log_dir: PathBuf,
        timeline: Arc<Timeline>,
        hub: Arc<TelemetryHub>,
    ) -> Self {
        let (version, _) = watch::channel(0);
        Self {
            managed: cfg.managed_instances(),
            cfg,
            started,
            api_addr,
            log_dir,
            state: Mutex::new(State {
                generation: 0,
                env: None,
                all_pgids: Vec::new(),
                shut_down: false,
                pending_init_ms: None,
                resets: Vec::new(),
            }),
            version,
            timeline,
            hub,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wake every waiter (call after changing the state, without holding the lock).
    pub fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wait until `f` returns `Some`, re-checking after every state change, or until `deadline`
    /// (then `f` is checked one last time).
    pub async fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut f: impl FnMut(&mut State) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            if let Some(v) = f(&mut self.lock()) {
                return Some(v);
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d.into(), rx.changed())
                        .await
                        .is_err()
                    {
                        return f(&mut self.lock());
                    }
                }
                None => {
                    let _ = rx.changed().await;
                }
            }
        }
    }

    /// Epoch ms of a monotonic instant.
    pub fn epoch_ms_of(&self, current: &Current, t: Instant) -> u64 {
        let delta = t.saturating_duration_since(current.started).as_millis();
        current.started_epoch_ms + u64::try_from(delta).unwrap_or(0)
    }
}
