//! OpenAI Chat Completions and Embeddings client → Google Gemini upstream (`generateContent`,
//! `streamGenerateContent?alt=sse`, `batchEmbedContents`; Vertex AI's `predict` for embeddings).
//!
//! The model goes in the URL, which the provider builds: the chat body carries neither `model` nor
//! `stream`.
//!
//! # What is translated, dropped or rejected
//!
//! Rejected with [`TranslateError::Unsupported`], as for the other upstreams: `n` > 1,
//! `logprobs: true`, `functions` / `function_call` and `role: "function"` messages, `audio`,
//! `modalities` containing `"audio"`, `web_search_options`, tools whose `type` is not `"function"`,
//! content parts other than `text`, `image_url`, `input_audio` and `file` data, and file ids.
//! Rejected as invalid: a media URL whose name does not tell its type (Gemini's `fileData` needs
//! one), a `tool` message whose `tool_call_id` matches no earlier assistant tool call (Gemini answers
//! a call by the function's name), and schemas Gemini cannot express (see
//! [`super::gemini::gemini_schema`]: recursive or remote `$ref`s).
//!
//! Dropped and listed in [`RequestTranslation::dropped`]: `logit_bias`, `top_logprobs`, `store`,
//! `metadata`, `service_tier`, `prediction`, `prompt_cache_key`, `safety_identifier`, `verbosity`,
//! `modalities`, unknown fields, `stream_options` (consumed: see
//! [`RequestTranslation::include_usage`]), `user`, `parallel_tool_calls` (Gemini may always call
//! several functions), and `tool_choice` when no tools are sent.
//!
//! Translated:
//! * system/developer messages (anywhere) → `systemInstruction.parts`; user and assistant
//!   messages → `contents` with roles `user` / `model` (consecutive same roles merged); text →
//!   `text` parts; `image_url` data URLs and `file` data → `inlineData`; other image URLs
//!   (`gs://`, Files API, http(s)) → `fileData` with the media type their name tells;
//!   `input_audio` → `inlineData` `audio/wav` / `audio/mp3`.
//! * assistant `tool_calls` → `functionCall` parts (`args` the parsed arguments, `thoughtSignature`
//!   restored from the id, see [`super::gemini::SIGNATURE_MARK`], or from Google's own
//!   `extra_content.google.thought_signature`); `tool` messages → `functionResponse` parts
//!   `{"name", "response": {"output": <text>}}` in a user turn, the name found through the
//!   `tool_call_id`. Ids are not sent (some Gemini endpoints reject them). The first call of a
//!   model turn without any signature gets Gemini's placeholder signature. Assistant
//!   `reasoning_content` is dropped.
//! * `max_completion_tokens` / `max_tokens` → `generationConfig.maxOutputTokens` (which, as in
//!   OpenAI, includes thinking); `temperature`; `top_p` → `topP`; `stop` → `stopSequences`; `seed`;
//!   non-zero `presence_penalty` / `frequency_penalty` → `presencePenalty` / `frequencyPenalty`.
//! * `response_format` `json_object` → `responseMimeType: application/json`; `json_schema` → the
//!   same plus `responseSchema`, the schema converted to Gemini's subset with `propertyOrdering`
//!   in the client's order.
//! * `tools` → one `tools[].functionDeclarations` list (parameters converted; omitted for a
//!   function without properties); `tool_choice` auto / none / required / named →
//!   `toolConfig.functionCallingConfig.mode` `AUTO` / `NONE` / `ANY` / `ANY` with
//!   `allowedFunctionNames`.
//! * `reasoning_effort` → `generationConfig.thinkingConfig`: `thinkingBudget` 0 (`none`), 512
//!   (`minimal`), 1024 (`low`), 8192 (`medium`), 24576 (`high`), with `includeThoughts` whenever the
//!   budget is not 0.
//!
//! Responses: text parts → `content`, thought parts → `reasoning_content`, `functionCall` parts →
//! `tool_calls` (arguments in the model's key order; id as above); `finishReason` `STOP` → `stop`
//! (`tool_calls` when the model called tools), `MAX_TOKENS` → `length`, `SAFETY`, `RECITATION`,
//! `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`… → `content_filter`; `usageMetadata` → `usage` (see
//! [`super::usage_from_gemini`]). The id is `chatcmpl-` and Gemini's `responseId` (or a hash of the
//! body). A prompt Gemini blocked (`promptFeedback.blockReason`, no candidate) is
//! [`TranslateError::Refused`]: the client gets a 400 with code `content_filter`.
//!
//! Embeddings: see [`embeddings_request`], [`embeddings_response`] and [`vertex_predict_body`].

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::gemini::{self, Finish, GenerateContentResponse, Ordered};
use super::openai_anthropic::{parse_data_url, reject_unsupported, tool_call_arguments};
use super::raw::RawOpenAiRequest;
use super::{
    fallback_message, obj, openai_error_code, openai_error_type, openai_error_value, parse_json, to_bytes,
    usage_from_gemini, write_openai_chunk, write_openai_usage_chunk, RequestOptions, ResponseOptions, TranslateError,
    Usage,
};
use crate::schema::openai as oa;
use crate::sse::write_event;
use crate::stream::{Event, StreamFailure, StreamTranslate};

