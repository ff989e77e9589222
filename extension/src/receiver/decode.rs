//! Pure decoding of OTLP trace requests, shared by the HTTP and gRPC receivers: content types,
//! content encodings, decompression with a hard output cap, protobuf and OTLP/JSON bodies, and
//! the encoding of responses (`ExportTraceServiceResponse`, `google.rpc.Status`).
//!
//! No I/O here: bytes in, messages or [`DecodeError`]s out.
//!
//! OTLP/JSON follows the OTLP specification (hex trace and span ids, lowerCamelCase or proto field
//! names, integer enums or their names, 64-bit integers as strings or numbers, `null` for any
//! field, unknown fields ignored), mapped by hand in [`super::otlp_json`] rather than through
//! `opentelemetry-proto`'s serde derives (which cost 150 KB of the binary).

use std::io::Read;

use bytes::Bytes;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::buffer::SpanBatch;
use crate::stats::RejectReason;

/// How the request body is serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Binary protobuf, `application/x-protobuf`.
    Protobuf,
    /// OTLP/JSON, `application/json`.
    Json,
}

impl Format {
    /// The format named by a `Content-Type` value; parameters such as `; charset=utf-8` are
    /// ignored. `None` for anything else.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let media_type = value.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/x-protobuf")
            || media_type.eq_ignore_ascii_case("application/protobuf")
        {
            Some(Format::Protobuf)
        } else if media_type.eq_ignore_ascii_case("application/json") {
            Some(Format::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Protobuf => "application/x-protobuf",
            Format::Json => "application/json",
        }
    }
}

/// How the body is compressed (`Content-Encoding`, `grpc-encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    Identity,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// zlib (RFC 1950), or raw deflate (RFC 1951) as some HTTP clients send it.
    Deflate,
}

impl Compression {
    /// The compression named by a header; absent or empty means identity.
    pub fn from_header(value: Option<&str>) -> Result<Compression, DecodeError> {
        let Some(raw) = value else {
            return Ok(Compression::Identity);
        };
        let name = raw.trim();
        if name.is_empty() || name.eq_ignore_ascii_case("identity") {
            Ok(Compression::Identity)
        } else if name.eq_ignore_ascii_case("gzip") || name.eq_ignore_ascii_case("x-gzip") {
            Ok(Compression::Gzip)
        } else if name.eq_ignore_ascii_case("deflate") {
            Ok(Compression::Deflate)
        } else {
            Err(DecodeError::UnsupportedEncoding(truncate_for_message(raw)))
        }
    }

    /// The name used in headers and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Identity => "identity",
            Compression::Gzip => "gzip",
            Compression::Deflate => "deflate",
        }
    }
}

/// Why a request could not be decoded. The receivers map each to an HTTP status or gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// `Content-Type` is neither protobuf nor JSON.
    #[error("unsupported content type {0:?}: send application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// `Content-Encoding` / `grpc-encoding` names a compression this receiver does not know.
    #[error("unsupported content encoding {0:?}: send gzip, deflate or identity")]
    UnsupportedEncoding(String),
    /// The body as received is larger than the limit.
    #[error("request body larger than the limit of {limit} bytes (OTEL_XRAY_MAX_REQUEST_BYTES)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body inflates to more than the limit; inflating stopped there.
    #[error(
        "decompressed request body larger than the limit of {limit} bytes (OTEL_XRAY_MAX_REQUEST_BYTES)"
    )]
    DecompressedTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The compressed body is corrupt or truncated.
    #[error("cannot decompress the {compression} body: {reason}")]
    BadCompression {
        /// `gzip` or `deflate`.
        compression: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// Not a protobuf `ExportTraceServiceRequest`.
    #[error("cannot decode the protobuf ExportTraceServiceRequest: {0}")]
    BadProtobuf(String),
    /// Not an OTLP/JSON `ExportTraceServiceRequest`.
    #[error("cannot decode the OTLP/JSON ExportTraceServiceRequest: {0}")]
    BadJson(String),
    /// A bug of the extension while decoding it was contained (contain.rs).
    #[error("internal error of otel-xray while decoding the request; it was dropped and counted")]
    Internal,
}

