//! Converse stream events → OpenAI chat completion chunks.

use super::*;

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
                write_openai_usage_chunk(out, &self.id, self.opts.created, &self.model, u);
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
