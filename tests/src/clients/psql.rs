//! `psql` as a real libpq client, for compatibility tests that must go
//! through exactly what users run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use super::process::{ClientOutput, run_async, run_blocking};
use super::{apply_client_env, redacted};
use crate::pg::{PgCluster, client_program};

/// One `psql` invocation target. Fields are public so tests can tweak any of
/// them; [`Psql::new`] fills sensible defaults.
#[derive(Clone)]
pub struct Psql {
    /// The `psql` binary.
    pub program: PathBuf,
    /// Host name, IP, or Unix socket directory.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Sent through `PGPASSWORD`; `None` means no password is available.
    pub password: Option<String>,
    pub dbname: String,
    /// `PGCONNECT_TIMEOUT`, in seconds.
    pub connect_timeout_secs: u32,
    /// Hard limit for the whole run; the process is killed after it.
    pub timeout: Duration,
    /// Extra command-line arguments, placed before `-c`/`-f`.
    pub extra_args: Vec<String>,
    /// Extra environment (e.g. `PGSSLMODE`, `PGAPPNAME`).
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for Psql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Psql")
            .field("program", &self.program)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("dbname", &self.dbname)
            .field("timeout", &self.timeout)
            .field("extra_args", &self.extra_args)
            .finish_non_exhaustive()
    }
}

impl Psql {
    /// A target with no password, a 10 s connect timeout and a 60 s limit.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        user: impl Into<String>,
        dbname: impl Into<String>,
    ) -> Psql {
        Psql {
            program: client_program("psql"),
            host: host.into(),
            port,
            user: user.into(),
            password: None,
            dbname: dbname.into(),
            connect_timeout_secs: 10,
            timeout: Duration::from_secs(60),
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The cluster's superuser over TCP (trusted, no password).
    pub fn superuser(cluster: &PgCluster, dbname: impl Into<String>) -> Psql {
        Psql::new(cluster.host(), cluster.port(), cluster.superuser(), dbname)
    }

    /// Sets the password.
    pub fn password(mut self, password: impl Into<String>) -> Psql {
        self.password = Some(password.into());
        self
    }

    /// The base command: quiet, unaligned, tuples only, no `.psqlrc`, stop
    /// on the first error (so the exit status reflects SQL errors).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-U")
            .arg(&self.user)
            .arg("-d")
            .arg(&self.dbname)
            .args(&self.extra_args);
        apply_client_env(
            &mut cmd,
            self.password.as_deref(),
            self.connect_timeout_secs,
            &self.env,
        );
        cmd
    }

    /// Runs `sql` with `-c` (one simple-protocol query string).
    pub fn run(&self, sql: &str) -> anyhow::Result<ClientOutput> {
        let mut cmd = self.command();
        cmd.arg("-c").arg(sql);
        run_blocking(cmd, None, self.timeout)
    }

    /// Runs `sql` and returns its stdout without the final newline; fails
    /// with psql's stderr if psql exits non-zero.
    pub fn run_ok(&self, sql: &str) -> anyhow::Result<String> {
        let out = self.run(sql)?;
        out.ensure_success(&format!("psql -c {sql:?}"))?;
        Ok(trim_newline(out.stdout))
    }

    /// Runs a script file with `-f`.
    pub fn run_file(&self, path: &Path) -> anyhow::Result<ClientOutput> {
        let mut cmd = self.command();
        cmd.arg("-f").arg(path);
        run_blocking(cmd, None, self.timeout)
    }

    /// Feeds `script` on stdin, statement by statement as psql reads it,
    /// like an interactive session or a piped dump.
    pub fn run_stdin(&self, script: &str) -> anyhow::Result<ClientOutput> {
        run_blocking(
            self.command(),
            Some(script.as_bytes().to_vec()),
            self.timeout,
        )
    }

    /// Async [`Psql::run`], for tests whose pooler shares the runtime.
    pub async fn run_async(&self, sql: &str) -> anyhow::Result<ClientOutput> {
        let mut cmd = self.command();
        cmd.arg("-c").arg(sql);
        run_async(cmd, None, self.timeout).await
    }

    /// Async [`Psql::run_ok`].
    pub async fn run_ok_async(&self, sql: &str) -> anyhow::Result<String> {
        let out = self.run_async(sql).await?;
        out.ensure_success(&format!("psql -c {sql:?}"))
            .context("psql run")?;
        Ok(trim_newline(out.stdout))
    }

    /// Async [`Psql::run_stdin`].
    pub async fn run_stdin_async(&self, script: &str) -> anyhow::Result<ClientOutput> {
        run_async(
            self.command(),
            Some(script.as_bytes().to_vec()),
            self.timeout,
        )
        .await
    }
}

fn trim_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_has_expected_flags_and_env() {
        let p = Psql::new("127.0.0.1", 6432, "alice", "db").password("s3cret");
        let cmd = p.command();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(
            joined
                .starts_with("-X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 6432 -U alice -d db"),
            "{joined}"
        );
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(envs.contains(&("PGPASSWORD".to_owned(), Some("s3cret".to_owned()))));
        assert!(envs.contains(&("PGCONNECT_TIMEOUT".to_owned(), Some("10".to_owned()))));
    }

    #[test]
    fn debug_hides_password() {
        let p = Psql::new("h", 1, "u", "d").password("topsecret");
        let text = format!("{p:?}");
        assert!(!text.contains("topsecret"), "{text}");
    }

    #[test]
    fn trims_one_newline() {
        assert_eq!(trim_newline("a\n".into()), "a");
        assert_eq!(trim_newline("a\n\n".into()), "a\n");
        assert_eq!(trim_newline(String::new()), "");
    }
}
