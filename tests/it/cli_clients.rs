//! psql and pgbench through pgwarden in transaction pooling (issue 4's "real clients"): many sessions on a
//! small pool, every pgbench query protocol with the books balanced afterwards, and psql sessions whose
//! search_path, statement_timeout and SQL PREPARE survive moving between servers while errors roll back
//! only their own transactions.

use pgwarden_tests::clients::{BenchLength, BenchRun, Pgbench, QueryMode};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};

const POOL_SIZE: u32 = 3;

async fn transaction_pooler(db: &TestDb, pg: &PgCluster) -> anyhow::Result<Pooler> {
    Pooler::start(
        &format!(
            "{} = host=127.0.0.1 port={} dbname={}",
            db.name,
            pg.port(),
            db.name
        ),
        &format!("pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nauth_type = md5"),
        &db.userlist_line(),
    )
    .await
}

/// TPC-B-like pgbench over the simple, extended and prepared protocols, 12 clients on 3 servers: no
/// transaction fails, and the branch, teller and account balances all equal the history's sum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_every_protocol_keeps_the_books_balanced() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "cli_bench", PasswordEncryption::Md5)?;
    let pooler = transaction_pooler(&db, pg).await?;
    let direct = Pgbench::new("127.0.0.1", pg.port(), db.user.clone(), db.name.clone())
        .password(db.password.clone());
    direct.init(1)?;
    let bench = pooler.pgbench(&db);
    for mode in [QueryMode::Simple, QueryMode::Extended, QueryMode::Prepared] {
        // pgbench 15 -M prepared deadlocks with more clients than servers on one thread: one thread each.
        let result = bench
            .run_async(&BenchRun {
                clients: 12,
                jobs: 12,
                length: BenchLength::Transactions(40),
                mode,
                select_only: false,
                ..BenchRun::default()
            })
            .await?;
        result.ensure_clean()?;
        assert_eq!(result.processed, 12 * 40, "{mode:?}");
    }
    let sums = pg.query_scalar(
        &db.name,
        "select concat_ws(' ', \
           (select sum(delta) from pgbench_history), \
           (select sum(abalance) from pgbench_accounts), \
           (select sum(tbalance) from pgbench_tellers), \
           (select sum(bbalance) from pgbench_branches), \
           (select count(*) from pgbench_history))",
    )?;
    let parts: Vec<&str> = sums.split(' ').collect();
    assert_eq!(parts.len(), 5, "{sums}");
    assert!(
        parts[..4].iter().all(|p| *p == parts[0]),
        "balances disagree with the history: {sums}"
    );
    assert_eq!(
        parts[4],
        (3 * 12 * 40).to_string(),
        "every transaction wrote history"
    );
    Ok(())
}

/// Eight psql sessions at once on three servers, each in its own schema through `SET search_path` and
/// with its own statement_timeout; each commits rows, fails a transaction halfway (division by zero: the
/// transaction's rows go), uses an SQL-level prepared statement across transactions, and checks its
/// settings after every transaction. Nobody's rows land in another's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_sessions_keep_their_settings_and_lose_only_failed_transactions() -> anyhow::Result<()>
{
    const SESSIONS: usize = 8;
    const ROUNDS: usize = 6;
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "cli_psql", PasswordEncryption::Md5)?;
    let pooler = transaction_pooler(&db, pg).await?;
    let setup = pooler.connect_as(&db).await?;
    for i in 0..SESSIONS {
        setup
            .batch_execute(&format!(
                "CREATE SCHEMA s{i}; CREATE TABLE s{i}.t (session int, round int)"
            ))
            .await?;
    }
    let mut runs = Vec::new();
    for i in 0..SESSIONS {
        let mut script = format!(
            "\\set ON_ERROR_STOP 0\n\
             SET search_path TO s{i}, public;\n\
             SET statement_timeout = '{}s';\n\
             PREPARE next_round(int) AS SELECT $1 + 1;\n",
            i + 10
        );
        for round in 0..ROUNDS {
            script.push_str(&format!(
                "BEGIN;\n\
                 INSERT INTO t VALUES ({i}, {round});\n\
                 SELECT pg_sleep(0.01);\n\
                 COMMIT;\n\
                 BEGIN;\n\
                 INSERT INTO t VALUES ({i}, -1);\n\
                 SELECT 1 / 0;\n\
                 COMMIT;\n\
                 SELECT 'check', current_setting('search_path'), current_setting('statement_timeout'), \
                        count(*) FROM t;\n\
                 EXECUTE next_round({round});\n"
            ));
        }
        script.push_str("DEALLOCATE next_round;\nSELECT 'done';\n");
        let psql = pooler.psql(&db);
        runs.push(tokio::spawn(
            async move { psql.run_stdin_async(&script).await },
        ));
    }
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.await??;
        let checks: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("check|"))
            .collect();
        assert_eq!(
            checks.len(),
            ROUNDS,
            "session {i}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
        for (round, line) in checks.iter().enumerate() {
            assert_eq!(
                *line,
                format!("check|s{i}, public|{}s|{}", i + 10, round + 1),
                "session {i}, round {round}"
            );
        }
        let nexts: Vec<String> = out
            .stdout
            .lines()
            .filter(|l| l.parse::<usize>().is_ok())
            .map(str::to_owned)
            .collect();
        let want: Vec<String> = (1..=ROUNDS).map(|n| n.to_string()).collect();
        assert_eq!(nexts, want, "session {i}: EXECUTE across transactions");
        let errors: Vec<&str> = out.stderr.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), ROUNDS, "session {i}: {}", out.stderr);
        assert!(
            errors.iter().all(|e| e.contains("division by zero")),
            "session {i}: {}",
            out.stderr
        );
        assert!(out.stdout.lines().any(|l| l == "done"), "session {i}");
    }
    for i in 0..SESSIONS {
        let rows = pg.query_scalar(
            &db.name,
            &format!("select string_agg(distinct session::text, ',') || ':' || count(*) || ':' || min(round) from s{i}.t"),
        )?;
        assert_eq!(rows, format!("{i}:{ROUNDS}:0"), "schema s{i}");
    }
    Ok(())
}
