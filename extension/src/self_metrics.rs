//! Self-telemetry: the extension's own accounting, so that an operator can see what the layer did
//! without a debugger.
//!
//! - One structured log line per flush (debug): the flush's figures and the running totals
//!   (received, exported, dropped by reason, requests refused by reason, export errors).
//! - One per shutdown (info): the lifecycle's `shutdown: …` summary line (see `lifecycle.rs`).
//! - With `OTEL_XRAY_SELF_METRICS=true`, the same figures as CloudWatch embedded metric format
//!   (EMF) records on stdout, which Lambda sends to CloudWatch Logs, where they become metrics
//!   without any API call. Each record carries the change since the previous one, so CloudWatch's
//!   `Sum` over any period is exact:
//!
//! ```json
//! {"_aws":{"Timestamp":1700000000000,"CloudWatchMetrics":[{"Namespace":"otel-xray",
//!   "Dimensions":[["FunctionName"]],"Metrics":[{"Name":"SpansReceived","Unit":"Count"},…]}]},
//!  "FunctionName":"orders","Event":"flush","SpansReceived":12,…,"FlushDurationMs":3}
//! ```
//!
//! The record is built by a pure function ([`emf_record`]); only [`SelfMetrics::emit`] writes.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tracing::debug;

use crate::stats::{DropReason, RejectReason, StatsSnapshot};

/// The CloudWatch namespace of the extension's metrics.
pub const NAMESPACE: &str = "otel-xray";

/// What one flush did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushFigures {
    /// Why it flushed (`invocation_end`, `periodic`, `shutdown`, …).
    pub reason: String,
    /// Spans drained from the buffer.
    pub spans: u64,
    /// Of which the upstream accepted.
    pub exported: u64,
    /// Of which were dropped.
    pub dropped: u64,
    /// How long the flush took.
    pub elapsed: Duration,
}

/// Logs one flush at debug, with the running totals.
pub fn log_flush(flush: &FlushFigures, totals: &StatsSnapshot) {
    debug!(
        reason = %flush.reason,
        spans = flush.spans,
        exported = flush.exported,
        dropped = flush.dropped,
        elapsed_ms = millis(flush.elapsed),
        totals = %totals,
        "flushed"
    );
}

/// The EMF record for the change from `previous` to `now`, with the flush's duration if this
/// record is for a flush. `event` is `flush` or `shutdown`.
pub fn emf_record(
    event: &str,
    function_name: &str,
    timestamp_ms: u64,
    previous: &StatsSnapshot,
    now: &StatsSnapshot,
    flush: Option<&FlushFigures>,
) -> Value {
    let mut values: Vec<(String, u64, &'static str)> = vec![
        (
            "SpansReceived".into(),
            now.received.saturating_sub(previous.received),
            "Count",
        ),
        (
            "SpansExported".into(),
            now.exported.saturating_sub(previous.exported),
            "Count",
        ),
        (
            "SpansDropped".into(),
            now.dropped_total().saturating_sub(previous.dropped_total()),
            "Count",
        ),
    ];
    for reason in DropReason::ALL {
        values.push((
            format!("SpansDropped_{}", reason.as_str()),
            now.dropped(reason).saturating_sub(previous.dropped(reason)),
            "Count",
        ));
    }
    for reason in RejectReason::ALL {
        values.push((
            format!("RequestsRejected_{}", reason.as_str()),
            rejected(now, reason).saturating_sub(rejected(previous, reason)),
            "Count",
        ));
    }
    values.push((
        "ExportErrors".into(),
        now.export_errors.saturating_sub(previous.export_errors),
        "Count",
    ));
    values.push(("SpansInFlight".into(), now.in_flight(), "Count"));
    if let Some(flush) = flush {
        values.push(("FlushSpans".into(), flush.spans, "Count"));
        values.push((
            "FlushDurationMs".into(),
            millis(flush.elapsed),
            "Milliseconds",
        ));
    }

    let metrics: Vec<Value> = values
        .iter()
        .map(|(name, _, unit)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut record = Map::new();
    record.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["FunctionName"]],
                "Metrics": metrics,
            }],
        }),
    );
    record.insert("FunctionName".into(), Value::from(function_name));
    record.insert("Event".into(), Value::from(event));
    if let Some(flush) = flush {
        record.insert("FlushReason".into(), Value::from(flush.reason.as_str()));
    }
    for (name, value, _) in values {
        record.insert(name, Value::from(value));
    }
    Value::Object(record)
}

