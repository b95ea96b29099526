//! Recorded upstream streams translated into the Responses event stream through the relay's pipeline:
//! OpenAI chunks (`responses_openai`), and Anthropic SSE and Bedrock Converse frames through the
//! composed pairs (upstream → chat chunks → Responses events). Each is fed whole, one byte at a time
//! and split in two at every offset, must give the same bytes, and is compared with its golden file
//! (`tests/fixtures/streams/<fixture>.responses.sse`; `BLESS=1` rewrites them). Every output is also
//! checked against the rules the official SDK's stream accumulator relies on.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use common::converse_fixture_wire;
use serde_json::{json, Value};
use switchyard::api::{Api, Endpoint};
use switchyard::providers::Framing;
use switchyard::stream::StreamPipeline;
use switchyard::translate::{Pair, RequestOptions, ResponseOptions};

const CREATED: u64 = 1_700_000_000;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/streams").join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The response options the gateway would have for this pair: from translating a streamed request
/// with a tool (its echo, and the inner pair's include_usage).
fn options(pair: Pair) -> ResponseOptions {
    let request = json!({"model": "m", "stream": true, "instructions": "Be brief.", "input": "Weather?",
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]});
    let body = serde_json::to_vec(&request).unwrap();
    pair.request(Endpoint::Responses, &body, &RequestOptions::default(), CREATED).unwrap().response
}

fn pipeline(pair: Pair, framing: Framing, upstream: Api) -> StreamPipeline {
    let opts = options(pair);
    StreamPipeline::new(framing, upstream, Api::Responses, Some(pair.stream("gpt-test", &opts)), false)
}

fn run(make: &dyn Fn() -> StreamPipeline, pieces: &[&[u8]]) -> Vec<u8> {
    let mut p = make();
    let mut out = Vec::new();
    for piece in pieces {
        p.push(piece);
        p.relay(&mut out);
    }
    p.finish(&mut out);
    out
}

/// Whole, byte at a time and every two-way split give the same bytes; returns them.
fn split_invariant(make: &dyn Fn() -> StreamPipeline, input: &[u8]) -> Vec<u8> {
    let whole = run(make, &[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(make, &bytes), whole, "byte-at-a-time differs");
    for i in 0..=input.len() {
        assert!(run(make, &[&input[..i], &input[i..]]) == whole, "split at byte {i} differs");
    }
    whole
}

/// Compares with (or, with BLESS, writes) the golden output.
fn golden(name: &str, out: &[u8]) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/streams").join(format!("{name}.responses.sse"));
    if std::env::var_os("BLESS").is_some() {
        fs::write(&p, out).unwrap();
        return;
    }
    let expected = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e} (BLESS=1 writes it)", p.display()));
    assert!(expected == out, "{} differs:\n{}", p.display(), String::from_utf8_lossy(out));
}

/// The events, checked against what the SDK's accumulator relies on: `event:` equals the data's
/// `type`; `sequence_number` counts from 0; `response.created` first; every item event refers to an
/// item added before and not yet done; content parts added before their deltas; deltas add up to the
/// `.done` texts; the final response lists the items done, in order (a failed one may leave items open:
/// they are not in its output).
fn check_events(out: &[u8]) -> Vec<Value> {
    let text = String::from_utf8(out.to_vec()).unwrap();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.is_empty()) {
        let name = block.lines().find_map(|l| l.strip_prefix("event: ")).expect("every event is named");
        let data: Value = serde_json::from_str(block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
        assert_eq!(data["type"], name, "{block}");
        events.push(data);
    }
    assert_eq!(events[0]["type"], "response.created");
    let mut items: Vec<Value> = Vec::new();
    let mut open: HashMap<u64, String> = HashMap::new();
    let mut texts: HashMap<(u64, u64), String> = HashMap::new();
    let mut args: HashMap<u64, String> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "{e}");
        let index = e["output_index"].as_u64();
        match e["type"].as_str().unwrap() {
            "response.output_item.added" => {
                assert_eq!(index, Some(items.len() as u64), "items are added in order: {e}");
                items.push(e["item"].clone());
                open.insert(index.unwrap(), e["item"]["id"].as_str().unwrap().to_string());
            }
            "response.output_item.done" => {
                let index = index.unwrap();
                assert_eq!(open.remove(&index).as_deref(), e["item"]["id"].as_str(), "{e}");
                items[index as usize] = e["item"].clone();
            }
            "response.content_part.added" => {
                texts.insert((index.unwrap(), e["content_index"].as_u64().unwrap()), String::new());
            }
            "response.output_text.delta" | "response.refusal.delta" | "response.reasoning_text.delta" => {
                assert_eq!(open.get(&index.unwrap()).map(String::as_str), e["item_id"].as_str(), "{e}");
                let part = texts.get_mut(&(index.unwrap(), e["content_index"].as_u64().unwrap())).expect("part added");
                part.push_str(e["delta"].as_str().unwrap());
            }
            "response.output_text.done" | "response.reasoning_text.done" => {
                assert_eq!(texts[&(index.unwrap(), e["content_index"].as_u64().unwrap())], e["text"], "{e}");
            }
            "response.function_call_arguments.delta" => {
                assert_eq!(open.get(&index.unwrap()).map(String::as_str), e["item_id"].as_str(), "{e}");
                args.entry(index.unwrap()).or_default().push_str(e["delta"].as_str().unwrap());
            }
            "response.function_call_arguments.done" => {
                assert_eq!(args.get(&index.unwrap()).cloned().unwrap_or_default(), e["arguments"], "{e}");
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                assert_eq!(i, events.len() - 1, "the terminal event is last");
                if e["type"] != "response.failed" {
                    assert!(open.is_empty(), "items left open: {open:?}");
                }
                let done: Vec<&Value> = items
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| !open.contains_key(&(*n as u64)))
                    .map(|(_, v)| v)
                    .collect();
                assert_eq!(e["response"]["output"], json!(done), "the final output is the items done");
            }
            _ => {}
        }
    }
    events
}

