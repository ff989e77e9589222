//! Logging: `tracing` events to stderr (Lambda ships it to CloudWatch), one line each, text or
//! JSON (`AWS_LAMBDA_LOG_FORMAT=JSON`).
//!
//! A subscriber of our own rather than `tracing-subscriber`: we log events only (no spans), to
//! one writer, with one filter rule (our crate at the configured level, everything else at warn
//! and above), so its registry, layers and formatters were ~70 KB of the binary for nothing
//! (docs/performance.md, "Size"). The lines look like `tracing-subscriber`'s `fmt` output without
//! time and target (text) and its flattened JSON (json):
//!
//! ```text
//!  WARN cannot reach the daemon error=Connection refused (os error 111) dropped=12
//! {"timestamp":"2026-11-22T08:00:00.123456Z","level":"WARN","message":"cannot reach the daemon","error":"Connection refused (os error 111)","dropped":12}
//! ```

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

use crate::config::{Config, LogFormat};
use crate::xray::json::{write_escaped, write_f64, write_i64, write_str, write_u64};

/// Our crate's target prefix: its events pass at the configured level.
const OUR_TARGET: &str = "otel_xray";

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(config: &Config) {
    let ours = config
        .log_level
        .parse::<LevelFilter>()
        .unwrap_or(LevelFilter::WARN);
    install(LineSubscriber::new(ours, config.log_format, Stderr));
}

/// Logging for failures that happen before the configuration (and its log settings) exists:
/// text, our crate at info.
pub fn init_fallback() {
    install(LineSubscriber::new(
        LevelFilter::INFO,
        LogFormat::Text,
        Stderr,
    ));
}

fn install<W: LineWriter>(subscriber: LineSubscriber<W>) {
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Where finished lines go.
pub trait LineWriter: Send + Sync + 'static {
    /// Writes one complete line (with its newline).
    fn write_line(&self, line: &[u8]);
}

/// Standard error, one `write_all` per line (lines from one process do not interleave).
#[derive(Debug, Clone, Copy)]
pub struct Stderr;

impl LineWriter for Stderr {
    fn write_line(&self, line: &[u8]) {
        let _ = std::io::stderr().lock().write_all(line);
    }
}

/// The subscriber: a level filter per target and a line formatter.
#[derive(Debug)]
pub struct LineSubscriber<W> {
    ours: LevelFilter,
    others: LevelFilter,
    format: LogFormat,
    writer: W,
}

impl<W: LineWriter> LineSubscriber<W> {
    /// Our crate at `ours`, every other target at warn and above, lines in `format` to `writer`.
    pub fn new(ours: LevelFilter, format: LogFormat, writer: W) -> Self {
        LineSubscriber {
            ours,
            others: LevelFilter::WARN,
            format,
            writer,
        }
    }

    fn filter_for(&self, target: &str) -> LevelFilter {
        let ours = target
            .strip_prefix(OUR_TARGET)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
        if ours { self.ours } else { self.others }
    }

    /// One event as a line, newline included.
    pub fn format_line(&self, event: &Event<'_>, now: SystemTime) -> Vec<u8> {
        let level = *event.metadata().level();
        let mut line = Vec::with_capacity(160);
        match self.format {
            LogFormat::Text => {
                let _ = write!(line, "{level:>5}");
                event.record(&mut TextFields { line: &mut line });
            }
            LogFormat::Json => {
                line.extend_from_slice(b"{\"timestamp\":\"");
                write_rfc3339(&mut line, now);
                line.extend_from_slice(b"\",\"level\":");
                write_str(&mut line, level.as_str());
                event.record(&mut JsonFields {
                    line: &mut line,
                    scratch: String::new(),
                });
                line.push(b'}');
            }
        }
        line.push(b'\n');
        line
    }
}

impl<W: LineWriter> Subscriber for LineSubscriber<W> {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if self.enabled(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= &self.filter_for(metadata.target())
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.ours.max(self.others))
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        // No span is ever shown; every span gets the same id.
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        self.writer
            .write_line(&self.format_line(event, SystemTime::now()));
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// A field's name without the raw-identifier prefix (`r#type` → `type`).
fn field_name(field: &Field) -> &'static str {
    let name = field.name();
    name.strip_prefix("r#").unwrap_or(name)
}

/// Text: ` message key=value key="string"`, as `tracing-subscriber`'s default fields.
struct TextFields<'a> {
    line: &'a mut Vec<u8>,
}

impl Visit for TextFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = if field.name() == "message" {
            write!(self.line, " {value:?}")
        } else {
            write!(self.line, " {}={value:?}", field_name(field))
        };
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

