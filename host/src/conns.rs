//! The live connections, for the console's SHOW CLIENTS, SERVERS and SOCKETS and its KILL, KILL_CLIENT and
//! RECONNECT: one record per client connection (made at accept, the client's identity in its log lines) and
//! per open server connection.
//!
//! Cheap on the hot path: a record is an `Arc` of atomics, put in a map (one per pool, so the maps are
//! sharded by pool) when the connection logs in (a client's: or is forwarded as a cancel request) and taken
//! out when it closes. A transaction's link and unlink are a handful of relaxed atomic stores on the two
//! records and one uncontended lock of the client's (its linked server, which a cancel request with its key
//! reads); nothing takes a lock per query.
//!
//! Client and server ids come from one counter, as PgBouncer's socket ids do.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::task::AtomicWaker;

use crate::FastMap;
use crate::cancel::CancelTarget;
use crate::clock::{micros, mono_us};
use crate::net::{PackedAddr, PackedPeer, Peer};
use crate::state::Lifecycle;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The next id for a client or server connection (SHOW CLIENTS' and SHOW SERVERS' `id`).
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Where a connection is, from the console's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Logged in, holding no server, nothing asked for (PgBouncer's active list without a link).
    Idle,
    /// Queued for a server (or held by PAUSE).
    Waiting,
    /// Linked to a server.
    Active,
    /// A cancel request not forwarded yet: its connection to PostgreSQL is being opened
    /// (PgBouncer's `waiting_cancel_req`).
    CancelWaiting,
    /// A cancel request sent to PostgreSQL, waiting for it to close the connection (`active_cancel_req`).
    CancelActive,
}

/// Where a cancel request being forwarded is (see [`ClientState::CancelWaiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelPhase {
    Waiting,
    Active,
}

/// A server connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// In the pool's idle list.
    Idle,
    /// Handed out (linked to a client, or being cleaned up after one).
    Active,
    /// Running server_check_query before being handed out.
    Tested,
}

/// When a connection started, on both clocks: wall time for display (micros since the Unix epoch: 8 bytes
/// where a `SystemTime` takes 16, in every record), and micros on CLOCK_MONOTONIC for offsets (8 bytes where
/// an `Instant` takes 16).
#[derive(Debug, Clone, Copy)]
struct Born {
    wall_us: u64,
    mono_us: u64,
}

impl Born {
    fn now() -> Self {
        Self {
            wall_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, micros),
            mono_us: mono_us(false),
        }
    }

    /// Micros since birth, never 0 (0 means "unset" in the atomics below).
    fn offset(&self) -> u64 {
        mono_us(false).saturating_sub(self.mono_us).max(1)
    }

    /// [`Born::offset`] on the coarse clock: up to a few ms early. A transaction stamps both records'
    /// request time at link and at release, shown in seconds: coarse.
    fn coarse_offset(&self) -> u64 {
        mono_us(true).saturating_sub(self.mono_us).max(1)
    }

    fn wall_at(&self, offset_us: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.wall_us.saturating_add(offset_us))
    }
}

