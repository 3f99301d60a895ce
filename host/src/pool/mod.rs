//! Server connection pools: one per (database entry, user), with a fair FIFO queue of waiting clients,
//! `pool_size` + reserve, shared per-database and per-user limits, and idle/lifetime reaping.
//!
//! Every open or opening connection holds a [`Slot`]; dropping the slot (with or without a connection)
//! gives the capacity back and lets a waiting client's connection be opened, so no error path can leak
//! capacity. Connections are never dropped while the pool lock is held (a slot's drop takes it).

mod limits;
mod registry;
mod settings;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::oneshot;

pub use limits::SharedLimit;
pub use registry::{KeyRef, PoolKey, Pools};
pub use settings::PoolSettings;

use crate::auth::secret::{ScramKeys, Secret};
use crate::clock::Coarse;
use crate::config::LoadBalanceHosts;
use crate::logging::conn_log;
use crate::metrics::Histogram;
use crate::params::{ParamValues, Tracked};
use crate::plugin::convert::LoginFacts;
use crate::server::{self, ServerConn, ServerError, Welcome};

/// Totals of what a pool's clients did, added at the end of each link.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub transactions: AtomicU64,
    pub queries: AtomicU64,
    /// Named Parse messages from clients (prepared statement tracking).
    pub client_parses: AtomicU64,
    /// Parse messages of tracked statements sent to servers.
    pub server_parses: AtomicU64,
    /// Bind messages of tracked statements.
    pub binds: AtomicU64,
    /// Clients kept on their server by state that cannot move (session_state = pin), now.
    pub pinned_clients: AtomicU32,
    /// Times a server was handed to one of the pool's clients.
    pub assignments: AtomicU64,
    /// Successful client logins.
    pub logins: AtomicU64,
    /// Microseconds clients waited in the queue for a server (a server taken idle adds nothing).
    pub wait_us: AtomicU64,
    /// Bytes read from clients and sent to them.
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// Microseconds spent in queries and in transactions.
    pub query_us: AtomicU64,
    pub xact_us: AtomicU64,
    /// Query, transaction and queue-wait times by bucket (`/metrics`; their sums are the totals above).
    pub query_time: Histogram,
    pub xact_time: Histogram,
    pub wait_time: Histogram,
    /// Server logins that failed.
    pub server_login_failures: AtomicU64,
    /// Clients that waited query_wait_timeout for a server and gave up.
    pub wait_timeouts: AtomicU64,
}

impl PoolStats {
    pub fn add(&self, c: &crate::client::Counts) {
        for (total, n) in [
            (&self.transactions, c.transactions),
            (&self.queries, c.queries),
            (&self.client_parses, c.client_parses),
            (&self.server_parses, c.server_parses),
            (&self.binds, c.binds),
            (&self.received, c.received),
            (&self.sent, c.sent),
            (&self.query_us, c.query_us),
            (&self.xact_us, c.xact_us),
        ] {
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.query_time.observe_mean(c.query_us, c.queries);
        self.xact_time.observe_mean(c.xact_us, c.transactions);
    }

    /// A checkout that waited `us` in the queue.
    fn waited(&self, us: u64) {
        self.wait_us.fetch_add(us, Ordering::Relaxed);
        self.wait_time.observe(us);
    }
}

/// What a waiting client receives.
type Grant = Result<ServerConn, Arc<ServerError>>;

pub struct Pool {
    pub key: PoolKey,
    settings: ArcSwap<PoolSettings>,
    inner: Mutex<Inner>,
    /// `max_db_connections` of the database entry.
    db_limit: Arc<SharedLimit>,
    /// `max_user_connections` of the pool's user.
    user_limit: Arc<SharedLimit>,
    /// The ParameterStatus set of the first successful login, told to every new client.
    welcome: ArcSwapOption<Welcome>,
    /// SCRAM keys recovered from a client's own SCRAM login, so that server logins need no plain password.
    scram_keys: ArcSwapOption<ScramKeys>,
    /// The parameter values and the facts the latest client logged in with, shared with the next when they
    /// are the same ([`ParamValues::share`], [`LoginFacts::share`]): one application's clients keep one
    /// copy. Touched only at login.
    last_login: Mutex<(Option<ParamValues>, Option<LoginFacts>)>,
    /// The secret an auth plugin found for the pool's user (who is not in auth_file), for server logins
    /// when the settings hold none.
    looked_up: ArcSwapOption<Secret>,
    tracked: Arc<Tracked>,
    /// Bumped when the connection settings change on reload; connections of an older epoch are closed.
    epoch: AtomicU64,
    /// Logged-in clients using this pool (for min_pool_size and the console).
    pub clients: AtomicU32,
    /// What the pool's clients did (SHOW STATS, log_stats).
    pub stats: PoolStats,
    /// When the last client left (None while clients are connected); touched only at login and logout.
    idle_since: Mutex<Option<Instant>>,
    /// Since when the janitor has seen the pool without clients and without servers (pool_idle_timeout).
    empty_since: Mutex<Option<Instant>>,
    /// Which of the entry's hosts the next connection goes to (counts up; taken modulo the host count).
    next_host: AtomicUsize,
    /// The pool's logged-in clients and open servers, for the console (touched at connect and close).
    pub live_clients: crate::conns::Registry<crate::conns::ClientRecord>,
    pub live_servers: crate::conns::Registry<crate::conns::ServerRecord>,
    /// Prepared statements whose result type changed under them, shared by the pool's servers.
    statement_changes: Arc<crate::client::prepared::ResultTypeChanges>,
    me: Weak<Pool>,
}

#[derive(Default)]
struct Inner {
    /// Idle connections, most recently used last (LIFO reuse, like PgBouncer's default).
    idle: Vec<ServerConn>,
    /// Connections counted against the pool size: idle, in use, and being opened.
    open: u32,
    connecting: u32,
    waiters: VecDeque<Waiter>,
    /// The last login failure and when it happened; cleared by a successful login.
    failure: Option<(Instant, Arc<ServerError>)>,
    /// A retry is scheduled for after server_login_retry.
    retry_scheduled: bool,
    /// Waiters allowed to dip into the reserve (they waited reserve_pool_timeout).
    reserve_wanted: u32,
    /// Closing: no new connections, none kept idle.
    paused: bool,
}

struct Waiter {
    tx: oneshot::Sender<Grant>,
    /// When it joined the queue (SHOW POOLS' maxwait).
    since: Instant,
}

/// Why a checkout gave up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckoutError {
    #[error("query_wait_timeout")]
    WaitTimeout,
    /// query_timeout passed while the client was still waiting for a server (PgBouncer counts the wait).
    #[error("query_timeout")]
    QueryTimeout,
    #[error("{0}")]
    Server(Arc<ServerError>),
    #[error(
        "server login has been failing, cached error: {} (server_login_retry)",
        .0.cached_message()
    )]
    FastFail(Arc<ServerError>),
    /// The pool gave its queue up without an answer: a draining shutdown (WAIT_FOR_SERVERS).
    #[error("server shutting down")]
    Closed,
}

