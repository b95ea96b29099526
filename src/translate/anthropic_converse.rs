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
    anthropic_error_type, anthropic_error_value, fallback_message, obj, parse_json, to_bytes, usage_from_converse,
    write_anthropic_event, RequestOptions, ResponseOptions, TranslateError, Usage,
};
use crate::schema::anthropic as an;

/// Top-level request fields dropped on purpose (besides unknown ones).
pub const DROPPED_FIELDS: &[&str] = &["metadata", "service_tier", "anthropic_version"];

const REJECTED_FIELDS: &[&str] = &["mcp_servers", "container"];

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
    let req: an::MessagesRequest = parse_json(body)?;
    // Order-sensitive fragments (schemas, tool inputs) are carried verbatim.
    let raw: RawAnthropicRequest = serde_json::from_slice(body).unwrap_or_default();
    for f in REJECTED_FIELDS {
        if req.rest.get(*f).is_some_and(|v| !v.is_null()) {
            return Err(TranslateError::unsupported(*f));
        }
    }
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

/// Anthropic `stop_reason` for a Converse `stopReason`.
fn stop_reason(converse: Option<&str>) -> &'static str {
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
fn matched_stop_sequence(v: &Value) -> Value {
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
fn derived_message_id(bytes: &[u8]) -> String {
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

/// What an open Anthropic content block is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    ToolUse,
    /// Redacted reasoning: Anthropic sends it whole in
    /// `content_block_start`, so its data is buffered until the block ends.
    Redacted(String),
}

/// One Converse content block and the Anthropic block it became.
#[derive(Debug, Clone)]
struct Block {
    converse_index: u64,
    index: u64,
    kind: BlockKind,
    open: bool,
}

/// ConverseStream events → Anthropic Messages SSE events.
///
/// `message_start` carries zero usage: Converse reports usage only in its
/// final `metadata` event, so the real counts (input, output and cache
/// tokens) are sent in `message_delta`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    id: String,
    started: bool,
    blocks: Vec<Block>,
    stop_reason: Option<String>,
    stop_sequence: Value,
    usage: Option<Usage>,
    done: bool,
}

impl StreamTranslator {
    /// `model` is the name reported to the client. The message id is
    /// derived from `model` and `opts.created` (Converse streams carry no
    /// id); [`StreamTranslator::with_message_id`] sets a better one.
    pub fn new(model: &str, opts: &ResponseOptions) -> Self {
        let seed = format!("{model}\u{0}{}", opts.created);
        StreamTranslator {
            model: model.to_string(),
            id: derived_message_id(seed.as_bytes()),
            started: false,
            blocks: vec![],
            stop_reason: None,
            stop_sequence: Value::Null,
            usage: None,
            done: false,
        }
    }

    /// Use `id` as the Anthropic message id.
    pub fn with_message_id(mut self, id: &str) -> Self {
        self.id = id.to_string();
        self
    }

