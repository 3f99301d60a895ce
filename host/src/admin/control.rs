//! The commands that change things (admin users only): SET, RELOAD, PAUSE, RESUME, SHUTDOWN.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;

use super::{Access, complete, error, error_with_code, show, syntax_error};
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

/// RELOAD, PAUSE, RESUME, SHUTDOWN. `Some` ends the session (SHUTDOWN with no mode).
pub async fn run(
    state: &Arc<State>,
    access: Access,
    name: &str,
    arg: &str,
    query: &str,
    out: &mut BytesMut,
) -> Option<End> {
    match name {
        "reload" => reload(state, access, arg, query, out).await,
        "pause" => pause(state, access, arg, out).await,
        "resume" => resume(state, access, arg, out),
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

/// PAUSE [db]: no server is handed out any more; answers once every server in use has come back (and
/// been closed).
async fn pause(state: &State, access: Access, db: &str, out: &mut BytesMut) {
    if access != Access::Admin {
        return error(out, ADMIN_NEEDED, None);
    }
    if state.lifecycle.is_paused() {
        return error(out, "already suspended/paused", None);
    }
    if db.is_empty() {
        tracing::info!("PAUSE command issued");
        state.set_paused(true);
    } else {
        tracing::info!("PAUSE '{db}' command issued");
        if super::is_console(db) {
            return error(out, &format!("cannot pause admin db: {db}"), None);
        }
        if !database_exists(state, db) {
            return error(out, &format!("no such database: {db}"), None);
        }
        state.set_database_paused(db, true);
    }
    let terminate = state.lifecycle.terminate.clone();
    loop {
        let busy: u32 = state
            .pools
            .all()
            .iter()
            .filter(|p| db.is_empty() || *p.key.database == *db)
            .map(|p| p.snapshot().in_use)
            .sum();
        if busy == 0 {
            break;
        }
        tokio::select! {
            // The process is going away: no answer to give.
            () = terminate.cancelled() => return,
            // Look again.
            () = tokio::time::sleep(PAUSE_POLL) => {}
        }
    }
    complete(out, "PAUSE");
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
        if !state.lifecycle.is_paused() {
            return error(out, "pooler is not paused/suspended", None);
        }
        state.set_paused(false);
    } else {
        tracing::info!("RESUME '{db}' command issued");
        if !database_exists(state, db) && !super::is_console(db) {
            return error(out, &format!("no such database: {db}"), None);
        }
        if !state.set_database_paused(db, false) {
            return error(out, &format!("database {db} is not paused"), None);
        }
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
    state.lifecycle.shutdown(mode);
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
fn database_exists(state: &State, db: &str) -> bool {
    state.runtime().config.database(db).is_some()
}
