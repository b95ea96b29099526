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
    assert_eq!(resolve_with(&AwsAuthConfig::default(), &[("HOME", "/home/u")]), Ok(keys("FILEID", "FILESECRET", None)));
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
    for looked_at in
        ["auth", "AWS_BEARER_TOKEN_BEDROCK", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "/empty/.aws/credentials"]
    {
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
    let err =
        resolve(&AwsAuthConfig::default(), &lookup(&[("HOME", "/h")]), &lookup(&[("/h/.aws/credentials", partial)]))
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
