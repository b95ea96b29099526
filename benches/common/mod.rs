//! Bench support: an in-process upstream and load generator on may coroutines, the gateway (and
//! optionally nginx) as child processes, and /proc readings. Loopback only; everything stops itself.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may::net::{TcpListener, TcpStream};

/// A 549-byte chat completion (the size of a short real answer).
pub const CHAT_REPLY: &[u8] = br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! Here is a short answer of the kind a chat model gives: a couple of sentences that explain a thing plainly, so that the response body has a realistic size for a proxy benchmark, neither tiny nor large. That is all, and it was a good question to ask, thanks."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":57,"total_tokens":66},"system_fingerprint":"fp_bench"}"#;

/// Sets may up for a bench process: 2 scheduler threads, a stack big enough for the client side.
pub fn init_may() {
    may::config().set_workers(2).set_stack_size(0x4000);
}

/// A minimal keep-alive upstream. A request whose body has `"stream":true` gets `x-bench-events` SSE
/// events (default 20), `x-bench-delay-ms` apart — or, with `x-bench-one-write: 1`, the whole stream
/// (head, events, `[DONE]`, end) in one write; any other gets a fixed chat completion.
pub fn start_upstream() -> SocketAddr {
    // Several SO_REUSEPORT listeners: a burst of thousands of connects overflows one accept queue.
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    let mut listeners = vec![first];
    for _ in 0..7 {
        listeners.push(TcpListener::bind(addr).unwrap());
    }
    for listener in listeners {
        may::go!(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                may::go!(move || upstream_connection(stream));
            }
        });
    }
    addr
}

fn upstream_connection(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::with_capacity(8192);
    loop {
        let Some(RequestHead { head_len, body_len, events, delay, one_write, provider }) =
            read_request_head(&mut s, &mut buf)
        else {
            return;
        };
        while buf.len() < head_len + body_len {
            if read_some(&mut s, &mut buf) == 0 {
                return;
            }
        }
        let body = &buf[head_len..head_len + body_len];
        let stream = body.windows(13).any(|w| w == b"\"stream\":true");
        buf.drain(..head_len + body_len);
        if let Some(reply) = provider_reply(provider) {
            if s.write_all(reply).is_err() {
                return;
            }
            continue;
        }
        if !stream {
            let mut out = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                CHAT_REPLY.len()
            )
            .into_bytes();
            out.extend_from_slice(CHAT_REPLY);
            if s.write_all(&out).is_err() {
                return;
            }
            continue;
        }
        if one_write {
            if s.write_all(&one_write_stream(events)).is_err() {
                return;
            }
            continue;
        }
        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            .is_err()
        {
            return;
        }
        for i in 0..events {
            if i > 0 && !delay.is_zero() {
                may::coroutine::sleep(delay);
            }
            let event = format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n");
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            if s.write_all(chunk.as_bytes()).is_err() {
                return;
            }
        }
        let done = "data: [DONE]\n\n";
        if s.write_all(format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len()).as_bytes()).is_err() {
            return;
        }
    }
}

/// The API a request to the bench upstream speaks, by its path.
#[derive(Clone, Copy)]
enum Provider {
    OpenAi,
    /// Bedrock Converse (`/model/{id}/converse`).
    Converse,
    /// Bedrock ConverseStream (`/model/{id}/converse-stream`): an AWS event stream.
    ConverseStream,
    /// Gemini `:generateContent`.
    Gemini,
    /// Gemini `:streamGenerateContent?alt=sse`.
    GeminiStream,
}

impl Provider {
    fn of_path(path: &str) -> Provider {
        if path.ends_with("/converse") {
            Provider::Converse
        } else if path.ends_with("/converse-stream") {
            Provider::ConverseStream
        } else if path.contains(":streamGenerateContent") {
            Provider::GeminiStream
        } else if path.contains(":generateContent") {
            Provider::Gemini
        } else {
            Provider::OpenAi
        }
    }
}

