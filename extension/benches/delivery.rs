//! `make bench`'s load generator and upstream sinks (driven by tests/bench/lambda_bench.py).
//!
//! Not a criterion bench: a plain program (`harness = false`) that
//! - listens as the X-Ray daemon (`--daemon-sink ADDR`, UDP: every datagram's header is checked
//!   and its document decoded, spans = the segment plus every nested subsegment) or as an
//!   OTLP/HTTP backend (`--otlp-sink ADDR`, HTTP/1.1 keep-alive, gzip or not: the protobuf is
//!   walked and its spans counted), and
//! - sends pre-encoded OTLP/HTTP protobuf requests (`--payload FILE`: one or more requests, each
//!   prefixed by its length as 4 big-endian bytes, all with `--spans N` spans; request k of the
//!   run is number k modulo their count, so that consecutive requests carry distinct trace ids as
//!   real traffic does) to `--target ADDR` over `--connections` keep-alive connections, closed
//!   loop, for `--seconds` or until `--requests` requests in all, reading each response's
//!   `partial_success`.
//!
//! It prints `{"phase":"ready"}` once the sinks listen and starts the load on a line on stdin
//! (`http ADDR` names the receiver then). It prints one JSON line when the load ends (`{"phase":"load",...}`), then waits for a line on
//! stdin (the driver makes the extension flush what it still holds), waits until the sink has
//! been quiet for `--quiet-ms` (at most `--drain-ms`) and prints `{"phase":"drained",...}`.
//!
//! `--startup-runs N --extension PATH` instead measures start-up against a stand-in Extensions
//! API of its own (one write per response, TCP_NODELAY): it spawns the extension N times (pinned
//! to CPU 0 when `--pin-extension 0` is given), and records spawn → `/extension/register`
//! arriving, spawn → the OTLP/HTTP port accepting (a connecting spinner), and the VmHWM/VmRSS of
//! the registered, idle extension 200 ms later; then answers `event/next` with SHUTDOWN.
//!
//! Every loop is bounded in time. Errors go to stderr and the exit code.

// A command-line tool: its output is its stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Counters {
    spans: AtomicU64,
    documents: AtomicU64,
    requests: AtomicU64,
    bad: AtomicU64,
    /// Nanoseconds since the start of the run at the last delivery.
    last_ns: AtomicU64,
}

struct Args {
    target: SocketAddr,
    payloads: Vec<Vec<u8>>,
    spans: u64,
    connections: usize,
    seconds: f64,
    requests: u64,
    daemon_sink: Option<SocketAddr>,
    otlp_sink: Option<SocketAddr>,
    quiet_ms: u64,
    drain_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        target: SocketAddr::from(([127, 0, 0, 1], 4318)),
        payloads: Vec::new(),
        spans: 0,
        connections: 8,
        seconds: 10.0,
        requests: u64::MAX,
        daemon_sink: None,
        otlp_sink: None,
        quiet_ms: 500,
        drain_ms: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--bench" {
            continue; // added by `cargo bench`
        }
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{k}: {e}"));
        let addr = |v: &str| v.parse::<SocketAddr>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--target" => a.target = addr(&v)?,
            "--payload" => {
                let file = std::fs::read(&v).map_err(|e| format!("{v}: {e}"))?;
                a.payloads = split_payloads(&file).ok_or(format!("{v}: bad length prefixes"))?;
            }
            "--spans" => a.spans = num(&v)? as u64,
            "--connections" => a.connections = num(&v)? as usize,
            "--seconds" => a.seconds = num(&v)?,
            "--requests" => a.requests = num(&v)? as u64,
            "--daemon-sink" => a.daemon_sink = Some(addr(&v)?),
            "--otlp-sink" => a.otlp_sink = Some(addr(&v)?),
            "--quiet-ms" => a.quiet_ms = num(&v)? as u64,
            "--drain-ms" => a.drain_ms = num(&v)? as u64,
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    Ok(a)
}

fn main() {
    match run() {
        Ok(()) => {}
        Err(e) => {
            eprintln!("delivery: {e}");
            std::process::exit(1);
        }
    }
}

