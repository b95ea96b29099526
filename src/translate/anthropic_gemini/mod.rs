//! Anthropic Messages client → Google Gemini upstream (`generateContent`,
//! `streamGenerateContent?alt=sse`, `countTokens`), so that Claude Code-style clients can run on
//! Gemini (Gemini API or Vertex AI).
//!
//! The model goes in the URL, which the provider builds: the body carries neither `model` nor
//! `stream`.
//!
//! # What is translated, dropped or rejected
//!
//! Rejected with [`TranslateError::Unsupported`] (HTTP 400 naming the field): server tools (tools
//! with a `type` other than `custom`, e.g. `web_search_20250305`), `mcp_servers`, `container`,
//! Files-API sources, `content` documents, system blocks that are not text, and content blocks
//! Gemini cannot carry (`search_result`, `server_tool_use`, `*_tool_result` of server tools …).
//! Rejected as invalid: a media URL whose name does not tell its type, a `tool_result` whose
//! `tool_use_id` matches no earlier `tool_use` (Gemini answers a call by the function's name), and
//! schemas Gemini cannot express (recursive or remote `$ref`s; see
//! [`super::gemini::gemini_schema`]).
//!
//! Dropped and reported in [`RequestTranslation::dropped`]: `metadata`, `service_tier`,
//! `anthropic_version`, unknown top-level fields, `tool_choice.disable_parallel_tool_use`.
//! Dropped silently: `cache_control` (Gemini caches implicitly), document `citations`, `title` and
//! `context`, thinking blocks without a signature and `redacted_thinking` (Gemini reads no unsigned
//! thought text and cannot read Anthropic's redacted data).
//!
//! Translated:
//! * `system` → `systemInstruction.parts`; messages → `contents` with roles `user` / `model`
//!   (consecutive same roles merged); `text` → `text` parts; base64 images and documents →
//!   `inlineData`; URL images and documents → `fileData` (media type from the URL's name; PDF for
//!   documents); plain-text documents → `text` parts.
//! * `tool_use` → `functionCall` parts (the `thoughtSignature` restored from the id, see
//!   [`super::gemini::SIGNATURE_MARK`]); `tool_result` → a `functionResponse` part
//!   `{"name", "response": {"output": <text>}}` (`"error"` instead of `"output"` when `is_error`),
//!   images in the result following as `inlineData` parts. Ids are not sent upstream. The first
//!   call of a model turn without any signature gets Gemini's placeholder signature.
//! * signed `thinking` blocks → thought parts (`thought: true`, `thoughtSignature`).
//! * `max_tokens` (or `opts.default_max_tokens`) → `maxOutputTokens`, which in both APIs includes
//!   thinking; `temperature`, `top_p` → `topP`, `top_k` → `topK`, `stop_sequences` →
//!   `stopSequences`.
//! * `thinking` `enabled` → `thinkingConfig {thinkingBudget: budget_tokens, includeThoughts: true}`,
//!   `adaptive` → budget -1 (Gemini's dynamic thinking), `disabled` → budget 0.
//! * `tools` → `functionDeclarations` (schemas converted); `tool_choice` auto / any / tool / none →
//!   `functionCallingConfig.mode` `AUTO` / `ANY` / `ANY` + `allowedFunctionNames` / `NONE`.
//!
//! Responses: thought parts → `thinking` blocks (consecutive parts merged; `signature` from their
//! `thoughtSignature`, else empty), text parts → `text` blocks, `functionCall` parts → `tool_use`
//! blocks (input in the model's key order; id Gemini's or synthesized, carrying the call's
//! signature). `finishReason` `STOP` → `end_turn` (`tool_use` when the model called tools),
//! `MAX_TOKENS` → `max_tokens`, `SAFETY`, `RECITATION`, … → `refusal`. Gemini does not say which stop
//! sequence matched: `stop_sequence` is always null. Usage: `input_tokens` is `promptTokenCount`
//! minus `cachedContentTokenCount` (the cache reads), output includes thoughts. The id is `msg_` and
//! Gemini's `responseId` (or a hash). A prompt Gemini blocked is [`TranslateError::Refused`] (400,
//! `invalid_request_error`).
//!
//! Token counts: see [`count_tokens_request`], [`count_tokens_response`] and
//! [`vertex_count_tokens_body`].

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::gemini::{self, Finish, GenerateContentResponse, Ordered};
use super::raw::{RawAnthropicRequest, RawSlots};
use super::{
    anthropic_error_type, anthropic_error_value, anthropic_request, fallback_message, obj, parse_json, to_bytes,
    usage_from_gemini, write_anthropic_event, write_anthropic_message_start, RequestOptions, ResponseOptions,
    TranslateError, Usage,
};
use crate::schema::anthropic as an;
use crate::stream::{Event, StreamFailure, StreamTranslate};

mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use response::*;
pub use stream::*;

/// Everything the gateway needs from request translation.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTranslation {
    /// The `generateContent` request body (no `model`, no `stream`).
    pub body: Vec<u8>,
    /// Client fields that were dropped (top-level names, or dotted paths such as
    /// `tool_choice.disable_parallel_tool_use`).
    pub dropped: Vec<String>,
}

/// Translate an Anthropic Messages request body into a Gemini `generateContent` body.
/// `opts.default_max_tokens` fills a missing `max_tokens`; `opts.model` is not read.
pub fn request(body: &[u8], opts: &RequestOptions) -> Result<RequestTranslation, TranslateError> {
    let (req, raw) = anthropic_request(body)?;
    let mut dropped: Vec<String> = req.rest.keys().filter(|k| k.as_str() != "top_k").cloned().collect();
    if req.metadata.is_some() {
        dropped.push("metadata".into());
    }
    let mut out = Map::new();
    out.insert("contents".into(), convert_messages(&req)?);
    let system = system_parts(req.system.as_ref())?;
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let declarations = function_declarations(&req, &raw)?;
    if !declarations.is_empty() {
        out.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
        if let Some(tc) = &req.tool_choice {
            if tc.disable_parallel_tool_use.is_some() {
                dropped.push("tool_choice.disable_parallel_tool_use".into());
            }
            out.insert("toolConfig".into(), tool_config(tc)?);
        }
    }
    out.insert("generationConfig".into(), Value::Object(generation_config(&req, opts)?));
    dropped.sort();
    Ok(RequestTranslation { body: to_bytes(&Value::Object(out)), dropped })
}

fn generation_config(req: &an::MessagesRequest, opts: &RequestOptions) -> Result<Map<String, Value>, TranslateError> {
    let mut c = Map::new();
    c.insert("maxOutputTokens".into(), json!(req.max_tokens.unwrap_or(u64::from(opts.default_max_tokens))));
    if let Some(t) = req.temperature {
        c.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        c.insert("topP".into(), json!(p));
    }
    match req.rest.get("top_k") {
        None | Some(Value::Null) => {}
        Some(k) if k.is_u64() => {
            c.insert("topK".into(), k.clone());
        }
        Some(_) => return Err(TranslateError::invalid("top_k", "must be a non-negative integer")),
    }
    if let Some(s) = req.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
        c.insert("stopSequences".into(), json!(s));
    }
    if let Some(th) = &req.thinking {
        let budget = match th.kind.as_str() {
            "enabled" => {
                th.budget_tokens.ok_or_else(|| TranslateError::invalid("thinking.budget_tokens", "missing"))? as i64
            }
            "adaptive" => -1,
            "disabled" => 0,
            other => return Err(TranslateError::invalid("thinking.type", format!("unknown value `{other}`"))),
        };
        c.insert("thinkingConfig".into(), gemini::thinking_config(budget));
    }
    Ok(c)
}

fn system_parts(system: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    match system {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(if s.is_empty() { vec![] } else { vec![json!({ "text": s })] }),
        Some(Value::Array(blocks)) => {
            let mut out = vec![];
            for (j, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(TranslateError::unsupported(format!("system[{j}].type")));
                }
                if let Some(t) = b.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    out.push(json!({ "text": t }));
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::invalid("system", "must be a string or an array")),
    }
}

// ---------------------------------------------------------------------------
// Tools

fn function_declarations(req: &an::MessagesRequest, raw: &RawAnthropicRequest) -> Result<Vec<Value>, TranslateError> {
    let mut out = vec![];
    for (i, t) in req.tools.iter().flatten().enumerate() {
        match t.kind.as_deref() {
            None | Some("custom") => {}
            Some(_) => return Err(TranslateError::unsupported(format!("tools[{i}].type"))),
        }
        if t.name.is_empty() {
            return Err(TranslateError::invalid(format!("tools[{i}].name"), "missing"));
        }
        let mut decl = Map::new();
        decl.insert("name".into(), json!(t.name));
        if let Some(d) = t.description.as_ref().filter(|d| !d.is_empty()) {
            decl.insert("description".into(), json!(d));
        }
        let raw_schema = raw
            .tools
            .as_ref()
            .and_then(|ts| ts.get(i))
            .and_then(|t| t.input_schema.as_deref())
            .and_then(|r| Ordered::parse(r.get()));
        let schema = match (raw_schema, &t.input_schema) {
            (Some(o @ Ordered::Object(_)), _) => Some(o),
            (_, Some(p)) if p.is_object() => Some(Ordered::from_value(p)),
            _ => None,
        };
        if let Some(schema) = schema {
            if let Some(p) = gemini::parameters_schema(&schema, &format!("tools[{i}].input_schema"))? {
                decl.insert("parameters".into(), p);
            }
        }
        out.push(Value::Object(decl));
    }
    Ok(out)
}

