//! pgwarden started in-process for a test: its config files in a fresh directory, listening on a free
//! port of 127.0.0.1 and on a Unix socket in that directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use pgwarden::config;
use pgwarden::reload::ReloadError;
use pgwarden::state::ShutdownMode;
use pgwarden::{Listeners, State};
use tokio::task::JoinHandle;

use crate::clients::{Java, Node, Pgbench, Psql, Python};
use crate::pg::PgCluster;

/// A running in-process pooler. Shut down (immediately) on drop.
pub struct Pooler {
    pub state: Arc<State>,
    pub port: u16,
    pub dir: PathBuf,
    task: Option<JoinHandle<()>>,
    /// Cleared on drop: the test is over (see [`watch_for_a_hang`]).
    running: Arc<AtomicBool>,
}

/// Longer than any test takes with its pooler (none passes 60 s, the whole suite takes ~2 minutes).
const HANG_AFTER: Duration = Duration::from_secs(300);

/// A test still holding its pooler after [`HANG_AFTER`] is hung: what the pooler's pools, servers and clients
/// are doing is printed, then the test process aborts. Without this a hang (a lost wake-up, a deadlock) holds
/// CI until its own limit and says nothing about where it stopped.
fn watch_for_a_hang(state: &Arc<State>, running: &Arc<AtomicBool>) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let state = Arc::downgrade(state);
    let running = Arc::clone(running);
    let watch = move || {
        let started = std::time::Instant::now();
        while started.elapsed() < HANG_AFTER {
            std::thread::sleep(Duration::from_secs(1));
            if !running.load(Ordering::Acquire) {
                return;
            }
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        // Straight to stderr: the test harness captures `eprintln!`, and the abort would lose what it held.
        let mut dump = format!(
            "\n{test}: its pooler has run for {} s, the test is taken as hung\n",
            HANG_AFTER.as_secs()
        );
        for pool in state.pools.all() {
            dump += &format!(
                "pool {}/{}: {} servers in use, {} clients waiting\n",
                pool.key.database,
                pool.key.user,
                pool.in_use(),
                pool.waiting()
            );
            pool.live_servers
                .each(|s| dump += &format!("  server {:?}\n", s.state()));
            pool.live_clients.each(|c| {
                dump += &format!(
                    "  client {} {:?}, quiet for {:?}, asked to park {}, killed {:?}\n",
                    c.id,
                    c.state(),
                    c.quiet_for(),
                    c.park_requested(),
                    c.killed()
                );
            });
        }
        if let Some(lot) = state.parking.as_ref() {
            dump += &format!("parked clients: {}\n", lot.len());
        }
        use std::io::Write;
        let _ = std::io::stderr().write_all(dump.as_bytes());
        std::process::abort();
    };
    // Without a thread to spare the test runs unwatched, as it did before.
    let _ = std::thread::Builder::new()
        .name("pooler-watchdog".into())
        .spawn(watch);
}

/// A test's own database on the shared cluster, with its own login role.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub name: String,
    pub user: String,
    pub password: String,
}

impl TestDb {
    /// Creates a role (with an md5 or SCRAM secret) and a database it owns, both uniquely named.
    pub fn create(
        cluster: &PgCluster,
        prefix: &str,
        encryption: crate::pg::PasswordEncryption,
    ) -> anyhow::Result<Self> {
        let name = PgCluster::unique_name(prefix);
        let user = format!("{name}_u");
        let password = format!("pw_{name}");
        cluster.create_role(&user, &password, encryption)?;
        cluster.create_database(&name, &user)?;
        Ok(Self {
            name,
            user,
            password,
        })
    }

