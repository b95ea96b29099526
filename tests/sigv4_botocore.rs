//! `switchyard::providers::aws::sign` against botocore's `SigV4Auth` (tests/sdk/sigv4_botocore.py) for
//! Bedrock-shaped requests: model ids with `:` and full ARNs in the path, with and without a session token.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use switchyard::providers::aws::{encode_path_segment, sign, AwsCredentials};

/// One request to sign both ways.
struct Case {
    model: &'static str,
    action: &'static str,
    query: &'static str,
    region: &'static str,
    token: Option<&'static str>,
    unix_secs: u64,
    amz_date: &'static str,
    body: &'static str,
}

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1:0";
const PROFILE_ARN: &str =
    "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0";
const MODEL_ARN: &str = "arn:aws:bedrock:eu-west-3::foundation-model/mistral.mistral-large-2402-v1:0";
const TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+token/with=signs";

const CASES: [Case; 6] = [
    Case {
        model: HAIKU,
        action: "converse",
        query: "",
        region: "us-east-1",
        token: None,
        unix_secs: 1_440_938_160,
        amz_date: "20150830T123600Z",
        body: r#"{"messages":[{"role":"user","content":[{"text":"Hello"}]}]}"#,
    },
    Case {
        model: HAIKU,
        action: "converse-stream",
        query: "",
        region: "us-west-2",
        token: Some(TOKEN),
        unix_secs: 1_709_164_800,
        amz_date: "20240229T000000Z",
        body: r#"{"messages":[{"role":"user","content":[{"text":"héllo ✓"}]}]}"#,
    },
    Case {
        model: PROFILE_ARN,
        action: "converse",
        query: "",
        region: "us-east-1",
        token: None,
        unix_secs: 1_735_689_599,
        amz_date: "20241231T235959Z",
        body: r#"{"messages":[],"inferenceConfig":{"maxTokens":10}}"#,
    },
    Case {
        model: PROFILE_ARN,
        action: "converse-stream",
        query: "",
        region: "us-east-1",
        token: Some(TOKEN),
        unix_secs: 1_752_000_000,
        amz_date: "20250708T184000Z",
        body: "{}",
    },
    Case {
        model: MODEL_ARN,
        action: "invoke",
        query: "",
        region: "eu-west-3",
        token: Some(TOKEN),
        unix_secs: 1_752_000_000,
        amz_date: "20250708T184000Z",
        body: "",
    },
    Case {
        model: HAIKU,
        action: "converse",
        query: "b=2&a=1",
        region: "ap-northeast-1",
        token: None,
        unix_secs: 1_752_000_000,
        amz_date: "20250708T184000Z",
        body: "{}",
    },
];

const HEADERS: [(&str, &str); 2] = [("content-type", "application/json"), ("accept", "application/json")];

fn credentials(token: Option<&str>) -> AwsCredentials {
    AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: token.map(str::to_string),
    }
}

fn host(case: &Case) -> String {
    format!("bedrock-runtime.{}.amazonaws.com", case.region)
}

fn path(case: &Case) -> String {
    format!("/model/{}/{}", encode_path_segment(case.model), case.action)
}

/// The Authorization header switchyard computes.
fn ours(case: &Case) -> String {
    let added = sign(
        "POST",
        &host(case),
        &path(case),
        case.query,
        &HEADERS,
        case.body.as_bytes(),
        &credentials(case.token),
        case.region,
        "bedrock",
        case.unix_secs,
    );
    assert_eq!(added.iter().find(|(n, _)| n == "x-amz-date").map(|(_, v)| v.as_str()), Some(case.amz_date));
    added.into_iter().find(|(name, _)| name == "authorization").map(|(_, value)| value).unwrap()
}

/// The Authorization headers botocore computes for all cases.
fn botocore(cases: &[Case]) -> Vec<String> {
    let input: Vec<Value> = cases
        .iter()
        .map(|case| {
            let credentials = credentials(case.token);
            json!({
                "method": "POST", "host": host(case), "path": path(case), "query": case.query,
                "headers": HEADERS, "body": case.body, "content_sha256": true,
                "access_key_id": credentials.access_key_id, "secret_access_key": credentials.secret_access_key,
                "session_token": credentials.session_token, "region": case.region, "service": "bedrock",
                "amz_date": case.amz_date,
            })
        })
        .collect();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/sigv4_botocore.py");
    let mut child = Command::new(common::sdk_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(&input).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sigv4_botocore.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn bedrock_signatures_equal_botocore_for_model_ids_and_arns_with_and_without_session_token() {
    let theirs = botocore(&CASES);
    assert_eq!(theirs.len(), CASES.len());
    for (case, theirs) in CASES.iter().zip(theirs) {
        assert_eq!(ours(case), theirs, "{} {} (token: {})", case.model, case.action, case.token.is_some());
    }
}
