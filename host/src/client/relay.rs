//! Protocol bookkeeping of a client linked to a server: what is forwarded, what is hidden, and when the
//! server can be given back.
//!
//! Bytes move as runs of whole frames split off the read buffers (no copy); only the messages the pooler
//! acts on are parsed. Frames larger than [`STREAM_MIN`] of kinds the pooler never needs to read (DataRow,
//! CopyData, Bind, …) are streamed through without being buffered whole.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::{Buf, BufMut, BytesMut};

use super::outq::OutQueue;
use super::prepared::{self, Statement, Statements};
use crate::params::{ParamValues, Tracked};
use crate::protocol::backend::{self, ErrorFields, TransactionStatus, tag as be};
use crate::protocol::frontend::{self, Kind, tag as fe};
use crate::protocol::{HEADER_LEN, ProtocolError, frame};
use crate::sql::session::{self as session_sql, Effects};

/// Frames above this size may be streamed instead of buffered whole.
pub const STREAM_MIN: usize = 64 * 1024;

/// What went wrong while relaying; each ends the client's session.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client: {0}")]
    Client(ProtocolError),
    #[error("server: {0}")]
    Server(ProtocolError),
    #[error("unexpected message '{}' from client", char::from(*.0))]
    UnexpectedFromClient(u8),
    #[error("PQexec disallowed")]
    SimpleQueryDisallowed,
}

/// The state of one link between a client and a server.
#[derive(Debug)]
pub struct Relay {
    /// ReadyForQuery messages still expected from the server (one per Query, FunctionCall and Sync sent).
    pub outstanding: u32,
    /// The first `hidden` of those answer pgwarden's own queries (parameter sync): swallowed.
    pub hidden: u32,
    /// Every message sent (or answered by pgwarden itself) whose reply is still due, in order, with the ends
    /// of the client's COPY data. Extended-protocol messages get one reply each (or none, when an earlier
    /// one failed: the server then skips to the next Sync), which is how replies pgwarden gives itself
    /// (ParseComplete, CloseComplete) and replies it hides (to its own Parse and Close) fall into place.
    /// PostgreSQL ignores a Sync it reads in COPY FROM STDIN mode, so which Syncs will be answered is only
    /// known once the COPY ends (tokio-postgres sends Bind/Execute/Sync, then the data, CopyDone, Sync).
    pending: VecDeque<Pending>,
    /// The server is in COPY FROM STDIN mode (CopyInResponse seen, no CommandComplete or error yet).
    copy_in: bool,
    /// Extended-protocol messages were sent since the last Sync: the server is mid-batch.
    pub unsynced: bool,
    /// Transaction status from the last ReadyForQuery.
    pub tx: TransactionStatus,
    /// Bytes left of a client frame being streamed to the server.
    client_stream_left: usize,
    /// Bytes left of a server frame being streamed (or discarded, when hidden) to the client.
    server_stream_left: usize,
    server_stream_hidden: bool,
    /// The client's messages are dropped until its Sync: the server skips them (an error in the batch) or
    /// must not see them (a refused message's batch).
    skip_until_sync: bool,
    /// The client frame being streamed is being dropped (it belongs to a skipped batch).
    client_stream_drop: bool,
    /// pgwarden's stand-ins for refused messages sent and not yet answered or skipped.
    standins: u32,
    /// Replies pgwarden gives itself that are due, waiting for the bytes before them to be queued.
    synth: BytesMut,
    /// The client sent Terminate: nothing more will be read from it.
    pub client_terminated: bool,
    /// The server sent a FATAL error: it is going away.
    pub server_fatal: bool,
    /// The server reported an application_name the client had not been told yet (cleared by the session,
    /// which shows it in SHOW CLIENTS).
    pub app_reported: bool,
    /// When the oldest unanswered query was sent (query_timeout).
    pub query_started: Option<Instant>,
    /// When the last ReadyForQuery of this link arrived (idle_transaction_timeout); `None` before the first,
    /// when no transaction can be open (a link starts idle), so starting one reads no clock.
    pub last_ready: Option<Instant>,
    /// When the current transaction began (transaction_timeout).
    pub tx_started: Option<Instant>,
    /// `disable_pqexec`: a simple Query message is refused (PgBouncer closes the client).
    pub disallow_simple_query: bool,
    /// Counters for the console.
    pub counts: Counts,
    /// What the client's SQL does to its server session is tracked (transaction and statement pooling).
    pub track_session: bool,
    /// The client's `standard_conforming_strings`, for reading its SQL.
    pub standard_strings: bool,
    /// session_state=reject: statements creating state that cannot move are refused with this hint.
    pub refuse_sticky: Option<Arc<str>>,
    /// session_state=allow: such state is not recorded.
    pub ignore_sticky: bool,
    /// What this link's statements may have done to the session.
    pub effects: Effects,
}

/// What a link did, for SHOW STATS.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub queries: u64,
    pub transactions: u64,
    /// Named Parse messages from the client (prepared statement tracking).
    pub client_parses: u64,
    /// Parse messages of tracked statements sent to the server (the client's, or pgwarden's before a use).
    pub server_parses: u64,
    /// Bind messages of tracked statements.
    pub binds: u64,
    /// Bytes read from the client and from the server for it (SHOW STATS' received and sent).
    pub received: u64,
    pub sent: u64,
    /// Microseconds from a query (or pipeline of them) sent until its last ReadyForQuery, and from a
    /// transaction's first query until its end.
    pub query_us: u64,
    pub xact_us: u64,
}

impl Relay {
    pub fn new() -> Self {
        Self {
            outstanding: 0,
            hidden: 0,
            pending: VecDeque::new(),
            copy_in: false,
            unsynced: false,
            tx: TransactionStatus::Idle,
            client_stream_left: 0,
            skip_until_sync: false,
            client_stream_drop: false,
            standins: 0,
            synth: BytesMut::new(),
            server_stream_left: 0,
            server_stream_hidden: false,
            client_terminated: false,
            server_fatal: false,
            app_reported: false,
            query_started: None,
            last_ready: None,
            tx_started: None,
            disallow_simple_query: false,
            counts: Counts::default(),
            track_session: false,
            standard_strings: true,
            refuse_sticky: None,
            ignore_sticky: false,
            effects: Effects::default(),
        }
    }

