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

/// The id part shared by a response and its items, from an upstream chat id.
fn base_id(chat_id: &str) -> String {
    let id = chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id);
    let clean: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect();
    if clean.is_empty() {
        "unknown".to_string()
    } else {
        clean
    }
}

/// How a response ended (or that it has not).
struct Ending<'a> {
    status: &'a str,
    /// `incomplete_details.reason`.
    incomplete: Option<&'a str>,
    error: Option<Value>,
}

impl<'a> Ending<'a> {
    fn of(status: &'a str, incomplete: Option<&'a str>) -> Ending<'a> {
        Ending { status, incomplete, error: None }
    }
}

/// The `response` object around `output`.
fn response_object(
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
fn status_of(finish: Option<&str>) -> (&'static str, Option<&'static str>) {
    match finish {
        Some("length") => ("incomplete", Some("max_output_tokens")),
        Some("content_filter") => ("incomplete", Some("content_filter")),
        _ => ("completed", None),
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn reasoning_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [], "content": [{"type": "reasoning_text", "text": text}],
           "status": status})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
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

/// Writes one event straight into `out` (the hot path: no tree is built): `event:` and its data, `type`
/// and `sequence_number` first, then what `fields` appends (`,"key":value…`).
fn emit_with(sequence: &mut u64, kind: &str, out: &mut Vec<u8>, fields: impl FnOnce(&mut Vec<u8>)) {
    use std::io::Write as _;
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: {\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    let _ = write!(out, "\",\"sequence_number\":{sequence}");
    fields(out);
    out.extend_from_slice(b"}\n\n");
    *sequence += 1;
}

/// A `….delta` event of an item (and content part).
fn emit_delta(
    sequence: &mut u64,
    kind: &str,
    item_id: &str,
    output_index: usize,
    content_index: Option<usize>,
    delta: &str,
    out: &mut Vec<u8>,
) {
    use std::io::Write as _;
    emit_with(sequence, kind, out, |o| {
        o.extend_from_slice(b",\"item_id\":");
        let _ = serde_json::to_writer(&mut *o, item_id);
        let _ = write!(o, ",\"output_index\":{output_index}");
        if let Some(c) = content_index {
            let _ = write!(o, ",\"content_index\":{c}");
        }
        o.extend_from_slice(b",\"delta\":");
        let _ = serde_json::to_writer(&mut *o, delta);
        if kind == "response.output_text.delta" {
            o.extend_from_slice(b",\"logprobs\":[]");
        }
    });
}

/// The part of a message being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
}

/// The output item being streamed.
#[derive(Debug)]
enum Open {
    Message { index: usize, id: String, parts: Vec<(PartKind, String)>, part_open: bool },
    Reasoning { index: usize, id: String, text: String },
}

/// A function call item (calls stay addressable by their chat index until the stream ends).
#[derive(Debug)]
struct Call {
    index: usize,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    done: bool,
}

/// Chat Completions chunks (SSE) → the Responses event stream. Reads `opts.created` and
/// `opts.responses`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    opts: ResponseOptions,
    sequence: u64,
    base: String,
    started: bool,
    /// Every output item, in order (`Value::Null` for the one being streamed).
    output: Vec<Value>,
    open: Option<Open>,
    calls: HashMap<u64, Call>,
    /// The call being streamed (its chat index).
    open_call: Option<u64>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

impl StreamTranslator {
    pub fn new(model: &str, opts: &ResponseOptions) -> Self {
        StreamTranslator {
            model: model.to_string(),
            opts: opts.clone(),
            sequence: 0,
            base: "unknown".to_string(),
            started: false,
            output: Vec::new(),
            open: None,
            calls: HashMap::new(),
            open_call: None,
            finish_reason: None,
            usage: None,
            done: false,
        }
    }

    /// Writes one event: `type` first and `sequence_number`, then `fields`.
    fn emit(&mut self, kind: &str, fields: Value, out: &mut Vec<u8>) {
        emit_with(&mut self.sequence, kind, out, |o| {
            let rest = to_bytes(&fields);
            if rest.len() > 2 {
                o.push(b',');
                o.extend_from_slice(&rest[1..rest.len() - 1]);
            }
        });
    }

    fn snapshot(&self, ending: Ending) -> Value {
        let output: Vec<Value> = self.output.iter().filter(|v| !v.is_null()).cloned().collect();
        response_object(&self.base, &self.model, &self.opts, ending, output, self.usage.as_ref())
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let mut r = self.snapshot(Ending::of("in_progress", None));
        r["usage"] = Value::Null;
        // One serialization for both events.
        let r = to_bytes(&r);
        for kind in ["response.created", "response.in_progress"] {
            emit_with(&mut self.sequence, kind, out, |o| {
                o.extend_from_slice(b",\"response\":");
                o.extend_from_slice(&r);
            });
        }
    }

    fn msg_id(&self) -> String {
        format!("msg_{}", self.base)
    }

    /// Closes the item being streamed (message or reasoning) and the call being streamed.
    fn close_open(&mut self, out: &mut Vec<u8>) {
        self.close_part(out);
        match self.open.take() {
            None => {}
            Some(Open::Message { index, id, parts, .. }) => {
                let content: Vec<Value> = parts
                    .iter()
                    .map(|(kind, text)| match kind {
                        PartKind::Text => text_part(text),
                        PartKind::Refusal => json!({"type": "refusal", "refusal": text}),
                    })
                    .collect();
                let item = json!({"type": "message", "id": id, "status": "completed", "role": "assistant",
                                  "content": content});
                self.output[index] = item.clone();
                self.emit("response.output_item.done", json!({"output_index": index, "item": item}), out);
            }
            Some(Open::Reasoning { index, id, text }) => {
                self.emit(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                    out,
                );
                self.emit(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": {"type": "reasoning_text", "text": text}}),
                    out,
                );
                let item = reasoning_item(&id, &text, "completed");
                self.output[index] = item.clone();
                self.emit("response.output_item.done", json!({"output_index": index, "item": item}), out);
            }
        }
        self.close_call(out);
    }

    /// Ends the message part being streamed.
    fn close_part(&mut self, out: &mut Vec<u8>) {
        let Some(Open::Message { index, id, parts, part_open }) = &mut self.open else { return };
        if !*part_open {
            return;
        }
        *part_open = false;
        let (index, id) = (*index, id.clone());
        let content_index = parts.len() - 1;
        let (kind, text) = parts[content_index].clone();
        let (done, part) = match kind {
            PartKind::Text => (
                json!({"item_id": id, "output_index": index, "content_index": content_index, "text": text,
                       "logprobs": []}),
                text_part(&text),
            ),
            PartKind::Refusal => (
                json!({"item_id": id, "output_index": index, "content_index": content_index, "refusal": text}),
                json!({"type": "refusal", "refusal": text}),
            ),
        };
        let name = if kind == PartKind::Text { "response.output_text.done" } else { "response.refusal.done" };
        self.emit(name, done, out);
        self.emit(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": content_index, "part": part}),
            out,
        );
    }

    fn close_call(&mut self, out: &mut Vec<u8>) {
        let Some(key) = self.open_call.take() else { return };
        let Some(call) = self.calls.get_mut(&key) else { return };
        call.done = true;
        let (index, id) = (call.index, call.id.clone());
        let item = call_item(&call.id, &call.call_id, &call.name, &call.arguments, "completed");
        let (name, arguments) = (call.name.clone(), call.arguments.clone());
        self.output[index] = item.clone();
        self.emit(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}),
            out,
        );
        self.emit("response.output_item.done", json!({"output_index": index, "item": item}), out);
    }

    fn reasoning(&mut self, delta: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close_open(out);
            let index = self.output.len();
            self.output.push(Value::Null);
            let id = format!("rs_{}_{index}", self.base);
            let item = json!({"type": "reasoning", "id": id, "summary": [], "content": [], "status": "in_progress"});
            self.emit("response.output_item.added", json!({"output_index": index, "item": item}), out);
            self.emit(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": {"type": "reasoning_text", "text": ""}}),
                out,
            );
            self.open = Some(Open::Reasoning { index, id, text: String::new() });
        }
        let Some(Open::Reasoning { index, id, text }) = &mut self.open else { return };
        text.push_str(delta);
        emit_delta(&mut self.sequence, "response.reasoning_text.delta", id, *index, Some(0), delta, out);
    }

    fn message_delta(&mut self, kind: PartKind, delta: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close_open(out);
            let index = self.output.len();
            self.output.push(Value::Null);
            let id = if index == 0 { self.msg_id() } else { format!("{}_{index}", self.msg_id()) };
            let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant",
                              "content": []});
            self.emit("response.output_item.added", json!({"output_index": index, "item": item}), out);
            self.open = Some(Open::Message { index, id, parts: Vec::new(), part_open: false });
        }
        let same_part = matches!(&self.open, Some(Open::Message { parts, part_open: true, .. })
            if parts.last().is_some_and(|(k, _)| *k == kind));
        if !same_part {
            self.close_part(out);
            let Some(Open::Message { index, id, parts, part_open }) = &mut self.open else { return };
            parts.push((kind, String::new()));
            *part_open = true;
            let part = match kind {
                PartKind::Text => text_part(""),
                PartKind::Refusal => json!({"type": "refusal", "refusal": ""}),
            };
            let fields = json!({"item_id": id, "output_index": index, "content_index": parts.len() - 1, "part": part});
            self.emit("response.content_part.added", fields, out);
        }
        let Some(Open::Message { index, id, parts, .. }) = &mut self.open else { return };
        let content_index = parts.len() - 1;
        parts[content_index].1.push_str(delta);
        let name = if kind == PartKind::Text { "response.output_text.delta" } else { "response.refusal.delta" };
        emit_delta(&mut self.sequence, name, id, *index, Some(content_index), delta, out);
    }

    fn tool_call(&mut self, tc: &oa::ChunkToolCall, out: &mut Vec<u8>) {
        if !self.calls.contains_key(&tc.index) {
            self.close_open(out);
            let index = self.output.len();
            self.output.push(Value::Null);
            let call_id = tc.id.clone().unwrap_or_else(|| format!("call_{}_{}", self.base, tc.index));
            let name = tc.function.as_ref().and_then(|f| f.name.clone()).unwrap_or_default();
            let id = format!("fc_{call_id}");
            let item = call_item(&id, &call_id, &name, "", "in_progress");
            self.emit("response.output_item.added", json!({"output_index": index, "item": item}), out);
            self.calls.insert(tc.index, Call { index, id, call_id, name, arguments: String::new(), done: false });
            self.open_call = Some(tc.index);
        }
        let args = tc.function.as_ref().and_then(|f| f.arguments.as_deref()).unwrap_or("");
        if args.is_empty() {
            return;
        }
        let Some(call) = self.calls.get_mut(&tc.index) else { return };
        call.arguments.push_str(args);
        let (index, id) = (call.index, call.id.clone());
        if call.done {
            // A fragment for a call already closed (OpenAI never interleaves calls): it still joins
            // its own call in the final response.
            self.output[index]["arguments"] = json!(call.arguments);
        }
        emit_delta(&mut self.sequence, "response.function_call_arguments.delta", &id, index, None, args, out);
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close_open(out);
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        let r = self.snapshot(Ending::of(status, incomplete));
        let name = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.emit(name, json!({"response": r}), out);
        self.done = true;
    }

    /// Ends the stream with an `error` event (the upstream's code) and `response.failed` (whose
    /// `error.code` is one of OpenAI's: `rate_limit_exceeded` or `server_error`).
    fn fail_with(&mut self, status: Option<u16>, code: &str, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        self.emit("error", json!({"code": code, "message": message, "param": null}), out);
        let limited = status == Some(429) || code.contains("rate_limit") || code.starts_with("Throttling");
        let kind = if limited { "rate_limit_exceeded" } else { "server_error" };
        let error = Some(json!({"code": kind, "message": message}));
        let r = self.snapshot(Ending { status: "failed", incomplete: None, error });
        self.emit("response.failed", json!({"response": r}), out);
        self.done = true;
    }

    fn handle(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.trim_ascii() == b"[DONE]" {
            if self.finish_reason.is_some() {
                self.complete(out);
            } else {
                self.fail_with(None, "stream_incomplete", "upstream stream ended before finish_reason", out);
            }
            return;
        }
        let chunk: oa::ChatChunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                self.fail_with(None, "server_error", &format!("malformed upstream stream chunk: {e}"), out);
                return;
            }
        };
        if let Some(err) = &chunk.error {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_string();
            let code = err
                .get("code")
                .and_then(Value::as_str)
                .or_else(|| err.get("type").and_then(Value::as_str))
                .unwrap_or("server_error")
                .to_string();
            self.fail_with(None, &code, &message, out);
            return;
        }
        if !self.started && !chunk.id.is_empty() {
            self.base = base_id(&chunk.id);
        }
        self.start(out);
        if let Some(u) = chunk.usage.as_ref().filter(|u| u.is_object()).and_then(usage_from_openai) {
            self.usage = Some(u);
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let d = &choice.delta;
            if let Some(r) = d.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
                self.reasoning(r, out);
            }
            if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                self.message_delta(PartKind::Text, t, out);
            }
            if let Some(r) = d.refusal.as_deref().filter(|r| !r.is_empty()) {
                self.message_delta(PartKind::Refusal, r, out);
            }
            for tc in d.tool_calls.iter().flatten() {
                self.tool_call(tc, out);
            }
            if let Some(fr) = &choice.finish_reason {
                self.finish_reason = Some(fr.clone());
                self.close_open(out);
            }
        }
        if self.finish_reason.is_some() && self.usage.is_some() {
            self.complete(out);
        }
    }
}

