//! The span buffer: one task owns the spans; receivers and the flusher talk to it through a
//! bounded channel with `oneshot` replies ([`BufferHandle`]).
//!
//! It is bounded in spans and in bytes ([`BufferLimits`]). A push over the span cap is cut at
//! the capacity: the spans that fit are kept, the rest are refused (the receiver answers OTLP
//! `partial_success`) and counted as dropped with [`DropReason::BufferFull`]. The byte cap counts
//! what the buffer holds: the encoded requests and the JSON of the documents translated ahead
//! beside them ([`EncodedRequest::held_bytes`]); a push over it keeps its first whole requests
//! that fit and refuses the rest, counted the same way. Every span pushed is counted as received
//! here, so `received == exported + dropped + buffered` holds at all times.
//!
//! With the X-Ray exporters the buffer also translates ahead ([`spawn_preparing`]): once no request
//! has come for a moment, it turns one buffered request at a time into its X-Ray documents
//! ([`EncodedRequest::prepared`]), so that a flush at the end of an invocation mostly sends what is
//! ready instead of translating on the critical path (docs/performance.md, "Translating ahead").

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message as _;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::lambda::invocation_span::SCOPE_NAME;
use crate::stats::{DropReason, Stats};
use crate::xray::{TranslateOptions, Translation};

/// One OTLP `ExportTraceServiceRequest` as protobuf bytes: a received body (validated, not
/// decoded) or spans the extension encoded when it pushed them.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRequest {
    /// The protobuf encoding.
    pub bytes: Bytes,
    /// Spans in it.
    pub spans: usize,
    /// Holds spans of the extension's own invocation scope ([`SCOPE_NAME`]): the proxy's spans,
    /// which a flush may merge into the function's own (`merge_encoded_function_spans`).
    pub proxy_spans: bool,
    /// This request alone translated to X-Ray documents while it waited ([`spawn_preparing`]);
    /// the exporter sends these instead of translating `bytes` again. `bytes` stays: the
    /// proxy-span merge searches it, and a request the merge changes is encoded anew, without
    /// documents.
    pub prepared: Option<Box<Translation>>,
}

impl EncodedRequest {
    /// The memory this request holds, as the byte cap counts it: its encoding and the JSON text
    /// of its translated documents.
    pub fn held_bytes(&self) -> usize {
        self.bytes.len() + self.prepared.as_deref().map_or(0, translation_bytes)
    }

    /// Decodes the request (the rare paths: partial acceptance, proxy-span merge, an OTLP
    /// request over the size limits).
    pub fn decode(&self) -> Result<Vec<ResourceSpans>, prost::DecodeError> {
        ExportTraceServiceRequest::decode(self.bytes.as_ref()).map(|r| r.resource_spans)
    }
}

/// The JSON text of a translation's documents, in bytes.
fn translation_bytes(translation: &Translation) -> usize {
    translation.documents.iter().map(|d| d.json.len()).sum()
}

/// The buffer's bounds, and the receivers' budget for request bodies being read (which lives
/// with them so that one value from the configuration sizes both; docs/architecture.md,
/// "Buffer").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    /// Most spans held.
    pub spans: usize,
    /// Most bytes held ([`EncodedRequest::held_bytes`] summed).
    pub bytes: usize,
    /// Most bytes of request bodies being read at once, across every connection of both
    /// receivers (`receiver::BodyBudget`).
    pub in_flight_bytes: usize,
}

impl BufferLimits {
    /// `spans` spans, and the byte bounds the configuration derives for the smallest function
    /// (128 MB, `config::defaults`).
    pub fn spans(spans: usize) -> Self {
        let mb = crate::config::defaults::FUNCTION_MEMORY_MB;
        BufferLimits {
            spans,
            bytes: crate::config::defaults::buffer_max_bytes(mb),
            in_flight_bytes: crate::config::defaults::max_in_flight_bytes(mb),
        }
    }
}

impl From<usize> for BufferLimits {
    fn from(spans: usize) -> Self {
        BufferLimits::spans(spans)
    }
}

/// Encodes resource spans as one `ExportTraceServiceRequest`.
pub fn encode_request(resource_spans: Vec<ResourceSpans>) -> EncodedRequest {
    let spans = count_spans(&resource_spans);
    let proxy_spans = resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .any(|ss| ss.scope.as_ref().is_some_and(|sc| sc.name == SCOPE_NAME));
    let request = ExportTraceServiceRequest { resource_spans };
    EncodedRequest {
        bytes: Bytes::from(request.encode_to_vec()),
        spans,
        proxy_spans,
        prepared: None,
    }
}

