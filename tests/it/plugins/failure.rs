//! The failure policy, with the misbehaving `testing` plugin: a policy that traps, spins past its
//! deadline or exhausts its memory cap denies the query (never lets it through) and the session goes on;
//! `on_error = allow` lets it through instead; a failing router refuses the connection and a failing
//! auth plugin the login; an init that refuses its configuration stops the pooler from starting. And the
//! sandbox: no filesystem, no network, a clock stuck at the epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use tokio_postgres::{Client, Config};

use super::support::{Counts, TESTING, assert_error, plugin};
use crate::pool_support::{assert_login_refused, db_line, entry, scalar, userlist_line};

const TRAPPED: &str = "it trapped (a panic, or it ran out of memory)";

/// A database with table `t(v text)` and a pooler in transaction mode with two aliases: the database's
/// own name, where the testing plugin (every hook) runs with `timeout = 50ms`, `memory_limit = 16MiB` and
/// `extra` lines, and `<name>_oom`, where the same component as plugin `oom` checks queries with
/// `memory_limit = 16MiB` and a deadline long enough that on a busy machine the memory cap, not the
/// clock, is what stops a run for memory (the deadline is wall-clock ticks).
async fn start(prefix: &str, extra: &str) -> anyhow::Result<(&'static PgCluster, TestDb, Pooler)> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
    pg.exec(
        &db.name,
        &format!("CREATE TABLE t(v text); ALTER TABLE t OWNER TO {}", db.user),
    )?;
    let databases = format!(
        "{}\n{}",
        entry(pg, &db, ""),
        db_line(pg, &format!("{}_oom", db.name), &db.name, "")
    );
    let pooler = Pooler::start_with_plugins(
        &databases,
        "pool_mode = transaction\nauth_type = md5\ndefault_pool_size = 2",
        &db.userlist_line(),
        &format!(
            "plugin.testing.path = {TESTING}\nplugin.testing.databases = {db}\n\
             plugin.testing.timeout = 50ms\nplugin.testing.memory_limit = 16MiB\n\
             plugin.oom.path = {TESTING}\nplugin.oom.databases = {db}_oom\nplugin.oom.hooks = policy\n\
             plugin.oom.timeout = 5s\nplugin.oom.memory_limit = 16MiB\n{extra}",
            db = db.name
        ),
    )
    .await?;
    Ok((pg, db, pooler))
}

/// What t holds, as the superuser sees it.
async fn rows(pg: &PgCluster, db: &TestDb) -> anyhow::Result<String> {
    pg.query_scalar_async(
        &db.name,
        "SELECT coalesce(string_agg(v, ',' ORDER BY v), '') FROM t",
    )
    .await
}