impl DecodeError {
    /// How the refusal is counted.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            DecodeError::UnsupportedMediaType(_) | DecodeError::UnsupportedEncoding(_) => {
                RejectReason::UnsupportedMediaType
            }
            DecodeError::TooLarge { .. } | DecodeError::DecompressedTooLarge { .. } => {
                RejectReason::TooLarge
            }
            DecodeError::BadCompression { .. }
            | DecodeError::BadProtobuf(_)
            | DecodeError::BadJson(_) => RejectReason::Malformed,
            DecodeError::Internal => RejectReason::Internal,
        }
    }
}

/// [`decompress`] then [`decode_batch`], with a bug in either contained: it costs this request
/// ([`DecodeError::Internal`]) and nothing else.
pub fn decode_contained(
    raw: Bytes,
    compression: Compression,
    limit: usize,
    format: Format,
) -> Result<SpanBatch, DecodeError> {
    crate::contain::contain("decoding an OTLP request", || {
        crate::contain::inject("receiver", &raw);
        decompress(raw, compression, limit).and_then(|body| decode_batch(body, format))
    })
    .unwrap_or(Err(DecodeError::Internal))
}

/// The output would pass the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OverCap;

/// Appends `data` to `out` unless that would make `out` longer than `cap`. Grows the allocation
/// by doubling, but never beyond `cap` bytes of capacity.
pub(crate) fn extend_capped(out: &mut Vec<u8>, data: &[u8], cap: usize) -> Result<(), OverCap> {
    let needed = out.len().checked_add(data.len()).ok_or(OverCap)?;
    if needed > cap {
        return Err(OverCap);
    }
    if needed > out.capacity() {
        let target = out
            .capacity()
            .saturating_mul(2)
            .max(needed)
            .max(16 * 1024)
            .min(cap);
        out.reserve_exact(target - out.len());
    }
    out.extend_from_slice(data);
    Ok(())
}

/// Decompresses `body`, refusing anything that inflates past `limit` bytes without inflating
/// further (a gzip bomb costs at most `limit` bytes of memory and the time to inflate them).
/// An identity body is only checked against the limit.
pub fn decompress(
    body: Bytes,
    compression: Compression,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    match compression {
        Compression::Identity => {
            if body.len() > limit {
                Err(DecodeError::TooLarge { limit })
            } else {
                Ok(body)
            }
        }
        Compression::Gzip => inflate(MultiGzDecoder::new(&body[..]), compression, limit),
        Compression::Deflate => {
            if looks_like_zlib(&body) {
                inflate(ZlibDecoder::new(&body[..]), compression, limit)
            } else {
                inflate(DeflateDecoder::new(&body[..]), compression, limit)
            }
        }
    }
}

/// RFC 1950 header: method 8 (deflate), window ≤ 32 KiB, check bits.
fn looks_like_zlib(body: &[u8]) -> bool {
    match body {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) * 256 + u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

fn inflate<R: Read>(
    mut reader: R,
    compression: Compression,
    limit: usize,
) -> Result<Bytes, DecodeError> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DecodeError::BadCompression {
                    compression: compression.as_str(),
                    reason: e.to_string(),
                });
            }
        };
        extend_capped(&mut out, &chunk[..n], limit)
            .map_err(|_| DecodeError::DecompressedTooLarge { limit })?;
    }
    // The body is buffered until the next flush: give back what doubling left over.
    out.shrink_to_fit();
    Ok(Bytes::from(out))
}

/// Decodes an `ExportTraceServiceRequest`.
pub fn decode_request(
    body: &[u8],
    format: Format,
) -> Result<ExportTraceServiceRequest, DecodeError> {
    match format {
        Format::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| DecodeError::BadProtobuf(e.to_string())),
        Format::Json => decode_json(body),
    }
}

/// Checks that `body` is a protobuf `ExportTraceServiceRequest` and counts its spans. The
/// receivers buffer the body itself; this is the only place that decides what is accepted.
pub fn validate_protobuf(body: &[u8]) -> Result<usize, DecodeError> {
    // No allocation; accepts exactly what prost's decode accepts (tests/otlp_wire_props.rs).
    crate::otlp_wire::validate_request(body).map_err(|e| DecodeError::BadProtobuf(e.to_string()))
}

