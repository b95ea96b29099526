//! Golden-file tests. For every `<pair>` directory under `tests/fixtures`:
//!
//! * `<case>.request.json` → request translation → `<case>.upstream.json`
//! * `<case>.upstream_response.json` → response translation →
//!   `<case>.response.json` (if `<case>.request.json` exists, its translation
//!   supplies the response options, e.g. the forced JSON tool); a response the
//!   translator refuses (a blocked prompt) is compared as `{"refused": …}`
//! * `<case>.upstream_error.json` (`{"status": N, "body": …}`, plus
//!   `"error_type"` for Bedrock's `x-amzn-ErrorType`) → error translation →
//!   `<case>.error.json`
//! * `<case>.bad_request.json` → a request the translator must reject →
//!   `<case>.rejection.json` (`{"kind", "field", "message"}`)
//! * optional `<case>.options.json`: `{"model", "default_max_tokens",
//!   "created", "response_model", "endpoint"}` (`endpoint`: `embeddings` or
//!   `count_tokens`; by default the pair's chat endpoint)
//!
//! Every pair goes through `translate::Pair`, the interface the gateway uses.
//! Outputs are compared as parsed JSON. Run with `BLESS=1` to (re)write the
//! expected files.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use switchyard::api::Endpoint;
use switchyard::translate::{Pair, RequestOptions, ResponseOptions, TranslateError};

struct CaseOptions {
    request: RequestOptions,
    created: u64,
    response_model: String,
    endpoint: Endpoint,
}

fn case_options(dir: &Path, case: &str, chat: Endpoint) -> CaseOptions {
    let v: Value = fs::read(dir.join(format!("{case}.options.json")))
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("options.json"))
        .unwrap_or(json!({}));
    CaseOptions {
        request: RequestOptions {
            model: v["model"].as_str().map(str::to_string),
            default_max_tokens: v["default_max_tokens"].as_u64().unwrap_or(1024) as u32,
        },
        created: v["created"].as_u64().unwrap_or(1_700_000_000),
        response_model: v["response_model"].as_str().unwrap_or("test-model").to_string(),
        endpoint: match v["endpoint"].as_str() {
            None => chat,
            Some("embeddings") => Endpoint::Embeddings,
            Some("count_tokens") => Endpoint::CountTokens,
            Some(other) => panic!("{case}.options.json: unknown endpoint {other}"),
        },
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Compare `actual` with the expected file; record a failure or bless.
fn check(expected: &Path, actual: &Value, failures: &mut Vec<String>) {
    let bless = std::env::var_os("BLESS").is_some();
    let existing: Option<Value> = fs::read(expected).ok().and_then(|b| serde_json::from_slice(&b).ok());
    if existing.as_ref() == Some(actual) {
        return;
    }
    if bless {
        let mut text = serde_json::to_string_pretty(actual).unwrap();
        text.push('\n');
        fs::write(expected, text).unwrap();
        return;
    }
    failures.push(format!(
        "{}:\n  expected: {}\n  actual:   {}",
        expected.display(),
        existing.map(|v| v.to_string()).unwrap_or_else(|| "<missing>".into()),
        actual
    ));
}

fn rejection_json(e: &TranslateError) -> Value {
    let kind = match e {
        TranslateError::InvalidJson(_) => "invalid_json",
        TranslateError::Invalid { .. } => "invalid",
        TranslateError::Unsupported { .. } => "unsupported",
        TranslateError::Refused { status, code, .. } => {
            return json!({"kind": "refused", "status": status, "code": code, "message": e.to_string()})
        }
    };
    json!({"kind": kind, "field": e.field(), "message": e.to_string()})
}

fn bytes_to_json(b: &[u8], what: &Path) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{}: output is not JSON: {e}", what.display()))
}

