//! The console's second step: SHOW CLIENTS, SERVERS, SOCKETS, MEM, PLUGINS from the registry of live
//! connections, and the commands that act on connections (KILL, KILL_CLIENT, RECONNECT, DISABLE/ENABLE,
//! SUSPEND, WAIT_CLOSE, PAUSE with pgwarden's TIMEOUT, a PAUSE cancelled or abandoned), plus the extended
//! query protocol on the console (tokio-postgres, psycopg 3). Column lists are PgBouncer 1.25's
//! (doc/usage.md), written out here.

use std::time::{Duration, Instant};

use pgwarden_tests::clients::{Psql, Python};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use pgwarden_tests::raw::RawClient;
use tokio_postgres::{Client, NoTls};

use super::admin::{
    ADMIN, ADMIN_PW, Table, WAIT, WATCHER, WATCHER_PW, base_settings, console, db_error, db_line,
    eventually, fails, start, table, userlist,
};

/// SHOW CLIENTS' and SHOW SERVERS' columns, PgBouncer 1.25's (doc/usage.md, in its order).
const SOCKET_COLUMNS: [&str; 21] = [
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
];

/// What SHOW SOCKETS and SHOW ACTIVE_SOCKETS add (PgBouncer's buffer positions).
const DEBUG_COLUMNS: [&str; 7] = [
    "recv_pos",
    "pkt_pos",
    "pkt_remain",
    "send_pos",
    "send_remain",
    "pkt_avail",
    "send_avail",
];

/// A client of `db` that names itself `app`, so its row can be found.
async fn app_client(pooler: &Pooler, db: &TestDb, app: &str) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pooler.port)
        .user(&db.user)
        .password(&db.password)
        .dbname(&db.name)
        .application_name(app);
    pgwarden_tests::clients::connect_config(&config).await
}

/// The rows of `t` whose `column` is `value`.
fn rows_where<'a>(t: &'a Table, column: &str, value: &str) -> Vec<&'a Vec<Option<String>>> {
    let i = t.col(column);
    t.rows
        .iter()
        .filter(|r| r[i].as_deref() == Some(value))
        .collect()
}

/// The one row of `t` whose `column` is `value`.
fn row_where<'a>(t: &'a Table, column: &str, value: &str) -> &'a Vec<Option<String>> {
    let rows = rows_where(t, column, value);
    assert_eq!(rows.len(), 1, "rows with {column} = {value}: {t:?}");
    rows[0]
}

fn cell(t: &Table, row: &[Option<String>], column: &str) -> String {
    row[t.col(column)].clone().unwrap_or_default()
}

/// Runs a console command that must succeed (a CommandComplete, no error).
async fn ok(client: &Client, sql: &str) -> anyhow::Result<()> {
    let msgs = client.simple_query(sql).await?;
    let done = msgs
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::CommandComplete(_)));
    anyhow::ensure!(done, "{sql}: no CommandComplete in {msgs:?}");
    Ok(())
}

fn psql(pooler: &Pooler) -> Psql {
    Psql::new("127.0.0.1", pooler.port, ADMIN, "pgbouncer").password(ADMIN_PW)
}

