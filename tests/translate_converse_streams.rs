//! Recorded ConverseStream tests: `tests/fixtures/streams/converse_*.json`
//! are arrays of decoded upstream frames, either
//! `{"event": "<:event-type>", "payload": {…}}` or
//! `{"exception": "<:exception-type>", "payload": {…}}`. Each is encoded as
//! AWS event-stream frames and fed through the relay's stream pipeline
//! (event-stream decoding, usage reader, `openai_converse` translator) whole,
//! one byte at a time and split at every offset; the OpenAI SSE it writes
//! must be the same and is checked: valid chunks, tool-call deltas that
//! concatenate to the full arguments, the usage chunk, and `[DONE]` only on a
//! complete stream.

mod common;

use common::{converse_fixture_wire, ConversePipeline};
use serde_json::{json, Value};
use switchyard::api::Api;
use switchyard::sse::{SseDecoder, SseEvent};
use switchyard::translate::openai_converse::StreamTranslator;
use switchyard::translate::{ResponseOptions, Usage};

const CREATED: u64 = 1_700_000_000;
const MODEL: &str = "claude-sonnet-4-5";

fn opts(include_usage: bool) -> ResponseOptions {
    ResponseOptions { created: CREATED, forced_json_tool: None, include_usage, ..Default::default() }
}

fn pipeline(t: StreamTranslator) -> ConversePipeline {
    ConversePipeline::new(Api::OpenAi, Box::new(t))
}

fn new(o: &ResponseOptions) -> ConversePipeline {
    pipeline(StreamTranslator::new(MODEL, o))
}

/// The client's bytes for a recorded stream, the same in every split.
fn run(name: &str, o: &ResponseOptions) -> Vec<u8> {
    common::assert_converse_split_invariant(|| new(o), &converse_fixture_wire(name))
}

/// Feed a whole recorded stream, then end it.
fn translate(t: &mut ConversePipeline, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    t.push(&converse_fixture_wire(name), &mut out);
    t.finish(&mut out);
    out
}

fn events(out: &[u8]) -> Vec<SseEvent> {
    let mut d = SseDecoder::new();
    let mut evs = Vec::new();
    d.push(out, &mut evs);
    d.finish(&mut evs);
    evs
}

/// The JSON of every event but `[DONE]`.
fn data_json(evs: &[SseEvent]) -> Vec<Value> {
    evs.iter().filter(|e| e.data != "[DONE]").map(|e| serde_json::from_str(&e.data).unwrap()).collect()
}

/// Every event is unnamed; all but errors are chunks of one completion.
fn assert_valid_chunks(evs: &[SseEvent]) {
    assert!(evs.iter().all(|e| e.event.is_none()), "OpenAI chunks carry no event names");
    let chunks: Vec<Value> = data_json(evs).into_iter().filter(|c| c.get("error").is_none()).collect();
    let id = chunks[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("chatcmpl-"));
    for c in &chunks {
        assert_eq!(c["id"], id.as_str());
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["created"], CREATED);
        assert_eq!(c["model"], MODEL);
        assert!(c["choices"].is_array());
    }
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
}

fn done_count(evs: &[SseEvent]) -> usize {
    evs.iter().filter(|e| e.data == "[DONE]").count()
}

fn delta_text(chunks: &[Value], key: &str) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"][key].as_str()).collect()
}

fn finish_reasons(chunks: &[Value]) -> Vec<Value> {
    chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| c["finish_reason"].clone())
        .filter(|f| !f.is_null())
        .collect()
}

#[test]
fn text_stream_becomes_chunks_with_usage_then_done() {
    let out = run("converse_text.json", &opts(true));
    let evs = events(&out);
    assert_valid_chunks(&evs);
    assert_eq!(done_count(&evs), 1);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    let chunks = data_json(&evs);
    assert_eq!(delta_text(&chunks, "content"), "Hello! How can I help — café ☕?");
    assert_eq!(finish_reasons(&chunks), vec![json!("stop")]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 11, "completion_tokens": 12, "total_tokens": 23,
               "prompt_tokens_details": {"cached_tokens": 0}})
    );
}

