//! The shipped `auth-query` plugin, loaded by itself from PgBouncer's `auth_user` / `auth_query` in a plain
//! `pgbouncer.ini`: runbook 003's lookup role and SECURITY DEFINER function, users missing from
//! userlist.txt logging in with md5 and SCRAM (pass-through) secrets, refusals, `auth_dbname`, a
//! database's own `auth_user`, `cache_ttl`, and the runbook's traps (its query names the function's
//! columns wrong; a userlist holding only the lookup role's SCRAM verifier).

use std::time::{Duration, Instant};

use pgwarden_tests::pg::quote_literal;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};

use super::support::{Counts, plugin};
use crate::pool_support::{assert_login_refused, db_line, entry, scalar, userlist_line};

/// Runbook 003's `auth_setup.sql`, verbatim.
const AUTH_SETUP: &str = include_str!("../../../examples/runbook-003/auth_setup.sql");

/// The lookup that matches `auth_setup.sql`'s function (its output columns are `uname`, `phash`).
const LOOKUP: &str = "SELECT uname, phash FROM pgbouncer.user_lookup($1)";

/// The same, with no row for a role pg_shadow does not list (the function returns NULLs then).
const LOOKUP_ROWS: &str =
    "SELECT uname, phash FROM pgbouncer.user_lookup($1) WHERE uname IS NOT NULL";

/// A role of the test, with its password.
struct Role {
    name: String,
    password: String,
}

impl Role {
    fn create(pg: &PgCluster, prefix: &str, enc: PasswordEncryption) -> anyhow::Result<Self> {
        let name = PgCluster::unique_name(prefix);
        let password = format!("pw_{name}");
        pg.create_role(&name, &password, enc)?;
        Ok(Self { name, password })
    }
}

/// Runs runbook 003's `auth_setup.sql` on `db` as the superuser, for a lookup role of a unique name (roles
/// are shared by the whole cluster and tests run in parallel) with password `password`, created with
/// `enc`. Returns the role.
fn auth_setup(pg: &PgCluster, db: &str, enc: PasswordEncryption) -> anyhow::Result<Role> {
    let name = PgCluster::unique_name("pgbouncer_auth");
    let password = format!("pw_{name}");
    let sql = AUTH_SETUP
        .replace("pgbouncer_auth", &name)
        .replace(":'pgb_pw'", &quote_literal(&password));
    pg.exec(
        db,
        &format!("SET password_encryption = '{}'; {sql}", enc.setting()),
    )?;
    Ok(Role { name, password })
}

/// The users the userlist does not know: one with an md5 secret, one with a SCRAM verifier.
struct Users {
    md5: Role,
    scram: Role,
}

fn users(pg: &PgCluster) -> anyhow::Result<Users> {
    Ok(Users {
        md5: Role::create(pg, "plug_aq_md5", PasswordEncryption::Md5)?,
        scram: Role::create(pg, "plug_aq_scram", PasswordEncryption::Scram)?,
    })
}

async fn login_as(pooler: &Pooler, r: &Role, db: &str) -> anyhow::Result<tokio_postgres::Client> {
    pooler.connect(&r.name, &r.password, db).await
}

/// Fails unless logging in as `user` with `password` is refused as a wrong password.
async fn assert_wrong_password(pooler: &Pooler, user: &str, password: &str, db: &str) {
    let err = pooler
        .connect(user, password, db)
        .await
        .err()
        .unwrap_or_else(|| panic!("{user} logged in with password {password:?}"));
    let expected = crate::pool_support::wrong_password_message(pooler.port, user, db)
        .await
        .unwrap_or_else(|e| panic!("{user:?}: {e:#}"));
    assert_login_refused(&err, "28P01", &expected);
}

/// Who the server session belongs to, as PostgreSQL sees it.
async fn whoami(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    scalar(client, "SELECT session_user || ' ' || current_database()").await
}

