//! The control API of the `local-lambda` binary, for tests in other languages and `make demo`.
//!
//! All on 127.0.0.1, JSON in and out:
//! - `GET /health` → `{"status": "ok", "runtimeApi": "127.0.0.1:PORT", "pids": [..],
//!   "initializationType": "on-demand"|"lambda-managed-instances", "maxConcurrency": N|null,
//!   "inFlight": N, "idleWorkers": N}` (the last two: invocations running and runtime
//!   `invocation/next` calls waiting, on Lambda Managed Instances)
//! - `POST /invoke` with `{"payload": <any JSON>, "payloadText"?: "<raw event>",
//!   "traceHeader"?: "Root=...", "clientContext"?: <JSON or string>}` → the invocation result:
//!   `{"requestId", "status": "success"|"error"|"timeout"|"failure", "response": <JSON or null>,
//!   "responseText", "error": {"errorType", "errorMessage", "body"} | null, "traceHeader",
//!   "coldStart", "reset", "timings": {"initMs", "startedAtMs", "runtimeDoneAtMs",
//!   "completedAtMs", "runtimeMs", "durationMs", "postRuntimeMs", "responseLatencyMs",
//!   "responseDurationMs", "extensions": [{"name", "nextAtMs", "afterRuntimeDoneMs"}]}}`.
//!   On Lambda Managed Instances calls run concurrently; an invoke the environment refuses
//!   (no idle runtime worker) is answered `400`, header `Error-Type: Runtime.Unavailable`, body
//!   `{"status": "rejected", "httpStatus": 400, "errorType": "Runtime.Unavailable",
//!   "body": "{\"errorType\":\"Runtime.Unavailable\"}"}` (`body` is what the RIE answers)
//! - `POST /invoke-many` with `{"invokes": [<invoke body>, ...]}`, or `{"count": N, ...one
//!   invoke body}` for N copies → starts them all at once, waits for all, `200 {"results":
//!   [...]}` in request order, each an invocation result or a rejection as above (on-demand
//!   they run one after the other)
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
use crate::{Error, InvokeRequest, LocalLambda};

/// Control API handler. `exit` is notified after `/shutdown` has answered.
#[derive(Debug)]
pub struct Control {
    pub lambda: Arc<LocalLambda>,
    pub exit: Arc<Notify>,
}

fn bad_request(msg: &str) -> Response {
    Response::error(400, "InvalidRequest", msg)
}

/// Most invocations one `/invoke-many` starts.
pub const MAX_INVOKE_MANY: usize = 1000;

fn parse_body(body: &[u8]) -> Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(json!({}))
    } else {
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))
    }
}

/// Decode a `/invoke` body into a request.
pub fn parse_invoke(body: &[u8]) -> Result<InvokeRequest, String> {
    invoke_from_value(&parse_body(body)?)
}

/// Decode a `/invoke-many` body: `{"invokes": [...]}` or `{"count": N, ...}`.
pub fn parse_invoke_many(body: &[u8]) -> Result<Vec<InvokeRequest>, String> {
    let v = parse_body(body)?;
    let obj = v.as_object().ok_or("body should be a JSON object")?;
    let reqs = match (obj.get("invokes"), obj.get("count")) {
        (Some(Value::Array(list)), None) => list
            .iter()
            .map(invoke_from_value)
            .collect::<Result<Vec<_>, _>>()?,
        (None, Some(n)) => {
            let n = n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or("count should be a non-negative integer")?;
            let one = invoke_from_value(&v)?;
            vec![one; n]
        }
        _ => return Err("give either invokes (an array) or count".to_owned()),
    };
    if reqs.len() > MAX_INVOKE_MANY {
        return Err(format!("at most {MAX_INVOKE_MANY} invocations at once"));
    }
    Ok(reqs)
}

fn invoke_from_value(v: &Value) -> Result<InvokeRequest, String> {
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
            ("GET", "/health") => {
                let managed = self.lambda.managed_instances();
                let (in_flight, idle) = self.lambda.concurrency_now();
                Response::json(
                    200,
                    &json!({"status": "ok", "runtimeApi": self.lambda.runtime_api().to_string(),
                            "pids": self.lambda.pids(),
                            "initializationType": if managed.is_some() {
                                crate::managed::INITIALIZATION_TYPE
                            } else {
                                "on-demand"
                            },
                            "maxConcurrency": managed.map(|m| m.max_concurrency),
                            "inFlight": in_flight, "idleWorkers": idle}),
                )
            }
            ("POST", "/invoke") => match parse_invoke(&req.body) {
                Err(e) => bad_request(&e),
                Ok(r) => match self.lambda.invoke(r).await {
                    Ok(result) => Response::json(200, &result.to_json()),
                    Err(Error::Rejected(r)) => Response::json(r.http_status, &r.to_json())
                        .header("Error-Type", &r.error_type),
                    Err(e) => Response::error(409, "SandboxShutDown", &e.to_string()),
                },
            },
            ("POST", "/invoke-many") => match parse_invoke_many(&req.body) {
                Err(e) => bad_request(&e),
                Ok(reqs) => {
                    let results: Vec<Value> = self
                        .lambda
                        .invoke_many(reqs)
                        .await
                        .into_iter()
                        .map(|r| match r {
                            Ok(result) => result.to_json(),
                            Err(Error::Rejected(r)) => r.to_json(),
                            Err(e) => json!({"status": "refused", "errorType": "SandboxShutDown",
                                             "errorMessage": e.to_string()}),
                        })
                        .collect();
                    Response::json(200, &json!({"results": results}))
                }
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

    #[test]
    fn parses_invoke_many_bodies() {
        let r =
            parse_invoke_many(br#"{"invokes": [{"payload": 1}, {"payloadText": "x"}]}"#).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].payload, b"1");
        assert_eq!(r[1].payload, b"x");
        let r = parse_invoke_many(br#"{"count": 3, "payload": {"a": 1}, "traceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793"}"#)
            .unwrap();
        assert_eq!(r.len(), 3);
        assert!(
            r.iter()
                .all(|x| x.payload == br#"{"a":1}"# && x.trace_header.is_some())
        );
        assert!(parse_invoke_many(br#"{"count": -1}"#).is_err());
        assert!(parse_invoke_many(br#"{"count": 2000}"#).is_err());
        assert!(parse_invoke_many(br#"{"invokes": [1]}"#).is_err());
        assert!(parse_invoke_many(b"{}").is_err());
    }
}
