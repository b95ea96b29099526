//! Chat completion chunks → Responses API stream events.

use super::*;

/// Writes one event straight into `out` (the hot path: no tree is built): `event:` and its data, `type`
/// and `sequence_number` first, then what `fields` appends (`,"key":value…`).
fn emit_with(sequence: &mut u64, kind: &str, out: &mut Vec<u8>, fields: impl FnOnce(&mut Vec<u8>)) {
    use std::io::Write as _;
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: {\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    let _ = write!(out, "\",\"sequence_number\":{sequence}");
    fields(out);
    out.extend_from_slice(b"}\n\n");
    *sequence += 1;
}

/// A `….delta` event of an item (and content part).
fn emit_delta(
    sequence: &mut u64,
    kind: &str,
    item_id: &str,
    output_index: usize,
    content_index: Option<usize>,
    delta: &str,
    out: &mut Vec<u8>,
) {
    use std::io::Write as _;
    emit_with(sequence, kind, out, |o| {
        o.extend_from_slice(b",\"item_id\":");
        let _ = serde_json::to_writer(&mut *o, item_id);
        let _ = write!(o, ",\"output_index\":{output_index}");
        if let Some(c) = content_index {
            let _ = write!(o, ",\"content_index\":{c}");
        }
        o.extend_from_slice(b",\"delta\":");
        let _ = serde_json::to_writer(&mut *o, delta);
        if kind == "response.output_text.delta" {
            o.extend_from_slice(b",\"logprobs\":[]");
        }
    });
}

/// The part of a message being streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartKind {
    Text,
    Refusal,
}

/// The output item being streamed.
#[derive(Debug)]
enum Open {
    Message { index: usize, id: String, parts: Vec<(PartKind, String)>, part_open: bool },
    Reasoning { index: usize, id: String, text: String },
}

/// A function call item (calls stay addressable by their chat index until the stream ends).
#[derive(Debug)]
struct Call {
    index: usize,
    id: String,
    call_id: String,
    name: String,
    arguments: String,
    done: bool,
}

/// Chat Completions chunks (SSE) → the Responses event stream. Reads `opts.created` and
/// `opts.responses`.
#[derive(Debug)]
pub struct StreamTranslator {
    model: String,
    opts: ResponseOptions,
    sequence: u64,
    base: String,
    started: bool,
    /// Every output item, in order (`Value::Null` for the one being streamed).
    output: Vec<Value>,
    open: Option<Open>,
    calls: HashMap<u64, Call>,
    /// The call being streamed (its chat index).
    open_call: Option<u64>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    done: bool,
}

impl StreamTranslator {
    pub fn new(model: &str, opts: &ResponseOptions) -> Self {
        StreamTranslator {
            model: model.to_string(),
            opts: opts.clone(),
            sequence: 0,
            base: "unknown".to_string(),
            started: false,
            output: Vec::new(),
            open: None,
            calls: HashMap::new(),
            open_call: None,
            finish_reason: None,
            usage: None,
            done: false,
        }
    }

    /// Writes one event: `type` first and `sequence_number`, then `fields`.
    fn emit(&mut self, kind: &str, fields: Value, out: &mut Vec<u8>) {
        emit_with(&mut self.sequence, kind, out, |o| {
            let rest = to_bytes(&fields);
            if rest.len() > 2 {
                o.push(b',');
                o.extend_from_slice(&rest[1..rest.len() - 1]);
            }
        });
    }

    fn snapshot(&self, ending: Ending) -> Value {
        let output: Vec<Value> = self.output.iter().filter(|v| !v.is_null()).cloned().collect();
        response_object(&self.base, &self.model, &self.opts, ending, output, self.usage.as_ref())
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let mut r = self.snapshot(Ending::of("in_progress", None));
        r["usage"] = Value::Null;
        // One serialization for both events.
        let r = to_bytes(&r);
        for kind in ["response.created", "response.in_progress"] {
            emit_with(&mut self.sequence, kind, out, |o| {
                o.extend_from_slice(b",\"response\":");
                o.extend_from_slice(&r);
            });
        }
    }

    fn msg_id(&self) -> String {
        format!("msg_{}", self.base)
    }

