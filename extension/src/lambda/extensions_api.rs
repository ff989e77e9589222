//! Client of the Lambda Extensions API (`http://$AWS_LAMBDA_RUNTIME_API/2020-01-01/extension/…`):
//! register, `event/next`, `init/error`, `exit/error`.
//!
//! HTTP/1.1 over a kept-alive TCP connection with `TCP_NODELAY`. The `event/next` path reuses a
//! pre-built URI and identifier header (both reference-counted, so cloning them does not copy)
//! and has no timeout: Lambda answers it when there is an event, possibly after a freeze.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// Header naming the extension at registration.
pub const EXTENSION_NAME_HEADER: &str = "lambda-extension-name";
/// Header carrying the identifier returned by register.
pub const EXTENSION_ID_HEADER: &str = "lambda-extension-identifier";
/// Header asking for optional fields in the register response.
pub const ACCEPT_FEATURE_HEADER: &str = "lambda-extension-accept-feature";
/// Header carrying the error type of `init/error` and `exit/error`.
pub const ERROR_TYPE_HEADER: &str = "lambda-extension-function-error-type";

/// Budget of the calls other than `event/next`.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response body read from the Lambda APIs.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A call to a Lambda API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `AWS_LAMBDA_RUNTIME_API` does not make a URI.
    #[error("AWS_LAMBDA_RUNTIME_API={0:?} is not a host:port")]
    BadAddress(String),
    /// Connection refused, reset, …
    #[error("{call}: cannot reach the Lambda API: {message}")]
    Transport {
        /// Which call.
        call: &'static str,
        /// What hyper said, with its causes (`client error (Connect): Connection refused …`).
        message: String,
    },
    /// The call took longer than its budget.
    #[error("{call}: no answer within {0:?}", CALL_TIMEOUT)]
    Timeout {
        /// Which call.
        call: &'static str,
    },
    /// The response body could not be read.
    #[error("{call}: cannot read the response body: {message}")]
    Body {
        /// Which call.
        call: &'static str,
        /// Why.
        message: String,
    },
    /// Lambda answered with an unexpected status.
    #[error("{call}: Lambda API answered {status}: {body}")]
    Status {
        /// Which call.
        call: &'static str,
        /// The status.
        status: StatusCode,
        /// The start of the body.
        body: String,
    },
    /// The response body is not what the API documents.
    #[error("{call}: cannot decode the response: {source}")]
    Decode {
        /// Which call.
        call: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// Register answered without `Lambda-Extension-Identifier`.
    #[error("register: the response has no usable Lambda-Extension-Identifier header")]
    MissingIdentifier,
    /// A call that needs the identifier was made before register.
    #[error("{call}: the extension is not registered")]
    NotRegistered {
        /// Which call.
        call: &'static str,
    },
}

