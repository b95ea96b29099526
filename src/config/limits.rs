//! `limits` entries and the `rate_limits` section: what a request may spend, and where the counts live.

use serde::Deserialize;

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
    /// `redis://[[user]:password@]host:port[/db]` (`rediss://` for TLS): limits shared by every
    /// instance using this Redis.
    #[serde(default)]
    pub redis: Option<String>,
    /// PEM file of the roots trusted for `rediss://` instead of Mozilla's (a private CA).
    #[serde(default)]
    pub redis_ca_file: Option<String>,
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
            redis_ca_file: None,
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
