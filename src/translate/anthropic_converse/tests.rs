use super::*;

fn req(v: Value) -> Value {
    let t = request(&serde_json::to_vec(&v).unwrap(), &RequestOptions::default()).unwrap();
    serde_json::from_slice(&t.body).unwrap()
}

#[test]
fn document_names_keep_allowed_characters_and_are_unique() {
    let mut used = vec![];
    assert_eq!(unique_document_name(Some("Q3 report: final.pdf"), &mut used), "Q3 report final pdf");
    assert_eq!(unique_document_name(Some("Q3 report: final.pdf"), &mut used), "Q3 report final pdf (2)");
    assert_eq!(unique_document_name(None, &mut used), "document-3");
    assert_eq!(unique_document_name(Some("!!!"), &mut used), "document-4");
}

#[test]
fn consecutive_user_messages_are_merged() {
    let v = req(json!({"max_tokens": 5, "messages": [
        {"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]}]}));
    assert_eq!(v["messages"], json!([{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}]));
}

#[test]
fn tool_choice_none_without_tool_history_sends_no_tools() {
    let v = req(json!({"max_tokens": 5, "tool_choice": {"type": "none"},
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "a"}]}));
    assert!(v.get("toolConfig").is_none());
}

#[test]
fn tool_choice_none_with_tool_history_keeps_tools_and_reports_drop() {
    let body = json!({"max_tokens": 5, "tool_choice": {"type": "none", "disable_parallel_tool_use": true},
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]});
    let t = request(&serde_json::to_vec(&body).unwrap(), &RequestOptions::default()).unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert!(v["toolConfig"].get("toolChoice").is_none());
    assert_eq!(t.dropped, vec!["tool_choice", "tool_choice.disable_parallel_tool_use"]);
    assert_eq!(v["messages"][2]["content"][0], json!({"toolResult": {"toolUseId": "x", "content": []}}));
}

#[test]
fn dropped_lists_metadata_service_tier_and_unknown_fields_but_not_top_k() {
    let body = json!({"max_tokens": 5, "top_k": 3, "service_tier": "auto", "stream": true,
        "metadata": {"user_id": "u"}, "context_management": {}, "messages": [{"role": "user", "content": "a"}]});
    let t = request(&serde_json::to_vec(&body).unwrap(), &RequestOptions::default()).unwrap();
    assert_eq!(t.dropped, vec!["context_management", "metadata", "service_tier"]);
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    assert!(v.get("stream").is_none() && v.get("model").is_none());
}

#[test]
fn cache_control_inside_tool_result_puts_the_cache_point_after_it() {
    let v = req(json!({"max_tokens": 5, "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "t", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": [
                {"type": "text", "text": "big", "cache_control": {"type": "ephemeral"}}]}]}]}));
    assert_eq!(
        v["messages"][2]["content"],
        json!([{"toolResult": {"toolUseId": "x", "content": [{"text": "big"}]}},
               {"cachePoint": {"type": "default"}}])
    );
}

#[test]
fn tool_inputs_and_schemas_keep_their_key_order() {
    let body = br#"{"max_tokens":5,"tools":[{"name":"t","input_schema":{"type":"object","properties":{"z":{},"a":{}}}}],
        "messages":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"tool_use","id":"x","name":"t","input":{"z":1,"a":2}}]}]}"#;
    let t = request(body, &RequestOptions::default()).unwrap();
    let s = String::from_utf8(t.body).unwrap();
    assert!(s.contains(r#""properties":{"z":{},"a":{}}"#), "{s}");
    assert!(s.contains(r#""input":{"z":1,"a":2}"#), "{s}");
}

#[test]
fn plain_text_document_becomes_txt_bytes() {
    let v = req(json!({"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "foo"}}]}]}));
    assert_eq!(
        v["messages"][0]["content"][0],
        json!({"document": {"format": "txt", "name": "document-1", "source": {"bytes": "Zm9v"}}})
    );
}

#[test]
fn error_type_refines_only_generic_statuses() {
    let e: Value = serde_json::from_slice(&error(
        503,
        Some("ServiceUnavailableException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        br#"{"message":"busy"}"#,
    ))
    .unwrap();
    assert_eq!(e["error"], json!({"type": "overloaded_error", "message": "busy"}));
    let e: Value = serde_json::from_slice(&error(400, Some("ThrottlingException"), b"")).unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["message"], "upstream returned HTTP 400");
}

#[test]
fn response_id_is_deterministic() {
    let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2},"metrics":{"latencyMs":1}}"#;
    let a = response(body, "m", &ResponseOptions::default()).unwrap();
    assert_eq!(a, response(body, "m", &ResponseOptions::default()).unwrap());
    let v: Value = serde_json::from_slice(&a).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["id"].as_str().unwrap().len(), 36);
}
