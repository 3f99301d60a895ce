//! The users' runbooks (`/work/shared/seeds/`) run on pgwarden with no change but the binary:
//! 000, a docker-compose sidecar with md5 auth over a plain userlist.txt, in transaction mode; 003, a
//! telemetry stack in transaction mode with 20 + 5 reserve servers, a session-mode alias for the analytics
//! role, and SCRAM verifiers copied from pg_shadow (its auth_query/auth_user lines left out).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use pgwarden_tests::clients;
use pgwarden_tests::pg::{ClusterOptions, PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, free_port, fresh_dir, pgwarden_bin};
use pgwarden_tests::raw::{Msg, RawClient, first_error};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Runbook 000's `./bouncer/pgbouncer.ini`, verbatim.
const INI_000: &str = "################## Auto generated ##################
[databases]
db = host=localhost port=5432 dbname=postgres

[pgbouncer]
listen_addr = *
listen_port = 6432
auth_type = md5
auth_file = /etc/pgbouncer/userlist.txt
pool_mode = transaction
default_pool_size = 20
max_client_conn = 200
ignore_startup_parameters = extra_float_digits

# Log settings
admin_users = postgres
";

/// Runbook 000's `./bouncer/userlist.txt`, verbatim.
const USERLIST_000: &str = "\"admin\" \"password123\"\n\"user\" \"password\"\n";

/// Runbook 003's `pgbouncer.ini`, as its README describes it (the file itself is not in the runbook):
/// transaction pooling, 20 + 5 reserve for the one database, the session-mode alias planned for the
/// analytics MCP, `options` and `extra_float_digits` ignored. Left out: `auth_user`/`auth_query` (every user
/// is in userlist.txt instead). `reserve_pool_timeout` is not given by the runbook; 1 s keeps the test short.
const INI_003: &str = "[databases]
tracksolid_db = host=timescale_db port=5432 dbname=tracksolid_db
; analytics MCP: session pooling, so its set_session(readonly=True) cannot leak to other clients
tracksolid_db_session = host=timescale_db port=5432 dbname=tracksolid_db pool_mode=session

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/userlist.txt
pool_mode = transaction
default_pool_size = 20
reserve_pool_size = 5
reserve_pool_timeout = 1
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits,options
admin_users = pgbouncer_auth
stats_users = pgbouncer_auth
";

/// Replaces `from` (which must occur) by `to`.
fn substitute(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    ensure!(text.contains(from), "{from:?} not in the runbook config");
    Ok(text.replace(from, to))
}

/// A runbook config in a fresh directory: `pg_target` replaces the server's `host=… port=…`, the listener
/// port and auth_file path are made local. Returns (ini path, directory, listen port).
fn write_runbook(
    ini: &str,
    userlist: &str,
    server: Option<(&str, &PgCluster)>,
) -> anyhow::Result<(PathBuf, PathBuf, u16)> {
    let dir = fresh_dir("runbook")?;
    let port = free_port()?;
    let auth = dir.join("userlist.txt");
    std::fs::write(&auth, userlist)?;
    let mut text = substitute(
        ini,
        "/etc/pgbouncer/userlist.txt",
        &auth.display().to_string(),
    )?;
    text = substitute(
        &text,
        "listen_port = 6432",
        &format!("listen_port = {port}"),
    )?;
    if let Some((host_port, pg)) = server {
        text = substitute(
            &text,
            host_port,
            &format!("host=127.0.0.1 port={}", pg.port()),
        )?;
    }
    let path = dir.join("pgbouncer.ini");
    std::fs::write(&path, text)?;
    Ok((path, dir, port))
}

/// Every row of a simple query, each as its text columns.
async fn rows(client: &Client, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let mut out = Vec::new();
    for msg in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = msg {
            out.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            );
        }
    }
    Ok(out)
}

async fn scalar(client: &Client, sql: &str) -> anyhow::Result<String> {
    rows(client, sql)
        .await?
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .with_context(|| format!("{sql:?} returned no value"))
}

/// Client backends of `user` on the cluster.
async fn backends_of(pg: &PgCluster, user: &str) -> anyhow::Result<i64> {
    let n = pg
        .query_scalar_async(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE usename = '{user}' AND backend_type = 'client backend'"
            ),
        )
        .await?;
    Ok(n.parse()?)
}

