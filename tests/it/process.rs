//! Signals to the real `pgwarden` process, with PgBouncer 1.23+'s meanings: HUP reloads, TERM drains
//! clients, INT drains transactions, QUIT stops at once, USR1/USR2 pause and resume. Exit statuses and
//! the removal of the pidfile and the Unix socket are checked on every exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgwarden_tests::binary::{
    PgwardenProcess, Scratch, line_of, read_lossy, tcp_accepts, wait_until,
};
use pgwarden_tests::clients::connect;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{TestDb, free_port, write_config};

use crate::metrics::{http_get, wait_status};
use crate::pool_support::assert_login_refused;

/// Enough for any exit that should be prompt (an immediate shutdown waits at most 2 s for goodbyes).
const EXIT: Duration = Duration::from_secs(10);
/// Enough for a signal to be handled and its effect to show.
const SIGNAL_EFFECT: Duration = Duration::from_secs(10);

/// A pgwarden process in front of the shared cluster, serving one test database over TCP and the Unix
/// socket in its directory, with a pidfile and a logfile.
struct Running {
    p: PgwardenProcess,
    pg: &'static PgCluster,
    db: TestDb,
    port: u16,
    ini: PathBuf,
    dir: Scratch,
}

impl Running {
    async fn start(prefix: &str, settings: &str) -> anyhow::Result<Self> {
        let pg = PgCluster::shared();
        let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
        let dir = Scratch::new(prefix)?;
        let port = free_port()?;
        let ini = Self::write(&dir, port, pg, &db, "", settings, &db.userlist_line())?;
        let mut p = PgwardenProcess::spawn(&dir.path, &[&ini])?;
        p.wait_tcp(port).await?;
        Ok(Self {
            p,
            pg,
            db,
            port,
            ini,
            dir,
        })
    }

    /// (Re)writes the config: the test database, `more_databases` lines, `settings` and `userlist`.
    fn write(
        dir: &Scratch,
        port: u16,
        pg: &PgCluster,
        db: &TestDb,
        more_databases: &str,
        settings: &str,
        userlist: &str,
    ) -> anyhow::Result<PathBuf> {
        write_config(
            &dir.path,
            port,
            &format!(
                "{} = host=127.0.0.1 port={} dbname={}\n{more_databases}",
                db.name,
                pg.port(),
                db.name
            ),
            &format!(
                "auth_type = md5\npidfile = {}\nlogfile = {}\n{settings}",
                dir.join("pgwarden.pid").display(),
                dir.join("pgwarden.log").display()
            ),
            userlist,
        )
    }

    fn rewrite(&self, more_databases: &str, settings: &str, userlist: &str) -> anyhow::Result<()> {
        Self::write(
            &self.dir,
            self.port,
            self.pg,
            &self.db,
            more_databases,
            settings,
            userlist,
        )?;
        Ok(())
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("pgwarden.pid")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(&format!(".s.PGSQL.{}", self.port))
    }

    fn log(&self) -> String {
        read_lossy(&self.dir.join("pgwarden.log"))
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        self.client_for(&self.db.user, &self.db.password, &self.db.name)
            .await
    }