    /// Usage seen so far (from the `metadata` event).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    /// True once the stream reached a terminal state.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One decoded upstream event: `name` is its `:event-type`
    /// (`messageStart`, `contentBlockDelta`, …), `payload` its JSON.
    /// Unknown event types are ignored; exception names are handed to
    /// [`StreamTranslator::exception`].
    fn handle(&mut self, name: &str, payload: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let v: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                self.fail("api_error", &format!("malformed upstream `{name}` event: {e}"), out);
                return;
            }
        };
        match name {
            "messageStart" => self.start(out),
            "contentBlockStart" => self.block_start(&v, out),
            "contentBlockDelta" => self.block_delta(&v, out),
            "contentBlockStop" => {
                if let Some(i) = v.get("contentBlockIndex").and_then(Value::as_u64) {
                    self.close_block(i, out);
                }
            }
            "messageStop" => {
                self.stop_reason = Some(v.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn").to_string());
                self.stop_sequence = matched_stop_sequence(&v);
                if self.usage.is_some() {
                    self.complete(out);
                }
            }
            "metadata" => {
                self.usage = Some(usage_from_converse(&v).unwrap_or_default());
                if self.stop_reason.is_some() {
                    self.complete(out);
                }
            }
            _ => {}
        }
    }

    /// The upstream ended. Before `messageStop` this is an error; after it,
    /// whatever is still owed is sent (zero usage if `metadata` never came).
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.stop_reason.is_some() {
            self.complete(out);
        } else {
            self.fail("api_error", "upstream stream ended before messageStop", out);
        }
    }

    fn emit(out: &mut Vec<u8>, v: &Value) {
        write_anthropic_event(out, v);
    }

    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        self.done = true;
        Self::emit(out, &anthropic_error_value(kind, message));
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        Self::emit(
            out,
            &json!({"type": "message_start", "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": Usage::default().to_anthropic_json(),
            }}),
        );
    }

    fn find(&self, converse_index: u64) -> Option<usize> {
        self.blocks.iter().position(|b| b.converse_index == converse_index)
    }

    /// Register a new block; announce it unless it is redacted reasoning.
    fn open_block(&mut self, converse_index: u64, kind: BlockKind, start: Value, out: &mut Vec<u8>) -> usize {
        let index = self.blocks.len() as u64;
        if !matches!(kind, BlockKind::Redacted(_)) {
            Self::emit(out, &json!({"type": "content_block_start", "index": index, "content_block": start}));
        }
        self.blocks.push(Block { converse_index, index, kind, open: true });
        self.blocks.len() - 1
    }

    fn block_start(&mut self, v: &Value, out: &mut Vec<u8>) {
        self.start(out);
        let Some(ci) = v.get("contentBlockIndex").and_then(Value::as_u64) else { return };
        let Some(tu) = v.pointer("/start/toolUse") else { return };
        if self.find(ci).is_some() {
            return;
        }
        let start = json!({"type": "tool_use", "id": tu["toolUseId"], "name": tu["name"], "input": {}});
        self.open_block(ci, BlockKind::ToolUse, start, out);
    }

    /// The position of the block for `ci`, opening one of `kind` if this is
    /// its first event.
    fn block_for(&mut self, ci: u64, kind: BlockKind, out: &mut Vec<u8>) -> usize {
        if let Some(p) = self.find(ci) {
            return p;
        }
        let start = match kind {
            BlockKind::Text => json!({"type": "text", "text": ""}),
            BlockKind::Thinking => json!({"type": "thinking", "thinking": ""}),
            BlockKind::ToolUse => {
                // A tool delta without its start event: Converse always
                // sends the start, but keep the arguments if it did not.
                json!({"type": "tool_use", "id": format!("toolu_{}_{ci}", self.id), "name": "", "input": {}})
            }
            BlockKind::Redacted(_) => Value::Null,
        };
        self.open_block(ci, kind, start, out)
    }

    fn delta(out: &mut Vec<u8>, index: u64, delta: Value) {
        Self::emit(out, &json!({"type": "content_block_delta", "index": index, "delta": delta}));
    }

    fn block_delta(&mut self, v: &Value, out: &mut Vec<u8>) {
        self.start(out);
        let Some(ci) = v.get("contentBlockIndex").and_then(Value::as_u64) else { return };
        let Some(d) = v.get("delta") else { return };
        if let Some(t) = d.get("text").and_then(Value::as_str) {
            let p = self.block_for(ci, BlockKind::Text, out);
            Self::delta(out, self.blocks[p].index, json!({"type": "text_delta", "text": t}));
        } else if let Some(input) = d.pointer("/toolUse/input").and_then(Value::as_str) {
            let p = self.block_for(ci, BlockKind::ToolUse, out);
            if !input.is_empty() {
                Self::delta(out, self.blocks[p].index, json!({"type": "input_json_delta", "partial_json": input}));
            }
        } else if let Some(rc) = d.get("reasoningContent") {
            self.reasoning_delta(ci, rc, out);
        }
    }

    fn reasoning_delta(&mut self, ci: u64, rc: &Value, out: &mut Vec<u8>) {
        if let Some(data) = rc.get("redactedContent").and_then(Value::as_str) {
            let p = self.block_for(ci, BlockKind::Redacted(String::new()), out);
            if let BlockKind::Redacted(buf) = &mut self.blocks[p].kind {
                buf.push_str(data);
            }
            return;
        }
        let p = self.block_for(ci, BlockKind::Thinking, out);
        let index = self.blocks[p].index;
        if let Some(t) = rc.get("text").and_then(Value::as_str) {
            Self::delta(out, index, json!({"type": "thinking_delta", "thinking": t}));
        }
        if let Some(s) = rc.get("signature").and_then(Value::as_str) {
            Self::delta(out, index, json!({"type": "signature_delta", "signature": s}));
        }
    }

    fn close_block(&mut self, ci: u64, out: &mut Vec<u8>) {
        let Some(p) = self.find(ci) else { return };
        let b = &mut self.blocks[p];
        if !b.open {
            return;
        }
        b.open = false;
        if let BlockKind::Redacted(data) = &b.kind {
            Self::emit(
                out,
                &json!({"type": "content_block_start", "index": b.index,
                        "content_block": {"type": "redacted_thinking", "data": data}}),
            );
        }
        Self::emit(out, &json!({"type": "content_block_stop", "index": b.index}));
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        let open: Vec<u64> = self.blocks.iter().filter(|b| b.open).map(|b| b.converse_index).collect();
        for ci in open {
            self.close_block(ci, out);
        }
        let u = self.usage.clone().unwrap_or_default();
        Self::emit(
            out,
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(self.stop_reason.as_deref()),
                              "stop_sequence": self.stop_sequence},
                    "usage": u.to_anthropic_json()}),
        );
        Self::emit(out, &json!({"type": "message_stop"}));
        self.done = true;
    }
}

