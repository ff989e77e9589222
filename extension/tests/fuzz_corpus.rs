//! Replays every fuzz corpus and every crash ever found, on stable Rust without cargo-fuzz.
//!
//! For each target of [`otel_xray::fuzzing::TARGETS`], every file in `fuzz/corpus/<target>/`
//! (seeds from the repository's fixtures, which are real SDK output, plus what fuzzing runs kept)
//! and `fuzz/regressions/<target>/` (inputs that once crashed, kept after the fix) goes through
//! the same entry function the libFuzzer target calls. Documents translated from the OTLP corpora
//! are also checked against the full X-Ray JSON schema, which the fuzz targets only check by its
//! key rules.
//!
//! The seeds are generated from the fixtures by this file; `UPDATE_FUZZ_SEEDS=1 cargo test -p
//! otel-xray-extension --test fuzz_corpus` rewrites them, and otherwise the test fails when a
//! committed seed differs from what the fixtures give.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use flate2::Compression as Level;
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use otel_xray::fuzzing::{self, TARGETS};
use otel_xray::receiver::decode::{Format, decode_request};
use otel_xray::xray::{TranslateOptions, translate};
use prost::Message;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `f` on every input, collecting the files that panicked (with the panic message).
fn replay(f: fn(&[u8]), inputs: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for path in inputs {
        let data = fs::read(path).unwrap();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(&data))) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failures.push(format!("{}: {msg}", path.display()));
        }
    }
    failures
}

#[test]
fn every_corpus_and_regression_input_replays_without_a_crash() {
    let mut failures = Vec::new();
    let mut counts = Vec::new();
    for (name, f) in TARGETS {
        let corpus = files_in(&fuzz_dir().join("corpus").join(name));
        let regressions = files_in(&fuzz_dir().join("regressions").join(name));
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name}/ is empty: run this test with UPDATE_FUZZ_SEEDS=1"
        );
        failures.extend(replay(*f, &corpus));
        failures.extend(replay(*f, &regressions));
        counts.push(format!("{name}: {} + {}", corpus.len(), regressions.len()));
    }
    eprintln!("replayed (corpus + regressions): {}", counts.join(", "));
    assert!(
        failures.is_empty(),
        "crashing inputs:\n{}",
        failures.join("\n")
    );
}

/// The OTLP corpora, decoded and translated, give documents that pass the full schema.
#[test]
fn documents_from_the_otlp_corpora_pass_the_full_schema() {
    let mut documents = 0;
    for (target, format, skip) in [
        ("otlp_protobuf", Format::Protobuf, 0),
        ("otlp_json", Format::Json, 0),
        ("translate", Format::Protobuf, 1),
    ] {
        for dir in ["corpus", "regressions"] {
            for path in files_in(&fuzz_dir().join(dir).join(target)) {
                let data = fs::read(&path).unwrap();
                let Some(body) = data.get(skip..) else {
                    continue;
                };
                let Ok(request) = decode_request(body, format) else {
                    continue;
                };
                for options in [
                    TranslateOptions::default(),
                    TranslateOptions {
                        index_all_attributes: true,
                        max_document_bytes: 2048,
                        ..TranslateOptions::default()
                    },
                ] {
                    for doc in translate(&request.resource_spans, &options).documents {
                        common::assert_valid_xray_document(&doc.json);
                        documents += 1;
                    }
                }
            }
        }
    }
    assert!(documents > 20, "only {documents} documents checked");
}

/// Crash inputs found by fuzzing are kept under the name of a target that exists.
#[test]
fn regression_folders_name_existing_targets() {
    let Ok(entries) = fs::read_dir(fuzz_dir().join("regressions")) else {
        return;
    };
    for entry in entries {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let name = entry.file_name().into_string().unwrap();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/regressions/{name} is not a target"
        );
    }
}

/// Every target has a cargo-fuzz binary in `fuzz/fuzz_targets/` calling the same function.
#[test]
fn every_target_has_a_libfuzzer_binary() {
    for (name, _) in TARGETS {
        let src = fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{name}.rs: {e}"));
        assert!(src.contains("otel_xray::fuzzing::"), "{name}.rs");
    }
}

