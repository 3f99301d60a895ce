//! The plugin hooks a client meets: routing it and looking up secrets of users pgwarden does not know (at
//! login), and checking its queries.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::End;
use super::login::checkout_end;
use super::relay::Denial;
use super::startup::ClientStartup;
use crate::auth::Secret;
use crate::config::{Hook, OnError, PoolMode};
use crate::metrics::ErrorKind;
use crate::net::Peer;
use crate::plugin::bindings::exports::pgwarden::plugin::policy::Verdict;
use crate::plugin::convert::{QueryInput, SessionInfo};
use crate::plugin::{DatabaseAccess, PluginSet, convert};
use crate::pool::{CheckoutError, KeyRef, PoolSettings};
use crate::protocol::startup::StartupMessage;
use crate::server::ServerError;
use crate::state::{Runtime, State};

/// Where the router plugins send a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing<'a> {
    /// The `[databases]` alias the client goes to (the one it asked for unless a router chose another).
    pub database: Cow<'a, str>,
    pub mode: Option<PoolMode>,
    pub server_user: Option<String>,
}

/// Runs the router plugins in scope for the database the client asked for, in order; the first one that
/// chooses anything (or refuses) decides. A router that fails refuses the connection unless its
/// on_error is `allow`.
pub fn route<'a>(
    runtime: &Runtime,
    startup: &ClientStartup<'a>,
    msg: &StartupMessage,
    peer: Peer,
) -> Result<Routing<'a>, End> {
    let mut routing = Routing {
        database: Cow::Borrowed(startup.database),
        mode: None,
        server_user: None,
    };
    let mut routers = runtime
        .plugins
        .for_hook(Hook::Router, startup.database)
        .peekable();
    if routers.peek().is_none() {
        return Ok(routing);
    }
    let app = msg.get("application_name").unwrap_or("");
    let mode = runtime
        .config
        .database(startup.database)
        .and_then(|d| d.pool_mode)
        .unwrap_or(runtime.config.settings.pool_mode);
    let session = convert::session_info(
        startup.user,
        startup.database,
        app,
        peer,
        msg.params(),
        mode,
    );
    for router in routers {
        match router.route(&session) {
            Ok(Ok(dest)) => {
                if dest.database.is_none() && dest.pool_mode.is_none() && dest.server_user.is_none()
                {
                    continue;
                }
                if let Some(db) = dest.database {
                    routing.database = Cow::Owned(db);
                }
                routing.mode = dest.pool_mode.map(convert::from_pool_mode);
                routing.server_user = dest.server_user;
                tracing::debug!(
                    plugin = router.name(),
                    "routed {} to {routing:?}",
                    startup.user
                );
                break;
            }
            Ok(Err(denial)) => {
                runtime.plugins.errors().count(ErrorKind::RouterDenial);
                return Err(End::fatal_with(
                    convert::sqlstate(&denial.sqlstate, "28000"),
                    denial.message,
                    denial.detail,
                    denial.hint,
                ));
            }
            Err(e) if router.spec.on_error == OnError::Allow => {
                tracing::warn!("{e}; routing as configured (on_error = allow)");
            }
            Err(e) => {
                tracing::error!("{e}; connection refused");
                runtime.plugins.errors().count(ErrorKind::RouterFailure);
                return Err(End::fatal("08004", format!("connection refused: {e}")));
            }
        }
    }
    Ok(routing)
}

