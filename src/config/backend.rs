//! `backends` entries: the keys every provider shares (name, schema, base URL, timeouts, headers, auth)
//! and the provider's own keys, which its file in `src/providers/` reads and checks.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check_timeout, err, valid_header_name, ConfigError};

/// One entry of `backends`: the keys every provider shares, and the provider's own keys, which its file
/// in `src/providers/` reads and checks (`"schema": "bedrock"` ↔ `providers/bedrock.rs`).
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    /// The provider: `openai`, `anthropic`, `bedrock`, `bedrock_anthropic`, `gemini`, `vertex`,
    /// `vertex_anthropic`, `azure_openai`, `mock`.
    pub schema: String,
    pub base_url: Option<String>,
    pub auth: Option<AuthConfig>,
    /// Extra headers sent upstream with every request (e.g. `OpenAI-Organization`).
    pub headers: BTreeMap<String, String>,
    pub connect_timeout_ms: u64,
    /// Time until the upstream's response headers arrive.
    pub response_timeout_ms: u64,
    /// Longest silence allowed between two reads of the response body (streams included).
    pub idle_timeout_ms: u64,
    /// PEM file of extra root certificates trusted for this backend's https (a private CA).
    pub ca_file: Option<String>,
    /// `max_tokens` sent when a client gave none and the backend's API requires one (Anthropic's).
    pub default_max_tokens: Option<u32>,
    /// The remaining keys, for the provider to read (unknown ones are errors there).
    pub options: Map<String, Value>,
}

/// The keys of [`BackendConfig`] shared by every provider.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendCommon {
    name: String,
    schema: String,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    auth: Option<AuthConfig>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_response_timeout_ms")]
    response_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    idle_timeout_ms: u64,
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    default_max_tokens: Option<u32>,
}

const BACKEND_COMMON_KEYS: &[&str] = &[
    "name",
    "schema",
    "base_url",
    "auth",
    "headers",
    "connect_timeout_ms",
    "response_timeout_ms",
    "idle_timeout_ms",
    "ca_file",
    "default_max_tokens",
];

impl BackendConfig {
    /// Splits a `backends` entry into the shared keys (checked here) and the provider's own.
    pub fn from_value(value: Value) -> Result<BackendConfig, String> {
        let Value::Object(mut options) = value else { return Err("a backend must be a JSON object".into()) };
        let mut common = Map::new();
        for key in BACKEND_COMMON_KEYS {
            if let Some(v) = options.remove(*key) {
                common.insert(key.to_string(), v);
            }
        }
        let c: BackendCommon = serde_json::from_value(Value::Object(common)).map_err(|e| e.to_string())?;
        Ok(BackendConfig {
            name: c.name,
            schema: c.schema,
            base_url: c.base_url,
            auth: c.auth,
            headers: c.headers,
            connect_timeout_ms: c.connect_timeout_ms,
            response_timeout_ms: c.response_timeout_ms,
            idle_timeout_ms: c.idle_timeout_ms,
            ca_file: c.ca_file,
            default_max_tokens: c.default_max_tokens,
            options,
        })
    }

    /// The provider's own keys as its options struct (`deny_unknown_fields` there names a stray key).
    pub fn provider_options<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ConfigError> {
        serde_json::from_value(Value::Object(self.options.clone())).map_err(|e| err(path, e.to_string()))
    }

    /// Checks the shared keys' values.
    pub(super) fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(err(format!("{path}.name"), "must not be empty"));
        }
        if let Some(url) = &self.base_url {
            validate_base_url(url).map_err(|m| err(format!("{path}.base_url"), m))?;
        }
        for (name, value) in &self.headers {
            if !valid_header_name(name) || value.contains(['\r', '\n']) {
                return Err(err(format!("{path}.headers.{name}"), "invalid header"));
            }
        }
        for (field, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("response_timeout_ms", self.response_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            check_timeout(&format!("{path}.{field}"), ms)?;
        }
        if self.default_max_tokens == Some(0) {
            return Err(err(format!("{path}.default_max_tokens"), "must be at least 1"));
        }
        if let Some(ca) = &self.ca_file {
            if !std::path::Path::new(ca).is_file() {
                return Err(err(format!("{path}.ca_file"), format!("no file at {ca}")));
            }
        }
        Ok(())
    }
}

/// An `http://` or `https://` URL with a plain authority (no user info, query or fragment in it).
pub fn validate_base_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err("must start with http:// or https://".into());
    }
    let authority = url.split_once("://").map_or("", |(_, r)| r.split('/').next().unwrap_or(""));
    if authority.is_empty() || authority.contains(['@', ' ', '?', '#']) {
        return Err(format!("\"{url}\" is not a valid URL"));
    }
    Ok(())
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_response_timeout_ms() -> u64 {
    600_000
}
fn default_idle_timeout_ms() -> u64 {
    120_000
}

/// A backend's `auth`: how the gateway authenticates to the provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// `Authorization: Bearer <key>`.
    Bearer {
        #[serde(default)]
        key: Option<String>,
        #[serde(default)]
        key_env: Option<String>,
        #[serde(default)]
        key_file: Option<String>,
    },
    /// The key as the value of a header (`name`; Anthropic's default is `x-api-key`).
    Header {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        key: Option<String>,
        #[serde(default)]
        key_env: Option<String>,
        #[serde(default)]
        key_file: Option<String>,
    },
    /// AWS SigV4 (or a Bedrock API key): explicit keys, then AWS's environment variables, then the shared
    /// credentials file.
    Aws(AwsAuthConfig),
    /// A Google service account's JSON key: a signed JWT exchanged for hourly access tokens.
    GcpServiceAccount(GcpServiceAccountConfig),
    /// Microsoft Entra ID client credentials exchanged for hourly access tokens.
    AzureEntra(AzureEntraConfig),
}

/// `"auth": {"type": "gcp_service_account", …}`: where the JSON key file is.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcpServiceAccountConfig {
    /// The key file's path.
    pub credentials_file: Option<String>,
    /// A variable holding the key file's path (like `GOOGLE_APPLICATION_CREDENTIALS`).
    pub credentials_env: Option<String>,
    /// The OAuth scope asked for (default `https://www.googleapis.com/auth/cloud-platform`).
    pub scope: Option<String>,
    /// How long before expiry a token is refreshed (default 300).
    pub refresh_before_secs: Option<u64>,
}

/// `"auth": {"type": "azure_entra", …}`: an app registration's client credentials.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureEntraConfig {
    pub tenant_id: Option<String>,
    pub tenant_id_env: Option<String>,
    pub client_id: Option<String>,
    pub client_id_env: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_env: Option<String>,
    /// The identity platform (default `https://login.microsoftonline.com`; sovereign clouds have others).
    pub authority: Option<String>,
    /// The OAuth scope asked for (default `https://cognitiveservices.azure.com/.default`).
    pub scope: Option<String>,
    /// How long before expiry a token is refreshed (default 300).
    pub refresh_before_secs: Option<u64>,
}

/// `"auth": {"type": "aws", …}`. Every field is optional: what is not set comes from AWS's usual chain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsAuthConfig {
    pub access_key_id: Option<String>,
    pub access_key_id_env: Option<String>,
    pub secret_access_key: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub session_token: Option<String>,
    pub session_token_env: Option<String>,
    /// The shared credentials file's profile (default: `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
}
