//! Name resolution that never blocks a worker: getaddrinfo runs on a helper thread while the coroutine
//! waits on a may channel; answers are cached for a minute, and a stale answer is served if a refresh
//! fails. IP literals skip all of it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

const TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Resolver {
    cache: Mutex<HashMap<String, (Vec<SocketAddr>, Instant)>>,
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
        let lookup = key.clone();
        std::thread::Builder::new().name("switchyard-dns".into()).spawn(move || {
            let _ = tx.send(lookup.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })?;
        let fresh = match rx.recv_timeout(timeout) {
            Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
            Ok(Ok(_)) => Err(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("resolving {host} timed out"))),
        };
        match (fresh, cached) {
            (Ok(addrs), _) => {
                self.cache.lock().insert(key, (addrs.clone(), Instant::now()));
                Ok(addrs)
            }
            // The resolver is failing: an answer a little old beats none.
            (Err(_), Some((addrs, _))) => Ok(addrs),
            (Err(e), None) => Err(e),
        }
    }
}
