//! The bodies of the fuzz targets: each takes arbitrary bytes, drives one sans-IO decoder of the
//! request path, and panics only when an invariant breaks (no input may make the code itself panic).
//! The coverage-guided targets under `fuzz/` call these, and so does `tests/fuzz.rs`, which runs
//! them over the seed corpus (`fuzz/corpus/<target>/`) and a deterministic mutation loop.
//!
//! Each target also checks that feeding its input in two pieces (split at a point taken from the
//! input, so that a failure reproduces) gives what feeding it whole gives: the decoders are
//! incremental, and a network may split bytes anywhere.

use crate::api::{Api, Endpoint};
use crate::chunked::ChunkedDecoder;
use crate::eventstream;
use crate::providers::Framing;
use crate::server::http1::{self, Limits};
use crate::stream::StreamPipeline;
use crate::translate::{Pair, ResponseOptions};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of the binaries under `fuzz/fuzz_targets/`).
pub const TARGETS: [(&str, Target); 6] = [
    ("request_head", request_head),
    ("chunked", chunked),
    ("sse", sse),
    ("eventstream", event_stream),
    ("model_peek", model_peek),
    ("response_usage", response_usage),
];

/// Small limits, so that the fuzzer reaches them.
const LIMITS: Limits = Limits { max_head_bytes: 4096, max_headers: 32, max_body_bytes: 64 * 1024 };

/// A split point in `0..=data.len()` derived from the input.
fn split_point(data: &[u8]) -> usize {
    let seed = data.iter().take(8).fold(data.len(), |h, b| h.wrapping_mul(31).wrapping_add(usize::from(*b)));
    seed % (data.len() + 1)
}

/// The request head parser and the framing of whole connections ([`http1::frame_requests`]).
pub fn request_head(data: &[u8]) {
    if let Ok(Some((head, len))) = http1::parse_head(data, LIMITS.max_head_bytes, LIMITS.max_headers) {
        assert!(len <= data.len());
        // The parser does not look past the head: the head alone parses the same.
        let (again, again_len) = http1::parse_head(&data[..len], LIMITS.max_head_bytes, LIMITS.max_headers)
            .expect("a head that parsed parses alone")
            .expect("a head that parsed is complete alone");
        assert_eq!((again_len, again.method(), again.target()), (len, head.method(), head.target()));
        // A connection reads a head in pieces: every prefix of a good head asks for more bytes, so
        // the decision never depends on how the network split it.
        let cut = split_point(data) % len.max(1);
        assert!(
            matches!(http1::parse_head(&data[..cut], LIMITS.max_head_bytes, LIMITS.max_headers), Ok(None)),
            "a prefix of {len} bytes cut at {cut} was not incomplete"
        );
        let _ = (head.path(), head.headers().count(), head.keep_alive(), head.expects_continue());
        let _ = head.checked_framing(&LIMITS);
    }
    if let Ok(framed) = http1::frame_requests(data, &LIMITS) {
        for f in &framed {
            assert!(f.body.len() as u64 <= LIMITS.max_body_bytes);
        }
    }
}

/// The chunked decoder: no panic, and the same result whole or in two pieces.
pub fn chunked(data: &[u8]) {
    let decode = |pieces: &[&[u8]]| -> Result<(usize, bool, Vec<u8>), crate::chunked::ChunkError> {
        let mut d = ChunkedDecoder::with_limit(LIMITS.max_body_bytes);
        let mut out = Vec::new();
        let mut used = 0;
        for piece in pieces {
            let (n, done) = d.decode(piece, &mut out)?;
            used += n;
            if done {
                return Ok((used, true, out));
            }
            assert_eq!(n, piece.len(), "an unfinished body consumes all it is given");
        }
        Ok((used, false, out))
    };
    let whole = decode(&[data]);
    let cut = split_point(data);
    let split = decode(&[&data[..cut], &data[cut..]]);
    assert_eq!(whole, split, "split at {cut}");
    if let Ok((used, _, body)) = &whole {
        assert!(*used <= data.len() && body.len() <= *used && body.len() as u64 <= LIMITS.max_body_bytes);
    }
}

