//! Configuration, parsed once at start-up from an injected lookup.
//!
//! Precedence, lowest first: the code default < a standard `OTEL_*` variable, where its
//! meaning is the same for the extension as for the function's SDK (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_LOG_LEVEL`) < the extension's own `OTEL_XRAY_*`.
//! Upstream endpoints come only from `OTEL_XRAY_*` (and AWS's own `AWS_XRAY_DAEMON_ADDRESS`),
//! never from `OTEL_EXPORTER_OTLP_*`: those belong to the function's SDK.
//!
//! A malformed optional value is reported as a [`ConfigWarning`] and replaced by its default;
//! only a setting that leaves the extension with nothing to do is a [`ConfigError`].

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;

use crate::lambda::event_context::{ContextSource, DEFAULT_PRECEDENCE, parse_precedence};

/// Standard OpenTelemetry variable: the service name of the extension's own spans.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// Standard OpenTelemetry variable: resource attributes of the extension's own spans.
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
/// Standard OpenTelemetry variable: log level (overridden by `OTEL_XRAY_LOG_LEVEL`).
pub const OTEL_LOG_LEVEL: &str = "OTEL_LOG_LEVEL";

/// AWS: where the X-Ray daemon listens (host:port, or `tcp:… udp:…`).
pub const AWS_XRAY_DAEMON_ADDRESS: &str = "AWS_XRAY_DAEMON_ADDRESS";
/// AWS: the region of the function.
pub const AWS_REGION: &str = "AWS_REGION";
/// AWS: the region, when `AWS_REGION` is not set.
pub const AWS_DEFAULT_REGION: &str = "AWS_DEFAULT_REGION";
/// Lambda: host:port of the Runtime, Extensions and Telemetry APIs.
pub const AWS_LAMBDA_RUNTIME_API: &str = "AWS_LAMBDA_RUNTIME_API";
/// Lambda: `JSON` for structured logs, `Text` otherwise.
pub const AWS_LAMBDA_LOG_FORMAT: &str = "AWS_LAMBDA_LOG_FORMAT";
/// Lambda: the function's name (resource attribute `faas.name`).
pub const AWS_LAMBDA_FUNCTION_NAME: &str = "AWS_LAMBDA_FUNCTION_NAME";
/// Lambda: the function's version (resource attribute `faas.version`).
pub const AWS_LAMBDA_FUNCTION_VERSION: &str = "AWS_LAMBDA_FUNCTION_VERSION";

/// `auto` | `daemon` | `api` | `otlp`.
pub const OTEL_XRAY_EXPORTER: &str = "OTEL_XRAY_EXPORTER";
/// PutTraceSegments endpoint override (default `https://xray.<region>.amazonaws.com`).
pub const OTEL_XRAY_API_ENDPOINT: &str = "OTEL_XRAY_API_ENDPOINT";
/// OTLP/HTTP traces URL for the `otlp` exporter.
pub const OTEL_XRAY_OTLP_ENDPOINT: &str = "OTEL_XRAY_OTLP_ENDPOINT";
/// Extra headers for the `otlp` exporter, `k=v,k2=v2` (values URL-decoded).
pub const OTEL_XRAY_OTLP_HEADERS: &str = "OTEL_XRAY_OTLP_HEADERS";
/// `true` | `false`: SigV4-sign OTLP requests (service `xray`). Default: on for `*.amazonaws.com`.
pub const OTEL_XRAY_OTLP_SIGV4: &str = "OTEL_XRAY_OTLP_SIGV4";
/// `end` | `periodic,<ms>` | `adaptive`.
pub const OTEL_XRAY_FLUSH: &str = "OTEL_XRAY_FLUSH";
/// Port of the OTLP/HTTP receiver on 127.0.0.1.
pub const OTEL_XRAY_HTTP_PORT: &str = "OTEL_XRAY_HTTP_PORT";
/// Port of the OTLP/gRPC receiver on 127.0.0.1.
pub const OTEL_XRAY_GRPC_PORT: &str = "OTEL_XRAY_GRPC_PORT";
/// Port of the Telemetry API listener (on the sandbox address).
pub const OTEL_XRAY_TELEMETRY_PORT: &str = "OTEL_XRAY_TELEMETRY_PORT";
/// Port of the Runtime API proxy on 127.0.0.1.
pub const OTEL_XRAY_PROXY_PORT: &str = "OTEL_XRAY_PROXY_PORT";
/// Largest OTLP request body accepted, compressed or decompressed, in bytes.
pub const OTEL_XRAY_MAX_REQUEST_BYTES: &str = "OTEL_XRAY_MAX_REQUEST_BYTES";
/// Most spans held in the buffer; beyond it spans are refused and counted.
pub const OTEL_XRAY_BUFFER_MAX_SPANS: &str = "OTEL_XRAY_BUFFER_MAX_SPANS";
/// Most bytes held in the buffer (encoded requests and translated documents).
pub const OTEL_XRAY_BUFFER_MAX_BYTES: &str = "OTEL_XRAY_BUFFER_MAX_BYTES";
/// Most bytes of request bodies being read at once, across all connections of both receivers.
pub const OTEL_XRAY_MAX_IN_FLIGHT_BYTES: &str = "OTEL_XRAY_MAX_IN_FLIGHT_BYTES";
/// Lambda: the function's memory in MB; sizes the byte bounds by default.
pub const AWS_LAMBDA_FUNCTION_MEMORY_SIZE: &str = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE";
/// Time budget of one flush, in milliseconds.
pub const OTEL_XRAY_EXPORT_TIMEOUT_MS: &str = "OTEL_XRAY_EXPORT_TIMEOUT_MS";
/// Comma-separated attribute keys that become X-Ray annotations.
pub const OTEL_XRAY_INDEXED_ATTRIBUTES: &str = "OTEL_XRAY_INDEXED_ATTRIBUTES";
/// `true` | `false`: make every eligible attribute an annotation.
pub const OTEL_XRAY_INDEX_ALL_ATTRIBUTES: &str = "OTEL_XRAY_INDEX_ALL_ATTRIBUTES";
/// `true` | `false`: invocation and init spans from the Telemetry API.
pub const OTEL_XRAY_PLATFORM_SPANS: &str = "OTEL_XRAY_PLATFORM_SPANS";
/// Log level of the extension: `error` | `warn` | `info` | `debug` | `trace` | `off`.
pub const OTEL_XRAY_LOG_LEVEL: &str = "OTEL_XRAY_LOG_LEVEL";
/// `true` | `false`: the Runtime API proxy (read by the extension and by the wrapper).
pub const OTEL_XRAY_PROXY: &str = "OTEL_XRAY_PROXY";
/// Which incoming context becomes the invocation span's parent, in order (docs/propagation.md).
pub const OTEL_XRAY_CONTEXT_PRECEDENCE: &str = "OTEL_XRAY_CONTEXT_PRECEDENCE";
/// Comma-separated baggage keys copied onto the invocation span as attributes.
pub const OTEL_XRAY_BAGGAGE_ATTRIBUTES: &str = "OTEL_XRAY_BAGGAGE_ATTRIBUTES";
/// `merge` | `keep`: what happens when the function's own instrumentation made an invocation span.
pub const OTEL_XRAY_INVOCATION_SPAN: &str = "OTEL_XRAY_INVOCATION_SPAN";
/// Read by the wrapper only: `true` | `false`, hand off to the function's auto-instrumentation.
pub const OTEL_XRAY_AUTO_INSTRUMENTATION: &str = "OTEL_XRAY_AUTO_INSTRUMENTATION";
/// Read by the wrapper only: path of the OpenTelemetry Java agent jar.
pub const OTEL_XRAY_JAVA_AGENT: &str = "OTEL_XRAY_JAVA_AGENT";
/// Set by Lambda: `on-demand`, `provisioned-concurrency`, `snap-start` or
/// `lambda-managed-instances`.
pub const AWS_LAMBDA_INITIALIZATION_TYPE: &str = "AWS_LAMBDA_INITIALIZATION_TYPE";
/// Set by Lambda on Managed Instances: how many invocations one environment runs at once.
pub const AWS_LAMBDA_MAX_CONCURRENCY: &str = "AWS_LAMBDA_MAX_CONCURRENCY";
/// The `AWS_LAMBDA_INITIALIZATION_TYPE` of Lambda Managed Instances.
pub const MANAGED_INSTANCES: &str = "lambda-managed-instances";
/// Emit the extension's own accounting as CloudWatch EMF metrics on stdout.
pub const OTEL_XRAY_SELF_METRICS: &str = "OTEL_XRAY_SELF_METRICS";

