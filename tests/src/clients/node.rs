//! Node.js database drivers (node-postgres, `pg`) running the workload scripts of `tests/clients/node/` with
//! `node` from PATH and the node_modules `tests/clients/node/setup.sh` installs.
//!
//! The node_modules live outside the clone: in `$PGWARDEN_NODECLIENTS_DIR` when set (`.ci/run` sets it),
//! else in `$HOME/.cache/pgwarden-nodeclients/<first 16 hex digits of sha256(package.json +
//! package-lock.json)>`, the path `setup.sh` computes the same way; scripts find them through `NODE_PATH`
//! (so they are CommonJS: `require` honours it, `import` does not). A missing or stale install is an error
//! naming the command that installs it.

use std::path::PathBuf;
use std::process::Command;

use super::script::{Install, Lang, ScriptRun};

/// The variable naming the directory holding the drivers' node_modules.
pub const DIR_VAR: &str = "PGWARDEN_NODECLIENTS_DIR";

const INSTALL: Install = Install {
    what: "the Node.js drivers' node_modules in",
    dir: "node",
    var: DIR_VAR,
    cache: ".cache/pgwarden-nodeclients",
    manifests: &["package.json", "package-lock.json"],
    stamp: ".pgwarden-manifest.sha256",
    probe: "node_modules/pg/package.json",
};

/// The directory holding the drivers' node_modules, checked to be installed from the current manifests.
pub fn modules_dir() -> anyhow::Result<PathBuf> {
    INSTALL.installed_dir()
}

/// Node.js's [`Lang`]: no options or preloads inherited from the developer's shell.
#[derive(Debug, Clone, Copy)]
pub struct Js;

impl Lang for Js {
    fn prepare(cmd: &mut Command) {
        cmd.env_remove("NODE_OPTIONS");
    }
}

/// One run of a script of `tests/clients/node/`.
pub type Node = ScriptRun<Js>;

impl ScriptRun<Js> {
    /// `tests/clients/node/<name>` run by `node` with the drivers' node_modules; fails if those are not
    /// installed.
    pub fn script(name: &str) -> anyhow::Result<Self> {
        let modules = modules_dir()?.join("node_modules");
        Ok(ScriptRun::new(&INSTALL, PathBuf::from("node"), name)?
            .env("NODE_PATH", modules.to_string_lossy()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_modules_name_the_setup_command() {
        let dir = std::env::temp_dir().join("pgwarden-no-such-nodeclients");
        let digest = INSTALL.digest().expect("digest");
        assert_eq!(digest.len(), 16);
        let err = format!(
            "{:#}",
            INSTALL.check_at(&dir, &digest).expect_err("nothing there")
        );
        assert!(err.contains("run tests/clients/node/setup.sh"), "{err}");
    }

    #[test]
    fn digest_matches_setup_sh() {
        // setup.sh: cat package.json package-lock.json | sha256sum | cut -c1-16
        let out = Command::new("sh")
            .arg("-c")
            .arg("cat package.json package-lock.json | sha256sum | cut -c1-16")
            .current_dir(INSTALL.scripts_dir())
            .output()
            .expect("sh");
        let want = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(INSTALL.digest().expect("digest"), want);
    }
}
