//! Metrics, served as Prometheus text (`GET /metrics`): the OpenTelemetry gen_ai histograms under the
//! names Envoy AI Gateway exports (dots become underscores; seconds histograms get `_seconds`), and the
//! gateway's own counters. Labels carry client, model, backend and limit names — never a key.
//!
//! Recording never serialises the worker threads: each thread records into its own shard (a map from
//! interned label ids to counts, behind a lock only that thread and the scraper take), and a scrape
//! merges the shards. Label values are interned once ([`labels`]), so a request's recording hashes a
//! few integers and allocates nothing after its label values were first seen.

pub mod histogram;
pub mod labels;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::translate::Usage;
use histogram::Histogram;
use labels::FxBuild;
pub use labels::{label, model as model_label, set_max_models, Label, EMPTY, OVERFLOW, OVERFLOW_TEXT};

/// The attributes of one request's gen_ai series, as interned ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GenAiLabels {
    /// `gen_ai.operation.name`: `chat`, `text_completion`, `embeddings`, `count_tokens`.
    pub operation: Label,
    /// `gen_ai.provider.name` of the backend that answered (or was tried last).
    pub provider: Label,
    /// `gen_ai.request.model` (also `gen_ai.original.model`): what the client asked for, bounded.
    pub request_model: Label,
    /// `gen_ai.response.model`: what the upstream said it used, bounded.
    pub response_model: Label,
    pub client: Label,
    pub backend: Label,
    /// `error.type`: empty on success.
    pub error: Label,
}

/// What one request measured, in seconds and tokens.
#[derive(Debug, Default)]
pub struct GenAiSample<'a> {
    /// The status answered (also counted in `switchyard_requests_total`).
    pub status: u16,
    /// From the complete request head to the end of the response.
    pub duration: f64,
    /// Streams: to the first content event written to the client.
    pub ttft: Option<f64>,
    /// Successful streams: (duration − ttft) / (output tokens − 1).
    pub tpot: Option<f64>,
    /// As reported by the upstream.
    pub usage: Option<&'a Usage>,
    /// The request reached a backend whose response reported no usage.
    pub usage_unknown: bool,
    /// Tokens estimated for it.
    pub estimated_tokens: u64,
}

/// `gen_ai.token.type` values, in [`Series::tokens`] order.
const TOKEN_TYPES: [&str; 5] = ["input", "output", "cached_input", "cache_creation_input", "reasoning"];

/// One gen_ai label set's measurements.
#[derive(Debug, Clone, Default)]
struct Series {
    duration: Histogram,
    ttft: Histogram,
    tpot: Histogram,
    tokens: [Histogram; 5],
    usage_unknown: u64,
    estimated_tokens: u64,
}

impl Series {
    fn add(&mut self, o: &Series) {
        self.duration.add(&o.duration);
        self.ttft.add(&o.ttft);
        self.tpot.add(&o.tpot);
        for (a, b) in self.tokens.iter_mut().zip(o.tokens.iter()) {
            a.add(b);
        }
        self.usage_unknown += o.usage_unknown;
        self.estimated_tokens += o.estimated_tokens;
    }
}

/// Counter families with up to three labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Family {
    Requests,
    Fallbacks,
    Retries,
    RateLimited,
    Timeouts,
}

impl Family {
    const ALL: [Family; 5] =
        [Family::Requests, Family::Fallbacks, Family::Retries, Family::RateLimited, Family::Timeouts];

