//! Cancellation: a client that goes away shuts down the upstream socket its request is blocked on.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Shared between a client connection's coroutine (whose upstream sockets register here for each
/// blocking read or write) and the watcher of that connection (which calls `cancel_request`). One per
/// connection: each request on it begins and ends here, and a cancel reaches only the request it was
/// meant for.
#[derive(Default)]
pub struct Cancel {
    /// The request in flight was cancelled.
    cancelled: AtomicBool,
    /// When the request in flight began ([`crate::clock::coarse_millis`], at least 1); 0 between
    /// requests.
    since_ms: AtomicU64,
    /// The number of the request in flight (or of the last one), counted from 1 per connection.
    request: AtomicU64,
    /// The descriptor of the upstream socket while a read or write on it is in flight.
    socket: Mutex<Option<RawFd>>,
}

/// Shuts a socket down by descriptor.
///
/// Sound only under `Cancel`'s lock for a registered descriptor: a descriptor is registered only for
/// the duration of one read or write on it (its connection is borrowed then, so it cannot be closed)
/// and unregistered under the same lock before that IO returns. The descriptor is never closed here.
fn shutdown_fd(fd: RawFd) {
    // SAFETY: `fd` is an open socket owned by a live connection (see above); ManuallyDrop keeps this
    // borrowed handle from closing it.
    let socket = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    let _ = socket.shutdown(Shutdown::Both);
}

impl Cancel {
    /// A request begins on the connection, numbered one past the last. Written by the connection's
    /// coroutine only. The request before it ended (under the lock), so a cancel meant for that one,
    /// coming later, finds another number or no request and does nothing.
    pub fn begin(&self) {
        self.request.store(self.request.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        self.cancelled.store(false, Ordering::Relaxed);
        self.since_ms.store(crate::clock::coarse_millis().max(1), Ordering::Release);
    }

    /// The request in flight, if any: its number and when it began.
    pub fn in_flight_request(&self) -> Option<(u64, u64)> {
        let since_ms = self.since_ms.load(Ordering::Acquire);
        (since_ms != 0).then(|| (self.request.load(Ordering::Relaxed), since_ms))
    }

    /// Cancels request `request` if it is still in flight: shuts its registered upstream socket down,
    /// now and for any registered later.
    pub fn cancel_request(&self, request: u64) {
        let mut slot = self.socket.lock();
        // Acquire: a `since_ms` of the next request comes with that request's number.
        if self.since_ms.load(Ordering::Acquire) == 0 || self.request.load(Ordering::Relaxed) != request {
            return;
        }
        self.cancelled.store(true, Ordering::Release);
        if let Some(fd) = slot.take() {
            shutdown_fd(fd);
        }
    }

    /// Whether the request in flight was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    fn register(&self, fd: RawFd) {
        let mut slot = self.socket.lock();
        if self.cancelled.load(Ordering::Acquire) {
            shutdown_fd(fd);
        } else {
            *slot = Some(fd);
        }
    }

    /// The request in flight ended: its socket is forgotten (it may go back to the pool), and no
    /// cancel reaches the connection until the next request begins.
    pub fn end(&self) {
        let mut slot = self.socket.lock();
        slot.take();
        self.since_ms.store(0, Ordering::Relaxed);
    }
}

may::coroutine_local!(static CURRENT_CANCEL: RefCell<Option<Arc<Cancel>>> = RefCell::new(None));

/// Makes `cancel` the one that upstream sockets used by this coroutine register with.
pub fn set_current_cancel(cancel: &Arc<Cancel>) {
    CURRENT_CANCEL.with(|c| {
        let mut c = c.borrow_mut();
        if !c.as_ref().is_some_and(|x| Arc::ptr_eq(x, cancel)) {
            *c = Some(cancel.clone());
        }
    });
}

/// The `Cancel` upstream sockets used by this coroutine register with, if any: read once per upstream
/// request (a coroutine-local read is a hash lookup), then handed to each of its reads and writes.
pub(crate) fn current_cancel() -> Option<Arc<Cancel>> {
    CURRENT_CANCEL.with(|c| c.borrow().clone())
}

