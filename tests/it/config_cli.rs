//! The `pgwarden` binary's command line and config files: it starts from PgBouncer's ini as it is and
//! from the native TOML with the same meaning, `--check` validates and describes, diagnostics name
//! file:line:key, and PgBouncer's switches (`-V -h -q -v -u -d`) and listener settings behave the same.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgwarden_tests::binary::{
    Daemon, PgwardenProcess, Scratch, line_of, pg_answers, read_lossy, tcp_accepts, wait_until,
};
use pgwarden_tests::clients::Psql;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{TestDb, free_port};

/// Short runs (`--check`, `-V`, a config error) finish well within this.
const SHORT: Duration = Duration::from_secs(20);
/// A graceful shutdown with no clients left.
const EXIT: Duration = Duration::from_secs(10);

fn db_line(pg: &PgCluster, db: &TestDb) -> String {
    format!(
        "{} = host=127.0.0.1 port={} dbname={}",
        db.name,
        pg.port(),
        db.name
    )
}

fn psql(host: impl Into<String>, port: u16, db: &TestDb) -> Psql {
    Psql::new(host, port, db.user.clone(), db.name.clone()).password(db.password.clone())
}

/// SIGTERM with no client connected: exit status 0.
async fn stop(p: &mut PgwardenProcess) -> anyhow::Result<()> {
    p.signal(Signal::SIGTERM)?;
    let status = p.wait_exit(EXIT).await?;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", p.stderr());
    Ok(())
}

/// The first runbook's pgbouncer.ini, unchanged but for paths and ports, serves psql over TCP (on any
/// local address: `listen_addr = *`) and over the Unix socket in `unix_socket_dir`; pidfile and logfile
/// are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_ini_serves_psql_over_tcp_and_unix_socket() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "cli_runbook", PasswordEncryption::Md5)?;
    let dir = Scratch::new("cli-runbook")?;
    let port = free_port()?;
    let userlist = dir.write(
        "userlist.txt",
        &format!("\"admin\" \"password123\"\n{}", db.userlist_line()),
    )?;
    let pidfile = dir.join("pgbouncer.pid");
    let logfile = dir.join("pgbouncer.log");
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "################## Auto generated ##################\n\
             [databases]\n\
             {}\n\
             \n\
             [pgbouncer]\n\
             listen_addr = *\n\
             listen_port = {port}\n\
             unix_socket_dir = {}\n\
             auth_type = md5\n\
             auth_file = {}\n\
             pool_mode = transaction\n\
             default_pool_size = 20\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits\n\
             pidfile = {}\n\
             logfile = {}\n\
             \n\
             # Log settings\n\
             admin_users = postgres\n",
            db_line(pg, &db),
            dir.path.display(),
            userlist.display(),
            pidfile.display(),
            logfile.display(),
        ),
    )?;
    let mut p = PgwardenProcess::spawn(&dir.path, &[&ini])?;
    p.wait_tcp(port).await?;

    // 127.0.0.2 is served only because `*` means every address.
    for host in ["127.0.0.1", "127.0.0.2"] {
        let out = psql(host, port, &db)
            .run_ok_async("select current_database()")
            .await?;
        assert_eq!(out, db.name, "via {host}");
    }
    let socket = dir.join(&format!(".s.PGSQL.{port}"));
    assert!(socket.exists(), "{} missing", socket.display());
    let out = psql(dir.path.display().to_string(), port, &db)
        .run_ok_async("select current_user")
        .await?;
    assert_eq!(out, db.user, "via the Unix socket");

    assert_eq!(
        std::fs::read_to_string(&pidfile)?.trim(),
        p.pid().to_string()
    );
    let log = read_lossy(&logfile);
    assert!(
        log.contains(&format!("listening on unix:{}", socket.display())),
        "{log}"
    );
    stop(&mut p).await
}

