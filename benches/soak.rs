//! A long soak: 64 keep-alive clients each streaming one response after another (10 SSE events 20 ms
//! apart) through one gateway, for `BENCH_SOAK_SECONDS` (default 1800). Every `BENCH_SOAK_SAMPLE`
//! seconds (default 60) it prints the gateway's RSS, open descriptors, OS threads, open client
//! connections (each one coroutine) and streams completed; at the end, the change from the first sample
//! after warm-up to the last.
//!
//! `cargo bench --bench soak` (30 minutes), or `BENCH_SOAK_SECONDS=120 cargo bench --bench soak`.
//! `BENCH_SOAK_CLIENTS` changes the number of clients; `BENCH_SOAK_MODE=chat` sends non-streamed chat
//! requests back to back instead (the highest request rate: memory that grows per request shows here).
//! `BENCH_SOAK_CLIENTS=1 BENCH_SOAK_MODE=chat BENCH_SOAK_SECONDS=120 BENCH_SOAK_SAMPLE=20 cargo bench --bench soak`

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn main() {
    init_may();
    let seconds: u64 = std::env::var("BENCH_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1800);
    let sample: u64 = std::env::var("BENCH_SOAK_SAMPLE").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let clients: usize = std::env::var("BENCH_SOAK_CLIENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let chat = std::env::var("BENCH_SOAK_MODE").is_ok_and(|m| m == "chat");
    let upstream = start_upstream();
    let gateway = start_gateway(upstream, serde_json::json!({}));
    let (pid, addr) = (gateway.child.id(), gateway.addr);
    let kind = if chat { "chat" } else { "streaming" };
    println!("soak: {clients} {kind} clients for {seconds} s, {}", machine());
    let request = Arc::new(if chat {
        chat_request("bench", 200, false, "")
    } else {
        chat_request("bench", 200, true, "x-bench-events: 10\r\nx-bench-delay-ms: 20\r\n")
    });
    let stop = Arc::new(AtomicBool::new(false));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    for _ in 0..clients {
        let (request, stop, completed, errors) = (request.clone(), stop.clone(), completed.clone(), errors.clone());
        may::go!(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = connect(addr) else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    may::coroutine::sleep(Duration::from_millis(100));
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                // Keep-alive: many streams per connection, until an error or the end.
                while !stop.load(Ordering::Relaxed) {
                    let mut buf = Vec::new();
                    if s.write_all(&request).is_err() {
                        break;
                    }
                    match read_response(&mut s, &mut buf) {
                        Some((200, _)) => completed.fetch_add(1, Ordering::Relaxed),
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    };
                }
            }
        });
    }
    println!(
        "{:>7} {:>9} {:>9} {:>8} {:>12} {:>11} {:>7}",
        "second", "RSS KiB", "fds", "threads", "connections", "streams", "errors"
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(sample.min(seconds)));
        let row = (
            started.elapsed().as_secs(),
            status_field(pid, "VmRSS:"),
            std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0) as u64,
            status_field(pid, "Threads:"),
            open_connections(addr),
            completed.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
        );
        println!("{:>7} {:>9} {:>9} {:>8} {:>12} {:>11} {:>7}", row.0, row.1, row.2, row.3, row.4, row.5, row.6);
        rows.push(row);
    }
    stop.store(true, Ordering::Relaxed);
    // The first sample is warm-up; steady state starts at the second.
    if let (Some(first), Some(last)) = (rows.get(1).or(rows.first()), rows.last()) {
        let minutes = (last.0 - first.0).max(1) as f64 / 60.0;
        println!(
            "steady state from {} s to {} s: RSS {} -> {} KiB ({:+.1} KiB/min), fds {} -> {}, threads {} -> {}, connections {} -> {}",
            first.0,
            last.0,
            first.1,
            last.1,
            (last.1 as f64 - first.1 as f64) / minutes,
            first.2,
            last.2,
            first.3,
            last.3,
            first.4,
            last.4
        );
    }
}

/// The gateway's open client connections, from its own /metrics (each one coroutine).
fn open_connections(addr: std::net::SocketAddr) -> u64 {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return 0 };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix("switchyard_open_connections ").and_then(|v| v.trim().parse().ok()))
        .map(|n: u64| n.saturating_sub(1))
        .unwrap_or(0)
}
