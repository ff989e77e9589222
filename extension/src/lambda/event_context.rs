//! The context an invocation arrives with, read from the Runtime API's `Lambda-Runtime-Trace-Id`
//! header and from the event itself (pure: bytes in, contexts out; never panics).
//!
//! | trigger (event shape) | `faas.trigger` | carrier read |
//! |---|---|---|
//! | API Gateway REST (`httpMethod` + `requestContext`) | `http` | `headers`, `multiValueHeaders` |
//! | API Gateway HTTP API v2, function URL (`requestContext.http`) | `http` | `headers` |
//! | ALB (`requestContext.elb`) | `http` | `headers` or `multiValueHeaders` |
//! | SQS (`Records[].eventSource = aws:sqs`) | `pubsub` | per message: `attributes.AWSTraceHeader`, else `messageAttributes.traceparent` → one span link each |
//! | SNS (`Records[].EventSource = aws:sns`) | `pubsub` | `Sns.MessageAttributes.{traceparent,tracestate,baggage,X-Amzn-Trace-Id}.Value` |
//! | EventBridge (`detail-type` + `source` + `detail`) | `timer` for `Scheduled Event`, else `pubsub` | `detail.{traceparent,tracestate,baggage}` when a producer put them there |
//! | S3, DynamoDB streams | `datasource` | — |
//! | Kinesis | `pubsub` | — |
//! | anything else | `other` | — |
//!
//! Header names are matched case-insensitively. Which of the contexts found becomes the parent is
//! decided by [`choose_parent`] with a precedence the user sets (`OTEL_XRAY_CONTEXT_PRECEDENCE`,
//! docs/propagation.md).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::trace_header::{XRayTraceHeader, parse_hex};

/// Span links kept at most (an SQS batch can hold 10,000 messages).
pub const MAX_LINKS: usize = 128;
/// Baggage entries read at most, and the longest baggage header read.
const MAX_BAGGAGE_ENTRIES: usize = 64;
const MAX_BAGGAGE_BYTES: usize = 8192;
/// The longest `tracestate` passed on (W3C: 32 members of at most 256 chars).
const MAX_TRACESTATE_BYTES: usize = 512;

/// `faas.trigger` values of the FaaS semantic conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trigger {
    /// API Gateway, ALB, function URL.
    Http,
    /// SQS, SNS, EventBridge, Kinesis.
    PubSub,
    /// S3, DynamoDB.
    Datasource,
    /// EventBridge schedules.
    Timer,
    /// Anything else (direct invocations).
    #[default]
    Other,
}

impl Trigger {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::PubSub => "pubsub",
            Trigger::Datasource => "datasource",
            Trigger::Timer => "timer",
            Trigger::Other => "other",
        }
    }
}

/// A context that came from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteContext {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The caller's span; `None` for a root-only header (ALB's `Root=…`).
    pub parent_id: Option<[u8; 8]>,
    /// The caller's decision: `Some(false)` means do not record.
    pub sampled: Option<bool>,
    /// W3C `tracestate`, passed on untouched.
    pub tracestate: Option<String>,
}

/// Where a parent candidate comes from; the names are those of `OTEL_XRAY_CONTEXT_PRECEDENCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextSource {
    /// `lambda-sampled`: the Runtime API's header when it says `Sampled=1` (active tracing, or a
    /// sampled X-Ray caller): the parent is Lambda's `AWS::Lambda::Function` segment.
    LambdaSampled,
    /// `traceparent`: W3C trace context carried by the event.
    Traceparent,
    /// `xray`: an `X-Amzn-Trace-Id` carried by the event.
    Xray,
    /// `lambda`: the Runtime API's header whatever it says; when it is not `Sampled=1` Lambda
    /// recorded nothing (PassThrough), so only its trace id is kept and the span is a root.
    Lambda,
    /// `lambda-strict`: the Runtime API's header as it is, `Sampled=0` included (nothing recorded).
    LambdaStrict,
}

impl ContextSource {
    /// The name used in `OTEL_XRAY_CONTEXT_PRECEDENCE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ContextSource::LambdaSampled => "lambda-sampled",
            ContextSource::Traceparent => "traceparent",
            ContextSource::Xray => "xray",
            ContextSource::Lambda => "lambda",
            ContextSource::LambdaStrict => "lambda-strict",
        }
    }

    fn from_name(name: &str) -> Option<ContextSource> {
        [
            ContextSource::LambdaSampled,
            ContextSource::Traceparent,
            ContextSource::Xray,
            ContextSource::Lambda,
            ContextSource::LambdaStrict,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(name))
    }
}

/// The default precedence: Lambda's sampled context (active tracing puts everything under the
/// function segment), then what the event carries (W3C first), then Lambda's trace id.
pub const DEFAULT_PRECEDENCE: [ContextSource; 4] = [
    ContextSource::LambdaSampled,
    ContextSource::Traceparent,
    ContextSource::Xray,
    ContextSource::Lambda,
];

