//! Instructions per request, counted by callgrind (exact, and immune to this machine's noise), through
//! Switchyard and through nginx `proxy_pass` counted the same way in the same run. Each proxy runs under
//! `valgrind --tool=callgrind` with one worker in front of the bench's in-process upstream; one
//! keep-alive connection sends requests one after another; the counters are zeroed after a warm-up and
//! dumped after the measured requests (`callgrind_control`). Scenarios: `chat` (the 549 B answer),
//! `stream` (12 SSE events in one upstream write) and `spaced` (50 events 2 ms apart, per stream).
//! `BENCH_REQUESTS` (default 1,000; `spaced` runs a tenth of it). Needs valgrind; says so without it.
//!
//! Then the cache simulation (`--cache-sim=yes`, in a second pair of processes): chat over 64
//! connections taking turns (a request sent on each, then every answer read), so that each request finds
//! its connection's state as cold as under the proxy bench's load. Instructions, instruction-cache
//! misses and data-cache misses (reads and writes) per request, as callgrind simulates them (L1 sizes of
//! this machine's processor). `BENCH_CACHE=0` leaves it out. `BENCH_KEEP_DUMPS=<dir>` keeps the callgrind dumps
//! there (a folder a proxy) for `callgrind_annotate`.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One proxy under callgrind; killed (and its scratch directory removed) on drop.
struct Counted {
    child: Child,
    addr: SocketAddr,
    dir: std::path::PathBuf,
    dumps: usize,
}

