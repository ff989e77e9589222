//! Containment of the extension's own bugs: a panic in the work on one request or one batch
//! (decoding, translating, reading an event or a Telemetry delivery) costs that piece of work,
//! counted by the caller, and never the process, which the function's runtime talks through.
//!
//! The release profile unwinds (`panic = "unwind"`, docs/performance.md "Panics"), so
//! [`contain`] catches; the default panic hook still writes the panic's message to stderr, which
//! Lambda sends to the function's log group.
//!
//! With the `fault-injection` feature (tests only, never in the layer), [`inject`] panics when
//! the data it is shown contains [`INJECT_MARKER`] followed by the point's name.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `work`; `None` when it panicked (logged once here, with `what`).
pub(crate) fn contain<T>(what: &'static str, work: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(v) => Some(v),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(
                what,
                panic = %message,
                "a bug in otel-xray was contained: this piece of work is lost and counted, \
                 the extension goes on"
            );
            None
        }
    }
}

/// What makes [`inject`] panic: the marker, then the point's name (`receiver`, `translate`,
/// `proxy`, `telemetry`).
pub const INJECT_MARKER: &[u8] = b"otel-xray-inject-panic:";

/// Panics when `data` asks for it at `point` (only with the `fault-injection` feature).
#[cfg(feature = "fault-injection")]
#[allow(clippy::panic)]
pub(crate) fn inject(point: &str, data: &[u8]) {
    let mut wanted = INJECT_MARKER.to_vec();
    wanted.extend_from_slice(point.as_bytes());
    if data.windows(wanted.len()).any(|w| w == wanted.as_slice()) {
        panic!("injected panic at {point}");
    }
}

/// Does nothing without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn inject(_point: &str, _data: &[u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_contained_and_reported_as_none() {
        assert_eq!(contain("test", || 7), Some(7));
        let r: Option<()> = contain("test", || panic!("boom"));
        assert_eq!(r, None);
    }
}
