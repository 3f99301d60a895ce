//! Plugins written in JavaScript (componentize-js) and Python (componentize-py): built by their own scripts
//! under examples/plugins/, then loaded, swapped on reload and made to fail through the pooler, with real
//! clients, like the Rust ones.
//!
//! The components are large (SpiderMonkey or CPython inside) and take seconds to compile, so this module
//! builds them once per test run (not at all while each .wasm is newer than its sources) and compiles them
//! once into a compile cache its poolers share (`plugin_cache_dir`); the test of the caches themselves uses a
//! cache directory of its own. A missing toolchain fails every test here with the build script's message:
//! examples/plugins/setup.sh installs the toolchains (.ci/run runs it).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use pgwarden::plugin::PluginEngine;
use pgwarden_tests::clients::Psql;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb, fresh_dir, write_config_with_pgwarden};
use tokio_postgres::{Client, SimpleQueryMessage};

/// One example plugin: its directory under examples/plugins/, the files its build reads (besides
/// wit/plugin.wit), and the component its build.sh writes there.
struct Example {
    name: &'static str,
    sources: &'static [&'static str],
    output: &'static str,
}

const JS_POLICY: Example = Example {
    name: "js-policy",
    sources: &["policy.js", "package.json", "package-lock.json", "build.sh"],
    output: "js-policy.wasm",
};

const PY_ROUTER: Example = Example {
    name: "py-router",
    sources: &["app.py", "requirements.txt", "build.sh"],
    output: "py-router.wasm",
};

/// Writes a measurement (build, compile, reload and call times) to the test output: they are logged for the
/// reader, never asserted.
#[allow(clippy::print_stderr)]
fn report(line: std::fmt::Arguments<'_>) {
    eprintln!("polyglot: {line}");
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn modified(path: &Path) -> Result<SystemTime, String> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs the example's build.sh unless its component is newer than every source; returns the component.
fn build(example: &Example) -> Result<PathBuf, String> {
    let root = repo_root();
    let dir = root.join("examples/plugins").join(example.name);
    let output = dir.join(example.output);
    let mut newest = modified(&root.join("wit/plugin.wit"))?;
    for source in example.sources {
        newest = newest.max(modified(&dir.join(source))?);
    }
    if modified(&output).is_ok_and(|built| built > newest) {
        report(format_args!("{} is up to date", output.display()));
        return Ok(output);
    }
    let started = Instant::now();
    let run = std::process::Command::new("bash")
        .arg(dir.join("build.sh"))
        .arg(&output)
        .output()
        .map_err(|e| format!("cannot run {}/build.sh: {e}", dir.display()))?;
    if !run.status.success() {
        return Err(format!(
            "{}/build.sh failed ({}); examples/plugins/setup.sh installs what it needs.\n{}{}",
            dir.display(),
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    let size = std::fs::metadata(&output).map_or(0, |m| m.len());
    report(format_args!(
        "built {} ({} KiB) in {:.1} s",
        output.display(),
        size / 1024,
        started.elapsed().as_secs_f64()
    ));
    Ok(output)
}

/// The two components, built once per test run (both builds at once: each is mostly one thread).
struct Built {
    js: PathBuf,
    py: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        std::thread::scope(|s| {
            let js = s.spawn(|| build(&JS_POLICY));
            let py = s.spawn(|| build(&PY_ROUTER));
            let js = js
                .join()
                .unwrap_or_else(|_| Err("js-policy build panicked".into()));
            let py = py
                .join()
                .unwrap_or_else(|_| Err("py-router build panicked".into()));
            match (js, py) {
                (Ok(js), Ok(py)) => Ok(Built { js, py }),
                (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
                (Err(a), Err(b)) => Err(format!("{a}\n{b}")),
            }
        })
    });
    match built {
        Ok(b) => b,
        Err(e) => panic!("building the example plugins failed:\n{e}"),
    }
}

/// Compiles `path` with `engine`, timed.
fn compile_timed(engine: &PluginEngine, path: &Path) -> Duration {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let started = Instant::now();
    engine
        .compile(&bytes)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    started.elapsed()
}

/// The compile cache the poolers of this module share, filled once per test run (kept between runs, beside
/// this test binary): every pooler then loads the components from it instead of compiling them.
fn shared_cache() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let built = built();
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/it-<hash> → target/<profile>/polyglot-plugin-cache
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in target/<profile>/deps")
            .join("polyglot-plugin-cache");
        let engine = PluginEngine::new(Some(&dir)).expect("plugin engine");
        let js = compile_timed(&engine, &built.js);
        let py = compile_timed(&engine, &built.py);
        let stats = engine.compile_stats();
        report(format_args!(
            "shared compile cache {}: js-policy {} ms, py-router {} ms ({} from the disk cache, {} compiled)",
            dir.display(),
            js.as_millis(),
            py.as_millis(),
            stats.disk_hits,
            stats.disk_misses
        ));
        dir
    })
}

