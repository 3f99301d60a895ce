//! `builtin:router`: the runbook's analytics role routed to a session-mode alias while everyone else keeps
//! transaction pooling, deny rules, application_name and client address conditions, a pool mode override
//! that keeps the database, and a forced server user.

use std::time::Duration;

use pgwarden::config::PoolMode;
use pgwarden::pool::KeyRef;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use tokio_postgres::{Client, Config, NoTls};

use crate::pool_support::{
    assert_login_refused, backend_pid, db_line, entry, extra_role, scalar, userlist_line,
};

/// A role of the test, with its password.
struct Role {
    name: String,
    password: String,
}

fn role(pg: &PgCluster, prefix: &str) -> anyhow::Result<Role> {
    let (name, password) = extra_role(pg, prefix)?;
    Ok(Role { name, password })
}

/// A pooler in transaction mode in front of `db`: its own name (`pool_size` servers), `<name>_session`
/// (pool_mode=session, 2 servers) and `<name>_other` (another database), with the router's `rules`
/// (`rule.N = ...` values in order) and every role of `roles` in the userlist.
async fn start(
    pg: &PgCluster,
    db: &TestDb,
    other: &TestDb,
    pool_size: u32,
    roles: &[&Role],
    rules: &[String],
) -> anyhow::Result<Pooler> {
    let databases = [
        entry(pg, db, &format!("pool_size={pool_size}")),
        db_line(
            pg,
            &format!("{}_session", db.name),
            &db.name,
            "pool_mode=session pool_size=2",
        ),
        db_line(pg, &format!("{}_other", db.name), &other.name, ""),
    ]
    .join("\n");
    let mut userlist = db.userlist_line();
    for r in roles {
        userlist.push_str(&userlist_line(&r.name, &r.password));
    }
    let mut plugins = String::from("plugin.router.path = builtin:router\n");
    for (i, rule) in rules.iter().enumerate() {
        plugins.push_str(&format!("plugin.router.config.rule.{} = {rule}\n", i + 1));
    }
    Pooler::start_with_plugins(
        &databases,
        "pool_mode = transaction\nauth_type = md5",
        &userlist,
        &plugins,
    )
    .await
}

async fn connect(pooler: &Pooler, r: &Role, db: &str) -> anyhow::Result<Client> {
    pooler.connect(&r.name, &r.password, db).await
}

/// How a second client of the same pool fares while the first holds a session setting: whether the first
/// keeps its server (and the setting) across transactions, and whether the second got another server.
struct Sharing {
    first_kept_server: bool,
    first_kept_setting: bool,
    second_got_another_server: bool,
}

/// Two clients of one pool, one after the other: in transaction mode with servers to spare the second
/// takes the first's idle server; in session mode the first keeps it for its whole session.
async fn sharing(first: &Client, second: &Client) -> anyhow::Result<Sharing> {
    first
        .batch_execute("SET statement_timeout = '4321ms'")
        .await?;
    let pid = backend_pid(first).await?;
    let other = backend_pid(second).await?;
    first.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
    let again = backend_pid(first).await?;
    let setting = scalar(first, "SHOW statement_timeout").await?;
    Ok(Sharing {
        first_kept_server: pid == again,
        first_kept_setting: setting == "4321ms",
        second_got_another_server: pid != other,
    })
}

fn pool_mode(pooler: &Pooler, key: KeyRef<'_>) -> Option<PoolMode> {
    pooler.state.pools.get(key).map(|p| p.settings().mode)
}

/// Runbook 003's plan for the analytics MCP: `rule.1 = user=<analytics> -> database=<session alias>
/// pool_mode=session`. The analytics role asks for the transaction alias and lands on the session one
/// (its SET persists, its backend stays its own); other users keep sharing servers in transaction mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_sends_the_analytics_role_to_the_session_alias() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_route_mcp", PasswordEncryption::Md5)?;
    let other = TestDb::create(pg, "plug_route_mcp_o", PasswordEncryption::Md5)?;
    let analytics = role(pg, "plug_analytics")?;
    let session_alias = format!("{}_session", db.name);
    let rule = format!(
        "user={} -> database={session_alias} pool_mode=session",
        analytics.name
    );
    let pooler = start(pg, &db, &other, 1, &[&analytics], &[rule]).await?;

    let a1 = connect(&pooler, &analytics, &db.name).await?;
    let a2 = connect(&pooler, &analytics, &db.name).await?;
    assert_eq!(scalar(&a1, "SELECT current_database()").await?, db.name);
    let s = sharing(&a1, &a2).await?;
    assert!(
        s.first_kept_server && s.first_kept_setting && s.second_got_another_server,
        "analytics clients are not in session mode: kept server {}, kept SET {}, second on another server {}",
        s.first_kept_server,
        s.first_kept_setting,
        s.second_got_another_server
    );
    let routed = KeyRef::routed(&session_alias, &analytics.name, Some(PoolMode::Session));
    assert_eq!(pool_mode(&pooler, routed), Some(PoolMode::Session));
    assert!(
        pooler
            .state
            .pools
            .get(KeyRef::new(&db.name, &analytics.name))
            .is_none(),
        "a pool on the transaction alias was made for the analytics role"
    );

    // Everyone else: transaction pooling on the alias they asked for, one server shared.
    let u1 = pooler.connect_as(&db).await?;
    let u2 = pooler.connect_as(&db).await?;
    let s = sharing(&u1, &u2).await?;
    assert!(
        !s.second_got_another_server,
        "the owner's clients do not share their server"
    );
    assert_eq!(
        pool_mode(&pooler, KeyRef::new(&db.name, &db.user)),
        Some(PoolMode::Transaction)
    );
    Ok(())
}

