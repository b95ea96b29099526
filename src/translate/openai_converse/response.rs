//! A Converse response or error → an OpenAI chat completion or error.

use super::*;

/// 64-bit FNV-1a: a small, stable hash for deterministic ids.
pub(super) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// OpenAI `finish_reason` for a Converse `stopReason`.
pub(super) fn finish_reason(stop_reason: Option<&str>, real_tool_calls: bool) -> Value {
    let r = match stop_reason {
        None => return Value::Null,
        Some("end_turn" | "stop_sequence") => "stop",
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") if real_tool_calls => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        Some(_) => "stop",
    };
    Value::String(r.into())
}

/// The raw `input` of each content block of a Converse response, to return
/// tool arguments in the model's own key order.
#[derive(Deserialize, Default)]
struct RawConverseResponse {
    #[serde(default)]
    output: Option<RawOutput>,
}

#[derive(Deserialize, Default)]
struct RawOutput {
    #[serde(default)]
    message: Option<RawMessage>,
}

#[derive(Deserialize, Default)]
struct RawMessage {
    #[serde(default)]
    content: Option<Vec<RawContentBlock>>,
}

#[derive(Deserialize, Default)]
struct RawContentBlock {
    #[serde(default, rename = "toolUse")]
    tool_use: Option<RawToolUse>,
}

#[derive(Deserialize, Default)]
struct RawToolUse {
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

impl RawConverseResponse {
    fn tool_inputs(self) -> Vec<Option<String>> {
        let blocks = self.output.and_then(|o| o.message).and_then(|m| m.content).unwrap_or_default();
        blocks.into_iter().map(|b| b.tool_use.and_then(|t| t.input).map(|r| r.get().to_string())).collect()
    }
}

/// Tool arguments: the model's text of the input when it is an object.
fn tool_arguments(raw: Option<&String>, parsed: &Value) -> String {
    match raw {
        Some(r) if r.trim_start().starts_with('{') => r.clone(),
        _ if parsed.is_object() => parsed.to_string(),
        _ => "{}".to_string(),
    }
}

/// Translate a Converse response into an OpenAI `chat.completion`. `model`
/// is the name reported to the client.
///
/// Reads `opts.created` and `opts.forced_json_tool`.
pub fn response(body: &[u8], model: &str, opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let v: Value = parse_json(body)?;
    if !v.is_object() {
        return Err(TranslateError::InvalidJson("a Converse response must be a JSON object".into()));
    }
    let raw_inputs = serde_json::from_slice::<RawConverseResponse>(body).unwrap_or_default().tool_inputs();
    let blocks = v.pointer("/output/message/content").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = vec![];
    for (k, block) in blocks.iter().enumerate() {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(t) = block.pointer("/reasoningContent/reasoningText/text").and_then(Value::as_str) {
            reasoning.push_str(t);
        } else if let Some(tu) = block.get("toolUse") {
            let name = tu.get("name").and_then(Value::as_str).unwrap_or("");
            let args = tool_arguments(raw_inputs.get(k).and_then(Option::as_ref), &tu["input"]);
            if opts.forced_json_tool.as_deref() == Some(name) {
                text.push_str(&args);
            } else {
                tool_calls.push(json!({
                    "id": tu.get("toolUseId").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }));
            }
        }
    }
    let has_tools = !tool_calls.is_empty();
    let message = crate::translate::openai_assistant_message(text, reasoning, tool_calls);
    let stop = v.get("stopReason").and_then(Value::as_str);
    let usage = usage_from_converse(&v).unwrap_or_default();
    let out = obj(vec![
        ("id", json!(format!("chatcmpl-{:016x}", fnv1a(&[body])))),
        ("object", json!("chat.completion")),
        ("created", json!(opts.created)),
        ("model", json!(model)),
        (
            "choices",
            json!([{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish_reason(stop, has_tools),
            }]),
        ),
        ("usage", usage.to_openai_json()),
    ]);
    Ok(to_bytes(&out))
}

// ---------------------------------------------------------------------------
// Errors

/// `error.code` when the upstream named no error type.
fn code_for_status(status: u16) -> String {
    openai_error_code(status).unwrap_or_else(|| openai_error_type(status)).to_string()
}

/// The error name in an `x-amzn-ErrorType` value or a body `__type`
/// (`ThrottlingException:http://…`, `com.amazon.coral#ValidationException`).
fn error_name(s: &str) -> Option<&str> {
    let s = s.split(':').next().unwrap_or("");
    let s = s.rsplit('#').next().unwrap_or("").trim();
    Some(s).filter(|s| !s.is_empty())
}

/// Translate a Bedrock error (HTTP status, the `x-amzn-ErrorType` header
/// value if any, body) into OpenAI's error shape. `error.code` is the
/// Bedrock error name (`ThrottlingException`, `ValidationException`, …), or
/// a code derived from the status when the upstream named none. Bodies that
/// are not `{"message": …}` keep their text as the message.
pub fn error(status: u16, error_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
    let field = |key: &str| parsed.as_ref().and_then(|v| v.get(key)).and_then(Value::as_str);
    let code = error_type
        .and_then(error_name)
        .or_else(|| field("__type").and_then(error_name))
        .map(str::to_string)
        .unwrap_or_else(|| code_for_status(status));
    let message = field("message")
        .or_else(|| field("Message"))
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| fallback_message(status, body));
    to_bytes(&openai_error_value(status, &code, &message))
}
