//! Protocol 3.0 through the pooler: encryption requests answered 'N', newer protocol versions negotiated
//! down, simple and pipelined extended queries, COPY both ways, notices, ParameterStatus, Terminate, and
//! what malformed or oversized frames get: a FATAL protocol violation for that client only, never an
//! effect on the others.
//!
//! The small raw-protocol helpers here are shared with the `params` and `cancel` modules.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, TryStreamExt, future::join_all};
use pgwarden::protocol::{frontend, startup};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb, fresh_dir};
use pgwarden_tests::raw::{Msg, RawClient, first_error, frame_bytes, parameter_statuses};
use tokio::task::JoinHandle;
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

// ---------------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------------

/// A fresh database on the shared cluster and a pooler in front of it: md5 auth, transaction pooling,
/// plus `settings`.
pub(crate) async fn setup(prefix: &str, settings: &str) -> anyhow::Result<(TestDb, Pooler)> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
    let pooler = start_pooler(&db, settings).await?;
    Ok((db, pooler))
}

/// Another pooler (own config) in front of an existing test database.
pub(crate) async fn start_pooler(db: &TestDb, settings: &str) -> anyhow::Result<Pooler> {
    let pg = PgCluster::shared();
    Pooler::start(
        &format!(
            "{0} = host=127.0.0.1 port={1} dbname={0}",
            db.name,
            pg.port()
        ),
        &format!("auth_type = md5\npool_mode = transaction\n{settings}"),
        &db.userlist_line(),
    )
    .await
}

/// A raw client logged in with `user`, `database` and `extra` startup parameters.
pub(crate) async fn raw_login(
    pooler: &Pooler,
    db: &TestDb,
    extra: &[(&str, &str)],
) -> anyhow::Result<(RawClient, Vec<Msg>)> {
    let mut c = RawClient::connect(pooler.port).await?;
    let mut params = vec![("user", db.user.as_str()), ("database", db.name.as_str())];
    params.extend_from_slice(extra);
    let msgs = c.login(&params, &db.password).await?;
    ensure!(
        msgs.last().map(|m| m.tag) == Some(b'Z'),
        "login failed: {:?}",
        first_error(&msgs)
    );
    Ok((c, msgs))
}

/// The message tags, as a string ("TDCZ").
pub(crate) fn tags(msgs: &[Msg]) -> String {
    msgs.iter().map(|m| char::from(m.tag)).collect()
}

/// The text columns of every DataRow among `msgs` (`None` for NULL).
pub(crate) fn data_rows(msgs: &[Msg]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            let b = &m.body;
            let n = i16::from_be_bytes([b[0], b[1]]) as usize;
            let mut at = 2;
            (0..n)
                .map(|_| {
                    let len = i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
                    at += 4;
                    if len < 0 {
                        return None;
                    }
                    let v = String::from_utf8_lossy(&b[at..at + len as usize]).into_owned();
                    at += len as usize;
                    Some(v)
                })
                .collect()
        })
        .collect()
}

/// Runs a query that must return exactly one row; its text columns (NULL as "<null>").
pub(crate) async fn raw_row(c: &mut RawClient, sql: &str) -> anyhow::Result<Vec<String>> {
    let msgs = c.query(sql).await?;
    if let Some(e) = first_error(&msgs) {
        bail!("{sql}: {e}");
    }
    let rows = data_rows(&msgs);
    ensure!(rows.len() == 1, "{sql}: {} rows: {msgs:?}", rows.len());
    Ok(rows[0]
        .iter()
        .map(|v| v.clone().unwrap_or_else(|| "<null>".into()))
        .collect())
}

/// Expects a FATAL protocol violation (SQLSTATE 08P01) whose message contains `message_part`, then the
/// connection closing.
pub(crate) async fn expect_fatal_then_close(
    c: &mut RawClient,
    message_part: &str,
) -> anyhow::Result<()> {
    let m = c
        .recv()
        .await?
        .with_context(|| format!("closed without an ErrorResponse (expected {message_part:?})"))?;
    let e = m
        .error()
        .with_context(|| format!("expected an ErrorResponse, got {m:?}"))?;
    ensure!(
        e.severity == "FATAL" && e.code == "08P01" && e.message.contains(message_part),
        "expected FATAL 08P01 containing {message_part:?}, got {e}"
    );
    expect_closed(c).await
}

