//! The read side of a client connection: request heads and bodies within their deadlines.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::chunked::ChunkedDecoder;
use crate::config::ServerConfig;
use crate::deadline::Deadline;
use crate::readbuf::ReadBuf;
use crate::tls::ServerStream;

use super::http1::{self, BodyFraming, HeadError, Limits, RequestHead};

pub(super) enum ReadHead {
    Head(RequestHead),
    /// The peer closed or idled out between requests: close quietly.
    Closed,
}

/// A refusal the server answers itself before the request reaches the handler.
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) message: std::borrow::Cow<'static, str>,
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
pub(super) struct Reader {
    pub(super) buf: ReadBuf,
    deadline: Deadline,
}

impl Reader {
    /// Must be dropped before `stream` closes.
    pub(super) fn new(stream: &ServerStream) -> Reader {
        Reader { buf: ReadBuf::new(), deadline: Deadline::register(stream.as_raw_fd(), std::net::Shutdown::Read) }
    }

    pub(super) fn pending(&self) -> &[u8] {
        self.buf.pending()
    }

    /// Runs one blocking read that must end within `timeout`; `TimedOut` when it did not.
    pub(super) fn within<T>(
        &mut self,
        timeout: Duration,
        read: impl FnOnce(&mut Self) -> io::Result<T>,
    ) -> io::Result<T> {
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
    pub(super) fn read_more(&mut self, stream: &mut ServerStream, want: usize, timeout: Duration) -> io::Result<usize> {
        self.within(timeout, |this| this.buf.read_with(want.clamp(1024, 1 << 20), |space| stream.read(space)))
    }

    /// Reads from the socket straight into `out` within `timeout`.
    pub(super) fn read_into(
        &mut self,
        stream: &mut ServerStream,
        out: &mut [u8],
        timeout: Duration,
    ) -> io::Result<usize> {
        self.within(timeout, |_| stream.read(out))
    }

    /// Waits, within the keep-alive timeout, for a fresh plain connection's first bytes without taking
    /// its read buffer (a peek of one byte): 10,000 clients connecting at once hold no buffers until
    /// they send. `false` when the client closed or sent nothing in time.
    pub(super) fn await_first_bytes(&mut self, stream: &ServerStream, cfg: &ServerConfig) -> bool {
        let timeout = Duration::from_millis(cfg.keepalive_timeout_ms);
        matches!(self.within(timeout, |_| stream.socket().peek(&mut [0u8; 1])), Ok(1))
    }

    /// Reads one request head (the buffer may already hold pipelined bytes) and consumes it.
    pub(super) fn read_head(&mut self, stream: &mut ServerStream, cfg: &ServerConfig) -> Result<ReadHead, Refusal> {
        // The deadline is a coarse clock's (`clock::coarse_deadline`): it only ever ends a wait.
        let header_timeout = Duration::from_millis(cfg.header_timeout_ms);
        let mut deadline = (!self.buf.is_empty()).then(|| crate::clock::coarse_deadline(header_timeout));
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
                Some(d) => match crate::clock::coarse_left(d) {
                    left if left.is_zero() => return Err(timed_out),
                    left => header_timeout.min(left),
                },
            };
            match self.read_more(stream, 1024, timeout) {
                Ok(0) => return Ok(ReadHead::Closed),
                Ok(_) => {
                    deadline.get_or_insert_with(|| crate::clock::coarse_deadline(header_timeout));
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
    pub(super) fn read_body(
        &mut self,
        stream: &mut ServerStream,
        framing: BodyFraming,
        cfg: &ServerConfig,
    ) -> Result<Vec<u8>, Refusal> {
        // The body's clock starts at its first wait: a body that came with the head reads no clock.
        let mut pace: Option<BodyPace> = None;
        let gap = Duration::from_millis(cfg.header_timeout_ms);
        let slow = || Refusal { status: 408, message: "request body not received in time".into() };
        let closed = || Refusal { status: 400, message: "connection closed before the body was complete".into() };
        let mut received = self.buf.len() as u64;
        // Reads more within the body's deadline (the socket timeout changes only near it): into `into`
        // when given, else into the buffer (room for `want` bytes).
        let mut read =
            |this: &mut Reader, want: usize, into: Option<&mut [u8]>, received: &mut u64| -> Result<usize, Refusal> {
                let now = Instant::now();
                let left = pace.get_or_insert_with(|| BodyPace::new(cfg, now)).left(*received, now).ok_or_else(slow)?;
                let timeout = gap.min(left).max(Duration::from_millis(1));
                let got = match into {
                    Some(out) => this.read_into(stream, out, timeout),
                    None => this.read_more(stream, want, timeout),
                };
                match got {
                    Ok(0) => Err(closed()),
                    Ok(n) => {
                        *received += n as u64;
                        Ok(n)
                    }
                    Err(e) if is_timeout(&e) => Err(slow()),
                    Err(_) => Err(closed()),
                }
            };
        match framing {
            BodyFraming::None => Ok(Vec::new()),
            BodyFraming::Length(n) => {
                let n = n as usize;
                if self.buf.len() >= n {
                    let body = self.pending()[..n].to_vec();
                    self.buf.consume(n);
                    return Ok(body);
                }
                // The rest is read from the socket straight into the body: the buffer does not grow to the
                // body's size (zero-filled) to be copied out of. The body's storage grows as bytes come,
                // from at most `BODY_STEP`, so that a client that only declares a large body holds little.
                let have = self.buf.len();
                let mut body = vec![0u8; n.min(have + BODY_STEP)];
                body[..have].copy_from_slice(self.pending());
                self.buf.consume(have);
                let mut filled = have;
                while filled < n {
                    if filled == body.len() {
                        body.resize(n.min(body.len().saturating_mul(2)), 0);
                    }
                    filled += read(self, 0, Some(&mut body[filled..]), &mut received)?;
                }
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
                    read(self, 1024, None, &mut received)?;
                }
            }
        }
    }
}

/// The most a request body's storage takes before its bytes come (it grows as they do).
const BODY_STEP: usize = 1 << 20;

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

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
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
}
