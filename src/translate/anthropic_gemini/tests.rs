use super::*;

fn req(v: Value) -> Result<Value, TranslateError> {
    let t = request(&serde_json::to_vec(&v).unwrap(), &RequestOptions::default())?;
    Ok(serde_json::from_slice(&t.body).unwrap())
}

#[test]
fn tool_results_name_their_function_and_carry_images_after_them() {
    let v = req(json!({"max_tokens": 5, "messages": [
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {"w": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": true, "content": [
            {"type": "text", "text": "partial"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]}]}
    ]}))
    .unwrap();
    assert_eq!(
        v["contents"][2]["parts"],
        json!([{"functionResponse": {"name": "shot", "response": {"error": "partial"}}},
               {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}])
    );
    assert_eq!(v["contents"][1]["parts"][0]["thoughtSignature"], gemini::FOREIGN_SIGNATURE);
    let e = req(json!({"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_x", "content": "?"}]}]}))
    .unwrap_err();
    assert_eq!(e.field(), Some("messages[0].content[0].tool_use_id"));
}

#[test]
fn signed_thinking_goes_back_as_a_thought_and_unsigned_thinking_is_dropped() {
    let id = gemini::call_id("toolu_", None, 1, 0, Some("c2ln"));
    let v = req(json!({"max_tokens": 5, "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "dGg="},
            {"type": "thinking", "thinking": "unsigned", "signature": ""},
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "tool_use", "id": id, "name": "f", "input": {}}]}
    ]}))
    .unwrap();
    assert_eq!(
        v["contents"][1]["parts"],
        json!([{"text": "hmm", "thought": true, "thoughtSignature": "dGg="},
               {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}])
    );
}

#[test]
fn thinking_kinds_map_to_budgets_and_tool_choice_to_modes() {
    let base = |thinking: Value, tc: Value| {
        req(json!({"max_tokens": 5, "thinking": thinking, "tool_choice": tc,
            "tools": [{"name": "t", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}}],
            "messages": [{"role": "user", "content": "a"}]}))
        .unwrap()
    };
    let v = base(json!({"type": "enabled", "budget_tokens": 2048}), json!({"type": "tool", "name": "t"}));
    assert_eq!(v["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 2048, "includeThoughts": true}));
    assert_eq!(v["toolConfig"], json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["t"]}}));
    let v = base(json!({"type": "disabled"}), json!({"type": "none"}));
    assert_eq!(v["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 0}));
    assert_eq!(v["toolConfig"]["functionCallingConfig"]["mode"], "NONE");
    let v = base(json!({"type": "adaptive"}), json!({"type": "any"}));
    assert_eq!(v["generationConfig"]["thinkingConfig"]["thinkingBudget"], -1);
}

#[test]
fn count_tokens_wraps_the_request_and_vertex_unwraps_it() {
    let body = br#"{"model":"claude-x","system":"s","messages":[{"role":"user","content":"hi"}],
        "tools":[{"name":"t","input_schema":{"type":"object","properties":{"a":{"type":"string"}}}}],
        "tool_choice":{"type":"auto"}}"#;
    let t = count_tokens_request(body, &RequestOptions { model: Some("gemini-2.5-pro".into()), default_max_tokens: 9 })
        .unwrap();
    let v: Value = serde_json::from_slice(&t.body).unwrap();
    let inner = &v["generateContentRequest"];
    assert_eq!(inner["model"], "models/gemini-2.5-pro");
    assert!(inner.get("generationConfig").is_none() && inner.get("toolConfig").is_some());
    let vertex: Value = serde_json::from_slice(&vertex_count_tokens_body(&t.body).unwrap()).unwrap();
    let mut keys: Vec<&String> = vertex.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["contents", "systemInstruction", "tools"]);
    assert_eq!(
        count_tokens_response(br#"{"totalTokens":31,"promptTokensDetails":[]}"#.to_vec()),
        br#"{"input_tokens":31}"#
    );
    assert_eq!(count_tokens_response(b"{}".to_vec()), b"{}");
}

#[test]
fn unavailable_is_overloaded_for_claude_clients() {
    let e: Value = serde_json::from_slice(&error(
        503,
        br#"{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}"#,
    ))
    .unwrap();
    assert_eq!(
        e,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "The model is overloaded."}})
    );
}
