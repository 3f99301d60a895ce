//! Console commands under load, nothing lost: workers (tokio-postgres, transaction pooling, more workers than
//! servers) each run small transactions that insert a row of their own and record what COMMIT acknowledged,
//! while the console runs PAUSE and RESUME, RELOAD with a changed pool size, KILL_CLIENT of one worker,
//! RECONNECT, and (separate poolers) SHUTDOWN WAIT_FOR_CLIENTS and plain SHUTDOWN. Afterwards PostgreSQL's
//! table is compared with what each worker saw.
//!
//! The outcome of one transaction, as its client saw it:
//! - COMMIT answered: acknowledged, the row must be in the table;
//! - an error before COMMIT was sent (BEGIN or INSERT failed): the transaction never committed (pgwarden
//!   rolls back or closes the server of a client that goes away mid-transaction), the row must be absent;
//! - COMMIT sent, then an error or a closed connection instead of its answer: ambiguous. PostgreSQL may have
//!   committed before pgwarden closed the server (a KILL_CLIENT or an immediate shutdown arriving while the
//!   COMMIT runs), so the row may or may not be there; a worker has at most one such transaction, its last.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use tokio_postgres::Client;

use super::admin::{ADMIN, ADMIN_PW, WAIT, base_settings, db_line, eventually, table, userlist};

const WORKERS: usize = 8;

/// What one worker saw.
#[derive(Debug, Default)]
struct Log {
    acked: Vec<i32>,
    not_committed: Vec<i32>,
    ambiguous: Vec<i32>,
    errors: Vec<String>,
}

/// One worker's state, shared with the test.
struct Worker {
    /// Acknowledged COMMITs so far.
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Log>,
}

fn app(w: usize) -> String {
    format!("load_w{w}")
}

async fn worker_client(pooler: &Pooler, db: &TestDb, w: usize) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pooler.port)
        .user(&db.user)
        .password(&db.password)
        .dbname(&db.name)
        .application_name(app(w));
    pgwarden_tests::clients::connect_config(&config).await
}

/// Starts `WORKERS` workers; each loops until `stop` (or its first error, after which its connection is of
/// no use) over BEGIN; INSERT (w, seq); COMMIT, three round trips.
async fn start_workers(
    pooler: &Pooler,
    db: &TestDb,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<Worker>> {
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let client = worker_client(pooler, db, w).await?;
        let stop = Arc::clone(stop);
        let shared = Arc::new(AtomicU64::new(0));
        let acked = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            let mut log = Log::default();
            let w = i32::try_from(w).unwrap_or(i32::MAX);
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let before_commit = async {
                    client.simple_query("BEGIN").await?;
                    client
                        .simple_query(&format!("INSERT INTO acks VALUES ({w}, {seq})"))
                        .await
                };
                if let Err(e) = before_commit.await {
                    log.not_committed.push(seq);
                    log.errors.push(describe(&e));
                    break;
                }
                match client.simple_query("COMMIT").await {
                    Ok(_) => {
                        log.acked.push(seq);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        log.ambiguous.push(seq);
                        log.errors.push(describe(&e));
                        break;
                    }
                }
            }
            log
        });
        workers.push(Worker {
            acked: shared,
            task,
        });
    }
    Ok(workers)
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => format!("{e}"),
    }
}

fn acked(workers: &[Worker]) -> Vec<u64> {
    workers
        .iter()
        .map(|w| w.acked.load(Ordering::Relaxed))
        .collect()
}

/// Waits until every worker in `which` has acknowledged more than it had in `since`.
async fn progress(workers: &[Worker], since: &[u64], which: &[usize]) -> anyhow::Result<()> {
    eventually("every worker to commit again", || async {
        let now = acked(workers);
        Ok(which.iter().all(|&w| now[w] > since[w]))
    })
    .await
}

/// A pooler in transaction mode with `pool_size` servers, and the table.
async fn setup(prefix: &str, pool_size: u32) -> anyhow::Result<(TestDb, Pooler, Client)> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
    let direct = pgwarden_tests::clients::connect(
        pg.host(),
        pg.port(),
        &db.user,
        Some(&db.password),
        &db.name,
    )
    .await?;
    direct
        .simple_query("CREATE TABLE acks (worker int, seq int, PRIMARY KEY (worker, seq))")
        .await?;
    let pooler = Pooler::start(
        &db_line(pg, &db),
        &base_settings(&format!(
            "pool_mode = transaction\ndefault_pool_size = {pool_size}\nreserve_pool_size = 0"
        )),
        &userlist(&db),
    )
    .await?;
    Ok((db, pooler, direct))
}

