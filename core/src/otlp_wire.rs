//! A zero-copy reader of OTLP/protobuf `ExportTraceServiceRequest`s.
//!
//! The receiver keeps each request as the bytes it arrived in; this module checks them
//! ([`validate_request`], no allocation) and later reads them as borrowed views
//! ([`RequestView::parse`]: strings and ids are `&[u8]` into the request, strings checked for
//! UTF-8 but not converted to `&str` (that would check them a third time), one `Vec` per
//! repeated field that has elements) for the translator.
//!
//! It accepts exactly what `prost`'s `ExportTraceServiceRequest::decode` (the generated types of
//! `opentelemetry-proto`) accepts, and a view holds the values `prost` would decode:
//! - keys: a varint of at most 32 bits, wire types 0–5, field number ≥ 1;
//! - varints of at most 10 bytes, the tenth at most 1;
//! - a known field with another wire type than its declared one is an error; unknown fields are
//!   skipped (groups included, nested groups counting towards the depth limit);
//! - string fields must be UTF-8;
//! - a non-repeated scalar, string or bytes field that occurs more than once: the last wins;
//!   a non-repeated message field that occurs more than once: the occurrences are merged; a
//!   `oneof` message variant merges into the same variant and replaces another;
//! - repeated message fields: one element per occurrence (there are no repeated scalars in these
//!   messages besides `EntityRef`'s strings, which are never packed);
//! - nesting: prost's recursion limit of 100 (each embedded message, and each unknown group level,
//!   takes one).
//!
//! The differential tests below (and the `otlp_wire` fuzz target) hold this against prost.

use thiserror::Error;

/// prost's `RECURSION_LIMIT`.
const RECURSION_LIMIT: u32 = 100;

/// Why a request is not a valid `ExportTraceServiceRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// A field, length or varint runs past the end of its message.
    #[error("truncated protobuf: a field runs past the end of its message")]
    Truncated,
    /// A varint longer than 10 bytes or over 64 bits.
    #[error("invalid protobuf varint")]
    InvalidVarint,
    /// A field key over 32 bits, with field number 0, or with wire type 6 or 7.
    #[error("invalid protobuf field key {0}")]
    InvalidKey(u64),
    /// An end-group marker without its start.
    #[error("unexpected protobuf end-group tag")]
    UnexpectedEndGroup,
    /// A known field with another wire type than the one it is declared with.
    #[error("field {tag} of {message} has wire type {actual}, expected {expected}")]
    WireType {
        /// The message type.
        message: &'static str,
        /// The field number.
        tag: u32,
        /// The declared wire type.
        expected: u8,
        /// The wire type found.
        actual: u8,
    },
    /// A string field that is not UTF-8.
    #[error("field {tag} of {message} is not valid UTF-8")]
    InvalidUtf8 {
        /// The message type.
        message: &'static str,
        /// The field number.
        tag: u32,
    },
    /// Messages nested deeper than prost's limit of 100.
    #[error("protobuf messages nested deeper than {RECURSION_LIMIT}")]
    RecursionLimit,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A cursor over one message's bytes.
