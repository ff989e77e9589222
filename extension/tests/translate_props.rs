//! Property tests of the translator's invariants:
//! - ids: any 16-byte trace id has the X-Ray form and reads back; span ids are 16 hex;
//! - times: epoch seconds keep microsecond precision and order;
//! - arbitrary span trees, attribute sizes and limits: every document fits the limit and
//!   validates against the schema, and every input span is accounted for exactly once (in one
//!   document, or counted as invalid or too large).
//!
//! Failures found by proptest are kept in `proptest-regressions/` (committed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use otel_xray::xray::ids::{parse_span_id_hex, parse_xray_trace_id, span_id_hex, xray_trace_id};
use otel_xray::xray::json::{nanos_to_seconds, write_epoch_seconds};
use otel_xray::xray::translate::translate_encoded;
use otel_xray::xray::{TranslateOptions, translate};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use prost::Message;

/// Regressions go to `extension/proptest-regressions/translate_props.txt` (committed).
/// `PROPTEST_CASES`, when set, overrides `cases` (for long runs).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        max_shrink_iters: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/translate_props.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn trace_ids_have_the_xray_form_and_read_back(id in any::<[u8; 16]>()) {
        let x = xray_trace_id(&id);
        prop_assert_eq!(x.len(), 35);
        prop_assert!(x.starts_with("1-"));
        prop_assert_eq!(&x[10..11], "-");
        prop_assert!(x[2..10].chars().chain(x[11..].chars()).all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        prop_assert_eq!(parse_xray_trace_id(&x), Some(id));
    }

    #[test]
    fn span_ids_are_16_lowercase_hex_and_read_back(id in any::<[u8; 8]>()) {
        let x = span_id_hex(&id);
        prop_assert_eq!(x.len(), 16);
        prop_assert!(x.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        prop_assert_eq!(parse_span_id_hex(&x), Some(id));
    }

    #[test]
    fn epoch_seconds_keep_microseconds_and_order(a in 0u64..4_000_000_000_000_000_000, b in 0u64..4_000_000_000_000_000_000) {
        let (lo, hi) = (a.min(b), a.max(b));
        let text = |n: u64| { let mut s = Vec::new(); write_epoch_seconds(&mut s, n); String::from_utf8(s).unwrap() };
        let (tlo, thi) = (text(lo), text(hi));
        let plo: f64 = serde_json::from_str(&tlo).unwrap();
        let phi: f64 = serde_json::from_str(&thi).unwrap();
        // Monotonic, and strictly so once the microseconds differ.
        prop_assert!(plo <= phi, "{} > {}", tlo, thi);
        if lo / 1_000 < hi / 1_000 {
            prop_assert!(plo < phi, "{} !< {}", tlo, thi);
        }
        // Within a microsecond (plus the float's own spacing) of the exact value.
        let exact = lo as f64 / 1e9;
        prop_assert!((plo - exact).abs() <= 1e-6 + exact * f64::EPSILON, "{} vs {}", tlo, exact);
        prop_assert_eq!(plo, nanos_to_seconds(lo));
        // Exactly the microseconds, in decimal.
        let (secs, frac) = tlo.split_once('.').unwrap();
        prop_assert_eq!(secs.parse::<u64>().unwrap(), lo / 1_000_000_000);
        let micros: u64 = format!("{frac:0<6}").parse().unwrap();
        prop_assert_eq!(micros, lo % 1_000_000_000 / 1_000);
    }
}

// ---- arbitrary batches ---------------------------------------------------------------------

const KEYS: &[&str] = &[
    "http.method",
    "http.request.method",
    "http.url",
    "url.full",
    "url.scheme",
    "url.path",
    "url.query",
    "server.address",
    "server.port",
    "http.host",
    "http.target",
    "http.status_code",
    "http.response.status_code",
    "http.user_agent",
    "client.address",
    "http.client_ip",
    "net.peer.name",
    "net.peer.port",
    "net.peer.ip",
    "network.peer.address",
    "db.system",
    "db.name",
    "db.statement",
    "db.user",
    "db.connection_string",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "aws.service",
    "aws.region",
    "aws.request_id",
    "aws.queue_url",
    "messaging.url",
    "aws.dynamodb.table_names",
    "aws.table_name",
    "peer.service",
    "aws.remote.service",
    "aws.local.service",
    "enduser.id",
    "http.status_text",
    "aws.account_id",
    "tenant",
    "",
    "otel.resource.x",
    "a.b",
    "a_b",
    "ünï",
    "k\"ey\n",
];

