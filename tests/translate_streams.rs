//! Recorded-stream tests: the documented provider examples in
//! `tests/fixtures/streams/*.sse` are translated whole, one byte at a time,
//! and split in two at every offset; the output must be byte-identical. Key
//! content of each translation is asserted as well.

use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use switchyard::api::Api;
use switchyard::providers::Framing;
use switchyard::sse::{SseDecoder, SseEvent};
use switchyard::stream::{StreamPipeline, StreamTranslate};
use switchyard::translate::{anthropic_openai, openai_anthropic, ResponseOptions, Usage};

const CREATED: u64 = 1_700_000_000;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/streams").join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Anything that translates a byte stream.
trait Translate {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>);
    fn finish(&mut self, out: &mut Vec<u8>);
}

/// The relay's stream pipeline (SSE framing, usage reader, translator) around one translator.
struct Piped(StreamPipeline);

impl Piped {
    fn new(upstream: Api, client: Api, translator: Box<dyn StreamTranslate>) -> Piped {
        Piped(StreamPipeline::new(Framing::Sse, upstream, client, Some(translator), false))
    }

    fn usage(&self) -> Option<Usage> {
        self.0.usage().cloned()
    }
}

impl Translate for Piped {
    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        self.0.push(bytes);
        self.0.relay(out);
    }
    fn finish(&mut self, out: &mut Vec<u8>) {
        self.0.finish(out)
    }
}

fn run<T: Translate>(mut t: T, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        t.push(p, &mut out);
    }
    t.finish(&mut out);
    out
}

fn to_openai(opts: &ResponseOptions) -> impl Fn() -> Piped + '_ {
    move || {
        let t = openai_anthropic::StreamTranslator::new("gpt-4o", CREATED, opts);
        Piped::new(Api::Anthropic, Api::OpenAi, Box::new(t))
    }
}

fn to_anthropic() -> Piped {
    let t = anthropic_openai::StreamTranslator::new("claude-sonnet-4-5", CREATED, &ResponseOptions::default());
    Piped::new(Api::OpenAi, Api::Anthropic, Box::new(t))
}

/// Whole, byte-at-a-time and every two-way split must give the same bytes.
fn assert_split_invariant<T: Translate>(make: impl Fn() -> T, input: &[u8]) -> Vec<u8> {
    let whole = run(make(), &[input]);
    assert!(!whole.is_empty());
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(make(), &bytes), whole, "byte-at-a-time differs");
    for i in 0..=input.len() {
        let split = run(make(), &[&input[..i], &input[i..]]);
        assert!(split == whole, "split at byte {i} differs");
    }
    whole
}

fn events(out: &[u8]) -> Vec<SseEvent> {
    let mut d = SseDecoder::new();
    let mut evs = Vec::new();
    d.push(out, &mut evs);
    d.finish(&mut evs);
    evs
}

fn data_json(evs: &[SseEvent]) -> Vec<Value> {
    evs.iter().filter(|e| e.data != "[DONE]").map(|e| serde_json::from_str(&e.data).unwrap()).collect()
}

fn with_usage() -> ResponseOptions {
    ResponseOptions { created: CREATED, forced_json_tool: None, include_usage: true, ..Default::default() }
}

#[test]
fn stream_split_at_every_byte_gives_same_output() {
    let opts = with_usage();
    for name in ["anthropic_text_tool_use.sse", "anthropic_thinking_crlf.sse"] {
        assert_split_invariant(to_openai(&opts), &fixture(name));
    }
    for name in ["openai_tool_calls_usage.sse", "openai_text_no_done.sse"] {
        assert_split_invariant(to_anthropic, &fixture(name));
    }
}

