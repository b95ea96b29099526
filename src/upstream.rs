//! The IO shell on the upstream side: ureq 3 driven over `may` sockets, so a worker thread never
//! blocks on an upstream (connect, DNS, TLS, reads and writes all yield the coroutine).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::TcpStream;
use parking_lot::Mutex;
use ureq::config::Config as UreqConfig;
use ureq::http::Uri;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, RustlsConnector, Transport};
use ureq::{Agent, Timeout};

use crate::config::Backend;

/// Input buffer per upstream connection (ureq's default, 128 KiB in and 128 KiB out, cost 339 MiB at
/// 1000 streams). It grows for a larger response head, up to `MAX_HEAD_BYTES`.
const INPUT_BYTES: usize = 4 * 1024;
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Output buffer while a request is being written; released once the response is awaited.
const OUTPUT_BYTES: usize = 8 * 1024;

/// Builds the agent for one backend: its timeouts, its trusted roots, a pool sized for a gateway,
/// no implicit gzip, and upstream 4xx/5xx returned as responses rather than errors.
pub fn agent_for(backend: &Backend) -> io::Result<Agent> {
    let mut tls = TlsConfig::builder();
    if let Some(path) = &backend.ca_file {
        let pem = std::fs::read(path)?;
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("no certificate in {path}")));
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    let config: UreqConfig = Agent::config_builder()
        .http_status_as_error(false)
        // Upstreams are reached directly: HTTP(S)_PROXY in the environment must not reroute them.
        .proxy(None)
        .max_redirects(0)
        .user_agent("switchyard/0.1")
        .input_buffer_size(INPUT_BYTES)
        .output_buffer_size(OUTPUT_BYTES)
        .max_idle_connections(1024)
        .max_idle_connections_per_host(256)
        .max_idle_age(Duration::from_secs(50))
        .max_response_header_size(MAX_HEAD_BYTES)
        .timeout_connect(Some(backend.connect_timeout))
        .timeout_recv_response(Some(backend.response_timeout))
        .timeout_resolve(Some(backend.connect_timeout))
        .tls_config(tls.build())
        .build();
    let connector = MayTcpConnector { idle: backend.idle_timeout }.chain(RustlsConnector::default());
    Ok(Agent::with_parts(config, connector, MayResolver::default()))
}

// ---- Cancellation: a client that goes away shuts the upstream socket of its request. ----

/// Shared between a request's coroutine (whose upstream sockets register here) and the watcher of its
/// client connection (which calls `cancel`).
#[derive(Default)]
pub struct Cancel {
    cancelled: AtomicBool,
    /// The descriptor of the upstream socket while a read or write on it is in flight.
    socket: Mutex<Option<RawFd>>,
}

/// Shuts a socket down by descriptor.
///
/// Sound only under `Cancel`'s lock for a registered descriptor: a descriptor is registered only for
/// the duration of one read or write on it (the transport is borrowed then, so it cannot be closed)
/// and unregistered under the same lock before that IO returns. The descriptor is never closed here.
fn shutdown_fd(fd: RawFd) {
    // SAFETY: `fd` is an open socket owned by a live transport (see above); ManuallyDrop keeps this
    // borrowed handle from closing it.
    let socket = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    let _ = socket.shutdown(Shutdown::Both);
}

