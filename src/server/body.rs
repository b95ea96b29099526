//! Streamed request bodies: uploads (`multipart/form-data`, `application/octet-stream`, audio, images,
//! video) are not read before the handler runs; the handler reads them through
//! [`super::Responder::body`] as it forwards them, so a 25 MiB upload never sits in memory whole.
//! Every other body (JSON, forms, text) is read whole first, as before, bounded by `max_body_bytes`.
//!
//! `Expect: 100-continue` is answered when the handler first reads (an early refusal needs no
//! body). The limit on a chunked body is enforced as it is decoded. A handler that answers without
//! reading the whole body makes the connection close after the response (announced with
//! `connection: close`), the unread rest drained for at most a second.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use crate::tls::ServerStream;

use super::http1::{BodyFraming, RequestHead};
use super::reader::{is_timeout, Reader};
use crate::chunked::ChunkedDecoder;

/// Whether a request's body is streamed to the handler rather than read first: uploads, by content
/// type.
pub fn streams_body(head: &RequestHead, framing: BodyFraming) -> bool {
    if matches!(framing, BodyFraming::None | BodyFraming::Length(0)) {
        return false;
    }
    let Some(kind) = head.header("content-type") else { return false };
    let kind = kind.trim_start().as_bytes();
    ["multipart/", "application/octet-stream", "audio/", "video/", "image/"]
        .iter()
        .any(|prefix| kind.get(..prefix.len()).is_some_and(|k| k.eq_ignore_ascii_case(prefix.as_bytes())))
}

/// Why reading a streamed body failed, with the status the client gets (in an `io::Error`).
#[derive(Debug, Clone)]
pub struct BodyError {
    pub status: u16,
    pub message: &'static str,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for BodyError {}

impl BodyError {
    fn io(status: u16, message: &'static str) -> io::Error {
        let kind = if status == 408 { io::ErrorKind::TimedOut } else { io::ErrorKind::InvalidData };
        io::Error::new(kind, BodyError { status, message })
    }

    /// The `BodyError` inside an `io::Error`, if that is what it carries.
    pub fn of(e: &io::Error) -> Option<&BodyError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<BodyError>())
    }
}

/// What remains of a streamed body.
pub(super) enum Remaining {
    /// Not streamed (read whole before the handler), or read to its end.
    Done,
    Length(u64),
    Chunked {
        decoder: ChunkedDecoder,
        decoded: Vec<u8>,
        at: usize,
        seen: u64,
    },
}

/// The streamed body of the request being handled.
pub(super) struct StreamedBody {
    pub(super) remaining: Remaining,
    /// `Content-Length`, when the body has one.
    pub(super) length: Option<u64>,
    /// `Expect: 100-continue` still to be answered.
    pub(super) continue_pending: bool,
    pub(super) timeout: Duration,
    pub(super) max: u64,
}

impl StreamedBody {
    pub(super) fn none() -> StreamedBody {
        StreamedBody {
            remaining: Remaining::Done,
            length: None,
            continue_pending: false,
            timeout: Duration::from_secs(10),
            max: 0,
        }
    }

    pub(super) fn new(framing: BodyFraming, expects_continue: bool, timeout: Duration, max: u64) -> StreamedBody {
        let (remaining, length) = match framing {
            BodyFraming::None => (Remaining::Done, None),
            BodyFraming::Length(n) => (Remaining::Length(n), Some(n)),
            BodyFraming::Chunked => {
                (Remaining::Chunked { decoder: ChunkedDecoder::default(), decoded: Vec::new(), at: 0, seen: 0 }, None)
            }
        };
        StreamedBody { remaining, length, continue_pending: expects_continue, timeout, max }
    }

    /// Whether body bytes remain unread.
    pub(super) fn unfinished(&self) -> bool {
        !matches!(self.remaining, Remaining::Done)
    }

