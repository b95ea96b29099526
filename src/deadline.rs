//! Socket timeouts without per-read timers. may implements a socket read timeout as a timer entry per
//! blocking read, and an entry that is the newest of its list cannot be unlinked when the read completes:
//! it lives until it expires. With one entry left behind per request, memory grew with the request rate
//! times the timeout (measured: one keep-alive connection at ~8,300 req/s took RSS from 12 to ~101 MiB,
//! levelling off after the 120 s idle timeout).
//!
//! Instead, a socket registers a [`Deadline`] once; before each blocking wait its owner arms it (an atomic
//! store) and disarms it after. One thread looks at the armed deadlines ten times a second and shuts
//! down the socket of any that passed, which ends the wait at once; the owner then sees [`Deadline::expired`]
//! and reports a timeout. A deadline is unregistered (under the registry's lock) before its socket closes,
//! so the thread only ever touches open, registered descriptors.

use std::collections::HashMap;
use std::net::Shutdown;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use parking_lot::Mutex;

/// How often the reaper looks: timeouts fire up to this late.
const PERIOD: Duration = Duration::from_millis(100);

struct Slot {
    fd: RawFd,
    /// When the wait must end, in [`crate::clock::coarse_millis`]; 0: disarmed.
    at: AtomicU64,
    expired: AtomicBool,
    /// What to shut down: the read side only lets a server still answer (408), both ends a socket.
    how: Shutdown,
}

static SLOTS: Mutex<Option<HashMap<u64, Arc<Slot>>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static REAPER: Once = Once::new();
/// The reaper dozes while no socket is registered (an idle gateway): [`crate::doze`].
static REAPER_DOZE: crate::doze::Doze = crate::doze::Doze::new();

fn now_ms() -> u64 {
    // Never 0, which means "disarmed" (the coarse clock counts from boot).
    crate::clock::coarse_millis().max(1)
}

/// A socket's deadline, registered for the socket's whole life.
pub struct Deadline {
    id: u64,
    slot: Arc<Slot>,
}

impl Deadline {
    /// Registers the socket `fd`; an expired wait shuts it down `how`. The `Deadline` must be dropped
    /// before the socket is closed (declare it before the socket in the owning struct).
    pub fn register(fd: RawFd, how: Shutdown) -> Deadline {
        REAPER.call_once(|| {
            let spawned = crate::affinity::spawn_helper("switchyard-deadline", reap);
            if let Err(e) = spawned {
                crate::error!("cannot start the deadline reaper: {e}");
            }
        });
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot { fd, at: AtomicU64::new(0), expired: AtomicBool::new(false), how });
        SLOTS.lock().get_or_insert_with(HashMap::new).insert(id, slot.clone());
        REAPER_DOZE.wake();
        Deadline { id, slot }
    }

    /// The next wait must end within `timeout`.
    pub fn arm(&self, timeout: Duration) {
        let at = crate::clock::coarse_deadline(timeout).max(1);
        self.slot.at.store(at, Ordering::Release);
    }

    /// The wait ended.
    pub fn disarm(&self) {
        self.slot.at.store(0, Ordering::Release);
    }

    /// Whether a wait ran past its deadline (and the socket was shut down).
    pub fn expired(&self) -> bool {
        self.slot.expired.load(Ordering::Acquire)
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if let Some(map) = SLOTS.lock().as_mut() {
            map.remove(&self.id);
        }
    }
}

fn reap() {
    loop {
        std::thread::sleep(PERIOD);
        // The reaper is the gateway's one periodic helper: it also closes the timers of waits that
        // changed threads once they have been kept long enough.
        crate::affinity::sweep_retired();
        let now = now_ms();
        let guard = SLOTS.lock();
        let Some(map) = guard.as_ref().filter(|m| !m.is_empty()) else {
            drop(guard);
            REAPER_DOZE.sleep_unless(|| SLOTS.lock().as_ref().is_some_and(|m| !m.is_empty()));
            continue;
        };
        for slot in map.values() {
            let at = slot.at.load(Ordering::Acquire);
            if at != 0 && at <= now && !slot.expired.swap(true, Ordering::AcqRel) {
                // SAFETY: the slot is registered, so its socket is open (it is unregistered under this lock
                // before the socket closes); ManuallyDrop keeps this borrowed handle from closing it.
                let socket = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(slot.fd) });
                let _ = socket.shutdown(slot.how);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    #[test]
    fn an_armed_wait_past_its_deadline_is_ended_and_a_disarmed_one_is_left_alone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let deadline = Deadline::register(client.as_raw_fd(), Shutdown::Both);
        deadline.arm(Duration::from_millis(150));
        deadline.disarm();
        std::thread::sleep(Duration::from_millis(400));
        assert!(!deadline.expired(), "a disarmed deadline never fires");
        deadline.arm(Duration::from_millis(150));
        // A guard against hanging if the reaper failed: the read would then time out with an error.
        client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).ok(), Some(0), "the shut-down socket reads end-of-stream");
        assert!(deadline.expired());
        drop(deadline);
        assert!(SLOTS.lock().as_ref().is_none_or(|m| m.values().all(|s| s.fd != client.as_raw_fd())));
    }
}