impl Pool {
    pub(crate) fn new(
        key: PoolKey,
        settings: PoolSettings,
        db_limit: Arc<SharedLimit>,
        user_limit: Arc<SharedLimit>,
        tracked: Arc<Tracked>,
    ) -> Arc<Self> {
        let pool = Arc::new_cyclic(|me| Self {
            key,
            settings: ArcSwap::from_pointee(settings),
            inner: Mutex::new(Inner::default()),
            db_limit,
            user_limit,
            welcome: ArcSwapOption::empty(),
            scram_keys: ArcSwapOption::empty(),
            last_login: Mutex::new((None, None)),
            looked_up: ArcSwapOption::empty(),
            tracked,
            epoch: AtomicU64::new(1),
            clients: AtomicU32::new(0),
            stats: PoolStats::default(),
            idle_since: Mutex::new(Some(Instant::now())),
            empty_since: Mutex::new(None),
            next_host: AtomicUsize::new(0),
            live_clients: crate::conns::Registry::default(),
            live_servers: crate::conns::Registry::default(),
            statement_changes: Arc::default(),
            me: me.clone(),
        });
        pool.db_limit.add_member(Arc::downgrade(&pool));
        pool.user_limit.add_member(Arc::downgrade(&pool));
        pool
    }

    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// The settings without touching their reference count (shared by every client of the pool): for the
    /// per-transaction paths, never to be held across an await.
    pub fn settings_guard(&self) -> arc_swap::Guard<Arc<PoolSettings>> {
        self.settings.load()
    }

    /// server_reset_query, if it must also run in transaction and statement mode
    /// (server_reset_query_always).
    pub fn reset_query_always(&self) -> Option<String> {
        let s = self.settings.load();
        if s.server_reset_query_always {
            s.server_reset_query.clone()
        } else {
            None
        }
    }

    /// The two settings every transaction needs, read without cloning the settings `Arc`.
    pub fn mode_and_max_packet(&self) -> (crate::config::PoolMode, u32) {
        let s = self.settings.load();
        (s.mode, s.max_packet)
    }

    pub fn welcome(&self) -> Option<Arc<Welcome>> {
        self.welcome.load_full()
    }

    pub fn tracked(&self) -> &Arc<Tracked> {
        &self.tracked
    }

    /// Remembers SCRAM keys from a client's SCRAM login (first ones win; later logins derive the same keys).
    pub fn offer_scram_keys(&self, keys: ScramKeys) {
        if self.scram_keys.load().is_none() {
            self.scram_keys.store(Some(Arc::new(keys)));
        }
    }

    /// Lets a client that just logged in share its parameter values and login facts with the client before,
    /// where they are the same.
    pub fn share_login(&self, params: &mut ParamValues, facts: &mut LoginFacts) {
        let mut last = self.last_login.lock().unwrap_or_else(|e| e.into_inner());
        params.share(&mut last.0);
        facts.share(&mut last.1);
    }

    /// Remembers the secret an auth plugin found for the pool's user at a client's login (the latest wins:
    /// it is what the server holds now).
    pub fn offer_secret(&self, secret: Secret) {
        self.looked_up.store(Some(Arc::new(secret)));
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave it inconsistent in a way worse than refusing service.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the settings after a reload. When how connections are opened changed, existing connections
    /// are retired: idle ones now, busy ones at release.
    pub(crate) fn update_settings(&self, new: PoolSettings) {
        let old = self.settings.swap(Arc::new(new));
        let new = self.settings.load();
        if old.login_differs(&new) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
            self.welcome.store(None);
            self.scram_keys.store(None);
            self.close_idle("database configuration changed");
        }
        self.close_surplus_idle(&new);
        self.launch_if_needed();
    }

