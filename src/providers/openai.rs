//! `"schema": "openai"`: OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq, Mistral, Together,
//! DeepSeek, Azure's `/openai/v1`…): `{base_url}/chat/completions` etc., a bearer key or a named header.

use std::borrow::Cow;

use serde::Deserialize;

use super::{base_url_or, Built, Credential, Outgoing, Provider};
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
    /// The server has OpenAI's Responses API (`/responses`): Responses clients are passed through.
    /// `false` for OpenAI-compatible servers without it, whose Responses clients are translated.
    #[serde(default = "yes")]
    responses: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct OpenAi {
    key: Credential,
    stream_usage: bool,
    responses: bool,
}

pub fn build(cfg: &BackendConfig, path: &str, environment: &Environment) -> Result<Built, ConfigError> {
    let options: Options = cfg.provider_options(path)?;
    let key = Credential::from_config(cfg.auth.as_ref(), path, None, environment)?;
    Ok(Built {
        provider: Box::new(OpenAi { key, stream_usage: options.stream_usage, responses: options.responses }),
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

    fn path(&self, endpoint: Endpoint, _model: &str, _stream: bool) -> Option<Cow<'static, str>> {
        match endpoint.client_api() {
            Api::OpenAi => Some(Cow::Borrowed(endpoint.path())),
            Api::Responses if self.responses => Some(Cow::Borrowed(endpoint.path())),
            _ => None,
        }
    }

    fn serves_responses(&self) -> bool {
        self.responses
    }

    /// `/v1/files` → `{base_url}/files` (the base URL ends in the version).
    fn passthrough_path(&self, client_path: &str) -> Option<String> {
        client_path.strip_prefix("/v1").filter(|p| p.starts_with('/')).map(str::to_string)
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

    fn stream_usage(&self) -> bool {
        self.stream_usage
    }
}
