//! A small JSON writer that appends straight to a byte buffer: escaped strings, integers, floats,
//! X-Ray timestamps and hex ids. No intermediate values, no allocation beyond the output buffer.
//!
//! Strings come in as bytes: the views' strings were checked for UTF-8 when the request was read
//! (`otlp_wire`), so they are copied as they are; what the writer adds is ASCII. The translator
//! turns each finished document into a `String` with one `from_utf8` (see `translate.rs`), so
//! bytes that were not UTF-8 (never, from checked views) could not reach a document either.

use std::io::Write as _;

/// Appends `s` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: impl AsRef<[u8]>) {
    out.push(b'"');
    write_escaped(out, s);
    out.push(b'"');
}

/// Appends `s` as a quoted JSON string, cut to at most `max_chars` characters. Returns whether it
/// was cut.
pub fn write_str_max(out: &mut Vec<u8>, s: impl AsRef<[u8]>, max_chars: usize) -> bool {
    let (kept, cut) = truncate_chars(s.as_ref(), max_chars);
    write_str(out, kept);
    cut
}

/// The longest prefix of UTF-8 `s` with at most `max_chars` characters, and whether anything was
/// cut. Characters are counted as the bytes that do not continue one (not `0b10xx_xxxx`).
pub fn truncate_chars<S: AsRef<[u8]> + ?Sized>(s: &S, max_chars: usize) -> (&[u8], bool) {
    let s = s.as_ref();
    // A string of at most `max_chars` bytes has at most `max_chars` characters.
    if s.len() <= max_chars {
        return (s, false);
    }
    let mut count = 0;
    for (i, &b) in s.iter().enumerate() {
        if (b as i8) >= -0x40 {
            if count == max_chars {
                return (&s[..i], true);
            }
            count += 1;
        }
    }
    (s, false)
}

/// Appends the body of a JSON string (no quotes): `"`, `\\` and control characters escaped.
pub fn write_escaped(out: &mut Vec<u8>, bytes: impl AsRef<[u8]>) {
    let bytes = bytes.as_ref();
    let mut start = 0;
    let mut i = 0;
    loop {
        // Skip 8 bytes at a time while none needs escaping, then byte by byte.
        while let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(<[u8; 8]>::try_from(chunk).unwrap_or([0; 8]));
            if needs_escape_8(word) {
                break;
            }
            i += 8;
        }
        while i < bytes.len() && !needs_escape(bytes[i]) {
            i += 1;
        }
        let Some(&b) = bytes.get(i) else { break };
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[inline(always)]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the 8 bytes of `w` is a control character, `"` or `\\` (SWAR).
#[inline(always)]
fn needs_escape_8(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    // Bytes below 0x20 (bytes >= 0x80 are excluded by `!w`).
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (control | has_zero(w ^ (ONES * u64::from(b'"'))) | has_zero(w ^ (ONES * u64::from(b'\\'))))
        != 0
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as lowercase hex.
pub fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 0xf) as usize]);
    }
}

/// `s.split_once(pat)` for a short `pat`, without the setup of `str`'s two-way searcher (which
/// costs more than the search on the short lines of stack traces and connection strings).
pub fn split_once_str<'s>(s: &'s str, pat: &str) -> Option<(&'s str, &'s str)> {
    let at = find_str(s, pat)?;
    Some((s.get(..at)?, s.get(at + pat.len()..)?))
}

/// `s.rsplit_once(pat)` for a short `pat` (see [`split_once_str`]).
pub fn rsplit_once_str<'s>(s: &'s str, pat: &str) -> Option<(&'s str, &'s str)> {
    let (h, p) = (s.as_bytes(), pat.as_bytes());
    if p.is_empty() || p.len() > h.len() {
        return s.rsplit_once(pat);
    }
    let at = (0..=h.len() - p.len())
        .rev()
        .find(|&i| &h[i..i + p.len()] == p)?;
    Some((s.get(..at)?, s.get(at + p.len()..)?))
}