/// A stream pipeline for a selector byte: passthrough or translated, SSE or AWS event-stream.
fn pipeline(selector: u8, framing: Framing) -> StreamPipeline {
    let options =
        ResponseOptions { created: 1, forced_json_tool: None, include_usage: selector & 8 != 0, ..Default::default() };
    let (upstream, client) = match (framing, selector % 4) {
        (Framing::Sse, 0) => (Api::OpenAi, Api::OpenAi),
        (Framing::Sse, 1) => (Api::Anthropic, Api::Anthropic),
        (Framing::Sse, 2) => (Api::Anthropic, Api::OpenAi),
        (Framing::Sse, _) => (Api::OpenAi, Api::Anthropic),
        (Framing::EventStreamChunks, _) => {
            (Api::Anthropic, if selector & 1 == 0 { Api::Anthropic } else { Api::OpenAi })
        }
        (_, s) => (Api::Converse, if s & 1 == 0 { Api::OpenAi } else { Api::Anthropic }),
    };
    let translator = Pair::between(client, upstream).map(|pair| pair.stream("fuzz-model", &options));
    StreamPipeline::new(framing, upstream, client, translator, selector & 4 != 0 && upstream == Api::OpenAi)
}

/// Runs `data` through a pipeline in the given pieces; returns what the client would receive.
fn relay(selector: u8, framing: Framing, pieces: &[&[u8]]) -> Vec<u8> {
    let mut p = pipeline(selector, framing);
    let mut out = Vec::new();
    for piece in pieces {
        p.push(piece);
        p.relay(&mut out);
    }
    p.finish(&mut out);
    let _ = (p.usage(), p.content_events(), p.is_done(), p.pending_len());
    out
}

/// The SSE framer of [`StreamPipeline`] with each translator: no panic, and the same client bytes
/// whole or in two pieces. The first byte picks the pipeline.
pub fn sse(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let whole = relay(selector, Framing::Sse, &[rest]);
    let cut = split_point(rest);
    assert!(whole == relay(selector, Framing::Sse, &[&rest[..cut], &rest[cut..]]), "split at {cut}");
}

/// The AWS event-stream decoder and the pipelines that use it: no panic, the same messages and the
/// same client bytes whole or in two pieces. The first byte picks the pipeline and whether the
/// frames' CRCs are recomputed first (so that the fuzzer gets past them and into headers and
/// payloads).
pub fn event_stream(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let fixed;
    let rest = if selector & 16 != 0 {
        fixed = with_valid_crcs(rest);
        &fixed[..]
    } else {
        rest
    };
    let decode = |pieces: &[&[u8]]| {
        let mut d = eventstream::Decoder::new();
        let mut out = Vec::new();
        let mut result = Ok(());
        for piece in pieces {
            result = d.push(piece, &mut out);
            if result.is_err() {
                break;
            }
        }
        (result, out, d.pending())
    };
    let cut = split_point(rest);
    let (whole, whole_messages, _) = decode(&[rest]);
    let (split, split_messages, _) = decode(&[&rest[..cut], &rest[cut..]]);
    assert_eq!(whole.is_ok(), split.is_ok(), "split at {cut}");
    assert_eq!(whole_messages, split_messages, "split at {cut}");
    let framing = if selector & 32 != 0 { Framing::EventStreamChunks } else { Framing::EventStream };
    let out = relay(selector, framing, &[rest]);
    assert!(out == relay(selector, framing, &[&rest[..cut], &rest[cut..]]), "split at {cut}");
}

