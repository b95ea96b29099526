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
    /// A plain socket, and what its reads have seen (see [`plain_read`]).
    Plain(TcpStream, ReadState),
    Tls(Box<StreamOwned<C, TcpStream>>),
}

/// What the reads of a plain socket have seen (see [`plain_read`]).
#[derive(Debug, Default)]
pub struct ReadState {
    /// The last read took everything the socket held.
    drained: bool,
    /// An event said the peer closed its side, or the connection failed.
    peer_closed: bool,
    /// may has (or had) a timer on this socket: a write that would block waited in may's write, with
    /// the socket's write timeout. From then on may reads it too (see [`plain_read`]).
    timed: bool,
}

/// The client side (upstreams, Redis).
pub type ClientStream = MaybeTls<rustls::ClientConnection>;
/// The server side (the listener).
pub type ServerStream = MaybeTls<rustls::ServerConnection>;

impl<C> MaybeTls<C> {
    pub fn plain(socket: TcpStream) -> Self {
        MaybeTls::Plain(socket, ReadState::default())
    }
}

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
            MaybeTls::Plain(s, _) => s,
            MaybeTls::Tls(t) => &t.sock,
        }
    }

    /// The TCP socket underneath, to write past TLS (only before a handshake: see the listener).
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            MaybeTls::Plain(s, _) => s,
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

    /// Whether nothing has happened on a plain socket since its last read emptied it: no bytes, no
    /// close (may records each event's bits until something resets them; our reads and writes do not).
    /// Without a system call; `false` (unknown) for TLS or after a read that may have left bytes behind.
    pub fn quiet_since_drained(&self) -> bool {
        match self {
            MaybeTls::Plain(s, state) => {
                let events = may::io::AsIoData::as_io_data(s).io_flag.load(std::sync::atomic::Ordering::Acquire);
                state.drained && !state.peer_closed && events == 0
            }
            MaybeTls::Tls(_) => false,
        }
    }

    /// Whether TLS holds decrypted bytes not yet read.
    pub fn has_buffered_plaintext(&mut self) -> bool {
        match self {
            MaybeTls::Plain(..) => false,
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
            MaybeTls::Plain(s, _) => s.as_raw_fd(),
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
            MaybeTls::Plain(s, state) => plain_read(s, state, out),
            MaybeTls::Tls(t) => tls_read(t, out),
        }
    }
}

/// Reads a plain socket, waiting for its next event first when the last read emptied it, instead of
/// trying a read that could only fail: one system call less per wait for a request or a response.
/// may's sockets are edge-triggered, so an event is sure to come only for bytes that arrive after a
/// read that emptied the socket. Each read takes the events recorded until then, so that what is
/// recorded afterwards tells whether anything came since (see [`MaybeTls::quiet_since_drained`]); the
/// events also tell whether the peer closed. may's own read and write forget the recorded events, so
/// both go to the socket directly and fall back to may only to wait (a write that would block: the
/// record is then unknown). A socket with a read timeout, or one read outside a coroutine (a credential
/// refresher's thread), is read by may as usual.
///
/// A socket that may has ever kept a timer for (a read or write timeout that a wait used) is never
/// waited on here: may's timer handler borrows the socket's timer record before it claims the waiting
/// coroutine, so a timer firing on the socket's worker while `wait_io` resumes on another thread
/// panicked that thread ("RefCell already borrowed" in `EventData::fast_schedule`, reproduced in 1 to 16
/// runs of the token-refresh test while sockets with a read timeout still waited here). Sockets given to
/// this type have had no timer: the listener's are fresh, and an upstream socket is connected without
/// may's timed connect (`connect.rs`).
fn plain_read(s: &mut TcpStream, state: &mut ReadState, out: &mut [u8]) -> io::Result<usize> {
    // may's own read keeps a socket read timeout (Redis, lingering closes) and works outside a
    // coroutine; a wait for an event would do neither.
    if state.timed || !may::coroutine::is_coroutine() || s.read_timeout().is_ok_and(|t| t.is_some()) {
        state.drained = false;
        return s.read(out);
    }
    loop {
        // The events recorded since they were last taken (a wait returns at once if there are any,
        // else when one comes); what comes from now on is recorded anew.
        let events =
            if state.drained { may::io::WaitIo::wait_io(&*s) } else { may::io::AsIoData::as_io_data(&*s).reset() };
        // A close or an error comes as one event, however many reads follow: after it, never wait.
        state.peer_closed |= events & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as usize != 0;
        match s.inner().read(out) {
            Ok(n) => {
                // A read that did not fill `out` took all the bytes there were.
                state.drained = n > 0 && n < out.len() && !state.peer_closed;
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => state.drained = true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                state.drained = false;
                return Err(e);
            }
        }
    }
}