    /// Starts a new link, keeping allocations (the pending queue) from the previous one.
    pub fn reset(&mut self) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.clear();
        *self = Self {
            pending,
            ..Self::new()
        };
    }

    /// Everything sent has been answered, nothing is half-sent, and no transaction is open: the server can go
    /// to someone else.
    pub fn releasable(&self) -> bool {
        self.quiet() && self.tx == TransactionStatus::Idle
    }

    /// Everything sent has been answered (the server waits for the client), whatever the transaction state.
    pub fn quiet(&self) -> bool {
        self.outstanding == 0
            && !self.unsynced
            && self.client_stream_left == 0
            && self.server_stream_left == 0
    }

    /// Records that pgwarden sent one query of its own ahead of the client's traffic.
    pub fn add_hidden_query(&mut self) {
        self.hidden += 1;
        self.outstanding += 1;
        self.pending.push_back(Pending::Query);
    }

    /// Moves whole client frames (and the part of a streamed one that is here) from `input` to `out`,
    /// asking `policy` (when there is one) about every Query and Parse first, and mapping the client's named
    /// statements to the server's when `stmts` tracks them. Replies pgwarden gives itself go to `to_client`.
    pub fn process_client(
        &mut self,
        input: &mut BytesMut,
        out: &mut OutQueue,
        to_client: &mut OutQueue,
        max: u32,
        policy: Option<&mut dyn QueryPolicy>,
        stmts: Option<&mut Statements<'_>>,
    ) -> Result<(), RelayError> {
        let before = input.len();
        let result = self.relay_client(input, out, to_client, max, policy, stmts);
        self.counts.received += (before - input.len()) as u64;
        result
    }

    fn relay_client(
        &mut self,
        input: &mut BytesMut,
        out: &mut OutQueue,
        to_client: &mut OutQueue,
        max: u32,
        mut policy: Option<&mut dyn QueryPolicy>,
        mut stmts: Option<&mut Statements<'_>>,
    ) -> Result<(), RelayError> {
        let mut run = 0;
        while !self.client_terminated {
            if self.client_stream_left > 0 {
                let n = self.client_stream_left.min(input.len() - run);
                if self.client_stream_drop {
                    out.push(input.split_to(run).freeze());
                    run = 0;
                    input.advance(n);
                } else {
                    run += n;
                }
                self.client_stream_left -= n;
                if self.client_stream_left > 0 {
                    break;
                }
                continue;
            }
            let Some(h) = frame::peek(&input[run..], max).map_err(RelayError::Client)? else {
                break;
            };
            let whole = input.len() - run >= h.frame_len;
            let streamable = matches!(h.tag, fe::BIND | fe::COPY_DATA | fe::FUNCTION_CALL)
                && h.frame_len > STREAM_MIN;
            if !whole && !streamable {
                break;
            }
            let kind = Kind::of(h.tag);
            if self.skip_until_sync && !matches!(kind, Kind::Sync | Kind::Terminate) {
                // The rest of a batch that failed or was refused: the server skips it or must not see it.
                out.push(input.split_to(run).freeze());
                run = 0;
                self.drop_client_frame(input, h.frame_len, whole);
                continue;
            }
            self.client_stream_drop = false;
            if h.tag == fe::FUNCTION_CALL && policy.is_some() {
                // A fastpath call names a function by OID with binary arguments: no policy can read it (it
                // could be set_config or a function that writes), so where queries are checked it is refused.
                out.push(input.split_to(run).freeze());
                run = 0;
                self.drop_client_frame(input, h.frame_len, whole);
                out.push(denial_query(&fastpath_denial()));
                self.standin_sent(false, None);
                continue;
            }
            if whole
                && matches!(h.tag, fe::QUERY | fe::PARSE)
                && let Some(policy) = policy.as_deref_mut()
            {
                let body = &input[run + HEADER_LEN..run + h.frame_len];
                if let Some(denial) = self.ask(policy, h.tag, body)? {
                    out.push(input.split_to(run).freeze());
                    run = 0;
                    input.advance(h.frame_len);
                    self.refuse(out, &denial, h.tag != fe::QUERY);
                    continue;
                }
            }
            let mut fx = Effects::default();
            if self.track_session && whole && matches!(h.tag, fe::QUERY | fe::PARSE) {
                let body = &input[run + HEADER_LEN..run + h.frame_len];
                if session_sql::may_have_effects(body) {
                    fx = self.read_effects(h.tag, body)?;
                    if let (Some(sticky), Some(hint)) = (fx.sticky, &self.refuse_sticky) {
                        let denial = sticky_denial(sticky, hint);
                        out.push(input.split_to(run).freeze());
                        run = 0;
                        input.advance(h.frame_len);
                        self.refuse(out, &denial, h.tag != fe::QUERY);
                        continue;
                    }
                    self.effects.merge(&fx);
                }
            }
            if let Some(stmts) = stmts.as_deref_mut()
                && matches!(h.tag, fe::PARSE | fe::BIND | fe::DESCRIBE | fe::CLOSE)
            {
                match self.map_statement(input, &mut run, h, whole, out, stmts, fx)? {
                    Mapped::Done => continue,
                    Mapped::NeedMore => break,
                    Mapped::Unnamed => {}
                }
            }
            match kind {
                Kind::Terminate => {
                    out.push(input.split_to(run).freeze());
                    input.advance(h.frame_len);
                    self.client_terminated = true;
                    self.flush_synth(to_client);
                    return Ok(());
                }
                Kind::Query if self.disallow_simple_query => {
                    out.push(input.split_to(run).freeze());
                    return Err(RelayError::SimpleQueryDisallowed);
                }
                Kind::Query | Kind::FunctionCall => self.query_sent(Pending::Query),
                Kind::Sync => {
                    self.query_sent(Pending::Sync);
                    self.unsynced = false;
                    self.skip_until_sync = false;
                }
                Kind::Extended => {
                    self.unsynced = true;
                    self.pending.push_back(Pending::Ext {
                        msg: Ext::of(h.tag),
                        forward: true,
                        undo: Undo::Nothing,
                    });
                }
                // A Flush starts nothing: after a Sync (libpq 17 pipelines send Sync, Flush) the link is quiet.
                Kind::Flush => {}
                Kind::Copy if h.tag != fe::COPY_DATA => self.pending.push_back(Pending::CopyEnd),
                Kind::Copy => {}
                Kind::Password | Kind::Unknown => {
                    return Err(RelayError::UnexpectedFromClient(h.tag));
                }
            }
            if whole {
                run += h.frame_len;
            } else {
                self.client_stream_left = h.frame_len;
            }
        }
        out.push(input.split_to(run).freeze());
        self.flush_synth(to_client);
        Ok(())
    }

    /// The session effects of a Query or Parse body (sticky state left out under session_state=allow).
    fn read_effects(&self, tag: u8, body: &[u8]) -> Result<Effects, RelayError> {
        let sql = if tag == fe::QUERY {
            frontend::parse_query(body).map_err(RelayError::Client)?
        } else {
            frontend::Parse::decode(body)
                .map_err(RelayError::Client)?
                .query
        };
        let mut fx = session_sql::effects(sql, self.standard_strings);
        if self.ignore_sticky {
            fx.sticky = None;
        }
        Ok(fx)
    }

    /// Drops a client frame the server must not see (whole, or the start of one to be streamed away).
    fn drop_client_frame(&mut self, input: &mut BytesMut, frame_len: usize, whole: bool) {
        if whole {
            input.advance(frame_len);
        } else {
            self.client_stream_left = frame_len;
            self.client_stream_drop = true;
        }
    }

    /// Sends, instead of a refused message, a stand-in query that makes PostgreSQL raise `denial`. For an
    /// extended-protocol message (`in_batch`) the rest of the client's batch is dropped and the stand-in's
    /// ReadyForQuery hidden, so the client sees what PostgreSQL would have sent had the message failed.
    fn refuse(&mut self, out: &mut OutQueue, denial: &Denial, in_batch: bool) {
        self.refuse_as(out, denial, in_batch, None);
    }

    /// Answers a Bind or Describe of a statement the client cannot use: one prepared before DDL changed
    /// its result type (`outdated`), or one it never prepared.
    fn refuse_unusable(&mut self, out: &mut OutQueue, name: &str, outdated: bool) {
        if outdated {
            self.refuse_as(out, &result_type_changed(), true, Some(REVALIDATE));
        } else {
            self.refuse(out, &statement_error("26000", name, "does not exist"), true);
        }
    }

    /// [`Relay::refuse`], the error naming `routine` as the PostgreSQL function that raised it (drivers
    /// tell some errors apart by it).
    fn refuse_as(
        &mut self,
        out: &mut OutQueue,
        denial: &Denial,
        in_batch: bool,
        routine: Option<Routine>,
    ) {
        out.push(denial_query(denial));
        self.standin_sent(in_batch, routine);
        if in_batch {
            self.skip_until_sync = true;
        }
    }

    fn standin_sent(&mut self, silent: bool, routine: Option<Routine>) {
        self.standins += 1;
        self.query_sent(Pending::Standin { silent, routine });
    }

    /// Maps a Parse, Bind, Describe or Close naming a statement to the server's statement, preparing it on
    /// the server first when needed; `Unnamed` leaves the message (unnamed statement, or a portal) as it is.
    #[allow(
        clippy::too_many_arguments,
        reason = "the frame being read and where it goes, as process_client holds them"
    )]
    fn map_statement(
        &mut self,
        input: &mut BytesMut,
        run: &mut usize,
        h: frame::Header,
        whole: bool,
        out: &mut OutQueue,
        stmts: &mut Statements<'_>,
        effects: Effects,
    ) -> Result<Mapped, RelayError> {
        let at = *run + HEADER_LEN;
        let available = &input[at..(*run + h.frame_len).min(input.len())];
        match h.tag {
            fe::PARSE => {
                let parse = frontend::Parse::decode(available).map_err(RelayError::Client)?;
                if parse.name.is_empty() {
                    return Ok(Mapped::Unnamed);
                }
                let name: Box<str> = parse.name.into();
                let mut stmt = Statement::of(&parse);
                stmt.effects = effects;
                let stmt = Arc::new(stmt);
                out.push(input.split_to(*run).freeze());
                *run = 0;
                input.advance(h.frame_len);
                self.unsynced = true;
                if stmts.client.contains(&name) {
                    let denial = statement_error("42P05", &name, "already exists");
                    self.refuse(out, &denial, true);
                    return Ok(Mapped::Done);
                }
                self.counts.client_parses += 1;
                stmts.client.insert(&name, Arc::clone(&stmt));
                if stmts.server.touch(&stmt) {
                    self.pending.push_back(Pending::Synth {
                        reply: Synth::ParseComplete,
                        undo: Undo::Registered {
                            name,
                            stmt,
                            on_server: false,
                        },
                    });
                } else {
                    let undo = Undo::Registered {
                        name,
                        stmt: Arc::clone(&stmt),
                        on_server: true,
                    };
                    self.prepare_on_server(&stmt, true, undo, out, stmts);
                }
                Ok(Mapped::Done)
            }
            fe::BIND => {
                let Some((portal, name, rest_at)) = prepared::bind_names(available) else {
                    if whole {
                        // Malformed: the server says so.
                        return Ok(Mapped::Unnamed);
                    }
                    return Ok(Mapped::NeedMore);
                };
                if name.is_empty() {
                    return Ok(Mapped::Unnamed);
                }
                let name = String::from_utf8_lossy(name).into_owned();
                let stmt = match stmts.client.get(&name) {
                    Some(stmt) if !stmts.server.outdated(stmt) => Arc::clone(stmt),
                    found => {
                        out.push(input.split_to(*run).freeze());
                        *run = 0;
                        self.drop_client_frame(input, h.frame_len, whole);
                        self.unsynced = true;
                        self.refuse_unusable(out, &name, found.is_some());
                        return Ok(Mapped::Done);
                    }
                };
                let head =
                    prepared::bind_prefix(h.frame_len, portal, name.len(), &stmt.server_name);
                out.push(input.split_to(*run).freeze());
                *run = 0;
                self.effects.merge(&stmt.effects);
                self.ensure_on_server(&stmt, out, stmts);
                out.push(head.freeze());
                input.advance(HEADER_LEN + rest_at);
                let rest = h.frame_len - HEADER_LEN - rest_at;
                if whole {
                    *run = rest;
                } else {
                    let here = rest.min(input.len());
                    *run = here;
                    self.client_stream_left = rest - here;
                    self.client_stream_drop = false;
                }
                self.unsynced = true;
                self.counts.binds += 1;
                self.pending.push_back(Pending::Ext {
                    msg: Ext::Bind,
                    forward: true,
                    undo: Undo::Bound(stmt),
                });
                if self.client_stream_left > 0 {
                    // The loop's streaming branch must not count the bytes already in `run` again.
                    out.push(input.split_to(*run).freeze());
                    *run = 0;
                }
                Ok(Mapped::Done)
            }
            _ => {
                // Describe or Close: 'S' or 'P', then the name.
                let mut r = frame::Reader::new(available);
                let which = r.u8().map_err(RelayError::Client)?;
                let name = r.cstr().map_err(RelayError::Client)?;
                if which != b'S' || name.is_empty() {
                    return Ok(Mapped::Unnamed);
                }
                let name = name.to_owned();
                out.push(input.split_to(*run).freeze());
                *run = 0;
                input.advance(h.frame_len);
                self.unsynced = true;
                if h.tag == fe::CLOSE {
                    // Statements stay prepared on servers; the client's name goes. Closing a name that does
                    // not exist is no error in PostgreSQL either.
                    let undo = match stmts.client.remove(&name) {
                        Some(stmt) => Undo::Closed {
                            name: name.into(),
                            stmt,
                        },
                        None => Undo::Nothing,
                    };
                    self.pending.push_back(Pending::Synth {
                        reply: Synth::CloseComplete,
                        undo,
                    });
                    return Ok(Mapped::Done);
                }
                let stmt = match stmts.client.get(&name) {
                    Some(stmt) if !stmts.server.outdated(stmt) => Arc::clone(stmt),
                    found => {
                        self.refuse_unusable(out, &name, found.is_some());
                        return Ok(Mapped::Done);
                    }
                };
                self.ensure_on_server(&stmt, out, stmts);
                out.push(prepared::statement_message(fe::DESCRIBE, &stmt.server_name));
                self.pending.push_back(Pending::Ext {
                    msg: Ext::Describe,
                    forward: true,
                    undo: Undo::Bound(stmt),
                });
                Ok(Mapped::Done)
            }
        }
    }

    /// Prepares `stmt` on the server (hiding the ParseComplete) unless the server has it.
    fn ensure_on_server(
        &mut self,
        stmt: &Arc<Statement>,
        out: &mut OutQueue,
        stmts: &mut Statements<'_>,
    ) {
        if !stmts.server.touch(stmt) {
            let undo = Undo::OnServer(Arc::clone(stmt));
            self.prepare_on_server(stmt, false, undo, out, stmts);
        }
    }

    /// Sends the Parse of `stmt` under its server name, closing least recently used statements first to
    /// stay within `max_prepared_statements` (and any statement whose key it shares).
    fn prepare_on_server(
        &mut self,
        stmt: &Arc<Statement>,
        forward: bool,
        undo: Undo,
        out: &mut OutQueue,
        stmts: &mut Statements<'_>,
    ) {
        for old in stmts.server.take_stale() {
            out.push(old.close_frame());
            self.pending.push_back(Pending::Ext {
                msg: Ext::Close,
                forward: false,
                undo: Undo::Stale(old),
            });
        }
        let collided = stmts.server.collides(stmt);
        if let Some(old) = &collided {
            stmts.server.forget(old);
        }
        let mut evicted = collided;
        loop {
            if let Some(old) = evicted.take() {
                out.push(old.close_frame());
                self.pending.push_back(Pending::Ext {
                    msg: Ext::Close,
                    forward: false,
                    undo: Undo::Evicted(old),
                });
            }
            match stmts.server.evict_one(stmts.max) {
                Some(old) => evicted = Some(old),
                None => break,
            }
        }
        stmts.server.insert(Arc::clone(stmt));
        out.push(stmt.parse.clone());
        self.counts.server_parses += 1;
        self.pending.push_back(Pending::Ext {
            msg: Ext::Parse,
            forward,
            undo,
        });
    }

    /// The policy's verdict on a Query or Parse body: `Some` to deny.
    fn ask(
        &self,
        policy: &mut dyn QueryPolicy,
        tag: u8,
        body: &[u8],
    ) -> Result<Option<Denial>, RelayError> {
        let in_tx = self.tx != TransactionStatus::Idle;
        if tag == fe::QUERY {
            let sql = frontend::parse_query(body).map_err(RelayError::Client)?;
            Ok(policy.check(sql, false, "", in_tx))
        } else {
            let parse = frontend::Parse::decode(body).map_err(RelayError::Client)?;
            Ok(policy.check(parse.query, true, parse.name, in_tx))
        }
    }

    fn query_sent(&mut self, what: Pending) {
        let starts_tx = self.tx == TransactionStatus::Idle && self.tx_started.is_none();
        if self.outstanding == 0 || starts_tx {
            // One reading of the clock for both (they usually start together).
            let now = Instant::now();
            if self.outstanding == 0 {
                self.query_started = Some(now);
            }
            if starts_tx {
                self.tx_started = Some(now);
            }
        }
        self.outstanding += 1;
        self.pending.push_back(what);
        self.counts.queries += 1;
    }

    /// The server left COPY FROM STDIN mode. It ignored every Sync it read in that mode: those sent before the
    /// CopyDone/CopyFail that ended it (or all of them, when the server failed the COPY before the client
    /// finished). No ReadyForQuery will answer them.
    fn copy_ended(&mut self) {
        self.copy_in = false;
        let end = self
            .pending
            .iter()
            .position(|p| matches!(p, Pending::CopyEnd))
            .unwrap_or(self.pending.len());
        let mut i = 0;
        let mut ignored = 0;
        self.pending.retain(|p| {
            let (before, at_end) = (i < end, i == end);
            i += 1;
            if before && matches!(p, Pending::Sync) {
                ignored += 1;
                return false;
            }
            !at_end
        });
        self.outstanding = self.outstanding.saturating_sub(ignored);
        if self.outstanding == 0 {
            self.query_started = None;
        }
    }

    /// Moves server frames from `input` to `out`, hiding the answers to pgwarden's own queries and messages,
    /// adding the replies pgwarden gives itself in their place, and keeping the client's and the server's
    /// tracked parameters current.
    pub fn process_server(
        &mut self,
        input: &mut BytesMut,
        out: &mut OutQueue,
        ctx: &mut ServerCtx<'_, '_>,
    ) -> Result<(), RelayError> {
        let before = out.len();
        let result = self.relay_server(input, out, ctx);
        self.counts.sent += out.len().saturating_sub(before) as u64;
        result
    }

    fn relay_server(
        &mut self,
        input: &mut BytesMut,
        out: &mut OutQueue,
        ctx: &mut ServerCtx<'_, '_>,
    ) -> Result<(), RelayError> {
        let mut run = 0;
        loop {
            if self.server_stream_left > 0 {
                let n = self.server_stream_left.min(input.len() - run);
                if self.server_stream_hidden {
                    out.push(input.split_to(run).freeze());
                    run = 0;
                    input.advance(n);
                } else {
                    run += n;
                }
                self.server_stream_left -= n;
                if self.server_stream_left > 0 {
                    break;
                }
                continue;
            }
            let Some(h) = frame::peek(&input[run..], ctx.max).map_err(RelayError::Server)? else {
                break;
            };
            let whole = input.len() - run >= h.frame_len;
            if !whole {
                let streamable = matches!(
                    h.tag,
                    be::DATA_ROW
                        | be::COPY_DATA
                        | be::FUNCTION_CALL_RESPONSE
                        | be::NOTIFICATION_RESPONSE
                ) && h.frame_len > STREAM_MIN;
                if streamable {
                    self.server_stream_left = h.frame_len;
                    self.server_stream_hidden = self.hidden > 0;
                    continue;
                }
                break;
            }
            let body = &input[run + HEADER_LEN..run + h.frame_len];
            if self.copy_in && matches!(h.tag, be::COMMAND_COMPLETE | be::ERROR_RESPONSE) {
                self.copy_ended();
            }
            let verdict = if self.hidden > 0 {
                self.hidden_frame(h.tag, body, ctx)?
            } else {
                self.client_frame(h.tag, body, ctx)?
            };
            match verdict {
                Verdict::Forward => run += h.frame_len,
                Verdict::Drop => {
                    out.push(input.split_to(run).freeze());
                    run = 0;
                    input.advance(h.frame_len);
                }
                Verdict::Replace(bytes) => {
                    out.push(input.split_to(run).freeze());
                    run = 0;
                    input.advance(h.frame_len);
                    out.push(bytes);
                }
            }
            if !self.synth.is_empty() {
                out.push(input.split_to(run).freeze());
                run = 0;
                out.push_local(&mut self.synth);
            }
        }
        out.push(input.split_to(run).freeze());
        Ok(())
    }

    /// A frame answering pgwarden's own query: swallowed, but FATAL errors and parameter changes the client
    /// was not told about get through.
    fn hidden_frame(
        &mut self,
        tag: u8,
        body: &[u8],
        ctx: &mut ServerCtx<'_, '_>,
    ) -> Result<Verdict, RelayError> {
        Ok(match tag {
            be::READY_FOR_QUERY => {
                self.ready_for_query(body, ctx)?;
                Verdict::Drop
            }
            be::COPY_IN_RESPONSE | be::COPY_BOTH_RESPONSE => {
                self.copy_in = true;
                Verdict::Drop
            }
            be::PARAMETER_STATUS => self.parameter_status(body, ctx)?,
            be::ERROR_RESPONSE => {
                let fields = ErrorFields::parse(body).map_err(RelayError::Server)?;
                tracing::warn!("pgwarden's parameter sync failed on the server: {fields}");
                // Which SET failed is unknown: forget what the server holds, so the next link sets it all.
                *ctx.server_params = ParamValues::new(ctx.tracked);
                if fields.is_fatal() {
                    self.server_fatal = true;
                    Verdict::Forward
                } else {
                    Verdict::Drop
                }
            }
            _ => Verdict::Drop,
        })
    }

    /// A frame of the replies to the client's traffic (and pgwarden's messages among it).
    fn client_frame(
        &mut self,
        tag: u8,
        body: &[u8],
        ctx: &mut ServerCtx<'_, '_>,
    ) -> Result<Verdict, RelayError> {
        Ok(match tag {
            be::READY_FOR_QUERY => self.ready_for_query(body, ctx)?,
            be::PARSE_COMPLETE | be::BIND_COMPLETE | be::CLOSE_COMPLETE | be::NO_DATA => {
                self.reply_ends(true, ctx)
            }
            be::ROW_DESCRIPTION if self.front_is(Ext::Describe) => self.reply_ends(true, ctx),
            be::COMMAND_COMPLETE | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED => {
                if tag == be::COMMAND_COMPLETE
                    && let Some(stmts) = ctx.stmts.as_deref_mut()
                {
                    statements_command(body, stmts);
                }
                if self.front_is(Ext::Execute) {
                    self.reply_ends(true, ctx)
                } else {
                    Verdict::Forward
                }
            }
            be::COPY_IN_RESPONSE | be::COPY_BOTH_RESPONSE => {
                self.copy_in = true;
                Verdict::Forward
            }
            be::PARAMETER_STATUS => self.parameter_status(body, ctx)?,
            be::ERROR_RESPONSE => self.error_response(body, ctx)?,
            _ => Verdict::Forward,
        })
    }

    /// The index of the entry the server answers now (COPY ends are not answered).
    fn front(&self) -> Option<usize> {
        self.pending
            .iter()
            .position(|p| !matches!(p, Pending::CopyEnd))
    }

    fn front_is(&self, msg: Ext) -> bool {
        self.front()
            .is_some_and(|i| matches!(&self.pending[i], Pending::Ext { msg: m, .. } if *m == msg))
    }

    /// The server answered the extended-protocol message at the front (`ok`: not with an error): it is done.
    /// Returns whether the client sees the reply (not when it answers pgwarden's own message).
    fn reply_ends(&mut self, ok: bool, ctx: &mut ServerCtx<'_, '_>) -> Verdict {
        let Some(i) = self.front() else {
            return Verdict::Forward;
        };
        let Pending::Ext { .. } = &self.pending[i] else {
            return Verdict::Forward;
        };
        let Some(Pending::Ext { forward, undo, .. }) = self.pending.remove(i) else {
            unreachable!("checked above");
        };
        if !ok {
            undo.apply(ctx.stmts.as_deref_mut());
        }
        self.due_synth();
        if forward || !ok {
            Verdict::Forward
        } else {
            Verdict::Drop
        }
    }

    /// Queues the replies pgwarden gives itself that are now due (every earlier message answered).
    fn due_synth(&mut self) {
        while let Some(Pending::Synth { reply, .. }) = self.pending.front() {
            let tag = match reply {
                Synth::ParseComplete => be::PARSE_COMPLETE,
                Synth::CloseComplete => be::CLOSE_COMPLETE,
            };
            self.synth.put_u8(tag);
            self.synth.put_u32(4);
            self.pending.pop_front();
        }
    }

    /// Moves the replies due now to the client (after `process_client` queued messages pgwarden answers).
    fn flush_synth(&mut self, to_client: &mut OutQueue) {
        self.due_synth();
        if !self.synth.is_empty() {
            to_client.push_local(&mut self.synth);
        }
    }

    /// An ErrorResponse to the client's traffic. An extended-protocol message that fails makes the server skip
    /// the rest of its batch, up to the client's Sync; a stand-in's error loses the DO block's context.
    fn error_response(
        &mut self,
        body: &[u8],
        ctx: &mut ServerCtx<'_, '_>,
    ) -> Result<Verdict, RelayError> {
        let fields = ErrorFields::parse(body).map_err(RelayError::Server)?;
        if fields.is_fatal() {
            self.server_fatal = true;
        }
        let Some(i) = self.front() else {
            return Ok(Verdict::Forward);
        };
        match &self.pending[i] {
            Pending::Ext { undo, .. } => {
                if let Undo::Bound(stmt) = undo
                    && fields.code == "0A000"
                    && let Some(stmts) = ctx.stmts.as_deref_mut()
                {
                    // "cached plan must not change result type": the statement was prepared before a schema
                    // change. It is prepared again at its next Parse by a client (the driver's retry), on
                    // every server of the pool, instead of failing until an operator's RECONNECT.
                    stmts.server.result_type_changed(stmt);
                }
                let verdict = self.reply_ends(false, ctx);
                self.skip_batch(ctx);
                Ok(verdict)
            }
            Pending::Standin { routine, .. } => Ok(match standin_error(body, *routine)? {
                Some(error) => Verdict::Replace(error),
                None => Verdict::Forward,
            }),
            _ => Ok(Verdict::Forward),
        }
    }

    /// After an extended-protocol error the server ignores everything up to the next Sync: those messages
    /// get no reply (and what pgwarden recorded for them is undone); if the client has not sent that Sync
    /// yet, what it sends until then is dropped.
    fn skip_batch(&mut self, ctx: &mut ServerCtx<'_, '_>) {
        let mut synced = false;
        let mut i = 0;
        while i < self.pending.len() {
            match &self.pending[i] {
                Pending::Sync => {
                    synced = true;
                    break;
                }
                Pending::CopyEnd => i += 1,
                _ => {
                    let skipped = self.pending.remove(i).expect("index in range");
                    match skipped {
                        Pending::Ext { undo, .. } | Pending::Synth { undo, .. } => {
                            undo.apply(ctx.stmts.as_deref_mut());
                        }
                        Pending::Standin { .. } | Pending::Query => {
                            if matches!(skipped, Pending::Standin { .. }) {
                                self.standins = self.standins.saturating_sub(1);
                            }
                            self.outstanding = self.outstanding.saturating_sub(1);
                        }
                        Pending::Sync | Pending::CopyEnd => unreachable!("not removed"),
                    }
                }
            }
        }
        if !synced {
            self.skip_until_sync = true;
        }
        if self.outstanding == 0 {
            self.query_started = None;
        }
    }

    /// Returns whether to forward the ReadyForQuery.
    fn ready_for_query(
        &mut self,
        body: &[u8],
        ctx: &mut ServerCtx<'_, '_>,
    ) -> Result<Verdict, RelayError> {
        let status = backend::parse_ready_for_query(body).map_err(RelayError::Server)?;
        self.outstanding = self.outstanding.saturating_sub(1);
        // Drop the answered Query or Sync, and any COPY ends queued before it; extended messages before it
        // got no reply (the server skipped them).
        let mut answered = None;
        while let Some(p) = self.pending.pop_front() {
            match p {
                Pending::CopyEnd => {}
                Pending::Ext { undo, .. } | Pending::Synth { undo, .. } => {
                    undo.apply(ctx.stmts.as_deref_mut());
                }
                other => {
                    answered = Some(other);
                    break;
                }
            }
        }
        let now = Instant::now();
        self.last_ready = Some(now);
        if self.outstanding == 0
            && let Some(started) = self.query_started.take()
            && self.hidden == 0
        {
            self.counts.query_us += micros_since(started, now);
        }
        // Replies pgwarden owes for messages after this one are due now (also after its own query).
        self.due_synth();
        if self.hidden > 0 {
            self.hidden -= 1;
            return Ok(Verdict::Drop);
        }
        if let Some(Pending::Standin { silent, .. }) = answered {
            self.standins = self.standins.saturating_sub(1);
            if silent {
                // The server's state changed (a failed transaction stays failed), the client hears at its Sync.
                self.tx = status;
                return Ok(Verdict::Drop);
            }
        }
        if status == TransactionStatus::Idle
            && let Some(started) = self.tx_started.take()
        {
            self.counts.transactions += 1;
            self.counts.xact_us += micros_since(started, now);
        }
        self.tx = status;
        Ok(Verdict::Forward)
    }

    /// Whether to forward the ParameterStatus: always for the client's own traffic; for pgwarden's sync only
    /// when the value differs from what the client was last told.
    fn parameter_status(
        &mut self,
        body: &[u8],
        ctx: &mut ServerCtx<'_, '_>,
    ) -> Result<Verdict, RelayError> {
        let (name, value) = backend::parse_parameter_status(body).map_err(RelayError::Server)?;
        let Some(i) = ctx.tracked.index(name) else {
            return Ok(verdict(self.hidden == 0));
        };
        ctx.server_params.set(i, value);
        let changed_for_client = ctx.client_params.set(i, value);
        self.app_reported |= changed_for_client && i == Tracked::APPLICATION_NAME;
        if i == Tracked::STANDARD_CONFORMING_STRINGS {
            self.standard_strings = crate::params::standard_strings_on(value);
        }
        Ok(verdict(self.hidden == 0 || changed_for_client))
    }
}

