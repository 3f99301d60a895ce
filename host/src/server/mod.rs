//! A connection to PostgreSQL: login, tracked parameters, health, reset, and a parting Terminate.

mod error;
mod login;

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use error::ServerError;
pub use login::{LoginSpec, Welcome, connect};

use crate::clock::Coarse;
use crate::logging::{ConnAddr, ConnLabel, conn_log};
use crate::net::Stream;
use crate::params::{ParamValues, Tracked};
use crate::protocol::backend::{self, ErrorFields, tag};
use crate::protocol::{Frame, frame, frontend};

/// A fresh server connection id (`S-0x<id>` in logs), also for an attempt that never became a connection;
/// from the counter client ids come from too, as PgBouncer's socket ids do.
pub(crate) fn next_id() -> u64 {
    crate::conns::next_id()
}

/// An open, logged-in server connection.
///
/// Pool accounting is attached by the pool (`slot`) and released on drop, so losing a connection anywhere
/// (error, timeout, client gone) always frees its place and lets a waiting client open a new one.
///
/// Boxed: a connection changes hands at every transaction (the pool's idle list, a waiting client's
/// grant, the session), and each move copies only a pointer.
#[derive(Debug)]
pub struct ServerConn(Box<ServerBody>);

impl std::ops::Deref for ServerConn {
    type Target = ServerBody;
    fn deref(&self) -> &ServerBody {
        &self.0
    }
}

impl std::ops::DerefMut for ServerConn {
    fn deref_mut(&mut self) -> &mut ServerBody {
        &mut self.0
    }
}

/// What a [`ServerConn`] holds.
#[derive(Debug)]
pub struct ServerBody {
    pub(crate) stream: Stream,
    /// Bytes read from the server and not yet processed. Kept with the connection so that a pipelined
    /// partial read is never lost when the connection changes hands.
    pub(crate) rbuf: BytesMut,
    /// Process-unique id for logs (`S-<id>`).
    pub id: u64,
    /// PostgreSQL's pid and cancel secret, for forwarding CancelRequests.
    pub backend_key: Option<(u32, u32)>,
    /// Host (or socket dir) and port this connection went to, for CancelRequests (shared with the cancel
    /// slot of each client it serves: a reference count per transaction, not a copy).
    pub host: Arc<str>,
    pub port: u16,
    /// Current values of the tracked parameters on this connection.
    pub params: ParamValues,
    /// When the connection opened (coarse: it is judged in seconds).
    pub created: Coarse,
    /// When the connection was last released to the pool (or logged in).
    pub last_used: Coarse,
    /// The pool's configuration epoch when this connection was opened; a different epoch at release means
    /// the database entry changed and the connection is closed ("database configuration changed").
    pub epoch: u64,
    /// The process-wide list of tracked parameter names (`params` is indexed by it).
    pub(crate) tracked: Arc<Tracked>,
    pub(crate) slot: Option<crate::pool::Slot>,
    /// The statements pgwarden prepared here for clients (max_prepared_statements).
    pub prepared: crate::client::prepared::ServerStatements,
    /// Session settings (beyond the reported parameters) clients changed here or pgwarden set, by name:
    /// the next client's link puts them back to what that client holds.
    pub settings: std::collections::BTreeMap<String, String>,
    /// NotificationResponse frames that arrived while pgwarden ran a query of its own, for the client.
    pub notifications: BytesMut,
    /// Its record in the pool's registry of live servers (SHOW SERVERS), once the pool has it.
    pub live: Option<crate::conns::Registered<crate::conns::ServerRecord>>,
}

impl ServerConn {
    fn new(stream: Stream, host: Arc<str>, port: u16, tracked: &Arc<Tracked>) -> Self {
        let now = Coarse::now();
        Self(Box::new(ServerBody {
            stream,
            rbuf: BytesMut::with_capacity(8 * 1024),
            id: next_id(),
            backend_key: None,
            host,
            port,
            params: ParamValues::new(tracked),
            created: now,
            last_used: now,
            epoch: 0,
            tracked: Arc::clone(tracked),
            slot: None,
            prepared: Default::default(),
            settings: Default::default(),
            notifications: BytesMut::new(),
            live: None,
        }))
    }

    /// Closes the connection politely: a best-effort Terminate that never waits, then the socket closes on
    /// drop. Logged as PgBouncer does (`closing because: <reason> (age=…s)`) when `log_disconnections`.
    pub fn close(self, reason: &str) {
        if let Some(pool) = self.slot.as_ref().map(crate::pool::Slot::pool)
            && pool.settings().log_disconnections
        {
            conn_log!(
                info,
                self.label_in(&pool.key),
                "closing because: {reason} (age={}s)",
                self.created.elapsed().as_secs()
            );
        }
        let mut out = BytesMut::with_capacity(5);
        frontend::write_terminate(&mut out);
        let _ = self.stream.try_write(&out);
    }
}

impl ServerBody {
    /// Whether an idle connection can be handed out: nothing buffered and nothing pending on the socket.
    /// Any byte or EOF from an idle server (a FATAL from a restart, a termination) makes it unusable.
    pub fn is_clean_idle(&self) -> bool {
        self.rbuf.is_empty() && matches!(self.stream.has_pending_input(), Ok(false))
    }