/// The native TOML (`[pgwarden]`, `[databases.NAME]`, `[users.NAME]`) means what the equivalent ini
/// means: `--check` describes both the same way, and the binary started from the TOML serves psql with
/// the `[users]` pool mode applied (statement mode refuses a transaction block).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_config_has_the_same_meaning_as_ini() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "cli_toml", PasswordEncryption::Md5)?;
    let dir = Scratch::new("cli-toml")?;
    let port = free_port()?;
    let userlist = dir.write("userlist.txt", &db.userlist_line())?;
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\n\
             {} pool_size=3\n\
             [users]\n\
             {} = pool_mode=statement\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir = {}\n\
             auth_type = md5\n\
             auth_file = {}\n\
             pool_mode = transaction\n\
             default_pool_size = 20\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = extra_float_digits\n",
            db_line(pg, &db),
            db.user,
            dir.path.display(),
            userlist.display(),
        ),
    )?;
    let toml = dir.write(
        "pgwarden.toml",
        &format!(
            "[pgwarden]\n\
             listen_addr = [\"127.0.0.1\"]\n\
             listen_port = {port}\n\
             unix_socket_dir = \"{}\"\n\
             auth_type = \"md5\"\n\
             auth_file = \"{}\"\n\
             pool_mode = \"transaction\"\n\
             default_pool_size = 20\n\
             max_client_conn = 200\n\
             ignore_startup_parameters = [\"extra_float_digits\"]\n\
             \n\
             [databases.{name}]\n\
             host = \"127.0.0.1\"\n\
             port = {}\n\
             dbname = \"{name}\"\n\
             pool_size = 3\n\
             \n\
             [users.{}]\n\
             pool_mode = \"statement\"\n",
            dir.path.display(),
            userlist.display(),
            pg.port(),
            db.user,
            name = db.name,
        ),
    )?;

    let from_ini =
        PgwardenProcess::run(&dir.path, &[OsStr::new("--check"), ini.as_os_str()], SHORT).await?;
    let from_toml =
        PgwardenProcess::run(&dir.path, &[OsStr::new("--check"), toml.as_os_str()], SHORT).await?;
    assert!(from_ini.status.success(), "{from_ini:?}");
    assert!(from_toml.status.success(), "{from_toml:?}");
    assert!(
        from_ini
            .stdout
            .starts_with(&format!("{}: OK (PgBouncer ini)\n", ini.display())),
        "{}",
        from_ini.stdout
    );
    assert!(
        from_toml
            .stdout
            .starts_with(&format!("{}: OK (TOML)\n", toml.display())),
        "{}",
        from_toml.stdout
    );
    // Not vacuous: the description carries the database's own pool size and the [users] pool mode.
    assert!(
        from_toml.stdout.contains(&format!(
            "  {} -> 127.0.0.1:{}/{}  pool_mode=transaction pool_size=3 ",
            db.name,
            pg.port(),
            db.name
        )),
        "{}",
        from_toml.stdout
    );
    assert!(
        from_toml
            .stdout
            .contains(&format!("  [users] {}: pool_mode=statement\n", db.user)),
        "{}",
        from_toml.stdout
    );
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&from_ini.stdout), body(&from_toml.stdout));

    let mut p = PgwardenProcess::spawn(&dir.path, &[&toml])?;
    p.wait_tcp(port).await?;
    let out = psql("127.0.0.1", port, &db)
        .run_ok_async("select current_database()")
        .await?;
    assert_eq!(out, db.name);
    let out = psql(dir.path.display().to_string(), port, &db)
        .run_ok_async("select current_user")
        .await?;
    assert_eq!(out, db.user);
    let out = psql("127.0.0.1", port, &db)
        .run_stdin_async("BEGIN;\nSELECT 1;\nCOMMIT;\n")
        .await?;
    assert!(!out.success(), "{out:?}");
    assert!(
        out.stderr
            .contains("transaction blocks not allowed in statement pooling mode"),
        "{}",
        out.stderr
    );
    stop(&mut p).await
}

