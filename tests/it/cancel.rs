//! Cancel requests: each client gets pgwarden's own BackendKeyData; a CancelRequest with it stops that
//! client's running query, and only that: a stale key, a wrong secret or an unknown pid never cancels
//! anything, least of all another client's query on the same server.

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use pgwarden::protocol::backend::parse_backend_key_data;
use pgwarden::protocol::{frontend, startup};
use pgwarden_tests::pooler::Pooler;
use pgwarden_tests::raw::{RawClient, first_error};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::protocol::{expect_closed, raw_login, raw_row, setup, wait_for_active_query};

/// Sends a CancelRequest straight to the pooler and waits until it has dealt with it (it closes the
/// connection without a word once the cancel is forwarded or dropped).
async fn raw_cancel(pooler: &Pooler, pid: u32, secret: u32) -> anyhow::Result<()> {
    let mut c = RawClient::connect(pooler.port).await?;
    let mut b = BytesMut::new();
    startup::write_cancel(&mut b, pid, secret);
    c.send(&b).await?;
    expect_closed(&mut c).await
}

/// The BackendKeyData a login handed out.
fn key_of(msgs: &[pgwarden_tests::raw::Msg]) -> anyhow::Result<(u32, u32)> {
    let k = msgs
        .iter()
        .find(|m| m.tag == b'K')
        .context("no BackendKeyData at login")?;
    Ok(parse_backend_key_data(&k.body)?)
}

/// Starts `sql` on a raw client without waiting for the answer.
async fn send_query(c: &mut RawClient, sql: &str) -> anyhow::Result<()> {
    let mut q = BytesMut::new();
    frontend::write_query(&mut q, sql);
    c.send(&q).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_pgwarden_keys_not_the_servers() -> anyhow::Result<()> {
    let (db, pooler) = setup("cancel_keys", "default_pool_size = 1").await?;
    let (mut a, msgs_a) = raw_login(&pooler, &db, &[]).await?;
    let (mut b, msgs_b) = raw_login(&pooler, &db, &[]).await?;
    let (pid_a, secret_a) = key_of(&msgs_a)?;
    let (pid_b, secret_b) = key_of(&msgs_b)?;
    let server_a: u32 = raw_row(&mut a, "select pg_backend_pid()").await?[0].parse()?;
    let server_b: u32 = raw_row(&mut b, "select pg_backend_pid()").await?[0].parse()?;
    assert_eq!(server_a, server_b, "one server for both");
    assert_ne!(pid_a, server_a, "A was given the server's pid");
    assert_ne!(pid_b, server_b, "B was given the server's pid");
    assert_ne!((pid_a, secret_a), (pid_b, secret_b), "two clients, one key");
    assert_ne!(pid_a, pid_b);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_the_clients_running_query() -> anyhow::Result<()> {
    let (db, pooler) = setup("cancel_stop", "default_pool_size = 1").await?;
    let client = pooler.connect_as(&db).await?;
    let server_pid = client
        .query_one("select pg_backend_pid()", &[])
        .await?
        .get::<_, i32>(0);
    let token = client.cancel_token();
    let started = Instant::now();
    let (res, ()) = tokio::join!(client.simple_query("select pg_sleep(30)"), async {
        wait_for_active_query(&db.name, server_pid, "select pg_sleep(30)")
            .await
            .expect("the query never started");
        token.cancel_query(NoTls).await.expect("cancel_query");
    });
    let err = res.expect_err("pg_sleep(30) was not cancelled");
    let dberr = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(dberr.code(), &SqlState::QUERY_CANCELED, "{dberr}");
    assert_eq!(dberr.message(), "canceling statement due to user request");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "cancelled only after {:?}",
        started.elapsed()
    );
    // The client and its session carry on.
    assert_eq!(
        client
            .query_one("select 7::int4", &[])
            .await?
            .get::<_, i32>(0),
        7
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_cancel_key_never_cancels_another_clients_query() -> anyhow::Result<()> {
    let (db, pooler) = setup("cancel_stale", "default_pool_size = 1").await?;
    let a = pooler.connect_as(&db).await?;
    let b = pooler.connect_as(&db).await?;
    // A runs a query on the pool's only server and goes idle; the server goes back to the pool.
    let server_pid = a
        .query_one("select pg_backend_pid()", &[])
        .await?
        .get::<_, i32>(0);
    let a_token = a.cancel_token();

    // B's query runs on that same server while A's key is used.
    let started = Instant::now();
    let (res, ()) = tokio::join!(b.simple_query("select pg_sleep(1)"), async {
        wait_for_active_query(&db.name, server_pid, "select pg_sleep(1)")
            .await
            .expect("B's query never started on the server A used");
        a_token.cancel_query(NoTls).await.expect("cancel_query");
    });
    res.context("B's query was cancelled by A's key")?;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "B's pg_sleep(1) ended early"
    );
    // A's key did not linger either: A works and so does B.
    assert_eq!(
        b.query_one("select pg_backend_pid()", &[])
            .await?
            .get::<_, i32>(0),
        server_pid
    );
    assert_eq!(
        a.query_one("select 1::int4", &[]).await?.get::<_, i32>(0),
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_wrong_secret_or_unknown_pid_does_nothing() -> anyhow::Result<()> {
    let (db, pooler) = setup("cancel_wrong", "default_pool_size = 1").await?;
    let (mut c, msgs) = raw_login(&pooler, &db, &[]).await?;
    let (pid, secret) = key_of(&msgs)?;
    let server_pid: i32 = raw_row(&mut c, "select pg_backend_pid()").await?[0].parse()?;

    send_query(&mut c, "select pg_sleep(1)").await?;
    wait_for_active_query(&db.name, server_pid, "select pg_sleep(1)").await?;
    raw_cancel(&pooler, pid, secret ^ 1).await?;
    raw_cancel(&pooler, pid ^ 0x0100_0000, secret).await?;
    raw_cancel(&pooler, server_pid as u32, secret).await?;
    // Each cancel was fully handled (the pooler closed its connection) before the query's second was up.
    let msgs = c.until_ready().await?;
    assert!(
        first_error(&msgs).is_none(),
        "the query was cancelled: {:?}",
        first_error(&msgs)
    );

    // The right key does cancel (so the requests above were well-formed and reached the pooler).
    let started = Instant::now();
    send_query(&mut c, "select pg_sleep(30)").await?;
    wait_for_active_query(&db.name, server_pid, "select pg_sleep(30)").await?;
    raw_cancel(&pooler, pid, secret).await?;
    let msgs = c.until_ready().await?;
    let e = first_error(&msgs).context("the right key did not cancel")?;
    assert_eq!(e.code, "57014", "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    Ok(())
}