/// Runs every client's `sql` at once while sampling the backends of `user`; returns the most seen.
async fn peak_backends_during(
    pg: &Arc<PgCluster>,
    user: &str,
    clients: &[Arc<Client>],
    sql: &'static str,
) -> anyhow::Result<i64> {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        let user = user.to_owned();
        let pg = Arc::clone(pg);
        tokio::spawn(async move {
            let mut max = 0;
            while !stop.load(Ordering::Acquire) {
                max = max.max(backends_of(&pg, &user).await?);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(max)
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        let c = Arc::clone(c);
        tasks.spawn(async move { c.simple_query(sql).await });
    }
    let mut failures = Vec::new();
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res? {
            failures.push(e.to_string());
        }
    }
    stop.store(true, Ordering::Release);
    let peak = sampler.await??;
    ensure!(failures.is_empty(), "queries failed: {failures:?}");
    Ok(peak)
}

/// A cluster of the test's own (the runbooks' fixed role names would collide on the shared one), shared
/// with sampler tasks.
fn own_cluster(opts: ClusterOptions) -> anyhow::Result<Arc<PgCluster>> {
    Ok(Arc::new(PgCluster::start(opts)?))
}

/// The startup packet pgjdbc sends (it always asks for extra_float_digits).
const PGJDBC_STARTUP: [(&str, &str); 7] = [
    ("user", "admin"),
    ("database", "db"),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "2"),
    ("application_name", "PostgreSQL JDBC Driver"),
];

/// The text of each column of the first DataRow among `msgs`.
fn first_data_row(msgs: &[Msg]) -> anyhow::Result<Vec<String>> {
    let Some(row) = msgs.iter().find(|m| m.tag == b'D') else {
        bail!("no DataRow in {msgs:?}")
    };
    let body = &row.body;
    let n = u16::from_be_bytes([body[0], body[1]]);
    let mut at = 2;
    let mut out = Vec::new();
    for _ in 0..n {
        let len = i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
        at += 4;
        let len = usize::try_from(len).context("NULL column")?;
        out.push(String::from_utf8(body[at..at + len].to_vec())?);
        at += len;
    }
    Ok(out)
}

/// Runbook 000: the sidecar config and userlist as written. Clients switch by changing the port and see the
/// same answers; a JDBC-style startup with extra_float_digits logs in (and is refused by the same config
/// without that ignore line); a leaky client pool of 50 connections runs on no more than 20 servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_000_md5_sidecar_in_transaction_mode() -> anyhow::Result<()> {
    // Its own server: the runbook's users are plainly named `admin` and `user`. postgres:16 stores SCRAM.
    let pg = own_cluster(ClusterOptions::default())?;
    pg.create_role("admin", "password123", PasswordEncryption::Scram)?;
    pg.create_role("user", "password", PasswordEncryption::Scram)?;
    let (ini, dir, port) = write_runbook(
        INI_000,
        USERLIST_000,
        Some(("host=localhost port=5432", &pg)),
    )?;
    let pooler = Pooler::start_file(&ini, dir, port).await?;

    // Same user, password and queries; only the port (and the alias name) differs.
    let sql = "SELECT current_user, current_database(), version(), \
               current_setting('DateStyle'), current_setting('TimeZone'), current_setting('client_encoding')";
    for (user, password) in [("admin", "password123"), ("user", "password")] {
        let direct =
            clients::connect("127.0.0.1", pg.port(), user, Some(password), "postgres").await?;
        let pooled = pooler.connect(user, password, "db").await?;
        let want = rows(&direct, sql).await?;
        assert_eq!(rows(&pooled, sql).await?, want);
        assert_eq!(want[0][0].as_deref(), Some(user));
    }

    // pgjdbc's startup packet: extra_float_digits is ignored, not refused (and not passed on).
    let mut jdbc = RawClient::connect(pooler.port).await?;
    let login = jdbc.login(&PGJDBC_STARTUP, "password123").await?;
    assert_eq!(first_error(&login), None);
    assert_eq!(login.last().map(|m| m.tag), Some(b'Z'));
    let answer = jdbc
        .query("SELECT current_user, current_setting('extra_float_digits')")
        .await?;
    assert_eq!(first_data_row(&answer)?, ["admin", "1"]);

    // The ignore line is what lets it in: without it, PgBouncer's refusal.
    let without = INI_000.replace("ignore_startup_parameters = extra_float_digits\n", "");
    let (ini, dir, port) = write_runbook(
        &without,
        USERLIST_000,
        Some(("host=localhost port=5432", &pg)),
    )?;
    let strict = Pooler::start_file(&ini, dir, port).await?;
    let mut jdbc = RawClient::connect(strict.port).await?;
    let refused = jdbc.login(&PGJDBC_STARTUP, "password123").await?;
    let err = first_error(&refused).context("no error without the ignore line")?;
    assert_eq!(
        (err.code.as_str(), err.message.as_str()),
        ("08P01", "unsupported startup parameter: extra_float_digits")
    );

    // A leaky pool (DataLens, Airflow): 50 connections at once, at most 20 servers.
    let mut leaky = Vec::new();
    for _ in 0..50 {
        leaky.push(Arc::new(pooler.connect("user", "password", "db").await?));
    }
    let peak = peak_backends_during(&pg, "user", &leaky, "SELECT pg_sleep(0.2)").await?;
    assert_eq!(peak, 20);
    assert_eq!(backends_of(&pg, "user").await?, 20);
    Ok(())
}

