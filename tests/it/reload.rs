//! Reload (SIGHUP's work, in-process): config and auth_file are read again; new users and databases work at
//! once, pool settings and connection targets change for the pools, an invalid file changes nothing, and
//! connected clients keep their transactions and sessions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb, write_config};
use tokio_postgres::{Client, SimpleQueryMessage};

const WAIT: Duration = Duration::from_secs(5);

fn db_line(pg: &PgCluster, alias: &str, dbname: &str) -> String {
    format!(
        "{alias} = host=127.0.0.1 port={} dbname={dbname}",
        pg.port()
    )
}

/// Rewrites the pooler's config files in place (same paths, same listener) for the next reload.
fn rewrite(pooler: &Pooler, databases: &str, settings: &str, userlist: &str) -> anyhow::Result<()> {
    write_config(&pooler.dir, pooler.port, databases, settings, userlist)?;
    Ok(())
}

/// First column of the first row of a simple query, as text.
async fn scalar(client: &Client, sql: &str) -> anyhow::Result<String> {
    for msg in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = msg {
            return Ok(row.get(0).context("NULL")?.to_owned());
        }
    }
    bail!("{sql:?} returned no rows")
}

fn db_error_of(err: &anyhow::Error) -> (String, String) {
    match err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
    {
        Some(db) => (db.code().code().to_owned(), db.message().to_owned()),
        None => panic!("not a server error: {err:#}"),
    }
}

/// The error a login that must fail gets.
fn refused(res: anyhow::Result<Client>) -> (String, String) {
    match res {
        Ok(_) => panic!("login succeeded, expected it to fail"),
        Err(e) => db_error_of(&e),
    }
}

/// A new user (auth_file line) and a new database ([databases] line) work right after the reload, while a
/// client in the middle of a transaction carries on and commits its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_user_and_database_while_a_transaction_stays_open() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "reload_add", PasswordEncryption::Md5)?;
    let newer = TestDb::create(pg, "reload_add_new", PasswordEncryption::Scram)?;
    let settings = "auth_type = md5\npool_mode = transaction";
    let databases = db_line(pg, &db.name, &db.name);
    let pooler = Pooler::start(&databases, settings, &db.userlist_line()).await?;

    let holder = pooler.connect_as(&db).await?;
    holder.batch_execute("CREATE TABLE t(v int)").await?;
    holder
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await?;

    // Before: neither the user nor the database is known.
    let (code, message) = refused(pooler.connect(&newer.user, &newer.password, &db.name).await);
    assert_eq!(code, "28P01", "{message}");
    let (code, message) = refused(pooler.connect(&db.user, &db.password, &newer.name).await);
    assert_eq!(
        (code.as_str(), message.as_str()),
        (
            "08P01",
            format!("no such database: {}", newer.name).as_str()
        )
    );

    rewrite(
        &pooler,
        &format!("{databases}\n{}", db_line(pg, &newer.name, &newer.name)),
        settings,
        &format!("{}{}", db.userlist_line(), newer.userlist_line()),
    )?;
    pooler.reload().await?;

    let as_new_user = pooler
        .connect(&newer.user, &newer.password, &db.name)
        .await?;
    assert_eq!(
        scalar(&as_new_user, "SELECT current_user").await?,
        newer.user
    );
    let on_new_db = pooler.connect(&db.user, &db.password, &newer.name).await?;
    assert_eq!(
        scalar(&on_new_db, "SELECT current_database()").await?,
        newer.name
    );

    // The transaction opened before the reload goes on and commits.
    assert_eq!(scalar(&holder, "SELECT count(*) FROM t").await?, "1");
    holder
        .batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await?;
    let reader = pooler.connect_as(&db).await?;
    assert_eq!(scalar(&reader, "SELECT sum(v) FROM t").await?, "3");
    Ok(())
}

/// Server connections open for database `db` (idle or busy): the pool's servers, since only the pooler
/// connects there.
async fn backends(pg: &PgCluster, db: &str) -> anyhow::Result<i64> {
    pg.backend_count_async(db).await
}

