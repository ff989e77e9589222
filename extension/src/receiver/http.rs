//! OTLP/HTTP: `POST /v1/traces` on 127.0.0.1:4318, protobuf or JSON, gzip/deflate or identity,
//! Content-Length or chunked bodies, HTTP/1.1 keep-alive and h2c (prior knowledge). Every request
//! that is not `application/grpc` ends up here, on either port.
//!
//! | request                                              | response                              |
//! |------------------------------------------------------|---------------------------------------|
//! | `GET /otel-xray/health`                              | 200 `{"name":"otel-xray","version"}`  |
//! | good body                                            | 200 `ExportTraceServiceResponse`      |
//! | good body, buffer full                               | 200 with `partial_success`            |
//! | other path                                           | 404                                   |
//! | `/v1/traces`, not POST                               | 405, `Allow: POST`                    |
//! | Content-Type not protobuf/JSON                       | 415 (plain text)                      |
//! | unknown Content-Encoding                             | 415                                   |
//! | Content-Length, body or inflated body over the cap   | 413                                   |
//! | undecodable body or compression                      | 400                                   |
//! | body budget exhausted (`OTEL_XRAY_MAX_IN_FLIGHT_BYTES`) | 429, `Retry-After: 1` (retryable)  |
//! | no body byte for the stall timeout                   | 408, connection closed                |
//! | buffer closed (shutting down)                        | 503                                   |
//!
//! Error bodies are a `google.rpc.Status` in the request's format, as the OTLP spec asks, or
//! plain text where the request's format is unknown.
//!
//! The health check is the Runtime API proxy's, answered here too: the wrapper probes it before
//! it points the function's SDK here when the proxy is off or not answering (docs/wrapper.md).
//! It touches neither the buffer nor the counters.

