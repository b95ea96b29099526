//! Behaviour that golden files do not show well: byte-level key order,
//! passthrough of unknown fields, and the emulation/rejection rules.

use serde_json::{json, Value};
use switchyard::schema::{anthropic as an, openai as oa};
use switchyard::translate::{anthropic_openai, openai_anthropic, RequestOptions, ResponseOptions, TranslateError};

fn opts() -> RequestOptions {
    RequestOptions { model: None, default_max_tokens: 1024 }
}

fn oa_request(v: Value) -> Result<Value, TranslateError> {
    openai_anthropic::request(v.to_string().as_bytes(), &opts()).map(|b| serde_json::from_slice(&b).unwrap())
}

fn an_request(v: Value) -> Result<Value, TranslateError> {
    anthropic_openai::request(v.to_string().as_bytes(), &opts()).map(|b| serde_json::from_slice(&b).unwrap())
}

fn pos(hay: &str, needle: &str) -> usize {
    hay.find(needle).unwrap_or_else(|| panic!("{needle} not in {hay}"))
}

#[test]
fn tool_schemas_keep_their_key_order_both_ways() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
        "tools":[{"type":"function","function":{"name":"f","parameters":
        {"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"string"}}}}}]}"#;
    let out = String::from_utf8(openai_anthropic::request(body.as_bytes(), &opts()).unwrap()).unwrap();
    assert!(pos(&out, "zeta") < pos(&out, "alpha"), "{out}");

    let body = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],
        "tools":[{"name":"f","input_schema":{"type":"object","properties":{"zeta":{},"alpha":{}}}}]}"#;
    let out = String::from_utf8(anthropic_openai::request(body.as_bytes(), &opts()).unwrap()).unwrap();
    assert!(pos(&out, "zeta") < pos(&out, "alpha"), "{out}");
}

#[test]
fn json_schema_response_format_keeps_schema_and_answer_key_order() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],
        "response_format":{"type":"json_schema","json_schema":{"name":"out","schema":
        {"type":"object","properties":{"reasoning":{"type":"string"},"answer":{"type":"string"}}}}}}"#;
    let t = openai_anthropic::request_full(body.as_bytes(), &opts()).unwrap();
    let out = String::from_utf8(t.body.clone()).unwrap();
    assert!(pos(&out, "reasoning") < pos(&out, "answer"), "{out}");
    assert_eq!(t.forced_json_tool.as_deref(), Some("out"));

    let resp = r#"{"id":"msg_1","content":[{"type":"tool_use","id":"t","name":"out",
        "input":{"reasoning":"because","answer":"42"}}],"stop_reason":"tool_use",
        "usage":{"input_tokens":1,"output_tokens":2}}"#;
    let v: Value =
        serde_json::from_slice(&openai_anthropic::response(resp.as_bytes(), "gpt-4o", &t.response_options(7)).unwrap())
            .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], r#"{"reasoning":"because","answer":"42"}"#);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["created"], 7);
}

#[test]
fn tool_arguments_keep_the_models_key_order_both_ways() {
    let resp = r#"{"id":"msg_1","content":[{"type":"tool_use","id":"t","name":"f",
        "input":{"zeta":1,"alpha":2}}],"stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":2}}"#;
    let v: Value =
        serde_json::from_slice(&openai_anthropic::response(resp.as_bytes(), "m", &ResponseOptions::default()).unwrap())
            .unwrap();
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], r#"{"zeta":1,"alpha":2}"#);

    let resp = r#"{"id":"chatcmpl-1","choices":[{"index":0,"message":{"role":"assistant",
        "tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"zeta\": 1, \"alpha\": 2}"}}]},
        "finish_reason":"tool_calls"}]}"#;
    let out = String::from_utf8(anthropic_openai::response(resp.as_bytes(), "m", &ResponseOptions::default()).unwrap())
        .unwrap();
    assert!(out.contains(r#""input":{"zeta": 1, "alpha": 2}"#), "{out}");
}

#[test]
fn unknown_fields_survive_a_schema_round_trip() {
    let req = json!({
        "model": "m", "messages": [{"role": "user", "content": "x", "x_msg": 1}],
        "tools": [{"type": "function", "function": {"name": "f", "strict": true}, "x_tool": [1]}],
        "x_top": {"nested": true}
    });
    let parsed: oa::ChatRequest = serde_json::from_value(req.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), req);

    let req = json!({
        "model": "m", "max_tokens": 3, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 2000, "x": 1}, "top_k": 5
    });
    let parsed: an::MessagesRequest = serde_json::from_value(req.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), req);
}

