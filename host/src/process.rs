//! Process-level chores of the binary: daemonizing (`-d`), the pidfile, switching user (`-u` / `user`),
//! and signals mapped to PgBouncer 1.23+'s meanings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};

use crate::state::{ShutdownMode, State};

/// Errors of process setup, each naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("-d needs pidfile set in the configuration")]
    DaemonNeedsPidfile,
    #[error("-d needs logfile set in the configuration (pgwarden has no syslog)")]
    DaemonNeedsLogfile,
    #[error("could not daemonize: {0}")]
    Daemonize(nix::Error),
    #[error("pidfile {path}: {source}")]
    Pidfile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pidfile {0} names a running process: is pgwarden already running?")]
    AlreadyRunning(PathBuf),
    #[error("no such user: {0}")]
    NoSuchUser(String),
    #[error("could not switch to user {user}: {source}")]
    SwitchUser { user: String, source: nix::Error },
}

/// How many runtime threads serve connections: `worker_threads` when set; else tokio's
/// `TOKIO_WORKER_THREADS` when the environment has it (`None`: let tokio read it); else one per CPU this
/// process may run on (`cpus`, which counts affinity masks and cgroup quotas). A single thread is not the
/// better default on a small machine: on 2 CPUs shared with PostgreSQL and pgbench, each in a scheduling
/// group of its own as services are, one thread did 1.04x the TPS of two at 10 clients, 1.00x at 100,
/// 0.98x at 500 and 0.96x in a connection storm (medians of per-round ratios; BENCHMARKS.md, run 20).
pub fn worker_threads(setting: u32, env_set: bool, cpus: usize) -> Option<usize> {
    match setting {
        0 if env_set => None,
        0 => Some(cpus.max(1)),
        n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
    }
}

/// Makes glibc's malloc serve every thread from one arena, unless `MALLOC_ARENA_MAX` in the environment
/// chooses (glibc reads it itself). By default glibc gives each thread that allocates an arena of its
/// own: the two workers, the blocking threads and the parking lot's thread. What a storm of logins frees
/// in one arena is not reused by the next allocation in another, so the high-water mark that idle clients'
/// RSS inherits varied with how the storm fell on the threads: 2,000 idle clients measured 0.94–0.96 KiB
/// each in six runs with one arena, 0.97–1.16 in ten with the default (PgBouncer: 0.98), with no
/// measurable change in CPU per transaction or per connection (BENCHMARKS.md). Small allocations go
/// through glibc's per-thread cache either way.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(
    unsafe_code,
    reason = "mallopt is an FFI call; it takes glibc's own lock and has no other precondition"
)]
pub fn one_malloc_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a malloc parameter under glibc's lock; any thread may call it any time.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
}

/// Only glibc has arenas to limit.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn one_malloc_arena() {}

/// Detaches from the terminal: fork (the parent exits), new session, stdio to /dev/null. Must run before
/// any thread exists (before the tokio runtime), which is what makes `fork` sound here.
#[allow(
    unsafe_code,
    reason = "fork before any other thread exists; the child only continues single-threaded setup"
)]
pub fn daemonize() -> Result<(), ProcessError> {
    use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, fork, setsid};
    // SAFETY: called from main before the runtime or any other thread is started.
    match unsafe { fork() }.map_err(ProcessError::Daemonize)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().map_err(ProcessError::Daemonize)?;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| {
            ProcessError::Daemonize(nix::Error::from_raw(e.raw_os_error().unwrap_or(0)))
        })?;
    dup2_stdin(&devnull).map_err(ProcessError::Daemonize)?;
    dup2_stdout(&devnull).map_err(ProcessError::Daemonize)?;
    dup2_stderr(&devnull).map_err(ProcessError::Daemonize)?;
    Ok(())
}

/// Writes the pidfile, refusing to overwrite one of a live process. Removed on drop.
pub struct Pidfile(PathBuf);

