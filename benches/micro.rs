//! Hot-path micro benchmarks: each operation timed in this process next to a baseline it can be
//! compared with, as nanoseconds per operation and the ratio to the baseline.
//!
//! `cargo bench --bench micro` (a Redis row is added when `redis-server` is installed).

#[path = "common/otlp_sink.rs"]
mod otlp_sink;
use otlp_sink::otlp_sink;

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::api::{Api, Endpoint};
use switchyard::config::{Config, Environment};
use switchyard::gateway;
use switchyard::providers::Framing;
use switchyard::ratelimit::{self, Facts, LocalStore};
use switchyard::server::http1;
use switchyard::snapshot::{self, Snapshot};
use switchyard::sse::SseDecoder;
use switchyard::stream::StreamPipeline;
use switchyard::translate::{openai_anthropic, openai_gemini, Pair, RequestOptions, ResponseOptions};

/// Median ns per call of `f` over 7 rounds of about 100 ms.
fn time(mut f: impl FnMut()) -> f64 {
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed() > Duration::from_millis(20) {
            break;
        }
        iters *= 2;
    }
    let iters = iters * 5;
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    rounds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rounds[3]
}

/// Nanoseconds to push `wire` whole through a stream pipeline from `upstream` to `client` with the
/// translator `make` builds, relay it and finish.
fn time_stream(
    make: impl Fn() -> Box<dyn switchyard::stream::StreamTranslate>,
    framing: Framing,
    upstream: Api,
    client: Api,
    wire: &[u8],
) -> f64 {
    time(|| {
        let mut t = StreamPipeline::new(framing, upstream, client, Some(make()), false);
        let mut out = Vec::new();
        t.push(black_box(wire));
        t.relay(&mut out);
        t.finish(&mut out);
        black_box(out);
    })
}

fn row(name: &str, ns: f64, baseline_name: &str, baseline: f64) {
    println!("{name:<44} {ns:>10.1} ns   {baseline_name:<34} {baseline:>9.1} ns   {:>6.2}x", ns / baseline);
}

const HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8080\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\nUser-Agent: OpenAI/Python 1.55.0\r\nX-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.55.0\r\nX-Stainless-OS: Linux\r\nX-Stainless-Arch: x64\r\nX-Stainless-Runtime: CPython\r\nX-Stainless-Runtime-Version: 3.11.7\r\nAuthorization: Bearer sk-switchyard-client-key\r\nX-Stainless-Async: false\r\nx-stainless-retry-count: 0\r\nContent-Length: 215\r\n\r\n";

fn chat_body(pad: usize) -> Vec<u8> {
    format!(
        r#"{{"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"Say hello {}"}}],"model":"gpt-4o-mini","temperature":0.2,"max_tokens":64,"stream":true}}"#,
        "x".repeat(pad)
    )
    .into_bytes()
}

