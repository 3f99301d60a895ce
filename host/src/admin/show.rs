//! The SHOW commands (any console user may run them), with PgBouncer 1.25's columns in its order.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::result::{ResultSet, Type, row};
use super::sockets::{self, Listing};
use super::{CONSOLE_NAME, VERSION, complete, inventory, stats, syntax_error};
use crate::config::{Database, PoolMode};
use crate::protocol::backend::{self, ErrorFields, Severity};
use crate::state::{CountKind, Runtime, State};

/// `SHOW <subject>` (also `SELECT <subject>`, as PgBouncer takes it).
pub fn show(state: &State, runtime: &Runtime, subject: &str, query: &str, out: &mut BytesMut) {
    if let Some(result) = fake_parameter(subject) {
        result.write(out);
        return super::ready(out);
    }
    let result = match subject.to_ascii_lowercase().as_str() {
        "help" => return help(out),
        "version" => version(),
        "config" => config(runtime),
        "databases" => databases(state, runtime),
        "pools" => pools(state, runtime),
        "stats" => stats::per_database(state, stats::Columns::All),
        "stats_totals" => stats::per_database(state, stats::Columns::Totals),
        "stats_averages" => stats::per_database(state, stats::Columns::Averages),
        "totals" => stats::totals(state),
        "lists" => lists(state, runtime),
        "users" => users(state, runtime),
        "state" => pause_state(state),
        "clients" => sockets::show(state, runtime, Listing::Clients),
        "servers" => sockets::show(state, runtime, Listing::Servers),
        "sockets" => sockets::show(state, runtime, Listing::Sockets),
        "active_sockets" => sockets::show(state, runtime, Listing::ActiveSockets),
        "mem" => inventory::mem(state),
        "plugins" => inventory::plugins(runtime),
        // No peering and no DNS cache of its own: PgBouncer's columns, no rows.
        "peers" => ResultSet::new(&[
            ("peer_id", Type::Int4),
            ("host", Type::Text),
            ("port", Type::Int4),
            ("pool_size", Type::Int4),
        ]),
        "peer_pools" => ResultSet::new(&[
            ("peer_id", Type::Int4),
            ("cl_active_cancel_req", Type::Int4),
            ("cl_waiting_cancel_req", Type::Int4),
            ("sv_active_cancel", Type::Int4),
            ("sv_login", Type::Int4),
        ]),
        "dns_hosts" => ResultSet::new(&[
            ("hostname", Type::Text),
            ("ttl", Type::Int8),
            ("addrs", Type::Text),
        ]),
        "dns_zones" => ResultSet::new(&[
            ("zonename", Type::Text),
            ("serial", Type::Int8),
            ("count", Type::Int4),
        ]),
        _ => return syntax_error(out, query),
    };
    result.write(out);
    super::ready(out);
}

/// Parameters some drivers ask the console about: PgBouncer answers a few with fixed values.
fn fake_parameter(name: &str) -> Option<ResultSet> {
    const FAKE: &[(&str, &str)] = &[
        ("client_encoding", "UTF-8"),
        ("default_transaction_isolation", "read committed"),
        ("standard_conforming_strings", "on"),
        ("datestyle", "ISO"),
        ("timezone", "GMT"),
    ];
    let (name, value) = FAKE.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
    let mut r = ResultSet::new(&[(*name, Type::Text)]);
    r.push(row![*value]);
    Some(r)
}

/// Whether `SET key = …` is one of the parameters above, which the console accepts and ignores.
pub fn is_fake_parameter(key: &str) -> bool {
    fake_parameter(key).is_some()
}

/// The command list, as a NOTICE (PgBouncer's way), then CommandComplete.
fn help(out: &mut BytesMut) {
    const USAGE: &str = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
        \tSHOW PEERS|PEER_POOLS\n\
        \tSHOW SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE|PLUGINS\n\
        \tSHOW DNS_HOSTS|DNS_ZONES\n\
        \tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
        \tSET key = arg\n\
        \tRELOAD\n\
        \tPAUSE [<db>] [TIMEOUT <n>]\n\
        \tRESUME [<db>]\n\
        \tDISABLE <db>\n\
        \tENABLE <db>\n\
        \tRECONNECT [<db>]\n\
        \tKILL [<db>]\n\
        \tKILL_CLIENT <client_id>\n\
        \tSUSPEND\n\
        \tSHUTDOWN\n\
        \tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\
        \tWAIT_CLOSE [<db>] [TIMEOUT <n>]";
    let fields = ErrorFields {
        severity: Severity::Notice.as_str().to_owned(),
        code: "00000".to_owned(),
        message: "Console usage".to_owned(),
        detail: Some(USAGE.to_owned()),
        hint: None,
    };
    backend::write_error_fields(out, backend::tag::NOTICE_RESPONSE, &fields);
    complete(out, "SHOW");
}

fn version() -> ResultSet {
    let mut r = ResultSet::new(&[("version", Type::Text)]);
    r.push(row![VERSION]);
    r
}

