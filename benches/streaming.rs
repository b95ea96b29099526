//! Streaming: time to first byte added by the gateway (and its CPU per stream of that sequential load),
//! and the gateway's CPU per relayed SSE event.
//!
//! `cargo bench --bench streaming` (env: BENCH_GATEWAY_CONFIG=JSON merged into the gateway's config, e.g.
//! `{"workers": 1}`).

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::*;
use may::net::TcpStream;

/// Median and p99 time to the first body chunk of `n` sequential streams on one connection.
fn ttfb(addr: std::net::SocketAddr, n: usize) -> (f64, f64) {
    let request = chat_request("bench", 200, true, "x-bench-events: 3\r\n");
    let handle = may::go!(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.set_nodelay(true);
        let mut buf = Vec::new();
        let mut times = Vec::with_capacity(n);
        for i in 0..n + 20 {
            let t0 = Instant::now();
            s.write_all(&request).unwrap();
            let (_, first) = read_response(&mut s, &mut buf).expect("stream");
            if i >= 20 {
                times.push(first.expect("a first chunk").duration_since(t0).as_secs_f64() * 1e6);
            }
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (times[n / 2], times[n * 99 / 100])
    });
    handle.join().unwrap()
}

/// `streams` concurrent streams of `events` events each, `delay_ms` apart; returns events relayed.
fn relay_load(addr: std::net::SocketAddr, streams: usize, events: usize, delay_ms: u64) -> u64 {
    let request = Arc::new(chat_request(
        "bench",
        200,
        true,
        &format!("x-bench-events: {events}\r\nx-bench-delay-ms: {delay_ms}\r\n"),
    ));
    let done = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..streams)
        .map(|_| {
            let (request, done) = (request.clone(), done.clone());
            may::go!(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let mut buf = Vec::new();
                s.write_all(&request).unwrap();
                if let Some((200, _)) = read_response(&mut s, &mut buf) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    done.load(Ordering::Relaxed) * (events as u64 + 1)
}

fn main() {
    init_may();
    let upstream = start_upstream();
    let gateway = start_gateway(upstream, gateway_config_from_env());
    let nginx = start_nginx(upstream);
    println!("streaming benchmark, {}", machine());
    println!("time to first byte (µs)     p50      p99    added p50   CPU per stream (µs)");
    let (d50, d99) = ttfb(upstream, 500);
    println!("  direct               {d50:>8.0} {d99:>8.0}");
    let cpu0 = cpu_seconds(gateway.child.id());
    let (g50, g99) = ttfb(gateway.addr, 500);
    let g_cpu = (cpu_seconds(gateway.child.id()) - cpu0) / 520.0 * 1e6;
    println!("  through switchyard   {g50:>8.0} {g99:>8.0} {:>10.0} {g_cpu:>21.1}", g50 - d50);
    if let Some(n) = &nginx {
        let cpu0 = cpu_seconds_tree(n.child.id());
        let (n50, n99) = ttfb(n.addr, 500);
        let n_cpu = (cpu_seconds_tree(n.child.id()) - cpu0) / 520.0 * 1e6;
        println!("  through nginx        {n50:>8.0} {n99:>8.0} {:>10.0} {n_cpu:>21.1}", n50 - d50);
    }
    println!("relay CPU per event (µs), 64 concurrent streams × 200 events:");
    println!("  {:<22} {:>16} {:>16}", "", "2 ms apart", "back to back");
    let mut targets = vec![("switchyard", gateway.addr, gateway.child.id(), false)];
    if let Some(n) = &nginx {
        targets.push(("nginx", n.addr, n.child.id(), true));
    }
    for (name, addr, pid, tree) in targets {
        let cpu = |pid| if tree { cpu_seconds_tree(pid) } else { cpu_seconds(pid) };
        let mut cells = Vec::new();
        for delay in [2, 0] {
            let cpu0 = cpu(pid);
            let relayed = relay_load(addr, 64, 200, delay);
            cells.push((cpu(pid) - cpu0) / relayed.max(1) as f64 * 1e6);
        }
        println!("  {name:<22} {:>16.2} {:>16.2}", cells[0], cells[1]);
    }
    if nginx.is_none() {
        println!("(nginx not found: install it to compare in the same run)");
    }
}