#[derive(Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    #[inline(always)]
    fn has_remaining(&self) -> bool {
        !self.buf.is_empty()
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireError> {
        // One byte (field keys, most lengths): the common case.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&b, rest)) = self.buf.split_first() else {
                return Err(WireError::InvalidVarint);
            };
            self.buf = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(WireError::InvalidVarint);
                }
                return Ok(value);
            }
        }
        Err(WireError::InvalidVarint)
    }

    #[inline(always)]
    fn key(&mut self) -> Result<(u32, u8), WireError> {
        let key = self.varint()?;
        let wire = (key & 7) as u8;
        if key > u64::from(u32::MAX) || wire > FIXED32 || key >> 3 == 0 {
            return Err(WireError::InvalidKey(key));
        }
        Ok(((key >> 3) as u32, wire))
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    #[inline(always)]
    fn len_delimited(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        if len > self.buf.len() as u64 {
            return Err(WireError::Truncated);
        }
        self.take(len as usize)
    }

    fn fixed32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn fixed64(&mut self) -> Result<u64, WireError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Skips an unknown field whose key was just read (prost's `skip_field`).
    fn skip(&mut self, wire: u8, tag: u32, ctx: u32) -> Result<(), WireError> {
        if ctx == 0 {
            return Err(WireError::RecursionLimit);
        }
        match wire {
            VARINT => {
                self.varint()?;
            }
            FIXED64 => {
                self.take(8)?;
            }
            FIXED32 => {
                self.take(4)?;
            }
            LEN => {
                self.len_delimited()?;
            }
            START_GROUP => loop {
                let (inner_tag, inner_wire) = self.key()?;
                if inner_wire == END_GROUP {
                    if inner_tag != tag {
                        return Err(WireError::UnexpectedEndGroup);
                    }
                    break;
                }
                self.skip(inner_wire, inner_tag, ctx - 1)?;
            },
            _ => return Err(WireError::UnexpectedEndGroup),
        }
        Ok(())
    }
}

/// The message types of a trace export request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Msg {
    Request,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Msg {
    fn name(self) -> &'static str {
        match self {
            Msg::Request => "ExportTraceServiceRequest",
            Msg::ResourceSpans => "ResourceSpans",
            Msg::Resource => "Resource",
            Msg::EntityRef => "EntityRef",
            Msg::ScopeSpans => "ScopeSpans",
            Msg::Scope => "InstrumentationScope",
            Msg::Span => "Span",
            Msg::Event => "Span.Event",
            Msg::Link => "Span.Link",
            Msg::Status => "Status",
            Msg::KeyValue => "KeyValue",
            Msg::AnyValue => "AnyValue",
            Msg::ArrayValue => "ArrayValue",
            Msg::KeyValueList => "KeyValueList",
        }
    }
}

/// How a known field is declared.
#[derive(Clone, Copy)]
enum Field {
    /// int32, int64, uint32, bool, enum.
    Varint,
    Fixed32,
    Fixed64,
    Str,
    Bytes,
    Message(Msg),
    Unknown,
}

impl Field {
    #[inline(always)]
    const fn wire(self) -> u8 {
        match self {
            Field::Varint => VARINT,
            Field::Fixed32 => FIXED32,
            Field::Fixed64 => FIXED64,
            Field::Str | Field::Bytes | Field::Message(_) => LEN,
            Field::Unknown => u8::MAX,
        }
    }
}

const MSGS: [Msg; 14] = [
    Msg::Request,
    Msg::ResourceSpans,
    Msg::Resource,
    Msg::EntityRef,
    Msg::ScopeSpans,
    Msg::Scope,
    Msg::Span,
    Msg::Event,
    Msg::Link,
    Msg::Status,
    Msg::KeyValue,
    Msg::AnyValue,
    Msg::ArrayValue,
    Msg::KeyValueList,
];

/// Highest known field number.
const MAX_TAG: usize = 16;

/// [`declared`] as a table, by message and field number.
const TABLE: [[Field; MAX_TAG + 1]; MSGS.len()] = {
    let mut t = [[Field::Unknown; MAX_TAG + 1]; MSGS.len()];
    let mut m = 0;
    while m < MSGS.len() {
        let mut tag = 1;
        while tag <= MAX_TAG {
            t[MSGS[m] as usize][tag] = declared(MSGS[m], tag as u32);
            tag += 1;
        }
        m += 1;
    }
    t
};

#[inline(always)]
fn field(msg: Msg, tag: u32) -> Field {
    match TABLE[msg as usize].get(tag as usize) {
        Some(&f) => f,
        None => Field::Unknown,
    }
}