/// Runbook 003's setup in a plain pgbouncer.ini (no `[pgwarden]` section): `auth_user` and `auth_query`
/// bring the auth-query plugin by themselves. Users absent from userlist.txt log in with their md5 and
/// SCRAM passwords (the SCRAM user's server login needs the client's SCRAM keys: pass-through), wrong
/// passwords and unknown users get 28P01, and the lookup role's own login is the userlist's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_from_a_plain_ini_logs_in_users_missing_from_the_userlist() -> anyhow::Result<()>
{
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_plain", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &db.name, PasswordEncryption::Md5)?;
    let u = users(pg)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        &format!(
            "auth_type = md5\npool_mode = transaction\nauth_user = {}\nauth_query = {LOOKUP}",
            auth.name
        ),
        &userlist_line(&auth.name, &auth.password),
    )
    .await?;
    let text = std::fs::read_to_string(pooler.ini_path())?;
    assert!(!text.contains("[pgwarden]"), "{text}");
    let auto = plugin(&pooler, "auth_query")?;

    let before = Counts::of(&auto.stats);
    for r in [&u.md5, &u.scram] {
        let client = login_as(&pooler, r, &db.name).await?;
        assert_eq!(whoami(&client).await?, format!("{} {}", r.name, db.name));
    }
    // Each login asked the plugin once (cache_ttl is 0, as in PgBouncer).
    assert_eq!(Counts::of(&auto.stats).since(before).calls, 2);

    for r in [&u.md5, &u.scram] {
        assert_wrong_password(&pooler, &r.name, "not the password", &db.name).await;
    }
    // A login role without a password: the function returns its name and a NULL secret.
    let nopw = PgCluster::unique_name("plug_aq_nopw");
    pg.exec("postgres", &format!("CREATE ROLE {nopw} LOGIN"))?;
    assert_wrong_password(&pooler, &nopw, "whatever", &db.name).await;
    // No such role: the runbook's function still returns a row, of NULLs. pgwarden reads that as "no such
    // user" (PgBouncer drops the server connection instead): a wrong-password refusal, which does not
    // tell the client whether the role exists.
    let nobody = PgCluster::unique_name("plug_aq_nobody");
    assert_wrong_password(&pooler, &nobody, "whatever", &db.name).await;

    // The lookup role itself is a userlist user.
    let client = login_as(&pooler, &auth, &db.name).await?;
    assert_eq!(whoami(&client).await?, format!("{} {}", auth.name, db.name));
    Ok(())
}

/// An `auth_query` that names columns the function does not have (`usename, passwd` for the function's
/// `uname`, `phash`: an easy slip): the login is refused at once with the server's reason,
/// not as a wrong password and not after a wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_with_wrong_column_names_refuses_clearly() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_cols", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &db.name, PasswordEncryption::Md5)?;
    let u = users(pg)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        &format!(
            "auth_type = md5\nauth_user = {}\n\
             auth_query = SELECT usename, passwd FROM pgbouncer.user_lookup($1)",
            auth.name
        ),
        &userlist_line(&auth.name, &auth.password),
    )
    .await?;
    let started = Instant::now();
    let err = login_as(&pooler, &u.md5, &db.name)
        .await
        .expect_err("logged in through a failing auth_query");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_login_refused(
        &err,
        "28000",
        &format!(
            "could not look up user \"{}\": auth_query as \"{}\" on database \"{}\" failed: \
             column \"usename\" does not exist",
            u.md5.name, auth.name, db.name
        ),
    );
    Ok(())
}

