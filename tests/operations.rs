//! Operations: SIGHUP reloads, key files rotated without a restart, the open-file limit raised at
//! start-up, `--version` naming the commit, and `--check`'s routing table for the README's example
//! config (a golden file; `BLESS=1` rewrites it after a reviewed change).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn demo_config() -> serde_json::Value {
    json!({"backends": [{"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 1}],
           "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}]})
}

#[test]
fn check_prints_the_routing_table_of_the_readme_example() {
    let fixture = format!("{ROOT}/tests/fixtures/check/readme_config.json");
    // The fixture is the README's example, so the golden file documents what the README shows.
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let section = &readme[readme.find("## Configuration").expect("a Configuration section")..];
    let block = section.split("```json\n").nth(1).and_then(|b| b.split("```").next()).unwrap();
    let from_readme: serde_json::Value = serde_json::from_str(block).unwrap();
    let from_fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    assert_eq!(from_readme, from_fixture, "tests/fixtures/check/readme_config.json differs from the README's example");

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["--check", "--config", &fixture])
        .env("SWITCHYARD_API_KEY", "sk-dev-not-printed")
        .env_remove("OPENAI_API_KEY")
        .env_remove("AZURE_OPENAI_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("OPENAI_API_KEY is not set"), "{stderr}");
    assert!(!stdout.contains("sk-dev-not-printed") && !stderr.contains("sk-dev-not-printed"));
    let golden = format!("{ROOT}/tests/fixtures/check/readme_config.txt");
    if std::env::var("BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&golden, &stdout).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).expect("the golden file (BLESS=1 writes it)");
    assert_eq!(stdout, expected, "--check output differs from {golden}:\n{stdout}");
}

#[test]
fn version_names_the_version_and_the_git_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard")).arg("--version").output().unwrap();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(ROOT)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_string(), |o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let expected = format!("switchyard {} (commit {commit})\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn sighup_reloads_the_config_and_keeps_serving() {
    let mut gw = Gateway::start(&demo_config());
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("renamed")).status, 404);
    let mut cfg = demo_config();
    cfg["routes"] = json!([{"model": "renamed", "backends": [{"backend": "demo"}]}]);
    write_unnoticed(&gw.config_path, &cfg.to_string());
    // Three rounds of the file watcher: the change is not seen without the signal.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(post(gw.addr, "/v1/chat/completions", &[], &chat("renamed")).status, 404);
    signal(&gw, "HUP");
    assert!(
        eventually(Duration::from_secs(5), || post(gw.addr, "/v1/chat/completions", &[], &chat("renamed")).status
            == 200),
        "{}",
        gw.log()
    );
    assert!(gw.log().contains("config reloaded from") && gw.log().contains("on SIGHUP"), "{}", gw.log());
    assert!(gw.child.try_wait().unwrap().is_none(), "SIGHUP stopped the gateway: {}", gw.log());
    assert_eq!(get(gw.addr, "/health", &[]).status, 200);
}

#[test]
fn rotated_key_files_take_effect_without_a_restart() {
    let up = FakeUpstream::start();
    let dir = TempDir::new("keys");
    let (client_key, upstream_key) = (dir.0.join("client.key"), dir.0.join("upstream.key"));
    std::fs::write(&client_key, "sk-client-one\n").unwrap();
    std::fs::write(&upstream_key, "sk-upstream-one\n").unwrap();
    let gw = Gateway::start(&json!({
        "backends": [{"name": "fake", "schema": "openai", "base_url": up.base_url(),
                      "auth": {"type": "bearer", "key_file": upstream_key}}],
        "routes": [{"model": "m", "backends": [{"backend": "fake"}]}],
        "clients": [{"name": "app", "key_file": client_key}]
    }));
    let call =
        |key: &str| post(gw.addr, "/v1/chat/completions", &[("authorization", &format!("Bearer {key}"))], &chat("m"));
    assert_eq!(call("sk-client-one").status, 200);
    assert_eq!(up.last().headers["authorization"], "Bearer sk-upstream-one");

    // A rotation (the files change, the config does not) is picked up by the watcher.
    std::fs::write(&client_key, "sk-client-two\n").unwrap();
    std::fs::write(&upstream_key, "sk-upstream-two\n").unwrap();
    assert!(eventually(Duration::from_secs(5), || call("sk-client-two").status == 200), "{}", gw.log());
    assert_eq!(call("sk-client-one").status, 401);
    assert_eq!(up.last().headers["authorization"], "Bearer sk-upstream-two");
    assert!(gw.log().contains("after a key file changed"), "{}", gw.log());

    // A rotation the watcher cannot see (the file's time kept) takes effect on SIGHUP.
    write_unnoticed(&client_key, "sk-client-three");
    write_unnoticed(&upstream_key, "sk-upstream-three");
    signal(&gw, "HUP");
    assert!(eventually(Duration::from_secs(5), || call("sk-client-three").status == 200), "{}", gw.log());
    assert_eq!(call("sk-client-two").status, 401);
    assert_eq!(up.last().headers["authorization"], "Bearer sk-upstream-three");
    assert!(!gw.log().contains("sk-"), "a key reached the log: {}", gw.log());
}

/// The soft and hard open-file limits of a running process, from /proc.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    let mut fields = line["Max open files".len()..].split_whitespace();
    (fields.next().unwrap().to_string(), fields.next().unwrap().to_string())
}

#[test]
fn open_file_soft_limit_is_raised_to_the_hard_limit_and_a_shortfall_is_logged() {
    let mut cfg = demo_config();
    cfg["server"] = json!({"max_connections": 1000});
    // Lowering limits needs no privilege: soft 256, hard 4096.
    let gw = Gateway::start_wrapped(&cfg, &[], &["prlimit", "--nofile=256:4096", "--"]);
    assert_eq!(open_file_limits(gw.child.id()), ("4096".to_string(), "4096".to_string()));
    assert!(!gw.log().contains("open-file limit"), "2 × 1000 connections fit in 4096: {}", gw.log());

    cfg["server"] = json!({"max_connections": 10000});
    let gw = Gateway::start_wrapped(&cfg, &[], &["prlimit", "--nofile=256:4096", "--"]);
    assert_eq!(open_file_limits(gw.child.id()).0, "4096");
    let log = gw.log();
    assert!(
        log.contains("open-file limit is 4096 (raised from 256") && log.contains("max_connections = 10000"),
        "{log}"
    );
}
