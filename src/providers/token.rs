//! Expiring bearer tokens, for any provider: a Google service account (a JWT signed RS256 with the
//! account's key, exchanged at the key's `token_uri`) or Microsoft Entra ID client credentials (a form
//! POST to `{authority}/{tenant}/oauth2/v2.0/token`). Both hand out access tokens that live about an
//! hour.
//!
//! A [`TokenSource`] caches one credential's token and refreshes it ahead of expiry (by default 5
//! minutes before; never later than half-way through a token's life):
//! - the request that first sees the token due starts the refresh and goes on with the old token; the
//!   others that arrive meanwhile also keep using it: one refresh at a time per credential, however
//!   many requests there are;
//! - only when no valid token exists (the first request, or after failures) do requests wait: they
//!   look at a flag the exchange sets, sleeping between looks on their home worker
//!   (`affinity::poll_until`; a coroutine yields, its worker thread goes on);
//! - the exchange runs on a short-lived OS thread of its own, not on a may worker: the RSA signature
//!   (about a millisecond of CPU, see benches/micro.rs) and the token endpoint's round trip never hold
//!   a worker, and the exchange is not cut when the client whose request started it goes away;
//! - a failed refresh keeps the old token in use while it is valid and is retried after a back-off
//!   (1 s, doubling up to 10 s); with no valid token left, requests get the failure, naming the
//!   credential, never a secret (the backend answers 503).
//!
//! Sources that describe the same credential (same key, endpoint and scope) share one cache, across
//! backends and across config reloads, so a reload does not throw a valid token away.
//!
//! The sans-IO parts — the JWT, the exchange's form body, reading the endpoint's answer and the cache's
//! decisions — take the time as an argument; [`TokenSource::header`] is the thin shell that reads the
//! clock, spawns the exchange and waits.

use std::fmt;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde::Deserialize;

use crate::config::Secret;
use crate::upstream::{UpstreamClient, UpstreamSettings};

/// A token is refreshed this long before it expires, unless the config says otherwise.
pub const DEFAULT_REFRESH_BEFORE_SECS: u64 = 300;
/// Google's OAuth scope for Vertex AI and the Gemini API.
pub const GOOGLE_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's token endpoint, when a key file names none.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The scope of Azure OpenAI (Azure AI services).
pub const ENTRA_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// Entra ID in Azure's public cloud.
pub const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";

/// The lifetime asked for in a Google JWT (Google's maximum).
const JWT_LIFETIME_SECS: u64 = 3600;
/// The longest a request waits for an exchange in progress.
const WAIT: Duration = Duration::from_secs(40);
/// Back-off after a failed exchange: the first delay and the cap.
const BACKOFF_FIRST_MS: u64 = 1000;
const BACKOFF_MAX_MS: u64 = 10_000;
/// The largest token endpoint answer read.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// How a token is obtained.
pub enum Grant {
    /// A Google service account: a JWT signed with its key, exchanged at `token_uri`.
    GoogleServiceAccount {
        client_email: String,
        /// `private_key_id`, sent as the JWT's `kid`.
        key_id: Option<String>,
        key: Box<RsaKeyPair>,
        token_uri: String,
        scope: String,
    },
    /// Entra ID's client-credentials flow.
    EntraClientCredentials { token_url: String, client_id: String, client_secret: Secret, scope: String },
}

/// Names the account and endpoint; the key and the secret are never shown.
impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::GoogleServiceAccount { client_email, token_uri, scope, .. } => f
                .debug_struct("GoogleServiceAccount")
                .field("client_email", client_email)
                .field("token_uri", token_uri)
                .field("scope", scope)
                .finish_non_exhaustive(),
            Grant::EntraClientCredentials { token_url, client_id, scope, .. } => f
                .debug_struct("EntraClientCredentials")
                .field("token_url", token_url)
                .field("client_id", client_id)
                .field("scope", scope)
                .finish_non_exhaustive(),
        }
    }
}