/// Byte offset of the first `pat` in `s` (naive search: `pat` is a short literal).
fn find_str(s: &str, pat: &str) -> Option<usize> {
    let (h, p) = (s.as_bytes(), pat.as_bytes());
    let (&first, rest) = p.split_first()?;
    let mut i = 0;
    while i + p.len() <= h.len() {
        let at = i + h[i..=h.len() - p.len()].iter().position(|&b| b == first)?;
        if &h[at + 1..at + p.len()] == rest {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// `"00" "01" … "99"`: two digits at a time.
const DIGIT_PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `n` in decimal at the end of `buf`; returns where it starts.
#[inline]
fn format_u64(buf: &mut [u8; 20], mut n: u64) -> usize {
    let mut i = buf.len();
    while n >= 100 {
        let d = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i] = DIGIT_PAIRS[d];
        buf[i + 1] = DIGIT_PAIRS[d + 1];
    }
    if n >= 10 {
        let d = n as usize * 2;
        i -= 2;
        buf[i] = DIGIT_PAIRS[d];
        buf[i + 1] = DIGIT_PAIRS[d + 1];
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    i
}

/// Appends an unsigned integer.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 20];
    let start = format_u64(&mut buf, n);
    out.extend_from_slice(&buf[start..]);
}

/// Appends a signed integer.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Appends a finite float as a JSON number (shortest representation that reads back the same);
/// a non-finite one, which JSON cannot hold, as the string `"NaN"`, `"Infinity"` or `"-Infinity"`.
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
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
pub fn write_epoch_seconds(out: &mut Vec<u8>, nanos: u64) {
    let secs = nanos / 1_000_000_000;
    let micros = ((nanos % 1_000_000_000) / 1_000) as usize;
    // Seconds, `.`, six digits of microseconds, built in one buffer and pushed once.
    let mut buf = [0u8; 27];
    let mut digits = [0u8; 20];
    let start = format_u64(&mut digits, secs);
    let n = digits.len() - start;
    buf[..n].copy_from_slice(&digits[start..]);
    buf[n] = b'.';
    let (hi, mid, lo) = (micros / 10_000, micros / 100 % 100, micros % 100);
    for (k, pair) in [hi, mid, lo].into_iter().enumerate() {
        buf[n + 1 + 2 * k] = DIGIT_PAIRS[pair * 2];
        buf[n + 2 + 2 * k] = DIGIT_PAIRS[pair * 2 + 1];
    }
    // Drop trailing zeros, keeping at least one decimal.
    let mut len = n + 7;
    while len > n + 2 && buf[len - 1] == b'0' {
        len -= 1;
    }
    out.extend_from_slice(&buf[..len]);
}

/// Appends `bytes` as a quoted standard base64 string (with padding), as JSON encoders do for
/// binary values.
pub fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push(b'"');
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(B64[(n >> 18) as usize & 63]);
        out.push(B64[(n >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63]
        } else {
            b'='
        });
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
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
            let ours = s(|o| write_str(o, input.as_bytes()));
            assert_eq!(ours, serde_json::to_string(input).unwrap(), "{input:?}");
            let back: String = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        let t = |s: &'static str, n| {
            let (kept, cut) = truncate_chars(s.as_bytes(), n);
            (std::str::from_utf8(kept).unwrap(), cut)
        };
        assert_eq!(t("abc", 3), ("abc", false));
        assert_eq!(t("abcd", 3), ("abc", true));
        assert_eq!(t("ééé", 3), ("ééé", false));
        assert_eq!(t("éééé", 3), ("ééé", true));
        assert_eq!(t("🦀🦀", 1), ("🦀", true));
        assert_eq!(t("", 0), ("", false));
        assert_eq!(t("a", 0), ("", true));
        for s in ["a東b🦀cé", "ab", "東京東京東京", "🦀é🦀é"] {
            for n in 0..8 {
                let want: String = s.chars().take(n).collect();
                assert_eq!(t(s, n), (want.as_str(), s.chars().count() > n), "{s} {n}");
            }
        }
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
    fn the_word_at_a_time_scan_finds_every_byte_to_escape() {
        for b in 0u8..=255 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                let want = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(
                    needs_escape_8(u64::from_le_bytes(w)),
                    want,
                    "byte {b:#x} at {pos}"
                );
            }
        }
        let long = "0123456789\"abcdefgh\\ijklmnop\u{1}qrstuvwxyzé東京🦀\n";
        assert_eq!(
            s(|o| write_str(o, long.as_bytes())),
            serde_json::to_string(long).unwrap()
        );
    }

    #[test]
    fn short_pattern_splits_agree_with_str() {
        for s in [
            "",
            "a",
            "/a.py\", line 1, in f",
            "x, in y, in z",
            "in",
            ", in ",
            "é, in ü",
            "aaa",
            "a (b) (c)",
        ] {
            for pat in [", in ", "\", line ", " (", "aa", "a", "é", "zzzz"] {
                assert_eq!(split_once_str(s, pat), s.split_once(pat), "{s:?} {pat:?}");
                assert_eq!(rsplit_once_str(s, pat), s.rsplit_once(pat), "{s:?} {pat:?}");
            }
        }
    }

    #[test]
    fn hex_and_base64() {
        assert_eq!(s(|o| write_hex(o, &[0x00, 0xab, 0xff])), "00abff");
        let long: Vec<u8> = (0..=99).collect();
        assert_eq!(
            s(|o| write_hex(o, &long)),
            long.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
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
