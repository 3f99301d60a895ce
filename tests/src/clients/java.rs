//! pgjdbc (Debian's libpostgresql-jdbc-java, `/usr/share/java/postgresql.jar`) running the workload of
//! `tests/clients/java/PgWorkload.java` with `java` from PATH and the classes `tests/clients/java/setup.sh`
//! compiles.
//!
//! The classes live outside the clone: in `$PGWARDEN_JAVACLIENTS_DIR` when set (`.ci/run` sets it), else in
//! `$HOME/.cache/pgwarden-javaclients/<first 16 hex digits of sha256(PgWorkload.java)>`, the path `setup.sh`
//! computes the same way. Missing classes or a missing driver jar are an error naming the command that
//! installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

use super::script::{Install, Lang, ScriptRun};

/// The variable naming the directory holding the compiled workload.
pub const DIR_VAR: &str = "PGWARDEN_JAVACLIENTS_DIR";

/// Where Debian's libpostgresql-jdbc-java puts pgjdbc.
pub const PGJDBC_JAR: &str = "/usr/share/java/postgresql.jar";

const INSTALL: Install = Install {
    what: "the compiled Java workload in",
    dir: "java",
    var: DIR_VAR,
    cache: ".cache/pgwarden-javaclients",
    manifests: &["PgWorkload.java"],
    stamp: ".pgwarden-source.sha256",
    probe: "PgWorkload.class",
};

/// The directory holding the compiled workload, checked to be compiled from the current source.
pub fn classes_dir() -> anyhow::Result<PathBuf> {
    INSTALL.installed_dir()
}

/// Checks that pgjdbc's jar is where Debian installs it.
fn check_jar(jar: &Path) -> anyhow::Result<()> {
    if !jar.exists() {
        bail!(
            "pgjdbc is not installed ({} is missing): run apt-get install libpostgresql-jdbc-java \
             (.ci/run installs it)",
            jar.display()
        );
    }
    Ok(())
}

/// Java's [`Lang`]: no options, agents or classpath inherited from the developer's shell.
#[derive(Debug, Clone, Copy)]
pub struct Jvm;

impl Lang for Jvm {
    fn prepare(cmd: &mut Command) {
        cmd.env_remove("JAVA_TOOL_OPTIONS")
            .env_remove("JDK_JAVA_OPTIONS")
            .env_remove("_JAVA_OPTIONS")
            .env_remove("CLASSPATH");
    }
}

/// One run of a main class of `tests/clients/java/`.
pub type Java = ScriptRun<Jvm>;

impl ScriptRun<Jvm> {
    /// `tests/clients/java/<name>` (a `.java` file) run as its main class by `java` with pgjdbc on the
    /// classpath; fails if the classes are not compiled or pgjdbc is not installed.
    pub fn script(name: &str) -> anyhow::Result<Self> {
        let classes = classes_dir()?;
        check_jar(Path::new(PGJDBC_JAR))?;
        let class = name.strip_suffix(".java").unwrap_or(name).to_owned();
        let classpath = format!("{}:{PGJDBC_JAR}", classes.display());
        Ok(
            ScriptRun::new(&INSTALL, PathBuf::from("java"), name)?.launch(vec![
                "-cp".into(),
                classpath,
                class,
            ]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_classes_name_the_setup_command() {
        let dir = std::env::temp_dir().join("pgwarden-no-such-javaclients");
        let digest = INSTALL.digest().expect("digest");
        assert_eq!(digest.len(), 16);
        let err = format!(
            "{:#}",
            INSTALL.check_at(&dir, &digest).expect_err("nothing there")
        );
        assert!(err.contains("run tests/clients/java/setup.sh"), "{err}");
    }

    #[test]
    fn missing_jar_names_the_package() {
        let err = format!(
            "{:#}",
            check_jar(Path::new("/nonexistent/postgresql.jar")).expect_err("no jar")
        );
        assert!(
            err.contains("apt-get install libpostgresql-jdbc-java"),
            "{err}"
        );
    }

    #[test]
    fn digest_matches_setup_sh() {
        // setup.sh: sha256sum PgWorkload.java | cut -c1-16
        let out = Command::new("sh")
            .arg("-c")
            .arg("sha256sum PgWorkload.java | cut -c1-16")
            .current_dir(INSTALL.scripts_dir())
            .output()
            .expect("sh");
        let want = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(INSTALL.digest().expect("digest"), want);
    }
}
