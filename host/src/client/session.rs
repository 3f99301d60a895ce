//! The query loop of a logged-in client: wait for a message, get a server, relay until the pool mode says
//! the server can go back, give it back clean.

use std::collections::BTreeMap;
use std::fmt::{Debug, Write as _};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::time::Sleep;

use super::park::{Lot, PARK_NEW_AFTER};
use super::prepared::{ClientStatements, Statements};
use super::relay::{Counts, Denial, QueryPolicy, Relay, RelayError, STREAM_MIN, ServerCtx};
use super::{ClientConn, ClientInfo, End, OutQueue, login::checkout_end};
use crate::cancel::{CancelHandle, CancelTarget};
use crate::config::{PoolMode, SessionState};
use crate::conns::ClientRecord;
use crate::params::{ParamValues, Tracked, quote_ident, quote_literal};
use crate::plugin::convert::{self, LoginFacts, SessionInfo};
use crate::pool::{Enqueued, Pool, Queued};
use crate::protocol::backend::{self, Severity};
use crate::protocol::frontend::{self, Kind, tag as fe};
use crate::protocol::{HEADER_LEN, frame};
use crate::server::{ServerBody, ServerConn, ServerError};
use crate::sql::session::{Effects, Sticky};
use crate::state::{CountKind, Runtime, State};

/// PgBouncer's words for a client that has waited query_wait_notify for a server.
const QUEUED_NOTICE: &str =
    "No server connection available in postgres backend, client being queued";

/// Stop reading a side while this much is queued for the other (backpressure).
const HIGH_WATER: usize = 256 * 1024;
/// Read buffers grow in steps of this.
const READ_CHUNK: usize = 8 * 1024;

/// Client-side timeouts, resolved for the login user ([users] → global). Zero disables one.
///
/// Whole milliseconds (a fraction rounds up, so a tiny timeout never becomes "none"; beyond 49 days they
/// saturate): 16 bytes in every session rather than 64.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTimeouts {
    query: Millis,
    idle_transaction: Millis,
    transaction: Millis,
    client_idle: Millis,
}

/// A timeout in whole milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Millis(u32);

impl Millis {
    fn from_duration(d: Duration) -> Self {
        let ms = d.as_nanos().div_ceil(1_000_000);
        Self(u32::try_from(ms).unwrap_or(u32::MAX))
    }

    fn get(self) -> Duration {
        Duration::from_millis(u64::from(self.0))
    }
}

impl ClientTimeouts {
    pub fn resolve(runtime: &Runtime, user: &str) -> Self {
        let s = &runtime.config.settings;
        let u = runtime.config.users.get(user);
        let pick = |user: Option<Duration>, global: Duration| {
            Millis::from_duration(user.filter(|d| !d.is_zero()).unwrap_or(global))
        };
        Self {
            query: pick(u.and_then(|u| u.query_timeout), s.query_timeout),
            idle_transaction: pick(
                u.and_then(|u| u.idle_transaction_timeout),
                s.idle_transaction_timeout,
            ),
            transaction: pick(u.and_then(|u| u.transaction_timeout), s.transaction_timeout),
            client_idle: pick(u.and_then(|u| u.client_idle_timeout), s.client_idle_timeout),
        }
    }

    pub fn query_timeout(&self) -> Duration {
        self.query.get()
    }

    pub fn idle_transaction_timeout(&self) -> Duration {
        self.idle_transaction.get()
    }

    pub fn transaction_timeout(&self) -> Duration {
        self.transaction.get()
    }

    pub fn client_idle_timeout(&self) -> Duration {
        self.client_idle.get()
    }

    /// Whether any timeout applies while the client holds a server (client_idle_timeout does not).
    fn any_while_linked(&self) -> bool {
        [self.query, self.idle_transaction, self.transaction] != [Millis(0); 3]
    }
}

/// A client counted in its pool for as long as it is connected, and listed in its registry of live clients
/// (SHOW CLIENTS, KILL_CLIENT) once logged in. One field for both (the listing's id beside the pool), where a
/// registration of its own kept a second reference to the pool and the record: 40 bytes in every session.
#[derive(Debug)]
pub struct PoolClient(
    Arc<Pool>,
    /// The id it is listed under; 0 until listed.
    u64,
);

impl PoolClient {
    /// Takes over a pool the client already joined ([`crate::pool::Pools::join`]).
    pub fn joined(pool: Arc<Pool>) -> Self {
        Self(pool, 0)
    }

    /// Lists the client that just logged in among its pool's live clients, under its pool's database and
    /// the application_name it starts with. One listed once an immediate shutdown has begun is shut down at
    /// once, as [`crate::conns::Registered::client`] does.
    fn list(&mut self, info: &Arc<ClientInfo>, app: &str, lifecycle: &crate::state::Lifecycle) {
        debug_assert!(self.1 == 0 && info.id != 0, "listed once, under a real id");
        info.list_as(Arc::clone(&self.0.key.database), app);
        self.0.live_clients.insert(info.id, Arc::clone(info));
        self.1 = info.id;
        if lifecycle.is_terminating() {
            info.shut_down();
        }
    }
}

impl Drop for PoolClient {
    fn drop(&mut self) {
        if self.1 != 0 {
            self.0.live_clients.remove(self.1);
        }
        self.0.client_left();
    }
}

/// A pinned client, counted in its pool's `pinned_clients` for as long as this lives.
#[derive(Debug)]
struct PinnedGauge(Arc<Pool>);

impl PinnedGauge {
    fn new(pool: &Arc<Pool>) -> Self {
        pool.stats.pinned_clients.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(pool))
    }
}

