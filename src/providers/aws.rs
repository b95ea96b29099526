//! AWS request signing (Signature Version 4) and the AWS credential chain, for the Bedrock runtime
//! (service `bedrock`, host `bedrock-runtime.{region}.amazonaws.com`). Sans-IO: the signing time, the
//! environment and the files are passed in; nothing here reads a clock, a variable or a file.

use std::collections::HashMap;
use std::fmt;

use crate::config::AwsAuthConfig;
use crate::digits::hex_bytes as hex;

use ring::{digest, hmac};

/// The algorithm name that opens the string to sign and the Authorization header.
const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Headers `sign` sets itself: a copy of one of them among the caller's headers is not signed.
const OWN_HEADERS: [&str; 5] = ["host", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "authorization"];

/// Headers AWS SDKs leave unsigned (botocore's list) because proxies add, drop or rewrite them.
#[rustfmt::skip]
const UNSIGNED_HEADERS: [&str; 11] = ["connection", "expect", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "x-amzn-trace-id"];

/// The environment variable holding a Bedrock API key, sent as a bearer token instead of signing.
pub const BEARER_TOKEN_VAR: &str = "AWS_BEARER_TOKEN_BEDROCK";

/// An AWS access key pair, with the session token of temporary credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

/// Shows the access key id (an identifier, not a secret) and hides the secret key and the token.
impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Percent-encodes one path segment the way AWS expects in a request path (RFC 3986 unreserved chars
/// A-Za-z0-9-._~ kept, everything else %XX uppercase), e.g. a Bedrock model id
/// `anthropic.claude-3-haiku-20240307-v1:0` → `anthropic.claude-3-haiku-20240307-v1%3A0`, an ARN's `/` → `%2F`.
pub fn encode_path_segment(segment: &str) -> String {
    crate::digits::percent_encode(segment.as_bytes())
}

/// The headers to add to a request so that AWS accepts it: `x-amz-date`, `x-amz-security-token` (when a
/// session token is present), `x-amz-content-sha256` (hex SHA-256 of the payload) and `authorization`.
///
/// `host` is the Host header as sent (with the port when not the scheme's default). `path` is the path
/// exactly as sent on the wire (already percent-encoded once); the canonical URI encodes it again (each
/// segment), as AWS does for every service except S3. `query` is the raw query string without `?` (may be
/// empty). `headers` are the other headers that will be sent: each is signed (name lower-cased, value
/// trimmed, inner whitespace runs collapsed) except the hop-by-hop ones, `user-agent` and
/// `x-amzn-trace-id`, which AWS SDKs leave unsigned because proxies rewrite them, and the headers this
/// function returns. `unix_secs` is the signing time; AWS rejects a signature more than 5 minutes off.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    host: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    payload: &[u8],
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    unix_secs: u64,
) -> Vec<(String, String)> {
    let amz_date = amz_date(unix_secs);
    let payload_hash = sha256_hex(payload);
    let mut signed = vec![("host", host), ("x-amz-date", amz_date.as_str())];
    if let Some(token) = &credentials.session_token {
        signed.push(("x-amz-security-token", token.as_str()));
    }
    signed.push(("x-amz-content-sha256", payload_hash.as_str()));
    signed.extend(headers.iter().copied().filter(|(name, _)| is_signable(name)));
    let parts = RequestParts { method, path, query, headers: &signed, payload_hash: &payload_hash };
    let authorization = signature(&parts, credentials, region, service, &amz_date).authorization;

    let mut added = vec![(String::from("x-amz-date"), amz_date.clone())];
    if let Some(token) = &credentials.session_token {
        added.push((String::from("x-amz-security-token"), token.clone()));
    }
    added.push((String::from("x-amz-content-sha256"), payload_hash.clone()));
    added.push((String::from("authorization"), authorization));
    added
}

/// Whether a caller's header goes into the signature.
fn is_signable(name: &str) -> bool {
    !OWN_HEADERS.iter().chain(UNSIGNED_HEADERS.iter()).any(|h| h.eq_ignore_ascii_case(name.trim()))
}

/// A request reduced to what Signature Version 4 covers.
pub(crate) struct RequestParts<'a> {
    pub method: &'a str,
    /// The path to canonicalise (for `sign`: the path as sent on the wire).
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Every header to sign, `host` and `x-amz-date` included; repeated names allowed.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the payload.
    pub payload_hash: &'a str,
}

/// The three products of signing one request, kept apart so tests can check each against AWS's.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // canonical_request and string_to_sign: read by the tests
pub(crate) struct Signature {
    pub canonical_request: String,
    pub string_to_sign: String,
    pub authorization: String,
}

/// Signs `parts` at `amz_date` (`YYYYMMDD'T'HHMMSS'Z'`).
pub(crate) fn signature(
    parts: &RequestParts,
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Signature {
    let (canonical_request, signed_headers) = canonical_request(parts);
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = string_to_sign(amz_date, &scope, &canonical_request);
    let key = signing_key(&credentials.secret_access_key, date, region, service);
    let signature = hex(hmac_sha256(&key, string_to_sign.as_bytes()).as_ref());
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    );
    Signature { canonical_request, string_to_sign, authorization }
}