/// Expects the server side to close the connection (EOF, or a reset after unread input).
pub(crate) async fn expect_closed(c: &mut RawClient) -> anyhow::Result<()> {
    match c.recv().await {
        Ok(None) => Ok(()),
        Ok(Some(m)) => bail!("connection still open, got {m:?}"),
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Waits (polling) until `cond` holds, or fails after `limit`.
pub(crate) async fn wait_until<F, Fut>(
    what: &str,
    limit: Duration,
    mut cond: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the backend with process id `pid` of database `db` is running `query` (state active).
pub(crate) async fn wait_for_active_query(db: &str, pid: i32, query: &str) -> anyhow::Result<()> {
    let admin = PgCluster::shared().admin_client("postgres").await?;
    let admin = &admin;
    wait_until(
        &format!("backend {pid} to run {query:?}"),
        Duration::from_secs(5),
        move || async move {
            let row = admin
                .query_one(
                    "select count(*) from pg_stat_activity \
                     where datname = $1 and pid = $2 and state = 'active' and query = $3",
                    &[&db, &pid, &query],
                )
                .await?;
            Ok(row.get::<_, i64>(0) == 1)
        },
    )
    .await
}

fn put_cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

/// Parse: statement name, SQL, parameter type OIDs.
pub(crate) fn parse_msg(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_cstr(&mut b, name);
    put_cstr(&mut b, sql);
    b.put_i16(types.len() as i16);
    for t in types {
        b.put_u32(*t);
    }
    frame_bytes(b'P', &b)
}

/// Bind with text parameters and text results.
pub(crate) fn bind_msg(portal: &str, statement: &str, params: &[Option<&str>]) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_cstr(&mut b, portal);
    put_cstr(&mut b, statement);
    b.put_i16(0);
    b.put_i16(params.len() as i16);
    for p in params {
        match p {
            Some(v) => {
                b.put_i32(v.len() as i32);
                b.put_slice(v.as_bytes());
            }
            None => b.put_i32(-1),
        }
    }
    b.put_i16(0);
    frame_bytes(b'B', &b)
}

/// Describe ('S' statement or 'P' portal).
pub(crate) fn describe_msg(kind: u8, name: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(kind);
    put_cstr(&mut b, name);
    frame_bytes(b'D', &b)
}

pub(crate) fn execute_msg(portal: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    put_cstr(&mut b, portal);
    b.put_i32(0);
    frame_bytes(b'E', &b)
}

/// Close ('S' statement or 'P' portal).
pub(crate) fn close_msg(kind: u8, name: &str) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(kind);
    put_cstr(&mut b, name);
    frame_bytes(b'C', &b)
}

pub(crate) fn sync_msg() -> Vec<u8> {
    frame_bytes(b'S', b"")
}

pub(crate) fn flush_msg() -> Vec<u8> {
    frame_bytes(b'H', b"")
}

/// A StartupMessage with any protocol version code.
fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u32(0);
    b.put_u32(version);
    for (k, v) in params {
        put_cstr(&mut b, k);
        put_cstr(&mut b, v);
    }
    b.put_u8(0);
    let len = b.len() as u32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.to_vec()
}

/// Answers the pooler's password request (md5 or cleartext) after a hand-sent StartupMessage; returns
/// every message up to ReadyForQuery or an error.
async fn finish_login(c: &mut RawClient, db: &TestDb) -> anyhow::Result<Vec<Msg>> {
    c.finish_login(&db.user, &db.password).await
}

