//! OpenAI chat completion chunks → Anthropic message stream events.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text(u64),
    Tool(u64),
}

/// OpenAI `chat.completion.chunk` SSE stream → Anthropic Messages SSE
/// stream.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    started: bool,
    next_index: u64,
    open: Option<Open>,
    tool_blocks: HashMap<u64, u64>,
    finish_reason: Option<String>,
    delta_sent: bool,
    usage: Option<Usage>,
    id: String,
    done: bool,
}

impl StreamTranslator {
    /// `model` is the name reported to the client; `created` and `opts`
    /// are accepted for symmetry with the other direction and not read.
    pub fn new(model: &str, _created: u64, _opts: &ResponseOptions) -> Self {
        StreamTranslator {
            model: model.to_string(),
            started: false,
            next_index: 0,
            open: None,
            tool_blocks: HashMap::new(),
            finish_reason: None,
            delta_sent: false,
            usage: None,
            id: "msg_unknown".to_string(),
            done: false,
        }
    }

    /// The upstream byte stream ended.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.done {
            return;
        }
        if self.finish_reason.is_some() {
            self.complete(out);
        } else {
            self.fail("api_error", "upstream stream ended before finish_reason", out);
        }
    }

    /// Usage seen so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    /// True once the stream reached a terminal state.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        self.done = true;
        write_anthropic_event(out, &anthropic_error_value(kind, message));
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = json!({"input_tokens": 0, "output_tokens": 0});
        write_anthropic_message_start(out, &self.id, &self.model, usage);
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        if let Some(o) = self.open.take() {
            let index = match o {
                Open::Text(i) | Open::Tool(i) => i,
            };
            write_anthropic_event(out, &json!({"type": "content_block_stop", "index": index}));
        }
    }

    fn text(&mut self, t: &str, out: &mut Vec<u8>) {
        if t.is_empty() {
            return;
        }
        let index = match self.open {
            Some(Open::Text(i)) => i,
            _ => {
                self.close_open(out);
                let i = self.next_index;
                self.next_index += 1;
                self.open = Some(Open::Text(i));
                write_anthropic_event(
                    out,
                    &json!({"type": "content_block_start", "index": i,
                            "content_block": {"type": "text", "text": ""}}),
                );
                i
            }
        };
        write_anthropic_event(
            out,
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": t}}),
        );
    }

    fn tool_call(&mut self, tc: &oa::ChunkToolCall, out: &mut Vec<u8>) {
        let args = tc.function.as_ref().and_then(|f| f.arguments.as_deref()).unwrap_or("");
        let index = match self.tool_blocks.get(&tc.index) {
            // Arguments for a call that is already known. OpenAI never
            // interleaves calls; if a server does, the fragment still goes
            // to the call's own block index.
            Some(&i) => i,
            None => {
                self.close_open(out);
                let i = self.next_index;
                self.next_index += 1;
                self.tool_blocks.insert(tc.index, i);
                self.open = Some(Open::Tool(i));
                let id = tc.id.clone().unwrap_or_else(|| format!("toolu_{}_{}", self.id, tc.index));
                let name = tc.function.as_ref().and_then(|f| f.name.clone()).unwrap_or_default();
                write_anthropic_event(
                    out,
                    &json!({"type": "content_block_start", "index": i,
                            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                );
                i
            }
        };
        if !args.is_empty() {
            write_anthropic_event(
                out,
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": args}}),
            );
        }
    }

    fn message_delta(&mut self, out: &mut Vec<u8>) {
        if self.delta_sent {
            return;
        }
        self.delta_sent = true;
        self.close_open(out);
        let u = self.usage.clone().unwrap_or_default();
        write_anthropic_event(
            out,
            &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish_reason.as_deref()), "stop_sequence": null},
            "usage": {
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "cache_read_input_tokens": u.cache_read_input_tokens,
            }}),
        );
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.message_delta(out);
        write_anthropic_event(out, &json!({"type": "message_stop"}));
        self.done = true;
    }

    fn handle(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.trim_ascii() == b"[DONE]" {
            if self.finish_reason.is_some() {
                self.complete(out);
            } else {
                self.fail("api_error", "upstream stream ended before finish_reason", out);
            }
            return;
        }
        let chunk: oa::ChatChunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("malformed upstream stream chunk: {e}");
                self.fail("api_error", &msg, out);
                return;
            }
        };
        if let Some(err) = &chunk.error {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_string();
            let kind = match err.get("code").and_then(Value::as_str) {
                Some("rate_limit_exceeded") => "rate_limit_error",
                _ => match err.get("type").and_then(Value::as_str) {
                    Some("invalid_request_error") => "invalid_request_error",
                    _ => "api_error",
                },
            };
            self.fail(kind, &message, out);
            return;
        }
        if !self.started && !chunk.id.is_empty() {
            self.id = message_id(&chunk.id);
        }
        self.start(out);
        if let Some(u) = chunk.usage.as_ref().and_then(usage_from_openai) {
            self.usage = Some(u);
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let d = &choice.delta;
            if let Some(t) = &d.content {
                self.text(t, out);
            }
            if let Some(r) = &d.refusal {
                self.text(r, out);
            }
            for tc in d.tool_calls.iter().flatten() {
                self.tool_call(tc, out);
            }
            if let Some(fr) = &choice.finish_reason {
                self.finish_reason = Some(fr.clone());
                self.close_open(out);
            }
        }
        if self.finish_reason.is_some() && self.usage.is_some() {
            self.message_delta(out);
        }
    }
}

impl StreamTranslate for StreamTranslator {
    fn event(&mut self, event: &Event, out: &mut Vec<u8>) {
        if !self.done {
            self.handle(&event.data, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.end(out);
    }

    fn is_done(&self) -> bool {
        self.done
    }
}
