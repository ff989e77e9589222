//! A sample Lambda function in Rust, instrumented with the OpenTelemetry SDK.
//!
//! It continues the trace Lambda hands the runtime (`Lambda-Runtime-Trace-Id`, X-Ray format),
//! makes a SERVER span for the invocation with a few children (an HTTP call, a DynamoDB call, some
//! work with an attribute worth indexing) and exports them over OTLP/HTTP to whatever
//! `OTEL_EXPORTER_OTLP_ENDPOINT` says — with the otel-xray layer, the extension on 127.0.0.1:4318.
//! The provider is flushed before the response is returned, so no span waits in the function
//! when Lambda freezes the sandbox.
//!
//! Event fields it understands: `{"order_id": "...", "fail": bool, "items": n}`; for an HTTP
//! event (API Gateway, ALB, function URL) it reads the W3C baggage of `headers`.
//!
//! The response reports what the function saw (`seen`): the trace header, the context its SERVER
//! span continued, the baggage and `AWS_LAMBDA_RUNTIME_API`, for the end-to-end tests.

use std::collections::HashMap;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().build())
        .build();
    let handler_provider = provider.clone();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let provider = handler_provider.clone();
        async move { handle(event, provider).await }
    }))
    .await?;
    let _ = provider.shutdown();
    Ok(())
}

async fn handle(event: LambdaEvent<Value>, provider: SdkTracerProvider) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    let tracer = provider.tracer("rust-function");

    // Continue the trace Lambda gave us.
    let mut carrier = HashMap::new();
    if let Some(header) = ctx.xray_trace_id.clone() {
        carrier.insert("x-amzn-trace-id".to_owned(), header);
    }
    let parent = opentelemetry_aws::trace::XrayPropagator::default()
        .extract_with_context(&Context::new(), &carrier);

    let parent_span = parent.span().span_context().clone();

    // Baggage travels in the caller's HTTP headers, which only the event carries.
    let headers: HashMap<String, String> = payload
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.to_ascii_lowercase(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let baggage_cx = opentelemetry_sdk::propagation::BaggagePropagator::new()
        .extract_with_context(&Context::new(), &headers);
    let baggage: serde_json::Map<String, Value> = baggage_cx
        .baggage()
        .iter()
        .map(|(k, (v, _))| (k.to_string(), Value::from(v.to_string())))
        .collect();

    let order_id = payload
        .get("order_id")
        .and_then(Value::as_str)
        .unwrap_or("o-1")
        .to_owned();
    let items = payload.get("items").and_then(Value::as_u64).unwrap_or(3);
    let fail = payload
        .get("fail")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut server = tracer
        .span_builder("handle-order")
        .with_kind(SpanKind::Server)
        .with_attributes([
            KeyValue::new("faas.invocation_id", ctx.request_id.clone()),
            KeyValue::new("faas.trigger", "other"),
            KeyValue::new("order.id", order_id.clone()),
        ])
        .start_with_context(&tracer, &parent);
    let cx = parent.with_remote_span_context(server.span_context().clone());

    {
        let mut span = tracer
            .span_builder("GET")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new(
                    "url.full",
                    format!("https://inventory.example.com/items/{order_id}"),
                ),
                KeyValue::new("server.address", "inventory.example.com"),
                KeyValue::new("http.response.status_code", 200),
            ])
            .start_with_context(&tracer, &cx);
        // Stand-in for the call's latency, so the demo's tree shows durations.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        span.end();
    }
    {
        let mut span = tracer
            .span_builder("DynamoDB.PutItem")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("rpc.system", "aws-api"),
                KeyValue::new("rpc.service", "DynamoDB"),
                KeyValue::new("rpc.method", "PutItem"),
                KeyValue::new("aws.region", "us-east-1"),
                KeyValue::new("aws.dynamodb.table_names", "orders"),
            ])
            .start_with_context(&tracer, &cx);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        span.end();
    }
    {
        let mut span = tracer
            .span_builder("compute-total")
            .with_kind(SpanKind::Internal)
            .with_attributes([
                KeyValue::new("order.id", order_id.clone()),
                KeyValue::new("order.items", items as i64),
            ])
            .start_with_context(&tracer, &cx);
        if fail {
            span.add_event(
                "exception",
                vec![
                    KeyValue::new("exception.type", "OrderError"),
                    KeyValue::new("exception.message", "payment declined"),
                ],
            );
            span.set_status(Status::error("payment declined"));
        }
        span.end();
    }
    if fail {
        server.set_status(Status::error("payment declined"));
    }
    let server_span = server.span_context().clone();
    server.end();

    // Export before returning: Lambda may freeze the sandbox right after the response.
    let flusher = provider.clone();
    let _ = tokio::task::spawn_blocking(move || flusher.force_flush()).await;

    if fail {
        return Err("payment declined".into());
    }
    let seen = json!({
        "trace_header": ctx.xray_trace_id,
        "trace_id": server_span.trace_id().to_string(),
        "span_id": server_span.span_id().to_string(),
        "parent_id": parent_span.is_valid().then(|| parent_span.span_id().to_string()),
        "sampled": server_span.is_sampled(),
        "baggage": baggage,
        "runtime_api": std::env::var("AWS_LAMBDA_RUNTIME_API").ok(),
    });
    Ok(json!({ "order_id": order_id, "items": items, "status": "accepted", "seen": seen }))
}
