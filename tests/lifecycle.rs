//! Process-level behaviour: --check, refusing a served address, hot reload, graceful shutdown.

mod common;

use std::io::BufReader;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn demo_config() -> serde_json::Value {
    json!({"backends": [{"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 1}],
           "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}]})
}

#[test]
fn check_flag_validates_and_names_the_offending_field() {
    let dir = TempDir::new("check");
    let good = dir.0.join("good.json");
    std::fs::write(&good, demo_config().to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard")).args(["--check", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));
    let bad = dir.0.join("bad.json");
    let mut cfg = demo_config();
    cfg["routes"] =
        json!([{"model": "a", "backends": [{"backend": "demo"}]}, {"model": "b", "backends": [{"backend": "dmeo"}]}]);
    std::fs::write(&bad, cfg.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard")).args(["--check", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[1].backends[0].backend: no backend named \"dmeo\""), "{err}");
}

#[test]
fn shipped_config_checks_ok_and_version_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--check", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/config.json")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard")).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("switchyard "));
}

#[test]
fn refuses_to_start_on_an_address_another_process_serves() {
    let gw = Gateway::start(&demo_config());
    let dir = TempDir::new("dup");
    let path = dir.0.join("c.json");
    std::fs::write(&path, demo_config().to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&path)
        .arg("--listen")
        .arg(gw.addr.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(gw.addr, "/health", &[]).status, 200);
}

#[test]
fn valid_config_change_is_applied_live_and_invalid_one_is_rejected() {
    let gw = Gateway::start(&demo_config());
    let mut keep_alive = connect(gw.addr);
    post_raw(&mut keep_alive, "/v1/chat/completions", &[], &serde_json::to_vec(&chat("demo")).unwrap());
    let mut reader = BufReader::new(keep_alive.try_clone().unwrap());
    assert_eq!(read_response(&mut reader).status, 200);
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("renamed")).status, 404);

    let mut cfg = demo_config();
    cfg["routes"] = json!([{"model": "renamed", "backends": [{"backend": "demo"}]}]);
    std::fs::write(&gw.config_path, cfg.to_string()).unwrap();
    assert!(eventually(Duration::from_secs(5), || post(gw.addr, "/v1/chat/completions", &[], &chat("renamed")).status
        == 200));
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("demo")).status, 404);

    std::fs::write(&gw.config_path, r#"{"routes": [{"model": "x", "backends": [{"backend": "nope"}]}]}"#).unwrap();
    assert!(eventually(Duration::from_secs(5), || gw.log().contains("rejected")));
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("renamed")).status, 200);

    // The connection opened before both reloads still works.
    post_raw(&mut keep_alive, "/v1/chat/completions", &[], &serde_json::to_vec(&chat("renamed")).unwrap());
    assert_eq!(read_response(&mut reader).status, 200);
}

#[test]
fn sigterm_lets_an_in_flight_stream_finish_then_exits_zero() {
    let mut cfg = demo_config();
    cfg["backends"][0]["mock_chunk_delay_ms"] = json!(100);
    let mut gw = Gateway::start(&cfg);
    let mut s = connect(gw.addr);
    post_raw(
        &mut s,
        "/v1/chat/completions",
        &[],
        &serde_json::to_vec(
            &json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "one two three"}]}),
        )
        .unwrap(),
    );
    let mut reader = BufReader::new(s);
    let (status, _) = read_head(&mut reader);
    assert_eq!(status, 200);
    let _ = read_chunk(&mut reader).unwrap();
    gw.terminate();
    let mut rest = Vec::new();
    while let Some(c) = read_chunk(&mut reader) {
        rest.extend_from_slice(&c);
    }
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = gw.child.try_wait().unwrap() {
            break st;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "did not exit after draining");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(std::net::TcpStream::connect(gw.addr).is_err(), "still accepting after shutdown");
}

#[test]
fn workers_flag_sets_the_scheduler_threads() {
    let dir = TempDir::new("workers");
    let path = dir.0.join("c.json");
    std::fs::write(&path, demo_config().to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--workers", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let start = Instant::now();
    while !line.contains("listening on") && start.elapsed() < Duration::from_secs(10) {
        line.clear();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("with 1 worker(s)"), "{line}");
}

/// How many CPUs each thread of `pid` may run on, from `Cpus_allowed_list` (e.g. `0-1`, `1`).
fn allowed_cpus_per_thread(pid: &str) -> Vec<usize> {
    let count = |list: &str| {
        list.split(',')
            .map(|part| match part.split_once('-') {
                Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
                None => 1,
            })
            .sum()
    };
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|l| count(l.trim())))
        .collect()
}

