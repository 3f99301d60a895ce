//! Python database drivers (psycopg 3, psycopg2, asyncpg, SQLAlchemy) running the workload scripts of
//! `tests/clients/python/` with the interpreter of the virtualenv `tests/clients/python/setup.sh` installs.
//!
//! The virtualenv lives outside the clone: `$PGWARDEN_PYCLIENTS_VENV` when set (`.ci/run` sets it), else
//! `$HOME/.cache/pgwarden-pyclients/<first 16 hex digits of sha256(requirements.txt)>`, the path `setup.sh`
//! computes the same way. A missing or stale virtualenv is an error naming the command that installs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::apply_client_env;
use super::process::{ClientOutput, run_async};

/// The variable naming the drivers' virtualenv.
pub const VENV_VAR: &str = "PGWARDEN_PYCLIENTS_VENV";

/// `tests/clients/python/`: the scripts, requirements.txt and setup.sh.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

/// The first 16 hex digits of requirements.txt's SHA-256, as `setup.sh` computes them.
fn requirements_digest() -> anyhow::Result<String> {
    let path = scripts_dir().join("requirements.txt");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(hex[..16].to_owned())
}

/// The drivers' virtualenv, checked to be installed from the current requirements.txt.
pub fn venv_dir() -> anyhow::Result<PathBuf> {
    let digest = requirements_digest()?;
    let dir = match std::env::var_os(VENV_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            Path::new(&home)
                .join(".cache/pgwarden-pyclients")
                .join(&digest)
        }
    };
    venv_dir_at(&dir, &digest)?;
    Ok(dir)
}

/// Checks that `dir` holds a virtualenv `setup.sh` finished installing from requirements.txt of `digest`.
fn venv_dir_at(dir: &Path, digest: &str) -> anyhow::Result<()> {
    let stamp = std::fs::read_to_string(dir.join(".pgwarden-requirements.sha256")).ok();
    if stamp.as_deref().map(str::trim) != Some(digest) || !dir.join("bin/python").exists() {
        bail!(
            "the Python drivers' virtualenv {} is missing or not installed from the current \
             tests/clients/python/requirements.txt: run tests/clients/python/setup.sh (it installs it \
             there; .ci/run runs it)",
            dir.display()
        );
    }
    Ok(())
}

/// One run of a script of `tests/clients/python/`.
#[derive(Debug, Clone)]
pub struct Python {
    /// The virtualenv's interpreter.
    pub interpreter: PathBuf,
    /// The script file.
    pub script: PathBuf,
    /// Arguments after the script.
    pub args: Vec<String>,
    /// Extra environment (the scripts read their targets from `PGW_*` variables).
    pub env: Vec<(String, String)>,
    /// Hard limit for the whole run; the process is killed after it.
    pub timeout: Duration,
}

impl Python {
    /// `tests/clients/python/<name>` run by the drivers' virtualenv; fails if that is not installed.
    pub fn script(name: &str) -> anyhow::Result<Self> {
        let script = scripts_dir().join(name);
        if !script.exists() {
            bail!("no script {}", script.display());
        }
        Ok(Self {
            interpreter: venv_dir()?.join("bin/python"),
            script,
            args: Vec::new(),
            env: Vec::new(),
            timeout: Duration::from_secs(60),
        })
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Points the script at a server: `PGW_HOST`, `PGW_PORT`, `PGW_USER`, `PGW_PASSWORD`, `PGW_DB`.
    pub fn target(self, host: &str, port: u16, user: &str, password: &str, dbname: &str) -> Self {
        self.env("PGW_HOST", host)
            .env("PGW_PORT", port.to_string())
            .env("PGW_USER", user)
            .env("PGW_PASSWORD", password)
            .env("PGW_DB", dbname)
    }

    /// Runs the script (libpq environment scrubbed as for psql, no bytecode written into the clone).
    pub async fn run(&self) -> anyhow::Result<ClientOutput> {
        let mut cmd = Command::new(&self.interpreter);
        cmd.arg(&self.script).args(&self.args);
        apply_client_env(&mut cmd, None, 20, &self.env);
        cmd.env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME");
        run_async(cmd, None, self.timeout).await
    }

    /// [`Python::run`], failing with the script's output unless it exited with status 0; returns its
    /// `RESULT` lines ([`result_lines`]).
    pub async fn run_results(&self) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
        let out = self.run().await?;
        let name = self
            .script
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        out.ensure_success(&format!("{name} {}", self.args.join(" ")))?;
        Ok(result_lines(&out.stdout))
    }
}

/// The `RESULT key=value key=value` lines of a script's output, one map each, in order.
pub fn result_lines(stdout: &str) -> Vec<BTreeMap<String, String>> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_parsed_and_other_lines_ignored() {
        let lines = result_lines("noise\nRESULT a=1 b=x,y c=\nRESULTS z=1\nRESULT d=2\n");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["a"], "1");
        assert_eq!(lines[0]["b"], "x,y");
        assert_eq!(lines[0]["c"], "");
        assert_eq!(lines[1]["d"], "2");
    }

    #[test]
    fn missing_venv_names_the_setup_command() {
        let dir = std::env::temp_dir().join("pgwarden-no-such-pyclients-venv");
        let digest = requirements_digest().expect("digest");
        assert_eq!(digest.len(), 16);
        let err = format!(
            "{:#}",
            venv_dir_at(&dir, &digest).expect_err("nothing there")
        );
        assert!(err.contains("run tests/clients/python/setup.sh"), "{err}");
    }
}