fn config(runtime: &Runtime) -> ResultSet {
    let mut r = ResultSet::new(&[
        ("key", Type::Text),
        ("value", Type::Text),
        ("default", Type::Text),
        ("changeable", Type::Text),
    ]);
    for (key, value, default, reloadable) in runtime.config.settings_table() {
        r.push(row![
            key,
            value,
            default,
            if reloadable { "yes" } else { "no" }
        ]);
    }
    r
}

/// One line of SHOW DATABASES.
struct DbRow {
    name: String,
    entry: Option<Database>,
}

/// The databases PgBouncer would list: every `[databases]` entry, those made from the `*` entry that
/// have pools, and the console's own.
fn database_rows(state: &State, runtime: &Runtime) -> Vec<DbRow> {
    let mut names: BTreeSet<String> = runtime.config.databases.keys().cloned().collect();
    for pool in state.pools.all() {
        names.insert(pool.key.database.to_string());
    }
    names.insert(CONSOLE_NAME.to_owned());
    names
        .into_iter()
        .map(|name| DbRow {
            entry: (name != CONSOLE_NAME)
                .then(|| runtime.config.database(&name))
                .flatten(),
            name,
        })
        .collect()
}

fn databases(state: &State, runtime: &Runtime) -> ResultSet {
    let s = &runtime.config.settings;
    let mut r = ResultSet::new(&[
        ("name", Type::Text),
        ("host", Type::Text),
        ("port", Type::Int4),
        ("database", Type::Text),
        ("force_user", Type::Text),
        ("pool_size", Type::Int4),
        ("min_pool_size", Type::Int4),
        ("reserve_pool_size", Type::Int4),
        ("server_lifetime", Type::Int4),
        ("pool_mode", Type::Text),
        ("load_balance_hosts", Type::Text),
        ("max_connections", Type::Int4),
        ("current_connections", Type::Int4),
        ("max_client_connections", Type::Int4),
        ("current_client_connections", Type::Int4),
        ("paused", Type::Int4),
        ("disabled", Type::Int4),
    ]);
    let pools = state.pools.all();
    for db in database_rows(state, runtime) {
        let clients = state.clients.count(CountKind::Database, &db.name);
        let Some(entry) = db.entry else {
            if db.name == CONSOLE_NAME {
                r.push(row![
                    CONSOLE_NAME,
                    None::<String>,
                    s.listen_port,
                    CONSOLE_NAME,
                    CONSOLE_NAME,
                    2u32,
                    0u32,
                    0u32,
                    s.server_lifetime.as_secs(),
                    PoolMode::Statement.as_str(),
                    None::<String>,
                    0u32,
                    0u32,
                    s.max_db_client_connections,
                    clients,
                    0u32,
                    0u32,
                ]);
            }
            // A pool whose entry a reload removed: nothing left to describe.
            continue;
        };
        let open: u32 = pools
            .iter()
            .filter(|p| *p.key.database == *db.name)
            .map(|p| p.snapshot().open)
            .sum();
        let lifetime = entry
            .server_lifetime
            .filter(|d| !d.is_zero())
            .unwrap_or(s.server_lifetime);
        r.push(row![
            db.name.as_str(),
            (!entry.host.is_empty()).then(|| entry.host.join(",")),
            entry.port,
            entry.dbname.as_deref().unwrap_or(&db.name),
            entry.user.as_deref(),
            entry.pool_size.unwrap_or(s.default_pool_size),
            entry.min_pool_size.unwrap_or(s.min_pool_size),
            entry.reserve_pool_size.unwrap_or(s.reserve_pool_size),
            lifetime.as_secs(),
            entry.pool_mode.map(PoolMode::as_str),
            (entry.host.len() > 1).then(|| entry.load_balance_hosts.to_string()),
            entry.max_db_connections.unwrap_or(s.max_db_connections),
            open,
            entry
                .max_db_client_connections
                .unwrap_or(s.max_db_client_connections),
            clients,
            u32::from(state.pools.is_database_paused(&db.name)),
            u32::from(super::is_disabled(state, &db.name)),
        ]);
    }
    r
}