    async fn client_for(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> anyhow::Result<tokio_postgres::Client> {
        connect("127.0.0.1", self.port, user, Some(password), dbname).await
    }

    /// Waits until the process no longer accepts connections to its databases: TCP refused, and over the
    /// Unix socket (which a draining shutdown keeps for the admin console, as PgBouncer does) a login is
    /// refused with "pooler is shutting down" — or the socket is gone.
    async fn wait_not_accepting(&self) -> anyhow::Result<()> {
        let addr = self.addr();
        wait_until("pgwarden stops accepting TCP", SIGNAL_EFFECT, || {
            !tcp_accepts(addr)
        })
        .await?;
        if self.socket().exists() {
            match self.unix_client(&self.db.name).await {
                Ok(_) => {
                    anyhow::bail!("a login over the Unix socket was accepted while shutting down")
                }
                Err(e) => assert_login_refused(&e, "08P01", "pooler is shutting down"),
            }
        }
        Ok(())
    }

    /// A client over the Unix socket, as the test database's user.
    async fn unix_client(&self, dbname: &str) -> anyhow::Result<tokio_postgres::Client> {
        let dir = self.dir.path.display().to_string();
        connect(
            &dir,
            self.port,
            &self.db.user,
            Some(&self.db.password),
            dbname,
        )
        .await
    }

    /// Waits for the exit, then checks it was clean: status 0, pidfile and Unix socket removed.
    async fn expect_clean_exit(&mut self, within: Duration) -> anyhow::Result<()> {
        let status = self.p.wait_exit(within).await?;
        assert_eq!(status.code(), Some(0), "log:\n{}", self.log());
        assert!(!self.pidfile().exists(), "pidfile left behind");
        assert!(!self.socket().exists(), "Unix socket left behind");
        Ok(())
    }

    fn assert_running(&mut self) -> anyhow::Result<()> {
        let status = self.p.try_status()?;
        assert!(
            status.is_none(),
            "exited early ({status:?}); log:\n{}",
            self.log()
        );
        Ok(())
    }
}

/// Expects a connection attempt to be refused with this SQLSTATE and message.
fn expect_refused(attempt: anyhow::Result<tokio_postgres::Client>, code: &str, message: &str) {
    let err = match attempt {
        Ok(_) => panic!("connected; expected {code} {message:?}"),
        Err(e) => e,
    };
    let db = err
        .chain()
        .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::as_db_error)
        .unwrap_or_else(|| panic!("not a server error: {err:#}"));
    assert_eq!((db.code().code(), db.message()), (code, message), "{err:#}");
}

/// SIGHUP re-reads the config file and auth_file: a user added to the userlist can log in and a
/// database added to `[databases]` can be used, neither of which worked before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_config_and_auth_file() -> anyhow::Result<()> {
    let mut r = Running::start("sig_hup", "pool_mode = transaction").await?;
    let user2 = PgCluster::unique_name("sig_hup_new");
    r.pg.create_role(&user2, "pw2", PasswordEncryption::Md5)?;
    let alias = format!("{}_alias", r.db.name);

    let before = r.client_for(&user2, "pw2", &r.db.name).await;
    expect_refused(
        before,
        "28P01",
        &format!("password authentication failed for user \"{user2}\""),
    );
    let before = r.client_for(&r.db.user, &r.db.password, &alias).await;
    expect_refused(before, "08P01", &format!("no such database: {alias}"));
    let existing = r.client().await?;

    r.rewrite(
        &format!(
            "{alias} = host=127.0.0.1 port={} dbname={}",
            r.pg.port(),
            r.db.name
        ),
        "pool_mode = transaction",
        &format!("{}\"{user2}\" \"pw2\"\n", r.db.userlist_line()),
    )?;
    r.p.signal(Signal::SIGHUP)?;
    wait_until("the reload is logged", SIGNAL_EFFECT, || {
        r.log().contains("configuration reloaded (generation 2)")
    })
    .await?;

    let new_user = r.client_for(&user2, "pw2", &r.db.name).await?;
    let row = new_user.query_one("select current_user::text", &[]).await?;
    assert_eq!(row.get::<_, String>(0), user2);
    let via_alias = r.client_for(&r.db.user, &r.db.password, &alias).await?;
    let row = via_alias
        .query_one("select current_database()::text", &[])
        .await?;
    assert_eq!(row.get::<_, String>(0), r.db.name);
    let row = existing.query_one("select 5::int4", &[]).await?;
    assert_eq!(
        row.get::<_, i32>(0),
        5,
        "a client connected before the reload is still served"
    );
    r.assert_running()?;
    Ok(())
}