/// `auth_dbname`: the lookup function lives only in another database, where every lookup runs; an alias
/// whose own `auth_dbname` is itself looks up in its database, which has no such function. A database's
/// own `auth_user` replaces the global one for its clients (here the global one may not run the
/// function). A query that returns no row makes unknown and NOLOGIN users wrong-password refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_auth_dbname_and_per_database_auth_user() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_dbn", PasswordEncryption::Md5)?;
    let authdb = TestDb::create(pg, "plug_aq_dbn_auth", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &authdb.name, PasswordEncryption::Md5)?;
    // Another login role, not granted the function.
    let outsider = Role::create(pg, "plug_aq_outsider", PasswordEncryption::Md5)?;
    let u = users(pg)?;
    let here = format!("{}_here", db.name);
    let granted = format!("{}_granted", db.name);
    let databases = [
        entry(pg, &db, ""),
        entry(pg, &authdb, ""),
        // Looks up in the client's database (no auth_dbname here or globally for this alias).
        db_line(pg, &here, &db.name, &format!("auth_dbname={here}")),
        // Its own auth_user, who may run the function.
        db_line(pg, &granted, &db.name, &format!("auth_user={}", auth.name)),
    ]
    .join("\n");
    let userlist = [
        userlist_line(&auth.name, &auth.password),
        userlist_line(&outsider.name, &outsider.password),
    ]
    .concat();
    let pooler = Pooler::start_with_plugins(
        &databases,
        &format!(
            "auth_type = md5\nauth_user = {}\nauth_query = {LOOKUP_ROWS}\nauth_dbname = {}",
            outsider.name, authdb.name
        ),
        &userlist,
        "",
    )
    .await?;

    // Global auth_user (the outsider) on the auth database: not allowed to run the function.
    let err = login_as(&pooler, &u.md5, &db.name)
        .await
        .expect_err("outsider's lookup worked");
    assert_login_refused(
        &err,
        "28000",
        &format!(
            "could not look up user \"{}\": auth_query as \"{}\" on database \"{}\" failed: \
             permission denied for schema pgbouncer",
            u.md5.name, outsider.name, authdb.name
        ),
    );
    // The alias's own auth_user, on the global auth_dbname: logs in.
    for r in [&u.md5, &u.scram] {
        let client = login_as(&pooler, r, &granted).await?;
        assert_eq!(whoami(&client).await?, format!("{} {}", r.name, db.name));
        assert_wrong_password(&pooler, &r.name, "wrong", &granted).await;
    }
    // No row: an unknown user, or a role that cannot log in (pg_shadow does not list it).
    let nobody = PgCluster::unique_name("plug_aq_nobody");
    assert_wrong_password(&pooler, &nobody, "whatever", &granted).await;
    pg.exec(
        "postgres",
        &format!("CREATE ROLE {nobody}_nl NOLOGIN PASSWORD 'whatever'"),
    )?;
    assert_wrong_password(&pooler, &format!("{nobody}_nl"), "whatever", &granted).await;
    // The alias's own auth_dbname (its own database, without the function).
    let err = login_as(&pooler, &u.md5, &here)
        .await
        .expect_err("lookup in a database without the function");
    assert_login_refused(
        &err,
        "28000",
        &format!(
            "could not look up user \"{}\": auth_query as \"{}\" on database \"{}\" failed: \
             schema \"pgbouncer\" does not exist",
            u.md5.name, outsider.name, here
        ),
    );
    Ok(())
}

