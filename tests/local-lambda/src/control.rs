//! The control API of the `local-lambda` binary, for tests in other languages and `make demo`.
//!
//! All on 127.0.0.1, JSON in and out:
//! - `GET /health` → `{"status": "ok", "runtimeApi": "127.0.0.1:PORT", "pids": [..]}`
//! - `POST /invoke` with `{"payload": <any JSON>, "payloadText"?: "<raw event>",
//!   "traceHeader"?: "Root=...", "clientContext"?: <JSON or string>}` → the invocation result:
//!   `{"requestId", "status": "success"|"error"|"timeout"|"failure", "response": <JSON or null>,
//!   "responseText", "error": {"errorType", "errorMessage", "body"} | null, "traceHeader",
//!   "coldStart", "reset", "timings": {"initMs", "startedAtMs", "runtimeDoneAtMs",
//!   "completedAtMs", "runtimeMs", "durationMs", "postRuntimeMs", "responseLatencyMs",
//!   "responseDurationMs", "extensions": [{"name", "nextAtMs", "afterRuntimeDoneMs"}]}}`
//! - `POST /shutdown` → the shutdown report `{"reason", "deadlineMs", "durationMs",
//!   "extensions": [{"name", "registered", "events", "eventNextCount", "receivedShutdown",
//!   "exitCode", "signal", "killed", "exitedAfterMs"}], "runtime": {...}}`; then the process exits
//! - `GET /timeline` → `{"nowMs", "events": [{"atMs", "kind", ...fields}]}`
//! - `GET /telemetry` → `{"emitted": [events], "deliveries": [{"extension", "atMs", "attempt",
//!   "ok", "status", "events"}]}`
//! - `GET /resets` → `[shutdown reports of resets]`

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::http::{Handler, Request, Response};
use crate::{InvokeRequest, LocalLambda};

/// Control API handler. `exit` is notified after `/shutdown` has answered.
#[derive(Debug)]
pub struct Control {
    pub lambda: Arc<LocalLambda>,
    pub exit: Arc<Notify>,
}

fn bad_request(msg: &str) -> Response {
    Response::error(400, "InvalidRequest", msg)
}

/// Decode a `/invoke` body into a request.
pub fn parse_invoke(body: &[u8]) -> Result<InvokeRequest, String> {
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?
    };
    let obj = v.as_object().ok_or("body should be a JSON object")?;
    let payload = match (obj.get("payloadText"), obj.get("payload")) {
        (Some(Value::String(t)), _) => t.clone().into_bytes(),
        (_, Some(p)) => p.to_string().into_bytes(),
        _ => b"{}".to_vec(),
    };
    let text = |key: &str| match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    Ok(InvokeRequest {
        payload,
        trace_header: text("traceHeader"),
        client_context: text("clientContext"),
        cognito_identity: text("cognitoIdentity"),
    })
}

impl Handler for Control {
    async fn handle(&self, req: Request) -> Response {
        match (req.method.as_str(), req.path.trim_end_matches('/')) {
            ("GET", "/health") => Response::json(
                200,
                &json!({"status": "ok", "runtimeApi": self.lambda.runtime_api().to_string(),
                        "pids": self.lambda.pids()}),
            ),
            ("POST", "/invoke") => match parse_invoke(&req.body) {
                Err(e) => bad_request(&e),
                Ok(r) => match self.lambda.invoke(r).await {
                    Ok(result) => Response::json(200, &result.to_json()),
                    Err(e) => Response::error(409, "SandboxShutDown", &e.to_string()),
                },
            },
            ("POST", "/shutdown") => match self.lambda.shutdown().await {
                Ok(report) => {
                    self.exit.notify_one();
                    Response::json(200, &serde_json::to_value(&report).unwrap_or(Value::Null))
                        .header("Connection", "close")
                }
                Err(e) => Response::error(409, "SandboxShutDown", &e.to_string()),
            },
            ("GET", "/timeline") => Response::json(
                200,
                &json!({"nowMs": self.lambda.now_ms(), "events": self.lambda.timeline()}),
            ),
            ("GET", "/telemetry") => Response::json(
                200,
                &json!({"emitted": self.lambda.telemetry_emitted(),
                        "deliveries": self.lambda.telemetry_deliveries()}),
            ),
            ("GET", "/resets") => Response::json(200, &json!(self.lambda.resets())),
            (m, p) => Response::error(404, "NotFound", &format!("no route for {m} {p}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_invoke_bodies() {
        let r = parse_invoke(
            br#"{"payload": {"a": 1}, "traceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793"}"#,
        )
        .unwrap();
        assert_eq!(r.payload, br#"{"a":1}"#);
        assert_eq!(
            r.trace_header.as_deref(),
            Some("Root=1-5759e988-bd862e3fe1be46a994272793")
        );
        let r = parse_invoke(br#"{"payloadText": "raw", "clientContext": {"custom": {"k": "v"}}}"#)
            .unwrap();
        assert_eq!(r.payload, b"raw");
        assert_eq!(r.client_context.as_deref(), Some(r#"{"custom":{"k":"v"}}"#));
        assert_eq!(parse_invoke(b"").unwrap().payload, b"{}");
        assert!(parse_invoke(b"[1]").is_err());
    }
}
