//! The admin console (the `pgbouncer` database): who gets in, PgBouncer's columns and errors, SHOW values
//! that follow what clients do, SET and RELOAD changing the running pooler, PAUSE/RESUME, SHUTDOWN.

use std::time::Duration;

use anyhow::{Context, bail};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb, write_config};
use tokio_postgres::{Client, SimpleQueryMessage};

pub(crate) const ADMIN: &str = "admin";
pub(crate) const ADMIN_PW: &str = "admin-secret";
pub(crate) const WATCHER: &str = "watcher";
pub(crate) const WATCHER_PW: &str = "watcher-secret";
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// A result as text: column names, then rows (NULL as `None`).
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub(crate) fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns))
    }

    /// The rows whose first column is `key`.
    pub(crate) fn rows_for(&self, key: &str) -> Vec<&Vec<Option<String>>> {
        self.rows
            .iter()
            .filter(|r| r[0].as_deref() == Some(key))
            .collect()
    }

    /// The value of `column` in the one row whose first column is `key`.
    pub(crate) fn get(&self, key: &str, column: &str) -> String {
        let rows = self.rows_for(key);
        assert_eq!(rows.len(), 1, "rows for {key}: {self:?}");
        rows[0][self.col(column)].clone().unwrap_or_default()
    }
}

pub(crate) async fn table(client: &Client, sql: &str) -> anyhow::Result<Table> {
    let mut t = Table {
        columns: Vec::new(),
        rows: Vec::new(),
    };
    for msg in client.simple_query(sql).await? {
        match msg {
            SimpleQueryMessage::RowDescription(cols) => {
                t.columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(row) => {
                t.rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
            _ => {}
        }
    }
    if t.columns.is_empty() {
        bail!("{sql:?} returned no RowDescription");
    }
    Ok(t)
}

pub(crate) fn db_error(err: &tokio_postgres::Error) -> (String, String, Option<String>) {
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err}"));
    (
        db.code().code().to_owned(),
        db.message().to_owned(),
        db.detail().map(str::to_owned),
    )
}

/// The error `sql` must end in.
pub(crate) async fn fails(client: &Client, sql: &str) -> (String, String, Option<String>) {
    match client.simple_query(sql).await {
        Ok(_) => panic!("{sql:?} succeeded, expected an error"),
        Err(e) => db_error(&e),
    }
}

pub(crate) fn userlist(db: &TestDb) -> String {
    format!(
        "{}\"{ADMIN}\" \"{ADMIN_PW}\"\n\"{WATCHER}\" \"{WATCHER_PW}\"\n\"outsider\" \"outsider-secret\"\n",
        db.userlist_line()
    )
}

pub(crate) fn db_line(pg: &PgCluster, db: &TestDb) -> String {
    format!(
        "{} = host=127.0.0.1 port={} dbname={}",
        db.name,
        pg.port(),
        db.name
    )
}

pub(crate) fn base_settings(extra: &str) -> String {
    format!("auth_type = md5\nadmin_users = {ADMIN}\nstats_users = {WATCHER}\n{extra}")
}

/// A pooler in front of the test's own database, with an admin and a stats user.
pub(crate) async fn start(prefix: &str, extra: &str) -> anyhow::Result<(TestDb, Pooler)> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
    let pooler = Pooler::start(&db_line(pg, &db), &base_settings(extra), &userlist(&db)).await?;
    Ok((db, pooler))
}

pub(crate) async fn console(pooler: &Pooler) -> anyhow::Result<Client> {
    pooler.connect(ADMIN, ADMIN_PW, "pgbouncer").await
}