/// SHOW CLIENTS and SHOW SERVERS list PgBouncer's columns; a client linked to a server points at it and
/// back, the server's remote_pid is the backend pid the client sees, an unlinked client is idle; SOCKETS
/// adds the buffer columns and ACTIVE_SOCKETS only what is linked; psql reads the same 21 fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_and_servers_point_at_each_other() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_clients", "pool_mode = session").await?;
    let admin = console(&pooler).await?;
    let a = app_client(&pooler, &db, "adm-a").await?;
    let _b = app_client(&pooler, &db, "adm-b").await?;
    let pid: i32 = a.query_one("select pg_backend_pid()", &[]).await?.get(0);

    let c = table(&admin, "SHOW CLIENTS").await?;
    assert_eq!(c.columns, SOCKET_COLUMNS);
    let ra = row_where(&c, "application_name", "adm-a");
    assert_eq!(cell(&c, ra, "type"), "C");
    assert_eq!(cell(&c, ra, "user"), db.user);
    assert_eq!(cell(&c, ra, "database"), db.name);
    assert_eq!(cell(&c, ra, "replication"), "none");
    assert_eq!(cell(&c, ra, "state"), "active");
    assert_eq!(cell(&c, ra, "addr"), "127.0.0.1");
    assert_ne!(cell(&c, ra, "port"), "0");
    assert_eq!(cell(&c, ra, "local_port"), pooler.port.to_string());
    assert_eq!(cell(&c, ra, "close_needed"), "0");
    assert_eq!(cell(&c, ra, "tls"), "");
    assert!(cell(&c, ra, "connect_time").ends_with(" UTC"), "{ra:?}");
    assert!(cell(&c, ra, "ptr").starts_with("0x"));
    let rb = row_where(&c, "application_name", "adm-b");
    assert_eq!(cell(&c, rb, "state"), "idle");
    assert_eq!(cell(&c, rb, "link"), "");
    assert_ne!(cell(&c, ra, "id"), cell(&c, rb, "id"));
    // The console's own client is listed too, in its own database.
    let me = row_where(&c, "database", "pgbouncer");
    assert_eq!(cell(&c, me, "user"), ADMIN);
    assert_eq!(cell(&c, me, "state"), "idle");

    let s = table(&admin, "SHOW SERVERS").await?;
    assert_eq!(s.columns, SOCKET_COLUMNS);
    let rs = row_where(&s, "remote_pid", &pid.to_string());
    assert_eq!(cell(&s, rs, "type"), "S");
    assert_eq!(cell(&s, rs, "state"), "active");
    assert_eq!(cell(&s, rs, "database"), db.name);
    assert_eq!(cell(&s, rs, "user"), db.user);
    assert_eq!(cell(&s, rs, "addr"), "127.0.0.1");
    assert_eq!(cell(&s, rs, "port"), PgCluster::shared().port().to_string());
    assert_eq!(cell(&s, rs, "application_name"), "adm-a");
    assert_eq!(cell(&s, rs, "link"), cell(&c, ra, "ptr"));
    assert_eq!(cell(&c, ra, "link"), cell(&s, rs, "ptr"));
    assert_eq!(cell(&s, rs, "close_needed"), "0");

    let k = table(&admin, "SHOW SOCKETS").await?;
    let mut all: Vec<&str> = SOCKET_COLUMNS.to_vec();
    all.extend(DEBUG_COLUMNS);
    assert_eq!(k.columns, all);
    let states: Vec<String> = k.rows.iter().map(|r| cell(&k, r, "state")).collect();
    assert!(states.iter().any(|s| s == "sv_active"), "{states:?}");
    assert_eq!(states.iter().filter(|s| *s == "cl_active").count(), 3);
    let active = table(&admin, "SHOW ACTIVE_SOCKETS").await?;
    assert_eq!(active.columns, all);
    let ids: Vec<String> = active.rows.iter().map(|r| cell(&active, r, "id")).collect();
    assert!(ids.contains(&cell(&c, ra, "id")) && ids.contains(&cell(&s, rs, "id")));
    assert!(
        !ids.contains(&cell(&c, rb, "id")),
        "an idle client is not active"
    );

    let out = tokio::task::spawn_blocking({
        let p = psql(&pooler);
        move || p.run_ok("SHOW SERVERS")
    })
    .await??;
    let fields: Vec<&str> = out.lines().next().unwrap_or_default().split('|').collect();
    assert_eq!(fields.len(), 21, "{out}");
    assert_eq!(fields[16], pid.to_string());

    // The client leaves: its server goes back to the pool, idle and unlinked.
    drop(a);
    eventually("the server to go idle", || async {
        let s = table(&admin, "SHOW SERVERS").await?;
        let rows = rows_where(&s, "remote_pid", &pid.to_string());
        Ok(rows.len() == 1
            && cell(&s, rows[0], "state") == "idle"
            && cell(&s, rows[0], "link").is_empty())
    })
    .await?;
    Ok(())
}

