//! `/metrics`: everything a scrape shows, read from the shared state at scrape time (pools, plugins, error
//! counters, the process). Families are written whole, one after the other, as the format requires.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::errors::ErrorKind;
use super::exposition::{Exposition, Kind};
use crate::pool::{Pool, PoolSnapshot};
use crate::state::State;

/// A family's name and help, and how to read it.
type Described<F> = (&'static str, &'static str, F);

/// A pool's counter.
type CounterOf = fn(&Pool) -> &AtomicU64;

/// A plugin's counter, read.
type PluginCounter = fn(&crate::plugin::PluginStats) -> u64;

/// A pool's histogram and the total its `_sum` comes from (microseconds).
type HistogramOf = fn(&Pool) -> (&super::Histogram, &AtomicU64);

/// One pool at the moment of the scrape.
struct PoolRow {
    pool: Arc<Pool>,
    /// database, user, and pool_mode for a pool a router plugin gave its own mode.
    labels: Vec<(&'static str, String)>,
    snap: PoolSnapshot,
    clients: Clients,
}

/// A pool's clients by state; they add up to its logged-in clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clients {
    /// Linked to a server (in a transaction, or for their session in session pooling).
    pub active: u32,
    /// Queued for a server.
    pub waiting: u32,
    /// Between transactions, holding no server.
    pub idle: u32,
    /// Kept on their server by state that cannot move (session_state = pin), in a transaction or not.
    pub pinned: u32,
}

impl Clients {
    /// Splits `clients` by what the pool knows: queued ones, servers linked to a client (each linked client
    /// holds one; a server still being cleaned up after its client left may count for a moment), pinned ones.
    pub fn split(clients: u32, waiting: u32, linked_servers: u32, pinned: u32) -> Self {
        let waiting = waiting.min(clients);
        let linked = linked_servers.min(clients - waiting);
        let pinned = pinned.min(linked);
        Self {
            active: linked - pinned,
            waiting,
            idle: clients - waiting - linked,
            pinned,
        }
    }
}

/// The exposition of `state` now.
pub fn render(state: &State) -> String {
    let mut e = Exposition::default();
    global(&mut e, state);
    pools(&mut e, state);
    plugins(&mut e, state);
    super::process::write(&mut e);
    e.finish()
}

fn global(e: &mut Exposition, state: &State) {
    let runtime = state.runtime();
    e.family(
        "pgwarden_build_info",
        Kind::Gauge,
        "Always 1; the version of pgwarden in a label.",
    );
    e.sample(
        "pgwarden_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1u64,
    );
    e.family(
        "pgwarden_config_generation",
        Kind::Gauge,
        "Generation of the running configuration: 1 at start, one more at each reload or console SET.",
    );
    e.sample("pgwarden_config_generation", &[], runtime.generation);
    e.family(
        "pgwarden_paused",
        Kind::Gauge,
        "1 while every pool is paused (console PAUSE, SIGUSR1).",
    );
    e.sample("pgwarden_paused", &[], state.lifecycle.is_paused());
    e.family(
        "pgwarden_shutting_down",
        Kind::Gauge,
        "1 once a shutdown started (SIGTERM, SIGINT, console SHUTDOWN): no new clients are accepted.",
    );
    e.sample(
        "pgwarden_shutting_down",
        &[],
        state.lifecycle.shutdown_mode().is_some(),
    );
    e.family(
        "pgwarden_clients",
        Kind::Gauge,
        "Client connections now, counted against max_client_conn (logging in, in pools, on the console).",
    );
    e.sample(
        "pgwarden_clients",
        &[],
        state.clients.total.load(Ordering::Relaxed),
    );
    e.family(
        "pgwarden_clients_parked",
        Kind::Gauge,
        "Idle pool clients parked without a task of their own (quiet for half a second or more, holding no \
         server); counted in pgwarden_clients too.",
    );
    e.sample(
        "pgwarden_clients_parked",
        &[],
        state
            .parking
            .as_ref()
            .map_or(0, |lot| u64::try_from(lot.len()).unwrap_or(u64::MAX)),
    );
    e.family(
        "pgwarden_console_clients",
        Kind::Gauge,
        "Clients of the admin console now.",
    );
    e.sample(
        "pgwarden_console_clients",
        &[],
        state.console.clients.load(Ordering::Relaxed),
    );
    e.family(
        "pgwarden_errors_total",
        Kind::Counter,
        "Errors pgwarden reported, by kind: clients refused or disconnected (limits, timeouts, failed logins) \
         and plugin refusals (queries denied by a policy, connections refused by a router).",
    );
    for kind in ErrorKind::ALL {
        e.sample(
            "pgwarden_errors_total",
            &[("kind", kind.as_str())],
            state.errors.get(kind),
        );
    }
}