fn run() -> Result<(), String> {
    if std::env::args().any(|a| a == "--startup-runs") {
        return startup::run();
    }
    let args = parse_args()?;
    let start = Instant::now();
    let sink = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(addr) = args.daemon_sink {
        let sock = daemon_socket(addr)?;
        let (sink, stop) = (Arc::clone(&sink), Arc::clone(&stop));
        thread::spawn(move || daemon_sink(sock, &sink, &stop, start));
    }
    if let Some(addr) = args.otlp_sink {
        let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        let (sink, stop) = (Arc::clone(&sink), Arc::clone(&stop));
        thread::spawn(move || otlp_sink(listener, sink, stop, start));
    }
    // Ready: the driver starts the extension after this line.
    println!("{{\"phase\":\"ready\"}}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut line = String::new();
    let stdin = std::io::stdin();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;

    // The driver may name the receiver only now (`http ADDR`).
    let mut args = args;
    if let Some(addr) = line.trim().strip_prefix("http ") {
        args.target = addr.parse().map_err(|e| format!("target {addr}: {e}"))?;
    }

    // Load.
    let load = Arc::new(Counters::default());
    let budget = Arc::new(AtomicU64::new(args.requests));
    let requests_bytes: Arc<Vec<Vec<u8>>> = Arc::new(
        args.payloads
            .iter()
            .map(|p| http_request(args.target, p))
            .collect(),
    );
    if requests_bytes.is_empty() {
        return Err("--payload is needed".into());
    }
    let next = Arc::new(AtomicU64::new(0));
    let load_start = Instant::now();
    let until = load_start + Duration::from_secs_f64(args.seconds);
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (load, budget) = (Arc::clone(&load), Arc::clone(&budget));
        let (requests_bytes, next) = (Arc::clone(&requests_bytes), Arc::clone(&next));
        let (target, spans) = (args.target, args.spans);
        workers.push(thread::spawn(move || {
            client(target, &requests_bytes, &next, spans, until, &budget, &load)
        }));
    }
    let mut errors = Vec::new();
    for w in workers {
        match w.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("client thread panicked".into()),
        }
    }
    let load_secs = load_start.elapsed().as_secs_f64();
    let requests = load.requests.load(Ordering::Relaxed);
    let rejected = load.spans.load(Ordering::Relaxed);
    println!(
        "{{\"phase\":\"load\",\"requests\":{requests},\"sent_spans\":{},\"rejected_spans\":{rejected},\
         \"bad_responses\":{},\"load_seconds\":{load_secs:.4},\"delivered_so_far\":{},\"errors\":{}}}",
        requests * args.spans,
        load.bad.load(Ordering::Relaxed),
        sink.spans.load(Ordering::Relaxed),
        serde_json::Value::from(errors.join("; ")),
    );
    std::io::stdout().flush().map_err(|e| e.to_string())?;

    // Drain: the driver makes the extension flush, then says so.
    line.clear();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let drain_until = Instant::now() + Duration::from_millis(args.drain_ms);
    let expected = requests * args.spans - rejected;
    let mut last = (sink.spans.load(Ordering::Relaxed), Instant::now());
    while Instant::now() < drain_until {
        thread::sleep(Duration::from_millis(20));
        let n = sink.spans.load(Ordering::Relaxed);
        if n != last.0 {
            last = (n, Instant::now());
        } else if n >= expected || last.1.elapsed() >= Duration::from_millis(args.quiet_ms) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let last_s =
        sink.last_ns.load(Ordering::Relaxed) as f64 / 1e9 - (load_start - start).as_secs_f64();
    println!(
        "{{\"phase\":\"drained\",\"delivered_spans\":{},\"documents\":{},\"sink_requests\":{},\
         \"bad_documents\":{},\"last_delivery_seconds\":{last_s:.4}}}",
        sink.spans.load(Ordering::Relaxed),
        sink.documents.load(Ordering::Relaxed),
        sink.requests.load(Ordering::Relaxed),
        sink.bad.load(Ordering::Relaxed),
    );
    Ok(())
}

/// Length-prefixed (4 bytes, big-endian) requests.
fn split_payloads(mut file: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    while !file.is_empty() {
        let len = u32::from_be_bytes(file.get(..4)?.try_into().ok()?) as usize;
        out.push(file.get(4..4 + len)?.to_vec());
        file = &file[4 + len..];
    }
    Some(out)
}