/// Polls `check` every 20 ms until it holds or WAIT passes.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SHOW VERSION names pgwarden, over tokio-postgres and psql, with any spelling PgBouncer accepts; the
/// console answers under both database names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_version_over_tokio_postgres_and_psql() -> anyhow::Result<()> {
    let (_db, pooler) = start("adm_version", "").await?;
    let client = console(&pooler).await?;
    let t = table(&client, "SHOW VERSION").await?;
    assert_eq!(t.columns, ["version"]);
    assert_eq!(t.rows, [[Some(pgwarden::admin::VERSION.to_owned())]]);
    assert!(pgwarden::admin::VERSION.starts_with("pgwarden "));
    let t = table(&client, "  show\tversion ;").await?;
    assert_eq!(t.rows.len(), 1);
    let other = pooler.connect(ADMIN, ADMIN_PW, "pgwarden").await?;
    assert_eq!(table(&other, "SHOW VERSION").await?.rows.len(), 1);

    let psql = pgwarden_tests::clients::Psql::new("127.0.0.1", pooler.port, ADMIN, "pgbouncer")
        .password(ADMIN_PW);
    let out = tokio::task::spawn_blocking(move || psql.run_ok("SHOW VERSION")).await??;
    assert_eq!(out.trim(), pgwarden::admin::VERSION);
    Ok(())
}

/// SHOW HELP is a NOTICE listing the commands; unknown commands and subjects and several commands at once
/// get PgBouncer's errors and the session goes on; the extended protocol is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_pgbouncers_errors() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_errors", "").await?;
    let psql = pgwarden_tests::clients::Psql::new("127.0.0.1", pooler.port, ADMIN, "pgbouncer")
        .password(ADMIN_PW);
    let out = tokio::task::spawn_blocking(move || psql.run("SHOW HELP")).await??;
    assert!(out.success(), "{out:?}");
    assert!(out.stderr.contains("NOTICE:  Console usage"), "{out:?}");
    assert!(out.stderr.contains("SET key = arg"), "{out:?}");

    let client = console(&pooler).await?;
    for sql in [
        "SHOW nothing",
        "select 1+1",
        "SHOW POOLS; SHOW STATS",
        "FROBNICATE",
    ] {
        let (code, message, _) = fails(&client, sql).await;
        assert_eq!(code, "08P01", "{sql}");
        assert_eq!(message, format!("invalid command '{sql}', use SHOW HELP;"));
    }
    let (code, message, _) = fails(&client, &format!("PAUSE {}", "x".repeat(80))).await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("08P01", "bad arguments")
    );
    // Still the same session.
    assert_eq!(table(&client, "SHOW VERSION").await?.rows.len(), 1);

    // A driver's extended protocol works too (pgwarden's; PgBouncer refuses it): tokio-postgres prepares,
    // describes and asks for binary results.
    let rows = client.query("SHOW VERSION", &[]).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].get::<_, String>("version"),
        pgwarden::admin::VERSION
    );

    // The console never reaches a server: a database client is unaffected and the pool is untouched.
    let app = pooler.connect_as(&db).await?;
    app.simple_query("select 1").await?;
    Ok(())
}

/// admin_users run everything, stats_users only SHOW (SET, RELOAD, PAUSE: "admin access needed"), others
/// are refused before the password exchange, and a wrong password fails as for any client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_follows_admin_users_and_stats_users() -> anyhow::Result<()> {
    let (_db, pooler) = start("adm_access", "").await?;
    let watcher = pooler.connect(WATCHER, WATCHER_PW, "pgbouncer").await?;
    assert!(!table(&watcher, "SHOW POOLS").await?.columns.is_empty());
    for sql in [
        "SET default_pool_size = 3",
        "RELOAD",
        "PAUSE",
        "RESUME",
        "SHUTDOWN",
    ] {
        let (code, message, _) = fails(&watcher, sql).await;
        assert_eq!(
            (code.as_str(), message.as_str()),
            ("08P01", "admin access needed"),
            "{sql}"
        );
    }
    let config = table(&watcher, "SHOW CONFIG").await?;
    assert_eq!(config.get("default_pool_size", "value"), "20");
    // What drivers set is accepted (and ignored) from anyone.
    watcher.simple_query("SET client_encoding = 'UTF8'").await?;

    let err = pooler
        .connect("outsider", "outsider-secret", "pgbouncer")
        .await
        .expect_err("not in admin_users or stats_users");
    let err = err
        .downcast_ref::<tokio_postgres::Error>()
        .context("not a server error")?;
    let (code, message, _) = db_error(err);
    assert_eq!((code.as_str(), message.as_str()), ("08P01", "not allowed"));

    let err = pooler
        .connect(ADMIN, "wrong", "pgbouncer")
        .await
        .expect_err("wrong password");
    let err = err
        .downcast_ref::<tokio_postgres::Error>()
        .context("not a server error")?;
    let (code, message, _) = db_error(err);
    assert_eq!(code, "28P01");
    assert_eq!(
        message,
        format!("password authentication failed for user \"{ADMIN}\"")
    );
    Ok(())
}

