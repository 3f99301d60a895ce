//! The plugins under test, configured as an operator would (a TOML file through `config::load`, loaded
//! by `PluginSet::load` on one engine, as at pooler start), each scoped to a database alias of its own so
//! every bench picks exactly one plugin with the pooler's own `for_hook` lookup.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use pgwarden::client::{Denial, QueryPolicy, check_query};
use pgwarden::config::{Hook, PoolMode};
use pgwarden::net::Peer;
use pgwarden::plugin::convert::{self, SessionInfo};
use pgwarden::plugin::{DatabaseAccess, Plugin, PluginEngine, PluginSet, builtin};

/// A database alias with no plugin.
pub const PLAIN: &str = "plain";
/// The `testing` plugin in allow mode (every hook): a trivial plugin, so its calls cost what any call
/// costs.
pub const TESTING: &str = "testing";
/// The shipped `readonly` policy.
pub const READONLY: &str = "readonly";
/// The shipped `router` with four rules.
pub const ROUTER: &str = "router";

/// The router's rules: a client `app@router` over TCP from 192.0.2.10 is tried against rules 1 and 2
/// (each fails on its first condition) and matched by rule 3.
const ROUTER_RULES: &[(&str, &str)] = &[
    (
        "rule.1",
        "user=admin_*,ops client=10.0.0.0/8 -> pool_mode=session",
    ),
    (
        "rule.2",
        "application_name=\"Legacy Reports*\" -> database=reports_replica",
    ),
    (
        "rule.3",
        "user=app database=router client=192.0.2.0/24 -> database=plain pool_mode=transaction",
    ),
    (
        "rule.4",
        "user=guest,test client=unix -> deny message=\"no local logins for shared accounts\"",
    ),
];

/// The loaded configuration's plugins and the engine they run on.
pub struct Fixture {
    /// Kept alive for the plugins (the epoch ticker stops when the engine is dropped).
    pub engine: Arc<PluginEngine>,
    pub plugins: PluginSet,
}

impl Fixture {
    /// Writes the configuration to a temporary file, loads it and its plugins (compiling them: seconds).
    /// Panics on any error: a bench without its plugins would measure nothing.
    pub fn load() -> Self {
        let path = write_config();
        let loaded = pgwarden::config::load(&path);
        let _ = std::fs::remove_file(&path);
        let config = loaded
            .unwrap_or_else(|e| panic!("bench configuration: {e}"))
            .config;
        assert_eq!(
            config.plugin_cache_dir.as_deref(),
            Some(std::path::Path::new("")),
            "the benches compile without the on-disk cache"
        );
        let engine = PluginEngine::new(None).expect("WebAssembly engine");
        let plugins = PluginSet::load(&engine, &config.plugins, None)
            .unwrap_or_else(|e| panic!("bench plugins: {e}"));
        Self { engine, plugins }
    }

    /// The one plugin serving `hook` for `database`.
    pub fn plugin<'a>(&'a self, hook: Hook, database: &'a str) -> &'a Arc<Plugin> {
        let mut found = self.plugins.for_hook(hook, database);
        let plugin = found
            .next()
            .unwrap_or_else(|| panic!("no {} plugin for {database}", hook.as_str()));
        assert!(found.next().is_none(), "one plugin per bench database");
        plugin
    }
}

/// What a hook is told about a psql-like client `user@database` from 192.0.2.10, as a session builds it
/// at login.
pub fn session(user: &str, database: &str) -> SessionInfo {
    let params = [
        ("user", user),
        ("database", database),
        ("application_name", "psql"),
        ("client_encoding", "UTF8"),
    ];
    let peer = Peer::Tcp(([192, 0, 2, 10], 51234).into());
    convert::session_info(user, database, "psql", peer, params, PoolMode::Transaction)
}

/// The policy plugins of one database, asked the way a client session asks them (as the private
/// `SessionPolicy` of `host/src/client/session.rs` does: `pgwarden::client::check_query`, which builds
/// the `policy` record only for plugins that export `policy`).
pub struct PolicyPlugins<'a> {
    pub plugins: &'a PluginSet,
    pub database: &'a str,
    pub info: SessionInfo,
    /// The client's `standard_conforming_strings` (on, as PostgreSQL's default).
    pub standard_strings: bool,
}

impl<'a> PolicyPlugins<'a> {
    /// The policy plugins of `database` for a client `app@database` with standard strings.
    pub fn new(plugins: &'a PluginSet, database: &'a str) -> Self {
        Self {
            plugins,
            database,
            info: session("app", database),
            standard_strings: true,
        }
    }
}

impl QueryPolicy for PolicyPlugins<'_> {
    fn check(
        &mut self,
        sql: &str,
        extended: bool,
        statement_name: &str,
        in_transaction: bool,
    ) -> Option<Denial> {
        self.info.in_transaction = in_transaction;
        let query = convert::QueryInput {
            sql,
            extended,
            statement_name,
            standard_strings: self.standard_strings,
        };
        check_query(self.plugins, self.database, &mut self.info, &query)
    }
}

/// The host's share of a `policy` plugin's check: pgwarden's SQL summary and the WIT query record, no
/// plugin.
pub struct SummaryOnly;

impl QueryPolicy for SummaryOnly {
    fn check(
        &mut self,
        sql: &str,
        extended: bool,
        statement_name: &str,
        _in_transaction: bool,
    ) -> Option<Denial> {
        black_box(convert::query(&convert::QueryInput {
            sql,
            extended,
            statement_name,
            standard_strings: true,
        }));
        None
    }
}

/// The host's share of a `query-policy` check that asks only `query.read-only()` (what the `readonly`
/// plugin asks of a read-only query): pgwarden's read-only reading alone, no plugin.
pub struct ReadOnlyReading;

impl QueryPolicy for ReadOnlyReading {
    fn check(
        &mut self,
        sql: &str,
        _extended: bool,
        _statement_name: &str,
        _in_transaction: bool,
    ) -> Option<Denial> {
        black_box(pgwarden::sql::read_only_with(sql, true));
        None
    }
}

/// An auth lookup's `database` import with no database behind it (the benched lookups never query).
pub struct NoDatabase;

impl DatabaseAccess for NoDatabase {
    fn query(
        &self,
        _user: &str,
        _database: &str,
        _sql: &str,
        _params: &[Option<String>],
    ) -> Result<Vec<Vec<Option<String>>>, String> {
        Err("no database in the benchmarks".to_owned())
    }
}

fn write_config() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "pgwarden-bench-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut text = format!(
        r#"[pgwarden]
listen_addr = "127.0.0.1"
listen_port = 6432
auth_type = "trust"

[databases.{PLAIN}]
host = "localhost"
[databases.{TESTING}]
host = "localhost"
[databases.{READONLY}]
host = "localhost"
[databases.{ROUTER}]
host = "localhost"

[plugins]
cache_dir = ""

[plugins.testing]
path = {testing:?}
databases = ["{TESTING}"]
[plugins.testing.config]
mode = "allow"

[plugins.readonly]
path = "builtin:readonly"
databases = ["{READONLY}"]

[plugins.router]
path = "builtin:router"
databases = ["{ROUTER}"]
[plugins.router.config]
"#,
        testing = builtin::TESTING_PLUGIN,
    );
    for (key, rule) in ROUTER_RULES {
        text.push_str(&format!("{key:?} = '{rule}'\n"));
    }
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}
