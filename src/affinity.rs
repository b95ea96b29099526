//! Keeping a client connection's upstream sockets on the scheduler thread of its client socket, and
//! helper threads off a pinned scheduler thread's core ([`spawn_helper`]).
//!
//! may registers each socket with the epoll instance of worker `fd % workers`, and a coroutine that
//! waits on a socket resumes on that worker's thread. A request whose client socket and upstream socket
//! belong to different workers therefore moves between threads twice: on a quiet gateway each move
//! wakes the other core; under load the coroutine's stack and buffers change caches. nginx avoids this
//! by keeping one keep-alive cache per worker process; the upstream pool and the Redis client do the
//! same here, with one list of idle connections per worker ([`IdleLists`]), and a new upstream
//! connection is moved to a descriptor number on the client's worker ([`descriptor_on`], before may sees
//! it: `connect.rs`). The worker is a hint, not a rule: if may ever assigns sockets differently the only
//! loss is this saving.
//!
//! It is also what keeps a coroutine on one thread, which matters for more than caches:
//! - A coroutine that changes threads in the middle of a function can read the wrong thread's `errno`.
//!   std declares `__errno_location` const (rust-lang/rust#139081), so LLVM may look its address up once
//!   per function, before a wait, and use it after. The proxy bench's load client, whose connections
//!   were on either worker, saw reads fail with `EINPROGRESS` (the connect's code, left on the thread it
//!   had run on), and with "os error 0" once the connect cleared it.
//! - may parks a coroutine on a socket by handing it to the socket's event record and then reading that
//!   record again. When another worker's thread owns the socket, it can resume the coroutine in between,
//!   and the coroutine can free the record: its connect crashed that way (`connect.rs`), and a waited-on
//!   descriptor dropped at once after its wait left a coroutine parked for ever. may's IO timeouts
//!   armed from another thread can also fire before the coroutine is parked, and it is then never woken.
//!
//! So a connection's coroutine starts on its socket's worker (`server::accept`), upstream and Redis
//! sockets are put on the client's ([`descriptor_on`]), [`sleep`] ends on the home worker (may's own
//! sleep ends on its timer thread), and an answer from a helper thread is polled for ([`poll_until`]).
//! Where a thread move cannot be ruled out, errno is read through libc's own `__errno_location`
//! ([`last_os_error`]).

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

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

/// Makes the worker of the socket `fd` the home of the calling coroutine (a client connection's, or an
/// accept loop's).
pub fn set_home(fd: RawFd) {
    HOME.with(|h| h.set(Some(of_fd(fd))));
}

/// Makes `worker` the home of the calling coroutine (tests of code that runs in a connection's).
#[cfg(test)]
pub(crate) fn set_home_worker(worker: usize) {
    HOME.with(|h| h.set(Some(worker)));
}

/// The calling coroutine's home worker: `None` outside a client connection (a credential refresher
/// thread, a test).
pub fn home() -> Option<usize> {
    HOME.with(Cell::get)
}

/// Idle connections kept one list per worker, as the upstream pool and the Redis client keep theirs: a
/// coroutine takes one whose socket its own worker's event loop serves ([`IdleLists::take`]), and a
/// connection goes back onto its socket's worker's list ([`IdleLists::of_socket`]).
pub struct IdleLists<T> {
    lists: Box<[Mutex<Vec<T>>]>,
}

/// One empty list per worker ([`workers`], as set when the lists are made).
impl<T> Default for IdleLists<T> {
    fn default() -> IdleLists<T> {
        IdleLists { lists: (0..workers()).map(|_| Mutex::new(Vec::new())).collect() }
    }
}

impl<T> IdleLists<T> {
    /// What `from` takes out of the calling coroutine's worker's list; then, when that gives nothing and
    /// `or_others` says so, or outside the workers (a helper thread, a test), out of the other lists in
    /// turn.
    pub fn take<R>(&self, or_others: bool, mut from: impl FnMut(&Mutex<Vec<T>>) -> Option<R>) -> Option<R> {
        let Some(own) = home().map(|worker| worker % self.lists.len()) else {
            return self.lists.iter().find_map(from);
        };
        from(&self.lists[own]).or_else(|| match or_others {
            true => self.others(own).find_map(from),
            false => None,
        })
    }

    /// The list of the worker whose event loop serves the socket `fd`, and its index.
    pub fn of_socket(&self, fd: RawFd) -> (usize, &Mutex<Vec<T>>) {
        let own = of_fd(fd) % self.lists.len();
        (own, &self.lists[own])
    }

