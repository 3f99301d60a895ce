//! Real Python, Node.js and Java drivers through pgwarden (issue 4's "real clients, run by CI"): psycopg 3,
//! psycopg2, asyncpg, SQLAlchemy 2, node-postgres and pgjdbc run the workload of
//! `tests/clients/python/_common.py` (node-postgres: `tests/clients/node/pg_workload.js`, pgjdbc:
//! `tests/clients/java/PgWorkload.java`, the same story) — 20 concurrent workers on a pool of 3 servers,
//! commits, rollbacks, an error mid-transaction then more work, a reconnect halfway — and the test checks
//! what they report and what PostgreSQL holds afterwards.
//!
//! Session mode runs each driver with its defaults (psycopg's prepare_threshold and pipeline mode,
//! asyncpg's statement cache, SQLAlchemy's pools, pgjdbc's prepareThreshold=5). Transaction mode runs them
//! twice: with the same defaults, which need pgwarden's protocol-level prepared statements
//! (`max_prepared_statements`, on by default: the shared servers hold prepared statements under pgwarden's
//! names), and with "today's settings", the workarounds PgBouncer's users apply (no named prepared
//! statements kept across transactions; pgjdbc: `prepareThreshold=0`). node-postgres prepares only
//! statements given a `name`: its "defaults" are named statements (session mode and transaction mode), its
//! "today" node-postgres's default, the unnamed statement. pgjdbc sends `extra_float_digits` as a startup
//! parameter, so its poolers have `ignore_startup_parameters = extra_float_digits`, as runbook 000
//! configures PgBouncer.
//!
//! The virtualenv: `tests/clients/python/setup.sh`; the node_modules: `tests/clients/node/setup.sh`; the
//! compiled Java workload: `tests/clients/java/setup.sh` (pgjdbc: Debian's libpostgresql-jdbc-java; all
//! run or installed by `.ci/run`); without them these tests fail saying so.

use std::collections::{BTreeMap, BTreeSet};

use pgwarden_tests::clients::{Lang, ScriptRun};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster, quote_ident, quote_literal};
use pgwarden_tests::pooler::{Pooler, TestDb};

const WORKERS: usize = 20;
const ITERS: i64 = 16;
const POOL_SIZE: usize = 3;

/// What the workers' halfway look at `pg_prepared_statements` must show.
#[derive(Debug, Clone, Copy)]
enum Prepared {
    /// Every worker's server session held prepared statements (the driver prepares on its own).
    EveryWorker,
    /// Transaction pooling with the driver preparing on its own: the servers hold pgwarden's shared
    /// statements, so most workers' halfway look sees some. Not every one: a worker may look from a server
    /// no client has used a prepared statement on yet (its own live on whichever server it used them).
    Shared,
    /// None did (the driver never keeps named statements).
    Never,
    /// Not asserted: SQLAlchemy's documented asyncpg settings prepare every statement under a unique name
    /// and never deallocate it, so the shared servers collect them (over a hundred each in this workload).
    Unchecked,
}