/// A deny rule refuses the connection with its own SQLSTATE and message, or the default ones, before
/// authentication (a wrong password gets the same answer); users no rule names log in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_deny_rules_refuse_the_connection() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_route_deny", PasswordEncryption::Md5)?;
    let other = TestDb::create(pg, "plug_route_deny_o", PasswordEncryption::Md5)?;
    let denied = role(pg, "plug_denied")?;
    let blocked = role(pg, "plug_blocked")?;
    let rules = [
        format!(
            "user={} -> deny sqlstate=42501 message=\"no access for {} here\" detail=\"rule.1 of the router\" hint=\"ask the DBA\"",
            denied.name, denied.name
        ),
        format!("user={} database={} -> deny", blocked.name, db.name),
    ];
    let pooler = start(pg, &db, &other, 2, &[&denied, &blocked], &rules).await?;

    let err = connect(&pooler, &denied, &db.name)
        .await
        .expect_err("denied user logged in");
    assert_login_refused(
        &err,
        "42501",
        &format!("no access for {} here", denied.name),
    );
    let fields = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .map(|d| (d.detail().map(str::to_owned), d.hint().map(str::to_owned)));
    assert_eq!(
        fields,
        Some((
            Some("rule.1 of the router".to_owned()),
            Some("ask the DBA".to_owned())
        ))
    );
    let err = pooler
        .connect(&denied.name, "wrong password", &db.name)
        .await
        .expect_err("denied user logged in with a wrong password");
    assert_login_refused(
        &err,
        "42501",
        &format!("no access for {} here", denied.name),
    );

    let err = connect(&pooler, &blocked, &db.name)
        .await
        .expect_err("blocked user logged in");
    assert_login_refused(
        &err,
        "28000",
        "connection refused by pgwarden router (rule.2)",
    );
    // The rule names a database: the blocked user may use another.
    let elsewhere = connect(&pooler, &blocked, &format!("{}_other", db.name)).await?;
    assert_eq!(
        scalar(&elsewhere, "SELECT current_user").await?,
        blocked.name
    );

    let owner = pooler.connect_as(&db).await?;
    assert_eq!(scalar(&owner, "SELECT current_database()").await?, db.name);
    Ok(())
}

/// application_name and client address conditions: a reporting application goes to another database;
/// a user is refused from 10.0.0.0/8, routed when it comes from 127.0.0.1/32, refused over the Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_matches_application_name_and_client_address() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_route_cond", PasswordEncryption::Md5)?;
    let other = TestDb::create(pg, "plug_route_cond_o", PasswordEncryption::Md5)?;
    let net = role(pg, "plug_net")?;
    let other_alias = format!("{}_other", db.name);
    let rules = [
        format!("application_name=\"Reports *\",batch-? -> database={other_alias}"),
        format!(
            "user={} client=10.0.0.0/8 -> deny message=\"not from the office network\"",
            net.name
        ),
        format!(
            "user={} client=192.168.0.0/16,127.0.0.1/32 -> database={other_alias}",
            net.name
        ),
        format!(
            "user={} client=unix -> deny message=\"no local logins\"",
            net.name
        ),
    ];
    let pooler = start(pg, &db, &other, 2, &[&net], &rules).await?;

    let with_app = |app: &str| {
        let mut config = Config::new();
        config
            .host("127.0.0.1")
            .port(pooler.port)
            .user(&db.user)
            .password(&db.password)
            .dbname(&db.name)
            .application_name(app)
            .connect_timeout(Duration::from_secs(10));
        config
    };
    for (app, expected) in [
        ("Reports nightly", &other.name),
        ("batch-7", &other.name),
        ("reports nightly", &db.name),
        ("batch-17", &db.name),
        ("psql", &db.name),
    ] {
        let client = pgwarden_tests::clients::connect_config(&with_app(app)).await?;
        assert_eq!(
            &scalar(&client, "SELECT current_database()").await?,
            expected,
            "application_name {app:?}"
        );
    }

    // Over TCP from 127.0.0.1: the 10.0.0.0/8 rule does not match, the 127.0.0.1/32 one does.
    let tcp = connect(&pooler, &net, &db.name).await?;
    assert_eq!(scalar(&tcp, "SELECT current_database()").await?, other.name);
    // Over the Unix socket.
    let mut unix = Config::new();
    unix.host_path(&pooler.dir)
        .port(pooler.port)
        .user(&net.name)
        .password(&net.password)
        .dbname(&db.name)
        .connect_timeout(Duration::from_secs(10));
    let err = match unix.connect(NoTls).await {
        Ok(_) => panic!("a Unix-socket client was not refused"),
        Err(e) => e,
    };
    crate::pool_support::assert_fatal(&err, "28000", "no local logins");
    // The owner over the Unix socket is not concerned.
    unix.user(&db.user).password(&db.password);
    let owner = pgwarden_tests::clients::connect_config(&unix).await?;
    assert_eq!(scalar(&owner, "SELECT current_database()").await?, db.name);
    Ok(())
}