/// SIGHUP with an invalid config file keeps the running configuration (including its auth_file) and
/// logs the error with file, line and key; once fixed, the next SIGHUP applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_invalid_config_keeps_the_running_one() -> anyhow::Result<()> {
    let mut r = Running::start("sig_hup_bad", "pool_mode = transaction").await?;
    let user2 = PgCluster::unique_name("sig_hup_bad_new");
    r.pg.create_role(&user2, "pw2", PasswordEncryption::Md5)?;
    let userlist = format!("{}\"{user2}\" \"pw2\"\n", r.db.userlist_line());

    r.rewrite("", "pool_mode = transaction\nbogus_setting = 1", &userlist)?;
    let line = line_of(&r.ini, "bogus_setting")?;
    r.p.signal(Signal::SIGHUP)?;
    let expected = format!(
        "reload failed, keeping the running configuration: {}:{line}: bogus_setting: unknown setting",
        r.ini.display()
    );
    wait_until("the failed reload is logged", SIGNAL_EFFECT, || {
        r.log().contains(&expected)
    })
    .await?;
    r.assert_running()?;
    let old = r.client().await?;
    assert_eq!(
        old.query_one("select 1::int4", &[]).await?.get::<_, i32>(0),
        1
    );
    // The new auth_file came with the invalid config, so it was not applied either.
    expect_refused(
        r.client_for(&user2, "pw2", &r.db.name).await,
        "28P01",
        &format!("password authentication failed for user \"{user2}\""),
    );
    assert!(!r.log().contains("configuration reloaded"));

    r.rewrite("", "pool_mode = transaction", &userlist)?;
    r.p.signal(Signal::SIGHUP)?;
    wait_until("the fixed config is reloaded", SIGNAL_EFFECT, || {
        r.log().contains("configuration reloaded")
    })
    .await?;
    let new_user = r.client_for(&user2, "pw2", &r.db.name).await?;
    assert_eq!(
        new_user
            .query_one("select current_user::text", &[])
            .await?
            .get::<_, String>(0),
        user2
    );
    Ok(())
}

/// SIGTERM (`docker stop`, a pod's deletion): new connections are refused at once; a client caught inside
/// a transaction finishes it (more statements, then COMMIT, which persists) and keeps being served; the
/// metrics listener keeps answering, /healthz 200 and /readyz 503 "shutting down", so an orchestrator stops
/// sending clients without killing the pooler; the process exits (status 0, pidfile and socket removed)
/// once that client disconnects, and the metrics port closes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_serves_connected_clients_then_exits_when_they_leave() -> anyhow::Result<()> {
    let metrics = free_port()?;
    let mut r = Running::start(
        "sig_term",
        &format!(
            "pool_mode = transaction\nmetrics_listen_addr = 127.0.0.1\nmetrics_listen_port = {metrics}"
        ),
    )
    .await?;
    let client = r.client().await?;
    assert!(r.pidfile().exists() && r.socket().exists());
    client.batch_execute("create table t (x int)").await?;
    client
        .batch_execute("begin; insert into t values (1)")
        .await?;
    assert_eq!(wait_status(metrics, "/readyz", 200).await?, "ready\n");

    r.p.signal(Signal::SIGTERM)?;
    r.wait_not_accepting().await?;
    assert_eq!(
        http_get(metrics, "/readyz").await?,
        (503, "not ready: shutting down\n".to_owned())
    );
    assert_eq!(http_get(metrics, "/healthz").await?.0, 200);
    client
        .batch_execute("insert into t values (2); commit")
        .await?;
    assert_eq!(
        r.pg.query_scalar_async(
            &r.db.name,
            "select string_agg(x::text, ',' order by x) from t"
        )
        .await?,
        "1,2"
    );
    for i in 0..3_i32 {
        let row = client.query_one("select $1::int4 * 2", &[&i]).await?;
        assert_eq!(row.get::<_, i32>(0), i * 2);
    }
    let tx_result = client
        .simple_query("begin; select 1; commit")
        .await
        .map(|m| m.len());
    assert!(tx_result.is_ok(), "{tx_result:?}");
    r.assert_running()?;
    assert!(r.pidfile().exists(), "still running: pidfile kept");

    drop(client);
    r.expect_clean_exit(EXIT).await?;
    assert!(
        !tcp_accepts(SocketAddr::from(([127, 0, 0, 1], metrics))),
        "the metrics port outlived the process"
    );
    Ok(())
}

/// A second SIGTERM while draining means "now": the process exits although a client is still connected,
/// and that client's connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_at_once() -> anyhow::Result<()> {
    let mut r = Running::start("sig_term2", "pool_mode = transaction").await?;
    let client = r.client().await?;
    r.p.signal(Signal::SIGTERM)?;
    r.wait_not_accepting().await?;
    assert_eq!(
        client
            .query_one("select 1::int4", &[])
            .await?
            .get::<_, i32>(0),
        1
    );
    r.assert_running()?;

    r.p.signal(Signal::SIGTERM)?;
    r.expect_clean_exit(EXIT).await?;
    assert!(client.query_one("select 1::int4", &[]).await.is_err());
    Ok(())
}

