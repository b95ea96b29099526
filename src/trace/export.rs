//! The exporter: one OS thread that batches finished spans and POSTs them to the collector as
//! OTLP/HTTP protobuf (`http://host:4318/v1/traces` by default). Requests never wait for it: they put
//! their spans in a bounded queue and, when it is full, the spans are dropped and counted
//! (`switchyard_trace_spans_dropped_total{reason="queue_full"}`). A batch the collector refuses, or
//! that cannot be sent within the timeout, is dropped and counted too (`reason="export_failed"`);
//! nothing is retried, so a collector that is down costs one failed connect per batch.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{otlp, Value};
use crate::config::TracingConfig;
use crate::metrics;

/// Where and how batches are sent (replaced on reload).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// `host:port` for the `Host` header.
    pub authority: String,
    pub path: String,
    pub timeout: Duration,
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub service_name: String,
}

impl Target {
    fn from_config(c: &TracingConfig) -> Target {
        let (host, port, path) = crate::config::parse_otlp_endpoint(&c.endpoint)
            .unwrap_or_else(|_| ("127.0.0.1".into(), 4318, "/v1/traces".into()));
        let authority = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
        Target {
            host,
            port,
            authority,
            path,
            timeout: Duration::from_millis(c.export_timeout_ms),
            batch_size: c.batch_size.max(1),
            flush_interval: Duration::from_millis(c.flush_interval_ms),
            service_name: c.service_name.clone(),
        }
    }
}

/// One request's encoded span entries, and how many spans they are.
type Entries = (Vec<u8>, usize);

static QUEUE: OnceLock<SyncSender<Entries>> = OnceLock::new();
static TARGET: Mutex<Option<Arc<Target>>> = Mutex::new(None);

/// Points the exporter at the config's collector; starts its thread the first time (the queue's size
/// is fixed then: changing `queue_size` needs a restart).
pub fn configure(c: &TracingConfig) {
    *TARGET.lock() = Some(Arc::new(Target::from_config(c)));
    QUEUE.get_or_init(|| {
        let (tx, rx) = sync_channel(c.queue_size.max(1));
        crate::affinity::spawn_helper("switchyard-trace-export", move || run(rx)).expect("spawn the trace exporter");
        tx
    });
}

/// Queues one request's encoded spans ([`otlp::span_entries`]); never blocks.
pub fn submit(entries: Vec<u8>, spans: usize) {
    let Some(tx) = QUEUE.get() else { return };
    match tx.try_send((entries, spans)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            metrics::TRACE_SPANS_DROPPED_QUEUE.fetch_add(spans as u64, Ordering::Relaxed);
        }
    }
}

fn current() -> Option<Arc<Target>> {
    TARGET.lock().clone()
}

/// How often the exporter looks at its queue at most. Requests never wake it (a wake-up per request
/// would cost the request thread a system call); the queue holds what arrives meanwhile.
const POLL: Duration = Duration::from_millis(20);

/// The exporter thread: drains the queue every [`POLL`] (or flush interval, when shorter), and sends a
/// batch when it is full or its oldest span has waited the flush interval.
fn run(rx: Receiver<Entries>) {
    let mut batch = Batch::default();
    let mut oldest: Option<Instant> = None;
    loop {
        let Some(target) = current() else {
            std::thread::sleep(POLL);
            continue;
        };
        loop {
            match rx.try_recv() {
                Ok((entries, n)) => {
                    oldest.get_or_insert_with(Instant::now);
                    batch.entries.extend_from_slice(&entries);
                    batch.spans += n;
                    if batch.spans >= target.batch_size {
                        export(&target, &mut batch);
                        oldest = None;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        if oldest.is_some_and(|t| t.elapsed() >= target.flush_interval) {
            export(&target, &mut batch);
            oldest = None;
        }
        std::thread::sleep(POLL.min(target.flush_interval));
    }
}

/// Encoded spans waiting to be sent.
#[derive(Default)]
struct Batch {
    entries: Vec<u8>,
    spans: usize,
}

/// The resource every span comes from.
fn resource(target: &Target) -> Vec<(&'static str, Value<'_>)> {
    vec![
        ("service.name", Value::str(&target.service_name)),
        ("service.version", Value::str(env!("CARGO_PKG_VERSION"))),
        ("telemetry.sdk.name", Value::str("switchyard")),
        ("telemetry.sdk.language", Value::str("rust")),
    ]
}

fn export(target: &Target, batch: &mut Batch) {
    if batch.spans == 0 {
        return;
    }
    let n = batch.spans as u64;
    let body = otlp::export_request(&resource(target), ("switchyard", env!("CARGO_PKG_VERSION")), &batch.entries);
    batch.entries.clear();
    batch.spans = 0;
    match post(target, &body) {
        Ok(()) => {
            metrics::TRACE_SPANS_EXPORTED.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            metrics::TRACE_SPANS_DROPPED_EXPORT.fetch_add(n, Ordering::Relaxed);
            crate::warn_throttled!(
                "trace export to http://{}{} failed: {e}; {n} span(s) dropped",
                target.authority,
                target.path
            );
        }
    }
}

/// One POST on a fresh connection; `Ok` when the collector answered 2xx.
fn post(target: &Target, body: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + target.timeout;
    let addrs: Vec<_> =
        (target.host.as_str(), target.port).to_socket_addrs().map_err(|e| format!("resolving: {e}"))?.collect();
    let mut last = String::from("no address");
    let mut stream = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connecting: {e}"),
        }
    }
    let mut s = stream.ok_or(last)?;
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let _ = s.set_write_timeout(Some(left));
    let _ = s.set_read_timeout(Some(left));
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\nuser-agent: switchyard/{}\r\n\r\n",
        target.path,
        target.authority,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)).map_err(|e| format!("sending: {e}"))?;
    let mut buf = [0u8; 512];
    let mut have = 0;
    while !buf[..have].contains(&b'\n') && have < buf.len() {
        match s.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&buf[..have]);
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(s) if (200..300).contains(&s) => Ok(()),
        Some(s) => Err(format!("the collector answered {s}")),
        None => Err("no HTTP answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_otlp_endpoint as parse_endpoint;

    #[test]
    fn endpoints_default_port_and_path_and_refuse_https() {
        assert_eq!(parse_endpoint("http://collector").unwrap(), ("collector".into(), 4318, "/v1/traces".into()));
        assert_eq!(parse_endpoint("http://127.0.0.1:5555/x").unwrap(), ("127.0.0.1".into(), 5555, "/x".into()));
        assert_eq!(parse_endpoint("http://[::1]:4318/").unwrap(), ("::1".into(), 4318, "/v1/traces".into()));
        assert!(parse_endpoint("https://collector").is_err());
        assert!(parse_endpoint("http://u@h").is_err());
        assert!(parse_endpoint("http://h:notaport").is_err());
    }
}
