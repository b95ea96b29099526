//! AWS Bedrock runtime, in two schemas:
//! - `"schema": "bedrock"`: the Converse API for any Bedrock model (`/model/{id}/converse`,
//!   `/converse-stream`), bodies in the Converse family;
//! - `"schema": "bedrock_anthropic"`: Claude through InvokeModel in Anthropic's own format
//!   (`/model/{id}/invoke`, `/invoke-with-response-stream`; body with `anthropic_version` and without
//!   `model` or `stream`), so Anthropic clients keep `cache_control`, thinking and betas.
//!
//! Both count tokens through `/model/{id}/count-tokens`, sign every request with SigV4 (service
//! `bedrock`, the backend's region) or send a Bedrock API key as a bearer token, stream AWS's binary
//! event-stream, and answer errors as `{"message"}` with the type in `x-amzn-ErrorType`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::aws::{self, AwsAuth};
use super::{Built, Framing, Outgoing, Provider};
use crate::api::{Api, Endpoint};
use crate::config::{err, AuthConfig, AwsAuthConfig, BackendConfig, ConfigError, Environment};
use crate::error::{error_body, GatewayError};

/// What InvokeModel requires of an Anthropic body.
pub const ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The keys of a Bedrock backend besides the shared ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The AWS region (`us-east-1`): the default base URL and the signature's scope.
    region: String,
    /// `bedrock_anthropic` only: the `anthropic_version` put in bodies that have none.
    #[serde(default)]
    anthropic_version: Option<String>,
}

#[derive(Debug)]
pub struct Bedrock {
    /// `Converse` for `bedrock`, `Anthropic` for `bedrock_anthropic`.
    api: Api,
    region: String,
    /// Resolved at build (and so on every reload); `Err` says what is missing.
    auth: Result<AwsAuth, String>,
    anthropic_version: String,
}

pub fn build(cfg: &BackendConfig, path: &str, environment: &Environment, api: Api) -> Result<Built, ConfigError> {
    let options: Options = cfg.provider_options(path)?;
    if options.region.is_empty() || !options.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(err(format!("{path}.region"), "an AWS region such as us-east-1"));
    }
    if options.anthropic_version.is_some() && api != Api::Anthropic {
        return Err(err(format!("{path}.anthropic_version"), "only for \"schema\": \"bedrock_anthropic\""));
    }
    let default_auth = AuthConfig::Aws(AwsAuthConfig::default());
    let auth = match cfg.auth.as_ref().unwrap_or(&default_auth) {
        AuthConfig::Aws(aws) => aws::resolve(aws, environment.var, environment.file),
        _ => return Err(err(format!("{path}.auth.type"), "Bedrock backends take \"type\": \"aws\"")),
    };
    let base_url =
        cfg.base_url.clone().unwrap_or_else(|| format!("https://bedrock-runtime.{}.amazonaws.com", options.region));
    Ok(Built {
        provider: Box::new(Bedrock {
            api,
            region: options.region,
            auth,
            anthropic_version: options.anthropic_version.unwrap_or_else(|| ANTHROPIC_VERSION.to_string()),
        }),
        base_url,
    })
}

