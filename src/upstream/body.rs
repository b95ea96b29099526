//! A response body as it arrives (length, chunked or to close), handing its connection back to the
//! pool when read to its end on a keep-alive response.

use std::io::{self, Read};
use std::sync::Arc;
use std::time::Duration;

use super::conn::{Conn, Framing};
use super::UpstreamClient;

/// A response body, read as it arrives. Read to its end on a keep-alive response, the connection goes
/// back to the backend's pool; dropped earlier, it is closed.
pub struct Body {
    pub(super) conn: Option<Conn>,
    pub(super) client: Arc<UpstreamClient>,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
    /// Decoded bytes of a chunked body not yet handed out.
    pub(super) decoded: Vec<u8>,
    pub(super) decoded_at: usize,
    pub(super) done: bool,
}

impl Body {
    /// Reads more of the body into the connection's buffer, waiting at most the idle timeout since the
    /// last bytes came.
    fn fill(conn: &mut Conn, idle: Duration) -> io::Result<usize> {
        conn.fill(idle)
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(mut conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() && !conn.tls_has_pending() {
                // A connection at rest keeps one small buffer (its next response reads into it without
                // an allocation and a zero-fill), nothing a large body made it grow to.
                conn.buf.shrink(crate::readbuf::INITIAL);
                self.client.checkin(conn);
            }
        }
    }
}

/// A response body as the relay reads it: besides `Read`, whether more is ready without waiting, and
/// whether it has ended, so that what arrived together leaves together (one client write).
pub trait ResponseBody: Read + Send {
    /// Bytes are ready to be read without waiting on the network.
    fn buffered(&self) -> bool;
    /// The body has ended and everything was read.
    fn finished(&self) -> bool;
    /// A read now would not wait on the network: bytes are buffered, or have reached the socket (a peek,
    /// one system call), or the body has ended.
    fn arriving(&self) -> bool {
        self.buffered()
    }
    /// Gives back buffers that hold nothing (before a long wait).
    fn release_idle_memory(&mut self) {}
    /// Appends the rest of the body to `out`; an error when `out` would hold more than `limit` bytes.
    fn read_whole(&mut self, out: &mut Vec<u8>, limit: u64) -> io::Result<()> {
        read_rest(self, out, limit)
    }
}

/// [`ResponseBody::read_whole`] through `Read`.
fn read_rest<B: ResponseBody + ?Sized>(body: &mut B, out: &mut Vec<u8>, limit: u64) -> io::Result<()> {
    let exceeds = || io::Error::other(format!("the upstream body exceeds {limit} bytes"));
    if out.len() as u64 > limit {
        return Err(exceeds());
    }
    if body.finished() {
        return Ok(());
    }
    let room = limit - out.len() as u64;
    body.take(room).read_to_end(out)?;
    // One byte past the limit tells a body that ends there from one that goes on.
    match body.read(&mut [0u8; 1])? {
        0 => Ok(()),
        _ => Err(exceeds()),
    }
}

impl ResponseBody for Body {
    fn buffered(&self) -> bool {
        self.decoded_at < self.decoded.len() || (!self.done && self.conn.as_ref().is_some_and(|c| !c.buf.is_empty()))
    }

    fn finished(&self) -> bool {
        (self.done || matches!(self.framing, Framing::Length(0))) && self.decoded_at >= self.decoded.len()
    }

    fn arriving(&self) -> bool {
        self.buffered() || self.done || self.conn.as_ref().is_some_and(Conn::arriving)
    }

    /// What of a `content-length` body the connection's buffer already holds (most answers: all of it,
    /// read with the head) is copied as it is, without the zero-filled room and the probe reads of
    /// `read_to_end`.
    fn read_whole(&mut self, out: &mut Vec<u8>, limit: u64) -> io::Result<()> {
        if let (Some(conn), Framing::Length(left), false) = (self.conn.as_mut(), &mut self.framing, self.done) {
            let n = conn.buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
            out.extend_from_slice(&conn.buf.pending()[..n]);
            conn.buf.consume(n);
            *left -= n as u64;
            if *left == 0 {
                self.finish();
            }
        }
        read_rest(self, out, limit)
    }

    fn release_idle_memory(&mut self) {
        if self.decoded_at >= self.decoded.len() {
            self.decoded = Vec::new();
            self.decoded_at = 0;
        }
        if let Some(conn) = self.conn.as_mut().filter(|c| c.buf.is_empty()) {
            conn.buf.shrink(0);
        }
    }
}

fn closed_mid_body() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the upstream closed mid-body")
}

/// A read of a `content-length` body at least this large, with nothing buffered, goes straight from
/// the socket into the caller's buffer (the whole of a presized body, in as few reads as it arrives in).
const DIRECT_READ_AT: usize = crate::readbuf::INITIAL;

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.decoded_at < self.decoded.len() {
                let n = out.len().min(self.decoded.len() - self.decoded_at);
                out[..n].copy_from_slice(&self.decoded[self.decoded_at..self.decoded_at + n]);
                self.decoded_at += n;
                return Ok(n);
            }
            if self.done || out.is_empty() {
                return Ok(0);
            }
            let Some(conn) = self.conn.as_mut() else { return Ok(0) };
            match &mut self.framing {
                Framing::Length(0) => {
                    self.finish();
                    return Ok(0);
                }
                Framing::Length(left) if conn.buf.is_empty() && out.len() >= DIRECT_READ_AT => {
                    let want = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let n = conn.fill_into(&mut out[..want], self.client.idle_timeout)?;
                    if n == 0 {
                        return Err(closed_mid_body());
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        self.finish();
                    }
                    return Ok(n);
                }
                Framing::Length(left) => {
                    if conn.buf.is_empty() && Body::fill(conn, self.client.idle_timeout)? == 0 {
                        return Err(closed_mid_body());
                    }
                    let n = out.len().min(conn.buf.len()).min(*left as usize);
                    out[..n].copy_from_slice(&conn.buf.pending()[..n]);
                    conn.buf.consume(n);
                    *left -= n as u64;
                    if *left == 0 {
                        self.finish();
                    }
                    return Ok(n);
                }
                Framing::Chunked(decoder) => {
                    if conn.buf.is_empty() && Body::fill(conn, self.client.idle_timeout)? == 0 {
                        return Err(closed_mid_body());
                    }
                    self.decoded.clear();
                    self.decoded_at = 0;
                    let (used, complete) = decoder
                        .decode(conn.buf.pending(), &mut self.decoded)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    conn.buf.consume(used);
                    if complete {
                        self.finish();
                    }
                }
                Framing::Close => {
                    if conn.buf.is_empty() && Body::fill(conn, self.client.idle_timeout)? == 0 {
                        self.finish();
                        return Ok(0);
                    }
                    let n = out.len().min(conn.buf.len());
                    out[..n].copy_from_slice(&conn.buf.pending()[..n]);
                    conn.buf.consume(n);
                    return Ok(n);
                }
            }
        }
    }
}
