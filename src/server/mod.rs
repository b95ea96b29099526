//! The IO shell on the client side: one `may::net` listener per worker (SO_REUSEPORT), one coroutine
//! per connection, HTTP/1.1 with keep-alive, pipelining, chunked bodies in and out, and limits.

mod accept;
mod body;
pub mod http1;
mod reader;
mod responder;
mod stack;
pub mod tls;
mod watch;

pub use body::{BodyError, RequestBody};
pub use reader::BodyPace;
pub use responder::Responder;
pub use tls::ListenerTls;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::{TcpListener, TcpStream};

use crate::api::Api;
use crate::config::ServerConfig;
use crate::error::error_body;
use crate::tls::ServerStream;
use http1::{BodyFraming, Limits, RequestHead};
use reader::{ReadHead, Reader};
use responder::{write_head, ResponseState};
use stack::StackMark;
use watch::ClientWatch;

/// Set once on SIGINT/SIGTERM: accept no more, finish what is in flight, answer `Connection: close`.
pub static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);
/// Requests between a complete head and the end of their response.
pub static ACTIVE_REQUESTS: AtomicUsize = AtomicUsize::new(0);
/// Open client connections.
pub static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// A request: head and decoded body.
pub struct Request {
    pub head: RequestHead,
    /// The whole body — empty when `body_streamed`.
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    /// The body (an upload) was not read before the handler: it reads it through [`Responder::body`].
    pub body_streamed: bool,
    /// When its head was complete (request durations are measured from here).
    pub received: Instant,
}

/// What serves each request. It must answer through the `Responder`.
pub type Handler = Arc<dyn Fn(&Request, &mut Responder) + Send + Sync>;

/// The client-schema an error answered by the server layer itself should use, from the path alone.
pub fn api_for_path(path: &str) -> Api {
    if path.starts_with("/v1/messages") || path.starts_with("/anthropic/") {
        Api::Anthropic
    } else {
        Api::OpenAi
    }
}

/// The longest client `x-request-id` kept.
const MAX_REQUEST_ID: usize = 128;

/// A request's id, held inline (no allocation): the client's `x-request-id`, or a fresh one.
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_REQUEST_ID],
}

impl std::ops::Deref for RequestId {
    type Target = str;

    fn deref(&self) -> &str {
        // SAFETY: `request_id` writes only visible ASCII (a client id it checked, or hex digits) into
        // `bytes[..len]`, and nothing else writes them.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..usize::from(self.len)]) }
    }
}

/// The request's id: the client's `x-request-id` when it is a sane token (at most 128 visible ASCII
/// characters), else a fresh one. Every response carries it, the server layer's own errors included.
pub fn request_id(head: Option<&RequestHead>) -> RequestId {
    let mut id = RequestId { len: 0, bytes: [0; MAX_REQUEST_ID] };
    match head.and_then(|h| h.header("x-request-id")) {
        Some(sent)
            if !sent.is_empty() && sent.len() <= MAX_REQUEST_ID && sent.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            id.bytes[..sent.len()].copy_from_slice(sent.as_bytes());
            id.len = sent.len() as u8;
        }
        _ => {
            hex_id(&mut id.bytes, crate::router::random_draw(), crate::router::random_draw());
            id.len = 32;
        }
    }
    id
}

/// `high` and `low` as 32 lower-case hex digits at the start of `out`, written without the formatting
/// machinery (a fresh request id is made for every request).
fn hex_id(out: &mut [u8; MAX_REQUEST_ID], high: u64, low: u64) {
    out[..16].copy_from_slice(&crate::digits::hex_u64(high));
    out[16..32].copy_from_slice(&crate::digits::hex_u64(low));
}

/// Binds `workers` listeners on `addr` with SO_REUSEPORT. Refuses an address another process serves.
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        // A listener without SO_REUSEPORT fails on an address someone already listens on, where ours
        // (with SO_REUSEPORT) would silently share the port with another server.
        if let Err(e) = std::net::TcpListener::bind(addr) {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot listen on {addr}: {e} (is another process already serving it?)"),
            ));
        }
    }
    let first = on_worker(TcpListener::bind(addr)?, 0);
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for worker in 1..workers.max(1) {
        listeners.push(on_worker(TcpListener::bind(addr)?, worker));
    }
    Ok(listeners)
}

