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
/// - `x-fake-events`: number of SSE events (default 3); `x-fake-delay-ms`: pause between writes;
///   `x-fake-first-delay-ms`: pause between the head and the first event
/// - `x-fake-split`: write the SSE payload in pieces of this many bytes
/// - `x-fake-body`: for `raw`, the exact body to send (JSON or not)
/// - `x-fake-then-close`: close the connection after answering (without saying so)
/// - `x-fake-head-delay-ms`: wait this long before answering at all
/// - `x-fake-gated`: an SSE answer (or a scripted chunked one) waits at the gate after its first piece
/// - `x-fake-response-header`: `name=value`, a header added to a `json`/`raw`/`garbage` or scripted answer
/// - `x-fake-pad`: a `json` answer carries a `padding` string of this many bytes
///
///
/// Besides chat completions and Anthropic messages it answers, by path (see [`scripted_reply`]), OpenAI's
/// Responses API (`/v1/responses` streamed or not, and the calls on a response id), images, audio
/// transcriptions and speech, files and batches.
///
/// It records every request and counts open and closed connections.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// Connections whose peer closed (read returned 0 or failed) while the fake was writing/stalling.
    pub peer_closed: Arc<AtomicUsize>,
    pub connections: Arc<AtomicUsize>,
    /// `x-fake-gated: 1` makes a scripted chunked answer wait here after its first piece.
    pub gate: Arc<Gate>,
}

/// A gate a scripted answer waits at (up to 20 s) until the test opens it.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let guard = self.open.lock().unwrap();
        let _ = self.opened.wait_timeout_while(guard, Duration::from_secs(20), |open| !*open).unwrap();
    }
}

impl FakeUpstream {
    pub fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let peer_closed = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Gate::default());
        let (r, p, c, g) = (received.clone(), peer_closed.clone(), connections.clone(), gate.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (r, p, g) = (r.clone(), p.clone(), g.clone());
                thread::spawn(move || fake_connection(stream, &r, &p, &g));
            }
        });
        FakeUpstream { addr, received, peer_closed, connections, gate }
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

/// A chunk stream whose content is the JSON `{"location":"Paris"}` (for `response_format` requests).
pub fn json_sse_payload() -> Vec<u8> {
    let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
        let c = serde_json::json!({"id": "chatcmpl-json", "object": "chat.completion.chunk", "created": 1,
            "model": "fake-model", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n").into_bytes()
    };
    let mut out = chunk(serde_json::json!({"role": "assistant", "content": "{\"location\":"}), serde_json::Value::Null);
    out.extend(chunk(serde_json::json!({"content": "\"Paris\"}"}), serde_json::Value::Null));
    out.extend(chunk(serde_json::json!({}), serde_json::json!("stop")));
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

/// An Anthropic event stream that only calls `tool` (as Claude does when the tool is forced).
pub fn anthropic_forced_tool_stream(model: &str, tool: &str) -> Vec<u8> {
    let events = [
        serde_json::json!({"type": "message_start", "message": {"id": "msg_fake03", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        serde_json::json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_03", "name": tool, "input": {}}}),
        serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"location\": "}}),
        serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        serde_json::json!({"type": "content_block_stop", "index": 0}),
        serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 6}}),
        serde_json::json!({"type": "message_stop"}),
    ];
    events.iter().flat_map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).into_bytes()).collect()
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