/// `listen_addr` as a comma list binds exactly those addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_addr_list_binds_each_listed_address_only() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "cli_listen", PasswordEncryption::Md5)?;
    let dir = Scratch::new("cli-listen")?;
    let port = free_port()?;
    let userlist = dir.write("userlist.txt", &db.userlist_line())?;
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\n{}\n[pgbouncer]\nlisten_addr = 127.0.0.1, 127.0.0.2\nlisten_port = {port}\n\
             unix_socket_dir = {}\nauth_type = md5\nauth_file = {}\n",
            db_line(pg, &db),
            dir.path.display(),
            userlist.display()
        ),
    )?;
    let mut p = PgwardenProcess::spawn(&dir.path, &[&ini])?;
    p.wait_tcp(port).await?;
    for host in ["127.0.0.1", "127.0.0.2"] {
        let out = psql(host, port, &db).run_ok_async("select 7").await?;
        assert_eq!(out, "7", "via {host}");
    }
    assert!(
        !tcp_accepts(SocketAddr::from(([127, 0, 0, 3], port))),
        "127.0.0.3 is not in listen_addr"
    );
    stop(&mut p).await
}

/// `--check` on an ini: exit 0, the listeners, every pool, and a warning naming file:line for each key
/// PgBouncer knows but pgwarden ignores; it starts nothing (no pidfile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_describes_ini_pools_listeners_and_warnings() -> anyhow::Result<()> {
    let dir = Scratch::new("cli-check-ini")?;
    let port = free_port()?;
    let userlist = dir.write("userlist.txt", "\"alice\" \"pw\"\n")?;
    let pidfile = dir.join("check.pid");
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\n\
             app = host=127.0.0.1 port=5999 dbname=appdb pool_size=7\n\
             * = host=127.0.0.1 port=5999\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1,127.0.0.2\n\
             listen_port = {port}\n\
             unix_socket_dir = {}\n\
             auth_type = md5\n\
             auth_file = {}\n\
             pool_mode = transaction\n\
             pidfile = {}\n\
             so_reuseport = 1\n\
             syslog = 1\n",
            dir.path.display(),
            userlist.display(),
            pidfile.display()
        ),
    )?;
    let out =
        PgwardenProcess::run(&dir.path, &[OsStr::new("--check"), ini.as_os_str()], SHORT).await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = &out.stdout;
    for expected in [
        format!("{}: OK (PgBouncer ini)\n", ini.display()),
        format!(
            "listen: 127.0.0.1:{port}, 127.0.0.2:{port}, {}/.s.PGSQL.{port}\n",
            dir.path.display()
        ),
        format!("auth_file {} (1 user)", userlist.display()),
        "  app -> 127.0.0.1:5999/appdb  pool_mode=transaction pool_size=7 ".to_owned(),
        "  * -> 127.0.0.1:5999/<client's database>  pool_mode=transaction pool_size=20 ".to_owned(),
        format!(
            "warning: {}:{}: so_reuseport: not implemented by pgwarden yet; ignored\n",
            ini.display(),
            line_of(&ini, "so_reuseport")?
        ),
        format!(
            "warning: {}:{}: syslog: not implemented by pgwarden yet; ignored\n",
            ini.display(),
            line_of(&ini, "syslog")?
        ),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!pidfile.exists(), "--check must not start the pooler");
    assert!(!tcp_accepts(SocketAddr::from(([127, 0, 0, 1], port))));
    Ok(())
}