    /// Closes the item being streamed (message or reasoning) and the call being streamed.
    fn close_open(&mut self, out: &mut Vec<u8>) {
        self.close_part(out);
        match self.open.take() {
            None => {}
            Some(Open::Message { index, id, parts, .. }) => {
                let content: Vec<Value> = parts
                    .iter()
                    .map(|(kind, text)| match kind {
                        PartKind::Text => text_part(text),
                        PartKind::Refusal => json!({"type": "refusal", "refusal": text}),
                    })
                    .collect();
                let item = json!({"type": "message", "id": id, "status": "completed", "role": "assistant",
                                  "content": content});
                self.output[index] = item.clone();
                self.emit("response.output_item.done", json!({"output_index": index, "item": item}), out);
            }
            Some(Open::Reasoning { index, id, text }) => {
                self.emit(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                    out,
                );
                self.emit(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": {"type": "reasoning_text", "text": text}}),
                    out,
                );
                let item = reasoning_item(&id, &text, "completed");
                self.output[index] = item.clone();
                self.emit("response.output_item.done", json!({"output_index": index, "item": item}), out);
            }
        }
        self.close_call(out);
    }

    /// Ends the message part being streamed.
    fn close_part(&mut self, out: &mut Vec<u8>) {
        let Some(Open::Message { index, id, parts, part_open }) = &mut self.open else { return };
        if !*part_open {
            return;
        }
        *part_open = false;
        let (index, id) = (*index, id.clone());
        let content_index = parts.len() - 1;
        let (kind, text) = parts[content_index].clone();
        let (done, part) = match kind {
            PartKind::Text => (
                json!({"item_id": id, "output_index": index, "content_index": content_index, "text": text,
                       "logprobs": []}),
                text_part(&text),
            ),
            PartKind::Refusal => (
                json!({"item_id": id, "output_index": index, "content_index": content_index, "refusal": text}),
                json!({"type": "refusal", "refusal": text}),
            ),
        };
        let name = if kind == PartKind::Text { "response.output_text.done" } else { "response.refusal.done" };
        self.emit(name, done, out);
        self.emit(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": content_index, "part": part}),
            out,
        );
    }

