//! The parking lot: idle clients without a task.
//!
//! A logged-in client that holds no server and has nothing buffered either way needs nothing but its socket
//! watched, yet as a task it keeps a tokio task cell (~400 bytes), the reactor's registration of its socket
//! (~260) and the buffers kept for its next transaction. Once a client has been quiet for [`PARK_AFTER`],
//! the lot's thread asks it to park ([`ClientRecord::request_park`]); one that has sent nothing since its
//! login parks by itself after [`PARK_NEW_AFTER`] (its own timer). Either way its task ends, handing the session and the
//! socket (deregistered from the runtime's reactor) to the lot, which watches every parked socket with an
//! epoll instance of its own (mio's `Poll`) from a thread of its own. Whichever comes first resumes the
//! client in a new task:
//! - the client sends something, or closes: it is served as before;
//! - its client_idle_timeout expires: it ends as it would have in its task;
//! - its kill switch is thrown (KILL, KILL_CLIENT, an immediate shutdown): the new task ends it.
//!
//! A parked client is still a client everywhere else: its record stays in the registries (SHOW CLIENTS,
//! KILL), its session keeps its counts and cancel key, and the lot keeps its place in the tracker that a
//! WAIT_FOR_CLIENTS shutdown waits on. Parking costs two `epoll_ctl` calls and a task each way, paid once
//! per idle spell of half a second or more (and once by a client that waits a while before its first query).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::ClientConn;
use super::session::Session;
use crate::conns::{ClientRecord, ClientState};
use crate::net::StdStream;
use crate::state::State;

/// How long a client must have sent nothing before it is asked to park: long enough that a client between
/// the statements of a busy session never pays for it. The lot's thread asks every [`ASK_EVERY`].
pub const PARK_AFTER: Duration = Duration::from_millis(500);

/// How long a client that has sent nothing since its login (a pool's connection made ahead of use, a login
/// storm's) waits before it parks, by itself: it pays a park and a resume once, not at each pause. Short, so
/// that few of a login storm's clients are tasks at once: what a task leaves behind (~1 KiB: its cell, its
/// socket's registration, its login's buffers) is reused by the next logins, where the memory malloc got
/// for all those alive at once stays with the process as holes between the records that remain (2,000 md5
/// logins take ~0.3 s here; parking after 100 ms instead left ~0.35 KiB more per idle client, after 20 ms
/// ~0.1 KiB more than after 5). A client that queries at once (pgbench -C, a driver's check on connect)
/// sends within a millisecond; one that waits longer pays one park and one resume (~20 us of CPU).
pub const PARK_NEW_AFTER: Duration = Duration::from_millis(5);

/// How long a client that has sent nothing since its login must be quiet before the lot asks it to park:
/// one that did not park by itself (it logged in before the lot's thread ran, or the lot could not take it
/// then). Long, so that the tests can tell parking by itself from being asked.
pub const PARK_FRESH_FALLBACK: Duration = Duration::from_secs(5);

/// How often the lot's thread looks for clients to ask.
const ASK_EVERY: Duration = Duration::from_millis(100);

/// Parked clients.
pub struct Lot {
    registry: mio::Registry,
    /// Taken by the lot's thread when it starts.
    poll: Mutex<Option<mio::Poll>>,
    parked: Mutex<Parked>,
    signal: Arc<Signal>,
    /// What a parked client's kill switch wakes.
    kill_waker: Waker,
    /// The lot's thread is watching: parking is possible.
    open: AtomicBool,
    /// The lot's thread is to stop.
    closing: AtomicBool,
}

/// The epoll token of the lot's own wake-ups (a parked client's is its slot + 1).
const WAKE: mio::Token = mio::Token(0);

/// The parked clients in slots (a slab: 24 bytes a client, where a hash map by client id took ~100 at
/// 2,000 clients), found by their socket's epoll token.
#[derive(Default)]
struct Parked {
    slots: Vec<Option<Client>>,
    /// Empty slots, reused first.
    vacant: Vec<u32>,
    len: usize,
    /// client_idle_timeout deadlines, soonest first, with the slot and the stamp of the client they were
    /// set for: an entry whose client resumed (its slot empty, or another client's) is skipped.
    deadlines: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Stamps the clients parked with a deadline.
    stamp: u32,
    /// The lot's place among the tasks a WAIT_FOR_CLIENTS shutdown waits for, while any client is parked
    /// (one for all of them: 8 bytes fewer in every slot).
    tracked: Option<TaskTrackerToken>,
}

struct Client {
    stream: StdStream,
    session: Box<Session>,
    stamp: u32,
}

impl Parked {
    /// Puts `client` in a slot; `tracked` (the parking task's place among the tracked tasks) becomes the
    /// lot's if it holds none.
    fn insert(&mut self, client: Client, tracked: TaskTrackerToken) -> u32 {
        self.tracked.get_or_insert(tracked);
        self.len += 1;
        if let Some(slot) = self.vacant.pop() {
            self.slots[slot as usize] = Some(client);
            return slot;
        }
        self.slots.push(Some(client));
        u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
    }

