//! SHOW STATS, STATS_TOTALS, STATS_AVERAGES and TOTALS: totals since start per database (the console's
//! own included), and PgBouncer's averages: per second (or per query, transaction, assignment for the
//! times) since the snapshot taken two `stats_period`s ago.
//!
//! Bytes are those read from clients and sent to them; query time runs from a query (or a pipeline of
//! them) being sent to its last ReadyForQuery, transaction time from a transaction's first query to its end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::CONSOLE_NAME;
use super::result::{Cell, ResultSet, Type, row};
use crate::pool::Pool;
use crate::state::State;

/// One database's counters, PgBouncer's set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub assignments: u64,
    pub xacts: u64,
    pub queries: u64,
    pub received: u64,
    pub sent: u64,
    pub xact_us: u64,
    pub query_us: u64,
    pub wait_us: u64,
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
    pub logins: u64,
}

impl Stat {
    fn of_pool(pool: &Pool) -> Self {
        let s = &pool.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Self {
            assignments: get(&s.assignments),
            xacts: get(&s.transactions),
            queries: get(&s.queries),
            wait_us: get(&s.wait_us),
            client_parses: get(&s.client_parses),
            server_parses: get(&s.server_parses),
            binds: get(&s.binds),
            logins: get(&s.logins),
            received: get(&s.received),
            sent: get(&s.sent),
            xact_us: get(&s.xact_us),
            query_us: get(&s.query_us),
        }
    }

    fn add(&mut self, o: &Self) {
        self.assignments += o.assignments;
        self.xacts += o.xacts;
        self.queries += o.queries;
        self.received += o.received;
        self.sent += o.sent;
        self.xact_us += o.xact_us;
        self.query_us += o.query_us;
        self.wait_us += o.wait_us;
        self.client_parses += o.client_parses;
        self.server_parses += o.server_parses;
        self.binds += o.binds;
        self.logins += o.logins;
    }

    /// PgBouncer's averages from `old` to `self` over `elapsed`: counts per second; times per query,
    /// transaction or assignment.
    pub fn average(&self, old: &Self, elapsed: Duration) -> Self {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        if us == 0 {
            return Self::default();
        }
        let rate = |cur: u64, old: u64| {
            let d = u128::from(cur.saturating_sub(old));
            u64::try_from(d * 1_000_000 / u128::from(us)).unwrap_or(u64::MAX)
        };
        let per = |cur: u64, old: u64, n: u64| cur.saturating_sub(old).checked_div(n).unwrap_or(0);
        let queries = self.queries.saturating_sub(old.queries);
        let xacts = self.xacts.saturating_sub(old.xacts);
        let assignments = self.assignments.saturating_sub(old.assignments);
        Self {
            assignments: rate(self.assignments, old.assignments),
            xacts: rate(self.xacts, old.xacts),
            queries: rate(self.queries, old.queries),
            received: rate(self.received, old.received),
            sent: rate(self.sent, old.sent),
            xact_us: per(self.xact_us, old.xact_us, xacts),
            query_us: per(self.query_us, old.query_us, queries),
            wait_us: per(self.wait_us, old.wait_us, assignments),
            client_parses: rate(self.client_parses, old.client_parses),
            server_parses: rate(self.server_parses, old.server_parses),
            binds: rate(self.binds, old.binds),
            logins: rate(self.logins, old.logins),
        }
    }

    /// The twelve values in PgBouncer's column order.
    fn cells(&self) -> [u64; 12] {
        [
            self.assignments,
            self.xacts,
            self.queries,
            self.received,
            self.sent,
            self.xact_us,
            self.query_us,
            self.wait_us,
            self.client_parses,
            self.server_parses,
            self.binds,
            self.logins,
        ]
    }
}

/// Totals since start per database name, the console's included.
fn current(state: &State) -> BTreeMap<String, Stat> {
    let mut by_db: BTreeMap<String, Stat> = BTreeMap::new();
    for pool in state.pools.all() {
        by_db
            .entry(pool.key.database.to_string())
            .or_default()
            .add(&Stat::of_pool(&pool));
    }
    let c = &state.console;
    let commands = c.commands.load(Ordering::Relaxed);
    by_db
        .entry(CONSOLE_NAME.to_owned())
        .or_default()
        .add(&Stat {
            xacts: commands,
            queries: commands,
            logins: c.logins.load(Ordering::Relaxed),
            ..Stat::default()
        });
    by_db
}

/// The snapshots averages are taken against, rotated every stats_period as PgBouncer does.
#[derive(Debug)]
pub struct StatsWindow {
    inner: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    older: BTreeMap<String, Stat>,
    newer: BTreeMap<String, Stat>,
    old_stamp: Instant,
    new_stamp: Instant,
}

impl Default for StatsWindow {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            inner: Mutex::new(Window {
                older: BTreeMap::new(),
                newer: BTreeMap::new(),
                old_stamp: now,
                new_stamp: now,
            }),
        }
    }
}

impl StatsWindow {
    /// The snapshot averages start from, and when it was taken.
    fn base(&self) -> (BTreeMap<String, Stat>, Instant) {
        let w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (w.older.clone(), w.old_stamp)
    }
}

