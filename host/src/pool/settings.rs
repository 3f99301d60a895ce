//! Effective settings of one pool, resolved user → database → global as PgBouncer does, recomputed on
//! every reload.

use std::time::Duration;

use crate::config::{Database, LoadBalanceHosts, PoolMode, SessionState};
use crate::net::Keepalive;
use crate::server::LoginSpec;
use crate::state::Runtime;

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub mode: PoolMode,
    /// Server connections per pool; `u32::MAX` when the configured size is 0 (PgBouncer: no limit).
    pub pool_size: u32,
    pub min_pool_size: u32,
    pub reserve_pool_size: u32,
    pub reserve_pool_timeout: Duration,
    pub max_db_connections: u32,
    pub max_user_connections: u32,
    /// Hosts to connect to: each new connection takes the next (round-robin), or all stay on one until a
    /// connection to it fails (`load_balance_hosts = disable`).
    pub hosts: Vec<String>,
    pub load_balance_hosts: LoadBalanceHosts,
    pub login: LoginSpec,
    /// The database entry forces a user: one pool for all clients.
    pub forced_user: bool,
    pub server_lifetime: Duration,
    pub server_idle_timeout: Duration,
    pub server_login_retry: Duration,
    pub server_check_delay: Duration,
    pub server_check_query: Option<String>,
    pub server_reset_query: Option<String>,
    pub server_reset_query_always: bool,
    pub query_wait_timeout: Duration,
    pub max_packet: u32,
    /// State that cannot move between servers, in transaction and statement pooling.
    pub session_state: SessionState,
    /// A session-mode entry for the same server database, named when session_state=reject refuses.
    pub session_alias: Option<String>,
    /// Log new server connections (`log_connections`) and their closing (`log_disconnections`); kept here
    /// so a server connection can tell without the shared state, and a reload changes them.
    pub log_connections: bool,
    pub log_disconnections: bool,
}

impl PoolSettings {
    /// Resolves the settings of the pool for database entry `db` (clients asked for `db_name`) logging in as
    /// `pool_user`.
    pub fn resolve(runtime: &Runtime, db: &Database, db_name: &str, pool_user: &str) -> Self {
        let config = &runtime.config;
        let secrets = &runtime.secrets;
        let s = &config.settings;
        let user = config.users.get(pool_user);
        let forced_user = db.user.is_some();
        let server_user = db.user.clone().unwrap_or_else(|| pool_user.to_owned());
        let (secret, secret_source) = match &db.password {
            Some(pw) => (
                Some(crate::auth::Secret::Plain(pw.clone())),
                "password= of the database entry",
            ),
            None => (secrets.get(&server_user).cloned(), "from auth_file"),
        };
        let mut startup_params = Vec::new();
        for (key, value) in [
            ("client_encoding", &db.client_encoding),
            ("datestyle", &db.datestyle),
            ("timezone", &db.timezone),
            ("application_name", &db.application_name),
        ] {
            if let Some(v) = value {
                startup_params.push((key.to_owned(), v.clone()));
            }
        }
        // Defence in depth from the plugins in scope (the readonly policy starts every server connection
        // with default_transaction_read_only=on).
        startup_params.extend(runtime.plugins.server_parameters(db_name));
        let default_host = s
            .unix_socket_dir
            .as_ref()
            .map_or_else(|| "/tmp".to_owned(), |d| d.display().to_string());
        let hosts = if db.host.is_empty() {
            vec![default_host]
        } else {
            db.host.clone()
        };
        let login = LoginSpec {
            host: hosts[0].clone(),
            port: db.port,
            user: server_user,
            database: db.dbname.clone().unwrap_or_else(|| db_name.to_owned()),
            startup_params,
            secret,
            secret_source,
            connect_timeout: s.server_connect_timeout,
            connect_query: db.connect_query.clone(),
            keepalive: Keepalive {
                enabled: s.tcp_keepalive,
                idle: nonzero_secs(s.tcp_keepidle),
                interval: nonzero_secs(s.tcp_keepintvl),
                count: (s.tcp_keepcnt > 0).then_some(s.tcp_keepcnt),
                user_timeout: (s.tcp_user_timeout > 0)
                    .then(|| Duration::from_millis(u64::from(s.tcp_user_timeout))),
            },
            max_packet: s.max_packet_size,
        };
        let size = user
            .and_then(|u| u.pool_size)
            .or(db.pool_size)
            .unwrap_or(s.default_pool_size);
        Self {
            mode: user
                .and_then(|u| u.pool_mode)
                .or(db.pool_mode)
                .unwrap_or(s.pool_mode),
            pool_size: if size == 0 { u32::MAX } else { size },
            min_pool_size: db.min_pool_size.unwrap_or(s.min_pool_size),
            reserve_pool_size: user
                .and_then(|u| u.reserve_pool_size)
                .or(db.reserve_pool_size)
                .unwrap_or(s.reserve_pool_size),
            reserve_pool_timeout: s.reserve_pool_timeout,
            max_db_connections: db.max_db_connections.unwrap_or(s.max_db_connections),
            max_user_connections: user
                .and_then(|u| u.max_user_connections)
                .unwrap_or(s.max_user_connections),
            hosts,
            load_balance_hosts: db.load_balance_hosts,
            login,
            forced_user,
            server_lifetime: db
                .server_lifetime
                .filter(|d| !d.is_zero())
                .unwrap_or(s.server_lifetime),
            server_idle_timeout: s.server_idle_timeout,
            server_login_retry: s.server_login_retry,
            server_check_delay: s.server_check_delay,
            server_check_query: s.server_check_query.clone(),
            server_reset_query: s.server_reset_query.clone(),
            server_reset_query_always: s.server_reset_query_always,
            query_wait_timeout: user
                .and_then(|u| u.query_wait_timeout)
                .or(db.query_wait_timeout)
                .unwrap_or(s.query_wait_timeout),
            max_packet: s.max_packet_size,
            session_state: db.session_state.unwrap_or(s.session_state),
            session_alias: session_alias(runtime, db, db_name),
            log_connections: s.log_connections,
            log_disconnections: s.log_disconnections,
        }
    }

    /// Whether connections opened under `self` must not be reused under `other` (PgBouncer: "database
    /// configuration changed").
    pub fn login_differs(&self, other: &Self) -> bool {
        let (a, b) = (&self.login, &other.login);
        self.hosts != other.hosts
            || a.port != b.port
            || a.user != b.user
            || a.database != b.database
            || a.startup_params != b.startup_params
            || a.secret != b.secret
            || a.connect_query != b.connect_query
    }
}

fn nonzero_secs(secs: u32) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
}

/// The name of another database entry for the same server database in session mode, if there is one.
fn session_alias(runtime: &Runtime, db: &Database, db_name: &str) -> Option<String> {
    let config = &runtime.config;
    let target = |d: &Database, name: &str| {
        (
            d.host.clone(),
            d.port,
            d.dbname.clone().unwrap_or_else(|| name.to_owned()),
        )
    };
    let ours = target(db, db_name);
    config
        .databases
        .values()
        .filter(|d| d.name != db.name && d.name != "*")
        .find(|d| {
            d.pool_mode.unwrap_or(config.settings.pool_mode) == PoolMode::Session
                && target(d, &d.name) == ours
        })
        .map(|d| d.name.clone())
}
