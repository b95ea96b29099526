//! The official Python SDKs against the running gateway. The virtualenv (target/sdk-venv) is made on
//! first use from tests/sdk/requirements.txt (`common::sdk_python`); .ci/run prepares it ahead of time.

mod common;

use common::*;
use serde_json::json;

#[test]
fn openai_python_sdk_chat_completions_embeddings_models_and_errors() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg["clients"] = json!([{"name": "sdk", "key": "sdk-test-key"}]);
    let gw = Gateway::start(&cfg);
    run_sdk_script("openai_sdk.py", &gw, "sdk-test-key", &[]);
    assert!(!up.requests().iter().any(|r| r.headers.values().any(|v| v.contains("sdk-test-key"))));
}

/// Both backend kinds behind one gateway: an Anthropic one (`claude*`) and an OpenAI-compatible one.
fn two_kind_gateway(up: &FakeUpstream) -> Gateway {
    let mut cfg = config_for(up);
    cfg["backends"].as_array_mut().unwrap().push(json!({
        "name": "claude", "schema": "anthropic", "base_url": format!("http://{}", up.addr),
        "auth": {"type": "header", "key": "sk-ant-upstream-secret"}
    }));
    cfg["routes"].as_array_mut().unwrap().push(json!({"model": "claude*", "backends": [{"backend": "claude"}]}));
    cfg["clients"] = json!([{"name": "sdk", "key": "sdk-test-key"}]);
    Gateway::start(&cfg)
}

#[test]
fn anthropic_python_sdk_against_anthropic_backend() {
    let up = FakeUpstream::start();
    let gw = two_kind_gateway(&up);
    run_sdk_script(
        "anthropic_sdk.py",
        &gw,
        "sdk-test-key",
        &[("SWITCHYARD_MODEL", "claude-fake"), ("BACKEND_KIND", "anthropic")],
    );
    let sent = up.requests();
    assert!(sent.iter().all(|r| r.path.starts_with("/v1/messages")));
    assert!(sent
        .iter()
        .all(|r| r.headers["x-api-key"] == "sk-ant-upstream-secret" && r.headers.contains_key("anthropic-version")));
}

#[test]
fn anthropic_python_sdk_against_openai_compatible_backend() {
    let up = FakeUpstream::start();
    let gw = two_kind_gateway(&up);
    run_sdk_script(
        "anthropic_sdk.py",
        &gw,
        "sdk-test-key",
        &[("SWITCHYARD_MODEL", "fake-1"), ("BACKEND_KIND", "openai")],
    );
    let sent = up.requests();
    assert!(sent.iter().all(|r| r.path == "/v1/chat/completions"), "{sent:?}");
    assert!(sent.iter().all(|r| r.headers["authorization"] == "Bearer sk-upstream-secret"));
}

#[test]
fn openai_python_sdk_against_anthropic_backend() {
    let up = FakeUpstream::start();
    let gw = two_kind_gateway(&up);
    run_sdk_script("openai_sdk_to_anthropic.py", &gw, "sdk-test-key", &[("SWITCHYARD_MODEL", "claude-fake")]);
    let first = up.requests().into_iter().next().unwrap();
    assert_eq!(first.path, "/v1/messages");
    assert_eq!(first.json()["system"], "Be brief.");
    assert_eq!(first.json()["max_tokens"], 4096);
}
