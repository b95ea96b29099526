//! TLS on the listener (`"tls"` in the config): TLS 1.2 and 1.3 with rustls, ALPN `http/1.1`, and a
//! certificate that rotates without a restart. The certificate and key files are read again when either
//! one's modification time changes (the config watcher looks every 300 ms, and on SIGHUP); new
//! handshakes get the new pair, connections already open keep the session they have. A pair that does
//! not load (a half-written file, a key that does not match) is logged and the running one kept.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use may::net::TcpStream;
use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;
use crate::tls::ServerStream;

/// Handshakes that failed or timed out (a scanner, a client that distrusts the certificate, a
/// plain-HTTP request on the TLS port).
pub static HANDSHAKE_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Certificate reloads applied, and refused (the running certificate kept).
pub static CERT_RELOADS_OK: AtomicU64 = AtomicU64::new(0);
pub static CERT_RELOADS_REJECTED: AtomicU64 = AtomicU64::new(0);

/// The listener's TLS settings, shared by its accept loops.
pub struct ListenerTls {
    config: Arc<rustls::ServerConfig>,
    pub handshake_timeout: Duration,
}

impl ListenerTls {
    /// Loads the certificate and key (an error here stops start-up) and registers them for rotation.
    pub fn new(tls: &TlsConfig) -> Result<ListenerTls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = Arc::new(RotatingCert::load(tls, provider.clone())?);
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        ROTATING.lock().push(cert);
        Ok(ListenerTls { config: Arc::new(config), handshake_timeout: Duration::from_millis(tls.handshake_timeout_ms) })
    }

    /// Wraps an accepted socket in a server session; the handshake runs on the first IO
    /// ([`ServerStream::handshake`]). Out of line: inlined (as whole-program optimisation does), the
    /// session under construction sat in every connection's first frame, plain ones included.
    #[inline(never)]
    pub fn session(&self, socket: TcpStream) -> io::Result<ServerStream> {
        let session = rustls::ServerConnection::new(self.config.clone()).map_err(io::Error::other)?;
        Ok(ServerStream::tls(session, socket))
    }
}

/// Loads the certificate and key of `tls` and checks that they match, without serving them (`--check`).
pub fn check(tls: &TlsConfig) -> Result<(), String> {
    load_pair(&tls.cert_file, &tls.key_file, &rustls::crypto::ring::default_provider()).map(|_| ())
}

/// Whether a new connection's first byte is not a TLS handshake record but a letter: plain HTTP sent to
/// the TLS port (an `http://` URL by mistake). Waits for that byte (the caller bounds the wait).
pub fn sends_plain_http(socket: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let n = socket.peek(&mut first)?;
    // 0x16: a TLS record of type handshake (a ClientHello).
    Ok(n == 1 && first[0] != 0x16 && first[0].is_ascii_alphabetic())
}

/// Certificates of the running listeners, for the config watcher.
static ROTATING: Mutex<Vec<Arc<RotatingCert>>> = Mutex::new(Vec::new());

/// Reads again each listener certificate whose files changed since they were read (all of them when
/// `force`, on SIGHUP). Called by the config watcher thread.
pub fn reload_changed_certificates(force: bool) {
    let certs: Vec<Arc<RotatingCert>> = ROTATING.lock().clone();
    for cert in certs {
        cert.reload_if_changed(force);
    }
}

/// A certificate chain and key from two PEM files, swapped when they change.
struct RotatingCert {
    cert_file: String,
    key_file: String,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when they were last read (taken before reading).
    stamps: Mutex<[Option<SystemTime>; 2]>,
}

impl std::fmt::Debug for RotatingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingCert").field("cert_file", &self.cert_file).finish()
    }
}

impl RotatingCert {
    fn load(tls: &TlsConfig, provider: Arc<CryptoProvider>) -> Result<RotatingCert, String> {
        let stamps = stamps(&tls.cert_file, &tls.key_file);
        let key = load_pair(&tls.cert_file, &tls.key_file, &provider)?;
        Ok(RotatingCert {
            cert_file: tls.cert_file.clone(),
            key_file: tls.key_file.clone(),
            provider,
            current: RwLock::new(Arc::new(key)),
            stamps: Mutex::new(stamps),
        })
    }

    fn reload_if_changed(&self, force: bool) {
        let now = stamps(&self.cert_file, &self.key_file);
        {
            let mut seen = self.stamps.lock();
            if !force && *seen == now {
                return;
            }
            // Recorded even when the pair does not load: a half-written rotation is retried when its
            // other file changes, not every 300 ms.
            *seen = now;
        }
        match load_pair(&self.cert_file, &self.key_file, &self.provider) {
            Ok(key) => {
                *self.current.write() = Arc::new(key);
                CERT_RELOADS_OK.fetch_add(1, Ordering::Relaxed);
                crate::info!("tls: certificate reloaded from {} and {}", self.cert_file, self.key_file);
            }
            Err(e) => {
                CERT_RELOADS_REJECTED.fetch_add(1, Ordering::Relaxed);
                crate::error!("tls: {e}; the running certificate is kept");
            }
        }
    }
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn stamps(cert_file: &str, key_file: &str) -> [Option<SystemTime>; 2] {
    let stamp = |p: &str| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [stamp(cert_file), stamp(key_file)]
}

/// A certificate chain (leaf first) and its private key (PKCS#8, PKCS#1 or SEC1), checked to match.
fn load_pair(cert_file: &str, key_file: &str, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.cert_file {cert_file}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("tls.cert_file {cert_file}: no PEM certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("tls.key_file {key_file}: {e}"))?;
    CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| format!("tls: {key_file} is not the key of the certificate in {cert_file}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/tls/listener/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    #[test]
    fn rsa_and_ecdsa_pairs_load_and_a_mismatched_pair_is_refused() {
        assert!(load_pair(&fixture("first.pem"), &fixture("first.key"), &provider()).is_ok());
        assert!(load_pair(&fixture("ecdsa.pem"), &fixture("ecdsa.key"), &provider()).is_ok());
        let e = load_pair(&fixture("first.pem"), &fixture("second.key"), &provider()).err().unwrap();
        assert!(e.contains("is not the key of the certificate"), "{e}");
        let e = load_pair(&fixture("first.key"), &fixture("first.key"), &provider()).err().unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = load_pair(&fixture("first.pem"), &fixture("missing.key"), &provider()).err().unwrap();
        assert!(e.contains("tls.key_file"), "{e}");
    }
}