    /// Closes idle connections beyond the pool size (a reload lowered it), least recently used first, so
    /// the next clients cannot get more servers than the new size allows. Busy ones go at release.
    fn close_surplus_idle(&self, settings: &PoolSettings) {
        let surplus: Vec<ServerConn> = {
            let mut inner = self.lock();
            let limit = if inner.reserve_wanted == 0 {
                settings.pool_size
            } else {
                settings
                    .pool_size
                    .saturating_add(settings.reserve_pool_size)
            };
            let n = (inner.open.saturating_sub(limit) as usize).min(inner.idle.len());
            inner.idle.drain(..n).collect()
        };
        for conn in surplus {
            conn.close("too many servers in the pool");
        }
    }

    /// Returns a server connection for this pool, waiting in line if none is free. `query_timeout` (0 = none)
    /// also bounds the wait, as in PgBouncer.
    pub async fn checkout(&self, query_timeout: Duration) -> Result<ServerConn, CheckoutError> {
        if let Some(conn) = self.checkout_idle().await {
            return Ok(conn);
        }
        self.wait_in_queue(query_timeout, true).await
    }

    /// [`Pool::checkout`] for pgwarden's own use (the login that learns a pool's welcome): not counted as a
    /// server assigned to a client.
    pub async fn checkout_uncounted(
        &self,
        query_timeout: Duration,
    ) -> Result<ServerConn, CheckoutError> {
        if let Some(conn) = self.take_idle().await {
            return Ok(conn);
        }
        self.wait_in_queue(query_timeout, false).await
    }

    /// The fast path: an idle connection if there is one, without queueing, timers or waiting.
    pub async fn checkout_idle(&self) -> Option<ServerConn> {
        let conn = self.take_idle().await?;
        self.stats.assignments.fetch_add(1, Ordering::Relaxed);
        self.stats.wait_time.observe(0);
        Some(conn)
    }

    /// The slow path with a timer of its own: joins the queue and waits for its grant or its deadlines. (A
    /// client's session watches a [`Queued`] with its one timer instead.)
    async fn wait_in_queue(
        &self,
        query_timeout: Duration,
        assigned: bool,
    ) -> Result<ServerConn, CheckoutError> {
        let mut queued = match self.enqueue(query_timeout, assigned).await {
            Enqueued::Idle(conn) => return Ok(conn),
            Enqueued::Queued(queued) => queued,
        };
        loop {
            let timer = sleep_until_opt(queued.next_deadline());
            tokio::select! {
                res = std::future::poll_fn(|cx| queued.poll_grant(self, cx)) => return res,
                () = timer => {
                    if let Some(res) = queued.deadline_passed(self, Instant::now()) {
                        return res;
                    }
                }
            }
        }
    }

    /// Joins the queue for a server, unless a connection went idle meanwhile; `assigned` counts the server
    /// as handed to a client (SHOW STATS). The deadlines (query_wait_timeout, the nearer query_timeout,
    /// reserve_pool_timeout) count from now.
    pub async fn enqueue(&self, query_timeout: Duration, assigned: bool) -> Enqueued {
        let started = Instant::now();
        // Copied out of a guard (no reference count touched: this runs for every waiting transaction).
        let (query_wait_timeout, reserve_pool_size, reserve_pool_timeout) = {
            let s = self.settings.load();
            (
                s.query_wait_timeout,
                s.reserve_pool_size,
                s.reserve_pool_timeout,
            )
        };
        let rx = loop {
            let (tx, rx) = oneshot::channel();
            {
                let mut inner = self.lock();
                if inner.idle.is_empty() {
                    inner.waiters.push_back(Waiter { tx, since: started });
                    break rx;
                }
            }
            if let Some(conn) = self.take_idle().await {
                self.handed(started, assigned);
                return Enqueued::Idle(conn);
            }
        };
        self.launch_if_needed();
        // The nearer of query_wait_timeout and query_timeout, and the error it gives.
        let wait = [
            (query_wait_timeout, CheckoutError::WaitTimeout),
            (query_timeout, CheckoutError::QueryTimeout),
        ]
        .into_iter()
        .filter(|(d, _)| !d.is_zero())
        .min_by_key(|(d, _)| *d)
        .map(|(d, e)| (started + d, e));
        let reserve_at = (reserve_pool_size > 0 && !reserve_pool_timeout.is_zero())
            .then(|| started + reserve_pool_timeout);
        Enqueued::Queued(Queued {
            rx,
            started,
            assigned,
            wait,
            reserve_at,
            reserve: None,
        })
    }