#[test]
fn anthropic_stream_becomes_openai_chunks_with_tool_call_and_usage() {
    let opts = with_usage();
    let out = run(to_openai(&opts)(), &[&fixture("anthropic_text_tool_use.sse")]);
    let evs = events(&out);
    assert!(evs.iter().all(|e| e.event.is_none()), "OpenAI chunks carry no event names");
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    let chunks = data_json(&evs);
    for c in &chunks {
        assert_eq!(c["id"], "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["created"], CREATED);
        assert_eq!(c["model"], "gpt-4o");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Okay, let's check the weather for San Francisco, CA:");

    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(
        calls[0],
        &json!({"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                "function": {"name": "get_weather", "arguments": ""}})
    );
    assert!(calls.iter().all(|c| c["index"] == 0));
    let args: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );

    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, vec![&json!("tool_calls")]);

    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 472);
    assert_eq!(last["usage"]["completion_tokens"], 89);
    assert_eq!(last["usage"]["total_tokens"], 561);
}

#[test]
fn anthropic_stream_without_include_usage_has_no_usage_chunk_but_reports_usage() {
    let opts = ResponseOptions { created: CREATED, ..Default::default() };
    let mut t = to_openai(&opts)();
    let mut out = Vec::new();
    t.push(&fixture("anthropic_text_tool_use.sse"), &mut out);
    t.finish(&mut out);
    let evs = events(&out);
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    assert!(data_json(&evs).iter().all(|c| c.get("usage").is_none()));
    assert_eq!(t.usage(), Some(Usage { input_tokens: 472, output_tokens: 89, ..Default::default() }));
}

#[test]
fn anthropic_thinking_becomes_reasoning_content_and_cache_counts_in_prompt() {
    let opts = with_usage();
    let out = run(to_openai(&opts)(), &[&fixture("anthropic_thinking_crlf.sse")]);
    let chunks = data_json(&events(&out));
    let reasoning: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
    assert!(reasoning.starts_with("Let me solve this step by step:\n\n1."));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "27 * 453 = 12,231 — café ☕");
    assert!(!out.windows(9).any(|w| w == b"signature"));
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["prompt_tokens"], 112);
    assert_eq!(last["usage"]["prompt_tokens_details"]["cached_tokens"], 100);
    assert_eq!(last["usage"]["completion_tokens"], 45);
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, "stop");
}

#[test]
fn anthropic_stream_cut_before_message_stop_ends_with_error_not_done() {
    let full = String::from_utf8(fixture("anthropic_text_tool_use.sse")).unwrap();
    let cut = &full[..full.find("event: message_delta").unwrap()];
    let opts = with_usage();
    let out = run(to_openai(&opts)(), &[cut.as_bytes()]);
    let evs = events(&out);
    assert!(evs.iter().all(|e| e.data != "[DONE]"));
    let last: Value = serde_json::from_str(&evs.last().unwrap().data).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
}

#[test]
fn anthropic_error_event_becomes_openai_error_and_stops_the_stream() {
    let input = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
        "event: error\n",
        "data: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );
    let opts = with_usage();
    let out = assert_split_invariant(to_openai(&opts), input.as_bytes());
    let evs = events(&out);
    assert_eq!(evs.len(), 2);
    assert!(evs.iter().all(|e| e.data != "[DONE]"));
    let err: Value = serde_json::from_str(&evs[1].data).unwrap();
    assert_eq!(
        err,
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": "overloaded"}})
    );
}

#[test]
fn forced_json_tool_stream_is_returned_as_content_with_stop() {
    let input = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_j\",\"content\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_j\",\"name\":\"person\",\"input\":{}}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"name\\\": \"}}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Alice\\\"}\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );
    let opts = ResponseOptions {
        created: CREATED,
        forced_json_tool: Some("person".into()),
        include_usage: false,
        ..Default::default()
    };
    let out = assert_split_invariant(to_openai(&opts), input.as_bytes());
    let chunks = data_json(&events(&out));
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), json!({"name": "Alice"}));
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
}

