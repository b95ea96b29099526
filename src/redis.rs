//! A minimal Redis client on may sockets (RESP2): enough to run the rate-limit scripts without
//! blocking a worker thread. Protocol encoding and parsing are pure functions; `RedisClient` is the
//! IO shell: a small pool, timeouts on every call, and a short back-off while Redis is down.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use may::net::TcpStream;
use parking_lot::Mutex;

use crate::ratelimit::ReplyItem;

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// An array of scalars as `ReplyItem`s (nil and nested arrays are refused).
    pub fn items(&self) -> Option<Vec<ReplyItem>> {
        let Resp::Array(Some(items)) = self else { return None };
        items
            .iter()
            .map(|i| match i {
                Resp::Int(n) => Some(ReplyItem::Int(*n)),
                Resp::Bulk(Some(b)) => Some(ReplyItem::Text(String::from_utf8_lossy(b).into_owned())),
                Resp::Simple(s) => Some(ReplyItem::Text(s.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one value from the start of `buf`: `Ok(None)` when more bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, &'static str> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    let line = std::str::from_utf8(&buf[1..line_end]).map_err(|_| "invalid RESP line")?;
    let after = line_end + 2;
    let int = || line.parse::<i64>().map_err(|_| "invalid RESP integer");
    match buf.first() {
        Some(b'+') => Ok(Some((Resp::Simple(line.to_string()), after))),
        Some(b'-') => Ok(Some((Resp::Error(line.to_string()), after))),
        Some(b':') => Ok(Some((Resp::Int(int()?), after))),
        Some(b'$') => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), after)));
            }
            let end = after + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            Ok(Some((Resp::Bulk(Some(buf[after..end].to_vec())), end + 2)))
        }
        Some(b'*') => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), after)));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut at = after;
            for _ in 0..n {
                match parse(&buf[at..])? {
                    Some((v, used)) => {
                        items.push(v);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        _ => Err("invalid RESP type byte"),
    }
}

#[derive(Debug)]
pub enum RedisError {
    /// Down, refused, timed out, or broke the protocol: the configured failure policy applies.
    Unavailable(String),
    /// Redis answered with an error.
    Reply(String),
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisError::Unavailable(m) => write!(f, "redis unavailable: {m}"),
            RedisError::Reply(m) => write!(f, "redis error: {m}"),
        }
    }
}

/// Connection settings parsed from `redis://[:password@]host:port[/db]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub db: u32,
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let rest = url.strip_prefix("redis://").ok_or("must start with redis://")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        let password = auth.map(|a| a.split_once(':').map_or(a, |(_, p)| p).to_string()).filter(|p| !p.is_empty());
        let (hostport, db) = match rest.split_once('/') {
            Some((h, d)) if !d.is_empty() => (h, d.parse().map_err(|_| format!("\"{d}\" is not a database number"))?),
            Some((h, _)) => (h, 0),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("\"{p}\" is not a port"))?),
            None => (hostport, 6379),
        };
        if host.is_empty() {
            return Err("a host is required".into());
        }
        Ok(RedisUrl { host: host.trim_matches(['[', ']']).to_string(), port, password, db })
    }
}

/// A pooled client. Never holds a lock across IO; every call is bounded by `timeout`.
pub struct RedisClient {
    pub url: RedisUrl,
    addr: SocketAddr,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    /// While Redis is failing, calls fail fast until this instant (ms since `epoch`), then one probes.
    down_until_ms: AtomicU64,
    epoch: Instant,
    /// SHA1 of loaded scripts, by script text.
    shas: Mutex<Vec<(&'static str, String)>>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

const BACKOFF_MS: u64 = 500;

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: show only where it points.
        f.debug_struct("RedisClient").field("addr", &self.addr).field("db", &self.url.db).finish()
    }
}

impl RedisClient {
    /// Resolves the host now (start-up or reload, off the workers); connects lazily.
    pub fn new(url: &str, timeout: Duration) -> Result<RedisClient, String> {
        let url = RedisUrl::parse(url)?;
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
            .next()
            .ok_or_else(|| format!("no address for {}", url.host))?;
        Ok(RedisClient {
            url,
            addr,
            timeout,
            idle: Mutex::new(Vec::new()),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            shas: Mutex::new(Vec::new()),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn connect(&self) -> Result<Conn, RedisError> {
        let unavailable = |e: io::Error| RedisError::Unavailable(format!("{}: {e}", self.addr));
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout).map_err(unavailable)?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(self.timeout)).map_err(unavailable)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(unavailable)?;
        let mut conn = Conn { stream, buf: Vec::with_capacity(512) };
        if let Some(p) = &self.url.password {
            expect_ok(conn.call(&[b"AUTH", p.as_bytes()], self.timeout)?)?;
        }
        if self.url.db != 0 {
            expect_ok(conn.call(&[b"SELECT", self.url.db.to_string().as_bytes()], self.timeout)?)?;
        }
        Ok(conn)
    }

    /// Runs one command. Fails fast (without IO) during the back-off after a failure.
    pub fn call(&self, args: &[&[u8]]) -> Result<Resp, RedisError> {
        if self.now_ms() < self.down_until_ms.load(Ordering::Relaxed) {
            return Err(RedisError::Unavailable("backing off after a failure".into()));
        }
        self.call_now(args)
    }

    /// Runs one command even during the back-off (for work that must not be skipped).
    fn call_now(&self, args: &[&[u8]]) -> Result<Resp, RedisError> {
        let pooled = self.idle.lock().pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().inspect_err(|_| self.mark_down())?,
        };
        match conn.call(args, self.timeout) {
            Ok(reply) => {
                let mut idle = self.idle.lock();
                if idle.len() < 64 {
                    idle.push(conn);
                }
                Ok(reply)
            }
            Err(e) => {
                self.mark_down();
                Err(e)
            }
        }
    }

