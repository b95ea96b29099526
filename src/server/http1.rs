//! HTTP/1.1 request heads and bodies, without IO: bytes in, values out.
//!
//! Strict where RFC 9112 lets a recipient choose, because the gateway is a proxy: a request that two
//! parsers could frame differently is refused (400) and the connection closed, never guessed at.
//! [`frame_requests`] runs the same steps the connection loop runs over a whole byte string, for the
//! differential and fuzz tests.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::ops::Range;

use crate::chunked::{ChunkError, ChunkedDecoder};

/// What framing enforces, from the `server` config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
}

impl From<&crate::config::ServerConfig> for Limits {
    fn from(c: &crate::config::ServerConfig) -> Limits {
        Limits { max_head_bytes: c.max_head_bytes, max_headers: c.max_headers, max_body_bytes: c.max_body_bytes }
    }
}

/// A parsed request head. Header names and values are ranges into `raw`, so a head costs two
/// allocations however many headers it has.
#[derive(Debug)]
pub struct RequestHead {
    raw: Raw,
    method: Range<usize>,
    /// The request target as sent.
    target: Range<usize>,
    /// Its path without the query (of the origin form: all of `target`, or the part after the authority
    /// of an absolute-form target), found once; empty when it has no path (it then means `/`).
    path: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

/// A head's bytes: as text when they are UTF-8 (nearly always), so that its method, path and header names
/// are sliced out without a check each time they are read; as bytes otherwise (a value with obs-text).
#[derive(Debug)]
enum Raw {
    Text(String),
    Bytes(Vec<u8>),
}

impl Raw {
    fn new(head: &[u8]) -> Raw {
        match crate::text::owned_utf8(head.to_vec()) {
            Ok(text) => Raw::Text(text),
            Err(bytes) => Raw::Bytes(bytes),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Raw::Text(text) => text.as_bytes(),
            Raw::Bytes(bytes) => bytes,
        }
    }

    /// The text at `range`, `None` when it is not UTF-8.
    fn text(&self, range: Range<usize>) -> Option<&str> {
        match self {
            Raw::Text(text) => text.get(range),
            Raw::Bytes(bytes) => std::str::from_utf8(&bytes[range]).ok(),
        }
    }
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Why a request was refused: each maps to a status, and the connection is closed after answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// 400: malformed request, conflicting or invalid framing, obs-fold, a bad Host.
    Malformed(&'static str),
    /// 413: the body is larger than `max_body_bytes` (`length` when a Content-Length announced it).
    BodyTooLarge { length: Option<u64>, limit: u64 },
    /// 414: the request line alone exceeds the head limit.
    UriTooLong,
    /// 431: too many headers or too many header bytes.
    HeadersTooLarge,
    /// 501: a transfer coding other than chunked.
    UnsupportedTransferEncoding,
}

impl HeadError {
    /// The refusal for a chunked body the decoder refused.
    pub fn from_chunk(e: ChunkError, limits: &Limits) -> HeadError {
        match e {
            ChunkError::Invalid(m) => HeadError::Malformed(m),
            ChunkError::TooLarge => HeadError::BodyTooLarge { length: None, limit: limits.max_body_bytes },
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::BodyTooLarge { .. } => 413,
            HeadError::UriTooLong => 414,
            HeadError::HeadersTooLarge => 431,
            HeadError::UnsupportedTransferEncoding => 501,
        }
    }

