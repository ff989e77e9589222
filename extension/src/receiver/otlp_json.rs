//! OTLP/JSON `ExportTraceServiceRequest` bodies decoded by hand into the generated prost types.
//!
//! The body is parsed into a `Json` tree whose strings borrow from the body wherever they have
//! no escapes (one small serde visitor; serde_json is in the binary anyway), then one small,
//! non-generic function per message maps it. Objects keep their members in document order: a key
//! given twice, or in both spellings, is read in that order, the later value winning. This replaces `opentelemetry-proto`'s
//! `with-serde` derives, whose per-type visitors cost about 150 KB of the stripped extension
//! (docs/performance.md); the tests compare the two on arbitrary requests
//! (`tests/otlp_json_props.rs`).
//!
//! The mapping is the OTLP specification's "JSON Protobuf Encoding", which is the protobuf JSON
//! mapping with hex ids:
//!
//! | JSON | accepted as |
//! |---|---|
//! | keys | lowerCamelCase (`traceId`) or the proto field name (`trace_id`); unknown keys are ignored |
//! | `null` | the field's default, for every field |
//! | `traceId`, `spanId`, `parentSpanId` | hex, either case, an even number of digits of any length (`""` = empty), an optional `0x` prefix: what the serde types accepted; the translator judges lengths, as it does for protobuf |
//! | 64-bit integers (times, `intValue`) | a JSON integer, an integral JSON number in range (`1.7e18`), or a decimal string |
//! | 32-bit integers (`droppedAttributesCount`, `flags`, `keyStrindex`) | a JSON integer or a decimal string |
//! | enums (`kind`, `code`) | an integer (any `int32`, as protobuf keeps unknown values), or the value's name (`"SPAN_KIND_SERVER"`) |
//! | `doubleValue` | a JSON number, `"NaN"`, `"Infinity"`, `"-Infinity"` or a decimal string |
//! | `bytesValue` | base64, standard or URL-safe alphabet, padded or not |
//! | `AnyValue` | at most one of `stringValue`, `boolValue`, `intValue`, `doubleValue`, `arrayValue`, `kvlistValue`, `bytesValue`, `stringValueStrindex` (more than one is an error, as in the protobuf JSON mapping); none = an empty value |
//!
//! Integer strings may carry surrounding whitespace and a leading `+` (Rust's integer parsing).
//! Errors name the field by its lowerCamelCase path and say what was wrong, e.g.
//! `resourceSpans[0].scopeSpans[1].spans[3].traceId: not hex: 'z' at 0`.
//!
//! Recursion: the only recursive messages are `AnyValue` → `ArrayValue`/`KeyValueList` →
//! `AnyValue`. Each level of that recursion consumes one level of JSON nesting, and serde_json
//! refuses documents nested deeper than 128 levels while parsing, so the mapping's depth is bounded
//! by the same limit (as the serde types' was).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// Why an OTLP/JSON body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpJsonError {
    /// Not JSON (serde_json's message, with line and column).
    #[error("{0}")]
    Syntax(String),
    /// JSON, but a field does not hold what the OTLP/JSON mapping allows there.
    #[error("{path}: {reason}")]
    Field {
        /// Where, e.g. `resourceSpans[0].scopeSpans[0].spans[2].kind`; `request` for the root.
        path: String,
        /// What was wrong.
        reason: String,
    },
}

type Result<T> = std::result::Result<T, OtlpJsonError>;
type Object<'a> = [(Cow<'a, str>, Json<'a>)];

/// A parsed JSON document, strings borrowed from the body where they have no escapes: what
/// `serde_json::Value` holds, without an allocation per key and per string, and with members in
/// document order.
#[derive(Debug)]
enum Json<'a> {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// A number, as serde_json reads it (an integer that fits `u64` or `i64`, otherwise `f64`).
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object's members, in document order.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> std::result::Result<Json<'de>, E> {
        // JSON has no literal for a non-finite number (serde_json's `Value` does the same).
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Json<'de>, E> {
        Ok(Json::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Json<'de>, E> {
        Ok(Json::String(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Json<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Json<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Json::Object(members))
    }
}

/// An object's key, borrowed where it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match d.deserialize_str(JsonVisitor)? {
            Json::String(s) => Ok(Key(s)),
            _ => Err(serde::de::Error::custom(
                "an object key that is not a string",
            )),
        }
    }
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode_request(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    let value: Json<'_> =
        serde_json::from_slice(body).map_err(|e| OtlpJsonError::Syntax(e.to_string()))?;
    let root = Path::ROOT;
    let Json::Object(map) = &value else {
        return Err(root.error(expected("an object", &value)));
    };
    let mut request = ExportTraceServiceRequest::default();
    for (key, v) in map {
        if let "resourceSpans" | "resource_spans" = &**key {
            request.resource_spans = list(v, root.key("resourceSpans"), resource_spans)?;
        }
    }
    Ok(request)
}

// ---- messages ------------------------------------------------------------------------------