fn micros_since(start: Instant, end: Instant) -> u64 {
    u64::try_from(end.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX)
}

fn verdict(forward: bool) -> Verdict {
    if forward {
        Verdict::Forward
    } else {
        Verdict::Drop
    }
}

/// What happens to one server frame.
enum Verdict {
    Forward,
    Drop,
    Replace(bytes::Bytes),
}

/// What [`Relay::map_statement`] did with a client message.
enum Mapped {
    /// Handled (sent rewritten, answered by pgwarden, or refused).
    Done,
    /// Not a named statement: relay it as it is.
    Unnamed,
    /// The statement name of a streamed Bind has not arrived yet.
    NeedMore,
}

/// session_state=reject's refusal of a statement that would create state that cannot move.
fn sticky_denial(sticky: session_sql::Sticky, hint: &str) -> Denial {
    Denial {
        sqlstate: "0A000".into(),
        message: format!("{} cannot be used with transaction pooling", sticky.what()),
        detail: Some("pgwarden's session_state = reject for this database".into()),
        hint: Some(hint.to_owned()),
    }
}

/// PostgreSQL's error for a statement name that does not exist or already exists.
fn statement_error(sqlstate: &str, name: &str, what: &str) -> Denial {
    // PgBouncer's log words (it closes the client here; pgwarden answers as PostgreSQL would).
    if sqlstate == "42P05" {
        tracing::info!("prepared statement '{name}' was already prepared");
    } else {
        tracing::info!("prepared statement '{name}' did not exist");
    }
    Denial {
        sqlstate: sqlstate.into(),
        message: format!("prepared statement \"{name}\" {what}"),
        detail: None,
        hint: None,
    }
}

