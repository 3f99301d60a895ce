use bytes::{BufMut, BytesMut};

use super::*;
use crate::protocol::backend::{
    Severity, write_error, write_parameter_status, write_ready_for_query,
};
use crate::protocol::frontend::{write_query, write_sync, write_terminate};

pub(super) fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub(super) fn drain(q: &mut OutQueue) -> Vec<u8> {
    let mut v = Vec::new();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    while !q.is_empty() {
        match q.poll_write_some(&mut v, &mut cx) {
            std::task::Poll::Ready(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    v
}

struct Fixture {
    tracked: Tracked,
    server: ParamValues,
    client: ParamValues,
}

impl Fixture {
    fn new() -> Self {
        let tracked = Tracked::new(&[]);
        let server = ParamValues::new(&tracked);
        let client = ParamValues::new(&tracked);
        Self {
            tracked,
            server,
            client,
        }
    }

    fn ctx(&mut self) -> ServerCtx<'_, 'static> {
        ServerCtx {
            tracked: &self.tracked,
            server_params: &mut self.server,
            client_params: &mut self.client,
            max: u32::MAX,
            stmts: None,
        }
    }
}

#[test]
fn pipelined_queries_keep_the_server_until_all_are_answered() {
    let mut r = Relay::new();
    let mut input = BytesMut::new();
    write_query(&mut input, "select 1");
    write_query(&mut input, "select 2");
    let sent = input.to_vec();
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    assert_eq!(drain(&mut out), sent, "forwarded verbatim as one run");
    assert_eq!(r.outstanding, 2);
    assert!(!r.releasable());

    let mut fx = Fixture::new();
    let mut s = BytesMut::new();
    s.put_slice(&frame(b'T', b"\x00\x00"));
    s.put_slice(&frame(b'C', b"SELECT 1\0"));
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    let first_answer = s.to_vec();
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    assert_eq!(drain(&mut out), first_answer);
    assert_eq!(r.outstanding, 1);
    assert!(!r.releasable(), "second query still running");
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    assert!(r.releasable());
    assert_eq!(r.counts.queries, 2);
}

#[test]
fn partial_frames_wait_for_the_rest() {
    let mut r = Relay::new();
    let mut whole = BytesMut::new();
    write_query(&mut whole, "select 1");
    let mut input = BytesMut::from(&whole[..6]);
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    assert!(out.is_empty());
    assert_eq!(r.outstanding, 0);
    input.put_slice(&whole[6..]);
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    assert_eq!(drain(&mut out), whole.to_vec());
    assert_eq!(r.outstanding, 1);
}

#[test]
fn extended_batch_is_unsynced_until_sync() {
    let mut r = Relay::new();
    let mut input = BytesMut::new();
    input.put_slice(&frame(b'P', b"\0select 1\0\0\0"));
    input.put_slice(&frame(b'B', b"\0\0\0\0\0\0\0\0"));
    input.put_slice(&frame(b'E', b"\0\0\0\0\0"));
    input.put_slice(&frame(b'H', b""));
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    assert!(r.unsynced);
    assert_eq!(r.outstanding, 0);
    assert!(!r.releasable(), "mid-batch");
    write_sync(&mut input);
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    assert!(!r.unsynced);
    assert_eq!(r.outstanding, 1);
}

#[test]
fn terminate_is_not_forwarded_and_stops_reading() {
    let mut r = Relay::new();
    let mut input = BytesMut::new();
    write_query(&mut input, "select 1");
    let q = input.to_vec();
    write_terminate(&mut input);
    write_query(&mut input, "select 2");
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    assert_eq!(drain(&mut out), q);
    assert!(r.client_terminated);
    assert_eq!(r.outstanding, 1);
}

#[test]
fn unexpected_and_oversized_client_frames_are_errors() {
    let mut out = OutQueue::default();
    let mut input = BytesMut::from(&frame(b'p', b"pw\0")[..]);
    assert!(matches!(
        Relay::new().process_client(
            &mut input,
            &mut out,
            &mut OutQueue::default(),
            u32::MAX,
            None,
            None
        ),
        Err(RelayError::UnexpectedFromClient(b'p'))
    ));
    let mut input = BytesMut::from(&frame(b'Q', &[b'x'; 100])[..]);
    assert!(matches!(
        Relay::new().process_client(
            &mut input,
            &mut out,
            &mut OutQueue::default(),
            50,
            None,
            None
        ),
        Err(RelayError::Client(ProtocolError::TooLarge { .. }))
    ));
}

#[test]
fn hidden_sync_answers_are_swallowed_but_changed_parameters_reach_the_client() {
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    let tz = fx.tracked.index("TimeZone").unwrap();
    let app = fx.tracked.index("application_name").unwrap();
    fx.client.set(tz, "utc");
    fx.client.set(app, "svc");
    r.add_hidden_query();
    let mut input = BytesMut::new();
    write_query(&mut input, "select now()");
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    drain(&mut out);
    assert_eq!(r.outstanding, 2);

    let mut s = BytesMut::new();
    // Answers to "SET TimeZone='utc';SET application_name='svc';"
    write_parameter_status(&mut s, "TimeZone", "UTC"); // canonical spelling differs: client must learn it
    s.put_slice(&frame(b'C', b"SET\0"));
    write_parameter_status(&mut s, "application_name", "svc"); // same as the client believes: hidden
    s.put_slice(&frame(b'C', b"SET\0"));
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    let mut expect = BytesMut::new();
    write_parameter_status(&mut expect, "TimeZone", "UTC");
    // Then the client's own answer, forwarded whole.
    let mut own = BytesMut::new();
    own.put_slice(&frame(b'C', b"SELECT 1\0"));
    write_ready_for_query(&mut own, TransactionStatus::Idle);
    expect.put_slice(&own);
    s.put_slice(&own);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    assert_eq!(drain(&mut out), expect.to_vec());
    assert_eq!(fx.client.get(tz), Some("UTC"));
    assert_eq!(fx.server.get(tz), Some("UTC"));
    assert_eq!(fx.server.get(app), Some("svc"));
    assert!(r.releasable());
    assert_eq!(r.hidden, 0);
}

#[test]
fn fatal_errors_are_noted_and_forwarded() {
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    r.outstanding = 1;
    let mut s = BytesMut::new();
    write_error(
        &mut s,
        Severity::Fatal,
        "57P01",
        "terminating connection due to administrator command",
    );
    let sent = s.to_vec();
    let mut out = OutQueue::default();
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    assert!(r.server_fatal);
    assert_eq!(drain(&mut out), sent);
}

#[test]
fn big_rows_stream_through_without_waiting_for_the_whole_frame() {
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    r.outstanding = 1;
    let big = frame(b'D', &vec![7u8; STREAM_MIN * 2]);
    let mut s = BytesMut::from(&big[..1000]);
    let mut out = OutQueue::default();
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    assert_eq!(
        drain(&mut out),
        big[..1000].to_vec(),
        "streamed before the frame is complete"
    );
    assert!(!r.releasable());
    s.put_slice(&big[1000..]);
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    let rest = drain(&mut out);
    assert_eq!(&rest[..big.len() - 1000], &big[1000..]);
    assert!(r.releasable());
}

#[test]
fn hidden_big_rows_are_discarded() {
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    r.add_hidden_query();
    let big = frame(b'D', &vec![7u8; STREAM_MIN * 2]);
    let mut s = BytesMut::from(&big[..500]);
    let mut out = OutQueue::default();
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    s.put_slice(&big[500..]);
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    assert!(out.is_empty());
    assert!(s.is_empty());
    assert_eq!(r.outstanding, 0);
}

#[test]
fn transaction_status_and_counts() {
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    let mut out = OutQueue::default();
    for status in [
        TransactionStatus::InTransaction,
        TransactionStatus::Failed,
        TransactionStatus::Idle,
    ] {
        let mut input = BytesMut::new();
        write_query(&mut input, "x");
        r.process_client(
            &mut input,
            &mut out,
            &mut OutQueue::default(),
            u32::MAX,
            None,
            None,
        )
        .unwrap();
        let mut s = BytesMut::new();
        write_ready_for_query(&mut s, status);
        r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
        assert_eq!(r.tx, status);
        assert_eq!(r.releasable(), status == TransactionStatus::Idle);
        assert!(r.quiet());
    }
    assert_eq!(
        r.counts.transactions, 1,
        "BEGIN; …; COMMIT is one transaction"
    );
}

/// Answers from the server, run through the relay.
fn server_says(r: &mut Relay, fx: &mut Fixture, frames: &[Vec<u8>]) {
    let mut s = BytesMut::new();
    for f in frames {
        s.put_slice(f);
    }
    let mut out = OutQueue::default();
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
}

fn client_says(r: &mut Relay, frames: &[Vec<u8>]) {
    let mut input = BytesMut::new();
    for f in frames {
        input.put_slice(f);
    }
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
}

#[test]
fn sync_sent_during_copy_in_gets_no_answer() {
    // tokio-postgres' copy_in: Bind/Execute/Sync, then the data, CopyDone, Sync. PostgreSQL ignores the
    // first Sync (it reads it in COPY FROM STDIN mode) and answers the batch with one ReadyForQuery.
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    client_says(
        &mut r,
        &[
            frame(b'B', b"\0s0\0\0\0\0\0\0\0"),
            frame(b'E', b"\0\0\0\0\0"),
            frame(b'S', b""),
        ],
    );
    server_says(&mut r, &mut fx, &[frame(b'2', b""), frame(b'G', b"\0\0\0")]);
    client_says(
        &mut r,
        &[frame(b'd', b"1\n"), frame(b'c', b""), frame(b'S', b"")],
    );
    assert_eq!(r.outstanding, 2, "not known yet: the COPY has not ended");
    let mut z = BytesMut::new();
    write_ready_for_query(&mut z, TransactionStatus::Idle);
    server_says(&mut r, &mut fx, &[frame(b'C', b"COPY 1\0"), z.to_vec()]);
    assert!(r.releasable(), "outstanding {}", r.outstanding);

    // The same when the server fails the COPY before the client has finished sending.
    let mut r = Relay::new();
    client_says(
        &mut r,
        &[
            frame(b'B', b"\0s0\0\0\0\0\0\0\0"),
            frame(b'E', b"\0\0\0\0\0"),
            frame(b'S', b""),
        ],
    );
    let mut err = BytesMut::new();
    write_error(&mut err, Severity::Error, "22P02", "bad input");
    server_says(&mut r, &mut fx, &[frame(b'G', b"\0\0\0"), err.to_vec()]);
    client_says(&mut r, &[frame(b'c', b""), frame(b'S', b"")]);
    assert_eq!(r.outstanding, 1);
    server_says(&mut r, &mut fx, &[z.to_vec()]);
    assert!(r.releasable(), "outstanding {}", r.outstanding);

    // A simple-protocol COPY keeps its one answer.
    let mut r = Relay::new();
    let mut q = BytesMut::new();
    write_query(&mut q, "copy t from stdin");
    client_says(&mut r, &[q.to_vec()]);
    server_says(&mut r, &mut fx, &[frame(b'G', b"\0\0\0")]);
    client_says(&mut r, &[frame(b'd', b"1\n"), frame(b'c', b"")]);
    server_says(&mut r, &mut fx, &[frame(b'C', b"COPY 1\0")]);
    assert_eq!(r.outstanding, 1);
    assert!(!r.releasable());
    server_says(&mut r, &mut fx, &[z.to_vec()]);
    assert!(r.releasable());
}

/// Arbitrary bytes from either side never panic the relay: each input ends in Ok (waiting for more) or a
/// protocol error that closes only that client.
#[test]
fn random_input_never_panics() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for round in 0..3000 {
        let len = rng.random_range(0..200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half the time, start with a plausible header so parsing gets past the first check.
        if round % 2 == 0 && bytes.len() >= 5 {
            bytes[0] = *[b'Q', b'P', b'B', b'Z', b'S', b'E', b'D', b'd', b'c', b'G']
                .get(round % 10)
                .unwrap_or(&b'Q');
            let body = (bytes.len() - 1) as u32;
            bytes[1..5].copy_from_slice(&body.to_be_bytes());
        }
        let mut r = Relay::new();
        let mut fx = Fixture::new();
        let mut out = OutQueue::default();
        let mut input = BytesMut::from(&bytes[..]);
        let _ = r.process_client(
            &mut input,
            &mut out,
            &mut OutQueue::default(),
            1 << 20,
            None,
            None,
        );
        let mut input = BytesMut::from(&bytes[..]);
        r.add_hidden_query();
        let _ = r.process_server(&mut input, &mut out, &mut fx.ctx());
        let mut input = BytesMut::from(&bytes[..]);
        let _ = crate::protocol::startup::parse(&mut input);
        let _ = ErrorFields::parse(&bytes);
        let _ = backend::Authentication::parse(&bytes);
        let _ = frontend::Parse::decode(&bytes);
        let _ = frontend::parse_sasl_initial(&bytes);
    }
}

/// A policy that denies SQL containing "forbidden".
struct DenyForbidden {
    seen: Vec<(String, bool, String, bool)>,
}

impl QueryPolicy for DenyForbidden {
    fn check(&mut self, sql: &str, extended: bool, name: &str, in_tx: bool) -> Option<Denial> {
        self.seen
            .push((sql.to_owned(), extended, name.to_owned(), in_tx));
        sql.contains("forbidden").then(|| Denial {
            sqlstate: "25006".into(),
            message: "it's $pgwarden$ forbidden".into(),
            detail: None,
            hint: Some("ask".into()),
        })
    }
}

fn queries_in(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = frame::split(&mut buf, u32::MAX).unwrap() {
        out.push((f.tag, f.body.to_vec()));
    }
    out
}

#[test]
fn a_denied_query_is_replaced_by_one_that_raises_the_denial() {
    let mut r = Relay::new();
    let mut policy = DenyForbidden { seen: vec![] };
    let mut input = BytesMut::new();
    write_query(&mut input, "select 1");
    write_query(&mut input, "delete from forbidden");
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    let sent = queries_in(&drain(&mut out));
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].1, b"select 1\0");
    let replacement = String::from_utf8(sent[1].1.clone()).unwrap();
    assert!(
        replacement.starts_with("DO $pgwarden$BEGIN RAISE EXCEPTION USING ERRCODE = '25006'"),
        "{replacement}"
    );
    assert!(
        replacement.contains("MESSAGE = 'it''s $ pgwarden$ forbidden'"),
        "quotes and the tag escaped: {replacement}"
    );
    assert!(replacement.contains("HINT = 'ask'"));
    assert_eq!(
        r.outstanding, 2,
        "the replacement is answered like the query it replaces"
    );
    assert_eq!(policy.seen.len(), 2);
    assert!(!policy.seen[1].1, "simple protocol");
}

#[test]
fn a_denied_parse_skips_its_batch_and_hides_one_ready_for_query() {
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    let mut policy = DenyForbidden { seen: vec![] };
    let mut input = BytesMut::new();
    input.put_slice(&frame(b'P', b"s1\0insert into forbidden values (1)\0\0\0"));
    input.put_slice(&frame(b'B', b"\0s1\0\0\0\0\0\0\0"));
    input.put_slice(&frame(b'E', b"\0\0\0\0\0"));
    write_sync(&mut input);
    write_query(&mut input, "select 2");
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    let sent = queries_in(&drain(&mut out));
    let tags: Vec<u8> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        tags,
        b"QSQ".to_vec(),
        "stand-in query, the client's Sync, then its next query"
    );
    assert_eq!(
        policy.seen[0],
        (
            "insert into forbidden values (1)".into(),
            true,
            "s1".into(),
            false
        )
    );
    assert_eq!(r.outstanding, 3);

    // The server: error + ReadyForQuery for the stand-in, ReadyForQuery for the Sync, then the next query.
    let mut s = BytesMut::new();
    write_error(&mut s, Severity::Error, "25006", "it's forbidden");
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    s.put_slice(&frame(b'C', b"SELECT 1\0"));
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    let got: Vec<u8> = queries_in(&drain(&mut out))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        got,
        b"EZCZ".to_vec(),
        "the client sees its error, one ReadyForQuery per Sync/Query"
    );
    assert!(r.releasable());
}

