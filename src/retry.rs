//! Retry decisions, without IO: which failures may be tried again, how long to wait first (the provider's
//! own hint when it sends one, else a jittered exponential back-off), and whether the wait fits.

use crate::config::RetryConfig;

/// How an attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// No connection: the upstream never saw the request.
    Connect,
    /// The upstream answered with an error status; `hinted` when it said when to come back.
    Status { status: u16, hinted: bool },
    /// Anything after the request may have reached the upstream (a timeout, a reset).
    Other,
}

impl AttemptFailure {
    /// Whether the request certainly was not processed, so sending it again cannot do it twice:
    /// a connect failure, a 429, or a 503 that says when to come back.
    pub fn may_retry(self) -> bool {
        match self {
            AttemptFailure::Connect => true,
            AttemptFailure::Status { status: 429, .. } => true,
            AttemptFailure::Status { status: 503, hinted } => hinted,
            _ => false,
        }
    }
}

/// The wait before retry number `retry` (0 for the first), or `None` when it should not happen: the
/// provider asked for longer than `max_wait_ms`, or the wait would end past the deadline
/// (`remaining_ms` is what is left of it). `draw` is a random number for the jitter.
pub fn wait_ms(policy: &RetryConfig, retry: u32, hint_ms: Option<u64>, remaining_ms: u64, draw: u64) -> Option<u64> {
    let wait = match hint_ms {
        Some(hint) if hint > policy.max_wait_ms => return None,
        Some(hint) => hint,
        None => {
            let full = policy.backoff_base_ms.saturating_mul(1u64 << retry.min(20)).min(policy.backoff_max_ms);
            // "Equal jitter": half the back-off, plus a random part of the other half.
            full / 2 + draw % (full / 2 + 1)
        }
    };
    (wait < remaining_ms).then_some(wait)
}

/// How long the provider asked to wait, from its response headers (lower-case names): `retry-after-ms`,
/// `retry-after` in seconds, or the OpenAI-style `x-ratelimit-reset-requests` / `-tokens` durations
/// (`1s`, `6m0s`, `250ms`); the longest of the `x-ratelimit-reset-*` values when both are there.
pub fn hint_ms<'h>(headers: impl Iterator<Item = (&'h str, &'h str)> + Clone) -> Option<u64> {
    let get = |name: &str| headers.clone().find(|(n, _)| *n == name).map(|(_, v)| v.trim());
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite() && *v >= 0.0) {
        return Some(ms.ceil() as u64);
    }
    if let Some(secs) = get("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(secs.saturating_mul(1000));
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"].iter().filter_map(|n| get(n).and_then(duration_ms)).max()
}

/// A Go-style duration (`1m30s`, `250ms`, `0.5s`) in milliseconds.
fn duration_ms(text: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let value: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Some(total.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_were_certainly_not_processed_are_retried() {
        assert!(AttemptFailure::Connect.may_retry());
        assert!(AttemptFailure::Status { status: 429, hinted: false }.may_retry());
        assert!(AttemptFailure::Status { status: 503, hinted: true }.may_retry());
        assert!(!AttemptFailure::Status { status: 503, hinted: false }.may_retry());
        assert!(!AttemptFailure::Status { status: 500, hinted: true }.may_retry());
        assert!(!AttemptFailure::Other.may_retry());
    }

    #[test]
    fn provider_hints_are_read_in_every_form() {
        assert_eq!(hint_ms([("retry-after", "2")].into_iter()), Some(2_000));
        assert_eq!(hint_ms([("retry-after-ms", "150.2"), ("retry-after", "9")].into_iter()), Some(151));
        assert_eq!(
            hint_ms([("x-ratelimit-reset-requests", "1m0.5s"), ("x-ratelimit-reset-tokens", "250ms")].into_iter()),
            Some(60_500)
        );
        assert_eq!(hint_ms([("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")].into_iter()), None);
        assert_eq!(hint_ms([("x-ratelimit-reset-requests", "soon")].into_iter()), None);
        assert_eq!(hint_ms([].into_iter()), None);
    }

    #[test]
    fn waits_honour_hints_within_the_cap_and_back_off_with_jitter_otherwise() {
        let p = RetryConfig {
            retries: 3,
            backoff_base_ms: 200,
            backoff_max_ms: 1_000,
            max_wait_ms: 5_000,
            deadline_ms: 30_000,
        };
        assert_eq!(wait_ms(&p, 0, Some(1_000), 30_000, 7), Some(1_000));
        assert_eq!(wait_ms(&p, 0, Some(6_000), 30_000, 7), None, "longer than the cap: not waited for");
        assert_eq!(wait_ms(&p, 0, Some(1_000), 900, 7), None, "past the deadline");
        for draw in [0, 1, 99, 100, 12345] {
            let w = wait_ms(&p, 0, None, 30_000, draw).unwrap();
            assert!((100..=200).contains(&w), "{w}");
            let w = wait_ms(&p, 5, None, 30_000, draw).unwrap();
            assert!((500..=1_000).contains(&w), "capped: {w}");
        }
    }
}
