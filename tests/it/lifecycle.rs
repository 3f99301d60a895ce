//! Server connections over their life: connecting and logging in, retrying failed logins, lifetime and idle
//! reaping, health checks, connect_query, dead servers, and PostgreSQL restarting under load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pgwarden_tests::clients::{BenchLength, BenchRun, connect};
use pgwarden_tests::pg::{ClusterOptions, PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::pool_support::{
    WAIT, assert_fatal, assert_login_refused, backend_pid, backends, connect_db, ended, entry,
    pool_of, scalar, wait_backends, wait_until, watch_end,
};

/// A pooler in transaction mode in front of `db` on `pg`.
async fn pooler_for(
    pg: &PgCluster,
    db: &TestDb,
    entry_extra: &str,
    settings: &str,
) -> anyhow::Result<Pooler> {
    Pooler::start(
        &entry(pg, db, entry_extra),
        &format!("pool_mode = transaction\n{settings}"),
        &db.userlist_line(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connect_timeout_abandons_a_server_that_never_answers() -> anyhow::Result<()> {
    let connect_timeout = Duration::from_millis(500);
    // A "server" that accepts connections and never says a word; it reports how long each one lasted.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_port = silent.local_addr()?.port();
    let (lasted_tx, mut lasted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = silent.accept().await {
            let lasted_tx = lasted_tx.clone();
            tokio::spawn(async move {
                let accepted = Instant::now();
                let mut sink = Vec::new();
                let _ = sock.read_to_end(&mut sink).await;
                let _ = lasted_tx.send(accepted.elapsed());
            });
        }
    });
    // No PostgreSQL involved: the client logs in to pgwarden only.
    let db = TestDb {
        name: "silent".into(),
        user: "silent_u".into(),
        password: "silent_pw".into(),
    };
    let pooler = Pooler::start(
        &format!("silent = host=127.0.0.1 port={silent_port} dbname=nowhere"),
        "pool_mode = transaction\nserver_connect_timeout = 0.5\nserver_login_retry = 2\n\
         client_login_timeout = 3",
        &db.userlist_line(),
    )
    .await?;

    // The first client waits for the pool's first login.
    let first = tokio::spawn({
        let (port, db) = (pooler.port, db.clone());
        async move {
            let started = Instant::now();
            let res = connect("127.0.0.1", port, &db.user, Some(&db.password), &db.name).await;
            (started.elapsed(), res.err())
        }
    });
    let attempt = tokio::time::timeout(WAIT, lasted.recv())
        .await
        .context("the pooler never gave up on the silent server")?
        .context("listener gone")?;
    assert!(
        attempt >= connect_timeout.mul_f64(0.8) && attempt < connect_timeout * 6,
        "the pooler gave up on the silent server after {attempt:?}, server_connect_timeout is {connect_timeout:?}"
    );

    // Meanwhile a new client is told at once why it cannot get in.
    let started = Instant::now();
    let refused = pooler
        .connect_as(&db)
        .await
        .err()
        .context("logged in to a silent server")?;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_login_refused(
        &refused,
        "08P01",
        "server login has been failing, cached error: connect timeout (server_login_retry)",
    );

    // And the first one gets an error too instead of hanging.
    let (waited, err) = tokio::time::timeout(WAIT, first).await??;
    let err = err.context("the first client logged in to a silent server")?;
    assert_login_refused(&err, "08P01", "client_login_timeout");
    assert!(waited >= Duration::from_millis(2400), "{waited:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_retry_caches_a_failed_login_then_tries_again() -> anyhow::Result<()> {
    let retry = Duration::from_secs(2);
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "loginretry", PasswordEncryption::Md5)?;
    // Clients authenticate against userlist.txt; the server login uses the entry's (wrong) password.
    let pooler = pooler_for(
        pg,
        &db,
        &format!("user={} password=entry_secret", db.user),
        "server_login_retry = 2",
    )
    .await?;
    let server_said = format!("password authentication failed for user \"{}\"", db.user);

    let first = pooler.connect_as(&db).await.err().context("login worked")?;
    let failed_at = Instant::now();
    assert_login_refused(&first, "28P01", &server_said);
    let cached =
        format!("server login has been failing, cached error: {server_said} (server_login_retry)");
    let started = Instant::now();
    let second = pooler.connect_as(&db).await.err().context("login worked")?;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_login_refused(&second, "08P01", &cached);

    // Fix the cause. Within server_login_retry the cached error still answers.
    pg.exec_async(
        "postgres",
        &format!("ALTER ROLE {} PASSWORD 'entry_secret'", db.user),
    )
    .await?;
    let third = pooler.connect_as(&db).await.err();
    if failed_at.elapsed() < retry.mul_f64(0.8) {
        assert_login_refused(
            &third.context("retried before server_login_retry")?,
            "08P01",
            &cached,
        );
    }
    // After it, a login is tried again and works.
    wait_until("a login after server_login_retry", WAIT, || async {
        Ok(pooler.connect_as(&db).await.is_ok())
    })
    .await?;
    assert!(
        failed_at.elapsed() >= retry.mul_f64(0.8),
        "a new login was tried after {:?}, server_login_retry is {retry:?}",
        failed_at.elapsed()
    );
    let client = pooler.connect_as(&db).await?;
    assert_eq!(scalar(&client, "SELECT current_user").await?, db.user);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_replaces_old_servers() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "lifetime", PasswordEncryption::Md5)?;
    let pooler = pooler_for(pg, &db, "", "default_pool_size = 1\nserver_lifetime = 1").await?;
    let (client, _c) = connect_db(&pooler, &db).await?;
    let young = backend_pid(&client).await?;
    assert_eq!(
        backend_pid(&client).await?,
        young,
        "a young server was replaced"
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let replaced = backend_pid(&client).await?;
    assert_ne!(
        replaced, young,
        "a server older than server_lifetime was reused"
    );
    wait_backends(pg, &db.name, None, 1, WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_idle_timeout_closes_idle_servers() -> anyhow::Result<()> {
    let idle_timeout = Duration::from_secs(1);
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "sidle", PasswordEncryption::Md5)?;
    let pooler = pooler_for(
        pg,
        &db,
        "",
        "default_pool_size = 3\nserver_idle_timeout = 1",
    )
    .await?;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (c, _task) = connect_db(&pooler, &db).await?;
        c.batch_execute("BEGIN; SELECT 1").await?;
        clients.push(c);
    }
    for c in &clients {
        c.batch_execute("COMMIT").await?;
    }
    let released = Instant::now();
    assert_eq!(backends(pg, &db.name, None).await?, 3);

    // One client keeps using a server more often than the timeout: that one stays, the others go.
    let user = &clients[0];
    let kept = backend_pid(user).await?;
    while released.elapsed() < idle_timeout * 2 {
        assert_eq!(backend_pid(user).await?, kept);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_backends(pg, &db.name, None, 1, WAIT).await?;
    assert_eq!(backend_pid(user).await?, kept);
    let last_use = Instant::now();
    wait_backends(pg, &db.name, None, 0, WAIT).await?;
    assert!(
        last_use.elapsed() >= idle_timeout.mul_f64(0.8),
        "closed after {:?} idle",
        last_use.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_check_query_runs_on_servers_idle_longer_than_server_check_delay()
-> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "check", PasswordEncryption::Md5)?;
    pg.exec_async(
        &db.name,
        &format!(
            "CREATE TABLE checks (at timestamptz DEFAULT now()); ALTER TABLE checks OWNER TO {}",
            db.user
        ),
    )
    .await?;
    let pooler = pooler_for(
        pg,
        &db,
        "",
        "default_pool_size = 1\nserver_check_delay = 0.5\n\
         server_check_query = INSERT INTO checks DEFAULT VALUES",
    )
    .await?;
    let checks = || pg.query_scalar_async(&db.name, "SELECT count(*) FROM checks");
    let (client, _c) = connect_db(&pooler, &db).await?;
    let pid = backend_pid(&client).await?;
    assert_eq!(checks().await?, "0", "checked a server used a moment ago");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(backend_pid(&client).await?, pid);
    assert_eq!(checks().await?, "1", "no check after server_check_delay");
    assert_eq!(backend_pid(&client).await?, pid);
    assert_eq!(checks().await?, "1", "checked a server used a moment ago");
    Ok(())
}

/// server_reset_query_always: in transaction pooling the reset query runs on the server after every
/// transaction, before the server goes back to the pool (PgBouncer runs server_reset_query only in session
/// pooling unless this is set); without it, never. The reset runs before the client's next query is
/// served, so the fourth query sees the first three resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reset_query_always_runs_after_every_transaction() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "resetalways", PasswordEncryption::Md5)?;
    pg.exec_async(
        &db.name,
        &format!(
            "CREATE TABLE resets (at timestamptz DEFAULT now()); ALTER TABLE resets OWNER TO {}",
            db.user
        ),
    )
    .await?;
    for (always, expected) in [(false, "0"), (true, "3")] {
        pg.exec_async(&db.name, "TRUNCATE resets").await?;
        let pooler = pooler_for(
            pg,
            &db,
            "",
            &format!(
                "default_pool_size = 1
server_reset_query = INSERT INTO resets DEFAULT VALUES
                 server_reset_query_always = {}",
                u8::from(always)
            ),
        )
        .await?;
        let (client, _c) = connect_db(&pooler, &db).await?;
        for _ in 0..3 {
            backend_pid(&client).await?;
        }
        assert_eq!(
            scalar(&client, "SELECT count(*) FROM resets").await?,
            expected,
            "server_reset_query_always = {always}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_failing_its_check_is_replaced_transparently() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "checkfail", PasswordEncryption::Md5)?;
    let pooler = pooler_for(
        pg,
        &db,
        "",
        "default_pool_size = 1\nserver_check_delay = 0.3\nserver_check_query = SELECT 1/0",
    )
    .await?;
    let (client, _c) = connect_db(&pooler, &db).await?;
    let first = backend_pid(&client).await?;
    assert_eq!(backend_pid(&client).await?, first);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = backend_pid(&client).await?;
    assert_ne!(second, first, "a server that failed its check was used");
    wait_backends(pg, &db.name, None, 1, WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_query_runs_once_on_each_new_server() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "connq", PasswordEncryption::Md5)?;
    pg.exec_async(
        &db.name,
        &format!(
            "CREATE TABLE cq_log (pid int); ALTER TABLE cq_log OWNER TO {}",
            db.user
        ),
    )
    .await?;
    let pooler = pooler_for(
        pg,
        &db,
        "connect_query='INSERT INTO cq_log VALUES (pg_backend_pid())'",
        "default_pool_size = 2",
    )
    .await?;
    let (a, _a) = connect_db(&pooler, &db).await?;
    let (b, _b) = connect_db(&pooler, &db).await?;
    a.batch_execute("BEGIN").await?;
    let pid_a = backend_pid(&a).await?;
    b.batch_execute("BEGIN").await?;
    let pid_b = backend_pid(&b).await?;
    a.batch_execute("COMMIT").await?;
    b.batch_execute("COMMIT").await?;
    for _ in 0..5 {
        a.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
        b.batch_execute("SELECT 1").await?;
    }
    let mut expected = [pid_a, pid_b];
    expected.sort_unstable();
    let logged = pg
        .query_scalar_async(
            &db.name,
            "SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM cq_log",
        )
        .await?;
    assert_eq!(logged, format!("{} {}", expected[0], expected[1]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_idle_server_is_replaced_transparently() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "terminated", PasswordEncryption::Md5)?;
    let pooler = pooler_for(pg, &db, "", "default_pool_size = 1").await?;
    let (client, _c) = connect_db(&pooler, &db).await?;
    let doomed = backend_pid(&client).await?;
    let killed = pg
        .query_scalar_async(
            "postgres",
            &format!("SELECT pg_terminate_backend({doomed})"),
        )
        .await?;
    assert_eq!(killed, "t");
    wait_until("the terminated backend to exit", WAIT, || async {
        Ok(!pg.backend_pids_async(&db.name).await?.contains(&doomed))
    })
    .await?;
    let fresh = backend_pid(&client).await?;
    assert_ne!(fresh, doomed);
    client.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
    Ok(())
}

/// State of one load client, shared with the test.
#[derive(Default)]
struct Load {
    done: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

/// Runs short transactions until `stop`, reconnecting after errors. Never hangs: an operation that takes more
/// than 10 s is a failure.
async fn load_client(
    port: u16,
    db: TestDb,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let limit = Duration::from_secs(10);
    let mut client = None;
    while !stop.load(Ordering::Acquire) {
        let c = match client.take() {
            Some(c) => c,
            None => match tokio::time::timeout(
                limit,
                connect("127.0.0.1", port, &db.user, Some(&db.password), &db.name),
            )
            .await
            {
                Err(_) => bail!("connecting hung for {limit:?}"),
                Ok(Err(e)) => {
                    load.errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("{e:#}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Ok(Ok(c)) => c,
            },
        };
        match tokio::time::timeout(
            limit,
            c.batch_execute("BEGIN; SELECT pg_sleep(0.005); COMMIT"),
        )
        .await
        {
            Err(_) => bail!("a transaction hung for {limit:?}"),
            Ok(Err(e)) => {
                load.errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.to_string());
            }
            Ok(Ok(())) => {
                load.done.fetch_add(1, Ordering::AcqRel);
                client = Some(c);
            }
        }
    }
    Ok(())
}

/// PostgreSQL's FATAL to sessions a fast shutdown ends.
const ADMIN_SHUTDOWN: (&str, &str) = (
    "57P01",
    "terminating connection due to administrator command",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgwarden_recovers_from_a_postgres_restart_under_load() -> anyhow::Result<()> {
    let pg = Arc::new(
        tokio::task::spawn_blocking(|| PgCluster::start(ClusterOptions::default())).await??,
    );
    let db = TestDb::create(&pg, "restart", PasswordEncryption::Md5)?;
    let pooler = pooler_for(
        &pg,
        &db,
        "",
        "default_pool_size = 4\nserver_login_retry = 0.2",
    )
    .await?;

    // A client idle between transactions, and one caught inside a transaction.
    let (idle, _i) = connect_db(&pooler, &db).await?;
    idle.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
    let (cut, cut_task) = connect_db(&pooler, &db).await?;
    cut.batch_execute("BEGIN; SELECT 1").await?;
    let cut_end = watch_end(cut_task);

    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<Arc<Load>> = (0..6).map(|_| Arc::default()).collect();
    let workers: Vec<_> = loads
        .iter()
        .map(|l| {
            tokio::spawn(load_client(
                pooler.port,
                db.clone(),
                Arc::clone(l),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let done = |loads: &[Arc<Load>]| -> Vec<u64> {
        loads
            .iter()
            .map(|l| l.done.load(Ordering::Acquire))
            .collect()
    };
    wait_until("load to start", WAIT, || async {
        Ok(done(&loads).iter().all(|&n| n >= 3))
    })
    .await?;

    let before = done(&loads);
    tokio::task::spawn_blocking({
        let pg = Arc::clone(&pg);
        move || pg.restart()
    })
    .await??;

    // Every load client gets going again, with the same pooler.
    wait_until(
        "every load client to recover",
        Duration::from_secs(20),
        || async {
            Ok(done(&loads)
                .iter()
                .zip(&before)
                .all(|(now, then)| *now >= then + 5))
        },
    )
    .await?;
    stop.store(true, Ordering::Release);
    for w in workers {
        tokio::time::timeout(WAIT, w)
            .await
            .context("a load client hung")???;
    }
    // The idle client's next transaction just works; the cut one got PostgreSQL's error, not a hang.
    tokio::time::timeout(WAIT, idle.batch_execute("BEGIN; SELECT 1; COMMIT"))
        .await
        .context("the idle client hung")??;
    let (_, error) = ended(cut_end, WAIT).await?;
    assert_fatal(&error, ADMIN_SHUTDOWN.0, ADMIN_SHUTDOWN.1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgwarden_recovers_from_postgres_stopped_and_started_under_pgbench() -> anyhow::Result<()> {
    let pg = Arc::new(
        tokio::task::spawn_blocking(|| PgCluster::start(ClusterOptions::default())).await??,
    );
    let db = TestDb::create(&pg, "stopstart", PasswordEncryption::Md5)?;
    let direct = pgwarden_tests::clients::Pgbench::new(pg.host(), pg.port(), &db.user, &db.name)
        .password(&db.password);
    tokio::task::spawn_blocking(move || direct.init(1)).await??;
    let pooler = pooler_for(
        &pg,
        &db,
        "",
        "default_pool_size = 4\nserver_login_retry = 0.2",
    )
    .await?;

    let (idle, _i) = connect_db(&pooler, &db).await?;
    idle.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
    let (cut, cut_task) = connect_db(&pooler, &db).await?;
    cut.batch_execute("BEGIN; SELECT 1").await?;
    let cut_end = watch_end(cut_task);

    let mut bench = pooler.pgbench(&db);
    bench.timeout = Duration::from_secs(30);
    let load = tokio::spawn({
        let bench = bench.clone();
        async move {
            bench
                .run_async(&BenchRun {
                    clients: 4,
                    jobs: 2,
                    length: BenchLength::Duration(Duration::from_secs(4)),
                    ..BenchRun::default()
                })
                .await
        }
    });
    let pool = pool_of(&pooler, &db.name, &db.user)?;
    wait_until("pgbench to connect", WAIT, || async {
        Ok(pool.clients.load(Ordering::Acquire) >= 6)
    })
    .await?;
    tokio::task::spawn_blocking({
        let pg = Arc::clone(&pg);
        move || -> anyhow::Result<()> {
            pg.stop()?;
            pg.start_again()
        }
    })
    .await??;

    let run = tokio::time::timeout(Duration::from_secs(40), load)
        .await
        .context("pgbench hung")???;
    assert!(run.processed > 0, "{}\n{}", run.stdout, run.stderr);
    let (_, error) = ended(cut_end, WAIT).await?;
    assert_fatal(&error, ADMIN_SHUTDOWN.0, ADMIN_SHUTDOWN.1);
    tokio::time::timeout(WAIT, idle.batch_execute("BEGIN; SELECT 1; COMMIT"))
        .await
        .context("the idle client hung")??;

    // New work after the restart is served cleanly by the same pooler.
    let after = bench
        .run_async(&BenchRun {
            clients: 4,
            jobs: 2,
            length: BenchLength::Transactions(50),
            ..BenchRun::default()
        })
        .await?;
    after.ensure_clean()?;
    Ok(())
}

/// server_lifetime = 0 means "use a server once": the first client's query runs on the server its login
/// opened (to learn the pool's parameters), which closes after that use, so one session in PostgreSQL's
/// books, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_zero_uses_the_login_server_once() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "lifezero", PasswordEncryption::Md5)?;
    let sessions = || async {
        pg.query_scalar_async(
            "postgres",
            &format!(
                "SELECT sessions FROM pg_stat_database WHERE datname = '{}'",
                db.name
            ),
        )
        .await
        .and_then(|n| Ok(n.parse::<i64>()?))
    };
    let before = sessions().await?;
    let pooler = pooler_for(pg, &db, "", "server_lifetime = 0").await?;
    let (client, _c) = connect_db(&pooler, &db).await?;
    let pid = backend_pid(&client).await?;
    wait_backends(pg, &db.name, None, 0, WAIT).await?;
    // PostgreSQL reports session counts with a small delay: wait for the one that must be there.
    wait_until("the session to be counted", WAIT, || async {
        Ok(sessions().await? > before)
    })
    .await?;
    assert_eq!(
        sessions().await? - before,
        1,
        "sessions opened for one client query"
    );
    assert_ne!(
        backend_pid(&client).await?,
        pid,
        "a used server is not reused"
    );
    Ok(())
}

/// A host list with `load_balance_hosts = disable`: connections go to the first host until it fails, then
/// to the next, and stay there. The first host here refuses connections (nothing listens on 127.0.0.2), so
/// the first login fails, the next one (after server_login_retry) reaches PostgreSQL on 127.0.0.1, the
/// waiting client is served, and later connections go straight there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_list_fails_over_to_the_next_host() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "hostlist", PasswordEncryption::Md5)?;
    let databases = format!(
        "{} = host=127.0.0.2,127.0.0.1 port={} dbname={} load_balance_hosts=disable",
        db.name,
        pg.port(),
        db.name
    );
    let pooler = Pooler::start(
        &databases,
        "pool_mode = transaction\nserver_login_retry = 0.2\ndefault_pool_size = 3",
        &db.userlist_line(),
    )
    .await?;
    let (first, _f) = connect_db(&pooler, &db).await?;
    assert_eq!(
        scalar(&first, "SELECT inet_server_addr()::text").await?,
        "127.0.0.1/32"
    );
    // More connections at once: all to the host that works, none back to the failed one.
    first.batch_execute("BEGIN").await?;
    let (second, _s) = connect_db(&pooler, &db).await?;
    second.batch_execute("BEGIN").await?;
    let (third, _t) = connect_db(&pooler, &db).await?;
    for c in [&first, &second, &third] {
        assert_eq!(
            scalar(c, "SELECT inet_server_addr()::text").await?,
            "127.0.0.1/32"
        );
    }
    assert_eq!(backends(pg, &db.name, None).await?, 3);
    Ok(())
}

/// pool_idle_timeout (PgBouncer 1.25): a pool with neither clients nor servers for that long is freed; one
/// with a connected client is kept however idle; a freed pool is made again by the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_idle_timeout_frees_empty_pools_only() -> anyhow::Result<()> {
    let pool_idle = Duration::from_millis(800);
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "poolidle", PasswordEncryption::Md5)?;
    let pooler = pooler_for(
        pg,
        &db,
        "",
        "server_idle_timeout = 0.3\npool_idle_timeout = 0.8",
    )
    .await?;

    // A connected client keeps its pool, long after its server went idle and was closed.
    let (kept, _k) = connect_db(&pooler, &db).await?;
    assert_eq!(scalar(&kept, "SELECT 1").await?, "1");
    wait_backends(pg, &db.name, None, 0, WAIT).await?;
    tokio::time::sleep(pool_idle * 2).await;
    pool_of(&pooler, &db.name, &db.user).context("a pool with a client was freed")?;

    // Once the client has left and the server is closed, the pool goes.
    drop(kept);
    let left = Instant::now();
    wait_until("the idle pool to be freed", WAIT, || async {
        Ok(pool_of(&pooler, &db.name, &db.user).is_err())
    })
    .await?;
    assert!(
        left.elapsed() >= pool_idle.mul_f64(0.8),
        "freed {:?} after the last client left",
        left.elapsed()
    );
    assert_eq!(backends(pg, &db.name, None).await?, 0);

    // The next client gets a new pool and is served.
    let (again, _a) = connect_db(&pooler, &db).await?;
    assert_eq!(scalar(&again, "SELECT 2").await?, "2");
    pool_of(&pooler, &db.name, &db.user)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_idle_timeout_keeps_min_pool_size_open() -> anyhow::Result<()> {
    // Like PgBouncer: idle servers beyond min_pool_size are closed, the minimum stays.
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "sidlemin", PasswordEncryption::Md5)?;
    let pooler = pooler_for(
        pg,
        &db,
        "min_pool_size=2",
        "default_pool_size = 4\nserver_idle_timeout = 0.3",
    )
    .await?;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, _task) = connect_db(&pooler, &db).await?;
        c.batch_execute("BEGIN; SELECT 1").await?;
        clients.push(c);
    }
    for c in &clients {
        c.batch_execute("COMMIT").await?;
    }
    assert_eq!(backends(pg, &db.name, None).await?, 4);
    wait_backends(pg, &db.name, None, 2, WAIT).await?;
    // Well past the timeout, the minimum is still open (and the same servers: nothing was reopened).
    let before = pg.backend_pids_async(&db.name).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let after = pg.backend_pids_async(&db.name).await?;
    assert_eq!(after.len(), 2, "min_pool_size not kept: {after:?}");
    assert_eq!(before, after, "the kept servers were closed and reopened");
    Ok(())
}

/// server_fast_close = 1 in session mode: after RECONNECT a session's server is not kept to the end of the
/// session. A transaction under way commits; right after it the client is disconnected with PgBouncer's
/// reason and its backend goes. Without the setting, the session keeps its server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_fast_close_ends_sessions_between_transactions_after_reconnect() -> anyhow::Result<()>
{
    use crate::admin::{console, start};
    use pgwarden_tests::raw::{RawClient, first_error};
    let superuser = PgCluster::shared().admin_client("postgres").await?;
    for fast_close in [true, false] {
        let (db, pooler) = start(
            "fast_close",
            &format!(
                "pool_mode = session\nserver_fast_close = {}",
                u8::from(fast_close)
            ),
        )
        .await?;
        let admin = console(&pooler).await?;
        let mut a = RawClient::connect(pooler.port).await?;
        a.login(&[("user", &db.user), ("database", &db.name)], &db.password)
            .await?;
        let mut run = async |sql: &str| {
            let msgs = a.query(sql).await?;
            match first_error(&msgs) {
                Some(e) => bail!("{sql}: {} {}", e.code, e.message),
                None => anyhow::Ok(msgs),
            }
        };
        run("create table fc (x int)").await?;
        run("begin; insert into fc values (1)").await?;
        let pid: i32 = superuser
            .query_one(
                "select pid from pg_stat_activity where datname = $1 and usename = $2",
                &[&db.name, &db.user],
            )
            .await?
            .get(0);
        admin
            .simple_query(&format!("RECONNECT {}", db.name))
            .await?;
        // Mid-transaction nothing happens: the transaction goes on and commits.
        run("insert into fc values (2); commit").await?;
        let gone = async |pid: i32| {
            let n: i64 = superuser
                .query_one(
                    "select count(*) from pg_stat_activity where pid = $1",
                    &[&pid],
                )
                .await?
                .get(0);
            anyhow::Ok(n == 0)
        };
        if fast_close {
            // Unasked, the client hears why its session ended.
            let msg = a.recv().await?.context("no message before the close")?;
            let e = msg.error().context("not an ErrorResponse")?;
            assert_eq!(
                (e.severity.as_str(), e.code.as_str(), e.message.as_str()),
                ("FATAL", "08P01", "database configuration changed")
            );
            assert!(a.recv().await?.is_none(), "the connection closes");
            wait_until("the old backend to go", WAIT, || gone(pid)).await?;
        } else {
            let msgs = run("select count(*) from fc").await?;
            assert!(msgs.iter().any(|m| m.tag == b'D'), "{msgs:?}");
            assert!(!gone(pid).await?, "the session kept its server");
        }
        let other = pooler.connect_as(&db).await?;
        let rows: i64 = other
            .query_one("select count(*) from fc", &[])
            .await?
            .get(0);
        assert_eq!(rows, 2, "the transaction committed");
    }
    Ok(())
}