fn text(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::string::string_regex("[a-z0-9 ./:_-]{0,24}").unwrap(),
        2 => proptest::collection::vec(any::<char>(), 0..40).prop_map(|v| v.into_iter().collect()),
        1 => (any::<char>(), 0..max).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
        1 => Just("aws-api".to_owned()),
        1 => Just("postgresql".to_owned()),
        1 => Just("503".to_owned()),
    ]
    .boxed()
}

fn value(max: usize) -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        text(max).prop_map(Value::StringValue),
        any::<i64>().prop_map(Value::IntValue),
        prop_oneof![Just(200i64), Just(404), Just(429), Just(503), 0i64..1000]
            .prop_map(Value::IntValue),
        any::<f64>().prop_map(Value::DoubleValue),
        any::<bool>().prop_map(Value::BoolValue),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::BytesValue),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    leaf.prop_recursive(12, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values }))
            }),
            proptest::collection::vec(("[a-z.]{0,6}", inner), 0..5).prop_map(|kvs| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, v)| KeyValue {
                            key,
                            value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                })),
            }),
            Just(AnyValue { value: None }),
        ]
    })
}

fn attributes(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(
        (prop_oneof![3 => proptest::sample::select(KEYS).prop_map(str::to_owned), 1 => "[a-z._-]{0,12}"], value(max)),
        0..10,
    )
    .prop_map(|kvs| kvs.into_iter().map(|(key, v)| KeyValue { key, value: Some(v), ..Default::default() }).collect())
}

#[derive(Debug, Clone)]
enum ParentChoice {
    None,
    Earlier(usize),
    Any(usize),
    Missing,
    Garbage,
}

#[derive(Debug, Clone)]
struct SpanSpec {
    trace: usize,
    parent: ParentChoice,
    kind: i32,
    name: String,
    start: u64,
    duration: i64,
    attributes: Vec<KeyValue>,
    exception: Option<(String, String)>,
    status: i32,
    links: usize,
    bad_trace_id: bool,
}

fn span_spec(max: usize) -> impl Strategy<Value = SpanSpec> {
    (
        0usize..3,
        prop_oneof![
            2 => Just(ParentChoice::None),
            6 => (0usize..64).prop_map(ParentChoice::Earlier),
            1 => (0usize..64).prop_map(ParentChoice::Any),
            1 => Just(ParentChoice::Missing),
            1 => Just(ParentChoice::Garbage),
        ],
        0i32..7,
        text(400),
        (1_700_000_000_000_000_000u64..1_800_000_000_000_000_000, -1_000_000i64..10_000_000_000),
        attributes(max),
        proptest::option::of((text(64), prop_oneof![
            Just("Traceback (most recent call last):\n  File \"/a.py\", line 1, in f\n    g()\nValueError: x\n".to_owned()),
            Just("java.lang.RuntimeException: x\n\tat a.B.c(B.java:1)\nCaused by: java.io.IOException: y\n\tat d.E.f(E.java:2)\n".to_owned()),
            text(max),
        ])),
        0i32..3,
        0usize..3,
        proptest::bool::weighted(0.05),
    )
        .prop_map(|(trace, parent, kind, name, (start, duration), attributes, exception, status, links, bad_trace_id)| SpanSpec {
            trace,
            parent,
            kind,
            name,
            start,
            duration,
            attributes,
            exception,
            status,
            links,
            bad_trace_id,
        })
}