    /// Takes the client out of `slot`; with the last one, also the lot's place among the tracked tasks, to
    /// be dropped once the client has a task of its own (or is gone).
    fn remove(&mut self, slot: u32) -> Option<(Client, Option<TaskTrackerToken>)> {
        let client = self.slots.get_mut(slot as usize)?.take()?;
        self.vacant.push(slot);
        self.len -= 1;
        let tracked = if self.len == 0 {
            self.tracked.take()
        } else {
            None
        };
        Some((client, tracked))
    }
}

/// A slot's epoll token, and back.
fn token(slot: u32) -> mio::Token {
    mio::Token(slot as usize + 1)
}

fn slot_of(token: mio::Token) -> Option<u32> {
    u32::try_from(token.0.checked_sub(1)?).ok()
}

/// Wakes the lot's thread: as a task waker, for a parked client's thrown kill switch (`killed`); directly,
/// for a deadline sooner than the ones it sleeps until, or to stop.
struct Signal {
    waker: mio::Waker,
    killed: AtomicBool,
}

impl Signal {
    fn nudge(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::error!("cannot wake the parked clients' thread: {e}");
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.killed.store(true, Ordering::Release);
        self.nudge();
    }
}

/// What [`Lot::park`] did.
pub enum Parking {
    Parked,
    /// Not parked: the task goes on with the client.
    Refused(Box<ClientConn>, Box<Session>),
}

/// Why a parked client is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Its socket is readable (data or EOF), or its kill switch was thrown: its session looks.
    Serve,
    /// Its client_idle_timeout expired.
    IdleTimeout,
}

impl Lot {
    pub fn new() -> std::io::Result<Self> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let signal = Arc::new(Signal {
            waker: mio::Waker::new(&registry, WAKE)?,
            killed: AtomicBool::new(false),
        });
        Ok(Self {
            registry,
            poll: Mutex::new(Some(poll)),
            parked: Mutex::default(),
            kill_waker: Waker::from(Arc::clone(&signal)),
            signal,
            open: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        })
    }

    /// Whether clients can park (the lot's thread is running).
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// How many clients are parked.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes over an idle client whose task is ending. Gives the connection and session back when it cannot
    /// (the lot is closed, the client was killed meanwhile, the socket cannot be watched): the task goes on
    /// serving it. An error means the socket is gone.
    pub fn park(
        &self,
        conn: Box<ClientConn>,
        session: Box<Session>,
        deadline: Option<Instant>,
        tracked: TaskTrackerToken,
    ) -> std::io::Result<Parking> {
        let record = Arc::clone(session.info());
        if !self.is_open() || !record.watch_kill_with(&self.kill_waker) {
            // Its next wait sees the kill (or waits as before: the lot does not ask while closed).
            record.clear_park_request();
            return Ok(Parking::Refused(conn, session));
        }
        let ClientConn { stream, .. } = *conn;
        // Fails only if the reactor refuses to let go of the socket: the socket is gone then.
        let stream = stream.into_std()?;
        let fd = stream.raw_fd();
        let mut parked = self.lock();
        let stamp = parked.stamp.wrapping_add(1);
        parked.stamp = stamp;
        let slot = parked.insert(
            Client {
                stream,
                session,
                stamp,
            },
            tracked,
        );
        // Registered under the lock, once in its slot: an event for it finds it there (one that is already
        // readable is reported at once).
        if let Err(e) =
            self.registry
                .register(&mut SourceFd(&fd), token(slot), mio::Interest::READABLE)
        {
            let client = parked.remove(slot);
            drop(parked);
            // The refused client's task goes on, tracked itself: the lot's place can go with it.
            let Some((
                Client {
                    stream, session, ..
                },
                _lot_tracked,
            )) = client
            else {
                unreachable!("just inserted");
            };
            tracing::debug!("cannot park client {}: {e}", record.id);
            record.clear_park_request();
            let conn = Box::new(ClientConn::new(stream.into_tokio()?));
            return Ok(Parking::Refused(conn, session));
        }
        let soonest = parked.deadlines.peek().map(|Reverse((at, ..))| *at);
        if let Some(at) = deadline {
            parked.deadlines.push(Reverse((at, slot, stamp)));
        }
        drop(parked);
        if record.killed().is_some() {
            // Thrown after the look above, its wake may have found the lot before the client was in it.
            self.signal.killed.store(true, Ordering::Release);
            self.signal.nudge();
        } else if deadline.is_some_and(|at| soonest.is_none_or(|s| at < s)) {
            self.signal.nudge();
        }
        Ok(Parking::Parked)
    }

    /// Takes the client in `slot` out of the lot and serves it in a new task.
    fn resume(&self, state: &Arc<State>, slot: u32, why: Resume) {
        // The lot's place among the tracked tasks, if this is its last client, goes once the client's new
        // task is tracked (at the end of this function).
        let Some((client, _lot_tracked)) = self.lock().remove(slot) else {
            return; // resumed already
        };
        let fd = client.stream.raw_fd();
        let id = client.session.info().id;
        if let Err(e) = self.registry.deregister(&mut SourceFd(&fd)) {
            tracing::debug!("deregistering parked client {id}: {e}");
        }
        let stream = match client.stream.into_tokio() {
            Ok(stream) => stream,
            Err(e) => {
                // The socket closes; the session's drop gives its places back.
                tracing::warn!("cannot resume client {id}: {e}");
                return;
            }
        };
        client.session.info().clear_park_request();
        state.lifecycle.tracker.spawn(super::resume(
            Arc::clone(state),
            stream,
            client.session,
            why,
        ));
    }

    /// Resumes the clients whose client_idle_timeout expired by `now`; the next deadline, if any.
    fn resume_expired(&self, state: &Arc<State>, now: Instant) -> Option<Instant> {
        loop {
            let due = {
                let mut parked = self.lock();
                let &Reverse((at, slot, stamp)) = parked.deadlines.peek()?;
                if at > now {
                    return Some(at);
                }
                parked.deadlines.pop();
                parked
                    .slots
                    .get(slot as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|c| c.stamp == stamp)
                    .then_some(slot)
            };
            if let Some(slot) = due {
                self.resume(state, slot, Resume::IdleTimeout);
            }
        }
    }

    /// Resumes the parked clients whose kill switch was thrown.
    fn resume_killed(&self, state: &Arc<State>) {
        let killed: Vec<u32> = self
            .lock()
            .slots
            .iter()
            .zip(0u32..)
            .filter(|(c, _)| {
                c.as_ref()
                    .is_some_and(|c| c.session.info().killed().is_some())
            })
            .map(|(_, slot)| slot)
            .collect();
        for slot in killed {
            self.resume(state, slot, Resume::Serve);
        }
    }
}

