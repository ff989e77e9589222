//! SigV4 request signing (service `xray`), written here over `ring` (already linked for TLS):
//! headers `X-Amz-Date`, `Authorization` and, for temporary credentials, `X-Amz-Security-Token`
//! are added to the request. The payload hash covers the body exactly as sent (compressed when it
//! is). Our requests are simple (one POST, a fixed path, a few headers), which is all this
//! implements of the [SigV4 spec]: canonical request, string to sign, derived key. The `aws-sigv4`
//! crate did the same for 0.3 MB more of the binary (docs/performance.md); tests check the
//! signatures against AWS's published test vector and an independent verifier
//! (extension/tests/export_common).
//!
//! [SigV4 spec]: https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html

use std::fmt::Write as _;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, HeaderName, HeaderValue};
use ring::{digest, hmac};

/// The signing service of X-Ray's APIs, PutTraceSegments and the OTLP endpoint alike.
pub const XRAY_SERVICE: &str = "xray";

/// Headers never signed: set or changed by the transport or by proxies (as the AWS SDKs do).
const UNSIGNED: [&str; 6] = [
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "expect",
    "transfer-encoding",
    "connection",
];

/// The request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The URI has no host to sign.
    #[error("request URI has no host")]
    NoHost,
    /// A header value is not text and cannot be signed.
    #[error("header {0} is not valid text")]
    BadHeader(String),
    /// The clock is before 1970.
    #[error("signing failed: {0}")]
    Signer(String),
}

/// Signs `request` in place for `service` in `region` at `time`.
///
/// Sets `Host` from the URI first (so that the signed host is the one sent).
pub fn sign(
    request: &mut http::Request<Bytes>,
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), SignError> {
    let authority = request
        .uri()
        .authority()
        .ok_or(SignError::NoHost)?
        .as_str()
        .to_owned();
    let host = HeaderValue::from_str(&authority).map_err(|_| SignError::NoHost)?;
    request.headers_mut().insert(HOST, host);

    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| SignError::Signer("clock before 1970".into()))?
        .as_secs();
    let amz_date = amz_date(secs);
    let date = &amz_date[..8];
    let headers = request.headers_mut();
    headers.insert(
        HeaderName::from_static("x-amz-date"),
        HeaderValue::from_str(&amz_date).map_err(|_| SignError::BadHeader("x-amz-date".into()))?,
    );
    if let Some(token) = credentials.session_token() {
        let mut value = HeaderValue::from_str(token)
            .map_err(|_| SignError::BadHeader("x-amz-security-token".into()))?;
        value.set_sensitive(true);
        headers.insert(HeaderName::from_static("x-amz-security-token"), value);
    }

    // Canonical headers: lower-case names, sorted; values trimmed, inner spaces collapsed,
    // repeated headers joined with commas.
    let mut names: Vec<&str> = request
        .headers()
        .keys()
        .map(HeaderName::as_str)
        .filter(|n| !UNSIGNED.contains(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut canonical_headers = String::new();
    for name in &names {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        for (i, value) in request.headers().get_all(*name).iter().enumerate() {
            let value = value
                .to_str()
                .map_err(|_| SignError::BadHeader((*name).to_owned()))?;
            if i > 0 {
                canonical_headers.push(',');
            }
            canonical_headers.push_str(&value.split_whitespace().collect::<Vec<_>>().join(" "));
        }
        canonical_headers.push('\n');
    }
    let signed_headers = names.join(";");

    let uri = request.uri();
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method().as_str(),
        canonical_path(uri.path()),
        canonical_query(uri.query().unwrap_or("")),
        canonical_headers,
        signed_headers,
        hex(digest::digest(&digest::SHA256, request.body()).as_ref()),
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let mut key = hmac_sha256(
        format!("AWS4{}", credentials.secret_access_key()).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));
    let mut authorization = HeaderValue::from_str(&format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, \
         Signature={signature}",
        credentials.access_key_id()
    ))
    .map_err(|_| SignError::BadHeader("authorization".into()))?;
    authorization.set_sensitive(true);
    request.headers_mut().insert(AUTHORIZATION, authorization);
    Ok(())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `YYYYMMDD'T'HHMMSS'Z'` for seconds since the epoch (UTC).
fn amz_date(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), in unsigned arithmetic:
    // days since 0000-03-01 are never negative for times after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// SigV4 URI encoding: everything but unreserved characters, as `%XX` (upper case).
fn encode(s: &str, keep_slash: bool, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The path as sent, encoded once more (services other than S3 sign the double-encoded path).
fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(path.len());
    encode(path, true, &mut out);
    out
}

/// Query parameters sorted by name then value, each re-encoded from its decoded form.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut ek, mut ev) = (String::new(), String::new());
            encode(&percent_decode(k), false, &mut ek);
            encode(&percent_decode(v), false, &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex_at = |j: usize| b.get(j).and_then(|c| char::from(*c).to_digit(16));
        match (b[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn creds(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        )
    }

    #[test]
    fn adds_date_authorization_and_token() {
        let mut req = http::Request::post("https://xray.us-east-1.amazonaws.com/TraceSegments")
            .header("content-type", "application/json")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        sign(
            &mut req,
            &creds(Some("TOKEN")),
            "us-east-1",
            XRAY_SERVICE,
            t,
        )
        .unwrap();
        let h = req.headers();
        assert_eq!(h["host"], "xray.us-east-1.amazonaws.com");
        assert_eq!(h["x-amz-date"], "20150830T123600Z");
        assert_eq!(h["x-amz-security-token"], "TOKEN");
        let auth = h["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/xray/aws4_request, SignedHeaders="
            ),
            "{auth}"
        );
        assert!(auth.contains("host;"), "{auth}");
        assert!(auth.contains("x-amz-security-token"), "{auth}");
        let sig = auth.rsplit("Signature=").next().unwrap();
        assert_eq!(sig.len(), 64);
        assert!(sig.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(h["authorization"].is_sensitive());
    }

    /// AWS's SigV4 test suite, `get-vanilla` and `post-vanilla` (service `service`).
    #[test]
    fn aws_test_vectors() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        for (method, sig) in [
            (
                "GET",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
            (
                "POST",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            ),
        ] {
            let mut req = http::Request::builder()
                .method(method)
                .uri("https://example.amazonaws.com/")
                .body(Bytes::new())
                .unwrap();
            sign(&mut req, &creds(None), "us-east-1", "service", t).unwrap();
            assert_eq!(
                req.headers()["authorization"],
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                     SignedHeaders=host;x-amz-date, Signature={sig}"
                ),
                "{method}"
            );
        }
    }

    #[test]
    fn dates_and_encodings() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(4_070_908_799), "20981231T235959Z");
        assert_eq!(canonical_path("/a b/c%2F"), "/a%20b/c%252F");
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_query("b=2&a=x%20y&a=1&c"), "a=1&a=x%20y&b=2&c=");
    }

    #[test]
    fn keeps_the_port_in_the_signed_host() {
        let mut req = http::Request::post("http://127.0.0.1:4566/TraceSegments")
            .body(Bytes::new())
            .unwrap();
        sign(
            &mut req,
            &creds(None),
            "eu-west-1",
            XRAY_SERVICE,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(req.headers()["host"], "127.0.0.1:4566");
        assert!(!req.headers().contains_key("x-amz-security-token"));
    }
}