/// Joins the workers and checks the table against their logs: acknowledged rows present, rows that never
/// committed absent, at most one ambiguous transaction each (allowed either way), nothing else. Returns the
/// logs.
async fn check_table(direct: &Client, workers: Vec<Worker>) -> anyhow::Result<Vec<Log>> {
    let mut logs = Vec::new();
    for w in workers {
        logs.push(tokio::time::timeout(WAIT, w.task).await??);
    }
    let mut rows: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
    for row in direct.query("SELECT worker, seq FROM acks", &[]).await? {
        rows.entry(row.get(0)).or_default().insert(row.get(1));
    }
    for (w, log) in logs.iter().enumerate() {
        let w = i32::try_from(w)?;
        let have = rows.remove(&w).unwrap_or_default();
        for seq in &log.acked {
            assert!(
                have.contains(seq),
                "worker {w}: acknowledged {seq} is missing"
            );
        }
        for seq in &log.not_committed {
            assert!(
                !have.contains(seq),
                "worker {w}: {seq} failed before COMMIT yet is there"
            );
        }
        assert!(log.ambiguous.len() <= 1, "worker {w}: {log:?}");
        let known: BTreeSet<i32> = log.acked.iter().chain(&log.ambiguous).copied().collect();
        let extra: Vec<&i32> = have.difference(&known).collect();
        assert!(
            extra.is_empty(),
            "worker {w}: rows nobody committed: {extra:?}"
        );
    }
    assert!(rows.is_empty(), "rows of unknown workers: {rows:?}");
    Ok(logs)
}

/// SHOW POOLS' `column` for the test's pool.
async fn pool_value(admin: &Client, db: &TestDb, column: &str) -> anyhow::Result<String> {
    Ok(table(admin, "SHOW POOLS").await?.get(&db.name, column))
}

/// PAUSE (in-flight transactions finish, new ones are held: nothing commits until RESUME, and no worker
/// sees an error), RESUME, RELOAD with a new default_pool_size, KILL_CLIENT of one worker (only its session
/// ends), RECONNECT (every server replaced while the load runs), all under load; then the table holds
/// exactly what the workers saw committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_under_load_lose_nothing() -> anyhow::Result<()> {
    let (db, pooler, direct) = setup("adm_load", 3).await?;
    let admin = pooler.connect(ADMIN, ADMIN_PW, "pgbouncer").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_workers(&pooler, &db, &stop).await?;
    let all: Vec<usize> = (0..WORKERS).collect();
    progress(&workers, &[0; WORKERS], &all).await?;

    // PAUSE returns once no server is in use (the transactions in flight finished); then every worker's
    // next BEGIN is held.
    admin.simple_query("PAUSE").await?;
    assert_eq!(pool_value(&admin, &db, "sv_active").await?, "0");
    let held = eventually("every worker held by PAUSE", || async {
        Ok(pool_value(&admin, &db, "cl_waiting").await? == WORKERS.to_string())
    })
    .await;
    if let Err(e) = held {
        let p = table(&admin, "SHOW POOLS").await?;
        let c = table(&admin, "SHOW CLIENTS").await?;
        panic!("{e:#}\n{p:?}\n{c:?}");
    }
    // Every transaction that was in flight committed and was acknowledged: the table holds exactly the
    // acknowledged rows, and it stays so while the pause lasts.
    let at_pause = acked(&workers);
    for _ in 0..10 {
        let rows: i64 = direct
            .query_one("SELECT count(*) FROM acks", &[])
            .await?
            .get(0);
        assert_eq!(rows, i64::try_from(at_pause.iter().sum::<u64>())?);
        assert_eq!(
            pool_value(&admin, &db, "cl_waiting").await?,
            WORKERS.to_string()
        );
        assert_eq!(
            acked(&workers),
            at_pause,
            "a transaction committed during PAUSE"
        );
    }
    assert!(
        workers.iter().all(|w| !w.task.is_finished()),
        "a worker failed across PAUSE"
    );
    admin.simple_query("RESUME").await?;
    progress(&workers, &at_pause, &all).await?;

    // RELOAD with a changed reloadable setting.
    let ini = std::fs::read_to_string(pooler.ini_path())?;
    anyhow::ensure!(ini.contains("default_pool_size = 3"), "{ini}");
    std::fs::write(
        pooler.ini_path(),
        ini.replace("default_pool_size = 3", "default_pool_size = 4"),
    )?;
    admin.simple_query("RELOAD").await?;
    let config = table(&admin, "SHOW CONFIG").await?;
    assert_eq!(config.get("default_pool_size", "value"), "4");
    let t = table(&admin, "SHOW DATABASES").await?;
    assert_eq!(t.get(&db.name, "pool_size"), "4");
    progress(&workers, &acked(&workers), &all).await?;

    // KILL_CLIENT of worker 0: only its session ends.
    let clients = table(&admin, "SHOW CLIENTS").await?;
    let victim = clients
        .rows
        .iter()
        .find(|r| r[clients.col("application_name")].as_deref() == Some(app(0).as_str()))
        .and_then(|r| r[clients.col("id")].clone())
        .context("worker 0 in SHOW CLIENTS")?;
    admin.simple_query(&format!("KILL_CLIENT {victim}")).await?;
    eventually("worker 0 to stop", || async {
        Ok(workers[0].task.is_finished())
    })
    .await?;
    let others: Vec<usize> = (1..WORKERS).collect();
    progress(&workers, &acked(&workers), &others).await?;

    // RECONNECT: every server open now is replaced, while the others keep committing.
    let servers = table(&admin, "SHOW SERVERS").await?;
    let old: BTreeSet<String> = servers
        .rows
        .iter()
        .filter_map(|r| r[servers.col("id")].clone())
        .collect();
    anyhow::ensure!(!old.is_empty(), "no servers before RECONNECT");
    admin.simple_query("RECONNECT").await?;
    eventually("every server replaced", || async {
        let t = table(&admin, "SHOW SERVERS").await?;
        let now: BTreeSet<String> = t
            .rows
            .iter()
            .filter_map(|r| r[t.col("id")].clone())
            .collect();
        Ok(!now.is_empty() && now.is_disjoint(&old))
    })
    .await?;
    progress(&workers, &acked(&workers), &others).await?;

    stop.store(true, Ordering::Relaxed);
    let logs = check_table(&direct, workers).await?;
    for (w, log) in logs.iter().enumerate().skip(1) {
        assert!(log.errors.is_empty(), "worker {w} saw errors: {log:?}");
    }
    let victim_log = &logs[0];
    assert_eq!(victim_log.errors.len(), 1, "{victim_log:?}");
    let err = &victim_log.errors[0];
    assert!(
        err.contains("admin forced disconnect") || err.contains("closed"),
        "{err}"
    );
    Ok(())
}

