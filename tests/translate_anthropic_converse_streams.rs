//! ConverseStream → Anthropic SSE: recorded-event tests. Each fixture in
//! `tests/fixtures/streams/converse_anthropic_*.json` is a JSON array of
//! decoded event-stream frames, `{"event": "<:event-type or
//! :exception-type>", "payload": {...}}`, encoded as AWS event-stream frames
//! and fed through the relay's stream pipeline (event-stream decoding, usage
//! reader, `anthropic_converse` translator) whole, byte by byte and split at
//! every offset. Every translation is checked for the shape of an Anthropic
//! stream (event names, block index order, start/stop pairing, a single
//! terminal event) and for its content.

mod common;

use common::{converse_fixture_wire, ConversePipeline};
use serde_json::{json, Value};
use switchyard::api::Api;
use switchyard::sse::{SseDecoder, SseEvent};
use switchyard::translate::anthropic_converse::StreamTranslator;
use switchyard::translate::{ResponseOptions, Usage};

const MODEL: &str = "claude-sonnet-4-5";

fn pipeline(t: StreamTranslator) -> ConversePipeline {
    ConversePipeline::new(Api::Anthropic, Box::new(t))
}

fn new() -> ConversePipeline {
    pipeline(StreamTranslator::new(MODEL, &ResponseOptions { created: 1_700_000_000, ..Default::default() }))
}

/// A recorded stream's frames, by name, with their payloads.
fn frames(name: &str) -> Vec<(String, Vec<u8>)> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/streams").join(name);
    let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|f| (f["event"].as_str().unwrap().to_string(), serde_json::to_vec(&f["payload"]).unwrap()))
        .collect()
}

/// Feed frames as Bedrock sends them (exceptions as exception frames); then end the stream.
fn feed(t: &mut ConversePipeline, frames: &[(String, Vec<u8>)], out: &mut Vec<u8>) {
    for (name, payload) in frames {
        if name.ends_with("Exception") {
            t.exception(name, payload, out);
        } else {
            t.event(name, payload, out);
        }
    }
    t.finish(out);
}

fn translate(frames: &[(String, Vec<u8>)]) -> (Vec<Value>, ConversePipeline) {
    let mut t = new();
    let mut out = Vec::new();
    feed(&mut t, frames, &mut out);
    (events(&out), t)
}

/// A whole recorded stream, checked to give the same bytes in every split.
fn recorded(name: &str) -> (Vec<Value>, ConversePipeline) {
    let whole = common::assert_converse_split_invariant(new, &converse_fixture_wire(name));
    let (evs, t) = translate(&frames(name));
    assert_eq!(evs, events(&whole));
    (evs, t)
}

/// Decoded events' data, after checking that each event's name is its
/// data's `type`.
fn events(out: &[u8]) -> Vec<Value> {
    let mut d = SseDecoder::new();
    let mut evs: Vec<SseEvent> = Vec::new();
    d.push(out, &mut evs);
    d.finish(&mut evs);
    evs.iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(e.event.as_deref(), v["type"].as_str(), "event name differs from data type: {v}");
            v
        })
        .collect()
}

/// Check the Anthropic stream grammar: `message_start` first (unless the
/// stream failed before it), blocks started in index order 0, 1, 2 … and
/// each stopped once, deltas only inside open blocks, and exactly one
/// terminal: `message_delta` + `message_stop` with every block stopped, or
/// an `error` event as the very last event.
fn assert_well_formed(evs: &[Value]) {
    let mut open: Vec<bool> = vec![];
    let mut ended = false;
    for (k, e) in evs.iter().enumerate() {
        assert!(!ended, "event after the end: {e}");
        let index = e["index"].as_u64().map(|i| i as usize);
        match e["type"].as_str().unwrap() {
            "message_start" => assert_eq!(k, 0, "message_start must come first"),
            "content_block_start" => {
                assert_eq!(index, Some(open.len()), "blocks start in index order: {e}");
                open.push(true);
            }
            "content_block_delta" => {
                assert!(open.get(index.unwrap()) == Some(&true), "delta outside an open block: {e}")
            }
            "content_block_stop" => {
                let slot = open.get_mut(index.unwrap()).expect("stop of an unknown block");
                assert!(*slot, "block stopped twice: {e}");
                *slot = false;
            }
            "message_delta" => {
                assert!(open.iter().all(|o| !o), "message_delta with a block still open");
                assert_eq!(evs.get(k + 1).map(|n| &n["type"]), Some(&json!("message_stop")));
            }
            "message_stop" => ended = true,
            "error" => {
                assert_eq!(k, evs.len() - 1, "error must be the last event");
                ended = true;
            }
            other => panic!("unexpected event type {other}"),
        }
    }
    assert!(ended, "stream has no terminal event");
}

