//! Segment names and annotation keys.
//!
//! A segment name may hold Unicode letters, digits and spaces and `_ . : / % & # = + - @`, at most
//! 200 characters. The schema spells this out as an explicit character class (Unicode 8 era, and,
//! unlike the prose of the docs, without `\`); [`NAME_CHARS`] is that exact class, extracted from
//! `xray-segmentdocument-schema-v1.0.0.json`, so that every name we write validates. Characters
//! outside it are removed (as the Collector does), and an empty result falls back to `span`.
//!
//! Annotation keys may hold only `[A-Za-z0-9_]` (1 to 500 characters): anything else becomes `_`.

/// Longest segment name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest annotation key, in characters.
pub const MAX_ANNOTATION_KEY_CHARS: usize = 500;
/// The name used when nothing valid is left.
pub const FALLBACK_NAME: &str = "span";

/// Whether `c` may appear in a segment name (the schema's `name` pattern).
pub fn is_name_char(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric()
            || matches!(
                c,
                ' ' | '_' | '.' | ':' | '/' | '%' | '&' | '#' | '=' | '+' | '-' | '@'
            );
    }
    NAME_CHARS
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// A view's string as `&str`: views hold bytes checked for UTF-8 when the request was read
/// (`otlp_wire`), so this always converts all of them; unchecked bytes would lose their
/// invalid tail rather than reach a document.
pub fn text(raw: &[u8]) -> &str {
    match std::str::from_utf8(raw) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&raw[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// Appends the sanitised form of `raw` (invalid characters removed, surrounding whitespace
/// trimmed, at most 200 characters) as the body of a JSON string. Returns `(characters written,
/// whether characters were dropped because of the length limit)`. Writes nothing when no valid
/// character is left.
pub fn write_sanitised_name(out: &mut Vec<u8>, raw: impl AsRef<[u8]>) -> (usize, bool) {
    let raw = raw.as_ref().trim_ascii();
    if raw.len() <= MAX_NAME_CHARS && raw.iter().all(|&b| b.is_ascii() && is_name_char(b as char)) {
        // Nothing to remove and no character the JSON escaper would touch.
        out.extend_from_slice(raw);
        return (raw.len(), false);
    }
    let raw = text(raw).trim();
    let mut name = String::new();
    let mut count = 0;
    let mut cut = false;
    for c in raw.chars() {
        if !is_name_char(c) || (count == 0 && c.is_whitespace()) {
            continue;
        }
        if count == MAX_NAME_CHARS {
            cut = true;
            break;
        }
        name.push(c);
        count += 1;
    }
    // Invalid characters removed from the end may leave whitespace there.
    while let Some(c) = name.pop() {
        if !c.is_whitespace() {
            name.push(c);
            break;
        }
        count -= 1;
    }
    // Name characters need no JSON escaping.
    out.extend_from_slice(name.as_bytes());
    (count, cut)
}

/// Whether `raw` keeps at least one character once sanitised: a name character that is not
/// whitespace (whitespace alone is trimmed away).
pub fn has_name_char(raw: impl AsRef<[u8]>) -> bool {
    text(raw.as_ref())
        .chars()
        .any(|c| is_name_char(c) && !c.is_whitespace())
}

/// Appends the annotation key for attribute `key`: characters outside `[A-Za-z0-9_]` become `_`,
/// at most 500 characters. Returns whether it was cut. `key` must not be empty.
pub fn write_annotation_key(out: &mut String, key: impl AsRef<[u8]>) -> bool {
    for (n, c) in text(key.as_ref()).chars().enumerate() {
        if n == MAX_ANNOTATION_KEY_CHARS {
            return true;
        }
        out.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    false
}

/// The character class of the schema's `name` pattern, as sorted, merged inclusive ranges.
#[rustfmt::skip]
pub const NAME_CHARS: &[(char, char)] = &[
    ('\u{20}', '\u{20}'), ('\u{23}', '\u{23}'), ('\u{25}', '\u{26}'), ('\u{2b}', '\u{2b}'),
    ('\u{2d}', '\u{3a}'), ('\u{3d}', '\u{3d}'), ('\u{40}', '\u{5a}'), ('\u{5f}', '\u{5f}'),
    ('\u{61}', '\u{7a}'), ('\u{a0}', '\u{a0}'), ('\u{aa}', '\u{aa}'), ('\u{b2}', '\u{b3}'),
    ('\u{b5}', '\u{b5}'), ('\u{b9}', '\u{ba}'), ('\u{bc}', '\u{be}'), ('\u{c0}', '\u{d6}'),
    ('\u{d8}', '\u{f6}'), ('\u{f8}', '\u{2c1}'), ('\u{2c6}', '\u{2d1}'), ('\u{2e0}', '\u{2e4}'),
    ('\u{2ec}', '\u{2ec}'), ('\u{2ee}', '\u{2ee}'), ('\u{370}', '\u{374}'), ('\u{376}', '\u{377}'),
    ('\u{37a}', '\u{37d}'), ('\u{37f}', '\u{37f}'), ('\u{386}', '\u{386}'), ('\u{388}', '\u{38a}'),
    ('\u{38c}', '\u{38c}'), ('\u{38e}', '\u{3a1}'), ('\u{3a3}', '\u{3f5}'), ('\u{3f7}', '\u{481}'),
    ('\u{48a}', '\u{52f}'), ('\u{531}', '\u{556}'), ('\u{559}', '\u{559}'), ('\u{561}', '\u{587}'),
    ('\u{5d0}', '\u{5ea}'), ('\u{5f0}', '\u{5f2}'), ('\u{620}', '\u{64a}'), ('\u{660}', '\u{669}'),
    ('\u{66e}', '\u{66f}'), ('\u{671}', '\u{6d3}'), ('\u{6d5}', '\u{6d5}'), ('\u{6e5}', '\u{6e6}'),
    ('\u{6ee}', '\u{6fc}'), ('\u{6ff}', '\u{6ff}'), ('\u{710}', '\u{710}'), ('\u{712}', '\u{72f}'),
    ('\u{74d}', '\u{7a5}'), ('\u{7b1}', '\u{7b1}'), ('\u{7c0}', '\u{7ea}'), ('\u{7f4}', '\u{7f5}'),
    ('\u{7fa}', '\u{7fa}'), ('\u{800}', '\u{815}'), ('\u{81a}', '\u{81a}'), ('\u{824}', '\u{824}'),
    ('\u{828}', '\u{828}'), ('\u{840}', '\u{858}'), ('\u{8a0}', '\u{8b4}'), ('\u{904}', '\u{939}'),
    ('\u{93d}', '\u{93d}'), ('\u{950}', '\u{950}'), ('\u{958}', '\u{961}'), ('\u{966}', '\u{96f}'),
    ('\u{971}', '\u{980}'), ('\u{985}', '\u{98c}'), ('\u{98f}', '\u{990}'), ('\u{993}', '\u{9a8}'),
    ('\u{9aa}', '\u{9b0}'), ('\u{9b2}', '\u{9b2}'), ('\u{9b6}', '\u{9b9}'), ('\u{9bd}', '\u{9bd}'),
    ('\u{9ce}', '\u{9ce}'), ('\u{9dc}', '\u{9dd}'), ('\u{9df}', '\u{9e1}'), ('\u{9e6}', '\u{9f1}'),
    ('\u{9f4}', '\u{9f9}'), ('\u{a05}', '\u{a0a}'), ('\u{a0f}', '\u{a10}'), ('\u{a13}', '\u{a28}'),
    ('\u{a2a}', '\u{a30}'), ('\u{a32}', '\u{a33}'), ('\u{a35}', '\u{a36}'), ('\u{a38}', '\u{a39}'),
    ('\u{a59}', '\u{a5c}'), ('\u{a5e}', '\u{a5e}'), ('\u{a66}', '\u{a6f}'), ('\u{a72}', '\u{a74}'),
    ('\u{a85}', '\u{a8d}'), ('\u{a8f}', '\u{a91}'), ('\u{a93}', '\u{aa8}'), ('\u{aaa}', '\u{ab0}'),
    ('\u{ab2}', '\u{ab3}'), ('\u{ab5}', '\u{ab9}'), ('\u{abd}', '\u{abd}'), ('\u{ad0}', '\u{ad0}'),
    ('\u{ae0}', '\u{ae1}'), ('\u{ae6}', '\u{aef}'), ('\u{af9}', '\u{af9}'), ('\u{b05}', '\u{b0c}'),
    ('\u{b0f}', '\u{b10}'), ('\u{b13}', '\u{b28}'), ('\u{b2a}', '\u{b30}'), ('\u{b32}', '\u{b33}'),
    ('\u{b35}', '\u{b39}'), ('\u{b3d}', '\u{b3d}'), ('\u{b5c}', '\u{b5d}'), ('\u{b5f}', '\u{b61}'),
    ('\u{b66}', '\u{b6f}'), ('\u{b71}', '\u{b77}'), ('\u{b83}', '\u{b83}'), ('\u{b85}', '\u{b8a}'),
    ('\u{b8e}', '\u{b90}'), ('\u{b92}', '\u{b95}'), ('\u{b99}', '\u{b9a}'), ('\u{b9c}', '\u{b9c}'),
    ('\u{b9e}', '\u{b9f}'), ('\u{ba3}', '\u{ba4}'), ('\u{ba8}', '\u{baa}'), ('\u{bae}', '\u{bb9}'),
    ('\u{bd0}', '\u{bd0}'), ('\u{be6}', '\u{bf2}'), ('\u{c05}', '\u{c0c}'), ('\u{c0e}', '\u{c10}'),
    ('\u{c12}', '\u{c28}'), ('\u{c2a}', '\u{c39}'), ('\u{c3d}', '\u{c3d}'), ('\u{c58}', '\u{c5a}'),
    ('\u{c60}', '\u{c61}'), ('\u{c66}', '\u{c6f}'), ('\u{c78}', '\u{c7e}'), ('\u{c85}', '\u{c8c}'),
    ('\u{c8e}', '\u{c90}'), ('\u{c92}', '\u{ca8}'), ('\u{caa}', '\u{cb3}'), ('\u{cb5}', '\u{cb9}'),
    ('\u{cbd}', '\u{cbd}'), ('\u{cde}', '\u{cde}'), ('\u{ce0}', '\u{ce1}'), ('\u{ce6}', '\u{cef}'),
    ('\u{cf1}', '\u{cf2}'), ('\u{d05}', '\u{d0c}'), ('\u{d0e}', '\u{d10}'), ('\u{d12}', '\u{d3a}'),
    ('\u{d3d}', '\u{d3d}'), ('\u{d4e}', '\u{d4e}'), ('\u{d5f}', '\u{d61}'), ('\u{d66}', '\u{d75}'),
    ('\u{d7a}', '\u{d7f}'), ('\u{d85}', '\u{d96}'), ('\u{d9a}', '\u{db1}'), ('\u{db3}', '\u{dbb}'),
    ('\u{dbd}', '\u{dbd}'), ('\u{dc0}', '\u{dc6}'), ('\u{de6}', '\u{def}'), ('\u{e01}', '\u{e30}'),
    ('\u{e32}', '\u{e33}'), ('\u{e40}', '\u{e46}'), ('\u{e50}', '\u{e59}'), ('\u{e81}', '\u{e82}'),
    ('\u{e84}', '\u{e84}'), ('\u{e87}', '\u{e88}'), ('\u{e8a}', '\u{e8a}'), ('\u{e8d}', '\u{e8d}'),
    ('\u{e94}', '\u{e97}'), ('\u{e99}', '\u{e9f}'), ('\u{ea1}', '\u{ea3}'), ('\u{ea5}', '\u{ea5}'),
    ('\u{ea7}', '\u{ea7}'), ('\u{eaa}', '\u{eab}'), ('\u{ead}', '\u{eb0}'), ('\u{eb2}', '\u{eb3}'),
    ('\u{ebd}', '\u{ebd}'), ('\u{ec0}', '\u{ec4}'), ('\u{ec6}', '\u{ec6}'), ('\u{ed0}', '\u{ed9}'),
    ('\u{edc}', '\u{edf}'), ('\u{f00}', '\u{f00}'), ('\u{f20}', '\u{f33}'), ('\u{f40}', '\u{f47}'),
    ('\u{f49}', '\u{f6c}'), ('\u{f88}', '\u{f8c}'), ('\u{1000}', '\u{102a}'),
    ('\u{103f}', '\u{1049}'), ('\u{1050}', '\u{1055}'), ('\u{105a}', '\u{105d}'),
    ('\u{1061}', '\u{1061}'), ('\u{1065}', '\u{1066}'), ('\u{106e}', '\u{1070}'),
    ('\u{1075}', '\u{1081}'), ('\u{108e}', '\u{108e}'), ('\u{1090}', '\u{1099}'),
    ('\u{10a0}', '\u{10c5}'), ('\u{10c7}', '\u{10c7}'), ('\u{10cd}', '\u{10cd}'),
    ('\u{10d0}', '\u{10fa}'), ('\u{10fc}', '\u{1248}'), ('\u{124a}', '\u{124d}'),
    ('\u{1250}', '\u{1256}'), ('\u{1258}', '\u{1258}'), ('\u{125a}', '\u{125d}'),
    ('\u{1260}', '\u{1288}'), ('\u{128a}', '\u{128d}'), ('\u{1290}', '\u{12b0}'),
    ('\u{12b2}', '\u{12b5}'), ('\u{12b8}', '\u{12be}'), ('\u{12c0}', '\u{12c0}'),
    ('\u{12c2}', '\u{12c5}'), ('\u{12c8}', '\u{12d6}'), ('\u{12d8}', '\u{1310}'),
    ('\u{1312}', '\u{1315}'), ('\u{1318}', '\u{135a}'), ('\u{1369}', '\u{137c}'),
    ('\u{1380}', '\u{138f}'), ('\u{13a0}', '\u{13f5}'), ('\u{13f8}', '\u{13fd}'),
    ('\u{1401}', '\u{166c}'), ('\u{166f}', '\u{169a}'), ('\u{16a0}', '\u{16ea}'),
    ('\u{16ee}', '\u{16f8}'), ('\u{1700}', '\u{170c}'), ('\u{170e}', '\u{1711}'),
    ('\u{1720}', '\u{1731}'), ('\u{1740}', '\u{1751}'), ('\u{1760}', '\u{176c}'),
    ('\u{176e}', '\u{1770}'), ('\u{1780}', '\u{17b3}'), ('\u{17d7}', '\u{17d7}'),
    ('\u{17dc}', '\u{17dc}'), ('\u{17e0}', '\u{17e9}'), ('\u{17f0}', '\u{17f9}'),
    ('\u{1810}', '\u{1819}'), ('\u{1820}', '\u{1877}'), ('\u{1880}', '\u{18a8}'),
    ('\u{18aa}', '\u{18aa}'), ('\u{18b0}', '\u{18f5}'), ('\u{1900}', '\u{191e}'),
    ('\u{1946}', '\u{196d}'), ('\u{1970}', '\u{1974}'), ('\u{1980}', '\u{19ab}'),
    ('\u{19b0}', '\u{19c9}'), ('\u{19d0}', '\u{19da}'), ('\u{1a00}', '\u{1a16}'),
    ('\u{1a20}', '\u{1a54}'), ('\u{1a80}', '\u{1a89}'), ('\u{1a90}', '\u{1a99}'),
    ('\u{1aa7}', '\u{1aa7}'), ('\u{1b05}', '\u{1b33}'), ('\u{1b45}', '\u{1b4b}'),
    ('\u{1b50}', '\u{1b59}'), ('\u{1b83}', '\u{1ba0}'), ('\u{1bae}', '\u{1be5}'),
    ('\u{1c00}', '\u{1c23}'), ('\u{1c40}', '\u{1c49}'), ('\u{1c4d}', '\u{1c7d}'),
    ('\u{1ce9}', '\u{1cec}'), ('\u{1cee}', '\u{1cf1}'), ('\u{1cf5}', '\u{1cf6}'),
    ('\u{1d00}', '\u{1dbf}'), ('\u{1e00}', '\u{1f15}'), ('\u{1f18}', '\u{1f1d}'),
    ('\u{1f20}', '\u{1f45}'), ('\u{1f48}', '\u{1f4d}'), ('\u{1f50}', '\u{1f57}'),
    ('\u{1f59}', '\u{1f59}'), ('\u{1f5b}', '\u{1f5b}'), ('\u{1f5d}', '\u{1f5d}'),
    ('\u{1f5f}', '\u{1f7d}'), ('\u{1f80}', '\u{1fb4}'), ('\u{1fb6}', '\u{1fbc}'),
    ('\u{1fbe}', '\u{1fbe}'), ('\u{1fc2}', '\u{1fc4}'), ('\u{1fc6}', '\u{1fcc}'),
    ('\u{1fd0}', '\u{1fd3}'), ('\u{1fd6}', '\u{1fdb}'), ('\u{1fe0}', '\u{1fec}'),
    ('\u{1ff2}', '\u{1ff4}'), ('\u{1ff6}', '\u{1ffc}'), ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'), ('\u{202f}', '\u{202f}'), ('\u{205f}', '\u{205f}'),
    ('\u{2070}', '\u{2071}'), ('\u{2074}', '\u{2079}'), ('\u{207f}', '\u{2089}'),
    ('\u{2090}', '\u{209c}'), ('\u{2102}', '\u{2102}'), ('\u{2107}', '\u{2107}'),
    ('\u{210a}', '\u{2113}'), ('\u{2115}', '\u{2115}'), ('\u{2119}', '\u{211d}'),
    ('\u{2124}', '\u{2124}'), ('\u{2126}', '\u{2126}'), ('\u{2128}', '\u{2128}'),
    ('\u{212a}', '\u{212d}'), ('\u{212f}', '\u{2139}'), ('\u{213c}', '\u{213f}'),
    ('\u{2145}', '\u{2149}'), ('\u{214e}', '\u{214e}'), ('\u{2150}', '\u{2189}'),
    ('\u{2460}', '\u{249b}'), ('\u{24ea}', '\u{24ff}'), ('\u{2776}', '\u{2793}'),
    ('\u{2c00}', '\u{2c2e}'), ('\u{2c30}', '\u{2c5e}'), ('\u{2c60}', '\u{2ce4}'),
    ('\u{2ceb}', '\u{2cee}'), ('\u{2cf2}', '\u{2cf3}'), ('\u{2cfd}', '\u{2cfd}'),
    ('\u{2d00}', '\u{2d25}'), ('\u{2d27}', '\u{2d27}'), ('\u{2d2d}', '\u{2d2d}'),
    ('\u{2d30}', '\u{2d67}'), ('\u{2d6f}', '\u{2d6f}'), ('\u{2d80}', '\u{2d96}'),
    ('\u{2da0}', '\u{2da6}'), ('\u{2da8}', '\u{2dae}'), ('\u{2db0}', '\u{2db6}'),
    ('\u{2db8}', '\u{2dbe}'), ('\u{2dc0}', '\u{2dc6}'), ('\u{2dc8}', '\u{2dce}'),
    ('\u{2dd0}', '\u{2dd6}'), ('\u{2dd8}', '\u{2dde}'), ('\u{2e2f}', '\u{2e2f}'),
    ('\u{3000}', '\u{3000}'), ('\u{3005}', '\u{3007}'), ('\u{3021}', '\u{3029}'),
    ('\u{3031}', '\u{3035}'), ('\u{3038}', '\u{303c}'), ('\u{3041}', '\u{3096}'),
    ('\u{309d}', '\u{309f}'), ('\u{30a1}', '\u{30fa}'), ('\u{30fc}', '\u{30ff}'),
    ('\u{3105}', '\u{312d}'), ('\u{3131}', '\u{318e}'), ('\u{3192}', '\u{3195}'),
    ('\u{31a0}', '\u{31ba}'), ('\u{31f0}', '\u{31ff}'), ('\u{3220}', '\u{3229}'),
    ('\u{3248}', '\u{324f}'), ('\u{3251}', '\u{325f}'), ('\u{3280}', '\u{3289}'),
    ('\u{32b1}', '\u{32bf}'), ('\u{3400}', '\u{4db5}'), ('\u{4e00}', '\u{9fd5}'),
    ('\u{a000}', '\u{a48c}'), ('\u{a4d0}', '\u{a4fd}'), ('\u{a500}', '\u{a60c}'),
    ('\u{a610}', '\u{a62b}'), ('\u{a640}', '\u{a66e}'), ('\u{a67f}', '\u{a69d}'),
    ('\u{a6a0}', '\u{a6ef}'), ('\u{a717}', '\u{a71f}'), ('\u{a722}', '\u{a788}'),
    ('\u{a78b}', '\u{a7ad}'), ('\u{a7b0}', '\u{a7b7}'), ('\u{a7f7}', '\u{a801}'),
    ('\u{a803}', '\u{a805}'), ('\u{a807}', '\u{a80a}'), ('\u{a80c}', '\u{a822}'),
    ('\u{a830}', '\u{a835}'), ('\u{a840}', '\u{a873}'), ('\u{a882}', '\u{a8b3}'),
    ('\u{a8d0}', '\u{a8d9}'), ('\u{a8f2}', '\u{a8f7}'), ('\u{a8fb}', '\u{a8fb}'),
    ('\u{a8fd}', '\u{a8fd}'), ('\u{a900}', '\u{a925}'), ('\u{a930}', '\u{a946}'),
    ('\u{a960}', '\u{a97c}'), ('\u{a984}', '\u{a9b2}'), ('\u{a9cf}', '\u{a9d9}'),
    ('\u{a9e0}', '\u{a9e4}'), ('\u{a9e6}', '\u{a9fe}'), ('\u{aa00}', '\u{aa28}'),
    ('\u{aa40}', '\u{aa42}'), ('\u{aa44}', '\u{aa4b}'), ('\u{aa50}', '\u{aa59}'),
    ('\u{aa60}', '\u{aa76}'), ('\u{aa7a}', '\u{aa7a}'), ('\u{aa7e}', '\u{aaaf}'),
    ('\u{aab1}', '\u{aab1}'), ('\u{aab5}', '\u{aab6}'), ('\u{aab9}', '\u{aabd}'),
    ('\u{aac0}', '\u{aac0}'), ('\u{aac2}', '\u{aac2}'), ('\u{aadb}', '\u{aadd}'),
    ('\u{aae0}', '\u{aaea}'), ('\u{aaf2}', '\u{aaf4}'), ('\u{ab01}', '\u{ab06}'),
    ('\u{ab09}', '\u{ab0e}'), ('\u{ab11}', '\u{ab16}'), ('\u{ab20}', '\u{ab26}'),
    ('\u{ab28}', '\u{ab2e}'), ('\u{ab30}', '\u{ab5a}'), ('\u{ab5c}', '\u{ab65}'),
    ('\u{ab70}', '\u{abe2}'), ('\u{abf0}', '\u{abf9}'), ('\u{ac00}', '\u{d7a3}'),
    ('\u{d7b0}', '\u{d7c6}'), ('\u{d7cb}', '\u{d7fb}'), ('\u{f900}', '\u{fa6d}'),
    ('\u{fa70}', '\u{fad9}'), ('\u{fb00}', '\u{fb06}'), ('\u{fb13}', '\u{fb17}'),
    ('\u{fb1d}', '\u{fb1d}'), ('\u{fb1f}', '\u{fb28}'), ('\u{fb2a}', '\u{fb36}'),
    ('\u{fb38}', '\u{fb3c}'), ('\u{fb3e}', '\u{fb3e}'), ('\u{fb40}', '\u{fb41}'),
    ('\u{fb43}', '\u{fb44}'), ('\u{fb46}', '\u{fbb1}'), ('\u{fbd3}', '\u{fd3d}'),
    ('\u{fd50}', '\u{fd8f}'), ('\u{fd92}', '\u{fdc7}'), ('\u{fdf0}', '\u{fdfb}'),
    ('\u{fe70}', '\u{fe74}'), ('\u{fe76}', '\u{fefc}'), ('\u{ff10}', '\u{ff19}'),
    ('\u{ff21}', '\u{ff3a}'), ('\u{ff41}', '\u{ff5a}'), ('\u{ff66}', '\u{ffbe}'),
    ('\u{ffc2}', '\u{ffc7}'), ('\u{ffca}', '\u{ffcf}'), ('\u{ffd2}', '\u{ffd7}'),
    ('\u{ffda}', '\u{ffdc}'),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn name(raw: &str) -> (String, bool) {
        let mut s = Vec::new();
        let (n, cut) = write_sanitised_name(&mut s, raw.as_bytes());
        let s = String::from_utf8(s).unwrap();
        assert_eq!(n, s.chars().count());
        (s, cut)
    }

    #[test]
    fn table_is_sorted_and_disjoint() {
        for w in NAME_CHARS.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "{w:?}");
        }
    }

    #[test]
    fn valid_names_pass_unchanged() {
        for raw in [
            "checkout",
            "GET /orders/{id}".replace(['{', '}'], "").as_str(),
            "db@host:5432",
            "café 東京",
            "a_b.c:d/e%f&g#h=i+j-k@l",
            "Ωμέγα",
        ] {
            assert_eq!(name(raw), (raw.to_string(), false));
        }
    }

    #[test]
    fn invalid_characters_are_removed() {
        assert_eq!(name("GET /orders/{id}").0, "GET /orders/id");
        assert_eq!(name("a<b>c\\d\"e\tf!").0, "abcdef");
        assert_eq!(name("🦀rust🦀").0, "rust");
        assert_eq!(name("<>").0, "");
        assert_eq!(name("  <weird> name {} ").0, "weird name");
        assert_eq!(name("<> x\u{3000}").0, "x");
        assert!(!has_name_char(b"<>{}"));
        assert!(has_name_char(b"<a>"));
    }

    #[test]
    fn has_name_char_agrees_with_the_sanitiser() {
        for raw in [
            "",
            " ",
            "   ",
            "\u{a0}",
            "\u{3000} \u{2028}",
            " <> ",
            "<\u{a0}>",
            "\u{1} \u{1}",
            "a",
            " a ",
            "<>a<>",
            "\u{a0}x\u{a0}",
        ] {
            let (s, _) = name(raw);
            assert_eq!(
                has_name_char(raw.as_bytes()),
                !s.is_empty(),
                "{raw:?} → {s:?}"
            );
        }
    }

    #[test]
    fn names_are_cut_to_200_characters() {
        let long = "é".repeat(250);
        let (s, cut) = name(&long);
        assert!(cut);
        assert_eq!(s.chars().count(), MAX_NAME_CHARS);
        let exact = "x".repeat(200);
        assert_eq!(name(&exact), (exact.clone(), false));
    }

    #[test]
    fn annotation_keys_are_sanitised() {
        let key = |k: &str| {
            let mut s = String::new();
            let cut = write_annotation_key(&mut s, k.as_bytes());
            (s, cut)
        };
        assert_eq!(key("http.method").0, "http_method");
        assert_eq!(key("tenant-id").0, "tenant_id");
        assert_eq!(key("Ünïcode").0, "_n_code");
        assert_eq!(key("ok_123").0, "ok_123");
        let (long, cut) = key(&"k".repeat(600));
        assert!(cut);
        assert_eq!(long.len(), MAX_ANNOTATION_KEY_CHARS);
    }
}
