//! One span → the JSON members of its X-Ray (sub)segment, written straight into a buffer.
//!
//! The attribute rules follow the OpenTelemetry Collector's `awsxrayexporter`
//! (`internal/translator`), with the current HTTP/DB semantic conventions beside the old names.
//! `docs/translator.md` has the full table. Where we differ from the Collector it is to lose
//! nothing: an attribute that does not become a field of the document stays in
//! `metadata.default`.
//!
//! A span is rendered as `"name":…,"id":…` (the *head*) followed by the rest of its members; the
//! document assembler (`translate.rs`) inserts `trace_id`, `type` and `parent_id` after the head
//! when the span is the top of a document, and appends `subsegments`.

use std::net::IpAddr;

use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};

use crate::otlp_wire::{AnyValueView, KeyValueView, ResourceView, SpanView};

use super::cause::{Language, parse_stacktrace};
use super::ids::{self, exception_id};
use super::json::{
    split_once_str, truncate_chars, write_base64, write_epoch_seconds, write_escaped, write_f64,
    write_hex, write_i64, write_str, write_str_max,
};
use super::names::{self, FALLBACK_NAME, text};

/// X-Ray's limit for most string fields, in characters.
pub const MAX_STRING_CHARS: usize = 250;
/// The schema's limit for annotation string values, in characters.
pub const MAX_ANNOTATION_VALUE_CHARS: usize = 1000;
/// Annotations written per (sub)segment; the rest go to metadata.
pub const MAX_ANNOTATIONS: usize = 50;
/// Nesting of array/map attribute values kept as JSON structure; deeper values are written as
/// JSON text in a string, so that documents stay within parsers' depth limits.
const MAX_VALUE_DEPTH: u32 = 8;

/// How much of a span to keep. A span is rendered at [`Level::Full`] and re-rendered at the next
/// level while it does not fit in a document on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Everything (stacks cut to 50 frames).
    Full,
    /// Metadata strings cut to 1024 characters and lists to 32 entries, stacks to 10 frames,
    /// exception messages and SQL to 1024 characters, 16 links.
    Reduced,
    /// No metadata, links or stacks; 8 exceptions with 256-character messages, annotation
    /// values cut to 250 characters, lists to 10 entries.
    Minimal,
    /// Only the fixed fields: name, ids, times, flags, user, http, aws, sql without the query.
    Bare,
}

impl Level {
    /// The next, smaller level.
    pub fn next(self) -> Option<Level> {
        match self {
            Level::Full => Some(Level::Reduced),
            Level::Reduced => Some(Level::Minimal),
            Level::Minimal => Some(Level::Bare),
            Level::Bare => None,
        }
    }

    fn marker(self) -> &'static str {
        match self {
            Level::Full => "",
            Level::Reduced => "reduced",
            Level::Minimal => "minimal",
            Level::Bare => "bare",
        }
    }
}

/// Limits on metadata-like values (metadata, link attributes).
#[derive(Clone, Copy)]
struct ValueLimits {
    max_string: Option<usize>,
    max_items: Option<usize>,
}

struct Params {
    metadata: Option<ValueLimits>,
    max_frames: usize,
    message_chars: Option<usize>,
    max_exceptions: Option<usize>,
    cause: bool,
    links: Option<usize>,
    annotations: bool,
    annotation_chars: usize,
    sql_query_chars: Option<usize>,
    list_items: Option<usize>,
}

impl Level {
    fn params(self) -> Params {
        match self {
            Level::Full => Params {
                metadata: Some(ValueLimits {
                    max_string: None,
                    max_items: None,
                }),
                max_frames: 50,
                message_chars: None,
                max_exceptions: None,
                cause: true,
                links: None,
                annotations: true,
                annotation_chars: MAX_ANNOTATION_VALUE_CHARS,
                sql_query_chars: None,
                list_items: None,
            },
            Level::Reduced => Params {
                metadata: Some(ValueLimits {
                    max_string: Some(1024),
                    max_items: Some(32),
                }),
                max_frames: 10,
                message_chars: Some(1024),
                max_exceptions: Some(32),
                cause: true,
                links: Some(16),
                annotations: true,
                annotation_chars: MAX_ANNOTATION_VALUE_CHARS,
                sql_query_chars: Some(1024),
                list_items: Some(32),
            },
            Level::Minimal => Params {
                metadata: None,
                max_frames: 0,
                message_chars: Some(256),
                max_exceptions: Some(8),
                cause: true,
                links: Some(0),
                annotations: true,
                annotation_chars: MAX_STRING_CHARS,
                sql_query_chars: Some(256),
                list_items: Some(10),
            },
            Level::Bare => Params {
                metadata: None,
                max_frames: 0,
                message_chars: Some(0),
                max_exceptions: Some(0),
                cause: false,
                links: Some(0),
                annotations: false,
                annotation_chars: 0,
                sql_query_chars: Some(0),
                list_items: Some(10),
            },
        }
    }
}

/// Attribute keys with a meaning for X-Ray. `docs/translator.md` lists what each one becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum K {
    HttpMethod,
    HttpClientIp,
    ClientAddress,
    UserAgent,
    StatusCode,
    Url,
    Scheme,
    HttpHost,
    Target,
    ServerName,
    NetHostPort,
    HostName,
    NetHostName,
    NetPeerName,
    NetPeerPort,
    NetPeerIp,
    NetworkPeerAddress,
    UrlPath,
    UrlQuery,
    ServerAddress,
    ServerPort,
    ContentLength,
    AwsOperation,
    RpcMethod,
    AwsAccountId,
    AwsRegion,
    AwsRequestId,
    AwsQueueUrl,
    MessagingUrl,
    AwsTableName,
    DynamoTableNames,
    DbSystem,
    DbName,
    DbStatement,
    DbUser,
    DbConnectionString,
    EnduserId,
    StatusText,
    LocalService,
    RemoteService,
    PeerService,
    AwsService,
    RpcService,
    RpcSystem,
}

const KINDS: usize = K::RpcSystem as usize + 1;
/// Tag of an attribute without a meaning for X-Ray.
const OTHER: u8 = u8::MAX;
/// Tag of an attribute written as an annotation.
const ANNOTATED: u8 = u8::MAX - 1;

/// What value types a key accepts: an attribute of another type keeps no meaning and stays in
/// metadata.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Str,
    StrOrInt,
    StrOrList,
}

