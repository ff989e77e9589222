//! A small HTTP/1.1 server and client with the two properties the benchmarks need:
//! every socket has `TCP_NODELAY`, and every response (or request, for the client) goes
//! out in one `write` of one buffer, so that delayed ACKs never add ~40 ms to a round trip.
//!
//! The server supports keep-alive, `Content-Length` and chunked request bodies (with
//! trailers, as the Runtime API's streaming responses use them), `Expect: 100-continue`,
//! and long-polling handlers that are cancelled when the client goes away.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (bodies above Lambda's 6 MB limit are read and then refused by the handler).
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Errors of the HTTP layer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP message: {0}")]
    Malformed(String),
    #[error("connection closed")]
    Closed,
    #[error("timed out")]
    Timeout,
}

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub query: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body, names lower-cased.
    pub trailers: Vec<(String, String)>,
    pub chunked: bool,
    /// When the request head was complete.
    pub head_at: Instant,
    /// When the first byte of the body arrived (equals `head_at` for an empty body).
    pub body_first_byte_at: Instant,
    /// When the body was complete.
    pub body_done_at: Instant,
    pub peer: SocketAddr,
}

impl Request {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// The first value of a trailer field (name case-insensitive).
    pub fn trailer(&self, name: &str) -> Option<&str> {
        find(&self.trailers, name)
    }
}

fn find<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    fields
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

/// One response, serialised into a single buffer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status)
            .header("Content-Type", "application/json")
            .body(value.to_string().into_bytes())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// Lambda's error shape: `{"errorMessage": ..., "errorType": ...}`.
    pub fn error(status: u16, error_type: &str, message: &str) -> Self {
        Self::json(
            status,
            &serde_json::json!({"errorMessage": message, "errorType": error_type}),
        )
    }

    fn serialize(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).as_bytes(),
        );
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(format!("Date: {}\r\n", crate::time::http_date_now()).as_bytes());
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        413 => "Request Entity Too Large",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// A request handler: an async function of the request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> impl Future<Output = Response> + Send;
}

/// Serve `handler` on `listener` until `stop` turns true (or its sender is dropped).
pub fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(accept_loop(listener, handler, stop))
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() { return; }
            }
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, peer)) => {
                        let handler = Arc::clone(&handler);
                        let stop = stop.clone();
                        tokio::spawn(async move {
                            if let Err(e) = serve_connection(stream, peer, handler, stop).await {
                                tracing::trace!(error = %e, %peer, "connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }
}

async fn serve_connection<H: Handler>(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), HttpError> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let req = tokio::select! {
            biased;
            _ = stop.changed() => return Ok(()),
            r = read_request(&mut stream, &mut buf, peer) => r?,
        };
        let keep_alive = wants_keep_alive(&req);
        // Run the handler while watching the socket: a client that goes away cancels a long poll.
        let handled = handler.handle(req);
        tokio::pin!(handled);
        let resp = loop {
            let mut probe = [0u8; 4096];
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                resp = &mut handled => break resp,
                n = stream.read(&mut probe) => {
                    match n {
                        Ok(0) | Err(_) => return Err(HttpError::Closed),
                        Ok(n) => buf.extend_from_slice(&probe[..n]), // pipelined bytes
                    }
                }
            }
        };
        stream.write_all(&resp.serialize(keep_alive)).await?;
        if !keep_alive {
            let _ = stream.shutdown().await;
            return Ok(());
        }
    }
}

fn wants_keep_alive(req: &Request) -> bool {
    !req.header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

/// Read bytes into `buf` until it holds at least `n` more bytes than `start`.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, want_len: usize) -> Result<(), HttpError> {
    while buf.len() < want_len {
        read_more(stream, buf).await?;
    }
    Ok(())
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), HttpError> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        return Err(HttpError::Closed);
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

fn parse_fields(raw: &[u8]) -> Result<Vec<(String, String)>, HttpError> {
    let text = std::str::from_utf8(raw).map_err(|e| HttpError::Malformed(e.to_string()))?;
    let mut out = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("bad field line {line:?}")))?;
        out.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    Ok(out)
}

