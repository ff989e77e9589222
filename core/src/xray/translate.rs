//! The translator: a batch of OTLP spans → X-Ray segment documents, each at most
//! [`TranslateOptions::max_document_bytes`].
//!
//! 1. Every span with valid ids becomes a node; SERVER spans and spans without a parent are
//!    segments, the others subsegments.
//! 2. A subsegment whose parent span is in the batch (same trace) is embedded in its parent's
//!    document; otherwise it is an independent document (`type: "subsegment"`, `trace_id`,
//!    `parent_id`). Parent cycles are broken; nesting deeper than [`MAX_EMBED_DEPTH`] is cut.
//! 3. Each span is rendered once into one shared byte buffer (`segment.rs`); a span too large for a
//!    document of its own is re-rendered with less (metadata, stacks, …) until it fits, or
//!    counted in [`Translation::too_large_spans`].
//! 4. Bottom-up, a node whose subtree would not fit moves its largest embedded subsegments out
//!    into independent documents until it does.
//! 5. Documents are assembled by copying the rendered spans (bytes) into one buffer each, which
//!    becomes the document's `String` after one UTF-8 check.
//!
//! Pure: no I/O, no clock, no globals, no randomness (exception ids are derived from span ids).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, span::SpanKind};

use crate::otlp_wire::{RequestView, ResourceSpansView, SpanView};

use super::ids::{self, Parent};
use super::segment::{Level, Prepared, ResourceInfo, Scratch, SpanCtx, render};

/// X-Ray's limit on one segment document.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// Deepest nesting of embedded subsegments in one document; deeper subsegments become
/// independent documents (JSON parsers commonly stop at 128 levels; each level here is two).
pub const MAX_EMBED_DEPTH: usize = 24;

/// How spans become documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Attribute keys that become annotations (resource attributes as `otel.resource.<key>`).
    pub indexed_attributes: Vec<String>,
    /// Every eligible attribute becomes an annotation.
    pub index_all_attributes: bool,
    /// Largest document, in bytes (X-Ray: 64 KiB).
    pub max_document_bytes: usize,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            indexed_attributes: Vec::new(),
            index_all_attributes: false,
            max_document_bytes: MAX_DOCUMENT_BYTES,
        }
    }
}

/// One serialized segment or subsegment document, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// X-Ray trace id, `1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx`.
    pub trace_id: String,
    /// The document's id (16 hex).
    pub id: String,
    /// The JSON text.
    pub json: String,
    /// How many OTLP spans this document carries (itself and embedded subsegments).
    pub spans: usize,
}

/// The result of translating a batch. Every input span is counted exactly once: in the `spans`
/// of one document, in `invalid_spans`, or in `too_large_spans`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translation {
    /// Documents to send.
    pub documents: Vec<Document>,
    /// Spans that could not be translated (trace or span id of the wrong length or all zero,
    /// parent span id of the wrong length).
    pub invalid_spans: usize,
    /// Spans that could not be made to fit in `max_document_bytes` even with everything optional
    /// left out (only possible with a tiny limit).
    pub too_large_spans: usize,
    /// Values shortened or left out to respect X-Ray's limits (strings over their maximum
    /// length, metadata, stack frames, … of spans trimmed to fit in a document).
    pub truncated_values: usize,
}

impl Translation {
    /// Moves `other`'s documents and counts into `self` (translations of separate batches sent
    /// together).
    pub fn append(&mut self, mut other: Translation) {
        self.documents.append(&mut other.documents);
        self.invalid_spans += other.invalid_spans;
        self.too_large_spans += other.too_large_spans;
        self.truncated_values += other.truncated_values;
    }

    /// Spans the translation accounts for: in its documents, invalid, or too large.
    pub fn spans(&self) -> usize {
        self.documents.iter().map(|d| d.spans).sum::<usize>()
            + self.invalid_spans
            + self.too_large_spans
    }
}

const NONE: u32 = u32::MAX;

const TRACE_ID_PREFIX: &str = ",\"trace_id\":\"";
const SUBSEGMENT_TYPE: &str = ",\"type\":\"subsegment\"";
const PARENT_ID_PREFIX: &str = ",\"parent_id\":\"";
const SUBSEGMENTS_OPEN: &str = ",\"subsegments\":[";

/// Bytes added to a node's rendering when it is the top of a document.
const fn top_overhead(segment: bool) -> usize {
    let trace = TRACE_ID_PREFIX.len() + ids::XRAY_TRACE_ID_LEN + 1;
    if segment {
        trace
    } else {
        trace + SUBSEGMENT_TYPE.len() + PARENT_ID_PREFIX.len() + 16 + 1
    }
}

struct Node<'a> {
    span: &'a SpanView<'a>,
    res: u32,
    trace: [u8; 16],
    id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    segment: bool,
    /// Parent node in this batch (subsegments only), or `NONE`.
    parent: u32,
    start: usize,
    head_end: usize,
    end: usize,
    too_large: bool,
    /// Top of its own document although its parent is in the batch.
    detached: bool,
    /// Bytes of this node and its embedded subtree, braces included.
    size: usize,
}

/// A fast hasher for random ids (the map is keyed by trace and span id).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u128(&mut self, n: u128) {
        self.write_u64(n as u64);
        self.write_u64((n >> 64) as u64);
    }
}

type IdMap = HashMap<(u128, u64), u32, BuildHasherDefault<IdHasher>>;

/// Translates resource spans to X-Ray documents: encodes them as one request and calls
/// [`translate_encoded`] (the one translator).
pub fn translate(resource_spans: &[ResourceSpans], options: &TranslateOptions) -> Translation {
    let mut bytes = Vec::new();
    for rs in resource_spans {
        prost::encoding::message::encode(1, rs, &mut bytes);
    }
    let spans = crate::count_spans(resource_spans);
    translate_encoded([(bytes.as_slice(), spans)], options)
}

/// Translates encoded OTLP/protobuf `ExportTraceServiceRequest`s, each with its span count (as
/// [`crate::otlp_wire::validate_request`] returned it), to X-Ray documents: the same documents
/// and counts as [`translate`] of all their resource spans, in order, as one batch (a trace's
/// spans group across requests). A request that does not parse counts its spans as invalid.
pub fn translate_encoded<'a>(
    requests: impl IntoIterator<Item = (&'a [u8], usize)>,
    options: &TranslateOptions,
) -> Translation {
    let mut result = Translation::default();
    let mut views: Vec<RequestView<'a>> = Vec::new();
    let mut input_bytes = 0;
    for (bytes, spans) in requests {
        match RequestView::parse(bytes) {
            Ok(view) => {
                views.push(view);
                input_bytes += bytes.len();
            }
            Err(_) => result.invalid_spans += spans,
        }
    }
    let resource_spans: Vec<&ResourceSpansView<'a>> =
        views.iter().flat_map(|v| &v.resource_spans).collect();
    translate_views(&resource_spans, input_bytes, options, result)
}

