//! Python database drivers (psycopg 3, psycopg2, asyncpg, SQLAlchemy) running the workload scripts of
//! `tests/clients/python/` with the interpreter of the virtualenv `tests/clients/python/setup.sh` installs.
//!
//! The virtualenv lives outside the clone: `$PGWARDEN_PYCLIENTS_VENV` when set (`.ci/run` sets it), else
//! `$HOME/.cache/pgwarden-pyclients/<first 16 hex digits of sha256(requirements.txt)>`, the path `setup.sh`
//! computes the same way. A missing or stale virtualenv is an error naming the command that installs it.

use std::path::PathBuf;
use std::process::Command;

use super::script::{Install, Lang, ScriptRun};

/// The variable naming the drivers' virtualenv.
pub const VENV_VAR: &str = "PGWARDEN_PYCLIENTS_VENV";

const INSTALL: Install = Install {
    what: "the Python drivers' virtualenv",
    dir: "python",
    var: VENV_VAR,
    cache: ".cache/pgwarden-pyclients",
    manifests: &["requirements.txt"],
    stamp: ".pgwarden-requirements.sha256",
    probe: "bin/python",
};

/// The drivers' virtualenv, checked to be installed from the current requirements.txt.
pub fn venv_dir() -> anyhow::Result<PathBuf> {
    INSTALL.installed_dir()
}

/// Python's [`Lang`]: no bytecode written into the clone, no inherited module paths.
#[derive(Debug, Clone, Copy)]
pub struct Py;

impl Lang for Py {
    fn prepare(cmd: &mut Command) {
        cmd.env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME");
    }
}

/// One run of a script of `tests/clients/python/`.
pub type Python = ScriptRun<Py>;

impl ScriptRun<Py> {
    /// `tests/clients/python/<name>` run by the drivers' virtualenv; fails if that is not installed.
    pub fn script(name: &str) -> anyhow::Result<Self> {
        ScriptRun::new(&INSTALL, venv_dir()?.join("bin/python"), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_venv_names_the_setup_command() {
        let dir = std::env::temp_dir().join("pgwarden-no-such-pyclients-venv");
        let digest = INSTALL.digest().expect("digest");
        assert_eq!(digest.len(), 16);
        let err = format!(
            "{:#}",
            INSTALL.check_at(&dir, &digest).expect_err("nothing there")
        );
        assert!(err.contains("run tests/clients/python/setup.sh"), "{err}");
    }
}
