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
    to_bytes, write_openai_chunk, write_openai_usage_chunk, RequestOptions, ResponseOptions, TranslateError, Usage,
};
use crate::schema::{anthropic as an, openai as oa};
use crate::sse::write_event;
use crate::stream::{Event, StreamTranslate};

mod messages;
mod response;
mod stream;

pub(crate) use messages::*;
pub use response::*;
pub use stream::*;

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

/// The tool that stands in for `response_format` with a provider that has none (Anthropic, Converse):
/// the model is made to call it, and its input is the JSON answer.
pub(crate) struct JsonTool {
    pub name: String,
    pub description: String,
    /// The client's schema (its bytes kept through `slots`), or any object.
    pub schema: Value,
}

/// The [`JsonTool`] for the request's `response_format`: none for `text`, any object for `json_object`,
/// the client's named schema for `json_schema`.
pub(crate) fn json_response_tool(
    req: &oa::ChatRequest,
    raw: &RawOpenAiRequest,
    slots: &mut RawSlots,
) -> Result<Option<JsonTool>, TranslateError> {
    let Some(rf) = &req.response_format else {
        return Ok(None);
    };
    match rf.get("type").and_then(Value::as_str).unwrap_or("") {
        "text" | "" => Ok(None),
        "json_object" => Ok(Some(JsonTool {
            name: JSON_OBJECT_TOOL.to_string(),
            description: "Respond with a JSON object.".to_string(),
            schema: json!({"type": "object"}),
        })),
        "json_schema" => {
            let js = rf
                .get("json_schema")
                .ok_or_else(|| TranslateError::invalid("response_format.json_schema", "missing"))?;
            let name = js
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("response_format.json_schema.name", "missing"))?;
            let description = js
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("Respond with a JSON object that matches this schema.");
            let raw_schema =
                raw.response_format.as_ref().and_then(|r| r.json_schema.as_ref()).and_then(|j| j.schema.as_deref());
            let schema = match (raw_schema, js.get("schema")) {
                (Some(r), Some(p)) if p.is_object() => slots.slot(r.get(), p.clone()),
                _ => json!({"type": "object"}),
            };
            Ok(Some(JsonTool { name: name.to_string(), description: description.to_string(), schema }))
        }
        other => Err(TranslateError::invalid("response_format.type", format!("unknown value `{other}`"))),
    }
}

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
    if let Some(JsonTool { name, description, schema }) = json_response_tool(&req, &raw, &mut slots)? {
        tools.push(json!({"name": name, "description": description, "input_schema": schema}));
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