/// Spans waiting for export: encoded OTLP requests, in arrival order (docs/architecture.md,
/// "Buffer"). Holding the encodings instead of decoded spans costs a fraction of the memory, and
/// the OTLP exporter forwards them as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanBatch {
    /// The requests, oldest first; none is empty.
    pub requests: Vec<EncodedRequest>,
    /// Spans in `requests`.
    pub spans: usize,
}

/// Bytes the requests hold ([`EncodedRequest::held_bytes`]).
fn held_bytes(requests: &[EncodedRequest]) -> usize {
    requests.iter().map(EncodedRequest::held_bytes).sum()
}

impl SpanBatch {
    /// Encodes decoded resource spans (spans the extension makes, OTLP/JSON bodies) as one
    /// request.
    pub fn new(resource_spans: Vec<ResourceSpans>) -> Self {
        let request = encode_request(resource_spans);
        Self::from_requests(vec![request])
    }

    /// A protobuf `ExportTraceServiceRequest` already validated, with its span count.
    pub fn encoded(bytes: Bytes, spans: usize) -> Self {
        Self::from_requests(vec![EncodedRequest {
            bytes,
            spans,
            proxy_spans: false,
            prepared: None,
        }])
    }

    /// Gathers requests, leaving out empty ones.
    pub fn from_requests(requests: Vec<EncodedRequest>) -> Self {
        let requests: Vec<EncodedRequest> = requests.into_iter().filter(|r| r.spans > 0).collect();
        let spans = requests.iter().map(|r| r.spans).sum();
        SpanBatch { requests, spans }
    }

    /// Moves `other`'s spans into `self`.
    pub fn append(&mut self, mut other: SpanBatch) {
        self.spans += other.spans;
        self.requests.append(&mut other.requests);
    }

    /// Takes out the requests whose encoded bytes contain any of `needles`, in order.
    pub fn take_containing(&mut self, needles: &[&[u8]]) -> SpanBatch {
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.requests)
            .into_iter()
            .partition(|r| {
                needles
                    .iter()
                    .any(|n| !n.is_empty() && memchr::memmem::find(&r.bytes, n).is_some())
            });
        self.requests = kept;
        self.spans = self.requests.iter().map(|r| r.spans).sum();
        SpanBatch::from_requests(taken)
    }

    /// True when there is nothing to export.
    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// Decodes every request, concatenated (tests, and callers that need the spans).
    pub fn decode(&self) -> Result<Vec<ResourceSpans>, prost::DecodeError> {
        let mut out = Vec::new();
        for r in &self.requests {
            out.extend(r.decode()?);
        }
        Ok(out)
    }

    /// Keeps the first `keep` spans. Whole requests are kept or removed as they are; the one
    /// request cut in two is decoded, truncated and encoded again (partial acceptance is rare).
    /// Returns the spans removed.
    fn truncate(&mut self, keep: usize) -> usize {
        let before = self.spans;
        let mut left = keep;
        let mut kept = Vec::new();
        for request in std::mem::take(&mut self.requests) {
            if request.spans <= left {
                left -= request.spans;
                kept.push(request);
            } else if left > 0 {
                // A request that does not decode keeps nothing (receivers validate every
                // request, so this does not happen).
                if let Ok(mut resource_spans) = request.decode() {
                    truncate_spans(&mut resource_spans, left);
                    kept.push(encode_request(resource_spans));
                }
                left = 0;
            }
        }
        *self = SpanBatch::from_requests(kept);
        before - self.spans
    }

    /// Keeps the first whole requests that hold at most `room` bytes together, and removes the
    /// first one that does not fit and everything after it. Returns the spans removed.
    fn truncate_bytes(&mut self, room: usize) -> usize {
        let before = self.spans;
        let mut left = room;
        let mut kept = Vec::new();
        for request in std::mem::take(&mut self.requests) {
            let size = request.held_bytes();
            if size > left {
                break;
            }
            left -= size;
            kept.push(request);
        }
        *self = SpanBatch::from_requests(kept);
        before - self.spans
    }
}

pub use otel_xray_core::count_spans;