/// `data` with the prelude and message CRCs of each frame it holds (by their declared lengths)
/// recomputed.
fn with_valid_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0;
    while out.len() >= at + 16 {
        let total = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]) as usize;
        let crc = eventstream::crc32(&out[at..at + 8]).to_be_bytes();
        out[at + 8..at + 12].copy_from_slice(&crc);
        if total < 16 || at + total > out.len() {
            break;
        }
        let crc = eventstream::crc32(&out[at..at + total - 4]).to_be_bytes();
        out[at + total - 4..at + total].copy_from_slice(&crc);
        at += total;
    }
    out
}

/// The JSON model peek of every endpoint, and the model rename: a body the peek accepts is renamed
/// into JSON whose `model` (as an upstream reads it: the last one wins) is the new name, or refused
/// (a 400). The rename refuses a few bodies the peek accepts, which the fuzzer found: invalid UTF-8
/// inside a skipped field (the peek does not validate what it skips, to stay fast), and, when the
/// `model` key is written with escapes, a number beyond `f64` elsewhere.
///
/// The peek's two readers: a body the strict reader takes, serde takes, with the same fields. And the
/// strict scanner skips exactly the values serde skips (when nesting stays within its depth limit).
pub fn model_peek(data: &[u8]) {
    use crate::gateway::peek::{fields_read_by_serde, fields_read_strictly};
    use crate::strict_json::{skip_ws, value_end, MAX_DEPTH};
    if let Some(strict) = fields_read_strictly(data) {
        assert_eq!(Some(strict), fields_read_by_serde(data).ok(), "the strict reader and serde disagree");
    }
    let strict = value_end(data, 0).is_some_and(|end| skip_ws(data, end) == data.len());
    let serde = serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok();
    let open = data.iter().filter(|b| matches!(b, b'[' | b'{')).count();
    assert!(strict <= serde && (strict == serde || open > MAX_DEPTH), "strict {strict}, serde {serde}");
    for endpoint in [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Messages,
        Endpoint::CountTokens,
    ] {
        let Ok(peek) = crate::gateway::parse(endpoint, data) else { continue };
        assert!(!peek.model.is_empty());
        if let Ok(renamed) = crate::json::with_model(data, &peek.model, "renamed-model") {
            assert_eq!(last_model(&renamed).as_deref(), Some("renamed-model"));
        }
    }
}

/// The top-level `model` of a JSON object as an upstream reads it (the last one wins when the key is
/// repeated, escaped or not); `None` when the body is not a JSON object with a string `model`.
fn last_model(body: &[u8]) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    struct Last;
    impl<'de> Visitor<'de> for Last {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<String>, A::Error> {
            let mut model = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<str>>()? {
                if key == "model" {
                    model = map.next_value::<Option<String>>()?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(model)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let model = de.deserialize_map(Last).ok()?;
    de.end().ok()?;
    model
}

/// A response body's usage, as the relay reads it: for an untraced request `usage` is found from the
/// end of the body (`json::last_top_level_value`), for a traced one by a walk from its start. On a body
/// that is a JSON object (as serde reads it, where the last of a repeated key wins), a range found
/// from the end holds exactly the value serde sees as `usage`; and when the key's bytes occur once,
/// the two ways read the same usage and model.
pub fn response_usage(data: &[u8]) {
    let from_end = crate::json::last_top_level_value(data, b"\"usage\"");
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Some(range) = from_end {
        let value: serde_json::Value = serde_json::from_slice(&data[range]).expect("a range found is a JSON value");
        assert_eq!(Some(&value), map.get("usage"));
    }
    if memchr::memmem::find_iter(data, b"\"usage\"").count() == 1 {
        for api in [Api::OpenAi, Api::Anthropic, Api::Converse, Api::Responses] {
            let (untraced, traced) =
                (crate::usage::facts_from_body(api, data, false), crate::usage::facts_from_body(api, data, true));
            assert_eq!(untraced.usage, traced.usage, "{api:?}");
            if api != Api::Converse {
                assert_eq!(untraced.model, traced.model, "{api:?}");
            }
        }
    }
}