/// One client connection, from accept to close: who it is (for its log lines) and, while it is listed in a
/// registry (logged in, or a cancel request being forwarded), what SHOW CLIENTS shows of it. One allocation
/// shared by the client's task, its session and the registry.
#[derive(Debug)]
pub struct ClientRecord {
    pub id: u64,
    peer: PackedPeer,
    /// The local end of the connection (TCP).
    local: Option<PackedAddr>,
    /// The process at the other end of a Unix socket, when the kernel says (0 otherwise).
    pub unix_pid: u32,
    /// Database and user, once the startup packet named them (PgBouncer's `(nodb)/(nouser)` until then); a
    /// cancel request's are those of the client it cancels for.
    names: OnceLock<(Arc<str>, Arc<str>)>,
    /// The database it is listed under: its pool's (a router may have chosen another than the one it asked
    /// for), or the console's.
    listed_database: OnceLock<Arc<str>>,
    /// Its application_name as the client last heard it from a server (ParameterStatus), so SHOW CLIENTS
    /// follows `SET application_name` and `RESET`, as PgBouncer's does. Written when it changes, read by
    /// the console: an uncontended lock.
    application_name: Mutex<Arc<str>>,
    born: Born,
    state: AtomicU8,
    /// Its cancel key (the BackendKeyData it was given: pid in the high half, secret in the low; 0 until
    /// then), for a cancel request to be checked against (see [`crate::cancel`]).
    cancel_key: AtomicU64,
    /// The server it is linked to (SHOW CLIENTS' `link`, where a cancel request with its key goes) and the
    /// cancels on their way to it. Locked at link and unlink, and by a cancel request.
    linked: Mutex<Linked>,
    /// Micros since birth of the latest request.
    request_us: AtomicU64,
    /// Micros since birth when it started waiting for a server (0: not waiting).
    wait_us: AtomicU64,
    prepared: AtomicU32,
    /// Thrown to end the session: KILL, KILL_CLIENT, an immediate shutdown.
    kill: KillSwitch,
    kill_reason: OnceLock<Box<str>>,
}

/// A client's linked server, as its cancel key sees it.
#[derive(Debug, Default)]
struct Linked {
    server: Option<Arc<ServerRecord>>,
    /// Cancel requests forwarded to `server` and not yet acted on by PostgreSQL: the server is not released
    /// until they are (see [`crate::cancel`]).
    cancels: u32,
}

/// Ends a session from outside: a flag and the waker of the task that watches it (one task per record: the
/// session's, the console's or the cancel request's). Two words in the record, where a child of a process-wide
/// cancellation token and the future that waits on it took ~220 bytes per client in allocations of their own;
/// an immediate shutdown throws every switch through the registries instead ([`crate::state::State::shutdown`]).
#[derive(Debug, Default)]
struct KillSwitch {
    thrown: AtomicBool,
    /// The parking lot asked the idle session to park (see [`crate::client::park`]); set until it resumes.
    park: AtomicBool,
    waker: AtomicWaker,
}

/// A console client's cancel key (pid, secret), so a cancel request can interrupt a waiting command.
#[derive(Debug)]
pub struct ConsoleCancel {
    pub key: (u32, u32),
    /// Notified by a cancel request with `key`.
    pub cancelled: tokio::sync::Notify,
}

impl ConsoleCancel {
    pub fn new(key: (u32, u32)) -> Arc<Self> {
        Arc::new(Self {
            key,
            cancelled: tokio::sync::Notify::new(),
        })
    }
}

impl ClientRecord {
    /// The record of a connection just accepted.
    pub fn new(id: u64, peer: Peer, local: Option<SocketAddr>, unix_pid: u32) -> Self {
        Self {
            id,
            peer: peer.into(),
            local: local.map(PackedAddr::from),
            unix_pid,
            names: OnceLock::new(),
            listed_database: OnceLock::new(),
            application_name: Mutex::new(Arc::from("")),
            born: Born::now(),
            state: AtomicU8::new(ClientState::Idle as u8),
            cancel_key: AtomicU64::new(0),
            linked: Mutex::default(),
            request_us: AtomicU64::new(0),
            wait_us: AtomicU64::new(0),
            prepared: AtomicU32::new(0),
            kill: KillSwitch::default(),
            kill_reason: OnceLock::new(),
        }
    }

    /// Where the client connected from.
    pub fn peer(&self) -> Peer {
        self.peer.get()
    }

    /// The local end of its connection (TCP).
    pub fn local(&self) -> Option<SocketAddr> {
        self.local.map(PackedAddr::get)
    }

    /// Records the database and user the client asked for (the first call wins).
    pub fn set_names(&self, database: &str, user: &str) {
        if self.names.get().is_none() {
            self.set_shared_names(database.into(), user.into());
        }
    }

    /// [`ClientRecord::set_names`] with names shared with their owner (a pool's key, a session).
    pub fn set_shared_names(&self, database: Arc<str>, user: Arc<str>) {
        let _ = self.names.set((database, user));
    }

