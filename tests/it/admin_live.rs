//! SHOW CLIENTS and SHOW POOLS following what clients do after login: an application_name changed with `SET`
//! or `RESET` (tokio-postgres and psycopg 3, transaction and session pooling), and a cancel request listed
//! while pgwarden forwards it (`waiting_cancel_req` until its connection to PostgreSQL is open,
//! `active_cancel_req` until PostgreSQL has acted on it), as PgBouncer lists them.

use std::sync::Arc;
use std::time::Duration;

use pgwarden_tests::clients::Python;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

use super::admin::{
    ADMIN, ADMIN_PW, Table, WAIT, base_settings, console, eventually, table, userlist,
};

/// The rows of `t` whose `column` is `value`.
fn rows_where<'a>(t: &'a Table, column: &str, value: &str) -> Vec<&'a Vec<Option<String>>> {
    let i = t.col(column);
    t.rows
        .iter()
        .filter(|r| r[i].as_deref() == Some(value))
        .collect()
}

fn cell(t: &Table, row: &[Option<String>], column: &str) -> String {
    row[t.col(column)].clone().unwrap_or_default()
}

/// A client of pool `alias` that names itself `app`.
async fn app_client(
    pooler: &Pooler,
    db: &TestDb,
    alias: &str,
    app: &str,
) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pooler.port)
        .user(&db.user)
        .password(&db.password)
        .dbname(alias)
        .application_name(app);
    pgwarden_tests::clients::connect_config(&config).await
}

/// The application_name SHOW CLIENTS gives the clients of `alias`, sorted.
async fn listed_apps(admin: &Client, alias: &str) -> anyhow::Result<Vec<String>> {
    let t = table(admin, "SHOW CLIENTS").await?;
    let mut apps: Vec<String> = rows_where(&t, "database", alias)
        .into_iter()
        .map(|r| cell(&t, r, "application_name"))
        .collect();
    apps.sort();
    Ok(apps)
}

/// `SET application_name` and `RESET application_name` show in SHOW CLIENTS (and in SHOW SERVERS for the
/// server the client holds), in transaction and in session pooling: PgBouncer takes the value from the
/// server's ParameterStatus. Without it the login's name stays listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_follows_set_and_reset() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "adm_appname", PasswordEncryption::Md5)?;
    let tx = format!("{}_tx", db.name);
    let sess = format!("{}_sess", db.name);
    let databases = format!(
        "{tx} = host=127.0.0.1 port={port} dbname={name} pool_mode=transaction\n\
         {sess} = host=127.0.0.1 port={port} dbname={name} pool_mode=session",
        port = pg.port(),
        name = db.name
    );
    let pooler = Pooler::start(&databases, &base_settings(""), &userlist(&db)).await?;
    let admin = console(&pooler).await?;
    for alias in [&tx, &sess] {
        let client = app_client(&pooler, &db, alias, "tp_start").await?;
        let other = app_client(&pooler, &db, alias, "tp_other").await?;
        client.simple_query("select 1").await?;
        assert_eq!(listed_apps(&admin, alias).await?, ["tp_other", "tp_start"]);

        client
            .simple_query("SET application_name = 'tp_set'")
            .await?;
        assert_eq!(
            listed_apps(&admin, alias).await?,
            ["tp_other", "tp_set"],
            "{alias}: after SET"
        );
        // Inside a transaction, the server it holds carries the client's new name too.
        client.simple_query("BEGIN").await?;
        client
            .simple_query("SET application_name = 'tp_in_tx'")
            .await?;
        let t = table(&admin, "SHOW SERVERS").await?;
        assert_eq!(
            rows_where(&t, "application_name", "tp_in_tx").len(),
            1,
            "{alias}: {t:?}"
        );
        client.simple_query("COMMIT").await?;
        assert_eq!(
            listed_apps(&admin, alias).await?,
            ["tp_in_tx", "tp_other"],
            "{alias}: after COMMIT"
        );

        client.simple_query("RESET application_name").await?;
        let shown: String = client.query_one("SHOW application_name", &[]).await?.get(0);
        assert_ne!(shown, "tp_in_tx", "{alias}: RESET changed nothing?");
        let mut expect = vec![shown.clone(), "tp_other".to_owned()];
        expect.sort();
        assert_eq!(
            listed_apps(&admin, alias).await?,
            expect,
            "{alias}: after RESET the client sees {shown:?}"
        );
        // The other client's name never moved.
        other.simple_query("select 1").await?;
        drop(other);
    }
    Ok(())
}

