//! Outages: passive health ejects a failing primary so later requests skip it, a probe after the back-off
//! restores it, and retries honour a provider's `Retry-After`. Each outage runs against a scripted
//! primary whose behaviour the test switches, with a healthy secondary behind it. Latencies are printed
//! (the outage table in the README), never asserted; what is asserted is who was asked and what the client
//! got.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// How the scripted primary behaves.
#[derive(Clone, Debug, PartialEq)]
enum Mode {
    /// A chat completion.
    Ok,
    /// No listener: connections are refused.
    Refused,
    /// Connections are accepted and requests read, but never answered.
    BlackHole,
    /// This status, with these extra header lines.
    Status(u16, &'static str),
    /// This status for the next `n` requests, then `Ok`.
    StatusThenOk(u16, &'static str, usize),
}

/// An upstream whose behaviour the test switches; it counts the requests it read.
struct Scripted {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    requests: Arc<AtomicUsize>,
    listener: Arc<Mutex<Option<TcpListener>>>,
}

impl Scripted {
    fn start(mode: Mode) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let s = Scripted {
            addr,
            mode: Arc::new(Mutex::new(Mode::Ok)),
            requests: Arc::new(AtomicUsize::new(0)),
            listener: Arc::new(Mutex::new(None)),
        };
        s.serve(listener);
        s.set(mode);
        s
    }

    fn serve(&self, listener: TcpListener) {
        let accept = listener.try_clone().unwrap();
        *self.listener.lock().unwrap() = Some(listener);
        let (mode, requests, slot) = (self.mode.clone(), self.requests.clone(), self.listener.clone());
        thread::spawn(move || {
            for stream in accept.incoming() {
                // `set(Refused)` took the listener and woke us: close the port for good.
                if slot.lock().unwrap().is_none() {
                    return;
                }
                let Ok(stream) = stream else { return };
                let (mode, requests) = (mode.clone(), requests.clone());
                thread::spawn(move || connection(stream, &mode, &requests));
            }
        });
    }

    /// Switches behaviour; `Refused` closes the listening socket, leaving it binds the port again.
    fn set(&self, mode: Mode) {
        let refused = mode == Mode::Refused;
        *self.mode.lock().unwrap() = mode;
        let mut listener = self.listener.lock().unwrap();
        if refused {
            if let Some(l) = listener.take() {
                // Wake the accept loop so it drops its clone of the socket too.
                let _ = TcpStream::connect(self.addr);
                drop(l);
            }
        } else if listener.is_none() {
            drop(listener);
            let l = (0..50)
                .find_map(|_| {
                    TcpListener::bind(self.addr).ok().or_else(|| {
                        thread::sleep(Duration::from_millis(20));
                        None
                    })
                })
                .expect("bind the scripted upstream's port again");
            self.serve(l);
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn connection(stream: TcpStream, mode: &Mutex<Mode>, requests: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        // Read one request: head, then a Content-Length body.
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if first && *mode.lock().unwrap() == Mode::Refused {
                // The wake-up connection of `set(Refused)`, or a straggler: close.
                return;
            }
            first = false;
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        let current = {
            let mut m = mode.lock().unwrap();
            let current = m.clone();
            if let Mode::StatusThenOk(status, headers, n) = current {
                *m = if n > 1 { Mode::StatusThenOk(status, headers, n - 1) } else { Mode::Ok };
                Mode::Status(status, headers)
            } else {
                current
            }
        };
        let (status, extra, body) = match current {
            Mode::BlackHole => {
                // Hold the connection until the gateway gives up on it.
                let mut sink = [0u8; 64];
                while reader.read(&mut sink).unwrap_or(0) > 0 {}
                return;
            }
            Mode::Status(status, extra) => (status, extra, format!(r#"{{"error":{{"message":"scripted {status}","type":"server_error"}}}}"#)),
            _ => (200, "", r#"{"id":"p","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"from the primary"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#.to_string()),
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
            body.len()
        );
        if out.write_all(head.as_bytes()).and_then(|_| out.write_all(body.as_bytes())).is_err() {
            return;
        }
    }
}

/// A route with the scripted primary first and a healthy fake second.
fn config(primary: &Scripted, secondary: &FakeUpstream, failures: u32) -> Value {
    json!({
        "health": {"failures": failures, "base_ejection_ms": 1000, "max_ejection_ms": 4000},
        "backends": [
            {"name": "primary", "schema": "openai", "base_url": primary.base_url(),
             "connect_timeout_ms": 1000, "response_timeout_ms": 300},
            {"name": "secondary", "schema": "openai", "base_url": secondary.base_url()}
        ],
        "routes": [
            {"model": "m", "backends": [{"backend": "primary"}, {"backend": "secondary", "priority": 1}]},
            {"model": "solo", "backends": [{"backend": "primary"}],
             "retry": {"retries": 1, "max_wait_ms": 3000}}
        ]
    })
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// A counter's value in /metrics, summed over its label sets.
fn counter(gw: &Gateway, name: &str) -> u64 {
    let text = get(gw.addr, "/metrics", &[]).text();
    text.lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Sends `n` requests one after another; returns each one's latency (all must succeed).
fn run(gw: &Gateway, n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = post(gw.addr, "/v1/chat/completions", &[], &chat("m"));
            assert_eq!(r.status, 200, "{}", r.text());
            t.elapsed()
        })
        .collect()
}

fn median_ms(mut d: Vec<Duration>) -> f64 {
    d.sort();
    d[d.len() / 2].as_secs_f64() * 1000.0
}

#[test]
fn outage_table_ejection_skips_a_failing_primary_and_a_probe_restores_it() {
    let secondary = FakeUpstream::start();
    let outages = [
        ("refusing connections", Mode::Refused),
        ("black-holed (never answers)", Mode::BlackHole),
        ("answering 503", Mode::Status(503, "")),
        ("429 with Retry-After: 1", Mode::Status(429, "retry-after: 1\r\n")),
    ];
    println!("outage | ejection | requests 2..100 p50 | max | primary asked | recovered after");
    for (name, mode) in outages {
        for failures in [0u32, 3] {
            let primary = Scripted::start(Mode::Ok);
            let gw = Gateway::start(&config(&primary, &secondary, failures));
            run(&gw, 2);
            primary.set(mode.clone());
            // Without ejection a black hole costs the whole response timeout per request: fewer of them.
            let n = if failures == 0 && mode == Mode::BlackHole { 10 } else { 100 };
            let before = primary.requests();
            let latencies = run(&gw, n);
            let asked = primary.requests() - before;
            let p50 = median_ms(latencies[1..].to_vec());
            let max = latencies[1..].iter().max().unwrap().as_secs_f64() * 1000.0;
            let recovery = if failures > 0 {
                // 429 is the provider's rate limit, not ill health: it never ejects. (Refused connections
                // never reach the primary's counter: the ejection counter below speaks for them.)
                if mode == Mode::Refused {
                } else if matches!(mode, Mode::Status(429, _)) {
                    assert_eq!(asked, n, "{name}: a rate-limited backend is still asked every time");
                } else {
                    assert!(asked <= 5, "{name}: the ejected primary was asked {asked} times out of {n}");
                }
                primary.set(Mode::Ok);
                let ended = Instant::now();
                let served_before = primary.requests();
                let recovered = eventually(Duration::from_secs(10), || {
                    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("m"));
                    r.status == 200 && r.json()["choices"][0]["message"]["content"] == "from the primary"
                });
                assert!(recovered, "{name}: the primary was not restored: {}", gw.log());
                assert!(primary.requests() > served_before);
                format!("{:.0} ms", ended.elapsed().as_secs_f64() * 1000.0)
            } else {
                if mode != Mode::Refused {
                    assert_eq!(asked, n, "{name}: without ejection every request asks the primary first");
                }
                "-".into()
            };
            println!(
                "{name} | {} | {p50:.1} ms | {max:.1} ms | {asked} of {n} | {recovery}",
                if failures > 0 { "on" } else { "off" }
            );
            if failures > 0 && !matches!(mode, Mode::Status(429, _)) {
                assert!(counter(&gw, "switchyard_backend_ejections_total") >= 1);
                assert!(counter(&gw, "switchyard_backend_restorations_total") >= 1);
                assert!(gw.log().contains("backend \"primary\" ejected"), "{}", gw.log());
            }
        }
    }
}

#[test]
fn retry_after_is_honoured_on_a_single_backend_and_a_long_one_is_passed_on() {
    let secondary = FakeUpstream::start();
    let primary = Scripted::start(Mode::StatusThenOk(429, "retry-after: 1\r\n", 1));
    let gw = Gateway::start(&config(&primary, &secondary, 3));
    let t = Instant::now();
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("solo"));
    let waited = t.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(primary.requests(), 2, "one 429, then the retry after the asked second");
    assert_eq!(counter(&gw, "switchyard_retries_total"), 1);
    println!("429 Retry-After: 1 then 200: answered in {:.0} ms", waited.as_secs_f64() * 1000.0);
    // A wait longer than max_wait_ms is not waited for: the client gets the 429 and its Retry-After.
    primary.set(Mode::Status(429, "retry-after: 60\r\n"));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("solo"));
    assert_eq!(r.status, 429);
    assert_eq!(r.headers.get("retry-after").map(String::as_str), Some("60"));
    assert_eq!(primary.requests(), 3);
}

#[test]
fn a_500_is_not_retried_since_the_request_may_have_been_processed() {
    let secondary = FakeUpstream::start();
    let primary = Scripted::start(Mode::Status(500, ""));
    let gw = Gateway::start(&config(&primary, &secondary, 0));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("solo"));
    assert_eq!(r.status, 500);
    assert_eq!(primary.requests(), 1);
    // A 503 that says when to come back was not processed: it is retried.
    primary.set(Mode::StatusThenOk(503, "retry-after: 1\r\n", 1));
    let r = post(gw.addr, "/v1/chat/completions", &[], &chat("solo"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(primary.requests(), 3);
}

#[test]
fn a_reload_keeps_the_health_of_backends_that_did_not_change() {
    let secondary = FakeUpstream::start();
    let primary = Scripted::start(Mode::Status(503, ""));
    let mut cfg = config(&primary, &secondary, 2);
    cfg["health"]["base_ejection_ms"] = json!(60_000);
    let gw = Gateway::start(&cfg);
    run(&gw, 3);
    assert_eq!(primary.requests(), 2, "ejected after two failures");
    cfg["routes"].as_array_mut().unwrap().push(json!({"model": "other", "backends": [{"backend": "secondary"}]}));
    std::fs::write(&gw.config_path, cfg.to_string()).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || post(gw.addr, "/v1/chat/completions", &[], &chat("other")).status == 200)
    );
    primary.set(Mode::Ok);
    run(&gw, 5);
    assert_eq!(primary.requests(), 2, "still ejected after the reload");
}
