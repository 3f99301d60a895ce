//! `builtin:readonly` on one alias of a database while another alias of the same database stays writable:
//! every way a client could write through the read-only alias is refused with 25006 before it reaches
//! PostgreSQL (simple and extended protocol), reads keep working, a refusal fails the transaction as
//! PostgreSQL's would, and the alias's server connections are read-only themselves.

use pgwarden_tests::pg::{PasswordEncryption, PgCluster};
use pgwarden_tests::pooler::{Pooler, TestDb};
use tokio_postgres::Client;

use super::support::{assert_error, psql_error, psql_errors, psql_verbose, ro_denial};
use crate::pool_support::{db_line, entry, scalar};

/// A test database with a writable alias (its own name) and a read-only one (`<name>_ro`), some objects
/// to write to, and a pooler in transaction mode.
struct Setup {
    pg: &'static PgCluster,
    db: TestDb,
    ro: String,
    pooler: Pooler,
}

/// Tables, a sequence, a function and a procedure that write; created through the writable alias.
const OBJECTS: &str = "CREATE TABLE t(id int PRIMARY KEY, v text); \
     INSERT INTO t VALUES (1, 'a'), (2, 'b'); \
     CREATE SEQUENCE s; \
     CREATE FUNCTION w() RETURNS int LANGUAGE plpgsql AS $$BEGIN INSERT INTO t VALUES (99, 'w'); RETURN 1; END$$; \
     CREATE PROCEDURE p() LANGUAGE plpgsql AS $$BEGIN INSERT INTO t VALUES (98, 'p'); END$$";

/// Everything a write could change, as seen by the superuser: t's rows, its columns, comment and
/// privileges, the sequence, and how many relations and functions exist (temporary ones included).
const FINGERPRINT: &str = "SELECT concat_ws(' | ', \
       (SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM t), \
       (SELECT count(*) FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum > 0 AND NOT attisdropped), \
       coalesce(obj_description('t'::regclass, 'pg_class'), '-'), \
       coalesce((SELECT relacl::text FROM pg_class WHERE oid = 't'::regclass), '-'), \
       (SELECT last_value || ':' || is_called FROM s), \
       (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'), \
       (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace))";

impl Setup {
    async fn start(prefix: &str) -> anyhow::Result<Self> {
        let pg = PgCluster::shared();
        let db = TestDb::create(pg, prefix, PasswordEncryption::Md5)?;
        let ro = format!("{}_ro", db.name);
        let databases = format!("{}\n{}", entry(pg, &db, ""), db_line(pg, &ro, &db.name, ""));
        let pooler = Pooler::start_with_plugins(
            &databases,
            "pool_mode = transaction\nauth_type = md5\ndefault_pool_size = 3",
            &db.userlist_line(),
            &format!("plugin.readonly.path = builtin:readonly\nplugin.readonly.databases = {ro}"),
        )
        .await?;
        pooler.connect_as(&db).await?.batch_execute(OBJECTS).await?;
        Ok(Self { pg, db, ro, pooler })
    }

    async fn ro_client(&self) -> anyhow::Result<Client> {
        self.pooler
            .connect(&self.db.user, &self.db.password, &self.ro)
            .await
    }

    async fn fingerprint(&self) -> anyhow::Result<String> {
        self.pg.query_scalar_async(&self.db.name, FINGERPRINT).await
    }
}

