//! Anthropic Messages client → OpenAI Chat Completions upstream.
//!
//! # What is translated, dropped or rejected
//!
//! Rejected with [`TranslateError::Unsupported`]: server tools (tools with a
//! versioned `type` such as `web_search_20250305`), `mcp_servers`,
//! `container`, content blocks OpenAI cannot carry (`search_result`,
//! `server_tool_use`, documents that are not base64 PDFs, images inside
//! `tool_result`), and `role` values other than user/assistant.
//!
//! Dropped on purpose ([`DROPPED_FIELDS`]): `top_k` (no OpenAI
//! equivalent), `service_tier`, `cache_control` markers (OpenAI caches
//! automatically), `citations` settings; `thinking` / `redacted_thinking`
//! blocks in assistant history (OpenAI cannot take them back). Unknown
//! top-level fields are dropped and reported in
//! [`RequestTranslation::dropped`].
//!
//! Other choices:
//! * `tool_result` blocks become `tool` messages placed right after the
//!   assistant message, before any other content of the same user turn;
//!   `is_error: true` is conveyed by prefixing the content with `"Error: "`
//!   (OpenAI has no error flag).
//! * `thinking.budget_tokens` is bucketed into `reasoning_effort`:
//!   < 4096 → low, < 16384 → medium, otherwise high.
//! * In responses, `reasoning_content` is dropped: Anthropic thinking
//!   blocks need a signature the client would have to send back, and we
//!   cannot produce one.
//! * Tool-call arguments that are not a JSON object (truncated or invalid
//!   JSON from the model) become `{"_raw_arguments": "<text>"}`, so the
//!   client's schema validation fails visibly and the model sees its own
//!   output, rather than the call silently running with `{}`.
//! * `finish_reason: "stop"` maps to `end_turn`; OpenAI does not say whether a
//!   stop sequence matched, so `stop_sequence` is never reported.
//! * A stream that ends after `finish_reason` but without `[DONE]` is closed
//!   normally (some OpenAI-compatible servers omit `[DONE]`); one that ends
//!   before `finish_reason` gets an `error` event and no `message_stop`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::raw::RawSlots;
use super::{
    anthropic_error_type, anthropic_error_value, anthropic_request, fallback_message, obj, parse_json, to_bytes,
    usage_from_openai, write_anthropic_event, write_anthropic_message_start, RequestOptions, ResponseOptions,
    TranslateError, Usage,
};
use crate::schema::{anthropic as an, openai as oa};
use crate::stream::{Event, StreamTranslate};

mod response;
mod stream;

pub use response::*;
pub use stream::*;

/// Top-level request fields dropped on purpose.
pub const DROPPED_FIELDS: &[&str] = &["top_k", "service_tier", "anthropic_version"];

/// Everything the gateway needs from request translation.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTranslation {
    /// The OpenAI request body.
    pub body: Vec<u8>,
    /// The client asked for a stream.
    pub stream: bool,
    /// Top-level client fields that were dropped (known and unknown).
    pub dropped: Vec<String>,
}

/// Translate an Anthropic Messages request body into an OpenAI chat body.
pub fn request(body: &[u8], opts: &RequestOptions) -> Result<Vec<u8>, TranslateError> {
    request_full(body, opts).map(|t| t.body)
}

/// [`request`], also reporting what was dropped.
pub fn request_full(body: &[u8], opts: &RequestOptions) -> Result<RequestTranslation, TranslateError> {
    let (req, raw) = anthropic_request(body)?;
    let mut slots = RawSlots::new();
    let dropped: Vec<String> = req.rest.keys().cloned().collect();
    let model = opts.model.clone().or(req.model.clone()).ok_or_else(|| TranslateError::invalid("model", "missing"))?;

    let mut messages: Vec<Value> = vec![];
    match &req.system {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                messages.push(json!({"role": "system", "content": s}));
            }
        }
        Some(Value::Array(blocks)) => {
            let mut texts = vec![];
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(b["text"].as_str().unwrap_or("").to_string()),
                    _ => return Err(TranslateError::unsupported(format!("system[{j}].type"))),
                }
            }
            let joined = texts.join("\n\n");
            if !joined.is_empty() {
                messages.push(json!({"role": "system", "content": joined}));
            }
        }
        Some(_) => return Err(TranslateError::invalid("system", "must be a string or an array")),
    }

    for (i, m) in req.messages.iter().enumerate() {
        match m.role.as_str() {
            "user" => convert_user(m, i, &mut messages)?,
            "assistant" => {
                let raw_inputs =
                    raw.messages.as_ref().and_then(|ms| ms.get(i)).map(|m| m.block_inputs()).unwrap_or_default();
                messages.push(convert_assistant(m, i, &raw_inputs)?)
            }
            other => {
                return Err(TranslateError::invalid(format!("messages[{i}].role"), format!("unknown role `{other}`")))
            }
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model));
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(req.max_tokens.unwrap_or(u64::from(opts.default_max_tokens))));
    if let Some(t) = req.temperature {
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        out.insert("top_p".into(), json!(p));
    }
    if let Some(s) = req.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
        out.insert("stop".into(), json!(s));
    }
    let stream = req.stream.unwrap_or(false);
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(u) = req.metadata.as_ref().and_then(|m| m.user_id.as_ref()) {
        out.insert("user".into(), json!(u));
    }

    let mut tools = vec![];
    for (i, t) in req.tools.iter().flatten().enumerate() {
        match t.kind.as_deref() {
            None | Some("custom") => {}
            Some(_) => return Err(TranslateError::unsupported(format!("tools[{i}].type"))),
        }
        let mut f = Map::new();
        f.insert("name".into(), json!(t.name));
        if let Some(d) = &t.description {
            f.insert("description".into(), json!(d));
        }
        let raw_schema = raw.tools.as_ref().and_then(|ts| ts.get(i)).and_then(|t| t.input_schema.as_deref());
        let schema = match (raw_schema, &t.input_schema) {
            (Some(r), Some(p)) if p.is_object() => slots.slot(r.get(), p.clone()),
            (_, Some(p)) if !p.is_null() => p.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        f.insert("parameters".into(), schema);
        tools.push(json!({"type": "function", "function": Value::Object(f)}));
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &req.tool_choice {
            let choice = match tc.kind.as_str() {
                "auto" => json!("auto"),
                "any" => json!("required"),
                "none" => json!("none"),
                "tool" => {
                    let name =
                        tc.name.as_ref().ok_or_else(|| TranslateError::invalid("tool_choice.name", "missing"))?;
                    json!({"type": "function", "function": {"name": name}})
                }
                other => return Err(TranslateError::invalid("tool_choice.type", format!("unknown value `{other}`"))),
            };
            out.insert("tool_choice".into(), choice);
            if tc.disable_parallel_tool_use == Some(true) {
                out.insert("parallel_tool_calls".into(), Value::Bool(false));
            }
        }
    }

    if let Some(th) = &req.thinking {
        if th.kind == "enabled" {
            let budget = th.budget_tokens.unwrap_or(0);
            let effort = if budget < 4096 {
                "low"
            } else if budget < 16384 {
                "medium"
            } else {
                "high"
            };
            out.insert("reasoning_effort".into(), json!(effort));
        }
    }

    Ok(RequestTranslation { body: slots.render(Value::Object(out)), stream, dropped })
}