/// The field table: opentelemetry-proto 0.33's generated trace v1, common v1, resource v1 and
/// collector trace v1 messages.
const fn declared(msg: Msg, tag: u32) -> Field {
    use Field::*;
    match (msg, tag) {
        (Msg::Request, 1) => Message(Msg::ResourceSpans),
        (Msg::ResourceSpans, 1) => Message(Msg::Resource),
        (Msg::ResourceSpans, 2) => Message(Msg::ScopeSpans),
        (Msg::ResourceSpans, 3) => Str,
        (Msg::Resource, 1) => Message(Msg::KeyValue),
        (Msg::Resource, 2) => Varint,
        (Msg::Resource, 3) => Message(Msg::EntityRef),
        (Msg::EntityRef, 1..=4) => Str,
        (Msg::ScopeSpans, 1) => Message(Msg::Scope),
        (Msg::ScopeSpans, 2) => Message(Msg::Span),
        (Msg::ScopeSpans, 3) => Str,
        (Msg::Scope, 1 | 2) => Str,
        (Msg::Scope, 3) => Message(Msg::KeyValue),
        (Msg::Scope, 4) => Varint,
        (Msg::Span, 1 | 2 | 4) => Bytes,
        (Msg::Span, 3 | 5) => Str,
        (Msg::Span, 6 | 10 | 12 | 14) => Varint,
        (Msg::Span, 7 | 8) => Fixed64,
        (Msg::Span, 9) => Message(Msg::KeyValue),
        (Msg::Span, 11) => Message(Msg::Event),
        (Msg::Span, 13) => Message(Msg::Link),
        (Msg::Span, 15) => Message(Msg::Status),
        (Msg::Span, 16) => Fixed32,
        (Msg::Event, 1) => Fixed64,
        (Msg::Event, 2) => Str,
        (Msg::Event, 3) => Message(Msg::KeyValue),
        (Msg::Event, 4) => Varint,
        (Msg::Link, 1 | 2) => Bytes,
        (Msg::Link, 3) => Str,
        (Msg::Link, 4) => Message(Msg::KeyValue),
        (Msg::Link, 5) => Varint,
        (Msg::Link, 6) => Fixed32,
        (Msg::Status, 2) => Str,
        (Msg::Status, 3) => Varint,
        (Msg::KeyValue, 1) => Str,
        (Msg::KeyValue, 2) => Message(Msg::AnyValue),
        (Msg::KeyValue, 3) => Varint,
        (Msg::AnyValue, 1) => Str,
        (Msg::AnyValue, 2 | 3 | 8) => Varint,
        (Msg::AnyValue, 4) => Fixed64,
        (Msg::AnyValue, 5) => Message(Msg::ArrayValue),
        (Msg::AnyValue, 6) => Message(Msg::KeyValueList),
        (Msg::AnyValue, 7) => Bytes,
        (Msg::ArrayValue, 1) => Message(Msg::AnyValue),
        (Msg::KeyValueList, 1) => Message(Msg::KeyValue),
        _ => Unknown,
    }
}

/// Walks one message's fields, checking everything prost checks; counts `Span`s.
fn walk(mut r: Reader<'_>, msg: Msg, ctx: u32, spans: &mut usize) -> Result<(), WireError> {
    while r.has_remaining() {
        let (tag, wire) = r.key()?;
        let f = field(msg, tag);
        if let Field::Unknown = f {
            r.skip(wire, tag, ctx)?;
            continue;
        }
        check_wire(msg, tag, f.wire(), wire)?;
        match f {
            Field::Varint => {
                r.varint()?;
            }
            Field::Fixed32 => {
                r.take(4)?;
            }
            Field::Fixed64 => {
                r.take(8)?;
            }
            Field::Bytes => {
                r.len_delimited()?;
            }
            Field::Str => {
                let b = r.len_delimited()?;
                // Word-at-a-time ASCII first: cheaper than `from_utf8` on short strings.
                if !b.is_ascii() {
                    utf8(b, msg, tag)?;
                }
            }
            Field::Message(m) => {
                if ctx == 0 {
                    return Err(WireError::RecursionLimit);
                }
                let sub = r.len_delimited()?;
                match m {
                    Msg::KeyValue => walk_key_value(sub, ctx - 1, spans)?,
                    Msg::Span => {
                        *spans += 1;
                        walk(Reader::new(sub), m, ctx - 1, spans)?;
                    }
                    _ => walk(Reader::new(sub), m, ctx - 1, spans)?,
                }
            }
            Field::Unknown => {}
        }
    }
    Ok(())
}

#[inline(always)]
fn check_wire(msg: Msg, tag: u32, expected: u8, actual: u8) -> Result<(), WireError> {
    if expected == actual {
        Ok(())
    } else {
        Err(WireError::WireType {
            message: msg.name(),
            tag,
            expected,
            actual,
        })
    }
}

#[inline(always)]
fn utf8(bytes: &[u8], msg: Msg, tag: u32) -> Result<&str, WireError> {
    std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 {
        message: msg.name(),
        tag,
    })
}

