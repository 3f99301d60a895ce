//! One task per client: startup → route → authenticate → welcome → query loop.
//!
//! Layout: `startup` (startup parameters), `auth` (password exchanges), `login` (routing, pool, welcome),
//! `session` (the query loop and pool-mode rules), `relay` (protocol bookkeeping while linked),
//! `outq` (zero-copy output queue).

mod auth;
mod hooks;
mod login;
mod outq;
pub mod park;
pub mod prepared;
mod relay;
mod session;
mod startup;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

pub use outq::OutQueue;
// `ServerCtx`, `QueryPolicy` and `Denial` are public for the benchmark crate (bench/), which drives the relay
// the way a session does.
pub use hooks::check_query;
pub use relay::{Counts, Denial, QueryPolicy, Relay, RelayError, ServerCtx};
pub use startup::ClientStartup;

use login::LoggedIn;
use session::{Session, Stop};

use crate::logging::{ConnAddr, ConnLabel, conn_log};
use crate::net::Stream;
use crate::protocol::backend::{self, Severity};
use crate::protocol::{Frame, PROTOCOL_VIOLATION, ProtocolError, frame};
use crate::state::State;

/// A client's socket with its buffers.
#[derive(Debug)]
pub struct ClientConn {
    pub stream: Stream,
    /// Received and not yet processed. Allocated on demand; freed when a fresh client first idles (what its
    /// login read into) and when the client parks, kept between transactions otherwise.
    pub rbuf: BytesMut,
    /// Waiting to be written to the client.
    pub out: OutQueue,
    /// pgwarden's own messages being built, queued in order with forwarded bytes.
    pub local: BytesMut,
}

impl ClientConn {
    fn new(stream: Stream) -> Self {
        Self {
            stream,
            rbuf: BytesMut::new(),
            out: OutQueue::default(),
            local: BytesMut::new(),
        }
    }

    /// Reads until a whole frame is buffered; `Ok(None)` at EOF.
    pub(crate) async fn read_frame(&mut self, max: u32) -> Result<Option<Frame>, End> {
        loop {
            match frame::split(&mut self.rbuf, max) {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => return Err(End::protocol(&e)),
            }
            // Room for the rest of the frame when its header is here, else a small step: what a login reads
            // (a password message, a SCRAM response) is a few hundred bytes, and in a storm of logins every
            // buffer taken here is part of the process's high-water mark.
            let rest = match frame::peek(&self.rbuf, max) {
                Ok(Some(h)) => h.frame_len.saturating_sub(self.rbuf.len()),
                _ => 0,
            };
            if self.rbuf.capacity() - self.rbuf.len() < rest.max(256) {
                self.rbuf.reserve(rest.max(512));
            }
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(End::Closed(format!("client read error: {e}"))),
            }
        }
    }

    /// Queues a message built by `write` into `local`.
    pub(crate) fn send(&mut self, write: impl FnOnce(&mut BytesMut)) {
        write(&mut self.local);
        self.out.push_local(&mut self.local);
    }

    /// Writes everything queued. A plain fn returning its poll: an `async fn` kept 72 bytes of state, and
    /// the idle wait that starts with a flush is part of every client's task.
    pub(crate) fn flush(&mut self) -> impl Future<Output = Result<(), End>> + Send + '_ {
        std::future::poll_fn(move |cx| {
            self.out
                .poll_flush(&mut self.stream, cx)
                .map_err(|e| End::Closed(format!("client write error: {e}")))
        })
    }
}

/// How a client connection ends.
#[derive(Debug)]
pub enum End {
    /// Tell the client with a FATAL ErrorResponse, then close.
    Fatal {
        code: Cow<'static, str>,
        message: String,
        /// DETAIL and HINT, for refusals that carry them (a router plugin's denial).
        detail: Option<String>,
        hint: Option<String>,
    },
    /// Close without a word (the client left, or the socket failed).
    Closed(String),
}