    pub fn message(&self) -> Cow<'static, str> {
        match self {
            HeadError::Malformed(m) => Cow::Borrowed(m),
            HeadError::BodyTooLarge { length: Some(n), limit } => {
                Cow::Owned(format!("request body of {n} bytes exceeds the limit of {limit} bytes"))
            }
            HeadError::BodyTooLarge { length: None, limit } => {
                Cow::Owned(format!("request body too large: the limit is {limit} bytes"))
            }
            HeadError::UriTooLong => Cow::Borrowed("request line too long"),
            HeadError::HeadersTooLarge => Cow::Borrowed("request headers too large"),
            HeadError::UnsupportedTransferEncoding => Cow::Borrowed("only the chunked transfer coding is supported"),
        }
    }
}

/// Parses and checks a head from the start of `buf`. `Ok(None)`: incomplete, read more (unless `buf`
/// already holds `max_head_bytes`, which is then an error). On success returns the head and its length
/// in `buf`.
///
/// Besides httparse's grammar (tokens, visible header values, no obs-fold), a head is refused when a
/// line ends in a bare LF, when its target is neither origin-form, absolute-form (`http://host/path`,
/// whose authority must be a valid host) nor `*` for OPTIONS, and when its Host is missing (HTTP/1.1),
/// repeated (even identically) or not a valid `host[:port]` (RFC 9112 §3.2: MUST answer 400).
///
/// Out of line: its 4 KiB of header slots must not join the connection loop's frame, which stays on
/// the stack while a stream waits (a profile-guided build inlined it there: a third stack page a
/// waiting stream; see `server/stack.rs`).
#[inline(never)]
pub fn parse_head(
    buf: &[u8],
    max_head_bytes: usize,
    max_headers: usize,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // Slots httparse fills as it parses: left uninitialised, not written 128 times per request.
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; 128];
    let mut heap;
    let headers: &mut [MaybeUninit<httparse::Header>] = if max_headers <= slots.len() {
        &mut slots[..max_headers]
    } else {
        heap = vec![MaybeUninit::uninit(); max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(&mut []);
    let window = &buf[..buf.len().min(max_head_bytes)];
    let status = req.parse_with_uninit_headers(window, headers).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HeadError::HeadersTooLarge,
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
        httparse::Error::HeaderName | httparse::Error::HeaderValue => {
            HeadError::Malformed("invalid header (obs-fold and control characters are refused)")
        }
        _ => HeadError::Malformed("malformed request"),
    })?;
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => {
            // httparse takes a bare LF as a line end; a proxy must not (another hop may not).
            if has_bare_lf(window) {
                return Err(BARE_LF);
            }
            if window.len() >= max_head_bytes {
                return Err(if memchr_newline(window) { HeadError::HeadersTooLarge } else { HeadError::UriTooLong });
            }
            return Ok(None);
        }
    };
    if has_bare_lf(&buf[..len]) {
        return Err(BARE_LF);
    }
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method_str = req.method.unwrap_or("");
    let method = range(method_str.as_bytes());
    let target_str = req.path.unwrap_or("");
    let target = range(target_str.as_bytes());
    let origin = origin_form(method_str, target_str)?;
    let origin = &target_str.as_bytes()[origin];
    let path_len = memchr::memchr(b'?', origin).unwrap_or(origin.len());
    let path = range(&origin[..path_len]);
    let minor_version = req.version.unwrap_or(1);
    let mut hosts = 0;
    for h in req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")) {
        hosts += 1;
        if hosts > 1 {
            return Err(HeadError::Malformed("more than one Host header"));
        }
        if !valid_host(trim_ows(h.value)) {
            return Err(HeadError::Malformed("invalid Host header"));
        }
    }
    if hosts == 0 && minor_version == 1 {
        return Err(HeadError::Malformed("missing Host header"));
    }
    let headers = req.headers.iter().map(|h| (range(h.name.as_bytes()), range(h.value))).collect();
    Ok(Some((RequestHead { raw: Raw::new(&buf[..len]), method, target, path, minor_version, headers }, len)))
}

const BARE_LF: HeadError = HeadError::Malformed("a line ends in a bare LF (CRLF is required)");

/// Whether some LF in `b` is not preceded by CR. It runs on every head: sixteen bytes at a time with
/// SSE2 (part of every x86-64), where a mask of the LFs is checked against the mask of the CRs moved
/// one byte on; elsewhere memchr finds the LFs (one a line) and the byte before each is looked at.
fn has_bare_lf(b: &[u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    return bare_lf_sixteen_at_a_time(b);
    #[cfg(not(target_arch = "x86_64"))]
    return bare_lf_by_memchr(b);
}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn bare_lf_by_memchr(b: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', b).any(|i| i == 0 || b[i - 1] != b'\r')
}

#[cfg(target_arch = "x86_64")]
fn bare_lf_sixteen_at_a_time(b: &[u8]) -> bool {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // The LFs and the CRs of `b[at..at + 16]`, one bit each.
    let masks = |at: usize| -> (u32, u32) {
        assert!(at + 16 <= b.len());
        // SAFETY: SSE2 is in every x86-64 CPU, and the unaligned load reads `b[at..at + 16]`, in bounds.
        unsafe {
            let v = _mm_loadu_si128(b.as_ptr().add(at).cast());
            let mask = |byte: u8| _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8))) as u32;
            (mask(b'\n'), mask(b'\r'))
        }
    };
    let mut i = 0;
    // Whether the byte before `b[i]` is a CR (none is before the first).
    let mut cr_before = false;
    while i + 16 <= b.len() {
        let (lfs, crs) = masks(i);
        if lfs & !(crs << 1 | u32::from(cr_before)) != 0 {
            return true;
        }
        cr_before = crs & 1 << 15 != 0;
        i += 16;
    }
    if i == b.len() {
        return false;
    }
    if b.len() >= 16 {
        // The last bytes in the sixteen that end `b`: the LFs before `i` were looked at, and each one
        // from `i` on has the byte before it in the block.
        let last = b.len() - 16;
        let (lfs, crs) = masks(last);
        let from = i - last;
        return lfs >> from << from & !(crs << 1) != 0;
    }
    b.iter().enumerate().any(|(at, &c)| c == b'\n' && (at == 0 || b[at - 1] != b'\r'))
}