fn main() {
    println!(
        "micro benchmarks (median of 7 rounds), {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!("{:<44} {:>13}   {:<34} {:>12}   {:>7}", "operation", "time", "baseline", "time", "ratio");
    // `MICRO_ONLY=credentials` runs the credential rows alone (a few seconds).
    if std::env::var("MICRO_ONLY").as_deref() == Ok("credentials") {
        credential_and_jwt_rows();
        return;
    }

    // Request head parse vs raw httparse.
    let ours = time(|| {
        black_box(http1::parse_head(black_box(HEAD), 64 * 1024, 100).unwrap());
    });
    let raw = time(|| {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        black_box(req.parse(black_box(HEAD)).unwrap());
    });
    row("request head parse (16 headers)", ours, "httparse alone", raw);

    // Model extraction vs a full JSON tree.
    for pad in [0usize, 64 * 1024] {
        let body = chat_body(pad);
        let peek = time(|| {
            black_box(gateway::parse(Endpoint::ChatCompletions, black_box(&body)).unwrap());
        });
        let tree = time(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap());
        });
        row(&format!("model + stream from a {} B body", body.len()), peek, "serde_json::Value parse", tree);
    }

    // Routing.
    let cfg = Config::parse(
        r#"{"backends":[{"name":"a","schema":"mock"},{"name":"b","schema":"mock"}],
            "routes":[{"model":"claude*","backends":[{"backend":"a"}]},
                      {"model":"gpt-4o","headers":{"x-tier":"gold"},"backends":[{"backend":"b"}]},
                      {"model":"gpt-4o*","backends":[{"backend":"a","weight":3},{"backend":"b","weight":1},{"backend":"b","priority":1}]}]}"#,
    )
    .unwrap();
    let snapshot = Snapshot::build(cfg, &Environment::process(), None).unwrap();
    let route = time(|| {
        let r = snapshot.router.find(black_box("gpt-4o-mini"), |_| None).unwrap();
        black_box(r.plan(black_box(12345)));
    });
    let cmp = time(|| {
        black_box(black_box("gpt-4o-mini").starts_with(black_box("gpt-4o")));
    });
    row("route: find + weighted plan (3 routes)", route, "one prefix compare", cmp);

    // Config snapshot read vs RwLock<Arc> + clone.
    snapshot::publish(Snapshot::build(Config::parse("{}").unwrap(), &Environment::process(), None).unwrap());
    let snap = time(|| {
        black_box(snapshot::current());
    });
    let lock = parking_lot::RwLock::new(Arc::new(0u64));
    let rw = time(|| {
        black_box(lock.read().clone());
    });
    row("config snapshot read", snap, "parking_lot RwLock<Arc> + clone", rw);

    // Client authentication: the key from the head, looked up among 1 or 10,000 clients (hash index,
    // then a constant-time compare); and the linear constant-time scan it replaced, over 10,000 keys.
    let (head, _) = http1::parse_head(HEAD, 64 * 1024, 100).unwrap().unwrap();
    let request = switchyard::server::Request {
        head,
        body: Vec::new(),
        peer: "127.0.0.1:1".parse().unwrap(),
        body_streamed: false,
        received: Instant::now(),
    };
    let with_clients = |n: usize| {
        let mut clients: Vec<serde_json::Value> = (1..n)
            .map(|i| serde_json::json!({"name": format!("c{i}"), "key": format!("sk-switchyard-client-{i:06}")}))
            .collect();
        clients.push(serde_json::json!({"name": "bench", "key": "sk-switchyard-client-key"}));
        let cfg = Config::parse(&serde_json::json!({ "clients": clients }).to_string()).unwrap();
        Snapshot::build(cfg, &Environment::process(), None).unwrap()
    };
    let (one, many) = (with_clients(1), with_clients(10_000));
    let auth_one = time(|| {
        black_box(gateway::authenticate(black_box(&one), &request).unwrap());
    });
    let auth_many = time(|| {
        black_box(gateway::authenticate(black_box(&many), &request).unwrap());
    });
    row("authenticate, 10,000 clients", auth_many, "authenticate, 1 client", auth_one);
    let key = black_box("sk-switchyard-client-key").as_bytes();
    let scan = time(|| {
        let mut found = None;
        for c in &many.clients {
            if snapshot::constant_time_eq(c.key.0.as_bytes(), key) {
                found = Some(c);
            }
        }
        black_box(found);
    });
    row("linear constant-time scan, 10,000 keys", scan, "authenticate, 10,000 clients", auth_many);

    // SSE: decode, and the relay's event tap (strip usage chunk) vs memcpy.
    let stream =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams/openai_tool_calls_usage.sse"))
            .unwrap();
    let events = stream.windows(2).filter(|w| w == b"\n\n").count().max(1) as f64;
    let decode = time(|| {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        d.push(black_box(&stream), &mut out);
        black_box(out);
    }) / events;
    let copy = time(|| {
        black_box(black_box(&stream).to_vec());
    }) / events;
    row("SSE decode, per event", decode, "memcpy of the stream, per event", copy);
    let tap = time(|| {
        let mut t = StreamPipeline::new(Framing::Sse, Api::OpenAi, Api::OpenAi, None, true);
        let mut out = Vec::new();
        t.push(black_box(&stream));
        t.relay(&mut out);
        t.finish(&mut out);
        black_box(out);
    }) / events;
    row("same-API stream (usage, strip chunk), /event", tap, "memcpy of the stream, per event", copy);

    // Translators vs a JSON round trip of the same body.
    let body = chat_body(200);
    let opts = RequestOptions { model: Some("claude-sonnet".into()), default_max_tokens: 1024 };
    let to_anthropic = time(|| {
        black_box(openai_anthropic::request(black_box(&body), &opts).unwrap());
    });
    let round_trip = time(|| {
        let v: serde_json::Value = serde_json::from_slice(black_box(&body)).unwrap();
        black_box(serde_json::to_vec(&v).unwrap());
    });
    row("translate request OpenAI -> Anthropic", to_anthropic, "JSON parse + serialize", round_trip);
    let to_gemini = time(|| {
        black_box(openai_gemini::request(black_box(&body), &opts).unwrap());
    });
    row("translate request OpenAI -> Gemini", to_gemini, "JSON parse + serialize", round_trip);
    let anthropic_stream =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams/anthropic_text_tool_use.sse"))
            .unwrap();
    let a_events = anthropic_stream.windows(2).filter(|w| w == b"\n\n").count().max(1) as f64;
    let translate_stream = time_stream(
        || Pair::OpenAiAnthropic.stream("m", &ResponseOptions::default()),
        Framing::Sse,
        Api::Anthropic,
        Api::OpenAi,
        &anthropic_stream,
    ) / a_events;
    let a_copy = time(|| {
        black_box(black_box(&anthropic_stream).to_vec());
    }) / a_events;
    row("stream translate Anthropic -> OpenAI, /event", translate_stream, "memcpy of the stream, per event", a_copy);
    let reverse = time_stream(
        || Pair::AnthropicOpenAi.stream("m", &ResponseOptions::default()),
        Framing::Sse,
        Api::OpenAi,
        Api::Anthropic,
        &stream,
    ) / events;
    row("stream translate OpenAI -> Anthropic, /event", reverse, "memcpy of the stream, per event", copy);
    // Gemini: a recorded stream with thoughts, text and cumulative usage, CRLF-delimited.
    let gemini_stream =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams/gemini_thinking_usage.sse"))
            .unwrap();
    let g_events = gemini_stream.windows(6).filter(|w| w == b"data: ").count().max(1) as f64;
    let g_copy = time(|| {
        black_box(black_box(&gemini_stream).to_vec());
    }) / g_events;
    for (name, pair, client) in [
        ("stream translate Gemini -> OpenAI, /event", Pair::OpenAiGemini, Api::OpenAi),
        ("stream translate Gemini -> Anthropic, /event", Pair::AnthropicGemini, Api::Anthropic),
    ] {
        let per_event = time_stream(
            || pair.stream("m", &ResponseOptions::default()),
            Framing::Sse,
            Api::Gemini,
            client,
            &gemini_stream,
        ) / g_events;
        row(name, per_event, "memcpy of the stream, per event", g_copy);
    }

    // Responses: one translator from chat chunks; other families composed through it; passthrough
    // with its ids tagged. Each per upstream event, against the stream translator of the same input.
    let responses_request = br#"{"model":"m","stream":true,"instructions":"Be brief.","input":"Weather?",
        "tools":[{"type":"function","name":"get_weather","parameters":{"type":"object"}}]}"#;
    let responses_opts = |pair: Pair| {
        pair.request(Endpoint::Responses, responses_request, &RequestOptions::default(), 1).unwrap().response
    };
    let direct_opts = responses_opts(Pair::ResponsesOpenAi);
    let to_responses = time_stream(
        || Pair::ResponsesOpenAi.stream("m", &direct_opts),
        Framing::Sse,
        Api::OpenAi,
        Api::Responses,
        &stream,
    ) / events;
    row("stream translate OpenAI -> Responses, /event", to_responses, "OpenAI -> Anthropic, per event", reverse);
    let via = Pair::ResponsesVia(Api::Anthropic);
    let via_opts = responses_opts(via);
    let composed =
        time_stream(|| via.stream("m", &via_opts), Framing::Sse, Api::Anthropic, Api::Responses, &anthropic_stream)
            / a_events;
    row("stream Anthropic -> chat -> Responses, /event", composed, "Anthropic -> OpenAI, per event", translate_stream);
    // A longer text stream (200 content chunks, then the finish and usage chunks), where the per-stream
    // events (created, completed with the whole response) weigh less.
    let mut long_stream = Vec::new();
    for i in 0..200 {
        let c = serde_json::json!({"id": "chatcmpl-long", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {"content": format!(" tok{i}")}, "logprobs": null, "finish_reason": null}]});
        long_stream.extend_from_slice(format!("data: {c}\n\n").as_bytes());
    }
    long_stream.extend_from_slice(
        br#"data: {"id":"chatcmpl-long","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

data: {"id":"chatcmpl-long","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":200,"total_tokens":209}}

