//! Authentication, both sides: `auth_type` trust, plain, md5 and scram-sha-256 against `auth_file` secrets
//! (a plain password, an `md5…` hash, a `SCRAM-SHA-256$…` verifier copied from pg_authid); md5 turning into
//! SCRAM for users whose secret is a verifier; server logins from the stored secret or from the keys of the
//! client's own SCRAM exchange (pass-through); PostgreSQL's failure texts; pools that can never log in
//! failing at once with an explanation.

use std::time::{Duration, Instant};

use anyhow::bail;
use pgwarden::protocol::backend::Authentication;
use pgwarden_tests::clients;
use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use pgwarden_tests::raw::{Msg, RawClient};
use tokio_postgres::Client;

/// A login role of the shared cluster (no database of its own: it uses a TestDb's, open to PUBLIC).
struct Role {
    name: String,
    password: String,
}

impl Role {
    fn create(pg: &PgCluster, prefix: &str, enc: PasswordEncryption) -> anyhow::Result<Self> {
        let name = PgCluster::unique_name(prefix);
        let password = format!("pw_{name}");
        Self::create_named(pg, name, password, enc)
    }

    fn create_named(
        pg: &PgCluster,
        name: String,
        password: String,
        enc: PasswordEncryption,
    ) -> anyhow::Result<Self> {
        pg.create_role(&name, &password, enc)?;
        Ok(Self { name, password })
    }
}

/// One `auth_file` line, quotes in the user name or secret doubled as the format wants.
fn entry(user: &str, secret: &str) -> String {
    format!(
        "\"{}\" \"{}\"\n",
        user.replace('"', "\"\""),
        secret.replace('"', "\"\"")
    )
}

/// A `[databases]` line pointing `alias` at database `dbname` of the shared cluster.
fn db_line(pg: &PgCluster, alias: &str, dbname: &str) -> String {
    format!(
        "{alias} = host=127.0.0.1 port={} dbname={dbname}",
        pg.port()
    )
}

async fn current_user(client: &Client) -> anyhow::Result<String> {
    Ok(client
        .query_one("SELECT current_user::text", &[])
        .await?
        .get(0))
}

/// Logs in through the pooler and checks the session really runs on a server as `user`.
async fn assert_logs_in(pooler: &Pooler, user: &str, password: &str, db: &str) {
    let client = match pooler.connect(user, password, db).await {
        Ok(c) => c,
        Err(e) => panic!("{user:?} could not log in: {e:#}"),
    };
    match current_user(&client).await {
        Ok(u) => assert_eq!(u, user),
        Err(e) => panic!("query as {user:?} failed: {e:#}"),
    }
}

/// SQLSTATE and message of the FATAL error a failed login carried.
fn login_error(res: anyhow::Result<Client>) -> (String, String) {
    let err = match res {
        Ok(_) => panic!("login succeeded, expected it to fail"),
        Err(e) => e,
    };
    let Some(db) = err
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::as_db_error)
    else {
        panic!("login failed without a server error: {err:#}")
    };
    assert_eq!(db.severity(), "FATAL", "{db:?}");
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Asserts the wrong-password failure for `user`: 28P01, with PostgreSQL's words (md5, clear text) or
/// PgBouncer's (SCRAM).
async fn assert_password_failed(pooler: &Pooler, user: &str, password: &str, db: &str) {
    let expected = crate::pool_support::wrong_password_message(pooler.port, user, db)
        .await
        .unwrap_or_else(|e| panic!("{user:?}: {e:#}"));
    let (code, message) = login_error(pooler.connect(user, password, db).await);
    assert_eq!(code, "28P01", "{user:?}: {message}");
    assert_eq!(message, expected, "{user:?}");
}