/// A client queued for the only server shows as waiting, with a wait that grows, and SHOW POOLS counts it;
/// once served it is idle again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_shows_waiting_with_its_wait() -> anyhow::Result<()> {
    let (db, pooler) = start(
        "adm_waiting",
        "pool_mode = transaction\ndefault_pool_size = 1",
    )
    .await?;
    let admin = console(&pooler).await?;
    let a = app_client(&pooler, &db, "adm-a").await?;
    let b = app_client(&pooler, &db, "adm-b").await?;
    a.simple_query("BEGIN; select 1").await?;
    let queued = tokio::spawn(async move { b.simple_query("select 2").await.map(|_| b) });
    eventually("b to wait at least 100 ms", || async {
        let c = table(&admin, "SHOW CLIENTS").await?;
        let r = row_where(&c, "application_name", "adm-b");
        let waited: u64 = cell(&c, r, "wait").parse::<u64>()? * 1_000_000
            + cell(&c, r, "wait_us").parse::<u64>()?;
        Ok(cell(&c, r, "state") == "waiting" && waited >= 100_000)
    })
    .await?;
    let p = table(&admin, "SHOW POOLS").await?;
    assert_eq!(p.get(&db.name, "cl_waiting"), "1");
    let c = table(&admin, "SHOW CLIENTS").await?;
    let ra = row_where(&c, "application_name", "adm-a");
    assert_eq!(cell(&c, ra, "state"), "active");
    assert_eq!(cell(&c, ra, "wait"), "0");
    assert_eq!(cell(&c, ra, "wait_us"), "0");
    a.simple_query("COMMIT").await?;
    let _b = tokio::time::timeout(WAIT, queued).await???;
    let c = table(&admin, "SHOW CLIENTS").await?;
    let rb = row_where(&c, "application_name", "adm-b");
    assert_eq!(cell(&c, rb, "state"), "idle");
    assert_eq!(cell(&c, rb, "wait_us"), "0");
    Ok(())
}

/// KILL_CLIENT ends exactly that client, telling it why (PgBouncer's words), even mid-transaction; the
/// others go on, the server it held is rolled back and serves them; SHOW CLIENTS no longer lists it once
/// the command answers. Bad ids get PgBouncer's errors; a stats user may not kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_ends_exactly_that_client() -> anyhow::Result<()> {
    let (db, pooler) = start(
        "adm_killc",
        "pool_mode = transaction\ndefault_pool_size = 1",
    )
    .await?;
    let admin = console(&pooler).await?;
    let a = app_client(&pooler, &db, "adm-a").await?;
    let c = app_client(&pooler, &db, "adm-c").await?;
    a.simple_query("create table t(x int)").await?;
    let mut victim = RawClient::connect(pooler.port).await?;
    let login = victim
        .login(
            &[
                ("user", db.user.as_str()),
                ("database", db.name.as_str()),
                ("application_name", "victim"),
            ],
            &db.password,
        )
        .await?;
    assert_eq!(login.last().map(|m| m.tag), Some(b'Z'));
    victim.query("BEGIN; insert into t values (1)").await?;

    let t = table(&admin, "SHOW CLIENTS").await?;
    let id = cell(&t, row_where(&t, "application_name", "victim"), "id");
    ok(&admin, &format!("KILL_CLIENT {id}")).await?;
    let t = table(&admin, "SHOW CLIENTS").await?;
    assert!(rows_where(&t, "id", &id).is_empty(), "{t:?}");
    let msg = victim.recv().await?.expect("an error before the close");
    let err = msg.error().expect("ErrorResponse");
    assert_eq!(err.severity, "FATAL");
    assert_eq!(err.code, "08P01");
    assert_eq!(err.message, "admin forced disconnect");
    assert!(victim.recv().await?.is_none(), "closed after the error");

    // The only server was rolled back and serves the others; the insert never happened.
    let n: i64 = a.query_one("select count(*) from t", &[]).await?.get(0);
    assert_eq!(n, 0);
    c.simple_query("select 1").await?;

    let (code, message, _) = fails(&admin, "KILL_CLIENT 999999999").await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("08P01", "client not found")
    );
    let (_, message, _) = fails(&admin, "KILL_CLIENT someone").await;
    assert_eq!(message, "invalid client pointer supplied");
    let watcher = pooler.connect(WATCHER, WATCHER_PW, "pgbouncer").await?;
    let (_, message, _) = fails(&watcher, &format!("KILL_CLIENT {id}")).await;
    assert_eq!(message, "admin access needed");
    Ok(())
}