/// The same through psycopg 3 (transaction pooling): the script finds its own row of SHOW CLIENTS by its
/// local port after each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_follows_set_over_psycopg() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "adm_appname_py", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &super::admin::db_line(pg, &db),
        &base_settings("pool_mode = transaction"),
        &userlist(&db),
    )
    .await?;
    let results = Python::script("psycopg3_application_name.py")?
        .target("127.0.0.1", pooler.port, &db.user, &db.password, &db.name)
        .env("PGW_CONSOLE_USER", ADMIN)
        .env("PGW_CONSOLE_PASSWORD", ADMIN_PW)
        .run_results()
        .await?;
    let step = |name: &str| {
        results
            .iter()
            .find(|r| r.get("step").map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("no step {name} in {results:?}"))
            .clone()
    };
    let start = step("start");
    assert_eq!(
        (start["listed"].as_str(), start["rows"].as_str()),
        ("ps_start", "1")
    );
    assert_eq!(step("set")["listed"], "ps_set");
    let reset = step("reset");
    assert_ne!(reset["shown"], "ps_set");
    assert_eq!(reset["listed"], reset["shown"], "{reset:?}");
    Ok(())
}

/// What the proxy in front of PostgreSQL does with new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Accept and forward.
    Pass,
    /// Do not accept: with a backlog of one, connections beyond the first hang in connect.
    Shut,
    /// Accept but forward nothing until `Pass`.
    Hold,
}

/// A TCP proxy to PostgreSQL whose gate for new connections the test moves; open connections flow on.
struct GateProxy {
    port: u16,
    gate: watch::Sender<Gate>,
    /// True while the accept loop is parked by `Shut` (so a connection made now stays in the queue).
    parked: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl GateProxy {
    async fn start(upstream: u16) -> anyhow::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse()?)?;
        let port = socket.local_addr()?.port();
        // The smallest accept queue: once it holds one connection, further connects wait for accept.
        let listener = socket.listen(0)?;
        let (gate, rx) = watch::channel(Gate::Pass);
        let (parked_tx, parked) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, rx, parked_tx, upstream));
        Ok(Self {
            port,
            gate,
            parked,
            task,
        })
    }

    fn set(&self, gate: Gate) {
        self.gate.send_replace(gate);
    }

    /// Shuts the gate and returns once the accept loop has stopped accepting.
    async fn shut(&mut self) -> anyhow::Result<()> {
        self.set(Gate::Shut);
        tokio::time::timeout(WAIT, self.parked.wait_for(|p| *p)).await??;
        Ok(())
    }
}

impl Drop for GateProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    mut rx: watch::Receiver<Gate>,
    parked: watch::Sender<bool>,
    upstream: u16,
) {
    loop {
        if *rx.borrow_and_update() == Gate::Shut {
            parked.send_replace(true);
            if rx.wait_for(|g| *g != Gate::Shut).await.is_err() {
                return;
            }
            parked.send_replace(false);
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let Ok((client, _)) = accepted else { return };
        let mut gate = rx.clone();
        tokio::spawn(async move {
            if gate.wait_for(|g| *g == Gate::Pass).await.is_err() {
                return;
            }
            if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                let (mut c, mut s) = (client, server);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
            }
        });
    }
}