/// `--check` on a TOML file: the same description and file:line warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_describes_toml_pools_listeners_and_warnings() -> anyhow::Result<()> {
    let dir = Scratch::new("cli-check-toml")?;
    let port = free_port()?;
    dir.write("userlist.txt", "\"alice\" \"pw\"\n\"bob\" \"pw\"\n")?;
    let toml = dir.write(
        "pgwarden.toml",
        &format!(
            "[pgwarden]\n\
             listen_addr = \"127.0.0.1\"\n\
             listen_port = {port}\n\
             unix_socket_dir = \"\"\n\
             auth_type = \"scram-sha-256\"\n\
             auth_file = \"userlist.txt\"\n\
             so_reuseport = true\n\
             \n\
             [databases.app]\n\
             host = \"127.0.0.1\"\n\
             port = 5999\n\
             dbname = \"appdb\"\n\
             pool_mode = \"session\"\n\
             \n\
             [databases.\"*\"]\n\
             host = \"127.0.0.1\"\n\
             port = 5998\n"
        ),
    )?;
    let out =
        PgwardenProcess::run(&dir.path, &[OsStr::new("--check"), toml.as_os_str()], SHORT).await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = &out.stdout;
    for expected in [
        format!("{}: OK (TOML)\n", toml.display()),
        format!("listen: 127.0.0.1:{port}\n"),
        "auth: scram-sha-256, auth_file ".to_owned(),
        "userlist.txt (2 users)".to_owned(),
        "  app -> 127.0.0.1:5999/appdb  pool_mode=session pool_size=20 ".to_owned(),
        "one pool per client user (alice, bob)".to_owned(),
        "  * -> 127.0.0.1:5998/<client's database>  pool_mode=session ".to_owned(),
        format!(
            "warning: {}:{}: so_reuseport: not implemented by pgwarden yet; ignored\n",
            toml.display(),
            line_of(&toml, "so_reuseport")?
        ),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    Ok(())
}

/// Running (not just `--check`), an unimplemented key is a warning naming file:line in the log, and the
/// pooler starts anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unimplemented_key_is_a_logged_warning_when_running() -> anyhow::Result<()> {
    let dir = Scratch::new("cli-warn")?;
    let port = free_port()?;
    let userlist = dir.write("userlist.txt", "\"alice\" \"pw\"\n")?;
    let logfile = dir.join("pgwarden.log");
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\napp = host=127.0.0.1 port=5999\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_file = {}\nlogfile = {}\nso_reuseport = 1\n",
            userlist.display(),
            logfile.display()
        ),
    )?;
    let mut p = PgwardenProcess::spawn(&dir.path, &[&ini])?;
    p.wait_tcp(port).await?;
    let warning = format!(
        "{}:{}: so_reuseport: not implemented by pgwarden yet; ignored",
        ini.display(),
        line_of(&ini, "so_reuseport")?
    );
    let log = read_lossy(&logfile);
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains(&warning)),
        "{log}"
    );
    assert!(p.stderr().contains(&warning), "{}", p.stderr());
    stop(&mut p).await
}

/// Runs `pgwarden <args>` expecting a configuration error: exit status 1 and every `expected` line on
/// stderr; nothing listens on `port` afterwards.
async fn expect_config_error(
    dir: &Path,
    args: &[&OsStr],
    port: u16,
    expected: &[String],
) -> anyhow::Result<()> {
    let out = PgwardenProcess::run(dir, args, SHORT).await?;
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    for e in expected {
        assert!(
            out.stderr.lines().any(|l| l == e),
            "{args:?}: missing line {e:?} on stderr:\n{}",
            out.stderr
        );
    }
    assert!(
        !out.stdout.contains("OK"),
        "{args:?}: no description for an invalid config:\n{}",
        out.stdout
    );
    assert!(!tcp_accepts(SocketAddr::from(([127, 0, 0, 1], port))));
    Ok(())
}