#[test]
fn skipping_drops_streamed_frames_of_the_denied_batch_too() {
    let mut r = Relay::new();
    let mut policy = DenyForbidden { seen: vec![] };
    let mut input = BytesMut::new();
    input.put_slice(&frame(b'P', b"\0forbidden\0\0\0"));
    let big_bind = frame(b'B', &vec![0u8; STREAM_MIN * 2]);
    input.put_slice(&big_bind[..100]);
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    input.put_slice(&big_bind[100..]);
    write_sync(&mut input);
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    let tags: Vec<u8> = queries_in(&drain(&mut out))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(tags, b"QS".to_vec());
    assert!(input.is_empty());
}

#[test]
fn a_function_call_is_refused_where_a_policy_checks_queries() {
    let call = frame(b'F', &[0, 0, 8, 30, 0, 0, 0, 0, 0, 0]);
    // Without a policy it goes to the server as sent.
    let mut r = Relay::new();
    let mut input = BytesMut::from(&call[..]);
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    assert_eq!(drain(&mut out), call);

    // With one, it is replaced by a query raising the refusal, answered like the call would be; a call too
    // big to arrive at once is dropped as it streams in.
    let mut r = Relay::new();
    let mut policy = DenyForbidden { seen: vec![] };
    let big = frame(b'F', &vec![0u8; STREAM_MIN * 2]);
    let mut input = BytesMut::from(&call[..]);
    input.put_slice(&big[..100]);
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    input.put_slice(&big[100..]);
    write_query(&mut input, "select 1");
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    let sent = queries_in(&drain(&mut out));
    let tags: Vec<u8> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, b"QQQ".to_vec());
    let refusal = String::from_utf8(sent[0].1.clone()).unwrap();
    assert!(refusal.contains("ERRCODE = '0A000'"), "{refusal}");
    assert_eq!(sent[1], sent[0]);
    assert_eq!(sent[2].1, b"select 1\0");
    assert_eq!(r.outstanding, 3);
    assert!(input.is_empty());
    assert_eq!(policy.seen.len(), 1, "the policy is not asked about calls");
}

