use super::*;

fn req(v: Value) -> Result<RequestTranslation, TranslateError> {
    request(&serde_json::to_vec(&v).unwrap(), &RequestOptions::default())
}

fn body(t: &RequestTranslation) -> Value {
    serde_json::from_slice(&t.body).unwrap()
}

#[test]
fn tool_results_are_answered_by_the_calls_function_name_with_the_signature_restored() {
    let id = gemini::call_id("call_", None, 7, 0, Some("c2lnbmF0dXJl"));
    let t = req(json!({"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
        {"role": "tool", "tool_call_id": id, "content": [{"type": "text", "text": "sunny"}]}
    ]}))
    .unwrap();
    let b = body(&t);
    assert_eq!(
        b["contents"][1]["parts"],
        json!([
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
            {"functionCall": {"name": "get_time", "args": {}}}
        ])
    );
    assert_eq!(
        b["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
            {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
        ]})
    );
    let text = String::from_utf8(t.body).unwrap();
    assert!(!text.contains("\"id\""), "ids are never sent upstream: {text}");
}

#[test]
fn calls_without_signatures_get_the_placeholder_and_unknown_results_are_refused() {
    let b = body(
        &req(json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "call_x", "type": "function",
                "function": {"name": "f", "arguments": "{}"},
                "extra_content": {"google": {"thought_signature": "Z29vZ2xl"}}}]},
            {"role": "assistant", "tool_calls": [{"id": "call_y", "type": "function",
                "function": {"name": "g", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_y", "content": "ok"}
        ]}))
        .unwrap(),
    );
    // The two assistant messages merge into one model turn, whose first call is signed.
    assert_eq!(b["contents"][1]["parts"][0]["thoughtSignature"], "Z29vZ2xl");
    assert!(b["contents"][1]["parts"][1].get("thoughtSignature").is_none());
    let e = req(json!({"messages": [{"role": "user", "content": "hi"},
        {"role": "tool", "tool_call_id": "nope", "content": "x"}]}))
    .unwrap_err();
    assert_eq!(e.field(), Some("messages[1].tool_call_id"));
}

#[test]
fn tool_choice_without_tools_is_dropped_and_named_choice_allows_one_function() {
    let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"})).unwrap();
    assert!(body(&t).get("toolConfig").is_none());
    assert!(t.dropped.contains(&"tool_choice".to_string()));
    let t = req(json!({"messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}}}))
    .unwrap();
    let b = body(&t);
    assert_eq!(b["toolConfig"], json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}));
    assert_eq!(b["tools"], json!([{"functionDeclarations": [{"name": "f"}]}]));
}

#[test]
fn reasoning_effort_sets_a_budget_and_asks_for_thoughts_unless_none() {
    let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "medium"})).unwrap();
    assert_eq!(
        body(&t)["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 8192, "includeThoughts": true})
    );
    let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "none"})).unwrap();
    assert_eq!(body(&t)["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 0}));
    let e = req(json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "max"})).unwrap_err();
    assert_eq!(e.field(), Some("reasoning_effort"));
}

#[test]
fn zero_penalties_are_not_sent_and_other_sampling_fields_map() {
    let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "seed": 7, "presence_penalty": 0,
        "frequency_penalty": 0.5, "stop": "END", "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 20}))
    .unwrap();
    assert_eq!(
        body(&t)["generationConfig"],
        json!({"seed": 7, "frequencyPenalty": 0.5, "stopSequences": ["END"], "topP": 0.9, "maxOutputTokens": 20})
    );
    assert!(t.dropped.is_empty(), "{:?}", t.dropped);
}

#[test]
fn stream_without_a_finish_reason_ends_with_an_error_and_no_done() {
    let mut t = StreamTranslator::new("m", &ResponseOptions::default());
    let mut out = Vec::new();
    t.handle(br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}],"responseId":"r1"}"#, &mut out);
    StreamTranslate::finish(&mut t, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"id\":\"chatcmpl-r1\"") && text.contains("stream_incomplete"), "{text}");
    assert!(!text.contains("[DONE]"));
}

#[test]
fn embeddings_go_one_request_per_input_and_come_back_as_floats_or_base64() {
    let t = embeddings_request(
        br#"{"model":"text-embedding-004","input":["a","b"],"dimensions":8,"user":"u","encoding_format":"base64"}"#,
        &RequestOptions { model: Some("gemini-embedding-001".into()), default_max_tokens: 1 },
    )
    .unwrap();
    let b: Value = serde_json::from_slice(&t.body).unwrap();
    assert_eq!(
        b["requests"][1],
        json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8})
    );
    assert!(t.base64);
    assert_eq!(t.dropped, ["user"]);
    let predict: Value = serde_json::from_slice(&vertex_predict_body(&t.body).unwrap()).unwrap();
    assert_eq!(
        predict,
        json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 8}})
    );

    let opts = ResponseOptions { embeddings_base64: true, ..ResponseOptions::default() };
    let out: Value =
        serde_json::from_slice(&embeddings_response(br#"{"embeddings":[{"values":[1.0,-2.5]}]}"#, "m", &opts).unwrap())
            .unwrap();
    let expected: Vec<u8> = [1.0f32, -2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(out["data"][0]["embedding"], crate::base64::encode(&expected));
    let e = embeddings_request(br#"{"model":"m","input":[[1,2]]}"#, &RequestOptions::default()).unwrap_err();
    assert_eq!(e.field(), Some("input"));
}