/// Bypass attempts: the SQL and the command the refusal names.
const WRITES: &[(&str, &str)] = &[
    ("INSERT INTO t VALUES (3, 'c')", "INSERT"),
    ("UPDATE t SET v = 'x'", "UPDATE"),
    ("DELETE FROM t", "DELETE"),
    (
        "MERGE INTO t USING (VALUES (1)) AS s(id) ON t.id = s.id WHEN MATCHED THEN DELETE",
        "MERGE",
    ),
    ("TRUNCATE t", "TRUNCATE"),
    ("CREATE TABLE t2(a int)", "CREATE"),
    ("CREATE TEMP TABLE tt(a int)", "CREATE"),
    ("CREATE INDEX ON t(v)", "CREATE"),
    ("ALTER TABLE t ADD COLUMN extra int", "ALTER"),
    ("DROP TABLE t", "DROP"),
    ("GRANT ALL ON t TO PUBLIC", "GRANT"),
    ("COMMENT ON TABLE t IS 'x'", "COMMENT"),
    ("LOCK TABLE t", "LOCK"),
    // Re-enabling writes for the session or the transaction.
    ("SET default_transaction_read_only = off", "SET"),
    ("SET default_transaction_read_only TO 'off'", "SET"),
    ("set Default_Transaction_Read_Only=OFF", "SET"),
    ("SET \"default_transaction_read_only\" = false", "SET"),
    ("SET SESSION default_transaction_read_only TO 0", "SET"),
    ("SET LOCAL default_transaction_read_only = off", "SET"),
    ("SET transaction_read_only = off", "SET"),
    ("SET SESSION \"transaction_read_only\" TO 'false'", "SET"),
    ("SET LOCAL transaction_read_only TO off", "SET"),
    ("RESET default_transaction_read_only", "RESET"),
    ("RESET \"transaction_read_only\"", "RESET"),
    ("RESET ALL", "RESET"),
    ("DISCARD ALL", "DISCARD"),
    ("SET ROLE NONE", "SET"),
    ("SET SESSION AUTHORIZATION DEFAULT", "SET"),
    ("BEGIN READ WRITE", "BEGIN"),
    (
        "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
        "START",
    ),
    ("SET TRANSACTION READ WRITE", "SET"),
    (
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "SET",
    ),
    (
        "SELECT set_config('default_transaction_read_only', 'off', false)",
        "SELECT",
    ),
    (
        "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)",
        "SELECT",
    ),
    (
        "WITH c AS (SELECT set_config('default_transaction_read_only', 'off', false)) SELECT * FROM c",
        "WITH",
    ),
    (
        "SELECT upper((SELECT set_config('transaction_read_only', 'off', true)))",
        "SELECT",
    ),
    (
        "SELECT U&\"\\0073et_config\"('default_transaction_read_only', 'off', false)",
        "SELECT",
    ),
    ("SELECT nextval('s')", "SELECT"),
    // Running code the lexer cannot see into.
    ("DO $$BEGIN INSERT INTO t VALUES (97, 'do'); END$$", "DO"),
    ("CALL p()", "CALL"),
    ("COPY t FROM STDIN", "COPY"),
    ("VACUUM t", "VACUUM"),
    ("NOTIFY ch", "NOTIFY"),
    // Writes wrapped in reads.
    (
        "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d",
        "DELETE",
    ),
    (
        "WITH x AS (SELECT 1) INSERT INTO t SELECT 5, 'e' FROM x",
        "INSERT",
    ),
    ("SELECT * INTO t3 FROM t", "SELECT"),
    ("SELECT * FROM t FOR UPDATE", "SELECT"),
    ("SELECT * FROM t FOR SHARE", "SELECT"),
    ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN"),
    (
        "EXPLAIN (ANALYZE, COSTS OFF) UPDATE t SET v = 'x'",
        "EXPLAIN",
    ),
    ("PREPARE x AS INSERT INTO t VALUES (4, 'd')", "PREPARE"),
    ("CREATE TABLE t4 AS SELECT * FROM t", "CREATE"),
    // Comments, case, quoting.
    ("/* read only */DELETE FROM t", "DELETE"),
    ("-- a comment\nDELETE FROM t", "DELETE"),
    ("dElEtE FrOm t", "DELETE"),
    ("DELETE FROM \"t\" WHERE \"id\" = 1", "DELETE"),
    ("DELETE FROM public.\"t\"", "DELETE"),
];