/// One variable the extension reads, for the README table and its test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvVarDoc {
    /// The variable's name.
    pub name: &'static str,
    /// Its default, as a user would write it.
    pub default: &'static str,
    /// What it does, in one line.
    pub meaning: &'static str,
}

/// Every variable the extension reads. The README's table is checked against this list.
pub const ENV_VARS: &[EnvVarDoc] = &[
    EnvVarDoc {
        name: OTEL_XRAY_EXPORTER,
        default: "auto",
        meaning: "`auto` (daemon when `AWS_XRAY_DAEMON_ADDRESS` is set, else api), `daemon`, `api` or `otlp`",
    },
    EnvVarDoc {
        name: OTEL_XRAY_API_ENDPOINT,
        default: "https://xray.$AWS_REGION.amazonaws.com",
        meaning: "PutTraceSegments endpoint for the `api` exporter",
    },
    EnvVarDoc {
        name: OTEL_XRAY_OTLP_ENDPOINT,
        default: "(none; required for `otlp`)",
        meaning: "OTLP/HTTP traces URL for the `otlp` exporter, e.g. `https://xray.us-east-1.amazonaws.com/v1/traces`",
    },
    EnvVarDoc {
        name: OTEL_XRAY_OTLP_HEADERS,
        default: "(none)",
        meaning: "extra headers for the `otlp` exporter, `key=value,key2=value2` (values URL-encoded)",
    },
    EnvVarDoc {
        name: OTEL_XRAY_OTLP_SIGV4,
        default: "true for `*.amazonaws.com`, else false",
        meaning: "sign `otlp` requests with SigV4, service `xray`, credentials from the standard AWS chain",
    },
    EnvVarDoc {
        name: OTEL_XRAY_FLUSH,
        default: "end",
        meaning: "`end` (after every invocation), `periodic,<ms>` or `adaptive`; always on SHUTDOWN. On Managed Instances `periodic,<ms>` (default `periodic,1000`) is the background flush period",
    },
    EnvVarDoc {
        name: OTEL_XRAY_HTTP_PORT,
        default: "4318",
        meaning: "port of the OTLP/HTTP receiver on 127.0.0.1",
    },
    EnvVarDoc {
        name: OTEL_XRAY_GRPC_PORT,
        default: "4317",
        meaning: "port of the OTLP/gRPC receiver on 127.0.0.1",
    },
    EnvVarDoc {
        name: OTEL_XRAY_TELEMETRY_PORT,
        default: "4319",
        meaning: "port of the Telemetry API listener (on the address of `sandbox.localdomain`)",
    },
    EnvVarDoc {
        name: OTEL_XRAY_PROXY_PORT,
        default: "9009",
        meaning: "port of the Runtime API proxy on 127.0.0.1",
    },
    EnvVarDoc {
        name: OTEL_XRAY_MAX_REQUEST_BYTES,
        default: "4194304",
        meaning: "largest OTLP request accepted, before and after gzip; larger requests get 413",
    },
    EnvVarDoc {
        name: OTEL_XRAY_BUFFER_MAX_SPANS,
        default: "20000",
        meaning: "most spans buffered between flushes; beyond it spans are refused (OTLP partial success) and counted",
    },
    EnvVarDoc {
        name: OTEL_XRAY_BUFFER_MAX_BYTES,
        default: "1/8 of the function's memory, 16–256 MiB (16 MiB at 128 MB)",
        meaning: "most bytes buffered between flushes: the requests' protobuf encodings plus the JSON of the documents translated ahead; a request that does not fit is refused whole (OTLP partial success) and counted `buffer_full`; half of it triggers an early flush",
    },
    EnvVarDoc {
        name: OTEL_XRAY_MAX_IN_FLIGHT_BYTES,
        default: "1/16 of the function's memory, 8–128 MiB, at least `OTEL_XRAY_MAX_REQUEST_BYTES` (8 MiB at 128 MB)",
        meaning: "most bytes of request bodies being read at once across all connections of both receivers, counted as they arrive; a request that cannot get its bytes within 1 s gets HTTP 429 with `Retry-After` / gRPC UNAVAILABLE",
    },
    EnvVarDoc {
        name: AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
        default: "(set by Lambda; 128 when absent)",
        meaning: "the function's memory in MB, from which the byte bounds above are derived",
    },
    EnvVarDoc {
        name: OTEL_XRAY_EXPORT_TIMEOUT_MS,
        default: "1000",
        meaning: "time budget of one flush, retries included",
    },
    EnvVarDoc {
        name: OTEL_XRAY_INDEXED_ATTRIBUTES,
        default: "(none)",
        meaning: "comma-separated span attribute keys that become X-Ray annotations",
    },
    EnvVarDoc {
        name: OTEL_XRAY_INDEX_ALL_ATTRIBUTES,
        default: "false",
        meaning: "make every string, number and boolean attribute an annotation",
    },
    EnvVarDoc {
        name: OTEL_XRAY_PLATFORM_SPANS,
        default: "true",
        meaning: "emit invocation and init spans from Telemetry API platform events",
    },
    EnvVarDoc {
        name: OTEL_XRAY_SELF_METRICS,
        default: "false",
        meaning: "write the extension's accounting (spans received, exported, dropped by reason, export errors, flush durations) as CloudWatch EMF metrics on stdout, one record per flush and at shutdown",
    },
    EnvVarDoc {
        name: OTEL_XRAY_LOG_LEVEL,
        default: "$OTEL_LOG_LEVEL, else info",
        meaning: "the extension's log level: `error`, `warn`, `info`, `debug`, `trace` or `off`",
    },
    EnvVarDoc {
        name: OTEL_XRAY_PROXY,
        default: "true",
        meaning: "run the Runtime API proxy (invocation spans, trace header for the function); the wrapper reads it too",
    },
    EnvVarDoc {
        name: OTEL_XRAY_CONTEXT_PRECEDENCE,
        default: "lambda-sampled,traceparent,xray,lambda",
        meaning: "which incoming context parents the invocation span, first found wins (docs/propagation.md)",
    },
    EnvVarDoc {
        name: OTEL_XRAY_BAGGAGE_ATTRIBUTES,
        default: "(none)",
        meaning: "comma-separated baggage keys of the incoming event copied onto the invocation span as attributes",
    },
    EnvVarDoc {
        name: OTEL_XRAY_INVOCATION_SPAN,
        default: "merge",
        meaning: "`merge`: the function's own FaaS span for the request takes the proxy's place; `keep`: export both",
    },
    EnvVarDoc {
        name: OTEL_XRAY_AUTO_INSTRUMENTATION,
        default: "true",
        meaning: "(wrapper) start the function's own OpenTelemetry auto-instrumentation where it ships one: Python `opentelemetry-instrument`, Node.js `@opentelemetry/auto-instrumentations-node/register`, the Java agent",
    },
    EnvVarDoc {
        name: OTEL_XRAY_JAVA_AGENT,
        default: "/opt/opentelemetry-javaagent.jar",
        meaning: "(wrapper) the OpenTelemetry Java agent jar added to `JAVA_TOOL_OPTIONS` when it exists",
    },
    EnvVarDoc {
        name: OTEL_SERVICE_NAME,
        default: "$AWS_LAMBDA_FUNCTION_NAME",
        meaning: "service name of the spans the extension makes itself",
    },
    EnvVarDoc {
        name: OTEL_RESOURCE_ATTRIBUTES,
        default: "(none)",
        meaning: "extra resource attributes of the spans the extension makes itself",
    },
    EnvVarDoc {
        name: OTEL_LOG_LEVEL,
        default: "info",
        meaning: "log level, when `OTEL_XRAY_LOG_LEVEL` is not set",
    },
    EnvVarDoc {
        name: AWS_XRAY_DAEMON_ADDRESS,
        default: "(set by Lambda when active tracing is on)",
        meaning: "X-Ray daemon address for the `daemon` exporter (`host:port` or `udp:host:port tcp:host:port`)",
    },
    EnvVarDoc {
        name: AWS_REGION,
        default: "(set by Lambda)",
        meaning: "region of the X-Ray endpoints and of SigV4 signing (`AWS_DEFAULT_REGION` as a fallback)",
    },
    EnvVarDoc {
        name: AWS_DEFAULT_REGION,
        default: "(none)",
        meaning: "region, when `AWS_REGION` is not set",
    },
    EnvVarDoc {
        name: AWS_LAMBDA_RUNTIME_API,
        default: "(set by Lambda)",
        meaning: "host:port of the Extensions and Telemetry APIs",
    },
    EnvVarDoc {
        name: AWS_LAMBDA_FUNCTION_NAME,
        default: "(set by Lambda)",
        meaning: "`faas.name` of the extension's own spans, and the default service name",
    },
    EnvVarDoc {
        name: AWS_LAMBDA_FUNCTION_VERSION,
        default: "(set by Lambda)",
        meaning: "`faas.version` of the extension's own spans",
    },
    EnvVarDoc {
        name: AWS_LAMBDA_INITIALIZATION_TYPE,
        default: "(set by Lambda)",
        meaning: "`provisioned-concurrency` makes the first invocation's span say `faas.coldstart=false`; `lambda-managed-instances` switches to Managed Instances mode (SHUTDOWN-only registration, background flushing, concurrent invocations)",
    },
    EnvVarDoc {
        name: AWS_LAMBDA_MAX_CONCURRENCY,
        default: "1; 256 on Managed Instances when not set",
        meaning: "invocations one environment runs at once (set by Lambda on Managed Instances); sizes the tables of open invocations",
    },
    EnvVarDoc {
        name: AWS_LAMBDA_LOG_FORMAT,
        default: "Text",
        meaning: "`JSON` makes the extension log one JSON object a line",
    },
    // Credentials for SigV4 (api exporter, otlp with OTEL_XRAY_OTLP_SIGV4), read on the first
    // export that signs (export/credentials.rs).
    EnvVarDoc {
        name: "AWS_ACCESS_KEY_ID",
        default: "(set by Lambda)",
        meaning: "execution role credentials for SigV4, with `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`",
    },
    EnvVarDoc {
        name: "AWS_SECRET_ACCESS_KEY",
        default: "(set by Lambda)",
        meaning: "see `AWS_ACCESS_KEY_ID`",
    },
    EnvVarDoc {
        name: "AWS_SESSION_TOKEN",
        default: "(set by Lambda)",
        meaning: "see `AWS_ACCESS_KEY_ID`",
    },
    EnvVarDoc {
        name: "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        default: "(set by Lambda SnapStart)",
        meaning: "container credentials URL, used when the access key variables are not set (plain http only to loopback or 169.254.170.2/.23)",
    },
    EnvVarDoc {
        name: "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        default: "(none)",
        meaning: "container credentials path on 169.254.170.2 (takes precedence over the full URI)",
    },
    EnvVarDoc {
        name: "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        default: "(set by Lambda SnapStart)",
        meaning: "`Authorization` header of the container credentials request",
    },
    EnvVarDoc {
        name: "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        default: "(none)",
        meaning: "file holding that header's value (takes precedence over the variable)",
    },
];