fn classify(key: &[u8]) -> Option<(K, Want)> {
    use K::*;
    use Want::*;
    Some(match key {
        b"http.method" | b"http.request.method" => (HttpMethod, Str),
        b"http.client_ip" => (HttpClientIp, Str),
        b"client.address" => (ClientAddress, Str),
        b"http.user_agent" | b"user_agent.original" => (UserAgent, Str),
        b"http.status_code" | b"http.response.status_code" => (StatusCode, StrOrInt),
        b"http.url" | b"url.full" => (Url, Str),
        b"http.scheme" | b"url.scheme" => (Scheme, Str),
        b"http.host" => (HttpHost, Str),
        b"http.target" => (Target, Str),
        b"http.server_name" => (ServerName, Str),
        b"net.host.port" => (NetHostPort, StrOrInt),
        b"host.name" => (HostName, Str),
        b"net.host.name" => (NetHostName, Str),
        b"net.peer.name" => (NetPeerName, Str),
        b"net.peer.port" => (NetPeerPort, StrOrInt),
        b"net.peer.ip" => (NetPeerIp, Str),
        b"network.peer.address" => (NetworkPeerAddress, Str),
        b"url.path" => (UrlPath, Str),
        b"url.query" => (UrlQuery, Str),
        b"server.address" => (ServerAddress, Str),
        b"server.port" => (ServerPort, StrOrInt),
        b"http.response_content_length" | b"http.response.body.size" => (ContentLength, StrOrInt),
        b"aws.operation" => (AwsOperation, Str),
        b"rpc.method" => (RpcMethod, Str),
        b"aws.account_id" => (AwsAccountId, Str),
        b"aws.region" => (AwsRegion, Str),
        b"aws.request_id" | b"aws.requestId" => (AwsRequestId, Str),
        b"aws.queue_url" | b"aws.queue.url" => (AwsQueueUrl, Str),
        b"messaging.url" | b"aws.sqs.queue.url" => (MessagingUrl, Str),
        b"aws.table_name" | b"aws.table.name" => (AwsTableName, Str),
        b"aws.dynamodb.table_names" => (DynamoTableNames, StrOrList),
        b"db.system" | b"db.system.name" => (DbSystem, Str),
        b"db.name" | b"db.namespace" => (DbName, Str),
        b"db.statement" | b"db.query.text" => (DbStatement, Str),
        b"db.user" => (DbUser, Str),
        b"db.connection_string" => (DbConnectionString, Str),
        b"enduser.id" => (EnduserId, Str),
        b"http.status_text" => (StatusText, Str),
        b"aws.local.service" => (LocalService, Str),
        b"aws.remote.service" => (RemoteService, Str),
        b"peer.service" => (PeerService, Str),
        b"aws.service" => (AwsService, Str),
        b"rpc.service" => (RpcService, Str),
        b"rpc.system" => (RpcSystem, Str),
        _ => return None,
    })
}

fn accepts(want: Want, v: &AnyValueView<'_>) -> bool {
    matches!(
        (v, want),
        (AnyValueView::String(_), _)
            | (AnyValueView::Int(_), Want::StrOrInt)
            | (AnyValueView::Array(_), Want::StrOrList)
    )
}

/// A string value as `&str` (see `names::text`).
fn as_str<'a>(v: &AnyValueView<'a>) -> Option<&'a str> {
    match v {
        AnyValueView::String(s) => Some(text(s)),
        _ => None,
    }
}

fn as_i64(v: &AnyValueView<'_>) -> Option<i64> {
    match v {
        AnyValueView::Int(i) => Some(*i),
        AnyValueView::String(s) => text(s).trim().parse().ok(),
        _ => None,
    }
}

/// Resource attributes that shape every document of a `ResourceSpans`, read once.
pub struct ResourceInfo<'a> {
    attrs: &'a [KeyValueView<'a>],
    service_name: Option<&'a str>,
    /// `cloud.provider` is `aws` or absent: the `aws` object is written.
    aws: bool,
    origin: Option<&'static str>,
    account_id: Option<&'a str>,
    sdk_name: Option<&'a str>,
    sdk_language: Option<&'a str>,
    sdk_version: Option<&'a str>,
    auto_instrumentation: bool,
    service_version: Option<&'a str>,
    log_group_names: Option<&'a AnyValueView<'a>>,
    log_group_arns: Option<&'a AnyValueView<'a>>,
    language: Language,
}

impl<'a> ResourceInfo<'a> {
    /// Reads a resource (absent: empty).
    pub fn new(resource: Option<&'a ResourceView<'a>>) -> ResourceInfo<'a> {
        let attrs: &'a [KeyValueView<'a>] =
            resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let mut info = ResourceInfo {
            attrs,
            service_name: None,
            aws: true,
            origin: None,
            account_id: None,
            sdk_name: None,
            sdk_language: None,
            sdk_version: None,
            auto_instrumentation: false,
            service_version: None,
            log_group_names: None,
            log_group_arns: None,
            language: Language::Other,
        };
        let mut platform = None;
        let mut ecs_launch_type = None;
        let mut image_tag = None;
        for kv in attrs {
            let Some(v) = kv.value.as_ref() else { continue };
            let s = as_str(v);
            match kv.key {
                b"service.name" => info.service_name = s,
                b"cloud.provider" => info.aws = s.is_none_or(|p| p == "aws"),
                b"cloud.platform" => platform = s,
                b"aws.ecs.launchtype" => ecs_launch_type = s,
                b"cloud.account.id" => info.account_id = s,
                b"telemetry.sdk.name" => info.sdk_name = s,
                b"telemetry.sdk.language" => info.sdk_language = s,
                b"telemetry.sdk.version" => info.sdk_version = s,
                b"telemetry.auto.version" | b"telemetry.distro.version" => {
                    info.auto_instrumentation = true
                }
                b"service.version" => info.service_version = s,
                b"container.image.tag" => image_tag = s,
                b"aws.log.group.names" => info.log_group_names = Some(v),
                b"aws.log.group.arns" => info.log_group_arns = Some(v),
                _ => {}
            }
        }
        info.service_version = info.service_version.or(image_tag);
        info.language = info
            .sdk_language
            .map_or(Language::Other, Language::from_sdk_language);
        if info.aws {
            info.origin = match platform {
                Some("aws_lambda") => Some("AWS::Lambda::Function"),
                Some("aws_ec2") => Some("AWS::EC2::Instance"),
                Some("aws_ecs") => Some(match ecs_launch_type {
                    Some("ec2") => "AWS::ECS::EC2",
                    Some("fargate") => "AWS::ECS::Fargate",
                    _ => "AWS::ECS::Container",
                }),
                Some("aws_eks") => Some("AWS::EKS::Container"),
                Some("aws_elastic_beanstalk") => Some("AWS::ElasticBeanstalk::Environment"),
                Some("aws_app_runner") => Some("AWS::AppRunner::Service"),
                _ => None,
            };
        }
        info
    }
}

/// The translation options, prepared for lookups.
pub struct Prepared<'o> {
    index_all: bool,
    /// Sorted.
    indexed: Vec<&'o str>,
}

