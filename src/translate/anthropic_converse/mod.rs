//! Anthropic Messages client → AWS Bedrock Converse upstream
//! (`POST /model/{modelId}/converse` and `/converse-stream`).
//!
//! The request body carries neither `model` nor `stream`: the provider puts
//! the model id in the URL and picks the operation. Stream events arrive as
//! AWS event-stream frames; the provider decodes them and hands each one's
//! type and JSON payload to [`StreamTranslator::event`] (or, for exception
//! frames, [`StreamTranslator::exception`]).
//!
//! # What is translated, dropped or rejected
//!
//! Rejected with [`TranslateError::Unsupported`] (HTTP 400 naming the
//! field): server tools (tools with a `type` other than `custom`, e.g.
//! `web_search_20250305`), `mcp_servers`, `container`, images or documents
//! given by URL or Files-API id (Converse takes bytes or S3 locations only),
//! base64 documents that are not PDFs, `content`-source documents, system
//! blocks that are not text, and content blocks Converse cannot carry
//! (`search_result`, `server_tool_use`, `*_tool_result` of server tools …).
//!
//! Dropped on purpose and reported in [`RequestTranslation::dropped`]:
//! `metadata` (Converse has no end-user field), `service_tier` (Bedrock's
//! tiers are not Anthropic's), `anthropic_version`, unknown top-level
//! fields, `tool_choice.disable_parallel_tool_use` (no Converse
//! equivalent), and `tool_choice` `none` when the conversation holds tool
//! blocks (see below). Dropped silently: document `citations` settings
//! (Converse would answer with citation blocks this translator does not
//! map back) and `citations` on text blocks of assistant history.
//!
//! Other choices:
//! * `cache_control` on a system block, content block or tool becomes a
//!   `cachePoint` block right after it (`ttl` is carried over). On a block
//!   nested in a `tool_result`, the point goes after the `toolResult`.
//! * `top_k` and `thinking` go to `additionalModelRequestFields`, which
//!   Bedrock passes to the model as-is (`thinking: {type: "disabled"}` is not
//!   sent: it is the default and other model families would reject it).
//! * When `stop_sequences` are given, the request asks for
//!   `additionalModelResponseFieldPaths: ["/stop_sequence"]` so that the
//!   matched sequence can be reported as Anthropic's `stop_sequence`.
//! * `tool_choice: none` has no Converse form. Without tool blocks in the
//!   conversation the tools are simply not sent; with them Bedrock requires
//!   `toolConfig`, so the tools are sent without a choice and `tool_choice`
//!   is reported as dropped.
//! * Consecutive messages of the same role are merged (Anthropic merges
//!   them; Converse requires alternating roles).
//! * `tool_result.is_error` becomes `status: "error"`; a missing or empty
//!   string content becomes an empty content list.
//! * `redacted_thinking.data` and Converse `redactedContent` (a blob, base64
//!   on the JSON wire) are carried as the same string both ways, so a round
//!   trip through the client gives Bedrock back exactly what it sent.
//! * Documents need a `name` in Converse: the `title` reduced to the
//!   characters Bedrock allows, or `document-N`; names are made unique.
//!   Plain-text documents are sent as `txt` bytes.
//! * Responses: Converse has no message id, so `msg_…` is derived from a
//!   hash of the response body (streams: of model and `created`, or set with
//!   [`StreamTranslator::with_message_id`]). `guardrail_intervened` and
//!   `content_filtered` become `refusal`; `malformed_model_output` and
//!   `malformed_tool_use` become `end_turn`; `model_context_window_exceeded`
//!   passes through (Anthropic has the same value).
//! * Converse `inputTokens` excludes cache reads and writes, like
//!   Anthropic's `input_tokens`; `cacheWriteInputTokens` is
//!   `cache_creation_input_tokens`.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::raw::{RawAnthropicRequest, RawSlots};
use super::{
    anthropic_error_type, anthropic_error_value, anthropic_request, fallback_message, obj, parse_json, to_bytes,
    usage_from_converse, write_anthropic_event, write_anthropic_message_start, RequestOptions, ResponseOptions,
    TranslateError, Usage,
};
use crate::schema::anthropic as an;

mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use response::*;
pub use stream::*;

/// Top-level request fields dropped on purpose (besides unknown ones).
pub const DROPPED_FIELDS: &[&str] = &["metadata", "service_tier", "anthropic_version"];

/// Everything the gateway needs from request translation.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTranslation {
    /// The Converse request body (no `modelId`: it goes in the URL).
    pub body: Vec<u8>,
    /// Client fields that were dropped (top-level names, or dotted paths
    /// such as `tool_choice.disable_parallel_tool_use`).
    pub dropped: Vec<String>,
}

/// State shared by the pieces of one request translation.
#[derive(Default)]
struct Ctx {
    slots: RawSlots,
    doc_names: Vec<String>,
    has_tool_blocks: bool,
}

/// Translate an Anthropic Messages request body into a Converse request
/// body. `opts.model` is not read (the model id goes in the URL);
/// `opts.default_max_tokens` fills a missing `max_tokens`.
pub fn request(body: &[u8], opts: &RequestOptions) -> Result<RequestTranslation, TranslateError> {
    let (req, raw) = anthropic_request(body)?;
    let mut dropped: Vec<String> = req.rest.keys().filter(|k| k.as_str() != "top_k").cloned().collect();
    if req.metadata.is_some() {
        dropped.push("metadata".into());
    }
    let mut ctx = Ctx::default();
    let mut out = Map::new();

    let messages = convert_messages(&req, &raw, &mut ctx)?;
    out.insert("messages".into(), Value::Array(messages));
    let system = convert_system(req.system.as_ref())?;
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert("inferenceConfig".into(), inference_config(&req, opts));
    if let Some(tc) = tool_config(&req, &raw, &mut ctx, &mut dropped)? {
        out.insert("toolConfig".into(), tc);
    }
    let extra = additional_fields(&req)?;
    if !extra.is_empty() {
        out.insert("additionalModelRequestFields".into(), Value::Object(extra));
    }
    if req.stop_sequences.as_ref().is_some_and(|s| !s.is_empty()) {
        out.insert("additionalModelResponseFieldPaths".into(), json!(["/stop_sequence"]));
    }
    dropped.sort();
    Ok(RequestTranslation { body: ctx.slots.render(Value::Object(out)), dropped })
}

/// `maxTokens`, `temperature`, `topP`, `stopSequences`.
fn inference_config(req: &an::MessagesRequest, opts: &RequestOptions) -> Value {
    let mut c = Map::new();
    c.insert("maxTokens".into(), json!(req.max_tokens.unwrap_or(u64::from(opts.default_max_tokens))));
    if let Some(t) = req.temperature {
        c.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        c.insert("topP".into(), json!(p));
    }
    if let Some(s) = req.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
        c.insert("stopSequences".into(), json!(s));
    }
    Value::Object(c)
}

/// `top_k` and `thinking`, which Converse passes to the model untouched.
fn additional_fields(req: &an::MessagesRequest) -> Result<Map<String, Value>, TranslateError> {
    let mut m = Map::new();
    match req.rest.get("top_k") {
        None | Some(Value::Null) => {}
        Some(k) if k.is_u64() => {
            m.insert("top_k".into(), k.clone());
        }
        Some(_) => return Err(TranslateError::invalid("top_k", "must be a non-negative integer")),
    }
    if let Some(th) = req.thinking.as_ref().filter(|t| t.kind != "disabled") {
        let v = serde_json::to_value(th).map_err(|e| TranslateError::invalid("thinking", e.to_string()))?;
        m.insert("thinking".into(), v);
    }
    Ok(m)
}

/// Converse `cachePoint` block for an Anthropic `cache_control` value.
fn converse_cache_point(cache_control: &Value) -> Value {
    match cache_control.get("ttl").and_then(Value::as_str) {
        Some(ttl) => json!({"cachePoint": {"type": "default", "ttl": ttl}}),
        None => json!({"cachePoint": {"type": "default"}}),
    }
}

