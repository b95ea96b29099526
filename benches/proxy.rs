//! Proxy throughput, latency and CPU per request: the same closed-loop load straight to the upstream,
//! through Switchyard, and (when installed) through nginx `proxy_pass`, in one run, as interleaved rounds
//! (medians reported). Scenarios: `chat` (a 549 B JSON answer), `stream` (12 SSE events, 2,709 B, that
//! the upstream sends in one write), `64KiB` (a large request body), and those only the gateway can
//! serve, so measured without the direct and nginx rows: `messages` and `msg-strm`, an Anthropic client's
//! `/v1/messages` (plain, and streamed as 20 events) translated to the OpenAI upstream and back; and an
//! OpenAI client's chat translated to Bedrock Converse (`bedrock`, and `bdr-strm`: ConverseStream's AWS
//! event stream of 12 pieces of text) and to Gemini (`gemini`, and `gem-strm`: 12 SSE chunks), the
//! upstream answering in each provider's schema by path.
//!
//! Every process runs at the bench's own priority: each thread of the gateway and of nginx is reniced to
//! it (`renice` acts on one thread at a time on Linux).
//!
//! `cargo bench --bench proxy` (env: BENCH_SECONDS per round, default 5; BENCH_ROUNDS, default 5;
//! BENCH_CONNS, default 64; BENCH_ONLY=chat,stream to choose scenarios; BENCH_BINARY=path to measure
//! another build of the gateway; BENCH_COMPARE=path to measure a second build in the same rounds, e.g.
//! the static `dist` build against `release`; BENCH_OBSERVABILITY=1 to add the small-body load through three
//! gateways in the same run: access log and tracing off, the access log to a file, and the access log plus
//! every request traced to a local OTLP sink; BENCH_GATEWAY_CONFIG=JSON merged into the gateways' config,
//! e.g. `{"workers": 1}`; BENCH_RATE=<req/s> to send at that rate over the connections instead of
//! back to back, so that p50/p99 and CPU compare the proxies at the same load; BENCH_NO_NGINX=1 to leave
//! nginx out, as the profile-guided build's training run does (`deploy/pgo-build.sh`);
//! BENCH_GATEWAY_LOG=<level> for the gateways' log, `error` by default).

mod common;
#[path = "common/otlp_sink.rs"]
mod otlp_sink;

use std::sync::Arc;
use std::time::Duration;

use common::*;

fn main() {
    init_may();
    let seconds = env_u64("BENCH_SECONDS", 5);
    let rounds = env_u64("BENCH_ROUNDS", 5) as usize;
    let conns = env_u64("BENCH_CONNS", 64) as usize;
    let only: Option<Vec<String>> =
        std::env::var("BENCH_ONLY").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let duration = Duration::from_secs(seconds);
    let upstream = start_upstream();
    let extra = gateway_config_from_env();
    let mut binaries = vec![gateway_binary()];
    binaries.extend(std::env::var("BENCH_COMPARE").ok());
    // Each build is named by its profile directory (`release`, `dist`) when two are measured.
    let gateways: Vec<(String, Proc)> = binaries
        .iter()
        .map(|b| {
            let dir = std::path::Path::new(b).parent().and_then(|d| d.file_name());
            let name = match (binaries.len(), dir) {
                (1, _) | (_, None) => "switchyard".to_string(),
                (_, Some(d)) => format!("sy-{}", d.to_string_lossy().chars().take(8).collect::<String>()),
            };
            let size = std::fs::metadata(b).map_or(0, |m| m.len());
            println!("{name}: {b}, {size} bytes");
            (name, start_gateway_binary(b, upstream, extra.clone()))
        })
        .collect();
    let gw_pid = gateways[0].1.child.id();
    let nginx = start_nginx(upstream);
    let nice = own_nice();
    for (_, gw) in &gateways {
        same_priority(gw.child.id(), nice);
    }
    if let Some(n) = &nginx {
        same_priority(n.child.id(), nice);
    }
    println!(
        "proxy benchmark: {conns} keep-alive connections, {}, {rounds} interleaved rounds of {seconds} s, every thread at nice {nice}, {}",
        paced_rate().map_or("each sending as soon as its last answer is in".into(), |r| format!("paced to {r:.0} req/s in all")),
        machine()
    );
    println!("gateway RSS idle: {} KiB", status_field(gw_pid, "VmRSS:"));
    println!();
    println!(
        "{:<8} {:<11} {:>9} {:>8} {:>8} {:>7} {:>11} {:>10} {:>10}",
        "scenario", "target", "req/s", "p50 ms", "p99 ms", "errors", "CPU µs/req", "vs direct", "vs nginx"
    );
    // The last field: whether only the gateway can serve it (a translated schema).
    let scenarios = [
        ("chat", chat_request("bench", 200, false, ""), false),
        ("stream", chat_request("bench", 200, true, "x-bench-events: 12\r\nx-bench-one-write: 1\r\n"), false),
        ("64KiB", chat_request("bench", 64 * 1024, false, ""), false),
        ("messages", messages_request("bench", false), true),
        ("msg-strm", messages_request("bench", true), true),
        ("bedrock", chat_request("bench-bedrock", 200, false, ""), true),
        ("bdr-strm", chat_request("bench-bedrock", 200, true, ""), true),
        ("gemini", chat_request("bench-gemini", 200, false, ""), true),
        ("gem-strm", chat_request("bench-gemini", 200, true, ""), true),
    ];
    for (label, request, translated) in scenarios {
        if only.as_ref().is_some_and(|o| !o.iter().any(|s| s == label)) {
            continue;
        }
        let request = Arc::new(request);
        let direct = (!translated).then(|| closed_loop(upstream, conns, duration, request.clone()));
        let direct_rps = direct.as_ref().map(Run::rps);
        let nginx = nginx.as_ref().filter(|_| !translated);
        let mut ours: Vec<Vec<Measured>> = gateways.iter().map(|_| Vec::new()).collect();
        let mut theirs = Vec::new();
        for _ in 0..rounds {
            for ((_, gw), runs) in gateways.iter().zip(ours.iter_mut()) {
                runs.push(measured(gw.child.id(), false, || closed_loop(gw.addr, conns, duration, request.clone())));
            }
            if let Some(n) = nginx {
                theirs.push(measured(n.child.id(), true, || closed_loop(n.addr, conns, duration, request.clone())));
            }
        }
        if let Some(direct) = &direct {
            row(label, "direct", direct, direct.errors, None, direct_rps, None);
        }
        let nginx_median = (!theirs.is_empty()).then(|| median(&theirs));
        let nginx_rps = nginx_median.as_ref().map(|m| m.run.rps());
        for ((name, _), runs) in gateways.iter().zip(&ours).skip(1) {
            let m = median(runs);
            row(label, name, &m.run, total_errors(runs), Some(m.cpu_us), direct_rps, nginx_rps);
        }
        let errors = total_errors(&ours[0]);
        let ours_median = median(&ours[0]);
        row(label, &gateways[0].0, &ours_median.run, errors, Some(ours_median.cpu_us), direct_rps, nginx_rps);
        if let Some(m) = &nginx_median {
            row(label, "nginx", &m.run, total_errors(&theirs), Some(m.cpu_us), direct_rps, Some(m.run.rps()));
        }
        if rounds > 1 {
            for ((name, _), runs) in gateways.iter().zip(&ours) {
                println!("{:<8} {:<11} {}", "", name, tail(runs));
            }
            if !theirs.is_empty() {
                println!("{:<8} {:<11} {}", "", "nginx", tail(&theirs));
            }
        }
        if let Some(m) = &nginx_median {
            println!(
                "{:<8} {:<11} CPU per request {:.2}x nginx's; p99 {:.2} ms vs {:.2} ms; gateway RSS {} KiB",
                "",
                "",
                ours_median.cpu_us / m.cpu_us,
                ours_median.run.pct(0.99),
                m.run.pct(0.99),
                status_field(gw_pid, "VmRSS:")
            );
        }
    }
    if nginx_binary().is_none() {
        println!("\n(nginx not found: install it (Debian: nginx-light) to compare against proxy_pass in the same run)");
    }
    if std::env::var("BENCH_OBSERVABILITY").is_ok_and(|v| v == "1") {
        observability(upstream, conns, duration);
    }
    println!(
        "\ngateway peak RSS (VmHWM): {} KiB, threads: {}",
        status_field(gw_pid, "VmHWM:"),
        status_field(gw_pid, "Threads:")
    );
}