impl<'o> Prepared<'o> {
    /// Prepares the allow-list.
    pub fn new(indexed: &'o [String], index_all: bool) -> Prepared<'o> {
        let mut indexed: Vec<&str> = indexed.iter().map(String::as_str).collect();
        indexed.sort_unstable();
        indexed.dedup();
        Prepared { index_all, indexed }
    }

    fn is_indexed(&self, key: &[u8]) -> bool {
        // `str`'s order is its bytes' order.
        !self.indexed.is_empty()
            && self
                .indexed
                .binary_search_by(|k| k.as_bytes().cmp(key))
                .is_ok()
    }

    fn is_resource_indexed(&self, key: &[u8]) -> bool {
        self.indexed.iter().any(|k| {
            k.strip_prefix("otel.resource.")
                .is_some_and(|rest| rest.as_bytes() == key)
        })
    }
}

/// Buffers reused from span to span.
pub struct Scratch<'a> {
    slots: [Option<&'a AnyValueView<'a>>; KINDS],
    /// The string values of `slots` as `&str`, converted once a span.
    strs: [Option<&'a str>; KINDS],
    tags: Vec<u8>,
    used: u64,
    text: String,
    annotation_keys: Vec<(usize, usize)>,
    resource_tags: Vec<bool>,
}

impl Default for Scratch<'_> {
    fn default() -> Self {
        Scratch {
            slots: [None; KINDS],
            strs: [None; KINDS],
            tags: Vec::new(),
            used: 0,
            text: String::new(),
            annotation_keys: Vec::new(),
            resource_tags: Vec::new(),
        }
    }
}

impl<'a> Scratch<'a> {
    fn classify(&mut self, attrs: &'a [KeyValueView<'a>]) {
        self.slots = [None; KINDS];
        self.strs = [None; KINDS];
        self.used = 0;
        self.tags.clear();
        self.resource_tags.clear();
        for kv in attrs {
            let tag = match (classify(kv.key), kv.value.as_ref()) {
                (Some((k, want)), Some(v))
                    if accepts(want, v) && self.slots[k as usize].is_none() =>
                {
                    self.slots[k as usize] = Some(v);
                    self.strs[k as usize] = as_str(v);
                    k as u8
                }
                _ => OTHER,
            };
            self.tags.push(tag);
        }
    }

    fn get(&self, k: K) -> Option<&'a AnyValueView<'a>> {
        self.slots[k as usize]
    }

    fn str(&self, k: K) -> Option<&'a str> {
        self.strs[k as usize]
    }

    fn int(&self, k: K) -> Option<i64> {
        self.get(k).and_then(as_i64)
    }

    fn use_(&mut self, k: K) {
        self.used |= 1 << (k as u8);
    }

    fn is_used(&self, tag: u8) -> bool {
        tag == ANNOTATED || (tag != OTHER && self.used & (1 << tag) != 0)
    }
}

/// Everything the renderer needs to know about one span.
pub struct SpanCtx<'a, 'r> {
    /// The span.
    pub span: &'a SpanView<'a>,
    /// Its resource.
    pub res: &'r ResourceInfo<'a>,
    /// Its id.
    pub id: [u8; 8],
    /// A segment (SERVER span or no parent) rather than a subsegment.
    pub segment: bool,
    /// For a segment: the parent span id it has (a remote parent).
    pub remote_parent: Option<[u8; 8]>,
}

/// What rendering produced.
#[derive(Debug, Clone, Copy)]
pub struct Rendered {
    /// Offset in the buffer where the head (`"name":…,"id":…`) ends.
    pub head_end: usize,
    /// Values shortened or left out to respect X-Ray's limits.
    pub truncated: usize,
}

struct Out<'b> {
    buf: &'b mut Vec<u8>,
    truncated: usize,
}

impl Out<'_> {
    fn key(&mut self, k: &str) {
        self.buf.extend_from_slice(k.as_bytes());
    }

    fn str_max(&mut self, s: impl AsRef<[u8]>, max: usize) {
        if write_str_max(self.buf, s, max) {
            self.truncated += 1;
        }
    }
}

fn kind(span: &SpanView<'_>) -> SpanKind {
    SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified)
}

/// Renders `cx.span` into `buf` at `level`: the members of its JSON object, without braces,
/// `trace_id`, `type`, or `subsegments`.
pub fn render<'a>(
    buf: &mut Vec<u8>,
    cx: &SpanCtx<'a, '_>,
    opts: &Prepared<'_>,
    sc: &mut Scratch<'a>,
    level: Level,
) -> Rendered {
    let span = cx.span;
    let p = level.params();
    sc.classify(&span.attributes);
    let mut out = Out { buf, truncated: 0 };
    let kind = kind(span);
    let aws_sdk = sc.str(K::RpcSystem) == Some("aws-api");

    // name, id
    out.key("\"name\":\"");
    let from_aws_service = write_name(&mut out, cx, sc, kind, aws_sdk);
    out.key("\",\"id\":\"");
    write_hex(out.buf, &cx.id);
    out.buf.push(b'"');
    let head_end = out.buf.len();

    // times
    let start = span.start_time_unix_nano;
    let end = span.end_time_unix_nano.max(start);
    out.key(",\"start_time\":");
    write_epoch_seconds(out.buf, start);
    out.key(",\"end_time\":");
    write_epoch_seconds(out.buf, end);
    if let Some(parent) = cx.remote_parent {
        out.key(",\"parent_id\":\"");
        write_hex(out.buf, &parent);
        out.buf.push(b'"');
    }

    // namespace
    let namespace = if aws_sdk || from_aws_service {
        Some("aws")
    } else if kind == SpanKind::Client
        || (!cx.segment
            && sc.get(K::RemoteService).is_some()
            && matches!(kind, SpanKind::Producer | SpanKind::Consumer))
    {
        Some("remote")
    } else {
        None
    };
    if let Some(ns) = namespace {
        out.key(",\"namespace\":\"");
        out.key(ns);
        out.buf.push(b'"');
    }

    // error / throttle / fault
    let status_error = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32);
    let (error, throttle, fault) = match sc.int(K::StatusCode) {
        Some(c @ 400..=499) => (true, c == 429, false),
        Some(500..=599) => (false, false, true),
        _ => (false, false, status_error),
    };
    if fault {
        out.key(",\"fault\":true");
    }
    if error {
        out.key(",\"error\":true");
    }
    if throttle {
        out.key(",\"throttle\":true");
    }

    if let Some(user) = sc.str(K::EnduserId) {
        sc.use_(K::EnduserId);
        out.key(",\"user\":");
        out.str_max(user, MAX_STRING_CHARS);
    }
    if cx.segment
        && let Some(origin) = cx.res.origin
    {
        out.key(",\"origin\":\"");
        out.key(origin);
        out.buf.push(b'"');
    }

    write_http(&mut out, cx, sc, kind);
    if cx.res.aws {
        write_aws(&mut out, cx, sc, &p);
    }
    write_sql(&mut out, span, sc, &p);
    if cx.segment
        && let Some(version) = cx.res.service_version
    {
        out.key(",\"service\":{\"version\":");
        out.str_max(version, MAX_STRING_CHARS);
        out.buf.push(b'}');
    }
    if p.cause {
        write_cause(&mut out, cx, sc, kind, &p, status_error);
    } else if span.events.iter().any(|e| e.name == b"exception") || status_error {
        out.truncated += 1;
    }
    if p.annotations {
        write_annotations(&mut out, cx, opts, sc, &p);
    } else if opts.index_all || !opts.indexed.is_empty() {
        out.truncated += 1;
    }
    write_metadata(&mut out, cx, sc, &p, level);
    write_links(&mut out, span, &p);

    Rendered {
        head_end,
        truncated: out.truncated,
    }
}

