//! The flush policy: a pure state machine. It never reads a clock: every method takes `now`,
//! so tests drive it through hours of invocations without sleeping.
//!
//! # Rules
//!
//! The lifecycle asks the policy once per INVOKE ([`FlushPolicy::on_invocation_start`]). The
//! answer is either "wait for the end of this invocation, then flush" (`Some(reason)`: the
//! lifecycle holds `event/next` until `platform.runtimeDone`, the proxy's signal or the deadline)
//! or "do not flush at this invocation's end" (`None`: the lifecycle calls `event/next` at once,
//! so the invocation gets no post-runtime delay at all). Deciding at INVOKE rather than after
//! `runtimeDone` is what lets a non-flushing invocation skip the wait for the Telemetry API.
//!
//! - `end` (`OTEL_XRAY_FLUSH=end`, the default): every invocation ends with a flush, before the
//!   extension asks for the next event, so no span is frozen in the buffer.
//! - `periodic,<ms>`: an invocation ends with a flush when `<ms>` have passed since the last
//!   flush (or when nothing was ever flushed: the first spans show up at once).
//! - `adaptive`: flush at every invocation end until the invocation rate is known (the first
//!   [`ADAPTIVE_WINDOW`] invocations); then, while *hot* — the mean gap between the starts of the
//!   last [`ADAPTIVE_WINDOW`] invocations is at most [`ADAPTIVE_HOT_MEAN_GAP`] — flush only when
//!   [`ADAPTIVE_HOT_INTERVAL`] has passed since the last flush. A gap of more than
//!   [`ADAPTIVE_COLD_GAP`] between two invocations forgets the rate: back to flushing at every
//!   invocation end until it is known again.
//! - In every mode: buffer pressure (the buffer passed half its capacity) flushes at once,
//!   during or between invocations ([`FlushPolicy::on_pressure`]), and SHUTDOWN always flushes
//!   ([`FlushPolicy::on_shutdown`]).
//!
//! Every flush, whatever its reason, is reported back with [`FlushPolicy::record_flush`]: the
//! periodic clocks count from the last flush of any kind.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::FlushMode;

/// Invocations whose start times set the rate in `adaptive` mode.
pub const ADAPTIVE_WINDOW: usize = 10;
/// Hot when invocations start, on average, at most this far apart.
pub const ADAPTIVE_HOT_MEAN_GAP: Duration = Duration::from_secs(5);
/// While hot, flush at the end of an invocation once this has passed since the last flush.
pub const ADAPTIVE_HOT_INTERVAL: Duration = Duration::from_secs(60);
/// A gap this long between two invocations makes the rate unknown again.
pub const ADAPTIVE_COLD_GAP: Duration = Duration::from_secs(30);

/// Why a flush happens (logged with every flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// At the end of an invocation (`end`, `adaptive` while the rate is unknown or low).
    InvocationEnd,
    /// At the end of an invocation, because the interval has passed (`periodic`, hot
    /// `adaptive`).
    Interval,
    /// The buffer passed half its capacity.
    Pressure,
    /// SHUTDOWN.
    Shutdown,
}

impl FlushReason {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::InvocationEnd => "invocation_end",
            FlushReason::Interval => "interval",
            FlushReason::Pressure => "pressure",
            FlushReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for FlushReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The flush policy's state.
#[derive(Debug, Clone)]
pub struct FlushPolicy {
    mode: FlushMode,
    last_flush: Option<Instant>,
    /// Start times of the most recent invocations (adaptive only), oldest first.
    starts: VecDeque<Instant>,
}

impl FlushPolicy {
    /// A policy for `mode` that has never flushed.
    pub fn new(mode: FlushMode) -> Self {
        FlushPolicy {
            mode,
            last_flush: None,
            starts: VecDeque::with_capacity(ADAPTIVE_WINDOW),
        }
    }

    /// The mode.
    pub fn mode(&self) -> FlushMode {
        self.mode
    }

    /// An INVOKE arrived at `now`. `Some(reason)`: wait for the invocation's end and flush
    /// then. `None`: do not hold the invocation.
    pub fn on_invocation_start(&mut self, now: Instant) -> Option<FlushReason> {
        match self.mode {
            FlushMode::End => Some(FlushReason::InvocationEnd),
            FlushMode::Periodic(interval) => self.interval_due(now, interval),
            FlushMode::Adaptive => {
                self.record_start(now);
                if self.is_hot() {
                    self.interval_due(now, ADAPTIVE_HOT_INTERVAL)
                } else {
                    Some(FlushReason::InvocationEnd)
                }
            }
        }
    }

    /// The buffer passed half its capacity: flush now, whatever the mode.
    pub fn on_pressure(&self) -> FlushReason {
        FlushReason::Pressure
    }