/// Runbook 003: the telemetry stack's setup. Services share 20 servers in transaction mode and a burst
/// reaches at most 25 with the reserve; the analytics MCP's DSN (with `options=`) logs in, its role-level
/// read-only setting holds, its `SET` persists across transactions on the session-mode alias, while the
/// transaction-mode alias hands servers between clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_003_transaction_pool_reserve_and_session_alias() -> anyhow::Result<()> {
    let pg = own_cluster(ClusterOptions {
        max_connections: 100,
        ..ClusterOptions::default()
    })?;
    for role in ["pgbouncer_auth", "ingest_worker", "analytics_ro"] {
        pg.create_role(role, &format!("{role}-secret"), PasswordEncryption::Scram)?;
    }
    pg.create_database("tracksolid_db", "ingest_worker")?;
    pg.exec(
        "postgres",
        "ALTER ROLE analytics_ro SET default_transaction_read_only = on; \
         ALTER ROLE analytics_ro SET statement_timeout = '30s'",
    )?;
    // Deploy step 2, for every user: the stored verifiers, copied from pg_shadow.
    let userlist = pg.query_scalar(
        "postgres",
        "SELECT string_agg('\"' || usename || '\" \"' || passwd || '\"', E'\\n' ORDER BY usename) || E'\\n' \
         FROM pg_shadow WHERE usename IN ('pgbouncer_auth', 'ingest_worker', 'analytics_ro')",
    )?;
    assert_eq!(
        userlist.matches("\"SCRAM-SHA-256$").count(),
        3,
        "{userlist}"
    );
    let (ini, dir, port) = write_runbook(
        INI_003,
        &userlist,
        Some(("host=timescale_db port=5432", &pg)),
    )?;
    let pooler = Pooler::start_file(&ini, dir, port).await?;

    let ingest = pooler
        .connect("ingest_worker", "ingest_worker-secret", "tracksolid_db")
        .await?;
    ingest
        .batch_execute(
            "CREATE TABLE positions(vehicle int, at timestamptz DEFAULT now()); \
             GRANT SELECT, INSERT ON positions TO analytics_ro; \
             BEGIN; INSERT INTO positions(vehicle) VALUES (1), (2); COMMIT",
        )
        .await?;

    // The MCP's DSN, options= included: the GUCs are dropped, the role's own settings apply.
    let mut mcp_config = tokio_postgres::Config::new();
    mcp_config
        .host("127.0.0.1")
        .port(pooler.port)
        .user("analytics_ro")
        .password("analytics_ro-secret")
        .dbname("tracksolid_db_session")
        .options("-c default_transaction_read_only=on -c statement_timeout=30000");
    let mcp = clients::connect_config(&mcp_config).await?;
    assert_eq!(
        scalar(&mcp, "SHOW default_transaction_read_only").await?,
        "on"
    );
    assert_eq!(scalar(&mcp, "SELECT count(*) FROM positions").await?, "2");
    let err = mcp
        .batch_execute("INSERT INTO positions(vehicle) VALUES (3)")
        .await
        .err()
        .context("the read-only role wrote")?;
    assert_eq!(err.code().map(|c| c.code()), Some("25006"), "{err}");

    // Session alias: the MCP's SET stays, on its own server, while another session holds a transaction.
    mcp.batch_execute("SET statement_timeout = '4321ms'")
        .await?;
    let mcp_pid = scalar(&mcp, "SELECT pg_backend_pid()").await?;
    let other = pooler
        .connect(
            "analytics_ro",
            "analytics_ro-secret",
            "tracksolid_db_session",
        )
        .await?;
    other.batch_execute("BEGIN").await?;
    assert_ne!(scalar(&other, "SELECT pg_backend_pid()").await?, mcp_pid);
    mcp.batch_execute("BEGIN").await?;
    assert_eq!(scalar(&mcp, "SHOW statement_timeout").await?, "4321ms");
    mcp.batch_execute("COMMIT").await?;
    assert_eq!(scalar(&mcp, "SELECT pg_backend_pid()").await?, mcp_pid);
    other.batch_execute("COMMIT").await?;

    // Transaction alias: a server goes back at COMMIT and the next transaction may land elsewhere.
    let first = pooler
        .connect("analytics_ro", "analytics_ro-secret", "tracksolid_db")
        .await?;
    let second = pooler
        .connect("analytics_ro", "analytics_ro-secret", "tracksolid_db")
        .await?;
    let before = scalar(&first, "SELECT pg_backend_pid()").await?;
    second.batch_execute("BEGIN").await?;
    assert_eq!(scalar(&second, "SELECT pg_backend_pid()").await?, before);
    assert_ne!(scalar(&first, "SELECT pg_backend_pid()").await?, before);
    second.batch_execute("COMMIT").await?;

    // Sizing: 26 service clients at once get 20 servers, then the 5 of the reserve: never more than 25.
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..26 {
        let port = pooler.port;
        logins.spawn(async move {
            let secret = Some("ingest_worker-secret");
            clients::connect("127.0.0.1", port, "ingest_worker", secret, "tracksolid_db").await
        });
    }
    let mut services = Vec::new();
    while let Some(client) = logins.join_next().await {
        services.push(Arc::new(client??));
    }
    let peak =
        peak_backends_during(&pg, "ingest_worker", &services, "SELECT pg_sleep(1.3)").await?;
    assert_eq!(peak, 25);
    Ok(())
}