/// The ErrorResponse PostgreSQL sends for a denial's stand-in (what `denial_query` makes it raise).
fn stand_in_error(message: &str) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let fields: Vec<(u8, &[u8])> = vec![
        (b'S', b"ERROR"),
        (b'V', b"ERROR"),
        (b'C', b"25006"),
        (b'M', message.as_bytes()),
        (b'W', b"PL/pgSQL function inline_code_block line 1 at RAISE"),
        (b'n', DENIAL_MARKER.as_bytes()),
        (b'F', b"pl_exec.c"),
        (b'L', b"3907"),
        (b'R', b"exec_stmt_raise"),
    ];
    backend::write_raw_error_fields(&mut buf, be::ERROR_RESPONSE, &fields);
    buf.to_vec()
}

#[test]
fn the_stand_in_error_reaches_the_client_without_the_do_blocks_context() {
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    let mut policy = DenyForbidden { seen: vec![] };
    let mut input = BytesMut::new();
    write_query(&mut input, "delete from forbidden");
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    let sent = queries_in(&drain(&mut out));
    let stand_in = String::from_utf8(sent[0].1.clone()).unwrap();
    assert!(
        stand_in.contains(&format!("CONSTRAINT = '{}'", *DENIAL_MARKER)),
        "{stand_in}"
    );

    let mut s = BytesMut::from(&stand_in_error("it's forbidden")[..]);
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    let got = queries_in(&drain(&mut out));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, b'E');
    let fields: Vec<u8> = backend::error_fields(&got[0].1)
        .unwrap()
        .iter()
        .map(|(f, _)| *f)
        .collect();
    assert_eq!(
        fields,
        b"SVCM".to_vec(),
        "context, marker and location removed"
    );
    assert_eq!(
        ErrorFields::parse(&got[0].1).unwrap().message,
        "it's forbidden"
    );
    assert_eq!(got[1].0, b'Z');
    assert!(r.releasable());

    // Any other error passes untouched.
    write_query(&mut input, "select 1/0");
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    drain(&mut out);
    let mut s = BytesMut::new();
    let other: Vec<(u8, &[u8])> = vec![(b'S', b"ERROR"), (b'C', b"22012"), (b'W', b"here")];
    backend::write_raw_error_fields(&mut s, be::ERROR_RESPONSE, &other);
    let sent_by_server = s.to_vec();
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    let got = drain(&mut out);
    assert_eq!(&got[..sent_by_server.len()], &sent_by_server[..]);
}

