//! Translators, one file per (client API, upstream API) pair, named `<client>_<upstream>`, and the
//! helpers they share. [`Pair`] is the one place a pair is chosen; each pair offers the same four
//! operations: request, response, error and a stream translator (see [`crate::stream`]).
//!
//! * [`openai_anthropic`] — an OpenAI client talking to an Anthropic upstream.
//! * [`anthropic_openai`] — an Anthropic client talking to an OpenAI upstream.
//! * [`openai_converse`] — an OpenAI client talking to an AWS Bedrock Converse upstream.
//! * [`anthropic_converse`] — an Anthropic client talking to an AWS Bedrock Converse upstream.
//! * [`openai_gemini`] — an OpenAI client talking to Google Gemini (Gemini API or Vertex AI): chat and
//!   embeddings.
//! * [`anthropic_gemini`] — an Anthropic client talking to Google Gemini: messages and token counts.
//! * [`responses_openai`] — an OpenAI Responses client talking to an OpenAI Chat Completions upstream,
//!   and, composed with the OpenAI client's pair for another family ([`Pair::ResponsesVia`]), to every
//!   upstream an OpenAI client can reach: one Responses translator, not one per family.
//!
//! Every function here is pure: no clock reads, no randomness, no IO. Ids in
//! translated output are derived from upstream ids, and `created` is injected
//! through [`ResponseOptions`].

pub mod anthropic_converse;
pub mod anthropic_gemini;
pub mod anthropic_openai;
mod gemini;
pub mod openai_anthropic;
pub mod openai_converse;
pub mod openai_gemini;
mod raw;
pub mod responses_openai;
mod usage;

pub use usage::{
    usage_from_anthropic, usage_from_converse, usage_from_gemini, usage_from_openai, usage_from_responses, Field,
    Fields, RawObject, Usage, UsageObject,
};

use std::fmt;

use serde_json::{json, Map, Value};

use crate::api::{Api, Endpoint};
use crate::stream::{Composed, StreamTranslate};

/// A (client API, upstream API) pair that needs translating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    OpenAiAnthropic,
    AnthropicOpenAi,
    OpenAiConverse,
    AnthropicConverse,
    OpenAiGemini,
    AnthropicGemini,
    /// A Responses client on an OpenAI Chat Completions upstream.
    ResponsesOpenAi,
    /// A Responses client on an upstream of another family, through Chat Completions: `responses_openai`
    /// composed with the OpenAI client's pair for that family (requests Responses → Chat → upstream,
    /// responses and streams back the same way).
    ResponsesVia(Api),
}

/// A request in the upstream's API, and what its response translation needs to know.
#[derive(Debug)]
pub struct TranslatedRequest {
    pub body: Vec<u8>,
    /// Client fields dropped on purpose (logged at debug level).
    pub dropped: Vec<String>,
    pub response: ResponseOptions,
}

impl Pair {
    /// The translator from `client`'s API to `upstream`'s; `None` when they are the same API or when
    /// no translator exists.
    pub fn between(client: Api, upstream: Api) -> Option<Pair> {
        match (client, upstream) {
            (Api::OpenAi, Api::Anthropic) => Some(Pair::OpenAiAnthropic),
            (Api::Anthropic, Api::OpenAi) => Some(Pair::AnthropicOpenAi),
            (Api::OpenAi, Api::Converse) => Some(Pair::OpenAiConverse),
            (Api::Anthropic, Api::Converse) => Some(Pair::AnthropicConverse),
            (Api::OpenAi, Api::Gemini) => Some(Pair::OpenAiGemini),
            (Api::Anthropic, Api::Gemini) => Some(Pair::AnthropicGemini),
            (Api::Responses, Api::OpenAi) => Some(Pair::ResponsesOpenAi),
            (Api::Responses, upstream) if upstream != Api::Responses => {
                Pair::between(Api::OpenAi, upstream).map(|_| Pair::ResponsesVia(upstream))
            }
            _ => None,
        }
    }

    /// For a composed pair, the OpenAI client's pair it goes through.
    fn via(upstream: Api) -> Result<Pair, TranslateError> {
        Pair::between(Api::OpenAi, upstream)
            .ok_or_else(|| TranslateError::invalid("model", "no translation to this backend's API"))
    }

