//! TLS on the gateway's own listener (`"tls"` in the config): the official OpenAI SDK over https with a
//! test CA, certificate rotation without a restart or a dropped stream, TLS 1.2 and 1.3 with ALPN
//! `http/1.1`, the handshake deadline, plain HTTP sent to the TLS port, and a plain listener beside it.
//! The clients are rustls (here) and OpenSSL (Python's `ssl`, under the SDK).

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/listener/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The certificate and key the gateway serves, copied where the test may replace them.
struct CertFiles {
    dir: TempDir,
}

impl CertFiles {
    fn new(name: &str) -> CertFiles {
        let files = CertFiles { dir: TempDir::new("tls-listener") };
        files.install(name);
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.0.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.0.join("key.pem")
    }

    /// Replaces both files with the fixture pair `name` (the key first, as a rotation tool would; the
    /// gateway keeps the running pair while the two do not match).
    fn install(&self, name: &str) {
        std::fs::copy(fixture(&format!("{name}.key")), self.key()).unwrap();
        std::fs::copy(fixture(&format!("{name}.pem")), self.cert()).unwrap();
    }

    fn tls_config(&self) -> serde_json::Value {
        json!({"cert_file": self.cert(), "key_file": self.key(), "handshake_timeout_ms": 500})
    }
}

/// A fake upstream, the `first` certificate pair, and the gateway serving HTTPS with them.
fn start_tls_gateway() -> (FakeUpstream, CertFiles, Gateway) {
    let up = FakeUpstream::start();
    let certs = CertFiles::new("first");
    let mut cfg = config_for(&up);
    cfg["tls"] = certs.tls_config();
    let gw = Gateway::start(&cfg);
    (up, certs, gw)
}

/// The DER of the leaf certificate in a fixture.
fn leaf_der(name: &str) -> Vec<u8> {
    CertificateDer::pem_file_iter(fixture(&format!("{name}.pem"))).unwrap().next().unwrap().unwrap().to_vec()
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn client_config(versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS 1.3 connection to `addr` as `localhost`, handshake done (it panics if the handshake fails).
fn connect_tls(addr: SocketAddr) -> TlsStream {
    connect_with(addr, client_config(&[&rustls::version::TLS13], &[b"http/1.1"])).unwrap()
}

fn connect_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<TlsStream, std::io::Error> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(15)))?;
    let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

fn served_leaf(tls: &TlsStream) -> Vec<u8> {
    tls.conn.peer_certificates().unwrap()[0].to_vec()
}

fn chat_over(tls: TlsStream, body: &serde_json::Value, headers: &[(&str, &str)]) -> Response {
    let mut reader = BufReader::new(tls);
    post_raw(reader.get_mut(), "/v1/chat/completions", headers, &serde_json::to_vec(body).unwrap());
    read_response(&mut reader)
}

#[test]
fn openai_python_sdk_over_https_with_a_test_ca_streams_included() {
    let up = FakeUpstream::start();
    let certs = CertFiles::new("first");
    let mut cfg = config_for(&up);
    cfg["tls"] = certs.tls_config();
    cfg["clients"] = json!([{"name": "sdk", "key": "sdk-test-key"}]);
    let gw = Gateway::start(&cfg);
    let url = format!("https://localhost:{}", gw.addr.port());
    let (ca, other_ca) = (fixture("ca.pem"), tls_fixture("ca.pem"));
    let env = [("SWITCHYARD_URL", url.as_str()), ("SWITCHYARD_CA", &ca), ("SWITCHYARD_OTHER_CA", &other_ca)];
    run_sdk_script("openai_sdk_https.py", &gw, "sdk-test-key", &env);
    // The SDK's requests reached the upstream, which was spoken to in plain HTTP.
    assert!(up.requests().iter().any(|r| r.path == "/v1/chat/completions"));
}

