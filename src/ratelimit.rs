//! Rate limits and quotas without IO: configuration, keys, fixed-window arithmetic, the in-process
//! store, and the Redis script's arguments and replies. The clock is always passed in.
//!
//! Every limit is a counter per key and window: requests per interval, tokens per interval (input,
//! output, total or weighted), long budgets (the same with a long `per`), and concurrent requests.
//! Admission checks *all* applicable limits and charges them together or not at all.
//!
//! Token limits reserve an estimate at admission — input tokens estimated from the body
//! (`bytes / 4`, rounded up) plus `max_tokens` (or `default_output_tokens`) for output — and
//! reconcile with the real usage when the response ends, fails or is cut. The sum of reservations of
//! admitted requests never exceeds the limit, so the only overshoot comes from requests whose real
//! usage exceeds their reservation: overshoot ≤ Σ over requests in flight together of
//! max(0, actual − reserved). With `max_tokens` set by the client, output can never exceed its
//! reservation, so the overshoot is bounded by the input-estimate error of the requests in flight.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::config::{ConfigError, LimitConfig, Weights};
use crate::router::ModelPattern;
use crate::translate::Usage;
use parking_lot::Mutex;

#[derive(Debug, Clone, PartialEq)]
pub enum KeyPart {
    Client,
    Model,
    Backend,
    Header(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Count {
    Input,
    Output,
    Total,
    Weighted(Weights),
}

impl Count {
    pub fn of(&self, input: u64, output: u64) -> u64 {
        match self {
            Count::Input => input,
            Count::Output => output,
            Count::Total => input.saturating_add(output),
            Count::Weighted(w) => (w.input * input as f64 + w.output * output as f64).ceil() as u64,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Requests { max: u64, window_ms: u64 },
    Tokens { max: u64, window_ms: u64, count: Count },
    Concurrent { max: u64 },
}

#[derive(Debug, Clone)]
pub struct Limit {
    pub name: String,
    pub key: Vec<KeyPart>,
    pub models: Vec<ModelPattern>,
    pub kind: Kind,
}

/// Parses `10s`, `1m`, `2h`, `30d` into milliseconds.
pub fn parse_period(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms)
}

/// Validates and compiles the `limits` section.
pub fn compile(limits: &[LimitConfig]) -> Result<Vec<Limit>, ConfigError> {
    let mut out: Vec<Limit> = Vec::with_capacity(limits.len());
    for (i, l) in limits.iter().enumerate() {
        let err = |field: &str, message: String| ConfigError { path: format!("limits[{i}]{field}"), message };
        if l.name.is_empty() || l.name.contains(['|', '@']) {
            return Err(err(".name", "a non-empty name without `|` or `@`".into()));
        }
        if out.iter().any(|o| o.name == l.name) {
            return Err(err(".name", format!("duplicate limit name \"{}\"", l.name)));
        }
        let mut key = Vec::with_capacity(l.key.len());
        for (j, part) in l.key.iter().enumerate() {
            key.push(match part.as_str() {
                "client" => KeyPart::Client,
                "model" => KeyPart::Model,
                "backend" => KeyPart::Backend,
                p => match p.strip_prefix("header:") {
                    Some(h) if !h.is_empty() => KeyPart::Header(h.to_ascii_lowercase()),
                    _ => {
                        return Err(err(
                            &format!(".key[{j}]"),
                            format!("\"{p}\": use client, model, backend or header:<name>"),
                        ))
                    }
                },
            });
        }
        let per = || -> Result<u64, ConfigError> {
            let p = l.per.as_deref().ok_or_else(|| err(".per", "required (e.g. \"1m\")".into()))?;
            parse_period(p).ok_or_else(|| err(".per", format!("\"{p}\" is not a period like 10s, 1m, 1h or 30d")))
        };
        let kind = match (l.requests, l.tokens, l.concurrent) {
            (Some(max), None, None) => Kind::Requests { max, window_ms: per()? },
            (None, Some(max), None) => {
                let count = match (l.count.as_deref().unwrap_or("total"), l.weights) {
                    ("input", None) => Count::Input,
                    ("output", None) => Count::Output,
                    ("total", None) => Count::Total,
                    ("weighted", Some(w)) if w.input >= 0.0 && w.output >= 0.0 => Count::Weighted(w),
                    (c, _) => {
                        return Err(err(
                            ".count",
                            format!("\"{c}\": use input, output, total, or weighted with \"weights\""),
                        ))
                    }
                };
                Kind::Tokens { max, window_ms: per()?, count }
            }
            (None, None, Some(max)) => {
                if l.per.is_some() {
                    return Err(err(".per", "not used with \"concurrent\"".into()));
                }
                Kind::Concurrent { max }
            }
            _ => return Err(err("", "set exactly one of \"requests\", \"tokens\" or \"concurrent\"".into())),
        };
        if l.count.is_some() && !matches!(kind, Kind::Tokens { .. }) {
            return Err(err(".count", "only with \"tokens\"".into()));
        }
        let models = l.models.iter().map(|m| ModelPattern::new(m)).collect();
        out.push(Limit { name: l.name.clone(), key, models, kind });
    }
    Ok(out)
}

/// What admission knows about a request.
pub struct Facts<'a> {
    pub client: &'a str,
    pub model: &'a str,
    pub backend: &'a str,
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    pub est_input: u64,
    pub max_output: u64,
}

/// Input tokens estimated from a request body's size.
pub fn estimate_input_tokens(body_len: usize) -> u64 {
    (body_len as u64).div_ceil(4)
}

/// One counter a request must be charged on.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    /// Index into the limits.
    pub limit: usize,
    /// `name|part|part…` (the window is appended by the store).
    pub key: String,
    pub max: u64,
    /// 0 for concurrency counters (no window).
    pub window_ms: u64,
    pub cost: u64,
}

/// The charges that apply to a request: limits whose models match and whose key parts all resolve
/// (a limit keyed on a header the request lacks does not apply).
pub fn charges(limits: &[Limit], facts: &Facts) -> Vec<Charge> {
    let mut out = Vec::new();
    'limits: for (i, limit) in limits.iter().enumerate() {
        if !limit.models.is_empty() && !limit.models.iter().any(|m| m.matches(facts.model)) {
            continue;
        }
        let mut key = limit.name.clone();
        for part in &limit.key {
            let value = match part {
                KeyPart::Client => facts.client,
                KeyPart::Model => facts.model,
                KeyPart::Backend => facts.backend,
                KeyPart::Header(h) => match (facts.header)(h) {
                    Some(v) => v,
                    None => continue 'limits,
                },
            };
            key.push('|');
            // `|` and `@` separate parts and windows: escape them so values cannot collide.
            for c in value.chars() {
                match c {
                    '|' => key.push_str("%7C"),
                    '@' => key.push_str("%40"),
                    '%' => key.push_str("%25"),
                    c => key.push(c),
                }
            }
        }
        let (max, window_ms, cost) = match &limit.kind {
            Kind::Requests { max, window_ms } => (*max, *window_ms, 1),
            Kind::Tokens { max, window_ms, count } => (*max, *window_ms, count.of(facts.est_input, facts.max_output)),
            Kind::Concurrent { max } => (*max, 0, 1),
        };
        out.push(Charge { limit: i, key, max, window_ms, cost });
    }
    out
}

