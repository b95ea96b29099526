//! The IO shell on the upstream side: a small HTTP/1.1 client on may sockets (plain, or TLS with
//! rustls), one per backend with its keep-alive pool (a list per worker), timeouts and trusted roots;
//! a connection is `conn.rs`, a response body `body.rs`. Every wait — DNS, connect, TLS, reads and
//! writes — yields the coroutine, never the worker thread.
//!
//! It replaced ureq 3 after measuring (benches/micro.rs, same run, same may socket, same in-process
//! upstream): a keep-alive round trip cost 30.6 µs through ureq and 14.4 µs written by hand; the
//! difference (pool scans, URI and header-map building, middleware and timing machinery) was a third
//! of the gateway's CPU per request.

mod body;
mod conn;
mod headers;
pub(crate) mod resolve;

pub use body::{Body, ResponseBody};
use conn::{copy_body, write_chunk, Conn, Copy, HeadError, ResponseHead};
pub use headers::ResponseHeaders;

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::TcpStream;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::affinity;
use crate::cancel;
pub use crate::cancel::{set_current_cancel, Cancel};

use crate::deadline::Deadline;
use crate::health::{Admit, Health, HealthPolicy, Transition};
use crate::readbuf::ReadBuf;
use crate::tls::ClientStream;

/// Idle connections kept per backend and scheduler worker, and for how long.
const POOL_SIZE: usize = 256;
const POOL_IDLE_MS: u64 = 50_000;
/// Bodies up to this size are written together with the head, in one write.
const COALESCE_BODY: usize = 16 * 1024;

/// Why an upstream call failed before a response head arrived.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection could be made (name lookup, connect, TLS handshake): the request never left.
    Connect {
        timed_out: bool,
        message: String,
    },
    Timeout(String),
    Unreachable(String),
    /// Reading the request body to forward (a streamed upload) failed: the client's side broke.
    RequestBody(io::Error),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect { message: m, .. } | UpstreamError::Timeout(m) | UpstreamError::Unreachable(m) => {
                write!(f, "{m}")
            }
            UpstreamError::RequestBody(e) => write!(f, "reading the request body: {e}"),
        }
    }
}

/// A failure to connect, as the error that says the request never left.
fn not_connected(e: UpstreamError) -> UpstreamError {
    match e {
        UpstreamError::Timeout(message) => UpstreamError::Connect { timed_out: true, message },
        UpstreamError::Unreachable(message) => UpstreamError::Connect { timed_out: false, message },
        connect => connect,
    }
}

fn classify(e: io::Error, what: &str) -> UpstreamError {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => UpstreamError::Timeout(format!("{what} timed out")),
        _ => UpstreamError::Unreachable(format!("{what}: {e}")),
    }
}

/// What an upstream client is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// `http(s)://host[:port][/path][?query]`, without a trailing slash.
    pub base_url: String,
    pub connect_timeout: Duration,
    /// Time until the response head arrives.
    pub response_timeout: Duration,
    /// Longest silence between two reads of the body.
    pub idle_timeout: Duration,
    /// PEM file of the roots trusted instead of Mozilla's.
    pub ca_file: Option<String>,
    /// When one of the addresses a name resolves to is skipped after failing to connect.
    pub health: HealthPolicy,
}

/// A request body to send.
pub enum SendBody<'a> {
    /// Bytes in memory, sent with `content-length` (none at all for an empty body of a GET or DELETE).
    Bytes(&'a [u8]),
    /// `prefix`, then everything `rest` yields, copied as it comes: with `content-length` when `length`
    /// (of the whole) is known, else chunked. `rest` is read only once the request head is out, so a
    /// failure to connect leaves it untouched.
    Stream { prefix: &'a [u8], rest: &'a mut dyn Read, length: Option<u64> },
}

/// How often a checkin also sweeps the other workers' idle lists.
const POOL_SWEEP_MS: u64 = 10_000;

/// Takes out of `idle` what has idled too long (the oldest are at the bottom).
fn take_expired(idle: &mut Vec<(Conn, u64)>, now_ms: u64) -> Vec<(Conn, u64)> {
    let keep_from =
        idle.iter().position(|&(_, since)| now_ms.saturating_sub(since) < POOL_IDLE_MS).unwrap_or(idle.len());
    idle.drain(..keep_from).collect()
}