/// `input_bytes`: the size of the encoded requests, from which the rendering buffer is sized.
fn translate_views(
    resource_spans: &[&ResourceSpansView<'_>],
    input_bytes: usize,
    options: &TranslateOptions,
    mut result: Translation,
) -> Translation {
    let opts = Prepared::new(&options.indexed_attributes, options.index_all_attributes);
    let limit = options.max_document_bytes;

    // 1. Nodes.
    let resources: Vec<ResourceInfo<'_>> = resource_spans
        .iter()
        .map(|rs| ResourceInfo::new(rs.resource.as_ref()))
        .collect();
    let total: usize = resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    let mut nodes: Vec<Node<'_>> = Vec::with_capacity(total);
    for (ri, rs) in resource_spans.iter().enumerate() {
        for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let (Some(trace), Some(id)) =
                (ids::trace_id(span.trace_id), ids::span_id(span.span_id))
            else {
                result.invalid_spans += 1;
                continue;
            };
            let parent_id = match ids::parent_id(span.parent_span_id) {
                Parent::None => None,
                Parent::Some(p) => Some(p),
                Parent::Invalid => {
                    result.invalid_spans += 1;
                    continue;
                }
            };
            let segment = span.kind == SpanKind::Server as i32 || parent_id.is_none();
            nodes.push(Node {
                span,
                res: ri as u32,
                trace,
                id,
                parent_id,
                segment,
                parent: NONE,
                start: 0,
                head_end: 0,
                end: 0,
                too_large: false,
                detached: false,
                size: 0,
            });
        }
    }
    if nodes.is_empty() {
        return result;
    }

    // 2. Parents within the batch, cycles broken.
    let key =
        |trace: &[u8; 16], id: &[u8; 8]| (u128::from_be_bytes(*trace), u64::from_be_bytes(*id));
    let mut index = IdMap::with_capacity_and_hasher(nodes.len(), BuildHasherDefault::default());
    for (i, n) in nodes.iter().enumerate() {
        index.entry(key(&n.trace, &n.id)).or_insert(i as u32);
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        if node.segment {
            continue;
        }
        if let Some(p) = node.parent_id
            && let Some(&pi) = index.get(&key(&node.trace, &p))
            && pi as usize != i
        {
            node.parent = pi;
        }
    }
    break_cycles(&mut nodes);

    // 3. Render every span once into one buffer, smaller while it does not fit alone.
    // Rendered spans take 1.3 times their protobuf encoding in the bench's request: sized once,
    // the buffer is not copied while it grows.
    let mut arena: Vec<u8> = Vec::with_capacity((input_bytes * 2).max(nodes.len() * 512));
    let mut scratch = Scratch::default();
    for node in nodes.iter_mut() {
        let cx = SpanCtx {
            span: node.span,
            res: &resources[node.res as usize],
            id: node.id,
            segment: node.segment,
            remote_parent: if node.segment { node.parent_id } else { None },
        };
        let start = arena.len();
        let budget = limit.saturating_sub(2 + top_overhead(node.segment));
        let mut level = Level::Full;
        loop {
            let r = render(&mut arena, &cx, &opts, &mut scratch, level);
            if arena.len() - start <= budget {
                node.start = start;
                node.head_end = r.head_end;
                node.end = arena.len();
                result.truncated_values += r.truncated;
                break;
            }
            arena.truncate(start);
            match level.next() {
                Some(next) => level = next,
                None => {
                    node.too_large = true;
                    result.too_large_spans += 1;
                    break;
                }
            }
        }
    }

    // 4. Trees: children in input order, depth-limited, packed bottom-up.
    let n = nodes.len();
    let mut child_start = vec![0u32; n + 1];
    for node in &nodes {
        if node.parent != NONE {
            child_start[node.parent as usize + 1] += 1;
        }
    }
    for i in 0..n {
        child_start[i + 1] += child_start[i];
    }
    let mut fill = child_start.clone();
    let mut children = vec![0u32; child_start[n] as usize];
    for (i, node) in nodes.iter().enumerate() {
        if node.parent != NONE {
            let slot = &mut fill[node.parent as usize];
            children[*slot as usize] = i as u32;
            *slot += 1;
        }
    }
    let kids =
        |v: u32| &children[child_start[v as usize] as usize..child_start[v as usize + 1] as usize];

    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut stack: Vec<(u32, usize)> = Vec::new();
    for root in 0..n as u32 {
        if nodes[root as usize].parent != NONE {
            continue;
        }
        stack.push((root, 0));
        while let Some((v, depth)) = stack.pop() {
            order.push(v);
            let too_large = nodes[v as usize].too_large;
            for &c in kids(v).iter().rev() {
                let child_depth = depth + 1;
                if too_large || nodes[c as usize].too_large || child_depth > MAX_EMBED_DEPTH {
                    nodes[c as usize].detached = true;
                    stack.push((c, 0));
                } else {
                    stack.push((c, child_depth));
                }
            }
        }
    }
    debug_assert_eq!(
        order.len(),
        n,
        "every node is reachable once cycles are broken"
    );

    let mut embedded: Vec<(usize, u32)> = Vec::new();
    for &v in order.iter().rev() {
        let vi = v as usize;
        if nodes[vi].too_large {
            continue;
        }
        embedded.clear();
        embedded.extend(
            kids(v)
                .iter()
                .filter(|&&c| !nodes[c as usize].detached)
                .map(|&c| (nodes[c as usize].size, c)),
        );
        let own = 2 + nodes[vi].end - nodes[vi].start;
        let subtree = |e: &[(usize, u32)]| -> usize {
            if e.is_empty() {
                0
            } else {
                SUBSEGMENTS_OPEN.len() + 1 + e.iter().map(|x| x.0).sum::<usize>() + e.len() - 1
            }
        };
        let room = limit.saturating_sub(top_overhead(nodes[vi].segment));
        if own + subtree(&embedded) > room {
            // Largest first; ties in input order.
            embedded.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            let mut cut = 0;
            while own + subtree(&embedded[cut..]) > room && cut < embedded.len() {
                nodes[embedded[cut].1 as usize].detached = true;
                cut += 1;
            }
            embedded.drain(..cut);
        }
        nodes[vi].size = own + subtree(&embedded);
    }

    // 5. Documents, in input order of their tops; moved-out subsegments follow their tree.
    let mut queue: VecDeque<u32> = VecDeque::new();
    let mut frames: Vec<Frame> = Vec::new();
    for root in 0..n as u32 {
        if nodes[root as usize].parent != NONE {
            continue;
        }
        queue.push_back(root);
        while let Some(top) = queue.pop_front() {
            let t = &nodes[top as usize];
            if t.too_large {
                queue.extend(kids(top));
                continue;
            }
            let mut json: Vec<u8> = Vec::with_capacity(t.size + top_overhead(t.segment));
            let mut spans = 0;
            frames.push(Frame::Open(top));
            while let Some(frame) = frames.pop() {
                match frame {
                    Frame::Comma => json.push(b','),
                    Frame::Close => json.extend_from_slice(b"]}"),
                    Frame::Open(v) => {
                        let node = &nodes[v as usize];
                        spans += 1;
                        json.push(b'{');
                        json.extend_from_slice(&arena[node.start..node.head_end]);
                        if v == top {
                            json.extend_from_slice(TRACE_ID_PREFIX.as_bytes());
                            ids::write_xray_trace_id(&mut json, &node.trace);
                            json.push(b'"');
                            if let (false, Some(parent)) = (node.segment, node.parent_id) {
                                json.extend_from_slice(SUBSEGMENT_TYPE.as_bytes());
                                json.extend_from_slice(PARENT_ID_PREFIX.as_bytes());
                                super::json::write_hex(&mut json, &parent);
                                json.push(b'"');
                            }
                        }
                        json.extend_from_slice(&arena[node.head_end..node.end]);
                        let mut any = false;
                        for &c in kids(v).iter().rev() {
                            if nodes[c as usize].detached {
                                continue;
                            }
                            if !any {
                                frames.push(Frame::Close);
                                any = true;
                            } else {
                                frames.push(Frame::Comma);
                            }
                            frames.push(Frame::Open(c));
                        }
                        queue.extend(kids(v).iter().filter(|&&c| nodes[c as usize].detached));
                        if any {
                            json.extend_from_slice(SUBSEGMENTS_OPEN.as_bytes());
                        } else {
                            json.push(b'}');
                        }
                    }
                }
            }
            debug_assert!(
                json.len() <= limit,
                "document of {} bytes over {limit}",
                json.len()
            );
            result.documents.push(Document {
                trace_id: ids::xray_trace_id(&t.trace),
                id: ids::span_id_hex(&t.id),
                json: document_text(json),
                spans,
            });
        }
    }
    result
}

