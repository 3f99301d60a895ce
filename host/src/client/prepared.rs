//! Protocol-level named prepared statements in transaction and statement pooling (`max_prepared_statements`).
//!
//! A client's statement names belong to its session, but its transactions run on whichever server is free.
//! So a client's named Parse is kept under the client's name ([`ClientStatements`]) and prepared on servers
//! under a name pgwarden derives from the query text and parameter types (`PGWARDEN_<hex>`): identical
//! statements of any clients share it. Each server remembers which of them it holds ([`ServerStatements`],
//! at most `max_prepared_statements`, least recently used closed first). The relay rewrites the names in
//! Bind, Describe and Close and prepares a statement on a server that lacks it just before its use.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};

use crate::FastMap;
use crate::protocol::HEADER_LEN;
use crate::protocol::frontend::{Parse, tag};
use crate::sql::session::Effects;

/// Prefix of the names pgwarden gives statements on servers.
pub const SERVER_PREFIX: &str = "PGWARDEN_";

/// One statement as a client prepared it.
#[derive(Debug)]
pub struct Statement {
    /// Keyed 128-bit hash of the query text and parameter types: the server-side identity.
    pub key: u128,
    /// `PGWARDEN_<key in hex>`.
    pub server_name: String,
    /// The Parse message that prepares it on a server, under `server_name`.
    pub parse: Bytes,
    /// What executing it may do to the session (settings, state that cannot move).
    pub effects: Effects,
    /// When the client prepared it ([`tick`]): a result-type change seen later makes it outdated.
    pub parsed_at: u64,
}

impl Statement {
    /// The statement of a client's Parse; `None` for the unnamed statement (passed through unchanged).
    pub fn of(parse: &Parse<'_>) -> Self {
        let key = statement_key(parse.query, &parse.param_types);
        let server_name = format!("{SERVER_PREFIX}{key:032x}");
        let types = parse.param_types.len();
        let body_len = server_name.len() + 1 + parse.query.len() + 1 + 2 + 4 * types;
        let mut b = BytesMut::with_capacity(HEADER_LEN + body_len);
        b.put_u8(tag::PARSE);
        b.put_u32(u32::try_from(body_len + 4).unwrap_or(u32::MAX));
        b.put_slice(server_name.as_bytes());
        b.put_u8(0);
        b.put_slice(parse.query.as_bytes());
        b.put_u8(0);
        b.put_u16(u16::try_from(types).unwrap_or(u16::MAX));
        for t in &parse.param_types {
            b.put_u32(*t);
        }
        Self {
            key,
            server_name,
            parse: b.freeze(),
            effects: Effects::default(),
            parsed_at: tick(),
        }
    }

    /// Whether two statements are the same query (a key collision between different ones is never trusted).
    fn same_as(&self, other: &Statement) -> bool {
        self.key == other.key && self.parse == other.parse
    }

    /// A Close message for this statement on a server.
    pub fn close_frame(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_LEN + self.server_name.len() + 2);
        b.put_u8(tag::CLOSE);
        b.put_u32(u32::try_from(self.server_name.len() + 2 + 4).unwrap_or(u32::MAX));
        b.put_u8(b'S');
        b.put_slice(self.server_name.as_bytes());
        b.put_u8(0);
        b.freeze()
    }
}

/// A process-wide clock ordering client Parses, server preparations and result-type changes.
static CLOCK: AtomicU64 = AtomicU64::new(1);

fn tick() -> u64 {
    CLOCK.fetch_add(1, Ordering::Relaxed)
}

/// The statements of one pool whose result type changed under them: PostgreSQL answered a Bind with
/// "cached plan must not change result type" after DDL. Identical texts share one server statement, so
/// when one client prepares the text again, pgwarden must not hand the new plan to another client's
/// statement described before the change (its rows would not match the columns it was told), nor keep
/// using the old plan on the pool's other servers. Written only when a change is seen; read on a
/// statement's use only after some change in the pool.
#[derive(Debug, Default)]
pub struct ResultTypeChanges {
    /// The [`tick`] of the latest change of any statement (0: none yet).
    latest: AtomicU64,
    by_key: Mutex<FastMap<u128, u64>>,
}

