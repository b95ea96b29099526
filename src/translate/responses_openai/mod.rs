//! OpenAI Responses client → OpenAI Chat Completions upstream. Composed with the OpenAI client's pair
//! for another family (see `Pair::ResponsesVia`), it also serves Responses clients on Anthropic,
//! Bedrock Converse and every family an OpenAI client can reach.
//!
//! # Request
//!
//! | Responses | Chat Completions |
//! |---|---|
//! | `instructions` | a first `system` message |
//! | `input` string | one `user` message |
//! | `message` items (`user`, `system`, `developer`, `assistant`), `input_text` / `output_text` parts | messages (`developer` → `system`); a single text part becomes a string |
//! | `input_image` (`image_url`, `detail`) | `image_url` parts |
//! | `input_file` with `file_data` | `file` parts |
//! | `function_call` items | `tool_calls` of the assistant message before them (consecutive calls share one) |
//! | `function_call_output` items | `tool` messages |
//! | `tools` of type `function` | `tools` (`function` with `name`, `description`, `parameters`, `strict`) |
//! | `tool_choice` `auto` / `none` / `required` / `{"type":"function","name"}` | the same, in Chat's shape |
//! | `text.format` `json_schema` / `json_object` | `response_format` |
//! | `reasoning.effort` | `reasoning_effort` |
//! | `max_output_tokens`, `temperature`, `top_p`, `user`, `parallel_tool_calls` | `max_tokens`, `temperature`, `top_p`, `user`, `parallel_tool_calls` (with tools) |
//! | `stream` | `stream` and `stream_options.include_usage` |
//!
//! Rejected ([`TranslateError`], a 400 naming the field): built-in tools (`web_search`, `file_search`,
//! `computer_use_preview`, `code_interpreter`, `image_generation`, `mcp`, `local_shell`, `custom`…,
//! named in the message), `tool_choice` of those types or `allowed_tools`, `previous_response_id`,
//! `conversation`, `prompt` (templates), `store: true` and `background: true` (the gateway keeps no
//! responses: a translated response cannot be retrieved or continued later), `item_reference` items,
//! images and files given by `file_id` (or a file by URL), audio input, and parts of unknown types.
//!
//! Dropped on purpose (reported in [`RequestTranslation::dropped`], logged at debug level):
//! `reasoning` items in the input (Chat Completions cannot take them back), `include`, `truncation`,
//! `metadata` (echoed in the response), `service_tier`, `prompt_cache_key`, `safety_identifier`,
//! `text.verbosity`, `reasoning.summary`, `top_logprobs`, `max_tool_calls`, `stream_options`, and
//! unknown fields. `store` absent or `false` means what the gateway does anyway: nothing is stored.
//!
//! # Response
//!
//! A `chat.completion` becomes a `response` object: `reasoning_content` → a `reasoning` item (its text
//! in `content[].reasoning_text`), text and refusal → one `message` item (`output_text` and `refusal`
//! parts), each tool call → a `function_call` item. `finish_reason` `length` → `status: "incomplete"`
//! with `incomplete_details.reason: "max_output_tokens"`, `content_filter` → `incomplete` /
//! `content_filter`, anything else → `completed`. Usage becomes `input_tokens` (cached included),
//! `input_tokens_details.cached_tokens`, `output_tokens`, `output_tokens_details.reasoning_tokens`.
//! The request's `instructions`, `tools`, `tool_choice`, `text`, `reasoning`, `temperature`, `top_p`,
//! `max_output_tokens`, `parallel_tool_calls`, `metadata` and `user` are echoed as OpenAI does.
//! Ids derive from the upstream's: `resp_…`, `msg_…`, `rs_…`, `fc_<call id>`.
//!
//! # Streams
//!
//! Chunks become the event sequence OpenAI sends (each with `event:` and a `sequence_number` from 0):
//! `response.created`, `response.in_progress`; per item `response.output_item.added`, for messages
//! `response.content_part.added`, `response.output_text.delta`… / `response.refusal.delta`…,
//! `response.output_text.done`, `response.content_part.done`; for function calls
//! `response.function_call_arguments.delta`… and `.done`; for reasoning `response.reasoning_text.delta`
//! and `.done`; `response.output_item.done`; then `response.completed` (or `response.incomplete`) with
//! the whole response and its usage, once both `finish_reason` and usage (or `[DONE]`) arrived. An
//! upstream error, or a stream that ends before `finish_reason`, gives an `error` event followed by
//! `response.failed` — never a `response.completed`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::raw::RawSlots;
use super::{
    fallback_message, openai_error_code, openai_error_type, parse_json, to_bytes, usage_from_openai, RequestOptions,
    ResponseOptions, TranslateError, Usage,
};
use crate::schema::openai as oa;
use crate::stream::{Event, StreamTranslate};

mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use response::*;
pub use stream::*;

/// Top-level request fields dropped on purpose (see the module documentation).
pub const DROPPED_FIELDS: &[&str] = &[
    "include",
    "truncation",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "safety_identifier",
    "top_logprobs",
    "max_tool_calls",
    "stream_options",
];

/// What the response object repeats from the request (`instructions`, `tools`, `text`…).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo(pub Map<String, Value>);

/// A translated request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTranslation {
    /// The Chat Completions body.
    pub body: Vec<u8>,
    pub stream: bool,
    /// Client fields dropped (known and unknown).
    pub dropped: Vec<String>,
    /// For the response and stream translators.
    pub echo: Echo,
}

impl RequestTranslation {
    pub fn response_options(&self, created: u64) -> ResponseOptions {
        ResponseOptions { created, responses: Some(self.echo.clone()), ..ResponseOptions::default() }
    }
}

/// The raw text of fragments whose key order matters (JSON schemas).
#[derive(Deserialize, Default)]
struct RawRequest {
    #[serde(default)]
    tools: Option<Vec<RawTool>>,
    #[serde(default)]
    text: Option<RawText>,
}

#[derive(Deserialize, Default)]
struct RawTool {
    #[serde(default)]
    parameters: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
struct RawText {
    #[serde(default)]
    format: Option<RawFormat>,
}

#[derive(Deserialize, Default)]
struct RawFormat {
    #[serde(default)]
    schema: Option<Box<RawValue>>,
}

/// Translates a Responses request body into a Chat Completions body.
pub fn request(body: &[u8], opts: &RequestOptions) -> Result<RequestTranslation, TranslateError> {
    let req: Map<String, Value> = parse_json(body)?;
    let raw: RawRequest = serde_json::from_slice(body).unwrap_or_default();
    let mut slots = RawSlots::new();
    let present = |k: &str| req.get(k).filter(|v| !v.is_null());
    for field in ["previous_response_id", "conversation", "prompt"] {
        if present(field).is_some() {
            return Err(TranslateError::invalid(
                field,
                "this backend keeps no responses or prompts: send the whole conversation in `input`",
            ));
        }
    }
    for field in ["store", "background"] {
        if present(field).and_then(Value::as_bool) == Some(true) {
            return Err(TranslateError::invalid(
                field,
                "responses of this backend are not stored: omit it or set it to false",
            ));
        }
    }
    let model = match (&opts.model, req.get("model").and_then(Value::as_str)) {
        (Some(m), _) => m.clone(),
        (None, Some(m)) => m.to_string(),
        (None, None) => return Err(TranslateError::invalid("model", "missing")),
    };
    let mut dropped: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    match present("instructions") {
        None => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(_) => return Err(TranslateError::invalid("instructions", "must be a string")),
    }
    match present("input") {
        None => return Err(TranslateError::invalid("input", "missing")),
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut messages, &mut dropped)?;
            }
        }
        Some(_) => return Err(TranslateError::invalid("input", "must be a string or an array of items")),
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model));
    out.insert("messages".into(), Value::Array(messages));

    let mut tools = Vec::new();
    match present("tools") {
        None => {}
        Some(Value::Array(list)) => {
            for (i, t) in list.iter().enumerate() {
                let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
                if kind != "function" {
                    return Err(TranslateError::invalid(
                        format!("tools[{i}].type"),
                        format!(
                            "the built-in tool `{kind}` is not available on this backend (only `function` tools are translated)"
                        ),
                    ));
                }
                let name = t
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::invalid(format!("tools[{i}].name"), "missing"))?;
                let mut f = Map::new();
                f.insert("name".into(), json!(name));
                if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
                    f.insert("description".into(), d.clone());
                }
                let raw_params = raw.tools.as_ref().and_then(|ts| ts.get(i)).and_then(|t| t.parameters.as_deref());
                match (raw_params, t.get("parameters")) {
                    (Some(r), Some(p)) if p.is_object() => {
                        f.insert("parameters".into(), slots.slot(r.get(), p.clone()));
                    }
                    (_, Some(p)) if !p.is_null() => {
                        f.insert("parameters".into(), p.clone());
                    }
                    _ => {}
                }
                if let Some(s) = t.get("strict").filter(|s| s.is_boolean()) {
                    f.insert("strict".into(), s.clone());
                }
                tools.push(json!({"type": "function", "function": Value::Object(f)}));
            }
        }
        Some(_) => return Err(TranslateError::invalid("tools", "must be an array")),
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
        if let Some(p) = present("parallel_tool_calls").filter(|p| p.is_boolean()) {
            out.insert("parallel_tool_calls".into(), p.clone());
        }
    }
    if let Some(choice) = present("tool_choice") {
        let translated = match choice {
            Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => json!(s),
            Value::String(s) => return Err(TranslateError::invalid("tool_choice", format!("unknown value `{s}`"))),
            Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                Some("function") => {
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| TranslateError::invalid("tool_choice.name", "missing"))?;
                    json!({"type": "function", "function": {"name": name}})
                }
                Some(other) => {
                    return Err(TranslateError::invalid(
                        "tool_choice.type",
                        format!("`{other}` is not available on this backend (only `function` tools are translated)"),
                    ))
                }
                None => return Err(TranslateError::invalid("tool_choice.type", "missing")),
            },
            _ => return Err(TranslateError::invalid("tool_choice", "must be a string or an object")),
        };
        // Chat Completions takes `tool_choice` only with tools.
        if out.contains_key("tools") {
            out.insert("tool_choice".into(), translated);
        }
    }

    if let Some(text) = present("text") {
        let Some(text) = text.as_object() else { return Err(TranslateError::invalid("text", "must be an object")) };
        for key in text.keys() {
            if key != "format" {
                dropped.push(format!("text.{key}"));
            }
        }
        if let Some(format) = text.get("format").filter(|f| !f.is_null()) {
            match format.get("type").and_then(Value::as_str) {
                Some("text") => {}
                Some("json_object") => {
                    out.insert("response_format".into(), json!({"type": "json_object"}));
                }
                Some("json_schema") => {
                    let name = format
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| TranslateError::invalid("text.format.name", "missing"))?;
                    let mut schema = Map::new();
                    schema.insert("name".into(), json!(name));
                    if let Some(d) = format.get("description").filter(|d| !d.is_null()) {
                        schema.insert("description".into(), d.clone());
                    }
                    let raw_schema =
                        raw.text.as_ref().and_then(|t| t.format.as_ref()).and_then(|f| f.schema.as_deref());
                    match (raw_schema, format.get("schema")) {
                        (Some(r), Some(p)) if p.is_object() => {
                            schema.insert("schema".into(), slots.slot(r.get(), p.clone()));
                        }
                        (_, Some(p)) if p.is_object() => {
                            schema.insert("schema".into(), p.clone());
                        }
                        _ => return Err(TranslateError::invalid("text.format.schema", "must be a JSON schema object")),
                    }
                    if let Some(s) = format.get("strict").filter(|s| s.is_boolean()) {
                        schema.insert("strict".into(), s.clone());
                    }
                    out.insert("response_format".into(), json!({"type": "json_schema", "json_schema": schema}));
                }
                Some(other) => {
                    return Err(TranslateError::invalid("text.format.type", format!("unknown value `{other}`")))
                }
                None => return Err(TranslateError::invalid("text.format.type", "missing")),
            }
        }
    }
    if let Some(reasoning) = present("reasoning") {
        let Some(reasoning) = reasoning.as_object() else {
            return Err(TranslateError::invalid("reasoning", "must be an object"));
        };
        match reasoning.get("effort") {
            None | Some(Value::Null) => {}
            Some(Value::String(e)) => {
                out.insert("reasoning_effort".into(), json!(e));
            }
            Some(_) => return Err(TranslateError::invalid("reasoning.effort", "must be a string")),
        }
        for key in reasoning.keys().filter(|k| *k != "effort") {
            dropped.push(format!("reasoning.{key}"));
        }
    }
    match present("max_output_tokens") {
        None => {}
        Some(n) if n.as_u64().is_some() => {
            out.insert("max_tokens".into(), n.clone());
        }
        Some(_) => return Err(TranslateError::invalid("max_output_tokens", "must be a positive integer")),
    }
    for field in ["temperature", "top_p"] {
        match present(field) {
            None => {}
            Some(n) if n.is_number() => {
                out.insert(field.into(), n.clone());
            }
            Some(_) => return Err(TranslateError::invalid(field, "must be a number")),
        }
    }
    if let Some(u) = present("user").and_then(Value::as_str) {
        out.insert("user".into(), json!(u));
    }
    let stream = present("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }

    const USED: &[&str] = &[
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "reasoning",
        "max_output_tokens",
        "temperature",
        "top_p",
        "user",
        "stream",
        "store",
        "background",
        "previous_response_id",
        "conversation",
        "prompt",
    ];
    for key in req.keys() {
        if !USED.contains(&key.as_str()) && !req[key].is_null() {
            dropped.push(key.clone());
        }
    }
    let echo = echo(&req);
    Ok(RequestTranslation { body: slots.render(Value::Object(out)), stream, dropped, echo })
}