#[test]
fn tool_use_deltas_concatenate_to_the_full_arguments() {
    let out = run("converse_tool_use.json", &opts(true));
    let evs = events(&out);
    assert_valid_chunks(&evs);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    let chunks = data_json(&evs);
    assert_eq!(delta_text(&chunks, "content"), "I'll check both cities.");

    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert_eq!(
        calls[0],
        &json!({"index": 0, "id": "tooluse_Aa1bC2dE3fG4hI5jK6lM7n", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}})
    );
    let starts: Vec<&Value> = calls.iter().copied().filter(|c| c.get("id").is_some()).collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[1]["index"], 1);
    assert_eq!(starts[1]["id"], "tooluse_Zz9yX8wV7uT6sR5qP4oN3m");
    let args = |index: u64| -> String {
        calls.iter().filter(|c| c["index"] == index).filter_map(|c| c["function"]["arguments"].as_str()).collect()
    };
    assert_eq!(args(0), r#"{"city": "Paris", "unit": "c"}"#);
    assert_eq!(serde_json::from_str::<Value>(&args(1)).unwrap(), json!({"city": "Rome"}));

    assert_eq!(finish_reasons(&chunks), vec![json!("tool_calls")]);
    assert_eq!(chunks.last().unwrap()["usage"]["total_tokens"], 508);
}

#[test]
fn reasoning_becomes_reasoning_content_and_cache_reads_count_in_prompt() {
    let out = run("converse_reasoning.json", &opts(true));
    let evs = events(&out);
    assert_valid_chunks(&evs);
    let chunks = data_json(&evs);
    assert_eq!(delta_text(&chunks, "reasoning_content"), "97 is odd; not divisible by 3, 5 or 7.");
    assert_eq!(delta_text(&chunks, "content"), "Yes, 97 is prime.");
    assert!(!out.windows(9).any(|w| w == b"signature"), "signatures are not relayed");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 1845);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1800);
    assert_eq!(usage["completion_tokens"], 120);
    assert_eq!(usage["total_tokens"], 1965);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
}

#[test]
fn without_include_usage_there_is_no_usage_chunk_but_usage_is_reported() {
    let mut t = new(&opts(false));
    let out = translate(&mut t, "converse_text.json");
    let evs = events(&out);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    assert!(data_json(&evs).iter().all(|c| c.get("usage").is_none()));
    assert_eq!(t.usage(), Some(Usage { input_tokens: 11, output_tokens: 12, ..Default::default() }));
    assert!(t.is_done());
}

#[test]
fn throttling_exception_mid_stream_ends_with_an_error_and_no_done() {
    let out = run("converse_throttling_exception.json", &opts(true));
    let evs = events(&out);
    assert_valid_chunks(&evs);
    assert_eq!(done_count(&evs), 0);
    let chunks = data_json(&evs);
    assert_eq!(delta_text(&chunks, "content"), "Once upon", "nothing after the exception is relayed");
    let last = chunks.last().unwrap();
    assert_eq!(
        last,
        &json!({"error": {"message": "Too many tokens, please wait before trying again.",
                          "type": "requests", "param": null, "code": "ThrottlingException"}})
    );
    assert!(finish_reasons(&chunks).is_empty());
}

#[test]
fn stream_ended_before_message_stop_gets_an_error_and_no_done() {
    let out = run("converse_no_message_stop.json", &opts(true));
    let evs = events(&out);
    assert_valid_chunks(&evs);
    assert_eq!(done_count(&evs), 0);
    let chunks = data_json(&evs);
    assert_eq!(delta_text(&chunks, "content"), "The answer is forty");
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(last["error"]["code"], "stream_incomplete");
}

