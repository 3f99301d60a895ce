//! Helpers shared by the pooling, lifecycle and timeouts modules: config lines, tokio-postgres clients whose
//! connection task reports how the session ended, error inspection, and polling with a deadline.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pgwarden::pool::{KeyRef, Pool};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

/// The connection task of a client: `Err` carries the error that ended the session (a FATAL the pooler
/// sent while no query was waiting for an answer).
pub type ConnTask = JoinHandle<Result<(), tokio_postgres::Error>>;

/// A `[databases]` line routing `alias` to database `dbname` of `pg`, plus `extra` key=value pairs.
pub fn db_line(pg: &PgCluster, alias: &str, dbname: &str, extra: &str) -> String {
    format!(
        "{alias} = host=127.0.0.1 port={} dbname={dbname} {extra}",
        pg.port()
    )
}

/// A `[databases]` line for a test database under its own name.
pub fn entry(pg: &PgCluster, db: &TestDb, extra: &str) -> String {
    db_line(pg, &db.name, &db.name, extra)
}

/// Another login role on `pg` (md5 secret), returned as (name, password).
pub fn extra_role(pg: &PgCluster, prefix: &str) -> anyhow::Result<(String, String)> {
    let name = PgCluster::unique_name(prefix);
    let password = format!("pw_{name}");
    pg.create_role(&name, &password, PasswordEncryption::Md5)?;
    Ok((name, password))
}

/// A userlist.txt line.
pub fn userlist_line(user: &str, password: &str) -> String {
    format!("\"{user}\" \"{password}\"\n")
}

/// Connects through the pooler and returns the client with its connection task, so a test can see the
/// error a pooler-initiated disconnect carried.
pub async fn connect_watched(
    pooler: &Pooler,
    user: &str,
    password: &str,
    dbname: &str,
) -> anyhow::Result<(Client, ConnTask)> {
    let mut config = Config::new();
    config
        .host("127.0.0.1")
        .port(pooler.port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .connect_timeout(Duration::from_secs(10));
    let (client, conn) = tokio::time::timeout(Duration::from_secs(30), config.connect(NoTls))
        .await
        .context("login through the pooler timed out")?
        .with_context(|| format!("connecting as {user:?} to {dbname:?}"))?;
    Ok((client, tokio::spawn(conn)))
}

/// [`connect_watched`] as a test database's own role.
pub async fn connect_db(pooler: &Pooler, db: &TestDb) -> anyhow::Result<(Client, ConnTask)> {
    connect_watched(pooler, &db.user, &db.password, &db.name).await
}

/// (severity, SQLSTATE, message) of a server-sent error.
pub fn db_error(e: &tokio_postgres::Error) -> Option<(String, String, String)> {
    e.as_db_error().map(|d| {
        (
            d.severity().to_owned(),
            d.code().code().to_owned(),
            d.message().to_owned(),
        )
    })
}

/// Fails unless `e` is a FATAL with exactly this SQLSTATE and message.
pub fn assert_fatal(e: &tokio_postgres::Error, code: &str, message: &str) {
    assert_eq!(
        db_error(e),
        Some(("FATAL".to_owned(), code.to_owned(), message.to_owned())),
        "unexpected error: {e:?}"
    );
}

/// Like [`assert_fatal`] for an error from the harness's `connect` (wrapped in anyhow).
pub fn assert_login_refused(e: &anyhow::Error, code: &str, message: &str) {
    match e.downcast_ref::<tokio_postgres::Error>() {
        Some(pg) => assert_fatal(pg, code, message),
        None => panic!("expected a server error, got {e:#}"),
    }
}

/// Waits (bounded) for a client's session to end and returns the error it ended with.
pub async fn session_end(
    task: ConnTask,
    within: Duration,
) -> anyhow::Result<tokio_postgres::Error> {
    match tokio::time::timeout(within, task).await {
        Err(_) => bail!("the session was still open after {within:?}"),
        Ok(Err(join)) => bail!("connection task failed: {join}"),
        Ok(Ok(Ok(()))) => bail!("the session ended without an error"),
        Ok(Ok(Err(e))) => Ok(e),
    }
}

/// First column of the first row of a simple query, as text (`None` for NULL).
pub async fn scalar_opt(client: &Client, sql: &str) -> anyhow::Result<Option<String>> {
    for msg in client
        .simple_query(sql)
        .await
        .with_context(|| format!("running {sql:?}"))?
    {
        if let SimpleQueryMessage::Row(row) = msg {
            return Ok(row.get(0).map(str::to_owned));
        }
    }
    bail!("{sql:?} returned no rows")
}

/// First column of the first row of a simple query, as text; NULL is an error.
pub async fn scalar(client: &Client, sql: &str) -> anyhow::Result<String> {
    scalar_opt(client, sql)
        .await?
        .with_context(|| format!("{sql:?} returned NULL"))
}

/// The backend pid serving a client now.
pub async fn backend_pid(client: &Client) -> anyhow::Result<i32> {
    Ok(scalar(client, "SELECT pg_backend_pid()").await?.parse()?)
}

/// Client backends of database `db` on `pg` (optionally only those of `user`), seen by a superuser.
pub async fn backends(pg: &PgCluster, db: &str, user: Option<&str>) -> anyhow::Result<i64> {
    let admin = pg.admin_client("postgres").await?;
    count_backends(&admin, db, user).await
}

/// [`backends`] on an existing superuser client (for sampling in a loop).
pub async fn count_backends(admin: &Client, db: &str, user: Option<&str>) -> anyhow::Result<i64> {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = $1 AND backend_type = 'client backend' \
               AND ($2::text IS NULL OR usename = $2) AND pid <> pg_backend_pid()",
            &[&db, &user],
        )
        .await?;
    Ok(row.get(0))
}

