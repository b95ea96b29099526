//! The runtime form of a config, built in one step ([`Snapshot::build`]: providers and their
//! credentials, upstream clients, router, limits, clients, Redis) and published lock-free: readers take
//! a thread-local `Arc` revalidated against a global generation counter.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::config::{err, BackendConfig, Config, ConfigError, Environment, Secret};
use crate::health::{Health, HealthPolicy};
use crate::providers::{self, Provider};
use crate::redis::RedisClient;
use crate::router::{ModelPattern, Router};
use crate::upstream::{UpstreamClient, UpstreamSettings};

/// A backend ready for use.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub provider: Box<dyn Provider>,
    /// Operator headers sent with every request, lower-case names.
    pub headers: Vec<(String, String)>,
    /// `max_tokens` sent when the client gave none and the backend's API requires one.
    pub default_max_tokens: u32,
    /// The HTTP client (`None` for the in-process mock).
    pub upstream: Option<Arc<UpstreamClient>>,
    /// Passive health; kept across reloads while the backend does not change.
    pub health: Arc<Health>,
    /// Its name and its provider's gen_ai name as metric labels, interned once here rather than per request.
    pub backend_label: crate::metrics::Label,
    pub provider_label: crate::metrics::Label,
    /// What the HTTP client was made from: a reload keeps the client (and its warm connections) when
    /// this did not change.
    settings: UpstreamSettings,
}

/// A client allowed to call the gateway.
#[derive(Debug, Clone)]
pub struct Client {
    pub name: String,
    /// `name`'s metric label, interned when the config is loaded.
    pub label: crate::metrics::Label,
    pub key: Secret,
    pub models: Vec<ModelPattern>,
}

impl Backend {
    /// Where its requests go (`mock://` for the in-process mock).
    pub fn base_url(&self) -> &str {
        &self.settings.base_url
    }
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
    /// `clients` indexed by key.
    pub client_keys: ClientKeys,
    /// What operators must know: unset client keys, backends without credentials.
    pub warnings: Vec<String>,
    pub limits: Vec<crate::ratelimit::Limit>,
    /// The shared store, when `ratelimit.redis` is set.
    pub redis: Option<Arc<RedisClient>>,
    /// When backends are ejected.
    pub health: HealthPolicy,
    /// What `/metrics` requires.
    pub admin: AdminAuth,
}

/// Who may read `/metrics` (`admin_key` / `admin_key_env`).
#[derive(Debug, Clone)]
pub enum AdminAuth {
    /// No key configured.
    Open,
    /// `Authorization: Bearer <key>` required.
    Key(Secret),
    /// `admin_key_env` names an unset variable: nobody may (fail closed).
    Unset,
}

impl AdminAuth {
    fn build(config: &Config, environment: &Environment, warnings: &mut Vec<String>) -> AdminAuth {
        match (&config.admin_key, &config.admin_key_env) {
            (Some(k), _) => AdminAuth::Key(k.clone()),
            (None, Some(var)) => match (environment.var)(var) {
                Some(k) => AdminAuth::Key(Secret(k)),
                None => {
                    warnings.push(format!("admin_key_env: variable {var} is unset: /metrics refuses every caller"));
                    AdminAuth::Unset
                }
            },
            (None, None) => AdminAuth::Open,
        }
    }
}

impl Snapshot {
    /// Builds everything a config describes. `previous` lends its upstream clients and Redis client
    /// where their settings did not change, so a reload keeps warm connections.
    pub fn build(
        config: Config,
        environment: &Environment,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigError> {
        let mut warnings = Vec::new();
        let health = HealthPolicy {
            failures: config.health.failures,
            base_ejection_ms: config.health.base_ejection_ms,
            max_ejection_ms: config.health.max_ejection_ms,
        };
        let mut backends = Vec::with_capacity(config.backends.len());
        for (i, b) in config.backends.iter().enumerate() {
            let path = format!("backends[{i}]");
            let backend = build_backend(b, &path, environment, previous, health)?;
            if let Some(w) = backend.provider.credential_warning() {
                warnings.push(format!("backend \"{}\": {w}", b.name));
            }
            backends.push(backend);
        }
        let clients = build_clients(&config, environment, &mut warnings)?;
        let names: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
        let router = Router::build(&config.routes, &names, &config.retry)?;
        let limits = crate::ratelimit::compile(&config.limits)?;
        let redis = match &config.ratelimit.redis {
            None => None,
            Some(url) => {
                let timeout = Duration::from_millis(config.ratelimit.redis_timeout_ms);
                let ca_file = config.ratelimit.redis_ca_file.as_deref();
                let parsed = crate::redis::RedisUrl::parse(url).map_err(|e| err("ratelimit.redis", e))?;
                let reused =
                    previous.and_then(|p| p.redis.clone()).filter(|r| r.same_settings(&parsed, ca_file, timeout));
                Some(match reused {
                    Some(r) => r,
                    None => Arc::new(RedisClient::new(url, ca_file, timeout).map_err(|e| err("ratelimit.redis", e))?),
                })
            }
        };
        let client_keys = ClientKeys::new(&clients);
        let admin = AdminAuth::build(&config, environment, &mut warnings);
        Ok(Snapshot { config, backends, router, clients, client_keys, warnings, limits, redis, health, admin })
    }

    /// The client whose key this is: a hash lookup, then a constant-time comparison (see [`ClientKeys`]).
    pub fn client_by_key(&self, key: &str) -> Option<&Client> {
        self.client_keys.find(&self.clients, key.as_bytes())
    }
}

/// Client keys indexed for lookup, so 10,000 clients cost a request what one does. The index is keyed
/// by a SipHash of the key under a random per-process key (std's `RandomState`): how long a lookup
/// takes depends only on that hash, which a caller cannot compute, and the candidates found are
/// compared with the presented key in constant time.
#[derive(Debug, Default)]
pub struct ClientKeys {
    hasher: RandomState,
    /// Hash of a key → indexes into `Snapshot::clients` (more than one only on a hash collision).
    by_hash: HashMap<u64, Vec<usize>>,
}

impl ClientKeys {
    pub fn new(clients: &[Client]) -> ClientKeys {
        let hasher = RandomState::new();
        let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::with_capacity(clients.len());
        for (i, c) in clients.iter().enumerate() {
            by_hash.entry(hasher.hash_one(c.key.0.as_bytes())).or_default().push(i);
        }
        ClientKeys { hasher, by_hash }
    }

