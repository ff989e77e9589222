//! Golden files: `tests/fixtures/translate/<case>.otlp.json` (OTLP/JSON as SDKs send it) →
//! `<case>.xray.json` (the expected documents, pretty-printed in the translator's own key order).
//! An optional `<case>.options.json` holds the `TranslateOptions`.
//!
//! `UPDATE_GOLDEN=1 cargo test -p otel-xray-extension --test translate_golden` rewrites the
//! expected files; otherwise any difference fails. Every document is validated against the X-Ray
//! schema, and every input span must be accounted for.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use otel_xray::xray::{TranslateOptions, translate};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/translate")
}

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Options {
    indexed_attributes: Vec<String>,
    index_all_attributes: bool,
    max_document_bytes: Option<usize>,
    /// Expected counters, checked when present.
    invalid_spans: Option<usize>,
    too_large_spans: Option<usize>,
    truncated_values: Option<usize>,
}

/// Re-indents compact JSON text without parsing it into values, so that key order and number
/// formatting stay exactly as the translator wrote them.
fn pretty(json: &str, out: &mut String, base: usize) {
    let mut indent = base;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, indent: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(indent));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                if matches!(chars.peek(), Some('}') | Some(']')) {
                    out.push(chars.next().unwrap_or(' '));
                } else {
                    indent += 1;
                    newline(out, indent);
                }
            }
            '}' | ']' => {
                indent -= 1;
                newline(out, indent);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(out, indent);
            }
            ':' => out.push_str(": "),
            c => out.push(c),
        }
    }
}

fn run_case(name: &str) -> Result<(), String> {
    let dir = fixtures();
    let input = std::fs::read_to_string(dir.join(format!("{name}.otlp.json")))
        .map_err(|e| e.to_string())?;
    let request: ExportTraceServiceRequest = serde_json::from_str(&input)
        .map_err(|e| format!("{name}.otlp.json does not decode as OTLP/JSON: {e}"))?;
    let options_path = dir.join(format!("{name}.options.json"));
    let opts: Options = if options_path.exists() {
        serde_json::from_str(&std::fs::read_to_string(&options_path).map_err(|e| e.to_string())?)
            .map_err(|e| format!("{name}.options.json: {e}"))?
    } else {
        Options::default()
    };
    let options = TranslateOptions {
        indexed_attributes: opts.indexed_attributes.clone(),
        index_all_attributes: opts.index_all_attributes,
        max_document_bytes: opts
            .max_document_bytes
            .unwrap_or(otel_xray::xray::translate::MAX_DOCUMENT_BYTES),
    };
    let t = translate(&request.resource_spans, &options);

    let input_spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let output_spans: usize = t.documents.iter().map(|d| d.spans).sum();
    assert_eq!(
        output_spans + t.invalid_spans + t.too_large_spans,
        input_spans,
        "{name}: spans lost or duplicated"
    );
    if let Some(n) = opts.invalid_spans {
        assert_eq!(t.invalid_spans, n, "{name}: invalid_spans");
    }
    if let Some(n) = opts.too_large_spans {
        assert_eq!(t.too_large_spans, n, "{name}: too_large_spans");
    }
    if let Some(n) = opts.truncated_values {
        assert_eq!(t.truncated_values, n, "{name}: truncated_values");
    }

    let mut actual = String::from("[");
    for (i, doc) in t.documents.iter().enumerate() {
        common::assert_valid_xray_document(&doc.json);
        assert!(
            doc.json.len() <= options.max_document_bytes,
            "{name}: document over the limit"
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&doc.json).map_err(|e| e.to_string())?;
        assert_eq!(parsed["id"], doc.id.as_str(), "{name}: Document.id");
        assert_eq!(
            parsed["trace_id"],
            doc.trace_id.as_str(),
            "{name}: Document.trace_id"
        );
        actual.push_str(if i == 0 { "\n  " } else { ",\n  " });
        pretty(&doc.json, &mut actual, 1);
    }
    actual.push_str(if t.documents.is_empty() {
        "]\n"
    } else {
        "\n]\n"
    });

    let golden = dir.join(format!("{name}.xray.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &actual).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&golden).map_err(|e| {
        format!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            golden.display()
        )
    })?;
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        return Err(format!(
            "{name}: output differs from {} at line {}:\n  expected: {}\n  actual:   {}\n(UPDATE_GOLDEN=1 regenerates)",
            golden.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("<end>"),
            actual.lines().nth(line).unwrap_or("<end>"),
        ));
    }
    Ok(())
}

#[test]
fn golden_files() {
    let mut cases: Vec<String> = std::fs::read_dir(fixtures())
        .expect("fixtures/translate exists")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".otlp.json"))
                .map(str::to_owned)
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 8,
        "expected at least 8 golden cases, found {}",
        cases.len()
    );
    let failures: Vec<String> = cases.iter().filter_map(|c| run_case(c).err()).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn pretty_printer_keeps_text() {
    let mut out = String::new();
    pretty(r#"{"a":"x,{\"}:","b":[],"c":{"d":[1,2.50]}}"#, &mut out, 0);
    assert_eq!(
        out,
        "{\n  \"a\": \"x,{\\\"}:\",\n  \"b\": [],\n  \"c\": {\n    \"d\": [\n      1,\n      2.50\n    ]\n  }\n}"
    );
}