data: [DONE]

"#,
    );
    let long_events = 203.0;
    let long = |pair: Pair, client: Api, opts: &ResponseOptions| {
        time(|| {
            let mut t = StreamPipeline::new(Framing::Sse, Api::OpenAi, client, Some(pair.stream("m", opts)), false);
            let mut out = Vec::new();
            t.push(black_box(&long_stream));
            t.relay(&mut out);
            t.finish(&mut out);
            black_box(out);
        }) / long_events
    };
    let long_responses = long(Pair::ResponsesOpenAi, Api::Responses, &direct_opts);
    let long_anthropic = long(Pair::AnthropicOpenAi, Api::Anthropic, &ResponseOptions::default());
    row(
        "OpenAI -> Responses, 200-chunk text, /event",
        long_responses,
        "OpenAI -> Anthropic, same stream",
        long_anthropic,
    );
    let mut responses_stream = Vec::new();
    for i in 0..20 {
        let e = serde_json::json!({"type": "response.output_text.delta", "sequence_number": i, "item_id": "msg_68af",
            "output_index": 0, "content_index": 0, "delta": " word", "logprobs": []});
        responses_stream.extend_from_slice(format!("event: response.output_text.delta\ndata: {e}\n\n").as_bytes());
    }
    let done = serde_json::json!({"type": "response.completed", "sequence_number": 20, "response": {"id": "resp_68af0123",
        "object": "response", "status": "completed", "output": [], "usage": {"input_tokens": 5, "output_tokens": 20}}});
    responses_stream.extend_from_slice(format!("event: response.completed\ndata: {done}\n\n").as_bytes());
    let r_events = 21.0;
    let relay_responses = |tag: bool| {
        time(|| {
            let translator: Option<Box<dyn switchyard::stream::StreamTranslate>> = tag.then(|| {
                Box::new(gateway::responses::TagIds::new("0a1b2c3d".into()))
                    as Box<dyn switchyard::stream::StreamTranslate>
            });
            let mut t = StreamPipeline::new(Framing::Sse, Api::Responses, Api::Responses, translator, false);
            let mut out = Vec::new();
            t.push(black_box(&responses_stream));
            t.relay(&mut out);
            t.finish(&mut out);
            black_box(out);
        }) / r_events
    };
    let tagged = relay_responses(true);
    let untagged = relay_responses(false);
    row("Responses passthrough, ids tagged, /event", tagged, "same stream relayed as is", untagged);

    // Bedrock: SigV4 signing of a request, against the static header other providers send.
    let credentials = switchyard::providers::aws::AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("session-token".into()),
    };
    let converse_body =
        br#"{"messages":[{"role":"user","content":[{"text":"Say hello"}]}],"inferenceConfig":{"maxTokens":64}}"#;
    let sign = time(|| {
        black_box(switchyard::providers::aws::sign(
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            "",
            &[("content-type", "application/json")],
            black_box(converse_body),
            &credentials,
            "us-east-1",
            "bedrock",
            1_700_000_000,
        ));
    });
    let static_key = time(|| {
        let out: Vec<(String, String)> =
            vec![("authorization".into(), black_box("Bearer sk-0123456789abcdef").to_string())];
        black_box(out);
    });
    row("SigV4 signing, 100 B Converse body", sign, "static bearer header", static_key);

    // Bedrock: the binary event stream decoded and translated, per event, against the SSE path.
    let converse: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/streams/converse_text.json")).unwrap(),
    )
    .unwrap();
    let mut wire = Vec::new();
    for f in converse.as_array().unwrap() {
        use switchyard::eventstream::{encode, HeaderValue::String as S};
        let headers = [(":event-type", S(f["event"].as_str().unwrap().into())), (":message-type", S("event".into()))];
        wire.extend(encode(&headers, &serde_json::to_vec(&f["payload"]).unwrap()));
    }
    let c_events = converse.as_array().unwrap().len() as f64;
    let decode_frames = time(|| {
        let mut d = switchyard::eventstream::Decoder::new();
        let mut out = Vec::new();
        d.push(black_box(&wire), &mut out).unwrap();
        black_box(out);
    }) / c_events;
    let w_copy = time(|| {
        black_box(black_box(&wire).to_vec());
    }) / c_events;
    row("event-stream decode (CRC-checked), /event", decode_frames, "memcpy of the stream, per event", w_copy);
    let converse_to_openai = time_stream(
        || Pair::OpenAiConverse.stream("m", &ResponseOptions::default()),
        Framing::EventStream,
        Api::Converse,
        Api::OpenAi,
        &wire,
    ) / c_events;
    row(
        "Converse stream -> OpenAI chunks, /event",
        converse_to_openai,
        "Anthropic SSE -> OpenAI, /event",
        translate_stream,
    );

    // Limiter: in-process check (admit + settle) vs an uncontended mutex.
    let limits = ratelimit::compile(
        &serde_json::from_str::<Vec<switchyard::config::LimitConfig>>(
            r#"[{"name":"rpm","key":["client","header:x-user-id"],"requests":1000000000,"per":"1m"},
                {"name":"tpm","key":["client"],"tokens":1000000000000,"per":"1m"}]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let header = |h: &str| (h == "x-user-id").then_some("user-42");
    let facts =
        Facts { client: "team-a", model: "gpt-4o", backend: "openai", header: &header, est_input: 50, max_output: 100 };
    let store = LocalStore::default();
    let t0 = Instant::now();
    let local = time(|| {
        let charges = ratelimit::charges(&limits, &facts);
        let now = t0.elapsed().as_millis() as u64;
        if let ratelimit::Verdict::Admit(granted) = store.admit(&charges, now) {
            store.adjust(&granted[1].key, -10);
            black_box(granted);
        }
    });
    let mutex = parking_lot::Mutex::new(0u64);
    let lock_only = time(|| {
        *mutex.lock() += 1;
    });
    row("limit check, local (2 limits, admit + settle)", local, "parking_lot mutex lock/unlock", lock_only);

    socket_write_rows();

    let (with_client, raw) = upstream_client_row();
    row("upstream round trip, our HTTP/1.1 client", with_client, "raw HTTP/1.1 on the same may socket", raw);

    observability_rows(with_client);

    if let Some(redis_row) = redis_limit_row(&limits, &facts) {
        let (admit, ping) = redis_row;
        row("limit check, Redis (admit script)", admit, "Redis PING round trip", ping);
    } else {
        println!("(redis-server not found: the Redis limit check row is skipped)");
    }

    credential_and_jwt_rows();
}