/// Which exporter sends the buffered spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExporterKind {
    /// UDP datagrams to the X-Ray daemon.
    Daemon,
    /// PutTraceSegments over HTTPS, SigV4-signed.
    Api,
    /// OTLP/HTTP protobuf to any endpoint, optionally SigV4-signed.
    Otlp,
}

/// When buffered spans are flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// After every invocation, before asking for the next event.
    End,
    /// Every so often while the function is hot, and at SHUTDOWN.
    Periodic(Duration),
    /// Every invocation until the invocation rate is known, then periodically while hot.
    Adaptive,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (`AWS_LAMBDA_LOG_FORMAT=JSON`).
    Json,
}

/// The extension's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The exporter, resolved (`auto` already decided).
    pub exporter: ExporterKind,
    /// UDP address of the X-Ray daemon, if known.
    pub daemon_address: Option<SocketAddr>,
    /// The AWS region, if known.
    pub region: Option<String>,
    /// PutTraceSegments base URL (no path).
    pub api_endpoint: Option<String>,
    /// OTLP/HTTP traces URL.
    pub otlp_endpoint: Option<String>,
    /// Extra OTLP headers.
    pub otlp_headers: Vec<(String, String)>,
    /// Sign OTLP requests with SigV4.
    pub otlp_sigv4: bool,
    /// Flush policy.
    pub flush: FlushMode,
    /// OTLP/HTTP receiver port.
    pub http_port: u16,
    /// OTLP/gRPC receiver port.
    pub grpc_port: u16,
    /// Telemetry API listener port.
    pub telemetry_port: u16,
    /// Runtime API proxy port.
    pub proxy_port: u16,
    /// Largest request body, compressed and decompressed.
    pub max_request_bytes: usize,
    /// The buffer's bounds in spans and bytes, and the receivers' budget for bodies being read.
    pub buffer_limits: crate::buffer::BufferLimits,
    /// Budget of one flush.
    pub export_timeout: Duration,
    /// Attribute keys that become annotations.
    pub indexed_attributes: Vec<String>,
    /// Every eligible attribute becomes an annotation.
    pub index_all_attributes: bool,
    /// Emit invocation/init spans from the Telemetry API.
    pub platform_spans: bool,
    /// Log level directive (`info`, `debug`, …).
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Service name for the extension's own spans.
    pub service_name: Option<String>,
    /// Resource attributes for the extension's own spans.
    pub resource_attributes: Vec<(String, String)>,
    /// host:port of the Lambda APIs.
    pub runtime_api: Option<String>,
    /// Run the Runtime API proxy (`OTEL_XRAY_PROXY`).
    pub proxy: bool,
    /// Parent precedence of the invocation span (`OTEL_XRAY_CONTEXT_PRECEDENCE`).
    pub context_precedence: Vec<ContextSource>,
    /// Baggage keys copied onto the invocation span (`OTEL_XRAY_BAGGAGE_ATTRIBUTES`).
    pub baggage_attributes: Vec<String>,
    /// Merge the function's own FaaS span with the proxy's (`OTEL_XRAY_INVOCATION_SPAN=merge`).
    pub merge_invocation_spans: bool,
    /// `AWS_LAMBDA_INITIALIZATION_TYPE`.
    pub initialization_type: Option<String>,
    /// Lambda Managed Instances (`AWS_LAMBDA_INITIALIZATION_TYPE=lambda-managed-instances`):
    /// SHUTDOWN-only registration, concurrent invocations, background flushing.
    pub managed_instances: bool,
    /// `AWS_LAMBDA_MAX_CONCURRENCY` (when unset: 1, or
    /// [`defaults::MANAGED_INSTANCES_CONCURRENCY`] on Managed Instances).
    pub max_concurrency: u32,
    /// Emit EMF self-metrics on stdout.
    pub self_metrics: bool,
}

