//! Converse stream events → Anthropic message stream events.

use super::*;

/// What an open Anthropic content block is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    ToolUse,
    /// Redacted reasoning: Anthropic sends it whole in
    /// `content_block_start`, so its data is buffered until the block ends.
    Redacted(String),
}

/// One Converse content block and the Anthropic block it became.
#[derive(Debug, Clone)]
struct Block {
    converse_index: u64,
    index: u64,
    kind: BlockKind,
    open: bool,
}

/// ConverseStream events → Anthropic Messages SSE events.
///
/// `message_start` carries zero usage: Converse reports usage only in its
/// final `metadata` event, so the real counts (input, output and cache
/// tokens) are sent in `message_delta`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    id: String,
    started: bool,
    blocks: Vec<Block>,
    stop_reason: Option<String>,
    stop_sequence: Value,
    usage: Option<Usage>,
    done: bool,
}

impl StreamTranslator {
    /// `model` is the name reported to the client. The message id is
    /// derived from `model` and `opts.created` (Converse streams carry no
    /// id); [`StreamTranslator::with_message_id`] sets a better one.
    pub fn new(model: &str, opts: &ResponseOptions) -> Self {
        let seed = format!("{model}\u{0}{}", opts.created);
        StreamTranslator {
            model: model.to_string(),
            id: derived_message_id(seed.as_bytes()),
            started: false,
            blocks: vec![],
            stop_reason: None,
            stop_sequence: Value::Null,
            usage: None,
            done: false,
        }
    }

    /// Use `id` as the Anthropic message id.
    pub fn with_message_id(mut self, id: &str) -> Self {
        self.id = id.to_string();
        self
    }

