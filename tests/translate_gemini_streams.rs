//! Recorded Gemini streams: `tests/fixtures/streams/gemini_*.sse` (`streamGenerateContent?alt=sse`,
//! some with Gemini's `\r\n\r\n` delimiters) go through the relay's stream pipeline (SSE framing,
//! Gemini usage reader, `openai_gemini` / `anthropic_gemini` translator) whole, one byte at a time
//! and split in two at every offset; the client bytes must be the same every time, and what they
//! say is checked: text, whole function calls with their ids, thoughts, cumulative usage, finish
//! reasons, a blocked prompt as a refusal and a cut stream as an error.

use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use switchyard::api::Api;
use switchyard::providers::Framing;
use switchyard::sse::{SseDecoder, SseEvent};
use switchyard::stream::{StreamFailure, StreamPipeline};
use switchyard::translate::{Pair, ResponseOptions, Usage};

const CREATED: u64 = 1_700_000_000;
const MODEL: &str = "client-model";

const STREAMS: &[&str] = &[
    "gemini_text_crlf.sse",
    "gemini_tool_call.sse",
    "gemini_thinking_usage.sse",
    "gemini_prompt_blocked.sse",
    "gemini_safety_stop.sse",
    "gemini_truncated.sse",
];

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/streams").join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn opts(include_usage: bool) -> ResponseOptions {
    ResponseOptions { created: CREATED, include_usage, ..Default::default() }
}

/// The relay's pipeline for a Gemini upstream and a client of `pair`'s family.
fn pipeline(pair: Pair, o: &ResponseOptions) -> StreamPipeline {
    let client = if pair == Pair::AnthropicGemini { Api::Anthropic } else { Api::OpenAi };
    StreamPipeline::new(Framing::Sse, Api::Gemini, client, Some(pair.stream(MODEL, o)), false)
}

fn run(mut p: StreamPipeline, pieces: &[&[u8]]) -> (Vec<u8>, StreamPipeline) {
    let mut out = Vec::new();
    for piece in pieces {
        p.push(piece);
        p.relay(&mut out);
    }
    p.finish(&mut out);
    (out, p)
}

/// Whole, byte at a time and every two-way split give the same bytes; returns them and the
/// pipeline that read the stream whole.
fn translate(pair: Pair, name: &str, o: &ResponseOptions) -> (Vec<u8>, StreamPipeline) {
    let input = fixture(name);
    let (whole, p) = run(pipeline(pair, o), &[&input]);
    assert!(!whole.is_empty());
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(pipeline(pair, o), &bytes).0, whole, "{name}: byte at a time differs");
    for i in 0..=input.len() {
        let (split, _) = run(pipeline(pair, o), &[&input[..i], &input[i..]]);
        assert!(split == whole, "{name}: split at byte {i} differs");
    }
    (whole, p)
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

/// Event names of an Anthropic stream, in order.
fn names(evs: &[SseEvent]) -> Vec<String> {
    evs.iter().map(|e| e.event.clone().unwrap_or_default()).collect()
}

#[test]
fn every_gemini_stream_translates_the_same_whole_byte_by_byte_and_split_anywhere() {
    for name in STREAMS {
        for pair in [Pair::OpenAiGemini, Pair::AnthropicGemini] {
            translate(pair, name, &opts(true));
        }
    }
}