/// `pool_mode=session` alone: the user keeps the database it asked for, in a session-mode pool of its own,
/// while the alias's other users share servers in transaction mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_overrides_the_pool_mode_only() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_route_mode", PasswordEncryption::Md5)?;
    let other = TestDb::create(pg, "plug_route_mode_o", PasswordEncryption::Md5)?;
    let sessions = role(pg, "plug_sessions")?;
    let transactions = role(pg, "plug_transactions")?;
    let rules = [format!("user={} -> pool_mode=session", sessions.name)];
    let pooler = start(pg, &db, &other, 2, &[&sessions, &transactions], &rules).await?;

    let s1 = connect(&pooler, &sessions, &db.name).await?;
    let s2 = connect(&pooler, &sessions, &db.name).await?;
    assert_eq!(scalar(&s1, "SELECT current_database()").await?, db.name);
    let s = sharing(&s1, &s2).await?;
    assert!(
        s.first_kept_server && s.first_kept_setting && s.second_got_another_server,
        "not in session mode: kept server {}, kept SET {}, second on another server {}",
        s.first_kept_server,
        s.first_kept_setting,
        s.second_got_another_server
    );
    assert_eq!(
        pool_mode(
            &pooler,
            KeyRef::routed(&db.name, &sessions.name, Some(PoolMode::Session))
        ),
        Some(PoolMode::Session)
    );

    let t1 = connect(&pooler, &transactions, &db.name).await?;
    let t2 = connect(&pooler, &transactions, &db.name).await?;
    let s = sharing(&t1, &t2).await?;
    assert!(
        !s.second_got_another_server,
        "transaction-mode clients do not share"
    );
    Ok(())
}

/// `server_user=`: every routed client logs in with its own password but reaches PostgreSQL as the forced
/// user, all in one pool (one server here), like `user=` in `[databases]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_server_user_puts_clients_in_one_pool() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_route_su", PasswordEncryption::Md5)?;
    let other = TestDb::create(pg, "plug_route_su_o", PasswordEncryption::Md5)?;
    let forced = role(pg, "plug_forced")?;
    let etl1 = role(pg, "plug_etl_a")?;
    let etl2 = role(pg, "plug_etl_b")?;
    let rules = [format!(
        "user={},{} -> server_user={}",
        etl1.name, etl2.name, forced.name
    )];
    let pooler = start(pg, &db, &other, 1, &[&forced, &etl1, &etl2], &rules).await?;

    let c1 = connect(&pooler, &etl1, &db.name).await?;
    let c2 = connect(&pooler, &etl2, &db.name).await?;
    for c in [&c1, &c2] {
        assert_eq!(
            scalar(c, "SELECT current_user || ' ' || session_user").await?,
            format!("{0} {0}", forced.name)
        );
    }
    assert_eq!(backend_pid(&c1).await?, backend_pid(&c2).await?);
    assert!(
        pooler
            .state
            .pools
            .get(KeyRef::new(&db.name, &forced.name))
            .is_some()
    );
    for r in [&etl1, &etl2] {
        assert!(
            pooler
                .state
                .pools
                .get(KeyRef::new(&db.name, &r.name))
                .is_none(),
            "a pool for {} itself",
            r.name
        );
    }
    // The client still proves who it is.
    let err = pooler
        .connect(&etl1.name, "wrong", &db.name)
        .await
        .expect_err("logged in with a wrong password");
    assert_login_refused(
        &err,
        "28P01",
        &format!("password authentication failed for user \"{}\"", etl1.name),
    );
    // Users no rule names reach PostgreSQL as themselves.
    let owner = pooler.connect_as(&db).await?;
    assert_eq!(scalar(&owner, "SELECT current_user").await?, db.user);
    Ok(())
}
