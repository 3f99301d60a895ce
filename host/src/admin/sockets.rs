//! SHOW CLIENTS, SERVERS, SOCKETS and ACTIVE_SOCKETS, from the registry of live connections, with PgBouncer
//! 1.25's 21 columns (28 for the SOCKETS forms) in its order and types.
//!
//! What pgwarden does not have is printed as PgBouncer prints an unused field: `replication` is always
//! `none` (no replication connections), `tls` is empty (no TLS yet), `close_needed` is 0 for clients, and the
//! buffer positions of the SOCKETS forms are 0 (pgwarden's buffers are not PgBouncer's). Times are UTC.

use std::collections::HashMap;
use std::sync::Arc;

use super::result::{Cell, ResultSet, Type, row};
use crate::conns::{ClientRecord, ClientState, ServerRecord, ServerState, ptr_text, time_text};
use crate::net::Peer;
use crate::pool::Pool;
use crate::state::{Runtime, State};

/// Which listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    Clients,
    Servers,
    Sockets,
    /// Only the sockets with something in flight: pgwarden cannot see inside its buffers between reads,
    /// so these are the clients waiting for or linked to a server and the servers linked to a client.
    ActiveSockets,
}

const COLUMNS: [(&str, Type); 21] = [
    ("type", Type::Text),
    ("user", Type::Text),
    ("database", Type::Text),
    ("replication", Type::Text),
    ("state", Type::Text),
    ("addr", Type::Text),
    ("port", Type::Int4),
    ("local_addr", Type::Text),
    ("local_port", Type::Int4),
    ("connect_time", Type::Text),
    ("request_time", Type::Text),
    ("wait", Type::Int4),
    ("wait_us", Type::Int4),
    ("close_needed", Type::Int4),
    ("ptr", Type::Text),
    ("link", Type::Text),
    ("remote_pid", Type::Int4),
    ("tls", Type::Text),
    ("application_name", Type::Text),
    ("prepared_statements", Type::Int4),
    ("id", Type::Int4),
];

const DEBUG_COLUMNS: [(&str, Type); 7] = [
    ("recv_pos", Type::Int4),
    ("pkt_pos", Type::Int4),
    ("pkt_remain", Type::Int4),
    ("send_pos", Type::Int4),
    ("send_remain", Type::Int4),
    ("pkt_avail", Type::Int4),
    ("send_avail", Type::Int4),
];

/// The clients of one pool (`None`: the console's own), by id.
type ClientGroup<'a> = (Option<&'a Arc<Pool>>, Vec<Arc<ClientRecord>>);

pub fn show(state: &State, runtime: &Runtime, which: Listing) -> ResultSet {
    let debug = matches!(which, Listing::Sockets | Listing::ActiveSockets);
    let mut columns: Vec<(&'static str, Type)> = COLUMNS.to_vec();
    if debug {
        columns.extend(DEBUG_COLUMNS);
    }
    let mut r = ResultSet::new(&columns);
    let listen_port = runtime.config.settings.listen_port;
    let pools = state.pools.all();
    let consoles = state.console.live.snapshot();
    let clients: Vec<ClientGroup<'_>> = std::iter::once((None, consoles))
        .chain(pools.iter().map(|p| (Some(p), p.live_clients.snapshot())))
        .collect();
    let want_clients = which != Listing::Servers;
    let want_servers = which != Listing::Clients;
    // A server's application_name is its client's.
    let apps: HashMap<usize, Arc<str>> = clients
        .iter()
        .flat_map(|(_, cs)| cs.iter())
        .map(|c| (c.ptr(), c.application_name()))
        .collect();
    for (pool, records) in &clients {
        if want_clients {
            // PgBouncer's order: the active list (linked or idle), the waiting one, then the cancel requests
            // being forwarded (SHOW CLIENTS only: PgBouncer's SOCKETS lists leave them out).
            for group in [
                ClientState::Active,
                ClientState::Waiting,
                ClientState::CancelActive,
                ClientState::CancelWaiting,
            ] {
                if which != Listing::Clients
                    && matches!(
                        group,
                        ClientState::CancelActive | ClientState::CancelWaiting
                    )
                {
                    continue;
                }
                for c in records.iter().filter(|c| list_of(c.state()) == group) {
                    if which == Listing::ActiveSockets && c.state() == ClientState::Idle {
                        continue;
                    }
                    r.push(client_row(c, which, listen_port, debug));
                }
            }
        }
        if let (true, Some(pool)) = (want_servers, pool) {
            server_rows(&mut r, pool, which, &apps, debug);
        }
    }
    r
}

/// How many cancel requests for `pool`'s clients are being forwarded: (sent, not sent yet).
pub fn cancel_requests(pool: &Pool) -> (u32, u32) {
    let (mut active, mut waiting) = (0, 0);
    for c in pool.live_clients.snapshot() {
        match c.state() {
            ClientState::CancelActive => active += 1,
            ClientState::CancelWaiting => waiting += 1,
            _ => {}
        }
    }
    (active, waiting)
}

/// Which of PgBouncer's client lists a client in `state` is on (idle ones are on the active list).
fn list_of(state: ClientState) -> ClientState {
    match state {
        ClientState::Idle => ClientState::Active,
        other => other,
    }
}

fn client_row(c: &Arc<ClientRecord>, which: Listing, listen_port: u16, debug: bool) -> Vec<Cell> {
    let linked = c.linked() != 0;
    let state = match (c.state(), which) {
        (ClientState::CancelActive, _) => "active_cancel_req",
        (ClientState::CancelWaiting, _) => "waiting_cancel_req",
        (ClientState::Waiting, Listing::Clients) => "waiting",
        (ClientState::Waiting, _) => "cl_waiting",
        // PgBouncer prints a client of its active list that holds no server as idle.
        (_, Listing::Clients) if linked => "active",
        (_, Listing::Clients) => "idle",
        _ => "cl_active",
    };
    let (addr, port) = peer_text(c.peer(), listen_port);
    let (local_addr, local_port) = match c.local() {
        Some(a) => (a.ip().to_string(), a.port()),
        None => ("unix".to_owned(), listen_port),
    };
    let wait = c.waited();
    let mut row = row![
        "C",
        c.user(),
        c.database(),
        "none",
        state,
        addr,
        port,
        local_addr,
        local_port,
        time_text(c.connect_time()),
        time_text(c.request_time()),
        wait.as_secs(),
        wait.subsec_micros(),
        0u32,
        ptr_text(c.ptr()),
        ptr_text(c.linked()),
        c.unix_pid,
        "",
        &*c.application_name(),
        c.prepared(),
        c.id,
    ];
    if debug {
        row.extend(std::iter::repeat_n(Cell::from(0u32), DEBUG_COLUMNS.len()));
    }
    row
}

/// What SHOW SERVERS calls a server's state, PgBouncer's names.
fn server_state(s: &ServerRecord, pool: &Pool) -> ServerState2 {
    match s.state() {
        ServerState::Active if s.linked() != 0 => ServerState2::Active,
        // Being cleaned up after a client: PgBouncer prints a server of its active list without a link as idle.
        ServerState::Active => ServerState2::Idle,
        ServerState::Tested => ServerState2::Tested,
        ServerState::Idle => {
            let settings = pool.settings();
            if settings.server_check_query.is_some() && s.idle_for() >= settings.server_check_delay
            {
                ServerState2::Used
            } else {
                ServerState2::Idle
            }
        }
    }
}

/// A server's state as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState2 {
    Active,
    Idle,
    Used,
    Tested,
}

