//! OpenAI Chat Completions client → Anthropic Messages upstream.
//!
//! # What is translated, dropped or rejected
//!
//! Rejected with [`TranslateError::Unsupported`] (dropping would change the
//! result the client gets):
//! * `n` > 1 (Anthropic returns one candidate);
//! * `logprobs: true` (Anthropic has no log probabilities);
//! * `functions` / `function_call` (legacy function calling; clients must
//!   use `tools`), and `role: "function"` messages;
//! * `audio`, `modalities` containing `"audio"`, `web_search_options`;
//! * tools whose `type` is not `"function"`, and content parts other than
//!   `text`, `image_url` and PDF `file` data (`input_audio`, `file_id`).
//!
//! Dropped on purpose ([`DROPPED_FIELDS`], for debug logging): sampling
//! knobs Anthropic lacks (`seed`, `frequency_penalty`, `presence_penalty`,
//! `logit_bias`, `top_logprobs` without `logprobs`), OpenAI-platform
//! features (`store`, `metadata`, `service_tier`, `prediction`,
//! `prompt_cache_key`, `safety_identifier`, `verbosity`) and
//! `stream_options` (consumed by the gateway: see
//! [`RequestTranslation::include_usage`]). Unknown top-level fields are
//! dropped too (Anthropic rejects unknown fields) and reported in
//! [`RequestTranslation::dropped`].
//!
//! Emulated:
//! * `response_format: json_schema` becomes a tool named after the schema
//!   that the model is forced to call; `json_object` becomes a tool named
//!   [`JSON_OBJECT_TOOL`] whose schema is any object. The response
//!   translators turn that tool's input back into message text with
//!   `finish_reason: "stop"`. If the client also sent tools, the JSON tool is
//!   added to them and `tool_choice` becomes `any` (the model must either call
//!   a real tool or answer in JSON), unless the client named a tool.
//!   `response_format: text` is the default and is dropped.
//! * `reasoning_effort` low/medium/high → `thinking` with a budget of
//!   1024/4096/16384 tokens (`minimal`/`none` → no thinking). OpenAI's
//!   `max_tokens` counts reasoning, Anthropic's must exceed the budget, so a
//!   `max_tokens` ≤ budget becomes `budget + max_tokens`. With thinking on,
//!   `temperature` and `top_p` are dropped (Anthropic rejects them with
//!   thinking), and thinking is not enabled when `tool_choice` is forced
//!   (Anthropic rejects that combination) nor when the conversation ends with
//!   tool results for an assistant `tool_use` turn (Anthropic then requires
//!   that turn's signed thinking blocks, which OpenAI clients cannot return).
//!
//! Other choices: system/developer messages anywhere in the conversation
//! are hoisted into the top-level `system`; message `name` fields are dropped;
//! `reasoning_content` in assistant history is dropped (it has no signature
//! Anthropic would accept); empty text parts are skipped; the last assistant
//! message (a prefill) has trailing whitespace trimmed, which Anthropic
//! requires. Thinking in responses is returned as `reasoning_content`
//! (the field DeepSeek-style OpenAI clients read), never mixed into
//! `content`; `redacted_thinking` and server-tool blocks
//! (`server_tool_use`, `web_search_tool_result`, …) are dropped from
//! responses.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::raw::{RawAnthropicResponse, RawOpenAiRequest, RawSlots};
use super::{
    anthropic_error_type, fallback_message, obj, openai_error_code, parse_json, status_from_anthropic_error_type,
    to_bytes, write_openai_chunk, RequestOptions, ResponseOptions, TranslateError, Usage,
};
use crate::schema::{anthropic as an, openai as oa};
use crate::sse::write_event;
use crate::stream::{Event, StreamTranslate};

/// Top-level request fields dropped on purpose because Anthropic has no
/// equivalent and dropping them does not change what the client asked for in
/// a way it could observe as wrong.
pub const DROPPED_FIELDS: &[&str] = &[
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "top_logprobs",
    "stream_options",
    "service_tier",
    "store",
    "metadata",
    "prediction",
    "prompt_cache_key",
    "safety_identifier",
    "verbosity",
];