/// All `clients` run `rounds` short transactions at once; returns the most backends of `db` seen meanwhile,
/// both from inside those transactions and by a sampler on the side.
async fn burst(
    pg: &'static PgCluster,
    clients: &[Arc<Client>],
    rounds: usize,
    db: &str,
) -> anyhow::Result<i64> {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let db = db.to_owned();
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.load(Ordering::Acquire) {
                max = max.max(backends(pg, &db).await?);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(max)
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        let c = Arc::clone(c);
        tasks.spawn(async move {
            let mut max = 0i64;
            for _ in 0..rounds {
                let n = scalar(
                    &c,
                    "SELECT count(*) FROM pg_stat_activity, pg_sleep(0.05) \
                     WHERE datname = current_database() AND backend_type = 'client backend'",
                )
                .await?;
                max = max.max(n.parse()?);
            }
            anyhow::Ok(max)
        });
    }
    let mut max = 0;
    while let Some(res) = tasks.join_next().await {
        max = max.max(res??);
    }
    stop.store(true, Ordering::Release);
    Ok(max.max(sampler.await??))
}

/// default_pool_size raised and lowered by reload: a burst of six clients uses exactly as many servers as
/// the pool size in force, whatever the pool had before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_new_pool_size() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "reload_size", PasswordEncryption::Md5)?;
    let databases = db_line(pg, &db.name, &db.name);
    let settings =
        |size: u32| format!("auth_type = md5\npool_mode = transaction\ndefault_pool_size = {size}");
    let pooler = Pooler::start(&databases, &settings(2), &db.userlist_line()).await?;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(Arc::new(pooler.connect_as(&db).await?));
    }

    assert_eq!(burst(pg, &clients, 4, &db.name).await?, 2);

    rewrite(&pooler, &databases, &settings(4), &db.userlist_line())?;
    pooler.reload().await?;
    assert_eq!(burst(pg, &clients, 4, &db.name).await?, 4);

    rewrite(&pooler, &databases, &settings(1), &db.userlist_line())?;
    pooler.reload().await?;
    // The servers beyond the new size go (PgBouncer: "too many servers in the pool")...
    pg.wait_for_backend_count_async(&db.name, 1, WAIT).await?;
    // ...and a burst gets no more than one.
    assert_eq!(burst(pg, &clients, 3, &db.name).await?, 1);
    Ok(())
}

/// A changed connection target (dbname) retires the old servers: idle ones at once, the one in a transaction
/// when that transaction ends; the transaction itself finishes on the old database, the next goes to the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_new_dbname_closes_old_servers_at_release() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "reload_target", PasswordEncryption::Md5)?;
    let other = PgCluster::unique_name("reload_target_new");
    pg.create_database(&other, &db.user)?;
    let settings = "auth_type = md5\npool_mode = transaction\ndefault_pool_size = 4";
    let pooler =
        Pooler::start(&db_line(pg, "app", &db.name), settings, &db.userlist_line()).await?;

    let holder = pooler.connect(&db.user, &db.password, "app").await?;
    holder.batch_execute("BEGIN").await?;
    assert_eq!(scalar(&holder, "SELECT current_database()").await?, db.name);
    let other_client = pooler.connect(&db.user, &db.password, "app").await?;
    assert_eq!(
        scalar(&other_client, "SELECT current_database()").await?,
        db.name
    );
    // One server busy in the transaction, one idle.
    pg.wait_for_backend_count_async(&db.name, 2, WAIT).await?;

    rewrite(
        &pooler,
        &db_line(pg, "app", &other),
        settings,
        &db.userlist_line(),
    )?;
    pooler.reload().await?;

    pg.wait_for_backend_count_async(&db.name, 1, WAIT).await?;
    assert_eq!(scalar(&holder, "SELECT current_database()").await?, db.name);
    holder.batch_execute("COMMIT").await?;
    pg.wait_for_backend_count_async(&db.name, 0, WAIT).await?;

    assert_eq!(scalar(&holder, "SELECT current_database()").await?, other);
    assert_eq!(
        scalar(&other_client, "SELECT current_database()").await?,
        other
    );
    Ok(())
}

/// The line of `text` that starts with `prefix`, 1-based.
fn line_of(text: &str, prefix: &str) -> Option<u32> {
    let i = text.lines().position(|l| l.starts_with(prefix))?;
    u32::try_from(i + 1).ok()
}