/// Parses `OTEL_XRAY_CONTEXT_PRECEDENCE` (comma-separated names, `none` for an empty list).
/// Returns `None` when a name is unknown.
pub fn parse_precedence(raw: &str) -> Option<Vec<ContextSource>> {
    if raw.trim().eq_ignore_ascii_case("none") {
        return Some(Vec::new());
    }
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let source = ContextSource::from_name(name)?;
        if !out.contains(&source) {
            out.push(source);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Everything read from one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Extracted {
    /// From the event's shape.
    pub trigger: Trigger,
    /// The Runtime API's `Lambda-Runtime-Trace-Id`.
    pub lambda: Option<RemoteContext>,
    /// W3C `traceparent` (+ `tracestate`) carried by the event.
    pub traceparent: Option<RemoteContext>,
    /// `X-Amzn-Trace-Id` carried by the event.
    pub xray: Option<RemoteContext>,
    /// W3C baggage carried by the event, values percent-decoded.
    pub baggage: Vec<(String, String)>,
    /// One context per SQS message (at most [`MAX_LINKS`]).
    pub links: Vec<RemoteContext>,
    /// SQS messages in the batch, counted past [`MAX_LINKS`].
    pub message_count: usize,
    /// `DurableExecutionArn` of a durable function's event.
    pub durable_execution_arn: Option<String>,
}

/// The parent [`choose_parent`] picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// Where it came from.
    pub source: ContextSource,
    /// Trace, parent span (none: the invocation span is the root of this trace), decision.
    pub context: RemoteContext,
    /// False: nothing is recorded for this invocation.
    pub sampled: bool,
}

/// Reads the contexts of one invocation. Never panics, whatever the bytes.
///
/// Only the members listed in the module's table are decoded; everything else (a `body` of
/// megabytes included) is skipped without being allocated. An event that is not valid UTF-8 or
/// not a JSON object yields Lambda's header alone.
pub fn extract(event: &[u8], lambda_trace_header: Option<&str>) -> Extracted {
    let mut out = Extracted {
        lambda: lambda_trace_header.and_then(xray_context),
        ..Extracted::default()
    };
    // serde_json checks the UTF-8 of the strings it decodes, not of those it skips: check the
    // whole event once. `from_slice`, not `from_str`: the `SliceRead` the rest of the extension
    // instantiates already (docs/performance.md, "OTLP/JSON decode").
    if std::str::from_utf8(event).is_err() {
        return out;
    }
    let Ok(event) = serde_json::from_slice::<Event<'_>>(event) else {
        return out;
    };
    out.durable_execution_arn = event
        .durable_execution_arn
        .filter(|a| !a.is_empty())
        .map(Cow::into_owned);
    // `Records` when present (an array or not), else `records`.
    if let Some(records) = event.records.or(event.records_lower).flatten() {
        read_records(records, &mut out);
        return out;
    }
    if let (Some(scheduled), true) = (event.detail_type_scheduled, event.has_source) {
        out.trigger = if scheduled {
            Trigger::Timer
        } else {
            Trigger::PubSub
        };
        if let Some(detail) = &event.detail {
            read_carrier(detail, &mut out);
        }
        return out;
    }
    if event.has_request_context || event.has_http_method {
        out.trigger = Trigger::Http;
        if let Some(headers) = &event.headers {
            read_carrier(headers, &mut out);
        }
        if let Some(headers) = &event.multi_value_headers {
            read_carrier(headers, &mut out);
        }
    }
    out
}

/// Picks the parent by `precedence`; `None` when no listed source has a context (the invocation
/// span then starts a new trace, sampled).
pub fn choose_parent(ex: &Extracted, precedence: &[ContextSource]) -> Option<Parent> {
    precedence.iter().find_map(|&source| {
        let (context, sampled) = match source {
            ContextSource::LambdaSampled => {
                let c = ex.lambda.as_ref().filter(|c| c.sampled == Some(true))?;
                (c.clone(), true)
            }
            ContextSource::Traceparent => {
                let c = ex.traceparent.as_ref()?;
                (c.clone(), c.sampled != Some(false))
            }
            ContextSource::Xray => {
                let c = ex.xray.as_ref()?;
                (c.clone(), c.sampled != Some(false))
            }
            ContextSource::Lambda => {
                let c = ex.lambda.as_ref()?;
                if c.sampled == Some(true) {
                    (c.clone(), true)
                } else {
                    // PassThrough: Lambda recorded no segment, its Parent would be an orphan.
                    let root = RemoteContext {
                        parent_id: None,
                        sampled: None,
                        ..c.clone()
                    };
                    (root, true)
                }
            }
            ContextSource::LambdaStrict => {
                let c = ex.lambda.as_ref()?;
                (c.clone(), c.sampled != Some(false))
            }
        };
        Some(Parent {
            source,
            context,
            sampled,
        })
    })
}

/// The event-carried contexts that were not chosen: kept as span links so that no caller is lost.
pub fn other_contexts<'a>(ex: &'a Extracted, parent: Option<&Parent>) -> Vec<&'a RemoteContext> {
    let chosen = parent.map(|p| (p.context.trace_id, p.context.parent_id));
    [ex.traceparent.as_ref(), ex.xray.as_ref()]
        .into_iter()
        .flatten()
        .filter(|c| c.parent_id.is_some() && Some((c.trace_id, c.parent_id)) != chosen)
        .collect()
}

/// `Root=…;Parent=…;Sampled=…` as a context (a `Root` is required).
pub fn xray_context(value: &str) -> Option<RemoteContext> {
    let h = XRayTraceHeader::parse(value);
    Some(RemoteContext {
        trace_id: h.trace_id?,
        parent_id: h.parent_id,
        sampled: h.sampled,
        tracestate: None,
    })
}

/// W3C `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`; a higher version may append fields.
pub fn traceparent_context(value: &str) -> Option<RemoteContext> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let extra = parts.next();
    if version.len() != 2 || flags.len() != 2 {
        return None;
    }
    let version = parse_hex_byte(version)?;
    if version == 0xff || (version == 0 && extra.is_some()) {
        return None;
    }
    let flags = parse_hex_byte(flags)?;
    Some(RemoteContext {
        trace_id: parse_hex::<16>(trace)?,
        parent_id: Some(parse_hex::<8>(span)?),
        sampled: Some(flags & 1 == 1),
        tracestate: None,
    })
}

fn parse_hex_byte(s: &str) -> Option<u8> {
    if s.len() != 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(s, 16).ok()
}