/// Fields rejected with [`TranslateError::Unsupported`] whenever present.
const REJECTED_FIELDS: &[&str] = &["functions", "function_call", "audio", "web_search_options"];

/// Tool name used to emulate `response_format: {"type":"json_object"}`.
pub const JSON_OBJECT_TOOL: &str = "json_response";

/// Thinking budget for each `reasoning_effort`.
pub(crate) fn thinking_budget(effort: &str) -> Result<Option<u64>, TranslateError> {
    match effort {
        "none" | "minimal" => Ok(None),
        "low" => Ok(Some(1024)),
        "medium" => Ok(Some(4096)),
        "high" => Ok(Some(16384)),
        other => Err(TranslateError::invalid("reasoning_effort", format!("unknown value `{other}`"))),
    }
}

/// Everything the gateway needs from request translation.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTranslation {
    /// The Anthropic request body.
    pub body: Vec<u8>,
    /// The client asked for a stream.
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// Name of the tool emulating `response_format`, for [`ResponseOptions`].
    pub forced_json_tool: Option<String>,
    /// Top-level client fields that were dropped (known and unknown).
    pub dropped: Vec<String>,
}

impl RequestTranslation {
    /// Response options matching this request.
    pub fn response_options(&self, created: u64) -> ResponseOptions {
        ResponseOptions {
            created,
            forced_json_tool: self.forced_json_tool.clone(),
            include_usage: self.include_usage,
            ..ResponseOptions::default()
        }
    }
}

/// An OpenAI tool call's `arguments` as a JSON object (`field` names it in errors): absent or blank is
/// `{}`, a string must encode an object (returned with its text, for callers that keep its key order),
/// and an object is taken as it is.
pub(crate) fn tool_call_arguments<'a>(
    arguments: &'a Value,
    field: &str,
) -> Result<(Value, Option<&'a str>), TranslateError> {
    match arguments {
        Value::Null => Ok((json!({}), None)),
        Value::String(s) if s.trim().is_empty() => Ok((json!({}), None)),
        Value::String(s) => {
            let parsed = serde_json::from_str::<Value>(s)
                .map_err(|e| TranslateError::invalid(field, format!("not valid JSON: {e}")))?;
            if !parsed.is_object() {
                return Err(TranslateError::invalid(field, "must encode a JSON object"));
            }
            Ok((parsed, Some(s)))
        }
        v @ Value::Object(_) => Ok((v.clone(), None)),
        _ => Err(TranslateError::invalid(field, "must encode a JSON object")),
    }
}

/// OpenAI request fields no other API family can honour, whose dropping would change the result:
/// refused (400) by every translator from OpenAI chat.
pub(crate) fn reject_unsupported(req: &oa::ChatRequest) -> Result<(), TranslateError> {
    if req.n.unwrap_or(1) > 1 {
        return Err(TranslateError::unsupported("n"));
    }
    if req.logprobs == Some(true) {
        return Err(TranslateError::unsupported("logprobs"));
    }
    for f in REJECTED_FIELDS {
        if req.rest.get(*f).is_some_and(|v| !v.is_null()) {
            return Err(TranslateError::unsupported(*f));
        }
    }
    if let Some(m) = req.rest.get("modalities").and_then(Value::as_array) {
        if m.iter().any(|v| v.as_str() == Some("audio")) {
            return Err(TranslateError::unsupported("modalities"));
        }
    }
    Ok(())
}

/// Translate an OpenAI chat request body into an Anthropic Messages body.
pub fn request(body: &[u8], opts: &RequestOptions) -> Result<Vec<u8>, TranslateError> {
    request_full(body, opts).map(|t| t.body)
}

