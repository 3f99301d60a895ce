//! Pools: one per (database entry, user) or per entry with a forced user; session, transaction and statement
//! modes; sizes, reserve, queues and the client and server connection limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use pgwarden::pool::KeyRef;
use pgwarden_tests::clients::connect;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::pool_support::{
    WAIT, assert_fatal, assert_login_refused, backend_pid, backends, connect_db, connect_watched,
    count_backends, db_line, entry, extra_role, finish, pool_of, scalar, scalar_opt, session_end,
    setup, spawn_scalar, userlist_line, wait_backends, wait_queued, wait_until,
};

/// A query expected to be answered at once (well, without waiting for another client).
async fn prompt(client: &Client, sql: &str) -> anyhow::Result<String> {
    tokio::time::timeout(WAIT, scalar(client, sql))
        .await
        .with_context(|| format!("{sql:?} was not answered: it waited for a server"))?
}

/// Several short transactions, each checking that it stayed on one backend.
async fn short_transactions(port: u16, db: TestDb, count: usize) -> anyhow::Result<()> {
    let client = connect("127.0.0.1", port, &db.user, Some(&db.password), &db.name).await?;
    for _ in 0..count {
        client.batch_execute("BEGIN").await?;
        let first = backend_pid(&client).await?;
        client.batch_execute("SELECT pg_sleep(0.005)").await?;
        let second = backend_pid(&client).await?;
        client.batch_execute("COMMIT").await?;
        ensure!(
            first == second,
            "a transaction moved from backend {first} to {second}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_at_most_twenty_five_backends() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "pool200", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        "pool_mode = transaction\ndefault_pool_size = 20\nreserve_pool_size = 5\n\
         reserve_pool_timeout = 0.2\nmax_client_conn = 250",
        &db.userlist_line(),
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let admin = pg.admin_client("postgres").await?;
    let sampler = tokio::spawn({
        let (stop, peak, name) = (Arc::clone(&stop), Arc::clone(&peak), db.name.clone());
        async move {
            let mut samples = 0u32;
            while !stop.load(Ordering::Acquire) {
                let n = count_backends(&admin, &name, None).await?;
                peak.fetch_max(n, Ordering::AcqRel);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(samples)
        }
    });

    let mut clients = JoinSet::new();
    for _ in 0..200 {
        clients.spawn(short_transactions(pooler.port, db.clone(), 5));
    }
    let mut failures = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(res) = clients.join_next().await {
            if let Err(e) = res.map_err(anyhow::Error::from).and_then(|r| r) {
                failures.push(format!("{e:#}"));
            }
        }
    })
    .await;
    stop.store(true, Ordering::Release);
    let samples = sampler.await??;
    all.context("200 clients did not finish within 90 s")?;
    assert!(
        failures.is_empty(),
        "{} of 200 clients failed, first: {}",
        failures.len(),
        failures[0]
    );
    let peak = peak.load(Ordering::Acquire);
    assert!(samples > 0, "pg_stat_activity was never sampled");
    assert!(
        peak <= 25,
        "PostgreSQL saw {peak} backends for the database (pool 20 + reserve 5)"
    );
    assert!(
        peak >= 20,
        "only {peak} backends for 200 busy clients: the pool never filled"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pool_per_entry_and_user_or_per_entry_with_a_forced_user() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "poolkey", PasswordEncryption::Md5)?;
    let (other, other_pw) = extra_role(pg, "poolkey_b")?;
    let (a, a_pw, name) = (&db.user, &db.password, &db.name);
    let forced = format!("{name}_forced");
    let second = format!("{name}_second");
    let databases = [
        entry(pg, &db, "pool_size=1"),
        db_line(pg, &second, name, "pool_size=1"),
        db_line(pg, &forced, name, &format!("user={a} pool_size=1")),
    ]
    .join("\n");
    let pooler = Pooler::start(
        &databases,
        "pool_mode = transaction",
        &(db.userlist_line() + &userlist_line(&other, &other_pw)),
    )
    .await?;

    // A holds the only server of (entry, A) in a transaction.
    let (holder, _h) = connect_db(&pooler, &db).await?;
    holder.batch_execute("BEGIN; SELECT 1").await?;
    // Another user on the same entry has its own pool, with its own server user.
    let (b, _b) = connect_watched(&pooler, &other, &other_pw, name).await?;
    assert_eq!(prompt(&b, "SELECT current_user").await?, other);
    // The same user on another entry for the same database has its own pool too.
    let (a2, _a2) = connect_watched(&pooler, a, a_pw, &second).await?;
    assert_eq!(prompt(&a2, "SELECT current_user").await?, *a);
    holder.batch_execute("COMMIT").await?;

    // With user= forced, A and B share one pool logged in as A.
    let (fa, _fa) = connect_watched(&pooler, a, a_pw, &forced).await?;
    fa.batch_execute("BEGIN; SELECT 1").await?;
    let (fb, _fb) = connect_watched(&pooler, &other, &other_pw, &forced).await?;
    let fb = Arc::new(fb);
    let waiting = spawn_scalar(&fb, "SELECT current_user");
    let pool = pool_of(&pooler, &forced, a)?;
    wait_queued(&pool, 1).await?;
    fa.batch_execute("COMMIT").await?;
    assert_eq!(finish(waiting).await?, *a, "B runs as the forced user");
    assert!(
        pooler
            .state
            .pools
            .get(KeyRef::new(&forced, &other))
            .is_none(),
        "a forced-user entry must not get a pool per client user"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_and_pool_size_resolve_user_then_database_then_global() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "resolve", PasswordEncryption::Md5)?;
    let (b, b_pw) = extra_role(pg, "resolve_b")?;
    let (a, a_pw, name) = (db.user.clone(), db.password.clone(), db.name.clone());
    pg.exec_async(
        &name,
        &format!("CREATE TABLE gate (x int); GRANT SELECT ON gate TO {b}"),
    )
    .await?;
    let tx_entry = format!("{name}_tx");
    let databases = [
        entry(pg, &db, ""),
        db_line(pg, &tx_entry, &name, "pool_mode=transaction pool_size=2"),
    ]
    .join("\n");
    let pooler = Pooler::start(
        &databases,
        &format!(
            "pool_mode = session\ndefault_pool_size = 1\n\n[users]\n{b} = pool_mode=statement pool_size=3"
        ),
        &(db.userlist_line() + &userlist_line(&b, &b_pw)),
    )
    .await?;

    // Global: session mode, one server. A client that ran one query keeps its server.
    let (s1, _s1) = connect_db(&pooler, &db).await?;
    prompt(&s1, "SELECT 1").await?;
    let (s2, _s2) = connect_db(&pooler, &db).await?;
    let s2 = Arc::new(s2);
    let waiting = spawn_scalar(&s2, "SELECT 2");
    wait_queued(&*pool_of(&pooler, &name, &a)?, 1).await?;
    drop(s1);
    assert_eq!(finish(waiting).await?, "2");

    // Database entry: transaction mode, two servers. An idle client holds none; a third transaction waits.
    let (idle, _i) = connect_watched(&pooler, &a, &a_pw, &tx_entry).await?;
    prompt(&idle, "SELECT 1").await?;
    let tx_pool = pool_of(&pooler, &tx_entry, &a)?;
    let (t1, _t1) = connect_watched(&pooler, &a, &a_pw, &tx_entry).await?;
    let (t2, _t2) = connect_watched(&pooler, &a, &a_pw, &tx_entry).await?;
    let (t3, _t3) = connect_watched(&pooler, &a, &a_pw, &tx_entry).await?;
    t1.batch_execute("BEGIN").await?;
    prompt(&t1, "SELECT 1").await?;
    t2.batch_execute("BEGIN").await?;
    prompt(&t2, "SELECT 1").await?;
    let t3 = Arc::new(t3);
    let waiting = spawn_scalar(&t3, "SELECT 3");
    wait_queued(&tx_pool, 1).await?;
    t1.batch_execute("COMMIT").await?;
    assert_eq!(finish(waiting).await?, "3");
    t2.batch_execute("COMMIT").await?;

    // [users]: pool_size=3 beats default_pool_size=1: four statements blocked on a lock hold three servers
    // and the fourth waits.
    let admin = pg.admin_client(&name).await?;
    admin
        .batch_execute("BEGIN; LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        .await?;
    let mut blocked = Vec::new();
    for _ in 0..4 {
        let (c, _task) = connect_watched(&pooler, &b, &b_pw, &name).await?;
        blocked.push(spawn_scalar(&Arc::new(c), "SELECT count(*) FROM gate"));
    }
    let b_pool = pool_of(&pooler, &name, &b)?;
    wait_queued(&b_pool, 1).await?;
    // The third server may still be logging in when the fourth client queues: wait for it, then make sure
    // no fourth one comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while backends(pg, &name, Some(&b)).await? < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(backends(pg, &name, Some(&b)).await?, 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        backends(pg, &name, Some(&b)).await?,
        3,
        "the fourth client waits"
    );
    admin.batch_execute("COMMIT").await?;
    for task in blocked {
        assert_eq!(finish(task).await?, "0");
    }
    drop(idle);

    // ...and statement mode beats the entry's transaction mode.
    let (st, st_task) = connect_watched(&pooler, &b, &b_pw, &tx_entry).await?;
    let refused = match st.simple_query("BEGIN").await {
        Err(e) => e,
        Ok(_) => session_end(st_task, WAIT).await?,
    };
    assert_fatal(
        &refused,
        "08P01",
        "transaction blocks not allowed in statement pooling mode",
    );
    Ok(())
}

/// A server handed to a queued client that leaves before taking it (KILL, a lost client, a drain crossing
/// the grant) goes back to the pool warm: the next client gets the same backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_to_a_client_that_left_goes_back_to_the_pool() -> anyhow::Result<()> {
    let (db, pooler) = setup("grantback", "default_pool_size = 1").await?;
    let (holder, _h) = connect_db(&pooler, &db).await?;
    holder.batch_execute("BEGIN").await?;
    let pid = backend_pid(&holder).await?;
    let pool = pool_of(&pooler, &db.name, &db.user)?;
    let pgwarden::pool::Enqueued::Queued(queued) = pool.enqueue(Duration::ZERO, true).await else {
        anyhow::bail!("an idle server while the only one is held");
    };
    holder.batch_execute("COMMIT").await?;
    // Granted: the queue is empty and the server is in nobody's hands but the queued place's.
    wait_until("the server granted", WAIT, || async {
        Ok(pool.waiting() == 0 && pool.counts() == (1, 0))
    })
    .await?;
    queued.leave(&pool);
    assert_eq!(
        pool.counts(),
        (1, 1),
        "(open, idle) after the grant came back"
    );
    let (next, _n) = connect_db(&pooler, &db).await?;
    assert_eq!(backend_pid(&next).await?, pid);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_clients_are_served_in_arrival_order() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "fifo", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        "pool_mode = transaction\ndefault_pool_size = 1",
        &db.userlist_line(),
    )
    .await?;
    let (holder, _h) = connect_db(&pooler, &db).await?;
    holder.batch_execute("BEGIN; SELECT 1").await?;
    let pool = pool_of(&pooler, &db.name, &db.user)?;
    let mut queued = Vec::new();
    for i in 1..=5 {
        let (c, _task) = connect_db(&pooler, &db).await?;
        // The server's clock says when each one got the server.
        queued.push(spawn_scalar(
            &Arc::new(c),
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
        ));
        wait_queued(&pool, i).await?;
    }
    holder.batch_execute("COMMIT").await?;
    let mut served = Vec::new();
    for task in queued {
        served.push(finish(task).await?.parse::<i64>()?);
    }
    assert!(
        served.windows(2).all(|w| w[0] < w[1]),
        "clients were not served in arrival order: {served:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_opens_servers_for_a_forced_user_or_a_connected_client() -> anyhow::Result<()>
{
    let pg = PgCluster::shared();
    let forced = TestDb::create(pg, "minforced", PasswordEncryption::Md5)?;
    let normal = TestDb::create(pg, "minnormal", PasswordEncryption::Md5)?;
    let databases = [
        entry(
            pg,
            &forced,
            &format!("user={} min_pool_size=2", forced.user),
        ),
        entry(pg, &normal, "min_pool_size=3"),
    ]
    .join("\n");
    let pooler = Pooler::start(
        &databases,
        "pool_mode = transaction\ndefault_pool_size = 5",
        &(forced.userlist_line() + &normal.userlist_line()),
    )
    .await?;
    // No client ever connects to the forced-user entry: its servers open anyway.
    wait_backends(pg, &forced.name, None, 2, WAIT).await?;
    assert_eq!(
        backends(pg, &normal.name, None).await?,
        0,
        "no client, no forced user: nothing to open"
    );
    // A connected client that sends nothing is enough for the other entry.
    let (_idle, _task) = connect_db(&pooler, &normal).await?;
    wait_backends(pg, &normal.name, None, 3, WAIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_opens_only_after_reserve_pool_timeout() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "reserve", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        "pool_mode = transaction\ndefault_pool_size = 1\nreserve_pool_size = 1\nreserve_pool_timeout = 0.5",
        &db.userlist_line(),
    )
    .await?;
    let (a, _a) = connect_db(&pooler, &db).await?;
    a.batch_execute("BEGIN; SELECT 1").await?;
    let pool = pool_of(&pooler, &db.name, &db.user)?;

    let (b, _b) = connect_db(&pooler, &db).await?;
    let b = Arc::new(b);
    let started = Instant::now();
    let b_begin = tokio::spawn({
        let b = Arc::clone(&b);
        async move { anyhow::Ok(b.batch_execute("BEGIN; SELECT 1").await?) }
    });
    wait_queued(&pool, 1).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        backends(pg, &db.name, None).await?,
        1,
        "the reserve opened before reserve_pool_timeout"
    );
    finish(b_begin).await?;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "B got a server after {waited:?}, before reserve_pool_timeout"
    );
    assert_eq!(backends(pg, &db.name, None).await?, 2);

    // The reserve holds one server: a third client waits, however long.
    let (c, _c) = connect_db(&pooler, &db).await?;
    let c_query = spawn_scalar(&Arc::new(c), "SELECT 3");
    wait_queued(&pool, 1).await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(pool.waiting(), 1, "C should still be waiting");
    assert_eq!(backends(pg, &db.name, None).await?, 2, "pool 1 + reserve 1");
    a.batch_execute("COMMIT").await?;
    assert_eq!(finish(c_query).await?, "3");
    b.batch_execute("COMMIT").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_clients_beyond_it() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "maxclient", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        "pool_mode = transaction\nmax_client_conn = 2",
        &db.userlist_line(),
    )
    .await?;
    let first = pooler.connect_as(&db).await?;
    let _second = pooler.connect_as(&db).await?;
    let refused = pooler
        .connect_as(&db)
        .await
        .err()
        .context("a third client was let in")?;
    assert_login_refused(
        &refused,
        "08P01",
        "no more connections allowed (max_client_conn)",
    );
    drop(first);
    wait_until("room for a client again", WAIT, || async {
        Ok(pooler.connect_as(&db).await.is_ok())
    })
    .await?;
    Ok(())
}

