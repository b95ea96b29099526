//! Name resolution that never blocks a worker: getaddrinfo runs on a helper thread while the coroutine
//! waits on a may channel; one lookup per name at a time (others wait for its answer); answers cached
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
type Waiters = HashMap<String, Vec<may::sync::mpsc::Sender<Answer>>>;

#[derive(Debug, Default)]
pub struct Resolver {
    /// Shared with the helper threads, which store every answer (even one nobody waits for any more).
    cache: Arc<Mutex<Cache>>,
    /// Names being looked up, with whoever waits for the answer (shared with the helper threads).
    pending: Arc<Mutex<Waiters>>,
}

impl Resolver {
    pub fn resolve(&self, host: &str, port: u16, timeout: Duration) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = format!("{host}:{port}");
        let cached = self.cache.lock().get(&key).cloned();
        if let Some((addrs, at)) = &cached {
            if at.elapsed() < TTL {
                return Ok(addrs.clone());
            }
        }
        let (tx, rx) = may::sync::mpsc::channel();
        let start = {
            let mut pending = self.pending.lock();
            let start = !pending.contains_key(&key);
            let waiters = pending.entry(key.clone()).or_default();
            // With a stale answer there is nothing to wait for: it is served while one refresh runs.
            if cached.is_none() {
                waiters.push(tx);
            }
            start
        };
        if start {
            // The helper thread stores the answer and hands it to everyone waiting for this name.
            let lookup = key.clone();
            let (pending, cache) = (self.pending.clone(), self.cache.clone());
            let spawned = std::thread::Builder::new().name("switchyard-dns".into()).spawn(move || {
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
                if cached.is_none() {
                    return Err(e);
                }
            }
        }
        if let Some((addrs, _)) = cached {
            return Ok(addrs);
        }
        match rx.recv_timeout(timeout) {
            Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
            Ok(Ok(_)) => Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))),
            Ok(Err(e)) => Err(io::Error::new(io::ErrorKind::NotFound, format!("resolving {host}: {e}"))),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host} timed out"))),
        }
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
}
