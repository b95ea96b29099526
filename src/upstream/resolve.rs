//! Name resolution that never blocks a worker: getaddrinfo runs on a helper thread while the coroutine
//! waits for its answer on its home worker (`affinity::poll_until`: a may channel would resume it on
//! either worker); one lookup per name at a time (others wait for its answer); answers cached
//! for a minute, and past that the old answer is served at once while a refresh runs. IP literals skip
//! all of it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const TTL: Duration = Duration::from_secs(60);

type Answer = Result<Vec<SocketAddr>, String>;
/// Answers by `host:port`, with when they were looked up.
type Cache = HashMap<String, (Vec<SocketAddr>, Instant)>;
/// Lookups under way, with whoever waits for them.
type Waiters = HashMap<String, Vec<std::sync::mpsc::Sender<Answer>>>;

#[derive(Debug, Default)]
pub struct Resolver {
    /// Shared with the helper threads, which store every answer (even one nobody waits for any more).
    cache: Arc<Mutex<Cache>>,
    /// Names being looked up, with whoever waits for the answer (shared with the helper threads).
    pending: Arc<Mutex<Waiters>>,
}

impl Resolver {
    /// The addresses of `host:port`: a cached answer up to a minute old; past that the old answer is
    /// served at once while one refresh runs.
    pub fn resolve(&self, host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
        self.lookup(host, port, timeout, false)
    }

    /// The addresses of `host:port` looked up now (joining a lookup already under way), so an address
    /// that moved is followed at once; the last answer is used only when this lookup fails.
    pub fn resolve_fresh(&self, host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
        self.lookup(host, port, timeout, true)
    }

    fn lookup(&self, host: &str, port: u16, timeout: Duration, fresh: bool) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = format!("{host}:{port}");
        let cached = self.cache.lock().get(&key).cloned();
        if let Some((addrs, at)) = &cached {
            if !fresh && at.elapsed() < TTL {
                return Ok(addrs.clone());
            }
        }
        // With a stale answer and no need for a fresh one, nothing is waited for: the stale answer is
        // served while one refresh runs.
        let wait = fresh || cached.is_none();
        let (tx, rx) = std::sync::mpsc::channel();
        let start = {
            let mut pending = self.pending.lock();
            let start = !pending.contains_key(&key);
            let waiters = pending.entry(key.clone()).or_default();
            if wait {
                waiters.push(tx);
            }
            start
        };
        if start {
            // The helper thread stores the answer and hands it to everyone waiting for this name.
            let lookup = key.clone();
            let (pending, cache) = (self.pending.clone(), self.cache.clone());
            let spawned = crate::affinity::spawn_helper("switchyard-dns", move || {
                let answer: Answer = lookup.to_socket_addrs().map(|a| a.collect()).map_err(|e| e.to_string());
                if let Ok(addrs) = &answer {
                    if !addrs.is_empty() {
                        cache.lock().insert(lookup.clone(), (addrs.clone(), Instant::now()));
                    }
                }
                let waiters = pending.lock().remove(&lookup).unwrap_or_default();
                for w in waiters {
                    let _ = w.send(answer.clone());
                }
            });
            if let Err(e) = spawned {
                self.pending.lock().remove(&key);
                return cached.map(|(addrs, _)| addrs).ok_or(e);
            }
        }
        let stale = cached.map(|(addrs, _)| addrs);
        if !wait {
            return Ok(stale.unwrap_or_default());
        }
        let failed = match crate::affinity::poll_until(timeout, || rx.try_recv().ok()) {
            Some(Ok(addrs)) if !addrs.is_empty() => return Ok(addrs),
            Some(Ok(_)) => io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address")),
            Some(Err(e)) => io::Error::new(io::ErrorKind::NotFound, format!("resolving {host}: {e}")),
            None => io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host} timed out")),
        };
        stale.ok_or(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_once_for_concurrent_callers_and_literals_skip_lookup() {
        let resolver = Arc::new(Resolver::default());
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let r = resolver.clone();
                may::go!(move || r.resolve("localhost", 8080, Duration::from_secs(5)))
            })
            .collect();
        for h in handles {
            let addrs = h.join().unwrap().unwrap();
            assert!(addrs.iter().all(|a| a.port() == 8080 && a.ip().is_loopback()), "{addrs:?}");
        }
        assert!(resolver.pending.lock().is_empty(), "every waiter was answered");
        assert_eq!(resolver.cache.lock().len(), 1);
        let literal = resolver.resolve("127.0.0.1", 1, Duration::from_secs(1)).unwrap();
        assert_eq!(literal, vec![SocketAddr::from(([127, 0, 0, 1], 1))]);
        assert!(resolver.resolve("name.invalid", 1, Duration::from_secs(5)).is_err());
    }

    #[test]
    fn a_coroutine_waiting_for_a_lookup_resumes_on_its_home_worker() {
        crate::affinity::set_workers(may::config().get_workers());
        if crate::affinity::workers() < 2 {
            return; // one worker: nothing can move
        }
        // Each worker twice in a row: may hands wake-ups from other threads to the workers in turn.
        for worker in [0, 0, 1, 1, 0, 0, 1, 1] {
            // Started on its worker with that worker as its home, as a connection's coroutine is.
            let builder = may::coroutine::Builder::new().id(worker);
            let checked = unsafe {
                builder.spawn(move || {
                    crate::affinity::set_home_worker(worker);
                    let home = crate::affinity::thread_of_worker(worker);
                    // A new resolver each time: nothing cached, so the coroutine waits for the helper.
                    Resolver::default().resolve("localhost", 1, Duration::from_secs(5)).unwrap();
                    std::thread::current().id() == home
                })
            };
            assert!(checked.unwrap().join().unwrap(), "the lookup's answer resumed the coroutine off worker {worker}");
        }
    }

    #[test]
    fn a_fresh_resolution_looks_the_name_up_again() {
        let resolver = Resolver::default();
        let first = resolver.resolve("localhost", 1, Duration::from_secs(5)).unwrap();
        let at = resolver.cache.lock()["localhost:1"].1;
        assert_eq!(resolver.resolve("localhost", 1, Duration::from_secs(5)).unwrap(), first);
        assert_eq!(resolver.cache.lock()["localhost:1"].1, at, "a cached answer is reused");
        assert_eq!(resolver.resolve_fresh("localhost", 1, Duration::from_secs(5)).unwrap(), first);
        assert!(resolver.cache.lock()["localhost:1"].1 > at, "a fresh resolution looked the name up");
        assert!(resolver.resolve_fresh("name.invalid", 1, Duration::from_secs(5)).is_err());
    }
}