fn of_type<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["type"] == kind).collect()
}

fn deltas(evs: &[Value], index: u64, field: &str) -> String {
    evs.iter()
        .filter(|e| e["type"] == "content_block_delta" && e["index"] == index)
        .filter_map(|e| e["delta"][field].as_str())
        .collect()
}

#[test]
fn text_stream_opens_a_text_block_and_reports_usage_in_message_delta() {
    let (evs, t) = recorded("converse_anthropic_text.json");
    assert_well_formed(&evs);
    let start = &evs[0]["message"];
    assert_eq!(start["model"], MODEL);
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["usage"]["input_tokens"], 0, "usage is unknown until metadata");
    assert_eq!(
        evs[1],
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(deltas(&evs, 0, "text"), "Hello! How can I help — café ☕?");
    let md = of_type(&evs, "message_delta")[0];
    assert_eq!(md["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
    assert_eq!(
        md["usage"],
        json!({"input_tokens": 12, "output_tokens": 11, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": 200})
    );
    assert_eq!(
        t.usage(),
        Some(Usage {
            input_tokens: 12,
            output_tokens: 11,
            cache_read_input_tokens: 1800,
            cache_creation_input_tokens: 200,
            reasoning_tokens: 0
        })
    );
    assert!(t.is_done());
}

#[test]
fn tool_use_stream_gives_text_then_tool_block_with_json_deltas() {
    let (evs, _) = recorded("converse_anthropic_tool_use.json");
    assert_well_formed(&evs);
    assert_eq!(deltas(&evs, 0, "text"), "Let me check the weather for San Francisco.");
    let starts = of_type(&evs, "content_block_start");
    assert_eq!(
        starts[1]["content_block"],
        json!({"type": "tool_use", "id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "get_weather", "input": {}})
    );
    let tool_deltas: Vec<&Value> =
        evs.iter().filter(|e| e["index"] == 1 && e["type"] == "content_block_delta").collect();
    assert_eq!(tool_deltas.len(), 2, "the empty first input fragment is not sent");
    assert!(tool_deltas.iter().all(|d| d["delta"]["type"] == "input_json_delta"));
    let args = deltas(&evs, 1, "partial_json");
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    let md = of_type(&evs, "message_delta")[0];
    assert_eq!(md["delta"]["stop_reason"], "tool_use");
    assert_eq!(md["usage"]["input_tokens"], 472);
    assert_eq!(md["usage"]["output_tokens"], 89);
}

#[test]
fn thinking_stream_keeps_signature_and_sends_redacted_block_whole() {
    let (evs, _) = recorded("converse_anthropic_thinking.json");
    assert_well_formed(&evs);
    let starts: Vec<&Value> = of_type(&evs, "content_block_start").into_iter().map(|s| &s["content_block"]).collect();
    assert_eq!(starts[0], &json!({"type": "thinking", "thinking": ""}));
    assert_eq!(
        starts[1],
        &json!({"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpP"})
    );
    assert_eq!(starts[2], &json!({"type": "text", "text": ""}));
    assert_eq!(
        deltas(&evs, 0, "thinking"),
        "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3"
    );
    assert_eq!(deltas(&evs, 0, "signature"), "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds");
    let sig = evs.iter().find(|e| e["delta"]["type"] == "signature_delta").unwrap();
    assert_eq!(sig["index"], 0);
    assert!(
        evs.iter().all(|e| !(e["type"] == "content_block_delta" && e["index"] == 1)),
        "redacted block has no deltas"
    );
    assert_eq!(deltas(&evs, 2, "text"), "27 * 453 = 12,231");
    let md = of_type(&evs, "message_delta")[0];
    assert_eq!(md["usage"]["cache_read_input_tokens"], 100);
    assert_eq!(md["usage"]["output_tokens"], 45);
}

#[test]
fn throttling_exception_mid_stream_ends_with_rate_limit_error_and_no_message_stop() {
    let (evs, t) = recorded("converse_anthropic_throttled.json");
    assert_well_formed(&evs);
    let last = evs.last().unwrap();
    assert_eq!(
        last,
        &json!({"type": "error", "error": {"type": "rate_limit_error",
                "message": "Too many tokens, please wait before trying again."}})
    );
    assert!(of_type(&evs, "message_stop").is_empty());
    assert!(of_type(&evs, "message_delta").is_empty());
    assert_eq!(deltas(&evs, 0, "text"), "Once upon a", "nothing after the exception is translated");
    assert!(t.is_done());
}

#[test]
fn stream_ended_before_message_stop_gets_an_api_error() {
    let (evs, _) = recorded("converse_anthropic_truncated.json");
    assert_well_formed(&evs);
    assert_eq!(of_type(&evs, "content_block_start")[0]["content_block"]["name"], "Bash");
    let last = evs.last().unwrap();
    assert_eq!(last["error"]["type"], "api_error");
    assert!(last["error"]["message"].as_str().unwrap().contains("messageStop"));
    assert!(of_type(&evs, "message_stop").is_empty());
}

#[test]
fn stream_without_metadata_still_closes_with_zero_usage() {
    let mut f = frames("converse_anthropic_text.json");
    assert_eq!(f.pop().unwrap().0, "metadata");
    let (evs, t) = translate(&f);
    assert_well_formed(&evs);
    let md = of_type(&evs, "message_delta")[0];
    assert_eq!(md["delta"]["stop_reason"], "end_turn");
    assert_eq!(md["usage"]["output_tokens"], 0);
    assert_eq!(t.usage(), None);
}

#[test]
fn events_after_the_end_produce_nothing() {
    let f = frames("converse_anthropic_tool_use.json");
    let mut t = new();
    let mut out = Vec::new();
    feed(&mut t, &f, &mut out);
    let before = out.len();
    for (name, payload) in &f {
        t.event(name, payload, &mut out);
    }
    t.exception("throttlingException", br#"{"message":"late"}"#, &mut out);
    t.finish(&mut out);
    assert_eq!(out.len(), before);
}

#[test]
fn open_blocks_are_closed_before_message_delta_when_upstream_skips_content_block_stop() {
    let f: Vec<(String, Vec<u8>)> =
        frames("converse_anthropic_text.json").into_iter().filter(|(name, _)| name != "contentBlockStop").collect();
    let (evs, _) = translate(&f);
    assert_well_formed(&evs);
    assert_eq!(of_type(&evs, "content_block_stop").len(), 1);
}

#[test]
fn exception_kinds_map_to_anthropic_error_types() {
    let cases = [
        ("serviceUnavailableException", json!({"message": "busy"}), "api_error"),
        ("throttlingException", json!({"message": "slow down"}), "rate_limit_error"),
        ("internalServerException", json!({"message": "oops"}), "api_error"),
        ("validationException", json!({"message": "bad"}), "invalid_request_error"),
        (
            "modelStreamErrorException",
            json!({"message": "Model error", "originalStatusCode": 529, "originalMessage": "Overloaded"}),
            "overloaded_error",
        ),
        ("modelStreamErrorException", json!({"message": "Model error"}), "api_error"),
        ("somethingNewException", json!({}), "api_error"),
    ];
    for (kind, payload, expected) in cases {
        let mut t = new();
        let mut out = Vec::new();
        t.event("messageStart", br#"{"role":"assistant"}"#, &mut out);
        t.exception(kind, &serde_json::to_vec(&payload).unwrap(), &mut out);
        let evs = events(&out);
        assert_well_formed(&evs);
        assert_eq!(evs.last().unwrap()["error"]["type"], expected, "{kind}");
        assert!(!evs.last().unwrap()["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[test]
fn message_id_is_deterministic_and_can_be_set() {
    let f = frames("converse_anthropic_text.json");
    let (a, _) = translate(&f);
    let (b, _) = translate(&f);
    assert_eq!(a[0]["message"]["id"], b[0]["message"]["id"]);
    let mut t = pipeline(StreamTranslator::new(MODEL, &ResponseOptions::default()).with_message_id("msg_req_42"));
    let mut out = Vec::new();
    feed(&mut t, &f, &mut out);
    assert_eq!(events(&out)[0]["message"]["id"], "msg_req_42");
}
