//! Chunked transfer-coding (RFC 9112 §7.1), decoded incrementally and without IO: used by the server
//! for request bodies and by the upstream client for response bodies.
//!
//! Strict, because a proxy and the next hop must agree on where a body ends: every line ends in CRLF
//! (a bare LF or a lone CR is an error), a chunk size is hex digits followed only by extensions
//! (`54 5` is an error), an extension is `;name[=value]` with a token name and a token or
//! quoted-string value (an empty one or a NUL is an error), and trailer lines are header fields
//! (`name: value`; a line without a colon, obs-fold and control characters are errors). So a trailer
//! section can never swallow the next pipelined request's head.

use std::fmt;

/// Longest chunk-size line (size and extensions).
const MAX_SIZE_LINE: usize = 4096;
/// Most trailer bytes in all.
const MAX_TRAILERS: usize = 8192;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// The coding is malformed (400).
    Invalid(&'static str),
    /// The decoded body would exceed the decoder's limit (413).
    TooLarge,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Invalid(m) => f.write_str(m),
            ChunkError::TooLarge => f.write_str("chunked body too large"),
        }
    }
}

impl std::error::Error for ChunkError {}

/// Decodes a chunked body incrementally: feed bytes as they arrive, in any split.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Bytes left in the current chunk's data.
    remaining: u64,
    size_digits: u32,
    /// The extensions of the current size line, or the current trailer line, until its CRLF.
    line: Vec<u8>,
    /// Trailer bytes seen so far.
    trailer_bytes: usize,
    /// Data bytes decoded so far, and the most allowed.
    decoded: u64,
    limit: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::with_limit(u64::MAX)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size: extensions up to the CR.
    SizeExtension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    Trailer,
    /// Inside a trailer line.
    TrailerLine,
    TrailerLineLf,
    /// The final CRLF's LF.
    TrailerLf,
    Done,
}

const fn invalid(m: &'static str) -> ChunkError {
    ChunkError::Invalid(m)
}

impl ChunkedDecoder {
    /// A decoder that refuses (`TooLarge`) a body whose data would exceed `limit` bytes, as soon as a
    /// chunk size announces it.
    pub fn with_limit(limit: u64) -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size,
            remaining: 0,
            size_digits: 0,
            line: Vec::new(),
            trailer_bytes: 0,
            decoded: 0,
            limit,
        }
    }

    /// Appends decoded data from `input` to `out`. Returns how many input bytes were consumed and whether
    /// the body is complete (bytes after the end belong to the next request).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.size_digits += 1;
                        if self.size_digits > 15 {
                            return Err(invalid("chunk size too large"));
                        }
                        self.remaining = self.remaining * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    }
                    b';' | b' ' | b'\t' if self.size_digits > 0 => {
                        self.line.clear();
                        self.line.push(b);
                        self.state = ChunkState::SizeExtension;
                    }
                    b'\r' if self.size_digits > 0 => self.end_size_line()?,
                    _ => return Err(invalid("invalid chunk size")),
                },
                ChunkState::SizeExtension => match b {
                    b'\r' => {
                        valid_extensions(&self.line)?;
                        self.end_size_line()?;
                    }
                    b'\n' => return Err(invalid("a chunk size line ends in a bare LF")),
                    0 => return Err(invalid("NUL in a chunk extension")),
                    _ => {
                        if self.line.len() >= MAX_SIZE_LINE {
                            return Err(invalid("chunk extension too long"));
                        }
                        self.line.push(b);
                    }
                },
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err(invalid("a chunk size line ends in a bare CR"));
                    }
                    self.size_digits = 0;
                    self.line = Vec::new();
                    self.state = if self.remaining == 0 { ChunkState::Trailer } else { ChunkState::Data };
                }
                ChunkState::Data => {
                    let take = (input.len() - i).min(self.remaining as usize);
                    out.extend_from_slice(&input[i..i + take]);
                    self.remaining -= take as u64;
                    i += take;
                    if self.remaining == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(invalid("missing CRLF after chunk data"));
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(invalid("missing CRLF after chunk data"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => match b {
                    b'\r' => self.state = ChunkState::TrailerLf,
                    b' ' | b'\t' => return Err(invalid("obs-fold in the chunked trailer section")),
                    b'\n' => return Err(invalid("a trailer line ends in a bare LF")),
                    _ => {
                        self.count_trailer_byte()?;
                        self.line.clear();
                        self.line.push(b);
                        self.state = ChunkState::TrailerLine;
                    }
                },
                ChunkState::TrailerLine => match b {
                    b'\r' => self.state = ChunkState::TrailerLineLf,
                    b'\n' => return Err(invalid("a trailer line ends in a bare LF")),
                    _ => {
                        self.count_trailer_byte()?;
                        self.line.push(b);
                    }
                },
                ChunkState::TrailerLineLf => {
                    if b != b'\n' {
                        return Err(invalid("a trailer line ends in a bare CR"));
                    }
                    valid_field_line(&self.line)?;
                    self.line.clear();
                    self.state = ChunkState::Trailer;
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(invalid("invalid chunked body end"));
                    }
                    self.line = Vec::new();
                    self.state = ChunkState::Done;
                    return Ok((i + 1, true));
                }
                ChunkState::Done => return Ok((i, true)),
            }
            i += 1;
        }
        Ok((i, self.state == ChunkState::Done))
    }

    /// At the CR of a size line: the size is known, so is whether it fits the limit.
    fn end_size_line(&mut self) -> Result<(), ChunkError> {
        self.decoded = self.decoded.saturating_add(self.remaining);
        if self.decoded > self.limit {
            return Err(ChunkError::TooLarge);
        }
        self.state = ChunkState::SizeLf;
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(invalid("chunked trailer section too long"));
        }
        Ok(())
    }
}

