//! `"schema": "mock"`: a built-in, deterministic, OpenAI-shaped provider. It needs no network and no
//! key, so the shipped `config.json` works on a fresh machine; it streams with realistic spacing.

use std::time::Duration;

use serde_json::{json, Value};

use super::Endpoint;
use crate::server::Responder;

/// Answers `endpoint` for `body` as an OpenAI server would, reporting `model`.
pub fn serve(
    endpoint: Endpoint,
    body: &Value,
    model: &str,
    delay: Duration,
    headers: &[(&str, &str)],
    resp: &mut Responder,
) {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let id = format!("mock-{:016x}", fnv1a(body.to_string().as_bytes()));
    let created = unix_now();
    let prompt_tokens = estimate_tokens(&prompt_text(endpoint, body));
    match endpoint {
        Endpoint::Embeddings => {
            let out = embeddings(body, model, prompt_tokens);
            send_json(resp, headers, &out);
        }
        Endpoint::ChatCompletions | Endpoint::Completions => {
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
            let chat = endpoint == Endpoint::ChatCompletions;
            if !stream {
                let text = words.concat();
                let out = if chat {
                    json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion", "created": created, "model": model,
                           "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                                        "logprobs": null, "finish_reason": finish}],
                           "usage": usage, "system_fingerprint": "switchyard-mock"})
                } else {
                    json!({"id": format!("cmpl-{id}"), "object": "text_completion", "created": created, "model": model,
                           "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
                           "usage": usage})
                };
                send_json(resp, headers, &out);
                return;
            }
            let include_usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let mut sse_headers: Vec<(&str, &str)> = vec![
                ("content-type", "text/event-stream"),
                ("cache-control", "no-cache"),
            ];
            sse_headers.extend_from_slice(headers);
            if resp.start(200, &sse_headers).is_err() {
                return;
            }
            let chunk = |delta: Value, finish: Value, usage_null: bool| -> Value {
                let mut c = if chat {
                    json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
                } else {
                    json!({"id": format!("cmpl-{id}"), "object": "text_completion", "created": created, "model": model,
                           "choices": [{"index": 0, "text": delta.get("content").cloned().unwrap_or(json!("")),
                                        "logprobs": null, "finish_reason": finish}]})
                };
                if usage_null {
                    c["usage"] = Value::Null;
                }
                c
            };
            let mut events = Vec::with_capacity(words.len() + 3);
            if chat {
                events.push(chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                    include_usage,
                ));
            }
            for w in words {
                events.push(chunk(json!({"content": w}), Value::Null, include_usage));
            }
            events.push(chunk(json!({}), json!(finish), include_usage));
            if include_usage {
                let mut last = chunk(json!({}), Value::Null, false);
                last["choices"] = json!([]);
                last["usage"] = usage;
                events.push(last);
            }
            for (i, event) in events.iter().enumerate() {
                if i > 0 {
                    may::coroutine::sleep(delay);
                }
                let mut data = b"data: ".to_vec();
                data.extend_from_slice(event.to_string().as_bytes());
                data.extend_from_slice(b"\n\n");
                if resp.chunk(&data).is_err() {
                    return;
                }
            }
            if resp.chunk(b"data: [DONE]\n\n").is_ok() {
                let _ = resp.finish();
            }
        }
    }
}

fn send_json(resp: &mut Responder, headers: &[(&str, &str)], value: &Value) {
    let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let _ = resp.send(200, &all, value.to_string().as_bytes());
}

/// The text the reply is made from: the last user message, the prompt, or the input.
fn prompt_text(endpoint: Endpoint, body: &Value) -> String {
    let flatten = |v: &Value| -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .filter_map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .or_else(|| i.get("text").and_then(Value::as_str).map(str::to_string))
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
            .and_then(|m| {
                m.iter()
                    .rev()
                    .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            })
            .and_then(|m| m.get("content"))
            .map(flatten)
            .unwrap_or_default(),
        Endpoint::Completions => body.get("prompt").map(flatten).unwrap_or_default(),
        Endpoint::Embeddings => body.get("input").map(flatten).unwrap_or_default(),
    }
}

/// The reply, split into the pieces a stream sends (each piece counts as one token).
fn reply_words(prompt: &str) -> Vec<String> {
    let echo: String = prompt
        .split_whitespace()
        .take(12)
        .collect::<Vec<_>>()
        .join(" ");
    let text = if echo.is_empty() {
        "Hello from the Switchyard mock backend!".to_string()
    } else {
        format!("Hello from the Switchyard mock backend! You said: {echo}")
    };
    let mut words = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        words.push(if i == 0 {
            w.to_string()
        } else {
            format!(" {w}")
        });
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
    let dims = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(16)
        .clamp(1, 4096) as usize;
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
            let norm = v
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::EPSILON);
            v.iter_mut().for_each(|x| *x /= norm);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64_encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    json!({"object": "list", "data": data, "model": model,
           "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}})
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn reply_is_deterministic_and_echoes_the_prompt() {
        assert_eq!(reply_words("hi there"), reply_words("hi there"));
        assert!(reply_words("hi there")
            .concat()
            .ends_with("You said: hi there"));
    }
}