/// A minimal HTTP/1.1 client for the Lambda APIs, shared by the Extensions and Telemetry clients.
#[derive(Debug, Clone)]
pub(crate) struct ApiClient {
    http: Client<HttpConnector, Full<Bytes>>,
    host: String,
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct ApiResponse {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl ApiClient {
    pub(crate) fn new(runtime_api: &str) -> Result<Self, ApiError> {
        let host = runtime_api
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/');
        // Validate once, so that later URIs cannot fail.
        let _: Uri = format!("http://{host}/")
            .parse()
            .map_err(|_| ApiError::BadAddress(runtime_api.to_owned()))?;
        if host.is_empty() {
            return Err(ApiError::BadAddress(runtime_api.to_owned()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(2)
            .build(connector);
        Ok(ApiClient {
            http,
            host: host.to_owned(),
        })
    }

    pub(crate) fn uri(&self, path: &str) -> Result<Uri, ApiError> {
        format!("http://{}{}", self.host, path)
            .parse()
            .map_err(|_| ApiError::BadAddress(self.host.clone()))
    }

    /// Sends `req`, reads the whole body. `timeout: None` waits for ever (event/next).
    pub(crate) async fn send(
        &self,
        call: &'static str,
        req: Request<Full<Bytes>>,
        timeout: Option<Duration>,
    ) -> Result<ApiResponse, ApiError> {
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ApiError::Transport {
                    call,
                    message: error_chain(&e),
                })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| ApiError::Body {
                    call,
                    message: e.to_string(),
                })?
                .to_bytes();
            Ok(ApiResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match timeout {
            None => exchange.await,
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| ApiError::Timeout { call })?,
        }
    }
}

/// An error and its sources, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Fails with [`ApiError::Status`] unless the status is one of `ok`.
pub(crate) fn expect_status(
    call: &'static str,
    resp: &ApiResponse,
    ok: &[StatusCode],
) -> Result<(), ApiError> {
    if ok.contains(&resp.status) {
        return Ok(());
    }
    let body = String::from_utf8_lossy(&resp.body[..resp.body.len().min(512)]).into_owned();
    Err(ApiError::Status {
        call,
        status: resp.status,
        body,
    })
}

/// What register tells about the function.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    /// `Lambda-Extension-Identifier`, sent with every later call.
    pub extension_id: String,
    /// `functionName`.
    pub function_name: String,
    /// `functionVersion`.
    pub function_version: String,
    /// `handler`.
    pub handler: String,
    /// `accountId` (present because we ask for the `accountId` feature).
    pub account_id: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RegisterBody {
    #[serde(default)]
    function_name: String,
    #[serde(default)]
    function_version: String,
    #[serde(default)]
    handler: String,
    #[serde(default)]
    account_id: Option<String>,
}

/// The events an extension registers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Events {
    /// `INVOKE` and `SHUTDOWN`: on-demand Lambda, where the extension flushes at every
    /// invocation's end.
    InvokeAndShutdown,
    /// `SHUTDOWN` only: what Lambda Managed Instances accept (an `INVOKE` registration fails the
    /// function's init there), and the pass-through mode, which never wants waking.
    ShutdownOnly,
}

impl Events {
    /// The register body.
    fn body(self) -> &'static [u8] {
        match self {
            Events::InvokeAndShutdown => br#"{"events":["INVOKE","SHUTDOWN"]}"#,
            Events::ShutdownOnly => br#"{"events":["SHUTDOWN"]}"#,
        }
    }
}

/// The `tracing` object of an INVOKE event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InvokeTracing {
    /// `X-Amzn-Trace-Id`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The header value, `Root=…;Parent=…;Sampled=…`.
    #[serde(default)]
    pub value: String,
}

/// An INVOKE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeEvent {
    /// The request id.
    pub request_id: String,
    /// When the invocation times out, in Unix milliseconds.
    pub deadline_ms: u64,
    /// The ARN the function was invoked with (may carry an alias or version).
    pub invoked_function_arn: String,
    /// The X-Ray trace header, if Lambda sent one.
    pub tracing: Option<InvokeTracing>,
}

/// Why the sandbox is shutting down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownReason {
    /// `spindown`: Lambda is reclaiming an idle sandbox.
    Spindown,
    /// `timeout`: the function timed out.
    Timeout,
    /// `failure`: the runtime or an extension failed.
    Failure,
    /// Anything else, as sent.
    Other(String),
}

impl ShutdownReason {
    fn from_wire(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "spindown" => ShutdownReason::Spindown,
            "timeout" => ShutdownReason::Timeout,
            "failure" => ShutdownReason::Failure,
            _ => ShutdownReason::Other(s.to_owned()),
        }
    }

    /// As Lambda spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ShutdownReason::Spindown => "spindown",
            ShutdownReason::Timeout => "timeout",
            ShutdownReason::Failure => "failure",
            ShutdownReason::Other(s) => s,
        }
    }
}

impl std::fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SHUTDOWN event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownEvent {
    /// Why.
    pub reason: ShutdownReason,
    /// When Lambda kills the extension, in Unix milliseconds.
    pub deadline_ms: u64,
}