/// A decompressed body in the buffer's form: a protobuf body validated and kept as it is (a
/// slice of the same allocation, no copy), an OTLP/JSON body decoded and encoded as protobuf.
pub fn decode_batch(body: Bytes, format: Format) -> Result<SpanBatch, DecodeError> {
    match format {
        Format::Protobuf => {
            let spans = validate_protobuf(&body)?;
            Ok(SpanBatch::encoded(body, spans))
        }
        Format::Json => Ok(SpanBatch::new(decode_json(&body)?.resource_spans)),
    }
}

fn decode_json(body: &[u8]) -> Result<ExportTraceServiceRequest, DecodeError> {
    super::otlp_json::decode_request(body).map_err(|e| DecodeError::BadJson(e.to_string()))
}

/// `google.rpc.Status`, the body of OTLP/HTTP error responses (`details` left out).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RpcStatus {
    /// The gRPC status code that corresponds to the failure.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// A developer-facing message in English.
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The success (or partial success) response body. `rejected` spans > 0 sets `partial_success`.
pub fn encode_response(format: Format, rejected: usize, error_message: &str) -> Bytes {
    let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: error_message.to_owned(),
    });
    match format {
        Format::Protobuf => {
            Bytes::from(ExportTraceServiceResponse { partial_success }.encode_to_vec())
        }
        // Built by hand so that success is `{}` rather than `{"partialSuccess":null}`.
        // `rejectedSpans` is a JSON number: the protobuf JSON mapping accepts numbers and
        // strings for int64, but some SDKs (opentelemetry-otlp's serde types) read only numbers.
        Format::Json => {
            let body = match partial_success {
                None => serde_json::json!({}),
                Some(p) => serde_json::json!({
                    "partialSuccess": {
                        "rejectedSpans": p.rejected_spans,
                        "errorMessage": p.error_message,
                    }
                }),
            };
            Bytes::from(body.to_string())
        }
    }
}

/// An error response body: `google.rpc.Status` in the request's format.
pub fn encode_status(format: Format, code: i32, message: &str) -> Bytes {
    match format {
        Format::Protobuf => Bytes::from(
            RpcStatus {
                code,
                message: message.to_owned(),
            }
            .encode_to_vec(),
        ),
        Format::Json => {
            Bytes::from(serde_json::json!({ "code": code, "message": message }).to_string())
        }
    }
}

