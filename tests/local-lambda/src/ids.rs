//! Request ids, X-Ray trace ids and span ids, and the trace header Lambda hands the runtime.

use uuid::Uuid;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A request id as Lambda writes them (UUID v4).
pub fn request_id() -> String {
    Uuid::new_v4().to_string()
}

/// 16 lower-case hex digits (span / segment id), never all zero.
pub fn span_id() -> String {
    loop {
        let b = *Uuid::new_v4().as_bytes();
        let id = hex(&b[..8]);
        if id != "0000000000000000" {
            return id;
        }
    }
}

/// `1-<8 hex epoch seconds>-<24 hex random>`.
pub fn trace_id(epoch_secs: u64) -> String {
    let b = *Uuid::new_v4().as_bytes();
    format!("1-{:08x}-{}", epoch_secs & 0xffff_ffff, hex(&b[..12]))
}

/// 32 hex digits (log stream names, extension identifiers are UUIDs).
pub fn hex32() -> String {
    hex(Uuid::new_v4().as_bytes())
}

/// Parsed `X-Amzn-Trace-Id` fields, in order; unknown keys kept.
pub fn parse_trace_header(h: &str) -> Vec<(String, String)> {
    h.split(';')
        .filter_map(|part| {
            let part = part.trim();
            if part.is_empty() {
                return None;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

/// The trace context of one invocation as Lambda passes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationTrace {
    /// `Lambda-Runtime-Trace-Id` / extension `tracing.value`.
    pub header: String,
    /// Whether the header says `Sampled=1`.
    pub sampled: bool,
}

/// The trace header Lambda gives the runtime and the extensions for one invocation.
///
/// - Active tracing: Lambda respects the caller's header (its `Root` and a `Sampled=0`
///   decision); otherwise it samples (`Sampled=1`, this emulator samples every request). The
///   `Parent` is the `AWS::Lambda::Function` segment Lambda records, a new id.
/// - PassThrough (no active tracing): the caller's header is passed on unchanged; without one,
///   Lambda still sends a header with a new `Root`, a `Parent` and `Sampled=0` (what
///   `_X_AMZN_TRACE_ID` shows in functions without active tracing).
pub fn invocation_trace(given: Option<&str>, active: bool, now_secs: u64) -> InvocationTrace {
    let given = given.map(str::trim).filter(|g| !g.is_empty());
    match (active, given) {
        (true, given) => {
            let fields = given.map(parse_trace_header).unwrap_or_default();
            let root = field(&fields, "Root")
                .map(str::to_owned)
                .unwrap_or_else(|| trace_id(now_secs));
            let sampled = field(&fields, "Sampled") != Some("0");
            let mut header = format!(
                "Root={root};Parent={};Sampled={}",
                span_id(),
                if sampled { 1 } else { 0 }
            );
            for (k, v) in &fields {
                if !["root", "parent", "sampled"].contains(&k.to_ascii_lowercase().as_str()) {
                    header.push_str(&format!(";{k}={v}"));
                }
            }
            InvocationTrace { header, sampled }
        }
        (false, Some(g)) => {
            let fields = parse_trace_header(g);
            InvocationTrace {
                header: g.to_owned(),
                sampled: field(&fields, "Sampled") == Some("1"),
            }
        }
        (false, None) => InvocationTrace {
            header: format!("Root={};Parent={};Sampled=0", trace_id(now_secs), span_id()),
            sampled: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_hex(s: &str, n: usize) -> bool {
        s.len() == n
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    }

    #[test]
    fn generated_ids_have_xray_shapes() {
        assert!(is_hex(&span_id(), 16));
        let t = trace_id(0x6543_2100);
        assert!(t.starts_with("1-65432100-"));
        assert!(is_hex(&t[11..], 24));
    }

    #[test]
    fn active_tracing_samples_and_keeps_given_root() {
        let t = invocation_trace(
            Some(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a:0",
            ),
            true,
            1,
        );
        assert!(t.sampled);
        let f = parse_trace_header(&t.header);
        assert_eq!(
            field(&f, "Root"),
            Some("1-5759e988-bd862e3fe1be46a994272793")
        );
        assert_ne!(field(&f, "Parent"), Some("53995c3f42cd8ad8"));
        assert!(is_hex(field(&f, "Parent").unwrap(), 16));
        assert_eq!(field(&f, "Sampled"), Some("1"));
        assert_eq!(field(&f, "Lineage"), Some("a:0"));

        let none = invocation_trace(None, true, 0x10);
        assert!(none.sampled);
        assert!(none.header.starts_with("Root=1-00000010-"));
        assert!(none.header.ends_with(";Sampled=1"));

        let not_sampled = invocation_trace(
            Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0"),
            true,
            1,
        );
        assert!(!not_sampled.sampled);
    }

    #[test]
    fn passthrough_keeps_given_header_or_sends_unsampled_one() {
        let given = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";
        let t = invocation_trace(Some(given), false, 1);
        assert_eq!(t.header, given);
        assert!(t.sampled);
        let t = invocation_trace(None, false, 1);
        assert!(!t.sampled);
        let f = parse_trace_header(&t.header);
        assert!(field(&f, "Root").is_some_and(|r| r.starts_with("1-00000001-")));
        assert!(is_hex(field(&f, "Parent").unwrap(), 16));
        assert_eq!(field(&f, "Sampled"), Some("0"));
    }
}