/// W3C baggage: `key=value;property,key2=value2`, values percent-decoded; bad members skipped.
pub fn parse_baggage(value: &str) -> Vec<(String, String)> {
    let value = truncate_at_char(value, MAX_BAGGAGE_BYTES);
    value
        .split(',')
        .filter_map(|member| {
            let kv = member.split(';').next()?;
            let (k, v) = kv.split_once('=')?;
            let k = k.trim();
            if k.is_empty() || !k.bytes().all(is_token_byte) {
                return None;
            }
            Some((k.to_owned(), percent_decode(v.trim())))
        })
        .take(MAX_BAGGAGE_ENTRIES)
        .collect()
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Some(b) = parse_hex_byte(hex)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn truncate_at_char(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads traceparent/tracestate/baggage/X-Amzn-Trace-Id; a value found earlier is kept.
fn read_carrier(carrier: &Carrier<'_>, out: &mut Extracted) {
    if out.traceparent.is_none()
        && let Some(mut c) = carrier.get(TRACEPARENT).and_then(traceparent_context)
    {
        c.tracestate = carrier
            .get(TRACESTATE)
            .map(|s| truncate_at_char(s.trim(), MAX_TRACESTATE_BYTES).to_owned())
            .filter(|s| !s.is_empty());
        out.traceparent = Some(c);
    }
    if out.xray.is_none() {
        out.xray = carrier.get(X_AMZN_TRACE_ID).and_then(xray_context);
    }
    if out.baggage.is_empty()
        && let Some(b) = carrier.get(BAGGAGE)
    {
        out.baggage = parse_baggage(b);
    }
}

fn read_records(records: Records<'_>, out: &mut Extracted) {
    match records.source.as_deref() {
        Some("aws:sqs") => {
            out.trigger = Trigger::PubSub;
            out.message_count = records.count;
            out.links = records.links;
        }
        Some("aws:sns") => {
            out.trigger = Trigger::PubSub;
            if let Some(attrs) = &records.sns {
                read_carrier(attrs, out);
            }
        }
        Some("aws:s3" | "aws:dynamodb") => out.trigger = Trigger::Datasource,
        Some("aws:kinesis") => out.trigger = Trigger::PubSub,
        _ => {}
    }
}

// Typed deserialization of the members above. Each type reads its JSON value as a generic tree
// would have been read (`Value::get`, `as_str`, `as_object`): a member of another type gives
// `None`, a repeated key keeps its last value, and a case-insensitive header lookup finds the
// bytewise-smallest matching name (the tree's `BTreeMap` order). Anything else is `IgnoredAny`.

/// Visitor methods that skip a value of a type the member does not use.
macro_rules! skip_types {
    (scalars) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
    (str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
    (seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
    (map) => {
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Default::default())
        }
    };
}

/// A JSON string, borrowed from the event unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `Value::as_str`: the string, or `None` for a value of any other type.
#[derive(Default)]
struct MaybeStr<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for MaybeStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(Some(Cow::Borrowed(s))))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(Some(Cow::Owned(s.to_owned()))))
            }
            skip_types!(scalars);
            skip_types!(seq);
            skip_types!(map);
        }
        d.deserialize_any(V)
    }
}

/// How a carrier holds a value under a name.
#[derive(Clone, Copy)]
enum Shape {
    /// `{"name": "value"}`.
    Plain,
    /// `{"name": ["value", …]}`: the first element.
    MultiValue,
    /// `{"name": {<member>: "value", …}}`: SNS `Value`, SQS `stringValue`.
    Member(&'static str),
}

/// One name's value out of a carrier, per [`Shape`].
struct ShapedValue(Shape);

impl<'de> DeserializeSeed<'de> for ShapedValue {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.0 {
            Shape::Plain => Ok(MaybeStr::deserialize(d)?.0),
            Shape::MultiValue => d.deserialize_any(FirstStr),
            Shape::Member(name) => d.deserialize_any(MemberStr(name)),
        }
    }
}

/// `value.as_array()?.first()?.as_str()`.
struct FirstStr;

impl<'de> Visitor<'de> for FirstStr {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element::<MaybeStr<'de>>()?.and_then(|s| s.0);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first)
    }
    skip_types!(scalars);
    skip_types!(str);
    skip_types!(map);
}

/// `value.get(name)?.as_str()`.
struct MemberStr(&'static str);

impl<'de> Visitor<'de> for MemberStr {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if key.0 == self.0 {
                found = map.next_value::<MaybeStr<'de>>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    skip_types!(scalars);
    skip_types!(str);
    skip_types!(seq);
}

const TRACEPARENT: usize = 0;
const TRACESTATE: usize = 1;
const X_AMZN_TRACE_ID: usize = 2;
const BAGGAGE: usize = 3;
/// The names read from a carrier, indexed by the constants above.
const CARRIER_NAMES: [&str; 4] = ["traceparent", "tracestate", "x-amzn-trace-id", "baggage"];

/// A header map as events carry it: for each of [`CARRIER_NAMES`], the bytewise-smallest key equal
/// to it ignoring ASCII case, with that key's last value read per its [`Shape`].
#[derive(Default)]
struct Carrier<'de> {
    entries: [Option<CarrierEntry<'de>>; 4],
}

/// The key as the event spells it, and its value (`None`: not of the shape read).
type CarrierEntry<'de> = (Cow<'de, str>, Option<Cow<'de, str>>);

impl Carrier<'_> {
    fn get(&self, name: usize) -> Option<&str> {
        self.entries[name].as_ref()?.1.as_deref()
    }
}

/// A carrier, `None` unless the value is an object.
struct CarrierSeed(Shape);

impl<'de> DeserializeSeed<'de> for CarrierSeed {
    type Value = Option<Carrier<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CarrierSeed {
    type Value = Option<Carrier<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut carrier = Carrier::default();
        while let Some(Key(key)) = map.next_key()? {
            let Some(i) = CARRIER_NAMES
                .iter()
                .position(|n| key.eq_ignore_ascii_case(n))
            else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let value = map.next_value_seed(ShapedValue(self.0))?;
            let entry = &mut carrier.entries[i];
            if entry.as_ref().is_none_or(|(k, _)| key <= *k) {
                *entry = Some((key, value));
            }
        }
        Ok(Some(carrier))
    }
    skip_types!(scalars);
    skip_types!(str);
    skip_types!(seq);
}

/// The members of an event that [`extract`] reads; `Option<Option<_>>`: present, of the type read.
#[derive(Default)]
struct Event<'de> {
    durable_execution_arn: Option<Cow<'de, str>>,
    records: Option<Option<Records<'de>>>,
    records_lower: Option<Option<Records<'de>>>,
    /// `detail-type` is present; `true` when it is `Scheduled Event`.
    detail_type_scheduled: Option<bool>,
    has_source: bool,
    detail: Option<Carrier<'de>>,
    has_request_context: bool,
    has_http_method: bool,
    headers: Option<Carrier<'de>>,
    multi_value_headers: Option<Carrier<'de>>,
}