fn batch(max: usize) -> impl Strategy<Value = (Vec<ResourceSpans>, TranslateOptions)> {
    (
        proptest::collection::vec(span_spec(max), 1..48),
        attributes(max.min(512)),
        any::<bool>(),
        proptest::collection::vec(proptest::sample::select(KEYS).prop_map(str::to_owned), 0..6),
        prop_oneof![3 => Just(64 * 1024usize), 1 => Just(8 * 1024usize), 1 => Just(2048usize), 1 => 300usize..1500],
        0u8..=255,
        proptest::bool::weighted(0.15),
    )
        .prop_map(|(mut specs, resource_attrs, index_all, indexed, max_document_bytes, salt, chain)| {
            if chain {
                // One deep chain: every span the child of the one before, in one trace.
                for (i, s) in specs.iter_mut().enumerate() {
                    s.parent = if i == 0 { ParentChoice::None } else { ParentChoice::Earlier(i - 1) };
                    s.trace = 0;
                    s.kind = 1;
                }
            }
            let traces: Vec<Vec<u8>> = (0..3u8).map(|t| vec![salt, t + 1, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 9]).collect();
            let id_of = |i: usize| (i as u64 + 1).to_be_bytes().to_vec();
            let spans: Vec<Span> = specs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let parent_span_id = match s.parent {
                        ParentChoice::None => Vec::new(),
                        ParentChoice::Earlier(p) if i > 0 => id_of(p % i),
                        ParentChoice::Earlier(_) => Vec::new(),
                        ParentChoice::Any(p) => id_of(p % specs.len()),
                        ParentChoice::Missing => vec![0xee; 8],
                        ParentChoice::Garbage => vec![1, 2, 3],
                    };
                    let trace = if s.bad_trace_id { vec![1; 15] } else { traces[s.trace].clone() };
                    let parent_trace = match s.parent {
                        // A parent in the same trace, so that trees form.
                        ParentChoice::Earlier(p) if i > 0 => {
                            let pt = specs[p % i].trace;
                            if specs[p % i].bad_trace_id { trace } else { traces[pt].clone() }
                        }
                        _ => trace,
                    };
                    Span {
                        trace_id: parent_trace,
                        span_id: id_of(i),
                        parent_span_id,
                        name: s.name.clone(),
                        kind: s.kind,
                        start_time_unix_nano: s.start,
                        end_time_unix_nano: s.start.saturating_add_signed(s.duration),
                        attributes: s.attributes.clone(),
                        events: s
                            .exception
                            .iter()
                            .map(|(msg, stack)| span::Event {
                                time_unix_nano: s.start,
                                name: "exception".into(),
                                attributes: vec![
                                    KeyValue { key: "exception.type".into(), value: Some(AnyValue { value: Some(Value::StringValue("E".into())) }), ..Default::default() },
                                    KeyValue { key: "exception.message".into(), value: Some(AnyValue { value: Some(Value::StringValue(msg.clone())) }), ..Default::default() },
                                    KeyValue { key: "exception.stacktrace".into(), value: Some(AnyValue { value: Some(Value::StringValue(stack.clone())) }), ..Default::default() },
                                ],
                                dropped_attributes_count: 0,
                            })
                            .collect(),
                        links: (0..s.links)
                            .map(|l| span::Link { trace_id: traces[l % 3].clone(), span_id: id_of(l + 100), attributes: s.attributes.iter().take(2).cloned().collect(), ..Default::default() })
                            .collect(),
                        status: Some(Status { code: s.status, message: if s.status == 2 { s.name.clone() } else { String::new() } }),
                        ..Default::default()
                    }
                })
                .collect();
            // Two resources, spans shared out between them.
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for (i, span) in spans.into_iter().enumerate() {
                if i % 3 == 2 { b.push(span) } else { a.push(span) }
            }
            let mut lambda = resource_attrs.clone();
            lambda.push(KeyValue { key: "cloud.platform".into(), value: Some(AnyValue { value: Some(Value::StringValue("aws_lambda".into())) }), ..Default::default() });
            lambda.push(KeyValue { key: "telemetry.sdk.language".into(), value: Some(AnyValue { value: Some(Value::StringValue("python".into())) }), ..Default::default() });
            let rs = |attrs: Vec<KeyValue>, spans: Vec<Span>| ResourceSpans {
                resource: Some(Resource { attributes: attrs, ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                schema_url: String::new(),
            };
            let options = TranslateOptions { indexed_attributes: indexed, index_all_attributes: index_all, max_document_bytes };
            (vec![rs(resource_attrs, a), rs(lambda, b)], options)
        })
}

/// Every (sub)segment in a document: (id, trace id of its document, parent id if independent).
fn collect_ids(node: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(id) = node.get("id").and_then(|v| v.as_str()) {
        out.push(id.to_owned());
    }
    for sub in node
        .get("subsegments")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        collect_ids(sub, out);
    }
}

fn depth(node: &serde_json::Value) -> usize {
    node.get("subsegments")
        .and_then(|s| s.as_array())
        .map_or(0, |subs| 1 + subs.iter().map(depth).max().unwrap_or(0))
}