/// A charge that was made: the counter's full key (with its window), its value after the charge and
/// the time until its window resets.
#[derive(Debug, Clone, PartialEq)]
pub struct Granted {
    pub key: String,
    pub used: u64,
    pub reset_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// One `Granted` per charge, in order.
    Admit(Vec<Granted>),
    /// The charge at this index would exceed its limit; nothing was charged.
    Deny { charge: usize, used: u64, retry_after_ms: u64 },
}

/// The full key of a windowed counter, and the time left in its window.
pub fn window_key(key: &str, window_ms: u64, now_ms: u64) -> (String, u64) {
    if window_ms == 0 {
        return (key.to_string(), 0);
    }
    let start = now_ms - now_ms % window_ms;
    (format!("{key}@{start}"), start + window_ms - now_ms)
}

/// Counters of one process. One short critical section per admission (no IO under the lock), so
/// limits are exact across every worker thread and every connection.
#[derive(Default)]
pub struct LocalStore {
    counters: Mutex<HashMap<String, Counter>>,
    last_sweep_ms: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Counter {
    used: u64,
    /// When the window ends (`u64::MAX` for concurrency counters).
    expires_ms: u64,
}

impl LocalStore {
    pub fn admit(&self, charges: &[Charge], now_ms: u64) -> Verdict {
        let keys: Vec<(String, u64)> = charges.iter().map(|c| window_key(&c.key, c.window_ms, now_ms)).collect();
        let mut counters = self.counters.lock();
        for (i, (c, (key, reset))) in charges.iter().zip(&keys).enumerate() {
            let used = counters.get(key).filter(|k| k.expires_ms > now_ms).map_or(0, |k| k.used);
            if used.saturating_add(c.cost) > c.max {
                let retry_after_ms = if c.window_ms == 0 { 1000 } else { *reset };
                return Verdict::Deny { charge: i, used, retry_after_ms };
            }
        }
        let mut granted = Vec::with_capacity(charges.len());
        for (c, (key, reset)) in charges.iter().zip(keys) {
            let expires_ms = if c.window_ms == 0 { u64::MAX } else { now_ms + reset };
            let counter = counters.entry(key.clone()).or_insert(Counter { used: 0, expires_ms });
            if counter.expires_ms <= now_ms {
                *counter = Counter { used: 0, expires_ms };
            }
            counter.used = counter.used.saturating_add(c.cost);
            granted.push(Granted { key, used: counter.used, reset_ms: reset });
        }
        // Expired windows and idle concurrency counters go, at most once a second: never a scan per
        // admission however many keys there are.
        let last = self.last_sweep_ms.load(std::sync::atomic::Ordering::Relaxed);
        if now_ms >= last + 1000 {
            self.last_sweep_ms.store(now_ms, std::sync::atomic::Ordering::Relaxed);
            counters.retain(|_, c| c.expires_ms > now_ms && (c.expires_ms != u64::MAX || c.used > 0));
        }
        Verdict::Admit(granted)
    }

