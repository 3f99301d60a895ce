//! Client-side timeouts: each ends the client with PgBouncer's FATAL (SQLSTATE 08P01) once it has passed,
//! and leaves alone a client that stays within it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use pgwarden_tests::raw::RawClient;

use crate::pool_support::{
    WAIT, assert_fatal, connect_db, ended, finish, pool_of, scalar, setup, spawn_scalar,
    wait_queued, wait_until, watch_end,
};

/// Fails unless `elapsed` is at least most of `timeout` (it did not fire early) and not absurdly long.
fn assert_fired_after(elapsed: Duration, timeout: Duration) {
    assert!(
        elapsed >= timeout.mul_f64(0.8),
        "fired after {elapsed:?}, before the {timeout:?} timeout"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(5),
        "fired only after {elapsed:?} (timeout {timeout:?})"
    );
}

/// Reads what a raw client gets until the pooler closes it; returns the messages' tags and the error.
async fn raw_until_closed(
    raw: &mut RawClient,
) -> anyhow::Result<(Vec<u8>, Option<(String, String, String)>)> {
    let mut tags = Vec::new();
    let mut error = None;
    while let Some(m) = raw.recv().await? {
        tags.push(m.tag);
        if let Some(e) = m.error() {
            error = Some((e.severity, e.code, e.message));
        }
    }
    Ok((tags, error))
}

