//! Shared by the receiver's integration tests: the real receiver on ephemeral loopback ports, on
//! its own current-thread runtime (as in the extension), with a real span buffer; plain HTTP/1,
//! HTTP/2 and gRPC clients built on hyper; sample OTLP data.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_xray::buffer::{self, BufferHandle, SpanBatch};
use otel_xray::receiver::BoundReceivers;
use otel_xray::stats::Stats;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A running receiver.
pub struct Harness {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub buffer: BufferHandle,
    pub stats: Arc<Stats>,
    cancel: CancellationToken,
    /// Becomes true when every receiver task has returned.
    stopped: tokio::sync::watch::Receiver<bool>,
    /// Ends the harness's runtime (and with it the buffer).
    exit: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Harness {
    /// Starts the receivers with a request cap and a buffer capacity.
    pub fn start(max_request_bytes: usize, buffer_max_spans: usize) -> Harness {
        let (tx, rx) = std::sync::mpsc::channel();
        let cancel = CancellationToken::new();
        let server_cancel = cancel.clone();
        let exit = CancellationToken::new();
        let server_exit = exit.clone();
        let (stopped_tx, stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addrs = (http.local_addr().unwrap(), grpc.local_addr().unwrap());
                let stats = Arc::new(Stats::default());
                let (buffer, _task) = buffer::spawn(buffer_max_spans, Arc::clone(&stats));
                let mut tasks = JoinSet::new();
                BoundReceivers {
                    http: Some(http),
                    grpc: Some(grpc),
                    max_request_bytes,
                }
                .serve(buffer.clone(), server_cancel, &mut tasks);
                tx.send((addrs, buffer, stats)).unwrap();
                while let Some(result) = tasks.join_next().await {
                    result.unwrap();
                }
                let _ = stopped_tx.send(true);
                // The buffer outlives the receivers, as in the extension.
                server_exit.cancelled().await;
            });
        });
        let ((http, grpc), buffer, stats) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Harness {
            http,
            grpc,
            buffer,
            stats,
            cancel,
            stopped,
            exit,
            thread: Some(thread),
        }
    }

    /// Everything buffered so far.
    pub async fn drain(&self) -> SpanBatch {
        tokio::time::timeout(Duration::from_secs(5), self.buffer.drain())
            .await
            .unwrap()
            .unwrap()
    }

    /// Starts the shutdown without waiting for it.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits (at most 10 s) until every receiver task has returned after [`Harness::cancel`].
    pub async fn stopped(&self) {
        let mut stopped = self.stopped.clone();
        tokio::time::timeout(Duration::from_secs(10), stopped.wait_for(|done| *done))
            .await
            .unwrap()
            .unwrap();
    }

    /// Cancels, waits for the receiver tasks to return and ends the runtime; how long it took.
    pub fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.cancel.cancel();
        self.exit.cancel();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        started.elapsed()
    }

    pub fn http_url(&self) -> String {
        format!("http://{}/v1/traces", self.http)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.exit.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every request body used by the tests.
pub type TestBody = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed()
}

/// A body of known chunks and unknown length: hyper sends it with chunked transfer encoding.
pub struct ChunkedBody(VecDeque<Bytes>);

impl ChunkedBody {
    pub fn boxed(bytes: &[u8], pieces: usize) -> TestBody {
        let size = bytes.len().div_ceil(pieces.max(1)).max(1);
        ChunkedBody(bytes.chunks(size).map(Bytes::copy_from_slice).collect()).boxed()
    }
}

impl Body for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A body fed by the test while the request is in flight.
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl ChannelBody {
    pub fn pair() -> (mpsc::Sender<Bytes>, TestBody) {
        let (tx, rx) = mpsc::channel(8);
        (tx, ChannelBody(rx).boxed())
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 connection (keep-alive: every request on it reuses the socket).
pub struct Http1 {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
    pub conn: tokio::task::JoinHandle<()>,
}

impl Http1 {
    pub async fn connect(addr: SocketAddr) -> Http1 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Http1 { sender, conn }
    }

    pub async fn send(&mut self, req: Request<TestBody>) -> Reply {
        tokio::time::timeout(Duration::from_secs(10), async {
            self.sender.ready().await.unwrap();
            let response = self.sender.send_request(req).await.unwrap();
            read_reply(response).await
        })
        .await
        .unwrap()
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// One HTTP/2 connection with prior knowledge (h2c, or gRPC).
#[derive(Clone)]
pub struct Http2 {
    sender: hyper::client::conn::http2::SendRequest<TestBody>,
}

impl Http2 {
    pub async fn connect(addr: SocketAddr) -> Http2 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Http2 { sender }
    }

    pub async fn send(&mut self, req: Request<TestBody>) -> Reply {
        tokio::time::timeout(Duration::from_secs(10), async {
            self.sender.ready().await.unwrap();
            let response = self.sender.send_request(req).await.unwrap();
            read_reply(response).await
        })
        .await
        .unwrap()
    }
}

async fn read_reply(response: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// `POST /v1/traces` with the given content type and optional content encoding.
pub fn post(
    path: &str,
    content_type: Option<&str>,
    encoding: Option<&str>,
    body: TestBody,
) -> Request<TestBody> {
    let mut builder = Request::post(path).header(http::header::HOST, "127.0.0.1");
    if let Some(ct) = content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    if let Some(enc) = encoding {
        builder = builder.header(http::header::CONTENT_ENCODING, enc);
    }
    builder.body(body).unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn string_attr(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// `spans` spans of one trace, named `<tag>-<i>`, under one resource with `service.name`.
pub fn sample_request(tag: &str, spans: usize) -> ExportTraceServiceRequest {
    let trace_id: Vec<u8> = (1..=16).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attr("service.name", "receiver-test")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: trace_id.clone(),
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: format!("{tag}-{i}"),
                        kind: 2,
                        start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        end_time_unix_nano: 1_700_000_000_500_000_000,
                        attributes: vec![string_attr("test.tag", tag)],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Names of the spans in a batch, in order.
pub fn span_names(batch: &SpanBatch) -> Vec<String> {
    batch
        .decode()
        .unwrap()
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect()
}
