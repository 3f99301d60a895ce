//! From accept to the first ReadyForQuery: the first packets, routing to a pool, authentication, limits
//! and the welcome.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::AsyncReadExt;

use super::hooks::{self, Routing};
use super::session::{ClientCounted, ClientTimeouts, PoolClient, Session};
use super::startup::{self as client_startup, ClientStartup};
use super::{ClientConn, ClientInfo, End, auth};
use crate::config::{AuthType, Database};
use crate::logging::conn_log;
use crate::metrics::ErrorKind;
use crate::params::{ParamValues, Tracked};
use crate::pool::{CheckoutError, KeyRef, Pool, PoolSettings};
use crate::protocol::backend::{self, TransactionStatus};
use crate::protocol::startup::{self, StartupMessage, StartupRequest};
use crate::state::{CountKind, Runtime, State};

/// A logged-in client: of a pool, or of the admin console.
pub enum LoggedIn {
    Pool(Box<Session>),
    Console(Box<crate::admin::Console>),
}

/// Logs the client in. `Ok(None)` for a CancelRequest connection (handled, nothing more to do).
pub async fn run(
    state: &Arc<State>,
    conn: &mut ClientConn,
    info: &Arc<ClientInfo>,
) -> Result<Option<LoggedIn>, End> {
    let total = ClientTotal::new(state);
    let timeout = state.runtime().config.settings.client_login_timeout;
    let login = login(state, conn, info, total);
    let res = if timeout.is_zero() {
        login.await
    } else {
        match tokio::time::timeout(timeout, login).await {
            Ok(res) => res,
            Err(_) => Err(End::pooler("client_login_timeout")),
        }
    };
    if let Err(end) = &res
        && info.has_names()
        && state.runtime().config.settings.log_connections
    {
        log_login_failed(info, end);
    }
    res
}

/// PgBouncer's `login failed: db=… user=…`, with the reason (also in the `closing because:` line).
fn log_login_failed(info: &ClientInfo, end: &End) {
    let label = info.label();
    conn_log!(
        info,
        label,
        "login failed: db={} user={}: {}",
        label.db,
        label.user,
        end.reason()
    );
}

