//! Debian's `prometheus-pgbouncer-exporter` (1.7, a Python exporter; `.ci/run` installs it) reading pgwarden's
//! console over TCP as a `stats_users` user, side by side with Debian's PgBouncer (1.18, `/usr/sbin/pgbouncer`,
//! also installed by `.ci/run`) configured the same way.
//!
//! That exporter was written for PgBouncer 1.7 and reads four commands by column name. Two of them broke
//! with later PgBouncers: its SHOW STATS collector reads `total_requests`, which PgBouncer 1.8 replaced by
//! `total_xact_count`/`total_query_count`, and its SHOW DATABASES collector reads `reserve_pool`, which
//! PgBouncer 1.24 renamed `reserve_pool_size`. It registers its collectors at startup, so against any
//! PgBouncer since 1.8 the packaged program dies with `KeyError: 'total_requests'` before serving anything;
//! pgwarden has PgBouncer 1.25's columns, so it must die the same way (the first test: an earlier failure,
//! or a start, would mean pgwarden answers differently). The second test runs the exporter's own modules
//! with each collector guarded (tests/clients/python/pgbouncer_exporter_guarded.py: a failing collector logs
//! a line and exports nothing, the others go on) and compares what it serves: the SHOW POOLS and SHOW LISTS
//! collectors work on both and export the same names, with values for the test's pool that follow its
//! clients; the SHOW DATABASES collector works on PgBouncer 1.18 only (on 1.24+ it fails as on pgwarden),
//! and the SHOW STATS one on neither. pgwarden keeps 1.25's column names rather than 1.18's: exporters
//! written for current PgBouncers read those.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb, free_port, fresh_dir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_postgres::Client;

use super::admin::{WATCHER, WATCHER_PW, base_settings, db_line, userlist};

const EXPORTER: &str = "/usr/bin/prometheus-pgbouncer-exporter";
const PGBOUNCER: &str = "/usr/sbin/pgbouncer";
/// The interpreter that has the exporter's Debian package and its dependencies (not the drivers' venv).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
const WAIT: Duration = Duration::from_secs(10);

/// The `[pgbouncer]` settings both poolers run with.
const SETTINGS: &str = "pool_mode = transaction\ndefault_pool_size = 1\nreserve_pool_size = 0";

/// Debian's PgBouncer on a free port, with `ini_body` plus its listener lines; killed on drop. As root it
/// is started with `-u postgres` (it refuses to run as root), the way the harness runs PostgreSQL.
struct PgBouncer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    async fn start(databases: &str, settings: &str, userlist: &str) -> anyhow::Result<Self> {
        let dir = fresh_dir("pgbouncer")?;
        let port = free_port()?;
        let auth = dir.join("userlist.txt");
        std::fs::write(&auth, userlist)?;
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n{databases}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
                 unix_socket_dir =\nauth_file = {}\n{settings}\n",
                auth.display()
            ),
        )?;
        let mut cmd = Command::new(PGBOUNCER);
        if nix::unistd::geteuid().is_root() {
            cmd.args(["-u", "postgres"]);
        }
        cmd.arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("pgbouncer.log"))?)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {PGBOUNCER} (Debian package pgbouncer)"))?;
        let mut me = Self { port, dir, child };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = me.child.try_wait()? {
                bail!("pgbouncer exited ({status}):\n{}", me.log());
            }
            if pgwarden_tests::clients::connect(
                "127.0.0.1",
                port,
                WATCHER,
                Some(WATCHER_PW),
                "pgbouncer",
            )
            .await
            .is_ok()
            {
                return Ok(me);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("pgbouncer never answered on {port}:\n{}", me.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }

    async fn connect(&self, db: &TestDb) -> anyhow::Result<Client> {
        pgwarden_tests::clients::connect(
            "127.0.0.1",
            self.port,
            &db.user,
            Some(&db.password),
            &db.name,
        )
        .await
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A command with the libpq environment scrubbed and the stats user's password in `PGPASSWORD` (the
/// exporter takes no password of its own: libpq reads it there).
fn exporter_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "PGPASSFILE",
        "PGSERVICE",
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGSSLMODE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGPASSWORD", WATCHER_PW)
        .env("PGPASSFILE", "/nonexistent/pgwarden-no-pgpass")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs the packaged exporter against the console on `port` until it exits (it must, see the module
/// comment); returns its exit success and stderr.
async fn run_packaged(port: u16, dir: &Path) -> anyhow::Result<(bool, String)> {
    let config = dir.join(format!("exporter-{port}.conf"));
    std::fs::write(
        &config,
        format!(
            "pgbouncer-host = 127.0.0.1\npgbouncer-port = {port}\npgbouncer-user = {WATCHER}\n\
             host = 127.0.0.1\nport = {}\n",
            free_port()?
        ),
    )?;
    let mut cmd = exporter_command(EXPORTER);
    cmd.arg("-c").arg(&config);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| {
        format!("starting {EXPORTER} (Debian package prometheus-pgbouncer-exporter)")
    })?;
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .context("the packaged exporter is still running: it served something")??;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The exporter's modules with guarded collectors, serving on a free port; killed on drop.
struct Guarded {
    http: u16,
    stderr: PathBuf,
    _child: Child,
}

impl Guarded {
    async fn start(console_port: u16, dir: &Path) -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("clients/python/pgbouncer_exporter_guarded.py");
        let http = free_port()?;
        let stderr = dir.join(format!("guarded-{console_port}.err"));
        let mut cmd = exporter_command(SYSTEM_PYTHON);
        cmd.arg(&script)
            .env("PGW_HOST", "127.0.0.1")
            .env("PGW_PORT", console_port.to_string())
            .env("PGW_USER", WATCHER)
            .env("PGW_HTTP_PORT", http.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?);
        let mut child = cmd.spawn().context("starting the guarded exporter")?;
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", http))
            .await
            .is_err()
        {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the guarded exporter exited ({status}):\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the guarded exporter never listened on {http}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            http,
            stderr,
            _child: child,
        })
    }

    /// GET /metrics: every sample, by `name{labels}` as exposed.
    async fn scrape(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.http)).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: exporter\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut raw)).await??;
        let text = String::from_utf8(raw)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("no end of head in {text:?}"))?;
        anyhow::ensure!(head.contains(" 200 "), "scrape answered {head:?}");
        let mut samples = BTreeMap::new();
        for line in body
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (key, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("bad sample line {line:?}"))?;
            samples.insert(key.to_owned(), value.parse::<f64>()?);
        }
        Ok(samples)
    }

    /// The collectors' failures so far.
    fn errors(&self) -> BTreeSet<String> {
        std::fs::read_to_string(&self.stderr)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("EXPORTER-ERROR "))
            .map(str::to_owned)
            .collect()
    }
}