#[test]
fn json_object_response_format_forces_a_generic_object_tool() {
    let t = openai_anthropic::request_full(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
               "response_format": {"type": "json_object"}})
        .to_string()
        .as_bytes(),
        &opts(),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(t.forced_json_tool.as_deref(), Some(openai_anthropic::JSON_OBJECT_TOOL));
    assert_eq!(v["tool_choice"], json!({"type": "tool", "name": "json_response"}));
    assert_eq!(v["tools"][0]["input_schema"], json!({"type": "object"}));
}

#[test]
fn json_schema_with_client_tools_lets_the_model_pick_a_tool_or_answer() {
    let req = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "search"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}}}});
    let t = openai_anthropic::request_full(req.to_string().as_bytes(), &opts()).unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(v["tool_choice"], json!({"type": "any"}));
    let names: Vec<&str> = v["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["search", "answer"]);

    // A real tool call stays a tool call.
    let resp = json!({"id": "msg_2", "content": [{"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "x"}}],
                      "stop_reason": "tool_use", "usage": {"input_tokens": 1, "output_tokens": 1}});
    let out: Value = serde_json::from_slice(
        &openai_anthropic::response(resp.to_string().as_bytes(), "m", &t.response_options(0)).unwrap(),
    )
    .unwrap();
    assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(out["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "search");

    // tool_choice "none" keeps only the JSON tool, forced.
    let mut req2 = req.clone();
    req2["tool_choice"] = json!("none");
    let v = oa_request(req2).unwrap();
    assert_eq!(v["tool_choice"], json!({"type": "tool", "name": "answer"}));
    assert_eq!(v["tools"].as_array().unwrap().len(), 1);
}

#[test]
fn parallel_tool_calls_false_without_tool_choice_disables_parallel_use_on_auto() {
    let v = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "parallel_tool_calls": false}))
    .unwrap();
    assert_eq!(v["tool_choice"], json!({"type": "auto", "disable_parallel_tool_use": true}));
    let v = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none", "parallel_tool_calls": false}))
    .unwrap();
    assert_eq!(v["tool_choice"], json!({"type": "none"}));
}

#[test]
fn reasoning_effort_raises_max_tokens_above_budget_and_drops_sampling() {
    let v = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "high", "max_completion_tokens": 100, "temperature": 1, "top_p": 0.5}))
    .unwrap();
    assert_eq!(v["thinking"], json!({"type": "enabled", "budget_tokens": 16384}));
    assert_eq!(v["max_tokens"], 16484);
    assert!(v.get("temperature").is_none() && v.get("top_p").is_none());

    let v = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "low", "max_tokens": 8000}))
    .unwrap();
    assert_eq!(v["max_tokens"], 8000);
    assert_eq!(v["thinking"]["budget_tokens"], 1024);

    let v = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "minimal"}))
    .unwrap();
    assert!(v.get("thinking").is_none());

    // Forced tool choice and thinking cannot be combined upstream.
    let v = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required",
        "reasoning_effort": "medium"}))
    .unwrap();
    assert!(v.get("thinking").is_none());

    let e = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "reasoning_effort": "extreme"}))
    .unwrap_err();
    assert_eq!(e.field(), Some("reasoning_effort"));
}

#[test]
fn request_translation_reports_stream_usage_flag_and_dropped_fields() {
    let t = openai_anthropic::request_full(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
               "stream_options": {"include_usage": true}, "seed": 1, "logit_bias": {"1": 2},
               "x_custom": true})
        .to_string()
        .as_bytes(),
        &opts(),
    )
    .unwrap();
    assert!(t.stream && t.include_usage);
    let mut dropped = t.dropped.clone();
    dropped.sort();
    assert_eq!(dropped, vec!["logit_bias", "seed", "stream_options", "x_custom"]);
    for f in ["seed", "logit_bias", "stream_options"] {
        assert!(openai_anthropic::DROPPED_FIELDS.contains(&f));
    }
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert!(v.get("seed").is_none() && v.get("x_custom").is_none() && v.get("stream_options").is_none());
}

