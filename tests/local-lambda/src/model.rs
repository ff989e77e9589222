//! What callers give and get: invocation requests and results, shutdown reports, the timeline.
//! Serialised in camelCase for the control API.

use serde::Serialize;
use serde_json::{Map, Value};

/// One invocation request (what `lambda:Invoke` carries).
#[derive(Debug, Clone, Default)]
pub struct InvokeRequest {
    /// The event, as bytes (usually JSON).
    pub payload: Vec<u8>,
    /// `X-Amzn-Trace-Id` of the caller, if any.
    pub trace_header: Option<String>,
    /// `Lambda-Runtime-Client-Context` (JSON text), if any.
    pub client_context: Option<String>,
    /// `Lambda-Runtime-Cognito-Identity` (JSON text), if any.
    pub cognito_identity: Option<String>,
}

impl InvokeRequest {
    /// A request whose payload is `value` serialised as JSON.
    pub fn json(value: &Value) -> Self {
        Self {
            payload: value.to_string().into_bytes(),
            ..Self::default()
        }
    }

    /// The same request with a caller trace header.
    pub fn with_trace_header(mut self, header: impl Into<String>) -> Self {
        self.trace_header = Some(header.into());
        self
    }
}

/// How an invocation ended (the Telemetry API's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InvokeStatus {
    /// The runtime posted a response.
    Success,
    /// The runtime posted an invocation error (or an init error surfaced on this invoke).
    Error,
    /// The function timeout elapsed.
    Timeout,
    /// The runtime or an extension crashed (process exit, `exit/error`).
    Failure,
}

impl InvokeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Failure => "failure",
        }
    }
}

/// The error a caller sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeError {
    pub error_type: String,
    pub error_message: String,
    /// The error body as posted by the runtime (or built by Lambda).
    pub body: String,
}

/// When, relative to this invocation's start, each extension called `event/next` again.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionTiming {
    pub name: String,
    /// Monotonic time of its `event/next` (ms since the sandbox started).
    pub next_at_ms: Option<f64>,
    /// `event/next` minus `platform.runtimeDone` (negative when it came first).
    pub after_runtime_done_ms: Option<f64>,
}

/// Timings of one invocation; `*_at_ms` are monotonic, ms since the sandbox started.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeTimings {
    /// Init duration when this invocation had to initialise the sandbox (cold start).
    pub init_ms: Option<f64>,
    pub started_at_ms: f64,
    pub runtime_done_at_ms: Option<f64>,
    pub completed_at_ms: f64,
    /// Start to `platform.runtimeDone` (the runtime's response complete).
    pub runtime_ms: Option<f64>,
    /// Start to the end of the invoke phase (runtime done and every extension back in `event/next`).
    pub duration_ms: f64,
    /// `platform.runtimeDone` to the end of the invoke phase: what extensions add.
    pub post_runtime_ms: Option<f64>,
    /// Start to the first byte of the response.
    pub response_latency_ms: Option<f64>,
    /// First to last byte of the response.
    pub response_duration_ms: Option<f64>,
    pub extensions: Vec<ExtensionTiming>,
}

/// The outcome of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeResult {
    pub request_id: String,
    pub status: InvokeStatus,
    /// The response body (success only).
    #[serde(skip)]
    pub response: Option<Vec<u8>>,
    pub error: Option<InvokeError>,
    /// The trace header Lambda handed the runtime (`Lambda-Runtime-Trace-Id`).
    pub trace_header: String,
    pub cold_start: bool,
    /// Whether the sandbox was reset (runtime and extensions shut down) after this invocation.
    pub reset: bool,
    pub timings: InvokeTimings,
}

impl InvokeResult {
    /// The response parsed as JSON, if it is JSON.
    pub fn response_json(&self) -> Option<Value> {
        self.response
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
    }

    /// JSON for the control API: the result plus `response` (parsed JSON, else null) and
    /// `responseText`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert(
                "response".into(),
                self.response_json().unwrap_or(Value::Null),
            );
            m.insert(
                "responseText".into(),
                self.response
                    .as_deref()
                    .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
                    .unwrap_or(Value::Null),
            );
        }
        v
    }
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Whether this emulator had to SIGKILL it.
    pub killed: bool,
    /// Exit time relative to the start of the shutdown phase (None: still running / never started).
    pub exited_after_ms: Option<f64>,
}

/// One extension in a shutdown report.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionShutdown {
    pub name: String,
    pub registered: bool,
    pub events: Vec<String>,
    pub event_next_count: u32,
    pub received_shutdown: bool,
    #[serde(flatten)]
    pub exit: ProcessExit,
}

/// The outcome of the shutdown phase (or of a reset).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownReport {
    /// `spindown`, `timeout` or `failure`.
    pub reason: String,
    /// `deadlineMs` of the SHUTDOWN event (epoch ms).
    pub deadline_ms: u64,
    pub duration_ms: f64,
    pub extensions: Vec<ExtensionShutdown>,
    pub runtime: Option<ProcessExit>,
}

/// One recorded event; `at_ms` is monotonic, ms since the sandbox started.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEvent {
    pub at_ms: f64,
    pub kind: String,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl TimelineEvent {
    /// A string field.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }
}

/// A batch the Telemetry API delivered (or tried to).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryDelivery {
    pub extension: String,
    pub at_ms: f64,
    pub attempt: u32,
    pub ok: bool,
    pub status: Option<u16>,
    pub events: Vec<Value>,
}

/// An invoke the environment refused without running it (Lambda Managed Instances: no runtime
/// worker waits in `invocation/next`, or the environment is not ready). No platform event is
/// emitted for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// The status the RIE answers the invoke with (400).
    pub http_status: u16,
    /// Its `Error-Type` header, e.g. `Runtime.Unavailable`.
    pub error_type: String,
    /// Its body, e.g. `{"errorType":"Runtime.Unavailable"}`.
    pub body: String,
}

impl Rejection {
    /// JSON for the control API: `{"status": "rejected", "httpStatus", "errorType", "body"}`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("status".into(), Value::String("rejected".into()));
        }
        v
    }
}
