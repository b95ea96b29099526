//! Providers: one file each, owning everything about its upstream — its config keys, default base URL,
//! the path of each operation (the model and stream may be in it), how it authenticates (a static
//! header, or signing the final bytes), extra headers and body edits, how its errors and streams look.
//!
//! The gateway talks to every provider through [`Provider`]; [`build`] is the one place that maps a
//! config `schema` to its file.

pub mod anthropic;
pub mod aws;
pub mod azure_openai;
pub mod bedrock;
pub mod gemini;
pub mod mock;
pub mod openai;
pub mod token;
pub mod vertex;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::api::{Api, Endpoint};
use crate::config::{
    err, AuthConfig, AzureEntraConfig, BackendConfig, ConfigError, Environment, GcpServiceAccountConfig, Secret,
};
use crate::error::GatewayError;

/// How a provider's streamed responses are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Server-sent events (`text/event-stream`).
    Sse,
    /// AWS's binary event-stream whose events are the family's own (Converse).
    EventStream,
    /// AWS's binary event-stream whose `chunk` events carry the family's events base64-encoded
    /// (InvokeModel with a response stream).
    EventStreamChunks,
}

/// A request as it will be sent, for providers that sign it.
pub struct Outgoing<'a> {
    /// `host[:port]`, as in the `Host` header.
    pub authority: &'a str,
    /// The path of the backend's base URL: the path as sent (percent-encoded, without the query) is
    /// this, then [`Outgoing::path`]. Kept apart: only a signing provider needs them joined.
    pub base_path: &'a str,
    /// The path below the base URL.
    pub path: &'a str,
    /// The query string without `?` (may be empty).
    pub query: &'a str,
    /// `content-type` as sent.
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// The four authentication methods of [`Provider`] for a provider whose `credential` field (a
/// [`Credential`]: a static key or an expiring token) is all its authentication. A macro rather than
/// default methods, so that a new provider still has to say how it authenticates.
macro_rules! authenticate_with_credential {
    () => {
        fn owns_header(&self, name: &str) -> bool {
            self.credential.owns_header(name)
        }

        fn secrets(&self) -> Vec<std::borrow::Cow<'_, str>> {
            self.credential.secrets()
        }

        fn authorize(
            &self,
            _: &$crate::providers::Outgoing,
            _: u64,
            out: &mut Vec<(String, String)>,
        ) -> Result<(), String> {
            self.credential.authorize(out)
        }

        fn credential_warning(&self) -> Option<String> {
            self.credential.warning()
        }
    };
}
pub(crate) use authenticate_with_credential;

/// A configured upstream, as the request path uses it.
pub trait Provider: Send + Sync + fmt::Debug {
    /// The config `schema` name (`openai`, `bedrock`, …).
    fn schema(&self) -> &'static str;

    /// `gen_ai.provider.name` in metrics and traces: the OpenTelemetry conventions' name where they have
    /// one (`openai`, `anthropic`, `aws.bedrock`, `gcp.gemini`, `gcp.vertex_ai`, `azure.ai.openai`…),
    /// else the schema name.
    fn genai_provider_name(&self) -> &'static str {
        self.schema()
    }

    /// The API family of the bodies it takes and answers.
    fn api(&self) -> Api;

    /// The path below the base URL for `endpoint` (already in this provider's family), or `None` when
    /// the provider has no such operation. Borrowed when it is the endpoint's own (no model in it).
    fn path(&self, endpoint: Endpoint, model: &str, stream: bool) -> Option<Cow<'static, str>>;

    /// Whether the model name travels in the body (renamed there) rather than in the path.
    fn model_in_body(&self) -> bool {
        true
    }

    /// Last edits of the body before it is sent; `header` reads the client request's headers.
    fn finish_body<'b>(
        &self,
        _endpoint: Endpoint,
        body: Cow<'b, [u8]>,
        _header: &dyn Fn(&str) -> Option<&'b str>,
    ) -> Result<Cow<'b, [u8]>, GatewayError> {
        Ok(body)
    }

    /// A header the provider sends when the client sent none (`anthropic-version`).
    fn default_header(&self) -> Option<(&str, &str)> {
        None
    }

    /// Whether a client header of this name must not be forwarded because the provider's
    /// authentication sets it.
    fn owns_header(&self, name: &str) -> bool;

    /// Every secret string its authentication sends (static keys, bearer tokens, an AWS secret key
    /// and session token), so that any occurrence in a relayed error body or header is masked. Each
    /// provider lists its own: there is no default, so a new provider cannot forget.
    fn secrets(&self) -> Vec<Cow<'_, str>>;

    /// Appends the headers that authenticate `request` (computed over its final bytes where the
    /// provider signs). `Err` says which credential is missing (the backend then answers 503).
    fn authorize(&self, request: &Outgoing, now_secs: u64, out: &mut Vec<(String, String)>) -> Result<(), String>;

    /// A problem with the credential that operators must see at start-up and reload.
    fn credential_warning(&self) -> Option<String> {
        None
    }

    /// An error body the upstream sent, in the shape of the provider's family where the provider's own
    /// differs (Bedrock's `{"message"}` with `x-amzn-ErrorType`, passed as `error_type`, for Claude on
    /// InvokeModel becomes Anthropic's error shape).
    fn family_error(&self, _status: u16, _error_type: Option<&str>, body: Vec<u8>) -> Vec<u8> {
        body
    }

    /// A successful non-streamed body in the provider's family, from what it answered (Bedrock's
    /// CountTokens answers in its own shape).
    fn finish_response(&self, _endpoint: Endpoint, body: Vec<u8>) -> Vec<u8> {
        body
    }

    /// How its streams are framed.
    fn framing(&self) -> Framing {
        Framing::Sse
    }

    /// For OpenAI-family streams: ask for usage (`stream_options.include_usage`) when the client did not.
    fn stream_usage(&self) -> bool {
        false
    }

    /// Whether it serves OpenAI's Responses API itself (`/responses`, and the calls on the responses it
    /// stored): Responses clients are then passed through to it, not translated.
    fn serves_responses(&self) -> bool {
        false
    }

    /// The path below the base URL for a request passed through as it came (`/v1/files/…`), or `None`
    /// when the provider takes no passthrough.
    fn passthrough_path(&self, _client_path: &str) -> Option<String> {
        None
    }

    /// The in-process mock, which answers without a socket.
    fn mock(&self) -> Option<&mock::Mock> {
        None
    }
}

