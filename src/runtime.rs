//! Start-up, config reload and graceful shutdown: what `main` runs, callable from tests too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{self, Config, Environment};
use crate::snapshot::{self, Snapshot};
use crate::{accesslog, metrics, server, trace};

/// Whether the gateway takes traffic, as `GET /ready` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// No config is in use yet (503).
    Starting,
    /// Serving (200).
    Ready,
    /// Shutting down: load balancers should stop sending (503).
    Draining,
}

static READINESS: AtomicU8 = AtomicU8::new(0);

pub fn readiness() -> Readiness {
    match READINESS.load(Ordering::Acquire) {
        0 => Readiness::Starting,
        1 => Readiness::Ready,
        _ => Readiness::Draining,
    }
}

/// Marks the gateway ready: its config is published and its listeners serve.
pub fn set_ready() {
    let _ = READINESS.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire);
}

/// Publishes a snapshot for new requests and applies its observability settings: the model label cap,
/// the access log's target (a file is reopened: rotation on reload), tracing.
pub fn publish(snapshot: Snapshot) {
    metrics::set_max_models(snapshot.config.metrics.max_models);
    accesslog::configure(&accesslog::Target::parse(&snapshot.config.access_log));
    trace::configure(snapshot.config.tracing.as_ref());
    snapshot::publish(snapshot);
    metrics::CONFIG_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// SIGUSR1 sets a flag (nothing else is safe in a signal handler); the config watcher reopens the
/// access log when it sees it.
#[cfg(all(
    unix,
    not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc", target_arch = "sparc64"))
))]
mod usr1 {
    use std::sync::atomic::{AtomicBool, Ordering};

    pub static RECEIVED: AtomicBool = AtomicBool::new(false);

    #[cfg(any(target_os = "linux", target_os = "android"))]
    const SIGUSR1: i32 = 10;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const SIGUSR1: i32 = 30;

    extern "C" {
        fn signal(signum: i32, handler: usize) -> usize;
    }

    extern "C" fn on_signal(_: i32) {
        RECEIVED.store(true, Ordering::Relaxed);
        super::signal_wake::notify();
    }

    pub fn install() {
        let handler: extern "C" fn(i32) = on_signal;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal(SIGUSR1, handler as usize);
        }
    }

    pub fn take() -> bool {
        RECEIVED.swap(false, Ordering::Relaxed)
    }
}

#[cfg(not(all(
    unix,
    not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc", target_arch = "sparc64"))
)))]
mod usr1 {
    pub fn install() {}
    pub fn take() -> bool {
        false
    }
}

/// From now on SIGUSR1 reopens the access log file (log rotation).
pub fn catch_reopen_signal() {
    signal_wake::open();
    usr1::install();
}

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

/// A one-line description of a config (the first line of `--check`, logged on every reload).
pub fn describe(snapshot: &Snapshot) -> String {
    crate::check::summary(snapshot)
}

/// The longest an idle scheduler thread sleeps ([`configure_may`]).
pub const IDLE_POLL: Duration = Duration::from_secs(1);

