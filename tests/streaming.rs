//! SSE relay: live, byte-exact, and honest about failures; cancellation on client disconnect.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn stream_body(model: &str) -> serde_json::Value {
    json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hi"}]})
}

/// A connection on which a streaming chat request for `model` was just sent.
fn open_stream(addr: std::net::SocketAddr, headers: &[(&str, &str)], model: &str) -> std::net::TcpStream {
    let mut s = connect(addr);
    post_raw(&mut s, "/v1/chat/completions", headers, &serde_json::to_vec(&stream_body(model)).unwrap());
    s
}

#[test]
fn events_arrive_incrementally_before_the_upstream_sends_the_last() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let start = Instant::now();
    let paced = [("x-fake-mode", "sse"), ("x-fake-events", "5"), ("x-fake-delay-ms", "150")];
    let mut reader = BufReader::new(open_stream(gw.addr, &paced, "fake-1"));
    let (status, headers) = read_head(&mut reader);
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["transfer-encoding"], "chunked");
    let first = read_chunk(&mut reader).unwrap();
    let first_at = start.elapsed();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    let mut all = first;
    while let Some(c) = read_chunk(&mut reader) {
        all.extend_from_slice(&c);
    }
    let total = start.elapsed();
    // The upstream spends 6 × 150 ms between its first and last write.
    assert!(total >= Duration::from_millis(800), "{total:?}");
    assert!(first_at + Duration::from_millis(600) < total, "first event at {first_at:?}, end at {total:?}");
    assert_eq!(all, sse_payload(5, true));
}

#[test]
fn the_head_goes_out_before_a_slow_first_event_and_with_a_prompt_one() {
    // Before its first wait the relay peeks at the upstream socket: nothing there yet means a wait, and
    // the client gets the head now; bytes already there leave with the head.
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let sent = Instant::now();
    let slow_first = [("x-fake-mode", "sse"), ("x-fake-events", "2"), ("x-fake-first-delay-ms", "300")];
    let mut reader = BufReader::new(open_stream(gw.addr, &slow_first, "fake-1"));
    let (status, _) = read_head(&mut reader);
    let head_at = sent.elapsed();
    let first = read_chunk(&mut reader).unwrap();
    let first_at = sent.elapsed();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    assert!(head_at < Duration::from_millis(250), "head at {head_at:?}, first event at {first_at:?}");
    assert!(first_at >= Duration::from_millis(300), "first event at {first_at:?}");
    let mut all = first;
    while let Some(c) = read_chunk(&mut reader) {
        all.extend_from_slice(&c);
    }
    assert_eq!(all, sse_payload(2, true));

    // A prompt upstream: the same stream, byte for byte, on the same connection.
    let mut s = reader.into_inner();
    post_raw(
        &mut s,
        "/v1/chat/completions",
        &[("x-fake-mode", "sse"), ("x-fake-events", "2")],
        &serde_json::to_vec(&stream_body("fake-1")).unwrap(),
    );
    let r = read_response(&mut BufReader::new(s));
    assert_eq!((r.status, r.body), (200, sse_payload(2, true)));
}

#[test]
fn stream_split_at_every_byte_relays_identically() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("x-fake-mode", "sse"), ("x-fake-split", "1"), ("x-fake-events", "4")],
        &stream_body("fake-1"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, sse_payload(4, true));
}

#[test]
fn upstream_reset_mid_stream_sends_error_event_and_ends_properly_without_done() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("x-fake-mode", "reset-mid-stream"), ("x-fake-events", "6")],
        &stream_body("fake-1"),
    );
    // read_response decoded the chunked body to its terminating chunk: the framing ended properly.
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.starts_with("data: {"), "{text}");
    assert!(!text.contains("[DONE]"), "a fabricated [DONE]: {text}");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let err: serde_json::Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(err["error"]["message"].as_str().unwrap().contains("interrupted"), "{last}");
}

#[test]
fn upstream_idle_timeout_mid_stream_sends_error_event() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up)); // idle_timeout_ms: 1500
    let start = Instant::now();
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("x-fake-mode", "sse"), ("x-fake-events", "3"), ("x-fake-delay-ms", "2500")],
        &stream_body("fake-1"),
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(!text.contains("[DONE]"));
    assert!(text.contains("\"error\""), "{text}");
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());
}

#[test]
fn client_disconnect_while_waiting_for_first_byte_cancels_upstream() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let s = open_stream(gw.addr, &[("x-fake-mode", "stall")], "fake-1");
    assert!(eventually(Duration::from_secs(3), || up.requests().len() == 1));
    let closed_at = Instant::now();
    drop(s);
    assert!(eventually(Duration::from_secs(2), || up.peer_closed.load(std::sync::atomic::Ordering::SeqCst) == 1));
    assert!(closed_at.elapsed() < Duration::from_millis(1500), "upstream dropped after {:?}", closed_at.elapsed());
}