/// Registration of a socket for the duration of one blocking read or write: a cancel shuts down only
/// sockets in use for this request, never one that went back to the pool.
pub(crate) struct InFlightIo<'c>(Option<&'c Cancel>);

impl InFlightIo<'_> {
    /// The client went away: what the IO returned (an end of stream, a reset) is the shutdown's doing.
    pub(crate) fn client_left(&self) -> bool {
        self.0.as_ref().is_some_and(|c| c.is_cancelled())
    }
}

/// The error an upstream IO ends with when the client went away.
pub fn client_left() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "client went away")
}

impl Drop for InFlightIo<'_> {
    fn drop(&mut self) {
        if let Some(cancel) = &self.0 {
            cancel.socket.lock().take();
        }
    }
}

/// Registers `fd` with `cancel` (the request's, from [`current_cancel`]), if any; fails at once if the
/// client already left.
pub(crate) fn in_flight(cancel: Option<&Cancel>, fd: RawFd) -> io::Result<InFlightIo<'_>> {
    match cancel {
        Some(cancel) if cancel.is_cancelled() => Err(client_left()),
        Some(cancel) => {
            cancel.register(fd);
            Ok(InFlightIo(Some(cancel)))
        }
        None => Ok(InFlightIo(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    /// A connected pair of loopback sockets: ours (registered with a `Cancel`) and its peer.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        (ours, peer)
    }

    /// Whether `peer` sees its connection shut down (an end of stream) rather than a quiet socket.
    fn shut_down(peer: &mut TcpStream) -> bool {
        matches!(peer.read(&mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn a_cancel_reaches_the_request_in_flight_and_its_socket() {
        let cancel = Cancel::default();
        cancel.begin();
        let (request, _) = cancel.in_flight_request().expect("a request in flight");
        let (ours, mut peer) = pair();
        let io = in_flight(Some(&cancel), ours.as_raw_fd()).unwrap();
        assert!(!io.client_left());
        cancel.cancel_request(request);
        assert!(io.client_left() && cancel.is_cancelled());
        assert!(shut_down(&mut peer));
        drop(io);
        // A later read or write of the same request fails at once.
        let (later, _peer) = pair();
        assert_eq!(
            in_flight(Some(&cancel), later.as_raw_fd()).err().map(|e| e.kind()),
            Some(io::ErrorKind::ConnectionAborted)
        );
    }

    #[test]
    fn a_late_cancel_reaches_neither_the_idle_connection_nor_its_next_request() {
        let cancel = Cancel::default();
        cancel.begin();
        let (first, _) = cancel.in_flight_request().unwrap();
        cancel.end();
        assert_eq!(cancel.in_flight_request(), None);
        // Meant for the first request, which has ended: nothing to cancel.
        cancel.cancel_request(first);
        assert!(!cancel.is_cancelled());
        cancel.begin();
        let (second, _) = cancel.in_flight_request().unwrap();
        assert_ne!(first, second);
        let (ours, mut peer) = pair();
        let io = in_flight(Some(&cancel), ours.as_raw_fd()).unwrap();
        cancel.cancel_request(first);
        assert!(!io.client_left() && !cancel.is_cancelled());
        assert!(!shut_down(&mut peer), "the second request's socket was shut down by the first's cancel");
        drop(io);
        cancel.end();
    }

    #[test]
    fn the_next_request_starts_uncancelled() {
        let cancel = Cancel::default();
        cancel.begin();
        let (first, _) = cancel.in_flight_request().unwrap();
        cancel.cancel_request(first);
        assert!(cancel.is_cancelled());
        cancel.end();
        cancel.begin();
        assert!(!cancel.is_cancelled());
        let (ours, mut peer) = pair();
        let io = in_flight(Some(&cancel), ours.as_raw_fd()).unwrap();
        assert!(!io.client_left());
        assert!(!shut_down(&mut peer));
    }
}