#[test]
fn a_rotated_certificate_serves_new_connections_while_an_open_stream_on_the_old_one_completes() {
    let (up, certs, gw) = start_tls_gateway();

    // A stream on the first certificate, held open by the upstream after its first event.
    let old = connect_tls(gw.addr);
    assert_eq!(served_leaf(&old), leaf_der("first"));
    let mut stream = BufReader::new(old);
    let body = json!({"model": "fake-1", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    post_raw(
        stream.get_mut(),
        "/v1/chat/completions",
        &[("x-fake-gated", "1"), ("x-fake-events", "5")],
        &serde_json::to_vec(&body).unwrap(),
    );
    let (status, headers) = read_head(&mut stream);
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    let mut received = read_chunk(&mut stream).expect("the first event");

    certs.install("second");
    assert!(
        eventually(Duration::from_secs(10), || served_leaf(&connect_tls(gw.addr)) == leaf_der("second")),
        "the new certificate was not served: {}",
        gw.log()
    );
    let fresh = chat_over(connect_tls(gw.addr), &chat("fake-1"), &[]);
    assert_eq!(fresh.status, 200, "{}", fresh.text());

    // The open stream was not dropped: it completes on the session it started with.
    up.gate.open();
    while let Some(chunk) = read_chunk(&mut stream) {
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received, sse_payload(5, true));
    assert_eq!(served_leaf(stream.get_ref()), leaf_der("first"));
    assert!(gw.log().contains("tls: certificate reloaded from"), "{}", gw.log());

    // A pair that does not match (a key of another certificate) is refused; the running one stays.
    std::fs::copy(fixture("first.key"), certs.key()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || gw.log().contains("the running certificate is kept")),
        "{}",
        gw.log()
    );
    assert_eq!(served_leaf(&connect_tls(gw.addr)), leaf_der("second"));
    // A change the watcher cannot see (the files' times kept) is taken on SIGHUP; ECDSA works too.
    let read = |name: &str| std::fs::read_to_string(fixture(name)).unwrap();
    write_unnoticed(&certs.key(), &read("ecdsa.key"));
    write_unnoticed(&certs.cert(), &read("ecdsa.pem"));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(served_leaf(&connect_tls(gw.addr)), leaf_der("second"));
    signal(&gw, "HUP");
    assert!(eventually(Duration::from_secs(10), || served_leaf(&connect_tls(gw.addr)) == leaf_der("ecdsa")));
    assert_eq!(chat_over(connect_tls(gw.addr), &chat("fake-1"), &[]).status, 200);
    assert!(!gw.log().contains("PRIVATE KEY"), "{}", gw.log());
}

#[test]
fn tls_1_2_and_1_3_negotiate_http_1_1_and_a_client_without_it_is_refused() {
    let (up, _certs, gw) = start_tls_gateway();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let tls = connect_with(gw.addr, client_config(&[version], &[b"h2", b"http/1.1"])).unwrap();
        assert_eq!(tls.conn.protocol_version(), Some(version.version));
        assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let r = chat_over(tls, &chat("fake-1"), &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["choices"][0]["message"]["content"], "fake reply");
    }
    // Without ALPN at all: HTTP/1.1 is assumed.
    let r =
        chat_over(connect_with(gw.addr, client_config(&[&rustls::version::TLS13], &[])).unwrap(), &chat("fake-1"), &[]);
    assert_eq!(r.status, 200);
    // Only h2 offered: the handshake fails (no protocol in common), it does not pretend.
    let h2_only = connect_with(gw.addr, client_config(&[&rustls::version::TLS13], &[b"h2"]));
    assert!(h2_only.is_err());

    // Keep-alive over TLS: several requests, one connection.
    let mut reader = BufReader::new(connect_tls(gw.addr));
    let before = up.connections.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        post_raw(reader.get_mut(), "/v1/chat/completions", &[], &serde_json::to_vec(&chat("fake-1")).unwrap());
        assert_eq!(read_response(&mut reader).status, 200);
    }
    assert!(up.connections.load(std::sync::atomic::Ordering::SeqCst) <= before + 1);
}