impl Drop for PinnedGauge {
    fn drop(&mut self) {
        self.0.stats.pinned_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool client's places against max_client_conn, max_db_client_connections and
/// max_user_client_connections, given back when the session drops. Held inline, the names shared with the
/// counts' keys: as three boxed guards, each name copied, they were ~250 bytes of every idle client's heap,
/// and 80 bytes of its session as three guards of their own.
#[derive(Debug)]
pub struct ClientCounted {
    total: super::login::ClientTotal,
    db: Option<Arc<str>>,
    user: Option<Arc<str>>,
}

impl ClientCounted {
    /// Starts from the place against max_client_conn; the others are counted by [`ClientCounted::count`].
    pub fn new(total: super::login::ClientTotal) -> Self {
        Self {
            total,
            db: None,
            user: None,
        }
    }

    /// The process's state.
    pub fn state(&self) -> &Arc<State> {
        self.total.state()
    }

    /// Counts the client against `name`'s limit `max` (0 = unlimited) of `kind`, unless that is full.
    pub fn count(&mut self, kind: CountKind, name: &str, max: u32) -> bool {
        let Some(key) = self.total.counts().try_count(kind, name, max) else {
            return false;
        };
        let slot = match kind {
            CountKind::Database => &mut self.db,
            CountKind::User => &mut self.user,
        };
        if let Some(old) = slot.replace(key) {
            self.total.counts().uncount(kind, &old);
        }
        true
    }
}

impl Drop for ClientCounted {
    fn drop(&mut self) {
        let counts = self.total.counts();
        if let Some(db) = &self.db {
            counts.uncount(CountKind::Database, db);
        }
        if let Some(user) = &self.user {
            counts.uncount(CountKind::User, user);
        }
    }
}

pub struct Session {
    /// Shared with the client's task, which logs with it after the session is gone.
    info: Arc<ClientInfo>,
    pool: PoolClient,
    params: ParamValues,
    cancel: CancelHandle,
    timeouts: ClientTimeouts,
    /// Protocol state of the current link, reset per link, and the output queued for its server (kept here
    /// so their allocations are reused; boxed, so that a link's future holds a pointer to it rather than a
    /// copy: that future is allocated per transaction; and an idle session keeps 8 bytes, not 48). `None`
    /// until the first link, and again once parked.
    relay_state: Option<Box<LinkState>>,
    /// The client's named prepared statements, when pgwarden maps them to servers' (max_prepared_statements
    /// in transaction and statement pooling).
    statements: ClientStatements,
    /// Session settings the client changed (beyond the reported parameters), as the server spells their
    /// values: put on whichever server it lands on in transaction and statement pooling.
    settings: ClientSettings,
    /// The client's server session holds state that cannot move (session_state=pin): it keeps its server
    /// (boxed: few sessions pin one, and every session carries the field).
    pinned: Option<ServerConn>,
    /// It ran set_config on a setting it computed: which one is unknown, so it keeps its server for good.
    pinned_for_good: bool,
    /// The last transaction ended with the client pinned: the next one checks whether it still must be.
    /// Counted in the pool's pinned clients while set.
    was_pinned: Option<PinnedGauge>,
    /// What policy plugins are told about this client: made at its first policy check, then kept up to date
    /// (boxed, and only for sessions a policy plugin applies to: every idle client carries the field).
    plugin_info: Option<Box<SessionInfo>>,
    /// What `plugin_info` is made from when a policy check first needs it.
    login_facts: LoginFacts,
    /// The session's one timer, kept while the session is busy once made: disarmed rather than dropped, so
    /// that the next wait re-arms it (a later deadline is one atomic store in tokio's wheel) instead of
    /// allocating, registering and unregistering a timer per transaction. A disarmed timer stays registered
    /// until its old deadline, then wakes the task once and is never looked at; a client that parks drops it
    /// (one that cannot park, pinned or refused by the lot, keeps it).
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer holds a deadline someone waits for.
    timer_armed: bool,
    /// The timer is a fresh client's time to park (see `wait_client_readable`); cleared by `set_timer`.
    timer_parks: bool,
    /// The lot refused to take it as a fresh client: it does not try by itself again (the lot asks it later).
    park_refused: bool,
    /// Its places against the client limits; also the way to the process's state.
    counted: ClientCounted,
}

/// A client's session settings ([`Session::settings`]): boxed when it has any (few clients do, and every
/// idle session carries the field: 8 bytes, where a map takes 24).
#[derive(Debug, Default)]
#[allow(
    clippy::box_collection,
    reason = "the box is the point: 8 bytes in every session until a setting is made"
)]
struct ClientSettings(Option<Box<BTreeMap<String, String>>>);

impl ClientSettings {
    fn map(&self) -> &BTreeMap<String, String> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        self.0.as_deref().unwrap_or(&NONE)
    }

    fn insert(&mut self, name: &str, value: &str) {
        self.0
            .get_or_insert_default()
            .insert(name.to_owned(), value.to_owned());
    }

    fn remove(&mut self, name: &str) {
        if let Some(map) = &mut self.0 {
            map.remove(name);
            if map.is_empty() {
                self.0 = None;
            }
        }
    }
}

/// What a link works with, kept from one link to the next.
#[derive(Default)]
struct LinkState {
    relay: Relay,
    /// Output queued for the linked server.
    to_server: OutQueue,
}

/// What woke a client waiting between transactions.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    Client,
    PinnedServer,
    /// The parking lot asked it to park, and it can: no server kept, nothing buffered either way.
    Park,
}

/// What ended (or interrupted) a client's wait in a pool's queue.
enum Waited {
    Grant(Result<ServerConn, crate::pool::CheckoutError>),
    Timer,
    Killed,
}

/// Why [`Session::run`] returned.
#[derive(Debug)]
pub enum Stop {
    /// The session is over.
    End(End),
    /// Idle and asked to park: the connection goes to the parking lot, with its client_idle_timeout's
    /// deadline if it has one (see [`super::park`]).
    Park(Option<Instant>),
}

/// What the wait between transactions ended with.
enum Next {
    Message,
    Park(Option<Instant>),
}

/// How a link ends.
enum LinkEnd {
    /// The server is clean and idle: back to the pool, and on to the next transaction.
    Release,
    /// The session is over; the server is disposed of as `Disposal` says.
    Finish(End, Disposal),
}