fn pooler_fatal(message: &str) -> Option<(String, String, String)> {
    Some(("FATAL".into(), "08P01".into(), message.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_login_timeout_closes_silent_and_stalled_logins() -> anyhow::Result<()> {
    let timeout = Duration::from_millis(500);
    let (db, pooler) = setup("logintimeout", "client_login_timeout = 0.5").await?;

    // Connects and sends nothing at all.
    let started = Instant::now();
    let mut silent = RawClient::connect(pooler.port).await?;
    let (tags, error) = raw_until_closed(&mut silent).await?;
    assert_fired_after(started.elapsed(), timeout);
    assert_eq!(tags, b"E");
    assert_eq!(error, pooler_fatal("client_login_timeout"));

    // Sends a startup packet, then never answers the password request.
    let started = Instant::now();
    let mut stalled = RawClient::connect(pooler.port).await?;
    stalled
        .send_startup(&[("user", &db.user), ("database", &db.name)])
        .await?;
    let (tags, error) = raw_until_closed(&mut stalled).await?;
    assert_fired_after(started.elapsed(), timeout);
    assert_eq!(tags, b"RE", "a password request, then the error");
    assert_eq!(error, pooler_fatal("client_login_timeout"));

    // Within the limit: a slowish login succeeds, and a logged-in client outlives the login timeout.
    let mut slow = RawClient::connect(pooler.port).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let msgs = slow
        .login(&[("user", &db.user), ("database", &db.name)], &db.password)
        .await?;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    let (client, _task) = connect_db(&pooler, &db).await?;
    tokio::time::sleep(timeout * 2).await;
    assert_eq!(scalar(&client, "SELECT 1").await?, "1");
    let msgs = slow.query("SELECT 1").await?;
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_closes_idle_clients_only() -> anyhow::Result<()> {
    let timeout = Duration::from_millis(500);
    let (db, pooler) = setup("clientidle", "client_idle_timeout = 0.5").await?;
    let (idle, idle_task) = connect_db(&pooler, &db).await?;
    let (busy, busy_task) = connect_db(&pooler, &db).await?;
    scalar(&idle, "SELECT 1").await?;
    let last_query = Instant::now();
    let idle_end = watch_end(idle_task);
    // The busy client keeps talking for three times the timeout.
    while last_query.elapsed() < timeout * 3 {
        assert_eq!(scalar(&busy, "SELECT 1").await?, "1");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(!busy_task.is_finished(), "the busy client was disconnected");
    let (at, error) = ended(idle_end, WAIT).await?;
    assert_fired_after(at - last_query, timeout);
    assert_fatal(&error, "08P01", "client_idle_timeout");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_ends_transactions_left_idle() -> anyhow::Result<()> {
    let timeout = Duration::from_millis(500);
    let (db, pooler) = setup("idletx", "idle_transaction_timeout = 0.5").await?;
    let pg = PgCluster::shared();
    pg.exec_async(
        &db.name,
        &format!("CREATE TABLE t (x int); ALTER TABLE t OWNER TO {}", db.user),
    )
    .await?;

    let (stuck, stuck_task) = connect_db(&pooler, &db).await?;
    stuck
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await?;
    let idle_since = Instant::now();
    let stuck_end = watch_end(stuck_task);
    // Within the limit: a transaction that keeps working, and a client idle outside any transaction.
    let (worker, _w) = connect_db(&pooler, &db).await?;
    let (resting, _r) = connect_db(&pooler, &db).await?;
    worker.batch_execute("BEGIN").await?;
    for i in 0..6 {
        worker
            .batch_execute(&format!("INSERT INTO t VALUES ({})", 10 + i))
            .await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    worker.batch_execute("COMMIT").await?;
    assert_eq!(scalar(&resting, "SELECT count(*) FROM t").await?, "6");

    let (at, error) = ended(stuck_end, WAIT).await?;
    assert_fired_after(at - idle_since, timeout);
    assert_fatal(&error, "08P01", "idle transaction timeout");
    // The server-side transaction is gone too.
    wait_until(
        "the idle transaction to end on the server",
        WAIT,
        || async {
            let n = pg
                .query_scalar_async(
                    "postgres",
                    &format!(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
                     AND state LIKE 'idle in transaction%'",
                        db.name
                    ),
                )
                .await?;
            Ok(n == "0")
        },
    )
    .await?;
    assert_eq!(scalar(&resting, "SELECT count(*) FROM t").await?, "6");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_ends_long_queries_only() -> anyhow::Result<()> {
    let timeout = Duration::from_millis(500);
    let (db, pooler) = setup("querytimeout", "query_timeout = 0.5").await?;
    let (quick, quick_task) = connect_db(&pooler, &db).await?;
    let (slow, _s) = connect_db(&pooler, &db).await?;
    // Within the limit: a short sleep, and a session of short queries longer than the timeout.
    let session = Instant::now();
    scalar(&quick, "SELECT pg_sleep(0.1)").await?;
    while session.elapsed() < timeout * 2 {
        scalar(&quick, "SELECT 1").await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!quick_task.is_finished());

    let started = Instant::now();
    let err = slow
        .simple_query("SELECT pg_sleep(30) AS slow_query_marker")
        .await
        .expect_err("a 30 s query outlived query_timeout");
    assert_fired_after(started.elapsed(), timeout);
    assert_fatal(&err, "08P01", "query timeout");
    // The query does not run on in the server.
    let pg = PgCluster::shared();
    wait_until(
        "the timed-out query to stop on the server",
        WAIT,
        || async {
            let n = pg
                .query_scalar_async(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE query LIKE '%slow_query_marker%' AND pid <> pg_backend_pid()",
                )
                .await?;
            Ok(n == "0")
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_ends_clients_waiting_too_long_for_a_server() -> anyhow::Result<()> {
    let timeout = Duration::from_secs(1);
    let (db, pooler) = setup("querywait", "default_pool_size = 1\nquery_wait_timeout = 1").await?;
    let (holder, _h) = connect_db(&pooler, &db).await?;
    holder.batch_execute("BEGIN; SELECT 1").await?;
    let pool = pool_of(&pooler, &db.name, &db.user)?;

    let (waiter, _w) = connect_db(&pooler, &db).await?;
    let started = Instant::now();
    let err = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("got a server the holder never released");
    assert_fired_after(started.elapsed(), timeout);
    assert_fatal(&err, "08P01", "query_wait_timeout");

    // Within the limit: a client whose wait ends before the timeout is served.
    let (patient, _p) = connect_db(&pooler, &db).await?;
    let patient = Arc::new(patient);
    let answer = spawn_scalar(&patient, "SELECT 2");
    wait_queued(&pool, 1).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    holder.batch_execute("COMMIT").await?;
    assert_eq!(finish(answer).await?, "2");

    // The deadline its wait had means nothing once it is served: not while it holds the server in a
    // transaction past that deadline, nor while it sits between transactions past the next wait's (served
    // 700 ms into that wait, the deadline passes before an idle client parks, which would drop its timer).
    patient.batch_execute("BEGIN").await?;
    tokio::time::sleep(timeout).await;
    assert_eq!(scalar(&patient, "SELECT 3").await?, "3");
    patient.batch_execute("COMMIT").await?;
    holder.batch_execute("BEGIN; SELECT 1").await?;
    let answer = spawn_scalar(&patient, "SELECT 4");
    wait_queued(&pool, 1).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    holder.batch_execute("COMMIT").await?;
    assert_eq!(finish(answer).await?, "4");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(scalar(&patient, "SELECT 5").await?, "5");
    Ok(())
}

/// PgBouncer counts the wait for a server against query_timeout too: a client queued behind a held server
/// is ended with "query_timeout" when that comes before query_wait_timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_also_bounds_the_wait_for_a_server() -> anyhow::Result<()> {
    let timeout = Duration::from_millis(700);
    let (db, pooler) = setup(
        "querytimeoutwait",
        "default_pool_size = 1\nquery_timeout = 0.7\nquery_wait_timeout = 30",
    )
    .await?;
    let (holder, _h) = connect_db(&pooler, &db).await?;
    holder.batch_execute("BEGIN; SELECT 1").await?;

    let (waiter, _w) = connect_db(&pooler, &db).await?;
    let started = Instant::now();
    let err = waiter
        .simple_query("SELECT 1")
        .await
        .expect_err("got a server the holder never released");
    assert_fired_after(started.elapsed(), timeout);
    assert_fatal(&err, "08P01", "query_timeout");
    // The holder's transaction is untouched.
    holder.batch_execute("COMMIT").await?;
    assert_eq!(scalar(&holder, "SELECT 3").await?, "3");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_ends_long_transactions_only() -> anyhow::Result<()> {
    let timeout = Duration::from_millis(600);
    let (db, pooler) = setup("txtimeout", "transaction_timeout = 0.6").await?;
    let (busy, _b) = connect_db(&pooler, &db).await?;
    let (idle, idle_task) = connect_db(&pooler, &db).await?;
    let (fine, fine_task) = connect_db(&pooler, &db).await?;

    // A transaction busy in one long statement, and one idle inside BEGIN.
    idle.batch_execute("BEGIN").await?;
    let idle_began = Instant::now();
    let idle_end = watch_end(idle_task);
    busy.batch_execute("BEGIN").await?;
    let busy_began = Instant::now();
    let busy_err = tokio::spawn(async move {
        let res = busy.simple_query("SELECT pg_sleep(30)").await;
        (Instant::now(), res)
    });

    // Within the limit: short transactions, for longer than the timeout in all.
    let session = Instant::now();
    while session.elapsed() < timeout * 2 {
        fine.batch_execute("BEGIN; SELECT pg_sleep(0.1); COMMIT")
            .await?;
    }
    assert!(!fine_task.is_finished());

    let (at, res) = tokio::time::timeout(WAIT, busy_err).await??;
    let err = res.expect_err("a 30 s transaction outlived transaction_timeout");
    assert_fired_after(at - busy_began, timeout);
    assert_fatal(&err, "08P01", "transaction timeout");
    let (at, error) = ended(idle_end, WAIT).await?;
    assert_fired_after(at - idle_began, timeout);
    assert_fatal(&error, "08P01", "transaction timeout");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_spares_a_session_client_holding_its_server() -> anyhow::Result<()> {
    // PgBouncer applies client_idle_timeout only to clients holding no server; a session-mode client
    // holds one for its whole session, so it is never idle-timed out (a transaction-mode client between
    // transactions is: see client_idle_timeout_closes_idle_clients_only).
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "idlesess", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &format!(
            "{} = host=127.0.0.1 port={} dbname={} pool_mode=session",
            db.name,
            pg.port(),
            db.name
        ),
        "client_idle_timeout = 0.3",
        &db.userlist_line(),
    )
    .await?;
    let (client, task) = connect_db(&pooler, &db).await?;
    assert_eq!(scalar(&client, "SELECT 1").await?, "1");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(!task.is_finished(), "the session client was disconnected");
    assert_eq!(scalar(&client, "SELECT 2").await?, "2");
    Ok(())
}
