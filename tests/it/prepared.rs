//! Protocol-level prepared statements in transaction mode (issue 4, `max_prepared_statements`): a client's
//! named statements follow it from server to server under pgwarden's own names (`PGWARDEN_<32 hex>`, shared
//! by identical statements), each server keeps at most `max_prepared_statements` of them, and every reply,
//! error included, is the one PostgreSQL itself would have sent.
//!
//! Clients are made to change servers on purpose: a pool of two servers, and a [`Steer`] holding one of them
//! in an open transaction so the client under test must run on the other. The differential tests send the
//! same hand-built message sequence straight to PostgreSQL and through pgwarden and compare the replies.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::BufMut;
use futures_util::future::try_join_all;
use pgwarden_tests::clients::{BenchLength, BenchRun, Pgbench, QueryMode};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use pgwarden_tests::raw::{Msg, RawClient, first_error, frame_bytes};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::protocol::{
    bind_msg, close_msg, data_rows, describe_msg, execute_msg, flush_msg, parse_msg, raw_row,
    sync_msg, tags,
};

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

/// A fresh database (md5 role, so the raw client can log in to PostgreSQL directly too) and a pooler in
/// front of it in `mode` with `settings`.
async fn setup(prefix: &str, mode: &str, settings: &str) -> anyhow::Result<(TestDb, Pooler)> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
    let pooler = start_pooler(&db, mode, settings).await?;
    Ok((db, pooler))
}

async fn start_pooler(db: &TestDb, mode: &str, settings: &str) -> anyhow::Result<Pooler> {
    Pooler::start(
        &format!(
            "{0} = host=127.0.0.1 port={1} dbname={0}",
            db.name,
            PgCluster::shared().port()
        ),
        &format!("auth_type = md5\npool_mode = {mode}\n{settings}"),
        &db.userlist_line(),
    )
    .await
}

/// The rows of a simple query's first column.
async fn simple_column(c: &Client, sql: &str) -> anyhow::Result<Vec<String>> {
    let msgs = c.simple_query(sql).await?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("<null>").to_owned()),
            _ => None,
        })
        .collect())
}

/// The backend pid of the server `c` runs its next statement on (simple protocol, so no statement is
/// prepared by asking).
async fn server_pid(c: &Client, sql: &str) -> anyhow::Result<i32> {
    let rows = simple_column(c, sql).await?;
    ensure!(rows.len() == 1, "{sql}: {rows:?}");
    Ok(rows[0].parse()?)
}

/// `BEGIN` and the pid of the server the transaction runs on.
async fn begin(c: &Client) -> anyhow::Result<i32> {
    server_pid(c, "begin; select pg_backend_pid()").await
}

/// The names and texts in `pg_prepared_statements` of the server `c`'s next statement runs on.
async fn server_statements(c: &Client) -> anyhow::Result<Vec<(String, String)>> {
    let msgs = c
        .simple_query("select name, statement from pg_prepared_statements order by name")
        .await?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap_or_default().to_owned(),
                r.get(1).unwrap_or_default().to_owned(),
            )),
            _ => None,
        })
        .collect())
}