/// `cache_ttl` on an explicitly configured auth-query plugin (named `auth_query`, so it replaces the
/// automatic one): the lookup function records each call in a table; within the TTL a second login does
/// not run it (one row, one plugin call) yet still checks the password; with the automatic plugin (TTL 0)
/// every login runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_cache_ttl_skips_the_query() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_ttl", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &db.name, PasswordEncryption::Md5)?;
    pg.exec(
        &db.name,
        &format!(
            "CREATE TABLE pgbouncer.calls(usename text, at timestamptz DEFAULT now()); \
             CREATE FUNCTION pgbouncer.logged_lookup(i_username text, out uname text, out phash text) \
             RETURNS record AS $$ \
             BEGIN \
                 INSERT INTO pgbouncer.calls(usename) VALUES (i_username); \
                 SELECT u.uname, u.phash FROM pgbouncer.user_lookup(i_username) u INTO uname, phash; \
             END $$ LANGUAGE plpgsql SECURITY DEFINER; \
             REVOKE ALL ON FUNCTION pgbouncer.logged_lookup(text) FROM public; \
             GRANT EXECUTE ON FUNCTION pgbouncer.logged_lookup(text) TO {}",
            auth.name
        ),
    )?;
    let u = users(pg)?;
    let query = "SELECT uname, phash FROM pgbouncer.logged_lookup($1)";
    let calls = |user: &str| {
        let sql = format!(
            "SELECT count(*) FROM pgbouncer.calls WHERE usename = {}",
            quote_literal(user)
        );
        let db = db.name.clone();
        async move { pg.query_scalar_async(&db, &sql).await }
    };

    // The automatic plugin, overridden by name with a TTL.
    let settings = format!(
        "auth_type = md5\nauth_user = {}\nauth_query = {query}",
        auth.name
    );
    let explicit = format!(
        "plugin.auth_query.path = builtin:auth-query\nplugin.auth_query.cache_ttl = 30s\n\
         plugin.auth_query.config.auth_user = {}\nplugin.auth_query.config.auth_query = {query}",
        auth.name
    );
    let userlist = userlist_line(&auth.name, &auth.password);
    let pooler =
        Pooler::start_with_plugins(&entry(pg, &db, ""), &settings, &userlist, &explicit).await?;
    let p = plugin(&pooler, "auth_query")?;
    assert_eq!(p.spec.cache_ttl, Duration::from_secs(30));
    let before = Counts::of(&p.stats);
    for r in [&u.md5, &u.scram] {
        for _ in 0..2 {
            let client = login_as(&pooler, r, &db.name).await?;
            assert_eq!(whoami(&client).await?, format!("{} {}", r.name, db.name));
        }
        assert_wrong_password(&pooler, &r.name, "wrong", &db.name).await;
        assert_eq!(calls(&r.name).await?, "1", "lookups of {}", r.name);
    }
    assert_eq!(Counts::of(&p.stats).since(before).calls, 2);
    drop(pooler);

    // TTL 0: every login runs the query.
    let pooler = Pooler::start_with_plugins(&entry(pg, &db, ""), &settings, &userlist, "").await?;
    for _ in 0..2 {
        login_as(&pooler, &u.md5, &db.name).await?;
    }
    assert_eq!(calls(&u.md5.name).await?, "3");
    Ok(())
}

/// The runbook's trap: userlist.txt generated from pg_shadow holds only the lookup role's SCRAM verifier,
/// with which pgwarden cannot log in to PostgreSQL as that role. A user found only by the lookup is
/// refused at once (well under 2 s) with a clear reason, not left waiting; userlist users are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_with_only_a_scram_verifier_for_the_auth_user_fails_fast() -> anyhow::Result<()>
{
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_trap", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &db.name, PasswordEncryption::Scram)?;
    let verifier = pg.role_secret(&auth.name)?;
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let u = users(pg)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        &format!(
            "auth_type = scram-sha-256\npool_mode = transaction\nauth_user = {}\nauth_query = {LOOKUP}",
            auth.name
        ),
        &format!("{}{}", userlist_line(&auth.name, &verifier), db.userlist_line()),
    )
    .await?;
    let started = Instant::now();
    let err = login_as(&pooler, &u.scram, &db.name)
        .await
        .expect_err("logged in although the lookup cannot run");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "refused after {took:?}");
    let e = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error())
        .unwrap_or_else(|| panic!("not a server error: {err:#}"));
    assert_eq!((e.severity(), e.code().code()), ("FATAL", "28000"), "{e:?}");
    let prefix = format!("could not look up user \"{}\": ", u.scram.name);
    assert!(
        e.message().starts_with(&prefix)
            && e.message().contains(&auth.name)
            && e.message().contains("SCRAM verifier"),
        "unclear refusal: {:?}",
        e.message()
    );
    // Userlist users are not concerned.
    let owner = pooler.connect_as(&db).await?;
    assert_eq!(whoami(&owner).await?, format!("{} {}", db.user, db.name));
    Ok(())
}