/// The scalar of a [`SimpleKeyValue`]; a string as its byte range in the message.
#[derive(Clone)]
enum SimpleValue {
    Str(std::ops::Range<usize>),
    Bool(bool),
    Int(i64),
    Double(f64),
}

/// A `KeyValue` as SDKs encode it: `key` (1), then `value` (2) holding exactly one scalar field
/// of `AnyValue` (string, bool, int or double), each once, in field order, nothing else.
/// Strings are byte ranges of the message's body.
struct SimpleKeyValue {
    key: std::ops::Range<usize>,
    value: SimpleValue,
}

/// Reads `bytes` (a `KeyValue` message's body) if it has the simple shape of [`SimpleKeyValue`];
/// `None` for anything else (other shapes, errors, strings not checked yet), which the generic
/// path then reads (and rejects) field by field. Where it returns a value, that value is what the
/// generic path reads: each field occurs once, so "last one wins" and merging do not apply.
/// Strings are not checked for UTF-8 here.
#[inline(always)]
fn simple_key_value(bytes: &[u8]) -> Option<SimpleKeyValue> {
    // Offset in `bytes` of what `r` has left.
    let at = |r: &Reader<'_>| bytes.len() - r.buf.len();
    let mut r = Reader::new(bytes);
    if r.varint().ok()? != u64::from((1u32 << 3) | u32::from(LEN)) {
        return None;
    }
    let key_len = r.len_delimited().ok()?.len();
    let key = at(&r) - key_len..at(&r);
    if r.varint().ok()? != u64::from((2u32 << 3) | u32::from(LEN)) {
        return None;
    }
    let mut v = Reader::new(r.len_delimited().ok()?);
    if r.has_remaining() {
        return None;
    }
    let value = match v.varint().ok()? {
        // string_value (1, LEN)
        0x0a => {
            let len = v.len_delimited().ok()?.len();
            // `v` ends where `bytes` does (nothing follows the value).
            SimpleValue::Str(at(&v) - len..at(&v))
        }
        // bool_value (2, VARINT)
        0x10 => SimpleValue::Bool(v.varint().ok()? != 0),
        // int_value (3, VARINT)
        0x18 => SimpleValue::Int(v.varint().ok()? as i64),
        // double_value (4, FIXED64)
        0x21 => SimpleValue::Double(f64::from_bits(v.fixed64().ok()?)),
        _ => return None,
    };
    if v.has_remaining() {
        return None;
    }
    Some(SimpleKeyValue { key, value })
}

/// Whether `b` is UTF-8, ASCII checked first (word at a time: cheaper than `from_utf8` on short
/// strings).
#[inline(always)]
fn is_utf8(b: &[u8]) -> bool {
    b.is_ascii() || std::str::from_utf8(b).is_ok()
}

/// Checks a `KeyValue` message (`body`) at nesting budget `ctx` (what [`walk`] would be called
/// with for it): the simple shape directly, anything else (or a string to reject) field by field.
#[inline(always)]
fn walk_key_value(body: &[u8], ctx: u32, spans: &mut usize) -> Result<(), WireError> {
    // The generic path needs one more level for the `AnyValue`.
    if ctx >= 1
        && let Some(kv) = simple_key_value(body)
        && match kv.value {
            // Tags and one-byte lengths are ASCII: an all-ASCII message has ASCII strings.
            SimpleValue::Str(v) => body.is_ascii() || (is_utf8(&body[kv.key]) && is_utf8(&body[v])),
            _ => is_utf8(&body[kv.key]),
        }
    {
        return Ok(());
    }
    walk(Reader::new(body), Msg::KeyValue, ctx, spans)
}

/// Checks that `bytes` is an `ExportTraceServiceRequest` prost would decode, without allocating,
/// and returns its number of spans.
pub fn validate_request(bytes: &[u8]) -> Result<usize, WireError> {
    let mut spans = 0;
    walk(
        Reader::new(bytes),
        Msg::Request,
        RECURSION_LIMIT,
        &mut spans,
    )?;
    Ok(spans)
}

/// `ExportTraceServiceRequest`, borrowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestView<'a> {
    /// `resource_spans` (1).
    pub resource_spans: Vec<ResourceSpansView<'a>>,
}

