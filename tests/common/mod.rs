//! Test support: a scripted fake upstream, the real gateway binary started on port 0, and a tiny
//! HTTP/1.1 client over real sockets.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Fake upstream
// ---------------------------------------------------------------------------------------------

/// A request as the fake upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream got JSON")
    }
}

/// An OpenAI-compatible fake, scripted per request by headers the gateway forwards:
/// - `x-fake-status`: status code (default 200)
/// - `x-fake-mode`: `json` (default), `sse`, `garbage`, `stall`, `reset-mid-stream`, `close`, `raw`
/// - `x-fake-events`: number of SSE events (default 3); `x-fake-delay-ms`: pause between writes
/// - `x-fake-split`: write the SSE payload in pieces of this many bytes
/// - `x-fake-body`: for `raw`, the exact body to send (JSON or not)
/// - `x-fake-then-close`: close the connection after answering (without saying so)
/// - `x-fake-head-delay-ms`: wait this long before answering at all
/// - `x-fake-response-header`: `name=value`, a header added to a `json`/`raw`/`garbage` answer
///
/// It records every request and counts open and closed connections.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Connections whose peer closed (read returned 0 or failed) while the fake was writing/stalling.
    pub peer_closed: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
}

impl FakeUpstream {
    pub fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let peer_closed = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (r, p, c) = (received.clone(), peer_closed.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, p) = (r.clone(), p.clone());
                thread::spawn(move || fake_connection(stream, &r, &p));
            }
        });
        FakeUpstream { addr, received, peer_closed, connections }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.requests().pop().expect("the upstream received a request")
    }
}

/// The SSE payload the fake streams for `events` content chunks.
pub fn sse_payload(events: usize, with_done: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..events {
        let chunk = serde_json::json!({
            "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
            "choices": [{"index": 0, "delta": {"content": format!("tok{i} é✓ ")}, "finish_reason": null}]
        });
        out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
    }
    let last = serde_json::json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    });
    out.extend_from_slice(format!("data: {last}\n\n").as_bytes());
    if with_done {
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
    out
}

/// An Anthropic `message`: text, or a `tool_use` of `tool` when the request offered tools.
pub fn anthropic_message(model: &str, tool: Option<&str>) -> Vec<u8> {
    let (content, stop) = match tool {
        Some(name) => (
            serde_json::json!([{"type": "text", "text": "Let me check."},
                                          {"type": "tool_use", "id": "toolu_01", "name": name, "input": {"location": "Paris"}}]),
            "tool_use",
        ),
        None => (serde_json::json!([{"type": "text", "text": "Bonjour from fake Claude"}]), "end_turn"),
    };
    serde_json::to_vec(&serde_json::json!({
        "id": "msg_fake01", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": stop, "stop_sequence": null,
        "usage": {"input_tokens": 11, "output_tokens": 7, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 0}
    }))
    .unwrap()
}

/// An Anthropic event stream: text deltas, or a tool_use with input_json_delta fragments.
pub fn anthropic_stream(model: &str, tool: Option<&str>) -> Vec<u8> {
    let mut events: Vec<(&str, serde_json::Value)> = vec![
        (
            "message_start",
            serde_json::json!({"type": "message_start", "message": {"id": "msg_fake02", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 11, "output_tokens": 1, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}}),
        ),
        (
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", serde_json::json!({"type": "ping"})),
        (
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bonjour "}}),
        ),
        (
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "from fake Claude"}}),
        ),
        ("content_block_stop", serde_json::json!({"type": "content_block_stop", "index": 0})),
    ];
    let stop = if let Some(name) = tool {
        events.push((
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_02", "name": name, "input": {}}}),
        ));
        events.push(("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"location\": "}})));
        events.push(("content_block_delta", serde_json::json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}})));
        events.push(("content_block_stop", serde_json::json!({"type": "content_block_stop", "index": 1})));
        "tool_use"
    } else {
        "end_turn"
    };
    events.push(("message_delta", serde_json::json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": 9}})));
    events.push(("message_stop", serde_json::json!({"type": "message_stop"})));
    events.iter().flat_map(|(e, d)| format!("event: {e}\ndata: {d}\n\n").into_bytes()).collect()
}

/// An OpenAI chat completion that calls `tool`.
pub fn openai_tool_message(model: &str, tool: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "id": "chatcmpl-tool", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": tool, "arguments": "{\"location\": \"Paris\"}"}}]},
            "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
    }))
    .unwrap()
}