/// `tchar` of RFC 9110 §5.6.2.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        )
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, at least one, from what follows
/// the size digits (which starts with `;` or whitespace).
fn valid_extensions(line: &[u8]) -> Result<(), ChunkError> {
    let bad = invalid("invalid chunk extension");
    let ws = |i: &mut usize| {
        while *i < line.len() && matches!(line[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < line.len() && is_tchar(line[*i]) {
            *i += 1;
        }
        *i > start
    };
    let mut i = 0;
    ws(&mut i);
    if i == line.len() {
        return Err(invalid("whitespace after a chunk size"));
    }
    while i < line.len() {
        if line[i] != b';' {
            return Err(bad);
        }
        i += 1;
        ws(&mut i);
        if !token(&mut i) {
            return Err(invalid("empty chunk extension"));
        }
        ws(&mut i);
        if i < line.len() && line[i] == b'=' {
            i += 1;
            ws(&mut i);
            if i < line.len() && line[i] == b'"' {
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(bad),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => match line.get(i + 1) {
                            Some(&c) if c == b'\t' || c >= 0x20 && c != 0x7f => i += 2,
                            _ => return Err(bad),
                        },
                        Some(&c) if c == b'\t' || c >= 0x20 && c != 0x7f => i += 1,
                        Some(_) => return Err(bad),
                    }
                }
            } else if !token(&mut i) {
                return Err(bad);
            }
            ws(&mut i);
        }
    }
    Ok(())
}

/// `field-name ":" OWS field-value OWS` (RFC 9110 §5): a token, a colon with no whitespace before it,
/// then visible characters, spaces, tabs and obs-text only.
fn valid_field_line(line: &[u8]) -> Result<(), ChunkError> {
    let colon = line.iter().position(|b| *b == b':').ok_or(invalid("a trailer line without a colon"))?;
    if colon == 0 || !line[..colon].iter().all(|b| is_tchar(*b)) {
        return Err(invalid("invalid trailer field name"));
    }
    if !line[colon + 1..].iter().all(|&b| b == b'\t' || b >= 0x20 && b != 0x7f) {
        return Err(invalid("invalid trailer field value"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8]) -> Result<(usize, bool, Vec<u8>), ChunkError> {
        let mut out = Vec::new();
        let (used, done) = ChunkedDecoder::default().decode(wire, &mut out)?;
        Ok((used, done, out))
    }

    #[test]
    fn chunked_decoder_split_at_every_byte_gives_same_body() {
        let wire =
            b"5;ext=1\r\nhello\r\n1A ; a = \"q\\\"x\" ;b\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut whole = Vec::new();
        let (used, done) = ChunkedDecoder::default().decode(wire, &mut whole).unwrap();
        assert!(done);
        assert_eq!(&wire[used..], b"NEXT");
        assert_eq!(whole, b"helloabcdefghijklmnopqrstuvwxyz");
        for split in 0..wire.len() {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let (a, done_a) = d.decode(&wire[..split], &mut out).unwrap();
            let mut total = a;
            if !done_a {
                assert_eq!(a, split);
                let (b, done_b) = d.decode(&wire[split..], &mut out).unwrap();
                assert!(done_b);
                total += b;
            }
            assert_eq!(out, whole, "split at {split}");
            assert_eq!(total, used);
        }
    }

    #[test]
    fn chunked_decoder_refuses_garbage() {
        for bad in [
            &b"zz\r\n"[..],
            b"3\r\nabcX",
            b"ffffffffffffffff\r\n",
            b"54 5\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5;a\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: y\n\r\n",
            b"5\r\nhello\r\n0\r\nno colon here\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: y\r\n folded\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX : y\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: a\0b\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nX: y\rZ\r\n\r\n",
        ] {
            assert!(
                matches!(decode_all(bad), Err(ChunkError::Invalid(_))),
                "{:?} → {:?}",
                String::from_utf8_lossy(bad),
                decode_all(bad)
            );
        }
    }

    #[test]
    fn a_trailer_section_cannot_swallow_the_next_request() {
        // The client "forgot" the final CRLF: the next request's request line is not a field line.
        let wire = b"5\r\nhello\r\n0\r\nPOST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(decode_all(wire).unwrap_err(), ChunkError::Invalid("a trailer line without a colon"));
    }

    #[test]
    fn the_limit_is_checked_when_a_chunk_size_announces_it() {
        let mut d = ChunkedDecoder::with_limit(8);
        let mut out = Vec::new();
        assert_eq!(d.decode(b"5\r\nhello\r\n", &mut out), Ok((10, false)));
        assert_eq!(d.decode(b"4\r\n", &mut out), Err(ChunkError::TooLarge));
        let mut d = ChunkedDecoder::with_limit(8);
        assert_eq!(d.decode(b"8\r\n12345678\r\n0\r\n\r\n", &mut out).map(|r| r.1), Ok(true));
    }
}