/// [`request`], also returning what the response side needs to know.
pub fn request_full(body: &[u8], opts: &RequestOptions) -> Result<RequestTranslation, TranslateError> {
    let req: oa::ChatRequest = parse_json(body)?;
    // Order-sensitive fragments (schemas) are carried verbatim.
    let raw: RawOpenAiRequest = serde_json::from_slice(body).unwrap_or_default();
    let mut slots = RawSlots::new();

    reject_unsupported(&req)?;
    let mut dropped: Vec<String> = req.rest.keys().filter(|k| k.as_str() != "modalities").cloned().collect();
    if req.stream_options.is_some() {
        dropped.push("stream_options".into());
    }

    let model = opts.model.clone().or(req.model.clone()).ok_or_else(|| TranslateError::invalid("model", "missing"))?;

    let (system, messages) = convert_messages(&req.messages, &mut slots)?;
    if messages.is_empty() {
        return Err(TranslateError::invalid("messages", "at least one non-system message is required"));
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model));
    if let Some(s) = system {
        out.insert("system".into(), s);
    }
    out.insert("messages".into(), Value::Array(messages));

    let mut max_tokens = req.max_completion_tokens.or(req.max_tokens).unwrap_or(u64::from(opts.default_max_tokens));

    if let Some(stop) = &req.stop {
        let seqs: Vec<Value> = match stop {
            Value::Null => vec![],
            Value::String(s) => vec![Value::String(s.clone())],
            Value::Array(a) => {
                if a.iter().any(|v| !v.is_string()) {
                    return Err(TranslateError::invalid("stop", "must be a string or an array of strings"));
                }
                a.clone()
            }
            _ => return Err(TranslateError::invalid("stop", "must be a string or an array of strings")),
        };
        if !seqs.is_empty() {
            out.insert("stop_sequences".into(), Value::Array(seqs));
        }
    }
    let stream = req.stream.unwrap_or(false);
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(user) = &req.user {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }

    // Tools.
    let mut tools: Vec<Value> = Vec::new();
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            return Err(TranslateError::unsupported(format!("tools[{i}].type")));
        }
        let f =
            t.function.as_ref().ok_or_else(|| TranslateError::invalid(format!("tools[{i}].function"), "missing"))?;
        let mut tool = Map::new();
        tool.insert("name".into(), Value::String(f.name.clone()));
        if let Some(d) = &f.description {
            tool.insert("description".into(), Value::String(d.clone()));
        }
        let raw_schema = raw
            .tools
            .as_ref()
            .and_then(|t| t.get(i))
            .and_then(|t| t.function.as_ref())
            .and_then(|f| f.parameters.as_deref());
        let schema = match (raw_schema, &f.parameters) {
            (Some(r), Some(p)) if p.is_object() => slots.slot(r.get(), p.clone()),
            (_, Some(p)) if !p.is_null() => p.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        tool.insert("input_schema".into(), schema);
        tools.push(Value::Object(tool));
    }
    let user_tools = !tools.is_empty();

    let mut tool_choice: Option<Value> = match &req.tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            other => return Err(TranslateError::invalid("tool_choice", format!("unknown value `{other}`"))),
        },
        Some(v @ Value::Object(_)) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.function.name", "missing"))?;
            Some(json!({"type": "tool", "name": name}))
        }
        Some(_) => return Err(TranslateError::invalid("tool_choice", "must be a string or an object")),
    };

    // response_format emulation.
    let mut forced_json_tool = None;
    if let Some(rf) = &req.response_format {
        let kind = rf.get("type").and_then(Value::as_str).unwrap_or("");
        let (name, description, schema) = match kind {
            "text" | "" => (None, None, None),
            "json_object" => (
                Some(JSON_OBJECT_TOOL.to_string()),
                Some("Respond with a JSON object.".to_string()),
                Some(json!({"type": "object"})),
            ),
            "json_schema" => {
                let js = rf
                    .get("json_schema")
                    .ok_or_else(|| TranslateError::invalid("response_format.json_schema", "missing"))?;
                let name = js
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::invalid("response_format.json_schema.name", "missing"))?;
                let desc = js
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| "Respond with a JSON object that matches this schema.".to_string());
                let raw_schema =
                    raw.response_format.as_ref().and_then(|r| r.json_schema.as_ref()).and_then(|j| j.schema.as_deref());
                let schema = match (raw_schema, js.get("schema")) {
                    (Some(r), Some(p)) if p.is_object() => slots.slot(r.get(), p.clone()),
                    _ => json!({"type": "object"}),
                };
                (Some(name.to_string()), Some(desc), Some(schema))
            }
            other => return Err(TranslateError::invalid("response_format.type", format!("unknown value `{other}`"))),
        };
        if let (Some(name), Some(desc), Some(schema)) = (name, description, schema) {
            tools.push(json!({"name": name, "description": desc, "input_schema": schema}));
            let user_named = tool_choice.as_ref().is_some_and(|c| c["type"] == "tool");
            let user_none = tool_choice.as_ref().is_some_and(|c| c["type"] == "none");
            tool_choice = Some(if user_tools && !user_none {
                if user_named {
                    tool_choice.take().unwrap_or_default()
                } else {
                    json!({"type": "any"})
                }
            } else {
                json!({"type": "tool", "name": name})
            });
            if user_tools && user_none {
                // The client forbade its tools; only the JSON tool remains.
                tools.retain(|t| t["name"] == name.as_str());
            }
            forced_json_tool = Some(name);
        }
    }

    if req.parallel_tool_calls == Some(false) && !tools.is_empty() {
        let tc = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if tc["type"] != "none" {
            tc["disable_parallel_tool_use"] = Value::Bool(true);
        }
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(tc) = &tool_choice {
            out.insert("tool_choice".into(), tc.clone());
        }
    }

    // Thinking.
    let forced_choice = tool_choice.as_ref().is_some_and(|c| c["type"] == "any" || c["type"] == "tool");
    let in_tool_loop = continues_tool_use(out.get("messages"));
    let mut thinking = false;
    if let Some(effort) = &req.reasoning_effort {
        if let Some(budget) = thinking_budget(effort)? {
            if !forced_choice && !in_tool_loop {
                thinking = true;
                if max_tokens <= budget {
                    max_tokens += budget;
                }
                out.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
            }
        }
    }
    if !thinking {
        if let Some(t) = req.temperature {
            out.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            out.insert("top_p".into(), json!(p));
        }
    }
    out.insert("max_tokens".into(), json!(max_tokens));

    Ok(RequestTranslation {
        body: slots.render(Value::Object(out)),
        stream,
        include_usage: req.stream_options.as_ref().and_then(|s| s.include_usage).unwrap_or(false),
        forced_json_tool,
        dropped,
    })
}