/// A plugin's deadline (`timeout`, 100ms by default) is for its own work: a lookup whose query takes
/// 300ms on the server (pg_sleep) still answers, with an explicitly configured auth-query plugin left at
/// the default deadline; a plugin that spins is still stopped (see the failure tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_waiting_on_the_server_does_not_count_against_the_deadline() -> anyhow::Result<()>
{
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_slow", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &db.name, PasswordEncryption::Md5)?;
    let u = users(pg)?;
    let query = "SELECT uname, phash FROM pgbouncer.user_lookup($1), pg_sleep(0.3)";
    let pooler = Pooler::start_with_plugins(
        &entry(pg, &db, ""),
        "auth_type = md5",
        &userlist_line(&auth.name, &auth.password),
        &format!(
            "plugin.lookup.path = builtin:auth-query\nplugin.lookup.config.auth_user = {}\n\
             plugin.lookup.config.auth_query = {query}",
            auth.name
        ),
    )
    .await?;
    assert_eq!(
        plugin(&pooler, "lookup")?.spec.timeout,
        Duration::from_millis(100)
    );
    for r in [&u.md5, &u.scram] {
        let started = Instant::now();
        let client = login_as(&pooler, r, &db.name).await?;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(whoami(&client).await?, format!("{} {}", r.name, db.name));
    }
    Ok(())
}

/// `auth_user` on one database only, none global (PgBouncer's own test configuration does this): the
/// pooler starts, that database's users are looked up, and another database's users are not (only
/// auth_file users log in there: an unknown one is a wrong password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_with_auth_user_on_one_database_only() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_onedb", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &db.name, PasswordEncryption::Md5)?;
    let u = users(pg)?;
    let looked_up = format!("{}_aq", db.name);
    let databases = [
        entry(pg, &db, ""),
        db_line(
            pg,
            &looked_up,
            &db.name,
            &format!("auth_user={}", auth.name),
        ),
    ]
    .join("\n");
    let pooler = Pooler::start(
        &databases,
        &format!("auth_type = md5\nauth_query = {LOOKUP}"),
        &userlist_line(&auth.name, &auth.password),
    )
    .await?;
    for r in [&u.md5, &u.scram] {
        let client = login_as(&pooler, r, &looked_up).await?;
        assert_eq!(whoami(&client).await?, format!("{} {}", r.name, db.name));
        assert_wrong_password(&pooler, &r.name, &r.password, &db.name).await;
    }
    Ok(())
}

/// The console's `SET auth_user` / `SET auth_query` (PgBouncer's suite does this) rebuild the automatic
/// auth-query plugin at once: a user missing from the userlist is refused before, logs in after, and is
/// refused again once `auth_user` is cleared. Clients connected meanwhile are not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_set_auth_user_switches_the_lookup_on_and_off() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_set", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &db.name, PasswordEncryption::Md5)?;
    let u = users(pg)?;
    let pooler = Pooler::start(
        &entry(pg, &db, ""),
        &format!(
            "auth_type = md5\npool_mode = transaction\nadmin_users = {}",
            auth.name
        ),
        &userlist_line(&auth.name, &auth.password),
    )
    .await?;
    assert!(plugin(&pooler, "auth_query").is_err(), "no lookup yet");
    assert_wrong_password(&pooler, &u.md5.name, &u.md5.password, &db.name).await;

    let console = pooler
        .connect(&auth.name, &auth.password, "pgbouncer")
        .await?;
    let bystander = login_as(&pooler, &auth, &db.name).await?;
    console
        .simple_query(&format!("SET auth_query = '{LOOKUP}'"))
        .await?;
    console
        .simple_query(&format!("SET auth_user = '{}'", auth.name))
        .await?;
    let client = login_as(&pooler, &u.md5, &db.name).await?;
    assert_eq!(
        whoami(&client).await?,
        format!("{} {}", u.md5.name, db.name)
    );
    assert_wrong_password(&pooler, &u.md5.name, "not the password", &db.name).await;

    console.simple_query("SET auth_user = ''").await?;
    assert_wrong_password(&pooler, &u.md5.name, &u.md5.password, &db.name).await;
    // Sessions that logged in meanwhile go on.
    assert_eq!(
        whoami(&client).await?,
        format!("{} {}", u.md5.name, db.name)
    );
    assert_eq!(
        whoami(&bystander).await?,
        format!("{} {}", auth.name, db.name)
    );
    Ok(())
}

