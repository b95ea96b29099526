//! What the gateway says when things fail upstream or a client sends absurd values: the backend's
//! credential never reaches the client (in an error body or a relayed header, whatever the status),
//! `error.code` is always a string in OpenAI-shaped errors, and an absurd model name is not echoed in
//! full.

mod common;

use common::*;
use serde_json::json;

const KEY: &str = "sk-upstream-secret";

#[test]
fn the_backend_credential_is_masked_in_relayed_error_bodies_whatever_the_status() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let json_body = format!(r#"{{"error":{{"message":"key {KEY} is over quota","type":"x","code":"quota"}}}}"#);
    for status in ["400", "402", "404", "429", "500", "503"] {
        let r = post(
            gw.addr,
            "/v1/chat/completions",
            &[("x-fake-mode", "raw"), ("x-fake-status", status), ("x-fake-body", &json_body)],
            &chat("fake-model"),
        );
        assert_eq!(r.status.to_string(), status);
        let text = r.text();
        assert!(!text.contains(KEY), "{status}: {text}");
        assert!(text.contains("key [redacted] is over quota"), "{status}: {text}");
    }
    // A non-JSON body is wrapped in the error shape, masked too.
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("x-fake-mode", "raw"), ("x-fake-status", "502"), ("x-fake-body", &format!("bad key {KEY}"))],
        &chat("fake-model"),
    );
    assert_eq!(r.status, 502);
    assert!(!r.text().contains(KEY) && r.text().contains("bad key [redacted]"), "{}", r.text());
    // Translated for an Anthropic client: still masked.
    let r = post(
        gw.addr,
        "/v1/messages",
        &[("x-fake-mode", "raw"), ("x-fake-status", "400"), ("x-fake-body", &json_body)],
        &json!({"model": "fake-model", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 400);
    assert!(!r.text().contains(KEY), "{}", r.text());
}

#[test]
fn the_backend_credential_is_masked_in_relayed_headers_whatever_the_status() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    for status in ["200", "429"] {
        let r = post(
            gw.addr,
            "/v1/chat/completions",
            &[
                ("x-fake-status", status),
                ("x-fake-response-header", &format!("x-ratelimit-limit-requests=acct {KEY} 60")),
            ],
            &chat("fake-model"),
        );
        assert_eq!(r.status.to_string(), status);
        assert_eq!(r.headers["x-ratelimit-limit-requests"], "acct [redacted] 60", "{status}");
    }
}

#[test]
fn openai_error_codes_are_strings_even_when_the_upstream_sends_null_or_a_number() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    for (body, status, code) in [
        (
            r#"{"error":{"message":"m","type":"invalid_request_error","param":null,"code":null}}"#,
            "400",
            "invalid_request",
        ),
        (r#"{"error":{"message":"m","type":"BadRequestError","param":null,"code":400}}"#, "400", "400"),
        (r#"{"error":{"message":"m","type":"server_error","code":null}}"#, "500", "internal_error"),
        (r#"{"error":{"message":"m","type":"x","code":"kept"}}"#, "418", "kept"),
    ] {
        let r = post(
            gw.addr,
            "/v1/chat/completions",
            &[("x-fake-mode", "raw"), ("x-fake-status", status), ("x-fake-body", body)],
            &chat("fake-model"),
        );
        assert_eq!(r.json()["error"]["code"], code, "{body}");
        assert_eq!(r.json()["error"]["message"], "m");
    }
    // The gateway's own errors, from every layer.
    for r in [
        post(gw.addr, "/v1/chat/completions", &[], &json!({"messages": []})),
        post(gw.addr, "/v1/chat/completions", &[], &chat("no-such-model")),
        get(gw.addr, "/nowhere", &[]),
        get(gw.addr, "/v1/chat/completions", &[]),
    ] {
        assert!(r.json()["error"]["code"].is_string(), "{}", r.text());
    }
}

#[test]
fn an_absurd_model_name_is_not_echoed_in_full() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let model = "m".repeat(5 << 20);
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat(&model));
    assert_eq!(r.status, 404);
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.len() < 400, "{} bytes", message.len());
    assert!(message.contains(&format!("{}…", "m".repeat(256))), "{message}");
    let r = post(
        gw.addr,
        "/v1/messages",
        &[],
        &json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 404);
    assert!(r.body.len() < 600, "{} bytes", r.body.len());
    assert!(up.requests().is_empty());
}
