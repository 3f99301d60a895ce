//! The commands that change things (admin users only): SET, RELOAD, PAUSE, RESUME, SUSPEND, SHUTDOWN.
//!
//! PAUSE waits as long as PgBouncer's does (for ever, if a transaction never ends) unless given pgwarden's
//! `TIMEOUT`; a PAUSE that does not complete (timed out, cancelled with a cancel request, or its client
//! gone) resumes what it paused, so the pooler is never left paused by a command nobody saw succeed.
//!
//! SUSPEND without online restart: no server is handed out any more (clients between transactions and new
//! clients wait, as under PAUSE), but no server is closed and transactions in flight go on; it answers at
//! once. RESUME ends it, and so does its client leaving (PgBouncer's rule).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;

use super::{Access, Console, complete, error, error_with_code, lock, show, syntax_error};
use crate::client::End;
use crate::config::{SetError, SetOutcome};
use crate::protocol::backend::{self, Severity};
use crate::state::{ShutdownMode, State};

/// How often PAUSE looks whether the servers have come back.
const PAUSE_POLL: Duration = Duration::from_millis(20);

const ADMIN_NEEDED: &str = "admin access needed";

/// `SET key = value`: the parameters drivers set are accepted and ignored; any other key is a
/// `[pgbouncer]` setting, changed in the running configuration as a reload would (until the next
/// reload re-reads the file).
pub async fn set(state: &State, access: Access, key: &str, value: &str, out: &mut BytesMut) {
    if show::is_fake_parameter(key) {
        backend::write_notice(out, Severity::Notice, "00000", "SET ignored");
        return complete(out, "SET");
    }
    if access != Access::Admin {
        return error(out, ADMIN_NEEDED, None);
    }
    let runtime = state.runtime();
    match runtime.config.with_setting(key, value) {
        Ok(SetOutcome::Changed { config, warnings }) => {
            for w in &warnings {
                tracing::warn!("SET {key}: {}", w.message);
            }
            if let Err(e) = crate::reload::install_config(state, *config).await {
                tracing::error!("SET {key} = {value} failed: {e}");
                return error(out, "SET failed", Some(e.to_string()));
            }
            tracing::info!("SET {key} = {value}");
            complete(out, &format!("SET {key}={value}"));
        }
        Ok(SetOutcome::Fixed) => {
            // PgBouncer accepts and ignores it; say why nothing changed.
            let notice = format!("{key} is read at start only; the new value needs a restart");
            backend::write_notice(out, Severity::Notice, "00000", &notice);
            complete(out, &format!("SET {key}={value}"));
        }
        Err(e) => {
            tracing::error!("SET {key} = {value} failed: {e}");
            let detail = match &e {
                SetError::Rejected(c) => c
                    .diagnostics
                    .iter()
                    .map(|d| d.message.clone())
                    .collect::<Vec<_>>()
                    .join("\n"),
                other => other.to_string(),
            };
            error(out, "SET failed", Some(detail));
        }
    }
}

/// A command of this module as parsed.
#[derive(Debug)]
pub struct Cmd<'a> {
    pub name: &'a str,
    pub arg: &'a str,
    pub query: &'a str,
    /// pgwarden's `TIMEOUT n` (PAUSE only).
    pub timeout: Option<Duration>,
}

/// RELOAD, PAUSE, RESUME, SUSPEND, SHUTDOWN. `Some` ends the session (SHUTDOWN with no mode).
pub async fn run(console: &Console, cmd: &Cmd<'_>, out: &mut BytesMut) -> Option<End> {
    let (state, access, arg, query) = (&console.state, console.access, cmd.arg, cmd.query);
    match cmd.name {
        "reload" => reload(state, access, arg, query, out).await,
        "pause" => pause(state, access, arg, cmd.timeout, out).await,
        "resume" => resume(state, access, arg, out),
        "suspend" => suspend(console, arg, query, out),
        "shutdown" => return shutdown(state, access, arg, query, out),
        _ => syntax_error(out, query),
    }
    None
}

async fn reload(state: &Arc<State>, access: Access, arg: &str, query: &str, out: &mut BytesMut) {
    if !arg.is_empty() {
        return syntax_error(out, query);
    }
    if access != Access::Admin {
        return error(out, ADMIN_NEEDED, None);
    }
    tracing::info!("RELOAD command issued");
    match crate::reload::reload(state).await {
        Ok(()) => complete(out, "RELOAD"),
        // PgBouncer's words and SQLSTATE (config_file_error); the DETAIL names the problems.
        Err(e) => error_with_code(
            out,
            "F0000",
            "RELOAD failed, see logs for additional details",
            Some(e.to_string()),
        ),
    }
}