impl<'de> Deserialize<'de> for Event<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event<'de>, A::Error> {
        let mut ev = Event::default();
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "DurableExecutionArn" => ev.durable_execution_arn = map.next_value::<MaybeStr>()?.0,
                "Records" => ev.records = Some(map.next_value_seed(RecordsSeed)?),
                "records" => ev.records_lower = Some(map.next_value_seed(RecordsSeed)?),
                "detail-type" => {
                    let t = map.next_value::<MaybeStr>()?.0;
                    ev.detail_type_scheduled = Some(t.as_deref() == Some("Scheduled Event"));
                }
                "detail" => ev.detail = map.next_value_seed(CarrierSeed(Shape::Plain))?,
                "headers" => ev.headers = map.next_value_seed(CarrierSeed(Shape::Plain))?,
                "multiValueHeaders" => {
                    ev.multi_value_headers = map.next_value_seed(CarrierSeed(Shape::MultiValue))?;
                }
                other => {
                    match other {
                        "source" => ev.has_source = true,
                        "requestContext" => ev.has_request_context = true,
                        "httpMethod" => ev.has_http_method = true,
                        _ => {}
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(ev)
    }
}

/// A `Records` array, read as it streams by: the first record decides the source; SQS messages
/// are counted and linked (at most [`MAX_LINKS`]); nothing else of a record is kept.
#[derive(Default)]
struct Records<'de> {
    /// The first record's `eventSource` (else `EventSource`).
    source: Option<Cow<'de, str>>,
    count: usize,
    links: Vec<RemoteContext>,
    /// The first record's `Sns.MessageAttributes`.
    sns: Option<Carrier<'de>>,
}

/// `None` unless the value is an array.
struct RecordsSeed;

impl<'de> DeserializeSeed<'de> for RecordsSeed {
    type Value = Option<Records<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed {
    type Value = Option<Records<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut records = Records::default();
        let Some(first) = seq.next_element::<Record>()? else {
            return Ok(Some(records));
        };
        records.count = 1;
        records.source = first.source;
        records.sns = first.sns;
        let sqs = records.source.as_deref() == Some("aws:sqs");
        records.links.extend(first.link);
        loop {
            let more = if sqs && records.links.len() < MAX_LINKS {
                seq.next_element::<Record>()?
                    .map(|r| records.links.extend(r.link))
            } else {
                seq.next_element::<IgnoredAny>()?.map(|_| ())
            };
            if more.is_none() {
                break;
            }
            records.count += 1;
        }
        Ok(Some(records))
    }
    skip_types!(scalars);
    skip_types!(str);
    skip_types!(map);
}

/// What one record gives: its source and Sns carrier (read from the first), and its SQS link:
/// `attributes.AWSTraceHeader`, else `messageAttributes.traceparent.stringValue`, with a parent.
#[derive(Default)]
struct Record<'de> {
    source: Option<Cow<'de, str>>,
    sns: Option<Carrier<'de>>,
    link: Option<RemoteContext>,
}

impl<'de> Deserialize<'de> for Record<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Record<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record<'de>, A::Error> {
        let (mut source_lower, mut source_upper) = (None, None);
        let (mut trace_header, mut message_attributes, mut sns) = (None, None, None);
        while let Some(Key(key)) = map.next_key()? {
            match key.as_ref() {
                "eventSource" => source_lower = Some(map.next_value::<MaybeStr>()?.0),
                "EventSource" => source_upper = Some(map.next_value::<MaybeStr>()?.0),
                "attributes" => {
                    trace_header =
                        map.next_value_seed(ShapedValue(Shape::Member("AWSTraceHeader")))?;
                }
                "messageAttributes" => {
                    message_attributes =
                        map.next_value_seed(CarrierSeed(Shape::Member("stringValue")))?;
                }
                "Sns" => sns = map.next_value_seed(SnsSeed)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let link = trace_header
            .as_deref()
            .and_then(xray_context)
            .or_else(|| traceparent_context(message_attributes?.get(TRACEPARENT)?))
            .filter(|l| l.parent_id.is_some());
        Ok(Record {
            source: source_lower.or(source_upper).flatten(),
            sns,
            link,
        })
    }
    skip_types!(scalars);
    skip_types!(str);
    skip_types!(seq);
}

/// `Sns.MessageAttributes` as a carrier, `None` unless both are objects.
struct SnsSeed;

