//! Fuzz entry points: one function per parser of outside input, each taking arbitrary bytes.
//!
//! The cargo-fuzz targets in `fuzz/` call these, and so does the regular test suite
//! (`extension/tests/fuzz_corpus.rs`), which replays every corpus and every crash ever found on
//! stable Rust without cargo-fuzz. Each function must never panic on any input; beyond that it
//! asserts the parser's invariants (caps respected, documents valid and within 64 KiB, every span
//! accounted for), so a violated invariant shows up as a crash with its input.
//!
//! Not part of the extension's API: hidden from the docs, and the binary never calls it.
#![allow(clippy::panic)]

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
    any_value::Value as OtlpValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde_json::Value;

use crate::lambda::event_context::{DEFAULT_PRECEDENCE, MAX_LINKS, choose_parent, extract};
use crate::lambda::extensions_api::{NextEvent, parse_next_event};
use crate::lambda::telemetry::parse_batch;
use crate::lambda::trace_header::XRayTraceHeader;
use crate::otlp_wire::{AnyValueView, KeyValueView, RequestView, validate_request};
use crate::receiver::decode::{Compression, Format, decode_request, decompress};
use crate::xray::names::{MAX_NAME_CHARS, is_name_char, write_annotation_key};
use crate::xray::translate::MAX_DOCUMENT_BYTES;
use crate::xray::translate::translate_encoded;
use crate::xray::{TranslateOptions, translate};

/// A fuzz entry point: arbitrary bytes in, a panic on a violated invariant.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus folder (`fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("otlp_protobuf", otlp_protobuf),
    ("otlp_json", otlp_json),
    ("decompress", decompress_body),
    ("telemetry_batch", telemetry_batch),
    ("extensions_event", extensions_event),
    ("trace_header", trace_header),
    ("translate", translate_otlp),
    ("event_context", event_context),
    ("otlp_wire", otlp_wire),
];

/// The decompression cap the `decompress` target uses: small, so that a bomb hits it quickly.
pub const DECOMPRESS_LIMIT: usize = 64 * 1024;

/// Attribute keys the `translate` target allow-lists as annotations (one span attribute, one
/// resource attribute); no other key may become an annotation.
pub const ALLOWED_ANNOTATIONS: &[&str] = &["allowed.key", "otel.resource.service.name"];

/// OTLP/protobuf bodies: decode; what decodes also translates (the receiver's path).
pub fn otlp_protobuf(data: &[u8]) {
    if let Ok(request) = decode_request(data, Format::Protobuf) {
        check_translation(&request, &TranslateOptions::default());
    }
}

/// OTLP/JSON bodies (with the protobuf JSON mapping's leniencies): decode, then translate.
pub fn otlp_json(data: &[u8]) {
    if let Ok(request) = decode_request(data, Format::Json) {
        check_translation(&request, &TranslateOptions::default());
    }
}

/// Compressed bodies. The first byte picks the encoding (gzip, deflate/zlib, identity); the
/// output never exceeds the cap, and what inflates is then decoded as OTLP/protobuf.
pub fn decompress_body(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let compression = match selector % 3 {
        0 => Compression::Gzip,
        1 => Compression::Deflate,
        _ => Compression::Identity,
    };
    if let Ok(out) = decompress(Bytes::copy_from_slice(body), compression, DECOMPRESS_LIMIT) {
        assert!(
            out.len() <= DECOMPRESS_LIMIT,
            "{} bytes inflated past the {DECOMPRESS_LIMIT}-byte cap",
            out.len()
        );
        let _ = decode_request(&out, Format::Protobuf);
    }
}

/// Telemetry API batches (a JSON array of events).
pub fn telemetry_batch(data: &[u8]) {
    if let Ok(events) = parse_batch(data) {
        for event in &events {
            let _ = event.time_unix_nano();
        }
    }
}

/// Extensions API `event/next` bodies.
pub fn extensions_event(data: &[u8]) {
    if let Ok(NextEvent::Invoke(invoke)) = parse_next_event(data)
        && let Some(tracing) = &invoke.tracing
    {
        trace_header(tracing.value.as_bytes());
    }
}

