//! Protocol bookkeeping of a client linked to a server: what is forwarded, what is hidden, and when the
//! server can be given back.
//!
//! Bytes move as runs of whole frames split off the read buffers (no copy); only the messages the pooler
//! acts on are parsed. Frames larger than [`STREAM_MIN`] of kinds the pooler never needs to read (DataRow,
//! CopyData, Bind, …) are streamed through without being buffered whole.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::time::Instant;

use bytes::{Buf, BytesMut};

use super::outq::OutQueue;
use crate::params::{ParamValues, Tracked};
use crate::protocol::backend::{self, ErrorFields, TransactionStatus, tag as be};
use crate::protocol::frontend::{self, Kind, tag as fe};
use crate::protocol::{HEADER_LEN, ProtocolError, frame};

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
    /// What was sent and is still unanswered, in order, with the ends of the client's COPY data: PostgreSQL
    /// ignores a Sync it reads in COPY FROM STDIN mode, so which Syncs will be answered is only known once the
    /// COPY ends (tokio-postgres sends Bind/Execute/Sync, then the data, CopyDone, Sync: one ReadyForQuery).
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
    /// A Parse was denied by a policy: the client's messages are dropped until its Sync.
    skip_until_sync: bool,
    /// The client frame being streamed is being dropped (it belongs to a denied batch).
    client_stream_drop: bool,
    /// pgwarden's stand-ins for denied queries sent and not yet answered or skipped.
    denials: u32,
    /// The client sent Terminate: nothing more will be read from it.
    pub client_terminated: bool,
    /// The server sent a FATAL error: it is going away.
    pub server_fatal: bool,
    /// When the oldest unanswered query was sent (query_timeout).
    pub query_started: Option<Instant>,
    /// When the last ReadyForQuery arrived (idle_transaction_timeout, client_idle_timeout).
    pub last_ready: Instant,
    /// When the current transaction began (transaction_timeout).
    pub tx_started: Option<Instant>,
    /// `disable_pqexec`: a simple Query message is refused (PgBouncer closes the client).
    pub disallow_simple_query: bool,
    /// Counters for the console.
    pub queries: u64,
    pub transactions: u64,
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
            denials: 0,
            server_stream_left: 0,
            server_stream_hidden: false,
            client_terminated: false,
            server_fatal: false,
            query_started: None,
            last_ready: Instant::now(),
            tx_started: None,
            disallow_simple_query: false,
            queries: 0,
            transactions: 0,
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
        self.outstanding == 0
            && !self.unsynced
            && self.client_stream_left == 0
            && self.server_stream_left == 0
            && self.tx == TransactionStatus::Idle
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
    /// asking `policy` (when there is one) about every Query and Parse first.
    pub fn process_client(
        &mut self,
        input: &mut BytesMut,
        out: &mut OutQueue,
        max: u32,
        mut policy: Option<&mut dyn QueryPolicy>,
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
                // The rest of a batch whose Parse was denied: the server never sees it, as PostgreSQL
                // itself would skip it after an error.
                out.push(input.split_to(run).freeze());
                run = 0;
                if whole {
                    input.advance(h.frame_len);
                } else {
                    self.client_stream_left = h.frame_len;
                    self.client_stream_drop = true;
                }
                continue;
            }
            self.client_stream_drop = false;
            if h.tag == fe::FUNCTION_CALL && policy.is_some() {
                // A fastpath call names a function by OID with binary arguments: no policy can read it (it
                // could be set_config or a function that writes), so where queries are checked it is refused.
                out.push(input.split_to(run).freeze());
                run = 0;
                if whole {
                    input.advance(h.frame_len);
                } else {
                    self.client_stream_left = h.frame_len;
                    self.client_stream_drop = true;
                }
                out.push(denial_query(&fastpath_denial()));
                self.query_sent(Pending::Query);
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
                    out.push(denial_query(&denial));
                    self.denials += 1;
                    if h.tag == fe::PARSE {
                        // The server answers with the error and a ReadyForQuery the client does not expect
                        // until its own Sync: that one is swallowed. If earlier messages of the batch were
                        // sent, one of them may fail first; the server then skips the stand-in too.
                        self.query_sent(if self.unsynced {
                            Pending::SilentReadyAfterBatch
                        } else {
                            Pending::SilentReady
                        });
                        self.skip_until_sync = true;
                    } else {
                        self.query_sent(Pending::Query);
                    }
                    continue;
                }
            }
            match kind {
                Kind::Terminate => {
                    out.push(input.split_to(run).freeze());
                    input.advance(h.frame_len);
                    self.client_terminated = true;
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
                Kind::Extended | Kind::Flush => self.unsynced = true,
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
        Ok(())
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
        if self.outstanding == 0 {
            self.query_started = Some(Instant::now());
        }
        if self.tx == TransactionStatus::Idle && self.tx_started.is_none() {
            self.tx_started = Some(Instant::now());
        }
        self.outstanding += 1;
        self.pending.push_back(what);
        self.queries += 1;
    }

    /// The server left COPY FROM STDIN mode. It ignored every Sync it read in that mode: those sent before the
    /// CopyDone/CopyFail that ended it (or all of them, when the server failed the COPY before the client
    /// finished). No ReadyForQuery will answer them.
    fn copy_ended(&mut self) {
        self.copy_in = false;
        let end = self
            .pending
            .iter()
            .position(|p| *p == Pending::CopyEnd)
            .unwrap_or(self.pending.len());
        let mut i = 0;
        let mut ignored = 0;
        self.pending.retain(|p| {
            let (before, at_end) = (i < end, i == end);
            i += 1;
            if before && *p == Pending::Sync {
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

    /// Moves server frames from `input` to `out`, hiding the answers to pgwarden's own queries and keeping the
    /// client's and the server's tracked parameters current.
    pub fn process_server(
        &mut self,
        input: &mut BytesMut,
        out: &mut OutQueue,
        ctx: &mut ServerCtx<'_>,
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
            let forward = match h.tag {
                be::READY_FOR_QUERY => self.ready_for_query(body)?,
                be::COPY_IN_RESPONSE | be::COPY_BOTH_RESPONSE => {
                    self.copy_in = true;
                    self.hidden == 0
                }
                be::PARAMETER_STATUS => self.parameter_status(body, ctx)?,
                be::ERROR_RESPONSE => {
                    let fields = ErrorFields::parse(body).map_err(RelayError::Server)?;
                    if fields.is_fatal() {
                        self.server_fatal = true;
                    }
                    if self.hidden > 0 {
                        tracing::warn!("pgwarden's parameter sync failed on the server: {fields}");
                    } else if self.denials > 0
                        && let Some(error) = self.denial_answered(body)?
                    {
                        out.push(input.split_to(run).freeze());
                        run = 0;
                        input.advance(h.frame_len);
                        out.push(error);
                        continue;
                    }
                    self.hidden == 0 || fields.is_fatal()
                }
                _ => self.hidden == 0,
            };
            if forward {
                run += h.frame_len;
            } else {
                out.push(input.split_to(run).freeze());
                run = 0;
                input.advance(h.frame_len);
            }
        }
        out.push(input.split_to(run).freeze());
        Ok(())
    }

    /// An ErrorResponse arrived while a denial's stand-in is outstanding. If it is the stand-in's, returns it
    /// as the client should see it: the denial alone, without the DO block's context and source location.
    /// If not, and the stand-in followed other messages of an extended batch, one of those failed: the server
    /// skips the stand-in until the client's Sync, so no ReadyForQuery will answer it.
    fn denial_answered(&mut self, body: &[u8]) -> Result<Option<bytes::Bytes>, RelayError> {
        let fields = backend::error_fields(body).map_err(RelayError::Server)?;
        let marker = DENIAL_MARKER.as_bytes();
        if fields.iter().any(|&(f, v)| f == b'n' && v == marker) {
            self.denials -= 1;
            let kept: Vec<_> = fields
                .into_iter()
                .filter(|(f, _)| !matches!(f, b'n' | b'W' | b'F' | b'L' | b'R'))
                .collect();
            let mut buf = BytesMut::new();
            backend::write_raw_error_fields(&mut buf, be::ERROR_RESPONSE, &kept);
            return Ok(Some(buf.freeze()));
        }
        let front = self.pending.iter().position(|p| *p != Pending::CopyEnd);
        if let Some(i) = front
            && self.pending[i] == Pending::SilentReadyAfterBatch
        {
            self.pending.remove(i);
            self.denials -= 1;
            self.outstanding = self.outstanding.saturating_sub(1);
            if self.outstanding == 0 {
                self.query_started = None;
            }
        }
        Ok(None)
    }

    /// Returns whether to forward the ReadyForQuery.
    fn ready_for_query(&mut self, body: &[u8]) -> Result<bool, RelayError> {
        let status = backend::parse_ready_for_query(body).map_err(RelayError::Server)?;
        self.outstanding = self.outstanding.saturating_sub(1);
        // Drop the answered Query or Sync, and any COPY ends queued before it.
        let mut answered = None;
        while let Some(p) = self.pending.pop_front() {
            if p != Pending::CopyEnd {
                answered = Some(p);
                break;
            }
        }
        self.last_ready = Instant::now();
        if self.outstanding == 0 {
            self.query_started = None;
        }
        if self.hidden > 0 {
            self.hidden -= 1;
            return Ok(false);
        }
        if matches!(
            answered,
            Some(Pending::SilentReady | Pending::SilentReadyAfterBatch)
        ) {
            // The server's state changed (a failed transaction stays failed), the client hears at its Sync.
            self.tx = status;
            return Ok(false);
        }
        if status == TransactionStatus::Idle && self.tx_started.take().is_some() {
            self.transactions += 1;
        }
        self.tx = status;
        Ok(true)
    }

    /// Returns whether to forward the ParameterStatus: always for the client's own traffic; for pgwarden's
    /// sync only when the value differs from what the client was last told.
    fn parameter_status(
        &mut self,
        body: &[u8],
        ctx: &mut ServerCtx<'_>,
    ) -> Result<bool, RelayError> {
        let (name, value) = backend::parse_parameter_status(body).map_err(RelayError::Server)?;
        let Some(i) = ctx.tracked.index(name) else {
            return Ok(self.hidden == 0);
        };
        ctx.server_params.set(i, value);
        let changed_for_client = ctx.client_params.set(i, value);
        Ok(self.hidden == 0 || changed_for_client)
    }
}

/// An entry of [`Relay::pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// A Query or FunctionCall (the client's or pgwarden's own): one ReadyForQuery.
    Query,
    /// A Sync: one ReadyForQuery, unless the server reads it in COPY FROM STDIN mode.
    Sync,
    /// CopyDone or CopyFail: the end of the client's COPY data.
    CopyEnd,
    /// pgwarden's stand-in for a denied Parse: its error goes to the client, its ReadyForQuery does not.
    SilentReady,
    /// The same, sent after other messages of the client's extended batch (which may fail first).
    SilentReadyAfterBatch,
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
pub struct ServerCtx<'a> {
    pub tracked: &'a Tracked,
    pub server_params: &'a mut ParamValues,
    pub client_params: &'a mut ParamValues,
    pub max: u32,
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