/// The block's `cache_control`, if it has a non-null one.
fn cache_control(b: &Value) -> Option<&Value> {
    b.get("cache_control").filter(|c| !c.is_null())
}

fn convert_system(system: Option<&Value>) -> Result<Vec<Value>, TranslateError> {
    let mut out = vec![];
    match system {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            if !s.is_empty() {
                out.push(json!({"text": s}));
            }
        }
        Some(Value::Array(blocks)) => {
            for (j, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(TranslateError::unsupported(format!("system[{j}].type")));
                }
                let text = b.get("text").and_then(Value::as_str).unwrap_or("");
                // Converse system text must not be empty.
                if !text.is_empty() {
                    out.push(json!({"text": text}));
                }
                if let Some(cc) = cache_control(b) {
                    if !out.is_empty() {
                        out.push(converse_cache_point(cc));
                    }
                }
            }
        }
        Some(_) => return Err(TranslateError::invalid("system", "must be a string or an array")),
    }
    Ok(out)
}

fn convert_messages(
    req: &an::MessagesRequest,
    raw: &RawAnthropicRequest,
    ctx: &mut Ctx,
) -> Result<Vec<Value>, TranslateError> {
    let mut out: Vec<(String, Vec<Value>)> = vec![];
    for (i, m) in req.messages.iter().enumerate() {
        if m.role != "user" && m.role != "assistant" {
            return Err(TranslateError::invalid(format!("messages[{i}].role"), format!("unknown role `{}`", m.role)));
        }
        let raw_inputs = raw.messages.as_ref().and_then(|ms| ms.get(i)).map(|m| m.block_inputs()).unwrap_or_default();
        let content = convert_content(&m.content, i, &raw_inputs, ctx)?;
        match out.last_mut() {
            Some((role, blocks)) if *role == m.role => blocks.extend(content),
            _ => out.push((m.role.clone(), content)),
        }
    }
    Ok(out.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect())
}

fn convert_content(
    content: &Value,
    i: usize,
    raw_inputs: &[Option<Box<RawValue>>],
    ctx: &mut Ctx,
) -> Result<Vec<Value>, TranslateError> {
    let blocks = match content {
        Value::String(s) => return Ok(vec![json!({"text": s})]),
        Value::Array(b) => b,
        _ => return Err(TranslateError::invalid(format!("messages[{i}].content"), "must be a string or an array")),
    };
    let mut out = vec![];
    for (j, b) in blocks.iter().enumerate() {
        let field = format!("messages[{i}].content[{j}]");
        let raw_input = raw_inputs.get(j).and_then(|r| r.as_deref());
        out.push(convert_block(b, &field, raw_input, ctx)?);
        if let Some(cc) = cache_control(b).or_else(|| nested_cache_control(b)) {
            out.push(converse_cache_point(cc));
        }
    }
    Ok(out)
}

/// A `cache_control` on a block inside a `tool_result`'s content (Converse
/// tool-result content cannot hold cache points).
fn nested_cache_control(b: &Value) -> Option<&Value> {
    if b.get("type").and_then(Value::as_str) != Some("tool_result") {
        return None;
    }
    b.get("content")?.as_array()?.iter().rev().find_map(cache_control)
}