impl Grant {
    /// Reads a Google service account's JSON key file (its text). `token_uri` must be an https URL, or
    /// http on a loopback address (tests).
    pub fn google_service_account(key_file: &str, scope: &str) -> Result<Grant, String> {
        #[derive(Deserialize)]
        struct KeyFile {
            #[serde(rename = "type")]
            kind: Option<String>,
            client_email: Option<String>,
            private_key: Option<String>,
            private_key_id: Option<String>,
            token_uri: Option<String>,
        }
        let key: KeyFile =
            serde_json::from_str(key_file).map_err(|e| format!("not a service account JSON key: {e}"))?;
        if let Some(kind) = key.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(format!("the key's type is \"{kind}\"; only \"service_account\" keys are supported"));
        }
        let client_email = key.client_email.filter(|e| !e.is_empty()).ok_or("the key has no client_email")?;
        let pem = key.private_key.ok_or("the key has no private_key")?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "the key's private_key is not a PKCS#8 PEM private key".to_string())?;
        let rsa = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| format!("the key's private_key is not a usable RSA key: {e}"))?;
        let token_uri = key.token_uri.unwrap_or_else(|| GOOGLE_TOKEN_URI.to_string());
        check_endpoint(&token_uri).map_err(|m| format!("the key's token_uri {m}"))?;
        Ok(Grant::GoogleServiceAccount {
            client_email,
            key_id: key.private_key_id,
            key: Box::new(rsa),
            token_uri,
            scope: scope.to_string(),
        })
    }

    /// Entra ID client credentials of `tenant` at `authority`.
    pub fn entra(
        authority: &str,
        tenant: &str,
        client_id: &str,
        client_secret: Secret,
        scope: &str,
    ) -> Result<Grant, String> {
        check_endpoint(authority).map_err(|m| format!("authority {m}"))?;
        if tenant.is_empty() || !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err(format!("tenant_id \"{tenant}\" is not a tenant id or domain"));
        }
        Ok(Grant::EntraClientCredentials {
            token_url: format!("{}/{tenant}/oauth2/v2.0/token", authority.trim_end_matches('/')),
            client_id: client_id.to_string(),
            client_secret,
            scope: scope.to_string(),
        })
    }

    /// Where tokens are exchanged.
    pub fn token_url(&self) -> &str {
        match self {
            Grant::GoogleServiceAccount { token_uri, .. } => token_uri,
            Grant::EntraClientCredentials { token_url, .. } => token_url,
        }
    }

    /// Who the credential is, for messages: the service account or the client id (never a secret).
    pub fn identity(&self) -> String {
        match self {
            Grant::GoogleServiceAccount { client_email, .. } => format!("Google service account {client_email}"),
            Grant::EntraClientCredentials { client_id, .. } => format!("Entra ID client {client_id}"),
        }
    }

    /// The `application/x-www-form-urlencoded` body of an exchange at `now_secs`.
    pub fn exchange_body(&self, now_secs: u64) -> Result<String, String> {
        match self {
            Grant::GoogleServiceAccount { client_email, key_id, key, token_uri, scope } => {
                let jwt = google_jwt(key, key_id.as_deref(), client_email, scope, token_uri, now_secs)?;
                Ok(form(&[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &jwt)]))
            }
            Grant::EntraClientCredentials { client_id, client_secret, scope, .. } => Ok(form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", &client_secret.0),
                ("scope", scope),
            ])),
        }
    }

    /// Bytes that tell this credential apart (SHA-256 over everything that makes it, secrets
    /// included): equal credentials share one cache.
    fn fingerprint(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut add = |part: &[u8]| {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        };
        match self {
            Grant::GoogleServiceAccount { client_email, key_id, key, token_uri, scope } => {
                add(b"google");
                add(client_email.as_bytes());
                add(key_id.as_deref().unwrap_or("").as_bytes());
                add(key.public().as_ref());
                add(token_uri.as_bytes());
                add(scope.as_bytes());
            }
            Grant::EntraClientCredentials { token_url, client_id, client_secret, scope } => {
                add(b"entra");
                add(token_url.as_bytes());
                add(client_id.as_bytes());
                add(client_secret.0.as_bytes());
                add(scope.as_bytes());
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// A token endpoint must be https, or http on a loopback address (a local stand-in).
pub fn check_endpoint(url: &str) -> Result<(), String> {
    crate::config::validate_base_url(url)?;
    if url.starts_with("https://") {
        return Ok(());
    }
    let authority = url.trim_start_matches("http://").split('/').next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!("must be an https URL (http only on a loopback address): {url}"))
    }
}

/// A Google service-account JWT (RFC 7523): header `{"alg":"RS256","typ":"JWT","kid"}`, claims
/// `iss` (the account), `scope`, `aud` (the token endpoint), `iat` and `exp` (an hour later), signed
/// RSASSA-PKCS1-v1_5 with SHA-256.
pub fn google_jwt(
    key: &RsaKeyPair,
    key_id: Option<&str>,
    client_email: &str,
    scope: &str,
    audience: &str,
    now_secs: u64,
) -> Result<String, String> {
    let header = match key_id {
        Some(kid) => serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid}),
        None => serde_json::json!({"alg": "RS256", "typ": "JWT"}),
    };
    let claims = serde_json::json!({
        "iss": client_email, "scope": scope, "aud": audience, "iat": now_secs, "exp": now_secs + JWT_LIFETIME_SECS,
    });
    let signing_input = format!(
        "{}.{}",
        crate::base64::encode_url(header.to_string().as_bytes()),
        crate::base64::encode_url(claims.to_string().as_bytes())
    );
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), signing_input.as_bytes(), &mut signature)
        .map_err(|_| "signing the JWT failed".to_string())?;
    Ok(format!("{signing_input}.{}", crate::base64::encode_url(&signature)))
}