/// The request fields the response object repeats, with OpenAI's defaults.
fn echo(req: &Map<String, Value>) -> Echo {
    let get = |k: &str| req.get(k).filter(|v| !v.is_null()).cloned();
    let mut e = Map::new();
    e.insert("instructions".into(), get("instructions").unwrap_or(Value::Null));
    e.insert("max_output_tokens".into(), get("max_output_tokens").unwrap_or(Value::Null));
    e.insert("metadata".into(), get("metadata").unwrap_or_else(|| json!({})));
    e.insert("parallel_tool_calls".into(), get("parallel_tool_calls").unwrap_or(Value::Bool(true)));
    e.insert("previous_response_id".into(), Value::Null);
    let effort = req.get("reasoning").and_then(|r| r.get("effort")).cloned().unwrap_or(Value::Null);
    e.insert("reasoning".into(), json!({"effort": effort, "summary": null}));
    e.insert("store".into(), Value::Bool(false));
    e.insert("background".into(), Value::Bool(false));
    e.insert("temperature".into(), get("temperature").unwrap_or(json!(1.0)));
    let format = req.get("text").and_then(|t| t.get("format")).filter(|f| !f.is_null()).cloned();
    e.insert("text".into(), json!({"format": format.unwrap_or_else(|| json!({"type": "text"}))}));
    e.insert("tool_choice".into(), get("tool_choice").unwrap_or_else(|| json!("auto")));
    e.insert("tools".into(), get("tools").unwrap_or_else(|| json!([])));
    e.insert("top_p".into(), get("top_p").unwrap_or(json!(1.0)));
    e.insert("truncation".into(), get("truncation").unwrap_or_else(|| json!("disabled")));
    e.insert("user".into(), get("user").unwrap_or(Value::Null));
    Echo(e)
}