    /// A userlist.txt line with the plain-text password.
    pub fn userlist_line(&self) -> String {
        format!("\"{}\" \"{}\"\n", self.user, self.password)
    }
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A fresh directory for a pooler's files. The first call also removes what earlier test processes left
/// behind (a pooler that failed to start, the process-wide plugin cache, which no destructor removes).
pub fn fresh_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(sweep_stale_dirs);
    let dir = std::env::temp_dir().join(format!(
        "pgwarden-test-{prefix}-{}-{}",
        std::process::id(),
        NEXT_DIR.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes `pgwarden-test-<prefix>-<pid>-<n>` directories whose process is gone.
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("pgwarden-test-")) else {
            continue;
        };
        // The pid is the second field from the end (prefixes may hold '-').
        let mut fields = rest.rsplitn(3, '-');
        let (Some(_n), Some(pid)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Writes `pgbouncer.ini` (the given `[databases]` lines and `[pgbouncer]` settings, plus the listener
/// settings and the auth_file of this directory) and `userlist.txt`. Returns the ini path.
pub fn write_config(
    dir: &Path,
    port: u16,
    databases: &str,
    settings: &str,
    userlist: &str,
) -> anyhow::Result<PathBuf> {
    write_config_with_pgwarden(dir, port, databases, settings, "", userlist)
}

/// [`write_config`] plus pgwarden's own `[pgwarden]` section (plugins: `plugin.NAME.KEY = value`,
/// `plugin_cache_dir = ...`), left out when `pgwarden` is empty.
pub fn write_config_with_pgwarden(
    dir: &Path,
    port: u16,
    databases: &str,
    settings: &str,
    pgwarden: &str,
    userlist: &str,
) -> anyhow::Result<PathBuf> {
    let ini = dir.join("pgbouncer.ini");
    let auth = dir.join("userlist.txt");
    std::fs::write(&auth, userlist)?;
    let mut text = format!(
        "[databases]\n{databases}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir = {}\n\
         auth_file = {}\n{settings}\n",
        dir.display(),
        auth.display()
    );
    if !pgwarden.is_empty() {
        text.push_str(&format!("\n[pgwarden]\n{pgwarden}\n"));
    }
    std::fs::write(&ini, text)?;
    Ok(ini)
}

/// pgwarden's own `[pgwarden]` section holding `plugins` (`plugin.NAME.KEY = value` lines), to append after
/// the `[pgbouncer]` settings of [`write_config`] (which writes them last). The on-disk compile cache is a
/// directory this test process created empty ([`plugin_cache_dir`]), so a test never depends on what an
/// earlier run left there, yet each component is compiled once per process rather than once per pooler
/// (seconds of CPU each in a debug build); a later `plugin_cache_dir` line in `plugins` overrides it.
pub fn pgwarden_section(plugins: &str) -> String {
    let cache = plugin_cache_dir().map_or_else(String::new, |d| d.display().to_string());
    format!("\n[pgwarden]\nplugin_cache_dir = {cache}\n{plugins}\n")
}

/// The plugin compile cache of this test process: created empty on first use; `None` (no cache) if it
/// cannot be created.
pub fn plugin_cache_dir() -> Option<&'static Path> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| fresh_dir("plugin-cache").ok())
        .as_deref()
}

impl Pooler {
    /// Starts a pooler from `[databases]` lines, extra `[pgbouncer]` settings and a userlist.
    pub async fn start(databases: &str, settings: &str, userlist: &str) -> anyhow::Result<Self> {
        let dir = fresh_dir("pooler")?;
        let port = free_port()?;
        let ini = write_config(&dir, port, databases, settings, userlist)?;
        Self::start_file(&ini, dir, port).await
    }

    /// [`Pooler::start`] with plugins: `plugins` are the lines of a `[pgwarden]` section (see
    /// [`pgwarden_section`], which adds this process's compile cache).
    pub async fn start_with_plugins(
        databases: &str,
        settings: &str,
        userlist: &str,
        plugins: &str,
    ) -> anyhow::Result<Self> {
        let settings = format!("{settings}\n{}", pgwarden_section(plugins));
        Self::start(databases, &settings, userlist).await
    }

    /// [`Pooler::start`] with a `[pgwarden]` section of exactly these lines (no compile cache unless they
    /// set one). Plugins compile while the pooler starts, which blocks for as long as that takes.
    pub async fn start_with_pgwarden(
        databases: &str,
        settings: &str,
        pgwarden: &str,
        userlist: &str,
    ) -> anyhow::Result<Self> {
        let dir = fresh_dir("pooler")?;
        let port = free_port()?;
        let ini = write_config_with_pgwarden(&dir, port, databases, settings, pgwarden, userlist)?;
        Self::start_file(&ini, dir, port).await
    }

    /// Starts a pooler from a config file already written (ini or TOML) that listens on `port`.
    pub async fn start_file(path: &Path, dir: PathBuf, port: u16) -> anyhow::Result<Self> {
        let loaded = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let listeners = Listeners::bind(&loaded.config.settings)
            .with_context(|| format!("binding port {port}"))?;
        let state = State::new(loaded.config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let task = tokio::spawn(pgwarden::run(listeners, Arc::clone(&state)));
        let running = Arc::new(AtomicBool::new(true));
        watch_for_a_hang(&state, &running);
        Ok(Self {
            state,
            port,
            dir,
            task: Some(task),
            running,
        })
    }

    pub fn ini_path(&self) -> PathBuf {
        self.dir.join("pgbouncer.ini")
    }

    pub fn userlist_path(&self) -> PathBuf {
        self.dir.join("userlist.txt")
    }

    /// SIGHUP's work, in-process.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        pgwarden::reload::reload(&self.state).await
    }

    /// A tokio-postgres client through the pooler over TCP.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> anyhow::Result<tokio_postgres::Client> {
        crate::clients::connect("127.0.0.1", self.port, user, Some(password), db).await
    }

    pub async fn connect_as(&self, t: &TestDb) -> anyhow::Result<tokio_postgres::Client> {
        self.connect(&t.user, &t.password, &t.name).await
    }

    /// psql through the pooler over TCP.
    pub fn psql(&self, t: &TestDb) -> Psql {
        Psql::new("127.0.0.1", self.port, t.user.clone(), t.name.clone())
            .password(t.password.clone())
    }

    /// pgbench through the pooler over TCP.
    pub fn pgbench(&self, t: &TestDb) -> Pgbench {
        Pgbench::new("127.0.0.1", self.port, t.user.clone(), t.name.clone())
            .password(t.password.clone())
    }

    /// A script of `tests/clients/python/` pointed at the pooler over TCP as `t`'s user and database.
    pub fn python(&self, script: &str, t: &TestDb) -> anyhow::Result<Python> {
        Ok(Python::script(script)?.target("127.0.0.1", self.port, &t.user, &t.password, &t.name))
    }

    /// A script of `tests/clients/node/` pointed at the pooler over TCP as `t`'s user and database.
    pub fn node(&self, script: &str, t: &TestDb) -> anyhow::Result<Node> {
        Ok(Node::script(script)?.target("127.0.0.1", self.port, &t.user, &t.password, &t.name))
    }

    /// A main class of `tests/clients/java/` (named by its `.java` file) pointed at the pooler over TCP as
    /// `t`'s user and database.
    pub fn java(&self, source: &str, t: &TestDb) -> anyhow::Result<Java> {
        Ok(Java::script(source)?.target("127.0.0.1", self.port, &t.user, &t.password, &t.name))
    }

    /// Shuts down as `mode` and waits for `run` to return.
    pub async fn shutdown(mut self, mode: ShutdownMode) -> anyhow::Result<()> {
        self.state.shutdown(mode);
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(res) => res?,
                Err(_) => bail!("pooler did not finish shutting down within 30 s"),
            }
        }
        Ok(())
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Release);
        self.state.shutdown(ShutdownMode::Immediate);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `pgwarden` binary of this build, built on first use (tests that need a real process: signals,
/// exit codes, `--check`, `-d`).
pub fn pgwarden_bin() -> anyhow::Result<PathBuf> {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| build_bin().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build_bin() -> anyhow::Result<PathBuf> {
    // target/<profile>/deps/it-<hash> → target/<profile>/pgwarden
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no profile dir")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "pgwarden", "--bin", "pgwarden"]);
    if release {
        cmd.arg("--release");
    }
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let status = cmd
        .status()
        .context("running cargo build for the pgwarden binary")?;
    if !status.success() {
        bail!("cargo build -p pgwarden failed: {status}");
    }
    let bin = profile_dir.join("pgwarden");
    if !bin.exists() {
        bail!("{} missing after cargo build", bin.display());
    }
    Ok(bin)
}