/// Clients connecting all at once: exactly max_client_conn of them get in (none too many, none refused while
/// there is room), whatever order their logins finish in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_admits_exactly_the_limit_from_a_burst() -> anyhow::Result<()> {
    const MAX: usize = 5;
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "maxclientburst", PasswordEncryption::Md5)?;
    let pooler = Arc::new(
        Pooler::start(
            &entry(pg, &db, ""),
            &format!("pool_mode = transaction\nmax_client_conn = {MAX}"),
            &db.userlist_line(),
        )
        .await?,
    );
    let db = Arc::new(db);
    let attempts: Vec<_> = (0..2 * MAX)
        .map(|_| {
            let (pooler, db) = (Arc::clone(&pooler), Arc::clone(&db));
            tokio::spawn(async move { pooler.connect_as(&db).await })
        })
        .collect();
    let mut admitted = Vec::new();
    for a in attempts {
        match a.await? {
            Ok(c) => admitted.push(c),
            Err(e) => {
                assert_login_refused(&e, "08P01", "no more connections allowed (max_client_conn)")
            }
        }
    }
    assert_eq!(
        admitted.len(),
        MAX,
        "clients let in from a burst of {}",
        2 * MAX
    );
    // Room again once one leaves.
    drop(admitted.pop());
    wait_until("room for a client again", WAIT, || async {
        Ok(pooler.connect_as(&db).await.is_ok())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_db_connections_caps_every_pool_of_the_database() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "maxdb", PasswordEncryption::Md5)?;
    let (b, b_pw) = extra_role(pg, "maxdb_b")?;
    let pooler = Pooler::start(
        &entry(pg, &db, "max_db_connections=2"),
        "pool_mode = transaction\ndefault_pool_size = 5",
        &(db.userlist_line() + &userlist_line(&b, &b_pw)),
    )
    .await?;
    let (a1, _a1) = connect_db(&pooler, &db).await?;
    a1.batch_execute("BEGIN; SELECT 1").await?;
    let (b1, _b1) = connect_watched(&pooler, &b, &b_pw, &db.name).await?;
    b1.batch_execute("BEGIN; SELECT 1").await?;
    let (a2, _a2) = connect_db(&pooler, &db).await?;
    let waiting = spawn_scalar(&Arc::new(a2), "SELECT current_user");
    wait_queued(&*pool_of(&pooler, &db.name, &db.user)?, 1).await?;
    assert_eq!(backends(pg, &db.name, None).await?, 2);
    // B's server goes idle; A's pool may take its place (PgBouncer evicts it), never a third one.
    b1.batch_execute("COMMIT").await?;
    assert_eq!(finish(waiting).await?, db.user);
    assert_eq!(pool_of(&pooler, &db.name, &db.user)?.counts().0, 2);
    assert_eq!(pool_of(&pooler, &db.name, &b)?.counts().0, 0);
    wait_backends(pg, &db.name, Some(&b), 0, WAIT).await?;
    assert_eq!(backends(pg, &db.name, None).await?, 2);
    a1.batch_execute("COMMIT").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_user_connections_caps_every_pool_of_the_user() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "maxuser", PasswordEncryption::Md5)?;
    let (v, v_pw) = extra_role(pg, "maxuser_v")?;
    let (u, u_pw, name) = (db.user.clone(), db.password.clone(), db.name.clone());
    let second = format!("{name}_2");
    let databases = [entry(pg, &db, ""), db_line(pg, &second, &name, "")].join("\n");
    let pooler = Pooler::start(
        &databases,
        &format!("pool_mode = transaction\ndefault_pool_size = 5\n\n[users]\n{u} = max_user_connections=2"),
        &(db.userlist_line() + &userlist_line(&v, &v_pw)),
    )
    .await?;
    let (u1, _u1) = connect_db(&pooler, &db).await?;
    u1.batch_execute("BEGIN; SELECT 1").await?;
    let (u2, _u2) = connect_watched(&pooler, &u, &u_pw, &second).await?;
    u2.batch_execute("BEGIN; SELECT 1").await?;
    let (u3, _u3) = connect_db(&pooler, &db).await?;
    let waiting = spawn_scalar(&Arc::new(u3), "SELECT 3");
    wait_queued(&*pool_of(&pooler, &name, &u)?, 1).await?;
    // Another user of the same database is not limited by U's count.
    let (v1, _v1) = connect_watched(&pooler, &v, &v_pw, &name).await?;
    v1.batch_execute("BEGIN").await?;
    assert_eq!(prompt(&v1, "SELECT current_user").await?, v);
    assert_eq!(backends(pg, &name, Some(&u)).await?, 2);
    u2.batch_execute("COMMIT").await?;
    assert_eq!(finish(waiting).await?, "3");
    assert_eq!(pool_of(&pooler, &name, &u)?.counts().0, 2);
    assert_eq!(pool_of(&pooler, &second, &u)?.counts().0, 0);
    wait_backends(pg, &name, Some(&u), 2, WAIT).await?;
    u1.batch_execute("COMMIT").await?;
    v1.batch_execute("COMMIT").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_limits_per_database_and_per_user() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "clientlim", PasswordEncryption::Md5)?;
    let (b, b_pw) = extra_role(pg, "clientlim_b")?;
    let (a, a_pw, name) = (db.user.clone(), db.password.clone(), db.name.clone());
    let other = format!("{name}_other");
    let databases = [
        entry(pg, &db, "max_db_client_connections=2"),
        db_line(pg, &other, &name, ""),
    ]
    .join("\n");
    let pooler = Pooler::start(
        &databases,
        &format!("pool_mode = transaction\n\n[users]\n{b} = max_user_client_connections=1"),
        &(db.userlist_line() + &userlist_line(&b, &b_pw)),
    )
    .await?;
    let first = pooler.connect(&a, &a_pw, &name).await?;
    let _second = pooler.connect(&a, &a_pw, &name).await?;
    let refused = pooler.connect(&a, &a_pw, &name).await.err();
    assert_login_refused(
        &refused.context("a third client of the database was let in")?,
        "08P01",
        "client connections exceeded (max_db_client_connections)",
    );
    let _elsewhere = pooler.connect(&a, &a_pw, &other).await?;

    let _b1 = pooler.connect(&b, &b_pw, &other).await?;
    let refused = pooler.connect(&b, &b_pw, &other).await.err();
    assert_login_refused(
        &refused.context("a second client of user B was let in")?,
        "08P01",
        "client connections exceeded (max_user_client_connections)",
    );

    drop(first);
    wait_until("room in the database again", WAIT, || async {
        Ok(pooler.connect(&a, &a_pw, &name).await.is_ok())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_stays_on_one_backend_while_others_run() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "txsticky", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        "pool_mode = transaction\ndefault_pool_size = 2",
        &db.userlist_line(),
    )
    .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut others = JoinSet::new();
    for _ in 0..4 {
        let (port, db, stop) = (pooler.port, db.clone(), Arc::clone(&stop));
        others.spawn(async move {
            let client = connect("127.0.0.1", port, &db.user, Some(&db.password), &db.name).await?;
            while !stop.load(Ordering::Acquire) {
                client.batch_execute("SELECT 1").await?;
                client
                    .batch_execute("BEGIN; SELECT pg_sleep(0.002); COMMIT")
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    let (x, _x) = connect_db(&pooler, &db).await?;
    let (y, _y) = connect_db(&pooler, &db).await?;
    x.batch_execute("BEGIN").await?;
    let mine = backend_pid(&x).await?;
    for _ in 0..10 {
        let y_pid = backend_pid(&y).await?;
        assert_ne!(
            y_pid, mine,
            "another client ran on a backend inside X's transaction"
        );
        assert_eq!(
            backend_pid(&x).await?,
            mine,
            "X's transaction changed backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    x.batch_execute("COMMIT").await?;
    stop.store(true, Ordering::Release);
    while let Some(res) = others.join_next().await {
        res??;
    }
    Ok(())
}

/// Whether the server a client lands on is outside any transaction, and how many rows `t` has.
async fn server_state(client: &Client) -> anyhow::Result<(Option<String>, String, String)> {
    Ok((
        scalar_opt(client, "SELECT txid_current_if_assigned()::text").await?,
        scalar(client, "SELECT now() = statement_timestamp()").await?,
        scalar(client, "SELECT count(*) FROM t").await?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_transaction_never_returns_a_dirty_server() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "dirty", PasswordEncryption::Md5)?;
    pg.exec_async(
        &db.name,
        &format!("CREATE TABLE t (x int); ALTER TABLE t OWNER TO {}", db.user),
    )
    .await?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        "pool_mode = transaction\ndefault_pool_size = 1",
        &db.userlist_line(),
    )
    .await?;
    let clean = (None, "t".to_owned(), "0".to_owned());

    // A client that says goodbye (Terminate) with its transaction open.
    let (polite, _task) = connect_db(&pooler, &db).await?;
    polite
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await?;
    drop(polite);
    let (next, _n) = connect_db(&pooler, &db).await?;
    assert_eq!(server_state(&next).await?, clean);
    drop(next);

    // A client whose socket just closes.
    let (rude, task) = connect_db(&pooler, &db).await?;
    rude.batch_execute("BEGIN; INSERT INTO t VALUES (2)")
        .await?;
    task.abort();
    drop(rude);
    let (next, _n) = connect_db(&pooler, &db).await?;
    assert_eq!(server_state(&next).await?, clean);
    assert_eq!(
        pg.query_scalar_async(&db.name, "SELECT count(*) FROM t")
            .await?,
        "0"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_resets_the_server_when_its_client_leaves() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "reset", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        "pool_mode = session\ndefault_pool_size = 1",
        &db.userlist_line(),
    )
    .await?;
    let (first, _f) = connect_db(&pooler, &db).await?;
    first
        .batch_execute(
            "SET statement_timeout = 4242; CREATE TEMP TABLE tt (x int); SELECT pg_advisory_lock(77)",
        )
        .await?;
    let pid = backend_pid(&first).await?;
    assert_eq!(scalar(&first, "SHOW statement_timeout").await?, "4242ms");

    let (second, _s) = connect_db(&pooler, &db).await?;
    let second = Arc::new(second);
    let seen = spawn_scalar(
        &second,
        "SELECT concat_ws(' ', pg_backend_pid(), current_setting('statement_timeout'), \
         CASE WHEN to_regclass('pg_temp.tt') IS NULL THEN 'gone' ELSE 'kept' END, \
         (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()))",
    );
    wait_queued(&*pool_of(&pooler, &db.name, &db.user)?, 1).await?;
    drop(first);
    assert_eq!(
        finish(seen).await?,
        format!("{pid} 0 gone 0"),
        "the same backend, with the first client's SET, temp table and lock gone"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_mode_alias_keeps_session_state_across_transactions() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "alias", PasswordEncryption::Md5)?;
    let (user, pw, name) = (db.user.clone(), db.password.clone(), db.name.clone());
    let alias = format!("{name}_session");
    let databases = [
        entry(pg, &db, ""),
        db_line(pg, &alias, &name, "pool_mode=session"),
    ]
    .join("\n");
    let pooler = Pooler::start(
        &databases,
        "pool_mode = transaction\ndefault_pool_size = 2",
        &db.userlist_line(),
    )
    .await?;
    let (s, _s) = connect_watched(&pooler, &user, &pw, &alias).await?;
    s.batch_execute(
        "SET statement_timeout = 4242; CREATE TEMP TABLE tt (x int); SELECT pg_advisory_lock(78)",
    )
    .await?;
    let pid = backend_pid(&s).await?;
    // Transaction-mode traffic on the plain entry and another session on the alias, in between.
    let (busy, _b) = connect_db(&pooler, &db).await?;
    let (other, _o) = connect_watched(&pooler, &user, &pw, &alias).await?;
    for i in 0..5 {
        s.batch_execute(&format!("BEGIN; INSERT INTO tt VALUES ({i}); COMMIT"))
            .await?;
        busy.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
        assert_eq!(
            scalar(&other, "SELECT to_regclass('pg_temp.tt') IS NULL").await?,
            "t"
        );
    }
    assert_eq!(backend_pid(&s).await?, pid);
    assert_eq!(scalar(&s, "SHOW statement_timeout").await?, "4242ms");
    assert_eq!(scalar(&s, "SELECT count(*) FROM tt").await?, "5");
    assert_eq!(scalar(&other, "SHOW statement_timeout").await?, "0");
    let holder = pg
        .query_scalar_async(
            &name,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 78 AND granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await?;
    assert_eq!(holder, pid.to_string());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transaction_blocks() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "stmt", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        "pool_mode = statement\ndefault_pool_size = 1",
        &db.userlist_line(),
    )
    .await?;
    let (c, task) = connect_db(&pooler, &db).await?;
    assert_eq!(scalar(&c, "SELECT 1").await?, "1");
    let refused = match c.simple_query("BEGIN").await {
        Err(e) => e,
        Ok(_) => session_end(task, WAIT).await?,
    };
    assert_fatal(
        &refused,
        "08P01",
        "transaction blocks not allowed in statement pooling mode",
    );
    // The only server was not handed on inside that transaction.
    let (next, _n) = connect_db(&pooler, &db).await?;
    assert_eq!(
        scalar_opt(&next, "SELECT txid_current_if_assigned()::text").await?,
        None
    );
    assert_eq!(
        scalar(&next, "SELECT now() = statement_timestamp()").await?,
        "t"
    );
    Ok(())
}
