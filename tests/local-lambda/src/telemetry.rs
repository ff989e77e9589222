//! The Telemetry API: subscription validation and delivery.
//!
//! Lambda buffers events per subscriber and POSTs them as a JSON array of
//! `{time, type, record}` when the buffer holds `maxItems` events or `maxBytes` bytes, or when
//! `timeoutMs` has passed since the first buffered event. A subscriber that subscribes during
//! init also receives the platform events emitted since `platform.initStart`. Nothing is
//! delivered while the sandbox is frozen: what was buffered goes out after the thaw (which is
//! why an invocation's `platform.report` often arrives during the next one).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::TelemetryKnobs;
use crate::model::TelemetryDelivery;
use crate::timeline::Timeline;

/// Schema versions the Subscribe API accepts.
pub const SCHEMA_VERSIONS: [&str; 3] = ["2022-07-01", "2022-12-13", "2025-01-29"];
/// Telemetry types a subscription may ask for.
pub const TYPES: [&str; 3] = ["platform", "function", "extension"];
/// The port of the Runtime API itself, which a destination may not use.
pub const RESERVED_PORT: u16 = 9001;

/// Buffering of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffering {
    pub max_items: u64,
    pub max_bytes: u64,
    pub timeout_ms: u64,
}

impl Default for Buffering {
    fn default() -> Self {
        Self {
            max_items: 10_000,
            max_bytes: 262_144,
            timeout_ms: 1_000,
        }
    }
}

/// A validated subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub schema_version: String,
    pub types: Vec<String>,
    pub buffering: Buffering,
    pub port: u16,
    pub host: String,
    pub path: String,
}

fn range(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    min: u64,
    max: u64,
    default: u64,
    errors: &mut Vec<String>,
) -> u64 {
    match obj.get(key) {
        None | Some(Value::Null) => default,
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => n,
            _ => {
                errors.push(format!(
                    "buffering.{key} should be an integer between {min} and {max}"
                ));
                default
            }
        },
    }
}

/// Validate a Subscribe API body as Lambda does; the error message lists every problem,
/// separated by `; `.
pub fn validate_subscription(
    body: &[u8],
    allowed_hosts: &[String],
) -> Result<Subscription, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("request body should be a JSON object")?;
    let mut errors = Vec::new();

    let schema_version = match obj.get("schemaVersion").and_then(Value::as_str) {
        Some(s) if SCHEMA_VERSIONS.contains(&s) => s.to_owned(),
        Some(s) => {
            errors.push(format!(
                "schemaVersion {s:?} is not supported (valid: {})",
                SCHEMA_VERSIONS.join(", ")
            ));
            String::new()
        }
        None => {
            errors.push("schemaVersion is required".to_owned());
            String::new()
        }
    };

    let mut types = Vec::new();
    match obj.get("types").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            for t in list {
                match t.as_str() {
                    Some(s) if TYPES.contains(&s) => {
                        if !types.iter().any(|x: &String| x == s) {
                            types.push(s.to_owned());
                        }
                    }
                    _ => errors.push(format!("types: {t} is not one of {}", TYPES.join(", "))),
                }
            }
        }
        _ => errors.push("types should not be empty".to_owned()),
    }

    let buffering = match obj.get("buffering") {
        None | Some(Value::Null) => Buffering::default(),
        Some(Value::Object(b)) => {
            let d = Buffering::default();
            Buffering {
                max_items: range(b, "maxItems", 1_000, 10_000, d.max_items, &mut errors),
                max_bytes: range(b, "maxBytes", 262_144, 1_048_576, d.max_bytes, &mut errors),
                timeout_ms: range(b, "timeoutMs", 25, 30_000, d.timeout_ms, &mut errors),
            }
        }
        Some(_) => {
            errors.push("buffering should be an object".to_owned());
            Buffering::default()
        }
    };

    let (mut port, mut host, mut path) = (0u16, String::new(), String::from("/"));
    match obj.get("destination").and_then(Value::as_object) {
        None => errors.push("destination is required".to_owned()),
        Some(d) => {
            match d.get("protocol").and_then(Value::as_str) {
                Some("HTTP") => {}
                Some("TCP") => errors.push(
                    "destination.protocol TCP is not supported by local-lambda (use HTTP)"
                        .to_owned(),
                ),
                other => errors.push(format!(
                    "destination.protocol should be HTTP or TCP, got {}",
                    other.unwrap_or("nothing")
                )),
            }
            match d.get("URI").and_then(Value::as_str) {
                None => errors.push("destination.URI is required".to_owned()),
                Some(uri) => match parse_http_uri(uri) {
                    Err(e) => errors.push(e),
                    Ok((h, p, pa)) => {
                        if p == RESERVED_PORT {
                            errors.push(format!(
                                "URI port {RESERVED_PORT} is reserved for the Lambda Runtime API"
                            ));
                        }
                        if !allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(&h)) {
                            errors.push(format!(
                                "URI host {h:?} is not allowed: the destination must be in the sandbox (http://sandbox.localdomain:PORT)"
                            ));
                        }
                        host = h;
                        port = p;
                        path = pa;
                    }
                },
            }
        }
    }

    if errors.is_empty() {
        Ok(Subscription {
            schema_version,
            types,
            buffering,
            port,
            host,
            path,
        })
    } else {
        Err(errors.join("; "))
    }
}

