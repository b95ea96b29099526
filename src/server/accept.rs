//! Accepting without may. may registers a new socket with the worker of its descriptor number, which
//! is the other worker for about half the connections; the accept loop starts each connection's
//! coroutine on its socket's worker (`server`), so that the coroutine never changes threads (see
//! `affinity` for why it must not). The socket keeps the number the kernel gave it: moving it to the
//! accepting worker's numbers (`affinity::descriptor_on`) failed under bursts of connections, when the
//! free numbers were all the other worker's. errno is read through libc (`affinity::last_os_error`).

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd};

use may::io::WaitIo;
use may::net::{TcpListener, TcpStream};

use crate::affinity;

/// What a wait for a connection ended with.
pub enum Accepted {
    Connection(TcpStream, SocketAddr),
    /// The wait was cancelled or woken without a connection; the caller checks whether to stop.
    Woken,
}

/// The next connection on `listener` (non-blocking, as may makes its listeners), registered with the
/// worker of its descriptor number.
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
            let peer = peer_address(&storage).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            // SAFETY: a fresh socket nothing else owns; may registers it with the worker of its number.
            return Ok(Accepted::Connection(unsafe { TcpStream::from_raw_fd(fd) }, peer));
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

/// Starts `serve` with `stream` in a coroutine on the worker whose event loop serves `stream`, with a
/// stack of `stack` machine words: may would start it on the workers in turn, and a coroutine on the
/// other worker would move at its first wait (see `affinity`).
///
/// # Safety
/// As may's `Builder::spawn`: `serve` keeps no thread-local state across its waits.
pub unsafe fn spawn_on_its_worker<T: Send + 'static>(
    stream: TcpStream,
    stack: usize,
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> io::Result<may::coroutine::JoinHandle<T>> {
    let builder = may::coroutine::Builder::new().stack_size(stack).id(affinity::of_fd(stream.as_raw_fd()));
    // SAFETY: as the caller promises.
    unsafe { builder.spawn(move || serve(stream)) }
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
    fn each_connections_coroutine_starts_and_stays_on_its_sockets_worker() {
        affinity::set_workers(may::config().get_workers());
        if affinity::workers() < 2 {
            return; // one worker: nothing can move
        }
        const CLIENTS: usize = 16;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Clients whose connections stay open until every one is served, so that the accepted sockets
        // take numbers of both workers.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let clients = std::thread::spawn(move || {
            let (mut open, mut spare) = (Vec::new(), Vec::new());
            for i in 0..CLIENTS {
                // A descriptor held now and then shifts the numbers the next sockets get.
                if i % 3 == 0 {
                    spare.push(std::fs::File::open("/dev/null").unwrap());
                }
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.write_all(&[i as u8]).unwrap();
                let mut back = [0u8; 1];
                c.read_exact(&mut back).unwrap();
                assert_eq!(usize::from(back[0]), i);
                open.push(c);
            }
            wait.recv().unwrap();
            open.iter().map(|c| c.local_addr().unwrap()).collect::<Vec<_>>()
        });
        // Each worker's thread, asked from a coroutine started on that worker.
        let threads: Vec<std::thread::ThreadId> = (0..2)
            .map(|w| {
                let builder = may::coroutine::Builder::new().id(w);
                unsafe { builder.spawn(move || affinity::thread_of_worker(w)) }.unwrap().join().unwrap()
            })
            .collect();
        // Started on the listener's worker, as `serve` starts an accept loop; the connections as
        // `accept_loop` starts them.
        let builder = may::coroutine::Builder::new().id(affinity::of_fd(listener.as_raw_fd()));
        let accepting = unsafe {
            builder.spawn(move || {
                affinity::set_home(listener.as_raw_fd());
                let mut served = Vec::new();
                while served.len() < CLIENTS {
                    let Accepted::Connection(s, peer) = accept(&listener).unwrap() else { continue };
                    let threads = threads.clone();
                    let serving = spawn_on_its_worker(s, 0x4000, move |mut s| {
                        affinity::set_home(s.as_raw_fd());
                        let worker = affinity::home().unwrap();
                        let worker_thread = threads[worker];
                        // Checked before any wait: a wait from the other worker's thread can hang.
                        assert_eq!(std::thread::current().id(), worker_thread, "started on its socket's worker");
                        // This read waits for the client's byte: it resumes where the socket's events go.
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).unwrap();
                        assert_eq!(std::thread::current().id(), worker_thread, "still on its socket's worker");
                        s.write_all(&b).unwrap();
                        (worker, s)
                    });
                    // Joined at once: a failed check ends the test instead of leaving the client waiting.
                    served.push((peer, serving.unwrap().join().unwrap()));
                }
                served
            })
        };
        let served = accepting.unwrap().join().unwrap();
        go.send(()).unwrap();
        let clients = clients.join().unwrap();
        for (i, (peer, _)) in served.iter().enumerate() {
            assert_eq!(*peer, clients[i], "the peer address is the client's");
        }
        let workers: std::collections::HashSet<usize> = served.iter().map(|(_, (w, _))| *w).collect();
        assert_eq!(workers.len(), 2, "connections on both workers");
    }
}