/// Which driver runs the workload: a script of `tests/clients/python/`, `tests/clients/node/` or
/// `tests/clients/java/`.
#[derive(Debug, Clone, Copy)]
enum Driver {
    Py(&'static str),
    Node(&'static str),
    Java(&'static str),
}

/// What pgjdbc needs in the pooler's settings: it sends `extra_float_digits` in its startup packet (runbook
/// 000's line).
const JDBC_SETTINGS: &str = "ignore_startup_parameters = extra_float_digits";

/// A database with the `ledger` table its role owns, and a pooler in front of it.
async fn start(prefix: &str, settings: &str) -> anyhow::Result<(TestDb, Pooler)> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, prefix, PasswordEncryption::Scram)?;
    pg.exec_async(
        &db.name,
        &format!(
            "create table ledger (worker int not null, seq int not null, amount int not null, \
             primary key (worker, seq)); alter table ledger owner to {}",
            quote_ident(&db.user)
        ),
    )
    .await?;
    let pooler = Pooler::start(
        &format!(
            "{} = host=127.0.0.1 port={} dbname={}\n{}_session = host=127.0.0.1 port={} dbname={} \
             pool_mode=session pool_size=1",
            db.name,
            pg.port(),
            db.name,
            db.name,
            pg.port(),
            db.name
        ),
        &format!("default_pool_size = {POOL_SIZE}\nauth_type = scram-sha-256\n{settings}"),
        &db.userlist_line(),
    )
    .await?;
    Ok((db, pooler))
}

/// Runs `driver` with `profile` (`defaults` or `today`; node-postgres: `named` or `unnamed`) through a
/// fresh pooler in `mode` and checks every worker's report and the final table.
async fn workload(
    prefix: &str,
    mode: &str,
    driver: Driver,
    profile: &str,
    env: &[(&str, &str)],
    prepared: Prepared,
) -> anyhow::Result<()> {
    let mut settings = format!("pool_mode = {mode}");
    if let Driver::Java(_) = driver {
        settings = format!("{settings}\n{JDBC_SETTINGS}");
    }
    let (db, pooler) = start(prefix, &settings).await?;
    let results = match driver {
        Driver::Py(script) => run(pooler.python(script, &db)?, profile, env).await?,
        Driver::Node(script) => run(pooler.node(script, &db)?, profile, env).await?,
        Driver::Java(source) => run(pooler.java(source, &db)?, profile, env).await?,
    };
    check_reports(&results, prepared)?;
    check_table(&db).await?;
    // No more servers than the pool allows were ever opened for these 20 clients. Only the pooler's
    // backends (the test's role) count: the superuser connection check_table just dropped may still be
    // exiting.
    let backends: i64 = PgCluster::shared()
        .query_scalar_async(
            "postgres",
            &format!(
                "select count(*) from pg_stat_activity where datname = {} and usename = {} \
                 and backend_type = 'client backend'",
                quote_literal(&db.name),
                quote_literal(&db.user)
            ),
        )
        .await?
        .parse()?;
    assert!(
        (1..=POOL_SIZE as i64).contains(&backends),
        "{backends} backends"
    );
    Ok(())
}

/// Runs a workload script with `profile`, the test's worker and iteration counts and `env`.
async fn run<L: Lang>(
    script: ScriptRun<L>,
    profile: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
    let mut script = script
        .arg(profile)
        .env("PGW_WORKERS", WORKERS.to_string())
        .env("PGW_ITERS", ITERS.to_string());
    for (k, v) in env {
        script = script.env(*k, *v);
    }
    script.run_results().await
}

fn committed_seqs() -> impl Iterator<Item = i64> {
    (0..ITERS).filter(|s| s % 4 != 3)
}

fn check_reports(results: &[BTreeMap<String, String>], prepared: Prepared) -> anyhow::Result<()> {
    assert_eq!(results.len(), WORKERS, "one RESULT per worker: {results:?}");
    let workers: BTreeSet<usize> = results
        .iter()
        .map(|r| r["worker"].parse())
        .collect::<Result<_, _>>()?;
    assert_eq!(workers, (0..WORKERS).collect::<BTreeSet<_>>());
    let errors = (0..ITERS).filter(|s| s % 4 == 1).count();
    let states = vec!["22012,25P02"; errors].join(",");
    let mut pids = BTreeSet::new();
    let mut prepared_counts = Vec::new();
    for r in results {
        let w = &r["worker"];
        assert_eq!(
            r["committed"],
            committed_seqs().count().to_string(),
            "worker {w}"
        );
        assert_eq!(
            r["sum"],
            committed_seqs().sum::<i64>().to_string(),
            "worker {w}"
        );
        // division_by_zero, then in_failed_sql_transaction for the next statement, each time.
        assert_eq!(r["states"], states, "worker {w}");
        assert_eq!(
            r["mismatches"], "0",
            "worker {w}: reads disagreed with its commits"
        );
        for pid in r["pids"].split(',') {
            pids.insert(pid.parse::<i32>()?);
        }
        prepared_counts.push(r["prepared"].parse::<i64>()?);
    }
    // 20 clients, and their transactions ran on at most the pool's 3 servers.
    assert!(
        (1..=POOL_SIZE).contains(&pids.len()),
        "backends seen: {pids:?}"
    );
    let ok = match prepared {
        Prepared::EveryWorker => prepared_counts.iter().all(|&n| n > 0),
        Prepared::Shared => prepared_counts.iter().filter(|&&n| n > 0).count() * 2 >= WORKERS,
        Prepared::Never => prepared_counts.iter().all(|&n| n == 0),
        Prepared::Unchecked => true,
    };
    assert!(
        ok,
        "pg_prepared_statements counts {prepared_counts:?}, expected {prepared:?}"
    );
    Ok(())
}

/// The table holds exactly the committed rows: none of the rolled-back inserts, every retried one.
async fn check_table(db: &TestDb) -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let got = pg
        .query_scalar_async(
            &db.name,
            "select count(*) || ' ' || coalesce(sum(amount), 0) || ' ' || count(distinct worker) || ' ' \
             || count(*) filter (where seq % 4 = 3) || ' ' || count(*) filter (where amount <> seq) \
             from ledger",
        )
        .await?;
    let per_worker = committed_seqs().count();
    let want = format!(
        "{} {} {WORKERS} 0 0",
        per_worker * WORKERS,
        committed_seqs().sum::<i64>() * WORKERS as i64
    );
    assert_eq!(
        got, want,
        "rows, sum, workers, rolled-back rows, bad amounts"
    );
    Ok(())
}