#[test]
fn workers_run_on_any_core_unless_pinned() {
    // The cores this process may use (not `available_parallelism`, which a CPU quota lowers).
    let cores = allowed_cpus_per_thread("self")[0];
    let mut cfg = demo_config();
    cfg["workers"] = json!(2);
    let free = Gateway::start(&cfg);
    cfg["pin_workers"] = json!(true);
    let pinned = Gateway::start(&cfg);
    // Both serve.
    assert_eq!(post(free.addr, "/v1/chat/completions", &[], &chat("demo")).status, 200);
    assert_eq!(post(pinned.addr, "/v1/chat/completions", &[], &chat("demo")).status, 200);
    let free_threads = allowed_cpus_per_thread(&free.child.id().to_string());
    let pinned_threads = allowed_cpus_per_thread(&pinned.child.id().to_string());
    assert!(free_threads.iter().all(|&n| n == cores), "{free_threads:?} with {cores} cores");
    assert!(pinned.log().contains("with 2 worker(s), each held to one core"), "{}", pinned.log());
    if cores >= 2 {
        // The two scheduler threads, and only they.
        assert_eq!(pinned_threads.iter().filter(|&&n| n == 1).count(), 2, "{pinned_threads:?}");
        assert_eq!(pinned_threads.iter().filter(|&&n| n == cores).count(), pinned_threads.len() - 2);
    }
}

/// Voluntary context switches of every thread of `pid` so far: one each time a thread sleeps or waits.
fn sleeps(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| s.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?.trim().parse::<u64>().ok())
        .sum()
}

/// An idle gateway sleeps: its scheduler threads wake once a second (may's default was 100 times), the
/// config watcher to look at its files, the other helpers not at all (about 275 wakes a second in all
/// before). And a line after the quiet spell still reaches the access log at once: the first line wakes
/// the dozing writer. Its safety net (5 s) would write it about 1.5 s after the request here (the
/// writer dozes from about 1 s after the first line), so a lost wake fails the 1 s wait.
#[test]
fn an_idle_gateway_wakes_a_few_times_a_second() {
    let gw = Gateway::start(&demo_config());
    let pid = gw.child.id();
    // Starts the helpers a request needs: the access log writer, the deadline reaper.
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("demo")).status, 200);
    // Past the access log writer's quiet second.
    std::thread::sleep(Duration::from_millis(1500));
    let (before, from) = (sleeps(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let per_second = (sleeps(pid) - before) as f64 / from.elapsed().as_secs_f64();
    assert!(per_second < 20.0, "{per_second:.1} wakes a second");

    let lines = || gw.log().matches(r#""request_id""#).count();
    assert_eq!(lines(), 1, "{}", gw.log());
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("demo")).status, 200);
    assert!(eventually(Duration::from_secs(1), || lines() == 2), "{}", gw.log());
}

#[test]
fn debug_level_writes_the_access_log_without_secrets() {
    let mut cfg = demo_config();
    cfg["clients"] = json!([{"name": "c", "key": "client-secret-key"}]);
    let gw = Gateway::start_with_env(&cfg, &[("SWITCHYARD_LOG", "debug")]);
    let r = post(gw.addr, "/v1/chat/completions", &[("authorization", "Bearer client-secret-key")], &chat("demo"));
    assert_eq!(r.status, 200);
    let logged =
        || gw.log().lines().any(|l| l.contains(r#""path":"/v1/chat/completions""#) && l.contains(r#""status":200"#));
    assert!(eventually(Duration::from_secs(2), logged), "{}", gw.log());
    assert!(!gw.log().contains("client-secret-key"));
}

#[test]
fn access_log_off_writes_no_line() {
    let mut cfg = demo_config();
    cfg["access_log"] = json!("off");
    let gw = Gateway::start(&cfg);
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("demo")).status, 200);
    // A request after it, on the same connection-less path, whose effect is visible: the metrics.
    assert!(eventually(Duration::from_secs(2), || get(gw.addr, "/metrics", &[])
        .text()
        .contains("status_class=\"2xx\"")));
    assert!(!gw.log().contains(r#""request_id""#), "{}", gw.log());
}
