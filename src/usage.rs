//! Token usage from upstream responses, streamed or not, without IO.
//!
//! For streams, [`StreamUsage`] watches the upstream's SSE events: it reads usage where the schema puts
//! it (OpenAI's usage chunk; Anthropic's `message_start` and cumulative `message_delta`), counts content
//! events so a stream that ends without usage can be estimated rather than counted as zero, and can
//! remove the usage-only chunk the gateway asked for on the client's behalf.

use serde_json::Value;

use crate::readbuf::ReadBuf;
use crate::translate::{usage_from_anthropic, usage_from_openai, Usage};

/// The wire family an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
}

/// Usage in a complete (non-streamed) response body. Only `usage` is materialised; the rest of the
/// body is skipped without building a tree.
pub fn from_body(wire: Wire, body: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct UsageOnly {
        usage: Option<Value>,
    }
    let usage = serde_json::from_slice::<UsageOnly>(body).ok()?.usage?;
    match wire {
        Wire::OpenAi => usage_from_openai(&usage),
        Wire::Anthropic => usage_from_anthropic(&usage),
    }
}

/// Bytes read from the upstream at a time.
const READ_CHUNK: usize = 1024;

/// Watches (and optionally filters) an upstream SSE stream, event by event, in any split.
#[derive(Debug)]
pub struct StreamUsage {
    wire: Wire,
    /// Remove OpenAI's usage-only chunk (the client did not ask for it; the gateway did).
    strip_usage_chunk: bool,
    /// Bytes read and not yet taken out as complete events.
    pending: ReadBuf,
    /// Where, in `pending`, scanning for the end of the current event resumes (a line start): an event
    /// arriving in many reads is scanned once, not from its start at every read.
    scanned: usize,
    usage: Option<Usage>,
    content_events: u64,
}

impl StreamUsage {
    pub fn new(wire: Wire, strip_usage_chunk: bool) -> StreamUsage {
        StreamUsage {
            wire,
            strip_usage_chunk,
            pending: ReadBuf::with_step(READ_CHUNK),
            scanned: 0,
            usage: None,
            content_events: 0,
        }
    }

    /// Reads the next piece of the stream from `body` straight into the tap (no separate relay
    /// buffer); returns how many bytes came (0 at the end). They are `fresh(n)` until `drain`.
    pub fn read_from(&mut self, body: &mut dyn std::io::Read) -> std::io::Result<usize> {
        self.pending.read_with(READ_CHUNK, |space| body.read(space))
    }

    /// The last `n` bytes read.
    pub fn fresh(&self, n: usize) -> &[u8] {
        let pending = self.pending.pending();
        &pending[pending.len() - n..]
    }

    /// Reads usage from `input` without changing it.
    pub fn observe(&mut self, input: &[u8]) {
        self.pending.extend(input);
        self.drain(None);
    }

    /// Appends to `out` every complete event of `input` except a usage-only chunk; an incomplete event
    /// is held until its end arrives.
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.pending.extend(input);
        self.drain(Some(out));
    }

    /// Takes every complete event out of the tap, reading its usage; with `out`, the events to relay
    /// (all but a stripped usage-only chunk) are appended there.
    pub fn drain(&mut self, mut out: Option<&mut Vec<u8>>) {
        loop {
            let len = match scan_event(self.pending.pending(), self.scanned) {
                Ok(len) => len,
                Err(resume) => {
                    self.scanned = resume;
                    return;
                }
            };
            let event = &self.pending.pending()[..len];
            let strip = Self::inspect_event(
                self.wire,
                self.strip_usage_chunk,
                event,
                &mut self.usage,
                &mut self.content_events,
            );
            if let Some(out) = out.as_deref_mut() {
                if !strip {
                    out.extend_from_slice(event);
                }
            }
            self.pending.consume(len);
            self.scanned = 0;
        }
    }

    /// At the end of a filtered stream. A last event whose final line ended is completed with its blank
    /// line; one cut inside a line is not forwarded: returns `false` (the stream was truncated).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let rest = self.pending.pending().to_vec();
        self.pending.consume(rest.len());
        if !rest.ends_with(b"\n") && !rest.ends_with(b"\r") {
            return false;
        }
        let drop =
            Self::inspect_event(self.wire, self.strip_usage_chunk, &rest, &mut self.usage, &mut self.content_events);
        if !drop {
            out.extend_from_slice(&rest);
            out.extend_from_slice(b"\n");
        }
        true
    }

    /// Bytes held for an event that has not ended yet: an upstream that never ends its events must not
    /// grow them without bound.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The usage the stream reported, if it did.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// Content-bearing events seen: about one output token each (for streams that report no usage).
    pub fn content_events(&self) -> u64 {
        self.content_events
    }

    /// Updates usage and counts from one event; returns whether it is a usage-only chunk to strip.
    fn inspect_event(wire: Wire, strip: bool, event: &[u8], usage: &mut Option<Usage>, content: &mut u64) -> bool {
        let Some(data) = event_data(event) else { return false };
        if &data[..] == b"[DONE]" {
            return false;
        }
        // Only an event with a usage *object* is parsed (OpenAI puts `"usage":null` in every chunk
        // once usage is requested).
        if !has_usage_object(&data) {
            *content += 1;
            return false;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&data) else {
            *content += 1;
            return false;
        };
        match wire {
            Wire::OpenAi => {
                let usage_only = v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty);
                if let Some(u) = v.get("usage").filter(|u| u.is_object()).and_then(usage_from_openai) {
                    *usage = Some(u);
                }
                if !usage_only {
                    *content += 1;
                }
                strip && usage_only && v.get("usage").is_some_and(Value::is_object)
            }
            Wire::Anthropic => {
                match v.get("type").and_then(Value::as_str) {
                    Some("message_start") => {
                        if let Some(u) = v.pointer("/message/usage").and_then(usage_from_anthropic) {
                            *usage = Some(u);
                        }
                    }
                    Some("message_delta") => {
                        // Cumulative: fields present replace what message_start said.
                        if let Some(u) = v.get("usage") {
                            usage.get_or_insert_with(Usage::default).merge_anthropic(u);
                        }
                    }
                    _ => *content += 1,
                }
                false
            }
        }
    }
}

