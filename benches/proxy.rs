//! Proxy throughput and added latency: the same closed-loop load straight to the upstream, through
//! Switchyard, and (when installed) through nginx `proxy_pass`, in one run. Small and large bodies.
//!
//! `cargo bench --bench proxy` (env: BENCH_SECONDS, default 5; BENCH_CONNS, default 64; BENCH_ONLY=small
//! to skip the large-body runs, e.g. while profiling; BENCH_BINARY=path to measure another build of the
//! gateway; BENCH_COMPARE=path to measure a second build in the same run, each row alternating between
//! the two for BENCH_ROUNDS rounds, default 1, e.g. the static `dist` build against `release`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

fn main() {
    init_may();
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let conns: usize = std::env::var("BENCH_CONNS").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let duration = Duration::from_secs(seconds);
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let upstream = start_upstream();
    let mut binaries = vec![gateway_binary()];
    binaries.extend(std::env::var("BENCH_COMPARE").ok());
    // Each build is named by its profile directory (`release`, `dist`) when more than one is measured.
    let label = |path: &str| {
        let dir = std::path::Path::new(path).parent().and_then(|d| d.file_name());
        let dir = dir.map_or("?".to_string(), |d| d.to_string_lossy().into_owned());
        format!("sy {}", dir.chars().take(9).collect::<String>())
    };
    let gateways: Vec<(String, Proc, u64)> = binaries
        .iter()
        .map(|b| {
            let name = if binaries.len() > 1 { label(b) } else { "switchyard".to_string() };
            (
                name,
                start_gateway_binary(b, upstream, serde_json::json!({})),
                std::fs::metadata(b).map_or(0, |m| m.len()),
            )
        })
        .collect();
    let nginx = start_nginx(upstream);
    println!("proxy benchmark: {conns} keep-alive connections, {seconds} s per run, {}", machine());
    for (name, gw, size) in &gateways {
        println!("{name}: binary {size} bytes, RSS idle {} KiB", status_field(gw.child.id(), "VmRSS:"));
    }
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
        let mut totals = vec![(Run::default(), 0.0f64); gateways.len()];
        for _ in 0..rounds {
            for ((_, gw, _), (total, cpu_total)) in gateways.iter().zip(totals.iter_mut()) {
                let cpu0 = cpu_seconds(gw.child.id());
                let r = closed_loop(gw.addr, conns, duration, request.clone());
                *cpu_total += cpu_seconds(gw.child.id()) - cpu0;
                total.requests += r.requests;
                total.errors += r.errors;
                total.seconds += r.seconds;
                total.latencies_us.extend(r.latencies_us);
            }
        }
        let mut measured: Vec<(Run, f64)> = Vec::new();
        for ((name, gw, _), (mut total, cpu_total)) in gateways.iter().zip(totals) {
            total.latencies_us.sort_unstable();
            let cpu = cpu_total / (total.requests.max(1) as f64) * 1e6;
            row(label, name, &total, Some(cpu), direct.rps());
            println!("{:<8} {:<12} {name} RSS under load: {} KiB", "", "", status_field(gw.child.id(), "VmRSS:"));
            measured.push((total, cpu));
        }
        if let [(a, cpu_a), (b, cpu_b)] = &measured[..] {
            println!(
                "{:<8} {:<12} {} vs {}: throughput {:.3}x, CPU per request {:.3}x",
                "",
                "",
                gateways[1].0,
                gateways[0].0,
                b.rps() / a.rps(),
                cpu_b / cpu_a
            );
        }
        let through = measured.swap_remove(0).0;
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
    for (name, gw, _) in &gateways {
        println!(
            "\n{name} peak RSS (VmHWM): {} KiB, threads: {}",
            status_field(gw.child.id(), "VmHWM:"),
            status_field(gw.child.id(), "Threads:")
        );
    }
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