use bytes::Bytes;
use http::header::{
    ALLOW, CONNECTION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use tracing::{debug, warn};

use super::decode::{self, Compression, DecodeError, Format};
use super::{BodyError, Shared, drain_in_background, partial_success_message, read_capped};
use crate::stats::RejectReason;

/// The only OTLP path served.
pub const TRACES_PATH: &str = "/v1/traces";
/// The extension's health check, the same path and answer as the Runtime API proxy's.
pub const HEALTH_PATH: &str = "/otel-xray/health";

/// Handles one request. Never fails: every refusal is a response.
pub(crate) async fn handle(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let format = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_content_type);

    if parts.uri.path() == HEALTH_PATH {
        return health(&parts.method);
    }
    if parts.uri.path() != TRACES_PATH {
        warn!(
            receiver = "OTLP/HTTP",
            path = parts.uri.path(),
            "request for an unknown path; point the SDK's traces endpoint at /v1/traces"
        );
        return error_response(
            StatusCode::NOT_FOUND,
            format,
            &format!(
                "no OTLP endpoint at {}: send traces to POST {TRACES_PATH}",
                truncated(parts.uri.path())
            ),
        );
    }
    if parts.method != Method::POST {
        warn!(receiver = "OTLP/HTTP", method = %parts.method, "method not allowed");
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            format,
            &format!(
                "method {} not allowed on {TRACES_PATH}: use POST",
                parts.method
            ),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let Some(format) = format else {
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(64)
                    .collect()
            })
            .unwrap_or_else(|| "(none)".to_owned());
        return refuse(
            shared,
            None,
            &DecodeError::UnsupportedMediaType(content_type),
        );
    };
    let compression = match parts.headers.get(CONTENT_ENCODING) {
        None => Ok(Compression::Identity),
        Some(v) => match v.to_str() {
            Ok(s) => Compression::from_header(Some(s)),
            Err(_) => Err(DecodeError::UnsupportedEncoding("(not text)".to_owned())),
        },
    };
    let compression = match compression {
        Ok(c) => c,
        Err(e) => return refuse(shared, Some(format), &e),
    };

    let limit = shared.max_request_bytes;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        // Refused before reading. The connection is not reused, but the body is read and thrown
        // away meanwhile, so the client gets to read the 413 rather than a reset.
        let mut response = refuse(shared, Some(format), &DecodeError::TooLarge { limit });
        if parts.version <= Version::HTTP_11 {
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        drain_in_background(body);
        return response;
    }
    let hint = declared.and_then(|n| usize::try_from(n).ok());
    // `_held` is the body's share of the budget: given back once the request is answered.
    let (raw, _held) = match read_capped(body, shared, limit, hint).await {
        Ok(read) => read,
        Err(BodyError::TooLarge(rest)) => {
            let mut response = refuse(shared, Some(format), &DecodeError::TooLarge { limit });
            if parts.version <= Version::HTTP_11 {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            drain_in_background(rest);
            return response;
        }
        Err(BodyError::Busy(rest)) => {
            shared
                .buffer
                .stats()
                .add_request_rejected(RejectReason::Busy);
            warn!(
                receiver = "OTLP/HTTP",
                budget = shared.limits.body_budget.capacity_bytes(),
                "request bodies being read use the whole budget; export refused, retryable"
            );
            let mut response = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                Some(format),
                "otel-xray is reading as many request bodies as its memory budget allows \
                 (OTEL_XRAY_MAX_IN_FLIGHT_BYTES); retry shortly",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            if parts.version <= Version::HTTP_11 {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            drain_in_background(rest);
            return response;
        }
        Err(BodyError::Stalled) => {
            debug!(
                receiver = "OTLP/HTTP",
                "request body stalled; connection closed"
            );
            let mut response = error_response(
                StatusCode::REQUEST_TIMEOUT,
                Some(format),
                "no byte of the request body arrived in time",
            );
            if parts.version <= Version::HTTP_11 {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
        Err(BodyError::Transport(error)) => {
            // The client went away mid-body; the response will most likely not be read.
            debug!(receiver = "OTLP/HTTP", %error, "request body could not be read");
            return error_response(
                StatusCode::BAD_REQUEST,
                Some(format),
                &format!("request body could not be read: {error}"),
            );
        }
    };
    let batch = match decode::decode_contained(raw, compression, limit, format) {
        Ok(batch) => batch,
        Err(e) => return refuse(shared, Some(format), &e),
    };

    let spans = batch.spans;
    if batch.is_empty() {
        debug!(receiver = "OTLP/HTTP", "empty export request");
        return success(format, 0, "");
    }
    match shared.push(batch).await {
        Ok(outcome) => {
            debug!(
                receiver = "OTLP/HTTP",
                spans,
                accepted = outcome.accepted,
                rejected = outcome.rejected,
                ?format,
                compression = compression.as_str(),
                "export request received"
            );
            if outcome.rejected > 0 {
                warn!(
                    receiver = "OTLP/HTTP",
                    rejected = outcome.rejected,
                    "span buffer full; answered with partial success"
                );
                success(format, outcome.rejected, &partial_success_message(outcome))
            } else {
                success(format, 0, "")
            }
        }
        Err(closed) => {
            warn!(
                receiver = "OTLP/HTTP",
                spans, "span buffer closed; spans refused"
            );
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(format),
                &format!("{closed}: the extension is shutting down"),
            )
        }
    }
}

/// `200 {"name":"otel-xray","version":"…"}` to GET and HEAD; 405 to anything else.
fn health(method: &Method) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            &format!("method {method} not allowed on {HEALTH_PATH}: use GET"),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    debug!(receiver = "OTLP/HTTP", "health check answered");
    let body = serde_json::json!({"name": "otel-xray", "version": env!("CARGO_PKG_VERSION")});
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Counts and logs a refused request and builds its response.
fn refuse(shared: &Shared, format: Option<Format>, error: &DecodeError) -> Response<Full<Bytes>> {
    let reason = error.reject_reason();
    shared.buffer.stats().add_request_rejected(reason);
    let status = status_for(error);
    // The decoder's message can quote a fragment of the payload: debug level only.
    warn!(
        receiver = "OTLP/HTTP",
        status = status.as_u16(),
        reason = reason.as_str(),
        "export request refused"
    );
    debug!(receiver = "OTLP/HTTP", %error, "refusal detail");
    error_response(status, format, &error.to_string())
}

/// The HTTP status of a decode failure.
pub fn status_for(error: &DecodeError) -> StatusCode {
    match error.reject_reason() {
        RejectReason::Malformed => StatusCode::BAD_REQUEST,
        RejectReason::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        RejectReason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        RejectReason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        RejectReason::Busy => StatusCode::TOO_MANY_REQUESTS,
    }
}

/// The gRPC code carried in `Status.code` for an HTTP status (informative only, per the spec).
fn rpc_code_for(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST => 3,          // INVALID_ARGUMENT
        StatusCode::PAYLOAD_TOO_LARGE => 8,    // RESOURCE_EXHAUSTED
        StatusCode::TOO_MANY_REQUESTS => 8,    // RESOURCE_EXHAUSTED
        StatusCode::REQUEST_TIMEOUT => 4,      // DEADLINE_EXCEEDED
        StatusCode::SERVICE_UNAVAILABLE => 14, // UNAVAILABLE
        StatusCode::NOT_FOUND => 5,            // NOT_FOUND
        _ => 12,                               // UNIMPLEMENTED
    }
}

fn success(format: Format, rejected: usize, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(decode::encode_response(
        format, rejected, message,
    )));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    response
}

fn error_response(
    status: StatusCode,
    format: Option<Format>,
    message: &str,
) -> Response<Full<Bytes>> {
    let (body, content_type) = match format {
        Some(format) => (
            decode::encode_status(format, rpc_code_for(status), message),
            format.content_type(),
        ),
        None => (
            Bytes::from(format!("{message}\n")),
            "text/plain; charset=utf-8",
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn truncated(s: &str) -> String {
    s.chars().take(128).collect()
}