/// `ResourceSpans`, borrowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSpansView<'a> {
    /// `resource` (1).
    pub resource: Option<ResourceView<'a>>,
    /// `scope_spans` (2).
    pub scope_spans: Vec<ScopeSpansView<'a>>,
    /// `schema_url` (3).
    pub schema_url: &'a [u8],
}

/// `Resource`, borrowed. Its `entity_refs` (3) are checked, not kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceView<'a> {
    /// `attributes` (1).
    pub attributes: Vec<KeyValueView<'a>>,
    /// `dropped_attributes_count` (2).
    pub dropped_attributes_count: u32,
}

/// `ScopeSpans`, borrowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeSpansView<'a> {
    /// `scope` (1).
    pub scope: Option<ScopeView<'a>>,
    /// `spans` (2).
    pub spans: Vec<SpanView<'a>>,
    /// `schema_url` (3).
    pub schema_url: &'a [u8],
}

/// `InstrumentationScope`, borrowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeView<'a> {
    /// `name` (1).
    pub name: &'a [u8],
    /// `version` (2).
    pub version: &'a [u8],
    /// `attributes` (3).
    pub attributes: Vec<KeyValueView<'a>>,
    /// `dropped_attributes_count` (4).
    pub dropped_attributes_count: u32,
}

/// `Span`, borrowed; the fields keep the generated type's names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanView<'a> {
    /// `trace_id` (1).
    pub trace_id: &'a [u8],
    /// `span_id` (2).
    pub span_id: &'a [u8],
    /// `trace_state` (3).
    pub trace_state: &'a [u8],
    /// `parent_span_id` (4).
    pub parent_span_id: &'a [u8],
    /// `flags` (16).
    pub flags: u32,
    /// `name` (5).
    pub name: &'a [u8],
    /// `kind` (6), the `SpanKind` number.
    pub kind: i32,
    /// `start_time_unix_nano` (7).
    pub start_time_unix_nano: u64,
    /// `end_time_unix_nano` (8).
    pub end_time_unix_nano: u64,
    /// `attributes` (9).
    pub attributes: Vec<KeyValueView<'a>>,
    /// `dropped_attributes_count` (10).
    pub dropped_attributes_count: u32,
    /// `events` (11).
    pub events: Vec<EventView<'a>>,
    /// `dropped_events_count` (12).
    pub dropped_events_count: u32,
    /// `links` (13).
    pub links: Vec<LinkView<'a>>,
    /// `dropped_links_count` (14).
    pub dropped_links_count: u32,
    /// `status` (15).
    pub status: Option<StatusView<'a>>,
}

/// `Span.Event`, borrowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventView<'a> {
    /// `time_unix_nano` (1).
    pub time_unix_nano: u64,
    /// `name` (2).
    pub name: &'a [u8],
    /// `attributes` (3).
    pub attributes: Vec<KeyValueView<'a>>,
    /// `dropped_attributes_count` (4).
    pub dropped_attributes_count: u32,
}

/// `Span.Link`, borrowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkView<'a> {
    /// `trace_id` (1).
    pub trace_id: &'a [u8],
    /// `span_id` (2).
    pub span_id: &'a [u8],
    /// `trace_state` (3).
    pub trace_state: &'a [u8],
    /// `attributes` (4).
    pub attributes: Vec<KeyValueView<'a>>,
    /// `dropped_attributes_count` (5).
    pub dropped_attributes_count: u32,
    /// `flags` (6).
    pub flags: u32,
}

/// `Status`, borrowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusView<'a> {
    /// `message` (2).
    pub message: &'a [u8],
    /// `code` (3), the `StatusCode` number.
    pub code: i32,
}

/// `KeyValue`, borrowed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyValueView<'a> {
    /// `key` (1).
    pub key: &'a [u8],
    /// `value` (2).
    pub value: Option<AnyValueView<'a>>,
    /// `key_strindex` (3).
    pub key_strindex: i32,
}