/// In the main ini, an unknown key and an invalid value are errors naming file, line and key — all of
/// them at once — whether running or checking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ini_errors_name_file_line_and_key() -> anyhow::Result<()> {
    let dir = Scratch::new("cli-err-ini")?;
    let port = free_port()?;
    let userlist = dir.write("userlist.txt", "\"alice\" \"pw\"\n")?;
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\napp = host=127.0.0.1 port=5999\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nauth_file = {}\nno_such_setting = 1\ndefault_pool_size = lots\n",
            userlist.display()
        ),
    )?;
    let expected = [
        format!(
            "{}:{}: no_such_setting: unknown setting",
            ini.display(),
            line_of(&ini, "no_such_setting")?
        ),
        format!(
            "{}:{}: default_pool_size: invalid value \"lots\": expected an integer of at least 0",
            ini.display(),
            line_of(&ini, "default_pool_size")?,
        ),
    ];
    expect_config_error(&dir.path, &[ini.as_os_str()], port, &expected).await?;
    expect_config_error(
        &dir.path,
        &["--check".as_ref(), ini.as_os_str()],
        port,
        &expected,
    )
    .await
}

/// Errors in an `%include`d file name that file and its own line, not the includer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_an_included_file_name_that_file() -> anyhow::Result<()> {
    let dir = Scratch::new("cli-err-inc")?;
    let port = free_port()?;
    let userlist = dir.write("userlist.txt", "\"alice\" \"pw\"\n")?;
    let extra = dir.write(
        "extra.ini",
        "; shared by every pooler\ndefault_pool_size = 10\nbogus_key = yes\nmax_client_conn = many\n",
    )?;
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\napp = host=127.0.0.1 port=5999\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\n%include extra.ini\nauth_file = {}\n",
            userlist.display()
        ),
    )?;
    let expected = [
        format!("{}:3: bogus_key: unknown setting", extra.display()),
        format!(
            "{}:4: max_client_conn: invalid value \"many\": expected an integer of at least 0",
            extra.display(),
        ),
    ];
    expect_config_error(&dir.path, &[ini.as_os_str()], port, &expected).await?;
    expect_config_error(
        &dir.path,
        &["--check".as_ref(), ini.as_os_str()],
        port,
        &expected,
    )
    .await
}

/// In TOML, unknown keys (in `[pgwarden]` and in a database table) and invalid values are errors naming
/// file, line and key. (TOML has no `%include`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_errors_name_file_line_and_key() -> anyhow::Result<()> {
    let dir = Scratch::new("cli-err-toml")?;
    let port = free_port()?;
    dir.write("userlist.txt", "\"alice\" \"pw\"\n")?;
    let toml = dir.write(
        "pgwarden.toml",
        &format!(
            "[pgwarden]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nauth_file = \"userlist.txt\"\n\
             no_such_setting = 1\npool_mode = \"sometimes\"\n\n[databases.app]\nhost = \"127.0.0.1\"\n\
             hots = \"typo\"\n"
        ),
    )?;
    let expected = [
        format!(
            "{}:{}: no_such_setting: unknown setting",
            toml.display(),
            line_of(&toml, "no_such_setting")?
        ),
        format!(
            "{}:{}: pool_mode: invalid value \"sometimes\": expected one of session, transaction or statement",
            toml.display(),
            line_of(&toml, "pool_mode")?
        ),
        format!(
            "{}:{}: hots: unknown parameter for database \"app\"",
            toml.display(),
            line_of(&toml, "hots")?
        ),
    ];
    expect_config_error(&dir.path, &[toml.as_os_str()], port, &expected).await?;
    expect_config_error(
        &dir.path,
        &["--check".as_ref(), toml.as_os_str()],
        port,
        &expected,
    )
    .await
}

