//! Phase: admit. Rate limits and quotas are charged before the upstream is called, all or nothing,
//! and settled with the real usage when the response ends, fails or is cut.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;
use std::time::Instant;

use crate::config::FailurePolicy;
use crate::error::GatewayError;
use crate::metrics;
use crate::ratelimit::{self, Charge, Correction, Facts, Held, LocalStore, Verdict};
use crate::redis::{RedisClient, Resp};
use crate::snapshot::Snapshot;
use crate::translate::Usage;

/// Counters of this process (used when no Redis is configured). They outlive config reloads.
static LOCAL: LazyLock<LocalStore> = LazyLock::new(LocalStore::default);

/// Keys in Redis start with this.
const REDIS_PREFIX: &str = "switchyard:";

/// Output tokens reserved at most for one request (a client-chosen `max_tokens` is clamped to this).
const MAX_OUTPUT_RESERVATION: u64 = 10_000_000;

enum Store<'s> {
    Local,
    Redis(&'s RedisClient),
}

/// What a request was charged, and where. Settles (refunding reservations) on drop if the request
/// ended before `settle` was called.
pub struct Admission<'s> {
    store: Store<'s>,
    held: Held,
    /// Identifies this request in Redis concurrency sets.
    member: String,
    /// `x-ratelimit-*` response headers.
    pub headers: Vec<(String, String)>,
    /// The names of the limits charged.
    pub applied: Vec<&'s str>,
}

impl<'s> Admission<'s> {
    /// An admission that charged nothing.
    pub fn none(snapshot: &'s Snapshot) -> Admission<'s> {
        let store = match &snapshot.redis {
            Some(redis) => Store::Redis(redis),
            None => Store::Local,
        };
        Admission { store, held: Held::default(), member: String::new(), headers: Vec::new(), applied: Vec::new() }
    }

    /// The response headers: `ids` (the request id) and then the `x-ratelimit-*` ones.
    /// `ids` themselves when no limit applied.
    pub fn response_headers<'a>(&'a self, ids: &'a [(&'a str, &'a str)]) -> Cow<'a, [(&'a str, &'a str)]> {
        if self.headers.is_empty() {
            return Cow::Borrowed(ids);
        }
        let mut headers = ids.to_vec();
        headers.extend(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        Cow::Owned(headers)
    }
}

/// [`admit`] for a request whose token counts are unknown up front (passthrough, calls on a stored
/// response): it is charged as a request, and its tokens when the usage is seen.
pub fn admit_by_requests<'s, 'a>(
    snapshot: &'s Snapshot,
    client: &'a str,
    model: &'a str,
    backend: &'a str,
    header: &'a dyn Fn(&str) -> Option<&'a str>,
    denied_by: &mut Option<&'s str>,
) -> Result<Admission<'s>, GatewayError> {
    let facts = Facts { client, model, backend, header, est_input: 0, max_output: 0 };
    admit(snapshot, &facts, denied_by)
}

/// The output tokens to reserve for a request that may generate `max_output` (`None`: unknown, the
/// configured default), bounded so a client-chosen value cannot overflow a counter.
pub fn output_reservation(snapshot: &Snapshot, max_output: Option<u64>) -> u64 {
    max_output.unwrap_or(snapshot.config.ratelimit.default_output_tokens).min(MAX_OUTPUT_RESERVATION)
}

/// Charges the request against every limit that applies, all or nothing. On a rejection,
/// `denied_by` names the limit that refused it. Out of line: see [`super::Observation::finish`].
#[inline(never)]
pub fn admit<'s>(
    snapshot: &'s Snapshot,
    facts: &Facts,
    denied_by: &mut Option<&'s str>,
) -> Result<Admission<'s>, GatewayError> {
    let mut admission = Admission::none(snapshot);
    if snapshot.limits.is_empty() {
        return Ok(admission);
    }
    let est_input = facts.est_input;
    let charges = ratelimit::charges(&snapshot.limits, facts);
    if charges.is_empty() {
        return Ok(admission);
    }
    let verdict = match admission.store {
        Store::Local => LOCAL.admit(&charges, crate::clock::unix_millis()),
        Store::Redis(redis) => {
            admission.member = format!("{:016x}", crate::router::random_draw());
            match redis_admit(redis, &admission.member, &charges) {
                Ok(v) => v,
                Err(message) => {
                    redis_failed(&message);
                    return match snapshot.config.ratelimit.on_redis_error {
                        FailurePolicy::Allow => Ok(admission),
                        FailurePolicy::Deny => {
                            Err(GatewayError::Overloaded("rate limiting is unavailable; try again shortly".into()))
                        }
                    };
                }
            }
        }
    };
    match verdict {
        Verdict::Admit(granted) => {
            admission.headers = ratelimit::headers(&snapshot.limits, &charges, &granted);
            admission.applied = charges.iter().map(|c| snapshot.limits[c.limit].name.as_str()).collect();
            admission.applied.dedup();
            admission.held = Held {
                entries: charges
                    .iter()
                    .zip(granted)
                    .map(|(c, g)| (g.key, snapshot.limits[c.limit].kind.clone(), c.cost))
                    .collect(),
                est_input,
            };
            Ok(admission)
        }
        Verdict::Deny { charge, used, retry_after_ms } => {
            let c = &charges[charge];
            let limit = &snapshot.limits[c.limit];
            metrics::count_rate_limited(&limit.name, facts.client);
            *denied_by = Some(limit.name.as_str());
            let what = match limit.kind {
                ratelimit::Kind::Requests { .. } => "requests",
                ratelimit::Kind::Tokens { .. } => "tokens",
                ratelimit::Kind::Concurrent { .. } => "concurrent requests",
            };
            let suffix = if what == "tokens" { "tokens" } else { "requests" };
            let headers = if what == "concurrent requests" {
                Vec::new()
            } else {
                vec![
                    (format!("x-ratelimit-limit-{suffix}"), c.max.to_string()),
                    (format!("x-ratelimit-remaining-{suffix}"), c.max.saturating_sub(used).to_string()),
                    (format!("x-ratelimit-reset-{suffix}"), ratelimit::format_reset(retry_after_ms)),
                ]
            };
            Err(GatewayError::RateLimited {
                message: format!(
                    "rate limit \"{}\" exceeded: {used} of {} {what} used{}",
                    limit.name,
                    c.max,
                    if c.cost > 1 { format!(", this request needs {}", c.cost) } else { String::new() }
                ),
                retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
                headers,
            })
        }
    }
}