/// SIGINT: stops accepting; a client inside a transaction may finish it (more statements, then COMMIT,
/// which persists); a client that is not in a transaction gets no new server ("server shutting down");
/// the process exits once the transaction is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_an_open_transaction_commit_then_exits() -> anyhow::Result<()> {
    let mut r = Running::start("sig_int", "pool_mode = transaction").await?;
    let in_tx = r.client().await?;
    let idle = r.client().await?;
    in_tx.batch_execute("create table t (x int)").await?;
    in_tx
        .batch_execute("begin; insert into t values (1)")
        .await?;

    r.p.signal(Signal::SIGINT)?;
    r.wait_not_accepting().await?;
    let err = idle
        .simple_query("select 1")
        .await
        .expect_err("no new transaction during SIGINT's drain");
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(
        (db.code().code(), db.message()),
        ("08P01", "server shutting down")
    );
    r.assert_running()?;

    in_tx.batch_execute("insert into t values (2)").await?;
    in_tx.batch_execute("commit").await?;
    r.expect_clean_exit(EXIT).await?;
    let committed =
        r.pg.query_scalar_async(&r.db.name, "select count(*) from t")
            .await?;
    assert_eq!(
        committed, "2",
        "the transaction finished under SIGINT committed"
    );
    Ok(())
}

/// SIGINT drops the clients queued for a server at once ("server shutting down") and those held by a
/// PAUSE, while the transaction holding the only server goes on to COMMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drops_queued_and_paused_clients() -> anyhow::Result<()> {
    let mut r = Running::start(
        "sig_int_queued",
        "pool_mode = transaction\ndefault_pool_size = 1",
    )
    .await?;
    let in_tx = r.client().await?;
    let queued = r.client().await?;
    in_tx.batch_execute("begin; select 1").await?;
    waits_until_sigint_refuses(&r, queued, "queued").await?;
    in_tx.batch_execute("commit").await?;
    r.expect_clean_exit(EXIT).await?;

    // The same for a client held by a PAUSE.
    let mut r = Running::start("sig_int_paused", "pool_mode = transaction").await?;
    let paused = r.client().await?;
    paused.simple_query("select 1").await?;
    r.p.signal(Signal::SIGUSR1)?;
    r.pg.wait_for_backend_count_async(&r.db.name, 0, SIGNAL_EFFECT)
        .await?;
    waits_until_sigint_refuses(&r, paused, "paused").await?;
    r.expect_clean_exit(EXIT).await?;
    Ok(())
}

/// Sends a query from `client` and checks that it waits (the client is `state`: queued, paused); then sends
/// SIGINT and checks that the client is told "server shutting down" at once.
async fn waits_until_sigint_refuses(
    r: &Running,
    client: tokio_postgres::Client,
    state: &str,
) -> anyhow::Result<()> {
    let mut waiting = tokio::spawn(async move { client.simple_query("select 1").await.map(drop) });
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(
        early.is_err(),
        "a {state} client's query must wait: {early:?}"
    );
    r.p.signal(Signal::SIGINT)?;
    let err = tokio::time::timeout(SIGNAL_EFFECT, waiting)
        .await
        .unwrap_or_else(|_| panic!("the {state} client is answered at once"))?
        .expect_err("no server during SIGINT's drain");
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(
        (db.code().code(), db.message()),
        ("08P01", "server shutting down")
    );
    Ok(())
}

