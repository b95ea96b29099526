//! The OpenAI Responses API through the real gateway: passed through to OpenAI backends (ids tagged with
//! the backend, calls by id routed back to it), translated for every other backend, with the official
//! SDK (tests/sdk/openai_responses.py) and over raw sockets.

mod common;

use std::io::BufReader;
use std::time::Duration;

use common::*;
use serde_json::json;

const KEY: (&str, &str) = ("authorization", "Bearer sdk-test-key");

/// A gateway with an OpenAI backend serving `/responses` (`gpt*`), an OpenAI-compatible one without it
/// (`compat*`, `"responses": false`), an Anthropic one (`claude*`) and the mock (`demo`).
fn gateway(up: &FakeUpstream) -> Gateway {
    Gateway::start(&config(up))
}

fn config(up: &FakeUpstream) -> serde_json::Value {
    json!({
        "backends": [
            {"name": "openai", "schema": "openai", "base_url": up.base_url(),
             "auth": {"type": "bearer", "key": "sk-upstream-secret"}},
            {"name": "compat", "schema": "openai", "base_url": up.base_url(), "responses": false,
             "auth": {"type": "bearer", "key": "sk-compat-secret"}},
            {"name": "claude", "schema": "anthropic", "base_url": format!("http://{}", up.addr),
             "auth": {"type": "header", "key": "sk-ant-upstream-secret"}},
            {"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 1}
        ],
        "routes": [
            {"model": "demo", "backends": [{"backend": "demo"}]},
            {"model": "gpt-renamed", "backends": [{"backend": "openai", "model": "gpt-upstream"}]},
            {"model": "gpt*", "backends": [{"backend": "openai"}]},
            {"model": "compat*", "backends": [{"backend": "compat"}]},
            {"model": "claude*", "backends": [{"backend": "claude"}]},
            {"model": "mixed", "backends": [{"backend": "claude"}, {"backend": "openai", "priority": 1}]}
        ],
        "clients": [{"name": "sdk", "key": "sdk-test-key"}]
    })
}

/// The value of a usage counter in /metrics for a route (0 when absent).
/// Tokens of `kind` (`input`, `output`, `cached_input`…) counted for `model` in /metrics.
fn tokens(gw: &Gateway, kind: &str, model: &str) -> u64 {
    let (kind, model) = (format!("gen_ai_token_type=\"{kind}\""), format!("gen_ai_request_model=\"{model}\""));
    get(gw.addr, "/metrics", &[])
        .text()
        .lines()
        .filter(|l| l.starts_with("gen_ai_client_token_usage_sum{") && l.contains(&kind) && l.contains(&model))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn run_script(gw: &Gateway, model: &str, kind: &str) {
    run_sdk_script("openai_responses.py", gw, "sdk-test-key", &[("SWITCHYARD_MODEL", model), ("BACKEND_KIND", kind)]);
}

#[test]
fn openai_sdk_responses_pass_through_to_an_openai_backend() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    run_script(&gw, "gpt-4o-mini", "passthrough");
    let sent = up.requests();
    assert!(sent.iter().all(|r| r.path.starts_with("/v1/responses")), "{sent:?}");
    assert!(sent.iter().all(|r| r.headers["authorization"] == "Bearer sk-upstream-secret"));
    assert!(!sent.iter().any(|r| r.headers.values().any(|v| v.contains("sdk-test-key"))));
    // Calls by id reach the backend with its own id: the gateway's tag is gone.
    let by_id: Vec<&Received> = sent.iter().filter(|r| r.path.starts_with("/v1/responses/resp_")).collect();
    assert!(by_id.len() >= 4, "{by_id:?}");
    assert!(by_id.iter().all(|r| r.path.starts_with("/v1/responses/resp_fake")), "{by_id:?}");
    let continued = sent.iter().find(|r| r.path == "/v1/responses" && !r.json()["previous_response_id"].is_null());
    let previous = continued.expect("a continuation was sent").json()["previous_response_id"].clone();
    assert!(previous.as_str().unwrap().starts_with("resp_fake"), "{previous}");
}

#[test]
fn openai_sdk_responses_are_translated_for_an_anthropic_backend() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    run_script(&gw, "claude-fake", "translated");
    let sent = up.requests();
    assert!(sent.iter().all(|r| r.path == "/v1/messages"), "{:?}", sent.iter().map(|r| &r.path).collect::<Vec<_>>());
    assert!(sent.iter().all(|r| r.headers["x-api-key"] == "sk-ant-upstream-secret"));
    let first = sent[0].json();
    assert_eq!(first["system"], "Be brief.");
    assert_eq!(first["messages"][0]["content"], "Hello");
    // The round trip's second turn carries the call and its result as Anthropic blocks.
    let follow = sent.iter().map(Received::json).find(|b| b.to_string().contains("tool_result")).unwrap();
    assert_eq!(follow["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(follow["messages"][2]["content"][0]["content"], "18C and sunny");
}

#[test]
fn openai_sdk_responses_are_translated_for_a_server_without_the_responses_api() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    run_script(&gw, "compat-1", "translated");
    let sent = up.requests();
    assert!(sent.iter().all(|r| r.path == "/v1/chat/completions"), "{sent:?}");
    assert!(sent.iter().all(|r| r.headers["authorization"] == "Bearer sk-compat-secret"));
    let schema = sent.iter().map(Received::json).find(|b| !b["response_format"].is_null()).unwrap();
    assert_eq!(schema["response_format"]["json_schema"]["name"], "Weather");
}

#[test]
fn passthrough_renames_the_model_tags_ids_and_reads_usage() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let r = post(gw.addr, "/v1/responses", &[KEY], &json!({"model": "gpt-renamed", "input": "hi"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().json()["model"], "gpt-upstream");
    let id = r.json()["id"].as_str().unwrap().to_string();
    let (tag, rest) = id.strip_prefix("resp_").unwrap().split_at(8);
    assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()) && rest.starts_with("_fake"), "{id}");
    assert!(eventually(Duration::from_secs(2), || tokens(&gw, "input", "gpt-renamed") == 12));
    assert_eq!(tokens(&gw, "cached_input", "gpt-renamed"), 2);
    // A streamed response: its ids are tagged in every event, its usage read from response.completed.
    let r = post(gw.addr, "/v1/responses", &[KEY], &json!({"model": "gpt-4o", "input": "hi", "stream": true}));
    let text = r.text();
    assert!(text.contains(&format!("\"id\":\"resp_{tag}_fake")), "{text}");
    assert!(!text.contains("\"id\":\"resp_fake"), "{text}");
    assert!(eventually(Duration::from_secs(2), || tokens(&gw, "output", "gpt-4o") == 5));
}