/// A provider ready for use and the base URL its requests go to.
pub struct Built {
    pub provider: Box<dyn Provider>,
    /// Without a trailing slash.
    pub base_url: String,
}

/// Builds the provider of a `backends` entry (its `schema`), reading its own keys and credential.
pub fn build(cfg: &BackendConfig, path: &str, environment: &Environment) -> Result<Built, ConfigError> {
    let built = match cfg.schema.as_str() {
        "openai" => openai::build(cfg, path, environment)?,
        "anthropic" => anthropic::build(cfg, path, environment)?,
        "bedrock" => bedrock::build(cfg, path, environment, Api::Converse)?,
        "bedrock_anthropic" => bedrock::build(cfg, path, environment, Api::Anthropic)?,
        "gemini" => gemini::build(cfg, path, environment)?,
        "vertex" => vertex::build(cfg, path, environment, Api::Gemini)?,
        "vertex_anthropic" => vertex::build(cfg, path, environment, Api::Anthropic)?,
        "azure_openai" => azure_openai::build(cfg, path, environment)?,
        "mock" => mock::build(cfg, path)?,
        other => {
            return Err(err(
                format!("{path}.schema"),
                format!(
                    "unknown schema \"{other}\": one of openai, anthropic, bedrock, bedrock_anthropic, gemini, \
                     vertex, vertex_anthropic, azure_openai, mock"
                ),
            ))
        }
    };
    Ok(Built { base_url: built.base_url.trim_end_matches('/').to_string(), ..built })
}

/// `cfg.base_url`, or the provider's default.
pub fn base_url_or(cfg: &BackendConfig, default: &str) -> String {
    cfg.base_url.clone().unwrap_or_else(|| default.to_string())
}

/// A static key sent as a header value (`authorization: Bearer …`, `x-api-key`, `api-key`, …).
#[derive(Debug, Clone)]
pub enum StaticKey {
    /// The backend needs no credential.
    None,
    /// Header name (lower case) and full value.
    Header(String, Secret),
    /// The key's source is unset: requests answer 503 naming it.
    Missing(String),
}