    /// Runs one simple query to completion, discarding rows; a server ErrorResponse is `ServerError::Query`.
    /// Used for the reset, check and connect queries, never for client traffic.
    pub async fn simple_query(&mut self, sql: &str, max_packet: u32) -> Result<(), ServerError> {
        self.simple_query_rows(sql, max_packet).await.map(drop)
    }

    /// [`ServerConn::simple_query`], returning the rows as text.
    pub async fn simple_query_rows(
        &mut self,
        sql: &str,
        max_packet: u32,
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut rows = Vec::new();
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        frontend::write_query(&mut out, sql);
        self.stream.write_all(&out).await?;
        let mut error = None;
        loop {
            let f = read_frame(&mut self.stream, &mut self.rbuf, max_packet).await?;
            match f.tag {
                tag::READY_FOR_QUERY => {
                    let status = backend::parse_ready_for_query(&f.body)?;
                    if let Some(e) = error {
                        return Err(ServerError::Query(Box::new(e)));
                    }
                    if status != backend::TransactionStatus::Idle {
                        return Err(ServerError::Unexpected {
                            tag: f.tag,
                            phase: "a pooler query (left a transaction open)",
                        });
                    }
                    return Ok(rows);
                }
                tag::DATA_ROW => {
                    let values = backend::parse_data_row(&f.body)?;
                    rows.push(
                        values
                            .into_iter()
                            .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                            .collect(),
                    );
                }
                tag::NOTIFICATION_RESPONSE => {
                    // A NOTIFY for a LISTEN of the client that holds this server: it must not be lost.
                    self.notifications.put_u8(f.tag);
                    self.notifications
                        .put_u32(u32::try_from(f.body.len() + 4).unwrap_or(u32::MAX));
                    self.notifications.put_slice(&f.body);
                }
                tag::ERROR_RESPONSE => error = Some(ErrorFields::parse(&f.body)?),
                tag::PARAMETER_STATUS => {
                    self.note_parameter_status(&f.body)?;
                }
                tag::COPY_IN_RESPONSE | tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                    return Err(ServerError::Unexpected {
                        tag: f.tag,
                        phase: "a pooler query",
                    });
                }
                _ => {}
            }
        }
    }

    /// Runs one parameterised query (extended protocol, text values) and returns its rows; a server
    /// ErrorResponse is `ServerError::Query`. Used for auth plugins' `database.query`.
    pub async fn query_params(
        &mut self,
        sql: &str,
        params: &[Option<String>],
        max_packet: u32,
    ) -> Result<Vec<Vec<Option<String>>>, ServerError> {
        let mut out = BytesMut::with_capacity(sql.len() + 64);
        frontend::write_parse(&mut out, "", sql);
        frontend::write_bind_text(&mut out, "", "", params);
        frontend::write_execute(&mut out, "");
        frontend::write_sync(&mut out);
        self.stream.write_all(&out).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let f = read_frame(&mut self.stream, &mut self.rbuf, max_packet).await?;
            match f.tag {
                tag::DATA_ROW => {
                    let values = backend::parse_data_row(&f.body)?;
                    rows.push(
                        values
                            .into_iter()
                            .map(|v| v.map(|b| String::from_utf8_lossy(b).into_owned()))
                            .collect(),
                    );
                }
                tag::ERROR_RESPONSE => error = Some(ErrorFields::parse(&f.body)?),
                tag::PARAMETER_STATUS => {
                    self.note_parameter_status(&f.body)?;
                }
                tag::READY_FOR_QUERY => {
                    let status = backend::parse_ready_for_query(&f.body)?;
                    if let Some(e) = error {
                        return Err(ServerError::Query(Box::new(e)));
                    }
                    if status != backend::TransactionStatus::Idle {
                        return Err(ServerError::Unexpected {
                            tag: f.tag,
                            phase: "a pooler query (left a transaction open)",
                        });
                    }
                    return Ok(rows);
                }
                tag::COPY_IN_RESPONSE | tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                    return Err(ServerError::Unexpected {
                        tag: f.tag,
                        phase: "a pooler query",
                    });
                }
                _ => {}
            }
        }
    }

    /// Records a ParameterStatus the server sent; returns the tracked index, if the parameter is tracked.
    pub fn note_parameter_status(&mut self, body: &[u8]) -> Result<Option<usize>, ServerError> {
        let (name, value) = backend::parse_parameter_status(body)?;
        let index = self.tracked.index(name);
        if let Some(i) = index {
            self.params.set(i, value);
        }
        Ok(index)
    }

    /// The `S-0x…: db/user@host:port` prefix of this connection's log lines, as a connection of `pool`.
    pub fn label_in<'a>(&'a self, pool: &'a crate::pool::PoolKey) -> ConnLabel<'a> {
        ConnLabel {
            kind: 'S',
            id: self.id,
            db: &pool.database,
            user: &pool.user,
            addr: ConnAddr::Server {
                host: &self.host,
                port: self.port,
            },
        }
    }
}

/// Reads until one whole frame is buffered and splits it off.
pub(crate) async fn read_frame(
    stream: &mut Stream,
    buf: &mut BytesMut,
    max: u32,
) -> Result<Frame, ServerError> {
    loop {
        if let Some(f) = frame::split(buf, max)? {
            return Ok(f);
        }
        buf.reserve(8 * 1024);
        if stream.read_buf(buf).await? == 0 {
            return Err(ServerError::Eof);
        }
    }
}