/// What to do with a server whose client is leaving.
#[derive(Debug)]
enum Disposal {
    /// Clean and idle: reset per the pool mode, then back to the pool.
    Reset,
    /// Idle inside a transaction: ROLLBACK first.
    Rollback,
    /// Unusable (mid-query, broken, or mid-protocol): close it, cancelling a running query first.
    Close(&'static str, bool),
}

enum Io {
    ClientData,
    ServerData,
    ClientGone(String),
    ServerGone(String),
    Progress,
    Timer,
    Stop,
}

impl Session {
    pub fn new(
        info: Arc<ClientInfo>,
        pool: PoolClient,
        params: ParamValues,
        cancel: CancelHandle,
        timeouts: ClientTimeouts,
        login_facts: LoginFacts,
        counted: ClientCounted,
    ) -> Self {
        let mut pool = pool;
        pool.list(
            &info,
            params.get(Tracked::APPLICATION_NAME).unwrap_or(""),
            &counted.state().lifecycle,
        );
        Self {
            info,
            pool,
            params,
            cancel,
            timeouts,
            relay_state: None,
            statements: ClientStatements::default(),
            settings: ClientSettings::default(),
            pinned: None,
            pinned_for_good: false,
            was_pinned: None,
            plugin_info: None,
            login_facts,
            timer: None,
            timer_armed: false,
            timer_parks: false,
            park_refused: false,
            counted,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool.0
    }

    pub fn state(&self) -> &Arc<State> {
        self.counted.state()
    }

    /// The configuration now (a reload swaps it).
    fn runtime(&self) -> arc_swap::Guard<Arc<Runtime>> {
        self.counted.state().runtime.load()
    }

    /// The lot could not take it: a fresh client stops parking by itself (a socket the lot cannot watch
    /// now would be moved out of the runtime and back every few milliseconds); the lot asks it later.
    pub fn park_refused(&mut self) {
        self.park_refused = true;
    }

    pub fn params(&self) -> &ParamValues {
        &self.params
    }

    /// The client's record (shared with its task and the registry of live clients).
    pub fn info(&self) -> &Arc<ClientInfo> {
        &self.info
    }

    pub fn cancel_key(&self) -> (u32, u32) {
        self.cancel.key()
    }

    /// Runs the query loop until the client leaves or the session must end.
    ///
    /// Takes `&mut self` (the caller keeps the session boxed): an `async fn` taking `self` by value keeps
    /// two copies of it in its state, and a client's task keeps its largest state for as long as the client
    /// stays. For the same reason each transaction's state (the server, the relay) is boxed while it runs,
    /// and the idle wait is a poll of a few bytes: an idle client's task is little more than its socket.
    pub async fn run(&mut self, conn: &mut ClientConn) -> Stop {
        loop {
            match self.wait_for_message(conn).await {
                Ok(Next::Message) => {}
                Ok(Next::Park(deadline)) => return Stop::Park(deadline),
                Err(end) => {
                    if let Some(server) = self.pinned.take() {
                        // LISTEN, locks, temporary tables... go with the connection.
                        self.dispose(
                            server,
                            Disposal::Close("client with session state left", false),
                        );
                    }
                    return Stop::End(end);
                }
            }
            if let Some(end) = Box::pin(self.transaction(conn)).await {
                return Stop::End(end);
            }
        }
    }

    /// Serves what the client sent with a server (the pinned one, or one from the pool) until the server
    /// can be given up; `Some` when the session is over. The rare paths that wait (reading session state
    /// back, a reset query on release, the pool's server check) are boxed again, to keep this state
    /// (allocated per transaction) small; queueing for a server is not (at 100+ clients most transactions
    /// queue, and its state is a few words and the session's timer).
    async fn transaction(&mut self, conn: &mut ClientConn) -> Option<End> {
        let mut server = match self.pinned.take() {
            Some(server) => server,
            None => match self.acquire(conn).await {
                Ok(server) => server,
                Err(end) => return Some(end),
            },
        };
        self.link(&server);
        let end = self.relay(conn, &mut server).await;
        self.unlink().await;
        match end {
            LinkEnd::Release => {
                let keep = if self.settle_transaction(&mut server) {
                    Box::pin(self.after_transaction(&mut server, conn)).await
                } else {
                    Ok(false)
                };
                match keep {
                    Ok(true) => self.pinned = Some(server),
                    Ok(false) => match self.pool.0.reset_query_always() {
                        None => self.release(server),
                        Some(reset) => Box::pin(self.reset_and_release(server, reset)).await,
                    },
                    Err(e) => {
                        server.close(&format!("reading session state failed: {e}"));
                        if self.pinned_for_good || self.sticky() {
                            return Some(End::pooler("server session state lost"));
                        }
                    }
                }
                None
            }
            LinkEnd::Finish(end, disposal) => {
                let sticky = self.was_pinned.is_some() || self.pinned_for_good || self.sticky();
                let disposal = match disposal {
                    Disposal::Reset | Disposal::Rollback if sticky => {
                        Disposal::Close("client with session state left", false)
                    }
                    other => other,
                };
                self.dispose(server, disposal);
                Some(end)
            }
        }
    }

    /// Waits, holding no server, until the client has sent the start of its next message. A Terminate ends
    /// the session; messages are awaited whole so that no server waits on a slow client, except large ones
    /// of the kinds the relay streams (Bind, CopyData, FunctionCall).
    async fn wait_for_message(&mut self, conn: &mut ClientConn) -> Result<Next, End> {
        conn.flush().await?;
        conn.out.shrink_when_empty();
        let max = self.runtime().config.settings.max_packet_size;
        let idle_since = Instant::now();
        loop {
            if let Some(h) = frame::peek(&conn.rbuf, max).map_err(|e| End::pooler(e.to_string()))? {
                match Kind::of(h.tag) {
                    Kind::Terminate => return Err(End::Closed("client close request".into())),
                    Kind::Password | Kind::Unknown => {
                        return Err(End::pooler(format!(
                            "unknown packet type '{}' from client",
                            char::from(h.tag)
                        )));
                    }
                    // Only the kinds the relay streams may start before they are whole: a larger Query or
                    // Parse is relayed whole, so waiting for it linked would release the server at once
                    // (nothing sent, nothing owed) and come straight back here, never reading the rest.
                    _ if conn.rbuf.len() >= h.frame_len
                        || (h.frame_len > STREAM_MIN
                            && matches!(h.tag, fe::BIND | fe::COPY_DATA | fe::FUNCTION_CALL)) =>
                    {
                        return Ok(Next::Message);
                    }
                    _ => {}
                }
            }
            if conn.rbuf.is_empty() && !keeps_read_buffer(conn.rbuf.capacity(), &self.info) {
                // A fresh client gives up what its login read into: thousands of them logging in should
                // cost next to nothing. One that has run something keeps an ordinary buffer (an
                // allocation and a free fewer per transaction) until it parks, which drops it.
                conn.rbuf = BytesMut::new();
            }
            if conn.local.is_empty() && conn.local.capacity() > 0 {
                // Nor what is left of the buffer pgwarden's own messages (the welcome) were built in.
                conn.local = BytesMut::new();
            }
            // Bound first: a `match` on the `?` would keep the `Result` (an `End`'s size) through the
            // pinned server's relay below, in every idle client's task.
            let wake = self.wait_client_readable(conn, idle_since).await?;
            match wake {
                Wake::Client => {}
                Wake::PinnedServer => {
                    // Boxed: only a pinned client's server ever speaks between transactions, and the state
                    // of this wait is kept by every idle client.
                    Box::pin(self.relay_pinned_server(conn)).await?;
                    continue;
                }
                Wake::Park => {
                    // The lot keeps the deadline; the timer goes (and the task its waker holds). So do the
                    // buffers kept for the next link (~700 bytes once a client ran a query): the next link
                    // after a second's rest can make them again.
                    self.timer = None;
                    self.timer_armed = false;
                    self.relay_state = None;
                    let idle_timeout = self.timeouts.client_idle_timeout();
                    return Ok(Next::Park(
                        (!idle_timeout.is_zero()).then(|| idle_since + idle_timeout),
                    ));
                }
            }
            if conn.rbuf.capacity() - conn.rbuf.len() < HEADER_LEN {
                conn.rbuf.reserve(READ_CHUNK);
            }
            match conn.stream.try_read_buf(&mut conn.rbuf) {
                Ok(0) => return Err(End::Closed("client unexpected eof".into())),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(End::Closed(format!("client read error: {e}"))),
            }
        }
    }

    /// Arms client_idle_timeout, then waits on what an idle client waits on. Not an `async fn`: its state
    /// would keep its arguments twice; the poll keeps two references.
    fn wait_client_readable<'a>(
        &'a mut self,
        conn: &'a ClientConn,
        idle_since: Instant,
    ) -> impl Future<Output = Result<Wake, End>> + 'a {
        let idle_timeout = self.timeouts.client_idle_timeout();
        let idle_deadline = (!idle_timeout.is_zero()).then(|| idle_since + idle_timeout);
        // A client that has sent nothing since its login parks itself soon (see `PARK_NEW_AFTER`), rather than
        // when the lot next looks: in a login storm, fewer of them are tasks at once.
        let park_at = (!self.info.has_sent()
            && !self.park_refused
            && self
                .counted
                .state()
                .parking
                .as_ref()
                .is_some_and(Lot::is_open))
        .then(|| idle_since + PARK_NEW_AFTER);
        match (park_at, idle_deadline) {
            (Some(park), idle) if idle.is_none_or(|idle| park < idle) => {
                self.set_timer(park_at);
                self.timer_parks = true;
            }
            _ => self.set_timer(idle_deadline),
        }
        poll_fn(move |cx| self.poll_idle(cx, conn))
    }