    /// The client's request body in the upstream's API. `endpoint` is the operation the client called
    /// (chats and messages translate alike; embeddings and token counts have their own bodies where
    /// the pair supports them). `created` goes into OpenAI `created` fields.
    pub fn request(
        self,
        endpoint: Endpoint,
        body: &[u8],
        opts: &RequestOptions,
        created: u64,
    ) -> Result<TranslatedRequest, TranslateError> {
        Ok(match (self, endpoint) {
            (Pair::OpenAiGemini, Endpoint::Embeddings) => {
                let t = openai_gemini::embeddings_request(body, opts)?;
                let response = ResponseOptions { created, embeddings_base64: t.base64, ..ResponseOptions::default() };
                TranslatedRequest { body: t.body, dropped: t.dropped, response }
            }
            (Pair::AnthropicGemini, Endpoint::CountTokens) => {
                let t = anthropic_gemini::count_tokens_request(body, opts)?;
                let response = ResponseOptions { created, ..ResponseOptions::default() };
                TranslatedRequest { body: t.body, dropped: t.dropped, response }
            }
            (_, Endpoint::Embeddings | Endpoint::Completions) => {
                return Err(TranslateError::unsupported(endpoint.path().trim_start_matches('/')))
            }
            _ => self.chat_request(body, opts, created)?,
        })
    }

    /// A chat (Anthropic: messages) request in the upstream's API.
    fn chat_request(
        self,
        body: &[u8],
        opts: &RequestOptions,
        created: u64,
    ) -> Result<TranslatedRequest, TranslateError> {
        Ok(match self {
            Pair::OpenAiAnthropic => {
                let t = openai_anthropic::request_full(body, opts)?;
                let response = t.response_options(created);
                TranslatedRequest { body: t.body, dropped: t.dropped, response }
            }
            Pair::AnthropicOpenAi => {
                let t = anthropic_openai::request_full(body, opts)?;
                let response = ResponseOptions { created, ..ResponseOptions::default() };
                TranslatedRequest { body: t.body, dropped: t.dropped, response }
            }
            Pair::OpenAiConverse => {
                let t = openai_converse::request(body, opts)?;
                let response = t.response_options(created);
                TranslatedRequest { body: t.body, dropped: t.dropped, response }
            }
            Pair::AnthropicConverse => {
                let t = anthropic_converse::request(body, opts)?;
                let response = ResponseOptions { created, ..ResponseOptions::default() };
                TranslatedRequest { body: t.body, dropped: t.dropped, response }
            }
            Pair::OpenAiGemini => {
                let t = openai_gemini::request(body, opts)?;
                let response = t.response_options(created);
                TranslatedRequest { body: t.body, dropped: t.dropped, response }
            }
            Pair::AnthropicGemini => {
                let t = anthropic_gemini::request(body, opts)?;
                let response = ResponseOptions { created, ..ResponseOptions::default() };
                TranslatedRequest { body: t.body, dropped: t.dropped, response }
            }
            Pair::ResponsesOpenAi => {
                let t = responses_openai::request(body, opts)?;
                let response = t.response_options(created);
                TranslatedRequest { body: t.body, dropped: t.dropped, response }
            }
            Pair::ResponsesVia(upstream) => {
                let chat = responses_openai::request(body, opts)?;
                // The chat body already carries the upstream model name.
                let inner_opts = RequestOptions { model: None, ..opts.clone() };
                let inner =
                    Pair::via(upstream)?.request(Endpoint::ChatCompletions, &chat.body, &inner_opts, created)?;
                let mut dropped = chat.dropped;
                dropped.extend(inner.dropped);
                let response = ResponseOptions { responses: Some(chat.echo), ..inner.response };
                TranslatedRequest { body: inner.body, dropped, response }
            }
        })
    }

    /// A successful upstream response body in the client's API. `endpoint` is the operation the client
    /// called, `model` the model it asked for. [`TranslateError::Refused`] means the upstream answered
    /// but refused the request (a blocked prompt): the client gets that error with its status.
    pub fn response(
        self,
        endpoint: Endpoint,
        body: &[u8],
        model: &str,
        opts: &ResponseOptions,
    ) -> Result<Vec<u8>, TranslateError> {
        match (self, endpoint) {
            (Pair::OpenAiGemini, Endpoint::Embeddings) => openai_gemini::embeddings_response(body, model, opts),
            (Pair::OpenAiAnthropic, _) => openai_anthropic::response(body, model, opts),
            (Pair::AnthropicOpenAi, _) => anthropic_openai::response(body, model, opts),
            (Pair::OpenAiConverse, _) => openai_converse::response(body, model, opts),
            (Pair::AnthropicConverse, _) => anthropic_converse::response(body, model, opts),
            (Pair::OpenAiGemini, _) => openai_gemini::response(body, model, opts),
            (Pair::AnthropicGemini, _) => anthropic_gemini::response(body, model, opts),
            (Pair::ResponsesOpenAi, _) => responses_openai::response(body, model, opts),
            (Pair::ResponsesVia(upstream), _) => {
                let chat = Pair::via(upstream)?.response(Endpoint::ChatCompletions, body, model, opts)?;
                responses_openai::response(&chat, model, opts)
            }
        }
    }

