//! Anthropic stream events → OpenAI chat completion chunks.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Tool(u64),
    ForcedJson,
    Thinking,
    Other,
}

/// Anthropic SSE stream → OpenAI `chat.completion.chunk` SSE stream.
///
/// Reads `opts.created`, `opts.forced_json_tool` and `opts.include_usage`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    opts: ResponseOptions,
    id: String,
    blocks: HashMap<u64, Block>,
    tool_calls: u64,
    usage: Option<Usage>,
    done: bool,
}

impl StreamTranslator {
    /// `model` is the name reported to the client; `created` is put in every
    /// chunk (it overrides `opts.created`).
    pub fn new(model: &str, created: u64, opts: &ResponseOptions) -> Self {
        let mut opts = opts.clone();
        opts.created = created;
        StreamTranslator {
            model: model.to_string(),
            opts,
            id: "chatcmpl-unknown".to_string(),
            blocks: HashMap::new(),
            tool_calls: 0,
            usage: None,
            done: false,
        }
    }

    /// The upstream byte stream ended. If it ended without `message_stop`,
    /// an error event is emitted (and no `[DONE]`).
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if !self.done {
            self.done = true;
            let err = json!({"error": {
                "message": "upstream stream ended before message_stop",
                "type": "server_error",
                "param": null,
                "code": "stream_incomplete",
            }});
            write_event(out, None, &to_bytes(&err));
        }
    }

    /// Usage seen so far (cumulative, as reported by the upstream).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    /// True once the stream reached a terminal state (`[DONE]` or error).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn chunk(&self, delta: Value, finish: Value, out: &mut Vec<u8>) {
        write_openai_chunk(out, &self.id, self.opts.created, &self.model, delta, finish);
    }

    fn fail(&mut self, status: u16, kind: &str, message: &str, out: &mut Vec<u8>) {
        self.done = true;
        write_event(out, None, &to_bytes(&openai_error_value(status, kind, message)));
    }

    fn handle(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let e: an::StreamEvent = match serde_json::from_slice(data) {
            Ok(e) => e,
            Err(err) => {
                let msg = format!("malformed upstream stream event: {err}");
                self.fail(502, "api_error", &msg, out);
                return;
            }
        };
        match e.kind.as_str() {
            "message_start" => {
                if let Some(m) = &e.message {
                    if !m.id.is_empty() {
                        self.id = format!("chatcmpl-{}", m.id);
                    }
                    if let Some(u) = &m.usage {
                        self.usage.get_or_insert_with(Usage::default).merge_anthropic(u);
                    }
                }
                self.chunk(json!({"role": "assistant", "content": ""}), Value::Null, out);
            }
            "content_block_start" => {
                let index = e.index.unwrap_or(0);
                let cb = e.content_block.unwrap_or(Value::Null);
                let block = match cb.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = cb.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            self.chunk(json!({"content": t}), Value::Null, out);
                        }
                        Block::Text
                    }
                    Some("tool_use") => {
                        let name = cb.get("name").and_then(Value::as_str).unwrap_or("");
                        if self.opts.forced_json_tool.as_deref() == Some(name) {
                            Block::ForcedJson
                        } else {
                            let ordinal = self.tool_calls;
                            self.tool_calls += 1;
                            self.chunk(
                                json!({"tool_calls": [{
                                    "index": ordinal,
                                    "id": cb.get("id").cloned().unwrap_or(Value::Null),
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }]}),
                                Value::Null,
                                out,
                            );
                            Block::Tool(ordinal)
                        }
                    }
                    Some("thinking") => Block::Thinking,
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let index = e.index.unwrap_or(0);
                let d = e.delta.unwrap_or(Value::Null);
                let block = self.blocks.get(&index).copied().unwrap_or(Block::Other);
                match (d.get("type").and_then(Value::as_str), block) {
                    (Some("text_delta"), _) => {
                        if let Some(t) = d.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            self.chunk(json!({"content": t}), Value::Null, out);
                        }
                    }
                    (Some("input_json_delta"), Block::Tool(ordinal)) => {
                        if let Some(p) = d.get("partial_json").and_then(Value::as_str).filter(|p| !p.is_empty()) {
                            self.chunk(
                                json!({"tool_calls": [{"index": ordinal, "function": {"arguments": p}}]}),
                                Value::Null,
                                out,
                            );
                        }
                    }
                    (Some("input_json_delta"), Block::ForcedJson) => {
                        if let Some(p) = d.get("partial_json").and_then(Value::as_str).filter(|p| !p.is_empty()) {
                            self.chunk(json!({"content": p}), Value::Null, out);
                        }
                    }
                    (Some("thinking_delta"), _) => {
                        if let Some(t) = d.get("thinking").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                            self.chunk(json!({"reasoning_content": t}), Value::Null, out);
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = &e.usage {
                    self.usage.get_or_insert_with(Usage::default).merge_anthropic(u);
                }
                let stop = e.delta.as_ref().and_then(|d| d.get("stop_reason")).and_then(Value::as_str);
                if stop.is_some() {
                    let fr = finish_reason(stop, self.tool_calls > 0);
                    self.chunk(json!({}), fr, out);
                }
            }
            "message_stop" => {
                if self.opts.include_usage {
                    let usage = self.usage.clone().unwrap_or_default();
                    write_openai_usage_chunk(out, &self.id, self.opts.created, &self.model, &usage);
                }
                write_event(out, None, b"[DONE]");
                self.done = true;
            }
            "error" => {
                let (kind, message) = match &e.error {
                    Some(d) => (d.kind.clone(), d.message.clone()),
                    None => ("api_error".to_string(), "upstream error".to_string()),
                };
                let status = status_from_anthropic_error_type(&kind);
                self.fail(status, &kind, &message, out);
            }
            _ => {}
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
