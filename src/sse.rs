//! Incremental Server-Sent-Events decoding and encoding, with no IO.
//!
//! The decoder follows the WHATWG event-stream parsing rules that matter for
//! LLM APIs:
//! * lines end with LF, CRLF or a lone CR; a CR that ends one `push` and an
//!   LF that starts the next one form a single line end;
//! * `field:value` and `field: value` are equivalent (one leading space of
//!   the value is dropped); a line without a colon is a field with an empty
//!   value;
//! * lines starting with `:` are comments; `id` and `retry` (and any unknown
//!   field) are ignored;
//! * several `data` lines of one event are joined with `\n`;
//! * an event is dispatched on a blank line, and only if it had at least one
//!   `data` line;
//! * bytes are buffered until a whole line is available, so multibyte UTF-8
//!   characters may be split across pushes at any byte. Invalid UTF-8 is
//!   replaced with U+FFFD.

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if the event had one.
    pub event: Option<String>,
    /// All `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental SSE decoder. Feed it bytes with [`SseDecoder::push`] and call
/// [`SseDecoder::finish`] once the byte stream has ended.
#[derive(Debug, Default)]
pub struct SseDecoder {
    line: Vec<u8>,
    after_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    /// A decoder in its initial state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes; every event completed by them is appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' && i == start {
                    // Second half of a CRLF whose CR ended the previous
                    // line (possibly in an earlier push).
                    i += 1;
                    start = i;
                    continue;
                }
            }
            if b == b'\n' || b == b'\r' {
                self.line.extend_from_slice(&bytes[start..i]);
                self.end_line(out);
                self.after_cr = b == b'\r';
                i += 1;
                start = i;
                continue;
            }
            i += 1;
        }
        self.line.extend_from_slice(&bytes[start..]);
    }

    /// Signal the end of the byte stream: a trailing line without a line end
    /// is processed, and a pending event that was not terminated by a blank
    /// line is dispatched.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        self.after_cr = false;
        self.dispatch(out);
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(p) => {
                let v = &line[p + 1..];
                let v = v.strip_prefix(b" ").unwrap_or(v);
                (&line[..p], v)
            }
            None => (&line[..], &[][..]),
        };
        match field {
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&String::from_utf8_lossy(value));
                self.has_data = true;
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if self.has_data {
            self.has_data = false;
            out.push(SseEvent { event, data: std::mem::take(&mut self.data) });
        }
    }
}