impl End {
    pub fn fatal(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::Fatal {
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A FATAL with DETAIL and HINT fields.
    pub fn fatal_with(
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
        detail: Option<String>,
        hint: Option<String>,
    ) -> Self {
        Self::Fatal {
            code: code.into(),
            message: message.into(),
            detail,
            hint,
        }
    }

    /// PgBouncer's way of refusing: FATAL with SQLSTATE 08P01.
    pub fn pooler(message: impl Into<String>) -> Self {
        Self::fatal(PROTOCOL_VIOLATION, message)
    }

    fn protocol(e: &ProtocolError) -> Self {
        Self::pooler(e.to_string())
    }

    fn reason(&self) -> &str {
        match self {
            Self::Fatal { message, .. } => message,
            Self::Closed(r) => r,
        }
    }
}

/// Authenticates a client as `user` against the secret `auth_file` holds (the admin console's login: pool
/// logins also ask the auth plugins), with the exchange and errors every client gets.
pub async fn authenticate_user(
    conn: &mut ClientConn,
    runtime: &crate::state::Runtime,
    user: &str,
) -> Result<(), End> {
    let settings = &runtime.config.settings;
    let secret = runtime.secrets.get(user);
    let method = auth::method(settings.auth_type, secret);
    if method == crate::config::AuthType::Trust && secret.is_none() {
        return Err(End::fatal("28000", "\"trust\" authentication failed"));
    }
    auth::authenticate(conn, method, user, secret, settings.scram_iterations).await?;
    Ok(())
}

/// A client connection's record: its identity for logs, and what the console lists of it.
pub use crate::conns::ClientRecord as ClientInfo;

impl ClientInfo {
    /// The `C-0x…: db/user@addr:port` prefix of this client's log lines.
    pub fn label(&self) -> ConnLabel<'_> {
        let (db, user) = self.log_names();
        ConnLabel {
            kind: 'C',
            id: self.id,
            db,
            user,
            addr: ConnAddr::Peer(self.peer()),
        }
    }
}

impl std::fmt::Display for ClientInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.label().fmt(f)
    }
}

/// Serves one client connection from accept to close.
///
/// Not an `async fn`: one keeps its arguments twice in its state (as received, and moved into the body),
/// and every idle client's task keeps that state. An `async move` block holds what it captures once.
pub fn serve(state: Arc<State>, stream: Stream) -> impl Future<Output = ()> + Send {
    let info = ClientInfo::new(
        crate::conns::next_id(),
        stream.peer(),
        stream.local(),
        stream.peer_pid().unwrap_or(0),
    );
    // Boxed: its owner changes when the client parks, and a task that moves a connection held inline keeps
    // the space twice.
    let mut conn = Box::new(ClientConn::new(stream));
    // One record from accept to close, shared by the task, the session and the registry of live clients.
    let info = Arc::new(info);
    async move {
        // The login's state (startup, authentication, perhaps a server login for the pool's welcome) and
        // the console's are boxed: a task's allocation is its largest state, and each idle client keeps it.
        // The login's result is gone (its statement over) before the session runs, so that its space is
        // not kept meanwhile.
        let end = 'ended: {
            let logged_in = match Box::pin(login::run(&state, &mut conn, &info)).await {
                Ok(Some(logged_in)) => logged_in,
                Ok(None) => return, // a cancel request: nothing to log
                Err(end) => break 'ended end,
            };
            // Matched apart from the login's result: a console session awaited inside that match kept the
            // result's space reserved beside the pool session's state, in every client's task.
            let session = match logged_in {
                LoggedIn::Pool(session) => session,
                LoggedIn::Console(console) => break 'ended Box::pin(console.run(&mut conn)).await,
            };
            // The connection moves on: one kept here for the end as well would be two in the state.
            return live(state, info, conn, session).await;
        };
        // Boxed as well: it runs once, at the end, and its state is larger than an idle client's.
        Box::pin(finish(&state, &mut conn, &info, end)).await;
    }
}

/// Serves a parked client again, in a new task (see [`park`]).
fn resume(
    state: Arc<State>,
    stream: Stream,
    session: Box<Session>,
    why: park::Resume,
) -> impl Future<Output = ()> + Send {
    let info = Arc::clone(session.info());
    let mut conn = Box::new(ClientConn::new(stream));
    async move {
        match why {
            park::Resume::Serve => live(state, info, conn, session).await,
            park::Resume::IdleTimeout => {
                // As in its task: the session (its records and counts) goes before the client hears why.
                drop(session);
                let end = End::pooler("client_idle_timeout");
                Box::pin(finish(&state, &mut conn, &info, end)).await;
            }
        }
    }
}

/// A pool client's session, then its end; or its session until it parks.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice: 272 bytes of task, where this is 232"
)]
fn live(
    state: Arc<State>,
    info: Arc<ClientInfo>,
    conn: Box<ClientConn>,
    session: Box<Session>,
) -> impl Future<Output = ()> + Send {
    async move {
        // A `let … else`, not an `if let`: the latter's scrutinee (the connection and the End) would be
        // kept through the body, beside the session's state.
        let Some((mut conn, end)) = run_session(&state, conn, session).await else {
            return; // parked
        };
        // Boxed: it runs once, at the end, and its state is larger than an idle client's.
        Box::pin(finish(&state, &mut conn, &info, end)).await;
    }
}

