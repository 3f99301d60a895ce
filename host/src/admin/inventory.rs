//! SHOW MEM (PgBouncer's columns, pgwarden's own allocation classes) and SHOW PLUGINS (pgwarden's own).
//!
//! SHOW MEM's rows are what pgwarden keeps per connection and per pool, not PgBouncer's slabs: `size` is
//! the fixed part of one object in bytes, `used` how many exist, `free` 0 (nothing is kept on a free list),
//! `memtotal` their product. `server_buffers` is the read buffers of servers as their last release left
//! them (`size` their average). Client buffers are not listed: an idle client holds none, and a busy one's
//! are only visible to its own task.

use std::sync::atomic::Ordering;

use super::result::{ResultSet, Type, row};
use crate::client::ClientConn;
use crate::config::OnError;
use crate::conns::{ClientRecord, ServerRecord};
use crate::pool::Pool;
use crate::server::{ServerBody, ServerConn};
use crate::state::{Runtime, State};

pub fn mem(state: &State) -> ResultSet {
    let mut r = ResultSet::new(&[
        ("name", Type::Text),
        ("size", Type::Int4),
        ("used", Type::Int4),
        ("free", Type::Int4),
        ("memtotal", Type::Int4),
    ]);
    let pools = state.pools.all();
    let clients: usize =
        pools.iter().map(|p| p.live_clients.len()).sum::<usize>() + state.console.live.len();
    let servers: Vec<_> = pools
        .iter()
        .flat_map(|p| p.live_servers.snapshot())
        .collect();
    let buffers: u64 = servers
        .iter()
        .map(|s| u64::from(s.buffer.load(Ordering::Relaxed)))
        .sum();
    let mut push = |name: &str, size: usize, used: usize| {
        r.push(row![name, size, used, 0u32, size.saturating_mul(used)]);
    };
    push(
        "client",
        size_of::<ClientConn>() + size_of::<ClientRecord>(),
        clients,
    );
    push(
        "server",
        size_of::<ServerConn>() + size_of::<ServerBody>() + size_of::<ServerRecord>(),
        servers.len(),
    );
    push("pool", size_of::<Pool>(), pools.len());
    let average = usize::try_from(buffers)
        .unwrap_or(usize::MAX)
        .checked_div(servers.len())
        .unwrap_or(0);
    r.push(row![
        "server_buffers",
        average,
        servers.len(),
        0u32,
        buffers
    ]);
    r
}

/// SHOW PLUGINS: each plugin of the running generation, its hooks and scope, and its counters since it was
/// loaded (a reload that keeps a plugin keeps its counters).
pub fn plugins(runtime: &Runtime) -> ResultSet {
    let mut r = ResultSet::new(&[
        ("name", Type::Text),
        ("source", Type::Text),
        ("hooks", Type::Text),
        ("databases", Type::Text),
        ("order", Type::Int4),
        ("on_error", Type::Text),
        ("generation", Type::Numeric),
        ("calls", Type::Numeric),
        ("allows", Type::Numeric),
        ("denials", Type::Numeric),
        ("errors", Type::Numeric),
        ("total_call_time", Type::Numeric),
        ("avg_call_time", Type::Numeric),
    ]);
    for p in runtime.plugins.all() {
        let s = &p.stats;
        let calls = s.calls.load(Ordering::Relaxed);
        let micros = s.nanos.load(Ordering::Relaxed) / 1000;
        let hooks: Vec<&str> = p.hooks.iter().map(|h| h.as_str()).collect();
        r.push(row![
            p.spec.name.as_str(),
            p.spec.source.to_string(),
            hooks.join(","),
            p.spec.databases.as_ref().map(|d| d.join(",")),
            p.spec.order.to_string(),
            match p.spec.on_error {
                OnError::Deny => "deny",
                OnError::Allow => "allow",
            },
            runtime.generation,
            calls,
            s.allows.load(Ordering::Relaxed),
            s.denials.load(Ordering::Relaxed),
            s.errors.load(Ordering::Relaxed),
            micros,
            micros.checked_div(calls).unwrap_or(0),
        ]);
    }
    r
}