fn http_request(target: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: {target}\r\ncontent-type: application/x-protobuf\r\n\
         content-length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// One keep-alive connection, closed loop. `load.spans` counts rejected spans.
fn client(
    target: SocketAddr,
    requests: &[Vec<u8>],
    next: &AtomicU64,
    spans: u64,
    until: Instant,
    budget: &AtomicU64,
    load: &Counters,
) -> Result<(), String> {
    let mut conn = connect(target)?;
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < until {
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_err()
        {
            break;
        }
        let k = next.fetch_add(1, Ordering::Relaxed) as usize % requests.len();
        conn.write_all(&requests[k])
            .map_err(|e| format!("send: {e}"))?;
        let (status, body) = read_response(&mut conn, &mut buf)?;
        load.requests.fetch_add(1, Ordering::Relaxed);
        if status != 200 {
            load.bad.fetch_add(1, Ordering::Relaxed);
            load.spans.fetch_add(spans, Ordering::Relaxed);
            continue;
        }
        load.spans
            .fetch_add(rejected_spans(&body).min(spans), Ordering::Relaxed);
    }
    Ok(())
}

fn connect(target: SocketAddr) -> Result<TcpStream, String> {
    let conn = TcpStream::connect_timeout(&target, Duration::from_secs(2))
        .map_err(|e| format!("connect {target}: {e}"))?;
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Reads one HTTP/1.1 response with a content-length body. Returns (status, body).
fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, Vec<u8>), String> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|e| e.to_string())?;
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or("bad status line")?;
            let len = header(head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or("response without content-length")?;
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).map_err(|e| format!("recv: {e}"))?;
                if n == 0 {
                    return Err("connection closed mid-body".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, buf[end + 4..end + 4 + len].to_vec()));
        }
        let n = conn.read(&mut chunk).map_err(|e| format!("recv: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

// ---- protobuf wire walking (no decoding into types: the sink must stay cheap) ----

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Calls `f(field, bytes)` for every length-delimited field; skips the others.
fn fields<'a>(b: &'a [u8], mut f: impl FnMut(u64, &'a [u8]) -> Option<()>) -> Option<()> {
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        match key & 7 {
            0 => {
                varint(b, &mut i)?;
            }
            1 => i += 8,
            5 => i += 4,
            2 => {
                let len = usize::try_from(varint(b, &mut i)?).ok()?;
                let v = b.get(i..i.checked_add(len)?)?;
                i += len;
                f(key >> 3, v)?;
            }
            _ => return None,
        }
    }
    (i == b.len()).then_some(())
}

/// Spans in an ExportTraceServiceRequest: resource_spans(1) → scope_spans(2) → spans(2).
fn count_otlp_spans(b: &[u8]) -> Option<u64> {
    let mut n = 0;
    fields(b, |f, rs| {
        if f == 1 {
            fields(rs, |f, ss| {
                if f == 2 {
                    fields(ss, |f, _| {
                        n += u64::from(f == 2);
                        Some(())
                    })?;
                }
                Some(())
            })?;
        }
        Some(())
    })?;
    Some(n)
}

/// `partial_success(1).rejected_spans(1)` of an ExportTraceServiceResponse.
fn rejected_spans(b: &[u8]) -> u64 {
    let mut i = 0;
    while i < b.len() {
        let Some(key) = varint(b, &mut i) else {
            return 0;
        };
        if key != (1 << 3 | 2) {
            return 0;
        }
        let Some(len) = varint(b, &mut i) else {
            return 0;
        };
        let end = i + len as usize;
        while i < end.min(b.len()) {
            let Some(k) = varint(b, &mut i) else { return 0 };
            let Some(v) = (match k & 7 {
                0 => varint(b, &mut i),
                2 => varint(b, &mut i).map(|l| {
                    i += l as usize;
                    0
                }),
                _ => None,
            }) else {
                return 0;
            };
            if k == 1 << 3 {
                return v;
            }
        }
    }
    0
}

// ---- the daemon sink ----

fn daemon_socket(addr: SocketAddr) -> Result<UdpSocket, String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| e.to_string())?;
    // A pressure flush sends thousands of datagrams at once: room for them (capped by
    // net.core.rmem_max; the drained figures show any loss).
    let _ = sock.set_recv_buffer_size(64 << 20);
    sock.bind(&addr.into())
        .map_err(|e| format!("bind {addr}: {e}"))?;
    let sock: UdpSocket = sock.into();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(|e| e.to_string())?;
    Ok(sock)
}

#[derive(serde::Deserialize)]
struct Doc {
    id: String,
    #[serde(default)]
    subsegments: Vec<Doc>,
}

fn nodes(d: &Doc) -> u64 {
    1 + d.subsegments.iter().map(nodes).sum::<u64>()
}

