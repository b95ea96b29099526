//! The gateway as a proxy: forwarding, credentials, routing, errors. Real sockets, real processes.

mod common;

use std::io::BufReader;
use std::net::TcpStream;

use common::*;
use serde_json::json;

#[test]
fn chat_is_forwarded_with_backend_credential_and_without_client_credential() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg["clients"] = json!([{"name": "dev", "key": "client-key-1", "models": ["*"]}]);
    let gw = Gateway::start(&cfg);
    let body = json!({"model": "fake-1", "messages": [{"role": "user", "content": "hi"}],
                      "vendor_extension": {"keep": [1, 2, {"x": null}]}, "temperature": 0.2});
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("authorization", "Bearer client-key-1"), ("x-custom", "yes"), ("connection", "keep-alive")],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "fake reply");
    assert!(r.headers.get("x-request-id").is_some_and(|id| id.len() >= 16));
    assert_eq!(r.headers.get("x-ratelimit-remaining-requests").map(String::as_str), Some("99"));
    let got = up.last();
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(got.headers["authorization"], "Bearer sk-upstream-secret");
    assert_eq!(got.headers["x-custom"], "yes");
    assert_eq!(got.json(), body, "the body passes through unchanged");
    assert!(!got.headers.values().any(|v| v.contains("client-key-1")), "client key leaked upstream");
    assert!(!gw.log().contains("sk-upstream-secret"));
}

#[test]
fn x_api_key_authenticates_and_is_not_forwarded() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg["clients"] = json!([{"name": "dev", "key": "client-key-2"}]);
    let gw = Gateway::start(&cfg);
    let r = post(gw.addr, "/v1/chat/completions", &[("x-api-key", "client-key-2")], &chat("fake-1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!up.last().headers.contains_key("x-api-key"));
}

#[test]
fn request_id_from_client_is_kept() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let r = post(gw.addr, "/v1/chat/completions", &[("x-request-id", "abc-123")], &chat("fake-1"));
    assert_eq!(r.headers["x-request-id"], "abc-123");
}

#[test]
fn a_large_answer_reaches_a_slow_reader_whole_and_the_connection_stays_usable() {
    // 48 MB: more than the two sockets can buffer (4 MiB to send, 32 MiB to receive at most here), so
    // the head and body go out in several writes.
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    // The fake builds its 48 MB answer before its head: a loaded machine can take longer than the usual
    // 3 s test timeout for that, which is not what this test is about.
    cfg["backends"][0]["response_timeout_ms"] = json!(30_000);
    let gw = Gateway::start(&cfg);
    let mut stream = connect(gw.addr);
    let body = serde_json::to_vec(&chat("fake-1")).unwrap();
    post_raw(&mut stream, "/v1/chat/completions", &[("x-fake-pad", "48000000")], &body);
    // Read nothing for a while: the gateway's writes fill the socket and must wait, then resume.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let r = read_response(&mut reader);
    assert_eq!(r.status, 200, "{}", &r.text()[..200.min(r.text().len())]);
    assert_eq!(r.headers["content-length"], r.body.len().to_string());
    let answer = r.json();
    assert_eq!(answer["padding"].as_str().map(str::len), Some(48_000_000));
    assert_eq!(answer["choices"][0]["message"]["content"], "fake reply");
    // The framing held: the next request on the same connection is answered.
    post_raw(&mut stream, "/v1/chat/completions", &[], &body);
    let next = read_response(&mut reader);
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(next.json()["choices"][0]["message"]["content"], "fake reply");
}