#[test]
fn openai_stream_becomes_anthropic_events_with_increasing_block_indices() {
    let out = run(to_anthropic(), &[&fixture("openai_tool_calls_usage.sse")]);
    let evs = events(&out);
    let data = data_json(&evs);
    for (e, d) in evs.iter().zip(&data) {
        assert_eq!(e.event.as_deref(), d["type"].as_str(), "event name matches type");
    }
    let summary: Vec<String> = data
        .iter()
        .map(|d| match d["type"].as_str().unwrap() {
            "content_block_start" => format!("start {} {}", d["index"], d["content_block"]["type"].as_str().unwrap()),
            "content_block_delta" => format!("delta {}", d["index"]),
            "content_block_stop" => format!("stop {}", d["index"]),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            "message_start",
            "start 0 text",
            "delta 0",
            "stop 0",
            "start 1 tool_use",
            "delta 1",
            "delta 1",
            "delta 1",
            "delta 1",
            "stop 1",
            "start 2 tool_use",
            "delta 2",
            "stop 2",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(data[0]["message"]["id"], "msg_BNbTqS9xyz");
    assert_eq!(data[0]["message"]["model"], "claude-sonnet-4-5");
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 0);
    assert_eq!(data[1]["content_block"], json!({"type": "text", "text": ""}));
    assert_eq!(data[2]["delta"], json!({"type": "text_delta", "text": "Let me check both."}));
    assert_eq!(
        data[4]["content_block"],
        json!({"type": "tool_use", "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "name": "get_weather", "input": {}})
    );
    let args = |idx: u64| -> Value {
        let s: String = data
            .iter()
            .filter(|d| d["type"] == "content_block_delta" && d["index"] == idx)
            .map(|d| d["delta"]["partial_json"].as_str().unwrap())
            .collect();
        serde_json::from_str(&s).unwrap()
    };
    assert_eq!(args(1), json!({"location": "Paris, France"}));
    assert_eq!(args(2), json!({"location": "Bogotá, Colombia"}));
    let md = &data[13];
    assert_eq!(md["delta"]["stop_reason"], "tool_use");
    assert_eq!(md["usage"]["output_tokens"], 47);
    assert_eq!(md["usage"]["input_tokens"], 11);
    assert_eq!(md["usage"]["cache_read_input_tokens"], 64);
}

#[test]
fn openai_stream_reports_usage_from_usage_chunk() {
    let mut t = to_anthropic();
    let mut out = Vec::new();
    t.push(&fixture("openai_tool_calls_usage.sse"), &mut out);
    t.finish(&mut out);
    assert_eq!(
        t.usage(),
        Some(Usage {
            input_tokens: 11,
            output_tokens: 47,
            cache_read_input_tokens: 64,
            cache_creation_input_tokens: 0,
            reasoning_tokens: 0
        })
    );
}

#[test]
fn openai_stream_without_finish_reason_ends_with_error_not_message_stop() {
    let out = run(to_anthropic(), &[&fixture("openai_text_no_done.sse")]);
    let evs = events(&out);
    let names: Vec<&str> = evs.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names, vec!["message_start", "content_block_start", "content_block_delta", "error"]);
    let err: Value = serde_json::from_str(&evs[3].data).unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "api_error");
}

#[test]
fn openai_done_before_finish_reason_is_an_error() {
    let input =
        "data: {\"id\":\"chatcmpl-x\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
    let out = run(to_anthropic(), &[input.as_bytes()]);
    let evs = events(&out);
    assert_eq!(evs.last().unwrap().event.as_deref(), Some("error"));
    assert!(evs.iter().all(|e| e.event.as_deref() != Some("message_stop")));
}

#[test]
fn openai_stream_with_finish_reason_but_no_done_still_completes() {
    let input = concat!(
        "data: {\"id\":\"chatcmpl-y\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-y\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
    );
    let out = assert_split_invariant(to_anthropic, input.as_bytes());
    let data = data_json(&events(&out));
    let names: Vec<&str> = data.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(data[4]["delta"]["stop_reason"], "max_tokens");
}

#[test]
fn openai_error_chunk_becomes_anthropic_error_event() {
    let input = "data: {\"error\":{\"message\":\"Rate limit reached\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}\n\n";
    let out = run(to_anthropic(), &[input.as_bytes()]);
    let evs = events(&out);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].event.as_deref(), Some("error"));
    let v: Value = serde_json::from_str(&evs[0].data).unwrap();
    assert_eq!(v, json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}}));
}

#[test]
fn openai_text_after_tool_call_opens_a_new_block() {
    let input = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"done\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );
    let out = run(to_anthropic(), &[input.as_bytes()]);
    let data = data_json(&events(&out));
    let starts: Vec<(u64, &str)> = data
        .iter()
        .filter(|d| d["type"] == "content_block_start")
        .map(|d| (d["index"].as_u64().unwrap(), d["content_block"]["type"].as_str().unwrap()))
        .collect();
    assert_eq!(starts, vec![(0, "tool_use"), (1, "text")]);
    let stops: Vec<u64> =
        data.iter().filter(|d| d["type"] == "content_block_stop").map(|d| d["index"].as_u64().unwrap()).collect();
    assert_eq!(stops, vec![0, 1]);
    assert_eq!(data.last().unwrap()["type"], "message_stop");
}