/// Sets the coroutine runtime up: scheduler threads, whether each is held to a core, the default
/// stack, and how long an idle scheduler thread sleeps. Must run before any spawn.
pub fn configure_may(workers: usize, pin_workers: bool, stack_kib: usize) -> usize {
    let workers =
        if workers == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { workers };
    // may counts stack sizes in machine words, not bytes. It pins its workers unless told otherwise.
    may::config().set_workers(workers).set_stack_size(stack_kib * 1024 / std::mem::size_of::<usize>());
    may::config().set_worker_pin(pin_workers);
    // may's workers wait in `epoll_wait` for at most this long with no timer due (may's default 10 ms:
    // an idle gateway woke 200 times a second). Nothing here needs the periodic wake: may wakes a worker
    // through its eventfd when a coroutine is scheduled to it from elsewhere or a timer list gets a new
    // first entry, and without work stealing no worker looks at another's queue.
    may::config().set_timeout_ns(IDLE_POLL.as_nanos() as u64);
    if pin_workers {
        crate::affinity::keep_process_cpus();
    }
    crate::affinity::set_workers(workers);
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

/// The files a config reads secrets from, with their modification times taken before the secrets are
/// read: a later change to one of them reloads the config like a change to the config file itself.
pub struct SecretFiles {
    paths: Vec<String>,
    stamps: Vec<Option<SystemTime>>,
}

impl SecretFiles {
    /// Call before the snapshot that reads them is built, so a change made meanwhile is noticed.
    pub fn of(config: &Config) -> SecretFiles {
        let paths = secret_files(config);
        let stamps = stamps(&paths);
        SecretFiles { paths, stamps }
    }

    fn changed(&self) -> bool {
        stamps(&self.paths) != self.stamps
    }
}

/// The files a config reads secrets from (`key_file` of backends and clients).
fn secret_files(config: &Config) -> Vec<String> {
    let backends = config.backends.iter().filter_map(|b| match &b.auth {
        Some(config::AuthConfig::Bearer { key_file, .. } | config::AuthConfig::Header { key_file, .. }) => {
            key_file.clone()
        }
        _ => None,
    });
    let clients = config.clients.iter().filter_map(|c| c.key_file.clone());
    backends.chain(clients).collect()
}

/// Modification times of files (`None`: unreadable), to notice a change.
fn stamps(paths: &[String]) -> Vec<Option<SystemTime>> {
    paths.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

/// How often the config watcher looks at the config, key and certificate files.
const FILE_PERIOD: Duration = Duration::from_millis(300);

/// Why the config is read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Sighup,
    ConfigFile,
    SecretFile,
}

/// Reloads the config, and with it every secret it reads (key files and variables, AWS credentials),
/// on SIGHUP, when the config file changes, and when a `key_file` it names changes; publishes each
/// valid result. An invalid one is logged and the running config kept. It also reopens the access log
/// after a SIGUSR1.
pub fn watch_config(loaded: ConfigFile, loaded_secrets: SecretFiles, listen: String, cli_listen_override: bool) {
    crate::affinity::spawn_helper("switchyard-config", move || {
            let path = loaded.path.clone();
            let started = loaded.parse().ok();
            let admin_listen = started.as_ref().and_then(|c| c.admin_listen.clone());
            let tls = started.and_then(|c| c.tls);
            let mut last = loaded;
            let mut secrets = loaded_secrets;
            let mut hangups = HANGUPS.load(Ordering::SeqCst);
            let mut files_at = Instant::now() + FILE_PERIOD;
            loop {
                // Signals are acted on as they come (their handlers wake this wait), files looked at
                // every 300 ms.
                signal_wake::wait(files_at);
                let files_due = Instant::now() >= files_at;
                if files_due {
                    files_at = Instant::now() + FILE_PERIOD;
                }
                if usr1::take() {
                    info!("SIGUSR1: reopening the access log");
                    accesslog::reopen();
                }
                let seen = HANGUPS.load(Ordering::SeqCst);
                if seen != hangups || files_due {
                    server::tls::reload_changed_certificates(seen != hangups);
                }
                let trigger = if seen != hangups {
                    hangups = seen;
                    Trigger::Sighup
                } else if !files_due {
                    continue;
                } else if std::fs::metadata(&path).and_then(|m| m.modified()).ok() != last.modified {
                    Trigger::ConfigFile
                } else if secrets.changed() {
                    Trigger::SecretFile
                } else {
                    continue;
                };
                if trigger == Trigger::Sighup {
                    info!("SIGHUP: reloading the config from {path} and the secrets it names");
                }
                // Taken before reading, so a change made while reading is noticed next time.
                secrets.stamps = stamps(&secrets.paths);
                let file = match ConfigFile::read(&path) {
                    Ok(f) => f,
                    Err(e) => {
                        error!("config reload: {e}; keeping the running config");
                        last.modified = None;
                        continue;
                    }
                };
                let changed = file.text != last.text;
                last = file;
                if trigger == Trigger::ConfigFile && !changed {
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
                    if c.admin_listen != admin_listen {
                        warn!("config reload: \"admin_listen\" changed; a restart is needed to apply it");
                        c.admin_listen = admin_listen.clone();
                    }
                    if c.tls != tls {
                        warn!("config reload: \"tls\" changed; a restart is needed to apply it (a new certificate in the same files needs none)");
                        c.tls = tls.clone();
                    }
                    let fresh = SecretFiles::of(&c);
                    build_snapshot(c, Some(&previous)).map(|snapshot| (snapshot, fresh))
                });
                match result {
                    Ok((snapshot, fresh)) => {
                        report(&snapshot);
                        let why = match trigger {
                            Trigger::Sighup => "on SIGHUP",
                            Trigger::ConfigFile => "after a change",
                            Trigger::SecretFile => "after a key file changed",
                        };
                        info!("config reloaded from {path} {why}: {}", describe(&snapshot));
                        secrets = fresh;
                        snapshot::publish(snapshot);
                        metrics::CONFIG_RELOADS_OK.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        metrics::CONFIG_RELOADS_REJECTED.fetch_add(1, Ordering::Relaxed);
                        error!("config reload from {path} rejected, keeping the previous one: {e}");
                    }
                }
            }
        })
        .expect("spawn the config watcher");
}