    /// One look at everything an idle client waits on. Written as a poll rather than a `select!` over
    /// futures: its state is a few bytes, where the futures' were 600, kept by every idle client's task.
    fn poll_idle(&mut self, cx: &mut Context<'_>, conn: &ClientConn) -> Poll<Result<Wake, End>> {
        // The client sent something (or closed).
        if let Poll::Ready(res) = conn.stream.poll_read_ready(cx) {
            if self.info.park_requested() {
                // Not idle any more: a later idle spell is asked about again.
                self.info.clear_park_request();
            }
            return Poll::Ready(
                res.map(|()| Wake::Client)
                    .map_err(|e| End::Closed(format!("client read error: {e}"))),
            );
        }
        // The server a pinned client keeps sent something: a notification for its LISTEN, a notice, or the
        // news that it is going away (an error is read, and reported, there).
        if let Some(server) = &self.pinned
            && server.stream.poll_read_ready(cx).is_ready()
        {
            return Poll::Ready(Ok(Wake::PinnedServer));
        }
        // A fresh client's time to park, then client_idle_timeout between transactions.
        if let Some(timer) = self.armed_timer()
            && timer.poll(cx).is_ready()
        {
            if self.timer_parks {
                // As if the lot had asked; the timer now keeps client_idle_timeout, if there is one (from
                // the same start: the park's deadline is PARK_NEW_AFTER past it).
                self.info.mark_park();
                let idle_timeout = self.timeouts.client_idle_timeout();
                let idle_since = self
                    .timer
                    .as_ref()
                    .map_or_else(Instant::now, |t| t.deadline().into_std() - PARK_NEW_AFTER);
                self.set_timer((!idle_timeout.is_zero()).then(|| idle_since + idle_timeout));
            }
            if let Some(timer) = self.armed_timer()
                && timer.poll(cx).is_ready()
            {
                self.timer_armed = false;
                return Poll::Ready(Err(End::pooler("client_idle_timeout")));
            }
        }
        // A drain (WAIT_FOR_SERVERS) is not watched here: it leaves clients between transactions alone
        // until the process exits, and the next transaction's checkout sees it.
        // Immediate shutdown, KILL, KILL_CLIENT: the record's kill switch. (A drain needs no watching: it
        // changes nothing for a linked or idle client, the next checkout reads it from a flag, and a client
        // queued for a server is answered by its pool's queue closing.)
        if self.info.poll_killed(cx).is_ready() {
            return Poll::Ready(Err(killed_end(&self.info)));
        }
        // The parking lot's request (woken through the kill switch's waker). One that cannot be met now
        // (a kept server, a message half read) stands until the client next sends something.
        if self.info.park_requested()
            && self.pinned.is_none()
            && conn.rbuf.is_empty()
            && conn.out.is_empty()
            && conn.local.is_empty()
        {
            return Poll::Ready(Ok(Wake::Park));
        }
        Poll::Pending
    }

