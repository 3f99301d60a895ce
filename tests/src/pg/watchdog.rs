//! The watchdog: a tiny `sh` loop that outlives a killed test process and
//! tears its cluster down.
//!
//! Rust destructors do not run when a test binary is killed (`kill -9`, a
//! CI timeout, a panic in a static's initialiser), and the shared cluster is
//! a `static` that is never dropped at all. Without a watchdog every such
//! run would leave a postmaster holding a port and shared memory, plus a
//! data directory in the temp dir. The watchdog runs as the same OS user as
//! the server (so it may signal it and delete its files), polls
//! `/proc/<test pid>` — which, unlike `kill -0`, works across users — and
//! checks the process start time so a recycled pid does not keep it alive.

use std::path::Path;
use std::process::{Child, Stdio};

use anyhow::{Context, anyhow};

use super::os::{Runner, process_start_time};

/// Positional parameters: $1 test pid, $2 its start time, $3 cluster dir,
/// $4 data dir.
///
/// The loop ends quietly when the cluster dir disappears (the `Drop` of
/// `PgCluster` removed it). When the test process is gone it sends SIGQUIT
/// (immediate shutdown) to the postmaster named in `postmaster.pid`, gives it
/// five seconds, SIGKILLs it if needed, and removes the directory. Only
/// shell builtins run in the loop apart from `sleep`.
const SCRIPT: &str = r#"
tp=$1; st=$2; dir=$3; data=$4
alive() {
    want=$2
    read -r line 2>/dev/null < "/proc/$1/stat" || return 1
    rest=${line##*) }
    set -- $rest
    case "$1" in Z|X) return 1 ;; esac
    [ -n "$want" ] || return 0
    shift 19
    [ "$1" = "$st" ]
}
while [ -d "$dir" ] && alive "$tp" check; do
    sleep 0.2
done
[ -d "$dir" ] || exit 0
pm=
if [ -r "$data/postmaster.pid" ]; then
    read -r pm 2>/dev/null < "$data/postmaster.pid"
fi
case "$pm" in
    ''|*[!0-9]*) ;;
    *)
        kill -QUIT "$pm" 2>/dev/null
        i=0
        while alive "$pm" && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
        kill -KILL "$pm" 2>/dev/null
        ;;
esac
rm -rf "$dir"
"#;

/// Starts the watchdog for a cluster living in `dir` (data in `data_dir`)
/// and guarding the current process.
pub(crate) fn spawn(runner: &Runner, dir: &Path, data_dir: &Path) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;

    let me = std::process::id();
    let start = process_start_time(me)
        .ok_or_else(|| anyhow!("cannot read /proc/{me}/stat; the watchdog needs /proc"))?;
    let mut cmd = runner.command("/bin/sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("pgwarden-watchdog")
        .arg(me.to_string())
        .arg(start)
        .arg(dir)
        .arg(data_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Own process group: a Ctrl-C aimed at the test run must not kill the
        // watchdog before it has cleaned up.
        .process_group(0);
    cmd.spawn().context("spawning the cluster watchdog")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The script's liveness check must agree with the Rust one for a live
    /// process and must reject a wrong start time.
    #[test]
    fn script_alive_function_checks_start_time() {
        let me = std::process::id();
        let start = process_start_time(me).expect("own start time");
        let check = |st: &str| {
            let probe = format!(
                "{}\nalive {me} check",
                SCRIPT.split("while [ -d").next().unwrap_or("")
            );
            std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(probe)
                .arg("probe")
                .arg(me.to_string())
                .arg(st)
                .status()
                .expect("run sh")
                .success()
        };
        assert!(check(&start));
        assert!(!check("1"));
    }

    /// With the guarded process gone the watchdog removes the directory
    /// even when no server was ever started.
    #[test]
    fn removes_dir_when_guarded_process_is_gone() {
        let dir = std::env::temp_dir().join(format!("pgwarden-wd-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        // Guard a short-lived child instead of ourselves.
        let mut victim = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .expect("spawn sleep");
        let vpid = victim.id();
        let vstart = process_start_time(vpid).expect("victim start time");
        let mut wd = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("wd")
            .arg(vpid.to_string())
            .arg(vstart)
            .arg(&dir)
            .arg(dir.join("data"))
            .spawn()
            .expect("spawn watchdog");
        victim.wait().expect("wait victim");
        let deadline = Instant::now() + Duration::from_secs(5);
        while dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!dir.exists(), "watchdog left {}", dir.display());
        assert!(wd.wait().expect("wait watchdog").success());
    }
}