/// A tokio-postgres client whose notices are collected on a channel.
async fn connect_with_notices(
    pooler: &Pooler,
    db: &TestDb,
) -> anyhow::Result<(
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<DbError>,
)> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pooler.port)
        .user(&db.user)
        .password(&db.password)
        .dbname(&db.name);
    let (client, mut conn) = tokio::time::timeout(Duration::from_secs(10), config.connect(NoTls))
        .await
        .context("connect timed out")??;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match msg {
                Ok(AsyncMessage::Notice(n)) => {
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok((client, rx))
}

/// A well-behaved client that keeps running queries in the same pool until told to stop: whatever other
/// clients do must not disturb it.
pub(crate) struct Bystander {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicI64>,
    task: JoinHandle<anyhow::Result<i64>>,
}

impl Bystander {
    pub(crate) async fn start(pooler: &Pooler, db: &TestDb) -> anyhow::Result<Self> {
        let client = pooler.connect_as(db).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicI64::new(0));
        let (stop2, done2) = (Arc::clone(&stop), Arc::clone(&done));
        let task = tokio::spawn(async move {
            let mut n: i64 = 0;
            while !stop2.load(Ordering::Acquire) {
                // Simple protocol: one message a query, so no statement can be left on a server that a
                // misbehaving client's session then takes down.
                let msgs = client
                    .simple_query(&format!("select {n} + 1"))
                    .await
                    .with_context(|| format!("bystander query #{n}"))?;
                let answer = msgs.iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                });
                ensure!(
                    answer == Some((n + 1).to_string()),
                    "bystander got a wrong answer: {answer:?}"
                );
                n += 1;
                done2.store(n, Ordering::Release);
            }
            Ok(n)
        });
        let me = Self { stop, done, task };
        me.wait_for_progress().await?;
        Ok(me)
    }

    /// Waits until the bystander has completed a few more queries than now.
    pub(crate) async fn wait_for_progress(&self) -> anyhow::Result<()> {
        let from = self.done.load(Ordering::Acquire);
        wait_until(
            "the bystander to make progress",
            Duration::from_secs(8),
            || {
                let finished = self.task.is_finished();
                let n = self.done.load(Ordering::Acquire);
                async move {
                    ensure!(!finished, "the bystander stopped early");
                    Ok(n >= from + 3)
                }
            },
        )
        .await
    }

    /// Stops it; fails if any of its queries failed.
    pub(crate) async fn finish(self) -> anyhow::Result<i64> {
        self.stop.store(true, Ordering::Release);
        self.task.await?
    }
}