    /// Whether the startup packet named a database and user yet.
    pub fn has_names(&self) -> bool {
        self.names.get().is_some()
    }

    /// The user the startup packet named (shared with the session), once it has.
    pub fn user_name(&self) -> Option<&Arc<str>> {
        self.names.get().map(|(_, user)| user)
    }

    /// The database and user for log lines: `(nodb)` and `(nouser)` until the startup packet named them.
    pub fn log_names(&self) -> (&str, &str) {
        self.names
            .get()
            .map_or(("(nodb)", "(nouser)"), |(d, u)| (&**d, &**u))
    }

    /// The user it logged in as (SHOW CLIENTS).
    pub fn user(&self) -> &str {
        self.names.get().map_or("", |(_, u)| &**u)
    }

    /// The database it is listed under (SHOW CLIENTS): its pool's or the console's.
    pub fn database(&self) -> &str {
        match self.listed_database.get() {
            Some(db) => db,
            None => self.names.get().map_or("", |(d, _)| &**d),
        }
    }

    /// What it is listed as once it logs in (or is forwarded as a cancel request): the database of its pool
    /// (or the console's) and its application_name.
    pub fn list_as(&self, database: Arc<str>, application_name: &str) {
        let _ = self.listed_database.set(database);
        self.set_application_name(application_name);
    }

    /// How long ago it connected.
    pub fn age(&self) -> Duration {
        Duration::from_micros(self.born.offset())
    }

    pub fn state(&self) -> ClientState {
        match self.state.load(Ordering::Relaxed) {
            1 => ClientState::Waiting,
            2 => ClientState::Active,
            3 => ClientState::CancelWaiting,
            4 => ClientState::CancelActive,
            _ => ClientState::Idle,
        }
    }

