//! AWS Bedrock end to end: the real gateway binary in front of a scripted Bedrock stand-in
//! (`tests/sdk/bedrock_standin.py`), which verifies every request's SigV4 signature with botocore and
//! answers Converse / InvokeModel bodies and binary event streams. The stand-in itself is checked
//! against AWS's own SDK (boto3) first; then the official OpenAI and Anthropic SDKs, and raw requests,
//! go through the gateway to it.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};

use common::*;
use serde_json::{json, Value};

/// The Bedrock stand-in, run by the SDK virtualenv's python; killed on drop.
struct BedrockStandin {
    addr: SocketAddr,
    child: Child,
    _stdout: BufReader<ChildStdout>,
}

impl BedrockStandin {
    fn start() -> BedrockStandin {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/bedrock_standin.py");
        let mut child = Command::new(sdk_python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Bedrock stand-in");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port: u16 = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the stand-in said {line:?}"));
        BedrockStandin { addr: SocketAddr::from(([127, 0, 0, 1], port)), child, _stdout: out }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request the stand-in received, oldest first.
    fn requests(&self) -> Vec<Value> {
        get(self.addr, "/_requests", &[]).json().as_array().cloned().unwrap_or_default()
    }
}

impl Drop for BedrockStandin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const KEY: &str = "sdk-bedrock-key";
const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const ARN: &str =
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0";

fn auth() -> Value {
    json!({"type": "aws", "access_key_id": "AKIDSTANDIN", "secret_access_key": "standin/secret/key",
           "session_token": "standin-session-token"})
}