    /// Whether a stream of this pair can turn out to be a refusal before any content (Gemini answers a
    /// blocked prompt with a stream holding only `promptFeedback`): the relay then holds the response
    /// head until the first client bytes, so that a refusal is still answered with its own status.
    pub fn stream_may_refuse(self) -> bool {
        matches!(self, Pair::OpenAiGemini | Pair::AnthropicGemini)
    }

    /// An upstream error body (any content) with its status, in the client's error shape.
    /// `error_type` is the upstream's error type header where it has one (Bedrock's `x-amzn-ErrorType`).
    pub fn error(self, status: u16, error_type: Option<&str>, body: &[u8]) -> Vec<u8> {
        match self {
            Pair::OpenAiAnthropic => openai_anthropic::error(status, body),
            Pair::AnthropicOpenAi => anthropic_openai::error(status, body),
            Pair::OpenAiConverse => openai_converse::error(status, error_type, body),
            Pair::AnthropicConverse => anthropic_converse::error(status, error_type, body),
            Pair::OpenAiGemini => openai_gemini::error(status, body),
            Pair::AnthropicGemini => anthropic_gemini::error(status, body),
            Pair::ResponsesOpenAi => responses_openai::error(status, body),
            Pair::ResponsesVia(upstream) => match Pair::via(upstream) {
                Ok(inner) => responses_openai::error(status, &inner.error(status, error_type, body)),
                Err(_) => responses_openai::error(status, body),
            },
        }
    }

    /// A stream translator for one response.
    pub fn stream(self, model: &str, opts: &ResponseOptions) -> Box<dyn StreamTranslate> {
        match self {
            Pair::OpenAiAnthropic => Box::new(openai_anthropic::StreamTranslator::new(model, opts.created, opts)),
            Pair::AnthropicOpenAi => Box::new(anthropic_openai::StreamTranslator::new(model, opts.created, opts)),
            Pair::OpenAiConverse => Box::new(openai_converse::StreamTranslator::new(model, opts)),
            Pair::AnthropicConverse => Box::new(anthropic_converse::StreamTranslator::new(model, opts)),
            Pair::OpenAiGemini => Box::new(openai_gemini::StreamTranslator::new(model, opts)),
            Pair::AnthropicGemini => Box::new(anthropic_gemini::StreamTranslator::new(model, opts)),
            Pair::ResponsesOpenAi => Box::new(responses_openai::StreamTranslator::new(model, opts)),
            Pair::ResponsesVia(upstream) => {
                let last = Box::new(responses_openai::StreamTranslator::new(model, opts));
                match Pair::via(upstream) {
                    Ok(inner) => Box::new(Composed::new(inner.stream(model, opts), last)),
                    Err(_) => last,
                }
            }
        }
    }
}

/// Why a request could not be translated (the gateway answers with HTTP 400, naming the field where
/// there is one), or why a response cannot be relayed as an answer ([`TranslateError::Refused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// The body is not JSON or does not have the expected shape.
    InvalidJson(String),
    /// A field has a value that is not valid for the client's API.
    Invalid { field: String, message: String },
    /// A valid field whose meaning the upstream API cannot express, and
    /// whose silent dropping would change the result.
    Unsupported { field: String },
    /// The upstream answered but refused the request (Gemini's `promptFeedback.blockReason`: a prompt
    /// blocked by its safety filters). The client gets an error with this status and `code` in its
    /// own shape.
    Refused { status: u16, code: String, message: String },
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::InvalidJson(m) => write!(f, "invalid JSON body: {m}"),
            TranslateError::Invalid { field, message } => {
                write!(f, "invalid value for `{field}`: {message}")
            }
            TranslateError::Unsupported { field } => {
                write!(f, "`{field}` is not supported when this model is served by the upstream provider")
            }
            TranslateError::Refused { message, .. } => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for TranslateError {}

