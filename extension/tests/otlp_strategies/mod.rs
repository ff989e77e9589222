//! Arbitrary OTLP trace export requests (the generated types), shared by the property tests that
//! compare our readers with prost (`otlp_wire_props.rs`) and with the serde types
//! (`otlp_json_props.rs`). Every strategy that reaches a double takes the strategy for doubles.
#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use proptest::prelude::*;

/// The strategy for `doubleValue`s.
pub type Double = fn() -> BoxedStrategy<f64>;

/// Any `f64`, NaN payloads and infinities included.
pub fn any_double() -> BoxedStrategy<f64> {
    any::<f64>().boxed()
}

pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z.]{0,8}",
        1 => proptest::collection::vec(any::<char>(), 0..6).prop_map(|v| v.into_iter().collect()),
    ]
    .boxed()
}

pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 8),
        proptest::collection::vec(any::<u8>(), 16),
        proptest::collection::vec(any::<u8>(), 0..20),
    ]
}

pub fn value(double: Double) -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        text().prop_map(|s| Some(Value::StringValue(s))),
        any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
        double().prop_map(|d| Some(Value::DoubleValue(d))),
        bytes().prop_map(|b| Some(Value::BytesValue(b))),
        any::<i32>().prop_map(|i| Some(Value::StringValueStrindex(i))),
        Just(None),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values }))
            }),
            proptest::collection::vec(key_value_with(inner), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList { values }))
            }),
        ]
    })
}

pub fn key_value_with(v: impl Strategy<Value = AnyValue>) -> impl Strategy<Value = KeyValue> {
    (text(), proptest::option::of(v), any::<i32>()).prop_map(|(key, value, key_strindex)| {
        KeyValue {
            key,
            value,
            key_strindex,
        }
    })
}

pub fn attributes(double: Double) -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(key_value_with(value(double)), 0..4)
}

pub fn span(double: Double) -> impl Strategy<Value = Span> {
    (
        (bytes(), bytes(), text(), bytes(), any::<u32>(), text()),
        (
            any::<i32>(),
            any::<u64>(),
            any::<u64>(),
            attributes(double),
            any::<u32>(),
        ),
        (
            proptest::collection::vec(
                (any::<u64>(), text(), attributes(double), any::<u32>()),
                0..3,
            ),
            any::<u32>(),
            proptest::collection::vec(
                (
                    bytes(),
                    bytes(),
                    text(),
                    attributes(double),
                    any::<u32>(),
                    any::<u32>(),
                ),
                0..3,
            ),
            any::<u32>(),
            proptest::option::of((text(), any::<i32>())),
        ),
    )
        .prop_map(
            |(
                (trace_id, span_id, trace_state, parent_span_id, flags, name),
                (kind, start, end, attributes, dropped_attributes_count),
                (events, dropped_events_count, links, dropped_links_count, status),
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id,
                flags,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count,
                events: events
                    .into_iter()
                    .map(|(time_unix_nano, name, attributes, d)| span::Event {
                        time_unix_nano,
                        name,
                        attributes,
                        dropped_attributes_count: d,
                    })
                    .collect(),
                dropped_events_count,
                links: links
                    .into_iter()
                    .map(
                        |(trace_id, span_id, trace_state, attributes, d, flags)| span::Link {
                            trace_id,
                            span_id,
                            trace_state,
                            attributes,
                            dropped_attributes_count: d,
                            flags,
                        },
                    )
                    .collect(),
                dropped_links_count,
                status: status.map(|(message, code)| Status { message, code }),
            },
        )
}

pub fn request(double: Double) -> impl Strategy<Value = ExportTraceServiceRequest> {
    let entity = (text(), text(), proptest::collection::vec(text(), 0..3)).prop_map(
        |(schema_url, r#type, id_keys)| EntityRef {
            schema_url,
            r#type,
            description_keys: id_keys.iter().rev().cloned().collect(),
            id_keys,
        },
    );
    let resource = (
        attributes(double),
        any::<u32>(),
        proptest::collection::vec(entity, 0..2),
    )
        .prop_map(
            |(attributes, dropped_attributes_count, entity_refs)| Resource {
                attributes,
                dropped_attributes_count,
                entity_refs,
            },
        );
    let scope = (text(), text(), attributes(double), any::<u32>()).prop_map(
        |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count,
        },
    );
    let scope_spans = (
        proptest::option::of(scope),
        proptest::collection::vec(span(double), 0..4),
        text(),
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        });
    let resource_spans = (
        proptest::option::of(resource),
        proptest::collection::vec(scope_spans, 0..3),
        text(),
    )
        .prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        });
    proptest::collection::vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}
