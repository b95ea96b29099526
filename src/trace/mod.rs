//! Distributed tracing: W3C trace context in, OTLP/HTTP protobuf out.
//!
//! A sampled request has one server span (its parent is the client's `traceparent`, when it sent one)
//! and one client span per upstream attempt; the upstream request carries that attempt span as its
//! parent in `traceparent`, and the client's `tracestate` unchanged. Sampling is parent-based: a client
//! that says "sampled" (or "not sampled") is followed; without a `traceparent` the configured ratio
//! decides. A request that is not sampled costs one check and passes the client's trace headers
//! through untouched. Finished spans are encoded on the request's thread (borrowing what they
//! describe: one allocation) and go to a bounded queue drained by the exporter thread ([`export`]);
//! when the queue is full (the collector is slow or down) they are dropped and counted, never waited
//! for.

pub mod export;
pub mod otlp;

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::router::random_draw;

/// A span attribute value, borrowed from the request where it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Double(f64),
    StrArray(&'a [String]),
}

impl<'a> Value<'a> {
    /// A borrowed string.
    pub fn str(s: &'a str) -> Value<'a> {
        Value::Str(Cow::Borrowed(s))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    Server,
    Client,
}

/// A finished span, borrowing from the request it describes; encoded at once ([`otlp::span_entries`]).
#[derive(Debug, Clone)]
pub struct Span<'a> {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// W3C `tracestate`, as the client sent it.
    pub trace_state: &'a str,
    pub name: Cow<'a, str>,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, Value<'a>)>,
    /// `Some(message)`: the span's status is ERROR.
    pub error: Option<Cow<'a, str>>,
}

/// A `traceparent` as a client sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = digit(b[2 * i])? << 4 | digit(b[2 * i + 1])?;
    }
    Some(out)
}

/// Parses a W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`, lower-case hex). A future version is
/// read for its first four fields; version `ff`, all-zero ids and malformed values are `None`.
pub fn parse_traceparent(value: &str) -> Option<Parent> {
    let value = value.trim();
    let mut parts = value.splitn(5, '-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if version.len() != 2 || version == "ff" || hex_bytes::<1>(version).is_none() {
        return None;
    }
    if version == "00" && rest.is_some() {
        return None;
    }
    let trace_id: [u8; 16] = hex_bytes(trace)?;
    let span_id: [u8; 8] = hex_bytes(span)?;
    let flags: [u8; 1] = hex_bytes(flags)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent { trace_id, span_id, sampled: flags[0] & 1 == 1 })
}

pub use crate::digits::hex_bytes as hex;
use crate::digits::push_hex_bytes as push_hex;

/// The `traceparent` that makes `span_id` the parent of what receives it (sampled).
pub fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8]) -> String {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    push_hex(&mut s, trace_id);
    s.push('-');
    push_hex(&mut s, span_id);
    s.push_str("-01");
    s
}

/// A `tracestate` worth forwarding: at most 512 visible ASCII characters (W3C's limit).
fn valid_tracestate(v: &str) -> bool {
    !v.is_empty() && v.len() <= 512 && v.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn nonzero_id<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let r = random_draw().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        if out != [0; N] {
            return out;
        }
    }
}

/// The trace of one sampled request.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    pub trace_id: [u8; 16],
    /// The gateway's server span.
    pub span_id: [u8; 8],
    /// The client's span, when it sent a `traceparent`.
    pub parent: Option<[u8; 8]>,
    pub trace_state: String,
}

/// A fresh span id (for an upstream attempt).
pub fn new_span_id() -> [u8; 8] {
    nonzero_id()
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Root requests are sampled when a random draw is below this (`u64::MAX`: all).
static THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);

/// Whether tracing is configured.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The sampling decision for a request with these headers: `Some` when it is traced.
pub fn begin(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<RequestTrace> {
    if !enabled() {
        return None;
    }
    let parent = traceparent.and_then(parse_traceparent);
    let sampled = match parent {
        Some(p) => p.sampled,
        None => {
            let threshold = THRESHOLD.load(Ordering::Relaxed);
            threshold == u64::MAX || random_draw() < threshold
        }
    };
    if !sampled {
        return None;
    }
    let trace_state = match (parent, tracestate) {
        (Some(_), Some(ts)) if valid_tracestate(ts) => ts.to_string(),
        _ => String::new(),
    };
    Some(RequestTrace {
        trace_id: parent.map_or_else(nonzero_id, |p| p.trace_id),
        span_id: nonzero_id(),
        parent: parent.map(|p| p.span_id),
        trace_state,
    })
}

/// Applies the `tracing` config (at start-up and on reload): `None` turns tracing off.
pub fn configure(cfg: Option<&crate::config::TracingConfig>) {
    match cfg {
        None => ENABLED.store(false, Ordering::Release),
        Some(c) => {
            let ratio = c.sample_ratio.clamp(0.0, 1.0);
            let threshold = if ratio >= 1.0 { u64::MAX } else { (ratio * u64::MAX as f64) as u64 };
            THRESHOLD.store(threshold, Ordering::Relaxed);
            export::configure(c);
            ENABLED.store(true, Ordering::Release);
        }
    }
}

/// Encodes a request's finished spans and hands them to the exporter (dropped and counted when its
/// queue is full).
pub fn submit(spans: &[Span]) {
    export::submit(otlp::span_entries(spans), spans.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_what_w3c_rejects() {
        let p = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        assert_eq!(hex(&p.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex(&p.span_id), "b7ad6b7169203331");
        assert!(p.sampled);
        assert_eq!(traceparent(&p.trace_id, &p.span_id), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert!(!parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").unwrap().sampled);
        // A later version may append fields; version 00 may not.
        assert!(parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz").is_some());
        for bad in [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ids_are_never_zero() {
        assert_ne!(nonzero_id::<16>(), [0; 16]);
        assert_ne!(nonzero_id::<8>(), [0; 8]);
    }

    #[test]
    fn tracestate_is_forwarded_only_when_sane() {
        assert!(valid_tracestate("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
        assert!(!valid_tracestate(""));
        assert!(!valid_tracestate(&"a".repeat(513)));
        assert!(!valid_tracestate("a=\u{7}"));
    }
}