    /// Adds `delta` (negative to refund or release) to a counter made by `admit`.
    pub fn adjust(&self, key: &str, delta: i64) {
        if let Some(c) = self.counters.lock().get_mut(key) {
            c.used = c.used.saturating_add_signed(delta);
        }
    }
}

/// The Redis script that admits atomically: computes windows from the server's clock, checks every
/// counter, then charges all or none. KEYS are base keys. ARGV[1] is this request's id and ARGV[2]
/// the concurrency lease (ms); then max, window_ms, cost per key. Windowed limits are counters
/// (`key@window_start`, expiring after their window); concurrency limits are sorted sets of request ids
/// scored by lease end, so a slot whose release was lost frees itself when its lease ends.
/// Reply: `{1, full_key, used, reset_ms, …}` or `{0, index (1-based), used, retry_after_ms}`.
pub const REDIS_ADMIT_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local member, lease = ARGV[1], tonumber(ARGV[2])
local full, reset = {}, {}
for i = 1, #KEYS do
  local max, win, cost = tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1]), tonumber(ARGV[3*i+2])
  local k, r, used = KEYS[i], 0, 0
  if win > 0 then
    local start = now - (now % win)
    k = k .. '@' .. start
    r = start + win - now
    used = tonumber(redis.call('GET', k) or '0')
  else
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
    used = redis.call('ZCARD', k)
  end
  full[i], reset[i] = k, r
  if used + cost > max then
    if win == 0 then r = 1000 end
    return {0, i, used, r}
  end
end
local out = {1}
for i = 1, #KEYS do
  local win, cost = tonumber(ARGV[3*i+1]), tonumber(ARGV[3*i+2])
  local used
  if win > 0 then
    used = redis.call('INCRBY', full[i], cost)
    redis.call('PEXPIRE', full[i], reset[i] + 60000)
  else
    redis.call('ZADD', full[i], now + lease, member)
    redis.call('PEXPIRE', full[i], lease)
    used = redis.call('ZCARD', full[i])
  end
  out[#out+1] = full[i]
  out[#out+1] = used
  out[#out+1] = reset[i]
end
return out
"#;

/// Corrections at settlement: ARGV[1] is the request id; then per key a delta, or `release` to take
/// the request out of a concurrency set. An expired window stays expired.
pub const REDIS_SETTLE_SCRIPT: &str = r#"
for i = 1, #KEYS do
  local a = ARGV[i + 1]
  if a == 'release' then
    redis.call('ZREM', KEYS[i], ARGV[1])
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], a)
  end
end
return 1
"#;

/// How long a request holds a Redis concurrency slot if its release is lost.
pub const CONCURRENCY_LEASE_MS: u64 = 3_600_000;

/// Arguments of [`REDIS_ADMIT_SCRIPT`] for `charges`, after the script's SHA: numkeys, keys, argv.
pub fn redis_admit_args(prefix: &str, member: &str, charges: &[Charge]) -> Vec<Vec<u8>> {
    let mut args = Vec::with_capacity(3 + charges.len() * 4);
    args.push(charges.len().to_string().into_bytes());
    for c in charges {
        args.push(format!("{prefix}{}", c.key).into_bytes());
    }
    args.push(member.as_bytes().to_vec());
    args.push(CONCURRENCY_LEASE_MS.to_string().into_bytes());
    for c in charges {
        args.push(c.max.to_string().into_bytes());
        args.push(c.window_ms.to_string().into_bytes());
        args.push(c.cost.to_string().into_bytes());
    }
    args
}

/// Arguments of [`REDIS_SETTLE_SCRIPT`].
pub fn redis_settle_args(member: &str, corrections: &[Correction]) -> Vec<Vec<u8>> {
    let mut args = vec![corrections.len().to_string().into_bytes()];
    args.extend(corrections.iter().map(|c| c.key().as_bytes().to_vec()));
    args.push(member.as_bytes().to_vec());
    args.extend(corrections.iter().map(|c| match c {
        Correction::Add(_, delta) => delta.to_string().into_bytes(),
        Correction::Release(_) => b"release".to_vec(),
    }));
    args
}

/// Reads the script's reply (flattened to integers and strings).
pub fn parse_redis_admit(reply: &[ReplyItem]) -> Option<Verdict> {
    match reply.first()? {
        ReplyItem::Int(1) => {
            let mut granted = Vec::new();
            for triple in reply[1..].chunks(3) {
                match triple {
                    [ReplyItem::Text(key), ReplyItem::Int(used), ReplyItem::Int(reset)] => granted.push(Granted {
                        key: key.clone(),
                        used: (*used).max(0) as u64,
                        reset_ms: (*reset).max(0) as u64,
                    }),
                    _ => return None,
                }
            }
            Some(Verdict::Admit(granted))
        }
        ReplyItem::Int(0) => match reply.get(1..4)? {
            [ReplyItem::Int(i), ReplyItem::Int(used), ReplyItem::Int(retry)] => Some(Verdict::Deny {
                charge: (*i as usize).checked_sub(1)?,
                used: (*used).max(0) as u64,
                retry_after_ms: (*retry).max(0) as u64,
            }),
            _ => None,
        },
        _ => None,
    }
}

/// A scalar of a Redis reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyItem {
    Int(i64),
    Text(String),
}

