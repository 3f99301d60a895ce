//! Session state in transaction pooling. A client's session settings (SET, RESET, set_config, SET SESSION
//! CHARACTERISTICS, RESET ALL) follow it to every server it lands on and reach no other client; state that
//! cannot move between servers (LISTEN, session advisory locks, temporary tables, cursors WITH HOLD, SET
//! ROLE, SQL PREPARE) pins the client to its server until it is gone (`session_state = pin`), is refused
//! before it runs (`reject`), or is left on the server for whoever gets it next, as PgBouncer does
//! (`allow`).
//!
//! Clients are made to change servers for real: with a pool of two servers, two helper clients leave the
//! server a client last used held in an open transaction ([`hold`]), so its next transaction must run on the
//! other one (checked with `pg_backend_pid()`).

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use pgwarden_tests::pg::{PgCluster, quote_ident};
use pgwarden_tests::pooler::{Pooler, TestDb};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification, SimpleQueryMessage};

use crate::pool_support::{
    WAIT, backend_pid, connect_db, entry, finish, pool_of, scalar, setup, spawn_scalar,
    userlist_line, wait_queued, wait_until,
};

/// search_path, statement_timeout, myapp.tenant (empty when never set) and TimeZone, with the backend pid.
const VIEW: &str = "SELECT pg_backend_pid()::text, current_setting('search_path'), \
     current_setting('statement_timeout'), coalesce(current_setting('myapp.tenant', true), ''), \
     current_setting('TimeZone')";

/// What a server session holds that cannot move, counted as PostgreSQL sees it, after the backend pid:
/// `"<pid> <count>"`.
const STATE_PROBE: &str = "SELECT pg_backend_pid()::text || ' ' || (\
     (SELECT count(*) FROM pg_listening_channels()) \
     + (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) \
     + (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) \
     + (SELECT count(*) FROM pg_cursors) \
     + (SELECT count(*) FROM pg_prepared_statements WHERE from_sql) \
     + (CASE WHEN current_user <> session_user THEN 1 ELSE 0 END))::text";

/// The columns of the first row of a simple query (NULL as "<null>").
async fn row(client: &Client, sql: &str) -> anyhow::Result<Vec<String>> {
    for msg in client
        .simple_query(sql)
        .await
        .with_context(|| format!("running {sql:?}"))?
    {
        if let SimpleQueryMessage::Row(r) = msg {
            return Ok((0..r.len())
                .map(|i| r.get(i).unwrap_or("<null>").to_owned())
                .collect());
        }
    }
    bail!("{sql:?} returned no rows")
}

/// [`VIEW`] for `client`: the pid and the four settings.
async fn view(client: &Client) -> anyhow::Result<(i32, Vec<String>)> {
    let mut cols = row(client, VIEW).await?;
    let pid = cols.remove(0).parse()?;
    Ok((pid, cols))
}

/// The error PostgreSQL (or pgwarden in its name) answered `sql` with; fails if it succeeded.
async fn sql_error(client: &Client, sql: &str) -> anyhow::Result<DbError> {
    match client.batch_execute(sql).await {
        Ok(()) => bail!("{sql:?} succeeded, expected an error"),
        Err(e) => e
            .as_db_error()
            .cloned()
            .with_context(|| format!("{sql:?}: not a server error: {e:?}")),
    }
}

/// Leaves server `target` (a backend pid) held in an open transaction by one of the two helper clients and
/// returns that one. With a pool of two servers, when the first helper got the other server, the second gets
/// `target`; then the first lets its server go.
async fn hold<'a>(h1: &'a Client, h2: &'a Client, target: i32) -> anyhow::Result<&'a Client> {
    let steps = async {
        h1.batch_execute("BEGIN").await?;
        if backend_pid(h1).await? == target {
            return Ok(h1);
        }
        h2.batch_execute("BEGIN").await?;
        let got = backend_pid(h2).await?;
        h1.batch_execute("COMMIT").await?;
        ensure!(
            got == target,
            "the helpers got servers other than {target} (pool of two?)"
        );
        Ok(h2)
    };
    tokio::time::timeout(WAIT, steps)
        .await
        .with_context(|| format!("helpers could not get server {target} (is it pinned?)"))?
}