#[test]
fn message_stop_without_metadata_completes_at_finish_without_usage() {
    let recorded: Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams/converse_text.json")).unwrap(),
    )
    .unwrap();
    let mut t = new(&opts(true));
    let mut out = Vec::new();
    for f in recorded.as_array().unwrap().iter().filter(|f| f["event"] != "metadata") {
        t.event(f["event"].as_str().unwrap(), &serde_json::to_vec(&f["payload"]).unwrap(), &mut out);
    }
    assert!(!t.is_done(), "the metadata event may still come");
    assert_eq!(done_count(&events(&out)), 0);
    t.finish(&mut out);
    let evs = events(&out);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    assert!(data_json(&evs).iter().all(|c| c.get("usage").is_none()));
    assert_eq!(finish_reasons(&data_json(&evs)), vec![json!("stop")]);
}

#[test]
fn frames_after_the_end_and_a_second_finish_write_nothing() {
    let mut t = new(&opts(true));
    let mut out = translate(&mut t, "converse_text.json");
    let len = out.len();
    t.event("contentBlockDelta", br#"{"contentBlockIndex":0,"delta":{"text":"late"}}"#, &mut out);
    t.exception("throttlingException", br#"{"message":"late"}"#, &mut out);
    t.finish(&mut out);
    assert_eq!(out.len(), len);
}

#[test]
fn forced_json_tool_input_streams_as_content() {
    let o = ResponseOptions {
        created: CREATED,
        forced_json_tool: Some("person".into()),
        include_usage: false,
        ..Default::default()
    };
    let mut t = new(&o);
    let mut out = Vec::new();
    t.event("messageStart", br#"{"role":"assistant"}"#, &mut out);
    t.event(
        "contentBlockStart",
        br#"{"contentBlockIndex":0,"start":{"toolUse":{"toolUseId":"tooluse_j1","name":"person"}}}"#,
        &mut out,
    );
    t.event("contentBlockDelta", br#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"{\"name\":"}}}"#, &mut out);
    t.event("contentBlockDelta", br#"{"contentBlockIndex":0,"delta":{"toolUse":{"input":"\"Alice\"}"}}}"#, &mut out);
    t.event("messageStop", br#"{"stopReason":"tool_use"}"#, &mut out);
    t.event("metadata", br#"{"usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3}}"#, &mut out);
    let evs = events(&out);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    let chunks = data_json(&evs);
    assert_eq!(delta_text(&chunks, "content"), r#"{"name":"Alice"}"#);
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
    assert_eq!(finish_reasons(&chunks), vec![json!("stop")]);
}

#[test]
fn request_id_names_the_chunks_and_the_default_id_is_deterministic() {
    let a = run("converse_text.json", &opts(false));
    assert_eq!(a, run("converse_text.json", &opts(false)));
    let mut t =
        pipeline(StreamTranslator::new(MODEL, &opts(false)).with_request_id("a1b2c3d4-0000-4e5f-8a9b-0123456789ab"));
    let out = translate(&mut t, "converse_text.json");
    for c in data_json(&events(&out)) {
        assert_eq!(c["id"], "chatcmpl-a1b2c3d4-0000-4e5f-8a9b-0123456789ab");
    }
}

#[test]
fn malformed_event_payload_ends_the_stream_with_an_error() {
    let mut t = new(&opts(false));
    let mut out = Vec::new();
    t.event("messageStart", br#"{"role":"assistant"}"#, &mut out);
    t.event("contentBlockDelta", b"{not json", &mut out);
    t.finish(&mut out);
    let evs = events(&out);
    assert_eq!(done_count(&evs), 0);
    let last = data_json(&evs).pop().unwrap();
    assert_eq!(last["error"]["type"], "server_error");
}

#[test]
fn model_stream_error_keeps_the_original_status_and_message() {
    let mut t = new(&opts(false));
    let mut out = Vec::new();
    t.event("messageStart", br#"{"role":"assistant"}"#, &mut out);
    t.exception(
        "modelStreamErrorException",
        br#"{"message":"Model error","originalStatusCode":400,"originalMessage":"prompt is too long"}"#,
        &mut out,
    );
    let last = data_json(&events(&out)).pop().unwrap();
    assert_eq!(last["error"]["code"], "ModelStreamErrorException");
    assert_eq!(last["error"]["type"], "invalid_request_error");
    assert_eq!(last["error"]["message"], "Model error (prompt is too long)");
}
