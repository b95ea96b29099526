//! `config.json`: serde types, defaults, and validation of values with field paths. Pure data: the
//! runtime form (router, limits, providers, upstream clients, Redis) is built from it in one step by
//! [`crate::snapshot`]. This module imports nothing else of the crate.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

mod backend;
mod limits;

pub use backend::*;
pub use limits::*;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Scheduler threads; 0 means one per core.
    #[serde(default)]
    pub workers: usize,
    /// Holds each scheduler thread to one core of those the process may use. Off by default: instances
    /// that share a host (containers limited by a CPU quota rather than a cpuset) would all pin to the
    /// same first cores.
    #[serde(default)]
    pub pin_workers: bool,
    #[serde(default)]
    pub server: ServerConfig,
    /// TLS on the listener; absent: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
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
    /// Retries for every route without its own `retry`.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Passive health of backends.
    #[serde(default)]
    pub health: HealthConfig,
    /// A second address serving only `/metrics`, `/ready` and `/health`. When set, the public port no
    /// longer serves `/metrics`.
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// A key `/metrics` requires (`Authorization: Bearer <key>`), wherever it is served.
    #[serde(default)]
    pub admin_key: Option<Secret>,
    /// The environment variable holding that key.
    #[serde(default)]
    pub admin_key_env: Option<String>,
    /// `off`, `stderr` (the default) or a file path: one JSON line per request.
    #[serde(default = "default_access_log")]
    pub access_log: String,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// OTLP trace export; off when absent.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
}

/// When a failed request is tried again (the route's `retry`, else the top-level one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts after every backend of the route was tried once (0: none). Only failures that show the
    /// request was not processed are retried: connect failures, 429, and 503 with a hint when to return.
    pub retries: u32,
    /// The jittered exponential back-off between attempts when the provider gave no hint.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// The longest wait a provider may ask for (`Retry-After`, `retry-after-ms`, `x-ratelimit-reset-*`);
    /// a longer one is not waited for: the answer goes to the client.
    pub max_wait_ms: u64,
    /// No attempt starts later than this after the request arrived.
    pub deadline_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig { retries: 1, backoff_base_ms: 250, backoff_max_ms: 2_000, max_wait_ms: 5_000, deadline_ms: 30_000 }
    }
}

/// Passive health: backends that keep failing are skipped for a while.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Consecutive failures (connect failures, timeouts, and the statuses below) that eject a backend
    /// (or one of its addresses); 0 turns ejection off.
    pub failures: u32,
    /// The first ejection; each further one in a row doubles it, up to `max_ejection_ms`.
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
    /// Upstream statuses that count as failures.
    pub statuses: Vec<u16>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            failures: 3,
            base_ejection_ms: 5_000,
            max_ejection_ms: 300_000,
            statuses: vec![500, 502, 503, 504],
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

fn default_access_log() -> String {
    "stderr".into()
}

/// `metrics` in config.json.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Distinct model names that get a label value of their own (models a `*` route matched, and the
    /// models upstreams answer with); past it they are `_OTHER`. Exact route names always have theirs.
    pub max_models: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { max_models: 200 }
    }
}

/// `tracing` in config.json: OTLP/HTTP protobuf export of spans.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's traces URL (`http://host[:4318][/v1/traces]`).
    pub endpoint: String,
    /// Share of requests without a `traceparent` that are traced (0 to 1). A client's sampled flag
    /// is followed either way.
    pub sample_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Requests' spans waiting for export at most; past it spans are dropped (and counted).
    pub queue_size: usize,
    /// Spans sent in one export at most.
    pub batch_size: usize,
    /// Longest wait before a partial batch is sent.
    pub flush_interval_ms: u64,
    /// Longest an export may take (connect, send, answer).
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            endpoint: "http://127.0.0.1:4318/v1/traces".into(),
            sample_ratio: 1.0,
            service_name: "switchyard".into(),
            queue_size: 2048,
            batch_size: 512,
            flush_interval_ms: 1000,
            export_timeout_ms: 5000,
        }
    }
}

