//! Differential tests of `otlp_wire` against prost's decoding of `ExportTraceServiceRequest`:
//! - arbitrary requests encoded by prost: `validate_request` counts prost's spans and the view
//!   holds every field prost decodes (`Resource.entity_refs` excepted: checked, not kept);
//! - those encodings mutated (bytes flipped, inserted, removed, spliced, truncated) and arbitrary
//!   bytes: `validate_request` and `RequestView::parse` accept exactly what prost accepts;
//! - hand-built edge cases: repeated non-repeated fields (last wins / merged), oneof merging,
//!   unknown fields and groups, wire-type mismatches, varint limits, the recursion limit.
//!
//! Failures found by proptest are kept in `proptest-regressions/` (committed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod otlp_strategies;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use otel_xray::fuzzing::view_to_owned;
use otel_xray::otlp_wire::{AnyValueView, RequestView, WireError, validate_request};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use prost::Message;

/// `PROPTEST_CASES`, when set, overrides `cases` (for long runs).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        max_shrink_iters: 2000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/otlp_wire_props.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// Checks `bytes` the three ways and that they agree; returns whether prost accepted.
fn check(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let prost = ExportTraceServiceRequest::decode(bytes);
    let count = validate_request(bytes);
    let view = RequestView::parse(bytes);
    match prost {
        Ok(mut decoded) => {
            let expected = otel_xray::buffer::count_spans(&decoded.resource_spans);
            prop_assert_eq!(count, Ok(expected), "validate_request on {:?}", bytes);
            let view = view.map_err(|e| TestCaseError::fail(format!("view: {e} on {bytes:?}")))?;
            prop_assert_eq!(view.span_count(), expected);
            for rs in &mut decoded.resource_spans {
                if let Some(r) = rs.resource.as_mut() {
                    r.entity_refs.clear();
                }
            }
            // Compared through prost's encoding: exact, NaN payloads included.
            prop_assert_eq!(
                view_to_owned(&view).encode_to_vec(),
                decoded.encode_to_vec(),
                "view differs on {:?}",
                bytes
            );
            Ok(true)
        }
        Err(e) => {
            prop_assert!(
                count.is_err(),
                "prost: {e}, validate_request: {count:?} on {bytes:?}"
            );
            prop_assert!(view.is_err(), "prost: {e}, view accepted {bytes:?}");
            Ok(false)
        }
    }
}

// ---- arbitrary requests: otlp_strategies/mod.rs ---------------------------------------------

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    /// Appends a copy of a slice of the input (duplicate fields, merges).
    Splice(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        2 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..4)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<usize>(), 1usize..4).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
    ]
}

