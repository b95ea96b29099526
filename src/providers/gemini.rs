//! `"schema": "gemini"`: Google's Gemini API (Google AI Studio keys) at
//! `{base_url}/v1beta/models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `:batchEmbedContents` and `:countTokens`, bodies in Gemini's format (the translators in
//! `translate/*_gemini.rs` write them). The key goes in `x-goog-api-key`
//! (`"auth": {"type": "header", …}`); a service account (`gcp_service_account`) or a ready OAuth token
//! (`bearer`) work too. Errors come in Google's shape `{"error": {"code", "message", "status"}}`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{path_segment, Built, Credential, Outgoing, Provider};
use crate::api::{Api, Endpoint};
use crate::config::{err, BackendConfig, ConfigError, Environment};
use crate::error::GatewayError;

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// The fields of a `generateContent` body that a token count takes.
const COUNTED_FIELDS: [&str; 4] = ["contents", "systemInstruction", "tools", "generationConfig"];

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

    fn path(&self, endpoint: Endpoint, model: &str, stream: bool) -> Option<String> {
        let operation = match (endpoint, stream) {
            (Endpoint::ChatCompletions | Endpoint::Messages, false) => "generateContent",
            (Endpoint::ChatCompletions | Endpoint::Messages, true) => "streamGenerateContent?alt=sse",
            (Endpoint::Embeddings, _) => "batchEmbedContents",
            (Endpoint::CountTokens, _) => "countTokens",
            (Endpoint::Completions, _) => return None,
        };
        Some(format!("/v1beta/models/{}:{operation}", model_segment(model)))
    }

    fn finish_body<'b>(
        &self,
        endpoint: Endpoint,
        model: &str,
        body: Cow<'b, [u8]>,
        _header: &dyn Fn(&str) -> Option<&'b str>,
    ) -> Result<Cow<'b, [u8]>, GatewayError> {
        let invalid = |e: serde_json::Error| GatewayError::BadRequest(format!("invalid JSON body: {e}"));
        match endpoint {
            Endpoint::CountTokens => Ok(Cow::Owned(count_tokens_body(&body, Some(model)).map_err(invalid)?)),
            Endpoint::Embeddings => Ok(Cow::Owned(embed_requests_for(&body, model).map_err(invalid)?)),
            _ => Ok(body),
        }
    }

    fn owns_header(&self, name: &str) -> bool {
        self.credential.owns_header(name)
    }

    fn authorize(&self, _: &Outgoing, _: u64, out: &mut Vec<(String, String)>) -> Result<(), String> {
        self.credential.authorize(out)
    }

    fn credential_warning(&self) -> Option<String> {
        self.credential.warning()
    }

    fn finish_response(&self, endpoint: Endpoint, body: Vec<u8>) -> Vec<u8> {
        match endpoint {
            Endpoint::CountTokens => count_tokens_answer(&body).unwrap_or(body),
            _ => body,
        }
    }
}

/// A `countTokens` body from a `generateContent` body: the Gemini API takes it whole as
/// `generateContentRequest` with `model` (`models/…`) inside; Vertex (`model: None`) takes the counted
/// fields at the top level.
pub fn count_tokens_body(body: &[u8], model: Option<&str>) -> Result<Vec<u8>, serde_json::Error> {
    let fields: BTreeMap<&str, &RawValue> = serde_json::from_slice(body)?;
    match model {
        Some(model) => {
            let mut request: BTreeMap<&str, &RawValue> = fields
                .into_iter()
                .filter(|(k, _)| {
                    COUNTED_FIELDS.contains(k) || matches!(*k, "toolConfig" | "safetySettings" | "cachedContent")
                })
                .collect();
            let name = format!("models/{}", model.strip_prefix("models/").unwrap_or(model));
            let name_raw: Box<RawValue> = RawValue::from_string(serde_json::to_string(&name)?)?;
            request.insert("model", &name_raw);
            serde_json::to_vec(&BTreeMap::from([("generateContentRequest", request)]))
        }
        None => {
            let kept: BTreeMap<&str, &RawValue> =
                fields.into_iter().filter(|(k, _)| COUNTED_FIELDS.contains(k)).collect();
            serde_json::to_vec(&kept)
        }
    }
}

/// A `countTokens` answer (`{"totalTokens": n, …}`) as Anthropic's (`{"input_tokens": n}`): token counts
/// come from Anthropic clients only.
pub fn count_tokens_answer(body: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Counted {
        total_tokens: u64,
    }
    let c: Counted = serde_json::from_slice(body).ok()?;
    Some(format!(r#"{{"input_tokens":{}}}"#, c.total_tokens).into_bytes())
}

/// A `batchEmbedContents` body whose every request names `models/{model}`, as the Gemini API requires
/// (the path's model and theirs must agree).
fn embed_requests_for(body: &[u8], model: &str) -> Result<Vec<u8>, serde_json::Error> {
    let mut v: Value = serde_json::from_slice(body)?;
    let name = Value::String(format!("models/{}", model.strip_prefix("models/").unwrap_or(model)));
    if let Some(requests) = v.get_mut("requests").and_then(Value::as_array_mut) {
        for r in requests.iter_mut().filter_map(Value::as_object_mut) {
            r.insert("model".into(), name.clone());
        }
    }
    serde_json::to_vec(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let o = Outgoing { authority: "h", path: "/", query: "", content_type: "application/json", body: b"" };
        built.provider.authorize(&o, 0, &mut out).unwrap();
        assert_eq!(out, [("x-goog-api-key".to_string(), "AIza-test".to_string())]);
        assert!(built.provider.owns_header("X-Goog-Api-Key"));
    }

    #[test]
    fn token_counts_wrap_the_request_and_answer_in_anthropics_shape() {
        let body = br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"systemInstruction":{"parts":[{"text":"s"}]},"generationConfig":{"maxOutputTokens":5},"labels":{"a":"b"}}"#;
        let v: Value = serde_json::from_slice(&count_tokens_body(body, Some("gemini-2.0-flash")).unwrap()).unwrap();
        assert_eq!(v["generateContentRequest"]["model"], "models/gemini-2.0-flash");
        assert_eq!(v["generateContentRequest"]["systemInstruction"]["parts"][0]["text"], "s");
        assert!(v["generateContentRequest"].get("labels").is_none());
        let v: Value = serde_json::from_slice(&count_tokens_body(body, None).unwrap()).unwrap();
        assert!(v.get("contents").is_some() && v.get("labels").is_none() && v.get("model").is_none());
        assert_eq!(
            count_tokens_answer(br#"{"totalTokens":31,"totalBillableCharacters":96}"#).unwrap(),
            br#"{"input_tokens":31}"#
        );
    }

    #[test]
    fn embedding_requests_name_the_routed_model() {
        let out = embed_requests_for(
            br#"{"requests":[{"model":"models/x","content":{"parts":[{"text":"a"}]}}]}"#,
            "text-embedding-004",
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["requests"][0]["model"], "models/text-embedding-004");
    }
}