fn fake_connection(stream: TcpStream, received: &Mutex<Vec<Received>>, peer_closed: &AtomicUsize, gate: &Gate) {
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
        let parsed: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
        // A chat asking to stream gets a stream; one asking for a JSON schema gets JSON.
        let chat_stream = req.path.ends_with("/chat/completions") && parsed["stream"] == true;
        let mode = h("x-fake-mode").unwrap_or_else(|| if chat_stream { "sse" } else { "json" }.into());
        let json_answer = parsed["response_format"]["type"] == "json_schema";
        let events: usize = h("x-fake-events").and_then(|s| s.parse().ok()).unwrap_or(3);
        let delay = Duration::from_millis(h("x-fake-delay-ms").and_then(|s| s.parse().ok()).unwrap_or(0));
        let first_delay = Duration::from_millis(h("x-fake-first-delay-ms").and_then(|s| s.parse().ok()).unwrap_or(0));
        let split: usize = h("x-fake-split").and_then(|s| s.parse().ok()).unwrap_or(usize::MAX);
        let model = serde_json::from_slice::<serde_json::Value>(&req.body)
            .ok()
            .and_then(|v| v["model"].as_str().map(str::to_string))
            .unwrap_or_default();
        let anthropic = req.path.starts_with("/v1/messages");
        let tool = serde_json::from_slice::<serde_json::Value>(&req.body).ok().and_then(|v| {
            // After a tool's result the model answers in text.
            let last = v["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
            let answered = last["role"] == "tool"
                || last["content"].as_array().is_some_and(|c| c.iter().any(|b| b["type"] == "tool_result"));
            if answered {
                return None;
            }
            v["tools"][0]
                .get("name")
                .or_else(|| v["tools"][0]["function"].get("name"))
                .and_then(|n| n.as_str().map(str::to_string))
        });
        if mode == "json" || mode == "sse" {
            if let Some(reply) = scripted_reply(&req) {
                let extra = h("x-fake-response-header").unwrap_or_default();
                if !reply.write(&mut out, gate, h("x-fake-gated").is_some(), &extra) {
                    return;
                }
                continue;
            }
        }
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
                // With a forced tool Claude writes no text before calling it (Anthropic's documented behaviour).
                (true, false) if parsed["tool_choice"]["type"] == "tool" => {
                    let mut m: serde_json::Value =
                        serde_json::from_slice(&anthropic_message(&model, tool.as_deref())).unwrap();
                    m["content"].as_array_mut().unwrap().remove(0);
                    ("application/json", serde_json::to_vec(&m).unwrap())
                }
                (true, false) => ("application/json", anthropic_message(&model, tool.as_deref())),
                (true, true) if parsed["tool_choice"]["type"] == "tool" => {
                    ("text/event-stream", anthropic_forced_tool_stream(&model, tool.as_deref().unwrap_or("f")))
                }
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
                    _ => {
                        let mut answer = serde_json::json!({
                            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
                            "choices": [{"index": 0, "message": {"role": "assistant",
                                "content": if json_answer { "{\"location\":\"Paris\"}" } else { "fake reply" }}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
                        });
                        if let Some(n) = h("x-fake-pad").and_then(|n| n.parse::<usize>().ok()) {
                            answer["padding"] = "p".repeat(n).into();
                        }
                        serde_json::to_vec(&answer).unwrap()
                    }
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
                let mut payload = if json_answer { json_sse_payload() } else { sse_payload(events, false) };
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
                thread::sleep(first_delay);
                for (i, piece) in pieces[..cut].iter().enumerate() {
                    if i == 1 && h("x-fake-gated").is_some() {
                        gate.wait();
                    }
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
        Gateway::start_wrapped(config, env, &[])
    }

    /// Starts the binary through `wrapper` (a program and its arguments that exec the rest of the
    /// command line, e.g. `prlimit --nofile=…`, or `unshare --mount …`), when not empty.
    pub fn start_wrapped(config: &serde_json::Value, env: &[(&str, &str)], wrapper: &[&str]) -> Gateway {
        let dir = TempDir::new("gw");
        let config_path = dir.0.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        // SWITCHYARD_TEST_BIN runs the tests against another build (to compare before and after a change).
        let bin = std::env::var_os("SWITCHYARD_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_switchyard").into());
        let mut cmd = match wrapper.split_first() {
            None => Command::new(bin),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
        };
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
    /// Stops the gateway. When the test failed, says whether the gateway had died by itself (a crash
    /// resets every connection it held) and prints its log: a rare failure leaves what it needs to be
    /// understood.
    fn drop(&mut self) {
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            match exited {
                Some(status) => eprintln!("the gateway at {} had exited by itself: {status}", self.addr),
                None => eprintln!("the gateway at {} was still running", self.addr),
            }
            eprintln!("its log:\n{}", self.log());
        }
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
pub fn post_raw(stream: &mut impl Write, path: &str, headers: &[(&str, &str)], body: &[u8]) {
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
pub fn read_head(reader: &mut impl BufRead) -> (u16, HashMap<String, String>) {
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
pub fn read_chunk(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut size = String::new();
    reader.read_line(&mut size).unwrap();
    let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
    let mut data = vec![0; n + 2];
    reader.read_exact(&mut data).unwrap();
    assert_eq!(&data[n..], b"\r\n");
    data.truncate(n);
    (n > 0).then_some(data)
}

pub fn read_response(reader: &mut impl BufRead) -> Response {
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

/// An address that refuses connections for the rest of the test process: a socket bound to a port but
/// not listening (a released port could be taken by another test's listener meanwhile; this one cannot).
pub fn closed_addr() -> SocketAddr {
    // SAFETY: plain socket calls on a descriptor this function owns, with correctly sized arguments.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let sockaddr = &mut addr as *mut libc::sockaddr_in as *mut libc::sockaddr;
        assert_eq!(libc::bind(fd, sockaddr, len), 0, "bind: {}", std::io::Error::last_os_error());
        assert_eq!(libc::getsockname(fd, sockaddr, &mut len), 0);
        // The descriptor stays open (never closed): the port stays taken.
        SocketAddr::from(([127, 0, 0, 1], u16::from_be(addr.sin_port)))
    }
}

pub fn chat(model: &str) -> serde_json::Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// Rewrites a file keeping its modification time: a change only a reload (SIGHUP) notices.
pub fn write_unnoticed(path: &std::path::Path, text: &str) {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::File::options().write(true).open(path).unwrap().set_modified(modified).unwrap();
}

/// Sends a signal (by name: `HUP`, `TERM`…) to the gateway, our own child, by PID.
pub fn signal(gw: &Gateway, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(gw.child.id().to_string()).status().unwrap();
    assert!(status.success());
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
// redis-server, and an https stand-in upstream
// ---------------------------------------------------------------------------------------------

/// Installs redis-server from Debian's packages when it is missing (as .ci/run does), once per run, so
/// `cargo test` alone works on a fresh machine.
pub fn ensure_redis_server() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let present =
            Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        if present {
            return;
        }
        let installed = Command::new("sh")
            .args(["-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(installed, "redis-server is missing and could not be installed with apt-get (run .ci/run as root)");
    });
}

/// A redis-server listening with TLS only, with the default user off and one ACL user `gw`.
pub struct TlsRedis {
    child: Child,
}

/// The password of the ACL user `gw` of [`TlsRedis`].
pub const REDIS_PASSWORD: &str = "gw-secret-pass";

impl TlsRedis {
    /// Listens on `bind:port` (TLS only) with the certificate for `redis.test` in tls/names.
    pub fn start(bind: &str, port: u16) -> TlsRedis {
        ensure_redis_server();
        let names = |f: &str| tls_fixture(&format!("names/{f}"));
        let mut child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", bind])
            .args(["--tls-cert-file", &names("server.pem"), "--tls-key-file", &names("server.key")])
            .args(["--tls-ca-cert-file", &names("ca.pem"), "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--user", "default", "off"])
            .args(["--user", "gw", "on", &format!(">{REDIS_PASSWORD}"), "~*", "&*", "+@all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        // Its own listening socket, not a connect: another server on the port would answer a connect.
        let pid = child.id();
        let up = eventually(Duration::from_secs(5), || listens_on(pid, port) || !matches!(child.try_wait(), Ok(None)))
            && listens_on(pid, port);
        assert!(up, "redis-server with TLS did not come up on {bind}:{port} (port taken, or built without TLS?)");
        TlsRedis { child }
    }
}

/// Whether process `pid` holds a socket listening on TCP `port`: its own, by inode, so that another
/// process on the port does not count.
fn listens_on(pid: u32, port: u16) -> bool {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| Some(link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect();
    let port = format!(":{port:04X}");
    // Columns: sl, local address, remote address, state (0A: listening), queues, timer, retransmits, uid,
    // timeout, inode.
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().filter_map(|table| std::fs::read_to_string(table).ok()).any(|table| {
        table.lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 9 && f[1].ends_with(&port) && f[3] == "0A" && inodes.contains(f[9])
        })
    })
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Says (on the real stderr, past the test harness's capture) that a test is skipped and why; fails
/// instead when `SWITCHYARD_REQUIRE_ROOT_TESTS=1` (CI sets it).
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    assert!(
        std::env::var("SWITCHYARD_REQUIRE_ROOT_TESTS").map_or(true, |v| v != "1"),
        "{test} cannot run: {why} (SWITCHYARD_REQUIRE_ROOT_TESTS=1)"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

pub fn tls_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A TLS fake upstream on 127.0.0.1 serving the certificate chain `cert` with `key` (PEM files): answers
/// JSON, or SSE when the request asks for `stream: true`.
pub fn start_tls_upstream(cert: &str, key: &str) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let tls = rustls::StreamOwned::new(conn, tcp);
                let mut reader = BufReader::new(tls);
                loop {
                    let mut content_length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            content_length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; content_length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let stream = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["stream"] == true;
                    let out = reader.get_mut();
                    if stream {
                        let payload = sse_payload(3, true);
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                            payload.len()
                        );
                        let _ = out.write_all(&payload);
                    } else {
                        let b = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"over tls"},"finish_reason":"stop"}]}"#;
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            b.len()
                        );
                        let _ = out.write_all(b);
                    }
                    let _ = out.flush();
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// The Python SDKs' virtualenv
// ---------------------------------------------------------------------------------------------

/// Runs `tests/sdk/<script>` with the venv's python against the gateway (`SWITCHYARD_URL`, which `env`
/// may override, and `SWITCHYARD_KEY`); asserts that it exits 0 and that every check passed.
pub fn run_sdk_script(script: &str, gw: &Gateway, key: &str, env: &[(&str, &str)]) {
    let out = Command::new(sdk_python())
        .arg(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk").join(script))
        .env("SWITCHYARD_URL", format!("http://{}", gw.addr))
        .env("SWITCHYARD_KEY", key)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}\ngateway log:\n{}", gw.log());
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

/// The venv's python, creating the venv and installing the SDKs when missing.
pub fn sdk_python() -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("target").join("sdk-venv");
    let python = venv.join("bin").join("python");
    let ready = venv.join(".installed");
    let requirements = root.join("tests/sdk/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    // One test at a time creates it: two `venv` runs into one directory fail. (Test binaries run one
    // after another.)
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _creating = CREATING.lock().unwrap_or_else(|e| e.into_inner());
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

// ---------------------------------------------------------------------------------------------
// Scripted answers by path: the Responses API and the passthrough family
// ---------------------------------------------------------------------------------------------

/// A scripted answer.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    /// Written one chunk each (chunked) or together (`content-length`).
    pub pieces: Vec<Vec<u8>>,
    pub chunked: bool,
}

impl Reply {
    fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            pieces: vec![serde_json::to_vec(&v).unwrap()],
            chunked: false,
        }
    }

    /// Writes the answer, with the header `extra` (`name=value`) when given; with `gated`, waits at the
    /// gate after the first piece. `false`: the peer is gone.
    fn write(&self, out: &mut TcpStream, gate: &Gate, gated: bool, extra: &str) -> bool {
        let framing = if self.chunked {
            "transfer-encoding: chunked".to_string()
        } else {
            format!("content-length: {}", self.pieces.iter().map(Vec::len).sum::<usize>())
        };
        let extra = extra.split_once('=').map(|(n, v)| format!("{n}: {v}\r\n")).unwrap_or_default();
        let head =
            format!("HTTP/1.1 {} X\r\ncontent-type: {}\r\n{framing}\r\n{extra}\r\n", self.status, self.content_type);
        if out.write_all(head.as_bytes()).is_err() {
            return false;
        }
        for (i, piece) in self.pieces.iter().enumerate() {
            let written = if self.chunked {
                out.write_all(&[format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat())
            } else {
                out.write_all(piece)
            };
            if written.is_err() {
                return false;
            }
            if gated && i == 0 {
                let _ = out.flush();
                gate.wait();
            }
        }
        !self.chunked || out.write_all(b"0\r\n\r\n").is_ok()
    }
}

/// The bytes `/v1/audio/speech` answers: `size` bytes of a recognisable pattern.
pub fn speech_bytes(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// A Responses `response` object as OpenAI answers: a function call of the request's first tool when it
/// offered tools and its input does not end with that call's output, JSON when `text.format` asks for
/// a schema, else text. `previous_response_id` is echoed.
pub fn fake_response(req: &serde_json::Value, id: &str, status: &str) -> serde_json::Value {
    use serde_json::json;
    let last_type = req["input"].as_array().and_then(|i| i.last()).map(|i| i["type"].clone()).unwrap_or_default();
    let tool = req["tools"][0]["name"].as_str().filter(|_| last_type != "function_call_output");
    let output = match tool {
        Some(name) => json!([{"type": "function_call", "id": "fc_fake1", "call_id": "call_fake1", "name": name,
                              "arguments": "{\"location\":\"Paris\"}", "status": "completed"}]),
        None => {
            let text = if req["text"]["format"]["type"] == "json_schema" {
                "{\"location\":\"Paris\"}"
            } else {
                "Hello from fake Responses"
            };
            json!([{"type": "message", "id": "msg_fake1", "status": "completed", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}])
        }
    };
    json!({
        "id": id, "object": "response", "created_at": 1, "status": status, "error": null,
        "incomplete_details": null, "instructions": req["instructions"], "model": req["model"], "output": output,
        "parallel_tool_calls": true, "previous_response_id": req["previous_response_id"],
        "temperature": 1.0, "top_p": 1.0, "tool_choice": "auto", "tools": req["tools"].as_array().cloned().unwrap_or_default(),
        "text": {"format": req["text"]["format"].as_object().map_or(json!({"type": "text"}), |f| json!(f))},
        "usage": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0}, "output_tokens": 5,
                  "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 17},
        "metadata": {}
    })
}

/// The event stream OpenAI sends for [`fake_response`].
pub fn fake_response_stream(req: &serde_json::Value, id: &str) -> Vec<Vec<u8>> {
    use serde_json::json;
    let done = fake_response(req, id, "completed");
    let mut started = done.clone();
    started["status"] = json!("in_progress");
    started["output"] = json!([]);
    started["usage"] = json!(null);
    let item = done["output"][0].clone();
    let mut events = vec![
        json!({"type": "response.created", "response": started}),
        json!({"type": "response.in_progress", "response": started}),
    ];
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    if item["type"] == "function_call" {
        added["arguments"] = json!("");
        events.push(json!({"type": "response.output_item.added", "output_index": 0, "item": added}));
        for d in ["{\"location\":", "\"Paris\"}"] {
            events.push(json!({"type": "response.function_call_arguments.delta", "item_id": "fc_fake1", "output_index": 0, "delta": d}));
        }
        events.push(json!({"type": "response.function_call_arguments.done", "item_id": "fc_fake1", "output_index": 0,
                           "name": item["name"], "arguments": item["arguments"]}));
    } else {
        added["content"] = json!([]);
        let text = item["content"][0]["text"].as_str().unwrap().to_string();
        events.push(json!({"type": "response.output_item.added", "output_index": 0, "item": added}));
        events.push(
            json!({"type": "response.content_part.added", "item_id": "msg_fake1", "output_index": 0, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": []}}),
        );
        let (a, b) = text.split_at(text.len() / 2);
        for d in [a, b] {
            events.push(json!({"type": "response.output_text.delta", "item_id": "msg_fake1", "output_index": 0,
                               "content_index": 0, "delta": d, "logprobs": []}));
        }
        events.push(json!({"type": "response.output_text.done", "item_id": "msg_fake1", "output_index": 0,
                           "content_index": 0, "text": text, "logprobs": []}));
        events.push(json!({"type": "response.content_part.done", "item_id": "msg_fake1", "output_index": 0,
                           "content_index": 0, "part": item["content"][0]}));
    }
    events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    events.push(json!({"type": "response.completed", "response": done}));
    events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e["sequence_number"] = json!(i);
            format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).into_bytes()
        })
        .collect()
}

/// Answers by path for the Responses API and the passthrough family; `None` for everything else.
pub fn scripted_reply(req: &Received) -> Option<Reply> {
    use serde_json::json;
    let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let path = req.path.split('?').next().unwrap_or("");
    if let Some(rest) = path.strip_prefix("/v1/responses") {
        let known = |id: &str| id.starts_with("resp_fake");
        let not_found = |id: &str| {
            Reply::json(
                404,
                json!({"error": {"message": format!("Response with id '{id}' not found."),
                                              "type": "invalid_request_error", "param": null, "code": null}}),
            )
        };
        return Some(
            match (req.method.as_str(), rest.trim_start_matches('/').split('/').collect::<Vec<_>>().as_slice()) {
                ("POST", [""]) => {
                    let id = format!("resp_fake{:04}", body.to_string().len() % 10_000);
                    if body["stream"] == true {
                        Reply {
                            status: 200,
                            content_type: "text/event-stream",
                            pieces: fake_response_stream(&body, &id),
                            chunked: true,
                        }
                    } else {
                        Reply::json(200, fake_response(&body, &id, "completed"))
                    }
                }
                ("POST", ["input_tokens"]) => {
                    Reply::json(200, json!({"object": "response.input_tokens", "input_tokens": 42}))
                }
                ("GET", [id]) if known(id) => {
                    Reply::json(200, fake_response(&json!({"model": "fake-model", "input": "hi"}), id, "completed"))
                }
                ("DELETE", [id]) if known(id) => {
                    Reply::json(200, json!({"id": id, "object": "response", "deleted": true}))
                }
                ("POST", [id, "cancel"]) if known(id) => {
                    Reply::json(200, fake_response(&json!({"model": "fake-model", "input": "hi"}), id, "cancelled"))
                }
                ("GET", [id, "input_items"]) if known(id) => Reply::json(
                    200,
                    json!({"object": "list", "data": [
                {"id": "msg_in1", "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": "hi"}]}],
                "first_id": "msg_in1", "last_id": "msg_in1", "has_more": false}),
                ),
                (_, [id, ..]) => not_found(id),
                _ => return None,
            },
        );
    }
    Some(match (req.method.as_str(), path) {
        ("POST", "/v1/images/generations") => Reply::json(
            200,
            json!({"created": 1, "data": [{"b64_json": "aGVsbG8="}],
            "usage": {"input_tokens": 10, "output_tokens": 20, "total_tokens": 30,
                      "input_tokens_details": {"text_tokens": 10, "image_tokens": 0}}}),
        ),
        ("POST", "/v1/audio/transcriptions") => Reply::json(
            200,
            json!({"text": format!("heard {} bytes", req.body.len()),
            "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 3, "total_tokens": 17}}),
        ),
        ("POST", "/v1/audio/speech") => {
            let audio = speech_bytes(48 * 1024);
            Reply {
                status: 200,
                content_type: "audio/mpeg",
                pieces: audio.chunks(16 * 1024).map(<[u8]>::to_vec).collect(),
                chunked: true,
            }
        }
        ("POST", "/v1/files") => {
            let purpose = if String::from_utf8_lossy(&req.body).contains("batch") { "batch" } else { "other" };
            Reply::json(
                200,
                json!({"id": "file-fake1", "object": "file", "bytes": req.body.len(), "created_at": 1,
                                    "filename": "requests.jsonl", "purpose": purpose, "status": "processed"}),
            )
        }
        ("POST", "/v1/batches") => Reply::json(
            200,
            json!({"id": "batch_fake1", "object": "batch", "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"], "completion_window": body["completion_window"], "status": "validating",
            "created_at": 1, "errors": null, "output_file_id": null, "error_file_id": null,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}}),
        ),
        ("GET", p) if p.starts_with("/v1/files/") => Reply::json(
            200,
            json!({"id": p.trim_start_matches("/v1/files/"),
            "object": "file", "bytes": 3, "created_at": 1, "filename": "x", "purpose": "batch", "status": "processed"}),
        ),
        _ => return None,
    })
}

/// The sockets of process `pid` as (descriptor, local port, remote port), from /proc.
pub fn sockets_of(pid: u32) -> Vec<(i32, u16, u16)> {
    let mut by_inode = std::collections::HashMap::new();
    for line in std::fs::read_to_string("/proc/net/tcp").unwrap().lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next().unwrap(), 16).unwrap();
        by_inode.insert(f[9].to_string(), (port(f[1]), port(f[2])));
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy().to_string();
        let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) else { continue };
        if let (Ok(fd), Some(&(local, remote))) = (entry.file_name().to_string_lossy().parse(), by_inode.get(inode)) {
            found.push((fd, local, remote));
        }
    }
    found
}
