//! The Anthropic ingress over real sockets: paths, error shapes, the demo model, mid-stream errors.

mod common;

use common::*;
use serde_json::json;

fn gateway(up: &FakeUpstream) -> Gateway {
    let mut cfg = config_for(up);
    cfg["backends"].as_array_mut().unwrap().push(json!({
        "name": "claude", "schema": "anthropic", "base_url": format!("http://{}", up.addr),
        "auth": {"type": "header", "key": "sk-ant-upstream-secret"}, "anthropic_version": "2023-06-01"
    }));
    cfg["routes"].as_array_mut().unwrap().push(json!({"model": "claude*", "backends": [{"backend": "claude"}]}));
    cfg["clients"] = json!([{"name": "c", "key": "client-k"}]);
    Gateway::start(&cfg)
}

fn messages(model: &str, stream: bool) -> serde_json::Value {
    json!({"model": model, "max_tokens": 50, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

const KEY: (&str, &str) = ("x-api-key", "client-k");

#[test]
fn anthropic_prefixed_path_and_passthrough_with_beta_header() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let r = post(
        gw.addr,
        "/anthropic/v1/messages",
        &[KEY, ("anthropic-beta", "tools-2024-04-04")],
        &messages("claude-x", false),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["content"][0]["text"], "Bonjour from fake Claude");
    let got = up.last();
    assert_eq!(got.path, "/v1/messages");
    assert_eq!(got.headers["anthropic-beta"], "tools-2024-04-04");
    assert_eq!(got.headers["anthropic-version"], "2023-06-01");
    assert_eq!(got.headers["x-api-key"], "sk-ant-upstream-secret");
    assert_eq!(got.json(), messages("claude-x", false), "passthrough keeps the body");
}

#[test]
fn gateway_errors_on_anthropic_paths_use_anthropic_shape() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let r = post(gw.addr, "/v1/messages", &[], &messages("claude-x", false));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = post(gw.addr, "/v1/messages", &[KEY], &messages("nope", false));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = post(gw.addr, "/v1/messages", &[KEY], &json!({"model": "claude-x"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

#[test]
fn models_in_anthropic_shape_when_anthropic_version_is_sent() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let r = get(gw.addr, "/v1/models", &[KEY, ("anthropic-version", "2023-06-01")]);
    let v = r.json();
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["has_more"], false);
    assert!(v["first_id"].is_string());
}

#[test]
fn demo_mock_answers_anthropic_clients_streaming_and_not() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let r = post(gw.addr, "/v1/messages", &[KEY], &messages("demo", false));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["type"], "message");
    assert!(r.json()["content"][0]["text"].as_str().unwrap().contains("You said: hi"));
    let r = post(gw.addr, "/v1/messages", &[KEY], &messages("demo", true));
    let text = r.text();
    for event in [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ] {
        assert!(text.contains(&format!("event: {event}\n")), "{event} missing in {text}");
    }
    assert!(!text.contains("[DONE]"));
}

#[test]
fn mid_stream_upstream_failure_reaches_anthropic_client_as_error_event() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let r = post(
        gw.addr,
        "/v1/messages",
        &[KEY, ("x-fake-mode", "reset-mid-stream"), ("x-fake-events", "6")],
        &messages("fake-1", true),
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("event: message_start"), "{text}");
    assert!(text.contains("event: error\n"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
}

#[test]
fn openai_client_gets_anthropic_upstream_error_in_openai_shape() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let body = r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}"#;
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[KEY, ("x-fake-mode", "raw"), ("x-fake-status", "400"), ("x-fake-body", body)],
        &chat("claude-x"),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("max_tokens: too large"));
}

#[test]
fn completions_and_embeddings_to_anthropic_backend_are_refused_clearly() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let r = post(gw.addr, "/v1/embeddings", &[KEY], &json!({"model": "claude-x", "input": "x"}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("not supported"));
    assert!(up.requests().is_empty());
}
