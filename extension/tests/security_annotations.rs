//! Attributes (and baggage an SDK copies into attributes) never become X-Ray annotations, which
//! X-Ray indexes and shows in its console's filters, unless their key is allow-listed
//! (`OTEL_XRAY_INDEXED_ATTRIBUTES`); with no allow-list and `OTEL_XRAY_INDEX_ALL_ATTRIBUTES`
//! unset, no document has annotations at all. A property test over arbitrary span trees,
//! attribute keys and allow-lists; `otel_xray::fuzzing::check_translation` also checks the
//! schema's key rules and the accounting of every span.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_xray::fuzzing::check_translation;
use otel_xray::xray::{TranslateOptions, translate};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Keys an application or a baggage span processor commonly sets, plus the allow-listable ones.
const KEYS: &[&str] = &[
    "baggage.user_id",
    "user.email",
    "enduser.id",
    "session.token",
    "http.request.header.authorization",
    "order.id",
    "tenant",
    "db.statement",
    "aws.request_id",
    "service.name",
];

fn kv(key: String, value: String) -> KeyValue {
    KeyValue {
        key,
        value: Some(AnyValue {
            value: Some(Value::StringValue(value)),
        }),
        ..KeyValue::default()
    }
}

fn request(
    spans: &[(u8, Vec<(usize, String)>)],
    resource: &[(usize, String)],
) -> ExportTraceServiceRequest {
    let trace_id = vec![7u8; 16];
    let spans = spans
        .iter()
        .enumerate()
        .map(|(i, (parent, attrs))| Span {
            trace_id: trace_id.clone(),
            span_id: ((i as u64) + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                Vec::new()
            } else {
                (u64::from(*parent) % (i as u64) + 1).to_be_bytes().to_vec()
            },
            name: format!("span-{i}"),
            kind: if i == 0 { 2 } else { 1 },
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            attributes: attrs
                .iter()
                .map(|(k, v)| kv(KEYS[k % KEYS.len()].to_owned(), format!("secret-{v}")))
                .collect(),
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource
                    .iter()
                    .map(|(k, v)| kv(KEYS[k % KEYS.len()].to_owned(), format!("secret-{v}")))
                    .collect(),
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn annotation_values(doc: &serde_json::Value, out: &mut Vec<String>) {
    if let Some(map) = doc.get("annotations").and_then(|a| a.as_object()) {
        out.extend(map.values().map(|v| v.to_string()));
    }
    for sub in doc
        .get("subsegments")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        annotation_values(sub, out);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/security_annotations.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn only_allow_listed_attributes_become_annotations(
        spans in prop::collection::vec(
            (any::<u8>(), prop::collection::vec((0..KEYS.len(), "[a-z]{1,8}"), 0..6)),
            1..8,
        ),
        resource in prop::collection::vec((0..KEYS.len(), "[a-z]{1,8}"), 0..4),
        allowed in prop::collection::vec(0..KEYS.len(), 0..3),
        resource_allowed in prop::collection::vec(0..KEYS.len(), 0..2),
    ) {
        let request = request(&spans, &resource);
        let mut indexed: Vec<String> = allowed.iter().map(|&k| KEYS[k].to_owned()).collect();
        indexed.extend(resource_allowed.iter().map(|&k| format!("otel.resource.{}", KEYS[k])));
        let options = TranslateOptions { indexed_attributes: indexed.clone(), ..TranslateOptions::default() };
        // Keys: only allow-listed ones (sanitised), checked inside.
        check_translation(&request, &options);

        // Values: every annotation value belongs to an allow-listed attribute.
        let mut permitted: Vec<String> = Vec::new();
        for (_, attrs) in &spans {
            for (k, v) in attrs {
                if allowed.iter().any(|a| KEYS[*a] == KEYS[k % KEYS.len()]) {
                    permitted.push(format!("\"secret-{v}\""));
                }
            }
        }
        for (k, v) in &resource {
            if resource_allowed.iter().any(|a| KEYS[*a] == KEYS[k % KEYS.len()]) {
                permitted.push(format!("\"secret-{v}\""));
            }
        }
        for doc in translate(&request.resource_spans, &options).documents {
            let value: serde_json::Value = serde_json::from_str(&doc.json).unwrap();
            let mut values = Vec::new();
            annotation_values(&value, &mut values);
            for v in values {
                prop_assert!(permitted.contains(&v), "annotation value {} not allow-listed ({:?})", v, indexed);
            }
            if indexed.is_empty() {
                prop_assert!(!doc.json.contains("\"annotations\""), "{}", doc.json);
            }
        }
    }
}
