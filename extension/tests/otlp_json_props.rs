//! Differential tests of the hand-written OTLP/JSON decoder (`receiver/otlp_json.rs`) against
//! `opentelemetry-proto`'s serde types (the `with-serde` feature, enabled for tests only):
//! - arbitrary requests serialised by the serde types decode to the same request, also with the
//!   variations the protobuf JSON mapping allows (snake_case keys, 64-bit integers as numbers,
//!   32-bit integers as strings, enum names, upper-case hex, URL-safe unpadded base64, doubles
//!   as strings, non-finite doubles as "NaN"/"Infinity"/"-Infinity");
//! - those documents with a node replaced by another JSON value: whatever the previous decoder
//!   (serde types plus a normalising second pass, kept below as `old_decode`) accepted, the new
//!   one accepts with the same result, and it never panics.
//!
//! The request strategy is `otlp_strategies/mod.rs` (shared with `otlp_wire_props.rs`), with
//! doubles drawn so that non-finite values are marked for the JSON variants (serde_json writes
//! them as `null`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod otlp_strategies;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use otel_xray::receiver::decode::{Format, decode_request};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use prost::Message;
use serde_json::Value as Json;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/otlp_json_props.txt",
        ))),
        ..ProptestConfig::default()
    }
}

// ---- the request strategy: otlp_strategies/mod.rs, with doubles from `double` ----------------

/// Stand-ins for the non-finite doubles in the serialised document (serde_json writes NaN and the
/// infinities as `null`); [`restore_non_finite`] turns them into the JSON mapping's strings.
const NAN_MARK: f64 = 1.234_567_890_123e-300;
const INF_MARK: f64 = 2.234_567_890_123e-300;
const NEG_INF_MARK: f64 = 3.234_567_890_123e-300;

fn double() -> BoxedStrategy<f64> {
    prop_oneof![
        8 => any::<f64>().prop_filter("not a marker", |d| ![NAN_MARK, INF_MARK, NEG_INF_MARK].contains(d)),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
    ]
    .boxed()
}

// ---- helpers ---------------------------------------------------------------------------------

/// Applies `f` to every `AnyValue` of the request (attributes of every kind, nested values).
fn for_each_value(req: &mut ExportTraceServiceRequest, f: &mut dyn FnMut(&mut AnyValue)) {
    fn kvs(list: &mut [KeyValue], f: &mut dyn FnMut(&mut AnyValue)) {
        for kv in list {
            if let Some(v) = kv.value.as_mut() {
                any(v, f);
            }
        }
    }
    fn any(v: &mut AnyValue, f: &mut dyn FnMut(&mut AnyValue)) {
        f(v);
        match v.value.as_mut() {
            Some(Value::ArrayValue(a)) => a.values.iter_mut().for_each(|x| any(x, f)),
            Some(Value::KvlistValue(l)) => kvs(&mut l.values, f),
            _ => {}
        }
    }
    for rs in &mut req.resource_spans {
        if let Some(r) = rs.resource.as_mut() {
            kvs(&mut r.attributes, f);
        }
        for ss in &mut rs.scope_spans {
            if let Some(s) = ss.scope.as_mut() {
                kvs(&mut s.attributes, f);
            }
            for sp in &mut ss.spans {
                kvs(&mut sp.attributes, f);
                sp.events.iter_mut().for_each(|e| kvs(&mut e.attributes, f));
                sp.links.iter_mut().for_each(|l| kvs(&mut l.attributes, f));
            }
        }
    }
}