impl Pidfile {
    pub fn create(path: &Path) -> Result<Self, ProcessError> {
        let err = |source| ProcessError::Pidfile {
            path: path.to_owned(),
            source,
        };
        if let Ok(old) = std::fs::read_to_string(path)
            && let Ok(pid) = old.trim().parse::<i32>()
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        {
            return Err(ProcessError::AlreadyRunning(path.to_owned()));
        }
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(err)?;
        Ok(Self(path.to_owned()))
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Switches to `user` (after binding, so privileged ports and socket dirs still work).
pub fn switch_user(user: &str) -> Result<(), ProcessError> {
    use nix::unistd::{User, initgroups, setgid, setuid};
    let u = User::from_name(user)
        .map_err(|source| ProcessError::SwitchUser {
            user: user.to_owned(),
            source,
        })?
        .ok_or_else(|| ProcessError::NoSuchUser(user.to_owned()))?;
    if nix::unistd::geteuid() == u.uid {
        return Ok(());
    }
    let switch = |source| ProcessError::SwitchUser {
        user: user.to_owned(),
        source,
    };
    let name =
        std::ffi::CString::new(user).map_err(|_| ProcessError::NoSuchUser(user.to_owned()))?;
    initgroups(&name, u.gid).map_err(switch)?;
    setgid(u.gid).map_err(switch)?;
    setuid(u.uid).map_err(switch)?;
    Ok(())
}

/// Maps signals to actions as PgBouncer 1.23+ does: HUP reload, TERM wait for clients, INT wait for
/// servers (a second TERM/INT means now), QUIT now, USR1 pause, USR2 resume.
pub fn spawn_signal_handlers(state: &Arc<State>) -> std::io::Result<()> {
    let kinds = [
        SignalKind::hangup(),
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::quit(),
        SignalKind::user_defined1(),
        SignalKind::user_defined2(),
    ];
    for kind in kinds {
        let mut stream = signal(kind)?;
        let state = Arc::clone(state);
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                on_signal(&state, kind).await;
            }
        });
    }
    Ok(())
}

async fn on_signal(state: &Arc<State>, kind: SignalKind) {
    let lifecycle = &state.lifecycle;
    // PgBouncer's log lines for each signal, which operators' tooling greps for.
    if kind == SignalKind::hangup() {
        tracing::info!("got SIGHUP, re-reading config");
        let _ = crate::reload::reload(state).await;
    } else if kind == SignalKind::terminate() || kind == SignalKind::interrupt() {
        let (name, wanted, waiting) = if kind == SignalKind::terminate() {
            (
                "SIGTERM",
                ShutdownMode::WaitForClients,
                "waiting for all clients disconnect",
            )
        } else {
            (
                "SIGINT",
                ShutdownMode::WaitForServers,
                "waiting for all servers connections to be released",
            )
        };
        if state.shutdown(wanted) == ShutdownMode::Immediate {
            tracing::info!("got {name} while shutting down, fast exit");
        } else {
            tracing::info!("got {name}, shutting down, {waiting}");
        }
    } else if kind == SignalKind::quit() {
        tracing::info!("got SIGQUIT, fast exit");
        state.shutdown(ShutdownMode::Immediate);
    } else if kind == SignalKind::user_defined1() {
        if lifecycle.is_paused() {
            tracing::info!("got SIGUSR1, but already paused/suspended");
        } else {
            tracing::info!("got SIGUSR1, pausing all activity");
            state.set_paused(true);
        }
    } else if kind == SignalKind::user_defined2() {
        if lifecycle.shutdown_mode().is_some() {
            tracing::info!("got SIGUSR2 while shutting down, ignoring");
        } else if lifecycle.is_paused() {
            tracing::info!("got SIGUSR2, continuing from PAUSE");
            state.set_paused(false);
        } else {
            tracing::info!("got SIGUSR2, but not paused/suspended");
        }
    }
}

#[cfg(test)]
mod worker_tests {
    use super::worker_threads;

    #[test]
    fn the_setting_wins_then_the_environment_then_the_cpus() {
        assert_eq!(worker_threads(3, true, 8), Some(3));
        assert_eq!(worker_threads(0, true, 8), None);
        assert_eq!(worker_threads(0, false, 8), Some(8));
        assert_eq!(worker_threads(0, false, 4), Some(4));
        assert_eq!(worker_threads(0, false, 2), Some(2));
        assert_eq!(worker_threads(0, false, 0), Some(1));
    }
}