#[test]
fn a_continuation_is_pinned_to_the_backend_that_stored_the_response() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let stored = post(gw.addr, "/v1/responses", &[KEY], &json!({"model": "gpt-4o", "input": "hi"})).json();
    let id = stored["id"].as_str().unwrap();
    // `mixed` tries claude first; the tagged id sends the continuation to the openai backend.
    let r =
        post(gw.addr, "/v1/responses", &[KEY], &json!({"model": "mixed", "input": "more", "previous_response_id": id}));
    assert_eq!(r.status, 200, "{}", r.text());
    let last = up.last();
    assert_eq!(last.path, "/v1/responses");
    assert!(last.json()["previous_response_id"].as_str().unwrap().starts_with("resp_fake"));
    assert_eq!(r.json()["previous_response_id"], id);
    // Without one, `mixed` is translated for claude, where continuing is a 400 naming the field.
    let r = post(
        gw.addr,
        "/v1/responses",
        &[KEY],
        &json!({"model": "claude-x", "input": "x", "previous_response_id": "resp_1"}),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("previous_response_id"), "{}", r.text());
}

#[test]
fn calls_on_ids_the_gateway_did_not_tag_are_404_in_openais_shape() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    for path in ["/v1/responses/resp_abc", "/v1/responses/resp_0123abcd_x/input_items", "/v1/responses/msg_1"] {
        let r = get(gw.addr, path, &[KEY]);
        assert_eq!(r.status, 404, "{path}");
        let e = &r.json()["error"];
        assert_eq!(e["type"], "invalid_request_error", "{path}");
        assert!(e["message"].as_str().unwrap().contains("not found"), "{path}");
    }
    assert!(up.requests().is_empty(), "nothing was sent upstream");
    let r = post(gw.addr, "/v1/responses/resp_abc/cancel", &[KEY], &json!({}));
    assert_eq!(r.status, 404);
    assert_eq!(get(gw.addr, "/v1/responses/resp_abc/cancel", &[KEY]).status, 405);
    assert_eq!(get(gw.addr, "/v1/responses/resp_abc", &[]).status, 401, "authentication comes first");
}

