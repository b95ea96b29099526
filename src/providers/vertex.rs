//! Google Vertex AI, in two schemas:
//! - `"schema": "vertex"`: Gemini models in Gemini's format (the same bodies as the Gemini API) at
//!   `/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:generateContent`,
//!   `:streamGenerateContent?alt=sse`, `:countTokens` (the count's fields at the top level), and
//!   embeddings through `:predict` (`instances`, converted from the translators' `batchEmbedContents`
//!   body; `predictions` are read as they come);
//! - `"schema": "vertex_anthropic"`: Claude in Anthropic's Messages format at
//!   `…/publishers/anthropic/models/{model}:rawPredict` and `:streamRawPredict` (SSE, as Anthropic's
//!   own), the body without `model` and with `anthropic_version: vertex-2023-10-16`; token counts at
//!   `…/publishers/anthropic/models/count-tokens:rawPredict` with the model in the body.
//!
//! The host is `{region}-aiplatform.googleapis.com`, or `aiplatform.googleapis.com` for the `global`
//! region. Requests carry `authorization: Bearer` with a service account's token (refreshed ahead of
//! expiry, see [`super::token`]) or a ready token. Vertex answers its own failures (quota, permission,
//! not found) in Google's error shape `{"error": {"code", "message", "status"}}`; for `vertex_anthropic`
//! they are turned into Anthropic's shape.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{path_segment, Built, Credential, Provider};
use crate::api::{Api, Endpoint};
use crate::config::{err, BackendConfig, ConfigError, Environment};
use crate::error::{error_body, GatewayError};
use crate::translate::{anthropic_gemini, openai_gemini};

/// What Claude on Vertex requires in the body.
pub const ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

/// The keys of a Vertex backend besides the shared ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The Google Cloud project id.
    project: String,
    /// The location (`us-central1`, `europe-west4`, `global`…).
    region: String,
    /// `vertex_anthropic` only: the `anthropic_version` put in bodies that have none.
    #[serde(default)]
    anthropic_version: Option<String>,
}

#[derive(Debug)]
pub struct Vertex {
    /// `Gemini` for `vertex`, `Anthropic` for `vertex_anthropic`.
    api: Api,
    /// `/v1/projects/{project}/locations/{region}/publishers/{google|anthropic}/models/`.
    models_path: String,
    credential: Credential,
    anthropic_version: String,
}

/// The default base URL of a region.
pub fn base_url_for(region: &str) -> String {
    if region == "global" {
        "https://aiplatform.googleapis.com".to_string()
    } else {
        format!("https://{region}-aiplatform.googleapis.com")
    }
}

pub fn build(cfg: &BackendConfig, path: &str, environment: &Environment, api: Api) -> Result<Built, ConfigError> {
    let options: Options = cfg.provider_options(path)?;
    let valid =
        |s: &str, extra: &[u8]| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b));
    if !valid(&options.region, b"-") {
        return Err(err(format!("{path}.region"), "a Google Cloud location such as us-central1, or global"));
    }
    if !valid(&options.project, b"-.:") {
        return Err(err(format!("{path}.project"), "a Google Cloud project id such as my-project"));
    }
    if options.anthropic_version.is_some() && api != Api::Anthropic {
        return Err(err(format!("{path}.anthropic_version"), "only for \"schema\": \"vertex_anthropic\""));
    }
    if cfg.base_url.as_deref().is_some_and(|u| u.contains('?')) {
        return Err(err(format!("{path}.base_url"), "no query here"));
    }
    let publisher = if api == Api::Anthropic { "anthropic" } else { "google" };
    let credential = Credential::from_config(cfg.auth.as_ref(), path, None, environment)?;
    Ok(Built {
        provider: Box::new(Vertex {
            api,
            models_path: format!(
                "/v1/projects/{}/locations/{}/publishers/{publisher}/models/",
                options.project, options.region
            ),
            credential,
            anthropic_version: options.anthropic_version.unwrap_or_else(|| ANTHROPIC_VERSION.to_string()),
        }),
        base_url: cfg.base_url.clone().unwrap_or_else(|| base_url_for(&options.region)),
    })
}

