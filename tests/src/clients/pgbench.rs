//! `pgbench` runs, for load and protocol-mode (simple/extended/prepared)
//! tests through the pooler, and parsing of PostgreSQL 15's summary.

use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{Context, bail};

use super::process::{ClientOutput, run_async, run_blocking};
use super::{apply_client_env, redacted};
use crate::pg::{PgCluster, client_program};

/// Which protocol flavour pgbench uses (`-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryMode {
    /// Simple query protocol.
    Simple,
    /// Extended protocol with unnamed statements.
    Extended,
    /// Extended protocol with named prepared statements, the case that
    /// stresses a transaction pooler's prepared-statement handling.
    Prepared,
}

impl QueryMode {
    fn as_arg(self) -> &'static str {
        match self {
            QueryMode::Simple => "simple",
            QueryMode::Extended => "extended",
            QueryMode::Prepared => "prepared",
        }
    }
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchLength {
    /// `-t N`: transactions per client.
    Transactions(u32),
    /// `-T secs` (whole seconds, at least 1).
    Duration(Duration),
}

/// Parameters of one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchRun {
    /// `-c`
    pub clients: u32,
    /// `-j`
    pub jobs: u32,
    pub length: BenchLength,
    /// `-M`
    pub mode: QueryMode,
    /// `-S`: the built-in select-only script instead of TPC-B-like.
    pub select_only: bool,
    /// Vacuum before the run; off (`-n`) by default since `init` just ran
    /// and the vacuum may not be what a pooler test wants to exercise.
    pub vacuum: bool,
    /// Further arguments, placed before the database name.
    pub extra_args: Vec<String>,
}

impl Default for BenchRun {
    fn default() -> Self {
        BenchRun {
            clients: 1,
            jobs: 1,
            length: BenchLength::Transactions(10),
            mode: QueryMode::Simple,
            select_only: true,
            vacuum: false,
            extra_args: Vec::new(),
        }
    }
}

/// The summary of a run plus raw output.
#[derive(Debug, Clone)]
pub struct PgbenchResult {
    pub status: ExitStatus,
    /// `tps = X (without initial connection time)`.
    pub tps: f64,
    /// Transactions actually processed.
    pub processed: u64,
    /// The planned total for `-t` runs (`N/M` form); `None` for `-T`.
    pub planned: Option<u64>,
    /// `number of failed transactions` (0 if the line is absent).
    pub failed: u64,
    /// `latency average`, in milliseconds, when reported.
    pub latency_avg_ms: Option<f64>,
    pub stdout: String,
    pub stderr: String,
}

impl PgbenchResult {
    /// Fails unless pgbench exited 0, nothing failed, and every planned
    /// transaction ran.
    pub fn ensure_clean(&self) -> anyhow::Result<()> {
        let incomplete = self.planned.is_some_and(|p| p != self.processed);
        if !self.status.success() || self.failed > 0 || incomplete || self.processed == 0 {
            bail!(
                "pgbench run not clean ({}, processed {}/{:?}, failed {}):\n{}\n{}",
                self.status,
                self.processed,
                self.planned,
                self.failed,
                self.stderr,
                self.stdout
            );
        }
        Ok(())
    }
}

/// A pgbench target.
#[derive(Clone)]
pub struct Pgbench {
    pub program: PathBuf,
    /// Host name, IP, or Unix socket directory.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// `PGCONNECT_TIMEOUT`, in seconds.
    pub connect_timeout_secs: u32,
    /// Limit for `init` and `-t` runs; `-T` runs get their duration on top.
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for Pgbench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pgbench")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("dbname", &self.dbname)
            .finish_non_exhaustive()
    }
}

impl Pgbench {
    /// A target with no password, a 10 s connect timeout and a 120 s limit.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        dbname: impl Into<String>,
    ) -> Pgbench {
        Pgbench {
            program: client_program("pgbench"),
            host: host.into(),
            port,
            user: user.into(),
            password: None,
            dbname: dbname.into(),
            connect_timeout_secs: 10,
            timeout: Duration::from_secs(120),
            env: Vec::new(),
        }
    }

    /// The cluster's superuser over TCP (trusted, no password).
    pub fn superuser(cluster: &PgCluster, dbname: impl Into<String>) -> Pgbench {
        Pgbench::new(cluster.host(), cluster.port(), cluster.superuser(), dbname)
    }

    /// Sets the password (sent through `PGPASSWORD`).
    pub fn password(mut self, password: impl Into<String>) -> Pgbench {
        self.password = Some(password.into());
        self
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.arg("-h")
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.user);
        apply_client_env(
            &mut cmd,
            self.password.as_deref(),
            self.connect_timeout_secs,
            &self.env,
        );
        cmd
    }

    /// `pgbench -i -q -s scale`: creates and fills the pgbench tables. Meant
    /// to run directly against PostgreSQL, not through the pooler.
    pub fn init(&self, scale: u32) -> anyhow::Result<ClientOutput> {
        let mut cmd = self.command();
        cmd.args(["-i", "-q", "-s"])
            .arg(scale.to_string())
            .arg(&self.dbname);
        let out = run_blocking(cmd, None, self.timeout)?;
        out.ensure_success("pgbench -i")?;
        Ok(out)
    }

    fn run_command(&self, run: &BenchRun) -> (Command, Duration) {
        let mut cmd = self.command();
        cmd.arg("-c")
            .arg(run.clients.to_string())
            .arg("-j")
            .arg(run.jobs.to_string());
        let mut timeout = self.timeout;
        match run.length {
            BenchLength::Transactions(n) => {
                cmd.arg("-t").arg(n.to_string());
            }
            BenchLength::Duration(d) => {
                let secs = d.as_secs().max(1);
                cmd.arg("-T").arg(secs.to_string());
                timeout += Duration::from_secs(secs);
            }
        }
        cmd.arg("-M").arg(run.mode.as_arg());
        if run.select_only {
            cmd.arg("-S");
        }
        if !run.vacuum {
            cmd.arg("-n");
        }
        cmd.args(&run.extra_args).arg(&self.dbname);
        (cmd, timeout)
    }

    /// Runs a benchmark. Returns the parsed summary even when pgbench exits
    /// non-zero (aborted clients still produce one); fails only when there
    /// is no summary to parse. Use [`PgbenchResult::ensure_clean`] to demand
    /// a fault-free run.
    pub fn run(&self, run: &BenchRun) -> anyhow::Result<PgbenchResult> {
        let (cmd, timeout) = self.run_command(run);
        let out = run_blocking(cmd, None, timeout)?;
        parse_output(out)
    }

    /// Async [`Pgbench::run`].
    pub async fn run_async(&self, run: &BenchRun) -> anyhow::Result<PgbenchResult> {
        let (cmd, timeout) = self.run_command(run);
        let out = run_async(cmd, None, timeout).await?;
        parse_output(out)
    }
}