fn memchr_newline(b: &[u8]) -> bool {
    b.contains(&b'\n')
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != b' ' && *b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|b| *b != b' ' && *b != b'\t').map_or(start, |e| e + 1);
    &v[start..end]
}

/// Whether `name` is written in lower-case letters, digits and `-` only, as [`name_is`] needs.
#[inline(always)]
pub const fn is_lower_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return false;
        }
        i += 1;
    }
    true
}

/// Whether the header name `name` (a token, as httparse admits) is `lower` ([`is_lower_name`]) in any
/// case. Eight bytes at a time: setting bit 5 lower-cases a letter, and maps no other token byte onto
/// a letter, a digit or `-` (only CR onto `-`, and control bytes onto digits, none of them in a token).
#[inline]
pub fn name_is(name: &[u8], lower: &[u8]) -> bool {
    debug_assert!(is_lower_name(lower), "{lower:?}");
    const CASE: u64 = u64::from_ne_bytes([0x20; 8]);
    if name.len() != lower.len() {
        return false;
    }
    let (mut names, mut lowers) = (name.chunks_exact(8), lower.chunks_exact(8));
    for (n, l) in (&mut names).zip(&mut lowers) {
        let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or_default());
        if word(n) | CASE != word(l) {
            return false;
        }
    }
    names.remainder().iter().zip(lowers.remainder()).all(|(n, l)| n | 0x20 == *l)
}

impl RequestHead {
    pub fn method(&self) -> &str {
        self.raw.text(self.method.clone()).unwrap_or("")
    }

    /// The request target as sent (origin-form or absolute-form), query string included.
    pub fn target(&self) -> &str {
        self.raw.text(self.target.clone()).unwrap_or("")
    }

    /// The target's path without its query string (`/` for an absolute-form target without a path).
    pub fn path(&self) -> &str {
        let p = self.raw.text(self.path.clone()).unwrap_or("");
        if p.is_empty() {
            "/"
        } else {
            p
        }
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let raw = self.raw.bytes();
        self.headers.iter().map(|(n, v)| (self.raw.text(n.clone()).unwrap_or(""), &raw[v.clone()]))
    }

    /// The headers whose values are text (UTF-8), as text: no check per value when the head is text.
    pub fn text_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().filter_map(|(n, v)| Some((self.raw.text(n.clone())?, self.raw.text(v.clone())?)))
    }

    /// The first header with this name (case-insensitive), as text when it is valid UTF-8.
    #[inline(always)]
    pub fn header(&self, name: &str) -> Option<&str> {
        let (_, value) = self.named(name).next()?;
        self.raw.text(value.clone()).map(str::trim)
    }

    /// Values of the headers with this name, compared as bytes (no text conversion per header).
    #[inline(always)]
    fn header_values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        let raw = self.raw.bytes();
        self.named(name).map(|(_, v)| &raw[v.clone()])
    }

    /// The (name, value) ranges of the headers with this name.
    #[inline(always)]
    fn named<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a (Range<usize>, Range<usize>)> + use<'a, 'n> {
        let raw = self.raw.bytes();
        let name = name.as_bytes();
        // Inlined, so that for a literal `name` (most lookups) this is worked out while compiling.
        let lower = is_lower_name(name);
        // Most headers differ in length from `name`: only the others are compared.
        self.headers.iter().filter(move |(n, _)| {
            n.len() == name.len() && {
                let n = &raw[n.clone()];
                if lower {
                    name_is(n, name)
                } else {
                    n.eq_ignore_ascii_case(name)
                }
            }
        })
    }

    /// Whether the connection stays open after this request, per HTTP/1.0 and 1.1 rules.
    pub fn keep_alive(&self) -> bool {
        let tokens = |v: &[u8]| -> (bool, bool) {
            let s = String::from_utf8_lossy(v).to_ascii_lowercase();
            (s.split(',').any(|t| t.trim() == "close"), s.split(',').any(|t| t.trim() == "keep-alive"))
        };
        let (mut close, mut keep) = (false, false);
        for v in self.header_values("connection") {
            let (c, k) = tokens(v);
            close |= c;
            keep |= k;
        }
        if self.minor_version == 0 {
            keep && !close
        } else {
            !close
        }
    }

    pub fn expects_continue(&self) -> bool {
        self.minor_version == 1 && self.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }

    /// The body framing, refusing ambiguous or invalid combinations (request smuggling vectors).
    pub fn body_framing(&self) -> Result<BodyFraming, HeadError> {
        let mut te = self.header_values("transfer-encoding").peekable();
        let has_te = te.peek().is_some();
        let mut length: Option<u64> = None;
        for v in self.header_values("content-length") {
            // The usual value, digits alone, is read without the list parsing below (at most 19, as there).
            if let Some(n) = crate::digits::parse_decimal(v).filter(|_| v.len() <= 19) {
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Malformed("conflicting Content-Length headers"));
                }
                length = Some(n);
                continue;
            }
            let s = crate::text::utf8(v).map_err(|_| HeadError::Malformed("invalid Content-Length"))?;
            for part in s.split(',') {
                let part = part.trim_matches([' ', '\t']);
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.len() > 19 {
                    return Err(HeadError::Malformed("invalid Content-Length"));
                }
                let n: u64 = part.parse().map_err(|_| HeadError::Malformed("invalid Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Malformed("conflicting Content-Length headers"));
                }
                length = Some(n);
            }
        }
        if has_te {
            if length.is_some() {
                return Err(HeadError::Malformed("both Content-Length and Transfer-Encoding"));
            }
            if self.minor_version == 0 {
                return Err(HeadError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
            }
            let codings: Vec<String> = te
                .flat_map(|v| {
                    String::from_utf8_lossy(v).split(',').map(|t| t.trim().to_ascii_lowercase()).collect::<Vec<_>>()
                })
                .filter(|t| !t.is_empty())
                .collect();
            return match codings.as_slice() {
                [only] if only == "chunked" => Ok(BodyFraming::Chunked),
                [] => Err(HeadError::Malformed("empty Transfer-Encoding")),
                _ => Err(HeadError::UnsupportedTransferEncoding),
            };
        }
        Ok(match length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        })
    }

    /// The body framing, with a declared length over `max_body_bytes` refused before the body is read.
    pub fn checked_framing(&self, limits: &Limits) -> Result<BodyFraming, HeadError> {
        let framing = self.body_framing()?;
        match framing {
            BodyFraming::Length(n) if n > limits.max_body_bytes => {
                Err(HeadError::BodyTooLarge { length: Some(n), limit: limits.max_body_bytes })
            }
            f => Ok(f),
        }
    }
}