fn credential_and_jwt_rows() {
    let (token, static_key) = credential_rows();
    row("credential: cached expiring token (Entra/Google)", token, "credential: static key header", static_key);
    let (jwt, sigv4) = jwt_rows();
    row("Google JWT RS256 sign + form (once per refresh)", jwt, "AWS SigV4 of a chat request", sigv4);
}

/// A request's credential header from a token cache holding a valid token (one lock, one clone), against
/// a static key's header. The cache is filled by one real exchange with an in-process token endpoint.
fn credential_rows() -> (f64, f64) {
    use std::io::{BufRead, BufReader, Read, Write};
    use switchyard::config::{AuthConfig, AzureEntraConfig};
    use switchyard::providers::Credential;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let answer = br#"{"access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.bench.token","expires_in":3600}"#;
            let mut out = stream;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                answer.len()
            );
            let _ = out.write_all(head.as_bytes()).and_then(|_| out.write_all(answer));
        }
    });
    let auth = AuthConfig::AzureEntra(AzureEntraConfig {
        tenant_id: Some("bench".into()),
        client_id: Some("bench-client".into()),
        client_secret: Some("bench-secret".into()),
        authority: Some(format!("http://{addr}")),
        ..AzureEntraConfig::default()
    });
    let env = Environment::process();
    let token = Credential::from_config(Some(&auth), "bench", None, &env).unwrap();
    let mut out = Vec::new();
    token.authorize(&mut out).expect("the first call exchanges a token");
    let static_auth = AuthConfig::Header {
        name: None,
        key: Some("0123456789abcdef0123456789abcdef".into()),
        key_env: None,
        key_file: None,
    };
    let key = Credential::from_config(Some(&static_auth), "bench", Some("api-key"), &env).unwrap();
    let with_token = time(|| {
        let mut out = Vec::with_capacity(1);
        token.authorize(&mut out).unwrap();
        black_box(out);
    });
    let with_key = time(|| {
        let mut out = Vec::with_capacity(1);
        key.authorize(&mut out).unwrap();
        black_box(out);
    });
    (with_token, with_key)
}