/// True when the conversation ends with tool results answering an assistant
/// `tool_use` turn. With thinking enabled, Anthropic requires that turn's
/// signed thinking blocks, which an OpenAI client cannot send back.
fn continues_tool_use(messages: Option<&Value>) -> bool {
    let Some(msgs) = messages.and_then(Value::as_array) else {
        return false;
    };
    let has = |m: &Value, kind: &str| m["content"].as_array().is_some_and(|b| b.iter().any(|b| b["type"] == kind));
    match msgs.as_slice() {
        [.., a, u] => a["role"] == "assistant" && has(a, "tool_use") && has(u, "tool_result"),
        _ => false,
    }
}

fn text_block(text: &str) -> Value {
    json!({"type": "text", "text": text})
}

/// Text parts of a system/developer/tool message content.
fn text_parts(content: &Option<Value>, field: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(if s.is_empty() { vec![] } else { vec![text_block(s)] }),
        Some(Value::Array(parts)) => {
            let mut out = vec![];
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p
                            .get("text")
                            .and_then(Value::as_str)
                            .ok_or_else(|| TranslateError::invalid(format!("{field}[{j}].text"), "missing"))?;
                        if !t.is_empty() {
                            out.push(text_block(t));
                        }
                    }
                    _ => return Err(TranslateError::unsupported(format!("{field}[{j}].type"))),
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::invalid(field, "must be a string or an array")),
    }
}

/// Parse `data:<media type>;base64,<data>`.
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

