//! Minimal leveled logging to stderr. The level comes from `SWITCHYARD_LOG` (error, warn, info, debug);
//! the default is info. Secrets are never passed to these macros.

use std::sync::atomic::{AtomicU8, Ordering};

pub const ERROR: u8 = 1;
pub const WARN: u8 = 2;
pub const INFO: u8 = 3;
pub const DEBUG: u8 = 4;

static LEVEL: AtomicU8 = AtomicU8::new(INFO);

pub fn init_from_env() {
    let level = match std::env::var("SWITCHYARD_LOG").unwrap_or_default().to_ascii_lowercase().as_str() {
        "error" => ERROR,
        "warn" => WARN,
        "debug" => DEBUG,
        _ => INFO,
    };
    LEVEL.store(level, Ordering::Relaxed);
}

#[inline]
pub fn enabled(level: u8) -> bool {
    level <= LEVEL.load(Ordering::Relaxed)
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $tag:literal, $($arg:tt)*) => {
        if $crate::log::enabled($level) {
            eprintln!(concat!("switchyard ", $tag, ": {}"), format_args!($($arg)*));
        }
    };
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
            eprintln!("switchyard warn: {}", format_args!($($arg)*));
        }
    }};
}

#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::log::ERROR, "error", $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::log::WARN, "warn", $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::log::INFO, "info", $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::log::DEBUG, "debug", $($arg)*) }; }
