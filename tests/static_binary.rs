//! The static binary (README, Deploy), built with the documented command into its own target directory
//! (`<target>/static`, reused between runs), checked to load no shared library, and run as the
//! Dockerfile's image would run it, without Docker (the image's binary is this build made
//! profile-guided by `deploy/pgo-build.sh`: the same code and flags, laid out by a profile): from an
//! otherwise empty root holding what the image copies (the binary, its config) plus what a container
//! runtime adds (`/etc/hosts`, `/etc/resolv.conf`) and a CA file, as the image's unprivileged numeric
//! user, with W^X enforced by the kernel (`PR_SET_MDWE`, as systemd's `MemoryDenyWriteExecute=`). It
//! serves the demo model, proxies to an https stand-in by a host name from `/etc/hosts` with the
//! private CA, counts limits in a TLS-only Redis with an ACL user found through DNS, and drains on the
//! image's stop signal.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The build command of the README (and, with one flag more, of both builds in `deploy/pgo-build.sh`,
/// which the Dockerfile runs): `+crt-static` as the target's own flags, which cargo joins with the code
/// generation flags of `.cargo/config.toml` (a RUSTFLAGS variable would replace them, and the binary
/// tested would not be the one the benches measure).
const TARGET_RUSTFLAGS: &str = "-C target-feature=+crt-static";
const CARGO_BUILD: &[&str] = &["build", "--locked", "--profile", "dist", "--target", "x86_64-unknown-linux-gnu"];
const BUILD_COMMAND: &str = r#"CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --profile dist --target x86_64-unknown-linux-gnu"#;
/// The address the DNS stand-in serves on (port 53, which a resolv.conf cannot change).
const DNS_ADDR: &str = "127.0.0.153:53";

/// Writes to the real stderr, past the test harness's capture (progress of a long step).
fn note(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// The static binary, built (or found up to date) once per test run.
fn static_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // `<target>/debug/switchyard` → `<target>/static`.
            let target = Path::new(env!("CARGO_BIN_EXE_switchyard")).parent().unwrap().parent().unwrap();
            let dir = target.join("static");
            note(&format!("static_binary: {BUILD_COMMAND} --target-dir {} (minutes the first time)", dir.display()));
            let started = Instant::now();
            let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
                .args(CARGO_BUILD)
                .arg("--target-dir")
                .arg(&dir)
                .current_dir(ROOT)
                .env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS", TARGET_RUSTFLAGS)
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .env_remove("CARGO_BUILD_RUSTFLAGS")
                .env_remove("CARGO_TARGET_DIR")
                .output()
                .expect("run cargo");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "the static build failed:\n{stderr}");
            note(&format!("static_binary: built in {:.0} s", started.elapsed().as_secs_f64()));
            dir.join("x86_64-unknown-linux-gnu/dist/switchyard")
        })
        .clone()
}