/// SIGHUPs received so far (the config watcher reloads when it grows).
static HANGUPS: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sighup(_: libc::c_int) {
    // An atomic increment and a pipe write: async-signal-safe.
    HANGUPS.fetch_add(1, Ordering::SeqCst);
    signal_wake::notify();
}

/// How the signal handlers wake the config watcher at once: a byte into a pipe (`write` is
/// async-signal-safe) that the watcher waits on, with a timeout, between its looks at the files. It
/// used to look for signals every 100 ms instead, waking 10 times a second on an idle gateway.
mod signal_wake {
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::time::Instant;

    /// The pipe's ends; -1 until [`open`].
    static READ: AtomicI32 = AtomicI32::new(-1);
    static WRITE: AtomicI32 = AtomicI32::new(-1);

    /// Makes the pipe (before the handlers are installed). Without it the watcher sleeps its
    /// timeouts out and finds the signals' flags then.
    pub fn open() {
        if READ.load(Ordering::Acquire) >= 0 {
            return;
        }
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `pipe` fills two descriptors, which are made non-blocking and close-on-exec and are
        // kept for the process's life.
        unsafe {
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                return;
            }
            for fd in fds {
                libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        WRITE.store(fds[1], Ordering::Release);
        READ.store(fds[0], Ordering::Release);
    }

    /// In a signal handler: one byte into the pipe (dropped when the pipe is full: a wake is pending
    /// then anyway). `errno` is kept for the interrupted code.
    pub fn notify() {
        let fd = WRITE.load(Ordering::Acquire);
        if fd < 0 {
            return;
        }
        // SAFETY: errno's location is the thread's own; `write` of one byte from a local is
        // async-signal-safe.
        unsafe {
            let errno = *libc::__errno_location();
            let _ = libc::write(fd, [1u8].as_ptr().cast(), 1);
            *libc::__errno_location() = errno;
        }
    }

    /// In the watcher: sleeps until `until` or a signal's byte, whichever comes first, and empties the
    /// pipe.
    pub fn wait(until: Instant) {
        let fd = READ.load(Ordering::Acquire);
        let left = until.saturating_duration_since(Instant::now());
        if fd < 0 {
            std::thread::sleep(left);
            return;
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd; the pipe is never closed.
        if unsafe { libc::poll(&mut pfd, 1, ms) } > 0 {
            let mut sink = [0u8; 64];
            // SAFETY: reads into a local buffer of its size from a non-blocking pipe.
            while unsafe { libc::read(fd, sink.as_mut_ptr().cast(), sink.len()) } > 0 {}
        }
    }
}

/// Catches SIGINT/SIGTERM (graceful shutdown) and SIGHUP (config reload) from now on (call before
/// serving, so a signal never finds the default action); the receiver fires once SIGINT or SIGTERM
/// came.
pub fn catch_signals() -> std::sync::mpsc::Receiver<()> {
    signal_wake::open();
    let (tx, rx) = std::sync::mpsc::channel();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = tx.send(());
    }) {
        warn!("cannot catch SIGINT/SIGTERM: {e}");
    }
    // ctrlc's `termination` feature routes SIGHUP to the shutdown handler above; it is installed after
    // ctrlc's so that SIGHUP reloads instead.
    // SAFETY: a zeroed `sigaction` is valid; the handler only touches an atomic.
    let installed = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sighup as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGHUP, &action, std::ptr::null_mut()) == 0
    };
    if !installed {
        warn!("cannot catch SIGHUP: {}", std::io::Error::last_os_error());
    }
    rx
}