/// KILL db drops every client and server of that database (clients told "database removed") and pauses
/// it: another database's clients go on, a new client of the killed one waits until RESUME db.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_db_drops_its_clients_and_servers_and_pauses_it() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "adm_killdb", PasswordEncryption::Md5)?;
    let other = format!("{}_b", db.name);
    let databases = format!(
        "{}\n{other} = host=127.0.0.1 port={} dbname={}",
        db_line(pg, &db),
        pg.port(),
        db.name
    );
    let pooler = Pooler::start(
        &databases,
        &base_settings("pool_mode = session"),
        &userlist(&db),
    )
    .await?;
    let admin = console(&pooler).await?;
    let a = pooler.connect_as(&db).await?;
    let b = pooler.connect_as(&db).await?;
    a.simple_query("select 1").await?;
    let c = pooler.connect(&db.user, &db.password, &other).await?;
    c.simple_query("select 1").await?;

    ok(&admin, &format!("KILL {}", db.name)).await?;
    let t = table(&admin, "SHOW CLIENTS").await?;
    assert!(rows_where(&t, "database", &db.name).is_empty(), "{t:?}");
    assert_eq!(rows_where(&t, "database", &other).len(), 1);
    eventually("the killed database's servers to close", || async {
        let s = table(&admin, "SHOW SERVERS").await?;
        Ok(rows_where(&s, "database", &db.name).is_empty())
    })
    .await?;
    let err = a.simple_query("select 1").await.expect_err("killed");
    assert!(
        err.as_db_error()
            .is_none_or(|e| e.message() == "database removed"),
        "{err}"
    );
    eventually("the killed clients' connections to close", || async {
        Ok(a.is_closed() && b.is_closed())
    })
    .await?;
    c.simple_query("select 2").await?;
    let d = table(&admin, "SHOW DATABASES").await?;
    assert_eq!(d.get(&db.name, "paused"), "1");

    let late = pooler.connect_as(&db).await?;
    let query = tokio::spawn(async move { late.simple_query("select 3").await.map(|_| late) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !query.is_finished(),
        "a killed database served a query before RESUME"
    );
    ok(&admin, &format!("RESUME {}", db.name)).await?;
    tokio::time::timeout(WAIT, query).await???;

    let (_, message, _) = fails(&admin, "KILL nope").await;
    assert_eq!(message, "no such database: nope");
    let (_, message, _) = fails(&admin, "KILL pgbouncer").await;
    assert_eq!(message, "cannot kill admin db: pgbouncer");
    Ok(())
}