impl ResultTypeChanges {
    fn record(&self, key: u128) {
        let now = tick();
        self.by_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, now);
        self.latest.fetch_max(now, Ordering::Release);
    }

    /// Whether the statement `key` was seen to change after `since`.
    fn changed_after(&self, key: u128, since: u64) -> bool {
        self.latest.load(Ordering::Acquire) > since
            && self
                .by_key
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .is_some_and(|&at| at > since)
    }
}

/// Keys of the statement hash, random per process: a client cannot craft a collision.
static KEYS: LazyLock<(RandomState, RandomState)> =
    LazyLock::new(|| (RandomState::new(), RandomState::new()));

fn statement_key(query: &str, types: &[u32]) -> u128 {
    let half = |state: &RandomState| {
        let mut h = state.build_hasher();
        h.write(query.as_bytes());
        h.write_usize(types.len());
        for t in types {
            h.write_u32(*t);
        }
        h.finish()
    };
    (u128::from(half(&KEYS.0)) << 64) | u128::from(half(&KEYS.1))
}

/// The named statements a client prepared (its names), for the whole of its session.
#[derive(Debug, Default)]
pub struct ClientStatements {
    /// Boxed, and made at the first named statement: every session has the field, most idle ones never
    /// fill it (8 bytes rather than an empty map's 48).
    #[allow(
        clippy::box_collection,
        reason = "the box is the point: 8 bytes in every session until a statement is named"
    )]
    by_name: Option<Box<FastMap<Box<str>, Arc<Statement>>>>,
}

impl ClientStatements {
    pub fn get(&self, name: &str) -> Option<&Arc<Statement>> {
        self.by_name.as_ref()?.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.as_ref().is_some_and(|m| m.contains_key(name))
    }