#[test]
fn crlf_delimited_text_becomes_openai_chunks_with_usage_then_done() {
    let (out, p) = translate(Pair::OpenAiGemini, "gemini_text_crlf.sse", &opts(true));
    let evs = events(&out);
    assert!(evs.iter().all(|e| e.event.is_none()), "OpenAI chunks carry no event names");
    assert_eq!(evs.iter().filter(|e| e.data == "[DONE]").count(), 1);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    let chunks = data_json(&evs);
    for c in &chunks {
        assert_eq!(c["id"], "chatcmpl-IZI2acSKMoWl0-kPmYj2yQc");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!((c["created"].as_u64(), c["model"].as_str()), (Some(CREATED), Some(MODEL)));
    }
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    assert_eq!(delta_text(&chunks, "content"), "Hello! How can I help — café ☕?");
    assert_eq!(finish_reasons(&chunks), vec![json!("stop")]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 7, "completion_tokens": 10, "total_tokens": 17,
               "prompt_tokens_details": {"cached_tokens": 0}})
    );
    // The usage reader saw the same cumulative counts, set (not added) per chunk.
    assert_eq!(p.usage(), Some(&Usage { input_tokens: 7, output_tokens: 10, ..Default::default() }));
    assert_eq!(p.content_events(), 3);
}

#[test]
fn without_include_usage_there_is_no_usage_chunk_but_usage_is_read() {
    let (out, p) = translate(Pair::OpenAiGemini, "gemini_text_crlf.sse", &opts(false));
    let evs = events(&out);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    assert!(data_json(&evs).iter().all(|c| c.get("usage").is_none()));
    assert_eq!(p.usage().unwrap().prompt_tokens(), 7);
}

#[test]
fn whole_function_calls_become_one_tool_call_delta_each_with_ids_carrying_the_signature() {
    let (out, _) = translate(Pair::OpenAiGemini, "gemini_tool_call.sse", &opts(true));
    let chunks = data_json(&events(&out));
    assert_eq!(delta_text(&chunks, "content"), "I'll check both cities.");
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert_eq!(calls.len(), 2, "one delta per call, arguments whole");
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(
        calls[0]["function"],
        json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"c\"}"})
    );
    let first_id = calls[0]["id"].as_str().unwrap();
    assert!(first_id.starts_with("call_"), "{first_id}");
    assert!(first_id.ends_with("__thought__CikBcsjafFK168IbtVtoxVV0Tsn8O-eU45rzJahzwuKGmMbdMdfpmNpgBwplAXLI2nyA_pIFcnZwFm-7WFmLyMd8R4DXwsjqaeAAfCKo5G1x"), "{first_id}");
    assert_eq!(calls[1]["index"], 1);
    assert_eq!(calls[1]["function"]["arguments"], "{\"city\":\"Rome\"}");
    assert!(!calls[1]["id"].as_str().unwrap().contains("__thought__"));
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(finish_reasons(&chunks), vec![json!("tool_calls")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!((usage["completion_tokens"].as_u64(), usage["total_tokens"].as_u64()), (Some(134), Some(217)));
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 104);
}

#[test]
fn thoughts_become_reasoning_content_and_cached_tokens_count_in_the_prompt() {
    let (out, p) = translate(Pair::OpenAiGemini, "gemini_thinking_usage.sse", &opts(true));
    let chunks = data_json(&events(&out));
    assert_eq!(
        delta_text(&chunks, "reasoning_content"),
        "**Checking divisibility**\n\n97 is odd; not divisible by 3, 5 or 7."
    );
    assert_eq!(delta_text(&chunks, "content"), "Yes, 97 is prime.");
    assert!(!out.windows(16).any(|w| w == b"thoughtSignature"), "signatures of text parts are not relayed");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage,
        &json!({"prompt_tokens": 1845, "completion_tokens": 127, "total_tokens": 1972,
                "prompt_tokens_details": {"cached_tokens": 1800},
                "completion_tokens_details": {"reasoning_tokens": 120}})
    );
    let u = p.usage().unwrap();
    assert_eq!((u.input_tokens, u.cache_read_input_tokens, u.output_tokens, u.reasoning_tokens), (45, 1800, 127, 120));
}

fn assert_refusal(p: &StreamPipeline) {
    assert_eq!(
        p.refusal(),
        Some(&StreamFailure {
            status: 400,
            message: "the prompt was blocked by the upstream's safety filters (blockReason SAFETY)".into(),
            code: Some("content_filter".into()),
        })
    );
}