/// The bench upstream's answer in a provider's own schema (`None` for OpenAI's, which the connection
/// loop writes): the chat answer's text and usage as a Bedrock Converse or a Gemini response, or as a
/// stream of 12 pieces of text in one write: a Gemini stream (SSE), or a Bedrock ConverseStream (an AWS
/// event stream: `messageStart`, 12 `contentBlockDelta`, `contentBlockStop`, `messageStop`,
/// `metadata`). Each is built once.
fn provider_reply(provider: Provider) -> Option<&'static [u8]> {
    static REPLIES: std::sync::OnceLock<[Vec<u8>; 4]> = std::sync::OnceLock::new();
    let replies = REPLIES.get_or_init(|| {
        let chat: serde_json::Value = serde_json::from_slice(CHAT_REPLY).unwrap();
        let text = &chat["choices"][0]["message"]["content"];
        let whole = |body: serde_json::Value| {
            let body = body.to_string();
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                .into_bytes()
        };
        let converse = whole(serde_json::json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 9, "outputTokens": 57, "totalTokens": 66}, "metrics": {"latencyMs": 120}}));
        let gemini = whole(serde_json::json!({
            "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 57, "totalTokenCount": 66},
            "modelVersion": "gemini-bench", "responseId": "bench"}));
        let mut events = String::new();
        for i in 0..12 {
            let mut chunk = serde_json::json!({
                "candidates": [{"content": {"parts": [{"text": format!("token {i:02} of the answer ")}], "role": "model"}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": i + 1, "totalTokenCount": i + 10},
                "modelVersion": "gemini-bench"});
            if i == 11 {
                chunk["candidates"][0]["finishReason"] = "STOP".into();
            }
            events.push_str(&format!("data: {chunk}\r\n\r\n"));
        }
        let stream = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{events}\r\n0\r\n\r\n",
            events.len()
        )
        .into_bytes();
        [converse, gemini, stream, converse_stream()]
    });
    match provider {
        Provider::OpenAi => None,
        Provider::Converse => Some(&replies[0]),
        Provider::Gemini => Some(&replies[1]),
        Provider::GeminiStream => Some(&replies[2]),
        Provider::ConverseStream => Some(&replies[3]),
    }
}

