//! Tests against the per-process shared cluster: roles with both kinds of
//! stored secret, real clients, backend accounting.

use std::time::Duration;

use pgwarden_tests::clients::{self, BenchLength, BenchRun, Pgbench, Psql, QueryMode};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};

/// Creates a role with the given secret kind and a database it owns.
fn role_and_db(
    prefix: &str,
    password: &str,
    enc: PasswordEncryption,
) -> anyhow::Result<(String, String)> {
    let pg = PgCluster::shared();
    let role = PgCluster::unique_name(prefix);
    let db = PgCluster::unique_name(&format!("{prefix}_db"));
    pg.create_role(&role, password, enc)?;
    pg.create_database(&db, &role)?;
    Ok((role, db))
}

#[tokio::test]
async fn md5_and_scram_roles_log_in_over_tcp() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (md5, db) = role_and_db("md5_user", "md5 pass", PasswordEncryption::Md5)?;
    let scram = PgCluster::unique_name("scram_user");
    pg.create_role(&scram, "scr'am", PasswordEncryption::Scram)?;

    let md5_secret = pg.role_secret(&md5)?;
    assert!(
        md5_secret.starts_with("md5") && md5_secret.len() == 35,
        "{md5_secret}"
    );
    assert!(pg.role_secret(&scram)?.starts_with("SCRAM-SHA-256$"));

    for (user, password) in [(&md5, "md5 pass"), (&scram, "scr'am")] {
        let client = clients::connect(pg.host(), pg.port(), user, Some(password), &db).await?;
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await?
            .get(0);
        assert_eq!(&who, user);
        let wrong = clients::connect(pg.host(), pg.port(), user, Some("nope"), &db).await;
        let msg = format!(
            "{:#}",
            wrong
                .err()
                .ok_or_else(|| anyhow::anyhow!("wrong password accepted"))?
        );
        assert!(msg.contains("password authentication failed"), "{msg}");
    }
    Ok(())
}

#[tokio::test]
async fn superuser_socket_helpers() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    assert_eq!(
        pg.query_scalar("postgres", "SELECT current_setting('fsync')")?,
        "off"
    );
    assert_eq!(pg.query_scalar("postgres", "SHOW max_connections")?, "300");
    assert!(pg.query_scalar("postgres", "SELECT NULL").is_err());
    assert!(pg.exec("postgres", "SELEC 1").is_err());
    // Async variants work on the caller's runtime.
    pg.exec_async("postgres", "SELECT 1; SELECT 2").await?;
    assert_eq!(pg.query_scalar_async("postgres", "SELECT 6*7").await?, "42");
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{}", pg.port()))
            .exists()
    );
    assert!(std::ptr::eq(pg, PgCluster::shared()));
    Ok(())
}

#[tokio::test]
async fn backend_accounting_follows_client_connections() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (role, db) = role_and_db("backends", "pw", PasswordEncryption::Scram)?;
    let mut conns = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..3 {
        let c = clients::connect(pg.host(), pg.port(), &role, Some("pw"), &db).await?;
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
        pids.push(pid);
        conns.push(c);
    }
    pids.sort_unstable();
    assert_eq!(pg.backend_count_async(&db).await?, 3);
    assert_eq!(pg.backend_pids_async(&db).await?, pids);
    assert_eq!(pg.backend_pids(&db)?, pids);
    drop(conns);
    pg.wait_for_backend_count_async(&db, 0, Duration::from_secs(10))
        .await?;
    assert_eq!(pg.backend_count(&db)?, 0);
    Ok(())
}

#[test]
fn psql_runs_sql_files_and_stdin() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (role, db) = role_and_db("psql_user", "ps pw", PasswordEncryption::Md5)?;
    let psql = Psql::new(pg.host(), pg.port(), &role, &db).password("ps pw");
    assert_eq!(psql.run_ok("SELECT current_user")?, role);
    assert_eq!(psql.run_ok("SELECT 1 UNION ALL SELECT 2")?, "1\n2");

    let err = format!(
        "{:#}",
        psql.run_ok("SELECT 1/0")
            .err()
            .ok_or_else(|| anyhow::anyhow!("no error"))?
    );
    assert!(err.contains("division by zero"), "{err}");

    let out = psql.run_stdin(
        "CREATE TABLE t(x int);\nINSERT INTO t VALUES (1),(2);\nSELECT sum(x) FROM t;\n",
    )?;
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout.trim(), "3");

    let file = pg.dir().join(format!("{db}.sql"));
    std::fs::write(
        &file,
        "SELECT count(*) FROM t;\nSELECT no_such_column FROM t;\nSELECT 'not reached';\n",
    )?;
    let out = psql.run_file(&file)?;
    assert_eq!(out.code(), Some(3), "ON_ERROR_STOP exit code: {out:?}");
    assert_eq!(out.stdout.trim(), "2");

    let no_pw = Psql::new(pg.host(), pg.port(), &role, &db);
    let out = no_pw.run("SELECT 1")?;
    assert!(!out.success());
    assert!(out.stderr.contains("password"), "{}", out.stderr);

    let su = Psql::superuser(pg, "postgres");
    assert_eq!(su.run_ok("SELECT current_setting('is_superuser')")?, "on");
    Ok(())
}

#[tokio::test]
async fn psql_async_variants() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let psql = Psql::superuser(pg, "postgres");
    assert_eq!(psql.run_ok_async("SELECT 'a' || 'b'").await?, "ab");
    let out = psql.run_stdin_async("SELECT 5;").await?;
    assert_eq!(out.stdout.trim(), "5");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_init_and_runs() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let (role, db) = role_and_db("bench", "bench pw", PasswordEncryption::Scram)?;
    let bench = Pgbench::new(pg.host(), pg.port(), &role, &db).password("bench pw");
    bench.init(1)?;
    assert_eq!(
        pg.query_scalar(&db, "SELECT count(*) FROM pgbench_branches")?,
        "1"
    );

    let timed = BenchRun {
        clients: 2,
        jobs: 2,
        length: BenchLength::Duration(Duration::from_secs(2)),
        select_only: true,
        ..BenchRun::default()
    };
    let result = bench.run(&timed)?;
    result.ensure_clean()?;
    assert!(result.tps > 0.0 && result.processed > 0, "{result:?}");
    assert_eq!(result.planned, None);
    assert!(result.latency_avg_ms.is_some());

    let counted = BenchRun {
        clients: 2,
        jobs: 1,
        length: BenchLength::Transactions(25),
        mode: QueryMode::Prepared,
        select_only: false,
        ..BenchRun::default()
    };
    let result = bench.run_async(&counted).await?;
    result.ensure_clean()?;
    assert_eq!((result.processed, result.planned), (50, Some(50)));
    Ok(())
}