impl crate::stream::StreamTranslate for StreamTranslator {
    fn event(&mut self, event: &crate::stream::Event, out: &mut Vec<u8>) {
        self.handle(event.name.unwrap_or_default(), &event.data, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.end(out);
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Value {
        let t = request(&serde_json::to_vec(&v).unwrap(), &RequestOptions::default()).unwrap();
        serde_json::from_slice(&t.body).unwrap()
    }

    #[test]
    fn document_names_keep_allowed_characters_and_are_unique() {
        let mut used = vec![];
        assert_eq!(unique_document_name(Some("Q3 report: final.pdf"), &mut used), "Q3 report final pdf");
        assert_eq!(unique_document_name(Some("Q3 report: final.pdf"), &mut used), "Q3 report final pdf (2)");
        assert_eq!(unique_document_name(None, &mut used), "document-3");
        assert_eq!(unique_document_name(Some("!!!"), &mut used), "document-4");
    }

    #[test]
    fn consecutive_user_messages_are_merged() {
        let v = req(json!({"max_tokens": 5, "messages": [
            {"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}]}]}));
        assert_eq!(v["messages"], json!([{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}]));
    }

    #[test]
    fn tool_choice_none_without_tool_history_sends_no_tools() {
        let v = req(json!({"max_tokens": 5, "tool_choice": {"type": "none"},
            "tools": [{"name": "t", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "a"}]}));
        assert!(v.get("toolConfig").is_none());
    }

    #[test]
    fn tool_choice_none_with_tool_history_keeps_tools_and_reports_drop() {
        let body = json!({"max_tokens": 5, "tool_choice": {"type": "none", "disable_parallel_tool_use": true},
            "tools": [{"name": "t", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "t", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]});
        let t = request(&serde_json::to_vec(&body).unwrap(), &RequestOptions::default()).unwrap();
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert!(v["toolConfig"].get("toolChoice").is_none());
        assert_eq!(t.dropped, vec!["tool_choice", "tool_choice.disable_parallel_tool_use"]);
        assert_eq!(v["messages"][2]["content"][0], json!({"toolResult": {"toolUseId": "x", "content": []}}));
    }

    #[test]
    fn dropped_lists_metadata_service_tier_and_unknown_fields_but_not_top_k() {
        let body = json!({"max_tokens": 5, "top_k": 3, "service_tier": "auto", "stream": true,
            "metadata": {"user_id": "u"}, "context_management": {}, "messages": [{"role": "user", "content": "a"}]});
        let t = request(&serde_json::to_vec(&body).unwrap(), &RequestOptions::default()).unwrap();
        assert_eq!(t.dropped, vec!["context_management", "metadata", "service_tier"]);
        let v: Value = serde_json::from_slice(&t.body).unwrap();
        assert!(v.get("stream").is_none() && v.get("model").is_none());
    }

    #[test]
    fn cache_control_inside_tool_result_puts_the_cache_point_after_it() {
        let v = req(json!({"max_tokens": 5, "tools": [{"name": "t", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "t", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": [
                    {"type": "text", "text": "big", "cache_control": {"type": "ephemeral"}}]}]}]}));
        assert_eq!(
            v["messages"][2]["content"],
            json!([{"toolResult": {"toolUseId": "x", "content": [{"text": "big"}]}},
                   {"cachePoint": {"type": "default"}}])
        );
    }

    #[test]
    fn tool_inputs_and_schemas_keep_their_key_order() {
        let body = br#"{"max_tokens":5,"tools":[{"name":"t","input_schema":{"type":"object","properties":{"z":{},"a":{}}}}],
            "messages":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"tool_use","id":"x","name":"t","input":{"z":1,"a":2}}]}]}"#;
        let t = request(body, &RequestOptions::default()).unwrap();
        let s = String::from_utf8(t.body).unwrap();
        assert!(s.contains(r#""properties":{"z":{},"a":{}}"#), "{s}");
        assert!(s.contains(r#""input":{"z":1,"a":2}"#), "{s}");
    }

    #[test]
    fn plain_text_document_becomes_txt_bytes() {
        let v = req(json!({"max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "foo"}}]}]}));
        assert_eq!(
            v["messages"][0]["content"][0],
            json!({"document": {"format": "txt", "name": "document-1", "source": {"bytes": "Zm9v"}}})
        );
    }

    #[test]
    fn error_type_refines_only_generic_statuses() {
        let e: Value = serde_json::from_slice(&error(
            503,
            Some("ServiceUnavailableException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"busy"}"#,
        ))
        .unwrap();
        assert_eq!(e["error"], json!({"type": "overloaded_error", "message": "busy"}));
        let e: Value = serde_json::from_slice(&error(400, Some("ThrottlingException"), b"")).unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error");
        assert_eq!(e["error"]["message"], "upstream returned HTTP 400");
    }

    #[test]
    fn response_id_is_deterministic() {
        let body = br#"{"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":1,"totalTokens":2},"metrics":{"latencyMs":1}}"#;
        let a = response(body, "m", &ResponseOptions::default()).unwrap();
        assert_eq!(a, response(body, "m", &ResponseOptions::default()).unwrap());
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(v["id"].as_str().unwrap().len(), 36);
    }
}
