//! Spans from the real Rust OpenTelemetry SDK (`opentelemetry-otlp` 0.33) arrive intact in the
//! buffer, over every protocol an SDK can pick: HTTP/protobuf, HTTP/JSON, gzip, gRPC (tonic).
//!
//! The receiver runs on its own current-thread runtime (as in the extension); the SDK exports
//! synchronously from this test's thread (simple span processor) with a separate multi-thread
//! runtime driving its HTTP or gRPC client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod receiver_support;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    Compression, Protocol, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use receiver_support::Harness;

const MB: usize = 1024 * 1024;

/// Exports a SERVER span with a CLIENT child (attributes, an exception event, error status)
/// through `make_exporter`, then checks what reached the buffer.
fn round_trip(make_exporter: impl FnOnce(&Harness) -> SpanExporter) {
    let h = Harness::start(4 * MB, 1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (parent_ctx, child_ctx) = {
        let _entered = rt.enter();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(make_exporter(&h))
            .with_resource(
                Resource::builder_empty()
                    .with_service_name("rust-sdk-test")
                    .build(),
            )
            .build();
        let tracer = provider.tracer("receiver-sdk-test");
        let parent = tracer
            .span_builder("GET /orders")
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("http.response.status_code", 200_i64),
                KeyValue::new("ratio", 0.5),
                KeyValue::new("cold", true),
            ])
            .start(&tracer);
        let parent_cx = Context::current_with_span(parent);
        let mut child = tracer
            .span_builder("SELECT orders")
            .with_kind(SpanKind::Client)
            .start_with_context(&tracer, &parent_cx);
        child.add_event(
            "exception",
            vec![
                KeyValue::new("exception.type", "DbError"),
                KeyValue::new("exception.message", "db down"),
            ],
        );
        child.set_status(Status::error("db down"));
        let child_ctx: SpanContext = child.span_context().clone();
        child.end();
        let parent_ctx = parent_cx.span().span_context().clone();
        parent_cx.span().end();
        provider.shutdown().unwrap();
        (parent_ctx, child_ctx)
    };

    let batch = rt.block_on(h.drain());
    assert_eq!(batch.spans, 2, "{batch:?}");
    let decoded = batch.decode().unwrap();
    let spans: Vec<(&Span, _)> = decoded
        .iter()
        .flat_map(|rs| rs.scope_spans.iter().map(move |ss| (rs, ss)))
        .flat_map(|(rs, ss)| ss.spans.iter().map(move |s| (s, (rs, ss))))
        .collect();
    let find = |name: &str| {
        spans
            .iter()
            .find(|(s, _)| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
    };
    let (server, (resource_spans, scope_spans)) = find("GET /orders");
    let (client, _) = find("SELECT orders");

    assert_eq!(server.trace_id, parent_ctx.trace_id().to_bytes());
    assert_eq!(server.span_id, parent_ctx.span_id().to_bytes());
    assert!(server.parent_span_id.is_empty());
    assert_eq!(server.kind, 2);
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    assert!(server.start_time_unix_nano > 1_600_000_000_000_000_000);
    let attr = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone())
    };
    assert_eq!(
        attr(server, "http.request.method"),
        Some(Value::StringValue("GET".into()))
    );
    assert_eq!(
        attr(server, "http.response.status_code"),
        Some(Value::IntValue(200))
    );
    assert_eq!(attr(server, "ratio"), Some(Value::DoubleValue(0.5)));
    assert_eq!(attr(server, "cold"), Some(Value::BoolValue(true)));

    assert_eq!(client.trace_id, child_ctx.trace_id().to_bytes());
    assert_eq!(client.span_id, child_ctx.span_id().to_bytes());
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.kind, 3);
    let status = client.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (2, "db down"));
    assert_eq!(client.events.len(), 1);
    assert_eq!(client.events[0].name, "exception");

    let service = resource_spans
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(service, Some(Value::StringValue("rust-sdk-test".into())));
    assert_eq!(
        scope_spans.scope.as_ref().unwrap().name,
        "receiver-sdk-test"
    );
    assert_eq!(h.stats.snapshot().received, 2);
}

#[test]
fn rust_sdk_http_protobuf() {
    round_trip(|h| {
        SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(h.http_url())
            .build()
            .unwrap()
    });
}

#[test]
fn rust_sdk_http_protobuf_gzip() {
    round_trip(|h| {
        SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_compression(Compression::Gzip)
            .with_endpoint(h.http_url())
            .build()
            .unwrap()
    });
}

#[test]
fn rust_sdk_http_json() {
    round_trip(|h| {
        SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(h.http_url())
            .build()
            .unwrap()
    });
}

#[test]
fn rust_sdk_grpc_tonic() {
    round_trip(|h| {
        SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://{}", h.grpc))
            .build()
            .unwrap()
    });
}

#[test]
fn rust_sdk_grpc_tonic_gzip() {
    round_trip(|h| {
        SpanExporter::builder()
            .with_tonic()
            .with_compression(Compression::Gzip)
            .with_endpoint(format!("http://{}", h.grpc))
            .build()
            .unwrap()
    });
}
