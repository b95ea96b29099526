//! `"schema": "azure_openai"`: Azure OpenAI deployments, in OpenAI's format at
//! `{base_url}/openai/deployments/{deployment}/chat/completions?api-version=…` (and `/completions`,
//! `/embeddings`), where the deployment is the route backend's `model`. Authenticates with the resource's
//! key in `api-key` (`"auth": {"type": "header", …}`), a ready Entra ID token (`bearer`), or Entra ID
//! client credentials (`azure_entra`, refreshed ahead of expiry).
//!
//! Bodies and answers are OpenAI's: Azure's content-filter results (`prompt_filter_results`,
//! `content_filter_results`, the `content_filter` finish reason) pass through to OpenAI clients, and a
//! prompt Azure filtered is its 400 (`code: content_filter`), in the client's error shape. Azure's
//! newer `/openai/v1` API needs no deployment in the path: use `"schema": "openai"` with
//! `base_url: https://{resource}.openai.azure.com/openai/v1` for it.

use std::borrow::Cow;

use serde::Deserialize;

use super::{path_segment, Built, Credential, Provider};
use crate::api::{Api, Endpoint};
use crate::config::{err, BackendConfig, ConfigError, Environment};

/// The `api-version` sent when the config names none (the latest GA data-plane version).
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

/// The keys of an `azure_openai` backend besides the shared ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The data-plane `api-version` query parameter.
    #[serde(default)]
    api_version: Option<String>,
    /// Ask streams for usage (`stream_options.include_usage`, supported since 2024-09-01) when the
    /// client did not, and hide the extra chunk from the client.
    #[serde(default = "yes")]
    stream_usage: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct AzureOpenAi {
    credential: Credential,
    api_version: String,
    stream_usage: bool,
}

pub fn build(cfg: &BackendConfig, path: &str, environment: &Environment) -> Result<Built, ConfigError> {
    let options: Options = cfg.provider_options(path)?;
    let base_url = cfg.base_url.clone().ok_or_else(|| {
        err(format!("{path}.base_url"), "required: the resource's endpoint, https://{resource}.openai.azure.com")
    })?;
    if base_url.contains('?') {
        return Err(err(format!("{path}.base_url"), "no query here: the api-version comes from \"api_version\""));
    }
    let api_version = options.api_version.unwrap_or_else(|| DEFAULT_API_VERSION.to_string());
    if api_version.is_empty() || !api_version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Err(err(format!("{path}.api_version"), "an Azure OpenAI api-version such as 2024-10-21"));
    }
    let credential = Credential::from_config(cfg.auth.as_ref(), path, Some("api-key"), environment)?;
    Ok(Built {
        provider: Box::new(AzureOpenAi { credential, api_version, stream_usage: options.stream_usage }),
        base_url,
    })
}

impl Provider for AzureOpenAi {
    fn schema(&self) -> &'static str {
        "azure_openai"
    }

    fn api(&self) -> Api {
        Api::OpenAi
    }

    fn path(&self, endpoint: Endpoint, model: &str, _stream: bool) -> Option<Cow<'static, str>> {
        let operation = match endpoint {
            Endpoint::ChatCompletions => "chat/completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            _ => return None,
        };
        Some(format!("/openai/deployments/{}/{operation}?api-version={}", path_segment(model), self.api_version).into())
    }

    super::authenticate_with_credential!();

    fn stream_usage(&self) -> bool {
        self.stream_usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Outgoing;

    fn azure(options: serde_json::Value) -> Result<Built, ConfigError> {
        let mut v = serde_json::json!({"name": "azure", "schema": "azure_openai", "base_url": "https://r.openai.azure.com",
            "auth": {"type": "header", "key": "k"}});
        v.as_object_mut().unwrap().extend(options.as_object().unwrap().clone());
        let cfg = BackendConfig::from_value(v).unwrap();
        build(&cfg, "backends[0]", &Environment { var: &|_| None, file: &|_| None })
    }

    #[test]
    fn paths_name_the_deployment_and_the_api_version() {
        let built = azure(serde_json::json!({"api_version": "2025-01-01-preview"})).unwrap();
        let p = &built.provider;
        assert_eq!(
            p.path(Endpoint::ChatCompletions, "gpt-4o-prod", true).unwrap(),
            "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2025-01-01-preview"
        );
        assert_eq!(
            p.path(Endpoint::Embeddings, "te3/../x", false).unwrap(),
            "/openai/deployments/te3%2F..%2Fx/embeddings?api-version=2025-01-01-preview"
        );
        assert!(p
            .path(Endpoint::Completions, "..", false)
            .unwrap()
            .starts_with("/openai/deployments/%2E%2E/completions"));
        assert_eq!(p.path(Endpoint::Messages, "m", false), None);
        let default = azure(serde_json::json!({})).unwrap();
        assert!(default
            .provider
            .path(Endpoint::ChatCompletions, "d", false)
            .unwrap()
            .ends_with("?api-version=2024-10-21"));
    }

    #[test]
    fn the_key_goes_in_api_key_and_bad_settings_are_named() {
        let built = azure(serde_json::json!({})).unwrap();
        let mut out = Vec::new();
        let o = Outgoing {
            authority: "r",
            base_path: "",
            path: "/",
            query: "",
            content_type: "application/json",
            body: b"",
        };
        built.provider.authorize(&o, 0, &mut out).unwrap();
        assert_eq!(out, [("api-key".to_string(), "k".to_string())]);
        assert!(built.provider.owns_header("API-Key"));
        let e = azure(serde_json::json!({"api_version": "2024-10-21&x=y"})).err().unwrap();
        assert_eq!(e.path, "backends[0].api_version");
        let e = azure(serde_json::json!({"deployment": "x"})).err().unwrap();
        assert!(e.message.contains("deployment"), "{e}");
        let e = azure(serde_json::json!({"base_url": "https://r.openai.azure.com?api-version=1"})).err().unwrap();
        assert_eq!(e.path, "backends[0].base_url");
    }
}