impl<'de> DeserializeSeed<'de> for SnsSeed {
    type Value = Option<Carrier<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for SnsSeed {
    type Value = Option<Carrier<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut attrs = None;
        while let Some(Key(key)) = map.next_key()? {
            if key == "MessageAttributes" {
                attrs = map.next_value_seed(CarrierSeed(Shape::Member("Value")))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(attrs)
    }
    skip_types!(scalars);
    skip_types!(str);
    skip_types!(seq);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    const ACTIVE: &str =
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a:0";
    const PASSTHROUGH: &str =
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn bytes(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn traceparent_forms() {
        let c = traceparent_context(TP).unwrap();
        assert_eq!(c.trace_id[0], 0x4b);
        assert_eq!(c.parent_id.unwrap()[7], 0xb7);
        assert_eq!(c.sampled, Some(true));
        assert_eq!(
            traceparent_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled,
            Some(false)
        );
        assert!(
            traceparent_context("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xx")
                .is_some()
        );
        for bad in [
            "",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
        ] {
            assert_eq!(traceparent_context(bad), None, "{bad}");
        }
    }

    #[test]
    fn baggage_members() {
        let b = parse_baggage(" user.id=alice%20b ;p=1, tenant = acme ,bad key=1,=x,novalue");
        assert_eq!(
            b,
            [
                ("user.id".to_owned(), "alice b".to_owned()),
                ("tenant".to_owned(), "acme".to_owned())
            ]
        );
        assert_eq!(
            parse_baggage("k=%zz%4"),
            [("k".to_owned(), "%zz%4".to_owned())]
        );
    }

    #[test]
    fn precedence_names() {
        assert_eq!(
            parse_precedence("lambda-sampled, traceparent,xray,lambda").unwrap(),
            DEFAULT_PRECEDENCE
        );
        assert_eq!(
            parse_precedence("XRAY,xray").unwrap(),
            [ContextSource::Xray]
        );
        assert_eq!(parse_precedence("none").unwrap(), []);
        assert_eq!(parse_precedence("w3c"), None);
        assert_eq!(parse_precedence(" , "), None);
    }

    #[test]
    fn no_context_direct_invoke() {
        let ex = extract(br#"{"hello":"world"}"#, Some(PASSTHROUGH));
        assert_eq!(ex.trigger, Trigger::Other);
        let p = choose_parent(&ex, &DEFAULT_PRECEDENCE).unwrap();
        // PassThrough's Sampled=0 does not suppress; Lambda's trace id, no (unrecorded) parent.
        assert_eq!(p.source, ContextSource::Lambda);
        assert!(p.sampled);
        assert_eq!(p.context.parent_id, None);
        assert_eq!(p.context.trace_id[0], 0x57);
        // lambda-strict honours it.
        let strict = choose_parent(&ex, &[ContextSource::LambdaStrict]).unwrap();
        assert!(!strict.sampled);
        assert_eq!(
            choose_parent(&extract(b"{}", None), &DEFAULT_PRECEDENCE),
            None
        );
    }

    #[test]
    fn active_tracing_wins_over_the_event() {
        let event = json!({"httpMethod":"GET","requestContext":{},"headers":{"TraceParent":TP,"tracestate":"k=v","Baggage":"user.id=alice"}});
        let ex = extract(&bytes(event), Some(ACTIVE));
        assert_eq!(ex.trigger, Trigger::Http);
        assert_eq!(
            ex.traceparent.as_ref().unwrap().tracestate.as_deref(),
            Some("k=v")
        );
        assert_eq!(ex.baggage, [("user.id".to_owned(), "alice".to_owned())]);
        let p = choose_parent(&ex, &DEFAULT_PRECEDENCE).unwrap();
        assert_eq!(p.source, ContextSource::LambdaSampled);
        assert_eq!(p.context.parent_id.unwrap()[0], 0x53);
        // The W3C caller is kept as a link.
        let others = other_contexts(&ex, Some(&p));
        assert_eq!(others.len(), 1);
        assert_eq!(others[0].trace_id[0], 0x4b);
        // The user may let the event win.
        let p = choose_parent(&ex, &[ContextSource::Traceparent, ContextSource::Lambda]).unwrap();
        assert_eq!(p.source, ContextSource::Traceparent);
        assert!(other_contexts(&ex, Some(&p)).is_empty());
    }

    #[test]
    fn passthrough_header_does_not_suppress_a_sampled_event_context() {
        let event = json!({"version":"2.0","requestContext":{"http":{"method":"GET"}},"headers":{"traceparent":TP}});
        let ex = extract(&bytes(event), Some(PASSTHROUGH));
        let p = choose_parent(&ex, &DEFAULT_PRECEDENCE).unwrap();
        assert_eq!(p.source, ContextSource::Traceparent);
        assert!(p.sampled);
    }

    #[test]
    fn x_amzn_trace_id_in_the_event() {
        // Sampled=0: nothing recorded.
        let event = json!({"httpMethod":"GET","requestContext":{},"multiValueHeaders":{"X-Amzn-Trace-Id":["Root=1-67891233-abcdef012345678912345678;Parent=463ac35c9f6413ad;Sampled=0"]}});
        let p = choose_parent(
            &extract(&bytes(event), Some(PASSTHROUGH)),
            &DEFAULT_PRECEDENCE,
        )
        .unwrap();
        assert_eq!(p.source, ContextSource::Xray);
        assert!(!p.sampled);
        // ALB: Root only → same trace, no parent, sampled.
        let alb = json!({"requestContext":{"elb":{"targetGroupArn":"arn"}},"headers":{"x-amzn-trace-id":"Root=1-67891233-abcdef012345678912345678"}});
        let ex = extract(&bytes(alb), None);
        assert_eq!(ex.trigger, Trigger::Http);
        let p = choose_parent(&ex, &DEFAULT_PRECEDENCE).unwrap();
        assert_eq!(p.source, ContextSource::Xray);
        assert!(p.sampled);
        assert_eq!(p.context.parent_id, None);
        assert_eq!(p.context.trace_id[..4], [0x67, 0x89, 0x12, 0x33]);
    }

    #[test]
    fn sqs_batch_links_every_message() {
        let event = json!({"Records":[
            {"eventSource":"aws:sqs","attributes":{"AWSTraceHeader":"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}},
            {"eventSource":"aws:sqs","attributes":{}, "messageAttributes":{"traceparent":{"stringValue":TP,"dataType":"String"}}},
            {"eventSource":"aws:sqs","attributes":{"AWSTraceHeader":"Root=1-5759e988-bd862e3fe1be46a994272794"}}
        ]});
        let ex = extract(&bytes(event), Some(PASSTHROUGH));
        assert_eq!(ex.trigger, Trigger::PubSub);
        assert_eq!(ex.message_count, 3);
        assert_eq!(ex.links.len(), 2);
        assert_eq!(ex.links[1].trace_id[0], 0x4b);
        // The invocation span itself is not parented by a message.
        assert_eq!(
            choose_parent(&ex, &DEFAULT_PRECEDENCE).unwrap().source,
            ContextSource::Lambda
        );
    }

    #[test]
    fn sns_eventbridge_and_datasources() {
        let sns = json!({"Records":[{"EventSource":"aws:sns","Sns":{"MessageAttributes":{"traceparent":{"Type":"String","Value":TP},"baggage":{"Type":"String","Value":"a=b"}}}}]});
        let ex = extract(&bytes(sns), None);
        assert_eq!(ex.trigger, Trigger::PubSub);
        assert!(ex.traceparent.is_some());
        assert_eq!(ex.baggage.len(), 1);
        let eb = json!({"detail-type":"Scheduled Event","source":"aws.events","detail":{}});
        assert_eq!(extract(&bytes(eb), None).trigger, Trigger::Timer);
        let eb = json!({"detail-type":"OrderPlaced","source":"shop","detail":{"traceparent":TP}});
        let ex = extract(&bytes(eb), None);
        assert_eq!(ex.trigger, Trigger::PubSub);
        assert!(ex.traceparent.is_some());
        let s3 = json!({"Records":[{"eventSource":"aws:s3"}]});
        assert_eq!(extract(&bytes(s3), None).trigger, Trigger::Datasource);
        let kinesis = json!({"Records":[{"eventSource":"aws:kinesis"}]});
        assert_eq!(extract(&bytes(kinesis), None).trigger, Trigger::PubSub);
    }

    #[test]
    fn sqs_links_are_bounded() {
        let rec = json!({"eventSource":"aws:sqs","attributes":{"AWSTraceHeader":ACTIVE}});
        let event = json!({ "Records": vec![rec; MAX_LINKS + 5] });
        let ex = extract(&bytes(event), None);
        assert_eq!(ex.links.len(), MAX_LINKS);
        assert_eq!(ex.message_count, MAX_LINKS + 5);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            prop_oneof![
                Just(TP.to_owned()),
                Just(ACTIVE.to_owned()),
                Just("aws:sqs".to_owned()),
                Just("aws:sns".to_owned()),
                ".{0,40}"
            ]
            .prop_map(Value::String),
        ];
        let keys = prop_oneof![
            Just("Records".to_owned()),
            Just("headers".to_owned()),
            Just("multiValueHeaders".to_owned()),
            Just("requestContext".to_owned()),
            Just("eventSource".to_owned()),
            Just("EventSource".to_owned()),
            Just("attributes".to_owned()),
            Just("AWSTraceHeader".to_owned()),
            Just("messageAttributes".to_owned()),
            Just("Sns".to_owned()),
            Just("MessageAttributes".to_owned()),
            Just("traceparent".to_owned()),
            Just("baggage".to_owned()),
            Just("detail-type".to_owned()),
            Just("source".to_owned()),
            Just("detail".to_owned()),
            Just("Value".to_owned()),
            Just("stringValue".to_owned()),
            "[a-z]{1,6}",
        ];
        leaf.prop_recursive(5, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(event in prop::collection::vec(any::<u8>(), 0..512), header in ".{0,80}") {
            let ex = extract(&event, Some(&header));
            let _ = choose_parent(&ex, &DEFAULT_PRECEDENCE);
        }

        #[test]
        fn never_panics_on_event_shapes(event in json_value(), header in prop::option::of(prop_oneof![Just(ACTIVE.to_owned()), Just(PASSTHROUGH.to_owned()), ".{0,60}"])) {
            let ex = extract(&bytes(event), header.as_deref());
            prop_assert!(ex.links.len() <= MAX_LINKS);
            prop_assert!(ex.baggage.len() <= MAX_BAGGAGE_ENTRIES);
            if let Some(p) = choose_parent(&ex, &DEFAULT_PRECEDENCE) {
                // A chosen Lambda Parent is only used when Lambda recorded it.
                if p.source == ContextSource::Lambda && p.context.parent_id.is_some() {
                    prop_assert_eq!(ex.lambda.as_ref().and_then(|l| l.sampled), Some(true));
                }
            }
        }

        #[test]
        fn traceparent_round_trip(trace in any::<[u8; 16]>(), span in any::<[u8; 8]>(), flags in any::<u8>()) {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            let tp = format!("00-{}-{}-{flags:02x}", hex(&trace), hex(&span));
            let c = traceparent_context(&tp);
            if trace == [0; 16] || span == [0; 8] {
                prop_assert!(c.is_none());
            } else {
                let c = c.unwrap();
                prop_assert_eq!(c.trace_id, trace);
                prop_assert_eq!(c.parent_id, Some(span));
                prop_assert_eq!(c.sampled, Some(flags & 1 == 1));
            }
        }

        #[test]
        fn baggage_never_panics(b in ".{0,200}") {
            prop_assert!(parse_baggage(&b).len() <= MAX_BAGGAGE_ENTRIES);
        }
    }

    /// The generic-tree reading that `extract` replaced (serde_json `Value`), kept as the oracle
    /// of `same_as_the_generic_tree`.
    mod generic_tree {
        use super::super::{
            Extracted, MAX_LINKS, MAX_TRACESTATE_BYTES, Trigger, parse_baggage,
            traceparent_context, truncate_at_char, xray_context,
        };
        use serde_json::{Map, Value};

        pub(super) fn extract(event: &[u8], lambda_trace_header: Option<&str>) -> Extracted {
            let mut out = Extracted {
                lambda: lambda_trace_header.and_then(xray_context),
                ..Extracted::default()
            };
            let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(event) else {
                return out;
            };
            out.durable_execution_arn = event
                .get("DurableExecutionArn")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .map(str::to_owned);
            if let Some(records) = event
                .get("Records")
                .or_else(|| event.get("records"))
                .and_then(Value::as_array)
            {
                read_records(records, &mut out);
                return out;
            }
            if event.contains_key("detail-type") && event.contains_key("source") {
                out.trigger = if event.get("detail-type").and_then(Value::as_str)
                    == Some("Scheduled Event")
                {
                    Trigger::Timer
                } else {
                    Trigger::PubSub
                };
                if let Some(Value::Object(detail)) = event.get("detail") {
                    read_carrier(&Carrier::Plain(detail), &mut out);
                }
                return out;
            }
            if event.contains_key("requestContext") || event.contains_key("httpMethod") {
                out.trigger = Trigger::Http;
                if let Some(Value::Object(headers)) = event.get("headers") {
                    read_carrier(&Carrier::Plain(headers), &mut out);
                }
                if let Some(Value::Object(headers)) = event.get("multiValueHeaders") {
                    read_carrier(&Carrier::MultiValue(headers), &mut out);
                }
            }
            out
        }

        /// A header map as events carry it.
        enum Carrier<'a> {
            /// `{"name": "value"}`.
            Plain(&'a Map<String, Value>),
            /// `{"name": ["value", …]}`.
            MultiValue(&'a Map<String, Value>),
            /// SNS: `{"name": {"Type": "String", "Value": "…"}}`.
            Sns(&'a Map<String, Value>),
        }

        impl Carrier<'_> {
            fn get(&self, name: &str) -> Option<&str> {
                let (map, shape) = match self {
                    Carrier::Plain(m) => (m, 0),
                    Carrier::MultiValue(m) => (m, 1),
                    Carrier::Sns(m) => (m, 2),
                };
                let value = map
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)?;
                match shape {
                    0 => value.as_str(),
                    1 => value.as_array()?.first()?.as_str(),
                    _ => value.get("Value")?.as_str(),
                }
            }
        }

        /// Reads traceparent/tracestate/baggage/X-Amzn-Trace-Id; a value found earlier is kept.
        fn read_carrier(carrier: &Carrier<'_>, out: &mut Extracted) {
            if out.traceparent.is_none()
                && let Some(mut c) = carrier.get("traceparent").and_then(traceparent_context)
            {
                c.tracestate = carrier
                    .get("tracestate")
                    .map(|s| truncate_at_char(s.trim(), MAX_TRACESTATE_BYTES).to_owned())
                    .filter(|s| !s.is_empty());
                out.traceparent = Some(c);
            }
            if out.xray.is_none() {
                out.xray = carrier.get("x-amzn-trace-id").and_then(xray_context);
            }
            if out.baggage.is_empty()
                && let Some(b) = carrier.get("baggage")
            {
                out.baggage = parse_baggage(b);
            }
        }

        fn read_records(records: &[Value], out: &mut Extracted) {
            let source_of = |r: &Value| {
                r.get("eventSource")
                    .or_else(|| r.get("EventSource"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let Some(source) = records.first().and_then(source_of) else {
                return;
            };
            match source.as_str() {
                "aws:sqs" => {
                    out.trigger = Trigger::PubSub;
                    out.message_count = records.len();
                    for r in records {
                        if out.links.len() == MAX_LINKS {
                            break;
                        }
                        let from_attr = r
                            .get("attributes")
                            .and_then(|a| a.get("AWSTraceHeader"))
                            .and_then(Value::as_str)
                            .and_then(xray_context);
                        let link = from_attr.or_else(|| {
                            let attrs = r.get("messageAttributes")?.as_object()?;
                            let (_, v) = attrs
                                .iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))?;
                            traceparent_context(v.get("stringValue")?.as_str()?)
                        });
                        if let Some(l) = link.filter(|l| l.parent_id.is_some()) {
                            out.links.push(l);
                        }
                    }
                }
                "aws:sns" => {
                    out.trigger = Trigger::PubSub;
                    if let Some(Value::Object(attrs)) = records
                        .first()
                        .and_then(|r| r.get("Sns"))
                        .and_then(|s| s.get("MessageAttributes"))
                    {
                        read_carrier(&Carrier::Sns(attrs), out);
                    }
                }
                "aws:s3" | "aws:dynamodb" => out.trigger = Trigger::Datasource,
                "aws:kinesis" => out.trigger = Trigger::PubSub,
                _ => {}
            }
        }
    }

    /// JSON text whose objects may repeat a key or spell a name in another case (a `Value` cannot
    /// hold the first, and its `BTreeMap` orders the second).
    #[derive(Debug, Clone)]
    enum Raw {
        Leaf(Value),
        Arr(Vec<Raw>),
        Obj(Vec<(String, Raw)>),
    }

    fn render(raw: &Raw, out: &mut String) {
        match raw {
            Raw::Leaf(v) => out.push_str(&v.to_string()),
            Raw::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render(item, out);
                }
                out.push(']');
            }
            Raw::Obj(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::from(k.as_str()).to_string());
                    out.push(':');
                    render(v, out);
                }
                out.push('}');
            }
        }
    }

    fn raw_leaf() -> BoxedStrategy<Raw> {
        prop_oneof![
            1 => Just(Value::Null),
            1 => any::<bool>().prop_map(Value::Bool),
            1 => any::<i64>().prop_map(Value::from),
            8 => prop_oneof![
                Just(TP.to_owned()),
                Just(ACTIVE.to_owned()),
                Just(PASSTHROUGH.to_owned()),
                Just("00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-00".to_owned()),
                Just("Root=1-67891233-abcdef012345678912345678".to_owned()),
                Just("aws:sqs".to_owned()),
                Just("aws:sns".to_owned()),
                Just("aws:s3".to_owned()),
                Just("aws:kinesis".to_owned()),
                Just("Scheduled Event".to_owned()),
                Just("k=v,a=b%20c".to_owned()),
                Just(" vendor=x ".to_owned()),
                Just(String::new()),
                ".{0,12}"
            ]
            .prop_map(Value::String),
        ]
        .prop_map(Raw::Leaf)
        .boxed()
    }

    /// A leaf, mostly one of `preferred`.
    fn leaf_of(preferred: &'static [&'static str]) -> BoxedStrategy<Raw> {
        prop_oneof![
            3 => prop::sample::select(preferred).prop_map(|s| Raw::Leaf(Value::from(s))),
            1 => raw_leaf(),
        ]
        .boxed()
    }

    const CONTEXTS: &[&str] = &[
        TP,
        TP,
        ACTIVE,
        "Root=1-67891233-abcdef012345678912345678",
        "k=v,a=b%20c",
        " vendor=x ",
    ];

    fn keys(names: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
        prop_oneof![8 => prop::sample::select(names), 1 => Just("other")].prop_map(str::to_owned)
    }

    /// A header map, SNS or SQS attributes, with a few of the names in several cases.
    fn raw_carrier() -> BoxedStrategy<Raw> {
        let names = keys(&[
            "traceparent",
            "TraceParent",
            "TRACEPARENT",
            "tracestate",
            "Tracestate",
            "baggage",
            "Baggage",
            "x-amzn-trace-id",
            "X-Amzn-Trace-Id",
        ]);
        let value = prop_oneof![
            3 => leaf_of(CONTEXTS),
            1 => prop::collection::vec(leaf_of(CONTEXTS), 0..3).prop_map(Raw::Arr),
            2 => prop::collection::vec((keys(&["Value", "stringValue", "Type"]), leaf_of(CONTEXTS)), 0..3)
                .prop_map(Raw::Obj),
        ];
        prop::collection::vec((names, value), 0..6)
            .prop_map(Raw::Obj)
            .boxed()
    }

    /// `{name: value}` objects, a name from `names` (or another) with a value from `value`.
    fn object_of(
        names: &'static [&'static str],
        value: BoxedStrategy<Raw>,
        len: usize,
    ) -> BoxedStrategy<Raw> {
        prop::collection::vec((keys(names), value), 0..len)
            .prop_map(Raw::Obj)
            .boxed()
    }

    fn raw_record() -> BoxedStrategy<Raw> {
        let member = prop_oneof![
            3 => (keys(&["eventSource", "EventSource"]), leaf_of(&["aws:sqs", "aws:sns", "aws:s3", "aws:kinesis"])),
            2 => (keys(&["attributes"]), prop_oneof![3 => object_of(&["AWSTraceHeader"], leaf_of(CONTEXTS), 3), 1 => raw_leaf()].boxed()),
            2 => (keys(&["messageAttributes"]), prop_oneof![3 => raw_carrier(), 1 => raw_leaf()].boxed()),
            2 => (keys(&["Sns"]), prop_oneof![3 => object_of(&["MessageAttributes"], raw_carrier(), 3), 1 => raw_leaf()].boxed()),
            1 => (keys(&["body"]), raw_leaf()),
        ];
        prop::collection::vec(member, 0..7)
            .prop_map(Raw::Obj)
            .boxed()
    }

    /// Event-like objects: the members `extract` reads, of their own type or another, repeated.
    fn raw_event() -> impl Strategy<Value = Raw> {
        let generic = raw_leaf().prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Raw::Arr),
                prop::collection::vec((keys(&["Records", "headers", "x"]), inner), 0..4)
                    .prop_map(Raw::Obj),
            ]
        });
        let records = prop::collection::vec(raw_record(), 0..5).prop_map(Raw::Arr);
        let member = prop_oneof![
            3 => (keys(&["Records", "records"]), prop_oneof![4 => records.boxed(), 1 => raw_leaf()].boxed()),
            3 => (keys(&["headers", "multiValueHeaders", "detail"]), prop_oneof![4 => raw_carrier(), 1 => raw_leaf()].boxed()),
            2 => (keys(&["requestContext", "httpMethod"]), raw_leaf()),
            2 => (keys(&["source", "detail-type", "DurableExecutionArn"]),
                  leaf_of(&["Scheduled Event", "arn:aws:lambda:durable"])),
            1 => (keys(&["body", "x"]), generic.boxed()),
        ];
        prop::collection::vec(member, 0..7).prop_map(Raw::Obj)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn same_as_the_generic_tree(event in raw_event(), header in prop::option::of(prop_oneof![Just(ACTIVE.to_owned()), Just(PASSTHROUGH.to_owned())])) {
            let mut text = String::new();
            render(&event, &mut text);
            let header = header.as_deref();
            prop_assert_eq!(extract(text.as_bytes(), header), generic_tree::extract(text.as_bytes(), header));
            // Cut short: malformed, Lambda's header alone, as before.
            let cut = &text.as_bytes()[..text.len() / 2];
            prop_assert_eq!(extract(cut, header), generic_tree::extract(cut, header));
        }
    }
}
