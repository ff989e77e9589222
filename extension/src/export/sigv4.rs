//! SigV4 request signing (service `xray`) with the `aws-sigv4` crate: headers `X-Amz-Date`,
//! `Authorization` and, for temporary credentials, `X-Amz-Security-Token` are added to the
//! request. The payload hash covers the body exactly as sent (compressed when it is).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign as sigv4_sign};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};

/// The signing service of X-Ray's APIs, PutTraceSegments and the OTLP endpoint alike.
pub const XRAY_SERVICE: &str = "xray";

/// The request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The URI has no host to sign.
    #[error("request URI has no host")]
    NoHost,
    /// A header value is not text and cannot be signed.
    #[error("header {0} is not valid text")]
    BadHeader(String),
    /// aws-sigv4 refused the request or parameters.
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

    let identity = Identity::from(credentials.clone());
    let params: aws_sigv4::http_request::SigningParams<'_> = SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| SignError::Signer(e.to_string()))?
        .into();

    let uri = request.uri().to_string();
    let mut headers = Vec::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let value = value
            .to_str()
            .map_err(|_| SignError::BadHeader(name.as_str().to_owned()))?;
        headers.push((name.as_str(), value));
    }
    let signable = SignableRequest::new(
        request.method().as_str(),
        uri.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(request.body()),
    )
    .map_err(|e| SignError::Signer(super::http_client::error_chain(&e)))?;
    let (instructions, _signature) = sigv4_sign(signable, &params)
        .map_err(|e| SignError::Signer(super::http_client::error_chain(&e)))?
        .into_parts();

    let mut signed = Vec::new();
    for (name, value) in instructions.headers() {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SignError::BadHeader(name.to_owned()))?;
        let mut value =
            HeaderValue::from_str(value).map_err(|_| SignError::BadHeader(name.to_string()))?;
        if name == http::header::AUTHORIZATION || name.as_str() == "x-amz-security-token" {
            value.set_sensitive(true);
        }
        signed.push((name, value));
    }
    for (name, value) in signed {
        request.headers_mut().insert(name, value);
    }
    Ok(())
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
