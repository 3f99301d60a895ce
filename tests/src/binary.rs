//! The real `pgwarden` binary as a child process, for what only a process shows: the command line, exit
//! statuses, signals, daemonizing, switching user. Its stdout and stderr go to files in the test's
//! directory so they can be read while it runs; readiness is a successful connect, never a sleep.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::pg::pid_alive;
use crate::pooler::pgwarden_bin;

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(25);

/// Polls `cond` until it holds or `timeout` passes; the error names `what`.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether something accepts TCP connections on `addr` right now.
pub fn tcp_accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Whether a PostgreSQL server (or pooler) answers on `addr`: an SSLRequest gets its one-byte answer.
/// Stronger than [`tcp_accepts`], which the kernel satisfies as soon as the socket listens: an answer
/// means pgwarden's accept loop runs, so its setup (signal handlers, user switch) is done.
pub fn pg_answers(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    /// Length 8, then the SSLRequest code 1234.5679.
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let mut answer = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_secs(2))).is_ok()
        && s.write_all(&SSL_REQUEST).is_ok()
        && s.read_exact(&mut answer).is_ok()
        && matches!(&answer, b"N" | b"S")
}

/// Whether something accepts connections on the Unix socket `path` right now.
pub fn unix_accepts(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// The contents of a file, or "" if it cannot be read (yet).
pub fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The 1-based line of `path` that contains `needle` (to predict the line a diagnostic names).
pub fn line_of(path: &Path, needle: &str) -> anyhow::Result<usize> {
    read_lossy(path)
        .lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .with_context(|| format!("{needle:?} not in {}", path.display()))
}

/// What a finished short run (`--check`, `-V`, `-h`, a config error) produced.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

static NEXT_RUN: AtomicU64 = AtomicU64::new(0);

/// A `pgwarden` child process. Killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct PgwardenProcess {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

/// A `pgwarden` command with `args`, run in `dir`, with a clean environment for logging (`RUST_LOG`
/// would override `-v` and `verbose`).
fn command(dir: &Path, args: &[&OsStr]) -> anyhow::Result<(Command, PathBuf, PathBuf)> {
    let n = NEXT_RUN.fetch_add(1, Ordering::Relaxed);
    let stdout = dir.join(format!("pgwarden-{n}.stdout"));
    let stderr = dir.join(format!("pgwarden-{n}.stderr"));
    let mut cmd = Command::new(pgwarden_bin()?);
    cmd.args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout)?)
        .stderr(std::fs::File::create(&stderr)?);
    Ok((cmd, stdout, stderr))
}

impl PgwardenProcess {
    /// Starts `pgwarden <args>` in `dir` (its stdout and stderr files go there too).
    pub fn spawn<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> anyhow::Result<Self> {
        let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
        let (mut cmd, stdout, stderr) = command(dir, &args)?;
        let child = cmd.spawn().context("spawning pgwarden")?;
        Ok(Self {
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    /// Runs `pgwarden <args>` in `dir` to the end (at most `timeout`).
    pub async fn run<S: AsRef<OsStr>>(
        dir: &Path,
        args: &[S],
        timeout: Duration,
    ) -> anyhow::Result<Finished> {
        let mut p = Self::spawn(dir, args)?;
        let status = p.wait_exit(timeout).await?;
        Ok(Finished {
            status,
            stdout: p.stdout(),
            stderr: p.stderr(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// The exit status if it has exited (reaping it).
    pub fn try_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().context("waiting for pgwarden")?;
        }
        Ok(self.status)
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        send(self.pid(), sig)
    }

    /// Waits until the process exits, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "pgwarden (pid {}) still running after {timeout:?}; stderr:\n{}",
                    self.pid(),
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `ready` holds (e.g. a listener accepts), failing at once with the process's stderr if
    /// it exits first.
    pub async fn wait_ready(
        &mut self,
        what: &str,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.try_status()? {
                bail!(
                    "pgwarden exited ({status}) before {what}; stderr:\n{}",
                    self.stderr()
                );
            }
            if ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "pgwarden not ready ({what}) after 30 s; stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the process answers on `127.0.0.1:port` (see [`pg_answers`]).
    pub async fn wait_tcp(&mut self, port: u16) -> anyhow::Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        self.wait_ready(&format!("answering on {addr}"), || pg_answers(addr))
            .await
    }
}

impl Drop for PgwardenProcess {
    fn drop(&mut self) {
        if matches!(self.try_status(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `sig` to `pid`.
pub fn send(pid: u32, sig: Signal) -> anyhow::Result<()> {
    let raw = i32::try_from(pid).context("pid out of range")?;
    kill(Pid::from_raw(raw), sig).with_context(|| format!("kill -{sig} {pid}"))
}

/// A daemonized pgwarden (`-d`), known by the pid in its pidfile. SIGKILLed on drop if still alive, so a
/// failing test does not leave it behind.
#[derive(Debug)]
pub struct Daemon {
    pub pid: u32,
}

impl Daemon {
    pub fn alive(&self) -> bool {
        pid_alive(self.pid)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.alive() {
            let _ = send(self.pid, Signal::SIGKILL);
        }
    }
}

/// A fresh directory for one test's files, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            path: crate::pooler::fresh_dir(prefix)?,
        })
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> anyhow::Result<PathBuf> {
        let path = self.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
