//! `"schema": "openai"`: OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Mistral, Together,
//! DeepSeek, Azure's `/openai/v1`…): `{base_url}/chat/completions` etc., a bearer key or a named header.

use serde::Deserialize;

use super::{base_url_or, Built, Outgoing, Provider, StaticKey};
use crate::api::{Api, Endpoint};
use crate::config::{BackendConfig, ConfigError, Environment};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The keys of an `openai` backend besides the shared ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Ask streams for usage (`stream_options.include_usage`) when the client did not, and hide the extra
    /// usage chunk from the client. Turn off for servers that reject the field.
    #[serde(default = "yes")]
    stream_usage: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct OpenAi {
    key: StaticKey,
    stream_usage: bool,
}

pub fn build(cfg: &BackendConfig, path: &str, environment: &Environment) -> Result<Built, ConfigError> {
    let options: Options = cfg.provider_options(path)?;
    let key = StaticKey::from_config(cfg.auth.as_ref(), path, None, environment)?;
    Ok(Built {
        provider: Box::new(OpenAi { key, stream_usage: options.stream_usage }),
        base_url: base_url_or(cfg, DEFAULT_BASE_URL),
    })
}

impl Provider for OpenAi {
    fn schema(&self) -> &'static str {
        "openai"
    }

    fn api(&self) -> Api {
        Api::OpenAi
    }

    fn path(&self, endpoint: Endpoint, _model: &str, _stream: bool) -> Option<String> {
        (endpoint.client_api() == Api::OpenAi).then(|| endpoint.path().to_string())
    }

    fn owns_header(&self, name: &str) -> bool {
        self.key.owns_header(name)
    }

    fn secrets(&self) -> Vec<&str> {
        self.key.secrets()
    }

    fn authorize(&self, _: &Outgoing, _: u64, out: &mut Vec<(String, String)>) -> Result<(), String> {
        self.key.authorize(out)
    }

    fn credential_warning(&self) -> Option<String> {
        self.key.warning()
    }

    fn stream_usage(&self) -> bool {
        self.stream_usage
    }
}
