//! A chat completion → a Responses API response object, and errors.

use super::*;

/// The id part shared by a response and its items, from an upstream chat id.
pub(super) fn base_id(chat_id: &str) -> String {
    let id = chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id);
    let clean: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    if clean.is_empty() {
        "unknown".to_string()
    } else {
        clean
    }
}

/// How a response ended (or that it has not).
pub(super) struct Ending<'a> {
    pub(super) status: &'a str,
    /// `incomplete_details.reason`.
    pub(super) incomplete: Option<&'a str>,
    pub(super) error: Option<Value>,
}

impl<'a> Ending<'a> {
    pub(super) fn of(status: &'a str, incomplete: Option<&'a str>) -> Ending<'a> {
        Ending { status, incomplete, error: None }
    }
}

/// The `response` object around `output`.
pub(super) fn response_object(
    id_base: &str,
    model: &str,
    opts: &ResponseOptions,
    ending: Ending,
    output: Vec<Value>,
    usage: Option<&Usage>,
) -> Value {
    let Ending { status, incomplete, error } = ending;
    let mut r = opts.responses.as_ref().map(|e| e.0.clone()).unwrap_or_default();
    r.insert("id".into(), json!(format!("resp_{id_base}")));
    r.insert("object".into(), json!("response"));
    r.insert("created_at".into(), json!(opts.created));
    r.insert("status".into(), json!(status));
    r.insert("error".into(), error.unwrap_or(Value::Null));
    r.insert("incomplete_details".into(), incomplete.map_or(Value::Null, |reason| json!({"reason": reason})));
    r.insert("model".into(), json!(model));
    r.insert("output".into(), Value::Array(output));
    r.insert("usage".into(), usage.map_or(Value::Null, Usage::to_responses_json));
    Value::Object(r)
}

/// `status` and `incomplete_details.reason` for a chat `finish_reason`.
pub(super) fn status_of(finish: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

pub(super) fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub(super) fn reasoning_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [], "content": [{"type": "reasoning_text", "text": text}],
           "status": status})
}

pub(super) fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments,
           "status": status})
}

/// Translates a `chat.completion` into a `response`; `model` is what the client asked for. Reads
/// `opts.created` and `opts.responses` (the echoed request fields).
pub fn response(body: &[u8], model: &str, opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let resp: oa::ChatCompletion = parse_json(body)?;
    let choice =
        resp.choices.first().ok_or_else(|| TranslateError::invalid("choices", "upstream response has no choices"))?;
    let m = &choice.message;
    let base = base_id(&resp.id);
    let mut output = Vec::new();
    if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
        output.push(reasoning_item(&format!("rs_{base}"), r, "completed"));
    }
    let text = match &m.content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    };
    let mut content = Vec::new();
    if !text.is_empty() {
        content.push(text_part(&text));
    }
    if let Some(r) = m.refusal.as_deref().filter(|r| !r.is_empty()) {
        content.push(json!({"type": "refusal", "refusal": r}));
    }
    if !content.is_empty() {
        output.push(json!({"type": "message", "id": format!("msg_{base}"), "status": "completed",
                           "role": "assistant", "content": content}));
    }
    for tc in m.tool_calls.iter().flatten() {
        let arguments = match &tc.function.arguments {
            Value::String(s) => s.clone(),
            Value::Null => "{}".to_string(),
            other => other.to_string(),
        };
        output.push(call_item(&format!("fc_{}", tc.id), &tc.id, &tc.function.name, &arguments, "completed"));
    }
    let (status, incomplete) = status_of(choice.finish_reason.as_deref());
    let usage = resp.usage.as_ref().and_then(usage_from_openai);
    let r = response_object(&base, model, opts, Ending::of(status, incomplete), output, usage.as_ref());
    Ok(to_bytes(&r))
}

/// An upstream error body (OpenAI's shape, or anything) in OpenAI's error shape, which Responses
/// clients read.
pub fn error(status: u16, body: &[u8]) -> Vec<u8> {
    if let Ok(e) = serde_json::from_slice::<oa::ErrorBody>(body) {
        if !e.error.message.is_empty() {
            return body.to_vec();
        }
    }
    to_bytes(&json!({"error": {
        "message": fallback_message(status, body),
        "type": openai_error_type(status),
        "param": null,
        "code": openai_error_code(status),
    }}))
}
