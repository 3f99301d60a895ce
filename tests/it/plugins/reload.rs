//! Plugin generations swapped by reload: under pgbench load with no failed transaction, a transaction
//! begun before the reload finishing under the old generation, and reloads whose plugin fails to load
//! leaving the running generation in place.

use std::time::Duration;

use pgwarden::reload::ReloadError;
use pgwarden_tests::clients::{BenchLength, BenchRun, Pgbench, QueryMode};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb, pgwarden_section, write_config};

use super::support::{TESTING, assert_error, plugin, ro_denial};
use crate::pool_support::{db_line, entry, scalar};

/// A database with a writable alias (its name), `<name>_ro` and `<name>_x`, a pooler in transaction mode
/// whose `[pgwarden]` section can be rewritten for reloads.
struct Setup {
    pg: &'static PgCluster,
    db: TestDb,
    ro: String,
    x: String,
    pooler: Pooler,
}

const SETTINGS: &str = "pool_mode = transaction\nauth_type = md5\ndefault_pool_size = 4";

impl Setup {
    async fn start(prefix: &str, plugins: &str) -> anyhow::Result<Self> {
        let pg = PgCluster::shared();
        let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
        let ro = format!("{}_ro", db.name);
        let x = format!("{}_x", db.name);
        let pooler =
            Pooler::start_with_plugins(&databases(pg, &db), SETTINGS, &db.userlist_line(), plugins)
                .await?;
        Ok(Self {
            pg,
            db,
            ro,
            x,
            pooler,
        })
    }

    /// Rewrites the configuration with these plugin lines and reloads.
    async fn reload(&self, plugins: &str) -> Result<(), ReloadError> {
        write_config(
            &self.pooler.dir,
            self.pooler.port,
            &databases(self.pg, &self.db),
            &format!("{SETTINGS}\n{}", pgwarden_section(plugins)),
            &self.db.userlist_line(),
        )
        .expect("rewrite the configuration");
        self.pooler.reload().await
    }

    async fn client(&self, alias: &str) -> anyhow::Result<tokio_postgres::Client> {
        self.pooler
            .connect(&self.db.user, &self.db.password, alias)
            .await
    }
}

fn databases(pg: &PgCluster, db: &TestDb) -> String {
    [
        entry(pg, db, ""),
        db_line(pg, &format!("{}_ro", db.name), &db.name, ""),
        db_line(pg, &format!("{}_x", db.name), &db.name, ""),
    ]
    .join("\n")
}

fn readonly_on(databases: &str) -> String {
    format!("plugin.readonly.path = builtin:readonly\nplugin.readonly.databases = {databases}")
}

/// pgbench through the pooler on `alias`, `-c 8 -j 2 -T 3`.
fn bench(s: &Setup, alias: &str, select_only: bool) -> (Pgbench, BenchRun) {
    let mut pgbench = s.pooler.pgbench(&s.db);
    pgbench.dbname = alias.to_owned();
    let run = BenchRun {
        clients: 8,
        jobs: 2,
        length: BenchLength::Duration(Duration::from_secs(3)),
        mode: QueryMode::Extended,
        select_only,
        ..BenchRun::default()
    };
    (pgbench, run)
}

/// While pgbench runs select-only on the alias the readonly plugin comes and goes on, and TPC-B on the
/// writable alias, the plugin generation is swapped again and again (readonly added, its databases
/// changed, removed): every reload succeeds and not one transaction fails. Afterwards the last
/// generation is the one enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_plugins_under_load_fails_no_transaction() -> anyhow::Result<()> {
    let s = Setup::start("plug_reload_load", "").await?;
    // The first load compiles the component (seconds on a busy machine); later generations reuse it.
    s.reload(&readonly_on(&s.ro)).await?;
    Pgbench::new(
        "127.0.0.1",
        s.pg.port(),
        s.db.user.clone(),
        s.db.name.clone(),
    )
    .password(s.db.password.clone())
    .init(1)?
    .ensure_success("pgbench -i")?;
    let (reads, read_run) = bench(&s, &s.ro, true);
    let (writes, write_run) = bench(&s, &s.db.name, false);
    let reading = tokio::spawn(async move { reads.run_async(&read_run).await });
    let writing = tokio::spawn(async move { writes.run_async(&write_run).await });

    let generations = [
        readonly_on(&s.ro),
        readonly_on(&format!("{},{}", s.ro, s.x)),
        String::new(),
        readonly_on(&s.x),
        readonly_on(&s.ro),
    ];
    let mut reloads = 0;
    while !(reading.is_finished() && writing.is_finished()) {
        s.reload(&generations[reloads % generations.len()])
            .await
            .map_err(|e| anyhow::anyhow!("reload {reloads}: {e}"))?;
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reading = reading.await??;
    let writing = writing.await??;
    reading.ensure_clean()?;
    writing.ensure_clean()?;
    assert!(reloads >= 5, "only {reloads} reloads during the runs");

    // Make the final generation known and check it is the one enforced.
    s.reload(&readonly_on(&s.ro)).await?;
    let ro = s.client(&s.ro).await?;
    assert_error(
        ro.batch_execute("UPDATE pgbench_branches SET bbalance = 0")
            .await,
        "25006",
        &ro_denial("UPDATE"),
        "UPDATE through the read-only alias",
    );
    assert_eq!(
        scalar(&ro, "SHOW default_transaction_read_only").await?,
        "on"
    );
    let x = s.client(&s.x).await?;
    x.batch_execute("UPDATE pgbench_branches SET bbalance = 0")
        .await?;
    assert_eq!(
        scalar(&x, "SHOW default_transaction_read_only").await?,
        "off"
    );
    Ok(())
}

