//! One socket type for plain TCP and TLS over `may` sockets, shared by the listener (server side), the
//! upstream client and the Redis client (client side).

use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};

use may::net::TcpStream;
use rustls::{ConnectionCommon, SideData, StreamOwned};

/// A TCP connection, maybe with TLS on it. Reads report a peer that closed without `close_notify` as
/// the end of the stream (HTTP frames its own bodies); each write is flushed to the socket, so a
/// write's error is its own.
pub enum MaybeTls<C> {
    Plain(TcpStream),
    Tls(Box<StreamOwned<C, TcpStream>>),
}

/// The client side (upstreams, Redis).
pub type ClientStream = MaybeTls<rustls::ClientConnection>;
/// The server side (the listener).
pub type ServerStream = MaybeTls<rustls::ServerConnection>;

impl<C, S> MaybeTls<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// Wraps `socket` in a TLS session that has not shaken hands yet.
    pub fn tls(session: C, socket: TcpStream) -> Self {
        MaybeTls::Tls(Box::new(StreamOwned::new(session, socket)))
    }

    /// The TCP socket underneath.
    pub fn socket(&self) -> &TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(t) => &t.sock,
        }
    }

    /// The TCP socket underneath, to write past TLS (only before a handshake: see the listener).
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(t) => &mut t.sock,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Tls(_))
    }

    /// Runs the TLS handshake to its end (nothing to do on a plain socket). The caller bounds it in
    /// time (a [`crate::deadline::Deadline`] on the socket).
    #[inline(never)]
    pub fn handshake(&mut self) -> io::Result<()> {
        if let MaybeTls::Tls(t) = self {
            while t.conn.is_handshaking() {
                t.conn.complete_io(&mut t.sock)?;
            }
        }
        Ok(())
    }

    /// Whether TLS holds decrypted bytes not yet read.
    pub fn has_buffered_plaintext(&mut self) -> bool {
        match self {
            MaybeTls::Plain(_) => false,
            MaybeTls::Tls(t) => t.conn.process_new_packets().map_or(true, |state| state.plaintext_bytes_to_read() > 0),
        }
    }

    /// Ends the sending side: `close_notify` first on TLS, then a TCP half-close.
    #[inline(never)]
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let MaybeTls::Tls(t) = self {
            t.conn.send_close_notify();
            t.flush()?;
        }
        self.socket().shutdown(std::net::Shutdown::Write)
    }
}

impl<C> AsRawFd for MaybeTls<C> {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            MaybeTls::Plain(s) => s.as_raw_fd(),
            MaybeTls::Tls(t) => t.sock.as_raw_fd(),
        }
    }
}

impl<C, S> Read for MaybeTls<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            MaybeTls::Plain(s) => s.read(out),
            MaybeTls::Tls(t) => tls_read(t, out),
        }
    }
}

// The TLS paths are kept out of line: inlined, rustls's stack frames would join those of every plain
// connection's read and write loop, and a coroutine's stack pages, once touched, stay (measured: +16 KiB
// per plain connection).

#[inline(never)]
fn tls_read<C, S>(t: &mut StreamOwned<C, TcpStream>, out: &mut [u8]) -> io::Result<usize>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    match t.read(out) {
        // rustls reports a peer that closed without close_notify this way.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        other => other,
    }
}

#[inline(never)]
fn tls_write<C, S>(t: &mut StreamOwned<C, TcpStream>, data: &[u8]) -> io::Result<usize>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    // rustls's own write swallows the socket's error; flushing reports it here.
    let n = t.write(data)?;
    t.flush()?;
    Ok(n)
}

impl<C, S> Write for MaybeTls<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            MaybeTls::Plain(s) => s.write(data),
            MaybeTls::Tls(t) => tls_write(t, data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeTls::Plain(s) => s.flush(),
            MaybeTls::Tls(t) => t.flush(),
        }
    }
}