/// X-Ray trace headers: parsing never fails, and what it reads survives a round trip.
pub fn trace_header(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let header = XRayTraceHeader::parse(&text);
    let mut again = String::new();
    if let Some(id) = header.trace_id {
        assert_ne!(id, [0; 16], "an all-zero trace id was accepted");
        again.push_str(&format!("Root=1-{}-{};", hex(&id[..4]), hex(&id[4..])));
    }
    if let Some(id) = header.parent_id {
        assert_ne!(id, [0; 8], "an all-zero parent id was accepted");
        again.push_str(&format!("Parent={};", hex(&id)));
    }
    match header.sampled {
        Some(true) => again.push_str("Sampled=1"),
        Some(false) => again.push_str("Sampled=0"),
        None => {}
    }
    assert_eq!(
        XRayTraceHeader::parse(&again),
        header,
        "{text:?} does not round-trip"
    );
}

/// The translator on arbitrary spans: the first byte picks the options (an allow-list or every
/// attribute as annotations, a small document limit or X-Ray's), the rest is an OTLP/protobuf
/// request. Every document must satisfy the X-Ray schema's key rules and fit the limit, every
/// span must be accounted for once, and only allow-listed attributes become annotations.
pub fn translate_otlp(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(request) = decode_request(body, Format::Protobuf) else {
        return;
    };
    let options = TranslateOptions {
        indexed_attributes: if selector & 1 == 0 {
            ALLOWED_ANNOTATIONS
                .iter()
                .map(|k| (*k).to_owned())
                .collect()
        } else {
            Vec::new()
        },
        index_all_attributes: selector & 3 == 3,
        max_document_bytes: if selector & 4 == 4 {
            // 1 KiB to 8 KiB: small enough that splitting and truncation happen.
            1024 * (1 + usize::from(selector >> 5))
        } else {
            MAX_DOCUMENT_BYTES
        },
    };
    check_translation(&request, &options);
}

/// Translates `request` and asserts the invariants every batch must keep.
pub fn check_translation(request: &ExportTraceServiceRequest, options: &TranslateOptions) {
    let input = crate::buffer::count_spans(&request.resource_spans);
    let out = translate(&request.resource_spans, options);
    let carried: usize = out.documents.iter().map(|d| d.spans).sum();
    assert_eq!(
        carried + out.invalid_spans + out.too_large_spans,
        input,
        "spans not accounted for: {carried} in documents, {} invalid, {} too large, {input} in",
        out.invalid_spans,
        out.too_large_spans
    );
    let allowed: Vec<String> = options
        .indexed_attributes
        .iter()
        .map(|k| {
            let mut s = String::new();
            write_annotation_key(&mut s, k);
            s
        })
        .collect();
    for doc in &out.documents {
        assert!(
            doc.json.len() <= options.max_document_bytes,
            "document of {} bytes over the {}-byte limit",
            doc.json.len(),
            options.max_document_bytes
        );
        let value: Value = match serde_json::from_str(&doc.json) {
            Ok(v) => v,
            Err(e) => panic!("document is not JSON ({e}): {}", doc.json),
        };
        check_document(&value, &doc.json, true);
        assert_eq!(value["trace_id"].as_str(), Some(doc.trace_id.as_str()));
        assert_eq!(value["id"].as_str(), Some(doc.id.as_str()));
        if !options.index_all_attributes {
            check_annotations(&value, &allowed, &doc.json);
        }
    }
}

/// The key rules of `xray-segmentdocument-schema-v1.0.0.json` (the full schema is checked by the
/// corpus replay test, which has a JSON Schema validator).
fn check_document(doc: &Value, json: &str, top: bool) {
    let Some(obj) = doc.as_object() else {
        panic!("document is not an object: {json}");
    };
    let name = obj.get("name").and_then(Value::as_str);
    assert!(
        name.is_some_and(|n| {
            !n.is_empty() && n.chars().count() <= MAX_NAME_CHARS && n.chars().all(is_name_char)
        }),
        "invalid name {name:?}: {json}"
    );
    assert!(is_hex_id(obj.get("id")), "invalid id: {json}");
    assert!(
        obj.get("start_time").is_some_and(Value::is_number),
        "start_time missing or not a number: {json}"
    );
    let ended = obj.get("end_time").is_some_and(Value::is_number);
    assert!(
        ended || obj.get("in_progress") == Some(&Value::Bool(true)),
        "neither end_time nor in_progress: {json}"
    );
    if top {
        let trace = obj.get("trace_id").and_then(Value::as_str).unwrap_or("");
        assert!(is_trace_id(trace), "invalid trace_id {trace:?}: {json}");
        if let Some(t) = obj.get("type") {
            assert_eq!(t, "subsegment", "unknown type: {json}");
            assert!(is_hex_id(obj.get("parent_id")), "invalid parent_id: {json}");
        }
    }
    if let Some(annotations) = obj.get("annotations") {
        let Some(map) = annotations.as_object() else {
            panic!("annotations not an object: {json}");
        };
        for (key, value) in map {
            assert!(
                !key.is_empty()
                    && key.chars().count() <= 500
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "invalid annotation key {key:?}: {json}"
            );
            match value {
                Value::String(s) => assert!(s.chars().count() <= 1000, "long annotation"),
                Value::Number(_) | Value::Bool(_) => {}
                other => panic!("annotation value {other} is not a string, number or bool"),
            }
        }
    }
    if let Some(subs) = obj.get("subsegments") {
        let Some(subs) = subs.as_array() else {
            panic!("subsegments not an array: {json}");
        };
        for sub in subs {
            check_document(sub, json, false);
        }
    }
}