/// A missing auth_file is an error blamed on the `auth_file` line, in both formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_auth_file_is_an_error_on_its_line() -> anyhow::Result<()> {
    let dir = Scratch::new("cli-err-auth")?;
    let port = free_port()?;
    let missing = dir.join("no-such-userlist.txt");
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\napp = host=127.0.0.1 port=5999\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nauth_file = {}\n",
            missing.display()
        ),
    )?;
    let toml = dir.write(
        "pgwarden.toml",
        &format!(
            "[pgwarden]\nlisten_addr = \"127.0.0.1\"\nlisten_port = {port}\nauth_file = \"{}\"\n\n\
             [databases.app]\nhost = \"127.0.0.1\"\n",
            missing.display()
        ),
    )?;
    for file in [&ini, &toml] {
        let expected = [format!(
            "{}:{}: auth_file: cannot read auth_file {}: No such file or directory (os error 2)",
            file.display(),
            line_of(file, "auth_file")?,
            missing.display()
        )];
        expect_config_error(&dir.path, &[file.as_os_str()], port, &expected).await?;
        expect_config_error(
            &dir.path,
            &["--check".as_ref(), file.as_os_str()],
            port,
            &expected,
        )
        .await?;
    }
    Ok(())
}

/// `-V` prints the version, `-h` the usage with PgBouncer's switches; both exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_help() -> anyhow::Result<()> {
    let dir = Scratch::new("cli-version")?;
    let out = PgwardenProcess::run(&dir.path, &["-V"], SHORT).await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!("pgwarden {}", env!("CARGO_PKG_VERSION"))
    );
    let out = PgwardenProcess::run(&dir.path, &["-h"], SHORT).await?;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for switch in [
        "-d, --daemon",
        "-q, --quiet",
        "-v, --verbose",
        "-u, --user <USERNAME>",
        "-V, --version",
        "--check",
        "<CONFIG>",
    ] {
        assert!(out.stdout.contains(switch), "{switch} in:\n{}", out.stdout);
    }
    Ok(())
}

/// Minimal ini for a pooler that needs no PostgreSQL: TCP on `port`, no Unix socket, `logfile`.
fn plain_ini(dir: &Scratch, port: u16, extra: &str) -> anyhow::Result<std::path::PathBuf> {
    let userlist = dir.write("userlist.txt", "\"alice\" \"pw\"\n")?;
    dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\napp = host=127.0.0.1 port=5999\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_file = {}\nlogfile = {}\n{extra}\n",
            userlist.display(),
            dir.join("pgwarden.log").display()
        ),
    )
}

/// `-q` keeps stderr quiet while the logfile still gets every line; without it the same lines go to
/// stderr as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_silences_stderr_but_not_the_logfile() -> anyhow::Result<()> {
    for quiet in [true, false] {
        let dir = Scratch::new("cli-quiet")?;
        let port = free_port()?;
        let ini = plain_ini(&dir, port, "")?;
        let mut argv = vec![ini.as_os_str()];
        if quiet {
            argv.insert(0, "-q".as_ref());
        }
        let mut p = PgwardenProcess::spawn(&dir.path, &argv)?;
        p.wait_tcp(port).await?;
        stop(&mut p).await?;
        let log = read_lossy(&dir.join("pgwarden.log"));
        let listening = format!("listening on 127.0.0.1:{port}");
        for line in [listening.as_str(), "got SIGTERM", "shutdown complete"] {
            assert!(log.contains(line), "quiet={quiet}: {line:?} in log:\n{log}");
        }
        let stderr = p.stderr();
        if quiet {
            assert_eq!(stderr, "", "-q: nothing on stderr");
        } else {
            assert!(stderr.contains(&listening), "{stderr}");
        }
    }
    Ok(())
}

/// `-v` raises verbosity: debug lines (a server connection being opened) appear only with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_adds_debug_lines() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "cli_verbose", PasswordEncryption::Md5)?;
    for verbose in [true, false] {
        let dir = Scratch::new("cli-verbose")?;
        let port = free_port()?;
        let logfile = dir.join("pgwarden.log");
        let ini = pgwarden_tests::pooler::write_config(
            &dir.path,
            port,
            &db_line(pg, &db),
            &format!("auth_type = md5\nlogfile = {}", logfile.display()),
            &db.userlist_line(),
        )?;
        let mut argv = vec![ini.as_os_str()];
        if verbose {
            argv.insert(0, "-v".as_ref());
        }
        let mut p = PgwardenProcess::spawn(&dir.path, &argv)?;
        p.wait_tcp(port).await?;
        assert_eq!(
            psql("127.0.0.1", port, &db)
                .run_ok_async("select 1")
                .await?,
            "1"
        );
        stop(&mut p).await?;
        let log = read_lossy(&logfile);
        let debug = log
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("new connection to server"));
        assert_eq!(debug, verbose, "-v given: {verbose}; log:\n{log}");
    }
    Ok(())
}

