//! The one shared state of a running pooler, passed down as `Arc<State>` (no globals, so tests can run
//! many poolers in one process).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::FastMap;
use crate::auth::Secret;
use crate::cancel::CancelRegistry;
use crate::config::Config;
use crate::params::Tracked;
use crate::plugin::{LoadError, PluginEngine, PluginSet};
use crate::pool::Pools;

/// (plugin, user, database) of a cached auth lookup.
pub type AuthCacheKey = (String, String, String);

/// Secrets from `auth_file`, parsed, by user name.
pub type Secrets = HashMap<String, Secret>;

/// One generation of configuration and plugins. Swapped whole on reload; a session keeps the `Arc` it
/// started a transaction with, so a transaction finishes under the plugins it began with.
#[derive(Debug)]
pub struct Runtime {
    pub config: Config,
    pub secrets: Secrets,
    pub plugins: Arc<PluginSet>,
    pub generation: u64,
}

impl Runtime {
    pub fn new(config: Config, plugins: Arc<PluginSet>, generation: u64) -> Self {
        let secrets = config
            .auth_file
            .as_ref()
            .map(|f| {
                f.entries
                    .iter()
                    .map(|(u, s)| (u.clone(), Secret::parse(s)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            config,
            secrets,
            plugins,
            generation,
        }
    }
}

pub struct State {
    pub runtime: ArcSwap<Runtime>,
    /// The one WebAssembly engine (compiles and runs every plugin generation).
    pub plugin_engine: Arc<PluginEngine>,
    /// Answers of auth plugins kept for their cache_ttl: (plugin, user, database) → when, secret.
    pub auth_cache: Mutex<HashMap<AuthCacheKey, (std::time::Instant, Option<String>)>>,
    pub pools: Pools,
    /// Tracked parameter names; fixed for the process (track_extra_parameters needs a restart).
    pub tracked: Arc<Tracked>,
    pub cancels: Arc<CancelRegistry>,
    pub clients: Arc<ClientCounts>,
    pub lifecycle: Lifecycle,
    /// What the admin console's own clients did (its row in SHOW POOLS and SHOW STATS).
    pub console: crate::admin::ConsoleStats,
    /// The process's logger, set by the binary once installed (in-process tests run without one): a reload
    /// reopens its logfile and applies `log_format`, `verbose` and `logfile`.
    pub logs: std::sync::OnceLock<crate::logging::LogControl>,
    /// Errors reported, by kind (`pgwarden_errors_total`); the same counters every plugin generation counts
    /// its refusals in.
    pub errors: Arc<crate::metrics::ErrorCounts>,
    /// Idle clients without a task (none when the system refused an epoll instance: they keep their tasks).
    pub parking: Option<crate::client::park::Lot>,
    next_generation: AtomicU64,
}

impl State {
    /// Sets up the shared state for `config`, compiling and initialising its plugins (which may take
    /// seconds for large components: call it before serving, or off the async runtime).
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let cache_dir = match &config.plugin_cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
            None => crate::plugin::default_cache_dir(),
        };
        // A cache directory that cannot be used is not worth refusing to start over.
        let engine = match PluginEngine::new(cache_dir.as_deref()) {
            Ok(e) => e,
            Err(e) if cache_dir.is_some() => {
                tracing::warn!("{e}; compiling plugins without a cache");
                PluginEngine::new(None).map_err(StartError::Engine)?
            }
            Err(e) => return Err(StartError::Engine(e)),
        };
        let plugins = Arc::new(PluginSet::load(&engine, &config.plugins, None)?);
        let tracked = Arc::new(Tracked::new(&config.settings.track_extra_parameters));
        Ok(Arc::new(Self {
            errors: Arc::clone(plugins.errors()),
            runtime: ArcSwap::from_pointee(Runtime::new(config, plugins, 1)),
            plugin_engine: engine,
            auth_cache: Mutex::default(),
            pools: Pools::new(Arc::clone(&tracked)),
            tracked,
            cancels: Arc::new(CancelRegistry::default()),
            parking: crate::client::park::Lot::new()
                .inspect_err(|e| tracing::warn!("idle clients will not be parked: {e}"))
                .ok(),
            clients: Arc::default(),
            lifecycle: Lifecycle::default(),
            console: crate::admin::ConsoleStats::default(),
            logs: std::sync::OnceLock::new(),
            next_generation: AtomicU64::new(2),
        }))
    }

    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// PAUSE (`true`) or RESUME (`false`) every pool: while paused no server is handed out, idle servers
    /// are closed, and released ones are closed as they come back.
    pub fn set_paused(&self, paused: bool) {
        self.lifecycle.paused_flag.store(paused, Ordering::Release);
        self.lifecycle.paused.send_replace(paused);
        for pool in self.pools.all() {
            pool.set_paused(paused || self.pools.is_database_paused(&pool.key.database));
        }
    }

    /// Starts (or escalates) a shutdown ([`Lifecycle::shutdown`]); an immediate one ends every client's
    /// session now, through the registries of live clients (every pool's, the console's). A pool leaves
    /// the map only once it has no clients, so no session is out of reach; one registering during the sweep
    /// sees the lifecycle's flag itself.
    pub fn shutdown(&self, requested: ShutdownMode) -> ShutdownMode {
        let effective = self.lifecycle.shutdown(requested);
        if effective != ShutdownMode::WaitForClients {
            // Draining: clients queued for a server are told the server is shutting down. (A client's
            // session that joins a queue after this reads the flag, set above, once it has; pgwarden's own
            // checkouts, a pool's first login and an auth lookup, are served as before.)
            for pool in self.pools.all() {
                pool.close_queue();
            }
        }
        if effective == ShutdownMode::Immediate {
            for pool in self.pools.all() {
                pool.live_clients
                    .each(crate::conns::ClientRecord::shut_down);
            }
            self.console
                .live
                .each(crate::conns::ClientRecord::shut_down);
        }
        effective
    }

    /// SUSPEND (`true`) or its end (`false`): like PAUSE no server is handed out while it holds, but no pool
    /// closes its servers.
    pub fn hold_clients(&self, hold: bool) {
        self.lifecycle.paused_flag.store(hold, Ordering::Release);
        self.lifecycle.paused.send_replace(hold);
    }

    /// PAUSE db (`true`) or RESUME db (`false`): like [`State::set_paused`] for the pools of one database
    /// entry. False when the database already was in that state.
    pub fn set_database_paused(&self, database: &str, paused: bool) -> bool {
        if !self.pools.mark_database_paused(database, paused) {
            return false;
        }
        let global = self.lifecycle.is_paused();
        for pool in self.pools.all() {
            if &*pool.key.database == database {
                pool.set_paused(paused || global);
            }
        }
        true
    }

    pub(crate) fn next_generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("generation", &self.runtime.load().generation)
            .finish_non_exhaustive()
    }
}