fn user_parts(content: &Option<Value>, field: &str) -> Result<Vec<Value>, TranslateError> {
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        other => return text_parts(other, field),
    };
    let mut out = vec![];
    for (j, p) in parts.iter().enumerate() {
        let pf = format!("{field}[{j}]");
        match p.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = p
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::invalid(format!("{pf}.text"), "missing"))?;
                if !t.is_empty() {
                    out.push(text_block(t));
                }
            }
            Some("image_url") => {
                let url = match p.get("image_url") {
                    Some(Value::String(s)) => s.as_str(),
                    Some(v) => v.get("url").and_then(Value::as_str).unwrap_or(""),
                    None => "",
                };
                let uf = format!("{pf}.image_url.url");
                let source = if url.starts_with("data:") {
                    let (media_type, data) = parse_data_url(url).ok_or_else(|| {
                        TranslateError::invalid(&uf, "data URL must be `data:<media type>;base64,<data>`")
                    })?;
                    json!({"type": "base64", "media_type": media_type, "data": data})
                } else if url.starts_with("https://") || url.starts_with("http://") {
                    json!({"type": "url", "url": url})
                } else {
                    return Err(TranslateError::invalid(uf, "must be an http(s) or data URL"));
                };
                out.push(json!({"type": "image", "source": source}));
            }
            Some("file") => {
                let data = p.pointer("/file/file_data").and_then(Value::as_str);
                match data.and_then(parse_data_url) {
                    Some(("application/pdf", d)) => out.push(json!({
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": d}
                    })),
                    _ => return Err(TranslateError::unsupported(format!("{pf}.file"))),
                }
            }
            _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
        }
    }
    Ok(out)
}

fn assistant_blocks(m: &oa::ChatMessage, i: usize, slots: &mut RawSlots) -> Result<Vec<Value>, TranslateError> {
    let field = format!("messages[{i}].content");
    let mut out = match &m.content {
        Some(Value::Array(parts)) => {
            let mut v = vec![];
            for (j, p) in parts.iter().enumerate() {
                let key = match p.get("type").and_then(Value::as_str) {
                    Some("text") => "text",
                    Some("refusal") => "refusal",
                    _ => return Err(TranslateError::unsupported(format!("{field}[{j}].type"))),
                };
                if let Some(t) = p.get(key).and_then(Value::as_str) {
                    if !t.is_empty() {
                        v.push(text_block(t));
                    }
                }
            }
            v
        }
        other => text_parts(other, &field)?,
    };
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        let af = format!("messages[{i}].tool_calls[{j}].function.arguments");
        let input = match tool_call_arguments(&tc.function.arguments, &af)? {
            (parsed, Some(source)) => slots.slot(source, parsed),
            (parsed, None) => parsed,
        };
        out.push(json!({
            "type": "tool_use",
            "id": tc.id,
            "name": tc.function.name,
            "input": input,
        }));
    }
    Ok(out)
}