impl Provider for Vertex {
    fn schema(&self) -> &'static str {
        match self.api {
            Api::Anthropic => "vertex_anthropic",
            _ => "vertex",
        }
    }

    fn api(&self) -> Api {
        self.api
    }

    fn path(&self, endpoint: Endpoint, model: &str, stream: bool) -> Option<Cow<'static, str>> {
        let model = path_segment(model);
        let base = &self.models_path;
        Some(
            match (self.api, endpoint, stream) {
                (Api::Anthropic, Endpoint::Messages, false) => format!("{base}{model}:rawPredict"),
                (Api::Anthropic, Endpoint::Messages, true) => format!("{base}{model}:streamRawPredict"),
                (Api::Anthropic, Endpoint::CountTokens, _) => format!("{base}count-tokens:rawPredict"),
                (Api::Anthropic, _, _) => return None,
                (_, Endpoint::ChatCompletions | Endpoint::Messages, false) => format!("{base}{model}:generateContent"),
                (_, Endpoint::ChatCompletions | Endpoint::Messages, true) => {
                    format!("{base}{model}:streamGenerateContent?alt=sse")
                }
                (_, Endpoint::CountTokens, _) => format!("{base}{model}:countTokens"),
                (_, Endpoint::Embeddings, _) => format!("{base}{model}:predict"),
                (_, Endpoint::Completions | Endpoint::Responses | Endpoint::ResponsesInputTokens, _) => return None,
            }
            .into(),
        )
    }

    fn finish_body<'b>(
        &self,
        endpoint: Endpoint,
        body: Cow<'b, [u8]>,
        _header: &dyn Fn(&str) -> Option<&'b str>,
    ) -> Result<Cow<'b, [u8]>, GatewayError> {
        let invalid = |e: serde_json::Error| GatewayError::BadRequest(format!("invalid JSON body: {e}"));
        let translation = |e: crate::translate::TranslateError| GatewayError::BadRequest(e.to_string());
        match (self.api, endpoint) {
            (Api::Anthropic, _) => Ok(Cow::Owned(
                raw_predict_body(&body, &self.anthropic_version, endpoint == Endpoint::CountTokens).map_err(invalid)?,
            )),
            (_, Endpoint::Embeddings) => {
                Ok(Cow::Owned(openai_gemini::vertex_predict_body(&body).map_err(translation)?))
            }
            (_, Endpoint::CountTokens) => {
                Ok(Cow::Owned(anthropic_gemini::vertex_count_tokens_body(&body).map_err(translation)?))
            }
            _ => Ok(body),
        }
    }

    super::authenticate_with_credential!();

    fn family_error(&self, status: u16, _error_type: Option<&str>, body: Vec<u8>) -> Vec<u8> {
        if self.api != Api::Anthropic {
            return body;
        }
        match google_error_message(&body) {
            Some(message) => error_body(Api::Anthropic, status, &message, None),
            None => body,
        }
    }

    fn finish_response(&self, endpoint: Endpoint, body: Vec<u8>) -> Vec<u8> {
        match (self.api, endpoint) {
            // Token counts come from Anthropic clients only, and are not translated back. (`predict`'s
            // embeddings answer is read as it comes by the embeddings translator.)
            (Api::Gemini, Endpoint::CountTokens) => anthropic_gemini::count_tokens_response(body),
            _ => body,
        }
    }
}

/// The message of an error in Google's shape (`{"error": {"code", "message", "status"}}`, or a
/// one-element array of it, as Vertex's streaming methods answer); `None` for any other body (an
/// Anthropic error, which stays as it is).
pub fn google_error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = match v {
        Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
        v => v,
    };
    let error = v.get("error")?;
    if v.get("type").is_some() || error.get("status").is_none() && error.get("code").is_none() {
        return None;
    }
    let message = error.get("message").and_then(Value::as_str).unwrap_or("the upstream failed");
    Some(match error.get("status").and_then(Value::as_str) {
        Some(status) => format!("{status}: {message}"),
        None => message.to_string(),
    })
}

