//! Google (Gemini API, Vertex AI: Gemini and Claude) and Azure OpenAI end to end: the real gateway binary
//! in front of a scripted stand-in (`tests/sdk/google_azure_standin.py`) that is also the token endpoint:
//! it generates an RSA key pair, writes a service-account key file for it, verifies every JWT the gateway
//! signs with Google's own library (google-auth) and issues tokens that expire after a few seconds, checks
//! Entra ID's form fields, and checks each API request's path, api-version and credential (an issued,
//! unexpired token, or the static key). The official OpenAI and Anthropic SDKs then go through the gateway.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The stand-in, run by the SDK virtualenv's python; killed on drop.
struct Standin {
    addr: SocketAddr,
    key_file: PathBuf,
    child: Child,
    _stdout: BufReader<ChildStdout>,
    _dir: TempDir,
}

impl Standin {
    /// Starts with tokens that live `ttl_secs`.
    fn start(ttl_secs: u64) -> Standin {
        let dir = TempDir::new("google-azure");
        let key_file = dir.0.join("service-account.json");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/google_azure_standin.py");
        let mut child = Command::new(sdk_python())
            .arg(script)
            .arg("--key-file")
            .arg(&key_file)
            .env("STANDIN_TOKEN_TTL", ttl_secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the stand-in");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port: u16 = line
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the stand-in said {line:?}"));
        Standin { addr: SocketAddr::from(([127, 0, 0, 1], port)), key_file, child, _stdout: out, _dir: dir }
    }

    fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn get(&self, path: &str) -> Value {
        get(self.addr, path, &[]).json()
    }

    fn requests(&self) -> Vec<Value> {
        self.get("/_requests").as_array().cloned().unwrap_or_default()
    }

    fn exchanges(&self) -> Vec<Value> {
        self.get("/_exchanges").as_array().cloned().unwrap_or_default()
    }

    fn fail(&self, on: bool) {
        post(self.addr, "/_fail", &[], &json!({"on": on}));
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const KEY: &str = "sdk-google-azure-key";
const ENTRA_SECRET: &str = "standin/entra+secret=&";

fn service_account(standin: &Standin) -> Value {
    json!({"type": "gcp_service_account", "credentials_file": standin.key_file})
}

fn entra(standin: &Standin, secret_env: &str) -> Value {
    json!({"type": "azure_entra", "tenant_id": "standin-tenant", "client_id": "standin-client",
           "client_secret_env": secret_env, "authority": standin.base_url()})
}

/// The gateway config the SDK scripts expect (see their header comments).
fn config(standin: &Standin) -> Value {
    let base = standin.base_url();
    json!({
        "backends": [
            {"name": "vertex-claude", "schema": "vertex_anthropic", "project": "standin-project", "region": "us-east5",
             "base_url": base, "auth": service_account(standin)},
            {"name": "vertex", "schema": "vertex", "project": "standin-project", "region": "global",
             "base_url": base, "auth": service_account(standin)},
            {"name": "gemini", "schema": "gemini", "base_url": base,
             "auth": {"type": "header", "key": "standin-gemini-key"}},
            {"name": "azure", "schema": "azure_openai", "base_url": base, "api_version": "2024-10-21",
             "auth": {"type": "header", "key": "standin-azure-key"}},
            {"name": "azure-entra", "schema": "azure_openai", "base_url": base,
             "auth": entra(standin, "SWITCHYARD_TEST_ENTRA_SECRET")}
        ],
        "routes": [
            {"model": "vertex-claude", "backends": [{"backend": "vertex-claude", "model": "claude-3-5-sonnet-v2@20241022"}]},
            {"model": "vertex-claude-throttle", "backends": [{"backend": "vertex-claude", "model": "claude-throttle"}]},
            {"model": "vertex-gemini", "backends": [{"backend": "vertex", "model": "gemini-2.0-flash-001"}]},
            {"model": "vertex-gemini-throttle", "backends": [{"backend": "vertex", "model": "gemini-throttle"}]},
            {"model": "vertex-gemini-unsafe", "backends": [{"backend": "vertex", "model": "gemini-unsafe"}]},
            {"model": "vertex-embedding", "backends": [{"backend": "vertex", "model": "text-embedding-005"}]},
            {"model": "gemini", "backends": [{"backend": "gemini", "model": "gemini-2.0-flash"}]},
            {"model": "gemini-throttle", "backends": [{"backend": "gemini", "model": "gemini-throttle"}]},
            {"model": "gemini-unsafe", "backends": [{"backend": "gemini", "model": "gemini-unsafe"}]},
            {"model": "gemini-embedding", "backends": [{"backend": "gemini", "model": "text-embedding-004"}]},
            {"model": "gemini-echo", "backends": [{"backend": "gemini", "model": "gemini-echo-credential"}]},
            {"model": "vertex-gemini-echo", "backends": [{"backend": "vertex", "model": "gemini-echo-credential"}]},
            {"model": "azure-gpt", "backends": [{"backend": "azure", "model": "gpt-4o-prod"}]},
            {"model": "azure-entra", "backends": [{"backend": "azure-entra", "model": "gpt-4o-prod"}]},
            {"model": "azure-filtered", "backends": [{"backend": "azure", "model": "gpt-4o-filtered-prompt"}]},
            {"model": "azure-filtered-output", "backends": [{"backend": "azure", "model": "gpt-4o-filtered-output"}]},
            {"model": "azure-throttle", "backends": [{"backend": "azure", "model": "gpt-4o-throttle"}]},
            {"model": "azure-embedding", "backends": [{"backend": "azure", "model": "te3-small"}]},
            {"model": "azure-instruct", "backends": [{"backend": "azure", "model": "gpt-35-instruct"}]}
        ],
        "clients": [{"name": "sdk", "key": KEY}]
    })
}

fn start(standin: &Standin) -> Gateway {
    start_with(&config(standin))
}

fn start_with(cfg: &Value) -> Gateway {
    Gateway::start_with_env(cfg, &[("SWITCHYARD_TEST_ENTRA_SECRET", ENTRA_SECRET)])
}

fn message(model: &str) -> Value {
    json!({"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]})
}

const ANTHROPIC: [(&str, &str); 1] = [("x-api-key", KEY)];
const OPENAI: [(&str, &str); 1] = [("authorization", "Bearer sdk-google-azure-key")];

#[test]
fn service_account_tokens_refresh_ahead_one_exchange_at_a_time_under_64_concurrent_requests() {
    let ttl = 4;
    let standin = Standin::start(ttl);
    let gw = start(&standin);
    let run_for = Duration::from_secs(9);
    let started = Instant::now();
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let first_failure = Arc::new(std::sync::Mutex::new(None));
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (ok, failed, first_failure, addr) = (ok.clone(), failed.clone(), first_failure.clone(), gw.addr);
            std::thread::spawn(move || {
                while started.elapsed() < run_for {
                    let r = post(addr, "/v1/messages", &ANTHROPIC, &message("vertex-claude"));
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_failure.lock().unwrap().get_or_insert(format!("{} {}", r.status, r.text()));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request fails: {:?}", first_failure.lock().unwrap());
    let exchanges = standin.exchanges();
    let stats = standin.get("/_stats");
    assert!(exchanges.iter().all(|e| e["ok"] == true && e["kind"] == "google"), "{exchanges:#?}");
    assert_eq!(stats["max_concurrent_exchanges"], 1, "one exchange at a time: {stats}");
    assert_eq!(stats["expired_token_uses"], 0, "no request used an expired token");
    // The first exchange finds no token; every later one starts while the previous token is valid.
    assert!(exchanges[1..].iter().all(|e| e["ahead"] == true), "refreshed ahead of expiry: {exchanges:#?}");
    // Tokens are refreshed half-way through their 4 s life (the 5-minute default is longer than that).
    let most = (elapsed / (ttl as f64 / 2.0)).ceil() as usize + 1;
    assert!((3..=most).contains(&exchanges.len()), "{} exchanges in {elapsed:.1} s (at most {most})", exchanges.len());
    let requests = standin.requests();
    assert_eq!(requests.len(), ok.load(Ordering::Relaxed));
    assert!(requests.iter().all(|r| r["token_ok"] == true));
    let distinct: std::collections::HashSet<&str> = requests.iter().filter_map(|r| r["token"].as_str()).collect();
    assert!(distinct.len() >= 3, "requests moved to the refreshed tokens");
    assert!(!gw.log().contains("PRIVATE KEY") && !gw.log().contains("ya29"));
}

#[test]
fn a_failing_token_endpoint_keeps_the_old_token_while_valid_then_answers_503_naming_the_credential() {
    let standin = Standin::start(6);
    let gw = start(&standin);
    let r = post(gw.addr, "/v1/messages", &ANTHROPIC, &message("vertex-claude"));
    assert_eq!(r.status, 200, "{}", r.text());
    let first_token = standin.requests()[0]["token"].as_str().unwrap().to_string();
    standin.fail(true);
    // Until the token expires, requests keep succeeding with it, refresh failures notwithstanding.
    let mut served_after_failure = 0;
    let refused = loop {
        let r = post(gw.addr, "/v1/messages", &ANTHROPIC, &message("vertex-claude"));
        if r.status != 200 {
            break r;
        }
        let failures = standin.exchanges().iter().filter(|e| e["ok"] == false).count();
        if failures > 0 {
            served_after_failure += 1;
        }
        assert_eq!(standin.requests().last().unwrap()["token"], first_token.as_str());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(served_after_failure > 0, "the old token served requests after a failed refresh");
    assert_eq!(refused.status, 503, "{}", refused.text());
    let v = refused.json();
    assert_eq!((v["type"].as_str(), v["error"]["type"].as_str()), (Some("error"), Some("api_error")), "{v}");
    let said = v["error"]["message"].as_str().unwrap();
    assert!(said.contains("gateway@standin-project.iam.gserviceaccount.com"), "names the credential: {said}");
    assert!(said.contains("temporarily_unavailable"), "says why: {said}");
    assert!(!said.contains("PRIVATE") && !refused.text().contains("assertion"));
    assert_eq!(standin.get("/_stats")["expired_token_uses"], 0);
    // The endpoint recovers: the next try after the back-off gets a token.
    standin.fail(false);
    assert!(
        eventually(Duration::from_secs(30), || {
            post(gw.addr, "/v1/messages", &ANTHROPIC, &message("vertex-claude")).status == 200
        }),
        "recovers: {}",
        gw.log()
    );
}

#[test]
fn entra_form_fields_are_verified_and_its_token_authorizes_azure_and_a_wrong_secret_is_a_503() {
    let standin = Standin::start(60);
    let gw = start(&standin);
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &OPENAI,
        &json!({"model": "azure-entra",
        "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = standin.requests().pop().unwrap();
    assert!(sent["headers"]["authorization"].as_str().unwrap().starts_with("Bearer entra-"));
    assert!(sent["headers"].get("api-key").is_none());
    assert_eq!(sent["token_ok"], true);
    assert_eq!(sent["path"], "/openai/deployments/gpt-4o-prod/chat/completions");
    assert_eq!(sent["query"], "api-version=2024-10-21");
    let exchanges = standin.exchanges();
    assert_eq!((exchanges.len(), &exchanges[0]["kind"], &exchanges[0]["ok"]), (1, &json!("entra"), &json!(true)));
    // A second request reuses the cached token.
    post(
        gw.addr,
        "/v1/chat/completions",
        &OPENAI,
        &json!({"model": "azure-entra", "messages": [{"role": "user", "content": "again"}]}),
    );
    assert_eq!(standin.exchanges().len(), 1);

    let wrong = Gateway::start_with_env(&config(&standin), &[("SWITCHYARD_TEST_ENTRA_SECRET", "not-the-secret")]);
    let r = post(
        wrong.addr,
        "/v1/chat/completions",
        &OPENAI,
        &json!({"model": "azure-entra",
        "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("Entra ID client standin-client") && message.contains("invalid_client"), "{message}");
    assert!(!r.text().contains("not-the-secret") && !wrong.log().contains("not-the-secret"));
    let unset = Gateway::start(&config(&standin));
    let r = post(
        unset.addr,
        "/v1/chat/completions",
        &OPENAI,
        &json!({"model": "azure-entra",
        "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 503);
    assert!(r.text().contains("SWITCHYARD_TEST_ENTRA_SECRET"), "names the unset variable: {}", r.text());
    assert!(unset.log().contains("SWITCHYARD_TEST_ENTRA_SECRET"), "warned at start-up");
}

#[test]
fn the_key_file_path_can_come_from_a_variable_and_a_missing_file_is_named() {
    let standin = Standin::start(60);
    let mut cfg = config(&standin);
    cfg["backends"][0]["auth"] = json!({"type": "gcp_service_account", "credentials_env": "SWITCHYARD_TEST_GAC"});
    let path = standin.key_file.to_str().unwrap();
    let gw = Gateway::start_with_env(&cfg, &[("SWITCHYARD_TEST_GAC", path)]);
    let r = post(gw.addr, "/v1/messages", &ANTHROPIC, &message("vertex-claude"));
    assert_eq!(r.status, 200, "{}", r.text());
    let missing = Gateway::start_with_env(&cfg, &[("SWITCHYARD_TEST_GAC", "/nonexistent/sa.json")]);
    let r = post(missing.addr, "/v1/messages", &ANTHROPIC, &message("vertex-claude"));
    assert_eq!(r.status, 503);
    assert!(r.text().contains("/nonexistent/sa.json"), "{}", r.text());
}

#[test]
fn the_key_file_is_read_again_on_config_reload() {
    let standin = Standin::start(60);
    let later = standin.key_file.with_file_name("later.json");
    let mut cfg = config(&standin);
    cfg["backends"][0]["auth"] = json!({"type": "gcp_service_account", "credentials_file": later});
    let gw = start_with(&cfg);
    let r = post(gw.addr, "/v1/messages", &ANTHROPIC, &message("vertex-claude"));
    assert_eq!(r.status, 503, "no key file yet: {}", r.text());
    assert!(r.text().contains("later.json"), "{}", r.text());
    std::fs::copy(&standin.key_file, &later).unwrap();
    // Any change of the config file reloads it; the reload reads the key file again.
    cfg["routes"][0]["headers"] = json!({});
    std::fs::write(&gw.config_path, cfg.to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || {
            post(gw.addr, "/v1/messages", &ANTHROPIC, &message("vertex-claude")).status == 200
        }),
        "{}",
        gw.log()
    );
}

#[test]
fn vertex_claude_requests_carry_the_vertex_version_and_no_model_and_count_tokens_keeps_it() {
    let standin = Standin::start(60);
    let gw = start(&standin);
    let r = post(
        gw.addr,
        "/v1/messages",
        &[("x-api-key", KEY), ("anthropic-beta", "prompt-caching-2024-07-31")],
        &message("vertex-claude"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = standin.requests().pop().unwrap();
    assert_eq!(
        sent["path"],
        "/v1/projects/standin-project/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict"
    );
    assert_eq!(sent["body"]["anthropic_version"], "vertex-2023-10-16");
    assert!(sent["body"].get("model").is_none());
    assert_eq!(sent["headers"]["anthropic-beta"], "prompt-caching-2024-07-31", "betas travel as a header on Vertex");
    assert!(sent["headers"].get("x-api-key").is_none() && !sent["headers"].to_string().contains(KEY));
    let r = post(
        gw.addr,
        "/v1/messages/count_tokens",
        &ANTHROPIC,
        &json!({"model": "vertex-claude",
        "system": "Be brief.", "messages": [{"role": "user", "content": "Hello there"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"input_tokens": 9}));
    let sent = standin.requests().pop().unwrap();
    assert!(sent["path"].as_str().unwrap().ends_with("/publishers/anthropic/models/count-tokens:rawPredict"));
    assert_eq!(sent["body"]["model"], "claude-3-5-sonnet-v2@20241022");
    let r = post(gw.addr, "/v1/messages", &ANTHROPIC, &message("vertex-claude-throttle"));
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json()["error"]["type"],
        "rate_limit_error",
        "Google's quota error in Anthropic's shape: {}",
        r.text()
    );
}

#[test]
fn azure_deployments_take_the_api_version_and_the_api_key_and_filtered_prompts_stay_400() {
    let standin = Standin::start(60);
    let gw = start(&standin);
    let r = post(gw.addr, "/v1/embeddings", &OPENAI, &json!({"model": "azure-embedding", "input": ["a", "b"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = standin.requests().pop().unwrap();
    assert_eq!(
        (sent["path"].as_str(), sent["query"].as_str()),
        (Some("/openai/deployments/te3-small/embeddings"), Some("api-version=2024-10-21"))
    );
    assert_eq!(sent["headers"]["api-key"], "standin-azure-key");
    assert!(sent["headers"].get("authorization").is_none());
    // A client's own api-key never reaches Azure.
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("authorization", "Bearer sdk-google-azure-key"), ("api-key", "client-key")],
        &json!({"model": "azure-gpt", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["prompt_filter_results"].is_array(), "Azure's filter results pass through: {}", r.text());
    assert_eq!(standin.requests().pop().unwrap()["headers"]["api-key"], "standin-azure-key");
    for (path, headers, body) in [
        (
            "/v1/chat/completions",
            &OPENAI[..],
            json!({"model": "azure-filtered", "messages": [{"role": "user", "content": "x"}]}),
        ),
        ("/v1/messages", &ANTHROPIC[..], message("azure-filtered")),
    ] {
        let r = post(gw.addr, path, headers, &body);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let v = r.json();
        if path == "/v1/messages" {
            assert_eq!(
                (v["type"].as_str(), v["error"]["type"].as_str()),
                (Some("error"), Some("invalid_request_error")),
                "{v}"
            );
        } else {
            assert_eq!(v["error"]["code"], "content_filter", "{v}");
        }
        assert!(v["error"]["message"].as_str().unwrap().contains("content management policy"), "{v}");
    }
}

#[test]
fn openai_sdk_through_azure_and_vertex_claude() {
    let standin = Standin::start(60);
    let gw = start(&standin);
    run_sdk_script("openai_sdk_azure_vertex.py", &gw, KEY, &[]);
    let requests = standin.requests();
    assert!(requests.iter().all(|r| r["token_ok"] == true), "{requests:#?}");
}

#[test]
fn anthropic_sdk_through_vertex_claude_and_azure() {
    let standin = Standin::start(60);
    let gw = start(&standin);
    run_sdk_script("anthropic_sdk_vertex_azure.py", &gw, KEY, &[]);
    let requests = standin.requests();
    assert!(requests.iter().all(|r| r["token_ok"] == true), "{requests:#?}");
}

#[test]
fn openai_sdk_through_gemini_and_vertex_gemini() {
    let standin = Standin::start(60);
    let gw = start(&standin);
    run_sdk_script("openai_sdk_gemini.py", &gw, KEY, &[]);
    let requests = standin.requests();
    assert!(requests.iter().all(|r| r["token_ok"] == true), "{requests:#?}");
}

#[test]
fn anthropic_sdk_through_gemini_and_vertex_gemini() {
    let standin = Standin::start(60);
    let gw = start(&standin);
    run_sdk_script("anthropic_sdk_gemini.py", &gw, KEY, &[]);
    let requests = standin.requests();
    assert!(requests.iter().all(|r| r["token_ok"] == true), "{requests:#?}");
}

#[test]
fn a_credential_an_upstream_quotes_is_masked_whether_a_static_key_or_an_issued_token() {
    let standin = Standin::start(60);
    let gw = start(&standin);
    let chat = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(gw.addr, "/v1/chat/completions", &OPENAI, &chat("gemini-echo"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!r.text().contains("standin-gemini-key"), "{}", r.text());
    assert!(r.text().contains("credential [redacted] is not allowed"), "{}", r.text());
    let r = post(gw.addr, "/v1/chat/completions", &OPENAI, &chat("vertex-gemini-echo"));
    assert_eq!(r.status, 400, "{}", r.text());
    let requests = standin.requests();
    let token = requests.last().and_then(|q| q["token"].as_str()).expect("the stand-in saw the issued token");
    assert!(token.len() >= 8, "a real-looking token: {token}");
    assert!(!r.text().contains(token), "{}", r.text());
    assert!(r.text().contains("credential [redacted] is not allowed"), "{}", r.text());
}
