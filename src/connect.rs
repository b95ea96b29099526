//! Outgoing TCP connections to upstreams without may's `TcpStream::connect_timeout`.
//!
//! may's connect waits through an event source that owns the socket's event record, and reads that
//! record after it has handed the waiting coroutine to the event loop. When the new socket's events
//! belong to the other worker, that worker can resume the coroutine, which finishes the connect and
//! takes the record out, while the first worker is still reading it: a null dereference, and the
//! gateway dies (SIGSEGV). Found in a core dump of a test gateway (`upstream_errors`, about once in 250
//! to 1,000 runs with four to six copies at once), after one such crash in CI had reset a test's
//! connection.
//!
//! Here the socket is connected without blocking before may sees it, given a descriptor number on the
//! caller's worker, registered once, and waited on with `WaitIo::wait_io`, whose event source borrows
//! the record of a stream that outlives the wait. may keeps no timer for it: the deadline reaper
//! (`deadline.rs`) ends a wait that outlasts the timeout by shutting the socket down.
//!
//! Used for upstreams and Redis. The benches' load coroutines have no home worker, so their sockets are
//! on either worker, and their reads after this connect failed with its `EINPROGRESS`, read from the
//! wrong thread's errno (see `affinity`); they connect with a blocking connect on loopback instead
//! (`benches/common`). With may's connect they lost about one request in millions the same way.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use may::net::TcpStream;

use crate::deadline::Deadline;

/// Connects to `addr` within `timeout`, on a descriptor of `worker` when one is given (see
/// [`crate::affinity::descriptor_on`]). Inside a coroutine the wait is on may's event loop; on a plain
/// thread (a credential refresher), on `poll`.
pub fn connect(addr: &SocketAddr, timeout: Duration, worker: Option<usize>) -> io::Result<TcpStream> {
    let until = Instant::now() + timeout;
    let fd = crate::affinity::descriptor_on(start(addr)?, worker);
    // SAFETY: an open socket descriptor that nothing else owns; may registers it with its worker.
    let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
    wait_connected(&stream, until)?;
    Ok(stream)
}

/// A non-blocking socket with its connect to `addr` begun (or, on loopback, often done).
fn start(addr: &SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket creation; the descriptor is owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(crate::affinity::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_storage is a valid value; it is filled for the family below.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for a sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a sockaddr of `len` bytes for the socket's family.
    let rc = unsafe {
        libc::connect(fd.as_raw_fd(), (&storage as *const libc::sockaddr_storage).cast(), len as libc::socklen_t)
    };
    if rc == 0 {
        return Ok(fd);
    }
    match crate::affinity::last_os_error() {
        e if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(fd),
        e => Err(e),
    }
}

/// Waits until the connect of `stream` succeeds, fails (its error), or `until` passes (`TimedOut`).
fn wait_connected(stream: &TcpStream, until: Instant) -> io::Result<()> {
    let in_coroutine = may::coroutine::is_coroutine();
    // may's event loop waits without a timeout here: when the time is up, the reaper shuts the socket
    // down, which ends the wait with an event.
    let deadline = in_coroutine.then(|| {
        let d = Deadline::register(stream.as_raw_fd(), Shutdown::Both);
        d.arm(until.saturating_duration_since(Instant::now()));
        d
    });
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    loop {
        if deadline.as_ref().is_some_and(Deadline::expired) {
            return Err(timed_out());
        }
        if connected(stream.as_raw_fd())? {
            return Ok(());
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        if in_coroutine {
            may::io::WaitIo::wait_io(stream);
        } else {
            poll_writable(stream.as_raw_fd(), left)?;
        }
    }
}

/// Whether the connect of `fd` is done (`Ok(false)`: still under way), or its error. Through libc, with
/// libc's errno: the coroutine may have changed threads in the wait (see `affinity`).
fn connected(fd: std::os::fd::RawFd) -> io::Result<bool> {
    let mut error: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `error` and `len` describe a writable int.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, (&mut error as *mut libc::c_int).cast(), &mut len)
    };
    if rc < 0 {
        return Err(crate::affinity::last_os_error());
    }
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    // A socket still connecting has no peer yet.
    // SAFETY: a zeroed sockaddr_storage is a valid value; the kernel writes up to `len` bytes.
    let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `peer` and `len` describe a writable buffer of `len` bytes.
    if unsafe { libc::getpeername(fd, (&mut peer as *mut libc::sockaddr_storage).cast(), &mut len) } == 0 {
        return Ok(true);
    }
    match crate::affinity::last_os_error() {
        e if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        e => Err(e),
    }
}

/// Blocks the thread until `fd` is writable or failed, or `left` passes.
fn poll_writable(fd: std::os::fd::RawFd, left: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        rc if rc >= 0 => Ok(()),
        _ => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            e => Err(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn echo_once(listener: std::net::TcpListener) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        })
    }

    #[test]
    fn connects_in_a_coroutine_and_on_a_thread() {
        for in_coroutine in [true, false] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = echo_once(listener);
            let talk = move || {
                let mut s = connect(&addr, Duration::from_secs(5), None).unwrap();
                s.write_all(b"ping").unwrap();
                let mut back = [0u8; 4];
                s.read_exact(&mut back).unwrap();
                assert_eq!(&back, b"ping");
            };
            if in_coroutine {
                may::go!(talk).join().unwrap();
            } else {
                talk();
            }
            server.join().unwrap();
        }
    }

    /// The address of a socket bound but not listening, held open by the returned descriptor: a
    /// connect to it is refused, and no other listener can take the port meanwhile.
    fn refusing_addr() -> (OwnedFd, SocketAddr) {
        // SAFETY: plain socket calls on a descriptor owned at once, with correctly sized arguments.
        unsafe {
            let fd = OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0));
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(libc::bind(fd.as_raw_fd(), (&sin as *const libc::sockaddr_in).cast(), len), 0);
            let mut bound_len = len;
            assert_eq!(
                libc::getsockname(fd.as_raw_fd(), (&mut sin as *mut libc::sockaddr_in).cast(), &mut bound_len),
                0
            );
            (fd, SocketAddr::from(([127, 0, 0, 1], u16::from_be(sin.sin_port))))
        }
    }

    #[test]
    fn a_refused_connect_fails_with_the_refusal() {
        let (_held, addr) = refusing_addr();
        for in_coroutine in [true, false] {
            let attempt = move || connect(&addr, Duration::from_secs(5), None).err().map(|e| e.kind());
            let kind = if in_coroutine { may::go!(attempt).join().unwrap() } else { attempt() };
            assert_eq!(kind, Some(io::ErrorKind::ConnectionRefused));
        }
    }

    #[test]
    fn a_connect_that_is_not_answered_times_out() {
        // A listener with a backlog of 0 and one connection waiting in its queue: the kernel drops further
        // SYNs, so a connect stays in progress.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // SAFETY: listen on a socket this test owns (it only changes the backlog).
        assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
        let addr = listener.local_addr().unwrap();
        let _queued = std::net::TcpStream::connect(addr).unwrap();
        for in_coroutine in [true, false] {
            let attempt = move || {
                let started = Instant::now();
                let kind = connect(&addr, Duration::from_millis(300), None).err().map(|e| e.kind());
                (kind, started.elapsed())
            };
            let (kind, took) = if in_coroutine { may::go!(attempt).join().unwrap() } else { attempt() };
            assert_eq!(kind, Some(io::ErrorKind::TimedOut));
            // Not before the timeout; and well before the kernel would give up on the SYN (over a minute):
            // the reaper looks every 100 ms, the rest is room for a loaded machine.
            assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(5), "took {took:?}");
        }
    }
}
