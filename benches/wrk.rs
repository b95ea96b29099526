//! The issue's own measurement, with tools that are not ours: `wrk -t2 -c64` (closed loop) against
//! Switchyard and against nginx `proxy_pass`, both in front of an nginx upstream in a process of its
//! own (one worker, fixed answers), every thread of every process at the bench's priority, interleaved
//! rounds, medians. The `proxy` bench's load tool and upstream share one process and its two threads;
//! here the load tool, the upstream and the proxy are three programs, as in production.
//!
//! Scenarios: `chat` (the 549 B answer of the other benches) and `stream` (12 SSE events and `[DONE]`,
//! 2,296 B, which the upstream sends with a Content-Length: nginx's `return` cannot send a chunked body,
//! so nginx relays it as it is while Switchyard reads it as events and sends them chunked).
//!
//! `cargo bench --bench wrk` (env: BENCH_SECONDS per round, default 10; BENCH_ROUNDS, default 5;
//! BENCH_BINARY=path to measure another build of the gateway). Needs `wrk` and `nginx` (Debian: `wrk`,
//! `nginx-light`); says so and stops without them.

mod common;

use std::process::Command;

use common::*;

/// One wrk run's figures.
struct WrkRun {
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    /// Non-2xx answers and socket errors, as wrk words them (empty: none).
    errors: String,
    cpu_us: Option<f64>,
}

fn main() {
    let seconds = env_u64("BENCH_SECONDS", 10);
    let rounds = env_u64("BENCH_ROUNDS", 5) as usize;
    let (Some(nginx), true) = (nginx_binary(), Command::new("wrk").arg("--version").output().is_ok()) else {
        println!("wrk bench: needs wrk and nginx (Debian: apt-get install wrk nginx-light); skipped");
        return;
    };
    // The upstream's directory holds the wrk scripts too; it is removed when the upstream stops.
    let dir = scratch("wrk");
    let upstream_port = free_port();
    let upstream = start_nginx_upstream(nginx, dir.clone(), upstream_port);
    let upstream_addr: std::net::SocketAddr = format!("127.0.0.1:{upstream_port}").parse().unwrap();
    let mut extra = gateway_config_from_env();
    extra["backends"] = serde_json::json!([
        {"name": "chat", "schema": "openai", "base_url": format!("http://{upstream_addr}/v1")},
        {"name": "stream", "schema": "openai", "base_url": format!("http://{upstream_addr}/s/v1")}
    ]);
    extra["routes"] = serde_json::json!([
        {"model": "bench", "backends": [{"backend": "chat"}]},
        {"model": "bench-stream", "backends": [{"backend": "stream"}]}
    ]);
    let gateway = start_gateway_binary(&gateway_binary(), upstream_addr, extra);
    let proxy = start_nginx(upstream_addr).expect("nginx starts");
    let nice = own_nice();
    for pid in [gateway.child.id(), proxy.child.id(), upstream.child.id()] {
        same_priority(pid, nice);
    }
    println!(
        "wrk benchmark: wrk -t2 -c64, {rounds} interleaved rounds of {seconds} s, an nginx upstream in its own process, every thread at nice {nice}, {}",
        machine()
    );
    println!();
    println!(
        "{:<8} {:<11} {:>9} {:>8} {:>8} {:>8} {:>11} {:>10}",
        "scenario", "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "CPU µs/req", "vs nginx"
    );
    for (label, model, stream, nginx_path) in
        [("chat", "bench", false, "/v1/chat/completions"), ("stream", "bench-stream", true, "/s/v1/chat/completions")]
    {
        let script = dir.join(format!("{label}.lua"));
        std::fs::write(&script, wrk_script(model, stream)).unwrap();
        let direct = wrk(&format!("http://{upstream_addr}{nginx_path}"), &script, seconds, None);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..rounds {
            let url = format!("http://{}/v1/chat/completions", gateway.addr);
            ours.push(wrk(&url, &script, seconds, Some((gateway.child.id(), false))));
            let url = format!("http://{}{nginx_path}", proxy.addr);
            theirs.push(wrk(&url, &script, seconds, Some((proxy.child.id(), true))));
        }
        let nginx_rps = median_of(&theirs, |r| r.rps);
        row(label, "direct", &direct, None);
        row(label, "switchyard", &median_run(&ours), Some(nginx_rps));
        row(label, "nginx", &median_run(&theirs), Some(nginx_rps));
        let p99s = |runs: &[WrkRun]| {
            let mut v: Vec<f64> = runs.iter().map(|r| r.p99_ms).collect();
            v.sort_by(f64::total_cmp);
            v.iter().map(|p| format!("{p:.2}")).collect::<Vec<_>>().join(" ")
        };
        println!(
            "{:<8} {:<11} CPU per request {:.2}x nginx's; median p99 {:.2} ms vs {:.2} ms; p99 by round: switchyard {}, nginx {}",
            "",
            "",
            median_of(&ours, |r| r.cpu_us.unwrap_or(f64::NAN)) / median_of(&theirs, |r| r.cpu_us.unwrap_or(f64::NAN)),
            median_of(&ours, |r| r.p99_ms),
            median_of(&theirs, |r| r.p99_ms),
            p99s(&ours),
            p99s(&theirs)
        );
    }
    drop(upstream);
}