/// A value that was malformed and replaced by its default.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{var}={value:?} is not valid ({reason}); using {fallback}")]
pub struct ConfigWarning {
    /// The variable.
    pub var: &'static str,
    /// What it held.
    pub value: String,
    /// Why it was refused.
    pub reason: String,
    /// What is used instead.
    pub fallback: String,
}

/// A setting that leaves the extension nothing to do. The extension then runs as a
/// pass-through (lifecycle.rs): it never fails the function's init. Each message names the
/// variable and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// `OTEL_XRAY_EXPORTER=otlp` without `OTEL_XRAY_OTLP_ENDPOINT`.
    #[error(
        "OTEL_XRAY_EXPORTER=otlp needs OTEL_XRAY_OTLP_ENDPOINT: set it to an OTLP/HTTP traces URL \
         (e.g. https://xray.<region>.amazonaws.com/v1/traces) or unset OTEL_XRAY_EXPORTER"
    )]
    MissingOtlpEndpoint,
    /// `OTEL_XRAY_OTLP_ENDPOINT` is not an http(s) URL.
    #[error(
        "OTEL_XRAY_OTLP_ENDPOINT={0:?} is not an http:// or https:// URL: set it to an OTLP/HTTP \
         traces URL or unset OTEL_XRAY_EXPORTER"
    )]
    BadOtlpEndpoint(String),
    /// The `api` exporter cannot find its endpoint.
    #[error("the api exporter needs AWS_REGION: set AWS_REGION or OTEL_XRAY_API_ENDPOINT")]
    MissingRegion,
    /// Signed requests over plain `http://` to a host other than loopback would send the
    /// session token in cleartext.
    #[error(
        "{var}={url:?} is plain http:// to a host other than loopback, and its requests are \
         SigV4-signed: that would send the AWS session token in cleartext; use https:// \
         (or, for the otlp exporter, set OTEL_XRAY_OTLP_SIGV4=false)"
    )]
    CleartextSigning {
        /// The endpoint's variable.
        var: &'static str,
        /// The endpoint.
        url: String,
    },
    /// `OTEL_XRAY_EXPORTER=daemon` without a usable `AWS_XRAY_DAEMON_ADDRESS`.
    #[error(
        "OTEL_XRAY_EXPORTER=daemon needs AWS_XRAY_DAEMON_ADDRESS (host:port): turn on active \
         tracing, set AWS_XRAY_DAEMON_ADDRESS, or unset OTEL_XRAY_EXPORTER"
    )]
    MissingDaemonAddress,
}

impl ConfigError {
    /// The variable to fix.
    pub fn variable(&self) -> &'static str {
        match self {
            ConfigError::MissingOtlpEndpoint | ConfigError::BadOtlpEndpoint(_) => {
                OTEL_XRAY_OTLP_ENDPOINT
            }
            ConfigError::MissingRegion => AWS_REGION,
            ConfigError::CleartextSigning { var, .. } => var,
            ConfigError::MissingDaemonAddress => AWS_XRAY_DAEMON_ADDRESS,
        }
    }
}

/// What the extension needs to know about the platform even when its own configuration is
/// unusable: enough to register the right way and stay out of the function's way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// host:port of the Lambda APIs.
    pub runtime_api: Option<String>,
    /// Lambda Managed Instances.
    pub managed_instances: bool,
}

impl Platform {
    /// Reads the platform variables from `lookup`.
    pub fn from_lookup<F: Fn(&str) -> Option<String>>(lookup: F) -> Self {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Platform {
            runtime_api: get(AWS_LAMBDA_RUNTIME_API),
            managed_instances: get(AWS_LAMBDA_INITIALIZATION_TYPE)
                .is_some_and(|t| t.eq_ignore_ascii_case(MANAGED_INSTANCES)),
        }
    }
}

/// Default ports and limits.
pub mod defaults {
    /// OTLP/HTTP.
    pub const HTTP_PORT: u16 = 4318;
    /// OTLP/gRPC.
    pub const GRPC_PORT: u16 = 4317;
    /// Telemetry API listener.
    pub const TELEMETRY_PORT: u16 = 4319;
    /// Runtime API proxy.
    pub const PROXY_PORT: u16 = 9009;
    /// 4 MiB.
    pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
    /// Buffer capacity in spans.
    pub const BUFFER_MAX_SPANS: usize = 20_000;
    /// The function's memory assumed when Lambda does not say (its smallest size).
    pub const FUNCTION_MEMORY_MB: u64 = 128;
    const MIB: u64 = 1024 * 1024;

    /// The buffer's byte cap for a function of `memory_mb` MB: 1/8 of it, 16 to 256 MiB
    /// (docs/architecture.md, "Buffer").
    pub fn buffer_max_bytes(memory_mb: u64) -> usize {
        let bytes = (memory_mb.saturating_mul(MIB) / 8).clamp(16 * MIB, 256 * MIB);
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }

    /// The budget of request bodies being read for a function of `memory_mb` MB: 1/16 of it,
    /// 8 to 128 MiB (docs/architecture.md, "Receiver").
    pub fn max_in_flight_bytes(memory_mb: u64) -> usize {
        let bytes = (memory_mb.saturating_mul(MIB) / 16).clamp(8 * MIB, 128 * MIB);
        usize::try_from(bytes).unwrap_or(usize::MAX)
    }
    /// Flush budget.
    pub const EXPORT_TIMEOUT_MS: u64 = 1_000;
    /// Concurrency assumed on Managed Instances when `AWS_LAMBDA_MAX_CONCURRENCY` is not visible
    /// to the extension (Node's default is 64 per vCPU).
    pub const MANAGED_INSTANCES_CONCURRENCY: u32 = 256;
    /// Background flush period on Managed Instances (the longest a span waits there).
    pub const MANAGED_INSTANCES_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);
}

impl Config {
    /// Parses the configuration from `lookup` (the process environment in production).
    ///
    /// Returns the warnings for every malformed optional value, to be logged once logging
    /// is set up.
    pub fn from_lookup<F>(lookup: F) -> Result<(Config, Vec<ConfigWarning>), ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let mut warnings = Vec::new();
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let region = get(AWS_REGION).or_else(|| get(AWS_DEFAULT_REGION));

        let daemon_address = match get(AWS_XRAY_DAEMON_ADDRESS) {
            None => None,
            Some(raw) => match parse_daemon_address(&raw) {
                Some(addr) => Some(addr),
                None => {
                    warnings.push(ConfigWarning {
                        var: AWS_XRAY_DAEMON_ADDRESS,
                        value: raw,
                        reason: "expected host:port or `udp:host:port tcp:host:port`".into(),
                        fallback: "no daemon".into(),
                    });
                    None
                }
            },
        };

        let requested = match get(OTEL_XRAY_EXPORTER).map(|v| v.to_ascii_lowercase()) {
            None => None,
            Some(v) if v == "auto" => None,
            Some(v) if v == "daemon" => Some(ExporterKind::Daemon),
            Some(v) if v == "api" => Some(ExporterKind::Api),
            Some(v) if v == "otlp" => Some(ExporterKind::Otlp),
            Some(v) => {
                warnings.push(ConfigWarning {
                    var: OTEL_XRAY_EXPORTER,
                    value: v,
                    reason: "expected auto, daemon, api or otlp".into(),
                    fallback: "auto".into(),
                });
                None
            }
        };
        let exporter = requested.unwrap_or(if daemon_address.is_some() {
            ExporterKind::Daemon
        } else {
            ExporterKind::Api
        });

