//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` on 127.0.0.1:4317,
//! written directly on hyper's HTTP/2 server (no tonic: smaller binary, faster start). Every
//! `application/grpc` request ends up here, on either port.
//!
//! A unary gRPC call is one HTTP/2 POST whose body is one length-prefixed message (1 byte
//! compressed flag, 4 bytes big-endian length, the message); the answer is a length-prefixed
//! `ExportTraceServiceResponse` followed by trailers `grpc-status` (and `grpc-message`,
//! percent-encoded). Errors are "trailers-only" responses: the status in the headers, no body.
//!
//! | request                                         | answer                                   |
//! |-------------------------------------------------|------------------------------------------|
//! | good message                                    | OK (0) + `ExportTraceServiceResponse`    |
//! | good message, buffer full                       | OK (0) with `partial_success`            |
//! | another method or service                       | UNIMPLEMENTED (12)                       |
//! | unknown `grpc-encoding`                         | UNIMPLEMENTED (12), `grpc-accept-encoding`|
//! | message (declared or inflated) over the cap     | RESOURCE_EXHAUSTED (8)                   |
//! | bad framing, compression or protobuf            | INVALID_ARGUMENT (3)                     |
//! | body budget exhausted                           | UNAVAILABLE (14), retryable              |
//! | no byte of the message for the stall timeout    | DEADLINE_EXCEEDED (4)                    |
//! | buffer closed (shutting down)                   | UNAVAILABLE (14)                         |
//! | not POST                                        | HTTP 405                                 |

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use tracing::{debug, warn};

use super::decode::{self, Compression, DecodeError, Format};
use super::{
    BodyBuffer, BodyError, ResponseBody as GrpcBody, Shared, Shortfall, next_frame,
    partial_success_message,
};
use crate::stats::RejectReason;

/// The only method served.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Message encodings accepted, advertised in `grpc-accept-encoding`.
pub const ACCEPT_ENCODING: &str = "gzip,deflate,identity";

/// gRPC status codes used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 0
    Ok = 0,
    /// 3: bad framing, compression or protobuf. Not retried.
    InvalidArgument = 3,
    /// 4: the message stopped arriving.
    DeadlineExceeded = 4,
    /// 8: over the size cap. Not retried (no RetryInfo).
    ResourceExhausted = 8,
    /// 12: unknown method or message encoding.
    Unimplemented = 12,
    /// 13: a contained bug of the extension.
    Internal = 13,
    /// 14: shutting down, or the body budget is exhausted. Retryable.
    Unavailable = 14,
}

impl Code {
    /// The code of a decode failure.
    pub fn for_error(error: &DecodeError) -> Code {
        match error {
            DecodeError::UnsupportedEncoding(_) | DecodeError::UnsupportedMediaType(_) => {
                Code::Unimplemented
            }
            DecodeError::TooLarge { .. } | DecodeError::DecompressedTooLarge { .. } => {
                Code::ResourceExhausted
            }
            DecodeError::BadCompression { .. }
            | DecodeError::BadProtobuf(_)
            | DecodeError::BadJson(_) => Code::InvalidArgument,
            DecodeError::Internal => Code::Internal,
        }
    }
}

/// A refusal: a code and a message for the client.
#[derive(Debug)]
struct Refusal {
    code: Code,
    message: String,
    /// Counted as a refused request (`None`: not an OTLP request, or the client went away).
    reason: Option<RejectReason>,
}

impl Refusal {
    fn from_decode(error: &DecodeError) -> Refusal {
        Refusal {
            code: Code::for_error(error),
            message: error.to_string(),
            reason: Some(error.reject_reason()),
        }
    }

    fn malformed(message: String) -> Refusal {
        Refusal {
            code: Code::InvalidArgument,
            message,
            reason: Some(RejectReason::Malformed),
        }
    }
}

/// `application/grpc`, with or without a `+proto` suffix or parameters.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let media_type = v.split(';').next().unwrap_or("").trim();
            let lower = media_type.to_ascii_lowercase();
            lower == "application/grpc" || lower.starts_with("application/grpc+")
        })
}

