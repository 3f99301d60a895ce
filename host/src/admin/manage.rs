//! The commands that act on connections (admin users only): KILL, KILL_CLIENT, RECONNECT, DISABLE, ENABLE,
//! WAIT_CLOSE, with PgBouncer's errors.
//!
//! KILL and KILL_CLIENT answer once the clients they end are gone (so a SHOW CLIENTS right after no longer
//! lists them), waiting at most [`GONE_WAIT`]. WAIT_CLOSE waits as PgBouncer's does, for ever unless given
//! pgwarden's `TIMEOUT n`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::control::database_exists;
use super::{Access, complete, error, error_with_code, is_console, lock};
use crate::conns::ClientRecord;
use crate::pool::Pool;
use crate::state::State;

/// How long KILL and KILL_CLIENT wait for the clients they end to be gone.
const GONE_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting command looks again.
const POLL: Duration = Duration::from_millis(20);

const ADMIN_NEEDED: &str = "admin access needed";

pub async fn run(
    state: &State,
    access: Access,
    name: &str,
    arg: &str,
    timeout: Option<Duration>,
    out: &mut BytesMut,
) {
    if access != Access::Admin {
        return error(out, ADMIN_NEEDED, None);
    }
    match name {
        "kill" => kill(state, arg, out).await,
        "kill_client" => kill_client(state, arg, out).await,
        "reconnect" => reconnect(state, arg, out),
        "disable" | "enable" => disable(state, name == "disable", arg, out),
        "wait_close" => wait_close(state, arg, timeout, out).await,
        _ => super::syntax_error(out, name),
    }
}

/// The pools of database `db` (every pool for an empty name).
fn pools_of(state: &State, db: &str) -> Vec<Arc<Pool>> {
    state
        .pools
        .all()
        .into_iter()
        .filter(|p| db.is_empty() || *p.key.database == *db)
        .collect()
}

/// Checks a database argument as PgBouncer does: it must exist and not be the console's.
fn check_database(state: &State, db: &str, verb: &str, out: &mut BytesMut) -> bool {
    if is_console(db) {
        error(out, &format!("cannot {verb} admin db: {db}"), None);
        return false;
    }
    if !database_exists(state, db) {
        error(out, &format!("no such database: {db}"), None);
        return false;
    }
    true
}

/// KILL [db]: ends every client of the database (or of all), closes its servers, and pauses it until
/// RESUME.
async fn kill(state: &State, db: &str, out: &mut BytesMut) {
    if state.lifecycle.is_paused() {
        return error(out, "already suspended/paused", None);
    }
    let databases: Vec<String> = if db.is_empty() {
        tracing::info!("KILL command issued");
        let mut all: Vec<String> = state
            .pools
            .all()
            .iter()
            .map(|p| p.key.database.to_string())
            .collect();
        all.dedup();
        all
    } else {
        tracing::info!("KILL '{db}' command issued");
        if !check_database(state, db, "kill", out) {
            return;
        }
        vec![db.to_owned()]
    };
    let mut victims = Vec::new();
    for name in &databases {
        // Paused first: no server is handed out or opened any more, idle ones close.
        state.set_database_paused(name, true);
        lock(&state.console.killed).insert(name.clone());
        for pool in pools_of(state, name) {
            for client in pool.live_clients.snapshot() {
                client.kill("database removed");
                victims.push((Arc::clone(&pool), client));
            }
        }
    }
    wait_gone(&victims).await;
    complete(out, "KILL");
}