#[test]
fn a_stand_in_skipped_after_an_earlier_failure_in_its_batch_hides_nothing() {
    // psycopg's pipeline mode: `SELECT 1/0` then a denied INSERT in one batch. The division fails first, so
    // PostgreSQL skips the stand-in until the client's Sync: a single ReadyForQuery, which the client must get.
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    let mut policy = DenyForbidden { seen: vec![] };
    let mut input = BytesMut::new();
    input.put_slice(&frame(b'P', b"\0select 1/0\0\0\0"));
    input.put_slice(&frame(b'B', b"\0\0\0\0\0\0\0\0"));
    input.put_slice(&frame(b'E', b"\0\0\0\0\0"));
    input.put_slice(&frame(b'P', b"\0insert into forbidden values (1)\0\0\0"));
    input.put_slice(&frame(b'B', b"\0\0\0\0\0\0\0\0"));
    input.put_slice(&frame(b'E', b"\0\0\0\0\0"));
    write_sync(&mut input);
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    let tags: Vec<u8> = queries_in(&drain(&mut out))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(tags, b"PBEQS".to_vec());

    let mut s = BytesMut::new();
    s.put_slice(&frame(b'1', b""));
    s.put_slice(&frame(b'2', b""));
    write_error(&mut s, Severity::Error, "22012", "division by zero");
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    let got: Vec<u8> = queries_in(&drain(&mut out))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        got,
        b"12EZ".to_vec(),
        "the Sync's ReadyForQuery reaches the client"
    );
    assert_eq!(r.outstanding, 0);
    assert!(r.releasable());

    // Had the division succeeded, the stand-in's error and the Sync's ReadyForQuery reach the client.
    let mut r = Relay::new();
    r.process_client(
        &mut BytesMut::from(
            &[
                frame(b'P', b"\0select 1\0\0\0"),
                frame(b'B', b"\0\0\0\0\0\0\0\0"),
                frame(b'E', b"\0\0\0\0\0"),
                frame(b'P', b"\0insert into forbidden values (1)\0\0\0"),
                frame(b'S', b""),
            ]
            .concat()[..],
        ),
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        Some(&mut policy),
        None,
    )
    .unwrap();
    drain(&mut out);
    let mut s = BytesMut::new();
    s.put_slice(&frame(b'1', b""));
    s.put_slice(&frame(b'2', b""));
    s.put_slice(&frame(b'C', b"SELECT 1\0"));
    s.put_slice(&stand_in_error("no"));
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    let got: Vec<u8> = queries_in(&drain(&mut out))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(got, b"12CEZ".to_vec());
    assert!(r.releasable());
}