/// Why the pooler cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Engine(String),
    #[error("{0}")]
    Plugin(#[from] LoadError),
}

/// How the process is ending, PgBouncer's SHUTDOWN modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// SIGQUIT / second signal: close everything now.
    Immediate,
    /// SIGINT: stop accepting, let linked clients finish their transaction, then exit.
    WaitForServers,
    /// SIGTERM: stop accepting, keep serving connected clients until they all leave.
    WaitForClients,
}

/// Process lifecycle: shutdown and PAUSE.
#[derive(Debug)]
pub struct Lifecycle {
    /// Cancelled when listeners must stop accepting (any shutdown mode).
    pub stop_accepting: CancellationToken,
    /// Cancelled for an immediate shutdown: every session ends now.
    pub terminate: CancellationToken,
    /// Set for WAIT_FOR_SERVERS: sessions give their server up at the next chance and clients waiting for
    /// one are told the server is shutting down.
    pub draining: CancellationToken,
    /// PAUSE: no server is handed out while true (waiters subscribe here).
    pub paused: watch::Sender<bool>,
    /// The same flag, readable without a lock on every transaction.
    paused_flag: AtomicBool,
    /// `draining` as a flag, readable without the token's lock on every transaction.
    draining_flag: AtomicBool,
    /// `terminate` as a flag, raised before the token is cancelled: a client registering after it is shut
    /// down at once ([`crate::conns::Registered::client`]).
    terminating: AtomicBool,
    /// Every client task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    mode: Mutex<Option<ShutdownMode>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            stop_accepting: CancellationToken::new(),
            terminate: CancellationToken::new(),
            draining: CancellationToken::new(),
            paused: watch::Sender::new(false),
            paused_flag: AtomicBool::new(false),
            draining_flag: AtomicBool::new(false),
            terminating: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            mode: Mutex::new(None),
        }
    }
}

impl Lifecycle {
    /// Starts (or escalates) a shutdown. A second request while one is running means "now", as in
    /// PgBouncer 1.23+. Sessions are ended by [`State::shutdown`], which calls this.
    pub(crate) fn shutdown(&self, requested: ShutdownMode) -> ShutdownMode {
        let mut mode = self.mode.lock().unwrap_or_else(|e| e.into_inner());
        let effective = match *mode {
            None => requested,
            Some(_) => ShutdownMode::Immediate,
        };
        *mode = Some(effective);
        self.stop_accepting.cancel();
        match effective {
            ShutdownMode::Immediate => {
                self.start_draining();
                self.terminating.store(true, Ordering::SeqCst);
                self.terminate.cancel();
            }
            ShutdownMode::WaitForServers => self.start_draining(),
            ShutdownMode::WaitForClients => {}
        }
        effective
    }