    /// Passes what the server of an idle pinned client sent (notifications, notices, parameter changes) to
    /// the client. A server that fails or goes away ends the session: the state it pinned is lost.
    async fn relay_pinned_server(&mut self, conn: &mut ClientConn) -> Result<(), End> {
        let Some(server) = self.pinned.as_deref_mut() else {
            return Ok(());
        };
        let max = self.pool.0.settings().max_packet;
        let lost = match server.stream.try_read_buf(&mut server.rbuf) {
            Ok(0) => Some("server closed the connection".to_owned()),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
            Err(e) => Some(format!("server read error: {e}")),
        };
        let mut fatal = None;
        loop {
            match frame::split(&mut server.rbuf, max) {
                Ok(Some(f)) => match f.tag {
                    backend::tag::NOTIFICATION_RESPONSE
                    | backend::tag::NOTICE_RESPONSE
                    | backend::tag::PARAMETER_STATUS => {
                        if f.tag == backend::tag::PARAMETER_STATUS
                            && let Ok((name, value)) = backend::parse_parameter_status(&f.body)
                            && let Some(i) = self.counted.state().tracked.index(name)
                        {
                            server.params.set(i, value);
                            self.params.set(i, value);
                        }
                        conn.send(|b| {
                            b.put_u8(f.tag);
                            b.put_u32(u32::try_from(f.body.len() + 4).unwrap_or(u32::MAX));
                            b.put_slice(&f.body);
                        });
                    }
                    backend::tag::ERROR_RESPONSE => {
                        conn.send(|b| {
                            b.put_u8(f.tag);
                            b.put_u32(u32::try_from(f.body.len() + 4).unwrap_or(u32::MAX));
                            b.put_slice(&f.body);
                        });
                        fatal = Some("server sent an error while idle".to_owned());
                    }
                    other => {
                        fatal = Some(format!(
                            "unexpected message '{}' from an idle server",
                            char::from(other)
                        ));
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    fatal = Some(format!("server sent an invalid message: {e}"));
                    break;
                }
            }
        }
        conn.flush().await?;
        if let Some(reason) = lost.or(fatal) {
            if let Some(server) = self.pinned.take() {
                server.close(&reason);
            }
            self.was_pinned = None;
            return Err(End::pooler("server conn crashed?"));
        }
        Ok(())
    }

    /// Gets a server for the next transaction, waiting out a PAUSE. An idle server is taken without
    /// any timer or shared wakeup; only a client that has to wait pays for them.
    async fn acquire(&mut self, conn: &mut ClientConn) -> Result<ServerConn, End> {
        let lifecycle = &self.counted.state().lifecycle;
        if lifecycle.is_draining() {
            return Err(End::pooler("server shutting down"));
        }
        if lifecycle.is_paused() {
            self.info.set_waiting();
            self.wait_resumed().await?;
        } else if let Some(server) = self.pool.0.checkout_idle().await {
            return Ok(server);
        }
        self.wait_for_server(conn).await
    }

    /// The slow path of [`Session::acquire`]: queues for a server, telling the client it is queued after
    /// query_wait_notify. One timer (the session's) keeps every deadline of the wait, and nothing shared is
    /// registered with: a draining shutdown closes the pool's queue, KILL throws the record's switch.
    async fn wait_for_server(&mut self, conn: &mut ClientConn) -> Result<ServerConn, End> {
        self.info.set_waiting();
        let notify = self.runtime().config.settings.query_wait_notify;
        let mut notify_at = (!notify.is_zero()).then(|| Instant::now() + notify);
        let mut queued = match self
            .pool
            .0
            .enqueue(self.timeouts.query_timeout(), true)
            .await
        {
            Enqueued::Idle(server) => return Ok(server),
            Enqueued::Queued(queued) => queued,
        };
        // A drain that began before this client joined the queue did not close it (the flag is read after
        // joining: see `State::shutdown`).
        if self.counted.state().lifecycle.is_draining() {
            queued.leave(&self.pool.0);
            return Err(End::pooler("server shutting down"));
        }
        loop {
            let next = match (notify_at, queued.next_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            self.set_timer(next);
            match poll_fn(|cx| self.poll_wait(cx, &mut queued)).await {
                Waited::Grant(res) => return res.map_err(|e| checkout_end(&e)),
                Waited::Killed => {
                    queued.leave(&self.pool.0);
                    return Err(self.killed_end());
                }
                Waited::Timer => {
                    let now = Instant::now();
                    if notify_at.is_some_and(|at| at <= now) {
                        // query_wait_notify: tell a client that has waited this long that it is queued.
                        notify_at = None;
                        conn.send(|b| {
                            backend::write_notice(b, Severity::Notice, "00000", QUEUED_NOTICE);
                        });
                        if let Err(end) = conn.flush().await {
                            queued.leave(&self.pool.0);
                            return Err(end);
                        }
                    }
                    if let Some(res) = queued.deadline_passed(&self.pool.0, now) {
                        return res.map_err(|e| checkout_end(&e));
                    }
                }
            }
        }
    }

    /// One look at what a client queued for a server waits on, in this order: the pool's answer (a server,
    /// a server error, a drain), the timer, KILL (a drain is told to the client even when the immediate
    /// shutdown that ends it lands at the same time).
    fn poll_wait(&mut self, cx: &mut Context<'_>, queued: &mut Queued) -> Poll<Waited> {
        if let Poll::Ready(res) = queued.poll_grant(&self.pool.0, cx) {
            return Poll::Ready(Waited::Grant(res));
        }
        if let Some(timer) = self.armed_timer()
            && timer.poll(cx).is_ready()
        {
            return Poll::Ready(Waited::Timer);
        }
        if self.info.poll_killed(cx).is_ready() {
            return Poll::Ready(Waited::Killed);
        }
        Poll::Pending
    }

    async fn wait_resumed(&mut self) -> Result<(), End> {
        let state = Arc::clone(self.counted.state());
        let mut paused = state.lifecycle.paused.subscribe();
        let live = Arc::clone(&self.info);
        // In this order, for the reason in wait_for_server.
        tokio::select! {
            biased;
            // RESUME.
            _ = paused.wait_for(|p| !*p) => Ok(()),
            // Shutdown while paused.
            () = state.lifecycle.draining.cancelled() => Err(End::pooler("server shutting down")),
            // KILL, KILL_CLIENT, immediate shutdown.
            () = live.until_killed() => Err(killed_end(&live)),
        }
    }

    /// Links the client's record to the server's (SHOW CLIENTS, SHOW SERVERS; where a cancel request with
    /// the client's key goes).
    fn link(&mut self, server: &ServerConn) {
        if let Some(live) = &server.live {
            self.info.link(&live.record);
        }
    }

    /// Unlinks them; returns once no cancel request is still on its way to the server, so that the server
    /// can go to someone else.
    async fn unlink(&mut self) {
        if self.info.unlink(self.statements.len()) {
            self.cancel.settle(&self.info).await;
        }
    }

    /// How a session killed by KILL, KILL_CLIENT or an immediate shutdown ends.
    fn killed_end(&self) -> End {
        killed_end(&self.info)
    }

    /// Relays between the client and the server until the pool mode lets the server go or the session ends.
    async fn relay(&mut self, conn: &mut ClientConn, server: &mut ServerConn) -> LinkEnd {
        // The relay state lives in the session so its allocations are reused link after link.
        let mut link = self.relay_state.take().unwrap_or_default();
        link.relay.reset();
        let LinkState { relay, to_server } = &mut *link;
        let end = self.relay_with(relay, to_server, conn, server).await;
        self.pool.0.stats.add(&std::mem::take(&mut relay.counts));
        self.relay_state = Some(link);
        end
    }

    /// The client's `standard_conforming_strings`: on unless the server said off.
    fn standard_strings(&self) -> bool {
        self.params
            .get(Tracked::STANDARD_CONFORMING_STRINGS)
            .is_none_or(crate::params::standard_strings_on)
    }

    /// Whether the last link left state in the server session that cannot move.
    fn sticky(&self) -> bool {
        self.relay_state
            .as_ref()
            .is_some_and(|r| r.relay.effects.sticky.is_some())
    }

    /// What the last link's statements did to the session, taken (empty before the first link).
    fn take_effects(&mut self) -> Effects {
        self.relay_state
            .as_mut()
            .map(|r| std::mem::take(&mut r.relay.effects))
            .unwrap_or_default()
    }

    async fn relay_with(
        &mut self,
        relay: &mut Relay,
        to_server: &mut OutQueue,
        conn: &mut ClientConn,
        server: &mut ServerBody,
    ) -> LinkEnd {
        // One read of the runtime and one of the pool's settings for what the link needs of each (each read
        // of a swappable pointer costs about as much as the rest of this setup).
        let (max_prepared, mut policy_runtime) = {
            let runtime = self.runtime();
            let s = &runtime.config.settings;
            relay.disallow_simple_query = s.disable_pqexec;
            // The plugins a transaction starts with are the ones it finishes with, whatever a reload swaps
            // in meanwhile; a session-mode client picks up a new generation between transactions.
            (
                s.max_prepared_statements as usize,
                self.policy_runtime_of(&runtime),
            )
        };
        let settings = self.pool.0.settings_guard();
        let (mode, max) = (settings.mode, settings.max_packet);
        // Session pooling keeps the client on its server: its statement names are the server's.
        let track_statements = mode != PoolMode::Session && max_prepared > 0;
        let track_session = mode != PoolMode::Session;
        relay.track_session = track_session;
        relay.standard_strings = self.standard_strings();
        if track_session {
            relay.ignore_sticky = settings.session_state == SessionState::Allow;
            relay.refuse_sticky = (settings.session_state == SessionState::Reject).then(|| {
                Arc::from(match &settings.session_alias {
                    Some(alias) => {
                        format!("connect to database \"{alias}\" (session pooling) instead")
                    }
                    None => {
                        "use a database entry with pool_mode = session for this client".to_owned()
                    }
                })
            });
        }
        drop(settings);
        let mut sync = self
            .params
            .sync_sql(&server.params, &self.counted.state().tracked);
        if track_session && *self.settings.map() != server.settings {
            let sql = sync.get_or_insert_with(String::new);
            settings_sync_sql(self.settings.map(), &server.settings, sql);
            server.settings.clone_from(self.settings.map());
        }
        if let Some(sql) = sync {
            let mut local = BytesMut::new();
            frontend::write_query(&mut local, &sql);
            to_server.push_local(&mut local);
            relay.add_hidden_query();
            // The server holds the client's values now, as the client spelled them. PostgreSQL reports a
            // value only when it changes, so without this one it spells differently (`'utf-8'` for `UTF8`)
            // would be set again before every transaction.
            server.params.merge_from(&self.params);
        }
        self.set_timer(None);
        loop {
            if mode == PoolMode::Session
                && relay.releasable()
                && server.epoch != self.pool.0.epoch()
                && self.runtime().config.settings.server_fast_close
            {
                // server_fast_close: a server RECONNECT or a RELOAD marked is not kept to the end of the
                // session; between transactions, client and server go (the client must notice).
                return LinkEnd::Finish(
                    End::pooler("database configuration changed"),
                    Disposal::Reset,
                );
            }
            if mode == PoolMode::Session && relay.releasable() {
                let current = self.runtime().generation;
                if policy_runtime
                    .as_ref()
                    .is_none_or(|rt| rt.generation != current)
                {
                    policy_runtime = self.policy_runtime();
                }
            }
            if policy_runtime.is_some() && self.plugin_info.is_none() {
                // The first check of this session: its record is made now (the check keeps the
                // application_name up to date from here on).
                self.plugin_info = Some(Box::new(self.login_facts.session_info(
                    self.info.user(),
                    self.params.get(Tracked::APPLICATION_NAME).unwrap_or(""),
                    self.info.peer(),
                    self.pool.0.settings().mode,
                )));
            }
            let mut policy = match (policy_runtime.as_deref(), self.plugin_info.as_deref_mut()) {
                (Some(runtime), Some(info)) => Some(SessionPolicy {
                    runtime,
                    database: &self.pool.0.key.database,
                    info,
                    params: &self.params,
                    standard_strings: relay.standard_strings,
                }),
                _ => None,
            };
            let policy = policy.as_mut().map(|p| p as &mut dyn QueryPolicy);
            let mut stmts = track_statements.then_some(Statements {
                client: &mut self.statements,
                server: &mut server.prepared,
                max: max_prepared,
            });
            if let Err(e) = relay.process_client(
                &mut conn.rbuf,
                to_server,
                &mut conn.out,
                max,
                policy,
                stmts.as_mut(),
            ) {
                return finish_relay_error(&e);
            }
            let mut ctx = ServerCtx {
                tracked: &self.counted.state().tracked,
                server_params: &mut server.params,
                client_params: &mut self.params,
                max,
                stmts: stmts.as_mut(),
            };
            if let Err(e) = relay.process_server(&mut server.rbuf, &mut conn.out, &mut ctx) {
                return finish_relay_error(&e);
            }
            if std::mem::take(&mut relay.app_reported)
                && let Some(app) = self.params.get(Tracked::APPLICATION_NAME)
            {
                // SHOW CLIENTS follows the application_name the server reported (SET, RESET).
                self.info.set_application_name(app);
            }
            if relay.quiet() && relay.counts != Counts::default() {
                // Totals move at every answered request, also for a session-mode client's long link.
                self.pool.0.stats.add(&std::mem::take(&mut relay.counts));
            }
            if let Some(end) = self.decide(mode, relay) {
                return end;
            }
            if self.timeouts.any_while_linked()
                && let Err(end) = self.arm_timer(relay)
            {
                return end;
            }
            let io = poll_fn(|cx| self.poll_io(cx, conn, server, relay, to_server)).await;
            match io {
                Io::ClientData => self.info.touch(),
                Io::ServerData | Io::Progress => {}
                Io::Timer => {}
                Io::Stop => {
                    // An immediate shutdown, KILL or KILL_CLIENT.
                    if self.info.killed().is_some() {
                        let disposal = if relay.quiet() {
                            Disposal::Rollback
                        } else {
                            Disposal::Close("shutdown", true)
                        };
                        return LinkEnd::Finish(self.killed_end(), disposal);
                    }
                }
                Io::ClientGone(reason) => {
                    let disposal = if relay.releasable() {
                        Disposal::Reset
                    } else if relay.quiet() {
                        Disposal::Rollback
                    } else {
                        Disposal::Close("client disconnect while server was not ready", true)
                    };
                    return LinkEnd::Finish(End::Closed(reason), disposal);
                }
                Io::ServerGone(reason) => {
                    tracing::warn!(
                        "{} user={}: server connection S-{} lost: {reason}",
                        self.info,
                        self.info.user(),
                        server.id
                    );
                    let end = if relay.server_fatal {
                        End::Closed("server closed the connection".into())
                    } else {
                        End::pooler("server conn crashed?")
                    };
                    return LinkEnd::Finish(end, Disposal::Close("server connection lost", false));
                }
            }
        }
    }

    /// The current generation, if any of its policy plugins applies to this client's pool.
    fn policy_runtime(&self) -> Option<Arc<Runtime>> {
        self.policy_runtime_of(&self.runtime())
    }

    /// [`Session::policy_runtime`] of a runtime already read.
    fn policy_runtime_of(&self, current: &Arc<Runtime>) -> Option<Arc<Runtime>> {
        current
            .plugins
            .has_policy(&self.pool.0.key.database)
            .then(|| Arc::clone(current))
    }

    /// What the pool mode and the protocol state say now, if anything.
    fn decide(&self, mode: PoolMode, relay: &Relay) -> Option<LinkEnd> {
        if relay.hidden > 0 {
            return None;
        }
        if relay.client_terminated && relay.quiet() {
            let disposal = if relay.releasable() {
                Disposal::Reset
            } else {
                Disposal::Rollback
            };
            return Some(LinkEnd::Finish(
                End::Closed("client close request".into()),
                disposal,
            ));
        }
        match mode {
            PoolMode::Transaction if relay.releasable() => Some(LinkEnd::Release),
            PoolMode::Statement if relay.quiet() => Some(if relay.releasable() {
                LinkEnd::Release
            } else {
                LinkEnd::Finish(
                    End::pooler("transaction blocks not allowed in statement pooling mode"),
                    Disposal::Rollback,
                )
            }),
            _ => None,
        }
    }

    /// Arms the timer for the nearest client timeout, or ends the session if one has passed.
    fn arm_timer(&mut self, relay: &Relay) -> Result<(), LinkEnd> {
        let t = self.timeouts;
        let mut next: Option<(Instant, &'static str)> = None;
        let mut consider = |timeout: Duration, since: Option<Instant>, message: &'static str| {
            if let (false, Some(since)) = (timeout.is_zero(), since) {
                let at = since + timeout;
                if next.is_none_or(|(n, _)| at < n) {
                    next = Some((at, message));
                }
            }
        };
        consider(t.query_timeout(), relay.query_started, "query timeout");
        // client_idle_timeout is not checked here: like PgBouncer, it only applies to clients that hold
        // no server (between transactions, see wait_client_readable).
        let waiting_for_client = relay.last_ready.filter(|_| relay.quiet());
        let in_tx = relay.tx != backend::TransactionStatus::Idle;
        consider(
            t.idle_transaction_timeout(),
            waiting_for_client.filter(|_| in_tx),
            "idle transaction timeout",
        );
        consider(
            t.transaction_timeout(),
            relay.tx_started.filter(|_| in_tx || relay.outstanding > 0),
            "transaction timeout",
        );
        if let Some((at, message)) = next
            && at <= Instant::now()
        {
            let disposal = Disposal::Close(message, true);
            return Err(LinkEnd::Finish(End::pooler(message), disposal));
        }
        self.set_timer(next.map(|(at, _)| at));
        Ok(())
    }

    /// Sets the session's one timer to fire at `at`, or disarms it.
    fn set_timer(&mut self, at: Option<Instant>) {
        self.timer_parks = false;
        self.timer_armed = at.is_some();
        let Some(at) = at else {
            return;
        };
        let at = tokio::time::Instant::from(at);
        match &mut self.timer {
            Some(sleep) if sleep.deadline() == at && !sleep.is_elapsed() => {}
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// The timer, if it is armed.
    fn armed_timer(&mut self) -> Option<Pin<&mut Sleep>> {
        self.timer
            .as_mut()
            .filter(|_| self.timer_armed)
            .map(Pin::as_mut)
    }

    /// One step of I/O on both sockets: writes whatever is queued, then reads whichever side has data.
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        conn: &mut ClientConn,
        server: &mut ServerBody,
        relay: &Relay,
        to_server: &mut OutQueue,
    ) -> Poll<Io> {
        let mut progress = false;
        while !to_server.is_empty() {
            match to_server.poll_write_some(&mut server.stream, cx) {
                Poll::Ready(Ok(_)) => progress = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Io::ServerGone(e.to_string())),
                Poll::Pending => break,
            }
        }
        while !conn.out.is_empty() {
            match conn.out.poll_write_some(&mut conn.stream, cx) {
                Poll::Ready(Ok(_)) => progress = true,
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Io::ClientGone(format!("client write error: {e}")));
                }
                Poll::Pending => break,
            }
        }
        if conn.out.len() < HIGH_WATER {
            match poll_read(&mut server.stream, &mut server.rbuf, cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Io::ServerGone("server closed the connection".into()));
                }
                Poll::Ready(Ok(_)) => return Poll::Ready(Io::ServerData),
                Poll::Ready(Err(e)) => return Poll::Ready(Io::ServerGone(e.to_string())),
                Poll::Pending => {}
            }
        }
        if !relay.client_terminated && to_server.len() < HIGH_WATER {
            match poll_read(&mut conn.stream, &mut conn.rbuf, cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Io::ClientGone("client unexpected eof".into()));
                }
                Poll::Ready(Ok(_)) => return Poll::Ready(Io::ClientData),
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Io::ClientGone(format!("client read error: {e}")));
                }
                Poll::Pending => {}
            }
        }
        if let Some(timer) = self.armed_timer()
            && timer.poll(cx).is_ready()
        {
            return Poll::Ready(Io::Timer);
        }
        // A drain is not watched while linked: it changes nothing for a linked client (the server goes
        // back when the transaction ends, and the next checkout sees the drain).
        // Watched while linked too: KILL and KILL_CLIENT end a session mid-transaction.
        if self.info.poll_killed(cx).is_ready() {
            return Poll::Ready(Io::Stop);
        }
        // Mid-transaction, writing alone changes nothing the relay loop reads: with nothing read and
        // waiting to be relayed, another turn would only poll the same sockets again (the one turn in three
        // a transaction spent on nothing). Every socket it waits on has this task's waker: a read or a
        // write that came back pending above. Between a session-mode client's transactions the loop looks
        // at more (server_fast_close, a new plugin generation): there, a write still makes it turn.
        let more_to_do = !(conn.rbuf.is_empty() && server.rbuf.is_empty()) || relay.releasable();
        if progress && more_to_do {
            Poll::Ready(Io::Progress)
        } else {
            Poll::Pending
        }
    }

    /// After a transaction, without waiting: whether [`Session::after_transaction`] must read session state
    /// back from the server. When it need not, this does what it would have done (the transaction changed
    /// nothing the session keeps, apart from a `RESET ALL`).
    fn settle_transaction(&mut self, server: &mut ServerConn) -> bool {
        let tracked = &self.counted.state().tracked;
        let must_read = self.pinned_for_good
            || self.was_pinned.is_some()
            || self.relay_state.as_ref().is_some_and(|r| {
                let fx = &r.relay.effects;
                fx.sticky.is_some() || fx.settings.iter().any(|n| tracked.index(n).is_none())
            });
        if !must_read {
            let fx = self.take_effects();
            if fx.reset_all {
                self.settings = ClientSettings::default();
                server.settings.clear();
            }
        }
        must_read
    }

    /// After a transaction in transaction or statement pooling: reads from the server what the transaction's
    /// statements may have changed in the session, records the settings for the client, and tells whether
    /// the client keeps this server (state that cannot move, session_state=pin).
    async fn after_transaction(
        &mut self,
        server: &mut ServerConn,
        conn: &mut ClientConn,
    ) -> Result<bool, ServerError> {
        let fx = self.take_effects();
        if fx.sticky == Some(Sticky::UnknownSetting) {
            self.pinned_for_good = true;
        }
        if fx.reset_all {
            self.settings = ClientSettings::default();
            server.settings.clear();
        }
        let tracked = &self.counted.state().tracked;
        let names: Vec<&String> = fx
            .settings
            .iter()
            .filter(|n| tracked.index(n).is_none())
            .collect();
        // Called only when `settle_transaction` found something to read: names to read back, or a
        // stickiness to check.
        let check_sticky = fx.sticky.is_some() || self.pinned_for_good || self.was_pinned.is_some();
        let mut sql = String::from("SELECT ");
        for name in &names {
            sql.push_str(&session_value_sql(name));
            sql.push_str(", ");
        }
        let login_user = self.pool.0.settings().login.user.clone();
        let _ = write!(sql, "{}", sticky_probe(&login_user));
        let max = self.pool.0.settings().max_packet;
        let rows = server.simple_query_rows(&sql, max).await;
        if !server.notifications.is_empty() {
            conn.out.push_local(&mut server.notifications);
        }
        let rows = rows?;
        let row = rows.into_iter().next().unwrap_or_default();
        for (name, value) in names.iter().zip(&row) {
            match value {
                Some(v) => {
                    self.settings.insert(name, v);
                    server.settings.insert((*name).clone(), v.clone());
                }
                None => {
                    self.settings.remove(name);
                    server.settings.remove(*name);
                }
            }
        }
        let sticky = row
            .get(names.len())
            .and_then(|v| v.as_deref())
            .is_some_and(|count| count != "0");
        let keep = self.pinned_for_good || (check_sticky && sticky);
        if !keep {
            self.was_pinned = None;
        } else if self.was_pinned.is_none() {
            self.was_pinned = Some(PinnedGauge::new(&self.pool.0));
        }
        Ok(keep)
    }

    /// Gives a clean server back between transactions (transaction and statement mode).
    fn release(&mut self, server: ServerConn) {
        if !server.prepared.trusted() {
            return server.close("a client deallocated prepared statements by name");
        }
        self.pool.0.checkin(server);
    }

    /// [`Session::release`] in a pool with `server_reset_query_always`: the reset query runs first.
    async fn reset_and_release(&mut self, mut server: ServerConn, reset: String) {
        if !server.prepared.trusted() {
            return server.close("a client deallocated prepared statements by name");
        }
        let (_, max) = self.pool.0.mode_and_max_packet();
        if let Err(e) = server.simple_query(&reset, max).await {
            return server.close(&format!("server_reset_query failed: {e}"));
        }
        // DISCARD ALL (the usual reset) drops prepared statements; whatever it is, trust nothing.
        server.prepared.clear();
        server.settings.clear();
        self.pool.0.checkin(server);
    }

    /// Disposes of the server of a session that is ending, off the client's task.
    fn dispose(&self, server: ServerConn, disposal: Disposal) {
        let pool = Arc::clone(&self.pool.0);
        let state = Arc::clone(self.counted.state());
        tokio::spawn(async move { dispose(state, pool, server, disposal).await });
    }
}

