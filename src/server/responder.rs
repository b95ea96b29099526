//! The write side of a client connection: one response per request, whole or streamed, each piece in
//! one write.

use std::io::{self, Write};
use std::sync::Arc;

use crate::cancel::Cancel;
use crate::tls::ServerStream;

use super::body;
use super::http1;
use super::reader::Reader;
use super::watch::ClientWatch;

/// Writes every byte of `bufs`, in order, in as few system calls as the socket takes (one, unless its
/// send buffer fills).
fn write_all_vectored(stream: &mut impl Write, mut bufs: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    io::IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match stream.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Data up to this size is copied behind what `out` holds and sent as one buffer: one buffer goes out
/// with `send`, which costs less than a `writev` of three (see `tls::plain_write`) by more than the copy
/// up to about 4 KiB; at 8 KiB the two were even.
const JOINED_AT_MOST: usize = 4096;

/// Whether [`write_behind`] copies `len` bytes of data behind the head rather than sending them from
/// where they lie.
fn joins(stream: &ServerStream, len: usize) -> bool {
    len <= JOINED_AT_MOST || stream.is_tls()
}

/// Writes what `out` holds, then `data`, then `tail`, as one write. On a plain socket, `data` over
/// [`JOINED_AT_MOST`] goes out from where it lies, in one `writev` with the other two; smaller data,
/// and on TLS all of it, is joined in `out` (on TLS: one record, one flush). Nothing at all is written
/// when all three are empty.
fn write_behind(stream: &mut ServerStream, out: &mut Vec<u8>, data: &[u8], tail: &[u8]) -> io::Result<()> {
    if joins(stream, data.len()) {
        out.reserve(data.len() + tail.len());
        out.extend_from_slice(data);
        out.extend_from_slice(tail);
        if out.is_empty() {
            return Ok(());
        }
        return stream.write_all(out);
    }
    write_all_vectored(stream, &mut [io::IoSlice::new(out), io::IoSlice::new(data), io::IoSlice::new(tail)])
}

pub(super) fn write_head(
    out: &mut Vec<u8>,
    minor: u8,
    status: u16,
    keep_alive: bool,
    headers: &[(&str, &str)],
    length: Option<usize>,
) {
    // Room for the head (a caller that appends the body reserves for it too).
    out.reserve(head_capacity(headers));
    out.extend_from_slice(if minor == 0 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    crate::digits::push_decimal(out, status.into());
    out.push(b' ');
    out.extend_from_slice(http1::reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match length {
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            crate::digits::push_decimal(out, n as u64);
            out.extend_from_slice(b"\r\n");
        }
        None if minor == 1 => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Room for a head with these headers: its status line, framing and connection headers included.
fn head_capacity(headers: &[(&str, &str)]) -> usize {
    headers.iter().map(|(name, value)| name.len() + value.len() + 4).sum::<usize>() + 96
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResponseState {
    Fresh,
    Streaming,
    Done,
    Broken,
}

/// Writes the one response to a request: whole (`send`) or streamed (`start`, `chunk`…, `finish`).
pub struct Responder<'a> {
    pub(super) stream: &'a mut ServerStream,
    pub(super) minor: u8,
    pub(super) keep_alive: bool,
    pub(super) head_only: bool,
    pub(super) state: ResponseState,
    /// The status sent (0 before the head).
    pub(super) status: u16,
    /// Body bytes written so far.
    pub(super) sent: u64,
    /// Output being assembled; while `head_pending`, it holds a streamed response's head.
    pub(super) scratch: Vec<u8>,
    pub(super) head_pending: bool,
    pub(super) watch: &'a mut ClientWatch,
    /// The connection's read side, for a streamed request body.
    pub(super) reader: &'a mut Reader,
    pub(super) body: body::StreamedBody,
    /// The connection coroutine's stack, for [`Responder::release_idle_memory`].
    pub(super) stack: &'a super::stack::StackMark,
}

impl Responder<'_> {
    /// Gives back the output buffer, the connection's read buffer when it holds nothing, and the stack
    /// pages below the caller's frame: for a stream about to wait long for its upstream (see
    /// `server/stack.rs`). A request that does not wait keeps its read buffer for the next request, with
    /// no allocation and zero-fill in between.
    pub fn release_idle_memory(&mut self) {
        if !self.head_pending {
            self.scratch = Vec::new();
        }
        if self.reader.buf.is_empty() {
            self.reader.buf.shrink(0);
        }
        self.stack.release_below();
    }

    /// Sends a complete response with `content-length`.
    pub fn send(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        debug_assert_eq!(self.state, ResponseState::Fresh);
        self.status = status;
        // An answer before the request body was read: the connection cannot carry another request.
        self.keep_alive &= !self.body.unfinished();
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        let length = body.len();
        let body = if self.head_only { &[][..] } else { body };
        if joins(self.stream, body.len()) {
            // The body will join the head: room for both in one allocation.
            out.reserve(body.len());
        }
        write_head(&mut out, self.minor, status, self.keep_alive, headers, Some(length));
        let result = write_behind(self.stream, &mut out, body, b"");
        self.sent += body.len() as u64;
        self.scratch = out;
        self.state = if result.is_ok() { ResponseState::Done } else { ResponseState::Broken };
        result
    }

    /// Starts a streamed response: chunked on HTTP/1.1, close-delimited on HTTP/1.0. The head is held
    /// back to go out with the first piece of the body, unless `flush` sends it first (before a wait).
    pub fn start(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        debug_assert_eq!(self.state, ResponseState::Fresh);
        self.status = status;
        self.keep_alive &= !self.body.unfinished();
        if self.minor == 0 {
            self.keep_alive = false;
        }
        self.scratch.clear();
        write_head(&mut self.scratch, self.minor, status, self.keep_alive, headers, None);
        self.head_pending = true;
        self.state = ResponseState::Streaming;
        Ok(())
    }

    /// Sends a started stream's head now, if it has not gone out yet.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.head_pending {
            return Ok(());
        }
        self.send_pending(&[], false)
    }

    /// Sends one piece of a streamed response (with the head, if it is still held back) in one write.
    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() && !self.head_pending {
            return Ok(());
        }
        self.send_pending(data, false)
    }

    /// Sends the last piece of a streamed response and its end in one write (with the head, if it is
    /// still held back).
    pub fn chunk_and_finish(&mut self, data: &[u8]) -> io::Result<()> {
        if self.state != ResponseState::Streaming {
            return Ok(());
        }
        let result = self.send_pending(data, true);
        self.state = if result.is_ok() { ResponseState::Done } else { ResponseState::Broken };
        result
    }

    /// Ends a streamed response properly.
    pub fn finish(&mut self) -> io::Result<()> {
        self.chunk_and_finish(&[])
    }

    /// Writes, in one write: the held-back head, `data` as a chunk, and the end of the body when `last`.
    fn send_pending(&mut self, data: &[u8], last: bool) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.scratch);
        if !self.head_pending {
            out.clear();
        }
        self.head_pending = false;
        let chunked = self.minor != 0 && !self.head_only;
        let data = if self.head_only { &[][..] } else { data };
        self.sent += data.len() as u64;
        // What follows `data`: the end of its chunk and, when `last`, the end of the body.
        let tail: &[u8] = match (chunked, data.is_empty(), last) {
            (false, _, _) | (true, true, false) => b"",
            (true, true, true) => b"0\r\n\r\n",
            (true, false, false) => b"\r\n",
            (true, false, true) => b"\r\n0\r\n\r\n",
        };
        if chunked && !data.is_empty() {
            crate::digits::push_hex(&mut out, data.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        let result = write_behind(self.stream, &mut out, data, tail);
        out.clear();
        self.scratch = out;
        if result.is_err() {
            self.state = ResponseState::Broken;
        }
        result
    }

    pub fn started(&self) -> bool {
        self.state != ResponseState::Fresh
    }

    /// The status sent (0 before the head).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Body bytes handed to the socket (chunk framing not counted).
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Closes the connection after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Watches the client connection until this request ends: if the client goes away, whatever the
    /// request is blocked on upstream is shut down (through the returned `Cancel`).
    pub fn watch_client(&mut self) -> Arc<Cancel> {
        self.watch.start(self.stream)
    }
}
