//! OTLP/protobuf encoding of the few messages a trace export needs, by hand (no IO): an
//! `ExportTraceServiceRequest` holding one `ResourceSpans` with one `ScopeSpans`, whose `spans` are
//! encoded ahead, request by request ([`span_entries`]), and wrapped per batch ([`export_request`]).
//!
//! Field numbers are those of opentelemetry-proto (`collector/trace/v1/trace_service.proto`,
//! `trace/v1/trace.proto`, `common/v1/common.proto`, `resource/v1/resource.proto`); the tests decode what
//! this writes with the official definitions (tests/sdk/otlp_receiver.py).

use super::{Span, SpanKind, Value};

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(out, field, LEN);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    bytes_field(out, field, s.as_bytes());
}

/// A nested message written by `f` in place; its length prefix is inserted once it is known (a move of
/// its bytes, no allocation).
fn message(out: &mut Vec<u8>, field: u32, f: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let start = out.len();
    f(out);
    let mut prefix = [0u8; 10];
    let mut v = (out.len() - start) as u64;
    let mut n = 0;
    while v >= 0x80 {
        prefix[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    prefix[n] = v as u8;
    out.splice(start..start, prefix[..=n].iter().copied());
}

/// `AnyValue`.
fn any_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => string_field(out, 1, s),
        Value::Bool(b) => {
            tag(out, 2, VARINT);
            varint(out, u64::from(*b));
        }
        Value::Int(i) => {
            tag(out, 3, VARINT);
            varint(out, *i as u64);
        }
        Value::Double(d) => {
            tag(out, 4, FIXED64);
            out.extend_from_slice(&d.to_le_bytes());
        }
        Value::StrArray(items) => message(out, 5, |array| {
            for item in items.iter() {
                message(array, 1, |value| string_field(value, 1, item));
            }
        }),
    }
}

/// `KeyValue` as field `field` of the enclosing message.
fn key_value(out: &mut Vec<u8>, field: u32, key: &str, v: &Value) {
    message(out, field, |kv| {
        string_field(kv, 1, key);
        message(kv, 2, |any| any_value(any, v));
    });
}

fn span(out: &mut Vec<u8>, s: &Span) {
    bytes_field(out, 1, &s.trace_id);
    bytes_field(out, 2, &s.span_id);
    if !s.trace_state.is_empty() {
        string_field(out, 3, s.trace_state);
    }
    if let Some(parent) = &s.parent_span_id {
        bytes_field(out, 4, parent);
    }
    string_field(out, 5, &s.name);
    tag(out, 6, VARINT);
    varint(
        out,
        match s.kind {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        },
    );
    tag(out, 7, FIXED64);
    out.extend_from_slice(&s.start_unix_nanos.to_le_bytes());
    tag(out, 8, FIXED64);
    out.extend_from_slice(&s.end_unix_nanos.to_le_bytes());
    for (k, v) in &s.attributes {
        key_value(out, 9, k, v);
    }
    if let Some(message_text) = &s.error {
        // Status { message = 2; code = 3 (STATUS_CODE_ERROR = 2) }
        message(out, 15, |st| {
            string_field(st, 2, message_text);
            tag(st, 3, VARINT);
            varint(st, 2);
        });
    }
    // flags: the W3C trace flags (sampled) in the low 8 bits.
    tag(out, 16, FIXED32);
    out.extend_from_slice(&1u32.to_le_bytes());
}

/// `spans` as entries of `ScopeSpans.spans` (field 2), ready to be concatenated with other requests'.
pub fn span_entries(spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spans.len() * 640);
    for s in spans {
        message(&mut out, 2, |m| span(m, s));
    }
    out
}

/// An `ExportTraceServiceRequest` with the resource's attributes, the instrumentation scope and span
/// entries from [`span_entries`].
pub fn export_request(resource: &[(&str, Value)], scope: (&str, &str), entries: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + entries.len());
    message(&mut out, 1, |resource_spans| {
        message(resource_spans, 1, |res| {
            for (k, v) in resource {
                key_value(res, 1, k, v);
            }
        });
        message(resource_spans, 2, |scope_spans| {
            message(scope_spans, 1, |sc| {
                string_field(sc, 1, scope.0);
                string_field(sc, 2, scope.1);
            });
            scope_spans.extend_from_slice(entries);
        });
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_little_endian_base_128() {
        let enc = |v| {
            let mut out = Vec::new();
            varint(&mut out, v);
            out
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(1), [1]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
        // A negative int64 is its two's complement, ten bytes.
        assert_eq!(enc(-1i64 as u64).len(), 10);
    }

    #[test]
    fn nested_lengths_are_inserted_in_place_even_past_one_byte() {
        let mut out = Vec::new();
        message(&mut out, 1, |m| m.extend_from_slice(&[7u8; 300]));
        assert_eq!(&out[..3], &[0x0a, 0xac, 0x02]);
        assert_eq!(out.len(), 3 + 300);
    }

    #[test]
    fn a_key_value_has_the_expected_bytes() {
        let mut out = Vec::new();
        key_value(&mut out, 9, "k", &Value::str("v"));
        // field 9 LEN, len 8: { 1: "k", 2: { 1: "v" } }
        assert_eq!(out, [0x4a, 8, 0x0a, 1, b'k', 0x12, 3, 0x0a, 1, b'v']);
    }
}
