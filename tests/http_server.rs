//! The HTTP/1.1 layer over real sockets: limits, malformed requests, keep-alive, pipelining, chunked.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn demo_gateway(server: serde_json::Value) -> Gateway {
    Gateway::start(&json!({
        "server": server,
        "backends": [{"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 1}],
        "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}]
    }))
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

#[test]
fn oversized_body_is_413_before_the_body_is_sent() {
    let gw = demo_gateway(json!({"max_body_bytes": 1000}));
    let mut s = connect(gw.addr);
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5000000\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(s));
    assert_eq!(r.status, 413);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("exceeds the limit"));
}

#[test]
fn oversized_chunked_body_is_413() {
    let gw = demo_gateway(json!({"max_body_bytes": 100}));
    let chunk = "x".repeat(80);
    let req = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n50\r\n{chunk}\r\n50\r\n{chunk}\r\n0\r\n\r\n");
    assert_eq!(status_of(&raw_exchange(gw.addr, req.as_bytes())), 413);
}

#[test]
fn anthropic_paths_get_anthropic_error_shape_from_the_server_layer() {
    let gw = demo_gateway(json!({"max_body_bytes": 10}));
    let out = raw_exchange(gw.addr, b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 50\r\n\r\n");
    assert_eq!(status_of(&out), 413);
    assert!(out.contains(r#""type":"error""#), "{out}");
}

#[test]
fn too_many_or_too_large_headers_are_431_and_long_request_line_is_414() {
    let gw = demo_gateway(json!({"max_headers": 20, "max_head_bytes": 4096}));
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    assert_eq!(
        status_of(&raw_exchange(gw.addr, format!("GET /health HTTP/1.1\r\nhost: x\r\n{many}\r\n").as_bytes())),
        431
    );
    let big = format!("GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n", "a".repeat(5000));
    assert_eq!(status_of(&raw_exchange(gw.addr, big.as_bytes())), 431);
    let long = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(5000));
    assert_eq!(status_of(&raw_exchange(gw.addr, long.as_bytes())), 414);
}

#[test]
fn official_sdk_header_counts_are_accepted() {
    // may_minihttp dropped the 17th header: the OpenAI SDK sends 17, Anthropic's 19.
    let gw = demo_gateway(json!({}));
    let headers: Vec<(String, String)> = (0..40).map(|i| (format!("x-stainless-{i}"), "v".to_string())).collect();
    let refs: Vec<(&str, &str)> = headers.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let r = post(gw.addr, "/v1/chat/completions", &refs, &chat("demo"));
    assert_eq!(r.status, 200);
}

#[test]
fn malformed_framing_is_400_and_closes() {
    let gw = demo_gateway(json!({}));
    for req in [
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
        "GET /health HTTP/1.1\r\nhost: x\r\nx-a: b\r\n folded\r\n\r\n",
        "NOT A REQUEST\r\n\r\n",
    ] {
        let out = raw_exchange(gw.addr, req.as_bytes());
        assert_eq!(status_of(&out), 400, "{req:?} → {out}");
        assert!(out.contains("connection: close"), "{out}");
    }
    let out =
        raw_exchange(gw.addr, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n");
    assert_eq!(status_of(&out), 501);
}

#[test]
fn slow_head_gets_408() {
    let gw = demo_gateway(json!({"header_timeout_ms": 300}));
    let mut s = connect(gw.addr);
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n").unwrap();
    let start = Instant::now();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(status_of(&out), 408);
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn idle_keep_alive_connection_is_closed_after_timeout() {
    let gw = demo_gateway(json!({"keepalive_timeout_ms": 300}));
    let mut s = connect(gw.addr);
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    assert_eq!(read_response(&mut reader).status, 200);
    let start = Instant::now();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn connections_over_the_limit_get_503() {
    let gw = demo_gateway(json!({"max_connections": 2}));
    let a = connect(gw.addr);
    let b = connect(gw.addr);
    std::thread::sleep(Duration::from_millis(200));
    let out = raw_exchange(gw.addr, b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
    assert_eq!(status_of(&out), 503, "{out}");
    drop((a, b));
    assert!(eventually(Duration::from_secs(3), || get(gw.addr, "/health", &[]).status == 200));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let gw = demo_gateway(json!({}));
    let body = serde_json::to_vec(&chat("demo")).unwrap();
    let mut batch = Vec::new();
    batch.extend_from_slice(
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", body.len()).as_bytes(),
    );
    batch.extend_from_slice(&body);
    batch.extend_from_slice(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut s = connect(gw.addr);
    s.write_all(&batch).unwrap();
    let mut reader = BufReader::new(s);
    assert_eq!(read_response(&mut reader).json()["object"], "chat.completion");
    assert_eq!(read_response(&mut reader).json()["status"], "ok");
    assert_eq!(read_response(&mut reader).json()["object"], "list");
}

#[test]
fn chunked_request_body_and_expect_continue_are_supported() {
    let gw = demo_gateway(json!({}));
    let body = serde_json::to_vec(&chat("demo")).unwrap();
    let (a, b) = body.split_at(7);
    let mut s = connect(gw.addr);
    s.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 100);
    s.write_all(format!("{:x}\r\n", a.len()).as_bytes()).unwrap();
    s.write_all(a).unwrap();
    s.write_all(format!("\r\n{:x}\r\n", b.len()).as_bytes()).unwrap();
    s.write_all(b).unwrap();
    s.write_all(b"\r\n0\r\n\r\n").unwrap();
    let r = read_response(&mut reader);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["object"], "chat.completion");
}

#[test]
fn connection_close_is_honoured() {
    let gw = demo_gateway(json!({}));
    let out = raw_exchange(gw.addr, b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert!(out.contains("connection: close"));
    assert!(out.ends_with(r#"{"status":"ok"}"#));
}

#[test]
fn wrong_method_is_405() {
    let gw = demo_gateway(json!({}));
    assert_eq!(get(gw.addr, "/v1/chat/completions", &[]).status, 405);
}

/// A JSON body larger than the gateway reserves before its bytes come (1 MiB), sent after its head in
/// uneven pieces with a pipelined request behind its last byte: the upstream receives it byte for
/// byte, and the next request on the connection is answered.
#[test]
fn a_large_body_sent_in_pieces_reaches_the_upstream_whole_and_the_next_request_is_answered() {
    let upstream = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&upstream));
    // Every piece of the content differs, so that a lost, repeated or misplaced piece shows.
    let content: String =
        (0..300_000u32).map(|i| format!("{:07} ", i.wrapping_mul(2_654_435_761) % 9_999_991)).collect();
    let body =
        serde_json::to_vec(&json!({"model": "fake-1", "messages": [{"role": "user", "content": content}]})).unwrap();
    assert!(body.len() > 2 << 20, "{} bytes", body.len());
    let mut s = connect(gw.addr);
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n", body.len());
    // Some body bytes come with the head; the rest in pieces of growing sizes, a pause between them.
    let mut first = head.into_bytes();
    first.extend_from_slice(&body[..1000]);
    s.write_all(&first).unwrap();
    let mut at = 1000;
    let mut piece = 70_001;
    while at < body.len() {
        let end = (at + piece).min(body.len());
        let mut bytes = body[at..end].to_vec();
        if end == body.len() {
            bytes.extend_from_slice(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n");
        }
        s.write_all(&bytes).unwrap();
        at = end;
        piece = piece * 3 / 2;
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut reader = BufReader::new(s);
    let answer = read_response(&mut reader);
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(upstream.last().body == body, "the upstream got {} bytes of {}", upstream.last().body.len(), body.len());
    assert_eq!(read_response(&mut reader).json()["status"], "ok");
}
