//! Passthrough of the rest of `/v1/*`: routed by the body's `model` (JSON or multipart) or by a
//! `"passthrough": true` path route; uploads streamed, answers streamed back; the official SDK's
//! images, audio, files and batches calls (tests/sdk/openai_passthrough.py).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::json;

const KEY: (&str, &str) = ("authorization", "Bearer client-key");

fn config(up: &FakeUpstream) -> serde_json::Value {
    json!({
        "backends": [
            {"name": "openai", "schema": "openai", "base_url": up.base_url(),
             "auth": {"type": "bearer", "key": "sk-upstream-secret"}},
            {"name": "demo", "schema": "mock"}
        ],
        "routes": [
            {"model": "demo", "backends": [{"backend": "demo"}]},
            {"model": "gpt-image-1", "backends": [{"backend": "openai"}]},
            {"model": "whisper-1", "backends": [{"backend": "openai", "model": "whisper-large-v3"}]},
            {"model": "tts-1", "backends": [{"backend": "openai"}]},
            {"passthrough": true, "path": "/v1/files", "backends": [{"backend": "openai"}]},
            {"passthrough": true, "path": "/v1/batches", "backends": [{"backend": "openai"}]}
        ],
        "clients": [{"name": "app", "key": "client-key"}]
    })
}

/// A multipart body with `fields` (name, value) and one file part, in the given order.
fn multipart(boundary: &str, before: &[(&str, &str)], file: &[u8], after: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    let field = |b: &mut Vec<u8>, (name, value): &(&str, &str)| {
        b.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").bytes());
    };
    before.iter().for_each(|f| field(&mut b, f));
    b.extend(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n")
            .bytes(),
    );
    b.extend_from_slice(file);
    b.extend_from_slice(b"\r\n");
    after.iter().for_each(|f| field(&mut b, f));
    b.extend(format!("--{boundary}--\r\n").bytes());
    b
}

/// Sends a request with a raw body (and headers), returns the response.
fn send(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut s = connect(addr);
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut BufReader::new(s))
}

fn audio(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 % 256) as u8).collect()
}

#[test]
fn openai_sdk_images_audio_files_and_batches_pass_through() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config(&up));
    let out = Command::new(sdk_python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_passthrough.py"))
        .env("SWITCHYARD_URL", format!("http://{}", gw.addr))
        .env("SWITCHYARD_KEY", "client-key")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(" passed, 0 failed"),
        "{stdout}\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    let sent = up.requests();
    let paths: Vec<&str> = sent.iter().map(|r| r.path.as_str()).collect();
    for p in ["/v1/images/generations", "/v1/audio/transcriptions", "/v1/audio/speech", "/v1/files", "/v1/batches"] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    assert!(sent.iter().all(|r| r.headers["authorization"] == "Bearer sk-upstream-secret"));
    assert!(!sent.iter().any(|r| r.headers.values().any(|v| v.contains("client-key"))));
    // The multipart upload's model was renamed by the route; the file arrived whole.
    let upload = sent.iter().find(|r| r.path == "/v1/audio/transcriptions").unwrap();
    let text = String::from_utf8_lossy(&upload.body);
    assert!(
        text.contains("\r\n\r\nwhisper-large-v3\r\n") && !text.contains("whisper-1"),
        "{}",
        &text[..300.min(text.len())]
    );
    assert!(upload.headers["content-type"].starts_with("multipart/form-data; boundary="));
    assert_eq!(upload.headers["content-length"].parse::<usize>().unwrap(), upload.body.len());
    let audio: Vec<u8> = (0..=255u8).collect::<Vec<_>>().repeat(512);
    assert!(upload.body.windows(audio.len()).any(|w| w == audio.as_slice()), "the file bytes arrived intact");
}

#[test]
fn a_25_mib_upload_is_streamed_through_not_held() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config(&up));
    let hwm = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let boundary = "----switchyard25";
    let ctype = format!("multipart/form-data; boundary={boundary}");
    let headers = [KEY, ("content-type", ctype.as_str())];
    // Warm up with a small upload, so that the measure is the big one's.
    let small = multipart(boundary, &[("model", "whisper-1")], &audio(64 * 1024), &[]);
    assert_eq!(send(gw.addr, "POST", "/v1/audio/transcriptions", &headers, &small).status, 200);
    let before = hwm();
    let file = audio(25 * 1024 * 1024);
    let big = multipart(boundary, &[("model", "whisper-1")], &file, &[("language", "en")]);
    let r = send(gw.addr, "POST", "/v1/audio/transcriptions", &headers, &big);
    assert_eq!(r.status, 200, "{}", r.text());
    let grew = hwm().saturating_sub(before);
    let received = up.last();
    assert_eq!(received.body.len(), big.len() - "whisper-1".len() + "whisper-large-v3".len());
    assert!(received.body.windows(16).any(|w| w == &file[file.len() - 16..]));
    eprintln!("25 MiB multipart upload, model first: gateway peak RSS grew by {grew} KiB (before: {before} KiB)");
    assert!(grew < 8 * 1024, "the upload was held in memory: peak RSS grew by {grew} KiB");
    // A model written after the file (curl -F file=@… -F model=…) is still found: that body is held.
    let late = multipart(boundary, &[], &file, &[("model", "whisper-1")]);
    let before = hwm();
    let r = send(gw.addr, "POST", "/v1/audio/transcriptions", &headers, &late);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(String::from_utf8_lossy(&up.last().body[up.last().body.len() - 200..]).contains("whisper-large-v3"));
    eprintln!("25 MiB multipart upload, model after the file: peak RSS grew by {} KiB", hwm().saturating_sub(before));
}