/// The canonical request and its signed-headers list (`host;x-amz-date;...`).
pub(crate) fn canonical_request(parts: &RequestParts) -> (String, String) {
    let (headers, signed_headers) = canonical_headers(parts.headers);
    let request = format!(
        "{}\n{}\n{}\n{headers}\n{signed_headers}\n{}",
        parts.method,
        canonical_uri(parts.path),
        canonical_query(parts.query),
        parts.payload_hash
    );
    (request, signed_headers)
}

/// The path with empty and dot segments resolved (as AWS does for every service but S3) and each segment
/// percent-encoded: a path already encoded for the wire is thus encoded a second time.
pub(crate) fn canonical_uri(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let encoded: Vec<String> = segments.iter().map(|s| encode_path_segment(s)).collect();
    let mut uri = format!("/{}", encoded.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        uri.push('/');
    }
    uri
}

/// The query's `key=value` pairs, each side decoded then re-encoded, sorted by key then value.
pub(crate) fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (crate::digits::percent_encode(&percent_decode(key)), crate::digits::percent_encode(&percent_decode(value)))
        })
        .collect();
    pairs.sort();
    let joined: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    joined.join("&")
}

/// `name:value\n` lines sorted by lower-cased name (repeated names joined with `,` in their order) and
/// the `;`-joined names.
fn canonical_headers(headers: &[(&str, &str)]) -> (String, String) {
    let mut lowered: Vec<(String, String)> =
        headers.iter().map(|(name, value)| (name.trim().to_ascii_lowercase(), trim_all(value))).collect();
    lowered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical = String::new();
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in &lowered {
        if names.last() == Some(&name.as_str()) {
            canonical.pop();
            canonical.push(',');
        } else {
            names.push(name);
            canonical.push_str(name);
            canonical.push(':');
        }
        canonical.push_str(value);
        canonical.push('\n');
    }
    (canonical, names.join(";"))
}

/// The value trimmed, with every inner run of whitespace (line folds included) made one space.
fn trim_all(value: &str) -> String {
    value.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// `AWS4-HMAC-SHA256`, the time, the scope and the canonical request's hex SHA-256, one per line.
pub(crate) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// The key for one day, region and service: HMAC chain from `AWS4` + secret over date, region,
/// service and `aws4_request`.
pub(crate) fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(k_date.as_ref(), region.as_bytes());
    let k_service = hmac_sha256(k_region.as_ref(), service.as_bytes());
    hmac_sha256(k_service.as_ref(), b"aws4_request").as_ref().to_vec()
}

/// `YYYYMMDD'T'HHMMSS'Z'` (UTC) of seconds since the Unix epoch.
pub(crate) fn amz_date(unix_secs: u64) -> String {
    let (year, month, day) = civil_from_days(unix_secs / 86_400);
    let secs = unix_secs % 86_400;
    format!("{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The Gregorian (year, month, day) of a count of days since 1970-01-01 (H. Hinnant's civil_from_days,
/// on 400-year eras that start on March 1st).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    (year_of_era + era * 400 + u64::from(month <= 2), month, day)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
}

fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

/// The bytes `%XX` escapes stand for; a `%` not followed by two hex digits stays a literal `%`.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let pair = bytes.get(i + 1..i + 3).filter(|h| bytes[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        match pair.and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// How requests to Bedrock authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum AwsAuth {
    /// Sign each request with `sign`.
    SigV4(AwsCredentials),
    /// A Bedrock API key, sent as `authorization: Bearer …` instead of signing.
    Bearer(String),
}

/// Hides the bearer token (and, through `AwsCredentials`, the secret key and session token).
impl fmt::Debug for AwsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsAuth::SigV4(credentials) => f.debug_tuple("SigV4").field(credentials).finish(),
            AwsAuth::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// Resolves a backend's AWS authentication, in AWS SDKs' order:
/// 1. keys set in `auth` (each inline or through its `_env` variable): a half-configured pair, or an
///    `_env` variable that is unset, is an error rather than a fall-through;
/// 2. `AWS_BEARER_TOKEN_BEDROCK`, unless `auth` sets keys or a `profile` (botocore likewise prefers the
///    bearer token for Bedrock when the variable is set and nothing auth-related is configured in code);
/// 3. `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), unless `auth` sets a
///    `profile` (an explicit profile skips the environment keys, as in botocore);
/// 4. the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `$HOME/.aws/credentials`), profile
///    `auth.profile`, else `AWS_PROFILE`, else `default`.
///
/// Empty variables count as unset. `env` looks a variable up; `read_file` reads a whole file (None when it
/// cannot). The error names what was looked at and never contains a secret.
pub fn resolve(
    config: &AwsAuthConfig,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&str) -> Option<String>,
) -> Result<AwsAuth, String> {
    let env = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(credentials) = from_config(config, &env)? {
        return Ok(AwsAuth::SigV4(credentials));
    }
    if config.profile.is_none() {
        if let Some(token) = env(BEARER_TOKEN_VAR) {
            return Ok(AwsAuth::Bearer(token));
        }
        if let Some(credentials) = from_env(&env)? {
            return Ok(AwsAuth::SigV4(credentials));
        }
    }
    from_file(config, &env, read_file).map(AwsAuth::SigV4)
}