impl Counted {
    /// `command` (a proxy and its arguments) under callgrind (with `options`), listening on `addr` once
    /// it is up.
    fn start(dir: std::path::PathBuf, addr: SocketAddr, command: &[String], options: &[&str]) -> Counted {
        let child = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}/callgrind.out", dir.display()))
            // Each dump names its own functions (compressed names would refer to an earlier dump's).
            .arg("--compress-strings=no")
            .args(options)
            .args(command)
            .env("SWITCHYARD_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start valgrind");
        // Under valgrind a start-up takes seconds (reading the binary's debug info).
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(120), "{addr} did not come up under valgrind");
            std::thread::sleep(Duration::from_millis(100));
        }
        Counted { child, addr, dir, dumps: 0 }
    }

    fn control(&self, flag: &str) {
        let status = Command::new("callgrind_control")
            .arg(flag)
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("callgrind_control");
        assert!(status.success(), "callgrind_control {flag} failed");
    }

    /// Events per request (`Ir`, and the cache events when simulated) of `count` requests sent after
    /// `warm_up` others over `conns` keep-alive connections: each round sends one request on every
    /// connection, then reads every answer.
    fn per_request(&mut self, request: &[u8], warm_up: usize, count: usize, conns: usize) -> HashMap<String, f64> {
        let mut connections: Vec<(TcpStream, Vec<u8>)> = (0..conns)
            .map(|_| {
                let s = TcpStream::connect(self.addr).unwrap();
                s.set_nodelay(true).unwrap();
                (s, Vec::new())
            })
            .collect();
        let mut round = || {
            for (s, _) in &mut connections {
                std::io::Write::write_all(s, request).unwrap();
            }
            for (s, buf) in &mut connections {
                let (status, _) = read_response(s, buf).expect("a response");
                assert_eq!(status, 200);
            }
        };
        for _ in 0..warm_up.div_ceil(conns) {
            round();
        }
        self.control("-z");
        let rounds = count.div_ceil(conns);
        for _ in 0..rounds {
            round();
        }
        self.control("-d");
        self.dumps += 1;
        let dump = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(&format!(".{}", self.dumps)))
            .expect("the dump callgrind_control asked for");
        let text = std::fs::read_to_string(dump).unwrap();
        let field = |prefix: &str| text.lines().find_map(|l| l.strip_prefix(prefix)).map(str::split_whitespace);
        let names = field("events:").expect("an events line");
        let totals = field("summary:").or_else(|| field("totals:")).expect("a summary line");
        let requests = (rounds * conns) as f64;
        names.zip(totals).map(|(name, total)| (name.to_string(), total.parse::<f64>().unwrap() / requests)).collect()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // BENCH_KEEP_DUMPS=dir: the dumps are kept there for `callgrind_annotate` (one folder a proxy).
        if let Ok(keep) = std::env::var("BENCH_KEEP_DUMPS") {
            let to = std::path::Path::new(&keep).join(self.dir.file_name().unwrap_or_default());
            let _ = std::fs::create_dir_all(&to);
            for dump in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let _ = std::fs::copy(dump.path(), to.join(dump.file_name()));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    init_may();
    if Command::new("valgrind").arg("--version").output().is_err() {
        println!("valgrind not found: install it (Debian: valgrind) to count instructions per request");
        return;
    }
    let requests = std::env::var("BENCH_REQUESTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000usize);
    let upstream = start_upstream();
    let scenarios = [
        ("chat", chat_request("bench", 200, false, ""), 300, requests),
        ("stream", chat_request("bench", 200, true, "x-bench-events: 12\r\nx-bench-one-write: 1\r\n"), 300, requests),
        (
            "spaced",
            chat_request("bench", 200, true, "x-bench-events: 50\r\nx-bench-delay-ms: 2\r\n"),
            30,
            requests / 10,
        ),
    ];

    let mut targets = start_proxies(upstream, &[]);
    println!("instructions per request (callgrind, one worker, one connection, {requests} requests after a warm-up; spaced: per stream of 50 events, {} streams)", requests / 10);
    println!("{:<8} {:>14} {:>14} {:>10}", "scenario", "switchyard", "nginx", "ratio");
    for (name, request, warm_up, count) in &scenarios {
        let counts: Vec<f64> =
            targets.iter_mut().map(|(_, t)| t.per_request(request, *warm_up, *count, 1)["Ir"]).collect();
        match counts.as_slice() {
            [ours, theirs] => println!("{name:<8} {ours:>14.0} {theirs:>14.0} {:>9.2}x", ours / theirs),
            [ours] => println!("{name:<8} {ours:>14.0} {:>14} {:>10}", "-", "-"),
            _ => unreachable!(),
        }
    }
    if targets.len() == 1 {
        println!("(nginx not found: install it (Debian: nginx-light) to count it in the same run)");
    }
    drop(targets);
    if std::env::var("BENCH_CACHE").is_ok_and(|v| v == "0") {
        return;
    }
    const CONNS: usize = 64;
    let mut targets = start_proxies(upstream, &["--cache-sim=yes"]);
    let chat = &scenarios[0].1;
    let events: Vec<HashMap<String, f64>> =
        targets.iter_mut().map(|(_, t)| t.per_request(chat, 10 * CONNS, 2048, CONNS)).collect();
    println!();
    println!("chat over {CONNS} connections taking turns, 2,048 requests, per request (callgrind's cache simulation)");
    println!("{:<24} {:>12} {:>12} {:>10}", "event", "switchyard", "nginx", "ratio");
    for (label, names) in [
        ("instructions", &["Ir"][..]),
        ("instruction-cache misses", &["I1mr"][..]),
        ("data-cache misses", &["D1mr", "D1mw"][..]),
    ] {
        let sums: Vec<f64> = events.iter().map(|e| names.iter().map(|n| e[*n]).sum()).collect();
        match sums.as_slice() {
            [ours, theirs] => println!("{label:<24} {ours:>12.0} {theirs:>12.0} {:>9.2}x", ours / theirs),
            [ours] => println!("{label:<24} {ours:>12.0} {:>12} {:>10}", "-", "-"),
            _ => unreachable!(),
        }
    }
}

/// The gateway (one worker) and, when installed, nginx (one worker process), each under callgrind with
/// `options`.
fn start_proxies(upstream: SocketAddr, options: &[&str]) -> Vec<(&'static str, Counted)> {
    let mut targets = Vec::new();
    let dir = scratch("callgrind-gw");
    let port = free_port();
    let path = write_gateway_config(&dir, upstream, port, serde_json::json!({"workers": 1}));
    let command = vec![gateway_binary(), "--config".into(), path.display().to_string()];
    targets.push(("switchyard", Counted::start(dir, format!("127.0.0.1:{port}").parse().unwrap(), &command, options)));
    if let Some(nginx) = nginx_binary() {
        let dir = scratch("callgrind-nginx");
        let port = free_port();
        let path = write_nginx_config(&dir, upstream, port, "master_process off;\nworker_processes 1;", "");
        let command =
            vec![nginx.into(), "-c".into(), path.display().to_string(), "-p".into(), dir.display().to_string()];
        targets.push(("nginx", Counted::start(dir, format!("127.0.0.1:{port}").parse().unwrap(), &command, options)));
    }
    targets
}
