//! OpenAI Chat Completions client → AWS Bedrock Converse upstream
//! (`POST /model/{modelId}/converse` and `/converse-stream`).
//!
//! The model id goes in the URL, which the provider builds, so the request
//! body carries neither `model` nor `stream`; [`RequestTranslation::stream`]
//! tells the provider which endpoint to call.
//!
//! # What is translated, dropped or rejected
//!
//! Rejected with [`TranslateError::Unsupported`], exactly as in
//! [`super::openai_anthropic`]: `n` > 1, `logprobs: true`, `functions` /
//! `function_call` and `role: "function"` messages, `audio`, `modalities`
//! containing `"audio"`, `web_search_options`, tools whose `type` is not
//! `"function"`, and content parts other than `text`, `image_url` and PDF
//! `file` data. Also rejected: images given by http(s) URL (Converse takes
//! image bytes or S3 locations, and a translator fetches nothing) and image
//! data URLs whose media type is not PNG, JPEG, GIF or WebP.
//!
//! Dropped and listed in [`RequestTranslation::dropped`]: every top-level
//! field Converse has no place for (`seed`, `frequency_penalty`,
//! `presence_penalty`, `logit_bias`, `top_logprobs`, `store`, `metadata`,
//! `service_tier`, `prediction`, `prompt_cache_key`, `safety_identifier`,
//! `verbosity`, unknown fields), plus `stream_options` (consumed: see
//! [`RequestTranslation::include_usage`]), `user`, `parallel_tool_calls`
//! (Converse cannot forbid parallel calls), and `temperature` / `top_p` when
//! thinking is on.
//!
//! Translated:
//! * system/developer messages (anywhere) → top-level `system` text blocks;
//!   user/assistant content → `text`, `image` (`source.bytes` is the data
//!   URL's base64), PDF `document` blocks; assistant `tool_calls` →
//!   `toolUse`; `tool` messages → `toolResult` blocks in a user message.
//!   Consecutive same-role messages are merged (Converse needs alternation),
//!   and the conversation must start with a user message (400 otherwise).
//!   A content part carrying `cache_control` (the Anthropic-style marker some
//!   OpenAI clients send) is followed by a `{"cachePoint":{"type":"default"}}`
//!   block. Message `name` fields and assistant `reasoning_content` are
//!   dropped; the last assistant message (a prefill) has trailing whitespace
//!   trimmed, as Claude requires.
//! * `tools` → `toolConfig.tools[].toolSpec`; `tool_choice` auto / required /
//!   named → `toolChoice` `auto` / `any` / `tool`. `tool_choice: "none"` has no
//!   Converse equivalent: `toolConfig` is omitted, except when the history
//!   holds `toolUse`/`toolResult` blocks (Bedrock then requires a
//!   `toolConfig`): the client's tools are kept with no `toolChoice` (the
//!   model may still call one). If the history holds tool blocks and the
//!   client sent no tools at all, a spec with an open object schema is
//!   declared for each tool name used in the history.
//! * `max_completion_tokens` / `max_tokens` → `inferenceConfig.maxTokens`
//!   (omitted when the client gave none: it is optional in Converse);
//!   `temperature`, `top_p` → `topP`, `stop` → `stopSequences`.
//! * `response_format` json_schema / json_object → a forced tool, as in
//!   [`super::openai_anthropic`]; its `toolUse` input comes back as message
//!   content. (`toolChoice.tool` works on Claude and Mistral Large on
//!   Bedrock, not on every Converse model.)
//! * `reasoning_effort` low/medium/high → `additionalModelRequestFields:
//!   {"thinking": {"type": "enabled", "budget_tokens": 1024/4096/16384}}`,
//!   which is Anthropic Claude's parameter on Bedrock (other model families
//!   reject it). `maxTokens` must exceed the budget: a `max_tokens` ≤ budget
//!   becomes `budget + max_tokens`, and no `max_tokens` becomes `budget +
//!   opts.default_max_tokens`. Thinking is not enabled when the tool choice
//!   is forced nor when the conversation ends with tool results (the same
//!   Claude constraints as in [`super::openai_anthropic`]).
//!
//! Responses: `text` → `content`, `toolUse` → `tool_calls` (arguments are the
//! input as the model wrote it), `reasoningContent.reasoningText.text` →
//! `reasoning_content`; `stopReason` end_turn/stop_sequence → `stop`,
//! max_tokens/model_context_window_exceeded → `length`, tool_use →
//! `tool_calls`, guardrail_intervened/content_filtered → `content_filter`,
//! anything else → `stop`. Converse responses carry no id: the id is
//! `chatcmpl-` and a hash of the response body.
//!
//! Usage: Bedrock's `inputTokens` counts only the input that was neither read
//! from nor written to the prompt cache (the prompt-caching guide: total
//! input = `inputTokens + cacheReadInputTokens + cacheWriteInputTokens`), so
//! it maps to [`Usage::input_tokens`] unchanged and OpenAI `prompt_tokens` is
//! the sum of the three.