#[test]
fn a_binary_answer_streams_back_as_it_arrives() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config(&up));
    let mut s = connect(gw.addr);
    post_raw(
        &mut s,
        "/v1/audio/speech",
        &[KEY, ("x-fake-gated", "1")],
        &serde_json::to_vec(&json!({"model": "tts-1", "voice": "alloy", "input": "hi"})).unwrap(),
    );
    let mut reader = BufReader::new(s);
    let (status, headers) = read_head(&mut reader);
    assert_eq!((status, headers["content-type"].as_str()), (200, "audio/mpeg"));
    assert_eq!(headers.get("transfer-encoding").map(String::as_str), Some("chunked"));
    // The first piece arrives while the upstream is still held at its gate: nothing is buffered.
    let mut got = read_chunk(&mut reader).unwrap();
    up.gate.open();
    while let Some(piece) = read_chunk(&mut reader) {
        got.extend(piece);
    }
    assert_eq!(got, speech_bytes(48 * 1024));
}

#[test]
fn a_binary_answer_relayed_as_it_arrives_has_the_backend_credential_masked_in_its_headers() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config(&up));
    let r = send(
        gw.addr,
        "POST",
        "/v1/audio/speech",
        &[
            KEY,
            ("content-type", "application/json"),
            ("x-fake-response-header", "request-id=req for sk-upstream-secret"),
        ],
        &serde_json::to_vec(&json!({"model": "tts-1", "voice": "alloy", "input": "hi"})).unwrap(),
    );
    assert_eq!((r.status, r.headers["content-type"].as_str()), (200, "audio/mpeg"));
    assert_eq!(r.headers.get("transfer-encoding").map(String::as_str), Some("chunked"), "relayed as it arrived");
    assert_eq!(r.headers["request-id"], "req for [redacted]");
    assert_eq!(r.body, speech_bytes(48 * 1024));
}