/// RECONNECT lets a running transaction commit on its server, marks that server close_needed, and closes
/// it at release; WAIT_CLOSE answers only then (and with TIMEOUT gives up with an error before); the next
/// transaction runs on a new backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_closes_servers_after_their_transaction() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_reconnect", "pool_mode = transaction").await?;
    let admin = console(&pooler).await?;
    let a = pooler.connect_as(&db).await?;
    a.simple_query("create table r(x int)").await?;
    a.simple_query("BEGIN").await?;
    let pid: i32 = a.query_one("select pg_backend_pid()", &[]).await?.get(0);
    a.simple_query("insert into r values (1)").await?;

    ok(&admin, "RECONNECT").await?;
    let s = table(&admin, "SHOW SERVERS").await?;
    assert_eq!(
        cell(
            &s,
            row_where(&s, "remote_pid", &pid.to_string()),
            "close_needed"
        ),
        "1"
    );
    let started = Instant::now();
    let (code, message, _) = fails(&admin, "WAIT_CLOSE TIMEOUT 300ms").await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "gave up early"
    );
    assert_eq!(code, "57014");
    assert!(
        message.starts_with("WAIT_CLOSE timed out after 300 ms"),
        "{message}"
    );

    let waiter = console(&pooler).await?;
    let wait_close = tokio::spawn(async move { waiter.simple_query("WAIT_CLOSE").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !wait_close.is_finished(),
        "WAIT_CLOSE answered with a server still to close"
    );
    a.simple_query("COMMIT").await?;
    tokio::time::timeout(WAIT, wait_close).await???;
    let s = table(&admin, "SHOW SERVERS").await?;
    assert!(
        rows_where(&s, "remote_pid", &pid.to_string()).is_empty(),
        "{s:?}"
    );
    let n: i64 = a.query_one("select count(*) from r", &[]).await?.get(0);
    assert_eq!(n, 1, "the transaction committed");
    let again: i32 = a.query_one("select pg_backend_pid()", &[]).await?.get(0);
    assert_ne!(again, pid);

    let (_, message, _) = fails(&admin, "RECONNECT nope").await;
    assert_eq!(message, "no such database: nope");
    let (_, message, _) = fails(&admin, "RECONNECT pgbouncer").await;
    assert_eq!(message, "cannot reconnect admin db: pgbouncer");
    let (_, message, _) = fails(&admin, "WAIT_CLOSE pgbouncer").await;
    assert_eq!(message, "cannot wait in admin db: pgbouncer");
    ok(&admin, &format!("WAIT_CLOSE {}", db.name)).await?;
    Ok(())
}

/// DISABLE refuses new logins with PgBouncer's words and leaves connected clients alone; ENABLE lets them in
/// again; SHOW DATABASES says which; PgBouncer's errors for a missing, unknown or admin database (psql).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_refuses_new_logins_until_enable() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_disable", "").await?;
    let admin = console(&pooler).await?;
    let a = pooler.connect_as(&db).await?;
    let p = psql(&pooler);
    let name = db.name.clone();
    tokio::task::spawn_blocking({
        let p = p.clone();
        move || p.run_ok(&format!("DISABLE {name}"))
    })
    .await??;
    assert_eq!(
        table(&admin, "SHOW DATABASES")
            .await?
            .get(&db.name, "disabled"),
        "1"
    );
    let err = pooler.connect_as(&db).await.expect_err("disabled");
    let (code, message, _) = db_error(
        err.downcast_ref::<tokio_postgres::Error>()
            .expect("a server error"),
    );
    assert_eq!(code, "08P01");
    assert_eq!(message, format!("database \"{}\" is disabled", db.name));
    a.simple_query("select 1").await?;

    let name = db.name.clone();
    tokio::task::spawn_blocking(move || p.run_ok(&format!("ENABLE {name}"))).await??;
    assert_eq!(
        table(&admin, "SHOW DATABASES")
            .await?
            .get(&db.name, "disabled"),
        "0"
    );
    pooler
        .connect_as(&db)
        .await?
        .simple_query("select 1")
        .await?;

    let (_, message, _) = fails(&admin, "DISABLE").await;
    assert_eq!(message, "a database is required");
    let (_, message, _) = fails(&admin, "DISABLE pgbouncer").await;
    assert_eq!(message, "cannot disable admin db: pgbouncer");
    let (_, message, _) = fails(&admin, "ENABLE nope").await;
    assert_eq!(message, "no such database: nope");
    Ok(())
}