/// One request framed off the wire: its head and decoded body.
#[derive(Debug)]
pub struct Framed {
    pub head: RequestHead,
    pub body: Vec<u8>,
}

/// Why [`frame_requests`] stopped before the end of its input.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameStop {
    /// The input ends inside a request (a connection would wait for more).
    Incomplete,
    /// The request is refused: the connection answers this error and closes.
    Refused(HeadError),
}

/// The requests framed before [`frame_requests`] stopped, and why it stopped.
#[derive(Debug)]
pub struct FrameError {
    pub framed: Vec<Framed>,
    pub stop: FrameStop,
}

/// Frames every request of `input` as one connection would, with the same steps (head, framing,
/// body) as the server's connection loop, without IO. A request that does not keep the connection
/// alive ends the framing: what follows it is never read.
pub fn frame_requests(input: &[u8], limits: &Limits) -> Result<Vec<Framed>, FrameError> {
    let mut framed = Vec::new();
    let mut at = 0;
    while at < input.len() {
        let stop = |framed, stop| Err(FrameError { framed, stop });
        let (head, len) = match parse_head(&input[at..], limits.max_head_bytes, limits.max_headers) {
            Ok(Some(h)) => h,
            Ok(None) => return stop(framed, FrameStop::Incomplete),
            Err(e) => return stop(framed, FrameStop::Refused(e)),
        };
        at += len;
        let body = match head.checked_framing(limits) {
            Err(e) => return stop(framed, FrameStop::Refused(e)),
            Ok(BodyFraming::None) => Vec::new(),
            Ok(BodyFraming::Length(n)) => {
                if ((input.len() - at) as u64) < n {
                    return stop(framed, FrameStop::Incomplete);
                }
                at += n as usize;
                input[at - n as usize..at].to_vec()
            }
            Ok(BodyFraming::Chunked) => {
                let mut body = Vec::new();
                match ChunkedDecoder::with_limit(limits.max_body_bytes).decode(&input[at..], &mut body) {
                    Err(e) => return stop(framed, FrameStop::Refused(HeadError::from_chunk(e, limits))),
                    Ok((_, false)) => return stop(framed, FrameStop::Incomplete),
                    Ok((used, true)) => {
                        at += used;
                        body
                    }
                }
            }
        };
        let keep_alive = head.keep_alive();
        framed.push(Framed { head, body });
        if !keep_alive {
            break;
        }
    }
    Ok(framed)
}

/// The reason phrase for the statuses the gateway sends itself.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

mod target;
use target::origin_form;
pub use target::valid_host;

#[cfg(test)]
mod tests;