/// Multi-statement strings: a Query message may carry them; a Parse may not (PostgreSQL refuses them),
/// but the policy answers first.
const MULTI: &[(&str, &str)] = &[
    ("SELECT 1; DELETE FROM t", "DELETE"),
    ("SELECT 'a;b'; DELETE FROM t", "DELETE"),
    ("SELECT E'it\\'s; fine'; DELETE FROM t", "DELETE"),
    ("SELECT $$ ; $$; UPDATE t SET v = 'x'", "UPDATE"),
    (
        "SELECT $q$ $$ ; $q$; INSERT INTO t VALUES (6, 'f')",
        "INSERT",
    ),
    (
        "SELECT \"a;b\" FROM (SELECT 1 AS \"a;b\") s; DELETE FROM t",
        "DELETE",
    ),
    ("SELECT 1 /* ; */; TRUNCATE t", "TRUNCATE"),
    ("BEGIN; DELETE FROM t; COMMIT", "DELETE"),
];

/// Simple protocol (psql, one Query message per case): every write is refused by the plugin with 25006,
/// and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_refuses_every_write_over_simple_protocol() -> anyhow::Result<()> {
    let s = Setup::start("plug_ro_simple").await?;
    let before = s.fingerprint().await?;
    let psql = psql_verbose(&s.pooler, &s.db.user, &s.db.password, &s.ro);
    let mut failures = Vec::new();
    for (sql, command) in WRITES.iter().chain(MULTI) {
        let expected = ("25006".to_owned(), ro_denial(command));
        match psql_error(&psql, sql).await {
            Ok(got) if got == expected => {}
            Ok(got) => failures.push(format!("{sql:?}: got {got:?}")),
            Err(e) => failures.push(format!("{sql:?}: {e:#}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(s.fingerprint().await?, before, "something was written");
    // The same statements through the writable alias do reach PostgreSQL.
    let rw = psql_verbose(&s.pooler, &s.db.user, &s.db.password, &s.db.name);
    rw.run_ok_async("INSERT INTO t VALUES (3, 'c')").await?;
    assert_ne!(s.fingerprint().await?, before);
    Ok(())
}

/// Extended protocol (tokio-postgres: every statement goes through Parse): the same refusals, also for
/// statements with parameters, and the client's session carries on after each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_refuses_every_write_over_extended_protocol() -> anyhow::Result<()> {
    let s = Setup::start("plug_ro_ext").await?;
    let before = s.fingerprint().await?;
    let client = s.ro_client().await?;
    let mut failures = Vec::new();
    for (sql, command) in WRITES.iter().chain(MULTI) {
        let expected = Some(("25006".to_owned(), ro_denial(command)));
        match client.prepare(sql).await {
            Ok(_) => failures.push(format!("{sql:?}: prepared")),
            Err(e) if super::support::code_message(&e) == expected => {}
            Err(e) => failures.push(format!("{sql:?}: {e:?}")),
        }
        // The session is usable after every refusal (the rest of the batch was dropped until Sync).
        let one: i32 = client.query_one("SELECT $1::int4", &[&1i32]).await?.get(0);
        assert_eq!(one, 1, "after {sql:?}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    assert_error(
        client
            .execute("INSERT INTO t VALUES ($1, $2)", &[&7i32, &"g"])
            .await,
        "25006",
        &ro_denial("INSERT"),
        "INSERT with parameters",
    );
    assert_error(
        client
            .query(
                "SELECT set_config($1, $2, false)",
                &[&"default_transaction_read_only", &"off"],
            )
            .await,
        "25006",
        &ro_denial("SELECT"),
        "set_config with parameters",
    );
    assert_error(
        client
            .query(
                "SELECT pg_catalog.set_config($1, $2, $3)",
                &[&"transaction_read_only", &"off", &true],
            )
            .await,
        "25006",
        &ro_denial("SELECT"),
        "qualified set_config with parameters",
    );
    let copy = client.copy_in::<_, bytes::Bytes>("COPY t FROM STDIN").await;
    assert_error(
        copy.map(|_| ()),
        "25006",
        &ro_denial("COPY"),
        "COPY FROM STDIN",
    );
    assert_eq!(
        scalar(&client, "SHOW default_transaction_read_only").await?,
        "on"
    );
    drop(client);
    assert_eq!(s.fingerprint().await?, before, "something was written");
    Ok(())
}

/// Reads, settings and transaction control work through the read-only alias in both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_lets_reads_through() -> anyhow::Result<()> {
    let s = Setup::start("plug_ro_reads").await?;
    let client = s.ro_client().await?;
    let v: String = client
        .query_one("SELECT v FROM t WHERE id = $1", &[&2i32])
        .await?
        .get(0);
    assert_eq!(v, "b");
    let stmt = client
        .prepare("SELECT count(*) FROM t WHERE id > $1")
        .await?;
    for (after, n) in [(0i32, 2i64), (1, 1), (2, 0)] {
        let got: i64 = client.query_one(&stmt, &[&after]).await?.get(0);
        assert_eq!(got, n);
    }
    for sql in [
        "SHOW default_transaction_read_only",
        "EXPLAIN SELECT * FROM t",
        "EXPLAIN (COSTS OFF) DELETE FROM t",
        "TABLE t",
        "VALUES (1), (2)",
        "WITH c AS (SELECT id FROM t) SELECT count(*) FROM c",
        "SELECT current_setting('default_transaction_read_only')",
        "SELECT * FROM t WHERE v = 'update; delete'",
    ] {
        client
            .query(sql, &[])
            .await
            .map_err(|e| anyhow::anyhow!("{sql:?}: {e:?}"))?;
    }
    client
        .batch_execute("BEGIN; SET LOCAL statement_timeout = '5s'; SELECT count(*) FROM t; COMMIT")
        .await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1; COMMIT")
        .await?;
    client
        .batch_execute("START TRANSACTION; SELECT count(*) FROM t; ROLLBACK")
        .await?;
    client
        .batch_execute("SET statement_timeout = '7s'; SET default_transaction_read_only = on")
        .await?;
    // What psycopg2's `set_session(readonly=True)` sends in autocommit mode (the runbook's analytics
    // service), and psycopg 3's read-only transactions.
    client
        .batch_execute("SET default_transaction_read_only TO 'on'")
        .await?;
    client
        .batch_execute("BEGIN READ ONLY; SELECT 1; COMMIT; START TRANSACTION READ ONLY; ROLLBACK")
        .await?;

    let psql = psql_verbose(&s.pooler, &s.db.user, &s.db.password, &s.ro);
    let out = psql
        .run_ok_async(
            "BEGIN; SET statement_timeout = 3000; SELECT string_agg(v, ',' ORDER BY id) FROM t; \
             SHOW transaction_read_only; COMMIT",
        )
        .await?;
    assert_eq!(out, "a,b\non");
    assert_eq!(
        psql.run_ok_async("EXPLAIN (COSTS OFF) SELECT * FROM t WHERE id = 1")
            .await?
            .lines()
            .next(),
        Some("Index Scan using t_pkey on t")
    );
    Ok(())
}

/// A refusal inside a transaction block fails the transaction as PostgreSQL's own refusal would: the
/// next statement gets 25P02, ROLLBACK ends it, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_refusal_fails_the_transaction() -> anyhow::Result<()> {
    let s = Setup::start("plug_ro_tx").await?;
    let client = s.ro_client().await?;
    client.batch_execute("BEGIN; SELECT 1").await?;
    assert_error(
        client
            .execute("DELETE FROM t WHERE id = $1", &[&1i32])
            .await,
        "25006",
        &ro_denial("DELETE"),
        "DELETE in a transaction",
    );
    let aborted = "current transaction is aborted, commands ignored until end of transaction block";
    assert_error(
        client.query("SELECT 1", &[]).await,
        "25P02",
        aborted,
        "extended query after the refusal",
    );
    assert_error(
        client.simple_query("SELECT 2").await,
        "25P02",
        aborted,
        "simple query after the refusal",
    );
    client.batch_execute("ROLLBACK").await?;
    assert_eq!(scalar(&client, "SELECT count(*) FROM t").await?, "2");

    // psql, one statement per Query message, carrying on after errors.
    let mut psql = psql_verbose(&s.pooler, &s.db.user, &s.db.password, &s.ro);
    psql.extra_args
        .extend(["-v".to_owned(), "ON_ERROR_STOP=0".to_owned()]);
    let out = psql
        .run_stdin_async(
            "BEGIN;\nSELECT 'in';\nUPDATE t SET v = 'x';\nSELECT 'ignored';\nROLLBACK;\nSELECT 'after';\n",
        )
        .await?;
    assert_eq!(
        psql_errors(&out),
        vec![
            ("25006".to_owned(), ro_denial("UPDATE")),
            ("25P02".to_owned(), aborted.to_owned()),
        ],
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout.trim(), "in\nafter");
    assert_eq!(
        s.pg.query_scalar_async(&s.db.name, "SELECT string_agg(v, ',' ORDER BY id) FROM t")
            .await?,
        "a,b"
    );
    Ok(())
}

/// Defence in depth: the read-only alias's server connections start with default_transaction_read_only
/// on, so a write the lexer cannot see (a user-defined function that inserts, called by a SELECT) is
/// refused by PostgreSQL itself; the writable alias is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_server_connections_are_read_only_too() -> anyhow::Result<()> {
    let s = Setup::start("plug_ro_depth").await?;
    let ro = s.ro_client().await?;
    assert_eq!(
        scalar(&ro, "SHOW default_transaction_read_only").await?,
        "on"
    );
    assert_eq!(scalar(&ro, "SHOW transaction_read_only").await?, "on");
    // PostgreSQL's own message, not the plugin's: the query reached the server.
    assert_error(
        ro.query("SELECT w()", &[]).await,
        "25006",
        "cannot execute INSERT in a read-only transaction",
        "extended SELECT w()",
    );
    assert_error(
        ro.simple_query("SELECT w()").await,
        "25006",
        "cannot execute INSERT in a read-only transaction",
        "simple SELECT w()",
    );
    let psql = psql_verbose(&s.pooler, &s.db.user, &s.db.password, &s.ro);
    assert_eq!(
        psql_error(&psql, "SELECT w()").await?,
        (
            "25006".to_owned(),
            "cannot execute INSERT in a read-only transaction".to_owned()
        )
    );
    assert_eq!(
        s.pg.query_scalar_async(&s.db.name, "SELECT count(*) FROM t")
            .await?,
        "2"
    );

    let rw = s.pooler.connect_as(&s.db).await?;
    assert_eq!(
        scalar(&rw, "SHOW default_transaction_read_only").await?,
        "off"
    );
    assert_eq!(scalar(&rw, "SELECT w()").await?, "1");
    assert_eq!(
        s.pg.query_scalar_async(&s.db.name, "SELECT count(*) FROM t")
            .await?,
        "3"
    );
    Ok(())
}

