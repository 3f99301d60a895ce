//! What a plugin's store holds, and the host side of the imports the WIT grants: `log`, `database`, and a
//! locked-down WASI (no filesystem, no network, no environment, a clock frozen at the epoch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::pgwarden::plugin::{database, log, types};
use super::wasi::LogOutput;

/// Longest log line a plugin may write; longer ones are cut (a plugin must not flood the log).
const MAX_LOG_LINE: usize = 4096;

/// Running queries for an auth plugin's `database.query` import. Implemented by the pooler; only set
/// while an auth lookup runs (on a blocking thread, so the implementation may block).
pub trait DatabaseAccess: Send + Sync {
    fn query(
        &self,
        user: &str,
        database: &str,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<Vec<Option<String>>>, String>;
}

/// The data of one plugin instance's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    name: Arc<str>,
    pub(crate) database: Option<Arc<dyn DatabaseAccess>>,
    /// The current call's time budget, when it started, and how long it has waited in the `database`
    /// import: waiting for PostgreSQL is not the plugin's work, so it does not count against the budget.
    pub(crate) clock: CallClock,
}

/// See [`PluginState::clock`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallClock {
    pub budget: Duration,
    pub started: Instant,
    pub waited: Duration,
}

impl CallClock {
    pub fn start(budget: Duration) -> Self {
        Self {
            budget,
            started: Instant::now(),
            waited: Duration::ZERO,
        }
    }

    /// The budget left, not counting time spent waiting in imports; `None` once it is spent.
    pub fn left(&self) -> Option<Duration> {
        let used = self.started.elapsed().saturating_sub(self.waited);
        self.budget.checked_sub(used).filter(|d| !d.is_zero())
    }
}

impl PluginState {
    pub fn new(name: Arc<str>, limits: StoreLimits) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(LogOutput {
            plugin: Arc::clone(&name),
            stderr: false,
        })
        .stderr(LogOutput {
            plugin: Arc::clone(&name),
            stderr: true,
        })
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
        Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits,
            name,
            database: None,
            clock: CallClock::start(Duration::ZERO),
        }
    }
}

impl PluginState {
    pub(crate) fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for PluginState {}

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let plugin = &*self.name;
        match level {
            log::Level::Error => tracing::error!(plugin, "{message}"),
            log::Level::Warn => tracing::warn!(plugin, "{message}"),
            log::Level::Info => tracing::info!(plugin, "{message}"),
            log::Level::Debug => tracing::debug!(plugin, "{message}"),
            log::Level::Trace => tracing::trace!(plugin, "{message}"),
        }
    }
}

impl database::Host for PluginState {
    fn query(
        &mut self,
        user: String,
        database: String,
        sql: String,
        params: Vec<Option<String>>,
    ) -> Result<Vec<database::Row>, String> {
        match &self.database {
            Some(db) => {
                let started = Instant::now();
                let rows = db.query(&user, &database, &sql, &params);
                self.clock.waited += started.elapsed();
                rows
            }
            None => Err("database access is only available during an auth lookup".to_owned()),
        }
    }
}

/// Time stands still for plugins: the WIT grants no clock, so WASI's clocks read the epoch.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_waiting_in_imports_is_not_spent_budget() {
        let hour = Duration::from_secs(3600);
        let mut clock = CallClock::start(Duration::from_millis(100));
        clock.started -= hour;
        assert_eq!(clock.left(), None, "an hour of work spends 100ms");
        clock.waited = hour;
        let left = clock.left().expect("waiting is not work");
        assert!(left <= Duration::from_millis(100) && left > Duration::from_millis(50));
        assert_eq!(CallClock::start(Duration::ZERO).left(), None);
    }
}