/// SHOW POOLS has PgBouncer 1.25's columns, and its counts follow the clients: two session clients hold
/// two servers; when one leaves its server goes idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_pools_follows_clients_and_servers() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_pools", "pool_mode = session").await?;
    let admin = console(&pooler).await?;
    let a = pooler.connect_as(&db).await?;
    let b = pooler.connect_as(&db).await?;
    a.simple_query("select 1").await?;
    b.simple_query("select 1").await?;
    let t = table(&admin, "SHOW POOLS").await?;
    assert_eq!(
        t.columns,
        [
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode",
            "load_balance_hosts"
        ]
    );
    assert_eq!(t.get(&db.name, "user"), db.user);
    assert_eq!(t.get(&db.name, "cl_active"), "2");
    assert_eq!(t.get(&db.name, "cl_waiting"), "0");
    assert_eq!(t.get(&db.name, "sv_active"), "2");
    assert_eq!(t.get(&db.name, "sv_idle"), "0");
    assert_eq!(t.get(&db.name, "pool_mode"), "session");
    // The console's own pool, with this console client in it.
    assert_eq!(t.get("pgbouncer", "cl_active"), "1");

    drop(b);
    eventually("the second client's server to go idle", || async {
        let t = table(&admin, "SHOW POOLS").await?;
        Ok(t.get(&db.name, "cl_active") == "1"
            && t.get(&db.name, "sv_active") == "1"
            && t.get(&db.name, "sv_idle") == "1")
    })
    .await?;
    a.simple_query("select 1").await?;
    Ok(())
}

/// SET changes the running configuration: SHOW CONFIG shows it and the pooler applies it (max_client_conn
/// refuses the next client); unknown keys and bad values fail with "SET failed", a fixed key changes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_changes_what_the_pooler_does() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_set", "").await?;
    let admin = console(&pooler).await?;
    let t = table(&admin, "SHOW CONFIG").await?;
    assert_eq!(t.columns, ["key", "value", "default", "changeable"]);
    assert_eq!(t.get("max_client_conn", "value"), "100");
    assert_eq!(t.get("max_client_conn", "default"), "100");
    assert_eq!(t.get("max_client_conn", "changeable"), "yes");
    assert_eq!(t.get("listen_port", "changeable"), "no");
    assert_eq!(t.get("admin_users", "value"), ADMIN);

    let done = admin.simple_query("SET max_client_conn = 3").await?;
    assert!(
        done.iter()
            .any(|m| matches!(m, SimpleQueryMessage::CommandComplete(_))),
        "{done:?}"
    );
    let t = table(&admin, "SHOW CONFIG").await?;
    assert_eq!(t.get("max_client_conn", "value"), "3");
    // The console is one client: two more fit, the third is refused.
    let _a = pooler.connect_as(&db).await?;
    let _b = pooler.connect_as(&db).await?;
    let err = pooler
        .connect_as(&db)
        .await
        .expect_err("over max_client_conn");
    let (code, message, _) = db_error(
        err.downcast_ref::<tokio_postgres::Error>()
            .context("not a server error")?,
    );
    assert_eq!(code, "08P01");
    assert_eq!(message, "no more connections allowed (max_client_conn)");

    let (code, message, detail) = fails(&admin, "SET no_such_key = 1").await;
    assert_eq!((code.as_str(), message.as_str()), ("08P01", "SET failed"));
    assert!(detail.unwrap_or_default().contains("no_such_key"));
    let (code, message, detail) = fails(&admin, "SET default_pool_size = lots").await;
    assert_eq!((code.as_str(), message.as_str()), ("08P01", "SET failed"));
    assert!(detail.unwrap_or_default().contains("expected an integer"));
    let (_, message, detail) = fails(&admin, "SET auth_type = hba").await;
    assert_eq!(message, "SET failed");
    assert!(detail.unwrap_or_default().contains("not supported"));
    admin.simple_query("SET listen_port = 7777").await?;
    let t = table(&admin, "SHOW CONFIG").await?;
    assert_eq!(t.get("listen_port", "value"), pooler.port.to_string());
    assert_eq!(t.get("default_pool_size", "value"), "20");
    Ok(())
}