/// What `event/next` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextEvent {
    /// An invocation started.
    Invoke(InvokeEvent),
    /// The sandbox is shutting down.
    Shutdown(ShutdownEvent),
    /// An event type we did not register for (ignored; the lifecycle asks again).
    Other(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNextEvent {
    event_type: String,
    #[serde(default)]
    deadline_ms: Option<f64>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    invoked_function_arn: Option<String>,
    #[serde(default)]
    tracing: Option<InvokeTracing>,
    #[serde(default)]
    shutdown_reason: Option<String>,
}

/// Parses an `event/next` body. Unknown fields are ignored.
pub fn parse_next_event(body: &[u8]) -> Result<NextEvent, serde_json::Error> {
    let raw: RawNextEvent = serde_json::from_slice(body)?;
    // Milliseconds since 1970 fit an f64 exactly; `as` saturates (negative/NaN → 0).
    let deadline_ms = raw.deadline_ms.map_or(0, |d| d as u64);
    Ok(match raw.event_type.as_str() {
        "INVOKE" => NextEvent::Invoke(InvokeEvent {
            request_id: raw.request_id.unwrap_or_default(),
            deadline_ms,
            invoked_function_arn: raw.invoked_function_arn.unwrap_or_default(),
            tracing: raw.tracing.filter(|t| !t.value.is_empty()),
        }),
        "SHUTDOWN" => NextEvent::Shutdown(ShutdownEvent {
            reason: ShutdownReason::from_wire(raw.shutdown_reason.as_deref().unwrap_or("")),
            deadline_ms,
        }),
        _ => NextEvent::Other(raw.event_type),
    })
}

/// The error type header value: `Extension.<Reason>`, the reason reduced to `[A-Za-z0-9]`.
pub fn error_type(reason: &str) -> String {
    let cleaned: String = reason.chars().filter(char::is_ascii_alphanumeric).collect();
    if cleaned.is_empty() {
        "Extension.Unknown".to_owned()
    } else {
        format!("Extension.{cleaned}")
    }
}

/// The Extensions API client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExtensionsClient {
    api: ApiClient,
    next_uri: Uri,
    id: Option<HeaderValue>,
}

impl ExtensionsClient {
    /// A client for `runtime_api` (`host:port`, the value of `AWS_LAMBDA_RUNTIME_API`).
    /// Builds no connection yet.
    pub fn new(runtime_api: &str) -> Result<Self, ApiError> {
        let api = ApiClient::new(runtime_api)?;
        let next_uri = api.uri("/2020-01-01/extension/event/next")?;
        Ok(ExtensionsClient {
            api,
            next_uri,
            id: None,
        })
    }

    /// The identifier, once registered.
    pub fn extension_id(&self) -> Option<&str> {
        self.id.as_ref().and_then(|v| v.to_str().ok())
    }

    pub(crate) fn api(&self) -> &ApiClient {
        &self.api
    }

    pub(crate) fn id_header(&self, call: &'static str) -> Result<HeaderValue, ApiError> {
        self.id.clone().ok_or(ApiError::NotRegistered { call })
    }