/// Parses pgbench 15's summary from a finished run.
pub fn parse_output(out: ClientOutput) -> anyhow::Result<PgbenchResult> {
    let fail = |what: &str| {
        anyhow::anyhow!(
            "pgbench output has no {what} ({}):\nstderr:\n{}\nstdout:\n{}",
            out.status,
            out.stderr,
            out.stdout
        )
    };
    let mut tps = None;
    let mut processed = None;
    let mut planned = None;
    let mut failed = 0;
    let mut latency = None;
    for line in out.stdout.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("number of transactions actually processed:") {
            let (done, total) = match v.trim().split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (v.trim(), None),
            };
            processed = Some(done.trim().parse::<u64>().context("processed count")?);
            planned = total
                .map(|t| t.trim().parse::<u64>())
                .transpose()
                .context("planned count")?;
        } else if let Some(v) = line.strip_prefix("number of failed transactions:") {
            failed = first_word(v).parse().context("failed count")?;
        } else if let Some(v) = line.strip_prefix("latency average =") {
            latency = Some(first_word(v).parse::<f64>().context("latency average")?);
        } else if let Some(v) = line.strip_prefix("tps =") {
            tps = Some(first_word(v).parse::<f64>().context("tps")?);
        }
    }
    Ok(PgbenchResult {
        tps: tps.ok_or_else(|| fail("tps line"))?,
        processed: processed.ok_or_else(|| fail("processed count"))?,
        planned,
        failed,
        latency_avg_ms: latency,
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    })
}

fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const T_RUN: &str = "pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: prepared
number of clients: 4
number of threads: 2
maximum number of tries: 1
number of transactions per client: 10
number of transactions actually processed: 40/40
number of failed transactions: 0 (0.000%)
latency average = 1.659 ms
initial connection time = 20.304 ms
tps = 2411.381722 (without initial connection time)
";

    fn output(code: i32, stdout: &str, stderr: &str) -> ClientOutput {
        ClientOutput {
            status: ExitStatus::from_raw(code << 8),
            stdout: stdout.to_owned(),
            stderr: stderr.to_owned(),
        }
    }

    #[test]
    fn parses_transaction_count_run() {
        let r = parse_output(output(0, T_RUN, "")).expect("parse");
        assert_eq!(r.processed, 40);
        assert_eq!(r.planned, Some(40));
        assert_eq!(r.failed, 0);
        assert_eq!(r.latency_avg_ms, Some(1.659));
        assert!((r.tps - 2411.381722).abs() < 1e-9);
        r.ensure_clean().expect("clean");
    }

    #[test]
    fn parses_duration_run_and_aborted_run() {
        let d = T_RUN
            .replace("number of transactions per client: 10", "duration: 1 s")
            .replace("40/40", "11765");
        let r = parse_output(output(0, &d, "")).expect("parse");
        assert_eq!((r.processed, r.planned), (11765, None));

        let aborted = T_RUN.replace("40/40", "30/40").replace(
            "failed transactions: 0 (0.000%)",
            "failed transactions: 2 (5.000%)",
        );
        let r =
            parse_output(output(2, &aborted, "pgbench: error: client 1 aborted")).expect("parse");
        assert_eq!((r.processed, r.planned, r.failed), (30, Some(40), 2));
        let err = r.ensure_clean().expect_err("not clean");
        assert!(format!("{err}").contains("client 1 aborted"));
    }

    #[test]
    fn missing_summary_is_an_error_with_stderr() {
        let err = parse_output(output(1, "", "pgbench: error: connection to server failed"))
            .expect_err("no summary");
        assert!(format!("{err}").contains("connection to server failed"));
        assert!(parse_output(output(0, "tps = banana", "")).is_err());
    }

    #[test]
    fn run_command_flags() {
        let b = Pgbench::new("127.0.0.1", 5, "u", "db");
        let run = BenchRun {
            clients: 4,
            jobs: 2,
            length: BenchLength::Duration(Duration::from_millis(2500)),
            mode: QueryMode::Extended,
            ..Default::default()
        };
        let (cmd, timeout) = b.run_command(&run);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "-h 127.0.0.1 -p 5 -U u -c 4 -j 2 -T 2 -M extended -S -n db"
        );
        assert_eq!(timeout, Duration::from_secs(122));
    }
}
