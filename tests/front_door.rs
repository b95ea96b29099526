//! The front door as a hostile client sees it: every vector class of issue 10, over a real socket
//! against the real binary.
//!
//! Each vector is sent with a valid request pipelined after it on the same connection (the follow-up,
//! which asks to close the connection after it). A refused vector must get its status with
//! `connection: close`, then the connection must close without answering the follow-up, and the
//! scripted upstream must have received nothing. An accepted vector must be answered, then the
//! follow-up too, and the upstream must have received exactly what was accepted. Every answer must
//! carry `x-request-id`, and every error an OpenAI-shaped body whose `error.code` is a string.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::json;

/// What a vector must get.
enum Expect {
    /// This status and `connection: close`; nothing more on the connection; nothing upstream.
    Refused(u16),
    /// These statuses then the follow-up's 200, and this many requests upstream (the follow-up's
    /// included).
    Served(&'static [u16], usize),
}

struct Vector {
    name: &'static str,
    wire: Vec<u8>,
    expect: Expect,
    /// A header the first answer must carry, with its value.
    header: Option<(&'static str, &'static str)>,
}

fn refused(name: &'static str, wire: impl Into<Vec<u8>>, status: u16) -> Vector {
    Vector { name, wire: wire.into(), expect: Expect::Refused(status), header: None }
}

fn served(name: &'static str, wire: impl Into<Vec<u8>>, statuses: &'static [u16], upstream: usize) -> Vector {
    Vector { name, wire: wire.into(), expect: Expect::Served(statuses, upstream), header: None }
}

/// A chat body that would reach the scripted upstream if the request were accepted.
const BODY: &str = r#"{"model":"fake-hostile","messages":[{"role":"user","content":"hi"}]}"#;

/// `POST /v1/chat/completions` with `head` after the request line (each header ending in CRLF) and a
/// Content-Length body.
fn post(head: &str) -> String {
    format!("POST /v1/chat/completions HTTP/1.1\r\n{head}content-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}", BODY.len())
}

/// A chunked POST whose body bytes are `wire` (the chat body is split into chunks by the caller).
fn chunked(head: &str, wire: &str) -> String {
    format!("POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\n{head}content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{wire}")
}

/// The chat body as one chunk with `size_line` as its size line's tail (extensions), then `end`.
fn one_chunk(size_tail: &str, end: &str) -> String {
    format!("{:x}{size_tail}\r\n{BODY}\r\n{end}", BODY.len())
}

/// The valid request pipelined after every vector.
fn follow_up() -> Vec<u8> {
    let body = r#"{"model":"fake-follow-up","messages":[{"role":"user","content":"hi"}]}"#;
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Every response in `bytes` (what the gateway sent until it closed).
fn parse_answers(mut bytes: &[u8]) -> Result<Vec<Answer>, String> {
    let mut answers = Vec::new();
    while !bytes.is_empty() {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut slots);
        let len = match resp.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            other => return Err(format!("unparsable response ({other:?}): {:?}", String::from_utf8_lossy(bytes))),
        };
        let status = resp.code.unwrap_or(0);
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        bytes = &bytes[len..];
        let length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse::<usize>().ok());
        let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v == "chunked");
        let body = if let Some(n) = length {
            let body = bytes.get(..n).ok_or("truncated body")?.to_vec();
            bytes = &bytes[n..];
            body
        } else if chunked {
            let mut body = Vec::new();
            let (used, done) = switchyard::chunked::ChunkedDecoder::default()
                .decode(bytes, &mut body)
                .map_err(|e| format!("bad chunked response: {e}"))?;
            if !done {
                return Err("truncated chunked response".into());
            }
            bytes = &bytes[used..];
            body
        } else {
            std::mem::take(&mut bytes).to_vec()
        };
        answers.push(Answer { status, headers, body });
    }
    Ok(answers)
}