/// The metric names of a scrape.
fn names(samples: &BTreeMap<String, f64>) -> BTreeSet<String> {
    samples
        .keys()
        .map(|k| k.split('{').next().unwrap_or(k).to_owned())
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

/// Both poolers in front of the test's database, configured alike.
async fn both(prefix: &str) -> anyhow::Result<(TestDb, Pooler, PgBouncer)> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
    let databases = db_line(pg, &db);
    let pooler = Pooler::start(&databases, &base_settings(SETTINGS), &userlist(&db)).await?;
    let pgbouncer = PgBouncer::start(&databases, &base_settings(SETTINGS), &userlist(&db)).await?;
    Ok((db, pooler, pgbouncer))
}

/// The packaged exporter dies at startup on PgBouncer 1.18 with `KeyError: 'total_requests'` (its SHOW STATS
/// collector predates PgBouncer 1.8's columns), and on pgwarden the same way at the same place: it logged in
/// as the stats user over TCP and read SHOW STATS rows with PgBouncer's columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packaged_exporter_fails_on_pgwarden_as_on_pgbouncer() -> anyhow::Result<()> {
    let (db, pooler, pgbouncer) = both("exp_packaged").await?;
    // Pools exist on both (PgBouncer makes one at a client's first login).
    pooler
        .connect_as(&db)
        .await?
        .simple_query("select 1")
        .await?;
    pgbouncer
        .connect(&db)
        .await?
        .simple_query("select 1")
        .await?;

    let (ok_b, err_b) = run_packaged(pgbouncer.port, &pgbouncer.dir).await?;
    let (ok_w, err_w) = run_packaged(pooler.port, &pooler.dir).await?;
    assert!(!ok_b && !ok_w, "pgbouncer:\n{err_b}\npgwarden:\n{err_w}");
    let last = |e: &str| e.trim_end().lines().last().unwrap_or_default().to_owned();
    assert_eq!(last(&err_b), "KeyError: 'total_requests'", "{err_b}");
    assert_eq!(last(&err_w), last(&err_b), "pgwarden:\n{err_w}");
    for err in [&err_b, &err_w] {
        assert!(
            err.contains("REGISTRY.register(StatsCollector("),
            "failed elsewhere than SHOW STATS:\n{err}"
        );
        assert!(!err.contains("OperationalError"), "{err}");
    }
    Ok(())
}