fn daemon_sink(sock: UdpSocket, sink: &Counters, stop: &AtomicBool, start: Instant) {
    const HEADER: &[u8] = b"{\"format\": \"json\", \"version\": 1}\n";
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let d = &buf[..n];
        let doc = d
            .strip_prefix(HEADER)
            .and_then(|doc| serde_json::from_slice::<Doc>(doc).ok())
            .filter(|doc| doc.id.len() == 16);
        match doc {
            Some(doc) => {
                sink.documents.fetch_add(1, Ordering::Relaxed);
                sink.spans.fetch_add(nodes(&doc), Ordering::Relaxed);
                sink.last_ns
                    .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            None => {
                sink.bad.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

// ---- the OTLP/HTTP sink ----

fn otlp_sink(listener: TcpListener, sink: Arc<Counters>, stop: Arc<AtomicBool>, start: Instant) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let (sink, stop) = (Arc::clone(&sink), Arc::clone(&stop));
                thread::spawn(move || {
                    if otlp_conn(conn, &sink, &stop, start).is_err() {
                        sink.bad.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn otlp_conn(
    mut conn: TcpStream,
    sink: &Counters,
    stop: &AtomicBool,
    start: Instant,
) -> Result<(), String> {
    let _ = conn.set_nonblocking(false);
    conn.set_nodelay(true).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        // One request: head, then a content-length body.
        let end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end;
            }
            match conn.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) if !stop.load(Ordering::Relaxed) => continue,
                Err(_) => return Ok(()),
            }
        };
        let head = std::str::from_utf8(&buf[..end]).map_err(|e| e.to_string())?;
        let len = header(head, "content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .ok_or("request without content-length")?;
        let gzip = header(head, "content-encoding") == Some("gzip");
        while buf.len() < end + 4 + len {
            match conn.read(&mut chunk) {
                Ok(0) => return Err("closed mid-body".into()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) if !stop.load(Ordering::Relaxed) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        let body = &buf[end + 4..end + 4 + len];
        let mut inflated = Vec::new();
        let proto = if gzip {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut inflated)
                .map_err(|e| e.to_string())?;
            &inflated[..]
        } else {
            body
        };
        let spans = count_otlp_spans(proto).ok_or("not an ExportTraceServiceRequest")?;
        sink.requests.fetch_add(1, Ordering::Relaxed);
        sink.documents.fetch_add(1, Ordering::Relaxed);
        sink.spans.fetch_add(spans, Ordering::Relaxed);
        sink.last_ns
            .store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        buf.drain(..end + 4 + len);
        conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )
        .map_err(|e| e.to_string())?;
    }
}

// ---- start-up against a stand-in Extensions API ----

mod startup {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, mpsc};
    use std::thread;
    use std::time::{Duration, Instant};

    use super::{find, header};

    struct Opts {
        runs: usize,
        extension: String,
        pin: Option<usize>,
    }

    fn opts() -> Result<Opts, String> {
        let mut o = Opts {
            runs: 10,
            extension: String::new(),
            pin: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(k) = it.next() {
            match k.as_str() {
                "--startup-runs" => {
                    o.runs = it
                        .next()
                        .and_then(|v| v.parse().ok())
                        .ok_or("--startup-runs N")?
                }
                "--extension" => o.extension = it.next().ok_or("--extension PATH")?,
                "--pin-extension" => o.pin = it.next().and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
        if o.extension.is_empty() {
            return Err("--extension PATH is needed".into());
        }
        Ok(o)
    }

    fn free_port() -> Result<u16, String> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        Ok(l.local_addr().map_err(|e| e.to_string())?.port())
    }

    pub fn run() -> Result<(), String> {
        let o = opts()?;
        let mut register = Vec::new();
        let mut accept = Vec::new();
        let mut hwm = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..o.runs {
            let r = once(&o)?;
            register.push(r.0);
            accept.push(r.1);
            hwm.push(r.2);
            rss.push(r.3);
        }
        println!(
            "{{\"phase\":\"startup\",\"register_ms\":{register:?},\"accept_ms\":{accept:?},\
             \"idle_hwm_kib\":{hwm:?},\"idle_rss_kib\":{rss:?}}}"
        );
        Ok(())
    }

    fn status_kib(pid: u32, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }

    /// (spawn → register ms, spawn → accepting ms, VmHWM KiB, VmRSS KiB).
    fn once(o: &Opts) -> Result<(f64, f64, u64, u64), String> {
        let api = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let api_addr = api.local_addr().map_err(|e| e.to_string())?;
        let http_port = free_port()?;
        let daemon = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let daemon_addr = daemon.local_addr().map_err(|e| e.to_string())?;
        let (registered_tx, registered_rx) = mpsc::channel::<Instant>();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || serve_api(api, registered_tx, release_rx, &stop))
        };

        let mut cmd = Command::new(&o.extension);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("AWS_LAMBDA_RUNTIME_API", api_addr.to_string())
            .env("AWS_XRAY_DAEMON_ADDRESS", daemon_addr.to_string())
            .env("AWS_REGION", "eu-west-1")
            .env("OTEL_XRAY_HTTP_PORT", http_port.to_string())
            .env("OTEL_XRAY_GRPC_PORT", free_port()?.to_string())
            .env("OTEL_XRAY_TELEMETRY_PORT", free_port()?.to_string())
            .env("OTEL_XRAY_PROXY_PORT", free_port()?.to_string())
            .env("OTEL_XRAY_LOG_LEVEL", "warn")
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("MIMALLOC_")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mine = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map_err(|e| e.to_string())?;
        if let Some(cpu) = o.pin {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).map_err(|e| e.to_string())?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                .map_err(|e| e.to_string())?;
        }
        let t0 = Instant::now();
        let spawned = cmd.spawn();
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &mine);
        let mut child = spawned.map_err(|e| format!("spawn {}: {e}", o.extension))?;
        // Spin until the OTLP/HTTP port accepts (bounded).
        let target = SocketAddr::from(([127, 0, 0, 1], http_port));
        let mut accepting = None;
        while t0.elapsed() < Duration::from_secs(2) {
            if TcpStream::connect(target).is_ok() {
                accepting = Some(t0.elapsed());
                break;
            }
        }
        let registered = registered_rx
            .recv_timeout(Duration::from_secs(3))
            .map_err(|_| "the extension did not register")?;
        thread::sleep(Duration::from_millis(200));
        let pid = child.id();
        let (hwm, rss) = (status_kib(pid, "VmHWM:"), status_kib(pid, "VmRSS:"));
        let _ = release_tx.send(());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Wake the blocked accept so that the server thread ends.
        stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(api_addr);
        let _ = server.join();
        let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 100.0;
        Ok((
            ms(registered.duration_since(t0)),
            accepting.map(ms).unwrap_or(f64::NAN),
            hwm,
            rss,
        ))
    }

    /// The stand-in Extensions and Telemetry APIs: a thread per connection, each response one
    /// write. `event/next` waits for `release`, then says SHUTDOWN. The accept blocks (no
    /// polling interval between the extension's connect and its request being read); `stop`
    /// and one more connect end it.
    fn serve_api(
        api: TcpListener,
        registered: mpsc::Sender<Instant>,
        release: mpsc::Receiver<()>,
        stop: &AtomicBool,
    ) {
        let release = Arc::new(std::sync::Mutex::new(release));
        let mut conns = Vec::new();
        while let Ok((conn, _)) = api.accept() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (registered, release) = (registered.clone(), release.clone());
            conns.push(thread::spawn(move || {
                let _ = serve_conn(conn, &registered, &release);
            }));
        }
        drop(conns);
    }

    fn serve_conn(
        mut conn: TcpStream,
        registered: &mpsc::Sender<Instant>,
        release: &std::sync::Mutex<mpsc::Receiver<()>>,
    ) -> Result<(), String> {
        let _ = conn.set_nonblocking(false);
        conn.set_nodelay(true).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let end = loop {
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    break end;
                }
                let n = conn.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let at = Instant::now();
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = header(&head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = conn.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            let path = head.split(' ').nth(1).unwrap_or("");
            let (extra, body) = if path.ends_with("/extension/register") {
                let _ = registered.send(at);
                (
                    "lambda-extension-identifier: 6f0a7c2e-bench\r\n",
                    "{\"functionName\":\"bench\",\"functionVersion\":\"$LATEST\",\"handler\":\"h\",\"accountId\":\"123456789012\"}".to_owned(),
                )
            } else if path.ends_with("/extension/event/next") {
                if let Ok(r) = release.lock() {
                    let _ = r.recv_timeout(Duration::from_secs(5));
                }
                let deadline = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() + 2000)
                    .unwrap_or(0);
                (
                    "lambda-extension-event-identifier: e1\r\n",
                    format!(
                        "{{\"eventType\":\"SHUTDOWN\",\"shutdownReason\":\"spindown\",\"deadlineMs\":{deadline}}}"
                    ),
                )
            } else {
                ("", "OK".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(resp.as_bytes()).map_err(|e| e.to_string())?;
        }
    }
}
