//! `"schema": "mock"`: a built-in, deterministic, OpenAI-shaped provider. It needs no network and no
//! key, so the shipped `config.json` works on a fresh machine; it streams with realistic spacing.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Built, Outgoing, Provider};
use crate::api::{Api, Endpoint};
use crate::config::{err, BackendConfig, ConfigError};

/// The keys of a `mock` backend besides the shared ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Pause between streamed chunks.
    #[serde(default = "default_delay_ms")]
    mock_chunk_delay_ms: u64,
    /// As for `openai`: ask for stream usage and hide the extra chunk (the mock honours the field).
    #[serde(default = "yes")]
    stream_usage: bool,
}

fn default_delay_ms() -> u64 {
    25
}

fn yes() -> bool {
    true
}

/// The in-process provider.
#[derive(Debug)]
pub struct Mock {
    /// Pause before every streamed chunk but the first.
    pub chunk_delay: Duration,
    stream_usage: bool,
}

pub fn build(cfg: &BackendConfig, path: &str) -> Result<Built, ConfigError> {
    let options: Options = cfg.provider_options(path)?;
    if cfg.auth.is_some() || cfg.base_url.is_some() {
        return Err(err(path, "a mock backend takes no \"auth\" or \"base_url\""));
    }
    Ok(Built {
        provider: Box::new(Mock {
            chunk_delay: Duration::from_millis(options.mock_chunk_delay_ms),
            stream_usage: options.stream_usage,
        }),
        base_url: "mock://".to_string(),
    })
}

impl Provider for Mock {
    fn schema(&self) -> &'static str {
        "mock"
    }

    fn api(&self) -> Api {
        Api::OpenAi
    }

    fn path(&self, endpoint: Endpoint, _model: &str, _stream: bool) -> Option<Cow<'static, str>> {
        (endpoint.client_api() == Api::OpenAi).then(|| Cow::Borrowed(endpoint.path()))
    }

    fn owns_header(&self, _name: &str) -> bool {
        false
    }

    fn secrets(&self) -> Vec<Cow<'_, str>> {
        Vec::new()
    }

    fn authorize(&self, _: &Outgoing, _: u64, _: &mut Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn stream_usage(&self) -> bool {
        self.stream_usage
    }

    fn mock(&self) -> Option<&Mock> {
        Some(self)
    }
}

/// What the mock answers: a whole JSON body, or SSE events to be spaced by the backend's delay.
pub struct MockReply {
    pub status: u16,
    pub content_type: &'static str,
    pub content: MockContent,
}

/// The body of a [`MockReply`].
pub enum MockContent {
    /// One JSON body, written at once.
    Whole(Vec<u8>),
    /// SSE events, each rendered when it is read: a slow stream holds its words, not its events.
    Events(MockEvents),
}