/// A FunctionCall message (the fastpath protocol libpq's `PQfn` and large objects use) with int/text
/// arguments in text format.
fn function_call(oid: u32, args: &[&str]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&oid.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&i16::try_from(args.len()).unwrap_or(0).to_be_bytes());
    for a in args {
        body.extend_from_slice(&i32::try_from(a.len()).unwrap_or(0).to_be_bytes());
        body.extend_from_slice(a.as_bytes());
    }
    body.extend_from_slice(&0i16.to_be_bytes());
    pgwarden_tests::raw::frame_bytes(b'F', &body)
}

/// The fastpath protocol is no way around the policy: a FunctionCall cannot be checked, so on the
/// read-only alias it is refused (0A000), and `set_config` called that way cannot make the session
/// writable for a write the lexer cannot see (the user-defined `w()`). Only a raw client can send a
/// chosen FunctionCall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_refuses_fastpath_function_calls() -> anyhow::Result<()> {
    use pgwarden_tests::raw::{RawClient, first_error};
    let s = Setup::start("plug_ro_fastpath").await?;
    let oid: u32 =
        s.pg.query_scalar_async(
            &s.db.name,
            "SELECT 'set_config(text,text,boolean)'::regprocedure::oid",
        )
        .await?
        .parse()?;
    let mut raw = RawClient::connect(s.pooler.port).await?;
    let login = raw
        .login(&[("user", &s.db.user), ("database", &s.ro)], &s.db.password)
        .await?;
    assert!(first_error(&login).is_none(), "{login:?}");
    raw.send(&function_call(
        oid,
        &["default_transaction_read_only", "off", "f"],
    ))
    .await?;
    let answer = raw.until_ready().await?;
    let error = first_error(&answer);
    let written = raw.query("SELECT w()").await?;
    let count =
        s.pg.query_scalar_async(&s.db.name, "SELECT count(*) FROM t")
            .await?;
    assert_eq!(
        count, "2",
        "written through the read-only alias: {written:?}"
    );
    let error = error.expect("the FunctionCall was answered without an error");
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        (
            "0A000",
            "fastpath function calls are not allowed where pgwarden checks queries"
        ),
        "{error:?}"
    );
    // The session carries on, still read-only: PostgreSQL itself refused the hidden write.
    let refused = first_error(&written).expect("SELECT w() succeeded");
    assert_eq!(
        (refused.code.as_str(), refused.message.as_str()),
        ("25006", "cannot execute INSERT in a read-only transaction")
    );
    let show = raw.query("SHOW default_transaction_read_only").await?;
    assert!(first_error(&show).is_none(), "{show:?}");
    assert!(
        show.iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(b"on")),
        "{show:?}"
    );
    Ok(())
}