/// An invalid file (a bad value, an unknown key) is rejected with an error naming file, line and key; the
/// running configuration stays in force, auth_file included, and keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_is_rejected_and_the_old_config_keeps_serving() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "reload_bad", PasswordEncryption::Md5)?;
    let newer = TestDb::create(pg, "reload_bad_user", PasswordEncryption::Md5)?;
    let databases = db_line(pg, &db.name, &db.name);
    let settings = "auth_type = md5\npool_mode = transaction";
    let pooler = Pooler::start(&databases, settings, &db.userlist_line()).await?;
    let connected = pooler.connect_as(&db).await?;
    let generation = pooler.state.runtime().generation;
    let both_users = format!("{}{}", db.userlist_line(), newer.userlist_line());

    for (bad_line, key, expected) in [
        (
            "default_pool_size = lots",
            "default_pool_size",
            "invalid value",
        ),
        ("no_such_setting = 1", "no_such_setting", "unknown setting"),
    ] {
        rewrite(
            &pooler,
            &databases,
            &format!("{settings}\n{bad_line}"),
            &both_users,
        )?;
        let text = std::fs::read_to_string(pooler.ini_path())?;
        let line = line_of(&text, bad_line);
        let err = match pooler.reload().await {
            Ok(()) => panic!("reload accepted {bad_line:?}"),
            Err(pgwarden::reload::ReloadError::Config(e)) => e,
            Err(other) => panic!("not a configuration error: {other}"),
        };
        let found = err.diagnostics.iter().find(|d| {
            d.file == pooler.ini_path() && d.line == line && d.key.as_deref() == Some(key)
        });
        let Some(found) = found else {
            panic!("no diagnostic for {key} at line {line:?}: {err}")
        };
        assert!(found.message.contains(expected), "{found}");
        let shown = err.to_string();
        let at = format!(
            "{}:{}: {key}: ",
            pooler.ini_path().display(),
            line.unwrap_or(0)
        );
        assert!(shown.contains(&at), "{shown}");

        assert_eq!(pooler.state.runtime().generation, generation);
        // Still serving, with the old auth_file: the new user is not known yet.
        assert_eq!(scalar(&connected, "SELECT 1").await?, "1");
        let fresh = pooler.connect_as(&db).await?;
        assert_eq!(scalar(&fresh, "SELECT current_user").await?, db.user);
        let (code, message) = refused(pooler.connect_as(&newer).await);
        assert_eq!(code, "28P01", "{message}");
    }

    rewrite(&pooler, &databases, settings, &both_users)?;
    pooler.reload().await?;
    assert!(pooler.state.runtime().generation > generation);
    let as_new = pooler
        .connect(&newer.user, &newer.password, &db.name)
        .await?;
    assert_eq!(scalar(&as_new, "SELECT current_user").await?, newer.user);
    assert_eq!(scalar(&connected, "SELECT 2").await?, "2");
    Ok(())
}

/// A session-mode client keeps its server, and so its session state (a SET), across reloads, even one that
/// changes the pool's connection target; that server is retired only when the client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_client_keeps_its_set_across_reloads() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "reload_session", PasswordEncryption::Md5)?;
    let newer = TestDb::create(pg, "reload_session_user", PasswordEncryption::Md5)?;
    let other = PgCluster::unique_name("reload_session_new");
    pg.create_database(&other, &db.user)?;
    let settings =
        |size: u32| format!("auth_type = md5\npool_mode = session\ndefault_pool_size = {size}");
    let pooler = Pooler::start(
        &db_line(pg, "app", &db.name),
        &settings(5),
        &db.userlist_line(),
    )
    .await?;

    let client = pooler.connect(&db.user, &db.password, "app").await?;
    client
        .batch_execute("SET statement_timeout = '4321ms'")
        .await?;
    let pid = scalar(&client, "SELECT pg_backend_pid()").await?;

    // A reload that changes pool settings and adds a user.
    rewrite(
        &pooler,
        &db_line(pg, "app", &db.name),
        &settings(3),
        &format!("{}{}", db.userlist_line(), newer.userlist_line()),
    )?;
    pooler.reload().await?;
    assert_eq!(scalar(&client, "SHOW statement_timeout").await?, "4321ms");
    assert_eq!(scalar(&client, "SELECT pg_backend_pid()").await?, pid);

    // A reload that points the pool at another database.
    rewrite(
        &pooler,
        &db_line(pg, "app", &other),
        &settings(3),
        &db.userlist_line(),
    )?;
    pooler.reload().await?;
    assert_eq!(scalar(&client, "SHOW statement_timeout").await?, "4321ms");
    assert_eq!(scalar(&client, "SELECT pg_backend_pid()").await?, pid);
    assert_eq!(scalar(&client, "SELECT current_database()").await?, db.name);

    // Once the client leaves, its old server goes, and new sessions land on the new database.
    drop(client);
    pg.wait_for_backend_count_async(&db.name, 0, WAIT).await?;
    let next = pooler.connect(&db.user, &db.password, "app").await?;
    assert_eq!(scalar(&next, "SELECT current_database()").await?, other);
    assert_eq!(scalar(&next, "SHOW statement_timeout").await?, "0");
    Ok(())
}