/// The request as the serde types write it, non-finite doubles replaced by their markers.
fn serde_json_of(req: &ExportTraceServiceRequest) -> Json {
    let mut marked = req.clone();
    for_each_value(&mut marked, &mut |v| {
        if let Some(Value::DoubleValue(d)) = v.value.as_mut() {
            if d.is_nan() {
                *d = NAN_MARK;
            } else if *d == f64::INFINITY {
                *d = INF_MARK;
            } else if *d == f64::NEG_INFINITY {
                *d = NEG_INF_MARK;
            }
        }
    });
    let bytes = serde_json::to_vec(&marked).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Visits every object member (key, value), depth first, parents before children.
fn walk(v: &mut Json, f: &mut dyn FnMut(&str, &mut Json)) {
    match v {
        Json::Object(map) => {
            for (k, x) in map.iter_mut() {
                f(k, x);
                walk(x, f);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(|x| walk(x, f)),
        _ => {}
    }
}

fn restore_non_finite(doc: &mut Json) {
    // serde_json's default float parsing may be off by an ulp: the markers are told apart by
    // magnitude.
    let is = |x: Option<f64>, mark: f64| x.is_some_and(|x| (x / mark - 1.0).abs() < 1e-9);
    walk(doc, &mut |k, v| {
        if k == "doubleValue" {
            let x = v.as_f64();
            if is(x, NAN_MARK) {
                *v = "NaN".into();
            } else if is(x, INF_MARK) {
                *v = "Infinity".into();
            } else if is(x, NEG_INF_MARK) {
                *v = "-Infinity".into();
            }
        }
    });
}

fn snake_case(key: &str) -> String {
    let mut out = String::new();
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn rename_keys_snake(v: &mut Json) {
    match v {
        Json::Object(map) => {
            let old = std::mem::take(map);
            for (k, mut x) in old {
                rename_keys_snake(&mut x);
                map.insert(snake_case(&k), x);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(rename_keys_snake),
        _ => {}
    }
}

#[derive(Debug, Clone, Copy)]
enum Variant {
    AsSerialised,
    SnakeCase,
    Int64AsNumbers,
    Uint32AsStrings,
    EnumNames,
    UpperHexAndUrlSafeBase64,
    DoublesAsStrings,
}

fn variant() -> impl Strategy<Value = Variant> {
    prop_oneof![
        Just(Variant::AsSerialised),
        Just(Variant::SnakeCase),
        Just(Variant::Int64AsNumbers),
        Just(Variant::Uint32AsStrings),
        Just(Variant::EnumNames),
        Just(Variant::UpperHexAndUrlSafeBase64),
        Just(Variant::DoublesAsStrings),
    ]
}

fn apply(doc: &mut Json, variant: Variant) {
    match variant {
        Variant::AsSerialised => {}
        Variant::SnakeCase => rename_keys_snake(doc),
        Variant::Int64AsNumbers => walk(doc, &mut |k, v| {
            if matches!(
                k,
                "intValue" | "startTimeUnixNano" | "endTimeUnixNano" | "timeUnixNano"
            ) && let Some(s) = v.as_str()
            {
                *v = match s.parse::<u64>() {
                    Ok(u) => Json::from(u),
                    Err(_) => Json::from(s.parse::<i64>().unwrap()),
                };
            }
        }),
        Variant::Uint32AsStrings => walk(doc, &mut |k, v| {
            if matches!(
                k,
                "flags"
                    | "droppedAttributesCount"
                    | "droppedEventsCount"
                    | "droppedLinksCount"
                    | "keyStrindex"
            ) && let Some(n) = v.as_i64()
            {
                *v = Json::from(n.to_string());
            }
        }),
        Variant::EnumNames => walk(doc, &mut |k, v| {
            let Some(n) = v.as_i64().and_then(|n| i32::try_from(n).ok()) else {
                return;
            };
            let name = match k {
                "kind" => SpanKind::try_from(n).ok().map(|e| e.as_str_name()),
                "code" => StatusCode::try_from(n).ok().map(|e| e.as_str_name()),
                _ => None,
            };
            if let Some(name) = name {
                *v = name.into();
            }
        }),
        Variant::UpperHexAndUrlSafeBase64 => walk(doc, &mut |k, v| {
            let Some(s) = v.as_str() else { return };
            match k {
                "traceId" | "spanId" | "parentSpanId" => *v = s.to_ascii_uppercase().into(),
                "bytesValue" => {
                    *v = s
                        .trim_end_matches('=')
                        .replace('+', "-")
                        .replace('/', "_")
                        .into();
                }
                _ => {}
            }
        }),
        Variant::DoublesAsStrings => walk(doc, &mut |k, v| {
            if k == "doubleValue"
                && let Some(d) = v.as_f64()
            {
                *v = format!("{d:?}").into();
            }
        }),
    }
}

/// NaN payloads are not kept by JSON: every NaN becomes the canonical one, and requests are
/// compared through their protobuf encoding (exact, and NaN equals NaN).
fn canonical(mut req: ExportTraceServiceRequest) -> Vec<u8> {
    for_each_value(&mut req, &mut |v| {
        if let Some(Value::DoubleValue(d)) = v.value.as_mut()
            && d.is_nan()
        {
            *d = f64::NAN;
        }
    });
    req.encode_to_vec()
}

/// The request a JSON decoder can give back at best: serde_json's default float parsing is not
/// correctly rounded (no `float_roundtrip` feature), so each finite double is what serde_json
/// reads from its own serialisation. Both the serde types and `otlp_json.rs` parse numbers with it.
fn through_json_numbers(
    mut req: ExportTraceServiceRequest,
    variant: Variant,
) -> ExportTraceServiceRequest {
    // The document is parsed into a `serde_json::Value`, edited and written again, then parsed
    // by the decoder: twice, unless the edit wrote the doubles as strings (Rust's exact parsing).
    let times = if let Variant::DoublesAsStrings = variant {
        1
    } else {
        2
    };
    for_each_value(&mut req, &mut |v| {
        if let Some(Value::DoubleValue(d)) = v.value.as_mut()
            && d.is_finite()
        {
            for _ in 0..times {
                *d = serde_json::from_str(&serde_json::to_string(d).unwrap()).unwrap();
            }
        }
    });
    req
}

// ---- the previous decoder, as the reference for acceptance ---------------------------------

/// The receiver's OTLP/JSON decoding before `otlp_json.rs`: the serde types, then, for a
/// well-formed document they refused, a pass that drops nulls and rewrites enum names and string
/// counters.
fn old_decode(body: &[u8]) -> Option<ExportTraceServiceRequest> {
    if let Ok(req) = serde_json::from_slice::<ExportTraceServiceRequest>(body) {
        return Some(req);
    }
    let mut value: Json = serde_json::from_slice(body).ok()?;
    if !old_normalise(&mut value) {
        return None;
    }
    serde_json::from_value(value).ok()
}

fn old_normalise(value: &mut Json) -> bool {
    let mut changed = false;
    match value {
        Json::Object(map) => {
            let before = map.len();
            map.retain(|_, v| !v.is_null());
            changed |= map.len() != before;
            for (key, v) in map.iter_mut() {
                let replacement = match (key.as_str(), &*v) {
                    ("kind", Json::String(s)) => {
                        SpanKind::from_str_name(s).map(|k| Json::from(k as i32))
                    }
                    ("code", Json::String(s)) => {
                        StatusCode::from_str_name(s).map(|c| Json::from(c as i32))
                    }
                    (
                        "droppedAttributesCount"
                        | "droppedEventsCount"
                        | "droppedLinksCount"
                        | "flags",
                        Json::String(s),
                    ) => s.trim().parse::<u32>().ok().map(Json::from),
                    _ => None,
                };
                match replacement {
                    Some(r) => {
                        *v = r;
                        changed = true;
                    }
                    None => changed |= old_normalise(v),
                }
            }
        }
        Json::Array(items) => {
            for item in items {
                changed |= old_normalise(item);
            }
        }
        _ => {}
    }
    changed
}

/// Replaces the `target`th node (pre-order) of `doc` with `replacement`.
fn replace_node(doc: &mut Json, target: usize, replacement: &Json) {
    fn go(v: &mut Json, left: &mut usize, replacement: &Json) -> bool {
        if *left == 0 {
            // The serde types also read a struct from an array of its fields in order (serde's
            // positional form, not the JSON mapping's): arrays replace arrays only.
            if !replacement.is_array() || v.is_array() {
                *v = replacement.clone();
            }
            return true;
        }
        *left -= 1;
        match v {
            Json::Object(map) => map.values_mut().any(|x| go(x, left, replacement)),
            Json::Array(items) => items.iter_mut().any(|x| go(x, left, replacement)),
            _ => false,
        }
    }
    fn count(v: &Json) -> usize {
        1 + match v {
            Json::Object(map) => map.values().map(count).sum(),
            Json::Array(items) => items.iter().map(count).sum(),
            _ => 0,
        }
    }
    let mut left = target % count(doc);
    go(doc, &mut left, replacement);
}

fn json_scalar() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        (-1e20f64..1e20).prop_map(Json::from),
        "[0-9a-fA-FxzZ+/=_ -]{0,34}".prop_map(Json::from),
        prop_oneof![
            Just("NaN"),
            Just("Infinity"),
            Just("SPAN_KIND_SERVER"),
            Just("STATUS_CODE_ERROR"),
            Just("18446744073709551616"),
            Just("-1"),
            Just("0x00"),
        ]
        .prop_map(Json::from),
        Just(Json::Array(vec![])),
        Just(Json::Object(serde_json::Map::new())),
        Just(serde_json::json!([{}])),
    ]
}

/// `StringValueStrindex` values, which the serde types write but do not read, become empty.
fn without_strindex_values(mut req: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for_each_value(&mut req, &mut |v| {
        if let Some(Value::StringValueStrindex(_)) = v.value {
            v.value = None;
        }
    });
    req
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn serde_serialised_requests_decode_to_the_same_request(
        req in otlp_strategies::request(double),
        variant in variant(),
    ) {
        let mut doc = serde_json_of(&req);
        restore_non_finite(&mut doc);
        apply(&mut doc, variant);
        let body = serde_json::to_vec(&doc).unwrap();
        let decoded = decode_request(&body, Format::Json).map_err(|e| {
            TestCaseError::fail(format!("{variant:?}: {e} on {}", String::from_utf8_lossy(&body)))
        })?;
        prop_assert_eq!(canonical(decoded), canonical(through_json_numbers(req, variant)), "{:?}", variant);
    }

    #[test]
    fn what_the_previous_decoder_accepted_decodes_the_same(
        req in otlp_strategies::request(double),
        edits in proptest::collection::vec((any::<usize>(), json_scalar()), 1..4),
    ) {
        let req = without_strindex_values(req);
        let mut doc = serde_json_of(&req);
        restore_non_finite(&mut doc);
        for (target, replacement) in &edits {
            replace_node(&mut doc, *target, replacement);
        }
        let body = serde_json::to_vec(&doc).unwrap();
        let new = decode_request(&body, Format::Json);
        if let Some(old) = old_decode(&body) {
            let new = new.map_err(|e| {
                TestCaseError::fail(format!("refused {e}, accepted before: {}", String::from_utf8_lossy(&body)))
            })?;
            prop_assert_eq!(canonical(new), canonical(old), "{}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let new = decode_request(&body, Format::Json);
        if let Some(old) = old_decode(&body) {
            prop_assert_eq!(canonical(new.unwrap()), canonical(old));
        }
    }
}
