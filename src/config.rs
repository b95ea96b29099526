//! `config.json`: serde types, defaults, and validation of values with field paths. Pure data: the
//! runtime form (router, limits, providers, upstream clients, Redis) is built from it in one step by
//! [`crate::snapshot`]. This module imports nothing else of the crate.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

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
    /// Read entry by entry by [`Config::parse`] (each provider checks its own keys).
    #[serde(skip)]
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub limits: Vec<LimitConfig>,
    #[serde(default)]
    pub ratelimit: RateLimitConfig,
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
    /// Time a request body gets to arrive, from the end of its head, before the minimum rate is added
    /// (408 when exceeded): a body that trickles cannot hold a connection for ever.
    pub body_timeout_ms: u64,
    /// Each this many body bytes received extend the body's deadline by one second (Apache's
    /// `MinRate`); 0: `body_timeout_ms` is a fixed deadline for the whole body.
    pub min_body_rate_bytes_per_s: u64,
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
            body_timeout_ms: 30_000,
            min_body_rate_bytes_per_s: 1024,
            keepalive_timeout_ms: 60_000,
            max_connections: 10_000,
            drain_timeout_ms: 30_000,
            stack_kib: if cfg!(debug_assertions) { 512 } else { 128 },
        }
    }
}

/// One entry of `backends`: the keys every provider shares, and the provider's own keys, which its file
/// in `src/providers/` reads and checks (`"schema": "bedrock"` ↔ `providers/bedrock.rs`).
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    /// The provider: `openai`, `anthropic`, `bedrock`, `bedrock_anthropic`, `mock`.
    pub schema: String,
    pub base_url: Option<String>,
    pub auth: Option<AuthConfig>,
    /// Extra headers sent upstream with every request (e.g. `OpenAI-Organization`).
    pub headers: BTreeMap<String, String>,
    pub connect_timeout_ms: u64,
    /// Time until the upstream's response headers arrive.
    pub response_timeout_ms: u64,
    /// Longest silence allowed between two reads of the response body (streams included).
    pub idle_timeout_ms: u64,
    /// PEM file of extra root certificates trusted for this backend's https (a private CA).
    pub ca_file: Option<String>,
    /// `max_tokens` sent when a client gave none and the backend's API requires one (Anthropic's).
    pub default_max_tokens: Option<u32>,
    /// The remaining keys, for the provider to read (unknown ones are errors there).
    pub options: Map<String, Value>,
}

/// The keys of [`BackendConfig`] shared by every provider.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendCommon {
    name: String,
    schema: String,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    auth: Option<AuthConfig>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_response_timeout_ms")]
    response_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    idle_timeout_ms: u64,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    default_max_tokens: Option<u32>,
}

const BACKEND_COMMON_KEYS: &[&str] = &[
    "name",
    "schema",
    "base_url",
    "auth",
    "headers",
    "connect_timeout_ms",
    "response_timeout_ms",
    "idle_timeout_ms",
    "ca_file",
    "default_max_tokens",
];

impl BackendConfig {
    /// Splits a `backends` entry into the shared keys (checked here) and the provider's own.
    pub fn from_value(value: Value) -> Result<BackendConfig, String> {
        let Value::Object(mut options) = value else { return Err("a backend must be a JSON object".into()) };
        let mut common = Map::new();
        for key in BACKEND_COMMON_KEYS {
            if let Some(v) = options.remove(*key) {
                common.insert(key.to_string(), v);
            }
        }
        let c: BackendCommon = serde_json::from_value(Value::Object(common)).map_err(|e| e.to_string())?;
        Ok(BackendConfig {
            name: c.name,
            schema: c.schema,
            base_url: c.base_url,
            auth: c.auth,
            headers: c.headers,
            connect_timeout_ms: c.connect_timeout_ms,
            response_timeout_ms: c.response_timeout_ms,
            idle_timeout_ms: c.idle_timeout_ms,
            ca_file: c.ca_file,
            default_max_tokens: c.default_max_tokens,
            options,
        })
    }

    /// The provider's own keys as its options struct (`deny_unknown_fields` there names a stray key).
    pub fn provider_options<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ConfigError> {
        serde_json::from_value(Value::Object(self.options.clone())).map_err(|e| err(path, e.to_string()))
    }

    /// Checks the shared keys' values.
    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(err(format!("{path}.name"), "must not be empty"));
        }
        if let Some(url) = &self.base_url {
            validate_base_url(url).map_err(|m| err(format!("{path}.base_url"), m))?;
        }
        for (name, value) in &self.headers {
            if !valid_header_name(name) || value.contains(['\r', '\n']) {
                return Err(err(format!("{path}.headers.{name}"), "invalid header"));
            }
        }
        for (field, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("response_timeout_ms", self.response_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            check_timeout(&format!("{path}.{field}"), ms)?;
        }
        if self.default_max_tokens == Some(0) {
            return Err(err(format!("{path}.default_max_tokens"), "must be at least 1"));
        }
        if let Some(ca) = &self.ca_file {
            if !std::path::Path::new(ca).is_file() {
                return Err(err(format!("{path}.ca_file"), format!("no file at {ca}")));
            }
        }
        Ok(())
    }
}

