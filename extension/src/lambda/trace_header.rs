//! The X-Ray trace header, `Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=0|1|?[;Lineage=…]`,
//! as Lambda passes it in the INVOKE event's `tracing.value` and in Telemetry API events.
//!
//! Parsing is lenient: keys in any order and case, unknown keys (`Lineage`, `Self`, …) ignored, an
//! invalid `Root` or `Parent` is simply absent from the result.

/// The parts of an X-Ray trace header the extension uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XRayTraceHeader {
    /// The 128-bit trace id (`Root=1-aaaaaaaa-bbbbbbbbbbbbbbbbbbbbbbbb`).
    pub trace_id: Option<[u8; 16]>,
    /// The parent span (segment) id.
    pub parent_id: Option<[u8; 8]>,
    /// `Sampled=1` → `Some(true)`, `Sampled=0` → `Some(false)`; absent or `?` → `None`.
    pub sampled: Option<bool>,
}

impl XRayTraceHeader {
    /// Parses a header value. Never fails: what cannot be read is left out.
    pub fn parse(value: &str) -> XRayTraceHeader {
        let mut header = XRayTraceHeader::default();
        for part in value.split(';') {
            let Some((key, val)) = part.split_once('=') else {
                continue;
            };
            let key = key.trim();
            let val = val.trim();
            if key.eq_ignore_ascii_case("root") {
                header.trace_id = parse_root(val);
            } else if key.eq_ignore_ascii_case("parent") {
                header.parent_id = parse_hex::<8>(val);
            } else if key.eq_ignore_ascii_case("sampled") {
                header.sampled = match val {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                };
            }
        }
        header
    }

    /// False only when the header says `Sampled=0`: then nothing is recorded for the request.
    pub fn is_sampled(&self) -> bool {
        self.sampled != Some(false)
    }
}

/// `1-<8 hex>-<24 hex>` → 16 bytes (the 8 hex digits become the first 4 bytes).
fn parse_root(root: &str) -> Option<[u8; 16]> {
    let rest = root.strip_prefix("1-")?;
    let (epoch, unique) = rest.split_once('-')?;
    if epoch.len() != 8 || unique.len() != 24 {
        return None;
    }
    let mut joined = [0u8; 32];
    joined[..8].copy_from_slice(epoch.as_bytes());
    joined[8..].copy_from_slice(unique.as_bytes());
    let id = parse_hex_bytes::<16>(&joined)?;
    (id != [0; 16]).then_some(id)
}

/// Exactly `2 * N` hex digits → N bytes; an all-zero id is invalid.
pub fn parse_hex<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let id = parse_hex_bytes::<N>(hex.as_bytes())?;
    (id != [0; N]).then_some(id)
}

fn parse_hex_bytes<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_header() {
        let h = XRayTraceHeader::parse(
            "Root=1-62e900b2-710d76f009d6e7785905449a;Parent=0efbd19962d95b05;Sampled=1",
        );
        assert_eq!(
            h.trace_id,
            Some([
                0x62, 0xe9, 0x00, 0xb2, 0x71, 0x0d, 0x76, 0xf0, 0x09, 0xd6, 0xe7, 0x78, 0x59, 0x05,
                0x44, 0x9a
            ])
        );
        assert_eq!(
            h.parent_id,
            Some([0x0e, 0xfb, 0xd1, 0x99, 0x62, 0xd9, 0x5b, 0x05])
        );
        assert_eq!(h.sampled, Some(true));
        assert!(h.is_sampled());
    }

    #[test]
    fn order_case_unknown_keys_and_lineage() {
        let h = XRayTraceHeader::parse(
            " sampled=0 ; Lineage=a87bd80c:1|68fd508a:5 ;ROOT=1-5759e988-bd862e3fe1be46a994272793",
        );
        assert!(h.trace_id.is_some());
        assert_eq!(h.parent_id, None);
        assert_eq!(h.sampled, Some(false));
        assert!(!h.is_sampled());
    }

    #[test]
    fn invalid_parts_are_left_out() {
        for bad in [
            "",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Root=1-5759e98-bd862e3fe1be46a994272793",
            "Root=1-5759e988-bd862e3fe1be46a99427279z",
            "Root=1-00000000-000000000000000000000000",
            "Root",
        ] {
            assert_eq!(XRayTraceHeader::parse(bad).trace_id, None, "{bad}");
        }
        let h = XRayTraceHeader::parse("Parent=0000000000000000;Sampled=?");
        assert_eq!(h.parent_id, None);
        assert_eq!(h.sampled, None);
        assert!(h.is_sampled());
        assert_eq!(parse_hex::<8>("0efbd19962d95b0"), None);
        assert_eq!(parse_hex::<8>("0EFBD19962D95B05").map(|b| b[0]), Some(0x0e));
    }
}
