//! Client-disconnect detection for requests in flight. One thread looks at the socket of every
//! watched client connection with a request in flight a few times a second (a non-blocking peek), and
//! sleeps while no connection is watched: a connection is put on a watch list once, at its first
//! request, and a request costs a few atomic stores and one uncontended lock, with no coroutine or
//! wake-up (but a connection's first request, when it wakes the sleeping watcher). A client that
//! closes has its upstream call shut down within `GRACE_MS + PERIOD`.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use parking_lot::Mutex;

use crate::cancel::Cancel;
use crate::metrics::labels::FxBuild;
use crate::tls::ServerStream;

/// Requests younger than this are not looked at (most finish first).
const GRACE_MS: u64 = 100;
/// How often the watcher looks.
const PERIOD: Duration = Duration::from_millis(200);

struct Watched {
    /// The client socket's descriptor (no duplicate: thousands of streams must not cost extra fds).
    fd: RawFd,
    /// A TLS client's close usually comes as a `close_notify` record before the FIN: bytes to peek at
    /// that are not a next request, so the half-close itself (POLLRDHUP) is what is looked for.
    tls: bool,
    /// The connection's requests: which one is in flight, and since when.
    cancel: Arc<Cancel>,
}

/// One watch list per worker thread (threads take them in turn): the two operations a connection makes
/// on its list (at its first watched request and when it closes) take a lock no other worker takes,
/// and no cache line goes from core to core. The watcher looks at every list.
const SHARDS: usize = 16;

/// A watch list, on cache lines of its own.
#[repr(align(128))]
struct Shard(Mutex<Option<List>>);

#[derive(Default)]
struct List {
    /// Keyed by our own sequential ids (no client chooses them): the small Fx hash, not SipHash.
    watched: HashMap<u64, Watched, FxBuild>,
    next_id: u64,
}

static WATCHED: [Shard; SHARDS] = [const { Shard(Mutex::new(None)) }; SHARDS];
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
static WATCHER: Once = Once::new();
/// The watcher dozes while no connection is on a list (an idle gateway): [`crate::doze`].
static WATCHER_DOZE: crate::doze::Doze = crate::doze::Doze::new();

thread_local! {
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// Per connection, in its coroutine: its cancel handle, whether a request is in flight, and its entry
/// in a watch list (the list and the id in it) from its first watched request until it closes.
pub struct ClientWatch {
    cancel: Arc<Cancel>,
    in_flight: bool,
    entry: Option<(usize, u64)>,
}

impl ClientWatch {
    pub fn new() -> ClientWatch {
        ClientWatch { cancel: Arc::new(Cancel::default()), in_flight: false, entry: None }
    }

    /// Watches the client until `request_done`; upstream sockets of this coroutine register with the
    /// returned `Cancel`. Must be called from the connection's own coroutine.
    pub fn start(&mut self, stream: &ServerStream) -> Arc<Cancel> {
        if !self.in_flight {
            self.in_flight = true;
            self.cancel.begin();
        }
        if self.entry.is_none() {
            // The connection's first watched request: its coroutine's upstream sockets register with
            // this `Cancel` from now on, and the watcher looks at it until it closes.
            crate::upstream::set_current_cancel(&self.cancel);
            WATCHER.call_once(|| {
                let spawned = crate::affinity::spawn_helper("switchyard-watch", watch_loop);
                if let Err(e) = spawned {
                    crate::error!("cannot start the client watcher: {e}");
                }
            });
            let entry = Watched { fd: stream.as_raw_fd(), tls: stream.is_tls(), cancel: self.cancel.clone() };
            let shard = SHARD.with(|s| *s);
            let mut guard = WATCHED[shard].0.lock();
            let list = guard.get_or_insert_with(List::default);
            list.next_id += 1;
            list.watched.insert(list.next_id, entry);
            self.entry = Some((shard, list.next_id));
            drop(guard);
            WATCHER_DOZE.wake();
        }
        self.cancel.clone()
    }

    /// The request ends: a cancel no longer reaches it, nor the connection until its next request.
    pub fn request_done(&mut self) {
        if std::mem::take(&mut self.in_flight) {
            self.cancel.end();
        }
    }
}

impl Drop for ClientWatch {
    /// Off the watch list before the connection's socket closes (the watcher peeks at it by descriptor).
    fn drop(&mut self) {
        self.request_done();
        // The list it was put in (a coroutine may have moved to another worker since).
        if let Some((shard, id)) = self.entry.take() {
            if let Some(list) = WATCHED[shard].0.lock().as_mut() {
                list.watched.remove(&id);
            }
        }
    }
}

fn watch_loop() {
    let mut ids: Vec<(u64, u64)> = Vec::new();
    let mut gone: Vec<(Arc<Cancel>, u64)> = Vec::new();
    let watching = || WATCHED.iter().any(|shard| shard.0.lock().as_ref().is_some_and(|l| !l.watched.is_empty()));
    loop {
        std::thread::sleep(PERIOD);
        if !watching() {
            WATCHER_DOZE.sleep_unless(watching);
            continue;
        }
        let now_ms = crate::clock::coarse_millis();
        for shard in &WATCHED {
            if let Some(list) = shard.0.lock().as_ref() {
                ids.extend(list.watched.iter().filter_map(|(id, w)| {
                    let (request, since_ms) = w.cancel.in_flight_request()?;
                    (now_ms.saturating_sub(since_ms) >= GRACE_MS && !w.cancel.is_cancelled()).then_some((*id, request))
                }));
            }
            // Peeks happen under the list's lock, a batch at a time: an entry is removed (under the
            // lock) before its connection's socket closes, so every descriptor looked at here is open
            // and is the one registered. The sockets are non-blocking: a batch holds the lock for
            // microseconds.
            for batch in ids.chunks(64) {
                let guard = shard.0.lock();
                let Some(list) = guard.as_ref() else { break };
                for (w, request) in batch.iter().filter_map(|(id, request)| Some((list.watched.get(id)?, *request))) {
                    if client_gone(w) {
                        gone.push((w.cancel.clone(), request));
                    }
                }
            }
            ids.clear();
        }
        for (cancel, request) in gone.drain(..) {
            cancel.cancel_request(request);
        }
    }
}

/// Whether a watched client has closed its connection (or it failed). The descriptor must be open:
/// see the watcher's locking.
fn client_gone(w: &Watched) -> bool {
    if w.tls {
        return peer_has_closed(w.fd);
    }
    // SAFETY: `w.fd` is open (see above); ManuallyDrop keeps this handle from closing it.
    let socket = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(w.fd) });
    match socket.peek(&mut [0u8; 1]) {
        // Closed (FIN or reset): nobody will read the answer.
        Ok(0) => true,
        // Bytes of a pipelined next request: the close, if any, is behind them.
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted),
    }
}

/// Whether the peer of `fd` has shut down its sending side or the connection failed (a zero-timeout
/// poll for POLLRDHUP: it is reported even with unread bytes in front of the FIN).
fn peer_has_closed(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: one valid pollfd, a zero timeout; `fd` is open (see the caller).
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    ready > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