fn pool_rows(state: &State) -> Vec<PoolRow> {
    state
        .pools
        .all()
        .into_iter()
        .map(|pool| {
            let mut snap = pool.snapshot();
            // Clients held by a PAUSE or SUSPEND wait outside the pool's queue: count them too.
            (snap.waiting, snap.max_wait) = crate::conns::waiting(&pool.live_clients);
            let clients = Clients::split(
                pool.clients.load(Ordering::Acquire),
                snap.waiting,
                snap.in_use,
                pool.stats.pinned_clients.load(Ordering::Relaxed),
            );
            let mut labels = vec![
                ("database", pool.key.database.to_string()),
                ("user", pool.key.user.to_string()),
            ];
            if let Some(mode) = pool.key.mode {
                labels.push(("pool_mode", mode.as_str().to_owned()));
            }
            PoolRow {
                pool,
                labels,
                snap,
                clients,
            }
        })
        .collect()
}

/// A family with one sample per pool.
fn per_pool<V: Into<super::exposition::Value>>(
    e: &mut Exposition,
    rows: &[PoolRow],
    name: &str,
    kind: Kind,
    help: &str,
    value: impl Fn(&PoolRow) -> V,
) {
    e.family(name, kind, help);
    for row in rows {
        e.sample(name, &labels(row, None), value(row));
    }
}

fn labels<'a>(row: &'a PoolRow, extra: Option<(&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    row.labels
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra)
        .collect()
}

fn pools(e: &mut Exposition, state: &State) {
    let rows = pool_rows(state);
    e.family(
        "pgwarden_pools",
        Kind::Gauge,
        "Pools (one per database entry and user) that exist now.",
    );
    e.sample("pgwarden_pools", &[], rows.len() as u64);

    let name = "pgwarden_pool_clients";
    e.family(
        name,
        Kind::Gauge,
        "Logged-in clients of the pool by state: active (linked to a server), waiting (queued for one), idle \
         (holding none), pinned (kept on their server by session state, session_state = pin).",
    );
    for row in &rows {
        let c = row.clients;
        for (state, n) in [
            ("active", c.active),
            ("waiting", c.waiting),
            ("idle", c.idle),
            ("pinned", c.pinned),
        ] {
            e.sample(name, &labels(row, Some(("state", state))), n);
        }
    }
    let name = "pgwarden_pool_servers";
    e.family(
        name,
        Kind::Gauge,
        "Server connections of the pool by state: active (linked to a client, or being cleaned up after one), \
         idle (ready in the pool), login (being opened).",
    );
    for row in &rows {
        let s = row.snap;
        for (state, n) in [
            ("active", s.in_use),
            ("idle", s.idle),
            ("login", s.connecting),
        ] {
            e.sample(name, &labels(row, Some(("state", state))), n);
        }
    }
    per_pool(
        e,
        &rows,
        "pgwarden_pool_max_wait_seconds",
        Kind::Gauge,
        "How long the client that has waited longest for a server has waited, in seconds (0 with nobody \
         waiting).",
        |r| r.snap.max_wait.as_secs_f64(),
    );
    per_pool(
        e,
        &rows,
        "pgwarden_pool_paused",
        Kind::Gauge,
        "1 while the pool hands out no server (PAUSE, PAUSE of its database, SIGUSR1).",
        |r| r.snap.paused,
    );
    let counters: [Described<CounterOf>; 9] = [
        (
            "pgwarden_pool_transactions_total",
            "Transactions the pool's clients finished (SHOW STATS' xact_count).",
            |p| &p.stats.transactions,
        ),
        (
            "pgwarden_pool_queries_total",
            "Queries the pool's clients sent (SHOW STATS' query_count).",
            |p| &p.stats.queries,
        ),
        (
            "pgwarden_pool_received_bytes_total",
            "Bytes read from the pool's clients.",
            |p| &p.stats.received,
        ),
        (
            "pgwarden_pool_sent_bytes_total",
            "Bytes sent to the pool's clients.",
            |p| &p.stats.sent,
        ),
        (
            "pgwarden_pool_client_parses_total",
            "Named Parse messages from clients (prepared statements tracked in transaction pooling).",
            |p| &p.stats.client_parses,
        ),
        (
            "pgwarden_pool_server_parses_total",
            "Parse messages of tracked prepared statements sent to servers.",
            |p| &p.stats.server_parses,
        ),
        (
            "pgwarden_pool_binds_total",
            "Bind messages of tracked prepared statements.",
            |p| &p.stats.binds,
        ),
        (
            "pgwarden_pool_server_assignments_total",
            "Times a server was handed to one of the pool's clients.",
            |p| &p.stats.assignments,
        ),
        (
            "pgwarden_pool_client_logins_total",
            "Successful client logins to the pool.",
            |p| &p.stats.logins,
        ),
    ];
    for (name, help, counter) in counters {
        per_pool(e, &rows, name, Kind::Counter, help, |r| {
            counter(&r.pool).load(Ordering::Relaxed)
        });
    }
    let name = "pgwarden_pool_errors_total";
    e.family(
        name,
        Kind::Counter,
        "Errors of the pool, by kind: server_login_failed (a login to the server failed), query_wait_timeout \
         (a client waited query_wait_timeout for a server and was disconnected).",
    );
    for row in &rows {
        let s = &row.pool.stats;
        for (kind, counter) in [
            ("server_login_failed", &s.server_login_failures),
            ("query_wait_timeout", &s.wait_timeouts),
        ] {
            e.sample(
                name,
                &labels(row, Some(("kind", kind))),
                counter.load(Ordering::Relaxed),
            );
        }
    }
    let histograms: [Described<HistogramOf>; 3] = [
        (
            "pgwarden_pool_query_duration_seconds",
            "Time from a query (or a pipeline of them) sent to its last ReadyForQuery, per query.",
            |p| (&p.stats.query_time, &p.stats.query_us),
        ),
        (
            "pgwarden_pool_transaction_duration_seconds",
            "Time from a transaction's first query to its end.",
            |p| (&p.stats.xact_time, &p.stats.xact_us),
        ),
        (
            "pgwarden_pool_wait_duration_seconds",
            "Time a client waited for a server at each checkout (0 when one was idle).",
            |p| (&p.stats.wait_time, &p.stats.wait_us),
        ),
    ];
    for (name, help, get) in histograms {
        e.family(name, Kind::Histogram, help);
        for row in &rows {
            let (h, sum_us) = get(&row.pool);
            // The sum first: a transaction finishing meanwhile then shows in the count, not in the sum alone.
            let sum = sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            e.histogram(name, &labels(row, None), &h.counts(), sum);
        }
    }
}