/// A tokio-postgres client through the pooler whose notifications arrive on a channel.
async fn connect_notified(
    pooler: &Pooler,
    db: &TestDb,
) -> anyhow::Result<(Client, UnboundedReceiver<Notification>)> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pooler.port)
        .user(&db.user)
        .password(&db.password)
        .dbname(&db.name);
    let (client, mut conn) = tokio::time::timeout(WAIT, config.connect(NoTls))
        .await
        .context("login timed out")??;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match msg {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send(n);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok((client, rx))
}

/// The next notification, waited for (bounded).
async fn next_notification(
    rx: &mut UnboundedReceiver<Notification>,
) -> anyhow::Result<Notification> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .context("no notification arrived")?
        .context("the connection ended")
}

// ---------------------------------------------------------------------------------------------------
// Settings follow their client
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_their_client_to_every_server_and_reach_no_other() -> anyhow::Result<()> {
    let (db, pooler) = setup("state_follow", "default_pool_size = 2").await?;
    let (a, _a) = connect_db(&pooler, &db).await?;
    let (b, _b) = connect_db(&pooler, &db).await?;
    let (h, _h) = connect_db(&pooler, &db).await?;
    // The server's own TimeZone, as a client that never set one sees it.
    let server_tz = scalar(&b, "SELECT current_setting('TimeZone')").await?;
    assert_ne!(server_tz, "Asia/Tokyo");

    // One simple query with several SETs, and set_config through the extended protocol.
    a.batch_execute(
        "SET search_path TO tenant_a, public; SET statement_timeout = '1500ms'; SET TIME ZONE 'Asia/Tokyo'",
    )
    .await?;
    a.query_one("SELECT set_config('myapp.tenant', $1, false)", &[&"acme"])
        .await?;
    let mine = ["tenant_a, public", "1500ms", "acme", "Asia/Tokyo"];
    let defaults = ["\"$user\", public", "0", "", server_tz.as_str()];
    let (mut last, got) = view(&a).await?;
    assert_eq!(got, mine);

    let mut servers = HashSet::from([last]);
    for round in 0..4 {
        let holder = hold(&b, &h, last).await?;
        let (pid, got) = view(holder).await?;
        assert_eq!(pid, last);
        assert_eq!(
            got, defaults,
            "round {round}: another client on A's previous server {pid} must see the defaults"
        );
        let (pid, got) = view(&a).await?;
        assert_ne!(pid, last, "round {round}: A should have changed servers");
        assert_eq!(got, mine, "round {round}: A on server {pid}");
        holder.batch_execute("COMMIT").await?;
        servers.insert(pid);
        last = pid;
    }
    assert_eq!(servers.len(), 2, "A used both servers: {servers:?}");

    // The timeout is in force on the server A moved to, not only shown.
    let holder = hold(&b, &h, last).await?;
    let e = sql_error(&a, "SELECT pg_sleep(10)").await?;
    assert_eq!(
        (e.code().code(), e.message()),
        ("57014", "canceling statement due to statement timeout")
    );
    holder.batch_execute("COMMIT").await?;
    // Neither helper, on either server, ever ran with A's settings.
    for c in [&b, &h] {
        let (_, got) = view(c).await?;
        assert_eq!(got, defaults);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_and_local_sets_change_nothing_and_resets_follow_the_client()
-> anyhow::Result<()> {
    let (db, pooler) = setup("state_reset", "default_pool_size = 2").await?;
    let (a, _a) = connect_db(&pooler, &db).await?;
    let (b, _b) = connect_db(&pooler, &db).await?;
    let (h, _h) = connect_db(&pooler, &db).await?;
    const SHOW: &str = "SELECT pg_backend_pid()::text, current_setting('search_path'), \
         current_setting('work_mem'), current_setting('statement_timeout'), \
         coalesce(current_setting('myapp.tenant', true), '')";
    let default_work_mem = scalar(&b, "SELECT current_setting('work_mem')").await?;
    assert_ne!(default_work_mem, "9MB");
    let default_path = "\"$user\", public";

    // Moves A to the other server and returns what it sees there.
    let moved = |last: i32| {
        let (a, b, h) = (&a, &b, &h);
        async move {
            let holder = hold(b, h, last).await?;
            let mut got = row(a, SHOW).await?;
            holder.batch_execute("COMMIT").await?;
            let pid: i32 = got.remove(0).parse()?;
            ensure!(pid != last, "A stayed on server {last}");
            anyhow::Ok((pid, got))
        }
    };

    a.batch_execute("SET search_path TO kept_a").await?;
    a.batch_execute("BEGIN; SET search_path TO rolled_back; SET work_mem = '9MB'; ROLLBACK")
        .await?;
    a.batch_execute(
        "BEGIN; SET LOCAL statement_timeout = '777ms'; \
         SELECT set_config('myapp.tenant', 'local_only', true); COMMIT",
    )
    .await?;
    let mut got = row(&a, SHOW).await?;
    let last: i32 = got.remove(0).parse()?;
    assert_eq!(got, ["kept_a", &default_work_mem, "0", ""]);
    let (last, got) = moved(last).await?;
    assert_eq!(
        got,
        ["kept_a", &default_work_mem, "0", ""],
        "on the other server: only the committed session SET"
    );

    // RESET of one setting, then RESET ALL, wherever A goes next.
    a.batch_execute("SET work_mem = '9MB'; SET statement_timeout = '2500ms'")
        .await?;
    let (last, got) = moved(last).await?;
    assert_eq!(got, ["kept_a", "9MB", "2500ms", ""]);
    a.batch_execute("RESET work_mem").await?;
    let (last, got) = moved(last).await?;
    assert_eq!(got, ["kept_a", &default_work_mem, "2500ms", ""]);
    a.batch_execute("RESET ALL").await?;
    for _ in 0..2 {
        let (_, got) = moved(last).await?;
        assert_eq!(got, [default_path, &default_work_mem, "0", ""]);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_characteristics_read_only_follow_the_client_and_no_other() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (db, pooler) = setup("state_readonly", "default_pool_size = 2").await?;
    pg.exec_async(
        &db.name,
        &format!(
            "CREATE TABLE t (a int); ALTER TABLE t OWNER TO {}",
            quote_ident(&db.user)
        ),
    )
    .await?;
    let (a, _a) = connect_db(&pooler, &db).await?;
    let (b, _b) = connect_db(&pooler, &db).await?;
    let (h, _h) = connect_db(&pooler, &db).await?;
    a.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        .await?;
    let mut last = backend_pid(&a).await?;
    let mut servers = HashSet::from([last]);
    for round in 0..3 {
        let e = sql_error(&a, "INSERT INTO t VALUES (1)").await?;
        assert_eq!(
            (e.code().code(), e.message()),
            ("25006", "cannot execute INSERT in a read-only transaction"),
            "round {round}"
        );
        let holder = hold(&b, &h, last).await?;
        // Another client on A's server writes, and has the server's default.
        holder.batch_execute("INSERT INTO t VALUES (2)").await?;
        assert_eq!(
            scalar(holder, "SHOW default_transaction_read_only").await?,
            "off"
        );
        let pid = backend_pid(&a).await?;
        assert_ne!(pid, last);
        assert_eq!(
            scalar(&a, "SHOW default_transaction_read_only").await?,
            "on"
        );
        holder.batch_execute("COMMIT").await?;
        servers.insert(pid);
        last = pid;
    }
    assert_eq!(servers.len(), 2);
    assert_eq!(scalar(&b, "SELECT count(*) FROM t").await?, "3");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// session_state = pin
// ---------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_the_client_notifications_reach_it_and_unlisten_frees_the_server()
-> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (db, pooler) = setup("state_listen", "default_pool_size = 1").await?;
    let (a, mut notes) = connect_notified(&pooler, &db).await?;
    let (b, _b) = connect_db(&pooler, &db).await?;
    let b = Arc::new(b);
    let pool = pool_of(&pooler, &db.name, &db.user)?;

    let x: i32 = scalar(&a, "LISTEN jobs; SELECT pg_backend_pid()")
        .await?
        .parse()?;
    // B asks for the only server: A keeps it, so B waits.
    let probe = spawn_scalar(&b, STATE_PROBE);
    wait_queued(&pool, 1).await?;

    // Notifications sent straight to PostgreSQL reach A while it sits idle, as they would on a direct
    // connection (a worker waiting on its socket for work): its server is still the one listening.
    for i in 0..5 {
        pg.exec_async(&db.name, &format!("NOTIFY jobs, 'n{i}'"))
            .await?;
        let n = next_notification(&mut notes).await?;
        assert_eq!(
            (n.channel(), n.payload()),
            ("jobs", format!("n{i}").as_str()),
            "delivered to idle A"
        );
        assert_eq!(backend_pid(&a).await?, x, "transaction {i} of A");
    }
    assert!(!probe.is_finished(), "B ran while A listened");
    assert_eq!(pool.waiting(), 1);

    // UNLISTEN *: the server is free again; B gets it, with nothing left behind.
    a.batch_execute("UNLISTEN *").await?;
    assert_eq!(finish(probe).await?, format!("{x} 0"));
    // A is an ordinary client again: it shares the server, and no longer hears the channel.
    pg.exec_async(&db.name, "NOTIFY jobs, 'after'").await?;
    assert_eq!(backend_pid(&a).await?, x);
    b.batch_execute("SELECT 1").await?;
    assert!(
        notes.try_recv().is_err(),
        "A still got a notification after UNLISTEN *"
    );
    Ok(())
}

/// One kind of state that cannot move: how a client creates it, uses it in later transactions (each query
/// with the first column it must return), and removes it.
struct Kind {
    name: &'static str,
    create: String,
    uses: Vec<(&'static str, String)>,
    remove: &'static str,
}

/// Every kind, `role` being a role the client's login user may SET ROLE to.
fn kinds(role: &str) -> Vec<Kind> {
    let kind = |name, create: &str, uses: &[(&'static str, &str)], remove| Kind {
        name,
        create: create.to_owned(),
        uses: uses.iter().map(|(q, w)| (*q, (*w).to_owned())).collect(),
        remove,
    };
    vec![
        kind(
            "advisory lock",
            "SELECT pg_advisory_lock(4242)",
            &[(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 \
                 AND pid = pg_backend_pid()",
                "1",
            )],
            "SELECT pg_advisory_unlock_all()",
        ),
        kind(
            "shared advisory lock (try)",
            "SELECT pg_try_advisory_lock_shared(17)",
            &[("SELECT 1", "1")],
            "SELECT pg_advisory_unlock_shared(17)",
        ),
        kind(
            "temporary table",
            "CREATE TEMP TABLE tt (a int)",
            &[
                ("INSERT INTO tt VALUES (1); SELECT count(*) FROM tt", "1"),
                ("INSERT INTO tt VALUES (2); SELECT count(*) FROM tt", "2"),
                ("SELECT sum(a) FROM tt", "3"),
            ],
            "DROP TABLE tt",
        ),
        kind(
            "SELECT INTO TEMP",
            "SELECT 5 AS a INTO TEMP tt2",
            &[("SELECT a FROM tt2", "5")],
            "DROP TABLE tt2",
        ),
        kind(
            "cursor WITH HOLD",
            "DECLARE c CURSOR WITH HOLD FOR SELECT generate_series(1, 10)",
            &[
                ("FETCH 1 FROM c", "1"),
                ("FETCH 1 FROM c", "2"),
                ("FETCH 1 FROM c", "3"),
            ],
            "CLOSE c",
        ),
        kind(
            "SQL PREPARE",
            "PREPARE q(int) AS SELECT $1 * 2",
            &[("EXECUTE q(21)", "42"), ("EXECUTE q(4)", "8")],
            "DEALLOCATE q",
        ),
        kind(
            "SET ROLE",
            &format!("SET ROLE {}", quote_ident(role)),
            &[("SELECT current_user", role)],
            "RESET ROLE",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_state_that_cannot_move_pins_until_it_is_gone() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (db, pooler) = setup("state_pin", "default_pool_size = 1").await?;
    let role = PgCluster::unique_name("state_pin_role");
    pg.exec_async(
        "postgres",
        &format!(
            "CREATE ROLE {0}; GRANT {0} TO {1}",
            quote_ident(&role),
            quote_ident(&db.user)
        ),
    )
    .await?;
    let (b, _b) = connect_db(&pooler, &db).await?;
    let b = Arc::new(b);
    let pool = pool_of(&pooler, &db.name, &db.user)?;

    for kind in kinds(&role) {
        let name = kind.name;
        let (a, _a) = connect_db(&pooler, &db).await?;
        a.batch_execute(&kind.create)
            .await
            .with_context(|| format!("{name}: creating"))?;
        let x = backend_pid(&a).await?;
        // B asks for the only server: A keeps it, so B waits.
        let probe = spawn_scalar(&b, STATE_PROBE);
        wait_queued(&pool, 1)
            .await
            .with_context(|| format!("{name}: B was not kept waiting"))?;
        for (sql, want) in &kind.uses {
            assert_eq!(&scalar(&a, sql).await?, want, "{name}: {sql}");
            assert_eq!(backend_pid(&a).await?, x, "{name}: A changed servers");
        }
        assert!(!probe.is_finished(), "{name}: B ran while A held its state");
        a.batch_execute(kind.remove)
            .await
            .with_context(|| format!("{name}: removing"))?;
        let got = finish(probe)
            .await
            .with_context(|| format!("{name}: B never got the server"))?;
        assert_eq!(
            got,
            format!("{x} 0"),
            "{name}: B gets A's server, with nothing left behind"
        );
        assert_eq!(backend_pid(&a).await?, x, "{name}: A goes on");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_gone_by_the_end_of_the_transaction_does_not_pin() -> anyhow::Result<()> {
    let (db, pooler) = setup("state_nopin", "default_pool_size = 1").await?;
    let (a, _a) = connect_db(&pooler, &db).await?;
    let (b, _b) = connect_db(&pooler, &db).await?;
    let b = Arc::new(b);
    let x = backend_pid(&a).await?;
    // Each statement looks like it creates sticky state, but nothing is left once its transaction ends:
    // A keeps no server, so B (on the only one) gets it at once.
    for sql in [
        "BEGIN; SELECT pg_advisory_xact_lock(5); CREATE TEMP TABLE x (a int) ON COMMIT DROP; \
         DECLARE c CURSOR FOR SELECT 1; COMMIT",
        "LISTEN jobs; UNLISTEN jobs",
        "BEGIN; LISTEN jobs; ROLLBACK",
        "SELECT pg_advisory_lock(6); SELECT pg_advisory_unlock(6)",
        "CREATE TEMP TABLE y (a int); DROP TABLE y",
        "BEGIN; DECLARE h CURSOR WITH HOLD FOR SELECT 1; ROLLBACK",
        "PREPARE p AS SELECT 1; DEALLOCATE p",
    ] {
        a.batch_execute(sql).await?;
        let got = finish(spawn_scalar(&b, STATE_PROBE))
            .await
            .with_context(|| format!("after {sql:?} B could not get the server"))?;
        assert_eq!(got, format!("{x} 0"), "after {sql:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_client_that_leaves_takes_its_server_connection_with_it() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (db, pooler) = setup("state_leave", "default_pool_size = 2").await?;
    let admin = pg.admin_client("postgres").await?;
    let gone = |pid: i32, what: &'static str| {
        let admin = &admin;
        wait_until(what, WAIT, move || async move {
            let row = admin
                .query_one(
                    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE pid = $1) \
                          + (SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory')",
                    &[&pid],
                )
                .await?;
            Ok(row.get::<_, i64>(0) == 0)
        })
    };

    // tokio-postgres says goodbye (Terminate) while holding an advisory lock.
    let (a, a_task) = connect_db(&pooler, &db).await?;
    let x: i32 = scalar(
        &a,
        "SELECT pg_backend_pid() FROM (SELECT pg_advisory_lock(4711)) AS locked",
    )
    .await?
    .parse()?;
    let held = admin
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4711 AND pid = $1",
            &[&x],
        )
        .await?;
    assert_eq!(held.get::<_, i64>(0), 1);
    drop(a);
    let _ = tokio::time::timeout(WAIT, a_task).await;
    gone(x, "the lock holder's backend to end").await?;
    let (c, _c) = connect_db(&pooler, &db).await?;
    let got = row(&c, "SELECT pg_try_advisory_lock(4711), pg_backend_pid()").await?;
    assert_eq!(got[0], "t", "the lock was released");
    assert_ne!(got[1], x.to_string());
    c.batch_execute("SELECT pg_advisory_unlock_all()").await?;

    // A client that just drops its socket while listening.
    let (mut raw, _) = crate::protocol::raw_login(&pooler, &db, &[]).await?;
    let y: i32 = crate::protocol::raw_row(&mut raw, "LISTEN gone; SELECT pg_backend_pid()").await?
        [0]
    .parse()?;
    drop(raw);
    gone(y, "the listener's backend to end").await?;
    // Whoever comes next inherits nothing.
    let got = scalar(&c, STATE_PROBE).await?;
    assert!(got.ends_with(" 0"), "{got}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// session_state = reject and allow
// ---------------------------------------------------------------------------------------------------

/// Each statement creating state that cannot move, with what the refusal calls it.
const STICKY: &[(&str, &str)] = &[
    ("LISTEN jobs", "LISTEN"),
    ("SELECT pg_advisory_lock(1)", "session-level advisory locks"),
    (
        "SELECT pg_try_advisory_lock_shared(2)",
        "session-level advisory locks",
    ),
    ("CREATE TEMP TABLE tt (a int)", "temporary tables"),
    ("SELECT 1 AS a INTO TEMP tt2", "temporary tables"),
    (
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "cursors WITH HOLD",
    ),
    (
        "SET ROLE pg_monitor",
        "SET ROLE and SET SESSION AUTHORIZATION",
    ),
    ("PREPARE q AS SELECT 1", "SQL PREPARE"),
];

fn assert_refused(e: &DbError, what: &str, hint: &str) {
    assert_eq!(
        (
            e.severity(),
            e.code().code(),
            e.message(),
            e.detail(),
            e.hint()
        ),
        (
            "ERROR",
            "0A000",
            format!("{what} cannot be used with transaction pooling").as_str(),
            Some("pgwarden's session_state = reject for this database"),
            Some(hint)
        )
    );
}

/// Every sticky statement is refused with `hint`, before it runs; the connection stays usable, and inside a
/// transaction block the transaction fails as PostgreSQL's own errors make it.
async fn check_rejects(a: &Client, hint: &str) -> anyhow::Result<()> {
    for (sql, what) in STICKY {
        let e = sql_error(a, sql).await?;
        assert_refused(&e, what, hint);
        // The extended protocol too (tokio-postgres prepares the statement first).
        let e = a
            .query(*sql, &[])
            .await
            .err()
            .with_context(|| format!("{sql}: ran through Parse"))?;
        assert_refused(e.as_db_error().context("not a server error")?, what, hint);
        assert_eq!(
            scalar(a, STATE_PROBE).await?.split(' ').nth(1),
            Some("0"),
            "{sql} ran"
        );
    }
    a.batch_execute("BEGIN").await?;
    assert_refused(&sql_error(a, "LISTEN jobs").await?, "LISTEN", hint);
    let e = sql_error(a, "SELECT 1").await?;
    assert_eq!(
        (e.code().code(), e.message()),
        (
            "25P02",
            "current transaction is aborted, commands ignored until end of transaction block"
        )
    );
    a.batch_execute("ROLLBACK").await?;
    assert_eq!(scalar(a, "SELECT 1 + 1").await?, "2");
    // What only looks like it (inside a string) or ends with its transaction runs.
    assert_eq!(scalar(a, "SELECT 'LISTEN jobs'").await?, "LISTEN jobs");
    a.batch_execute("BEGIN; SELECT pg_advisory_xact_lock(3); COMMIT")
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_refuses_sticky_statements_naming_a_session_alias_when_there_is_one()
-> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(
        pg,
        "state_reject",
        pgwarden_tests::pg::PasswordEncryption::Md5,
    )?;
    let alias = format!("{}_session", db.name);
    let pooler = Pooler::start(
        &format!(
            "{}\n{}",
            entry(pg, &db, "session_state=reject"),
            crate::pool_support::db_line(pg, &alias, &db.name, "pool_mode=session")
        ),
        "pool_mode = transaction\ndefault_pool_size = 2",
        &userlist_line(&db.user, &db.password),
    )
    .await?;
    let (a, _a) = connect_db(&pooler, &db).await?;
    check_rejects(
        &a,
        &format!("connect to database \"{alias}\" (session pooling) instead"),
    )
    .await?;
    // The session-mode entry is untouched by the policy.
    let (s, _s) =
        crate::pool_support::connect_watched(&pooler, &db.user, &db.password, &alias).await?;
    assert_eq!(
        scalar(
            &s,
            "LISTEN jobs; COMMIT; SELECT string_agg(c, ',') FROM pg_listening_channels() c"
        )
        .await?,
        "jobs"
    );

    // The global setting, with no session-mode entry to suggest.
    let db2 = TestDb::create(
        pg,
        "state_reject2",
        pgwarden_tests::pg::PasswordEncryption::Md5,
    )?;
    let pooler2 = Pooler::start(
        &entry(pg, &db2, ""),
        "pool_mode = transaction\ndefault_pool_size = 2\nsession_state = reject",
        &userlist_line(&db2.user, &db2.password),
    )
    .await?;
    let (a2, _a2) = connect_db(&pooler2, &db2).await?;
    check_rejects(
        &a2,
        "use a database entry with pool_mode = session for this client",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_leaves_state_on_the_server_as_pgbouncer_does() -> anyhow::Result<()> {
    let (db, pooler) = setup(
        "state_allow",
        "default_pool_size = 2\nsession_state = allow",
    )
    .await?;
    let (a, _a) = connect_db(&pooler, &db).await?;
    let (b, _b) = connect_db(&pooler, &db).await?;
    let (h, _h) = connect_db(&pooler, &db).await?;
    let x: i32 = scalar(&a, "LISTEN jobs; SELECT pg_backend_pid()")
        .await?
        .parse()?;
    // Not pinned: another client can take A's server, and finds A's LISTEN there.
    let holder = hold(&b, &h, x).await?;
    assert_eq!(
        scalar(
            holder,
            "SELECT string_agg(c, ',') FROM pg_listening_channels() c"
        )
        .await?,
        "jobs"
    );
    assert_ne!(backend_pid(&a).await?, x, "A moved to the other server");
    holder.batch_execute("COMMIT").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_set_does_not_keep_other_settings_from_following_the_client() -> anyhow::Result<()>
{
    let (db, pooler) = setup("state_refused_set", "default_pool_size = 2").await?;
    let (a, _a) = connect_db(&pooler, &db).await?;
    let (b, _b) = connect_db(&pooler, &db).await?;
    let (h, _h) = connect_db(&pooler, &db).await?;
    a.batch_execute("SET search_path TO tenant_a, public; SET work_mem = '9MB'")
        .await?;
    // Settings the client may not change: PostgreSQL refuses them and nothing changes.
    let e = sql_error(&a, "SET log_statement = 'all'").await?;
    assert_eq!(
        (e.code().code(), e.message()),
        (
            "42501",
            "permission denied to set parameter \"log_statement\""
        )
    );
    let e = sql_error(&a, "SET shared_buffers = '1MB'").await?;
    assert_eq!(e.code().code(), "55P02");
    let show = "SELECT pg_backend_pid()::text, current_setting('search_path'), \
                current_setting('work_mem'), current_setting('log_statement')";
    let mut last: i32 = row(&a, show).await?[0].parse()?;
    for round in 0..3 {
        let holder = hold(&b, &h, last).await?;
        let mut got = row(&a, show).await?;
        holder.batch_execute("COMMIT").await?;
        let pid: i32 = got.remove(0).parse()?;
        assert_ne!(pid, last);
        assert_eq!(
            got,
            ["tenant_a, public", "9MB", "none"],
            "round {round}: A on server {pid}"
        );
        last = pid;
    }
    Ok(())
}