fn row(
    label: &str,
    target: &str,
    r: &Run,
    errors: u64,
    cpu_us: Option<f64>,
    direct_rps: Option<f64>,
    nginx_rps: Option<f64>,
) {
    println!(
        "{:<8} {:<11} {:>9.0} {:>8.2} {:>8.2} {:>7} {:>11} {:>10} {:>10}",
        label,
        target,
        r.rps(),
        r.pct(0.5),
        r.pct(0.99),
        errors,
        cpu_us.map_or("-".into(), |c| format!("{c:.1}")),
        direct_rps.map_or("-".into(), |d| format!("{:.2}x", r.rps() / d)),
        nginx_rps.map_or("-".into(), |n| format!("{:.2}x", r.rps() / n))
    );
}

/// CPU per request with the access log and tracing off, the access log on, and both on (every request
/// traced), each through its own gateway, in one run.
fn observability(upstream: std::net::SocketAddr, conns: usize, duration: Duration) {
    let sink = otlp_sink::otlp_sink();
    let dir = std::env::temp_dir().join(format!("switchyard-bench-obs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let log = log.to_str().unwrap();
    let setups = [
        ("obs off", serde_json::json!({"access_log": "off"})),
        ("+log", serde_json::json!({"access_log": log})),
        (
            "+log+trace",
            serde_json::json!({"access_log": log,
            "tracing": {"endpoint": format!("http://{sink}/v1/traces"), "sample_ratio": 1.0, "queue_size": 65536}}),
        ),
    ];
    let request = Arc::new(chat_request("bench", 200, false, ""));
    println!(
        "\nobservability, small body, {conns} connections (CPU per request includes the writer and exporter threads):"
    );
    let mut first = None;
    for (label, extra) in setups {
        let gw = start_gateway(upstream, extra);
        let pid = gw.child.id();
        let _ = closed_loop(gw.addr, conns, Duration::from_millis(500), request.clone());
        let cpu0 = cpu_seconds(pid);
        let r = closed_loop(gw.addr, conns, duration, request.clone());
        let cpu = (cpu_seconds(pid) - cpu0) / (r.requests.max(1) as f64) * 1e6;
        let base = *first.get_or_insert(cpu);
        println!(
            "{:<8} {:<12} {:>10.0} req/s  p99 {:>6.2} ms  CPU {:>6.1} µs/req  ({:+.1} µs vs off)",
            "small",
            label,
            r.rps(),
            r.pct(0.99),
            cpu,
            cpu - base
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
