//! An OpenAI chat completion or error → an Anthropic message or error.

use super::*;

pub(super) fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Parse model-produced tool arguments into an Anthropic `input` object
/// (kept verbatim, in the model's key order).
fn tool_input(args: &str, slots: &mut RawSlots) -> Value {
    if args.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => slots.slot(args, v),
        _ => json!({ "_raw_arguments": args }),
    }
}

pub(super) fn message_id(openai_id: &str) -> String {
    format!("msg_{}", openai_id.strip_prefix("chatcmpl-").unwrap_or(openai_id))
}

/// Translate an OpenAI `chat.completion` into an Anthropic `message`.
/// `model` is the name reported to the client. `opts` is not read (OpenAI
/// responses need no request-side context here); it keeps both directions'
/// signatures alike.
pub fn response(body: &[u8], model: &str, _opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let resp: oa::ChatCompletion = parse_json(body)?;
    let choice =
        resp.choices.first().ok_or_else(|| TranslateError::invalid("choices", "upstream response has no choices"))?;
    let m = &choice.message;
    let mut slots = RawSlots::new();
    let mut content = vec![];
    let text = match &m.content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    };
    let refused = text.is_empty() && m.refusal.as_deref().is_some_and(|r| !r.is_empty());
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    } else if let Some(r) = m.refusal.as_deref().filter(|r| !r.is_empty()) {
        content.push(json!({"type": "text", "text": r}));
    }
    for tc in m.tool_calls.iter().flatten() {
        let input = match &tc.function.arguments {
            Value::String(s) => tool_input(s, &mut slots),
            v @ Value::Object(_) => v.clone(),
            _ => json!({}),
        };
        content.push(json!({
            "type": "tool_use",
            "id": tc.id,
            "name": tc.function.name,
            "input": input,
        }));
    }
    let stop = if refused { "refusal" } else { stop_reason(choice.finish_reason.as_deref()) };
    let usage = resp.usage.as_ref().and_then(usage_from_openai).unwrap_or_default();
    let out = obj(vec![
        ("id", json!(message_id(&resp.id))),
        ("type", json!("message")),
        ("role", json!("assistant")),
        ("model", json!(model)),
        ("content", Value::Array(content)),
        ("stop_reason", json!(stop)),
        ("stop_sequence", Value::Null),
        ("usage", usage.to_anthropic_json()),
    ]);
    Ok(slots.render(out))
}

/// Translate an OpenAI error body (with its HTTP status) into Anthropic's
/// error shape; the Anthropic type comes from the status.
pub fn error(status: u16, body: &[u8]) -> Vec<u8> {
    let message = serde_json::from_slice::<oa::ErrorBody>(body)
        .ok()
        .map(|e| e.error.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback_message(status, body));
    to_bytes(&anthropic_error_value(anthropic_error_type(status), &message))
}
