//! The relay's mapping of named prepared statements (max_prepared_statements): what reaches the server and
//! what the client sees, message by message.

use bytes::{BufMut, BytesMut};

use super::super::prepared::{ClientStatements, ServerStatements, Statements};
use super::tests::{drain, frame};
use super::*;
use crate::params::{ParamValues, Tracked};
use crate::protocol::backend::{Severity, TransactionStatus, write_error, write_ready_for_query};
use crate::protocol::frontend::write_query;

/// Frames as (tag, body).
type Frames = Vec<(u8, Vec<u8>)>;

fn frames(bytes: &[u8]) -> Frames {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = frame::split(&mut buf, u32::MAX).unwrap() {
        out.push((f.tag, f.body.to_vec()));
    }
    assert!(buf.is_empty(), "whole frames only");
    out
}

fn tags(frames: &[(u8, Vec<u8>)]) -> String {
    frames.iter().map(|(t, _)| char::from(*t)).collect()
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    frame(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

fn bind(stmt: &str) -> Vec<u8> {
    frame(b'B', format!("\0{stmt}\0\0\0\0\0\0\0").as_bytes())
}

fn execute() -> Vec<u8> {
    frame(b'E', b"\0\0\0\0\0")
}

fn sync() -> Vec<u8> {
    frame(b'S', b"")
}

fn ready() -> Vec<u8> {
    let mut b = BytesMut::new();
    write_ready_for_query(&mut b, TransactionStatus::Idle);
    b.to_vec()
}

fn error(code: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    write_error(&mut b, Severity::Error, code, "boom");
    b.to_vec()
}

/// The name a Parse/Bind/Describe/Close sent to the server uses for its statement.
fn statement_name(tag: u8, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut parts = text.split('\0');
    match tag {
        b'P' => parts.next().unwrap().to_owned(),
        b'B' => parts.nth(1).unwrap().to_owned(),
        _ => text[1..].split('\0').next().unwrap().to_owned(),
    }
}

/// One client and one server, with a link between them.
struct Link {
    relay: Relay,
    client: ClientStatements,
    server: ServerStatements,
    max: usize,
    tracked: Tracked,
    server_params: ParamValues,
    client_params: ParamValues,
}

impl Link {
    fn new(max: usize) -> Self {
        let tracked = Tracked::new(&[]);
        Self {
            relay: Relay::new(),
            client: ClientStatements::default(),
            server: ServerStatements::default(),
            max,
            server_params: ParamValues::new(&tracked),
            client_params: ParamValues::new(&tracked),
            tracked,
        }
    }

    /// Prepares `name` as `sql` on this server (a whole batch, answered), ready for the next link.
    fn prepared(&mut self, name: &str, sql: &str) {
        self.client(&[parse(name, sql), sync()]);
        self.server(&[frame(b'1', b""), ready()]);
        self.relay.reset();
    }

    /// The same client on another server.
    fn move_to(&mut self, server: ServerStatements) -> ServerStatements {
        self.relay.reset();
        std::mem::replace(&mut self.server, server)
    }

    /// Returns (frames sent to the server, frames pgwarden answered itself).
    fn client(&mut self, msgs: &[Vec<u8>]) -> (Frames, Frames) {
        let mut input = BytesMut::from(&msgs.concat()[..]);
        let (mut out, mut back) = (OutQueue::default(), OutQueue::default());
        let mut stmts = Statements {
            client: &mut self.client,
            server: &mut self.server,
            max: self.max,
        };
        self.relay
            .process_client(
                &mut input,
                &mut out,
                &mut back,
                u32::MAX,
                None,
                Some(&mut stmts),
            )
            .unwrap();
        assert!(input.is_empty());
        (frames(&drain(&mut out)), frames(&drain(&mut back)))
    }

    /// Returns what the client sees of the server's `msgs`.
    fn server(&mut self, msgs: &[Vec<u8>]) -> Frames {
        let mut input = BytesMut::from(&msgs.concat()[..]);
        let mut out = OutQueue::default();
        let mut stmts = Statements {
            client: &mut self.client,
            server: &mut self.server,
            max: self.max,
        };
        let mut ctx = ServerCtx {
            tracked: &self.tracked,
            server_params: &mut self.server_params,
            client_params: &mut self.client_params,
            max: u32::MAX,
            stmts: Some(&mut stmts),
        };
        self.relay
            .process_server(&mut input, &mut out, &mut ctx)
            .unwrap();
        frames(&drain(&mut out))
    }
}

#[test]
fn a_named_statement_is_prepared_under_the_server_name() {
    let mut l = Link::new(10);
    let (sent, answered) = l.client(&[parse("s1", "select 1"), bind("s1"), execute(), sync()]);
    assert_eq!(tags(&sent), "PBES");
    assert!(answered.is_empty());
    let server_name = statement_name(b'P', &sent[0].1);
    assert!(server_name.starts_with("PGWARDEN_"), "{server_name}");
    assert_eq!(statement_name(b'B', &sent[1].1), server_name);
    let seen = l.server(&[
        frame(b'1', b""),
        frame(b'2', b""),
        frame(b'C', b"SELECT 1\0"),
        ready(),
    ]);
    assert_eq!(tags(&seen), "12CZ");
    assert!(l.relay.releasable());
    assert_eq!(
        (
            l.relay.counts.client_parses,
            l.relay.counts.server_parses,
            l.relay.counts.binds
        ),
        (1, 1, 1)
    );
}

#[test]
fn a_statement_the_server_holds_is_answered_without_a_round_trip() {
    let mut l = Link::new(10);
    l.client(&[parse("s1", "select 1"), sync()]);
    l.server(&[frame(b'1', b""), ready()]);
    // Another client (fresh names) prepares the same text on this server.
    l.client = ClientStatements::default();
    l.relay.reset();
    let (sent, answered) =
        l.client(&[parse("other", "select 1"), bind("other"), execute(), sync()]);
    assert_eq!(tags(&sent), "BES", "no Parse: the server has it");
    assert_eq!(
        tags(&answered),
        "1",
        "ParseComplete from pgwarden, nothing before it pending"
    );
    let seen = l.server(&[frame(b'2', b""), frame(b'C', b"SELECT 1\0"), ready()]);
    assert_eq!(tags(&seen), "2CZ");
    assert_eq!(l.relay.counts.server_parses, 0);
}

#[test]
fn pgwardens_parse_complete_waits_for_the_replies_before_it() {
    let mut l = Link::new(10);
    l.prepared("s1", "select 1");
    // An unnamed query first, then a Parse the server already holds: its ParseComplete must come after the
    // first query's replies.
    let (sent, answered) = l.client(&[
        parse("", "select 2"),
        bind(""),
        execute(),
        parse("s2", "select 1"),
        sync(),
    ]);
    assert_eq!(tags(&sent), "PBES");
    assert!(answered.is_empty(), "not due yet");
    let seen = l.server(&[
        frame(b'1', b""),
        frame(b'2', b""),
        frame(b'C', b"SELECT 1\0"),
        ready(),
    ]);
    assert_eq!(tags(&seen), "12C1Z");
}

#[test]
fn a_server_without_the_statement_gets_it_before_its_use_and_the_client_never_sees_that() {
    let mut l = Link::new(10);
    l.client(&[parse("s1", "select 1"), sync()]);
    l.server(&[frame(b'1', b""), ready()]);
    let first = l.move_to(ServerStatements::default());
    assert_eq!(first.len(), 1);
    let (sent, _) = l.client(&[bind("s1"), execute(), frame(b'D', b"Ss1\0"), sync()]);
    assert_eq!(tags(&sent), "PBEDS");
    let name = statement_name(b'P', &sent[0].1);
    assert_eq!(statement_name(b'B', &sent[1].1), name);
    assert_eq!(statement_name(b'D', &sent[3].1), name);
    let seen = l.server(&[
        frame(b'1', b""),
        frame(b'2', b""),
        frame(b'C', b"SELECT 1\0"),
        frame(b't', b"\0\0"),
        frame(b'T', b"\0\0"),
        ready(),
    ]);
    assert_eq!(tags(&seen), "2CtTZ", "pgwarden's ParseComplete is hidden");
}

#[test]
fn an_error_skips_the_rest_of_the_batch_and_takes_back_its_statements() {
    let mut l = Link::new(10);
    l.prepared("held", "select 1");
    let (sent, answered) = l.client(&[
        parse("bad", "selec 1"),
        bind("bad"),
        execute(),
        parse("again", "select 1"),
        frame(b'C', b"Sheld\0"),
        sync(),
    ]);
    assert_eq!(tags(&sent), "PBES");
    assert!(answered.is_empty());
    let seen = l.server(&[error("42601"), ready()]);
    assert_eq!(
        tags(&seen),
        "EZ",
        "no ParseComplete/CloseComplete for skipped messages"
    );
    assert!(
        l.client.get("bad").is_none(),
        "a failed Parse prepares nothing"
    );
    assert!(
        l.client.get("again").is_none(),
        "a skipped Parse prepares nothing"
    );
    assert!(
        l.client.get("held").is_some(),
        "a skipped Close closes nothing"
    );
    assert_eq!(
        l.server.len(),
        1,
        "the failed statement is not on the server"
    );
    assert!(l.relay.releasable());
}

#[test]
fn after_an_error_what_the_client_sends_before_its_sync_is_dropped() {
    let mut l = Link::new(10);
    let (sent, _) = l.client(&[parse("", "select x"), bind(""), frame(b'H', b"")]);
    assert_eq!(tags(&sent), "PBH");
    let seen = l.server(&[error("42703")]);
    assert_eq!(tags(&seen), "E");
    let (sent, answered) = l.client(&[parse("late", "select 1"), bind("late"), execute(), sync()]);
    assert_eq!(
        tags(&sent),
        "S",
        "the server would ignore them; only the Sync goes"
    );
    assert!(answered.is_empty());
    assert!(l.client.get("late").is_none());
    let seen = l.server(&[ready()]);
    assert_eq!(tags(&seen), "Z");
    assert!(l.relay.releasable());
}

#[test]
fn eviction_closes_the_least_recently_used_statement_and_hides_the_reply() {
    let mut l = Link::new(1);
    let (sent, _) = l.client(&[parse("a", "select 1"), parse("b", "select 2"), sync()]);
    assert_eq!(tags(&sent), "PCPS");
    assert_eq!(
        statement_name(b'C', &sent[1].1),
        statement_name(b'P', &sent[0].1)
    );
    let seen = l.server(&[
        frame(b'1', b""),
        frame(b'3', b""),
        frame(b'1', b""),
        ready(),
    ]);
    assert_eq!(tags(&seen), "11Z");
    assert_eq!(l.server.len(), 1);
    // Using `a` again prepares it again (and closes `b`).
    l.relay.reset();
    let (sent, _) = l.client(&[bind("a"), execute(), sync()]);
    assert_eq!(tags(&sent), "CPBES");
}

#[test]
fn unknown_and_reused_names_get_postgresqls_errors() {
    for (msgs, code, text) in [
        (
            vec![bind("nope"), execute(), sync()],
            "26000",
            "prepared statement \"nope\" does not exist",
        ),
        (
            vec![frame(b'D', b"Snope\0"), sync()],
            "26000",
            "prepared statement \"nope\" does not exist",
        ),
        (
            vec![parse("s1", "select 1"), parse("s1", "select 2"), sync()],
            "42P05",
            "prepared statement \"s1\" already exists",
        ),
    ] {
        let mut l = Link::new(10);
        let (sent, _) = l.client(&msgs);
        let last = sent.len() - 1;
        assert_eq!(sent[last].0, b'S', "the client's Sync still goes");
        let (tag, body) = &sent[last - 1];
        assert_eq!(*tag, b'Q', "a stand-in raises the error");
        let sql = String::from_utf8_lossy(body);
        assert!(
            sql.contains(code) && sql.contains(&text.replace('\'', "''")),
            "{sql}"
        );
    }
}

#[test]
fn close_is_answered_by_pgwarden_and_forgets_only_the_clients_name() {
    let mut l = Link::new(10);
    l.prepared("s1", "select 1");
    let (sent, answered) = l.client(&[frame(b'C', b"Ss1\0"), frame(b'C', b"Snever\0"), sync()]);
    assert_eq!(tags(&sent), "S");
    assert_eq!(tags(&answered), "33");
    assert!(l.client.get("s1").is_none());
    assert_eq!(l.server.len(), 1, "stays prepared on the server for anyone");
    // The name can be used again.
    l.server(&[ready()]);
    l.relay.reset();
    let (sent, answered) = l.client(&[parse("s1", "select 2"), sync()]);
    assert_eq!(tags(&sent), "PS");
    assert!(answered.is_empty());
}

#[test]
fn deallocate_all_and_discard_all_drop_every_statement() {
    for tag in ["DEALLOCATE ALL", "DISCARD ALL"] {
        let mut l = Link::new(10);
        l.prepared("s1", "select 1");
        let mut q = BytesMut::new();
        write_query(&mut q, tag);
        l.client(&[q.to_vec()]);
        l.server(&[frame(b'C', format!("{tag}\0").as_bytes()), ready()]);
        assert!(l.client.is_empty() && l.server.is_empty(), "{tag}");
        assert!(l.server.trusted());
    }
    let mut l = Link::new(10);
    l.client(&[parse("s1", "select 1"), sync()]);
    l.server(&[frame(b'1', b""), ready(), frame(b'C', b"DEALLOCATE\0")]);
    assert!(!l.server.trusted(), "which statement went is unknown");
}

#[test]
fn a_big_bind_is_rewritten_and_streamed() {
    let mut l = Link::new(10);
    l.prepared("s1", "select $1::text");
    let value = vec![b'x'; STREAM_MIN * 3];
    let mut body = b"\0s1\0\0\0\0\x01".to_vec();
    body.extend_from_slice(&(value.len() as u32).to_be_bytes());
    body.extend_from_slice(&value);
    body.extend_from_slice(b"\0\0");
    let whole = frame(b'B', &body);
    let (head, tail) = whole.split_at(1000);
    let mut input = BytesMut::from(head);
    let (mut out, mut back) = (OutQueue::default(), OutQueue::default());
    let mut sent = Vec::new();
    for chunk in [None, Some(tail), Some(&sync()[..])] {
        if let Some(c) = chunk {
            input.put_slice(c);
        }
        let mut stmts = Statements {
            client: &mut l.client,
            server: &mut l.server,
            max: l.max,
        };
        l.relay
            .process_client(
                &mut input,
                &mut out,
                &mut back,
                u32::MAX,
                None,
                Some(&mut stmts),
            )
            .unwrap();
        let got = drain(&mut out);
        if chunk.is_none() {
            assert!(
                !got.is_empty() && got.len() < 1000 + 64,
                "streamed before the frame is whole"
            );
        }
        sent.extend_from_slice(&got);
    }
    let sent = frames(&sent);
    assert_eq!(tags(&sent), "BS");
    assert!(statement_name(b'B', &sent[0].1).starts_with("PGWARDEN_"));
    assert!(
        sent[0]
            .1
            .ends_with(&[&value[value.len() - 10..], b"\0\0"].concat())
    );
    assert_eq!(sent[0].1.len(), body.len() - 2 + 41);
}

#[test]
fn pgwardens_parse_complete_follows_its_own_hidden_query() {
    let mut l = Link::new(10);
    l.prepared("s1", "select 1");
    l.relay.add_hidden_query();
    let (sent, answered) = l.client(&[parse("s2", "select 1"), frame(b'D', b"Ss2\0"), sync()]);
    assert_eq!(tags(&sent), "DS");
    assert!(answered.is_empty(), "the parameter sync is still running");
    let seen = l.server(&[
        frame(b'C', b"SET\0"),
        ready(),
        frame(b't', b"\0\0"),
        frame(b'T', b"\0\0"),
        ready(),
    ]);
    assert_eq!(tags(&seen), "1tTZ");
    assert!(l.client.get("s2").is_some());
}

#[test]
fn asyncpgs_prepare_shape_goes_through() {
    let mut l = Link::new(10);
    let (sent, answered) = l.client(&[
        parse("__asyncpg_stmt_1__", "select 1"),
        frame(b'D', b"S__asyncpg_stmt_1__\0"),
        frame(b'H', b""),
        sync(),
    ]);
    assert_eq!(tags(&sent), "PDHS");
    assert!(answered.is_empty());
}

#[test]
fn a_plan_made_stale_by_a_schema_change_is_prepared_again_at_its_next_use() {
    let mut l = Link::new(10);
    l.prepared("s1", "select * from t");
    let (sent, _) = l.client(&[bind("s1"), execute(), sync()]);
    assert_eq!(tags(&sent), "BES");
    let seen = l.server(&[error("0A000"), ready()]);
    assert_eq!(tags(&seen), "EZ", "the client hears it once");
    l.relay.reset();
    // The client's statement was described before the change: it keeps failing, as in PostgreSQL, though
    // nothing is sent to the server's (stale) statement.
    let (sent, _) = l.client(&[bind("s1"), execute(), sync()]);
    assert_eq!(tags(&sent), "QS", "a stand-in raises the error");
    let sql = String::from_utf8_lossy(&sent[0].1);
    assert!(
        sql.contains("0A000") && sql.contains("cached plan must not change result type"),
        "{sql}"
    );
    l.server(&[error("0A000"), ready(), ready()]);
    l.relay.reset();
    // Prepared again by the client, it is closed and prepared again on the server before its use.
    let (sent, _) = l.client(&[
        parse("s2", "select * from t"),
        bind("s2"),
        execute(),
        sync(),
    ]);
    assert_eq!(
        tags(&sent),
        "CPBES",
        "closed and prepared again before the retry"
    );
    let name = statement_name(b'P', &sent[1].1);
    assert_eq!(statement_name(b'C', &sent[0].1), name);
    let seen = l.server(&[
        frame(b'3', b""),
        frame(b'1', b""),
        frame(b'2', b""),
        frame(b'C', b"SELECT 0\0"),
        ready(),
    ]);
    assert_eq!(tags(&seen), "12CZ");

    // Inside a transaction block too: the failed transaction ends first, the statement is renewed after.
    let mut l = Link::new(10);
    l.prepared("s1", "select * from t");
    l.relay.tx = TransactionStatus::InTransaction;
    l.client(&[bind("s1"), execute(), sync()]);
    l.server(&[error("0A000"), ready()]);
    l.relay.reset();
    let (sent, _) = l.client(&[
        parse("s2", "select * from t"),
        bind("s2"),
        execute(),
        sync(),
    ]);
    assert_eq!(tags(&sent), "CPBES");
}
