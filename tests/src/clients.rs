//! Real PostgreSQL clients for integration tests: `psql`, `pgbench`,
//! tokio-postgres, Python drivers, Node.js drivers and pgjdbc. Tests point them at pgwarden or straight at a
//! [`crate::pg::PgCluster`] and compare.

mod java;
mod node;
mod pgbench;
mod process;
mod psql;
mod python;
mod script;

pub use java::{Java, PGJDBC_JAR, classes_dir as java_classes_dir};
pub use node::{Node, modules_dir as node_modules_dir};
pub use pgbench::{
    BenchLength, BenchRun, Pgbench, PgbenchResult, QueryMode, parse_output as parse_pgbench_output,
};
pub use process::ClientOutput;
pub use psql::Psql;
pub use python::{Python, venv_dir as python_venv_dir};
pub use script::{Lang, ScriptRun, result_lines, result_lines as python_result_lines};

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, Config, NoTls};

/// libpq variables that could make a run depend on the developer's shell,
/// e.g. a `~/.pgpass` silently supplying a password a test meant to omit.
const SCRUBBED_ENV: &[&str] = &[
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGGSSENCMODE",
    "PGTARGETSESSIONATTRS",
    "PGCHANNELBINDING",
    "PGHOSTADDR",
    "PGDATABASE",
    "PGUSER",
    "PGHOST",
    "PGPORT",
];

/// Sets up a libpq client's environment: scrubbed, C locale (so pgbench
/// prints `.` decimals and messages are untranslated), password via
/// `PGPASSWORD`, then the caller's overrides.
fn apply_client_env(
    cmd: &mut Command,
    password: Option<&str>,
    connect_timeout_secs: u32,
    extra: &[(String, String)],
) {
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    // A path that does not exist: libpq then silently skips the password file.
    cmd.env(
        "PGPASSFILE",
        std::env::temp_dir().join("pgwarden-harness-no-pgpass"),
    );
    cmd.env("LC_ALL", "C");
    cmd.env("PGCONNECT_TIMEOUT", connect_timeout_secs.to_string());
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
}

/// For `Debug` impls: whether a password is set, never its value.
fn redacted(password: &Option<String>) -> &'static str {
    if password.is_some() {
        "<set>"
    } else {
        "<none>"
    }
}

/// Upper bound for connecting, including authentication, so a pooler that
/// never answers fails the test instead of hanging it.
const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// Connects with tokio-postgres (no TLS) and spawns the connection task on
/// the current runtime. `host` may be a Unix socket directory (leading `/`).
pub async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    dbname: &str,
) -> anyhow::Result<Client> {
    let mut config = Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(10));
    if let Some(pw) = password {
        config.password(pw);
    }
    connect_config(&config)
        .await
        .with_context(|| format!("connecting to {host}:{port} as {user:?}, database {dbname:?}"))
}

/// [`connect`] for a prepared [`Config`] (custom options, application name…).
pub async fn connect_config(config: &Config) -> anyhow::Result<Client> {
    let (client, conn) = tokio::time::timeout(CONNECT_LIMIT, config.connect(NoTls))
        .await
        .context("connection attempt timed out")??;
    tokio::spawn(async move {
        // Errors reach the test through the client's next call.
        let _ = conn.await;
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_is_scrubbed_then_overridden() {
        let mut cmd = Command::new("true");
        apply_client_env(
            &mut cmd,
            Some("pw"),
            7,
            &[("PGSSLMODE".into(), "disable".into())],
        );
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        assert!(envs.contains(&("PGUSER".into(), None)));
        assert!(envs.contains(&("PGPASSWORD".into(), Some("pw".into()))));
        assert!(envs.contains(&("PGSSLMODE".into(), Some("disable".into()))));
        assert!(envs.contains(&("PGCONNECT_TIMEOUT".into(), Some("7".into()))));
    }

    #[tokio::test]
    async fn connect_to_closed_port_fails_fast() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let err = connect("127.0.0.1", port, "u", None, "d")
            .await
            .expect_err("nothing listens");
        assert!(format!("{err:#}").contains("connecting to 127.0.0.1"));
    }
}