/// Uid and gid lines of /proc/<pid>/status: real, effective, saved, filesystem.
fn proc_ids(pid: u32) -> anyhow::Result<(Vec<u32>, Vec<u32>)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let ids = |key: &str| -> anyhow::Result<Vec<u32>> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .ok_or_else(|| anyhow::anyhow!("no {key} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?)
    };
    Ok((ids("Uid:")?, ids("Gid:")?))
}

/// `-u postgres` (started as root) switches user after binding: the process runs as postgres in every
/// uid and gid, yet serves on a Unix socket in a directory only root may create files in; on exit it
/// still removes its pidfile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_switch_happens_after_binding() -> anyhow::Result<()> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test checks -u and must run as root (as CI does)"
    );
    let postgres = nix::unistd::User::from_name("postgres")?
        .ok_or_else(|| anyhow::anyhow!("no postgres OS user"))?;
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "cli_user", PasswordEncryption::Md5)?;
    let dir = Scratch::new("cli-user")?;
    let port = free_port()?;
    let sockdir = dir.join("sock");
    std::fs::create_dir(&sockdir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sockdir, std::fs::Permissions::from_mode(0o755))?;
    }
    let userlist = dir.write("userlist.txt", &db.userlist_line())?;
    let pidfile = dir.join("pgwarden.pid");
    let logfile = dir.join("pgwarden.log");
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\n{}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir = {}\nauth_type = md5\nauth_file = {}\npidfile = {}\nlogfile = {}\n",
            db_line(pg, &db),
            sockdir.display(),
            userlist.display(),
            pidfile.display(),
            logfile.display()
        ),
    )?;
    // The config, userlist and log belong to postgres; the socket directory stays root's.
    for path in [&dir.path, &ini, &userlist] {
        nix::unistd::chown(path.as_path(), Some(postgres.uid), Some(postgres.gid))?;
    }
    let mut p = PgwardenProcess::spawn(
        &dir.path,
        &["-u".as_ref(), "postgres".as_ref(), ini.as_os_str()],
    )?;
    p.wait_tcp(port).await?;
    let want = (
        vec![postgres.uid.as_raw(); 4],
        vec![postgres.gid.as_raw(); 4],
    );
    // Answering means setup is over, the user switch included.
    let pid = p.pid();
    assert_eq!(proc_ids(pid)?, want, "uids and gids of {pid}");
    let out = psql(sockdir.display().to_string(), port, &db)
        .run_ok_async("select current_database()")
        .await?;
    assert_eq!(out, db.name);
    let out = psql("127.0.0.1", port, &db)
        .run_ok_async("select current_user")
        .await?;
    assert_eq!(out, db.user);
    assert_eq!(std::fs::read_to_string(&pidfile)?.trim(), pid.to_string());
    stop(&mut p).await?;
    assert!(
        !pidfile.exists(),
        "pidfile removed by the postgres-owned process"
    );
    Ok(())
}

