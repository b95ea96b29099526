//! TLS on the listener against nginx terminating TLS with the same certificate, in one run, as
//! interleaved rounds (medians reported). Both proxy to the same in-process upstream in plain HTTP.
//!
//! - `handshake`: each request on a new connection (a full handshake: the client resumes no session)
//!   and `connection: close`; reported as connections per second and server CPU per connection, for an
//!   ECDSA P-256 and an RSA 2048 certificate.
//! - `keep-alive`: `BENCH_CONNS` (default 64) TLS connections sending chat requests back to back, with
//!   the same load over plain HTTP to both servers as the reference for what TLS costs.
//!
//! The client is rustls on may coroutines in this process, the same for every target. Every thread of
//! the gateway and of nginx runs at the bench's priority.
//!
//! `cargo bench --bench tls` (env: BENCH_SECONDS per round, default 3; BENCH_ROUNDS, default 3;
//! BENCH_CONNS, default 64; BENCH_HANDSHAKE_CONNS, default 8).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use switchyard::tls::ClientStream;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/listener/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Where a load connects, and how.
#[derive(Clone)]
struct Target {
    name: &'static str,
    pid: u32,
    /// nginx: its workers' CPU counts too.
    tree: bool,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn main() {
    init_may();
    let duration = Duration::from_secs(env_u64("BENCH_SECONDS", 3));
    let rounds = env_u64("BENCH_ROUNDS", 3) as usize;
    let conns = env_u64("BENCH_CONNS", 64) as usize;
    let handshake_conns = env_u64("BENCH_HANDSHAKE_CONNS", 8) as usize;
    let upstream = start_upstream();
    let nice = own_nice();
    let client = client_config();
    println!(
        "TLS listener benchmark: {rounds} interleaved rounds of {} s, every thread at nice {nice}, {}",
        duration.as_secs(),
        machine()
    );
    println!();
    println!(
        "{:<22} {:<16} {:>9} {:>8} {:>8} {:>7} {:>11} {:>9}",
        "scenario", "target", "per s", "p50 ms", "p99 ms", "errors", "CPU µs/op", "vs nginx"
    );
    let handshake = Arc::new(chat_request("bench", 200, false, "connection: close\r\n"));
    let chat = Arc::new(chat_request("bench", 200, false, ""));
    for (label, pair) in [("handshake ECDSA P-256", "ecdsa"), ("handshake RSA 2048", "first")] {
        let (cert, key) = (fixture(&format!("{pair}.pem")), fixture(&format!("{pair}.key")));
        let tls = serde_json::json!({"tls": {"cert_file": cert, "key_file": key}});
        let gw = start_gateway(upstream, tls);
        let nginx = start_nginx_tls(upstream, &cert, &key).expect("nginx (Debian: nginx-light) for this bench");
        same_priority(gw.child.id(), nice);
        same_priority(nginx.child.id(), nice);
        let targets = [
            Target {
                name: "switchyard https",
                pid: gw.child.id(),
                tree: false,
                addr: gw.addr,
                tls: Some(client.clone()),
            },
            Target {
                name: "nginx https",
                pid: nginx.child.id(),
                tree: true,
                addr: nginx.addr,
                tls: Some(client.clone()),
            },
        ];
        compare(label, &targets, rounds, |t| closed_loop_tls(t, handshake_conns, duration, handshake.clone(), true));
        println!("{:<22} gateway RSS {} KiB after the handshakes", "", status_field(gw.child.id(), "VmRSS:"));
        if pair == "ecdsa" {
            let plain_gw = start_gateway(upstream, serde_json::json!({}));
            let plain_nginx = start_nginx(upstream).unwrap();
            same_priority(plain_gw.child.id(), nice);
            same_priority(plain_nginx.child.id(), nice);
            let keepalive = [
                targets[0].clone(),
                targets[1].clone(),
                Target {
                    name: "switchyard http",
                    pid: plain_gw.child.id(),
                    tree: false,
                    addr: plain_gw.addr,
                    tls: None,
                },
                Target {
                    name: "nginx http",
                    pid: plain_nginx.child.id(),
                    tree: true,
                    addr: plain_nginx.addr,
                    tls: None,
                },
            ];
            compare("keep-alive chat", &keepalive, rounds, |t| {
                closed_loop_tls(t, conns, duration, chat.clone(), false)
            });
            println!(
                "{:<22} gateway RSS {} KiB with TLS, {} KiB without",
                "",
                status_field(gw.child.id(), "VmRSS:"),
                status_field(plain_gw.child.id(), "VmRSS:")
            );
        }
    }
}

/// Runs `load` on each target in interleaved rounds and prints the medians; `vs nginx` compares each
/// `switchyard X` row with `nginx X`.
fn compare(label: &str, targets: &[Target], rounds: usize, load: impl Fn(&Target) -> Run) {
    let mut results: Vec<Vec<Measured>> = targets.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (t, runs) in targets.iter().zip(results.iter_mut()) {
            runs.push(measured(t.pid, t.tree, || load(t)));
        }
    }
    let medians: Vec<&Measured> = results.iter().map(|r| median(r)).collect();
    for ((t, m), runs) in targets.iter().zip(&medians).zip(&results) {
        let nginx_name = t.name.replace("switchyard", "nginx");
        let theirs = targets.iter().zip(&medians).find(|(o, _)| o.name == nginx_name && t.name != o.name);
        let vs = theirs.map_or("-".to_string(), |(_, n)| {
            format!("{:.2}x", m.run.rps() / n.run.rps()) + &format!(" (CPU {:.2}x)", m.cpu_us / n.cpu_us)
        });
        println!(
            "{:<22} {:<16} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>11.1} {:>9}",
            label,
            t.name,
            m.run.rps(),
            m.run.pct(0.5),
            m.run.pct(0.99),
            total_errors(runs),
            m.cpu_us,
            vs
        );
    }
}

/// A rustls client trusting the listener fixtures' CA, resuming no session (every connection pays a
/// full handshake), offering ALPN `http/1.1`.
fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn connect(t: &Target) -> std::io::Result<ClientStream> {
    let tcp = common::connect(t.addr)?;
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream = match &t.tls {
        None => ClientStream::plain(tcp),
        Some(config) => {
            let session = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap())
                .map_err(std::io::Error::other)?;
            ClientStream::tls(session, tcp)
        }
    };
    stream.handshake()?;
    Ok(stream)
}

/// `conns` coroutines sending `request` to `t` back to back (see [`closed_loop_over`]).
fn closed_loop_tls(t: &Target, conns: usize, duration: Duration, request: Arc<Vec<u8>>, reconnect: bool) -> Run {
    let t = t.clone();
    closed_loop_over(conns, duration, request, reconnect, move || connect(&t))
}