/// auth_type = trust with auth_user (PgBouncer's suite does this for a superuser without a password): a role
/// the lookup finds without a password logs in, as in PgBouncer, while a role it does not find is refused
/// with `"trust" authentication failed`. Under md5 the same password-less role never logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_admits_a_role_the_lookup_finds_without_a_password() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_trust", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &db.name, PasswordEncryption::Md5)?;
    let nopw = PgCluster::unique_name("plug_aq_trust_nopw");
    pg.exec("postgres", &format!("CREATE ROLE {nopw} LOGIN"))?;
    // Over the Unix socket, where the cluster trusts every role (the role has no password to give).
    let databases = format!(
        "{} = host={} port={} dbname={}",
        db.name,
        pg.socket_dir().display(),
        pg.port(),
        db.name
    );
    let settings = |auth_type: &str| {
        format!(
            "auth_type = {auth_type}\nauth_user = {}\nauth_query = {LOOKUP}",
            auth.name
        )
    };
    let userlist = userlist_line(&auth.name, &auth.password);
    let trusting = Pooler::start(&databases, &settings("trust"), &userlist).await?;
    let client = trusting.connect(&nopw, "", &db.name).await?;
    assert_eq!(whoami(&client).await?, format!("{nopw} {}", db.name));
    let nobody = PgCluster::unique_name("plug_aq_trust_nobody");
    let err = trusting
        .connect(&nobody, "", &db.name)
        .await
        .expect_err("an unknown role got in under trust");
    assert_login_refused(&err, "28000", "\"trust\" authentication failed");

    let md5 = Pooler::start(&databases, &settings("md5"), &userlist).await?;
    assert_wrong_password(&md5, &nopw, "anything", &db.name).await;
    Ok(())
}

/// The lookup meets a database that cannot serve it. For a database pgwarden does not know, no lookup runs
/// and a user missing from the userlist fails authentication like any unknown user (nothing tells a
/// stranger which databases exist). For a `*` database PostgreSQL does not have, the lookup's own server
/// login is refused, and the client gets PostgreSQL's refusal (3D000), as in PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_on_a_missing_database_refuses_as_postgresql_does() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "plug_aq_nodb", PasswordEncryption::Md5)?;
    let auth = auth_setup(pg, &db.name, PasswordEncryption::Md5)?;
    let u = users(pg)?;
    let settings = format!(
        "auth_type = md5\nauth_user = {}\nauth_query = {LOOKUP}",
        auth.name
    );
    let userlist = userlist_line(&auth.name, &auth.password);
    let known_only = Pooler::start(&entry(pg, &db, ""), &settings, &userlist).await?;
    let missing = PgCluster::unique_name("plug_aq_nosuchdb");
    assert_wrong_password(&known_only, &u.md5.name, &u.md5.password, &missing).await;

    let fallback = format!("* = host=127.0.0.1 port={}", pg.port());
    let with_fallback = Pooler::start(&fallback, &settings, &userlist).await?;
    let err = with_fallback
        .connect(&u.md5.name, &u.md5.password, &missing)
        .await
        .expect_err("logged in to a database PostgreSQL does not have");
    assert_login_refused(
        &err,
        "3D000",
        &format!("database \"{missing}\" does not exist"),
    );
    // The lookup still works where the database exists.
    let client = login_as(&with_fallback, &u.md5, &db.name).await?;
    assert_eq!(
        whoami(&client).await?,
        format!("{} {}", u.md5.name, db.name)
    );
    Ok(())
}
