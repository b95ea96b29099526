//! `config.json`: serde types, defaults, validation with field paths, and the lock-free snapshot
//! that the request path reads.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use serde::Deserialize;
use serde_json::Value;

use crate::router::{ModelPattern, Router};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Scheduler threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub limits: Vec<crate::ratelimit::LimitConfig>,
    #[serde(default)]
    pub ratelimit: crate::ratelimit::RateLimitConfig,
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// Limits and timeouts of the client-facing HTTP/1.1 server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Request line plus headers, in bytes (431, or 414 when the request line alone is too long).
    pub max_head_bytes: usize,
    /// Header count (431).
    pub max_headers: usize,
    /// Request body, in bytes (413, answered before the body is read).
    pub max_body_bytes: u64,
    /// Time allowed to receive a complete request head, and between body reads (408).
    pub header_timeout_ms: u64,
    /// An idle keep-alive connection is closed after this long.
    pub keepalive_timeout_ms: u64,
    /// Open client connections; past this new ones get 503 and are closed.
    pub max_connections: usize,
    /// On SIGINT/SIGTERM, in-flight requests get this long to finish.
    pub drain_timeout_ms: u64,
    /// Stack of each connection coroutine, in KiB. A rustls handshake needs ~34 KiB in a release build
    /// (may's 32 KiB default overflows) and over 128 KiB in a debug build; only touched pages cost memory.
    pub stack_kib: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_body_bytes: 32 * 1024 * 1024,
            header_timeout_ms: 10_000,
            keepalive_timeout_ms: 60_000,
            max_connections: 10_000,
            drain_timeout_ms: 30_000,
            stack_kib: if cfg!(debug_assertions) { 512 } else { 128 },
        }
    }
}

