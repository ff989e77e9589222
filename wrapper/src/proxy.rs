//! The Runtime API proxy handoff: whether to probe, the probe itself (one raw HTTP/1.1 request on
//! loopback, bounded in time), and the pure reading of its answer.
//!
//! The extension binds its proxy before it registers with Lambda, and Lambda starts the runtime
//! (and so this wrapper) only after every extension has registered: when the proxy is on, it is
//! listening by the time we probe. Nobody listening costs one refused connect (microseconds).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The proxy's default port (`OTEL_XRAY_PROXY_PORT`).
pub const DEFAULT_PROXY_PORT: u16 = 9009;
/// Path of the proxy's health check; it answers `{"name":"otel-xray","version":"…"}`.
pub const HEALTH_PATH: &str = "/otel-xray/health";
/// Budget for the connect. Loopback connects succeed or are refused at once; this only bounds
/// an odd network stack.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(5);
/// Budget for the whole answer once connected. The proxy answers from memory in well under a
/// millisecond; the slack is for a sandbox whose CPU is shared (a listener that accepted but
/// does not answer is abnormal, and it costs at most this, once, at cold start).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(50);
/// Largest answer read; the real one is about 50 bytes of body.
const MAX_ANSWER: usize = 4096;

/// What the wrapper does about the proxy, decided from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyChoice {
    /// `OTEL_XRAY_PROXY=false`: leave `AWS_LAMBDA_RUNTIME_API` alone, without probing.
    Off,
    /// Probe 127.0.0.1 on this port.
    Probe(u16),
}

/// Reads `OTEL_XRAY_PROXY` and `OTEL_XRAY_PROXY_PORT`; a malformed value is noted and replaced by
/// its default, as the extension does.
pub fn choice(get: &dyn Fn(&str) -> Option<String>, notes: &mut Vec<String>) -> ProxyChoice {
    if let Some(raw) = get("OTEL_XRAY_PROXY") {
        match crate::env::parse_bool(&raw) {
            Some(false) => return ProxyChoice::Off,
            Some(true) => {}
            None => notes.push(format!(
                "OTEL_XRAY_PROXY={raw:?} is not true or false; using true"
            )),
        }
    }
    ProxyChoice::Probe(crate::env::port(
        get,
        "OTEL_XRAY_PROXY_PORT",
        DEFAULT_PROXY_PORT,
        notes,
    ))
}

/// Why the proxy is not used.
#[derive(Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// Connecting, writing or reading failed (nobody listening, timeout, reset).
    Io(String),
    /// Something answered, but not as the otel-xray proxy.
    NotOurs(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::NotOurs(e) => write!(f, "not the otel-xray proxy: {e}"),
        }
    }
}

/// Asks 127.0.0.1:`port` for its health; Ok when it is the otel-xray proxy.
pub fn probe(port: u16) -> Result<(), ProbeError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let io = |what: &str, e: std::io::Error| ProbeError::Io(format!("{what} {addr}: {e}"));
    let mut stream =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| io("connect", e))?;
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

/// Pure: is this HTTP response the otel-xray proxy's health answer? A 200 whose body names
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
    use std::collections::HashMap;
    use std::net::TcpListener;

    fn choose(env: &[(&str, &str)]) -> (ProxyChoice, Vec<String>) {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let mut notes = Vec::new();
        (choice(&|k| map.get(k).cloned(), &mut notes), notes)
    }

    #[test]
    fn choice_reads_switch_and_port() {
        assert_eq!(choose(&[]), (ProxyChoice::Probe(9009), vec![]));
        assert_eq!(
            choose(&[("OTEL_XRAY_PROXY_PORT", "9100")]).0,
            ProxyChoice::Probe(9100)
        );
        assert_eq!(choose(&[("OTEL_XRAY_PROXY", "false")]).0, ProxyChoice::Off);
        assert_eq!(choose(&[("OTEL_XRAY_PROXY", " OFF ")]).0, ProxyChoice::Off);
        assert_eq!(
            choose(&[("OTEL_XRAY_PROXY", "TRUE")]),
            (ProxyChoice::Probe(9009), vec![])
        );
        let (c, notes) = choose(&[("OTEL_XRAY_PROXY", "maybe"), ("OTEL_XRAY_PROXY_PORT", "0")]);
        assert_eq!(c, ProxyChoice::Probe(9009));
        assert_eq!(notes.len(), 2, "{notes:?}");
    }

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
        assert!(matches!(probe(port), Err(ProbeError::Io(_))));
    }

    #[test]
    fn probe_gives_up_on_a_silent_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accepted by the kernel's backlog, never answered.
        assert!(matches!(probe(port), Err(ProbeError::Io(_))));
        drop(listener);
    }
}