#[test]
fn openai_chunks_become_the_responses_event_sequence_in_any_split() {
    let make = || pipeline(Pair::ResponsesOpenAi, Framing::Sse, Api::OpenAi);
    let out = split_invariant(&make, &fixture("openai_tool_calls_usage.sse"));
    golden("openai_tool_calls_usage", &out);
    let events = check_events(&out);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    let r = &last["response"];
    assert_eq!(r["instructions"], "Be brief.", "request fields are echoed");
    let calls: Vec<&Value> = r["output"].as_array().unwrap().iter().filter(|o| o["type"] == "function_call").collect();
    assert!(!calls.is_empty());
    for c in calls {
        assert!(serde_json::from_str::<Value>(c["arguments"].as_str().unwrap()).is_ok(), "{c}");
    }
    assert!(r["usage"]["input_tokens"].as_u64().unwrap() > 0 && r["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn a_chunk_stream_cut_before_its_finish_fails_with_error_then_response_failed() {
    let make = || pipeline(Pair::ResponsesOpenAi, Framing::Sse, Api::OpenAi);
    let out = split_invariant(&make, &fixture("openai_text_no_done.sse"));
    golden("openai_text_no_done", &out);
    let events = check_events(&out);
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(&kinds[kinds.len() - 2..], ["error", "response.failed"]);
    assert!(!kinds.contains(&"response.completed"));
}

#[test]
fn anthropic_events_become_responses_events_through_the_composed_pair() {
    let pair = Pair::ResponsesVia(Api::Anthropic);
    let make = || pipeline(pair, Framing::Sse, Api::Anthropic);
    for name in ["anthropic_text_tool_use", "anthropic_thinking_crlf"] {
        let out = split_invariant(&make, &fixture(&format!("{name}.sse")));
        golden(name, &out);
        let events = check_events(&out);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.completed", "{name}");
        assert!(last["response"]["usage"]["output_tokens"].as_u64().unwrap() > 0, "{name}");
    }
    let thinking = run(&make, &[&fixture("anthropic_thinking_crlf.sse")]);
    let events = check_events(&thinking);
    assert_eq!(events.last().unwrap()["response"]["output"][0]["type"], "reasoning", "thinking comes first");
}

#[test]
fn converse_frames_become_responses_events_through_the_composed_pair() {
    let pair = Pair::ResponsesVia(Api::Converse);
    let make = || pipeline(pair, Framing::EventStream, Api::Converse);
    for name in ["converse_tool_use", "converse_throttling_exception"] {
        let out = split_invariant(&make, &converse_fixture_wire(&format!("{name}.json")));
        golden(name, &out);
        check_events(&out);
    }
    let throttled = run(&make, &[&converse_fixture_wire("converse_throttling_exception.json")]);
    let events = check_events(&throttled);
    let error = events.iter().find(|e| e["type"] == "error").expect("an error event");
    assert_eq!(error["code"], "ThrottlingException", "{error}");
}

#[test]
fn the_usage_reader_sees_the_upstreams_usage_whatever_the_client_family() {
    let mut p = pipeline(Pair::ResponsesVia(Api::Anthropic), Framing::Sse, Api::Anthropic);
    p.push(&fixture("anthropic_text_tool_use.sse"));
    let mut out = Vec::new();
    p.finish(&mut out);
    let u = p.usage().unwrap();
    assert_eq!((u.prompt_tokens(), u.output_tokens), (472, 89));
}