/// Polls SHOW CLIENTS until a row satisfies `pred`; returns the table and that row's `id`.
async fn wait_client(
    admin: &Client,
    what: &str,
    pred: impl Fn(&Table, &[Option<String>]) -> bool,
) -> anyhow::Result<(Table, String)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let t = table(admin, "SHOW CLIENTS").await?;
        if let Some(r) = t.rows.iter().find(|r| pred(&t, r)) {
            let id = cell(&t, r, "id");
            return Ok((t, id));
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}: {t:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The cancel-request columns of SHOW POOLS for `alias`: (cl_active_cancel_req, cl_waiting_cancel_req).
async fn pool_cancels(admin: &Client, alias: &str) -> anyhow::Result<(String, String)> {
    let t = table(admin, "SHOW POOLS").await?;
    Ok((
        t.get(alias, "cl_active_cancel_req"),
        t.get(alias, "cl_waiting_cancel_req"),
    ))
}

/// A cancel request is listed in SHOW CLIENTS under its target's pool (its own id and address, the target's
/// user) and counted in SHOW POOLS while it is forwarded: `waiting_cancel_req` while pgwarden's connection
/// to PostgreSQL is not open yet (here: a proxy whose accept queue is full), `active_cancel_req` once the
/// cancel is sent and until PostgreSQL closes that connection (here: the proxy holds it); then it is gone
/// and the query is cancelled. The client whose query it cancels stays listed as `active` throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_in_flight_is_listed_waiting_then_active() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "adm_cancel_req", PasswordEncryption::Md5)?;
    let mut proxy = GateProxy::start(pg.port()).await?;
    let databases = format!(
        "{name} = host=127.0.0.1 port={} dbname={name}",
        proxy.port,
        name = db.name
    );
    let pooler = Pooler::start(
        &databases,
        &base_settings("pool_mode = transaction\ncancel_wait_timeout = 30"),
        &userlist(&db),
    )
    .await?;
    let admin = console(&pooler).await?;
    let client = Arc::new(app_client(&pooler, &db, &db.name, "sleeper").await?);
    client.simple_query("select 1").await?;
    assert_eq!(
        pool_cancels(&admin, &db.name).await?,
        ("0".into(), "0".into())
    );

    let sleeper = Arc::clone(&client);
    let query = tokio::spawn(async move { sleeper.simple_query("select pg_sleep(60)").await });
    wait_client(&admin, "the sleeper to hold a server", |t, r| {
        cell(t, r, "application_name") == "sleeper" && cell(t, r, "state") == "active"
    })
    .await?;

    // Shut the gate and fill the proxy's accept queue: pgwarden's connect for the cancel will wait.
    proxy.shut().await?;
    let filler = TcpStream::connect(("127.0.0.1", proxy.port)).await?;
    let token = client.cancel_token();
    let cancel = tokio::spawn(async move { token.cancel_query(NoTls).await });

    let (t, cancel_id) = wait_client(&admin, "a waiting_cancel_req row", |t, r| {
        cell(t, r, "state") == "waiting_cancel_req"
    })
    .await?;
    let rows = rows_where(&t, "state", "waiting_cancel_req");
    assert_eq!(rows.len(), 1, "{t:?}");
    let r = rows[0];
    assert_eq!(cell(&t, r, "database"), db.name);
    assert_eq!(cell(&t, r, "user"), db.user);
    assert_eq!(cell(&t, r, "type"), "C");
    assert_eq!(cell(&t, r, "addr"), "127.0.0.1");
    assert_eq!(cell(&t, r, "link"), "");
    assert_eq!(
        pool_cancels(&admin, &db.name).await?,
        ("0".into(), "1".into())
    );
    // The cancelled client is still the active one, and the request is no client of SOCKETS' lists.
    let t = table(&admin, "SHOW CLIENTS").await?;
    assert_eq!(
        cell(
            &t,
            rows_where(&t, "application_name", "sleeper")[0],
            "state"
        ),
        "active"
    );
    assert_ne!(
        cell(&t, rows_where(&t, "application_name", "sleeper")[0], "id"),
        cancel_id
    );
    let s = table(&admin, "SHOW SOCKETS").await?;
    assert!(rows_where(&s, "id", &cancel_id).is_empty(), "{s:?}");

    // Accept, but hold what comes: the cancel is sent and waits for PostgreSQL.
    proxy.set(Gate::Hold);
    drop(filler);
    wait_client(&admin, "the cancel request to turn active", |t, r| {
        cell(t, r, "id") == cancel_id && cell(t, r, "state") == "active_cancel_req"
    })
    .await?;
    assert_eq!(
        pool_cancels(&admin, &db.name).await?,
        ("1".into(), "0".into())
    );
    assert!(
        !query.is_finished(),
        "the query ended before the cancel reached PostgreSQL"
    );

    // Let it through: the query is cancelled and the request leaves the lists.
    proxy.set(Gate::Pass);
    let err = tokio::time::timeout(WAIT, query)
        .await??
        .expect_err("the sleep was cancelled");
    let db_err = err.as_db_error().expect("a server error");
    assert_eq!(db_err.code().code(), "57014");
    assert_eq!(db_err.message(), "canceling statement due to user request");
    tokio::time::timeout(WAIT, cancel).await???;
    eventually("the cancel request leaves SHOW CLIENTS", || async {
        let t = table(&admin, "SHOW CLIENTS").await?;
        Ok(rows_where(&t, "id", &cancel_id).is_empty())
    })
    .await?;
    assert_eq!(
        pool_cancels(&admin, &db.name).await?,
        ("0".into(), "0".into())
    );
    // The client goes on.
    client.simple_query("select 1").await?;
    Ok(())
}