/// RELOAD of a broken file is an error naming the problem and the old configuration keeps serving; RELOAD
/// of a good file applies it, and replaces what SET changed (the file wins, as in PgBouncer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reports_a_broken_file_and_keeps_serving() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (db, pooler) = start("adm_reload", "").await?;
    let admin = console(&pooler).await?;
    admin.simple_query("SET default_pool_size = 7").await?;
    write_config(
        &pooler.dir,
        pooler.port,
        &db_line(pg, &db),
        &base_settings("server_lifetime = invalid_server_lifetime"),
        &userlist(&db),
    )?;
    let (code, message, detail) = fails(&admin, "RELOAD").await;
    assert_eq!(code, "F0000");
    assert_eq!(message, "RELOAD failed, see logs for additional details");
    assert!(
        detail
            .as_deref()
            .unwrap_or_default()
            .contains("server_lifetime"),
        "{detail:?}"
    );
    let t = table(&admin, "SHOW CONFIG").await?;
    assert_eq!(t.get("server_lifetime", "value"), "3600");
    assert_eq!(t.get("default_pool_size", "value"), "7");
    let app = pooler.connect_as(&db).await?;
    app.simple_query("select 1").await?;

    write_config(
        &pooler.dir,
        pooler.port,
        &db_line(pg, &db),
        &base_settings("server_lifetime = 1200"),
        &userlist(&db),
    )?;
    admin.simple_query("RELOAD").await?;
    let t = table(&admin, "SHOW CONFIG").await?;
    assert_eq!(t.get("server_lifetime", "value"), "1200");
    assert_eq!(t.get("default_pool_size", "value"), "20");
    let (code, message, _) = fails(&admin, "RELOAD now").await;
    assert_eq!(code, "08P01");
    assert_eq!(message, "invalid command 'RELOAD now', use SHOW HELP;");
    app.simple_query("select 1").await?;
    Ok(())
}

