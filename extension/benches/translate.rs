//! Decode + translate throughput, in spans per second.
//!
//! A realistic 100-span `ExportTraceServiceRequest` (two resources, each 10 traces of a SERVER span
//! with an AWS SDK call, an HTTP call that fails with an exception event, a database query and an
//! internal span; about ten attributes a span) is encoded once with prost, then benchmarked:
//! (a) prost decode, (b) translate, (c) decode + translate (the owned path: prost decode, then
//! `translate`, which encodes again and reads the bytes as views), and the zero-copy path the
//! receiver and exporters use: (d) `validate_request`, (e) `RequestView::parse`,
//! (f) `translate_encoded` of the request's bytes, (g) validate + `translate_encoded`; and the
//! OTLP/JSON receiver's path for the same request as JSON (the OTLP/JSON mapping, written by
//! `opentelemetry-proto`'s serde support): (h) `otlp_json::decode_request`, (i) decode and encode
//! to protobuf, which is what the receiver buffers.
//!
//! `cargo bench -p otel-xray-extension --bench translate`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::hint::black_box;

/// The allocator the `otel-xray` binary uses (see its main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use otel_xray::otlp_wire::{RequestView, validate_request};
use otel_xray::receiver::otlp_json::decode_request;
use otel_xray::xray::translate::translate_encoded;
use otel_xray::xray::{TranslateOptions, translate};
use prost::Message;

const SPANS: usize = 100;
const T0: u64 = 1_760_000_000_000_000_000;

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}
fn i(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..Default::default()
    }
}
fn b(k: &str, v: bool) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::BoolValue(v)),
        }),
        ..Default::default()
    }
}

const PY_TRACEBACK: &str = "Traceback (most recent call last):\n  File \"/var/task/app.py\", line 42, in handler\n    r.raise_for_status()\n  File \"/opt/python/requests/models.py\", line 1021, in raise_for_status\n    raise HTTPError(http_error_msg, response=self)\nrequests.exceptions.HTTPError: 503 Server Error: Service Unavailable\n";