/// What admission charged, to be settled when the response ends.
#[derive(Debug, Default)]
pub struct Held {
    /// Counters to reconcile: full key, the limit's kind, what was reserved.
    pub entries: Vec<(String, Kind, u64)>,
    pub est_input: u64,
}

impl Held {
    /// The corrections to apply once the real usage is known (or not: `None` charges the input
    /// estimate and `estimated_output`). Concurrency slots are released.
    pub fn settlement(&self, usage: Option<&Usage>, estimated_output: u64) -> Vec<Correction> {
        let (input, output) = match usage {
            Some(u) => (u.prompt_tokens(), u.output_tokens),
            None => (self.est_input, estimated_output),
        };
        self.entries
            .iter()
            .filter_map(|(key, kind, reserved)| match kind {
                Kind::Tokens { count, .. } => {
                    let actual = count.of(input, output);
                    let delta =
                        (i128::from(actual) - i128::from(*reserved)).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
                    (delta != 0).then(|| Correction::Add(key.clone(), delta as i64))
                }
                Kind::Concurrent { .. } => Some(Correction::Release(key.clone())),
                Kind::Requests { .. } => None,
            })
            .collect()
    }

    /// Settlement keeping every reservation as charged (the upstream may have generated it all):
    /// only concurrency slots are released.
    pub fn release_only(&self) -> Vec<Correction> {
        self.entries
            .iter()
            .filter(|(_, kind, _)| matches!(kind, Kind::Concurrent { .. }))
            .map(|(key, _, _)| Correction::Release(key.clone()))
            .collect()
    }
}

/// One change to a counter at settlement.
#[derive(Debug, Clone, PartialEq)]
pub enum Correction {
    /// Add a (possibly negative) amount to a windowed counter.
    Add(String, i64),
    /// Free this request's concurrency slot.
    Release(String),
}

impl Correction {
    pub fn key(&self) -> &str {
        match self {
            Correction::Add(k, _) | Correction::Release(k) => k,
        }
    }
}

/// OpenAI-style `x-ratelimit-*` headers for the most constrained request and token limits.
pub fn headers(limits: &[Limit], charges: &[Charge], granted: &[Granted]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (suffix, want_tokens) in [("requests", false), ("tokens", true)] {
        let tightest = charges
            .iter()
            .zip(granted)
            .filter(|(c, _)| match limits[c.limit].kind {
                Kind::Requests { .. } => !want_tokens,
                Kind::Tokens { .. } => want_tokens,
                Kind::Concurrent { .. } => false,
            })
            .min_by_key(|(c, g)| c.max.saturating_sub(g.used));
        if let Some((c, g)) = tightest {
            out.push((format!("x-ratelimit-limit-{suffix}"), c.max.to_string()));
            out.push((format!("x-ratelimit-remaining-{suffix}"), c.max.saturating_sub(g.used).to_string()));
            out.push((format!("x-ratelimit-reset-{suffix}"), format_reset(g.reset_ms)));
        }
    }
    out
}

/// `1m30s`, `6m0s`, `12s`, `250ms`: the format OpenAI uses in `x-ratelimit-reset-*`.
pub fn format_reset(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms.div_ceil(1000);
    let (d, h, m, s) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if d > 0 {
        let _ = write!(out, "{d}d");
    }
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}s");
    out
}

#[cfg(test)]
mod tests;