    /// Every list but the one at `own`.
    pub fn others(&self, own: usize) -> impl Iterator<Item = &Mutex<Vec<T>>> {
        self.lists.iter().enumerate().filter(move |&(i, _)| i != own).map(|(_, list)| list)
    }

    /// How many lists there are (one per worker).
    pub fn count(&self) -> usize {
        self.lists.len()
    }

    /// Empties every list. The connections are closed outside the locks.
    pub fn clear(&self) {
        for list in self.lists.iter() {
            let dropped = std::mem::take(&mut *list.lock());
            drop(dropped);
        }
    }
}

/// The list of worker `worker` (tests look into the lists).
#[cfg(test)]
impl<T> std::ops::Index<usize> for IdleLists<T> {
    type Output = Mutex<Vec<T>>;

    fn index(&self, worker: usize) -> &Mutex<Vec<T>> {
        &self.lists[worker]
    }
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
    // F_DUPFD_CLOEXEC gives the lowest free number at or above `min`. `min` is always a number of
    // `worker`; when that one is taken the lowest free one above may be another worker's, and the search
    // goes on from the next number of `worker` above it. (Stepping one number at a time instead gave up
    // after a few tries when the free numbers near `fd` all belonged to the other worker, which under a
    // burst of connections left sockets on the wrong worker.)
    let of_worker_from = |from: RawFd| from + ((worker + n - of_fd(from)) % n) as RawFd;
    let mut min = of_worker_from(fd.as_raw_fd() + 1);
    for _ in 0..64 {
        // SAFETY: duplicates an open descriptor this function owns; the result is owned below.
        let d = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
        if d < 0 {
            break;
        }
        // SAFETY: `d` is a fresh descriptor nothing else owns.
        let d = unsafe { OwnedFd::from_raw_fd(d) };
        if of_fd(d.as_raw_fd()) == worker {
            // The original closes here.
            return d;
        }
        min = of_worker_from(d.as_raw_fd() + 1);
        // `d`, of the wrong worker, closes here: the search goes on above it.
    }
    fd
}