/// Runs every case of `tests/fixtures/<dir_name>`; `chat` is the endpoint of cases that name none.
fn run_pair(dir_name: &str, pair: Pair, chat: Endpoint) -> usize {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir_name);
    let mut names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut failures = vec![];
    let mut checked = 0;
    for name in &names {
        if let Some(case) = name.strip_suffix(".request.json") {
            let o = case_options(&dir, case, chat);
            let body = fs::read(dir.join(name)).unwrap();
            let out = pair
                .request(o.endpoint, &body, &o.request, o.created)
                .unwrap_or_else(|e| panic!("{dir_name}/{case}: request rejected: {e}"))
                .body;
            let expected = dir.join(format!("{case}.upstream.json"));
            check(&expected, &bytes_to_json(&out, &expected), &mut failures);
            checked += 1;
        } else if let Some(case) = name.strip_suffix(".upstream_response.json") {
            let o = case_options(&dir, case, chat);
            let body = fs::read(dir.join(name)).unwrap();
            // The request's translation supplies the response options (the forced JSON tool, say).
            let ropts = match fs::read(dir.join(format!("{case}.request.json"))) {
                Ok(req) => pair.request(o.endpoint, &req, &o.request, o.created).unwrap().response,
                Err(_) => ResponseOptions { created: o.created, ..Default::default() },
            };
            let expected = dir.join(format!("{case}.response.json"));
            let actual = match pair.response(o.endpoint, &body, &o.response_model, &ropts) {
                Ok(out) => bytes_to_json(&out, &expected),
                Err(e @ TranslateError::Refused { .. }) => json!({ "refused": rejection_json(&e) }),
                Err(e) => panic!("{dir_name}/{case}: response rejected: {e}"),
            };
            check(&expected, &actual, &mut failures);
            checked += 1;
        } else if let Some(case) = name.strip_suffix(".upstream_error.json") {
            let v = read_json(&dir.join(name));
            let status = v["status"].as_u64().unwrap() as u16;
            let body = match &v["body"] {
                Value::String(s) => s.as_bytes().to_vec(),
                other => serde_json::to_vec(other).unwrap(),
            };
            let out = pair.error(status, v["error_type"].as_str(), &body);
            let expected = dir.join(format!("{case}.error.json"));
            check(&expected, &bytes_to_json(&out, &expected), &mut failures);
            checked += 1;
        } else if let Some(case) = name.strip_suffix(".bad_request.json") {
            let o = case_options(&dir, case, chat);
            let body = fs::read(dir.join(name)).unwrap();
            let err = match pair.request(o.endpoint, &body, &o.request, o.created) {
                Ok(out) => {
                    panic!("{dir_name}/{case}: expected a rejection, got {}", String::from_utf8_lossy(&out.body))
                }
                Err(e) => e,
            };
            check(&dir.join(format!("{case}.rejection.json")), &rejection_json(&err), &mut failures);
            checked += 1;
        }
    }
    assert!(failures.is_empty(), "{} golden mismatches (BLESS=1 to rewrite):\n{}", failures.len(), failures.join("\n"));
    checked
}

#[test]
fn golden_openai_client_to_anthropic_upstream() {
    let n = run_pair("openai_anthropic", Pair::OpenAiAnthropic, Endpoint::ChatCompletions);
    assert!(n >= 20, "only {n} golden checks ran");
}

#[test]
fn golden_anthropic_client_to_openai_upstream() {
    let n = run_pair("anthropic_openai", Pair::AnthropicOpenAi, Endpoint::Messages);
    assert!(n >= 20, "only {n} golden checks ran");
}

#[test]
fn golden_openai_client_to_converse_upstream() {
    let n = run_pair("openai_converse", Pair::OpenAiConverse, Endpoint::ChatCompletions);
    assert!(n >= 20, "only {n} golden checks ran");
}

#[test]
fn golden_anthropic_client_to_converse_upstream() {
    let n = run_pair("anthropic_converse", Pair::AnthropicConverse, Endpoint::Messages);
    assert!(n >= 20, "only {n} golden checks ran");
}

#[test]
fn golden_openai_client_to_gemini_upstream() {
    let n = run_pair("openai_gemini", Pair::OpenAiGemini, Endpoint::ChatCompletions);
    assert!(n >= 20, "only {n} golden checks ran");
}

#[test]
fn golden_anthropic_client_to_gemini_upstream() {
    let n = run_pair("anthropic_gemini", Pair::AnthropicGemini, Endpoint::Messages);
    assert!(n >= 20, "only {n} golden checks ran");
}

#[test]
fn golden_responses_client_to_openai_chat_upstream() {
    let n = run_pair("responses_openai", Pair::ResponsesOpenAi, Endpoint::Responses);
    assert!(n >= 20, "only {n} golden checks ran");
}

#[test]
fn golden_responses_client_to_anthropic_upstream_through_chat() {
    let n = run_pair("responses_anthropic", Pair::ResponsesVia(switchyard::api::Api::Anthropic), Endpoint::Responses);
    assert!(n >= 8, "only {n} golden checks ran");
}

#[test]
fn golden_responses_client_to_converse_upstream_through_chat() {
    let n = run_pair("responses_converse", Pair::ResponsesVia(switchyard::api::Api::Converse), Endpoint::Responses);
    assert!(n >= 3, "only {n} golden checks ran");
}
