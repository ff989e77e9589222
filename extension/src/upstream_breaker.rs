//! The upstream circuit breaker: a pure state machine (every method takes `now`) that stops
//! the lifecycle from spending a flush's whole budget, invocation after invocation, on an
//! upstream that cannot be reached (a function in a VPC without a NAT, X-Ray down).
//!
//! - Closed: every flush exports. [`FAILURES_TO_OPEN`] flushes in a row that delivered nothing
//!   and failed to reach the upstream (transport errors, timeouts; not a refusal, which proves
//!   the upstream answers) open it.
//! - Open: flushes leave the spans in the buffer (whose byte and span bounds still hold, and
//!   count what they refuse) until the pause is over: [`FIRST_PAUSE`], doubled at every failed
//!   probe up to [`MAX_PAUSE`].
//! - Half-open: the next flush is the probe; if anything is delivered, or the upstream answers
//!   at all, it closes; otherwise it opens again for a longer pause.
//!
//! SHUTDOWN's flush always tries: it is the last chance for what is buffered.

use std::time::Duration;

use tokio::time::Instant;

/// Flushes in a row that reached nothing before the breaker opens.
pub const FAILURES_TO_OPEN: u32 = 3;
/// The first pause once open.
pub const FIRST_PAUSE: Duration = Duration::from_secs(5);
/// The longest pause.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);

/// What one flush's export showed about the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Something was delivered, or the upstream answered (even with a refusal).
    Reached,
    /// Nothing was delivered and the upstream was not reached (connect errors, timeouts).
    Unreachable,
}

/// What [`UpstreamBreaker::record`] changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing worth a line.
    None,
    /// Just opened (or opened again after a failed probe) for this long.
    Opened(Duration),
    /// A probe reached the upstream: closed again.
    Closed,
}

/// The breaker's state.
#[derive(Debug, Clone, Default)]
pub struct UpstreamBreaker {
    failures: u32,
    open_until: Option<Instant>,
    pause: Duration,
}

impl UpstreamBreaker {
    /// A closed breaker.
    pub fn new() -> Self {
        Self::default()
    }

    /// May a flush (other than SHUTDOWN's) export now?
    pub fn allows(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    /// True while open (paused or waiting for its probe).
    pub fn is_open(&self) -> bool {
        self.open_until.is_some()
    }

    /// Records a flush's outcome at `now`.
    pub fn record(&mut self, outcome: Outcome, now: Instant) -> Change {
        match outcome {
            Outcome::Reached => {
                let was_open = self.open_until.take().is_some();
                self.failures = 0;
                self.pause = Duration::ZERO;
                if was_open {
                    Change::Closed
                } else {
                    Change::None
                }
            }
            Outcome::Unreachable => {
                self.failures = self.failures.saturating_add(1);
                if self.open_until.is_some() {
                    // A failed probe: pause twice as long.
                    self.pause = (self.pause * 2).min(MAX_PAUSE);
                } else if self.failures >= FAILURES_TO_OPEN {
                    self.pause = FIRST_PAUSE;
                } else {
                    return Change::None;
                }
                self.open_until = Some(now + self.pause);
                Change::Opened(self.pause)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_three_unreachable_flushes_and_probes_with_growing_pauses() {
        let t0 = Instant::now();
        let mut b = UpstreamBreaker::new();
        assert_eq!(b.record(Outcome::Unreachable, t0), Change::None);
        assert_eq!(b.record(Outcome::Unreachable, t0), Change::None);
        assert!(b.allows(t0));
        assert_eq!(
            b.record(Outcome::Unreachable, t0),
            Change::Opened(FIRST_PAUSE)
        );
        assert!(!b.allows(t0 + FIRST_PAUSE - Duration::from_millis(1)));
        // The pause is over: one probe; it fails, the pause doubles.
        let t1 = t0 + FIRST_PAUSE;
        assert!(b.allows(t1));
        assert_eq!(
            b.record(Outcome::Unreachable, t1),
            Change::Opened(FIRST_PAUSE * 2)
        );
        assert!(!b.allows(t1 + FIRST_PAUSE));
        // Doubling stops at the maximum.
        let mut t = t1;
        for _ in 0..20 {
            t += MAX_PAUSE;
            b.record(Outcome::Unreachable, t);
        }
        assert_eq!(b.record(Outcome::Unreachable, t), Change::Opened(MAX_PAUSE));
        // A probe that reaches the upstream closes it at once.
        let t2 = t + MAX_PAUSE;
        assert!(b.allows(t2));
        assert_eq!(b.record(Outcome::Reached, t2), Change::Closed);
        assert!(b.allows(t2) && !b.is_open());
        // And it takes three failures in a row to open it again.
        assert_eq!(b.record(Outcome::Unreachable, t2), Change::None);
    }

    #[test]
    fn a_success_between_failures_keeps_it_closed() {
        let t0 = Instant::now();
        let mut b = UpstreamBreaker::new();
        for _ in 0..10 {
            b.record(Outcome::Unreachable, t0);
            b.record(Outcome::Unreachable, t0);
            assert_eq!(b.record(Outcome::Reached, t0), Change::None);
        }
        assert!(b.allows(t0) && !b.is_open());
    }
}