/// `http://host:port/path` → (host, port, path). The port is required.
fn parse_http_uri(uri: &str) -> Result<(String, u16, String), String> {
    let rest = uri
        .strip_prefix("http://")
        .ok_or_else(|| format!("URI {uri:?} should start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| "URI port is not provided".to_owned())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("URI port {port:?} is not a valid port"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("URI {uri:?} is not valid"));
    }
    Ok((host.to_owned(), port, path))
}

enum Cmd {
    Event(Value),
    Flush,
    /// Deliver what is buffered, then answer.
    FlushAck(oneshot::Sender<()>),
}

struct Subscriber {
    extension: String,
    types: Vec<String>,
    tx: mpsc::UnboundedSender<Cmd>,
}

#[derive(Default)]
struct Inner {
    /// Events of the current environment since `platform.initStart`.
    history: Vec<Value>,
    /// Every event emitted, for tests.
    all: Vec<Value>,
    subscribers: Vec<Subscriber>,
}

/// Freeze gate: no delivery starts while frozen, and a freeze waits for deliveries in flight
/// (Lambda freezes the sandbox when there are no pending events).
#[derive(Debug, Clone, Copy, Default)]
struct Gate {
    frozen: bool,
    in_flight: usize,
}

/// Fan-out of telemetry events to subscribers.
pub struct TelemetryHub {
    inner: Mutex<Inner>,
    knobs: TelemetryKnobs,
    frozen: watch::Sender<Gate>,
    deliveries: Arc<Mutex<Vec<TelemetryDelivery>>>,
    timeline: Arc<Timeline>,
}

impl std::fmt::Debug for TelemetryHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryHub").finish_non_exhaustive()
    }
}

fn category(ty: &str) -> &str {
    if ty.starts_with("platform.") {
        "platform"
    } else {
        ty
    }
}

fn matches(types: &[String], ev: &Value) -> bool {
    let ty = ev.get("type").and_then(Value::as_str).unwrap_or("");
    types.iter().any(|t| t == category(ty))
}

impl TelemetryHub {
    pub fn new(knobs: TelemetryKnobs, timeline: Arc<Timeline>) -> Self {
        let (frozen, _) = watch::channel(Gate::default());
        Self {
            inner: Mutex::new(Inner::default()),
            knobs,
            frozen,
            deliveries: Arc::new(Mutex::new(Vec::new())),
            timeline,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Emit one event `{time, type, record}` to every matching subscriber.
    pub fn emit(&self, ty: &str, record: Value) {
        let ev = json!({
            "time": crate::time::rfc3339_ms(crate::time::now_epoch_ms()),
            "type": ty,
            "record": record,
        });
        let mut inner = self.lock();
        if ty.starts_with("platform.") {
            inner.history.push(ev.clone());
            inner.all.push(ev.clone());
        }
        inner.subscribers.retain(|s| {
            if matches(&s.types, &ev) {
                s.tx.send(Cmd::Event(ev.clone())).is_ok()
            } else {
                !s.tx.is_closed()
            }
        });
    }

    /// Forget the previous environment's subscriptions and history (a new init).
    pub fn new_environment(&self) {
        let mut inner = self.lock();
        inner.history.clear();
        for s in inner.subscribers.drain(..) {
            let _ = s.tx.send(Cmd::Flush);
        }
    }

    /// Ask every subscriber's buffer to deliver now (shutdown).
    pub fn flush_all(&self) {
        for s in &self.lock().subscribers {
            let _ = s.tx.send(Cmd::Flush);
        }
    }

    /// Ask every subscriber's buffer to deliver now and wait (at most `limit`) until each has
    /// (Lambda Managed Instances flush the Telemetry API before SHUTDOWN).
    pub async fn flush_wait(&self, limit: Duration) {
        let acks: Vec<oneshot::Receiver<()>> = self
            .lock()
            .subscribers
            .iter()
            .filter_map(|s| {
                let (tx, rx) = oneshot::channel();
                s.tx.send(Cmd::FlushAck(tx)).is_ok().then_some(rx)
            })
            .collect();
        let _ = tokio::time::timeout(limit, async {
            for rx in acks {
                let _ = rx.await;
            }
        })
        .await;
    }

    /// Stop new deliveries and wait (at most `limit`) for those in flight to finish.
    pub async fn freeze(&self, limit: Duration) {
        self.frozen.send_modify(|g| g.frozen = true);
        let mut rx = self.frozen.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|g| g.in_flight == 0)).await;
    }