/// Asks the auth plugin in scope for the secret of `user`, a user with no entry in auth_file; `None` when
/// there is no plugin or it knows no such user (the login then fails like any unknown user's).
pub async fn lookup(
    state: &Arc<State>,
    runtime: &Arc<Runtime>,
    user: &str,
    database: &str,
) -> Result<Option<Secret>, End> {
    let Some(plugin) = runtime
        .plugins
        .for_hook(Hook::Auth, database)
        .next()
        .cloned()
    else {
        return Ok(None);
    };
    let ttl = plugin.spec.cache_ttl;
    let key = (
        plugin.name().to_owned(),
        user.to_owned(),
        database.to_owned(),
    );
    if !ttl.is_zero() {
        let cache = state.auth_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, secret)) = cache.get(&key)
            && at.elapsed() < ttl
        {
            return Ok(secret.as_deref().map(Secret::parse));
        }
    }
    let pool_query = Arc::new(PoolQuery {
        state: Arc::clone(state),
        runtime: Arc::clone(runtime),
        handle: tokio::runtime::Handle::current(),
        login_refused: Mutex::new(None),
    });
    let access: Arc<dyn DatabaseAccess> = Arc::clone(&pool_query) as _;
    let (u, d) = (user.to_owned(), database.to_owned());
    let lookup = Arc::clone(&plugin);
    // The plugin may run queries through the pools, which blocks: keep it off the async workers.
    let answer = tokio::task::spawn_blocking(move || lookup.lookup(&u, &d, access)).await;
    let refused = |why: String| {
        tracing::error!("auth lookup of \"{user}\" failed: {why}");
        // The lookup could not log in to PostgreSQL (the database does not exist, say): the client gets
        // the server's refusal, as PgBouncer passes it on.
        let server_refusal = pool_query
            .login_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match server_refusal {
            Some(e) => checkout_end(&e),
            None => End::fatal("28000", format!("could not look up user \"{user}\": {why}")),
        }
    };
    match answer {
        Ok(Ok(Ok(secret))) => {
            if !ttl.is_zero() {
                let mut cache = state.auth_cache.lock().unwrap_or_else(|e| e.into_inner());
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                cache.insert(key, (Instant::now(), secret.clone()));
            }
            Ok(secret.as_deref().map(Secret::parse))
        }
        Ok(Ok(Err(message))) => Err(refused(message)),
        Ok(Err(e)) if plugin.spec.on_error == OnError::Allow => {
            tracing::warn!("{e}; treating \"{user}\" as unknown (on_error = allow)");
            Ok(None)
        }
        Ok(Err(e)) => Err(refused(e.to_string())),
        Err(join) => Err(refused(join.to_string())),
    }
}

/// `database.query` for auth plugins: runs a query as `user` on `database` through pgwarden's pools.
struct PoolQuery {
    state: Arc<State>,
    runtime: Arc<Runtime>,
    handle: tokio::runtime::Handle,
    /// The server's refusal of the lookup's own login, if that is why a query failed.
    login_refused: Mutex<Option<CheckoutError>>,
}

impl DatabaseAccess for PoolQuery {
    fn query(
        &self,
        user: &str,
        database: &str,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<Vec<Option<String>>>, String> {
        let db = self
            .runtime
            .config
            .database(database)
            .ok_or_else(|| format!("no such database: {database}"))?;
        let mut entry = db;
        entry.user = Some(user.to_owned());
        let pool = self.state.pools.ensure(KeyRef::new(&entry.name, user), || {
            PoolSettings::resolve(&self.runtime, &entry, &entry.name, user)
        });
        let max = pool.settings().max_packet;
        self.handle.block_on(async move {
            let mut server = pool.checkout(Duration::ZERO).await.map_err(|e| {
                let message = e.to_string();
                // Only PostgreSQL's own refusal is passed on; pgwarden's reasons keep the lookup's context.
                if let CheckoutError::Server(se) | CheckoutError::FastFail(se) = &e
                    && matches!(**se, ServerError::Login(_))
                {
                    *self.login_refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                }
                message
            })?;
            match server.query_params(sql, params, max).await {
                Ok(rows) => {
                    pool.checkin(server);
                    Ok(rows)
                }
                Err(ServerError::Query(e)) => {
                    pool.checkin(server);
                    Err(e.message)
                }
                Err(other) => {
                    server.close("auth query failed");
                    Err(other.to_string())
                }
            }
        })
    }
}

/// Asks the policy plugins of `database`, in order, about one query: the first denial wins; a plugin that
/// fails denies the query (XX000) unless its on_error is `allow`. `None` allows the query.
pub fn check_query(
    plugins: &PluginSet,
    database: &str,
    info: &mut SessionInfo,
    query: &QueryInput<'_>,
) -> Option<Denial> {
    let mut record = None;
    for plugin in plugins.for_hook(Hook::Policy, database) {
        match plugin.check(info, query, &mut record) {
            Ok(Verdict::Allow) => {}
            Ok(Verdict::Deny(d)) => {
                plugins.errors().count(ErrorKind::PolicyDenial);
                return Some(Denial {
                    sqlstate: convert::sqlstate(&d.sqlstate, "42501"),
                    message: d.message,
                    detail: d.detail,
                    hint: d.hint,
                });
            }
            Err(e) if plugin.spec.on_error == OnError::Allow => {
                tracing::warn!("{e}; query allowed unchecked (on_error = allow)");
            }
            Err(e) => {
                tracing::error!("{e}; query refused");
                plugins.errors().count(ErrorKind::PolicyFailure);
                return Some(Denial {
                    sqlstate: "XX000".into(),
                    message: format!("query refused: {e}"),
                    detail: None,
                    hint: Some(
                        "a query policy plugin failed, and pgwarden refuses queries it could not check"
                            .into(),
                    ),
                });
            }
        }
    }
    None
}