/// The policy plugins of one generation, as this client's relay asks them.
struct SessionPolicy<'a> {
    runtime: &'a Runtime,
    database: &'a str,
    info: &'a mut SessionInfo,
    /// The client's parameter values, for its application_name (read only when a query is checked: a turn
    /// of the relay loop may check none).
    params: &'a ParamValues,
    /// The client's `standard_conforming_strings` (on unless the server said off), for the lexer.
    standard_strings: bool,
}

impl QueryPolicy for SessionPolicy<'_> {
    fn check(
        &mut self,
        sql: &str,
        extended: bool,
        statement_name: &str,
        in_transaction: bool,
    ) -> Option<Denial> {
        self.info.in_transaction = in_transaction;
        if let Some(app) = self.params.get(Tracked::APPLICATION_NAME)
            && self.info.application_name != app
        {
            app.clone_into(&mut self.info.application_name);
        }
        let query = convert::QueryInput {
            sql,
            extended,
            statement_name,
            standard_strings: self.standard_strings,
        };
        super::hooks::check_query(&self.runtime.plugins, self.database, self.info, &query)
    }
}

async fn dispose(state: Arc<State>, pool: Arc<Pool>, mut server: ServerConn, disposal: Disposal) {
    let settings = pool.settings();
    let max = settings.max_packet;
    match disposal {
        Disposal::Close(reason, cancel) => {
            if cancel && let Some((pid, secret)) = server.backend_key {
                let target = CancelTarget {
                    host: Arc::clone(&server.host),
                    port: server.port,
                    pid,
                    secret,
                };
                let timeout = state.runtime().config.settings.cancel_wait_timeout;
                let _ = state.cancels.send_to(&target, timeout).await;
            }
            server.close(reason);
        }
        Disposal::Rollback | Disposal::Reset => {
            if matches!(disposal, Disposal::Rollback)
                && let Err(e) = server.simple_query("ROLLBACK", max).await
            {
                return server.close(&format!("rollback failed: {e}"));
            }
            let reset = (settings.mode == PoolMode::Session || settings.server_reset_query_always)
                .then_some(settings.server_reset_query.as_deref())
                .flatten();
            if !server.prepared.trusted() {
                return server.close("a client deallocated prepared statements by name");
            }
            if let Some(reset) = reset {
                if let Err(e) = server.simple_query(reset, max).await {
                    return server.close(&format!("server_reset_query failed: {e}"));
                }
                server.prepared.clear();
                server.settings.clear();
            }
            pool.checkin(server);
        }
    }
}