    pub fn find<'c>(&self, clients: &'c [Client], key: &[u8]) -> Option<&'c Client> {
        let candidates = self.by_hash.get(&self.hasher.hash_one(key))?;
        let mut found = None;
        for &i in candidates {
            if constant_time_eq(clients[i].key.0.as_bytes(), key) {
                found = Some(&clients[i]);
            }
        }
        found
    }
}

/// Byte equality whose time depends only on the lengths, not on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

fn build_backend(
    cfg: &BackendConfig,
    path: &str,
    environment: &Environment,
    previous: Option<&Snapshot>,
    health: HealthPolicy,
) -> Result<Backend, ConfigError> {
    let built = providers::build(cfg, path, environment)?;
    let settings = UpstreamSettings {
        health,
        base_url: built.base_url,
        connect_timeout: Duration::from_millis(cfg.connect_timeout_ms),
        response_timeout: Duration::from_millis(cfg.response_timeout_ms),
        idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
        ca_file: cfg.ca_file.clone(),
    };
    // A backend whose connection settings did not change keeps its client (warm connections) and health.
    let unchanged =
        previous.and_then(|p| p.backends.iter().find(|old| old.name == cfg.name && old.settings == settings));
    let upstream = if built.provider.mock().is_some() {
        None
    } else {
        let reused = unchanged.and_then(|old| old.upstream.clone());
        Some(match reused {
            Some(client) => client,
            None => Arc::new(UpstreamClient::new(&settings).map_err(|e| err(path, format!("backend setup: {e}")))?),
        })
    };
    Ok(Backend {
        provider_label: crate::metrics::label(built.provider.genai_provider_name()),
        name: cfg.name.clone(),
        provider: built.provider,
        headers: cfg.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect(),
        default_max_tokens: cfg.default_max_tokens.unwrap_or(4096),
        upstream,
        health: unchanged.map(|old| old.health.clone()).unwrap_or_default(),
        backend_label: crate::metrics::label(&cfg.name),
        settings,
    })
}

