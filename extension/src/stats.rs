//! Span accounting: every span received is, in the end, exported or dropped for a reason.
//!
//! The counters are lock-free atomics shared by the receiver, the buffer, the flusher and the
//! lifecycle; [`Stats::snapshot`] reads them for the per-flush and shutdown summary lines.
//! The invariant that tests check is `received == exported + dropped_total + buffered`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why spans were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// The buffer was at capacity when they arrived (refused with OTLP partial success).
    BufferFull,
    /// The span could not be translated (invalid trace or span id, …).
    InvalidSpan,
    /// The upstream refused them for good (4xx, `UnprocessedTraceSegments` after the retry).
    ExportRejected,
    /// The upstream could not be reached or kept failing within the flush budget.
    ExportFailed,
    /// The flush budget ran out before they could be sent.
    ExportTimeout,
    /// A single span too large to send even after truncation.
    TooLarge,
    /// Still buffered when the SHUTDOWN deadline came.
    Shutdown,
    /// A bug of the extension while translating them was contained (contain.rs): that chunk
    /// is lost, nothing else.
    Internal,
}

impl DropReason {
    /// Every reason, in a stable order.
    pub const ALL: [DropReason; 8] = [
        DropReason::BufferFull,
        DropReason::InvalidSpan,
        DropReason::ExportRejected,
        DropReason::ExportFailed,
        DropReason::ExportTimeout,
        DropReason::TooLarge,
        DropReason::Shutdown,
        DropReason::Internal,
    ];

    /// The snake_case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer_full",
            DropReason::InvalidSpan => "invalid_span",
            DropReason::ExportRejected => "export_rejected",
            DropReason::ExportFailed => "export_failed",
            DropReason::ExportTimeout => "export_timeout",
            DropReason::TooLarge => "too_large",
            DropReason::Shutdown => "shutdown",
            DropReason::Internal => "internal_error",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why whole requests were refused before any span in them could be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The body could not be decoded (400 / gRPC INVALID_ARGUMENT).
    Malformed,
    /// Content type not protobuf or JSON (415).
    UnsupportedMediaType,
    /// Body or decompressed body over the cap (413 / RESOURCE_EXHAUSTED).
    TooLarge,
    /// A bug of the extension while decoding it was contained (500 / INTERNAL).
    Internal,
    /// The request bodies being read already used the memory budget (429 / UNAVAILABLE,
    /// retryable).
    Busy,
}

impl RejectReason {
    /// Every reason, in a stable order.
    pub const ALL: [RejectReason; 5] = [
        RejectReason::Malformed,
        RejectReason::UnsupportedMediaType,
        RejectReason::TooLarge,
        RejectReason::Internal,
        RejectReason::Busy,
    ];

    /// The snake_case name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::TooLarge => "too_large",
            RejectReason::Internal => "internal_error",
            RejectReason::Busy => "busy",
        }
    }
}

/// Shared counters. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct Stats {
    received: AtomicU64,
    exported: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    requests_rejected: [AtomicU64; RejectReason::ALL.len()],
    export_errors: AtomicU64,
    flushes: AtomicU64,
}

impl Stats {
    /// Spans accepted by a receiver (before the buffer decides).
    pub fn add_received(&self, spans: u64) {
        self.received.fetch_add(spans, Ordering::Relaxed);
    }

    /// Spans folded into another span before export (the proxy's invocation span merged into
    /// the function's own): they leave the accounting, since their content is exported or
    /// dropped with the span that absorbed them. Removed from `received`, never below zero.
    pub fn remove_folded(&self, spans: u64) {
        let _ = self
            .received
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                Some(r.saturating_sub(spans))
            });
    }

    /// Spans the upstream accepted.
    pub fn add_exported(&self, spans: u64) {
        self.exported.fetch_add(spans, Ordering::Relaxed);
    }

    /// Spans dropped, and why.
    pub fn add_dropped(&self, reason: DropReason, spans: u64) {
        self.dropped[reason.index()].fetch_add(spans, Ordering::Relaxed);
    }

    /// A whole request refused by a receiver.
    pub fn add_request_rejected(&self, reason: RejectReason) {
        self.requests_rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// One failed export call (a request, not spans).
    pub fn add_export_error(&self) {
        self.export_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// One flush done.
    pub fn add_flush(&self) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            received: self.received.load(Ordering::Relaxed),
            exported: self.exported.load(Ordering::Relaxed),
            dropped: DropReason::ALL.map(|r| (r, self.dropped[r.index()].load(Ordering::Relaxed))),
            requests_rejected: RejectReason::ALL.map(|r| {
                (
                    r,
                    self.requests_rejected[r as usize].load(Ordering::Relaxed),
                )
            }),
            export_errors: self.export_errors.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Spans received.
    pub received: u64,
    /// Spans exported.
    pub exported: u64,
    /// Spans dropped, by reason.
    pub dropped: [(DropReason, u64); DropReason::ALL.len()],
    /// Requests refused whole, by reason.
    pub requests_rejected: [(RejectReason, u64); RejectReason::ALL.len()],
    /// Failed export calls.
    pub export_errors: u64,
    /// Flushes done.
    pub flushes: u64,
}

impl StatsSnapshot {
    /// All spans dropped, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(|(_, n)| n).sum()
    }

    /// Spans dropped for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// Spans neither exported nor dropped yet (still in the buffer or in a flush).
    pub fn in_flight(&self) -> u64 {
        self.received
            .saturating_sub(self.exported + self.dropped_total())
    }
}

impl fmt::Display for StatsSnapshot {
    /// `received=… exported=… dropped=… (buffer_full=…, …) in_flight=…`, only non-zero reasons.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received={} exported={} dropped={}",
            self.received,
            self.exported,
            self.dropped_total()
        )?;
        let reasons: Vec<String> = self
            .dropped
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        if !reasons.is_empty() {
            write!(f, " ({})", reasons.join(", "))?;
        }
        write!(f, " in_flight={}", self.in_flight())?;
        let rejected: u64 = self.requests_rejected.iter().map(|(_, n)| n).sum();
        if rejected > 0 {
            write!(f, " requests_rejected={rejected}")?;
        }
        write!(
            f,
            " export_errors={} flushes={}",
            self.export_errors, self.flushes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_adds_up() {
        let s = Stats::default();
        s.add_received(10);
        s.add_exported(6);
        s.add_dropped(DropReason::BufferFull, 3);
        let snap = s.snapshot();
        assert_eq!(snap.dropped_total(), 3);
        assert_eq!(snap.dropped(DropReason::BufferFull), 3);
        assert_eq!(snap.in_flight(), 1);
        let line = snap.to_string();
        assert!(line.contains("received=10 exported=6 dropped=3 (buffer_full=3) in_flight=1"));
        s.remove_folded(1);
        assert_eq!(s.snapshot().received, 9);
        assert_eq!(s.snapshot().in_flight(), 0);
        s.remove_folded(100);
        assert_eq!(s.snapshot().received, 0);
    }
}