impl StaticKey {
    /// Reads `auth` of type `bearer` or `header` (`default_header` names the header when `auth` names
    /// none: `None` makes the name required).
    pub fn from_config(
        auth: Option<&AuthConfig>,
        path: &str,
        default_header: Option<&str>,
        environment: &Environment,
    ) -> Result<StaticKey, ConfigError> {
        let (header, key, key_env, key_file, bearer) = match auth {
            None => return Ok(StaticKey::None),
            Some(AuthConfig::Bearer { key, key_env, key_file }) => {
                ("authorization".to_string(), key, key_env, key_file, true)
            }
            Some(AuthConfig::Header { name, key, key_env, key_file }) => {
                let name = match (name.as_deref(), default_header) {
                    (Some(n), _) if crate::config::valid_header_name(n) => n.to_ascii_lowercase(),
                    (None, Some(d)) => d.to_string(),
                    _ => return Err(err(format!("{path}.auth.name"), "a valid header name is required")),
                };
                (name, key, key_env, key_file, false)
            }
            Some(AuthConfig::Aws(_)) => {
                return Err(err(format!("{path}.auth.type"), "\"aws\" is only for the bedrock schemas"))
            }
            Some(AuthConfig::GcpServiceAccount(_) | AuthConfig::AzureEntra(_)) => {
                return Err(err(format!("{path}.auth.type"), "expiring tokens are not accepted here"))
            }
        };
        let secret = match (key, key_env, key_file) {
            (Some(k), None, None) => Ok(k.clone()),
            (None, Some(var), None) => {
                (environment.var)(var).ok_or(format!("the environment variable {var} is not set"))
            }
            (None, None, Some(file)) => (environment.file)(file)
                .map(|text| text.trim().to_string())
                .filter(|k| !k.is_empty())
                .ok_or(format!("the key file {file} cannot be read or is empty")),
            _ => return Err(err(format!("{path}.auth"), "set exactly one of \"key\", \"key_env\" or \"key_file\"")),
        };
        Ok(match secret {
            Err(missing) => StaticKey::Missing(missing),
            Ok(s) if s.contains(['\r', '\n']) => {
                return Err(err(format!("{path}.auth"), "the key contains a line break"))
            }
            Ok(s) if bearer => StaticKey::Header(header, Secret(format!("Bearer {s}"))),
            Ok(s) => StaticKey::Header(header, Secret(s)),
        })
    }

    pub fn owns_header(&self, name: &str) -> bool {
        matches!(self, StaticKey::Header(h, _) if h.eq_ignore_ascii_case(name))
    }

    /// The key itself (without the `Bearer ` the header adds), when there is one.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            StaticKey::Header(name, value) if name == "authorization" => {
                vec![value.0.strip_prefix("Bearer ").unwrap_or(&value.0)]
            }
            StaticKey::Header(_, value) => vec![value.0.as_str()],
            _ => Vec::new(),
        }
    }

    /// Appends the header, or says what is missing.
    pub fn authorize(&self, out: &mut Vec<(String, String)>) -> Result<(), String> {
        match self {
            StaticKey::None => Ok(()),
            StaticKey::Header(name, value) => {
                out.push((name.clone(), value.0.clone()));
                Ok(())
            }
            StaticKey::Missing(what) => Err(what.clone()),
        }
    }

    pub fn warning(&self) -> Option<String> {
        match self {
            StaticKey::Missing(what) => Some(format!("{what}; its requests answer 503 until it is set")),
            _ => None,
        }
    }
}

/// A backend's credential: a static key, or an expiring token refreshed ahead of expiry
/// ([`token::TokenSource`]), sent as `authorization: Bearer …`.
#[derive(Debug, Clone)]
pub enum Credential {
    Static(StaticKey),
    Token(Arc<token::TokenSource>),
}

impl Credential {
    /// Reads `auth`: `bearer` or `header` (as [`StaticKey::from_config`]), `gcp_service_account` or
    /// `azure_entra`. Files and variables are read now (so again on every reload); one that is missing
    /// or unusable leaves the backend answering 503 with the reason, and a warning at start-up.
    pub fn from_config(
        auth: Option<&AuthConfig>,
        path: &str,
        default_header: Option<&str>,
        environment: &Environment,
    ) -> Result<Credential, ConfigError> {
        let auth_path = format!("{path}.auth");
        let made = match auth {
            Some(AuthConfig::GcpServiceAccount(gcp)) => google(gcp, &auth_path, environment)?,
            Some(AuthConfig::AzureEntra(entra)) => self::entra(entra, &auth_path, environment)?,
            _ => return Ok(Credential::Static(StaticKey::from_config(auth, path, default_header, environment)?)),
        };
        Ok(match made {
            Ok(source) => Credential::Token(source),
            Err(missing) => Credential::Static(StaticKey::Missing(missing)),
        })
    }

    /// The secrets this credential sends: the static key, or the token in use now.
    pub fn secrets(&self) -> Vec<Cow<'_, str>> {
        match self {
            Credential::Static(key) => key.secrets().into_iter().map(Cow::Borrowed).collect(),
            Credential::Token(source) => source.current_token().map(Cow::Owned).into_iter().collect(),
        }
    }

    pub fn owns_header(&self, name: &str) -> bool {
        match self {
            Credential::Static(key) => key.owns_header(name),
            Credential::Token(_) => name.eq_ignore_ascii_case("authorization"),
        }
    }

    /// Appends the credential's header, or says why there is none (the backend then answers 503).
    /// A token source may wait for a token exchange here (yielding, in a coroutine).
    pub fn authorize(&self, out: &mut Vec<(String, String)>) -> Result<(), String> {
        match self {
            Credential::Static(key) => key.authorize(out),
            Credential::Token(source) => {
                out.push(("authorization".into(), source.header()?.to_string()));
                Ok(())
            }
        }
    }

    pub fn warning(&self) -> Option<String> {
        match self {
            Credential::Static(key) => key.warning(),
            Credential::Token(_) => None,
        }
    }
}