/// The first Authentication request the pooler sends a client logging in as `user`.
async fn first_auth_request(port: u16, user: &str, database: &str) -> anyhow::Result<Msg> {
    let mut client = RawClient::connect(port).await?;
    client
        .send_startup(&[("user", user), ("database", database)])
        .await?;
    loop {
        match client.recv().await? {
            Some(m) if m.tag == b'R' => return Ok(m),
            Some(m) if m.tag == b'E' => bail!("error before any authentication: {:?}", m.error()),
            Some(_) => {}
            None => bail!("connection closed before an authentication request"),
        }
    }
}

/// A short name for an Authentication request: `ok`, `cleartext`, `md5`, `sasl:<mechanisms>`.
fn auth_kind(m: &Msg) -> String {
    match Authentication::parse(&m.body) {
        Ok(Authentication::Ok) => "ok".into(),
        Ok(Authentication::CleartextPassword) => "cleartext".into(),
        Ok(Authentication::Md5Password { .. }) => "md5".into(),
        Ok(Authentication::Sasl { mechanisms }) => format!("sasl:{}", mechanisms.join(",")),
        other => format!("{other:?}"),
    }
}

async fn assert_first_request(pooler: &Pooler, user: &str, db: &str, expected: &str) {
    match first_auth_request(pooler.port, user, db).await {
        Ok(m) => assert_eq!(auth_kind(&m), expected, "first request for {user:?}"),
        Err(e) => panic!("{user:?}: {e:#}"),
    }
}

/// auth_type = md5 with every kind of auth_file secret: a plain password and an md5 hash are checked with
/// MD5, a SCRAM verifier makes the pooler ask for SCRAM instead; comment lines are skipped and `""` is a quote
/// in names and passwords. The server logins use md5 from the plain password or the hash, SCRAM from a plain
/// password, and pass-through keys for the verifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_auth_checks_plain_md5_and_scram_secrets() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "auth_md5", PasswordEncryption::Md5)?;
    let hashed = Role::create(pg, "auth_md5_hash", PasswordEncryption::Md5)?;
    let scram = Role::create(pg, "auth_md5_scram", PasswordEncryption::Scram)?;
    let quoted = Role::create_named(
        pg,
        format!("{}\"q", PgCluster::unique_name("auth_md5_quote")),
        "pa\"ss \"\"word".to_owned(),
        PasswordEncryption::Scram,
    )?;
    // Exists in PostgreSQL, but its auth_file line is commented out.
    let ghost = Role::create(pg, "auth_md5_ghost", PasswordEncryption::Md5)?;

    let userlist = format!(
        "; userlist for {}\n# {}\n\n{}{}{}  {}",
        db.name,
        entry(&ghost.name, &ghost.password).trim_end(),
        entry(&db.user, &db.password),
        entry(&hashed.name, &pg.role_secret(&hashed.name)?),
        entry(&scram.name, &pg.role_secret(&scram.name)?),
        entry(&quoted.name, &quoted.password),
    );
    assert!(pg.role_secret(&hashed.name)?.starts_with("md5"));
    assert!(pg.role_secret(&scram.name)?.starts_with("SCRAM-SHA-256$"));
    let pooler = Pooler::start(
        &db_line(pg, "app", &db.name),
        "auth_type = md5\npool_mode = transaction",
        &userlist,
    )
    .await?;

    assert_first_request(&pooler, &db.user, "app", "md5").await;
    assert_first_request(&pooler, &hashed.name, "app", "md5").await;
    assert_first_request(&pooler, &scram.name, "app", "sasl:SCRAM-SHA-256").await;
    assert_first_request(&pooler, &quoted.name, "app", "md5").await;

    assert_logs_in(&pooler, &db.user, &db.password, "app").await;
    assert_logs_in(&pooler, &hashed.name, &hashed.password, "app").await;
    assert_logs_in(&pooler, &scram.name, &scram.password, "app").await;
    assert_logs_in(&pooler, &quoted.name, &quoted.password, "app").await;

    assert_password_failed(&pooler, &db.user, "wrong", "app").await;
    assert_password_failed(&pooler, &hashed.name, &db.password, "app").await;
    assert_password_failed(&pooler, &scram.name, "wrong", "app").await;
    assert_password_failed(&pooler, &quoted.name, "pa\"ss", "app").await;
    assert_password_failed(&pooler, &ghost.name, &ghost.password, "app").await;
    let unknown = PgCluster::unique_name("auth_md5_nobody");
    assert_password_failed(&pooler, &unknown, "whatever", "app").await;
    Ok(())
}