/// Splits an OTLP/HTTP endpoint `http://host[:port][/path]` (port 4318 and path `/v1/traces` by
/// default) into host, port and path.
pub fn parse_otlp_endpoint(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// endpoints are supported (send to a local collector; it can forward over TLS)")?;
    let (authority, path) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return Err(format!("\"{url}\" is not a valid URL"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => {
            (h, p.parse::<u16>().map_err(|_| format!("bad port in \"{url}\""))?)
        }
        _ => (authority, 4318),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    if host.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    let path = if path.is_empty() || path == "/" { "/v1/traces".to_string() } else { path.to_string() };
    Ok((host, port, path))
}

/// TLS on the listener: `listen` serves HTTPS, or, with `tls.listen`, a second address does and
/// `listen` stays plain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Re-read when it changes (rotation without a restart).
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of that certificate. Re-read when it changes.
    pub key_file: String,
    /// An address serving HTTPS besides the plain `listen`; absent: `listen` itself serves HTTPS.
    #[serde(default)]
    pub listen: Option<String>,
    /// Time a client gets to complete the TLS handshake, from the accept.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
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
    /// On SIGINT/SIGTERM, `/ready` answers 503 for this long while everything is still served, so
    /// load balancers stop sending before the listener closes (0: close at once).
    pub drain_delay_ms: u64,
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
            drain_delay_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Exact model name, or a prefix followed by `*` (empty for a passthrough route).
    #[serde(default)]
    pub model: String,
    /// A route for requests passed through by path (`/v1/files`…) rather than by model: requires
    /// `path`, takes no `model`.
    #[serde(default)]
    pub passthrough: bool,
    /// For `passthrough` routes: the path prefix (whole segments) below `/v1` it takes.
    #[serde(default)]
    pub path: Option<String>,
    /// Request headers that must all be present with these exact values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub backends: Vec<RouteBackendConfig>,
    /// This route's retries (replacing the top-level `retry` whole).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
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
    /// The client's key: exactly one of `key` (inline), `key_env` (a variable) or `key_file` (a file,
    /// trimmed; re-read on every reload).
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_env: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
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

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
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
            ("health.base_ejection_ms", self.health.base_ejection_ms),
            ("health.max_ejection_ms", self.health.max_ejection_ms),
        ] {
            check_timeout(field, ms)?;
        }
        let retries = std::iter::once(("retry".to_string(), &self.retry)).chain(
            self.routes
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.retry.as_ref().map(|p| (format!("routes[{i}].retry"), p))),
        );
        for (path, r) in retries {
            for (field, ms) in [
                ("backoff_base_ms", r.backoff_base_ms),
                ("backoff_max_ms", r.backoff_max_ms),
                ("max_wait_ms", r.max_wait_ms),
                ("deadline_ms", r.deadline_ms),
            ] {
                check_timeout(&format!("{path}.{field}"), ms)?;
            }
            if r.retries > 10 {
                return Err(err(format!("{path}.retries"), "at most 10"));
            }
        }
        if s.drain_delay_ms > MAX_TIMEOUT_MS {
            return Err(err("server.drain_delay_ms", format!("must be at most {MAX_TIMEOUT_MS} (one day)")));
        }
        self.validate_observability()?;
        self.validate_tls()?;
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

impl Config {
    /// `tls`: files named, a handshake timeout, a second address that is not another listener's.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let Some(tls) = &self.tls else { return Ok(()) };
        if tls.cert_file.is_empty() || tls.key_file.is_empty() {
            return Err(err("tls", "needs \"cert_file\" and \"key_file\" (PEM files)"));
        }
        check_timeout("tls.handshake_timeout_ms", tls.handshake_timeout_ms)?;
        if let Some(listen) = &tls.listen {
            let addr = listen
                .parse::<std::net::SocketAddr>()
                .map_err(|_| err("tls.listen", format!("\"{listen}\" is not an address like 0.0.0.0:8443")))?;
            let taken = [Some(&self.listen), self.admin_listen.as_ref()]
                .into_iter()
                .flatten()
                .any(|other| other.parse::<std::net::SocketAddr>().is_ok_and(|o| o == addr && o.port() != 0));
            if taken {
                return Err(err("tls.listen", "must differ from \"listen\" and \"admin_listen\""));
            }
        }
        Ok(())
    }

    /// `admin_listen`, `admin_key(_env)`, `access_log`, `tracing`.
    fn validate_observability(&self) -> Result<(), ConfigError> {
        if let Some(admin) = &self.admin_listen {
            let addr = admin
                .parse::<std::net::SocketAddr>()
                .map_err(|_| err("admin_listen", format!("\"{admin}\" is not an address like 127.0.0.1:9090")))?;
            if self.listen.parse::<std::net::SocketAddr>().is_ok_and(|l| l == addr && l.port() != 0) {
                return Err(err("admin_listen", "must differ from \"listen\""));
            }
        }
        match (&self.admin_key, &self.admin_key_env) {
            (Some(_), Some(_)) => {
                return Err(err("admin_key", "set at most one of \"admin_key\" and \"admin_key_env\""))
            }
            (Some(k), None) if k.0.is_empty() => return Err(err("admin_key", "must not be empty")),
            _ => {}
        }
        if self.access_log.is_empty() {
            return Err(err("access_log", "\"off\", \"stderr\" or a file path"));
        }
        if let Some(t) = &self.tracing {
            parse_otlp_endpoint(&t.endpoint).map_err(|m| err("tracing.endpoint", m))?;
            if !(0.0..=1.0).contains(&t.sample_ratio) {
                return Err(err("tracing.sample_ratio", "must be between 0 and 1"));
            }
            if t.queue_size == 0 || t.batch_size == 0 {
                return Err(err("tracing", "queue_size and batch_size must be at least 1"));
            }
            if t.service_name.is_empty() {
                return Err(err("tracing.service_name", "must not be empty"));
            }
            check_timeout("tracing.flush_interval_ms", t.flush_interval_ms)?;
            check_timeout("tracing.export_timeout_ms", t.export_timeout_ms)?;
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