#[test]
fn a_blocked_prompt_is_a_refusal_with_a_400_error_event_and_nothing_else() {
    let (out, p) = translate(Pair::OpenAiGemini, "gemini_prompt_blocked.sse", &opts(true));
    assert_refusal(&p);
    let evs = events(&out);
    assert_eq!(evs.len(), 1, "{}", String::from_utf8_lossy(&out));
    let e: Value = serde_json::from_str(&evs[0].data).unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["code"], "content_filter");
    assert_eq!(p.usage().unwrap().prompt_tokens(), 14, "the blocked prompt's tokens are still counted");

    let (out, p) = translate(Pair::AnthropicGemini, "gemini_prompt_blocked.sse", &opts(false));
    assert_refusal(&p);
    let evs = events(&out);
    assert_eq!(names(&evs), ["error"]);
    let e: Value = serde_json::from_str(&evs[0].data).unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
}

#[test]
fn a_safety_stop_mid_answer_is_content_filter_or_refusal() {
    let (out, p) = translate(Pair::OpenAiGemini, "gemini_safety_stop.sse", &opts(false));
    assert!(p.refusal().is_none(), "content was sent: not a refusal of the prompt");
    let chunks = data_json(&events(&out));
    assert_eq!(delta_text(&chunks, "content"), "Step one: take the");
    assert_eq!(finish_reasons(&chunks), vec![json!("content_filter")]);

    let (out, _) = translate(Pair::AnthropicGemini, "gemini_safety_stop.sse", &opts(false));
    let evs = events(&out);
    let delta: Value = serde_json::from_str(&evs[evs.len() - 2].data).unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "refusal");
}

#[test]
fn a_stream_cut_before_a_finish_reason_ends_with_an_error_and_no_done() {
    let (out, _) = translate(Pair::OpenAiGemini, "gemini_truncated.sse", &opts(true));
    let evs = events(&out);
    assert!(evs.iter().all(|e| e.data != "[DONE]"));
    let chunks = data_json(&evs);
    assert_eq!(delta_text(&chunks, "content"), "The answer is forty");
    assert_eq!(chunks.last().unwrap()["error"]["code"], "stream_incomplete");

    let (out, _) = translate(Pair::AnthropicGemini, "gemini_truncated.sse", &opts(false));
    let evs = events(&out);
    assert_eq!(names(&evs).last().unwrap(), "error");
    assert!(!names(&evs).contains(&"message_stop".to_string()));
}

