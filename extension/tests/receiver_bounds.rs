//! The receiver's and buffer's bounds in bytes and connections (project issue 20), on real
//! loopback sockets: the buffer's byte cap (partial success, counted), pressure on bytes, the
//! body budget that declared lengths cannot reserve, the retryable refusal when it is used up,
//! the connection limit, and slow-loris connections next to a client that keeps exporting.
//!
//! Each test runs the receivers on its own current-thread runtime (as in the extension), with
//! small limits so that the bounds are reached with a few requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod receiver_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use otel_xray::buffer::{self, BufferHandle, BufferLimits};
use otel_xray::receiver::{BodyBudget, BoundReceivers, INITIAL_BODY_CAPACITY, ReceiverLimits};
use otel_xray::stats::{DropReason, RejectReason, Stats};
use prost::Message;
use receiver_support::{Http2, full, post, sample_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const MIB: usize = 1024 * 1024;

/// Receivers on ephemeral ports, served on the test's runtime.
struct Running {
    http: SocketAddr,
    grpc: SocketAddr,
    buffer: BufferHandle,
    stats: Arc<Stats>,
    budget: Arc<BodyBudget>,
    cancel: CancellationToken,
    _tasks: JoinSet<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(buffer_limits: BufferLimits, limits: ReceiverLimits) -> Running {
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, grpc_addr) = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
    let stats = Arc::new(Stats::default());
    let (buffer, _task) = buffer::spawn(buffer_limits, Arc::clone(&stats));
    let budget = Arc::clone(&limits.body_budget);
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    BoundReceivers {
        http: Some(http),
        grpc: Some(grpc),
        max_request_bytes: 4 * MIB,
    }
    .serve_with(buffer.clone(), limits, cancel.clone(), &mut tasks);
    Running {
        http: http_addr,
        grpc: grpc_addr,
        buffer,
        stats,
        budget,
        cancel,
        _tasks: tasks,
    }
}

fn limits(budget: usize, max_connections: usize, stall: Duration) -> ReceiverLimits {
    ReceiverLimits {
        body_budget: Arc::new(BodyBudget::new(budget)),
        max_connections,
        stall_timeout: stall,
    }
}

/// One protobuf export request of `spans` spans (about 80 bytes each).
fn body(tag: &str, spans: usize) -> Vec<u8> {
    sample_request(tag, spans).encode_to_vec()
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Writes one `POST /v1/traces` on a kept-alive connection and reads its response.
async fn export(stream: &mut TcpStream, body: &[u8]) -> Raw {
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        read_response(stream).await
    })
    .await
    .expect("the response came in time")
}

async fn read_response(stream: &mut TcpStream) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed in a response body");
        body.extend_from_slice(&chunk[..n]);
    }
    Raw { status, head, body }
}

