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

use serde_json::{Map, Value};

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
pub fn extract(event: &[u8], lambda_trace_header: Option<&str>) -> Extracted {
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
        out.trigger = if event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

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
}
