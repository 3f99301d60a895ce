//! The log as operators read it: PgBouncer's connection lines (`C-0x…: db/user@addr:port login attempt: …`,
//! `S-0x…: … new connection to server (from …)`, `closing because: …`, login failures with their reason),
//! `log_connections`/`log_disconnections`/`verbose` changed by a reload, `log_format = json` (one object per
//! line), and the logfile reopened on SIGHUP (logrotate's rename) or moved by a reload. The real `pgwarden`
//! process with a logfile, driven by tokio-postgres.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgwarden_tests::binary::{PgwardenProcess, Scratch, read_lossy, wait_until};
use pgwarden_tests::clients::connect;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{TestDb, free_port, write_config};

/// Enough for a line to reach the file or a signal to take effect.
const SHOWS: Duration = Duration::from_secs(10);

/// pgwarden (a child process) in front of the shared cluster, serving one test database, logging to
/// `pgwarden.log` in its directory.
struct Logged {
    p: PgwardenProcess,
    pg: &'static PgCluster,
    db: TestDb,
    port: u16,
    dir: Scratch,
    /// `[databases]` lines besides the test database's.
    more_databases: String,
}

impl Logged {
    async fn start(prefix: &str, settings: &str) -> anyhow::Result<Self> {
        Self::start_with(prefix, |_, _| String::new(), settings).await
    }

    /// [`Logged::start`] with more `[databases]` lines, written by `more_databases(cluster, test db)`.
    async fn start_with(
        prefix: &str,
        more_databases: impl FnOnce(&PgCluster, &TestDb) -> String,
        settings: &str,
    ) -> anyhow::Result<Self> {
        let pg = PgCluster::shared();
        let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
        let more_databases = more_databases(pg, &db);
        let dir = Scratch::new(prefix)?;
        let port = free_port()?;
        let ini = write_ini(&dir, port, pg, &db, &more_databases, settings)?;
        let mut p = PgwardenProcess::spawn(&dir.path, &[&ini])?;
        p.wait_tcp(port).await?;
        Ok(Self {
            p,
            pg,
            db,
            port,
            dir,
            more_databases,
        })
    }

    /// Rewrites the config with `settings` (after the logfile line: a later `logfile` wins).
    fn write(&self, settings: &str) -> anyhow::Result<PathBuf> {
        write_ini(
            &self.dir,
            self.port,
            self.pg,
            &self.db,
            &self.more_databases,
            settings,
        )
    }

    fn logfile(&self) -> PathBuf {
        self.dir.join("pgwarden.log")
    }

    fn log(&self) -> String {
        read_lossy(&self.logfile())
    }

    async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(
            "127.0.0.1",
            self.port,
            &self.db.user,
            Some(&self.db.password),
            &self.db.name,
        )
        .await
    }

    /// A login with a wrong password, which must fail with PostgreSQL's error.
    async fn wrong_password(&self) -> anyhow::Result<()> {
        let err = match connect(
            "127.0.0.1",
            self.port,
            &self.db.user,
            Some("wrong"),
            &self.db.name,
        )
        .await
        {
            Ok(_) => anyhow::bail!("a wrong password logged in"),
            Err(e) => e,
        };
        let db_err = err
            .chain()
            .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
            .and_then(tokio_postgres::Error::as_db_error)
            .ok_or_else(|| anyhow::anyhow!("not a server error: {err:#}"))?;
        assert_eq!(
            (db_err.code().code(), db_err.message()),
            ("28P01", self.password_failed().as_str())
        );
        Ok(())
    }

    fn password_failed(&self) -> String {
        format!(
            "password authentication failed for user \"{}\"",
            self.db.user
        )
    }

    /// Reloads with `settings` (SIGHUP) and waits until the reload is logged in `logfile`.
    async fn reload(&self, settings: &str, generation: u32) -> anyhow::Result<()> {
        self.write(settings)?;
        self.p.signal(Signal::SIGHUP)?;
        let expected = format!("configuration reloaded (generation {generation})");
        wait_until(&expected, SHOWS, || self.log().contains(&expected)).await
    }
}