/// KILL_CLIENT of a cancel request being forwarded abandons it (PgBouncer finds a cancel request's id too):
/// it leaves the lists, and the query it aimed at runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_client_ends_a_cancel_request() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "adm_cancel_kill", PasswordEncryption::Md5)?;
    let proxy = GateProxy::start(pg.port()).await?;
    let databases = format!(
        "{name} = host=127.0.0.1 port={} dbname={name}",
        proxy.port,
        name = db.name
    );
    let pooler = Pooler::start(
        &databases,
        &base_settings("pool_mode = transaction\ncancel_wait_timeout = 30"),
        &userlist(&db),
    )
    .await?;
    let admin = console(&pooler).await?;
    let client = Arc::new(app_client(&pooler, &db, &db.name, "sleeper").await?);
    let sleeper = Arc::clone(&client);
    let query = tokio::spawn(async move { sleeper.simple_query("select pg_sleep(2)").await });
    wait_client(&admin, "the sleeper to hold a server", |t, r| {
        cell(t, r, "application_name") == "sleeper" && cell(t, r, "state") == "active"
    })
    .await?;
    proxy.set(Gate::Hold);
    let token = client.cancel_token();
    let _cancel = tokio::spawn(async move { token.cancel_query(NoTls).await });
    let (_, cancel_id) = wait_client(&admin, "an active_cancel_req row", |t, r| {
        cell(t, r, "state") == "active_cancel_req"
    })
    .await?;
    admin
        .simple_query(&format!("KILL_CLIENT {cancel_id}"))
        .await?;
    eventually("the killed cancel request leaves SHOW CLIENTS", || async {
        let t = table(&admin, "SHOW CLIENTS").await?;
        Ok(rows_where(&t, "id", &cancel_id).is_empty())
    })
    .await?;
    assert_eq!(
        pool_cancels(&admin, &db.name).await?,
        ("0".into(), "0".into())
    );
    // The proxy still holds what pgwarden sent (it never reaches PostgreSQL): the sleep completes.
    let done = tokio::time::timeout(Duration::from_secs(10), query).await??;
    assert!(done.is_ok(), "{done:?}");
    Ok(())
}