/// An OpenAI chunk stream with text, then a tool call in two argument fragments, then usage.
pub fn openai_tool_stream(model: &str, tool: &str) -> Vec<u8> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        serde_json::json!({"id": "chatcmpl-ts", "object": "chat.completion.chunk",
        "created": 1, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let events = [
        chunk(serde_json::json!({"role": "assistant", "content": "Checking"}), serde_json::Value::Null),
        chunk(
            serde_json::json!({"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": tool, "arguments": ""}}]}),
            serde_json::Value::Null,
        ),
        chunk(
            serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
            serde_json::Value::Null,
        ),
        chunk(
            serde_json::json!({"tool_calls": [{"index": 0, "function": {"arguments": " \"Paris\"}"}}]}),
            serde_json::Value::Null,
        ),
        chunk(serde_json::json!({}), serde_json::json!("tool_calls")),
        serde_json::json!({"id": "chatcmpl-ts", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
                           "usage": {"prompt_tokens": 20, "completion_tokens": 6, "total_tokens": 26}}),
    ];
    let mut out: Vec<u8> = events.iter().flat_map(|e| format!("data: {e}\n\n").into_bytes()).collect();
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// The usage-only chunk an OpenAI server sends last when `stream_options.include_usage` is set.
pub fn usage_chunk(events: usize) -> Vec<u8> {
    let usage = serde_json::json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
        "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": events, "total_tokens": 5 + events}});
    format!("data: {usage}\n\n").into_bytes()
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        body.resize(len.parse().ok()?, 0);
        reader.read_exact(&mut body).ok()?;
    } else if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some(Received { method, path, headers, body })
}

