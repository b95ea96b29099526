//! HTTP/1.1 request heads and bodies, without IO: bytes in, values out.

use std::ops::Range;

/// A parsed request head. Header names and values are ranges into `raw`, so a head costs two
/// allocations however many headers it has.
#[derive(Debug)]
pub struct RequestHead {
    raw: Vec<u8>,
    method: Range<usize>,
    path: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Why a head was refused: each maps to a status, and the connection is closed after answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// 400: malformed request, conflicting or invalid framing, obs-fold.
    Malformed(&'static str),
    /// 414: the request line alone exceeds the head limit.
    UriTooLong,
    /// 431: too many headers or too many header bytes.
    HeadersTooLarge,
    /// 501: a transfer coding other than chunked.
    UnsupportedTransferEncoding,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::UriTooLong => 414,
            HeadError::HeadersTooLarge => 431,
            HeadError::UnsupportedTransferEncoding => 501,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HeadError::Malformed(m) => m,
            HeadError::UriTooLong => "request line too long",
            HeadError::HeadersTooLarge => "request headers too large",
            HeadError::UnsupportedTransferEncoding => "only the chunked transfer coding is supported",
        }
    }
}

/// Parses a head from the start of `buf`. `Ok(None)`: incomplete, read more (unless `buf` already holds
/// `max_head_bytes`, which is then an error). On success returns the head and its length in `buf`.
pub fn parse_head(
    buf: &[u8],
    max_head_bytes: usize,
    max_headers: usize,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut heap;
    let headers: &mut [httparse::Header] = if max_headers <= slots.len() {
        &mut slots[..max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(headers);
    let window = &buf[..buf.len().min(max_head_bytes)];
    let status = req.parse(window).map_err(|e| match e {
        httparse::Error::TooManyHeaders => HeadError::HeadersTooLarge,
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
        httparse::Error::HeaderName | httparse::Error::HeaderValue => {
            HeadError::Malformed("invalid header (obs-fold and control characters are refused)")
        }
        _ => HeadError::Malformed("malformed request"),
    })?;
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if window.len() >= max_head_bytes => {
            return Err(if memchr_newline(window) { HeadError::HeadersTooLarge } else { HeadError::UriTooLong });
        }
        httparse::Status::Partial => return Ok(None),
    };
    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = range(req.method.unwrap_or("").as_bytes());
    let path = range(req.path.unwrap_or("").as_bytes());
    let minor_version = req.version.unwrap_or(1);
    let headers = req.headers.iter().map(|h| (range(h.name.as_bytes()), range(h.value))).collect();
    Ok(Some((RequestHead { raw: buf[..len].to_vec(), method, path, minor_version, headers }, len)))
}

fn memchr_newline(b: &[u8]) -> bool {
    b.contains(&b'\n')
}

impl RequestHead {
    pub fn method(&self) -> &str {
        std::str::from_utf8(&self.raw[self.method.clone()]).unwrap_or("")
    }

    /// The request target, query string included.
    pub fn target(&self) -> &str {
        std::str::from_utf8(&self.raw[self.path.clone()]).unwrap_or("")
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (std::str::from_utf8(&self.raw[n.clone()]).unwrap_or(""), &self.raw[v.clone()]))
    }

    /// The first header with this name (case-insensitive), as text when it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next().and_then(|v| std::str::from_utf8(v).ok()).map(str::trim)
    }

    /// Values of the headers with this name, compared as bytes (no text conversion per header).
    fn header_values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.raw[v.clone()])
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
            let s = std::str::from_utf8(v).map_err(|_| HeadError::Malformed("invalid Content-Length"))?;
            for part in s.split(',') {
                let part = part.trim();
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
                _ => Err(HeadError::UnsupportedTransferEncoding),
            };
        }
        Ok(match length {
            Some(0) | None => BodyFraming::None,
            Some(n) => BodyFraming::Length(n),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_head(raw.as_bytes(), 64 * 1024, 100)
    }

    #[test]
    fn parses_method_path_and_headers() {
        let raw = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
        let (h, len) = head(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 5);
        assert_eq!(h.method(), "POST");
        assert_eq!(h.path(), "/v1/chat/completions");
        assert_eq!(h.header("x-a"), Some("b"));
        assert_eq!(h.body_framing().unwrap(), BodyFraming::Length(5));
        assert!(h.keep_alive());
    }

    #[test]
    fn incomplete_head_asks_for_more_until_the_limit() {
        assert!(head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let long_line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
        assert_eq!(parse_head(long_line.as_bytes(), 256, 100).unwrap_err(), HeadError::UriTooLong);
        let many = format!("GET / HTTP/1.1\r\n{}", "X-Y: z\r\n".repeat(60));
        assert_eq!(parse_head(many.as_bytes(), 256, 100).unwrap_err(), HeadError::HeadersTooLarge);
        let count = format!("GET / HTTP/1.1\r\n{}\r\n", "X-Y: z\r\n".repeat(11));
        assert_eq!(parse_head(count.as_bytes(), 4096, 10).unwrap_err(), HeadError::HeadersTooLarge);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let bad = [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ];
        for raw in bad {
            let (h, _) = head(raw).unwrap().unwrap();
            assert_eq!(h.body_framing().unwrap_err().status(), 400, "{raw}");
        }
        let (h, _) = head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.body_framing().unwrap_err().status(), 501);
        assert_eq!(head("GET / HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n").unwrap_err().status(), 400, "obs-fold");
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (h, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive());
        let (h, _) = head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive());
        let (h, _) = head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive());
    }
}