    fn mark_down(&self) {
        self.down_until_ms.store(self.now_ms() + BACKOFF_MS, Ordering::Relaxed);
        self.idle.lock().clear();
    }

    /// Runs a Lua script by SHA, loading it first if this server does not have it (also after a
    /// Redis restart). Fails fast during the back-off after a failure.
    pub fn eval(&self, script: &'static str, args: &[Vec<u8>]) -> Result<Resp, RedisError> {
        if self.now_ms() < self.down_until_ms.load(Ordering::Relaxed) {
            return Err(RedisError::Unavailable("backing off after a failure".into()));
        }
        self.eval_now(script, args)
    }

    /// [`RedisClient::eval`] even during the back-off.
    pub fn eval_now(&self, script: &'static str, args: &[Vec<u8>]) -> Result<Resp, RedisError> {
        let known = self.shas.lock().iter().find(|(s, _)| std::ptr::eq(*s, script)).map(|(_, sha)| sha.clone());
        let sha = match known {
            Some(sha) => sha,
            None => self.load(script)?,
        };
        let run = |sha: &str| {
            let mut all: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes()];
            all.extend(args.iter().map(Vec::as_slice));
            self.call_now(&all)
        };
        match run(&sha)? {
            Resp::Error(e) if e.starts_with("NOSCRIPT") => {
                let sha = self.load(script)?;
                run(&sha)
            }
            other => Ok(other),
        }
    }

    fn load(&self, script: &'static str) -> Result<String, RedisError> {
        match self.call_now(&[b"SCRIPT", b"LOAD", script.as_bytes()])? {
            Resp::Bulk(Some(sha)) => {
                let sha = String::from_utf8_lossy(&sha).into_owned();
                let mut shas = self.shas.lock();
                shas.retain(|(s, _)| !std::ptr::eq(*s, script));
                shas.push((script, sha.clone()));
                Ok(sha)
            }
            Resp::Error(e) => Err(RedisError::Reply(e)),
            other => Err(RedisError::Reply(format!("unexpected reply to SCRIPT LOAD: {other:?}"))),
        }
    }
}

fn expect_ok(reply: Resp) -> Result<(), RedisError> {
    match reply {
        Resp::Error(e) => Err(RedisError::Reply(e)),
        _ => Ok(()),
    }
}

impl Conn {
    /// One command and its reply, within `timeout` in all (a trickling server cannot stretch it).
    fn call(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Resp, RedisError> {
        let deadline = Instant::now() + timeout;
        let unavailable = |e: io::Error| RedisError::Unavailable(e.to_string());
        let mut out = Vec::with_capacity(64);
        encode(args, &mut out);
        self.stream.write_all(&out).map_err(unavailable)?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let mut first = true;
        let mut shortened = false;
        loop {
            match parse(&self.buf) {
                Ok(Some((reply, _))) => {
                    if shortened {
                        self.stream.set_read_timeout(Some(timeout)).map_err(unavailable)?;
                    }
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(RedisError::Unavailable(e.into())),
            }
            if !first {
                // Later reads get only what is left (the socket's own timeout is the full one).
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(RedisError::Unavailable("timed out".into()));
                }
                self.stream.set_read_timeout(Some(left)).map_err(unavailable)?;
                shortened = true;
            }
            first = false;
            let n = self.stream.read(&mut chunk).map_err(unavailable)?;
            if n == 0 {
                return Err(RedisError::Unavailable("connection closed".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_commands_as_bulk_arrays() {
        let mut out = Vec::new();
        encode(&[b"GET", b"k"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn parses_every_type_and_waits_for_more() {
        let wire = b"*5\r\n:1\r\n$3\r\nabc\r\n$-1\r\n+OK\r\n-ERR x\r\n";
        let (v, used) = parse(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(
            v,
            Resp::Array(Some(vec![
                Resp::Int(1),
                Resp::Bulk(Some(b"abc".to_vec())),
                Resp::Bulk(None),
                Resp::Simple("OK".into()),
                Resp::Error("ERR x".into())
            ]))
        );
        for split in 0..wire.len() {
            assert_eq!(parse(&wire[..split]).unwrap(), None, "split {split}");
        }
        assert!(parse(b"?x\r\n").is_err());
    }

    #[test]
    fn urls_parse() {
        assert_eq!(
            RedisUrl::parse("redis://:pw@127.0.0.1:6380/2").unwrap(),
            RedisUrl { host: "127.0.0.1".into(), port: 6380, password: Some("pw".into()), db: 2 }
        );
        assert_eq!(RedisUrl::parse("redis://localhost").unwrap().port, 6379);
        assert!(RedisUrl::parse("http://x").is_err());
    }
}
