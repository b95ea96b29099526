//! A Gemini response or error → an Anthropic message or error.

use super::*;

/// Anthropic `stop_reason` for a Gemini `finishReason`.
pub(super) fn stop_reason(reason: &str, tool_use: bool) -> &'static str {
    match gemini::finish(reason) {
        Finish::Length => "max_tokens",
        Finish::Filtered => "refusal",
        Finish::Stop | Finish::Other if tool_use => "tool_use",
        Finish::Stop | Finish::Other => "end_turn",
    }
}

/// `msg_` and Gemini's `responseId`, or 128 bits of hash of `bytes`.
pub(super) fn message_id(response_id: Option<&str>, bytes: &[u8]) -> String {
    match response_id.filter(|r| !r.is_empty()) {
        Some(r) => format!("msg_{r}"),
        None => format!(
            "msg_{:016x}{:016x}",
            gemini::fnv1a(gemini::FNV_OFFSET, &[bytes]),
            gemini::fnv1a(0x6c62_272e_07bb_0142, &[bytes])
        ),
    }
}

/// Translate a `generateContent` response into an Anthropic `message`. `model` is the name
/// reported to the client; `opts` is not read.
pub fn response(body: &[u8], model: &str, _opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let r: GenerateContentResponse = parse_json(body)?;
    if let Some(refusal) = r.refusal() {
        return Err(refusal);
    }
    let seed = gemini::id_seed(r.response_id.as_deref(), body);
    let mut slots = RawSlots::new();
    let mut content: Vec<Value> = vec![];
    let mut tool_uses = 0u64;
    for part in r.parts() {
        if let Some(fc) = &part.function_call {
            let id = gemini::call_id("toolu_", fc.id.as_deref(), seed, tool_uses, part.thought_signature.as_deref());
            tool_uses += 1;
            let args = fc.arguments();
            let parsed: Value = serde_json::from_str(&args).unwrap_or_else(|_| json!({}));
            let input = slots.slot(&args, parsed);
            content.push(json!({"type": "tool_use", "id": id, "name": fc.name, "input": input}));
            continue;
        }
        let text = part.text.as_deref().unwrap_or("");
        if part.is_thought() {
            let sig = part.thought_signature.as_deref().unwrap_or("");
            match content.last_mut() {
                Some(b) if b["type"] == "thinking" && b["signature"] == "" => {
                    let joined = format!("{}{text}", b["thinking"].as_str().unwrap_or(""));
                    b["thinking"] = json!(joined);
                    b["signature"] = json!(sig);
                }
                _ => content.push(json!({"type": "thinking", "thinking": text, "signature": sig})),
            }
        } else if !text.is_empty() {
            match content.last_mut() {
                Some(b) if b["type"] == "text" => {
                    let joined = format!("{}{text}", b["text"].as_str().unwrap_or(""));
                    b["text"] = json!(joined);
                }
                _ => content.push(json!({"type": "text", "text": text})),
            }
        }
    }
    let usage = r.usage_metadata.as_ref().and_then(usage_from_gemini).unwrap_or_default();
    let out = obj(vec![
        ("id", json!(message_id(r.response_id.as_deref(), body))),
        ("type", json!("message")),
        ("role", json!("assistant")),
        ("model", json!(model)),
        ("content", Value::Array(content)),
        ("stop_reason", json!(stop_reason(r.finish_reason().unwrap_or("STOP"), tool_uses > 0))),
        ("stop_sequence", Value::Null),
        ("usage", usage.to_anthropic_json()),
    ]);
    Ok(slots.render(out))
}

// ---------------------------------------------------------------------------
// Errors

/// The Anthropic error type for a status, refined by Google's status name where the status alone
/// gives only `api_error` (`UNAVAILABLE` → `overloaded_error`, which Claude clients retry).
pub(super) fn error_kind(status: u16, google_status: Option<&str>) -> &'static str {
    match (anthropic_error_type(status), google_status) {
        ("api_error", Some("UNAVAILABLE")) => "overloaded_error",
        ("api_error", Some("DEADLINE_EXCEEDED")) => "timeout_error",
        ("api_error", Some("RESOURCE_EXHAUSTED")) => "rate_limit_error",
        (kind, _) => kind,
    }
}

/// Translate a Google error (`{"error": {"code", "message", "status"}}`, or anything else) with its
/// HTTP status into Anthropic's error body.
pub fn error(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed = gemini::google_error(body);
    let message = parsed
        .as_ref()
        .and_then(|e| e.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback_message(status, body));
    let kind = error_kind(status, parsed.as_ref().and_then(|e| e.status.as_deref()));
    to_bytes(&anthropic_error_value(kind, &message))
}