/// Sends `wire` then the follow-up on one connection and reads until the gateway closes it.
fn exchange(gw: &Gateway, wire: &[u8]) -> Vec<u8> {
    let mut s = connect(gw.addr);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = wire.to_vec();
    all.extend_from_slice(&follow_up());
    let _ = s.write_all(&all);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Checks one vector; `Err` says what went wrong.
fn run(gw: &Gateway, up: &FakeUpstream, v: &Vector) -> Result<(), String> {
    let before = up.requests().len();
    let bytes = exchange(gw, &v.wire);
    let answers = parse_answers(&bytes)?;
    let upstream = up.requests().len() - before;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    for a in &answers {
        if a.header("x-request-id").is_none_or(str::is_empty) {
            return Err(format!("a {} answer without x-request-id", a.status));
        }
        if a.status >= 400 {
            let v: serde_json::Value =
                serde_json::from_slice(&a.body).map_err(|e| format!("error body not JSON: {e}"))?;
            if !v["error"]["code"].is_string() {
                return Err(format!("error.code is not a string: {v}"));
            }
        }
    }
    if let Some((name, value)) = v.header {
        let got = answers.first().and_then(|a| a.header(name));
        if got != Some(value) {
            return Err(format!("{name}: {got:?}, expected {value:?}"));
        }
    }
    match v.expect {
        Expect::Refused(status) => {
            if statuses != [status] {
                return Err(format!("answered {statuses:?}, expected only {status} then a close"));
            }
            if answers[0].header("connection") != Some("close") {
                return Err("refused without connection: close".into());
            }
            if upstream != 0 {
                return Err(format!("the upstream received {upstream} request(s)"));
            }
        }
        Expect::Served(expected, n) => {
            let mut want = expected.to_vec();
            want.push(200);
            if statuses != want {
                return Err(format!("answered {statuses:?}, expected {want:?}"));
            }
            if upstream != n {
                return Err(format!("the upstream received {upstream} request(s), expected {n}"));
            }
            let last: serde_json::Value = serde_json::from_slice(&answers.last().unwrap().body).unwrap_or_default();
            if last["model"] != "fake-follow-up" {
                return Err(format!("the follow-up got {last}"));
            }
        }
    }
    Ok(())
}

fn gateway(up: &FakeUpstream, server: serde_json::Value) -> Gateway {
    let mut config = config_for(up);
    config["server"] = server;
    Gateway::start(&config)
}

/// Runs a class of vectors against one gateway; fails listing every vector not handled.
fn check_class(class: &str, vectors: Vec<Vector>) {
    let up = FakeUpstream::start();
    let gw = gateway(&up, json!({"max_body_bytes": 2048, "max_head_bytes": 8192}));
    let failures: Vec<String> =
        vectors.iter().filter_map(|v| run(&gw, &up, v).err().map(|e| format!("  {}: {e}", v.name))).collect();
    println!("{class}: {} of {} vectors handled", vectors.len() - failures.len(), vectors.len());
    assert!(
        failures.is_empty(),
        "{class}: {} of {} vectors not handled:\n{}",
        failures.len(),
        vectors.len(),
        failures.join("\n")
    );
}

#[test]
fn host_missing_repeated_or_invalid_is_400_and_closes() {
    check_class(
        "host",
        vec![
            refused("no Host on HTTP/1.1", post(""), 400),
            refused("two different Host lines", post("host: a\r\nhost: b\r\n"), 400),
            refused("two identical Host lines", post("host: a\r\nhost: a\r\n"), 400),
            refused("Host x/?", post("host: x/?\r\n"), 400),
            refused("Host a b", post("host: a b\r\n"), 400),
            refused("Host u@evil.example", post("host: u@evil.example\r\n"), 400),
            refused("Host evil#x", post("host: evil#x\r\n"), 400),
            refused("Host [::1 (unclosed literal)", post("host: [::1\r\n"), 400),
            refused("Host with a non-numeric port", post("host: a:b:c\r\n"), 400),
            served("Host with a port", post("host: api.example.com:8443\r\n"), &[200], 2),
            served("Host as an IPv6 literal", post("host: [::1]:8080\r\n"), &[200], 2),
            served(
                "HTTP/1.0 without Host",
                post("").replacen("HTTP/1.1", "HTTP/1.0", 1).replacen("\r\n", "\r\nconnection: keep-alive\r\n", 1),
                &[200],
                2,
            ),
        ],
    );
}

#[test]
fn chunked_trailers_are_validated_like_header_fields() {
    check_class(
        "trailers",
        vec![
            refused("trailer without a colon", chunked("", &one_chunk("", "0\r\nnocolon\r\n\r\n")), 400),
            refused("trailer ending in a bare LF", chunked("", &one_chunk("", "0\r\nx-t: 1\n\r\n")), 400),
            refused("obs-fold in the trailers", chunked("", &one_chunk("", "0\r\nx-t: 1\r\n folded\r\n\r\n")), 400),
            refused("NUL in a trailer value", chunked("", &one_chunk("", "0\r\nx-t: a\0b\r\n\r\n")), 400),
            refused("space before a trailer's colon", chunked("", &one_chunk("", "0\r\nx-t : 1\r\n\r\n")), 400),
            refused("bare CR in a trailer", chunked("", &one_chunk("", "0\r\nx-t: 1\rx\r\n\r\n")), 400),
            refused(
                "trailer section too long",
                chunked("", &one_chunk("", &format!("0\r\nx-t: {}\r\n\r\n", "a".repeat(9000)))),
                400,
            ),
            served("valid trailers", chunked("", &one_chunk("", "0\r\nx-t: 1\r\nx-u: two words\r\n\r\n")), &[200], 2),
        ],
    );
}

#[test]
fn smuggling_vectors_never_reach_the_upstream() {
    let smuggled = post("host: test\r\n").replace("fake-hostile", "fake-smuggled");
    check_class(
        "smuggling",
        vec![
            // The chunked body ends without its final CRLF: the next request's head must not be taken
            // for trailers (the two ends of the connection would disagree on where requests start).
            refused(
                "trailer section swallowing the next request",
                chunked("", &one_chunk("", &format!("0\r\n{smuggled}"))),
                400,
            ),
            refused("Content-Length with Transfer-Encoding", post("host: test\r\ntransfer-encoding: chunked\r\n"), 400),
            refused(
                "Content-Length with Transfer-Encoding: Chunked",
                post("host: test\r\ntransfer-encoding: Chunked\r\n"),
                400,
            ),
            refused("two different Content-Lengths", post("host: test\r\ncontent-length: 3\r\n"), 400),
            refused("Content-Length list that disagrees", post("host: test\r\ncontent-length: 5, 6\r\n"), 400),
            refused("Content-Length +N", post("host: test\r\n").replace("content-length: ", "content-length: +"), 400),
            refused("Transfer-Encoding: xchunked", chunked("", "").replace("chunked\r\n\r\n", "xchunked\r\n\r\n"), 501),
            refused(
                "Transfer-Encoding: chunked, chunked",
                chunked("", "").replace("chunked\r\n\r\n", "chunked, chunked\r\n\r\n"),
                501,
            ),
            refused(
                "Transfer-Encoding: chunked, identity",
                chunked("", "").replace("chunked\r\n\r\n", "chunked, identity\r\n\r\n"),
                501,
            ),
            refused("empty Transfer-Encoding", chunked("", "").replace("chunked\r\n\r\n", "\r\n\r\n"), 400),
            refused(
                "space before Transfer-Encoding's colon",
                chunked("", &one_chunk("", "0\r\n\r\n")).replace("transfer-encoding:", "transfer-encoding :"),
                400,
            ),
            refused(
                "Transfer-Encoding on HTTP/1.0",
                chunked("", &one_chunk("", "0\r\n\r\n")).replacen("HTTP/1.1", "HTTP/1.0", 1),
                400,
            ),
            served("a chunked request then a pipelined one", chunked("", &one_chunk("", "0\r\n\r\n")), &[200], 2),
        ],
    );
}

#[test]
fn bare_lf_line_endings_are_400_and_close() {
    let ok = post("host: test\r\n");
    check_class(
        "bare LF",
        vec![
            refused("request line ending in LF", ok.replacen("HTTP/1.1\r\n", "HTTP/1.1\n", 1), 400),
            refused("header line ending in LF", ok.replacen("host: test\r\n", "host: test\n", 1), 400),
            refused("head ending in a bare LF line", ok.replacen("\r\n\r\n", "\r\n\n", 1), 400),
            refused("every line ending in LF", ok.replace("\r\n", "\n"), 400),
            refused("leading bare LF line", format!("\n{ok}"), 400),
            refused(
                "chunk size line ending in LF",
                chunked("", &one_chunk("", "0\r\n\r\n")).replacen(
                    &format!("{:x}\r\n", BODY.len()),
                    &format!("{:x}\n", BODY.len()),
                    1,
                ),
                400,
            ),
            refused("chunk data ending in LF", chunked("", &format!("{:x}\r\n{BODY}\n0\r\n\r\n", BODY.len())), 400),
            refused("last chunk ending in LF", chunked("", &one_chunk("", "0\n\r\n")), 400),
            refused("chunked body ending in a bare LF", chunked("", &one_chunk("", "0\r\n\n")), 400),
            refused("bare CR in a header value", ok.replacen("host: test", "host: test\r\nx-a: b\rc", 1), 400),
        ],
    );
}

#[test]
fn chunk_sizes_with_anything_but_hex_digits_are_400_and_close() {
    let with_size = |size: &str| chunked("", &format!("{size}\r\n{BODY}\r\n0\r\n\r\n"));
    let n = format!("{:x}", BODY.len());
    check_class(
        "chunk size",
        vec![
            refused("chunk size with trailing garbage (54 5)", with_size(&format!("{n} 5")), 400),
            refused("chunk size with trailing space", with_size(&format!("{n} ")), 400),
            refused("chunk size with leading space", with_size(&format!(" {n}")), 400),
            refused("chunk size 0x…", with_size(&format!("0x{n}")), 400),
            refused("chunk size +…", with_size(&format!("+{n}")), 400),
            refused("negative chunk size", with_size(&format!("-{n}")), 400),
            refused("chunk size of 17 hex digits", with_size("fffffffffffffffff"), 400),
            refused("empty chunk size", with_size(""), 400),
            refused("chunk size over max_body_bytes", chunked("", "1000\r\n"), 413),
        ],
    );
}

#[test]
fn empty_or_nul_bearing_chunk_extensions_are_400_and_close() {
    let ext = |tail: &str| chunked("", &one_chunk(tail, "0\r\n\r\n"));
    check_class(
        "chunk extensions",
        vec![
            refused("empty extension (;)", ext(";"), 400),
            refused("NUL in an extension", ext(";a\0b"), 400),
            refused("NUL alone as an extension", ext(";\0"), 400),
            refused("extension without a name", ext(";=v"), 400),
            refused("extension with an empty value", ext(";a="), 400),
            refused("unterminated quoted extension value", ext(";a=\"open"), 400),
            refused("extension with a space inside its name", ext(";a b"), 400),
            refused("extension too long", ext(&format!(";a={}", "b".repeat(5000))), 400),
            served("valid extensions", ext(" ; a=b ;c=\"d e\""), &[200], 2),
        ],
    );
}

#[test]
fn absolute_form_targets_are_served_and_their_authority_follows_the_host_rules() {
    let target = |t: &str| post("host: test\r\n").replacen("/v1/chat/completions", t, 1);
    check_class(
        "absolute-form",
        vec![
            served("POST http://test/v1/chat/completions", target("http://test/v1/chat/completions"), &[200], 2),
            served(
                "POST HTTPS://test:8443/v1/chat/completions?x=1",
                target("HTTPS://test:8443/v1/chat/completions?x=1"),
                &[200],
                2,
            ),
            refused("userinfo in the authority", target("http://u@evil.example/v1/chat/completions"), 400),
            refused("empty authority", target("http:///v1/chat/completions"), 400),
            refused("another scheme", target("ftp://test/v1/chat/completions"), 400),
            refused("a relative target", target("v1/chat/completions"), 400),
            refused("a fragment in the target", target("/v1/chat/completions#x"), 400),
            refused("asterisk-form on POST", target("*"), 400),
        ],
    );
}

#[test]
fn wrong_methods_are_405_with_allow() {
    let request = |line: &str| format!("{line}\r\nhost: test\r\n\r\n");
    check_class(
        "405 with Allow",
        vec![
            Vector {
                header: Some(("allow", "POST")),
                ..served("GET on chat", request("GET /v1/chat/completions HTTP/1.1"), &[405], 1)
            },
            Vector {
                header: Some(("allow", "GET, HEAD")),
                ..served("DELETE on health", request("DELETE /health HTTP/1.1"), &[405], 1)
            },
            Vector {
                header: Some(("allow", "GET, HEAD")),
                ..served("POST on models", request("POST /v1/models HTTP/1.1"), &[405], 1)
            },
            Vector {
                header: Some(("allow", "GET, DELETE")),
                ..served("PUT on a stored response", request("PUT /v1/responses/resp_1 HTTP/1.1"), &[405], 1)
            },
            Vector {
                header: Some(("allow", "POST")),
                ..served("GET on a response's cancel", request("GET /v1/responses/resp_1/cancel HTTP/1.1"), &[405], 1)
            },
            served("OPTIONS * is answered", request("OPTIONS * HTTP/1.1"), &[404], 1),
        ],
    );
}

#[test]
fn classic_framing_and_size_vectors_are_refused() {
    let ok = post("host: test\r\n");
    let many: String = (0..120).map(|i| format!("x-h{i}: v\r\n")).collect();
    check_class(
        "classic",
        vec![
            refused(
                "obs-fold in the head",
                ok.replacen("host: test\r\n", "host: test\r\nx-a: b\r\n folded\r\n", 1),
                400,
            ),
            refused(
                "Content-Length: abc",
                ok.replacen(&format!("content-length: {}", BODY.len()), "content-length: abc", 1),
                400,
            ),
            refused(
                "Content-Length overflowing u64",
                ok.replacen(&format!("content-length: {}", BODY.len()), "content-length: 99999999999999999999999", 1),
                400,
            ),
            refused("space in a header name", ok.replacen("host: test", "host: test\r\nx a: b", 1), 400),
            refused("two spaces in the request line", ok.replacen("POST /", "POST  /", 1), 400),
            refused("HTTP/2.0 in the request line", ok.replacen("HTTP/1.1", "HTTP/2.0", 1), 400),
            refused("NUL in the request target", ok.replacen("completions", "compl\0etions", 1), 400),
            refused("too many headers", ok.replacen("host: test\r\n", &format!("host: test\r\n{many}"), 1), 431),
            refused(
                "head too large",
                ok.replacen("host: test\r\n", &format!("host: test\r\nx-big: {}\r\n", "a".repeat(9000)), 1),
                431,
            ),
            refused("request line too long", ok.replacen("completions", &"a".repeat(9000), 1), 414),
            refused(
                "body over max_body_bytes",
                ok.replacen(&format!("content-length: {}", BODY.len()), "content-length: 5000", 1),
                413,
            ),
        ],
    );
}

/// A gateway whose request bodies must arrive within 500 ms plus a second per 100 bytes.
fn slow_body_gateway(up: &FakeUpstream) -> Gateway {
    gateway(up, json!({"body_timeout_ms": 500, "min_body_rate_bytes_per_s": 100}))
}

/// Sends `head`, then `body` one byte every 100 ms until the gateway stops reading; returns what the
/// gateway answered.
fn trickle(gw: &Gateway, head: &str, body: &[u8]) -> String {
    let mut s = connect(gw.addr);
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut writer = s.try_clone().unwrap();
    let body = body.to_vec();
    let feeder = thread::spawn(move || {
        for b in body {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let _ = s.shutdown(Shutdown::Both);
    let _ = feeder.join();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_trickling_body_is_cut_with_408() {
    let up = FakeUpstream::start();
    let gw = slow_body_gateway(&up);
    // At one byte per 100 ms, these bodies would take about 3 minutes to arrive.
    let body = format!("{BODY:<1800}");
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n", body.len());
    let out = trickle(&gw, &head, body.as_bytes());
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(out.contains("x-request-id: ") && out.contains("connection: close"), "{out}");
    let chunks = format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n";
    let out = trickle(&gw, head, chunks.as_bytes());
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(up.requests().is_empty());
}

#[test]
fn a_body_at_the_minimum_rate_is_served() {
    let up = FakeUpstream::start();
    let gw = gateway(&up, json!({"body_timeout_ms": 300, "min_body_rate_bytes_per_s": 20}));
    // 70 bytes in 7 pieces 100 ms apart: past the 300 ms allowance, well within what the bytes earn
    // (50 ms each).
    let mut s = connect(gw.addr);
    s.write_all(
        format!("POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n", BODY.len())
            .as_bytes(),
    )
    .unwrap();
    for piece in BODY.as_bytes().chunks(10) {
        s.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(100));
    }
    let r = read_response(&mut std::io::BufReader::new(s));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn server_layer_errors_carry_a_request_id() {
    let up = FakeUpstream::start();
    let gw = gateway(&up, json!({"header_timeout_ms": 300}));
    // A head that never completes: 408.
    let mut s = connect(gw.addr);
    s.write_all(b"GET /health HTTP/1.1\r\nhost: test\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408 ") && out.contains("x-request-id: "), "{out}");
    // A client's sane id is kept even when its request is refused.
    let out = raw_exchange(
        gw.addr,
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\nx-request-id: mine-1\r\ncontent-length: x\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 400 ") && out.contains("x-request-id: mine-1\r\n"), "{out}");
    // Over max_connections: 503.
    let gw = gateway(&up, json!({"max_connections": 2}));
    let a = connect(gw.addr);
    let b = connect(gw.addr);
    thread::sleep(Duration::from_millis(200));
    let out = raw_exchange(gw.addr, b"GET /health HTTP/1.1\r\nhost: test\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 503 ") && out.contains("x-request-id: "), "{out}");
    drop((a, b));
}