fn tool_config(tc: &an::ToolChoice) -> Result<Value, TranslateError> {
    let config = match tc.kind.as_str() {
        "auto" => json!({"mode": "AUTO"}),
        "any" => json!({"mode": "ANY"}),
        "none" => json!({"mode": "NONE"}),
        "tool" => {
            let name = tc.name.as_ref().ok_or_else(|| TranslateError::invalid("tool_choice.name", "missing"))?;
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
        other => return Err(TranslateError::invalid("tool_choice.type", format!("unknown value `{other}`"))),
    };
    Ok(json!({ "functionCallingConfig": config }))
}

// ---------------------------------------------------------------------------
// Messages

fn convert_messages(req: &an::MessagesRequest) -> Result<Value, TranslateError> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut turns: Vec<(&'static str, Vec<Value>)> = vec![];
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => "user",
            "assistant" => "model",
            other => {
                return Err(TranslateError::invalid(format!("messages[{i}].role"), format!("unknown role `{other}`")))
            }
        };
        let parts = match &m.content {
            Value::String(s) if s.is_empty() => vec![],
            Value::String(s) => vec![json!({ "text": s })],
            Value::Array(blocks) => {
                let mut parts = vec![];
                for (j, b) in blocks.iter().enumerate() {
                    convert_block(b, &format!("messages[{i}].content[{j}]"), &mut names, &mut parts)?;
                }
                parts
            }
            _ => return Err(TranslateError::invalid(format!("messages[{i}].content"), "must be a string or an array")),
        };
        gemini::push_content(&mut turns, role, parts);
    }
    if turns.is_empty() {
        return Err(TranslateError::invalid("messages", "at least one message with content is required"));
    }
    Ok(gemini::contents_value(turns))
}

/// Appends the Gemini parts of one content block; `names` maps earlier `tool_use` ids to functions.
fn convert_block<'a>(
    b: &'a Value,
    field: &str,
    names: &mut HashMap<&'a str, &'a str>,
    out: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let str_of = |k: &str| b.get(k).and_then(Value::as_str);
    match str_of("type") {
        Some("text") => {
            if let Some(t) = str_of("text").filter(|t| !t.is_empty()) {
                out.push(json!({ "text": t }));
            }
        }
        Some("image") => out.push(media_part(b, field, None)?),
        Some("document") => out.push(media_part(b, field, Some("application/pdf"))?),
        Some("tool_use") => {
            let id = str_of("id").ok_or_else(|| TranslateError::invalid(format!("{field}.id"), "missing"))?;
            let name = str_of("name").ok_or_else(|| TranslateError::invalid(format!("{field}.name"), "missing"))?;
            names.insert(id, name);
            let args = match b.get("input") {
                Some(v @ Value::Object(_)) => v.clone(),
                None | Some(Value::Null) => json!({}),
                Some(_) => return Err(TranslateError::invalid(format!("{field}.input"), "must be an object")),
            };
            out.push(gemini::function_call_part(name, args, gemini::signature_in_id(id)));
        }
        Some("tool_result") => tool_result(b, field, names, out)?,
        Some("thinking") => {
            if let Some(sig) = str_of("signature").filter(|s| !s.is_empty()) {
                out.push(json!({"text": str_of("thinking").unwrap_or(""), "thought": true, "thoughtSignature": sig}));
            }
        }
        Some("redacted_thinking") => {}
        _ => return Err(TranslateError::unsupported(format!("{field}.type"))),
    }
    Ok(())
}