    /// Counts a server handed over after a wait that began at `started`.
    fn handed(&self, started: Instant, assigned: bool) {
        self.stats.waited(micros(started));
        if assigned {
            self.stats.assignments.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Gives up the queue: every waiter's grant fails with [`CheckoutError::Closed`] (a draining shutdown).
    pub(crate) fn close_queue(&self) {
        let waiters = std::mem::take(&mut self.lock().waiters);
        drop(waiters);
    }

    /// An idle connection fit for reuse, if there is one; the ones found unfit on the way are closed. One
    /// idle longer than server_check_delay is tested with server_check_query first (a rare path, boxed so
    /// that the state of every caller waiting on this stays small).
    async fn take_idle(&self) -> Option<ServerConn> {
        loop {
            let (conn, check) = self.pop_idle()?;
            if !check {
                return Some(conn);
            }
            if let Some(conn) = Box::pin(self.checked(conn)).await {
                return Some(conn);
            }
        }
    }

    /// Pops the most recently used idle connection fit for reuse, closing unfit ones on the way; and
    /// whether it must pass server_check_query first.
    fn pop_idle(&self) -> Option<(ServerConn, bool)> {
        let (conn, stale, check) = {
            // A guard, not a clone: this runs for every transaction.
            let settings = self.settings.load();
            // One reading of the clock for the lifetime and the check delay, outside the lock.
            let now = Coarse::now();
            let mut inner = self.lock();
            let mut stale = Vec::new();
            let mut found = None;
            while let Some(conn) = inner.idle.pop() {
                match self.retire_reason(&conn, &settings, now) {
                    None => {
                        found = Some(conn);
                        break;
                    }
                    Some(reason) => stale.push((conn, reason)),
                }
            }
            let check = found.as_ref().is_some_and(|c| {
                settings.server_check_query.is_some()
                    && now.since(c.last_used) >= settings.server_check_delay
            });
            (found, stale, check)
        };
        for (conn, reason) in stale {
            conn.close(reason);
        }
        Some((conn?, check))
    }

    /// Runs server_check_query on `conn`; `None` (the connection closed) if it fails.
    async fn checked(&self, mut conn: ServerConn) -> Option<ServerConn> {
        if let Some(live) = &conn.live {
            live.record.set_tested();
        }
        let settings = self.settings();
        if let Some(query) = &settings.server_check_query
            && let Err(e) = conn.simple_query(query, settings.max_packet).await
        {
            tracing::info!(server = conn.id, "server check failed, closing: {e}");
            return None;
        }
        Some(conn)
    }

    /// Why an idle connection must not be reused, if it must not.
    fn retire_reason(
        &self,
        conn: &ServerConn,
        settings: &PoolSettings,
        now: Coarse,
    ) -> Option<&'static str> {
        if conn.epoch != self.epoch.load(Ordering::Acquire) {
            Some("database configuration changed")
        } else if !conn.is_clean_idle() {
            Some("idle server got dirty or closed")
        } else if !settings.server_lifetime.is_zero()
            && now.since(conn.created) >= settings.server_lifetime
        {
            Some("server lifetime over")
        } else {
            None
        }
    }

    /// Returns a clean, idle (ReadyForQuery 'I') connection to the pool.
    pub fn checkin(&self, conn: ServerConn) {
        self.checkin_after(conn, true);
    }

    /// [`Pool::checkin`] for a connection no client has used (the login that learned the pool's welcome, a
    /// grant whose client left first): `server_lifetime = 0` ("use a connection once") does not close it
    /// yet.
    pub fn checkin_unused(&self, conn: ServerConn) {
        self.checkin_after(conn, false);
    }

    fn checkin_after(&self, mut conn: ServerConn, used: bool) {
        let settings = self.settings.load();
        if conn.epoch != self.epoch.load(Ordering::Acquire) {
            return conn.close("database configuration changed");
        }
        let now = Coarse::now();
        if (used && settings.server_lifetime.is_zero())
            || (!settings.server_lifetime.is_zero()
                && now.since(conn.created) >= settings.server_lifetime)
        {
            return conn.close("server lifetime over");
        }
        conn.last_used = now;
        if let Some(live) = &conn.live {
            live.record
                .released(conn.prepared.len(), conn.rbuf.capacity());
        }
        let surplus = {
            let mut inner = self.lock();
            // A paused pool hands nothing out, not even to a client already waiting: PAUSE waits for
            // every server to come back.
            if inner.paused {
                drop(inner);
                return conn.close("pause mode");
            }
            match self.grant(&mut inner, conn) {
                None => None,
                Some(conn) if inner.open > settings.pool_size && inner.reserve_wanted == 0 => {
                    Some((conn, "too many servers in the pool"))
                }
                Some(conn) => {
                    inner.idle.push(conn);
                    None
                }
            }
        };
        if let Some((conn, reason)) = surplus {
            conn.close(reason);
        }
    }

    /// Hands a connection to the first waiter still waiting; gives it back if nobody is.
    fn grant(&self, inner: &mut Inner, mut conn: ServerConn) -> Option<ServerConn> {
        while let Some(w) = inner.waiters.pop_front() {
            match w.tx.send(Ok(conn)) {
                Ok(()) => return None,
                Err(Ok(back)) => conn = back,
                Err(Err(_)) => return None,
            }
        }
        Some(conn)
    }

    /// Opens new connections while clients wait for more than are being opened, within every limit.
    pub(crate) fn launch_if_needed(&self) {
        // A guard, not a clone: called for every transaction that has to wait.
        let settings = self.settings.load();
        if self.at_limit(&self.lock(), &settings) {
            // The usual answer when clients outnumber the pool, given without touching the pool's
            // reference count (shared by all its clients) or sweeping the waiters.
            return;
        }
        let Some(me) = self.me.upgrade() else { return };
        // Reserve every launch first and spawn afterwards: a spawn the runtime refuses (it is shutting
        // down) drops its slot at once, and a loop that spawned as it went would see the demand again
        // and spin.
        let mut slots = Vec::new();
        loop {
            // Decide under the lock, and take the place at once so concurrent callers do not
            // launch the same connection twice.
            if !self.reserve_launch(&me, &settings) {
                break;
            }
            // Shared limits are taken outside the lock: taking one may evict another pool's
            // connection or wake another pool, and both lock that pool.
            if !self.acquire_shared(&me, &settings) {
                let mut inner = self.lock();
                inner.open -= 1;
                inner.connecting -= 1;
                break;
            }
            slots.push(Slot {
                pool: Arc::clone(&me),
                connecting: true,
                relaunch: false,
            });
        }
        for slot in slots {
            tokio::spawn(Arc::clone(&me).open_connection(slot));
        }
    }

    /// Whether one more connection should be opened now; if so, counts it as opening.
    fn reserve_launch(&self, me: &Arc<Pool>, settings: &PoolSettings) -> bool {
        let mut inner = self.lock();
        // A pool at its limit opens nothing, whatever the demand: answer before the sweep below, which
        // visits every waiter (hundreds of them when clients outnumber the pool, once per transaction).
        if self.at_limit(&inner, settings) {
            return false;
        }
        inner.waiters.retain(|w| !w.tx.is_closed());
        let min_wanted = self.min_pool_wanted(settings);
        let demand = inner.waiters.len() as u32 + min_wanted.saturating_sub(inner.open);
        if inner.paused || demand <= inner.connecting {
            return false;
        }
        if let Some((at, _)) = &inner.failure {
            let retry_at = *at + settings.server_login_retry;
            if Instant::now() < retry_at {
                if !inner.retry_scheduled {
                    inner.retry_scheduled = true;
                    let me = Arc::clone(me);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(retry_at.into()).await;
                        me.lock().retry_scheduled = false;
                        me.launch_if_needed();
                    });
                }
                return false;
            }
        }
        let from_reserve = inner.open >= settings.pool_size;
        inner.open += 1;
        inner.connecting += 1;
        drop(inner);
        if from_reserve {
            tracing::warn!(pool = %self.key, "taking connection from reserve_pool");
        }
        true
    }

    /// Whether the pool has every connection it may open (its size, and the reserve it is using).
    fn at_limit(&self, inner: &Inner, settings: &PoolSettings) -> bool {
        let reserve = inner.reserve_wanted.min(settings.reserve_pool_size);
        inner.open >= settings.pool_size.saturating_add(reserve)
    }

    /// Connections to keep open even with no waiting client: min_pool_size, when the pool has a forced user
    /// or at least one client (PgBouncer's rule).
    fn min_pool_wanted(&self, settings: &PoolSettings) -> u32 {
        if settings.min_pool_size == 0
            || (!settings.forced_user && self.clients.load(Ordering::Relaxed) == 0)
        {
            return 0;
        }
        settings.min_pool_size.min(settings.pool_size)
    }

    /// Takes a unit of the database and user limits, evicting idle connections of sibling pools if
    /// needed. Never called with this pool's lock held.
    fn acquire_shared(&self, me: &Arc<Pool>, settings: &PoolSettings) -> bool {
        let max_db = settings.max_db_connections;
        let db_ok = self.db_limit.try_acquire(max_db)
            || (self.db_limit.evict_idle(self) && self.db_limit.try_acquire(max_db));
        if !db_ok {
            self.db_limit.wait(Arc::downgrade(me));
            return false;
        }
        let max_user = settings.max_user_connections;
        let user_ok = self.user_limit.try_acquire(max_user)
            || (self.user_limit.evict_idle(self) && self.user_limit.try_acquire(max_user));
        if !user_ok {
            self.user_limit.wait(Arc::downgrade(me));
            self.db_limit.release();
            return false;
        }
        true
    }

    async fn open_connection(self: Arc<Self>, mut slot: Slot) {
        slot.relaunch = true;
        let settings = self.settings();
        let epoch = self.epoch.load(Ordering::Acquire);
        let keys = self.scram_keys.load_full();
        let found = self.looked_up.load_full();
        let mut login = match (&settings.login.secret, found) {
            (None, Some(secret)) => std::borrow::Cow::Owned(server::LoginSpec {
                secret: Some((*secret).clone()),
                secret_source: "found by the auth plugin",
                ..settings.login.clone()
            }),
            _ => std::borrow::Cow::Borrowed(&settings.login),
        };
        let host = self.pick_host(&settings);
        if host != 0 {
            login.to_mut().host = settings.hosts[host].clone();
        }
        tracing::debug!(pool = %self.key, "launching new connection to server");
        let started = Instant::now();
        let result = server::connect(&login, keys.as_deref(), &self.tracked).await;
        if let Err(e) = &result
            && e.unreachable()
        {
            self.host_failed(&settings, host);
        }
        slot.connecting = false;
        match result {
            Ok((mut conn, welcome)) => {
                if settings.log_connections {
                    log_new_server(&conn, &self.key);
                }
                if self.welcome.load().is_none() && epoch == self.epoch.load(Ordering::Acquire) {
                    self.welcome.store(Some(Arc::new(welcome)));
                }
                conn.epoch = epoch;
                conn.slot = Some(slot);
                conn.prepared.share_changes(&self.statement_changes);
                self.register_server(&mut conn, &settings.login.user, epoch);
                let leftover = {
                    let mut inner = self.lock();
                    inner.connecting -= 1;
                    inner.failure = None;
                    // Paused meanwhile: checkin closes it.
                    if inner.paused {
                        Some(conn)
                    } else {
                        self.grant(&mut inner, conn)
                    }
                };
                if let Some(conn) = leftover {
                    self.checkin(conn);
                }
            }
            Err(e) => {
                match &e {
                    // PgBouncer's words: `server login failed: FATAL password authentication failed ...`.
                    ServerError::Login(fields) => tracing::warn!(
                        pool = %self.key,
                        "server login failed: {} {}",
                        fields.severity,
                        fields.message
                    ),
                    other => tracing::warn!(pool = %self.key, "server login failed: {other}"),
                }
                if settings.log_disconnections {
                    log_failed_server(&login, &self.key, &e, started);
                }
                self.stats
                    .server_login_failures
                    .fetch_add(1, Ordering::Relaxed);
                let e = Arc::new(e);
                let failed_waiters = {
                    let mut inner = self.lock();
                    inner.connecting -= 1;
                    inner.failure = Some((Instant::now(), Arc::clone(&e)));
                    if e.fails_waiters() {
                        std::mem::take(&mut inner.waiters)
                    } else {
                        VecDeque::new()
                    }
                };
                for w in failed_waiters {
                    let _ = w.tx.send(Err(Arc::clone(&e)));
                }
                drop(slot);
            }
        }
    }

    /// The index of the host the next connection goes to: the next one in turn (round-robin), or the one
    /// all connections use until it fails (`load_balance_hosts = disable`).
    fn pick_host(&self, settings: &PoolSettings) -> usize {
        let n = settings.hosts.len();
        if n <= 1 {
            return 0;
        }
        match settings.load_balance_hosts {
            LoadBalanceHosts::RoundRobin => self.next_host.fetch_add(1, Ordering::Relaxed) % n,
            LoadBalanceHosts::Disable => self.next_host.load(Ordering::Relaxed) % n,
        }
    }

    /// A connection to host `host` could not be made: with `load_balance_hosts = disable` the following
    /// ones go to the next host (once, however many attempts failed on this one at the same time).
    fn host_failed(&self, settings: &PoolSettings, host: usize) {
        let n = settings.hosts.len();
        if n > 1 && settings.load_balance_hosts == LoadBalanceHosts::Disable {
            let current = self.next_host.load(Ordering::Relaxed);
            if current % n == host {
                let _ = self.next_host.compare_exchange(
                    current,
                    current.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Puts a fresh connection in the pool's registry of live servers (SHOW SERVERS).
    fn register_server(self: &Arc<Self>, conn: &mut ServerConn, user: &str, epoch: u64) {
        use crate::conns::{Registered, RegistryRef, ServerRecord, ServerSpec};
        let record = ServerRecord::new(ServerSpec {
            id: conn.id,
            user: user.to_owned(),
            database: self.key.database.to_string(),
            peer: conn.stream.peer(),
            port: conn.port,
            local: conn.stream.local(),
            remote_pid: conn.backend_key.map_or(0, |(pid, _)| pid),
            epoch,
            cancel: conn
                .backend_key
                .map(|(pid, secret)| crate::cancel::CancelTarget {
                    host: Arc::clone(&conn.host),
                    port: conn.port,
                    pid,
                    secret,
                }),
            pool: Arc::downgrade(self),
        });
        let registry = RegistryRef::Pool(Arc::clone(self), |p: &Pool| &p.live_servers);
        conn.live = Some(Registered::new(record, conn.id, registry));
    }

    /// The configuration epoch: a server opened under another one closes at its next release.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// RECONNECT: every server closes at its next release (idle ones now); new ones open as needed.
    pub(crate) fn reconnect(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.close_idle("RECONNECT");
        self.launch_if_needed();
    }

    /// PgBouncer's fast fail for logins: when the last login failed and the pool has no established
    /// connection, a new client gets the cached error at once instead of waiting.
    pub fn check_fast_fail(&self) -> Result<(), CheckoutError> {
        let settings = self.settings();
        let inner = self.lock();
        match &inner.failure {
            Some((at, e))
                if inner.open == inner.connecting && at.elapsed() < settings.server_login_retry =>
            {
                Err(CheckoutError::FastFail(Arc::clone(e)))
            }
            _ => Ok(()),
        }
    }

    /// Closes one idle connection (the least recently used); true if there was one.
    pub(crate) fn evict_one_idle(&self, reason: &str) -> bool {
        let conn = {
            let mut inner = self.lock();
            (!inner.idle.is_empty()).then(|| inner.idle.remove(0))
        };
        conn.map(|c| c.close(reason)).is_some()
    }

    pub(crate) fn close_idle(&self, reason: &str) {
        let idle = std::mem::take(&mut self.lock().idle);
        for conn in idle {
            conn.close(reason);
        }
    }

    /// Periodic upkeep: idle timeout, lifetime, health of idle connections, min_pool_size.
    pub(crate) fn maintain(&self) {
        let settings = self.settings();
        let now = Coarse::now();
        let retired = {
            let mut inner = self.lock();
            let mut retired = Vec::new();
            let mut keep = Vec::with_capacity(inner.idle.len());
            // server_idle_timeout never takes the pool below min_pool_size (PgBouncer keeps those).
            let mut open = inner.open;
            let idle_timeout = settings.server_idle_timeout;
            for conn in inner.idle.drain(..) {
                let reason = self.retire_reason(&conn, &settings, now).or_else(|| {
                    (!idle_timeout.is_zero()
                        && now.since(conn.last_used) >= idle_timeout
                        && open > settings.min_pool_size)
                        .then_some("server idle timeout")
                });
                if reason.is_some() {
                    open -= 1;
                }
                match reason {
                    Some(r) => retired.push((conn, r)),
                    None => keep.push(conn),
                }
            }
            inner.idle = keep;
            retired
        };
        for (conn, reason) in retired {
            conn.close(reason);
        }
        self.launch_if_needed();
    }

    /// PAUSE: stop opening and close connections as they come back. RESUME undoes it.
    pub(crate) fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
        if paused {
            self.close_idle("pause mode");
        } else {
            self.launch_if_needed();
        }
    }

    /// A client logs in to this pool.
    pub fn client_joined(&self) {
        self.clients.fetch_add(1, Ordering::AcqRel);
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A client of this pool disconnects.
    pub fn client_left(&self) {
        if self.clients.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
    }

    /// How long the pool has had no clients, if it has none.
    pub fn unused_for(&self) -> Option<Duration> {
        if self.clients.load(Ordering::Acquire) > 0 {
            return None;
        }
        (*self.idle_since.lock().unwrap_or_else(|e| e.into_inner())).map(|t| t.elapsed())
    }

    /// For the janitor, once per round: how long the pool has had neither clients nor server connections
    /// (`None` while it has either). PgBouncer's pool_idle_timeout frees a pool after this long.
    pub fn empty_for(&self) -> Option<Duration> {
        let empty = self.clients.load(Ordering::Acquire) == 0 && self.counts().0 == 0;
        let mut since = self.empty_since.lock().unwrap_or_else(|e| e.into_inner());
        if !empty {
            *since = None;
            return None;
        }
        Some(since.get_or_insert_with(Instant::now).elapsed())
    }

    /// Connections open (idle + in use + opening) and idle, for tests and the console.
    pub fn counts(&self) -> (u32, u32) {
        let inner = self.lock();
        (inner.open, inner.idle.len() as u32)
    }

    /// Connections linked to a client (or being cleaned up after one), not idle and not opening.
    pub fn in_use(&self) -> u32 {
        let inner = self.lock();
        inner.open - inner.connecting - inner.idle.len() as u32
    }

    /// Clients waiting in the queue now (not those that gave up and wait to be swept out of it).
    pub fn waiting(&self) -> usize {
        self.lock()
            .waiters
            .iter()
            .filter(|w| !w.tx.is_closed())
            .count()
    }

    /// The connection and queue counts at one moment, for the console.
    pub fn snapshot(&self) -> PoolSnapshot {
        let inner = self.lock();
        let idle = inner.idle.len() as u32;
        // A waiter that gave up (query_wait_timeout, disconnect) stays queued until a grant or a launch
        // sweeps it out; it is not waiting any more.
        let waiting = || inner.waiters.iter().filter(|w| !w.tx.is_closed());
        PoolSnapshot {
            open: inner.open,
            idle,
            connecting: inner.connecting,
            in_use: inner.open - inner.connecting - idle,
            waiting: waiting().count() as u32,
            max_wait: waiting()
                .map(|w| w.since.elapsed())
                .max()
                .unwrap_or_default(),
            paused: inner.paused,
        }
    }
}

/// A pool's counts at one moment (SHOW POOLS, SHOW DATABASES, PAUSE's wait).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// Idle + in use + opening.
    pub open: u32,
    pub idle: u32,
    pub connecting: u32,
    /// Linked to a client or being cleaned up after one.
    pub in_use: u32,
    /// Clients queued for a server.
    pub waiting: u32,
    /// How long the longest-waiting client has waited.
    pub max_wait: Duration,
    pub paused: bool,
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// A waiting client that has waited reserve_pool_timeout: while it waits, the pool may grow into
/// its reserve. Dropped when the client stops waiting (served or given up).
/// A waiter's claim on the reserve (it waited reserve_pool_timeout), given back when it stops waiting.
struct ReserveClaim(Arc<Pool>);

impl ReserveClaim {
    fn new(pool: &Pool) -> Option<Self> {
        let pool = pool.me.upgrade()?;
        pool.lock().reserve_wanted += 1;
        Some(Self(pool))
    }
}

impl Drop for ReserveClaim {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.reserve_wanted = inner.reserve_wanted.saturating_sub(1);
    }
}

/// What [`Pool::enqueue`] found.
pub enum Enqueued {
    /// A connection went idle before the client joined the queue.
    Idle(ServerConn),
    Queued(Queued),
}

/// A place in a pool's queue. The grant arrives by itself ([`Queued::poll_grant`]); the deadlines are the
/// holder's to watch with a timer ([`Queued::next_deadline`], then [`Queued::deadline_passed`]), so that
/// a waiting client's session needs no timer beyond its own one. Dropping it leaves the queue (closing a
/// server handed over meanwhile: [`Queued::leave`] returns it to the pool).
pub struct Queued {
    rx: oneshot::Receiver<Grant>,
    started: Instant,
    assigned: bool,
    /// The nearer of query_wait_timeout and query_timeout, and the error it gives.
    wait: Option<(Instant, CheckoutError)>,
    /// When reserve_pool_timeout passes, until it has.
    reserve_at: Option<Instant>,
    reserve: Option<ReserveClaim>,
}

impl Queued {
    /// The grant: a connection handed over by a release or a fresh login, or why there is none.
    pub fn poll_grant(
        &mut self,
        pool: &Pool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ServerConn, CheckoutError>> {
        Poll::Ready(match ready!(Pin::new(&mut self.rx).poll(cx)) {
            Ok(Ok(conn)) => {
                pool.handed(self.started, self.assigned);
                Ok(conn)
            }
            Ok(Err(e)) => Err(CheckoutError::Server(e)),
            // The pool gave its queue up without an answer.
            Err(_) => Err(CheckoutError::Closed),
        })
    }

    /// Leaves the queue without taking a server: one handed over meanwhile (the grant crossing the client's
    /// going: a KILL, a lost client, a drain) goes back to the pool warm instead of being closed.
    pub fn leave(mut self, pool: &Pool) {
        self.rx.close();
        if let Ok(Ok(conn)) = self.rx.try_recv() {
            pool.checkin_unused(conn);
        }
    }

    /// The next moment [`Queued::deadline_passed`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.reserve_at, &self.wait) {
            (Some(r), Some((w, _))) => Some(r.min(*w)),
            (r, w) => r.or(w.as_ref().map(|(w, _)| *w)),
        }
    }

    /// Acts on the deadlines passed by `now`: past reserve_pool_timeout the waiter may use the reserve; past
    /// query_wait_timeout (or query_timeout) it gives up, unless a connection was granted at that moment.
    pub fn deadline_passed(
        &mut self,
        pool: &Pool,
        now: Instant,
    ) -> Option<Result<ServerConn, CheckoutError>> {
        if self.reserve_at.is_some_and(|at| at <= now) {
            self.reserve_at = None;
            self.reserve = ReserveClaim::new(pool);
            pool.launch_if_needed();
        }
        if self.wait.as_ref().is_some_and(|(at, _)| *at <= now) {
            self.rx.close();
            if let Ok(Ok(conn)) = self.rx.try_recv() {
                pool.handed(self.started, self.assigned);
                return Some(Ok(conn));
            }
            let (_, error) = self.wait.take()?;
            if matches!(error, CheckoutError::WaitTimeout) {
                pool.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
            }
            return Some(Err(error));
        }
        None
    }
}

/// PgBouncer's `new connection to server (from <local address>)` (no `from` over a Unix socket).
fn log_new_server(conn: &ServerConn, key: &PoolKey) {
    let label = conn.label_in(key);
    match conn.stream.local_addr() {
        Some(local) => conn_log!(info, label, "new connection to server (from {local})"),
        None => conn_log!(info, label, "new connection to server"),
    }
}

/// PgBouncer's `closing because: connect failed | connect timeout | login failed (age=…s)` for a server
/// connection that never came up (under an id of its own, as PgBouncer's socket had one).
fn log_failed_server(login: &server::LoginSpec, key: &PoolKey, e: &ServerError, started: Instant) {
    let reason = match e {
        ServerError::Connect { .. } => "connect failed",
        ServerError::ConnectTimeout => "connect timeout",
        _ => "login failed",
    };
    let label = crate::logging::ConnLabel {
        kind: 'S',
        id: server::next_id(),
        db: &key.database,
        user: &key.user,
        addr: crate::logging::ConnAddr::Server {
            host: &login.host,
            port: login.port,
        },
    };
    conn_log!(
        info,
        label,
        "closing because: {reason} (age={}s)",
        started.elapsed().as_secs()
    );
}

/// One unit of pool capacity, held by an open or opening connection. Dropping it frees the capacity.
pub struct Slot {
    pool: Arc<Pool>,
    connecting: bool,
    /// Whether dropping the slot may open another connection in its place. False until the task opening
    /// the connection first runs: a task the runtime refuses (it is shutting down) drops its future
    /// unpolled, inside `tokio::spawn`, and relaunching from there would recurse until the stack overflows.
    relaunch: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut inner = self.pool.lock();
            inner.open -= 1;
            if self.connecting {
                inner.connecting -= 1;
            }
        }
        self.pool.db_limit.release();
        self.pool.user_limit.release();
        if self.relaunch {
            self.pool.launch_if_needed();
        }
    }
}