// ---------------------------------------------------------------------------------------------------
// Encryption requests and protocol negotiation
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_refused_then_login_proceeds_in_plain_text()
-> anyhow::Result<()> {
    let (db, pooler) = setup("proto_ssl", "default_pool_size = 1").await?;
    let params = [("user", db.user.as_str()), ("database", db.name.as_str())];

    // SSLRequest → 'N', then a plain StartupMessage on the same connection.
    let mut c = RawClient::connect(pooler.port).await?;
    let mut b = BytesMut::new();
    startup::write_ssl_request(&mut b);
    c.send(&b).await?;
    assert_eq!(c.read_byte().await?, b'N');
    let msgs = c.login(&params, &db.password).await?;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    assert_eq!(raw_row(&mut c, "select 40 + 2").await?, ["42"]);

    // GSSENCRequest → 'N', then SSLRequest → 'N' (libpq's order with gssencmode=prefer), then plain login.
    let mut c = RawClient::connect(pooler.port).await?;
    let mut gss = BytesMut::new();
    gss.put_u32(8);
    gss.put_u32(startup::GSSENC_REQUEST_CODE);
    c.send(&gss).await?;
    assert_eq!(c.read_byte().await?, b'N');
    c.send(&b).await?;
    assert_eq!(c.read_byte().await?, b'N');
    let msgs = c.login(&params, &db.password).await?;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    assert_eq!(
        raw_row(&mut c, "select current_user").await?,
        [db.user.as_str()]
    );

    // Plain-text bytes pipelined behind an SSLRequest are refused (no buffer stuffing before a handshake).
    let mut c = RawClient::connect(pooler.port).await?;
    let mut both = b.clone();
    startup::write_startup(&mut both, params);
    c.send(&both).await?;
    assert_eq!(
        c.read_byte().await?,
        b'E',
        "the SSLRequest must not be answered 'N'"
    );
    // The tag is consumed: read the rest of the ErrorResponse byte by byte.
    let mut len = [0u8; 4];
    for x in &mut len {
        *x = c.read_byte().await?;
    }
    let mut body = Vec::new();
    for _ in 4..u32::from_be_bytes(len) {
        body.push(c.read_byte().await?);
    }
    let e = pgwarden::protocol::backend::ErrorFields::parse(&body)?;
    assert_eq!(
        (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
        (
            "FATAL",
            "08P01",
            "received unencrypted data after SSL request"
        )
    );
    expect_closed(&mut c).await?;

    // libpq: sslmode=prefer falls back to plain text; sslmode=require is told there is no SSL here.
    let mut psql = pooler.psql(&db);
    psql.env.push(("PGSSLMODE".into(), "prefer".into()));
    assert_eq!(psql.run_ok_async("select 'plain'").await?, "plain");
    let mut psql = pooler.psql(&db);
    psql.env.push(("PGSSLMODE".into(), "require".into()));
    let out = psql.run_async("select 1").await?;
    assert!(!out.success(), "sslmode=require must fail: {out:?}");
    assert!(
        out.stderr
            .contains("server does not support SSL, but SSL was required"),
        "{}",
        out.stderr
    );
    Ok(())
}

/// The body of a NegotiateProtocolVersion: (newest version, unsupported options).
fn parse_negotiate(m: &Msg) -> anyhow::Result<(u32, Vec<String>)> {
    ensure!(
        m.tag == b'v',
        "expected NegotiateProtocolVersion, got {m:?}"
    );
    let b = &m.body;
    let version = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let n = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
    let options: Vec<String> = b[8..]
        .split(|&c| c == 0)
        .take(n)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    ensure!(
        b[8..].iter().filter(|&&c| c == 0).count() == n,
        "option count does not match the strings: {m:?}"
    );
    Ok((version, options))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_protocol_and_pq_options_get_negotiate_protocol_version_then_login()
-> anyhow::Result<()> {
    let (db, pooler) = setup("proto_nego", "default_pool_size = 1").await?;
    let base = [("user", db.user.as_str()), ("database", db.name.as_str())];
    let v3_0 = 3 << 16;
    let v3_2 = (3 << 16) | 2;
    /// (version code, extra startup parameters, options to be reported unsupported)
    type Case<'a> = (u32, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case<'_>; 3] = [
        (
            v3_2,
            &[("_pq_.test_protocol_option", "on")],
            &["_pq_.test_protocol_option"],
        ),
        (v3_2, &[], &[]),
        (v3_0, &[("_pq_.other", "1")], &["_pq_.other"]),
    ];
    for (version, extra, unsupported) in cases {
        let mut params = base.to_vec();
        params.extend_from_slice(extra);
        let mut c = RawClient::connect(pooler.port).await?;
        c.send(&startup_packet(version, &params)).await?;
        let msgs = finish_login(&mut c, &db).await?;
        let what = format!("version {:#x} with {extra:?}", version);
        let (newest, options) = parse_negotiate(&msgs[0]).context(what.clone())?;
        assert_eq!(newest, v3_0, "{what}: newest minor must be 3.0");
        assert_eq!(options, unsupported, "{what}");
        assert_eq!(
            tags(&msgs).matches('v').count(),
            1,
            "{what}: {}",
            tags(&msgs)
        );
        assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{what}: {msgs:?}");
        let key = msgs
            .iter()
            .find(|m| m.tag == b'K')
            .context("no BackendKeyData")?;
        assert_eq!(key.body.len(), 8, "{what}: a 3.0 BackendKeyData");
        assert_eq!(
            raw_row(&mut c, "select 'after negotiation'").await?,
            ["after negotiation"]
        );
    }
    // Plain 3.0 without options: no NegotiateProtocolVersion at all.
    let (_, msgs) = raw_login(&pooler, &db, &[]).await?;
    assert!(!tags(&msgs).contains('v'), "{}", tags(&msgs));
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_multi_statement_errors_and_empty_query() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_simple", "default_pool_size = 1").await?;
    let (mut c, _) = raw_login(&pooler, &db, &[]).await?;

    let msgs = c
        .query("select 1 as a; select 'two' as b, null as c")
        .await?;
    assert_eq!(tags(&msgs), "TDCTDCZ");
    assert_eq!(
        data_rows(&msgs),
        vec![vec![Some("1".into())], vec![Some("two".into()), None]]
    );

    // An error stops the rest of the string; the session goes on.
    let msgs = c.query("select 1; select 1/0; select 3").await?;
    assert_eq!(tags(&msgs), "TDCEZ");
    let e = first_error(&msgs).context("no error")?;
    assert_eq!((e.severity.as_str(), e.code.as_str()), ("ERROR", "22012"));
    assert_eq!(msgs.last().map(|m| m.body.clone()), Some(b"I".to_vec()));

    let msgs = c.query("").await?;
    assert_eq!(tags(&msgs), "IZ", "EmptyQueryResponse");

    // A transaction over several Query messages keeps its server and reports its status.
    let msgs = c.query("begin; select 5").await?;
    assert_eq!(msgs.last().map(|m| m.body.clone()), Some(b"T".to_vec()));
    let msgs = c.query("select 1/0").await?;
    assert_eq!(msgs.last().map(|m| m.body.clone()), Some(b"E".to_vec()));
    let msgs = c.query("rollback").await?;
    assert_eq!(tags(&msgs), "CZ");
    assert_eq!(msgs.last().map(|m| m.body.clone()), Some(b"I".to_vec()));
    Ok(())
}

/// 40 queries at once on one client. join_all polls every future before any answer arrives, so
/// tokio-postgres writes all their Parse/Describe/Sync and Bind/Execute/Sync batches back to back on one
/// connection.
async fn concurrent_products(
    client: &tokio_postgres::Client,
    k: i32,
) -> Vec<anyhow::Result<(i32, i32, i32)>> {
    join_all((0..40).map(move |i| async move {
        let row = client
            .query_one("select $1::int4 * $2::int4, $1::int4", &[&i, &k])
            .await?;
        anyhow::Ok((i, row.get::<_, i32>(0), row.get::<_, i32>(1)))
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_pipelines_concurrent_queries_through_one_server() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_pipe", "default_pool_size = 1").await?;
    let a = pooler.connect_as(&db).await?;
    let b = pooler.connect_as(&db).await?;
    let (ra, rb) = tokio::join!(concurrent_products(&a, 2), concurrent_products(&b, 3));
    for (k, results) in [(2, ra), (3, rb)] {
        for r in results {
            let (i, product, echo) = r?;
            assert_eq!((product, echo), (i * k, i), "client ×{k}, query {i}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_pipeline_of_batches_in_one_write_is_answered_in_order() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_rawpipe", "default_pool_size = 1").await?;
    let (mut c, _) = raw_login(&pooler, &db, &[]).await?;
    let mut w = Vec::new();
    // Batch 1: unnamed statement, one int parameter.
    w.extend(parse_msg("", "select $1::int4 + 1 as n", &[23]));
    w.extend(bind_msg("", "", &[Some("41")]));
    w.extend(describe_msg(b'P', ""));
    w.extend(execute_msg(""));
    w.extend(sync_msg());
    // Batch 2: a text parameter.
    w.extend(parse_msg("", "select upper($1::text) as s", &[]));
    w.extend(bind_msg("", "", &[Some("second")]));
    w.extend(execute_msg(""));
    w.extend(sync_msg());
    // Batch 3: fails at run time; the rest of the batch is skipped up to its Sync.
    w.extend(parse_msg("", "select 10 / $1::int4", &[]));
    w.extend(bind_msg("", "", &[Some("0")]));
    w.extend(execute_msg(""));
    w.extend(sync_msg());
    // Batch 4: named statement, Describe, Close.
    w.extend(parse_msg("pipe_st", "select $1::text || '!' as e", &[]));
    w.extend(describe_msg(b'S', "pipe_st"));
    w.extend(bind_msg("", "pipe_st", &[Some("fourth")]));
    w.extend(execute_msg(""));
    w.extend(close_msg(b'S', "pipe_st"));
    w.extend(sync_msg());
    c.send(&w).await?;

    let b1 = c.until_ready().await?;
    assert_eq!(tags(&b1), "12TDCZ");
    assert_eq!(data_rows(&b1), vec![vec![Some("42".into())]]);
    let b2 = c.until_ready().await?;
    assert_eq!(tags(&b2), "12DCZ");
    assert_eq!(data_rows(&b2), vec![vec![Some("SECOND".into())]]);
    let b3 = c.until_ready().await?;
    let t3 = tags(&b3);
    assert!(t3.starts_with('1') && t3.ends_with("EZ"), "{t3}");
    assert_eq!(first_error(&b3).map(|e| e.code), Some("22012".into()));
    let b4 = c.until_ready().await?;
    assert_eq!(tags(&b4), "1tT2DC3Z");
    assert_eq!(data_rows(&b4), vec![vec![Some("fourth!".into())]]);

    // Nothing more is pending: the next query gets exactly its own answer.
    assert_eq!(tags(&c.query("select 1").await?), "TDCZ");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_describe_flush_is_answered_before_sync() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_flush", "default_pool_size = 1").await?;
    let (mut c, _) = raw_login(&pooler, &db, &[]).await?;
    let mut w = parse_msg("flush_st", "select $1::text as v, 7 as n", &[]);
    w.extend(describe_msg(b'S', "flush_st"));
    w.extend(flush_msg());
    c.send(&w).await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(5), c.recv())
            .await
            .context("no answer to Flush before Sync")??
            .context("closed")?;
        got.push(m);
    }
    assert_eq!(
        tags(&got),
        "1tT",
        "ParseComplete, ParameterDescription, RowDescription"
    );

    let mut w = bind_msg("", "flush_st", &[Some("hello")]);
    w.extend(execute_msg(""));
    w.extend(sync_msg());
    c.send(&w).await?;
    let msgs = c.until_ready().await?;
    assert_eq!(tags(&msgs), "2DCZ");
    assert_eq!(
        data_rows(&msgs),
        vec![vec![Some("hello".into()), Some("7".into())]]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// COPY
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_with_tokio_postgres_in_transaction_mode() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_copy", "default_pool_size = 1").await?;
    let client = pooler.connect_as(&db).await?;
    let other = pooler.connect_as(&db).await?;
    client
        .batch_execute("create table items (id int primary key, payload text not null)")
        .await?;

    let mut small = String::new();
    for i in 0..3000 {
        small.push_str(&format!("{i}\trow number {i}\n"));
    }
    // One row far above 64 KiB: a single CopyData frame each way that the pooler streams.
    let big = format!("3000\t{}\n", "x".repeat(300_000));
    let sink = client.copy_in("COPY items FROM STDIN").await?;
    let mut sink = std::pin::pin!(sink);
    for chunk in small.as_bytes().chunks(10_000) {
        sink.send(Bytes::copy_from_slice(chunk)).await?;
    }
    sink.send(Bytes::from(big.clone())).await?;
    let rows = sink.as_mut().finish().await?;
    assert_eq!(rows, 3001);

    // Another client gets the (only) server in between: the COPY left it clean.
    assert_eq!(
        other
            .query_one("select count(*) from items", &[])
            .await?
            .get::<_, i64>(0),
        3001
    );

    let out: Vec<Bytes> = client
        .copy_out("COPY (select id, payload from items order by id) TO STDOUT")
        .await?
        .try_collect()
        .await?;
    let got: Vec<u8> = out.concat();
    let expected = format!("{small}{big}");
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected.as_bytes(),
        "COPY TO STDOUT differs from what went in"
    );
    assert_eq!(
        client
            .query_one("select 1::int4", &[])
            .await?
            .get::<_, i32>(0),
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_from_file_and_to_stdout() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_psqlcopy", "default_pool_size = 1").await?;
    let psql = pooler.psql(&db);
    psql.run_ok_async("create table t (id int, name text)")
        .await?;
    let dir = fresh_dir("psqlcopy")?;
    let file = dir.join("in.csv");
    let mut csv = String::new();
    for i in 0..2000 {
        csv.push_str(&format!("{i},\"name, {i}\"\n"));
    }
    std::fs::write(&file, &csv)?;
    psql.run_ok_async(&format!("\\copy t from '{}' csv", file.display()))
        .await?;
    let out = psql
        .run_ok_async("\\copy (select * from t order by id) to stdout csv")
        .await?;
    assert_eq!(format!("{out}\n"), csv);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_fail_from_the_client_ends_the_copy_and_the_session_goes_on() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_copyfail", "default_pool_size = 1").await?;
    let (mut c, _) = raw_login(&pooler, &db, &[]).await?;
    assert_eq!(tags(&c.query("create table cf (i int)").await?), "CZ");
    let mut q = BytesMut::new();
    frontend::write_query(&mut q, "COPY cf FROM STDIN");
    c.send(&q).await?;
    let m = c.recv().await?.context("closed")?;
    assert_eq!(m.tag, b'G', "CopyInResponse: {m:?}");
    let mut w = frame_bytes(b'd', b"1\n2\n");
    w.extend(frame_bytes(b'f', b"client gave up\0"));
    c.send(&w).await?;
    let msgs = c.until_ready().await?;
    assert_eq!(tags(&msgs), "EZ");
    let e = first_error(&msgs).context("no error")?;
    assert_eq!(e.code, "57014");
    assert!(e.message.contains("client gave up"), "{e}");
    assert_eq!(raw_row(&mut c, "select count(*) from cf").await?, ["0"]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Asynchronous messages, Terminate
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_the_client() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_notice", "default_pool_size = 1").await?;
    let (client, mut notices) = connect_with_notices(&pooler, &db).await?;
    client
        .batch_execute(
            "DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; RAISE WARNING 'careful'; END $$",
        )
        .await?;
    let first = notices.recv().await.context("no notice")?;
    assert_eq!(
        (first.severity(), first.code().code(), first.message()),
        ("NOTICE", "00000", "hello from plpgsql")
    );
    let second = notices.recv().await.context("no warning")?;
    assert_eq!(
        (second.severity(), second.code().code(), second.message()),
        ("WARNING", "01000", "careful")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_application_name_sends_parameter_status_to_the_client() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_pstatus", "default_pool_size = 1").await?;
    let (mut c, _) = raw_login(&pooler, &db, &[("application_name", "before")]).await?;
    let msgs = c.query("SET application_name = 'after'").await?;
    assert_eq!(
        parameter_statuses(&msgs),
        vec![("application_name".to_owned(), "after".to_owned())]
    );
    let t = tags(&msgs);
    assert!(t == "CSZ" || t == "SCZ", "{t}");
    assert_eq!(
        raw_row(&mut c, "select current_setting('application_name')").await?,
        ["after"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_closes_the_client_and_keeps_the_server() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_term", "default_pool_size = 1").await?;
    let (mut a, _) = raw_login(&pooler, &db, &[]).await?;
    let pid = raw_row(&mut a, "select pg_backend_pid()").await?.remove(0);
    let mut x = BytesMut::new();
    frontend::write_terminate(&mut x);
    a.send(&x).await?;
    expect_closed(&mut a).await?;

    // Terminate inside a transaction: the client goes, the transaction is rolled back.
    let (mut b, _) = raw_login(&pooler, &db, &[]).await?;
    let msgs = b
        .query("begin; create table dropped_with_tx (i int)")
        .await?;
    assert_eq!(msgs.last().map(|m| m.body.clone()), Some(b"T".to_vec()));
    b.send(&x).await?;
    expect_closed(&mut b).await?;

    let c = pooler.connect_as(&db).await?;
    let row = c
        .query_one(
            "select pg_backend_pid()::text, to_regclass('dropped_with_tx') is null",
            &[],
        )
        .await?;
    assert_eq!(
        row.get::<_, String>(0),
        pid,
        "the server was kept, not closed"
    );
    assert!(row.get::<_, bool>(1), "the transaction was rolled back");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Malformed and oversized frames
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_max_packet_size_is_refused_with_08p01() -> anyhow::Result<()> {
    let (db, pooler) = setup(
        "proto_maxpkt",
        "default_pool_size = 1\nmax_packet_size = 4096",
    )
    .await?;
    let bystander = Bystander::start(&pooler, &db).await?;

    // Within the limit: fine.
    let (mut c, _) = raw_login(&pooler, &db, &[]).await?;
    let fits = format!("select length('{}')", "a".repeat(3000));
    assert_eq!(raw_row(&mut c, &fits).await?, ["3000"]);

    // Over it, between transactions: refused before the body is even read.
    let big = format!("select length('{}')", "a".repeat(5000));
    let mut q = BytesMut::new();
    frontend::write_query(&mut q, &big);
    c.send(&q).await?;
    expect_fatal_then_close(&mut c, "over max_packet_size 4096").await?;
    bystander.wait_for_progress().await?;

    // Over it, inside a transaction (while holding the pool's only server).
    let (mut c, _) = raw_login(&pooler, &db, &[]).await?;
    assert_eq!(tags(&c.query("begin").await?), "CZ");
    c.send(&parse_msg("", &big, &[])).await?;
    expect_fatal_then_close(&mut c, "over max_packet_size 4096").await?;
    bystander.wait_for_progress().await?;

    let (mut after, _) = raw_login(&pooler, &db, &[]).await?;
    assert_eq!(
        raw_row(&mut after, "select 'still serving'").await?,
        ["still serving"]
    );
    bystander.finish().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_a_protocol_violation_and_spare_other_clients() -> anyhow::Result<()> {
    let (db, pooler) = setup("proto_malformed", "default_pool_size = 1").await?;
    let bystander = Bystander::start(&pooler, &db).await?;

    // Garbage instead of a startup packet.
    let startup_cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "invalid length of startup packet: 1195725856",
        ),
        (
            "a length below 8",
            vec![0, 0, 0, 3, 0],
            "invalid length of startup packet: 3",
        ),
        (
            "the old 2.0 protocol",
            startup_packet(2 << 16, &[("user", &db.user)]),
            "unsupported frontend protocol 2.0",
        ),
        (
            "a parameter list without its terminator",
            {
                let mut p = startup_packet(3 << 16, &[("user", &db.user)]);
                p.pop();
                let len = p.len() as u32;
                p[..4].copy_from_slice(&len.to_be_bytes());
                p
            },
            "invalid startup packet layout: expected terminator as last byte",
        ),
    ];
    for (what, bytes, message) in startup_cases {
        let mut c = RawClient::connect(pooler.port).await?;
        c.send(&bytes).await?;
        expect_fatal_then_close(&mut c, message)
            .await
            .context(what)?;
        bystander.wait_for_progress().await.context(what)?;
    }

    // Bad frames from a logged-in client, between transactions and inside one.
    let bad_length = vec![b'Q', 0, 0, 0, 3];
    let unknown_type = frame_bytes(b'z', b"junk");
    let password = frame_bytes(b'p', b"secret\0");
    let huge = vec![b'Q', 0xff, 0xff, 0xff, 0xf0];
    let frame_cases: [(&str, &[u8], &str); 4] = [
        (
            "a length below 4",
            &bad_length,
            "invalid message length 3 for message type 'Q'",
        ),
        (
            "an unknown message type",
            &unknown_type,
            "unknown packet type 'z' from client",
        ),
        (
            "a password message after login",
            &password,
            "unknown packet type 'p' from client",
        ),
        (
            "a length over the default max_packet_size",
            &huge,
            "over max_packet_size 2147483647",
        ),
    ];
    for in_tx in [false, true] {
        for (what, bytes, message) in &frame_cases {
            let what = format!("{what} (in a transaction: {in_tx})");
            let (mut c, _) = raw_login(&pooler, &db, &[]).await?;
            if in_tx {
                assert_eq!(tags(&c.query("begin; select 1").await?), "CTDCZ");
            }
            c.send(bytes).await?;
            expect_fatal_then_close(&mut c, message)
                .await
                .context(what.clone())?;
            bystander.wait_for_progress().await.context(what)?;
        }
    }

    // A newcomer is served as usual, and the bystander never saw an error.
    let late = pooler.connect_as(&db).await?;
    assert_eq!(
        late.query_one("select 'fine'::text", &[])
            .await?
            .get::<_, String>(0),
        "fine"
    );
    let ran = bystander.finish().await?;
    assert!(ran > 0);
    Ok(())
}
