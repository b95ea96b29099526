//! https upstreams: certificate verification against a configured CA, inside coroutines whose stack
//! is the configured default (a TLS handshake overflowed may's 32 KiB default).

mod common;

use common::*;
use serde_json::json;

fn fixture(name: &str) -> String {
    tls_fixture(name)
}

fn start_tls_upstream() -> std::net::SocketAddr {
    common::start_tls_upstream(&fixture("server.pem"), &fixture("server.key"))
}

#[test]
fn https_upstream_with_private_ca_works_streaming_and_not() {
    let addr = start_tls_upstream();
    let gw = Gateway::start(&json!({
        "backends": [{"name": "tls", "schema": "openai", "base_url": format!("https://127.0.0.1:{}/v1", addr.port()),
                      "ca_file": fixture("ca.pem")}],
        "routes": [{"model": "m", "backends": [{"backend": "tls"}]}]
    }));
    for _ in 0..3 {
        let r = post(gw.addr, "/v1/chat/completions", &[], &chat("m"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["choices"][0]["message"]["content"], "over tls");
    }
    let r = post(gw.addr, "/v1/chat/completions", &[], &json!({"model": "m", "stream": true, "messages": []}));
    assert_eq!(r.body, sse_payload(3, true));
    // Concurrent handshakes, each in its own coroutine.
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let a = gw.addr;
            std::thread::spawn(move || post(a, "/v1/chat/completions", &[], &chat("m")).status)
        })
        .collect();
    assert!(handles.into_iter().all(|h| h.join().unwrap() == 200));
}

#[test]
fn an_idle_https_connection_is_reused_from_any_worker_rather_than_a_new_handshake() {
    // The pool is kept per worker, but a TLS handshake costs far more than a request crossing threads.
    let addr = start_tls_upstream();
    let gw = Gateway::start(&json!({
        "workers": 2,
        "backends": [{"name": "tls", "schema": "openai", "base_url": format!("https://127.0.0.1:{}/v1", addr.port()),
                      "ca_file": fixture("ca.pem")}],
        "routes": [{"model": "m", "backends": [{"backend": "tls"}]}]
    }));
    for round in 0..6 {
        // Idle client connections shift the descriptor number (and so the worker) of the next one.
        let _idle: Vec<_> = (0..round % 2).map(|_| connect(gw.addr)).collect();
        assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("m")).status, 200);
    }
    let upstream = sockets_of(gw.child.id()).into_iter().filter(|s| s.2 == addr.port()).count();
    assert_eq!(upstream, 1, "one TLS connection serves clients on both workers");
}

#[test]
fn https_upstream_with_untrusted_certificate_is_502() {
    let addr = start_tls_upstream();
    let gw = Gateway::start(&json!({
        "backends": [{"name": "tls", "schema": "openai", "base_url": format!("https://127.0.0.1:{}/v1", addr.port())}],
        "routes": [{"model": "m", "backends": [{"backend": "tls"}]}]
    }));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("m"));
    assert_eq!(r.status, 502, "{}", r.text());
}