use std::collections::{BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::openai_anthropic::{
    parse_data_url, reject_unsupported, thinking_budget, tool_call_arguments, JSON_OBJECT_TOOL,
};
use super::raw::{RawOpenAiRequest, RawSlots};
use super::{
    fallback_message, obj, openai_error_code, openai_error_type, openai_error_value, parse_json, to_bytes,
    usage_from_converse, write_openai_chunk, RequestOptions, ResponseOptions, TranslateError, Usage,
};
use crate::schema::openai as oa;
use crate::sse::write_event;

/// Everything the gateway needs from request translation.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTranslation {
    /// The Converse request body (no `model`, no `stream`).
    pub body: Vec<u8>,
    /// Top-level client fields that were dropped (known and unknown).
    pub dropped: Vec<String>,
    /// Name of the tool emulating `response_format`, for [`ResponseOptions`].
    pub forced_json_tool: Option<String>,
    /// The client asked for a stream: call `/converse-stream`.
    pub stream: bool,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
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

/// The client's `tool_choice`, before `response_format` emulation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    Unset,
    None,
    Auto,
    Any,
    Tool(String),
}

impl Choice {
    fn forced(&self) -> bool {
        matches!(self, Choice::Any | Choice::Tool(_))
    }

    /// Converse `toolChoice`, if one is sent.
    fn to_converse(&self) -> Option<Value> {
        match self {
            Choice::Unset | Choice::None => None,
            Choice::Auto => Some(json!({"auto": {}})),
            Choice::Any => Some(json!({"any": {}})),
            Choice::Tool(name) => Some(json!({"tool": {"name": name}})),
        }
    }
}

/// Translate an OpenAI chat request body into a Converse request body.
/// `opts.model` is not used (the model id goes in the URL);
/// `opts.default_max_tokens` is used only to make room for a thinking budget.
pub fn request(body: &[u8], opts: &RequestOptions) -> Result<RequestTranslation, TranslateError> {
    let req: oa::ChatRequest = parse_json(body)?;
    // Order-sensitive fragments (schemas, tool arguments) are carried verbatim.
    let raw: RawOpenAiRequest = serde_json::from_slice(body).unwrap_or_default();
    let mut slots = RawSlots::new();

    reject_unsupported(&req)?;
    let mut dropped = dropped_fields(&req);

    let (system, messages) = convert_messages(&req.messages, &mut slots)?;
    let history_tools = history_tool_names(&messages);

    let mut out = Map::new();
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }

    let user_tools = convert_tools(&req, &raw, &mut slots)?;
    let choice = convert_tool_choice(&req.tool_choice)?;
    let forced = json_response_tool(&req, &raw, &mut slots)?;
    let forced_json_tool = forced.as_ref().map(|(name, _)| name.clone());
    let (tool_config, final_choice) = tool_config(user_tools, choice, forced, &history_tools);
    if let Some(tc) = tool_config {
        out.insert("toolConfig".into(), tc);
    }

    let mut inference = Map::new();
    let mut max_tokens = req.max_completion_tokens.or(req.max_tokens);
    let thinking_budget = thinking(&req, &final_choice, &messages)?;
    if let Some(budget) = thinking_budget {
        max_tokens = Some(match max_tokens {
            None => budget + u64::from(opts.default_max_tokens),
            Some(m) if m <= budget => budget + m,
            Some(m) => m,
        });
        out.insert(
            "additionalModelRequestFields".into(),
            json!({"thinking": {"type": "enabled", "budget_tokens": budget}}),
        );
        if req.temperature.is_some() {
            dropped.push("temperature".into());
        }
        if req.top_p.is_some() {
            dropped.push("top_p".into());
        }
    } else {
        if let Some(t) = req.temperature {
            inference.insert("temperature".into(), json!(t));
        }
        if let Some(p) = req.top_p {
            inference.insert("topP".into(), json!(p));
        }
    }
    if let Some(m) = max_tokens {
        inference.insert("maxTokens".into(), json!(m));
    }
    let stops = stop_sequences(&req.stop)?;
    if !stops.is_empty() {
        inference.insert("stopSequences".into(), Value::Array(stops));
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    out.insert("messages".into(), Value::Array(messages));

    Ok(RequestTranslation {
        body: slots.render(Value::Object(out)),
        dropped,
        forced_json_tool,
        stream: req.stream.unwrap_or(false),
        include_usage: req.stream_options.as_ref().and_then(|s| s.include_usage).unwrap_or(false),
    })
}

/// Top-level fields that have no place in a Converse request.
fn dropped_fields(req: &oa::ChatRequest) -> Vec<String> {
    let mut dropped: Vec<String> = req.rest.keys().filter(|k| k.as_str() != "modalities").cloned().collect();
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

fn stop_sequences(stop: &Option<Value>) -> Result<Vec<Value>, TranslateError> {
    match stop {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![Value::String(s.clone())]),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(a.clone()),
        Some(_) => Err(TranslateError::invalid("stop", "must be a string or an array of strings")),
    }
}

/// The thinking budget to request, if thinking can be enabled.
fn thinking(req: &oa::ChatRequest, choice: &Choice, messages: &[Value]) -> Result<Option<u64>, TranslateError> {
    let Some(effort) = &req.reasoning_effort else {
        return Ok(None);
    };
    let budget = thinking_budget(effort)?;
    Ok(budget.filter(|_| !choice.forced() && !continues_tool_use(messages)))
}

