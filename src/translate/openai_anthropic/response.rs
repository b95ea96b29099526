//! An Anthropic message or error → an OpenAI chat completion or error.

use super::*;

pub(super) fn finish_reason(stop_reason: Option<&str>, real_tool_calls: bool) -> Value {
    let r = match stop_reason {
        None => return Value::Null,
        Some("end_turn" | "stop_sequence" | "pause_turn") => "stop",
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") if real_tool_calls => "tool_calls",
        Some("tool_use") => "stop",
        Some("refusal") => "content_filter",
        Some(_) => "stop",
    };
    Value::String(r.into())
}

/// Translate an Anthropic `message` response into an OpenAI
/// `chat.completion`. `model` is the name reported to the client.
///
/// Reads `opts.created` and `opts.forced_json_tool`.
pub fn response(body: &[u8], model: &str, opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let msg: an::MessageResponse = parse_json(body)?;
    let raw: RawAnthropicResponse = serde_json::from_slice(body).unwrap_or_default();
    let raw_blocks = raw.content.unwrap_or_default();
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = vec![];
    for (k, block) in msg.content.iter().enumerate() {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some("thinking") => reasoning.push_str(block["thinking"].as_str().unwrap_or("")),
            Some("tool_use") => {
                let name = block["name"].as_str().unwrap_or("");
                // The model's own text of the input, in its key order.
                let args = match raw_blocks.get(k).and_then(|b| b.input.as_deref()) {
                    Some(r) if r.get().trim_start().starts_with('{') => r.get().to_string(),
                    _ => "{}".to_string(),
                };
                if opts.forced_json_tool.as_deref() == Some(name) {
                    text.push_str(&args);
                } else {
                    tool_calls.push(json!({
                        "id": block["id"],
                        "type": "function",
                        "function": {"name": name, "arguments": args},
                    }));
                }
            }
            _ => {}
        }
    }
    let has_tools = !tool_calls.is_empty();
    let message = crate::translate::openai_assistant_message(text, reasoning, tool_calls);
    let usage = msg.usage.as_ref().and_then(crate::translate::usage_from_anthropic).unwrap_or_default();
    let out = obj(vec![
        ("id", json!(format!("chatcmpl-{}", msg.id))),
        ("object", json!("chat.completion")),
        ("created", json!(opts.created)),
        ("model", json!(model)),
        (
            "choices",
            json!([{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(msg.stop_reason.as_deref(), has_tools),
            }]),
        ),
        ("usage", usage.to_openai_json()),
    ]);
    Ok(to_bytes(&out))
}

/// OpenAI `{"error":{…}}` object for an Anthropic error type and message.
pub(super) fn openai_error_value(status: u16, anthropic_type: &str, message: &str) -> Value {
    let code = openai_error_code(status).map(str::to_string).unwrap_or_else(|| anthropic_type.to_string());
    crate::translate::openai_error_value(status, &code, message)
}

/// Translate an Anthropic error body (with its HTTP status) into OpenAI's
/// error shape. Bodies that are not Anthropic errors keep their text as the
/// message.
pub fn error(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed = serde_json::from_slice::<an::ErrorBody>(body)
        .ok()
        .filter(|e| !e.error.message.is_empty() || !e.error.kind.is_empty());
    let (kind, message) = match parsed {
        Some(e) => {
            let kind = if e.error.kind.is_empty() { anthropic_error_type(status).to_string() } else { e.error.kind };
            (kind, e.error.message)
        }
        None => (anthropic_error_type(status).to_string(), fallback_message(status, body)),
    };
    to_bytes(&openai_error_value(status, &kind, &message))
}
