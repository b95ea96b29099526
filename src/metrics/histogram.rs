//! Fixed-bucket histograms with the OpenTelemetry gen_ai conventions' boundaries.

use std::fmt::Write as _;

/// `gen_ai.client.token.usage` (tokens).
pub const TOKENS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
/// `gen_ai.server.request.duration` (seconds).
pub const DURATION: &[f64] = &[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
/// `gen_ai.server.time_to_first_token` (seconds).
pub const TTFT: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// `gen_ai.server.time_per_output_token` (seconds).
pub const TPOT: &[f64] = &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];
/// Redis round trips (seconds).
pub const REDIS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The most boundaries any histogram here has, plus the `+Inf` bucket.
const SLOTS: usize = 17;

/// Observation counts per bucket (not cumulative) and their sum. The boundaries live with the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Histogram {
    counts: [u64; SLOTS],
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: [0; SLOTS], sum: 0.0 }
    }
}

impl Histogram {
    /// Counts `value` in the first bucket whose upper bound is at least `value` (Prometheus' `le`).
    #[inline]
    pub fn observe(&mut self, bounds: &[f64], value: f64) {
        debug_assert!(bounds.len() < SLOTS);
        let slot = bounds.iter().position(|b| value <= *b).unwrap_or(bounds.len());
        self.counts[slot] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of one series; `labels` is the rendered label
    /// list without braces (may be empty).
    pub fn render(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += self.counts[i];
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let braces = |s: &str| if s.is_empty() { String::new() } else { format!("{{{s}}}") };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_lands_in_the_first_bucket_at_least_as_large_and_renders_cumulatively() {
        let mut h = Histogram::default();
        h.observe(TTFT, 0.3);
        h.observe(TTFT, 0.25);
        h.observe(TTFT, 99.0);
        let mut out = String::new();
        h.render(&mut out, "t", "a=\"b\"", TTFT);
        assert!(out.contains("t_bucket{a=\"b\",le=\"0.1\"} 0\n"), "{out}");
        assert!(out.contains("t_bucket{a=\"b\",le=\"0.25\"} 1\n"), "{out}");
        assert!(out.contains("t_bucket{a=\"b\",le=\"0.5\"} 2\n"), "{out}");
        assert!(out.contains("t_bucket{a=\"b\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("t_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("t_count{a=\"b\"} 3\n"), "{out}");
        assert!(out.contains("t_sum{a=\"b\"} 99.55\n"), "{out}");
        let mut out = String::new();
        Histogram::default().render(&mut out, "r", "", REDIS);
        assert!(out.contains("r_bucket{le=\"0.0005\"} 0\n") && out.contains("r_count 0\n"), "{out}");
        let mut out = String::new();
        Histogram::default().render(&mut out, "k", "", TOKENS);
        assert!(out.contains("k_bucket{le=\"1\"} 0\n") && out.contains("k_bucket{le=\"67108864\"} 0\n"), "{out}");
    }

    #[test]
    fn every_boundary_list_fits_and_increases() {
        for b in [TOKENS, DURATION, TTFT, TPOT, REDIS] {
            assert!(b.len() < SLOTS);
            assert!(b.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