#[test]
fn max_body_bytes_is_honoured_for_streamed_uploads() {
    let up = FakeUpstream::start();
    let mut cfg = config(&up);
    cfg["server"] = json!({"max_body_bytes": 1_048_576});
    let gw = Gateway::start(&cfg);
    let boundary = "b0und";
    let body = multipart(boundary, &[("model", "whisper-1")], &audio(2 * 1024 * 1024), &[]);
    let ctype = format!("multipart/form-data; boundary={boundary}");
    let r = send(gw.addr, "POST", "/v1/audio/transcriptions", &[KEY, ("content-type", &ctype)], &body);
    assert_eq!(r.status, 413);
    assert!(r.json()["error"]["message"].is_string());
    // Chunked, the limit is found while the body streams upstream: the client gets 413.
    let mut s = connect(gw.addr);
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer client-key\r\n\
         content-type: {ctype}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(64 * 1024) {
        if s.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).is_err()
            || s.write_all(piece).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let r = read_response(&mut BufReader::new(s));
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn expect_100_continue_is_answered_when_the_upload_is_read() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config(&up));
    let boundary = "cont";
    let body = multipart(boundary, &[("model", "whisper-1")], &audio(4096), &[]);
    let mut s = connect(gw.addr);
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer client-key\r\n\
         content-type: multipart/form-data; boundary={boundary}\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    reader.read_line(&mut line).unwrap();
    s.write_all(&body).unwrap();
    let r = read_response(&mut reader);
    assert_eq!(r.status, 200, "{}", r.text());
    // An early refusal needs no body: a wrong key is answered at once, and no 100 is sent.
    let mut s = connect(gw.addr);
    let head = head.replace("client-key", "wrong");
    s.write_all(head.as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

#[test]
fn json_bodies_are_routed_by_model_and_path_routes_take_the_rest() {
    let up = FakeUpstream::start();
    let mut cfg = config(&up);
    cfg["routes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"model": "omni-*", "backends": [{"backend": "openai", "model": "omni-upstream"}]}));
    let gw = Gateway::start(&cfg);
    let r = post(gw.addr, "/v1/moderations", &[KEY], &json!({"model": "omni-moderation-latest", "input": "hi"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let last = up.last();
    assert_eq!((last.path.as_str(), last.json()["model"].clone()), ("/v1/moderations", json!("omni-upstream")));
    let r = get(gw.addr, "/v1/files/file-abc?purpose=batch", &[KEY]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().path, "/v1/files/file-abc?purpose=batch", "the query passes through");
    // Whole segments only, and nothing else is routed.
    assert_eq!(get(gw.addr, "/v1/filesystem", &[KEY]).json()["error"]["code"], "unknown_url");
    let r = post(gw.addr, "/v1/moderations", &[KEY], &json!({"model": "unrouted", "input": "hi"}));
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (404, json!("model_not_found")));
    // A model whose route's backends take no passthrough (the mock) does not exist there.
    assert_eq!(post(gw.addr, "/v1/rerank", &[KEY], &json!({"model": "demo"})).status, 404);
}

#[test]
fn paths_the_gateway_answers_stay_its_own_under_a_catch_all_route() {
    let up = FakeUpstream::start();
    let mut cfg = config(&up);
    cfg["routes"] = json!([
        {"model": "demo", "backends": [{"backend": "demo"}]},
        {"passthrough": true, "path": "/v1", "backends": [{"backend": "openai"}]}
    ]);
    let gw = Gateway::start(&cfg);
    let models = get(gw.addr, "/v1/models", &[KEY]).json();
    assert_eq!(models["data"][0]["id"], "demo");
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[KEY], &chat("demo")).status, 200);
    assert_eq!(get(gw.addr, "/health", &[]).status, 200);
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    assert_eq!(get(gw.addr, "/v1/files/file-1", &[KEY]).status, 200);
    assert_eq!(up.requests().len(), 1);
    assert_eq!(get(gw.addr, "/v2/anything", &[KEY]).status, 404, "only /v1 is passed through");
}

#[test]
fn limits_that_count_requests_apply_to_passthrough() {
    let up = FakeUpstream::start();
    let mut cfg = config(&up);
    cfg["limits"] = json!([{"name": "rpm", "key": ["client"], "requests": 2, "per": "1m"}]);
    let gw = Gateway::start(&cfg);
    for _ in 0..2 {
        assert_eq!(get(gw.addr, "/v1/files/file-1", &[KEY]).status, 200);
    }
    let r = get(gw.addr, "/v1/files/file-1", &[KEY]);
    assert_eq!(r.status, 429);
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(up.requests().len(), 2);
}

#[test]
fn a_client_limited_to_some_models_cannot_use_other_routes() {
    let up = FakeUpstream::start();
    let mut cfg = config(&up);
    cfg["clients"] = json!([{"name": "narrow", "key": "client-key", "models": ["whisper-1", "/v1/batches"]}]);
    let gw = Gateway::start(&cfg);
    assert_eq!(get(gw.addr, "/v1/files/file-1", &[KEY]).status, 403);
    assert_eq!(
        post(gw.addr, "/v1/images/generations", &[KEY], &json!({"model": "gpt-image-1", "prompt": "x"})).status,
        403
    );
    assert_eq!(post(gw.addr, "/v1/batches", &[KEY], &json!({"input_file_id": "f"})).status, 200);
    assert!(up.requests().iter().all(|r| r.path == "/v1/batches"));
}

#[test]
fn a_chunked_upload_is_forwarded_whole_and_json_endpoints_refuse_uploads() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config(&up));
    let boundary = "chunky";
    let file = audio(300 * 1024);
    let body = multipart(boundary, &[("model", "whisper-1")], &file, &[]);
    let mut s = connect(gw.addr);
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nhost: t\r\nauthorization: Bearer client-key\r\n\
         content-type: multipart/form-data; boundary={boundary}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    for piece in body.chunks(10_000) {
        s.write_all(format!("{:x}\r\n", piece.len()).as_bytes()).unwrap();
        s.write_all(piece).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut reader = BufReader::new(s);
    let r = read_response(&mut reader);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.last();
    assert_eq!(got.headers.get("transfer-encoding").map(String::as_str), Some("chunked"));
    assert_eq!(got.body.len(), body.len() - "whisper-1".len() + "whisper-large-v3".len());
    // The connection stays usable after a streamed body read to its end.
    post_raw(reader.get_mut(), "/v1/images/generations", &[KEY], br#"{"model":"gpt-image-1","prompt":"x"}"#);
    assert_eq!(read_response(&mut reader).status, 200);
    // The gateway's own JSON endpoints take no uploads.
    let ctype = format!("multipart/form-data; boundary={boundary}");
    let r = send(gw.addr, "POST", "/v1/chat/completions", &[KEY, ("content-type", &ctype)], &body);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("JSON body"), "{}", r.text());
}