/// The two components and the shared compile cache, prepared off the async workers.
async fn prepared() -> (&'static Built, &'static Path) {
    tokio::task::spawn_blocking(|| (built(), shared_cache()))
        .await
        .expect("building or compiling the example plugins panicked")
}

/// `[pgwarden]` lines configuring plugin `name` from `path`: `settings` are its own keys (`on_error`,
/// `databases`, ...), `config` its configuration table.
fn plugin(name: &str, path: &str, settings: &[(&str, &str)], config: &[(&str, &str)]) -> String {
    let mut out = format!("plugin.{name}.path = {path}\n");
    for (k, v) in settings {
        out.push_str(&format!("plugin.{name}.{k} = {v}\n"));
    }
    for (k, v) in config {
        out.push_str(&format!("plugin.{name}.config.{k} = {v}\n"));
    }
    out
}

fn cache_line(dir: &Path) -> String {
    format!("plugin_cache_dir = {}\n", dir.display())
}

/// A `[databases]` line for alias `alias` of PostgreSQL database `dbname` on the shared cluster.
fn db_line(pg: &PgCluster, alias: &str, dbname: &str) -> String {
    format!(
        "{alias} = host=127.0.0.1 port={} dbname={dbname}\n",
        pg.port()
    )
}

const SETTINGS: &str = "pool_mode = transaction\ndefault_pool_size = 2\nauth_type = md5";

/// The error of a query, which must be a server error.
fn db_error(
    result: Result<impl std::fmt::Debug, tokio_postgres::Error>,
) -> tokio_postgres::error::DbError {
    let err = result.expect_err("the query should have failed");
    err.as_db_error()
        .unwrap_or_else(|| panic!("not an error from the server: {err:?}"))
        .clone()
}

/// The error of a failed connection attempt, which must be a server error.
fn connect_db_error(result: anyhow::Result<Client>) -> tokio_postgres::error::DbError {
    let err = match result {
        Ok(_) => panic!("the connection should have been refused"),
        Err(e) => e,
    };
    err.chain()
        .find_map(|e| e.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::as_db_error)
        .unwrap_or_else(|| panic!("not an error from the server: {err:?}"))
        .clone()
}

/// The error of `sql`, a simple query that must fail; returns once the pooler has seen the end of its
/// transaction. tokio-postgres returns at the ErrorResponse, which PostgreSQL flushes before its
/// ReadyForQuery: a query sent at once (say, right after a reload) may reach pgwarden while the failed
/// transaction's link to the server is still open, and so be checked by the plugins that link started
/// with. A successful query ends only at its ReadyForQuery, after which pgwarden has released the link.
async fn refusal(client: &Client, sql: &str) -> tokio_postgres::error::DbError {
    let denied = db_error(client.simple_query(sql).await);
    client
        .simple_query("select 1")
        .await
        .expect("a plain query after a refusal");
    denied
}

/// The first column of the first row of a simple query.
async fn one(client: &Client, sql: &str) -> anyhow::Result<String> {
    for message in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).unwrap_or("NULL").to_owned());
        }
    }
    bail!("{sql}: no row")
}