/// `listener` on a descriptor of `worker`, so each worker has a listener of its own to accept on
/// (two listeners on one worker's numbers would leave the other worker without connections).
fn on_worker(listener: TcpListener, worker: usize) -> TcpListener {
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    if crate::affinity::of_fd(listener.as_raw_fd()) == worker % crate::affinity::workers() {
        return listener;
    }
    // SAFETY: may gives up the descriptor (and takes it out of epoll); it is owned at once.
    let fd = unsafe { OwnedFd::from_raw_fd(listener.into_raw_fd()) };
    let fd = crate::affinity::descriptor_on(fd, Some(worker % crate::affinity::workers()));
    // SAFETY: an open, listening socket nothing else owns; may registers it with its worker.
    unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) }
}

/// Accepts on each listener in its own coroutine (with TLS when `tls` is given); returns the accept
/// loops' handles so shutdown can stop them.
pub fn serve(
    listeners: Vec<TcpListener>,
    handler: Handler,
    cfg: Arc<ServerConfig>,
    tls: Option<Arc<ListenerTls>>,
) -> Vec<may::coroutine::JoinHandle<()>> {
    listeners
        .into_iter()
        .map(|listener| {
            let handler = handler.clone();
            let cfg = cfg.clone();
            let tls = tls.clone();
            // Started on its listener's worker, which runs it from then on.
            let builder = may::coroutine::Builder::new().id(crate::affinity::of_fd(listener.as_raw_fd()));
            // SAFETY: as for any coroutine (may's requirement: no thread-local state across yields).
            unsafe { builder.spawn(move || accept_loop(listener, handler, cfg, tls)) }.expect("start an accept loop")
        })
        .collect()
}