/// True when the conversation ends with tool results answering an assistant
/// `toolUse` turn (Claude then wants that turn's signed thinking blocks,
/// which an OpenAI client cannot send back).
fn continues_tool_use(messages: &[Value]) -> bool {
    let has = |m: &Value, kind: &str| m["content"].as_array().is_some_and(|b| b.iter().any(|b| b.get(kind).is_some()));
    match messages {
        [.., a, u] => a["role"] == "assistant" && has(a, "toolUse") && has(u, "toolResult"),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Tools

/// `tools` → Converse `toolSpec` entries (the `tools` array items).
fn convert_tools(
    req: &oa::ChatRequest,
    raw: &RawOpenAiRequest,
    slots: &mut RawSlots,
) -> Result<Vec<Value>, TranslateError> {
    let mut tools = vec![];
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            return Err(TranslateError::unsupported(format!("tools[{i}].type")));
        }
        let f =
            t.function.as_ref().ok_or_else(|| TranslateError::invalid(format!("tools[{i}].function"), "missing"))?;
        let raw_schema = raw
            .tools
            .as_ref()
            .and_then(|t| t.get(i))
            .and_then(|t| t.function.as_ref())
            .and_then(|f| f.parameters.as_deref());
        let schema = match (raw_schema, &f.parameters) {
            (Some(r), Some(p)) if p.is_object() => slots.slot(r.get(), p.clone()),
            (_, Some(p)) if p.is_object() => p.clone(),
            _ => json!({"type": "object", "properties": {}}),
        };
        tools.push(tool_spec(&f.name, f.description.as_deref(), schema));
    }
    Ok(tools)
}

fn tool_spec(name: &str, description: Option<&str>, schema: Value) -> Value {
    let mut spec = Map::new();
    spec.insert("name".into(), json!(name));
    if let Some(d) = description {
        spec.insert("description".into(), json!(d));
    }
    spec.insert("inputSchema".into(), json!({ "json": schema }));
    json!({ "toolSpec": Value::Object(spec) })
}

fn convert_tool_choice(tc: &Option<Value>) -> Result<Choice, TranslateError> {
    match tc {
        None | Some(Value::Null) => Ok(Choice::Unset),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Choice::Auto),
            "none" => Ok(Choice::None),
            "required" => Ok(Choice::Any),
            other => Err(TranslateError::invalid("tool_choice", format!("unknown value `{other}`"))),
        },
        Some(v @ Value::Object(_)) => {
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| TranslateError::invalid("tool_choice.function.name", "missing"))?;
            Ok(Choice::Tool(name.to_string()))
        }
        Some(_) => Err(TranslateError::invalid("tool_choice", "must be a string or an object")),
    }
}

/// The tool emulating `response_format`: (name, tool spec).
fn json_response_tool(
    req: &oa::ChatRequest,
    raw: &RawOpenAiRequest,
    slots: &mut RawSlots,
) -> Result<Option<(String, Value)>, TranslateError> {
    let Some(rf) = &req.response_format else {
        return Ok(None);
    };
    match rf.get("type").and_then(Value::as_str).unwrap_or("") {
        "text" | "" => Ok(None),
        "json_object" => Ok(Some((
            JSON_OBJECT_TOOL.to_string(),
            tool_spec(JSON_OBJECT_TOOL, Some("Respond with a JSON object."), json!({"type": "object"})),
        ))),
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
                .unwrap_or("Respond with a JSON object that matches this schema.");
            let raw_schema =
                raw.response_format.as_ref().and_then(|r| r.json_schema.as_ref()).and_then(|j| j.schema.as_deref());
            let schema = match (raw_schema, js.get("schema")) {
                (Some(r), Some(p)) if p.is_object() => slots.slot(r.get(), p.clone()),
                _ => json!({"type": "object"}),
            };
            Ok(Some((name.to_string(), tool_spec(name, Some(desc), schema))))
        }
        other => Err(TranslateError::invalid("response_format.type", format!("unknown value `{other}`"))),
    }
}

/// Combine the client's tools and choice, the JSON tool and the tool names
/// used in the history into a `toolConfig` (and the effective choice).
fn tool_config(
    mut tools: Vec<Value>,
    mut choice: Choice,
    forced: Option<(String, Value)>,
    history_tools: &BTreeSet<String>,
) -> (Option<Value>, Choice) {
    let user_tools = !tools.is_empty();
    if let Some((name, spec)) = forced {
        if user_tools && choice == Choice::None {
            // The client forbade its tools; only the JSON tool remains.
            tools.clear();
        }
        tools.push(spec);
        choice = match choice {
            Choice::Tool(named) if user_tools => Choice::Tool(named),
            Choice::Unset | Choice::Auto | Choice::Any if user_tools => Choice::Any,
            _ => Choice::Tool(name),
        };
    }
    if choice == Choice::None && history_tools.is_empty() {
        return (None, choice);
    }
    if tools.is_empty() {
        if history_tools.is_empty() {
            return (None, choice);
        }
        // Bedrock requires a toolConfig whenever the history holds tool blocks.
        tools = history_tools
            .iter()
            .map(|n| tool_spec(n, Some("A tool used earlier in this conversation."), json!({"type": "object"})))
            .collect();
    }
    let mut tc = Map::new();
    tc.insert("tools".into(), Value::Array(tools));
    if let Some(c) = choice.to_converse() {
        tc.insert("toolChoice".into(), c);
    }
    (Some(Value::Object(tc)), choice)
}