/// `application/x-www-form-urlencoded` pairs.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&form_encode(name));
        out.push('=');
        out.push_str(&form_encode(value));
    }
    out
}

fn form_encode(s: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.extend(['%', DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]),
        }
    }
    out
}

/// A token as an endpoint issued it.
#[derive(Debug, PartialEq, Eq)]
pub struct Issued {
    pub access_token: Secret,
    pub expires_in_secs: u64,
}

/// Reads a token endpoint's answer (Google's and Entra's are both RFC 6749 JSON: `access_token`,
/// `expires_in` as a number or a string, `token_type`). A refusal becomes a message with the status and
/// the endpoint's `error` / `error_description` only: nothing else of the body, which could echo what
/// was sent.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<Issued, String> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
        error: Option<String>,
        error_description: Option<String>,
    }
    let answer = serde_json::from_slice::<Answer>(body).ok();
    if !(200..300).contains(&status) {
        let detail = answer
            .and_then(|a| match (a.error, a.error_description) {
                (Some(e), Some(d)) => Some(format!("{e}: {d}")),
                (e, d) => e.or(d),
            })
            .map(|d| format!(": {}", d.chars().take(300).collect::<String>()))
            .unwrap_or_default();
        return Err(format!("the token endpoint answered {status}{detail}"));
    }
    let answer = answer.ok_or("the token endpoint's answer is not JSON")?;
    let token =
        answer.access_token.filter(|t| !t.is_empty()).ok_or("the token endpoint's answer has no access_token")?;
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token endpoint's access_token is not a plain token".into());
    }
    let expires_in = match answer.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|s| *s > 0)
    .ok_or("the token endpoint's answer has no valid expires_in")?;
    Ok(Issued { access_token: Secret(token), expires_in_secs: expires_in })
}

/// A cached token.
#[derive(Clone)]
struct Cached {
    /// `Bearer …`.
    header: Arc<str>,
    expires_at_ms: u64,
    refresh_at_ms: u64,
}

/// The cache's state, changed only under its lock, never across IO.
#[derive(Default)]
struct State {
    token: Option<Cached>,
    /// The exchange in progress: set when it ends.
    refreshing: Option<Arc<AtomicBool>>,
    /// Why the last exchange failed (cleared by a success).
    failure: Option<String>,
    failures: u32,
    /// No exchange starts before this (back-off after failures).
    retry_at_ms: u64,
}

