//! A killed test process must not leave PostgreSQL behind.
//!
//! The test re-runs its own binary, filtered to itself, in "child" mode
//! (selected by an environment variable): the child starts a cluster, reports
//! its postmaster pid and directory, and waits. The parent kills it with
//! SIGKILL, so no destructor runs, and expects the watchdog to clean up.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use pgwarden_tests::pg::{ClusterOptions, PgCluster, pid_alive};

const CHILD_ENV: &str = "PGWARDEN_HARNESS_WATCHDOG_CHILD";
const READY: &str = "PGWARDEN-CHILD-READY";

#[test]
fn killed_test_process_leaves_no_cluster_behind() -> anyhow::Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "harness::watchdog::killed_test_process_leaves_no_cluster_behind",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no child stdout"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print "test <name> ... " on the same line first.
            if let Some((_, rest)) = line.split_once(READY) {
                let _ = tx.send(rest.trim().to_owned());
            }
        }
    });
    let report = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("child never reported a running cluster");
        }
    };
    let (pid, dir) = report
        .split_once(' ')
        .ok_or_else(|| anyhow!("bad report {report:?}"))?;
    let pid: u32 = pid.parse().context("postmaster pid")?;
    let dir = PathBuf::from(dir);
    assert!(pid_alive(pid) && dir.exists());

    child.kill()?;
    child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (pid_alive(pid) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !pid_alive(pid),
        "postmaster {pid} outlived its test process"
    );
    assert!(!dir.exists(), "{} outlived its test process", dir.display());
    Ok(())
}

/// Child mode: start a cluster, report it, then wait to be killed. The wait
/// is bounded so a parent that died first does not leave us running.
fn child() -> anyhow::Result<()> {
    let pg = PgCluster::start(ClusterOptions {
        max_connections: 10,
        ..ClusterOptions::default()
    })?;
    // Written to the real stdout (not `println!`, which libtest captures).
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\n{READY} {} {}",
        pg.postmaster_pid()?,
        pg.dir().display()
    )?;
    out.flush()?;
    drop(out);
    std::thread::sleep(Duration::from_secs(60));
    Ok(())
}
