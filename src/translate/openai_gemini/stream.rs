//! Gemini stream chunks → OpenAI chat completion chunks.

use super::*;

/// `streamGenerateContent?alt=sse` events → OpenAI `chat.completion.chunk` SSE stream.
///
/// Each event's data is one `GenerateContentResponse`: text and thought parts become `content` and
/// `reasoning_content` deltas, a function call (Gemini sends each whole) one `tool_calls` delta with
/// its full arguments, and the chunk with `finishReason` the finish chunk, then the usage chunk
/// (with `opts.include_usage`; usage is cumulative, the last chunk's counts) and `[DONE]`. A stream
/// that ends before a `finishReason` ends with an error event and no `[DONE]`; a prompt blocked
/// before any content is a [`StreamTranslate::refusal`]. Reads `opts.created` and
/// `opts.include_usage`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    opts: ResponseOptions,
    /// Chunk id and the seed of synthesized tool-call ids, fixed by the first event.
    id: Option<(String, u64)>,
    started: bool,
    tool_calls: u64,
    usage: Option<Usage>,
    refusal: Option<StreamFailure>,
    done: bool,
}

impl StreamTranslator {
    /// `model` is the name reported to the client. Chunks are named `chatcmpl-` and Gemini's
    /// `responseId` (or a hash of `model` and `created` when the stream carries none).
    pub fn new(model: &str, opts: &ResponseOptions) -> Self {
        StreamTranslator {
            model: model.to_string(),
            opts: opts.clone(),
            id: None,
            started: false,
            tool_calls: 0,
            usage: None,
            refusal: None,
            done: false,
        }
    }

    /// Usage reported so far (cumulative).
    pub fn usage(&self) -> Option<Usage> {
        self.usage.clone()
    }

    pub(super) fn handle(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done || data.is_empty() {
            return;
        }
        let r: GenerateContentResponse = match serde_json::from_slice(data) {
            Ok(r) => r,
            Err(e) => {
                return self.fail(502, "malformed_stream_event", &format!("malformed upstream stream event: {e}"), out)
            }
        };
        if let Some(e) = &r.error {
            let status = gemini::stream_error_status(e);
            let code = e.status.clone().unwrap_or_else(|| openai_error_type(status).to_string());
            let message = e.message.clone().unwrap_or_else(|| format!("upstream stream error (HTTP {status})"));
            return self.fail(status, &code, &message, out);
        }
        if let Some(u) = r.usage_metadata.as_ref().and_then(usage_from_gemini) {
            self.usage = Some(u);
        }
        if self.id.is_none() {
            let seed =
                gemini::id_seed(r.response_id.as_deref(), format!("{}\0{}", self.model, self.opts.created).as_bytes());
            let id = match r.response_id.as_deref().filter(|r| !r.is_empty()) {
                Some(rid) => format!("chatcmpl-{rid}"),
                None => format!("chatcmpl-{seed:016x}"),
            };
            self.id = Some((id, seed));
        }
        if let Some(TranslateError::Refused { status, code, message }) = r.refusal() {
            self.refusal =
                (!self.started).then(|| StreamFailure { status, message: message.clone(), code: Some(code.clone()) });
            return self.fail(status, &code, &message, out);
        }
        self.start(out);
        for part in r.parts() {
            if let Some(fc) = &part.function_call {
                let seed = self.id.as_ref().map_or(0, |(_, s)| *s);
                let mut call = tool_call(part, fc, seed, self.tool_calls);
                call["index"] = json!(self.tool_calls);
                self.tool_calls += 1;
                self.chunk(json!({ "tool_calls": [call] }), Value::Null, out);
            } else if let Some(t) = part.text.as_deref().filter(|t| !t.is_empty()) {
                let key = if part.is_thought() { "reasoning_content" } else { "content" };
                self.chunk(json!({ key: t }), Value::Null, out);
            }
        }
        if let Some(reason) = r.finish_reason() {
            let fr = finish_reason(reason, self.tool_calls > 0);
            self.chunk(json!({}), json!(fr), out);
            self.complete(out);
        }
    }

    fn chunk(&self, delta: Value, finish: Value, out: &mut Vec<u8>) {
        let id = self.id.as_ref().map_or("chatcmpl-unknown", |(id, _)| id.as_str());
        write_openai_chunk(out, id, self.opts.created, &self.model, delta, finish);
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

    /// Usage chunk (when asked for and known), then `[DONE]`.
    fn complete(&mut self, out: &mut Vec<u8>) {
        if self.opts.include_usage {
            if let Some(u) = &self.usage {
                let id = self.id.as_ref().map_or("chatcmpl-unknown", |(id, _)| id.as_str());
                write_openai_usage_chunk(out, id, self.opts.created, &self.model, u);
            }
        }
        write_event(out, None, b"[DONE]");
        self.done = true;
    }
}

impl StreamTranslate for StreamTranslator {
    fn event(&mut self, event: &Event, out: &mut Vec<u8>) {
        self.handle(&event.data, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.done {
            self.fail(502, "stream_incomplete", "upstream stream ended before a finish reason", out);
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn refusal(&self) -> Option<&StreamFailure> {
        self.refusal.as_ref()
    }
}