/// auth_type = scram-sha-256: every client is asked for SCRAM (even unknown users); plain passwords and
/// verifiers work, an md5 hash cannot (SCRAM needs more than it holds), and failures read like PostgreSQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_auth_type_checks_plain_and_verifier_secrets() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "auth_scram", PasswordEncryption::Scram)?;
    let verifier = Role::create(pg, "auth_scram_ver", PasswordEncryption::Scram)?;
    let hashed = Role::create(pg, "auth_scram_hash", PasswordEncryption::Md5)?;
    let userlist = format!(
        "{}{}{}",
        entry(&db.user, &db.password),
        entry(&verifier.name, &pg.role_secret(&verifier.name)?),
        entry(&hashed.name, &pg.role_secret(&hashed.name)?),
    );
    let pooler = Pooler::start(
        &db_line(pg, "app", &db.name),
        "auth_type = scram-sha-256",
        &userlist,
    )
    .await?;
    let unknown = PgCluster::unique_name("auth_scram_nobody");
    for user in [&db.user, &verifier.name, &hashed.name, &unknown] {
        assert_first_request(&pooler, user, "app", "sasl:SCRAM-SHA-256").await;
    }

    assert_logs_in(&pooler, &db.user, &db.password, "app").await;
    assert_logs_in(&pooler, &verifier.name, &verifier.password, "app").await;

    // The right password, but an md5 hash cannot verify a SCRAM exchange: refused like a wrong one.
    assert_password_failed(&pooler, &hashed.name, &hashed.password, "app").await;
    assert_password_failed(&pooler, &db.user, "wrong", "app").await;
    assert_password_failed(&pooler, &verifier.name, &db.password, "app").await;
    assert_password_failed(&pooler, &unknown, "whatever", "app").await;
    Ok(())
}

/// auth_type = plain: the client is asked for a cleartext password, checked against a plain password or an
/// md5 hash; the server login then uses md5 from either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_auth_type_checks_cleartext_against_plain_and_md5_secrets() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "auth_plain", PasswordEncryption::Md5)?;
    let hashed = Role::create(pg, "auth_plain_hash", PasswordEncryption::Md5)?;
    let userlist = format!(
        "{}{}",
        entry(&db.user, &db.password),
        entry(&hashed.name, &pg.role_secret(&hashed.name)?),
    );
    let pooler = Pooler::start(
        &db_line(pg, "app", &db.name),
        "auth_type = plain",
        &userlist,
    )
    .await?;

    assert_first_request(&pooler, &db.user, "app", "cleartext").await;
    assert_first_request(&pooler, &hashed.name, "app", "cleartext").await;
    assert_logs_in(&pooler, &db.user, &db.password, "app").await;
    assert_logs_in(&pooler, &hashed.name, &hashed.password, "app").await;

    assert_password_failed(&pooler, &db.user, "wrong", "app").await;
    assert_password_failed(&pooler, &hashed.name, &db.password, "app").await;
    let unknown = PgCluster::unique_name("auth_plain_nobody");
    assert_password_failed(&pooler, &unknown, "whatever", "app").await;
    Ok(())
}

