//! Observability over real sockets: the Prometheus scrape after scripted traffic, label cardinality,
//! the access log line, OTLP traces decoded by a real receiver (the official OpenTelemetry protobuf
//! definitions, tests/sdk/otlp_receiver.py), the admin listener and `/ready` during a drain.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---- Prometheus text ----

/// One sample: its labels and value.
#[derive(Debug, Clone)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of `name` (exactly: `name{…} v` or `name v`).
fn samples(text: &str, name: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        let (labels, value) = if let Some(body) = rest.strip_prefix('{') {
            let end = body.rfind('}').unwrap();
            (parse_labels(&body[..end]), body[end + 1..].trim())
        } else if rest.starts_with(' ') {
            (BTreeMap::new(), rest.trim())
        } else {
            continue;
        };
        out.push(Sample { labels, value: value.parse().unwrap_or_else(|_| panic!("bad value in {line}")) });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let eq = rest.find("=\"").unwrap();
        let key = rest[..eq].to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = 0;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    let (_, n) = chars.next().unwrap();
                    value.push(if n == 'n' { '\n' } else { n });
                }
                '"' => {
                    end = eq + 2 + i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = rest[end..].trim_start_matches(',');
    }
    out
}

/// The one sample of `name` whose labels include all of `want` (panics if not exactly one).
fn one(text: &str, name: &str, want: &[(&str, &str)]) -> Sample {
    let found: Vec<Sample> = samples(text, name)
        .into_iter()
        .filter(|s| want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {want:?}: {found:?}\n{text}");
    found.into_iter().next().unwrap()
}

fn scrape(addr: SocketAddr, headers: &[(&str, &str)]) -> String {
    let r = get(addr, "/metrics", headers);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

const KEY_A: (&str, &str) = ("authorization", "Bearer key-a");

fn team_config(up: &FakeUpstream) -> Value {
    let mut cfg = config_for(up);
    cfg["clients"] = json!([{"name": "team-a", "key": "key-a"}]);
    cfg
}

#[test]
fn a_scrape_after_known_traffic_has_exact_counts_and_a_ttft_bucket_that_fits_the_upstream_delay() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&team_config(&up));
    for _ in 0..3 {
        assert_eq!(post(gw.addr, "/v1/chat/completions", &[KEY_A], &chat("fake-1")).status, 200);
    }
    // A stream whose first byte the upstream holds back 300 ms; the client measures when it sees the
    // first content event.
    let mut s = connect(gw.addr);
    let body = json!({"model": "fake-1", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let sent = Instant::now();
    post_raw(
        &mut s,
        "/v1/chat/completions",
        &[KEY_A, ("x-fake-mode", "sse"), ("x-fake-events", "3"), ("x-fake-head-delay-ms", "300")],
        &serde_json::to_vec(&body).unwrap(),
    );
    let mut reader = BufReader::new(s);
    assert_eq!(read_head(&mut reader).0, 200);
    let mut client_ttft = None;
    while let Some(chunk) = read_chunk(&mut reader) {
        if client_ttft.is_none() && String::from_utf8_lossy(&chunk).contains("tok0") {
            client_ttft = Some(sent.elapsed().as_secs_f64());
        }
    }
    let client_ttft = client_ttft.expect("a content event");
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[KEY_A], &chat("no-such-model")).status, 404);
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[KEY_A, ("x-fake-status", "500")], &chat("fake-1")).status, 500);

    // Metrics are recorded as each response ends; the last may land a moment after the client saw it.
    let done = || {
        let t = scrape(gw.addr, &[]);
        samples(&t, "switchyard_requests_total")
            .iter()
            .filter(|s| s.labels["client"] == "team-a")
            .map(|s| s.value)
            .sum::<f64>()
            == 6.0
    };
    assert!(eventually(Duration::from_secs(3), done));
    let text = scrape(gw.addr, &[]);
    let base = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "openai"),
        ("gen_ai_request_model", "fake-1"),
        ("gen_ai_original_model", "fake-1"),
        ("client", "team-a"),
        ("backend", "fake"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        base.iter().chain(extra.iter()).copied().collect()
    };
    // Three JSON answers (the fake echoes the model) …
    let json_series = with(&[("gen_ai_response_model", "fake-1")]);
    let count = |name: &str, want: &[(&str, &str)]| {
        samples(&text, name)
            .into_iter()
            .filter(|s| !s.labels.contains_key("error_type"))
            .filter(|s| want.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
            .sum::<f64>()
    };
    assert_eq!(count("gen_ai_server_request_duration_seconds_count", &json_series), 3.0);
    let tokens = |series: &[(&str, &str)], kind: &'static str| {
        let mut want = series.to_vec();
        want.push(("gen_ai_token_type", kind));
        one(&text, "gen_ai_client_token_usage_sum", &want).value
    };
    assert_eq!(tokens(&json_series, "input"), 15.0);
    assert_eq!(tokens(&json_series, "output"), 6.0);
    let mut want = json_series.clone();
    want.extend([("gen_ai_token_type", "input"), ("le", "4")]);
    assert_eq!(one(&text, "gen_ai_client_token_usage_bucket", &want).value, 0.0, "5 input tokens are above 4");
    want.pop();
    want.push(("le", "16"));
    assert_eq!(one(&text, "gen_ai_client_token_usage_bucket", &want).value, 3.0);
    assert_eq!(count("gen_ai_server_time_to_first_token_seconds_count", &json_series), 0.0, "no TTFT without a stream");

    // … and one stream (the fake's chunks name "fake-model").
    let stream_series = with(&[("gen_ai_response_model", "fake-model")]);
    assert_eq!(count("gen_ai_server_request_duration_seconds_count", &stream_series), 1.0);
    assert_eq!(tokens(&stream_series, "input"), 5.0);
    assert_eq!(tokens(&stream_series, "output"), 3.0);
    let ttft = one(&text, "gen_ai_server_time_to_first_token_seconds_sum", &stream_series).value;
    assert!(ttft >= 0.3 && ttft <= client_ttft, "gateway TTFT {ttft} outside [0.3, client's {client_ttft}]");
    // The buckets agree: none at or below 0.25 s (the upstream waited 0.3 s), all at the first bound
    // that covers what the client measured.
    let bucket = |le: &str| {
        let mut want = stream_series.clone();
        want.push(("le", le));
        one(&text, "gen_ai_server_time_to_first_token_seconds_bucket", &want).value
    };
    assert_eq!(bucket("0.25"), 0.0);
    let bounds = ["0.5", "0.75", "1", "2.5", "5", "7.5", "10"];
    let covering = bounds.iter().find(|b| b.parse::<f64>().unwrap() >= client_ttft).unwrap();
    assert_eq!(bucket(covering), 1.0, "TTFT bucket le={covering} (client saw {client_ttft})");
    assert_eq!(bucket("+Inf"), 1.0);
    let duration = one(&text, "gen_ai_server_request_duration_seconds_sum", &stream_series).value;
    assert!(duration >= ttft);
    assert_eq!(one(&text, "gen_ai_server_time_per_output_token_seconds_count", &stream_series).value, 1.0);

    // The unknown model: one overflow value, no provider, the error type.
    let unknown = one(
        &text,
        "gen_ai_server_request_duration_seconds_count",
        &[("gen_ai_request_model", "_OTHER"), ("client", "team-a"), ("error_type", "model_not_found")],
    );
    assert_eq!(unknown.value, 1.0);
    assert_eq!(unknown.labels["gen_ai_provider_name"], "");
    // The upstream's 500: error.type is its status.
    let failed = one(
        &text,
        "gen_ai_server_request_duration_seconds_count",
        &[("gen_ai_request_model", "fake-1"), ("client", "team-a"), ("error_type", "500")],
    );
    assert_eq!(failed.value, 1.0);

    let requests = |class: &str, error: &str| {
        one(&text, "switchyard_requests_total", &[("client", "team-a"), ("status_class", class), ("error_type", error)])
            .value
    };
    assert_eq!(requests("2xx", ""), 4.0);
    assert_eq!(requests("4xx", "model_not_found"), 1.0);
    assert_eq!(requests("5xx", "500"), 1.0);
    assert_eq!(one(&text, "switchyard_config_generation", &[]).value, 1.0);
    assert!(one(&text, "switchyard_open_connections", &[]).value >= 1.0);
    assert!(one(&text, "switchyard_requests_in_flight", &[]).value >= 1.0, "the scrape itself is in flight");
}

