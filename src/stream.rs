//! The stream pipeline, without IO: an upstream's streamed body is decoded from its framing once (SSE,
//! or AWS's binary event-stream), and each event is handed to the usage reader of the upstream's family
//! and to the translator of the (client, upstream) pair, which writes what the client receives.
//!
//! Bytes come in through [`StreamPipeline::read_from`] (straight into the framer's buffer) or
//! [`StreamPipeline::push`]; [`StreamPipeline::relay`] turns every complete event into client bytes;
//! [`StreamPipeline::finish`] ends the stream. An event split across reads waits for its end, so a
//! stream that fails mid-event still ends with a well-formed error event.

mod eventstream_framer;

use std::borrow::Cow;
use std::io::Read;

use crate::api::Api;
use crate::providers::Framing;
use crate::readbuf::ReadBuf;
use crate::translate::Usage;
use crate::usage::{EventKind, StreamUsage};
use eventstream_framer::EventStreamFramer;

/// One decoded upstream event.
#[derive(Debug)]
pub struct Event<'a> {
    /// SSE `event:`, the event-stream `:event-type`, or for InvokeModel chunks the inner event's `type`.
    pub name: Option<&'a str>,
    /// SSE `data` lines joined with `\n`, or the event-stream payload (for chunks: the decoded event).
    pub data: Cow<'a, [u8]>,
    /// The event's bytes as they came (SSE only; empty for binary frames), relayed unchanged when client
    /// and upstream speak the same family.
    pub raw: &'a [u8],
}

/// Turns upstream events of one family into client bytes of another (or the same) family.
pub trait StreamTranslate: Send {
    /// One upstream event; what the client should receive is appended to `out`.
    fn event(&mut self, event: &Event, out: &mut Vec<u8>);
    /// The upstream ended its stream (cleanly, as far as framing goes).
    fn finish(&mut self, out: &mut Vec<u8>);
    /// The stream failed (the upstream broke off, or sent what cannot be relayed): a translator whose
    /// client needs the failure in its own terms (Responses' numbered events) writes it and returns
    /// true; `false` leaves it to the pipeline's error event in the client's family.
    fn fail(&mut self, _status: u16, _message: &str, _code: &str, _out: &mut Vec<u8>) -> bool {
        false
    }
    /// The client's stream is complete (or failed): later events are ignored.
    fn is_done(&self) -> bool;
    /// The upstream refused the request before any content (a blocked prompt). The translator has
    /// also written an error event; a relay that has not sent its response head yet answers with this
    /// failure's status instead.
    fn refusal(&self) -> Option<&StreamFailure> {
        None
    }
}

/// Bytes read from the upstream at a time.
const READ_CHUNK: usize = 1024;

/// A stream failure the client must hear about, in its own error shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFailure {
    pub status: u16,
    pub message: String,
    /// The upstream's name for it (`ThrottlingException`), for the client's `error.code`.
    pub code: Option<String>,
}

/// The framing decoder.
enum Framer {
    Sse(SseFramer),
    EventStream(EventStreamFramer),
}

/// SSE events, found in place in the read buffer: bytes go in as they come, whole events come out.
pub struct SseFramer {
    pending: ReadBuf,
    /// Where, in `pending`, scanning for the end of the current event resumes (a line start): an event
    /// arriving in many reads is scanned once, not from its start at every read.
    scanned: usize,
    /// Length of the event handed out last, consumed at the next call.
    handed_out: usize,
}

impl Default for SseFramer {
    fn default() -> Self {
        SseFramer { pending: ReadBuf::with_step(READ_CHUNK), scanned: 0, handed_out: 0 }
    }
}

impl SseFramer {
    /// Gives back the buffer when no partial event is in it (before a long wait).
    pub fn release_idle_memory(&mut self) {
        self.pending.consume(std::mem::take(&mut self.handed_out));
        if self.pending.is_empty() {
            self.pending.shrink(0);
        }
    }