#[test]
fn crlf_delimited_text_becomes_anthropic_events() {
    let (out, _) = translate(Pair::AnthropicGemini, "gemini_text_crlf.sse", &opts(false));
    let evs = events(&out);
    assert_eq!(
        names(&evs),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data = data_json(&evs);
    assert_eq!(data[0]["message"]["id"], "msg_IZI2acSKMoWl0-kPmYj2yQc");
    assert_eq!(data[0]["message"]["model"], MODEL);
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 7);
    let text: String = data.iter().filter_map(|d| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Hello! How can I help — café ☕?");
    assert_eq!(data[6]["delta"], json!({"stop_reason": "end_turn", "stop_sequence": null}));
    assert_eq!(
        data[6]["usage"],
        json!({"input_tokens": 7, "output_tokens": 10, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
    );
}

#[test]
fn whole_function_calls_become_complete_tool_use_blocks() {
    let (out, _) = translate(Pair::AnthropicGemini, "gemini_tool_call.sse", &opts(false));
    let evs = events(&out);
    let data = data_json(&evs);
    let starts: Vec<&Value> = data.iter().filter(|d| d["type"] == "content_block_start").collect();
    assert_eq!(starts.len(), 3);
    assert_eq!(starts[0]["content_block"], json!({"type": "text", "text": ""}));
    assert_eq!(starts[1]["content_block"]["type"], "tool_use");
    assert_eq!(starts[1]["content_block"]["name"], "get_weather");
    let id = starts[1]["content_block"]["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_") && id.contains("__thought__"), "{id}");
    for (index, args) in [(1, json!({"city": "Paris", "unit": "c"})), (2, json!({"city": "Rome"}))] {
        let input: String = data
            .iter()
            .filter(|d| d["index"] == index && d["delta"]["type"] == "input_json_delta")
            .filter_map(|d| d["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(serde_json::from_str::<Value>(&input).unwrap(), args);
    }
    let stops = data.iter().filter(|d| d["type"] == "content_block_stop").count();
    assert_eq!(stops, 3, "every block is closed");
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta["usage"]["output_tokens"], 134);
}

#[test]
fn thoughts_become_a_thinking_block_before_the_text_block() {
    let (out, _) = translate(Pair::AnthropicGemini, "gemini_thinking_usage.sse", &opts(false));
    let data = data_json(&events(&out));
    let starts: Vec<&Value> = data.iter().filter(|d| d["type"] == "content_block_start").collect();
    assert_eq!(starts[0]["content_block"], json!({"type": "thinking", "thinking": "", "signature": ""}));
    assert_eq!(starts[1]["content_block"], json!({"type": "text", "text": ""}));
    let thinking: String = data.iter().filter_map(|d| d["delta"]["thinking"].as_str()).collect();
    assert_eq!(thinking, "**Checking divisibility**\n\n97 is odd; not divisible by 3, 5 or 7.");
    let text: String = data.iter().filter_map(|d| d["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Yes, 97 is prime.");
    let delta = data.iter().find(|d| d["type"] == "message_delta").unwrap();
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 45, "output_tokens": 127, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": 0})
    );
}

#[test]
fn signed_thought_parts_stream_a_signature_delta_into_the_thinking_block() {
    let wire = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Plan.\",\"thought\": true}],\"role\": \"model\"},\"index\": 0}],\"responseId\": \"s\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"\",\"thought\": true,\"thoughtSignature\": \"c2ln\"}],\"role\": \"model\"},\"index\": 0}],\"responseId\": \"s\"}\r\n\r\n",
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Done.\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"responseId\": \"s\"}\r\n\r\n",
    );
    let (out, _) = run(pipeline(Pair::AnthropicGemini, &opts(false)), &[wire.as_bytes()]);
    let data = data_json(&events(&out));
    let deltas: Vec<&Value> = data.iter().filter(|d| d["type"] == "content_block_delta").map(|d| &d["delta"]).collect();
    assert_eq!(
        deltas,
        [
            &json!({"type": "thinking_delta", "thinking": "Plan."}),
            &json!({"type": "signature_delta", "signature": "c2ln"}),
            &json!({"type": "text_delta", "text": "Done."})
        ]
    );
}

#[test]
fn an_error_inside_the_stream_keeps_its_status_in_the_clients_shape() {
    let wire = concat!(
        "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hi\"}],\"role\": \"model\"},\"index\": 0}]}\r\n\r\n",
        "data: {\"error\": {\"code\": 429,\"message\": \"Resource exhausted\",\"status\": \"RESOURCE_EXHAUSTED\"}}\r\n\r\n",
    );
    let (out, p) = run(pipeline(Pair::OpenAiGemini, &opts(false)), &[wire.as_bytes()]);
    assert!(p.refusal().is_none());
    let last = data_json(&events(&out)).pop().unwrap();
    assert_eq!(
        last,
        json!({"error": {"message": "Resource exhausted", "type": "requests", "param": null, "code": "RESOURCE_EXHAUSTED"}})
    );
    let (out, _) = run(pipeline(Pair::AnthropicGemini, &opts(false)), &[wire.as_bytes()]);
    let last = data_json(&events(&out)).pop().unwrap();
    assert_eq!(last["error"], json!({"type": "rate_limit_error", "message": "Resource exhausted"}));
}