/// Writes the body of the `name` string; returns whether it came from `aws.service`.
fn write_name(
    out: &mut Out<'_>,
    cx: &SpanCtx<'_, '_>,
    sc: &Scratch<'_>,
    kind: SpanKind,
    aws_sdk: bool,
) -> bool {
    let mut candidates: [Option<&str>; 3] = [None; 3];
    match kind {
        SpanKind::Server => candidates[0] = sc.str(K::LocalService),
        SpanKind::Client | SpanKind::Producer | SpanKind::Consumer => {
            candidates[0] = sc.str(K::RemoteService).map(|n| {
                if aws_sdk {
                    n.strip_prefix("AWS.SDK.")
                        .or_else(|| n.strip_prefix("AWS::"))
                        .unwrap_or(n)
                } else {
                    n
                }
            })
        }
        _ => {}
    }
    candidates[1] = sc.str(K::PeerService);
    for c in candidates.iter().flatten() {
        if try_name(out, c) {
            return false;
        }
    }
    if let Some(service) = sc.str(K::AwsService)
        && try_name(out, service)
    {
        return true;
    }
    if let Some(db) = sc.str(K::DbName)
        && names::has_name_char(db)
    {
        let host = sc
            .str(K::DbConnectionString)
            .and_then(host_of_connection_string)
            .or_else(|| sc.str(K::ServerAddress))
            .or_else(|| sc.str(K::NetPeerName))
            .filter(|h| names::has_name_char(h));
        let start = out.buf.len();
        let (n, cut) = names::write_sanitised_name(out.buf, db);
        let mut cut = cut;
        if let (Some(host), false) = (host, cut) {
            if n < names::MAX_NAME_CHARS {
                out.buf.push(b'@');
                let mark = out.buf.len();
                let (_, c) = names::write_sanitised_name(out.buf, host);
                cut = c;
                // Keep the whole name within 200 characters.
                let total = text(&out.buf[start..]).chars().count();
                if total > names::MAX_NAME_CHARS {
                    let keep =
                        names::MAX_NAME_CHARS - (text(&out.buf[start..mark]).chars().count());
                    let (kept, _) = truncate_chars(&out.buf[mark..], keep);
                    let new_len = mark + kept.len();
                    out.buf.truncate(new_len);
                    cut = true;
                }
            } else {
                cut = true;
            }
        }
        if cut {
            out.truncated += 1;
        }
        if out.buf.len() == start {
            // Not reached: `has_name_char` said the database name keeps a character.
            out.buf.extend_from_slice(FALLBACK_NAME.as_bytes());
        }
        return false;
    }
    let mut rest: [Option<&str>; 5] = [None; 5];
    if kind == SpanKind::Server {
        rest[0] = cx.res.service_name;
    }
    rest[1] = sc.str(K::RpcService);
    rest[2] = sc.str(K::HttpHost);
    rest[3] = sc.str(K::NetPeerName);
    rest[4] = sc.str(K::ServerAddress);
    for c in rest.iter().flatten() {
        if try_name(out, c) {
            return false;
        }
    }
    if !try_name(out, cx.span.name) {
        out.buf.extend_from_slice(FALLBACK_NAME.as_bytes());
    }
    false
}

fn try_name(out: &mut Out<'_>, raw: impl AsRef<[u8]>) -> bool {
    let start = out.buf.len();
    let (n, cut) = names::write_sanitised_name(out.buf, raw);
    if n == 0 {
        out.buf.truncate(start);
        return false;
    }
    if cut {
        out.truncated += 1;
    }
    true
}

/// The host of `scheme://[user@]host[:port][/…]` (a `jdbc:` prefix is ignored).
fn host_of_connection_string(s: &str) -> Option<&str> {
    let s = s.strip_prefix("jdbc:").unwrap_or(s);
    let (_, rest) = split_once_str(s, "://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']').map_or(v6, |(h, _)| h)
    } else {
        authority.split_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then_some(host)
}

fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

fn port_of(sc: &Scratch<'_>, k: K) -> Option<i64> {
    sc.int(k)
}

fn write_http(out: &mut Out<'_>, cx: &SpanCtx<'_, '_>, sc: &mut Scratch<'_>, kind: SpanKind) {
    use K::*;
    let has_http = [
        HttpMethod,
        HttpClientIp,
        UserAgent,
        StatusCode,
        Url,
        Scheme,
        HttpHost,
        Target,
        ServerName,
        NetHostPort,
        UrlPath,
        UrlQuery,
    ]
    .iter()
    .any(|&k| sc.get(k).is_some());
    if !has_http {
        return;
    }
    let peer_address = sc.str(NetworkPeerAddress).filter(|a| is_ip(a));
    let has_net_peer_addr = sc.get(NetPeerIp).is_some() || peer_address.is_some();
    let client_address = sc.str(ClientAddress).filter(|a| is_ip(a));
    let (client_ip, client_ip_kind) = if let Some(ip) = sc.str(HttpClientIp) {
        (Some(ip), HttpClientIp)
    } else if let Some(ip) = client_address {
        (Some(ip), ClientAddress)
    } else if let Some(ip) = sc.str(NetPeerIp) {
        (Some(ip), NetPeerIp)
    } else {
        (peer_address, NetworkPeerAddress)
    };
    let has_url_attrs = sc.get(Url).is_some()
        || [
            HttpHost,
            ServerName,
            HostName,
            NetHostName,
            NetPeerName,
            NetPeerIp,
            ServerAddress,
        ]
        .iter()
        .any(|&k| sc.get(k).is_some())
        || peer_address.is_some();

    out.key(",\"http\":{");
    let obj_start = out.buf.len();
    let mut first = true;
    let mut req_open = false;
    let mut field = |out: &mut Out<'_>, name: &str| {
        if !req_open {
            out.key("\"request\":{");
            req_open = true;
        } else {
            out.buf.push(b',');
        }
        out.buf.push(b'"');
        out.key(name);
        out.key("\":");
    };
    if let Some(m) = sc.str(HttpMethod) {
        sc.use_(HttpMethod);
        field(out, "method");
        out.str_max(m, MAX_STRING_CHARS);
    }
    if has_url_attrs {
        let mut url = std::mem::take(&mut sc.text);
        url.clear();
        build_url(&mut url, sc, kind == SpanKind::Server);
        field(out, "url");
        out.str_max(&url, MAX_STRING_CHARS);
        sc.text = url;
    }
    if let Some(ua) = sc.str(UserAgent) {
        sc.use_(UserAgent);
        field(out, "user_agent");
        out.str_max(ua, MAX_STRING_CHARS);
    }
    if let Some(ip) = client_ip {
        sc.use_(client_ip_kind);
        field(out, "client_ip");
        out.str_max(ip, MAX_STRING_CHARS);
        if cx.segment && !has_net_peer_addr {
            field(out, "x_forwarded_for");
            out.key("true");
        }
    }
    if req_open {
        out.buf.push(b'}');
        first = false;
    }
    let status = sc.int(StatusCode);
    let length = sc.int(ContentLength);
    if status.is_some() || length.is_some() {
        if !first {
            out.buf.push(b',');
        }
        out.key("\"response\":{");
        if let Some(s) = status {
            sc.use_(StatusCode);
            out.key("\"status\":");
            write_i64(out.buf, s);
        }
        if let Some(l) = length {
            sc.use_(ContentLength);
            if status.is_some() {
                out.buf.push(b',');
            }
            out.key("\"content_length\":");
            write_i64(out.buf, l);
        }
        out.buf.push(b'}');
    }
    if out.buf.len() == obj_start {
        out.buf.truncate(obj_start - ",\"http\":{".len());
    } else {
        out.buf.push(b'}');
    }
}