    /// Usage seen so far (from the `metadata` event).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    /// True once the stream reached a terminal state.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// One decoded upstream event: `name` is its `:event-type`
    /// (`messageStart`, `contentBlockDelta`, …), `payload` its JSON.
    /// Unknown event types are ignored; exception names are handed to
    /// [`StreamTranslator::exception`].
    fn handle(&mut self, name: &str, payload: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let v: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                self.fail("api_error", &format!("malformed upstream `{name}` event: {e}"), out);
                return;
            }
        };
        match name {
            "messageStart" => self.start(out),
            "contentBlockStart" => self.block_start(&v, out),
            "contentBlockDelta" => self.block_delta(&v, out),
            "contentBlockStop" => {
                if let Some(i) = v.get("contentBlockIndex").and_then(Value::as_u64) {
                    self.close_block(i, out);
                }
            }
            "messageStop" => {
                self.stop_reason = Some(v.get("stopReason").and_then(Value::as_str).unwrap_or("end_turn").to_string());
                self.stop_sequence = matched_stop_sequence(&v);
                if self.usage.is_some() {
                    self.complete(out);
                }
            }
            "metadata" => {
                self.usage = Some(usage_from_converse(&v).unwrap_or_default());
                if self.stop_reason.is_some() {
                    self.complete(out);
                }
            }
            _ => {}
        }
    }

    /// The upstream ended. Before `messageStop` this is an error; after it,
    /// whatever is still owed is sent (zero usage if `metadata` never came).
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.stop_reason.is_some() {
            self.complete(out);
        } else {
            self.fail("api_error", "upstream stream ended before messageStop", out);
        }
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
        write_anthropic_message_start(out, &self.id, &self.model, Usage::default().to_anthropic_json());
    }

    fn find(&self, converse_index: u64) -> Option<usize> {
        self.blocks.iter().position(|b| b.converse_index == converse_index)
    }

    /// Register a new block; announce it unless it is redacted reasoning.
    fn open_block(&mut self, converse_index: u64, kind: BlockKind, start: Value, out: &mut Vec<u8>) -> usize {
        let index = self.blocks.len() as u64;
        if !matches!(kind, BlockKind::Redacted(_)) {
            write_anthropic_event(out, &json!({"type": "content_block_start", "index": index, "content_block": start}));
        }
        self.blocks.push(Block { converse_index, index, kind, open: true });
        self.blocks.len() - 1
    }

    fn block_start(&mut self, v: &Value, out: &mut Vec<u8>) {
        self.start(out);
        let Some(ci) = v.get("contentBlockIndex").and_then(Value::as_u64) else { return };
        let Some(tu) = v.pointer("/start/toolUse") else { return };
        if self.find(ci).is_some() {
            return;
        }
        let start = json!({"type": "tool_use", "id": tu["toolUseId"], "name": tu["name"], "input": {}});
        self.open_block(ci, BlockKind::ToolUse, start, out);
    }

    /// The position of the block for `ci`, opening one of `kind` if this is
    /// its first event.
    fn block_for(&mut self, ci: u64, kind: BlockKind, out: &mut Vec<u8>) -> usize {
        if let Some(p) = self.find(ci) {
            return p;
        }
        let start = match kind {
            BlockKind::Text => json!({"type": "text", "text": ""}),
            BlockKind::Thinking => json!({"type": "thinking", "thinking": ""}),
            BlockKind::ToolUse => {
                // A tool delta without its start event: Converse always
                // sends the start, but keep the arguments if it did not.
                json!({"type": "tool_use", "id": format!("toolu_{}_{ci}", self.id), "name": "", "input": {}})
            }
            BlockKind::Redacted(_) => Value::Null,
        };
        self.open_block(ci, kind, start, out)
    }

    fn delta(out: &mut Vec<u8>, index: u64, delta: Value) {
        write_anthropic_event(out, &json!({"type": "content_block_delta", "index": index, "delta": delta}));
    }

    fn block_delta(&mut self, v: &Value, out: &mut Vec<u8>) {
        self.start(out);
        let Some(ci) = v.get("contentBlockIndex").and_then(Value::as_u64) else { return };
        let Some(d) = v.get("delta") else { return };
        if let Some(t) = d.get("text").and_then(Value::as_str) {
            let p = self.block_for(ci, BlockKind::Text, out);
            Self::delta(out, self.blocks[p].index, json!({"type": "text_delta", "text": t}));
        } else if let Some(input) = d.pointer("/toolUse/input").and_then(Value::as_str) {
            let p = self.block_for(ci, BlockKind::ToolUse, out);
            if !input.is_empty() {
                Self::delta(out, self.blocks[p].index, json!({"type": "input_json_delta", "partial_json": input}));
            }
        } else if let Some(rc) = d.get("reasoningContent") {
            self.reasoning_delta(ci, rc, out);
        }
    }

    fn reasoning_delta(&mut self, ci: u64, rc: &Value, out: &mut Vec<u8>) {
        if let Some(data) = rc.get("redactedContent").and_then(Value::as_str) {
            let p = self.block_for(ci, BlockKind::Redacted(String::new()), out);
            if let BlockKind::Redacted(buf) = &mut self.blocks[p].kind {
                buf.push_str(data);
            }
            return;
        }
        let p = self.block_for(ci, BlockKind::Thinking, out);
        let index = self.blocks[p].index;
        if let Some(t) = rc.get("text").and_then(Value::as_str) {
            Self::delta(out, index, json!({"type": "thinking_delta", "thinking": t}));
        }
        if let Some(s) = rc.get("signature").and_then(Value::as_str) {
            Self::delta(out, index, json!({"type": "signature_delta", "signature": s}));
        }
    }

    fn close_block(&mut self, ci: u64, out: &mut Vec<u8>) {
        let Some(p) = self.find(ci) else { return };
        let b = &mut self.blocks[p];
        if !b.open {
            return;
        }
        b.open = false;
        if let BlockKind::Redacted(data) = &b.kind {
            write_anthropic_event(
                out,
                &json!({"type": "content_block_start", "index": b.index,
                        "content_block": {"type": "redacted_thinking", "data": data}}),
            );
        }
        write_anthropic_event(out, &json!({"type": "content_block_stop", "index": b.index}));
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        let open: Vec<u64> = self.blocks.iter().filter(|b| b.open).map(|b| b.converse_index).collect();
        for ci in open {
            self.close_block(ci, out);
        }
        let u = self.usage.clone().unwrap_or_default();
        write_anthropic_event(
            out,
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": stop_reason(self.stop_reason.as_deref()),
                              "stop_sequence": self.stop_sequence},
                    "usage": u.to_anthropic_json()}),
        );
        write_anthropic_event(out, &json!({"type": "message_stop"}));
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
