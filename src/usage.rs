//! Token usage from upstream responses, streamed or not, without IO.
//!
//! For streams, [`StreamUsage`] looks at each decoded upstream event (see [`crate::stream`]): it reads
//! usage where the family puts it (OpenAI's usage chunk; Anthropic's `message_start` and cumulative
//! `message_delta`; Converse's `metadata`; Gemini's cumulative `usageMetadata` in every chunk), counts content events so a stream that ends without usage
//! can be estimated rather than counted as zero, and marks the usage-only chunk the gateway asked for
//! on the client's behalf so that it can be removed.

use memchr::memmem::Finder;
use serde_json::Value;

use crate::api::Api;
use crate::stream::Event;
use crate::translate::{
    at, usage_from_anthropic, usage_from_converse, usage_from_gemini, usage_from_openai, usage_from_responses, Usage,
    UsageObject,
};

/// Usage in a complete (non-streamed) response body. Only `usage` is materialised; the rest of the
/// body is skipped without building a tree.
pub fn from_body(api: Api, body: &[u8]) -> Option<Usage> {
    facts_from_body(api, body, false).usage
}

/// What a complete response body says about itself, for metrics and traces.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BodyFacts {
    pub usage: Option<Usage>,
    /// The model the upstream says answered (`model`; Converse has none).
    pub model: Option<String>,
    /// `choices[].finish_reason`, `stop_reason` or `stopReason`, when asked for.
    pub finish_reasons: Vec<String>,
}

/// Reads [`BodyFacts`] without building a tree (`json::top_level_values`, `json::last_top_level_value`):
/// the counts in `usage` are read from its bytes ([`UsageObject`]), and the strings `model`,
/// `stop_reason`/`stopReason` and each `choices[].finish_reason` are parsed. Fields of an unexpected
/// type are ignored rather than failing the whole read. The finish reasons (only traces report them)
/// are read when `finish_reasons` asks: otherwise `choices` is skipped, not walked member by member.
pub fn facts_from_body(api: Api, body: &[u8], finish_reasons: bool) -> BodyFacts {
    if api == Api::Gemini {
        return BodyFacts { usage: gemini_body(body), ..BodyFacts::default() };
    }
    let text = crate::json::string_value;
    let usage_and_model = |usage: Option<std::ops::Range<usize>>, model: Option<std::ops::Range<usize>>| {
        let usage = usage.map(|r| UsageObject(&body[r])).and_then(|usage| match api {
            Api::Anthropic => usage_from_anthropic(usage),
            Api::Converse => usage_from_converse(usage),
            // Images, audio and Responses-like OpenAI APIs count `input_tokens` / `output_tokens`.
            Api::OpenAi => usage_from_openai(usage).or_else(|| usage_from_responses(usage)),
            Api::Responses => usage_from_responses(usage),
            Api::Gemini => None,
        });
        (usage, model.and_then(|r| text(&body[r])))
    };
    if !finish_reasons {
        // Usage is found from the end, where the APIs put it after the content, and `model` by a walk
        // that stops at it (it comes before the content; Converse has none). A body where usage is not
        // found so is walked whole.
        let (usage, model) = match crate::json::last_top_level_value(body, b"\"usage\"") {
            Some(usage) if api == Api::Converse => (Some(usage), None),
            Some(usage) => (Some(usage), crate::json::top_level_value(body, "model")),
            None => crate::json::top_level_values(body, ["usage", "model"]).into(),
        };
        let (usage, model) = usage_and_model(usage, model);
        return BodyFacts { usage, model, finish_reasons: Vec::new() };
    }
    // `choices` is read in the walk that finds the top-level keys: each choice's `finish_reason` on the way.
    let ([usage, model, _choices, stop_reason, stop_reason_converse], finish_reason_values) =
        crate::json::top_level_values_and_element_values(
            body,
            ["usage", "model", "choices", "stop_reason", "stopReason"],
            2,
            "finish_reason",
        );
    let (usage, model) = usage_and_model(usage, model);
    let mut finish_reasons: Vec<String> = finish_reason_values.into_iter().filter_map(|r| text(&body[r])).collect();
    finish_reasons.extend([stop_reason, stop_reason_converse].into_iter().flatten().filter_map(|r| text(&body[r])));
    BodyFacts { usage, model, finish_reasons }
}

/// The string value of the first `"key":"…"` in `data` (`key` with its quotes), when it has no
/// escapes: a byte scan, for fields read from every streamed event.
fn string_field<'d>(data: &'d [u8], key: &Finder<'static>) -> Option<&'d str> {
    let key_len = key.needle().len();
    let mut from = 0;
    while let Some(at) = key.find(&data[from..]) {
        let rest = &data[from + at + key_len..];
        let mut i = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        if rest[i] == b':' {
            i += 1 + rest[i + 1..].iter().position(|b| !b.is_ascii_whitespace())?;
            if rest[i] == b'"' {
                let value = &rest[i + 1..];
                let end = value.iter().position(|b| *b == b'"' || *b == b'\\')?;
                return (value[end] == b'"').then(|| std::str::from_utf8(&value[..end]).ok()).flatten();
            }
        }
        from += at + key_len;
    }
    None
}