/// Length of the first complete event (through its blank line) in `buf`, scanning from `from`, a line
/// start before which the event has no blank line. `Err`: incomplete; scanning can resume at the
/// returned line start.
fn scan_event(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    let mut line_start = from;
    while i < buf.len() {
        match buf[i] {
            b'\n' => {
                if i == line_start {
                    return Ok(i + 1);
                }
                i += 1;
                line_start = i;
            }
            b'\r' => {
                // A CR at the very end may be the first half of a CRLF: wait for the next byte.
                let Some(&next) = buf.get(i + 1) else { return Err(line_start) };
                let end = if next == b'\n' { i + 2 } else { i + 1 };
                if i == line_start {
                    return Ok(end);
                }
                i = end;
                line_start = i;
            }
            _ => i += 1,
        }
    }
    Err(line_start)
}

/// The joined `data` lines of one raw event (`None` when it has none).
fn event_data(event: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    let mut data: Option<std::borrow::Cow<'_, [u8]>> = None;
    for line in event.split(|b| *b == b'\n' || *b == b'\r') {
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            match &mut data {
                Some(d) => {
                    let d = d.to_mut();
                    d.push(b'\n');
                    d.extend_from_slice(rest);
                }
                None => data = Some(std::borrow::Cow::Borrowed(rest)),
            }
        }
    }
    data
}

/// Whether `"usage"` appears followed by `:` and an object (not `null`).
fn has_usage_object(data: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    let mut from = 0;
    while let Some(at) = data[from..].windows(KEY.len()).position(|w| w == KEY) {
        let rest = &data[from + at + KEY.len()..];
        let mut value = rest.iter().skip_while(|b| b.is_ascii_whitespace());
        if value.next() == Some(&b':') && value.find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            return true;
        }
        from += at + KEY.len();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":null}\r\n\r\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn strips_the_usage_only_chunk_in_any_split_and_reads_it() {
        let expected = OPENAI.replace(
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
            "",
        );
        for split in 0..OPENAI.len() {
            let mut s = StreamUsage::new(Wire::OpenAi, true);
            let mut out = Vec::new();
            s.filter(&OPENAI.as_bytes()[..split], &mut out);
            s.filter(&OPENAI.as_bytes()[split..], &mut out);
            s.finish(&mut out);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "split {split}");
            assert_eq!(s.usage().unwrap().output_tokens, 2);
            assert_eq!(s.usage().unwrap().prompt_tokens(), 5);
            assert_eq!(s.content_events(), 2);
        }
    }

    #[test]
    fn observing_keeps_bytes_and_counts_when_no_usage_arrives() {
        let mut s = StreamUsage::new(Wire::OpenAi, false);
        let no_usage = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{}}]}\n\ndata: [DONE]\n\n";
        for b in no_usage.as_bytes() {
            s.observe(std::slice::from_ref(b));
        }
        assert!(s.usage().is_none());
        assert_eq!(s.content_events(), 2);
    }

    #[test]
    fn anthropic_usage_is_set_from_message_start_then_replaced_by_cumulative_deltas() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":10}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
        );
        let mut s = StreamUsage::new(Wire::Anthropic, false);
        s.observe(stream.as_bytes());
        let u = s.usage().unwrap();
        assert_eq!((u.input_tokens, u.output_tokens), (25, 15));
    }

    #[test]
    fn only_usage_objects_count_as_usage() {
        assert!(has_usage_object(br#"{"choices":[],"usage": {"prompt_tokens":1}}"#));
        assert!(!has_usage_object(br#"{"choices":[{"delta":{}}],"usage":null}"#));
        assert!(!has_usage_object(br#"{"content":"the word \"usage\" in text"}"#));
    }

    #[test]
    fn a_stream_cut_inside_a_line_is_reported_truncated() {
        let mut s = StreamUsage::new(Wire::OpenAi, false);
        let mut out = Vec::new();
        s.filter(b"data: {\"a\":1}\n\ndata: {\"choices\":[{\"del", &mut out);
        assert_eq!(out, b"data: {\"a\":1}\n\n");
        assert!(!s.finish(&mut out), "cut inside a line");
        assert_eq!(out, b"data: {\"a\":1}\n\n", "the partial event is not forwarded");
        let mut s = StreamUsage::new(Wire::OpenAi, false);
        let mut out = Vec::new();
        s.filter(b"data: [DONE]\n", &mut out);
        assert!(s.finish(&mut out));
        assert_eq!(out, b"data: [DONE]\n\n", "a last event without its blank line is completed");
    }

    #[test]
    fn body_usage_per_wire() {
        let u = from_body(Wire::OpenAi, br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#).unwrap();
        assert_eq!(u.output_tokens, 4);
        let u = from_body(Wire::Anthropic, br#"{"usage":{"input_tokens":3,"output_tokens":4}}"#).unwrap();
        assert_eq!(u.prompt_tokens(), 3);
        assert!(from_body(Wire::OpenAi, b"{}").is_none());
    }
}