/// A plugin's call count and total call time (nanoseconds).
fn call_stats(pooler: &Pooler, name: &str) -> (u64, u64) {
    let runtime = pooler.state.runtime();
    let p = runtime
        .plugins
        .all()
        .iter()
        .find(|p| p.name() == name)
        .cloned()
        .unwrap_or_else(|| panic!("no plugin {name}"));
    (
        p.stats.calls.load(std::sync::atomic::Ordering::Relaxed),
        p.stats.nanos.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// Logs the average time of a plugin's calls since `before` (the cost of crossing into the component,
/// running it, and back).
fn log_call_cost(pooler: &Pooler, name: &str, what: &str, before: (u64, u64)) {
    let (calls, nanos) = call_stats(pooler, name);
    let (calls, nanos) = (calls - before.0, nanos - before.1);
    report(format_args!(
        "plugin {name}: {calls} {what}, {:.1} µs per call on average",
        nanos as f64 / calls.max(1) as f64 / 1000.0
    ));
}

/// The JavaScript policy denies schema changes with its own SQLSTATE, message, detail and hint, reading
/// pgwarden's summary (DDL inside a string literal is a query; one DDL statement denies the whole Query),
/// over both protocols, and lets exempt databases and users through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_policy_denies_schema_changes_except_exempt_databases_and_users() -> anyhow::Result<()> {
    let (built, cache) = prepared().await;
    let pg = PgCluster::shared();
    let a = TestDb::create(pg, "pgjs", PasswordEncryption::Md5)?;
    let b = TestDb::create(pg, "pgjsx", PasswordEncryption::Md5)?;
    let adm = format!("{}_adm", a.name);
    let databases = format!(
        "{}{}{}",
        db_line(pg, &a.name, &a.name),
        db_line(pg, &adm, &a.name),
        db_line(pg, &b.name, &b.name)
    );
    let pgwarden = cache_line(cache)
        + &plugin(
            "no_ddl",
            &built.js.display().to_string(),
            &[],
            &[
                ("exempt_databases", &format!("unrelated, {adm}")),
                ("exempt_users", &b.user),
                ("hint", "ask the DBA"),
            ],
        );
    let userlist = a.userlist_line() + &b.userlist_line();
    let pooler = Pooler::start_with_pgwarden(&databases, SETTINGS, &pgwarden, &userlist).await?;

    let client = pooler.connect_as(&a).await?;
    let denied = db_error(client.simple_query("create table t (id int)").await);
    assert_eq!(denied.code().code(), "42501", "{denied:?}");
    assert_eq!(denied.message(), "schema changes are not allowed here");
    assert_eq!(
        denied.detail(),
        Some(
            format!(
                "CREATE is a schema change (database \"{}\", user \"{}\")",
                a.name, a.user
            )
            .as_str()
        )
    );
    assert_eq!(denied.hint(), Some("ask the DBA"));
    // Extended protocol (Parse): denied before PostgreSQL sees it.
    let denied = db_error(
        client
            .execute("drop table if exists nothing_here", &[])
            .await,
    );
    assert_eq!(denied.code().code(), "42501");
    assert!(
        denied
            .detail()
            .is_some_and(|d| d.starts_with("DROP is a schema change")),
        "{denied:?}"
    );
    // Words in a string literal are not a statement.
    assert_eq!(
        one(&client, "select 'create table t (id int)'").await?,
        "create table t (id int)"
    );

    // The exempt alias of the same database may change the schema; then data changes are allowed.
    let admin = pooler.connect(&a.user, &a.password, &adm).await?;
    admin.batch_execute("create table t (id int)").await?;
    client.execute("insert into t values (1)", &[]).await?;
    // One schema change in a Query denies all of it: the insert before it does not run either.
    let denied = db_error(
        client
            .simple_query("insert into t values (2); drop table t")
            .await,
    );
    assert_eq!(denied.code().code(), "42501");
    assert_eq!(one(&client, "select count(*) from t").await?, "1");

    // An exempt user may change the schema of any database.
    let exempt = pooler.connect_as(&b).await?;
    exempt
        .batch_execute("create table u (id int); drop table u")
        .await?;

    // psql (simple protocol, its own error rendering).
    let out = pooler
        .psql(&a)
        .run_async("alter table t add column x int")
        .await?;
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("ERROR:  schema changes are not allowed here"),
        "{out:?}"
    );
    assert!(out.stderr.contains("HINT:  ask the DBA"), "{out:?}");
    // The cost of a check: many small queries, each checked once.
    log_call_cost(
        &pooler,
        "no_ddl",
        "checks (the first ones on new instances)",
        (0, 0),
    );
    let before = call_stats(&pooler, "no_ddl");
    for _ in 0..200 {
        client.simple_query("select 1").await?;
    }
    log_call_cost(
        &pooler,
        "no_ddl",
        "checks of select 1 on a warm instance",
        before,
    );
    Ok(())
}

