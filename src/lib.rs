//! Switchyard: a thread-per-core AI gateway. A sans-IO core (config, routing, HTTP/1.1 parsing, JSON
//! edits, errors) inside a thin IO shell (`server` for clients, `upstream` for providers).

#[macro_use]
pub mod log;

pub mod accesslog;
pub mod affinity;
pub mod allocator;
pub mod api;
pub mod base64;
pub mod cancel;
pub mod check;
pub mod chunked;
pub mod clock;
pub mod config;
pub mod connect;
pub mod deadline;
pub mod digits;
pub mod doze;
pub mod error;
pub mod eventstream;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod health;
pub mod json;
pub mod metrics;
pub mod multipart;
pub mod providers;
pub mod ratelimit;
pub mod readbuf;
pub mod redis;
pub mod retry;
pub mod router;
pub mod runtime;
pub mod schema;
pub mod server;
pub mod snapshot;
pub mod sse;
pub mod stream;
pub mod strict_json;
pub mod text;
pub mod tls;
pub mod trace;
pub mod translate;
pub mod upstream;
pub mod usage;
