//! Passive health, without IO: an upstream (a backend, or one address of it) that fails several times in a
//! row is ejected for a back-off that doubles with each ejection; when the back-off ends, one probe request
//! is let through (half-open) and its success restores the upstream, its failure ejects it again for
//! longer. The clock is passed in (milliseconds).

use parking_lot::Mutex;

/// When to eject and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures that eject (0: never eject).
    pub failures: u32,
    /// The first ejection's length; each further one doubles it, up to `max_ejection_ms`.
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy { failures: 3, base_ejection_ms: 5_000, max_ejection_ms: 300_000 }
    }
}

/// Whether a request may go to the upstream now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Healthy,
    /// The back-off ended: this request is the one probe.
    Probe,
    /// Ejected until this time (ms).
    Ejected {
        until: u64,
    },
}

/// A change worth logging once and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Ejected for this long (ms).
    Ejected(u64),
    Restored,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    /// Ejections since the upstream was last healthy (the back-off's exponent).
    ejections: u32,
    /// 0 when not ejected.
    ejected_until: u64,
    /// When the probe in flight was let through (0: none).
    probe_since: u64,
    last_failure: u64,
}

/// The health of one upstream. Critical sections are a few field updates; no IO happens under the lock.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

impl Health {
    /// Whether to send a request now. After a back-off, one probe is let through at a time; a probe
    /// that never reports (its client went away) is replaced after another base back-off.
    pub fn admit(&self, now: u64, policy: &HealthPolicy) -> Admit {
        let mut s = self.state.lock();
        if s.ejected_until == 0 {
            return Admit::Healthy;
        }
        if now < s.ejected_until {
            return Admit::Ejected { until: s.ejected_until };
        }
        if s.probe_since != 0 && now < s.probe_since.saturating_add(policy.base_ejection_ms) {
            return Admit::Ejected { until: s.probe_since.saturating_add(policy.base_ejection_ms) };
        }
        s.probe_since = now;
        Admit::Probe
    }

    /// A request succeeded (the upstream answered, and not with a failure status).
    pub fn success(&self) -> Option<Transition> {
        let mut s = self.state.lock();
        s.consecutive_failures = 0;
        if s.ejected_until == 0 {
            return None;
        }
        *s = State { last_failure: s.last_failure, ..State::default() };
        Some(Transition::Restored)
    }

    /// A request failed (connect failure, timeout, or a status the policy counts).
    pub fn failure(&self, now: u64, policy: &HealthPolicy) -> Option<Transition> {
        let mut s = self.state.lock();
        s.last_failure = now;
        s.consecutive_failures = s.consecutive_failures.saturating_add(1);
        let probe_failed = s.ejected_until != 0 && s.probe_since != 0;
        let newly_failing = s.ejected_until == 0 && policy.failures > 0 && s.consecutive_failures >= policy.failures;
        if !(probe_failed || newly_failing) {
            return None;
        }
        s.ejections = s.ejections.saturating_add(1);
        let length = policy
            .base_ejection_ms
            .saturating_mul(1u64 << (s.ejections - 1).min(20))
            .min(policy.max_ejection_ms)
            .max(1);
        s.ejected_until = now.saturating_add(length);
        s.probe_since = 0;
        Some(Transition::Ejected(length))
    }

    /// When the upstream last failed (ms; 0 if never): among ejected upstreams, the least recently failed
    /// is the best bet.
    pub fn last_failure(&self) -> u64 {
        self.state.lock().last_failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HealthPolicy = HealthPolicy { failures: 3, base_ejection_ms: 1_000, max_ejection_ms: 4_000 };

    #[test]
    fn consecutive_failures_eject_and_a_success_in_between_resets_the_count() {
        let h = Health::default();
        assert_eq!(h.failure(10, &POLICY), None);
        assert_eq!(h.failure(20, &POLICY), None);
        assert_eq!(h.success(), None);
        assert_eq!(h.failure(30, &POLICY), None);
        assert_eq!(h.failure(40, &POLICY), None);
        assert_eq!(h.admit(41, &POLICY), Admit::Healthy);
        assert_eq!(h.failure(50, &POLICY), Some(Transition::Ejected(1_000)));
        assert_eq!(h.admit(51, &POLICY), Admit::Ejected { until: 1_050 });
    }

    #[test]
    fn one_probe_after_the_back_off_and_its_outcome_decides() {
        let h = Health::default();
        for t in 0..3 {
            h.failure(t, &POLICY);
        }
        assert_eq!(h.admit(1_002, &POLICY), Admit::Probe);
        assert!(matches!(h.admit(1_003, &POLICY), Admit::Ejected { .. }), "one probe at a time");
        assert_eq!(h.failure(1_010, &POLICY), Some(Transition::Ejected(2_000)), "a failed probe doubles the back-off");
        assert_eq!(h.admit(3_009, &POLICY), Admit::Ejected { until: 3_010 });
        assert_eq!(h.admit(3_010, &POLICY), Admit::Probe);
        assert_eq!(h.success(), Some(Transition::Restored));
        assert_eq!(h.admit(3_011, &POLICY), Admit::Healthy);
        for t in 0..3 {
            h.failure(4_000 + t, &POLICY);
        }
        assert_eq!(h.admit(4_003, &POLICY), Admit::Ejected { until: 5_002 }, "restored: the back-off starts over");
    }

    #[test]
    fn the_back_off_is_capped_and_an_abandoned_probe_is_replaced() {
        let h = Health::default();
        for t in 0..3 {
            h.failure(t, &POLICY);
        }
        let mut now = 0;
        for _ in 0..5 {
            now = match h.admit(now, &POLICY) {
                Admit::Ejected { until } => until,
                _ => now,
            };
            assert_eq!(h.admit(now, &POLICY), Admit::Probe);
            h.failure(now, &POLICY);
        }
        assert_eq!(h.admit(now, &POLICY), Admit::Ejected { until: now + 4_000 });
        assert_eq!(h.admit(now + 4_000, &POLICY), Admit::Probe);
        assert!(matches!(h.admit(now + 4_500, &POLICY), Admit::Ejected { .. }));
        assert_eq!(h.admit(now + 5_000, &POLICY), Admit::Probe, "the probe never reported: another one goes");
    }

    #[test]
    fn zero_failures_never_ejects() {
        let h = Health::default();
        let never = HealthPolicy { failures: 0, ..POLICY };
        for t in 0..100 {
            assert_eq!(h.failure(t, &never), None);
        }
        assert_eq!(h.admit(100, &never), Admit::Healthy);
        assert_eq!(h.last_failure(), 99);
    }
}
