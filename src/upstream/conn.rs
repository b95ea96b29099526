//! One upstream connection: writing a request (its body copied as it comes), reading and parsing the
//! response head, and telling an idle pooled connection still open. No pool and no body reading here.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use may::net::TcpStream;

use crate::cancel::{self, Cancel};
use crate::chunked::ChunkedDecoder;
use crate::deadline::Deadline;
use crate::readbuf::ReadBuf;
use crate::tls::ClientStream;

use super::headers::ResponseHeaders;

const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Pieces of a streamed body read and written at a time.
const STREAM_PIECE: usize = 64 * 1024;

/// Which side of a body copy failed.
pub(super) enum Copy {
    /// Reading what the client sends.
    Source(io::Error),
    /// Writing to the upstream.
    Sink(io::Error),
}

/// One chunk of a chunked request body (nothing for an empty piece: that would end the body).
pub(super) fn write_chunk(conn: &mut Conn, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut framed = Vec::with_capacity(data.len() + 12);
    let _ = write!(framed, "{:x}\r\n", data.len());
    framed.extend_from_slice(data);
    framed.extend_from_slice(b"\r\n");
    conn.write_all(&framed)
}

/// Copies `rest` to the connection as it comes, a piece at a time (and the last chunk when chunked).
pub(super) fn copy_body(conn: &mut Conn, rest: &mut dyn Read, chunked: bool) -> Result<(), Copy> {
    let mut piece = vec![0u8; STREAM_PIECE];
    loop {
        let n = match rest.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Source(e)),
        };
        let written = if chunked { write_chunk(conn, &piece[..n]) } else { conn.write_all(&piece[..n]) };
        written.map_err(Copy::Sink)?;
    }
    if chunked {
        conn.write_all(b"0\r\n\r\n").map_err(Copy::Sink)?;
    }
    Ok(())
}

/// One upstream connection with its read buffer.
pub(super) struct Conn {
    /// Ends reads that outlast their timeout (declared first: it unregisters before the socket closes).
    pub(super) deadline: Deadline,
    pub(super) io: ClientStream,
    pub(super) fd: RawFd,
    pub(super) buf: ReadBuf,
    /// The `Cancel` of the request using the connection (set when it is taken for a request, dropped
    /// when it goes back to the pool): its reads and writes register with it.
    pub(super) cancel: Option<Arc<Cancel>>,
}

/// A parsed response head: status, lower-cased headers, body framing, whether the connection stays.
pub(super) struct ResponseHead {
    pub(super) status: u16,
    pub(super) headers: ResponseHeaders,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
}

pub(super) enum HeadError {
    ClosedBeforeResponse,
    Io(io::Error),
    Malformed(String),
}

/// How a response body ends.
pub(super) enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the server closes (the connection is not reused).
    Close,
}

impl Conn {
    pub(super) fn socket(&self) -> &TcpStream {
        self.io.socket()
    }