impl Slot {
    /// The pool this connection counts against.
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({})", self.pool.key)
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolMode;
    use crate::server::LoginSpec;

    /// Settings of a forced-user pool that keeps a connection to `port` open.
    fn settings(port: u16) -> PoolSettings {
        let long = Duration::from_secs(60);
        PoolSettings {
            mode: PoolMode::Transaction,
            pool_size: 1,
            min_pool_size: 1,
            reserve_pool_size: 0,
            reserve_pool_timeout: long,
            max_db_connections: 0,
            max_user_connections: 0,
            hosts: vec!["127.0.0.1".into()],
            load_balance_hosts: LoadBalanceHosts::RoundRobin,
            login: LoginSpec {
                host: "127.0.0.1".into(),
                port,
                user: "u".into(),
                database: "d".into(),
                startup_params: Vec::new(),
                secret: None,
                secret_source: "from auth_file",
                connect_timeout: long,
                connect_query: None,
                keepalive: crate::net::Keepalive::default(),
                max_packet: u32::MAX,
            },
            forced_user: true,
            server_lifetime: long,
            server_idle_timeout: long,
            server_login_retry: long,
            server_check_delay: long,
            server_check_query: None,
            server_reset_query: None,
            server_reset_query_always: false,
            query_wait_timeout: long,
            max_packet: u32::MAX,
            session_state: crate::config::SessionState::Pin,
            log_connections: true,
            log_disconnections: true,
            session_alias: None,
        }
    }

    #[test]
    fn connections_cut_by_runtime_shutdown_do_not_relaunch_forever() {
        // Accepts and never answers: logins stay in progress until the runtime goes.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        silent.set_nonblocking(true).expect("nonblocking");
        let port = silent.local_addr().expect("addr").port();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (pool, _accepted) = rt.block_on(async {
            let pool = Pool::new(
                PoolKey::new("d", "u"),
                settings(port),
                Arc::default(),
                Arc::default(),
                Arc::new(Tracked::new(&[])),
            );
            pool.launch_if_needed();
            // The login task has run once it has connected.
            loop {
                match silent.accept() {
                    Ok((sock, _)) => break (pool, sock),
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        // The cut login drops its slot while the runtime refuses new tasks; this must not recurse forever.
        drop(rt);
        assert_eq!(pool.counts().0, 0);
    }
}