fn server_rows(
    r: &mut ResultSet,
    pool: &Pool,
    which: Listing,
    apps: &HashMap<usize, Arc<str>>,
    debug: bool,
) {
    let servers = pool.live_servers.snapshot();
    let epoch = pool.epoch();
    let states: Vec<ServerState2> = servers.iter().map(|s| server_state(s, pool)).collect();
    for group in [
        ServerState2::Active,
        ServerState2::Idle,
        ServerState2::Used,
        ServerState2::Tested,
    ] {
        for (s, _) in servers.iter().zip(&states).filter(|(_, st)| **st == group) {
            if which == Listing::ActiveSockets && group != ServerState2::Active {
                continue;
            }
            let state = match (group, which) {
                (ServerState2::Active, Listing::Servers) => "active",
                (ServerState2::Idle, Listing::Servers) => "idle",
                (ServerState2::Used, Listing::Servers) => "used",
                (ServerState2::Tested, Listing::Servers) => "tested",
                (ServerState2::Active, _) => "sv_active",
                (ServerState2::Idle, _) => "sv_idle",
                (ServerState2::Used, _) => "sv_used",
                (ServerState2::Tested, _) => "sv_tested",
            };
            let (local_addr, local_port) = match s.local {
                Some(a) => (a.ip().to_string(), a.port()),
                None => ("unix".to_owned(), 0),
            };
            let mut row = row![
                "S",
                s.user.as_str(),
                s.database.as_str(),
                "none",
                state,
                s.addr.as_str(),
                s.port,
                local_addr,
                local_port,
                time_text(s.connect_time()),
                time_text(s.request_time()),
                0u32,
                0u32,
                u32::from(s.epoch() != epoch),
                ptr_text(s.ptr()),
                ptr_text(s.linked()),
                s.remote_pid,
                "",
                apps.get(&s.linked()).map_or("", |a| &**a),
                s.prepared(),
                s.id,
            ];
            if debug {
                row.extend(std::iter::repeat_n(Cell::from(0u32), DEBUG_COLUMNS.len()));
            }
            r.push(row);
        }
    }
}

fn peer_text(peer: Peer, listen_port: u16) -> (String, u16) {
    match peer {
        Peer::Tcp(a) => (a.ip().to_string(), a.port()),
        Peer::Unix => ("unix".to_owned(), listen_port),
        Peer::Unknown => (String::new(), 0),
    }
}

/// A pool's servers by PgBouncer's state, for SHOW POOLS: (used, tested), both counted in the pool's idle
/// and in-use figures.
pub fn used_and_tested(pool: &Pool) -> (u32, u32) {
    let mut used = 0;
    let mut tested = 0;
    for s in pool.live_servers.snapshot() {
        match server_state(&s, pool) {
            ServerState2::Used => used += 1,
            ServerState2::Tested => tested += 1,
            _ => {}
        }
    }
    (used, tested)
}