fn build_clients(
    config: &Config,
    environment: &Environment,
    warnings: &mut Vec<String>,
) -> Result<Vec<Client>, ConfigError> {
    let mut clients: Vec<Client> = Vec::with_capacity(config.clients.len());
    let mut seen: HashSet<String> = HashSet::with_capacity(config.clients.len());
    for (i, c) in config.clients.iter().enumerate() {
        let path = format!("clients[{i}]");
        let cannot = |what: String| format!("{path}.{what}: client \"{}\" cannot authenticate", c.name);
        let key = match (&c.key, &c.key_env, &c.key_file) {
            (Some(k), None, None) if !k.is_empty() => k.clone(),
            (None, Some(var), None) => match (environment.var)(var) {
                Some(k) => k,
                None => {
                    warnings.push(cannot(format!("key_env: variable {var} is unset")));
                    continue;
                }
            },
            (None, None, Some(file)) => match (environment.file)(file).map(|t| t.trim().to_string()) {
                Some(k) if !k.is_empty() => k,
                _ => {
                    warnings.push(cannot(format!("key_file: {file} cannot be read or is empty")));
                    continue;
                }
            },
            _ => return Err(err(path, "set exactly one of \"key\" (non-empty), \"key_env\" or \"key_file\"")),
        };
        if !seen.insert(key.clone()) {
            return Err(err(path, "two clients share the same key"));
        }
        let models = c.models.iter().map(|m| ModelPattern::new(m)).collect();
        let label = crate::metrics::label(&c.name);
        clients.push(Client { name: c.name.clone(), label, key: Secret(key), models });
    }
    Ok(clients)
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

    fn nothing(_: &str) -> Option<String> {
        None
    }

    fn snapshot(text: &str) -> Result<Snapshot, ConfigError> {
        Snapshot::build(Config::parse(text)?, &Environment { var: &nothing, file: &nothing }, None)
    }

    #[test]
    fn shipped_config_is_valid_without_any_key() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.json")).unwrap();
        let s = snapshot(&text).unwrap();
        assert!(s.backends.iter().any(|b| b.provider.mock().is_some()));
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
        assert!(s.warnings.iter().any(|w| w.contains("NOPE_KEY")), "{:?}", s.warnings);
        let debug = format!("{:?}", s.backends[1]);
        assert!(!debug.contains("sk-secret"), "{debug}");
        assert!(s.backends[1].provider.owns_header("api-key"));
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
    fn unknown_schema_and_misplaced_provider_keys_name_the_path() {
        let e = snapshot(r#"{"backends":[{"name":"x","schema":"openia"}]}"#).unwrap_err();
        assert_eq!(e.path, "backends[0].schema");
        assert!(e.message.contains("openai"), "{e}");
        let e = snapshot(r#"{"backends":[{"name":"x","schema":"openai","anthropic_version":"1"}]}"#).unwrap_err();
        assert!(e.message.contains("anthropic_version"), "{e}");
        let e = snapshot(r#"{"backends":[{"name":"x","schema":"anthropic","auth":{"type":"bearer","name":"a"}}]}"#)
            .unwrap_err();
        assert!(e.message.contains("name"), "{e}");
    }

    #[test]
    fn key_from_a_file_is_trimmed_and_an_unreadable_file_is_a_warning() {
        let file = |p: &str| (p == "/run/secrets/k").then(|| "sk-from-file\n".to_string());
        let s = Snapshot::build(
            Config::parse(
                r#"{"backends":[{"name":"a","schema":"openai","auth":{"type":"bearer","key_file":"/run/secrets/k"}},
                                {"name":"b","schema":"openai","auth":{"type":"bearer","key_file":"/nope"}}]}"#,
            )
            .unwrap(),
            &Environment { var: &nothing, file: &file },
            None,
        )
        .unwrap();
        let mut headers = Vec::new();
        let out = crate::providers::Outgoing {
            authority: "x",
            base_path: "",
            path: "/",
            query: "",
            content_type: "",
            body: b"",
        };
        s.backends[0].provider.authorize(&out, 0, &mut headers).unwrap();
        assert_eq!(headers, [("authorization".to_string(), "Bearer sk-from-file".to_string())]);
        assert!(s.backends[1].provider.authorize(&out, 0, &mut headers).unwrap_err().contains("/nope"));
        assert!(s.warnings.iter().any(|w| w.contains("/nope")));
    }

    #[test]
    fn client_key_from_env_and_missing_variable_is_a_warning() {
        let env = |n: &str| (n == "K1").then(|| "abc".to_string());
        let s = Snapshot::build(
            Config::parse(r#"{"clients":[{"name":"a","key_env":"K1"},{"name":"b","key_env":"K2"}]}"#).unwrap(),
            &Environment { var: &env, file: &nothing },
            None,
        )
        .unwrap();
        assert_eq!(s.clients.len(), 1);
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("K2"));
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn every_one_of_many_clients_is_found_by_its_key_and_nothing_else_is() {
        let clients: Vec<serde_json::Value> =
            (0..2000).map(|i| serde_json::json!({"name": format!("c{i}"), "key": format!("sk-{i:05}")})).collect();
        let s = snapshot(&serde_json::json!({ "clients": clients }).to_string()).unwrap();
        for i in (0..2000).step_by(7) {
            assert_eq!(s.client_by_key(&format!("sk-{i:05}")).unwrap().name, format!("c{i}"));
        }
        for wrong in ["sk-0000", "sk-000000", "sk-02000", "", "SK-00001"] {
            assert!(s.client_by_key(wrong).is_none(), "{wrong}");
        }
    }

    #[test]
    fn client_key_from_a_file_is_trimmed_and_a_missing_file_is_a_warning() {
        let file = |p: &str| (p == "/run/secrets/client").then(|| "sk-client-from-file\n".to_string());
        let s = Snapshot::build(
            Config::parse(
                r#"{"clients":[{"name":"a","key_file":"/run/secrets/client"},{"name":"b","key_file":"/nope"}]}"#,
            )
            .unwrap(),
            &Environment { var: &nothing, file: &file },
            None,
        )
        .unwrap();
        assert_eq!(s.client_by_key("sk-client-from-file").unwrap().name, "a");
        assert_eq!(s.clients.len(), 1);
        assert!(s.warnings.iter().any(|w| w.contains("/nope") && w.contains("\"b\"")), "{:?}", s.warnings);
        let e = snapshot(r#"{"clients":[{"name":"a","key":"k","key_file":"/f"}]}"#).unwrap_err();
        assert_eq!(e.path, "clients[0]");
    }
}