    /// Let deliveries go out again.
    pub fn thaw(&self) {
        self.frozen.send_modify(|g| g.frozen = false);
    }

    /// Every platform event emitted so far.
    pub fn emitted(&self) -> Vec<Value> {
        self.lock().all.clone()
    }

    /// Every delivery attempt so far.
    pub fn deliveries(&self) -> Vec<TelemetryDelivery> {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Start delivering to `extension` per `sub` (replacing an earlier subscription of it).
    pub fn subscribe(&self, extension: &str, sub: &Subscription) {
        let (tx, rx) = mpsc::unbounded_channel();
        let addr = SocketAddr::from(([127, 0, 0, 1], sub.port));
        let task = Delivery {
            extension: extension.to_owned(),
            addr,
            path: sub.path.clone(),
            buffering: sub.buffering,
            knobs: self.knobs.clone(),
            frozen: self.frozen.clone(),
            deliveries: Arc::clone(&self.deliveries),
            timeline: Arc::clone(&self.timeline),
        };
        tokio::spawn(task.run(rx));
        let mut inner = self.lock();
        inner.subscribers.retain(|s| s.extension != extension);
        for ev in inner.history.iter().filter(|ev| matches(&sub.types, ev)) {
            let _ = tx.send(Cmd::Event(ev.clone()));
        }
        inner.subscribers.push(Subscriber {
            extension: extension.to_owned(),
            types: sub.types.clone(),
            tx,
        });
    }
}

struct Delivery {
    extension: String,
    addr: SocketAddr,
    path: String,
    buffering: Buffering,
    knobs: TelemetryKnobs,
    frozen: watch::Sender<Gate>,
    deliveries: Arc<Mutex<Vec<TelemetryDelivery>>>,
    timeline: Arc<Timeline>,
}

impl Delivery {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let mut batch: Vec<Value> = Vec::new();
        let mut bytes = 0u64;
        let mut first_at: Option<Instant> = None;
        let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
        loop {
            let flush_at = first_at.map(|t| t + Duration::from_millis(self.buffering.timeout_ms));
            let due = async {
                match flush_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let flush = tokio::select! {
                cmd = rx.recv() => match cmd {
                    None => {
                        if !batch.is_empty() {
                            self.deliver(std::mem::take(&mut batch)).await;
                        }
                        return;
                    }
                    Some(Cmd::Flush) => true,
                    Some(Cmd::FlushAck(tx)) => {
                        acks.push(tx);
                        true
                    }
                    Some(Cmd::Event(ev)) => {
                        bytes += ev.to_string().len() as u64;
                        batch.push(ev);
                        first_at.get_or_insert_with(Instant::now);
                        batch.len() as u64 >= self.buffering.max_items || bytes >= self.buffering.max_bytes
                    }
                },
                () = due => true,
            };
            if flush && !batch.is_empty() {
                // Take whatever else is already queued, up to the limits.
                while (batch.len() as u64) < self.buffering.max_items {
                    match rx.try_recv() {
                        Ok(Cmd::Event(ev)) => batch.push(ev),
                        Ok(Cmd::Flush) => {}
                        Ok(Cmd::FlushAck(tx)) => acks.push(tx),
                        Err(_) => break,
                    }
                }
                self.deliver(std::mem::take(&mut batch)).await;
                bytes = 0;
                first_at = None;
            }
            for tx in acks.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    fn note(&self, attempt: u32, ok: bool, status: Option<u16>, events: &[Value]) {
        let types: Vec<Value> = events
            .iter()
            .filter_map(|e| e.get("type").cloned())
            .collect();
        self.timeline.record(
            "telemetry.delivery",
            json!({"extension": self.extension, "attempt": attempt, "ok": ok, "status": status,
                   "count": events.len(), "types": types}),
        );
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(TelemetryDelivery {
                extension: self.extension.clone(),
                at_ms: self.timeline.now_ms(),
                attempt,
                ok,
                status,
                events: events.to_vec(),
            });
    }

    /// Wait until the sandbox is thawed and count this attempt as in flight.
    async fn begin(&self) {
        let mut rx = self.frozen.subscribe();
        loop {
            let began = self.frozen.send_if_modified(|g| {
                if g.frozen {
                    false
                } else {
                    g.in_flight += 1;
                    true
                }
            });
            if began {
                return;
            }
            let _ = rx.wait_for(|g| !g.frozen).await;
        }
    }

    async fn deliver(&mut self, events: Vec<Value>) {
        if self.knobs.never_deliver {
            self.note(0, false, None, &events);
            return;
        }
        if !self.knobs.delay.is_zero() {
            tokio::time::sleep(self.knobs.delay).await;
        }
        let body = Value::Array(events.clone()).to_string().into_bytes();
        // When the batch leaves for the subscriber: benchmarks measure from here to the
        // extension's next `event/next` (what the extension adds once it knows).
        let types: Vec<Value> = events
            .iter()
            .filter_map(|e| e.get("type").cloned())
            .collect();
        self.timeline.record(
            "telemetry.send",
            json!({"extension": self.extension, "types": types}),
        );
        let copies = if self.knobs.deliver_twice { 2 } else { 1 };
        for _ in 0..copies {
            let attempts = self.knobs.max_attempts.max(1);
            for attempt in 1..=attempts {
                self.begin().await;
                let res = crate::http::request(
                    self.addr,
                    "POST",
                    &self.path,
                    &[("Content-Type", "application/json")],
                    &body,
                    self.knobs.attempt_timeout,
                )
                .await;
                self.frozen
                    .send_modify(|g| g.in_flight = g.in_flight.saturating_sub(1));
                match res {
                    Ok(r) if (200..300).contains(&r.status) => {
                        self.note(attempt, true, Some(r.status), &events);
                        break;
                    }
                    Ok(r) => self.note(attempt, false, Some(r.status), &events),
                    Err(e) => {
                        tracing::debug!(error = %e, extension = %self.extension, "telemetry delivery failed");
                        self.note(attempt, false, None, &events);
                    }
                }
                if attempt < attempts {
                    tokio::time::sleep(self.knobs.retry_backoff).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        crate::config::TelemetryKnobs::default().allowed_hosts
    }

    #[test]
    fn accepts_a_valid_subscription_with_defaults() {
        let s = validate_subscription(
            br#"{"schemaVersion":"2022-12-13","types":["platform","function"],
                "destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:4243/t"}}"#,
            &hosts(),
        )
        .unwrap();
        assert_eq!(s.port, 4243);
        assert_eq!(s.path, "/t");
        assert_eq!(s.types, vec!["platform", "function"]);
        assert_eq!(s.buffering, Buffering::default());
    }

    #[test]
    fn rejects_what_lambda_rejects() {
        let bad = |body: &str| validate_subscription(body.as_bytes(), &hosts()).unwrap_err();
        let e = bad(
            r#"{"schemaVersion":"2021-01-01","types":[],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain"}}"#,
        );
        assert!(e.contains("schemaVersion"), "{e}");
        assert!(e.contains("types should not be empty"), "{e}");
        assert!(e.contains("URI port is not provided"), "{e}");
        let e = bad(
            r#"{"schemaVersion":"2022-12-13","types":["platform"],"destination":{"protocol":"HTTP","URI":"http://sandbox.localdomain:9001"}}"#,
        );
        assert!(e.contains("9001"), "{e}");
        let e = bad(
            r#"{"schemaVersion":"2022-12-13","types":["platform"],"destination":{"protocol":"HTTP","URI":"http://example.com:8080"}}"#,
        );
        assert!(e.contains("not allowed"), "{e}");
        let e = bad(
            r#"{"schemaVersion":"2022-12-13","types":["logs"],"buffering":{"maxItems":10,"maxBytes":1,"timeoutMs":5},"destination":{"protocol":"UDP","URI":"http://sandbox:8080"}}"#,
        );
        for part in ["types", "maxItems", "maxBytes", "timeoutMs", "protocol"] {
            assert!(e.contains(part), "{part} missing in {e}");
        }
    }

    #[test]
    fn categories() {
        assert_eq!(category("platform.start"), "platform");
        assert_eq!(category("function"), "function");
        assert!(matches(
            &["extension".into()],
            &json!({"type": "extension"})
        ));
        assert!(!matches(
            &["function".into()],
            &json!({"type": "platform.report"})
        ));
    }
}