/// Credentials from the keys in `auth`, None when it sets neither key.
fn from_config(config: &AwsAuthConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<AwsCredentials>, String> {
    let id = config_value(config.access_key_id.as_deref(), config.access_key_id_env.as_deref(), "access_key_id", env)?;
    let secret = config_value(
        config.secret_access_key.as_deref(),
        config.secret_access_key_env.as_deref(),
        "secret_access_key",
        env,
    )?;
    let token =
        config_value(config.session_token.as_deref(), config.session_token_env.as_deref(), "session_token", env)?;
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Ok(Some(AwsCredentials { access_key_id, secret_access_key, session_token: token }))
        }
        (None, None) if token.is_some() => {
            Err("auth: session_token needs access_key_id and secret_access_key too".to_string())
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err("auth: access_key_id is set but neither secret_access_key nor _env".to_string()),
        (None, Some(_)) => Err("auth: secret_access_key is set but neither access_key_id nor _env".to_string()),
    }
}

/// One `auth` field, given inline or through the variable its `_env` twin names.
fn config_value(
    inline: Option<&str>,
    var: Option<&str>,
    field: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    match (inline, var) {
        (Some(_), Some(_)) => Err(format!("auth: set only one of {field} and {field}_env")),
        (Some(value), None) => Ok(Some(value.to_string())),
        (None, Some(var)) => env(var).map(Some).ok_or_else(|| format!("auth.{field}_env: variable {var} is unset")),
        (None, None) => Ok(None),
    }
}

/// Credentials from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, None when neither is set.
fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<AwsCredentials>, String> {
    match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Ok(Some(AwsCredentials { access_key_id, secret_access_key, session_token: env("AWS_SESSION_TOKEN") }))
        }
        (None, None) => Ok(None),
        (Some(_), None) => Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".to_string()),
        (None, Some(_)) => Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".to_string()),
    }
}

/// Credentials from the chosen profile of the shared credentials file.
fn from_file(
    config: &AwsAuthConfig,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&str) -> Option<String>,
) -> Result<AwsCredentials, String> {
    let profile = config.profile.clone().or_else(|| env("AWS_PROFILE")).unwrap_or_else(|| "default".into());
    let looked_at = if config.profile.is_some() {
        "auth.profile is set, so the environment keys were skipped".to_string()
    } else {
        format!("auth sets no keys, {BEARER_TOKEN_VAR}, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are unset")
    };
    let home = env("HOME");
    let path = match env("AWS_SHARED_CREDENTIALS_FILE") {
        Some(p) => match (p.strip_prefix("~/"), &home) {
            (Some(rest), Some(home)) => format!("{home}/{rest}"),
            _ => p,
        },
        None => match home {
            Some(home) => format!("{home}/.aws/credentials"),
            None => {
                let file = "no credentials file (AWS_SHARED_CREDENTIALS_FILE and HOME are unset)";
                return Err(format!("no AWS credentials: {looked_at}, and {file}"));
            }
        },
    };
    let Some(text) = read_file(&path) else {
        return Err(format!(
            "no AWS credentials: {looked_at}, and the credentials file {path} (profile [{profile}]) cannot be read"
        ));
    };
    let Some(keys) = ini_section(&text, &profile) else {
        return Err(format!("no AWS credentials: {looked_at}, and {path} has no profile [{profile}]"));
    };
    match (keys.get("aws_access_key_id"), keys.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok(AwsCredentials {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
            session_token: keys.get("aws_session_token").or(keys.get("aws_security_token")).cloned(),
        }),
        _ => Err(format!(
            "profile [{profile}] in {path} needs both aws_access_key_id and aws_secret_access_key ({looked_at})"
        )),
    }
}

/// The `key = value` pairs of section `[name]` of an INI text (keys lower-cased; `#`/`;` comment lines;
/// `:` also accepted as separator; indented continuation lines of a value ignored), None without such a
/// section. A repeated section or key: the last value wins.
fn ini_section(text: &str, name: &str) -> Option<HashMap<String, String>> {
    let mut found: Option<HashMap<String, String>> = None;
    let mut in_section = false;
    let mut key_indent: Option<usize> = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let indent = raw.len() - raw.trim_start().len();
        if key_indent.is_some_and(|k| indent > k) {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = section.trim() == name;
            key_indent = None;
            if in_section && found.is_none() {
                found = Some(HashMap::new());
            }
        } else if let Some(at) = line.find(['=', ':']) {
            key_indent = Some(indent);
            if let (true, Some(keys)) = (in_section, found.as_mut()) {
                keys.insert(line[..at].trim().to_ascii_lowercase(), line[at + 1..].trim().to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests;
