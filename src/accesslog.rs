//! The access log: one JSON line per request (`access_log` in config: `off`, `stderr` — the default —
//! or a file path). A request thread appends its line to a buffer of its own (a lock nobody else takes
//! but the writer, every 20 ms); the writer thread swaps each buffer out and writes it in one go. So a
//! line costs a copy, never a system call, a wake-up or a shared lock (but the first line after a quiet
//! second, which wakes the dozing writer: [`crate::doze`]), and a slow disk or terminal never
//! stalls a worker: past 4 MiB waiting in one thread's buffer, lines are dropped and counted
//! (`switchyard_access_log_dropped_total`). A file is opened for appending and reopened on SIGUSR1 and on
//! every config reload, for log rotation; [`flush`] writes what is pending (at exit).
//!
//! On stderr the lines are `info`-level: `SWITCHYARD_LOG=warn` silences them there (not in a file).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use parking_lot::Mutex;

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

/// How often the writer collects the threads' buffers.
const POLL: Duration = Duration::from_millis(20);
/// Collections that found nothing before the writer dozes (1 s): under traffic it never does, so a line
/// costs no wake-up; the first line after a quiet second wakes it.
const QUIET_POLLS: u32 = 50;

static WRITER_DOZE: crate::doze::Doze = crate::doze::Doze::new();
/// Bytes one thread may have waiting; past it its lines are dropped.
const MAX_PENDING: usize = 4 << 20;

const OFF: u8 = 0;
const STDERR: u8 = 1;
const FILE: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(OFF);

enum Output {
    None,
    Stderr,
    File(String, File),
}

/// Where the writer writes; taken by the writer, [`configure`], [`reopen`] and [`flush`] (never by a
/// request).
static OUTPUT: Mutex<Output> = Mutex::new(Output::None);
/// Every thread's buffer (a thread's outlives it, so nothing it wrote is lost).
static BUFFERS: Mutex<Vec<Arc<Mutex<Vec<u8>>>>> = Mutex::new(Vec::new());
static WRITER: Once = Once::new();

