//! `"schema": "gemini"`: Google's Gemini API (Google AI Studio keys) at
//! `{base_url}/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `:batchEmbedContents` and `:countTokens`, bodies in Gemini's format (the translators in
//! `translate/*_gemini.rs` write them, token counts as `{"generateContentRequest": {"model", …}}` and
//! embeddings with `models/{model}` in every request; this file turns a count's answer into
//! Anthropic's shape). The key goes in `x-goog-api-key`
//! (`"auth": {"type": "header", …}`); a service account (`gcp_service_account`) or a ready OAuth token
//! (`bearer`) work too. Errors come in Google's shape `{"error": {"code", "message", "status"}}`.

use std::borrow::Cow;

use serde::Deserialize;

use super::{path_segment, Built, Credential, Provider};
use crate::api::{Api, Endpoint};
use crate::config::{err, BackendConfig, ConfigError, Environment};
use crate::translate::anthropic_gemini;

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// A `gemini` backend has no keys of its own besides the shared ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {}

#[derive(Debug)]
pub struct Gemini {
    credential: Credential,
}

pub fn build(cfg: &BackendConfig, path: &str, environment: &Environment) -> Result<Built, ConfigError> {
    let _: Options = cfg.provider_options(path)?;
    if cfg.base_url.as_deref().is_some_and(|u| u.contains('?')) {
        return Err(err(format!("{path}.base_url"), "no query here"));
    }
    let credential = Credential::from_config(cfg.auth.as_ref(), path, Some("x-goog-api-key"), environment)?;
    Ok(Built {
        provider: Box::new(Gemini { credential }),
        base_url: cfg.base_url.clone().unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
    })
}

/// `models/gemini-2.0-flash` and `gemini-2.0-flash` name the same model.
fn model_segment(model: &str) -> String {
    path_segment(model.strip_prefix("models/").unwrap_or(model))
}

impl Provider for Gemini {
    fn schema(&self) -> &'static str {
        "gemini"
    }

    fn api(&self) -> Api {
        Api::Gemini
    }

    fn path(&self, endpoint: Endpoint, model: &str, stream: bool) -> Option<Cow<'static, str>> {
        let operation = match (endpoint, stream) {
            (Endpoint::ChatCompletions | Endpoint::Messages, false) => "generateContent",
            (Endpoint::ChatCompletions | Endpoint::Messages, true) => "streamGenerateContent?alt=sse",
            (Endpoint::Embeddings, _) => "batchEmbedContents",
            (Endpoint::CountTokens, _) => "countTokens",
            (Endpoint::Completions | Endpoint::Responses | Endpoint::ResponsesInputTokens, _) => return None,
        };
        Some(format!("/v1beta/models/{}:{operation}", model_segment(model)).into())
    }

    super::authenticate_with_credential!();

    fn finish_response(&self, endpoint: Endpoint, body: Vec<u8>) -> Vec<u8> {
        match endpoint {
            // Token counts come from Anthropic clients only, and are not translated back.
            Endpoint::CountTokens => anthropic_gemini::count_tokens_response(body),
            _ => body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Outgoing;

    fn gemini() -> Built {
        let cfg = BackendConfig::from_value(serde_json::json!({"name": "g", "schema": "gemini",
            "auth": {"type": "header", "key": "AIza-test"}}))
        .unwrap();
        build(&cfg, "backends[0]", &Environment { var: &|_| None, file: &|_| None }).unwrap()
    }

    #[test]
    fn paths_carry_the_model_and_the_operation() {
        let built = gemini();
        assert_eq!(built.base_url, DEFAULT_BASE_URL);
        let p = &built.provider;
        assert_eq!(
            p.path(Endpoint::ChatCompletions, "gemini-2.0-flash", false).unwrap(),
            "/v1beta/models/gemini-2.0-flash:generateContent"
        );
        assert_eq!(
            p.path(Endpoint::Messages, "models/gemini-2.0-flash", true).unwrap(),
            "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            p.path(Endpoint::Embeddings, "text-embedding-004", false).unwrap(),
            "/v1beta/models/text-embedding-004:batchEmbedContents"
        );
        assert_eq!(p.path(Endpoint::CountTokens, "g", false).unwrap(), "/v1beta/models/g:countTokens");
        assert_eq!(
            p.path(Endpoint::ChatCompletions, "../x?y", false).unwrap(),
            "/v1beta/models/..%2Fx%3Fy:generateContent"
        );
        assert_eq!(p.path(Endpoint::Completions, "g", false), None);
    }

    #[test]
    fn the_key_goes_in_x_goog_api_key() {
        let built = gemini();
        let mut out = Vec::new();
        let o = Outgoing {
            authority: "h",
            base_path: "",
            path: "/",
            query: "",
            content_type: "application/json",
            body: b"",
        };
        built.provider.authorize(&o, 0, &mut out).unwrap();
        assert_eq!(out, [("x-goog-api-key".to_string(), "AIza-test".to_string())]);
        assert!(built.provider.owns_header("X-Goog-Api-Key"));
    }

    #[test]
    fn token_counts_answer_in_anthropics_shape() {
        let answer = gemini().provider.finish_response(Endpoint::CountTokens, br#"{"totalTokens":31}"#.to_vec());
        assert_eq!(answer, br#"{"input_tokens":31}"#);
    }
}
