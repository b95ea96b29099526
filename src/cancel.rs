//! Cancellation: a client that goes away shuts down the upstream socket its request is blocked on.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Shared between a request's coroutine (whose upstream socket registers here for each blocking read
/// or write) and the watcher of its client connection (which calls `cancel`).
#[derive(Default)]
pub struct Cancel {
    cancelled: AtomicBool,
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
    /// Shuts the registered upstream socket down, now and for any registered later.
    pub fn cancel(&self) {
        let mut slot = self.socket.lock();
        self.cancelled.store(true, Ordering::Release);
        if let Some(fd) = slot.take() {
            shutdown_fd(fd);
        }
    }

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

    /// Forgets the socket at the end of a request (it may go back to the pool).
    pub fn clear(&self) {
        self.socket.lock().take();
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