/// The wire schema a backend speaks. One name everywhere: `"schema": "openai"` ↔ `providers/openai.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    /// OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Mistral, Together, DeepSeek…).
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// The built-in deterministic fake provider (no network).
    Mock,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub name: String,
    pub schema: Schema,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Extra headers sent upstream with every request (e.g. `OpenAI-Organization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time until the upstream's response headers arrive.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Longest silence allowed between two reads of the response body (streams included).
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// PEM file of extra root certificates trusted for this backend's https (a private CA).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// `mock` only: pause between streamed chunks.
    #[serde(default)]
    pub mock_chunk_delay_ms: Option<u64>,
    /// `anthropic` only: the `anthropic-version` header sent when the client sent none.
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// `max_tokens` sent to Anthropic when an OpenAI client gave none (Anthropic requires it).
    #[serde(default)]
    pub default_max_tokens: Option<u32>,
    /// Ask OpenAI-compatible streams for usage (`stream_options.include_usage`) when the client did
    /// not, and hide the extra usage chunk from the client. Turn off for servers that reject the field.
    #[serde(default = "yes")]
    pub stream_usage: bool,
}

fn yes() -> bool {
    true
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_response_timeout_ms() -> u64 {
    600_000
}
fn default_idle_timeout_ms() -> u64 {
    120_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(rename = "type")]
    pub kind: AuthKind,
    /// Header name, for `"type": "header"`.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    Bearer,
    Header,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact model name, or a prefix followed by `*`.
    pub model: String,
    /// Request headers that must all be present with these exact values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub backends: Vec<RouteBackendConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteBackendConfig {
    pub backend: String,
    /// Upstream model name, replacing the client's.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Lower is tried first; higher priorities are fallbacks.
    #[serde(default)]
    pub priority: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_env: Option<String>,
    #[serde(default = "all_models")]
    pub models: Vec<String>,
}

fn all_models() -> Vec<String> {
    vec!["*".into()]
}

/// A configuration error, with the path of the offending field.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { path: path.into(), message: message.into() }
}

/// A secret string: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How a backend's credential reaches the upstream.
#[derive(Debug, Clone)]
pub enum Credential {
    None,
    /// Header name and full value (`Authorization`, `Bearer …`).
    Header(String, Secret),
    /// The key variable is unset: requests to this backend answer 503 naming it.
    Missing {
        key_env: String,
    },
}

/// A backend ready for use: validated, with its credential resolved.
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub schema: Schema,
    /// Without a trailing slash.
    pub base_url: String,
    pub credential: Credential,
    pub headers: Vec<(String, String)>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub ca_file: Option<String>,
    pub mock_chunk_delay: Duration,
    pub anthropic_version: String,
    pub default_max_tokens: u32,
    pub stream_usage: bool,
}

/// A client allowed to call the gateway.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    pub key: Secret,
    pub models: Vec<ModelPattern>,
}

impl Client {
    pub fn may_use(&self, model: &str) -> bool {
        self.models.iter().any(|p| p.matches(model))
    }
}

/// Everything the request path needs, built once per config version and shared read-only.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pub backends: Vec<Backend>,
    pub router: Router,
    pub clients: Vec<Client>,
    /// Client keys whose variables are unset (reported at start-up).
    pub warnings: Vec<String>,
    /// One HTTP client per backend (same index), attached by `upstream::attach_clients`; `None` for mock.
    pub upstreams: Vec<Option<std::sync::Arc<crate::upstream::UpstreamClient>>>,
    pub limits: Vec<crate::ratelimit::Limit>,
    /// The shared store, when `ratelimit.redis` is set (attached by `runtime::build_snapshot`).
    pub redis: Option<std::sync::Arc<crate::redis::RedisClient>>,
}

impl Snapshot {
    pub fn upstream(&self, backend: usize) -> Option<&std::sync::Arc<crate::upstream::UpstreamClient>> {
        self.upstreams.get(backend).and_then(Option::as_ref)
    }
}

/// Reads environment variables; injectable so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    /// Parses and checks a config file's text. Errors name the field path.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| err("", format!("invalid JSON: {e}")))?;
        let Value::Object(mut top) = value else {
            return Err(err("", "the config must be a JSON object"));
        };
        // Arrays are decoded element by element so that errors carry `backends[2]`-style paths.
        let mut sections: Vec<(&str, Vec<Value>)> = Vec::new();
        for key in ["backends", "routes", "clients", "limits"] {
            match top.remove(key) {
                None => sections.push((key, Vec::new())),
                Some(Value::Array(items)) => sections.push((key, items)),
                Some(_) => return Err(err(key, "must be an array")),
            }
        }
        let mut config: Config = serde_json::from_value(Value::Object(top)).map_err(|e| err("", e.to_string()))?;
        for (key, items) in sections {
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("{key}[{i}]");
                let de = |e: serde_json::Error| err(path.clone(), e.to_string());
                match key {
                    "backends" => config.backends.push(serde_json::from_value(item).map_err(de)?),
                    "routes" => config.routes.push(serde_json::from_value(item).map_err(de)?),
                    "limits" => config.limits.push(serde_json::from_value(item).map_err(de)?),
                    _ => config.clients.push(serde_json::from_value(item).map_err(de)?),
                }
            }
        }
        Ok(config)
    }

    /// Validates cross-references and values, and resolves secrets, into a snapshot.
    pub fn into_snapshot(self, env: EnvLookup) -> Result<Snapshot, ConfigError> {
        let mut warnings = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err("listen", format!("\"{}\" is not an address like 127.0.0.1:8080", self.listen)));
        }
        let s = &self.server;
        if s.max_headers == 0 || s.max_head_bytes < 256 || s.max_connections == 0 || s.stack_kib < 32 {
            return Err(err(
                "server",
                "max_headers and max_connections must be positive, max_head_bytes at least 256, stack_kib at least 32",
            ));
        }
        for (field, ms) in [
            ("server.header_timeout_ms", s.header_timeout_ms),
            ("server.keepalive_timeout_ms", s.keepalive_timeout_ms),
            ("server.drain_timeout_ms", s.drain_timeout_ms),
            ("ratelimit.redis_timeout_ms", self.ratelimit.redis_timeout_ms),
        ] {
            if ms == 0 || ms > MAX_TIMEOUT_MS {
                return Err(err(field, format!("must be between 1 and {MAX_TIMEOUT_MS} (one day)")));
            }
        }
        let mut backends = Vec::with_capacity(self.backends.len());
        for (i, b) in self.backends.iter().enumerate() {
            let path = format!("backends[{i}]");
            if b.name.is_empty() {
                return Err(err(format!("{path}.name"), "must not be empty"));
            }
            if backends.iter().any(|x: &Backend| x.name == b.name) {
                return Err(err(format!("{path}.name"), format!("duplicate backend name \"{}\"", b.name)));
            }
            backends.push(resolve_backend(b, &path, env)?);
        }
        let mut clients = Vec::with_capacity(self.clients.len());
        for (i, c) in self.clients.iter().enumerate() {
            let path = format!("clients[{i}]");
            let key = match (&c.key, &c.key_env) {
                (Some(k), None) if !k.is_empty() => k.clone(),
                (None, Some(var)) => match env(var) {
                    Some(k) => k,
                    None => {
                        warnings.push(format!(
                            "{path}.key_env: variable {var} is unset: client \"{}\" cannot authenticate",
                            c.name
                        ));
                        continue;
                    }
                },
                _ => return Err(err(path, "set exactly one of \"key\" (non-empty) or \"key_env\"")),
            };
            if clients.iter().any(|x: &Client| x.key.0 == key) {
                return Err(err(path, "two clients share the same key"));
            }
            let models = c.models.iter().map(|m| ModelPattern::new(m)).collect();
            clients.push(Client { name: c.name.clone(), key: Secret(key), models });
        }
        let router = Router::build(&self.routes, &backends)?;
        let limits = crate::ratelimit::compile(&self.limits)?;
        if let Some(url) = &self.ratelimit.redis {
            crate::redis::RedisUrl::parse(url).map_err(|e| err("ratelimit.redis", e))?;
        }
        Ok(Snapshot { config: self, backends, router, clients, warnings, upstreams: Vec::new(), limits, redis: None })
    }
}

fn resolve_backend(b: &BackendConfig, path: &str, env: EnvLookup) -> Result<Backend, ConfigError> {
    let base_url = match (b.schema, &b.base_url) {
        (Schema::Mock, _) => String::from("mock://"),
        (Schema::Openai, None) => String::from(crate::providers::openai::DEFAULT_BASE_URL),
        (Schema::Anthropic, None) => String::from(crate::providers::anthropic::DEFAULT_BASE_URL),
        (_, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(err(format!("{path}.base_url"), "must start with http:// or https://"));
            }
            let authority = url.split_once("://").map_or("", |(_, r)| r.split('/').next().unwrap_or(""));
            if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
                return Err(err(format!("{path}.base_url"), format!("\"{url}\" is not a valid URL")));
            }
            url.trim_end_matches('/').to_string()
        }
    };
    let credential = match &b.auth {
        None => Credential::None,
        Some(a) => {
            let header = match (a.kind, &a.name) {
                (AuthKind::Bearer, None) => String::from("authorization"),
                (AuthKind::Bearer, Some(_)) => {
                    return Err(err(format!("{path}.auth.name"), "only for \"type\": \"header\""))
                }
                (AuthKind::Header, Some(n)) if valid_header_name(n) => n.to_ascii_lowercase(),
                (AuthKind::Header, None) if b.schema == Schema::Anthropic => String::from("x-api-key"),
                (AuthKind::Header, _) => {
                    return Err(err(format!("{path}.auth.name"), "a valid header name is required"))
                }
            };
            let secret = match (&a.key, &a.key_env) {
                (Some(k), None) => Some(k.clone()),
                (None, Some(var)) => env(var),
                _ => return Err(err(format!("{path}.auth"), "set exactly one of \"key\" or \"key_env\"")),
            };
            match secret {
                None => Credential::Missing { key_env: a.key_env.clone().unwrap_or_default() },
                Some(s) if s.contains(['\r', '\n']) => {
                    return Err(err(format!("{path}.auth"), "the key contains a line break"))
                }
                Some(s) if a.kind == AuthKind::Bearer => Credential::Header(header, Secret(format!("Bearer {s}"))),
                Some(s) => Credential::Header(header, Secret(s)),
            }
        }
    };
    for (name, value) in &b.headers {
        if !valid_header_name(name) || value.contains(['\r', '\n']) {
            return Err(err(format!("{path}.headers.{name}"), "invalid header"));
        }
    }
    if b.mock_chunk_delay_ms.is_some() && b.schema != Schema::Mock {
        return Err(err(format!("{path}.mock_chunk_delay_ms"), "only for \"schema\": \"mock\""));
    }
    for (field, ms) in [
        ("connect_timeout_ms", b.connect_timeout_ms),
        ("response_timeout_ms", b.response_timeout_ms),
        ("idle_timeout_ms", b.idle_timeout_ms),
    ] {
        if ms == 0 || ms > MAX_TIMEOUT_MS {
            return Err(err(format!("{path}.{field}"), format!("must be between 1 and {MAX_TIMEOUT_MS} (one day)")));
        }
    }
    if b.anthropic_version.is_some() && b.schema != Schema::Anthropic {
        return Err(err(format!("{path}.anthropic_version"), "only for \"schema\": \"anthropic\""));
    }
    if b.default_max_tokens == Some(0) {
        return Err(err(format!("{path}.default_max_tokens"), "must be at least 1"));
    }
    if let Some(ca) = &b.ca_file {
        if !std::path::Path::new(ca).is_file() {
            return Err(err(format!("{path}.ca_file"), format!("no file at {ca}")));
        }
    }
    Ok(Backend {
        name: b.name.clone(),
        schema: b.schema,
        base_url,
        credential,
        headers: b.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect(),
        connect_timeout: Duration::from_millis(b.connect_timeout_ms.max(1)),
        response_timeout: Duration::from_millis(b.response_timeout_ms.max(1)),
        idle_timeout: Duration::from_millis(b.idle_timeout_ms.max(1)),
        ca_file: b.ca_file.clone(),
        mock_chunk_delay: Duration::from_millis(b.mock_chunk_delay_ms.unwrap_or(25)),
        anthropic_version: b
            .anthropic_version
            .clone()
            .unwrap_or_else(|| crate::providers::anthropic::DEFAULT_VERSION.to_string()),
        default_max_tokens: b.default_max_tokens.unwrap_or(4096),
        stream_usage: b.stream_usage,
    })
}

/// The longest timeout accepted anywhere (one day): larger values overflow timer arithmetic.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

// ---- The published snapshot: one writer (start-up, reload), many lock-free readers. ----

static GENERATION: AtomicU64 = AtomicU64::new(0);
static CURRENT: RwLock<Option<Arc<Snapshot>>> = RwLock::new(None);

thread_local! {
    static CACHED: RefCell<(u64, Option<Arc<Snapshot>>)> = const { RefCell::new((0, None)) };
}

/// Makes `snapshot` the one every new request sees. Requests in flight keep theirs.
pub fn publish(snapshot: Snapshot) {
    *CURRENT.write() = Some(Arc::new(snapshot));
    GENERATION.fetch_add(1, Ordering::Release);
}

/// The current snapshot: a thread-local `Arc` revalidated against a global generation counter, so the
/// common case is one atomic load and a reference-count increment, no lock.
pub fn current() -> Arc<Snapshot> {
    let generation = GENERATION.load(Ordering::Acquire);
    CACHED.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != generation || cached.1.is_none() {
            *cached = (generation, CURRENT.read().clone());
        }
        cached.1.clone().expect("a snapshot is published before serving")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn snapshot(text: &str) -> Result<Snapshot, ConfigError> {
        Config::parse(text)?.into_snapshot(&no_env)
    }

    #[test]
    fn shipped_config_is_valid_without_any_key() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.json")).unwrap();
        let s = snapshot(&text).unwrap();
        assert!(s.backends.iter().any(|b| b.schema == Schema::Mock));
    }

    #[test]
    fn unknown_backend_in_route_names_the_path() {
        let e = snapshot(
            r#"{"backends":[{"name":"openai","schema":"openai"}],
                "routes":[{"model":"a","backends":[{"backend":"openai"}]},
                          {"model":"b","backends":[{"backend":"openai"}]},
                          {"model":"c","backends":[{"backend":"opnai"}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "routes[2].backends[0].backend: no backend named \"opnai\"");
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let e = snapshot(r#"{"backends":[{"name":"x","schema":"mock","colour":"red"}]}"#).unwrap_err();
        assert_eq!(e.path, "backends[0]");
        assert!(e.message.contains("colour"), "{e}");
        let e = snapshot(r#"{"lisen":"127.0.0.1:1"}"#).unwrap_err();
        assert!(e.message.contains("lisen"), "{e}");
    }

    #[test]
    fn unset_key_variable_marks_backend_missing_and_secret_never_debug_prints() {
        let s = snapshot(
            r#"{"backends":[{"name":"o","schema":"openai","auth":{"type":"bearer","key_env":"NOPE_KEY"}},
                            {"name":"p","schema":"openai","auth":{"type":"header","name":"api-key","key":"sk-secret"}}]}"#,
        )
        .unwrap();
        assert!(matches!(&s.backends[0].credential, Credential::Missing { key_env } if key_env == "NOPE_KEY"));
        let debug = format!("{:?}", s.backends[1]);
        assert!(!debug.contains("sk-secret"), "{debug}");
        assert!(matches!(&s.backends[1].credential, Credential::Header(h, _) if h == "api-key"));
    }

    #[test]
    fn timeouts_are_bounded() {
        let e = snapshot(r#"{"backends":[{"name":"x","schema":"openai","idle_timeout_ms":18446744073709551615}]}"#)
            .unwrap_err();
        assert_eq!(e.path, "backends[0].idle_timeout_ms");
        let e = snapshot(r#"{"server":{"keepalive_timeout_ms":0}}"#).unwrap_err();
        assert_eq!(e.path, "server.keepalive_timeout_ms");
    }

    #[test]
    fn client_key_from_env_and_missing_variable_is_a_warning() {
        let env = |n: &str| (n == "K1").then(|| "abc".to_string());
        let s = Config::parse(r#"{"clients":[{"name":"a","key_env":"K1"},{"name":"b","key_env":"K2"}]}"#)
            .unwrap()
            .into_snapshot(&env)
            .unwrap();
        assert_eq!(s.clients.len(), 1);
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("K2"));
    }
}