/// What `ready` gives, asked again and again (with [`sleep`]s between, 0.5 ms growing to 10 ms) until
/// it gives something or `timeout` has passed. For an answer a helper thread hands over (a name
/// lookup, an access token): a coroutine woken from another thread (a may channel or flag) resumes on
/// whichever worker may's scheduler picks, the workers in turn, and its next wait on its own socket is
/// then armed from the wrong thread (see the module notes). Polling ends every wait on the home worker.
pub fn poll_until<T>(timeout: Duration, mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    let mut pause = Duration::from_micros(500);
    loop {
        if let Some(value) = ready() {
            return Some(value);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Sleeps for `dur`, and resumes on the calling coroutine's home worker when it has one. may's own
/// sleep resumes the coroutine on may's timer thread, from which its next IO wait moves it to a worker
/// (see the module notes). Outside a coroutine, the thread sleeps.
pub fn sleep(dur: Duration) {
    if !may::coroutine::is_coroutine() {
        return std::thread::sleep(dur);
    }
    match home() {
        Some(worker) if wait_on(worker, dur).is_ok() => {}
        _ => may::coroutine::sleep(dur),
    }
}

/// Waits `dur` on a timer descriptor registered with `worker`'s event loop, so that worker's thread
/// resumes the coroutine. A timerfd, not may's IO timeouts: may arms those before it parks the
/// coroutine, and a timeout that the other worker fires in between is lost, with the coroutine (a hang,
/// seen with 1 µs). Here an expiry that comes first leaves the descriptor readable, and the wait returns
/// at once.
fn wait_on(worker: usize, dur: Duration) -> io::Result<()> {
    use may::io::WaitIo;
    // SAFETY: plain timerfd creation; the descriptor is owned at once.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = descriptor_on(unsafe { OwnedFd::from_raw_fd(fd) }, Some(worker));
    let registration =
        may::io::CoIo::new(Number(fd.as_raw_fd())).map_err(|_| io::Error::other("cannot register a timer with may"))?;
    let timer = Box::new(Timer { registration, fd });
    let dur = dur.max(Duration::from_nanos(1));
    let expiry = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        it_value: libc::timespec {
            tv_sec: libc::time_t::try_from(dur.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: dur.subsec_nanos() as libc::c_long,
        },
    };
    // SAFETY: a timerfd and a valid itimerspec.
    if unsafe { libc::timerfd_settime(timer.fd.as_raw_fd(), 0, &expiry, std::ptr::null_mut()) } < 0 {
        return Err(last_os_error());
    }
    let mut moved = false;
    let result = loop {
        let mut expirations = 0u64;
        // SAFETY: reads the 8-byte expiration count into a u64.
        let n = unsafe { libc::read(timer.fd.as_raw_fd(), (&mut expirations as *mut u64).cast(), 8) };
        if n == 8 {
            break Ok(());
        }
        match last_os_error() {
            e if e.raw_os_error() == Some(libc::EAGAIN) => {
                // pthread_self, not `std::thread::current()` (which counts its handle up and down at each
                // call): libc's, opaque to LLVM, so it is asked again after the wait, as errno is.
                // SAFETY: pthread_self has no preconditions.
                let before = unsafe { libc::pthread_self() };
                timer.registration.wait_io();
                moved |= unsafe { libc::pthread_self() } != before;
            }
            e if e.kind() == io::ErrorKind::Interrupted => {}
            e => break Err(e),
        }
    };
    if moved {
        // Parked from one thread and resumed on another: the parking thread may still be reading the
        // timer's event record (may reads it after handing the coroutine over), so it is freed later.
        retire(timer);
    }
    result
}

/// A timer descriptor and its registration with may, dropped in that order: may's `CoIo` would close
/// the descriptor before it takes the registration out of epoll (by number), and by then another thread
/// may have opened and registered a descriptor of that number, whose registration would go instead.
struct Timer {
    registration: may::io::CoIo<Number>,
    fd: OwnedFd,
}

/// A descriptor number, for may to register; closing it is left to its owner.
struct Number(RawFd);

impl AsRawFd for Number {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Timers of waits that changed threads, with when they were retired (coarse milliseconds); each is
/// dropped a second later, by the next retirement or the deadline reaper's next tick
/// ([`sweep_retired`]).
static RETIRED: Mutex<Vec<(u64, Box<Timer>)>> = Mutex::new(Vec::new());
/// How long a retired timer is kept: far longer than a parking thread takes to finish with it.
const RETIRED_FOR_MS: u64 = 1000;

fn retire(timer: Box<Timer>) {
    RETIRED.lock().push((crate::clock::coarse_millis(), timer));
    sweep_retired();
}

/// Drops the retired timers kept for their second (closing their descriptors). Called at each
/// retirement and by the deadline reaper, so that the last timers retired before the gateway goes
/// quiet are not kept until the next one.
pub fn sweep_retired() {
    let now = crate::clock::coarse_millis();
    let expired: Vec<_> = {
        let mut retired = RETIRED.lock();
        let keep = retired.iter().position(|(at, _)| now.saturating_sub(*at) < RETIRED_FOR_MS).unwrap_or(retired.len());
        retired.drain(..keep).collect()
    };
    // Outside the lock: each drop takes the timer out of may's epoll and closes it.
    drop(expired);
}

/// The calling thread's `errno` as an error, read through libc's `__errno_location` at each call. std's
/// `io::Error::last_os_error` is fine on a thread, but its location may be looked up once per function
/// (see the module notes): use this where a coroutine may have changed threads since.
pub fn last_os_error() -> io::Error {
    // SAFETY: glibc's errno location of the calling thread, always valid.
    io::Error::from_raw_os_error(unsafe { *libc::__errno_location() })
}

/// The thread of `worker`, from a coroutine: where may resumes a wait on a socket of that worker.
#[cfg(test)]
pub(crate) fn thread_of_worker(worker: usize) -> std::thread::ThreadId {
    // Long enough that the coroutine is parked before the timer expires, even on a busy machine.
    wait_on(worker, Duration::from_millis(20)).unwrap();
    std::thread::current().id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_lists_give_the_home_workers_connections_first() {
        set_workers(may::config().get_workers());
        if workers() < 2 {
            return; // one worker: one list
        }
        let lists: IdleLists<RawFd> = IdleLists::default();
        // A "connection" per worker, each put back by its socket's number, as the pools do.
        let on = |worker: usize| (0..).find(|&fd| of_fd(fd) == worker).unwrap();
        for worker in 0..2 {
            let (index, list) = lists.of_socket(on(worker));
            assert_eq!(index, worker);
            list.lock().push(on(worker));
        }
        let pop = |list: &Mutex<Vec<RawFd>>| list.lock().pop();
        let homed = |worker: usize, or_others: bool, lists: &IdleLists<RawFd>| {
            let lists = lists as *const IdleLists<RawFd> as usize;
            may::go!(move || {
                HOME.with(|h| h.set(Some(worker)));
                // SAFETY: joined below, while `lists` lives.
                unsafe { &*(lists as *const IdleLists<RawFd>) }.take(or_others, pop)
            })
            .join()
            .unwrap()
        };
        // On worker 1: its own connection; then none, unless the others may serve.
        assert_eq!(homed(1, false, &lists), Some(on(1)));
        assert_eq!(homed(1, false, &lists), None);
        assert_eq!(homed(1, true, &lists), Some(on(0)));
        // Outside the workers, from any list; a cleared pool gives nothing.
        lists.of_socket(on(1)).1.lock().push(on(1));
        assert_eq!(lists.take(false, pop), Some(on(1)));
        lists.of_socket(on(0)).1.lock().push(on(0));
        lists.clear();
        assert_eq!(lists.take(true, pop), None);
    }

    #[test]
    fn a_sleep_ends_on_the_home_workers_thread() {
        set_workers(may::config().get_workers());
        if workers() < 2 {
            return; // one worker: nothing can move
        }
        for worker in 0..2 {
            // Started on its worker, as a connection's coroutine is (`server`).
            let builder = may::coroutine::Builder::new().id(worker);
            let checked = unsafe {
                builder.spawn(move || {
                    HOME.with(|h| h.set(Some(worker)));
                    let home = thread_of_worker(worker);
                    sleep(Duration::from_millis(5));
                    assert_eq!(std::thread::current().id(), home, "a sleep ends on the home worker");
                    // may's own sleep ends on its timer thread: what `sleep` is for. From there, and
                    // from the other worker, a sleep ends at home too.
                    may::coroutine::sleep(Duration::from_millis(5));
                    assert_ne!(std::thread::current().id(), home, "may's sleep ends off the workers");
                    sleep(Duration::from_millis(5));
                    assert_eq!(std::thread::current().id(), home, "from may's timer thread");
                    assert_ne!(thread_of_worker(1 - worker), home);
                    sleep(Duration::from_millis(5));
                    assert_eq!(std::thread::current().id(), home, "from the other worker");
                })
            };
            checked.unwrap().join().unwrap();
        }
        // Outside a coroutine, a plain sleep.
        let t0 = std::time::Instant::now();
        sleep(Duration::from_millis(5));
        assert!(t0.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn a_socket_moves_even_when_the_free_numbers_near_it_are_the_other_workers() {
        set_workers(2);
        let fd = OwnedFd::from(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let target = 1 - of_fd(fd.as_raw_fd());
        // The next numbers up: those of `target` held, those of the other worker free.
        let dups: Vec<OwnedFd> = (0..24)
            .map(|_| {
                // SAFETY: duplicates an open descriptor; the result is owned at once.
                unsafe { OwnedFd::from_raw_fd(libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, fd.as_raw_fd() + 1)) }
            })
            .collect();
        let held: Vec<OwnedFd> = dups.into_iter().filter(|d| of_fd(d.as_raw_fd()) == target).collect();
        assert!(held.len() >= 8);
        let moved = descriptor_on(fd, Some(target));
        assert_eq!(of_fd(moved.as_raw_fd()), target, "moved past {} holes of the other worker", held.len());
    }

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

    #[test]
    fn the_deadline_reaper_drops_timers_retired_a_second_ago_without_a_new_retirement() {
        // A registered timer descriptor, as `wait_on` makes one.
        let timer = || {
            // SAFETY: plain timerfd creation; the descriptor is owned at once.
            let fd = unsafe { OwnedFd::from_raw_fd(libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC)) };
            let registration = may::io::CoIo::new(Number(fd.as_raw_fd())).unwrap();
            Box::new(Timer { registration, fd })
        };
        let (old, new) = (timer(), timer());
        let (old_fd, new_fd) = (old.fd.as_raw_fd(), new.fd.as_raw_fd());
        // Retired long ago, and (so that no slow moment of the machine can age it) in a minute.
        let now = crate::clock::coarse_millis();
        let (long_ago, later) = (now.saturating_sub(RETIRED_FOR_MS + 10), now + 60_000);
        {
            let mut retired = RETIRED.lock();
            retired.push((long_ago, old));
            retired.push((later, new));
        }
        // By the list, not by probing the descriptors: another test may reuse a closed one's number.
        let kept = |at: u64, fd: RawFd| RETIRED.lock().iter().any(|(t, timer)| *t == at && timer.fd.as_raw_fd() == fd);
        // An open socket keeps the reaper ticking; nothing else is retired meanwhile.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _deadline = crate::deadline::Deadline::register(listener.as_raw_fd(), std::net::Shutdown::Both);
        let start = std::time::Instant::now();
        while kept(long_ago, old_fd) && start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!kept(long_ago, old_fd), "the reaper's tick drops (and closes) a timer kept for its second");
        assert!(kept(later, new_fd), "a newer one is kept");
        RETIRED.lock().retain(|(t, timer)| !(*t == later && timer.fd.as_raw_fd() == new_fd));
    }
}