    fn name(self) -> &'static str {
        match self {
            Family::Requests => "switchyard_requests_total",
            Family::Fallbacks => "switchyard_fallbacks_total",
            Family::Retries => "switchyard_retries_total",
            Family::RateLimited => "switchyard_rate_limited_total",
            Family::Timeouts => "switchyard_upstream_timeouts_total",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Family::Requests => "Requests answered, by client, status class and error type.",
            Family::Fallbacks => "Moves to the next backend of a route, by the backend left and why.",
            Family::Retries => "Retries on the same backend, by backend and why.",
            Family::RateLimited => "Requests rejected by a limit, by limit name and client.",
            Family::Timeouts => "Upstream timeouts, by backend and phase (connect, response, idle).",
        }
    }

    fn labels(self) -> &'static [&'static str] {
        match self {
            Family::Requests => &["client", "status_class", "error_type"],
            Family::Fallbacks | Family::Retries => &["backend", "reason"],
            Family::RateLimited => &["limit", "client"],
            Family::Timeouts => &["backend", "phase"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct CounterKey {
    family: Family,
    labels: [Label; 3],
}

/// One thread's measurements.
#[derive(Default)]
struct Shard {
    genai: HashMap<GenAiLabels, Series, FxBuild>,
    counters: HashMap<CounterKey, u64, FxBuild>,
    redis: Histogram,
}

/// Every shard ever made (threads' shards outlive their threads: their counts stay in the totals).
static SHARDS: Mutex<Vec<Arc<Mutex<Shard>>>> = Mutex::new(Vec::new());
/// Used by threads whose own shard is already torn down (thread exit).
static SPARE: Mutex<Option<Arc<Mutex<Shard>>>> = Mutex::new(None);

thread_local! {
    static LOCAL: Arc<Mutex<Shard>> = {
        let shard = Arc::new(Mutex::new(Shard::default()));
        SHARDS.lock().push(shard.clone());
        shard
    };
}

fn with_shard(f: impl FnOnce(&mut Shard)) {
    let mut f = Some(f);
    let done = LOCAL.try_with(|s| (f.take().expect("called once"))(&mut s.lock())).is_ok();
    if !done {
        let spare = SPARE
            .lock()
            .get_or_insert_with(|| {
                let shard = Arc::new(Mutex::new(Shard::default()));
                SHARDS.lock().push(shard.clone());
                shard
            })
            .clone();
        (f.take().expect("called once"))(&mut spare.lock());
    }
}

fn bump(family: Family, labels: [Label; 3], by: u64) {
    with_shard(|s| *s.counters.entry(CounterKey { family, labels }).or_insert(0) += by);
}

/// Records one finished gen_ai request (a proxied call, successful or not), and counts it in
/// `switchyard_requests_total`.
pub fn record_request(labels: &GenAiLabels, sample: &GenAiSample) {
    let requests =
        CounterKey { family: Family::Requests, labels: [labels.client, status_class(sample.status), labels.error] };
    with_shard(|s| {
        *s.counters.entry(requests).or_insert(0) += 1;
        let series = s.genai.entry(*labels).or_default();
        series.duration.observe(histogram::DURATION, sample.duration);
        if let Some(t) = sample.ttft {
            series.ttft.observe(histogram::TTFT, t);
        }
        if let Some(t) = sample.tpot {
            series.tpot.observe(histogram::TPOT, t);
        }
        if let Some(u) = sample.usage {
            series.tokens[0].observe(histogram::TOKENS, u.prompt_tokens() as f64);
            series.tokens[1].observe(histogram::TOKENS, u.output_tokens as f64);
            for (slot, n) in
                [(2, u.cache_read_input_tokens), (3, u.cache_creation_input_tokens), (4, u.reasoning_tokens)]
            {
                if n > 0 {
                    series.tokens[slot].observe(histogram::TOKENS, n as f64);
                }
            }
        }
        if sample.usage_unknown {
            series.usage_unknown += 1;
            series.estimated_tokens += sample.estimated_tokens;
        }
    });
}

/// The status class label of a status (`2xx`…).
fn status_class(status: u16) -> Label {
    const CLASSES: [&str; 6] = ["other", "1xx", "2xx", "3xx", "4xx", "5xx"];
    static LABELS: std::sync::OnceLock<[Label; 6]> = std::sync::OnceLock::new();
    let labels = LABELS.get_or_init(|| CLASSES.map(label));
    labels.get(usize::from(status / 100)).copied().unwrap_or(labels[0])
}

/// Counts one answered request that is not a gen_ai call (`/health`, `/metrics`, `/v1/models`…).
pub fn count_request(client: Label, status: u16, error: Label) {
    bump(Family::Requests, [client, status_class(status), error], 1);
}

/// Counts a request the HTTP layer refused before it could be routed (malformed, too large, too slow).
pub fn count_refused(status: u16) {
    let error = match status {
        408 => "request_timeout",
        413 => "body_too_large",
        414 | 431 => "head_too_large",
        503 => "overloaded",
        _ => "malformed_request",
    };
    count_request(EMPTY, status, label(error));
}

/// Counts a move to the next backend of a route: `backend` is the one left, `reason` why (`status_429`,
/// `status_5xx`, `upstream_unreachable`, `upstream_timeout`, `backend_unavailable`, `unsupported`).
pub fn count_fallback(backend: &str, reason: &str) {
    bump(Family::Fallbacks, [label(backend), label(reason), EMPTY], 1);
}

/// Counts a retry on the same backend (`reason`: a short, fixed word such as `status_503` or
/// `connect_error`). For the retry policy's use.
pub fn count_retry(backend: &str, reason: &str) {
    bump(Family::Retries, [label(backend), label(reason), EMPTY], 1);
}

/// Counts a request rejected by the limit `limit`.
pub fn count_rate_limited(limit: &str, client: &str) {
    bump(Family::RateLimited, [label(limit), label(client), EMPTY], 1);
}

/// Where an upstream call timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// DNS, TCP connect and TLS handshake (`connect_timeout_ms`).
    Connect,
    /// Waiting for the response head (`response_timeout_ms`).
    Response,
    /// Silence between two reads of the body (`idle_timeout_ms`).
    Idle,
}

pub fn count_upstream_timeout(backend: &str, phase: TimeoutPhase) {
    let phase = match phase {
        TimeoutPhase::Connect => "connect",
        TimeoutPhase::Response => "response",
        TimeoutPhase::Idle => "idle",
    };
    bump(Family::Timeouts, [label(backend), label(phase), EMPTY], 1);
}

/// Records one Redis round trip's duration.
pub fn observe_redis(seconds: f64) {
    with_shard(|s| s.redis.observe(histogram::REDIS, seconds));
}

/// Redis calls that failed or timed out.
pub static REDIS_ERRORS: AtomicU64 = AtomicU64::new(0);
/// Config reloads applied.
pub static CONFIG_RELOADS_OK: AtomicU64 = AtomicU64::new(0);
/// Config reloads rejected (the running config was kept).
pub static CONFIG_RELOADS_REJECTED: AtomicU64 = AtomicU64::new(0);
/// Configs published since start (1 after start-up).
pub static CONFIG_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Spans the collector accepted.
pub static TRACE_SPANS_EXPORTED: AtomicU64 = AtomicU64::new(0);
/// Spans dropped because the export queue was full (the collector is slow or down).
pub static TRACE_SPANS_DROPPED_QUEUE: AtomicU64 = AtomicU64::new(0);
/// Spans dropped because their export failed.
pub static TRACE_SPANS_DROPPED_EXPORT: AtomicU64 = AtomicU64::new(0);
/// Access log lines dropped because the writer could not keep up.
pub static ACCESS_LOG_DROPPED: AtomicU64 = AtomicU64::new(0);
/// Backends (or backend addresses) passive health took out.
pub static EJECTIONS: AtomicU64 = AtomicU64::new(0);
/// Ejected backends (or addresses) a probe restored.
pub static RESTORATIONS: AtomicU64 = AtomicU64::new(0);

/// Everything the shards hold, merged.
#[derive(Default)]
struct Merged {
    genai: BTreeMap<GenAiLabels, Series>,
    counters: BTreeMap<CounterKey, u64>,
    redis: Histogram,
}

fn merge() -> Merged {
    let shards: Vec<Arc<Mutex<Shard>>> = SHARDS.lock().clone();
    let mut m = Merged::default();
    for shard in shards {
        let s = shard.lock();
        for (k, v) in &s.genai {
            m.genai.entry(*k).or_default().add(v);
        }
        for (k, v) in &s.counters {
            *m.counters.entry(*k).or_insert(0) += v;
        }
        m.redis.add(&s.redis);
    }
    m
}

fn escape(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `name="value",…` for these pairs.
fn label_list(pairs: &[(&str, Label)], values: &[Arc<str>]) -> String {
    let mut out = String::new();
    for (i, (name, id)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape(values.get(*id as usize).map_or("", |v| v), &mut out);
        out.push('"');
    }
    out
}

fn genai_pairs(k: &GenAiLabels) -> [(&'static str, Label); 7] {
    [
        ("gen_ai_operation_name", k.operation),
        ("gen_ai_provider_name", k.provider),
        ("gen_ai_original_model", k.request_model),
        ("gen_ai_request_model", k.request_model),
        ("gen_ai_response_model", k.response_model),
        ("client", k.client),
        ("backend", k.backend),
    ]
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The Prometheus text exposition of everything.
pub fn render() -> String {
    let m = merge();
    // Every id rendered must be interned before the table is copied.
    let token_types = TOKEN_TYPES.map(labels::label);
    let values = labels::values();
    let mut out = String::with_capacity(4096);

    // gen_ai.client.token.usage: error.type is not one of its attributes, so series that differ only by
    // it are summed.
    let mut tokens: BTreeMap<GenAiLabels, [Histogram; 5]> = BTreeMap::new();
    for (k, s) in &m.genai {
        let slot = tokens.entry(GenAiLabels { error: EMPTY, ..*k }).or_default();
        for (a, b) in slot.iter_mut().zip(s.tokens.iter()) {
            a.add(b);
        }
    }
    header(&mut out, "gen_ai_client_token_usage", "histogram", "Number of input and output tokens used.");
    for (k, hists) in &tokens {
        let mut base = genai_pairs(k).to_vec();
        for (i, h) in hists.iter().enumerate() {
            if h.is_empty() {
                continue;
            }
            base.push(("gen_ai_token_type", token_types[i]));
            h.render(&mut out, "gen_ai_client_token_usage", &label_list(&base, &values), histogram::TOKENS);
            base.pop();
        }
    }
    type Pick = fn(&Series) -> &Histogram;
    let timings: [(&str, &str, Pick, &[f64]); 3] = [
        (
            "gen_ai_server_request_duration_seconds",
            "Generative AI server request duration such as time-to-last byte or last output token.",
            |s| &s.duration,
            histogram::DURATION,
        ),
        (
            "gen_ai_server_time_to_first_token_seconds",
            "Time to generate first token for successful responses.",
            |s| &s.ttft,
            histogram::TTFT,
        ),
        (
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token generated after the first token for successful responses.",
            |s| &s.tpot,
            histogram::TPOT,
        ),
    ];
    for (name, help, pick, bounds) in timings {
        header(&mut out, name, "histogram", help);
        for (k, s) in &m.genai {
            let h = pick(s);
            if h.is_empty() {
                continue;
            }
            let mut pairs = genai_pairs(k).to_vec();
            if k.error != EMPTY {
                pairs.push(("error_type", k.error));
            }
            h.render(&mut out, name, &label_list(&pairs, &values), bounds);
        }
    }
    // The usage counters have no error attribute either.
    let mut usage: BTreeMap<GenAiLabels, (u64, u64)> = BTreeMap::new();
    for (k, s) in &m.genai {
        let slot = usage.entry(GenAiLabels { error: EMPTY, ..*k }).or_default();
        slot.0 += s.usage_unknown;
        slot.1 += s.estimated_tokens;
    }
    type Get = fn(&(u64, u64)) -> u64;
    let extra: [(&str, &str, Get); 2] = [
        ("switchyard_usage_unknown_total", "Responses that reported no usage.", |u| u.0),
        ("switchyard_estimated_tokens_total", "Tokens estimated for responses without usage.", |u| u.1),
    ];
    for (name, help, get) in extra {
        header(&mut out, name, "counter", help);
        for (k, u) in &usage {
            if u.0 > 0 {
                let _ = writeln!(out, "{name}{{{}}} {}", label_list(&genai_pairs(k), &values), get(u));
            }
        }
    }

    for family in Family::ALL {
        header(&mut out, family.name(), "counter", family.help());
        let range = CounterKey { family, labels: [0; 3] }..=CounterKey { family, labels: [Label::MAX; 3] };
        for (k, v) in m.counters.range(range) {
            let pairs: Vec<(&str, Label)> = family.labels().iter().copied().zip(k.labels).collect();
            let _ = writeln!(out, "{}{{{}}} {v}", family.name(), label_list(&pairs, &values));
        }
    }

    header(&mut out, "switchyard_redis_duration_seconds", "histogram", "Redis round trips (rate limiting).");
    m.redis.render(&mut out, "switchyard_redis_duration_seconds", "", histogram::REDIS);
    let gauge = |a: &std::sync::atomic::AtomicUsize| a.load(Ordering::Relaxed) as u64;
    let single: [(&str, &str, &str, u64); 9] = [
        ("switchyard_redis_errors_total", "counter", "Redis calls that failed or timed out.", load(&REDIS_ERRORS)),
        (
            "switchyard_requests_in_flight",
            "gauge",
            "Requests between a complete head and the end of their response.",
            gauge(&crate::server::ACTIVE_REQUESTS),
        ),
        ("switchyard_open_connections", "gauge", "Open client connections.", gauge(&crate::server::OPEN_CONNECTIONS)),
        (
            "switchyard_config_generation",
            "gauge",
            "Configs published since start (1 after start-up).",
            load(&CONFIG_GENERATION),
        ),
        (
            "switchyard_trace_spans_exported_total",
            "counter",
            "Spans the collector accepted.",
            load(&TRACE_SPANS_EXPORTED),
        ),
        (
            "switchyard_access_log_dropped_total",
            "counter",
            "Access log lines dropped because the writer could not keep up.",
            load(&ACCESS_LOG_DROPPED),
        ),
        (
            "switchyard_tls_handshake_failures_total",
            "counter",
            "TLS handshakes on the listener that failed or timed out (plain HTTP on the TLS port included).",
            load(&crate::server::tls::HANDSHAKE_FAILURES),
        ),
        (
            "switchyard_backend_ejections_total",
            "counter",
            "Backends (or backend addresses) passive health took out after repeated failures.",
            load(&EJECTIONS),
        ),
        (
            "switchyard_backend_restorations_total",
            "counter",
            "Ejected backends (or addresses) restored by a successful probe.",
            load(&RESTORATIONS),
        ),
    ];
    for (name, kind, help, value) in single {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    header(&mut out, "switchyard_config_reloads_total", "counter", "Config reloads, applied or rejected.");
    let _ = writeln!(out, "switchyard_config_reloads_total{{result=\"ok\"}} {}", load(&CONFIG_RELOADS_OK));
    let _ = writeln!(out, "switchyard_config_reloads_total{{result=\"rejected\"}} {}", load(&CONFIG_RELOADS_REJECTED));
    header(&mut out, "switchyard_tls_certificate_reloads_total", "counter", "Listener certificate reloads.");
    let _ = writeln!(
        out,
        "switchyard_tls_certificate_reloads_total{{result=\"ok\"}} {}",
        load(&crate::server::tls::CERT_RELOADS_OK)
    );
    let _ = writeln!(
        out,
        "switchyard_tls_certificate_reloads_total{{result=\"rejected\"}} {}",
        load(&crate::server::tls::CERT_RELOADS_REJECTED)
    );
    header(&mut out, "switchyard_trace_spans_dropped_total", "counter", "Spans dropped rather than delaying requests.");
    let _ = writeln!(
        out,
        "switchyard_trace_spans_dropped_total{{reason=\"queue_full\"}} {}",
        load(&TRACE_SPANS_DROPPED_QUEUE)
    );
    let _ = writeln!(
        out,
        "switchyard_trace_spans_dropped_total{{reason=\"export_failed\"}} {}",
        load(&TRACE_SPANS_DROPPED_EXPORT)
    );
    out
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests;
