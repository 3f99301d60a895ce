//! Driver scripts of `tests/clients/<language>/` run by an interpreter whose drivers a `setup.sh` installed
//! outside the clone: shared by the Python ([`super::python`]), Node.js ([`super::node`]) and Java
//! ([`super::java`]; its setup.sh compiles the source into that directory) runners.
//!
//! Each language's install lives in `$<VAR>` when set (`.ci/run` sets it), else in
//! `$HOME/.cache/<cache>/<first 16 hex digits of sha256(the manifests, concatenated)>`, the path its
//! `setup.sh` computes the same way and stamps with that digest when it finished. A missing or stale install
//! is an error naming the command that installs it.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

use super::apply_client_env;
use super::process::{ClientOutput, run_async};

/// Where one language's drivers are installed and how to recognise a finished install.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Install {
    /// For the error message, e.g. "the Python drivers' virtualenv".
    pub what: &'static str,
    /// `tests/clients/<dir>/`: the scripts, manifests and setup.sh.
    pub dir: &'static str,
    /// The variable naming the install directory.
    pub var: &'static str,
    /// Under `$HOME`, the parent of the digest-named default directories.
    pub cache: &'static str,
    /// The manifests (in `dir`) whose concatenation is hashed, in that order.
    pub manifests: &'static [&'static str],
    /// The stamp file setup.sh writes last, holding the digest.
    pub stamp: &'static str,
    /// A path in the install that must exist (the interpreter, the driver).
    pub probe: &'static str,
}

impl Install {
    /// `tests/clients/<dir>/`.
    pub fn scripts_dir(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("clients")
            .join(self.dir)
    }

    /// The first 16 hex digits of the manifests' SHA-256, as setup.sh computes them.
    pub fn digest(&self) -> anyhow::Result<String> {
        let mut hash = Sha256::new();
        for name in self.manifests {
            let path = self.scripts_dir().join(name);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            hash.update(&bytes);
        }
        let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(hex[..16].to_owned())
    }

    /// The install directory, checked to be installed from the current manifests.
    pub fn installed_dir(&self) -> anyhow::Result<PathBuf> {
        let digest = self.digest()?;
        let dir = match std::env::var_os(self.var) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").context("HOME is not set")?;
                Path::new(&home).join(self.cache).join(&digest)
            }
        };
        self.check_at(&dir, &digest)?;
        Ok(dir)
    }

    /// Checks that `dir` holds an install setup.sh finished from manifests of `digest`.
    pub fn check_at(&self, dir: &Path, digest: &str) -> anyhow::Result<()> {
        let stamp = std::fs::read_to_string(dir.join(self.stamp)).ok();
        if stamp.as_deref().map(str::trim) != Some(digest) || !dir.join(self.probe).exists() {
            bail!(
                "{} {} is missing or not installed from the current tests/clients/{}/{}: run \
                 tests/clients/{}/setup.sh (it installs it there; .ci/run runs it)",
                self.what,
                dir.display(),
                self.dir,
                self.manifests.join(" + "),
                self.dir,
            );
        }
        Ok(())
    }
}

/// What differs between the languages when a script runs.
pub trait Lang {
    /// Adjusts the command after the client environment is applied (interpreter variables).
    fn prepare(cmd: &mut Command);
}

/// One run of a script of `tests/clients/<language>/` ([`super::Python`], [`super::Node`], [`super::Java`]).
#[derive(Debug, Clone)]
pub struct ScriptRun<L> {
    /// The interpreter.
    pub program: PathBuf,
    /// The script file.
    pub script: PathBuf,
    /// What the interpreter is given to run the script: the script's path, or for Java the classpath and
    /// main class.
    pub launch: Vec<String>,
    /// Arguments after the script.
    pub args: Vec<String>,
    /// Extra environment (the scripts read their targets from `PGW_*` variables).
    pub env: Vec<(String, String)>,
    /// Hard limit for the whole run; the process is killed after it.
    pub timeout: Duration,
    lang: PhantomData<L>,
}

impl<L: Lang> ScriptRun<L> {
    /// `name` in `install`'s scripts directory, run by `program`.
    pub(crate) fn new(install: &Install, program: PathBuf, name: &str) -> anyhow::Result<Self> {
        let script = install.scripts_dir().join(name);
        if !script.exists() {
            bail!("no script {}", script.display());
        }
        Ok(Self {
            program,
            launch: vec![script.to_string_lossy().into_owned()],
            script,
            args: Vec::new(),
            env: Vec::new(),
            timeout: Duration::from_secs(60),
            lang: PhantomData,
        })
    }

    /// Replaces what the interpreter is given in place of the script's path.
    pub(crate) fn launch(mut self, launch: Vec<String>) -> Self {
        self.launch = launch;
        self
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

    /// Runs the script (libpq environment scrubbed as for psql, then the language's adjustments).
    pub async fn run(&self) -> anyhow::Result<ClientOutput> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.launch).args(&self.args);
        apply_client_env(&mut cmd, None, 20, &self.env);
        L::prepare(&mut cmd);
        run_async(cmd, None, self.timeout).await
    }

    /// [`ScriptRun::run`], failing with the script's output unless it exited with status 0; returns its
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
}