/// Descriptors a gateway with `max_connections` may hold at once: a client and an upstream socket per
/// connection, plus a margin for listeners, pooled connections, Redis and files.
pub fn open_files_needed(max_connections: usize) -> u64 {
    2 * max_connections as u64 + 256
}

/// Raises the open-file soft limit to the hard limit (the kernel's `nr_open` when the hard limit is
/// unlimited) and warns when the result is below what `max_connections` needs. Returns the limit.
pub fn raise_open_file_limit(max_connections: usize) -> u64 {
    let needed = open_files_needed(max_connections);
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!("cannot read the open-file limit: {}", std::io::Error::last_os_error());
        return 0;
    }
    let before = limit.rlim_cur;
    let ceiling = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(1 << 20)
    } else {
        limit.rlim_max
    };
    if before < ceiling {
        let raised = libc::rlimit { rlim_cur: ceiling, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = ceiling;
        } else {
            warn!("cannot raise the open-file limit from {before}: {}", std::io::Error::last_os_error());
        }
    }
    let now = limit.rlim_cur;
    if now < needed {
        warn!(
            "the open-file limit is {now} (raised from {before}, the hard limit is {}): server.max_connections = \
             {max_connections} needs about {needed} (2 per connection + 256); beyond it new connections fail. \
             Raise the hard limit (systemd LimitNOFILE=, docker --ulimit nofile=, ulimit -Hn)",
            if limit.rlim_max == libc::RLIM_INFINITY { "unlimited".to_string() } else { limit.rlim_max.to_string() }
        );
    } else if now != before {
        debug!("open-file limit raised from {before} to {now}");
    }
    now
}

/// Blocks until SIGINT/SIGTERM, then drains: `/ready` answers 503 (for `delay` with everything still
/// served, so load balancers notice), then stop accepting and wait for in-flight requests up to the
/// deadline.
pub fn wait_for_shutdown(
    signals: std::sync::mpsc::Receiver<()>,
    accepts: Vec<may::coroutine::JoinHandle<()>>,
    delay: Duration,
    drain: Duration,
) {
    let _ = signals.recv();
    READINESS.store(2, Ordering::Release);
    if !delay.is_zero() {
        info!(
            "shutting down: /ready answers 503; still serving for {} ms before closing the listener",
            delay.as_millis()
        );
        std::thread::sleep(delay);
    }
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
    accesslog::flush();
}

/// Binds the admin listener (`/metrics`, `/ready`, `/health`) and serves it until the process exits
/// (through the drain, so `/ready` keeps answering 503 there); returns the bound address.
pub fn start_admin(listen: SocketAddr, server_config: Arc<config::ServerConfig>) -> std::io::Result<SocketAddr> {
    let listeners = server::bind(listen, 1)?;
    let addr = listeners[0].local_addr()?;
    let handler: server::Handler = Arc::new(crate::gateway::handle_admin);
    drop(server::serve(listeners, handler, server_config, None));
    Ok(addr)
}

/// Binds and starts serving `listen`, with TLS when `tls` is set without its own `listen`, and
/// `tls.listen` with TLS when set; returns the bound addresses (`listen`'s first) and the accept loops.
pub fn start(
    listen: SocketAddr,
    workers: usize,
    server_config: Arc<config::ServerConfig>,
    tls: Option<&config::TlsConfig>,
) -> Result<(Vec<SocketAddr>, Vec<may::coroutine::JoinHandle<()>>), String> {
    let acceptor = match tls {
        Some(t) => Some(Arc::new(server::ListenerTls::new(t)?)),
        None => None,
    };
    let second = match tls.and_then(|t| t.listen.as_deref()) {
        Some(a) => Some(a.parse::<SocketAddr>().map_err(|_| format!("tls.listen: \"{a}\" is not an address"))?),
        None => None,
    };
    let handler: server::Handler = Arc::new(crate::gateway::handle);
    let mut bound = Vec::new();
    let mut accepts = Vec::new();
    let plan = match second {
        None => vec![(listen, acceptor)],
        Some(second) => vec![(listen, None), (second, acceptor)],
    };
    for (addr, acceptor) in plan {
        let listeners = server::bind(addr, workers).map_err(|e| e.to_string())?;
        bound.push(listeners[0].local_addr().map_err(|e| e.to_string())?);
        accepts.extend(server::serve(listeners, handler.clone(), server_config.clone(), acceptor));
    }
    Ok((bound, accepts))
}