fn finish_relay_error(e: &RelayError) -> LinkEnd {
    let end = match e {
        RelayError::Client(p) => End::pooler(p.to_string()),
        RelayError::UnexpectedFromClient(tag) => End::pooler(format!(
            "unknown packet type '{}' from client",
            char::from(*tag)
        )),
        RelayError::Server(p) => End::pooler(format!("server sent an invalid message: {p}")),
        RelayError::SimpleQueryDisallowed => End::pooler("PQexec disallowed"),
    };
    LinkEnd::Finish(end, Disposal::Close("protocol error", true))
}

/// Whether an idle client keeps its empty read buffer between transactions: once it has run something,
/// and while the buffer is an ordinary one (not one a large message grew).
fn keeps_read_buffer(capacity: usize, record: &ClientRecord) -> bool {
    record.has_sent() && capacity <= 2 * READ_CHUNK
}

fn poll_read(
    stream: &mut crate::net::Stream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf)
}

/// How a session killed by KILL or KILL_CLIENT ends (the client is told why), or by an immediate shutdown
/// (the connection just closes, as when PgBouncer exits).
fn killed_end(live: &ClientRecord) -> End {
    match live.kill_reason() {
        Some(reason) => End::pooler(reason),
        None => End::Closed("server shutting down".into()),
    }
}