#[test]
fn bytes_and_times_are_counted() {
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    let mut input = BytesMut::new();
    write_query(&mut input, "select 1");
    let sent_len = input.len() as u64;
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let mut s = BytesMut::new();
    s.put_slice(&frame(b'C', b"SELECT 1\0"));
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    let answer_len = s.len() as u64;
    let mut back = OutQueue::default();
    r.process_server(&mut s, &mut back, &mut fx.ctx()).unwrap();
    assert_eq!((r.counts.received, r.counts.sent), (sent_len, answer_len));
    assert!(r.counts.query_us >= 2000, "{}", r.counts.query_us);
    assert!(r.counts.xact_us >= 2000, "{}", r.counts.xact_us);
    assert_eq!(r.counts.transactions, 1);
}

#[test]
fn a_reported_application_name_and_string_style_reach_the_session() {
    let mut r = Relay::new();
    let mut fx = Fixture::new();
    let mut input = BytesMut::new();
    write_query(
        &mut input,
        "set application_name = 'etl'; set standard_conforming_strings = off",
    );
    let mut out = OutQueue::default();
    r.process_client(
        &mut input,
        &mut out,
        &mut OutQueue::default(),
        u32::MAX,
        None,
        None,
    )
    .unwrap();
    drain(&mut out);
    assert!(r.standard_strings);
    let mut s = BytesMut::new();
    write_parameter_status(&mut s, "application_name", "etl");
    s.put_slice(&frame(b'C', b"SET\0"));
    write_parameter_status(&mut s, "standard_conforming_strings", "off");
    s.put_slice(&frame(b'C', b"SET\0"));
    write_ready_for_query(&mut s, TransactionStatus::Idle);
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    assert!(r.app_reported, "the session must update SHOW CLIENTS");
    assert!(!r.standard_strings, "the lexer follows the server's report");
    assert_eq!(fx.client.get(Tracked::APPLICATION_NAME), Some("etl"));

    // The same value reported again (pgwarden's own sync, say) is nothing new for the client.
    r.app_reported = false;
    let mut s = BytesMut::new();
    write_parameter_status(&mut s, "application_name", "etl");
    r.process_server(&mut s, &mut out, &mut fx.ctx()).unwrap();
    assert!(!r.app_reported);
}