/// Polls `check` every 25 ms until it returns true; fails after `timeout` with `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until database `db` has exactly `n` client backends (of `user`, if given).
pub async fn wait_backends(
    pg: &PgCluster,
    db: &str,
    user: Option<&str>,
    n: i64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let admin = pg.admin_client("postgres").await?;
    let last = AtomicI64::new(-1);
    let res = wait_until("a backend count", timeout, || async {
        let now = count_backends(&admin, db, user).await?;
        last.store(now, Ordering::Relaxed);
        Ok(now == n)
    })
    .await;
    res.with_context(|| {
        format!(
            "database {db:?} has {} backends, expected {n}",
            last.load(Ordering::Relaxed)
        )
    })
}

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// The pool of `(entry, user)`, which exists once a client of it has logged in.
pub fn pool_of(pooler: &Pooler, entry: &str, user: &str) -> anyhow::Result<Arc<Pool>> {
    pooler
        .state
        .pools
        .get(KeyRef::new(entry, user))
        .with_context(|| format!("no pool for {entry}/{user}"))
}

/// Waits until `n` clients are queued for a server in `pool`.
pub async fn wait_queued(pool: &Pool, n: usize) -> anyhow::Result<()> {
    wait_until(
        &format!("{n} clients queued in {}", pool.key),
        WAIT,
        || async { Ok(pool.waiting() == n) },
    )
    .await
}

/// Runs a simple query on a task, so the test can watch it wait; yields the first column of its first row.
pub fn spawn_scalar(client: &Arc<Client>, sql: &str) -> JoinHandle<anyhow::Result<String>> {
    let client = Arc::clone(client);
    let sql = sql.to_owned();
    tokio::spawn(async move { scalar(&client, &sql).await })
}

/// Awaits a spawned query, bounded.
pub async fn finish<T>(task: JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(WAIT, task)
        .await
        .context("query still waiting")??
}

/// A watched session end: when it happened and the error it carried.
pub type EndWatch = JoinHandle<(Instant, anyhow::Result<tokio_postgres::Error>)>;

/// Notes the moment a client's session ends, for timing assertions made later.
pub fn watch_end(task: ConnTask) -> EndWatch {
    tokio::spawn(async move {
        let res = task.await;
        let at = Instant::now();
        let error = match res {
            Ok(Err(e)) => Ok(e),
            Ok(Ok(())) => Err(anyhow::anyhow!("the session ended without an error")),
            Err(join) => Err(anyhow::anyhow!("connection task failed: {join}")),
        };
        (at, error)
    })
}

/// Waits (bounded) for a watched session to end; returns when it ended and its error.
pub async fn ended(
    watch: EndWatch,
    within: Duration,
) -> anyhow::Result<(Instant, tokio_postgres::Error)> {
    let (at, error) = tokio::time::timeout(within, watch)
        .await
        .with_context(|| format!("the session was still open after {within:?}"))??;
    Ok((at, error?))
}

/// A transaction-mode pooler in front of a fresh test database, with extra `[pgbouncer]` settings.
pub async fn setup(prefix: &str, settings: &str) -> anyhow::Result<(TestDb, Pooler)> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        &format!("pool_mode = transaction\n{settings}"),
        &db.userlist_line(),
    )
    .await?;
    Ok((db, pooler))
}

/// The message of the FATAL a wrong password for `user` gets from the pooler on `port`: PostgreSQL's words
/// after an md5 or clear-text exchange, PgBouncer's after a SCRAM one (which the pooler asks for depends
/// on the secret it holds, so its first request is looked at).
pub async fn wrong_password_message(port: u16, user: &str, db: &str) -> anyhow::Result<String> {
    use pgwarden::protocol::backend::Authentication;
    let mut client = pgwarden_tests::raw::RawClient::connect(port).await?;
    client
        .send_startup(&[("user", user), ("database", db)])
        .await?;
    loop {
        match client.recv().await? {
            Some(m) if m.tag == b'R' => {
                return Ok(match Authentication::parse(&m.body)? {
                    Authentication::Sasl { .. } => "SASL authentication failed".to_owned(),
                    _ => format!("password authentication failed for user \"{user}\""),
                });
            }
            Some(m) if m.tag == b'E' => bail!("refused before authentication: {:?}", m.error()),
            Some(_) => {}
            None => bail!("connection closed before an authentication request"),
        }
    }
}
