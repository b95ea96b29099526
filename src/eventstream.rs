//! The AWS binary event-stream framing (`application/vnd.amazon.eventstream`),
//! with no IO. Bedrock's ConverseStream and InvokeModelWithResponseStream
//! answer with it.
//!
//! A message (all integers big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 4 | total length, the whole message included (16 ..= 16 MiB) |
//! | 4 | headers length |
//! | 4 | prelude CRC: CRC-32 of the 8 bytes above |
//! | headers length | headers, back to back |
//! | total − headers − 16 | payload |
//! | 4 | message CRC: CRC-32 of everything before it, prelude CRC included |
//!
//! A header is a name length (u8), the UTF-8 name, a value type (u8) and a
//! value: 0 true and 1 false (no bytes), 2 i8, 3 i16, 4 i32, 5 i64, 6 bytes
//! and 7 UTF-8 string (u16 length, then the bytes), 8 timestamp (i64
//! milliseconds since the epoch), 9 UUID (16 bytes). CRC-32 is the IEEE /
//! ISO-HDLC one of zlib and Ethernet.
//!
//! AWS services name a message with string headers: `:message-type` is
//! `event`, `exception` or `error`; an event has `:event-type` (the member
//! name of the stream union, e.g. `contentBlockDelta` or `chunk`), an
//! exception has `:exception-type` (e.g. `throttlingException`), an error has
//! `:error-code` and `:error-message`; `:content-type` is the payload's media
//! type (`application/json`).

use std::fmt;

/// The largest total length accepted: 16 MiB, the format's own limit.
pub const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;

/// Prelude (12 bytes) plus message CRC (4 bytes): the size of an empty message.
const MIN_MESSAGE_LEN: usize = 16;

/// Total length, headers length and prelude CRC.
const PRELUDE_LEN: usize = 12;

/// Once drained, a decoder buffer larger than this is given back.
const KEPT_CAPACITY: usize = 64 * 1024;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Headers in wire order (a name may repeat).
    pub headers: Vec<(String, HeaderValue)>,
    /// The payload bytes, usually JSON.
    pub payload: Vec<u8>,
}

/// A typed header value. The variant order follows the wire type codes,
/// except that `Bool` covers both 0 (true) and 1 (false).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(Vec<u8>),
    String(String),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl HeaderValue {
    /// The text of a `String` value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl Message {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value of a string header, e.g. ":event-type", ":message-type", ":exception-type", ":error-code".
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(HeaderValue::as_str)
    }
}

/// Why a byte stream is not a valid event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The prelude CRC does not match the first 8 bytes of a message.
    PreludeCrc { expected: u32, actual: u32 },
    /// The message CRC does not match the bytes before it.
    MessageCrc { expected: u32, actual: u32 },
    /// A message declares a total length above [`MAX_MESSAGE_LEN`].
    TooLarge(usize),
    /// Lengths or headers that do not fit the format.
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::PreludeCrc { expected, actual } => {
                write!(f, "event stream prelude checksum mismatch: expected {expected:#010x}, computed {actual:#010x}")
            }
            DecodeError::MessageCrc { expected, actual } => {
                write!(f, "event stream message checksum mismatch: expected {expected:#010x}, computed {actual:#010x}")
            }
            DecodeError::TooLarge(len) => {
                write!(f, "event stream message of {len} bytes exceeds the {MAX_MESSAGE_LEN}-byte limit")
            }
            DecodeError::Malformed(what) => write!(f, "malformed event stream message: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Incremental decoder: frames may be split anywhere across pushes.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of an incomplete message (only ever one, from its first byte).
    buf: Vec<u8>,
    /// The first error; returned again by every later push.
    poisoned: Option<DecodeError>,
}

impl Decoder {
    /// A decoder at a message boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes; every message they complete is appended to `out`. After an error the decoder is poisoned
    /// (returns the same error again): a corrupt stream cannot be resynchronised. Messages completed before
    /// the error in the same push are still appended.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Message>) -> Result<(), DecodeError> {
        if let Some(e) = &self.poisoned {
            return Err(e.clone());
        }
        let result = if self.buf.is_empty() {
            // Decode straight from the caller's bytes; keep only the tail.
            decode_frames(bytes, out).map(|used| self.buf.extend_from_slice(&bytes[used..]))
        } else {
            self.buf.extend_from_slice(bytes);
            decode_frames(&self.buf, out).map(|used| self.consume(used))
        };
        if let Err(e) = &result {
            self.poisoned = Some(e.clone());
            self.buf = Vec::new();
        }
        result
    }

    /// Bytes held for an incomplete message (0 when the stream ended on a frame boundary).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Drops the first `used` bytes of the buffer. What stays is part of one
    /// message that arrived in the latest push, so the copy is amortised.
    fn consume(&mut self, used: usize) {
        if used == self.buf.len() && self.buf.capacity() > KEPT_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.drain(..used);
        }
    }
}

/// Decodes the complete messages at the front of `data` into `out` and
/// returns how many bytes they took.
fn decode_frames(data: &[u8], out: &mut Vec<Message>) -> Result<usize, DecodeError> {
    let mut used = 0;
    while let Some(total) = message_len(&data[used..])? {
        let Some(frame) = data.get(used..used + total) else { break };
        out.push(decode_message(frame)?);
        used += total;
    }
    Ok(used)
}

