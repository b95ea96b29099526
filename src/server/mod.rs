//! The IO shell on the client side: one `may::net` listener per worker (SO_REUSEPORT), one coroutine
//! per connection, HTTP/1.1 with keep-alive, pipelining, chunked bodies in and out, and limits.

mod body;
pub mod http1;
pub mod tls;
mod watch;

pub use body::{BodyError, RequestBody};
pub use tls::ListenerTls;

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use may::net::{TcpListener, TcpStream};

use crate::api::Api;
use crate::cancel::Cancel;
use crate::chunked::ChunkedDecoder;
use crate::config::ServerConfig;
use crate::deadline::Deadline;
use crate::error::error_body;
use crate::readbuf::ReadBuf;
use crate::tls::ServerStream;
use http1::{BodyFraming, HeadError, Limits, RequestHead};
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

/// The request's id: the client's `x-request-id` when it is a sane token (at most 128 visible ASCII
/// characters), else a fresh one. Every response carries it, the server layer's own errors included.
pub fn request_id(head: Option<&RequestHead>) -> String {
    match head.and_then(|h| h.header("x-request-id")) {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) => id.to_string(),
        _ => format!("{:016x}{:016x}", crate::router::random_draw(), crate::router::random_draw()),
    }
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
    let first = TcpListener::bind(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers.max(1) {
        listeners.push(TcpListener::bind(addr)?);
    }
    Ok(listeners)
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
            may::go!(move || accept_loop(listener, handler, cfg, tls))
        })
        .collect()
}

