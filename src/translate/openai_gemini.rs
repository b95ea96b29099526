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
    usage_from_gemini, write_openai_chunk, RequestOptions, ResponseOptions, TranslateError, Usage,
};
use crate::schema::openai as oa;
use crate::sse::write_event;
use crate::stream::{Event, StreamFailure, StreamTranslate};

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

// ---------------------------------------------------------------------------
// Responses

/// OpenAI `finish_reason` for a Gemini `finishReason`.
fn finish_reason(reason: &str, tool_calls: bool) -> &'static str {
    match gemini::finish(reason) {
        Finish::Length => "length",
        Finish::Filtered => "content_filter",
        Finish::Stop | Finish::Other if tool_calls => "tool_calls",
        Finish::Stop | Finish::Other => "stop",
    }
}

/// The seed of synthesized ids: Gemini's `responseId`, else `bytes`.
fn id_seed(response_id: Option<&str>, bytes: &[u8]) -> u64 {
    match response_id.filter(|r| !r.is_empty()) {
        Some(r) => gemini::fnv1a(gemini::FNV_OFFSET, &[r.as_bytes()]),
        None => gemini::fnv1a(gemini::FNV_OFFSET, &[bytes]),
    }
}

/// An OpenAI tool call for the `n`-th function call of a response.
fn tool_call(part: &gemini::Part, fc: &gemini::FunctionCall, seed: u64, n: u64) -> Value {
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
    let seed = id_seed(r.response_id.as_deref(), body);
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
                "message": Value::Object(message),
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

// ---------------------------------------------------------------------------
// Streams

/// `streamGenerateContent?alt=sse` events → OpenAI `chat.completion.chunk` SSE stream.
///
/// Each event's data is one `GenerateContentResponse`: text and thought parts become `content` and
/// `reasoning_content` deltas, a function call (Gemini sends each whole) one `tool_calls` delta with
/// its full arguments, and the chunk with `finishReason` the finish chunk, then the usage chunk
/// (with `opts.include_usage`; usage is cumulative, the last chunk's counts) and `[DONE]`. A stream
/// that ends before a `finishReason` ends with an error event and no `[DONE]`; a prompt blocked
/// before any content is a [`StreamTranslate::refusal`]. Reads `opts.created` and
/// `opts.include_usage`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    opts: ResponseOptions,
    /// Chunk id and the seed of synthesized tool-call ids, fixed by the first event.
    id: Option<(String, u64)>,
    started: bool,
    tool_calls: u64,
    usage: Option<Usage>,
    refusal: Option<StreamFailure>,
    done: bool,
}

impl StreamTranslator {
    /// `model` is the name reported to the client. Chunks are named `chatcmpl-` and Gemini's
    /// `responseId` (or a hash of `model` and `created` when the stream carries none).
    pub fn new(model: &str, opts: &ResponseOptions) -> Self {
        StreamTranslator {
            model: model.to_string(),
            opts: opts.clone(),
            id: None,
            started: false,
            tool_calls: 0,
            usage: None,
            refusal: None,
            done: false,
        }
    }