    fn close_call(&mut self, out: &mut Vec<u8>) {
        let Some(key) = self.open_call.take() else { return };
        let Some(call) = self.calls.get_mut(&key) else { return };
        call.done = true;
        let (index, id) = (call.index, call.id.clone());
        let item = call_item(&call.id, &call.call_id, &call.name, &call.arguments, "completed");
        let (name, arguments) = (call.name.clone(), call.arguments.clone());
        self.output[index] = item.clone();
        self.emit(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}),
            out,
        );
        self.emit("response.output_item.done", json!({"output_index": index, "item": item}), out);
    }

    fn reasoning(&mut self, delta: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close_open(out);
            let index = self.output.len();
            self.output.push(Value::Null);
            let id = format!("rs_{}_{index}", self.base);
            let item = json!({"type": "reasoning", "id": id, "summary": [], "content": [], "status": "in_progress"});
            self.emit("response.output_item.added", json!({"output_index": index, "item": item}), out);
            self.emit(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": {"type": "reasoning_text", "text": ""}}),
                out,
            );
            self.open = Some(Open::Reasoning { index, id, text: String::new() });
        }
        let Some(Open::Reasoning { index, id, text }) = &mut self.open else { return };
        text.push_str(delta);
        emit_delta(&mut self.sequence, "response.reasoning_text.delta", id, *index, Some(0), delta, out);
    }

    fn message_delta(&mut self, kind: PartKind, delta: &str, out: &mut Vec<u8>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close_open(out);
            let index = self.output.len();
            self.output.push(Value::Null);
            let id = if index == 0 { self.msg_id() } else { format!("{}_{index}", self.msg_id()) };
            let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant",
                              "content": []});
            self.emit("response.output_item.added", json!({"output_index": index, "item": item}), out);
            self.open = Some(Open::Message { index, id, parts: Vec::new(), part_open: false });
        }
        let same_part = matches!(&self.open, Some(Open::Message { parts, part_open: true, .. })
            if parts.last().is_some_and(|(k, _)| *k == kind));
        if !same_part {
            self.close_part(out);
            let Some(Open::Message { index, id, parts, part_open }) = &mut self.open else { return };
            parts.push((kind, String::new()));
            *part_open = true;
            let part = match kind {
                PartKind::Text => text_part(""),
                PartKind::Refusal => json!({"type": "refusal", "refusal": ""}),
            };
            let fields = json!({"item_id": id, "output_index": index, "content_index": parts.len() - 1, "part": part});
            self.emit("response.content_part.added", fields, out);
        }
        let Some(Open::Message { index, id, parts, .. }) = &mut self.open else { return };
        let content_index = parts.len() - 1;
        parts[content_index].1.push_str(delta);
        let name = if kind == PartKind::Text { "response.output_text.delta" } else { "response.refusal.delta" };
        emit_delta(&mut self.sequence, name, id, *index, Some(content_index), delta, out);
    }

    fn tool_call(&mut self, tc: &oa::ChunkToolCall, out: &mut Vec<u8>) {
        if !self.calls.contains_key(&tc.index) {
            self.close_open(out);
            let index = self.output.len();
            self.output.push(Value::Null);
            let call_id = tc.id.clone().unwrap_or_else(|| format!("call_{}_{}", self.base, tc.index));
            let name = tc.function.as_ref().and_then(|f| f.name.clone()).unwrap_or_default();
            let id = format!("fc_{call_id}");
            let item = call_item(&id, &call_id, &name, "", "in_progress");
            self.emit("response.output_item.added", json!({"output_index": index, "item": item}), out);
            self.calls.insert(tc.index, Call { index, id, call_id, name, arguments: String::new(), done: false });
            self.open_call = Some(tc.index);
        }
        let args = tc.function.as_ref().and_then(|f| f.arguments.as_deref()).unwrap_or("");
        if args.is_empty() {
            return;
        }
        let Some(call) = self.calls.get_mut(&tc.index) else { return };
        call.arguments.push_str(args);
        let (index, id) = (call.index, call.id.clone());
        if call.done {
            // A fragment for a call already closed (OpenAI never interleaves calls): it still joins
            // its own call in the final response.
            self.output[index]["arguments"] = json!(call.arguments);
        }
        emit_delta(&mut self.sequence, "response.function_call_arguments.delta", &id, index, None, args, out);
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close_open(out);
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        let r = self.snapshot(Ending::of(status, incomplete));
        let name = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.emit(name, json!({"response": r}), out);
        self.done = true;
    }

    /// Ends the stream with an `error` event (the upstream's code) and `response.failed` (whose
    /// `error.code` is one of OpenAI's: `rate_limit_exceeded` or `server_error`).
    fn fail_with(&mut self, status: Option<u16>, code: &str, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(out);
        self.emit("error", json!({"code": code, "message": message, "param": null}), out);
        let limited = status == Some(429) || code.contains("rate_limit") || code.starts_with("Throttling");
        let kind = if limited { "rate_limit_exceeded" } else { "server_error" };
        let error = Some(json!({"code": kind, "message": message}));
        let r = self.snapshot(Ending { status: "failed", incomplete: None, error });
        self.emit("response.failed", json!({"response": r}), out);
        self.done = true;
    }

    fn handle(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if data.trim_ascii() == b"[DONE]" {
            if self.finish_reason.is_some() {
                self.complete(out);
            } else {
                self.fail_with(None, "stream_incomplete", "upstream stream ended before finish_reason", out);
            }
            return;
        }
        let chunk: oa::ChatChunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(e) => {
                self.fail_with(None, "server_error", &format!("malformed upstream stream chunk: {e}"), out);
                return;
            }
        };
        if let Some(err) = &chunk.error {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_string();
            let code = err
                .get("code")
                .and_then(Value::as_str)
                .or_else(|| err.get("type").and_then(Value::as_str))
                .unwrap_or("server_error")
                .to_string();
            self.fail_with(None, &code, &message, out);
            return;
        }
        if !self.started && !chunk.id.is_empty() {
            self.base = base_id(&chunk.id);
        }
        self.start(out);
        if let Some(u) = chunk.usage.as_ref().filter(|u| u.is_object()).and_then(usage_from_openai) {
            self.usage = Some(u);
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            let d = &choice.delta;
            if let Some(r) = d.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
                self.reasoning(r, out);
            }
            if let Some(t) = d.content.as_deref().filter(|t| !t.is_empty()) {
                self.message_delta(PartKind::Text, t, out);
            }
            if let Some(r) = d.refusal.as_deref().filter(|r| !r.is_empty()) {
                self.message_delta(PartKind::Refusal, r, out);
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
            self.complete(out);
        }
    }
}

impl StreamTranslate for StreamTranslator {
    fn event(&mut self, event: &Event, out: &mut Vec<u8>) {
        if !self.done && !event.data.is_empty() {
            self.handle(&event.data, out);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.finish_reason.is_some() {
            self.complete(out);
        } else {
            self.fail_with(None, "stream_incomplete", "upstream stream ended before finish_reason", out);
        }
    }

    fn fail(&mut self, status: u16, message: &str, code: &str, out: &mut Vec<u8>) -> bool {
        self.fail_with(Some(status), code, message, out);
        true
    }

    fn is_done(&self) -> bool {
        self.done
    }
}