    /// `POST /extension/register` for `events`, asking for `accountId`.
    pub async fn register(&mut self, name: &str, events: Events) -> Result<Registration, ApiError> {
        const CALL: &str = "register";
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.api.uri("/2020-01-01/extension/register")?)
            .header(HeaderName::from_static(EXTENSION_NAME_HEADER), name)
            .header(
                HeaderName::from_static(ACCEPT_FEATURE_HEADER),
                HeaderValue::from_static("accountId"),
            )
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from_static(events.body())))
            .map_err(|_| ApiError::BadAddress(name.to_owned()))?;
        let resp = self.api.send(CALL, req, Some(CALL_TIMEOUT)).await?;
        expect_status(CALL, &resp, &[StatusCode::OK])?;
        let id = resp
            .headers
            .get(EXTENSION_ID_HEADER)
            .filter(|v| !v.is_empty() && v.to_str().is_ok())
            .cloned()
            .ok_or(ApiError::MissingIdentifier)?;
        let body: RegisterBody = if resp.body.iter().all(u8::is_ascii_whitespace) {
            RegisterBody::default()
        } else {
            serde_json::from_slice(&resp.body)
                .map_err(|source| ApiError::Decode { call: CALL, source })?
        };
        let extension_id = id.to_str().unwrap_or_default().to_owned();
        self.id = Some(id);
        Ok(Registration {
            extension_id,
            function_name: body.function_name,
            function_version: body.function_version,
            handler: body.handler,
            account_id: body.account_id.filter(|a| !a.is_empty()),
        })
    }

    /// `GET /extension/event/next`: blocks until Lambda has an event for us.
    pub async fn next_event(&self) -> Result<NextEvent, ApiError> {
        const CALL: &str = "event/next";
        let id = self.id_header(CALL)?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.next_uri.clone())
            .header(HeaderName::from_static(EXTENSION_ID_HEADER), id)
            .body(Full::new(Bytes::new()))
            .map_err(|_| ApiError::NotRegistered { call: CALL })?;
        let resp = self.api.send(CALL, req, None).await?;
        expect_status(CALL, &resp, &[StatusCode::OK])?;
        parse_next_event(&resp.body).map_err(|source| ApiError::Decode { call: CALL, source })
    }

    /// `POST /extension/init/error`: the extension cannot start. Lambda fails the init phase.
    pub async fn init_error(&self, reason: &str, message: &str) -> Result<(), ApiError> {
        self.report_error(
            "init/error",
            "/2020-01-01/extension/init/error",
            reason,
            message,
        )
        .await
    }

    /// `POST /extension/exit/error`: the extension is about to exit because of an error.
    pub async fn exit_error(&self, reason: &str, message: &str) -> Result<(), ApiError> {
        self.report_error(
            "exit/error",
            "/2020-01-01/extension/exit/error",
            reason,
            message,
        )
        .await
    }

    async fn report_error(
        &self,
        call: &'static str,
        path: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let id = self.id_header(call)?;
        let error_type = error_type(reason);
        let body = serde_json::json!({
            "errorMessage": message,
            "errorType": error_type,
        });
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.api.uri(path)?)
            .header(HeaderName::from_static(EXTENSION_ID_HEADER), id)
            .header(
                HeaderName::from_static(ERROR_TYPE_HEADER),
                HeaderValue::from_str(&error_type)
                    .unwrap_or(HeaderValue::from_static("Extension.Unknown")),
            )
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| ApiError::NotRegistered { call })?;
        let resp = self.api.send(call, req, Some(CALL_TIMEOUT)).await?;
        expect_status(call, &resp, &[StatusCode::OK, StatusCode::ACCEPTED])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_invoke_with_unknown_fields() {
        let body = br#"{
            "eventType": "INVOKE",
            "deadlineMs": 1676051010000,
            "requestId": "3da1f2dc-3222-475e-9205-e2e6c6318895",
            "invokedFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:orders:live",
            "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"},
            "somethingNew": {"x": 1}
        }"#;
        let NextEvent::Invoke(inv) = parse_next_event(body).unwrap() else {
            panic!("not an invoke")
        };
        assert_eq!(inv.request_id, "3da1f2dc-3222-475e-9205-e2e6c6318895");
        assert_eq!(inv.deadline_ms, 1_676_051_010_000);
        assert!(inv.invoked_function_arn.ends_with(":orders:live"));
        let t = inv.tracing.unwrap();
        assert_eq!(t.kind, "X-Amzn-Trace-Id");
        assert!(t.value.starts_with("Root=1-5759e988"));
    }

    #[test]
    fn parses_shutdown_reasons() {
        for (wire, reason) in [
            ("spindown", ShutdownReason::Spindown),
            ("timeout", ShutdownReason::Timeout),
            ("failure", ShutdownReason::Failure),
            ("meteor", ShutdownReason::Other("meteor".into())),
        ] {
            let body = format!(
                r#"{{"eventType":"SHUTDOWN","shutdownReason":"{wire}","deadlineMs":1676051012000}}"#
            );
            assert_eq!(
                parse_next_event(body.as_bytes()).unwrap(),
                NextEvent::Shutdown(ShutdownEvent {
                    reason,
                    deadline_ms: 1_676_051_012_000
                })
            );
        }
    }

    #[test]
    fn other_events_and_garbage() {
        assert_eq!(
            parse_next_event(br#"{"eventType":"RESTORE"}"#).unwrap(),
            NextEvent::Other("RESTORE".into())
        );
        assert!(parse_next_event(b"not json").is_err());
        assert!(parse_next_event(br#"{"deadlineMs":1}"#).is_err());
        let NextEvent::Invoke(inv) = parse_next_event(
            br#"{"eventType":"INVOKE","requestId":"r","deadlineMs":1.5e12,"tracing":{"type":"X-Amzn-Trace-Id","value":""}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(inv.deadline_ms, 1_500_000_000_000);
        assert_eq!(inv.tracing, None);
    }

    #[test]
    fn error_types_are_sanitised() {
        assert_eq!(error_type("ConfigError"), "Extension.ConfigError");
        assert_eq!(error_type("Bind error!"), "Extension.Binderror");
        assert_eq!(error_type("…"), "Extension.Unknown");
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(ExtensionsClient::new("127.0.0.1:9001").is_ok());
        assert!(ExtensionsClient::new("").is_err());
        assert!(ExtensionsClient::new("a b:1").is_err());
    }
}