    /// Appends bytes (the event handed out last is released first).
    pub fn push(&mut self, bytes: &[u8]) {
        self.pending.consume(std::mem::take(&mut self.handed_out));
        self.pending.extend(bytes);
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Option<Event<'_>> {
        self.pending.consume(std::mem::take(&mut self.handed_out));
        if self.scanned == 0 {
            if let Some(event) = one_data_line(self.pending.pending()) {
                self.handed_out = event.raw.len();
                return Some(event);
            }
        }
        match scan_event(self.pending.pending(), self.scanned) {
            Err(resume) => {
                self.scanned = resume;
                None
            }
            Ok(len) => {
                self.scanned = 0;
                self.handed_out = len;
                let raw = &self.pending.pending()[..len];
                Some(sse_event(raw))
            }
        }
    }

    /// At the end: a last event whose final line ended is completed; one cut inside a line is an error.
    pub fn finish(&mut self) -> Result<Option<Event<'_>>, StreamFailure> {
        self.pending.consume(std::mem::take(&mut self.handed_out));
        let rest = self.pending.pending();
        if rest.is_empty() || rest.iter().all(|b| *b == b'\n' || *b == b'\r') {
            return Ok(None);
        }
        if !rest.ends_with(b"\n") && !rest.ends_with(b"\r") {
            return Err(StreamFailure {
                status: 502,
                message: "the upstream stream ended inside an event".into(),
                code: None,
            });
        }
        self.handed_out = rest.len();
        Ok(Some(sse_event(rest)))
    }
}

/// The event at the start of `buf` when it is the common kind, one `data:` line ended by LF and a blank
/// line ended by LF: found with one scan, and the same as [`scan_event`] then [`sse_event`] give.
/// `None`: any other kind, or not complete yet.
fn one_data_line(buf: &[u8]) -> Option<Event<'_>> {
    let line = buf.strip_prefix(b"data:")?;
    let end = memchr::memchr2(b'\n', b'\r', line)?;
    if line[end] != b'\n' || line.get(end + 1) != Some(&b'\n') {
        return None;
    }
    let value = &line[..end];
    let data = value.strip_prefix(b" ").unwrap_or(value);
    Some(Event { name: None, data: Cow::Borrowed(data), raw: &buf[..b"data:".len() + end + 2] })
}

/// The fields of one raw SSE event.
fn sse_event(raw: &[u8]) -> Event<'_> {
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut name = None;
    let mut rest = raw;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr2(b'\n', b'\r', rest) {
            Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => (&rest[..i], i + 2),
            Some(i) => (&rest[..i], i + 1),
            None => (rest, rest.len()),
        };
        rest = &rest[next..];
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) => continue,
            Some(p) => (&line[..p], line[p + 1..].strip_prefix(b" ").unwrap_or(&line[p + 1..])),
            None if line.is_empty() => continue,
            None => (line, &[][..]),
        };
        match field {
            b"data" => match &mut data {
                Some(d) => {
                    let d = d.to_mut();
                    d.push(b'\n');
                    d.extend_from_slice(value);
                }
                None => data = Some(Cow::Borrowed(value)),
            },
            b"event" => name = std::str::from_utf8(value).ok(),
            _ => {}
        }
    }
    Event { name, data: data.unwrap_or(Cow::Borrowed(&[])), raw }
}

/// Length of the first complete event (through its blank line) in `buf`, scanning from `from`, a line
/// start before which the event has no blank line. `Err`: incomplete; scanning can resume at the
/// returned line start.
fn scan_event(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut line_start = from;
    while let Some(offset) = memchr::memchr2(b'\n', b'\r', &buf[line_start..]) {
        let i = line_start + offset;
        let end = if buf[i] == b'\r' {
            // A CR at the very end may be the first half of a CRLF: wait for the next byte.
            match buf.get(i + 1) {
                None => return Err(line_start),
                Some(b'\n') => i + 2,
                Some(_) => i + 1,
            }
        } else {
            i + 1
        };
        if i == line_start {
            return Ok(end);
        }
        line_start = end;
    }
    Err(line_start)
}

/// Decodes, reads usage from and translates one upstream stream.
pub struct StreamPipeline {
    framer: Framer,
    usage: StreamUsage,
    /// `None`: client and upstream speak the same family and events are relayed as they came.
    translator: Option<Box<dyn StreamTranslate>>,
    client: Api,
    /// A failure ended the client's stream: nothing more is written.
    failed: bool,
}

