//! Start-up, config reload and graceful shutdown: what `main` runs, callable from tests too.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{self, Config, Environment};
use crate::server;
use crate::snapshot::{self, Snapshot};

/// Builds a snapshot from a parsed config with this process's environment and files.
pub fn build_snapshot(config: Config, previous: Option<&Snapshot>) -> Result<Snapshot, String> {
    Snapshot::build(config, &Environment::process(), previous).map_err(|e| e.to_string())
}

/// Logs what an operator must know about a snapshot: open mode, unset keys, missing credentials.
pub fn report(snapshot: &Snapshot) {
    if snapshot.clients.is_empty() {
        warn!("no clients are configured: the gateway is OPEN, any caller may use every route");
    }
    for w in &snapshot.warnings {
        warn!("{w}");
    }
}

/// A short description of a config, for `--check`.
pub fn describe(snapshot: &Snapshot) -> String {
    format!(
        "config OK: listen {}, {} backend(s), {} route(s), {} client(s)",
        snapshot.config.listen,
        snapshot.backends.len(),
        snapshot.router.routes.len(),
        snapshot.clients.len()
    )
}

/// Sets the coroutine runtime up: scheduler threads and default stack. Must run before any spawn.
pub fn configure_may(workers: usize, stack_kib: usize) -> usize {
    let workers =
        if workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { workers };
    // may counts stack sizes in machine words, not bytes.
    may::config().set_workers(workers).set_stack_size(stack_kib * 1024 / std::mem::size_of::<usize>());
    workers
}

/// A config file as read at one moment: its modification time (taken first) and its text. The one
/// read at start-up is the baseline the watcher compares against, so a change made while the gateway
/// starts is not missed.
pub struct ConfigFile {
    pub path: String,
    modified: Option<SystemTime>,
    text: String,
}

impl ConfigFile {
    pub fn read(path: &str) -> Result<ConfigFile, String> {
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        Ok(ConfigFile { path: path.to_string(), modified, text })
    }

    pub fn parse(&self) -> Result<Config, String> {
        Config::parse(&self.text).map_err(|e| e.to_string())
    }
}

/// Polls the config file and publishes each valid change; an invalid one is logged and the old kept.
pub fn watch_config(loaded: ConfigFile, listen: String, cli_listen_override: bool) {
    std::thread::Builder::new()
        .name("switchyard-config".into())
        .spawn(move || {
            let path = loaded.path.clone();
            let mut last = loaded;
            loop {
                std::thread::sleep(Duration::from_millis(300));
                if std::fs::metadata(&path).and_then(|m| m.modified()).ok() == last.modified {
                    continue;
                }
                let file = match ConfigFile::read(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        error!("config reload: {e}; keeping the running config");
                        continue;
                    }
                };
                let changed = file.text != last.text;
                last = file;
                if !changed {
                    continue;
                }
                let previous = snapshot::current();
                let result = last.parse().and_then(|mut c| {
                    if cli_listen_override || c.listen != listen {
                        if c.listen != listen && !cli_listen_override {
                            warn!("config reload: \"listen\" changed; a restart is needed to apply it");
                        }
                        c.listen = listen.clone();
                    }
                    build_snapshot(c, Some(&previous))
                });
                match result {
                    Ok(snapshot) => {
                        report(&snapshot);
                        info!("config reloaded from {path}: {}", describe(&snapshot));
                        snapshot::publish(snapshot);
                    }
                    Err(e) => error!("config reload from {path} rejected, keeping the previous one: {e}"),
                }
            }
        })
        .expect("spawn the config watcher");
}

/// Catches SIGINT/SIGTERM from now on (call before serving, so a signal never finds the default
/// action); the receiver fires once a signal came.
pub fn catch_signals() -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        warn!("cannot catch SIGINT/SIGTERM: {e}");
    }
    rx
}

/// Blocks until SIGINT/SIGTERM, then drains: stop accepting, wait for in-flight requests up to the
/// deadline.
pub fn wait_for_shutdown(
    signals: std::sync::mpsc::Receiver<()>,
    accepts: Vec<may::coroutine::JoinHandle<()>>,
    drain: Duration,
) {
    let _ = signals.recv();
    info!("shutting down: no new connections, draining in-flight requests (up to {} ms)", drain.as_millis());
    server::SHUTTING_DOWN.store(true, Ordering::SeqCst);
    for accept in &accepts {
        // SAFETY: cancelling a coroutine blocked in accept unwinds only that accept loop.
        unsafe { accept.coroutine().cancel() };
    }
    let deadline = Instant::now() + drain;
    while server::ACTIVE_REQUESTS.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = server::ACTIVE_REQUESTS.load(Ordering::SeqCst);
    if left > 0 {
        warn!("drain deadline reached with {left} request(s) still in flight");
    } else {
        info!("drained; exiting");
    }
}

/// Binds and starts serving; returns the bound address and the accept loops.
pub fn start(
    listen: SocketAddr,
    workers: usize,
    server_config: Arc<config::ServerConfig>,
) -> std::io::Result<(SocketAddr, Vec<may::coroutine::JoinHandle<()>>)> {
    let listeners = server::bind(listen, workers)?;
    let addr = listeners[0].local_addr()?;
    let handler: server::Handler = Arc::new(crate::gateway::handle);
    let accepts = server::serve(listeners, handler, server_config);
    Ok((addr, accepts))
}