/// A Bedrock ConverseStream answer of 12 pieces of text, its events in one chunk.
fn converse_stream() -> Vec<u8> {
    use switchyard::eventstream::{encode, HeaderValue};
    let event = |kind: &str, payload: serde_json::Value| {
        let headers = [
            (":event-type", HeaderValue::String(kind.into())),
            (":content-type", HeaderValue::String("application/json".into())),
            (":message-type", HeaderValue::String("event".into())),
        ];
        encode(&headers, payload.to_string().as_bytes())
    };
    let mut body = event("messageStart", serde_json::json!({"role": "assistant"}));
    for i in 0..12 {
        let delta =
            serde_json::json!({"contentBlockIndex": 0, "delta": {"text": format!("token {i:02} of the answer ")}});
        body.extend(event("contentBlockDelta", delta));
    }
    body.extend(event("contentBlockStop", serde_json::json!({"contentBlockIndex": 0})));
    body.extend(event("messageStop", serde_json::json!({"stopReason": "end_turn"})));
    let usage = serde_json::json!({"usage": {"inputTokens": 9, "outputTokens": 57, "totalTokens": 66}, "metrics": {"latencyMs": 120}});
    body.extend(event("metadata", usage));
    let mut out = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend(body);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

/// A whole SSE response: `events - 1` content events and `[DONE]` in one chunk (12 events: 2,709 bytes
/// of events).
pub fn one_write_stream(events: usize) -> Vec<u8> {
    let mut body = String::new();
    for i in 0..events.saturating_sub(1) {
        body.push_str(&format!("data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token {i:02} of the answer, in the words that a model streams to its user\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    )
    .into_bytes()
}

// Why this coroutine's last read ended a response early (end of stream, or the error), for
// `note_failed_request`. Per coroutine, not per thread: the upstream's coroutines read on the same
// threads as the load's, and their connections' ends would otherwise be reported as a client's.
may::coroutine_local!(static READ_ENDED: std::cell::RefCell<String> = std::cell::RefCell::new(String::new()));

/// Why this coroutine's last read ended a response early (empty when none did), and forgets it.
pub fn read_ended() -> String {
    READ_ENDED.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

fn read_some(s: &mut (impl Read + ?Sized), buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 16384];
    let (n, ended) = match s.read(&mut chunk) {
        Ok(0) => (0, "the connection closed".to_string()),
        Ok(n) => (n, String::new()),
        Err(e) => (0, format!("read error: {e}")),
    };
    buf.extend_from_slice(&chunk[..n]);
    if n == 0 {
        READ_ENDED.with(|r| *r.borrow_mut() = ended);
    }
    n
}

/// What the bench upstream reads from a request's head.
struct RequestHead {
    head_len: usize,
    body_len: usize,
    /// `x-bench-events`: how many SSE events a stream has (default 20).
    events: usize,
    /// `x-bench-delay-ms`: the time between them.
    delay: Duration,
    /// `x-bench-one-write: 1`: the whole stream in one write.
    one_write: bool,
    /// The API it speaks, by its path.
    provider: Provider,
}

/// The head of the request at the start of `buf`.
fn read_request_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<RequestHead> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
            let find = |name: &str| {
                req.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
            };
            return Some(RequestHead {
                head_len: len,
                body_len: find("content-length").unwrap_or(0),
                events: find("x-bench-events").unwrap_or(20),
                delay: Duration::from_millis(find("x-bench-delay-ms").unwrap_or(0) as u64),
                one_write: find("x-bench-one-write") == Some(1),
                provider: Provider::of_path(req.path.unwrap_or("")),
            });
        }
        if read_some(s, buf) == 0 {
            return None;
        }
    }
}

/// A chat request of about `body_bytes` bytes (the user message is padded).
pub fn chat_request(model: &str, body_bytes: usize, stream: bool, extra: &str) -> Vec<u8> {
    let pad = "x".repeat(body_bytes.saturating_sub(120));
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"Say hello. {pad}"}}],"stream":{stream},"max_tokens":16}}"#
    );
    format!("POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\nauthorization: Bearer bench\r\n{extra}content-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// An Anthropic client's `/v1/messages` request for `model`, plain or streamed.
pub fn messages_request(model: &str, stream: bool) -> Vec<u8> {
    let body = format!(
        r#"{{"model":"{model}","max_tokens":16,"messages":[{{"role":"user","content":"Say hello."}}],"stream":{stream}}}"#
    );
    format!("POST /v1/messages HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\nx-api-key: bench\r\nanthropic-version: 2023-06-01\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

/// Reads one response; returns its status and, for chunked bodies, the time the first body chunk came.
pub fn read_response(s: &mut (impl Read + ?Sized), buf: &mut Vec<u8>) -> Option<(u16, Option<Instant>)> {
    let (status, head_len, length, chunked) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = resp.parse(buf) {
            let find = |name: &str| resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
            let length = find("content-length").and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
            let chunked = find("transfer-encoding").is_some();
            break (resp.code.unwrap_or(0), len, length, chunked);
        }
        if read_some(s, buf) == 0 {
            return None;
        }
    };
    buf.drain(..head_len);
    if let Some(n) = length {
        while buf.len() < n {
            if read_some(s, buf) == 0 {
                return None;
            }
        }
        if status >= 500 {
            eprintln!("error body: {}", String::from_utf8_lossy(&buf[..n]));
        }
        buf.drain(..n);
        return Some((status, None));
    }
    if !chunked {
        return None;
    }
    let mut first = None;
    loop {
        // size line
        let line_end = loop {
            if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                break p;
            }
            if read_some(s, buf) == 0 {
                return None;
            }
        };
        let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).ok()?.trim(), 16).ok()?;
        while buf.len() < line_end + 2 + size + 2 {
            if read_some(s, buf) == 0 {
                return None;
            }
        }
        if size > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        buf.drain(..line_end + 2 + size + 2);
        if size == 0 {
            return Some((status, first));
        }
    }
}