/// One backend's client.
pub struct UpstreamClient {
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Path prefix from `base_url` (`/v1`), without a trailing slash.
    base_path: String,
    /// Query string from `base_url` (`?api-version=…` for Azure), appended after the endpoint path.
    query: String,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle_timeout: Duration,
    resolver: resolve::Resolver,
    /// Idle connections, one list per scheduler worker (see [`crate::affinity`]), each with the time it
    /// was put back ([`crate::clock::coarse_millis`]); the most recent last.
    idle: affinity::IdleLists<(Conn, u64)>,
    /// When ([`crate::clock::coarse_millis`]) a checkin next sweeps every worker's list, not only its own.
    sweep_at: AtomicU64,
    /// Health of each address the host resolved to (connect failures only).
    addresses: Mutex<Vec<(SocketAddr, Arc<Health>)>>,
    health: HealthPolicy,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient").field("authority", &self.authority).field("tls", &self.tls.is_some()).finish()
    }
}

/// A response whose head arrived; its body is read through `body`.
pub struct Response {
    pub status: u16,
    /// Lower-case names.
    pub headers: ResponseHeaders,
    pub body: Body,
}

impl Response {
    fn new(client: &Arc<UpstreamClient>, conn: Conn, head: ResponseHead) -> Response {
        let body = Body {
            conn: Some(conn),
            client: client.clone(),
            framing: head.framing,
            keep_alive: head.keep_alive,
            decoded: Vec::new(),
            decoded_at: 0,
            done: false,
        };
        Response { status: head.status, headers: head.headers, body }
    }
}