thread_local! {
    static LOCAL: Arc<Mutex<Vec<u8>>> = {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        BUFFERS.lock().push(buffer.clone());
        buffer
    };
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

/// Points the log at `target` (at start-up and on every reload; a file is reopened each time).
pub fn configure(target: &Target) {
    let mode = match target {
        Target::Off => OFF,
        Target::Stderr => STDERR,
        Target::File(_) => FILE,
    };
    {
        let mut out = OUTPUT.lock();
        drain(&mut out);
        *out = match target {
            Target::Off => Output::None,
            Target::Stderr => Output::Stderr,
            Target::File(path) => open(path).map_or(Output::None, |f| Output::File(path.clone(), f)),
        };
    }
    MODE.store(mode, Ordering::Release);
    if mode != OFF {
        WRITER.call_once(|| {
            crate::affinity::spawn_helper("switchyard-access-log", || {
                let mut quiet = 0;
                loop {
                    std::thread::sleep(POLL);
                    if drain(&mut OUTPUT.lock()) {
                        quiet = 0;
                        continue;
                    }
                    quiet += 1;
                    if quiet >= QUIET_POLLS {
                        // Still quiet after it: lines since have reset the count.
                        WRITER_DOZE.sleep_unless(pending);
                    }
                }
            })
            .expect("spawn the access log writer");
        });
    }
}

/// Reopens the file (SIGUSR1): after a rotation renamed it, lines go to a new file at the path.
pub fn reopen() {
    let mut out = OUTPUT.lock();
    drain(&mut out);
    if let Output::File(path, _) = &*out {
        if let Some(f) = open(path) {
            let path = path.clone();
            *out = Output::File(path, f);
        }
    }
}

/// Writes every line waiting (at exit, so the last 20 ms of lines are not lost).
pub fn flush() {
    drain(&mut OUTPUT.lock());
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

/// Appends one line (without its newline) to this thread's buffer. Never blocks on IO.
pub fn write(line: &[u8]) {
    let kept = LOCAL
        .try_with(|buffer| {
            let mut b = buffer.lock();
            if b.len() + line.len() >= MAX_PENDING {
                return false;
            }
            b.extend_from_slice(line);
            b.push(b'\n');
            true
        })
        .unwrap_or(false);
    if kept {
        WRITER_DOZE.wake();
    } else {
        metrics::ACCESS_LOG_DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether any thread has lines waiting (under each buffer's lock, which [`write`] appends under).
fn pending() -> bool {
    let buffers: Vec<Arc<Mutex<Vec<u8>>>> = BUFFERS.lock().clone();
    buffers.iter().any(|b| !b.lock().is_empty())
}

/// An empty buffer with room, swapped in for a thread's full one (no allocation per collection).
static SPARE: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Moves every thread's pending lines to `out`; whether there were any.
fn drain(out: &mut Output) -> bool {
    let buffers: Vec<Arc<Mutex<Vec<u8>>>> = BUFFERS.lock().clone();
    let mut batch = std::mem::take(&mut *SPARE.lock());
    let mut any = false;
    for buffer in buffers {
        {
            let mut b = buffer.lock();
            if b.is_empty() {
                continue;
            }
            std::mem::swap(&mut *b, &mut batch);
        }
        any = true;
        let result = match out {
            Output::None => {
                let lines = batch.iter().filter(|b| **b == b'\n').count() as u64;
                metrics::ACCESS_LOG_DROPPED.fetch_add(lines, Ordering::Relaxed);
                Ok(())
            }
            Output::Stderr => std::io::stderr().lock().write_all(&batch),
            Output::File(_, f) => f.write_all(&batch),
        };
        if let Err(e) = result {
            crate::warn_throttled!("access log: write failed: {e}");
        }
        batch.clear();
        // A burst's buffer is not kept forever.
        batch.shrink_to(1 << 20);
    }
    *SPARE.lock() = batch;
    any
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
        crate::digits::push_decimal(&mut self.buf, value);
        self
    }

    /// Milliseconds with microsecond precision.
    pub fn millis(&mut self, key: &str, value: Option<std::time::Duration>) -> &mut Self {
        match value {
            Some(d) => {
                self.key(key);
                let us = d.as_micros() as u64;
                crate::digits::push_decimal(&mut self.buf, us / 1000);
                self.buf.push(b'.');
                push_padded(&mut self.buf, us % 1000, 3);
                self
            }
            None => self.raw(key, "null"),
        }
    }

    /// A timestamp (milliseconds since the Unix epoch) as RFC 3339 UTC.
    pub fn timestamp(&mut self, key: &str, unix_ms: u64) -> &mut Self {
        self.key(key);
        self.buf.push(b'"');
        rfc3339_into(&mut self.buf, unix_ms);
        self.buf.push(b'"');
        self
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

/// `n` in at least `width` digits, zero-padded.
fn push_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let start = out.len();
    crate::digits::push_decimal(out, n);
    let len = out.len() - start;
    if len < width {
        out.splice(start..start, std::iter::repeat_n(b'0', width - len));
    }
}

/// Appends `s` as a JSON string.
pub fn string(out: &mut Vec<u8>, s: &str) {
    let clean = |b: &u8| *b >= 0x20 && *b != b'"' && *b != b'\\' && *b != 0x7f;
    if s.as_bytes().iter().all(clean) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
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
    let mut out = Vec::with_capacity(24);
    rfc3339_into(&mut out, unix_ms);
    String::from_utf8(out).expect("ASCII")
}

/// Appends `unix_ms` as `2026-01-31T12:34:56.789Z`.
fn rfc3339_into(out: &mut Vec<u8>, unix_ms: u64) {
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
    push_padded(out, year.max(0) as u64, 4);
    for (sep, value, width) in [
        (b'-', month as u64, 2),
        (b'-', day as u64, 2),
        (b'T', rem / 3600, 2),
        (b':', rem % 3600 / 60, 2),
        (b':', rem % 60, 2),
        (b'.', unix_ms % 1000, 3),
    ] {
        out.push(sep);
        push_padded(out, value, width);
    }
    out.push(b'Z');
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
    fn numbers_are_written_in_decimal() {
        let mut line = JsonLine::new();
        line.num("zero", 0)
            .num("max", u64::MAX)
            .millis("padded", Some(std::time::Duration::from_micros(1_005)))
            .millis("small", Some(std::time::Duration::from_micros(7)));
        let v: serde_json::Value = serde_json::from_slice(&line.finish()).unwrap();
        assert_eq!((v["zero"].as_u64(), v["max"].as_u64()), (Some(0), Some(u64::MAX)));
        assert_eq!((v["padded"].as_f64(), v["small"].as_f64()), (Some(1.005), Some(0.007)));
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
