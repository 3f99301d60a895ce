//! Smaller PgBouncer settings whose effect a client can see: disable_pqexec, login_notify_message,
//! query_wait_notify and autodb_idle_timeout.

use std::time::Duration;

use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use pgwarden_tests::raw::{RawClient, first_error};

use crate::pool_support::{WAIT, connect_db, entry, scalar, setup, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_pqexec_refuses_simple_queries_only() -> anyhow::Result<()> {
    let (db, pooler) = setup("pqexec", "disable_pqexec = 1").await?;
    // The extended protocol (tokio-postgres with parameters) works.
    let (client, _task) = connect_db(&pooler, &db).await?;
    let row = client.query_one("SELECT $1::int4 + 1", &[&41i32]).await?;
    assert_eq!(row.get::<_, i32>(0), 42);
    // A simple Query closes the client with PgBouncer's message.
    let mut raw = RawClient::connect(pooler.port).await?;
    raw.login(&[("user", &db.user), ("database", &db.name)], &db.password)
        .await?;
    let reply = raw.query("SELECT 1").await?;
    let e = first_error(&reply).expect("an error");
    assert_eq!(
        (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
        ("FATAL", "08P01", "PQexec disallowed")
    );
    assert!(raw.recv().await?.is_none(), "the client is closed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_notify_message_is_a_notice_before_the_first_ready_for_query() -> anyhow::Result<()> {
    let (db, pooler) = setup("loginnotice", "login_notify_message = You are on pgwarden").await?;
    let mut raw = RawClient::connect(pooler.port).await?;
    let msgs = raw
        .login(&[("user", &db.user), ("database", &db.name)], &db.password)
        .await?;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    let notice = tags
        .iter()
        .position(|&t| t == b'N')
        .expect("a NoticeResponse");
    assert_eq!(tags[notice - 1], b'K', "after BackendKeyData: {tags:?}");
    assert_eq!(tags[notice + 1], b'Z', "before ReadyForQuery: {tags:?}");
    let fields = pgwarden::protocol::backend::ErrorFields::parse(&msgs[notice].body)?;
    assert_eq!(fields.message, "You are on pgwarden");
    // Without the setting, no notice.
    let (db, pooler) = setup("nologinnotice", "").await?;
    let mut raw = RawClient::connect(pooler.port).await?;
    let msgs = raw
        .login(&[("user", &db.user), ("database", &db.name)], &db.password)
        .await?;
    assert!(msgs.iter().all(|m| m.tag != b'N'));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_notify_tells_a_queued_client_and_it_keeps_waiting() -> anyhow::Result<()> {
    let (db, pooler) = setup(
        "waitnotify",
        "default_pool_size = 1\nquery_wait_notify = 0.3",
    )
    .await?;
    let (holder, _h) = connect_db(&pooler, &db).await?;
    holder.batch_execute("BEGIN; SELECT 1").await?;
    let mut raw = RawClient::connect(pooler.port).await?;
    raw.login(&[("user", &db.user), ("database", &db.name)], &db.password)
        .await?;
    raw.send(&{
        let mut b = bytes::BytesMut::new();
        pgwarden::protocol::frontend::write_query(&mut b, "SELECT 7");
        b
    })
    .await?;
    let first = raw.recv().await?.expect("a message");
    assert_eq!(first.tag, b'N', "a notice while queued");
    let fields = pgwarden::protocol::backend::ErrorFields::parse(&first.body)?;
    assert_eq!(
        fields.message,
        "No server connection available in postgres backend, client being queued"
    );
    // Still waiting, not failed: once the holder commits, the query runs.
    holder.batch_execute("COMMIT").await?;
    let rest = raw.until_ready().await?;
    assert!(first_error(&rest).is_none(), "{rest:?}");
    assert!(rest.iter().any(|m| m.tag == b'D'), "a data row");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autodb_idle_timeout_frees_pools_made_from_the_fallback_entry() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "autodb", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &format!("* = host=127.0.0.1 port={}", pg.port()),
        "pool_mode = transaction\nautodb_idle_timeout = 0.5",
        &db.userlist_line(),
    )
    .await?;
    let (client, task) = connect_db(&pooler, &db).await?;
    assert_eq!(scalar(&client, "SELECT current_database()").await?, db.name);
    assert_eq!(
        pooler.state.pools.all().len(),
        1,
        "the automatic pool exists"
    );
    // While a client is connected the pool stays, however long.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(pooler.state.pools.all().len(), 1, "freed while in use");
    drop(client);
    let _ = task.await;
    wait_until("the automatic pool to be freed", WAIT, || async {
        Ok(pooler.state.pools.all().is_empty())
    })
    .await?;
    wait_until("its servers to be closed", WAIT, || async {
        Ok(pg.backend_count_async(&db.name).await? == 0)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_entry_startup_settings_reach_the_server_and_the_client() -> anyhow::Result<()> {
    // client_encoding, datestyle, timezone and application_name of a [databases] entry are asked of the
    // server at login, so clients that do not set them see the entry's values.
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "entryparams", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &entry(
            pg,
            &db,
            "timezone=Asia/Tokyo datestyle='SQL, DMY' client_encoding=LATIN1 application_name=from_entry",
        ),
        "pool_mode = transaction",
        &db.userlist_line(),
    )
    .await?;
    let mut raw = RawClient::connect(pooler.port).await?;
    let msgs = raw
        .login(&[("user", &db.user), ("database", &db.name)], &db.password)
        .await?;
    let told = pgwarden_tests::raw::parameter_statuses(&msgs);
    let get = |k: &str| told.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("TimeZone"), Some("Asia/Tokyo"));
    assert_eq!(get("DateStyle"), Some("SQL, DMY"));
    assert_eq!(get("client_encoding"), Some("LATIN1"));
    assert_eq!(get("application_name"), Some("from_entry"));
    let (client, _task) = connect_db(&pooler, &db).await?;
    assert_eq!(scalar(&client, "SHOW TimeZone").await?, "Asia/Tokyo");
    assert_eq!(
        scalar(
            &client,
            "SELECT setting FROM pg_settings WHERE name = 'DateStyle'"
        )
        .await?,
        "SQL, DMY"
    );
    Ok(())
}
