//! The sandbox's one HTTP server (`AWS_LAMBDA_RUNTIME_API`): the Runtime API
//! (`/2018-06-01/runtime`), the Extensions API (`/2020-01-01/extension`) and the Telemetry
//! API (`/2022-07-01/telemetry`), with the status codes and error bodies Lambda uses.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::http::{Handler, Request, Response};
use crate::lifecycle::emit_runtime_done;
use crate::model::InvokeStatus;
use crate::state::{Ext, Mailbox, Outcome, Phase, Shared};

const RUNTIME: &str = "/2018-06-01/runtime";
const EXTENSION: &str = "/2020-01-01/extension";
const TELEMETRY: &str = "/2022-07-01/telemetry";

/// Lambda's limit for a synchronous response.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// The API server's handler.
#[derive(Debug)]
pub struct Api {
    pub shared: Arc<Shared>,
}

impl Handler for Api {
    async fn handle(&self, req: Request) -> Response {
        let path = req.path.trim_end_matches('/').to_owned();
        let m = req.method.as_str();
        if let Some(rest) = path.strip_prefix(RUNTIME) {
            match (m, rest) {
                ("GET", "/invocation/next") => {
                    if self.shared.managed.is_some() {
                        return crate::managed::runtime_next(&self.shared, &req).await;
                    }
                    return self.runtime_next().await;
                }
                ("POST", "/init/error") => return self.runtime_init_error(&req),
                ("POST", r) if r.starts_with("/invocation/") => {
                    let parts: Vec<&str> = r.split('/').collect();
                    // ["", "invocation", id, "response"|"error"]
                    if let [_, _, id, action] = parts.as_slice() {
                        match *action {
                            "response" => return self.runtime_response(id, &req),
                            "error" => return self.runtime_error(id, &req),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        } else if let Some(rest) = path.strip_prefix(EXTENSION) {
            match (m, rest) {
                ("POST", "/register") => return self.register(&req),
                ("GET", "/event/next") => return self.event_next(&req).await,
                ("POST", "/init/error") => return self.extension_error(&req, true),
                ("POST", "/exit/error") => return self.extension_error(&req, false),
                _ => {}
            }
        } else if path == TELEMETRY && m == "PUT" {
            return self.telemetry_subscribe(&req);
        }
        Response::error(404, "NotFound", &format!("no route for {m} {}", req.path))
    }
}

/// The answer to `invocation/next`: the event and its `Lambda-Runtime-*` headers.
pub(crate) fn event_response(ev: crate::state::RuntimeEvent) -> Response {
    let mut resp = Response::new(200)
        .header("Content-Type", "application/json")
        .header("Lambda-Runtime-Aws-Request-Id", &ev.request_id)
        .header("Lambda-Runtime-Deadline-Ms", &ev.deadline_ms.to_string())
        .header("Lambda-Runtime-Invoked-Function-Arn", &ev.function_arn)
        .header("Lambda-Runtime-Trace-Id", &ev.trace_header);
    if let Some(cc) = &ev.client_context {
        resp = resp.header("Lambda-Runtime-Client-Context", cc);
    }
    if let Some(ci) = &ev.cognito_identity {
        resp = resp.header("Lambda-Runtime-Cognito-Identity", ci);
    }
    if let Some(id) = &ev.invocation_id {
        resp = resp.header("Lambda-Runtime-Invocation-Id", id);
    }
    resp.body(ev.payload)
}

fn accepted() -> Response {
    Response::json(202, &json!({"status": "OK"}))
}

fn no_env() -> Response {
    Response::error(
        500,
        "ServiceException",
        "the execution environment is not running",
    )
}

impl Api {
    fn rec(&self, kind: &str, fields: Value) {
        self.shared.timeline.record(kind, fields);
    }

    // ---------------------------------------------------------------- Runtime API

    async fn runtime_next(&self) -> Response {
        let (mailbox, first, generation) = {
            let mut st = self.shared.lock();
            let Some(env) = st.env.as_mut() else {
                return no_env();
            };
            env.runtime_ready = true;
            env.runtime_next_count += 1;
            let first = env.runtime_next_count == 1 && env.phase == Phase::Init;
            (env.runtime_mailbox.clone(), first, env.generation)
        };
        self.rec("runtime.next", json!({"generation": generation}));
        if first {
            self.shared.hub.emit(
                "platform.initRuntimeDone",
                json!({"initializationType": "on-demand", "phase": "init", "status": "success"}),
            );
        }
        self.shared.bump();
        let ev = mailbox.recv().await;
        self.rec(
            "runtime.event_delivered",
            json!({"requestId": ev.request_id}),
        );
        event_response(ev)
    }

    /// Record the runtime's answer for `id` and emit `platform.runtimeDone`.
    fn finish(&self, id: &str, req: &Request, outcome: Outcome) -> Result<(), Response> {
        if self.shared.managed.is_some() {
            return crate::managed::finish(&self.shared, id, req, outcome);
        }
        let now = Instant::now();
        {
            let mut st = self.shared.lock();
            let Some(env) = st.env.as_mut() else {
                return Err(no_env());
            };
            let Some(cur) = env.current.as_mut() else {
                return Err(Response::error(
                    400,
                    "InvalidRequestID",
                    "Invalid request ID",
                ));
            };
            if cur.request_id != id || cur.outcome.is_some() {
                return Err(Response::error(
                    400,
                    "InvalidRequestID",
                    "Invalid request ID",
                ));
            }
            let (status, error_type, produced) = match &outcome {
                Outcome::Response { body } => (InvokeStatus::Success, None, Some(body.len())),
                Outcome::Error {
                    error_type,
                    body,
                    status,
                } => (*status, Some(error_type.clone()), Some(body.len())),
            };
            cur.first_byte_at = Some(req.body_first_byte_at.max(cur.started));
            cur.outcome = Some(outcome);
            cur.runtime_done_at = Some(now);
            emit_runtime_done(
                &self.shared,
                cur,
                status,
                error_type.as_deref(),
                produced,
                req.body_done_at.max(cur.started),
                now,
            );
        }
        self.shared.bump();
        Ok(())
    }

    fn runtime_response(&self, id: &str, req: &Request) -> Response {
        let streaming = req
            .header("lambda-runtime-function-response-mode")
            .is_some_and(|v| v.eq_ignore_ascii_case("streaming"));
        self.rec(
            "runtime.response",
            json!({"requestId": id, "bytes": req.body.len(), "chunked": req.chunked, "streaming": streaming}),
        );
        // A streamed response that failed midway says so in its trailers.
        if let Some(error_type) = req.trailer("lambda-runtime-function-error-type") {
            let body = req
                .trailer("lambda-runtime-function-error-body")
                .unwrap_or("")
                .to_owned();
            let outcome = Outcome::Error {
                error_type: error_type.to_owned(),
                body,
                status: InvokeStatus::Error,
            };
            return match self.finish(id, req, outcome) {
                Ok(()) => accepted(),
                Err(r) => r,
            };
        }
        if req.body.len() > MAX_RESPONSE_BYTES && !streaming {
            let msg = format!(
                "Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
                req.body.len()
            );
            let outcome = Outcome::Error {
                error_type: "Function.ResponseSizeTooLarge".to_owned(),
                body: json!({"errorMessage": msg, "errorType": "Function.ResponseSizeTooLarge"})
                    .to_string(),
                status: InvokeStatus::Error,
            };
            return match self.finish(id, req, outcome) {
                Ok(()) => Response::error(413, "RequestEntityTooLarge", &msg),
                Err(r) => r,
            };
        }
        match self.finish(
            id,
            req,
            Outcome::Response {
                body: req.body.clone(),
            },
        ) {
            Ok(()) => accepted(),
            Err(r) => r,
        }
    }

    fn runtime_error(&self, id: &str, req: &Request) -> Response {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let from_body = serde_json::from_str::<Value>(&body).ok().and_then(|v| {
            v.get("errorType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let error_type = req
            .header("lambda-runtime-function-error-type")
            .map(str::to_owned)
            .or(from_body)
            .unwrap_or_else(|| "Unhandled".to_owned());
        self.rec(
            "runtime.error",
            json!({"requestId": id, "errorType": error_type}),
        );
        match self.finish(
            id,
            req,
            Outcome::Error {
                error_type,
                body,
                status: InvokeStatus::Error,
            },
        ) {
            Ok(()) => accepted(),
            Err(r) => r,
        }
    }

    fn runtime_init_error(&self, req: &Request) -> Response {
        let error_type = req
            .header("lambda-runtime-function-error-type")
            .unwrap_or("Runtime.Unknown")
            .to_owned();
        let body = String::from_utf8_lossy(&req.body).into_owned();
        self.rec("runtime.init_error", json!({"errorType": error_type}));
        {
            let mut st = self.shared.lock();
            let Some(env) = st.env.as_mut() else {
                return no_env();
            };
            if env.phase != Phase::Init {
                return Response::error(
                    403,
                    "InvalidStateTransition",
                    "State transition from Ready to InitError failed for runtime. Error: init is over",
                );
            }
            env.init_error = Some((error_type, body));
        }
        self.shared.bump();
        accepted()
    }

    // ---------------------------------------------------------------- Extensions API

    fn register(&self, req: &Request) -> Response {
        let name = req.header("lambda-extension-name").unwrap_or("").to_owned();
        if name.is_empty() {
            return Response::error(
                403,
                "Extension.InvalidExtensionName",
                "Empty extension name",
            );
        }
        let events: Vec<String> = match serde_json::from_slice::<Value>(&req.body) {
            Ok(v) => {
                if v.get("configurationKeys")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty())
                {
                    return Response::error(
                        403,
                        "InvalidRequestFormat",
                        "configurationKeys are deprecated; use environment variables instead",
                    );
                }
                match v.get("events") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|e| {
                            e.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| e.to_string())
                        })
                        .collect(),
                    Some(_) => {
                        return Response::error(
                            403,
                            "InvalidRequestFormat",
                            "events should be an array of strings",
                        );
                    }
                }
            }
            Err(e) => return Response::error(403, "InvalidRequestFormat", &e.to_string()),
        };
        let wants_account_id = req
            .header("lambda-extension-accept-feature")
            .is_some_and(|f| f.split(',').any(|x| x.trim() == "accountId"));
        let id = uuid::Uuid::new_v4().to_string();
        let result = {
            let mut st = self.shared.lock();
            let Some(env) = st.env.as_mut() else {
                return no_env();
            };
            let closed = env.registration_closed;
            let mut ext_events = events.clone();
            ext_events.dedup();
            let managed = self.shared.managed.is_some();
            match env.extensions.iter_mut().find(|e| e.name == name) {
                Some(ext) if ext.external && !ext.registered() => {
                    if managed {
                        // Lambda Managed Instances send SHUTDOWN only; the refusal fails the init.
                        if let Some(e) = events.iter().find(|e| *e != "SHUTDOWN") {
                            let message = format!("{e}: ErrorInvalidEventType");
                            env.refused_registration =
                                Some((name.clone(), message.clone(), Instant::now()));
                            drop(st);
                            crate::managed::wake_after_refusal(&self.shared);
                            self.rec(
                                "extension.register_refused",
                                json!({"name": name, "events": events,
                                       "errorType": crate::managed::INVALID_EVENT_TYPE,
                                       "errorMessage": message}),
                            );
                            self.shared.bump();
                            return Response::error(
                                403,
                                crate::managed::INVALID_EVENT_TYPE,
                                &message,
                            );
                        }
                    }
                    for e in &events {
                        if e != "INVOKE" && e != "SHUTDOWN" {
                            return Response::error(
                                403,
                                "Extension.InvalidEventType",
                                &format!("{e}: invalid event type"),
                            );
                        }
                    }
                    ext.id = Some(id.clone());
                    ext.events = ext_events;
                    ext.account_id_feature = wants_account_id;
                    Ok(true)
                }
                Some(ext) if ext.external => Err(Response::error(
                    403,
                    "Extension.InvalidExtensionState",
                    &format!(
                        "State transition from Registered to Registered failed for extension {name}. Error: already registered"
                    ),
                )),
                Some(_) => Err(Response::error(
                    403,
                    "Extension.InvalidExtensionState",
                    "Extension with this name already registered",
                )),
                None if closed => Err(Response::error(
                    403,
                    "Extension.RegistrationClosed",
                    "Extension registration closed already",
                )),
                None if managed && !events.is_empty() => Err(Response::error(
                    403,
                    crate::managed::INVALID_EVENT_TYPE,
                    "No events allowed for internal extensions",
                )),
                None => {
                    // Not an executable of the layer: an internal extension (in the runtime process).
                    if let Some(e) = events.iter().find(|e| *e != "INVOKE") {
                        return Response::error(
                            403,
                            "Extension.InvalidEventType",
                            &format!("{e}: internal extensions can only register for INVOKE"),
                        );
                    }
                    env.extensions.push(Ext {
                        name: name.clone(),
                        external: false,
                        proc: None,
                        id: Some(id.clone()),
                        events: ext_events,
                        account_id_feature: wants_account_id,
                        mailbox: Mailbox::new(),
                        ready: false,
                        next_count: 0,
                        last_next_at: None,
                        received_shutdown: false,
                        init_error: None,
                        exit_error: None,
                    });
                    Ok(false)
                }
            }
        };
        let external = match result {
            Ok(external) => external,
            Err(resp) => return resp,
        };
        self.rec(
            "extension.register",
            json!({"name": name, "events": events, "external": external, "id": id}),
        );
        if self.shared.managed.is_none() {
            // On Lambda Managed Instances the states of all extensions follow at the end of init.
            self.shared.hub.emit(
                "platform.extension",
                json!({"name": name, "state": "Ready", "events": events}),
            );
        }
        self.shared.bump();
        let cfg = &self.shared.cfg;
        let mut body = json!({
            "functionName": cfg.function_name,
            "functionVersion": cfg.function_version,
            "handler": cfg.handler,
        });
        if wants_account_id {
            body["accountId"] = json!(cfg.account_id);
        }
        Response::json(200, &body).header("Lambda-Extension-Identifier", &id)
    }

    /// Check `Lambda-Extension-Identifier` the way Lambda does; returns the id.
    fn identify(&self, req: &Request) -> Result<String, Response> {
        let Some(id) = req.header("lambda-extension-identifier") else {
            return Err(Response::error(
                403,
                "Extension.MissingExtensionIdentifier",
                "Missing Lambda-Extension-Identifier header",
            ));
        };
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(Response::error(
                403,
                "Extension.InvalidExtensionIdentifier",
                "Invalid Lambda-Extension-Identifier",
            ));
        }
        Ok(id.to_owned())
    }

    async fn event_next(&self, req: &Request) -> Response {
        let id = match self.identify(req) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let now = Instant::now();
        let (mailbox, name, fields) = {
            let mut st = self.shared.lock();
            let Some(env) = st.env.as_mut() else {
                return no_env();
            };
            let mut current = env.current.take();
            let Some(ext) = env.ext_by_id(&id) else {
                env.current = current;
                return Response::error(
                    403,
                    "Extension.UnknownExtensionIdentifier",
                    &format!("Unknown extension {id}"),
                );
            };
            ext.ready = true;
            ext.next_count += 1;
            ext.last_next_at = Some(now);
            let name = ext.name.clone();
            let mut fields = json!({"name": name, "count": ext.next_count});
            if let Some(cur) = current.as_mut()
                && let Some(slot) = cur
                    .ext_next
                    .iter_mut()
                    .find(|(n, at)| *n == name && at.is_none())
            {
                slot.1 = Some(now);
                fields["requestId"] = json!(cur.request_id);
                if let Some(done) = cur.runtime_done_at {
                    fields["afterRuntimeDoneMs"] =
                        json!(now.saturating_duration_since(done).as_secs_f64() * 1000.0);
                }
            }
            let mailbox = ext.mailbox.clone();
            env.current = current;
            (mailbox, name, fields)
        };
        self.shared
            .timeline
            .record_at(now, "extension.next", fields);
        self.shared.bump();
        let ev = mailbox.recv().await;
        self.rec(
            "extension.event_delivered",
            json!({"name": name, "eventType": ev.get("eventType")}),
        );
        Response::json(200, &ev).header(
            "Lambda-Extension-Event-Identifier",
            &uuid::Uuid::new_v4().to_string(),
        )
    }

    fn extension_error(&self, req: &Request, init: bool) -> Response {
        let id = match self.identify(req) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let Some(error_type) = req.header("lambda-extension-function-error-type") else {
            return Response::error(
                403,
                "Extension.MissingHeader",
                "Missing Lambda-Extension-Function-Error-Type header",
            );
        };
        let name = {
            let mut st = self.shared.lock();
            let Some(env) = st.env.as_mut() else {
                return no_env();
            };
            let phase = env.phase;
            let Some(ext) = env.ext_by_id(&id) else {
                return Response::error(
                    403,
                    "Extension.UnknownExtensionIdentifier",
                    &format!("Unknown extension {id}"),
                );
            };
            if init && phase != Phase::Init {
                return Response::error(
                    403,
                    "Extension.InvalidExtensionState",
                    &format!(
                        "State transition from Ready to InitError failed for extension {}. Error: init is over",
                        ext.name
                    ),
                );
            }
            if init {
                ext.init_error = Some(error_type.to_owned());
            } else {
                ext.exit_error = Some(error_type.to_owned());
            }
            ext.name.clone()
        };
        self.rec(
            if init {
                "extension.init_error"
            } else {
                "extension.exit_error"
            },
            json!({"name": name, "errorType": error_type}),
        );
        self.shared.bump();
        accepted()
    }

    // ---------------------------------------------------------------- Telemetry API

    fn telemetry_subscribe(&self, req: &Request) -> Response {
        let id = match self.identify(req) {
            Ok(id) => id,
            Err(r) => return r,
        };
        let name = {
            let mut st = self.shared.lock();
            let Some(env) = st.env.as_mut() else {
                return no_env();
            };
            match env.ext_by_id(&id) {
                Some(ext) => ext.name.clone(),
                None => {
                    return Response::error(
                        403,
                        "Extension.UnknownExtensionIdentifier",
                        &format!("Unknown extension {id}"),
                    );
                }
            }
        };
        if self.shared.managed.is_some()
            && let Err(msg) = crate::managed::check_schema_version(&req.body)
        {
            self.rec(
                "telemetry.subscribe_rejected",
                json!({"name": name, "error": msg}),
            );
            return crate::managed::validation_error(&msg);
        }
        let sub = match crate::telemetry::validate_subscription(
            &req.body,
            &self.shared.cfg.telemetry.allowed_hosts,
        ) {
            Ok(s) => s,
            Err(msg) => {
                self.rec(
                    "telemetry.subscribe_rejected",
                    json!({"name": name, "error": msg}),
                );
                return Response::error(400, "ValidationError", &msg);
            }
        };
        self.rec(
            "telemetry.subscribe",
            json!({"name": name, "types": sub.types, "port": sub.port, "schemaVersion": sub.schema_version,
                   "maxItems": sub.buffering.max_items, "maxBytes": sub.buffering.max_bytes,
                   "timeoutMs": sub.buffering.timeout_ms}),
        );
        self.shared.hub.subscribe(&name, &sub);
        self.shared.hub.emit(
            "platform.telemetrySubscription",
            json!({"name": name, "state": "Subscribed", "types": sub.types}),
        );
        Response::json(200, &json!("OK"))
    }
}