fn child(trace: &[u8], parent: &[u8], id: Vec<u8>, n: u8, start: u64) -> Span {
    let (kind, name, attributes, events, code) = match n {
        0 => (
            span::SpanKind::Client,
            "DynamoDB.GetItem",
            vec![
                s("rpc.system", "aws-api"),
                s("rpc.service", "DynamoDB"),
                s("rpc.method", "GetItem"),
                s("aws.region", "eu-west-1"),
                s(
                    "aws.request_id",
                    "V4DIK0SPNCDR0SJ5M2PUKFOCQ3VV4KQNSO5AEMVJF66Q9ASUAAJG",
                ),
                s("aws.dynamodb.table_names", "orders"),
                s("http.request.method", "POST"),
                s("server.address", "dynamodb.eu-west-1.amazonaws.com"),
                i("http.response.status_code", 200),
                b("aws.dynamodb.consistent_read", true),
            ],
            vec![],
            status::StatusCode::Unset,
        ),
        1 => (
            span::SpanKind::Client,
            "POST",
            vec![
                s("http.request.method", "POST"),
                s(
                    "url.full",
                    "https://payments.example.com/v1/charge?attempt=1",
                ),
                s("server.address", "payments.example.com"),
                i("server.port", 443),
                i("http.response.status_code", 503),
                s("network.protocol.version", "1.1"),
                i("http.request.body.size", 512),
                i("http.response.body.size", 87),
                s("peer.service", "payments"),
                b("retry", true),
            ],
            vec![span::Event {
                time_unix_nano: start + 3_000_000,
                name: "exception".into(),
                attributes: vec![
                    s("exception.type", "requests.exceptions.HTTPError"),
                    s("exception.message", "503 Server Error: Service Unavailable"),
                    s("exception.stacktrace", PY_TRACEBACK),
                    b("exception.escaped", false),
                ],
                dropped_attributes_count: 0,
            }],
            status::StatusCode::Error,
        ),
        2 => (
            span::SpanKind::Client,
            "SELECT shop.orders",
            vec![
                s("db.system", "postgresql"),
                s("db.name", "shop"),
                s(
                    "db.statement",
                    "SELECT id, total, status FROM orders WHERE id = %s",
                ),
                s("db.user", "app"),
                s("net.peer.name", "db.internal"),
                i("net.peer.port", 5432),
                s("db.operation", "SELECT"),
                s("db.sql.table", "orders"),
                i("db.rows", 1),
                s("db.connection_string", "postgresql://db.internal:5432"),
            ],
            vec![],
            status::StatusCode::Unset,
        ),
        _ => (
            span::SpanKind::Internal,
            "render order",
            vec![
                s("template", "order.html"),
                i("bytes", 2048),
                b("cached", false),
                s("locale", "en-GB"),
                s("code.function", "render_order"),
                s("code.namespace", "app.views"),
                s("code.filepath", "/var/task/app/views.py"),
                i("code.lineno", 120),
                s("thread.name", "MainThread"),
                i("thread.id", 1),
            ],
            vec![],
            status::StatusCode::Ok,
        ),
    };
    Span {
        trace_id: trace.to_vec(),
        span_id: id,
        parent_span_id: parent.to_vec(),
        name: name.into(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 4_000_000,
        attributes,
        events,
        status: Some(Status {
            code: code as i32,
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// The benchmark's request: 100 spans in 2 resources.
fn request() -> ExportTraceServiceRequest {
    let mut resource_spans = Vec::new();
    for r in 0..2u8 {
        let service = if r == 0 { "checkout" } else { "inventory" };
        let resource = Resource {
            attributes: vec![
                s("service.name", service),
                s("cloud.provider", "aws"),
                s("cloud.platform", "aws_lambda"),
                s("cloud.region", "eu-west-1"),
                s("cloud.account.id", "123456789012"),
                s("faas.name", service),
                s("faas.version", "$LATEST"),
                s("telemetry.sdk.name", "opentelemetry"),
                s("telemetry.sdk.language", "python"),
                s("telemetry.sdk.version", "1.38.0"),
            ],
            ..Default::default()
        };
        let mut spans = Vec::new();
        let mut t = 0u8;
        while spans.len() < SPANS / 2 {
            t += 1;
            let mut trace = vec![0x5a; 16];
            trace[0] = r + 1;
            trace[15] = t;
            let root = vec![r + 1, t, 0, 0, 0, 0, 0, 1];
            let start = T0 + u64::from(t) * 1_000_000_000;
            spans.push(Span {
                trace_id: trace.clone(),
                span_id: root.clone(),
                name: "GET /orders/{id}".into(),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 25_000_000,
                attributes: vec![
                    s("http.request.method", "GET"),
                    s("url.scheme", "https"),
                    s("url.path", "/orders/42"),
                    s("server.address", "api.example.com"),
                    i("server.port", 443),
                    s("http.route", "/orders/{id}"),
                    i("http.response.status_code", 200),
                    s(
                        "user_agent.original",
                        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
                    ),
                    s("client.address", "203.0.113.7"),
                    s("enduser.id", "user-42"),
                ],
                status: Some(Status::default()),
                ..Default::default()
            });
            for c in 0..4u8 {
                if spans.len() == SPANS / 2 {
                    break;
                }
                let id = vec![r + 1, t, 0, 0, 0, 0, 1, c];
                spans.push(child(
                    &trace,
                    &root,
                    id,
                    c,
                    start + 1_000_000 + u64::from(c) * 5_000_000,
                ));
            }
        }
        resource_spans.push(ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.flask".into(),
                    version: "0.59b0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
    }
    ExportTraceServiceRequest { resource_spans }
}

fn bench(c: &mut Criterion) {
    let req = request();
    let spans = otel_xray::buffer::count_spans(&req.resource_spans);
    assert_eq!(spans, SPANS);
    let bytes = req.encode_to_vec();
    let options = TranslateOptions::default();
    let check = translate(&req.resource_spans, &options);
    assert_eq!(
        check.documents.iter().map(|d| d.spans).sum::<usize>(),
        SPANS
    );
    let n = validate_request(&bytes).unwrap();
    assert_eq!(n, SPANS);
    assert_eq!(translate_encoded([(&bytes[..], n)], &options), check);
    let json_bytes: usize = check.documents.iter().map(|d| d.json.len()).sum();
    let otlp_json = otlp_json_of(&req);
    assert_eq!(
        decode_request(&otlp_json).unwrap(),
        req,
        "the JSON is the same request"
    );
    eprintln!(
        "request: {} spans, {} bytes of protobuf ({} of OTLP/JSON) → {} documents, {} bytes of JSON",
        SPANS,
        bytes.len(),
        otlp_json.len(),
        check.documents.len(),
        json_bytes
    );

    let mut g = c.benchmark_group("otlp_to_xray");
    g.throughput(Throughput::Elements(SPANS as u64));
    g.bench_function("decode", |bch| {
        bch.iter(|| ExportTraceServiceRequest::decode(black_box(&bytes[..])).unwrap())
    });
    g.bench_function("translate", |bch| {
        bch.iter(|| translate(black_box(&req.resource_spans), &options))
    });
    g.bench_function("decode_translate", |bch| {
        bch.iter(|| {
            let req = ExportTraceServiceRequest::decode(black_box(&bytes[..])).unwrap();
            translate(&req.resource_spans, &options)
        })
    });
    g.bench_function("validate", |bch| {
        bch.iter(|| validate_request(black_box(&bytes[..])).unwrap())
    });
    g.bench_function("view_parse", |bch| {
        bch.iter(|| RequestView::parse(black_box(&bytes[..])).unwrap())
    });
    g.bench_function("translate_encoded", |bch| {
        bch.iter(|| translate_encoded([(black_box(&bytes[..]), SPANS)], &options))
    });
    g.bench_function("decode_translate_view", |bch| {
        bch.iter(|| {
            let n = validate_request(black_box(&bytes[..])).unwrap();
            translate_encoded([(&bytes[..], n)], &options)
        })
    });
    g.bench_function("json_decode", |bch| {
        bch.iter(|| decode_request(black_box(&otlp_json[..])).unwrap())
    });
    g.bench_function("json_decode_encode", |bch| {
        bch.iter(|| {
            decode_request(black_box(&otlp_json[..]))
                .unwrap()
                .encode_to_vec()
        })
    });
    g.finish();
}

/// The request in the OTLP/JSON encoding (hex ids, camelCase names, 64-bit integers as strings).
fn otlp_json_of(req: &ExportTraceServiceRequest) -> Vec<u8> {
    serde_json::to_vec(req).unwrap()
}

criterion_group!(benches, bench);

/// `TRANSLATE_BENCH_CASE=<case> TRANSLATE_BENCH_ITERS=<n>` runs one case `n` times and exits
/// (no criterion): a fixed amount of work for `valgrind --tool=callgrind`, whose instruction
/// counts do not depend on the machine's load.
fn main() {
    if let (Ok(case), Ok(iters)) = (
        std::env::var("TRANSLATE_BENCH_CASE"),
        std::env::var("TRANSLATE_BENCH_ITERS"),
    ) {
        let iters: usize = iters.parse().unwrap();
        let bytes = request().encode_to_vec();
        let otlp_json = otlp_json_of(&request());
        let options = TranslateOptions::default();
        for _ in 0..iters {
            match case.as_str() {
                "decode" => drop(black_box(
                    ExportTraceServiceRequest::decode(&bytes[..]).unwrap(),
                )),
                "decode_translate" => {
                    let req = ExportTraceServiceRequest::decode(black_box(&bytes[..])).unwrap();
                    black_box(translate(&req.resource_spans, &options));
                }
                "validate" => drop(black_box(validate_request(black_box(&bytes[..])).unwrap())),
                "view_parse" => drop(black_box(
                    RequestView::parse(black_box(&bytes[..])).unwrap(),
                )),
                "translate_encoded" => drop(black_box(translate_encoded(
                    [(black_box(&bytes[..]), SPANS)],
                    &options,
                ))),
                "decode_translate_view" => {
                    let n = validate_request(black_box(&bytes[..])).unwrap();
                    black_box(translate_encoded([(&bytes[..], n)], &options));
                }
                "json_decode" => drop(black_box(
                    decode_request(black_box(&otlp_json[..])).unwrap(),
                )),
                other => panic!("unknown case {other}"),
            }
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