impl StreamTranslate for StreamTranslator {
    fn event(&mut self, event: &Event, out: &mut Vec<u8>) {
        if !self.done && !event.data.is_empty() {
            self.handle(&event.data, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.finish_reason.is_some() {
            self.complete(out);
        } else {
            self.fail_with(None, "stream_incomplete", "upstream stream ended before finish_reason", out);
        }
    }

    fn fail(&mut self, status: u16, message: &str, code: &str, out: &mut Vec<u8>) -> bool {
        self.fail_with(Some(status), code, message, out);
        true
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(v: Value) -> Result<RequestTranslation, TranslateError> {
        request(&serde_json::to_vec(&v).unwrap(), &RequestOptions::default())
    }

    #[test]
    fn function_calls_join_the_assistant_turn_and_outputs_become_tool_messages() {
        let t = translate(json!({"model": "m", "instructions": "Be brief.", "input": [
            {"role": "user", "content": "Weather?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{\"a\":1}"},
            {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "reasoning", "id": "rs_1", "summary": []}
        ]}))
        .unwrap();
        let body: Value = serde_json::from_slice(&t.body).unwrap();
        let m = &body["messages"];
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(m[2]["content"], "Checking.");
        assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"}));
        assert!(t.dropped.iter().any(|d| d.contains("reasoning")), "{:?}", t.dropped);
    }

    #[test]
    fn built_in_tools_and_stored_state_are_rejected_naming_them() {
        let e = translate(json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]})).unwrap_err();
        assert!(e.to_string().contains("web_search") && e.field() == Some("tools[0].type"), "{e}");
        let e = translate(json!({"model": "m", "input": "x", "previous_response_id": "resp_1"})).unwrap_err();
        assert_eq!(e.field(), Some("previous_response_id"));
        let e = translate(json!({"model": "m", "input": "x", "store": true})).unwrap_err();
        assert_eq!(e.field(), Some("store"));
        assert!(translate(json!({"model": "m", "input": "x", "store": false})).is_ok());
    }

