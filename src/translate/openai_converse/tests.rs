use super::*;

fn req(v: Value) -> Result<RequestTranslation, TranslateError> {
    request(&serde_json::to_vec(&v).unwrap(), &RequestOptions::default())
}

fn body(t: &RequestTranslation) -> Value {
    serde_json::from_slice(&t.body).unwrap()
}

#[test]
fn usage_input_tokens_exclude_cache_and_prompt_tokens_include_it() {
    let u = usage_from_converse(&json!({"usage": {
        "inputTokens": 12, "outputTokens": 5, "totalTokens": 1917,
        "cacheReadInputTokens": 1800, "cacheWriteInputTokens": 100
    }}))
    .unwrap();
    assert_eq!(u.input_tokens, 12);
    assert_eq!(u.prompt_tokens(), 1912);
    assert_eq!(u.to_openai_json()["prompt_tokens_details"]["cached_tokens"], 1800);
    assert_eq!(usage_from_converse(&json!({"metrics": {}})), None);
}

#[test]
fn error_code_comes_from_the_header_then_the_body_then_the_status() {
    let e: Value = serde_json::from_slice(&error(
        429,
        Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        br#"{"message":"Too many requests"}"#,
    ))
    .unwrap();
    assert_eq!(e["error"]["code"], "ThrottlingException");
    assert_eq!(e["error"]["type"], "requests");
    let e: Value =
        serde_json::from_slice(&error(400, None, br#"{"__type":"com.amazon#ValidationException","message":"x"}"#))
            .unwrap();
    assert_eq!(e["error"]["code"], "ValidationException");
    let e: Value = serde_json::from_slice(&error(502, None, b"<html>bad gateway</html>")).unwrap();
    assert_eq!(e["error"]["code"], "server_error");
    assert_eq!(e["error"]["message"], "<html>bad gateway</html>");
}

#[test]
fn response_id_is_deterministic_and_depends_on_the_body() {
    let a = br#"{"output":{"message":{"role":"assistant","content":[{"text":"a"}]}},"stopReason":"end_turn"}"#;
    let b = br#"{"output":{"message":{"role":"assistant","content":[{"text":"b"}]}},"stopReason":"end_turn"}"#;
    let id = |body: &[u8]| -> Value {
        serde_json::from_slice::<Value>(&response(body, "m", &ResponseOptions::default()).unwrap()).unwrap()["id"]
            .clone()
    };
    assert_eq!(id(a), id(a));
    assert_ne!(id(a), id(b));
    assert!(id(a).as_str().unwrap().starts_with("chatcmpl-"));
}

#[test]
fn tool_choice_none_keeps_tools_only_when_history_has_tool_blocks() {
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let t =
        req(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": "none"})).unwrap();
    assert!(body(&t).get("toolConfig").is_none());
    let t = req(json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    ], "tools": tools, "tool_choice": "none"}))
    .unwrap();
    let b = body(&t);
    assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["name"], "f");
    assert!(b["toolConfig"].get("toolChoice").is_none());
}

#[test]
fn history_tool_blocks_without_tools_declare_the_used_tools() {
    let t = req(json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    ]}))
    .unwrap();
    let b = body(&t);
    assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["name"], "lookup");
    assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"], json!({"type": "object"}));
}

#[test]
fn conversation_must_start_with_a_user_message() {
    let e = req(json!({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "x"}]}))
        .unwrap_err();
    assert_eq!(e.field(), Some("messages"));
    let e = req(json!({"messages": [{"role": "system", "content": "s"}]})).unwrap_err();
    assert_eq!(e.field(), Some("messages"));
}

#[test]
fn thinking_without_max_tokens_leaves_room_above_the_budget() {
    let t =
        req(json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low", "top_p": 0.5})).unwrap();
    let b = body(&t);
    assert_eq!(b["inferenceConfig"]["maxTokens"], 1024 + 4096);
    assert!(b["inferenceConfig"].get("topP").is_none());
    assert!(t.dropped.contains(&"top_p".to_string()));
}

#[test]
fn cache_control_on_a_part_adds_a_cache_point_after_it() {
    let t = req(json!({"messages": [
        {"role": "system", "content": [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": "hi"}
    ]}))
    .unwrap();
    assert_eq!(body(&t)["system"], json!([{"text": "long"}, {"cachePoint": {"type": "default"}}]));
}

#[test]
fn body_has_no_model_or_stream_and_dropped_fields_are_listed() {
    let t = req(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
        "stream_options": {"include_usage": true}, "user": "u", "seed": 1, "metadata": {"a": "b"},
        "parallel_tool_calls": false}))
    .unwrap();
    let b = body(&t);
    assert!(b.get("model").is_none() && b.get("stream").is_none());
    assert!(t.stream && t.include_usage);
    let mut dropped = t.dropped.clone();
    dropped.sort();
    assert_eq!(dropped, ["metadata", "parallel_tool_calls", "seed", "stream_options", "user"]);
    assert!(t.response_options(5).include_usage);
}

#[test]
fn tool_arguments_and_schemas_keep_the_clients_key_order() {
    let t = req(json!({"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
            "function": {"name": "f", "arguments": "{\"z\": 1, \"a\": 2}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "ok"}
    ]}))
    .unwrap();
    let text = String::from_utf8(t.body).unwrap();
    assert!(text.contains(r#""input":{"z": 1, "a": 2}"#), "{text}");
}