fn plugins(e: &mut Exposition, state: &State) {
    let runtime = state.runtime();
    let plugins = runtime.plugins.all();
    let counters: [Described<PluginCounter>; 4] = [
        (
            "pgwarden_plugin_calls_total",
            "Calls into the plugin (any hook).",
            |s| s.calls.load(Ordering::Relaxed),
        ),
        (
            "pgwarden_plugin_allows_total",
            "Queries the plugin's policy allowed.",
            |s| s.allows.load(Ordering::Relaxed),
        ),
        (
            "pgwarden_plugin_denials_total",
            "Queries the plugin's policy denied.",
            |s| s.denials.load(Ordering::Relaxed),
        ),
        (
            "pgwarden_plugin_errors_total",
            "Calls that failed: traps, timeouts, instances that could not start.",
            |s| s.errors.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        e.family(name, Kind::Counter, help);
        for p in plugins {
            e.sample(name, &[("plugin", p.name())], get(&p.stats));
        }
    }
    let name = "pgwarden_plugin_call_seconds_total";
    e.family(
        name,
        Kind::Counter,
        "Time spent in calls into the plugin, in seconds.",
    );
    for p in plugins {
        let nanos = p.stats.nanos.load(Ordering::Relaxed);
        e.sample(name, &[("plugin", p.name())], nanos as f64 / 1e9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_add_up_whatever_the_counts_say() {
        // 10 clients: 2 queued, 5 servers linked, 1 of those clients pinned.
        assert_eq!(
            Clients::split(10, 2, 5, 1),
            Clients {
                active: 4,
                waiting: 2,
                idle: 3,
                pinned: 1
            }
        );
        // A server still being cleaned up after its client left, and a stale pinned count: never more
        // clients than there are.
        let c = Clients::split(1, 0, 2, 3);
        assert_eq!(c.active + c.waiting + c.idle + c.pinned, 1);
        assert_eq!(c.pinned, 1);
        assert_eq!(Clients::split(0, 1, 1, 1), Clients::split(0, 0, 0, 0));
    }
}