/// True when the server closes the connection within `within` (EOF or reset, after reading and
/// discarding anything it answered).
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn rejected(stats: &Stats, reason: RejectReason) -> u64 {
    stats
        .snapshot()
        .requests_rejected
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

#[tokio::test]
async fn the_byte_cap_refuses_whole_requests_with_partial_success_and_counts_them() {
    let one = body("a", 10);
    let size = one.len();
    // Room for two of these requests, not three; far from the span cap.
    let cap = size * 2 + size / 2;
    let run = start(
        BufferLimits {
            spans: 10_000,
            bytes: cap,
            in_flight_bytes: 8 * MIB,
        },
        limits(8 * MIB, 64, Duration::from_secs(10)),
    )
    .await;
    let pressure = Arc::clone(run.buffer.pressure());
    let mut client = TcpStream::connect(run.http).await.unwrap();
    for tag in ["a", "b"] {
        let reply = export(&mut client, &body(tag, 10)).await;
        assert_eq!(reply.status, 200);
        let response = ExportTraceServiceResponse::decode(reply.body.as_slice()).unwrap();
        assert!(
            response
                .partial_success
                .is_none_or(|p| p.rejected_spans == 0)
        );
    }
    // Past half the bytes after the first two: an early flush is asked for.
    tokio::time::timeout(Duration::from_secs(1), pressure.notified())
        .await
        .expect("pressure on bytes");
    let reply = export(&mut client, &body("c", 10)).await;
    assert_eq!(reply.status, 200);
    let partial = ExportTraceServiceResponse::decode(reply.body.as_slice())
        .unwrap()
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 10);
    assert!(
        partial.error_message.contains("OTEL_XRAY_BUFFER_MAX_BYTES"),
        "{}",
        partial.error_message
    );
    // gRPC is refused the same way.
    let mut grpc = Http2::connect(run.grpc).await;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(one.len() as u32).to_be_bytes());
    framed.extend_from_slice(&one);
    let reply = grpc
        .send(
            http::Request::post(
                "http://127.0.0.1/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            )
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(full(framed))
            .unwrap(),
        )
        .await;
    assert_eq!(
        reply.trailers.as_ref().unwrap().get("grpc-status").unwrap(),
        "0"
    );
    let response = ExportTraceServiceResponse::decode(&reply.body[5..]).unwrap();
    assert_eq!(response.partial_success.unwrap().rejected_spans, 10);

    let held = run.buffer.held_bytes().await.unwrap();
    assert_eq!(held, size * 2);
    assert!(held <= cap);
    let snap = run.stats.snapshot();
    assert_eq!(snap.received, 40);
    assert_eq!(snap.dropped(DropReason::BufferFull), 20);
    assert_eq!(run.buffer.len().await.unwrap(), 20);
    // A drain empties the bytes: the next request fits again.
    assert_eq!(run.buffer.drain().await.unwrap().spans, 20);
    assert_eq!(run.buffer.held_bytes().await.unwrap(), 0);
    let reply = export(&mut client, &body("d", 10)).await;
    let response = ExportTraceServiceResponse::decode(reply.body.as_slice()).unwrap();
    assert!(
        response
            .partial_success
            .is_none_or(|p| p.rejected_spans == 0)
    );
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test]
async fn declared_lengths_reserve_nothing_and_the_budget_grows_only_with_bytes() {
    const CONNECTIONS: usize = 150;
    let run = start(
        BufferLimits::spans(20_000),
        limits(8 * MIB, 256, Duration::from_secs(30)),
    )
    .await;
    let before = rss_kib();
    // 150 connections declare 4 MiB each (600 MiB in all); half send nothing of the body,
    // half send 100 bytes of it.
    let mut idle = Vec::new();
    for i in 0..CONNECTIONS {
        let mut s = TcpStream::connect(run.http).await.unwrap();
        s.write_all(
            format!(
                "POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                4 * MIB
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        if i % 2 == 1 {
            s.write_all(&[0x0a; 100]).await.unwrap();
        }
        idle.push(s);
    }
    // The bodies that sent bytes hold one first allocation each, and no more, however long we
    // wait; the others hold nothing.
    let expected = CONNECTIONS / 2 * INITIAL_BODY_CAPACITY;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while run.budget.used_bytes() < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(run.budget.used_bytes(), expected);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(run.budget.used_bytes(), expected);
    if let (Some(before), Some(after)) = (before, rss_kib()) {
        // Not 600 MiB: a few MiB of buffers and sockets.
        assert!(
            after.saturating_sub(before) < 64 * 1024,
            "RSS grew from {before} KiB to {after} KiB"
        );
    }
    // Others still export meanwhile.
    let mut client = TcpStream::connect(run.http).await.unwrap();
    assert_eq!(export(&mut client, &body("ok", 5)).await.status, 200);
    assert_eq!(run.buffer.len().await.unwrap(), 5);
    // Gone: their share comes back.
    drop(idle);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while run.budget.used_bytes() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(run.budget.used_bytes(), 0);
    assert_eq!(run.budget.capacity_bytes(), 8 * MIB);
}

#[tokio::test]
async fn a_body_that_cannot_get_its_bytes_is_refused_as_retryable_and_counted() {
    // A budget of 64 KiB: a 200 KiB body can never have its bytes.
    let run = start(
        BufferLimits::spans(20_000),
        limits(64 * 1024, 64, Duration::from_secs(10)),
    )
    .await;
    let big = body("big", 3_000);
    assert!(big.len() > 128 * 1024, "{}", big.len());
    let mut client = TcpStream::connect(run.http).await.unwrap();
    let reply = export(&mut client, &big).await;
    assert_eq!(reply.status, 429, "{}", reply.head);
    assert!(reply.head.to_ascii_lowercase().contains("retry-after: 1"));
    assert!(
        String::from_utf8_lossy(&reply.body).contains("OTEL_XRAY_MAX_IN_FLIGHT_BYTES"),
        "{:?}",
        reply.body
    );
    assert_eq!(rejected(&run.stats, RejectReason::Busy), 1);

    let mut grpc = Http2::connect(run.grpc).await;
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(big.len() as u32).to_be_bytes());
    framed.extend_from_slice(&big);
    let reply = grpc
        .send(
            http::Request::post(
                "http://127.0.0.1/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            )
            .header("content-type", "application/grpc")
            .body(full(framed))
            .unwrap(),
        )
        .await;
    // UNAVAILABLE: retryable, as the OTLP spec says.
    assert_eq!(reply.headers.get("grpc-status").unwrap(), "14");
    assert_eq!(rejected(&run.stats, RejectReason::Busy), 2);
    // A small request fits and goes through; nothing is left held.
    let mut client = TcpStream::connect(run.http).await.unwrap();
    assert_eq!(export(&mut client, &body("small", 3)).await.status, 200);
    assert_eq!(run.buffer.len().await.unwrap(), 3);
    assert_eq!(run.budget.used_bytes(), 0);
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_and_the_others_kept() {
    let run = start(
        BufferLimits::spans(20_000),
        limits(8 * MIB, 8, Duration::from_secs(10)),
    )
    .await;
    let mut open = Vec::new();
    for i in 0..8 {
        let mut s = TcpStream::connect(run.http).await.unwrap();
        assert_eq!(export(&mut s, &body(&format!("c{i}"), 1)).await.status, 200);
        open.push(s);
    }
    // The ninth (and tenth) is accepted and closed at once.
    for _ in 0..2 {
        let mut extra = TcpStream::connect(run.http).await.unwrap();
        let _ = extra
            .write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .await;
        assert!(closed_by_server(&mut extra, Duration::from_secs(5)).await);
    }
    // The gRPC port has a limit of its own: it still takes connections.
    let mut grpc = TcpStream::connect(run.grpc).await.unwrap();
    assert_eq!(export(&mut grpc, &body("g", 1)).await.status, 200);
    drop(grpc);
    // The eight open connections are undisturbed.
    for s in &mut open {
        assert_eq!(export(s, &body("again", 1)).await.status, 200);
    }
    // One closes: a new connection is served again.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(run.http).await.unwrap();
        let _ = s
            .write_all(b"GET /otel-xray/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut first = [0u8; 12];
        if tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut first))
            .await
            .is_ok_and(|r| r.is_ok())
        {
            assert_eq!(&first, b"HTTP/1.1 200");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run.buffer.len().await.unwrap(), 8 + 1 + 8);
}

#[tokio::test]
async fn slow_loris_connections_are_closed_while_a_pooled_client_keeps_exporting() {
    const STALL: Duration = Duration::from_millis(800);
    let run = start(BufferLimits::spans(20_000), limits(8 * MIB, 64, STALL)).await;
    // The SDK's pooled connection, opened before the attack.
    let mut pooled = TcpStream::connect(run.http).await.unwrap();
    assert_eq!(export(&mut pooled, &body("before", 2)).await.status, 200);

    // 200 slow-loris connections: a head started and left unfinished, or a whole head and the
    // first bytes of a body that never comes.
    let mut loris = Vec::new();
    for i in 0..200 {
        let Ok(mut s) = TcpStream::connect(run.http).await else {
            continue;
        };
        let start: &[u8] = if i % 2 == 0 {
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Ty"
        } else {
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 4000000\r\n\r\n\x0a\x0a"
        };
        let _ = s.write_all(start).await;
        loris.push(s);
    }
    // The pooled client keeps exporting meanwhile, every request answered.
    for i in 0..20 {
        let reply = export(&mut pooled, &body(&format!("during{i}"), 2)).await;
        assert_eq!(reply.status, 200);
    }
    // Every slow-loris connection is closed: those past the limit at once, the others once
    // they have sent nothing for the stall timeout.
    let mut closed = 0;
    for s in &mut loris {
        if closed_by_server(s, STALL * 6).await {
            closed += 1;
        }
    }
    assert_eq!(closed, loris.len());
    assert_eq!(run.budget.used_bytes(), 0);

    // The pooled connection, idle for longer than the stall timeout, was never closed.
    tokio::time::sleep(STALL * 2).await;
    let reply = export(&mut pooled, &body("after", 2)).await;
    assert_eq!(reply.status, 200);
    // And new connections are served again.
    let mut fresh = TcpStream::connect(run.http).await.unwrap();
    assert_eq!(export(&mut fresh, &body("fresh", 2)).await.status, 200);
    assert_eq!(run.buffer.len().await.unwrap(), 2 * 23);
    // Nothing counted as a refused export: a stalled request is the client's, not data refused.
    assert_eq!(run.stats.snapshot().dropped_total(), 0);
}

#[tokio::test]
async fn an_idle_http2_connection_is_not_timed_out() {
    const STALL: Duration = Duration::from_millis(500);
    let run = start(BufferLimits::spans(20_000), limits(8 * MIB, 64, STALL)).await;
    let mut h2 = Http2::connect(run.http).await;
    let request = || {
        post(
            "http://127.0.0.1/v1/traces",
            Some("application/x-protobuf"),
            None,
            full(body("h2", 1)),
        )
    };
    assert_eq!(h2.send(request()).await.status, 200);
    tokio::time::sleep(STALL * 3).await;
    assert_eq!(h2.send(request()).await.status, 200);
    // A connection that opened and sent nothing yet is idle too.
    let mut quiet = TcpStream::connect(run.http).await.unwrap();
    tokio::time::sleep(STALL * 3).await;
    assert_eq!(export(&mut quiet, &body("late", 1)).await.status, 200);
}

#[tokio::test]
async fn a_head_dribbled_a_byte_at_a_time_is_closed_at_its_deadline() {
    const STALL: Duration = Duration::from_millis(400);
    let run = start(BufferLimits::spans(20_000), limits(8 * MIB, 64, STALL)).await;
    let mut s = TcpStream::connect(run.http).await.unwrap();
    let head = b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    // One byte every half stall: never quiet for a whole stall, but the head never ends.
    let mut closed = false;
    for byte in head.iter().cycle().take(40) {
        if s.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        if closed_by_server(&mut s, STALL / 2).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "the dribbling head was never closed");
    // Meanwhile, and after, the port serves others.
    let mut client = TcpStream::connect(run.http).await.unwrap();
    assert_eq!(export(&mut client, &body("ok", 1)).await.status, 200);
}