/// The config: the test database and `more_databases`, md5 logins, `pgwarden.log` in `dir`, then `settings`.
fn write_ini(
    dir: &Scratch,
    port: u16,
    pg: &PgCluster,
    db: &TestDb,
    more_databases: &str,
    settings: &str,
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
            "auth_type = md5\nlogfile = {}\n{settings}",
            dir.join("pgwarden.log").display()
        ),
        &db.userlist_line(),
    )
}

/// One connection line of the text log: `<level> <kind>-0x<id>: <db>/<user>@<addr> <message>`.
#[derive(Debug, Clone, PartialEq)]
struct ConnLine {
    level: String,
    kind: char,
    id: String,
    db: String,
    user: String,
    addr: String,
    message: String,
}

fn parse_conn_line(line: &str) -> Option<ConnLine> {
    let start = line.find(" C-0x").or_else(|| line.find(" S-0x"))?;
    let level = line[..start].split_whitespace().last()?.to_owned();
    let rest = &line[start + 1..];
    let kind = rest.chars().next()?;
    let rest = &rest[4..];
    let (id, rest) = rest.split_once(": ")?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let (who, message) = rest.split_once(' ')?;
    let (db, user_addr) = who.split_once('/')?;
    let (user, addr) = user_addr.rsplit_once('@')?;
    Some(ConnLine {
        level,
        kind,
        id: id.to_owned(),
        db: db.to_owned(),
        user: user.to_owned(),
        addr: addr.to_owned(),
        message: message.to_owned(),
    })
}

fn conn_lines(log: &str) -> Vec<ConnLine> {
    log.lines().filter_map(parse_conn_line).collect()
}

/// Whether `message` is `<start><n>s)` for a whole number `n`: a `closing because: … (age=…s)` line.
fn is_closing(message: &str, reason: &str) -> bool {
    message
        .strip_prefix(&format!("closing because: {reason} (age="))
        .and_then(|age| age.strip_suffix("s)"))
        .is_some_and(|n| n.parse::<u64>().is_ok())
}

/// The lines of the client whose line satisfies `first`, once every line in `want` is among them.
async fn client_lines(
    l: &Logged,
    what: &str,
    first: impl Fn(&ConnLine) -> bool,
    want: &[&dyn Fn(&ConnLine) -> bool],
) -> anyhow::Result<Vec<ConnLine>> {
    let mut found = Vec::new();
    let res = wait_until(what, SHOWS, || {
        let lines = conn_lines(&l.log());
        let Some(id) = lines
            .iter()
            .find(|c| c.kind == 'C' && first(c))
            .map(|c| c.id.clone())
        else {
            return false;
        };
        found = lines
            .into_iter()
            .filter(|c| c.kind == 'C' && c.id == id)
            .collect();
        want.iter().all(|w| found.iter().any(w))
    })
    .await;
    res.map_err(|e| anyhow::anyhow!("{e}; log:\n{}", l.log()))?;
    Ok(found)
}

