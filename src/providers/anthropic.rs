//! `"schema": "anthropic"`: Anthropic's Messages API: `{base_url}/v1/messages`, `x-api-key` auth, an
//! `anthropic-version` header when the client sent none.

use std::borrow::Cow;

use serde::Deserialize;

use super::{base_url_or, Built, Credential, Outgoing, Provider};
use crate::api::{Api, Endpoint};
use crate::config::{BackendConfig, ConfigError, Environment};

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// The keys of an `anthropic` backend besides the shared ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The `anthropic-version` header sent when the client sent none.
    #[serde(default)]
    anthropic_version: Option<String>,
}

#[derive(Debug)]
pub struct Anthropic {
    key: Credential,
    version: String,
}

pub fn build(cfg: &BackendConfig, path: &str, environment: &Environment) -> Result<Built, ConfigError> {
    let options: Options = cfg.provider_options(path)?;
    let key = Credential::from_config(cfg.auth.as_ref(), path, Some("x-api-key"), environment)?;
    Ok(Built {
        provider: Box::new(Anthropic {
            key,
            version: options.anthropic_version.unwrap_or_else(|| DEFAULT_VERSION.to_string()),
        }),
        base_url: base_url_or(cfg, DEFAULT_BASE_URL),
    })
}

impl Provider for Anthropic {
    fn schema(&self) -> &'static str {
        "anthropic"
    }

    fn api(&self) -> Api {
        Api::Anthropic
    }

    fn path(&self, endpoint: Endpoint, _model: &str, _stream: bool) -> Option<Cow<'static, str>> {
        (endpoint.client_api() == Api::Anthropic).then(|| Cow::Borrowed(endpoint.path()))
    }

    fn default_header(&self) -> Option<(&str, &str)> {
        Some(("anthropic-version", &self.version))
    }

    /// Anthropic's own paths keep their version: `/v1/files` → `{base_url}/v1/files`.
    fn passthrough_path(&self, client_path: &str) -> Option<String> {
        client_path.starts_with("/v1/").then(|| client_path.to_string())
    }

    fn owns_header(&self, name: &str) -> bool {
        self.key.owns_header(name)
    }

    fn secrets(&self) -> Vec<Cow<'_, str>> {
        self.key.secrets()
    }

    fn authorize(&self, _: &Outgoing, _: u64, out: &mut Vec<(String, String)>) -> Result<(), String> {
        self.key.authorize(out)
    }

    fn credential_warning(&self) -> Option<String> {
        self.key.warning()
    }
}