/// `-d` without a pidfile or a logfile in the config is an error, and nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_needs_pidfile_and_logfile() -> anyhow::Result<()> {
    let dir = Scratch::new("cli-daemon-err")?;
    let port = free_port()?;
    let userlist = dir.write("userlist.txt", "\"alice\" \"pw\"\n")?;
    let base = format!(
        "[databases]\napp = host=127.0.0.1 port=5999\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nunix_socket_dir =\nauth_file = {}\n",
        userlist.display()
    );
    let no_pidfile = dir.write(
        "no-pidfile.ini",
        &format!("{base}logfile = {}\n", dir.join("a.log").display()),
    )?;
    let no_logfile = dir.write(
        "no-logfile.ini",
        &format!("{base}pidfile = {}\n", dir.join("b.pid").display()),
    )?;
    for (ini, message) in [
        (
            &no_pidfile,
            "pgwarden: -d needs pidfile set in the configuration",
        ),
        (
            &no_logfile,
            "pgwarden: -d needs logfile set in the configuration (pgwarden has no syslog)",
        ),
    ] {
        let out = PgwardenProcess::run(&dir.path, &["-d".as_ref(), ini.as_os_str()], SHORT).await?;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            out.stderr.lines().any(|l| l == message),
            "{message:?} in:\n{}",
            out.stderr
        );
        assert!(!tcp_accepts(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    assert!(!dir.join("b.pid").exists());
    Ok(())
}

/// Session id of a process (field 6 of /proc/<pid>/stat).
fn session_id(pid: u32) -> anyhow::Result<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("odd /proc/{pid}/stat"))?;
    // After the name: state, ppid, pgrp, session.
    Ok(rest
        .split_whitespace()
        .nth(3)
        .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
        .parse()?)
}

/// `-d` with pidfile and logfile: the parent exits 0, the pidfile names the daemon (another process, in
/// its own session), which serves clients and logs to the logfile; SIGTERM makes it exit and remove the
/// pidfile and its Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_detaches_serves_and_stops_on_sigterm() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "cli_daemon", PasswordEncryption::Md5)?;
    let dir = Scratch::new("cli-daemon")?;
    let port = free_port()?;
    let pidfile = dir.join("pgwarden.pid");
    let logfile = dir.join("pgwarden.log");
    let ini = pgwarden_tests::pooler::write_config(
        &dir.path,
        port,
        &db_line(pg, &db),
        &format!(
            "auth_type = md5\npidfile = {}\nlogfile = {}",
            pidfile.display(),
            logfile.display()
        ),
        &db.userlist_line(),
    )?;
    let mut parent = PgwardenProcess::spawn(&dir.path, &["-d".as_ref(), ini.as_os_str()])?;
    let parent_pid = parent.pid();
    let status = parent.wait_exit(SHORT).await?;
    assert_eq!(status.code(), Some(0), "stderr:\n{}", parent.stderr());

    wait_until(
        "the daemon writes its pidfile",
        Duration::from_secs(10),
        || read_lossy(&pidfile).trim().parse::<u32>().is_ok(),
    )
    .await?;
    let daemon = Daemon {
        pid: read_lossy(&pidfile).trim().parse()?,
    };
    assert_ne!(daemon.pid, parent_pid);
    assert!(daemon.alive());
    assert_eq!(
        session_id(daemon.pid)?,
        daemon.pid,
        "the daemon leads its own session"
    );
    wait_until("the daemon answers", Duration::from_secs(10), || {
        pg_answers(SocketAddr::from(([127, 0, 0, 1], port)))
    })
    .await?;
    let out = psql("127.0.0.1", port, &db)
        .run_ok_async("select current_database()")
        .await?;
    assert_eq!(out, db.name);
    let log = read_lossy(&logfile);
    assert!(
        log.contains(&format!("pid {}", daemon.pid)),
        "process-up line with the daemon's pid in:\n{log}"
    );
    assert_eq!(
        parent.stderr(),
        "",
        "the daemon writes nothing to the terminal"
    );

    let socket = dir.join(&format!(".s.PGSQL.{port}"));
    assert!(socket.exists());
    pgwarden_tests::binary::send(daemon.pid, Signal::SIGTERM)?;
    wait_until("the daemon exits", EXIT, || !daemon.alive()).await?;
    assert!(!pidfile.exists(), "pidfile removed");
    assert!(!socket.exists(), "socket removed");
    assert!(read_lossy(&logfile).contains("shutdown complete"));
    Ok(())
}