/// Names of the tools called in the converted history.
fn history_tool_names(messages: &[Value]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut has_result = false;
    for block in messages.iter().filter_map(|m| m["content"].as_array()).flatten() {
        if let Some(n) = block.pointer("/toolUse/name").and_then(Value::as_str) {
            names.insert(n.to_string());
        }
        has_result |= block.get("toolResult").is_some();
    }
    if has_result && names.is_empty() {
        // Tool results without the calls: any declared tool satisfies Bedrock.
        names.insert("tool".to_string());
    }
    names
}

// ---------------------------------------------------------------------------
// Messages

fn text_block(text: &str) -> Value {
    json!({ "text": text })
}

/// Push `block`, followed by a cache point when the OpenAI part asked for one.
fn push_part(out: &mut Vec<Value>, block: Value, part: &Value) {
    out.push(block);
    if part.get("cache_control").is_some_and(Value::is_object) {
        out.push(json!({"cachePoint": {"type": "default"}}));
    }
}

/// Text of a content part, or `Ok(None)` for an empty one.
fn part_text<'a>(p: &'a Value, key: &str, pf: &str) -> Result<Option<&'a str>, TranslateError> {
    let t =
        p.get(key).and_then(Value::as_str).ok_or_else(|| TranslateError::invalid(format!("{pf}.{key}"), "missing"))?;
    Ok(Some(t).filter(|t| !t.is_empty()))
}

/// Text blocks of a system/developer/tool message content.
fn text_blocks(content: &Option<Value>, field: &str) -> Result<Vec<Value>, TranslateError> {
    match content {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(if s.is_empty() { vec![] } else { vec![text_block(s)] }),
        Some(Value::Array(parts)) => {
            let mut out = vec![];
            for (j, p) in parts.iter().enumerate() {
                let pf = format!("{field}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = part_text(p, "text", &pf)? {
                            push_part(&mut out, text_block(t), p);
                        }
                    }
                    _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::invalid(field, "must be a string or an array")),
    }
}