/// Asks every pool client quiet for [`PARK_AFTER`] and holding no server to park (the lot's thread, every
/// [`ASK_EVERY`]); fresh clients park by themselves, and are asked only after [`PARK_FRESH_FALLBACK`]. Cheap
/// for the rest: parked clients and those asked already are not woken again.
fn request_parking(state: &State) {
    if !state.parking.as_ref().is_some_and(Lot::is_open) {
        return;
    }
    for pool in state.pools.all() {
        pool.live_clients.each(|record: &ClientRecord| {
            if record.state() == ClientState::Idle
                && !record.park_requested()
                && record.quiet_for()
                    >= if record.has_sent() {
                        PARK_AFTER
                    } else {
                        PARK_FRESH_FALLBACK
                    }
            {
                record.request_park();
            }
        });
    }
}

/// Starts the lot's thread, which watches the parked sockets, their deadlines and kill switches until
/// [`close`] (or until the state is gone). Clients park only once it runs. Call inside the runtime: the
/// clients it resumes are spawned there.
pub fn start(state: &Arc<State>) {
    let Some(lot) = state.parking.as_ref() else {
        return;
    };
    let Some(poll) = lot.poll.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return; // started already
    };
    let runtime = tokio::runtime::Handle::current();
    let state = Arc::downgrade(state);
    let started = std::thread::Builder::new()
        .name("pgwarden-park".into())
        .spawn(move || {
            let _runtime = runtime.enter();
            watch(poll, &state);
        });
    match started {
        Ok(_) => lot.open.store(true, Ordering::Release),
        Err(e) => tracing::warn!("idle clients will not be parked: {e}"),
    }
}

/// Stops the lot's thread (at exit: after an immediate shutdown resumed every parked client).
pub fn close(state: &State) {
    if let Some(lot) = state.parking.as_ref() {
        lot.open.store(false, Ordering::Release);
        lot.closing.store(true, Ordering::Release);
        lot.signal.nudge();
    }
}

fn watch(mut poll: mio::Poll, state: &Weak<State>) {
    const BATCH: usize = 256;
    let mut events = mio::Events::with_capacity(BATCH);
    let mut next_deadline: Option<Instant> = None;
    let mut next_ask = Instant::now() + ASK_EVERY;
    loop {
        // Also the longest sleep between looks at whether the state is still there (tests drop theirs).
        let wake_at = next_deadline.map_or(next_ask, |at| at.min(next_ask));
        let timeout = wake_at.saturating_duration_since(Instant::now());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!("parked clients' poll failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        let Some(lot) = state.parking.as_ref() else {
            return;
        };
        if lot.closing.load(Ordering::Acquire) {
            return;
        }
        for event in &events {
            if let Some(slot) = slot_of(event.token()) {
                lot.resume(&state, slot, Resume::Serve);
            }
        }
        if lot.signal.killed.swap(false, Ordering::AcqRel) {
            lot.resume_killed(&state);
        }
        let now = Instant::now();
        next_deadline = lot.resume_expired(&state, now);
        if now >= next_ask {
            request_parking(&state);
            next_ask = now + ASK_EVERY;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot is what every parked client costs beside its session, and the slab keeps one for each client
    /// parked at the busiest moment.
    #[test]
    fn a_slot_stays_small() {
        let slot = size_of::<Option<Client>>();
        assert!(slot <= 24, "a parked client's slot is {slot} bytes");
    }
}