#[test]
fn answers_on_both_sides_of_the_joined_write_size_arrive_whole_on_one_connection() {
    // A plain answer's body up to 4,096 bytes is copied behind its head and sent as one buffer; a
    // larger one goes out from where it lies with the head in one vectored write (server/responder.rs).
    // Each arrives byte for byte, and the framing holds for the next answer on the same connection.
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let mut stream = connect(gw.addr);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let body = serde_json::to_vec(&chat("fake-1")).unwrap();
    let mut answer_of = |pad: usize| {
        post_raw(&mut stream, "/v1/chat/completions", &[("x-fake-pad", &pad.to_string())], &body);
        let r = read_response(&mut reader);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.headers["content-length"], r.body.len().to_string());
        let answer = r.json();
        assert_eq!(answer["padding"].as_str().map(str::len), Some(pad));
        assert_eq!(answer["choices"][0]["message"]["content"], "fake reply");
        r.body.len()
    };
    // The answer's size without padding, then padded to the last joined size and the first one past it.
    let base = answer_of(0);
    for (pad, size) in [(4096 - base, 4096), (4097 - base, 4097), (70_000, 70_000 + base), (10, 10 + base)] {
        assert_eq!(answer_of(pad), size);
    }
}

#[test]
fn route_model_override_rewrites_only_the_model() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let body = json!({"model": "aliased", "messages": [{"role": "user", "content": "hi"}], "n": 1});
    let r = post(gw.addr, "/v1/chat/completions", &[], &body);
    assert_eq!(r.status, 200);
    let sent = up.last().json();
    assert_eq!(sent["model"], "real-upstream-model");
    assert_eq!(sent["messages"], body["messages"]);
    assert_eq!(sent["n"], 1);
}

#[test]
fn completions_and_embeddings_go_to_their_paths() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let r = post(gw.addr, "/v1/completions", &[], &json!({"model": "fake-1", "prompt": "once"}));
    assert_eq!(r.status, 200);
    assert_eq!(up.last().path, "/v1/completions");
    let r = post(gw.addr, "/v1/embeddings", &[], &json!({"model": "fake-1", "input": "x"}));
    assert_eq!(r.status, 200);
    assert_eq!(up.last().path, "/v1/embeddings");
}

#[test]
fn demo_mock_model_answers_chat_completions_embeddings_and_models() {
    let gw = Gateway::start(&json!({"backends": [{"name": "demo", "schema": "mock"}],
                                    "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}]}));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("demo"));
    assert_eq!(r.status, 200);
    assert!(r.json()["choices"][0]["message"]["content"].as_str().unwrap().contains("You said: hi"));
    let r = post(gw.addr, "/v1/embeddings", &[], &json!({"model": "demo", "input": ["a", "b"]}));
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let r = get(gw.addr, "/v1/models", &[]);
    assert_eq!(r.json()["data"][0]["id"], "demo");
    assert_eq!(get(gw.addr, "/health", &[]).status, 200);
}

#[test]
fn client_errors_have_openai_shape_and_status() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg["clients"] = json!([{"name": "narrow", "key": "k-narrow", "models": ["demo"]}]);
    let gw = Gateway::start(&cfg);
    let auth = [("authorization", "Bearer k-narrow")];
    let cases: Vec<(Response, u16, Option<&str>)> = vec![
        (post(gw.addr, "/v1/chat/completions", &[], &chat("demo")), 401, Some("invalid_api_key")),
        (
            post(gw.addr, "/v1/chat/completions", &[("authorization", "Bearer wrong")], &chat("demo")),
            401,
            Some("invalid_api_key"),
        ),
        (post(gw.addr, "/v1/chat/completions", &auth, &chat("fake-1")), 403, Some("model_not_allowed")),
        (post(gw.addr, "/v1/chat/completions", &auth, &json!({"messages": []})), 400, None),
        (post(gw.addr, "/v1/chat/completions", &auth, &json!({"model": "demo"})), 400, None),
        (post(gw.addr, "/v1/nope", &auth, &chat("demo")), 404, Some("unknown_url")),
    ];
    for (r, status, code) in cases {
        assert_eq!(r.status, status, "{}", r.text());
        let v = r.json();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(v["error"]["type"].is_string());
        if let Some(code) = code {
            assert_eq!(v["error"]["code"], code);
        }
    }
    let mut s = connect(gw.addr);
    post_raw(&mut s, "/v1/chat/completions", &auth, b"{\"model\": \"demo\", \"messages\": [");
    let r = read_response(&mut std::io::BufReader::new(s));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("invalid JSON"));
}

#[test]
fn unknown_model_is_404_model_not_found() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("no-such-model"));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
}