impl MockContent {
    /// The next piece to write, or `None` at the end.
    fn next_piece(&mut self) -> Option<Vec<u8>> {
        match self {
            MockContent::Whole(body) if body.is_empty() => None,
            MockContent::Whole(body) => Some(std::mem::take(body)),
            MockContent::Events(events) => events.next(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            MockContent::Whole(body) => body.is_empty(),
            MockContent::Events(events) => events.step == Step::End,
        }
    }
}

/// The events of a streamed mock reply, in order: the assistant role (chat only), one event per word,
/// the finish reason, the usage (when asked for), `[DONE]`.
pub struct MockEvents {
    chat: bool,
    id: String,
    created: u64,
    model: String,
    /// The reply, cut to the words it sends; words are split at spaces, each after the first keeping
    /// its leading space.
    text: String,
    /// Where the next word starts in `text`.
    at: usize,
    finish: &'static str,
    include_usage: bool,
    usage: Value,
    step: Step,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Role,
    Words,
    Finish,
    Usage,
    Done,
    End,
}

impl MockEvents {
    fn chunk(&self, delta: Value, finish: Value) -> Value {
        let mut c = if self.chat {
            json!({"id": format!("chatcmpl-{}", self.id), "object": "chat.completion.chunk", "created": self.created,
                   "model": self.model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        } else {
            json!({"id": format!("cmpl-{}", self.id), "object": "text_completion", "created": self.created,
                   "model": self.model,
                   "choices": [{"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")),
                                "logprobs": null, "finish_reason": finish}]})
        };
        if self.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    /// The next word of the reply, if any is left.
    fn next_word(&mut self) -> Option<&str> {
        if self.at >= self.text.len() {
            return None;
        }
        let from = self.at;
        let end = self.text[from + 1..].find(' ').map_or(self.text.len(), |i| from + 1 + i);
        self.at = end;
        Some(&self.text[from..end])
    }
}

impl Iterator for MockEvents {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let event = loop {
            match self.step {
                Step::Role => {
                    self.step = Step::Words;
                    if self.chat {
                        break self.chunk(json!({"role": "assistant", "content": ""}), Value::Null);
                    }
                }
                Step::Words => match self.next_word().map(str::to_string) {
                    Some(word) => break self.chunk(json!({"content": word}), Value::Null),
                    None => self.step = Step::Finish,
                },
                Step::Finish => {
                    self.step = if self.include_usage { Step::Usage } else { Step::Done };
                    break self.chunk(json!({}), json!(self.finish));
                }
                Step::Usage => {
                    self.step = Step::Done;
                    let mut last = self.chunk(json!({}), Value::Null);
                    last["choices"] = json!([]);
                    last["usage"] = self.usage.take();
                    break last;
                }
                Step::Done => {
                    self.step = Step::End;
                    return Some(b"data: [DONE]\n\n".to_vec());
                }
                Step::End => return None,
            }
        };
        Some(format!("data: {event}\n\n").into_bytes())
    }
}

/// Answers an OpenAI-shaped `body` for `endpoint` as an OpenAI server would, reporting `model`.
/// Pure: the caller paces the events.
pub fn respond(endpoint: Endpoint, body: &Value, model: &str) -> MockReply {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let id = format!("mock-{:016x}", fnv1a(body.to_string().as_bytes()));
    let created = crate::clock::unix_secs();
    let prompt_tokens = estimate_tokens(&prompt_text(endpoint, body));
    let json_reply = |value: Value| MockReply {
        status: 200,
        content_type: "application/json",
        content: MockContent::Whole(value.to_string().into_bytes()),
    };
    let chat = match endpoint {
        Endpoint::Embeddings => return json_reply(embeddings(body, model, prompt_tokens)),
        Endpoint::ChatCompletions => true,
        Endpoint::Completions => false,
        Endpoint::Messages | Endpoint::CountTokens | Endpoint::Responses | Endpoint::ResponsesInputTokens => {
            let error = json!({"error": {"message": "the mock backend speaks the OpenAI schema only",
                                         "type": "invalid_request_error", "code": "unsupported_endpoint"}});
            return MockReply { status: 400, ..json_reply(error) };
        }
    };
    let text = reply_text(&prompt_text(endpoint, body));
    let words = text.split(' ').count();
    let max = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let cut = (words as u64).min(max) as usize;
    let finish = if cut < words { "length" } else { "stop" };
    // The reply up to its `cut`th word.
    let text = match cut.checked_sub(1).map(|last| text.match_indices(' ').nth(last)) {
        None => String::new(),
        Some(Some((end, _))) => text[..end].to_string(),
        Some(None) => text,
    };
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": cut,
        "total_tokens": prompt_tokens + cut as u64,
    });
    if !stream {
        return json_reply(if chat {
            json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": created, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                                "logprobs": null, "finish_reason": finish}],
                   "usage": usage, "system_fingerprint": "switchyard-mock"})
        } else {
            json!({"id": format!("cmpl-{id}"), "object": "text_completion", "created": created, "model": model,
                   "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
                   "usage": usage})
        });
    }
    let include_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let events = MockEvents {
        chat,
        id,
        created,
        model: model.to_string(),
        text,
        at: 0,
        finish,
        include_usage,
        usage,
        step: Step::Role,
    };
    MockReply { status: 200, content_type: "text/event-stream", content: MockContent::Events(events) }
}

/// A mock reply as a body to read, pausing `delay` before every piece but the first (the coroutine
/// sleeps; the worker thread does not).
pub struct MockBody {
    content: MockContent,
    delay: Duration,
    /// The piece being read and how much of it was read.
    current: Option<(Vec<u8>, usize)>,
    started: bool,
}

impl MockBody {
    pub fn new(content: MockContent, delay: Duration) -> MockBody {
        MockBody { content, delay, current: None, started: false }
    }
}

impl crate::upstream::ResponseBody for MockBody {
    fn buffered(&self) -> bool {
        self.current.is_some() || (self.delay.is_zero() || !self.started) && !self.content.is_empty()
    }

    fn finished(&self) -> bool {
        self.current.is_none() && self.content.is_empty()
    }
}

impl std::io::Read for MockBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.current.is_none() {
            if self.content.is_empty() {
                return Ok(0);
            }
            if self.started && !self.delay.is_zero() {
                crate::affinity::sleep(self.delay);
            }
            let Some(next) = self.content.next_piece() else {
                return Ok(0);
            };
            self.started = true;
            self.current = Some((next, 0));
        }
        let (piece, at) = self.current.as_mut().expect("set above");
        let n = (piece.len() - *at).min(buf.len());
        buf[..n].copy_from_slice(&piece[*at..*at + n]);
        *at += n;
        if *at == piece.len() {
            self.current = None;
        }
        Ok(n)
    }
}