        let api_endpoint = match get(OTEL_XRAY_API_ENDPOINT) {
            Some(raw) if is_http_url(&raw) => Some(raw.trim_end_matches('/').to_owned()),
            Some(raw) => {
                warnings.push(ConfigWarning {
                    var: OTEL_XRAY_API_ENDPOINT,
                    value: raw,
                    reason: "expected an http:// or https:// URL".into(),
                    fallback: "the regional endpoint".into(),
                });
                None
            }
            None => None,
        }
        .or_else(|| {
            region
                .as_ref()
                .map(|r| format!("https://xray.{r}.amazonaws.com"))
        });

        let otlp_endpoint = get(OTEL_XRAY_OTLP_ENDPOINT);
        if let Some(ep) = &otlp_endpoint
            && !is_http_url(ep)
        {
            if exporter == ExporterKind::Otlp {
                return Err(ConfigError::BadOtlpEndpoint(ep.clone()));
            }
            warnings.push(ConfigWarning {
                var: OTEL_XRAY_OTLP_ENDPOINT,
                value: ep.clone(),
                reason: "expected an http:// or https:// URL".into(),
                fallback: "none".into(),
            });
        }
        let otlp_endpoint = otlp_endpoint.filter(|ep| is_http_url(ep));

        match exporter {
            ExporterKind::Otlp if otlp_endpoint.is_none() => {
                return Err(ConfigError::MissingOtlpEndpoint);
            }
            ExporterKind::Api if api_endpoint.is_none() => return Err(ConfigError::MissingRegion),
            ExporterKind::Daemon if daemon_address.is_none() => {
                return Err(ConfigError::MissingDaemonAddress);
            }
            _ => {}
        }

        let otlp_headers = match get(OTEL_XRAY_OTLP_HEADERS) {
            None => Vec::new(),
            Some(raw) => match parse_key_values(&raw) {
                Some(kv) => kv,
                None => {
                    warnings.push(ConfigWarning {
                        var: OTEL_XRAY_OTLP_HEADERS,
                        // Header values may be credentials: never echo them.
                        value: "<redacted>".into(),
                        reason: "expected key=value pairs separated by commas".into(),
                        fallback: "no extra headers".into(),
                    });
                    Vec::new()
                }
            },
        };

        let sigv4_default = otlp_endpoint
            .as_deref()
            .and_then(url_host)
            .is_some_and(|h| h.ends_with(".amazonaws.com"));
        let otlp_sigv4 = parse_bool(&get, OTEL_XRAY_OTLP_SIGV4, sigv4_default, &mut warnings);
        match exporter {
            ExporterKind::Otlp if otlp_sigv4 => {
                refuse_cleartext_signing(OTEL_XRAY_OTLP_ENDPOINT, otlp_endpoint.as_deref())?;
            }
            ExporterKind::Api => {
                refuse_cleartext_signing(OTEL_XRAY_API_ENDPOINT, api_endpoint.as_deref())?;
            }
            _ => {}
        }

        let initialization_type = get(AWS_LAMBDA_INITIALIZATION_TYPE);
        let managed_instances = initialization_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(MANAGED_INSTANCES));
        // Lambda may give this variable to the runtime only; on Managed Instances the tables
        // are then sized for the largest per-vCPU default Lambda documents, several times over.
        let max_concurrency = parse_number(
            &get,
            AWS_LAMBDA_MAX_CONCURRENCY,
            if managed_instances {
                u64::from(defaults::MANAGED_INSTANCES_CONCURRENCY)
            } else {
                1
            },
            1..=10_000,
            &mut warnings,
        ) as u32;
        let flush = parse_flush_mode(get(OTEL_XRAY_FLUSH), managed_instances, &mut warnings);

        let http_port = parse_port(
            &get,
            OTEL_XRAY_HTTP_PORT,
            defaults::HTTP_PORT,
            &mut warnings,
        );
        let grpc_port = parse_port(
            &get,
            OTEL_XRAY_GRPC_PORT,
            defaults::GRPC_PORT,
            &mut warnings,
        );
        let telemetry_port = parse_port(
            &get,
            OTEL_XRAY_TELEMETRY_PORT,
            defaults::TELEMETRY_PORT,
            &mut warnings,
        );
        let proxy_port = parse_port(
            &get,
            OTEL_XRAY_PROXY_PORT,
            defaults::PROXY_PORT,
            &mut warnings,
        );

        let max_request_bytes = parse_number(
            &get,
            OTEL_XRAY_MAX_REQUEST_BYTES,
            defaults::MAX_REQUEST_BYTES as u64,
            1024..=256 * 1024 * 1024,
            &mut warnings,
        ) as usize;
        let spans = parse_number(
            &get,
            OTEL_XRAY_BUFFER_MAX_SPANS,
            defaults::BUFFER_MAX_SPANS as u64,
            1..=10_000_000,
            &mut warnings,
        ) as usize;
        let memory_mb = parse_number(
            &get,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
            defaults::FUNCTION_MEMORY_MB,
            1..=1_048_576,
            &mut warnings,
        );
        let buffer_max_bytes = parse_number(
            &get,
            OTEL_XRAY_BUFFER_MAX_BYTES,
            defaults::buffer_max_bytes(memory_mb) as u64,
            1024 * 1024..=64 * 1024 * 1024 * 1024,
            &mut warnings,
        ) as usize;
        // A body of the largest size accepted must be able to get its bytes.
        let max_in_flight_bytes = parse_number(
            &get,
            OTEL_XRAY_MAX_IN_FLIGHT_BYTES,
            defaults::max_in_flight_bytes(memory_mb) as u64,
            64 * 1024..=64 * 1024 * 1024 * 1024,
            &mut warnings,
        )
        .max(max_request_bytes as u64) as usize;
        let buffer_limits = crate::buffer::BufferLimits {
            spans,
            bytes: buffer_max_bytes,
            in_flight_bytes: max_in_flight_bytes,
        };
        let export_timeout = Duration::from_millis(parse_number(
            &get,
            OTEL_XRAY_EXPORT_TIMEOUT_MS,
            defaults::EXPORT_TIMEOUT_MS,
            1..=600_000,
            &mut warnings,
        ));

        let indexed_attributes = get(OTEL_XRAY_INDEXED_ATTRIBUTES)
            .map(|raw| comma_list(&raw))
            .unwrap_or_default();
        let index_all_attributes =
            parse_bool(&get, OTEL_XRAY_INDEX_ALL_ATTRIBUTES, false, &mut warnings);
        let platform_spans = parse_bool(&get, OTEL_XRAY_PLATFORM_SPANS, true, &mut warnings);
        let self_metrics = parse_bool(&get, OTEL_XRAY_SELF_METRICS, false, &mut warnings);

        let (log_level_var, log_level_raw) = match get(OTEL_XRAY_LOG_LEVEL) {
            Some(v) => (OTEL_XRAY_LOG_LEVEL, Some(v)),
            None => (OTEL_LOG_LEVEL, get(OTEL_LOG_LEVEL)),
        };
        let log_level = match log_level_raw {
            None => "info".to_owned(),
            Some(raw) => match normalise_log_level(&raw) {
                Some(level) => level.to_owned(),
                None => {
                    warnings.push(ConfigWarning {
                        var: log_level_var,
                        value: raw,
                        reason: "expected error, warn, info, debug, trace or off".into(),
                        fallback: "info".into(),
                    });
                    "info".to_owned()
                }
            },
        };
        let log_format = match get(AWS_LAMBDA_LOG_FORMAT) {
            Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };

        let service_name = get(OTEL_SERVICE_NAME).or_else(|| get(AWS_LAMBDA_FUNCTION_NAME));
        let resource_attributes = match get(OTEL_RESOURCE_ATTRIBUTES) {
            None => Vec::new(),
            Some(raw) => parse_key_values(&raw).unwrap_or_else(|| {
                warnings.push(ConfigWarning {
                    var: OTEL_RESOURCE_ATTRIBUTES,
                    value: raw.clone(),
                    reason: "expected key=value pairs separated by commas".into(),
                    fallback: "no extra resource attributes".into(),
                });
                Vec::new()
            }),
        };

        let proxy = parse_bool(&get, OTEL_XRAY_PROXY, true, &mut warnings);
        let context_precedence = match get(OTEL_XRAY_CONTEXT_PRECEDENCE) {
            None => DEFAULT_PRECEDENCE.to_vec(),
            Some(raw) => parse_precedence(&raw).unwrap_or_else(|| {
                warnings.push(ConfigWarning {
                    var: OTEL_XRAY_CONTEXT_PRECEDENCE,
                    value: raw.clone(),
                    reason: "expected a comma-separated list of lambda-sampled, traceparent, xray, lambda, lambda-strict (or none)".into(),
                    fallback: "lambda-sampled,traceparent,xray,lambda".into(),
                });
                DEFAULT_PRECEDENCE.to_vec()
            }),
        };
        let baggage_attributes = get(OTEL_XRAY_BAGGAGE_ATTRIBUTES)
            .map(|raw| comma_list(&raw))
            .unwrap_or_default();
        let merge_invocation_spans =
            match get(OTEL_XRAY_INVOCATION_SPAN).map(|v| v.to_ascii_lowercase()) {
                None => true,
                Some(v) if v == "merge" => true,
                Some(v) if v == "keep" => false,
                Some(v) => {
                    warnings.push(ConfigWarning {
                        var: OTEL_XRAY_INVOCATION_SPAN,
                        value: v,
                        reason: "expected merge or keep".into(),
                        fallback: "merge".into(),
                    });
                    true
                }
            };

        Ok((
            Config {
                exporter,
                daemon_address,
                region,
                api_endpoint,
                otlp_endpoint,
                otlp_headers,
                otlp_sigv4,
                flush,
                http_port,
                grpc_port,
                telemetry_port,
                proxy_port,
                max_request_bytes,
                buffer_limits,
                export_timeout,
                indexed_attributes,
                index_all_attributes,
                platform_spans,
                log_level,
                log_format,
                service_name,
                resource_attributes,
                runtime_api: get(AWS_LAMBDA_RUNTIME_API),
                proxy,
                context_precedence,
                baggage_attributes,
                merge_invocation_spans,
                initialization_type,
                managed_instances,
                max_concurrency,
                self_metrics,
            },
            warnings,
        ))
    }

    /// Parses from the process environment.
    pub fn from_env() -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// Fails when `url` is plain `http://` to a host that is not loopback.
