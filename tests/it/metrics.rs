//! The HTTP listener for operators (`metrics_listen_addr`): `/metrics` read by Prometheus' own text parser
//! (prometheus_client, from the drivers' virtualenv: a missing parser fails the test), with values that
//! follow what clients do; `/healthz` and `/readyz` through PAUSE and a PostgreSQL that goes away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use pgwarden_tests::clients::Python;
use pgwarden_tests::pg::{ClusterOptions, PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Long enough for anything these tests wait for (a readiness answer is cached for 1 s).
const WAIT: Duration = Duration::from_secs(8);

const ADMIN: &str = "admin";
const ADMIN_PW: &str = "admin-secret";

/// One HTTP request to `127.0.0.1:port`: the status and the body.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .with_context(|| format!("connecting to the metrics port {port}"))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: pgwarden\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw)).await??;
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of head in {text:?}"))?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no Content-Length in {head:?}"))?;
    assert_eq!(length, body.len(), "Content-Length of {path}");
    Ok((status, body.to_owned()))
}

/// Polls `path` every 25 ms until its status is `status`; returns the body.
pub async fn wait_status(port: u16, path: &str, status: u16) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (got, body) = http_get(port, path).await?;
        if got == status {
            return Ok(body);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{path} still answers {got} ({body:?}), expected {status}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A scrape as Prometheus' parser read it: series (`name{labels sorted}`) → value, family → type.
#[derive(Debug)]
pub struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// GET /metrics, parsed by `prom_parse.py` (prometheus_client's parser, plus checks of HELP/TYPE,
    /// duplicates and histogram consistency); `dir` holds the text for the script.
    pub async fn take(port: u16, dir: &std::path::Path) -> anyhow::Result<Self> {
        let (status, body) = http_get(port, "/metrics").await?;
        assert_eq!(status, 200, "{body}");
        let file = dir.join(format!("metrics-{}.txt", free_port()?));
        std::fs::write(&file, &body)?;
        let out = Python::script("prom_parse.py")?
            .arg(file.display().to_string())
            .run()
            .await?;
        out.ensure_success("prom_parse.py")?;
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in out.stdout.lines() {
            if let Some(rest) = line.strip_prefix("SAMPLE ") {
                let (key, value) = rest.rsplit_once(' ').context("sample line")?;
                samples.insert(key.to_owned(), value.parse()?);
            } else if let Some(rest) = line.strip_prefix("TYPE ") {
                let (family, kind) = rest.split_once(' ').context("type line")?;
                types.insert(family.to_owned(), kind.to_owned());
            }
        }
        Ok(Self { samples, types })
    }

    /// The value of one series; labels in any order.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels = labels.to_vec();
        labels.sort_unstable();
        let key = format!(
            "{name}{{{}}}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("no series {key} in the scrape"))
    }

    /// The family's type as the parser read it (counters are named without `_total`).
    pub fn kind(&self, family: &str) -> &str {
        self.types.get(family).map_or("(missing)", String::as_str)
    }
}

/// Settings turning the metrics listener on at `port`.
fn metrics_on(port: u16) -> String {
    format!("metrics_listen_addr = 127.0.0.1\nmetrics_listen_port = {port}\n")
}

fn db_line(pg: &PgCluster, name: &str, dbname: &str) -> String {
    format!("{name} = host=127.0.0.1 port={} dbname={dbname}", pg.port())
}

/// A pooler in front of its own test database on the shared cluster, with metrics on.
async fn start(prefix: &str, settings: &str) -> anyhow::Result<(TestDb, Pooler, u16)> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
    let port = free_port()?;
    let pooler = Pooler::start(
        &db_line(pg, &db.name, &db.name),
        &format!("auth_type = md5\n{}{settings}", metrics_on(port)),
        &db.userlist_line(),
    )
    .await?;
    Ok((db, pooler, port))
}

/// The labels of the test database's pool.
fn pool(db: &TestDb) -> [(&'static str, &str); 2] {
    [("database", &db.name), ("user", &db.user)]
}

/// Pool labels and one more.
fn with<'a>(
    labels: [(&'static str, &'a str); 2],
    extra: (&'static str, &'a str),
) -> [(&'static str, &'a str); 3] {
    [labels[0], labels[1], extra]
}

