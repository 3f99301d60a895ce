//! Superuser helpers on a [`PgCluster`]: SQL over the Unix socket with
//! tokio-postgres, plus readiness polling over TCP.
//!
//! The blocking helpers run their client on a private current-thread runtime
//! in a scoped thread. That makes them callable both from plain `#[test]`s
//! and from inside `#[tokio::test]` bodies, where a nested `block_on` would
//! panic.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

use super::PgCluster;

/// How the server should hash a role's password when storing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordEncryption {
    /// Stored as `md5<hex>`; the server then asks clients for MD5 under the
    /// harness's `md5` hba rule.
    Md5,
    /// Stored as a `SCRAM-SHA-256$...` verifier; the server asks for SCRAM.
    Scram,
}

impl PasswordEncryption {
    /// The `password_encryption` setting value.
    pub fn setting(self) -> &'static str {
        match self {
            PasswordEncryption::Md5 => "md5",
            PasswordEncryption::Scram => "scram-sha-256",
        }
    }
}

/// Quotes an SQL identifier (`"a""b"`), so any role or database name is safe.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal (`'it''s'`); relies on
/// `standard_conforming_strings`, which is on by default.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Runs `make()`'s future to completion on a fresh current-thread runtime in
/// a scoped thread, so it works whether or not the caller is itself inside a
/// runtime.
fn on_private_runtime<T, F, Fut>(make: F) -> anyhow::Result<T>
where
    T: Send,
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = anyhow::Result<T>>,
{
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a private tokio runtime")?;
            rt.block_on(make())
        });
        handle
            .join()
            .map_err(|_| anyhow!("admin helper thread panicked"))?
    })
}

/// Connects with `config` and drives the connection on the current runtime.
async fn connect_config(config: &Config) -> anyhow::Result<Client> {
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        // Errors surface on the client's next call; nothing to do here.
        let _ = conn.await;
    });
    Ok(client)
}

async fn exec_on(client: &Client, db: &str, sql: &str) -> anyhow::Result<()> {
    client
        .batch_execute(sql)
        .await
        .with_context(|| format!("executing {sql:?} in {db:?}"))
}

async fn scalar_on(client: &Client, db: &str, sql: &str) -> anyhow::Result<String> {
    let msgs = client
        .simple_query(sql)
        .await
        .with_context(|| format!("querying {sql:?} in {db:?}"))?;
    for msg in msgs {
        if let SimpleQueryMessage::Row(row) = msg {
            return match row.try_get(0)? {
                Some(v) => Ok(v.to_owned()),
                None => bail!("{sql:?} returned NULL"),
            };
        }
    }
    bail!("{sql:?} returned no rows")
}

async fn pids_on(client: &Client, db: &str) -> anyhow::Result<Vec<i32>> {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = $1 AND backend_type = 'client backend' \
               AND pid <> pg_backend_pid() ORDER BY pid",
            &[&db],
        )
        .await?;
    rows.iter()
        .map(|r| r.try_get::<_, i32>(0).map_err(anyhow::Error::from))
        .collect()
}

fn count(pids: &[i32]) -> i64 {
    i64::try_from(pids.len()).unwrap_or(i64::MAX)
}

impl PgCluster {
    /// Connection settings for the superuser over the Unix socket.
    pub fn admin_config(&self, db: &str) -> Config {
        let mut config = Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.port())
            .user(self.superuser())
            .dbname(db)
            .application_name("pgwarden-harness")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// An async superuser client over the Unix socket; its connection task is
    /// spawned on the caller's runtime.
    pub async fn admin_client(&self, db: &str) -> anyhow::Result<Client> {
        connect_config(&self.admin_config(db))
            .await
            .with_context(|| format!("superuser connection to database {db:?}"))
    }

