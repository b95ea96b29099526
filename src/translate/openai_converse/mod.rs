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
    self, parse_data_url, reject_unsupported, thinking_budget, tool_call_arguments, JsonTool,
};
use super::raw::{RawOpenAiRequest, RawSlots};
use super::{
    fallback_message, obj, openai_error_code, openai_error_type, openai_error_value, parse_json, to_bytes,
    usage_from_converse, write_openai_chunk, write_openai_usage_chunk, RequestOptions, ResponseOptions, TranslateError,
    Usage,
};
use crate::schema::openai as oa;
use crate::sse::write_event;

mod messages;
mod response;
mod stream;
#[cfg(test)]
mod tests;

use messages::*;
pub use response::*;
pub use stream::*;

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
    Ok(openai_anthropic::json_response_tool(req, raw, slots)?.map(|JsonTool { name, description, schema }| {
        let spec = tool_spec(&name, Some(&description), schema);
        (name, spec)
    }))
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
