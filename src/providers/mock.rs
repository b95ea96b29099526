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

    fn path(&self, endpoint: Endpoint, _model: &str, _stream: bool) -> Option<String> {
        (endpoint.client_api() == Api::OpenAi).then(|| endpoint.path().to_string())
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
    /// One element per write: the whole body, or one SSE event each.
    pub chunks: Vec<Vec<u8>>,
}

/// Answers an OpenAI-shaped `body` for `endpoint` as an OpenAI server would, reporting `model`.
/// Pure: the caller paces the chunks.
pub fn respond(endpoint: Endpoint, body: &Value, model: &str) -> MockReply {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let id = format!("mock-{:016x}", fnv1a(body.to_string().as_bytes()));
    let created = crate::clock::unix_secs();
    let prompt_tokens = estimate_tokens(&prompt_text(endpoint, body));
    let json_reply = |value: Value| MockReply {
        status: 200,
        content_type: "application/json",
        chunks: vec![value.to_string().into_bytes()],
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
    let words = reply_words(&prompt_text(endpoint, body));
    let max = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    let cut = (words.len() as u64).min(max) as usize;
    let finish = if cut < words.len() { "length" } else { "stop" };
    let words = &words[..cut];
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": words.len(),
        "total_tokens": prompt_tokens + words.len() as u64,
    });
    if !stream {
        let text = words.concat();
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
    let chunk = |delta: Value, finish: Value| -> Value {
        let mut c = if chat {
            json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
        } else {
            json!({"id": format!("cmpl-{id}"), "object": "text_completion", "created": created, "model": model,
                   "choices": [{"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")),
                                "logprobs": null, "finish_reason": finish}]})
        };
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut events = Vec::with_capacity(words.len() + 3);
    if chat {
        events.push(chunk(json!({"role": "assistant", "content": ""}), Value::Null));
    }
    for w in words {
        events.push(chunk(json!({"content": w}), Value::Null));
    }
    events.push(chunk(json!({}), json!(finish)));
    if include_usage {
        let mut last = chunk(json!({}), Value::Null);
        last["choices"] = json!([]);
        last["usage"] = usage;
        events.push(last);
    }
    let mut chunks: Vec<Vec<u8>> = events.iter().map(|e| format!("data: {e}\n\n").into_bytes()).collect();
    chunks.push(b"data: [DONE]\n\n".to_vec());
    MockReply { status: 200, content_type: "text/event-stream", chunks }
}

/// A mock reply as a body to read, pausing `delay` before every chunk but the first (the coroutine
/// sleeps; the worker thread does not).
pub struct MockBody {
    chunks: std::collections::VecDeque<Vec<u8>>,
    delay: Duration,
    /// The chunk being read and how much of it was read.
    current: Option<(Vec<u8>, usize)>,
    started: bool,
}

impl MockBody {
    pub fn new(chunks: Vec<Vec<u8>>, delay: Duration) -> MockBody {
        MockBody { chunks: chunks.into(), delay, current: None, started: false }
    }
}

impl crate::upstream::ResponseBody for MockBody {
    fn buffered(&self) -> bool {
        self.current.is_some() || (self.delay.is_zero() || !self.started) && !self.chunks.is_empty()
    }

    fn finished(&self) -> bool {
        self.current.is_none() && self.chunks.is_empty()
    }
}

impl std::io::Read for MockBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.current.is_none() {
            let Some(next) = self.chunks.pop_front() else {
                return Ok(0);
            };
            if self.started && !self.delay.is_zero() {
                may::coroutine::sleep(self.delay);
            }
            self.started = true;
            self.current = Some((next, 0));
        }
        let (chunk, at) = self.current.as_mut().expect("set above");
        let n = (chunk.len() - *at).min(buf.len());
        buf[..n].copy_from_slice(&chunk[*at..*at + n]);
        *at += n;
        if *at == chunk.len() {
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

/// The reply, split into the pieces a stream sends (each piece counts as one token).
fn reply_words(prompt: &str) -> Vec<String> {
    let echo: String = prompt.split_whitespace().take(12).collect::<Vec<_>>().join(" ");
    let text = if echo.is_empty() {
        "Hello from the Switchyard mock backend!".to_string()
    } else {
        format!("Hello from the Switchyard mock backend! You said: {echo}")
    };
    let mut words = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        words.push(if i == 0 { w.to_string() } else { format!(" {w}") });
    }
    words
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
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
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
        assert_eq!(reply_words("hi there"), reply_words("hi there"));
        assert!(reply_words("hi there").concat().ends_with("You said: hi there"));
    }
}