/// Keeps the first `keep` spans, removing emptied scopes and resources. Returns the spans removed.
fn truncate_spans(resource_spans: &mut Vec<ResourceSpans>, keep: usize) -> usize {
    let mut left = keep;
    let mut removed = 0;
    for rs in resource_spans.iter_mut() {
        for ss in rs.scope_spans.iter_mut() {
            let n = ss.spans.len();
            if n <= left {
                left -= n;
            } else {
                removed += n - left;
                ss.spans.truncate(left);
                left = 0;
            }
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    removed
}

/// What became of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushOutcome {
    /// Spans kept for the next flush.
    pub accepted: usize,
    /// Spans refused because the buffer was full.
    pub rejected: usize,
}

/// The buffer task is gone (the extension is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the span buffer is closed")]
pub struct BufferClosed;

enum Command {
    Push(SpanBatch, oneshot::Sender<PushOutcome>),
    Drain(oneshot::Sender<SpanBatch>),
    Len(oneshot::Sender<usize>),
    Bytes(oneshot::Sender<usize>),
    Requeue(SpanBatch),
}

/// A cheap, cloneable handle to the buffer task.
#[derive(Debug, Clone)]
pub struct BufferHandle {
    tx: mpsc::Sender<Command>,
    stats: Arc<Stats>,
    pressure: Arc<Notify>,
    limits: BufferLimits,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Push(..) => "Push",
            Command::Drain(..) => "Drain",
            Command::Len(..) => "Len",
            Command::Bytes(..) => "Bytes",
            Command::Requeue(..) => "Requeue",
        })
    }
}

impl BufferHandle {
    /// Hands a batch to the buffer; replies with how much of it was kept.
    pub async fn push(&self, batch: SpanBatch) -> Result<PushOutcome, BufferClosed> {
        if batch.is_empty() {
            return Ok(PushOutcome::default());
        }
        let spans = batch.spans;
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Push(batch, tx)).await.is_err() {
            // Never reached the buffer: account for it here so nothing is lost silently.
            self.stats.add_received(spans as u64);
            self.stats.add_dropped(DropReason::Shutdown, spans as u64);
            return Err(BufferClosed);
        }
        rx.await.map_err(|_| BufferClosed)
    }

    /// Takes everything buffered, for a flush.
    pub async fn drain(&self) -> Result<SpanBatch, BufferClosed> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Drain(tx))
            .await
            .map_err(|_| BufferClosed)?;
        rx.await.map_err(|_| BufferClosed)
    }

    /// Puts drained spans back, ahead of what came since (they are older), without counting
    /// them again: a flush that holds some back for a later one.
    pub async fn requeue(&self, batch: SpanBatch) -> Result<(), BufferClosed> {
        if batch.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Command::Requeue(batch))
            .await
            .map_err(|_| BufferClosed)
    }

    /// Spans buffered now.
    pub async fn len(&self) -> Result<usize, BufferClosed> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Len(tx))
            .await
            .map_err(|_| BufferClosed)?;
        rx.await.map_err(|_| BufferClosed)
    }

    /// True when nothing is buffered.
    pub async fn is_empty(&self) -> Result<bool, BufferClosed> {
        Ok(self.len().await? == 0)
    }

    /// The shared counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Notified whenever the buffer passes half its capacity, in spans or in bytes: time for an
    /// early flush.
    pub fn pressure(&self) -> &Arc<Notify> {
        &self.pressure
    }

    /// The bounds the buffer was started with (the receivers size their body budget from them).
    pub fn limits(&self) -> BufferLimits {
        self.limits
    }

    /// Bytes buffered now ([`EncodedRequest::held_bytes`] summed).
    pub async fn held_bytes(&self) -> Result<usize, BufferClosed> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Bytes(tx))
            .await
            .map_err(|_| BufferClosed)?;
        rx.await.map_err(|_| BufferClosed)
    }
}

/// Starts the buffer task on the current runtime, bounded by `limits` (a span count alone takes
/// the byte bounds of a 128 MB function).
pub fn spawn(limits: impl Into<BufferLimits>, stats: Arc<Stats>) -> (BufferHandle, JoinHandle<()>) {
    spawn_preparing(limits, stats, None)
}