/// `AnyValue`, borrowed: its `value` oneof, `Empty` when unset.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum AnyValueView<'a> {
    /// No value set.
    #[default]
    Empty,
    /// `string_value` (1).
    String(&'a [u8]),
    /// `bool_value` (2).
    Bool(bool),
    /// `int_value` (3).
    Int(i64),
    /// `double_value` (4).
    Double(f64),
    /// `array_value` (5): its `values`.
    Array(Vec<AnyValueView<'a>>),
    /// `kvlist_value` (6): its `values`.
    Kvlist(Vec<KeyValueView<'a>>),
    /// `bytes_value` (7).
    Bytes(&'a [u8]),
    /// `string_value_strindex` (8).
    StringStrindex(i32),
}

/// Reads a known field's value; `Unknown` fields are skipped by the caller.
struct Fields<'a> {
    r: Reader<'a>,
    msg: Msg,
    ctx: u32,
}

impl<'a> Fields<'a> {
    /// The next known field's tag (unknown fields skipped), with its wire type checked.
    #[inline(always)]
    fn next(&mut self) -> Result<Option<u32>, WireError> {
        while self.r.has_remaining() {
            let (tag, wire) = self.r.key()?;
            let f = field(self.msg, tag);
            if f.wire() == wire {
                return Ok(Some(tag));
            }
            self.unexpected(f, tag, wire)?;
        }
        Ok(None)
    }

    /// An unknown field (skipped) or a known one with the wrong wire type (an error).
    #[cold]
    #[inline(never)]
    fn unexpected(&mut self, f: Field, tag: u32, wire: u8) -> Result<(), WireError> {
        if let Field::Unknown = f {
            return self.r.skip(wire, tag, self.ctx);
        }
        check_wire(self.msg, tag, f.wire(), wire)
    }

    /// A string field: its bytes, checked for UTF-8 (ASCII first) but not converted.
    #[inline(always)]
    fn str(&mut self, tag: u32) -> Result<&'a [u8], WireError> {
        let b = self.r.len_delimited()?;
        if is_utf8(b) {
            Ok(b)
        } else {
            Err(WireError::InvalidUtf8 {
                message: self.msg.name(),
                tag,
            })
        }
    }

    #[inline(always)]
    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        self.r.len_delimited()
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, WireError> {
        self.r.varint()
    }

    /// An embedded message's fields, one level deeper.
    #[inline(always)]
    fn message(&mut self, msg: Msg) -> Result<Fields<'a>, WireError> {
        if self.ctx == 0 {
            return Err(WireError::RecursionLimit);
        }
        Ok(Fields {
            r: Reader::new(self.r.len_delimited()?),
            msg,
            ctx: self.ctx - 1,
        })
    }
}

impl<'a> RequestView<'a> {
    /// Reads a request; the same errors as [`validate_request`].
    pub fn parse(bytes: &'a [u8]) -> Result<RequestView<'a>, WireError> {
        let mut f = Fields {
            r: Reader::new(bytes),
            msg: Msg::Request,
            ctx: RECURSION_LIMIT,
        };
        let mut view = RequestView::default();
        // Span attributes are gathered here and then moved into a `Vec` of their exact size.
        let mut scratch = Vec::new();
        while let Some(tag) = f.next()? {
            if tag == 1 {
                let mut rs = ResourceSpansView::default();
                rs.merge(f.message(Msg::ResourceSpans)?, &mut scratch)?;
                view.resource_spans.push(rs);
            }
        }
        Ok(view)
    }

    /// Number of spans.
    pub fn span_count(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }
}

impl<'a> ResourceSpansView<'a> {
    fn merge(
        &mut self,
        mut f: Fields<'a>,
        scratch: &mut Vec<KeyValueView<'a>>,
    ) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                1 => self
                    .resource
                    .get_or_insert_with(Default::default)
                    .merge(f.message(Msg::Resource)?)?,
                2 => {
                    let mut ss = ScopeSpansView::default();
                    ss.merge(f.message(Msg::ScopeSpans)?, scratch)?;
                    self.scope_spans.push(ss);
                }
                _ => self.schema_url = f.str(tag)?,
            }
        }
        Ok(())
    }
}

impl<'a> ResourceView<'a> {
    fn merge(&mut self, mut f: Fields<'a>) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                1 => KeyValueView::push(&mut f, &mut self.attributes)?,
                2 => self.dropped_attributes_count = f.varint()? as u32,
                _ => {
                    let sub = f.message(Msg::EntityRef)?;
                    walk(sub.r, Msg::EntityRef, sub.ctx, &mut 0)?;
                }
            }
        }
        Ok(())
    }
}