/// The Python router sends clients by application_name prefix to another alias or another pool mode, leaves
/// the others where they asked to go, and refuses listed users before they authenticate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_router_routes_by_application_name_and_refuses_users() -> anyhow::Result<()> {
    let (built, cache) = prepared().await;
    let pg = PgCluster::shared();
    let a = TestDb::create(pg, "pgpy", PasswordEncryption::Md5)?;
    let b = TestDb::create(pg, "pgpyr", PasswordEncryption::Md5)?;
    let databases = db_line(pg, "app", &a.name) + &db_line(pg, "reports", &b.name);
    let pgwarden = cache_line(cache)
        + &plugin(
            "routes",
            &built.py.display().to_string(),
            &[],
            &[
                ("route.1.prefix", "report-"),
                ("route.1.database", "reports"),
                ("route.2.prefix", "batch-"),
                ("route.2.pool_mode", "statement"),
                ("deny_users", "nobody, intruder"),
            ],
        );
    let userlist = a.userlist_line() + "\"intruder\" \"intruder-pw\"\n";
    let pooler = Pooler::start_with_pgwarden(&databases, SETTINGS, &pgwarden, &userlist).await?;
    let connect = |app: Option<&str>, user: &str, password: &str| {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(pooler.port)
            .user(user)
            .password(password)
            .dbname("app");
        if let Some(app) = app {
            config.application_name(app);
        }
        async move { pgwarden_tests::clients::connect_config(&config).await }
    };

    let plain = connect(None, &a.user, &a.password).await?;
    assert_eq!(one(&plain, "select current_database()").await?, a.name);
    let report = connect(Some("report-daily"), &a.user, &a.password).await?;
    assert_eq!(one(&report, "select current_database()").await?, b.name);
    // A prefix is a prefix: "xreport-" goes where it asked.
    let other = connect(Some("xreport-daily"), &a.user, &a.password).await?;
    assert_eq!(one(&other, "select current_database()").await?, a.name);

    // Transaction blocks work in the configured transaction mode, not in the routed statement mode
    // (psql, application_name in its connection string).
    let psql = |app: &str| {
        Psql::new(
            "127.0.0.1",
            pooler.port,
            a.user.clone(),
            format!("dbname=app application_name={app}"),
        )
        .password(a.password.clone())
    };
    let script = "BEGIN;\nSELECT 1;\nCOMMIT;\n";
    let out = psql("interactive").run_stdin_async(script).await?;
    assert!(out.success(), "{out:?}");
    let batch = psql("batch-7");
    assert_eq!(
        batch.run_ok_async("select current_database()").await?,
        a.name
    );
    let out = batch.run_stdin_async(script).await?;
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("transaction blocks not allowed in statement pooling mode"),
        "{out:?}"
    );

    // A listed user is refused by the router, whatever the password.
    let denied = connect_db_error(connect(None, "intruder", "intruder-pw").await);
    assert_eq!(denied.code().code(), "28000", "{denied:?}");
    assert_eq!(
        denied.message(),
        "user \"intruder\" may not connect through pgwarden"
    );
    log_call_cost(
        &pooler,
        "routes",
        "routings (the first ones on new instances)",
        (0, 0),
    );
    let before = call_stats(&pooler, "routes");
    for _ in 0..20 {
        connect(Some("report-x"), &a.user, &a.password).await?;
    }
    log_call_cost(&pooler, "routes", "routings on a warm instance", before);
    Ok(())
}

/// Rewrites the pooler's config file with `pgwarden` as its `[pgwarden]` section and reloads.
async fn reload_with(
    pooler: &Pooler,
    databases: &str,
    pgwarden: &str,
    userlist: &str,
) -> Result<(), pgwarden::reload::ReloadError> {
    write_config_with_pgwarden(
        &pooler.dir,
        pooler.port,
        databases,
        SETTINGS,
        pgwarden,
        userlist,
    )
    .expect("rewriting the config file");
    let started = Instant::now();
    let result = pooler.reload().await;
    report(format_args!(
        "reload took {} ms ({:?})",
        started.elapsed().as_millis(),
        pooler.state.plugin_engine.compile_stats()
    ));
    result
}