/// auth_type = trust: a user listed in auth_file gets in without being asked for a password (the server
/// login still uses the listed password); a user not in auth_file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_admits_listed_users_only() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "auth_trust", PasswordEncryption::Md5)?;
    let unlisted = Role::create(pg, "auth_trust_unlisted", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &db_line(pg, "app", &db.name),
        "auth_type = trust",
        &db.userlist_line(),
    )
    .await?;

    let mut raw = RawClient::connect(pooler.port).await?;
    let msgs = raw
        .login(&[("user", &db.user), ("database", "app")], "")
        .await?;
    let first = msgs.iter().find(|m| m.tag == b'R');
    assert_eq!(first.map(auth_kind).as_deref(), Some("ok"), "{msgs:?}");
    assert_eq!(msgs.last().map(|m| m.tag), Some(b'Z'), "{msgs:?}");

    let client = clients::connect("127.0.0.1", pooler.port, &db.user, None, "app").await?;
    assert_eq!(current_user(&client).await?, db.user);

    let refused = clients::connect(
        "127.0.0.1",
        pooler.port,
        &unlisted.name,
        Some(&unlisted.password),
        "app",
    )
    .await;
    let (code, message) = login_error(refused);
    assert_eq!(code, "28000", "{message}");
    assert_eq!(message, "\"trust\" authentication failed");
    Ok(())
}

/// SCRAM pass-through: PostgreSQL holds a SCRAM verifier for the role, auth_file holds the same verifier, and
/// no plain password exists anywhere. The keys from the client's exchange log in every server the pool opens,
/// not just the first; a wrong password is still refused once the pool has keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_pass_through_opens_servers_without_a_plain_password() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "auth_pass", PasswordEncryption::Scram)?;
    let verifier = pg.role_secret(&db.user)?;
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let pooler = Pooler::start(
        &db_line(pg, "app", &db.name),
        "auth_type = scram-sha-256\npool_mode = transaction\ndefault_pool_size = 3",
        &entry(&db.user, &verifier),
    )
    .await?;
    let config_text = std::fs::read_to_string(pooler.ini_path())?
        + &std::fs::read_to_string(pooler.userlist_path())?;
    assert!(!config_text.contains(&db.password), "{config_text}");

    // Three transactions open at once need three servers, each logged in with the client's keys.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let c = pooler.connect(&db.user, &db.password, "app").await?;
        c.batch_execute("BEGIN").await?;
        let row = c
            .query_one("SELECT current_user::text, pg_backend_pid()", &[])
            .await?;
        assert_eq!(row.get::<_, String>(0), db.user);
        sessions.push((c, row.get::<_, i32>(1)));
    }
    let mut pids: Vec<i32> = sessions.iter().map(|(_, pid)| *pid).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), 3, "{pids:?}");
    assert_eq!(pg.backend_count_async(&db.name).await?, 3);
    for (c, _) in &sessions {
        c.batch_execute("COMMIT").await?;
    }
    assert_password_failed(&pooler, &db.user, "wrong", "app").await;
    Ok(())
}

/// How long a login may take to fail when the pool can never log in. The pooler's own waits are far longer
/// (query_wait_timeout 120 s, server_connect_timeout 15 s), so a pooler that waits is caught.
const FAIL_FAST: Duration = Duration::from_secs(2);

/// Connects and returns the error with how long it took, bounding the wait well above FAIL_FAST.
async fn timed_login_error(
    pooler: &Pooler,
    user: &str,
    password: &str,
    db: &str,
) -> (String, String, Duration) {
    let start = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(10), pooler.connect(user, password, db))
        .await
        .unwrap_or_else(|_| panic!("login of {user:?} to {db:?} still waiting after 10 s"));
    let (code, message) = login_error(res);
    (code, message, start.elapsed())
}