/// An image or document block as a Gemini part (`url_type`: the media type of a URL document).
fn media_part(b: &Value, field: &str, url_type: Option<&str>) -> Result<Value, TranslateError> {
    let src = b.get("source").unwrap_or(&Value::Null);
    let src_str = |k: &str| src.get(k).and_then(Value::as_str);
    match src_str("type") {
        Some("base64") => {
            let media_type = src_str("media_type")
                .ok_or_else(|| TranslateError::invalid(format!("{field}.source.media_type"), "missing"))?;
            Ok(gemini::inline_data(media_type, src_str("data").unwrap_or("")))
        }
        Some("url") => {
            let url =
                src_str("url").ok_or_else(|| TranslateError::invalid(format!("{field}.source.url"), "missing"))?;
            match (gemini::mime_from_uri(url), url_type) {
                (Some(mime), _) | (None, Some(mime)) => Ok(gemini::file_data(mime, url)),
                (None, None) => gemini::url_part(url, &format!("{field}.source.url")),
            }
        }
        Some("text") if url_type.is_some() => Ok(json!({ "text": src_str("data").unwrap_or("") })),
        _ => Err(TranslateError::unsupported(format!("{field}.source.type"))),
    }
}

fn tool_result<'a>(
    b: &'a Value,
    field: &str,
    names: &HashMap<&'a str, &'a str>,
    out: &mut Vec<Value>,
) -> Result<(), TranslateError> {
    let id = b
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.tool_use_id"), "missing"))?;
    let name = names.get(id).ok_or_else(|| {
        TranslateError::invalid(
            format!("{field}.tool_use_id"),
            format!("`{id}` matches no earlier tool_use block (Gemini answers a call by its function's name)"),
        )
    })?;
    let mut text = Vec::new();
    let mut media = Vec::new();
    match b.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => text.push(s.as_str()),
        Some(Value::Array(parts)) => {
            for (k, p) in parts.iter().enumerate() {
                let pf = format!("{field}.content[{k}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => text.push(p.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("image") => media.push(media_part(p, &pf, None)?),
                    Some("document") => media.push(media_part(p, &pf, Some("application/pdf"))?),
                    _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
                }
            }
        }
        Some(_) => return Err(TranslateError::invalid(format!("{field}.content"), "must be a string or an array")),
    }
    let key = if b.get("is_error").and_then(Value::as_bool) == Some(true) { "error" } else { "output" };
    out.push(json!({"functionResponse": {"name": name, "response": { key: text.join("\n") }}}));
    out.extend(media);
    Ok(())
}

// ---------------------------------------------------------------------------
// Token counts

/// Translate an Anthropic `count_tokens` body for Gemini's `models/{model}:countTokens`: the
/// `generateContent` body [`request`] writes (without `generationConfig`, which does not change the
/// count), wrapped as `{"generateContentRequest": {"model": "models/<m>", …}}` (the only form of
/// the Gemini API's `countTokens` that counts a system instruction and tools). The model is
/// `opts.model`, else the client's. The `vertex` provider unwraps it with
/// [`vertex_count_tokens_body`]; both providers answer in Anthropic's shape through
/// [`count_tokens_response`] (from `finish_response`: the gateway does not translate token-count
/// answers back).
pub fn count_tokens_request(body: &[u8], opts: &RequestOptions) -> Result<RequestTranslation, TranslateError> {
    let t = request(body, opts)?;
    let mut inner: Map<String, Value> = parse_json(&t.body)?;
    inner.remove("generationConfig");
    let model = opts
        .model
        .clone()
        .or_else(|| serde_json::from_slice::<an::MessagesRequest>(body).ok().and_then(|r| r.model))
        .unwrap_or_default();
    let model = if model.starts_with("models/") { model } else { format!("models/{model}") };
    inner.insert("model".into(), json!(model));
    Ok(RequestTranslation { body: to_bytes(&json!({ "generateContentRequest": inner })), dropped: t.dropped })
}

/// Vertex AI's `countTokens` takes `contents`, `systemInstruction` and `tools` at the top level
/// (and rejects `toolConfig`): the body of [`count_tokens_request`] in that form.
pub fn vertex_count_tokens_body(body: &[u8]) -> Result<Vec<u8>, TranslateError> {
    let v: Value = parse_json(body)?;
    let inner = v.get("generateContentRequest").unwrap_or(&v);
    let mut out = Map::new();
    for key in ["contents", "systemInstruction", "tools"] {
        if let Some(x) = inner.get(key) {
            out.insert(key.into(), x.clone());
        }
    }
    Ok(to_bytes(&Value::Object(out)))
}

/// A Gemini or Vertex `countTokens` answer (`{"totalTokens": N, …}`) as Anthropic's
/// `{"input_tokens": N}`; any other body is returned unchanged.
pub fn count_tokens_response(body: Vec<u8>) -> Vec<u8> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Count {
        total_tokens: u64,
    }
    match serde_json::from_slice::<Count>(&body) {
        Ok(c) => to_bytes(&json!({ "input_tokens": c.total_tokens })),
        Err(_) => body,
    }
}
