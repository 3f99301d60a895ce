//! Operating-system plumbing for throwaway clusters: finding the PostgreSQL
//! binaries, running them as an OS user PostgreSQL accepts, and reading
//! `/proc` to tell whether a process is still alive.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, anyhow, bail};

/// Environment variable that overrides where the server binaries are looked
/// up, for machines where PostgreSQL 15 lives somewhere unusual.
pub const BIN_DIR_ENV: &str = "PGWARDEN_PG_BIN";

/// Where Debian's `postgresql-15` package installs the server binaries (CI).
const DEBIAN_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// The OS account the server runs as when the tests run as root.
const SERVICE_USER: &str = "postgres";

/// Directory that holds `initdb`, `pg_ctl` and `postgres`.
///
/// Looked up once per process: `$PGWARDEN_PG_BIN`, then Debian's PostgreSQL 15
/// location, then `pg_config --bindir`. Debian's wrapper scripts on `PATH`
/// (`/usr/bin/psql` and friends) are deliberately not used for the server
/// tools because `initdb`/`pg_ctl` are not on `PATH` there.
pub fn pg_bin_dir() -> anyhow::Result<PathBuf> {
    static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN_DIR
        .get_or_init(|| find_bin_dir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        bail!("${BIN_DIR_ENV}={} has no postgres binary", dir.display());
    }
    let debian = PathBuf::from(DEBIAN_BIN_DIR);
    if has_server(&debian) {
        return Ok(debian);
    }
    let out = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output();
    if let Ok(out) = out
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    bail!(
        "PostgreSQL server binaries not found: install postgresql-15 \
         (expected {DEBIAN_BIN_DIR}) or set ${BIN_DIR_ENV}"
    )
}

fn has_server(dir: &Path) -> bool {
    dir.join("postgres").is_file() && dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// Full path of a client program (`psql`, `pgbench`): the one next to the
/// server binaries when present, so client and server versions match,
/// otherwise whatever `PATH` finds.
pub fn client_program(name: &str) -> PathBuf {
    match pg_bin_dir() {
        Ok(dir) if dir.join(name).is_file() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// Runs PostgreSQL's programs either directly or, when we are root (which
/// PostgreSQL refuses), through `runuser` as the `postgres` account.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    bin_dir: PathBuf,
    /// `Some((uid, gid))` of the service account when running as root.
    service: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    /// Working directory for every spawned program; the test's own working
    /// directory may not be readable by the `postgres` account.
    cwd: PathBuf,
}

impl Runner {
    pub(crate) fn detect(bin_dir: PathBuf, cwd: PathBuf) -> anyhow::Result<Runner> {
        let service = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name(SERVICE_USER)
                .with_context(|| format!("looking up OS user {SERVICE_USER}"))?
                .ok_or_else(|| {
                    anyhow!("running as root but there is no '{SERVICE_USER}' OS user to run PostgreSQL as")
                })?;
            Some((user.uid, user.gid))
        } else {
            None
        };
        Ok(Runner {
            bin_dir,
            service,
            cwd,
        })
    }

    /// Whether programs run as the service account rather than as us.
    pub(crate) fn is_delegating(&self) -> bool {
        self.service.is_some()
    }

    pub(crate) fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Hands a path we created over to the service account (no-op when not
    /// root), so the server can write into it.
    pub(crate) fn give_away(&self, path: &Path) -> anyhow::Result<()> {
        if let Some((uid, gid)) = self.service {
            nix::unistd::chown(path, Some(uid), Some(gid))
                .with_context(|| format!("chown {} to {SERVICE_USER}", path.display()))?;
        }
        Ok(())
    }

    /// A command for `program` (a file name in the bin dir, or an absolute
    /// path such as `/bin/sh`) run as the right user with a safe cwd.
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let program = program.as_ref();
        let full = if Path::new(program).is_absolute() {
            PathBuf::from(program)
        } else {
            self.bin_dir.join(program)
        };
        let mut cmd = if self.service.is_some() {
            let mut c = Command::new("runuser");
            c.args(["-u", SERVICE_USER, "--"]).arg(full);
            c
        } else {
            Command::new(full)
        };
        cmd.current_dir(&self.cwd).stdin(Stdio::null());
        // Untranslated messages so that log tails in errors are readable and
        // so nothing depends on the developer's locale.
        cmd.env("LC_ALL", "C").env_remove("PGDATA");
        cmd
    }

    /// Runs `cmd` to completion and fails with its output if it exits non-zero.
    pub(crate) fn run_checked(&self, mut cmd: Command, what: &str) -> anyhow::Result<Output> {
        let out = cmd.output().with_context(|| format!("spawning {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out)
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may itself
/// contain spaces and parentheses, hence the search for the last `)`).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot).
/// Together with the pid it names a process unambiguously, so the watchdog
/// is not fooled by pid reuse.
pub(crate) fn process_start_time(pid: u32) -> Option<String> {
    // Field 3 (state) is index 0 after the name, so field 22 is index 19.
    stat_fields(pid)?.get(19).cloned()
}

/// Whether `pid` names a live process. Zombies count as dead: a killed
/// postmaster whose parent is a lax init may linger as one, but it no longer
/// holds a port, memory or files.
pub fn pid_alive(pid: u32) -> bool {
    match stat_fields(pid) {
        Some(fields) => fields
            .first()
            .is_some_and(|state| state != "Z" && state != "X"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_has_a_start_time() {
        let me = std::process::id();
        assert!(pid_alive(me));
        let start = process_start_time(me).unwrap_or_default();
        assert!(
            !start.is_empty() && start.bytes().all(|b| b.is_ascii_digit()),
            "{start:?}"
        );
    }

    #[test]
    fn missing_process_is_dead() {
        // pid_max is at most 2^22 on Linux, so this pid cannot exist.
        assert!(!pid_alive(u32::MAX - 1));
        assert_eq!(process_start_time(u32::MAX - 1), None);
    }

    #[test]
    fn reaped_child_is_dead() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!pid_alive(pid));
    }

    #[test]
    fn client_program_falls_back_to_path_name() {
        let p = client_program("definitely-not-a-pg-tool");
        assert_eq!(p, PathBuf::from("definitely-not-a-pg-tool"));
    }
}