/// A client's login, its server connection and its goodbye are logged in PgBouncer's shape and words:
/// `C-0x…: db/user@127.0.0.1:port login attempt: db=… user=… tls=no`, `S-0x…: db/user@host:port new
/// connection to server (from 127.0.0.1:…)`, `closing because: client close request (age=…s)`; a wrong
/// password gives `pooler error:`, `login failed:` and `closing because:` lines with PostgreSQL's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lines_have_pgbouncers_shape() -> anyhow::Result<()> {
    let l = Logged::start("logs_lines", "").await?;
    let (db, user) = (l.db.name.clone(), l.db.user.clone());
    let client = l.client().await?;
    assert_eq!(
        client
            .query_one("select 1::int4", &[])
            .await?
            .get::<_, i32>(0),
        1
    );
    drop(client);

    let attempt = format!("login attempt: db={db} user={user} tls=no replication=no");
    let lines = client_lines(
        &l,
        "the client's login and close request are logged",
        |c| c.message == attempt,
        &[&|c| is_closing(&c.message, "client close request")],
    )
    .await?;
    let login = &lines[0];
    assert_eq!(
        (login.db.as_str(), login.user.as_str()),
        (db.as_str(), user.as_str())
    );
    assert_eq!(login.level, "INFO");
    let port = login.addr.strip_prefix("127.0.0.1:").map(str::parse::<u16>);
    assert!(
        matches!(port, Some(Ok(_))),
        "client address {:?}",
        login.addr
    );
    assert!(
        lines
            .iter()
            .all(|c| c.addr == login.addr && c.db == db && c.user == user),
        "{lines:#?}"
    );

    let log = l.log();
    let server = conn_lines(&log)
        .into_iter()
        .find(|c| c.kind == 'S' && c.message.starts_with("new connection to server"))
        .ok_or_else(|| anyhow::anyhow!("no new server connection line in:\n{log}"))?;
    assert_eq!(
        (
            server.db.as_str(),
            server.user.as_str(),
            server.addr.clone()
        ),
        (
            db.as_str(),
            user.as_str(),
            format!("127.0.0.1:{}", l.pg.port())
        ),
        "{log}"
    );
    let from = server
        .message
        .strip_prefix("new connection to server (from 127.0.0.1:")
        .and_then(|p| p.strip_suffix(')'))
        .map(str::parse::<u16>);
    assert!(matches!(from, Some(Ok(_))), "{server:?}");

    l.wrong_password().await?;
    let failed = l.password_failed();
    let lines = client_lines(
        &l,
        "the failed login is logged with its reason",
        |c| c.message == attempt && c.id != login.id,
        &[
            &|c| c.level == "WARN" && c.message == format!("pooler error: {failed}"),
            &|c| c.message == format!("login failed: db={db} user={user}: {failed}"),
            &|c| is_closing(&c.message, &failed),
        ],
    )
    .await?;
    assert!(
        !lines
            .iter()
            .any(|c| c.message.contains("client close request")),
        "{lines:#?}"
    );
    Ok(())
}

/// `log_connections = 0` and `log_disconnections = 0` take effect on a reload: a login after it writes no
/// `login attempt` and no `closing because`, while `log_pooler_errors` lines still appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_connections_and_disconnections_follow_a_reload() -> anyhow::Result<()> {
    let l = Logged::start("logs_toggle", "").await?;
    let attempt = format!(
        "login attempt: db={} user={} tls=no replication=no",
        l.db.name, l.db.user
    );
    drop(l.client().await?);
    client_lines(
        &l,
        "the first client is logged",
        |c| c.message == attempt,
        &[&|c| is_closing(&c.message, "client close request")],
    )
    .await?;

    l.reload("log_connections = 0\nlog_disconnections = 0", 2)
        .await?;
    let before = conn_lines(&l.log());
    let client = l.client().await?;
    // The login attempt would have been logged before the welcome the client just got.
    assert_eq!(
        conn_lines(&l.log())
            .iter()
            .filter(|c| c.message == attempt)
            .count(),
        1,
        "{}",
        l.log()
    );
    drop(client);
    l.wrong_password().await?;
    let failed = l.password_failed();
    let pooler_error = format!("pooler error: {failed}");
    wait_until("the pooler error is logged", SHOWS, || {
        conn_lines(&l.log())
            .iter()
            .any(|c| c.message == pooler_error)
    })
    .await?;
    let after: Vec<ConnLine> = conn_lines(&l.log())
        .into_iter()
        .filter(|c| !before.contains(c))
        .collect();
    assert!(
        after.iter().all(|c| c.message == pooler_error),
        "only the pooler error is logged after the reload: {after:#?}"
    );
    Ok(())
}

