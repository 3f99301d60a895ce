//! Running a client program with captured output and a hard time limit.
//!
//! A pooler bug that makes a client hang must fail the test that exposed it,
//! not stall the whole `cargo test` run, so every run has a deadline after
//! which the client is killed.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// What a finished client run produced.
#[derive(Debug, Clone)]
pub struct ClientOutput {
    /// Exit status of the program.
    pub status: ExitStatus,
    /// Everything written to stdout (lossily decoded as UTF-8).
    pub stdout: String,
    /// Everything written to stderr (lossily decoded as UTF-8).
    pub stderr: String,
}

impl ClientOutput {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, `None` if killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Fails with the program's stderr unless it exited with status 0.
    pub fn ensure_success(&self, what: &str) -> anyhow::Result<&Self> {
        if !self.success() {
            bail!(
                "{what} failed ({}):\n{}{}",
                self.status,
                self.stderr,
                self.stdout
            );
        }
        Ok(self)
    }
}

/// Spawns `cmd`, feeds it `stdin` (or nothing), collects its output, and
/// kills it if it is still running after `timeout`.
pub(crate) fn run_blocking(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<ClientOutput> {
    let program = format!("{:?}", cmd.get_program());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {program}"))?;
    let writer = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(bytes)) => Some(std::thread::spawn(move || {
            // A client that exits early closes the pipe; that is its answer,
            // not an error of ours.
            let _ = pipe.write_all(&bytes);
        })),
        _ => None,
    };
    let out_reader = child.stdout.take().map(spawn_reader);
    let err_reader = child.stderr.take().map(spawn_reader);

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().context("waiting for client")? {
            break (status, false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break (child.wait().context("reaping killed client")?, true);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = join_reader(out_reader);
    let stderr = join_reader(err_reader);
    if timed_out {
        bail!("{program} did not finish within {timeout:?}; stdout:\n{stdout}\nstderr:\n{stderr}");
    }
    Ok(ClientOutput {
        status,
        stdout,
        stderr,
    })
}

fn spawn_reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(h: Option<std::thread::JoinHandle<Vec<u8>>>) -> String {
    h.and_then(|h| h.join().ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Async twin of [`run_blocking`] on the caller's tokio runtime; the child
/// is killed if the deadline passes or the future is dropped.
pub(crate) async fn run_async(
    cmd: Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<ClientOutput> {
    use tokio::io::AsyncWriteExt;

    let program = format!("{:?}", cmd.get_program());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("spawning {program}"))?;
    if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), stdin) {
        tokio::spawn(async move {
            let _ = pipe.write_all(&bytes).await;
        });
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => {
            let out = out.with_context(|| format!("waiting for {program}"))?;
            Ok(ClientOutput {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
        // Dropping the future dropped the child, which kills it.
        Err(_) => bail!("{program} did not finish within {timeout:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("/bin/sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn captures_output_status_and_stdin() {
        let out = run_blocking(
            sh("cat; echo err >&2; exit 3"),
            Some(b"hello".to_vec()),
            Duration::from_secs(10),
        )
        .expect("run");
        assert_eq!(out.stdout, "hello");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.code(), Some(3));
        assert!(out.ensure_success("sh").is_err());
    }

    #[test]
    fn kills_on_timeout() {
        let start = Instant::now();
        let err = run_blocking(
            sh("echo partial; exec sleep 30"),
            None,
            Duration::from_millis(300),
        )
        .expect_err("must time out");
        assert!(start.elapsed() < Duration::from_secs(10));
        let msg = format!("{err:#}");
        assert!(
            msg.contains("did not finish") && msg.contains("partial"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn async_run_captures_and_times_out() {
        let out = run_async(sh("cat"), Some(b"x".to_vec()), Duration::from_secs(10))
            .await
            .expect("run");
        assert!(out.success());
        assert_eq!(out.stdout, "x");
        let err = run_async(sh("exec sleep 30"), None, Duration::from_millis(200)).await;
        assert!(err.is_err());
    }
}