#[test]
fn built_in_tools_and_stored_state_get_a_400_naming_them_when_translated() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    for (body, named) in [
        (
            json!({"model": "claude-x", "input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}),
            "file_search",
        ),
        (
            json!({"model": "claude-x", "input": "x", "tools": [{"type": "computer_use_preview"}]}),
            "computer_use_preview",
        ),
        (json!({"model": "compat-x", "input": "x", "tools": [{"type": "web_search_preview"}]}), "web_search_preview"),
        (json!({"model": "demo", "input": "x", "store": true}), "store"),
        (json!({"model": "claude-x", "input": [{"type": "item_reference", "id": "msg_1"}]}), "item_reference"),
    ] {
        let r = post(gw.addr, "/v1/responses", &[KEY], &body);
        assert_eq!(r.status, 400, "{body}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(named), "{}", r.text());
    }
    assert!(up.requests().is_empty());
    // Passed through, the backend decides.
    let r = post(
        gw.addr,
        "/v1/responses",
        &[KEY],
        &json!({"model": "gpt-4o", "input": "x", "tools": [{"type": "web_search"}]}),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn input_tokens_pass_through_and_are_unsupported_when_translated() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let r = post(gw.addr, "/v1/responses/input_tokens", &[KEY], &json!({"model": "gpt-4o", "input": "hi"}));
    assert_eq!((r.status, r.json()["input_tokens"].clone()), (200, json!(42)));
    let r = post(gw.addr, "/v1/responses/input_tokens", &[KEY], &json!({"model": "claude-x", "input": "hi"}));
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn a_translated_stream_cut_mid_way_ends_with_error_and_response_failed() {
    let up = FakeUpstream::start();
    let gw = gateway(&up);
    let mut s = connect(gw.addr);
    post_raw(
        &mut s,
        "/v1/responses",
        &[KEY, ("x-fake-mode", "reset-mid-stream"), ("x-fake-events", "6")],
        &serde_json::to_vec(&json!({"model": "compat-1", "input": "hi", "stream": true})).unwrap(),
    );
    let text = read_response(&mut BufReader::new(s)).text();
    let events: Vec<serde_json::Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"response.created"), "{text}");
    assert_eq!(&kinds[kinds.len() - 2..], ["error", "response.failed"], "{text}");
    assert!(!kinds.contains(&"response.completed"));
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence_number"], i, "{text}");
    }
}

#[test]
fn responses_on_the_mock_backend_work_without_keys() {
    let gw = Gateway::start(&json!({"backends": [{"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 1}],
                                    "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}]}));
    let r = post(gw.addr, "/v1/responses", &[], &json!({"model": "demo", "input": "ping"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["output"][0]["content"][0]["text"].as_str().unwrap().contains("ping"));
}