async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
) -> Result<Request, HttpError> {
    // Head.
    let (head_len, method, path, query, headers) = loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut hdrs);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let method = parsed.method.unwrap_or("GET").to_owned();
                let target = parsed.path.unwrap_or("/");
                let (path, query) = match target.split_once('?') {
                    Some((p, q)) => (p.to_owned(), q.to_owned()),
                    None => (target.to_owned(), String::new()),
                };
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).trim().to_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (len, method, path, query, headers);
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(HttpError::Malformed("request head too large".into()));
                }
                read_more(stream, buf).await?;
            }
            Err(e) => return Err(HttpError::Malformed(e.to_string())),
        }
    };
    let head_at = Instant::now();
    buf.drain(..head_len);
    let get = |name: &str| find(&headers, name).map(str::to_owned);
    if get("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    let mut trailers = Vec::new();
    let mut first_byte_at = None;
    if chunked {
        loop {
            let line_end = loop {
                if let Some(p) = find_crlf(buf, 0) {
                    break p;
                }
                if buf.len() > MAX_HEAD {
                    return Err(HttpError::Malformed("chunk size line too long".into()));
                }
                read_more(stream, buf).await?;
            };
            first_byte_at.get_or_insert_with(Instant::now);
            let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size_hex = size_text.split(';').next().unwrap_or("").trim().to_owned();
            let size = usize::from_str_radix(&size_hex, 16)
                .map_err(|_| HttpError::Malformed(format!("bad chunk size {size_hex:?}")))?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // Trailer section up to an empty line.
                let end = loop {
                    if buf.starts_with(b"\r\n") {
                        break 0;
                    }
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 2;
                    }
                    if buf.len() > MAX_HEAD {
                        return Err(HttpError::Malformed("trailers too large".into()));
                    }
                    read_more(stream, buf).await?;
                };
                trailers = parse_fields(&buf[..end])?;
                buf.drain(..end + 2);
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(HttpError::Malformed("body too large".into()));
            }
            fill(stream, buf, size + 2).await?;
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
    } else {
        let len = match get("content-length") {
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| HttpError::Malformed(format!("bad content-length {v:?}")))?,
            None => 0,
        };
        if len > MAX_BODY {
            return Err(HttpError::Malformed("body too large".into()));
        }
        if len > 0 {
            if buf.is_empty() {
                read_more(stream, buf).await?;
            }
            first_byte_at = Some(Instant::now());
            fill(stream, buf, len).await?;
            body.extend_from_slice(&buf[..len]);
            buf.drain(..len);
        }
    }
    let body_done_at = Instant::now();
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
        trailers,
        chunked,
        head_at,
        body_first_byte_at: first_byte_at.unwrap_or(head_at),
        body_done_at,
        peer,
    })
}

/// A response read by the client.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ClientResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

/// One HTTP/1.1 request on a fresh connection, written in a single write, with a time limit.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<ClientResponse, HttpError> {
    tokio::time::timeout(timeout, request_inner(addr, method, path, headers, body))
        .await
        .map_err(|_| HttpError::Timeout)?
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<ClientResponse, HttpError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n").as_bytes());
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    let mut buf = Vec::with_capacity(1024);
    let (head_len, status, headers) = loop {
        let mut hdrs = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut hdrs);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = parsed.code.unwrap_or(0);
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).trim().to_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                if status == 100 {
                    buf.drain(..len);
                    continue;
                }
                break (len, status, headers);
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(HttpError::Malformed("response head too large".into()));
                }
                read_more(&mut stream, &mut buf).await?;
            }
            Err(e) => return Err(HttpError::Malformed(e.to_string())),
        }
    };
    buf.drain(..head_len);
    let chunked = find(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(p) = find_crlf(&buf, 0) {
                    break p;
                }
                read_more(&mut stream, &mut buf).await?;
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| HttpError::Malformed("bad chunk size".into()))?;
            buf.drain(..line_end + 2);
            if size == 0 {
                break;
            }
            fill(&mut stream, &mut buf, size + 2).await?;
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
        }
        body
    } else if let Some(len) = find(&headers, "content-length").and_then(|v| v.parse::<usize>().ok())
    {
        fill(&mut stream, &mut buf, len).await?;
        buf.truncate(len);
        buf
    } else {
        // Until the server closes.
        loop {
            match read_more(&mut stream, &mut buf).await {
                Ok(()) => {}
                Err(HttpError::Closed) => break,
                Err(e) => return Err(e),
            }
        }
        buf
    };
    Ok(ClientResponse {
        status,
        headers,
        body,
    })
}