impl StreamPipeline {
    /// `strip_usage`: remove the usage-only chunk the gateway asked an OpenAI-family upstream for.
    pub fn new(
        framing: Framing,
        upstream: Api,
        client: Api,
        translator: Option<Box<dyn StreamTranslate>>,
        strip_usage: bool,
    ) -> StreamPipeline {
        let framer = match framing {
            Framing::Sse => Framer::Sse(SseFramer::default()),
            Framing::EventStream | Framing::EventStreamChunks => {
                Framer::EventStream(EventStreamFramer::new(framing == Framing::EventStreamChunks))
            }
        };
        StreamPipeline { framer, usage: StreamUsage::new(upstream, strip_usage), translator, client, failed: false }
    }

    /// Gives back read buffers that hold nothing (before a long wait for the upstream).
    pub fn release_idle_memory(&mut self) {
        match &mut self.framer {
            Framer::Sse(f) => f.release_idle_memory(),
            Framer::EventStream(f) => f.release_idle_memory(),
        }
    }

    /// Reads the next piece of the stream from `body` (straight into the SSE buffer); 0 at the end.
    pub fn read_from(&mut self, body: &mut dyn Read) -> std::io::Result<usize> {
        match &mut self.framer {
            Framer::Sse(f) => {
                f.pending.consume(std::mem::take(&mut f.handed_out));
                f.pending.read_with(READ_CHUNK, |space| body.read(space))
            }
            Framer::EventStream(f) => f.read_from(body, 4 * READ_CHUNK),
        }
    }

    /// Appends bytes that were read elsewhere.
    pub fn push(&mut self, bytes: &[u8]) {
        match &mut self.framer {
            Framer::Sse(f) => f.push(bytes),
            Framer::EventStream(f) => f.push(bytes),
        }
    }

    /// Translates every complete event and appends the client's bytes to `out`.
    pub fn relay(&mut self, out: &mut Vec<u8>) {
        while !self.is_done() {
            let next = match &mut self.framer {
                Framer::Sse(f) => f.next_event().map(Ok),
                Framer::EventStream(f) => f.next(),
            };
            match next {
                None => return,
                Some(Ok(event)) => {
                    let kind = self.usage.observe(&event);
                    match &mut self.translator {
                        Some(t) => t.event(&event, out),
                        None if kind == EventKind::StrippedUsage => {}
                        None if event.raw.is_empty() => {
                            if !event.data.is_empty() {
                                crate::sse::write_event(out, event.name, &event.data);
                            }
                        }
                        None => out.extend_from_slice(event.raw),
                    }
                }
                Some(Err(failure)) => {
                    let code = failure.code.as_deref().unwrap_or(STREAM_ERROR_CODE);
                    self.fail_with(failure.status, &failure.message, code, out);
                }
            }
        }
    }

    /// The upstream ended its body: the last complete event is relayed, then the translator's end (or,
    /// for a stream cut inside an event, an error event).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.relay(out);
        if self.is_done() {
            return;
        }
        let last = match &mut self.framer {
            Framer::Sse(f) => f.finish().map(|e| e.map(|e| (e.name, e.data.into_owned(), e.raw.to_vec()))),
            Framer::EventStream(f) if f.pending() > 0 => Err(StreamFailure {
                status: 502,
                message: "the upstream stream ended inside an event".into(),
                code: None,
            }),
            Framer::EventStream(_) => Ok(None),
        };
        match last {
            Err(failure) => return self.fail(failure.status, &failure.message, out),
            Ok(Some((name, data, raw))) => {
                let name = name.map(str::to_string);
                let event = Event { name: name.as_deref(), data: Cow::Owned(data), raw: &raw };
                let kind = self.usage.observe(&event);
                match &mut self.translator {
                    Some(t) => t.event(&event, out),
                    None if kind == EventKind::StrippedUsage => {}
                    None => {
                        out.extend_from_slice(&raw);
                        out.extend_from_slice(b"\n");
                    }
                }
            }
            Ok(None) => {}
        }
        if let Some(t) = &mut self.translator {
            t.finish(out);
        }
    }

    /// Ends the client's stream with an error event (the upstream failed or misbehaved mid-stream).
    pub fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if !self.is_done() {
            self.fail_with(status, message, STREAM_ERROR_CODE, out);
        }
    }

    /// The failure in the translator's terms when it has its own, else the client family's error event.
    fn fail_with(&mut self, status: u16, message: &str, code: &str, out: &mut Vec<u8>) {
        self.failed = true;
        let written = self.translator.as_mut().is_some_and(|t| t.fail(status, message, code, out));
        if !written {
            out.extend_from_slice(&error_event(self.client, status, message, code));
        }
    }

    /// The client's stream ended (complete or failed): nothing more is written.
    pub fn is_done(&self) -> bool {
        self.failed || self.translator.as_ref().is_some_and(|t| t.is_done())
    }

    /// The upstream refused the request before any content (see [`StreamTranslate::refusal`]).
    pub fn refusal(&self) -> Option<&StreamFailure> {
        self.translator.as_ref().and_then(|t| t.refusal())
    }

    /// Bytes held for an event that has not ended yet.
    pub fn pending_len(&self) -> usize {
        match &self.framer {
            Framer::Sse(f) => f.pending.len() - f.handed_out,
            Framer::EventStream(f) => f.pending(),
        }
    }

    /// The usage the stream reported, if it did.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.usage()
    }

    /// The model the upstream named in its events, if it did.
    pub fn response_model(&self) -> Option<&str> {
        self.usage.model()
    }

    /// Also collect the finish reasons the upstream sends (for traces).
    pub fn collect_finish_reasons(&mut self) {
        self.usage.collect_finish_reasons();
    }

    pub fn finish_reasons(&self) -> &[String] {
        self.usage.finish_reasons()
    }

    /// Whether the client's stream was ended by a failure (an error event was written).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Content-bearing events seen: about one output token each (for streams that report no usage).
    pub fn content_events(&self) -> u64 {
        self.usage.content_events()
    }
}