fn convert_block(b: &Value, field: &str, raw_input: Option<&RawValue>, ctx: &mut Ctx) -> Result<Value, TranslateError> {
    let str_of = |k: &str| b.get(k).and_then(Value::as_str);
    match str_of("type") {
        Some("text") => Ok(json!({"text": str_of("text").unwrap_or("")})),
        Some("image") => converse_image(b, field),
        Some("document") => converse_document(b, field, ctx),
        Some("tool_use") => {
            ctx.has_tool_blocks = true;
            let id = str_of("id").ok_or_else(|| TranslateError::invalid(format!("{field}.id"), "missing"))?;
            let name = str_of("name").ok_or_else(|| TranslateError::invalid(format!("{field}.name"), "missing"))?;
            let input = match (raw_input, b.get("input")) {
                (Some(r), Some(p)) if p.is_object() => ctx.slots.slot(r.get(), p.clone()),
                (_, Some(p)) if !p.is_null() => p.clone(),
                _ => json!({}),
            };
            Ok(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
        }
        Some("tool_result") => {
            ctx.has_tool_blocks = true;
            converse_tool_result(b, field, ctx)
        }
        Some("thinking") => {
            let mut rt = Map::new();
            rt.insert("text".into(), json!(str_of("thinking").unwrap_or("")));
            if let Some(sig) = str_of("signature").filter(|s| !s.is_empty()) {
                rt.insert("signature".into(), json!(sig));
            }
            Ok(json!({"reasoningContent": {"reasoningText": Value::Object(rt)}}))
        }
        Some("redacted_thinking") => {
            let data = str_of("data").ok_or_else(|| TranslateError::invalid(format!("{field}.data"), "missing"))?;
            Ok(json!({"reasoningContent": {"redactedContent": data}}))
        }
        _ => Err(TranslateError::unsupported(format!("{field}.type"))),
    }
}

/// Converse image format for an Anthropic image media type.
fn converse_image_format(media_type: &str) -> Option<&'static str> {
    match media_type {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

fn converse_image(b: &Value, field: &str) -> Result<Value, TranslateError> {
    let src = b.get("source").unwrap_or(&Value::Null);
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {}
        Some("url") => return Err(TranslateError::unsupported(format!("{field}.source.url"))),
        _ => return Err(TranslateError::unsupported(format!("{field}.source.type"))),
    }
    let media_type = src.get("media_type").and_then(Value::as_str).unwrap_or("");
    let format = converse_image_format(media_type).ok_or_else(|| {
        TranslateError::invalid(format!("{field}.source.media_type"), format!("unsupported image type `{media_type}`"))
    })?;
    let data = src.get("data").and_then(Value::as_str).unwrap_or("");
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

fn converse_document(b: &Value, field: &str, ctx: &mut Ctx) -> Result<Value, TranslateError> {
    let src = b.get("source").unwrap_or(&Value::Null);
    let src_str = |k: &str| src.get(k).and_then(Value::as_str);
    let (format, bytes) = match (src_str("type"), src_str("media_type")) {
        (Some("base64"), Some("application/pdf")) => ("pdf", src_str("data").unwrap_or("").to_string()),
        (Some("base64"), _) => return Err(TranslateError::unsupported(format!("{field}.source.media_type"))),
        (Some("text"), _) => ("txt", crate::base64::encode(src_str("data").unwrap_or("").as_bytes())),
        (Some("url"), _) => return Err(TranslateError::unsupported(format!("{field}.source.url"))),
        _ => return Err(TranslateError::unsupported(format!("{field}.source.type"))),
    };
    let name = unique_document_name(b.get("title").and_then(Value::as_str), &mut ctx.doc_names);
    let mut doc = Map::new();
    doc.insert("format".into(), json!(format));
    doc.insert("name".into(), json!(name));
    doc.insert("source".into(), json!({"bytes": bytes}));
    if let Some(c) = b.get("context").and_then(Value::as_str) {
        doc.insert("context".into(), json!(c));
    }
    Ok(json!({"document": Value::Object(doc)}))
}

/// A Converse document name: alphanumerics, hyphens, parentheses, square
/// brackets and single spaces, at most 200 characters, unique within the
/// request; `document-N` when the title leaves nothing.
fn unique_document_name(title: Option<&str>, used: &mut Vec<String>) -> String {
    let mut name = String::new();
    for c in title.unwrap_or("").chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '(' | ')' | '[' | ']') {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with(' ') {
            name.push(' ');
        }
        if name.len() >= 180 {
            break;
        }
    }
    let name = name.trim_end().to_string();
    let mut candidate = if name.is_empty() { format!("document-{}", used.len() + 1) } else { name.clone() };
    let mut n = 2;
    while used.contains(&candidate) {
        candidate = if name.is_empty() { format!("document-{}-{n}", used.len() + 1) } else { format!("{name} ({n})") };
        n += 1;
    }
    used.push(candidate.clone());
    candidate
}

fn converse_tool_result(b: &Value, field: &str, ctx: &mut Ctx) -> Result<Value, TranslateError> {
    let id = b
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::invalid(format!("{field}.tool_use_id"), "missing"))?;
    let content = match b.get("content") {
        None | Some(Value::Null) => vec![],
        Some(Value::String(s)) if s.is_empty() => vec![],
        Some(Value::String(s)) => vec![json!({"text": s})],
        Some(Value::Array(parts)) => {
            let mut out = vec![];
            for (k, p) in parts.iter().enumerate() {
                let pf = format!("{field}.content[{k}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => out.push(json!({"text": p.get("text").and_then(Value::as_str).unwrap_or("")})),
                    Some("image") => out.push(converse_image(p, &pf)?),
                    Some("document") => out.push(converse_document(p, &pf, ctx)?),
                    _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
                }
            }
            out
        }
        Some(_) => return Err(TranslateError::invalid(format!("{field}.content"), "must be a string or an array")),
    };
    let mut tr = Map::new();
    tr.insert("toolUseId".into(), json!(id));
    tr.insert("content".into(), Value::Array(content));
    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
        tr.insert("status".into(), json!("error"));
    }
    Ok(json!({"toolResult": Value::Object(tr)}))
}

