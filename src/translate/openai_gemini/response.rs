//! A Gemini response or error → an OpenAI chat completion or error.

use super::*;

/// OpenAI `finish_reason` for a Gemini `finishReason`.
pub(super) fn finish_reason(reason: &str, tool_calls: bool) -> &'static str {
    match gemini::finish(reason) {
        Finish::Length => "length",
        Finish::Filtered => "content_filter",
        Finish::Stop | Finish::Other if tool_calls => "tool_calls",
        Finish::Stop | Finish::Other => "stop",
    }
}

/// An OpenAI tool call for the `n`-th function call of a response.
pub(super) fn tool_call(part: &gemini::Part, fc: &gemini::FunctionCall, seed: u64, n: u64) -> Value {
    json!({
        "id": gemini::call_id("call_", fc.id.as_deref(), seed, n, part.thought_signature.as_deref()),
        "type": "function",
        "function": {"name": fc.name, "arguments": fc.arguments()},
    })
}

/// Translate a `generateContent` response into an OpenAI `chat.completion`. `model` is the name
/// reported to the client. Reads `opts.created`.
pub fn response(body: &[u8], model: &str, opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let r: GenerateContentResponse = parse_json(body)?;
    if let Some(refusal) = r.refusal() {
        return Err(refusal);
    }
    let seed = gemini::id_seed(r.response_id.as_deref(), body);
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = vec![];
    for part in r.parts() {
        if let Some(fc) = &part.function_call {
            tool_calls.push(tool_call(part, fc, seed, tool_calls.len() as u64));
        } else if let Some(t) = &part.text {
            if part.is_thought() {
                reasoning.push_str(t);
            } else {
                text.push_str(t);
            }
        }
    }
    let has_tools = !tool_calls.is_empty();
    let message = crate::translate::openai_assistant_message(text, reasoning, tool_calls);
    let id = match r.response_id.as_deref().filter(|r| !r.is_empty()) {
        Some(rid) => format!("chatcmpl-{rid}"),
        None => format!("chatcmpl-{seed:016x}"),
    };
    let usage = r.usage_metadata.as_ref().and_then(usage_from_gemini).unwrap_or_default();
    let out = obj(vec![
        ("id", json!(id)),
        ("object", json!("chat.completion")),
        ("created", json!(opts.created)),
        ("model", json!(model)),
        (
            "choices",
            json!([{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(r.finish_reason().unwrap_or("STOP"), has_tools),
            }]),
        ),
        ("usage", usage.to_openai_json()),
    ]);
    Ok(to_bytes(&out))
}

// ---------------------------------------------------------------------------
// Errors

/// Translate a Google error (`{"error": {"code", "message", "status"}}`, or anything else) with its
/// HTTP status into OpenAI's error shape. `error.code` is Google's status name
/// (`RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`, …), or a code derived from the HTTP status; bodies
/// that are not Google errors keep their text as the message.
pub fn error(status: u16, body: &[u8]) -> Vec<u8> {
    let parsed = gemini::google_error(body);
    let message = parsed
        .as_ref()
        .and_then(|e| e.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| fallback_message(status, body));
    let code = parsed
        .and_then(|e| e.status)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| openai_error_code(status).unwrap_or_else(|| openai_error_type(status)).to_string());
    to_bytes(&openai_error_value(status, &code, &message))
}