/// The statements that make a server whose session settings are `server` hold the client's: RESET what the
/// client never set, set_config what differs.
fn settings_sync_sql(
    client: &BTreeMap<String, String>,
    server: &BTreeMap<String, String>,
    sql: &mut String,
) {
    for name in server.keys().filter(|n| !client.contains_key(*n)) {
        let _ = write!(sql, "RESET {};", quote_ident(name));
    }
    for (name, value) in client {
        if server.get(name) != Some(value) {
            let _ = write!(
                sql,
                "SELECT pg_catalog.set_config({}, {}, false);",
                quote_literal(name),
                quote_literal(value)
            );
        }
    }
}

/// An expression giving the value of setting `name` when this session set it (SET, set_config), NULL
/// otherwise. Only such values are the client's to carry: after a SET that PostgreSQL refused (a setting
/// only a superuser or a restart may change), a RESET, or a local value gone with its transaction, the server
/// holds its own value, and carrying that one would make pgwarden's set_config fail on the next server, which
/// aborts the whole hidden sync query and so drops every other setting of the client there. Custom settings
/// (`myapp.tenant`) are not in pg_settings: their current value is carried.
fn session_value_sql(name: &str) -> String {
    let name = quote_literal(name);
    format!(
        "CASE WHEN coalesce((SELECT source FROM pg_catalog.pg_settings \
         WHERE pg_catalog.lower(name) = pg_catalog.lower({name})), 'session') = 'session' \
         THEN pg_catalog.current_setting({name}, true) END"
    )
}

/// An expression counting the state of this server session that cannot move to another server: channels
/// listened to, advisory locks held (a finished transaction holds no transaction-level ones), temporary
/// relations, cursors WITH HOLD, SQL-level prepared statements, and a role other than the login user's.
fn sticky_probe(login_user: &str) -> String {
    format!(
        "(SELECT count(*) FROM pg_catalog.pg_listening_channels()) \
         + (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) \
         + (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
         + (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable) \
         + (SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE from_sql) \
         + (CASE WHEN current_user <> session_user OR session_user <> {} THEN 1 ELSE 0 END)",
        quote_literal(login_user)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_settings_are_boxed_only_while_there_are_some() {
        let mut settings = ClientSettings::default();
        assert!(settings.0.is_none() && settings.map().is_empty());
        settings.insert("myapp.tenant", "7");
        settings.insert("work_mem", "64MB");
        assert_eq!(
            settings.map().get("myapp.tenant").map(String::as_str),
            Some("7")
        );
        settings.remove("work_mem");
        assert_eq!(settings.map().len(), 1);
        settings.remove("myapp.tenant");
        assert!(settings.0.is_none(), "the box goes with the last setting");
        settings.remove("absent");
        assert!(settings.0.is_none());
    }

    #[test]
    fn timeouts_keep_whole_milliseconds_rounding_up() {
        let ms = |d: Duration| Millis::from_duration(d).get();
        assert_eq!(ms(Duration::ZERO), Duration::ZERO);
        assert_eq!(ms(Duration::from_micros(1)), Duration::from_millis(1));
        assert_eq!(ms(Duration::from_micros(1500)), Duration::from_millis(2));
        assert_eq!(ms(Duration::from_secs(7200)), Duration::from_secs(7200));
        assert_eq!(
            ms(Duration::from_secs(u64::MAX)),
            Duration::from_millis(u64::from(u32::MAX))
        );
    }

    #[test]
    fn only_values_the_session_set_are_read_back() {
        let sql = session_value_sql("myapp.it's");
        assert_eq!(
            sql,
            "CASE WHEN coalesce((SELECT source FROM pg_catalog.pg_settings \
             WHERE pg_catalog.lower(name) = pg_catalog.lower('myapp.it''s')), 'session') = 'session' \
             THEN pg_catalog.current_setting('myapp.it''s', true) END"
        );
    }
}
