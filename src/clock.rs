//! Wall-clock time since the Unix epoch (limit windows, `created` fields, log throttling).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub fn unix_secs() -> u64 {
    unix_millis() / 1000
}
