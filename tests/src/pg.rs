//! Throwaway PostgreSQL clusters for integration tests.
//!
//! Each [`PgCluster`] is a fresh `initdb` in its own directory under the temp
//! dir, served on a free TCP port of 127.0.0.1 and on a Unix socket in that
//! directory. Durability is switched off (fsync, full-page writes,
//! synchronous commit) because a crash only ever loses throwaway data, and
//! that makes start-up and DDL cheap enough for tests to create their own
//! roles and databases freely. A watchdog process removes the cluster when
//! the test process dies without running destructors.

mod admin;
mod os;
mod watchdog;

pub use admin::{PasswordEncryption, quote_ident, quote_literal};
pub use os::{BIN_DIR_ENV, client_program, pg_bin_dir, pid_alive};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use os::Runner;

/// How a cluster is set up. `Default` gives what most pooler tests want.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `max_connections` of the server; generous so parallel tests sharing
    /// one cluster do not starve each other.
    pub max_connections: u32,
    /// Extra `postgresql.conf` lines (`"key = value"`), appended after the
    /// harness's own settings so they win.
    pub extra_conf: Vec<String>,
    /// Extra `pg_hba.conf` lines placed *above* the harness's rules, so they
    /// take precedence (first match wins), e.g. forcing `scram-sha-256` for
    /// one role.
    pub extra_hba: Vec<String>,
    /// How long a start may take before it counts as failed.
    pub start_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            max_connections: 300,
            extra_conf: Vec::new(),
            extra_hba: Vec::new(),
            start_timeout: Duration::from_secs(60),
        }
    }
}

impl ClusterOptions {
    /// Adds one `key = value` setting (value written verbatim: quote strings).
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.extra_conf.push(format!("{key} = {value}"));
        self
    }

    /// Adds one `pg_hba.conf` line above the defaults.
    pub fn hba_line(mut self, line: &str) -> Self {
        self.extra_hba.push(line.to_owned());
        self
    }
}

/// How to shut the server down; see `pg_ctl stop -m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Wait for clients to disconnect.
    Smart,
    /// Terminate sessions, then shut down cleanly (a pooler sees its server
    /// connections closed with an admin-shutdown error).
    Fast,
    /// Kill everything at once, crash-recovery on next start (a pooler sees
    /// its server connections drop without a goodbye).
    Immediate,
}

impl ShutdownMode {
    fn as_arg(self) -> &'static str {
        match self {
            ShutdownMode::Smart => "smart",
            ShutdownMode::Fast => "fast",
            ShutdownMode::Immediate => "immediate",
        }
    }
}

/// A running (or deliberately stopped) throwaway PostgreSQL cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    runner: Runner,
    opts: ClusterOptions,
    watchdog: Mutex<Option<Child>>,
    /// Serialises stop/start/restart so concurrent callers cannot interleave
    /// `pg_ctl` invocations on the same data directory.
    lifecycle: Mutex<()>,
}

/// The address the server listens on; IPv4 loopback only.
const HOST: &str = "127.0.0.1";
/// The bootstrap superuser created by `initdb -U`.
const SUPERUSER: &str = "postgres";
/// How many fresh ports to try when another process grabs ours first.
const PORT_ATTEMPTS: u32 = 5;

impl PgCluster {
    /// Creates, initialises and starts a new cluster; ready for connections
    /// when this returns.
    pub fn start(opts: ClusterOptions) -> anyhow::Result<PgCluster> {
        let bin_dir = pg_bin_dir()?;
        let dir = make_unique_dir()?;
        let runner = match Runner::detect(bin_dir, dir.clone()) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // From here on the value exists, so an early return drops it and
        // `Drop` cleans up whatever was created.
        let mut cluster = PgCluster {
            data_dir: dir.join("data"),
            log_path: dir.join("postgres.log"),
            dir,
            port: 0,
            runner,
            opts,
            watchdog: Mutex::new(None),
            lifecycle: Mutex::new(()),
        };
        cluster.runner.give_away(&cluster.dir)?;
        let child = watchdog::spawn(&cluster.runner, &cluster.dir, &cluster.data_dir)?;
        *lock(&cluster.watchdog) = Some(child);
        cluster.initdb()?;
        cluster.write_config()?;
        cluster.first_start()?;
        Ok(cluster)
    }