/// `standard_conforming_strings` decides where a plain string with `\'` ends. With it on (the default),
/// `'a\'; DELETE FROM t; --'` is the string `a\` and then a DELETE; with it off (the client's startup
/// `options`), `\'` is an escaped quote and the whole text is one SELECT of a string, while
/// `'a\''; DELETE FROM t; --'` becomes `a'` and a DELETE (PostgreSQL 15 does exactly this when asked
/// directly). Whichever reading the client's session has, the text with a hidden DELETE is refused by the
/// plugin (its own message, not the read-only server's) and nothing is deleted. The pooler refuses the
/// harmless reading too: a statement that lexes differently under the other setting is never read-only
/// (the client could flip the setting in the same query). Backslashes away from quotes read the same
/// both ways and pass, and the option really reached the server (`'a\b'` is 3 characters or 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_follows_standard_conforming_strings() -> anyhow::Result<()> {
    let s = Setup::start("plug_ro_scs").await?;
    let before = s.fingerprint().await?;
    let hidden_when_on = r"SELECT 'a\'; DELETE FROM t; --'";
    let hidden_when_off = r"SELECT 'a\''; DELETE FROM t; --'";
    for (setting, length) in [("on", "3"), ("off", "2")] {
        let mut psql = psql_verbose(&s.pooler, &s.db.user, &s.db.password, &s.ro);
        psql.env.push((
            "PGOPTIONS".to_owned(),
            format!("-c standard_conforming_strings={setting}"),
        ));
        assert_eq!(
            psql.run_ok_async("SHOW standard_conforming_strings")
                .await?,
            setting
        );
        for sql in [hidden_when_on, hidden_when_off] {
            assert_eq!(
                psql_error(&psql, sql).await?,
                ("25006".to_owned(), ro_denial("SELECT")),
                "standard_conforming_strings={setting}: {sql}"
            );
            assert_eq!(s.fingerprint().await?, before, "{setting}: {sql} wrote");
        }
        assert_eq!(
            psql.run_ok_async(r"SELECT length('a\b'), count(*) FROM t")
                .await?,
            format!("{length}|2"),
            "standard_conforming_strings={setting}"
        );
    }
    // The writable alias, same texts: PostgreSQL's own reading decides, proving each hides a DELETE
    // exactly under the setting named above.
    for (setting, sql) in [("on", hidden_when_on), ("off", hidden_when_off)] {
        let mut psql = s.pooler.psql(&s.db);
        psql.env.push((
            "PGOPTIONS".to_owned(),
            format!("-c standard_conforming_strings={setting}"),
        ));
        psql.run_ok_async(sql).await?;
        assert_eq!(
            s.pg.query_scalar_async(&s.db.name, "SELECT count(*) FROM t")
                .await?,
            "0",
            "{setting}: {sql} did not delete on the writable alias"
        );
        s.pg.exec_async(&s.db.name, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
            .await?;
    }
    Ok(())
}

