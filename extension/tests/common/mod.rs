//! Helpers shared by the integration tests.
//!
//! [`assert_valid_xray_document`] checks a serialized document against the X-Ray segment document
//! schema in `tests/fixtures/xray-segmentdocument-schema-v1.0.0.json` (JSON Schema draft-04), plus
//! the limits the schema cannot express (64 KiB, and the ids and times every document needs).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

/// X-Ray's limit on one document.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

const SCHEMA: &str = include_str!("../fixtures/xray-segmentdocument-schema-v1.0.0.json");

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(SCHEMA).expect("the X-Ray schema fixture is JSON");
        jsonschema::draft4::new(&schema).expect("the X-Ray schema compiles as draft-04")
    })
}

/// Panics, with every schema error listed, unless `json` is one valid X-Ray segment document:
/// it parses, validates against the schema, is at most 64 KiB, and is either a segment
/// (`trace_id`, no `type`) or an independent subsegment (`type: "subsegment"`, `trace_id`,
/// `parent_id`), with `end_time` or `in_progress`.
pub fn assert_valid_xray_document(json: &str) {
    assert!(
        json.len() <= MAX_DOCUMENT_BYTES,
        "document is {} bytes, over X-Ray's 64 KiB limit",
        json.len()
    );
    let doc: serde_json::Value = match serde_json::from_str(json) {
        Ok(doc) => doc,
        Err(e) => panic!("document is not JSON ({e}): {json}"),
    };
    let errors: Vec<String> = validator()
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "document fails the X-Ray schema: {errors:#?}\n{json}"
    );
    let obj = doc.as_object().expect("schema guarantees an object");
    assert!(
        obj.contains_key("end_time")
            || obj.get("in_progress") == Some(&serde_json::Value::Bool(true)),
        "document has neither end_time nor in_progress: {json}"
    );
    if let Some(t) = obj.get("type") {
        assert_eq!(t, "subsegment", "unknown document type: {json}");
        assert!(
            obj.contains_key("parent_id"),
            "independent subsegment without parent_id: {json}"
        );
    }
    check_subsegments(&doc, json);
}

fn check_subsegments(node: &serde_json::Value, json: &str) {
    if let Some(subs) = node.get("subsegments").and_then(|s| s.as_array()) {
        for sub in subs {
            assert!(
                sub.get("end_time").is_some()
                    || sub.get("in_progress") == Some(&serde_json::Value::Bool(true)),
                "embedded subsegment has neither end_time nor in_progress: {json}"
            );
            check_subsegments(sub, json);
        }
    }
}