#[test]
fn upstream_errors_keep_status_json_passes_and_non_json_is_wrapped() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let upstream_error =
        r#"{"error":{"message":"You exceeded your quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("x-fake-mode", "raw"), ("x-fake-status", "429"), ("x-fake-body", upstream_error)],
        &chat("fake-1"),
    );
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), upstream_error);
    let r =
        post(gw.addr, "/v1/chat/completions", &[("x-fake-mode", "garbage"), ("x-fake-status", "500")], &chat("fake-1"));
    assert_eq!(r.status, 500);
    let v = r.json();
    assert!(v["error"]["message"].as_str().unwrap().contains("upstream exploded"));
}

#[test]
fn unreachable_upstream_is_502_and_stalled_upstream_is_504() {
    let dead_addr = closed_addr();
    let up = FakeUpstream::start();
    let gw = Gateway::start(&json!({
        "backends": [
            {"name": "dead", "schema": "openai", "base_url": format!("http://{dead_addr}/v1")},
            {"name": "slow", "schema": "openai", "base_url": up.base_url(), "response_timeout_ms": 500}
        ],
        "routes": [{"model": "dead", "backends": [{"backend": "dead"}]},
                   {"model": "slow", "backends": [{"backend": "slow"}]}]
    }));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("dead"));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_unreachable");
    let start = std::time::Instant::now();
    let r = post(gw.addr, "/v1/chat/completions", &[("x-fake-mode", "stall")], &chat("slow"));
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn backend_with_unset_key_variable_answers_503_naming_it_and_gateway_still_starts() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&json!({
        "backends": [{"name": "o", "schema": "openai", "base_url": up.base_url(),
                      "auth": {"type": "bearer", "key_env": "SWITCHYARD_TEST_UNSET_KEY_XYZ"}}],
        "routes": [{"model": "m", "backends": [{"backend": "o"}]}]
    }));
    assert!(gw.log().contains("SWITCHYARD_TEST_UNSET_KEY_XYZ"));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("m"));
    assert_eq!(r.status, 503);
    assert!(r.text().contains("SWITCHYARD_TEST_UNSET_KEY_XYZ"));
    assert!(up.requests().is_empty());
}

#[test]
fn key_from_environment_and_header_auth_type() {
    let up = FakeUpstream::start();
    let gw = Gateway::start_with_env(
        &json!({
            "backends": [{"name": "az", "schema": "openai", "base_url": up.base_url(),
                          "auth": {"type": "header", "name": "api-key", "key_env": "SY_TEST_AZ_KEY"}}],
            "routes": [{"model": "m", "backends": [{"backend": "az"}]}]
        }),
        &[("SY_TEST_AZ_KEY", "az-secret")],
    );
    let r = post(gw.addr, "/v1/chat/completions", &[("api-key", "client-sent-this")], &chat("m"));
    assert_eq!(r.status, 200);
    assert_eq!(up.last().headers["api-key"], "az-secret");
}

#[test]
fn fallback_to_next_priority_when_first_backend_is_down() {
    let dead_addr = closed_addr();
    let up = FakeUpstream::start();
    let gw = Gateway::start(&json!({
        "backends": [
            {"name": "dead", "schema": "openai", "base_url": format!("http://{dead_addr}/v1")},
            {"name": "live", "schema": "openai", "base_url": up.base_url()}
        ],
        "routes": [{"model": "m", "backends": [{"backend": "dead", "priority": 0}, {"backend": "live", "priority": 1}]}]
    }));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("m"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.requests().len(), 1);
}

#[test]
fn header_match_selects_route() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&json!({
        "backends": [{"name": "demo", "schema": "mock"}, {"name": "fake", "schema": "openai", "base_url": up.base_url()}],
        "routes": [{"model": "m", "headers": {"x-tier": "premium"}, "backends": [{"backend": "fake"}]},
                   {"model": "m", "backends": [{"backend": "demo"}]}]
    }));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("m"));
    assert_eq!(r.json()["system_fingerprint"], "switchyard-mock");
    assert!(up.requests().is_empty());
    let r = post(gw.addr, "/v1/chat/completions", &[("x-tier", "premium")], &chat("m"));
    assert_eq!(r.json()["choices"][0]["message"]["content"], "fake reply");
}

