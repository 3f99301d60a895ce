//! A private cluster: options, stop/start/restart keeping data, and cleanup
//! on drop.

use std::time::Duration;

use pgwarden_tests::clients::{self, Psql};
use pgwarden_tests::pg::{ClusterOptions, PasswordEncryption, PgCluster, ShutdownMode, pid_alive};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_restarts_and_drop() -> anyhow::Result<()> {
    let opts = ClusterOptions {
        max_connections: 20,
        ..ClusterOptions::default()
    }
    .setting("work_mem", "'7MB'")
    .hba_line("host all forced_scram 127.0.0.1/32 scram-sha-256");
    let pg = PgCluster::start(opts)?;
    let port = pg.port();
    let dir = pg.dir().to_path_buf();
    assert_eq!(pg.query_scalar("postgres", "SHOW max_connections")?, "20");
    assert_eq!(pg.query_scalar("postgres", "SHOW work_mem")?, "7MB");

    // The extra hba line wins over the default md5 rule: an md5 secret
    // cannot satisfy scram-sha-256, so even the right password is refused.
    pg.create_role("forced_scram", "pw", PasswordEncryption::Md5)?;
    let refused = clients::connect(pg.host(), port, "forced_scram", Some("pw"), "postgres").await;
    assert!(refused.is_err(), "md5 secret accepted under scram-sha-256");
    pg.create_role("plain_md5", "pw", PasswordEncryption::Md5)?;
    clients::connect(pg.host(), port, "plain_md5", Some("pw"), "postgres").await?;

    pg.exec(
        "postgres",
        "CREATE TABLE kept(v text); INSERT INTO kept VALUES ('before stop')",
    )?;
    let first_pid = pg.postmaster_pid()?;
    pg.stop()?;
    assert!(!pid_alive(first_pid));
    assert!(
        clients::connect(pg.host(), port, "postgres", None, "postgres")
            .await
            .is_err()
    );

    pg.start_again()?;
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.query_scalar("postgres", "SELECT v FROM kept")?,
        "before stop"
    );

    // A client connected across a fast restart sees its session terminated.
    let victim = clients::connect(pg.host(), port, "postgres", None, "postgres").await?;
    pg.restart()?;
    assert!(victim.simple_query("SELECT 1").await.is_err());
    assert_eq!(
        pg.query_scalar("postgres", "SELECT count(*) FROM kept")?,
        "1"
    );

    pg.restart_with(ShutdownMode::Immediate)?;
    assert_eq!(
        pg.query_scalar("postgres", "SELECT v FROM kept")?,
        "before stop"
    );

    let last_pid = pg.postmaster_pid()?;
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pid_alive(last_pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pid_alive(last_pid), "postmaster {last_pid} survived drop");
    Ok(())
}

/// Readiness must not depend on the superuser being allowed in over TCP: a
/// rejection from the server proves it is up.
#[test]
fn starts_even_when_hba_rejects_superuser_over_tcp() -> anyhow::Result<()> {
    let opts = ClusterOptions {
        max_connections: 10,
        ..ClusterOptions::default()
    }
    .hba_line("host all postgres 127.0.0.1/32 reject");
    let pg = PgCluster::start(opts)?;
    assert_eq!(pg.query_scalar("postgres", "SELECT 1")?, "1");
    let out = Psql::superuser(&pg, "postgres").run("SELECT 1")?;
    assert!(!out.success());
    assert!(out.stderr.contains("rejects connection"), "{}", out.stderr);
    Ok(())
}
