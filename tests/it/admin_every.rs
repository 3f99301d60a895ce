//! Every console command through psql and through psycopg 3 (its simple protocol, and its extended one with
//! `binary=True`), on one connection each, in the order an operator might run them: every SHOW with PgBouncer
//! 1.25's column list (psql's `-A` header line, psycopg's `cursor.description`), every control command with
//! PgBouncer's command tag, and SHUTDOWN last (the pooler stops). Each client gets its own pooler.

use std::collections::BTreeMap;

use anyhow::Context;
use pgwarden_tests::clients::{Psql, Python};
use pgwarden_tests::pooler::{Pooler, TestDb};

use super::admin::{ADMIN, ADMIN_PW, console, eventually, start, table};

const STATS: &[&str] = &[
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
    "total_client_login_count",
    "avg_server_assignment_count",
    "avg_xact_count",
    "avg_query_count",
    "avg_recv",
    "avg_sent",
    "avg_xact_time",
    "avg_query_time",
    "avg_wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
    "avg_client_login_count",
];
const STATS_TOTALS: &[&str] = &[
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
    "client_login_count",
];
const STATS_AVERAGES: &[&str] = &[
    "database",
    "server_assignment_count",
    "xact_count",
    "query_count",
    "bytes_received",
    "bytes_sent",
    "xact_time",
    "query_time",
    "wait_time",
    "avg_client_parse_count",
    "avg_server_parse_count",
    "avg_bind_count",
    "avg_client_login_count",
];
const POOLS: &[&str] = &[
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
    "load_balance_hosts",
];
const SOCKETS: &[&str] = &[
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
    "recv_pos",
    "pkt_pos",
    "pkt_remain",
    "send_pos",
    "send_remain",
    "pkt_avail",
    "send_avail",
];
const DATABASES: &[&str] = &[
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
    "disabled",
];
const USERS: &[&str] = &[
    "name",
    "pool_size",
    "reserve_pool_size",
    "pool_mode",
    "max_user_connections",
    "current_connections",
    "max_user_client_connections",
    "current_client_connections",
];
/// pgwarden's own command (see docs/CONSOLE.md).
const PLUGINS: &[&str] = &[
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
    "avg_call_time",
];

/// PgBouncer's column types per command, in its own notation (src/admin.c, src/stats.c: `s` text, `i`
/// int4, `N` numeric, `T` a timestamp sent as text).
fn pgbouncer_types(sql: &str) -> Option<String> {
    let types = match sql {
        "SHOW STATS" => format!("s{}", "N".repeat(24)),
        "SHOW STATS_TOTALS" | "SHOW STATS_AVERAGES" => format!("s{}", "N".repeat(12)),
        "SHOW TOTALS" => "sN".to_owned(),
        "SHOW POOLS" => "ssiiiiiiiiiiiiiss".to_owned(),
        "SHOW CLIENTS" | "SHOW SERVERS" => "ssssssisiTTiiississii".to_owned(),
        "SHOW SOCKETS" | "SHOW ACTIVE_SOCKETS" => "ssssssisiTTiiississiiiiiiiii".to_owned(),
        "SHOW DATABASES" => "ssissiiiissiiiiii".to_owned(),
        "SHOW USERS" => "ssssiiii".to_owned(),
        "SHOW CONFIG" => "ssss".to_owned(),
        "SHOW LISTS" => "si".to_owned(),
        "SHOW MEM" => "siiii".to_owned(),
        "SHOW STATE" => "ss".to_owned(),
        "SHOW VERSION" => "s".to_owned(),
        _ => return None,
    };
    Some(types)
}