/// Another client of the same pool running queries until stopped; returns how many it ran and the
/// first failure, if any.
fn bystander(
    client: Client,
) -> (
    Arc<AtomicBool>,
    tokio::task::JoinHandle<(u64, Option<String>)>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::clone(&stop);
    let ran = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(async move {
        while !done.load(Ordering::Relaxed) {
            // Simple protocol: transaction pooling does not keep a named statement between the Parse
            // and the Bind of another transaction (no max_prepared_statements support).
            match client.simple_query("SELECT count(*) FROM t").await {
                Ok(_) => {
                    ran.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return (ran.load(Ordering::Relaxed), Some(format!("{e:?}"))),
            }
        }
        (ran.load(Ordering::Relaxed), None)
    });
    (stop, task)
}

/// A trap and a run past the deadline, each as an INSERT that must not run, and the refusal.
fn failures() -> [(&'static str, String); 2] {
    [
        (
            "INSERT INTO t VALUES ('pgwarden_test_trap')",
            format!("query refused: plugin \"testing\" failed: {TRAPPED}"),
        ),
        (
            "INSERT INTO t VALUES ('pgwarden_test_loop')",
            "query refused: plugin \"testing\" ran out of time (50ms)".to_owned(),
        ),
    ]
}

const OOM: &str = "INSERT INTO t VALUES ('pgwarden_test_oom')";

/// A trap, a loop past 50 ms and a run past 16 MiB each deny the query with XX000 and a message naming
/// the plugin and what happened, over simple and extended protocol; nothing is inserted, the same
/// session's next query works, and a bystander on the same pool never fails. The counters: every call
/// counted, failures as errors, allowed queries as allows, a denial as a denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_policy_denies_and_the_session_goes_on() -> anyhow::Result<()> {
    let (pg, db, pooler) = start("plug_fail_policy", "").await?;
    let p = plugin(&pooler, "testing")?;
    let oom = plugin(&pooler, "oom")?;
    let client = pooler.connect_as(&db).await?;
    let oom_client = pooler
        .connect(&db.user, &db.password, &format!("{}_oom", db.name))
        .await?;
    // Counted after every login (the testing plugin routes them too) and before the bystander starts
    // (its first query may be checked at once).
    let bystander_client = pooler.connect_as(&db).await?;
    let before = Counts::of(&p.stats);
    let oom_before = Counts::of(&oom.stats);
    let (stop, watcher) = bystander(bystander_client);

    let oom_refusal = format!("query refused: plugin \"oom\" failed: {TRAPPED}");
    assert_error(
        oom_client.batch_execute(OOM).await,
        "XX000",
        &oom_refusal,
        OOM,
    );
    assert_error(
        oom_client.execute(OOM, &[]).await,
        "XX000",
        &oom_refusal,
        OOM,
    );
    assert_eq!(scalar(&oom_client, "SELECT 'next'").await?, "next");
    assert_eq!(
        Counts::of(&oom.stats).since(oom_before),
        Counts {
            calls: 3,
            allows: 1,
            denials: 0,
            errors: 2
        }
    );
    for (sql, message) in failures() {
        let started = Instant::now();
        assert_error(client.batch_execute(sql).await, "XX000", &message, sql);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{sql}: refused after {:?}",
            started.elapsed()
        );
        assert_error(client.execute(sql, &[]).await, "XX000", &message, sql);
        assert_eq!(
            scalar(&client, "SELECT 'next'").await?,
            "next",
            "after {sql}"
        );
    }
    assert_eq!(
        rows(pg, &db).await?,
        "",
        "a failing policy let an INSERT through"
    );
    // The refusal carries the hint.
    let err = client
        .batch_execute("SELECT 'pgwarden_test_trap'")
        .await
        .expect_err("trap allowed");
    assert_eq!(
        err.as_db_error().and_then(|d| d.hint()),
        Some("a query policy plugin failed, and pgwarden refuses queries it could not check")
    );
    assert_error(
        client.batch_execute("SELECT 'pgwarden_test_deny'").await,
        "42501",
        "denied by testing plugin",
        "deny",
    );
    stop.store(true, Ordering::Relaxed);
    let (ran, failed) = watcher.await?;
    let counted = Counts::of(&p.stats).since(before);
    assert_eq!(failed, None, "the bystander failed");
    assert!(ran > 0, "the bystander ran nothing");
    // 2 failures × 2 protocols + the extra trap; 2 'next' + the bystander's queries allowed; the deny.
    assert_eq!(counted.errors, 5, "{counted:?}");
    assert_eq!(counted.denials, 1, "{counted:?}");
    assert_eq!(counted.allows, 2 + ran, "{counted:?}, bystander ran {ran}");
    assert_eq!(
        counted.calls,
        counted.errors + counted.denials + counted.allows,
        "{counted:?}"
    );
    Ok(())
}

/// `on_error = allow`: the same failures let the query through (the rows are inserted), still counted
/// as errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_policy_with_on_error_allow_lets_the_query_through() -> anyhow::Result<()> {
    let (pg, db, pooler) = start("plug_fail_allow", "plugin.testing.on_error = allow").await?;
    let p = plugin(&pooler, "testing")?;
    let client = pooler.connect_as(&db).await?;
    let before = Counts::of(&p.stats);
    for sql in failures().map(|(sql, _)| sql).into_iter().chain([OOM]) {
        client.batch_execute(sql).await?;
    }
    assert_eq!(
        rows(pg, &db).await?,
        "pgwarden_test_loop,pgwarden_test_oom,pgwarden_test_trap"
    );
    assert_eq!(Counts::of(&p.stats).since(before).errors, 3);
    // A plugin's own denial is still a denial.
    assert_error(
        client.batch_execute("SELECT 'pgwarden_test_deny'").await,
        "42501",
        "denied by testing plugin",
        "deny",
    );
    Ok(())
}

