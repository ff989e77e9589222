//! The health probe: one raw HTTP/1.1 `GET /otel-xray/health` on loopback, bounded in time, and
//! the pure reading of its answer. Both of the extension's loopback listeners answer it, the
//! Runtime API proxy and the OTLP/HTTP receiver, with `200 {"name":"otel-xray","version":"…"}`;
//! `presence.rs` decides which to ask. Nobody listening costs one refused connect (microseconds).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Path of the health check; it answers `{"name":"otel-xray","version":"…"}`.
pub const HEALTH_PATH: &str = "/otel-xray/health";
/// Budget for the connect. Loopback connects succeed or are refused at once; this only bounds
/// an odd network stack.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(5);
/// Budget for the whole answer once connected. The extension answers from memory in well under
/// a millisecond; the slack is for a sandbox whose CPU is shared (a listener that accepted but
/// does not answer is abnormal, and it costs at most this, once, at cold start).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(50);
/// Largest answer read; the real one is about 50 bytes of body.
const MAX_ANSWER: usize = 4096;

/// Why a listener is not taken for otel-xray's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// The connection was refused: nobody listens on the port.
    Refused(String),
    /// Connecting otherwise failed, or writing or reading did (timeout, reset).
    Io(String),
    /// Something answered, but not as otel-xray.
    NotOurs(String),
}

impl ProbeError {
    /// Whether nobody listens on the port (as opposed to a listener that is not ours).
    pub fn is_refused(&self) -> bool {
        matches!(self, Self::Refused(_))
    }
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(e) | Self::Io(e) => write!(f, "{e}"),
            Self::NotOurs(e) => write!(f, "not otel-xray: {e}"),
        }
    }
}

/// Asks 127.0.0.1:`port` for its health; Ok when otel-xray answers. Returns within
/// [`CONNECT_TIMEOUT`] + [`ANSWER_TIMEOUT`].
pub fn probe(port: u16) -> Result<(), ProbeError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let io = |what: &str, e: std::io::Error| ProbeError::Io(format!("{what} {addr}: {e}"));
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| {
        let message = format!("connect {addr}: {e}");
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            ProbeError::Refused(message)
        } else {
            ProbeError::Io(message)
        }
    })?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let _ = stream.set_nodelay(true);
    stream
        .set_write_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| io("configure", e))?;
    let request = format!(
        "GET {HEALTH_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io("write to", e))?;
    let mut answer = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    // Bounded: every turn reads at least one byte or ends, and the answer is capped.
    while answer.len() < MAX_ANSWER {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProbeError::Io(format!(
                "no complete answer from {addr} within {} ms",
                ANSWER_TIMEOUT.as_millis()
            )));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| io("configure", e))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("read from", e)),
        }
        if complete(&answer) {
            break;
        }
    }
    check_answer(&answer).map_err(ProbeError::NotOurs)
}

/// Whether `answer` holds the whole response (headers and a `Content-Length` body).
fn complete(answer: &[u8]) -> bool {
    let Some(end) = find(answer, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .is_some_and(|len| answer.len() >= end + 4 + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Pure: is this HTTP response otel-xray's health answer? A 200 whose body names
/// `"name": "otel-xray"` (whitespace-insensitive).
pub fn check_answer(answer: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(answer);
    let status = text.lines().next().unwrap_or_default();
    let mut parts = status.split_whitespace();
    let (proto, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !proto.starts_with("HTTP/1.") || code != "200" {
        return Err(format!("status line {status:?}"));
    }
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.contains(r#""name":"otel-xray""#) {
        Ok(())
    } else {
        Err(format!(
            "body {:?}",
            body.chars().take(80).collect::<String>()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn answer_must_be_ours() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 37\r\n\r\n{\"name\":\"otel-xray\",\"version\":\"0.1.0\"}";
        assert_eq!(check_answer(ok), Ok(()));
        let spaced = b"HTTP/1.1 200 OK\r\n\r\n{ \"name\" : \"otel-xray\" }";
        assert_eq!(check_answer(spaced), Ok(()));
        assert!(check_answer(b"HTTP/1.1 404 Not Found\r\n\r\n{\"name\":\"otel-xray\"}").is_err());
        assert!(check_answer(b"HTTP/1.1 200 OK\r\n\r\n{\"name\":\"other\"}").is_err());
        assert!(check_answer(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(check_answer(b"").is_err());
    }

    #[test]
    fn complete_waits_for_the_body() {
        assert!(!complete(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab"));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabcd"
        ));
        assert!(!complete(b"HTTP/1.1 200 OK\r\n"));
    }

    /// A real socket that answers once with `reply`, after checking the request it received.
    fn serve_once(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "client closed before the end of its request");
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply).unwrap();
            String::from_utf8(req).unwrap()
        });
        (port, handle)
    }

    #[test]
    fn probe_accepts_the_proxy_over_a_socket() {
        let (port, h) = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 37\r\n\r\n{\"name\":\"otel-xray\",\"version\":\"0.1.0\"}",
        );
        assert_eq!(probe(port), Ok(()));
        let req = h.join().unwrap();
        assert!(
            req.starts_with("GET /otel-xray/health HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.contains(&format!("Host: 127.0.0.1:{port}\r\n")),
            "{req}"
        );
    }

    #[test]
    fn probe_rejects_another_server_and_nobody() {
        let (port, h) = serve_once(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        assert!(matches!(probe(port), Err(ProbeError::NotOurs(_))));
        h.join().unwrap();
        // A port nobody listens on: bind, learn it, close it.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = probe(port);
        assert!(
            matches!(refused, Err(ProbeError::Refused(_))),
            "{refused:?}"
        );
        assert!(refused.unwrap_err().is_refused());
    }

    #[test]
    fn probe_gives_up_on_a_silent_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepted by the kernel's backlog, never answered: a listener, but not ours.
        let silent = probe(port);
        assert!(matches!(silent, Err(ProbeError::Io(_))), "{silent:?}");
        assert!(!silent.unwrap_err().is_refused());
        drop(listener);
    }
}
