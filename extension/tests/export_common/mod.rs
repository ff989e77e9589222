//! Shared by the exporter tests: documents and spans to send, a fake HTTP endpoint on
//! 127.0.0.1 that records what it receives, an independent SigV4 verifier, and log capture.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use otel_xray::xray::Document;
use ring::{digest, hmac};

/// Dummy credentials the tests sign with; the fakes verify with the same.
pub const ACCESS_KEY: &str = "AKIDOTELXRAYTEST";
pub const SECRET_KEY: &str = "otel/xray+test/secret/key/0123456789abcdef";
pub const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLE//session+token==";

/// A fixed-credentials provider for the exporter.
pub fn credentials() -> aws_credential_types::provider::SharedCredentialsProvider {
    otel_xray::export::credentials::fixed(ACCESS_KEY, SECRET_KEY, Some(SESSION_TOKEN))
}

/// Seconds since the epoch, now.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An X-Ray trace id from a number, with the current time as its first part.
pub fn trace_id(n: u64) -> String {
    format!(
        "1-{:08x}-{:024x}",
        now_secs() as u64,
        0xabc0_0000_0000_u64 + n
    )
}

/// A valid segment document (name, id, trace_id, start/end time), carrying `spans` spans.
pub fn document(trace: u64, id: u64, spans: usize) -> Document {
    let trace_id = trace_id(trace);
    let id = format!("{:016x}", 0x5e9_0000_0000_u64 + id);
    let start = now_secs() - 1.0;
    let json = serde_json::json!({
        "name": format!("svc-{trace}"),
        "id": id,
        "trace_id": trace_id,
        "start_time": start,
        "end_time": start + 0.25,
        "annotations": {"n": id.clone()},
        "metadata": {"default": {"quote": "a \"quoted\" \\ value"}},
    })
    .to_string();
    Document {
        trace_id,
        id,
        json,
        spans,
    }
}

/// `n` documents, two per trace.
pub fn documents(n: u64) -> Vec<Document> {
    (0..n)
        .map(|i| document(i / 2, i, 1 + (i % 3) as usize))
        .collect()
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A small realistic batch: per trace, a SERVER root and two CLIENT children, in two resources.
pub fn resource_spans(traces: u8) -> Vec<ResourceSpans> {
    let start = (now_secs() as u64 - 2) * 1_000_000_000;
    (0..2u8)
        .map(|r| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", &format!("service-{r}")),
                    kv("cloud.provider", "aws"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "export-test".into(),
                    ..Default::default()
                }),
                spans: (0..traces)
                    .flat_map(|t| {
                        let trace_id: Vec<u8> = (0..16).map(|i| i ^ t ^ (r << 4) ^ 0x5a).collect();
                        let root = vec![r, t, 1, 1, 1, 1, 1, 1];
                        let mk =
                            |id: Vec<u8>, parent: Vec<u8>, kind: span::SpanKind, name: &str| Span {
                                trace_id: trace_id.clone(),
                                span_id: id,
                                parent_span_id: parent,
                                name: name.into(),
                                kind: kind as i32,
                                start_time_unix_nano: start,
                                end_time_unix_nano: start + 50_000_000,
                                attributes: vec![kv("http.request.method", "GET")],
                                ..Default::default()
                            };
                        vec![
                            mk(root.clone(), Vec::new(), span::SpanKind::Server, "GET /"),
                            mk(
                                vec![r, t, 2, 2, 2, 2, 2, 2],
                                root.clone(),
                                span::SpanKind::Client,
                                "call a",
                            ),
                            mk(
                                vec![r, t, 3, 3, 3, 3, 3, 3],
                                root,
                                span::SpanKind::Client,
                                "call b",
                            ),
                        ]
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        })
        .collect()
}

/// What the fake endpoint received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The client's address: the same for requests on one kept-alive connection.
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    /// The body exactly as received (still compressed, if it was).
    pub body: Bytes,
}