/// `url.full`/`http.url`, or the URL rebuilt from its parts (OpenTelemetry's HTTP conventions, old
/// and new): scheme (default `http`) `://` host [`:` port unless the scheme's default] target, or
/// path (default `/`) and `?query`.
fn build_url(url: &mut String, sc: &mut Scratch<'_>, server: bool) {
    use K::*;
    if let Some(full) = sc.str(Url) {
        sc.use_(Url);
        url.push_str(full);
        return;
    }
    let scheme = match sc.str(Scheme) {
        Some(s) => {
            sc.use_(Scheme);
            s
        }
        None => "http",
    };
    url.push_str(scheme);
    url.push_str("://");
    let (hosts, ports): (&[K], &[K]) = if server {
        (
            &[ServerName, NetHostName, HostName, ServerAddress],
            &[NetHostPort, ServerPort],
        )
    } else {
        (
            &[NetPeerName, ServerAddress, NetPeerIp],
            &[NetPeerPort, ServerPort],
        )
    };
    if let Some(host) = sc.str(HttpHost) {
        // `http.host` is the Host header: it already carries any port.
        sc.use_(HttpHost);
        url.push_str(host);
    } else {
        if let Some(&k) = hosts.iter().find(|&&k| sc.get(k).is_some())
            && let Some(h) = sc.str(k)
        {
            sc.use_(k);
            url.push_str(h);
        }
        if let Some(&k) = ports.iter().find(|&&k| port_of(sc, k).is_some())
            && let Some(port) = port_of(sc, k)
        {
            sc.use_(k);
            let default = (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
            if !default {
                url.push(':');
                url.push_str(&port.to_string());
            }
        }
    }
    if let Some(target) = sc.str(Target) {
        sc.use_(Target);
        url.push_str(target);
    } else {
        match sc.str(UrlPath) {
            Some(path) => {
                sc.use_(UrlPath);
                url.push_str(path);
            }
            None => url.push('/'),
        }
        if let Some(q) = sc.str(UrlQuery) {
            sc.use_(UrlQuery);
            if !q.starts_with('?') {
                url.push('?');
            }
            url.push_str(q);
        }
    }
}

fn write_aws(out: &mut Out<'_>, cx: &SpanCtx<'_, '_>, sc: &mut Scratch<'_>, p: &Params) {
    use K::*;
    let start = out.buf.len();
    out.key(",\"aws\":{");
    let body = out.buf.len();
    let sep = |out: &mut Out<'_>| {
        if out.buf.len() > body {
            out.buf.push(b',');
        }
    };
    let account = match sc.str(AwsAccountId).filter(|a| !a.is_empty()) {
        Some(a) => {
            sc.use_(AwsAccountId);
            Some(a)
        }
        None => cx.res.account_id,
    };
    if let Some(a) = account {
        sep(out);
        out.key("\"account_id\":");
        out.str_max(a, MAX_STRING_CHARS);
    }
    let operation = if let Some(op) = sc.str(AwsOperation) {
        sc.use_(AwsOperation);
        Some(op)
    } else if let Some(op) = sc.str(RpcMethod) {
        sc.use_(RpcMethod);
        Some(op)
    } else {
        None
    };
    for (k, name, value) in [
        (AwsOperation, "operation", operation),
        (AwsRegion, "region", sc.str(AwsRegion)),
        (AwsRequestId, "request_id", sc.str(AwsRequestId)),
    ] {
        if let Some(v) = value {
            if k != AwsOperation {
                sc.use_(k);
            }
            sep(out);
            out.buf.push(b'"');
            out.key(name);
            out.key("\":");
            out.str_max(v, MAX_STRING_CHARS);
        }
    }
    // The semantic-convention names win over the X-Ray-specific ones.
    let queue = if let Some(q) = sc.str(MessagingUrl) {
        sc.use_(MessagingUrl);
        Some(q)
    } else if let Some(q) = sc.str(AwsQueueUrl) {
        sc.use_(AwsQueueUrl);
        Some(q)
    } else {
        None
    };
    if let Some(q) = queue {
        sep(out);
        out.key("\"queue_url\":");
        out.str_max(q, MAX_STRING_CHARS);
    }
    let mut table_written = false;
    if let Some(v) = sc.get(DynamoTableNames) {
        match v {
            AnyValueView::String(t) => {
                sc.use_(DynamoTableNames);
                sep(out);
                out.key("\"table_name\":");
                out.str_max(t, MAX_STRING_CHARS);
                table_written = true;
            }
            AnyValueView::Array(a) if a.iter().all(|v| as_str(v).is_some()) && !a.is_empty() => {
                sc.use_(DynamoTableNames);
                sep(out);
                if a.len() == 1 {
                    out.key("\"table_name\":");
                    out.str_max(as_str(&a[0]).unwrap_or(""), MAX_STRING_CHARS);
                } else {
                    out.key("\"table_names\":[");
                    write_str_list(out, a.iter().filter_map(as_str), a.len(), p.list_items);
                    out.buf.push(b']');
                }
                table_written = true;
            }
            _ => {}
        }
    }
    if !table_written && let Some(t) = sc.str(AwsTableName) {
        sc.use_(AwsTableName);
        sep(out);
        out.key("\"table_name\":");
        out.str_max(t, MAX_STRING_CHARS);
    }
    if cx.segment {
        write_log_groups(out, cx.res, p, &sep);
        let r = cx.res;
        if r.sdk_name.is_some() || r.sdk_version.is_some() || r.auto_instrumentation {
            sep(out);
            out.key("\"xray\":{");
            if let Some(name) = r.sdk_name {
                out.key("\"sdk\":\"");
                let (name, cut) = truncate_chars(name, MAX_STRING_CHARS);
                write_escaped(out.buf, name);
                if let Some(lang) = r.sdk_language {
                    // X-Ray's SDK names read "X-Ray SDK for Java"; OpenTelemetry's become
                    // "opentelemetry for java".
                    let suffix_present = name.len() >= lang.len() + 5 && {
                        let (head, tail) = name.split_at(name.len() - lang.len());
                        tail.eq_ignore_ascii_case(lang.as_bytes())
                            && head[head.len() - 5..].eq_ignore_ascii_case(b" for ")
                    };
                    if !lang.is_empty() && !suffix_present {
                        out.key(" for ");
                        write_escaped(out.buf, truncate_chars(lang, MAX_STRING_CHARS).0);
                    }
                }
                if cut {
                    out.truncated += 1;
                }
                out.key("\",");
            }
            if let Some(v) = r.sdk_version {
                out.key("\"sdk_version\":");
                out.str_max(v, MAX_STRING_CHARS);
                out.buf.push(b',');
            }
            out.key("\"auto_instrumentation\":");
            out.key(if r.auto_instrumentation {
                "true"
            } else {
                "false"
            });
            out.buf.push(b'}');
        }
    }
    if out.buf.len() == body {
        out.buf.truncate(start);
    } else {
        out.buf.push(b'}');
    }
}