/// PAUSE [db] [TIMEOUT n]: no server is handed out any more; answers once every server in use has come
/// back (and been closed). With a timeout, gives up after it, resumes, and says how many servers were
/// still in use.
async fn pause(
    state: &State,
    access: Access,
    db: &str,
    timeout: Option<Duration>,
    out: &mut BytesMut,
) {
    if access != Access::Admin {
        return error(out, ADMIN_NEEDED, None);
    }
    if state.lifecycle.is_paused() {
        return error(out, "already suspended/paused", None);
    }
    // Whether this command paused something (a database may already be paused on its own).
    let paused_here = if db.is_empty() {
        tracing::info!("PAUSE command issued");
        state.set_paused(true);
        true
    } else {
        tracing::info!("PAUSE '{db}' command issued");
        if super::is_console(db) {
            return error(out, &format!("cannot pause admin db: {db}"), None);
        }
        if !database_exists(state, db) {
            return error(out, &format!("no such database: {db}"), None);
        }
        state.set_database_paused(db, true)
    };
    // Until the PAUSE completes, dropping this (a cancel request, the client gone) resumes.
    let mut undo = UndoPause {
        state,
        db: (!db.is_empty()).then_some(db),
        armed: paused_here,
    };
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let terminate = state.lifecycle.terminate.clone();
    loop {
        let busy = busy_servers(state, db);
        if busy == 0 {
            break;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            drop(undo);
            let millis = timeout.unwrap_or_default().as_millis();
            let message = format!(
                "PAUSE timed out after {millis} ms with {busy} server connection(s) still in use; resumed"
            );
            tracing::warn!("{message}");
            return error_with_code(out, "57014", &message, None);
        }
        tokio::select! {
            // The process is going away: no answer to give.
            () = terminate.cancelled() => return,
            // Look again.
            () = tokio::time::sleep(PAUSE_POLL) => {}
        }
    }
    undo.armed = false;
    complete(out, "PAUSE");
}

/// Servers handed out (linked to clients or being cleaned up) in the pools of `db`, or of all.
fn busy_servers(state: &State, db: &str) -> u32 {
    state
        .pools
        .all()
        .iter()
        .filter(|p| db.is_empty() || *p.key.database == *db)
        .map(|p| p.snapshot().in_use)
        .sum()
}

/// Resumes what a PAUSE paused unless the PAUSE completed.
struct UndoPause<'a> {
    state: &'a State,
    db: Option<&'a str>,
    armed: bool,
}

impl Drop for UndoPause<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        match self.db {
            None => {
                tracing::info!("PAUSE did not complete: resuming");
                self.state.set_paused(false);
            }
            Some(db) => {
                tracing::info!("PAUSE '{db}' did not complete: resuming it");
                self.state.set_database_paused(db, false);
            }
        }
    }
}

/// SUSPEND: hold clients between transactions and new ones, keep every server (see the module's doc).
fn suspend(console: &Console, arg: &str, query: &str, out: &mut BytesMut) {
    let state = &console.state;
    if !arg.is_empty() {
        return syntax_error(out, query);
    }
    if console.access != Access::Admin {
        return error(out, ADMIN_NEEDED, None);
    }
    if state.lifecycle.is_paused() {
        return error(out, "already suspended/paused", None);
    }
    if state
        .pools
        .all()
        .iter()
        .any(|p| state.pools.is_database_paused(&p.key.database))
    {
        return error(out, "cannot suspend with paused databases", None);
    }
    tracing::info!("SUSPEND command issued");
    state.console.suspended.store(true, Ordering::Release);
    state.hold_clients(true);
    console.suspended_here.store(true, Ordering::Release);
    complete(out, "SUSPEND");
}

/// Ends a SUSPEND.
pub fn end_suspend(state: &State) {
    state.console.suspended.store(false, Ordering::Release);
    state.hold_clients(false);
}

fn resume(state: &State, access: Access, db: &str, out: &mut BytesMut) {
    if access != Access::Admin {
        return error(out, ADMIN_NEEDED, None);
    }
    if db.is_empty() {
        tracing::info!("RESUME command issued");
        if state.lifecycle.shutdown_mode().is_some() {
            return error(out, "pooler is shutting down", None);
        }
        let killed: Vec<String> = lock(&state.console.killed).drain().collect();
        for db in &killed {
            state.set_database_paused(db, false);
        }
        if state.console.suspended.load(Ordering::Acquire) {
            end_suspend(state);
        } else if state.lifecycle.is_paused() {
            state.set_paused(false);
        } else if killed.is_empty() {
            return error(out, "pooler is not paused/suspended", None);
        }
    } else {
        tracing::info!("RESUME '{db}' command issued");
        if !database_exists(state, db) && !super::is_console(db) {
            return error(out, &format!("no such database: {db}"), None);
        }
        if !state.set_database_paused(db, false) {
            return error(out, &format!("database {db} is not paused"), None);
        }
        lock(&state.console.killed).remove(db);
    }
    complete(out, "RESUME");
}

fn shutdown(
    state: &State,
    access: Access,
    arg: &str,
    query: &str,
    out: &mut BytesMut,
) -> Option<End> {
    let mode = if arg.is_empty() {
        ShutdownMode::Immediate
    } else if arg.eq_ignore_ascii_case("wait_for_clients") {
        ShutdownMode::WaitForClients
    } else if arg.eq_ignore_ascii_case("wait_for_servers") {
        ShutdownMode::WaitForServers
    } else {
        syntax_error(out, query);
        return None;
    };
    if access != Access::Admin {
        error(out, ADMIN_NEEDED, None);
        return None;
    }
    tracing::info!("SHUTDOWN command issued ({mode:?})");
    state.shutdown(mode);
    match mode {
        // PgBouncer does not answer: the connection ends with the process.
        ShutdownMode::Immediate => Some(End::Closed("SHUTDOWN".into())),
        _ => {
            complete(out, "SHUTDOWN");
            None
        }
    }
}

/// A `[databases]` entry, or a name the `*` entry would serve.
pub fn database_exists(state: &State, db: &str) -> bool {
    state.runtime().config.database(db).is_some()
}