/// The source file and function PostgreSQL names in an error it raises (fields F and R).
#[derive(Debug, Clone, Copy)]
struct Routine {
    file: &'static str,
    function: &'static str,
}

/// Where PostgreSQL raises [`result_type_changed`]: asyncpg recognises the error by this function and
/// then prepares the statement again on its own.
const REVALIDATE: Routine = Routine {
    file: "plancache.c",
    function: "RevalidateCachedQuery",
};

/// PostgreSQL's error for a statement prepared before DDL changed its result type (the client must prepare
/// it again): what the client would get without a pooler, though the server's plan is already new.
fn result_type_changed() -> Denial {
    Denial {
        sqlstate: "0A000".into(),
        message: "cached plan must not change result type".into(),
        detail: None,
        hint: None,
    }
}

/// A CommandComplete that changes which statements the server holds: DEALLOCATE ALL and DISCARD ALL drop
/// them all (the client's too: it asked); DEALLOCATE of one name may have dropped one of pgwarden's.
fn statements_command(body: &[u8], stmts: &mut Statements<'_>) {
    match body {
        b"DEALLOCATE ALL\0" | b"DISCARD ALL\0" => {
            stmts.client.clear();
            stmts.server.clear();
        }
        b"DEALLOCATE\0" if !stmts.server.is_empty() => stmts.server.distrust(),
        _ => {}
    }
}