/// Runs `pgwarden --check` on a config.
fn check(ini: &Path) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(pgwarden_bin()?)
        .arg("--check")
        .arg(ini)
        .output()?)
}

/// Both runbooks' configs pass `pgwarden --check` (only the auth_file path made local) and it lists their
/// pools as the runbooks mean them.
#[test]
fn runbook_configs_pass_check_and_list_their_pools() -> anyhow::Result<()> {
    let verifier = "SCRAM-SHA-256$4096:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:\
                    UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=";
    let userlist_003: String = ["pgbouncer_auth", "ingest_worker", "analytics_ro"]
        .iter()
        .map(|u| format!("\"{u}\" \"{verifier}\"\n"))
        .collect();
    for (ini, userlist, pools) in [
        (
            INI_000,
            USERLIST_000.to_owned(),
            vec![
                "  db -> localhost:5432/postgres  pool_mode=transaction pool_size=20 reserve_pool_size=0;",
            ],
        ),
        (
            INI_003,
            userlist_003,
            vec![
                "  tracksolid_db -> timescale_db:5432/tracksolid_db  pool_mode=transaction pool_size=20 reserve_pool_size=5;",
                "  tracksolid_db_session -> timescale_db:5432/tracksolid_db  pool_mode=session pool_size=20 reserve_pool_size=5;",
            ],
        ),
    ] {
        let (path, dir, _) = write_runbook(ini, &userlist, None)?;
        let out = check(&path)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: {}\n{stdout}{stderr}",
            path.display(),
            out.status
        );
        assert!(
            stdout.contains(&format!("{}: OK (PgBouncer ini)", path.display())),
            "{stdout}"
        );
        assert!(stdout.contains("\npools:\n"), "{stdout}");
        for pool in pools {
            assert!(
                stdout.lines().any(|l| l.starts_with(pool)),
                "{pool:?} not listed:\n{stdout}"
            );
        }
        // The only warnings are about features whose issues are still open (the admin console,
        // auth_query): they name the key and say it is not implemented yet.
        for w in stdout.lines().filter(|l| l.starts_with("warning:")) {
            let planned = [
                "admin_users",
                "stats_users",
                "auth_user",
                "auth_query",
                "auth_dbname",
            ];
            assert!(
                planned
                    .iter()
                    .any(|k| w.contains(&format!(": {k}: not implemented by pgwarden yet"))),
                "unexpected warning: {w}\n{stdout}"
            );
        }
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}