/// An `http://` or `https://` URL with a plain authority (no user info, query or fragment in it).
pub fn validate_base_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("must start with http:// or https://".into());
    }
    let authority = url.split_once("://").map_or("", |(_, r)| r.split('/').next().unwrap_or(""));
    if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
        return Err(format!("\"{url}\" is not a valid URL"));
    }
    Ok(())
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

/// A backend's `auth`: how the gateway authenticates to the provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer <key>`.
    Bearer {
        #[serde(default)]
        key: Option<String>,
        #[serde(default)]
        key_env: Option<String>,
        #[serde(default)]
        key_file: Option<String>,
    },
    /// The key as the value of a header (`name`; Anthropic's default is `x-api-key`).
    Header {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        key: Option<String>,
        #[serde(default)]
        key_env: Option<String>,
        #[serde(default)]
        key_file: Option<String>,
    },
    /// AWS SigV4 (or a Bedrock API key): explicit keys, then AWS's environment variables, then the shared
    /// credentials file.
    Aws(AwsAuthConfig),
}

/// `"auth": {"type": "aws", …}`. Every field is optional: what is not set comes from AWS's usual chain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsAuthConfig {
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub access_key_id_env: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    #[serde(default)]
    pub session_token_env: Option<String>,
    /// The shared credentials file's profile (default: `AWS_PROFILE`, else `default`).
    #[serde(default)]
    pub profile: Option<String>,
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

pub fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
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

/// Where secrets come from besides the config text: environment variables and files (keys mounted as
/// files, AWS's shared credentials file). Injectable, so tests need not touch the process's own.
pub struct Environment<'a> {
    /// A variable's value (`None` when unset or empty).
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// A file's text (`None` when it cannot be read).
    pub file: &'a dyn Fn(&str) -> Option<String>,
}

impl Environment<'static> {
    /// This process's environment and file system.
    pub fn process() -> Environment<'static> {
        Environment { var: &process_env, file: &read_file }
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn read_file(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// One entry of `limits` in config.json.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub name: String,
    /// Any of `client`, `model`, `backend`, `header:<name>`.
    pub key: Vec<String>,
    /// Model patterns the limit applies to (default: all).
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub requests: Option<u64>,
    #[serde(default)]
    pub tokens: Option<u64>,
    /// For `tokens`: `input`, `output`, `total` (default) or `weighted` (with `weights`).
    #[serde(default)]
    pub count: Option<String>,
    #[serde(default)]
    pub weights: Option<Weights>,
    /// Window length: a number and a unit, `s`, `m`, `h` or `d` (`10s`, `1m`, `30d`).
    #[serde(default)]
    pub per: Option<String>,
    #[serde(default)]
    pub concurrent: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    #[serde(default = "one")]
    pub input: f64,
    #[serde(default = "one")]
    pub output: f64,
}

fn one() -> f64 {
    1.0
}

/// `ratelimit` in config.json.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `redis://[:password@]host:port[/db]`: limits shared by every instance using this Redis.
    #[serde(default)]
    pub redis: Option<String>,
    /// What to do when Redis cannot answer in time: `allow` (fail open) or `deny` (fail closed, 503).
    #[serde(default)]
    pub on_redis_error: FailurePolicy,
    /// Longest wait for Redis per call.
    #[serde(default = "default_redis_timeout_ms")]
    pub redis_timeout_ms: u64,
    /// Output tokens reserved when a request has no `max_tokens`.
    #[serde(default = "default_output_tokens")]
    pub default_output_tokens: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            redis: None,
            on_redis_error: FailurePolicy::Allow,
            redis_timeout_ms: default_redis_timeout_ms(),
            default_output_tokens: default_output_tokens(),
        }
    }
}

fn default_redis_timeout_ms() -> u64 {
    200
}
fn default_output_tokens() -> u64 {
    1024
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    #[default]
    Allow,
    Deny,
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
                    "backends" => config.backends.push(BackendConfig::from_value(item).map_err(|m| err(&path, m))?),
                    "routes" => config.routes.push(serde_json::from_value(item).map_err(de)?),
                    "limits" => config.limits.push(serde_json::from_value(item).map_err(de)?),
                    _ => config.clients.push(serde_json::from_value(item).map_err(de)?),
                }
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks values that need no other part of the config: addresses, bounds, names, timeouts.
    fn validate(&self) -> Result<(), ConfigError> {
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
            ("server.body_timeout_ms", s.body_timeout_ms),
            ("server.keepalive_timeout_ms", s.keepalive_timeout_ms),
            ("server.drain_timeout_ms", s.drain_timeout_ms),
            ("ratelimit.redis_timeout_ms", self.ratelimit.redis_timeout_ms),
        ] {
            check_timeout(field, ms)?;
        }
        for (i, b) in self.backends.iter().enumerate() {
            let path = format!("backends[{i}]");
            b.validate(&path)?;
            if self.backends[..i].iter().any(|x| x.name == b.name) {
                return Err(err(format!("{path}.name"), format!("duplicate backend name \"{}\"", b.name)));
            }
        }
        Ok(())
    }
}

/// The longest timeout accepted anywhere (one day): larger values overflow timer arithmetic.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

fn check_timeout(field: &str, ms: u64) -> Result<(), ConfigError> {
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(err(field, format!("must be between 1 and {MAX_TIMEOUT_MS} (one day)")));
    }
    Ok(())
}

pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}
