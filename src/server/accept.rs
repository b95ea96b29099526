//! Accepting onto the accepting worker. may's `accept` registers a new socket with the worker of its
//! descriptor number, which is the other worker for about half the connections: the connection's
//! coroutine starts on the accepting worker and moves at its first wait (see `affinity` for why a
//! coroutine must not change threads). Here the socket is accepted without may, given a number of the
//! accepting worker, and only then registered, so the coroutine spawned for it never moves.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use may::io::WaitIo;
use may::net::{TcpListener, TcpStream};

use crate::affinity;

/// What a wait for a connection ended with.
pub enum Accepted {
    Connection(TcpStream, SocketAddr),
    /// The wait was cancelled or woken without a connection; the caller checks whether to stop.
    Woken,
}

/// The next connection on `listener` (non-blocking, as may makes its listeners), on a descriptor of
/// the calling coroutine's home worker (the listener's, once the accept loop has called `set_home`).
pub fn accept(listener: &TcpListener) -> io::Result<Accepted> {
    loop {
        // SAFETY: a zeroed sockaddr_storage is a valid value; the kernel fills up to `len` bytes.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `storage` and `len` describe a writable buffer of `len` bytes.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                (&mut storage as *mut libc::sockaddr_storage).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor nothing else owns.
            let fd = affinity::descriptor_on(unsafe { OwnedFd::from_raw_fd(fd) }, affinity::home());
            let peer = peer_address(&storage).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            // SAFETY: an open socket nothing else owns; may registers it with the worker of its number.
            return Ok(Accepted::Connection(unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }, peer));
        }
        let e = affinity::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => {
                listener.wait_io();
                return Ok(Accepted::Woken);
            }
            // A connection reset before it was accepted, or a signal: try again.
            Some(libc::ECONNABORTED | libc::EINTR) => {}
            _ => return Err(e),
        }
    }
}

/// The address in `storage` as the kernel filled it for an accepted TCP socket.
fn peer_address(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for this family; storage is large and aligned enough.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddrV4::new(a.sin_addr.s_addr.to_ne_bytes().into(), u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for a sockaddr_in6.
            let a = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = a.sin6_addr.s6_addr.into();
            Some(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn connections_are_accepted_onto_the_listeners_worker_and_their_coroutines_stay_there() {
        affinity::set_workers(may::config().get_workers());
        if affinity::workers() < 2 {
            return; // one worker: nothing can move
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clients = std::thread::spawn(move || {
            (0..8)
                .map(|i| {
                    let mut c = std::net::TcpStream::connect(addr).unwrap();
                    c.write_all(&[i]).unwrap();
                    let mut back = [0u8; 1];
                    c.read_exact(&mut back).unwrap();
                    (c.local_addr().unwrap(), back[0])
                })
                .collect::<Vec<_>>()
        });
        // Started on the listener's worker, as `serve` starts an accept loop.
        let builder = may::coroutine::Builder::new().id(affinity::of_fd(listener.as_raw_fd()));
        let served = unsafe {
            builder.spawn(move || {
                affinity::set_home(listener.as_raw_fd());
                let home = affinity::home().unwrap();
                let home_thread = affinity::thread_of_worker(home);
                let mut peers = Vec::new();
                while peers.len() < 8 {
                    let Accepted::Connection(mut s, peer) = accept(&listener).unwrap() else { continue };
                    assert_eq!(affinity::of_fd(s.as_raw_fd()), home, "the socket is on the accepting worker");
                    // The first read waits for the client's byte: it resumes where the socket's events go.
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).unwrap();
                    assert_eq!(std::thread::current().id(), home_thread, "resumed on the accepting worker");
                    s.write_all(&b).unwrap();
                    peers.push(peer);
                }
                peers
            })
        };
        let peers = served.unwrap().join().unwrap();
        let clients = clients.join().unwrap();
        for (i, (local, echoed)) in clients.iter().enumerate() {
            assert_eq!(usize::from(*echoed), i);
            assert_eq!(peers[i], *local, "the peer address is the client's");
        }
    }
}