    /// Usage reported so far (cumulative).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    fn handle(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done || data.is_empty() {
            return;
        }
        let r: GenerateContentResponse = match serde_json::from_slice(data) {
            Ok(r) => r,
            Err(e) => {
                return self.fail(502, "malformed_stream_event", &format!("malformed upstream stream event: {e}"), out)
            }
        };
        if let Some(e) = &r.error {
            let status = gemini::stream_error_status(e);
            let code = e.status.clone().unwrap_or_else(|| openai_error_type(status).to_string());
            let message = e.message.clone().unwrap_or_else(|| format!("upstream stream error (HTTP {status})"));
            return self.fail(status, &code, &message, out);
        }
        if let Some(u) = r.usage_metadata.as_ref().and_then(usage_from_gemini) {
            self.usage = Some(u);
        }
        if self.id.is_none() {
            let seed = id_seed(r.response_id.as_deref(), format!("{}\0{}", self.model, self.opts.created).as_bytes());
            let id = match r.response_id.as_deref().filter(|r| !r.is_empty()) {
                Some(rid) => format!("chatcmpl-{rid}"),
                None => format!("chatcmpl-{seed:016x}"),
            };
            self.id = Some((id, seed));
        }
        if let Some(TranslateError::Refused { status, code, message }) = r.refusal() {
            self.refusal =
                (!self.started).then(|| StreamFailure { status, message: message.clone(), code: Some(code.clone()) });
            return self.fail(status, &code, &message, out);
        }
        self.start(out);
        for part in r.parts() {
            if let Some(fc) = &part.function_call {
                let seed = self.id.as_ref().map_or(0, |(_, s)| *s);
                let mut call = tool_call(part, fc, seed, self.tool_calls);
                call["index"] = json!(self.tool_calls);
                self.tool_calls += 1;
                self.chunk(json!({ "tool_calls": [call] }), Value::Null, out);
            } else if let Some(t) = part.text.as_deref().filter(|t| !t.is_empty()) {
                let key = if part.is_thought() { "reasoning_content" } else { "content" };
                self.chunk(json!({ key: t }), Value::Null, out);
            }
        }
        if let Some(reason) = r.finish_reason() {
            let fr = finish_reason(reason, self.tool_calls > 0);
            self.chunk(json!({}), json!(fr), out);
            self.complete(out);
        }
    }

    fn chunk(&self, delta: Value, finish: Value, out: &mut Vec<u8>) {
        let id = self.id.as_ref().map_or("chatcmpl-unknown", |(id, _)| id.as_str());
        write_openai_chunk(out, id, self.opts.created, &self.model, delta, finish);
    }

    fn fail(&mut self, status: u16, code: &str, message: &str, out: &mut Vec<u8>) {
        self.done = true;
        write_event(out, None, &to_bytes(&openai_error_value(status, code, message)));
    }

    /// The role chunk, once, before anything else.
    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.chunk(json!({"role": "assistant", "content": ""}), Value::Null, out);
        }
    }

    /// Usage chunk (when asked for and known), then `[DONE]`.
    fn complete(&mut self, out: &mut Vec<u8>) {
        if self.opts.include_usage {
            if let Some(u) = &self.usage {
                let id = self.id.as_ref().map_or("chatcmpl-unknown", |(id, _)| id.as_str());
                let c = obj(vec![
                    ("id", json!(id)),
                    ("object", json!("chat.completion.chunk")),
                    ("created", json!(self.opts.created)),
                    ("model", json!(self.model)),
                    ("choices", json!([])),
                    ("usage", u.to_openai_json()),
                ]);
                write_event(out, None, &to_bytes(&c));
            }
        }
        write_event(out, None, b"[DONE]");
        self.done = true;
    }
}

impl StreamTranslate for StreamTranslator {
    fn event(&mut self, event: &Event, out: &mut Vec<u8>) {
        self.handle(&event.data, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.done {
            self.fail(502, "stream_incomplete", "upstream stream ended before a finish reason", out);
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn refusal(&self) -> Option<&StreamFailure> {
        self.refusal.as_ref()
    }
}

// ---------------------------------------------------------------------------
// Embeddings

/// `POST /v1/embeddings` request body (the fields read).
#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// An embeddings request in Gemini's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsTranslation {
    /// The `batchEmbedContents` body.
    pub body: Vec<u8>,
    /// Client fields that were dropped (`user`, unknown fields).
    pub dropped: Vec<String>,
    /// The client asked for `encoding_format: "base64"`.
    pub base64: bool,
}

/// Translate an OpenAI embeddings request into a Gemini API `batchEmbedContents` body:
/// `{"requests": [{"model": "models/<m>", "content": {"parts": [{"text"}]}, "outputDimensionality"?}]}`,
/// one request per input string (`dimensions` → `outputDimensionality`). The model is
/// `opts.model`, else the client's. Token arrays are refused (Gemini embeds text). The `gemini`
/// provider sends this body to `models/{model}:batchEmbedContents`; the `vertex` provider converts
/// it with [`vertex_predict_body`] for `:predict`.
pub fn embeddings_request(body: &[u8], opts: &RequestOptions) -> Result<EmbeddingsTranslation, TranslateError> {
    let req: EmbeddingsRequest = parse_json(body)?;
    let model = opts.model.clone().or(req.model).unwrap_or_default();
    let model = if model.starts_with("models/") { model } else { format!("models/{model}") };
    let texts: Vec<&str> = match &req.input {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect()
        }
        Value::Array(items) if items.is_empty() => return Err(TranslateError::invalid("input", "must not be empty")),
        Value::Array(_) => {
            return Err(TranslateError::invalid("input", "Gemini embeds text: send strings, not token arrays"))
        }
        _ => return Err(TranslateError::invalid("input", "must be a string or an array of strings")),
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(TranslateError::invalid("encoding_format", format!("unknown value `{other}`"))),
    };
    let requests: Vec<Value> = texts
        .iter()
        .map(|text| {
            let mut r = Map::new();
            r.insert("model".into(), json!(model));
            r.insert("content".into(), json!({"parts": [{"text": text}]}));
            if let Some(d) = req.dimensions {
                r.insert("outputDimensionality".into(), json!(d));
            }
            Value::Object(r)
        })
        .collect();
    let mut dropped: Vec<String> = req.rest.keys().cloned().collect();
    dropped.sort();
    Ok(EmbeddingsTranslation { body: to_bytes(&json!({ "requests": requests })), dropped, base64 })
}

/// Vertex AI embeds through `publishers/google/models/{model}:predict`: the `batchEmbedContents`
/// body of [`embeddings_request`] as `{"instances": [{"content": "<text>"}, …], "parameters":
/// {"outputDimensionality": N}?}`. The `vertex` provider applies this in `finish_body` for
/// embeddings; its `predict` answer is read by [`embeddings_response`] as it comes.
pub fn vertex_predict_body(batch: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let v: Value = parse_json(batch)?;
    let requests = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| TranslateError::invalid("requests", "a batchEmbedContents body needs `requests`"))?;
    let mut instances = Vec::with_capacity(requests.len());
    let mut dimensions = None;
    for r in requests {
        let text: String = r
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect();
        instances.push(json!({ "content": text }));
        dimensions = dimensions.or_else(|| r.get("outputDimensionality").cloned());
    }
    let mut out = Map::new();
    out.insert("instances".into(), Value::Array(instances));
    if let Some(d) = dimensions {
        out.insert("parameters".into(), json!({ "outputDimensionality": d }));
    }
    Ok(to_bytes(&Value::Object(out)))
}