/// The stand-in's own error, as the client should see it: the refusal alone, without the DO block's context
/// and source location. `None` when the error is another one (the stand-in ran in a failed transaction).
fn standin_error(
    body: &[u8],
    routine: Option<Routine>,
) -> Result<Option<bytes::Bytes>, RelayError> {
    let fields = backend::error_fields(body).map_err(RelayError::Server)?;
    let marker = DENIAL_MARKER.as_bytes();
    if !fields.iter().any(|&(f, v)| f == b'n' && v == marker) {
        return Ok(None);
    }
    let mut kept: Vec<_> = fields
        .into_iter()
        .filter(|(f, _)| !matches!(f, b'n' | b'W' | b'F' | b'L' | b'R'))
        .collect();
    if let Some(r) = routine {
        kept.extend([(b'F', r.file.as_bytes()), (b'R', r.function.as_bytes())]);
    }
    let mut buf = BytesMut::new();
    backend::write_raw_error_fields(&mut buf, be::ERROR_RESPONSE, &kept);
    Ok(Some(buf.freeze()))
}

/// An entry of [`Relay::pending`].
#[derive(Debug)]
enum Pending {
    /// A Query or FunctionCall (the client's or pgwarden's own): ended by a ReadyForQuery.
    Query,
    /// A Sync: one ReadyForQuery, unless the server reads it in COPY FROM STDIN mode.
    Sync,
    /// CopyDone or CopyFail: the end of the client's COPY data.
    CopyEnd,
    /// pgwarden's stand-in for a refused message: a Query that makes PostgreSQL raise the refusal. `silent`
    /// when it replaced an extended-protocol message: its ReadyForQuery is hidden (the client's Sync gets one).
    Standin {
        silent: bool,
        routine: Option<Routine>,
    },
    /// An extended-protocol message: one reply ends it, or the server skips it after an earlier error.
    /// `forward`: the client sees the reply (not when pgwarden sent the message on its own).
    Ext { msg: Ext, forward: bool, undo: Undo },
    /// A reply pgwarden gives for a message it answers itself, due once every earlier message is answered.
    Synth { reply: Synth, undo: Undo },
}