impl TranslateError {
    /// The field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            TranslateError::InvalidJson(_) | TranslateError::Refused { .. } => None,
            TranslateError::Invalid { field, .. } | TranslateError::Unsupported { field } => Some(field),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        TranslateError::Invalid { field: field.into(), message: message.into() }
    }

    pub(crate) fn unsupported(field: impl Into<String>) -> Self {
        TranslateError::Unsupported { field: field.into() }
    }
}

/// Options for request translation (both directions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestOptions {
    /// Upstream model name; `None` keeps the client's `model`.
    pub model: Option<String>,
    /// `max_tokens` to send when the client gave none (Anthropic requires
    /// one).
    pub default_max_tokens: u32,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions { model: None, default_max_tokens: 4096 }
    }
}

/// Options for response and stream translation (both directions; each
/// direction documents which fields it reads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseOptions {
    /// Unix time to put in OpenAI `created` fields (injected: translators
    /// never read the clock).
    pub created: u64,
    /// Name of the tool that emulates `response_format: json_schema` /
    /// `json_object`; its `tool_use` input is returned as message content.
    pub forced_json_tool: Option<String>,
    /// The OpenAI client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// The OpenAI client asked for embeddings with `encoding_format: "base64"`.
    pub embeddings_base64: bool,
    /// For Responses clients: the request fields the response object repeats.
    pub responses: Option<responses_openai::Echo>,
}

/// The value at `path` (object keys) under `v`: `Value::pointer` without parsing a pointer string,
/// and allocating for each of its tokens, on every call (usage is read from every response).
pub fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

/// Anthropic `error.type` for an HTTP status.
pub fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// HTTP status for an Anthropic `error.type` (used for in-stream `error`
/// events, which carry no status).
pub fn status_from_anthropic_error_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// OpenAI `error.type` for an HTTP status, using the strings the OpenAI API
/// itself sends: client errors (including 401/403/404) are
/// `invalid_request_error`, 429 is `requests` (OpenAI's rate-limit type;
/// the precise reason goes in `code`), 5xx is `server_error`.
pub fn openai_error_type(status: u16) -> &'static str {
    match status {
        429 => "requests",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// OpenAI `error.code` for an HTTP status, where OpenAI has a stable one.
pub fn openai_error_code(status: u16) -> Option<&'static str> {
    match status {
        401 => Some("invalid_api_key"),
        404 => Some("model_not_found"),
        429 => Some("rate_limit_exceeded"),
        503 | 529 => Some("overloaded"),
        _ => None,
    }
}

pub(crate) fn parse_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, TranslateError> {
    serde_json::from_slice(body).map_err(|e| TranslateError::InvalidJson(e.to_string()))
}

/// Anthropic request fields that no upstream API here can carry: a 400 naming the field, not a drop.
const ANTHROPIC_REJECTED_FIELDS: &[&str] = &["mcp_servers", "container"];

/// An Anthropic Messages request as every translator from it starts: the typed request and its
/// order-sensitive fragments (schemas, tool inputs: carried verbatim, in the client's key order), once
/// the fields no upstream carries are refused.
pub(crate) fn anthropic_request(
    body: &[u8],
) -> Result<(crate::schema::anthropic::MessagesRequest, raw::RawAnthropicRequest), TranslateError> {
    let req: crate::schema::anthropic::MessagesRequest = parse_json(body)?;
    let raw: raw::RawAnthropicRequest = serde_json::from_slice(body).unwrap_or_default();
    if let Some(f) = ANTHROPIC_REJECTED_FIELDS.iter().find(|f| req.rest.get(**f).is_some_and(|v| !v.is_null())) {
        return Err(TranslateError::unsupported(*f));
    }
    Ok((req, raw))
}

/// An OpenAI `{"error":{…}}` object, as a body or a stream's error event.
pub(crate) fn openai_error_value(status: u16, code: &str, message: &str) -> Value {
    json!({"error": {
        "message": message,
        "type": openai_error_type(status),
        "param": null,
        "code": code,
    }})
}

/// Writes the OpenAI `chat.completion.chunk` that carries a stream's usage: no choices, `usage` (sent
/// when the client asked for `stream_options.include_usage`).
pub(crate) fn write_openai_usage_chunk(out: &mut Vec<u8>, id: &str, created: u64, model: &str, usage: &Usage) {
    let c = obj(vec![
        ("id", json!(id)),
        ("object", json!("chat.completion.chunk")),
        ("created", json!(created)),
        ("model", json!(model)),
        ("choices", json!([])),
        ("usage", usage.to_openai_json()),
    ]);
    crate::sse::write_event(out, None, &to_bytes(&c));
}