/// `log_format = json`: every line is one JSON object with timestamp, level and message, and connection
/// lines carry `conn`, `db`, `user` and `addr` as keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_parse_and_carry_the_connection() -> anyhow::Result<()> {
    let l = Logged::start("logs_json", "log_format = json").await?;
    drop(l.client().await?);
    l.wrong_password().await?;
    let failed = l.password_failed();
    let parsed = || -> Vec<serde_json::Value> {
        l.log()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    };
    let message_is = |v: &serde_json::Value, m: &str| v["message"].as_str() == Some(m);
    wait_until("the failed login is logged", SHOWS, || {
        parsed().iter().any(|v| {
            message_is(
                v,
                &format!(
                    "login failed: db={} user={}: {failed}",
                    l.db.name, l.db.user
                ),
            )
        }) && parsed().iter().any(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("closing because: client close request"))
        })
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", l.log()))?;

    let log = l.log();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("{e}: {line:?}"))?;
        for key in ["timestamp", "level", "message"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
    }
    let values = parsed();
    let attempt = values
        .iter()
        .find(|v| {
            message_is(
                v,
                &format!(
                    "login attempt: db={} user={} tls=no replication=no",
                    l.db.name, l.db.user
                ),
            )
        })
        .ok_or_else(|| anyhow::anyhow!("no login attempt in:\n{log}"))?;
    assert_eq!(attempt["level"], "INFO");
    assert!(
        attempt["conn"]
            .as_str()
            .is_some_and(|c| c.starts_with("C-0x")),
        "{attempt}"
    );
    assert_eq!(attempt["db"], l.db.name.as_str());
    assert_eq!(attempt["user"], l.db.user.as_str());
    assert!(
        attempt["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{attempt}"
    );
    let server = values
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("new connection to server (from 127.0.0.1:"))
        })
        .ok_or_else(|| anyhow::anyhow!("no server line in:\n{log}"))?;
    assert!(
        server["conn"]
            .as_str()
            .is_some_and(|c| c.starts_with("S-0x")),
        "{server}"
    );
    assert_eq!(
        server["addr"],
        format!("127.0.0.1:{}", l.pg.port()).as_str()
    );
    assert_eq!(server["db"], l.db.name.as_str());
    let pooler = values
        .iter()
        .find(|v| message_is(v, &format!("pooler error: {failed}")))
        .ok_or_else(|| anyhow::anyhow!("no pooler error in:\n{log}"))?;
    assert_eq!(pooler["level"], "WARN");
    assert_ne!(pooler["conn"], attempt["conn"], "another client");
    Ok(())
}