fn write_str_list<'s>(
    out: &mut Out<'_>,
    items: impl Iterator<Item = &'s str>,
    len: usize,
    max: Option<usize>,
) {
    let limit = max.unwrap_or(usize::MAX);
    for (i, s) in items.take(limit).enumerate() {
        if i > 0 {
            out.buf.push(b',');
        }
        out.str_max(s, MAX_STRING_CHARS);
    }
    if len > limit {
        out.truncated += 1;
    }
}

/// `aws.cloudwatch_logs` from `aws.log.group.arns` (log group parsed from each ARN), else from
/// `aws.log.group.names`. A plain string counts as a list of one.
fn write_log_groups(
    out: &mut Out<'_>,
    res: &ResourceInfo<'_>,
    p: &Params,
    sep: &dyn Fn(&mut Out<'_>),
) {
    fn strings<'a>(v: &AnyValueView<'a>) -> Vec<&'a str> {
        match v {
            AnyValueView::String(s) => vec![text(s)],
            AnyValueView::Array(a) => a.iter().filter_map(as_str).collect(),
            _ => Vec::new(),
        }
    }
    let (list, arns) = match (
        res.log_group_arns.map(strings),
        res.log_group_names.map(strings),
    ) {
        (Some(a), _) if !a.is_empty() => (a, true),
        (_, Some(n)) if !n.is_empty() => (n, false),
        _ => return,
    };
    sep(out);
    out.key("\"cloudwatch_logs\":[");
    let limit = p.list_items.unwrap_or(usize::MAX);
    for (i, item) in list.iter().take(limit).enumerate() {
        if i > 0 {
            out.buf.push(b',');
        }
        out.key("{\"log_group\":");
        if arns {
            // arn:aws:logs:region:account:log-group:NAME[:*]
            let name = item.split(':').nth(6).unwrap_or(item);
            out.str_max(name, 512);
            out.key(",\"arn\":");
            out.str_max(item, 2048);
        } else {
            out.str_max(item, 512);
        }
        out.buf.push(b'}');
    }
    if list.len() > limit {
        out.truncated += 1;
    }
    out.buf.push(b']');
}

fn is_sql(system: &str) -> bool {
    matches!(
        system,
        "db2"
            | "derby"
            | "hive"
            | "mariadb"
            | "mssql"
            | "mysql"
            | "oracle"
            | "postgresql"
            | "sqlite"
            | "teradata"
            | "other_sql"
            | "h2"
            | "hsqldb"
            | "cockroachdb"
            | "trino"
            | "ibm.db2"
            | "microsoft.sql_server"
            | "oracle.db"
            | "aws.redshift"
            | "redshift"
    )
}

/// `sql` for SQL databases, as the Collector writes it: `url` is the span name, the connection
/// string is `<db.connection_string or localhost>/<db.name>`.
fn write_sql(out: &mut Out<'_>, span: &SpanView<'_>, sc: &mut Scratch<'_>, p: &Params) {
    use K::*;
    let Some(system) = sc.str(DbSystem).filter(|s| is_sql(s)) else {
        return;
    };
    sc.use_(DbSystem);
    out.key(",\"sql\":{\"url\":");
    out.str_max(span.name, MAX_STRING_CHARS);
    out.key(",\"connection_string\":\"");
    // The Collector writes `localhost` when there is no connection string; the server address
    // and port, when the span has them, say more.
    let mut cut1 = false;
    if let Some(conn) = sc.str(DbConnectionString) {
        sc.use_(DbConnectionString);
        let (c, cut) = truncate_chars(conn, MAX_STRING_CHARS);
        write_escaped(out.buf, c);
        cut1 = cut;
    } else if let Some((host_k, port_k)) = [(ServerAddress, ServerPort), (NetPeerName, NetPeerPort)]
        .into_iter()
        .find(|&(h, _)| sc.str(h).is_some())
    {
        let (h, cut) = truncate_chars(sc.str(host_k).unwrap_or(""), MAX_STRING_CHARS);
        write_escaped(out.buf, h);
        cut1 = cut;
        sc.use_(host_k);
        if let Some(port) = sc.int(port_k) {
            sc.use_(port_k);
            out.buf.push(b':');
            write_i64(out.buf, port);
        }
    } else {
        out.key("localhost");
    }
    let name = sc.str(DbName).unwrap_or("");
    sc.use_(DbName);
    out.buf.push(b'/');
    let (n, cut2) = truncate_chars(name, MAX_STRING_CHARS);
    write_escaped(out.buf, n);
    if cut1 || cut2 {
        out.truncated += 1;
    }
    out.key("\",\"database_type\":");
    out.str_max(system, MAX_STRING_CHARS);
    if let Some(user) = sc.str(DbUser) {
        sc.use_(DbUser);
        out.key(",\"user\":");
        out.str_max(user, MAX_STRING_CHARS);
    }
    if let Some(q) = sc.str(DbStatement) {
        match p.sql_query_chars {
            Some(0) => out.truncated += 1,
            max => {
                sc.use_(DbStatement);
                out.key(",\"sanitized_query\":");
                out.str_max(q, max.unwrap_or(usize::MAX));
            }
        }
    }
    out.buf.push(b'}');
}