/// One `input` item, appended to the chat messages.
fn input_item(
    item: &Value,
    i: usize,
    messages: &mut Vec<Value>,
    dropped: &mut Vec<String>,
) -> Result<(), TranslateError> {
    let field = format!("input[{i}]");
    let Some(o) = item.as_object() else {
        return Err(TranslateError::invalid(field, "must be an object"));
    };
    let kind = o.get("type").and_then(Value::as_str).unwrap_or(if o.contains_key("role") { "message" } else { "" });
    match kind {
        "message" => message_item(o, &field, messages),
        "function_call" => {
            let call_id = o
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid(format!("{field}.call_id"), "missing"))?;
            let name = o
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid(format!("{field}.name"), "missing"))?;
            let arguments = match o.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                None | Some(Value::Null) => "{}".to_string(),
                Some(other) => other.to_string(),
            };
            let call = json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}});
            // Calls continue the assistant turn before them (OpenAI lists a message, then its calls).
            match messages.last_mut() {
                Some(Value::Object(last)) if last.get("role").and_then(Value::as_str) == Some("assistant") => {
                    match last.get_mut("tool_calls") {
                        Some(Value::Array(calls)) => calls.push(call),
                        _ => {
                            last.insert("tool_calls".into(), json!([call]));
                        }
                    }
                }
                _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
            Ok(())
        }
        "function_call_output" => {
            let call_id = o
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid(format!("{field}.call_id"), "missing"))?;
            let content = match o.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match p.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text") => text.push_str(p["text"].as_str().unwrap_or("")),
                            _ => return Err(TranslateError::unsupported(format!("{field}.output[{j}].type"))),
                        }
                    }
                    text
                }
                None | Some(Value::Null) => String::new(),
                Some(_) => {
                    return Err(TranslateError::invalid(format!("{field}.output"), "must be a string or an array"))
                }
            };
            messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
            Ok(())
        }
        "reasoning" => {
            dropped.push(format!("{field} (reasoning)"));
            Ok(())
        }
        "item_reference" => Err(TranslateError::invalid(
            format!("{field}.type"),
            "`item_reference` needs stored responses, which this backend does not keep",
        )),
        "" => Err(TranslateError::invalid(format!("{field}.type"), "missing")),
        other => Err(TranslateError::invalid(
            format!("{field}.type"),
            format!("`{other}` items are not available on this backend"),
        )),
    }
}