/// An Anthropic Messages body as rawPredict takes it: `anthropic_version` set, `model` removed (the
/// path names it) except for a token count, which takes it in the body. `stream` stays.
fn raw_predict_body(body: &[u8], version: &str, keep_model: bool) -> Result<Vec<u8>, serde_json::Error> {
    let mut fields: BTreeMap<&str, &RawValue> = serde_json::from_slice(body)?;
    if !keep_model {
        fields.remove("model");
    }
    let version_raw: Box<RawValue> = RawValue::from_string(serde_json::to_string(version)?)?;
    fields.entry("anthropic_version").or_insert(&version_raw);
    serde_json::to_vec(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vertex(schema: &str, region: &str) -> Built {
        let cfg =
            BackendConfig::from_value(json!({"name": "v", "schema": schema, "project": "my-proj", "region": region,
            "auth": {"type": "bearer", "key": "ya29.test"}}))
            .unwrap();
        let api = if schema == "vertex_anthropic" { Api::Anthropic } else { Api::Gemini };
        build(&cfg, "backends[0]", &Environment { var: &|_| None, file: &|_| None }, api).unwrap()
    }

    #[test]
    fn claude_paths_use_raw_predict_and_the_global_region_has_no_prefix() {
        let built = vertex("vertex_anthropic", "us-east5");
        assert_eq!(built.base_url, "https://us-east5-aiplatform.googleapis.com");
        let p = &built.provider;
        assert_eq!(
            p.path(Endpoint::Messages, "claude-3-5-sonnet-v2@20241022", false).unwrap(),
            "/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/claude-3-5-sonnet-v2@20241022:rawPredict"
        );
        assert!(p.path(Endpoint::Messages, "claude", true).unwrap().ends_with("/models/claude:streamRawPredict"));
        assert!(p.path(Endpoint::CountTokens, "claude", false).unwrap().ends_with("/models/count-tokens:rawPredict"));
        assert_eq!(p.path(Endpoint::Embeddings, "claude", false), None);
        assert_eq!(vertex("vertex", "global").base_url, "https://aiplatform.googleapis.com");
    }

    #[test]
    fn gemini_paths_on_vertex() {
        let built = vertex("vertex", "europe-west4");
        let p = &built.provider;
        let base = "/v1/projects/my-proj/locations/europe-west4/publishers/google/models/";
        assert_eq!(
            p.path(Endpoint::ChatCompletions, "gemini-2.0-flash", false).unwrap(),
            format!("{base}gemini-2.0-flash:generateContent")
        );
        assert_eq!(
            p.path(Endpoint::Messages, "gemini-2.0-flash", true).unwrap(),
            format!("{base}gemini-2.0-flash:streamGenerateContent?alt=sse")
        );
        assert_eq!(
            p.path(Endpoint::Embeddings, "text-embedding-005", false).unwrap(),
            format!("{base}text-embedding-005:predict")
        );
        assert_eq!(p.path(Endpoint::CountTokens, "g", false).unwrap(), format!("{base}g:countTokens"));
        assert_eq!(
            p.path(Endpoint::ChatCompletions, "a:b/c", false).unwrap(),
            format!("{base}a%3Ab%2Fc:generateContent")
        );
    }

    #[test]
    fn raw_predict_bodies_drop_the_model_and_carry_the_vertex_version() {
        let body = br#"{"model":"claude","stream":true,"max_tokens":5,"messages":[],"tools":[{"input_schema":{"z":1,"a":2}}]}"#;
        let text = String::from_utf8(raw_predict_body(body, ANTHROPIC_VERSION, false).unwrap()).unwrap();
        assert!(!text.contains("\"model\""), "{text}");
        assert!(
            text.contains(r#""stream":true"#) && text.contains(r#""anthropic_version":"vertex-2023-10-16""#),
            "{text}"
        );
        assert!(text.contains(r#"{"z":1,"a":2}"#), "nested key order is kept: {text}");
        let count = raw_predict_body(br#"{"model":"claude","messages":[]}"#, ANTHROPIC_VERSION, true).unwrap();
        assert_eq!(count, br#"{"anthropic_version":"vertex-2023-10-16","messages":[],"model":"claude"}"#);
    }

    #[test]
    fn google_errors_become_anthropic_errors_for_claude() {
        let built = vertex("vertex_anthropic", "us-east5");
        let body = br#"{"error":{"code":429,"message":"Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model","status":"RESOURCE_EXHAUSTED"}}"#;
        let v: Value = serde_json::from_slice(&built.provider.family_error(429, None, body.to_vec())).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(v["error"]["message"].as_str().unwrap().starts_with("RESOURCE_EXHAUSTED: Quota exceeded"));
        let array = br#"[{"error":{"code":404,"message":"not found","status":"NOT_FOUND"}}]"#;
        let v: Value = serde_json::from_slice(&built.provider.family_error(404, None, array.to_vec())).unwrap();
        assert_eq!(v["error"]["type"], "not_found_error");
        let anthropic = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(built.provider.family_error(529, None, anthropic.to_vec()), anthropic);
    }

    #[test]
    fn embeddings_go_through_predict_and_counts_take_vertex_form() {
        let built = vertex("vertex", "us-central1");
        let batch = br#"{"requests":[{"model":"models/text-embedding-005","content":{"parts":[{"text":"hello"}]}}]}"#;
        let body = built.provider.finish_body(Endpoint::Embeddings, Cow::Borrowed(batch), &|_| None).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["instances"][0]["content"], "hello");
        let count =
            br#"{"generateContentRequest":{"model":"models/g","contents":[{"role":"user","parts":[{"text":"hi"}]}]}}"#;
        let body = built.provider.finish_body(Endpoint::CountTokens, Cow::Borrowed(count), &|_| None).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v.get("contents").is_some() && v.get("generateContentRequest").is_none(), "{v}");
        let answer = built.provider.finish_response(Endpoint::CountTokens, br#"{"totalTokens":7}"#.to_vec());
        assert_eq!(answer, br#"{"input_tokens":7}"#);
    }
}