impl UpstreamClient {
    pub fn new(backend: &UpstreamSettings) -> io::Result<UpstreamClient> {
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let (tls, rest) = match backend.base_url.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => return Err(invalid(format!("unsupported URL {}", backend.base_url))),
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(p) => (h, p),
                Err(_) if authority.starts_with('[') && authority.ends_with(']') => {
                    (authority, if tls { 443 } else { 80 })
                }
                Err(_) => return Err(invalid(format!("bad port in {}", backend.base_url))),
            },
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let tls = if tls {
            let mut roots = rustls::RootCertStore::empty();
            match &backend.ca_file {
                Some(path) => {
                    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                        .map_err(|e| invalid(format!("{path}: {e}")))?
                        .filter_map(Result::ok)
                        .collect();
                    if certs.is_empty() {
                        return Err(invalid(format!("no certificate in {path}")));
                    }
                    for c in certs {
                        roots.add(c).map_err(|e| invalid(format!("{path}: {e}")))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone()).map_err(|e| invalid(format!("{host}: {e}")))?;
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(UpstreamClient {
            host,
            port,
            authority: authority.to_string(),
            base_path: path.trim_end_matches('/').to_string(),
            query: if query.is_empty() { String::new() } else { format!("?{query}") },
            tls,
            connect_timeout: backend.connect_timeout,
            response_timeout: backend.response_timeout,
            idle_timeout: backend.idle_timeout,
            resolver: resolve::Resolver::default(),
            idle: affinity::IdleLists::default(),
            sweep_at: AtomicU64::new(0),
            addresses: Mutex::new(Vec::new()),
            health: backend.health,
        })
    }

    /// The `Host` header value (`host[:port]`).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The path prefix from `base_url` (`/v1`), without a trailing slash.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The query string from `base_url`, without `?`.
    pub fn query(&self) -> &str {
        self.query.strip_prefix('?').unwrap_or("")
    }

    /// POSTs `body` to `{base path}{path}` with `headers` (names and values already validated by the
    /// caller's HTTP layer). A pooled connection that turns out to be closed is replaced once.
    pub fn send(
        self: &Arc<Self>,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, UpstreamError> {
        self.request("POST", path, "", headers, SendBody::Bytes(body))
    }

    /// Sends `method` to `{base path}{path}?{base query}&{query}` with `headers` and `body`. A pooled
    /// connection that turns out to be closed is replaced once, as long as no byte of a streamed body's
    /// `rest` was read.
    pub fn request(
        self: &Arc<Self>,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        mut body: SendBody,
    ) -> Result<Response, UpstreamError> {
        let inline = match &body {
            SendBody::Bytes(b) => b.len(),
            SendBody::Stream { prefix, .. } => prefix.len(),
        };
        let mut head = Vec::with_capacity(256 + headers.len() * 48 + inline.min(COALESCE_BODY));
        head.extend_from_slice(method.as_bytes());
        head.push(b' ');
        head.extend_from_slice(self.base_path.as_bytes());
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(self.query.as_bytes());
        if !query.is_empty() {
            head.push(if self.query.is_empty() { b'?' } else { b'&' });
            head.extend_from_slice(query.as_bytes());
        }
        head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        head.extend_from_slice(self.authority.as_bytes());
        for (name, value) in headers {
            head.extend_from_slice(b"\r\n");
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
        }
        let chunked = match &body {
            SendBody::Bytes(b) if b.is_empty() && matches!(method, "GET" | "HEAD" | "DELETE") => false,
            SendBody::Bytes(b) => {
                head.extend_from_slice(b"\r\ncontent-length: ");
                crate::digits::push_decimal(&mut head, b.len() as u64);
                false
            }
            SendBody::Stream { length: Some(n), .. } => {
                head.extend_from_slice(b"\r\ncontent-length: ");
                crate::digits::push_decimal(&mut head, *n);
                false
            }
            SendBody::Stream { length: None, .. } => {
                head.extend_from_slice(b"\r\ntransfer-encoding: chunked");
                true
            }
        };
        head.extend_from_slice(b"\r\n\r\n");
        let first: &[u8] = match &body {
            SendBody::Bytes(b) => b,
            SendBody::Stream { prefix, .. } => prefix,
        };
        let separate_body = first.len() > COALESCE_BODY || chunked;
        if !separate_body {
            head.extend_from_slice(first);
        }
        // The request's cancel, read once: every read and write of the connection registers with it.
        let cancel = cancel::current_cancel();
        for attempt in 0..2 {
            // A retry always opens a fresh connection.
            let pooled = if attempt == 0 { self.checkout() } else { None };
            let (mut conn, reused) = match pooled {
                Some(c) => (c, true),
                None => (self.connect(cancel.as_deref()).map_err(not_connected)?, false),
            };
            conn.cancel.clone_from(&cancel);
            let mut written = conn.write_all(&head);
            if written.is_ok() && separate_body {
                written = if chunked { write_chunk(&mut conn, first) } else { conn.write_all(first) };
            }
            if written.is_ok() {
                if let SendBody::Stream { rest, .. } = &mut body {
                    match copy_body(&mut conn, &mut **rest, chunked) {
                        Ok(()) => {}
                        Err(Copy::Source(e)) => return Err(UpstreamError::RequestBody(e)),
                        // The upstream may have answered early (a 413) and closed: its answer wins.
                        Err(Copy::Sink(e)) => match conn.read_head(Duration::from_secs(1)) {
                            Ok(head) => {
                                return Ok(Response::new(self, conn, ResponseHead { keep_alive: false, ..head }))
                            }
                            Err(_) => return Err(classify(e, "sending the request body")),
                        },
                    }
                }
            }
            if let Err(e) = written {
                // The request did not get out whole on a pooled connection the server had closed: the
                // server cannot have acted on it, so a fresh connection may carry it. (Once the request
                // is written it is never sent twice: a POST may have side effects and costs money.)
                if reused && e.kind() != io::ErrorKind::ConnectionAborted {
                    continue;
                }
                // A server may answer early (a 413 for a large body) and close while we still write:
                // its answer, if it is there, is the one to pass on.
                if e.kind() != io::ErrorKind::ConnectionAborted {
                    if let Ok(head) = conn.read_head(Duration::from_secs(1)) {
                        return Ok(Response::new(self, conn, ResponseHead { keep_alive: false, ..head }));
                    }
                }
                return Err(classify(e, "sending the request"));
            }
            return match conn.read_head(self.response_timeout) {
                Ok(head) => Ok(Response::new(self, conn, head)),
                Err(HeadError::ClosedBeforeResponse) => {
                    Err(UpstreamError::Unreachable("the upstream closed the connection without answering".into()))
                }
                Err(HeadError::Io(e)) => Err(classify(e, "waiting for the response")),
                Err(HeadError::Malformed(m)) => Err(UpstreamError::Unreachable(format!("invalid response: {m}"))),
            };
        }
        Err(UpstreamError::Unreachable("no usable connection".into()))
    }

    /// An idle connection on the calling connection's worker; outside a client connection, any. For
    /// https, another worker's idle connection before none: a handshake costs far more than a request
    /// crossing threads. (For plain HTTP a new connection on the worker is cheap, and the pool soon has
    /// connections on every worker.)
    fn checkout(&self) -> Option<Conn> {
        self.idle.take(self.tls.is_some(), Self::checkout_from)
    }

    fn checkout_from(idle: &Mutex<Vec<(Conn, u64)>>) -> Option<Conn> {
        loop {
            // Probe outside the lock; a closed or expired connection is dropped (closed) unlocked too.
            let (mut conn, since) = idle.lock().pop()?;
            if crate::clock::coarse_millis().saturating_sub(since) < POOL_IDLE_MS && conn.is_open() {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, mut conn: Conn) {
        // A pooled connection belongs to no request.
        conn.cancel = None;
        let (own, list) = self.idle.of_socket(conn.fd);
        // One clock read serves the expiry, the connection's idle start and the sweep.
        let now_ms = crate::clock::coarse_millis();
        let mut expired = {
            let mut idle = list.lock();
            let expired = take_expired(&mut idle, now_ms);
            if idle.len() < POOL_SIZE {
                idle.push((conn, now_ms));
            }
            expired
        };
        // The other workers' lists are swept too, now and then: a worker that no client lands on any
        // more would otherwise keep its idle connections (and their descriptors) for good.
        if self.idle.count() > 1 && now_ms >= self.sweep_at.load(Ordering::Relaxed) {
            self.sweep_at.store(now_ms + POOL_SWEEP_MS, Ordering::Relaxed);
            for list in self.idle.others(own) {
                expired.extend(take_expired(&mut list.lock(), now_ms));
            }
        }
        // Closed outside the locks.
        drop(expired);
    }

    /// Resolves, connects and (for https) handshakes, all within `connect_timeout` together; the
    /// handshake registers with the request's `cancel`.
    fn connect(&self, cancel: Option<&Cancel>) -> Result<Conn, UpstreamError> {
        let deadline = Instant::now() + self.connect_timeout;
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let addrs = self
            .resolver
            .resolve(&self.host, self.port, left())
            .map_err(|e| classify(e, &format!("resolving {}", self.host)))?;
        let mut last = None;
        for (addr, health) in self.by_health(&addrs) {
            if Instant::now() >= deadline {
                break;
            }
            // On the client connection's worker, so the request's waits stay on one thread; without a
            // may timer, so its reads can wait for events (tls::plain_read).
            match crate::connect::connect(&addr, left(), affinity::home()) {
                Ok(stream) => {
                    if health.success() == Some(Transition::Restored) {
                        crate::info!("upstream address {addr} of {} restored", self.authority);
                    }
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_write_timeout(Some(self.idle_timeout));
                    return self.wrap(stream, deadline, cancel);
                }
                Err(e) => {
                    if let Some(Transition::Ejected(ms)) = health.failure(crate::clock::unix_millis(), &self.health) {
                        crate::warn!("upstream address {addr} of {} ejected for {ms} ms: {e}", self.authority);
                    }
                    last = Some(e);
                }
            }
        }
        Err(classify(
            last.unwrap_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no address answered in time")),
            &format!("connecting to {}", self.authority),
        ))
    }

    /// The resolved addresses with their health: those that may be tried now first (in resolver order),
    /// then the ejected ones, least recently failed first (so a connect is still attempted when all are).
    fn by_health(&self, addrs: &[SocketAddr]) -> Vec<(SocketAddr, Arc<Health>)> {
        let now = crate::clock::unix_millis();
        let known: Vec<(SocketAddr, Arc<Health>)> = {
            let mut map = self.addresses.lock();
            map.retain(|(a, _)| addrs.contains(a));
            for a in addrs {
                if !map.iter().any(|(k, _)| k == a) {
                    map.push((*a, Arc::default()));
                }
            }
            addrs.iter().filter_map(|a| map.iter().find(|(k, _)| k == a).cloned()).collect()
        };
        let (mut ready, mut ejected): (Vec<_>, Vec<_>) =
            known.into_iter().partition(|(_, h)| !matches!(h.admit(now, &self.health), Admit::Ejected { .. }));
        ejected.sort_by_key(|(_, h)| h.last_failure());
        ready.append(&mut ejected);
        ready
    }

    fn wrap(&self, stream: TcpStream, deadline: Instant, cancel: Option<&Cancel>) -> Result<Conn, UpstreamError> {
        let fd = stream.as_raw_fd();
        let io = match &self.tls {
            None => ClientStream::plain(stream),
            Some((config, name)) => {
                let session = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| UpstreamError::Unreachable(format!("TLS setup: {e}")))?;
                let mut tls = rustls::StreamOwned::new(session, stream);
                let _ = tls.sock.set_read_timeout(Some(self.connect_timeout));
                let _in_flight = cancel::in_flight(cancel, fd).map_err(|e| classify(e, "TLS handshake"))?;
                while tls.conn.is_handshaking() {
                    if Instant::now() >= deadline {
                        return Err(UpstreamError::Timeout("TLS handshake timed out".into()));
                    }
                    tls.conn.complete_io(&mut tls.sock).map_err(|e| classify(e, "TLS handshake"))?;
                }
                ClientStream::Tls(Box::new(tls))
            }
        };
        Ok(Conn {
            deadline: Deadline::register(fd, std::net::Shutdown::Both),
            io,
            fd,
            buf: ReadBuf::new(),
            cancel: None,
        })
    }
}

#[cfg(test)]
mod tests;