/// Reloads swap plugins under a connected client: the JavaScript policy with a new configuration (no
/// recompile: the same component comes from memory), a configuration its init refuses (the running
/// generation stays), the Rust readonly plugin in its place, and the JavaScript policy back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_js_policy_and_rust_readonly_under_connected_clients() -> anyhow::Result<()> {
    let (built, cache) = prepared().await;
    let pg = PgCluster::shared();
    let a = TestDb::create(pg, "pgjsre", PasswordEncryption::Md5)?;
    let direct =
        pgwarden_tests::clients::connect(pg.host(), pg.port(), &a.user, Some(&a.password), &a.name)
            .await?;
    direct.batch_execute("create table t (id int)").await?;
    let databases = db_line(pg, &a.name, &a.name);
    let userlist = a.userlist_line();
    let js = built.js.display().to_string();
    let js_with =
        |message: &str| cache_line(cache) + &plugin("guard", &js, &[], &[("message", message)]);
    let pooler =
        Pooler::start_with_pgwarden(&databases, SETTINGS, &js_with("no DDL (v1)"), &userlist)
            .await?;
    let client = pooler.connect_as(&a).await?;
    let ddl = "alter table t add column x int";
    let insert = "insert into t values (1)";
    assert_eq!(refusal(&client, ddl).await.message(), "no DDL (v1)");
    let start = pooler.state.plugin_engine.compile_stats();
    assert_eq!(start.compiles, 1, "{start:?}");

    // A new configuration table: init runs again on the same component, compiled once.
    reload_with(&pooler, &databases, &js_with("no DDL (v2)"), &userlist).await?;
    assert_eq!(refusal(&client, ddl).await.message(), "no DDL (v2)");
    let stats = pooler.state.plugin_engine.compile_stats();
    assert_eq!(
        (stats.compiles, stats.memory_hits),
        (1, start.memory_hits + 1),
        "{stats:?}"
    );

    // A configuration init refuses: the reload fails with its message, and v2 stays in force.
    let bad = js_with("no DDL (v3)") + "plugin.guard.config.colour = red\n";
    let err = reload_with(&pooler, &databases, &bad, &userlist)
        .await
        .expect_err("init refuses an unknown key");
    assert!(
        err.to_string()
            .contains("js-policy: unknown configuration key \"colour\""),
        "{err}"
    );
    assert_eq!(refusal(&client, ddl).await.message(), "no DDL (v2)");

    // The Rust readonly plugin instead (no server parameters, so only the plugin decides).
    let readonly = cache_line(cache)
        + &plugin(
            "guard",
            "builtin:readonly",
            &[("server_parameters", "")],
            &[],
        );
    reload_with(&pooler, &databases, &readonly, &userlist).await?;
    let denied = refusal(&client, insert).await;
    assert_eq!(
        (denied.code().code(), denied.message()),
        (
            "25006",
            "cannot execute INSERT in a read-only session (pgwarden readonly policy)"
        )
    );
    assert_eq!(one(&client, "select count(*) from t").await?, "0");

    // And the JavaScript policy back: inserts pass again, schema changes do not; still compiled once.
    reload_with(&pooler, &databases, &js_with("no DDL (v4)"), &userlist).await?;
    client.execute(insert, &[]).await?;
    assert_eq!(refusal(&client, ddl).await.message(), "no DDL (v4)");
    assert_eq!(one(&client, "select count(*) from t").await?, "1");
    let stats = pooler.state.plugin_engine.compile_stats();
    // The readonly component was the one other compile.
    assert_eq!(stats.compiles, 2, "{stats:?}");
    assert_eq!(one(&direct, "select count(*) from t").await?, "1");
    Ok(())
}