/// Writes a plain socket directly (see [`plain_read`]): one buffer with `send` (std's `write` on a
/// socket), several in one `writev`; may's write waits when it would block. On a socket, `writev` also
/// goes through the file layer and copies the vector in. Measured on loopback, the writer's CPU
/// (`cargo bench --bench micro`, the "chunk of … B" rows, two runs): a chunk's three pieces (size line,
/// data, CRLF) joined by a copy and sent with `send` cost 0.91–0.95× the `writev` of the three with
/// 200 B of data, 0.93–0.96× with 1 KiB, 0.96–0.97× with 4 KiB, 0.96–0.99× with 8 KiB.
fn plain_write(s: &mut TcpStream, state: &mut ReadState, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    let mut socket = s.inner();
    let first = match bufs {
        [one] => socket.write(one),
        _ => socket.write_vectored(bufs),
    };
    match first {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            state.drained = false;
            state.timed = true;
            s.write_vectored(bufs)
        }
        other => other,
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
            MaybeTls::Plain(s, state) => plain_write(s, state, &[io::IoSlice::new(data)]),
            MaybeTls::Tls(t) => tls_write(t, data),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            MaybeTls::Plain(s, state) => plain_write(s, state, bufs),
            // One record per call, as `write` (the first buffer with bytes in it).
            MaybeTls::Tls(t) => tls_write(t, bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeTls::Plain(s, _) => s.flush(),
            MaybeTls::Tls(t) => t.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Shutdown;
    use std::os::fd::FromRawFd;
    use std::time::Duration;

    type Plain = MaybeTls<rustls::ClientConnection>;

    /// A connected pair of may sockets: ours (wrapped) and the peer's.
    fn pair() -> (Plain, TcpStream) {
        let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        (MaybeTls::plain(ours), peer)
    }

    /// Shuts `socket` down after `after` (as a read deadline would): a wrong wait ends instead of hanging.
    fn watchdog(socket: &TcpStream, after: Duration) {
        let socket = socket.try_clone().unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let _ = socket.shutdown(Shutdown::Both);
        });
    }

    /// Runs `body` in a coroutine on a fresh pair whose socket a watchdog shuts down after 3 s.
    fn on_a_pair(body: impl FnOnce(Plain, TcpStream) + Send + 'static) {
        may::go!(move || {
            let (ours, peer) = pair();
            watchdog(ours.socket(), Duration::from_secs(3));
            body(ours, peer);
        })
        .join()
        .unwrap();
    }

    /// Waits for `thread` from a coroutine without blocking its may worker (a thread that uses a may
    /// socket may need that worker to finish).
    fn join_from_coroutine<T>(thread: std::thread::JoinHandle<T>) -> T {
        while !thread.is_finished() {
            may::coroutine::sleep(Duration::from_millis(5));
        }
        thread.join().unwrap()
    }

    // Inside the coroutine, waits are `may::coroutine::sleep`: a blocked worker thread would process
    // no socket events, and `quiet_since_drained` reads what the event loop recorded.
    #[test]
    fn bytes_left_behind_are_read_without_waiting_and_a_drained_socket_waits_for_the_next() {
        on_a_pair(|mut ours, mut peer| {
            peer.write_all(b"0123456789").unwrap();
            may::coroutine::sleep(Duration::from_millis(50));
            let mut buf = [0u8; 4];
            // Full reads leave bytes behind: no event will come for them, so no wait may happen.
            assert_eq!(ours.read(&mut buf).unwrap(), 4);
            assert_eq!(ours.read(&mut buf).unwrap(), 4);
            assert!(!ours.quiet_since_drained(), "bytes may be left");
            assert_eq!(ours.read(&mut buf).unwrap(), 2);
            assert!(ours.quiet_since_drained(), "drained, and nothing since");
            // Drained: the next read waits for the peer's next bytes.
            let mut late = peer.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                late.write_all(b"ab").unwrap();
            });
            let started = std::time::Instant::now();
            assert_eq!(ours.read(&mut buf).unwrap(), 2);
            assert_eq!(&buf[..2], b"ab");
            assert!(started.elapsed() < Duration::from_secs(2), "woken by the bytes, not the watchdog");
            join_from_coroutine(writer);
            // Bytes that arrive after a drain make the socket not quiet, and a close does too.
            peer.write_all(b"c").unwrap();
            may::coroutine::sleep(Duration::from_millis(50));
            assert!(!ours.quiet_since_drained());
            assert_eq!(ours.read(&mut buf).unwrap(), 1);
            assert!(ours.quiet_since_drained());
            drop(peer);
            may::coroutine::sleep(Duration::from_millis(50));
            assert!(!ours.quiet_since_drained(), "the peer closed");
            assert_eq!(ours.read(&mut buf).unwrap(), 0);
        });
    }

    #[test]
    fn bytes_that_came_before_a_write_are_read_without_waiting_for_another_event() {
        // A pipelined request arrives while the response to the previous one is written: the write
        // must not forget its event, or the drained socket's next read would wait for one more.
        on_a_pair(|mut ours, mut peer| {
            let mut buf = [0u8; 16];
            peer.write_all(b"first").unwrap();
            assert_eq!(ours.read(&mut buf).unwrap(), 5);
            peer.write_all(b"second").unwrap();
            may::coroutine::sleep(Duration::from_millis(50));
            ours.write_all(b"answer").unwrap();
            let started = std::time::Instant::now();
            assert_eq!(ours.read(&mut buf).unwrap(), 6, "the bytes, not the watchdog's end");
            assert!(started.elapsed() < Duration::from_secs(2));
        });
    }

    #[test]
    fn a_close_that_came_with_the_last_bytes_ends_the_next_read_without_a_wait() {
        // Bytes and the close arrive together: one event for both, taken by the read of the bytes.
        on_a_pair(|mut ours, mut peer| {
            peer.write_all(b"last").unwrap();
            drop(peer);
            may::coroutine::sleep(Duration::from_millis(50));
            let mut buf = [0u8; 16];
            assert_eq!(ours.read(&mut buf).unwrap(), 4);
            assert!(!ours.quiet_since_drained());
            let started = std::time::Instant::now();
            assert_eq!(ours.read(&mut buf).unwrap(), 0);
            assert!(started.elapsed() < Duration::from_secs(2), "the close, not the watchdog's");
        });
    }

    #[test]
    fn a_read_timeout_still_bounds_a_read_of_a_drained_socket() {
        on_a_pair(|mut ours, mut peer| {
            peer.write_all(b"x").unwrap();
            may::coroutine::sleep(Duration::from_millis(50));
            let mut buf = [0u8; 16];
            assert_eq!(ours.read(&mut buf).unwrap(), 1);
            ours.socket().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let started = std::time::Instant::now();
            let err = ours.read(&mut buf).expect_err("nothing comes");
            assert!(matches!(err.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock), "{err}");
            assert!(started.elapsed() < Duration::from_secs(2), "the timeout, not the watchdog");
            drop(peer);
        });
    }

    #[test]
    fn a_socket_whose_write_waited_in_may_is_read_by_may_from_then_on() {
        // may's write waited with the socket's write timeout, so may kept a timer for the socket: its
        // reads must not wait for events any more (see `plain_read`).
        on_a_pair(|mut ours, mut peer| {
            ours.socket().set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 16];
            peer.write_all(b"hi").unwrap();
            assert_eq!(ours.read(&mut buf).unwrap(), 2);
            assert!(matches!(ours, MaybeTls::Plain(_, ReadState { drained: true, timed: false, .. })));
            // More than the socket buffers hold: the peer reads it all only after a while. The reading
            // thread uses a plain std handle (a may socket's blocking read outside a coroutine needs a
            // may worker).
            let big = vec![b'x'; 8 << 20];
            // SAFETY: a fresh duplicate of the peer's open descriptor, owned by the new handle.
            let mut reader = unsafe { std::net::TcpStream::from_raw_fd(libc::dup(peer.as_raw_fd())) };
            let drain = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let mut sink = vec![0u8; 1 << 16];
                let mut total = 0;
                while total < 8 << 20 {
                    match reader.read(&mut sink) {
                        Ok(0) => break,
                        Ok(n) => total += n,
                        // The descriptor is non-blocking (may set it so).
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                        Err(e) => panic!("{e}"),
                    }
                }
                total
            });
            ours.write_all(&big).unwrap();
            assert_eq!(join_from_coroutine(drain), 8 << 20);
            assert!(matches!(ours, MaybeTls::Plain(_, ReadState { timed: true, .. })), "the write waited in may");
            assert!(!ours.quiet_since_drained());
            peer.write_all(b"more").unwrap();
            assert_eq!(ours.read(&mut buf).unwrap(), 4);
            assert!(matches!(ours, MaybeTls::Plain(_, ReadState { drained: false, timed: true, .. })));
        });
    }
}