impl Provider for Bedrock {
    fn schema(&self) -> &'static str {
        match self.api {
            Api::Anthropic => "bedrock_anthropic",
            _ => "bedrock",
        }
    }

    fn genai_provider_name(&self) -> &'static str {
        "aws.bedrock"
    }

    fn api(&self) -> Api {
        self.api
    }

    fn path(&self, endpoint: Endpoint, model: &str, stream: bool) -> Option<Cow<'static, str>> {
        let operation = match (self.api, endpoint, stream) {
            (_, Endpoint::CountTokens, _) => "count-tokens",
            (Api::Converse, Endpoint::ChatCompletions | Endpoint::Messages, false) => "converse",
            (Api::Converse, Endpoint::ChatCompletions | Endpoint::Messages, true) => "converse-stream",
            (Api::Anthropic, Endpoint::Messages, false) => "invoke",
            (Api::Anthropic, Endpoint::Messages, true) => "invoke-with-response-stream",
            _ => return None,
        };
        Some(format!("/model/{}/{operation}", aws::encode_path_segment(model)).into())
    }

    fn model_in_body(&self) -> bool {
        false
    }

    fn finish_body<'b>(
        &self,
        endpoint: Endpoint,
        body: Cow<'b, [u8]>,
        header: &dyn Fn(&str) -> Option<&'b str>,
    ) -> Result<Cow<'b, [u8]>, GatewayError> {
        let invalid = |e: serde_json::Error| GatewayError::BadRequest(format!("invalid JSON body: {e}"));
        let body = match self.api {
            Api::Anthropic => Cow::Owned(
                invoke_model_body(&body, &self.anthropic_version, header("anthropic-beta")).map_err(invalid)?,
            ),
            _ => body,
        };
        if endpoint != Endpoint::CountTokens {
            return Ok(body);
        }
        // CountTokens takes the request it would count inside `input`.
        let input = match self.api {
            Api::Anthropic => {
                let encoded = serde_json::to_string(&crate::base64::encode(&body)).map_err(invalid)?;
                format!(r#"{{"invokeModel":{{"body":{encoded}}}}}"#)
            }
            _ => {
                let fields: BTreeMap<&str, &RawValue> = serde_json::from_slice(&body).map_err(invalid)?;
                let kept: BTreeMap<&str, &RawValue> = fields
                    .into_iter()
                    .filter(|(k, _)| {
                        matches!(*k, "messages" | "system" | "toolConfig" | "additionalModelRequestFields")
                    })
                    .collect();
                format!(r#"{{"converse":{}}}"#, serde_json::to_string(&kept).map_err(invalid)?)
            }
        };
        Ok(Cow::Owned(format!(r#"{{"input":{input}}}"#).into_bytes()))
    }

    fn owns_header(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("authorization") || name.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("x-amz-"))
    }

    fn secrets(&self) -> Vec<Cow<'_, str>> {
        match &self.auth {
            Ok(AwsAuth::SigV4(c)) => std::iter::once(c.secret_access_key.as_str())
                .chain(c.session_token.as_deref())
                .map(Cow::Borrowed)
                .collect(),
            Ok(AwsAuth::Bearer(token)) => vec![Cow::Borrowed(token.as_str())],
            Err(_) => Vec::new(),
        }
    }

    fn authorize(&self, request: &Outgoing, now_secs: u64, out: &mut Vec<(String, String)>) -> Result<(), String> {
        match &self.auth {
            Ok(AwsAuth::SigV4(credentials)) => {
                let headers = [("content-type", request.content_type)];
                let path = [request.base_path, request.path].concat();
                out.extend(aws::sign(
                    "POST",
                    request.authority,
                    &path,
                    request.query,
                    &headers,
                    request.body,
                    credentials,
                    &self.region,
                    "bedrock",
                    now_secs,
                ));
                Ok(())
            }
            Ok(AwsAuth::Bearer(token)) => {
                out.push(("authorization".into(), format!("Bearer {token}")));
                Ok(())
            }
            Err(missing) => Err(format!("no AWS credentials: {missing}")),
        }
    }

    fn credential_warning(&self) -> Option<String> {
        self.auth.as_ref().err().map(|m| format!("no AWS credentials ({m}); its requests answer 503 until they exist"))
    }

    fn family_error(&self, status: u16, _error_type: Option<&str>, body: Vec<u8>) -> Vec<u8> {
        // Converse errors stay as they are: the Converse translators read `message` and the type.
        if self.api != Api::Anthropic {
            return body;
        }
        #[derive(Deserialize)]
        struct AwsError {
            #[serde(alias = "Message")]
            message: Option<String>,
        }
        let message = serde_json::from_slice::<AwsError>(&body)
            .ok()
            .and_then(|e| e.message)
            .unwrap_or_else(|| crate::translate::fallback_message(status, &body));
        error_body(Api::Anthropic, status, &message, None)
    }

    fn finish_response(&self, endpoint: Endpoint, body: Vec<u8>) -> Vec<u8> {
        if endpoint != Endpoint::CountTokens {
            return body;
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Counted {
            input_tokens: u64,
        }
        match serde_json::from_slice::<Counted>(&body) {
            Ok(c) => format!(r#"{{"input_tokens":{}}}"#, c.input_tokens).into_bytes(),
            Err(_) => body,
        }
    }

    fn framing(&self) -> Framing {
        match self.api {
            Api::Anthropic => Framing::EventStreamChunks,
            _ => Framing::EventStream,
        }
    }
}

/// An Anthropic Messages body as InvokeModel takes it: no `model` or `stream` (the path says both),
/// `anthropic_version` set, and the client's `anthropic-beta` header as `anthropic_beta`.
fn invoke_model_body(body: &[u8], version: &str, beta: Option<&str>) -> Result<Vec<u8>, serde_json::Error> {
    let mut fields: BTreeMap<&str, &RawValue> = serde_json::from_slice(body)?;
    fields.remove("model");
    fields.remove("stream");
    let version_json = serde_json::to_string(version)?;
    let version_raw: Box<RawValue> = RawValue::from_string(version_json)?;
    fields.entry("anthropic_version").or_insert(&version_raw);
    let betas: Vec<&str> =
        beta.map(|b| b.split(',').map(str::trim).filter(|b| !b.is_empty()).collect()).unwrap_or_default();
    let beta_raw: Box<RawValue> = RawValue::from_string(serde_json::to_string(&betas)?)?;
    if !betas.is_empty() {
        fields.entry("anthropic_beta").or_insert(&beta_raw);
    }
    serde_json::to_vec(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bedrock(api: Api) -> Bedrock {
        let auth = Ok(AwsAuth::SigV4(aws::AwsCredentials {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
            session_token: Some("token".into()),
        }));
        Bedrock { api, region: "us-east-1".into(), auth, anthropic_version: ANTHROPIC_VERSION.into() }
    }

    #[test]
    fn paths_carry_the_encoded_model_and_the_stream_choice() {
        let converse = bedrock(Api::Converse);
        let model = "anthropic.claude-3-haiku-20240307-v1:0";
        assert_eq!(
            converse.path(Endpoint::ChatCompletions, model, true).unwrap(),
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse-stream"
        );
        let arn =
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0";
        assert!(converse.path(Endpoint::Messages, arn, false).unwrap().contains("inference-profile%2Fus."));
        assert_eq!(converse.path(Endpoint::Embeddings, model, false), None);
        let invoke = bedrock(Api::Anthropic);
        assert!(invoke.path(Endpoint::Messages, model, true).unwrap().ends_with("/invoke-with-response-stream"));
        assert!(invoke.path(Endpoint::CountTokens, model, false).unwrap().ends_with("/count-tokens"));
        assert_eq!(invoke.path(Endpoint::ChatCompletions, model, false), None);
    }

    #[test]
    fn invoke_model_body_drops_model_and_stream_and_adds_version_and_betas() {
        let body = br#"{"model":"claude","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"input_schema":{"z":1,"a":2}}]}"#;
        let out = invoke_model_body(body, ANTHROPIC_VERSION, Some("prompt-caching-2024-07-31, token-efficient-tools"))
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("\"model\"") && !text.contains("\"stream\""), "{text}");
        assert!(text.contains(r#""anthropic_version":"bedrock-2023-05-31""#), "{text}");
        assert!(text.contains(r#""anthropic_beta":["prompt-caching-2024-07-31","token-efficient-tools"]"#), "{text}");
        assert!(text.contains(r#"{"z":1,"a":2}"#), "nested key order is kept: {text}");
        let kept = invoke_model_body(br#"{"anthropic_version":"bedrock-2099","messages":[]}"#, ANTHROPIC_VERSION, None)
            .unwrap();
        assert_eq!(kept, br#"{"anthropic_version":"bedrock-2099","messages":[]}"#);
    }

    #[test]
    fn count_tokens_wraps_the_request_and_answers_in_anthropics_shape() {
        let invoke = bedrock(Api::Anthropic);
        let body = invoke
            .finish_body(Endpoint::CountTokens, Cow::Borrowed(br#"{"model":"m","messages":[]}"#), &|_| None)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let inner = crate::base64::decode(v["input"]["invokeModel"]["body"].as_str().unwrap()).unwrap();
        assert_eq!(inner, br#"{"anthropic_version":"bedrock-2023-05-31","messages":[]}"#);
        let converse = bedrock(Api::Converse);
        let body = converse
            .finish_body(
                Endpoint::CountTokens,
                Cow::Borrowed(br#"{"messages":[],"inferenceConfig":{"maxTokens":5},"system":[{"text":"s"}]}"#),
                &|_| None,
            )
            .unwrap();
        assert_eq!(&body[..], br#"{"input":{"converse":{"messages":[],"system":[{"text":"s"}]}}}"#);
        assert_eq!(
            converse.finish_response(Endpoint::CountTokens, br#"{"inputTokens":42}"#.to_vec()),
            br#"{"input_tokens":42}"#
        );
    }

    #[test]
    fn invoke_model_errors_take_anthropics_shape_and_converse_errors_stay() {
        let invoke = bedrock(Api::Anthropic);
        let out =
            invoke.family_error(403, Some("AccessDeniedException:http://x/"), br#"{"Message":"denied"}"#.to_vec());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(
            (v["error"]["type"].as_str(), v["error"]["message"].as_str()),
            (Some("permission_error"), Some("denied"))
        );
        let out = invoke.family_error(502, None, b"<html>bad gateway</html>".to_vec());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "<html>bad gateway</html>");
        let converse = bedrock(Api::Converse);
        assert_eq!(converse.family_error(429, None, br#"{"message":"slow"}"#.to_vec()), br#"{"message":"slow"}"#);
    }

    #[test]
    fn sigv4_headers_are_added_and_a_missing_credential_is_named() {
        let b = bedrock(Api::Converse);
        let mut out = Vec::new();
        let request = Outgoing {
            authority: "bedrock-runtime.us-east-1.amazonaws.com",
            base_path: "/model",
            path: "/m/converse",
            query: "",
            content_type: "application/json",
            body: b"{}",
        };
        b.authorize(&request, 1_700_000_000, &mut out).unwrap();
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "authorization"]);
        assert!(out[3].1.starts_with("AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/bedrock/aws4_request"));
        // What is signed is the path as sent: the base URL's path, then the request's.
        let Ok(AwsAuth::SigV4(credentials)) = &b.auth else { panic!("SigV4 credentials") };
        let whole_path = aws::sign(
            "POST",
            request.authority,
            "/model/m/converse",
            "",
            &[("content-type", "application/json")],
            b"{}",
            credentials,
            &b.region,
            "bedrock",
            1_700_000_000,
        );
        assert_eq!(out, whole_path);
        let missing = Bedrock { auth: Err("AWS_ACCESS_KEY_ID unset".into()), ..bedrock(Api::Converse) };
        assert!(missing.authorize(&request, 0, &mut out).unwrap_err().contains("AWS_ACCESS_KEY_ID"));
    }

    #[test]
    fn secrets_are_the_secret_key_and_session_token_or_the_bearer_token_never_the_key_id() {
        assert_eq!(bedrock(Api::Converse).secrets(), ["secret", "token"]);
        let bearer = Bedrock { auth: Ok(AwsAuth::Bearer("bedrock-api-key".into())), ..bedrock(Api::Converse) };
        assert_eq!(bearer.secrets(), ["bedrock-api-key"]);
        let missing = Bedrock { auth: Err("unset".into()), ..bedrock(Api::Converse) };
        assert!(missing.secrets().is_empty());
    }
}