/// The gateway config the SDK scripts expect (their header comments), plus a demo fallback route.
fn config(standin: &BedrockStandin) -> Value {
    json!({
        "backends": [
            {"name": "bedrock", "schema": "bedrock", "region": "us-east-1", "base_url": standin.base_url(), "auth": auth()},
            {"name": "bedrock-claude", "schema": "bedrock_anthropic", "region": "us-east-1",
             "base_url": standin.base_url(), "auth": auth()},
            {"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 1},
            {"name": "bedrock-nokeys", "schema": "bedrock", "region": "eu-west-1", "base_url": standin.base_url(),
             "auth": {"type": "aws", "access_key_id_env": "SWITCHYARD_TEST_UNSET_AWS_ID",
                      "secret_access_key_env": "SWITCHYARD_TEST_UNSET_AWS_SECRET"}}
        ],
        "routes": [
            {"model": "bedrock-converse", "backends": [{"backend": "bedrock", "model": HAIKU}]},
            {"model": "bedrock-claude", "backends": [{"backend": "bedrock-claude", "model": ARN}]},
            {"model": "bedrock-throttle", "backends": [{"backend": "bedrock", "model": "standin-throttle"}]},
            {"model": "bedrock-claude-throttle", "backends": [{"backend": "bedrock-claude", "model": "standin-throttle"}]},
            {"model": "bedrock-stream-throttle", "backends": [{"backend": "bedrock", "model": "standin-stream-throttle"}]},
            {"model": "bedrock-claude-stream-throttle",
             "backends": [{"backend": "bedrock-claude", "model": "standin-stream-throttle"}]},
            {"model": "throttled-then-demo", "backends": [{"backend": "bedrock", "model": "standin-throttle"},
                                                          {"backend": "demo", "priority": 1}]},
            {"model": "nokeys", "backends": [{"backend": "bedrock-nokeys", "model": HAIKU}]}
        ],
        "clients": [{"name": "sdk", "key": KEY}]
    })
}

#[test]
fn the_standin_is_what_aws_sdk_expects() {
    let out = Command::new(sdk_python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/bedrock_standin_selftest.py"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn openai_sdk_through_bedrock_converse_and_invoke_model() {
    let standin = BedrockStandin::start();
    let gw = Gateway::start(&config(&standin));
    run_sdk_script("openai_sdk_bedrock.py", &gw, KEY, &[]);
    let requests = standin.requests();
    assert!(!requests.is_empty());
    assert!(requests.iter().all(|r| r["signature_ok"] == true), "every request was signed right: {requests:#?}");
    assert!(requests.iter().all(|r| r["headers"].get("x-api-key").is_none()));
    assert!(!requests.iter().any(|r| r["headers"].to_string().contains(KEY)), "the client's key never goes upstream");
}

#[test]
fn anthropic_sdk_through_bedrock_converse_and_invoke_model() {
    let standin = BedrockStandin::start();
    let gw = Gateway::start(&config(&standin));
    run_sdk_script("anthropic_sdk_bedrock.py", &gw, KEY, &[]);
    let requests = standin.requests();
    assert!(requests.iter().all(|r| r["signature_ok"] == true), "{requests:#?}");
    let invoke = requests.iter().find(|r| r["operation"] == "invoke").expect("an InvokeModel request");
    assert_eq!(invoke["model_id"], ARN);
    assert_eq!(invoke["body"]["anthropic_version"], "bedrock-2023-05-31");
    assert!(invoke["body"].get("model").is_none() && invoke["body"].get("stream").is_none());
}

#[test]
fn bedrock_requests_are_signed_with_the_session_token_and_the_model_in_the_path() {
    let standin = BedrockStandin::start();
    let gw = Gateway::start(&config(&standin));
    let auth = [("authorization", "Bearer sdk-bedrock-key")];
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &auth,
        &json!({"model": "bedrock-converse",
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert!(v["choices"][0]["message"]["content"].as_str().unwrap().starts_with("Bonjour from fake Bedrock"));
    assert_eq!(v["usage"]["prompt_tokens"], 14);
    let sent = standin.requests().pop().unwrap();
    assert_eq!(sent["path"], "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse");
    assert_eq!(sent["headers"]["x-amz-security-token"], "standin-session-token");
    assert!(sent["headers"]["authorization"].as_str().unwrap().starts_with("AWS4-HMAC-SHA256 Credential=AKIDSTANDIN/"));
    assert_eq!(sent["body"]["inferenceConfig"]["maxTokens"], 20);
    assert!(sent["body"].get("model").is_none());
    assert!(!r.text().contains("standin/secret/key") && !gw.log().contains("standin/secret/key"));
}

#[test]
fn bedrock_errors_keep_their_status_in_the_clients_shape_and_429_falls_back() {
    let standin = BedrockStandin::start();
    let gw = Gateway::start(&config(&standin));
    let auth = [("authorization", "Bearer sdk-bedrock-key")];
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(gw.addr, "/v1/chat/completions", &auth, &chat("bedrock-throttle"));
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "ThrottlingException");
    let r = post(
        gw.addr,
        "/v1/messages",
        &[("x-api-key", KEY)],
        &json!({"model": "bedrock-claude-throttle",
        "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    let r = post(gw.addr, "/v1/chat/completions", &auth, &chat("throttled-then-demo"));
    assert_eq!(r.status, 200, "a 429 before the first byte falls back: {}", r.text());
    assert!(r.json()["choices"][0]["message"]["content"].as_str().unwrap().contains("Switchyard mock"));
    let r = post(gw.addr, "/v1/embeddings", &auth, &json!({"model": "bedrock-converse", "input": "hi"}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("not supported"), "{}", r.text());
    let r = post(gw.addr, "/v1/chat/completions", &auth, &chat("nokeys"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("SWITCHYARD_TEST_UNSET_AWS_ID"), "names what is missing: {}", r.text());
}

#[test]
fn anthropic_count_tokens_goes_through_bedrock_count_tokens() {
    let standin = BedrockStandin::start();
    let gw = Gateway::start(&config(&standin));
    for model in ["bedrock-claude", "bedrock-converse"] {
        let r = post(
            gw.addr,
            "/v1/messages/count_tokens",
            &[("x-api-key", KEY)],
            &json!({"model": model,
            "system": "Be brief.", "messages": [{"role": "user", "content": "Hello"}]}),
        );
        assert_eq!(r.status, 200, "{model}: {}", r.text());
        assert_eq!(r.json(), json!({"input_tokens": 8}), "{model}");
    }
    let ops: Vec<Value> = standin.requests().iter().map(|r| r["operation"].clone()).collect();
    assert_eq!(ops, [json!("count-tokens"), json!("count-tokens")]);
}