/// A server statement name as pgwarden makes them: `PGWARDEN_` and 32 hex digits.
fn is_pgwarden_name(name: &str) -> bool {
    name.strip_prefix("PGWARDEN_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a server's statements: all named by pgwarden, at most `max`, no statement text twice (identical
/// statements share one server name).
fn check_server_statements(stmts: &[(String, String)], max: usize) -> anyhow::Result<()> {
    ensure!(
        stmts.iter().all(|(n, _)| is_pgwarden_name(n)),
        "server statements not named by pgwarden: {stmts:?}"
    );
    ensure!(stmts.len() <= max, "more than {max} statements: {stmts:?}");
    let texts: BTreeSet<&str> = stmts.iter().map(|(_, t)| t.as_str()).collect();
    ensure!(
        texts.len() == stmts.len(),
        "one statement text prepared twice: {stmts:?}"
    );
    Ok(())
}

/// Two clients that can occupy both servers of a pool of two, to steer a third client onto the server of
/// the test's choice: [`Steer::hold`] keeps one server busy in an open transaction, so the other is the
/// only one free.
struct Steer {
    b: Client,
    c: Client,
    /// Which of `b` (false) and `c` (true) holds a transaction open.
    held: Option<bool>,
}

impl Steer {
    async fn new(pooler: &Pooler, db: &TestDb) -> anyhow::Result<Self> {
        Ok(Self {
            b: pooler.connect_as(db).await?,
            c: pooler.connect_as(db).await?,
            held: None,
        })
    }

    /// Holds server `pid` in a transaction; returns the pid of the pool's other server, now the only free
    /// one.
    async fn hold(&mut self, pid: i32) -> anyhow::Result<i32> {
        self.release().await?;
        let pid_b = begin(&self.b).await?;
        let pid_c = begin(&self.c).await?;
        ensure!(pid_b != pid_c, "two transactions on one server {pid_b}");
        let (keep_c, free) = if pid_b == pid {
            (false, pid_c)
        } else if pid_c == pid {
            (true, pid_b)
        } else {
            bail!("server {pid} is not in the pool ({pid_b}, {pid_c})");
        };
        let other = if keep_c { &self.b } else { &self.c };
        other.batch_execute("commit").await?;
        self.held = Some(keep_c);
        Ok(free)
    }

    /// Ends the held transaction, if any.
    async fn release(&mut self) -> anyhow::Result<()> {
        if let Some(keep_c) = self.held.take() {
            let held = if keep_c { &self.c } else { &self.b };
            held.batch_execute("commit").await?;
        }
        Ok(())
    }
}

/// The SQLSTATE and message of a tokio-postgres error, or a failure saying it was not a server error.
fn db_error(e: &tokio_postgres::Error) -> anyhow::Result<(String, String)> {
    let db = e
        .as_db_error()
        .with_context(|| format!("not an error from the server: {e}"))?;
    Ok((db.code().code().to_owned(), db.message().to_owned()))
}

/// A Parse with no parameter types.
fn parse(name: &str, sql: &str) -> Vec<u8> {
    parse_msg(name, sql, &[])
}

/// Bind (text parameters) and Execute, unnamed portal.
fn bind_exec(statement: &str, params: &[&str]) -> Vec<u8> {
    let params: Vec<Option<&str>> = params.iter().map(|p| Some(*p)).collect();
    [bind_msg("", statement, &params), execute_msg("")].concat()
}

/// A simple Query message.
fn query_msg(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.put_u8(0);
    frame_bytes(b'Q', &body)
}

// ---------------------------------------------------------------------------------------------------
// Differential: the same messages straight to PostgreSQL and through pgwarden
// ---------------------------------------------------------------------------------------------------

/// How many replies a step waits for.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// This many ReadyForQuery.
    Ready(usize),
    /// This many messages (a Flush-driven batch, no Sync yet).
    Msgs(usize),
}

#[derive(Debug, Clone)]
enum Step {
    /// Send these bytes (whole messages), read replies.
    Send(Vec<u8>, Until),
    /// Through pgwarden: move the client to the pool's other server (its next transaction runs there).
    /// Straight to PostgreSQL: nothing.
    Switch,
}

/// Messages then Sync, answered by one ReadyForQuery.
fn synced(msgs: &[Vec<u8>]) -> Step {
    let mut bytes = msgs.concat();
    bytes.extend(sync_msg());
    Step::Send(bytes, Until::Ready(1))
}

fn simple(sql: &str) -> Step {
    Step::Send(query_msg(sql), Until::Ready(1))
}

/// A reply as compared: the tag and body, errors as severity, SQLSTATE and message (pgwarden's own errors
/// carry no file/line/routine fields), ReadyForQuery as its status.
fn norm(m: &Msg) -> String {
    match m.tag {
        b'E' => match m.error() {
            Some(e) => format!("E {} {} {}", e.severity, e.code, e.message),
            None => format!("E <unparsable> {:?}", m.body),
        },
        b'Z' => format!("Z {}", m.body.first().map_or('?', |b| char::from(*b))),
        tag => format!(
            "{} {}",
            char::from(tag),
            String::from_utf8_lossy(&m.body).replace('\0', "|")
        ),
    }
}

async fn read_step(c: &mut RawClient, until: Until) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut ready = 0;
    loop {
        let done = match until {
            Until::Ready(n) => ready == n,
            Until::Msgs(n) => out.len() == n,
        };
        if done {
            return Ok(out);
        }
        let m = c
            .recv()
            .await?
            .with_context(|| format!("connection closed after {out:?}"))?;
        if m.tag == b'Z' {
            ready += 1;
        }
        out.push(norm(&m));
    }
}

/// Plays `steps` on `c`; one reply list per step (empty for [`Step::Switch`]). With `steer` (through
/// pgwarden), a Switch moves `c` to the other server.
async fn play(
    c: &mut RawClient,
    steps: &[Step],
    mut steer: Option<&mut Steer>,
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut replies = Vec::new();
    for step in steps {
        match step {
            Step::Send(bytes, until) => {
                c.send(bytes).await?;
                replies.push(read_step(c, *until).await?);
            }
            Step::Switch => {
                if let Some(steer) = steer.as_deref_mut() {
                    let pid: i32 = raw_row(c, "select pg_backend_pid()").await?[0].parse()?;
                    let next = steer.hold(pid).await?;
                    ensure!(next != pid);
                }
                replies.push(Vec::new());
            }
        }
    }
    if let Some(steer) = steer {
        steer.release().await?;
    }
    Ok(replies)
}

