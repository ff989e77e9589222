//! A small JSON writer that appends straight to a `String`: escaped strings, integers, floats,
//! X-Ray timestamps and hex ids. No intermediate values, no allocation beyond the output buffer.

use std::fmt::Write as _;

/// Appends `s` as a quoted JSON string.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    write_escaped(out, s);
    out.push('"');
}

/// Appends `s` as a quoted JSON string, cut to at most `max_chars` characters. Returns whether it
/// was cut.
pub(crate) fn write_str_max(out: &mut String, s: &str, max_chars: usize) -> bool {
    let (kept, cut) = truncate_chars(s, max_chars);
    write_str(out, kept);
    cut
}

/// The longest prefix of `s` with at most `max_chars` characters, and whether anything was cut.
pub(crate) fn truncate_chars(s: &str, max_chars: usize) -> (&str, bool) {
    // A string of at most `max_chars` bytes has at most `max_chars` characters.
    if s.len() <= max_chars {
        return (s, false);
    }
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => (&s[..at], true),
        None => (s, false),
    }
}

/// Appends the body of a JSON string (no quotes): `"`, `\` and control characters escaped.
pub(crate) fn write_escaped(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte that needs escaping is ASCII, so `i` is a character boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as lowercase hex.
pub(crate) fn write_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
}

/// Appends an unsigned integer.
pub(crate) fn write_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &buf[i..] {
        out.push(d as char);
    }
}

/// Appends a signed integer.
pub(crate) fn write_i64(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Appends a finite float as a JSON number (shortest representation that reads back the same);
/// a non-finite one, which JSON cannot hold, as the string `"NaN"`, `"Infinity"` or `"-Infinity"`.
pub(crate) fn write_f64(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("\"NaN\"");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        let a = f.abs();
        // `Display` never uses an exponent; keep huge and tiny numbers short.
        let _ = if a != 0.0 && !(1e-5..1e17).contains(&a) {
            write!(out, "{f:e}")
        } else {
            write!(out, "{f}")
        };
    }
}

/// Unix nanoseconds → X-Ray epoch seconds, as a float.
pub fn nanos_to_seconds(nanos: u64) -> f64 {
    (nanos / 1_000) as f64 / 1e6
}

/// Appends Unix nanoseconds as X-Ray epoch seconds with microsecond precision, written exactly in
/// decimal (`1760000000.123456`, trailing zeros dropped, at least one decimal).
pub fn write_epoch_seconds(out: &mut String, nanos: u64) {
    let secs = nanos / 1_000_000_000;
    let mut micros = (nanos % 1_000_000_000) / 1_000;
    write_u64(out, secs);
    out.push('.');
    if micros == 0 {
        out.push('0');
        return;
    }
    let mut digits = 6;
    while micros.is_multiple_of(10) {
        micros /= 10;
        digits -= 1;
    }
    let mut buf = [b'0'; 6];
    let mut i = digits;
    while i > 0 {
        i -= 1;
        buf[i] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    for &d in &buf[..digits] {
        out.push(d as char);
    }
}

/// Appends `bytes` as a quoted standard base64 string (with padding), as JSON encoders do for
/// binary values.
pub(crate) fn write_base64(out: &mut String, bytes: &[u8]) {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push('"');
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut String)) -> String {
        let mut out = String::new();
        f(&mut out);
        out
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for input in [
            "plain",
            "quote\"back\\slash",
            "nl\ncr\rtab\t",
            "\u{0}\u{1}\u{1f}\u{7f}",
            "é東京🦀",
            "\u{2028}",
        ] {
            let ours = s(|o| write_str(o, input));
            assert_eq!(ours, serde_json::to_string(input).unwrap(), "{input:?}");
            let back: String = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate_chars("abc", 3), ("abc", false));
        assert_eq!(truncate_chars("abcd", 3), ("abc", true));
        assert_eq!(truncate_chars("ééé", 3), ("ééé", false));
        assert_eq!(truncate_chars("éééé", 3), ("ééé", true));
        assert_eq!(truncate_chars("🦀🦀", 1), ("🦀", true));
        assert_eq!(truncate_chars("", 0), ("", false));
        assert_eq!(truncate_chars("a", 0), ("", true));
    }

    #[test]
    fn integers() {
        for n in [0i64, 1, -1, 42, i64::MAX, i64::MIN, 1_000_000] {
            assert_eq!(s(|o| write_i64(o, n)), n.to_string());
        }
        assert_eq!(s(|o| write_u64(o, u64::MAX)), u64::MAX.to_string());
    }

    #[test]
    fn floats_read_back_exactly() {
        for f in [
            0.0,
            -0.0,
            1.5,
            0.1,
            1e300,
            -2.5e-300,
            123456.789,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e16,
            1e17,
        ] {
            let text = s(|o| write_f64(o, f));
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back, f, "{text}");
            assert!(text.len() < 30, "{text}");
        }
        assert_eq!(s(|o| write_f64(o, f64::NAN)), "\"NaN\"");
        assert_eq!(s(|o| write_f64(o, f64::INFINITY)), "\"Infinity\"");
        assert_eq!(s(|o| write_f64(o, f64::NEG_INFINITY)), "\"-Infinity\"");
    }

    #[test]
    fn epoch_seconds_keep_microseconds() {
        assert_eq!(
            s(|o| write_epoch_seconds(o, 1_760_000_000_123_456_789)),
            "1760000000.123456"
        );
        assert_eq!(
            s(|o| write_epoch_seconds(o, 1_760_000_000_100_000_000)),
            "1760000000.1"
        );
        assert_eq!(
            s(|o| write_epoch_seconds(o, 1_760_000_000_000_000_999)),
            "1760000000.0"
        );
        assert_eq!(
            s(|o| write_epoch_seconds(o, 1_760_000_000_000_001_000)),
            "1760000000.000001"
        );
        assert_eq!(s(|o| write_epoch_seconds(o, 0)), "0.0");
        assert_eq!(
            s(|o| write_epoch_seconds(o, u64::MAX)),
            "18446744073.709551"
        );
        assert_eq!(
            nanos_to_seconds(1_760_000_000_123_456_789),
            1_760_000_000.123_456
        );
    }

    #[test]
    fn hex_and_base64() {
        assert_eq!(s(|o| write_hex(o, &[0x00, 0xab, 0xff])), "00abff");
        for (input, want) in [
            (&b""[..], "\"\""),
            (b"f", "\"Zg==\""),
            (b"fo", "\"Zm8=\""),
            (b"foo", "\"Zm9v\""),
            (b"foob", "\"Zm9vYg==\""),
        ] {
            assert_eq!(s(|o| write_base64(o, input)), want);
        }
    }
}