/// Translate an embeddings answer into OpenAI's `{"object": "list", "data": [...], "model", "usage"}`.
/// Reads both shapes: the Gemini API's `{"embeddings": [{"values": [...]}]}` (`batchEmbedContents`;
/// `embedContent`'s single `embedding` too), which reports no token count (usage is then 0), and
/// Vertex AI's `{"predictions": [{"embeddings": {"values": [...], "statistics": {"token_count"}}}]}`,
/// whose token counts are summed. With `opts.embeddings_base64` each vector is the base64 of its
/// little-endian `f32`s, as OpenAI sends it.
pub fn embeddings_response(body: &[u8], model: &str, opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let v: Value = parse_json(body)?;
    let mut vectors: Vec<&Vec<Value>> = Vec::new();
    let mut tokens = 0u64;
    if let Some(list) = v.get("embeddings").and_then(Value::as_array) {
        vectors.extend(list.iter().filter_map(|e| e.get("values").and_then(Value::as_array)));
    } else if let Some(one) = v.pointer("/embedding/values").and_then(Value::as_array) {
        vectors.push(one);
    } else if let Some(predictions) = v.get("predictions").and_then(Value::as_array) {
        for p in predictions {
            if let Some(values) = p.pointer("/embeddings/values").and_then(Value::as_array) {
                vectors.push(values);
            }
            tokens += p.pointer("/embeddings/statistics/token_count").and_then(Value::as_f64).unwrap_or(0.0) as u64;
        }
    } else {
        return Err(TranslateError::InvalidJson("an embeddings answer needs `embeddings` or `predictions`".into()));
    }
    if let Some(u) = usage_from_gemini(&v) {
        tokens = u.prompt_tokens();
    }
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, values)| {
            let embedding = if opts.embeddings_base64 {
                let mut bytes = Vec::with_capacity(values.len() * 4);
                for x in values.iter() {
                    bytes.extend_from_slice(&(x.as_f64().unwrap_or(0.0) as f32).to_le_bytes());
                }
                json!(crate::base64::encode(&bytes))
            } else {
                Value::Array(values.to_vec())
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let out = obj(vec![
        ("object", json!("list")),
        ("data", Value::Array(data)),
        ("model", json!(model)),
        ("usage", json!({"prompt_tokens": tokens, "total_tokens": tokens})),
    ]);
    Ok(to_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Result<RequestTranslation, TranslateError> {
        request(&serde_json::to_vec(&v).unwrap(), &RequestOptions::default())
    }

    fn body(t: &RequestTranslation) -> Value {
        serde_json::from_slice(&t.body).unwrap()
    }

    #[test]
    fn tool_results_are_answered_by_the_calls_function_name_with_the_signature_restored() {
        let id = gemini::call_id("call_", None, 7, 0, Some("c2lnbmF0dXJl"));
        let t = req(json!({"messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": id, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "call_b", "content": "noon"},
            {"role": "tool", "tool_call_id": id, "content": [{"type": "text", "text": "sunny"}]}
        ]}))
        .unwrap();
        let b = body(&t);
        assert_eq!(
            b["contents"][1]["parts"],
            json!([
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnbmF0dXJl"},
                {"functionCall": {"name": "get_time", "args": {}}}
            ])
        );
        assert_eq!(
            b["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "get_time", "response": {"output": "noon"}}},
                {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
            ]})
        );
        let text = String::from_utf8(t.body).unwrap();
        assert!(!text.contains("\"id\""), "ids are never sent upstream: {text}");
    }

    #[test]
    fn calls_without_signatures_get_the_placeholder_and_unknown_results_are_refused() {
        let b = body(
            &req(json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "call_x", "type": "function",
                    "function": {"name": "f", "arguments": "{}"},
                    "extra_content": {"google": {"thought_signature": "Z29vZ2xl"}}}]},
                {"role": "assistant", "tool_calls": [{"id": "call_y", "type": "function",
                    "function": {"name": "g", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_y", "content": "ok"}
            ]}))
            .unwrap(),
        );
        // The two assistant messages merge into one model turn, whose first call is signed.
        assert_eq!(b["contents"][1]["parts"][0]["thoughtSignature"], "Z29vZ2xl");
        assert!(b["contents"][1]["parts"][1].get("thoughtSignature").is_none());
        let e = req(json!({"messages": [{"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "nope", "content": "x"}]}))
        .unwrap_err();
        assert_eq!(e.field(), Some("messages[1].tool_call_id"));
    }

    #[test]
    fn tool_choice_without_tools_is_dropped_and_named_choice_allows_one_function() {
        let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required"})).unwrap();
        assert!(body(&t).get("toolConfig").is_none());
        assert!(t.dropped.contains(&"tool_choice".to_string()));
        let t = req(json!({"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}}))
        .unwrap();
        let b = body(&t);
        assert_eq!(b["toolConfig"], json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}));
        assert_eq!(b["tools"], json!([{"functionDeclarations": [{"name": "f"}]}]));
    }

    #[test]
    fn reasoning_effort_sets_a_budget_and_asks_for_thoughts_unless_none() {
        let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "medium"})).unwrap();
        assert_eq!(
            body(&t)["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 8192, "includeThoughts": true})
        );
        let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "none"})).unwrap();
        assert_eq!(body(&t)["generationConfig"]["thinkingConfig"], json!({"thinkingBudget": 0}));
        let e = req(json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "max"})).unwrap_err();
        assert_eq!(e.field(), Some("reasoning_effort"));
    }

    #[test]
    fn zero_penalties_are_not_sent_and_other_sampling_fields_map() {
        let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "seed": 7, "presence_penalty": 0,
            "frequency_penalty": 0.5, "stop": "END", "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 20}))
        .unwrap();
        assert_eq!(
            body(&t)["generationConfig"],
            json!({"seed": 7, "frequencyPenalty": 0.5, "stopSequences": ["END"], "topP": 0.9, "maxOutputTokens": 20})
        );
        assert!(t.dropped.is_empty(), "{:?}", t.dropped);
    }

    #[test]
    fn stream_without_a_finish_reason_ends_with_an_error_and_no_done() {
        let mut t = StreamTranslator::new("m", &ResponseOptions::default());
        let mut out = Vec::new();
        t.handle(
            br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}],"responseId":"r1"}"#,
            &mut out,
        );
        StreamTranslate::finish(&mut t, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"id\":\"chatcmpl-r1\"") && text.contains("stream_incomplete"), "{text}");
        assert!(!text.contains("[DONE]"));
    }

    #[test]
    fn embeddings_go_one_request_per_input_and_come_back_as_floats_or_base64() {
        let t = embeddings_request(
            br#"{"model":"text-embedding-004","input":["a","b"],"dimensions":8,"user":"u","encoding_format":"base64"}"#,
            &RequestOptions { model: Some("gemini-embedding-001".into()), default_max_tokens: 1 },
        )
        .unwrap();
        let b: Value = serde_json::from_slice(&t.body).unwrap();
        assert_eq!(
            b["requests"][1],
            json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8})
        );
        assert!(t.base64);
        assert_eq!(t.dropped, ["user"]);
        let predict: Value = serde_json::from_slice(&vertex_predict_body(&t.body).unwrap()).unwrap();
        assert_eq!(
            predict,
            json!({"instances": [{"content": "a"}, {"content": "b"}], "parameters": {"outputDimensionality": 8}})
        );

        let opts = ResponseOptions { embeddings_base64: true, ..ResponseOptions::default() };
        let out: Value = serde_json::from_slice(
            &embeddings_response(br#"{"embeddings":[{"values":[1.0,-2.5]}]}"#, "m", &opts).unwrap(),
        )
        .unwrap();
        let expected: Vec<u8> = [1.0f32, -2.5].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(out["data"][0]["embedding"], crate::base64::encode(&expected));
        let e = embeddings_request(br#"{"model":"m","input":[[1,2]]}"#, &RequestOptions::default()).unwrap_err();
        assert_eq!(e.field(), Some("input"));
    }
}
