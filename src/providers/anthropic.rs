//! Anthropic's Messages API: `{base_url}/v1/messages`, `x-api-key` auth, `anthropic-version` header.

use super::Endpoint;
use crate::config::Backend;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// The upstream URL for an Anthropic endpoint. Only ever built from config, never from the request.
pub fn url(backend: &Backend, endpoint: Endpoint) -> String {
    let mut url = String::with_capacity(backend.base_url.len() + 28);
    url.push_str(&backend.base_url);
    url.push_str(endpoint.path());
    url
}