/// Runs a pool client's session until it ends (the connection back, and why) or parks (`None`: the lot has
/// the connection and the session, and the task ends).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice, in every client's task"
)]
fn run_session(
    state: &Arc<State>,
    mut conn: Box<ClientConn>,
    mut session: Box<Session>,
) -> impl Future<Output = Option<(Box<ClientConn>, End)>> + Send + '_ {
    async move {
        loop {
            let deadline = match session.run(&mut conn).await {
                Stop::End(end) => {
                    // Gone before the client hears why: its records and counts go with it.
                    drop(session);
                    return Some((conn, end));
                }
                Stop::Park(deadline) => deadline,
            };
            let Some(lot) = state.parking.as_ref() else {
                session.info().clear_park_request();
                continue;
            };
            match lot.park(conn, session, deadline, state.lifecycle.tracker.token()) {
                Ok(park::Parking::Parked) => return None,
                Ok(park::Parking::Refused(c, mut s)) => {
                    s.park_refused();
                    (conn, session) = (c, s);
                }
                Err(e) => {
                    tracing::debug!("parking a client failed, its socket is gone: {e}");
                    return None;
                }
            }
        }
    }
}

async fn finish(state: &State, conn: &mut ClientConn, info: &ClientInfo, end: End) {
    let settings = &state.runtime().config.settings;
    if let End::Fatal { message, .. } = &end {
        if let Some(kind) = crate::metrics::ErrorKind::of_pooler_message(message) {
            state.errors.count(kind);
        }
        if settings.log_pooler_errors {
            conn_log!(warn, info.label(), "pooler error: {message}");
        }
    }
    // Logged before the client hears of it: whoever reacts to the error finds the line already written.
    if settings.log_disconnections {
        conn_log!(
            info,
            info.label(),
            "closing because: {} (age={}s)",
            end.reason(),
            info.age().as_secs()
        );
    }
    if let End::Fatal {
        code,
        message,
        detail,
        hint,
    } = &end
    {
        let fields = backend::ErrorFields {
            severity: Severity::Fatal.as_str().to_owned(),
            code: code.to_string(),
            message: message.clone(),
            detail: detail.clone(),
            hint: hint.clone(),
        };
        conn.send(|b| backend::write_error_fields(b, backend::tag::ERROR_RESPONSE, &fields));
        // Best effort, bounded: a client that does not read must not keep the task alive.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.flush()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each client's task allocation is its future's largest state, kept as long as the client stays
    /// connected, idle or not: thousands of idle clients pay it thousands of times. It was 5,528 bytes
    /// when `Session::run` took the session by value (two copies in its state) and awaited the rare
    /// paths inline, 1,776 while each transaction's state (the server, the relay) and a `select!` over
    /// the idle wait's futures were part of it, and 656 with its own copy of the client's identity; a
    /// change that makes it grow again should be a deliberate one.
    #[tokio::test]
    async fn a_client_task_stays_small() {
        let state = State::new(crate::Config::empty_for_tests()).expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let task = serve(state, Stream::Tcp(accepted));
        let size = size_of_val(&task);
        // 528 bytes before the idle wait's state was trimmed (1,776 before the transaction's was boxed), 312
        // with the connection held inline. tokio's task cell is 128-byte aligned: a future of 232 bytes
        // makes a 384-byte cell (header and trailer included), a few bytes more a 512-byte one.
        assert!(size <= 232, "a client's task future is {size} bytes");
        // A parked client's new task is no larger.
        fn returned<A, B, C, D, R>(_: &impl Fn(A, B, C, D) -> R) -> usize {
            size_of::<R>()
        }
        let resumed = returned(&resume);
        assert!(
            resumed <= 232,
            "a resumed client's task future is {resumed} bytes"
        );
        // The session itself is boxed beside it, not in it (1,424 bytes before the relay state and a pinned
        // server were boxed and the drain and kill signals went; it holds its client counts inline, 80 bytes
        // where three boxed guards took ~250 of heap; its timeouts are whole milliseconds and its named
        // statements' map is made when first needed; 328 with its own registration beside its pool and three
        // count guards, where its pool now keeps its listing id and its counts share the process's state: a
        // boxed session of up to 264 bytes takes a 272-byte heap chunk; 216 since its output queue for the
        // server went into the boxed link state, which a parked client drops; 200, a 208-byte chunk, with its
        // session settings boxed).
        let session = size_of::<Session>();
        assert!(session <= 200, "a session is {session} bytes");
        // And its record, shared with the registries: 312 bytes beside a cancel slot of its own (88 bytes
        // and a header), 304 with the key and the linked server in it, 280 (a 304-byte chunk) with its two
        // addresses packed.
        let record = size_of::<crate::conns::ClientRecord>();
        assert!(record <= 280, "a client record is {record} bytes");
    }
}