fn resource_spans(m: &Object<'_>, path: Path<'_>) -> Result<ResourceSpans> {
    let mut out = ResourceSpans::default();
    for (key, v) in m {
        match &**key {
            "resource" => out.resource = message(v, path.key("resource"), resource)?,
            "scopeSpans" | "scope_spans" => {
                out.scope_spans = list(v, path.key("scopeSpans"), scope_spans)?;
            }
            "schemaUrl" | "schema_url" => out.schema_url = string(v, path.key("schemaUrl"))?,
            _ => {}
        }
    }
    Ok(out)
}

fn resource(m: &Object<'_>, path: Path<'_>) -> Result<Resource> {
    let mut out = Resource::default();
    for (key, v) in m {
        match &**key {
            "attributes" => out.attributes = list(v, path.key("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(v, path.key("droppedAttributesCount"))?;
            }
            "entityRefs" | "entity_refs" => {
                out.entity_refs = list(v, path.key("entityRefs"), entity_ref)?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn entity_ref(m: &Object<'_>, path: Path<'_>) -> Result<EntityRef> {
    let mut out = EntityRef::default();
    for (key, v) in m {
        match &**key {
            "schemaUrl" | "schema_url" => out.schema_url = string(v, path.key("schemaUrl"))?,
            "type" => out.r#type = string(v, path.key("type"))?,
            "idKeys" | "id_keys" => out.id_keys = strings(v, path.key("idKeys"))?,
            "descriptionKeys" | "description_keys" => {
                out.description_keys = strings(v, path.key("descriptionKeys"))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn scope_spans(m: &Object<'_>, path: Path<'_>) -> Result<ScopeSpans> {
    let mut out = ScopeSpans::default();
    for (key, v) in m {
        match &**key {
            "scope" => out.scope = message(v, path.key("scope"), scope)?,
            "spans" => out.spans = list(v, path.key("spans"), span)?,
            "schemaUrl" | "schema_url" => out.schema_url = string(v, path.key("schemaUrl"))?,
            _ => {}
        }
    }
    Ok(out)
}

fn scope(m: &Object<'_>, path: Path<'_>) -> Result<InstrumentationScope> {
    let mut out = InstrumentationScope::default();
    for (key, v) in m {
        match &**key {
            "name" => out.name = string(v, path.key("name"))?,
            "version" => out.version = string(v, path.key("version"))?,
            "attributes" => out.attributes = list(v, path.key("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(v, path.key("droppedAttributesCount"))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn span(m: &Object<'_>, path: Path<'_>) -> Result<Span> {
    let mut out = Span::default();
    for (key, v) in m {
        match &**key {
            "traceId" | "trace_id" => out.trace_id = hex(v, path.key("traceId"))?,
            "spanId" | "span_id" => out.span_id = hex(v, path.key("spanId"))?,
            "traceState" | "trace_state" => out.trace_state = string(v, path.key("traceState"))?,
            "parentSpanId" | "parent_span_id" => {
                out.parent_span_id = hex(v, path.key("parentSpanId"))?;
            }
            "flags" => out.flags = uint32(v, path.key("flags"))?,
            "name" => out.name = string(v, path.key("name"))?,
            "kind" => out.kind = enumeration(v, path.key("kind"), span_kind)?,
            "startTimeUnixNano" | "start_time_unix_nano" => {
                out.start_time_unix_nano = uint64(v, path.key("startTimeUnixNano"))?;
            }
            "endTimeUnixNano" | "end_time_unix_nano" => {
                out.end_time_unix_nano = uint64(v, path.key("endTimeUnixNano"))?;
            }
            "attributes" => out.attributes = list(v, path.key("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(v, path.key("droppedAttributesCount"))?;
            }
            "events" => out.events = list(v, path.key("events"), event)?,
            "droppedEventsCount" | "dropped_events_count" => {
                out.dropped_events_count = uint32(v, path.key("droppedEventsCount"))?;
            }
            "links" => out.links = list(v, path.key("links"), link)?,
            "droppedLinksCount" | "dropped_links_count" => {
                out.dropped_links_count = uint32(v, path.key("droppedLinksCount"))?;
            }
            "status" => out.status = message(v, path.key("status"), status)?,
            _ => {}
        }
    }
    Ok(out)
}

fn span_kind(name: &str) -> Option<i32> {
    SpanKind::from_str_name(name).map(|k| k as i32)
}

fn status_code(name: &str) -> Option<i32> {
    StatusCode::from_str_name(name).map(|c| c as i32)
}

fn event(m: &Object<'_>, path: Path<'_>) -> Result<Event> {
    let mut out = Event::default();
    for (key, v) in m {
        match &**key {
            "timeUnixNano" | "time_unix_nano" => {
                out.time_unix_nano = uint64(v, path.key("timeUnixNano"))?;
            }
            "name" => out.name = string(v, path.key("name"))?,
            "attributes" => out.attributes = list(v, path.key("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(v, path.key("droppedAttributesCount"))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn link(m: &Object<'_>, path: Path<'_>) -> Result<Link> {
    let mut out = Link::default();
    for (key, v) in m {
        match &**key {
            "traceId" | "trace_id" => out.trace_id = hex(v, path.key("traceId"))?,
            "spanId" | "span_id" => out.span_id = hex(v, path.key("spanId"))?,
            "traceState" | "trace_state" => out.trace_state = string(v, path.key("traceState"))?,
            "attributes" => out.attributes = list(v, path.key("attributes"), key_value)?,
            "droppedAttributesCount" | "dropped_attributes_count" => {
                out.dropped_attributes_count = uint32(v, path.key("droppedAttributesCount"))?;
            }
            "flags" => out.flags = uint32(v, path.key("flags"))?,
            _ => {}
        }
    }
    Ok(out)
}

fn status(m: &Object<'_>, path: Path<'_>) -> Result<Status> {
    let mut out = Status::default();
    for (key, v) in m {
        match &**key {
            "message" => out.message = string(v, path.key("message"))?,
            "code" => out.code = enumeration(v, path.key("code"), status_code)?,
            _ => {}
        }
    }
    Ok(out)
}

fn key_value(m: &Object<'_>, path: Path<'_>) -> Result<KeyValue> {
    let mut out = KeyValue::default();
    for (key, v) in m {
        match &**key {
            "key" => out.key = string(v, path.key("key"))?,
            "value" => out.value = message(v, path.key("value"), any_value)?,
            "keyStrindex" | "key_strindex" => out.key_strindex = int32(v, path.key("keyStrindex"))?,
            _ => {}
        }
    }
    Ok(out)
}

/// One level of `AnyValue` recursion per level of JSON nesting (see the module doc).
fn any_value(m: &Object<'_>, path: Path<'_>) -> Result<AnyValue> {
    use any_value::Value as V;
    let mut out = None;
    for (key, v) in m {
        if v.is_null() {
            continue;
        }
        let value = match &**key {
            "stringValue" | "string_value" => V::StringValue(string(v, path.key("stringValue"))?),
            "boolValue" | "bool_value" => V::BoolValue(boolean(v, path.key("boolValue"))?),
            "intValue" | "int_value" => V::IntValue(int64(v, path.key("intValue"))?),
            "doubleValue" | "double_value" => V::DoubleValue(double(v, path.key("doubleValue"))?),
            "arrayValue" | "array_value" => V::ArrayValue(array_value(v, path.key("arrayValue"))?),
            "kvlistValue" | "kvlist_value" => {
                V::KvlistValue(kvlist_value(v, path.key("kvlistValue"))?)
            }
            "bytesValue" | "bytes_value" => V::BytesValue(base64(v, path.key("bytesValue"))?),
            "stringValueStrindex" | "string_value_strindex" => {
                V::StringValueStrindex(int32(v, path.key("stringValueStrindex"))?)
            }
            _ => continue,
        };
        // The same key again replaces its value (the last one wins, as for every field); a
        // second, different value field is an error.
        if let Some((_, first)) = &out
            && *first != &**key
        {
            return Err(path.error(format!(
                "more than one value (a second in {:?}); an AnyValue holds one",
                &**key
            )));
        }
        out = Some((value, &**key));
    }
    Ok(AnyValue {
        value: out.map(|(value, _)| value),
    })
}

fn array_value(v: &Json<'_>, path: Path<'_>) -> Result<ArrayValue> {
    let mut out = ArrayValue::default();
    for (key, v) in object(v, path)?.into_iter().flatten() {
        if key == "values" {
            out.values = list(v, path.key("values"), any_value)?;
        }
    }
    Ok(out)
}

fn kvlist_value(v: &Json<'_>, path: Path<'_>) -> Result<KeyValueList> {
    let mut out = KeyValueList::default();
    for (key, v) in object(v, path)?.into_iter().flatten() {
        if key == "values" {
            out.values = list(v, path.key("values"), key_value)?;
        }
    }
    Ok(out)
}

// ---- containers ----------------------------------------------------------------------------

/// An object or `null` (`None`).
fn object<'v, 'a>(v: &'v Json<'a>, path: Path<'_>) -> Result<Option<&'v Object<'a>>> {
    match v {
        Json::Null => Ok(None),
        Json::Object(m) => Ok(Some(m.as_slice())),
        other => Err(path.error(expected("an object", other))),
    }
}

/// An optional message field.
fn message<T>(
    v: &Json<'_>,
    path: Path<'_>,
    f: fn(&Object<'_>, Path<'_>) -> Result<T>,
) -> Result<Option<T>> {
    object(v, path)?.map(|m| f(m, path)).transpose()
}

/// A repeated message field: an array of objects, or `null` for none. A `null` element is the
/// message's default, as the protobuf JSON mapping reads it.
fn list<T>(
    v: &Json<'_>,
    path: Path<'_>,
    f: fn(&Object<'_>, Path<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let items = match v {
        Json::Null => return Ok(Vec::new()),
        Json::Array(items) => items,
        other => return Err(path.error(expected("an array", other))),
    };
    let mut out = Vec::with_capacity(items.len());
    let empty: &Object<'_> = &[];
    for (i, item) in items.iter().enumerate() {
        let item_path = path.at(i);
        let m = object(item, item_path)?.unwrap_or(empty);
        out.push(f(m, item_path)?);
    }
    Ok(out)
}

fn strings(v: &Json<'_>, path: Path<'_>) -> Result<Vec<String>> {
    match v {
        Json::Null => Ok(Vec::new()),
        Json::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| string(item, path.at(i)))
            .collect(),
        other => Err(path.error(expected("an array of strings", other))),
    }
}

// ---- scalars -------------------------------------------------------------------------------

fn string(v: &Json<'_>, path: Path<'_>) -> Result<String> {
    match v {
        Json::Null => Ok(String::new()),
        Json::String(s) => Ok((**s).to_owned()),
        other => Err(path.error(expected("a string", other))),
    }
}

fn boolean(v: &Json<'_>, path: Path<'_>) -> Result<bool> {
    match v {
        Json::Null => Ok(false),
        Json::Bool(b) => Ok(*b),
        other => Err(path.error(expected("true or false", other))),
    }
}

/// An integer in `[min, max]`: a JSON integer, an integral JSON number, or a decimal string.
/// `i128` covers every `u64` and `i64`.
fn integer(v: &Json<'_>, path: Path<'_>, min: i128, max: i128) -> Result<i128> {
    let n = match v {
        Json::Null => return Ok(0),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                i128::from(u)
            } else if let Some(i) = n.as_i64() {
                i128::from(i)
            } else {
                // A JSON number with a fraction or an exponent: only an integral value in range.
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !(-9.3e18..=1.85e19).contains(&f) {
                    return Err(path.error(format!("{n} is not an integer in [{min}, {max}]")));
                }
                // In range of i128 by the check above, and integral: exact.
                f as i128
            }
        }
        Json::String(s) => s
            .trim()
            .parse::<i128>()
            .map_err(|_| path.error(format!("{:?} is not a decimal integer", truncate(s))))?,
        other => return Err(path.error(expected("an integer (number or string)", other))),
    };
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(path.error(format!("{n} is out of range [{min}, {max}]")))
    }
}

fn uint64(v: &Json<'_>, path: Path<'_>) -> Result<u64> {
    let n = integer(v, path, 0, i128::from(u64::MAX))?;
    u64::try_from(n).map_err(|_| path.error("out of range"))
}

fn int64(v: &Json<'_>, path: Path<'_>) -> Result<i64> {
    let n = integer(v, path, i128::from(i64::MIN), i128::from(i64::MAX))?;
    i64::try_from(n).map_err(|_| path.error("out of range"))
}

fn uint32(v: &Json<'_>, path: Path<'_>) -> Result<u32> {
    let n = integer(v, path, 0, i128::from(u32::MAX))?;
    u32::try_from(n).map_err(|_| path.error("out of range"))
}

fn int32(v: &Json<'_>, path: Path<'_>) -> Result<i32> {
    let n = integer(v, path, i128::from(i32::MIN), i128::from(i32::MAX))?;
    i32::try_from(n).map_err(|_| path.error("out of range"))
}

/// An enum: its integer value (any `int32`) or its proto name.
fn enumeration(v: &Json<'_>, path: Path<'_>, by_name: fn(&str) -> Option<i32>) -> Result<i32> {
    if let Json::String(s) = v
        && let Some(value) = by_name(s)
    {
        return Ok(value);
    }
    if let Json::String(s) = v
        && s.trim().parse::<i32>().is_err()
    {
        return Err(path.error(format!("unknown name {:?}", truncate(s))));
    }
    int32(v, path)
}

fn double(v: &Json<'_>, path: Path<'_>) -> Result<f64> {
    match v {
        Json::Null => Ok(0.0),
        Json::Number(n) => n
            .as_f64()
            .ok_or_else(|| path.error(format!("{n} is not a double"))),
        Json::String(s) => match &**s {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.trim().parse::<f64>().map_err(|_| {
                path.error(format!(
                    "{:?} is not a number, \"NaN\", \"Infinity\" or \"-Infinity\"",
                    truncate(other)
                ))
            }),
        },
        other => Err(path.error(expected("a number", other))),
    }
}

/// Trace and span ids: hex digits of either case, an even number of them, after an optional
/// `0x`.
fn hex(v: &Json<'_>, path: Path<'_>) -> Result<Vec<u8>> {
    let s = match v {
        Json::Null => return Ok(Vec::new()),
        Json::String(s) => s.as_bytes(),
        other => return Err(path.error(expected("a hex string", other))),
    };
    if s.len() % 2 != 0 {
        return Err(path.error(format!("not hex: odd number of digits ({})", s.len())));
    }
    let digits = match s {
        [b'0', b'x' | b'X', rest @ ..] => rest,
        _ => s,
    };
    let nibble = |i: usize| -> Result<u8> {
        let c = digits.get(i).copied().unwrap_or(0);
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(path.error(format!(
                "not hex: {:?} at {}",
                char::from(c),
                i + (s.len() - digits.len())
            ))),
        }
    };
    let mut out = Vec::with_capacity(digits.len() / 2);
    for i in (0..digits.len()).step_by(2) {
        out.push((nibble(i)? << 4) | nibble(i + 1)?);
    }
    Ok(out)
}

/// `bytesValue`: base64 with the standard (`+/`) or URL-safe (`-_`) alphabet, with or without
/// `=` padding. Bits left over in the last character are ignored.
fn base64(v: &Json<'_>, path: Path<'_>) -> Result<Vec<u8>> {
    let s = match v {
        Json::Null => return Ok(Vec::new()),
        Json::String(s) => s.as_bytes(),
        other => return Err(path.error(expected("a base64 string", other))),
    };
    let data = s
        .strip_suffix(b"==")
        .or_else(|| s.strip_suffix(b"="))
        .unwrap_or(s);
    if data.len() != s.len() && s.len() % 4 != 0 {
        return Err(path.error("not base64: padded to a length that is not a multiple of 4"));
    }
    if data.len() % 4 == 1 {
        return Err(path.error("not base64: length leaves a single character"));
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (i, &c) in data.iter().enumerate() {
        let sextet = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => {
                return Err(path.error(format!("not base64: {:?} at {i}", char::from(c))));
            }
        };
        acc = ((acc << 6) | u32::from(sextet)) & 0xff_ffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

fn expected(what: &str, got: &Json<'_>) -> String {
    let kind = match got {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    };
    format!("expected {what}, found {kind}")
}

/// Values quoted in messages are cut to a readable length.
fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

// ---- paths ---------------------------------------------------------------------------------

/// Where in the document a field is: a chain of stack frames, formatted only for an error.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    key: &'static str,
    index: Option<usize>,
}

impl<'a> Path<'a> {
    const ROOT: Path<'static> = Path {
        parent: None,
        key: "",
        index: None,
    };

    fn key(&'a self, key: &'static str) -> Path<'a> {
        Path {
            parent: Some(self),
            key,
            index: None,
        }
    }

    /// The `i`th element of this (repeated) field.
    fn at(self, i: usize) -> Path<'a> {
        Path {
            index: Some(i),
            ..self
        }
    }

    fn error(self, reason: impl Into<String>) -> OtlpJsonError {
        let mut frames = Vec::new();
        let mut frame = Some(&self);
        while let Some(p) = frame {
            frames.push(p);
            frame = p.parent;
        }
        let mut path = String::new();
        for p in frames.iter().rev().filter(|p| !p.key.is_empty()) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(p.key);
            if let Some(i) = p.index {
                path.push_str(&format!("[{i}]"));
            }
        }
        if path.is_empty() {
            path.push_str("request");
        }
        OtlpJsonError::Field {
            path,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error for `body`, as the receiver words it after the prefix.
    fn err(body: &str) -> String {
        decode_request(body.as_bytes()).unwrap_err().to_string()
    }

    /// `span` (a JSON object's members) inside a one-span request.
    fn in_span(members: &str) -> String {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{members}}}]}}]}}]}}"#)
    }

    fn one_span(members: &str) -> Span {
        let req = decode_request(in_span(members).as_bytes()).unwrap();
        req.resource_spans[0].scope_spans[0].spans[0].clone()
    }

    fn attr(value: &str) -> Option<any_value::Value> {
        let span = one_span(&format!(r#""attributes":[{{"key":"k","value":{value}}}]"#));
        span.attributes[0].value.clone().unwrap().value
    }

    const SPAN: &str = "resourceSpans[0].scopeSpans[0].spans[0]";

    #[test]
    fn members_in_document_order_and_strings_with_or_without_escapes() {
        // Strings without escapes are borrowed from the body, with escapes decoded; keys too.
        assert_eq!(
            one_span(r#""name":"GET /a\"b\u00e9""#).name,
            "GET /a\"b\u{e9}"
        );
        assert_eq!(one_span(r#""n\u0061me":"x""#).name, "x");
        // A field given twice, or in both spellings: read in document order, the later one wins,
        assert_eq!(one_span(r#""name":"a","name":"b""#).name, "b");
        assert_eq!(one_span(r#""traceId":"01","trace_id":"02""#).trace_id, [2]);
        assert_eq!(one_span(r#""trace_id":"02","traceId":"01""#).trace_id, [1]);
        // and each value is checked, the earlier one too.
        assert_eq!(
            err(&in_span(r#""name":5,"name":"b""#)),
            format!("{SPAN}.name: expected a string, found a number")
        );
        // The same value field twice in an AnyValue: the later one; two different ones: an error.
        assert_eq!(
            attr(r#"{"intValue":1,"intValue":"2"}"#),
            Some(any_value::Value::IntValue(2))
        );
    }

    #[test]
    fn syntax_and_shape_errors() {
        assert!(err(r#"{"resourceSpans": ["#).contains("EOF while parsing"));
        assert!(err("").contains("line 1 column 0"));
        assert_eq!(err("[]"), "request: expected an object, found an array");
        assert_eq!(err("null"), "request: expected an object, found null");
        assert_eq!(
            err(r#"{"resourceSpans":{}}"#),
            "resourceSpans: expected an array, found an object"
        );
        assert_eq!(
            err(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[1]}]}]}"#),
            format!("{SPAN}: expected an object, found a number")
        );
        assert_eq!(
            err(r#"{"resourceSpans":[{"resource":"r"}]}"#),
            "resourceSpans[0].resource: expected an object, found a string"
        );
        assert_eq!(
            err(&in_span(r#""name":5"#)),
            format!("{SPAN}.name: expected a string, found a number")
        );
        assert_eq!(
            err(r#"{"resourceSpans":[{"resource":{"entityRefs":[{"idKeys":["a",1]}]}}]}"#),
            "resourceSpans[0].resource.entityRefs[0].idKeys[1]: expected a string, found a number"
        );
        assert_eq!(
            err(r#"{"resourceSpans":[{"resource":{"entityRefs":[{"descriptionKeys":"a"}]}}]}"#),
            "resourceSpans[0].resource.entityRefs[0].descriptionKeys: expected an array of strings, found a string"
        );
    }

    #[test]
    fn id_errors() {
        assert_eq!(
            err(&in_span(r#""traceId":"5b8efff798038103d269b633813fc60""#)),
            format!("{SPAN}.traceId: not hex: odd number of digits (31)")
        );
        assert_eq!(
            err(&in_span(r#""spanId":"eee19b7ec3c1b17g""#)),
            format!("{SPAN}.spanId: not hex: 'g' at 15")
        );
        assert_eq!(
            err(&in_span(r#""parentSpanId":"0xzz""#)),
            format!("{SPAN}.parentSpanId: not hex: 'z' at 2")
        );
        assert_eq!(
            err(&in_span(r#""links":[{},{"traceId":12}]"#)),
            format!("{SPAN}.links[1].traceId: expected a hex string, found a number")
        );
        // Multi-byte characters are not hex either (no panic on a char boundary).
        assert_eq!(
            err(&in_span(r#""spanId":"éé""#)),
            format!("{SPAN}.spanId: not hex: '\u{c3}' at 0")
        );
    }

    #[test]
    fn integer_errors() {
        assert_eq!(
            err(&in_span(r#""startTimeUnixNano":"soon""#)),
            format!("{SPAN}.startTimeUnixNano: \"soon\" is not a decimal integer")
        );
        assert_eq!(
            err(&in_span(r#""endTimeUnixNano":-1"#)),
            format!("{SPAN}.endTimeUnixNano: -1 is out of range [0, 18446744073709551615]")
        );
        assert_eq!(
            err(&in_span(r#""endTimeUnixNano":"18446744073709551616""#)),
            format!(
                "{SPAN}.endTimeUnixNano: 18446744073709551616 is out of range [0, 18446744073709551615]"
            )
        );
        assert_eq!(
            err(&in_span(r#""endTimeUnixNano":1.5"#)),
            format!("{SPAN}.endTimeUnixNano: 1.5 is not an integer in [0, 18446744073709551615]")
        );
        assert_eq!(
            err(&in_span(r#""endTimeUnixNano":1e30"#)),
            format!("{SPAN}.endTimeUnixNano: 1e+30 is not an integer in [0, 18446744073709551615]")
        );
        assert_eq!(
            err(&in_span(r#""droppedLinksCount":4294967296"#)),
            format!("{SPAN}.droppedLinksCount: 4294967296 is out of range [0, 4294967295]")
        );
        assert_eq!(
            err(&in_span(r#""flags":true"#)),
            format!("{SPAN}.flags: expected an integer (number or string), found a boolean")
        );
        assert_eq!(
            err(&in_span(r#""events":[{"timeUnixNano":[]}]"#)),
            format!(
                "{SPAN}.events[0].timeUnixNano: expected an integer (number or string), found an array"
            )
        );
        assert_eq!(
            err(&in_span(
                r#""attributes":[{"key":"k","value":{"intValue":"9223372036854775808"}}]"#
            )),
            format!(
                "{SPAN}.attributes[0].value.intValue: 9223372036854775808 is out of range \
                 [-9223372036854775808, 9223372036854775807]"
            )
        );
        assert_eq!(
            err(&in_span(
                r#""attributes":[{"key":"k","keyStrindex":2147483648}]"#
            )),
            format!(
                "{SPAN}.attributes[0].keyStrindex: 2147483648 is out of range [-2147483648, 2147483647]"
            )
        );
    }

    #[test]
    fn enum_errors() {
        assert_eq!(
            err(&in_span(r#""kind":"SPAN_KIND_NOPE""#)),
            format!("{SPAN}.kind: unknown name \"SPAN_KIND_NOPE\"")
        );
        // A status code's name is not a span kind's.
        assert_eq!(
            err(&in_span(r#""kind":"STATUS_CODE_OK""#)),
            format!("{SPAN}.kind: unknown name \"STATUS_CODE_OK\"")
        );
        assert_eq!(
            err(&in_span(r#""status":{"code":{}}"#)),
            format!("{SPAN}.status.code: expected an integer (number or string), found an object")
        );
        assert_eq!(
            err(&in_span(r#""status":{"code":2147483648}"#)),
            format!("{SPAN}.status.code: 2147483648 is out of range [-2147483648, 2147483647]")
        );
    }

    #[test]
    fn any_value_errors() {
        let at = format!("{SPAN}.attributes[0].value");
        let bad = |value: &str| err(&in_span(&format!(r#""attributes":[{{"value":{value}}}]"#)));
        assert_eq!(
            bad(r#"{"stringValue":"a","intValue":1}"#),
            format!("{at}: more than one value (a second in \"intValue\"); an AnyValue holds one")
        );
        assert_eq!(
            bad(r#"{"boolValue":"true"}"#),
            format!("{at}.boolValue: expected true or false, found a string")
        );
        assert_eq!(
            bad(r#"{"doubleValue":"lots"}"#),
            format!(
                "{at}.doubleValue: \"lots\" is not a number, \"NaN\", \"Infinity\" or \"-Infinity\""
            )
        );
        assert_eq!(
            bad(r#"{"doubleValue":false}"#),
            format!("{at}.doubleValue: expected a number, found a boolean")
        );
        assert_eq!(
            bad(r#"{"bytesValue":"AQ*D"}"#),
            format!("{at}.bytesValue: not base64: '*' at 2")
        );
        assert_eq!(
            bad(r#"{"bytesValue":"AQI=="}"#),
            format!("{at}.bytesValue: not base64: padded to a length that is not a multiple of 4")
        );
        assert_eq!(
            bad(r#"{"bytesValue":"AQIDB"}"#),
            format!("{at}.bytesValue: not base64: length leaves a single character")
        );
        assert_eq!(
            bad(r#"{"bytesValue":1}"#),
            format!("{at}.bytesValue: expected a base64 string, found a number")
        );
        assert_eq!(
            bad(
                r#"{"arrayValue":{"values":[{"kvlistValue":{"values":[{"value":{"intValue":"x"}}]}}]}}"#
            ),
            format!(
                "{at}.arrayValue.values[0].kvlistValue.values[0].value.intValue: \"x\" is not a decimal integer"
            )
        );
        assert_eq!(
            bad(r#"{"arrayValue":[]}"#),
            format!("{at}.arrayValue: expected an object, found an array")
        );
    }

    #[test]
    fn both_key_spellings_and_nulls() {
        let camel = decode_request(
            in_span(
                r#""traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174",
                "parentSpanId":"0x0102030405060708","traceState":"a=b","name":"n","kind":2,
                "startTimeUnixNano":"1","endTimeUnixNano":2,"droppedAttributesCount":"3",
                "droppedEventsCount":4,"droppedLinksCount":5,"flags":"257",
                "status":{"code":"STATUS_CODE_ERROR","message":"m"},
                "events":[{"timeUnixNano":6,"name":"e","droppedAttributesCount":7}],
                "links":[{"traceId":"","spanId":"00","traceState":"c","flags":8,"droppedAttributesCount":9}]"#,
            )
            .as_bytes(),
        )
        .unwrap();
        let snake = decode_request(
            in_span(
                r#""trace_id":"5b8efff798038103d269b633813fc60c","span_id":"EEE19B7EC3C1B174",
                "parent_span_id":"0102030405060708","trace_state":"a=b","name":"n","kind":"SPAN_KIND_SERVER",
                "start_time_unix_nano":1,"end_time_unix_nano":"2","dropped_attributes_count":3,
                "dropped_events_count":"4","dropped_links_count":"5","flags":257,
                "status":{"code":2,"message":"m"},
                "events":[{"time_unix_nano":"6","name":"e","dropped_attributes_count":"7"}],
                "links":[{"trace_id":null,"span_id":"00","trace_state":"c","flags":"8","dropped_attributes_count":9}]"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(camel, snake);
        let span = &camel.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.parent_span_id, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.flags, 257);
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Error as i32);
        assert_eq!(span.events[0].dropped_attributes_count, 7);
        assert!(span.links[0].trace_id.is_empty());
        assert_eq!(span.links[0].span_id, [0]);

        let nulls = one_span(
            r#""traceId":null,"spanId":null,"name":null,"kind":null,"startTimeUnixNano":null,
            "attributes":null,"events":[null],"links":null,"status":null,"flags":null"#,
        );
        assert_eq!(
            nulls,
            Span {
                events: vec![Event::default()],
                ..Span::default()
            }
        );
        let req = decode_request(
            br#"{"resource_spans":[{"resource":null,"scope_spans":[{"scope":{"name":"s","version":null}}],
               "schema_url":"u"}],"unknown":{"deep":[1]}}"#,
        )
        .unwrap();
        assert_eq!(req.resource_spans[0].schema_url, "u");
        assert_eq!(
            req.resource_spans[0].scope_spans[0]
                .scope
                .as_ref()
                .unwrap()
                .name,
            "s"
        );
        assert!(req.resource_spans[0].resource.is_none());
    }

    #[test]
    fn scalar_forms() {
        use any_value::Value as V;
        assert_eq!(attr(r#"{"intValue":"-5"}"#), Some(V::IntValue(-5)));
        assert_eq!(attr(r#"{"intValue":-5}"#), Some(V::IntValue(-5)));
        assert_eq!(attr(r#"{"int_value":" +7 "}"#), Some(V::IntValue(7)));
        assert_eq!(attr(r#"{"intValue":1e3}"#), Some(V::IntValue(1000)));
        assert_eq!(attr(r#"{"doubleValue":1}"#), Some(V::DoubleValue(1.0)));
        assert_eq!(attr(r#"{"doubleValue":"2.5"}"#), Some(V::DoubleValue(2.5)));
        assert_eq!(
            attr(r#"{"doubleValue":"Infinity"}"#),
            Some(V::DoubleValue(f64::INFINITY))
        );
        assert_eq!(
            attr(r#"{"doubleValue":"-Infinity"}"#),
            Some(V::DoubleValue(f64::NEG_INFINITY))
        );
        assert!(matches!(attr(r#"{"doubleValue":"NaN"}"#), Some(V::DoubleValue(d)) if d.is_nan()));
        for b64 in ["+/8=", "-_8", "-_8=", "+/8"] {
            assert_eq!(
                attr(&format!(r#"{{"bytesValue":"{b64}"}}"#)),
                Some(V::BytesValue(vec![0xfb, 0xff])),
                "{b64}"
            );
        }
        assert_eq!(
            attr(r#"{"bytesValue":"AQIDBA=="}"#),
            Some(V::BytesValue(vec![1, 2, 3, 4]))
        );
        assert_eq!(
            attr(r#"{"bytesValue":"AQIDBAU"}"#),
            Some(V::BytesValue(vec![1, 2, 3, 4, 5]))
        );
        assert_eq!(attr(r#"{"bytesValue":""}"#), Some(V::BytesValue(vec![])));
        assert_eq!(
            attr(r#"{"stringValueStrindex":3}"#),
            Some(V::StringValueStrindex(3))
        );
        assert_eq!(attr(r#"{"boolValue":true}"#), Some(V::BoolValue(true)));
        // No member, only nulls, or only unknown members: an empty value.
        assert_eq!(attr("{}"), None);
        assert_eq!(attr(r#"{"stringValue":null,"intValue":null}"#), None);
        assert_eq!(attr(r#"{"futureValue":1}"#), None);
        assert_eq!(
            attr(r#"{"kvlistValue":{"values":[{"key":"a","value":{"arrayValue":{}}}]}}"#),
            Some(V::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "a".into(),
                    value: Some(AnyValue {
                        value: Some(V::ArrayValue(ArrayValue::default()))
                    }),
                    key_strindex: 0,
                }]
            }))
        );
    }

    #[test]
    fn resource_and_entity_refs() {
        let req = decode_request(
            br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"s"}}],
               "droppedAttributesCount":1,"entity_refs":[{"type":"service","schemaUrl":"u",
               "idKeys":["service.name"],"description_keys":null}]}}]}"#,
        )
        .unwrap();
        let resource = req.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        assert_eq!(resource.dropped_attributes_count, 1);
        assert_eq!(
            resource.entity_refs,
            [EntityRef {
                schema_url: "u".into(),
                r#type: "service".into(),
                id_keys: vec!["service.name".into()],
                description_keys: vec![],
            }]
        );
    }

    #[test]
    fn nesting_is_bounded_by_the_parser() {
        // 60 levels of arrayValue = 180 levels of JSON: serde_json refuses it, no deep recursion.
        let depth = 60;
        let mut value = String::from(r#"{"intValue":1}"#);
        for _ in 0..depth {
            value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
        }
        let e = err(&in_span(&format!(r#""attributes":[{{"value":{value}}}]"#)));
        assert!(e.contains("recursion limit exceeded"), "{e}");
        // 35 levels (105 + 7 of JSON) decode.
        let mut value = String::from(r#"{"intValue":1}"#);
        for _ in 0..35 {
            value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
        }
        let span = one_span(&format!(r#""attributes":[{{"value":{value}}}]"#));
        let mut v = span.attributes[0].value.clone().unwrap();
        let mut levels = 0;
        while let Some(any_value::Value::ArrayValue(a)) = v.value {
            v = a.values[0].clone();
            levels += 1;
        }
        assert_eq!(levels, 35);
        assert_eq!(v.value, Some(any_value::Value::IntValue(1)));
    }
}