/// PAUSE TIMEOUT gives up after its timeout with an error naming what was still in use, and leaves
/// everything resumed (global and per database); a PAUSE whose transaction ends within its timeout
/// completes as a plain PAUSE does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_with_a_timeout_gives_up_and_resumes() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_pause_to", "pool_mode = transaction").await?;
    let admin = console(&pooler).await?;
    let a = pooler.connect_as(&db).await?;
    let b = pooler.connect_as(&db).await?;
    a.simple_query("BEGIN; select 1").await?;

    let started = Instant::now();
    let (code, message, _) = fails(&admin, "PAUSE TIMEOUT 500ms").await;
    let took = started.elapsed();
    assert_eq!(code, "57014");
    assert_eq!(
        message,
        "PAUSE timed out after 500 ms with 1 server connection(s) still in use; resumed"
    );
    assert!(
        took >= Duration::from_millis(450) && took < WAIT,
        "{took:?}"
    );
    let s = table(&admin, "SHOW STATE").await?;
    assert_eq!(s.get("paused", "value"), "no");
    tokio::time::timeout(WAIT, b.simple_query("select 2")).await??;

    let (code, _, _) = fails(&admin, &format!("PAUSE {} TIMEOUT 300ms", db.name)).await;
    assert_eq!(code, "57014");
    assert_eq!(
        table(&admin, "SHOW DATABASES")
            .await?
            .get(&db.name, "paused"),
        "0"
    );
    tokio::time::timeout(WAIT, b.simple_query("select 3")).await??;

    // Within its limit: the transaction ends after 300 ms, the PAUSE (3 s) completes.
    let pause = tokio::spawn(async move {
        let res = admin.simple_query("PAUSE TIMEOUT 3").await;
        (admin, res)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!pause.is_finished());
    a.simple_query("COMMIT").await?;
    let (admin, res) = tokio::time::timeout(WAIT, pause).await??;
    res?;
    assert_eq!(
        table(&admin, "SHOW STATE").await?.get("paused", "value"),
        "yes"
    );
    ok(&admin, "RESUME").await?;
    let (_, message, _) = fails(&admin, "PAUSE TIMEOUT 0").await;
    assert_eq!(message, "bad arguments");
    Ok(())
}

/// A PAUSE interrupted by a cancel request (psql's ^C) answers "canceling statement due to user request"
/// and resumes; a PAUSE whose client goes away resumes too: the pooler is never left paused by a PAUSE
/// that did not complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_pause_resumes() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_pause_cancel", "pool_mode = transaction").await?;
    let admin = console(&pooler).await?;
    let a = pooler.connect_as(&db).await?;
    let b = pooler.connect_as(&db).await?;
    a.simple_query("BEGIN; select 1").await?;
    let paused =
        || async { Ok(table(&admin, "SHOW STATE").await?.get("paused", "value") == "yes") };

    let pauser = console(&pooler).await?;
    let cancel = pauser.cancel_token();
    let pause = tokio::spawn(async move { pauser.simple_query("PAUSE").await });
    eventually("the PAUSE to start", paused).await?;
    cancel.cancel_query(NoTls).await?;
    let err = tokio::time::timeout(WAIT, pause)
        .await??
        .expect_err("cancelled");
    let (code, message, _) = db_error(&err);
    assert_eq!(code, "57014");
    assert_eq!(message, "canceling statement due to user request");
    assert_eq!(
        table(&admin, "SHOW STATE").await?.get("paused", "value"),
        "no"
    );
    tokio::time::timeout(WAIT, b.simple_query("select 2")).await??;

    // A raw client, closed mid-PAUSE (tokio-postgres would keep the socket open for the pending answer).
    let mut leaver = RawClient::connect(pooler.port).await?;
    leaver
        .login(&[("user", ADMIN), ("database", "pgbouncer")], ADMIN_PW)
        .await?;
    let mut q = bytes::BytesMut::new();
    pgwarden::protocol::frontend::write_query(&mut q, "PAUSE");
    leaver.send(&q).await?;
    eventually("the second PAUSE to start", paused).await?;
    drop(leaver);
    eventually("the abandoned PAUSE to resume", || async {
        Ok(table(&admin, "SHOW STATE").await?.get("paused", "value") == "no")
    })
    .await?;
    tokio::time::timeout(WAIT, b.simple_query("select 3")).await??;
    a.simple_query("COMMIT").await?;
    Ok(())
}