#[test]
fn model_override_and_default_max_tokens_apply() {
    let o = RequestOptions { model: Some("claude-x".into()), default_max_tokens: 77 };
    let out = openai_anthropic::request(
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string().as_bytes(),
        &o,
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["model"], "claude-x");
    assert_eq!(v["max_tokens"], 77);
    let e = openai_anthropic::request(br#"{"messages":[{"role":"user","content":"hi"}]}"#, &opts()).unwrap_err();
    assert_eq!(e.field(), Some("model"));
}

#[test]
fn rejected_and_invalid_openai_requests_name_the_field() {
    let base = |extra: Value| {
        let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        oa_request(v).unwrap_err()
    };
    assert_eq!(base(json!({"functions": [{"name": "f"}]})).field(), Some("functions"));
    assert_eq!(base(json!({"modalities": ["text", "audio"]})).field(), Some("modalities"));
    assert_eq!(base(json!({"stop": 5})).field(), Some("stop"));
    assert_eq!(base(json!({"tool_choice": "sometimes"})).field(), Some("tool_choice"));
    assert_eq!(base(json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]})).field(), Some("tools[0].type"));
    assert_eq!(
        base(json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}})).field(),
        Some("response_format.json_schema.name")
    );
    assert!(matches!(base(json!({"n": 2})), TranslateError::Unsupported { .. }));
    // n = 1 and logprobs = false are fine.
    assert!(oa_request(
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 1, "logprobs": false})
    )
    .is_ok());
    let e = oa_request(json!({"model": "m", "messages": [{"role": "system", "content": "only system"}]})).unwrap_err();
    assert_eq!(e.field(), Some("messages"));
    let e = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}))
    .unwrap_err();
    assert_eq!(e.field(), Some("messages[0].content[0].image_url.url"));
    let e = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}]}]}))
    .unwrap_err();
    assert_eq!(e.field(), Some("messages[1].tool_calls[0].function.arguments"));
}

#[test]
fn assistant_prefill_is_trimmed_and_empty_parts_are_skipped() {
    let v = oa_request(json!({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Q"}]},
        {"role": "assistant", "content": "A:  \n"}]}))
    .unwrap();
    assert_eq!(v["messages"], json!([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A:"}]));
}

#[test]
fn pdf_file_part_becomes_document_block_and_back() {
    let v = oa_request(json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}}]}]}))
    .unwrap();
    assert_eq!(
        v["messages"][0]["content"][0],
        json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}})
    );
    let v = an_request(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]}]}))
    .unwrap();
    assert_eq!(
        v["messages"][0]["content"][0],
        json!({"type": "file", "file": {"filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}})
    );
}

#[test]
fn anthropic_tool_choice_variants_map_to_openai() {
    let tools = json!([{"name": "f", "input_schema": {"type": "object"}}]);
    let choice = |tc: Value| {
        an_request(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tools": tools, "tool_choice": tc}))
        .unwrap()["tool_choice"]
            .clone()
    };
    assert_eq!(choice(json!({"type": "auto"})), json!("auto"));
    assert_eq!(choice(json!({"type": "any"})), json!("required"));
    assert_eq!(choice(json!({"type": "none"})), json!("none"));
    assert_eq!(choice(json!({"type": "tool", "name": "f"})), json!({"type": "function", "function": {"name": "f"}}));
}

#[test]
fn anthropic_thinking_budget_is_bucketed_into_reasoning_effort() {
    let effort = |budget: u64| {
        an_request(json!({"model": "m", "max_tokens": 50000, "messages": [{"role": "user", "content": "x"}],
            "thinking": {"type": "enabled", "budget_tokens": budget}}))
        .unwrap()["reasoning_effort"]
            .clone()
    };
    assert_eq!(effort(1024), "low");
    assert_eq!(effort(4095), "low");
    assert_eq!(effort(4096), "medium");
    assert_eq!(effort(16384), "high");
    let v = an_request(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "disabled"}}))
    .unwrap();
    assert!(v.get("reasoning_effort").is_none());
}

#[test]
fn anthropic_client_without_stream_gets_no_stream_options_and_reports_dropped() {
    let t = anthropic_openai::request_full(
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "top_k": 3})
            .to_string()
            .as_bytes(),
        &opts(),
    )
    .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert!(!t.stream);
    assert!(v.get("stream").is_none() && v.get("stream_options").is_none() && v.get("top_k").is_none());
    assert_eq!(t.dropped, vec!["top_k"]);
}

#[test]
fn error_bodies_that_are_not_json_keep_their_text() {
    let v: Value = serde_json::from_slice(&anthropic_openai::error(503, b"upstream connect error")).unwrap();
    assert_eq!(v, json!({"type": "error", "error": {"type": "api_error", "message": "upstream connect error"}}));
    let v: Value = serde_json::from_slice(&openai_anthropic::error(401, b"")).unwrap();
    assert_eq!(v["error"]["message"], "upstream returned HTTP 401");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
}

#[test]
fn thinking_is_not_enabled_when_continuing_a_tool_loop() {
    let v = oa_request(json!({"model": "m", "reasoning_effort": "low", "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": ""}],
        "tools": [{"type": "function", "function": {"name": "w"}}]}))
    .unwrap();
    assert!(v.get("thinking").is_none());
    assert_eq!(v["messages"][2]["content"], json!([{"type": "tool_result", "tool_use_id": "c1"}]));
}
