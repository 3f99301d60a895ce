//! The admin console: the virtual database `pgbouncer` (also `pgwarden`), served by pgwarden itself.
//!
//! Who may use it is PgBouncer's rule: users in `admin_users` run everything, users in `stats_users` run
//! `SHOW` only (with `auth_type = any` every user gets in as a stats user), and the user `pgbouncer` coming
//! over the Unix socket from pgwarden's own OS user gets in as an admin without a password. Everyone else
//! logs in with the same authentication as any other client.
//!
//! Layout: `command` (the grammar), `result` (result sets on the wire), `show` (the SHOW commands),
//! `stats` (SHOW STATS and friends, the averaging window), `sockets` (SHOW CLIENTS, SERVERS, SOCKETS),
//! `inventory` (SHOW MEM, SHOW PLUGINS), `control` (SET, RELOAD, PAUSE, RESUME, SUSPEND, SHUTDOWN),
//! `manage` (KILL, KILL_CLIENT, RECONNECT, DISABLE, ENABLE, WAIT_CLOSE), `extended` (the extended query
//! protocol, for drivers that use nothing else).

mod command;
mod control;
mod extended;
mod inventory;
mod manage;
pub(crate) mod result;
mod show;
mod sockets;
mod stats;

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;

pub use command::{Command, ParseError, parse};
pub use stats::{StatsWindow, rotate_window};

use crate::cancel::CancelHandle;
use crate::client::{ClientConn, ClientInfo, End};
use crate::config::{AuthType, RESERVED_DATABASE_NAMES, Settings};
use crate::conns::{ClientRecord, ConsoleCancel, Registered, Registry, RegistryRef};
use crate::net::Stream;
use crate::protocol::PROTOCOL_VIOLATION;
use crate::protocol::backend::{self, ErrorFields, Severity, TransactionStatus};
use crate::protocol::frontend::{self, tag};
use crate::state::{CountKind, Runtime, State};

/// What SHOW VERSION answers: the first line of `pgwarden --version`.
pub const VERSION: &str = concat!("pgwarden ", env!("CARGO_PKG_VERSION"));

/// The database and user names of the console's own row in SHOW DATABASES, POOLS and STATS.
pub const CONSOLE_NAME: &str = "pgbouncer";

/// What the console's own clients did, for its rows in SHOW POOLS and SHOW STATS.
#[derive(Debug, Default)]
pub struct ConsoleStats {
    /// Console clients connected now.
    pub clients: AtomicU32,
    pub logins: AtomicU64,
    /// Commands run; each counts as one transaction and one query, as in PgBouncer.
    pub commands: AtomicU64,
    /// SHOW STATS' averaging window (rotated every stats_period).
    pub window: StatsWindow,
    /// The console's own clients, for SHOW CLIENTS and KILL_CLIENT.
    pub live: Arc<Registry<ClientRecord>>,
    /// What a cancel request with a console client's key wakes, by client id (kept here, not in every
    /// client's record).
    pub interrupts: Arc<Registry<ConsoleCancel>>,
    /// DISABLE db: databases that refuse new clients until ENABLE db.
    pub disabled: Mutex<HashSet<String>>,
    /// Databases paused by KILL (a RESUME without a database resumes them too).
    pub killed: Mutex<HashSet<String>>,
    /// SUSPEND is in effect.
    pub suspended: AtomicBool,
}

/// Whether DISABLE holds `database`.
pub fn is_disabled(state: &State, database: &str) -> bool {
    lock(&state.console.disabled).contains(database)
}