/// Handles one call (a request [`is_grpc`] accepted). Never fails: every refusal is a response.
pub(crate) async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<GrpcBody> {
    if req.method() != Method::POST {
        let mut response = http_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("gRPC needs POST, not {}", req.method()),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let is_grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "application/grpc"
                || v.starts_with("application/grpc+")
                || v.starts_with("application/grpc;")
        });
    if !is_grpc {
        return http_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this is the OTLP/gRPC port: send application/grpc (OTLP/HTTP is on its own port)",
        );
    }
    if req.uri().path() != EXPORT_PATH {
        warn!(
            receiver = "OTLP/gRPC",
            path = req.uri().path(),
            "unknown gRPC method"
        );
        let message = format!(
            "unknown method {}: this server implements {}",
            req.uri().path().chars().take(128).collect::<String>(),
            &EXPORT_PATH[1..]
        );
        return grpc_error(Code::Unimplemented, &message);
    }
    match export(req, shared).await {
        Ok(response) => response,
        Err(refusal) => {
            if let Some(reason) = refusal.reason {
                shared.buffer.stats().add_request_rejected(reason);
                warn!(
                    receiver = "OTLP/gRPC",
                    code = refusal.code as i32,
                    reason = reason.as_str(),
                    "export call refused"
                );
            }
            // The message can quote a fragment of the payload: debug level only.
            debug!(receiver = "OTLP/gRPC", message = %refusal.message, "refusal detail");
            grpc_error(refusal.code, &refusal.message)
        }
    }
}

async fn export(req: Request<Incoming>, shared: &Shared) -> Result<Response<GrpcBody>, Refusal> {
    let (parts, body) = req.into_parts();
    let compression = match parts.headers.get("grpc-encoding") {
        None => Compression::Identity,
        Some(v) => match v.to_str() {
            Ok(s) => Compression::from_header(Some(s)),
            Err(_) => Err(DecodeError::UnsupportedEncoding("(not text)".to_owned())),
        }
        .map_err(|e| Refusal::from_decode(&e))?,
    };
    let limit = shared.max_request_bytes;
    // `_held` is the message's share of the body budget: given back once the call is answered.
    let (compressed, message, _held) = read_message(body, shared, limit).await?;
    if compressed && compression == Compression::Identity {
        return Err(Refusal::malformed(
            "message marked compressed but no grpc-encoding was sent".to_owned(),
        ));
    }
    let compression = if compressed {
        compression
    } else {
        Compression::Identity
    };
    let batch = decode::decode_contained(message, compression, limit, Format::Protobuf)
        .map_err(|e| Refusal::from_decode(&e))?;

    let spans = batch.spans;
    if batch.is_empty() {
        debug!(receiver = "OTLP/gRPC", "empty export call");
        return Ok(grpc_ok(0, ""));
    }
    match shared.push(batch).await {
        Ok(outcome) => {
            debug!(
                receiver = "OTLP/gRPC",
                spans,
                accepted = outcome.accepted,
                rejected = outcome.rejected,
                compression = compression.as_str(),
                "export call received"
            );
            if outcome.rejected > 0 {
                warn!(
                    receiver = "OTLP/gRPC",
                    rejected = outcome.rejected,
                    "span buffer full; answered with partial success"
                );
                Ok(grpc_ok(outcome.rejected, &partial_success_message(outcome)))
            } else {
                Ok(grpc_ok(0, ""))
            }
        }
        Err(closed) => {
            warn!(
                receiver = "OTLP/gRPC",
                spans, "span buffer closed; spans refused"
            );
            Err(Refusal {
                code: Code::Unavailable,
                message: format!("{closed}: the extension is shutting down"),
                reason: None,
            })
        }
    }
}