    #[test]
    fn json_schemas_and_tool_parameters_keep_the_clients_key_order() {
        let body = br#"{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"T",
            "schema":{"type":"object","properties":{"zeta":{"type":"string"},"alpha":{"type":"string"}}}}},
            "tools":[{"type":"function","name":"f","parameters":{"properties":{"z":{},"a":{}},"type":"object"}}]}"#;
        let t = request(body, &RequestOptions::default()).unwrap();
        let text = String::from_utf8(t.body).unwrap();
        assert!(text.find("\"zeta\"").unwrap() < text.find("\"alpha\"").unwrap(), "{text}");
        assert!(text.contains(r#"{"properties":{"z":{},"a":{}},"type":"object"}"#), "{text}");
    }

    fn events(out: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(out)
            .split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn sequence_numbers_increase_from_zero_and_a_cut_stream_fails() {
        let mut t = StreamTranslator::new("m", &ResponseOptions::default());
        let mut out = Vec::new();
        let chunk = br#"{"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
        t.event(&Event { name: None, data: std::borrow::Cow::Borrowed(chunk), raw: b"" }, &mut out);
        t.finish(&mut out);
        let ev = events(&out);
        for (i, e) in ev.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64, "{e}");
        }
        let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds.first(), Some(&"response.created"));
        assert_eq!(&kinds[kinds.len() - 2..], ["error", "response.failed"]);
        assert!(t.is_done());
    }
}
