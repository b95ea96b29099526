//! A minimal Redis client on may sockets (RESP2): enough to run the rate-limit scripts without
//! blocking a worker thread. Protocol encoding and parsing are pure functions; `RedisClient` is the
//! IO shell: a small pool, timeouts on every call, and a short back-off while Redis is down; TLS
//! (`rediss://`, rustls) and ACL users for managed Redis; the host resolved again on every new
//! connection, so a failover that moves the address is followed.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::TcpStream;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::config::Secret;
use crate::ratelimit::ReplyItem;
use crate::tls::ClientStream;
use crate::upstream::resolve::Resolver;

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

/// Connection settings parsed from `redis[s]://[[user]:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisUrl {
    /// `rediss://`: TLS (rustls), the certificate checked against `host`.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// An ACL user name (Redis 6+): sent as `AUTH user password`.
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub db: u32,
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let (tls, rest) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err("must start with redis:// or rediss://".into()),
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((a, r)) => (Some(a), r),
            None => (None, rest),
        };
        // `user:password`, `:password`, or (the older form) a bare password; both percent-decoded.
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (Some(u), Some(p)),
                None => (None, Some(a)),
            },
        };
        let user = user.map(percent_decode).transpose()?.filter(|u| !u.is_empty());
        let password = password.map(percent_decode).transpose()?.filter(|p| !p.is_empty()).map(Secret);
        if user.is_some() && password.is_none() {
            return Err("a user name needs a password (user:password@host)".into());
        }
        let (hostport, db) = match rest.split_once('/') {
            Some((h, d)) if !d.is_empty() => (h, d.parse().map_err(|_| format!("\"{d}\" is not a database number"))?),
            Some((h, _)) => (h, 0),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.starts_with('[') || h.ends_with(']') => {
                (h, p.parse().map_err(|_| format!("\"{p}\" is not a port"))?)
            }
            _ => (hostport, 6379),
        };
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err("a host is required".into());
        }
        Ok(RedisUrl { tls, host: host.to_string(), port, user, password, db })
    }

    /// Where it points, without the password: `rediss://user@host:port/db`.
    pub fn display(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let user = self.user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{scheme}://{user}{host}:{}/{}", self.port, self.db)
    }
}

/// `%XX` escapes decoded (user names and passwords may hold `@`, `:` or `/` that way).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("an invalid %-escape in the URL")?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's user or password is not UTF-8".to_string())
}

/// The TLS settings of a `rediss://` client: the trusted roots and the name the certificate must hold.
type TlsSettings = (Arc<rustls::ClientConfig>, ServerName<'static>);

/// A pooled client. Never holds a lock across IO; every call is bounded by `timeout`. The host name is
/// resolved again for every new connection, so a failover that moves the address is followed.
pub struct RedisClient {
    pub url: RedisUrl,
    /// `ratelimit.redis_ca_file`, as configured.
    ca_file: Option<String>,
    tls: Option<TlsSettings>,
    resolver: Resolver,
    timeout: Duration,
    /// Idle connections, one list per worker (`affinity`): a coroutine takes one whose socket its own
    /// worker's event loop serves, so its reads never resume it on the other thread.
    idle: crate::affinity::IdleLists<Conn>,
    /// While Redis is failing, calls fail fast until this instant (ms since `epoch`), then one probes.
    down_until_ms: AtomicU64,
    epoch: Instant,
    /// SHA1 of loaded scripts, by script text.
    shas: Mutex<Vec<(&'static str, String)>>,
}

struct Conn {
    io: ClientStream,
    buf: Vec<u8>,
}

const BACKOFF_MS: u64 = 500;

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only where it points: never the password.
        f.debug_struct("RedisClient").field("url", &self.url.display()).finish()
    }
}