#[test]
fn a_silent_client_is_cut_at_the_handshake_deadline_and_plain_http_gets_a_plain_400() {
    let (_up, _certs, gw) = start_tls_gateway();

    // Connects and says nothing: closed after handshake_timeout_ms (500), not held.
    let mut silent = TcpStream::connect(gw.addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let n = silent.read(&mut byte).unwrap_or(0);
    assert_eq!(n, 0, "expected a close");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400) && waited < Duration::from_secs(5), "{waited:?}");

    // Half a ClientHello, then silence: the same.
    let mut half = TcpStream::connect(gw.addr).unwrap();
    half.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest);

    // An http:// URL by mistake: a plain-HTTP 400 that says why, not TLS bytes.
    let text = raw_exchange(gw.addr, b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("this port speaks HTTPS"), "{text}");

    // A client that distrusts the certificate: the handshake fails, and the gateway keeps serving.
    let mut other_roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(tls_fixture("ca.pem")).unwrap() {
        other_roots.add(cert.unwrap()).unwrap();
    }
    let distrusting = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(other_roots)
        .with_no_client_auth();
    assert!(connect_with(gw.addr, Arc::new(distrusting)).is_err());

    assert_eq!(chat_over(connect_tls(gw.addr), &chat("fake-1"), &[]).status, 200);
    let metrics = {
        let mut reader = BufReader::new(connect_tls(gw.addr));
        reader.get_mut().write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        read_response(&mut reader).text()
    };
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_tls_handshake_failures_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap();
    assert!(failures >= 4, "{metrics}");
}

#[test]
fn tls_listen_adds_an_https_address_beside_the_plain_one() {
    let up = FakeUpstream::start();
    let certs = CertFiles::new("first");
    let mut cfg = config_for(&up);
    let mut tls = certs.tls_config();
    tls["listen"] = json!("127.0.0.1:0");
    cfg["tls"] = tls;
    let gw = Gateway::start(&cfg);
    // The plain listener (the harness's --listen) still speaks HTTP.
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("fake-1")).status, 200);
    // The line comes right after the one the harness waits for: it may not have been read yet.
    let logged = |gw: &Gateway| gw.log().lines().find(|l| l.contains("also serving https on")).map(str::to_string);
    assert!(eventually(Duration::from_secs(5), || logged(&gw).is_some()), "{}", gw.log());
    let line = logged(&gw).unwrap();
    let https: SocketAddr = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_ne!(https, gw.addr);
    assert_eq!(chat_over(connect_tls(https), &chat("fake-1"), &[]).status, 200);
}

#[test]
fn a_client_that_goes_away_mid_stream_over_tls_cancels_the_upstream_call() {
    let (up, _certs, gw) = start_tls_gateway();
    let mut reader = BufReader::new(connect_tls(gw.addr));
    let body = json!({"model": "fake-1", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    // The upstream goes quiet after its first event: nothing is written to the client, so only the
    // client watcher can see it leave.
    post_raw(reader.get_mut(), "/v1/chat/completions", &[("x-fake-gated", "1")], &serde_json::to_vec(&body).unwrap());
    assert_eq!(read_head(&mut reader).0, 200);
    assert!(read_chunk(&mut reader).is_some());
    // A polite client: close_notify (bytes the watcher must not take for a next request), then FIN.
    let mut tls = reader.into_inner();
    tls.conn.send_close_notify();
    tls.conn.complete_io(&mut tls.sock).unwrap();
    drop(tls);
    let cancelled = eventually(Duration::from_secs(5), || gw.log().contains("\"cancelled\":true"));
    up.gate.open();
    assert!(cancelled, "the upstream call outlived its client: {}", gw.log());
}

#[test]
fn a_missing_or_mismatched_certificate_stops_start_up_and_fails_check_with_a_clear_error() {
    let valid = TempDir::new("tls-good");
    let path = valid.0.join("config.json");
    let cfg = json!({"backends": [{"name": "demo", "schema": "mock"}],
                     "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}],
                     "tls": {"cert_file": fixture("first.pem"), "key_file": fixture("first.key")}});
    std::fs::write(&path, cfg.to_string()).unwrap();
    let check =
        Command::new(env!("CARGO_BIN_EXE_switchyard")).arg("--config").arg(&path).arg("--check").output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    for (cert, key, expected) in [
        (fixture("absent.pem"), fixture("first.key"), "tls.cert_file"),
        (fixture("first.pem"), fixture("second.key"), "is not the key of the certificate"),
    ] {
        let dir = TempDir::new("tls-bad");
        let path = dir.0.join("config.json");
        let cfg = json!({"backends": [{"name": "demo", "schema": "mock"}],
                         "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}],
                         "tls": {"cert_file": cert, "key_file": key}});
        std::fs::write(&path, cfg.to_string()).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
        // `--check` finds the same, without starting.
        let check =
            Command::new(env!("CARGO_BIN_EXE_switchyard")).arg("--config").arg(&path).arg("--check").output().unwrap();
        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}
