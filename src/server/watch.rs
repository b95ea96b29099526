//! Client-disconnect detection for requests in flight. One thread looks at every watched client
//! socket a few times a second (a non-blocking peek on a duplicate handle): a request costs two map
//! operations and no coroutine or wake-up, and a client that closes has its upstream call shut down
//! within `GRACE_MS + PERIOD`.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
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
    cancel: Arc<Cancel>,
    /// When the request started, in [`crate::clock::coarse_millis`].
    since_ms: u64,
}

/// Keyed by our own sequential ids (no client chooses them): the small Fx hash, not SipHash.
static WATCHED: Mutex<Option<HashMap<u64, Watched, FxBuild>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static WATCHER: Once = Once::new();

/// Per connection: its cancel handle and, while a request is in flight, its entry in the watch list.
pub struct ClientWatch {
    cancel: Arc<Cancel>,
    entry: Option<u64>,
}

impl ClientWatch {
    pub fn new() -> ClientWatch {
        ClientWatch { cancel: Arc::new(Cancel::default()), entry: None }
    }

    /// Watches the client until `request_done`; upstream sockets of this coroutine register with the
    /// returned `Cancel`.
    pub fn start(&mut self, stream: &ServerStream) -> Arc<Cancel> {
        if self.entry.is_none() {
            // A fresh handle per request: a cancel (even a late one) reaches only its own request.
            self.cancel = Arc::new(Cancel::default());
        }
        crate::upstream::set_current_cancel(&self.cancel);
        if self.entry.is_none() {
            WATCHER.call_once(|| {
                let spawned = crate::affinity::spawn_helper("switchyard-watch", watch_loop);
                if let Err(e) = spawned {
                    crate::error!("cannot start the client watcher: {e}");
                }
            });
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let entry = Watched {
                fd: stream.as_raw_fd(),
                tls: stream.is_tls(),
                cancel: self.cancel.clone(),
                since_ms: crate::clock::coarse_millis(),
            };
            WATCHED.lock().get_or_insert_with(HashMap::default).insert(id, entry);
            self.entry = Some(id);
        }
        self.cancel.clone()
    }

    pub fn request_done(&mut self) {
        self.cancel.clear();
        if let Some(id) = self.entry.take() {
            if let Some(map) = WATCHED.lock().as_mut() {
                map.remove(&id);
            }
        }
    }
}

impl Drop for ClientWatch {
    fn drop(&mut self) {
        self.request_done();
    }
}

fn watch_loop() {
    let mut ids: Vec<u64> = Vec::new();
    let mut gone: Vec<Arc<Cancel>> = Vec::new();
    loop {
        std::thread::sleep(PERIOD);
        let now_ms = crate::clock::coarse_millis();
        if let Some(map) = WATCHED.lock().as_ref() {
            ids.extend(
                map.iter()
                    .filter(|(_, w)| now_ms.saturating_sub(w.since_ms) >= GRACE_MS && !w.cancel.is_cancelled())
                    .map(|(id, _)| *id),
            );
        }
        // Peeks happen under the lock, a batch at a time: an entry is removed (under the lock) before
        // its connection's socket closes, so every descriptor looked at here is open and is the one
        // registered. The sockets are non-blocking: a batch holds the lock for microseconds.
        for batch in ids.chunks(64) {
            let guard = WATCHED.lock();
            let Some(map) = guard.as_ref() else { break };
            let mut byte = [0u8; 1];
            for w in batch.iter().filter_map(|id| map.get(id)) {
                if w.tls {
                    if peer_has_closed(w.fd) {
                        gone.push(w.cancel.clone());
                    }
                    continue;
                }
                // SAFETY: `w.fd` is open (see above); ManuallyDrop keeps this handle from closing it.
                let socket = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(w.fd) });
                match socket.peek(&mut byte) {
                    // Closed (FIN or reset): nobody will read the answer.
                    Ok(0) => gone.push(w.cancel.clone()),
                    // Bytes of a pipelined next request: the close, if any, is behind them.
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => gone.push(w.cancel.clone()),
                }
            }
        }
        ids.clear();
        for cancel in gone.drain(..) {
            cancel.cancel();
        }
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