/// nginx with one worker on `port`, answering the chat and the stream scenario with fixed bodies.
fn start_nginx_upstream(nginx: &str, dir: std::path::PathBuf, port: u16) -> Proc {
    let chat = std::str::from_utf8(CHAT_REPLY).unwrap();
    let mut events = String::new();
    for i in 0..12 {
        events.push_str(&format!(
            r#"data: {{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench","choices":[{{"index":0,"delta":{{"content":"token number {i} with some text "}},"finish_reason":null}}]}}\n\n"#
        ));
    }
    events.push_str(r"data: [DONE]\n\n");
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nerror_log {d}/upstream-error.log error;\npid {d}/upstream.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 10000000; client_body_temp_path {d};\n\
           server {{ listen 127.0.0.1:{port};\n\
             location = /v1/chat/completions {{ default_type application/json; return 200 '{chat}'; }}\n\
             location = /s/v1/chat/completions {{ default_type text/event-stream; return 200 '{events}'; }} }} }}\n",
        d = dir.display()
    );
    let path = dir.join("upstream.conf");
    std::fs::write(&path, conf).unwrap();
    spawn_nginx(nginx, &path, dir, port).expect("start the nginx upstream")
}

/// A wrk script posting a chat request for `model` (streamed when `stream`).
fn wrk_script(model: &str, stream: bool) -> String {
    let body = serde_json::json!({"model": model, "stream": stream,
        "messages": [{"role": "user", "content": "Say hello in a short sentence, please. ".repeat(4)}]});
    let body = serde_json::to_string(&body.to_string()).unwrap();
    format!("wrk.method = \"POST\"\nwrk.body = {body}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n")
}

/// One wrk run of `seconds` against `url`; with `proxy` (its PID, and whether its children count: nginx's
/// workers), the CPU it used per request.
fn wrk(url: &str, script: &std::path::Path, seconds: u64, proxy: Option<(u32, bool)>) -> WrkRun {
    let cpu = |(pid, tree): (u32, bool)| if tree { cpu_seconds_tree(pid) } else { cpu_seconds(pid) };
    let before = proxy.map(cpu);
    let out = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| text.lines().find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()));
    let rps: f64 = field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let cpu_us = proxy.zip(before).map(|(p, b)| (cpu(p) - b) / (rps * seconds as f64).max(1.0) * 1e6);
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    WrkRun {
        rps,
        p50_ms: field("50%").map_or(f64::NAN, |v| millis(&v)),
        p90_ms: field("90%").map_or(f64::NAN, |v| millis(&v)),
        p99_ms: field("99%").map_or(f64::NAN, |v| millis(&v)),
        errors,
        cpu_us,
    }
}

/// A wrk duration (`704.00us`, `2.40ms`, `1.02s`) in milliseconds.
fn millis(v: &str) -> f64 {
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        (v, f64::NAN)
    };
    number.parse::<f64>().map_or(f64::NAN, |n| n * scale)
}

fn median_of(runs: &[WrkRun], f: impl Fn(&WrkRun) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The round with the median throughput (its latencies and CPU are that round's).
fn median_run(runs: &[WrkRun]) -> WrkRun {
    let mut order: Vec<&WrkRun> = runs.iter().collect();
    order.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let m = order[order.len() / 2];
    let errors = runs.iter().map(|r| r.errors.as_str()).filter(|e| !e.is_empty()).collect::<Vec<_>>().join("; ");
    WrkRun { rps: m.rps, p50_ms: m.p50_ms, p90_ms: m.p90_ms, p99_ms: m.p99_ms, errors, cpu_us: m.cpu_us }
}

fn row(label: &str, target: &str, r: &WrkRun, nginx_rps: Option<f64>) {
    println!(
        "{:<8} {:<11} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>11} {:>10}{}",
        label,
        target,
        r.rps,
        r.p50_ms,
        r.p90_ms,
        r.p99_ms,
        r.cpu_us.map_or("-".into(), |c| format!("{c:.1}")),
        nginx_rps.map_or("-".into(), |n| format!("{:.2}x", r.rps / n)),
        if r.errors.is_empty() { String::new() } else { format!("  errors: {}", r.errors) }
    );
}
