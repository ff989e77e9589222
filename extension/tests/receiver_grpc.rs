//! The OTLP/gRPC receiver, started for real on an ephemeral loopback port with a real buffer,
//! driven by the tonic-generated TraceService client (what the Rust SDK uses) and by a raw
//! hyper HTTP/2 client for the framing errors no real client would produce.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod receiver_support;

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use otel_xray::receiver::grpc::EXPORT_PATH;
use otel_xray::stats::RejectReason;
use prost::Message;
use receiver_support::*;
use tonic::codec::CompressionEncoding;

const MB: usize = 1024 * 1024;

async fn tonic_client(h: &Harness) -> TraceServiceClient<tonic::transport::Channel> {
    tokio::time::timeout(
        Duration::from_secs(5),
        TraceServiceClient::connect(format!("http://{}", h.grpc)),
    )
    .await
    .unwrap()
    .unwrap()
}

fn framed(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::from(compressed)];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn grpc_request(
    h: &Harness,
    path: &str,
    encoding: Option<&str>,
    body: TestBody,
) -> http::Request<TestBody> {
    let mut b = http::Request::post(format!("http://{}{path}", h.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        b = b.header("grpc-encoding", e);
    }
    b.body(body).unwrap()
}

/// grpc-status and the percent-decoded grpc-message, from the trailers or, for a trailers-only
/// response, from the headers.
fn grpc_status(reply: &Reply) -> (i32, String) {
    let source = match &reply.trailers {
        Some(t) if t.contains_key("grpc-status") => t,
        _ => &reply.headers,
    };
    let code = source["grpc-status"].to_str().unwrap().parse().unwrap();
    let raw = source
        .get("grpc-message")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let mut bytes = Vec::new();
    let mut it = raw.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex: String = [it.next().unwrap(), it.next().unwrap()]
                .iter()
                .map(|&c| char::from(c))
                .collect();
            bytes.push(u8::from_str_radix(&hex, 16).unwrap());
        } else {
            bytes.push(b);
        }
    }
    (code, String::from_utf8(bytes).unwrap())
}

fn rejected(h: &Harness, reason: RejectReason) -> u64 {
    h.stats
        .snapshot()
        .requests_rejected
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

#[tokio::test]
async fn tonic_client_exports_spans_intact() {
    let h = Harness::start(4 * MB, 1000);
    let mut client = tonic_client(&h).await;
    let request = sample_request("grpc", 3);
    let response = client.export(request.clone()).await.unwrap().into_inner();
    assert_eq!(response, ExportTraceServiceResponse::default());
    let batch = h.drain().await;
    assert_eq!(batch.decode().unwrap(), request.resource_spans);
    // Buffered as received: the message's bytes, not decoded and encoded again.
    assert_eq!(batch.requests.len(), 1);
    assert_eq!(batch.requests[0].bytes, request.encode_to_vec());

    // gzip, as `OTEL_EXPORTER_OTLP_COMPRESSION=gzip` makes SDKs send.
    let mut gz = client
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    for i in 0..3 {
        let request = sample_request(&format!("gz{i}"), 2);
        gz.export(request.clone()).await.unwrap();
        assert_eq!(h.drain().await.decode().unwrap(), request.resource_spans);
    }
}

#[tokio::test]
async fn tonic_client_sees_partial_success_and_resource_exhausted() {
    let h = Harness::start(MB, 5);
    let mut client = tonic_client(&h).await;
    client.export(sample_request("a", 3)).await.unwrap();
    let response = client
        .export(sample_request("b", 4))
        .await
        .unwrap()
        .into_inner();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("span buffer full"));
    assert_eq!(
        span_names(&h.drain().await),
        ["a-0", "a-1", "a-2", "b-0", "b-1"]
    );

    // Over the 1 MiB cap: one span with a 2 MiB attribute.
    let mut big = sample_request("big", 1);
    big.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(string_attr("blob", &"x".repeat(2 * MB)));
    let status = client.export(big.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status
            .message()
            .contains("larger than the limit of 1048576 bytes"),
        "{}",
        status.message()
    );
    // Compressed it is small, but it inflates past the cap.
    let status = client
        .clone()
        .send_compressed(CompressionEncoding::Gzip)
        .export(big)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("decompressed"),
        "{}",
        status.message()
    );

    // Still serving, on the same HTTP/2 connection.
    client.export(sample_request("after", 1)).await.unwrap();
    assert_eq!(span_names(&h.drain().await), ["after-0"]);
    assert_eq!(rejected(&h, RejectReason::TooLarge), 2);
}