/// logrotate's way: rename the logfile, SIGHUP; new lines go to a new file at the configured path and the
/// renamed one stops growing. A reload that names another logfile moves logging there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_logfile_and_a_reload_can_move_it() -> anyhow::Result<()> {
    let l = Logged::start("logs_rotate", "").await?;
    let attempt = format!(
        "login attempt: db={} user={} tls=no replication=no",
        l.db.name, l.db.user
    );
    drop(l.client().await?);
    wait_until("the first login is logged", SHOWS, || {
        l.log().contains(&attempt)
    })
    .await?;

    let rotated = l.dir.join("pgwarden.log.1");
    std::fs::rename(l.logfile(), &rotated)?;
    l.reload("", 2).await?;
    let old = read_lossy(&rotated);
    let client = l.client().await?;
    wait_until("the second login reaches the new file", SHOWS, || {
        l.log().contains(&attempt)
    })
    .await?;
    drop(client);
    assert_eq!(l.log().matches(&attempt).count(), 1, "{}", l.log());
    assert!(!l.log().contains("listening on"), "a new file: {}", l.log());
    assert_eq!(
        read_lossy(&rotated),
        old,
        "the renamed file stopped growing"
    );
    assert_eq!(old.matches(&attempt).count(), 1, "{old}");

    let moved = l.dir.join("moved.log");
    l.write(&format!("logfile = {}", moved.display()))?;
    l.p.signal(Signal::SIGHUP)?;
    wait_until("the reload is logged in the new logfile", SHOWS, || {
        read_lossy(&moved).contains("configuration reloaded (generation 3)")
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; old log:\n{}", l.log()))?;
    let before = l.log();
    drop(l.client().await?);
    wait_until("the third login reaches the moved file", SHOWS, || {
        read_lossy(&moved).contains(&attempt)
    })
    .await?;
    assert_eq!(l.log(), before, "the old path no longer grows");
    Ok(())
}

/// `verbose` is applied on reload: debug lines (a server connection being launched) appear only after
/// `verbose = 1` is reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_follows_a_reload() -> anyhow::Result<()> {
    let l = Logged::start("logs_verbose", "").await?;
    let debug_launch = |log: &str| {
        log.lines()
            .filter(|line| {
                line.contains(" DEBUG ") && line.contains("launching new connection to server")
            })
            .count()
    };
    let first = l.client().await?;
    // Session pooling: from its first query on, `first` holds its server.
    first.query_one("select 1::int4", &[]).await?;
    wait_until("a server connection is logged", SHOWS, || {
        l.log().contains("new connection to server (from")
    })
    .await?;
    assert_eq!(debug_launch(&l.log()), 0, "{}", l.log());

    l.reload("verbose = 1", 2).await?;
    // `first` holds the only server: this client needs a new one.
    let second = l.client().await?;
    assert_eq!(
        second
            .query_one("select 1::int4", &[])
            .await?
            .get::<_, i32>(0),
        1
    );
    wait_until("the launch is logged at debug level", SHOWS, || {
        debug_launch(&l.log()) == 1
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", l.log()))?;
    drop(first);
    Ok(())
}

/// Server logins that fail are logged in PgBouncer's words: `server login failed: FATAL <PostgreSQL's
/// message>`, the server connection's `closing because: login failed` or `connect failed`, and the client's
/// `closing because:` with PostgreSQL's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_server_logins_are_logged() -> anyhow::Result<()> {
    let dead_port = free_port()?;
    let l = Logged::start_with(
        "logs_srvfail",
        |pg, db| {
            format!(
                "{0}_missing = host=127.0.0.1 port={1} dbname={0}_missing\n\
                 {0}_dead = host=127.0.0.1 port={dead_port} dbname={0}\n",
                db.name,
                pg.port()
            )
        },
        "",
    )
    .await?;
    let (db, user) = (l.db.name.clone(), l.db.user.clone());
    let missing = format!("{db}_missing");
    let refused = connect("127.0.0.1", l.port, &user, Some(&l.db.password), &missing).await;
    let err = match refused {
        Ok(_) => anyhow::bail!("logged in to a database that does not exist"),
        Err(e) => format!("{e:#}"),
    };
    let does_not_exist = format!("database \"{missing}\" does not exist");
    assert!(err.contains(&does_not_exist), "{err}");
    let server_failed = format!("server login failed: FATAL {does_not_exist}");
    let server_line = |reason: &str, port: u16| {
        let addr = format!("127.0.0.1:{port}");
        let (reason, user) = (reason.to_owned(), user.clone());
        move |c: &ConnLine| {
            c.kind == 'S' && c.addr == addr && c.user == user && is_closing(&c.message, &reason)
        }
    };
    let login_failed = server_line("login failed", l.pg.port());
    wait_until("the failed server login is logged", SHOWS, || {
        let log = l.log();
        let lines = conn_lines(&log);
        log.contains(&server_failed)
            && lines.iter().any(|c| login_failed(c) && c.db == missing)
            && lines.iter().any(|c| {
                c.kind == 'C' && c.db == missing && is_closing(&c.message, &does_not_exist)
            })
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", l.log()))?;

    // Nothing listens on the dead port: the client waits (a connect failure is retried), the log says why.
    let dead = format!("{db}_dead");
    let (port, password) = (l.port, l.db.password.clone());
    let user = l.db.user.clone();
    let waiting = tokio::spawn(async move {
        let _ = connect("127.0.0.1", port, &user, Some(&password), &dead).await;
    });
    let connect_failed = server_line("connect failed", dead_port);
    let res = wait_until("the failed connect is logged", SHOWS, || {
        conn_lines(&l.log()).iter().any(&connect_failed)
    })
    .await;
    waiting.abort();
    res.map_err(|e| anyhow::anyhow!("{e}; log:\n{}", l.log()))?;
    Ok(())
}