/// [`spawn`], translating ahead with `prepare` (the X-Ray exporters' options): once no request
/// has been pushed for [`PREPARE_QUIET`], the task translates the oldest request not yet
/// translated, one request at a time, commands first. A drain waits for at most that one
/// request. At most [`PREPARE_AHEAD_SPANS`] spans are held translated; requests after those are
/// translated by the flush, a chunk at a time, as without translating ahead.
pub fn spawn_preparing(
    limits: impl Into<BufferLimits>,
    stats: Arc<Stats>,
    prepare: Option<TranslateOptions>,
) -> (BufferHandle, JoinHandle<()>) {
    let mut limits = limits.into();
    limits.spans = limits.spans.max(1);
    limits.bytes = limits.bytes.max(1);
    let (tx, rx) = mpsc::channel(256);
    let pressure = Arc::new(Notify::new());
    let owner = BufferOwner {
        max_spans: limits.spans,
        max_bytes: limits.bytes,
        batch: SpanBatch::default(),
        bytes: 0,
        stats: Arc::clone(&stats),
        pressure: Arc::clone(&pressure),
        prepare,
        prepared_up_to: 0,
        prepared_spans: 0,
        last_push: tokio::time::Instant::now(),
    };
    let task = tokio::spawn(owner.run(rx));
    (
        BufferHandle {
            tx,
            stats,
            pressure,
            limits,
        },
        task,
    )
}

struct BufferOwner {
    max_spans: usize,
    max_bytes: usize,
    batch: SpanBatch,
    /// Bytes `batch` holds ([`held_bytes`]).
    bytes: usize,
    stats: Arc<Stats>,
    pressure: Arc<Notify>,
    /// Translate ahead with these options (X-Ray exporters), or not at all.
    prepare: Option<TranslateOptions>,
    /// Requests of `batch` before this index have been looked at for translating ahead.
    prepared_up_to: usize,
    /// Spans of `batch` held translated.
    prepared_spans: usize,
    /// When the last push came.
    last_push: tokio::time::Instant,
}

/// How long the buffer must have had no push before it translates ahead. An SDK exports at the
/// end of the handler, right before the function answers: translating then would compete for the
/// CPU with the function's last steps (the caller's latency); a flush that comes sooner (the
/// Runtime API proxy's end signal) translates as it would without translating ahead. Lambda's
/// `runtimeDone` comes through the Telemetry API, which holds a batch up to the subscription's
/// buffering time (25 ms, the shortest it allows, is what the extension asks for), which
/// usually leaves the time to translate ahead. Under a stream of pushes nothing is translated
/// ahead, and the flush translates a chunk at a time.
pub const PREPARE_QUIET: std::time::Duration = std::time::Duration::from_millis(2);

/// Most spans the buffer holds translated ahead: the documents of one flush chunk
/// ([`crate::export::TRANSLATE_CHUNK_SPANS`]), so that translating ahead adds at most one chunk's
/// documents to the buffer's memory, and a large flush still translates in chunks.
pub const PREPARE_AHEAD_SPANS: usize = crate::export::TRANSLATE_CHUNK_SPANS;