    pub(super) fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        let _in_flight = cancel::in_flight(self.cancel.as_deref(), self.fd)?;
        self.io.write_all(data)
    }

    /// Reads what is available into the buffer, waiting at most `timeout`; returns how much came (0: the
    /// peer closed). The wait is bounded by the connection's `Deadline`, not a socket timeout.
    pub(super) fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        self.read_within(timeout, Conn::read_available)
    }

    /// [`Conn::fill`], reading into `out` instead of the buffer (which must be empty): a large body goes
    /// to its destination in as few reads as the socket allows, without a copy through the buffer.
    pub(super) fn fill_into(&mut self, out: &mut [u8], timeout: Duration) -> io::Result<usize> {
        debug_assert!(self.buf.is_empty());
        self.read_within(timeout, |conn| loop {
            match conn.io.read(out) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        })
    }

    /// One read by `read`, bounded by the connection's deadline and cancelled if the client leaves.
    fn read_within(
        &mut self,
        timeout: Duration,
        read: impl FnOnce(&mut Conn) -> io::Result<usize>,
    ) -> io::Result<usize> {
        // Held apart from the connection while `read` has it.
        let cancel = self.cancel.take();
        let result = self.read_registered(cancel.as_deref(), timeout, read);
        self.cancel = cancel;
        result
    }

    fn read_registered(
        &mut self,
        cancel: Option<&Cancel>,
        timeout: Duration,
        read: impl FnOnce(&mut Conn) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let in_flight = cancel::in_flight(cancel, self.fd)?;
        self.deadline.arm(timeout);
        let result = read(self);
        self.deadline.disarm();
        if in_flight.client_left() {
            return Err(cancel::client_left());
        }
        // Bytes that made it before the socket was shut down are still handed out; the next read fails.
        if self.deadline.expired() && !matches!(result, Ok(n) if n > 0) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no data within the timeout"));
        }
        result
    }

    fn read_available(&mut self) -> io::Result<usize> {
        let io = &mut self.io;
        self.buf.read_with(1024, |space| loop {
            match io.read(space) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        })
    }

    /// Reads and parses a response head (skipping `100 Continue`s).
    pub(super) fn read_head(&mut self, timeout: Duration) -> Result<ResponseHead, HeadError> {
        // A coarse clock's deadline (`clock::coarse_deadline`): it only ever ends a wait.
        let deadline = crate::clock::coarse_deadline(timeout);
        let mut received_any = false;
        // The first wait has the whole timeout: no second clock read for it.
        let mut first_wait = true;
        loop {
            if !self.buf.is_empty() {
                // Left uninitialised: httparse writes the slots it fills.
                let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; 64];
                let mut resp = httparse::Response::new(&mut []);
                let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                    &mut resp,
                    self.buf.pending(),
                    &mut slots,
                );
                match parsed {
                    Ok(httparse::Status::Complete(len)) => {
                        let status = resp.code.unwrap_or(0);
                        let http10 = resp.version == Some(0);
                        let mut headers = ResponseHeaders::with_capacity(resp.headers.len(), len);
                        for header in resp.headers.iter() {
                            headers.push(header.name, header.value);
                        }
                        self.buf.consume(len);
                        if (100..200).contains(&status) {
                            continue;
                        }
                        let (framing, keep_alive) = framing(&headers, http10, status).map_err(HeadError::Malformed)?;
                        return Ok(ResponseHead { status, headers, framing, keep_alive });
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() >= MAX_HEAD_BYTES => {
                        return Err(HeadError::Malformed(format!("response head over {MAX_HEAD_BYTES} bytes")))
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => return Err(HeadError::Malformed(e.to_string())),
                }
            }
            let left = if first_wait { timeout } else { crate::clock::coarse_left(deadline) };
            first_wait = false;
            if left.is_zero() {
                return Err(HeadError::Io(io::Error::new(io::ErrorKind::TimedOut, "response head")));
            }
            match self.fill(left) {
                Ok(0) if !received_any => return Err(HeadError::ClosedBeforeResponse),
                Ok(0) => return Err(HeadError::Malformed("connection closed inside the response head".into())),
                Ok(_) => received_any = true,
                Err(e)
                    if !received_any
                        && matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) =>
                {
                    return Err(HeadError::ClosedBeforeResponse)
                }
                Err(e) => return Err(HeadError::Io(e)),
            }
        }
    }

    /// Whether an idle pooled connection is still usable: nothing to read, not closed.
    pub(super) fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() || self.deadline.expired() {
            return false;
        }
        // Nothing has come (no byte, no close) since the last response was read whole: open, without a
        // system call. Otherwise the peek tells.
        self.io.quiet_since_drained() || !self.arriving()
    }

    /// Whether bytes, or the peer's close, have reached the socket: a read now would not wait. may sockets
    /// are non-blocking underneath, so this is one peek that returns at once.
    pub(super) fn arriving(&self) -> bool {
        let mut byte = [0u8; 1];
        !matches!(self.socket().inner().peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Whether rustls holds decrypted bytes not yet read (they would belong to no request).
    pub(super) fn tls_has_pending(&mut self) -> bool {
        self.io.has_buffered_plaintext()
    }
}

/// How the body of a response with these headers is framed, and whether the connection stays open
/// (RFC 9112 §6.3: a final `chunked` coding wins; any other coding reads to close; both headers, or
/// an unusable length, mean the connection is not reused).
pub(super) fn framing(headers: &ResponseHeaders, http10: bool, status: u16) -> Result<(Framing, bool), String> {
    let get = |name: &'static str| headers.values(name);
    let close = get("connection").any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
    let keep = if http10 { get("connection").any(|v| v.eq_ignore_ascii_case("keep-alive")) } else { !close };
    if status == 204 || status == 304 {
        return Ok((Framing::Length(0), keep));
    }
    let codings: Vec<String> = get("transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let has_length = get("content-length").next().is_some();
    if let Some(last) = codings.last() {
        return Ok(if last == "chunked" {
            (Framing::Chunked(ChunkedDecoder::default()), keep && !has_length)
        } else {
            (Framing::Close, false)
        });
    }
    let mut lengths = get("content-length");
    match (lengths.next(), lengths.next()) {
        (Some(n), None) if !n.is_empty() && n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit()) => {
            n.parse::<u64>().map(|n| (Framing::Length(n), keep)).map_err(|_| format!("bad content-length {n:?}"))
        }
        (Some(n), None) => Err(format!("bad content-length {n:?}")),
        (Some(_), Some(_)) => Err("several content-length headers".into()),
        (None, _) => Ok((Framing::Close, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> ResponseHeaders {
        pairs.iter().copied().collect()
    }

    #[test]
    fn framing_follows_the_headers() {
        let (f, keep) = framing(&headers(&[("content-length", "12")]), false, 200).unwrap();
        assert!(matches!(f, Framing::Length(12)) && keep);
        let (f, _) = framing(&headers(&[("transfer-encoding", "chunked")]), false, 200).unwrap();
        assert!(matches!(f, Framing::Chunked(_)));
        let (f, keep) = framing(&headers(&[]), false, 200).unwrap();
        assert!(matches!(f, Framing::Close) && !keep);
        let (_, keep) = framing(&headers(&[("content-length", "1"), ("connection", "close")]), false, 200).unwrap();
        assert!(!keep);
        let (_, keep) = framing(&headers(&[("content-length", "1")]), true, 200).unwrap();
        assert!(!keep, "HTTP/1.0 closes by default");
        assert!(framing(&headers(&[("content-length", "x")]), false, 200).is_err());
        assert!(framing(&headers(&[("content-length", "1"), ("content-length", "2")]), false, 200).is_err());
        assert!(framing(&headers(&[("content-length", "+5")]), false, 200).is_err());
        let (f, keep) = framing(&headers(&[("transfer-encoding", "chunked, gzip")]), false, 200).unwrap();
        assert!(matches!(f, Framing::Close) && !keep, "chunked must be the final coding");
        let (f, keep) =
            framing(&headers(&[("transfer-encoding", "chunked"), ("content-length", "5")]), false, 200).unwrap();
        assert!(matches!(f, Framing::Chunked(_)) && !keep, "both headers: chunked wins, no reuse");
    }
}