/// Reads the one length-prefixed message of a unary call. The declared length is checked
/// against `limit` as soon as the 5-byte prefix has arrived; the message's buffer then grows as
/// its bytes arrive (up to the declared length), taking them from the body budget. The permit
/// returned holds that share: keep it until the call is answered.
async fn read_message<'a>(
    mut body: Incoming,
    shared: &'a Shared,
    limit: usize,
) -> Result<(bool, Bytes, Option<tokio::sync::SemaphorePermit<'a>>), Refusal> {
    let mut buf = BodyBuffer::new(&shared.limits.body_budget, limit.saturating_add(5), Some(5));
    let mut header: Option<(bool, usize)> = None;
    loop {
        let frame = match next_frame(&mut body, shared.limits.stall_timeout).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(BodyError::Stalled) => {
                return Err(Refusal {
                    code: Code::DeadlineExceeded,
                    message: "no byte of the message arrived in time".to_owned(),
                    reason: None,
                });
            }
            Err(error) => {
                let message = match error {
                    BodyError::Transport(error) => format!("request stream broken: {error}"),
                    _ => "request stream broken".to_owned(),
                };
                return Err(Refusal {
                    code: Code::InvalidArgument,
                    message,
                    reason: None,
                });
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let mut data: &[u8] = &data;
        while !data.is_empty() {
            let len_now = buf.as_slice().len();
            let cap = header.map_or(5, |(_, len)| 5 + len);
            if len_now == cap {
                return Err(Refusal::malformed(
                    "more than one message in a unary call".to_owned(),
                ));
            }
            let take = data.len().min(cap - len_now);
            buf.extend(&data[..take])
                .await
                .map_err(|shortfall| match shortfall {
                    Shortfall::Busy => busy_refusal(shared),
                    Shortfall::OverCap => Refusal::from_decode(&DecodeError::TooLarge { limit }),
                })?;
            data = &data[take..];
            if header.is_none() && buf.as_slice().len() == 5 {
                let prefix = buf.as_slice();
                let compressed = match prefix[0] {
                    0 => false,
                    1 => true,
                    flag => {
                        return Err(Refusal::malformed(format!(
                            "invalid compressed flag {flag} in the message prefix"
                        )));
                    }
                };
                let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                if len > limit {
                    return Err(Refusal::from_decode(&DecodeError::TooLarge { limit }));
                }
                header = Some((compressed, len));
                buf.set_hint(5 + len);
            }
        }
    }
    let (buf, held) = buf.finish();
    match header {
        None if buf.is_empty() => Err(Refusal::malformed("the call carries no message".to_owned())),
        None => Err(Refusal::malformed(format!(
            "truncated message prefix: {} of 5 bytes",
            buf.len()
        ))),
        Some((_, len)) if buf.len() < 5 + len => Err(Refusal::malformed(format!(
            "truncated message: {} of {len} bytes",
            buf.len() - 5
        ))),
        Some((compressed, _)) => Ok((compressed, Bytes::from(buf).slice(5..), held)),
    }
}

/// The body budget could not give a message its bytes: retryable, counted as a refused call.
fn busy_refusal(shared: &Shared) -> Refusal {
    warn!(
        receiver = "OTLP/gRPC",
        budget = shared.limits.body_budget.capacity_bytes(),
        "request bodies being read use the whole budget; export call refused, retryable"
    );
    Refusal {
        code: Code::Unavailable,
        message: "otel-xray is reading as many request bodies as its memory budget allows \
                  (OTEL_XRAY_MAX_IN_FLIGHT_BYTES); retry shortly"
            .to_owned(),
        reason: Some(RejectReason::Busy),
    }
}

fn grpc_headers(headers: &mut HeaderMap) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static(ACCEPT_ENCODING),
    );
}

/// OK with a length-prefixed `ExportTraceServiceResponse` and `grpc-status: 0` trailers.
fn grpc_ok(rejected: usize, message: &str) -> Response<GrpcBody> {
    let encoded = decode::encode_response(Format::Protobuf, rejected, message);
    let mut framed = Vec::with_capacity(5 + encoded.len());
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(encoded.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&encoded);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from(framed))
        .with_trailers(std::future::ready(Some(Ok::<_, Infallible>(trailers))))
        .boxed();
    let mut response = Response::new(body);
    grpc_headers(response.headers_mut());
    response
}

/// A trailers-only error response.
fn grpc_error(code: Code, message: &str) -> Response<GrpcBody> {
    let mut response = Response::new(Empty::new().boxed());
    let headers = response.headers_mut();
    grpc_headers(headers);
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", value);
    }
    response
}

/// A plain HTTP error, for requests that are not gRPC at all.
fn http_error(status: StatusCode, message: &str) -> Response<GrpcBody> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
pub fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_percent_encoding() {
        assert_eq!(percent_encode("plain text"), "plain text");
        assert_eq!(percent_encode("100% sure"), "100%25 sure");
        assert_eq!(percent_encode("line\nbreak"), "line%0Abreak");
        assert_eq!(percent_encode("café"), "caf%C3%A9");
    }

    #[test]
    fn codes_for_decode_errors() {
        assert_eq!(
            Code::for_error(&DecodeError::TooLarge { limit: 1 }),
            Code::ResourceExhausted
        );
        assert_eq!(
            Code::for_error(&DecodeError::DecompressedTooLarge { limit: 1 }),
            Code::ResourceExhausted
        );
        assert_eq!(
            Code::for_error(&DecodeError::UnsupportedEncoding("snappy".into())),
            Code::Unimplemented
        );
        assert_eq!(
            Code::for_error(&DecodeError::BadProtobuf("x".into())),
            Code::InvalidArgument
        );
    }
}
