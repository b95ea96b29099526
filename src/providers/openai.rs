//! OpenAI and every OpenAI-compatible server: `{base_url}/chat/completions` etc., bearer auth.

use super::Endpoint;
use crate::config::Backend;

/// The upstream URL for an endpoint. Only ever built from config, never from the request.
pub fn url(backend: &Backend, endpoint: Endpoint) -> String {
    let mut url = String::with_capacity(backend.base_url.len() + 20);
    url.push_str(&backend.base_url);
    url.push_str(endpoint.path());
    url
}