    pub fn shutdown_mode(&self) -> Option<ShutdownMode> {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_paused(&self) -> bool {
        self.paused_flag.load(Ordering::Acquire)
    }

    fn start_draining(&self) {
        self.draining_flag.store(true, Ordering::Release);
        self.draining.cancel();
    }

    /// Whether an immediate shutdown started.
    pub fn is_terminating(&self) -> bool {
        self.terminating.load(Ordering::SeqCst)
    }

    /// Whether a WAIT_FOR_SERVERS (or immediate) shutdown started: no server is handed out any more.
    pub fn is_draining(&self) -> bool {
        self.draining_flag.load(Ordering::Acquire)
    }
}

/// Client connection counts for max_client_conn, max_db_client_connections and
/// max_user_client_connections. Only touched at login and disconnect.
#[derive(Debug, Default)]
pub struct ClientCounts {
    pub total: AtomicU32,
    /// Keyed by shared names: each client's guard holds the key, not a copy of the name.
    per_db: Mutex<FastMap<Arc<str>, u32>>,
    per_user: Mutex<FastMap<Arc<str>, u32>>,
}

/// Which count a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountKind {
    Database,
    User,
}

impl ClientCounts {
    /// Counts a client against `name` if that stays within `max` (0 = unlimited); uncounted when the guard
    /// drops.
    pub fn try_add(self: &Arc<Self>, kind: CountKind, name: &str, max: u32) -> Option<CountGuard> {
        Some(CountGuard {
            counts: Arc::clone(self),
            kind,
            name: self.try_count(kind, name, max)?,
        })
    }

    /// Counts a client against `name` if that stays within `max` (0 = unlimited), returning the shared key
    /// to [`ClientCounts::uncount`] it with.
    pub fn try_count(&self, kind: CountKind, name: &str, max: u32) -> Option<Arc<str>> {
        let mut map = self.map(kind).lock().unwrap_or_else(|e| e.into_inner());
        let key = match map.get_key_value(name) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(name),
        };
        let n = map.entry(Arc::clone(&key)).or_default();
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(key)
    }

    /// `name` as an `Arc`: the counts' own key when a client is counted against it (one copy for all the
    /// clients of a database or user), a new one otherwise.
    pub fn shared_name(&self, kind: CountKind, name: &str) -> Arc<str> {
        let map = self.map(kind).lock().unwrap_or_else(|e| e.into_inner());
        map.get_key_value(name)
            .map_or_else(|| Arc::from(name), |(key, _)| Arc::clone(key))
    }

    /// Gives back a place [`ClientCounts::try_count`] took.
    pub fn uncount(&self, kind: CountKind, name: &str) {
        let mut map = self.map(kind).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                map.remove(name);
            }
        }
    }

    /// Clients counted against `name` now.
    pub fn count(&self, kind: CountKind, name: &str) -> u32 {
        let map = self.map(kind).lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).copied().unwrap_or(0)
    }

    fn map(&self, kind: CountKind) -> &Mutex<FastMap<Arc<str>, u32>> {
        match kind {
            CountKind::Database => &self.per_db,
            CountKind::User => &self.per_user,
        }
    }
}

/// Uncounts a client on drop.
#[derive(Debug)]
pub struct CountGuard {
    counts: Arc<ClientCounts>,
    kind: CountKind,
    name: Arc<str>,
}

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.counts.uncount(self.kind, &self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_limit_share_their_keys_and_give_places_back() {
        let counts = ClientCounts::default();
        let a = counts
            .try_count(CountKind::Database, "db", 2)
            .expect("room");
        let b = counts
            .try_count(CountKind::Database, "db", 2)
            .expect("room");
        assert!(Arc::ptr_eq(&a, &b), "one key per name");
        assert_eq!(counts.try_count(CountKind::Database, "db", 2), None, "full");
        assert_eq!(counts.count(CountKind::Database, "db"), 2);
        assert_eq!(counts.count(CountKind::User, "db"), 0, "kinds apart");
        assert!(Arc::ptr_eq(
            &counts.shared_name(CountKind::Database, "db"),
            &a
        ));
        assert!(!Arc::ptr_eq(&counts.shared_name(CountKind::User, "db"), &a));
        counts.uncount(CountKind::Database, "db");
        counts.uncount(CountKind::Database, "db");
        assert_eq!(counts.count(CountKind::Database, "db"), 0);
        assert!(
            !Arc::ptr_eq(&counts.shared_name(CountKind::Database, "db"), &a),
            "forgotten with its last client"
        );
    }
}
