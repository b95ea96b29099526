//! Anthropic's Messages API: `{base_url}/v1/messages`, `x-api-key` auth, `anthropic-version` header.

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_VERSION: &str = "2023-06-01";