impl<'a> ScopeSpansView<'a> {
    fn merge(
        &mut self,
        mut f: Fields<'a>,
        scratch: &mut Vec<KeyValueView<'a>>,
    ) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                1 => self
                    .scope
                    .get_or_insert_with(Default::default)
                    .merge(f.message(Msg::Scope)?)?,
                2 => {
                    let sub = f.message(Msg::Span)?;
                    self.spans.push(SpanView::default());
                    if let Some(span) = self.spans.last_mut() {
                        span.merge(sub, scratch)?;
                    }
                }
                _ => self.schema_url = f.str(tag)?,
            }
        }
        Ok(())
    }
}

impl<'a> ScopeView<'a> {
    fn merge(&mut self, mut f: Fields<'a>) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                1 => self.name = f.str(tag)?,
                2 => self.version = f.str(tag)?,
                3 => KeyValueView::push(&mut f, &mut self.attributes)?,
                _ => self.dropped_attributes_count = f.varint()? as u32,
            }
        }
        Ok(())
    }
}

impl<'a> SpanView<'a> {
    /// Reads a span's fields; its attributes go through `scratch` (left empty) into a `Vec` of
    /// their exact size.
    fn merge(
        &mut self,
        mut f: Fields<'a>,
        scratch: &mut Vec<KeyValueView<'a>>,
    ) -> Result<(), WireError> {
        scratch.clear();
        let read = self.merge_fields(&mut f, scratch);
        if !scratch.is_empty() {
            self.attributes.reserve_exact(scratch.len());
            self.attributes.append(scratch);
        }
        read
    }

    fn merge_fields(
        &mut self,
        f: &mut Fields<'a>,
        attributes: &mut Vec<KeyValueView<'a>>,
    ) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                1 => self.trace_id = f.bytes()?,
                2 => self.span_id = f.bytes()?,
                3 => self.trace_state = f.str(tag)?,
                4 => self.parent_span_id = f.bytes()?,
                5 => self.name = f.str(tag)?,
                6 => self.kind = f.varint()? as i32,
                7 => self.start_time_unix_nano = f.r.fixed64()?,
                8 => self.end_time_unix_nano = f.r.fixed64()?,
                9 => KeyValueView::push(f, attributes)?,
                10 => self.dropped_attributes_count = f.varint()? as u32,
                11 => {
                    let mut event = EventView::default();
                    event.merge(f.message(Msg::Event)?)?;
                    self.events.push(event);
                }
                12 => self.dropped_events_count = f.varint()? as u32,
                13 => {
                    let mut link = LinkView::default();
                    link.merge(f.message(Msg::Link)?)?;
                    self.links.push(link);
                }
                14 => self.dropped_links_count = f.varint()? as u32,
                15 => self
                    .status
                    .get_or_insert_with(Default::default)
                    .merge(f.message(Msg::Status)?)?,
                _ => self.flags = f.r.fixed32()?,
            }
        }
        Ok(())
    }
}

impl<'a> EventView<'a> {
    fn merge(&mut self, mut f: Fields<'a>) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                1 => self.time_unix_nano = f.r.fixed64()?,
                2 => self.name = f.str(tag)?,
                3 => KeyValueView::push(&mut f, &mut self.attributes)?,
                _ => self.dropped_attributes_count = f.varint()? as u32,
            }
        }
        Ok(())
    }
}

impl<'a> LinkView<'a> {
    fn merge(&mut self, mut f: Fields<'a>) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                1 => self.trace_id = f.bytes()?,
                2 => self.span_id = f.bytes()?,
                3 => self.trace_state = f.str(tag)?,
                4 => KeyValueView::push(&mut f, &mut self.attributes)?,
                5 => self.dropped_attributes_count = f.varint()? as u32,
                _ => self.flags = f.r.fixed32()?,
            }
        }
        Ok(())
    }
}

impl<'a> StatusView<'a> {
    fn merge(&mut self, mut f: Fields<'a>) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                2 => self.message = f.str(tag)?,
                _ => self.code = f.varint()? as i32,
            }
        }
        Ok(())
    }
}

