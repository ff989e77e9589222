//! The translator (interface; the implementation is being written).

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// X-Ray's limit on one segment document.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// How spans become documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Attribute keys that become annotations.
    pub indexed_attributes: Vec<String>,
    /// Every eligible attribute becomes an annotation.
    pub index_all_attributes: bool,
    /// Largest document, in bytes (X-Ray: 64 KiB).
    pub max_document_bytes: usize,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            indexed_attributes: Vec::new(),
            index_all_attributes: false,
            max_document_bytes: MAX_DOCUMENT_BYTES,
        }
    }
}

/// One serialized segment or subsegment document, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// X-Ray trace id, `1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx`.
    pub trace_id: String,
    /// The document's id (16 hex).
    pub id: String,
    /// The JSON text.
    pub json: String,
    /// How many OTLP spans this document carries (itself and embedded subsegments).
    pub spans: usize,
}

/// The result of translating a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Translation {
    /// Documents to send.
    pub documents: Vec<Document>,
    /// Spans that could not be translated (invalid ids, …).
    pub invalid_spans: usize,
}

/// Translates resource spans to X-Ray documents.
pub fn translate(resource_spans: &[ResourceSpans], options: &TranslateOptions) -> Translation {
    let _ = (resource_spans, options);
    Translation::default()
}