/// Which extended-protocol message an entry is (what ends its reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    Parse,
    Bind,
    Describe,
    Execute,
    Close,
}

impl Ext {
    fn of(tag: u8) -> Self {
        match tag {
            fe::PARSE => Self::Parse,
            fe::BIND => Self::Bind,
            fe::DESCRIBE => Self::Describe,
            fe::EXECUTE => Self::Execute,
            _ => Self::Close,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synth {
    ParseComplete,
    CloseComplete,
}

/// What to take back when a message fails or the server skips it: the statement bookkeeping done when it
/// was sent, so that the client's and the server's statements stay what PostgreSQL would hold.
#[derive(Debug)]
enum Undo {
    Nothing,
    /// A client's new statement (also recorded on the server when `on_server`).
    Registered {
        name: Box<str>,
        stmt: Arc<Statement>,
        on_server: bool,
    },
    /// pgwarden's Parse before a use.
    OnServer(Arc<Statement>),
    /// A client's Close: the name stays.
    Closed {
        name: Box<str>,
        stmt: Arc<Statement>,
    },
    /// pgwarden's Close of an evicted statement: the server keeps it.
    Evicted(Arc<Statement>),
    /// A Bind or Describe of this statement: nothing to take back (kept to recognise a stale plan: both
    /// fail when DDL changed the result type).
    Bound(Arc<Statement>),
    /// pgwarden's Close of a stale statement: it is still to be closed.
    Stale(Arc<Statement>),
}

impl Undo {
    fn apply(self, stmts: Option<&mut Statements<'_>>) {
        let Some(stmts) = stmts else {
            return;
        };
        match self {
            Undo::Nothing => {}
            Undo::Registered {
                name,
                stmt,
                on_server,
            } => {
                if stmts
                    .client
                    .get(&name)
                    .is_some_and(|held| Arc::ptr_eq(held, &stmt))
                {
                    stmts.client.remove(&name);
                }
                if on_server {
                    stmts.server.forget(&stmt);
                }
            }
            Undo::OnServer(stmt) => stmts.server.forget(&stmt),
            Undo::Closed { name, stmt } => {
                if !stmts.client.contains(&name) {
                    stmts.client.insert(&name, stmt);
                }
            }
            Undo::Evicted(stmt) => stmts.server.insert(stmt),
            Undo::Bound(_) => {}
            Undo::Stale(stmt) => stmts.server.mark_stale(&stmt),
        }
    }
}

/// A query policy (the plugins that apply to this client), asked about each Query and Parse.
pub trait QueryPolicy {
    /// `None` allows the SQL; `Some` denies it with that error.
    fn check(
        &mut self,
        sql: &str,
        extended: bool,
        statement_name: &str,
        in_transaction: bool,
    ) -> Option<Denial>;
}

/// A denied query's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

/// The refusal of a fastpath FunctionCall on a connection whose queries a policy checks.
fn fastpath_denial() -> Denial {
    Denial {
        sqlstate: "0A000".into(),
        message: "fastpath function calls are not allowed where pgwarden checks queries".into(),
        detail: None,
        hint: Some("call the function with SELECT".into()),
    }
}

/// Tags the error of a denial's stand-in (as its CONSTRAINT field, removed before the client sees it), so
/// the relay tells it from any other error. Random per process: a client cannot forge it.
static DENIAL_MARKER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "pgwarden-denial-{:016x}",
        RandomState::new().hash_one(std::process::id())
    )
});