/// A value given inline or through the variable its `_env` twin names: `Ok(Err(missing))` when the
/// variable is unset.
fn inline_or_env(
    inline: Option<&str>,
    var: Option<&str>,
    field: &str,
    path: &str,
    environment: &Environment,
) -> Result<Result<String, String>, ConfigError> {
    match (inline, var) {
        (Some(v), None) if !v.is_empty() => Ok(Ok(v.to_string())),
        (None, Some(var)) => Ok((environment.var)(var).ok_or(format!("the environment variable {var} is not set"))),
        _ => Err(err(format!("{path}.{field}"), format!("set exactly one of \"{field}\" or \"{field}_env\""))),
    }
}

/// A Google service account's token source.
fn google(
    cfg: &GcpServiceAccountConfig,
    path: &str,
    environment: &Environment,
) -> Result<Result<Arc<token::TokenSource>, String>, ConfigError> {
    let file = match (&cfg.credentials_file, &cfg.credentials_env) {
        (Some(f), None) => f.clone(),
        (None, Some(var)) => match (environment.var)(var) {
            Some(f) => f,
            None => return Ok(Err(format!("the environment variable {var} (the key file's path) is not set"))),
        },
        _ => return Err(err(path, "set exactly one of \"credentials_file\" or \"credentials_env\"")),
    };
    let scope = cfg.scope.as_deref().unwrap_or(token::GOOGLE_SCOPE);
    let refresh = cfg.refresh_before_secs.unwrap_or(token::DEFAULT_REFRESH_BEFORE_SECS);
    let Some(text) = (environment.file)(&file) else {
        return Ok(Err(format!("the service account key file {file} cannot be read")));
    };
    Ok(token::Grant::google_service_account(&text, scope)
        .map_err(|m| format!("the service account key file {file}: {m}"))
        .and_then(|grant| token::TokenSource::shared(grant, &format!("key file {file}"), refresh)))
}

/// An Entra ID app's token source.
fn entra(
    cfg: &AzureEntraConfig,
    path: &str,
    environment: &Environment,
) -> Result<Result<Arc<token::TokenSource>, String>, ConfigError> {
    let tenant = inline_or_env(cfg.tenant_id.as_deref(), cfg.tenant_id_env.as_deref(), "tenant_id", path, environment)?;
    let client = inline_or_env(cfg.client_id.as_deref(), cfg.client_id_env.as_deref(), "client_id", path, environment)?;
    let secret = inline_or_env(
        cfg.client_secret.as_deref(),
        cfg.client_secret_env.as_deref(),
        "client_secret",
        path,
        environment,
    )?;
    let authority = cfg.authority.as_deref().unwrap_or(token::ENTRA_AUTHORITY);
    token::check_endpoint(authority).map_err(|m| err(format!("{path}.authority"), m))?;
    let (tenant, client, secret) = match (tenant, client, secret) {
        (Ok(t), Ok(c), Ok(s)) => (t, c, s),
        (t, c, s) => return Ok(Err([t.err(), c.err(), s.err()].into_iter().flatten().collect::<Vec<_>>().join("; "))),
    };
    let scope = cfg.scope.as_deref().unwrap_or(token::ENTRA_SCOPE);
    let refresh = cfg.refresh_before_secs.unwrap_or(token::DEFAULT_REFRESH_BEFORE_SECS);
    let grant = token::Grant::entra(authority, &tenant, &client, Secret(secret), scope).map_err(|m| err(path, m))?;
    Ok(token::TokenSource::shared(grant, &format!("tenant {tenant}"), refresh))
}

/// A model name or deployment as one path segment: RFC 3986 unreserved characters and `@` (Vertex's
/// `claude-…@20241022`) kept, everything else percent-encoded (`:` too, which would start an
/// operation, and `/`, `?`); a segment of dots is encoded whole so it cannot climb the path.
pub fn path_segment(s: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let all_dots = s.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'@') || (b == b'.' && !all_dots) {
            out.push(b as char);
        } else {
            out.extend(['%', DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_key_lists_the_key_without_the_bearer_prefix() {
        let bearer = StaticKey::Header("authorization".into(), Secret("Bearer sk-abc123456".into()));
        assert_eq!(bearer.secrets(), ["sk-abc123456"]);
        let header = StaticKey::Header("x-api-key".into(), Secret("sk-ant-987654321".into()));
        assert_eq!(header.secrets(), ["sk-ant-987654321"]);
        assert!(StaticKey::None.secrets().is_empty());
        assert!(StaticKey::Missing("VAR unset".into()).secrets().is_empty());
    }
}
