use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;

/// mimalloc instead of glibc's malloc: a request's buffers are often freed on the other worker thread
/// (coroutines move between threads), which in glibc takes the owning arena's lock (README, Design).
#[global_allocator]
static ALLOCATOR: switchyard::allocator::MiMalloc = switchyard::allocator::MiMalloc;
use switchyard::{error, info, runtime};

/// Switchyard: a thread-per-core AI gateway (OpenAI and Anthropic APIs in front of many providers).
#[derive(FromArgs)]
struct Args {
    /// path of the configuration file (default: config.json)
    #[argh(option, default = "String::from(\"config.json\")")]
    config: String,
    /// validate the configuration, print the routing table it resolves to, and exit (0 valid, 1 invalid)
    #[argh(switch)]
    check: bool,
    /// listen address, overriding the config's "listen"
    #[argh(option)]
    listen: Option<String>,
    /// scheduler threads, overriding the config's "workers" (0: one per core)
    #[argh(option)]
    workers: Option<usize>,
    /// print the version and the git commit it was built from, and exit
    #[argh(switch)]
    version: bool,
}

fn main() {
    let args: Args = argh::from_env();
    if args.version {
        println!("switchyard {} (commit {})", env!("CARGO_PKG_VERSION"), env!("SWITCHYARD_GIT_COMMIT"));
        return;
    }
    switchyard::log::init_from_env();
    let file = runtime::ConfigFile::read(&args.config);
    let (file, mut cfg) = match file.and_then(|f| f.parse().map(|c| (f, c))) {
        Ok(pair) => pair,
        Err(e) => {
            error!("{}: {e}", args.config);
            std::process::exit(1);
        }
    };
    if let Some(listen) = &args.listen {
        cfg.listen = listen.clone();
    }
    if let Some(workers) = args.workers {
        cfg.workers = workers;
    }
    let server_config = Arc::new(cfg.server.clone());
    let pin_workers = cfg.pin_workers;
    let workers = runtime::configure_may(cfg.workers, pin_workers, cfg.server.stack_kib);
    let secrets = runtime::SecretFiles::of(&cfg);
    let snapshot = match runtime::build_snapshot(cfg, None) {
        Ok(s) => s,
        Err(e) => {
            error!("{}: {e}", args.config);
            std::process::exit(1);
        }
    };
    if args.check {
        if let Some(Err(e)) = snapshot.config.tls.as_ref().map(switchyard::server::tls::check) {
            error!("{}: {e}", args.config);
            std::process::exit(1);
        }
        runtime::report(&snapshot);
        print!("{}", switchyard::check::report(&snapshot));
        return;
    }
    runtime::report(&snapshot);
    runtime::raise_open_file_limit(server_config.max_connections);
    let signals = runtime::catch_signals();
    runtime::catch_reopen_signal();
    let listen = snapshot.config.listen.clone();
    let tls = snapshot.config.tls.clone();
    let addr = listen.parse().expect("validated listen address");
    let admin = snapshot.config.admin_listen.as_ref().map(|a| a.parse().expect("validated admin address"));
    if let Some(t) = &snapshot.config.tracing {
        info!("tracing: OTLP to {}, sample ratio {}", t.endpoint, t.sample_ratio);
    }
    if snapshot.config.access_log != "stderr" {
        info!("access log: {}", snapshot.config.access_log);
    }
    runtime::publish(snapshot);
    if let Some(admin) = admin {
        match runtime::start_admin(admin, server_config.clone()) {
            Ok(bound) => info!("admin endpoints (/metrics, /ready, /health) on {bound}"),
            Err(e) => {
                error!("admin_listen: {e}");
                std::process::exit(1);
            }
        }
    }
    let (bound, accepts) = match runtime::start(addr, workers, server_config.clone(), tls.as_ref()) {
        Ok(x) => x,
        Err(e) => {
            error!("{e}");
            std::process::exit(1);
        }
    };
    runtime::set_ready();
    let scheme = |tls_here: bool| if tls_here { "https" } else { "http" };
    let plain_main = tls.as_ref().is_none_or(|t| t.listen.is_some());
    let pinned = if pin_workers { ", each held to one core" } else { "" };
    info!(
        "listening on {} ({}) with {workers} worker(s){pinned}; config {}",
        bound[0],
        scheme(!plain_main),
        args.config
    );
    if let Some(second) = bound.get(1) {
        info!("also serving https on {second}");
    }
    runtime::watch_config(file, secrets, listen, args.listen.is_some());
    runtime::wait_for_shutdown(
        signals,
        accepts,
        Duration::from_millis(server_config.drain_delay_ms),
        Duration::from_millis(server_config.drain_timeout_ms),
    );
}
