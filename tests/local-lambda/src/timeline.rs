//! The record of everything that happened, with monotonic timestamps.

use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Map, Value};

use crate::model::TimelineEvent;

/// Append-only list of events, ms since `started`.
#[derive(Debug)]
pub struct Timeline {
    started: Instant,
    events: Mutex<Vec<TimelineEvent>>,
}

impl Timeline {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            events: Mutex::new(Vec::new()),
        }
    }

    /// ms since the sandbox started.
    pub fn ms(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.started).as_secs_f64() * 1000.0
    }

    pub fn now_ms(&self) -> f64 {
        self.ms(Instant::now())
    }

    /// Record `kind` at `at` with the fields of `fields` (an object; anything else is ignored).
    pub fn record_at(&self, at: Instant, kind: &str, fields: Value) {
        let fields = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        tracing::debug!(kind, fields = %serde_json::Value::Object(fields.clone()), "timeline");
        let ev = TimelineEvent {
            at_ms: self.ms(at),
            kind: kind.to_owned(),
            fields,
        };
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the list ordered by time even when an event is recorded late.
        let pos = events
            .iter()
            .rposition(|e| e.at_ms <= ev.at_ms)
            .map_or(0, |p| p + 1);
        events.insert(pos, ev);
    }

    pub fn record(&self, kind: &str, fields: Value) {
        self.record_at(Instant::now(), kind, fields);
    }

    pub fn all(&self) -> Vec<TimelineEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn of_kind(&self, kind: &str) -> Vec<TimelineEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }
}