// Session mode: the drivers' defaults.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_psycopg3_defaults_prepare_and_pipeline() -> anyhow::Result<()> {
    workload(
        "drv_s_pg3",
        "session",
        Driver::Py("psycopg3_workload.py"),
        "defaults",
        &[],
        Prepared::EveryWorker,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_psycopg2() -> anyhow::Result<()> {
    workload(
        "drv_s_pg2",
        "session",
        Driver::Py("psycopg2_workload.py"),
        "defaults",
        &[],
        Prepared::Never,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_asyncpg_default_statement_cache() -> anyhow::Result<()> {
    workload(
        "drv_s_apg",
        "session",
        Driver::Py("asyncpg_workload.py"),
        "defaults",
        &[],
        Prepared::EveryWorker,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_sqlalchemy_orm_over_psycopg3() -> anyhow::Result<()> {
    workload(
        "drv_s_sapg3",
        "session",
        Driver::Py("sqlalchemy_psycopg_workload.py"),
        "defaults",
        &[("PGW_SA_POOL_SIZE", "3")],
        Prepared::EveryWorker,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_sqlalchemy_core_over_asyncpg() -> anyhow::Result<()> {
    workload(
        "drv_s_saapg",
        "session",
        Driver::Py("sqlalchemy_asyncpg_workload.py"),
        "defaults",
        &[("PGW_SA_POOL_SIZE", "3")],
        Prepared::EveryWorker,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_node_postgres_named_prepared_statements() -> anyhow::Result<()> {
    // The same statement names on every connection: a server handed over with a previous client's
    // statements still prepared would fail the Parse with 42P05.
    workload(
        "drv_s_nodepg",
        "session",
        Driver::Node("pg_workload.js"),
        "named",
        &[],
        Prepared::EveryWorker,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pgjdbc_defaults_prepare_threshold() -> anyhow::Result<()> {
    // From the 5th run of a statement pgjdbc prepares it on the server as S_1, S_2, ...: the same names on
    // every connection, so a server handed over with a previous client's statements fails the Parse (42P05).
    workload(
        "drv_s_jdbc",
        "session",
        Driver::Java("PgWorkload.java"),
        "defaults",
        &[],
        Prepared::EveryWorker,
    )
    .await
}

// Transaction mode: the drivers' defaults, named statements kept across transactions (pgwarden prepares
// them on whichever server a transaction runs on).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_psycopg3_defaults_prepare_and_pipeline() -> anyhow::Result<()> {
    workload(
        "drv_tp_pg3",
        "transaction",
        Driver::Py("psycopg3_workload.py"),
        "defaults",
        &[],
        Prepared::Shared,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_asyncpg_default_statement_cache() -> anyhow::Result<()> {
    workload(
        "drv_tp_apg",
        "transaction",
        Driver::Py("asyncpg_workload.py"),
        "defaults",
        &[],
        Prepared::Shared,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_sqlalchemy_orm_over_psycopg3_defaults() -> anyhow::Result<()> {
    // A client-side pool larger than the server pool: transaction pooling shares the 3 servers.
    workload(
        "drv_tp_sapg3",
        "transaction",
        Driver::Py("sqlalchemy_psycopg_workload.py"),
        "defaults",
        &[("PGW_SA_POOL_SIZE", "10")],
        Prepared::Shared,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_sqlalchemy_core_over_asyncpg_defaults() -> anyhow::Result<()> {
    workload(
        "drv_tp_saapg",
        "transaction",
        Driver::Py("sqlalchemy_asyncpg_workload.py"),
        "defaults",
        &[("PGW_SA_POOL_SIZE", "10")],
        Prepared::Shared,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_node_postgres_named_prepared_statements() -> anyhow::Result<()> {
    // The same statement names on every connection, for the same texts: each client's names are its own.
    workload(
        "drv_tp_nodepg",
        "transaction",
        Driver::Node("pg_workload.js"),
        "named",
        &[],
        Prepared::Shared,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pgjdbc_defaults_prepare_threshold() -> anyhow::Result<()> {
    // From the 5th run of a statement pgjdbc prepares it as S_1, S_2, ... on whatever server it is on.
    workload(
        "drv_tp_jdbc",
        "transaction",
        Driver::Java("PgWorkload.java"),
        "defaults",
        &[],
        Prepared::Shared,
    )
    .await
}

// Transaction mode: today's settings (what PgBouncer's users configure).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_psycopg3_todays_settings() -> anyhow::Result<()> {
    workload(
        "drv_t_pg3",
        "transaction",
        Driver::Py("psycopg3_workload.py"),
        "today",
        &[],
        Prepared::Never,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_psycopg2_todays_settings() -> anyhow::Result<()> {
    workload(
        "drv_t_pg2",
        "transaction",
        Driver::Py("psycopg2_workload.py"),
        "today",
        &[],
        Prepared::Never,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_asyncpg_todays_settings() -> anyhow::Result<()> {
    workload(
        "drv_t_apg",
        "transaction",
        Driver::Py("asyncpg_workload.py"),
        "today",
        &[],
        Prepared::Never,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_sqlalchemy_psycopg3_todays_settings() -> anyhow::Result<()> {
    // A client-side pool larger than the server pool: transaction pooling shares the 3 servers.
    workload(
        "drv_t_sapg3",
        "transaction",
        Driver::Py("sqlalchemy_psycopg_workload.py"),
        "today",
        &[("PGW_SA_POOL_SIZE", "10")],
        Prepared::Never,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_sqlalchemy_asyncpg_todays_settings() -> anyhow::Result<()> {
    workload(
        "drv_t_saapg",
        "transaction",
        Driver::Py("sqlalchemy_asyncpg_workload.py"),
        "today",
        &[],
        Prepared::Unchecked,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_node_postgres_todays_settings() -> anyhow::Result<()> {
    // node-postgres's default: no `name`, so every query goes through the unnamed statement.
    workload(
        "drv_t_nodepg",
        "transaction",
        Driver::Node("pg_workload.js"),
        "unnamed",
        &[],
        Prepared::Never,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pgjdbc_todays_settings() -> anyhow::Result<()> {
    // prepareThreshold=0 in the URL: pgjdbc always uses the unnamed statement.
    workload(
        "drv_t_jdbc",
        "transaction",
        Driver::Java("PgWorkload.java"),
        "today",
        &[],
        Prepared::Never,
    )
    .await
}

/// Runbook 003's analytics client: psycopg2 `set_session(readonly=True)` in autocommit on the session-mode
/// alias (one server): reads work, a write fails in PostgreSQL with 25006, and the next client of that pool
/// gets the same server back writable (the server reset undid the SET).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_alias_psycopg2_readonly_does_not_leak() -> anyhow::Result<()> {
    let (db, pooler) = start("drv_ro", "pool_mode = transaction").await?;
    let pg = PgCluster::shared();
    pg.exec_async(&db.name, "insert into ledger values (0, 0, 0)")
        .await?;
    let alias = format!("{}_session", db.name);
    let results = pooler
        .python("psycopg2_readonly.py", &db)?
        .env("PGW_DB", alias)
        .run_results()
        .await?;
    assert_readonly_did_not_leak(
        pg,
        &db,
        &results,
        "ERROR:__cannot_execute_INSERT_in_a_read-only_transaction",
    )
    .await
}

/// The results of a read-only client then the next client of a `pool_size=1` session alias: reads worked,
/// the write failed in PostgreSQL with 25006 (`write_error` as the script prints it), the next client got
/// the same server with the setting off, and only its write landed.
async fn assert_readonly_did_not_leak(
    pg: &PgCluster,
    db: &TestDb,
    results: &[BTreeMap<String, String>],
    write_error: &str,
) -> anyhow::Result<()> {
    assert_eq!(results.len(), 2, "{results:?}");
    let (ro, next) = (&results[0], &results[1]);
    assert_eq!(ro["client"], "readonly");
    assert_eq!(ro["setting"], "on");
    assert_eq!(ro["rows"], "1", "reads work");
    assert_eq!(ro["write_state"], "25006");
    assert_eq!(ro["write_error"], write_error);
    assert_eq!(next["client"], "next");
    assert_eq!(next["pid"], ro["pid"], "pool_size=1: the same server");
    assert_eq!(next["setting"], "off", "the read-only SET leaked");
    assert_eq!(next["inserted"], "1");
    let rows = pg
        .query_scalar_async(
            &db.name,
            "select string_agg(worker::text, ',' order by worker) from ledger",
        )
        .await?;
    assert_eq!(
        rows, "0,2",
        "the refused write left nothing, the next one landed"
    );
    Ok(())
}

/// The same with pgjdbc: `setReadOnly(true)` in autocommit with `readOnlyMode=always` (pgjdbc then sends SET
/// SESSION CHARACTERISTICS AS TRANSACTION READ ONLY; its default mode would only make transactions BEGIN
/// READ ONLY) on the session-mode alias: reads work, a write fails in PostgreSQL with 25006, and the next
/// client of that pool gets the same server back writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_alias_pgjdbc_readonly_does_not_leak() -> anyhow::Result<()> {
    let (db, pooler) = start(
        "drv_ro_jdbc",
        &format!("pool_mode = transaction\n{JDBC_SETTINGS}"),
    )
    .await?;
    let pg = PgCluster::shared();
    pg.exec_async(&db.name, "insert into ledger values (0, 0, 0)")
        .await?;
    let alias = format!("{}_session", db.name);
    let results = pooler
        .java("PgWorkload.java", &db)?
        .arg("readonly")
        .env("PGW_DB", alias)
        .run_results()
        .await?;
    assert_readonly_did_not_leak(
        pg,
        &db,
        &results,
        "ERROR:_cannot_execute_INSERT_in_a_read-only_transaction",
    )
    .await
}

/// Why the pgjdbc poolers have runbook 000's `ignore_startup_parameters = extra_float_digits`: without it
/// pgwarden refuses pgjdbc's startup packet as PgBouncer does; with it, the same client connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_needs_extra_float_digits_ignored() -> anyhow::Result<()> {
    let (db, pooler) = start("drv_efd_jdbc", "pool_mode = transaction").await?;
    let refused = pooler
        .java("PgWorkload.java", &db)?
        .arg("connect")
        .run_results()
        .await?;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["connected"], "no");
    assert_eq!(refused[0]["state"], "08P01");
    assert_eq!(
        refused[0]["error"],
        "FATAL:_unsupported_startup_parameter:_extra_float_digits"
    );
    let (db, pooler) = start(
        "drv_efd_jdbc2",
        &format!("pool_mode = transaction\n{JDBC_SETTINGS}"),
    )
    .await?;
    let accepted = pooler
        .java("PgWorkload.java", &db)?
        .arg("connect")
        .run_results()
        .await?;
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["connected"], "yes");
    Ok(())
}