async fn login(
    state: &Arc<State>,
    conn: &mut ClientConn,
    info: &Arc<ClientInfo>,
    total: ClientTotal,
) -> Result<Option<LoggedIn>, End> {
    let msg = match read_first(conn).await? {
        First::Cancel { pid, secret } => {
            let timeout = state.runtime().config.settings.cancel_wait_timeout;
            let from = crate::cancel::CancelFrom {
                record: info,
                lifecycle: &state.lifecycle,
            };
            if !state
                .cancels
                .forward(pid, secret, timeout, Some(&from))
                .await
            {
                // Perhaps a console client interrupting a command that waits (PAUSE, WAIT_CLOSE).
                crate::admin::cancel_request(state, pid, secret);
            }
            return Ok(None);
        }
        First::Startup(msg) => msg,
    };
    // One buffer for what the login sends (the password request, the welcome): each message then shares it.
    conn.local.reserve(LOGIN_OUT_SIZE);
    let runtime = state.runtime();
    let settings = &runtime.config.settings;
    if msg.minor > 0 || !msg.protocol_options.is_empty() {
        conn.send(|b| backend::write_negotiate_protocol_version(b, 0, &msg.protocol_options));
    }
    if total.position() > settings.max_client_conn {
        return Err(End::pooler("no more connections allowed (max_client_conn)"));
    }
    let startup =
        client_startup::process(&msg, &settings.ignore_startup_parameters, &state.tracked)
            .map_err(End::pooler)?;
    // Shared with the counts' keys: two allocations fewer in every client's record.
    info.set_shared_names(
        state
            .clients
            .shared_name(CountKind::Database, startup.database),
        state.clients.shared_name(CountKind::User, startup.user),
    );
    if settings.log_connections {
        conn_log!(
            info,
            info.label(),
            "login attempt: db={} user={} tls=no replication=no",
            startup.database,
            startup.user
        );
    }
    if crate::admin::is_console(startup.database) {
        let console =
            crate::admin::login(state, &runtime, conn, info, startup.user, Box::new(total)).await?;
        return Ok(Some(LoggedIn::Console(Box::new(console))));
    }
    // A draining shutdown keeps the Unix socket open for the console only.
    if state.lifecycle.shutdown_mode().is_some() {
        return Err(End::pooler("pooler is shutting down"));
    }
    let routing = hooks::route(&runtime, &startup, &msg, info.peer())?;
    let db = lookup_database(&runtime, &routing.database);
    // A secret the auth plugin found also serves the pool's server logins as this user. No lookup for a
    // database that does not exist: the client then fails authentication like any unknown user (and
    // learns of the missing database only with the right password), as in PgBouncer.
    let (secret, looked_up) = match runtime.secrets.get(startup.user) {
        Some(s) => (Some(Cow::Borrowed(s)), false),
        None if db.is_none() => (None, false),
        None => (
            hooks::lookup(state, &runtime, startup.user, &routing.database)
                .await?
                .map(Cow::Owned),
            true,
        ),
    };
    let method = auth::method(settings.auth_type, secret.as_deref());
    if method == AuthType::Trust && secret.is_none() {
        state.errors.count(ErrorKind::AuthFailed);
        return Err(End::fatal("28000", "\"trust\" authentication failed"));
    }
    let keys = auth::authenticate(
        conn,
        method,
        startup.user,
        secret.as_deref(),
        settings.scram_iterations,
    )
    .await
    .inspect_err(|end| {
        // A refusal, not a client that hung up halfway.
        if matches!(end, End::Fatal { .. }) {
            state.errors.count(ErrorKind::AuthFailed);
        }
    })?;
    let Some(db) = db else {
        return Err(End::pooler(format!(
            "no such database: {}",
            routing.database
        )));
    };
    if crate::admin::is_disabled(state, &db.name) {
        return Err(End::pooler(format!("database \"{}\" is disabled", db.name)));
    }
    let session = attach(
        state,
        &runtime,
        &startup,
        &msg,
        &db,
        &routing,
        keys,
        secret.filter(|_| looked_up).map(Cow::into_owned),
        total,
        info,
    )
    .await?;
    session.pool().stats.logins.fetch_add(1, Ordering::Relaxed);
    welcome(conn, &session);
    conn.flush().await?;
    Ok(Some(LoggedIn::Pool(Box::new(session))))
}

/// What a connection turns out to be once encryption requests are answered.
enum First {
    Cancel { pid: u32, secret: u32 },
    Startup(StartupMessage),
}