/// SHUTDOWN WAIT_FOR_CLIENTS under load: new clients are refused, the connected workers keep committing
/// without an error until they leave by themselves, then the pooler stops; the table holds what they saw
/// committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_wait_for_clients_under_load() -> anyhow::Result<()> {
    let (db, pooler, direct) = setup("adm_load_wfc", 3).await?;
    let admin = pooler.connect(ADMIN, ADMIN_PW, "pgbouncer").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_workers(&pooler, &db, &stop).await?;
    let all: Vec<usize> = (0..WORKERS).collect();
    progress(&workers, &[0; WORKERS], &all).await?;

    admin.simple_query("SHUTDOWN WAIT_FOR_CLIENTS").await?;
    eventually("new clients refused", || async {
        Ok(pooler.connect_as(&db).await.is_err())
    })
    .await?;
    progress(&workers, &acked(&workers), &all).await?;
    assert!(pooler.state.lifecycle.shutdown_mode().is_some());

    stop.store(true, Ordering::Relaxed);
    let logs = check_table(&direct, workers).await?;
    for (w, log) in logs.iter().enumerate() {
        assert!(log.errors.is_empty(), "worker {w} saw errors: {log:?}");
        assert!(!log.acked.is_empty());
    }
    drop(admin);
    // Every client gone (the workers' clients dropped with their tasks): the pooler finishes.
    tokio::time::timeout(
        WAIT,
        pooler.shutdown(pgwarden::state::ShutdownMode::WaitForClients),
    )
    .await
    .context("the pooler did not stop once its clients left")??;
    Ok(())
}

/// Plain SHUTDOWN under load ends every worker at once; still every acknowledged COMMIT is in the table and
/// nothing that failed before its COMMIT is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load() -> anyhow::Result<()> {
    let (db, pooler, direct) = setup("adm_load_shut", 3).await?;
    let admin = pooler.connect(ADMIN, ADMIN_PW, "pgbouncer").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = start_workers(&pooler, &db, &stop).await?;
    let all: Vec<usize> = (0..WORKERS).collect();
    progress(&workers, &[0; WORKERS], &all).await?;

    let _ = admin.simple_query("SHUTDOWN").await;
    eventually("every worker ended by the shutdown", || async {
        Ok(workers.iter().all(|w| w.task.is_finished()))
    })
    .await?;
    let logs = check_table(&direct, workers).await?;
    for (w, log) in logs.iter().enumerate() {
        assert_eq!(log.errors.len(), 1, "worker {w}: {log:?}");
        assert!(!log.acked.is_empty(), "worker {w}");
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        pooler.shutdown(pgwarden::state::ShutdownMode::Immediate),
    )
    .await
    .context("the pooler did not stop")??;
    Ok(())
}