/// A JavaScript policy that throws traps its component: with on_error = deny (the default) the query is
/// refused with pgwarden's XX000 and the next query is checked by a fresh instance; with on_error = allow the
/// same failure lets the query through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_js_policy_fails_closed_unless_on_error_allows() -> anyhow::Result<()> {
    let (built, cache) = prepared().await;
    let pg = PgCluster::shared();
    let a = TestDb::create(pg, "pgjstrap", PasswordEncryption::Md5)?;
    let open = format!("{}_open", a.name);
    let databases = db_line(pg, &a.name, &a.name) + &db_line(pg, &open, &a.name);
    let js = built.js.display().to_string();
    let pgwarden = cache_line(cache)
        + &plugin(
            "closed",
            &js,
            &[("databases", &a.name)],
            &[("fail_on_word", "kaboom")],
        )
        + &plugin(
            "open",
            &js,
            &[("databases", &open), ("on_error", "allow")],
            &[("fail_on_word", "kaboom")],
        );
    let pooler =
        Pooler::start_with_pgwarden(&databases, SETTINGS, &pgwarden, &a.userlist_line()).await?;

    let client = pooler.connect_as(&a).await?;
    let refused = db_error(client.simple_query("select 1 as kaboom").await);
    assert_eq!(refused.code().code(), "XX000", "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("query refused: plugin \"closed\" failed"),
        "{refused:?}"
    );
    assert_eq!(
        refused.hint(),
        Some("a query policy plugin failed, and pgwarden refuses queries it could not check")
    );
    // Extended protocol too.
    let refused = db_error(client.query("select $1::int as kaboom", &[&1i32]).await);
    assert_eq!(refused.code().code(), "XX000", "{refused:?}");
    // The trapped instance is gone; the plugin still works.
    assert_eq!(one(&client, "select 2").await?, "2");
    assert_eq!(
        db_error(client.simple_query("create table t (id int)").await)
            .code()
            .code(),
        "42501"
    );

    let lenient = pooler.connect(&a.user, &a.password, &open).await?;
    assert_eq!(one(&lenient, "select 3 as kaboom").await?, "3");
    let runtime = pooler.state.runtime();
    let errors = |name: &str| {
        runtime
            .plugins
            .all()
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.stats.errors.load(std::sync::atomic::Ordering::Relaxed))
    };
    assert_eq!((errors("closed"), errors("open")), (Some(2), Some(1)));
    // Both entries share one compiled component.
    let stats = pooler.state.plugin_engine.compile_stats();
    assert_eq!((stats.compiles, stats.memory_hits), (1, 1), "{stats:?}");
    Ok(())
}

/// The compile caches, through poolers: the first pooler compiles the component into an empty cache
/// directory, a reload takes it from memory, and a second pooler (a restart) loads it from the directory.
/// The times are logged, not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_components_come_from_memory_on_reload_and_from_disk_on_restart()
-> anyhow::Result<()> {
    let (built, _) = prepared().await;
    let pg = PgCluster::shared();
    let a = TestDb::create(pg, "pgjscache", PasswordEncryption::Md5)?;
    let cache = fresh_dir("polyglot-cache")?;
    let databases = db_line(pg, &a.name, &a.name);
    let js = built.js.display().to_string();
    let config = |hint: &str| cache_line(&cache) + &plugin("guard", &js, &[], &[("hint", hint)]);
    let userlist = a.userlist_line();

    let started = Instant::now();
    let first =
        Pooler::start_with_pgwarden(&databases, SETTINGS, &config("one"), &userlist).await?;
    let compiled = started.elapsed();
    let stats = first.state.plugin_engine.compile_stats();
    assert_eq!(
        (stats.compiles, stats.disk_misses, stats.disk_hits),
        (1, 1, 0),
        "{stats:?}"
    );
    let client = first.connect_as(&a).await?;
    assert_eq!(
        refusal(&client, "create table t (id int)").await.hint(),
        Some("one")
    );

    let started = Instant::now();
    reload_with(&first, &databases, &config("two"), &userlist).await?;
    let reloaded = started.elapsed();
    let stats = first.state.plugin_engine.compile_stats();
    assert_eq!((stats.compiles, stats.memory_hits), (1, 1), "{stats:?}");
    assert_eq!(
        refusal(&client, "create table t (id int)").await.hint(),
        Some("two")
    );

    let started = Instant::now();
    let second =
        Pooler::start_with_pgwarden(&databases, SETTINGS, &config("three"), &userlist).await?;
    let restarted = started.elapsed();
    let stats = second.state.plugin_engine.compile_stats();
    assert_eq!(
        (stats.compiles, stats.disk_misses, stats.disk_hits),
        (1, 0, 1),
        "{stats:?}"
    );
    let client = second.connect_as(&a).await?;
    assert_eq!(
        refusal(&client, "create table t (id int)").await.hint(),
        Some("three")
    );
    report(format_args!(
        "js-policy ({} KiB): pooler start compiling it {} ms, reload (memory cache) {} ms, \
         second pooler (disk cache) {} ms",
        std::fs::metadata(&built.js)?.len() / 1024,
        compiled.as_millis(),
        reloaded.as_millis(),
        restarted.as_millis()
    ));
    drop((first, second));
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}
