//! AWS event-stream framing for the stream pipeline (Bedrock's ConverseStream and InvokeModel): binary
//! messages decoded from the body, each an event of the family, or (InvokeModel) a `chunk` carrying one
//! base64-encoded; exception messages become failures with Bedrock's statuses.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Read;

use super::{Event, StreamFailure};
use crate::eventstream::{self, Message};

/// AWS event-stream messages.
pub(super) struct EventStreamFramer {
    decoder: eventstream::Decoder,
    messages: VecDeque<Message>,
    /// The message handed out last, and (for chunks) its decoded event.
    current: Option<Message>,
    /// The event a `chunk` carried, and its `type`.
    chunk: Vec<u8>,
    chunk_type: String,
    /// `chunk` events carry the family's events base64-encoded (InvokeModel).
    chunks: bool,
    scratch: Vec<u8>,
    failed: bool,
}

impl EventStreamFramer {
    pub(super) fn new(chunks: bool) -> EventStreamFramer {
        EventStreamFramer {
            decoder: eventstream::Decoder::new(),
            messages: VecDeque::new(),
            current: None,
            chunk: Vec::new(),
            chunk_type: String::new(),
            chunks,
            scratch: Vec::new(),
            failed: false,
        }
    }

    /// Reads up to `chunk` bytes from `body` and decodes them; 0 at the end.
    pub(super) fn read_from(&mut self, body: &mut dyn Read, chunk: usize) -> std::io::Result<usize> {
        self.scratch.resize(chunk, 0);
        let n = body.read(&mut self.scratch)?;
        let bytes = std::mem::take(&mut self.scratch);
        self.push(&bytes[..n]);
        self.scratch = bytes;
        Ok(n)
    }

    /// Decodes bytes; a decoding failure is queued behind the messages before it.
    pub(super) fn push(&mut self, bytes: &[u8]) {
        if let Err(failure) = self.decode(bytes) {
            self.messages.push_back(failure_message(&failure));
        }
    }

    /// Bytes held for a message that has not ended yet.
    pub(super) fn pending(&self) -> usize {
        self.decoder.pending()
    }

    /// Gives back the read buffer (before a long wait).
    pub(super) fn release_idle_memory(&mut self) {
        self.scratch = Vec::new();
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<(), StreamFailure> {
        if self.failed {
            return Ok(());
        }
        let mut decoded = Vec::new();
        let result = self.decoder.push(bytes, &mut decoded);
        self.messages.extend(decoded);
        result.map_err(|e| {
            self.failed = true;
            StreamFailure { status: 502, message: format!("invalid upstream event stream: {e}"), code: None }
        })
    }

    /// The next message as an event of the family, or the failure it reports.
    pub(super) fn next(&mut self) -> Option<Result<Event<'_>, StreamFailure>> {
        let message = self.messages.pop_front()?;
        let message = self.current.insert(message);
        match message.header_str(":message-type") {
            Some("event") | None => {}
            Some(other) => return Some(Err(exception(message, other))),
        }
        let name = message.header_str(":event-type");
        if !self.chunks {
            return Some(Ok(Event { name, data: Cow::Borrowed(&message.payload), raw: &[] }));
        }
        if name != Some("chunk") {
            // Not an event of the family (InvokeModel sends only chunks): nothing to relay.
            return Some(Ok(Event { name, data: Cow::Borrowed(&[]), raw: &[] }));
        }
        #[derive(serde::Deserialize)]
        struct Chunk<'c> {
            #[serde(borrow)]
            bytes: Cow<'c, str>,
        }
        #[derive(serde::Deserialize)]
        struct Typed<'c> {
            #[serde(borrow, rename = "type")]
            kind: Option<Cow<'c, str>>,
        }
        let decoded =
            serde_json::from_slice::<Chunk>(&message.payload).ok().and_then(|c| crate::base64::decode(&c.bytes).ok());
        let Some(decoded) = decoded else {
            return Some(Err(StreamFailure {
                status: 502,
                message: "an upstream chunk is not base64 JSON".into(),
                code: None,
            }));
        };
        self.chunk = decoded;
        self.chunk_type.clear();
        if let Some(kind) = serde_json::from_slice::<Typed>(&self.chunk).ok().and_then(|t| t.kind) {
            self.chunk_type.push_str(&kind);
        }
        let name = (!self.chunk_type.is_empty()).then_some(self.chunk_type.as_str());
        Some(Ok(Event { name, data: Cow::Borrowed(&self.chunk), raw: &[] }))
    }
}

/// An exception (or error) message as a failure with the status Bedrock gives the same exception
/// before a stream starts (a model's own status where `modelStreamErrorException` reports one).
fn exception(message: &Message, kind: &str) -> StreamFailure {
    let header = |name| message.header_str(name).map(str::to_string);
    if message.header_str(":error-code") == Some(INVALID_STREAM) {
        return StreamFailure { status: 502, message: header(":error-message").unwrap_or_default(), code: None };
    }
    let name = message.header_str(":exception-type").or_else(|| message.header_str(":error-code")).unwrap_or(kind);
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        #[serde(alias = "Message")]
        message: Option<String>,
        original_status_code: Option<u16>,
        original_message: Option<String>,
    }
    let body = serde_json::from_slice::<Body>(&message.payload).ok();
    let by_name = match name.trim_end_matches("Exception").to_ascii_lowercase().as_str() {
        "throttling" => 429,
        "validation" => 400,
        "modeltimeout" => 408,
        "modelstreamerror" => 424,
        "serviceunavailable" => 503,
        _ => 500,
    };
    let original = body.as_ref().and_then(|b| b.original_status_code).filter(|s| (400..=599).contains(s));
    let mut text =
        body.as_ref().and_then(|b| b.message.clone()).or_else(|| header(":error-message")).unwrap_or_default();
    if text.is_empty() {
        text = format!("upstream {name}");
    }
    if let Some(more) = body.and_then(|b| b.original_message).filter(|m| !m.is_empty()) {
        text = format!("{text} ({more})");
    }
    // `throttlingException` → `ThrottlingException`, as the error header would name it.
    let mut code = name.to_string();
    if let Some(first) = code.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    StreamFailure { status: original.unwrap_or(by_name), message: text, code: Some(code) }
}

/// The error code of a queued decoding failure.
const INVALID_STREAM: &str = "InvalidEventStream";

/// A decoding failure, queued as an exception message so that events before it are relayed first.
fn failure_message(failure: &StreamFailure) -> Message {
    use eventstream::HeaderValue::String as S;
    Message {
        headers: vec![
            (":message-type".into(), S("error".into())),
            (":error-code".into(), S(INVALID_STREAM.into())),
            (":error-message".into(), S(failure.message.clone())),
        ],
        payload: Vec::new(),
    }
}