/// `error.code` of a stream that failed for a reason the upstream did not name.
const STREAM_ERROR_CODE: &str = "upstream_stream_error";

/// An SSE error event in the client's family. (Responses clients get an `error` event; its
/// `sequence_number` is known only to the stream's translator, which writes its own when it can.)
pub fn error_event(client: Api, status: u16, message: &str, code: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 128);
    if client == Api::Responses {
        let body = serde_json::json!({"type": "error", "code": code, "message": message, "param": null});
        crate::sse::write_event(&mut out, Some("error"), body.to_string().as_bytes());
        return out;
    }
    let body = crate::error::error_body(client, status, message, Some(code));
    crate::sse::write_event(&mut out, client.is_anthropic().then_some("error"), &body);
    out
}

/// Two stream translators in series: the first one's client bytes (SSE in an intermediate family) are
/// framed again and fed to the second, whose output the client receives. This is how one translator
/// to OpenAI Chat Completions (`responses_openai`) reaches every family an OpenAI client can: upstream
/// events → chat chunks → Responses events.
pub struct Composed {
    first: Box<dyn StreamTranslate>,
    between: SseFramer,
    second: Box<dyn StreamTranslate>,
    scratch: Vec<u8>,
}

impl Composed {
    pub fn new(first: Box<dyn StreamTranslate>, second: Box<dyn StreamTranslate>) -> Composed {
        Composed { first, between: SseFramer::default(), second, scratch: Vec::new() }
    }

    /// Hands every complete intermediate event to the second translator.
    fn drain(&mut self, out: &mut Vec<u8>) {
        self.between.push(&self.scratch);
        self.scratch.clear();
        while !self.second.is_done() {
            let Some(event) = self.between.next_event() else { return };
            self.second.event(&event, out);
        }
    }
}

impl StreamTranslate for Composed {
    fn event(&mut self, event: &Event, out: &mut Vec<u8>) {
        self.first.event(event, &mut self.scratch);
        self.drain(out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.first.finish(&mut self.scratch);
        self.drain(out);
        if self.second.is_done() {
            return;
        }
        match self.between.finish() {
            Ok(Some(event)) => self.second.event(&event, out),
            Ok(None) => {}
            Err(failure) => {
                self.second.fail(failure.status, &failure.message, STREAM_ERROR_CODE, out);
            }
        }
        if !self.second.is_done() {
            self.second.finish(out);
        }
    }

    fn fail(&mut self, status: u16, message: &str, code: &str, out: &mut Vec<u8>) -> bool {
        self.second.fail(status, message, code, out)
    }

    fn is_done(&self) -> bool {
        self.second.is_done()
    }
}

#[cfg(test)]
mod tests;