#[tokio::test]
async fn framing_and_encoding_errors() {
    let h = Harness::start(MB, 1000);
    let good = sample_request("ok", 1).encode_to_vec();
    let mut conn = Http2::connect(h.grpc).await;

    struct Case {
        name: &'static str,
        path: &'static str,
        encoding: Option<&'static str>,
        body: Vec<u8>,
        code: i32,
        message: &'static str,
    }
    let bomb = gzip(&vec![0u8; 10 * MB]);
    let cases = [
        Case {
            name: "unknown method",
            path: "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            encoding: None,
            body: framed(false, &good),
            code: 12,
            message: "unknown method /opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        },
        Case {
            name: "unknown encoding",
            path: EXPORT_PATH,
            encoding: Some("snappy"),
            body: framed(true, &good),
            code: 12,
            message: "unsupported content encoding \"snappy\"",
        },
        Case {
            name: "malformed protobuf",
            path: EXPORT_PATH,
            encoding: None,
            body: framed(false, b"\x0a\xff\xff\xff\x0f"),
            code: 3,
            message: "cannot decode the protobuf ExportTraceServiceRequest",
        },
        Case {
            name: "truncated message",
            path: EXPORT_PATH,
            encoding: None,
            body: framed(false, &good)[..10].to_vec(),
            code: 3,
            message: "truncated message: 5 of",
        },
        Case {
            name: "truncated prefix",
            path: EXPORT_PATH,
            encoding: None,
            body: vec![0, 0, 0],
            code: 3,
            message: "truncated message prefix: 3 of 5 bytes",
        },
        Case {
            name: "no message",
            path: EXPORT_PATH,
            encoding: None,
            body: vec![],
            code: 3,
            message: "carries no message",
        },
        Case {
            name: "bad compressed flag",
            path: EXPORT_PATH,
            encoding: None,
            body: {
                let mut f = framed(false, &good);
                f[0] = 2;
                f
            },
            code: 3,
            message: "invalid compressed flag 2",
        },
        Case {
            name: "two messages in a unary call",
            path: EXPORT_PATH,
            encoding: None,
            body: [framed(false, &good), framed(false, &good)].concat(),
            code: 3,
            message: "more than one message",
        },
        Case {
            name: "compressed flag without grpc-encoding",
            path: EXPORT_PATH,
            encoding: None,
            body: framed(true, &gzip(&good)),
            code: 3,
            message: "no grpc-encoding",
        },
        Case {
            name: "corrupt gzip",
            path: EXPORT_PATH,
            encoding: Some("gzip"),
            body: framed(true, b"definitely not gzip"),
            code: 3,
            message: "cannot decompress the gzip body",
        },
        Case {
            name: "declared length over the cap",
            path: EXPORT_PATH,
            encoding: None,
            // Only the prefix is sent: the refusal comes from the declared length.
            body: {
                let mut f = vec![0u8];
                f.extend_from_slice(&(2 * MB as u32).to_be_bytes());
                f
            },
            code: 8,
            message: "larger than the limit of 1048576 bytes",
        },
        Case {
            name: "gzip bomb",
            path: EXPORT_PATH,
            encoding: Some("gzip"),
            body: framed(true, &bomb),
            code: 8,
            message: "decompressed request body larger than the limit",
        },
    ];
    for case in cases {
        let reply = conn
            .send(grpc_request(
                &h,
                case.path,
                case.encoding,
                ChunkedBody::boxed(&case.body, 3),
            ))
            .await;
        assert_eq!(reply.status, 200, "{}", case.name);
        assert_eq!(
            reply.headers["content-type"], "application/grpc",
            "{}",
            case.name
        );
        assert_eq!(
            reply.headers["grpc-accept-encoding"], "gzip,deflate,identity",
            "{}",
            case.name
        );
        let (code, message) = grpc_status(&reply);
        assert_eq!(code, case.code, "{}: {message}", case.name);
        assert!(
            message.contains(case.message),
            "{}: {message:?} lacks {:?}",
            case.name,
            case.message
        );
        // Errors are trailers-only: no message body.
        assert!(reply.body.is_empty(), "{}", case.name);

        // Still serving, on the same connection.
        let reply = conn
            .send(grpc_request(
                &h,
                EXPORT_PATH,
                None,
                full(framed(false, &good)),
            ))
            .await;
        assert_eq!(grpc_status(&reply).0, 0, "after {}", case.name);
        assert_eq!(
            span_names(&h.drain().await),
            ["ok-0"],
            "after {}",
            case.name
        );
    }
    assert_eq!(rejected(&h, RejectReason::UnsupportedMediaType), 1);
    assert_eq!(rejected(&h, RejectReason::Malformed), 8);
    assert_eq!(rejected(&h, RejectReason::TooLarge), 2);
}

#[tokio::test]
async fn success_response_is_framed_with_trailers() {
    let h = Harness::start(MB, 1000);
    let mut conn = Http2::connect(h.grpc).await;
    let body = framed(false, &sample_request("raw", 2).encode_to_vec());
    let reply = conn
        .send(grpc_request(&h, EXPORT_PATH, Some("identity"), full(body)))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/grpc");
    assert_eq!(reply.body[0], 0, "not compressed");
    let len = u32::from_be_bytes([reply.body[1], reply.body[2], reply.body[3], reply.body[4]]);
    assert_eq!(len as usize, reply.body.len() - 5);
    let response = ExportTraceServiceResponse::decode(reply.body.slice(5..)).unwrap();
    assert_eq!(response, ExportTraceServiceResponse::default());
    let trailers = reply.trailers.as_ref().unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(span_names(&h.drain().await), ["raw-0", "raw-1"]);

    // deflate, which grpcio clients can choose.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &sample_request("zl", 1).encode_to_vec()).unwrap();
    let reply = conn
        .send(grpc_request(
            &h,
            EXPORT_PATH,
            Some("deflate"),
            full(framed(true, &z.finish().unwrap())),
        ))
        .await;
    assert_eq!(grpc_status(&reply).0, 0);
    assert_eq!(span_names(&h.drain().await), ["zl-0"]);
}

/// Requests are routed by Content-Type, so an SDK pointed at the wrong port still delivers.
#[tokio::test]
async fn both_ports_serve_both_protocols() {
    let h = Harness::start(MB, 1000);
    // OTLP/HTTP protobuf over HTTP/1.1, to the gRPC port.
    let mut c = Http1::connect(h.grpc).await;
    let reply = c
        .send(post(
            "/v1/traces",
            Some("application/x-protobuf"),
            None,
            full(sample_request("http-on-grpc-port", 1).encode_to_vec()),
        ))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(span_names(&h.drain().await), ["http-on-grpc-port-0"]);

    // The tonic client, to the HTTP port.
    let mut client = TraceServiceClient::connect(format!("http://{}", h.http))
        .await
        .unwrap();
    client
        .export(sample_request("grpc-on-http-port", 1))
        .await
        .unwrap();
    assert_eq!(span_names(&h.drain().await), ["grpc-on-http-port-0"]);

    // Not gRPC, on the gRPC path: the OTLP/HTTP handler says where traces go.
    let mut conn = Http2::connect(h.grpc).await;
    let req = http::Request::post(format!("http://{}{EXPORT_PATH}", h.grpc))
        .header("content-type", "application/x-protobuf")
        .body(full(Bytes::new()))
        .unwrap();
    let reply = conn.send(req).await;
    assert_eq!(reply.status, 404);
    // gRPC that is not a POST.
    let req = http::Request::get(format!("http://{}{EXPORT_PATH}", h.grpc))
        .header("content-type", "application/grpc")
        .body(full(Bytes::new()))
        .unwrap();
    let reply = conn.send(req).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers["allow"], "POST");
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_call_finish() {
    let h = Harness::start(MB, 100);
    let body = framed(false, &sample_request("late", 2).encode_to_vec());
    let (a, b) = body.split_at(body.len() / 2);
    let (a, b) = (Bytes::copy_from_slice(a), Bytes::copy_from_slice(b));
    let mut conn = Http2::connect(h.grpc).await;
    let (tx, chunked) = ChannelBody::pair();
    let req = grpc_request(&h, EXPORT_PATH, None, chunked);
    let call = tokio::spawn(async move { conn.send(req).await });
    tx.send(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    tx.send(b).await.unwrap();
    drop(tx);
    let reply = call.await.unwrap();
    assert_eq!(grpc_status(&reply).0, 0);
    h.stopped().await;
    assert_eq!(span_names(&h.drain().await), ["late-0", "late-1"]);
    assert!(tokio::net::TcpStream::connect(h.grpc).await.is_err());
}