impl<'a> KeyValueView<'a> {
    /// Reads the `KeyValue` that is the current field of `parent`.
    #[inline]
    fn read(parent: &mut Fields<'a>) -> Result<KeyValueView<'a>, WireError> {
        let sub = parent.message(Msg::KeyValue)?;
        if let Some(kv) = KeyValueView::simple(&sub) {
            return Ok(kv);
        }
        let mut kv = KeyValueView::default();
        kv.merge(sub)?;
        Ok(kv)
    }

    /// Reads the `KeyValue` that is the current field of `parent` onto the end of `list`.
    #[inline]
    fn push(parent: &mut Fields<'a>, list: &mut Vec<KeyValueView<'a>>) -> Result<(), WireError> {
        let sub = parent.message(Msg::KeyValue)?;
        if let Some(kv) = KeyValueView::simple(&sub) {
            list.push(kv);
            return Ok(());
        }
        list.push(KeyValueView::default());
        match list.last_mut() {
            Some(kv) => kv.merge(sub),
            None => Ok(()),
        }
    }

    /// The `KeyValue` whose fields are `f`, if it has the simple shape ([`simple_key_value`]) and
    /// its strings are UTF-8; otherwise the generic path reads it.
    #[inline(always)]
    fn simple(f: &Fields<'a>) -> Option<KeyValueView<'a>> {
        // The generic path needs one more level for the `AnyValue`.
        if f.ctx == 0 {
            return None;
        }
        let body = f.r.buf;
        let kv = simple_key_value(body)?;
        let key = &body[kv.key];
        let value = match kv.value {
            // Tags and one-byte lengths are ASCII: an all-ASCII message has ASCII strings.
            SimpleValue::Str(v) => {
                let v = &body[v];
                if !(body.is_ascii() || (is_utf8(key) && is_utf8(v))) {
                    return None;
                }
                AnyValueView::String(v)
            }
            SimpleValue::Bool(b) => AnyValueView::Bool(b),
            SimpleValue::Int(i) => AnyValueView::Int(i),
            SimpleValue::Double(d) => AnyValueView::Double(d),
        };
        if !matches!(value, AnyValueView::String(_)) && !is_utf8(key) {
            return None;
        }
        Some(KeyValueView {
            key,
            value: Some(value),
            key_strindex: 0,
        })
    }

    fn merge(&mut self, mut f: Fields<'a>) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                1 => self.key = f.str(tag)?,
                2 => self
                    .value
                    .get_or_insert_with(Default::default)
                    .merge(f.message(Msg::AnyValue)?)?,
                _ => self.key_strindex = f.varint()? as i32,
            }
        }
        Ok(())
    }
}

impl<'a> AnyValueView<'a> {
    fn merge(&mut self, mut f: Fields<'a>) -> Result<(), WireError> {
        while let Some(tag) = f.next()? {
            match tag {
                1 => *self = AnyValueView::String(f.str(tag)?),
                2 => *self = AnyValueView::Bool(f.varint()? != 0),
                3 => *self = AnyValueView::Int(f.varint()? as i64),
                4 => *self = AnyValueView::Double(f64::from_bits(f.r.fixed64()?)),
                5 => {
                    let mut sub = f.message(Msg::ArrayValue)?;
                    if !matches!(self, AnyValueView::Array(_)) {
                        *self = AnyValueView::Array(Vec::new());
                    }
                    if let AnyValueView::Array(values) = self {
                        while sub.next()?.is_some() {
                            let mut v = AnyValueView::Empty;
                            v.merge(sub.message(Msg::AnyValue)?)?;
                            values.push(v);
                        }
                    }
                }
                6 => {
                    let mut sub = f.message(Msg::KeyValueList)?;
                    if !matches!(self, AnyValueView::Kvlist(_)) {
                        *self = AnyValueView::Kvlist(Vec::new());
                    }
                    if let AnyValueView::Kvlist(values) = self {
                        while sub.next()?.is_some() {
                            values.push(KeyValueView::read(&mut sub)?);
                        }
                    }
                }
                7 => *self = AnyValueView::Bytes(f.bytes()?),
                _ => *self = AnyValueView::StringStrindex(f.varint()? as i32),
            }
        }
        Ok(())
    }

    /// The string value's bytes (UTF-8, checked when read), if this is one.
    pub fn as_str(&self) -> Option<&'a [u8]> {
        match *self {
            AnyValueView::String(s) => Some(s),
            _ => None,
        }
    }
}
