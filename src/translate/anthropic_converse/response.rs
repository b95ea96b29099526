//! A Converse response or error → an Anthropic message or error.

use super::*;

/// Anthropic `stop_reason` for a Converse `stopReason`.
pub(super) fn stop_reason(converse: Option<&str>) -> &'static str {
    match converse {
        Some("tool_use") => "tool_use",
        Some("max_tokens") => "max_tokens",
        Some("stop_sequence") => "stop_sequence",
        Some("guardrail_intervened" | "content_filtered") => "refusal",
        Some("model_context_window_exceeded") => "model_context_window_exceeded",
        _ => "end_turn",
    }
}

/// The matched stop sequence, when the request asked for
/// `additionalModelResponseFields` `/stop_sequence` and the model gave it.
pub(super) fn matched_stop_sequence(v: &Value) -> Value {
    match v.pointer("/additionalModelResponseFields/stop_sequence") {
        Some(s @ Value::String(_)) => s.clone(),
        _ => Value::Null,
    }
}

/// 64-bit FNV-1a, seeded (two seeds give the 128 bits of a message id).
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A deterministic `msg_…` id for content that has none.
pub(super) fn derived_message_id(bytes: &[u8]) -> String {
    format!("msg_{:016x}{:016x}", fnv1a(0xcbf2_9ce4_8422_2325, bytes), fnv1a(0x6c62_272e_07bb_0142, bytes))
}

/// Side parse of a Converse response for tool inputs in their original key
/// order.
#[derive(Deserialize, Default)]
struct RawConverseResponse {
    #[serde(default)]
    output: Option<RawConverseOutput>,
}

#[derive(Deserialize, Default)]
struct RawConverseOutput {
    #[serde(default)]
    message: Option<RawConverseMessage>,
}

#[derive(Deserialize, Default)]
struct RawConverseMessage {
    #[serde(default)]
    content: Option<Vec<RawConverseBlock>>,
}

#[derive(Deserialize, Default)]
struct RawConverseBlock {
    #[serde(default, rename = "toolUse")]
    tool_use: Option<RawConverseToolUse>,
}

#[derive(Deserialize, Default)]
struct RawConverseToolUse {
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

/// Anthropic content block for one Converse output block (`None` for
/// blocks with no Anthropic form).
fn anthropic_block(b: &Value, raw_input: Option<&RawValue>, slots: &mut RawSlots) -> Option<Value> {
    if let Some(t) = b.get("text").and_then(Value::as_str) {
        return Some(json!({"type": "text", "text": t}));
    }
    if let Some(tu) = b.get("toolUse") {
        let input = match (raw_input, tu.get("input")) {
            (Some(r), Some(p)) if p.is_object() => slots.slot(r.get(), p.clone()),
            (_, Some(p)) if !p.is_null() => p.clone(),
            _ => json!({}),
        };
        return Some(json!({"type": "tool_use", "id": tu["toolUseId"], "name": tu["name"], "input": input}));
    }
    if let Some(rc) = b.get("reasoningContent") {
        if let Some(rt) = rc.get("reasoningText") {
            return Some(json!({
                "type": "thinking",
                "thinking": rt.get("text").and_then(Value::as_str).unwrap_or(""),
                "signature": rt.get("signature").and_then(Value::as_str).unwrap_or(""),
            }));
        }
        if let Some(data) = rc.get("redactedContent").and_then(Value::as_str) {
            return Some(json!({"type": "redacted_thinking", "data": data}));
        }
        return None;
    }
    if let Some(parts) = b.pointer("/citationsContent/content").and_then(Value::as_array) {
        let text: String = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
        return Some(json!({"type": "text", "text": text}));
    }
    None
}

/// Translate a Converse response into an Anthropic `message`. `model` is
/// the name reported to the client; `opts` is not read (kept for symmetry
/// with the other translators).
pub fn response(body: &[u8], model: &str, _opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let v: Value = parse_json(body)?;
    let raw: RawConverseResponse = serde_json::from_slice(body).unwrap_or_default();
    let raw_blocks = raw.output.and_then(|o| o.message).and_then(|m| m.content).unwrap_or_default();
    let blocks = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("output.message", "upstream response has no message"))?;
    let mut slots = RawSlots::new();
    let content: Vec<Value> = blocks
        .iter()
        .enumerate()
        .filter_map(|(k, b)| {
            let raw_input = raw_blocks.get(k).and_then(|r| r.tool_use.as_ref()).and_then(|t| t.input.as_deref());
            anthropic_block(b, raw_input, &mut slots)
        })
        .collect();
    let usage = usage_from_converse(&v).unwrap_or_default();
    let out = obj(vec![
        ("id", json!(derived_message_id(body))),
        ("type", json!("message")),
        ("role", json!("assistant")),
        ("model", json!(model)),
        ("content", Value::Array(content)),
        ("stop_reason", json!(stop_reason(v.get("stopReason").and_then(Value::as_str)))),
        ("stop_sequence", matched_stop_sequence(&v)),
        ("usage", usage.to_anthropic_json()),
    ]);
    Ok(slots.render(out))
}

/// The bare exception name from an `x-amzn-ErrorType` value
/// (`ThrottlingException:http://internal.amazon.com/…`) or a body `__type`
/// (`com.amazon…#ValidationException`).
fn exception_name(raw: &str) -> &str {
    let name = raw.split(':').next().unwrap_or(raw);
    name.rsplit('#').next().unwrap_or(name).trim()
}

/// Anthropic error type for a Bedrock exception name (either case of the
/// first letter: headers say `ThrottlingException`, stream frames
/// `throttlingException`), where the name says more than a status would.
fn anthropic_type_for_exception(name: &str) -> Option<&'static str> {
    match exception_name(name).to_ascii_lowercase().as_str() {
        "throttlingexception" => Some("rate_limit_error"),
        "serviceunavailableexception" => Some("overloaded_error"),
        "modeltimeoutexception" => Some("timeout_error"),
        "validationexception" => Some("invalid_request_error"),
        "accessdeniedexception" => Some("permission_error"),
        "resourcenotfoundexception" => Some("not_found_error"),
        "internalserverexception" | "modelstreamerrorexception" | "modelerrorexception" => Some("api_error"),
        _ => None,
    }
}

/// The `message` of a Bedrock error payload (`message` or `Message`).
fn bedrock_error_message(v: &Value) -> Option<String> {
    ["message", "Message", "originalMessage"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .filter(|m| !m.is_empty())
        .map(str::to_string)
}

/// Translate a Bedrock error (JSON `{"message": …}` or anything else), its
/// HTTP status and `x-amzn-ErrorType` header into Anthropic's error body.
/// The type follows the status; where the status alone gives only
/// `api_error`, the exception name may refine it (503
/// `ServiceUnavailableException` → `overloaded_error`, 408
/// `ModelTimeoutException` → `timeout_error`).
pub fn error(status: u16, error_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed.as_ref().and_then(bedrock_error_message).unwrap_or_else(|| fallback_message(status, body));
    let name = error_type.or_else(|| parsed.as_ref().and_then(|v| v.get("__type")).and_then(Value::as_str));
    let kind = match (anthropic_error_type(status), name.and_then(anthropic_type_for_exception)) {
        ("api_error", Some(specific)) => specific,
        (by_status, _) => by_status,
    };
    to_bytes(&anthropic_error_value(kind, &message))
}