/// A cancel request with a console client's key: interrupts the command it is waiting on (PAUSE,
/// WAIT_CLOSE, KILL), as ^C in psql does in PgBouncer.
pub fn cancel_request(state: &State, pid: u32, secret: u32) {
    for console in state.console.interrupts.snapshot() {
        if console.key == (pid, secret) {
            console.cancelled.notify_waiters();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every command (admin_users, or the trusted `pgbouncer` over the Unix socket).
    Admin,
    /// SHOW only (stats_users; anyone with auth_type = any).
    Stats,
}

/// Whether a client asking for `database` wants the console.
pub fn is_console(database: &str) -> bool {
    RESERVED_DATABASE_NAMES.contains(&database)
}

/// PgBouncer's password-less admin: the user `pgbouncer` on the Unix socket, run by pgwarden's own OS user.
pub fn trusted_peer(user: &str, stream: &Stream) -> bool {
    user == "pgbouncer" && stream.peer_uid() == Some(nix::unistd::getuid().as_raw())
}

/// Which access `user` gets, decided before any password exchange (PgBouncer's order); an error for a user
/// who may not use the console.
pub fn access(settings: &Settings, user: &str, trusted: bool) -> Result<Access, End> {
    let listed = |list: &[String]| list.iter().any(|u| u == user);
    if trusted || listed(&settings.admin_users) {
        Ok(Access::Admin)
    } else if listed(&settings.stats_users) || settings.auth_type == AuthType::Any {
        Ok(Access::Stats)
    } else {
        Err(End::pooler("not allowed"))
    }
}

/// A logged-in console client.
pub struct Console {
    state: Arc<State>,
    access: Access,
    user: String,
    info: Arc<ClientInfo>,
    /// Its record among the console's live clients (SHOW CLIENTS, KILL_CLIENT).
    live: Registered<ClientRecord>,
    /// Its cancel key, reserved among every client's so a cancel request finds this console.
    cancel: CancelHandle,
    /// What a cancel request with this session's key wakes (listed among the console's interrupts).
    interrupt: Registered<ConsoleCancel>,
    /// This client issued the SUSPEND in effect: if it leaves, the pooler resumes (PgBouncer's rule).
    suspended_here: AtomicBool,
    /// Client counts held while connected (max_client_conn, max_db_client_connections,
    /// max_user_client_connections).
    _guards: Vec<Guard>,
}

impl Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("user", &self.user)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console session for a client that passed [`access`] and authentication.
    pub fn new(
        state: &Arc<State>,
        access: Access,
        user: String,
        info: Arc<ClientInfo>,
        guards: Vec<Guard>,
    ) -> Self {
        state.console.clients.fetch_add(1, Ordering::AcqRel);
        state.console.logins.fetch_add(1, Ordering::Relaxed);
        let cancel = state.cancels.register(&info);
        let key = cancel.key();
        let interrupt = Registered::new(
            ConsoleCancel::new(key),
            info.id,
            RegistryRef::Shared(Arc::clone(&state.console.interrupts)),
        );
        info.list_as(CONSOLE_NAME.into(), "");
        let live = Registered::client(
            Arc::clone(&info),
            info.id,
            RegistryRef::Shared(Arc::clone(&state.console.live)),
            &state.lifecycle,
        );
        Self {
            state: Arc::clone(state),
            access,
            user,
            info,
            live,
            cancel,
            interrupt,
            suspended_here: AtomicBool::new(false),
            _guards: guards,
        }
    }

    /// AuthenticationOk, the parameters PgBouncer's console reports, a cancel key, ReadyForQuery.
    pub fn welcome(&self, conn: &mut ClientConn) {
        conn.send(backend::write_auth_ok);
        let version = format!("{}/pgwarden", env!("CARGO_PKG_VERSION"));
        for (name, value) in [
            ("server_version", version.as_str()),
            ("client_encoding", "UTF8"),
            ("server_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("TimeZone", "GMT"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "on"),
        ] {
            conn.send(|b| backend::write_parameter_status(b, name, value));
        }
        // A cancel request with this key interrupts a waiting command (PAUSE, WAIT_CLOSE).
        let (pid, secret) = self.cancel.key();
        conn.send(|b| backend::write_backend_key_data(b, pid, secret));
        conn.send(|b| backend::write_ready_for_query(b, TransactionStatus::Idle));
    }

    /// Serves queries until the client leaves or the process stops.
    pub async fn run(self, conn: &mut ClientConn) -> End {
        let record = Arc::clone(&self.live.record);
        let mut ext = extended::Extended::default();
        loop {
            let max = self.state.runtime().config.settings.max_packet_size;
            let frame = tokio::select! {
                biased;
                // Immediate shutdown (SIGQUIT, SHUTDOWN), KILL_CLIENT.
                () = record.until_killed() => return self.killed_end(),
                // The next message.
                f = conn.read_frame(max) => f,
            };
            let frame = match frame {
                Ok(Some(f)) => f,
                Ok(None) => return End::Closed("client unexpected eof".into()),
                Err(end) => return end,
            };
            match frame.tag {
                tag::QUERY => {
                    let query = match frontend::parse_query(&frame.body) {
                        Ok(q) => q.to_owned(),
                        Err(e) => return End::pooler(e.to_string()),
                    };
                    crate::logging::conn_log!(debug, self.info.label(), "console query: {query}");
                    self.state.console.commands.fetch_add(1, Ordering::Relaxed);
                    let mut out = BytesMut::new();
                    if let Err(end) = self.run_command(conn, &query, &mut out).await {
                        return end;
                    }
                    conn.send(|b| b.extend_from_slice(&out));
                }
                tag::TERMINATE => return End::Closed("client close request".into()),
                tag::PARSE
                | tag::BIND
                | tag::DESCRIBE
                | tag::EXECUTE
                | tag::SYNC
                | tag::FLUSH
                | tag::CLOSE => {
                    if let Err(end) = self.extended(&mut ext, conn, &frame).await {
                        return end;
                    }
                }
                other => {
                    let message = format!(
                        "unsupported packet type for admin console: {}",
                        char::from(other)
                    );
                    conn.send(|b| error(b, &message, None));
                    return End::pooler("bad packet");
                }
            }
            if let Err(end) = conn.flush().await {
                return end;
            }
        }
    }

    /// How this session ends once KILL_CLIENT (the client is told why) or an immediate shutdown (the
    /// connection just closes) cancelled it.
    fn killed_end(&self) -> End {
        match self.live.record.kill_reason() {
            Some(reason) => End::pooler(reason),
            None => End::Closed("server shutting down".into()),
        }
    }

    /// Runs one query as [`Console::execute`] does, while watching the client: a cancel request stops a
    /// waiting command (which undoes what it started: a PAUSE that never completed resumes), and so does
    /// the client going away (then the session ends). `Err` ends the session.
    async fn run_command(
        &self,
        conn: &mut ClientConn,
        query: &str,
        out: &mut BytesMut,
    ) -> Result<(), End> {
        let record = Arc::clone(&self.live.record);
        let cancelled = self.interrupt.record.cancelled.notified();
        tokio::pin!(cancelled);
        // Registered now, so a cancel sent while the command runs is not missed.
        cancelled.as_mut().enable();
        let mut work = Box::pin(self.execute(query, out));
        let stopped = tokio::select! {
            biased;
            // The command finished (or ends the session: SHUTDOWN).
            end = &mut work => return end.map_or(Ok(()), Err),
            // Immediate shutdown, KILL_CLIENT.
            () = record.until_killed() => Err(self.killed_end()),
            // psql's ^C.
            () = &mut cancelled => Ok(()),
            // The client left: nobody waits for the answer.
            reason = until_gone(conn) => Err(End::Closed(reason)),
        };
        drop(work);
        stopped?;
        error_with_code(
            out,
            "57014",
            "canceling statement due to user request",
            None,
        );
        Ok(())
    }

    /// Runs one query, writing the whole answer (ending in ReadyForQuery) to `out`; `Some` to end the
    /// session instead (SHUTDOWN).
    async fn execute(&self, query: &str, out: &mut BytesMut) -> Option<End> {
        let command = match parse(query) {
            Ok(c) => c,
            Err(ParseError::Syntax) => {
                syntax_error(out, query);
                return None;
            }
            Err(ParseError::BadArguments) => {
                error(out, "bad arguments", None);
                return None;
            }
        };
        let runtime = self.state.runtime();
        match command {
            Command::Set { key, value } => {
                control::set(&self.state, self.access, &key, &value, out).await;
            }
            Command::Plain { name, arg } => match name.as_str() {
                "show" | "select" => show::show(&self.state, &runtime, &arg, query, out),
                "reload" | "pause" | "resume" | "shutdown" | "suspend" => {
                    let cmd = control::Cmd {
                        name: &name,
                        arg: &arg,
                        query,
                        timeout: None,
                    };
                    return control::run(self, &cmd, out).await;
                }
                "disable" | "enable" | "kill" | "kill_client" | "reconnect" | "wait_close" => {
                    manage::run(&self.state, self.access, &name, &arg, None, out).await;
                }
                _ => syntax_error(out, query),
            },
            Command::Timed { name, arg, timeout } => match name.as_str() {
                "pause" => {
                    let cmd = control::Cmd {
                        name: &name,
                        arg: &arg,
                        query,
                        timeout: Some(timeout),
                    };
                    return control::run(self, &cmd, out).await;
                }
                "wait_close" => {
                    manage::run(&self.state, self.access, &name, &arg, Some(timeout), out).await;
                }
                _ => syntax_error(out, query),
            },
        }
        None
    }
}

/// Reads whatever the client sends while a command runs (it is handled afterwards), until it goes away.
async fn until_gone(conn: &mut ClientConn) -> String {
    use tokio::io::AsyncReadExt;
    loop {
        // A client that keeps sending while it waits is not read without end.
        if conn.rbuf.len() > 64 * 1024 {
            return std::future::pending().await;
        }
        conn.rbuf.reserve(1024);
        match conn.stream.read_buf(&mut conn.rbuf).await {
            Ok(0) => return "client unexpected eof".into(),
            Ok(_) => {}
            Err(e) => return format!("client read error: {e}"),
        }
    }
}

/// PgBouncer's answer to a query outside the grammar or an unknown command.
fn syntax_error(out: &mut BytesMut, query: &str) {
    error(
        out,
        &format!("invalid command '{query}', use SHOW HELP;"),
        None,
    );
}

/// A console error: ERROR with SQLSTATE 08P01 (PgBouncer's), then ReadyForQuery; the session goes on.
fn error(out: &mut BytesMut, message: &str, detail: Option<String>) {
    error_with_code(out, PROTOCOL_VIOLATION, message, detail);
}

fn error_with_code(out: &mut BytesMut, code: &str, message: &str, detail: Option<String>) {
    let fields = ErrorFields {
        severity: Severity::Error.as_str().to_owned(),
        code: code.to_owned(),
        message: message.to_owned(),
        detail,
        hint: None,
    };
    backend::write_error_fields(out, backend::tag::ERROR_RESPONSE, &fields);
    ready(out);
}

fn ready(out: &mut BytesMut) {
    backend::write_ready_for_query(out, TransactionStatus::Idle);
}

/// CommandComplete `tag` and ReadyForQuery.
fn complete(out: &mut BytesMut, command_tag: &str) {
    backend::write_command_complete(out, command_tag);
    ready(out);
}

/// Logs a client in to the console: access first, then the same password exchange as any client (none for
/// the trusted Unix-socket admin or with auth_type = any).
pub async fn login(
    state: &Arc<State>,
    runtime: &Runtime,
    conn: &mut ClientConn,
    info: &Arc<ClientInfo>,
    user: &str,
    total: Guard,
) -> Result<Console, End> {
    let settings = &runtime.config.settings;
    let trusted = trusted_peer(user, &conn.stream);
    let access = access(settings, user, trusted)?;
    let guards = vec![total, count_client(state, runtime, user, access)?];
    if trusted {
        if settings.log_connections {
            crate::logging::conn_log!(info, info.label(), "pgbouncer access from unix socket");
        }
    } else if settings.auth_type != AuthType::Any {
        crate::client::authenticate_user(conn, runtime, user).await?;
    }
    let console = Console::new(state, access, user.to_owned(), Arc::clone(info), guards);
    console.welcome(conn);
    conn.flush().await?;
    Ok(console)
}

/// Anything a console client holds while connected.
pub type Guard = Box<dyn Debug + Send + Sync>;

/// Counts a console client against max_db_client_connections (the console's database) and the user's
/// max_user_client_connections; admins are counted but never refused (PgBouncer's rule).
fn count_client(
    state: &State,
    runtime: &Runtime,
    user: &str,
    access: Access,
) -> Result<Guard, End> {
    let settings = &runtime.config.settings;
    let limit = |max: u32| if access == Access::Admin { 0 } else { max };
    let db = state
        .clients
        .try_add(
            CountKind::Database,
            CONSOLE_NAME,
            limit(settings.max_db_client_connections),
        )
        .ok_or_else(|| End::pooler("client connections exceeded (max_db_client_connections)"))?;
    let max_user = runtime
        .config
        .users
        .get(user)
        .and_then(|u| u.max_user_client_connections)
        .unwrap_or(settings.max_user_client_connections);
    let user = state
        .clients
        .try_add(CountKind::User, user, limit(max_user))
        .ok_or_else(|| End::pooler("client connections exceeded (max_user_client_connections)"))?;
    Ok(Box::new((db, user)))
}

impl Drop for Console {
    fn drop(&mut self) {
        self.state.console.clients.fetch_sub(1, Ordering::AcqRel);
        if self.suspended_here.load(Ordering::Acquire)
            && self.state.console.suspended.load(Ordering::Acquire)
        {
            tracing::info!(
                "{}: admin disappeared when suspended, doing RESUME",
                self.info
            );
            control::end_suspend(&self.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_gets_in() {
        let mut s = Settings {
            admin_users: vec!["boss".into()],
            stats_users: vec!["watcher".into()],
            auth_type: AuthType::Md5,
            ..Settings::default()
        };
        assert_eq!(access(&s, "boss", false).ok(), Some(Access::Admin));
        assert_eq!(access(&s, "watcher", false).ok(), Some(Access::Stats));
        assert_eq!(access(&s, "pgbouncer", true).ok(), Some(Access::Admin));
        match access(&s, "pgbouncer", false) {
            Err(End::Fatal { code, message, .. }) => {
                assert_eq!(code, PROTOCOL_VIOLATION);
                assert_eq!(message, "not allowed");
            }
            other => panic!("{other:?}"),
        }
        s.auth_type = AuthType::Any;
        assert_eq!(access(&s, "anyone", false).ok(), Some(Access::Stats));
        assert_eq!(access(&s, "boss", false).ok(), Some(Access::Admin));
    }

    #[test]
    fn errors_keep_the_session() {
        let mut out = BytesMut::new();
        syntax_error(&mut out, "SHOW nothing");
        let e = crate::protocol::frame::split(&mut out, u32::MAX)
            .expect("frame")
            .expect("whole");
        let fields = ErrorFields::parse(&e.body).expect("error fields");
        assert_eq!(fields.severity, "ERROR");
        assert_eq!(fields.code, "08P01");
        assert_eq!(
            fields.message,
            "invalid command 'SHOW nothing', use SHOW HELP;"
        );
        let z = crate::protocol::frame::split(&mut out, u32::MAX)
            .expect("frame")
            .expect("whole");
        assert_eq!(z.tag, backend::tag::READY_FOR_QUERY);
    }
}
