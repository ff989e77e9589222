//! Configuration of one local Lambda sandbox.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the Telemetry API delivers to subscribers: test knobs on top of Lambda's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryKnobs {
    /// Extra delay before each delivery (a slow Lambda).
    pub delay: Duration,
    /// Deliver every batch twice (at-least-once delivery made visible).
    pub deliver_twice: bool,
    /// Accept subscriptions but never deliver anything.
    pub never_deliver: bool,
    /// Attempts per batch before it is dropped.
    pub max_attempts: u32,
    /// Wait between attempts.
    pub retry_backoff: Duration,
    /// Time limit of one delivery attempt.
    pub attempt_timeout: Duration,
    /// Host names a destination URI may use (Lambda accepts the sandbox's own name only).
    pub allowed_hosts: Vec<String>,
}

impl Default for TelemetryKnobs {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            deliver_twice: false,
            never_deliver: false,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(50),
            attempt_timeout: Duration::from_secs(2),
            allowed_hosts: vec!["sandbox.localdomain".to_owned(), "sandbox".to_owned()],
        }
    }
}

/// Configuration of [`crate::LocalLambda`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The layer directory (`/opt`): every executable in `<layer>/extensions/` is started.
    pub layer_dir: Option<PathBuf>,
    /// Extra external extension executables, started like those of the layer.
    pub extra_extensions: Vec<PathBuf>,
    /// The runtime's command (program and arguments), e.g. `["python3", "runtime.py"]`.
    pub runtime_cmd: Vec<String>,
    /// The function's environment variables (what users set in SAM/Terraform); every process
    /// of the sandbox gets them. `AWS_LAMBDA_EXEC_WRAPPER` here makes the runtime start as
    /// `<wrapper> <runtime command...>`.
    pub env: Vec<(String, String)>,
    /// Extra variables for extension processes only.
    pub extension_env: Vec<(String, String)>,
    /// Inherit this process's environment (besides `PATH`, which is always passed on).
    pub inherit_env: bool,
    pub function_name: String,
    pub function_version: String,
    pub handler: String,
    pub memory_mb: u32,
    pub region: String,
    pub account_id: String,
    /// The function timeout: covers the whole invoke phase.
    pub timeout: Duration,
    /// Init phase limit (Lambda: 10 s).
    pub init_timeout: Duration,
    /// Shutdown phase budget with external extensions (Lambda: 2,000 ms).
    pub shutdown_budget: Duration,
    /// What the runtime gets of it before SIGKILL after SIGTERM (Lambda: 300 ms, 500 ms with
    /// an internal extension).
    pub runtime_shutdown_grace: Duration,
    /// The same on Lambda Managed Instances, where the runtime always gets SIGTERM first and the
    /// extensions get SHUTDOWN only after it exited (the RIE's LMI mode: 600 ms).
    pub managed_runtime_shutdown_grace: Duration,
    /// X-Ray active tracing (`TracingConfig.Mode = Active`).
    pub active_tracing: bool,
    /// SIGSTOP the sandbox between invocations, SIGCONT on the next one. Ignored on Lambda
    /// Managed Instances (see [`crate::managed`]), which never freeze.
    pub freeze: bool,
    pub telemetry: TelemetryKnobs,
    /// Address of the Runtime API server; port 0 for an ephemeral one.
    pub api_addr: SocketAddr,
    /// Where each process's stdout/stderr go; a new temporary directory when `None`.
    pub log_dir: Option<PathBuf>,
    /// Also echo each process's output lines to this process's stderr.
    pub echo_output: bool,
    /// `LAMBDA_TASK_ROOT` and the runtime's working directory.
    pub task_root: Option<PathBuf>,
    /// Run the init phase in `start()` (as provisioned/pre-warmed environments do); otherwise
    /// on the first invoke.
    pub eager_init: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            layer_dir: None,
            extra_extensions: Vec::new(),
            runtime_cmd: Vec::new(),
            env: Vec::new(),
            extension_env: Vec::new(),
            inherit_env: false,
            function_name: "local-function".to_owned(),
            function_version: "$LATEST".to_owned(),
            handler: "index.handler".to_owned(),
            memory_mb: 128,
            region: "us-east-1".to_owned(),
            account_id: "123456789012".to_owned(),
            timeout: Duration::from_secs(3),
            init_timeout: Duration::from_secs(10),
            shutdown_budget: Duration::from_millis(2000),
            runtime_shutdown_grace: Duration::from_millis(300),
            managed_runtime_shutdown_grace: crate::managed::RUNTIME_SHUTDOWN_GRACE,
            active_tracing: false,
            freeze: false,
            telemetry: TelemetryKnobs::default(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_dir: None,
            echo_output: false,
            task_root: None,
            eager_init: true,
        }
    }
}

impl Config {
    /// The function's ARN as `invokedFunctionArn`.
    pub fn function_arn(&self) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{}",
            self.region, self.account_id, self.function_name
        )
    }

    /// Lambda Managed Instances mode, as Lambda selects it: the function's environment has
    /// `AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances`; the concurrency comes from
    /// `AWS_LAMBDA_MAX_CONCURRENCY` (see [`crate::managed::ManagedInstances::from_config`]).
    pub fn managed_instances(&self) -> Option<crate::managed::ManagedInstances> {
        crate::managed::ManagedInstances::from_config(self)
    }

    /// Value of a function environment variable (last one wins).
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