fn image_part(b: &Value, field: &str) -> Result<Value, TranslateError> {
    let src = b.get("source").unwrap_or(&Value::Null);
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            src["media_type"].as_str().unwrap_or("image/png"),
            src["data"].as_str().unwrap_or("")
        ),
        Some("url") => src["url"].as_str().unwrap_or("").to_string(),
        _ => return Err(TranslateError::unsupported(format!("{field}.source.type"))),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tool_result_text(b: &Value, field: &str) -> Result<String, TranslateError> {
    let text = match b.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut texts = vec![];
            for (k, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(p["text"].as_str().unwrap_or("").to_string()),
                    _ => return Err(TranslateError::unsupported(format!("{field}.content[{k}].type"))),
                }
            }
            texts.join("\n")
        }
        Some(_) => return Err(TranslateError::invalid(format!("{field}.content"), "must be a string or an array")),
    };
    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
        Ok(format!("Error: {text}"))
    } else {
        Ok(text)
    }
}

fn convert_user(m: &an::Message, i: usize, out: &mut Vec<Value>) -> Result<(), TranslateError> {
    let blocks = match &m.content {
        Value::String(s) => {
            out.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => return Err(TranslateError::invalid(format!("messages[{i}].content"), "must be a string or an array")),
    };
    let mut parts = vec![];
    for (j, b) in blocks.iter().enumerate() {
        let field = format!("messages[{i}].content[{j}]");
        match b.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(json!({"type": "text", "text": b["text"].as_str().unwrap_or("")})),
            Some("image") => parts.push(image_part(b, &field)?),
            Some("document") => {
                let src = b.get("source").unwrap_or(&Value::Null);
                if src["type"] == "base64" && src["media_type"] == "application/pdf" {
                    parts.push(json!({"type": "file", "file": {
                        "filename": b.get("title").and_then(Value::as_str).unwrap_or("document.pdf"),
                        "file_data": format!("data:application/pdf;base64,{}", src["data"].as_str().unwrap_or("")),
                    }}));
                } else {
                    return Err(TranslateError::unsupported(format!("{field}.source")));
                }
            }
            Some("tool_result") => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::invalid(format!("{field}.tool_use_id"), "missing"))?;
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": id,
                    "content": tool_result_text(b, &field)?,
                }));
            }
            _ => return Err(TranslateError::unsupported(format!("{field}.type"))),
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_slice() {
            [p] if p["type"] == "text" => p["text"].clone(),
            _ => Value::Array(parts),
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn convert_assistant(
    m: &an::Message,
    i: usize,
    raw_inputs: &[Option<Box<serde_json::value::RawValue>>],
) -> Result<Value, TranslateError> {
    let mut text = String::new();
    let mut tool_calls = vec![];
    match &m.content {
        Value::String(s) => text.push_str(s),
        Value::Array(blocks) => {
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(b["text"].as_str().unwrap_or("")),
                    Some("thinking" | "redacted_thinking") => {}
                    Some("tool_use") => {
                        let arguments = match raw_inputs.get(j).and_then(|r| r.as_deref()) {
                            Some(r) if b["input"].is_object() => r.get().to_string(),
                            _ => "{}".to_string(),
                        };
                        tool_calls.push(json!({
                            "id": b["id"],
                            "type": "function",
                            "function": {"name": b["name"], "arguments": arguments},
                        }));
                    }
                    _ => return Err(TranslateError::unsupported(format!("messages[{i}].content[{j}].type"))),
                }
            }
        }
        _ => return Err(TranslateError::invalid(format!("messages[{i}].content"), "must be a string or an array")),
    }
    let mut msg = Map::new();
    msg.insert("role".into(), json!("assistant"));
    msg.insert("content".into(), if text.is_empty() { Value::Null } else { Value::String(text) });
    if !tool_calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    Ok(Value::Object(msg))
}