fn write_cause(
    out: &mut Out<'_>,
    cx: &SpanCtx<'_, '_>,
    sc: &mut Scratch<'_>,
    kind: SpanKind,
    p: &Params,
    status_error: bool,
) {
    let span = cx.span;
    let remote = matches!(kind, SpanKind::Client | SpanKind::Producer);
    let has_exceptions = span.events.iter().any(|e| e.name == b"exception");
    let message_max = p.message_chars.unwrap_or(usize::MAX);
    if !has_exceptions {
        if !status_error {
            return;
        }
        let status_message = span.status.as_ref().map_or("", |s| text(s.message));
        let message = if status_message.is_empty() {
            match sc.str(K::StatusText) {
                Some(t) => {
                    sc.use_(K::StatusText);
                    t
                }
                None => return,
            }
        } else {
            status_message
        };
        out.key(",\"cause\":{\"exceptions\":[{\"id\":\"");
        write_hex(out.buf, &exception_id(&cx.id, 0));
        out.key("\",\"message\":");
        out.str_max(message, message_max);
        out.key("}]}");
        return;
    }
    let max_exceptions = p.max_exceptions.unwrap_or(usize::MAX);
    let mut n: u32 = 0;
    let mut written = 0usize;
    let mut total = 0usize;
    out.key(",\"cause\":{\"exceptions\":[");
    for event in span.events.iter().filter(|e| e.name == b"exception") {
        let (mut ty, mut message, mut stack) = ("", "", "");
        for kv in &event.attributes {
            let Some(s) = kv.value.as_ref().and_then(as_str) else {
                continue;
            };
            match kv.key {
                b"exception.type" => ty = s,
                b"exception.message" => message = s,
                b"exception.stacktrace" => stack = s,
                _ => {}
            }
        }
        let parsed = if stack.is_empty() || p.max_frames == 0 {
            Vec::new()
        } else {
            parse_stacktrace(stack, cx.res.language)
        };
        if !stack.is_empty() && p.max_frames == 0 {
            out.truncated += 1;
        }
        let chain = parsed.len().max(1);
        total += chain;
        for i in 0..chain {
            if written == max_exceptions {
                break;
            }
            if written > 0 {
                out.buf.push(b',');
            }
            out.key("{\"id\":\"");
            write_hex(out.buf, &exception_id(&cx.id, n));
            out.buf.push(b'"');
            let (t, m) = match (i, parsed.get(i)) {
                (0, _) => (ty, message),
                (_, Some(e)) => (e.ty, e.message),
                _ => ("", ""),
            };
            if !m.is_empty() {
                out.key(",\"message\":");
                out.str_max(m, message_max);
            }
            if !t.is_empty() {
                out.key(",\"type\":");
                out.str_max(t, MAX_STRING_CHARS);
            }
            if remote {
                out.key(",\"remote\":true");
            }
            if let Some(e) = parsed.get(i)
                && !e.frames.is_empty()
            {
                out.key(",\"stack\":[");
                for (j, f) in e.frames.iter().take(p.max_frames).enumerate() {
                    if j > 0 {
                        out.buf.push(b',');
                    }
                    out.key("{\"path\":");
                    out.str_max(f.path, 1024);
                    if let Some(line) = f.line {
                        out.key(",\"line\":");
                        write_i64(out.buf, i64::from(line));
                    }
                    out.key(",\"label\":");
                    out.str_max(f.label, 1024);
                    out.buf.push(b'}');
                }
                out.buf.push(b']');
                if e.frames.len() > p.max_frames {
                    out.key(",\"truncated\":");
                    write_i64(out.buf, (e.frames.len() - p.max_frames) as i64);
                }
            }
            if i + 1 < chain && written + 1 < max_exceptions {
                out.key(",\"cause\":\"");
                write_hex(out.buf, &exception_id(&cx.id, n + 1));
                out.buf.push(b'"');
            }
            out.buf.push(b'}');
            n += 1;
            written += 1;
        }
        if written == max_exceptions {
            break;
        }
    }
    out.key("]}");
    if total > written {
        out.truncated += 1;
    }
}

fn annotation_value_ok(v: &AnyValueView<'_>) -> bool {
    match v {
        AnyValueView::String(_) | AnyValueView::Int(_) | AnyValueView::Bool(_) => true,
        AnyValueView::Double(d) => d.is_finite(),
        _ => false,
    }
}

fn write_annotations<'a>(
    out: &mut Out<'_>,
    cx: &SpanCtx<'a, '_>,
    opts: &Prepared<'_>,
    sc: &mut Scratch<'a>,
    p: &Params,
) {
    if !opts.index_all && opts.indexed.is_empty() {
        return;
    }
    let start = out.buf.len();
    out.key(",\"annotations\":{");
    let body = out.buf.len();
    let mut keys = std::mem::take(&mut sc.annotation_keys);
    keys.clear();
    let mut key_buf = std::mem::take(&mut sc.text);
    key_buf.clear();

    let mut add = |out: &mut Out<'_>, key: &[u8], prefix: &str, v: &AnyValueView<'_>| -> bool {
        if keys.len() == MAX_ANNOTATIONS
            || !annotation_value_ok(v)
            || (key.is_empty() && prefix.is_empty())
        {
            return false;
        }
        let k0 = key_buf.len();
        let mut cut = names::write_annotation_key(&mut key_buf, prefix);
        cut |= names::write_annotation_key(&mut key_buf, key);
        if key_buf.len() - k0 > names::MAX_ANNOTATION_KEY_CHARS {
            key_buf.truncate(k0 + names::MAX_ANNOTATION_KEY_CHARS);
            cut = true;
        }
        let new_key = &key_buf[k0..];
        if keys.iter().any(|&(s, e)| &key_buf[s..e] == new_key) {
            key_buf.truncate(k0);
            return false;
        }
        keys.push((k0, key_buf.len()));
        if out.buf.len() > body {
            out.buf.push(b',');
        }
        out.buf.push(b'"');
        out.key(&key_buf[k0..]);
        out.key("\":");
        if cut {
            out.truncated += 1;
        }
        match v {
            AnyValueView::String(s) => out.str_max(s, p.annotation_chars),
            AnyValueView::Int(i) => write_i64(out.buf, *i),
            AnyValueView::Double(d) => write_f64(out.buf, *d),
            AnyValueView::Bool(b) => out.key(if *b { "true" } else { "false" }),
            _ => {}
        }
        true
    };

    if cx.segment {
        for kv in cx.res.attrs {
            let annotated = match kv.value.as_ref() {
                Some(v) if opts.index_all || opts.is_resource_indexed(kv.key) => {
                    add(out, kv.key, "otel.resource.", v)
                }
                _ => false,
            };
            sc.resource_tags.push(annotated);
        }
    }
    for (i, kv) in cx.span.attributes.iter().enumerate() {
        let tag = sc.tags[i];
        let eligible = if opts.index_all {
            !sc.is_used(tag)
        } else {
            opts.is_indexed(kv.key)
        };
        if !eligible || tag == K::EnduserId as u8 {
            continue;
        }
        if let Some(v) = kv.value.as_ref()
            && add(out, kv.key, "", v)
        {
            sc.tags[i] = ANNOTATED;
        }
    }
    if out.buf.len() == body {
        out.buf.truncate(start);
    } else {
        out.buf.push(b'}');
    }
    sc.annotation_keys = keys;
    sc.text = key_buf;
}

fn write_metadata(
    out: &mut Out<'_>,
    cx: &SpanCtx<'_, '_>,
    sc: &Scratch<'_>,
    p: &Params,
    level: Level,
) {
    let start = out.buf.len();
    out.key(",\"metadata\":{");
    let body = out.buf.len();
    match p.metadata {
        Some(limits) => {
            out.key("\"default\":{");
            let default_body = out.buf.len();
            let sep = |out: &mut Out<'_>| {
                if out.buf.len() > default_body {
                    out.buf.push(b',');
                }
            };
            for (i, kv) in cx.span.attributes.iter().enumerate() {
                if sc.is_used(sc.tags[i]) {
                    continue;
                }
                let Some(v) = kv
                    .value
                    .as_ref()
                    .filter(|v| !matches!(v, AnyValueView::Empty))
                else {
                    continue;
                };
                sep(out);
                write_str(out.buf, kv.key);
                out.buf.push(b':');
                write_value(out, v, limits, 0);
            }
            if cx.segment {
                for (i, kv) in cx.res.attrs.iter().enumerate() {
                    if sc.resource_tags.get(i).copied().unwrap_or(false) {
                        continue;
                    }
                    let Some(v) = kv
                        .value
                        .as_ref()
                        .filter(|v| !matches!(v, AnyValueView::Empty))
                    else {
                        continue;
                    };
                    sep(out);
                    out.key("\"otel.resource.");
                    write_escaped(out.buf, kv.key);
                    out.key("\":");
                    write_value(out, v, limits, 0);
                }
            }
            if out.buf.len() == default_body {
                out.buf.truncate(default_body - "\"default\":{".len());
            } else {
                out.buf.push(b'}');
            }
        }
        None => {
            let dropped = cx.span.attributes.iter().enumerate().any(|(i, kv)| {
                !sc.is_used(sc.tags[i])
                    && kv
                        .value
                        .as_ref()
                        .is_some_and(|v| !matches!(v, AnyValueView::Empty))
            }) || (cx.segment && !cx.res.attrs.is_empty());
            if dropped {
                out.truncated += 1;
            }
        }
    }
    if level != Level::Full {
        if out.buf.len() > body {
            out.buf.push(b',');
        }
        out.key("\"otel_xray\":{\"trimmed\":\"");
        out.key(level.marker());
        out.key("\"}");
    }
    if out.buf.len() == body {
        out.buf.truncate(start);
    } else {
        out.buf.push(b'}');
    }
}