mod embeddings;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use embeddings::*;
pub use response::*;
pub use stream::*;

/// Client fields read into the Gemini request although [`oa::ChatRequest`] does not type them.
const MAPPED_FIELDS: &[&str] = &["seed", "presence_penalty", "frequency_penalty"];

/// Everything the gateway needs from request translation.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTranslation {
    /// The `generateContent` request body (no `model`, no `stream`).
    pub body: Vec<u8>,
    /// Client fields that were dropped (known and unknown).
    pub dropped: Vec<String>,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
}

impl RequestTranslation {
    /// Response options matching this request.
    pub fn response_options(&self, created: u64) -> ResponseOptions {
        ResponseOptions { created, include_usage: self.include_usage, ..ResponseOptions::default() }
    }
}

/// Translate an OpenAI chat request body into a Gemini `generateContent` body. `opts` is not read
/// (the model goes in the URL; Gemini needs no `max_tokens`).
pub fn request(body: &[u8], _opts: &RequestOptions) -> Result<RequestTranslation, TranslateError> {
    let req: oa::ChatRequest = parse_json(body)?;
    // Schemas are read in the client's key order (response properties follow it).
    let raw: RawOpenAiRequest = serde_json::from_slice(body).unwrap_or_default();
    reject_unsupported(&req)?;
    let mut dropped = dropped_fields(&req);

    let (system, contents) = convert_messages(&req.messages)?;
    let mut out = Map::new();
    out.insert("contents".into(), contents);
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let declarations = function_declarations(&req, &raw)?;
    match tool_config(&req.tool_choice)? {
        Some(config) if !declarations.is_empty() => {
            out.insert("toolConfig".into(), config);
        }
        Some(_) => dropped.push("tool_choice".into()),
        None => {}
    }
    if !declarations.is_empty() {
        out.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
    }
    let config = generation_config(&req, &raw)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    Ok(RequestTranslation {
        body: to_bytes(&Value::Object(out)),
        dropped,
        include_usage: req.stream_options.as_ref().and_then(|s| s.include_usage).unwrap_or(false),
    })
}

/// Top-level fields that have no place in a Gemini request.
fn dropped_fields(req: &oa::ChatRequest) -> Vec<String> {
    let mut dropped: Vec<String> = req.rest.keys().filter(|k| !MAPPED_FIELDS.contains(&k.as_str())).cloned().collect();
    if req.stream_options.is_some() {
        dropped.push("stream_options".into());
    }
    if req.user.is_some() {
        dropped.push("user".into());
    }
    if req.parallel_tool_calls.is_some() {
        dropped.push("parallel_tool_calls".into());
    }
    dropped
}

