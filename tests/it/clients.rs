//! pgbench through pgwarden: the TPC-B-like script and select-only, simple and extended protocol, in each pool
//! mode, with more clients than servers. Every transaction must succeed and PostgreSQL must never see more
//! backends than the pool allows.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use pgwarden_tests::clients::{BenchLength, BenchRun, QueryMode};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};

/// Samples the backend count of `db` until stopped; returns the highest seen.
fn watch_backends(
    pg: &'static PgCluster,
    db: String,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<i64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
    let task = tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            if let Ok(n) = pg.backend_count_async(&db).await {
                p.fetch_max(n, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.load(Ordering::Relaxed)
    });
    (stop, task)
}

async fn bench(mode: &str, pool_size: u32, runs: &[BenchRun]) -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "bench", PasswordEncryption::Scram)?;
    let pooler = Pooler::start(
        &format!(
            "{} = host=127.0.0.1 port={} dbname={}",
            db.name,
            pg.port(),
            db.name
        ),
        &format!("pool_mode = {mode}\ndefault_pool_size = {pool_size}\nauth_type = scram-sha-256"),
        &db.userlist_line(),
    )
    .await?;
    // Initialise directly against PostgreSQL: pgbench -i runs DDL a pooler is not meant to see.
    pgwarden_tests::clients::Pgbench::new("127.0.0.1", pg.port(), db.user.clone(), db.name.clone())
        .password(db.password.clone())
        .init(1)?
        .ensure_success("pgbench -i")?;
    let (stop, peak) = watch_backends(pg, db.name.clone());
    for run in runs {
        let result = pooler.pgbench(&db).run_async(run).await?;
        result
            .ensure_clean()
            .map_err(|e| anyhow::anyhow!("{mode} {:?}: {e}", run.mode))?;
    }
    stop.store(true, Ordering::Relaxed);
    let peak = peak.await?;
    assert!(peak >= 1, "no backend ever seen");
    assert!(
        peak <= i64::from(pool_size),
        "{mode}: PostgreSQL saw {peak} backends for a pool of {pool_size}"
    );
    Ok(())
}

fn run(clients: u32, mode: QueryMode, select_only: bool) -> BenchRun {
    BenchRun {
        clients,
        jobs: 2,
        length: BenchLength::Transactions(25),
        mode,
        select_only,
        ..BenchRun::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_transaction_mode_simple_and_extended() -> anyhow::Result<()> {
    bench(
        "transaction",
        4,
        &[
            run(16, QueryMode::Simple, false),
            run(16, QueryMode::Extended, false),
            run(16, QueryMode::Simple, true),
            run(16, QueryMode::Extended, true),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_in_session_mode_queues_clients_beyond_the_pool() -> anyhow::Result<()> {
    // Session mode: a client keeps its server until it disconnects, and pgbench keeps its connections for
    // the whole run, so more clients than servers would wait forever (with PgBouncer too). With -C each
    // transaction is a new connection: the clients beyond the pool queue, and a disconnect hands the
    // server (reset with DISCARD ALL) to the next in line.
    let mut simple = run(8, QueryMode::Simple, false);
    simple.extra_args.push("-C".into());
    // pgbench 15 prepares with a blocking PQprepare: a thread whose client waits in the queue would
    // stall its other clients, which hold servers. One thread per client keeps them independent.
    let mut prepared = run(8, QueryMode::Prepared, true);
    prepared.jobs = 8;
    prepared.extra_args.push("-C".into());
    bench("session", 3, &[simple, prepared]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_in_statement_mode() -> anyhow::Result<()> {
    bench(
        "statement",
        3,
        &[
            run(12, QueryMode::Simple, true),
            run(12, QueryMode::Extended, true),
        ],
    )
    .await
}