/// JSON: `,"key":value` with numbers and booleans as JSON values, everything else as a string.
struct JsonFields<'a> {
    line: &'a mut Vec<u8>,
    scratch: String,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.line.push(b',');
        write_str(self.line, field_name(field));
        self.line.push(b':');
    }
}

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.scratch.clear();
        let _ = write!(self.scratch, "{value:?}");
        self.line.push(b'"');
        write_escaped(self.line, self.scratch.as_bytes());
        self.line.push(b'"');
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        write_str(self.line, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        write_i64(self.line, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        write_u64(self.line, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        write_f64(self.line, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.line
            .extend_from_slice(if value { b"true" } else { b"false" });
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds).
fn write_rfc3339(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    );
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl LineWriter for Capture {
        fn write_line(&self, line: &[u8]) {
            self.0.lock().unwrap().extend_from_slice(line);
        }
    }

    fn capture(ours: LevelFilter, format: LogFormat, f: impl FnOnce()) -> String {
        let out = Capture::default();
        let sub = LineSubscriber::new(ours, format, out.clone());
        tracing::subscriber::with_default(sub, f);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[derive(Debug)]
    struct Oops;
    impl std::fmt::Display for Oops {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("it \"broke\"")
        }
    }
    impl std::error::Error for Oops {}

    #[test]
    fn text_lines_look_like_tracing_subscriber_fmt_without_time_and_target() {
        let got = capture(LevelFilter::INFO, LogFormat::Text, || {
            let err = Oops;
            tracing::warn!(error = %err, dropped = 12u64, reason = "ConfigError", "cannot {}", "start");
            tracing::info!(ok = true, ratio = 0.5, "plain");
            tracing::error!(
                error = &err as &(dyn std::error::Error + 'static),
                "as error"
            );
        });
        assert_eq!(
            got,
            " WARN cannot start error=it \"broke\" dropped=12 reason=\"ConfigError\"\n\
             \x20INFO plain ok=true ratio=0.5\n\
             ERROR as error error=it \"broke\"\n"
        );
    }

    #[test]
    fn json_lines_are_one_object_with_typed_fields() {
        let got = capture(LevelFilter::DEBUG, LogFormat::Json, || {
            tracing::debug!(
                n = -3i64,
                big = 7u64,
                ok = false,
                x = 1.5f64,
                s = "a\"b\nc",
                d = ?Some(1),
                r#type = "t",
                "hello {}",
                "world"
            );
        });
        let v: serde_json::Value = serde_json::from_str(got.trim_end()).unwrap();
        assert_eq!(v["level"], "DEBUG");
        assert_eq!(v["message"], "hello world");
        assert_eq!(v["n"], -3);
        assert_eq!(v["big"], 7);
        assert_eq!(v["ok"], false);
        assert_eq!(v["x"], 1.5);
        assert_eq!(v["s"], "a\"b\nc");
        assert_eq!(v["d"], "Some(1)");
        assert_eq!(v["type"], "t");
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2026-11-22T08:00:00.123456Z".len(), "{ts}");
        assert!(ts.ends_with('Z'), "{ts}");
        assert_eq!(got.lines().count(), 1);
    }

    #[test]
    fn our_crate_at_the_configured_level_others_at_warn() {
        let got = capture(LevelFilter::DEBUG, LogFormat::Text, || {
            tracing::debug!(target: "otel_xray::flush", "ours debug");
            tracing::info!(target: "otel_xray", "ours info");
            tracing::info!(target: "hyper::proto", "theirs info");
            tracing::warn!(target: "hyper::proto", "theirs warn");
            tracing::info!(target: "otel_xray_fake", "a different crate");
        });
        assert_eq!(
            got,
            "DEBUG ours debug\n INFO ours info\n WARN theirs warn\n"
        );
        let quiet = capture(LevelFilter::ERROR, LogFormat::Text, || {
            tracing::warn!(target: "otel_xray", "hidden");
            tracing::error!(target: "otel_xray", "shown");
        });
        assert_eq!(quiet, "ERROR shown\n");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let mut out = Vec::new();
        write_rfc3339(
            &mut out,
            UNIX_EPOCH + Duration::new(1_763_798_400, 123_456_789),
        );
        assert_eq!(out, b"2025-11-22T08:00:00.123456Z");
        out.clear();
        write_rfc3339(&mut out, UNIX_EPOCH + Duration::new(951_782_400, 0));
        assert_eq!(out, b"2000-02-29T00:00:00.000000Z");
        out.clear();
        write_rfc3339(&mut out, UNIX_EPOCH);
        assert_eq!(out, b"1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn civil_dates_round_trip_every_day_of_four_centuries() {
        // Day numbers from 1970 to 2370 map to strictly increasing, valid dates.
        let mut last = (1969, 12, 31);
        for days in 0..146_097i64 {
            let (y, m, d) = civil_from_days(days);
            assert!(
                (1..=12).contains(&m) && (1..=31).contains(&d),
                "{days}: {y}-{m}-{d}"
            );
            assert!((y, m, d) > last, "{days}: {y}-{m}-{d} after {last:?}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_days = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            assert!(d <= month_days[(m - 1) as usize], "{y}-{m}-{d}");
            last = (y, m, d);
        }
        assert_eq!(civil_from_days(146_096), (2369, 12, 31));
    }
}
