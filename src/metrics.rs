//! Token usage and gateway counters, served as Prometheus text at `GET /metrics`. Labels carry client,
//! model and backend names only — never a key.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::translate::Usage;

/// Totals per (client, model, backend).
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
    /// Responses that reported no usage (stream cut, or an upstream that never sends it).
    pub usage_unknown: u64,
    /// Tokens estimated for those.
    pub estimated_tokens: u64,
}

/// Totals by client, then model, then backend: nested so that recording looks up by `&str` and
/// allocates only the first time a combination is seen.
type UsageMap = BTreeMap<String, BTreeMap<String, BTreeMap<String, Totals>>>;

static USAGE: Mutex<UsageMap> = Mutex::new(BTreeMap::new());

fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}
pub static RATE_LIMITED: AtomicU64 = AtomicU64::new(0);
pub static REDIS_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Backends (or backend addresses) taken out by passive health, and restored.
pub static EJECTIONS: AtomicU64 = AtomicU64::new(0);
pub static RESTORATIONS: AtomicU64 = AtomicU64::new(0);
/// Attempts made again after a failure that showed the request was not processed.
pub static RETRIES: AtomicU64 = AtomicU64::new(0);

/// Records one finished request's usage (or its estimate when the response carried none).
pub fn record(client: &str, model: &str, backend: &str, usage: Option<&Usage>, estimated: u64) {
    let mut map = USAGE.lock();
    let t = slot(slot(slot(&mut map, client), model), backend);
    t.requests += 1;
    match usage {
        Some(u) => {
            t.input_tokens += u.prompt_tokens();
            t.output_tokens += u.output_tokens;
            t.cached_input_tokens += u.cache_read_input_tokens;
            t.cache_creation_input_tokens += u.cache_creation_input_tokens;
            t.reasoning_tokens += u.reasoning_tokens;
        }
        None => {
            t.usage_unknown += 1;
            t.estimated_tokens += estimated;
        }
    }
}

/// A copy of the totals, for tests and benchmarks.
pub fn snapshot() -> BTreeMap<(String, String, String), Totals> {
    let map = USAGE.lock();
    let mut out = BTreeMap::new();
    for (client, models) in map.iter() {
        for (model, backends) in models {
            for (backend, t) in backends {
                out.insert((client.clone(), model.clone(), backend.clone()), t.clone());
            }
        }
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A counter's name, help text, and how to read it from the totals.
type Series = (&'static str, &'static str, fn(&Totals) -> u64);

/// Prometheus text exposition.
pub fn render() -> String {
    let map = snapshot();
    let mut out = String::new();
    let series: [Series; 8] = [
        ("switchyard_requests_total", "Requests that reached a backend.", |t| t.requests),
        ("gen_ai_client_token_usage_input_total", "Input tokens (cached included).", |t| t.input_tokens),
        ("gen_ai_client_token_usage_output_total", "Output tokens.", |t| t.output_tokens),
        ("gen_ai_client_token_usage_cached_input_total", "Input tokens read from a prompt cache.", |t| {
            t.cached_input_tokens
        }),
        ("gen_ai_client_token_usage_cache_creation_input_total", "Input tokens written to a prompt cache.", |t| {
            t.cache_creation_input_tokens
        }),
        ("gen_ai_client_token_usage_reasoning_total", "Reasoning tokens.", |t| t.reasoning_tokens),
        ("switchyard_usage_unknown_total", "Responses that reported no usage.", |t| t.usage_unknown),
        ("switchyard_estimated_tokens_total", "Tokens estimated for responses without usage.", |t| t.estimated_tokens),
    ];
    for (name, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for ((client, model, backend), t) in &map {
            let _ = writeln!(
                out,
                "{name}{{client=\"{}\",gen_ai_request_model=\"{}\",backend=\"{}\"}} {}",
                escape(client),
                escape(model),
                escape(backend),
                get(t)
            );
        }
    }
    let _ = writeln!(
        out,
        "# TYPE switchyard_rate_limited_total counter\nswitchyard_rate_limited_total {}",
        RATE_LIMITED.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE switchyard_redis_errors_total counter\nswitchyard_redis_errors_total {}",
        REDIS_ERRORS.load(Ordering::Relaxed)
    );
    for (name, counter) in [
        ("switchyard_backend_ejections_total", &EJECTIONS),
        ("switchyard_backend_restorations_total", &RESTORATIONS),
        ("switchyard_retries_total", &RETRIES),
    ] {
        let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", counter.load(Ordering::Relaxed));
    }
    let _ = writeln!(
        out,
        "# TYPE switchyard_open_connections gauge\nswitchyard_open_connections {}",
        crate::server::OPEN_CONNECTIONS.load(Ordering::Relaxed)
    );
    out
}
