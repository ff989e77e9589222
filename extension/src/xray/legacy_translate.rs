//! TEMPORARY: the translator before the view port, kept only to check equivalence.
#![allow(missing_docs, dead_code)]
//! The translator: a batch of OTLP spans → X-Ray segment documents, each at most
//! [`TranslateOptions::max_document_bytes`].
//!
//! 1. Every span with valid ids becomes a node; SERVER spans and spans without a parent are
//!    segments, the others subsegments.
//! 2. A subsegment whose parent span is in the batch (same trace) is embedded in its parent's
//!    document; otherwise it is an independent document (`type: "subsegment"`, `trace_id`,
//!    `parent_id`). Parent cycles are broken; nesting deeper than [`MAX_EMBED_DEPTH`] is cut.
//! 3. Each span is rendered once into one shared buffer (`segment.rs`); a span too large for a
//!    document of its own is re-rendered with less (metadata, stacks, …) until it fits, or
//!    counted in [`Translation::too_large_spans`].
//! 4. Bottom-up, a node whose subtree would not fit moves its largest embedded subsegments out
//!    into independent documents until it does.
//! 5. Documents are assembled by copying the rendered spans into one `String` each.
//!
//! Pure: no I/O, no clock, no globals, no randomness (exception ids are derived from span ids).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, span::SpanKind};

use super::ids::{self, Parent};
use super::legacy_segment::{Level, Prepared, ResourceInfo, Scratch, SpanCtx, render};

use super::translate::{Document, MAX_EMBED_DEPTH, TranslateOptions, Translation};

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
    span: &'a Span,
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

/// Translates resource spans to X-Ray documents.
pub fn translate(resource_spans: &[ResourceSpans], options: &TranslateOptions) -> Translation {
    let mut result = Translation::default();
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
                (ids::trace_id(&span.trace_id), ids::span_id(&span.span_id))
            else {
                result.invalid_spans += 1;
                continue;
            };
            let parent_id = match ids::parent_id(&span.parent_span_id) {
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
    let mut arena = String::with_capacity(nodes.len() * 512);
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
            let mut json = String::with_capacity(t.size + top_overhead(t.segment));
            let mut spans = 0;
            frames.push(Frame::Open(top));
            while let Some(frame) = frames.pop() {
                match frame {
                    Frame::Comma => json.push(','),
                    Frame::Close => json.push_str("]}"),
                    Frame::Open(v) => {
                        let node = &nodes[v as usize];
                        spans += 1;
                        json.push('{');
                        json.push_str(&arena[node.start..node.head_end]);
                        if v == top {
                            json.push_str(TRACE_ID_PREFIX);
                            ids::write_xray_trace_id(&mut json, &node.trace);
                            json.push('"');
                            if let (false, Some(parent)) = (node.segment, node.parent_id) {
                                json.push_str(SUBSEGMENT_TYPE);
                                json.push_str(PARENT_ID_PREFIX);
                                super::json::write_hex(&mut json, &parent);
                                json.push('"');
                            }
                        }
                        json.push_str(&arena[node.head_end..node.end]);
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
                            json.push_str(SUBSEGMENTS_OPEN);
                        } else {
                            json.push('}');
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
                json,
                spans,
            });
        }
    }
    result
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
