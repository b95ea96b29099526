//! Redis as managed clouds run it: TLS only (`rediss://` with a private CA), an ACL user, and a
//! failover that moves the server to another address behind the same host name.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The demo model behind a limit of `requests` a day counted in the Redis at `url`, failing closed so
/// that a Redis the gateway cannot use shows as 503 rather than as uncounted admissions.
fn config(url: &str, ca: &str, requests: u64) -> serde_json::Value {
    json!({
        "backends": [{"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 1}],
        "routes": [{"model": "demo", "backends": [{"backend": "demo"}]}],
        "limits": [{"name": "daily", "key": ["client"], "requests": requests, "per": "1d"}],
        "ratelimit": {"redis": url, "redis_ca_file": ca, "on_redis_error": "deny", "redis_timeout_ms": 3000}
    })
}

fn status(gw: &Gateway) -> u16 {
    post(gw.addr, "/v1/chat/completions", &[], &chat("demo")).status
}

#[test]
fn shared_limits_work_through_a_tls_only_redis_with_an_acl_user() {
    let port = free_port();
    let _redis = TlsRedis::start("127.0.0.1", port);
    let ca = tls_fixture("names/ca.pem");
    let cfg = config(&format!("rediss://gw:{REDIS_PASSWORD}@localhost:{port}"), &ca, 3);
    let (gw1, gw2) = (Gateway::start(&cfg), Gateway::start(&cfg));
    let statuses = [status(&gw1), status(&gw2), status(&gw1), status(&gw2), status(&gw1)];
    assert_eq!(statuses, [200, 200, 200, 429, 429], "{}\n{}", gw1.log(), gw2.log());
    assert!(!gw1.log().contains(REDIS_PASSWORD));

    // Without the user name the password is the default user's, which is off: Redis refuses, and the
    // policy answers 503.
    let gw = Gateway::start(&config(&format!("rediss://:{REDIS_PASSWORD}@localhost:{port}"), &ca, 3));
    assert_eq!(status(&gw), 503);
    // A certificate from another CA is refused.
    let gw =
        Gateway::start(&config(&format!("rediss://gw:{REDIS_PASSWORD}@localhost:{port}"), &tls_fixture("ca.pem"), 3));
    assert_eq!(status(&gw), 503);
    assert!(eventually(Duration::from_secs(2), || gw.log().contains("certificate")), "{}", gw.log());
    // Plain text to a TLS port gets nowhere.
    let mut plain = config(&format!("redis://gw:{REDIS_PASSWORD}@localhost:{port}"), &ca, 3);
    plain["ratelimit"].as_object_mut().unwrap().remove("redis_ca_file");
    let gw = Gateway::start(&plain);
    assert_eq!(status(&gw), 503);
}

/// Why a test that needs a private mount namespace cannot run here, if it cannot.
fn mount_namespace_unavailable() -> Option<String> {
    // SAFETY: a plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    match Command::new("unshare").args(["--mount", "true"]).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => None,
        Ok(s) => Some(format!("`unshare --mount` failed ({s})")),
        Err(e) => Some(format!("no unshare: {e}")),
    }
}

#[test]
fn limits_follow_redis_to_a_new_address_behind_the_same_host_name() {
    if let Some(why) = mount_namespace_unavailable() {
        return skip("limits_follow_redis_to_a_new_address_behind_the_same_host_name", &why);
    }
    // The gateway runs in its own mount namespace whose /etc/hosts is this file.
    let dir = TempDir::new("failover");
    let hosts = dir.0.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.1 redis.test\n").unwrap();
    let hosts_path = hosts.to_str().unwrap();
    let wrapper = ["unshare", "--mount", "sh", "-c", "mount --bind \"$0\" /etc/hosts && exec \"$@\"", hosts_path];
    let port = free_port();
    let first = TlsRedis::start("127.0.0.1", port);
    let cfg = config(&format!("rediss://gw:{REDIS_PASSWORD}@redis.test:{port}"), &tls_fixture("names/ca.pem"), 3);
    let gw = Gateway::start_wrapped(&cfg, &[], &wrapper);
    assert_eq!([status(&gw), status(&gw), status(&gw), status(&gw)], [200, 200, 200, 429], "{}", gw.log());

    // Failover: the server comes back empty on another address; the name now points there. Writing the
    // file in place keeps the bind mount on it.
    drop(first);
    let _second = TlsRedis::start("127.0.0.2", port);
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.0.2 redis.test\n").unwrap();
    assert!(eventually(Duration::from_secs(10), || status(&gw) == 200), "{}", gw.log());
    // One admitted above; the new server counts the rest of the limit.
    assert_eq!([status(&gw), status(&gw), status(&gw)], [200, 200, 429], "{}", gw.log());
}