/// The text the reply is made from: the last user message, the prompt, or the input.
fn prompt_text(endpoint: Endpoint, body: &Value) -> String {
    let flatten = |v: &Value| -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .filter_map(|i| {
                    i.as_str().map(str::to_string).or_else(|| i.get("text").and_then(Value::as_str).map(str::to_string))
                })
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        }
    };
    match endpoint {
        Endpoint::ChatCompletions => body
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|m| m.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")))
            .and_then(|m| m.get("content"))
            .map(flatten)
            .unwrap_or_default(),
        Endpoint::Completions => body.get("prompt").map(flatten).unwrap_or_default(),
        Endpoint::Embeddings => body.get("input").map(flatten).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The reply: its words are the pieces a stream sends (each counts as one token).
fn reply_text(prompt: &str) -> String {
    let echo: String = prompt.split_whitespace().take(12).collect::<Vec<_>>().join(" ");
    if echo.is_empty() {
        "Hello from the Switchyard mock backend!".to_string()
    } else {
        format!("Hello from the Switchyard mock backend! You said: {echo}")
    }
}

fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4).max(1)
}

fn embeddings(body: &Value, model: &str, prompt_tokens: u64) -> Value {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::Array(items)) => items.iter().map(Value::to_string).collect(),
        Some(v) => vec![v.to_string()],
        None => Vec::new(),
    };
    let dims = body.get("dimensions").and_then(Value::as_u64).unwrap_or(16).clamp(1, 4096) as usize;
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut seed = fnv1a(text.as_bytes()) | 1;
            let mut v: Vec<f32> = (0..dims)
                .map(|_| {
                    seed = crate::router::xorshift(seed);
                    (seed % 2001) as f32 / 1000.0 - 1.0
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::EPSILON);
            v.iter_mut().for_each(|x| *x /= norm);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(crate::base64::encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model,
           "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_is_deterministic_and_echoes_the_prompt() {
        assert_eq!(reply_text("hi there"), reply_text("hi there"));
        assert!(reply_text("hi there").ends_with("You said: hi there"));
    }

    fn streamed(body: Value) -> Vec<Value> {
        let reply = respond(Endpoint::ChatCompletions, &body, "m");
        let MockContent::Events(events) = reply.content else { panic!("a stream was asked for") };
        let all: Vec<Vec<u8>> = events.collect();
        assert_eq!(all.last().map(Vec::as_slice), Some(&b"data: [DONE]\n\n"[..]));
        all[..all.len() - 1]
            .iter()
            .map(|e| {
                let text = std::str::from_utf8(e).unwrap();
                serde_json::from_str(text.strip_prefix("data: ").unwrap().strip_suffix("\n\n").unwrap()).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_stream_sends_the_role_each_word_the_finish_and_the_usage() {
        let body = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "hi there"}]});
        let events = streamed(body);
        assert_eq!(events[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        let words: Vec<&str> =
            events.iter().filter_map(|e| e["choices"].get(0)?["delta"]["content"].as_str()).skip(1).collect();
        assert_eq!(words.concat(), reply_text("hi there"));
        assert!(words[1..].iter().all(|w| w.starts_with(' ')), "{words:?}");
        let n = events.len();
        assert_eq!(events[n - 2]["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[n - 1]["choices"], json!([]));
        assert_eq!(events[n - 1]["usage"]["completion_tokens"], words.len());
        assert!(events[..n - 1].iter().all(|e| e["usage"].is_null()));
    }

    #[test]
    fn max_tokens_cuts_a_stream_and_a_whole_reply_alike() {
        let body = json!({"model": "m", "stream": true, "max_tokens": 3,
                          "messages": [{"role": "user", "content": "hi there"}]});
        let events = streamed(body.clone());
        let words: Vec<&str> =
            events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).skip(1).collect();
        assert_eq!(words, ["Hello", " from", " the"]);
        assert_eq!(events.last().unwrap()["choices"][0]["finish_reason"], "length");
        let mut whole = body;
        whole["stream"] = json!(false);
        let MockContent::Whole(bytes) = respond(Endpoint::ChatCompletions, &whole, "m").content else {
            panic!("no stream was asked for")
        };
        let reply: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(reply["choices"][0]["message"]["content"], "Hello from the");
        assert_eq!(reply["usage"]["completion_tokens"], 3);
        let none = streamed(json!({"model": "m", "stream": true, "max_tokens": 0, "messages": []}));
        assert_eq!(none.len(), 2, "the role and the finish: {none:?}");
    }
}
