//! otel-xray's span hot path, in a crate of its own so that the release profile can optimise it
//! for speed (`opt-level = 3`) while the rest of the extension is optimised for size (`"s"`): with
//! fat LTO a per-package opt-level only holds for code compiled in that package, and the generic
//! code these modules instantiate (`Vec`, slices, iterators) is compiled here
//! (docs/performance.md, "Release profile").
//!
//! - [`otlp_wire`]: the allocation-free validator and the borrowed views of an OTLP
//!   `ExportTraceServiceRequest`.
//! - [`xray`]: OTLP spans → X-Ray segment documents.
//!
//! The extension (`otel-xray-extension`) re-exports both as `otel_xray::otlp_wire` and
//! `otel_xray::xray`.

pub mod otlp_wire;
pub mod xray;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// The number of spans in `resource_spans`.
pub fn count_spans(resource_spans: &[ResourceSpans]) -> usize {
    resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}