/// What a closed-loop run measured.
#[derive(Debug, Default, Clone)]
pub struct Run {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latencies in microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl Run {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    pub fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// A connection to `addr` for a load coroutine, made by a blocking connect (on loopback it completes at
/// once) and then handed to may. Not may's connect: a load coroutine may move between the two
/// schedulers while it waits there, and its first read then failed, about once in millions of requests,
/// with the connect's `EINPROGRESS` read from the other thread's errno (`src/connect.rs`).
pub fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let std_stream = std::net::TcpStream::connect(addr)?;
    // SAFETY: a connected socket that nothing else owns; may registers it.
    Ok(unsafe { TcpStream::from_raw_fd(std_stream.into_raw_fd()) })
}

/// `conns` keep-alive connections, each sending `request` again as soon as the last answer is in,
/// for `duration` after a short warm-up; paced instead when BENCH_RATE is set ([`paced_rate`]).
pub fn closed_loop(addr: SocketAddr, conns: usize, duration: Duration, request: Arc<Vec<u8>>) -> Run {
    let connect = move || {
        let s = connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(s)
    };
    match paced_rate() {
        None => closed_loop_over(conns, duration, request, false, connect),
        Some(rate) => paced_loop(conns, duration, request, rate, connect),
    }
}

/// BENCH_RATE: requests per second over all connections, each connection sending at its share of that
/// rate (its requests evenly spaced, the connections staggered) instead of as soon as its last answer is
/// in; `None` without it. At a rate every proxy sustains, the latencies compare the proxies at the same
/// load, where a closed loop compares them at each one's own throughput.
pub fn paced_rate() -> Option<f64> {
    std::env::var("BENCH_RATE").ok().and_then(|v| v.parse().ok()).filter(|r: &f64| *r > 0.0)
}

/// When and how far apart one connection sends, paced.
struct Pace {
    next: Instant,
    every: Duration,
}

/// [`closed_loop`] paced to `rate`. Each connection is made first and its coroutine started on its
/// socket's worker, where it sleeps between requests with the gateway's own sleep
/// (`switchyard::affinity::sleep`): with may's sleep, the coroutines moved between the two schedulers,
/// and the bench crashed (heap corruption) within seconds (see `src/affinity.rs`).
fn paced_loop(
    conns: usize,
    duration: Duration,
    request: Arc<Vec<u8>>,
    rate: f64,
    connect: impl Fn() -> std::io::Result<TcpStream> + Send + Sync + 'static,
) -> Run {
    use std::os::fd::AsRawFd;
    switchyard::affinity::set_workers(may::config().get_workers());
    let every = Duration::from_secs_f64(conns as f64 / rate);
    let connect = Arc::new(connect);
    let results = Arc::new(Mutex::new(Run::default()));
    let (measure_from, end) = measuring_window(duration);
    let handles: Vec<_> = (0..conns)
        .filter_map(|i| {
            let stream = connect().map_err(|e| note_connect_error(&e)).ok()?;
            let fd = stream.as_raw_fd();
            let pace = Pace { next: Instant::now() + every.mul_f64(i as f64 / conns as f64), every };
            let (request, results, connect) = (request.clone(), results.clone(), connect.clone());
            let builder = may::coroutine::Builder::new().id(switchyard::affinity::of_fd(fd));
            // SAFETY: the coroutine owns everything it uses.
            let spawned = unsafe {
                builder.spawn(move || {
                    switchyard::affinity::set_home(fd);
                    connection_load(Some(stream), &request, false, &*connect, Some(pace), (measure_from, end), &results)
                })
            };
            spawned.ok()
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    finished(&results, duration)
}

/// [`closed_loop`] over connections `connect` makes (TLS ones, say), one coroutine each; with
/// `reconnect`, every request on a new connection (its connect counted in its latency).
pub fn closed_loop_over<S: Read + Write>(
    conns: usize,
    duration: Duration,
    request: Arc<Vec<u8>>,
    reconnect: bool,
    connect: impl Fn() -> std::io::Result<S> + Send + Sync + 'static,
) -> Run {
    let window = measuring_window(duration);
    let results = Arc::new(Mutex::new(Run::default()));
    let connect = Arc::new(connect);
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            let (request, results, connect) = (request.clone(), results.clone(), connect.clone());
            may::go!(move || connection_load(None, &request, reconnect, &*connect, None, window, &results))
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    finished(&results, duration)
}

/// When a run's requests count (after a 500 ms warm-up) and when it ends.
fn measuring_window(duration: Duration) -> (Instant, Instant) {
    let measure_from = Instant::now() + Duration::from_millis(500);
    (measure_from, measure_from + duration)
}

/// The run the connections added up, its latencies sorted.
fn finished(results: &Mutex<Run>, duration: Duration) -> Run {
    let mut run = std::mem::take(&mut *results.lock().unwrap());
    run.seconds = duration.as_secs_f64();
    run.latencies_us.sort_unstable();
    run
}

/// One connection's load: `request` again and again until the window ends, as soon as the last answer
/// is in or at `pace`; adds what it measured to `results`.
fn connection_load<S: Read + Write>(
    mut stream: Option<S>,
    request: &[u8],
    reconnect: bool,
    connect: &dyn Fn() -> std::io::Result<S>,
    mut pace: Option<Pace>,
    (measure_from, end): (Instant, Instant),
    results: &Mutex<Run>,
) {
    let mut local = Run::default();
    let mut buf = Vec::with_capacity(8192);
    loop {
        if let Some(p) = pace.as_mut() {
            let now = Instant::now();
            if p.next > now {
                switchyard::affinity::sleep(p.next - now);
            } else {
                p.next = now; // behind: the next request now, no burst to catch up
            }
            p.next += p.every;
        }
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        if stream.is_none() || reconnect {
            buf.clear();
            stream = match connect() {
                Ok(s) => Some(s),
                Err(e) => {
                    note_connect_error(&e);
                    None
                }
            };
        }
        let Some(s) = stream.as_mut() else {
            local.errors += 1;
            break;
        };
        let answer = match s.write_all(request) {
            Ok(()) => read_response(s, &mut buf),
            Err(_) => None,
        };
        match answer {
            Some((200, _)) if t0 >= measure_from => {
                local.requests += 1;
                local.latencies_us.push(t0.elapsed().as_micros() as u32);
            }
            Some((200, _)) => {}
            failed => {
                // Counted, and the load goes on over a new connection: one failure must
                // not leave the rest of the round one connection short.
                note_failed_request(failed.map(|(status, _)| status), t0.elapsed(), &buf);
                local.errors += 1;
                stream = None;
            }
        }
    }
    let mut r = results.lock().unwrap();
    r.requests += local.requests;
    r.errors += local.errors;
    r.latencies_us.extend(local.latencies_us);
}

/// Prints the first failure to connect (errors are counted; this says why).
fn note_connect_error(e: &std::io::Error) {
    static SEEN: AtomicBool = AtomicBool::new(false);
    if !SEEN.swap(true, Ordering::Relaxed) {
        eprintln!("cannot connect: {e}");
    }
}

/// Prints the first failed request (errors are counted; this says what they were): its status, or why
/// there was no whole answer (the connection closed, a read error, or an answer that did not parse),
/// after how long, and the start of what had come.
fn note_failed_request(status: Option<u16>, after: Duration, received: &[u8]) {
    static SEEN: AtomicBool = AtomicBool::new(false);
    let ended = read_ended();
    if SEEN.swap(true, Ordering::Relaxed) {
        return;
    }
    match status {
        Some(status) => eprintln!("a request failed: status {status}"),
        None => eprintln!("a request failed {}", cut_short(ended, after, received)),
    }
}

/// Why an answer was cut short, from `ended` ([`read_ended`]: why the last read ended; empty when none
/// did, so the answer did not parse), after how long, and the end of what had come.
pub fn cut_short(ended: String, after: Duration, received: &[u8]) -> String {
    let why = if ended.is_empty() { "the request was not written, or the answer did not parse".into() } else { ended };
    let end = String::from_utf8_lossy(&received[received.len().saturating_sub(200)..]);
    format!("after {after:?}: {why}; {} bytes of the answer had come, ending {end:?}", received.len())
}

/// A run and the CPU the server (and, for nginx, its workers) used per request in it.
pub struct Measured {
    pub run: Run,
    pub cpu_us: f64,
}

/// Runs `load` and measures the CPU process `pid` (with `tree`, its children too: nginx's workers)
/// used per request.
pub fn measured(pid: u32, tree: bool, load: impl FnOnce() -> Run) -> Measured {
    let cpu = |pid| if tree { cpu_seconds_tree(pid) } else { cpu_seconds(pid) };
    let before = cpu(pid);
    let run = load();
    let cpu_us = (cpu(pid) - before) / (run.requests.max(1) as f64) * 1e6;
    Measured { run, cpu_us }
}

/// The round with the median throughput.
pub fn median(rounds: &[Measured]) -> &Measured {
    let mut order: Vec<&Measured> = rounds.iter().collect();
    order.sort_by(|a, b| a.run.rps().total_cmp(&b.run.rps()));
    order[order.len() / 2]
}

/// The latency tail over every round: each round's p99 (lowest first), and the p99, the p99.9 and the
/// share of requests over 4 ms of all the rounds' requests together. A closed loop's tail is set by
/// which thread the scheduler preempts, and moves by milliseconds from round to round: one round's p99
/// says little on its own.
pub fn tail(rounds: &[Measured]) -> String {
    let mut by_round: Vec<f64> = rounds.iter().map(|m| m.run.pct(0.99)).collect();
    by_round.sort_by(f64::total_cmp);
    let mut all = Run::default();
    for m in rounds {
        all.latencies_us.extend_from_slice(&m.run.latencies_us);
    }
    all.latencies_us.sort_unstable();
    let over = all.latencies_us.iter().filter(|&&us| us > 4000).count() as f64;
    format!(
        "p99 by round {}; all rounds: p99 {:.2}, p99.9 {:.2} ms, {:.1}% over 4 ms",
        by_round.iter().map(|p| format!("{p:.2}")).collect::<Vec<_>>().join(" "),
        all.pct(0.99),
        all.pct(0.999),
        over / all.latencies_us.len().max(1) as f64 * 100.0
    )
}

/// Failed requests over every round: a table shows the median round's figures, but a failure in any
/// round is reported.
pub fn total_errors(rounds: &[Measured]) -> u64 {
    rounds.iter().map(|m| m.run.errors).sum()
}

// ---- Child processes ----

pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first, so that nginx's master stops its workers (a SIGKILLed master leaves them running)
        // and the gateway drains; SIGKILL after 3 s.
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let started = std::time::Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) && started.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn scratch(tag: &str) -> std::path::PathBuf {
    // Several gateways may run at once: each needs its own directory (its config file is watched).
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("switchyard-bench-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn wait_listening(addr: SocketAddr) {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10), "{addr} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The gateway binary under test: `BENCH_BINARY` when set (e.g. the static `dist` build), else the one
/// cargo built for this bench.
pub fn gateway_binary() -> String {
    std::env::var("BENCH_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchyard").to_string())
}

/// A numeric setting from the environment (BENCH_SECONDS, BENCH_ROUNDS…), `default` when unset or not a
/// number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// BENCH_GATEWAY_CONFIG: JSON merged into the gateways' config (e.g. `{"workers": 1}`); `{}` without it.
pub fn gateway_config_from_env() -> serde_json::Value {
    std::env::var("BENCH_GATEWAY_CONFIG")
        .map(|s| serde_json::from_str(&s).expect("BENCH_GATEWAY_CONFIG is JSON"))
        .unwrap_or_else(|_| serde_json::json!({}))
}

/// The gateway ([`gateway_binary`]) with one OpenAI-compatible backend (`bench`) pointing at
/// `upstream`, plus any extra top-level config.
pub fn start_gateway(upstream: SocketAddr, extra: serde_json::Value) -> Proc {
    start_gateway_binary(&gateway_binary(), upstream, extra)
}

/// [`start_gateway`] with the binary at `binary`.
pub fn start_gateway_binary(binary: &str, upstream: SocketAddr, extra: serde_json::Value) -> Proc {
    let dir = scratch("gw");
    let port = free_port();
    let path = write_gateway_config(&dir, upstream, port, extra);
    let child = Command::new(binary)
        .arg("--config")
        .arg(&path)
        .env("SWITCHYARD_LOG", std::env::var("BENCH_GATEWAY_LOG").unwrap_or("error".into()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the gateway");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr);
    Proc { child, addr, _dir: dir }
}

/// The benches' backends, each with a route in [`write_gateway_config`]: `up` (OpenAI-compatible) at
/// `upstream`, the mock `demo` with chunks `mock_chunk_delay_ms` apart, and `bedrock` and `gemini` at
/// `upstream` too. A bench that changes one gives all of them (config keys replace, not merge).
pub fn bench_backends(upstream: SocketAddr, mock_chunk_delay_ms: u64) -> serde_json::Value {
    serde_json::json!([
        {"name": "up", "schema": "openai", "base_url": format!("http://{upstream}/v1")},
        {"name": "demo", "schema": "mock", "mock_chunk_delay_ms": mock_chunk_delay_ms},
        {"name": "bedrock", "schema": "bedrock", "region": "us-east-1", "base_url": format!("http://{upstream}"),
         "auth": {"type": "aws", "access_key_id": "AKIDBENCH", "secret_access_key": "bench-secret"}},
        {"name": "gemini", "schema": "gemini", "base_url": format!("http://{upstream}"),
         "auth": {"type": "header", "key": "bench"}}
    ])
}

/// Writes the benches' gateway config into `dir`: listening on `port`, two workers, one
/// OpenAI-compatible backend (`bench`) at `upstream`, the mock (`demo`), and Bedrock Converse
/// (`bench-bedrock`) and Gemini (`bench-gemini`) backends at `upstream` too, plus any extra top-level
/// config (which replaces what it names). Returns its path.
pub fn write_gateway_config(
    dir: &std::path::Path,
    upstream: SocketAddr,
    port: u16,
    extra: serde_json::Value,
) -> std::path::PathBuf {
    let mut cfg = serde_json::json!({
        "listen": format!("127.0.0.1:{port}"),
        "workers": 2,
        "backends": bench_backends(upstream, 0),
        "routes": [{"model": "bench", "backends": [{"backend": "up"}]},
                   {"model": "demo", "backends": [{"backend": "demo"}]},
                   {"model": "bench-bedrock", "backends": [{"backend": "bedrock", "model": "amazon.nova-lite-v1:0"}]},
                   {"model": "bench-gemini", "backends": [{"backend": "gemini", "model": "gemini-2.0-flash"}]}]
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

/// The installed nginx binary, if any.
pub fn nginx_binary() -> Option<&'static str> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().find(|p| std::path::Path::new(p).exists())
}

/// Writes an nginx config into `dir`: `processes` (its worker and master directives), `proxy_pass` on
/// `port` to `upstream` with upstream keep-alive. Returns its path.
pub fn write_nginx_config(
    dir: &std::path::Path,
    upstream: SocketAddr,
    port: u16,
    processes: &str,
    listen_extra: &str,
) -> std::path::PathBuf {
    let conf = format!(
        "{processes}\ndaemon off;\nerror_log {d}/error.log error;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; client_body_buffer_size 1m;\n\
           keepalive_requests 10000000; upstream up {{ server {upstream}; keepalive 128; keepalive_requests 10000000; }}\n\
           server {{ listen 127.0.0.1:{port}{listen_extra}; location / {{ proxy_pass http://up; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_buffering off; }} }} }}\n",
        d = dir.display()
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// nginx `proxy_pass` to `upstream` with upstream keep-alive, when nginx is installed and not left out
/// (`BENCH_NO_NGINX=1`).
pub fn start_nginx(upstream: SocketAddr) -> Option<Proc> {
    start_nginx_with(upstream, "")
}

/// nginx terminating TLS (TLS 1.2 and 1.3) with the PEM pair `cert`, `key`, then as [`start_nginx`].
pub fn start_nginx_tls(upstream: SocketAddr, cert: &str, key: &str) -> Option<Proc> {
    start_nginx_with(
        upstream,
        &format!(" ssl; ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3"),
    )
}

/// [`start_nginx`] with `listen_extra` after the listen address (`" ssl; ssl_certificate …"`).
fn start_nginx_with(upstream: SocketAddr, listen_extra: &str) -> Option<Proc> {
    if std::env::var("BENCH_NO_NGINX").is_ok_and(|v| v == "1") {
        return None;
    }
    let nginx = nginx_binary()?;
    let dir = scratch("nginx");
    let port = free_port();
    let path = write_nginx_config(&dir, upstream, port, "worker_processes 2;", listen_extra);
    spawn_nginx(nginx, &path, dir, port)
}

/// nginx run with the config at `path` (its prefix `dir`, removed when the process is dropped), once it
/// listens on `port`.
pub fn spawn_nginx(nginx: &str, path: &std::path::Path, dir: std::path::PathBuf, port: u16) -> Option<Proc> {
    let child = Command::new(nginx)
        .arg("-c")
        .arg(path)
        .arg("-p")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_listening(addr);
    Some(Proc { child, addr, _dir: dir })
}

// ---- /proc ----

/// This process's nice value.
pub fn own_nice() -> i64 {
    // Field 19 of /proc/self/stat (after the parenthesised command name).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(16)?.parse().ok()).unwrap_or(0)
}

/// Every thread of `pid` and of its children.
fn threads_of_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        pids.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    pids.into_iter()
        .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/task")).ok())
        .flat_map(|tasks| tasks.flatten().filter_map(|t| t.file_name().to_string_lossy().parse().ok()))
        .collect()
}

/// Renices every thread of `pid` and of its children to `nice`.
pub fn same_priority(pid: u32, nice: i64) {
    for tid in threads_of_tree(pid) {
        let _ = std::process::Command::new("renice")
            .args(["-n", &nice.to_string(), "-p", &tid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Every thread of some processes (and of their children) held to one CPU; dropping it gives each
/// thread back the CPU set it had (may pins each of its workers to a core of its own).
pub struct CpuConfinement {
    saved: Vec<(libc::pid_t, libc::cpu_set_t)>,
}

/// Holds every thread of `pids` and of their children to `cpu`.
pub fn confine(pids: &[u32], cpu: usize) -> CpuConfinement {
    let mut saved = Vec::new();
    for tid in pids.iter().flat_map(|&p| threads_of_tree(p)) {
        let tid = tid as libc::pid_t;
        // SAFETY: plain data in and out of the kernel; a thread that ended meanwhile is an error, skipped.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut old) != 0 {
                continue;
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &one) == 0 {
                saved.push((tid, old));
            }
        }
    }
    CpuConfinement { saved }
}

impl Drop for CpuConfinement {
    fn drop(&mut self) {
        for (tid, set) in &self.saved {
            // SAFETY: as above.
            unsafe { libc::sched_setaffinity(*tid, std::mem::size_of::<libc::cpu_set_t>(), set) };
        }
    }
}

/// CPU seconds (user + system) a process and its threads have used.
pub fn cpu_seconds(pid: u32) -> f64 {
    // The scheduler's nanosecond count for each live thread: /proc/<pid>/stat counts 10 ms ticks, too
    // coarse for a few hundred requests. (A thread that has exited is no longer counted; the gateway's
    // and nginx's threads live as long as their process.)
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// CPU seconds of a process and all its children (nginx's workers).
pub fn cpu_seconds_tree(pid: u32) -> f64 {
    let mut total = cpu_seconds(pid);
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            total += cpu_seconds(c);
        }
    }
    total
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM) or as a count (Threads).
pub fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Samples a process's RSS every 50 ms until stopped; returns the peak in KiB.
pub fn rss_sampler(pid: u32) -> (Arc<AtomicBool>, Arc<AtomicU64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let (s, p) = (stop.clone(), peak.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            p.fetch_max(status_field(pid, "VmRSS:"), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (stop, peak)
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    format!("{} cores, {cpu}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0))
}