/// Convert messages: returns (system, alternating Anthropic messages).
fn convert_messages(
    msgs: &[oa::ChatMessage],
    slots: &mut RawSlots,
) -> Result<(Option<Value>, Vec<Value>), TranslateError> {
    let mut system: Vec<Value> = vec![];
    // (role, blocks) with consecutive same roles merged.
    let mut turns: Vec<(&'static str, Vec<Value>)> = vec![];
    for (i, m) in msgs.iter().enumerate() {
        let field = format!("messages[{i}].content");
        let (role, blocks): (&'static str, Vec<Value>) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(text_parts(&m.content, &field)?);
                continue;
            }
            "user" => ("user", user_parts(&m.content, &field)?),
            "assistant" => ("assistant", assistant_blocks(m, i, slots)?),
            "tool" => {
                let id = m
                    .tool_call_id
                    .clone()
                    .ok_or_else(|| TranslateError::invalid(format!("messages[{i}].tool_call_id"), "missing"))?;
                let parts = text_parts(&m.content, &field)?;
                let mut block = json!({"type": "tool_result", "tool_use_id": id});
                match parts.as_slice() {
                    [] => {}
                    [one] => block["content"] = one["text"].clone(),
                    _ => block["content"] = Value::Array(parts),
                }
                ("user", vec![block])
            }
            "function" => return Err(TranslateError::unsupported(format!("messages[{i}].role"))),
            other => {
                return Err(TranslateError::invalid(format!("messages[{i}].role"), format!("unknown role `{other}`")))
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    // Anthropic rejects a final assistant prefill ending in whitespace.
    if let Some(("assistant", blocks)) = turns.last_mut() {
        if let Some(last) = blocks.last_mut() {
            if last["type"] == "text" {
                let trimmed = last["text"].as_str().unwrap_or("").trim_end().to_string();
                if trimmed.is_empty() {
                    blocks.pop();
                } else {
                    last["text"] = Value::String(trimmed);
                }
            }
        }
        if blocks.is_empty() {
            turns.pop();
        }
    }
    let messages = turns
        .into_iter()
        .map(|(role, blocks)| {
            let content = match blocks.as_slice() {
                [b] if b["type"] == "text" && b.as_object().is_some_and(|o| o.len() == 2) => b["text"].clone(),
                _ => Value::Array(blocks),
            };
            json!({"role": role, "content": content})
        })
        .collect();
    let system = match system.as_slice() {
        [] => None,
        [one] => Some(one["text"].clone()),
        _ => Some(Value::Array(system)),
    };
    Ok((system, messages))
}

fn finish_reason(stop_reason: Option<&str>, real_tool_calls: bool) -> Value {
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
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    message.insert("content".into(), if text.is_empty() { Value::Null } else { Value::String(text) });
    message.insert("refusal".into(), Value::Null);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    if has_tools {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    let usage = msg.usage.as_ref().and_then(super::usage_from_anthropic).unwrap_or_default();
    let out = obj(vec![
        ("id", json!(format!("chatcmpl-{}", msg.id))),
        ("object", json!("chat.completion")),
        ("created", json!(opts.created)),
        ("model", json!(model)),
        (
            "choices",
            json!([{
                "index": 0,
                "message": Value::Object(message),
                "logprobs": null,
                "finish_reason": finish_reason(msg.stop_reason.as_deref(), has_tools),
            }]),
        ),
        ("usage", usage.to_openai_json()),
    ]);
    Ok(to_bytes(&out))
}

/// OpenAI `{"error":{…}}` object for an Anthropic error type and message.
fn openai_error_value(status: u16, anthropic_type: &str, message: &str) -> Value {
    let code = openai_error_code(status).map(str::to_string).unwrap_or_else(|| anthropic_type.to_string());
    super::openai_error_value(status, &code, message)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Tool(u64),
    ForcedJson,
    Thinking,
    Other,
}

/// Anthropic SSE stream → OpenAI `chat.completion.chunk` SSE stream.
///
/// Reads `opts.created`, `opts.forced_json_tool` and `opts.include_usage`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    opts: ResponseOptions,
    id: String,
    blocks: HashMap<u64, Block>,
    tool_calls: u64,
    usage: Option<Usage>,
    done: bool,
}

impl StreamTranslator {
    /// `model` is the name reported to the client; `created` is put in every
    /// chunk (it overrides `opts.created`).
    pub fn new(model: &str, created: u64, opts: &ResponseOptions) -> Self {
        let mut opts = opts.clone();
        opts.created = created;
        StreamTranslator {
            model: model.to_string(),
            opts,
            id: "chatcmpl-unknown".to_string(),
            blocks: HashMap::new(),
            tool_calls: 0,
            usage: None,
            done: false,
        }
    }

    /// The upstream byte stream ended. If it ended without `message_stop`,
    /// an error event is emitted (and no `[DONE]`).
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if !self.done {
            self.done = true;
            let err = json!({"error": {
                "message": "upstream stream ended before message_stop",
                "type": "server_error",
                "param": null,
                "code": "stream_incomplete",
            }});
            write_event(out, None, &to_bytes(&err));
        }
    }

    /// Usage seen so far (cumulative, as reported by the upstream).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    /// True once the stream reached a terminal state (`[DONE]` or error).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn chunk(&self, delta: Value, finish: Value, out: &mut Vec<u8>) {
        write_openai_chunk(out, &self.id, self.opts.created, &self.model, delta, finish);
    }

    fn fail(&mut self, status: u16, kind: &str, message: &str, out: &mut Vec<u8>) {
        self.done = true;
        write_event(out, None, &to_bytes(&openai_error_value(status, kind, message)));
    }

    fn handle(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let e: an::StreamEvent = match serde_json::from_slice(data) {
            Ok(e) => e,
            Err(err) => {
                let msg = format!("malformed upstream stream event: {err}");
                self.fail(502, "api_error", &msg, out);
                return;
            }
        };
        match e.kind.as_str() {
            "message_start" => {
                if let Some(m) = &e.message {
                    if !m.id.is_empty() {
                        self.id = format!("chatcmpl-{}", m.id);
                    }
                    if let Some(u) = &m.usage {
                        self.usage.get_or_insert_with(Usage::default).merge_anthropic(u);
                    }
                }
                self.chunk(json!({"role": "assistant", "content": ""}), Value::Null, out);
            }
            "content_block_start" => {
                let index = e.index.unwrap_or(0);
                let cb = e.content_block.unwrap_or(Value::Null);
                let block = match cb.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = cb.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            self.chunk(json!({"content": t}), Value::Null, out);
                        }
                        Block::Text
                    }
                    Some("tool_use") => {
                        let name = cb.get("name").and_then(Value::as_str).unwrap_or("");
                        if self.opts.forced_json_tool.as_deref() == Some(name) {
                            Block::ForcedJson
                        } else {
                            let ordinal = self.tool_calls;
                            self.tool_calls += 1;
                            self.chunk(
                                json!({"tool_calls": [{
                                    "index": ordinal,
                                    "id": cb.get("id").cloned().unwrap_or(Value::Null),
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }]}),
                                Value::Null,
                                out,
                            );
                            Block::Tool(ordinal)
                        }
                    }
                    Some("thinking") => Block::Thinking,
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let index = e.index.unwrap_or(0);
                let d = e.delta.unwrap_or(Value::Null);
                let block = self.blocks.get(&index).copied().unwrap_or(Block::Other);
                match (d.get("type").and_then(Value::as_str), block) {
                    (Some("text_delta"), _) => {
                        if let Some(t) = d.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            self.chunk(json!({"content": t}), Value::Null, out);
                        }
                    }
                    (Some("input_json_delta"), Block::Tool(ordinal)) => {
                        if let Some(p) = d.get("partial_json").and_then(Value::as_str).filter(|p| !p.is_empty()) {
                            self.chunk(
                                json!({"tool_calls": [{"index": ordinal, "function": {"arguments": p}}]}),
                                Value::Null,
                                out,
                            );
                        }
                    }
                    (Some("input_json_delta"), Block::ForcedJson) => {
                        if let Some(p) = d.get("partial_json").and_then(Value::as_str).filter(|p| !p.is_empty()) {
                            self.chunk(json!({"content": p}), Value::Null, out);
                        }
                    }
                    (Some("thinking_delta"), _) => {
                        if let Some(t) = d.get("thinking").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            self.chunk(json!({"reasoning_content": t}), Value::Null, out);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = &e.usage {
                    self.usage.get_or_insert_with(Usage::default).merge_anthropic(u);
                }
                let stop = e.delta.as_ref().and_then(|d| d.get("stop_reason")).and_then(Value::as_str);
                if stop.is_some() {
                    let fr = finish_reason(stop, self.tool_calls > 0);
                    self.chunk(json!({}), fr, out);
                }
            }
            "message_stop" => {
                if self.opts.include_usage {
                    let c = obj(vec![
                        ("id", json!(self.id)),
                        ("object", json!("chat.completion.chunk")),
                        ("created", json!(self.opts.created)),
                        ("model", json!(self.model)),
                        ("choices", json!([])),
                        ("usage", self.usage.clone().unwrap_or_default().to_openai_json()),
                    ]);
                    write_event(out, None, &to_bytes(&c));
                }
                write_event(out, None, b"[DONE]");
                self.done = true;
            }
            "error" => {
                let (kind, message) = match &e.error {
                    Some(d) => (d.kind.clone(), d.message.clone()),
                    None => ("api_error".to_string(), "upstream error".to_string()),
                };
                let status = status_from_anthropic_error_type(&kind);
                self.fail(status, &kind, &message, out);
            }
            _ => {}
        }
    }
}

impl StreamTranslate for StreamTranslator {
    fn event(&mut self, event: &Event, out: &mut Vec<u8>) {
        if !self.done {
            self.handle(&event.data, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.end(out);
    }

    fn is_done(&self) -> bool {
        self.done
    }
}
