//! Gemini stream chunks → Anthropic message stream events.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking,
    Text,
}

/// `streamGenerateContent?alt=sse` events → Anthropic Messages SSE events.
///
/// `message_start` comes with the first chunk (its usage is that chunk's: Gemini reports the prompt
/// tokens from the start). Thought parts stream into a `thinking` block (a part's
/// `thoughtSignature` as a `signature_delta`), text parts into a `text` block; a function call,
/// which Gemini sends whole, is one `tool_use` block with its whole input in one
/// `input_json_delta`. The chunk with `finishReason` closes the open block and sends
/// `message_delta` (stop reason, cumulative usage) and `message_stop`. A stream that ends before a
/// `finishReason` ends with an `error` event; a prompt blocked before any content is a
/// [`StreamTranslate::refusal`].
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    created: u64,
    /// Message id and the seed of synthesized tool-use ids, fixed by the first event.
    id: Option<(String, u64)>,
    started: bool,
    next_index: u64,
    open: Option<(Open, u64)>,
    tool_uses: u64,
    usage: Option<Usage>,
    refusal: Option<StreamFailure>,
    done: bool,
}

impl StreamTranslator {
    /// `model` is the name reported to the client. The message id is `msg_` and Gemini's
    /// `responseId` (or a hash of `model` and `opts.created`).
    pub fn new(model: &str, opts: &ResponseOptions) -> Self {
        StreamTranslator {
            model: model.to_string(),
            created: opts.created,
            id: None,
            started: false,
            next_index: 0,
            open: None,
            tool_uses: 0,
            usage: None,
            refusal: None,
            done: false,
        }
    }

    /// Usage reported so far (cumulative).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        self.done = true;
        write_anthropic_event(out, &anthropic_error_value(kind, message));
    }

    fn handle(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done || data.is_empty() {
            return;
        }
        let r: GenerateContentResponse = match serde_json::from_slice(data) {
            Ok(r) => r,
            Err(e) => return self.fail("api_error", &format!("malformed upstream stream event: {e}"), out),
        };
        if let Some(e) = &r.error {
            let status = gemini::stream_error_status(e);
            let message = e.message.clone().unwrap_or_else(|| format!("upstream stream error (HTTP {status})"));
            return self.fail(error_kind(status, e.status.as_deref()), &message, out);
        }
        if let Some(u) = r.usage_metadata.as_ref().and_then(usage_from_gemini) {
            self.usage = Some(u);
        }
        if self.id.is_none() {
            let seed_bytes = format!("{}\0{}", self.model, self.created);
            let seed = gemini::id_seed(r.response_id.as_deref(), seed_bytes.as_bytes());
            self.id = Some((message_id(r.response_id.as_deref(), seed_bytes.as_bytes()), seed));
        }
        if let Some(TranslateError::Refused { status, code, message }) = r.refusal() {
            self.refusal =
                (!self.started).then(|| StreamFailure { status, message: message.clone(), code: Some(code.clone()) });
            return self.fail(anthropic_error_type(status), &message, out);
        }
        self.start(out);
        for part in r.parts() {
            if let Some(fc) = &part.function_call {
                self.close(out);
                let seed = self.id.as_ref().map_or(0, |(_, s)| *s);
                let id = gemini::call_id(
                    "toolu_",
                    fc.id.as_deref(),
                    seed,
                    self.tool_uses,
                    part.thought_signature.as_deref(),
                );
                self.tool_uses += 1;
                let index = self.next_index;
                self.next_index += 1;
                write_anthropic_event(
                    out,
                    &json!({"type": "content_block_start", "index": index,
                            "content_block": {"type": "tool_use", "id": id, "name": fc.name, "input": {}}}),
                );
                write_anthropic_event(
                    out,
                    &json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": fc.arguments()}}),
                );
                write_anthropic_event(out, &json!({"type": "content_block_stop", "index": index}));
                continue;
            }
            let text = part.text.as_deref().unwrap_or("");
            if part.is_thought() {
                let signature = part.thought_signature.as_deref().filter(|s| !s.is_empty());
                if text.is_empty() && signature.is_none() {
                    continue;
                }
                let index = self.open_block(Open::Thinking, out);
                if !text.is_empty() {
                    Self::delta(out, index, json!({"type": "thinking_delta", "thinking": text}));
                }
                if let Some(sig) = signature {
                    Self::delta(out, index, json!({"type": "signature_delta", "signature": sig}));
                }
            } else if !text.is_empty() {
                let index = self.open_block(Open::Text, out);
                Self::delta(out, index, json!({"type": "text_delta", "text": text}));
            }
        }
        if let Some(reason) = r.finish_reason() {
            self.close(out);
            let usage = self.usage.clone().unwrap_or_default();
            write_anthropic_event(
                out,
                &json!({"type": "message_delta",
                        "delta": {"stop_reason": stop_reason(reason, self.tool_uses > 0), "stop_sequence": null},
                        "usage": usage.to_anthropic_json()}),
            );
            write_anthropic_event(out, &json!({"type": "message_stop"}));
            self.done = true;
        }
    }

    fn delta(out: &mut Vec<u8>, index: u64, delta: Value) {
        write_anthropic_event(out, &json!({"type": "content_block_delta", "index": index, "delta": delta}));
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = self.id.as_ref().map_or("msg_unknown", |(id, _)| id.as_str());
        let mut usage = self.usage.clone().unwrap_or_default().to_anthropic_json();
        usage["output_tokens"] = json!(0);
        write_anthropic_message_start(out, id, &self.model, usage);
    }

    /// The index of the open block of `kind`, opening one (and closing another) if needed.
    fn open_block(&mut self, kind: Open, out: &mut Vec<u8>) -> u64 {
        if let Some((k, index)) = self.open {
            if k == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        let block = match kind {
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Open::Text => json!({"type": "text", "text": ""}),
        };
        write_anthropic_event(out, &json!({"type": "content_block_start", "index": index, "content_block": block}));
        self.open = Some((kind, index));
        index
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            write_anthropic_event(out, &json!({"type": "content_block_stop", "index": index}));
        }
    }
}

impl StreamTranslate for StreamTranslator {
    fn event(&mut self, event: &Event, out: &mut Vec<u8>) {
        self.handle(&event.data, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.done {
            self.fail("api_error", "upstream stream ended before a finish reason", out);
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn refusal(&self) -> Option<&StreamFailure> {
        self.refusal.as_ref()
    }
}
