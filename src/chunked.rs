//! Chunked transfer-coding (RFC 9112 §7.1), decoded incrementally and without IO: used by the server
//! for request bodies and by the upstream client for response bodies.

/// Decodes a chunked body incrementally: feed bytes as they arrive, in any split.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    /// Bytes left in the current chunk's data.
    remaining: u64,
    /// Length of the current size / trailer line (bounded).
    line_len: usize,
    size_digits: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    SizeExtension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    /// A trailer line with content: skip to its end.
    TrailerLine,
    Done,
}

impl ChunkedDecoder {
    /// Appends decoded data from `input` to `out`. Returns how many input bytes were consumed and whether
    /// the body is complete (bytes after the end belong to the next request).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), &'static str> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.size_digits += 1;
                        if self.size_digits > 15 {
                            return Err("chunk size too large");
                        }
                        self.remaining = self.remaining * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    }
                    b';' | b' ' | b'\t' if self.size_digits > 0 => self.state = ChunkState::SizeExtension,
                    b'\r' if self.size_digits > 0 => self.state = ChunkState::SizeLf,
                    _ => return Err("invalid chunk size"),
                },
                ChunkState::SizeExtension => {
                    self.line_len += 1;
                    if self.line_len > 4096 {
                        return Err("chunk extension too long");
                    }
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf;
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        return Err("invalid chunk size line");
                    }
                    self.size_digits = 0;
                    self.line_len = 0;
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
                        return Err("missing CRLF after chunk data");
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err("missing CRLF after chunk data");
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    self.state = if b == b'\r' { ChunkState::TrailerLf } else { ChunkState::TrailerLine };
                }
                ChunkState::TrailerLine => {
                    self.line_len += 1;
                    if self.line_len > 8192 {
                        return Err("trailer too long");
                    }
                    if b == b'\n' {
                        self.state = ChunkState::Trailer;
                    }
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err("invalid chunked body end");
                    }
                    self.state = ChunkState::Done;
                    return Ok((i + 1, true));
                }
                ChunkState::Done => return Ok((i, true)),
            }
            i += 1;
        }
        Ok((i, self.state == ChunkState::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_decoder_split_at_every_byte_gives_same_body() {
        let wire = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nTrailer: x\r\n\r\nNEXT";
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
        assert!(ChunkedDecoder::default().decode(b"zz\r\n", &mut Vec::new()).is_err());
        assert!(ChunkedDecoder::default().decode(b"3\r\nabcX", &mut Vec::new()).is_err());
        assert!(ChunkedDecoder::default().decode(b"ffffffffffffffff\r\n", &mut Vec::new()).is_err());
    }
}