// ---------------------------------------------------------------------------
// Generation config

fn generation_config(req: &oa::ChatRequest, raw: &RawOpenAiRequest) -> Result<Map<String, Value>, TranslateError> {
    let mut c = Map::new();
    if let Some(m) = req.max_completion_tokens.or(req.max_tokens) {
        c.insert("maxOutputTokens".into(), json!(m));
    }
    if let Some(t) = req.temperature {
        c.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        c.insert("topP".into(), json!(p));
    }
    let stops = match &req.stop {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.clone(),
        Some(_) => return Err(TranslateError::invalid("stop", "must be a string or an array of strings")),
    };
    if !stops.is_empty() {
        c.insert("stopSequences".into(), Value::Array(stops));
    }
    match req.rest.get("seed") {
        None | Some(Value::Null) => {}
        Some(s) if s.is_i64() => {
            c.insert("seed".into(), s.clone());
        }
        Some(_) => return Err(TranslateError::invalid("seed", "must be an integer")),
    }
    for (field, key) in [("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")] {
        match req.rest.get(field) {
            None | Some(Value::Null) => {}
            // Several Gemini models reject penalties altogether: a zero (the default) is not sent.
            Some(p) if p.as_f64() == Some(0.0) => {}
            Some(p) if p.is_number() => {
                c.insert(key.into(), p.clone());
            }
            Some(_) => return Err(TranslateError::invalid(field, "must be a number")),
        }
    }
    response_format(req, raw, &mut c)?;
    if let Some(effort) = &req.reasoning_effort {
        let budget = gemini::effort_budget(effort)?;
        c.insert("thinkingConfig".into(), gemini::thinking_config(budget as i64));
    }
    Ok(c)
}

/// `response_format` → `responseMimeType` (+ `responseSchema`).
fn response_format(
    req: &oa::ChatRequest,
    raw: &RawOpenAiRequest,
    c: &mut Map<String, Value>,
) -> Result<(), TranslateError> {
    let Some(rf) = &req.response_format else {
        return Ok(());
    };
    match rf.get("type").and_then(Value::as_str).unwrap_or("") {
        "text" | "" => {}
        "json_object" => {
            c.insert("responseMimeType".into(), json!("application/json"));
        }
        "json_schema" => {
            let js = rf
                .get("json_schema")
                .filter(|j| j.is_object())
                .ok_or_else(|| TranslateError::invalid("response_format.json_schema", "missing"))?;
            c.insert("responseMimeType".into(), json!("application/json"));
            let raw_schema =
                raw.response_format.as_ref().and_then(|r| r.json_schema.as_ref()).and_then(|j| j.schema.as_deref());
            let schema = match (raw_schema.and_then(|r| Ordered::parse(r.get())), js.get("schema")) {
                (Some(o), _) if matches!(o, Ordered::Object(_)) => Some(o),
                (_, Some(v)) if v.is_object() => Some(Ordered::from_value(v)),
                _ => None,
            };
            if let Some(schema) = schema {
                let converted = gemini::gemini_schema(&schema, "response_format.json_schema.schema", true)?;
                c.insert("responseSchema".into(), converted);
            }
        }
        other => return Err(TranslateError::invalid("response_format.type", format!("unknown value `{other}`"))),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Tools

fn function_declarations(req: &oa::ChatRequest, raw: &RawOpenAiRequest) -> Result<Vec<Value>, TranslateError> {
    let mut out = vec![];
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            return Err(TranslateError::unsupported(format!("tools[{i}].type")));
        }
        let f =
            t.function.as_ref().ok_or_else(|| TranslateError::invalid(format!("tools[{i}].function"), "missing"))?;
        let mut decl = Map::new();
        decl.insert("name".into(), json!(f.name));
        if let Some(d) = f.description.as_ref().filter(|d| !d.is_empty()) {
            decl.insert("description".into(), json!(d));
        }
        let raw_schema = raw
            .tools
            .as_ref()
            .and_then(|t| t.get(i))
            .and_then(|t| t.function.as_ref())
            .and_then(|f| f.parameters.as_deref())
            .and_then(|r| Ordered::parse(r.get()));
        let schema = match (raw_schema, &f.parameters) {
            (Some(o @ Ordered::Object(_)), _) => Some(o),
            (_, Some(p)) if p.is_object() => Some(Ordered::from_value(p)),
            _ => None,
        };
        if let Some(schema) = schema {
            if let Some(p) = gemini::parameters_schema(&schema, &format!("tools[{i}].function.parameters"))? {
                decl.insert("parameters".into(), p);
            }
        }
        out.push(Value::Object(decl));
    }
    Ok(out)
}