#[test]
fn models_lists_only_what_the_client_may_use() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg["clients"] = json!([{"name": "a", "key": "ka", "models": ["demo"]}, {"name": "b", "key": "kb"}]);
    let gw = Gateway::start(&cfg);
    let ids = |key: &str| -> Vec<String> {
        let r = get(gw.addr, "/v1/models", &[("authorization", &format!("Bearer {key}"))]);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["object"], "list");
        r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids("ka"), vec!["demo"]);
    assert_eq!(ids("kb"), vec!["demo", "aliased"]);
    assert_eq!(get(gw.addr, "/v1/models", &[]).status, 401);
}

#[test]
fn client_cannot_override_operator_headers_or_choose_the_provider_account() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&json!({
        "backends": [{"name": "az", "schema": "openai", "base_url": up.base_url(),
                      "auth": {"type": "header", "name": "ocp-apim-subscription-key", "key": "operator-secret"},
                      "headers": {"x-tenant": "operator"}}],
        "routes": [{"model": "m", "backends": [{"backend": "az"}]}]
    }));
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[
            ("ocp-apim-subscription-key", "client-guess"),
            ("x-tenant", "client"),
            ("openai-organization", "org-client"),
            ("openai-project", "proj-client"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
        ],
        &chat("m"),
    );
    assert_eq!(r.status, 200);
    let got = up.last();
    assert_eq!(got.headers["ocp-apim-subscription-key"], "operator-secret");
    assert_eq!(got.headers["x-tenant"], "operator");
    assert!(!got.headers.contains_key("openai-organization"));
    assert!(!got.headers.contains_key("openai-project"));
    assert!(!got.headers.contains_key("x-hop"), "a header named in Connection is hop-by-hop");
}

#[test]
fn upstream_refusing_the_gateway_credential_does_not_echo_the_key() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let body = r#"{"error":{"message":"Incorrect API key provided: sk-upst****cret","type":"invalid_request_error","code":"invalid_api_key"}}"#;
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[("x-fake-mode", "raw"), ("x-fake-status", "401"), ("x-fake-body", body)],
        &chat("fake-1"),
    );
    assert_eq!(r.status, 401);
    assert!(!r.text().contains("sk-upst"), "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "backend_auth_failed");
}

#[test]
fn proxy_variables_in_the_environment_do_not_reroute_upstream_calls() {
    let up = FakeUpstream::start();
    let gw = Gateway::start_with_env(
        &config_for(&up),
        &[
            ("HTTP_PROXY", "http://127.0.0.1:9"),
            ("http_proxy", "http://127.0.0.1:9"),
            ("ALL_PROXY", "http://127.0.0.1:9"),
        ],
    );
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("fake-1")).status, 200);
}

#[test]
fn fallback_skips_a_backend_that_cannot_serve_the_endpoint() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&json!({
        "backends": [{"name": "claude", "schema": "anthropic", "base_url": format!("http://{}", up.addr)},
                     {"name": "oai", "schema": "openai", "base_url": up.base_url()}],
        "routes": [{"model": "m", "backends": [{"backend": "claude"}, {"backend": "oai", "priority": 1}]}]
    }));
    let r = post(gw.addr, "/v1/embeddings", &[], &json!({"model": "m", "input": "x"}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last().path, "/v1/embeddings");
}

#[test]
fn a_pooled_connection_the_upstream_closed_is_replaced_transparently() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    for _ in 0..3 {
        let r = post(gw.addr, "/v1/chat/completions", &[("x-fake-then-close", "1")], &chat("fake-1"));
        assert_eq!(r.status, 200, "{}", r.text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(up.requests().len(), 3);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 3, "one fresh connection per request");
}

/// A gateway with two workers in front of `up`.
fn two_worker_gateway(up: &FakeUpstream) -> Gateway {
    let mut cfg = config_for(up);
    cfg["workers"] = json!(2);
    Gateway::start(&cfg)
}