fn refuse_cleartext_signing(var: &'static str, url: Option<&str>) -> Result<(), ConfigError> {
    let Some(url) = url else {
        return Ok(());
    };
    let plain = url
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    if plain && !url_host(url).is_some_and(is_loopback_host) {
        return Err(ConfigError::CleartextSigning {
            var,
            url: url.to_owned(),
        });
    }
    Ok(())
}

/// `localhost`, `127.0.0.0/8` or `::1`.
fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_http_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://")) && url_host(s).is_some()
}

/// The host of an http(s) URL, without port or credentials.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// `host:port`, or the daemon's two-protocol form `tcp:host:port udp:host:port`.
fn parse_daemon_address(raw: &str) -> Option<SocketAddr> {
    let udp = if raw.contains(' ') || raw.starts_with("udp:") || raw.starts_with("tcp:") {
        raw.split_whitespace()
            .find_map(|part| part.strip_prefix("udp:"))?
    } else {
        raw
    };
    let udp = if let Some(rest) = udp.strip_prefix("localhost:") {
        format!("127.0.0.1:{rest}")
    } else {
        udp.to_owned()
    };
    udp.parse().ok()
}

/// The flush mode from `OTEL_XRAY_FLUSH`. On Managed Instances there are no invocation
/// boundaries to flush at: only `periodic,<ms>` applies (as the background period), and
/// [`defaults::MANAGED_INSTANCES_FLUSH`] is the default.
fn parse_flush_mode(
    raw: Option<String>,
    managed_instances: bool,
    warnings: &mut Vec<ConfigWarning>,
) -> FlushMode {
    let default = if managed_instances {
        FlushMode::Periodic(defaults::MANAGED_INSTANCES_FLUSH)
    } else {
        FlushMode::End
    };
    let fallback = if managed_instances {
        format!(
            "periodic,{} (Managed Instances)",
            defaults::MANAGED_INSTANCES_FLUSH.as_millis()
        )
    } else {
        "end".to_owned()
    };
    let Some(raw) = raw else {
        return default;
    };
    match parse_flush(&raw) {
        Some(mode @ FlushMode::Periodic(_)) => mode,
        Some(_) if managed_instances => {
            warnings.push(ConfigWarning {
                var: OTEL_XRAY_FLUSH,
                value: raw,
                reason: "Managed Instances have no invocation boundaries to flush at; \
                         only periodic,<milliseconds> applies"
                    .into(),
                fallback,
            });
            default
        }
        Some(mode) => mode,
        None => {
            warnings.push(ConfigWarning {
                var: OTEL_XRAY_FLUSH,
                value: raw,
                reason: "expected end, adaptive or periodic,<milliseconds>".into(),
                fallback,
            });
            default
        }
    }
}

fn parse_flush(raw: &str) -> Option<FlushMode> {
    let lower = raw.to_ascii_lowercase();
    let mut parts = lower.splitn(2, ',').map(str::trim);
    match (parts.next()?, parts.next()) {
        ("end", None) => Some(FlushMode::End),
        ("adaptive", None) => Some(FlushMode::Adaptive),
        ("periodic", Some(ms)) => {
            let ms: u64 = ms.parse().ok()?;
            (1..=3_600_000)
                .contains(&ms)
                .then(|| FlushMode::Periodic(Duration::from_millis(ms)))
        }
        _ => None,
    }
}

/// `k=v,k2=v2` with percent-decoded values, as in the OpenTelemetry environment spec.
pub fn parse_key_values(raw: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in raw.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=')?;
        let k = k.trim();
        if k.is_empty() {
            return None;
        }
        out.push((percent_decode(k.trim())?, percent_decode(v.trim())?));
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn normalise_log_level(raw: &str) -> Option<&'static str> {
    Some(match raw.to_ascii_lowercase().as_str() {
        "error" | "fatal" | "critical" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" | "all" => "trace",
        "off" | "none" => "off",
        _ => return None,
    })
}

/// A comma-separated list, entries trimmed, empty ones left out.
fn comma_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_bool<G: Fn(&str) -> Option<String>>(
    get: &G,
    var: &'static str,
    default: bool,
    warnings: &mut Vec<ConfigWarning>,
) -> bool {
    match get(var) {
        None => default,
        Some(raw) => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => {
                warnings.push(ConfigWarning {
                    var,
                    value: raw,
                    reason: "expected true or false".into(),
                    fallback: default.to_string(),
                });
                default
            }
        },
    }
}

fn parse_number<G: Fn(&str) -> Option<String>>(
    get: &G,
    var: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
    warnings: &mut Vec<ConfigWarning>,
) -> u64 {
    match get(var) {
        None => default,
        Some(raw) => match raw.parse::<u64>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                warnings.push(ConfigWarning {
                    var,
                    value: raw,
                    reason: format!(
                        "expected a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                    fallback: default.to_string(),
                });
                default
            }
        },
    }
}

