//! Proxy throughput and added latency: the same closed-loop load straight to the upstream, through
//! Switchyard, and (when installed) through nginx `proxy_pass`, in one run. Small and large bodies.
//!
//! `cargo bench --bench proxy` (env: BENCH_SECONDS, default 5; BENCH_CONNS, default 64; BENCH_ONLY=small
//! to skip the large-body runs, e.g. while profiling; BENCH_OBSERVABILITY=1 to add the small-body load
//! through three gateways in the same run: access log and tracing off, the access log to a file, and the
//! access log plus every request traced to a local OTLP sink).

mod common;
#[path = "common/otlp_sink.rs"]
mod otlp_sink;

use std::sync::Arc;
use std::time::Duration;

use common::*;

fn main() {
    init_may();
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let conns: usize = std::env::var("BENCH_CONNS").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let duration = Duration::from_secs(seconds);
    let upstream = start_upstream();
    let gateway = start_gateway(upstream, serde_json::json!({}));
    let nginx = start_nginx(upstream);
    let gw_pid = gateway.child.id();
    println!("proxy benchmark: {conns} keep-alive connections, {seconds} s per run, {}", machine());
    println!("gateway RSS idle: {} KiB", status_field(gw_pid, "VmRSS:"));
    println!();
    println!(
        "{:<8} {:<12} {:>10} {:>9} {:>9} {:>9} {:>8} {:>12} {:>8}",
        "body", "target", "req/s", "p50 ms", "p99 ms", "p999 ms", "errors", "CPU µs/req", "vs direct"
    );
    let only_small = std::env::var("BENCH_ONLY").is_ok_and(|v| v == "small");
    for (label, size) in [("small", 200usize), ("64KiB", 64 * 1024)] {
        if only_small && label != "small" {
            continue;
        }
        let request = Arc::new(chat_request("bench", size, false, ""));
        let direct = closed_loop(upstream, conns, duration, request.clone());
        row(label, "direct", &direct, None, direct.rps());
        let cpu0 = cpu_seconds(gw_pid);
        let through = closed_loop(gateway.addr, conns, duration, request.clone());
        let cpu = (cpu_seconds(gw_pid) - cpu0) / (through.requests.max(1) as f64) * 1e6;
        row(label, "switchyard", &through, Some(cpu), direct.rps());
        println!("{:<8} {:<12} gateway RSS under load: {} KiB", "", "", status_field(gw_pid, "VmRSS:"));
        if let Some(n) = &nginx {
            let cpu0 = cpu_seconds_tree(n.child.id());
            let via = closed_loop(n.addr, conns, duration, request.clone());
            let cpu = (cpu_seconds_tree(n.child.id()) - cpu0) / (via.requests.max(1) as f64) * 1e6;
            row(label, "nginx", &via, Some(cpu), direct.rps());
            println!(
                "{:<8} {:<12} switchyard/nginx throughput {:.2}x, p99 {:.2} ms vs {:.2} ms",
                "",
                "",
                through.rps() / via.rps(),
                through.pct(0.99),
                via.pct(0.99)
            );
        }
    }
    if nginx.is_none() {
        println!("\n(nginx not found: install it to compare against proxy_pass in the same run)");
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

fn row(label: &str, target: &str, r: &Run, cpu_us: Option<f64>, direct_rps: f64) {
    println!(
        "{:<8} {:<12} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>12} {:>7.2}x",
        label,
        target,
        r.rps(),
        r.pct(0.5),
        r.pct(0.99),
        r.pct(0.999),
        r.errors,
        cpu_us.map_or("-".into(), |c| format!("{c:.1}")),
        r.rps() / direct_rps
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