/// PAUSE answers only once the server a transaction holds comes back; while paused no server is handed out
/// (SHOW STATE says so); RESUME serves the waiting client. The per-database form and its errors too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_waits_for_servers_and_resume_serves_again() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_pause", "pool_mode = transaction").await?;
    let admin = console(&pooler).await?;
    let a = pooler.connect_as(&db).await?;
    let b = pooler.connect_as(&db).await?;
    a.simple_query("BEGIN; select 1").await?;

    let pause = tokio::spawn(async move {
        let res = admin.simple_query("PAUSE").await;
        (admin, res)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE answered while a transaction held a server"
    );
    a.simple_query("COMMIT").await?;
    let (admin, res) = tokio::time::timeout(WAIT, pause).await??;
    res?;

    let state = table(&admin, "SHOW STATE").await?;
    assert_eq!(state.columns, ["key", "value"]);
    assert_eq!(state.get("paused", "value"), "yes");
    assert_eq!(state.get("active", "value"), "no");
    let t = table(&admin, "SHOW POOLS").await?;
    assert_eq!(t.get(&db.name, "sv_idle"), "0");
    let (_, message, _) = fails(&admin, "PAUSE").await;
    assert_eq!(message, "already suspended/paused");

    let query = tokio::spawn(async move { b.simple_query("select 2").await.map(|_| b) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!query.is_finished(), "a query ran while paused");
    admin.simple_query("RESUME").await?;
    let _b = tokio::time::timeout(WAIT, query).await???;
    let (code, message, _) = fails(&admin, "RESUME").await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("08P01", "pooler is not paused/suspended")
    );

    // One database.
    admin.simple_query(&format!("PAUSE {}", db.name)).await?;
    let t = table(&admin, "SHOW DATABASES").await?;
    assert_eq!(t.get(&db.name, "paused"), "1");
    let query = tokio::spawn(async move { a.simple_query("select 3").await.map(|_| a) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !query.is_finished(),
        "a query ran while its database was paused"
    );
    admin.simple_query(&format!("RESUME {}", db.name)).await?;
    tokio::time::timeout(WAIT, query).await???;
    let (_, message, _) = fails(&admin, &format!("RESUME {}", db.name)).await;
    assert_eq!(message, format!("database {} is not paused", db.name));
    let (_, message, _) = fails(&admin, "PAUSE nope").await;
    assert_eq!(message, "no such database: nope");
    let (_, message, _) = fails(&admin, "PAUSE pgbouncer").await;
    assert_eq!(message, "cannot pause admin db: pgbouncer");
    Ok(())
}

/// SHOW STATS and friends: PgBouncer's column sets; transactions, queries, server assignments and logins
/// of a database's clients, and the console's own commands and logins in its row and in TOTALS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_stats_counts_what_clients_did() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_stats", "pool_mode = transaction").await?;
    let app = pooler.connect_as(&db).await?;
    for _ in 0..3 {
        app.simple_query("select 1").await?;
    }
    app.simple_query("BEGIN").await?;
    app.simple_query("select 1").await?;
    app.simple_query("select 2").await?;
    app.simple_query("COMMIT").await?;

    let admin = console(&pooler).await?;
    let t = table(&admin, "SHOW STATS").await?;
    assert_eq!(t.columns.len(), 25);
    assert_eq!(
        t.columns[..13],
        [
            "database",
            "total_server_assignment_count",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "total_client_parse_count",
            "total_server_parse_count",
            "total_bind_count",
            "total_client_login_count"
        ]
    );
    assert_eq!(t.columns[13], "avg_server_assignment_count");
    assert_eq!(t.columns[24], "avg_client_login_count");
    assert_eq!(t.get(&db.name, "total_xact_count"), "4");
    assert_eq!(t.get(&db.name, "total_query_count"), "7");
    assert_eq!(t.get(&db.name, "total_server_assignment_count"), "4");
    assert_eq!(t.get(&db.name, "total_client_login_count"), "1");
    // Bytes read from the client: seven Query messages (14 + 14 + 14 + 11 + 14 + 14 + 12 bytes).
    assert_eq!(t.get(&db.name, "total_received"), "93");
    let num = |col: &str| t.get(&db.name, col).parse::<u64>().unwrap_or(0);
    assert!(
        num("total_sent") > 7 * 6,
        "at least a CommandComplete and a ReadyForQuery each"
    );
    assert!(num("total_query_time") > 0, "query time measured");
    assert!(
        // Every query ran inside a transaction that spans it (each figure rounds down to whole us).
        num("total_xact_time") + 10 >= num("total_query_time"),
        "transaction time measured ({} us vs {} us of queries)",
        num("total_xact_time"),
        num("total_query_time")
    );
    // This console's login and this command.
    assert_eq!(t.get("pgbouncer", "total_client_login_count"), "1");
    assert_eq!(t.get("pgbouncer", "total_query_count"), "1");

    let t = table(&admin, "SHOW STATS_TOTALS").await?;
    assert_eq!(
        t.columns,
        [
            "database",
            "server_assignment_count",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
            "client_parse_count",
            "server_parse_count",
            "bind_count",
            "client_login_count"
        ]
    );
    assert_eq!(t.get(&db.name, "xact_count"), "4");
    let t = table(&admin, "SHOW STATS_AVERAGES").await?;
    assert_eq!(
        t.columns[9..],
        [
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
            "avg_client_login_count"
        ]
    );
    let t = table(&admin, "SHOW TOTALS").await?;
    assert_eq!(t.columns, ["name", "value"]);
    assert_eq!(t.rows.len(), 24);
    // 4 transactions of the client and the console's 4 commands so far (this one included).
    assert_eq!(t.get("total_xact_count", "value"), "8");
    assert_eq!(t.get("total_client_login_count", "value"), "2");
    Ok(())
}