#[test]
fn label_cardinality_stays_bounded_when_clients_send_10000_distinct_unknown_models() {
    let cfg = json!({
        "backends": [{"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 1}],
        "routes": [{"model": "known", "backends": [{"backend": "demo"}]},
                   {"model": "pat-*", "backends": [{"backend": "demo"}]}],
        "metrics": {"max_models": 20},
        "access_log": "off"
    });
    let gw = Gateway::start(&cfg);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let addr = gw.addr;
            std::thread::spawn(move || {
                let mut s = connect(addr);
                // Head and body go in two writes: without this, Nagle holds the body for a delayed ACK.
                s.set_nodelay(true).unwrap();
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut statuses = BTreeMap::new();
                for i in 0..2500 {
                    // Half match the `pat-*` route, half match no route at all.
                    let model = if i % 2 == 0 { format!("pat-{t}-{i}") } else { format!("unknown-{t}-{i}") };
                    post_raw(&mut s, "/v1/chat/completions", &[], &serde_json::to_vec(&chat(&model)).unwrap());
                    *statuses.entry(read_response(&mut reader).status).or_insert(0) += 1;
                }
                statuses
            })
        })
        .collect();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    for t in threads {
        for (k, v) in t.join().unwrap() {
            *statuses.entry(k).or_insert(0) += v;
        }
    }
    assert_eq!(statuses, BTreeMap::from([(200, 5000), (404, 5000)]));
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("known")).status, 200);
    let total = || {
        samples(&scrape(gw.addr, &[]), "gen_ai_server_request_duration_seconds_count")
            .iter()
            .map(|s| s.value)
            .sum::<f64>()
    };
    assert!(eventually(Duration::from_secs(3), || total() == 10_001.0), "{}", total());
    let text = scrape(gw.addr, &[]);
    let series = samples(&text, "gen_ai_server_request_duration_seconds_count");
    let models: std::collections::BTreeSet<&str> =
        series.iter().map(|s| s.labels["gen_ai_request_model"].as_str()).collect();
    // 20 pattern-matched names at most, the exact route name, and the overflow value.
    assert!(models.contains("_OTHER") && models.contains("known"), "{models:?}");
    assert!(models.len() <= 22, "{} request model values: {models:?}", models.len());
    let responses: std::collections::BTreeSet<&str> =
        series.iter().map(|s| s.labels["gen_ai_response_model"].as_str()).collect();
    // The same names, plus the empty value of requests no upstream answered.
    assert!(responses.len() <= 23, "{} response model values: {responses:?}", responses.len());
    assert!(series.len() <= 60, "{} series", series.len());
    // Unbounded, 10,000 models would make at least 10,000 × 50 lines.
    assert!(text.lines().count() < 5_000, "the scrape has {} lines", text.lines().count());
}