fn check_annotations(doc: &Value, allowed: &[String], json: &str) {
    if let Some(map) = doc.get("annotations").and_then(Value::as_object) {
        for key in map.keys() {
            assert!(
                allowed.iter().any(|a| a == key),
                "annotation {key:?} is not allow-listed ({allowed:?}): {json}"
            );
        }
    }
    if let Some(subs) = doc.get("subsegments").and_then(Value::as_array) {
        for sub in subs {
            check_annotations(sub, allowed, json);
        }
    }
}

fn is_hex_id(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_trace_id(s: &str) -> bool {
    let mut parts = s.splitn(3, '-');
    let (Some(version), Some(time), Some(unique)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    s.len() >= 35
        && !version.is_empty()
        && version.bytes().all(|b| b.is_ascii_digit())
        && time.bytes().all(|b| b.is_ascii_hexdigit())
        && unique.len() == 24
        && unique.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The Runtime API proxy's view of an invocation: the bytes up to the first NUL are the
/// `Lambda-Runtime-Trace-Id` header (absent when there is no NUL), the rest is the event. The
/// extraction never panics, keeps its link cap, and a chosen parent has a valid trace id.
pub fn event_context(data: &[u8]) {
    let (header, event) = match data.iter().position(|&b| b == 0) {
        Some(at) => (Some(String::from_utf8_lossy(&data[..at])), &data[at + 1..]),
        None => (None, data),
    };
    let extracted = extract(event, header.as_deref());
    assert!(
        extracted.links.len() <= MAX_LINKS,
        "{} links past the cap",
        extracted.links.len()
    );
    assert!(
        extracted.links.len() <= extracted.message_count,
        "more links than messages"
    );
    for context in [&extracted.lambda, &extracted.traceparent, &extracted.xray]
        .into_iter()
        .flatten()
        .chain(&extracted.links)
    {
        assert_ne!(
            context.trace_id, [0; 16],
            "an all-zero trace id was accepted"
        );
        assert_ne!(
            context.parent_id,
            Some([0; 8]),
            "an all-zero parent id was accepted"
        );
    }
    if let Some(parent) = choose_parent(&extracted, &DEFAULT_PRECEDENCE) {
        assert_ne!(parent.context.trace_id, [0; 16]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The zero-copy reader against prost: `validate_request` and `RequestView::parse` accept exactly
/// what prost's decode accepts, count its spans and read its values; and `translate_encoded` of
/// the bytes as they are (duplicate fields, unknown fields, non-canonical varints) gives the
/// translation of prost's value.
pub fn otlp_wire(data: &[u8]) {
    let prost = <ExportTraceServiceRequest as prost::Message>::decode(data);
    let count = validate_request(data);
    let view = RequestView::parse(data);
    let Ok(mut decoded) = prost else {
        assert!(count.is_err(), "prost rejects, validate_request accepts");
        assert!(view.is_err(), "prost rejects, the view parses");
        return;
    };
    let spans = crate::buffer::count_spans(&decoded.resource_spans);
    assert_eq!(count, Ok(spans), "span counts differ");
    let view = match view {
        Ok(v) => v,
        Err(e) => panic!("prost accepts, the view fails: {e}"),
    };
    let options = TranslateOptions::default();
    let translated = translate_encoded([(data, spans)], &options);
    assert_eq!(
        translated,
        translate(&decoded.resource_spans, &options),
        "translations differ"
    );
    for rs in &mut decoded.resource_spans {
        if let Some(r) = rs.resource.as_mut() {
            r.entity_refs.clear();
        }
    }
    assert!(
        prost::Message::encode_to_vec(&view_to_owned(&view))
            == prost::Message::encode_to_vec(&decoded),
        "the view differs from prost's value"
    );
}

/// A view's string as an owned `String` (views hold checked UTF-8 bytes; lossy only if a view
/// was built from unchecked bytes, which `RequestView::parse` never does).
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn kv(v: &KeyValueView<'_>) -> KeyValue {
    KeyValue {
        key: text(v.key),
        value: v.value.as_ref().map(any_owned),
        key_strindex: v.key_strindex,
    }
}

fn any_owned(v: &AnyValueView<'_>) -> AnyValue {
    AnyValue {
        value: match v {
            AnyValueView::Empty => None,
            AnyValueView::String(s) => Some(OtlpValue::StringValue(text(s))),
            AnyValueView::Bool(b) => Some(OtlpValue::BoolValue(*b)),
            AnyValueView::Int(i) => Some(OtlpValue::IntValue(*i)),
            AnyValueView::Double(d) => Some(OtlpValue::DoubleValue(*d)),
            AnyValueView::Array(a) => Some(OtlpValue::ArrayValue(ArrayValue {
                values: a.iter().map(any_owned).collect(),
            })),
            AnyValueView::Kvlist(l) => Some(OtlpValue::KvlistValue(KeyValueList {
                values: l.iter().map(kv).collect(),
            })),
            AnyValueView::Bytes(b) => Some(OtlpValue::BytesValue(b.to_vec())),
            AnyValueView::StringStrindex(i) => Some(OtlpValue::StringValueStrindex(*i)),
        },
    }
}

/// A view as the generated type (`entity_refs` empty: the view does not keep them), to compare
/// with what prost decodes.
pub fn view_to_owned(view: &RequestView<'_>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: view
            .resource_spans
            .iter()
            .map(|rs| ResourceSpans {
                resource: rs.resource.as_ref().map(|r| Resource {
                    attributes: r.attributes.iter().map(kv).collect(),
                    dropped_attributes_count: r.dropped_attributes_count,
                    entity_refs: Vec::new(),
                }),
                scope_spans: rs
                    .scope_spans
                    .iter()
                    .map(|ss| ScopeSpans {
                        scope: ss.scope.as_ref().map(|s| InstrumentationScope {
                            name: text(s.name),
                            version: text(s.version),
                            attributes: s.attributes.iter().map(kv).collect(),
                            dropped_attributes_count: s.dropped_attributes_count,
                        }),
                        spans: ss
                            .spans
                            .iter()
                            .map(|s| Span {
                                trace_id: s.trace_id.to_vec(),
                                span_id: s.span_id.to_vec(),
                                trace_state: text(s.trace_state),
                                parent_span_id: s.parent_span_id.to_vec(),
                                flags: s.flags,
                                name: text(s.name),
                                kind: s.kind,
                                start_time_unix_nano: s.start_time_unix_nano,
                                end_time_unix_nano: s.end_time_unix_nano,
                                attributes: s.attributes.iter().map(kv).collect(),
                                dropped_attributes_count: s.dropped_attributes_count,
                                events: s
                                    .events
                                    .iter()
                                    .map(|e| span::Event {
                                        time_unix_nano: e.time_unix_nano,
                                        name: text(e.name),
                                        attributes: e.attributes.iter().map(kv).collect(),
                                        dropped_attributes_count: e.dropped_attributes_count,
                                    })
                                    .collect(),
                                dropped_events_count: s.dropped_events_count,
                                links: s
                                    .links
                                    .iter()
                                    .map(|l| span::Link {
                                        trace_id: l.trace_id.to_vec(),
                                        span_id: l.span_id.to_vec(),
                                        trace_state: text(l.trace_state),
                                        attributes: l.attributes.iter().map(kv).collect(),
                                        dropped_attributes_count: l.dropped_attributes_count,
                                        flags: l.flags,
                                    })
                                    .collect(),
                                dropped_links_count: s.dropped_links_count,
                                status: s.status.as_ref().map(|st| Status {
                                    message: text(st.message),
                                    code: st.code,
                                }),
                            })
                            .collect(),
                        schema_url: text(ss.schema_url),
                    })
                    .collect(),
                schema_url: text(rs.schema_url),
            })
            .collect(),
    }
}