impl Cancel {
    /// Shuts the registered upstream socket down, now and for any registered later.
    pub fn cancel(&self) {
        let mut slot = self.socket.lock();
        self.cancelled.store(true, Ordering::Release);
        if let Some(fd) = slot.take() {
            shutdown_fd(fd);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    fn register(&self, fd: RawFd) {
        let mut slot = self.socket.lock();
        if self.cancelled.load(Ordering::Acquire) {
            shutdown_fd(fd);
        } else {
            *slot = Some(fd);
        }
    }

    /// Forgets the socket at the end of a request (it may go back to the pool).
    pub fn clear(&self) {
        self.socket.lock().take();
    }
}

may::coroutine_local!(static CURRENT_CANCEL: RefCell<Option<Arc<Cancel>>> = RefCell::new(None));

/// Makes `cancel` the one that upstream sockets used by this coroutine register with.
pub fn set_current_cancel(cancel: &Arc<Cancel>) {
    CURRENT_CANCEL.with(|c| {
        let mut c = c.borrow_mut();
        if !c.as_ref().is_some_and(|x| Arc::ptr_eq(x, cancel)) {
            *c = Some(cancel.clone());
        }
    });
}

/// Registration of a socket for the duration of one blocking read or write: a cancel shuts down only
/// sockets that are in use for this request, never one that went back to the pool.
struct InFlightIo(Option<Arc<Cancel>>);

impl Drop for InFlightIo {
    fn drop(&mut self) {
        if let Some(cancel) = &self.0 {
            cancel.socket.lock().take();
        }
    }
}

fn register_current(fd: RawFd) -> Result<InFlightIo, ureq::Error> {
    CURRENT_CANCEL.with(|c| match &*c.borrow() {
        Some(cancel) if cancel.is_cancelled() => {
            Err(ureq::Error::Io(io::Error::new(io::ErrorKind::ConnectionAborted, "client went away")))
        }
        Some(cancel) => {
            cancel.register(fd);
            Ok(InFlightIo(Some(cancel.clone())))
        }
        None => Ok(InFlightIo(None)),
    })
}

// ---- Transport: a may TcpStream behind ureq's Transport trait. ----

#[derive(Debug)]
struct MayTcpConnector {
    /// Longest silence between reads once no ureq phase timeout applies (response body, streams).
    idle: Duration,
}

impl Connector<()> for MayTcpConnector {
    type Out = MayTcpTransport;

    fn connect(&self, details: &ConnectionDetails, _chained: Option<()>) -> Result<Option<Self::Out>, ureq::Error> {
        let timeout = details.timeout.not_zero().map(|d| *d).unwrap_or(Duration::from_secs(30));
        let mut last = None;
        for addr in details.addrs.iter() {
            match TcpStream::connect_timeout(addr, timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let fd = stream.as_raw_fd();
                    let transport = MayTcpTransport {
                        stream,
                        fd,
                        buffers: SlimBuffers::default(),
                        idle: self.idle,
                        read_timeout: None,
                        write_timeout: None,
                    };
                    drop(register_current(transport.fd)?);
                    return Ok(Some(transport));
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => last = Some(ureq::Error::Timeout(Timeout::Connect)),
                Err(e) => last = Some(ureq::Error::Io(e)),
            }
        }
        Err(last.unwrap_or(ureq::Error::HostNotFound))
    }
}

struct MayTcpTransport {
    stream: TcpStream,
    /// The socket's descriptor, for cancellation from the client watcher.
    fd: RawFd,
    buffers: SlimBuffers,
    idle: Duration,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl fmt::Debug for MayTcpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MayTcpTransport").field("peer", &self.stream.peer_addr().ok()).finish()
    }
}

impl MayTcpTransport {
    /// The timeout for the next IO: ureq's phase timeout when one applies, else the idle timeout.
    /// Rounded up to whole seconds so the socket option (a syscall in may) rarely changes.
    fn timeout(&self, next: NextTimeout) -> (Duration, Timeout) {
        let whole = |d: Duration| {
            Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(Duration::from_secs(1))
        };
        match next.not_zero() {
            Some(d) if *d < self.idle => (whole(*d), next.reason),
            Some(_) if !next.after.is_not_happening() && next.reason != Timeout::RecvBody => {
                (whole(*next.after), next.reason)
            }
            _ => (self.idle, Timeout::RecvBody),
        }
    }
}

fn map_io(e: io::Error, reason: Timeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ureq::Error::Timeout(reason),
        _ => ureq::Error::Io(e),
    }
}

impl Transport for MayTcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let _in_flight = register_current(self.fd)?;
        let (t, reason) = self.timeout(timeout.for_write());
        if self.write_timeout != Some(t) {
            let _ = self.stream.set_write_timeout(Some(t));
            self.write_timeout = Some(t);
        }
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output).map_err(|e| map_io(e, reason))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let _in_flight = register_current(self.fd)?;
        // The request is written: a long stream should not keep its output buffer.
        self.buffers.release_output();
        let (t, reason) = self.timeout(timeout.for_read());
        if self.read_timeout != Some(t) {
            let _ = self.stream.set_read_timeout(Some(t));
            self.read_timeout = Some(t);
        }
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match self.stream.read(input) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other.map_err(|e| map_io(e, reason))?,
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        // may sockets are non-blocking underneath: a peek that would block means open and quiet.
        let mut byte = [0u8; 1];
        match self.stream.inner().peek(&mut byte) {
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            Ok(_) => false,
        }
    }
}

// ---- Buffers: small, and released when not needed. ----

/// ureq's buffers for one connection, sized for thousands of long streams: the output buffer exists
/// only while a request is written, and the input buffer grows only for ureq's request-body scratch
/// space and shrinks back when empty.
#[derive(Debug, Default)]
struct SlimBuffers {
    input: Vec<u8>,
    /// Unconsumed input is `input[start..end]`.
    start: usize,
    end: usize,
    output: Vec<u8>,
    progress: bool,
}