fn message_item(o: &Map<String, Value>, field: &str, messages: &mut Vec<Value>) -> Result<(), TranslateError> {
    let role = o.get("role").and_then(Value::as_str).unwrap_or("");
    let role = match role {
        "user" | "assistant" | "system" => role,
        "developer" => "system",
        "" => return Err(TranslateError::invalid(format!("{field}.role"), "missing")),
        other => return Err(TranslateError::invalid(format!("{field}.role"), format!("unknown role `{other}`"))),
    };
    let parts = match o.get("content") {
        Some(Value::String(s)) => {
            messages.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(parts)) => parts,
        _ => return Err(TranslateError::invalid(format!("{field}.content"), "must be a string or an array")),
    };
    if role == "assistant" {
        let mut text = String::new();
        let mut refusal = String::new();
        for (j, p) in parts.iter().enumerate() {
            match p.get("type").and_then(Value::as_str) {
                Some("output_text" | "input_text") => text.push_str(p["text"].as_str().unwrap_or("")),
                Some("refusal") => refusal.push_str(p["refusal"].as_str().unwrap_or("")),
                _ => return Err(TranslateError::unsupported(format!("{field}.content[{j}].type"))),
            }
        }
        let mut m = Map::new();
        m.insert("role".into(), json!("assistant"));
        m.insert("content".into(), if text.is_empty() { Value::Null } else { Value::String(text) });
        if !refusal.is_empty() {
            m.insert("refusal".into(), Value::String(refusal));
        }
        messages.push(Value::Object(m));
        return Ok(());
    }
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let part_field = format!("{field}.content[{j}]");
        match p.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text") => {
                out.push(json!({"type": "text", "text": p["text"].as_str().unwrap_or("")}));
            }
            Some("input_image") if role == "user" => {
                let Some(url) = p.get("image_url").and_then(Value::as_str) else {
                    return Err(TranslateError::unsupported(format!("{part_field}.file_id")));
                };
                let mut image = Map::new();
                image.insert("url".into(), json!(url));
                if let Some(d) = p.get("detail").and_then(Value::as_str).filter(|d| *d != "auto") {
                    image.insert("detail".into(), json!(d));
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            Some("input_file") if role == "user" => {
                let Some(data) = p.get("file_data").and_then(Value::as_str) else {
                    let which = if p.get("file_url").is_some() { "file_url" } else { "file_id" };
                    return Err(TranslateError::unsupported(format!("{part_field}.{which}")));
                };
                let filename = p.get("filename").and_then(Value::as_str).unwrap_or("file.pdf");
                out.push(json!({"type": "file", "file": {"file_data": data, "filename": filename}}));
            }
            _ => return Err(TranslateError::unsupported(format!("{part_field}.type"))),
        }
    }
    if role == "system" {
        // System content is text only everywhere.
        let text: Vec<&str> = out.iter().filter_map(|p| p["text"].as_str()).collect();
        if text.len() != out.len() {
            return Err(TranslateError::unsupported(format!("{field}.content")));
        }
        messages.push(json!({"role": "system", "content": text.join("\n\n")}));
        return Ok(());
    }
    let content = match out.as_slice() {
        [p] if p["type"] == "text" => p["text"].clone(),
        _ => Value::Array(out),
    };
    messages.push(json!({"role": role, "content": content}));
    Ok(())
}
