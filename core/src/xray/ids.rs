//! OTLP ids → X-Ray ids.
//!
//! Any 16-byte trace id becomes `1-<first 8 hex>-<last 24 hex>` (X-Ray no longer requires the first
//! 8 hex to be a recent epoch time). Span ids stay 16 hex. An id of the wrong length, or all zero,
//! is invalid and the span is counted, never translated.

use super::json::write_hex;

/// Length of an X-Ray trace id: `1-` + 8 hex + `-` + 24 hex.
pub const XRAY_TRACE_ID_LEN: usize = 35;

/// A valid OTLP trace id (16 bytes, not all zero).
pub fn trace_id(bytes: &[u8]) -> Option<[u8; 16]> {
    let id: [u8; 16] = bytes.try_into().ok()?;
    (id != [0; 16]).then_some(id)
}

/// A valid OTLP span id (8 bytes, not all zero).
pub fn span_id(bytes: &[u8]) -> Option<[u8; 8]> {
    let id: [u8; 8] = bytes.try_into().ok()?;
    (id != [0; 8]).then_some(id)
}

/// What an OTLP `parent_span_id` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// Empty (or all zero, as some SDKs send): a root span.
    None,
    /// A parent span id.
    Some([u8; 8]),
    /// Neither empty nor 8 bytes.
    Invalid,
}

/// Reads an OTLP `parent_span_id`.
pub fn parent_id(bytes: &[u8]) -> Parent {
    if bytes.is_empty() {
        return Parent::None;
    }
    match <[u8; 8]>::try_from(bytes) {
        Ok([0, 0, 0, 0, 0, 0, 0, 0]) => Parent::None,
        Ok(id) => Parent::Some(id),
        Err(_) => Parent::Invalid,
    }
}

/// Appends the X-Ray form of a trace id.
pub fn write_xray_trace_id(out: &mut Vec<u8>, id: &[u8; 16]) {
    out.extend_from_slice(b"1-");
    write_hex(out, &id[..4]);
    out.push(b'-');
    write_hex(out, &id[4..]);
}

/// The X-Ray form of a trace id, `1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx`.
pub fn xray_trace_id(id: &[u8; 16]) -> String {
    let mut s = Vec::with_capacity(XRAY_TRACE_ID_LEN);
    write_xray_trace_id(&mut s, id);
    ascii_string(s)
}

/// A `String` of bytes the writers above made (ASCII).
fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_default()
}

/// Parses an X-Ray trace id back into the 16 OTLP bytes.
pub fn parse_xray_trace_id(s: &str) -> Option<[u8; 16]> {
    let rest = s.strip_prefix("1-")?;
    let (time, rand) = rest.split_once('-')?;
    if time.len() != 8 || rand.len() != 24 {
        return None;
    }
    let mut id = [0u8; 16];
    decode_hex(time, &mut id[..4])?;
    decode_hex(rand, &mut id[4..])?;
    Some(id)
}

/// 16 lowercase hex characters.
pub fn span_id_hex(id: &[u8; 8]) -> String {
    let mut s = Vec::with_capacity(16);
    write_hex(&mut s, id);
    ascii_string(s)
}

/// Parses 16 hex characters into a span id.
pub fn parse_span_id_hex(s: &str) -> Option<[u8; 8]> {
    let mut id = [0u8; 8];
    decode_hex(s, &mut id)?;
    Some(id)
}

fn decode_hex(s: &str, out: &mut [u8]) -> Option<()> {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *o = ((hi << 4) | lo) as u8;
    }
    Some(())
}

/// A deterministic exception id for the `n`th exception of a span: the translator is pure, so
/// ids are derived (splitmix64) rather than random, and differ between exceptions of one span.
pub fn exception_id(span: &[u8; 8], n: u32) -> [u8; 8] {
    let mut z = u64::from_be_bytes(*span) ^ (u64::from(n) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w3c_trace_id_becomes_xray_form() {
        // The example of the PutTraceSegments reference.
        let id = [
            0x4e, 0xfa, 0xaf, 0x4d, 0x1e, 0x87, 0x20, 0xb3, 0x95, 0x41, 0x90, 0x19, 0x50, 0x01,
            0x9e, 0xe5,
        ];
        assert_eq!(xray_trace_id(&id), "1-4efaaf4d-1e8720b39541901950019ee5");
        assert_eq!(
            parse_xray_trace_id("1-4efaaf4d-1e8720b39541901950019ee5"),
            Some(id)
        );
    }

    #[test]
    fn invalid_ids_are_rejected() {
        assert_eq!(trace_id(&[0; 16]), None);
        assert_eq!(trace_id(&[1; 15]), None);
        assert_eq!(trace_id(&[1; 17]), None);
        assert_eq!(trace_id(&[]), None);
        assert_eq!(trace_id(&[1; 16]), Some([1; 16]));
        assert_eq!(span_id(&[0; 8]), None);
        assert_eq!(span_id(&[1; 7]), None);
        assert_eq!(span_id(&[1; 8]), Some([1; 8]));
        assert_eq!(parent_id(&[]), Parent::None);
        assert_eq!(parent_id(&[0; 8]), Parent::None);
        assert_eq!(parent_id(&[2; 8]), Parent::Some([2; 8]));
        assert_eq!(parent_id(&[2; 9]), Parent::Invalid);
        assert_eq!(
            parse_xray_trace_id("2-4efaaf4d-1e8720b39541901950019ee5"),
            None
        );
        assert_eq!(
            parse_xray_trace_id("1-4efaaf4-d1e8720b39541901950019ee5"),
            None
        );
        assert_eq!(
            parse_xray_trace_id("1-4efaaf4g-1e8720b39541901950019ee5"),
            None
        );
    }

    #[test]
    fn span_ids_are_16_hex() {
        let id = [0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03];
        assert_eq!(span_id_hex(&id), "deadbeef00010203");
        assert_eq!(parse_span_id_hex("deadbeef00010203"), Some(id));
        assert_eq!(parse_span_id_hex("DEADBEEF00010203"), Some(id));
    }

    #[test]
    fn exception_ids_are_stable_and_distinct() {
        let span = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(exception_id(&span, 0), exception_id(&span, 0));
        assert_ne!(exception_id(&span, 0), exception_id(&span, 1));
        assert_ne!(
            exception_id(&span, 0),
            exception_id(&[1, 2, 3, 4, 5, 6, 7, 9], 0)
        );
    }
}