/// What a Google token refresh costs besides its round trip: the RS256 JWT (an RSA-2048 signature),
/// against what Bedrock pays on every request (SigV4: SHA-256 of the body, five HMACs).
fn jwt_rows() -> (f64, f64) {
    use switchyard::providers::{aws, token};
    let key_file = include_str!("../tests/fixtures/tokens/service_account.json");
    let grant = token::Grant::google_service_account(key_file, token::GOOGLE_SCOPE).unwrap();
    let jwt = time(|| {
        black_box(grant.exchange_body(black_box(1_700_000_000)).unwrap());
    });
    let credentials = aws::AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: None,
    };
    let body = chat_body(0);
    let sigv4 = time(|| {
        black_box(aws::sign(
            "POST",
            "bedrock-runtime.us-east-1.amazonaws.com",
            "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse",
            "",
            &[("content-type", "application/json")],
            black_box(&body),
            &credentials,
            "us-east-1",
            "bedrock",
            1_700_000_000,
        ));
    });
    (jwt, sigv4)
}

/// One keep-alive round trip to an in-process upstream: through the gateway's upstream client (pool,
/// timeouts, cancellation registration), and as a bare request/response on a may socket. The
/// difference is what the HTTP client costs per request. (ureq 3 measured 30.6 µs against 14.4 µs
/// bare here; that is why it was replaced.)
fn upstream_client_row() -> (f64, f64) {
    use std::io::{Read, Write};
    const REPLY: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
    may::config().set_workers(1);
    let listener = may::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    may::go!(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            may::go!(move || {
                let mut buf = vec![0u8; 8192];
                let mut have = 0;
                loop {
                    let Ok(n) = s.read(&mut buf[have..]) else { return };
                    if n == 0 {
                        return;
                    }
                    have += n;
                    // One request per read: head (with a small body) ends at the blank line + body.
                    if let Some(end) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                            .unwrap_or(0);
                        if have >= end + 4 + len {
                            have = 0;
                            if s.write_all(REPLY).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    let cfg =
        Config::parse(&format!(r#"{{"backends":[{{"name":"up","schema":"openai","base_url":"http://{addr}/v1"}}]}}"#))
            .unwrap();
    let snapshot = Snapshot::build(cfg, &Environment::process(), None).unwrap();
    let client = snapshot.backends[0].upstream.clone().unwrap();
    let body = chat_body(0);
    may::go!(move || {
        let with_client = time(|| {
            let resp = client.send("/chat/completions", &[("content-type", "application/json")], &body).unwrap();
            let mut out = Vec::new();
            let mut reader = resp.body;
            reader.read_to_end(&mut out).unwrap();
            black_box(out);
        });
        let mut s = may::net::TcpStream::connect(addr).unwrap();
        let _ = s.set_nodelay(true);
        let request = [
            format!("POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes(),
            body.clone(),
        ]
        .concat();
        let mut buf = vec![0u8; 4096];
        let raw = time(|| {
            s.write_all(&request).unwrap();
            let mut have = 0;
            loop {
                have += s.read(&mut buf[have..]).unwrap();
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut resp = httparse::Response::new(&mut headers);
                if let Ok(httparse::Status::Complete(n)) = resp.parse(&buf[..have]) {
                    if have >= n + 11 {
                        break;
                    }
                }
            }
            black_box(&buf[..have]);
        });
        (with_client, raw)
    })
    .join()
    .unwrap()
}

/// Times the Redis admit script and a PING on a private redis-server, from a may coroutine.
fn redis_limit_row(limits: &[ratelimit::Limit], facts: &Facts) -> Option<(f64, f64)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = Arc::new(
        switchyard::redis::RedisClient::new(&format!("redis://127.0.0.1:{port}"), None, Duration::from_secs(1)).ok()?,
    );
    let charges = ratelimit::charges(limits, facts);
    let args = ratelimit::redis_admit_args("bench:", "member", &charges);
    let c = client.clone();
    let result = may::go!(move || {
        let admit = time(|| {
            black_box(c.eval(ratelimit::REDIS_ADMIT_SCRIPT, &args).unwrap());
        });
        let ping = time(|| {
            black_box(c.call(&[b"PING"]).unwrap());
        });
        (admit, ping)
    })
    .join()
    .ok();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The recorder before issue 11, kept here as the baseline: one process-wide mutex around maps keyed
/// by client, model and backend.
mod previous_recorder {
    use std::collections::BTreeMap;

    use parking_lot::Mutex;

    type Totals = [u64; 6];
    type ByClient = BTreeMap<String, BTreeMap<String, BTreeMap<String, Totals>>>;
    static USAGE: Mutex<ByClient> = Mutex::new(BTreeMap::new());

    fn slot<'m, V: Default>(map: &'m mut BTreeMap<String, V>, key: &str) -> &'m mut V {
        if !map.contains_key(key) {
            map.insert(key.to_string(), V::default());
        }
        map.get_mut(key).expect("inserted above")
    }

    pub fn record(client: &str, model: &str, backend: &str, input: u64, output: u64) {
        let mut map = USAGE.lock();
        let t = slot(slot(slot(&mut map, client), model), backend);
        t[0] += 1;
        t[1] += input;
        t[2] += output;
    }
}

/// A chunk (size line, data, CRLF) written to a loopback socket as the responder writes it: data up
/// to 4 KiB copied behind the size line and sent as one buffer (`send`), against the three pieces in
/// one `writev` (how every write went before). The writer's CPU per write (the kernel's loopback
/// delivery included), median of 7 rounds of 20,000 writes each way, taking turns; a thread drains
/// the other end.
fn socket_write_rows() {
    use std::io::{IoSlice, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut writer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut reader, _) = listener.accept().unwrap();
    writer.set_nodelay(true).unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        while reader.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    const WRITES: u64 = 20_000;
    let data = vec![b'x'; 8192];
    let mut joined = Vec::with_capacity(8192 + 16);
    for size in [200, 1024, 4096, 8192] {
        let data = &data[..size];
        let size_line = format!("{size:x}\r\n");
        let mut per_write = |vectored: bool| {
            let start = thread_cpu_ns();
            for _ in 0..WRITES {
                if vectored {
                    let bufs = [IoSlice::new(size_line.as_bytes()), IoSlice::new(data), IoSlice::new(b"\r\n")];
                    assert_eq!(writer.write_vectored(&bufs).unwrap(), size_line.len() + size + 2);
                } else {
                    joined.clear();
                    joined.extend_from_slice(size_line.as_bytes());
                    joined.extend_from_slice(data);
                    joined.extend_from_slice(b"\r\n");
                    writer.write_all(&joined).unwrap();
                }
            }
            (thread_cpu_ns() - start) as f64 / WRITES as f64
        };
        let (mut sent, mut vectored) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            sent.push(per_write(false));
            vectored.push(per_write(true));
        }
        sent.sort_by(f64::total_cmp);
        vectored.sort_by(f64::total_cmp);
        row(&format!("chunk of {size} B: joined, one send"), sent[3], "three pieces in one writev", vectored[3]);
    }
}

/// CPU time of the calling thread, in nanoseconds (Linux `CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given.
    unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

/// CPU nanoseconds per call of `f` while `threads` threads call it at once (started together). CPU
/// time rather than wall time: on a shared machine the threads may not all get a core, and contention
/// (a lock's cache line moving between cores, spinning) shows as CPU spent per call.
fn time_parallel(threads: usize, f: impl Fn() + Sync) -> f64 {
    let iters = 300_000u64;
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let start = std::sync::Barrier::new(threads);
            let total: u64 = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            f();
                            start.wait();
                            let cpu = thread_cpu_ns();
                            for _ in 0..iters {
                                f();
                            }
                            thread_cpu_ns() - cpu
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            total as f64 / (iters * threads as u64) as f64
        })
        .collect();
    rounds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    rounds[2]
}

/// What observing a request costs (metrics, the access log line, tracing off and on), next to that
/// request's upstream round trip measured above; and the metrics recorder against the one it replaced,
/// on one thread and on two at once.
fn observability_rows(round_trip: f64) {
    use std::sync::atomic::Ordering;

    use switchyard::accesslog;
    use switchyard::config::TracingConfig;
    use switchyard::gateway::{AttemptOutcome, Observation, Outcome};
    use switchyard::metrics::{self, GenAiLabels, GenAiSample};
    use switchyard::server::Request;
    use switchyard::trace::{self, Span, SpanKind, Value};
    use switchyard::translate::Usage;

    let cfg = Config::parse(
        r#"{"backends":[{"name":"primary","schema":"mock"}],
            "routes":[{"model":"gpt-4o*","backends":[{"backend":"primary"}]}],
            "clients":[{"name":"team-a","key":"k"}]}"#,
    )
    .unwrap();
    let snapshot = Snapshot::build(cfg, &Environment::process(), None).unwrap();
    let (head, _) = http1::parse_head(HEAD, 64 * 1024, 100).unwrap().unwrap();
    let req = Request {
        head,
        body: chat_body(0),
        peer: "127.0.0.1:40000".parse().unwrap(),
        received: Instant::now(),
        body_streamed: false,
    };
    let usage = Usage { input_tokens: 50, output_tokens: 20, cache_read_input_tokens: 10, ..Usage::default() };
    // What the gateway does for one streamed, routed request once it is answered.
    let observe = || {
        let mut obs = Observation::new(&req);
        obs.operation = Some(Endpoint::ChatCompletions);
        obs.client = Some("team-a");
        obs.model = Some("gpt-4o-mini".into());
        obs.model_label = metrics::model_label("gpt-4o-mini");
        obs.route = Some("gpt-4o*");
        obs.stream = true;
        black_box(obs.attempts.begin(0, "gpt-4o-mini"));
        obs.attempts.end(AttemptOutcome::Answered(200));
        let now = Instant::now();
        obs.outcome = Some(Outcome {
            usage: Some(usage.clone()),
            stream: true,
            first_byte: Some(now),
            first_token: Some(now),
            response_model: Some("gpt-4o-mini-2024-07-18".into()),
            finish_reasons: vec!["stop".into()],
            ..Outcome::default()
        });
        obs.report(&snapshot, &req, 200, 1234, "0123456789abcdef0123456789abcdef");
    };
    let rt = "upstream round trip (row above)";

    accesslog::configure(&accesslog::Target::Off);
    trace::configure(None);
    let metrics_only = time(observe);
    row("observe a request: metrics only", metrics_only, rt, round_trip);

    accesslog::configure(&accesslog::Target::File("/dev/null".into()));
    let dropped = metrics::ACCESS_LOG_DROPPED.load(Ordering::Relaxed);
    // The writer's share (collecting and writing the lines) is done here every 1,000 lines, so the row
    // is the whole cost of a line and none is dropped for outrunning the writer.
    let lines = std::cell::Cell::new(0u32);
    let with_log = time(|| {
        observe();
        lines.set(lines.get() + 1);
        if lines.get().is_multiple_of(1000) {
            accesslog::flush();
        }
    });
    let dropped = metrics::ACCESS_LOG_DROPPED.load(Ordering::Relaxed) - dropped;
    row("  + access log line (to /dev/null, writing included)", with_log, rt, round_trip);
    if dropped > 0 {
        println!("    ({dropped} access log lines dropped: the writer thread fell behind)");
    }
    accesslog::configure(&accesslog::Target::Off);

    let sink = otlp_sink();
    let tracing = |ratio: f64| TracingConfig {
        endpoint: format!("http://{sink}/v1/traces"),
        sample_ratio: ratio,
        queue_size: 1 << 16,
        flush_interval_ms: 50,
        ..TracingConfig::default()
    };
    trace::configure(Some(&tracing(0.0)));
    let unsampled = time(observe);
    row("  + tracing on, request not sampled", unsampled, rt, round_trip);
    trace::configure(Some(&tracing(1.0)));
    let queue_drops = metrics::TRACE_SPANS_DROPPED_QUEUE.load(Ordering::Relaxed);
    let sampled = time(observe);
    row("  + tracing on, sampled (2 spans queued)", sampled, rt, round_trip);
    std::thread::sleep(Duration::from_millis(500));
    let queue_drops = metrics::TRACE_SPANS_DROPPED_QUEUE.load(Ordering::Relaxed) - queue_drops;
    println!(
        "    (exporter: {} spans exported, {} dropped because the queue was full, {} failed)",
        metrics::TRACE_SPANS_EXPORTED.load(Ordering::Relaxed),
        queue_drops,
        metrics::TRACE_SPANS_DROPPED_EXPORT.load(Ordering::Relaxed)
    );
    trace::configure(None);

    let reasons = vec!["stop".to_string()];
    let span = |kind| Span {
        trace_id: [7; 16],
        span_id: [1; 8],
        parent_span_id: Some([2; 8]),
        trace_state: "",
        name: "POST /v1/chat/completions".into(),
        kind,
        start_unix_nanos: 1,
        end_unix_nanos: 2,
        attributes: vec![
            ("gen_ai.operation.name", Value::str("chat")),
            ("gen_ai.request.model", Value::str("gpt-4o-mini")),
            ("gen_ai.response.model", Value::str("gpt-4o-mini-2024-07-18")),
            ("gen_ai.provider.name", Value::str("openai")),
            ("gen_ai.usage.input_tokens", Value::Int(60)),
            ("gen_ai.usage.output_tokens", Value::Int(20)),
            ("gen_ai.response.finish_reasons", Value::StrArray(&reasons)),
            ("http.response.status_code", Value::Int(200)),
        ],
        error: None,
    };
    let pair = [span(SpanKind::Server), span(SpanKind::Client)];
    let encode = time(|| {
        black_box(trace::otlp::span_entries(black_box(&pair)));
    });
    row("  of which: OTLP encoding of its 2 spans", encode, rt, round_trip);
    let entries: Vec<u8> = (0..256).flat_map(|_| trace::otlp::span_entries(&pair)).collect();
    let wrap = time(|| {
        black_box(trace::otlp::export_request(&[], ("switchyard", "0"), black_box(&entries)));
    }) / 256.0;
    row("exporter thread: batch of 256 requests, per request", wrap, rt, round_trip);

    let off_check = time(|| {
        black_box(trace::enabled());
    });
    let flag = std::sync::atomic::AtomicBool::new(false);
    let load = time(|| {
        black_box(flag.load(Ordering::Relaxed));
    });
    row("tracing off: the per-request check", off_check, "one relaxed atomic load", load);

    // The recorder alone, against the one it replaced, on one thread and on two at once.
    let labels = GenAiLabels {
        operation: metrics::label("chat"),
        provider: metrics::label("openai"),
        request_model: metrics::model_label("gpt-4o-mini"),
        response_model: metrics::model_label("gpt-4o-mini-2024-07-18"),
        client: metrics::label("team-a"),
        backend: metrics::label("primary"),
        error: metrics::EMPTY,
    };
    let record = || {
        let labels = GenAiLabels {
            client: metrics::label("team-a"),
            backend: metrics::label("primary"),
            request_model: metrics::model_label("gpt-4o-mini"),
            ..labels
        };
        metrics::record_request(
            &labels,
            &GenAiSample {
                status: 200,
                duration: 0.5,
                ttft: Some(0.1),
                tpot: Some(0.02),
                usage: Some(&usage),
                ..GenAiSample::default()
            },
        );
    };
    let old = || previous_recorder::record("team-a", "gpt-4o*", "primary", 60, 20);
    let new1 = time(record);
    let old1 = time(old);
    row("metrics: record a request, 1 thread", new1, "previous global-mutex recorder", old1);
    let new_cpu1 = time_parallel(1, record);
    let new_cpu2 = time_parallel(2, record);
    let old_cpu1 = time_parallel(1, old);
    let old_cpu2 = time_parallel(2, old);
    row("metrics: CPU per record, 2 threads (ours)", new_cpu2, "the same on 1 thread", new_cpu1);
    row("metrics: CPU per record, 2 threads (previous)", old_cpu2, "the same on 1 thread", old_cpu1);
}
