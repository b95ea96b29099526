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
mod tests {
    use super::*;

    fn s(v: &str) -> HeaderValue {
        HeaderValue::String(v.to_string())
    }

    /// A message with a prelude and message CRC made to fit `headers_block`
    /// (raw header bytes, possibly invalid).
    fn raw_frame(headers_block: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = (PRELUDE_LEN + headers_block.len() + payload.len() + 4) as u32;
        prelude_then(total, headers_block.len() as u32, &[headers_block, payload].concat())
    }

    /// A prelude for the given lengths with a correct CRC, then `rest` and a
    /// correct message CRC.
    fn prelude_then(total: u32, headers: u32, rest: &[u8]) -> Vec<u8> {
        let mut out = [total.to_be_bytes(), headers.to_be_bytes()].concat();
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out.extend_from_slice(rest);
        out.extend_from_slice(&crc32(&out).to_be_bytes());
        out
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
        let mut out = Vec::new();
        Decoder::new().push(bytes, &mut out).map(|()| out)
    }

    /// Headers and payload of one test message.
    type Frame<'a> = (Vec<(&'a str, HeaderValue)>, &'a [u8]);

    fn bedrock_like_stream() -> (Vec<u8>, Vec<Message>) {
        let frames: Vec<Frame> = vec![
            (
                vec![
                    (":event-type", s("messageStart")),
                    (":content-type", s("application/json")),
                    (":message-type", s("event")),
                ],
                br#"{"role":"assistant","p":"abcd"}"#,
            ),
            (vec![(":message-type", s("event")), (":event-type", s("contentBlockDelta"))], b""),
            (vec![], br#"{"contentBlockIndex":0,"delta":{"text":"Hello"}}"#),
            (
                vec![(":message-type", s("exception")), (":exception-type", s("throttlingException"))],
                br#"{"message":"Too many requests"}"#,
            ),
        ];
        let mut bytes = Vec::new();
        let mut messages = Vec::new();
        for (headers, payload) in frames {
            bytes.extend(encode(&headers, payload));
            let headers = headers.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
            messages.push(Message { headers, payload: payload.to_vec() });
        }
        (bytes, messages)
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    #[test]
    fn every_header_type_round_trips() {
        let headers = [
            ("true", HeaderValue::Bool(true)),
            ("false", HeaderValue::Bool(false)),
            ("byte", HeaderValue::Byte(-49)),
            ("short", HeaderValue::Short(-12345)),
            ("int", HeaderValue::Int(40972)),
            ("long", HeaderValue::Long(-42_424_242_424_242)),
            ("bytes", HeaderValue::Bytes(vec![0, 1, 254, 255])),
            ("empty bytes", HeaderValue::Bytes(vec![])),
            ("string", s("application/json; ünïcode")),
            ("timestamp", HeaderValue::Timestamp(1_700_000_000_123)),
            ("uuid", HeaderValue::Uuid([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])),
            ("", s("empty name")),
        ];
        let frame = encode(&headers, b"{\"k\":1}");
        let got = decode_all(&frame).unwrap();
        let want: Vec<(String, HeaderValue)> = headers.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        assert_eq!(got, vec![Message { headers: want, payload: b"{\"k\":1}".to_vec() }]);
    }

    #[test]
    fn the_longest_name_and_value_round_trip() {
        let name = "n".repeat(255);
        let value = HeaderValue::Bytes(vec![7; 65_535]);
        let got = decode_all(&encode(&[(&name, value.clone())], b"")).unwrap();
        assert_eq!(got[0].headers, vec![(name, value)]);
    }

    #[test]
    fn header_str_finds_string_headers_only() {
        let frame = encode(&[(":event-type", s("chunk")), (":n", HeaderValue::Int(1))], b"");
        let message = &decode_all(&frame).unwrap()[0];
        assert_eq!(message.header_str(":event-type"), Some("chunk"));
        assert_eq!(message.header_str(":n"), None);
        assert_eq!(message.header(":n"), Some(&HeaderValue::Int(1)));
        assert_eq!(message.header_str(":missing"), None);
    }

    #[test]
    fn an_empty_message_is_sixteen_bytes() {
        let frame = encode(&[], b"");
        assert_eq!(frame.len(), 16);
        assert_eq!(decode_all(&frame).unwrap(), vec![Message::default()]);
    }

    #[test]
    fn a_stream_fed_whole_gives_every_message() {
        let (bytes, want) = bedrock_like_stream();
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        decoder.push(&bytes, &mut got).unwrap();
        assert_eq!(got, want);
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn a_stream_fed_one_byte_at_a_time_gives_the_same_messages() {
        let (bytes, want) = bedrock_like_stream();
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            decoder.push(std::slice::from_ref(b), &mut got).unwrap();
            assert_eq!(decoder.pending() == 0, got.iter().map(encoded_len).sum::<usize>() == i + 1);
        }
        assert_eq!(got, want);
        assert_eq!(decoder.pending(), 0);
    }

    fn encoded_len(m: &Message) -> usize {
        let headers: Vec<(&str, HeaderValue)> = m.headers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        encode(&headers, &m.payload).len()
    }

    #[test]
    fn a_stream_split_at_every_offset_gives_the_same_messages() {
        let (bytes, want) = bedrock_like_stream();
        for cut in 0..=bytes.len() {
            let mut decoder = Decoder::new();
            let mut got = Vec::new();
            decoder.push(&bytes[..cut], &mut got).unwrap();
            decoder.push(&bytes[cut..], &mut got).unwrap();
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(decoder.pending(), 0);
        }
    }

    #[test]
    fn a_stream_split_at_every_pair_of_offsets_gives_the_same_messages() {
        let (bytes, want) = bedrock_like_stream();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut decoder = Decoder::new();
                let mut got = Vec::new();
                for part in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                    decoder.push(part, &mut got).unwrap();
                }
                assert_eq!(got, want, "cuts at {a} and {b}");
            }
        }
    }

    #[test]
    fn a_corrupted_byte_anywhere_is_rejected_by_the_matching_crc() {
        let frame = encode(&[(":event-type", s("chunk"))], br#"{"bytes":"eyJ9"}"#);
        for i in 0..frame.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = frame.clone();
                bad[i] ^= flip;
                let err = decode_all(&bad).unwrap_err();
                if i < PRELUDE_LEN {
                    assert!(matches!(err, DecodeError::PreludeCrc { .. }), "byte {i}: {err}");
                } else {
                    assert!(matches!(err, DecodeError::MessageCrc { .. }), "byte {i}: {err}");
                }
            }
        }
    }

    #[test]
    fn a_crc_error_reports_both_values() {
        let mut frame = encode(&[], b"x");
        let last = frame.len() - 1;
        frame[last] ^= 1;
        let expected = be_u32(&frame[last - 3..]);
        let actual = crc32(&frame[..last - 3]);
        assert_eq!(decode_all(&frame), Err(DecodeError::MessageCrc { expected, actual }));
    }

    #[test]
    fn messages_before_an_error_are_delivered_and_the_decoder_stays_poisoned() {
        let good = encode(&[(":event-type", s("chunk"))], b"1");
        let mut bad = encode(&[], b"2");
        bad[13] ^= 0x40;
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        let err = decoder.push(&[good.clone(), bad].concat(), &mut got).unwrap_err();
        assert!(matches!(err, DecodeError::MessageCrc { .. }));
        assert_eq!(got.len(), 1);
        assert_eq!(decoder.push(&good, &mut got), Err(err.clone()));
        assert_eq!(decoder.push(&[], &mut got), Err(err));
        assert_eq!(got.len(), 1);
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn a_truncated_stream_leaves_bytes_pending() {
        let (bytes, want) = bedrock_like_stream();
        // Where each message ends in `bytes`.
        let ends: Vec<usize> = want
            .iter()
            .scan(0, |end, m| {
                *end += encoded_len(m);
                Some(*end)
            })
            .collect();
        for cut in [1, 11, 12, ends[0] - 1, ends[0] + 1, ends[1] + 12, bytes.len() - 1] {
            let mut decoder = Decoder::new();
            let mut got = Vec::new();
            decoder.push(&bytes[..cut], &mut got).unwrap();
            let complete = ends.iter().take_while(|&&end| end <= cut).count();
            assert_eq!(got, want[..complete], "cut at {cut}");
            assert_eq!(decoder.pending(), cut - complete.checked_sub(1).map_or(0, |i| ends[i]), "cut at {cut}");
        }
    }

    #[test]
    fn an_absurd_total_length_is_rejected_from_the_prelude_alone() {
        let prelude = &prelude_then(u32::MAX, 0, &[])[..PRELUDE_LEN];
        let mut decoder = Decoder::new();
        assert_eq!(decoder.push(prelude, &mut Vec::new()), Err(DecodeError::TooLarge(u32::MAX as usize)));
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn the_size_limit_is_sixteen_mebibytes() {
        let at_limit = &prelude_then(MAX_MESSAGE_LEN as u32, 0, &[])[..PRELUDE_LEN];
        let mut decoder = Decoder::new();
        decoder.push(at_limit, &mut Vec::new()).unwrap();
        assert_eq!(decoder.pending(), PRELUDE_LEN);
        let over = &prelude_then(MAX_MESSAGE_LEN as u32 + 1, 0, &[])[..PRELUDE_LEN];
        assert_eq!(decode_all(over), Err(DecodeError::TooLarge(MAX_MESSAGE_LEN + 1)));
    }

    #[test]
    fn a_total_length_below_sixteen_is_malformed() {
        for total in [0, 12, 15] {
            let prelude = &prelude_then(total, 0, &[])[..PRELUDE_LEN];
            assert!(matches!(decode_all(prelude), Err(DecodeError::Malformed(_))), "total {total}");
        }
    }

    #[test]
    fn a_headers_length_beyond_the_message_is_malformed() {
        let frame = prelude_then(20, 5, b"abcd");
        assert!(matches!(decode_all(&frame), Err(DecodeError::Malformed(_))));
        let frame = prelude_then(20, 4, b"\x02ab\x00");
        assert!(decode_all(&frame).is_ok());
    }

    #[test]
    fn a_prelude_checksum_is_checked_before_the_lengths() {
        let mut prelude = prelude_then(u32::MAX, u32::MAX, &[])[..PRELUDE_LEN].to_vec();
        prelude[11] ^= 1;
        assert!(matches!(decode_all(&prelude), Err(DecodeError::PreludeCrc { .. })));
    }

    #[test]
    fn bad_header_blocks_are_malformed() {
        let cases: [&[u8]; 7] = [
            b"\x05abc",                   // name runs past the block
            b"\x01a",                     // no value type
            b"\x01a\x0a",                 // unknown value type
            b"\x01a\x04\x00\x00",         // truncated int
            b"\x01a\x07\x00\x05abc",      // string runs past the block
            b"\x01a\x07\x00\x02\xff\xfe", // string not UTF-8
            b"\x02\xc3\x28\x00",          // name not UTF-8
        ];
        for block in cases {
            let err = decode_all(&raw_frame(block, b"payload")).unwrap_err();
            assert!(matches!(err, DecodeError::Malformed(_)), "{block:?}: {err}");
        }
    }

    #[test]
    fn errors_display_as_sentences() {
        assert_eq!(
            DecodeError::PreludeCrc { expected: 1, actual: 0xABCD }.to_string(),
            "event stream prelude checksum mismatch: expected 0x00000001, computed 0x0000abcd"
        );
        assert_eq!(
            DecodeError::TooLarge(20_000_000).to_string(),
            "event stream message of 20000000 bytes exceeds the 16777216-byte limit"
        );
        assert_eq!(DecodeError::Malformed("x").to_string(), "malformed event stream message: x");
    }

    #[test]
    fn a_large_buffer_is_released_once_drained() {
        let big = encode(&[], &vec![b'x'; 200_000]);
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        decoder.push(&big[..10], &mut got).unwrap();
        decoder.push(&big[10..], &mut got).unwrap();
        assert_eq!(got[0].payload.len(), 200_000);
        assert_eq!(decoder.buf.capacity(), 0);
    }
}