/// N transactions move the pool's counters by exactly N, the transaction histogram's `_count` equals the
/// transaction counter and the query histogram's the query counter, and every family is well-formed for
/// Prometheus' parser (HELP, TYPE, no duplicates, consistent histograms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_transactions_and_parse() -> anyhow::Result<()> {
    let (db, pooler, port) = start("met_tx", "pool_mode = transaction").await?;
    let client = pooler.connect_as(&db).await?;
    client.simple_query("select 1").await?;
    let p = pool(&db);
    let before = Scrape::take(port, &pooler.dir).await?;
    for (family, kind) in [
        ("pgwarden_pool_transactions", "counter"),
        ("pgwarden_pool_queries", "counter"),
        ("pgwarden_pool_received_bytes", "counter"),
        ("pgwarden_pool_clients", "gauge"),
        ("pgwarden_pool_servers", "gauge"),
        ("pgwarden_pool_max_wait_seconds", "gauge"),
        ("pgwarden_pool_transaction_duration_seconds", "histogram"),
        ("pgwarden_pool_query_duration_seconds", "histogram"),
        ("pgwarden_pool_wait_duration_seconds", "histogram"),
        ("pgwarden_errors", "counter"),
        ("pgwarden_pool_errors", "counter"),
        ("pgwarden_plugin_calls", "counter"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(before.kind(family), kind, "type of {family}");
    }
    assert_eq!(
        before.get("pgwarden_pool_clients", &with(p, ("state", "idle"))),
        1.0
    );

    const N: u32 = 7;
    for i in 0..N {
        let rows = client.simple_query(&format!("select {i}")).await?;
        assert_eq!(rows.len(), 3, "row, row description and command complete");
    }
    let counter = |s: &Scrape, name: &str| s.get(name, &p);
    let deadline = tokio::time::Instant::now() + WAIT;
    let after = loop {
        let s = Scrape::take(port, &pooler.dir).await?;
        let moved = counter(&s, "pgwarden_pool_transactions_total")
            - counter(&before, "pgwarden_pool_transactions_total");
        if moved >= f64::from(N) || tokio::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    assert_eq!(delta("pgwarden_pool_transactions_total"), f64::from(N));
    assert_eq!(delta("pgwarden_pool_queries_total"), f64::from(N));
    assert_eq!(
        delta("pgwarden_pool_server_assignments_total"),
        f64::from(N)
    );
    assert!(delta("pgwarden_pool_received_bytes_total") >= f64::from(N) * 14.0);
    assert!(delta("pgwarden_pool_sent_bytes_total") >= f64::from(N) * 40.0);
    assert_eq!(
        delta("pgwarden_pool_wait_duration_seconds_count"),
        f64::from(N),
        "one wait observation per checkout"
    );
    for (histogram, total) in [
        (
            "pgwarden_pool_transaction_duration_seconds",
            "pgwarden_pool_transactions_total",
        ),
        (
            "pgwarden_pool_query_duration_seconds",
            "pgwarden_pool_queries_total",
        ),
    ] {
        let count = counter(&after, &format!("{histogram}_count"));
        assert_eq!(count, counter(&after, total), "{histogram}_count");
        assert_eq!(
            after.get(&format!("{histogram}_bucket"), &with(p, ("le", "+Inf"))),
            count
        );
        assert!(counter(&after, &format!("{histogram}_sum")) > 0.0);
        // A local `select` takes far less than 30 s: everything is in a finite bucket.
        assert_eq!(
            after.get(&format!("{histogram}_bucket"), &with(p, ("le", "30"))),
            count
        );
    }
    assert_eq!(after.get("pgwarden_pools", &[]), 1.0);
    assert_eq!(after.get("pgwarden_clients", &[]), 1.0);
    assert_eq!(
        after.get("pgwarden_pool_servers", &with(p, ("state", "idle"))),
        1.0
    );
    assert_eq!(
        after.get(
            "pgwarden_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    Ok(())
}

/// A client queued for the pool's only server shows in the waiting gauge and the max wait, its holder as
/// active; when it gives up after query_wait_timeout (PgBouncer's FATAL), the pool's error counter says
/// so and the queue is empty again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_client_shows_then_its_timeout_counts() -> anyhow::Result<()> {
    let (db, pooler, port) = start(
        "met_wait",
        "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 2\nquery_wait_notify = 0",
    )
    .await?;
    let p = pool(&db);
    let holder = pooler.connect_as(&db).await?;
    holder.batch_execute("BEGIN; SELECT 1").await?;
    let waiter = pooler.connect_as(&db).await?;
    let waiting = tokio::spawn(async move { waiter.simple_query("select 2").await });

    let deadline = tokio::time::Instant::now() + WAIT;
    let s = loop {
        let s = Scrape::take(port, &pooler.dir).await?;
        if s.get("pgwarden_pool_clients", &with(p, ("state", "waiting"))) == 1.0 {
            break s;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the waiting client never showed: {s:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        s.get("pgwarden_pool_clients", &with(p, ("state", "active"))),
        1.0
    );
    assert_eq!(
        s.get("pgwarden_pool_clients", &with(p, ("state", "idle"))),
        0.0
    );
    assert_eq!(
        s.get("pgwarden_pool_servers", &with(p, ("state", "active"))),
        1.0
    );
    assert_eq!(
        s.get(
            "pgwarden_pool_errors_total",
            &with(p, ("kind", "query_wait_timeout"))
        ),
        0.0
    );
    // The wait is under way: the next scrape sees it grow past zero.
    let deadline = tokio::time::Instant::now() + WAIT;
    while Scrape::take(port, &pooler.dir)
        .await?
        .get("pgwarden_pool_max_wait_seconds", &p)
        <= 0.0
    {
        assert!(tokio::time::Instant::now() < deadline, "max wait stays 0");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let err = tokio::time::timeout(WAIT, waiting)
        .await??
        .expect_err("the waiter must time out");
    let e = err.as_db_error().context("a server error")?;
    assert_eq!(
        (e.code().code(), e.message()),
        ("08P01", "query_wait_timeout")
    );
    let s = Scrape::take(port, &pooler.dir).await?;
    assert_eq!(
        s.get(
            "pgwarden_pool_errors_total",
            &with(p, ("kind", "query_wait_timeout"))
        ),
        1.0
    );
    assert_eq!(
        s.get("pgwarden_pool_clients", &with(p, ("state", "waiting"))),
        0.0
    );
    assert_eq!(s.get("pgwarden_pool_max_wait_seconds", &p), 0.0);
    holder.batch_execute("COMMIT").await?;
    Ok(())
}

/// A query the readonly policy denies counts once as `policy_denial` and once in the plugin's denials; a
/// wrong password once as `auth_failed`; an unknown database once as `unknown_database`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_count_by_kind() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "met_err", PasswordEncryption::Md5)?;
    let ro = format!("{}_ro", db.name);
    let port = free_port()?;
    let pooler = Pooler::start_with_plugins(
        &format!(
            "{}\n{}",
            db_line(pg, &db.name, &db.name),
            db_line(pg, &ro, &db.name)
        ),
        &format!("auth_type = md5\n{}", metrics_on(port)),
        &db.userlist_line(),
        &format!("plugin.readonly.path = builtin:readonly\nplugin.readonly.databases = {ro}"),
    )
    .await?;
    let errors = |s: &Scrape, kind: &str| s.get("pgwarden_errors_total", &[("kind", kind)]);
    let before = Scrape::take(port, &pooler.dir).await?;
    for kind in ["policy_denial", "auth_failed", "unknown_database"] {
        assert_eq!(errors(&before, kind), 0.0, "{kind}");
    }

    let client = pooler.connect(&db.user, &db.password, &ro).await?;
    let err = client
        .simple_query("CREATE TABLE t (x int)")
        .await
        .expect_err("a write through the read-only alias");
    let e = err.as_db_error().context("a server error")?;
    assert_eq!(e.code().code(), "25006");
    assert_eq!(
        e.message(),
        "cannot execute CREATE in a read-only session (pgwarden readonly policy)"
    );
    client.simple_query("select 1").await?;

    let err = pooler
        .connect(&db.user, "wrong", &db.name)
        .await
        .expect_err("a wrong password");
    let e = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
        .context("a server error")?;
    assert_eq!(e.code().code(), "28P01");
    assert_eq!(
        e.message(),
        format!("password authentication failed for user \"{}\"", db.user)
    );
    let err = pooler
        .connect(&db.user, &db.password, "no_such_db")
        .await
        .expect_err("an unknown database");
    let e = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
        .context("a server error")?;
    assert_eq!(e.message(), "no such database: no_such_db");

    let after = Scrape::take(port, &pooler.dir).await?;
    assert_eq!(errors(&after, "policy_denial"), 1.0);
    assert_eq!(errors(&after, "policy_failure"), 0.0);
    assert_eq!(errors(&after, "auth_failed"), 1.0);
    assert_eq!(errors(&after, "unknown_database"), 1.0);
    let plugin = [("plugin", "readonly")];
    assert_eq!(after.get("pgwarden_plugin_denials_total", &plugin), 1.0);
    assert_eq!(after.get("pgwarden_plugin_allows_total", &plugin), 1.0);
    assert_eq!(after.get("pgwarden_plugin_calls_total", &plugin), 2.0);
    assert!(after.get("pgwarden_plugin_call_seconds_total", &plugin) > 0.0);
    Ok(())
}

/// `/healthz` is 200 throughout; `/readyz` is 200, 503 "paused" during the console's PAUSE, 200 after
/// RESUME, 503 naming the unreachable server while PostgreSQL is stopped (own cluster), 200 once it is
/// back. Unknown paths are 404, other methods 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_pause_and_postgres() -> anyhow::Result<()> {
    let pg = Arc::new(
        tokio::task::spawn_blocking(|| PgCluster::start(ClusterOptions::default())).await??,
    );
    let db = TestDb::create(&pg, "met_ready", PasswordEncryption::Md5)?;
    let port = free_port()?;
    let pooler = Pooler::start(
        &db_line(&pg, &db.name, &db.name),
        &format!(
            "auth_type = md5\nadmin_users = {ADMIN}\npool_mode = transaction\nserver_login_retry = 0.2\n{}",
            metrics_on(port)
        ),
        &format!("{}\"{ADMIN}\" \"{ADMIN_PW}\"\n", db.userlist_line()),
    )
    .await?;
    assert_eq!(http_get(port, "/healthz").await?, (200, "ok\n".to_owned()));
    assert_eq!(wait_status(port, "/readyz", 200).await?, "ready\n");
    assert_eq!(http_get(port, "/nope").await?.0, 404);
    let client = pooler.connect_as(&db).await?;
    client.simple_query("select 1").await?;

    let admin = pooler.connect(ADMIN, ADMIN_PW, "pgbouncer").await?;
    admin.simple_query("PAUSE").await?;
    assert_eq!(
        http_get(port, "/readyz").await?,
        (503, "not ready: paused\n".to_owned())
    );
    assert_eq!(http_get(port, "/healthz").await?.0, 200);
    let s = Scrape::take(port, &pooler.dir).await?;
    assert_eq!(s.get("pgwarden_paused", &[]), 1.0);
    admin.simple_query("RESUME").await?;
    assert_eq!(wait_status(port, "/readyz", 200).await?, "ready\n");

    tokio::task::spawn_blocking({
        let pg = Arc::clone(&pg);
        move || pg.stop()
    })
    .await??;
    let body = wait_status(port, "/readyz", 503).await?;
    let target = format!("127.0.0.1:{}", pg.port());
    assert!(
        body.starts_with(&format!(
            "not ready: database {}: cannot reach {target}: ",
            db.name
        )) && body.ends_with('\n')
            && body.lines().count() == 1,
        "{body:?}"
    );
    assert_eq!(http_get(port, "/healthz").await?.0, 200);

    tokio::task::spawn_blocking({
        let pg = Arc::clone(&pg);
        move || pg.start_again()
    })
    .await??;
    assert_eq!(wait_status(port, "/readyz", 200).await?, "ready\n");
    let client = pooler.connect_as(&db).await?;
    client.simple_query("select 1").await?;
    Ok(())
}

/// Only GET and HEAD (405 with Allow otherwise), HEAD without a body, 400 for what is not HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_head_and_garbage() -> anyhow::Result<()> {
    let (_db, _pooler, port) = start("met_http", "").await?;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        .await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    assert!(raw.starts_with("HTTP/1.1 405 "), "{raw}");
    assert!(raw.contains("\r\nAllow: GET, HEAD\r\n"), "{raw}");

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"HEAD /healthz HTTP/1.0\r\n\r\n").await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    assert!(raw.ends_with("\r\n\r\n"), "HEAD has no body: {raw:?}");

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"garbage\r\n\r\n").await?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).await?;
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    Ok(())
}