/// Writes an attribute value as JSON: bytes as base64, non-finite floats as strings, lists and
/// maps as arrays and objects (below [`MAX_VALUE_DEPTH`]; deeper ones as JSON text).
fn write_value(out: &mut Out<'_>, v: &AnyValueView<'_>, limits: ValueLimits, depth: u32) {
    let max_items = limits.max_items.unwrap_or(usize::MAX);
    match v {
        AnyValueView::Empty | AnyValueView::StringStrindex(_) => out.key("null"),
        AnyValueView::String(s) => match limits.max_string {
            Some(max) => out.str_max(s, max),
            None => write_str(out.buf, s),
        },
        AnyValueView::Bool(b) => out.key(if *b { "true" } else { "false" }),
        AnyValueView::Int(i) => write_i64(out.buf, *i),
        AnyValueView::Double(d) => write_f64(out.buf, *d),
        AnyValueView::Bytes(b) => {
            let max = limits.max_string.map_or(usize::MAX, |m| m / 4 * 3);
            if b.len() > max {
                out.truncated += 1;
            }
            write_base64(out.buf, &b[..b.len().min(max)]);
        }
        AnyValueView::Array(_) | AnyValueView::Kvlist(_) if depth >= MAX_VALUE_DEPTH => {
            let mut nested = Vec::new();
            let mut inner = Out {
                buf: &mut nested,
                truncated: 0,
            };
            write_value(&mut inner, v, limits, 0);
            out.truncated += inner.truncated;
            write_str(out.buf, &nested);
        }
        AnyValueView::Array(a) => {
            out.buf.push(b'[');
            for (i, item) in a.iter().take(max_items).enumerate() {
                if i > 0 {
                    out.buf.push(b',');
                }
                write_value(out, item, limits, depth + 1);
            }
            if a.len() > max_items {
                out.truncated += 1;
            }
            out.buf.push(b']');
        }
        AnyValueView::Kvlist(kvs) => {
            out.buf.push(b'{');
            for (i, kv) in kvs.iter().take(max_items).enumerate() {
                if i > 0 {
                    out.buf.push(b',');
                }
                write_str(out.buf, kv.key);
                out.buf.push(b':');
                match kv.value.as_ref() {
                    Some(v) => write_value(out, v, limits, depth + 1),
                    None => out.key("null"),
                }
            }
            if kvs.len() > max_items {
                out.truncated += 1;
            }
            out.buf.push(b'}');
        }
    }
}

/// Span links, in the Collector's `links` field: `[{trace_id, id, attributes}]`. The schema does
/// not define `links` but allows extra members, and X-Ray reads them.
fn write_links(out: &mut Out<'_>, span: &SpanView<'_>, p: &Params) {
    if span.links.is_empty() {
        return;
    }
    let limit = p.links.unwrap_or(usize::MAX);
    let limits = p.metadata.unwrap_or(ValueLimits {
        max_string: Some(256),
        max_items: Some(8),
    });
    let start = out.buf.len();
    out.key(",\"links\":[");
    let body = out.buf.len();
    let mut kept = 0;
    for link in &span.links {
        let (Some(trace), Some(id)) = (ids::trace_id(link.trace_id), ids::span_id(link.span_id))
        else {
            out.truncated += 1;
            continue;
        };
        if kept == limit {
            out.truncated += 1;
            break;
        }
        if kept > 0 {
            out.buf.push(b',');
        }
        out.key("{\"trace_id\":\"");
        ids::write_xray_trace_id(out.buf, &trace);
        out.key("\",\"id\":\"");
        write_hex(out.buf, &id);
        out.buf.push(b'"');
        let attrs: Vec<&KeyValueView<'_>> = link
            .attributes
            .iter()
            .filter(|kv| {
                kv.value
                    .as_ref()
                    .is_some_and(|v| !matches!(v, AnyValueView::Empty))
            })
            .collect();
        if !attrs.is_empty() {
            out.key(",\"attributes\":{");
            for (i, kv) in attrs.iter().enumerate() {
                if i > 0 {
                    out.buf.push(b',');
                }
                write_str(out.buf, kv.key);
                out.buf.push(b':');
                if let Some(v) = kv.value.as_ref() {
                    write_value(out, v, limits, 1);
                }
            }
            out.buf.push(b'}');
        }
        out.buf.push(b'}');
        kept += 1;
    }
    if kept == 0 {
        out.buf.truncate(start);
    } else {
        debug_assert!(out.buf.len() > body);
        out.buf.push(b']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_hosts() {
        assert_eq!(
            host_of_connection_string("jdbc:mysql://db.dev.example.com:3306"),
            Some("db.dev.example.com")
        );
        assert_eq!(
            host_of_connection_string("postgresql://user:pw@db.internal:5432/shop?x=1"),
            Some("db.internal")
        );
        assert_eq!(
            host_of_connection_string("mongodb://[::1]:27017"),
            Some("::1")
        );
        assert_eq!(host_of_connection_string("Server=x;Database=y"), None);
        assert_eq!(host_of_connection_string("redis://"), None);
    }

    #[test]
    fn keys_of_both_conventions_map_to_the_same_meaning() {
        for (old, new) in [
            ("http.method", "http.request.method"),
            ("http.url", "url.full"),
            ("http.scheme", "url.scheme"),
            ("http.status_code", "http.response.status_code"),
            ("http.user_agent", "user_agent.original"),
            ("db.system", "db.system.name"),
            ("db.name", "db.namespace"),
            ("db.statement", "db.query.text"),
            ("http.response_content_length", "http.response.body.size"),
        ] {
            assert_eq!(
                classify(old.as_bytes()).map(|c| c.0),
                classify(new.as_bytes()).map(|c| c.0),
                "{old} / {new}"
            );
            assert!(classify(old.as_bytes()).is_some());
        }
        assert!(classify(b"http.route").is_none());
        const { assert!(KINDS <= 64, "the used-set is a u64") };
    }
}
