//! The access log: one JSON line per request (`access_log` in config: `off`, `stderr` — the default —
//! or a file path). Lines are built on the request's thread and handed to one writer thread through a
//! bounded queue, so a slow disk or terminal never stalls a worker: when the queue is full the line is
//! dropped and counted (`switchyard_access_log_dropped_total`). A file is opened for appending and
//! reopened on SIGUSR1 and on every config reload, for log rotation.
//!
//! On stderr the lines are `info`-level: `SWITCHYARD_LOG=warn` silences them there (not in a file).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::OnceLock;

use crate::metrics;

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Off,
    Stderr,
    File(String),
}

impl Target {
    /// From the config value: `off`, `stderr` or a path.
    pub fn parse(value: &str) -> Target {
        match value {
            "off" => Target::Off,
            "stderr" | "" => Target::Stderr,
            path => Target::File(path.to_string()),
        }
    }
}

enum Msg {
    Line(Vec<u8>),
    Retarget(Target),
    Reopen,
}

/// Lines waiting for the writer at most.
const QUEUE: usize = 65_536;

const OFF: u8 = 0;
const STDERR: u8 = 1;
const FILE: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(OFF);
static SINK: OnceLock<SyncSender<Msg>> = OnceLock::new();

fn sink() -> &'static SyncSender<Msg> {
    SINK.get_or_init(|| {
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("switchyard-access-log".into())
            .spawn(move || writer(rx))
            .expect("spawn the access log writer");
        tx
    })
}

/// Points the log at `target` (at start-up and on every reload; a file is reopened each time).
pub fn configure(target: &Target) {
    let mode = match target {
        Target::Off => OFF,
        Target::Stderr => STDERR,
        Target::File(_) => FILE,
    };
    if mode != OFF || SINK.get().is_some() {
        let _ = sink().send(Msg::Retarget(target.clone()));
    }
    MODE.store(mode, Ordering::Release);
}

/// Reopens the file (SIGUSR1): after a rotation renamed it, lines go to a new file at the path.
pub fn reopen() {
    if let Some(tx) = SINK.get() {
        let _ = tx.try_send(Msg::Reopen);
    }
}

/// Whether a line would be written now (so callers can skip building it).
#[inline]
pub fn enabled() -> bool {
    match MODE.load(Ordering::Relaxed) {
        OFF => false,
        STDERR => crate::log::enabled(crate::log::INFO),
        _ => true,
    }
}

/// Queues one line (without its newline). Never blocks: a full queue drops the line and counts it.
pub fn write(line: Vec<u8>) {
    if let Some(tx) = SINK.get() {
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                metrics::ACCESS_LOG_DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

enum Output {
    None,
    Stderr,
    File(String, File),
}

fn open(path: &str) -> Option<File> {
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            crate::error!("access log: cannot open {path}: {e}; its lines are dropped until it can be opened");
            None
        }
    }
}

/// How often the writer looks at the queue. Senders never wake it (a wake-up per line would cost the
/// request thread a system call); the queue holds what arrives meanwhile.
const POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// The writer thread: every [`POLL`], writes what is queued in one batch.
fn writer(rx: Receiver<Msg>) {
    let mut out = Output::None;
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let handle = |msg: Msg, out: &mut Output, buf: &mut Vec<u8>| match msg {
        Msg::Line(line) => {
            if matches!(out, Output::None) {
                metrics::ACCESS_LOG_DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            }
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        Msg::Retarget(target) => {
            flush(out, buf);
            *out = match target {
                Target::Off => Output::None,
                Target::Stderr => Output::Stderr,
                Target::File(path) => match open(&path) {
                    Some(f) => Output::File(path, f),
                    None => Output::None,
                },
            };
        }
        Msg::Reopen => {
            flush(out, buf);
            if let Output::File(path, _) = out {
                if let Some(f) = open(path) {
                    let path = std::mem::take(path);
                    *out = Output::File(path, f);
                }
            }
        }
    };
    loop {
        loop {
            match rx.try_recv() {
                Ok(msg) => handle(msg, &mut out, &mut buf),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    flush(&mut out, &mut buf);
                    return;
                }
            }
            if buf.len() >= 64 * 1024 {
                flush(&mut out, &mut buf);
            }
        }
        flush(&mut out, &mut buf);
        std::thread::sleep(POLL);
    }
}

fn flush(out: &mut Output, buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let result = match out {
        Output::None => Ok(()),
        Output::Stderr => std::io::stderr().lock().write_all(buf),
        Output::File(_, f) => f.write_all(buf),
    };
    if let Err(e) = result {
        crate::warn_throttled!("access log: write failed: {e}");
    }
    buf.clear();
}

/// A JSON object written field by field, strings escaped.
pub struct JsonLine {
    buf: Vec<u8>,
    empty: bool,
}