/// Reads the first packet, answering SSLRequest and GSSENCRequest with 'N' (no TLS or GSS encryption yet).
async fn read_first(conn: &mut ClientConn) -> Result<First, End> {
    let mut refusals = 0;
    loop {
        match startup::parse(&mut conn.rbuf).map_err(|e| End::protocol(&e))? {
            Some(StartupRequest::Ssl | StartupRequest::GssEnc) => {
                refusals += 1;
                if refusals > 2 {
                    return Err(End::pooler("too many encryption requests"));
                }
                if !conn.rbuf.is_empty() {
                    return Err(End::pooler("received unencrypted data after SSL request"));
                }
                conn.send(client_startup::write_refusal);
                conn.flush().await?;
            }
            Some(StartupRequest::Cancel { pid, secret }) => {
                return Ok(First::Cancel { pid, secret });
            }
            Some(StartupRequest::Startup(msg)) => return Ok(First::Startup(msg)),
            None => {
                conn.rbuf.reserve(512);
                match conn.stream.read_buf(&mut conn.rbuf).await {
                    Ok(0) => {
                        return Err(End::Closed(
                            "client closed the connection before startup".into(),
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(End::Closed(format!("client read error: {e}"))),
                }
            }
        }
    }
}

/// The database entry for a name: an exact `[databases]` entry, else the `*` fallback for that name (a copy
/// named for it).
fn lookup_database<'a>(runtime: &'a Runtime, name: &str) -> Option<Cow<'a, Database>> {
    if let Some(db) = runtime.config.databases.get(name) {
        return Some(Cow::Borrowed(db));
    }
    runtime.config.fallback.as_ref().map(|fallback| {
        let mut db = fallback.clone();
        db.name = name.to_owned();
        Cow::Owned(db)
    })
}

/// Picks the pool and checks the client limits; makes sure the pool can log in and knows its welcome.
#[allow(
    clippy::too_many_arguments,
    reason = "the login's parts, assembled once"
)]
async fn attach(
    state: &Arc<State>,
    runtime: &Runtime,
    startup: &ClientStartup<'_>,
    startup_msg: &StartupMessage,
    db: &Database,
    routing: &Routing<'_>,
    keys: Option<crate::auth::ScramKeys>,
    looked_up: Option<crate::auth::Secret>,
    total: ClientTotal,
    info: &Arc<ClientInfo>,
) -> Result<Session, End> {
    let settings = &runtime.config.settings;
    // A router's server_user acts as a forced user= for this client (the entry is copied only then).
    let db: Cow<'_, Database> = match &routing.server_user {
        Some(user) => {
            let mut db = db.clone();
            db.user = Some(user.clone());
            Cow::Owned(db)
        }
        None => Cow::Borrowed(db),
    };
    let db = &*db;
    let pool_user = db.user.as_deref().unwrap_or(startup.user);
    let key = KeyRef::routed(&db.name, pool_user, routing.mode);
    // A database made from the `*` entry, seen for the first time (PgBouncer's log line).
    if !runtime.config.databases.contains_key(&db.name)
        && !state
            .pools
            .all()
            .iter()
            .any(|p| *p.key.database == *db.name)
    {
        tracing::info!("registered new auto-database: {}", db.name);
    }
    let pool = state.pools.join(key, || {
        let mut settings = PoolSettings::resolve(runtime, db, &db.name, pool_user);
        if let Some(mode) = routing.mode {
            settings.mode = mode;
        }
        settings
    });
    let pool_client = PoolClient::joined(Arc::clone(&pool));

    let max_db = db
        .max_db_client_connections
        .unwrap_or(settings.max_db_client_connections);
    let mut counted = ClientCounted::new(total);
    if !counted.count(CountKind::Database, &db.name, max_db) {
        return Err(End::pooler(
            "client connections exceeded (max_db_client_connections)",
        ));
    }
    let max_user = runtime
        .config
        .users
        .get(startup.user)
        .and_then(|u| u.max_user_client_connections)
        .unwrap_or(settings.max_user_client_connections);
    if !counted.count(CountKind::User, startup.user, max_user) {
        return Err(End::pooler(
            "client connections exceeded (max_user_client_connections)",
        ));
    }

    if let Some(keys) = keys
        && db.user.is_none()
    {
        pool.offer_scram_keys(keys);
    }
    if let Some(secret) = looked_up
        && db.user.is_none()
    {
        pool.offer_secret(secret);
    }
    pool.check_fast_fail().map_err(|e| checkout_end(&e))?;
    let timeouts = ClientTimeouts::resolve(runtime, startup.user);
    if pool.welcome().is_none() {
        // The first client of a pool waits for a server login, which also proves the pool can log in.
        let server = pool
            .checkout_uncounted(timeouts.query_timeout())
            .await
            .map_err(|e| checkout_end(&e))?;
        pool.checkin_unused(server);
    }
    // The server's values from the pool's welcome, then the client's own from its startup packet.
    let mut params = ParamValues::new(&state.tracked);
    {
        let welcome = pool.welcome();
        let from_welcome = welcome
            .iter()
            .flat_map(|w| w.tracked.iter().map(|(i, value)| (*i, value.as_str())));
        let from_startup = startup.tracked.iter().map(|(i, v)| (*i, v.as_ref()));
        params.set_many(from_welcome.chain(from_startup));
    }
    if settings.application_name_add_host {
        let app = Tracked::APPLICATION_NAME;
        // The client's own name, not the server's default that `params` starts from; PgBouncer calls a
        // client that sent none "app".
        let given = startup
            .tracked
            .iter()
            .rev()
            .find(|(i, _)| *i == app)
            .map_or("app", |(_, v)| v.as_ref());
        let name = format!("{given} - {}", info.peer());
        params.set(app, &name);
    }
    let mut login_facts = crate::plugin::convert::LoginFacts::new(startup.database, startup_msg);
    pool.share_login(&mut params, &mut login_facts);
    Ok(Session::new(
        Arc::clone(info),
        pool_client,
        params,
        state.cancels.register(info),
        timeouts,
        login_facts,
        counted,
    ))
}

