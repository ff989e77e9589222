//! # local-lambda: a Lambda execution environment on this machine
//!
//! One HTTP/1.1 server on 127.0.0.1 is the sandbox's `AWS_LAMBDA_RUNTIME_API`, serving the
//! Runtime API, the Extensions API and the Telemetry API to real processes that this crate
//! starts and supervises the way Lambda does:
//!
//! ```text
//!  LocalLambda::start ──▶ Init: start <layer>/extensions/* ──register──▶ start runtime
//!                         (through AWS_LAMBDA_EXEC_WRAPPER)  ──next (all)──▶ Idle
//!  invoke(payload)    ──▶ INVOKE to extensions + event to runtime ──response──▶ runtimeDone
//!                         ──every extension back in event/next──▶ report  [freeze]
//!                         timeout / crash ──▶ reset: kill runtime, SHUTDOWN(timeout|failure)
//!  shutdown()         ──▶ SIGTERM runtime, SHUTDOWN(spindown, now+2 s), SIGKILL at deadline
//!  Telemetry API      ──▶ buffered POSTs of [{time,type,record}] to http://sandbox.localdomain:PORT
//! ```
//!
//! With `AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances` in the function's environment
//! the sandbox runs as a Lambda Managed Instances environment instead: no INVOKE to extensions,
//! no freeze, up to `AWS_LAMBDA_MAX_CONCURRENCY` invocations at once, each on its own
//! `invocation/next`. [`managed`] describes that mode, where it follows AWS's Runtime Interface
//! Emulator and where it deliberately differs.
//!
//! It serves the extension's integration tests and benchmarks (this library) and the Python
//! end-to-end suite and `make demo` (the `local-lambda` binary and its control API, see
//! [`control`]).
//!
//! ## Why not `lambda-simulator`
//!
//! The crate `lambda-simulator` 0.2.0 implements the three APIs with axum and can SIGSTOP
//! processes, but it does not fit these needs:
//! - it does not run the sandbox: no start of `<layer>/extensions/*`, no runtime started only
//!   after every extension registered, no `AWS_LAMBDA_EXEC_WRAPPER` handling, no SIGTERM /
//!   SIGKILL at the shutdown deadline, no reset after a timeout or crash;
//! - responses go through axum/hyper with no control over writes; our benchmarks need every
//!   response in one write on a `TCP_NODELAY` socket (otherwise delayed ACKs add ~40 ms);
//! - it does not check registrations against executable names, nor telemetry destinations
//!   (port 9001, non-sandbox hosts) as Lambda does, and has no delivery knobs (delay,
//!   duplicate, drop) nor a timeline of when each extension called `event/next`;
//! - it has no control API for tests in other languages, and brings axum, reqwest and chrono.
//!
//! So this crate is an emulator of our own, written from AWS's documentation (Extensions API,
//! Runtime API, Telemetry API, execution environment lifecycle) and the error shapes of AWS's
//! runtime interface emulator.
//!
//! ## Known differences from Lambda
//! No TCP telemetry destinations, no Logs API (`2020-08-15/logs`), no SnapStart/restore
//! events, no `platform.logsDropped`, no network or filesystem isolation (processes run as this
//! user, `/tmp` is shared), memory is not limited (only measured), no X-Ray daemon: set
//! `AWS_XRAY_DAEMON_ADDRESS` yourself to a loopback listener if you need one.

pub mod api;
pub mod config;
pub mod control;
pub mod http;
pub mod ids;
pub mod lifecycle;
pub mod managed;
pub mod model;
pub mod process;
pub mod state;
pub mod telemetry;
pub mod time;
pub mod timeline;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{Config, TelemetryKnobs};
pub use managed::ManagedInstances;
pub use model::{
    ExtensionShutdown, ExtensionTiming, InvokeError, InvokeRequest, InvokeResult, InvokeStatus,
    InvokeTimings, ProcessExit, Rejection, ShutdownReport, TelemetryDelivery, TimelineEvent,
};