impl Default for JsonLine {
    fn default() -> Self {
        JsonLine::new()
    }
}

impl JsonLine {
    pub fn new() -> JsonLine {
        let mut buf = Vec::with_capacity(768);
        buf.push(b'{');
        JsonLine { buf, empty: true }
    }

    fn key(&mut self, key: &str) {
        if !self.empty {
            self.buf.push(b',');
        }
        self.empty = false;
        string(&mut self.buf, key);
        self.buf.push(b':');
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        self.key(key);
        string(&mut self.buf, value);
        self
    }

    /// A string value written by `Display`, for values that need no escaping (addresses, timestamps).
    pub fn display(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        let _ = write!(self.buf, "{value}");
        self.buf.push(b'"');
        self
    }

    /// A string, or `null`.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, "null"),
        }
    }

    pub fn num(&mut self, key: &str, value: u64) -> &mut Self {
        self.key(key);
        let _ = write!(self.buf, "{value}");
        self
    }

    /// Milliseconds with microsecond precision.
    pub fn millis(&mut self, key: &str, value: Option<std::time::Duration>) -> &mut Self {
        match value {
            Some(d) => {
                self.key(key);
                let us = d.as_micros();
                let _ = write!(self.buf, "{}.{:03}", us / 1000, us % 1000);
                self
            }
            None => self.raw(key, "null"),
        }
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.raw(key, if value { "true" } else { "false" })
    }

    /// A value already in JSON.
    pub fn raw(&mut self, key: &str, json: &str) -> &mut Self {
        self.key(key);
        self.buf.extend_from_slice(json.as_bytes());
        self
    }

    /// A nested object under `key`, written by `f` into the same buffer.
    pub fn object(&mut self, key: &str, f: impl FnOnce(&mut JsonLine)) -> &mut Self {
        self.key(key);
        self.nested_object(f);
        self
    }

    fn nested_object(&mut self, f: impl FnOnce(&mut JsonLine)) {
        self.buf.push(b'{');
        self.empty = true;
        f(self);
        self.buf.push(b'}');
        self.empty = false;
    }

    /// An array under `key`, its items written by `f`.
    pub fn array(&mut self, key: &str, f: impl FnOnce(&mut Items)) -> &mut Self {
        self.key(key);
        self.buf.push(b'[');
        f(&mut Items { line: self, first: true });
        self.buf.push(b']');
        self.empty = false;
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push(b'}');
        self.buf
    }
}

/// The items of an array being written.
pub struct Items<'a> {
    line: &'a mut JsonLine,
    first: bool,
}

impl Items<'_> {
    fn comma(&mut self) {
        if !self.first {
            self.line.buf.push(b',');
        }
        self.first = false;
    }

    pub fn str(&mut self, value: &str) {
        self.comma();
        string(&mut self.line.buf, value);
    }

    pub fn object(&mut self, f: impl FnOnce(&mut JsonLine)) {
        self.comma();
        self.line.nested_object(f);
    }
}

/// Appends `s` as a JSON string.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f | 0x7f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escaped {
            Some(e) => out.extend_from_slice(e),
            None => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `2026-01-31T12:34:56.789Z` for milliseconds since the Unix epoch.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    Rfc3339(unix_ms).to_string()
}

/// Displays milliseconds since the Unix epoch as `2026-01-31T12:34:56.789Z`.
pub struct Rfc3339(pub u64);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unix_ms = self.0;
        let secs = unix_ms / 1000;
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            unix_ms % 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_escapes_and_parses_back() {
        let mut line = JsonLine::new();
        line.str("a", "quote \" back \\ nl \n ctl \u{1} é")
            .num("n", 42)
            .bool("b", true)
            .opt_str("none", None)
            .millis("ms", Some(std::time::Duration::from_micros(1_234_567)))
            .array("list", |items| {
                items.str("x");
                items.object(|o| {
                    o.num("a", 1).num("b", 2);
                });
            })
            .object("o", |o| {
                o.bool("t", false);
            })
            .num("after", 3);
        let bytes = line.finish();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["a"], "quote \" back \\ nl \n ctl \u{1} é");
        assert_eq!(v["n"], 42);
        assert_eq!(v["b"], true);
        assert!(v["none"].is_null());
        assert_eq!(v["ms"], 1234.567);
        assert_eq!(v["list"], serde_json::json!(["x", {"a": 1, "b": 2}]));
        assert_eq!(v["o"], serde_json::json!({"t": false}));
        assert_eq!(v["after"], 3);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_millis(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
    }

    #[test]
    fn targets_parse_from_config() {
        assert_eq!(Target::parse("off"), Target::Off);
        assert_eq!(Target::parse("stderr"), Target::Stderr);
        assert_eq!(Target::parse("/var/log/a.log"), Target::File("/var/log/a.log".into()));
    }
}