/// `toolConfig`, or `None` when no tools are sent.
fn tool_config(
    req: &an::MessagesRequest,
    raw: &RawAnthropicRequest,
    ctx: &mut Ctx,
    dropped: &mut Vec<String>,
) -> Result<Option<Value>, TranslateError> {
    let mut tools = vec![];
    for (i, t) in req.tools.iter().flatten().enumerate() {
        match t.kind.as_deref() {
            None | Some("custom") => {}
            Some(_) => return Err(TranslateError::unsupported(format!("tools[{i}].type"))),
        }
        let mut spec = Map::new();
        spec.insert("name".into(), json!(t.name));
        if let Some(d) = t.description.as_ref().filter(|d| !d.is_empty()) {
            spec.insert("description".into(), json!(d));
        }
        let raw_schema = raw.tools.as_ref().and_then(|ts| ts.get(i)).and_then(|t| t.input_schema.as_deref());
        let schema = match (raw_schema, &t.input_schema) {
            (Some(r), Some(p)) if p.is_object() => ctx.slots.slot(r.get(), p.clone()),
            (_, Some(p)) if !p.is_null() => p.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        spec.insert("inputSchema".into(), json!({ "json": schema }));
        if let Some(strict) = t.rest.get("strict").and_then(Value::as_bool) {
            spec.insert("strict".into(), json!(strict));
        }
        tools.push(json!({"toolSpec": Value::Object(spec)}));
        if let Some(cc) = t.rest.get("cache_control").filter(|c| !c.is_null()) {
            tools.push(converse_cache_point(cc));
        }
    }
    if tools.is_empty() {
        return Ok(None);
    }
    let mut config = Map::new();
    config.insert("tools".into(), Value::Array(tools));
    if let Some(tc) = &req.tool_choice {
        if tc.disable_parallel_tool_use.is_some() {
            dropped.push("tool_choice.disable_parallel_tool_use".into());
        }
        match tc.kind.as_str() {
            "auto" => {
                config.insert("toolChoice".into(), json!({"auto": {}}));
            }
            "any" => {
                config.insert("toolChoice".into(), json!({"any": {}}));
            }
            "tool" => {
                let name = tc.name.as_ref().ok_or_else(|| TranslateError::invalid("tool_choice.name", "missing"))?;
                config.insert("toolChoice".into(), json!({"tool": {"name": name}}));
            }
            "none" if !ctx.has_tool_blocks => return Ok(None),
            "none" => dropped.push("tool_choice".into()),
            other => return Err(TranslateError::invalid("tool_choice.type", format!("unknown value `{other}`"))),
        }
    }
    Ok(Some(Value::Object(config)))
}