/// A keep-alive connection stays on the watch list between requests: a request long after the first
/// is still watched, and the idle time between them cancels nothing.
#[test]
fn a_later_request_on_a_kept_alive_connection_is_cancelled_when_its_client_leaves() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let mut s = connect(gw.addr);
    let body =
        serde_json::to_vec(&json!({"model": "fake-1", "messages": [{"role": "user", "content": "hi"}]})).unwrap();
    post_raw(&mut s, "/v1/chat/completions", &[], &body);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_response(&mut reader).status, 200);
    // Idle for longer than the watcher's grace and period.
    std::thread::sleep(Duration::from_millis(700));
    post_raw(&mut s, "/v1/chat/completions", &[], &body);
    assert_eq!(read_response(&mut reader).status, 200, "the idle connection's next request was cancelled");
    assert_eq!(up.peer_closed.load(std::sync::atomic::Ordering::SeqCst), 0);
    post_raw(
        &mut s,
        "/v1/chat/completions",
        &[("x-fake-mode", "stall")],
        &serde_json::to_vec(&stream_body("fake-1")).unwrap(),
    );
    assert!(eventually(Duration::from_secs(3), || up.requests().len() == 3));
    let closed_at = Instant::now();
    drop(reader);
    drop(s);
    assert!(eventually(Duration::from_secs(2), || up.peer_closed.load(std::sync::atomic::Ordering::SeqCst) == 1));
    assert!(closed_at.elapsed() < Duration::from_millis(1500), "upstream dropped after {:?}", closed_at.elapsed());
}

#[test]
fn client_disconnect_mid_stream_cancels_upstream() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let s =
        open_stream(gw.addr, &[("x-fake-mode", "sse"), ("x-fake-events", "200"), ("x-fake-delay-ms", "50")], "fake-1");
    let mut reader = BufReader::new(s);
    let _ = read_head(&mut reader);
    let _ = read_chunk(&mut reader).unwrap();
    drop(reader);
    let closed_at = Instant::now();
    assert!(eventually(Duration::from_secs(3), || up.peer_closed.load(std::sync::atomic::Ordering::SeqCst) == 1));
    assert!(closed_at.elapsed() < Duration::from_millis(1500), "{:?}", closed_at.elapsed());
}

#[test]
fn demo_model_streams_with_done() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let r = post(gw.addr, "/v1/chat/completions", &[], &stream_body("demo"));
    let text = r.text();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.matches("data: ").count() >= 5);
}

#[test]
fn http10_client_gets_a_close_delimited_stream() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let body = serde_json::to_vec(&stream_body("fake-1")).unwrap();
    let mut req =
        format!("POST /v1/chat/completions HTTP/1.0\r\nx-fake-mode: sse\r\ncontent-length: {}\r\n\r\n", body.len())
            .into_bytes();
    req.extend_from_slice(&body);
    let out = raw_exchange(gw.addr, &req);
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
    assert!(!out.to_ascii_lowercase().contains("transfer-encoding"));
    assert!(out.ends_with("data: [DONE]\n\n"));
}

#[test]
fn many_concurrent_slow_streams_all_complete() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let addr = gw.addr;
    let handles: Vec<_> = (0..120)
        .map(|i| {
            std::thread::spawn(move || {
                let model = if i % 2 == 0 { "demo" } else { "fake-1" };
                let s = open_stream(
                    addr,
                    &[("x-fake-mode", "sse"), ("x-fake-events", "10"), ("x-fake-delay-ms", "30")],
                    model,
                );
                let r = read_response(&mut BufReader::new(s));
                r.status == 200 && r.text().ends_with("data: [DONE]\n\n")
            })
        })
        .collect();
    let ok = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
    assert_eq!(ok, 120);
}

#[test]
fn keep_alive_connection_serves_a_stream_then_another_request() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let mut s = open_stream(gw.addr, &[("x-fake-mode", "sse")], "fake-1");
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let r = read_response(&mut reader);
    assert!(r.text().ends_with("[DONE]\n\n"));
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let r = read_response(&mut reader);
    assert_eq!(r.status, 200);
    let mut rest = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    assert!(reader.buffer().is_empty(), "nothing extra was sent");
    assert!(reader.get_mut().read(&mut rest).is_err(), "connection stays open, nothing extra sent");
}

#[test]
fn upstream_reset_in_the_middle_of_an_event_still_gives_well_formed_events() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    // 7-byte pieces, cut halfway: the last piece ends inside an event.
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("x-fake-mode", "reset-mid-stream"), ("x-fake-split", "7"), ("x-fake-events", "5")],
        &stream_body("fake-1"),
    );
    let text = r.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.len() >= 2, "{text}");
    for e in &events {
        let data = e.strip_prefix("data: ").unwrap_or_else(|| panic!("not an event: {e:?}"));
        serde_json::from_str::<serde_json::Value>(data).unwrap_or_else(|err| panic!("garbled event {data:?}: {err}"));
    }
    assert!(events.last().unwrap().contains("\"error\""));
}

#[test]
fn streams_pausing_long_enough_to_give_back_memory_stay_exact_and_the_gateway_lives_on() {
    // Pauses of 150 ms pass the relay's slow-stream threshold (100 ms): before each wait the stream's
    // empty buffers and its connection's idle stack pages, the runtime's overflow sentinel among them,
    // are given back. The sentinel must be back when the connection ends, or the runtime exits.
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let addr = gw.addr;
    let slow = [("x-fake-mode", "sse"), ("x-fake-events", "4"), ("x-fake-delay-ms", "150")];
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                // Two slow streams on one keep-alive connection, then it closes.
                let mut s = open_stream(addr, &slow, "fake-1");
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let first = read_response(&mut reader);
                post_raw(&mut s, "/v1/chat/completions", &slow, &serde_json::to_vec(&stream_body("fake-1")).unwrap());
                let second = read_response(&mut reader);
                [first, second].iter().all(|r| r.status == 200 && r.body == sse_payload(4, true))
            })
        })
        .collect();
    let ok = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
    assert_eq!(ok, 8);
    // The connections have ended: the gateway still answers.
    std::thread::sleep(Duration::from_millis(100));
    let mut gw = gw;
    assert!(gw.child.try_wait().unwrap().is_none(), "the gateway exited: {}", gw.log.lock().unwrap());
    assert_eq!(get(gw.addr, "/health", &[]).status, 200);
}