/// A transaction begun before a reload that puts readonly on its alias keeps the generation it began
/// with: it can still write and COMMIT. The next transaction is read-only, from the plugin and from a
/// read-only server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_begun_before_the_reload_finishes_writable() -> anyhow::Result<()> {
    let s = Setup::start("plug_reload_tx", "").await?;
    s.pg.exec(
        &s.db.name,
        &format!(
            "CREATE TABLE t(v int); ALTER TABLE t OWNER TO {}",
            s.db.user
        ),
    )?;
    let client = s.client(&s.ro).await?;
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await?;
    s.reload(&readonly_on(&s.ro)).await?;
    client.execute("INSERT INTO t VALUES (2)", &[]).await?;
    client
        .batch_execute("INSERT INTO t VALUES (3); COMMIT")
        .await?;
    assert_eq!(
        s.pg.query_scalar_async(
            &s.db.name,
            "SELECT string_agg(v::text, ',' ORDER BY v) FROM t"
        )
        .await?,
        "1,2,3"
    );
    assert_error(
        client.batch_execute("INSERT INTO t VALUES (4)").await,
        "25006",
        &ro_denial("INSERT"),
        "INSERT after the reload",
    );
    assert_eq!(
        scalar(&client, "SHOW default_transaction_read_only").await?,
        "on"
    );
    assert_eq!(
        s.pg.query_scalar_async(&s.db.name, "SELECT count(*) FROM t")
            .await?,
        "3"
    );
    Ok(())
}

/// A reload whose plugin cannot load (a missing file, a file that is not a component, an init that
/// refuses its configuration) fails with the plugin's name, where it is configured and why, and the
/// running generation stays: the old readonly plugin still enforces, the same plugin object with its
/// counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_plugin_that_fails_to_load_keeps_the_running_generation()
-> anyhow::Result<()> {
    let s = Setup::start("plug_reload_bad", "").await?;
    let good = readonly_on(&s.ro);
    s.reload(&good).await?;
    let running = plugin(&s.pooler, "readonly")?;
    let generation = s.pooler.state.runtime().generation;
    let not_a_component = s.pooler.dir.join("not_a_component.wasm");
    std::fs::write(&not_a_component, b"\0asm but not really")?;
    let missing = s.pooler.dir.join("missing.wasm");
    for (path, extra, said) in [
        (missing.display().to_string(), "", "missing.wasm"),
        (
            not_a_component.display().to_string(),
            "",
            "not_a_component.wasm",
        ),
        (
            TESTING.to_owned(),
            "plugin.bad.config.mode = init_error\n",
            "testing: init refused",
        ),
    ] {
        // The bad plugin comes after readonly (whose databases change too, which must not apply).
        let plugins = format!(
            "{}\nplugin.bad.path = {path}\nplugin.bad.hooks = policy\n{extra}",
            readonly_on(&s.x)
        );
        let err = match s.reload(&plugins).await {
            Ok(()) => panic!("a reload with {path} succeeded"),
            Err(ReloadError::Plugin(e)) => e,
            Err(other) => panic!("{path}: not a plugin error: {other}"),
        };
        let text = err.to_string();
        assert_eq!(err.name, "bad", "{text}");
        assert!(
            err.origin.contains("pgbouncer.ini:")
                && text.contains("plugin \"bad\"")
                && text.contains(said),
            "{text}"
        );
        // The running generation is untouched.
        assert_eq!(s.pooler.state.runtime().generation, generation);
        assert!(std::sync::Arc::ptr_eq(
            &plugin(&s.pooler, "readonly")?,
            &running
        ));
        let ro = s.client(&s.ro).await?;
        assert_error(
            ro.batch_execute("CREATE TABLE t2(a int)").await,
            "25006",
            &ro_denial("CREATE"),
            "CREATE through the read-only alias",
        );
        let x = s.client(&s.x).await?;
        x.batch_execute("CREATE TABLE t3(a int); DROP TABLE t3")
            .await?;
    }
    // A good reload after the bad ones applies.
    s.reload("").await?;
    let ro = s.client(&s.ro).await?;
    ro.batch_execute("CREATE TABLE t2(a int)").await?;
    Ok(())
}
