use super::*;

fn translate(v: Value) -> Result<RequestTranslation, TranslateError> {
    request(&serde_json::to_vec(&v).unwrap(), &RequestOptions::default())
}

#[test]
fn function_calls_join_the_assistant_turn_and_outputs_become_tool_messages() {
    let t = translate(json!({"model": "m", "instructions": "Be brief.", "input": [
        {"role": "user", "content": "Weather?"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"a\":1}"},
        {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "reasoning", "id": "rs_1", "summary": []}
    ]}))
    .unwrap();
    let body: Value = serde_json::from_slice(&t.body).unwrap();
    let m = &body["messages"];
    assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(m[2]["content"], "Checking.");
    assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"}));
    assert!(t.dropped.iter().any(|d| d.contains("reasoning")), "{:?}", t.dropped);
}

#[test]
fn built_in_tools_and_stored_state_are_rejected_naming_them() {
    let e = translate(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})).unwrap_err();
    assert!(e.to_string().contains("web_search") && e.field() == Some("tools[0].type"), "{e}");
    let e = translate(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"})).unwrap_err();
    assert_eq!(e.field(), Some("previous_response_id"));
    let e = translate(json!({"model": "m", "input": "x", "store": true})).unwrap_err();
    assert_eq!(e.field(), Some("store"));
    assert!(translate(json!({"model": "m", "input": "x", "store": false})).is_ok());
}

#[test]
fn json_schemas_and_tool_parameters_keep_the_clients_key_order() {
    let body = br#"{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"T",
        "schema":{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"string"}}}}},
        "tools":[{"type":"function","name":"f","parameters":{"properties":{"z":{},"a":{}},"type":"object"}}]}"#;
    let t = request(body, &RequestOptions::default()).unwrap();
    let text = String::from_utf8(t.body).unwrap();
    assert!(text.find("\"zeta\"").unwrap() < text.find("\"alpha\"").unwrap(), "{text}");
    assert!(text.contains(r#"{"properties":{"z":{},"a":{}},"type":"object"}"#), "{text}");
}

fn events(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn sequence_numbers_increase_from_zero_and_a_cut_stream_fails() {
    let mut t = StreamTranslator::new("m", &ResponseOptions::default());
    let mut out = Vec::new();
    let chunk = br#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
    t.event(&Event { name: None, data: std::borrow::Cow::Borrowed(chunk), raw: b"" }, &mut out);
    t.finish(&mut out);
    let ev = events(&out);
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64, "{e}");
    }
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"));
    assert_eq!(&kinds[kinds.len() - 2..], ["error", "response.failed"]);
    assert!(t.is_done());
}