proptest! {
    #![proptest_config(config(160))]

    #[test]
    fn every_span_lands_once_in_a_valid_document_within_the_limit((resource_spans, options) in batch(6000)) {
        let t = translate(&resource_spans, &options);
        let spans: Vec<&Span> = resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();

        let mut seen: Vec<String> = Vec::new();
        let by_id: HashMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), *s)).collect();
        for doc in &t.documents {
            prop_assert!(doc.json.len() <= options.max_document_bytes, "{} > {}", doc.json.len(), options.max_document_bytes);
            common::assert_valid_xray_document(&doc.json);
            let v: serde_json::Value = serde_json::from_str(&doc.json).unwrap();
            prop_assert!(depth(&v) <= otel_xray::xray::translate::MAX_EMBED_DEPTH);
            let mut ids = Vec::new();
            collect_ids(&v, &mut ids);
            prop_assert_eq!(ids.len(), doc.spans);
            let top = by_id[&doc.id];
            prop_assert_eq!(&doc.trace_id, &xray_trace_id(&top.trace_id.clone().try_into().unwrap()));
            prop_assert_eq!(v["trace_id"].as_str(), Some(doc.trace_id.as_str()));
            if v.get("type").is_some() {
                let parent = hex(&top.parent_span_id);
                prop_assert_eq!(v["parent_id"].as_str(), Some(parent.as_str()));
            }
            seen.extend(ids);
        }
        let output_spans: usize = t.documents.iter().map(|d| d.spans).sum();
        prop_assert_eq!(output_spans + t.invalid_spans + t.too_large_spans, spans.len());
        prop_assert_eq!(seen.len(), output_spans);
        let unique: HashSet<&String> = seen.iter().collect();
        prop_assert_eq!(unique.len(), seen.len(), "a span appears twice");
        let invalid = spans.iter().filter(|s| s.trace_id.len() != 16 || !(s.parent_span_id.is_empty() || s.parent_span_id.len() == 8)).count();
        prop_assert_eq!(t.invalid_spans, invalid);
        for s in &spans {
            let valid = s.trace_id.len() == 16 && (s.parent_span_id.is_empty() || s.parent_span_id.len() == 8);
            if !valid {
                prop_assert!(!unique.contains(&hex(&s.span_id)), "an invalid span was translated");
            }
        }
        if options.max_document_bytes >= 8 * 1024 {
            prop_assert_eq!(t.too_large_spans, 0, "spans always fit in 8 KiB once trimmed");
        }
    }
}

/// `batch`'s resource spans cut into chunks of spans (each its own `ResourceSpans` with the same
/// resource and scope), and the chunks into encoded requests: a trace's spans end up spread over
/// several requests.
fn split(resource_spans: &[ResourceSpans], cuts: &[usize]) -> (Vec<ResourceSpans>, Vec<Vec<u8>>) {
    let mut chunks = Vec::new();
    for rs in resource_spans {
        for ss in &rs.scope_spans {
            let mut spans = ss.spans.clone();
            let mut parts = Vec::new();
            for &c in cuts {
                if spans.is_empty() {
                    break;
                }
                let rest = spans.split_off(c % (spans.len() + 1));
                parts.push(std::mem::replace(&mut spans, rest));
            }
            parts.push(spans);
            for part in parts {
                chunks.push(ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: part,
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: rs.schema_url.clone(),
                });
            }
        }
    }
    let requests = chunks
        .chunks(2)
        .map(|c| {
            ExportTraceServiceRequest {
                resource_spans: c.to_vec(),
            }
            .encode_to_vec()
        })
        .collect();
    (chunks, requests)
}

proptest! {
    #![proptest_config(config(160))]

    #[test]
    fn encoded_requests_translate_like_their_spans_in_one_batch(
        (resource_spans, options) in batch(3000),
        cuts in proptest::collection::vec(any::<usize>(), 0..5),
    ) {
        let (chunks, requests) = split(&resource_spans, &cuts);
        let counts: Vec<usize> = requests.iter().map(|r| otel_xray::otlp_wire::validate_request(r).unwrap()).collect();
        let encoded = translate_encoded(requests.iter().map(Vec::as_slice).zip(counts.iter().copied()), &options);
        let owned = translate(&chunks, &options);
        prop_assert_eq!(&encoded, &owned);
        // Chunked or not, the same documents.
        prop_assert_eq!(&encoded, &translate(&resource_spans, &options));
        // A request that does not parse counts as invalid spans, the others still translate.
        let mut broken = requests.clone();
        broken.push(vec![0x0a, 0x05, 0x01]);
        let t = translate_encoded(broken.iter().map(Vec::as_slice).zip(counts.iter().copied().chain([7])), &options);
        prop_assert_eq!(t.invalid_spans, encoded.invalid_spans + 7);
        prop_assert_eq!(t.documents, encoded.documents);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn a_span_too_large_for_a_tiny_limit_is_counted_not_emitted() {
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "x".repeat(150),
        kind: 2,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Default::default()
    };
    let rs = vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![span],
            ..Default::default()
        }],
        ..Default::default()
    }];
    let t = translate(
        &rs,
        &TranslateOptions {
            max_document_bytes: 100,
            ..TranslateOptions::default()
        },
    );
    assert_eq!((t.documents.len(), t.too_large_spans), (0, 1));
    let t = translate(&rs, &TranslateOptions::default());
    assert_eq!((t.documents.len(), t.too_large_spans), (1, 0));
    common::assert_valid_xray_document(&t.documents[0].json);
}
