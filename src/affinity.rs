//! Keeping a client connection's upstream sockets on the scheduler thread of its client socket, and
//! helper threads off a pinned scheduler thread's core ([`spawn_helper`]).
//!
//! may registers each socket with the epoll instance of worker `fd % workers`, and a coroutine that
//! waits on a socket resumes on that worker's thread. A request whose client socket and upstream socket
//! belong to different workers therefore moves between threads twice: on a quiet gateway each move
//! wakes the other core; under load the coroutine's stack and buffers change caches. nginx avoids this
//! by keeping one keep-alive cache per worker process; the upstream pool does the same here, with one
//! list of idle connections per worker ([`of_fd`]), and a new upstream connection is moved to a
//! descriptor number on the client's worker ([`descriptor_on`], before may sees it: `connect.rs`). The
//! worker is a hint, not a rule: a coroutine resumed elsewhere (after a sleep) still runs, and if may
//! ever assigns sockets differently the only loss is this saving.

use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};

/// may's worker count, once [`set_workers`] is called (0: not known, every socket counts as worker 0).
static WORKERS: AtomicUsize = AtomicUsize::new(0);

may::coroutine_local!(static HOME: Cell<Option<usize>> = Cell::new(None));

/// The CPUs the process may run on, kept when may's workers are pinned: a thread the gateway starts
/// from a worker would otherwise inherit that worker's single core.
static PROCESS_CPUS: std::sync::OnceLock<libc::cpu_set_t> = std::sync::OnceLock::new();

/// Keeps the calling thread's CPU set as the one helper threads run on. Called before may starts its
/// workers, when they are to be pinned.
pub fn keep_process_cpus() {
    // SAFETY: the kernel fills a plain bit set of the size given.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let _ = PROCESS_CPUS.set(set);
        }
    }
}

/// Starts a named helper thread (not a scheduler thread) on every CPU of the process, even when it is
/// started from a pinned worker. The CPU set is given before this returns (not by the new thread, which
/// may not have run yet), so the helper never stays on the worker's core.
pub fn spawn_helper<F, T>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let handle = std::thread::Builder::new().name(name.into()).spawn(f)?;
    if let Some(set) = PROCESS_CPUS.get() {
        use std::os::unix::thread::JoinHandleExt;
        // SAFETY: the thread is joinable (its handle is held), so its pthread id is valid; the set is a
        // plain bit set of the size given. On failure the thread keeps the set it inherited.
        unsafe { libc::pthread_setaffinity_np(handle.as_pthread_t(), std::mem::size_of::<libc::cpu_set_t>(), set) };
    }
    Ok(handle)
}

/// Records may's worker count (called where may is configured, before any socket exists).
pub fn set_workers(workers: usize) {
    WORKERS.store(workers, Ordering::Relaxed);
}

/// How many workers sockets are spread over (at least 1).
pub fn workers() -> usize {
    WORKERS.load(Ordering::Relaxed).max(1)
}

/// The worker whose thread is woken by events on `fd`.
pub fn of_fd(fd: RawFd) -> usize {
    fd as usize % workers()
}

/// Makes the worker of `client` the home of the calling coroutine (a client connection's).
pub fn set_home(client: RawFd) {
    HOME.with(|h| h.set(Some(of_fd(client))));
}

/// The calling coroutine's home worker: `None` outside a client connection (a credential refresher
/// thread, a test).
pub fn home() -> Option<usize> {
    HOME.with(Cell::get)
}

/// The socket `fd` on a descriptor number that belongs to `worker` (a duplicate, the original closed),
/// when one is given and `fd` is not already one; `fd` itself when no such number can be had. Not
/// registered with may: the caller hands it over.
pub fn descriptor_on(fd: OwnedFd, worker: Option<usize>) -> OwnedFd {
    let n = workers();
    let worker = match worker {
        Some(w) if n > 1 && of_fd(fd.as_raw_fd()) != w => w,
        _ => return fd,
    };
    // F_DUPFD_CLOEXEC gives the lowest free number at or above `min`: step past the wrong workers'.
    let mut wrong = Vec::new();
    let mut min = fd.as_raw_fd() + 1;
    for _ in 0..2 * n {
        // SAFETY: duplicates an open descriptor this function owns; the result is owned below.
        let d = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
        if d < 0 {
            break;
        }
        // SAFETY: `d` is a fresh descriptor nothing else owns.
        let d = unsafe { OwnedFd::from_raw_fd(d) };
        if of_fd(d.as_raw_fd()) == worker {
            // The wrong numbers (in `wrong`) and the original close here.
            return d;
        }
        min = d.as_raw_fd() + 1;
        wrong.push(d);
    }
    fd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_moved_onto_a_worker_has_a_descriptor_of_that_worker_and_still_works() {
        set_workers(2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut b = [0u8; 4];
            std::io::Read::read_exact(&mut s, &mut b).unwrap();
            std::io::Write::write_all(&mut s, &b).unwrap();
        });
        let fd = OwnedFd::from(std::net::TcpStream::connect(addr).unwrap());
        let target = 1 - of_fd(fd.as_raw_fd());
        let moved = descriptor_on(fd, Some(target));
        assert_eq!(of_fd(moved.as_raw_fd()), target);
        let mut moved = std::net::TcpStream::from(moved);
        std::io::Write::write_all(&mut moved, b"ping").unwrap();
        let mut back = [0u8; 4];
        std::io::Read::read_exact(&mut moved, &mut back).unwrap();
        assert_eq!(&back, b"ping");
        server.join().unwrap();
        // Already on its worker, or no worker asked for: the same descriptor.
        let fd = OwnedFd::from(moved);
        let number = fd.as_raw_fd();
        let same = descriptor_on(fd, Some(of_fd(number)));
        assert_eq!(same.as_raw_fd(), number);
        assert_eq!(descriptor_on(same, None).as_raw_fd(), number);
    }
}