/// What a request does next.
enum Step {
    /// Send with this header.
    Use(Arc<str>),
    /// Send with this header, and start the exchange that `flag` will announce.
    UseAndRefresh(Arc<str>, Arc<AtomicBool>),
    /// Wait for the exchange; start it first when `start` is set.
    Wait { flag: Arc<AtomicBool>, start: bool },
    /// No token can be had now.
    Fail(String),
}

impl State {
    /// The decision for a request at `now_ms`.
    fn step(&mut self, now_ms: u64) -> Step {
        let may_start = self.refreshing.is_none() && now_ms >= self.retry_at_ms;
        match &self.token {
            Some(t) if now_ms < t.expires_at_ms => {
                if now_ms >= t.refresh_at_ms && may_start {
                    let flag = Arc::new(AtomicBool::new(false));
                    self.refreshing = Some(flag.clone());
                    Step::UseAndRefresh(t.header.clone(), flag)
                } else {
                    Step::Use(t.header.clone())
                }
            }
            _ => match &self.refreshing {
                Some(flag) => Step::Wait { flag: flag.clone(), start: false },
                None if may_start => {
                    let flag = Arc::new(AtomicBool::new(false));
                    self.refreshing = Some(flag.clone());
                    Step::Wait { flag, start: true }
                }
                None => Step::Fail(self.failure.clone().unwrap_or_else(|| "no token yet".into())),
            },
        }
    }

    /// Records an exchange started at `started_ms` and ended at `now_ms`.
    fn complete(&mut self, result: Result<Issued, String>, started_ms: u64, now_ms: u64, refresh_before_ms: u64) {
        match result {
            Ok(issued) => {
                let lifetime_ms = issued.expires_in_secs.saturating_mul(1000);
                // The token's life is counted from when it was asked for: never later than the
                // endpoint's own clock.
                let expires_at_ms = started_ms.saturating_add(lifetime_ms);
                let refresh_at_ms = expires_at_ms - refresh_before_ms.min(lifetime_ms / 2);
                self.token = Some(Cached {
                    header: Arc::from(format!("Bearer {}", issued.access_token.0)),
                    expires_at_ms,
                    refresh_at_ms,
                });
                self.failure = None;
                self.failures = 0;
                self.retry_at_ms = 0;
            }
            Err(message) => {
                self.failures = self.failures.saturating_add(1);
                let backoff = BACKOFF_FIRST_MS.saturating_mul(1 << (self.failures - 1).min(10)).min(BACKOFF_MAX_MS);
                self.retry_at_ms = now_ms.saturating_add(backoff);
                self.failure = Some(message);
            }
        }
        self.refreshing = None;
    }
}

/// One credential's token cache and refresher.
pub struct TokenSource {
    /// Names the credential in messages: the account or client id, and where it came from.
    label: String,
    grant: Grant,
    /// The token endpoint's client.
    client: Arc<UpstreamClient>,
    refresh_before_ms: u64,
    state: Mutex<State>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource").field("label", &self.label).field("grant", &self.grant).finish_non_exhaustive()
    }
}

/// A live source: its credential's fingerprint, its refresh setting, and the source.
type Entry = ([u8; 32], u64, Weak<TokenSource>);

/// Every live source: equal credentials share one (across reloads too).
static SOURCES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