/// ureq reads request bodies through at least this much free input space.
const MIN_TMP_BYTES: usize = 10 * 1024;

impl SlimBuffers {
    fn release_output(&mut self) {
        if !self.output.is_empty() {
            self.output = Vec::new();
        }
        if self.start == self.end && self.input.len() > INPUT_BYTES {
            self.input = Vec::new();
            (self.start, self.end) = (0, 0);
        }
    }

    /// Makes at least `free` bytes writable after the unconsumed input.
    fn reserve_input(&mut self, free: usize) {
        if self.start > 0 && self.input.len() - self.end < free {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.input.len() - self.end < free {
            self.input.resize(self.end + free, 0);
        }
    }
}

impl Buffers for SlimBuffers {
    fn output(&mut self) -> &mut [u8] {
        if self.output.is_empty() {
            self.output = vec![0; OUTPUT_BYTES];
        }
        &mut self.output
    }

    fn input(&self) -> &[u8] {
        &self.input[self.start..self.end]
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        let free = INPUT_BYTES.saturating_sub(self.end - self.start).max(1024);
        self.reserve_input(free);
        &mut self.input[self.end..]
    }

    fn input_appended(&mut self, amount: usize) {
        self.end += amount;
    }

    fn input_consume(&mut self, amount: usize) {
        self.progress = amount > 0;
        self.start += amount;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        self.reserve_input(MIN_TMP_BYTES);
        if self.output.is_empty() {
            self.output = vec![0; OUTPUT_BYTES];
        }
        (&mut self.input[self.end..], &mut self.output)
    }

    fn can_use_input(&self) -> bool {
        self.end > self.start && self.progress
    }
}

// ---- Resolver: cached, and never blocking a worker thread. ----

/// Resolves host names on a helper thread (getaddrinfo blocks) while the coroutine waits on a may
/// channel, and caches answers for a minute. IP literals skip both.
#[derive(Debug, Default)]
struct MayResolver {
    cache: Mutex<HashMap<String, (Vec<SocketAddr>, Instant)>>,
}

const DNS_TTL: Duration = Duration::from_secs(60);

impl Resolver for MayResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &UreqConfig,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let authority = uri.authority().ok_or(ureq::Error::HostNotFound)?;
        let default_port = if uri.scheme_str() == Some("https") { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        let host = authority.host().trim_start_matches('[').trim_end_matches(']');
        let mut out = self.empty();
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, port));
            return Ok(out);
        }
        let key = format!("{host}:{port}");
        let cached = self.cache.lock().get(&key).filter(|(_, at)| at.elapsed() < DNS_TTL).map(|(a, _)| a.clone());
        let addrs = match cached {
            Some(a) => a,
            None => {
                let (tx, rx) = may::sync::mpsc::channel();
                let lookup = key.clone();
                std::thread::Builder::new()
                    .name("switchyard-dns".into())
                    .spawn(move || {
                        let _ = tx.send(lookup.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
                    })
                    .map_err(ureq::Error::Io)?;
                let wait = timeout.not_zero().map(|d| *d).unwrap_or(Duration::from_secs(10));
                let addrs = match rx.recv_timeout(wait) {
                    Ok(Ok(a)) if !a.is_empty() => a,
                    Ok(_) => return Err(ureq::Error::HostNotFound),
                    Err(_) => return Err(ureq::Error::Timeout(Timeout::Resolve)),
                };
                self.cache.lock().insert(key, (addrs.clone(), Instant::now()));
                addrs
            }
        };
        for a in addrs.into_iter().take(16) {
            out.push(a);
        }
        Ok(out)
    }
}

/// Gives every non-mock backend of `snapshot` its agent, reusing the previous snapshot's agent (and so
/// its warm connections) where the backend's connection settings did not change.
pub fn attach_agents(
    snapshot: &mut crate::config::Snapshot,
    previous: Option<&crate::config::Snapshot>,
) -> io::Result<()> {
    let fingerprint =
        |b: &Backend| format!("{:?}", (&b.base_url, b.connect_timeout, b.response_timeout, b.idle_timeout, &b.ca_file));
    let mut agents = Vec::with_capacity(snapshot.backends.len());
    for backend in &snapshot.backends {
        if backend.schema == crate::config::Schema::Mock {
            agents.push(None);
            continue;
        }
        let reused = previous.and_then(|p| {
            p.backends
                .iter()
                .position(|old| old.name == backend.name && fingerprint(old) == fingerprint(backend))
                .and_then(|i| p.agent(i).cloned())
        });
        agents.push(Some(match reused {
            Some(agent) => agent,
            None => agent_for(backend)?,
        }));
    }
    snapshot.agents = agents;
    Ok(())
}