    pub fn insert(&mut self, name: &str, stmt: Arc<Statement>) {
        self.by_name
            .get_or_insert_default()
            .insert(name.into(), stmt);
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<Statement>> {
        self.by_name.as_mut()?.remove(name)
    }

    /// DEALLOCATE ALL / DISCARD ALL.
    pub fn clear(&mut self) {
        if let Some(m) = &mut self.by_name {
            m.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.as_ref().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The statements pgwarden prepared on one server connection, with their last use for LRU eviction.
#[derive(Debug, Default)]
pub struct ServerStatements {
    /// Each statement with its last use (this connection's `clock`) and when it was prepared ([`tick`]).
    by_key: FastMap<u128, (Arc<Statement>, u64, u64)>,
    clock: u64,
    /// The pool's record of statements whose result type changed.
    changes: Arc<ResultTypeChanges>,
    /// Statements prepared before a schema change made their plans' result types differ: closed before the
    /// next Parse sent to this server.
    stale: Vec<Arc<Statement>>,
    /// A client ran SQL `DEALLOCATE name` here: which statement went is unknown, so the connection is not
    /// reused (see [`ServerStatements::trusted`]).
    untrusted: bool,
}

impl ServerStatements {
    /// Shares the pool's record of result-type changes (a connection starts with one of its own).
    pub fn share_changes(&mut self, changes: &Arc<ResultTypeChanges>) {
        self.changes = Arc::clone(changes);
    }

    /// Whether the server holds `stmt` with a plan still current; a hit counts as a use. A plan prepared
    /// before the statement's result type was seen to change is to be closed and prepared again.
    pub fn touch(&mut self, stmt: &Statement) -> bool {
        self.clock += 1;
        match self.by_key.get_mut(&stmt.key) {
            Some((held, used, prepared_at)) if held.same_as(stmt) => {
                if self.changes.changed_after(stmt.key, *prepared_at) {
                    let held = Arc::clone(held);
                    self.mark_stale(&held);
                    return false;
                }
                *used = self.clock;
                true
            }
            _ => false,
        }
    }

    /// Whether the client prepared `stmt` before its result type was seen to change: PostgreSQL fails
    /// such a statement ("cached plan must not change result type") until the client prepares it again.
    pub fn outdated(&self, stmt: &Statement) -> bool {
        self.changes.changed_after(stmt.key, stmt.parsed_at)
    }

    /// Whether some other statement holds `stmt`'s key (a hash collision: it must be closed first).
    pub fn collides(&self, stmt: &Statement) -> Option<Arc<Statement>> {
        self.by_key
            .get(&stmt.key)
            .filter(|(held, ..)| !held.same_as(stmt))
            .map(|(held, ..)| Arc::clone(held))
    }

    /// Records that `stmt` is (being) prepared on the server.
    pub fn insert(&mut self, stmt: Arc<Statement>) {
        self.clock += 1;
        self.by_key.insert(stmt.key, (stmt, self.clock, tick()));
    }

    /// Forgets `stmt` (its Parse failed or was skipped, or it was closed).
    pub fn forget(&mut self, stmt: &Statement) {
        if self
            .by_key
            .get(&stmt.key)
            .is_some_and(|(held, ..)| held.same_as(stmt))
        {
            self.by_key.remove(&stmt.key);
        }
    }

    /// The least recently used statement, to close when the server holds `max` already.
    pub fn evict_one(&mut self, max: usize) -> Option<Arc<Statement>> {
        if self.by_key.len() < max.max(1) {
            return None;
        }
        let (&key, _) = self.by_key.iter().min_by_key(|(_, (_, used, _))| *used)?;
        self.by_key.remove(&key).map(|(stmt, ..)| stmt)
    }

    /// The server dropped every prepared statement (DEALLOCATE ALL, DISCARD ALL).
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.stale.clear();
    }

    /// `stmt` failed with "cached plan must not change result type": it is to be closed and prepared again
    /// here, and on the pool's other servers at their next use of it; the clients' statements prepared
    /// before now are outdated.
    pub fn result_type_changed(&mut self, stmt: &Arc<Statement>) {
        self.changes.record(stmt.key);
        self.mark_stale(stmt);
    }

    /// `stmt`'s plan here is stale: it is to be closed and prepared again.
    pub fn mark_stale(&mut self, stmt: &Arc<Statement>) {
        self.forget(stmt);
        if !self.stale.iter().any(|s| s.same_as(stmt)) {
            self.stale.push(Arc::clone(stmt));
        }
    }

    /// The stale statements, to close now.
    pub fn take_stale(&mut self) -> Vec<Arc<Statement>> {
        std::mem::take(&mut self.stale)
    }

    /// A client deallocated some statement by name with SQL: the record may be wrong from now on.
    pub fn distrust(&mut self) {
        self.untrusted = true;
    }

    /// Whether the record matches the server (else the connection must not serve another client).
    pub fn trusted(&self) -> bool {
        !self.untrusted
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// The client's and the server's statements while they are linked, and the server's capacity.
pub struct Statements<'a> {
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
    /// `max_prepared_statements`.
    pub max: usize,
}

/// The statement name a Bind body refers to, and where the bytes after it start; `None` until the body
/// prefix holding both names has arrived (or when it is malformed: the server will say so).
pub fn bind_names(body: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let portal_end = body.iter().position(|&b| b == 0)?;
    let rest = &body[portal_end + 1..];
    let stmt_end = rest.iter().position(|&b| b == 0)?;
    Some((
        &body[..portal_end],
        &rest[..stmt_end],
        portal_end + 1 + stmt_end + 1,
    ))
}

/// A Bind's first bytes with the statement name replaced: header (with the new length), portal, name.
/// The rest of the original body (from `rest_at`) follows unchanged.
pub fn bind_prefix(
    frame_len: usize,
    portal: &[u8],
    old_name_len: usize,
    new_name: &str,
) -> BytesMut {
    let body_len = frame_len - HEADER_LEN - old_name_len + new_name.len();
    let mut b = BytesMut::with_capacity(HEADER_LEN + portal.len() + new_name.len() + 2);
    b.put_u8(tag::BIND);
    b.put_u32(u32::try_from(body_len + 4).unwrap_or(u32::MAX));
    b.put_slice(portal);
    b.put_u8(0);
    b.put_slice(new_name.as_bytes());
    b.put_u8(0);
    b
}

/// A Describe or Close of the statement `name` ('S').
pub fn statement_message(tag: u8, name: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN + name.len() + 2);
    b.put_u8(tag);
    b.put_u32(u32::try_from(name.len() + 2 + 4).unwrap_or(u32::MAX));
    b.put_u8(b'S');
    b.put_slice(name.as_bytes());
    b.put_u8(0);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::split;
    use crate::protocol::frontend::{self, write_bind_text};

    fn stmt(query: &str, types: &[u32]) -> Arc<Statement> {
        Arc::new(Statement::of(&Parse {
            name: "client_name",
            query,
            param_types: types.to_vec(),
        }))
    }

    #[test]
    fn server_names_depend_on_text_and_types_only() {
        let a = stmt("select $1", &[23]);
        let b = stmt("select $1", &[23]);
        let c = stmt("select $1", &[25]);
        let d = stmt("select $1 ", &[23]);
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        assert_ne!(a.server_name, d.server_name);
        assert!(a.server_name.starts_with(SERVER_PREFIX));
        assert!(a.server_name.len() < 64, "fits NAMEDATALEN");
    }

    #[test]
    fn parse_frame_prepares_under_the_server_name() {
        let s = stmt("select $1::int", &[23]);
        let mut buf = BytesMut::from(&s.parse[..]);
        let f = split(&mut buf, u32::MAX).unwrap().unwrap();
        assert!(buf.is_empty());
        let p = Parse::decode(&f.body).unwrap();
        assert_eq!(p.name, s.server_name);
        assert_eq!(p.query, "select $1::int");
        assert_eq!(p.param_types, vec![23]);

        let mut buf = BytesMut::from(&s.close_frame()[..]);
        let f = split(&mut buf, u32::MAX).unwrap().unwrap();
        assert_eq!(f.tag, b'C');
        assert_eq!(&f.body[..], format!("S{}\0", s.server_name).as_bytes());
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let (a, b, c) = (stmt("a", &[]), stmt("b", &[]), stmt("c", &[]));
        let mut server = ServerStatements::default();
        assert!(server.evict_one(2).is_none());
        server.insert(Arc::clone(&a));
        server.insert(Arc::clone(&b));
        assert!(server.touch(&a), "a is used again: b is now the oldest");
        let evicted = server.evict_one(2).unwrap();
        assert_eq!(evicted.server_name, b.server_name);
        server.insert(Arc::clone(&c));
        assert!(server.touch(&a) && server.touch(&c) && !server.touch(&b));
        server.forget(&a);
        assert!(!server.touch(&a));
        assert_eq!(server.len(), 1);
    }

    #[test]
    fn a_different_statement_with_the_same_key_is_never_a_hit() {
        let a = stmt("a", &[]);
        let forged = Arc::new(Statement {
            key: a.key,
            server_name: a.server_name.clone(),
            parse: Bytes::from_static(b"other"),
            effects: Effects::default(),
            parsed_at: a.parsed_at,
        });
        let mut server = ServerStatements::default();
        server.insert(Arc::clone(&a));
        assert!(!server.touch(&forged));
        assert!(server.collides(&forged).is_some());
        server.forget(&forged);
        assert!(
            server.touch(&a),
            "forgetting the impostor keeps the real one"
        );
    }

    #[test]
    fn bind_rewrite_keeps_the_rest_of_the_body() {
        let mut buf = BytesMut::new();
        write_bind_text(&mut buf, "p1", "s0", &[Some("42".into()), None]);
        let frame_len = buf.len();
        let body = &buf[HEADER_LEN..];
        let (portal, name, rest_at) = bind_names(body).unwrap();
        assert_eq!((portal, name), (&b"p1"[..], &b"s0"[..]));
        let mut out = bind_prefix(frame_len, portal, name.len(), "PGWARDEN_x");
        out.extend_from_slice(&body[rest_at..]);
        let f = split(&mut out, u32::MAX).unwrap().unwrap();
        assert!(out.is_empty(), "length header matches the rewritten frame");
        let mut expected = BytesMut::new();
        write_bind_text(
            &mut expected,
            "p1",
            "PGWARDEN_x",
            &[Some("42".into()), None],
        );
        assert_eq!(&expected[HEADER_LEN..], &f.body[..]);
        assert!(bind_names(b"p1\0s0").is_none(), "name not complete yet");
        let _ = frontend::Kind::of(f.tag);
    }
}