    /// Runs `f` with a fresh superuser client on a private runtime.
    fn with_admin<T, F, Fut>(&self, db: &str, f: F) -> anyhow::Result<T>
    where
        T: Send,
        F: FnOnce(Client) -> Fut + Send,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let config = self.admin_config(db);
        on_private_runtime(move || async move {
            let client = connect_config(&config)
                .await
                .with_context(|| format!("superuser connection to database {db:?}"))?;
            f(client).await
        })
        .map_err(|e| self.with_crash_context(e))
    }

    /// Adds the server log's tail to `e` when the server itself crashed or
    /// refused to work (PANIC, a terminated backend, a full disk), which a
    /// client sees only as "connection closed".
    fn with_crash_context(&self, e: anyhow::Error) -> anyhow::Error {
        let tail = self.log_tail(30);
        let crashed = [
            "PANIC:",
            "was terminated by signal",
            "No space left on device",
        ]
        .iter()
        .any(|needle| tail.contains(needle));
        if crashed {
            e.context(format!("the server log says:\n{tail}"))
        } else {
            e
        }
    }

    /// Executes one or more `;`-separated statements (simple query protocol).
    pub fn exec(&self, db: &str, sql: &str) -> anyhow::Result<()> {
        self.with_admin(db, |client| async move { exec_on(&client, db, sql).await })
    }

    /// Async [`PgCluster::exec`], for use while a pooler on the same runtime
    /// must keep running.
    pub async fn exec_async(&self, db: &str, sql: &str) -> anyhow::Result<()> {
        exec_on(&self.admin_client(db).await?, db, sql).await
    }

    /// First column of the first row, as text. Fails on no rows or NULL.
    pub fn query_scalar(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        self.with_admin(
            db,
            |client| async move { scalar_on(&client, db, sql).await },
        )
    }

    /// Async [`PgCluster::query_scalar`].
    pub async fn query_scalar_async(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        scalar_on(&self.admin_client(db).await?, db, sql).await
    }

    /// Creates a login role whose password is stored with `enc`, whatever
    /// the server default is.
    pub fn create_role(
        &self,
        name: &str,
        password: &str,
        enc: PasswordEncryption,
    ) -> anyhow::Result<()> {
        // SET lasts for this session only, and the session is ours alone.
        let sql = format!(
            "SET password_encryption = {}; CREATE ROLE {} LOGIN PASSWORD {}",
            quote_literal(enc.setting()),
            quote_ident(name),
            quote_literal(password)
        );
        self.exec("postgres", &sql)
            .with_context(|| format!("creating role {name:?}"))
    }

    /// The stored secret (`rolpassword` from `pg_authid`) of a role: an
    /// `md5...` hash or a `SCRAM-SHA-256$...` verifier, as a pooler's
    /// auth file or auth query would hold it.
    pub fn role_secret(&self, name: &str) -> anyhow::Result<String> {
        self.with_admin("postgres", |client| async move {
            let row = client
                .query_opt(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                    &[&name],
                )
                .await?
                .ok_or_else(|| anyhow!("no role named {name:?}"))?;
            let secret: Option<String> = row.try_get(0)?;
            secret.ok_or_else(|| anyhow!("role {name:?} has no password"))
        })
    }

    /// Creates a database owned by `owner` (who can then create tables in
    /// its `public` schema, e.g. for `pgbench -i`).
    pub fn create_database(&self, name: &str, owner: &str) -> anyhow::Result<()> {
        let sql = format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(name),
            quote_ident(owner)
        );
        self.exec("postgres", &sql)
            .with_context(|| format!("creating database {name:?}"))
    }

    /// Number of client backends connected to database `db`, not counting
    /// the helper's own connection.
    pub fn backend_count(&self, db: &str) -> anyhow::Result<i64> {
        Ok(count(&self.backend_pids(db)?))
    }

    /// Async [`PgCluster::backend_count`].
    pub async fn backend_count_async(&self, db: &str) -> anyhow::Result<i64> {
        Ok(count(&self.backend_pids_async(db).await?))
    }

    /// Pids of the client backends connected to database `db` (excluding the
    /// helper's own), in ascending order.
    pub fn backend_pids(&self, db: &str) -> anyhow::Result<Vec<i32>> {
        self.with_admin(
            "postgres",
            |client| async move { pids_on(&client, db).await },
        )
    }

    /// Async [`PgCluster::backend_pids`].
    pub async fn backend_pids_async(&self, db: &str) -> anyhow::Result<Vec<i32>> {
        pids_on(&self.admin_client("postgres").await?, db).await
    }

    /// Polls [`PgCluster::backend_count`] until it equals `expected`; pooled
    /// server connections open and close asynchronously, so tests wait for
    /// a count instead of sleeping.
    ///
    /// This blocks the calling thread: inside a current-thread tokio test
    /// nothing else (a pooler, a dropped client's connection task) runs
    /// meanwhile, so use [`PgCluster::wait_for_backend_count_async`] there.
    pub fn wait_for_backend_count(
        &self,
        db: &str,
        expected: i64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.backend_count(db)?;
            if n == expected {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("database {db:?} has {n} backends after {timeout:?}, expected {expected}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Async [`PgCluster::wait_for_backend_count`]; yields to the runtime
    /// between polls.
    pub async fn wait_for_backend_count_async(
        &self,
        db: &str,
        expected: i64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let client = self.admin_client("postgres").await?;
        let deadline = Instant::now() + timeout;
        loop {
            let n = count(&pids_on(&client, db).await?);
            if n == expected {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("database {db:?} has {n} backends after {timeout:?}, expected {expected}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the server answers a superuser connection over TCP: that
    /// proves the TCP listener and the startup process are done. An answer
    /// that is a server error other than "starting up" (say, an extra hba
    /// line rejecting the superuser) also proves it is up.
    pub(super) fn wait_ready(&self) -> anyhow::Result<()> {
        let mut config = Config::new();
        config
            .host(self.host())
            .port(self.port())
            .user(self.superuser())
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(2));
        let timeout = self.opts.start_timeout;
        let result = on_private_runtime(move || async move {
            let deadline = Instant::now() + timeout;
            loop {
                let attempt = async {
                    let (client, conn) = config.connect(NoTls).await?;
                    tokio::spawn(conn);
                    client.simple_query("SELECT 1").await.map(drop)
                };
                let err = match attempt.await {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                };
                if err
                    .code()
                    .is_some_and(|c| *c != SqlState::CANNOT_CONNECT_NOW)
                {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(err.into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        result.map_err(|e| {
            anyhow!(
                "server on port {} not ready: {e:#}\nserver log:\n{}",
                self.port(),
                self.log_tail(20)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quote_characters() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(""), "''");
    }

    #[test]
    fn encryption_settings() {
        assert_eq!(PasswordEncryption::Md5.setting(), "md5");
        assert_eq!(PasswordEncryption::Scram.setting(), "scram-sha-256");
    }

    #[test]
    fn private_runtime_works_inside_a_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let v = rt.block_on(async {
            on_private_runtime(|| async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(7)
            })
        });
        assert_eq!(v.expect("value"), 7);
    }
}