fn pools(state: &State, runtime: &Runtime) -> ResultSet {
    let mut r = ResultSet::new(&[
        ("database", Type::Text),
        ("user", Type::Text),
        ("cl_active", Type::Int4),
        ("cl_waiting", Type::Int4),
        ("cl_active_cancel_req", Type::Int4),
        ("cl_waiting_cancel_req", Type::Int4),
        ("sv_active", Type::Int4),
        ("sv_active_cancel", Type::Int4),
        ("sv_being_canceled", Type::Int4),
        ("sv_idle", Type::Int4),
        ("sv_used", Type::Int4),
        ("sv_tested", Type::Int4),
        ("sv_login", Type::Int4),
        ("maxwait", Type::Int4),
        ("maxwait_us", Type::Int4),
        ("pool_mode", Type::Text),
        ("load_balance_hosts", Type::Text),
    ]);
    let mut rows = Vec::new();
    for pool in state.pools.all() {
        let mut snap = pool.snapshot();
        // Clients held by a PAUSE or SUSPEND wait outside the pool's queue: count them too.
        (snap.waiting, snap.max_wait) = crate::conns::waiting(&pool.live_clients);
        let (used, tested) = sockets::used_and_tested(&pool);
        let (cancel_active, cancel_waiting) = sockets::cancel_requests(&pool);
        let clients = pool.clients.load(Ordering::Acquire);
        let entry = runtime.config.database(&pool.key.database);
        let balance = entry
            .filter(|e| e.host.len() > 1)
            .map(|e| e.load_balance_hosts.to_string());
        rows.push((
            pool.key.database.to_string(),
            pool.key.user.to_string(),
            row![
                &*pool.key.database,
                &*pool.key.user,
                clients.saturating_sub(snap.waiting),
                snap.waiting,
                cancel_active,
                cancel_waiting,
                snap.in_use.saturating_sub(tested),
                0u32,
                0u32,
                snap.idle.saturating_sub(used),
                used,
                tested,
                snap.connecting,
                snap.max_wait.as_secs(),
                snap.max_wait.subsec_micros(),
                pool.settings().mode.as_str(),
                balance,
            ],
        ));
    }
    let console_clients = state.console.clients.load(Ordering::Relaxed);
    rows.push((
        CONSOLE_NAME.to_owned(),
        CONSOLE_NAME.to_owned(),
        row![
            CONSOLE_NAME,
            CONSOLE_NAME,
            console_clients,
            0u32,
            0u32,
            0u32,
            0u32,
            0u32,
            0u32,
            0u32,
            0u32,
            0u32,
            0u32,
            0u32,
            0u32,
            PoolMode::Statement.as_str(),
            None::<String>,
        ],
    ));
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    r.rows = rows.into_iter().map(|(_, _, row)| row).collect();
    r
}

/// Every user PgBouncer would know: auth_file, `[users]`, pool users, and the console's own.
fn user_names(state: &State, runtime: &Runtime) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = runtime.secrets.keys().cloned().collect();
    names.extend(runtime.config.users.keys().cloned());
    for pool in state.pools.all() {
        names.insert(pool.key.user.to_string());
    }
    names.insert(CONSOLE_NAME.to_owned());
    names
}

fn users(state: &State, runtime: &Runtime) -> ResultSet {
    let s = &runtime.config.settings;
    let mut r = ResultSet::new(&[
        ("name", Type::Text),
        ("pool_size", Type::Text),
        ("reserve_pool_size", Type::Text),
        ("pool_mode", Type::Text),
        ("max_user_connections", Type::Int4),
        ("current_connections", Type::Int4),
        ("max_user_client_connections", Type::Int4),
        ("current_client_connections", Type::Int4),
    ]);
    let pools = state.pools.all();
    for name in user_names(state, runtime) {
        let u = runtime.config.users.get(&name);
        // PgBouncer prints a set size right-aligned in nine characters, and nothing when unset.
        let size = |v: Option<u32>| v.map_or_else(String::new, |n| format!("{n:9}"));
        let open: u32 = pools
            .iter()
            .filter(|p| *p.key.user == *name)
            .map(|p| p.snapshot().open)
            .sum();
        let clients = state.clients.count(CountKind::User, &name);
        r.push(row![
            name.as_str(),
            size(u.and_then(|u| u.pool_size)),
            size(u.and_then(|u| u.reserve_pool_size)),
            u.and_then(|u| u.pool_mode).map(PoolMode::as_str),
            u.and_then(|u| u.max_user_connections)
                .unwrap_or(s.max_user_connections),
            open,
            u.and_then(|u| u.max_user_client_connections)
                .unwrap_or(s.max_user_client_connections),
            clients,
        ]);
    }
    r
}

fn lists(state: &State, runtime: &Runtime) -> ResultSet {
    let mut r = ResultSet::new(&[("list", Type::Text), ("items", Type::Int4)]);
    let pools = state.pools.all();
    let used_servers: u32 = pools.iter().map(|p| p.snapshot().open).sum();
    let clients = state.clients.total.load(Ordering::Relaxed);
    let counts: [(&str, usize); 14] = [
        ("databases", database_rows(state, runtime).len()),
        ("users", user_names(state, runtime).len()),
        ("peers", 0),
        ("pools", pools.len() + 1),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", clients as usize),
        ("login_clients", 0),
        ("free_servers", 0),
        ("used_servers", used_servers as usize),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ];
    for (list, n) in counts {
        r.push(row![list, n]);
    }
    r
}

fn pause_state(state: &State) -> ResultSet {
    let mut r = ResultSet::new(&[("key", Type::Text), ("value", Type::Text)]);
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let suspended = state.console.suspended.load(Ordering::Acquire);
    let paused = state.lifecycle.is_paused() && !suspended;
    r.push(row!["active", yes_no(!paused && !suspended)]);
    r.push(row!["paused", yes_no(paused)]);
    r.push(row!["suspended", yes_no(suspended)]);
    r
}