/// A router that traps or spins refuses the connection with 08004 and the reason; other clients connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_router_refuses_the_connection() -> anyhow::Result<()> {
    let (_pg, db, pooler) = start("plug_fail_router", "").await?;
    let p = plugin(&pooler, "testing")?;
    let before = Counts::of(&p.stats);
    for (app, message) in [
        (
            "pgwarden_test_trap",
            format!("connection refused: plugin \"testing\" failed: {TRAPPED}"),
        ),
        (
            "pgwarden_test_loop",
            "connection refused: plugin \"testing\" ran out of time (50ms)".to_owned(),
        ),
    ] {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(pooler.port)
            .user(&db.user)
            .password(&db.password)
            .dbname(&db.name)
            .application_name(app)
            .connect_timeout(Duration::from_secs(10));
        let err = pgwarden_tests::clients::connect_config(&config)
            .await
            .err()
            .unwrap_or_else(|| panic!("{app}: connected"));
        assert_login_refused(&err, "08004", &message);
    }
    assert_eq!(Counts::of(&p.stats).since(before).errors, 2);
    let client = pooler.connect_as(&db).await?;
    assert_eq!(scalar(&client, "SELECT 'fine'").await?, "fine");
    Ok(())
}

/// An auth plugin that traps, spins or fails refuses the login of the user it was asked about with
/// 28000 and the reason; a user it knows logs in to the pooler (the secret it gives is checked), and
/// userlist users are not asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_auth_plugin_refuses_the_login() -> anyhow::Result<()> {
    let (_pg, db, pooler) = start("plug_fail_auth", "").await?;
    for (user, why) in [
        (
            "pgwarden_test_trap",
            format!("plugin \"testing\" failed: {TRAPPED}"),
        ),
        (
            "pgwarden_test_loop",
            "plugin \"testing\" ran out of time (50ms)".to_owned(),
        ),
        ("pgwarden_test_error", "testing: lookup failed".to_owned()),
    ] {
        let err = pooler
            .connect(user, "whatever", &db.name)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user} logged in"));
        assert_login_refused(
            &err,
            "28000",
            &format!("could not look up user \"{user}\": {why}"),
        );
    }
    // The plugin's secret is used: a wrong password is refused as one.
    let err = pooler
        .connect("pgwarden_test_secret_s3cret", "wrong", &db.name)
        .await
        .expect_err("wrong password accepted");
    assert_login_refused(
        &err,
        "28P01",
        "password authentication failed for user \"pgwarden_test_secret_s3cret\"",
    );
    let client = pooler.connect_as(&db).await?;
    assert_eq!(scalar(&client, "SELECT 'fine'").await?, "fine");
    Ok(())
}

/// An init that refuses its configuration (or traps) keeps the pooler from starting, with the plugin's
/// name, where it is configured (file:line) and what it said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_init_stops_the_pooler_from_starting() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_fail_init", PasswordEncryption::Md5)?;
    for (mode, said) in [
        ("init_error", "testing: init refused".to_owned()),
        ("trap_in_init", TRAPPED.to_owned()),
    ] {
        let err = match Pooler::start_with_plugins(
            &entry(pg, &db, ""),
            "auth_type = md5",
            &userlist_line(&db.user, &db.password),
            &format!("plugin.broken.path = {TESTING}\nplugin.broken.config.mode = {mode}"),
        )
        .await
        {
            Ok(_) => panic!("the pooler started with mode = {mode}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains("pgbouncer.ini:")
                && err.contains("plugin \"broken\"")
                && err.contains(&said),
            "{mode}: {err}"
        );
    }
    Ok(())
}

/// The sandbox: reading a file the pooler itself can read fails, connecting to the pooler's own
/// listening port fails, and the wall clock reads the epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_have_no_filesystem_network_or_clock() -> anyhow::Result<()> {
    let (_pg, db, pooler) = start("plug_sandbox", "").await?;
    let client = pooler.connect_as(&db).await?;
    let ini = pooler.ini_path();
    assert!(std::fs::metadata(&ini)?.len() > 0);
    let probe = |sql: String| {
        let client = &client;
        async move {
            let err = client
                .batch_execute(&sql)
                .await
                .expect_err("a probe was allowed");
            let d = err.as_db_error().expect("a server error").clone();
            assert_eq!(d.code().code(), "42501", "{d:?}");
            d.message().to_owned()
        }
    };
    let fs = probe(format!("SELECT 'pgwarden_test_fs:{}'", ini.display())).await;
    assert!(fs.starts_with("testing: fs: error: "), "{fs}");
    let net = probe(format!(
        "SELECT 'pgwarden_test_net:127.0.0.1:{}'",
        pooler.port
    ))
    .await;
    assert!(net.starts_with("testing: net: error: "), "{net}");
    let clock = probe("SELECT 'pgwarden_test_clock'".to_owned()).await;
    assert_eq!(clock, "testing: clock: 0");
    Ok(())
}