/// A database entry with a forced `user=` whose only secret is a SCRAM verifier, while PostgreSQL asks that
/// role for SCRAM: no client can ever provide keys for it, so every client is told why at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_user_with_only_a_scram_verifier_fails_fast() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "auth_forced", PasswordEncryption::Md5)?;
    let forced = Role::create(pg, "auth_forced_scram", PasswordEncryption::Scram)?;
    let userlist = format!(
        "{}{}",
        db.userlist_line(),
        entry(&forced.name, &pg.role_secret(&forced.name)?)
    );
    let pooler = Pooler::start(
        &format!("{} user={}", db_line(pg, "forced", &db.name), forced.name),
        "auth_type = md5",
        &userlist,
    )
    .await?;

    for attempt in 0..2 {
        let (code, message, took) =
            timed_login_error(&pooler, &db.user, &db.password, "forced").await;
        assert!(
            took < FAIL_FAST,
            "attempt {attempt} took {took:?}: {message}"
        );
        assert!(
            message.contains(&format!(
                "cannot log in to the server as \"{}\"",
                forced.name
            )) && message.contains("SCRAM verifier"),
            "attempt {attempt}: {code} {message}"
        );
        assert_ne!(code, "28P01", "the client's own password was right");
    }
    Ok(())
}

/// A client authenticated with md5 against an md5 hash in auth_file, while PostgreSQL holds a SCRAM verifier
/// for the role and asks for SCRAM: an md5 hash cannot answer that, and the client hears so at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_hash_cannot_answer_a_scram_server_and_says_so_at_once() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "auth_md5_to_scram", PasswordEncryption::Scram)?;
    let hash = pgwarden::auth::md5_secret(&db.password, &db.user);
    let pooler = Pooler::start(
        &db_line(pg, "app", &db.name),
        "auth_type = md5",
        &entry(&db.user, &hash),
    )
    .await?;
    assert_first_request(&pooler, &db.user, "app", "md5").await;

    let (code, message, took) = timed_login_error(&pooler, &db.user, &db.password, "app").await;
    assert!(took < FAIL_FAST, "took {took:?}: {message}");
    assert_eq!(code, "28000", "{message}");
    assert!(
        message.contains(&format!("cannot log in to the server as \"{}\"", db.user))
            && message.contains("asks for SCRAM-SHA-256")
            && message.contains("md5"),
        "{message}"
    );
    // The next client gets the cached explanation, also at once.
    let (_, again, took) = timed_login_error(&pooler, &db.user, &db.password, "app").await;
    assert!(took < FAIL_FAST, "took {took:?}: {again}");
    assert!(again.contains("asks for SCRAM-SHA-256"), "{again}");
    // A wrong password is still the client's own failure, decided before any server login.
    assert_password_failed(&pooler, &db.user, "wrong", "app").await;
    Ok(())
}

/// PostgreSQL's own login errors reach the client unchanged: a `[databases]` entry naming a database that
/// does not exist gives PostgreSQL's 3D000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_login_errors_pass_through() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "auth_nodb", PasswordEncryption::Md5)?;
    let missing = PgCluster::unique_name("auth_no_such_db");
    let pooler = Pooler::start(
        &db_line(pg, "gone", &missing),
        "auth_type = md5",
        &db.userlist_line(),
    )
    .await?;
    let (code, message) = login_error(pooler.connect(&db.user, &db.password, "gone").await);
    assert_eq!(code, "3D000", "{message}");
    assert_eq!(message, format!("database \"{missing}\" does not exist"));
    Ok(())
}

/// A password longer than any secret can hold is a wrong password (28P01), as in PgBouncer, not a malformed
/// message: the limit on authentication messages leaves room above PostgreSQL's 65,535-byte token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_password_is_a_wrong_password() -> anyhow::Result<()> {
    let pg = PgCluster::shared();
    let db = TestDb::create(pg, "auth_long", PasswordEncryption::Md5)?;
    let pooler = Pooler::start(
        &db_line(pg, "app", &db.name),
        "auth_type = plain\npool_mode = transaction",
        &entry(&db.user, &db.password),
    )
    .await?;
    assert_password_failed(&pooler, &db.user, &"x".repeat(70_000), "app").await;
    assert_logs_in(&pooler, &db.user, &db.password, "app").await;
    Ok(())
}