/// SHOW DATABASES, USERS, LISTS: PgBouncer's columns, the test database's settings, the console's own row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_databases_users_and_lists() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "adm_dbs", PasswordEncryption::Md5)?;
    let databases = format!("{} pool_size=4 pool_mode=transaction", db_line(pg, &db));
    let users = format!("\n[users]\n{WATCHER} = pool_size=3");
    let pooler = Pooler::start(
        &databases,
        &format!("{}{users}", base_settings("")),
        &userlist(&db),
    )
    .await?;
    let admin = console(&pooler).await?;
    let app = pooler.connect_as(&db).await?;
    app.simple_query("select 1").await?;

    let t = table(&admin, "SHOW DATABASES").await?;
    assert_eq!(
        t.columns,
        [
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool_size",
            "server_lifetime",
            "pool_mode",
            "load_balance_hosts",
            "max_connections",
            "current_connections",
            "max_client_connections",
            "current_client_connections",
            "paused",
            "disabled"
        ]
    );
    assert_eq!(t.get(&db.name, "host"), "127.0.0.1");
    assert_eq!(t.get(&db.name, "port"), pg.port().to_string());
    assert_eq!(t.get(&db.name, "pool_size"), "4");
    assert_eq!(t.get(&db.name, "pool_mode"), "transaction");
    assert_eq!(t.get(&db.name, "current_connections"), "1");
    assert_eq!(t.get(&db.name, "current_client_connections"), "1");
    assert_eq!(t.get(&db.name, "paused"), "0");
    assert_eq!(t.get("pgbouncer", "pool_mode"), "statement");

    let t = table(&admin, "SHOW USERS").await?;
    assert_eq!(
        t.columns,
        [
            "name",
            "pool_size",
            "reserve_pool_size",
            "pool_mode",
            "max_user_connections",
            "current_connections",
            "max_user_client_connections",
            "current_client_connections"
        ]
    );
    assert_eq!(t.get(WATCHER, "pool_size").trim(), "3");
    assert_eq!(t.get(ADMIN, "pool_size"), "");
    assert_eq!(t.get(&db.user, "current_connections"), "1");
    assert_eq!(t.get(&db.user, "current_client_connections"), "1");

    let t = table(&admin, "SHOW LISTS").await?;
    assert_eq!(t.columns, ["list", "items"]);
    let lists: Vec<&str> = t
        .rows
        .iter()
        .map(|r| r[0].as_deref().unwrap_or(""))
        .collect();
    assert_eq!(
        lists,
        [
            "databases",
            "users",
            "peers",
            "pools",
            "peer_pools",
            "free_clients",
            "used_clients",
            "login_clients",
            "free_servers",
            "used_servers",
            "dns_names",
            "dns_zones",
            "dns_queries",
            "dns_pending"
        ]
    );
    assert_eq!(t.get("databases", "items"), "2");
    assert_eq!(t.get("pools", "items"), "2");
    assert_eq!(t.get("used_clients", "items"), "2");
    assert_eq!(t.get("used_servers", "items"), "1");
    Ok(())
}