    /// One cluster per test process, started on first use. Tests sharing it
    /// isolate themselves by creating their own roles and databases (see
    /// [`PgCluster::unique_name`]). It is never dropped; the watchdog removes
    /// it when the process exits.
    ///
    /// # Panics
    /// When the cluster cannot be started: no test that needs it can run, and
    /// every caller gets the same start-up error. Use
    /// [`PgCluster::try_shared`] to handle that case.
    pub fn shared() -> &'static PgCluster {
        match Self::try_shared() {
            Ok(c) => c,
            Err(e) => panic!("shared PostgreSQL cluster unavailable: {e:#}"),
        }
    }

    /// Like [`PgCluster::shared`], returning the start-up error instead.
    pub fn try_shared() -> anyhow::Result<&'static PgCluster> {
        static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                PgCluster::start(ClusterOptions::default()).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("{e}"))
    }

    /// TCP port on [`PgCluster::host`]; stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host the server listens on for TCP (`"127.0.0.1"`).
    pub fn host(&self) -> &str {
        HOST
    }

    /// Directory holding the Unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Top directory of the cluster; everything it owns lives below it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory of the server binaries in use.
    pub fn bin_dir(&self) -> &Path {
        self.runner.bin_dir()
    }

    /// Name of the bootstrap superuser (`"postgres"`), trusted over the
    /// socket and over TCP from 127.0.0.1.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The server log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Pid of the running postmaster, from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> anyhow::Result<u32> {
        let path = self.data_dir.join("postmaster.pid");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is the server running?)", path.display()))?;
        let first = text.lines().next().unwrap_or("").trim();
        first
            .parse()
            .with_context(|| format!("bad pid {first:?} in {}", path.display()))
    }

    /// Fast shutdown; the data stays for [`PgCluster::start_again`].
    pub fn stop(&self) -> anyhow::Result<()> {
        self.stop_with(ShutdownMode::Fast)
    }

    /// Shuts the server down with the given mode and waits until it is gone.
    pub fn stop_with(&self, mode: ShutdownMode) -> anyhow::Result<()> {
        let _guard = lock(&self.lifecycle);
        let mut cmd = self.runner.command("pg_ctl");
        cmd.arg("stop").arg("-D").arg(&self.data_dir);
        cmd.args(["-m", mode.as_arg(), "-w", "-t", "60", "-s"]);
        self.runner.run_checked(cmd, "pg_ctl stop")?;
        Ok(())
    }

    /// Starts a stopped cluster again on the same port with the same data.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let _guard = lock(&self.lifecycle);
        self.pg_ctl_start()?;
        self.wait_ready()
    }

    /// Fast restart (sessions terminated), waiting until it accepts
    /// connections again.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.restart_with(ShutdownMode::Fast)
    }

    /// Restart with the given shutdown mode.
    pub fn restart_with(&self, mode: ShutdownMode) -> anyhow::Result<()> {
        let _guard = lock(&self.lifecycle);
        let mut cmd = self.runner.command("pg_ctl");
        cmd.arg("restart")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path);
        cmd.args(["-m", mode.as_arg(), "-w", "-s"]);
        cmd.arg("-t")
            .arg(self.opts.start_timeout.as_secs().max(1).to_string());
        self.runner
            .run_checked(cmd, "pg_ctl restart")
            .map_err(|e| anyhow!("{e:#}\nserver log:\n{}", self.log_tail(20)))?;
        self.wait_ready()
    }

    /// A name no other call in this process returns: lowercase, a valid
    /// unquoted identifier, at most 63 bytes. Tests use it for their own
    /// roles and databases on the shared cluster.
    pub fn unique_name(prefix: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut clean: String = prefix
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        if !clean.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
            clean.insert(0, 't');
        }
        format!("{clean}_{n}")
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let mut cmd = self.runner.command("initdb");
        cmd.arg("-D").arg(&self.data_dir);
        cmd.args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"]);
        cmd.args(["--no-sync", "--no-instructions"]);
        self.runner.run_checked(cmd, "initdb").map_err(|e| {
            if self.runner.is_delegating() {
                anyhow!(
                    "{e:#}\n(running as root: every directory above {} must be \
                     searchable by the postgres OS user; check TMPDIR)",
                    self.dir.display()
                )
            } else {
                e
            }
        })?;
        Ok(())
    }

    /// Appends the harness settings to `postgresql.conf` and replaces
    /// `pg_hba.conf`. Both files already belong to the server's OS user, and
    /// rewriting in place keeps that ownership.
    fn write_config(&self) -> anyhow::Result<()> {
        use std::io::Write;
        let conf_path = self.data_dir.join("postgresql.conf");
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .with_context(|| format!("opening {}", conf_path.display()))?;
        let text = server_conf(&self.dir, &self.opts);
        conf.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", conf_path.display()))?;
        let hba_path = self.data_dir.join("pg_hba.conf");
        std::fs::write(&hba_path, hba_conf(&self.opts))
            .with_context(|| format!("writing {}", hba_path.display()))?;
        Ok(())
    }

    /// First start: picks a free port, retrying with another one if some
    /// other process bound it between our probe and the server's bind.
    fn first_start(&mut self) -> anyhow::Result<()> {
        let mut last_err = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            match self.pg_ctl_start() {
                Ok(()) => return self.wait_ready(),
                Err(e) if self.log_tail(30).contains("could not bind") => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("no port attempt made")))
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let mut cmd = self.runner.command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_path);
        cmd.args(["-w", "-s"]);
        cmd.arg("-t")
            .arg(self.opts.start_timeout.as_secs().max(1).to_string());
        // The port goes on the command line rather than into postgresql.conf
        // because it may change between attempts; pg_ctl records it in
        // postmaster.opts, so `pg_ctl restart` keeps it.
        cmd.arg("-o").arg(format!("-p {}", self.port));
        self.runner
            .run_checked(cmd, "pg_ctl start")
            .map_err(|e| anyhow!("{e:#}\nserver log:\n{}", self.log_tail(20)))?;
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let pid = self.postmaster_pid().ok();
            let mut cmd = self.runner.command("pg_ctl");
            cmd.arg("stop").arg("-D").arg(&self.data_dir);
            cmd.args(["-m", "immediate", "-w", "-t", "10", "-s"]);
            let _ = cmd.output();
            if let Some(pid) = pid.filter(|p| pid_alive(*p))
                && let Ok(raw) = i32::try_from(pid)
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The watchdog sees the directory gone and exits by itself; killing
        // our direct child (the shell, or `runuser` above it) just saves the
        // wait and reaps it.
        let child = match self.watchdog.get_mut() {
            Ok(slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Locks a mutex, ignoring poisoning: the guarded data (a child handle or
/// nothing) stays valid if some other test thread panicked meanwhile.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Creates `<temp>/pgwarden-pg-<pid>-<n>`; unique within and across live
/// processes, and short enough for a Unix socket path.
fn make_unique_dir() -> anyhow::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("pgwarden-pg-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            // Left over by an earlier process with our pid.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    bail!(
        "could not create a unique cluster directory in {}",
        base.display()
    )
}

/// A port that was free a moment ago. There is an unavoidable race until the
/// server binds it; `first_start` retries when it loses.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((HOST, 0)).context("probing for a free port")?;
    Ok(listener.local_addr().context("reading probed port")?.port())
}

/// The settings appended to `postgresql.conf`.
fn server_conf(socket_dir: &Path, opts: &ClusterOptions) -> String {
    let mut text = String::from("\n# --- pgwarden test harness ---\n");
    let socket = quote_literal(&socket_dir.to_string_lossy());
    let lines = [
        format!("listen_addresses = '{HOST}'"),
        format!("unix_socket_directories = {socket}"),
        format!("max_connections = {}", opts.max_connections),
        "fsync = off".to_owned(),
        "full_page_writes = off".to_owned(),
        "synchronous_commit = off".to_owned(),
        "shared_buffers = 16MB".to_owned(),
        "huge_pages = off".to_owned(),
        "logging_collector = off".to_owned(),
        "log_line_prefix = '%m [%p] %q%u@%d '".to_owned(),
        "password_encryption = 'scram-sha-256'".to_owned(),
    ];
    for line in lines.iter().chain(opts.extra_conf.iter()) {
        text.push_str(line);
        text.push('\n');
    }
    text
}

/// `pg_hba.conf`: caller lines first, then trust for the superuser and the
/// socket, and `md5` for everyone else over TCP. `md5` is what the pooler
/// tests need: the server then asks for MD5 when the role's stored secret is
/// an MD5 hash and for SCRAM when it is a SCRAM verifier.
fn hba_conf(opts: &ClusterOptions) -> String {
    let mut text = String::from("# written by the pgwarden test harness\n");
    for line in &opts.extra_hba {
        text.push_str(line);
        text.push('\n');
    }
    for line in [
        "local all all trust",
        "host all postgres 127.0.0.1/32 trust",
        "host all postgres ::1/128 trust",
        "host all all 127.0.0.1/32 md5",
        "host all all ::1/128 md5",
    ] {
        text.push_str(line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_distinct_valid_identifiers() {
        let a = PgCluster::unique_name("Role-A");
        let b = PgCluster::unique_name("Role-A");
        assert_ne!(a, b);
        for name in [
            a,
            b,
            PgCluster::unique_name("9lives"),
            PgCluster::unique_name(&"x".repeat(100)),
        ] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn hba_puts_extra_lines_first() {
        let opts = ClusterOptions::default().hba_line("host all alice 127.0.0.1/32 scram-sha-256");
        let hba = hba_conf(&opts);
        let extra = hba.find("alice").unwrap_or(usize::MAX);
        let md5 = hba.find("127.0.0.1/32 md5").unwrap_or(0);
        assert!(extra < md5, "{hba}");
        assert!(hba.contains("local all all trust"));
    }

    #[test]
    fn conf_has_required_settings_and_extras_last() {
        let opts = ClusterOptions {
            max_connections: 42,
            ..Default::default()
        }
        .setting("work_mem", "'8MB'");
        let conf = server_conf(Path::new("/tmp/it's"), &opts);
        for needle in [
            "fsync = off",
            "full_page_writes = off",
            "synchronous_commit = off",
            "max_connections = 42",
        ] {
            assert!(conf.contains(needle), "{needle} missing in {conf}");
        }
        assert!(
            conf.contains("unix_socket_directories = '/tmp/it''s'"),
            "{conf}"
        );
        assert!(conf.trim_end().ends_with("work_mem = '8MB'"), "{conf}");
    }

    #[test]
    fn shutdown_modes_map_to_pg_ctl_names() {
        assert_eq!(ShutdownMode::Smart.as_arg(), "smart");
        assert_eq!(ShutdownMode::Fast.as_arg(), "fast");
        assert_eq!(ShutdownMode::Immediate.as_arg(), "immediate");
    }
}
