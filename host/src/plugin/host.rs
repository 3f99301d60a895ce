//! What a plugin's store holds, and the host side of the imports the WIT grants: `log`, `database`, and a
//! locked-down WASI (no filesystem, no network, no environment, a clock frozen at the epoch).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::StoreLimits;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::pgwarden::plugin::{database, handles, log, types};
use super::convert;
use super::wasi::LogOutput;
use crate::sql;

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
    /// What the handles of a `query-policy` call read.
    pub(crate) input: CallInput,
}

/// The `session` resource of `handles`. A call has one session, held in [`CallInput`], so the handle
/// needs no data of its own.
pub struct SessionHandle;

/// The `query` resource of `handles`; like [`SessionHandle`], a call has one.
pub struct QueryHandle;

/// The session and query a `query-policy` call is about. The session record is moved in for the call
/// and back out after it (no copy); the query's text is copied into buffers the store keeps, and its
/// lexical reading is computed when the plugin first asks for it.
#[derive(Default)]
pub(crate) struct CallInput {
    pub session: Option<types::SessionInfo>,
    pub sql: String,
    pub statement_name: String,
    pub extended: bool,
    pub standard_strings: bool,
    read_only: Option<bool>,
    statements: Option<Vec<sql::Statement>>,
}

impl CallInput {
    /// Sets the query of the next call, forgetting the reading of the previous one.
    pub fn set_query(&mut self, q: &convert::QueryInput<'_>) {
        q.sql.clone_into(&mut self.sql);
        q.statement_name.clone_into(&mut self.statement_name);
        self.extended = q.extended;
        self.standard_strings = q.standard_strings;
        self.read_only = None;
        self.statements = None;
    }

    fn statements(&mut self) -> &[sql::Statement] {
        self.statements
            .get_or_insert_with(|| sql::summarize_with(&self.sql, self.standard_strings))
    }

    fn read_only(&mut self) -> bool {
        if let Some(known) = self.read_only {
            return known;
        }
        let read_only = match &self.statements {
            Some(statements) => statements.iter().all(|s| s.read_only),
            None => sql::read_only_with(&self.sql, self.standard_strings),
        };
        self.read_only = Some(read_only);
        read_only
    }
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
        Self::started_at(budget, Instant::now())
    }

    /// [`CallClock::start`] for a call that began at `started` (a caller that reads the clock anyway).
    pub fn started_at(budget: Duration, started: Instant) -> Self {
        Self {
            budget,
            started,
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
            input: CallInput::default(),
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

impl handles::Host for PluginState {}

impl PluginState {
    /// The call's session; a handle can only be used during the call that passed it, when the session is
    /// always set, so the empty record never reaches a plugin.
    fn session(&self) -> Option<&types::SessionInfo> {
        self.input.session.as_ref()
    }

    fn session_str(&self, field: impl FnOnce(&types::SessionInfo) -> &String) -> String {
        self.session().map(field).cloned().unwrap_or_default()
    }
}

impl handles::HostSession for PluginState {
    fn info(&mut self, _: Resource<SessionHandle>) -> types::SessionInfo {
        self.session()
            .cloned()
            .unwrap_or_else(convert::empty_session_info)
    }

    fn user(&mut self, _: Resource<SessionHandle>) -> String {
        self.session_str(|s| &s.user)
    }

    fn database(&mut self, _: Resource<SessionHandle>) -> String {
        self.session_str(|s| &s.database)
    }

    fn application_name(&mut self, _: Resource<SessionHandle>) -> String {
        self.session_str(|s| &s.application_name)
    }

    fn client_address(&mut self, _: Resource<SessionHandle>) -> String {
        self.session_str(|s| &s.client_address)
    }

    fn client_ip(&mut self, _: Resource<SessionHandle>) -> String {
        self.session_str(|s| &s.client_ip)
    }

    fn tls(&mut self, _: Resource<SessionHandle>) -> bool {
        self.session().is_some_and(|s| s.tls)
    }

    fn startup_parameter(&mut self, _: Resource<SessionHandle>, name: String) -> Option<String> {
        self.session()?
            .startup_parameters
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    }

    fn pool_mode(&mut self, _: Resource<SessionHandle>) -> types::PoolMode {
        self.session()
            .map_or(types::PoolMode::Session, |s| s.pool_mode)
    }

    fn in_transaction(&mut self, _: Resource<SessionHandle>) -> bool {
        self.session().is_some_and(|s| s.in_transaction)
    }

    fn drop(&mut self, _: Resource<SessionHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl handles::HostQuery for PluginState {
    fn sql(&mut self, _: Resource<QueryHandle>) -> String {
        self.input.sql.clone()
    }

    fn protocol(&mut self, _: Resource<QueryHandle>) -> handles::Protocol {
        if self.input.extended {
            handles::Protocol::Extended
        } else {
            handles::Protocol::Simple
        }
    }

    fn statement_name(&mut self, _: Resource<QueryHandle>) -> String {
        self.input.statement_name.clone()
    }

    fn read_only(&mut self, _: Resource<QueryHandle>) -> bool {
        self.input.read_only()
    }

    fn statements(&mut self, _: Resource<QueryHandle>) -> Vec<handles::Statement> {
        self.input
            .statements()
            .iter()
            .map(convert::handle_statement)
            .collect()
    }

    fn drop(&mut self, _: Resource<QueryHandle>) -> wasmtime::Result<()> {
        Ok(())
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