/// `toolConfig` for a `tool_choice`.
fn tool_config(tc: &Option<Value>) -> Result<Option<Value>, TranslateError> {
    let mode = |m: &str| Some(json!({"functionCallingConfig": {"mode": m}}));
    match tc {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(mode("AUTO")),
            "none" => Ok(mode("NONE")),
            "required" => Ok(mode("ANY")),
            other => Err(TranslateError::invalid("tool_choice", format!("unknown value `{other}`"))),
        },
        Some(v @ Value::Object(_)) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.function.name", "missing"))?;
            Ok(Some(json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}})))
        }
        Some(_) => Err(TranslateError::invalid("tool_choice", "must be a string or an object")),
    }
}

// ---------------------------------------------------------------------------
// Messages

fn text_part(text: &str) -> Value {
    json!({ "text": text })
}

/// Text parts of a system/developer/tool message content (empty texts skipped).
fn text_parts(content: &Option<Value>, field: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(if s.is_empty() { vec![] } else { vec![text_part(s)] }),
        Some(Value::Array(parts)) => {
            let mut out = vec![];
            for (j, p) in parts.iter().enumerate() {
                let pf = format!("{field}[{j}]");
                let key = match p.get("type").and_then(Value::as_str) {
                    Some("text") => "text",
                    Some("refusal") => "refusal",
                    _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
                };
                let t = p
                    .get(key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| TranslateError::invalid(format!("{pf}.{key}"), "missing"))?;
                if !t.is_empty() {
                    out.push(text_part(t));
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::invalid(field, "must be a string or an array")),
    }
}

fn image_part(p: &Value, pf: &str) -> Result<Value, TranslateError> {
    let url = match p.get("image_url") {
        Some(Value::String(s)) => s.as_str(),
        Some(v) => v.get("url").and_then(Value::as_str).unwrap_or(""),
        None => "",
    };
    if url.starts_with("data:") {
        let (media_type, data) = parse_data_url(url).ok_or_else(|| {
            TranslateError::invalid(format!("{pf}.image_url.url"), "data URL must be `data:<media type>;base64,<data>`")
        })?;
        return Ok(gemini::inline_data(media_type, data));
    }
    if url.is_empty() {
        return Err(TranslateError::invalid(format!("{pf}.image_url.url"), "missing"));
    }
    gemini::url_part(url, &format!("{pf}.image_url.url"))
}

fn user_parts(content: &Option<Value>, i: usize) -> Result<Vec<Value>, TranslateError> {
    let field = format!("messages[{i}].content");
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        other => return text_parts(other, &field),
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
                    out.push(text_part(t));
                }
            }
            Some("image_url") => out.push(image_part(p, &pf)?),
            Some("input_audio") => {
                let data = p.pointer("/input_audio/data").and_then(Value::as_str).unwrap_or("");
                let mime = match p.pointer("/input_audio/format").and_then(Value::as_str) {
                    Some("wav") => "audio/wav",
                    Some("mp3") => "audio/mp3",
                    _ => return Err(TranslateError::invalid(format!("{pf}.input_audio.format"), "must be wav or mp3")),
                };
                out.push(gemini::inline_data(mime, data));
            }
            Some("file") => {
                if p.pointer("/file/file_id").is_some_and(|f| !f.is_null()) {
                    return Err(TranslateError::unsupported(format!("{pf}.file.file_id")));
                }
                let data = p.pointer("/file/file_data").and_then(Value::as_str).and_then(parse_data_url);
                let (media_type, data) = data.ok_or_else(|| {
                    TranslateError::invalid(format!("{pf}.file.file_data"), "must be a `data:<media type>;base64,` URL")
                })?;
                out.push(gemini::inline_data(media_type, data));
            }
            _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
        }
    }
    Ok(out)
}