fn rejected(s: &StatsSnapshot, reason: RejectReason) -> u64 {
    s.requests_rejected
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Emits EMF records on a writer (stdout in the extension) when enabled; remembers the last
/// snapshot so that each record carries the change since the previous one.
#[derive(Debug)]
pub struct SelfMetrics<W: Write> {
    enabled: bool,
    function_name: String,
    previous: Option<StatsSnapshot>,
    out: W,
}

impl SelfMetrics<std::io::Stdout> {
    /// Records on stdout, if `enabled` (`OTEL_XRAY_SELF_METRICS`).
    pub fn stdout(enabled: bool, function_name: &str) -> Self {
        SelfMetrics::new(enabled, function_name, std::io::stdout())
    }
}

impl<W: Write> SelfMetrics<W> {
    /// Records on `out`, if `enabled`.
    pub fn new(enabled: bool, function_name: &str, out: W) -> Self {
        SelfMetrics {
            enabled,
            function_name: function_name.to_owned(),
            previous: None,
            out,
        }
    }

    /// Whether records are written.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Writes one record (a line of JSON) for `event`, if enabled. A write error is ignored: the
    /// extension's own metrics never get in the way of the function.
    pub fn emit(&mut self, event: &str, now: &StatsSnapshot, flush: Option<&FlushFigures>) {
        if !self.enabled {
            return;
        }
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis);
        let zero = crate::stats::Stats::default().snapshot();
        let previous = self.previous.as_ref().unwrap_or(&zero);
        let record = emf_record(
            event,
            &self.function_name,
            timestamp_ms,
            previous,
            now,
            flush,
        );
        let mut line = record.to_string();
        line.push('\n');
        let _ = self.out.write_all(line.as_bytes());
        let _ = self.out.flush();
        self.previous = Some(now.clone());
    }

    /// The writer (tests read what was written).
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    #[test]
    fn records_carry_deltas_and_declare_every_metric() {
        let stats = Stats::default();
        let mut m = SelfMetrics::new(true, "orders", Vec::new());
        stats.add_received(10);
        stats.add_exported(7);
        stats.add_dropped(DropReason::BufferFull, 2);
        let flush = FlushFigures {
            reason: "invocation_end".into(),
            spans: 9,
            exported: 7,
            dropped: 2,
            elapsed: Duration::from_millis(12),
        };
        m.emit("flush", &stats.snapshot(), Some(&flush));
        stats.add_received(5);
        stats.add_exported(5);
        m.emit("shutdown", &stats.snapshot(), None);
        let text = String::from_utf8(m.into_inner()).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["SpansReceived"], 10);
        assert_eq!(lines[0]["SpansDropped_buffer_full"], 2);
        assert_eq!(lines[0]["FlushDurationMs"], 12);
        assert_eq!(lines[0]["SpansInFlight"], 1);
        assert_eq!(lines[1]["SpansReceived"], 5);
        assert_eq!(lines[1]["SpansExported"], 5);
        assert_eq!(lines[1]["SpansDropped_buffer_full"], 0);
        assert!(lines[1].get("FlushDurationMs").is_none());
        for line in &lines {
            let cw = &line["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(cw["Namespace"], NAMESPACE);
            assert_eq!(cw["Dimensions"], json!([["FunctionName"]]));
            assert_eq!(line["FunctionName"], "orders");
            for metric in cw["Metrics"].as_array().into_iter().flatten() {
                let name = metric["Name"].as_str().unwrap_or_default();
                assert!(line[name].is_u64(), "{name} declared without a value");
            }
        }
    }

    #[test]
    fn disabled_writes_nothing() {
        let mut m = SelfMetrics::new(false, "f", Vec::new());
        m.emit("flush", &Stats::default().snapshot(), None);
        assert!(m.into_inner().is_empty());
    }
}