impl TokenSource {
    /// The source of `grant`'s tokens: the live one for the same credential (and refresh setting) when
    /// there is one, else a new one with an empty cache. `source` says where the credential came from
    /// (`key file /etc/sa.json`), for messages.
    pub fn shared(grant: Grant, source: &str, refresh_before_secs: u64) -> Result<Arc<TokenSource>, String> {
        let fingerprint = grant.fingerprint();
        let mut sources = SOURCES.lock();
        sources.retain(|(_, _, weak)| weak.strong_count() > 0);
        if let Some(live) = sources
            .iter()
            .find(|(f, r, _)| *f == fingerprint && *r == refresh_before_secs)
            .and_then(|(_, _, weak)| weak.upgrade())
        {
            return Ok(live);
        }
        let settings = UpstreamSettings {
            base_url: grant.token_url().to_string(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(25),
            ca_file: None,
            health: crate::health::HealthPolicy::default(),
        };
        let client =
            UpstreamClient::new(&settings).map_err(|e| format!("token endpoint {}: {e}", settings.base_url))?;
        let source = Arc::new(TokenSource {
            label: format!("{} ({source})", grant.identity()),
            grant,
            client: Arc::new(client),
            refresh_before_ms: refresh_before_secs.saturating_mul(1000),
            state: Mutex::new(State::default()),
        });
        sources.push((fingerprint, refresh_before_secs, Arc::downgrade(&source)));
        Ok(source)
    }

    /// Names the credential (no secret in it).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The `authorization` header value (`Bearer …`) for a request now; waits (yielding, in a
    /// coroutine) only when no valid token exists. `Err` says why there is none, naming the credential.
    /// The token in use now (without `Bearer `), if one was issued: what relayed bodies are masked for.
    pub fn current_token(&self) -> Option<String> {
        let state = self.state.lock();
        let header = &state.token.as_ref()?.header;
        Some(header.strip_prefix("Bearer ").unwrap_or(header).to_string())
    }

    pub fn header(self: &Arc<Self>) -> Result<Arc<str>, String> {
        let mut waited = false;
        loop {
            let step = self.state.lock().step(crate::clock::unix_millis());
            match step {
                Step::Use(header) => return Ok(header),
                Step::UseAndRefresh(header, flag) => {
                    self.start_exchange(flag);
                    return Ok(header);
                }
                Step::Wait { flag, start } => {
                    if waited {
                        let failure = self.state.lock().failure.clone();
                        return Err(self.unavailable(failure.as_deref().unwrap_or("no token was issued")));
                    }
                    if start {
                        self.start_exchange(flag.clone());
                    }
                    // Polled, not waited on: the flag is set on the exchange's thread, and a wake-up from
                    // there would resume this coroutine on either worker (`affinity::poll_until`).
                    if crate::affinity::poll_until(WAIT, || flag.load(Ordering::Acquire).then_some(())).is_none() {
                        return Err(self
                            .unavailable(&format!("the token endpoint has not answered within {} s", WAIT.as_secs())));
                    }
                    waited = true;
                }
                Step::Fail(why) => return Err(self.unavailable(&why)),
            }
        }
    }

    fn unavailable(&self, why: &str) -> String {
        format!("{}: no valid access token: {why}", self.label)
    }

    /// Runs one exchange on a thread of its own; `flag` is set when the cache has its result.
    fn start_exchange(self: &Arc<Self>, flag: Arc<AtomicBool>) {
        let source = self.clone();
        let done = flag.clone();
        let spawned = crate::affinity::spawn_helper("switchyard-token", move || {
            let started = crate::clock::unix_millis();
            let result = source.exchange(started / 1000);
            match &result {
                Ok(_) => crate::debug!("{}: access token refreshed", source.label),
                Err(e) => crate::warn_throttled!("{}: token refresh failed: {e}", source.label),
            }
            source.state.lock().complete(result, started, crate::clock::unix_millis(), source.refresh_before_ms);
            done.store(true, Ordering::Release);
        });
        if let Err(e) = spawned {
            let now = crate::clock::unix_millis();
            let message = format!("cannot start the token refresh: {e}");
            self.state.lock().complete(Err(message), now, now, self.refresh_before_ms);
            flag.store(true, Ordering::Release);
        }
    }

    /// One exchange: sign (Google), POST the form, read the answer.
    fn exchange(&self, now_secs: u64) -> Result<Issued, String> {
        let body = self.grant.exchange_body(now_secs)?;
        let headers = [("content-type", "application/x-www-form-urlencoded"), ("accept", "application/json")];
        let mut response = self
            .client
            .send("", &headers, body.as_bytes())
            .map_err(|e| format!("the token endpoint {} cannot be reached: {e}", self.grant.token_url()))?;
        let mut answer = Vec::new();
        (&mut response.body)
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .map_err(|e| format!("reading the token endpoint's answer: {e}"))?;
        parse_token_response(response.status, &answer)
    }
}

#[cfg(test)]
mod tests;