/// SUSPEND answers at once and holds new work (a transaction in flight goes on); SHOW STATE says
/// suspended; RESUME releases the held client; the console that suspended leaving resumes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_holds_new_work_until_resume() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_suspend", "pool_mode = transaction").await?;
    let admin = console(&pooler).await?;
    let a = pooler.connect_as(&db).await?;
    let b = pooler.connect_as(&db).await?;
    a.simple_query("BEGIN; select 1").await?;
    tokio::time::timeout(WAIT, admin.simple_query("SUSPEND")).await??;
    let s = table(&admin, "SHOW STATE").await?;
    assert_eq!(
        (
            s.get("active", "value"),
            s.get("paused", "value"),
            s.get("suspended", "value")
        ),
        ("no".into(), "no".into(), "yes".into())
    );
    let (_, message, _) = fails(&admin, "SUSPEND").await;
    assert_eq!(message, "already suspended/paused");
    a.simple_query("select 2; COMMIT").await?;
    let held = tokio::spawn(async move { b.simple_query("select 3").await.map(|_| b) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a new transaction ran while suspended");
    ok(&admin, "RESUME").await?;
    let b = tokio::time::timeout(WAIT, held).await???;

    let other = console(&pooler).await?;
    other.simple_query("SUSPEND").await?;
    drop(other);
    eventually("the suspending console's departure to resume", || async {
        Ok(table(&admin, "SHOW STATE").await?.get("suspended", "value") == "no")
    })
    .await?;
    tokio::time::timeout(WAIT, b.simple_query("select 4")).await??;
    Ok(())
}

/// SHOW MEM has PgBouncer's columns and pgwarden's classes; SHOW PLUGINS lists a loaded plugin with its
/// hooks, scope and counters that follow its calls and denials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_mem_and_plugins() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "adm_mem", PasswordEncryption::Md5)?;
    let pooler = Pooler::start_with_plugins(
        &db_line(pg, &db),
        &base_settings(""),
        &userlist(&db),
        &format!(
            "plugin.readonly.path = builtin:readonly\nplugin.readonly.databases = {}",
            db.name
        ),
    )
    .await?;
    let admin = console(&pooler).await?;
    let app = pooler.connect_as(&db).await?;
    app.simple_query("select 1").await?;
    let err = app
        .simple_query("create table w(x int)")
        .await
        .expect_err("read-only");
    assert!(err.as_db_error().is_some(), "{err}");

    let m = table(&admin, "SHOW MEM").await?;
    assert_eq!(m.columns, ["name", "size", "used", "free", "memtotal"]);
    let names: Vec<&str> = m
        .rows
        .iter()
        .map(|r| r[0].as_deref().unwrap_or(""))
        .collect();
    assert_eq!(names, ["client", "server", "pool", "server_buffers"]);
    assert_eq!(m.get("client", "used"), "2");
    assert_eq!(m.get("server", "used"), "1");
    let size: u64 = m.get("server", "size").parse()?;
    assert_eq!(m.get("server", "memtotal"), size.to_string());

    let p = table(&admin, "SHOW PLUGINS").await?;
    assert_eq!(
        p.columns,
        [
            "name",
            "source",
            "hooks",
            "databases",
            "order",
            "on_error",
            "generation",
            "calls",
            "allows",
            "denials",
            "errors",
            "total_call_time",
            "avg_call_time"
        ]
    );
    assert_eq!(p.get("readonly", "source"), "builtin:readonly");
    assert_eq!(p.get("readonly", "hooks"), "policy");
    assert_eq!(p.get("readonly", "databases"), db.name);
    assert_eq!(p.get("readonly", "on_error"), "deny");
    assert_eq!(p.get("readonly", "calls"), "2");
    assert_eq!(p.get("readonly", "allows"), "1");
    assert_eq!(p.get("readonly", "denials"), "1");
    assert_eq!(p.get("readonly", "errors"), "0");
    Ok(())
}