/// The query pgwarden sends instead of a denied one: PostgreSQL raises the denial itself, so the client
/// gets its error with PostgreSQL's exact transaction semantics (inside a transaction block the transaction
/// fails; inside an already failed one the client gets "current transaction is aborted", as always).
pub(crate) fn denial_query(d: &Denial) -> bytes::Bytes {
    // The dollar-quote tag must not occur in the texts.
    let lit = |s: &str| crate::params::quote_literal(&s.replace("$pgwarden$", "$ pgwarden$"));
    let mut sql = format!(
        "DO $pgwarden$BEGIN RAISE EXCEPTION USING ERRCODE = {}, MESSAGE = {}, CONSTRAINT = {}",
        lit(&d.sqlstate),
        lit(&d.message),
        lit(&DENIAL_MARKER)
    );
    for (key, value) in [("DETAIL", &d.detail), ("HINT", &d.hint)] {
        if let Some(v) = value {
            sql.push_str(&format!(", {key} = {}", lit(v)));
        }
    }
    sql.push_str("; END$pgwarden$");
    let mut buf = BytesMut::with_capacity(sql.len() + 6);
    frontend::write_query(&mut buf, &sql);
    buf.freeze()
}

impl Default for Relay {
    fn default() -> Self {
        Self::new()
    }
}

/// What `process_server` needs besides the bytes.
pub struct ServerCtx<'a, 'b> {
    pub tracked: &'a Tracked,
    pub server_params: &'a mut ParamValues,
    pub client_params: &'a mut ParamValues,
    pub max: u32,
    /// The linked client's and server's prepared statements, when they are tracked.
    pub stmts: Option<&'a mut Statements<'b>>,
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "relay_prepared_tests.rs"]
mod prepared_tests;