/// A rendered document as text: one UTF-8 check of the whole document (cheap on long text).
/// Everything the renderer writes is ASCII or a copy of a view's string, which `otlp_wire`
/// checked for UTF-8 when it read the request, so the check passes; were a string not UTF-8 (a
/// view built from unchecked bytes), its bad bytes would become U+FFFD rather than reach X-Ray
/// (none of them is `"`, `\\` or a control character, so the JSON stays well-formed).
fn document_text(json: Vec<u8>) -> String {
    String::from_utf8(json).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

enum Frame {
    Open(u32),
    Comma,
    Close,
}

/// Makes the parent links a forest: in each cycle of subsegments pointing at one another, one
/// node loses its parent and becomes the top of a document.
fn break_cycles(nodes: &mut [Node<'_>]) {
    let mut state = vec![0u8; nodes.len()]; // 0 unseen, 1 on the current path, 2 done
    let mut path: Vec<usize> = Vec::new();
    for i in 0..nodes.len() {
        if state[i] != 0 {
            continue;
        }
        path.clear();
        let mut v = i;
        loop {
            match state[v] {
                1 => {
                    nodes[v].parent = NONE;
                    break;
                }
                2 => break,
                _ => {}
            }
            state[v] = 1;
            path.push(v);
            let p = nodes[v].parent;
            if p == NONE {
                break;
            }
            v = p as usize;
        }
        for &u in &path {
            state[u] = 2;
        }
    }
}

#[cfg(test)]
#[path = "../../../extension/tests/common/mod.rs"]
mod common;

#[cfg(test)]
mod tests {
    //! One rule at a time: a span in, the document out, checked field by field. Every document
    //! is validated against the X-Ray schema.

    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, Status, span};
    use serde_json::{Value as J, json};

    const TRACE: [u8; 16] = [
        0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f, 0xc6,
        0x0c,
    ];
    const T0: u64 = 1_760_000_000_000_000_000;

    fn s(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }
    fn i(k: &str, v: i64) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(v)),
            }),
            ..Default::default()
        }
    }
    fn any(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn sp(id: u8, parent: Option<u8>, kind: SpanKind, attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: TRACE.to_vec(),
            span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
            parent_span_id: parent
                .map(|p| vec![0, 0, 0, 0, 0, 0, 0, p])
                .unwrap_or_default(),
            name: format!("span {id}"),
            kind: kind as i32,
            start_time_unix_nano: T0,
            end_time_unix_nano: T0 + 1_000_000,
            attributes: attrs,
            ..Default::default()
        }
    }

    fn run_with(
        spans: Vec<Span>,
        resource: Vec<KeyValue>,
        options: &TranslateOptions,
    ) -> (Translation, Vec<J>) {
        let rs = vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }];
        let t = translate(&rs, options);
        let docs = t
            .documents
            .iter()
            .map(|d| {
                common::assert_valid_xray_document(&d.json);
                serde_json::from_str(&d.json).unwrap()
            })
            .collect();
        (t, docs)
    }

    fn run(spans: Vec<Span>, resource: Vec<KeyValue>) -> Vec<J> {
        run_with(spans, resource, &TranslateOptions::default()).1
    }

    /// The single document of a single span.
    fn doc(kind: SpanKind, attrs: Vec<KeyValue>) -> J {
        let mut docs = run(vec![sp(1, None, kind, attrs)], vec![]);
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    /// The single embedded subsegment of a SERVER parent.
    fn sub(kind: SpanKind, attrs: Vec<KeyValue>) -> J {
        let docs = run(
            vec![
                sp(1, None, SpanKind::Server, vec![]),
                sp(2, Some(1), kind, attrs),
            ],
            vec![],
        );
        assert_eq!(docs.len(), 1);
        docs[0]["subsegments"][0].clone()
    }

    #[test]
    fn server_spans_and_roots_are_segments_others_are_embedded() {
        let docs = run(
            vec![
                sp(1, Some(9), SpanKind::Server, vec![]),
                sp(2, Some(1), SpanKind::Client, vec![]),
                sp(3, Some(2), SpanKind::Internal, vec![]),
                sp(4, None, SpanKind::Internal, vec![]),
                sp(5, Some(1), SpanKind::Server, vec![]),
            ],
            vec![],
        );
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["id"], "0000000000000001");
        assert_eq!(
            docs[0]["parent_id"], "0000000000000009",
            "a remote parent is kept"
        );
        assert_eq!(docs[0]["trace_id"], "1-5b8efff7-98038103d269b633813fc60c");
        assert!(docs[0].get("type").is_none());
        assert_eq!(docs[0]["subsegments"][0]["id"], "0000000000000002");
        assert_eq!(
            docs[0]["subsegments"][0]["subsegments"][0]["id"],
            "0000000000000003"
        );
        assert!(
            docs[0]["subsegments"][0].get("trace_id").is_none(),
            "embedded subsegments carry no trace id"
        );
        assert_eq!(docs[1]["id"], "0000000000000004");
        assert!(docs[1].get("parent_id").is_none());
        assert_eq!(
            docs[2]["id"], "0000000000000005",
            "a SERVER child is a segment of its own"
        );
        assert_eq!(docs[2]["parent_id"], "0000000000000001");
    }

    #[test]
    fn a_subsegment_without_its_parent_is_an_independent_document() {
        let docs = run(vec![sp(2, Some(1), SpanKind::Client, vec![])], vec![]);
        assert_eq!(docs[0]["type"], "subsegment");
        assert_eq!(docs[0]["parent_id"], "0000000000000001");
        assert_eq!(docs[0]["trace_id"], "1-5b8efff7-98038103d269b633813fc60c");
    }

    #[test]
    fn times_are_epoch_seconds_and_end_is_clamped() {
        let mut span = sp(1, None, SpanKind::Server, vec![]);
        span.start_time_unix_nano = T0 + 123_456_789;
        span.end_time_unix_nano = T0;
        let d = &run(vec![span], vec![])[0];
        assert_eq!(d["start_time"], json!(1_760_000_000.123_456));
        assert_eq!(d["end_time"], d["start_time"]);
    }

    #[test]
    fn name_rules_in_order() {
        use SpanKind::*;
        let res = vec![s("service.name", "svc")];
        let cases: Vec<(SpanKind, Vec<KeyValue>, &str)> = vec![
            (
                Server,
                vec![s("aws.local.service", "local"), s("peer.service", "peer")],
                "local",
            ),
            (
                Client,
                vec![s("aws.local.service", "local"), s("peer.service", "peer")],
                "peer",
            ),
            (
                Client,
                vec![
                    s("aws.remote.service", "AWS::DynamoDB"),
                    s("rpc.system", "aws-api"),
                    s("peer.service", "p"),
                ],
                "DynamoDB",
            ),
            (
                Client,
                vec![
                    s("aws.remote.service", "AWS.SDK.S3"),
                    s("rpc.system", "aws-api"),
                ],
                "S3",
            ),
            (
                Client,
                vec![s("aws.remote.service", "AWS::Thing")],
                "AWS::Thing",
            ),
            (
                Client,
                vec![s("peer.service", "peer"), s("aws.service", "S3")],
                "peer",
            ),
            (
                Client,
                vec![s("aws.service", "S3"), s("db.name", "d")],
                "S3",
            ),
            (
                Client,
                vec![
                    s("db.name", "shop"),
                    s("db.connection_string", "jdbc:mysql://db.example.com:3306"),
                ],
                "shop@db.example.com",
            ),
            (
                Client,
                vec![
                    s("db.namespace", "shop"),
                    s("server.address", "pg.internal"),
                ],
                "shop@pg.internal",
            ),
            (Client, vec![s("db.name", "shop")], "shop"),
            (Server, vec![s("rpc.service", "Greeter")], "svc"),
            (
                Client,
                vec![s("rpc.service", "Greeter"), s("http.host", "h")],
                "Greeter",
            ),
            (
                Client,
                vec![
                    s("http.host", "h.example.com:8080"),
                    s("net.peer.name", "n"),
                ],
                "h.example.com:8080",
            ),
            (
                Client,
                vec![s("net.peer.name", "n"), s("server.address", "a")],
                "n",
            ),
            (
                Client,
                vec![s("server.address", "a.example.com")],
                "a.example.com",
            ),
            (Internal, vec![], "span 1"),
            (Internal, vec![s("peer.service", "<>")], "span 1"),
        ];
        for (kind, attrs, want) in cases {
            let d = &run(vec![sp(1, None, kind, attrs.clone())], res.clone())[0];
            assert_eq!(d["name"], want, "{kind:?} {attrs:?}");
        }
        let mut unnamed = sp(1, None, Internal, vec![]);
        unnamed.name = "{}<>".into();
        assert_eq!(run(vec![unnamed], vec![])[0]["name"], "span");
    }

    #[test]
    fn documents_are_utf8_whatever_the_bytes() {
        let ok = "{\"name\":\"caf\\u00e9 東\"}".as_bytes().to_vec();
        assert_eq!(document_text(ok.clone()).as_bytes(), &ok[..]);
        // Not reachable from requests (their strings are checked when read): bad bytes become
        // U+FFFD and the JSON stays well-formed.
        let bad = b"{\"name\":\"a\xff\xc3\"}".to_vec();
        let text = document_text(bad);
        let v: J = serde_json::from_str(&text).unwrap();
        assert_eq!(v["name"], "a\u{fffd}\u{fffd}");
        // A request with a string that is not UTF-8 is not read: its spans count as invalid.
        let mut span = sp(1, None, SpanKind::Server, vec![]);
        span.name = "x".into();
        let mut bytes = Vec::new();
        let rs = ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        };
        prost::encoding::message::encode(1, &rs, &mut bytes);
        let at = bytes.iter().rposition(|&b| b == b'x').unwrap();
        bytes[at] = 0xff;
        let t = translate_encoded([(&bytes[..], 1)], &TranslateOptions::default());
        assert_eq!((t.documents.len(), t.invalid_spans), (0, 1));
    }

    #[test]
    fn an_empty_name_falls_back() {
        use SpanKind::*;
        // The span name empty, or nothing but characters the sanitiser removes or trims.
        for name in ["", " ", "\u{a0}\u{3000}", " <> ", "{\u{2028}}", "\t\n"] {
            for kind in [Server, Client, Internal] {
                let mut span = sp(1, None, kind, vec![]);
                span.name = name.into();
                assert_eq!(run(vec![span], vec![])[0]["name"], "span", "{name:?}");
            }
        }
        // Candidates that sanitise to nothing are skipped, down to the span name.
        for blank in ["", " ", "\u{a0}", "<>", " {} "] {
            for key in [
                "peer.service",
                "aws.service",
                "db.name",
                "rpc.service",
                "http.host",
                "net.peer.name",
                "server.address",
            ] {
                let d = doc(Client, vec![s(key, blank)]);
                assert_eq!(d["name"], "span 1", "{key}={blank:?}");
            }
        }
        // A blank database name with a host: the name is not "@host".
        let d = doc(
            Client,
            vec![s("db.name", " "), s("server.address", "db.internal")],
        );
        assert_eq!(d["name"], "db.internal");
        // A blank host is left out of `db@host`.
        let d = doc(Client, vec![s("db.name", "shop"), s("server.address", " ")]);
        assert_eq!(d["name"], "shop");
    }

    #[test]
    fn namespaces() {
        use SpanKind::*;
        assert_eq!(
            sub(Client, vec![s("rpc.system", "aws-api")])["namespace"],
            "aws"
        );
        assert_eq!(
            sub(Internal, vec![s("aws.service", "S3")])["namespace"],
            "aws"
        );
        assert_eq!(
            sub(Client, vec![s("http.request.method", "GET")])["namespace"],
            "remote"
        );
        assert_eq!(
            sub(Producer, vec![s("aws.remote.service", "queue")])["namespace"],
            "remote"
        );
        assert!(sub(Producer, vec![]).get("namespace").is_none());
        assert!(sub(Internal, vec![]).get("namespace").is_none());
    }

    #[test]
    fn http_urls_rebuilt_from_parts_old_and_new() {
        use SpanKind::*;
        let url = |kind, attrs: Vec<KeyValue>| {
            let mut a = vec![s("http.method", "GET")];
            a.extend(attrs);
            doc(kind, a)["http"]["request"]["url"].clone()
        };
        assert_eq!(
            url(Server, vec![s("http.url", "https://x/y?z")]),
            "https://x/y?z"
        );
        assert_eq!(
            url(Server, vec![s("url.full", "https://x/y")]),
            "https://x/y"
        );
        assert_eq!(
            url(
                Server,
                vec![
                    s("http.scheme", "https"),
                    s("http.server_name", "api"),
                    i("net.host.port", 8443),
                    s("http.target", "/a?b")
                ]
            ),
            "https://api:8443/a?b"
        );
        assert_eq!(
            url(
                Server,
                vec![
                    s("http.scheme", "https"),
                    s("http.host", "api:1"),
                    i("net.host.port", 2),
                    s("http.target", "/")
                ]
            ),
            "https://api:1/"
        );
        assert_eq!(
            url(
                Server,
                vec![
                    s("url.scheme", "https"),
                    s("server.address", "shop"),
                    i("server.port", 443),
                    s("url.path", "/p"),
                    s("url.query", "q=1")
                ]
            ),
            "https://shop/p?q=1"
        );
        assert_eq!(
            url(
                Server,
                vec![s("server.address", "shop"), s("server.port", "80")]
            ),
            "http://shop/"
        );
        assert_eq!(
            url(
                Client,
                vec![
                    s("net.peer.name", "peer"),
                    i("net.peer.port", 8080),
                    s("http.target", "/t")
                ]
            ),
            "http://peer:8080/t"
        );
        assert_eq!(
            url(
                Client,
                vec![
                    s("url.scheme", "https"),
                    s("server.address", "api"),
                    i("server.port", 8443),
                    s("url.path", "/v1")
                ]
            ),
            "https://api:8443/v1"
        );
        assert_eq!(
            url(Client, vec![s("net.peer.ip", "10.0.0.1")]),
            "http://10.0.0.1/"
        );
        assert_eq!(
            url(Client, vec![s("url.path", "/only")]),
            J::Null,
            "no host, no url"
        );
        let long = format!("https://x/{}", "a".repeat(300));
        let (t, docs) = run_with(
            vec![sp(
                1,
                None,
                Server,
                vec![s("http.method", "GET"), s("url.full", &long)],
            )],
            vec![],
            &TranslateOptions::default(),
        );
        assert_eq!(
            docs[0]["http"]["request"]["url"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            250
        );
        assert_eq!(t.truncated_values, 1);
    }

    #[test]
    fn http_request_fields_old_and_new() {
        use SpanKind::*;
        for (method, ua, status) in [
            ("http.method", "http.user_agent", "http.status_code"),
            (
                "http.request.method",
                "user_agent.original",
                "http.response.status_code",
            ),
        ] {
            let d = doc(
                Server,
                vec![s(method, "PUT"), s(ua, "curl"), i(status, 201)],
            );
            assert_eq!(
                d["http"],
                json!({"request": {"method": "PUT", "user_agent": "curl"}, "response": {"status": 201}})
            );
            assert!(
                d.get("metadata").is_none(),
                "fields used are not repeated in metadata"
            );
        }
        let d = doc(
            Server,
            vec![s("http.method", "GET"), s("http.client_ip", "1.2.3.4")],
        );
        assert_eq!(d["http"]["request"]["client_ip"], "1.2.3.4");
        assert_eq!(d["http"]["request"]["x_forwarded_for"], true);
        let d = doc(
            Server,
            vec![
                s("http.request.method", "GET"),
                s("client.address", "1.2.3.4"),
                s("network.peer.address", "10.0.0.9"),
            ],
        );
        assert_eq!(d["http"]["request"]["client_ip"], "1.2.3.4");
        assert!(
            d["http"]["request"].get("x_forwarded_for").is_none(),
            "a direct peer address means no proxy"
        );
        let d = doc(
            Server,
            vec![
                s("http.request.method", "GET"),
                s("client.address", "not-an-ip"),
                s("network.peer.address", "10.0.0.9"),
            ],
        );
        assert_eq!(d["http"]["request"]["client_ip"], "10.0.0.9");
        assert_eq!(d["metadata"]["default"]["client.address"], "not-an-ip");
        let d = sub(
            Client,
            vec![s("http.method", "GET"), s("http.client_ip", "1.2.3.4")],
        );
        assert!(
            d["http"]["request"].get("x_forwarded_for").is_none(),
            "segments only"
        );
        let d = doc(
            Client,
            vec![
                s("http.method", "GET"),
                i("http.response_content_length", 12),
            ],
        );
        assert_eq!(d["http"]["response"]["content_length"], 12);
        let d = doc(
            Client,
            vec![s("http.method", "GET"), i("http.response.body.size", 13)],
        );
        assert_eq!(d["http"]["response"]["content_length"], 13);
        let d = doc(Client, vec![s("server.address", "a"), i("server.port", 1)]);
        assert!(d.get("http").is_none(), "no HTTP attribute, no http object");
        assert_eq!(d["metadata"]["default"]["server.port"], 1);
    }

    #[test]
    fn error_throttle_fault() {
        use SpanKind::*;
        let flags = |attrs: Vec<KeyValue>, status: i32| {
            let mut span = sp(1, None, Server, attrs);
            span.status = Some(Status {
                code: status,
                message: String::new(),
            });
            let d = run(vec![span], vec![]).remove(0);
            (
                d.get("error").is_some(),
                d.get("throttle").is_some(),
                d.get("fault").is_some(),
            )
        };
        assert_eq!(
            flags(vec![i("http.status_code", 200)], 0),
            (false, false, false)
        );
        assert_eq!(
            flags(vec![i("http.status_code", 404)], 2),
            (true, false, false)
        );
        assert_eq!(
            flags(vec![i("http.response.status_code", 429)], 0),
            (true, true, false)
        );
        assert_eq!(
            flags(vec![i("http.response.status_code", 503)], 0),
            (false, false, true)
        );
        assert_eq!(
            flags(vec![s("http.status_code", "500")], 0),
            (false, false, true)
        );
        assert_eq!(flags(vec![], 2), (false, false, true));
        assert_eq!(
            flags(vec![i("http.status_code", 302)], 2),
            (false, false, true)
        );
        assert_eq!(flags(vec![], 1), (false, false, false));
    }

    #[test]
    fn aws_object() {
        use SpanKind::*;
        let d = sub(
            Client,
            vec![
                s("rpc.system", "aws-api"),
                s("rpc.method", "GetItem"),
                s("aws.operation", "Op"),
                s("aws.region", "r"),
                s("aws.requestId", "id"),
                s("aws.table.name", "t"),
            ],
        );
        assert_eq!(
            d["aws"],
            json!({"operation": "Op", "region": "r", "request_id": "id", "table_name": "t"})
        );
        assert_eq!(
            d["metadata"]["default"]["rpc.method"], "GetItem",
            "not used: aws.operation wins"
        );
        let d = sub(
            Client,
            vec![s("aws.queue.url", "old"), s("messaging.url", "new")],
        );
        assert_eq!(d["aws"]["queue_url"], "new");
        assert_eq!(d["metadata"]["default"]["aws.queue.url"], "old");
        let d = sub(Client, vec![s("aws.sqs.queue.url", "https://sqs/q")]);
        assert_eq!(d["aws"]["queue_url"], "https://sqs/q");
        let d = sub(Client, vec![s("aws.dynamodb.table_names", "one")]);
        assert_eq!(d["aws"]["table_name"], "one");
        let d = sub(
            Client,
            vec![any(
                "aws.dynamodb.table_names",
                Value::ArrayValue(ArrayValue { values: vec![] }),
            )],
        );
        assert!(d.get("aws").is_none());
        // Account: the span's own attribute, else the resource's; resource facts on segments only.
        let res = vec![
            s("cloud.account.id", "111"),
            s("telemetry.sdk.name", "opentelemetry"),
            s("telemetry.sdk.language", "rust"),
        ];
        let docs = run(
            vec![
                sp(1, None, Server, vec![]),
                sp(2, Some(1), Client, vec![s("aws.account_id", "222")]),
                sp(3, Some(1), Client, vec![]),
            ],
            res,
        );
        assert_eq!(
            docs[0]["aws"],
            json!({"account_id": "111", "xray": {"sdk": "opentelemetry for rust", "auto_instrumentation": false}})
        );
        assert_eq!(
            docs[0]["subsegments"][0]["aws"],
            json!({"account_id": "222"})
        );
        assert_eq!(
            docs[0]["subsegments"][1]["aws"],
            json!({"account_id": "111"})
        );
        // Not on AWS: no aws object, the attributes stay in metadata.
        let docs = run(
            vec![sp(1, None, Server, vec![s("aws.region", "r")])],
            vec![
                s("cloud.provider", "gcp"),
                s("cloud.platform", "aws_lambda"),
            ],
        );
        assert!(docs[0].get("aws").is_none());
        assert!(docs[0].get("origin").is_none());
        assert_eq!(docs[0]["metadata"]["default"]["aws.region"], "r");
        // An SDK name that already says its language is kept.
        let docs = run(
            vec![sp(1, None, Server, vec![])],
            vec![
                s("telemetry.sdk.name", "X-Ray SDK for Java"),
                s("telemetry.sdk.language", "java"),
            ],
        );
        assert_eq!(docs[0]["aws"]["xray"]["sdk"], "X-Ray SDK for Java");
    }

    #[test]
    fn origins() {
        let origin = |res: Vec<KeyValue>| {
            run(vec![sp(1, None, SpanKind::Server, vec![])], res).remove(0)["origin"].clone()
        };
        assert_eq!(
            origin(vec![s("cloud.platform", "aws_lambda")]),
            "AWS::Lambda::Function"
        );
        assert_eq!(
            origin(vec![
                s("cloud.provider", "aws"),
                s("cloud.platform", "aws_ec2")
            ]),
            "AWS::EC2::Instance"
        );
        assert_eq!(
            origin(vec![
                s("cloud.platform", "aws_ecs"),
                s("aws.ecs.launchtype", "fargate")
            ]),
            "AWS::ECS::Fargate"
        );
        assert_eq!(
            origin(vec![s("cloud.platform", "aws_ecs")]),
            "AWS::ECS::Container"
        );
        assert_eq!(
            origin(vec![s("cloud.platform", "aws_eks")]),
            "AWS::EKS::Container"
        );
        assert_eq!(origin(vec![s("cloud.platform", "gcp_cloud_run")]), J::Null);
        assert_eq!(origin(vec![]), J::Null);
        // Subsegments carry no origin.
        let docs = run(
            vec![sp(2, Some(1), SpanKind::Client, vec![])],
            vec![s("cloud.platform", "aws_lambda")],
        );
        assert!(docs[0].get("origin").is_none());
    }

    #[test]
    fn sql_for_sql_databases_only() {
        use SpanKind::*;
        let d = sub(
            Client,
            vec![
                s("db.system", "postgresql"),
                s("db.name", "shop"),
                s("db.user", "u"),
                s("db.statement", "SELECT 1"),
                s("db.connection_string", "postgresql://h:5432"),
            ],
        );
        assert_eq!(
            d["sql"],
            json!({"url": "span 2", "connection_string": "postgresql://h:5432/shop", "database_type": "postgresql", "user": "u", "sanitized_query": "SELECT 1"})
        );
        let d = sub(
            Client,
            vec![
                s("db.system.name", "microsoft.sql_server"),
                s("db.namespace", "n"),
                s("db.query.text", "SELECT 2"),
                s("server.address", "sql"),
                i("server.port", 1433),
            ],
        );
        assert_eq!(
            d["sql"],
            json!({"url": "span 2", "connection_string": "sql:1433/n", "database_type": "microsoft.sql_server", "sanitized_query": "SELECT 2"})
        );
        let d = sub(Client, vec![s("db.system", "mysql")]);
        assert_eq!(d["sql"]["connection_string"], "localhost/");
        let d = sub(
            Client,
            vec![s("db.system", "dynamodb"), s("db.statement", "x")],
        );
        assert!(d.get("sql").is_none());
        assert_eq!(d["metadata"]["default"]["db.statement"], "x");
    }

    #[test]
    fn user_from_enduser_id() {
        let d = doc(
            SpanKind::Server,
            vec![s("enduser.id", "alice"), i("enduser.role", 1)],
        );
        assert_eq!(d["user"], "alice");
        assert!(d["metadata"]["default"].get("enduser.id").is_none());
        assert_eq!(d["metadata"]["default"]["enduser.role"], 1);
    }

    #[test]
    fn cause_from_exception_events_and_status() {
        use SpanKind::*;
        let ev = |msg: &str| span::Event {
            name: "exception".into(),
            attributes: vec![s("exception.type", "E"), s("exception.message", msg)],
            ..Default::default()
        };
        let mut client = sp(2, Some(1), Client, vec![]);
        client.events = vec![
            ev("a"),
            span::Event {
                name: "log".into(),
                ..Default::default()
            },
            ev("b"),
        ];
        let docs = run(vec![sp(1, None, Server, vec![]), client], vec![]);
        let ex = docs[0]["subsegments"][0]["cause"]["exceptions"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (
                ex[0]["message"].clone(),
                ex[0]["type"].clone(),
                ex[0]["remote"].clone()
            ),
            (json!("a"), json!("E"), json!(true))
        );
        assert_ne!(ex[0]["id"], ex[1]["id"]);
        // Deterministic.
        let mut again = sp(2, Some(1), Client, vec![]);
        again.events = vec![ev("a")];
        let d = run(vec![again], vec![]).remove(0);
        assert_eq!(d["cause"]["exceptions"][0]["id"], ex[0]["id"]);
        // Status message, or http.status_text, without exception events.
        let mut e = sp(1, None, Server, vec![s("http.status_text", "Bad Gateway")]);
        e.status = Some(Status {
            code: 2,
            message: String::new(),
        });
        let d = run(vec![e], vec![]).remove(0);
        assert_eq!(d["cause"]["exceptions"][0]["message"], "Bad Gateway");
        assert!(d["cause"]["exceptions"][0].get("remote").is_none());
        let mut ok = sp(1, None, Server, vec![]);
        ok.status = Some(Status {
            code: 1,
            message: "fine".into(),
        });
        assert!(run(vec![ok], vec![]).remove(0).get("cause").is_none());
    }

    #[test]
    fn long_stacks_are_cut_and_say_so() {
        let trace: String = std::iter::once("java.lang.Error: deep\n".to_owned())
            .chain((0..80).map(|n| format!("\tat a.B.m{n}(B.java:{n})\n")))
            .collect();
        let mut span = sp(1, None, SpanKind::Server, vec![]);
        span.events = vec![span::Event {
            name: "exception".into(),
            attributes: vec![
                s("exception.type", "java.lang.Error"),
                s("exception.stacktrace", &trace),
            ],
            ..Default::default()
        }];
        let d = run(vec![span], vec![s("telemetry.sdk.language", "java")]).remove(0);
        let e = &d["cause"]["exceptions"][0];
        assert_eq!(e["stack"].as_array().unwrap().len(), 50);
        assert_eq!(e["truncated"], 30);
        assert_eq!(
            e["stack"][0],
            json!({"path": "B.java", "line": 0, "label": "a.B.m0"})
        );
    }

    #[test]
    fn annotations_only_for_allow_listed_keys() {
        let attrs = vec![
            s("tenant", "acme"),
            s("baggage.user", "u"),
            i("n", 1),
            any("d", Value::DoubleValue(f64::NAN)),
            any("l", Value::ArrayValue(ArrayValue::default())),
            s("http.request.method", "GET"),
        ];
        let allow = TranslateOptions {
            indexed_attributes: vec![
                "tenant".into(),
                "d".into(),
                "l".into(),
                "http.request.method".into(),
            ],
            ..TranslateOptions::default()
        };
        let (_, docs) = run_with(
            vec![sp(1, None, SpanKind::Server, attrs.clone())],
            vec![],
            &allow,
        );
        assert_eq!(
            docs[0]["annotations"],
            json!({"tenant": "acme", "http_request_method": "GET"})
        );
        assert_eq!(docs[0]["metadata"]["default"]["baggage.user"], "u");
        assert_eq!(docs[0]["metadata"]["default"]["d"], "NaN");
        assert_eq!(
            docs[0]["http"]["request"]["method"], "GET",
            "indexed and still used"
        );
        let none = TranslateOptions::default();
        let (_, docs) = run_with(
            vec![sp(1, None, SpanKind::Server, attrs.clone())],
            vec![],
            &none,
        );
        assert!(docs[0].get("annotations").is_none());
        let all = TranslateOptions {
            index_all_attributes: true,
            ..TranslateOptions::default()
        };
        let (_, docs) = run_with(vec![sp(1, None, SpanKind::Server, attrs)], vec![], &all);
        assert_eq!(
            docs[0]["annotations"],
            json!({"tenant": "acme", "baggage_user": "u", "n": 1}),
            "used attributes are not repeated"
        );
        // At most 50 a (sub)segment; the rest stay in metadata.
        let many: Vec<KeyValue> = (0..60).map(|n| i(&format!("k{n}"), n)).collect();
        let (_, docs) = run_with(vec![sp(1, None, SpanKind::Internal, many)], vec![], &all);
        assert_eq!(docs[0]["annotations"].as_object().unwrap().len(), 50);
        assert_eq!(
            docs[0]["metadata"]["default"].as_object().unwrap().len(),
            10
        );
    }

    #[test]
    fn metadata_holds_any_value() {
        let mut nested = AnyValue {
            value: Some(Value::IntValue(1)),
        };
        for _ in 0..12 {
            nested = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![nested],
                })),
            };
        }
        let d = doc(
            SpanKind::Internal,
            vec![
                any("bytes", Value::BytesValue(b"hi".to_vec())),
                any("inf", Value::DoubleValue(f64::INFINITY)),
                any(
                    "map",
                    Value::KvlistValue(KeyValueList {
                        values: vec![s("a", "b")],
                    }),
                ),
                KeyValue {
                    key: "empty".into(),
                    value: None,
                    ..Default::default()
                },
                KeyValue {
                    key: "nested".into(),
                    value: Some(nested),
                    ..Default::default()
                },
            ],
        );
        let m = &d["metadata"]["default"];
        assert_eq!(m["bytes"], "aGk=");
        assert_eq!(m["inf"], "Infinity");
        assert_eq!(m["map"], json!({"a": "b"}));
        assert!(m.get("empty").is_none());
        // Eight levels of structure, the rest as JSON text.
        let mut v = &m["nested"];
        for _ in 0..8 {
            v = &v[0];
        }
        assert_eq!(v, &json!("[[[[1]]]]"));
    }

    #[test]
    fn links_in_the_collector_format() {
        let mut span = sp(1, None, SpanKind::Consumer, vec![]);
        span.links = vec![
            span::Link {
                trace_id: TRACE.to_vec(),
                span_id: vec![9; 8],
                attributes: vec![s("k", "v")],
                ..Default::default()
            },
            span::Link {
                trace_id: vec![0; 16],
                span_id: vec![9; 8],
                ..Default::default()
            },
        ];
        let (t, docs) = run_with(vec![span], vec![], &TranslateOptions::default());
        assert_eq!(
            docs[0]["links"],
            json!([{"trace_id": "1-5b8efff7-98038103d269b633813fc60c", "id": "0909090909090909", "attributes": {"k": "v"}}])
        );
        assert_eq!(t.truncated_values, 1, "the invalid link is counted");
    }

    #[test]
    fn invalid_ids_are_counted_never_translated() {
        let mut bad_trace = sp(1, None, SpanKind::Server, vec![]);
        bad_trace.trace_id = vec![1; 8];
        let mut zero_span = sp(2, None, SpanKind::Server, vec![]);
        zero_span.span_id = vec![0; 8];
        let mut bad_parent = sp(3, None, SpanKind::Client, vec![]);
        bad_parent.parent_span_id = vec![1; 4];
        let mut zero_parent = sp(4, None, SpanKind::Client, vec![]);
        zero_parent.parent_span_id = vec![0; 8];
        let (t, docs) = run_with(
            vec![bad_trace, zero_span, bad_parent, zero_parent],
            vec![],
            &TranslateOptions::default(),
        );
        assert_eq!(t.invalid_spans, 3);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["id"], "0000000000000004");
        assert!(
            docs[0].get("parent_id").is_none(),
            "an all-zero parent id means no parent"
        );
        assert!(
            translate(&[], &TranslateOptions::default())
                .documents
                .is_empty()
        );
    }

    #[test]
    fn deep_chains_are_cut_into_documents() {
        let mut spans = vec![sp(1, None, SpanKind::Server, vec![])];
        for id in 2..=100u8 {
            spans.push(sp(id, Some(id - 1), SpanKind::Internal, vec![]));
        }
        let (t, docs) = run_with(spans, vec![], &TranslateOptions::default());
        fn depth(v: &J) -> usize {
            v.get("subsegments").map_or(0, |s| {
                1 + s.as_array().unwrap().iter().map(depth).max().unwrap_or(0)
            })
        }
        assert!(docs.iter().all(|d| depth(d) <= MAX_EMBED_DEPTH));
        assert_eq!(docs.len(), 4);
        assert_eq!(t.documents.iter().map(|d| d.spans).sum::<usize>(), 100);
        assert_eq!(docs[1]["type"], "subsegment");
        assert_eq!(docs[1]["parent_id"], "0000000000000019");
    }

    #[test]
    fn parent_cycles_and_duplicates_keep_every_span_once() {
        let spans = vec![
            sp(1, Some(2), SpanKind::Internal, vec![]),
            sp(2, Some(1), SpanKind::Internal, vec![]),
            sp(3, Some(3), SpanKind::Internal, vec![]),
        ];
        let (t, docs) = run_with(spans, vec![], &TranslateOptions::default());
        assert_eq!(t.documents.iter().map(|d| d.spans).sum::<usize>(), 3);
        assert_eq!(docs.len(), 2);
        let dup = vec![
            sp(1, None, SpanKind::Server, vec![]),
            sp(1, None, SpanKind::Server, vec![]),
            sp(2, Some(1), SpanKind::Client, vec![]),
        ];
        let (t, docs) = run_with(dup, vec![], &TranslateOptions::default());
        assert_eq!(t.documents.iter().map(|d| d.spans).sum::<usize>(), 3);
        assert_eq!(
            docs[0]["subsegments"][0]["id"], "0000000000000002",
            "children go to the first span with the id"
        );
    }

    #[test]
    fn oversized_spans_are_trimmed_to_fit() {
        let big = "x".repeat(70_000);
        let (t, docs) = run_with(
            vec![sp(
                1,
                None,
                SpanKind::Server,
                vec![s("blob", &big), s("small", "s")],
            )],
            vec![],
            &TranslateOptions::default(),
        );
        assert_eq!(t.too_large_spans, 0);
        assert_eq!(
            docs[0]["metadata"]["default"]["blob"]
                .as_str()
                .unwrap()
                .len(),
            1024
        );
        assert_eq!(docs[0]["metadata"]["default"]["small"], "s");
        assert_eq!(docs[0]["metadata"]["otel_xray"]["trimmed"], "reduced");
        assert_eq!(t.truncated_values, 1);
        // Too many big values even when each is cut: metadata goes, the span stays.
        let many: Vec<KeyValue> = (0..100)
            .map(|n| s(&format!("k{n}"), &big[..2000]))
            .collect();
        let (t, docs) = run_with(
            vec![sp(1, None, SpanKind::Server, many)],
            vec![],
            &TranslateOptions::default(),
        );
        assert_eq!(
            docs[0]["metadata"],
            json!({"otel_xray": {"trimmed": "minimal"}})
        );
        assert_eq!(t.truncated_values, 1);
    }

    #[test]
    fn translation_is_deterministic() {
        let spans = || {
            vec![
                sp(1, None, SpanKind::Server, vec![s("a", "b")]),
                sp(2, Some(1), SpanKind::Client, vec![s("http.method", "GET")]),
            ]
        };
        let a = run_with(spans(), vec![], &TranslateOptions::default()).0;
        let b = run_with(spans(), vec![], &TranslateOptions::default()).0;
        assert_eq!(a, b);
    }
}