/// Errors of the library API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot bind the Runtime API on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the sandbox has been shut down")]
    ShutDown,
    /// Lambda Managed Instances: the environment refused the invoke (all workers busy, or not
    /// ready); nothing ran.
    #[error("invoke rejected: {} (HTTP {})", .0.error_type, .0.http_status)]
    Rejected(Rejection),
}

/// The outcome of the Init phase.
#[derive(Debug, Clone, PartialEq)]
pub enum InitOutcome {
    /// Init completed in this many ms.
    Ready(f64),
    /// Init failed (the next invoke retries it).
    Failed {
        status: InvokeStatus,
        error_type: String,
        message: String,
    },
}

/// A running local Lambda sandbox.
#[derive(Debug)]
pub struct LocalLambda {
    shared: Arc<state::Shared>,
    /// One lifecycle operation at a time (an on-demand sandbox runs one invocation at a time;
    /// on Lambda Managed Instances only init and shutdown take it).
    op: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
    init: Option<InitOutcome>,
}

impl LocalLambda {
    /// Bind the Runtime API and (unless `eager_init` is off) run the Init phase.
    pub async fn start(cfg: Config) -> Result<Self, Error> {
        if cfg.runtime_cmd.is_empty() {
            return Err(Error::Config("runtime_cmd is empty".into()));
        }
        if let Some(layer) = &cfg.layer_dir
            && !layer.is_dir()
        {
            return Err(Error::Config(format!(
                "layer directory {} does not exist",
                layer.display()
            )));
        }
        let log_dir = match &cfg.log_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!(
                "local-lambda-{}-{}",
                std::process::id(),
                &ids::hex32()[..8]
            )),
        };
        std::fs::create_dir_all(&log_dir)?;
        let listener = TcpListener::bind(cfg.api_addr)
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.api_addr,
                source,
            })?;
        let api_addr = listener.local_addr()?;
        let started = Instant::now();
        let timeline = Arc::new(timeline::Timeline::new(started));
        let hub = Arc::new(telemetry::TelemetryHub::new(
            cfg.telemetry.clone(),
            Arc::clone(&timeline),
        ));
        let eager = cfg.eager_init;
        let shared = Arc::new(state::Shared::new(
            cfg, started, api_addr, log_dir, timeline, hub,
        ));
        let (stop, stop_rx) = watch::channel(false);
        http::serve(
            listener,
            Arc::new(api::Api {
                shared: Arc::clone(&shared),
            }),
            stop_rx,
        );
        shared.timeline.record(
            "sandbox.start",
            serde_json::json!({"runtimeApi": api_addr.to_string(),
                               "initializationType": lifecycle::initialization_type(&shared),
                               "maxConcurrency": shared.managed.map(|m| m.max_concurrency)}),
        );
        let mut me = Self {
            shared,
            op: tokio::sync::Mutex::new(()),
            stop,
            init: None,
        };
        if eager {
            me.init = Some(me.run_init().await);
        }
        Ok(me)
    }

    async fn run_init(&self) -> InitOutcome {
        let _op = self.op.lock().await;
        match lifecycle::init(&self.shared).await {
            Ok(ms) => InitOutcome::Ready(ms),
            Err(f) => InitOutcome::Failed {
                status: f.status,
                error_type: f.error_type,
                message: f.message,
            },
        }
    }

    /// The outcome of the init run by `start()` (None when `eager_init` is off).
    pub fn init_outcome(&self) -> Option<&InitOutcome> {
        self.init.as_ref()
    }

    /// `host:port` of the Runtime API (`AWS_LAMBDA_RUNTIME_API`).
    pub fn runtime_api(&self) -> SocketAddr {
        self.shared.api_addr
    }

    /// Where the processes' stdout/stderr files are (`<role>-<name>.stdout.log` / `.stderr.log`).
    pub fn log_dir(&self) -> &Path {
        &self.shared.log_dir
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.shared.cfg
    }

    /// Invoke the function once (initialising the environment first if a reset discarded it).
    ///
    /// On Lambda Managed Instances calls run concurrently (see [`Self::invoke_many`]), each on
    /// an idle runtime worker; with none idle the invoke fails with [`Error::Rejected`].
    pub async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResult, Error> {
        if self.shared.managed.is_some() {
            return self.invoke_managed(req).await;
        }
        let _op = self.op.lock().await;
        if self.shared.lock().shut_down {
            return Err(Error::ShutDown);
        }
        Ok(lifecycle::invoke(&self.shared, req).await)
    }

    async fn invoke_managed(&self, req: InvokeRequest) -> Result<InvokeResult, Error> {
        {
            let _op = self.op.lock().await;
            if self.shared.lock().shut_down {
                return Err(Error::ShutDown);
            }
            if let Err(f) = managed::ensure_ready(&self.shared).await {
                return Ok(managed::init_failed_result(&self.shared, &req, f));
            }
        }
        managed::invoke(&self.shared, req)
            .await
            .map_err(Error::Rejected)
    }

    /// Start every invocation at once and wait for all; results in the order of `reqs`. On
    /// Lambda Managed Instances they run concurrently (those beyond the idle workers are
    /// rejected); on-demand they run one after the other, as Lambda runs them in one sandbox.
    pub async fn invoke_many(&self, reqs: Vec<InvokeRequest>) -> Vec<Result<InvokeResult, Error>> {
        join_all(reqs.into_iter().map(|r| self.invoke(r)).collect()).await
    }

    /// The Lambda Managed Instances settings, `None` on-demand.
    pub fn managed_instances(&self) -> Option<ManagedInstances> {
        self.shared.managed
    }

    /// Lambda Managed Instances: invocations in flight and runtime workers waiting in
    /// `invocation/next` now.
    pub fn concurrency_now(&self) -> (usize, usize) {
        self.shared
            .lock()
            .env
            .as_ref()
            .map_or((0, 0), |e| (e.inflight.len(), e.idle_workers.len()))
    }

    /// Run the Shutdown phase (`spindown`) and stop the Runtime API server.
    pub async fn shutdown(&self) -> Result<ShutdownReport, Error> {
        let _op = self.op.lock().await;
        if self.shared.lock().shut_down {
            return Err(Error::ShutDown);
        }
        let report = lifecycle::shut_down_environment(&self.shared, "spindown").await;
        self.shared.lock().shut_down = true;
        let _ = self.stop.send(true);
        Ok(report)
    }

    /// Every recorded event, in time order.
    pub fn timeline(&self) -> Vec<TimelineEvent> {
        self.shared.timeline.all()
    }

    /// Recorded events of one kind (`extension.next`, `runtimeDone`, `process.exit`, ...).
    pub fn events(&self, kind: &str) -> Vec<TimelineEvent> {
        self.shared.timeline.of_kind(kind)
    }

    /// Milliseconds since the sandbox started (the timeline's clock).
    pub fn now_ms(&self) -> f64 {
        self.shared.timeline.now_ms()
    }

    /// Every platform event emitted by the Telemetry API, delivered or not.
    pub fn telemetry_emitted(&self) -> Vec<Value> {
        self.shared.hub.emitted()
    }

    /// Every Telemetry API delivery attempt.
    pub fn telemetry_deliveries(&self) -> Vec<TelemetryDelivery> {
        self.shared.hub.deliveries()
    }

    /// Reports of the resets (timeouts, crashes) so far.
    pub fn resets(&self) -> Vec<ShutdownReport> {
        self.shared.lock().resets.clone()
    }

    /// Process ids of the live runtime and extension processes.
    pub fn pids(&self) -> Vec<i32> {
        self.shared
            .lock()
            .env
            .as_ref()
            .map(state::Env::pids)
            .unwrap_or_default()
    }

    /// Path of a process's captured output, e.g. `stdout_path("extension", "my-ext")`.
    pub fn output_path(&self, role: &str, name: &str, stream: &str) -> PathBuf {
        self.shared
            .log_dir
            .join(format!("{role}-{name}.{stream}.log"))
    }
}

/// Poll every future until all are done; their outputs in order.
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

impl Drop for LocalLambda {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        // Only live processes: a group id of a process long gone may have been reused.
        let pgids = self.pids();
        for p in pgids {
            process::signal_group(p, Signal::SIGCONT);
            process::signal_group(p, Signal::SIGKILL);
        }
    }
}