/// SIGINT in session pooling: a connected client keeps its server and goes on working (its server is only
/// released when it leaves), the Unix socket still serves the admin console while other logins are refused,
/// SIGUSR2 does not undo the shutdown, and the process exits once the client has left — PgBouncer's
/// WAIT_FOR_SERVERS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_in_session_mode_waits_for_the_session_and_keeps_the_console() -> anyhow::Result<()>
{
    let mut r = Running::start("sig_int_session", "pool_mode = session").await?;
    r.rewrite(
        "",
        &format!("pool_mode = session\nadmin_users = {}", r.db.user),
        &r.db.userlist_line(),
    )?;
    r.p.signal(Signal::SIGHUP)?;
    let console_user = r.db.user.clone();
    wait_until("admin_users reloaded", SIGNAL_EFFECT, || {
        r.log().contains("configuration reloaded (generation 2)")
    })
    .await?;
    let session = r.client().await?;
    session
        .batch_execute("SET application_name = 'kept'")
        .await?;

    r.p.signal(Signal::SIGINT)?;
    r.wait_not_accepting().await?;
    for _ in 0..3 {
        let name: String = session
            .query_one("SHOW application_name", &[])
            .await?
            .get(0);
        assert_eq!(name, "kept", "the session keeps its own server");
    }
    let console = r.unix_client("pgbouncer").await?;
    let version = console.simple_query("SHOW VERSION").await?;
    assert!(
        version
            .iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))),
        "the console answers during the drain (as {console_user})"
    );
    drop(console);
    r.p.signal(Signal::SIGUSR2)?;
    wait_until("SIGUSR2 ignored", SIGNAL_EFFECT, || {
        r.log()
            .contains("got SIGUSR2 while shutting down, ignoring")
    })
    .await?;
    r.assert_running()?;

    drop(session);
    r.expect_clean_exit(EXIT).await?;
    let log = r.log();
    assert!(
        log.contains(
            "got SIGINT, shutting down, waiting for all servers connections to be released"
        ) && log.contains("server connections dropped, exiting"),
        "{log}"
    );
    Ok(())
}

/// SIGQUIT: exits at once, even with a client in the middle of a transaction (which is lost: its server
/// connection is closed, so PostgreSQL rolls it back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_exits_at_once() -> anyhow::Result<()> {
    let mut r = Running::start("sig_quit", "pool_mode = transaction").await?;
    let client = r.client().await?;
    client.batch_execute("create table t (x int)").await?;
    client
        .batch_execute("begin; insert into t values (1)")
        .await?;

    r.p.signal(Signal::SIGQUIT)?;
    r.expect_clean_exit(EXIT).await?;
    assert!(client.batch_execute("commit").await.is_err());
    r.pg.wait_for_backend_count_async(&r.db.name, 0, SIGNAL_EFFECT)
        .await?;
    let rows =
        r.pg.query_scalar_async(&r.db.name, "select count(*) from t")
            .await?;
    assert_eq!(rows, "0");
    Ok(())
}

/// SIGUSR1 pauses: idle servers are closed and a new query waits (it neither fails nor gets a server);
/// SIGUSR2 resumes and the waiting query completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_pauses_and_sigusr2_resumes() -> anyhow::Result<()> {
    let mut r = Running::start("sig_usr", "pool_mode = transaction").await?;
    let client = r.client().await?;
    assert_eq!(
        client
            .query_one("select 1::int4", &[])
            .await?
            .get::<_, i32>(0),
        1
    );
    assert_eq!(
        r.pg.backend_count_async(&r.db.name).await?,
        1,
        "one idle server"
    );

    r.p.signal(Signal::SIGUSR1)?;
    // PAUSE closes idle servers: that is how we know it took effect.
    r.pg.wait_for_backend_count_async(&r.db.name, 0, SIGNAL_EFFECT)
        .await?;
    let mut query = tokio::spawn(async move {
        let res = client.query_one("select 42::int4", &[]).await;
        (client, res)
    });
    let early = tokio::time::timeout(Duration::from_millis(500), &mut query).await;
    assert!(
        early.is_err(),
        "the query must wait while paused: {early:?}"
    );
    assert_eq!(
        r.pg.backend_count_async(&r.db.name).await?,
        0,
        "no server while paused"
    );
    r.assert_running()?;

    r.p.signal(Signal::SIGUSR2)?;
    let (client, res) = tokio::time::timeout(SIGNAL_EFFECT, query).await??;
    assert_eq!(res?.get::<_, i32>(0), 42);
    assert_eq!(
        client
            .query_one("select 2::int4", &[])
            .await?
            .get::<_, i32>(0),
        2
    );
    Ok(())
}