/// Append one SSE event to `out`: an optional `event:` line, one `data:` line
/// per line of `data` (so embedded newlines survive), and a blank line.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    // Any of CRLF, LF or CR in `data` would end the line for a decoder, so
    // each starts a new `data:` line.
    let mut rest = data;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r').unwrap_or(rest.len());
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&rest[..end]);
        out.push(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with(b"\r\n") { 2 } else { 1 };
        rest = &rest[end + skip..];
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: event.map(str::to_string), data: data.to_string() }
    }

    #[test]
    fn data_with_and_without_space_after_colon() {
        let out = decode_chunks(&[b"data: a\n\ndata:b\n\ndata:  c\n\n"]);
        assert_eq!(out, vec![ev(None, "a"), ev(None, "b"), ev(None, " c")]);
    }

    #[test]
    fn event_field_is_captured_and_reset_between_events() {
        let out = decode_chunks(&[b"event: ping\ndata: {}\n\ndata: x\n\n"]);
        assert_eq!(out, vec![ev(Some("ping"), "{}"), ev(None, "x")]);
    }

    #[test]
    fn lf_crlf_and_cr_line_ends_are_equivalent() {
        let lf = decode_chunks(&[b"event: a\ndata: 1\n\ndata: 2\n\n"]);
        let crlf = decode_chunks(&[b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n"]);
        let cr = decode_chunks(&[b"event: a\rdata: 1\r\rdata: 2\r\r"]);
        let expected = vec![ev(Some("a"), "1"), ev(None, "2")];
        assert_eq!(lf, expected);
        assert_eq!(crlf, expected);
        assert_eq!(cr, expected);
    }

    #[test]
    fn cr_at_end_of_push_and_lf_at_start_of_next_is_one_line_end() {
        // If the CR/LF pair were counted twice, the first event would be
        // dispatched after "data: 1" and "data: 2" would be a second event.
        let out = decode_chunks(&[b"data: 1\r", b"\ndata: 2\r", b"\n\r", b"\n"]);
        assert_eq!(out, vec![ev(None, "1\n2")]);
    }

    #[test]
    fn cr_followed_by_lf_in_a_later_push_after_empty_push() {
        let out = decode_chunks(&[b"data: 1\r", b"", b"\n", b"\r\n"]);
        assert_eq!(out, vec![ev(None, "1")]);
    }

    #[test]
    fn multiple_data_lines_are_joined_with_newline() {
        let out = decode_chunks(&[b"data: a\ndata: b\ndata:\ndata: c\n\n"]);
        assert_eq!(out, vec![ev(None, "a\nb\n\nc")]);
    }

    #[test]
    fn comments_are_ignored() {
        let out = decode_chunks(&[b": keep-alive\n\n:another\ndata: x\n: mid\n\n"]);
        assert_eq!(out, vec![ev(None, "x")]);
    }

    #[test]
    fn id_retry_and_unknown_fields_are_ignored() {
        let out = decode_chunks(&[b"id: 7\nretry: 100\nfoo: bar\ndata: x\n\nid: 8\n\n"]);
        assert_eq!(out, vec![ev(None, "x")]);
    }

    #[test]
    fn line_without_colon_is_field_with_empty_value() {
        let out = decode_chunks(&[b"data\ndata\n\n"]);
        assert_eq!(out, vec![ev(None, "\n")]);
    }

    #[test]
    fn blank_line_without_data_dispatches_nothing() {
        let out = decode_chunks(&[b"event: x\n\n\n\ndata: y\n\n"]);
        assert_eq!(out, vec![ev(None, "y")]);
    }

    #[test]
    fn finish_flushes_event_without_trailing_blank_line() {
        assert_eq!(decode_chunks(&[b"data: a\n"]), vec![ev(None, "a")]);
        assert_eq!(decode_chunks(&[b"event: e\ndata: a"]), vec![ev(Some("e"), "a")]);
        assert_eq!(decode_chunks(&[b"data: a\r"]), vec![ev(None, "a")]);
        assert!(decode_chunks(&[b"event: e\n"]).is_empty());
    }

    #[test]
    fn event_split_at_every_byte_gives_same_events() {
        let input = "event: message\r\ndata: {\"t\":\"héllo 🌍 世界\"}\r\n\r\n: c\ndata: 2\rdata: 3\n\n".as_bytes();
        let whole = decode_chunks(&[input]);
        assert_eq!(whole, vec![ev(Some("message"), "{\"t\":\"héllo 🌍 世界\"}"), ev(None, "2\n3")]);
        for i in 0..=input.len() {
            assert_eq!(decode_chunks(&[&input[..i], &input[i..]]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_chunks(&bytes), whole);
    }

    #[test]
    fn multibyte_utf8_split_across_pushes_is_reassembled() {
        let s = "data: 🌍\n\n".as_bytes();
        // The emoji occupies bytes 6..10; split inside it.
        let out = decode_chunks(&[&s[..7], &s[7..9], &s[9..]]);
        assert_eq!(out, vec![ev(None, "🌍")]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        let out = decode_chunks(&[b"data: a\xffb\n\n"]);
        assert_eq!(out, vec![ev(None, "a\u{fffd}b")]);
    }

    #[test]
    fn write_event_with_and_without_event_name() {
        let mut out = Vec::new();
        write_event(&mut out, Some("message_stop"), b"{\"type\":\"message_stop\"}");
        write_event(&mut out, None, b"[DONE]");
        assert_eq!(out, b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\ndata: [DONE]\n\n");
    }

    #[test]
    fn write_event_splits_multiline_data_and_round_trips() {
        let mut out = Vec::new();
        write_event(&mut out, Some("x"), b"a\nb\r\nc\rd\n");
        assert_eq!(out, b"event: x\ndata: a\ndata: b\ndata: c\ndata: d\ndata: \n\n");
        assert_eq!(decode_chunks(&[&out]), vec![ev(Some("x"), "a\nb\nc\nd\n")]);
    }
}
