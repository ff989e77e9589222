//! `event_context::extract`, the Runtime API proxy's read of each event on the runtime's path:
//! a ~1 KB API Gateway REST event with `traceparent` and `baggage` headers, the same event with a
//! ~256 KB and a ~6 MB `body` (a JSON document as API Gateway passes it, so full of `\"`
//! escapes; 6 MB is Lambda's largest synchronous payload), and an SQS batch of 10 messages
//! (each with an `AWSTraceHeader` or a `traceparent` message attribute, a 1 KB body).
//!
//! `cargo bench -p otel-xray-extension --bench event_context`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::hint::black_box;

/// The allocator the `otel-xray` binary uses (see its main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use otel_xray::lambda::event_context::{Trigger, extract};
use serde_json::{Value, json};

const LAMBDA_HEADER: &str =
    "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A JSON document of about `bytes` bytes once escaped as a JSON string (each `"` is `\"`).
fn json_body(bytes: usize) -> String {
    let mut body = String::from("{\"items\":[");
    let mut i = 0;
    let mut escaped = body.len() + 2;
    while escaped < bytes {
        if i > 0 {
            body.push(',');
            escaped += 1;
        }
        let item = format!(
            "{{\"id\":{i},\"sku\":\"SKU-{i:08}\",\"name\":\"item number {i}\",\"qty\":{},\"tags\":[\"a\",\"b\"]}}",
            i % 7
        );
        escaped += item.len() + item.matches('"').count();
        body.push_str(&item);
        i += 1;
    }
    body.push_str("]}");
    body
}

/// An API Gateway REST event (the shape of `aws lambda` docs' sample) with `body`.
fn api_gateway(body: &str) -> Vec<u8> {
    let headers = json!({
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate, br",
        "Content-Type": "application/json",
        "Host": "abcdef1234.execute-api.eu-west-1.amazonaws.com",
        "User-Agent": "curl/8.5.0",
        "X-Amzn-Trace-Id": "Root=1-67891233-abcdef012345678912345678",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Proto": "https",
        "traceparent": TP,
        "tracestate": "vendor=abc",
        "baggage": "user.id=alice,tenant=acme%20corp",
    });
    let multi: serde_json::Map<String, Value> = headers
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), json!([v])))
        .collect();
    let event = json!({
        "resource": "/orders",
        "path": "/orders",
        "httpMethod": "POST",
        "headers": headers,
        "multiValueHeaders": multi,
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "httpMethod": "POST",
            "path": "/prod/orders",
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTimeEpoch": 1_765_000_000_000_u64,
            "resourcePath": "/orders",
            "stage": "prod",
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"}
        },
        "body": body,
        "isBase64Encoded": false
    });
    serde_json::to_vec(&event).unwrap()
}

fn sqs_batch(messages: usize) -> Vec<u8> {
    let records: Vec<Value> = (0..messages)
        .map(|i| {
            let mut r = json!({
                "messageId": format!("059f36b4-87a3-44ab-83d2-66197{i:07}"),
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
                "body": json_body(1024),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1545082649183",
                    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
                    "ApproximateFirstReceiveTimestamp": "1545082649185"
                },
                "messageAttributes": {},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:orders",
                "awsRegion": "eu-west-1"
            });
            if i % 2 == 0 {
                r["attributes"]["AWSTraceHeader"] = json!(format!(
                    "Root=1-5759e988-bd862e3fe1be46a9942727{i:02};Parent=53995c3f42cd8ad8;Sampled=1"
                ));
            } else {
                r["messageAttributes"]["traceparent"] =
                    json!({"stringValue": TP, "dataType": "String"});
            }
            r
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).unwrap()
}

fn bench(c: &mut Criterion) {
    let cases = [
        ("api_gateway_1k", api_gateway("{\"order\":42}")),
        (
            "api_gateway_256k",
            api_gateway(&json_body(256 * 1024 - 3072)),
        ),
        (
            "api_gateway_6m",
            api_gateway(&json_body(6 * 1024 * 1024 - 3072)),
        ),
        ("sqs_batch_10", sqs_batch(10)),
    ];
    let mut g = c.benchmark_group("event_context");
    for (name, event) in &cases {
        // What is measured reads the contexts it should.
        let ex = extract(event, Some(LAMBDA_HEADER));
        if name.starts_with("sqs") {
            assert_eq!(
                (ex.trigger, ex.message_count, ex.links.len()),
                (Trigger::PubSub, 10, 10)
            );
        } else {
            assert_eq!(ex.trigger, Trigger::Http);
            assert!(ex.traceparent.is_some() && ex.xray.is_some());
            assert_eq!(ex.baggage.len(), 2);
        }
        eprintln!("{name}: {} bytes", event.len());
        g.throughput(Throughput::Bytes(event.len() as u64));
        g.bench_function(*name, |b| {
            b.iter(|| extract(black_box(event), Some(LAMBDA_HEADER)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
