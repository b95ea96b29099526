//! Concurrency: thousands of simultaneous slow streams through one gateway: completed, errors, RSS
//! peak and per stream, OS threads.
//!
//! `cargo bench --bench concurrency` (env BENCH_STREAMS="1000,5000"). With `BENCH_BACKEND=mock` the
//! streams come from the built-in mock backend (chunks 300 ms apart) instead of an upstream socket, so a
//! stream costs two descriptors in all (the client's and the gateway's) and 10,000 streams fit under an
//! open-file limit of 20,000 (`BENCH_BACKEND=mock BENCH_STREAMS=10000`).

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

fn main() {
    init_may();
    let counts: Vec<usize> = std::env::var("BENCH_STREAMS")
        .unwrap_or_else(|_| "1000,5000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mock = std::env::var("BENCH_BACKEND").is_ok_and(|b| b == "mock");
    // Each stream holds two descriptors here (client, upstream side) and two in the gateway; with the
    // mock backend, one in each.
    let per_stream = if mock { 1 } else { 2 };
    let max_files = open_files_limit();
    let counts: Vec<usize> = counts
        .into_iter()
        .filter(|n| {
            let need = (*n as u64) * per_stream + 256;
            let fits = need <= max_files;
            if !fits {
                println!("skipping {n} streams: `ulimit -n` is {max_files}, they need about {need}");
            }
            fits
        })
        .collect();
    let upstream = start_upstream();
    // BENCH_SERVER: a JSON object of `server` settings to try (e.g. {"stack_kib": 64}).
    let mut extra =
        match std::env::var("BENCH_SERVER").ok().and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok()) {
            Some(server) => serde_json::json!({ "server": server }),
            None => serde_json::json!({}),
        };
    if mock {
        extra["backends"] = bench_backends(upstream, 300);
    }
    let gateway = start_gateway(upstream, extra);
    let pid = gateway.child.id();
    let addr = gateway.addr;
    let idle_kib = status_field(pid, "VmRSS:");
    println!("concurrency benchmark, {}; gateway idle RSS {idle_kib} KiB", machine());
    println!(
        "{:>7} {:>10} {:>7} {:>9} {:>14} {:>15} {:>8}",
        "streams", "completed", "errors", "seconds", "peak RSS MiB", "KiB per stream", "threads"
    );
    for n in counts {
        let (stop, peak) = rss_sampler(pid);
        let request = Arc::new(if mock {
            chat_request("demo", 200, true, "")
        } else {
            chat_request("bench", 200, true, "x-bench-events: 10\r\nx-bench-delay-ms: 300\r\n")
        });
        let completed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let max_threads = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (request, completed, errors) = (request.clone(), completed.clone(), errors.clone());
                may::go!(move || {
                    let started = Instant::now();
                    let outcome = (|| {
                        // The blocking connect of `common::connect`, not may's: after may's, a read
                        // failed now and then with the connect's `EINPROGRESS` (about one stream in
                        // 20,000), read from the other scheduler thread's errno (`src/connect.rs`).
                        let mut s = connect(addr).map_err(|e| format!("connect: {e}"))?;
                        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                        s.write_all(&request).map_err(|e| format!("write: {e}"))?;
                        let mut buf = Vec::new();
                        match read_response(&mut s, &mut buf) {
                            Some((200, _)) => Ok(()),
                            Some((status, _)) => Err(format!("status {status}: {}", String::from_utf8_lossy(&buf))),
                            None => {
                                Err(format!("response cut short {}", cut_short(read_ended(), started.elapsed(), &buf)))
                            }
                        }
                    })();
                    match outcome {
                        Ok(()) => {
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("stream failed: {e}");
                            }
                        }
                    }
                })
            })
            .collect();
        let sampler_threads = max_threads.clone();
        let watch = std::thread::spawn(move || {
            for _ in 0..60 {
                sampler_threads.fetch_max(status_field(pid, "Threads:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        for h in handles {
            let _ = h.join();
        }
        let seconds = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let _ = watch.join();
        let peak_kib = peak.load(Ordering::Relaxed);
        println!(
            "{n:>7} {:>10} {:>7} {seconds:>9.1} {:>14.1} {:>15.1} {:>8}",
            completed.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
            peak_kib as f64 / 1024.0,
            peak_kib.saturating_sub(idle_kib) as f64 / n as f64,
            max_threads.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The soft limit on open files, from /proc/self/limits (no libc needed).
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}
