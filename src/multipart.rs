//! The `model` field of a `multipart/form-data` body (RFC 7578), found as the body arrives, without IO:
//! the gateway routes uploads (`/v1/audio/transcriptions`…) by it while the rest of the body streams
//! through. When a route renames the model, only that field's bytes change.

use std::ops::Range;

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    if !params.next()?.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

/// What a scan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// The field's value is not complete yet: scan again with more of the body.
    More,
    /// The value of the first `model` field (not a file), as a byte range of the scanned buffer.
    Found(Range<usize>),
    /// The body has no such field (or is not well-formed multipart).
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first delimiter.
    Preamble,
    /// At the start of a part's headers.
    Headers,
    /// Inside a part's content, up to the next delimiter; `model` says whether it is the field.
    Content { start: usize, model: bool },
}

/// Largest header block of one part.
const MAX_PART_HEAD: usize = 16 * 1024;

/// Scans a growing buffer for the `model` field, resuming where it stopped.
#[derive(Debug)]
pub struct ModelField {
    /// `\r\n--boundary`.
    delimiter: Vec<u8>,
    state: State,
    /// Where scanning resumes.
    pos: usize,
}

impl ModelField {
    pub fn new(boundary: &str) -> ModelField {
        ModelField { delimiter: format!("\r\n--{boundary}").into_bytes(), state: State::Preamble, pos: 0 }
    }

    /// Looks further into `buf` (the body from its start, longer than at the last call); `eof` when it
    /// is the whole body.
    pub fn scan(&mut self, buf: &[u8], eof: bool) -> Scan {
        loop {
            match self.state {
                State::Preamble => {
                    // The first delimiter may open the body (without the CRLF before it).
                    let first = &self.delimiter[2..];
                    let at = if buf.starts_with(first) {
                        Some(0)
                    } else if buf.len() < first.len() && first.starts_with(buf) {
                        None
                    } else {
                        find(buf, &self.delimiter, 0).map(|p| p + 2)
                    };
                    match at {
                        Some(p) => {
                            let Some(next) = self.after_delimiter(buf, p + first.len(), eof) else {
                                return if eof { Scan::Absent } else { Scan::More };
                            };
                            match next {
                                Some(start) => {
                                    self.pos = start;
                                    self.state = State::Headers;
                                }
                                None => return Scan::Absent,
                            }
                        }
                        None if eof || buf.len() > MAX_PART_HEAD => return Scan::Absent,
                        None => return Scan::More,
                    }
                }
                State::Headers => {
                    let Some(end) = find(buf, b"\r\n\r\n", self.pos) else {
                        return if eof || buf.len() - self.pos > MAX_PART_HEAD { Scan::Absent } else { Scan::More };
                    };
                    let model = is_model_field(&buf[self.pos..end]);
                    self.state = State::Content { start: end + 4, model };
                    self.pos = end + 4;
                }
                State::Content { start, model } => {
                    // Resume a little before the end of the last scan: a delimiter may straddle it.
                    let from = self.pos.max(start);
                    match find(buf, &self.delimiter, from) {
                        None => {
                            if eof {
                                return Scan::Absent;
                            }
                            self.pos = buf.len().saturating_sub(self.delimiter.len()).max(start);
                            return Scan::More;
                        }
                        Some(end) if model => return Scan::Found(start..end),
                        Some(end) => {
                            let Some(next) = self.after_delimiter(buf, end + self.delimiter.len(), eof) else {
                                self.pos = end;
                                return if eof { Scan::Absent } else { Scan::More };
                            };
                            match next {
                                Some(p) => {
                                    self.pos = p;
                                    self.state = State::Headers;
                                }
                                None => return Scan::Absent,
                            }
                        }
                    }
                }
            }
        }
    }

    /// After a delimiter at `at`: `Some(Some(p))` where the next part's headers start, `Some(None)` at
    /// the closing delimiter, `None` when more bytes are needed.
    fn after_delimiter(&self, buf: &[u8], at: usize, eof: bool) -> Option<Option<usize>> {
        let rest = &buf[at.min(buf.len())..];
        if rest.starts_with(b"--") {
            return Some(None);
        }
        // Transport padding (spaces, tabs) may follow the delimiter before its CRLF.
        let pad = rest.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
        match rest.get(pad..pad + 2) {
            Some(b"\r\n") => Some(Some(at + pad + 2)),
            Some(_) => Some(None),
            None if eof => Some(None),
            None => None,
        }
    }
}

/// Whether a part's headers say `Content-Disposition: form-data; name="model"` without a filename.
fn is_model_field(head: &[u8]) -> bool {
    let Ok(head) = std::str::from_utf8(head) else { return false };
    head.split("\r\n").any(|line| {
        let Some((name, value)) = line.split_once(':') else { return false };
        if !name.trim().eq_ignore_ascii_case("content-disposition") {
            return false;
        }
        let mut params = value.split(';').map(str::trim);
        if !params.next().is_some_and(|d| d.eq_ignore_ascii_case("form-data")) {
            return false;
        }
        let mut named_model = false;
        for p in params {
            let Some((k, v)) = p.split_once('=') else { continue };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
            match k.as_str() {
                "name" => named_model = v == "model",
                "filename" | "filename*" => return false,
                _ => {}
            }
        }
        named_model
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= haystack.len() || needle.is_empty() {
        return None;
    }
    haystack[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(model_first: bool) -> Vec<u8> {
        let file = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\
                    Content-Type: audio/mpeg\r\n\r\nID3\r\n--Xy fake model\r\n";
        let model = "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n";
        let mut b = String::new();
        if model_first {
            b.push_str(model);
            b.push_str(file);
        } else {
            b.push_str(file);
            b.push_str(model);
        }
        b.push_str("--XyZ--\r\n");
        b.into_bytes()
    }

    fn scan_growing(body: &[u8]) -> (Scan, usize) {
        let mut f = ModelField::new("XyZ");
        for n in 0..=body.len() {
            match f.scan(&body[..n], n == body.len()) {
                Scan::More => continue,
                other => return (other, n),
            }
        }
        unreachable!()
    }

    #[test]
    fn finds_the_model_field_in_any_order_as_bytes_arrive() {
        for model_first in [true, false] {
            let b = body(model_first);
            let (scan, _) = scan_growing(&b);
            let Scan::Found(r) = scan else { panic!("{scan:?}") };
            assert_eq!(&b[r], b"whisper-1");
        }
        let b = body(true);
        let (_, seen) = scan_growing(&b);
        assert!(seen < 100, "found before the file part: {seen}");
    }

    #[test]
    fn a_body_without_the_field_or_not_multipart_is_absent() {
        let b = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ--\r\n";
        assert_eq!(scan_growing(b).0, Scan::Absent);
        assert_eq!(ModelField::new("XyZ").scan(b"{\"model\":\"x\"}", true), Scan::Absent);
        let file_named_model =
            b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m\"\r\n\r\nx\r\n--XyZ--";
        assert_eq!(scan_growing(file_named_model).0, Scan::Absent);
        assert_eq!(boundary("multipart/form-data; boundary=\"a b\""), Some("a b".into()));
        assert_eq!(boundary("application/json"), None);
    }
}