/// KILL_CLIENT id: ends one client (of a pool or of the console), as PgBouncer does, and its server
/// connection if it is mid-transaction.
async fn kill_client(state: &State, arg: &str, out: &mut BytesMut) {
    let Ok(id) = arg.trim().parse::<u64>() else {
        return error(out, "invalid client pointer supplied", None);
    };
    let found = state
        .pools
        .all()
        .into_iter()
        .find_map(|p| p.live_clients.get(id))
        .or_else(|| state.console.live.get(id));
    let Some(client) = found else {
        return error(out, "client not found", None);
    };
    tracing::info!("KILL_CLIENT {id} command issued");
    client.kill("admin forced disconnect");
    let deadline = tokio::time::Instant::now() + GONE_WAIT;
    // The console's own client (killing itself) is not waited for: its answer would never come.
    let console = client.database() == super::CONSOLE_NAME;
    while !console && is_registered(state, &client) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    complete(out, "KILL_CLIENT");
}

fn is_registered(state: &State, client: &ClientRecord) -> bool {
    state
        .pools
        .all()
        .iter()
        .any(|p| p.live_clients.contains(client.id))
}

/// Waits (bounded) until every killed client has left its pool.
async fn wait_gone(victims: &[(Arc<Pool>, Arc<ClientRecord>)]) {
    let deadline = tokio::time::Instant::now() + GONE_WAIT;
    while victims
        .iter()
        .any(|(pool, c)| pool.live_clients.contains(c.id))
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(POLL).await;
    }
}

/// RECONNECT [db]: every server of the database (or of all) closes at its next release, idle ones now.
fn reconnect(state: &State, db: &str, out: &mut BytesMut) {
    if db.is_empty() {
        tracing::info!("RECONNECT command issued");
    } else {
        tracing::info!("RECONNECT '{db}' command issued");
        if !check_database(state, db, "reconnect", out) {
            return;
        }
    }
    for pool in pools_of(state, db) {
        pool.reconnect();
    }
    complete(out, "RECONNECT");
}

/// DISABLE db / ENABLE db: new clients of the database are refused (`database "db" is disabled`) or let in
/// again; connected ones are not touched.
fn disable(state: &State, on: bool, db: &str, out: &mut BytesMut) {
    if db.is_empty() {
        return error(out, "a database is required", None);
    }
    let verb = if on { "disable" } else { "enable" };
    tracing::info!("{} '{db}' command issued", verb.to_uppercase());
    if !check_database(state, db, verb, out) {
        return;
    }
    let mut disabled = lock(&state.console.disabled);
    if on {
        disabled.insert(db.to_owned());
    } else {
        disabled.remove(db);
    }
    drop(disabled);
    complete(out, &verb.to_uppercase());
}

/// Servers of `db` (or of all) opened under an older configuration epoch (SHOW SERVERS' close_needed).
fn close_needed(state: &State, db: &str) -> usize {
    pools_of(state, db)
        .iter()
        .map(|p| {
            let epoch = p.epoch();
            p.live_servers
                .snapshot()
                .iter()
                .filter(|s| s.epoch() != epoch)
                .count()
        })
        .sum()
}

/// WAIT_CLOSE [db] [TIMEOUT n]: answers once no server of the database (or of all) is waiting to be closed
/// after a RECONNECT or a RELOAD that changed its connection settings.
async fn wait_close(state: &State, db: &str, timeout: Option<Duration>, out: &mut BytesMut) {
    if db.is_empty() {
        tracing::info!("WAIT_CLOSE command issued");
    } else {
        tracing::info!("WAIT_CLOSE '{db}' command issued");
        if is_console(db) {
            return error(out, &format!("cannot wait in admin db: {db}"), None);
        }
        if !database_exists(state, db) {
            return error(out, &format!("no such database: {db}"), None);
        }
    }
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let terminate = state.lifecycle.terminate.clone();
    loop {
        let left = close_needed(state, db);
        if left == 0 {
            return complete(out, "WAIT_CLOSE");
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            let millis = timeout.unwrap_or_default().as_millis();
            let message = format!(
                "WAIT_CLOSE timed out after {millis} ms with {left} server connection(s) still to close"
            );
            return error_with_code(out, "57014", &message, None);
        }
        tokio::select! {
            // The process is going away: no answer to give.
            () = terminate.cancelled() => return,
            // Look again.
            () = tokio::time::sleep(POLL) => {}
        }
    }
}