impl RedisClient {
    /// Sets the client up (for `rediss://`, reads the CA file); connects, and resolves the host, lazily.
    pub fn new(url: &str, ca_file: Option<&str>, timeout: Duration) -> Result<RedisClient, String> {
        let url = RedisUrl::parse(url)?;
        let tls = match (url.tls, ca_file) {
            (false, Some(_)) => return Err("redis_ca_file needs a rediss:// URL".into()),
            (false, None) => None,
            (true, ca_file) => Some(tls_settings(&url.host, ca_file)?),
        };
        Ok(RedisClient {
            url,
            ca_file: ca_file.map(str::to_string),
            tls,
            resolver: Resolver::default(),
            timeout,
            idle: crate::affinity::IdleLists::default(),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            shas: Mutex::new(Vec::new()),
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether a reload with these settings can keep this client (and its connections).
    pub fn same_settings(&self, url: &RedisUrl, ca_file: Option<&str>, timeout: Duration) -> bool {
        self.url == *url && self.ca_file.as_deref() == ca_file && self.timeout == timeout
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Resolves the host (afresh), connects to the first address that answers, handshakes TLS, then
    /// `AUTH` and `SELECT`.
    fn connect(&self) -> Result<Conn, RedisError> {
        let deadline = Instant::now() + self.timeout;
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let where_ = || format!("{}:{}", self.url.host, self.url.port);
        let unavailable = |e: io::Error| RedisError::Unavailable(format!("{}: {e}", where_()));
        let addrs = self.resolver.resolve_fresh(&self.url.host, self.url.port, left()).map_err(unavailable)?;
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            // On a descriptor of the caller's worker, as upstream connections are.
            match crate::connect::connect(&addr, left(), crate::affinity::home()) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let Some(stream) = stream else {
            return Err(RedisError::Unavailable(last.unwrap_or_else(|| format!("{}: timed out", where_()))));
        };
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(self.timeout)).map_err(unavailable)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(unavailable)?;
        let io = match &self.tls {
            None => ClientStream::plain(stream),
            Some((config, name)) => {
                let session = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| RedisError::Unavailable(format!("TLS setup: {e}")))?;
                let mut tls = rustls::StreamOwned::new(session, stream);
                while tls.conn.is_handshaking() {
                    if Instant::now() >= deadline {
                        return Err(RedisError::Unavailable(format!("{}: TLS handshake timed out", where_())));
                    }
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| RedisError::Unavailable(format!("{}: TLS handshake: {e}", where_())))?;
                }
                ClientStream::Tls(Box::new(tls))
            }
        };
        let mut conn = Conn { io, buf: Vec::with_capacity(512) };
        // Each call gets the full timeout: the socket's read timeout is set to it once, above.
        if let Some(p) = &self.url.password {
            let reply = match &self.url.user {
                Some(user) => conn.call(&[b"AUTH", user.as_bytes(), p.0.as_bytes()], self.timeout)?,
                None => conn.call(&[b"AUTH", p.0.as_bytes()], self.timeout)?,
            };
            expect_ok(reply)?;
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
        let pooled = self.idle.take(false, |list| list.lock().pop());
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().inspect_err(|_| self.mark_down())?,
        };
        match conn.call(args, self.timeout) {
            Ok(reply) => {
                let mut idle = self.idle.of_socket(conn.socket().as_raw_fd()).1.lock();
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
        self.idle.clear();
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

/// The roots (`ca_file`, else Mozilla's) and the server name for a `rediss://` host.
fn tls_settings(host: &str, ca_file: Option<&str>) -> Result<TlsSettings, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("redis_ca_file {path}: {e}"))?
                .filter_map(Result::ok)
                .collect();
            if certs.is_empty() {
                return Err(format!("redis_ca_file {path}: no certificate in it"));
            }
            for c in certs {
                roots.add(c).map_err(|e| format!("redis_ca_file {path}: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    Ok((Arc::new(config), name))
}

impl Conn {
    fn socket(&self) -> &TcpStream {
        self.io.socket()
    }

    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.io.write_all(data)
    }

    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.io.read(out)
    }

    /// One command and its reply, within `timeout` in all (a trickling server cannot stretch it).
    fn call(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Resp, RedisError> {
        let deadline = Instant::now() + timeout;
        let unavailable = |e: io::Error| RedisError::Unavailable(e.to_string());
        let mut out = Vec::with_capacity(64);
        encode(args, &mut out);
        self.write_all(&out).map_err(unavailable)?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        let mut first = true;
        let mut shortened = false;
        loop {
            match parse(&self.buf) {
                Ok(Some((reply, _))) => {
                    if shortened {
                        self.socket().set_read_timeout(Some(timeout)).map_err(unavailable)?;
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
                self.socket().set_read_timeout(Some(left)).map_err(unavailable)?;
                shortened = true;
            }
            first = false;
            let n = self.read(&mut chunk).map_err(unavailable)?;
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
    fn urls_parse_with_tls_acl_users_and_escapes() {
        let secret = |p: &str| Some(Secret(p.to_string()));
        assert_eq!(
            RedisUrl::parse("redis://:pw@127.0.0.1:6380/2").unwrap(),
            RedisUrl { tls: false, host: "127.0.0.1".into(), port: 6380, user: None, password: secret("pw"), db: 2 }
        );
        assert_eq!(
            RedisUrl::parse("rediss://gateway:p%40ss%3Aw@cache.example.com:6380").unwrap(),
            RedisUrl {
                tls: true,
                host: "cache.example.com".into(),
                port: 6380,
                user: Some("gateway".into()),
                password: secret("p@ss:w"),
                db: 0
            }
        );
        assert_eq!(RedisUrl::parse("redis://pw@h").unwrap().password, secret("pw"), "the older bare-password form");
        let v6 = RedisUrl::parse("redis://[::1]:7000/1").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.db), ("::1", 7000, 1));
        assert_eq!(v6.display(), "redis://[::1]:7000/1");
        assert_eq!(RedisUrl::parse("redis://localhost").unwrap().port, 6379);
        assert!(RedisUrl::parse("http://x").is_err());
        assert!(RedisUrl::parse("redis://user:@h").is_err(), "a user without a password");
        assert!(RedisUrl::parse("redis://:p%zz@h").is_err());
    }

    #[test]
    fn password_never_shows_in_debug_or_display() {
        let url = "rediss://gw:hunter2-secret@cache.internal:6380/3";
        let client = RedisClient::new(url, None, Duration::from_millis(100)).unwrap();
        let shown = format!("{client:?} {:?} {}", client.url, client.url.display());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("rediss://gw@cache.internal:6380/3"), "{shown}");
    }

    #[test]
    fn a_ca_file_needs_rediss() {
        let e = RedisClient::new("redis://h", Some("/nope.pem"), Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("rediss://"), "{e}");
        let e = RedisClient::new("rediss://h", Some("/nope.pem"), Duration::from_millis(100)).unwrap_err();
        assert!(e.contains("/nope.pem"), "{e}");
    }
}