/// Writes one OpenAI `chat.completion.chunk` event with a single choice.
pub(crate) fn write_openai_chunk(out: &mut Vec<u8>, id: &str, created: u64, model: &str, delta: Value, finish: Value) {
    let c = obj(vec![
        ("id", json!(id)),
        ("object", json!("chat.completion.chunk")),
        ("created", json!(created)),
        ("model", json!(model)),
        ("choices", json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])),
    ]);
    crate::sse::write_event(out, None, &to_bytes(&c));
}

/// An Anthropic error object, as a body or a stream's `error` event.
pub(crate) fn anthropic_error_value(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Writes an Anthropic stream event: its SSE `event:` name is its `type`.
pub(crate) fn write_anthropic_event(out: &mut Vec<u8>, v: &Value) {
    let kind = v["type"].as_str().unwrap_or("");
    crate::sse::write_event(out, Some(kind), &to_bytes(v));
}

/// An Anthropic stream's `message_start`: an empty assistant message `id` from `model`, with `usage` (an
/// Anthropic usage object; each pair knows how much of it the upstream has told by then).
pub(crate) fn write_anthropic_message_start(out: &mut Vec<u8>, id: &str, model: &str, usage: Value) {
    write_anthropic_event(
        out,
        &json!({"type": "message_start", "message": {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": usage,
        }}),
    );
}

/// An OpenAI chat completion's assistant `message`: `content` (null when there is no text), `refusal`
/// null, and `reasoning_content` and `tool_calls` when there are any.
pub(crate) fn openai_assistant_message(text: String, reasoning: String, tool_calls: Vec<Value>) -> Value {
    let mut message = Map::new();
    message.insert("role".into(), Value::String("assistant".into()));
    message.insert("content".into(), if text.is_empty() { Value::Null } else { Value::String(text) });
    message.insert("refusal".into(), Value::Null);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), Value::String(reasoning));
    }
    if !tool_calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    Value::Object(message)
}

pub(crate) fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// Text of an error body we could not parse: lossy UTF-8, trimmed and
/// bounded so that an HTML error page does not flood the client.
pub(crate) fn fallback_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return format!("upstream returned HTTP {status}");
    }
    let mut end = text.len().min(512);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

pub(crate) fn obj(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_anthropic_translator_refuses_what_no_upstream_carries() {
        let opts = RequestOptions::default();
        let messages = r#""model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]"#;
        type Translate = fn(&[u8], &RequestOptions) -> Result<(), TranslateError>;
        let translators: [(&str, Translate); 3] = [
            ("openai", |b, o| anthropic_openai::request_full(b, o).map(drop)),
            ("converse", |b, o| anthropic_converse::request(b, o).map(drop)),
            ("gemini", |b, o| anthropic_gemini::request(b, o).map(drop)),
        ];
        for (name, translate) in translators {
            for field in ["mcp_servers", "container"] {
                let body = format!(r#"{{{messages},"{field}":[{{"type":"url"}}]}}"#);
                let refused = translate(body.as_bytes(), &opts);
                assert_eq!(refused, Err(TranslateError::unsupported(field)), "{name}: {field}");
                let null = format!(r#"{{{messages},"{field}":null}}"#);
                assert!(translate(null.as_bytes(), &opts).is_ok(), "{name}: {field} null");
            }
        }
    }

    #[test]
    fn error_type_mappings_round_trip_for_anthropic() {
        for s in [400u16, 401, 402, 403, 404, 413, 429, 500, 504, 529] {
            assert_eq!(status_from_anthropic_error_type(anthropic_error_type(s)), s);
        }
        assert_eq!(anthropic_error_type(502), "api_error");
        assert_eq!(status_from_anthropic_error_type("something_new"), 500);
        assert_eq!(openai_error_type(400), "invalid_request_error");
        assert_eq!(openai_error_type(429), "requests");
        assert_eq!(openai_error_type(529), "server_error");
    }

    #[test]
    fn error_display_names_the_field() {
        let e = TranslateError::unsupported("n");
        assert!(e.to_string().contains("`n`"));
        assert_eq!(e.field(), Some("n"));
    }
}