/// The exporter's collectors, guarded, against both: every metric name exported from PgBouncer 1.18 is
/// exported from pgwarden but the SHOW DATABASES collector's two (1.24's rename), the collectors fail as
/// described above and no other way, and the values for the test's pool follow its clients on both (one
/// active and one waiting client while the only server is held, then two active); SHOW LISTS' counts are
/// sane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_exporter_reads_pgwarden_as_pgbouncer() -> anyhow::Result<()> {
    let (db, pooler, pgbouncer) = both("exp_guarded").await?;
    let pool_labels = format!("{{database=\"{}\",user=\"{}\"}}", db.name, db.user);
    let db_labels = format!("{{database=\"{}\"}}", db.name);

    let mut scrapes = Vec::new();
    for (name, port, dir) in [
        ("pgbouncer", pgbouncer.port, pgbouncer.dir.clone()),
        ("pgwarden", pooler.port, pooler.dir.clone()),
    ] {
        let (user, password) = (db.user.as_str(), Some(db.password.as_str()));
        let holder =
            pgwarden_tests::clients::connect("127.0.0.1", port, user, password, &db.name).await?;
        let waiter = std::sync::Arc::new(
            pgwarden_tests::clients::connect("127.0.0.1", port, user, password, &db.name).await?,
        );
        holder.simple_query("BEGIN; select 1").await?;
        let w = std::sync::Arc::clone(&waiter);
        let waiting = tokio::spawn(async move { w.simple_query("select 1").await });

        let exporter = Guarded::start(port, &dir).await?;
        // The waiter queues behind the one server the holder keeps.
        let deadline = tokio::time::Instant::now() + WAIT;
        let held = loop {
            let s = exporter.scrape().await?;
            if s.get(&format!("pgbouncer_waiting_clients{pool_labels}")) == Some(&1.0) {
                break s;
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{name}: no waiting client in {s:#?}\n{:?}",
                    exporter.errors()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let errors = exporter.errors();
        assert_eq!(
            errors.iter().map(String::as_str).collect::<Vec<_>>(),
            expected_errors(name),
            "{name}"
        );
        assert_eq!(
            sample(&held, &format!("pgbouncer_active_clients{pool_labels}")),
            1.0,
            "{name}"
        );
        if name == "pgbouncer" {
            // SHOW DATABASES still had `reserve_pool` in 1.18 (see DATABASES_COLLECTOR).
            assert_eq!(
                sample(&held, &format!("pgbouncer_pool_size{db_labels}")),
                1.0
            );
            assert_eq!(
                sample(&held, &format!("pgbouncer_reserve_pool{db_labels}")),
                0.0
            );
        }
        holder.simple_query("COMMIT").await?;
        tokio::time::timeout(WAIT, waiting).await???;
        let after = exporter.scrape().await?;
        assert_eq!(
            sample(&after, &format!("pgbouncer_active_clients{pool_labels}")),
            2.0,
            "{name}: both logged in, neither waiting"
        );
        assert_eq!(
            sample(&after, &format!("pgbouncer_waiting_clients{pool_labels}")),
            0.0,
            "{name}"
        );
        for count in ["databases", "users", "pools", "used_clients"] {
            let v = sample(&after, &format!("pgbouncer_{count}"));
            assert!(v >= 1.0, "{name}: pgbouncer_{count} = {v}");
        }
        // The holder, the waiter and the exporter's own console connection.
        assert!(sample(&after, "pgbouncer_used_clients") >= 3.0, "{name}");
        assert!(
            sample(&after, "pgbouncer_databases") >= 2.0,
            "{name}: the pool's and pgbouncer"
        );
        scrapes.push((name, after, exporter.errors()));
    }
    let (_, bouncer, bouncer_errors) = &scrapes[0];
    let (_, warden, warden_errors) = &scrapes[1];
    assert!(names(bouncer).len() >= 10, "{bouncer:#?}");
    // Every name but the two of the collector that 1.24's column rename breaks.
    let missing: Vec<String> = names(bouncer).difference(&names(warden)).cloned().collect();
    assert_eq!(missing, DATABASES_METRICS, "pgwarden lacks {missing:?}");
    assert!(warden_errors.is_superset(bouncer_errors));
    // The same series for the test's pool on both (SHOW POOLS' collector), and SHOW LISTS' names.
    let ours = |s: &BTreeMap<String, f64>| -> BTreeSet<String> {
        s.keys()
            .filter(|k| k.contains(&format!("database=\"{}\"", db.name)))
            .filter(|k| {
                !DATABASES_METRICS
                    .iter()
                    .any(|m| k.starts_with(&format!("{m}{{")))
            })
            .cloned()
            .collect()
    };
    assert_eq!(ours(warden), ours(bouncer));
    assert_eq!(ours(warden).len(), 2, "{warden:#?}");
    Ok(())
}

/// The exporter's SHOW STATS collector reads `total_requests` (gone since PgBouncer 1.8).
const STATS_COLLECTOR: &str =
    "EXPORTER-ERROR collector=StatsCollector error=KeyError('total_requests')";
/// Its SHOW DATABASES collector reads `reserve_pool`, which PgBouncer 1.24 renamed `reserve_pool_size`: it
/// works on Debian's PgBouncer 1.18 and fails on PgBouncer 1.24+ and on pgwarden (1.25's columns).
const DATABASES_COLLECTOR: &str =
    "EXPORTER-ERROR collector=DatabasesCollector error=KeyError('reserve_pool')";
/// The metrics that collector exports.
const DATABASES_METRICS: [&str; 2] = ["pgbouncer_pool_size", "pgbouncer_reserve_pool"];

/// The collectors that fail on each.
fn expected_errors(target: &str) -> Vec<&'static str> {
    if target == "pgbouncer" {
        vec![STATS_COLLECTOR]
    } else {
        // Sorted as the set of lines is.
        vec![DATABASES_COLLECTOR, STATS_COLLECTOR]
    }
}