/// Parse (unnamed), Bind and Execute of `sql`, without a Sync: one statement of a pipelined batch.
fn extended_statement(sql: &str) -> Vec<u8> {
    use pgwarden_tests::raw::frame_bytes;
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    let mut out = frame_bytes(b'P', &parse);
    out.extend(frame_bytes(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
    out.extend(frame_bytes(b'E', &[0, 0, 0, 0, 0]));
    out
}

/// Pipelined batches (psycopg's pipeline mode, asyncpg's executemany): several statements, one Sync. A
/// refused statement after one that fails on the server is skipped by PostgreSQL, as the rest of any
/// failed batch is: the client gets the server's error and its ReadyForQuery, and its session carries on.
/// A refused statement after ones that succeed gets the plugin's error alone (no PL/pgSQL context from
/// pgwarden's stand-in), and the batch's transaction is rolled back as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_refusal_inside_a_pipelined_batch() -> anyhow::Result<()> {
    use pgwarden_tests::raw::{RawClient, first_error, frame_bytes};
    let s = Setup::start("plug_ro_pipeline").await?;
    let before = s.fingerprint().await?;
    let mut raw = RawClient::connect(s.pooler.port).await?;
    let login = raw
        .login(&[("user", &s.db.user), ("database", &s.ro)], &s.db.password)
        .await?;
    assert!(first_error(&login).is_none(), "{login:?}");

    // 1. The division fails first; the refused INSERT after it is never reached.
    let mut batch = extended_statement("SELECT 1/0");
    batch.extend(extended_statement("INSERT INTO t VALUES (5, 'e')"));
    batch.extend(frame_bytes(b'S', &[]));
    raw.send(&batch).await?;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), raw.until_ready())
        .await
        .map_err(|_| anyhow::anyhow!("no ReadyForQuery for the batch's Sync"))??;
    let errors: Vec<_> = answer.iter().filter_map(|m| m.error()).collect();
    assert_eq!(errors.len(), 1, "{answer:?}");
    assert_eq!(
        (errors[0].code.as_str(), errors[0].message.as_str()),
        ("22012", "division by zero")
    );
    let next = raw.query("SELECT 42").await?;
    assert!(first_error(&next).is_none(), "{next:?}");
    assert!(
        next.iter()
            .any(|m| m.tag == b'D' && m.body.ends_with(b"42")),
        "the session carries on: {next:?}"
    );

    // 2. A read succeeds, then the INSERT is refused: the plugin's error, nothing else.
    let mut batch = extended_statement("SELECT 1");
    batch.extend(extended_statement("INSERT INTO t VALUES (6, 'f')"));
    batch.extend(extended_statement("SELECT 2"));
    batch.extend(frame_bytes(b'S', &[]));
    raw.send(&batch).await?;
    let answer = raw.until_ready().await?;
    let tags: Vec<u8> = answer.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"12DCEZ".to_vec(), "{answer:?}");
    let error = answer[4].error().expect("an ErrorResponse");
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("25006", ro_denial("INSERT").as_str())
    );
    let fields = pgwarden::protocol::backend::error_fields(&answer[4].body)?;
    assert!(
        !fields.iter().any(|(f, _)| matches!(f, b'W' | b'n')),
        "the stand-in's context or marker reached the client: {fields:?}"
    );
    let next = raw.query("SELECT 43").await?;
    assert!(first_error(&next).is_none(), "{next:?}");
    assert_eq!(s.fingerprint().await?, before, "nothing written");
    Ok(())
}