// ---- seeds -------------------------------------------------------------------------------

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Level::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Level::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Level::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn prefixed(prefix: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![prefix];
    v.extend_from_slice(data);
    v
}

/// Every seed, by target and file name, generated from the fixtures.
fn seeds() -> BTreeMap<(&'static str, String), Vec<u8>> {
    let mut seeds = BTreeMap::new();
    let mut otlp_json = Vec::new();
    for path in files_in(&fixtures().join("translate"))
        .into_iter()
        .chain(files_in(&fixtures().join("receiver")))
    {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".otlp.json") || name.ends_with("_http_json.json") {
            otlp_json.push((
                name.trim_end_matches(".json").to_owned(),
                fs::read(&path).unwrap(),
            ));
        }
    }
    assert!(otlp_json.len() > 10, "OTLP/JSON fixtures not found");
    for (name, json) in &otlp_json {
        let request = decode_request(json, Format::Json)
            .unwrap_or_else(|e| panic!("fixture {name} does not decode: {e}"));
        let proto = request.encode_to_vec();
        seeds.insert(("otlp_json", format!("{name}.json")), json.clone());
        seeds.insert(("otlp_protobuf", format!("{name}.pb")), proto.clone());
        seeds.insert(("otlp_wire", format!("{name}.pb")), proto.clone());
        // Allow-list, index-all, and small document limits (see `fuzzing::translate_otlp`).
        for (tag, selector) in [("allow", 0u8), ("all", 3), ("small", 4), ("small8k", 0xe4)] {
            seeds.insert(
                ("translate", format!("{name}.{tag}.pb")),
                prefixed(selector, &proto),
            );
        }
        seeds.insert(
            ("decompress", format!("{name}.gz")),
            prefixed(0, &gzip(&proto)),
        );
        seeds.insert(
            ("decompress", format!("{name}.zlib")),
            prefixed(1, &zlib(&proto)),
        );
        seeds.insert(
            ("decompress", format!("{name}.deflate")),
            prefixed(1, &deflate(&proto)),
        );
        seeds.insert(
            ("decompress", format!("{name}.identity")),
            prefixed(2, &proto),
        );
    }
    // A gzip bomb (1 MiB of zeros, about 1 KiB compressed: past the target's cap) and two
    // concatenated gzip members.
    const { assert!(fuzzing::DECOMPRESS_LIMIT < (1 << 20)) };
    seeds.insert(
        ("decompress", "bomb.gz".into()),
        prefixed(0, &gzip(&vec![0; 1 << 20])),
    );
    let mut two = gzip(b"\x0a\x00");
    two.extend(gzip(b"\x0a\x00"));
    seeds.insert(("decompress", "two-members.gz".into()), prefixed(0, &two));

    let telemetry = fixtures().join("telemetry");
    let mut all_events = Vec::new();
    for path in files_in(&telemetry)
        .into_iter()
        .chain(files_in(&telemetry.join("malformed")))
    {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let data = fs::read(&path).unwrap();
        if path.parent() == Some(telemetry.as_path())
            && let Ok(serde_json::Value::Array(events)) = serde_json::from_slice(&data)
        {
            all_events.extend(events);
        }
        let prefix = if path.parent() == Some(telemetry.as_path()) {
            ""
        } else {
            "malformed-"
        };
        seeds.insert(("telemetry_batch", format!("{prefix}{name}")), data);
    }
    seeds.insert(
        ("telemetry_batch", "all-events.json".into()),
        serde_json::to_vec(&all_events).unwrap(),
    );

    // Extensions API bodies in the shapes of the AWS documentation.
    for (name, body) in [
        (
            "invoke.json",
            r#"{"eventType":"INVOKE","deadlineMs":1676051012000,"requestId":"3da1f2dc-3222-475e-9205-e2e6c6318895","invokedFunctionArn":"arn:aws:lambda:us-east-1:123456789012:function:f","tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}}"#,
        ),
        (
            "invoke-no-tracing.json",
            r#"{"eventType":"INVOKE","deadlineMs":1.5e12,"requestId":"r","tracing":{"type":"X-Amzn-Trace-Id","value":""}}"#,
        ),
        (
            "shutdown.json",
            r#"{"eventType":"SHUTDOWN","shutdownReason":"spindown","deadlineMs":1676051012000}"#,
        ),
        (
            "shutdown-timeout.json",
            r#"{"eventType":"SHUTDOWN","shutdownReason":"timeout","deadlineMs":-1}"#,
        ),
        (
            "other.json",
            r#"{"eventType":"RESTORE","extra":[1,2,{"a":null}]}"#,
        ),
    ] {
        seeds.insert(("extensions_event", name.into()), body.as_bytes().to_vec());
    }

    for (name, header) in [
        (
            "lambda.txt",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        ),
        (
            "lineage.txt",
            " sampled=0 ; Lineage=a87bd80c:1|68fd508a:5 ;ROOT=1-5759e988-bd862e3fe1be46a994272793",
        ),
        (
            "unsampled-unknown.txt",
            "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=?;Self=1-x",
        ),
        (
            "self.txt",
            "Self=1-67891234-12456789abcdef012345678;Root=1-67891233-abcdef012345678912345678;CalledFrom=app",
        ),
    ] {
        seeds.insert(("trace_header", name.into()), header.as_bytes().to_vec());
    }

    // Runtime API proxy: `<Lambda-Runtime-Trace-Id>\0<event>` (see `fuzzing::event_context`), one
    // event of each trigger shape the proxy reads context from.
    const LAMBDA: &str =
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0";
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const XRAY: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";
    for (name, header, event) in [
        ("apigw-rest.json", Some(LAMBDA), format!(r#"{{"resource":"/","httpMethod":"GET","headers":{{"traceparent":"{TP}","baggage":"tenant=acme,plan=pro%20plus"}},"multiValueHeaders":{{"TraceParent":["{TP}"]}},"requestContext":{{"requestId":"r"}}}}"#)),
        ("apigw-http.json", Some(LAMBDA), format!(r#"{{"version":"2.0","routeKey":"GET /","headers":{{"traceparent":"{TP}","tracestate":"k=v"}},"requestContext":{{"http":{{"method":"GET"}}}}}}"#)),
        ("alb.json", None, format!(r#"{{"requestContext":{{"elb":{{"targetGroupArn":"arn"}}}},"headers":{{"x-amzn-trace-id":"{XRAY}"}}}}"#)),
        ("sqs.json", Some(LAMBDA), format!(r#"{{"Records":[{{"eventSource":"aws:sqs","messageId":"1","attributes":{{"AWSTraceHeader":"{XRAY}"}}}},{{"eventSource":"aws:sqs","messageId":"2","attributes":{{"AWSTraceHeader":"Root=1-5759e988-00000000000000000000000a;Parent=53995c3f42cd8ad8;Sampled=1"}}}}]}}"#)),
        ("sns.json", Some(LAMBDA), r#"{"Records":[{"EventSource":"aws:sns","Sns":{"MessageAttributes":{"traceparent":{"Type":"String","Value":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}}]}"#.to_owned()),
        ("eventbridge.json", Some(XRAY), r#"{"version":"0","detail-type":"t","source":"s","detail":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}}"#.to_owned()),
        ("not-an-object.json", Some(""), "[1,2,3]".to_owned()),
    ] {
        let mut data = Vec::new();
        if let Some(header) = header {
            data.extend_from_slice(header.as_bytes());
            data.push(0);
        }
        data.extend_from_slice(event.as_bytes());
        seeds.insert(("event_context", name.into()), data);
    }
    seeds
}

#[test]
fn seeds_match_the_fixtures() {
    let update = std::env::var_os("UPDATE_FUZZ_SEEDS").is_some();
    let mut stale = Vec::new();
    for ((target, name), data) in seeds() {
        let path = fuzz_dir()
            .join("corpus")
            .join(target)
            .join(format!("seed-{name}"));
        if update {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &data).unwrap();
        } else if fs::read(&path).ok().as_deref() != Some(&data[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "seeds differ from the fixtures (rerun with UPDATE_FUZZ_SEEDS=1):\n{}",
        stale.join("\n")
    );
}
