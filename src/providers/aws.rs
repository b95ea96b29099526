//! AWS request signing (Signature Version 4) and the AWS credential chain, for the Bedrock runtime
//! (service `bedrock`, host `bedrock-runtime.{region}.amazonaws.com`). Sans-IO: the signing time, the
//! environment and the files are passed in; nothing here reads a clock, a variable or a file.

use std::collections::HashMap;
use std::fmt;

use crate::config::AwsAuthConfig;

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
    uri_encode(segment.as_bytes())
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
            (uri_encode(&percent_decode(key)), uri_encode(&percent_decode(value)))
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

/// Lower-case hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]).collect()
}

/// RFC 3986 encoding: unreserved bytes kept, every other byte `%XX` in upper-case hex.
fn uri_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.extend(['%', DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 15)] as char]);
        }
    }
    out
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
mod tests {
    use super::*;
    use std::path::PathBuf;

    const SUITE_TIME: u64 = 1_440_938_160; // 20150830T123600Z

    fn suite_credentials() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    /// A `.req` file of the suite: method, path, query, headers (folded lines joined with `\n`), body.
    struct SuiteRequest {
        method: String,
        path: String,
        query: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    fn parse_req(text: &str) -> SuiteRequest {
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let (method, rest) = request_line.split_once(' ').unwrap();
        let (target, _version) = rest.rsplit_once(' ').unwrap();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().unwrap();
                last.1 = format!("{}\n{line}", last.1);
            } else {
                let (name, value) = line.split_once(':').unwrap();
                headers.push((name.to_string(), value.to_string()));
            }
        }
        SuiteRequest { method: method.into(), path: path.into(), query: query.into(), headers, body: body.into() }
    }

    /// Signs one case of tests/fixtures/sigv4 and returns the mismatches against the suite's files.
    fn check_suite_case(dir: &std::path::Path) -> Vec<String> {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let read = |ext: &str| std::fs::read_to_string(dir.join(format!("{case}.{ext}"))).unwrap();
        let mut request = parse_req(&read("req"));
        if let Ok(token) = std::fs::read_to_string(dir.join("session-token")) {
            request.headers.push(("X-Amz-Security-Token".into(), token));
        }
        let headers: Vec<(&str, &str)> = request.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let payload_hash = sha256_hex(request.body.as_bytes());
        let parts = RequestParts {
            method: &request.method,
            path: &request.path,
            query: &request.query,
            headers: &headers,
            payload_hash: &payload_hash,
        };
        let signed = signature(&parts, &suite_credentials(), "us-east-1", "service", &amz_date(SUITE_TIME));
        let mut failures = Vec::new();
        for (what, got, want) in [
            ("canonical request", &signed.canonical_request, read("creq")),
            ("string to sign", &signed.string_to_sign, read("sts")),
            ("authorization", &signed.authorization, read("authz")),
        ] {
            if *got != want {
                failures.push(format!("{case}: {what}\n got: {got:?}\nwant: {want:?}"));
            }
        }
        failures
    }

    #[test]
    fn every_copied_aws_suite_case_gives_aws_canonical_request_string_to_sign_and_authorization() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sigv4");
        let mut dirs: Vec<PathBuf> =
            std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        dirs.sort();
        assert_eq!(dirs.len(), 34, "cases copied from the suite");
        let failures: Vec<String> = dirs.iter().flat_map(|d| check_suite_case(d)).collect();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn signing_key_matches_aws_documented_derivation_example() {
        let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
        assert_eq!(hex(&key), "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
    }

    #[test]
    fn amz_date_formats_utc_across_epoch_leap_days_and_century_rules() {
        for (secs, want) in [
            (0, "19700101T000000Z"),
            (951_782_400, "20000229T000000Z"),
            (SUITE_TIME, "20150830T123600Z"),
            (1_709_164_800, "20240229T000000Z"),
            (4_107_542_399, "21000228T235959Z"),
            (4_107_542_400, "21000301T000000Z"),
            (253_402_300_799, "99991231T235959Z"),
        ] {
            assert_eq!(amz_date(secs), want, "{secs}");
        }
    }

    #[test]
    fn path_segment_encoding_keeps_unreserved_and_escapes_colon_slash_and_utf8() {
        assert_eq!(
            encode_path_segment("anthropic.claude-3-haiku-20240307-v1:0"),
            "anthropic.claude-3-haiku-20240307-v1%3A0"
        );
        assert_eq!(encode_path_segment("a/b c~_-.ሴ%"), "a%2Fb%20c~_-.%E1%88%B4%25");
    }

    const ARN: &str =
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0";

    #[test]
    fn bedrock_paths_are_encoded_a_second_time_in_the_canonical_uri() {
        let model_path = format!("/model/{}/converse", encode_path_segment("anthropic.claude-3-haiku-20240307-v1:0"));
        assert_eq!(model_path, "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse");
        assert_eq!(canonical_uri(&model_path), "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse");
        let arn_path = format!("/model/{}/converse-stream", encode_path_segment(ARN));
        assert_eq!(
            canonical_uri(&arn_path),
            "/model/arn%253Aaws%253Abedrock%253Aus-east-1%253A123456789012%253Ainference-profile%252F\
             us.anthropic.claude-3-5-sonnet-20241022-v2%253A0/converse-stream"
        );
    }

    #[test]
    fn canonical_query_normalises_escapes_and_sorts_by_key_then_value() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=%e1%88%b4&a=1&c"), "a=%E1%88%B4&a=1&b=2&c=");
        assert_eq!(canonical_query("x=a+b%20c&y=%zz&z=%+1"), "x=a%2Bb%20c&y=%25zz&z=%25%2B1");
    }

    fn bedrock_request(credentials: &AwsCredentials) -> Vec<(String, String)> {
        let path = format!("/model/{}/converse", encode_path_segment(ARN));
        let headers = [("Content-Type", "application/json"), ("User-Agent", "switchyard"), ("Host", "ignored")];
        sign(
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            &path,
            "",
            &headers,
            br#"{"messages":[]}"#,
            credentials,
            "us-east-1",
            "bedrock",
            SUITE_TIME,
        )
    }

    #[test]
    fn sign_returns_date_token_payload_hash_and_the_authorization_botocore_computes() {
        let mut credentials = suite_credentials();
        credentials.session_token = Some("TOKEN".into());
        let added = bedrock_request(&credentials);
        let names: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "authorization"]);
        assert_eq!(added[0].1, "20150830T123600Z");
        assert_eq!(added[1].1, "TOKEN");
        assert_eq!(added[2].1, sha256_hex(br#"{"messages":[]}"#));
        assert!(added[3].1.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, \
             SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="
        ));
        // What botocore's SigV4Auth gives for this request (tests/sdk/sigv4_botocore.py, botocore 1.44.8).
        assert!(added[3].1.ends_with("Signature=8fb55be4d39afafff0388976f4a05e942efbb2a0ec8e42bde44004ae5db76bbd"));
        let without_token = bedrock_request(&suite_credentials());
        assert_eq!(without_token.len(), 3);
        assert!(without_token[2].1.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,"));
    }

    #[test]
    fn sign_leaves_user_agent_hop_by_hop_and_its_own_headers_out_of_the_signature() {
        let headers = [("connection", "close"), ("user-agent", "x"), ("x-amz-date", "old"), ("authorization", "a")];
        let added = sign("POST", "h", "/", "", &headers, b"", &suite_credentials(), "r", "s", SUITE_TIME);
        assert!(added[2].1.contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date,"), "{}", added[2].1);
    }

    #[test]
    fn debug_shows_the_key_id_but_never_the_secret_or_tokens() {
        let credentials = AwsCredentials {
            access_key_id: "AKIDSHOWN".into(),
            secret_access_key: "SECRETVALUE".into(),
            session_token: Some("TOKENVALUE".into()),
        };
        let shown = format!(
            "{credentials:?} {:?} {:?}",
            AwsAuth::SigV4(credentials.clone()),
            AwsAuth::Bearer("BEARERVALUE".into())
        );
        assert!(shown.contains("AKIDSHOWN"), "{shown}");
        for secret in ["SECRETVALUE", "TOKENVALUE", "BEARERVALUE"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    // The credential chain.

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |key: &str| map.get(key).cloned()
    }

    fn keys(id: &str, secret: &str, token: Option<&str>) -> AwsAuth {
        AwsAuth::SigV4(AwsCredentials {
            access_key_id: id.into(),
            secret_access_key: secret.into(),
            session_token: token.map(str::to_string),
        })
    }

    const FILE: &str = "# shared credentials\n\
        [default]\n\
        aws_access_key_id = FILEID\n\
        aws_secret_access_key = FILESECRET\n\
        \n\
        ; another\n\
        [  work  ]\n\
        \tAWS_ACCESS_KEY_ID=WORKID\n\
        \taws_secret_access_key:WORKSECRET\n\
        \taws_session_token = WORKTOKEN\n\
        s3 =\n    max_concurrent_requests = 10\n";

    /// Everything the chain can find: inline-able env keys, bearer token, env keys, and the file.
    const FULL_ENV: &[(&str, &str)] = &[
        ("MY_ID", "MYID"),
        ("MY_SECRET", "MYSECRET"),
        ("MY_TOKEN", "MYTOKEN"),
        ("AWS_BEARER_TOKEN_BEDROCK", "BEARER"),
        ("AWS_ACCESS_KEY_ID", "ENVID"),
        ("AWS_SECRET_ACCESS_KEY", "ENVSECRET"),
        ("AWS_SESSION_TOKEN", "ENVTOKEN"),
        ("HOME", "/home/u"),
    ];

    fn resolve_with(config: &AwsAuthConfig, vars: &[(&str, &str)]) -> Result<AwsAuth, String> {
        resolve(config, &lookup(vars), &lookup(&[("/home/u/.aws/credentials", FILE), ("/etc/aws", FILE)]))
    }

    #[test]
    fn inline_auth_keys_come_first() {
        let config = AwsAuthConfig {
            access_key_id: Some("INLINEID".into()),
            secret_access_key: Some("INLINESECRET".into()),
            ..Default::default()
        };
        assert_eq!(resolve_with(&config, FULL_ENV), Ok(keys("INLINEID", "INLINESECRET", None)));
    }

    #[test]
    fn auth_env_fields_read_the_variables_they_name() {
        let config = AwsAuthConfig {
            access_key_id_env: Some("MY_ID".into()),
            secret_access_key_env: Some("MY_SECRET".into()),
            session_token_env: Some("MY_TOKEN".into()),
            ..Default::default()
        };
        assert_eq!(resolve_with(&config, FULL_ENV), Ok(keys("MYID", "MYSECRET", Some("MYTOKEN"))));
    }

    #[test]
    fn auth_errors_name_the_field_or_variable_and_never_a_value() {
        let cases: [(AwsAuthConfig, &str); 5] = [
            (
                AwsAuthConfig {
                    access_key_id_env: Some("NOPE".into()),
                    secret_access_key: Some("S1".into()),
                    ..Default::default()
                },
                "variable NOPE is unset",
            ),
            (AwsAuthConfig { access_key_id: Some("ID1".into()), ..Default::default() }, "secret_access_key"),
            (AwsAuthConfig { secret_access_key: Some("S1".into()), ..Default::default() }, "access_key_id"),
            (AwsAuthConfig { session_token: Some("T1".into()), ..Default::default() }, "session_token needs"),
            (
                AwsAuthConfig {
                    access_key_id: Some("ID1".into()),
                    access_key_id_env: Some("MY_ID".into()),
                    secret_access_key: Some("S1".into()),
                    ..Default::default()
                },
                "only one of access_key_id and access_key_id_env",
            ),
        ];
        for (config, wanted) in cases {
            let err = resolve_with(&config, FULL_ENV).unwrap_err();
            assert!(err.contains(wanted), "{err}");
            for value in ["ID1", "S1", "T1", "MYID", "BEARER", "ENVSECRET", "FILESECRET"] {
                assert!(!err.contains(value), "{err}");
            }
        }
    }

    #[test]
    fn bearer_token_comes_next_when_auth_sets_no_keys_nor_profile() {
        assert_eq!(resolve_with(&AwsAuthConfig::default(), FULL_ENV), Ok(AwsAuth::Bearer("BEARER".into())));
    }

    #[test]
    fn environment_keys_come_after_the_bearer_token_with_their_session_token() {
        let vars: Vec<_> = FULL_ENV.iter().copied().filter(|(k, _)| *k != BEARER_TOKEN_VAR).collect();
        assert_eq!(resolve_with(&AwsAuthConfig::default(), &vars), Ok(keys("ENVID", "ENVSECRET", Some("ENVTOKEN"))));
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let vars = [("AWS_BEARER_TOKEN_BEDROCK", ""), ("AWS_ACCESS_KEY_ID", ""), ("HOME", "/home/u")];
        assert_eq!(resolve_with(&AwsAuthConfig::default(), &vars), Ok(keys("FILEID", "FILESECRET", None)));
    }

    #[test]
    fn half_set_environment_keys_are_an_error_naming_the_missing_variable() {
        let err = resolve_with(&AwsAuthConfig::default(), &[("AWS_ACCESS_KEY_ID", "ENVID"), ("HOME", "/home/u")]);
        assert_eq!(err, Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into()));
    }

    #[test]
    fn credentials_file_default_profile_comes_last() {
        assert_eq!(
            resolve_with(&AwsAuthConfig::default(), &[("HOME", "/home/u")]),
            Ok(keys("FILEID", "FILESECRET", None))
        );
    }

    #[test]
    fn aws_profile_selects_a_section_with_its_session_token() {
        let vars = [("HOME", "/home/u"), ("AWS_PROFILE", "work")];
        assert_eq!(resolve_with(&AwsAuthConfig::default(), &vars), Ok(keys("WORKID", "WORKSECRET", Some("WORKTOKEN"))));
    }

    #[test]
    fn auth_profile_beats_aws_profile_and_skips_bearer_and_environment_keys() {
        let mut vars = FULL_ENV.to_vec();
        vars.push(("AWS_PROFILE", "other"));
        let config = AwsAuthConfig { profile: Some("work".into()), ..Default::default() };
        assert_eq!(resolve_with(&config, &vars), Ok(keys("WORKID", "WORKSECRET", Some("WORKTOKEN"))));
    }

    #[test]
    fn aws_shared_credentials_file_overrides_home_and_expands_tilde() {
        let vars = [("HOME", "/nowhere"), ("AWS_SHARED_CREDENTIALS_FILE", "/etc/aws")];
        assert_eq!(resolve_with(&AwsAuthConfig::default(), &vars), Ok(keys("FILEID", "FILESECRET", None)));
        let vars = [("HOME", "/home/u"), ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")];
        assert_eq!(resolve_with(&AwsAuthConfig::default(), &vars), Ok(keys("FILEID", "FILESECRET", None)));
    }

    #[test]
    fn nothing_found_names_every_place_looked_at() {
        let err = resolve_with(&AwsAuthConfig::default(), &[("HOME", "/empty")]).unwrap_err();
        for looked_at in [
            "auth",
            "AWS_BEARER_TOKEN_BEDROCK",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "/empty/.aws/credentials",
        ] {
            assert!(err.contains(looked_at), "{err}");
        }
        let err = resolve_with(&AwsAuthConfig::default(), &[]).unwrap_err();
        assert!(err.contains("AWS_SHARED_CREDENTIALS_FILE and HOME are unset"), "{err}");
    }

    #[test]
    fn missing_or_incomplete_profile_errors_name_profile_and_file_without_values() {
        let config = AwsAuthConfig { profile: Some("absent".into()), ..Default::default() };
        let err = resolve_with(&config, FULL_ENV).unwrap_err();
        assert!(err.contains("/home/u/.aws/credentials has no profile [absent]"), "{err}");
        let partial = "[default]\naws_access_key_id = PARTID\n";
        let err = resolve(
            &AwsAuthConfig::default(),
            &lookup(&[("HOME", "/h")]),
            &lookup(&[("/h/.aws/credentials", partial)]),
        )
        .unwrap_err();
        assert!(err.contains("profile [default] in /h/.aws/credentials needs both"), "{err}");
        assert!(!err.contains("PARTID"), "{err}");
    }

    #[test]
    fn ini_parser_handles_comments_spacing_case_separators_and_continuations() {
        let work = ini_section(FILE, "work").unwrap();
        assert_eq!(work.get("aws_access_key_id").map(String::as_str), Some("WORKID"));
        assert_eq!(work.get("aws_secret_access_key").map(String::as_str), Some("WORKSECRET"));
        assert_eq!(work.get("s3").map(String::as_str), Some(""));
        assert!(!work.contains_key("max_concurrent_requests"));
        assert!(ini_section(FILE, "nope").is_none());
        let repeated = ini_section("[a]\nk = 1\n[b]\nk = 2\n[a]\nk = 3\n", "a").unwrap();
        assert_eq!(repeated.get("k").map(String::as_str), Some("3"));
    }
}