/// What a client is told when it cannot get a server.
pub fn checkout_end(e: &CheckoutError) -> End {
    match e {
        CheckoutError::Server(server_error) => {
            let (code, message) = server_error.client_error();
            End::fatal(code, message)
        }
        other => End::pooler(other.to_string()),
    }
}

/// AuthenticationOk, the server's parameters (with the client's own values), our cancel key, ReadyForQuery.
fn welcome(conn: &mut ClientConn, session: &Session) {
    let pool: &Arc<Pool> = session.pool();
    let tracked = &session.state().tracked;
    let runtime = session.state().runtime();
    // One buffer for the whole welcome, queued once: message by message, each took a buffer of its own and
    // a shared header when split off (~40 allocations a login).
    conn.send(|b| {
        b.reserve(WELCOME_SIZE);
        backend::write_auth_ok(b);
        // The server's untracked parameters as the pool's welcome has them, then every tracked one the
        // session knows: the welcome's values where the startup packet left them, the client's own else.
        if let Some(welcome) = pool.welcome() {
            b.extend_from_slice(&welcome.untracked_messages);
        }
        for (i, value) in session.params().iter() {
            backend::write_parameter_status(b, tracked.name(i), value);
        }
        let (pid, secret) = session.cancel_key();
        backend::write_backend_key_data(b, pid, secret);
        if let Some(notice) = &runtime.config.settings.login_notify_message {
            backend::write_notice(b, backend::Severity::Notice, "00000", notice);
        }
        backend::write_ready_for_query(b, TransactionStatus::Idle);
    });
}

/// Room for a usual welcome (AuthenticationOk, PostgreSQL 15's dozen ParameterStatus, BackendKeyData,
/// ReadyForQuery: ~350 bytes); a longer one grows the buffer.
const WELCOME_SIZE: usize = 512;

/// Room for a login's messages: an authentication exchange's (~150 bytes for SCRAM) and the welcome.
const LOGIN_OUT_SIZE: usize = 1024;

/// Counts a client against max_client_conn for as long as it is connected.
#[derive(Debug)]
pub struct ClientTotal {
    state: Arc<State>,
    /// Clients connected when this one was accepted, itself included.
    at_accept: u32,
}

impl ClientTotal {
    fn new(state: &Arc<State>) -> Self {
        let at_accept = state.clients.total.fetch_add(1, Ordering::AcqRel) + 1;
        Self {
            state: Arc::clone(state),
            at_accept,
        }
    }

    /// This client's place against max_client_conn: its count at accept, or the live count if that is lower
    /// now. A client that disconnects and at once reconnects (psycopg closing and opening) is often accepted
    /// again before its old session has been counted out; by the time the startup packet is read it has.
    /// Either count within the limit means the client fits.
    fn position(&self) -> u32 {
        self.at_accept
            .min(self.state.clients.total.load(Ordering::Acquire))
    }
}

impl ClientTotal {
    /// The counts it is one of.
    pub fn counts(&self) -> &crate::state::ClientCounts {
        &self.state.clients
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }
}

impl Drop for ClientTotal {
    fn drop(&mut self) {
        self.state.clients.total.fetch_sub(1, Ordering::AcqRel);
    }
}