fn redis_admit(redis: &RedisClient, member: &str, charges: &[Charge]) -> Result<Verdict, String> {
    let args = ratelimit::redis_admit_args(REDIS_PREFIX, member, charges);
    let started = Instant::now();
    let reply = redis.eval(ratelimit::REDIS_ADMIT_SCRIPT, &args);
    metrics::observe_redis(started.elapsed().as_secs_f64());
    match reply {
        Ok(Resp::Error(e)) => Err(e),
        Ok(reply) => reply
            .items()
            .and_then(|items| ratelimit::parse_redis_admit(&items))
            .ok_or_else(|| format!("unexpected reply {reply:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Counts a Redis failure and logs it at most once a second.
fn redis_failed(message: &str) {
    metrics::REDIS_ERRORS.fetch_add(1, Ordering::Relaxed);
    crate::warn_throttled!("rate limiting: {message}; applying on_redis_error");
}

impl Admission<'_> {
    /// Reconciles reservations with what the response really used (`None`: unknown, estimated).
    pub fn settle(mut self, usage: Option<&Usage>, estimated_output: u64) {
        let corrections = self.held.settlement(usage, estimated_output);
        self.apply(corrections);
    }

    /// Keeps every reservation as charged: for a request cut after it reached the upstream, which
    /// may have generated (and billed) everything it was allowed to.
    pub fn settle_as_reserved(mut self) {
        let corrections = self.held.release_only();
        self.apply(corrections);
    }

    fn apply(&mut self, corrections: Vec<Correction>) {
        self.held.entries.clear();
        if corrections.is_empty() {
            return;
        }
        match self.store {
            Store::Local => {
                for c in corrections {
                    match c {
                        Correction::Add(key, delta) => LOCAL.adjust(&key, delta),
                        Correction::Release(key) => LOCAL.adjust(&key, -1),
                    }
                }
            }
            Store::Redis(redis) => {
                let args = ratelimit::redis_settle_args(&self.member, &corrections);
                // Settling ignores the back-off and tries twice: a lost release would hold a
                // concurrency slot until its lease ends.
                let settle = || {
                    let started = Instant::now();
                    let reply = redis.eval_now(ratelimit::REDIS_SETTLE_SCRIPT, &args);
                    metrics::observe_redis(started.elapsed().as_secs_f64());
                    reply
                };
                if settle().is_err() {
                    if let Err(e) = settle() {
                        redis_failed(&format!("settling: {e}"));
                    }
                }
            }
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.held.entries.is_empty() {
            // Ended before reaching an upstream (error, cancellation): nothing was generated.
            let corrections = self.held.settlement(Some(&Usage::default()), 0);
            self.apply(corrections);
        }
    }
}