/// The console answers the extended query protocol: tokio-postgres' prepared queries (binary int4 and
/// text), a command with no rows, an error that leaves the session usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_with_tokio_postgres() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_ext", "").await?;
    let app = pooler.connect_as(&db).await?;
    app.simple_query("select 1").await?;
    let admin = console(&pooler).await?;
    let rows = admin.query("SHOW POOLS", &[]).await?;
    let row = rows
        .iter()
        .find(|r| r.get::<_, String>("database") == db.name)
        .expect("the pool's row");
    assert_eq!(row.get::<_, i32>("cl_active"), 1);
    assert_eq!(row.get::<_, i32>("sv_active"), 1);
    assert_eq!(row.get::<_, String>("pool_mode"), "session");
    let stmt = admin.prepare("SHOW CLIENTS").await?;
    let names: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, SOCKET_COLUMNS);
    let clients = admin.query(&stmt, &[]).await?;
    assert_eq!(clients.len(), 2);
    assert_eq!(admin.execute("RECONNECT", &[]).await?, 0);
    let err = admin.query("SHOW nothing", &[]).await.expect_err("unknown");
    let (code, message, _) = db_error(&err);
    assert_eq!(code, "08P01");
    assert_eq!(message, "invalid command 'SHOW nothing', use SHOW HELP;");
    assert_eq!(admin.query("SHOW VERSION", &[]).await?.len(), 1);
    assert_eq!(table(&admin, "SHOW VERSION").await?.rows.len(), 1);
    Ok(())
}

/// psycopg 3 through the extended protocol (binary results with numerics, prepared statements, a
/// pipeline, an error, a command): what its users get with `binary=True` or `prepare=True`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_with_psycopg3() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_psycopg", "").await?;
    let app = pooler.connect_as(&db).await?;
    app.simple_query("select 1").await?;
    let results = Python::script("psycopg3_console.py")?
        .target("127.0.0.1", pooler.port, ADMIN, ADMIN_PW, "pgbouncer")
        .run_results()
        .await?;
    let check = |name: &str| {
        results
            .iter()
            .find(|r| r.get("check").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {results:?}"))
            .clone()
    };
    let binary = check("binary");
    assert!(
        binary["columns"].starts_with("database,user,cl_active,cl_waiting"),
        "{binary:?}"
    );
    assert_eq!(binary["rows"], "2");
    let numeric = check("binary_numeric");
    assert!(
        numeric["columns"].contains("total_xact_count"),
        "{numeric:?}"
    );
    // The version's first word (RESULT lines split on spaces).
    assert_eq!(check("prepared")["first"], "pgwarden");
    assert_eq!(check("prepared_again")["rows"], "1");
    assert_eq!(check("pipeline_databases")["rows"], "2");
    assert!(check("pipeline_clients")["columns"].starts_with("type,user,database"));
    assert_eq!(check("error")["sqlstate"], "08P01");
    assert_eq!(check("command")["status"], "RECONNECT");
    assert_eq!(check("simple")["rows"], "1");
    Ok(())
}

/// pgjdbc (extended protocol only, a named statement with binary results past its prepareThreshold) reads
/// the console; an error and a command without rows too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_with_pgjdbc() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_jdbc", "ignore_startup_parameters = extra_float_digits").await?;
    let app = pooler.connect_as(&db).await?;
    app.simple_query("select 1").await?;
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/java/ConsoleCheck.java");
    let mut cmd = tokio::process::Command::new("java");
    cmd.arg("-cp")
        .arg(pgwarden_tests::clients::PGJDBC_JAR)
        .arg(&source)
        .env_remove("JAVA_TOOL_OPTIONS")
        .env_remove("CLASSPATH")
        .env("PGW_HOST", "127.0.0.1")
        .env("PGW_PORT", pooler.port.to_string())
        .env("PGW_USER", ADMIN)
        .env("PGW_PASSWORD", ADMIN_PW)
        .env("PGW_DB", "pgbouncer")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgjdbc failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = pgwarden_tests::clients::result_lines(&stdout);
    let check = |name: &str| {
        results
            .iter()
            .find(|r| r.get("check").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .clone()
    };
    let statement = check("statement");
    assert!(
        statement["columns"].starts_with("database,user,cl_active"),
        "{statement:?}"
    );
    assert_eq!(statement["rows"], "2");
    for i in 0..7 {
        let p = check(&format!("prepared{i}"));
        assert!(p["columns"].contains("total_xact_count"), "{p:?}");
        assert_eq!(p["rows"], "2");
    }
    assert_eq!(check("error")["sqlstate"], "08P01");
    assert_eq!(check("command")["updates"], "0");
    Ok(())
}