    /// SHUTDOWN: flush everything, whatever the mode.
    pub fn on_shutdown(&self) -> FlushReason {
        FlushReason::Shutdown
    }

    /// A flush (of any reason) happened at `now`.
    pub fn record_flush(&mut self, now: Instant) {
        self.last_flush = Some(now);
    }

    /// When the last flush happened.
    pub fn last_flush(&self) -> Option<Instant> {
        self.last_flush
    }

    /// `adaptive` only: the rate is known and high.
    pub fn is_hot(&self) -> bool {
        if self.mode != FlushMode::Adaptive || self.starts.len() < ADAPTIVE_WINDOW {
            return false;
        }
        let (Some(first), Some(last)) = (self.starts.front(), self.starts.back()) else {
            return false;
        };
        let gaps = (ADAPTIVE_WINDOW - 1) as u32;
        last.saturating_duration_since(*first) <= ADAPTIVE_HOT_MEAN_GAP * gaps
    }

    fn interval_due(&self, now: Instant, interval: Duration) -> Option<FlushReason> {
        match self.last_flush {
            None => Some(FlushReason::Interval),
            Some(last) if now.saturating_duration_since(last) >= interval => {
                Some(FlushReason::Interval)
            }
            Some(_) => None,
        }
    }

    fn record_start(&mut self, now: Instant) {
        if let Some(prev) = self.starts.back()
            && now.saturating_duration_since(*prev) > ADAPTIVE_COLD_GAP
        {
            self.starts.clear();
        }
        if self.starts.len() == ADAPTIVE_WINDOW {
            self.starts.pop_front();
        }
        self.starts.push_back(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs `policy` through invocations starting at `t0 + offsets`, flushing whenever told to
    /// (as the lifecycle does); returns the decisions.
    fn drive(
        policy: &mut FlushPolicy,
        t0: Instant,
        offsets_ms: &[u64],
    ) -> Vec<Option<FlushReason>> {
        offsets_ms
            .iter()
            .map(|&o| {
                let now = t0 + ms(o);
                let d = policy.on_invocation_start(now);
                if d.is_some() {
                    // The flush ends a little later, after the invocation.
                    policy.record_flush(now + ms(5));
                }
                d
            })
            .collect()
    }

    #[test]
    fn end_mode_flushes_after_every_invocation() {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(FlushMode::End);
        let offsets: Vec<u64> = (0..1000).map(|i| i * 7).collect();
        let decisions = drive(&mut p, t0, &offsets);
        assert!(
            decisions
                .iter()
                .all(|d| *d == Some(FlushReason::InvocationEnd))
        );
        assert!(!p.is_hot());
        assert_eq!(p.mode(), FlushMode::End);
    }

    #[test]
    fn periodic_mode_flushes_first_then_at_the_interval() {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(FlushMode::Periodic(ms(1000)));
        // Invocations every 100 ms: flush at 0, then the first start ≥ 1000 ms after the last
        // flush (which ended at +5 ms).
        let offsets: Vec<u64> = (0..25).map(|i| i * 100).collect();
        let decisions = drive(&mut p, t0, &offsets);
        let flushed_at: Vec<u64> = offsets
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| d.is_some())
            .map(|(o, _)| *o)
            .collect();
        assert_eq!(flushed_at, [0, 1100, 2200]);
        assert!(
            decisions
                .iter()
                .flatten()
                .all(|r| *r == FlushReason::Interval)
        );
    }

    #[test]
    fn periodic_interval_counts_from_any_flush() {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(FlushMode::Periodic(ms(1000)));
        assert_eq!(p.on_invocation_start(t0), Some(FlushReason::Interval));
        p.record_flush(t0);
        // A pressure flush at 900 ms restarts the interval.
        assert_eq!(p.on_pressure(), FlushReason::Pressure);
        p.record_flush(t0 + ms(900));
        assert_eq!(p.on_invocation_start(t0 + ms(1000)), None);
        assert_eq!(p.on_invocation_start(t0 + ms(1899)), None);
        assert_eq!(
            p.on_invocation_start(t0 + ms(1900)),
            Some(FlushReason::Interval)
        );
        assert_eq!(p.last_flush(), Some(t0 + ms(900)));
    }

    #[test]
    fn adaptive_flushes_every_invocation_until_the_rate_is_known() {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(FlushMode::Adaptive);
        let offsets: Vec<u64> = (0..ADAPTIVE_WINDOW as u64).map(|i| i * 1000).collect();
        let decisions = drive(&mut p, t0, &offsets[..ADAPTIVE_WINDOW - 1]);
        assert!(
            decisions
                .iter()
                .all(|d| *d == Some(FlushReason::InvocationEnd))
        );
        assert!(!p.is_hot());
        // The 10th invocation makes the rate known (1 s gaps: hot); the last flush was 1 s ago.
        assert_eq!(
            p.on_invocation_start(t0 + ms(offsets[ADAPTIVE_WINDOW - 1])),
            None
        );
        assert!(p.is_hot());
    }

    #[test]
    fn adaptive_hot_flushes_at_the_hot_interval() {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(FlushMode::Adaptive);
        // 200 invocations, one a second.
        let offsets: Vec<u64> = (0..200).map(|i| i * 1000).collect();
        let decisions = drive(&mut p, t0, &offsets);
        let flushed_at: Vec<u64> = offsets
            .iter()
            .zip(&decisions)
            .filter(|(_, d)| d.is_some())
            .map(|(o, _)| *o / 1000)
            .collect();
        // Seconds 0..=8 (warm-up), then every 61 s (the flush at 8 s ended at 8.005 s).
        assert_eq!(flushed_at, [0, 1, 2, 3, 4, 5, 6, 7, 8, 69, 130, 191]);
        assert!(p.is_hot());
    }

    #[test]
    fn adaptive_slow_rate_never_goes_hot() {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(FlushMode::Adaptive);
        // One invocation every 6 s: mean gap above the 5 s threshold.
        let offsets: Vec<u64> = (0..100).map(|i| i * 6000).collect();
        let decisions = drive(&mut p, t0, &offsets);
        assert!(
            decisions
                .iter()
                .all(|d| *d == Some(FlushReason::InvocationEnd))
        );
        assert!(!p.is_hot());
    }

    #[test]
    fn adaptive_boundary_mean_gap_is_hot() {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(FlushMode::Adaptive);
        let gap = ADAPTIVE_HOT_MEAN_GAP.as_millis() as u64;
        let offsets: Vec<u64> = (0..ADAPTIVE_WINDOW as u64).map(|i| i * gap).collect();
        drive(&mut p, t0, &offsets);
        assert!(p.is_hot());
        // One millisecond slower on average is not.
        let mut p = FlushPolicy::new(FlushMode::Adaptive);
        let mut offsets: Vec<u64> = (0..ADAPTIVE_WINDOW as u64).map(|i| i * gap).collect();
        *offsets.last_mut().unwrap() += ADAPTIVE_WINDOW as u64;
        drive(&mut p, t0, &offsets);
        assert!(!p.is_hot());
    }

    #[test]
    fn adaptive_long_gap_goes_back_to_end_flushing() {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(FlushMode::Adaptive);
        let mut offsets: Vec<u64> = (0..20).map(|i| i * 500).collect();
        drive(&mut p, t0, &offsets);
        assert!(p.is_hot());
        // 31 s of silence: the next invocation flushes at its end, and so do the following ones
        // until the window refills.
        let resume = offsets.last().unwrap() + ADAPTIVE_COLD_GAP.as_millis() as u64 + 1;
        offsets = (0..ADAPTIVE_WINDOW as u64)
            .map(|i| resume + i * 500)
            .collect();
        let decisions = drive(&mut p, t0, &offsets);
        assert!(
            decisions[..ADAPTIVE_WINDOW - 1]
                .iter()
                .all(|d| *d == Some(FlushReason::InvocationEnd))
        );
        assert!(p.is_hot());
        // A gap of exactly the cold gap keeps the window.
        let last = *offsets.last().unwrap();
        let next = last + ADAPTIVE_COLD_GAP.as_millis() as u64;
        p.on_invocation_start(t0 + ms(next));
        assert_eq!(p.starts.len(), ADAPTIVE_WINDOW);
    }

    #[test]
    fn pressure_and_shutdown_always_flush() {
        for mode in [
            FlushMode::End,
            FlushMode::Periodic(ms(60_000)),
            FlushMode::Adaptive,
        ] {
            let p = FlushPolicy::new(mode);
            assert_eq!(p.on_pressure(), FlushReason::Pressure);
            assert_eq!(p.on_shutdown(), FlushReason::Shutdown);
        }
        assert_eq!(FlushReason::Shutdown.to_string(), "shutdown");
    }

    #[test]
    fn window_is_bounded() {
        let t0 = Instant::now();
        let mut p = FlushPolicy::new(FlushMode::Adaptive);
        let offsets: Vec<u64> = (0..10_000).map(|i| i * 3).collect();
        drive(&mut p, t0, &offsets);
        assert_eq!(p.starts.len(), ADAPTIVE_WINDOW);
        // Non-adaptive modes keep no window.
        let mut p = FlushPolicy::new(FlushMode::End);
        drive(&mut p, t0, &offsets[..100]);
        assert!(p.starts.is_empty());
    }
}
