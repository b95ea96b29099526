//! https upstreams: certificate verification against a configured CA, inside coroutines whose stack
//! is the configured default (a TLS handshake overflowed may's 32 KiB default).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A TLS fake upstream: answers JSON, or SSE when the request asks for `stream: true`.
fn start_tls_upstream() -> std::net::SocketAddr {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(fixture("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let tls = rustls::StreamOwned::new(conn, tcp);
                let mut reader = BufReader::new(tls);
                loop {
                    let mut content_length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            content_length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; content_length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let stream = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["stream"] == true;
                    let out = reader.get_mut();
                    if stream {
                        let payload = sse_payload(3, true);
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                            payload.len()
                        );
                        let _ = out.write_all(&payload);
                    } else {
                        let b = br#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"over tls"},"finish_reason":"stop"}]}"#;
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            b.len()
                        );
                        let _ = out.write_all(b);
                    }
                    let _ = out.flush();
                }
            });
        }
    });
    addr
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
fn https_upstream_with_untrusted_certificate_is_502() {
    let addr = start_tls_upstream();
    let gw = Gateway::start(&json!({
        "backends": [{"name": "tls", "schema": "openai", "base_url": format!("https://127.0.0.1:{}/v1", addr.port())}],
        "routes": [{"model": "m", "backends": [{"backend": "tls"}]}]
    }));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("m"));
    assert_eq!(r.status, 502, "{}", r.text());
}