/// Plays `steps` straight to PostgreSQL and through pgwarden (transaction mode, two servers) and demands
/// the same replies. `codes` are the SQLSTATEs PostgreSQL answers, in order (so the scenario really
/// exercises the errors it is about).
async fn differential(prefix: &str, steps: &[Step], codes: &[&str]) -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (db, pooler) = setup(prefix, "transaction", "default_pool_size = 2").await?;
    let params = [("user", db.user.as_str()), ("database", db.name.as_str())];

    let mut direct = RawClient::connect(pg.port()).await?;
    let login = direct.login(&params, &db.password).await?;
    ensure!(login.last().map(|m| m.tag) == Some(b'Z'), "{login:?}");
    let want = play(&mut direct, steps, None).await?;
    let got_codes: Vec<&str> = want
        .iter()
        .flatten()
        .filter_map(|r| r.strip_prefix("E ERROR "))
        .filter_map(|r| r.split(' ').next())
        .collect();
    assert_eq!(got_codes, codes, "PostgreSQL's errors: {want:#?}");

    let mut steer = Steer::new(&pooler, &db).await?;
    let mut through = RawClient::connect(pooler.port).await?;
    let login = through.login(&params, &db.password).await?;
    ensure!(login.last().map(|m| m.tag) == Some(b'Z'), "{login:?}");
    let got = play(&mut through, steps, Some(&mut steer)).await?;
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(
            g, w,
            "step {i} ({:?}): pgwarden's replies (left) differ from PostgreSQL's",
            steps[i]
        );
    }
    // The client's own names never reached the server.
    let names = through
        .query("select name from pg_prepared_statements")
        .await?;
    for row in data_rows(&names) {
        let name = row[0].clone().unwrap_or_default();
        assert!(is_pgwarden_name(&name), "server statement {name:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_name_reuse_is_42p05_and_keeps_the_first() -> anyhow::Result<()> {
    let steps = [
        synced(&[parse("a", "select 1")]),
        Step::Switch,
        // Another text under the same name, then the same text: both refused, as PostgreSQL does, also on a
        // server where pgwarden could answer the Parse itself.
        synced(&[parse("a", "select 2")]),
        synced(&[parse("a", "select 1")]),
        synced(&[bind_exec("a", &[])]),
        // In a batch: the error skips the rest up to Sync.
        synced(&[
            parse("b", "select 3"),
            parse("b", "select 4"),
            bind_exec("b", &[]),
        ]),
        synced(&[bind_exec("b", &[])]),
    ];
    differential("prep_diff_reuse", &steps, &["42P05", "42P05", "42P05"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_unknown_names_are_26000_and_close_is_quiet() -> anyhow::Result<()> {
    let steps = [
        synced(&[bind_exec("nope", &[])]),
        synced(&[describe_msg(b'S', "nope")]),
        synced(&[close_msg(b'S', "nope")]),
        synced(&[
            parse("a", "select 1"),
            close_msg(b'S', "a"),
            parse("k", "select 9"),
        ]),
        Step::Switch,
        synced(&[bind_exec("a", &[])]),
        synced(&[
            bind_exec("k", &[]),
            close_msg(b'S', "k"),
            bind_exec("k", &[]),
        ]),
        synced(&[close_msg(b'S', "a")]),
        // The unnamed statement passes through as it is.
        synced(&[parse("", "select 5"), bind_exec("", &[])]),
        synced(&[describe_msg(b'S', "")]),
    ];
    differential(
        "prep_diff_unknown",
        &steps,
        &["26000", "26000", "26000", "26000"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_errors_in_a_transaction_block_abort_it() -> anyhow::Result<()> {
    let mut steps = vec![
        synced(&[parse("a", "select 1")]),
        Step::Switch,
        simple("begin"),
        synced(&[parse("a", "select 2")]),
        simple("select 1"),
        simple("rollback"),
    ];
    for unknown in [
        bind_exec("nope", &[]),
        describe_msg(b'S', "nope"),
        // The transaction is still good after the statement pgwarden prepared for this Bind.
        [bind_exec("a", &[]), bind_exec("nope", &[])].concat(),
    ] {
        steps.extend([
            simple("begin"),
            synced(&[unknown]),
            simple("select 1"),
            simple("rollback"),
        ]);
    }
    steps.extend([
        Step::Switch,
        simple("begin"),
        synced(&[bind_exec("a", &[])]),
        synced(&[close_msg(b'S', "nope")]),
        simple("commit"),
    ]);
    differential(
        "prep_diff_tx",
        &steps,
        &[
            "42P05", "25P02", "26000", "25P02", "26000", "25P02", "26000", "25P02",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_pipeline_error_skips_to_sync_and_forgets_skipped_parses() -> anyhow::Result<()>
{
    let steps = [
        synced(&[
            parse("a", "select 1"),
            bind_exec("a", &[]),
            parse("b", "selec 2"),
            bind_exec("b", &[]),
            parse("c", "select 3"),
            bind_exec("c", &[]),
        ]),
        // Neither the failed Parse nor the skipped one left a statement behind.
        synced(&[bind_exec("c", &[])]),
        synced(&[bind_exec("b", &[])]),
        Step::Switch,
        // On the other server: `a` is prepared first, the unknown name fails mid-batch, the rest is skipped.
        synced(&[
            bind_exec("a", &[]),
            bind_exec("nope", &[]),
            bind_exec("a", &[]),
        ]),
        synced(&[
            parse("c", "select 3"),
            bind_exec("c", &[]),
            bind_exec("a", &[]),
        ]),
        // Several batches in one write, the middle one failing.
        Step::Send(
            [
                bind_exec("c", &[]),
                sync_msg(),
                parse("d", "select 1/0"),
                bind_exec("d", &[]),
                bind_exec("a", &[]),
                sync_msg(),
                bind_exec("d", &[]),
                sync_msg(),
            ]
            .concat(),
            Until::Ready(3),
        ),
    ];
    differential(
        "prep_diff_pipe",
        &steps,
        &["42601", "26000", "26000", "26000", "22012", "22012"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_prepared_statement_survives_failing_statements() -> anyhow::Result<()> {
    let steps = [
        synced(&[parse("d", "select 10 / $1::int4")]),
        simple("select 1/0"),
        Step::Switch,
        synced(&[bind_exec("d", &["0"])]),
        synced(&[bind_exec("d", &["5"])]),
        simple("select nosuchcolumn"),
        synced(&[describe_msg(b'S', "d"), bind_exec("d", &["2"])]),
    ];
    differential("prep_diff_survive", &steps, &["22012", "22012", "42703"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_flush_driven_batches_like_asyncpg() -> anyhow::Result<()> {
    let flush = |msgs: &[Vec<u8>], n: usize| {
        let mut bytes = msgs.concat();
        bytes.extend(flush_msg());
        Step::Send(bytes, Until::Msgs(n))
    };
    let steps = [
        // ParseComplete, ParameterDescription, RowDescription before any Sync.
        flush(
            &[parse("a", "select $1::int4 * 2"), describe_msg(b'S', "a")],
            3,
        ),
        synced(&[bind_exec("a", &["21"])]),
        Step::Switch,
        // `a` described on a server that has not seen it.
        flush(&[describe_msg(b'S', "a")], 2),
        synced(&[bind_exec("a", &["5"])]),
        Step::Switch,
        // The same text under another name: the server has it already.
        flush(
            &[parse("b", "select $1::int4 * 2"), describe_msg(b'S', "b")],
            3,
        ),
        synced(&[bind_exec("b", &["4"])]),
        // An error in a flushed batch arrives at once; the rest waits for Sync.
        flush(
            &[parse("e", "select nosuchcolumn"), describe_msg(b'S', "e")],
            1,
        ),
        Step::Send(sync_msg(), Until::Ready(1)),
        synced(&[bind_exec("e", &[])]),
        flush(&[describe_msg(b'S', "nope")], 1),
        Step::Send(sync_msg(), Until::Ready(1)),
    ];
    differential("prep_diff_flush", &steps, &["42703", "26000", "26000"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_identical_statements_share_a_server_statement() -> anyhow::Result<()> {
    let steps = [
        synced(&[parse("a", "select 7")]),
        synced(&[parse("b", "select 7")]),
        // Closing one name must not close what the other still uses on the server.
        synced(&[close_msg(b'S', "a")]),
        synced(&[bind_exec("b", &[])]),
        Step::Switch,
        synced(&[bind_exec("b", &[])]),
        synced(&[describe_msg(b'S', "a")]),
        synced(&[
            parse("a", "select 8"),
            bind_exec("a", &[]),
            bind_exec("b", &[]),
        ]),
    ];
    differential("prep_diff_shared", &steps, &["26000"]).await
}

// ---------------------------------------------------------------------------------------------------
// Real clients
// ---------------------------------------------------------------------------------------------------

/// One transaction of the statements of `tokio_postgres_statements_follow_the_client_across_servers` with
/// argument `i`; returns the server's pid.
async fn run_add_cat(
    c: &Client,
    add: &tokio_postgres::Statement,
    cat: &tokio_postgres::Statement,
    i: i32,
) -> anyhow::Result<i32> {
    let pid = begin(c).await?;
    let sum: i32 = c.query_one(add, &[&i]).await?.get(0);
    assert_eq!(sum, i + 1);
    let text: String = c.query_one(cat, &[&format!("x{i}")]).await?.get(0);
    assert_eq!(text, format!("x{i}!"));
    c.batch_execute("commit").await?;
    Ok(pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_statements_follow_the_client_across_servers() -> anyhow::Result<()> {
    const ADD: &str = "select $1::int4 + 1";
    const CAT: &str = "select $1::text || '!'";
    let (db, pooler) = setup("prep_follow", "transaction", "default_pool_size = 2").await?;
    let a = pooler.connect_as(&db).await?;
    let add = a.prepare(ADD).await?;
    let cat = a.prepare(CAT).await?;
    let first = run_add_cat(&a, &add, &cat, 1).await?;

    let mut steer = Steer::new(&pooler, &db).await?;
    let second = steer.hold(first).await?;
    assert_eq!(run_add_cat(&a, &add, &cat, 2).await?, second);
    let on_second = server_statements(&a).await?;
    steer.hold(second).await?;
    assert_eq!(run_add_cat(&a, &add, &cat, 3).await?, first);
    let on_first = server_statements(&a).await?;
    steer.release().await?;

    for stmts in [&on_first, &on_second] {
        check_server_statements(stmts, 200)?;
        let texts: BTreeSet<&str> = stmts.iter().map(|(_, t)| t.as_str()).collect();
        assert!(
            texts.contains(ADD) && texts.contains(CAT),
            "both statements on both servers: {stmts:?}"
        );
    }

    // Another client preparing the same text and one of its own: served on the same server statement.
    let b = pooler.connect_as(&db).await?;
    let b_add = b.prepare(ADD).await?;
    let b_mul = b.prepare("select $1::int4 * 3").await?;
    steer.hold(second).await?;
    for i in 0..3 {
        assert_eq!(b.query_one(&b_add, &[&i]).await?.get::<_, i32>(0), i + 1);
        assert_eq!(b.query_one(&b_mul, &[&i]).await?.get::<_, i32>(0), i * 3);
        assert_eq!(server_pid(&b, "select pg_backend_pid()").await?, first);
    }
    let stmts = server_statements(&b).await?;
    check_server_statements(&stmts, 200)?;
    steer.release().await?;
    assert_eq!(run_add_cat(&a, &add, &cat, 4).await?.signum(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_may_use_the_same_name_for_different_statements() -> anyhow::Result<()> {
    let (db, pooler) = setup("prep_samename", "transaction", "default_pool_size = 1").await?;
    let params = [("user", db.user.as_str()), ("database", db.name.as_str())];
    let mut x = RawClient::connect(pooler.port).await?;
    x.login(&params, &db.password).await?;
    let mut y = RawClient::connect(pooler.port).await?;
    y.login(&params, &db.password).await?;
    for (c, text) in [(&mut x, "select 'x'"), (&mut y, "select 'y'")] {
        c.send(&[parse("q", text), sync_msg()].concat()).await?;
        assert_eq!(tags(&c.until_ready().await?), "1Z");
    }
    for _ in 0..3 {
        for (c, want) in [(&mut x, "x"), (&mut y, "y")] {
            c.send(&[bind_exec("q", &[]), sync_msg()].concat()).await?;
            let msgs = c.until_ready().await?;
            assert_eq!(tags(&msgs), "2DCZ", "{:?}", first_error(&msgs));
            assert_eq!(data_rows(&msgs), vec![vec![Some(want.to_owned())]]);
        }
    }
    Ok(())
}

/// Checks that running `stmt` fails as a plan whose result type changed does in PostgreSQL.
async fn outdated(client: &Client, stmt: &tokio_postgres::Statement) -> anyhow::Result<()> {
    let err = client
        .query(stmt, &[])
        .await
        .expect_err("old plan after DDL");
    let (code, message) = db_error(&err)?;
    ensure!(
        (code.as_str(), message.as_str()) == ("0A000", "cached plan must not change result type"),
        "{code} {message}"
    );
    Ok(())
}

/// DDL that changes a table's columns makes PostgreSQL fail a statement prepared before it with 0A000
/// "cached plan must not change result type", until the client prepares it again. pgwarden shares one
/// server statement among identical texts: the client that prepares the text again must get the new
/// plan, and another client's statement described before the change must keep failing as it would
/// without a pooler, never be handed rows of a shape it was not told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_prepared_again_after_ddl_gets_the_new_result_type() -> anyhow::Result<()> {
    const SELECT: &str = "select * from ddl_t order by a";
    let (db, pooler) = setup("prep_ddl", "transaction", "default_pool_size = 1").await?;
    let c = pooler.connect_as(&db).await?;
    let other = pooler.connect_as(&db).await?;
    c.batch_execute("create table ddl_t (a int); insert into ddl_t values (1)")
        .await?;
    let old_c = c.prepare(SELECT).await?;
    let old_other = other.prepare(SELECT).await?;
    for (client, stmt) in [(&c, &old_c), (&other, &old_other)] {
        assert_eq!(client.query(stmt, &[]).await?[0].len(), 1);
    }
    c.batch_execute("alter table ddl_t add column b int default 2")
        .await?;

    // The first use of the old plan fails on the server, as straight to PostgreSQL ...
    outdated(&c, &old_c).await?;
    // ... and the same text prepared again is planned afresh.
    let fresh_c = c.prepare(SELECT).await?;
    let rows = c.query(&fresh_c, &[]).await?;
    assert_eq!((rows[0].len(), rows[0].get::<_, i32>(1)), (2, 2));
    // The other client's statement was described with one column: it fails too, though the server's plan
    // is new by now; prepared again, it works.
    outdated(&other, &old_other).await?;
    let fresh_other = other.prepare(SELECT).await?;
    assert_eq!(other.query(&fresh_other, &[]).await?[0].len(), 2);
    // Old statements keep failing, as in PostgreSQL; the fresh ones keep working.
    outdated(&c, &old_c).await?;
    assert_eq!(c.query(&fresh_c, &[]).await?[0].len(), 2);
    check_server_statements(&server_statements(&c).await?, 200)?;
    Ok(())
}

/// asyncpg recovers from a schema change on its own (outside a transaction it prepares the statement again
/// and retries): through pgwarden it must see exactly what it sees straight to PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_statement_cache_survives_ddl_as_it_does_without_a_pooler() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (db, pooler) = setup("prep_ddl_asyncpg", "transaction", "default_pool_size = 2").await?;
    let direct = pooler
        .python("asyncpg_ddl.py", &db)?
        .target(pg.host(), pg.port(), &db.user, &db.password, &db.name)
        .timeout(SCRIPT_LIMIT)
        .run_results()
        .await?;
    let steps: Vec<String> = direct
        .iter()
        .map(|r| {
            let outcome = r.get("columns").or(r.get("error")).map_or("?", |v| v);
            format!("{}:{}:{outcome}", r["conn"], r["step"])
        })
        .collect();
    // What asyncpg gives with no pooler, for the record (the script's story).
    assert_eq!(
        steps,
        [
            "A:before:1",
            "A:before:1",
            "A:before:1",
            "B:before:1",
            "B:before:1",
            "B:before:1",
            "A:after_ddl:2",
            "A:again:2",
            "B:after_ddl:2",
            "B:again:2",
            "A:in_transaction:InvalidCachedStatementError",
            "A:after_rollback:3",
            "B:after_rollback:3",
        ]
    );
    let through = pooler
        .python("asyncpg_ddl.py", &db)?
        .timeout(SCRIPT_LIMIT)
        .run_results()
        .await?;
    assert_eq!(through, direct, "pgwarden (left) and PostgreSQL disagree");
    Ok(())
}

/// `pgbench -i` straight to PostgreSQL as the test's role.
async fn pgbench_init(db: &TestDb) -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let bench = Pgbench::new(pg.host(), pg.port(), db.user.clone(), db.name.clone())
        .password(db.password.clone());
    tokio::task::spawn_blocking(move || bench.init(1)).await??;
    Ok(())
}

/// TPC-B-like (seven statements a transaction), prepared, more clients than servers, a thread each.
fn tpcb_prepared(clients: u32, transactions: u32) -> BenchRun {
    BenchRun {
        clients,
        jobs: clients,
        length: BenchLength::Transactions(transactions),
        mode: QueryMode::Prepared,
        select_only: false,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_with_more_clients_than_servers() -> anyhow::Result<()> {
    let (db, pooler) = setup("prep_bench", "transaction", "default_pool_size = 2").await?;
    pgbench_init(&db).await?;
    let run = pooler.pgbench(&db).run_async(&tpcb_prepared(5, 40)).await?;
    run.ensure_clean()?;

    // Two statements a server at most: constant eviction, still no failure.
    let small = start_pooler(
        &db,
        "transaction",
        "default_pool_size = 2\nmax_prepared_statements = 2",
    )
    .await?;
    let run = small.pgbench(&db).run_async(&tpcb_prepared(5, 40)).await?;
    run.ensure_clean()?;

    let probe = small.connect_as(&db).await?;
    let mut steer = Steer::new(&small, &db).await?;
    let one = server_pid(&probe, "select pg_backend_pid()").await?;
    let two = steer.hold(one).await?;
    let on_two = server_statements(&probe).await?;
    assert_eq!(steer.hold(two).await?, one);
    let on_one = server_statements(&probe).await?;
    steer.release().await?;
    check_server_statements(&on_one, 2)?;
    check_server_statements(&on_two, 2)?;
    assert!(
        on_one.len() + on_two.len() > 0,
        "pgbench's statements were prepared on neither server"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_at_most_max_prepared_statements_per_server() -> anyhow::Result<()> {
    let (db, pooler) = setup(
        "prep_evict",
        "transaction",
        "default_pool_size = 1\nmax_prepared_statements = 2",
    )
    .await?;
    let c = pooler.connect_as(&db).await?;
    let mut stmts = Vec::new();
    for k in 0..5 {
        stmts.push(c.prepare(&format!("select $1::int4 + {k}")).await?);
    }
    for round in 0..3 {
        for (k, s) in stmts.iter().enumerate() {
            let got: i32 = c.query_one(s, &[&round]).await?.get(0);
            assert_eq!(got, round + k as i32);
        }
        assert!(server_statements(&c).await?.len() <= 2);
    }
    // In a transaction, and pipelined: statements evicted while later ones in the pipeline still need them.
    c.batch_execute("begin").await?;
    for round in 10..12 {
        let params: [&(dyn ToSql + Sync); 1] = [&round];
        let rows = try_join_all(stmts.iter().map(|s| c.query_one(s, &params))).await?;
        let got: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(got, (0..5).map(|k| round + k).collect::<Vec<_>>());
    }
    c.batch_execute("commit").await?;
    let params: [&(dyn ToSql + Sync); 1] = [&20i32];
    let rows = try_join_all(stmts.iter().rev().map(|s| c.query_one(s, &params))).await?;
    let got: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, vec![24, 23, 22, 21, 20]);

    let on_server = server_statements(&c).await?;
    check_server_statements(&on_server, 2)?;
    assert!(!on_server.is_empty(), "nothing prepared on the server");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bind_and_large_parse_through_named_statements_across_servers() -> anyhow::Result<()>
{
    let (db, pooler) = setup("prep_large", "transaction", "default_pool_size = 2").await?;
    let c = pooler.connect_as(&db).await?;
    let pad = "x".repeat(200_000);
    // A simple Query of that size first: pgwarden relays Query and Parse whole.
    let len = simple_column(&c, &format!("select length('{pad}')")).await?;
    assert_eq!(len, ["200000"]);
    let long_parse = c
        .prepare(&format!("select $1::int4 + length('{pad}')"))
        .await?;
    let digest = c
        .prepare("select length($1::text), encode(sha256(convert_to($1::text, 'UTF8')), 'hex')")
        .await?;
    let big: String = (0..2_000_000u32)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let want_hash: String = Sha256::digest(big.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let check = |row: &tokio_postgres::Row| {
        assert_eq!(row.get::<_, i32>(0), 2_000_000);
        assert_eq!(row.get::<_, String>(1), want_hash);
    };

    let first = begin(&c).await?;
    assert_eq!(
        c.query_one(&long_parse, &[&1]).await?.get::<_, i32>(0),
        200_001
    );
    check(&c.query_one(&digest, &[&big]).await?);
    c.batch_execute("commit").await?;

    let mut steer = Steer::new(&pooler, &db).await?;
    let second = steer.hold(first).await?;
    // On the other server, pipelined: pgwarden prepares both there before the 2 MB Bind and the Bind of
    // the 200 KB statement.
    let pid = begin(&c).await?;
    assert_eq!(pid, second);
    let (big_row, long_row) = futures_util::future::try_join(
        c.query_one(&digest, &[&big]),
        c.query_one(&long_parse, &[&2]),
    )
    .await?;
    check(&big_row);
    assert_eq!(long_row.get::<_, i32>(0), 200_002);
    c.batch_execute("commit").await?;
    steer.release().await?;

    let stmts = server_statements(&c).await?;
    check_server_statements(&stmts, 200)?;
    assert!(
        stmts.iter().any(|(_, t)| t.len() > 200_000),
        "the long statement is prepared on the server: {} statements",
        stmts.len()
    );
    Ok(())
}

/// A raw client runs `command` (DEALLOCATE ALL or DISCARD ALL): its statements are gone, the other client's
/// (the same SQL) on the same server still work.
async fn reset_command_drops_only_the_clients_statements(
    prefix: &str,
    command: &str,
) -> anyhow::Result<()> {
    const SQL: &str = "select $1::int4 + 100";
    let (db, pooler) = setup(prefix, "transaction", "default_pool_size = 1").await?;
    let other = pooler.connect_as(&db).await?;
    let theirs = other.prepare(SQL).await?;
    assert_eq!(other.query_one(&theirs, &[&1]).await?.get::<_, i32>(0), 101);

    let params = [("user", db.user.as_str()), ("database", db.name.as_str())];
    let mut c = RawClient::connect(pooler.port).await?;
    c.login(&params, &db.password).await?;
    c.send(
        &[
            parse("a", SQL),
            parse("b", "select 'b'"),
            bind_exec("a", &["2"]),
            sync_msg(),
        ]
        .concat(),
    )
    .await?;
    let msgs = c.until_ready().await?;
    assert_eq!(tags(&msgs), "112DCZ", "{:?}", first_error(&msgs));
    assert_eq!(data_rows(&msgs), vec![vec![Some("102".to_owned())]]);

    let msgs = c.query(command).await?;
    assert_eq!(tags(&msgs), "CZ", "{:?}", first_error(&msgs));
    assert_eq!(msgs[0].body, format!("{command}\0").into_bytes());

    for name in ["a", "b"] {
        c.send(&[bind_exec(name, &[]), sync_msg()].concat()).await?;
        let msgs = c.until_ready().await?;
        assert_eq!(tags(&msgs), "EZ");
        let e = first_error(&msgs).context("error")?;
        assert_eq!(
            (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
            (
                "ERROR",
                "26000",
                format!("prepared statement \"{name}\" does not exist").as_str()
            )
        );
    }
    // The other client's statement, same text, same server, still works.
    assert_eq!(other.query_one(&theirs, &[&3]).await?.get::<_, i32>(0), 103);
    // The names are free again.
    c.send(
        &[
            parse("a", "select 'again'"),
            bind_exec("a", &[]),
            sync_msg(),
        ]
        .concat(),
    )
    .await?;
    let msgs = c.until_ready().await?;
    assert_eq!(tags(&msgs), "12DCZ", "{:?}", first_error(&msgs));
    assert_eq!(other.query_one(&theirs, &[&4]).await?.get::<_, i32>(0), 104);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_drops_only_the_clients_statements() -> anyhow::Result<()> {
    reset_command_drops_only_the_clients_statements("prep_dealloc", "DEALLOCATE ALL").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_drops_only_the_clients_statements() -> anyhow::Result<()> {
    reset_command_drops_only_the_clients_statements("prep_discard", "DISCARD ALL").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_prepared_statements_0_forwards_names_unchanged() -> anyhow::Result<()> {
    let (db, pooler) = setup(
        "prep_off",
        "transaction",
        "default_pool_size = 2\nmax_prepared_statements = 0",
    )
    .await?;
    let c = pooler.connect_as(&db).await?;
    let first = begin(&c).await?;
    let add = c.prepare("select $1::int4 + 1").await?;
    assert_eq!(c.query_one(&add, &[&1]).await?.get::<_, i32>(0), 2);
    c.batch_execute("commit").await?;

    let mut steer = Steer::new(&pooler, &db).await?;
    let second = steer.hold(first).await?;
    assert_eq!(begin(&c).await?, second);
    let err = c
        .query_one(&add, &[&1])
        .await
        .expect_err("the statement lives on the other server only");
    let (code, message) = db_error(&err)?;
    assert_eq!(code, "26000", "{message}");
    let name = message
        .strip_prefix("prepared statement \"")
        .and_then(|m| m.strip_suffix("\" does not exist"))
        .with_context(|| format!("unexpected message {message:?}"))?
        .to_owned();
    c.batch_execute("rollback").await?;

    // The first server holds it under tokio-postgres's own name.
    assert_eq!(steer.hold(second).await?, first);
    let names: Vec<String> = server_statements(&c)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    steer.release().await?;
    assert!(names.contains(&name), "{name} not in {names:?}");
    assert!(!names.iter().any(|n| is_pgwarden_name(n)), "{names:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_forwards_names_unchanged() -> anyhow::Result<()> {
    let (db, pooler) = setup("prep_session", "session", "default_pool_size = 2").await?;
    let c = pooler.connect_as(&db).await?;
    let add = c.prepare("select $1::int4 + 1").await?;
    assert_eq!(c.query_one(&add, &[&41]).await?.get::<_, i32>(0), 42);
    let names: Vec<String> = server_statements(&c)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let n = &names[0];
    assert!(
        n.strip_prefix('s')
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
        "tokio-postgres's own name expected, got {n:?}"
    );
    Ok(())
}

/// libpq 17 and later end a pipeline's sync with Sync then Flush (psycopg 3 pipelines do this): the Flush
/// after the Sync owes no reply, so in transaction mode the server goes back to the pool at the
/// ReadyForQuery. An idle client must not keep it, nor one that then says goodbye.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_after_sync_leaves_the_server_to_others() -> anyhow::Result<()> {
    let (db, pooler) = setup("prep_flush", "transaction", "default_pool_size = 1").await?;
    let params = [("user", db.user.as_str()), ("database", db.name.as_str())];
    let mut a = RawClient::connect(pooler.port).await?;
    a.login(&params, &db.password).await?;
    a.send(
        &[
            parse("n", "select 1"),
            bind_exec("n", &[]),
            sync_msg(),
            flush_msg(),
        ]
        .concat(),
    )
    .await?;
    assert_eq!(tags(&a.until_ready().await?), "12DCZ");
    let limit = Duration::from_secs(5);
    let b = pooler.connect_as(&db).await?;
    let rows = tokio::time::timeout(limit, simple_column(&b, "select 2"))
        .await
        .context("the idle client still holds the only server")??;
    assert_eq!(rows, ["2"]);

    // The same client busy again, then leaving right after a Sync and Flush.
    a.send(&[bind_exec("n", &[]), sync_msg(), flush_msg()].concat())
        .await?;
    assert_eq!(tags(&a.until_ready().await?), "2DCZ");
    a.send(&frame_bytes(b'X', b"")).await?;
    crate::protocol::expect_closed(&mut a).await?;
    let rows = tokio::time::timeout(limit, simple_column(&b, "select 3"))
        .await
        .context("the server of the client that left was never given back")??;
    assert_eq!(rows, ["3"]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// psycopg 3
// ---------------------------------------------------------------------------------------------------

/// The script takes about a second; a stuck pipeline fails the test sooner than the default limit.
const SCRIPT_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_pipelines_with_prepare_and_errors() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (db, pooler) = setup("prep_psycopg", "transaction", "default_pool_size = 2").await?;
    // Straight to PostgreSQL first: what the script's statements give there, one session.
    let mut direct = pooler
        .python("psycopg3_prepared.py", &db)?
        .target(pg.host(), pg.port(), &db.user, &db.password, &db.name)
        .env("PGW_COUNT_PREPARED", "1")
        .timeout(SCRIPT_LIMIT)
        .run_results()
        .await?;
    let counted = direct.pop().context("no output")?;
    assert_eq!(counted["case"], "server_statements", "{direct:?}");
    // psycopg really prepared its statements (_pg3_0, ...): the last connection's are still there.
    assert!(counted["count"].parse::<i64>()? >= 1, "{direct:?}");
    let results: Vec<(&str, &str, &str)> = direct
        .iter()
        .map(|r| {
            (
                r["case"].as_str(),
                r["results"].as_str(),
                r["errors"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        results,
        [
            ("pipeline_error", "2,-,-,4|5", "42P01"),
            ("failed_prepare", "42P01,0,1", "-"),
            ("failed_prepare_pipeline", "1,-,-|0,1", "42P01"),
            ("same_names", "a1,b1,a2,b2,a3,b3", "-"),
            ("transaction", "11,22012,25P02|11", "-"),
        ]
    );

    let through = pooler
        .python("psycopg3_prepared.py", &db)?
        .timeout(SCRIPT_LIMIT)
        .run_results()
        .await?;
    assert_eq!(through, direct, "pgwarden (left) and PostgreSQL disagree");
    Ok(())
}