// ---- Access log ----

/// Reads the JSON lines of an access log file.
/// An exact route's model name is its own label, however long; the same name as the model an answer
/// names is capped like any answer's model (longer than 200 bytes: `_OTHER`).
#[test]
fn a_long_exact_model_name_labels_the_request_and_overflows_as_the_answers_model() {
    let long = "m".repeat(250);
    let cfg = json!({
        "backends": [{"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 1}],
        "routes": [{"model": long, "backends": [{"backend": "demo"}]},
                   {"model": "short", "backends": [{"backend": "demo"}]}],
        "access_log": "off"
    });
    let gw = Gateway::start(&cfg);
    for model in [long.as_str(), "short"] {
        let r = post(gw.addr, "/v1/chat/completions", &[], &chat(model));
        assert_eq!((r.status, r.json()["model"].as_str()), (200, Some(model)));
    }
    let name = "gen_ai_server_request_duration_seconds_count";
    // A request is recorded after its answer is sent, by the worker that sent it: with the two requests
    // on different workers, either may be missing from a scrape for a moment.
    let mut text = String::new();
    let recorded = |text: &str, model: &str| {
        samples(text, name).iter().any(|s| s.labels.get("gen_ai_request_model").is_some_and(|m| m == model))
    };
    eventually(Duration::from_secs(5), || {
        text = scrape(gw.addr, &[]);
        recorded(&text, &long) && recorded(&text, "short")
    });
    let long_series = one(&text, name, &[("gen_ai_request_model", long.as_str())]);
    assert_eq!(long_series.labels["gen_ai_response_model"], "_OTHER");
    assert_eq!(one(&text, name, &[("gen_ai_request_model", "short")]).labels["gen_ai_response_model"], "short");
}

fn log_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn the_access_log_line_of_a_streamed_fallen_back_rate_limited_request_has_every_field_and_no_secret() {
    let up = FakeUpstream::start();
    let dir = TempDir::new("access");
    let path = dir.0.join("access.log");
    let cfg = json!({
        "backends": [
            {"name": "down", "schema": "openai", "base_url": format!("http://{}/v1", closed_addr()),
             "auth": {"type": "bearer", "key": "sk-canary-upstream-down"}},
            {"name": "live", "schema": "openai", "base_url": up.base_url(),
             "auth": {"type": "bearer", "key": "sk-canary-upstream-live"}}
        ],
        "routes": [{"model": "fake*", "backends": [{"backend": "down"}, {"backend": "live", "priority": 1}]}],
        "clients": [{"name": "team-a", "key": "sk-canary-client"}],
        "limits": [
            {"name": "rpm", "key": ["client"], "requests": 1000, "per": "1m"},
            {"name": "tpm", "key": ["client"], "tokens": 1000000, "per": "1m"},
            {"name": "per-user", "key": ["header:x-user"], "requests": 1, "per": "1d"}
        ],
        "access_log": path.to_str().unwrap()
    });
    let gw = Gateway::start(&cfg);
    let secret_headers = [
        ("authorization", "Bearer sk-canary-client"),
        ("api-key", "sk-canary-header"),
        ("cookie", "session=sk-canary-cookie"),
        ("x-fake-mode", "sse"),
        ("x-fake-events", "4"),
        ("x-request-id", "req-observed-1"),
    ];
    let body = json!({"model": "fake-1", "stream": true,
                      "messages": [{"role": "user", "content": "the canary content sk-canary-content"}]});
    let r = post(gw.addr, "/v1/chat/completions", &secret_headers, &body);
    assert_eq!(r.status, 200);
    let sent_body = serde_json::to_vec(&body).unwrap().len() as u64;
    // The rate-limited one: the second request of user u1 today.
    let limited = [("authorization", "Bearer sk-canary-client"), ("x-user", "u1"), ("x-request-id", "req-observed-2")];
    assert_eq!(post(gw.addr, "/v1/chat/completions", &limited, &chat("fake-1")).status, 200);
    assert_eq!(post(gw.addr, "/v1/chat/completions", &limited, &chat("fake-1")).status, 429);

    assert!(eventually(Duration::from_secs(3), || log_lines(&path).len() >= 3), "{}", gw.log());
    let lines = log_lines(&path);
    let line = lines.iter().find(|l| l["request_id"] == "req-observed-1").expect("the streamed request's line");
    for field in [
        "ts",
        "request_id",
        "peer",
        "client",
        "method",
        "path",
        "operation",
        "model",
        "route",
        "stream",
        "status",
        "error_type",
        "cancelled",
        "attempts",
        "backends",
        "backend",
        "response_model",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "ttfb_ms",
        "ttft_ms",
        "tokens",
        "limits",
        "limited_by",
    ] {
        assert!(line.get(field).is_some(), "missing {field}: {line}");
    }
    assert!(line["ts"].as_str().unwrap().ends_with('Z'));
    assert_eq!(line["client"], "team-a");
    assert_eq!((line["method"].as_str(), line["path"].as_str()), (Some("POST"), Some("/v1/chat/completions")));
    assert_eq!((line["operation"].as_str(), line["model"].as_str()), (Some("chat"), Some("fake-1")));
    assert_eq!(line["route"], "fake*");
    assert_eq!(line["stream"], true);
    assert_eq!(line["status"], 200);
    assert!(line["error_type"].is_null());
    assert_eq!(line["cancelled"], false);
    assert_eq!(line["attempts"], 2);
    let backends = line["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!((backends[0]["backend"].as_str(), backends[0]["outcome"].as_str()), (Some("down"), Some("failed")));
    assert_eq!(backends[0]["error_type"], "upstream_unreachable");
    assert_eq!((backends[1]["backend"].as_str(), backends[1]["outcome"].as_str()), (Some("live"), Some("answered")));
    assert_eq!(backends[1]["status"], 200);
    assert!(backends.iter().all(|b| b["ms"].as_f64().is_some()));
    assert_eq!(line["backend"], "live");
    assert_eq!(line["response_model"], "fake-model");
    assert_eq!(line["bytes_in"].as_u64(), Some(sent_body));
    assert_eq!(line["bytes_out"].as_u64(), Some(r.body.len() as u64));
    let duration = line["duration_ms"].as_f64().unwrap();
    let ttfb = line["ttfb_ms"].as_f64().unwrap();
    let ttft = line["ttft_ms"].as_f64().unwrap();
    assert!(ttfb <= ttft && ttft <= duration, "{line}");
    assert_eq!(line["tokens"]["input"], 5);
    assert_eq!(line["tokens"]["output"], 4);
    for k in ["cached", "cache_creation", "reasoning"] {
        assert_eq!(line["tokens"][k], 0, "{k}");
    }
    assert_eq!(line["limits"], json!(["rpm", "tpm"]));
    assert!(line["limited_by"].is_null());

    // Lines are buffered per worker thread: two requests served by different workers may be written in
    // either order, so they are told apart by their status.
    let user_lines = lines.iter().filter(|l| l["request_id"] == "req-observed-2").collect::<Vec<_>>();
    assert_eq!(user_lines.len(), 2);
    let admitted = user_lines.iter().find(|l| l["status"] == 200).expect("the admitted request's line");
    assert_eq!(admitted["limits"], json!(["rpm", "tpm", "per-user"]));
    let rejected = user_lines.iter().find(|l| l["status"] == 429).expect("the rejected request's line");
    assert_eq!(rejected["error_type"], "rate_limited");
    assert_eq!(rejected["limited_by"], "per-user");
    assert_eq!(rejected["attempts"], 0);

    let text = std::fs::read_to_string(&path).unwrap() + &gw.log();
    for canary in
        ["sk-canary-client", "sk-canary-header", "sk-canary-cookie", "sk-canary-upstream", "sk-canary-content"]
    {
        assert!(!text.contains(canary), "{canary} leaked:\n{text}");
    }
    // The metrics saw both requests that reached the route fall back, and the rejection.
    let metrics = scrape(gw.addr, &[]);
    assert_eq!(
        one(&metrics, "switchyard_fallbacks_total", &[("backend", "down"), ("reason", "upstream_unreachable")]).value,
        2.0
    );
    assert_eq!(
        one(&metrics, "switchyard_rate_limited_total", &[("limit", "per-user"), ("client", "team-a")]).value,
        1.0
    );
}

#[test]
fn the_access_log_file_is_reopened_on_sigusr1_after_a_rotation() {
    let dir = TempDir::new("rotate");
    let path = dir.0.join("access.log");
    let cfg = json!({
        "backends": [{"name": "demo", "schema": "mock"}],
        "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}],
        "access_log": path.to_str().unwrap()
    });
    let gw = Gateway::start(&cfg);
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[("x-request-id", "before")], &chat("demo")).status, 200);
    assert!(eventually(Duration::from_secs(3), || log_lines(&path).len() == 1));
    let rotated = dir.0.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    let _ = Command::new("kill").arg("-USR1").arg(gw.child.id().to_string()).status();
    let reopened = || {
        let _ = post(gw.addr, "/v1/chat/completions", &[("x-request-id", "after")], &chat("demo"));
        log_lines(&path).iter().any(|l| l["request_id"] == "after")
    };
    assert!(eventually(Duration::from_secs(5), reopened), "{}", gw.log());
    let old = log_lines(&rotated);
    assert_eq!(old[0]["request_id"], "before");
    assert!(gw.log().contains("reopening the access log"));
}

// ---- Traces ----

/// The OTLP receiver (tests/sdk/otlp_receiver.py) and the spans it decoded.
struct Receiver {
    child: Child,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/otlp_receiver.py");
        let mut child = Command::new(sdk_python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the OTLP receiver");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port =
            first.trim().strip_prefix("PORT ").unwrap_or_else(|| panic!("receiver said {first:?}")).parse().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line).unwrap();
                sink.lock().unwrap().push(v);
            }
        });
        Receiver { child, port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/v1/traces", self.port)
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }

    fn in_trace(&self, trace_id: &str) -> Vec<Value> {
        self.spans().into_iter().filter(|s| s["trace_id"] == trace_id).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn traced_config(up: &FakeUpstream, endpoint: &str) -> Value {
    let mut cfg = team_config(up);
    cfg["tracing"] = json!({"endpoint": endpoint, "flush_interval_ms": 50, "service_name": "switchyard-test"});
    cfg
}

#[test]
fn traces_reach_a_real_otlp_receiver_with_the_parent_continued_from_the_client() {
    let receiver = Receiver::start();
    let up = FakeUpstream::start();
    let gw = Gateway::start(&traced_config(&up, &receiver.endpoint()));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &[KEY_A, ("traceparent", &traceparent), ("tracestate", "vendor=abc")],
        &chat("fake-1"),
    );
    assert_eq!(r.status, 200);
    // The upstream request carries the gateway's attempt span as its parent, and the client's state.
    let sent = up.last();
    let upstream_parent = sent.headers["traceparent"].clone();
    let parts: Vec<&str> = upstream_parent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", trace_id, "01"), "{upstream_parent}");
    assert_ne!(parts[2], client_span, "the upstream's parent is the gateway's span");
    assert_eq!(sent.headers["tracestate"], "vendor=abc");

    assert!(
        eventually(Duration::from_secs(10), || receiver.in_trace(trace_id).len() >= 2),
        "{:?}\n{}",
        receiver.spans(),
        gw.log()
    );
    let spans = receiver.in_trace(trace_id);
    assert_eq!(spans.len(), 2, "{spans:?}");
    let server = spans.iter().find(|s| s["kind"] == 2).expect("a server span");
    let attempt = spans.iter().find(|s| s["kind"] == 3).expect("a client span");
    assert_eq!(server["parent_span_id"], client_span);
    assert_eq!(attempt["parent_span_id"], server["span_id"]);
    assert_eq!(attempt["span_id"], parts[2]);
    for s in [server, attempt] {
        assert_eq!(s["unknown_fields"], 0, "{s}");
        assert_eq!(s["trace_state"], "vendor=abc");
        assert_eq!(s["resource"]["service.name"], "switchyard-test");
        assert_eq!(s["scope"], "switchyard");
        assert_eq!(s["flags"], 1);
        assert!(s["end"].as_u64() >= s["start"].as_u64());
    }
    assert!(server["start"].as_u64() <= attempt["start"].as_u64() && attempt["end"].as_u64() <= server["end"].as_u64());
    assert_eq!(server["name"], "POST /v1/chat/completions");
    let a = &server["attributes"];
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.request.model"], "fake-1");
    assert_eq!(a["gen_ai.response.model"], "fake-1");
    assert_eq!(a["gen_ai.provider.name"], "openai");
    assert_eq!(a["gen_ai.usage.input_tokens"], 5);
    assert_eq!(a["gen_ai.usage.output_tokens"], 2);
    assert_eq!(a["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["switchyard.client"], "team-a");
    assert_eq!(attempt["name"], "chat fake-1");
    assert_eq!(attempt["attributes"]["switchyard.backend"], "fake");
    assert_eq!(attempt["attributes"]["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert_eq!(attempt["attributes"]["server.address"], up.addr.to_string());

    // A stream without a traceparent starts a trace of its own (sample_ratio 1), finish reason included.
    let body = json!({"model": "fake-1", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[KEY_A, ("x-fake-mode", "sse")], &body).status, 200);
    let root_trace = up.last().headers["traceparent"].split('-').nth(1).unwrap().to_string();
    assert_ne!(root_trace, trace_id);
    assert!(eventually(Duration::from_secs(10), || receiver.in_trace(&root_trace).len() == 2));
    let root = receiver.in_trace(&root_trace).into_iter().find(|s| s["kind"] == 2).unwrap();
    assert_eq!(root["parent_span_id"], "");
    assert_eq!(root["attributes"]["gen_ai.response.finish_reasons"], json!(["stop"]));
    assert_eq!(root["attributes"]["gen_ai.response.model"], "fake-model");

    // A client that says "not sampled" is followed: no spans, and its headers pass through untouched.
    let unsampled = "00-11111111111111111111111111111111-2222222222222222-00";
    assert_eq!(
        post(gw.addr, "/v1/chat/completions", &[KEY_A, ("traceparent", unsampled)], &chat("fake-1")).status,
        200
    );
    assert_eq!(up.last().headers["traceparent"], unsampled);
    // A later traced request's spans arriving shows the unsampled one's would have too.
    let later = "00-33333333333333333333333333333333-4444444444444444-01";
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[KEY_A, ("traceparent", later)], &chat("fake-1")).status, 200);
    assert!(eventually(Duration::from_secs(10), || receiver.in_trace("33333333333333333333333333333333").len() == 2));
    assert!(receiver.in_trace("11111111111111111111111111111111").is_empty());
    // The receiver holds the spans before the gateway has read its answer and counted them exported.
    let exported = || one(&scrape(gw.addr, &[]), "switchyard_trace_spans_exported_total", &[]).value;
    assert!(eventually(Duration::from_secs(5), || exported() >= 6.0), "{}", exported());
}

#[test]
fn with_the_collector_down_requests_are_unaffected_and_the_drop_counter_rises() {
    let up = FakeUpstream::start();
    let gw = Gateway::start(&traced_config(&up, &format!("http://{}/v1/traces", closed_addr())));
    for _ in 0..20 {
        assert_eq!(post(gw.addr, "/v1/chat/completions", &[KEY_A], &chat("fake-1")).status, 200);
    }
    let dropped =
        || one(&scrape(gw.addr, &[]), "switchyard_trace_spans_dropped_total", &[("reason", "export_failed")]).value;
    assert!(eventually(Duration::from_secs(5), || dropped() >= 40.0), "{}", dropped());
    // The warning is logged after the spans are counted dropped.
    assert!(eventually(Duration::from_secs(5), || gw.log().contains("trace export")), "{}", gw.log());
}

// ---- Admin listener and readiness ----

/// The admin listener's address, from the start-up log.
fn admin_addr(gw: &Gateway) -> SocketAddr {
    let log = gw.log();
    let line = log.lines().find(|l| l.contains("admin endpoints")).unwrap_or_else(|| panic!("{log}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn the_admin_listener_serves_metrics_behind_its_key_and_the_public_port_no_longer_does() {
    let mut cfg = json!({
        "backends": [{"name": "demo", "schema": "mock"}],
        "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}],
        "admin_listen": "127.0.0.1:0",
        "admin_key_env": "TEST_ADMIN_KEY"
    });
    let gw = Gateway::start_with_env(&cfg, &[("TEST_ADMIN_KEY", "admin-secret")]);
    let admin = admin_addr(&gw);
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("demo")).status, 200);
    assert_eq!(get(gw.addr, "/metrics", &[]).status, 404);
    assert_eq!(get(gw.addr, "/ready", &[]).status, 200);
    assert_eq!(get(admin, "/metrics", &[]).status, 401);
    assert_eq!(get(admin, "/metrics", &[("authorization", "Bearer wrong")]).status, 401);
    let text = scrape(admin, &[("authorization", "Bearer admin-secret")]);
    assert!(text.contains("gen_ai_server_request_duration_seconds_count{"), "{text}");
    assert!(!text.contains("admin-secret"));
    assert_eq!(get(admin, "/ready", &[]).status, 200);
    assert_eq!(get(admin, "/health", &[]).status, 200);
    assert_eq!(get(admin, "/v1/models", &[]).status, 404);
    assert_eq!(post(admin, "/v1/chat/completions", &[], &chat("demo")).status, 404);

    // Without an admin listener, the key guards /metrics on the public port.
    cfg.as_object_mut().unwrap().remove("admin_listen");
    cfg["admin_key"] = json!("inline-admin-key");
    cfg.as_object_mut().unwrap().remove("admin_key_env");
    let gw = Gateway::start(&cfg);
    assert_eq!(get(gw.addr, "/metrics", &[]).status, 401);
    assert_eq!(get(gw.addr, "/metrics", &[("authorization", "Bearer inline-admin-key")]).status, 200);
}

#[test]
fn ready_answers_503_while_draining_then_the_listener_closes_and_the_process_exits() {
    let cfg = json!({
        "backends": [{"name": "demo", "schema": "mock"}],
        "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}],
        "admin_listen": "127.0.0.1:0",
        "server": {"drain_delay_ms": 3000}
    });
    let mut gw = Gateway::start(&cfg);
    let admin = admin_addr(&gw);
    assert_eq!(get(gw.addr, "/ready", &[]).status, 200);
    assert_eq!(get(admin, "/ready", &[]).status, 200);
    assert_eq!(get(gw.addr, "/health", &[]).status, 200);
    gw.terminate();
    assert!(eventually(Duration::from_secs(2), || get(admin, "/ready", &[]).status == 503));
    // During the delay the public port still serves everything, but says it is not ready.
    let r = get(gw.addr, "/ready", &[]);
    assert_eq!((r.status, r.json()["status"].as_str()), (503, Some("draining")));
    assert_eq!(get(gw.addr, "/health", &[]).status, 200, "liveness is unaffected");
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("demo")).status, 200);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = gw.child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not exit after the drain");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(gw.log().contains("/ready answers 503"));
    assert!(std::net::TcpStream::connect(gw.addr).is_err(), "still accepting after the drain");
}