fn accept_loop(listener: TcpListener, handler: Handler, cfg: Arc<ServerConfig>, tls: Option<Arc<ListenerTls>>) {
    // may counts stack sizes in machine words.
    let stack = cfg.stack_kib * 1024 / std::mem::size_of::<usize>();
    // The loop runs on its listener's worker (`serve`); each connection's coroutine on its socket's.
    crate::affinity::set_home(listener.as_raw_fd());
    loop {
        if SHUTTING_DOWN.load(Ordering::Relaxed) {
            return;
        }
        let (stream, peer) = match accept::accept(&listener) {
            Ok(accept::Accepted::Connection(stream, peer)) => (stream, peer),
            Ok(accept::Accepted::Woken) => continue,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                crate::warn_throttled!("accept failed: {e}");
                crate::affinity::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let open = OPEN_CONNECTIONS.fetch_add(1, Ordering::AcqRel) + 1;
        let handler = handler.clone();
        let cfg = cfg.clone();
        let tls = tls.clone();
        // SAFETY: the coroutine uses no thread-local state across yields (may's requirement).
        let spawned = unsafe {
            accept::spawn_on_its_worker(stream, stack, move |stream| {
                let _open = ConnectionSlot;
                if open > cfg.max_connections {
                    crate::metrics::count_refused(503);
                    // Over TLS the answer would cost a handshake: the connection is just closed.
                    if tls.is_none() {
                        let mut stream = ServerStream::plain(stream);
                        let _ = write_error(&mut stream, Api::OpenAi, 503, "too many connections", &request_id(None));
                    }
                    return;
                }
                serve_connection(stream, peer, &handler, &cfg, tls.as_deref());
            })
        };
        if let Err(e) = spawned {
            OPEN_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
            crate::warn_throttled!("cannot start a connection coroutine: {e}");
        }
    }
}

struct ConnectionSlot;

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

struct ActiveRequest;

impl ActiveRequest {
    fn start() -> ActiveRequest {
        ACTIVE_REQUESTS.fetch_add(1, Ordering::AcqRel);
        ActiveRequest
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        ACTIVE_REQUESTS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answers plain HTTP sent to the TLS port in plain HTTP (like nginx), instead of a TLS alert the
/// client cannot show; the request is read (so the close is not a reset) and the connection closed.
#[cold]
#[inline(never)]
fn refuse_plain_http(socket: &mut TcpStream) {
    crate::metrics::count_refused(400);
    let message = "this port speaks HTTPS: use an https:// URL";
    let _ = write_error(socket, Api::OpenAi, 400, message, &request_id(None));
    let _ = socket.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 16 * 1024];
    let _ = socket.read(&mut sink);
}

/// An error the server layer answers itself; the connection closes after it.
fn write_error(stream: &mut impl Write, schema: Api, status: u16, message: &str, id: &str) -> io::Result<()> {
    let body = error_body(schema, status, message, None);
    let mut out = Vec::with_capacity(200 + body.len());
    let headers = [("content-type", "application/json"), ("x-request-id", id)];
    write_head(&mut out, 1, status, false, &headers, Some(body.len()));
    out.extend_from_slice(&body);
    stream.write_all(&out)
}

/// Answers an early error (with the id of the request `head` starts, or a fresh one) and closes
/// gracefully (see [`linger`]). Out of line, with its id and buffers: a connection's frame, which a
/// waiting stream keeps resident, holds none of them.
#[cold]
#[inline(never)]
fn refuse(stream: &mut ServerStream, schema: Api, status: u16, message: &str, head: Option<&RequestHead>) {
    crate::metrics::count_refused(status);
    if write_error(stream, schema, status, message, &request_id(head)).is_ok() {
        linger(stream);
    }
}

/// A 500 for a request the handler did not answer; whether it went out. Out of line, as [`refuse`].
#[cold]
#[inline(never)]
fn answer_unanswered(stream: &mut ServerStream, schema: Api, head: &RequestHead) -> bool {
    write_error(stream, schema, 500, "the gateway produced no response", &request_id(Some(head))).is_ok()
}

/// Closes gracefully on a client still sending: a client would otherwise get a TCP reset (and lose
/// the answer) when the socket closes with unread data. Our side is shut down first (`close_notify`
/// first on TLS) and what arrives is read and dropped for up to a second or 1 MiB.
fn linger(stream: &mut ServerStream) {
    let _ = stream.shutdown_write();
    let _ = stream.socket().set_read_timeout(Some(Duration::from_millis(200)));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < (1 << 20) && Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    cfg: &ServerConfig,
    tls: Option<&ListenerTls>,
) {
    let stack = StackMark::here(cfg.stack_kib * 1024);
    crate::affinity::set_home(socket.as_raw_fd());
    let _ = socket.set_nodelay(true);
    let _ = socket.set_write_timeout(Some(Duration::from_millis(cfg.keepalive_timeout_ms.max(10_000))));
    let mut stream = match tls {
        None => ServerStream::plain(socket),
        Some(tls) => match tls.session(socket) {
            Ok(s) => s,
            Err(e) => {
                crate::warn_throttled!("tls: cannot start a session: {e}");
                return;
            }
        },
    };
    let mut reader = Reader::new(&stream);
    if let Some(tls) = tls {
        if !handshake(&mut stream, &mut reader, tls) {
            tls::HANDSHAKE_FAILURES.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    if serve_requests(&mut stream, &mut reader, peer, handler, cfg, &stack) && stream.is_tls() {
        // An orderly end (not after a broken response): tell the client so it is not taken for a
        // truncation.
        let _ = stream.shutdown_write();
    }
}

/// Runs a TLS connection's handshake within the handshake timeout; `false` when it failed. Out of line:
/// plain connections' coroutine stacks must not carry its frame.
#[inline(never)]
fn handshake(stream: &mut ServerStream, reader: &mut Reader, tls: &ListenerTls) -> bool {
    let shaken = reader.within(tls.handshake_timeout, |_| {
        if tls::sends_plain_http(stream.socket())? {
            refuse_plain_http(stream.socket_mut());
            return Err(io::Error::new(io::ErrorKind::InvalidData, "plain HTTP on the TLS port"));
        }
        stream.handshake()
    });
    shaken.is_ok()
}

/// Serves requests on a connection until it should close; `true` when it ends in order (the client
/// closed or idled out, or a response said `connection: close`).
fn serve_requests(
    stream: &mut ServerStream,
    reader: &mut Reader,
    peer: SocketAddr,
    handler: &Handler,
    cfg: &ServerConfig,
    stack: &StackMark,
) -> bool {
    if !stream.is_tls() && !reader.await_first_bytes(stream, cfg) {
        return true;
    }
    let mut watch = ClientWatch::new();
    let limits = Limits::from(cfg);
    loop {
        // Between requests: give back what a large body made the buffer allocate.
        reader.buf.shrink(64 * 1024);
        let head = match reader.read_head(stream, cfg) {
            Ok(ReadHead::Head(h)) => h,
            Ok(ReadHead::Closed) => return true,
            Err(r) => {
                refuse(stream, Api::OpenAi, r.status, &r.message, None);
                return false;
            }
        };
        let received = Instant::now();
        let schema = api_for_path(head.path());
        let framing = match head.checked_framing(&limits) {
            Ok(f) => f,
            Err(e) => {
                refuse(stream, schema, e.status(), &e.message(), Some(&head));
                return false;
            }
        };
        let body_pending = match framing {
            BodyFraming::None => false,
            BodyFraming::Length(n) => (reader.pending().len() as u64) < n,
            BodyFraming::Chunked => true,
        };
        let body_streamed = body::streams_body(&head, framing);
        let mut streamed = body::StreamedBody::none();
        let body = if body_streamed {
            let timeout = Duration::from_millis(cfg.header_timeout_ms);
            streamed =
                body::StreamedBody::new(framing, body_pending && head.expects_continue(), timeout, cfg.max_body_bytes);
            Vec::new()
        } else {
            if body_pending && head.expects_continue() && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
                return false;
            }
            match reader.read_body(stream, framing, cfg) {
                Ok(b) => b,
                Err(r) => {
                    refuse(stream, schema, r.status, &r.message, Some(&head));
                    return false;
                }
            }
        };
        // While the request is handled, storage a large request made the buffer grow to is given back;
        // a small buffer stays for the next request (a stream that waits gives that back too, see
        // `Responder::release_idle_memory`).
        if reader.buf.is_empty() {
            reader.buf.shrink(crate::readbuf::INITIAL);
        }
        let keep_alive = head.keep_alive() && !SHUTTING_DOWN.load(Ordering::Relaxed);
        let minor = head.minor_version;
        let head_only = head.method() == "HEAD";
        let request = Request { head, body, peer, body_streamed, received };
        let _active = ActiveRequest::start();
        let mut responder = Responder {
            stream,
            minor,
            keep_alive,
            head_only,
            state: ResponseState::Fresh,
            status: 0,
            sent: 0,
            scratch: Vec::new(),
            head_pending: false,
            watch: &mut watch,
            reader,
            body: streamed,
            stack,
        };
        // The handler writes the access log line (gateway::observe).
        handler(&request, &mut responder);
        let body_done = responder.body.finish(responder.stream, responder.reader);
        let state = responder.state;
        let keep_alive = responder.keep_alive && body_done;
        watch.request_done();
        match state {
            ResponseState::Done => {}
            ResponseState::Fresh => return answer_unanswered(stream, schema, &request.head),
            // A response cut short cannot be framed any more: closing is the only honest end.
            ResponseState::Streaming | ResponseState::Broken => return false,
        }
        if !keep_alive || SHUTTING_DOWN.load(Ordering::Relaxed) {
            return body_done;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_request_id_is_kept_and_others_replaced() {
        let head = |id: &str| {
            let raw = format!("GET / HTTP/1.1\r\nHost: a\r\nx-request-id: {id}\r\n\r\n");
            http1::parse_head(raw.as_bytes(), 4096, 10).unwrap().unwrap().0
        };
        assert_eq!(&*request_id(Some(&head("abc-1"))), "abc-1");
        assert_eq!(&*request_id(Some(&head(&"a".repeat(128)))), "a".repeat(128));
        assert_eq!(request_id(None).len(), 32);
        assert!(request_id(None).bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        for (high, low) in [(0, 0), (1, u64::MAX), (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210)] {
            let mut out = [0; MAX_REQUEST_ID];
            hex_id(&mut out, high, low);
            assert_eq!(std::str::from_utf8(&out[..32]).unwrap(), format!("{high:016x}{low:016x}"));
        }
        assert_ne!(&*request_id(Some(&head(&"a".repeat(129)))), "a".repeat(129));
        assert_eq!(request_id(Some(&head("a b"))).len(), 32);
    }
}