/// A key searched for in every event, its searcher built once (building one costs more than a search).
type Key = std::sync::LazyLock<Finder<'static>>;
static MODEL_KEY: Key = Key::new(|| Finder::new(b"\"model\""));
static FINISH_REASON_KEY: Key = Key::new(|| Finder::new(b"\"finish_reason\""));
static STOP_REASON_KEY: Key = Key::new(|| Finder::new(b"\"stopReason\""));

/// Usage in a Gemini answer: `usageMetadata` (generateContent, countTokens); for embeddings, Vertex's
/// `predict` token counts (`predictions[].embeddings.statistics.token_count`), and zero for the
/// Gemini API's `batchEmbedContents`, which reports none (rather than an estimate from the size of
/// the vectors).
fn gemini_body(body: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        usage_metadata: Option<Value>,
        predictions: Option<Vec<Prediction>>,
        embeddings: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Prediction {
        embeddings: Option<PredictionEmbeddings>,
    }
    #[derive(serde::Deserialize)]
    struct PredictionEmbeddings {
        statistics: Option<Statistics>,
    }
    #[derive(serde::Deserialize)]
    struct Statistics {
        token_count: Option<f64>,
    }
    let answer = serde_json::from_slice::<Answer>(body).ok()?;
    if let Some(u) = answer.usage_metadata.as_ref().and_then(usage_from_gemini) {
        return Some(u);
    }
    if let Some(predictions) = answer.predictions {
        let tokens = predictions
            .iter()
            .filter_map(|p| p.embeddings.as_ref()?.statistics.as_ref()?.token_count)
            .map(|n| n as u64)
            .sum();
        return Some(Usage { input_tokens: tokens, ..Usage::default() });
    }
    answer.embeddings.map(|_| Usage::default())
}

/// What an event was, for the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Content (about one output token).
    Content,
    /// Usage, framing or control.
    Other,
    /// The usage-only chunk the gateway asked for and the client did not: not relayed.
    StrippedUsage,
}

/// Reads usage from an upstream stream, event by event.
#[derive(Debug)]
pub struct StreamUsage {
    api: Api,
    /// Mark OpenAI's usage-only chunk for removal (the client did not ask for it; the gateway did).
    strip_usage_chunk: bool,
    usage: Option<Usage>,
    content_events: u64,
    /// The model the upstream says answered (read from the first event that names it).
    model: Option<String>,
    /// Collect finish reasons (for traces; it costs a scan of every OpenAI event).
    want_finish_reasons: bool,
    finish_reasons: Vec<String>,
}

/// Finish reasons kept per stream at most (one per choice).
const MAX_FINISH_REASONS: usize = 8;

impl StreamUsage {
    pub fn new(api: Api, strip_usage_chunk: bool) -> StreamUsage {
        StreamUsage {
            api,
            strip_usage_chunk,
            usage: None,
            content_events: 0,
            model: None,
            want_finish_reasons: false,
            finish_reasons: Vec::new(),
        }
    }

    /// Also collect finish reasons from now on.
    pub fn collect_finish_reasons(&mut self) {
        self.want_finish_reasons = true;
    }

    /// The model the upstream named, if it did.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The finish reasons seen (when collected).
    pub fn finish_reasons(&self) -> &[String] {
        &self.finish_reasons
    }

    fn add_finish_reason(&mut self, reason: &str) {
        if self.finish_reasons.len() < MAX_FINISH_REASONS {
            self.finish_reasons.push(reason.to_string());
        }
    }

    /// The usage the stream reported, if it did.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Content-bearing events seen: about one output token each (for streams that report no usage).
    pub fn content_events(&self) -> u64 {
        self.content_events
    }

    /// Updates usage and counts from one event.
    pub fn observe(&mut self, event: &Event) -> EventKind {
        let kind = self.classify(event);
        if kind == EventKind::Content {
            self.content_events += 1;
        }
        kind
    }