    /// The record is a cancel request's, at `phase`.
    pub fn set_cancel_phase(&self, phase: CancelPhase) {
        let state = match phase {
            CancelPhase::Waiting => ClientState::CancelWaiting,
            CancelPhase::Active => ClientState::CancelActive,
        };
        self.mark_request();
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Whether the record is a cancel request's rather than a logged-in client's.
    pub fn is_cancel(&self) -> bool {
        matches!(
            self.state(),
            ClientState::CancelWaiting | ClientState::CancelActive
        )
    }

    /// It queues for a server (or waits out a PAUSE).
    pub fn set_waiting(&self) {
        let now = self.born.offset().max(1);
        self.wait_us.store(now, Ordering::Relaxed);
        self.request_us.store(now, Ordering::Relaxed);
        self.state
            .store(ClientState::Waiting as u8, Ordering::Relaxed);
    }

    fn lock_linked(&self) -> std::sync::MutexGuard<'_, Linked> {
        self.linked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// It has a server now (cancel requests with its key go there).
    pub fn link(&self, server: &Arc<ServerRecord>) {
        self.lock_linked().server = Some(Arc::clone(server));
        self.wait_us.store(0, Ordering::Relaxed);
        self.state
            .store(ClientState::Active as u8, Ordering::Relaxed);
        self.mark_request();
        server.link(self);
    }

    /// It gave its server up; `prepared` is how many prepared statements it holds now. Returns whether a
    /// cancel request is still on its way to that server (see [`crate::cancel::CancelHandle::settle`]).
    pub fn unlink(&self, prepared: usize) -> bool {
        let (server, cancels) = {
            let mut linked = self.lock_linked();
            (linked.server.take(), linked.cancels)
        };
        self.state.store(ClientState::Idle as u8, Ordering::Relaxed);
        self.prepared.store(
            u32::try_from(prepared).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        if let Some(server) = server {
            server.link.store(0, Ordering::Relaxed);
        }
        cancels > 0
    }

    /// Its cancel key, once it has one.
    pub fn cancel_key(&self) -> Option<(u32, u32)> {
        let key = self.cancel_key.load(Ordering::Acquire);
        #[allow(clippy::cast_possible_truncation, reason = "the two halves")]
        (key != 0).then_some(((key >> 32) as u32, key as u32))
    }

    /// Gives it its cancel key (`pid` is never 0).
    pub fn set_cancel_key(&self, pid: u32, secret: u32) {
        self.cancel_key
            .store(u64::from(pid) << 32 | u64::from(secret), Ordering::Release);
    }

    /// A cancel request with its key is on its way: the server it goes to, unless it holds none that can
    /// be cancelled (linked to a server PostgreSQL gave no BackendKeyData: nothing is counted).
    pub fn begin_cancel(&self) -> Option<Arc<ServerRecord>> {
        let mut linked = self.lock_linked();
        let server = Arc::clone(linked.server.as_ref().filter(|s| s.cancel.is_some())?);
        linked.cancels += 1;
        Some(server)
    }

    /// A cancel request [`ClientRecord::begin_cancel`] counted is over.
    pub fn end_cancel(&self) {
        let mut linked = self.lock_linked();
        linked.cancels = linked.cancels.saturating_sub(1);
    }

    /// Cancel requests on their way to the server it is or was linked to.
    pub fn cancels_in_flight(&self) -> u32 {
        self.lock_linked().cancels
    }

    /// Its application_name now.
    pub fn application_name(&self) -> Arc<str> {
        Arc::clone(
            &self
                .application_name
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// The client's application_name is `app` now (a server reported it); a no-op when unchanged.
    pub fn set_application_name(&self, app: &str) {
        let mut current = self
            .application_name
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if &**current != app {
            *current = app.into();
        }
    }

    /// It sent something.
    pub fn touch(&self) {
        self.mark_request();
    }

    /// Ends the session with `reason` (the client is told, as PgBouncer tells it); the first reason wins.
    pub fn kill(&self, reason: &str) {
        let _ = self.kill_reason.set(reason.into());
        self.throw();
    }

    /// Ends the session for an immediate shutdown: the connection just closes.
    pub fn shut_down(&self) {
        self.throw();
    }

    fn throw(&self) {
        self.kill.thrown.store(true, Ordering::Release);
        self.kill.waker.wake();
    }

    /// Ready once the session must end ([`ClientRecord::kill`], [`ClientRecord::shut_down`]); while not,
    /// the task polling it is the one woken then. Costs an atomic load when nothing changed.
    pub fn poll_killed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.kill.thrown.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.kill.waker.register(cx.waker());
        // Thrown between the load and the registration: the wake may have found the old waker.
        if self.kill.thrown.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once the session must end.
    pub async fn until_killed(&self) {
        std::future::poll_fn(|cx| self.poll_killed(cx)).await;
    }

    /// Asks an idle session to park: its task is woken to hand the connection to the parking lot. Once per
    /// idle spell: a request stands until [`ClientRecord::clear_park_request`] (the session woke for its
    /// client, or resumed from the lot), so a client that cannot park now, or that is parked, is not woken
    /// again each time the lot looks.
    pub fn request_park(&self) {
        if !self.kill.park.swap(true, Ordering::AcqRel) {
            self.kill.waker.wake();
        }
    }

    /// The session itself decided to park (a fresh client quiet for a while): the request without the wake.
    pub fn mark_park(&self) {
        self.kill.park.store(true, Ordering::Release);
    }

    pub fn park_requested(&self) -> bool {
        self.kill.park.load(Ordering::Acquire)
    }

    pub fn clear_park_request(&self) {
        self.kill.park.store(false, Ordering::Release);
    }

    /// Whom a kill wakes while the session is parked (the lot's thread); `false` when the switch was already
    /// thrown (its wake may have gone to the task that is parking: it must see the kill itself).
    pub fn watch_kill_with(&self, waker: &std::task::Waker) -> bool {
        self.kill.waker.register(waker);
        !self.kill.thrown.load(Ordering::Acquire)
    }

    /// Records a request now (never 0, which means none yet).
    fn mark_request(&self) {
        self.request_us
            .store(self.born.coarse_offset(), Ordering::Relaxed);
    }

    /// Whether it has sent anything since its login (a query, or a cancel request's connection).
    pub fn has_sent(&self) -> bool {
        self.request_us.load(Ordering::Relaxed) != 0
    }

    /// For how long it has sent nothing: since its latest request, or since it connected.
    pub fn quiet_for(&self) -> Duration {
        let since = self.request_us.load(Ordering::Relaxed);
        Duration::from_micros(self.born.offset().saturating_sub(since))
    }

    /// What KILL or KILL_CLIENT gave as the reason, if one ended the session.
    pub fn kill_reason(&self) -> Option<&str> {
        self.kill_reason.get().map(|r| &**r)
    }

    /// Why the session must end now, if it must: the KILL's reason, or the shutdown's.
    pub fn killed(&self) -> Option<&str> {
        if !self.kill.thrown.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.kill_reason
                .get()
                .map_or("server shutting down", |r| &**r),
        )
    }

    pub fn ptr(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    pub fn linked(&self) -> usize {
        self.lock_linked()
            .server
            .as_ref()
            .map_or(0, |s| Arc::as_ptr(s) as usize)
    }

    pub fn prepared(&self) -> u32 {
        self.prepared.load(Ordering::Relaxed)
    }

    pub fn connect_time(&self) -> SystemTime {
        self.born.wall_at(0)
    }

    pub fn request_time(&self) -> SystemTime {
        self.born.wall_at(self.request_us.load(Ordering::Relaxed))
    }

    /// How long it has been waiting for a server (zero when not waiting).
    pub fn waited(&self) -> Duration {
        let since = self.wait_us.load(Ordering::Relaxed);
        if since == 0 || self.state() != ClientState::Waiting {
            return Duration::ZERO;
        }
        Duration::from_micros(self.born.offset().saturating_sub(since))
    }
}

/// One open server connection.
#[derive(Debug)]
pub struct ServerRecord {
    pub id: u64,
    /// The user the pool logs in as.
    pub user: String,
    pub database: String,
    /// Where it goes: an IP address, or "unix".
    pub addr: String,
    pub port: u16,
    pub local: Option<SocketAddr>,
    /// The backend's pid (from its BackendKeyData).
    pub remote_pid: u32,
    born: Born,
    state: AtomicU8,
    /// Address of the linked client's record (0: none).
    link: AtomicUsize,
    /// Micros since birth of the last link or release.
    request_us: AtomicU64,
    /// The pool's configuration epoch it was opened under (a different one: close_needed).
    epoch: AtomicU64,
    prepared: AtomicU32,
    /// Capacity of its read buffer at the last release (SHOW MEM).
    pub buffer: AtomicU32,
    /// Where a cancel request for it goes (none if PostgreSQL sent no BackendKeyData).
    pub cancel: Option<CancelTarget>,
    /// The pool it belongs to (a cancel request on its way to it is listed there).
    pub pool: Weak<crate::pool::Pool>,
}

/// What a server record is made from.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub peer: Peer,
    pub port: u16,
    pub local: Option<SocketAddr>,
    pub remote_pid: u32,
    pub epoch: u64,
    pub cancel: Option<CancelTarget>,
    pub pool: Weak<crate::pool::Pool>,
}

impl ServerRecord {
    pub fn new(spec: ServerSpec) -> Arc<Self> {
        let (addr, port) = match spec.peer {
            Peer::Tcp(a) => (a.ip().to_string(), a.port()),
            Peer::Unix => ("unix".to_owned(), spec.port),
            Peer::Unknown => (String::new(), spec.port),
        };
        let born = Born::now();
        Arc::new(Self {
            id: spec.id,
            user: spec.user,
            database: spec.database,
            addr,
            port,
            local: spec.local,
            remote_pid: spec.remote_pid,
            born,
            state: AtomicU8::new(ServerState::Idle as u8),
            link: AtomicUsize::new(0),
            request_us: AtomicU64::new(born.offset()),
            epoch: AtomicU64::new(spec.epoch),
            prepared: AtomicU32::new(0),
            buffer: AtomicU32::new(0),
            cancel: spec.cancel,
            pool: spec.pool,
        })
    }

    pub fn state(&self) -> ServerState {
        match self.state.load(Ordering::Relaxed) {
            1 => ServerState::Active,
            2 => ServerState::Tested,
            _ => ServerState::Idle,
        }
    }

    fn link(&self, client: &ClientRecord) {
        self.link
            .store(std::ptr::from_ref(client) as usize, Ordering::Relaxed);
        self.state
            .store(ServerState::Active as u8, Ordering::Relaxed);
        self.request_us
            .store(self.born.coarse_offset(), Ordering::Relaxed);
    }

    /// Back in the pool's idle list, holding `prepared` statements and a read buffer of `buffer` bytes.
    pub fn released(&self, prepared: usize, buffer: usize) {
        self.link.store(0, Ordering::Relaxed);
        self.state.store(ServerState::Idle as u8, Ordering::Relaxed);
        self.request_us
            .store(self.born.coarse_offset(), Ordering::Relaxed);
        self.prepared.store(
            u32::try_from(prepared).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        self.buffer
            .store(u32::try_from(buffer).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    /// Taken out of the idle list to run server_check_query.
    pub fn set_tested(&self) {
        self.state
            .store(ServerState::Tested as u8, Ordering::Relaxed);
    }

    /// Taken out of the idle list for a client.
    pub fn set_active(&self) {
        self.state
            .store(ServerState::Active as u8, Ordering::Relaxed);
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    pub fn ptr(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }

    pub fn linked(&self) -> usize {
        self.link.load(Ordering::Relaxed)
    }

    pub fn prepared(&self) -> u32 {
        self.prepared.load(Ordering::Relaxed)
    }

    pub fn connect_time(&self) -> SystemTime {
        self.born.wall_at(0)
    }

    pub fn request_time(&self) -> SystemTime {
        self.born.wall_at(self.request_us.load(Ordering::Relaxed))
    }

    /// How long since it was last linked or released.
    pub fn idle_for(&self) -> Duration {
        Duration::from_micros(
            self.born
                .offset()
                .saturating_sub(self.request_us.load(Ordering::Relaxed)),
        )
    }
}

/// Records by id; one per pool for its clients and one for its servers, one for the console's clients.
#[derive(Debug)]
pub struct Registry<T> {
    map: Mutex<FastMap<u64, Arc<T>>>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
        }
    }
}

impl<T> Registry<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<u64, Arc<T>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert(&self, id: u64, record: Arc<T>) {
        self.lock().insert(id, record);
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub fn get(&self, id: u64) -> Option<Arc<T>> {
        self.lock().get(&id).cloned()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Calls `f` on every record, in no order, under the registry's lock (keep `f` short).
    pub fn each(&self, mut f: impl FnMut(&T)) {
        for record in self.lock().values() {
            f(record);
        }
    }

    /// Every record, by id.
    pub fn snapshot(&self) -> Vec<Arc<T>> {
        let map = self.lock();
        let mut ids: Vec<(u64, Arc<T>)> = map.iter().map(|(k, v)| (*k, Arc::clone(v))).collect();
        drop(map);
        ids.sort_by_key(|(id, _)| *id);
        ids.into_iter().map(|(_, r)| r).collect()
    }
}

/// The clients of `clients` waiting for a server, whether queued in their pool or held by a PAUSE or
/// SUSPEND before reaching the queue: how many, and how long the one that has waited longest has waited.
/// SHOW POOLS and the metrics count these, so they agree with SHOW CLIENTS' `waiting` rows.
pub fn waiting(clients: &Registry<ClientRecord>) -> (u32, Duration) {
    let (mut count, mut longest) = (0u32, Duration::ZERO);
    clients.each(|c| {
        if c.state() == ClientState::Waiting {
            count += 1;
            longest = longest.max(c.waited());
        }
    });
    (count, longest)
}

/// A client's record, registered for as long as this lives.
#[derive(Debug)]
pub struct Registered<T> {
    pub record: Arc<T>,
    registry: RegistryRef<T>,
    id: u64,
}

/// Where a registered record lives: a registry owned by a pool or by the console.
#[derive(Debug)]
pub enum RegistryRef<T> {
    Pool(
        Arc<crate::pool::Pool>,
        fn(&crate::pool::Pool) -> &Registry<T>,
    ),
    Shared(Arc<Registry<T>>),
}

impl<T> Registered<T> {
    pub fn new(record: Arc<T>, id: u64, registry: RegistryRef<T>) -> Self {
        registry.get().insert(id, Arc::clone(&record));
        Self {
            record,
            registry,
            id,
        }
    }
}

impl Registered<ClientRecord> {
    /// Registers a client's record. One registered once an immediate shutdown has begun is shut down at
    /// once: the shutdown's sweep through the registries may have passed its registry already. (The sweep
    /// raises the lifecycle's flag before it takes any registry's lock, and this reads the flag after
    /// inserting under that lock: one of the two sees the other.)
    pub fn client(
        record: Arc<ClientRecord>,
        id: u64,
        registry: RegistryRef<ClientRecord>,
        lifecycle: &Lifecycle,
    ) -> Self {
        let registered = Self::new(record, id, registry);
        if lifecycle.is_terminating() {
            registered.record.shut_down();
        }
        registered
    }
}

impl<T> RegistryRef<T> {
    fn get(&self) -> &Registry<T> {
        match self {
            Self::Pool(pool, field) => field(pool),
            Self::Shared(r) => r,
        }
    }
}

impl<T> Drop for Registered<T> {
    fn drop(&mut self) {
        self.registry.get().remove(self.id);
    }
}

/// `0x…`, PgBouncer's `%p`; empty for none.
pub fn ptr_text(p: usize) -> String {
    if p == 0 {
        String::new()
    } else {
        format!("{p:#x}")
    }
}

/// A timestamp as PgBouncer prints one (`2026-11-23 08:12:57 UTC`), in UTC.
pub fn time_text(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let mut s = String::with_capacity(24);
    let _ = write!(
        s,
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    s
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(id: u64) -> Arc<ClientRecord> {
        let record = ClientRecord::new(id, Peer::Unix, None, 0);
        record.set_names("d", "u");
        Arc::new(record)
    }

    fn server(id: u64) -> Arc<ServerRecord> {
        ServerRecord::new(ServerSpec {
            id,
            user: "u".into(),
            database: "d".into(),
            peer: Peer::Tcp("127.0.0.1:5432".parse().expect("addr")),
            port: 5432,
            local: None,
            remote_pid: 4242,
            epoch: 1,
            cancel: None,
            pool: Weak::new(),
        })
    }

    #[test]
    fn link_and_unlink_point_both_records_at_each_other() {
        let c = client(1);
        let s = server(2);
        assert_eq!(c.state(), ClientState::Idle);
        assert_eq!(s.addr, "127.0.0.1");
        c.set_waiting();
        assert_eq!(c.state(), ClientState::Waiting);
        std::thread::sleep(Duration::from_millis(2));
        assert!(c.waited() >= Duration::from_millis(2));
        c.link(&s);
        assert_eq!(c.state(), ClientState::Active);
        assert_eq!(s.state(), ServerState::Active);
        assert_eq!(c.linked(), s.ptr());
        assert_eq!(s.linked(), c.ptr());
        assert_eq!(c.waited(), Duration::ZERO);
        assert!(!c.unlink(3), "no cancel on its way");
        assert_eq!((c.linked(), s.linked()), (0, 0));
        assert_eq!(c.prepared(), 3);
        s.released(2, 8192);
        assert_eq!(s.state(), ServerState::Idle);
        assert_eq!(s.prepared(), 2);
        assert!(c.request_time() >= c.connect_time());
    }

    #[test]
    fn a_cancel_request_record_goes_from_waiting_to_active() {
        let c = client(5);
        assert!(!c.is_cancel());
        c.set_cancel_phase(CancelPhase::Waiting);
        assert_eq!(c.state(), ClientState::CancelWaiting);
        assert!(c.is_cancel());
        c.set_cancel_phase(CancelPhase::Active);
        assert_eq!(c.state(), ClientState::CancelActive);
        assert!(c.is_cancel());
    }

    #[test]
    fn application_name_follows_what_the_server_reports() {
        let c = client(6);
        assert_eq!(&*c.application_name(), "");
        c.set_application_name("svc");
        assert_eq!(&*c.application_name(), "svc");
        let before = c.application_name();
        c.set_application_name("svc");
        assert!(
            Arc::ptr_eq(&before, &c.application_name()),
            "unchanged: not replaced"
        );
    }

    #[test]
    fn kill_gives_its_reason_and_shutdown_its_own() {
        let (a, b) = (client(1), client(2));
        assert_eq!(a.killed(), None);
        a.kill("admin forced disconnect");
        a.kill("database removed");
        assert_eq!(a.killed(), Some("admin forced disconnect"));
        assert_eq!(b.killed(), None);
        b.shut_down();
        assert_eq!(b.killed(), Some("server shutting down"));
        assert_eq!(b.kill_reason(), None);
    }

    #[tokio::test]
    async fn a_thrown_switch_wakes_the_task_that_waits_on_it() {
        let record = client(8);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(record.poll_killed(&mut cx).is_pending());
        let waiter = tokio::spawn({
            let record = Arc::clone(&record);
            async move { record.until_killed().await }
        });
        tokio::task::yield_now().await;
        record.kill("admin forced disconnect");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("the task ran");
        assert!(record.poll_killed(&mut cx).is_ready(), "stays thrown");
    }

    #[test]
    fn a_client_registered_after_an_immediate_shutdown_began_is_shut_down() {
        let lifecycle = Lifecycle::default();
        let reg = Arc::new(Registry::default());
        let before = Registered::client(
            client(1),
            1,
            RegistryRef::Shared(Arc::clone(&reg)),
            &lifecycle,
        );
        assert_eq!(before.record.killed(), None);
        lifecycle.shutdown(crate::state::ShutdownMode::Immediate);
        let after = Registered::client(
            client(2),
            2,
            RegistryRef::Shared(Arc::clone(&reg)),
            &lifecycle,
        );
        assert_eq!(after.record.killed(), Some("server shutting down"));
        // The sweep is State::shutdown's, not the lifecycle's: the one registered before is untouched here.
        assert_eq!(before.record.killed(), None);
    }

    #[test]
    fn waiting_counts_waiting_clients_and_the_longest_wait() {
        let reg = Registry::default();
        for id in 1..=3 {
            reg.insert(id, client(id));
        }
        assert_eq!(waiting(&reg), (0, Duration::ZERO));
        let (a, b) = (reg.get(1).expect("1"), reg.get(2).expect("2"));
        a.set_waiting();
        std::thread::sleep(Duration::from_millis(3));
        b.set_waiting();
        reg.get(3)
            .expect("3")
            .set_cancel_phase(CancelPhase::Waiting);
        let (count, longest) = waiting(&reg);
        assert_eq!(count, 2);
        assert!(longest >= Duration::from_millis(3), "{longest:?}");
        a.link(&server(9));
        assert_eq!(waiting(&reg).0, 1);
    }

    #[test]
    fn registered_records_leave_on_drop() {
        let reg = Arc::new(Registry::default());
        let a = Registered::new(client(7), 7, RegistryRef::Shared(Arc::clone(&reg)));
        let _b = Registered::new(client(3), 3, RegistryRef::Shared(Arc::clone(&reg)));
        assert_eq!(
            reg.snapshot().iter().map(|r| r.id).collect::<Vec<_>>(),
            [3, 7]
        );
        drop(a);
        assert!(!reg.contains(7));
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn timestamps_and_pointers_as_pgbouncer_prints_them() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_421_577);
        assert_eq!(time_text(t), "2026-11-23 08:12:57 UTC");
        assert_eq!(time_text(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            time_text(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(ptr_text(0), "");
        assert_eq!(ptr_text(0x55d0_c8f1), "0x55d0c8f1");
    }
}