fn fake_connection(stream: TcpStream, received: &Mutex<Vec<Received>>, peer_closed: &AtomicUsize) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    // `x-fake-refuse-body: 1`: answer 413 as soon as the head is in, without reading the body, and close
    // (what servers with body limits do).
    let mut peek = [0u8; 4096];
    if let Ok(n) = out.peek(&mut peek) {
        let head = String::from_utf8_lossy(&peek[..n]).to_ascii_lowercase();
        if head.contains("\r\nx-fake-refuse-body: 1\r\n") && head.contains("\r\n\r\n") {
            let body = br#"{"error":{"message":"request too large for this upstream","type":"invalid_request_error"}}"#;
            let _ = write!(out, "HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
            let _ = out.write_all(body);
            let _ = out.shutdown(Shutdown::Write);
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
    }
    while let Some(req) = read_request(&mut reader) {
        received.lock().unwrap().push(req.clone());
        let h = |name: &str| req.headers.get(name).cloned();
        let status: u16 = h("x-fake-status").and_then(|s| s.parse().ok()).unwrap_or(200);
        let mode = h("x-fake-mode").unwrap_or_else(|| "json".into());
        let events: usize = h("x-fake-events").and_then(|s| s.parse().ok()).unwrap_or(3);
        let delay = Duration::from_millis(h("x-fake-delay-ms").and_then(|s| s.parse().ok()).unwrap_or(0));
        let split: usize = h("x-fake-split").and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
        let model = serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| v["model"].as_str().map(str::to_string))
            .unwrap_or_default();
        let anthropic = req.path.starts_with("/v1/messages");
        let tool = serde_json::from_slice::<serde_json::Value>(&req.body).ok().and_then(|v| {
            v["tools"][0]
                .get("name")
                .or_else(|| v["tools"][0]["function"].get("name"))
                .and_then(|n| n.as_str().map(str::to_string))
        });
        if req.path == "/v1/messages/count_tokens" && mode == "json" {
            let body = br#"{"input_tokens":42}"#;
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
            if out.write_all(head.as_bytes()).and_then(|_| out.write_all(body)).is_err() {
                return;
            }
            continue;
        }
        if (anthropic || tool.is_some()) && (mode == "json" || mode == "sse") {
            let wants_stream = mode == "sse"
                || serde_json::from_slice::<serde_json::Value>(&req.body).is_ok_and(|v| v["stream"] == true);
            let (ctype, body) = match (anthropic, wants_stream) {
                (true, false) => ("application/json", anthropic_message(&model, tool.as_deref())),
                (true, true) => ("text/event-stream", anthropic_stream(&model, tool.as_deref())),
                (false, false) => ("application/json", openai_tool_message(&model, tool.as_deref().unwrap_or("f"))),
                (false, true) => ("text/event-stream", openai_tool_stream(&model, tool.as_deref().unwrap_or("f"))),
            };
            let head =
                format!("HTTP/1.1 {status} OK\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n", body.len());
            if out.write_all(head.as_bytes()).and_then(|_| out.write_all(&body)).is_err() {
                return;
            }
            continue;
        }
        if let Some(ms) = h("x-fake-head-delay-ms").and_then(|v| v.parse().ok()) {
            thread::sleep(Duration::from_millis(ms));
        }
        match mode.as_str() {
            "json" | "raw" | "garbage" => {
                let body = match mode.as_str() {
                    "raw" => h("x-fake-body").unwrap_or_default().into_bytes(),
                    "garbage" => b"<html>upstream exploded</html>".to_vec(),
                    _ => serde_json::to_vec(&serde_json::json!({
                        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fake reply"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
                    }))
                    .unwrap(),
                };
                let ctype = if mode == "garbage" { "text/html" } else { "application/json" };
                let extra = h("x-fake-response-header")
                    .and_then(|v| v.split_once('=').map(|(n, v)| format!("{n}: {v}\r\n")))
                    .unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nx-ratelimit-remaining-requests: 99\r\n{extra}\r\n",
                    body.len()
                );
                if out.write_all(head.as_bytes()).and_then(|_| out.write_all(&body)).is_err() {
                    return;
                }
                if h("x-fake-then-close").is_some() {
                    // Close the kept-alive connection silently, as servers do with idle ones.
                    return;
                }
            }
            "sse" | "reset-mid-stream" => {
                let mut payload = sse_payload(events, false);
                let include_usage = serde_json::from_slice::<serde_json::Value>(&req.body)
                    .is_ok_and(|v| v["stream_options"]["include_usage"] == true);
                if include_usage {
                    payload.extend_from_slice(&usage_chunk(events));
                }
                if mode == "sse" {
                    payload.extend_from_slice(b"data: [DONE]\n\n");
                }
                let head = format!(
                    "HTTP/1.1 {status} OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                );
                if out.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let pieces: Vec<&[u8]> = if split == usize::MAX {
                    payload
                        .split_inclusive(|b| *b == b'\n')
                        .collect::<Vec<_>>()
                        .chunks(2)
                        .map(|c| {
                            let start = c[0].as_ptr() as usize - payload.as_ptr() as usize;
                            let len: usize = c.iter().map(|x| x.len()).sum();
                            &payload[start..start + len]
                        })
                        .collect()
                } else {
                    payload.chunks(split).collect()
                };
                let cut = if mode == "reset-mid-stream" { pieces.len() / 2 } else { pieces.len() };
                for piece in &pieces[..cut] {
                    let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
                    if out.write_all(&chunk).is_err() {
                        peer_closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if !delay.is_zero() {
                        thread::sleep(delay);
                    }
                }
                if mode == "reset-mid-stream" {
                    // SO_LINGER 0 is not in std: shutting down both ways ends the stream abruptly.
                    let _ = out.shutdown(Shutdown::Both);
                    return;
                }
                if out.write_all(b"0\r\n\r\n").is_err() {
                    return;
                }
            }
            "stall" => {
                // Never answer; notice when the gateway gives up on us.
                let mut buf = [0u8; 1];
                let _ = reader.get_mut().set_read_timeout(Some(Duration::from_secs(30)));
                match reader.get_mut().read(&mut buf) {
                    Ok(0) | Err(_) => {
                        peer_closed.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                }
                return;
            }
            "close" => return,
            other => panic!("unknown fake mode {other}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------------

pub struct Gateway {
    pub addr: SocketAddr,
    pub child: Child,
    pub config_path: std::path::PathBuf,
    pub log: Arc<Mutex<String>>,
    _dir: TempDir,
}

pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-test-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Gateway {
    /// Starts the real binary with `config` (its `listen` is replaced by port 0).
    pub fn start(config: &serde_json::Value) -> Gateway {
        Gateway::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &serde_json::Value, env: &[(&str, &str)]) -> Gateway {
        let dir = TempDir::new("gw");
        let config_path = dir.0.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        // SWITCHYARD_TEST_BIN runs the tests against another build (to compare before and after a change).
        let bin = std::env::var_os("SWITCHYARD_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_switchyard").into());
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&config_path).arg("--listen").arg("127.0.0.1:0");
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start switchyard");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        thread::spawn(move || {
            let reader = BufReader::new(stderr);
            for line in reader.lines() {
                let Ok(line) = line else { break };
                log2.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("gateway did not start: {}", log.lock().unwrap()));
        Gateway { addr: addr.parse().unwrap(), child, config_path, log, _dir: dir }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends SIGTERM (by PID, to our own child only).
    pub fn terminate(&self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with one OpenAI-compatible backend pointing at `upstream`, and the `demo` mock.
pub fn config_for(upstream: &FakeUpstream) -> serde_json::Value {
    serde_json::json!({
        "backends": [
            {"name": "fake", "schema": "openai", "base_url": upstream.base_url(),
             "auth": {"type": "bearer", "key": "sk-upstream-secret"}, "idle_timeout_ms": 1500, "response_timeout_ms": 3000},
            {"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 5}
        ],
        "routes": [
            {"model": "demo", "backends": [{"backend": "demo"}]},
            {"model": "aliased", "backends": [{"backend": "fake", "model": "real-upstream-model"}]},
            {"model": "fake*", "backends": [{"backend": "fake"}]}
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Writes a POST of `body` with the given extra headers.
pub fn post_raw(stream: &mut TcpStream, path: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

/// Reads a response head; returns status and headers.
pub fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, HashMap<String, String>) {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap_or_else(|| panic!("bad status line {line:?}")).parse().unwrap();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':').unwrap();
        headers.insert(n.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    (status, headers)
}

/// Reads one chunk of a chunked body (`None` at the terminating chunk).
pub fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    reader.read_line(&mut size).unwrap();
    let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
    let mut data = vec![0; n + 2];
    reader.read_exact(&mut data).unwrap();
    assert_eq!(&data[n..], b"\r\n");
    data.truncate(n);
    (n > 0).then_some(data)
}

pub fn read_response(reader: &mut BufReader<TcpStream>) -> Response {
    let (status, headers) = read_head(reader);
    let mut body = Vec::new();
    if let Some(len) = headers.get("content-length") {
        body.resize(len.parse().unwrap(), 0);
        reader.read_exact(&mut body).unwrap();
    } else if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") {
        while let Some(chunk) = read_chunk(reader) {
            body.extend_from_slice(&chunk);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    Response { status, headers, body }
}

/// One request on a fresh connection.
pub fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> Response {
    let mut s = connect(addr);
    post_raw(&mut s, path, headers, &serde_json::to_vec(body).unwrap());
    read_response(&mut BufReader::new(s))
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut s = connect(addr);
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    read_response(&mut BufReader::new(s))
}

/// Sends raw bytes and reads whatever comes back until the server closes (or the timeout).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = connect(addr);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// An address nothing listens on (a port just released).
pub fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

pub fn chat(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// Polls `cond` until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    cond()
}

// ---------------------------------------------------------------------------------------------
// The Python SDKs' virtualenv
// ---------------------------------------------------------------------------------------------

/// The venv's python, creating the venv and installing the SDKs when missing.
pub fn sdk_python() -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("sdk-venv");
    let python = venv.join("bin").join("python");
    let ready = venv.join(".installed");
    let requirements = root.join("tests/sdk/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(wanted.as_str()) {
        let status =
            Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 is needed for SDK tests");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements)
            .status()
            .unwrap();
        assert!(status.success(), "pip install of the SDKs failed");
        std::fs::write(&ready, wanted).unwrap();
    }
    python
}

// ---------------------------------------------------------------------------------------------
// Binary event streams (Bedrock), for stream-translation tests
// ---------------------------------------------------------------------------------------------

/// One event-stream frame as Bedrock sends it: `:message-type: event` with `:event-type: name`.
pub fn event_frame(name: &str, payload: &[u8]) -> Vec<u8> {
    use switchyard::eventstream::{encode, HeaderValue::String as S};
    encode(
        &[
            (":event-type", S(name.into())),
            (":content-type", S("application/json".into())),
            (":message-type", S("event".into())),
        ],
        payload,
    )
}

/// An exception frame (`throttlingException` …) as Bedrock sends it mid-stream.
pub fn exception_frame(kind: &str, payload: &[u8]) -> Vec<u8> {
    use switchyard::eventstream::{encode, HeaderValue::String as S};
    encode(
        &[
            (":exception-type", S(kind.into())),
            (":content-type", S("application/json".into())),
            (":message-type", S("exception".into())),
        ],
        payload,
    )
}

/// A recorded ConverseStream (`tests/fixtures/streams/<name>`: a JSON array of
/// `{"event": name, "payload": {…}}` or `{"exception": kind, "payload": {…}}`) as wire bytes.
pub fn converse_fixture_wire(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/streams").join(name);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let mut wire = Vec::new();
    for f in v.as_array().expect("a JSON array") {
        let payload = serde_json::to_vec(&f["payload"]).unwrap();
        match (f["event"].as_str(), f["exception"].as_str()) {
            (Some(name), _) if name.ends_with("Exception") => wire.extend(exception_frame(name, &payload)),
            (Some(name), _) => wire.extend(event_frame(name, &payload)),
            (None, Some(kind)) => wire.extend(exception_frame(kind, &payload)),
            _ => panic!("{name}: a frame without event or exception: {f}"),
        }
    }
    wire
}

/// The relay's stream pipeline for a Bedrock Converse upstream, fed frame by frame.
pub struct ConversePipeline(pub switchyard::stream::StreamPipeline);

impl ConversePipeline {
    pub fn new(client: switchyard::api::Api, translator: Box<dyn switchyard::stream::StreamTranslate>) -> Self {
        use switchyard::{api::Api, providers::Framing, stream::StreamPipeline};
        ConversePipeline(StreamPipeline::new(Framing::EventStream, Api::Converse, client, Some(translator), false))
    }

    pub fn push(&mut self, wire: &[u8], out: &mut Vec<u8>) {
        self.0.push(wire);
        self.0.relay(out);
    }

    pub fn event(&mut self, name: &str, payload: &[u8], out: &mut Vec<u8>) {
        self.push(&event_frame(name, payload), out);
    }

    pub fn exception(&mut self, kind: &str, payload: &[u8], out: &mut Vec<u8>) {
        self.push(&exception_frame(kind, payload), out);
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.0.finish(out);
    }

    pub fn usage(&self) -> Option<switchyard::translate::Usage> {
        self.0.usage().cloned()
    }

    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }
}

/// Feeds `wire` to pipelines from `make` whole, one byte at a time and split in two at every offset,
/// and checks that all give the same client bytes, which it returns.
pub fn assert_converse_split_invariant(make: impl Fn() -> ConversePipeline, wire: &[u8]) -> Vec<u8> {
    let run = |pieces: &[&[u8]]| {
        let mut p = make();
        let mut out = Vec::new();
        for piece in pieces {
            p.push(piece, &mut out);
        }
        p.finish(&mut out);
        out
    };
    let whole = run(&[wire]);
    assert!(!whole.is_empty());
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte-at-a-time differs");
    for i in 0..=wire.len() {
        assert!(run(&[&wire[..i], &wire[i..]]) == whole, "split at byte {i} differs");
    }
    whole
}