    fn classify(&mut self, event: &Event) -> EventKind {
        let data = &event.data[..];
        if data.is_empty() || data == b"[DONE]" {
            return EventKind::Other;
        }
        if self.api == Api::OpenAi {
            if self.model.is_none() {
                self.model = string_field(data, &MODEL_KEY).map(str::to_string);
            }
            if self.want_finish_reasons {
                if let Some(reason) = string_field(data, &FINISH_REASON_KEY) {
                    let reason = reason.to_string();
                    self.add_finish_reason(&reason);
                }
            }
        }
        match self.api {
            Api::Converse => {
                if event.name == Some("messageStop") && self.want_finish_reasons {
                    if let Some(reason) = string_field(data, &STOP_REASON_KEY) {
                        let reason = reason.to_string();
                        self.add_finish_reason(&reason);
                    }
                }
                if event.name != Some("metadata") {
                    return if event.name == Some("contentBlockDelta") { EventKind::Content } else { EventKind::Other };
                }
                if let Some(u) = serde_json::from_slice::<Value>(data)
                    .ok()
                    .and_then(|v| v.get("usage").and_then(usage_from_converse))
                {
                    self.usage = Some(u);
                }
                EventKind::Other
            }
            Api::Gemini => {
                // Every chunk may carry `usageMetadata`, cumulative: the latest replaces the last.
                #[derive(serde::Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct Chunk {
                    usage_metadata: Option<Value>,
                    candidates: Option<serde::de::IgnoredAny>,
                }
                let Ok(chunk) = serde_json::from_slice::<Chunk>(data) else { return EventKind::Other };
                if let Some(u) = chunk.usage_metadata.as_ref().and_then(usage_from_gemini) {
                    self.usage = Some(u);
                }
                if chunk.candidates.is_some() {
                    EventKind::Content
                } else {
                    EventKind::Other
                }
            }
            Api::Responses => {
                // `event:` names the type (OpenAI sends it); without one, the data's `type` is looked for.
                let name = event.name.map(str::as_bytes).or_else(|| responses_event_type(data));
                match name {
                    Some(b"response.completed" | b"response.incomplete" | b"response.failed") => {
                        if let Some(u) = serde_json::from_slice::<Value>(data).ok().and_then(|v| {
                            at(&v, &["response", "usage"]).filter(|u| u.is_object()).and_then(usage_from_responses)
                        }) {
                            self.usage = Some(u);
                        }
                        EventKind::Other
                    }
                    Some(n) if n.ends_with(b".delta") => EventKind::Content,
                    _ => EventKind::Other,
                }
            }
            // Only an event with a usage *object* is parsed (OpenAI puts `"usage":null` in every chunk
            // once usage is requested).
            _ if !has_usage_object(data) => EventKind::Content,
            Api::OpenAi => {
                let Ok(v) = serde_json::from_slice::<Value>(data) else { return EventKind::Content };
                let usage_only = v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty);
                if let Some(u) = v.get("usage").filter(|u| u.is_object()).and_then(usage_from_openai) {
                    self.usage = Some(u);
                }
                match usage_only {
                    true if self.strip_usage_chunk => EventKind::StrippedUsage,
                    true => EventKind::Other,
                    false => EventKind::Content,
                }
            }
            Api::Anthropic => {
                let Ok(v) = serde_json::from_slice::<Value>(data) else { return EventKind::Content };
                match v.get("type").and_then(Value::as_str) {
                    Some("message_start") => {
                        if let Some(u) = at(&v, &["message", "usage"]).and_then(usage_from_anthropic) {
                            self.usage = Some(u);
                        }
                        if let Some(m) = at(&v, &["message", "model"]).and_then(Value::as_str) {
                            self.model = Some(m.to_string());
                        }
                    }
                    Some("message_delta") => {
                        // Cumulative: fields present replace what message_start said.
                        if let Some(u) = v.get("usage") {
                            self.usage.get_or_insert_with(Usage::default).merge_anthropic(u);
                        }
                        if self.want_finish_reasons {
                            if let Some(r) = at(&v, &["delta", "stop_reason"]).and_then(Value::as_str) {
                                self.add_finish_reason(r);
                            }
                        }
                    }
                    _ => return EventKind::Content,
                }
                EventKind::Other
            }
        }
    }
}

/// The `"type"` of a Responses event, when it is the data's first key (as OpenAI writes them).
fn responses_event_type(data: &[u8]) -> Option<&[u8]> {
    let rest = data.trim_ascii_start().strip_prefix(b"{")?.trim_ascii_start().strip_prefix(b"\"type\"")?;
    let rest = rest.trim_ascii_start().strip_prefix(b":")?.trim_ascii_start().strip_prefix(b"\"")?;
    let end = rest.iter().position(|b| *b == b'"')?;
    Some(&rest[..end])
}

/// Whether `"usage"` appears followed by `:` and an object (not `null`). Asked of every streamed
/// OpenAI event, so the searcher is built once, not per call as `memmem::find_iter` would.
fn has_usage_object(data: &[u8]) -> bool {
    static USAGE_KEY: Key = Key::new(|| Finder::new(b"\"usage\""));
    // `find` in a loop: `find_iter` copies the searcher (~30 instructions, every event).
    let mut from = 0;
    while let Some(at) = USAGE_KEY.find(&data[from..]) {
        from += at + USAGE_KEY.needle().len();
        let mut value = data[from..].iter().skip_while(|b| b.is_ascii_whitespace());
        if value.next() == Some(&b':') && value.find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests;