fn readelf(args: &[&str], file: &Path) -> String {
    let out = Command::new("readelf").args(args).arg(file).output().expect("readelf (binutils) is needed");
    assert!(out.status.success(), "readelf {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The README names the tested command; the Dockerfile builds with `deploy/pgo-build.sh`, whose two
/// builds (instrumented, then optimised) are that command with one code generation flag more.
#[test]
fn readme_dockerfile_and_profile_guided_build_use_the_tested_command() {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    assert!(readme.contains(BUILD_COMMAND), "the README's Deploy section names another build command");
    assert!(readme.contains("deploy/pgo-build.sh"), "the README does not name the profile-guided build");
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    assert!(dockerfile.contains("deploy/pgo-build.sh"), "the Dockerfile builds another way");
    let script = std::fs::read_to_string(format!("{ROOT}/deploy/pgo-build.sh")).unwrap();
    assert!(script.contains(&format!(r#"static="{TARGET_RUSTFLAGS}""#)), "the script links another way");
    let cargo = format!("cargo {}", CARGO_BUILD.join(" "));
    for flag in ["profile-generate", "profile-use"] {
        let prefix = format!(r#"CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="$static -C {flag}="#);
        let build = script.split(&prefix).nth(1).unwrap_or_else(|| panic!("the script has no {flag} build"));
        let command = build.lines().nth(1).unwrap_or_default().trim();
        assert!(command.starts_with(&cargo), "the {flag} build is not `{cargo}`: {command}");
    }
}

#[test]
fn static_binary_loads_no_shared_library_and_needs_no_interpreter() {
    let binary = static_binary();
    // A static-pie keeps a dynamic section for relocating itself, with no NEEDED entry in it.
    let dynamic = readelf(&["-d"], &binary);
    assert!(!dynamic.contains("(NEEDED)"), "the binary needs shared libraries:\n{dynamic}");
    let headers = readelf(&["-lW"], &binary);
    assert!(!headers.contains("INTERP"), "the binary asks for a dynamic loader:\n{headers}");
    let header = readelf(&["-h"], &binary);
    assert!(header.contains("Advanced Micro Devices X86-64"), "{header}");
    let size = std::fs::metadata(&binary).unwrap().len();
    note(&format!("static_binary: {} bytes ({:.1} MiB)", size, size as f64 / 1048576.0));
}

// ---- the image, read from the Dockerfile ----

/// What the Dockerfile's final stage puts in the image and how it starts it.
struct Image {
    /// `COPY --from=build <built> <dest>`: the binary's path in the image.
    binary: String,
    /// `COPY <repo file> <dest>`.
    files: Vec<(String, String)>,
    /// `USER uid:gid`.
    user: String,
    expose: u16,
    stop_signal: String,
    /// ENTRYPOINT followed by CMD.
    argv: Vec<String>,
}

fn image() -> Image {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(last_stage.starts_with("scratch"), "the image is not FROM scratch");
    let mut image = Image {
        binary: String::new(),
        files: Vec::new(),
        user: String::new(),
        expose: 0,
        stop_signal: String::new(),
        argv: Vec::new(),
    };
    let (mut entrypoint, mut cmd) = (Vec::new(), Vec::new());
    for line in last_stage.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match instruction {
            "COPY" if words.first() == Some(&"--from=build") => image.binary = words[2].to_string(),
            "COPY" => image.files.push((words[0].to_string(), words[1].to_string())),
            "USER" => image.user = rest.to_string(),
            "EXPOSE" => image.expose = rest.parse().unwrap(),
            "STOPSIGNAL" => image.stop_signal = rest.to_string(),
            "ENTRYPOINT" => entrypoint = serde_json::from_str(rest).unwrap(),
            "CMD" => cmd = serde_json::from_str(rest).unwrap(),
            _ => {}
        }
    }
    image.argv = entrypoint.into_iter().chain(cmd).collect();
    let uid = image.user.split(':').next().unwrap();
    assert!(uid.parse::<u32>().is_ok_and(|u| u != 0), "USER must be a numeric non-root id: {}", image.user);
    assert_eq!(image.stop_signal, "SIGTERM", "the graceful drain runs on SIGTERM");
    image
}

/// The root as the image has it: the built binary and the copied files, nothing else.
fn build_root(image: &Image, binary: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let place = |dest: &str, from: &Path| {
        let to = root.join(dest.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    };
    place(&image.binary, binary);
    for (src, dest) in &image.files {
        place(dest, &Path::new(ROOT).join(src));
    }
    root
}

// ---- a DNS stand-in ----

/// Answers A queries for `name` with 127.0.0.1, AAAA queries for it with no address, and anything else
/// with NXDOMAIN; records every query (`name type`).
fn start_dns(name: &'static str) -> std::io::Result<Arc<Mutex<Vec<String>>>> {
    let socket = UdpSocket::bind(DNS_ADDR)?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let q = &buf[..n];
            let mut at = 12;
            let mut labels = Vec::new();
            while at < n && q[at] != 0 {
                let len = q[at] as usize;
                labels.push(String::from_utf8_lossy(q.get(at + 1..at + 1 + len).unwrap_or_default()).to_lowercase());
                at += len + 1;
            }
            let end = at + 5;
            if n < 12 || end > n {
                continue;
            }
            let qtype = u16::from_be_bytes([q[at + 1], q[at + 2]]);
            let asked = labels.join(".");
            log.lock().unwrap().push(format!("{asked} {qtype}"));
            let known = asked == name;
            let answer = known && qtype == 1;
            let mut reply =
                vec![q[0], q[1], 0x81, if known { 0x80 } else { 0x83 }, 0, 1, 0, u8::from(answer), 0, 0, 0, 0];
            reply.extend_from_slice(&q[12..end]);
            if answer {
                reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            }
            let _ = socket.send_to(&reply, from);
        }
    });
    Ok(seen)
}

// ---- running the binary in the root ----

struct Chrooted {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Drop for Chrooted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const PR_SET_MDWE: libc::c_int = 65;
const PR_MDWE_REFUSE_EXEC_GAIN: libc::c_ulong = 1;

/// Spawns `command` with memory that is writable never becoming executable (inherited across exec).
fn spawn_with_mdwe(command: &mut Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    command.spawn()
}

/// `chroot --userspec=<image user> root <argv…> --listen 127.0.0.1:0` with an empty environment.
fn start_in_root(chroot: &str, root: &Path, user: &str, argv: &[String], mdwe: bool) -> Chrooted {
    let mut command = Command::new(chroot);
    command
        .arg(format!("--userspec={user}"))
        .arg(root)
        .args(argv)
        .args(["--listen", "127.0.0.1:0"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = if mdwe { spawn_with_mdwe(&mut command) } else { command.spawn() }.expect("start chroot");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            log2.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the static binary did not start in the root: {}", log.lock().unwrap()));
    Chrooted { child, addr: addr.parse().unwrap(), log }
}

impl Chrooted {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends the image's stop signal and waits for the exit status.
    fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let name = signal.trim_start_matches("SIG");
        assert!(Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "did not exit after {signal}: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Why the root cannot be made here, if it cannot.
fn root_unavailable() -> (Option<String>, &'static str) {
    let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot", "/sbin/chroot"].into_iter().find(|p| Path::new(p).exists());
    // SAFETY: a plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        return (Some("not running as root: cannot chroot".into()), "");
    }
    match chroot {
        None => (Some("no chroot program".into()), ""),
        Some(c) => (None, c),
    }
}

#[test]
fn static_binary_serves_proxies_and_drains_from_an_empty_root() {
    let test = "static_binary_serves_proxies_and_drains_from_an_empty_root";
    let (unavailable, chroot) = root_unavailable();
    if let Some(why) = unavailable {
        return skip(test, &why);
    }
    let binary = static_binary();
    let image = image();
    let deploy_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{ROOT}/deploy/config.json")).unwrap()).unwrap();
    assert!(deploy_config["listen"].as_str().unwrap().ends_with(&format!(":{}", image.expose)), "EXPOSE differs");
    let dir = TempDir::new("static-root");
    let root = build_root(&image, &binary, &dir.0);
    // W^X as MemoryDenyWriteExecute= enforces it, where the kernel has PR_SET_MDWE (6.3+).
    let mdwe = spawn_with_mdwe(Command::new("/bin/true").stdout(Stdio::null())).is_ok_and(|mut c| c.wait().is_ok());
    if !mdwe {
        note(&format!("{test}: this kernel has no PR_SET_MDWE; running without W^X enforcement"));
    }

    // 1. The image as it is: its default config serves the demo model.
    let mut gw = start_in_root(chroot, &root, &image.user, &image.argv, mdwe);
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("demo"));
    assert_eq!(r.status, 200, "{}", gw.log());
    assert!(r.text().contains("Switchyard mock"), "{}", r.text());
    assert_eq!(gw.stop(&image.stop_signal).code(), Some(0), "{}", gw.log());

    // 2. What a container runtime adds (hosts, resolv.conf), a CA file, and a config using them: an https
    // upstream by a name in /etc/hosts, a TLS Redis with an ACL user by a name only DNS knows.
    let upstream = start_tls_upstream(&tls_fixture("names/server.pem"), &tls_fixture("names/server.key"));
    let queries = match start_dns("redis.test") {
        Ok(q) => q,
        Err(e) => return skip(test, &format!("cannot serve DNS on {DNS_ADDR}: {e}")),
    };
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _redis = TlsRedis::start("127.0.0.1", redis_port);
    let etc = root.join("etc");
    std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n127.0.0.1 upstream.test\n").unwrap();
    let nameserver = DNS_ADDR.split(':').next().unwrap();
    std::fs::write(etc.join("resolv.conf"), format!("nameserver {nameserver}\noptions timeout:2 attempts:2\n"))
        .unwrap();
    std::fs::copy(tls_fixture("names/ca.pem"), etc.join("switchyard/ca.pem")).unwrap();
    let config = json!({
        "backends": [
            {"name": "demo", "schema": "mock", "mock_chunk_delay_ms": 100},
            {"name": "up", "schema": "openai", "base_url": format!("https://upstream.test:{}/v1", upstream.port()),
             "ca_file": "/etc/switchyard/ca.pem"}
        ],
        "routes": [
            {"model": "demo", "backends": [{"backend": "demo"}]},
            {"model": "tls", "backends": [{"backend": "up"}]},
            {"model": "limited", "backends": [{"backend": "demo"}]}
        ],
        "limits": [{"name": "daily", "key": ["client"], "models": ["limited"], "requests": 2, "per": "1d"}],
        "ratelimit": {"redis": format!("rediss://gw:{REDIS_PASSWORD}@redis.test:{redis_port}"),
                      "redis_ca_file": "/etc/switchyard/ca.pem", "on_redis_error": "deny", "redis_timeout_ms": 5000}
    });
    std::fs::write(etc.join("switchyard/test.json"), config.to_string()).unwrap();
    let argv = [&image.argv[..1], &["--config".to_string(), "/etc/switchyard/test.json".to_string()]].concat();
    let mut gw = start_in_root(chroot, &root, &image.user, &argv, mdwe);

    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("tls"));
    assert_eq!(r.status, 200, "{} {}", r.text(), gw.log());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "over tls");
    let r = post(gw.addr, "/v1/chat/completions", &[], &json!({"model": "tls", "stream": true, "messages": []}));
    assert_eq!(r.body, sse_payload(3, true));
    let limited: Vec<u16> =
        (0..3).map(|_| post(gw.addr, "/v1/chat/completions", &[], &chat("limited")).status).collect();
    assert_eq!(limited, [200, 200, 429], "{}", gw.log());
    let asked = queries.lock().unwrap().clone();
    assert!(asked.iter().any(|q| q == "redis.test 1"), "Redis was not looked up through DNS: {asked:?}");
    // glibc's order without an nsswitch.conf is files, then DNS: a name in /etc/hosts never reaches DNS.
    assert!(!asked.iter().any(|q| q.starts_with("upstream.test")), "upstream.test went to DNS: {asked:?}");

    // 3. The stop signal drains: an in-flight stream finishes, then the process exits 0.
    let mut s = connect(gw.addr);
    let body = json!({"model": "demo", "stream": true, "messages": [{"role": "user", "content": "one two three"}]});
    post_raw(&mut s, "/v1/chat/completions", &[], &serde_json::to_vec(&body).unwrap());
    let mut reader = BufReader::new(s);
    assert_eq!(read_head(&mut reader).0, 200);
    let _ = read_chunk(&mut reader).unwrap();
    let signal = image.stop_signal.clone();
    let stopper = std::thread::spawn(move || {
        let status = gw.stop(&signal);
        (status, gw)
    });
    let mut rest = Vec::new();
    while let Some(c) = read_chunk(&mut reader) {
        rest.extend_from_slice(&c);
    }
    let _ = reader.read_to_end(&mut Vec::new());
    let (status, gw) = stopper.join().unwrap();
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"), "{}", String::from_utf8_lossy(&rest));
    assert_eq!(status.code(), Some(0), "{}", gw.log());
    assert!(gw.log().contains("drained"), "{}", gw.log());
}

#[test]
fn systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        return note("SKIPPED systemd_unit_verifies: systemd-analyze is not installed");
    };
    assert!(out.status.success());
    // An alternate root with the unit, the binary where ExecStart expects it, /bin/kill for ExecReload,
    // and the system's units the service depends on.
    let dir = TempDir::new("unit");
    let root = &dir.0;
    let unit = std::fs::read_to_string(format!("{ROOT}/switchyard.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap().split_whitespace().next().unwrap();
    let place = |dest: &str, from: &Path| {
        let to = root.join(dest.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    };
    place(exec, &static_binary());
    place("/bin/kill", Path::new("/bin/kill"));
    place("/etc/systemd/system/switchyard.service", Path::new(&format!("{ROOT}/switchyard.service")));
    std::fs::create_dir_all(root.join("lib/systemd")).unwrap();
    let copied = Command::new("cp").arg("-r").arg("/lib/systemd/system").arg(root.join("lib/systemd/")).status();
    assert!(copied.is_ok_and(|s| s.success()));
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("switchyard.service")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    for setting in ["DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "MemoryDenyWriteExecute=yes"] {
        assert!(unit.lines().any(|l| l == setting), "{setting} is missing");
    }
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    let nofile: u64 = unit.lines().find_map(|l| l.strip_prefix("LimitNOFILE=")).unwrap().parse().unwrap();
    let max_connections = 10_000; // the default of server.max_connections
    assert!(nofile >= 2 * max_connections + 256, "LimitNOFILE={nofile} is below what 10,000 connections need");
}