/// Header values quoted in error messages are cut to a readable length.
fn truncate_for_message(raw: &str) -> String {
    raw.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression as Level;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    use serde_json::Value;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut enc = GzEncoder::new(Vec::new(), Level::default());
        enc.write_all(data).unwrap();
        Bytes::from(enc.finish().unwrap())
    }

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/receiver/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::from_content_type("application/x-protobuf"),
            Some(Format::Protobuf)
        );
        assert_eq!(
            Format::from_content_type("Application/X-Protobuf; charset=binary"),
            Some(Format::Protobuf)
        );
        assert_eq!(
            Format::from_content_type("application/protobuf"),
            Some(Format::Protobuf)
        );
        assert_eq!(
            Format::from_content_type("application/json; charset=utf-8"),
            Some(Format::Json)
        );
        assert_eq!(
            Format::from_content_type(" application/json "),
            Some(Format::Json)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
        assert_eq!(Format::from_content_type("application/grpc"), None);
        assert_eq!(Format::from_content_type(""), None);
    }

    #[test]
    fn content_encodings() {
        assert_eq!(Compression::from_header(None), Ok(Compression::Identity));
        assert_eq!(
            Compression::from_header(Some("")),
            Ok(Compression::Identity)
        );
        assert_eq!(
            Compression::from_header(Some("IDENTITY")),
            Ok(Compression::Identity)
        );
        assert_eq!(
            Compression::from_header(Some("gzip")),
            Ok(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_header(Some(" x-gzip")),
            Ok(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_header(Some("deflate")),
            Ok(Compression::Deflate)
        );
        let err = Compression::from_header(Some("br")).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedEncoding("br".into()));
        assert_eq!(err.reject_reason(), RejectReason::UnsupportedMediaType);
        assert!(err.to_string().contains("\"br\""));
    }

    #[test]
    fn identity_is_checked_against_the_limit() {
        let body = Bytes::from_static(b"0123456789");
        assert_eq!(
            decompress(body.clone(), Compression::Identity, 10).unwrap(),
            body
        );
        let err = decompress(body, Compression::Identity, 9).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { limit: 9 });
        assert_eq!(err.reject_reason(), RejectReason::TooLarge);
    }

    #[test]
    fn gzip_round_trip_and_multiple_members() {
        let data = b"hello otlp".repeat(1000);
        assert_eq!(
            decompress(gzip(&data), Compression::Gzip, data.len()).unwrap(),
            Bytes::from(data.clone())
        );
        let mut two = gzip(b"first ").to_vec();
        two.extend_from_slice(&gzip(b"second"));
        assert_eq!(
            decompress(Bytes::from(two), Compression::Gzip, 100).unwrap(),
            Bytes::from_static(b"first second")
        );
    }

    #[test]
    fn deflate_accepts_zlib_and_raw() {
        let data = b"deflated spans".repeat(50);
        let mut z = ZlibEncoder::new(Vec::new(), Level::default());
        z.write_all(&data).unwrap();
        let zlib = Bytes::from(z.finish().unwrap());
        assert_eq!(
            decompress(zlib, Compression::Deflate, 10_000).unwrap(),
            Bytes::from(data.clone())
        );
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), Level::default());
        r.write_all(&data).unwrap();
        let raw = Bytes::from(r.finish().unwrap());
        assert_eq!(
            decompress(raw, Compression::Deflate, 10_000).unwrap(),
            Bytes::from(data)
        );
    }

    #[test]
    fn gzip_bomb_is_refused_at_the_cap_without_inflating_it() {
        // 10 MB of zeros compress to about 10 KB.
        let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
        let limit = 64 * 1024;
        let err = decompress(bomb, Compression::Gzip, limit).unwrap_err();
        assert_eq!(err, DecodeError::DecompressedTooLarge { limit });
        assert_eq!(err.reject_reason(), RejectReason::TooLarge);
    }

    #[test]
    fn inflate_never_allocates_past_the_cap() {
        let limit = 100_000;
        let mut out = Vec::new();
        let data = vec![7u8; 30_000];
        for _ in 0..3 {
            extend_capped(&mut out, &data, limit).unwrap();
            assert!(out.capacity() <= limit, "capacity {}", out.capacity());
        }
        assert_eq!(extend_capped(&mut out, &data, limit), Err(OverCap));
        extend_capped(&mut out, &data[..10_000], limit).unwrap();
        assert_eq!(out.len(), limit);
        assert_eq!(out.capacity(), limit);
        assert_eq!(extend_capped(&mut out, &[1], limit), Err(OverCap));
    }

    #[test]
    fn truncated_or_corrupt_gzip_is_malformed() {
        let full = gzip(&b"some spans".repeat(100));
        let truncated = full.slice(..full.len() / 2);
        let err = decompress(truncated, Compression::Gzip, 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::BadCompression {
                    compression: "gzip",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.reject_reason(), RejectReason::Malformed);
        let err = decompress(
            Bytes::from_static(b"not gzip at all"),
            Compression::Gzip,
            1 << 20,
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::BadCompression { .. }), "{err:?}");
    }

    #[test]
    fn protobuf_decodes_and_garbage_is_malformed() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![Default::default()],
        };
        let decoded = decode_request(&req.encode_to_vec(), Format::Protobuf).unwrap();
        assert_eq!(decoded, req);
        assert_eq!(
            decode_request(&[], Format::Protobuf).unwrap(),
            ExportTraceServiceRequest::default()
        );
        let err = decode_request(&[0x0a, 0xff, 0xff, 0x01], Format::Protobuf).unwrap_err();
        assert!(matches!(err, DecodeError::BadProtobuf(_)), "{err:?}");
        assert_eq!(err.reject_reason(), RejectReason::Malformed);
    }

    #[test]
    fn json_as_the_node_exporter_sends_it() {
        let req = decode_request(&fixture("node_http_json.json"), Format::Json).unwrap();
        let rs = &req.resource_spans[0];
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        let server = &spans[0];
        assert_eq!(
            server.trace_id,
            [
                0x5b, 0x8e, 0xff, 0xf7, 0x98, 0x03, 0x81, 0x03, 0xd2, 0x69, 0xb6, 0x33, 0x81, 0x3f,
                0xc6, 0x0c
            ]
        );
        assert_eq!(
            server.span_id,
            [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert!(server.parent_span_id.is_empty());
        assert_eq!(server.kind, SpanKind::Server as i32);
        assert_eq!(server.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(server.end_time_unix_nano, 1_700_000_000_120_000_123);
        assert_eq!(server.flags, 257);
        let status = server.status.as_ref().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "cart service failed");
        let attr = |key: &str| {
            server
                .attributes
                .iter()
                .find(|kv| kv.key == key)
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.clone())
        };
        assert_eq!(attr("http.response.status_code"), Some(Any::IntValue(500)));
        assert_eq!(
            attr("http.request.method"),
            Some(Any::StringValue("GET".into()))
        );
        assert_eq!(attr("sampling.ratio"), Some(Any::DoubleValue(0.25)));
        assert_eq!(attr("cache.hit"), Some(Any::BoolValue(false)));
        assert!(matches!(attr("cart.items"), Some(Any::ArrayValue(a)) if a.values.len() == 2));
        let event = &server.events[0];
        assert_eq!(event.name, "exception");
        assert_eq!(event.time_unix_nano, 1_700_000_000_100_000_000);
        let child = &spans[1];
        assert_eq!(child.parent_span_id, server.span_id);
        assert_eq!(child.kind, SpanKind::Client as i32);
        assert_eq!(child.links.len(), 1);
        assert_eq!(child.links[0].span_id.len(), 8);
        let resource = rs.resource.as_ref().unwrap();
        assert!(
            resource
                .attributes
                .iter()
                .any(|kv| kv.key == "service.name")
        );
    }

    #[test]
    fn json_as_the_python_exporter_sends_it() {
        let req = decode_request(&fixture("python_http_json.json"), Format::Json).unwrap();
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].trace_id.len(), 16);
        assert_eq!(spans[0].parent_span_id, spans[1].span_id);
        assert_eq!(spans[0].kind, SpanKind::Client as i32);
        assert_eq!(spans[1].kind, SpanKind::Server as i32);
        assert!(spans[1].start_time_unix_nano > 1_600_000_000_000_000_000);
        let code = spans[1]
            .attributes
            .iter()
            .find(|kv| kv.key == "http.response.status_code")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone());
        assert_eq!(code, Some(Any::IntValue(500)));
    }

    #[test]
    fn json_accepts_upper_case_hex_and_numeric_times() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174",
            "name":"x","kind":1,"startTimeUnixNano":1700000000000000000,"endTimeUnixNano":"1700000000000000001"}]}]}]}"#;
        let req = decode_request(body, Format::Json).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id[0], 0x5b);
        assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_700_000_000_000_000_001);
    }

    #[test]
    fn json_second_pass_accepts_nulls_enum_names_and_string_counters() {
        let body =
            br#"{"resourceSpans":[{"resource":null,"schemaUrl":null,"scopeSpans":[{"spans":[{
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "parentSpanId":null,"traceState":null,"name":"x","kind":"SPAN_KIND_CONSUMER",
            "startTimeUnixNano":"1","endTimeUnixNano":"2","droppedAttributesCount":"3",
            "status":{"code":"STATUS_CODE_OK","message":null}}]}]}]}"#;
        let req = decode_request(body, Format::Json).unwrap();
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.kind, SpanKind::Consumer as i32);
        assert_eq!(span.dropped_attributes_count, 3);
        assert_eq!(span.status.as_ref().unwrap().code, StatusCode::Ok as i32);
        assert!(span.parent_span_id.is_empty());
    }

    #[test]
    fn json_unknown_fields_are_ignored() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",
            "spanId":"eee19b7ec3c1b174","name":"x","someFutureField":{"a":[1,2]}}],"futureScopeField":1}]}],"extra":true}"#;
        let req = decode_request(body, Format::Json).unwrap();
        assert_eq!(req.resource_spans[0].scope_spans[0].spans[0].name, "x");
    }

    #[test]
    fn bad_json_is_malformed_with_a_useful_message() {
        let err = decode_request(br#"{"resourceSpans": ["#, Format::Json).unwrap_err();
        assert!(
            matches!(err, DecodeError::BadJson(ref m) if m.contains("line 1")),
            "{err}"
        );
        assert_eq!(err.reject_reason(), RejectReason::Malformed);
        // Errors past the syntax name the field (otlp_json.rs's tests cover every class).
        let err = decode_request(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz-not-hex"}]}]}]}"#,
            Format::Json,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode the OTLP/JSON ExportTraceServiceRequest: \
             resourceSpans[0].scopeSpans[0].spans[0].traceId: not hex: 'z' at 0"
        );
        let err = decode_request(b"", Format::Json).unwrap_err();
        assert!(matches!(err, DecodeError::BadJson(_)));
        let err = decode_request(
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_NOPE"}]}]}]}"#,
            Format::Json,
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::BadJson(_)));
    }

    #[test]
    fn responses_in_both_formats() {
        let ok = encode_response(Format::Protobuf, 0, "");
        assert_eq!(
            ExportTraceServiceResponse::decode(ok).unwrap(),
            ExportTraceServiceResponse::default()
        );
        let partial = encode_response(Format::Protobuf, 3, "full");
        let decoded = ExportTraceServiceResponse::decode(partial).unwrap();
        let p = decoded.partial_success.unwrap();
        assert_eq!((p.rejected_spans, p.error_message.as_str()), (3, "full"));

        assert_eq!(
            encode_response(Format::Json, 0, ""),
            Bytes::from_static(b"{}")
        );
        let json: Value =
            serde_json::from_slice(&encode_response(Format::Json, 3, "full")).unwrap();
        assert_eq!(json["partialSuccess"]["rejectedSpans"], 3);
        assert_eq!(json["partialSuccess"]["errorMessage"], "full");
        // The serde types (what the Rust SDK parses responses with) read our JSON back.
        let back: ExportTraceServiceResponse =
            serde_json::from_slice(&encode_response(Format::Json, 0, "")).unwrap();
        assert_eq!(back, ExportTraceServiceResponse::default());
        let back: ExportTraceServiceResponse =
            serde_json::from_slice(&encode_response(Format::Json, 3, "full")).unwrap();
        assert_eq!(back.partial_success.unwrap().rejected_spans, 3);
    }

    #[test]
    fn status_in_both_formats() {
        let st = RpcStatus::decode(encode_status(Format::Protobuf, 3, "bad")).unwrap();
        assert_eq!(
            st,
            RpcStatus {
                code: 3,
                message: "bad".into()
            }
        );
        let json: Value = serde_json::from_slice(&encode_status(Format::Json, 8, "big")).unwrap();
        assert_eq!(json, serde_json::json!({"code": 8, "message": "big"}));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bodies_never_panic_and_respect_the_limit(
                body in proptest::collection::vec(any::<u8>(), 0..2048),
                limit in 0usize..4096,
            ) {
                let body = Bytes::from(body);
                for compression in [Compression::Identity, Compression::Gzip, Compression::Deflate] {
                    if let Ok(out) = decompress(body.clone(), compression, limit) {
                        prop_assert!(out.len() <= limit);
                    }
                }
                let _ = decode_request(&body, Format::Protobuf);
                let _ = decode_request(&body, Format::Json);
            }

            #[test]
            fn gzip_inflates_exactly_up_to_the_limit(
                data in proptest::collection::vec(any::<u8>(), 0..8192),
                slack in 0usize..64,
            ) {
                let packed = gzip(&data);
                prop_assert_eq!(
                    decompress(packed.clone(), Compression::Gzip, data.len() + slack).unwrap(),
                    Bytes::from(data.clone())
                );
                if !data.is_empty() {
                    let limit = data.len() - 1;
                    prop_assert_eq!(
                        decompress(packed, Compression::Gzip, limit).unwrap_err(),
                        DecodeError::DecompressedTooLarge { limit }
                    );
                }
            }
        }
    }
}