/// SHUTDOWN from the console stops the pooler: no new client gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_pooler() -> anyhow::Result<()> {
    let (db, pooler) = start("adm_shutdown", "").await?;
    let admin = console(&pooler).await?;
    let (code, message, _) = fails(&admin, "SHUTDOWN LATER").await;
    assert_eq!(code, "08P01");
    assert_eq!(message, "invalid command 'SHUTDOWN LATER', use SHOW HELP;");
    let _ = admin.simple_query("SHUTDOWN").await;
    eventually("the pooler to stop accepting", || async {
        Ok(pooler.connect_as(&db).await.is_err())
    })
    .await
    .context("after SHUTDOWN")?;
    assert!(pooler.state.lifecycle.shutdown_mode().is_some());
    Ok(())
}

/// An immediate shutdown (SHUTDOWN, SIGQUIT, a second SIGINT) ends every session at once, wherever it is: a
/// client idle between transactions, one inside a transaction, one queued for the pool's only server, and a
/// console client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_shutdown_ends_every_session_at_once() -> anyhow::Result<()> {
    let (db, pooler) = start(
        "adm_shut_all",
        "pool_mode = transaction\ndefault_pool_size = 1",
    )
    .await?;
    let idle = pooler.connect_as(&db).await?;
    idle.simple_query("select 1").await?;
    let busy = pooler.connect_as(&db).await?;
    busy.batch_execute("begin; select 1").await?;
    let queued = pooler.connect_as(&db).await?;
    let waiting = tokio::spawn(async move { queued.simple_query("select 2").await.map(drop) });
    let admin = console(&pooler).await?;
    eventually("the third client to queue", || async {
        Ok(table(&admin, "SHOW POOLS")
            .await?
            .get(&db.name, "cl_waiting")
            == "1")
    })
    .await?;

    pooler
        .state
        .shutdown(pgwarden::state::ShutdownMode::Immediate);
    eventually("every session to end", || async {
        Ok(idle.is_closed() && busy.is_closed() && admin.is_closed() && waiting.is_finished())
    })
    .await?;
    assert!(waiting.await?.is_err(), "the queued query got no answer");
    Ok(())
}

/// Console clients count against max_user_client_connections and max_db_client_connections like any
/// client (SHOW USERS and SHOW DATABASES show them), but admins are never refused (PgBouncer's rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_clients_count_against_client_limits_except_admins() -> anyhow::Result<()> {
    let (_db, pooler) = start(
        "adm_limits",
        "max_user_client_connections = 1\nmax_db_client_connections = 3",
    )
    .await?;
    let watcher = pooler.connect(WATCHER, WATCHER_PW, "pgbouncer").await?;
    let err = pooler
        .connect(WATCHER, WATCHER_PW, "pgbouncer")
        .await
        .expect_err("over max_user_client_connections");
    let err = err
        .downcast_ref::<tokio_postgres::Error>()
        .context("not a server error")?;
    let (code, message, _) = db_error(err);
    assert_eq!(code, "08P01");
    assert_eq!(
        message,
        "client connections exceeded (max_user_client_connections)"
    );
    let admin = console(&pooler).await?;
    let _admin2 = console(&pooler).await?;
    let t = table(&admin, "SHOW USERS").await?;
    assert_eq!(t.get(WATCHER, "current_client_connections"), "1");
    assert_eq!(t.get(ADMIN, "current_client_connections"), "2");
    let t = table(&admin, "SHOW DATABASES").await?;
    assert_eq!(t.get("pgbouncer", "current_client_connections"), "3");
    drop(watcher);
    eventually("the stats user to get in again", || async {
        Ok(pooler
            .connect(WATCHER, WATCHER_PW, "pgbouncer")
            .await
            .is_ok())
    })
    .await?;
    Ok(())
}