fn accept_loop(listener: TcpListener, handler: Handler, cfg: Arc<ServerConfig>, tls: Option<Arc<ListenerTls>>) {
    // may counts stack sizes in machine words.
    let stack = cfg.stack_kib * 1024 / std::mem::size_of::<usize>();
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(pair) => pair,
            Err(e) => {
                if SHUTTING_DOWN.load(Ordering::Relaxed) {
                    return;
                }
                // EMFILE and friends: back off briefly instead of spinning.
                crate::warn_throttled!("accept failed: {e}");
                may::coroutine::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if SHUTTING_DOWN.load(Ordering::Relaxed) {
            return;
        }
        let open = OPEN_CONNECTIONS.fetch_add(1, Ordering::AcqRel) + 1;
        let handler = handler.clone();
        let cfg = cfg.clone();
        let tls = tls.clone();
        let builder = may::coroutine::Builder::new().stack_size(stack);
        // SAFETY: the coroutine uses no thread-local state across yields (may's requirement).
        let spawned = unsafe {
            builder.spawn(move || {
                let _open = ConnectionSlot;
                if open > cfg.max_connections {
                    crate::metrics::count_refused(503);
                    // Over TLS the answer would cost a handshake: the connection is just closed.
                    if tls.is_none() {
                        let mut stream = ServerStream::Plain(stream);
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

/// Answers an early error and closes gracefully (see [`linger`]).
fn refuse(stream: &mut ServerStream, schema: Api, status: u16, message: &str, id: &str) {
    crate::metrics::count_refused(status);
    if write_error(stream, schema, status, message, id).is_ok() {
        linger(stream);
    }
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

fn write_head(
    out: &mut Vec<u8>,
    minor: u8,
    status: u16,
    keep_alive: bool,
    headers: &[(&str, &str)],
    length: Option<usize>,
) {
    out.extend_from_slice(if minor == 0 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    let _ = write!(out, "{status}");
    out.push(b' ');
    out.extend_from_slice(http1::reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match length {
        Some(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        None if minor == 1 => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

enum ReadHead {
    Head(RequestHead),
    /// The peer closed or idled out between requests: close quietly.
    Closed,
}

/// A refusal the server answers itself before the request reaches the handler.
struct Refusal {
    status: u16,
    message: std::borrow::Cow<'static, str>,
}

impl From<HeadError> for Refusal {
    fn from(e: HeadError) -> Refusal {
        Refusal { status: e.status(), message: e.message() }
    }
}

const HEAD_TIMEOUT: &str = "request head not received in time";

/// The read side of a client connection: its buffer, and the deadline that bounds each wait for the
/// client ([`crate::deadline`]: a socket read timeout in `may` leaves a timer entry behind per read,
/// which made memory grow with the request rate). An expired wait shuts down the read side only, so
/// the connection can still answer 408.
struct Reader {
    buf: ReadBuf,
    deadline: Deadline,
}

impl Reader {
    /// Must be dropped before `stream` closes.
    fn new(stream: &ServerStream) -> Reader {
        Reader { buf: ReadBuf::new(), deadline: Deadline::register(stream.as_raw_fd(), std::net::Shutdown::Read) }
    }

    fn pending(&self) -> &[u8] {
        self.buf.pending()
    }

    /// Runs one blocking read that must end within `timeout`; `TimedOut` when it did not.
    fn within<T>(&mut self, timeout: Duration, read: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        if self.deadline.expired() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the connection's read deadline passed"));
        }
        self.deadline.arm(timeout);
        let result = read(self);
        self.deadline.disarm();
        if self.deadline.expired() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the connection's read deadline passed"));
        }
        result
    }

    /// Reads what is available within `timeout`, with room for at least `want` bytes (bounded to 1 MiB
    /// at a time).
    fn read_more(&mut self, stream: &mut ServerStream, want: usize, timeout: Duration) -> io::Result<usize> {
        self.within(timeout, |this| this.buf.read_with(want.clamp(1024, 1 << 20), |space| stream.read(space)))
    }

    /// Reads from the socket straight into `out` within `timeout`.
    fn read_into(&mut self, stream: &mut ServerStream, out: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.within(timeout, |_| stream.read(out))
    }

    /// Reads one request head (the buffer may already hold pipelined bytes) and consumes it.
    fn read_head(&mut self, stream: &mut ServerStream, cfg: &ServerConfig) -> Result<ReadHead, Refusal> {
        let header_timeout = Duration::from_millis(cfg.header_timeout_ms);
        let mut deadline = (!self.buf.is_empty()).then(|| Instant::now() + header_timeout);
        loop {
            if !self.buf.is_empty() {
                match http1::parse_head(self.pending(), cfg.max_head_bytes, cfg.max_headers) {
                    Ok(Some((head, len))) => {
                        self.buf.consume(len);
                        return Ok(ReadHead::Head(head));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let timed_out = Refusal { status: 408, message: HEAD_TIMEOUT.into() };
            let timeout = match deadline {
                None => Duration::from_millis(cfg.keepalive_timeout_ms),
                Some(d) if Instant::now() >= d => return Err(timed_out),
                Some(d) => header_timeout.min(d - Instant::now()),
            };
            match self.read_more(stream, 1024, timeout) {
                Ok(0) => return Ok(ReadHead::Closed),
                Ok(_) => {
                    deadline.get_or_insert_with(|| Instant::now() + header_timeout);
                }
                Err(e) if is_timeout(&e) && deadline.is_some() => return Err(timed_out),
                Err(_) => return Ok(ReadHead::Closed),
            }
        }
    }

    /// Reads the request body per its framing. Bytes past it stay buffered for the next request.
    ///
    /// The body must arrive within `body_timeout_ms` plus one second per `min_body_rate_bytes_per_s`
    /// bytes received (so a body that trickles is cut, 408), and no gap between reads may exceed
    /// `header_timeout_ms`.
    fn read_body(
        &mut self,
        stream: &mut ServerStream,
        framing: BodyFraming,
        cfg: &ServerConfig,
    ) -> Result<Vec<u8>, Refusal> {
        let pace = BodyPace::new(cfg, Instant::now());
        let gap = Duration::from_millis(cfg.header_timeout_ms);
        let slow = || Refusal { status: 408, message: "request body not received in time".into() };
        let closed = || Refusal { status: 400, message: "connection closed before the body was complete".into() };
        let mut received = self.buf.len() as u64;
        // Reads more within the body's deadline (the socket timeout changes only near it).
        let mut read = |this: &mut Reader, want: usize, received: &mut u64| -> Result<(), Refusal> {
            let left = pace.left(*received, Instant::now()).ok_or_else(slow)?;
            match this.read_more(stream, want, gap.min(left).max(Duration::from_millis(1))) {
                Ok(0) => Err(closed()),
                Ok(n) => {
                    *received += n as u64;
                    Ok(())
                }
                Err(e) if is_timeout(&e) => Err(slow()),
                Err(_) => Err(closed()),
            }
        };
        match framing {
            BodyFraming::None => Ok(Vec::new()),
            BodyFraming::Length(n) => {
                let n = n as usize;
                while self.buf.len() < n {
                    let missing = n - self.buf.len();
                    read(self, missing, &mut received)?;
                }
                let body = self.pending()[..n].to_vec();
                self.buf.consume(n);
                Ok(body)
            }
            BodyFraming::Chunked => {
                let limits = Limits::from(cfg);
                let mut decoder = ChunkedDecoder::with_limit(cfg.max_body_bytes);
                let mut body = Vec::new();
                loop {
                    let (used, done) = decoder
                        .decode(self.pending(), &mut body)
                        .map_err(|e| Refusal::from(HeadError::from_chunk(e, &limits)))?;
                    self.buf.consume(used);
                    if done {
                        return Ok(body);
                    }
                    read(self, 1024, &mut received)?;
                }
            }
        }
    }
}

/// How long a request body may take: `body_timeout_ms` from the end of the head, plus a second per
/// `min_body_rate_bytes_per_s` bytes received. Pure: time is passed in.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    start: Instant,
    allowance: Duration,
    /// Bytes per second that earn one more second; 0: none do.
    rate: u64,
}

impl BodyPace {
    pub fn new(cfg: &ServerConfig, start: Instant) -> BodyPace {
        BodyPace { start, allowance: Duration::from_millis(cfg.body_timeout_ms), rate: cfg.min_body_rate_bytes_per_s }
    }

    /// Time left at `now` after `received` body bytes; `None` once the deadline has passed.
    pub fn left(&self, received: u64, now: Instant) -> Option<Duration> {
        let earned = Duration::from_millis(received.saturating_mul(1000).checked_div(self.rate).unwrap_or(0));
        let deadline = self.start + self.allowance + earned.min(Duration::from_secs(86_400 * 365));
        deadline.checked_duration_since(now).filter(|d| !d.is_zero())
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
}

fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    handler: &Handler,
    cfg: &ServerConfig,
    tls: Option<&ListenerTls>,
) {
    let _ = socket.set_nodelay(true);
    let _ = socket.set_write_timeout(Some(Duration::from_millis(cfg.keepalive_timeout_ms.max(10_000))));
    let mut stream = match tls {
        None => ServerStream::Plain(socket),
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
    if serve_requests(&mut stream, &mut reader, peer, handler, cfg) && stream.is_tls() {
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
) -> bool {
    let mut watch = ClientWatch::new();
    let limits = Limits::from(cfg);
    loop {
        // Between requests: give back what a large body made the buffer allocate.
        reader.buf.shrink(64 * 1024);
        let head = match reader.read_head(stream, cfg) {
            Ok(ReadHead::Head(h)) => h,
            Ok(ReadHead::Closed) => return true,
            Err(r) => {
                refuse(stream, Api::OpenAi, r.status, &r.message, &request_id(None));
                return false;
            }
        };
        let received = Instant::now();
        let schema = api_for_path(head.path());
        let framing = match head.checked_framing(&limits) {
            Ok(f) => f,
            Err(e) => {
                refuse(stream, schema, e.status(), &e.message(), &request_id(Some(&head)));
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
                    refuse(stream, schema, r.status, &r.message, &request_id(Some(&head)));
                    return false;
                }
            }
        };
        // While the request is handled (a stream may last minutes) an empty buffer holds no memory.
        if reader.buf.is_empty() {
            reader.buf.shrink(0);
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
        };
        // The handler writes the access log line (gateway::observe).
        handler(&request, &mut responder);
        let body_done = responder.body.finish(responder.stream, responder.reader);
        let state = responder.state;
        let keep_alive = responder.keep_alive && body_done;
        watch.request_done();
        match state {
            ResponseState::Done => {}
            ResponseState::Fresh => {
                let id = request_id(Some(&request.head));
                return write_error(stream, schema, 500, "the gateway produced no response", &id).is_ok();
            }
            // A response cut short cannot be framed any more: closing is the only honest end.
            ResponseState::Streaming | ResponseState::Broken => return false,
        }
        if !keep_alive || SHUTTING_DOWN.load(Ordering::Relaxed) {
            return body_done;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResponseState {
    Fresh,
    Streaming,
    Done,
    Broken,
}

/// Writes the one response to a request: whole (`send`) or streamed (`start`, `chunk`…, `finish`).
pub struct Responder<'a> {
    stream: &'a mut ServerStream,
    minor: u8,
    keep_alive: bool,
    head_only: bool,
    state: ResponseState,
    /// The status sent (0 before the head).
    status: u16,
    /// Body bytes written so far.
    sent: u64,
    /// Output being assembled; while `head_pending`, it holds a streamed response's head.
    scratch: Vec<u8>,
    head_pending: bool,
    watch: &'a mut ClientWatch,
    /// The connection's read side, for a streamed request body.
    reader: &'a mut Reader,
    body: body::StreamedBody,
}

impl Responder<'_> {
    /// Sends a complete response with `content-length`.
    pub fn send(&mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        debug_assert_eq!(self.state, ResponseState::Fresh);
        self.status = status;
        // An answer before the request body was read: the connection cannot carry another request.
        self.keep_alive &= !self.body.unfinished();
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        write_head(&mut out, self.minor, status, self.keep_alive, headers, Some(body.len()));
        if !self.head_only {
            out.extend_from_slice(body);
            self.sent += body.len() as u64;
        }
        let result = self.stream.write_all(&out);
        self.scratch = out;
        self.state = if result.is_ok() { ResponseState::Done } else { ResponseState::Broken };
        result
    }

    /// Starts a streamed response: chunked on HTTP/1.1, close-delimited on HTTP/1.0. The head is held
    /// back to go out with the first piece of the body, unless `flush` sends it first (before a wait).
    pub fn start(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        debug_assert_eq!(self.state, ResponseState::Fresh);
        self.status = status;
        self.keep_alive &= !self.body.unfinished();
        if self.minor == 0 {
            self.keep_alive = false;
        }
        self.scratch.clear();
        write_head(&mut self.scratch, self.minor, status, self.keep_alive, headers, None);
        self.head_pending = true;
        self.state = ResponseState::Streaming;
        Ok(())
    }

    /// Sends a started stream's head now, if it has not gone out yet.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.head_pending {
            return Ok(());
        }
        self.send_pending(&[], false)
    }

    /// Sends one piece of a streamed response (with the head, if it is still held back) in one write.
    pub fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() && !self.head_pending {
            return Ok(());
        }
        self.send_pending(data, false)
    }

    /// Sends the last piece of a streamed response and its end in one write (with the head, if it is
    /// still held back).
    pub fn chunk_and_finish(&mut self, data: &[u8]) -> io::Result<()> {
        if self.state != ResponseState::Streaming {
            return Ok(());
        }
        let result = self.send_pending(data, true);
        self.state = if result.is_ok() { ResponseState::Done } else { ResponseState::Broken };
        result
    }

    /// Ends a streamed response properly.
    pub fn finish(&mut self) -> io::Result<()> {
        self.chunk_and_finish(&[])
    }

    /// Writes, in one write: the held-back head, `data` as a chunk, and the end of the body when `last`.
    fn send_pending(&mut self, data: &[u8], last: bool) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.scratch);
        if !self.head_pending {
            out.clear();
        }
        self.head_pending = false;
        let chunked = self.minor != 0 && !self.head_only;
        if !data.is_empty() && !self.head_only {
            self.sent += data.len() as u64;
            if chunked {
                let _ = write!(out, "{:x}\r\n", data.len());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(data);
            }
        }
        if last && chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        let result = if out.is_empty() { Ok(()) } else { self.stream.write_all(&out) };
        out.clear();
        self.scratch = out;
        if result.is_err() {
            self.state = ResponseState::Broken;
        }
        result
    }

    pub fn started(&self) -> bool {
        self.state != ResponseState::Fresh
    }

    /// The status sent (0 before the head).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Body bytes handed to the socket (chunk framing not counted).
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Closes the connection after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Watches the client connection until this request ends: if the client goes away, whatever the
    /// request is blocked on upstream is shut down (through the returned `Cancel`).
    pub fn watch_client(&mut self) -> Arc<Cancel> {
        self.watch.start(self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_earns_a_second_per_min_rate_bytes_after_its_allowance() {
        let cfg = ServerConfig { body_timeout_ms: 1000, min_body_rate_bytes_per_s: 100, ..ServerConfig::default() };
        let start = Instant::now();
        let pace = BodyPace::new(&cfg, start);
        assert_eq!(pace.left(0, start), Some(Duration::from_millis(1000)));
        assert_eq!(pace.left(0, start + Duration::from_millis(1000)), None);
        assert_eq!(pace.left(50, start + Duration::from_millis(1000)), Some(Duration::from_millis(500)));
        // One byte a second never keeps up.
        assert_eq!(pace.left(2, start + Duration::from_secs(2)), None);
        let fixed = BodyPace::new(&ServerConfig { min_body_rate_bytes_per_s: 0, ..cfg }, start);
        assert_eq!(fixed.left(u64::MAX, start + Duration::from_millis(999)), Some(Duration::from_millis(1)));
        assert_eq!(fixed.left(u64::MAX, start + Duration::from_millis(1000)), None);
    }

    #[test]
    fn a_sane_client_request_id_is_kept_and_others_replaced() {
        let head = |id: &str| {
            let raw = format!("GET / HTTP/1.1\r\nHost: a\r\nx-request-id: {id}\r\n\r\n");
            http1::parse_head(raw.as_bytes(), 4096, 10).unwrap().unwrap().0
        };
        assert_eq!(request_id(Some(&head("abc-1"))), "abc-1");
        assert_eq!(request_id(None).len(), 32);
        assert_ne!(request_id(Some(&head(&"a".repeat(129)))), "a".repeat(129));
        assert_eq!(request_id(Some(&head("a b"))).len(), 32);
    }
}