/// How the fake endpoint answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Never answer.
    Hang,
    /// Answer with the inner reply after a delay.
    After(Duration, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::Respond {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

type Handler = dyn Fn(usize, &Recorded) -> Reply + Send + Sync;

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers with `handler`
/// (called with the request's index, from 0).
pub struct FakeServer {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeServer {
    pub async fn start<F>(handler: F) -> FakeServer
    where
        F: Fn(usize, &Recorded) -> Reply + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            // Bounded: no test opens anywhere near this many connections.
            for _ in 0..1000 {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let handler = Arc::clone(&handler);
                        let recorded = Arc::clone(&recorded);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let rec = Recorded {
                                peer,
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().unwrap_or("").to_owned(),
                                headers: parts.headers,
                                body,
                            };
                            let index = {
                                let mut all = recorded.lock().unwrap();
                                all.push(rec.clone());
                                all.len() - 1
                            };
                            let mut reply = handler(index, &rec);
                            while let Reply::After(delay, inner) = reply {
                                tokio::time::sleep(delay).await;
                                reply = *inner;
                            }
                            match reply {
                                Reply::Hang => {
                                    // Held until the test's runtime ends.
                                    tokio::time::sleep(Duration::from_secs(600)).await;
                                    Ok::<_, Infallible>(http::Response::new(
                                        Full::new(Bytes::new()),
                                    ))
                                }
                                Reply::After(..) => unreachable!("unwrapped above"),
                                Reply::Respond {
                                    status,
                                    headers,
                                    body,
                                } => {
                                    let mut resp = http::Response::builder().status(status);
                                    for (k, v) in headers {
                                        resp = resp.header(k, v);
                                    }
                                    Ok(resp.body(Full::new(Bytes::from(body))).unwrap())
                                }
                            }
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeServer {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A 127.0.0.1 TCP port with nothing listening.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`, checking its form.
pub fn parse_authorization(value: &str) -> Result<Authorization, String> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| format!("not AWS4-HMAC-SHA256: {value}"))?;
    let mut fields = BTreeMap::new();
    for part in rest.split(", ") {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("malformed part {part:?}"))?;
        fields.insert(k, v);
    }
    let credential = fields.get("Credential").ok_or("no Credential")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return Err(format!("bad credential scope {credential}"));
    }
    if scope[1].len() != 8 || !scope[1].bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad scope date {}", scope[1]));
    }
    let signed_headers: Vec<String> = fields
        .get("SignedHeaders")
        .ok_or("no SignedHeaders")?
        .split(';')
        .map(str::to_owned)
        .collect();
    let mut sorted = signed_headers.clone();
    sorted.sort();
    if sorted != signed_headers || signed_headers.iter().any(|h| h.to_lowercase() != *h) {
        return Err(format!(
            "SignedHeaders not sorted lowercase: {signed_headers:?}"
        ));
    }
    let signature = fields.get("Signature").ok_or("no Signature")?.to_string();
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad signature {signature}"));
    }
    Ok(Authorization {
        access_key: scope[0].into(),
        date: scope[1].into(),
        region: scope[2].into(),
        service: scope[3].into(),
        signed_headers,
        signature,
    })
}

/// Recomputes the SigV4 signature of `req` from scratch (not with aws-sigv4) and compares.
pub fn verify_sigv4(
    req: &Recorded,
    secret: &str,
    region: &str,
    service: &str,
) -> Result<Authorization, String> {
    let auth_value = req
        .headers
        .get("authorization")
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|e| e.to_string())?;
    let auth = parse_authorization(auth_value)?;
    if auth.region != region || auth.service != service {
        return Err(format!(
            "scope {}/{} != {region}/{service}",
            auth.region, auth.service
        ));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(format!("{required} not signed"));
        }
    }
    if req.headers.contains_key("x-amz-security-token")
        && !auth
            .signed_headers
            .iter()
            .any(|h| h == "x-amz-security-token")
    {
        return Err("x-amz-security-token sent but not signed".into());
    }
    let amz_date = req
        .headers
        .get("x-amz-date")
        .ok_or("no x-amz-date")?
        .to_str()
        .map_err(|e| e.to_string())?;
    if amz_date.len() != 16 || !amz_date.starts_with(&auth.date) || !amz_date.ends_with('Z') {
        return Err(format!(
            "x-amz-date {amz_date} does not match scope date {}",
            auth.date
        ));
    }

    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<String> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                v.to_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        if values.is_empty() {
            return Err(format!("signed header {name} missing from the request"));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let path = if req.path.is_empty() {
        "/"
    } else {
        req.path.as_str()
    };
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
    {
        return Err(format!(
            "path {path} needs encoding; not handled by this verifier"
        ));
    }
    let mut query: Vec<&str> = req.query.split('&').filter(|q| !q.is_empty()).collect();
    query.sort();
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        path,
        query.join("&"),
        canonical_headers,
        auth.signed_headers.join(";"),
        hex(digest::digest(&digest::SHA256, &req.body).as_ref()),
    );
    let scope = format!("{}/{}/{}/aws4_request", auth.date, region, service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    let k_signing = hmac_sha256(&k_service, b"aws4_request");
    let expected = hex(&hmac_sha256(&k_signing, string_to_sign.as_bytes()));
    if expected != auth.signature {
        return Err(format!(
            "signature mismatch: expected {expected}, got {}\ncanonical request:\n{canonical_request}",
            auth.signature
        ));
    }
    Ok(auth)
}

/// Captures `tracing` output of the current thread while the guard lives.
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Use with a current-thread runtime (`#[tokio::test]`), so everything logs on this thread.
    pub fn start() -> LogCapture {
        let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
        let writer = BufWriter(Arc::clone(&buf));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        LogCapture {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.buf.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Lines at WARN containing `needle`.
    pub fn warnings_with(&self, needle: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.contains("WARN") && l.contains(needle))
            .count()
    }
}