    /// Reads the next piece of the body into `out` (0 at its end).
    pub(super) fn read(&mut self, stream: &mut ServerStream, reader: &mut Reader, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.continue_pending {
            self.continue_pending = false;
            if reader.buf.is_empty() {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
        }
        let timeout = self.timeout;
        let fail = |e: io::Error| {
            if is_timeout(&e) {
                BodyError::io(408, "request body not received in time")
            } else {
                BodyError::io(400, "connection closed before the body was complete")
            }
        };
        let closed = || BodyError::io(400, "connection closed before the body was complete");
        match &mut self.remaining {
            Remaining::Done => Ok(0),
            Remaining::Length(left) => {
                let want = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = if !reader.buf.is_empty() {
                    let n = want.min(reader.buf.len());
                    out[..n].copy_from_slice(&reader.buf.pending()[..n]);
                    reader.buf.consume(n);
                    n
                } else {
                    // Straight from the socket into the caller's buffer: nothing is held here.
                    let n = reader.read_into(stream, &mut out[..want], timeout).map_err(fail)?;
                    if n == 0 {
                        return Err(closed());
                    }
                    n
                };
                *left -= n as u64;
                if *left == 0 {
                    self.remaining = Remaining::Done;
                }
                Ok(n)
            }
            Remaining::Chunked { decoder, decoded, at, seen } => loop {
                if *at < decoded.len() {
                    let n = out.len().min(decoded.len() - *at);
                    out[..n].copy_from_slice(&decoded[*at..*at + n]);
                    *at += n;
                    return Ok(n);
                }
                decoded.clear();
                *at = 0;
                let (used, done) = decoder.decode(reader.buf.pending(), decoded).map_err(|e| match e {
                    crate::chunked::ChunkError::Invalid(m) => BodyError::io(400, m),
                    crate::chunked::ChunkError::TooLarge => BodyError::io(413, "request body too large"),
                })?;
                reader.buf.consume(used);
                *seen += decoded.len() as u64;
                if *seen > self.max {
                    self.remaining = Remaining::Done;
                    return Err(BodyError::io(413, "request body too large"));
                }
                if done {
                    let n = out.len().min(decoded.len());
                    out[..n].copy_from_slice(&decoded[..n]);
                    if n < decoded.len() {
                        // Hand out the rest first; the body ends after it.
                        *at = n;
                        return Ok(n);
                    }
                    self.remaining = Remaining::Done;
                    return Ok(n);
                }
                if decoded.is_empty() && reader.read_more(stream, 16 * 1024, timeout).map_err(fail)? == 0 {
                    return Err(closed());
                }
            },
        }
    }

    /// After the handler: reads and drops what is left of the body when that is little (the connection
    /// may then be kept); `false` when the connection must close.
    pub(super) fn finish(&mut self, stream: &mut ServerStream, reader: &mut Reader) -> bool {
        !self.unfinished() || self.drain(stream, reader)
    }

    /// [`Self::finish`] for a body the handler left unread. Out of line, with its 8 KiB buffer: inlined,
    /// that buffer joined the frame every request goes through (may's stack report: a streamed mock
    /// request's deepest point went from 10.1 to 9.4 KiB, `/health`'s to 8.1 KiB).
    #[inline(never)]
    fn drain(&mut self, stream: &mut ServerStream, reader: &mut Reader) -> bool {
        if matches!(self.remaining, Remaining::Length(n) if n > 64 * 1024) {
            super::linger(stream);
            return false;
        }
        self.continue_pending = false;
        let mut sink = [0u8; 8192];
        let started = Instant::now();
        let mut drained = 0usize;
        while self.unfinished() && drained < (256 * 1024) && started.elapsed() < Duration::from_secs(1) {
            match self.read(stream, reader, &mut sink) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(_) => return false,
            }
        }
        if self.unfinished() {
            super::linger(stream);
            return false;
        }
        true
    }
}

/// The streamed request body, read through the responder (see the module documentation).
pub struct RequestBody<'r, 'a> {
    pub(super) responder: &'r mut super::Responder<'a>,
}

impl<'a> super::Responder<'a> {
    /// The request body when it is streamed (`Request::body_streamed`); reads give 0 otherwise.
    pub fn body(&mut self) -> RequestBody<'_, 'a> {
        RequestBody { responder: self }
    }
}

impl Read for RequestBody<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let r = &mut *self.responder;
        r.body.read(r.stream, r.reader, out)
    }
}

impl RequestBody<'_, '_> {
    /// `Content-Length` of the body, when it has one.
    pub fn length(&self) -> Option<u64> {
        self.responder.body.length
    }

    /// Whether all of the body has been read.
    pub fn is_complete(&self) -> bool {
        !self.responder.body.unfinished()
    }
}