/// The total length of the message that starts `data`, once its prelude is
/// complete and checked; `None` while fewer than 12 bytes are there.
fn message_len(data: &[u8]) -> Result<Option<usize>, DecodeError> {
    let Some(prelude) = data.get(..PRELUDE_LEN) else { return Ok(None) };
    let expected = be_u32(&prelude[8..]);
    let actual = crc32(&prelude[..8]);
    if expected != actual {
        return Err(DecodeError::PreludeCrc { expected, actual });
    }
    let total = be_u32(prelude) as usize;
    let headers = be_u32(&prelude[4..]) as usize;
    if total < MIN_MESSAGE_LEN {
        return Err(DecodeError::Malformed("total length below the 16-byte minimum"));
    }
    if total > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLarge(total));
    }
    if headers > total - MIN_MESSAGE_LEN {
        return Err(DecodeError::Malformed("headers length exceeds the message"));
    }
    Ok(Some(total))
}

/// Decodes one whole message whose prelude [`message_len`] has checked.
fn decode_message(frame: &[u8]) -> Result<Message, DecodeError> {
    let (body, crc) = frame.split_at(frame.len() - 4);
    let expected = be_u32(crc);
    let actual = crc32(body);
    if expected != actual {
        return Err(DecodeError::MessageCrc { expected, actual });
    }
    let headers_len = be_u32(&frame[4..]) as usize;
    let (headers, payload) = body[PRELUDE_LEN..].split_at(headers_len);
    Ok(Message { headers: decode_headers(headers)?, payload: payload.to_vec() })
}

/// Decodes a headers block.
fn decode_headers(block: &[u8]) -> Result<Vec<(String, HeaderValue)>, DecodeError> {
    let mut cursor = Cursor { rest: block };
    let mut headers = Vec::new();
    while !cursor.rest.is_empty() {
        let name_len = usize::from(cursor.u8()?);
        let name = utf8(cursor.take(name_len)?, "header name is not UTF-8")?;
        headers.push((name, decode_value(&mut cursor)?));
    }
    Ok(headers)
}

/// Decodes a header value: its type byte, then the value.
fn decode_value(cursor: &mut Cursor<'_>) -> Result<HeaderValue, DecodeError> {
    Ok(match cursor.u8()? {
        0 => HeaderValue::Bool(true),
        1 => HeaderValue::Bool(false),
        2 => HeaderValue::Byte(i8::from_be_bytes(cursor.array()?)),
        3 => HeaderValue::Short(i16::from_be_bytes(cursor.array()?)),
        4 => HeaderValue::Int(i32::from_be_bytes(cursor.array()?)),
        5 => HeaderValue::Long(i64::from_be_bytes(cursor.array()?)),
        6 => HeaderValue::Bytes(cursor.short_bytes()?.to_vec()),
        7 => HeaderValue::String(utf8(cursor.short_bytes()?, "string header is not UTF-8")?),
        8 => HeaderValue::Timestamp(i64::from_be_bytes(cursor.array()?)),
        9 => HeaderValue::Uuid(cursor.array()?),
        _ => return Err(DecodeError::Malformed("unknown header value type")),
    })
}

/// Reads a headers block front to back.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.rest.len() {
            return Err(DecodeError::Malformed("header runs past the headers block"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A u16 length, then that many bytes.
    fn short_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = u16::from_be_bytes(self.array()?);
        self.take(usize::from(len))
    }
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Malformed(what))
}

/// The big-endian u32 at the start of `bytes` (callers pass at least 4).
fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// One whole message. For tests and test stand-ins of AWS services.
///
/// # Panics
///
/// On values the format cannot carry: a header name over 255 bytes, a bytes
/// or string value over 65,535 bytes, or a message over 16 MiB.
pub fn encode(headers: &[(&str, HeaderValue)], payload: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        let name_len = u8::try_from(name.len()).expect("event stream header name over 255 bytes");
        block.push(name_len);
        block.extend_from_slice(name.as_bytes());
        encode_value(value, &mut block);
    }
    let total = PRELUDE_LEN + block.len() + payload.len() + 4;
    assert!(total <= MAX_MESSAGE_LEN, "event stream message over 16 MiB");
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out.extend_from_slice(&block);
    out.extend_from_slice(payload);
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out
}

/// Appends a value's type byte and bytes.
fn encode_value(value: &HeaderValue, out: &mut Vec<u8>) {
    match value {
        HeaderValue::Bool(true) => out.push(0),
        HeaderValue::Bool(false) => out.push(1),
        HeaderValue::Byte(v) => typed(out, 2, &v.to_be_bytes()),
        HeaderValue::Short(v) => typed(out, 3, &v.to_be_bytes()),
        HeaderValue::Int(v) => typed(out, 4, &v.to_be_bytes()),
        HeaderValue::Long(v) => typed(out, 5, &v.to_be_bytes()),
        HeaderValue::Bytes(v) => short_bytes(out, 6, v),
        HeaderValue::String(v) => short_bytes(out, 7, v.as_bytes()),
        HeaderValue::Timestamp(v) => typed(out, 8, &v.to_be_bytes()),
        HeaderValue::Uuid(v) => typed(out, 9, v),
    }
}

fn typed(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    out.push(kind);
    out.extend_from_slice(bytes);
}

fn short_bytes(out: &mut Vec<u8>, kind: u8, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("event stream header value over 65,535 bytes");
    typed(out, kind, &len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// CRC-32 (IEEE 802.3 / ISO-HDLC, reflected polynomial 0xEDB88320), as zlib's `crc32`.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| CRC_TABLE[usize::from(c as u8 ^ b)] ^ (c >> 8))
}

/// The CRC of each byte value, for [`crc32`].
const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests;
