//! A helper thread with nothing to look at sleeps without a period, instead of waking every few
//! milliseconds to find nothing: the first producer after wakes it. On an idle gateway the three
//! helpers that use it (the access log writer, the deadline reaper, the client watcher) wake 1.2 times
//! a second in all, for their safety nets, where they woke 65 times a second (50, 10 and 5).
//!
//! The producer's side is one load of a flag while the helper is awake, and one futex wake the first
//! time after it went to sleep, so a producer on the request path makes no system call while there is
//! traffic.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::Duration;

/// The longest a dozing helper sleeps without a wake: a safety net, not the mechanism.
const LONGEST: Duration = Duration::from_secs(5);

/// One helper thread's sleep, and its producers' way to end it.
pub struct Doze {
    thread: OnceLock<Thread>,
    asleep: AtomicBool,
}

impl Default for Doze {
    fn default() -> Self {
        Doze::new()
    }
}

impl Doze {
    pub const fn new() -> Doze {
        Doze { thread: OnceLock::new(), asleep: AtomicBool::new(false) }
    }

    /// In the helper thread (always the same one), when it found nothing to do: sleeps until a
    /// [`Doze::wake`], unless `has_work` says there is work after all. `has_work` is asked after the
    /// sleep is announced, and must look under the lock producers publish under: then either it sees a
    /// producer's work, or that producer sees the announcement and wakes the thread.
    pub fn sleep_unless(&self, has_work: impl FnOnce() -> bool) {
        self.thread.get_or_init(std::thread::current);
        self.asleep.store(true, Ordering::SeqCst);
        if !has_work() {
            std::thread::park_timeout(LONGEST);
        }
        self.asleep.store(false, Ordering::SeqCst);
    }

    /// After a producer published work (and released the lock it publishes under): wakes the helper if
    /// it is asleep.
    #[inline]
    pub fn wake(&self) {
        if self.asleep.load(Ordering::SeqCst) && self.asleep.swap(false, Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// A producer that publishes while the helper is asleep wakes it long before the safety net, and
    /// so does one that races the helper's announcement: no wake is lost in 200 items.
    #[test]
    fn a_producer_wakes_a_dozing_helper() {
        struct Shared {
            doze: Doze,
            work: Mutex<Vec<u32>>,
        }
        let shared = Arc::new(Shared { doze: Doze::new(), work: Mutex::new(Vec::new()) });
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<u32>();
        let helper = {
            let shared = shared.clone();
            std::thread::spawn(move || loop {
                let items: Vec<u32> = std::mem::take(&mut *shared.work.lock());
                for i in &items {
                    if *i == u32::MAX || seen_tx.send(*i).is_err() {
                        return;
                    }
                }
                shared.doze.sleep_unless(|| !shared.work.lock().is_empty());
            })
        };
        for i in 0..200u32 {
            // Every few items, give the helper time to fall asleep first.
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
            shared.work.lock().push(i);
            shared.doze.wake();
            // Well under the safety net: a lost wake would show here.
            assert_eq!(seen_rx.recv_timeout(LONGEST / 2), Ok(i));
        }
        shared.work.lock().push(u32::MAX);
        shared.doze.wake();
        helper.join().unwrap();
    }
}
