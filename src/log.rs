//! Leveled logging through the `log` facade, to stderr. The level comes from `SWITCHYARD_LOG` (error,
//! warn, info, debug, trace); the default is info. The gateway's own messages and those of the crates
//! it uses (rustls, may) go through the same logger, so nothing is lost. Secrets are never passed to
//! these macros.
//!
//! The access log is not written here: it is a JSON line per request with its own target
//! ([`crate::accesslog`]).

use std::io::Write as _;
use std::sync::atomic::Ordering;

pub use ::log as facade;
use facade::{Level, LevelFilter, Log, Metadata, Record};

pub const ERROR: u8 = 1;
pub const WARN: u8 = 2;
pub const INFO: u8 = 3;
pub const DEBUG: u8 = 4;

/// Writes `switchyard <level>: <message>` lines (with `[<target>]` for other crates' messages).
struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        let max = facade::max_level();
        // Other crates' info lines are chatty (may logs every socket it registers): theirs show from
        // warnings up, unless debugging.
        metadata.level() <= max
            && (is_ours(metadata.target()) || metadata.level() <= Level::Warn || max >= LevelFilter::Debug)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        let target = record.target();
        let mut err = std::io::stderr().lock();
        let _ = if is_ours(target) {
            writeln!(err, "switchyard {level}: {}", record.args())
        } else {
            writeln!(err, "switchyard {level} [{target}]: {}", record.args())
        };
    }

    fn flush(&self) {}
}

fn is_ours(target: &str) -> bool {
    target == "switchyard" || target.starts_with("switchyard::")
}

static LOGGER: Stderr = Stderr;

/// The level `SWITCHYARD_LOG` asks for.
pub fn level_from_env() -> LevelFilter {
    match std::env::var("SWITCHYARD_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        "off" => LevelFilter::Off,
        _ => LevelFilter::Info,
    }
}

/// Installs the stderr logger at the level from `SWITCHYARD_LOG` (once; later calls set the level).
pub fn init_from_env() {
    let _ = facade::set_logger(&LOGGER);
    facade::set_max_level(level_from_env());
}

/// Whether messages of `level` (`ERROR`…`DEBUG`) are written.
#[inline]
pub fn enabled(level: u8) -> bool {
    let wanted = match level {
        ERROR => LevelFilter::Error,
        WARN => LevelFilter::Warn,
        INFO => LevelFilter::Info,
        _ => LevelFilter::Debug,
    };
    wanted <= facade::max_level()
}

/// Whether a message from the call site owning `last` may be written now: at most one per second per
/// site, so a flood of failures (logged from worker threads) cannot stall the workers on stderr.
pub fn allow_once_a_second(last: &std::sync::atomic::AtomicU64) -> bool {
    let now = crate::clock::unix_secs();
    last.swap(now, Ordering::Relaxed) != now
}

/// `warn!`, throttled to one line per second per call site (for the request path).
#[macro_export]
macro_rules! warn_throttled {
    ($($arg:tt)*) => {{
        static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        if $crate::log::enabled($crate::log::WARN) && $crate::log::allow_once_a_second(&LAST) {
            $crate::log::facade::warn!($($arg)*);
        }
    }};
}

#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log::facade::error!($($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log::facade::warn!($($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log::facade::info!($($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log::facade::debug!($($arg)*) }; }