impl BufferOwner {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            if self.prepare.is_none() || self.prepared_up_to >= self.batch.requests.len() {
                // Nothing to translate ahead: wait for a command.
                match rx.recv().await {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                }
                continue;
            }
            // Commands first; translating waits until no request has come for PREPARE_QUIET.
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                () = tokio::time::sleep_until(self.last_push + PREPARE_QUIET) => self.prepare_next(),
            }
        }
        // Every handle dropped: whatever is still here can never be exported.
        if self.batch.spans > 0 {
            self.stats
                .add_dropped(DropReason::Shutdown, self.batch.spans as u64);
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Push(batch, reply) => {
                self.last_push = tokio::time::Instant::now();
                let outcome = self.push(batch);
                let _ = reply.send(outcome);
            }
            Command::Drain(reply) => {
                let taken = std::mem::take(&mut self.batch);
                self.bytes = 0;
                self.prepared_up_to = 0;
                self.prepared_spans = 0;
                if let Err(taken) = reply.send(taken) {
                    // The flusher went away: keep the spans for the next one.
                    self.bytes = held_bytes(&taken.requests);
                    self.batch.append(taken);
                }
            }
            Command::Len(reply) => {
                let _ = reply.send(self.batch.spans);
            }
            Command::Bytes(reply) => {
                let _ = reply.send(self.bytes);
            }
            Command::Requeue(mut batch) => {
                // Not refused when over the byte cap: these spans were accepted once already.
                self.bytes += held_bytes(&batch.requests);
                batch.append(std::mem::take(&mut self.batch));
                self.batch = batch;
                self.prepared_up_to = 0;
                self.prepared_spans = 0;
            }
        }
    }

    /// Translates the oldest request not yet translated, on its own, unless that would hold more
    /// than [`PREPARE_AHEAD_SPANS`] spans translated, or its documents would not fit in the byte
    /// cap (they are then thrown away): then nothing more is, until the next drain.
    fn prepare_next(&mut self) {
        let Some(options) = &self.prepare else {
            return;
        };
        let Some(request) = self.batch.requests.get_mut(self.prepared_up_to) else {
            return;
        };
        if request.prepared.is_none() {
            if self.prepared_spans + request.spans > PREPARE_AHEAD_SPANS {
                self.prepared_up_to = usize::MAX;
                return;
            }
            // A bug here leaves the request untranslated: the flush tries again, contains the
            // bug once more and counts the request.
            let prepared =
                crate::export::translate_contained(std::slice::from_ref(request), options);
            if let Some(translation) = prepared {
                let size = translation_bytes(&translation);
                if self.bytes + size > self.max_bytes {
                    self.prepared_up_to = usize::MAX;
                    return;
                }
                self.bytes += size;
                request.prepared = Some(Box::new(translation));
            }
        }
        self.prepared_spans += request.spans;
        self.prepared_up_to += 1;
    }

    fn push(&mut self, mut batch: SpanBatch) -> PushOutcome {
        let arriving = batch.spans;
        self.stats.add_received(arriving as u64);
        let room = self.max_spans.saturating_sub(self.batch.spans);
        let rejected = if arriving > room {
            let removed = batch.truncate(room);
            self.stats
                .add_dropped(DropReason::BufferFull, removed as u64);
            removed
        } else {
            0
        };
        let room = self.max_bytes.saturating_sub(self.bytes);
        let rejected = if held_bytes(&batch.requests) > room {
            let removed = batch.truncate_bytes(room);
            self.stats
                .add_dropped(DropReason::BufferFull, removed as u64);
            rejected + removed
        } else {
            rejected
        };
        let accepted = batch.spans;
        self.bytes += held_bytes(&batch.requests);
        self.batch.append(batch);
        if self.batch.spans * 2 >= self.max_spans || self.bytes * 2 >= self.max_bytes {
            self.pressure.notify_one();
        }
        PushOutcome { accepted, rejected }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    fn batch(shape: &[&[usize]]) -> SpanBatch {
        SpanBatch::new(
            shape
                .iter()
                .map(|scopes| ResourceSpans {
                    scope_spans: scopes
                        .iter()
                        .map(|n| ScopeSpans {
                            spans: (0..*n)
                                .map(|i| Span {
                                    name: format!("s{i}"),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        )
    }

    #[test]
    fn truncate_keeps_prefix_and_prunes_empties() {
        let b = batch(&[&[2, 3], &[4]]);
        assert_eq!(b.spans, 9);
        let mut rs = b.decode().unwrap();
        let removed = truncate_spans(&mut rs, 4);
        assert_eq!(removed, 5);
        assert_eq!(count_spans(&rs), 4);
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].scope_spans[1].spans.len(), 2);
        let removed = truncate_spans(&mut rs, 0);
        assert_eq!(removed, 4);
        assert!(rs.is_empty());
    }

    fn names(b: &SpanBatch) -> Vec<String> {
        b.decode()
            .unwrap()
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    #[test]
    fn batch_truncates_on_and_within_request_boundaries() {
        let mut b = batch(&[&[3]]);
        b.append(batch(&[&[1, 3]]));
        b.append(batch(&[&[5]]));
        assert_eq!((b.spans, b.requests.len()), (12, 3));
        let whole = b.requests[0].clone();
        let removed = b.truncate(5);
        assert_eq!(removed, 7);
        assert_eq!(b.spans, 5);
        assert_eq!(b.requests.len(), 2);
        // The first request is kept as it was, byte for byte; the second is cut after 2 spans.
        assert_eq!(b.requests[0], whole);
        assert_eq!(b.requests[1].spans, 2);
        assert_eq!(names(&b), ["s0", "s1", "s2", "s0", "s0"]);
        assert_eq!(b.truncate(3), 2);
        assert_eq!(names(&b), ["s0", "s1", "s2"]);
        assert_eq!(b.truncate(0), 3);
        assert!(b.requests.is_empty() && b.is_empty());
    }

    #[test]
    fn encoding_marks_the_proxy_scope() {
        assert!(!batch(&[&[1]]).requests[0].proxy_spans);
        let mut ours = batch(&[&[1]]).decode().unwrap();
        ours[0].scope_spans[0].scope = Some(
            opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                name: SCOPE_NAME.into(),
                ..Default::default()
            },
        );
        assert!(SpanBatch::new(ours).requests[0].proxy_spans);
    }

    #[tokio::test]
    async fn bounded_push_counts_every_span() {
        let stats = Arc::new(Stats::default());
        let (h, _task) = spawn(10, Arc::clone(&stats));
        assert_eq!(
            h.push(batch(&[&[6]])).await.unwrap(),
            PushOutcome {
                accepted: 6,
                rejected: 0
            }
        );
        assert_eq!(
            h.push(batch(&[&[3, 3]])).await.unwrap(),
            PushOutcome {
                accepted: 4,
                rejected: 2
            }
        );
        assert_eq!(h.len().await.unwrap(), 10);
        let drained = h.drain().await.unwrap();
        assert_eq!(drained.spans, 10);
        assert_eq!(drained.requests.len(), 2);
        assert_eq!(count_spans(&drained.decode().unwrap()), 10);
        assert_eq!(h.len().await.unwrap(), 0);
        let snap = stats.snapshot();
        assert_eq!(snap.received, 12);
        assert_eq!(snap.dropped(DropReason::BufferFull), 2);
        assert_eq!(snap.in_flight(), 10);
    }

    /// `traces` traces of a SERVER span and a child each, with valid ids.
    fn traced(traces: u8) -> SpanBatch {
        let spans = (0..traces)
            .flat_map(|t| {
                let trace_id = vec![t + 1; 16];
                let span = |id: u8, parent: Vec<u8>, kind: i32| Span {
                    trace_id: trace_id.clone(),
                    span_id: vec![id; 8],
                    parent_span_id: parent,
                    name: format!("t{t}s{id}"),
                    kind,
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_050_000_000,
                    ..Default::default()
                };
                vec![span(1, Vec::new(), 2), span(2, vec![1; 8], 3)]
            })
            .collect();
        SpanBatch::new(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    // With the clock paused, time moves only when every task is idle, straight to the next timer:
    // a sleep of the test ends after the buffer task has done all it would by then.
    #[tokio::test(start_paused = true)]
    async fn translates_ahead_when_quiet_one_request_at_a_time() {
        let options = TranslateOptions::default();
        let stats = Arc::new(Stats::default());
        let (h, _task) = spawn_preparing(100, Arc::clone(&stats), Some(options.clone()));
        let (first, second) = (traced(2), traced(3));
        h.push(first.clone()).await.unwrap();
        h.push(second.clone()).await.unwrap();
        // The buffer task runs whenever this one waits.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let drained = h.drain().await.unwrap();
        assert_eq!(drained.spans, 10);
        for (got, pushed) in drained.requests.iter().zip([&first, &second]) {
            // The bytes stay (the proxy-span merge reads them); the documents are this request's
            // own translation.
            assert_eq!(got.bytes, pushed.requests[0].bytes);
            let expected = crate::export::translate_requests(&pushed.requests, &options);
            assert!(!expected.documents.is_empty());
            assert_eq!(got.prepared.as_deref(), Some(&expected));
            assert_eq!(expected.spans(), got.spans);
        }

        // Not before the buffer has been quiet for PREPARE_QUIET: a flush that comes sooner
        // (the function answering right after its SDK's export) gets the request untranslated.
        h.push(traced(1)).await.unwrap();
        tokio::time::sleep(PREPARE_QUIET / 2).await;
        h.push(traced(1)).await.unwrap();
        tokio::time::sleep(PREPARE_QUIET / 2).await;
        let drained = h.drain().await.unwrap();
        assert_eq!(drained.requests.len(), 2);
        assert!(drained.requests.iter().all(|r| r.prepared.is_none()));

        // At most PREPARE_AHEAD_SPANS spans are held translated; the rest waits for the flush.
        let (h, _task) = spawn_preparing(10_000, Arc::clone(&stats), Some(options.clone()));
        for _ in 0..5 {
            h.push(traced(250)).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let drained = h.drain().await.unwrap();
        let prepared: Vec<bool> = drained
            .requests
            .iter()
            .map(|r| r.prepared.is_some())
            .collect();
        assert_eq!(PREPARE_AHEAD_SPANS, 2_000);
        assert_eq!(prepared, [true, true, true, true, false]);
        // After a drain, translating ahead starts again.
        h.push(traced(1)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(h.drain().await.unwrap().requests[0].prepared.is_some());

        // Without options nothing is translated ahead.
        let (h, _task) = spawn(100, stats);
        h.push(traced(1)).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let drained = h.drain().await.unwrap();
        assert_eq!(drained.spans, 2);
        assert!(drained.requests[0].prepared.is_none());
    }

    #[tokio::test]
    async fn pressure_fires_at_half_capacity() {
        let stats = Arc::new(Stats::default());
        let (h, _task) = spawn(10, stats);
        let pressure = Arc::clone(h.pressure());
        h.push(batch(&[&[5]])).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), pressure.notified())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn closing_counts_leftovers_as_shutdown_drops() {
        let stats = Arc::new(Stats::default());
        let (h, task) = spawn(10, Arc::clone(&stats));
        h.push(batch(&[&[3]])).await.unwrap();
        drop(h);
        task.await.unwrap();
        let snap = stats.snapshot();
        assert_eq!(snap.dropped(DropReason::Shutdown), 3);
        assert_eq!(snap.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_byte_cap_keeps_whole_requests_and_counts_the_rest() {
        let stats = Arc::new(Stats::default());
        let one = batch(&[&[4]]);
        let size = one.requests[0].held_bytes();
        let limits = BufferLimits {
            spans: 1_000,
            bytes: size * 3 + size / 2,
            in_flight_bytes: 1 << 20,
        };
        let (h, _task) = spawn(limits, Arc::clone(&stats));
        assert_eq!(h.limits(), limits);
        let pressure = Arc::clone(h.pressure());
        h.push(one.clone()).await.unwrap();
        assert_eq!(h.held_bytes().await.unwrap(), size);
        // Half the bytes: pressure, though far from half the spans.
        h.push(one.clone()).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), pressure.notified())
            .await
            .unwrap();
        // Three requests in one push, room for one: the first is kept whole, the others refused.
        let mut three = one.clone();
        three.append(one.clone());
        three.append(one.clone());
        assert_eq!(
            h.push(three).await.unwrap(),
            PushOutcome {
                accepted: 4,
                rejected: 8
            }
        );
        assert_eq!(h.held_bytes().await.unwrap(), size * 3);
        // The span cap and the byte cap together: nothing fits.
        assert_eq!(h.push(one.clone()).await.unwrap().rejected, 4);
        let snap = stats.snapshot();
        assert_eq!(snap.received, 24);
        assert_eq!(snap.dropped(DropReason::BufferFull), 12);
        assert_eq!(snap.in_flight(), 12);
        // A requeue is never refused, and counts its bytes again.
        let drained = h.drain().await.unwrap();
        assert_eq!(h.held_bytes().await.unwrap(), 0);
        h.requeue(drained).await.unwrap();
        assert_eq!(h.held_bytes().await.unwrap(), size * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn translated_documents_count_against_the_byte_cap() {
        let options = TranslateOptions::default();
        let stats = Arc::new(Stats::default());
        let request = traced(3);
        let encoded = request.requests[0].held_bytes();
        // Room for the encoding and its documents.
        let (h, _task) = spawn_preparing(
            BufferLimits {
                spans: 1_000,
                bytes: 1 << 20,
                in_flight_bytes: 1 << 20,
            },
            Arc::clone(&stats),
            Some(options.clone()),
        );
        h.push(request.clone()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let held = h.held_bytes().await.unwrap();
        let drained = h.drain().await.unwrap();
        let documents = drained.requests[0].prepared.as_deref().unwrap();
        let json: usize = documents.documents.iter().map(|d| d.json.len()).sum();
        assert!(json > 0);
        assert_eq!(held, encoded + json);
        assert_eq!(drained.requests[0].held_bytes(), held);

        // No room for the documents: the request stays untranslated, and within the cap.
        let (h, _task) = spawn_preparing(
            BufferLimits {
                spans: 1_000,
                bytes: encoded + json / 2,
                in_flight_bytes: 1 << 20,
            },
            stats,
            Some(options),
        );
        h.push(request).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(h.held_bytes().await.unwrap(), encoded);
        assert!(h.drain().await.unwrap().requests[0].prepared.is_none());
    }
}