/// Type OIDs of PgBouncer's notation.
fn oids(types: &str) -> String {
    types
        .chars()
        .map(|c| match c {
            's' | 'T' => "25",
            'i' => "23",
            'q' => "20",
            'N' => "1700",
            other => panic!("type {other}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// What a command must answer.
#[derive(Debug, Clone)]
enum Expect {
    /// A result with these columns (command tag SHOW).
    Columns(Vec<String>),
    /// No result, this command tag.
    Tag(String),
}

/// Every command before SHUTDOWN, with what it answers. `db` is a database of the pooler, `victim` the id
/// of one of its clients (for KILL_CLIENT).
fn commands(db: &str, victim: &str) -> Vec<(String, Expect)> {
    let cols = |c: &[&str]| Expect::Columns(c.iter().map(|s| (*s).to_owned()).collect());
    let tag = |t: &str| Expect::Tag(t.to_owned());
    vec![
        ("SHOW STATS".into(), cols(STATS)),
        ("SHOW STATS_TOTALS".into(), cols(STATS_TOTALS)),
        ("SHOW STATS_AVERAGES".into(), cols(STATS_AVERAGES)),
        ("SHOW TOTALS".into(), cols(&["name", "value"])),
        ("SHOW POOLS".into(), cols(POOLS)),
        ("SHOW CLIENTS".into(), cols(&SOCKETS[..21])),
        ("SHOW SERVERS".into(), cols(&SOCKETS[..21])),
        ("SHOW SOCKETS".into(), cols(SOCKETS)),
        ("SHOW ACTIVE_SOCKETS".into(), cols(SOCKETS)),
        ("SHOW DATABASES".into(), cols(DATABASES)),
        ("SHOW USERS".into(), cols(USERS)),
        (
            "SHOW CONFIG".into(),
            cols(&["key", "value", "default", "changeable"]),
        ),
        ("SHOW LISTS".into(), cols(&["list", "items"])),
        (
            "SHOW MEM".into(),
            cols(&["name", "size", "used", "free", "memtotal"]),
        ),
        ("SHOW STATE".into(), cols(&["key", "value"])),
        ("SHOW VERSION".into(), cols(&["version"])),
        ("SHOW HELP".into(), tag("SHOW")),
        ("SHOW PLUGINS".into(), cols(PLUGINS)),
        ("PAUSE".into(), tag("PAUSE")),
        ("RESUME".into(), tag("RESUME")),
        (format!("DISABLE {db}"), tag("DISABLE")),
        (format!("ENABLE {db}"), tag("ENABLE")),
        ("RECONNECT".into(), tag("RECONNECT")),
        ("WAIT_CLOSE".into(), tag("WAIT_CLOSE")),
        (format!("KILL_CLIENT {victim}"), tag("KILL_CLIENT")),
        (format!("KILL {db}"), tag("KILL")),
        (format!("RESUME {db}"), tag("RESUME")),
        ("SUSPEND".into(), tag("SUSPEND")),
        ("RESUME".into(), tag("RESUME")),
        ("RELOAD".into(), tag("RELOAD")),
        (
            "SET default_pool_size = 7".into(),
            tag("SET default_pool_size=7"),
        ),
        ("SHOW STATE".into(), cols(&["key", "value"])),
    ]
}

/// A pooler for one client's run, with a client of its database to be KILL_CLIENT's victim; returns the
/// commands to run.
async fn setup(
    prefix: &str,
) -> anyhow::Result<(
    TestDb,
    Pooler,
    tokio_postgres::Client,
    Vec<(String, Expect)>,
)> {
    let (db, pooler) = start(prefix, "pool_mode = transaction").await?;
    let victim = pooler.connect_as(&db).await?;
    victim.simple_query("select 1").await?;
    let admin = console(&pooler).await?;
    let t = table(&admin, "SHOW CLIENTS").await?;
    let rows: Vec<_> = t
        .rows_for("C")
        .into_iter()
        .filter(|r| r[t.col("database")].as_deref() == Some(db.name.as_str()))
        .collect();
    anyhow::ensure!(rows.len() == 1, "{t:?}");
    let id = rows[0][t.col("id")].clone().context("id")?;
    let cmds = commands(&db.name, &id);
    Ok((db, pooler, victim, cmds))
}

/// After SHUTDOWN: the pooler lets no client in, the victim of KILL_CLIENT is gone, and the SET took.
async fn after(
    pooler: &Pooler,
    db: &TestDb,
    victim: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    let err = victim
        .simple_query("select 1")
        .await
        .expect_err("KILL_CLIENT ended the victim");
    assert!(err.is_closed() || err.as_db_error().is_some(), "{err}");
    assert_eq!(pooler.state.runtime().config.settings.default_pool_size, 7);
    eventually("the pooler to stop accepting", || async {
        Ok(pooler.connect_as(db).await.is_err())
    })
    .await
    .context("after SHUTDOWN")?;
    assert!(pooler.state.lifecycle.shutdown_mode().is_some());
    Ok(())
}

/// psql, one session fed every command on stdin (`-A`, headers on, tags shown), then SHUTDOWN in another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_psql() -> anyhow::Result<()> {
    let (db, pooler, victim, cmds) = setup("adm_every_psql").await?;
    let psql = Psql::new("127.0.0.1", pooler.port, ADMIN, "pgbouncer").password(ADMIN_PW);
    let mut script = String::from("\\pset footer off\n\\pset tuples_only off\n\\set QUIET off\n");
    for (i, (sql, _)) in cmds.iter().enumerate() {
        script.push_str(&format!("\\echo @@{i}\n{sql};\n"));
    }
    let out = psql.run_stdin_async(&script).await?;
    out.ensure_success("psql with every command")?;
    // The first line after each marker: the header (fields joined by |) or the command tag.
    let mut first: BTreeMap<usize, String> = BTreeMap::new();
    let mut current = None;
    for line in out.stdout.lines() {
        if let Some(i) = line.strip_prefix("@@") {
            current = Some(i.parse::<usize>()?);
        } else if let Some(i) = current.take() {
            first.insert(i, line.to_owned());
        }
    }
    for (i, (sql, expect)) in cmds.iter().enumerate() {
        let got = first
            .get(&i)
            .with_context(|| format!("no output for {sql}:\n{}", out.stdout))?;
        match expect {
            Expect::Columns(c) => assert_eq!(got, &c.join("|"), "{sql}"),
            Expect::Tag(t) => assert_eq!(got, t, "{sql}"),
        }
    }
    assert!(
        out.stderr.contains("NOTICE:  Console usage"),
        "{}",
        out.stderr
    );

    let out = psql.run_async("SHUTDOWN").await?;
    assert!(
        out.stderr
            .contains("server closed the connection unexpectedly"),
        "{out:?}"
    );
    after(&pooler, &db, &victim).await
}

/// psycopg 3 through the protocol `mode`, then SHUTDOWN on the same connection (which closes it).
async fn every_command_through_psycopg(mode: &str) -> anyhow::Result<()> {
    let (db, pooler, victim, mut cmds) = setup(&format!("adm_every_{mode}")).await?;
    cmds.push(("SHUTDOWN".into(), Expect::Tag("-".into())));
    let list: Vec<&str> = cmds.iter().map(|(sql, _)| sql.as_str()).collect();
    let results = Python::script("psycopg3_every_command.py")?
        .target("127.0.0.1", pooler.port, ADMIN, ADMIN_PW, "pgbouncer")
        .arg(mode)
        .env("PGW_COMMANDS", list.join("\n"))
        .run_results()
        .await?;
    let by_n: BTreeMap<usize, BTreeMap<String, String>> = results
        .into_iter()
        .map(|r| Ok((r.get("n").context("n")?.parse::<usize>()?, r)))
        .collect::<anyhow::Result<_>>()?;
    for (i, (sql, expect)) in cmds.iter().enumerate() {
        let r = by_n
            .get(&i)
            .with_context(|| format!("{mode}: no result for {sql}: {by_n:?}"))?;
        if sql == "SHUTDOWN" {
            assert_eq!(
                r.get("lost").map(String::as_str),
                Some("1"),
                "{mode}: {r:?}"
            );
            continue;
        }
        assert!(!r.contains_key("error"), "{mode}: {sql}: {r:?}");
        match expect {
            Expect::Columns(c) => {
                assert_eq!(r["columns"], c.join(","), "{mode}: {sql}");
                if let Some(types) = pgbouncer_types(sql) {
                    assert_eq!(r["types"], oids(&types), "{mode}: {sql}: column types");
                }
                assert_eq!(r["status"], "SHOW", "{mode}: {sql}");
            }
            Expect::Tag(t) => {
                assert_eq!(r["columns"], "-", "{mode}: {sql}");
                assert_eq!(r["status"], t.replace(' ', "_"), "{mode}: {sql}");
            }
        }
        if sql == "SHOW HELP" {
            assert_eq!(r["notices"], "1", "{mode}: {r:?}");
        }
    }
    after(&pooler, &db, &victim).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_psycopg_simple() -> anyhow::Result<()> {
    every_command_through_psycopg("simple").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_through_psycopg_extended() -> anyhow::Result<()> {
    every_command_through_psycopg("extended").await
}