/// The thought signature of a client tool call: in its id, or in Google's own OpenAI-compatibility
/// field `extra_content.google.thought_signature`.
fn call_signature(tc: &oa::ToolCall) -> Option<String> {
    gemini::signature_in_id(&tc.id).or_else(|| {
        tc.rest
            .get("extra_content")
            .and_then(|e| e.pointer("/google/thought_signature"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
}

fn assistant_parts(m: &oa::ChatMessage, i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut out = text_parts(&m.content, &format!("messages[{i}].content"))?;
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        let af = format!("messages[{i}].tool_calls[{j}].function.arguments");
        let (args, _) = tool_call_arguments(&tc.function.arguments, &af)?;
        if tc.function.name.is_empty() {
            return Err(TranslateError::invalid(format!("messages[{i}].tool_calls[{j}].function.name"), "missing"));
        }
        out.push(gemini::function_call_part(&tc.function.name, args, call_signature(tc)));
    }
    Ok(out)
}

/// A `tool` message as a `functionResponse` part; `names` maps earlier tool-call ids to functions.
fn function_response(m: &oa::ChatMessage, i: usize, names: &HashMap<&str, &str>) -> Result<Value, TranslateError> {
    let id = m
        .tool_call_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| TranslateError::invalid(format!("messages[{i}].tool_call_id"), "missing"))?;
    let name = names.get(id).copied().or_else(|| m.rest.get("name").and_then(Value::as_str)).ok_or_else(|| {
        TranslateError::invalid(
            format!("messages[{i}].tool_call_id"),
            format!("`{id}` matches no tool call of an earlier assistant message (Gemini answers a call by its function's name)"),
        )
    })?;
    let text: String = text_parts(&m.content, &format!("messages[{i}].content"))?
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    Ok(json!({"functionResponse": {"name": name, "response": {"output": text}}}))
}

/// Convert messages: (system parts, `contents`).
fn convert_messages(msgs: &[oa::ChatMessage]) -> Result<(Vec<Value>, Value), TranslateError> {
    let mut system = vec![];
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = vec![];
    for (i, m) in msgs.iter().enumerate() {
        let (role, parts) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(text_parts(&m.content, &format!("messages[{i}].content"))?);
                continue;
            }
            "user" => ("user", user_parts(&m.content, i)?),
            "assistant" => {
                for tc in m.tool_calls.iter().flatten() {
                    names.insert(tc.id.as_str(), tc.function.name.as_str());
                }
                ("model", assistant_parts(m, i)?)
            }
            "tool" => ("user", vec![function_response(m, i, &names)?]),
            "function" => return Err(TranslateError::unsupported(format!("messages[{i}].role"))),
            other => {
                return Err(TranslateError::invalid(format!("messages[{i}].role"), format!("unknown role `{other}`")))
            }
        };
        gemini::push_content(&mut turns, role, parts);
    }
    if turns.is_empty() {
        return Err(TranslateError::invalid("messages", "at least one non-system message is required"));
    }
    Ok((system, gemini::contents_value(turns)))
}