fn parse_port<G: Fn(&str) -> Option<String>>(
    get: &G,
    var: &'static str,
    default: u16,
    warnings: &mut Vec<ConfigWarning>,
) -> u16 {
    parse_number(get, var, u64::from(default), 1..=65535, warnings) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<(Config, Vec<ConfigWarning>), ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn proxy_settings() {
        let (c, w) = parse(&[("AWS_REGION", "eu-west-1")]).unwrap();
        assert!(w.is_empty());
        assert!(c.proxy && c.merge_invocation_spans);
        assert_eq!(c.context_precedence, DEFAULT_PRECEDENCE);
        assert!(c.baggage_attributes.is_empty());
        let (c, w) = parse(&[
            ("AWS_REGION", "eu-west-1"),
            (OTEL_XRAY_PROXY, "false"),
            (OTEL_XRAY_CONTEXT_PRECEDENCE, "traceparent,lambda-strict"),
            (OTEL_XRAY_BAGGAGE_ATTRIBUTES, "user.id, tenant"),
            (OTEL_XRAY_INVOCATION_SPAN, "keep"),
        ])
        .unwrap();
        assert!(w.is_empty());
        assert!(!c.proxy && !c.merge_invocation_spans);
        assert_eq!(
            c.context_precedence,
            [ContextSource::Traceparent, ContextSource::LambdaStrict]
        );
        assert_eq!(c.baggage_attributes, ["user.id", "tenant"]);
        let (c, w) = parse(&[
            ("AWS_REGION", "eu-west-1"),
            (OTEL_XRAY_CONTEXT_PRECEDENCE, "w3c"),
            (OTEL_XRAY_INVOCATION_SPAN, "both"),
        ])
        .unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(c.context_precedence, DEFAULT_PRECEDENCE);
        assert!(c.merge_invocation_spans);
    }

    #[test]
    fn managed_instances_flush_in_the_background_and_size_for_concurrency() {
        let lmi = (AWS_LAMBDA_INITIALIZATION_TYPE, MANAGED_INSTANCES);
        let (c, w) = parse(&[("AWS_REGION", "eu-west-1"), lmi]).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(c.managed_instances);
        assert_eq!(c.flush, FlushMode::Periodic(Duration::from_secs(1)));
        assert_eq!(c.max_concurrency, defaults::MANAGED_INSTANCES_CONCURRENCY);
        let (c, w) = parse(&[
            ("AWS_REGION", "eu-west-1"),
            lmi,
            (OTEL_XRAY_FLUSH, "periodic,250"),
            (AWS_LAMBDA_MAX_CONCURRENCY, "32"),
        ])
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.flush, FlushMode::Periodic(Duration::from_millis(250)));
        assert_eq!(c.max_concurrency, 32);
        // `end` and `adaptive` need invocation boundaries: warned, and the default used.
        for mode in ["end", "adaptive", "sometimes"] {
            let (c, w) =
                parse(&[("AWS_REGION", "eu-west-1"), lmi, (OTEL_XRAY_FLUSH, mode)]).unwrap();
            assert_eq!(
                c.flush,
                FlushMode::Periodic(Duration::from_secs(1)),
                "{mode}"
            );
            assert_eq!(w.len(), 1, "{mode}");
            assert_eq!(w[0].var, OTEL_XRAY_FLUSH);
            assert!(w[0].fallback.contains("periodic,1000"), "{}", w[0]);
        }
        // On-demand: unchanged.
        let (c, _) = parse(&[("AWS_REGION", "eu-west-1")]).unwrap();
        assert!(!c.managed_instances);
        assert_eq!(c.flush, FlushMode::End);
        assert_eq!(c.max_concurrency, 1);
        let (_, w) = parse(&[
            ("AWS_REGION", "eu-west-1"),
            (AWS_LAMBDA_MAX_CONCURRENCY, "0"),
        ])
        .unwrap();
        assert_eq!(w[0].var, AWS_LAMBDA_MAX_CONCURRENCY);
    }

    #[test]
    fn signed_requests_never_go_out_in_cleartext() {
        for (url, sigv4, ok) in [
            ("http://collector.internal:4318/v1/traces", "true", false),
            ("http://10.0.0.5:4318/v1/traces", "true", false),
            ("http://collector.internal:4318/v1/traces", "false", true),
            (
                "https://xray.eu-west-1.amazonaws.com/v1/traces",
                "true",
                true,
            ),
            ("http://127.0.0.1:4318/v1/traces", "true", true),
            ("http://localhost:4318/v1/traces", "true", true),
            ("http://[::1]:4318/v1/traces", "true", true),
        ] {
            let r = parse(&[
                (OTEL_XRAY_EXPORTER, "otlp"),
                (OTEL_XRAY_OTLP_ENDPOINT, url),
                (OTEL_XRAY_OTLP_SIGV4, sigv4),
            ]);
            assert_eq!(r.is_ok(), ok, "{url} sigv4={sigv4}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.variable(), OTEL_XRAY_OTLP_ENDPOINT);
                assert!(e.to_string().contains("cleartext"), "{e}");
            }
        }
        let e = parse(&[
            (OTEL_XRAY_EXPORTER, "api"),
            (OTEL_XRAY_API_ENDPOINT, "http://xray.example.com"),
        ])
        .unwrap_err();
        assert_eq!(e.variable(), OTEL_XRAY_API_ENDPOINT);
        assert!(
            parse(&[
                (OTEL_XRAY_EXPORTER, "api"),
                (OTEL_XRAY_API_ENDPOINT, "http://127.0.0.1:5000"),
            ])
            .is_ok()
        );
    }

    #[test]
    fn configuration_errors_name_the_variable_and_the_fix() {
        let e = parse(&[(OTEL_XRAY_EXPORTER, "otlp")]).unwrap_err();
        assert_eq!(e.variable(), OTEL_XRAY_OTLP_ENDPOINT);
        assert!(e.to_string().contains("set it to"), "{e}");
        let e = parse(&[(OTEL_XRAY_EXPORTER, "daemon")]).unwrap_err();
        assert_eq!(e.variable(), AWS_XRAY_DAEMON_ADDRESS);
        let p = Platform::from_lookup(|k| {
            (k == AWS_LAMBDA_INITIALIZATION_TYPE).then(|| " Lambda-Managed-Instances ".to_owned())
        });
        assert!(p.managed_instances);
        assert_eq!(p.runtime_api, None);
    }

    #[test]
    fn defaults_with_region_pick_api() {
        let (c, w) = parse(&[("AWS_REGION", "eu-west-1")]).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.exporter, ExporterKind::Api);
        assert_eq!(
            c.api_endpoint.as_deref(),
            Some("https://xray.eu-west-1.amazonaws.com")
        );
        assert_eq!(c.http_port, 4318);
        assert_eq!(c.grpc_port, 4317);
        assert_eq!(c.proxy_port, 9009);
        assert_eq!(c.flush, FlushMode::End);
        assert_eq!(c.max_request_bytes, 4 * 1024 * 1024);
        assert_eq!(c.log_level, "info");
        assert!(c.platform_spans);
    }

    #[test]
    fn auto_prefers_daemon_when_address_set() {
        let (c, _) = parse(&[("AWS_XRAY_DAEMON_ADDRESS", "169.254.79.129:2000")]).unwrap();
        assert_eq!(c.exporter, ExporterKind::Daemon);
        assert_eq!(
            c.daemon_address,
            Some("169.254.79.129:2000".parse().unwrap())
        );
        let (c, _) = parse(&[(
            "AWS_XRAY_DAEMON_ADDRESS",
            "tcp:127.0.0.1:2000 udp:127.0.0.2:2001",
        )])
        .unwrap();
        assert_eq!(c.daemon_address, Some("127.0.0.2:2001".parse().unwrap()));
        let (c, _) = parse(&[("AWS_XRAY_DAEMON_ADDRESS", "localhost:2000")]).unwrap();
        assert_eq!(c.daemon_address, Some("127.0.0.1:2000".parse().unwrap()));
    }

    #[test]
    fn bad_optional_values_warn_and_fall_back() {
        let (c, w) = parse(&[
            ("AWS_REGION", "us-east-1"),
            ("OTEL_XRAY_EXPORTER", "carrier-pigeon"),
            ("OTEL_XRAY_HTTP_PORT", "70000"),
            ("OTEL_XRAY_FLUSH", "sometimes"),
            ("OTEL_XRAY_BUFFER_MAX_SPANS", "-3"),
            ("OTEL_XRAY_PLATFORM_SPANS", "perhaps"),
            ("OTEL_LOG_LEVEL", "loud"),
        ])
        .unwrap();
        assert_eq!(c.exporter, ExporterKind::Api);
        assert_eq!(c.http_port, 4318);
        assert_eq!(c.flush, FlushMode::End);
        assert_eq!(c.buffer_limits.spans, 20_000);
        assert!(c.platform_spans);
        assert_eq!(c.log_level, "info");
        let vars: Vec<_> = w.iter().map(|w| w.var).collect();
        assert_eq!(
            vars,
            [
                OTEL_XRAY_EXPORTER,
                OTEL_XRAY_FLUSH,
                OTEL_XRAY_HTTP_PORT,
                OTEL_XRAY_BUFFER_MAX_SPANS,
                OTEL_XRAY_PLATFORM_SPANS,
                OTEL_LOG_LEVEL
            ]
        );
        assert!(w[0].to_string().contains("carrier-pigeon"));
    }

    #[test]
    fn useless_settings_are_fatal() {
        assert_eq!(
            parse(&[("OTEL_XRAY_EXPORTER", "otlp")]).unwrap_err(),
            ConfigError::MissingOtlpEndpoint
        );
        assert_eq!(
            parse(&[
                ("OTEL_XRAY_EXPORTER", "otlp"),
                ("OTEL_XRAY_OTLP_ENDPOINT", "ftp://x")
            ])
            .unwrap_err(),
            ConfigError::BadOtlpEndpoint("ftp://x".into())
        );
        assert_eq!(parse(&[]).unwrap_err(), ConfigError::MissingRegion);
        assert_eq!(
            parse(&[("OTEL_XRAY_EXPORTER", "daemon")]).unwrap_err(),
            ConfigError::MissingDaemonAddress
        );
    }

    #[test]
    fn otlp_endpoint_never_from_standard_otel_variables() {
        let r = parse(&[
            ("OTEL_XRAY_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://127.0.0.1:4318/v1/traces",
            ),
        ]);
        assert_eq!(r.unwrap_err(), ConfigError::MissingOtlpEndpoint);
    }

    #[test]
    fn otlp_sigv4_defaults_on_for_aws_hosts() {
        let (c, _) = parse(&[
            ("OTEL_XRAY_EXPORTER", "otlp"),
            (
                "OTEL_XRAY_OTLP_ENDPOINT",
                "https://xray.us-east-1.amazonaws.com/v1/traces",
            ),
        ])
        .unwrap();
        assert!(c.otlp_sigv4);
        let (c, _) = parse(&[
            ("OTEL_XRAY_EXPORTER", "otlp"),
            ("OTEL_XRAY_OTLP_ENDPOINT", "http://127.0.0.1:9999/v1/traces"),
            ("OTEL_XRAY_OTLP_HEADERS", "x-api-key=a%3Db, tenant = t1"),
        ])
        .unwrap();
        assert!(!c.otlp_sigv4);
        assert_eq!(
            c.otlp_headers,
            vec![
                ("x-api-key".to_owned(), "a=b".to_owned()),
                ("tenant".to_owned(), "t1".to_owned())
            ]
        );
        let (c, _) = parse(&[
            ("OTEL_XRAY_EXPORTER", "otlp"),
            ("OTEL_XRAY_OTLP_ENDPOINT", "http://127.0.0.1:9999/v1/traces"),
            ("OTEL_XRAY_OTLP_SIGV4", "true"),
        ])
        .unwrap();
        assert!(c.otlp_sigv4);
    }

    #[test]
    fn bad_headers_are_redacted_in_warnings() {
        let (_, w) = parse(&[
            ("AWS_REGION", "us-east-1"),
            ("OTEL_XRAY_OTLP_HEADERS", "secret-token-without-equals"),
        ])
        .unwrap();
        assert_eq!(w.len(), 1);
        assert!(!w[0].to_string().contains("secret-token"));
    }

    #[test]
    fn flush_modes() {
        assert_eq!(parse_flush("end"), Some(FlushMode::End));
        assert_eq!(parse_flush("ADAPTIVE"), Some(FlushMode::Adaptive));
        assert_eq!(
            parse_flush("periodic, 250"),
            Some(FlushMode::Periodic(Duration::from_millis(250)))
        );
        assert_eq!(parse_flush("periodic"), None);
        assert_eq!(parse_flush("periodic,0"), None);
        assert_eq!(parse_flush("end,5"), None);
    }

    #[test]
    fn precedence_xray_level_over_otel_level() {
        let (c, _) = parse(&[
            ("AWS_REGION", "us-east-1"),
            ("OTEL_LOG_LEVEL", "debug"),
            ("OTEL_XRAY_LOG_LEVEL", "warn"),
        ])
        .unwrap();
        assert_eq!(c.log_level, "warn");
        let (c, _) = parse(&[("AWS_REGION", "us-east-1"), ("OTEL_LOG_LEVEL", "debug")]).unwrap();
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn service_name_falls_back_to_function_name() {
        let (c, _) = parse(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_LAMBDA_FUNCTION_NAME", "orders"),
        ])
        .unwrap();
        assert_eq!(c.service_name.as_deref(), Some("orders"));
        let (c, _) = parse(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_LAMBDA_FUNCTION_NAME", "orders"),
            ("OTEL_SERVICE_NAME", "checkout"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=payments,tier=gold"),
        ])
        .unwrap();
        assert_eq!(c.service_name.as_deref(), Some("checkout"));
        assert_eq!(c.resource_attributes.len(), 2);
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://xray.us-east-1.amazonaws.com/v1/traces"),
            Some("xray.us-east-1.amazonaws.com")
        );
        assert_eq!(url_host("http://u:p@127.0.0.1:80/x"), Some("127.0.0.1"));
        assert_eq!(url_host("http://[::1]:80/x"), Some("::1"));
        assert_eq!(url_host("http:///x"), None);
    }

    #[test]
    fn byte_bounds_follow_the_function_memory() {
        const MIB: usize = 1024 * 1024;
        // No memory size (not on Lambda): sized as the smallest function.
        let (c, w) = parse(&[("AWS_REGION", "eu-west-1")]).unwrap();
        assert!(w.is_empty());
        assert_eq!(c.buffer_limits.bytes, 16 * MIB);
        assert_eq!(c.buffer_limits.in_flight_bytes, 8 * MIB);
        let (c, _) = parse(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
        ])
        .unwrap();
        assert_eq!(c.buffer_limits.bytes, 128 * MIB);
        assert_eq!(c.buffer_limits.in_flight_bytes, 64 * MIB);
        let (c, _) = parse(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240"),
        ])
        .unwrap();
        assert_eq!(c.buffer_limits.bytes, 256 * MIB);
        assert_eq!(c.buffer_limits.in_flight_bytes, 128 * MIB);
        // Explicit values win; the body budget is never below the largest request.
        let (c, w) = parse(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
            ("OTEL_XRAY_BUFFER_MAX_BYTES", "2097152"),
            ("OTEL_XRAY_MAX_IN_FLIGHT_BYTES", "65536"),
        ])
        .unwrap();
        assert!(w.is_empty());
        assert_eq!(c.buffer_limits.bytes, 2 * MIB);
        assert_eq!(c.buffer_limits.in_flight_bytes, 4 * MIB);
        // Malformed: warned, and the default of the memory size used.
        let (c, w) = parse(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots"),
            ("OTEL_XRAY_BUFFER_MAX_BYTES", "12"),
        ])
        .unwrap();
        let vars: Vec<_> = w.iter().map(|w| w.var).collect();
        assert_eq!(
            vars,
            [
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                "OTEL_XRAY_BUFFER_MAX_BYTES"
            ]
        );
        assert_eq!(c.buffer_limits.bytes, 16 * MIB);
    }
}