/// Moves the averaging window on (called every stats_period).
pub fn rotate_window(state: &State) {
    let now = current(state);
    let mut w = state
        .console
        .window
        .inner
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    w.older = std::mem::replace(&mut w.newer, now);
    w.old_stamp = w.new_stamp;
    w.new_stamp = Instant::now();
}

/// Which columns of SHOW STATS a command shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    All,
    Totals,
    Averages,
}

const TOTAL_NAMES: [&str; 12] = [
    "total_server_assignment_count",
    "total_xact_count",
    "total_query_count",
    "total_received",
    "total_sent",
    "total_xact_time",
    "total_query_time",
    "total_wait_time",
    "total_client_parse_count",
    "total_server_parse_count",
    "total_bind_count",
    "total_client_login_count",
];

const AVG_NAMES: [&str; 12] = [
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
    "avg_client_login_count",
];

/// STATS_TOTALS' names; STATS_AVERAGES uses the same but for its last four (PgBouncer's choice).
const SHORT_NAMES: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
    "client_login_count",
];

const SHORT_AVG_TAIL: [&str; 4] = [
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
    "avg_client_login_count",
];

pub fn per_database(state: &State, which: Columns) -> ResultSet {
    let mut columns: Vec<(&'static str, Type)> = vec![("database", Type::Text)];
    let names: Vec<&'static str> = match which {
        Columns::All => TOTAL_NAMES
            .iter()
            .chain(AVG_NAMES.iter())
            .copied()
            .collect(),
        Columns::Totals => SHORT_NAMES.to_vec(),
        Columns::Averages => SHORT_NAMES[..8]
            .iter()
            .chain(SHORT_AVG_TAIL.iter())
            .copied()
            .collect(),
    };
    columns.extend(names.iter().map(|n| (*n, Type::Numeric)));
    let mut r = ResultSet::new(&columns);
    let (base, since) = state.console.window.base();
    let elapsed = since.elapsed();
    for (db, stat) in current(state) {
        let avg = stat.average(&base.get(&db).copied().unwrap_or_default(), elapsed);
        let mut cells: Vec<Cell> = row![db];
        let values: Vec<u64> = match which {
            Columns::All => stat.cells().into_iter().chain(avg.cells()).collect(),
            Columns::Totals => stat.cells().to_vec(),
            Columns::Averages => avg.cells().to_vec(),
        };
        cells.extend(values.into_iter().map(Cell::from));
        r.push(cells);
    }
    r
}

/// SHOW TOTALS: SHOW STATS over every database, one value a row.
pub fn totals(state: &State) -> ResultSet {
    const FIELDS: [&str; 12] = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "client_bytes",
        "server_bytes",
        "xact_time",
        "query_time",
        "wait_time",
        "ps_client_parse_count",
        "ps_server_parse_count",
        "ps_bind_count",
        "client_login_count",
    ];
    let (base, since) = state.console.window.base();
    let mut total = Stat::default();
    for stat in current(state).values() {
        total.add(stat);
    }
    let mut old = Stat::default();
    for stat in base.values() {
        old.add(stat);
    }
    let avg = total.average(&old, since.elapsed());
    let mut r = ResultSet::new(&[("name", Type::Text), ("value", Type::Numeric)]);
    for (field, value) in FIELDS.iter().zip(total.cells()) {
        r.push(row![format!("total_{field}"), value]);
    }
    for (field, value) in FIELDS.iter().zip(avg.cells()) {
        r.push(row![format!("avg_{field}"), value]);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_are_pgbouncers() {
        let old = Stat {
            xacts: 10,
            queries: 20,
            query_us: 1000,
            xact_us: 500,
            assignments: 4,
            wait_us: 40,
            logins: 1,
            ..Stat::default()
        };
        let now = Stat {
            xacts: 130,
            queries: 260,
            query_us: 1000 + 240 * 50,
            xact_us: 500 + 120 * 100,
            assignments: 10,
            wait_us: 40 + 6 * 7,
            logins: 61,
            ..Stat::default()
        };
        let avg = now.average(&old, Duration::from_secs(60));
        assert_eq!(avg.xacts, 2);
        assert_eq!(avg.queries, 4);
        assert_eq!(avg.query_us, 50);
        assert_eq!(avg.xact_us, 100);
        assert_eq!(avg.wait_us, 7);
        assert_eq!(avg.logins, 1);
        assert_eq!(avg.assignments, 0);
        assert_eq!(now.average(&old, Duration::ZERO), Stat::default());
    }

    #[test]
    fn column_sets_follow_pgbouncer() {
        let state = State::new(crate::Config::empty_for_tests()).expect("state");
        let all = per_database(&state, Columns::All);
        assert_eq!(all.columns.len(), 25);
        assert_eq!(all.names()[1], "total_server_assignment_count");
        assert_eq!(all.names()[24], "avg_client_login_count");
        let totals = per_database(&state, Columns::Totals);
        assert_eq!(totals.names()[4], "bytes_received");
        let avgs = per_database(&state, Columns::Averages);
        assert_eq!(avgs.names()[9], "avg_client_parse_count");
        // The console's own row is there from the start.
        assert_eq!(all.rows.len(), 1);
        assert_eq!(all.rows[0][0], Cell::from(CONSOLE_NAME));
        let t = super::totals(&state);
        assert_eq!(t.rows.len(), 24);
        assert_eq!(t.rows[3][0], Cell::from("total_client_bytes"));
    }
}
