//! Streaming: time to first byte added by the gateway (and its CPU per stream of that sequential load),
//! and the gateway's CPU per relayed SSE event.
//!
//! The time to first byte is measured twice for each proxy: sharing both cores with the load tool (its
//! client and upstream), where which core a connection's worker shares with which part of the load tool
//! changes the result by tens of microseconds (the load tool's may workers are pinned, one per core), so
//! it is the median of 5 rounds, each on a new connection, the targets taking turns; and with the proxy
//! held to one core and the load tool to the other, which measures the proxy's own path: its processing
//! and the wake-ups a hop between machines also costs.
//!
//! `cargo bench --bench streaming` (env: BENCH_ROUNDS of the relay measurement, default 5; BENCH_ONLY=relay
//! leaves the time to first byte out; BENCH_COMPARE=path adds a second build to the relay rounds;
//! BENCH_GATEWAY_CONFIG=JSON merged into the gateways' config, e.g. `{"workers": 1}`).

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::*;

/// Median and p99 time to the first body chunk of `n` sequential streams on one connection.
fn ttfb(addr: std::net::SocketAddr, n: usize) -> (f64, f64) {
    let request = chat_request("bench", 200, true, "x-bench-events: 3\r\n");
    let handle = may::go!(move || {
        let mut s = connect(addr).unwrap();
        let _ = s.set_nodelay(true);
        let mut buf = Vec::new();
        let mut times = Vec::with_capacity(n);
        for i in 0..n + TTFB_WARMUP {
            let t0 = Instant::now();
            s.write_all(&request).unwrap();
            let (_, first) = read_response(&mut s, &mut buf).expect("stream");
            if i >= TTFB_WARMUP {
                times.push(first.expect("a first chunk").duration_since(t0).as_secs_f64() * 1e6);
            }
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (times[n / 2], times[n * 99 / 100])
    });
    handle.join().unwrap()
}

/// `streams` concurrent streams of `events` events each, `delay_ms` apart; returns the events relayed
/// and the data segments the client received (`tcpi_data_segs_in`): with no delay, how many pieces
/// the proxy sent the events in (its writes, less those the kernel joined into one segment).
fn relay_load(addr: std::net::SocketAddr, streams: usize, events: usize, delay_ms: u64) -> (u64, u64) {
    let request = Arc::new(chat_request(
        "bench",
        200,
        true,
        &format!("x-bench-events: {events}\r\nx-bench-delay-ms: {delay_ms}\r\n"),
    ));
    let done = Arc::new(AtomicU64::new(0));
    let segments = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..streams)
        .map(|_| {
            let (request, done, segments) = (request.clone(), done.clone(), segments.clone());
            may::go!(move || {
                let mut s = connect(addr).unwrap();
                let mut buf = Vec::new();
                s.write_all(&request).unwrap();
                if let Some((200, _)) = read_response(&mut s, &mut buf) {
                    done.fetch_add(1, Ordering::Relaxed);
                    segments.fetch_add(data_segments_in(s.as_raw_fd()), Ordering::Relaxed);
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    (done.load(Ordering::Relaxed) * (events as u64 + 1), segments.load(Ordering::Relaxed))
}

/// Segments with data a TCP socket has received (`TCP_INFO`'s `tcpi_data_segs_in`).
fn data_segments_in(fd: std::os::fd::RawFd) -> u64 {
    // SAFETY: TCP_INFO fills at most `len` bytes of a zeroed tcp_info; `len` says how many.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let got = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
    };
    if got == 0 {
        u64::from(info.tcpi_data_segs_in)
    } else {
        0
    }
}

/// The middle of `v` (the upper one of an even count).
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Concurrent streams of the relay measurement, and events in each: at 2 ms apart, a second a round.
const RELAY_STREAMS: usize = 64;
const RELAY_EVENTS: usize = 500;

/// Rounds of the time-to-first-byte measurement, the targets taking turns within each round.
const TTFB_ROUNDS: usize = 5;
/// Sequential streams per round and target, each round on a new connection.
const TTFB_STREAMS: usize = 500;
/// Streams before those, on the same connection, not counted.
const TTFB_WARMUP: usize = 20;

/// What is measured for time to first byte: its address, and for a proxy its pid and whether its
/// workers are child processes.
struct TtfbTarget {
    name: &'static str,
    addr: std::net::SocketAddr,
    proxy: Option<(u32, bool)>,
}

/// The time-to-first-byte table: p50, p99 and each proxy's CPU per stream, sharing both cores with the
/// load tool, then with the proxy held to one core and the load tool (client and upstream) to the
/// other. Each round, every target serves one new connection; which scheduler thread (may's
/// `fd % workers`) or worker process takes a connection, and so which core it shares with which part
/// of the load tool, changes from connection to connection and moves one connection's p50 by tens of
/// microseconds: the table gives the median over the rounds.
fn ttfb_table(targets: &[TtfbTarget]) {
    let cpu = |(pid, tree): (u32, bool)| if tree { cpu_seconds_tree(pid) } else { cpu_seconds(pid) };
    // One core cannot be split between the proxy and the load tool.
    let layouts: &[bool] =
        if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 { &[false, true] } else { &[false] };
    // [target][layout]: per-round p50s and p99s, and CPU seconds over all rounds.
    let mut p50s = vec![vec![Vec::new(); layouts.len()]; targets.len()];
    let mut p99s = p50s.clone();
    let mut cpu_used = vec![vec![0.0; layouts.len()]; targets.len()];
    for (l, &own_core) in layouts.iter().enumerate() {
        for _ in 0..TTFB_ROUNDS {
            for (t, target) in targets.iter().enumerate() {
                let _held = own_core.then(|| {
                    let mut held = vec![confine(&[std::process::id()], 0)];
                    held.extend(target.proxy.map(|(pid, _)| confine(&[pid], 1)));
                    held
                });
                let cpu0 = target.proxy.map(cpu);
                let (p50, p99) = ttfb(target.addr, TTFB_STREAMS);
                if let (Some(proxy), Some(cpu0)) = (target.proxy, cpu0) {
                    cpu_used[t][l] += cpu(proxy) - cpu0;
                }
                p50s[t][l].push(p50);
                p99s[t][l].push(p99);
            }
        }
    }
    for (t, target) in targets.iter().enumerate() {
        let mut line = format!("  {:<20}", target.name);
        for l in 0..layouts.len() {
            let p50 = median(&p50s[t][l]);
            line += &format!(" {p50:>6.0} {:>6.0}", median(&p99s[t][l]));
            if target.proxy.is_some() {
                let added = p50 - median(&p50s[0][l]);
                let per_stream = cpu_used[t][l] / (TTFB_ROUNDS * (TTFB_STREAMS + TTFB_WARMUP)) as f64 * 1e6;
                line += &format!(" {added:>6.0} {per_stream:>9.1}");
            } else {
                line += &format!(" {:>6} {:>9}", "", "");
            }
            line += "   ";
        }
        println!("{line}");
    }
    println!(
        "  (p50 of each round on a new connection: {})",
        targets
            .iter()
            .enumerate()
            .map(|(t, target)| format!(
                "{} {}",
                target.name.trim_start_matches("through "),
                p50s[t][0].iter().map(|p| format!("{p:.0}")).collect::<Vec<_>>().join("/")
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn main() {
    init_may();
    let upstream = start_upstream();
    let gateway = start_gateway(upstream, gateway_config_from_env());
    // A second build, for the relay rounds only (BENCH_COMPARE).
    let compare = std::env::var("BENCH_COMPARE").ok().map(|b| {
        println!("compare: {b}");
        start_gateway_binary(&b, upstream, gateway_config_from_env())
    });
    let nginx = start_nginx(upstream);
    let nice = own_nice();
    for p in [Some(&gateway), compare.as_ref(), nginx.as_ref()].into_iter().flatten() {
        same_priority(p.child.id(), nice);
    }
    println!("streaming benchmark, every thread at nice {nice}, {}", machine());
    if std::env::var("BENCH_ONLY").map_or(true, |v| v != "relay") {
        println!(
            "time to first byte (µs), {TTFB_STREAMS} sequential 3-event streams on one connection, median of {TTFB_ROUNDS} rounds:"
        );
        println!("  {:<20} {:^34}   {:^34}", "", "sharing both cores", "proxy on one core, load on the other");
        println!("  {:<20}{}", "", format!(" {:>6} {:>6} {:>6} {:>9}   ", "p50", "p99", "added", "CPU/strm").repeat(2));
        let mut targets = vec![
            TtfbTarget { name: "direct", addr: upstream, proxy: None },
            TtfbTarget { name: "through switchyard", addr: gateway.addr, proxy: Some((gateway.child.id(), false)) },
        ];
        if let Some(n) = &nginx {
            targets.push(TtfbTarget { name: "through nginx", addr: n.addr, proxy: Some((n.child.id(), true)) });
        }
        ttfb_table(&targets);
    }
    let rounds = env_u64("BENCH_ROUNDS", 5) as usize;
    println!(
        "relay CPU (µs), {RELAY_STREAMS} concurrent streams × {RELAY_EVENTS} events, median of {rounds} interleaved rounds; back to back,"
    );
    println!("the cost follows how many events one upstream read finds, which the data segments the client receives per event show:");
    println!("  {:<22} {:>14} {:>14} {:>14} {:>14}", "", "event, 2 ms", "event, b2b", "segments/event", "segment, b2b");
    let mut targets = vec![("switchyard", gateway.addr, gateway.child.id(), false)];
    if let Some(c) = &compare {
        targets.push(("compare", c.addr, c.child.id(), false));
    }
    if let Some(n) = &nginx {
        targets.push(("nginx", n.addr, n.child.id(), true));
    }
    // [target] → one figure per round for each column; the proxies take turns, so a slow phase of the
    // machine falls on both.
    let mut cells = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; targets.len()];
    for _ in 0..rounds {
        for (&(_, addr, pid, tree), cell) in targets.iter().zip(cells.iter_mut()) {
            let cpu = || if tree { cpu_seconds_tree(pid) } else { cpu_seconds(pid) };
            for delay in [2, 0] {
                let cpu0 = cpu();
                let (relayed, segments) = relay_load(addr, RELAY_STREAMS, RELAY_EVENTS, delay);
                let (used, relayed) = (cpu() - cpu0, relayed.max(1));
                if delay > 0 {
                    cell[0].push(used / relayed as f64 * 1e6);
                } else {
                    cell[1].push(used / relayed as f64 * 1e6);
                    cell[2].push(segments as f64 / relayed as f64);
                    cell[3].push(used / segments.max(1) as f64 * 1e6);
                }
            }
        }
    }
    for ((name, ..), cell) in targets.iter().zip(cells.iter()) {
        let [spaced, together, segments, per_segment] = cell;
        println!(
            "  {name:<22} {:>14.2} {:>14.2} {:>14.3} {:>14.2}",
            median(spaced),
            median(together),
            median(segments),
            median(per_segment)
        );
    }
    // Each round's ratio, in the order run: how far one round's comparison can stray. Each build against
    // nginx, and the build against the compared one.
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    if nginx.is_some() {
        pairs.extend((0..targets.len() - 1).map(|t| (t, targets.len() - 1)));
    }
    if compare.is_some() {
        pairs.push((0, 1));
    }
    for (a, b) in pairs {
        for (column, what) in [(0, "CPU per event 2 ms apart"), (1, "back to back"), (3, "back to back per segment")] {
            let ratios: Vec<f64> = cells[a][column].iter().zip(&cells[b][column]).map(|(x, y)| x / y).collect();
            let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            println!(
                "  {} / {}, {what}: median {:.2}, by round {}",
                targets[a].0,
                targets[b].0,
                median(&ratios),
                listed.join(" ")
            );
        }
    }
    if nginx_binary().is_none() {
        println!("(nginx not found: install it to compare in the same run)");
    }
}