fn mutate(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = b.len();
        match m {
            Mutation::Flip(i, x) if n > 0 => b[i % n] ^= x,
            Mutation::Insert(i, bytes) => {
                let at = i % (n + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Remove(i, k) if n > 0 => {
                let at = i % n;
                b.drain(at..(at + k).min(n));
            }
            Mutation::Truncate(i) => b.truncate(i % (n + 1)),
            Mutation::Splice(a, c) if n > 0 => {
                let (x, y) = (a % n, c % n);
                let piece = b[x.min(y)..x.max(y)].to_vec();
                b.extend(piece);
            }
            _ => {}
        }
    }
    b
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn prost_encoded_requests_read_the_same(req in otlp_strategies::request(otlp_strategies::any_double)) {
        let bytes = req.encode_to_vec();
        prop_assert!(check(&bytes)?);
        // Two requests back to back are one request with both's resource spans.
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        prop_assert!(check(&twice)?);
    }

    #[test]
    fn mutated_requests_are_accepted_iff_prost_accepts(
        req in otlp_strategies::request(otlp_strategies::any_double),
        ms in proptest::collection::vec(mutation(), 1..4),
    ) {
        check(&mutate(req.encode_to_vec(), &ms))?;
    }

    #[test]
    fn arbitrary_bytes_are_accepted_iff_prost_accepts(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        check(&bytes)?;
    }
}

// ---- edge cases by hand --------------------------------------------------------------------

fn key(tag: u32, wire: u8) -> Vec<u8> {
    varint(u64::from(tag) << 3 | u64::from(wire))
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        if v < 0x80 {
            out.push(v as u8);
            return out;
        }
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
}

fn len_field(tag: u32, body: &[u8]) -> Vec<u8> {
    let mut out = key(tag, 2);
    out.extend(varint(body.len() as u64));
    out.extend_from_slice(body);
    out
}

/// A request of one span whose body is `span_body`.
fn with_span(span_body: &[u8]) -> Vec<u8> {
    len_field(1, &len_field(2, &len_field(2, span_body)))
}

fn assert_agrees(bytes: &[u8]) -> bool {
    check(bytes).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn repeated_scalars_last_wins_and_messages_merge() {
    let mut span = Vec::new();
    span.extend(len_field(5, b"first"));
    span.extend(len_field(5, b"second"));
    span.extend(key(6, 0));
    span.extend(varint(2));
    span.extend(key(6, 0));
    span.extend(varint(u64::MAX)); // kind: -1 as i32
    // Status twice: merged field by field.
    let mut s1 = len_field(2, b"msg");
    s1.extend(key(3, 0));
    s1.extend(varint(2));
    span.extend(len_field(15, &s1));
    span.extend(len_field(15, &len_field(2, b"other")));
    // An attribute whose value is an array, then again an array (merged), then a string and
    // an array again (replaced).
    let arr = |s: &[u8]| len_field(5, &len_field(1, &len_field(1, s)));
    let mut v = arr(b"a");
    v.extend(arr(b"b"));
    let mut kv = len_field(1, b"k");
    kv.extend(len_field(2, &v));
    kv.extend(len_field(2, &arr(b"c")));
    span.extend(len_field(9, &kv));
    let mut kv2 = len_field(1, b"k2");
    let mut v2 = arr(b"x");
    v2.extend(len_field(1, b"str"));
    v2.extend(arr(b"y"));
    kv2.extend(len_field(2, &v2));
    span.extend(len_field(9, &kv2));
    let bytes = with_span(&span);
    assert!(assert_agrees(&bytes));
    let view = RequestView::parse(&bytes).unwrap();
    let s = &view.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(s.name, b"second");
    assert_eq!(s.kind, -1);
    let status = s.status.as_ref().unwrap();
    assert_eq!((status.message, status.code), (&b"other"[..], 2));
    assert_eq!(
        s.attributes[0].value,
        Some(AnyValueView::Array(vec![
            AnyValueView::String(b"a"),
            AnyValueView::String(b"b"),
            AnyValueView::String(b"c")
        ]))
    );
    assert_eq!(
        s.attributes[1].value,
        Some(AnyValueView::Array(vec![AnyValueView::String(b"y")]))
    );
}

#[test]
fn unknown_fields_and_groups_are_skipped() {
    let mut span = len_field(5, b"n");
    span.extend(key(99, 0));
    span.extend(varint(300));
    span.extend(key(100, 1));
    span.extend([0; 8]);
    span.extend(key(101, 5));
    span.extend([0; 4]);
    span.extend(len_field(102, b"\xff\xfe")); // unknown: not checked as UTF-8
    span.extend(key(103, 3)); // group with a nested group
    span.extend(key(1, 0));
    span.extend(varint(1));
    span.extend(key(2, 3));
    span.extend(key(2, 4));
    span.extend(key(103, 4));
    span.extend(len_field(1, &[7; 16]));
    let bytes = with_span(&span);
    assert!(assert_agrees(&bytes));
    // Status field 1 (deprecated code, removed from the proto) is unknown.
    let mut status = key(1, 0);
    status.extend(varint(5));
    assert!(assert_agrees(&with_span(&len_field(15, &status))));
}

#[test]
fn malformed_input_is_rejected_like_prost() {
    let cases: Vec<Vec<u8>> = vec![
        with_span(&key(5, 0)),                         // string with wire type varint
        with_span(&[key(7, 0), varint(1)].concat()),   // fixed64 as varint
        with_span(&[key(16, 1), vec![0; 8]].concat()), // fixed32 as fixed64
        with_span(&len_field(5, b"\xc3\x28")),         // invalid UTF-8
        with_span(&key(9, 4)),                         // end group without start
        with_span(&[key(50, 3), key(51, 4)].concat()), // mismatched end group
        with_span(&key(50, 3)),                        // unterminated group
        with_span(&[key(50, 6)].concat()),             // wire type 6
        with_span(&[0]),                               // field number 0
        with_span(&[key(50, 0), vec![0xff; 10], vec![1]].concat()), // 11-byte varint
        with_span(&[key(50, 0), vec![0xff; 9], vec![2]].concat()), // over 64 bits
        with_span(&[key(50, 0), vec![0xff; 9], vec![1]].concat()), // exactly 64 bits: fine
        with_span(&[key(50, 0), vec![0x80; 9], vec![0]].concat()), // 10 bytes: fine
        with_span(&varint(1 << 35)),                   // key over 32 bits
        with_span(&[key(1, 2), varint(5), vec![1]].concat()), // length past the end
        with_span(&[key(7, 1), vec![0; 7]].concat()),  // short fixed64
        len_field(1, &len_field(3, b"\x80")),          // invalid UTF-8 schema_url
        // EntityRef strings are checked although the view drops them.
        len_field(1, &len_field(1, &len_field(3, &len_field(4, b"\xff")))),
        len_field(1, &len_field(1, &len_field(3, &len_field(4, b"ok")))),
    ];
    let accepted: Vec<bool> = cases.iter().map(|c| assert_agrees(c)).collect();
    assert_eq!(
        accepted,
        [
            false, false, false, false, false, false, false, false, false, false, false, true,
            true, false, false, false, false, false, true
        ]
    );
    assert!(matches!(
        validate_request(&cases[3]),
        Err(WireError::InvalidUtf8 {
            message: "Span",
            tag: 5
        })
    ));
}

/// Attributes around the fast path for `key` + one scalar `value` (otlp_wire's
/// `simple_key_value`): the simple shape and its near misses read as prost reads them.
#[test]
fn attribute_shapes_near_the_fast_path_read_like_prost() {
    let any = |field: Vec<u8>| len_field(2, &field);
    let string = |s: &[u8]| len_field(1, s);
    let kv = |parts: &[Vec<u8>]| len_field(9, &parts.concat());
    let k = string(b"k");
    let fixed = [key(4, 1), 1.5f64.to_bits().to_le_bytes().to_vec()].concat();
    let cases: Vec<(Vec<u8>, bool)> = vec![
        // The simple shape, each scalar.
        (kv(&[k.clone(), any(string(b"v"))]), true),
        (kv(&[k.clone(), any([key(2, 0), varint(1)].concat())]), true),
        (kv(&[k.clone(), any([key(2, 0), varint(7)].concat())]), true),
        (
            kv(&[k.clone(), any([key(3, 0), varint(u64::MAX)].concat())]),
            true,
        ),
        (kv(&[k.clone(), any(fixed.clone())]), true),
        (
            kv(&[string("é".as_bytes()), any(string("東京".as_bytes()))]),
            true,
        ),
        // Near misses: the generic reader decides.
        (kv(&[any(string(b"v")), k.clone()]), true), // value first
        (kv(std::slice::from_ref(&k)), true),        // no value
        (kv(&[k.clone(), any(Vec::new())]), true),   // empty AnyValue
        (kv(&[k.clone(), k.clone(), any(string(b"v"))]), true), // key twice
        (kv(&[k.clone(), any(string(b"v")), any(string(b"w"))]), true), // value twice: merged
        (
            kv(&[
                k.clone(),
                any([string(b"v"), key(3, 0), varint(1)].concat()),
            ]),
            true,
        ), // two scalars
        (
            kv(&[k.clone(), any(string(b"v")), key(3, 0), varint(5)]),
            true,
        ), // key_strindex
        (
            kv(&[k.clone(), any(string(b"v")), key(99, 0), varint(1)]),
            true,
        ), // unknown field
        (
            kv(&[k.clone(), any([key(99, 0), varint(1)].concat())]),
            true,
        ), // unknown in AnyValue
        (kv(&[vec![0x8a, 0x00, 1, b'k'], any(string(b"v"))]), true), // tag as a 2-byte varint
        (kv(&[k.clone(), any([key(5, 2), varint(0)].concat())]), true), // empty array
        (kv(&[string(b"\xff"), any(string(b"v"))]), false), // key not UTF-8
        (kv(&[k.clone(), any(string(b"\xc3"))]), false), // value not UTF-8
        (
            kv(&[k.clone(), any([key(1, 0), varint(1)].concat())]),
            false,
        ), // string as varint
        (
            kv(&[k.clone(), any([key(4, 1), vec![0; 7]].concat())]),
            false,
        ), // short double
        (
            kv(&[k.clone(), any([key(2, 0), vec![0xff; 11]].concat())]),
            false,
        ), // bad varint
        (kv(&[k.clone(), vec![0x12, 5, 0x0a, 1]]), false), // value runs past the end
    ];
    for (i, (span_body, accepted)) in cases.iter().enumerate() {
        assert_eq!(assert_agrees(&with_span(span_body)), *accepted, "case {i}");
    }
}

/// An attribute value nested `levels` arrays deep, in a span.
fn nested(levels: usize) -> Vec<u8> {
    let mut v = AnyValue {
        value: Some(Value::IntValue(1)),
    };
    for _ in 0..levels {
        v = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values: vec![v] })),
        };
    }
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    attributes: vec![KeyValue {
                        key: "k".into(),
                        value: Some(v),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    req.encode_to_vec()
}

#[test]
fn the_recursion_limit_is_prosts() {
    let results: Vec<(usize, bool)> = (40..52).map(|n| (n, assert_agrees(&nested(n)))).collect();
    // Somewhere in this range prost's limit of 100 levels is crossed (each array level is two
    // messages): both sides agree at every depth, and both outcomes occur.
    assert!(
        results.iter().any(|r| r.1) && results.iter().any(|r| !r.1),
        "{results:?}"
    );
    assert_eq!(
        validate_request(&nested(60)),
        Err(WireError::RecursionLimit)
    );
    // Unknown groups count too.
    let mut deep = Vec::new();
    for _ in 0..120 {
        deep.extend(key(50, 3));
    }
    for _ in 0..120 {
        deep.extend(key(50, 4));
    }
    assert!(!assert_agrees(&with_span(&deep)));
    let mut shallow = Vec::new();
    for _ in 0..10 {
        shallow.extend(key(50, 3));
    }
    for _ in 0..10 {
        shallow.extend(key(50, 4));
    }
    assert!(assert_agrees(&with_span(&shallow)));
}