/// One chat request on an open client connection; its status.
fn chat_on(reader: &mut BufReader<TcpStream>) -> u16 {
    post_raw(reader.get_mut(), "/v1/chat/completions", &[], &serde_json::to_vec(&chat("fake-1")).unwrap());
    read_response(reader).status
}

#[test]
fn keep_alive_upstream_connections_are_reused() {
    let up = FakeUpstream::start();
    let gw = two_worker_gateway(&up);
    let opened = || up.connections.load(std::sync::atomic::Ordering::SeqCst);
    // One client connection: its requests share one upstream connection.
    let mut reader = BufReader::new(connect(gw.addr));
    for _ in 0..5 {
        assert_eq!(chat_on(&mut reader), 200);
    }
    assert_eq!(opened(), 1);
    // A fresh client connection for each request: the pool is kept per worker (as nginx keeps one per
    // worker process), so at most one upstream connection per worker is ever opened.
    for _ in 0..10 {
        assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("fake-1")).status, 200);
    }
    assert!(opened() <= 2, "{} upstream connections for 2 workers", opened());
}

#[test]
fn an_upstream_connection_is_opened_on_the_worker_of_the_client_connection_it_serves() {
    // may wakes worker `fd % workers` for a socket's events: a client socket and the upstream socket that
    // serves it on the same worker keep each request on one thread.
    let up = FakeUpstream::start();
    let gw = two_worker_gateway(&up);
    for round in 0..4 {
        // Idle client connections shift the descriptor numbers the next ones get.
        let _idle: Vec<TcpStream> = (0..round).map(|_| connect(gw.addr)).collect();
        let mut reader = BufReader::new(connect(gw.addr));
        assert_eq!(chat_on(&mut reader), 200);
        let client_port = reader.get_ref().local_addr().unwrap().port();
        let sockets = sockets_of(gw.child.id());
        let client_fd = sockets.iter().find(|s| s.2 == client_port).expect("the client socket").0;
        let upstream_fds: Vec<i32> = sockets.iter().filter(|s| s.2 == up.addr.port()).map(|s| s.0).collect();
        assert!(
            upstream_fds.iter().any(|fd| fd % 2 == client_fd % 2),
            "round {round}: client socket {client_fd}, upstream sockets {upstream_fds:?}"
        );
    }
}

#[test]
fn backends_named_by_host_name_are_resolved() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg["backends"][0]["base_url"] = json!(format!("http://localhost:{}/v1", up.addr.port()));
    let gw = Gateway::start(&cfg);
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("fake-1")).status, 200);
    assert_eq!(up.last().headers["host"], format!("localhost:{}", up.addr.port()));
}

#[test]
fn base_url_query_string_follows_the_endpoint_path() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg["backends"][0]["base_url"] = json!(format!("http://{}/openai/deployments/gpt?api-version=2024-10-21", up.addr));
    let gw = Gateway::start(&cfg);
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("fake-1")).status, 200);
    assert_eq!(up.last().path, "/openai/deployments/gpt/chat/completions?api-version=2024-10-21");
}

#[test]
fn a_response_head_may_take_longer_than_the_idle_timeout() {
    let up = FakeUpstream::start();
    let mut cfg = config_for(&up);
    cfg["backends"][0]["idle_timeout_ms"] = json!(500);
    cfg["backends"][0]["response_timeout_ms"] = json!(5000);
    let gw = Gateway::start(&cfg);
    let r = post(gw.addr, "/v1/chat/completions", &[("x-fake-head-delay-ms", "1200")], &chat("fake-1"));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn an_upstream_refusing_a_large_body_early_is_answered_with_its_status() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&config_for(&up));
    let big = json!({"model": "fake-1", "messages": [{"role": "user", "content": "x".repeat(4 << 20)}]});
    let r = post(gw.addr, "/v1/chat/completions", &[("x-fake-refuse-body", "1")], &big);
    assert_eq!(r.status, 413, "{}", &r.text()[..r.text().len().min(300)]);
    assert!(r.text().contains("request too large for this upstream"));
}