/// Converse image format for an image media type.
fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type.to_ascii_lowercase().as_str() {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

fn image_block(p: &Value, pf: &str) -> Result<Value, TranslateError> {
    let url = match p.get("image_url") {
        Some(Value::String(s)) => s.as_str(),
        Some(v) => v.get("url").and_then(Value::as_str).unwrap_or(""),
        None => "",
    };
    if url.starts_with("https://") || url.starts_with("http://") {
        // Converse takes image bytes (or S3 locations); nothing is fetched here.
        return Err(TranslateError::unsupported(format!("{pf}.image_url")));
    }
    if !url.starts_with("data:") {
        return Err(TranslateError::invalid(format!("{pf}.image_url.url"), "must be an http(s) or data URL"));
    }
    let (media_type, data) = parse_data_url(url).ok_or_else(|| {
        TranslateError::invalid(format!("{pf}.image_url.url"), "data URL must be `data:<media type>;base64,<data>`")
    })?;
    let format = image_format(media_type).ok_or_else(|| TranslateError::unsupported(format!("{pf}.image_url")))?;
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// A PDF `file` part as a Converse document. Converse requires a name made
/// of letters, digits, single spaces, hyphens, parentheses and brackets; the
/// position keeps it unique within the request.
fn document_block(p: &Value, pf: &str, position: (usize, usize)) -> Result<Value, TranslateError> {
    let data = p.pointer("/file/file_data").and_then(Value::as_str);
    match data.and_then(parse_data_url) {
        Some(("application/pdf", d)) => Ok(json!({"document": {
            "format": "pdf",
            "name": format!("document-{}-{}", position.0, position.1),
            "source": {"bytes": d},
        }})),
        _ => Err(TranslateError::unsupported(format!("{pf}.file"))),
    }
}

fn user_blocks(content: &Option<Value>, i: usize) -> Result<Vec<Value>, TranslateError> {
    let field = format!("messages[{i}].content");
    let parts = match content {
        Some(Value::Array(parts)) => parts,
        other => return text_blocks(other, &field),
    };
    let mut out = vec![];
    for (j, p) in parts.iter().enumerate() {
        let pf = format!("{field}[{j}]");
        let block = match p.get("type").and_then(Value::as_str) {
            Some("text") => match part_text(p, "text", &pf)? {
                Some(t) => text_block(t),
                None => continue,
            },
            Some("image_url") => image_block(p, &pf)?,
            Some("file") => document_block(p, &pf, (i, j))?,
            _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
        };
        push_part(&mut out, block, p);
    }
    Ok(out)
}

fn tool_use_block(tc: &oa::ToolCall, i: usize, j: usize, slots: &mut RawSlots) -> Result<Value, TranslateError> {
    if tc.id.is_empty() {
        return Err(TranslateError::invalid(format!("messages[{i}].tool_calls[{j}].id"), "missing"));
    }
    let af = format!("messages[{i}].tool_calls[{j}].function.arguments");
    let input = match tool_call_arguments(&tc.function.arguments, &af)? {
        (parsed, Some(source)) => slots.slot(source, parsed),
        (parsed, None) => parsed,
    };
    Ok(json!({"toolUse": {"toolUseId": tc.id, "name": tc.function.name, "input": input}}))
}

fn assistant_blocks(m: &oa::ChatMessage, i: usize, slots: &mut RawSlots) -> Result<Vec<Value>, TranslateError> {
    let field = format!("messages[{i}].content");
    let mut out = match &m.content {
        Some(Value::Array(parts)) => {
            let mut v = vec![];
            for (j, p) in parts.iter().enumerate() {
                let pf = format!("{field}[{j}]");
                let key = match p.get("type").and_then(Value::as_str) {
                    Some("text") => "text",
                    Some("refusal") => "refusal",
                    _ => return Err(TranslateError::unsupported(format!("{pf}.type"))),
                };
                if let Some(t) = p.get(key).and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    push_part(&mut v, text_block(t), p);
                }
            }
            v
        }
        other => text_blocks(other, &field)?,
    };
    for (j, tc) in m.tool_calls.iter().flatten().enumerate() {
        out.push(tool_use_block(tc, i, j, slots)?);
    }
    Ok(out)
}

fn tool_result_block(m: &oa::ChatMessage, i: usize) -> Result<Value, TranslateError> {
    let id = m
        .tool_call_id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or_else(|| TranslateError::invalid(format!("messages[{i}].tool_call_id"), "missing"))?;
    let content = text_blocks(&m.content, &format!("messages[{i}].content"))?;
    // Cache points are content blocks, not tool-result content.
    let content: Vec<Value> = content.into_iter().filter(|b| b.get("text").is_some()).collect();
    Ok(json!({"toolResult": {"toolUseId": id, "content": content}}))
}

/// Convert messages: returns (system blocks, alternating Converse messages).
fn convert_messages(
    msgs: &[oa::ChatMessage],
    slots: &mut RawSlots,
) -> Result<(Vec<Value>, Vec<Value>), TranslateError> {
    let mut system: Vec<Value> = vec![];
    // (role, blocks) with consecutive same roles merged.
    let mut turns: Vec<(&'static str, Vec<Value>)> = vec![];
    for (i, m) in msgs.iter().enumerate() {
        let (role, blocks): (&'static str, Vec<Value>) = match m.role.as_str() {
            "system" | "developer" => {
                system.extend(text_blocks(&m.content, &format!("messages[{i}].content"))?);
                continue;
            }
            "user" => ("user", user_blocks(&m.content, i)?),
            "assistant" => ("assistant", assistant_blocks(m, i, slots)?),
            "tool" => ("user", vec![tool_result_block(m, i)?]),
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
    trim_prefill(&mut turns);
    match turns.first() {
        None => return Err(TranslateError::invalid("messages", "at least one non-system message is required")),
        Some((role, _)) if *role != "user" => {
            return Err(TranslateError::invalid(
                "messages",
                "the first non-system message must be a user message for this upstream (Bedrock Converse)",
            ))
        }
        _ => {}
    }
    let messages = turns.into_iter().map(|(role, blocks)| json!({"role": role, "content": blocks})).collect();
    Ok((system, messages))
}

/// Claude rejects a final assistant prefill ending in whitespace.
fn trim_prefill(turns: &mut Vec<(&'static str, Vec<Value>)>) {
    if let Some(("assistant", blocks)) = turns.last_mut() {
        if let Some(last) = blocks.last_mut() {
            if let Some(t) = last.get("text").and_then(Value::as_str) {
                let trimmed = t.trim_end().to_string();
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
}

// ---------------------------------------------------------------------------
// Responses

/// 64-bit FNV-1a: a small, stable hash for deterministic ids.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// OpenAI `finish_reason` for a Converse `stopReason`.
fn finish_reason(stop_reason: Option<&str>, real_tool_calls: bool) -> Value {
    let r = match stop_reason {
        None => return Value::Null,
        Some("end_turn" | "stop_sequence") => "stop",
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") if real_tool_calls => "tool_calls",
        Some("guardrail_intervened" | "content_filtered") => "content_filter",
        Some(_) => "stop",
    };
    Value::String(r.into())
}

/// The raw `input` of each content block of a Converse response, to return
/// tool arguments in the model's own key order.
#[derive(Deserialize, Default)]
struct RawConverseResponse {
    #[serde(default)]
    output: Option<RawOutput>,
}

#[derive(Deserialize, Default)]
struct RawOutput {
    #[serde(default)]
    message: Option<RawMessage>,
}

#[derive(Deserialize, Default)]
struct RawMessage {
    #[serde(default)]
    content: Option<Vec<RawContentBlock>>,
}

#[derive(Deserialize, Default)]
struct RawContentBlock {
    #[serde(default, rename = "toolUse")]
    tool_use: Option<RawToolUse>,
}

#[derive(Deserialize, Default)]
struct RawToolUse {
    #[serde(default)]
    input: Option<Box<RawValue>>,
}

impl RawConverseResponse {
    fn tool_inputs(self) -> Vec<Option<String>> {
        let blocks = self.output.and_then(|o| o.message).and_then(|m| m.content).unwrap_or_default();
        blocks.into_iter().map(|b| b.tool_use.and_then(|t| t.input).map(|r| r.get().to_string())).collect()
    }
}

/// Tool arguments: the model's text of the input when it is an object.
fn tool_arguments(raw: Option<&String>, parsed: &Value) -> String {
    match raw {
        Some(r) if r.trim_start().starts_with('{') => r.clone(),
        _ if parsed.is_object() => parsed.to_string(),
        _ => "{}".to_string(),
    }
}

/// Translate a Converse response into an OpenAI `chat.completion`. `model`
/// is the name reported to the client.
///
/// Reads `opts.created` and `opts.forced_json_tool`.
pub fn response(body: &[u8], model: &str, opts: &ResponseOptions) -> Result<Vec<u8>, TranslateError> {
    let v: Value = parse_json(body)?;
    if !v.is_object() {
        return Err(TranslateError::InvalidJson("a Converse response must be a JSON object".into()));
    }
    let raw_inputs = serde_json::from_slice::<RawConverseResponse>(body).unwrap_or_default().tool_inputs();
    let blocks = v.pointer("/output/message/content").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut tool_calls = vec![];
    for (k, block) in blocks.iter().enumerate() {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(t) = block.pointer("/reasoningContent/reasoningText/text").and_then(Value::as_str) {
            reasoning.push_str(t);
        } else if let Some(tu) = block.get("toolUse") {
            let name = tu.get("name").and_then(Value::as_str).unwrap_or("");
            let args = tool_arguments(raw_inputs.get(k).and_then(Option::as_ref), &tu["input"]);
            if opts.forced_json_tool.as_deref() == Some(name) {
                text.push_str(&args);
            } else {
                tool_calls.push(json!({
                    "id": tu.get("toolUseId").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": name, "arguments": args},
                }));
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
    let stop = v.get("stopReason").and_then(Value::as_str);
    let usage = usage_from_converse(&v).unwrap_or_default();
    let out = obj(vec![
        ("id", json!(format!("chatcmpl-{:016x}", fnv1a(&[body])))),
        ("object", json!("chat.completion")),
        ("created", json!(opts.created)),
        ("model", json!(model)),
        (
            "choices",
            json!([{
                "index": 0,
                "message": Value::Object(message),
                "logprobs": null,
                "finish_reason": finish_reason(stop, has_tools),
            }]),
        ),
        ("usage", usage.to_openai_json()),
    ]);
    Ok(to_bytes(&out))
}

// ---------------------------------------------------------------------------
// Errors

/// `error.code` when the upstream named no error type.
fn code_for_status(status: u16) -> String {
    openai_error_code(status).unwrap_or_else(|| openai_error_type(status)).to_string()
}

/// The error name in an `x-amzn-ErrorType` value or a body `__type`
/// (`ThrottlingException:http://…`, `com.amazon.coral#ValidationException`).
fn error_name(s: &str) -> Option<&str> {
    let s = s.split(':').next().unwrap_or("");
    let s = s.rsplit('#').next().unwrap_or("").trim();
    Some(s).filter(|s| !s.is_empty())
}

/// Translate a Bedrock error (HTTP status, the `x-amzn-ErrorType` header
/// value if any, body) into OpenAI's error shape. `error.code` is the
/// Bedrock error name (`ThrottlingException`, `ValidationException`, …), or
/// a code derived from the status when the upstream named none. Bodies that
/// are not `{"message": …}` keep their text as the message.
pub fn error(status: u16, error_type: Option<&str>, body: &[u8]) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
    let field = |key: &str| parsed.as_ref().and_then(|v| v.get(key)).and_then(Value::as_str);
    let code = error_type
        .and_then(error_name)
        .or_else(|| field("__type").and_then(error_name))
        .map(str::to_string)
        .unwrap_or_else(|| code_for_status(status));
    let message = field("message")
        .or_else(|| field("Message"))
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| fallback_message(status, body));
    to_bytes(&openai_error_value(status, &code, &message))
}

// ---------------------------------------------------------------------------
// Streams

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Tool(u64),
    ForcedJson,
}

/// ConverseStream events → OpenAI `chat.completion.chunk` SSE stream.
///
/// The caller decodes the binary event stream and hands over one event (or
/// exception) at a time. Reads `opts.created`, `opts.forced_json_tool` and
/// `opts.include_usage`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    opts: ResponseOptions,
    id: String,
    started: bool,
    blocks: HashMap<u64, Block>,
    tool_calls: u64,
    stopped: bool,
    metadata_seen: bool,
    usage: Option<Usage>,
    done: bool,
}

impl StreamTranslator {
    /// `model` is the name reported to the client. ConverseStream carries no
    /// id: chunks get `chatcmpl-` and a hash of `model` and `created` unless
    /// [`StreamTranslator::with_request_id`] gives a better one.
    pub fn new(model: &str, opts: &ResponseOptions) -> Self {
        let id = format!("chatcmpl-{:016x}", fnv1a(&[model.as_bytes(), &opts.created.to_be_bytes()]));
        StreamTranslator {
            model: model.to_string(),
            opts: opts.clone(),
            id,
            started: false,
            blocks: HashMap::new(),
            tool_calls: 0,
            stopped: false,
            metadata_seen: false,
            usage: None,
            done: false,
        }
    }

    /// Use the upstream's request id (e.g. the `x-amzn-RequestId` header) in
    /// the chunk id: `chatcmpl-<request_id>`.
    pub fn with_request_id(mut self, request_id: &str) -> Self {
        if !request_id.is_empty() {
            self.id = format!("chatcmpl-{request_id}");
        }
        self
    }

    /// Usage reported by the upstream's `metadata` event, once seen.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    /// True once the stream reached a terminal state (`[DONE]` or error).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One decoded upstream event: `name` is its `:event-type`
    /// (`messageStart`, `contentBlockDelta`, …), `payload` its JSON.
    fn handle(&mut self, name: &str, payload: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let p: Value = match serde_json::from_slice(payload) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("malformed upstream stream event `{name}`: {e}");
                self.fail(502, "malformed_stream_event", &msg, out);
                return;
            }
        };
        match name {
            "messageStart" => self.start(out),
            "contentBlockStart" => self.block_start(&p, out),
            "contentBlockDelta" => self.block_delta(&p, out),
            "messageStop" => {
                self.start(out);
                let fr = finish_reason(p.get("stopReason").and_then(Value::as_str), self.tool_calls > 0);
                self.chunk(json!({}), if fr.is_null() { json!("stop") } else { fr }, out);
                self.stopped = true;
                if self.metadata_seen {
                    self.complete(out);
                }
            }
            "metadata" => {
                self.metadata_seen = true;
                if let Some(u) = usage_from_converse(&p) {
                    self.usage = Some(u);
                }
                if self.stopped {
                    self.complete(out);
                }
            }
            // contentBlockStop and future event types carry nothing to relay.
            _ => {}
        }
    }

    /// The upstream ended. Before `messageStop` this is an error event (no
    /// `[DONE]`); after it, without a `metadata` event, the stream is
    /// completed here (with no usage chunk: the usage is unknown).
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.stopped {
            self.complete(out);
        } else {
            self.fail(502, "stream_incomplete", "upstream stream ended before messageStop", out);
        }
    }

    fn chunk(&self, delta: Value, finish: Value, out: &mut Vec<u8>) {
        write_openai_chunk(out, &self.id, self.opts.created, &self.model, delta, finish);
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

    fn block_start(&mut self, p: &Value, out: &mut Vec<u8>) {
        self.start(out);
        let index = p.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        let Some(tu) = p.pointer("/start/toolUse") else {
            return;
        };
        let name = tu.get("name").and_then(Value::as_str).unwrap_or("");
        if self.opts.forced_json_tool.as_deref() == Some(name) {
            self.blocks.insert(index, Block::ForcedJson);
            return;
        }
        let ordinal = self.tool_calls;
        self.tool_calls += 1;
        self.blocks.insert(index, Block::Tool(ordinal));
        self.chunk(
            json!({"tool_calls": [{
                "index": ordinal,
                "id": tu.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }]}),
            Value::Null,
            out,
        );
    }

    fn block_delta(&mut self, p: &Value, out: &mut Vec<u8>) {
        self.start(out);
        let index = p.get("contentBlockIndex").and_then(Value::as_u64).unwrap_or(0);
        let Some(d) = p.get("delta") else {
            return;
        };
        let nonempty = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(t) = nonempty(d.get("text")) {
            self.chunk(json!({ "content": t }), Value::Null, out);
        } else if let Some(input) = nonempty(d.pointer("/toolUse/input")) {
            match self.blocks.get(&index) {
                Some(Block::Tool(ordinal)) => self.chunk(
                    json!({"tool_calls": [{"index": ordinal, "function": {"arguments": input}}]}),
                    Value::Null,
                    out,
                ),
                Some(Block::ForcedJson) => self.chunk(json!({ "content": input }), Value::Null, out),
                None => {}
            }
        } else if let Some(t) = nonempty(d.pointer("/reasoningContent/text")) {
            self.chunk(json!({ "reasoning_content": t }), Value::Null, out);
        }
    }

    /// Usage chunk (when asked for and known), then `[DONE]`.
    fn complete(&mut self, out: &mut Vec<u8>) {
        if self.opts.include_usage {
            if let Some(u) = &self.usage {
                let c = obj(vec![
                    ("id", json!(self.id)),
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

    fn req(v: Value) -> Result<RequestTranslation, TranslateError> {
        request(&serde_json::to_vec(&v).unwrap(), &RequestOptions::default())
    }

    fn body(t: &RequestTranslation) -> Value {
        serde_json::from_slice(&t.body).unwrap()
    }

    #[test]
    fn usage_input_tokens_exclude_cache_and_prompt_tokens_include_it() {
        let u = usage_from_converse(&json!({"usage": {
            "inputTokens": 12, "outputTokens": 5, "totalTokens": 1917,
            "cacheReadInputTokens": 1800, "cacheWriteInputTokens": 100
        }}))
        .unwrap();
        assert_eq!(u.input_tokens, 12);
        assert_eq!(u.prompt_tokens(), 1912);
        assert_eq!(u.to_openai_json()["prompt_tokens_details"]["cached_tokens"], 1800);
        assert_eq!(usage_from_converse(&json!({"metrics": {}})), None);
    }

    #[test]
    fn error_code_comes_from_the_header_then_the_body_then_the_status() {
        let e: Value = serde_json::from_slice(&error(
            429,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            br#"{"message":"Too many requests"}"#,
        ))
        .unwrap();
        assert_eq!(e["error"]["code"], "ThrottlingException");
        assert_eq!(e["error"]["type"], "requests");
        let e: Value =
            serde_json::from_slice(&error(400, None, br#"{"__type":"com.amazon#ValidationException","message":"x"}"#))
                .unwrap();
        assert_eq!(e["error"]["code"], "ValidationException");
        let e: Value = serde_json::from_slice(&error(502, None, b"<html>bad gateway</html>")).unwrap();
        assert_eq!(e["error"]["code"], "server_error");
        assert_eq!(e["error"]["message"], "<html>bad gateway</html>");
    }

    #[test]
    fn response_id_is_deterministic_and_depends_on_the_body() {
        let a = br#"{"output":{"message":{"role":"assistant","content":[{"text":"a"}]}},"stopReason":"end_turn"}"#;
        let b = br#"{"output":{"message":{"role":"assistant","content":[{"text":"b"}]}},"stopReason":"end_turn"}"#;
        let id = |body: &[u8]| -> Value {
            serde_json::from_slice::<Value>(&response(body, "m", &ResponseOptions::default()).unwrap()).unwrap()["id"]
                .clone()
        };
        assert_eq!(id(a), id(a));
        assert_ne!(id(a), id(b));
        assert!(id(a).as_str().unwrap().starts_with("chatcmpl-"));
    }

    #[test]
    fn tool_choice_none_keeps_tools_only_when_history_has_tool_blocks() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
        let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "tools": tools, "tool_choice": "none"}))
            .unwrap();
        assert!(body(&t).get("toolConfig").is_none());
        let t = req(json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"}
        ], "tools": tools, "tool_choice": "none"}))
        .unwrap();
        let b = body(&t);
        assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["name"], "f");
        assert!(b["toolConfig"].get("toolChoice").is_none());
    }

    #[test]
    fn history_tool_blocks_without_tools_declare_the_used_tools() {
        let t = req(json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"}
        ]}))
        .unwrap();
        let b = body(&t);
        assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["name"], "lookup");
        assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"], json!({"type": "object"}));
    }

    #[test]
    fn conversation_must_start_with_a_user_message() {
        let e = req(json!({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "x"}]}))
            .unwrap_err();
        assert_eq!(e.field(), Some("messages"));
        let e = req(json!({"messages": [{"role": "system", "content": "s"}]})).unwrap_err();
        assert_eq!(e.field(), Some("messages"));
    }

    #[test]
    fn thinking_without_max_tokens_leaves_room_above_the_budget() {
        let t = req(json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low", "top_p": 0.5}))
            .unwrap();
        let b = body(&t);
        assert_eq!(b["inferenceConfig"]["maxTokens"], 1024 + 4096);
        assert!(b["inferenceConfig"].get("topP").is_none());
        assert!(t.dropped.contains(&"top_p".to_string()));
    }

    #[test]
    fn cache_control_on_a_part_adds_a_cache_point_after_it() {
        let t = req(json!({"messages": [
            {"role": "system", "content": [{"type": "text", "text": "long", "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "hi"}
        ]}))
        .unwrap();
        assert_eq!(body(&t)["system"], json!([{"text": "long"}, {"cachePoint": {"type": "default"}}]));
    }

    #[test]
    fn body_has_no_model_or_stream_and_dropped_fields_are_listed() {
        let t = req(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
            "stream_options": {"include_usage": true}, "user": "u", "seed": 1, "metadata": {"a": "b"},
            "parallel_tool_calls": false}))
        .unwrap();
        let b = body(&t);
        assert!(b.get("model").is_none() && b.get("stream").is_none());
        assert!(t.stream && t.include_usage);
        let mut dropped = t.dropped.clone();
        dropped.sort();
        assert_eq!(dropped, ["metadata", "parallel_tool_calls", "seed", "stream_options", "user"]);
        assert!(t.response_options(5).include_usage);
    }

    #[test]
    fn tool_arguments_and_schemas_keep_the_clients_key_order() {
        let t = req(json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                "function": {"name": "f", "arguments": "{\"z\": 1, \"a\": 2}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "ok"}
        ]}))
        .unwrap();
        let text = String::from_utf8(t.body).unwrap();
        assert!(text.contains(r#""input":{"z": 1, "a": 2}"#), "{text}");
    }
}
