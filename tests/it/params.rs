//! Startup parameters: `ignore_startup_parameters`, PgBouncer's refusal of anything untracked (also inside
//! `options`), and tracked parameters in transaction mode: every client always sees its own values,
//! whichever server it lands on, and the pooler's hidden SETs never show.

use anyhow::Context;
use pgwarden_tests::pooler::{Pooler, TestDb};
use pgwarden_tests::raw::{RawClient, first_error, parameter_statuses};
use tokio_postgres::NoTls;

use crate::protocol::{
    data_rows, expect_fatal_then_close, raw_login, raw_row, setup, start_pooler, tags,
};

/// Connects with tokio-postgres using `options` and an application name; the raw tokio-postgres result.
async fn connect_with(
    pooler: &Pooler,
    db: &TestDb,
    options: Option<&str>,
    app: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(pooler.port)
        .user(&db.user)
        .password(&db.password)
        .dbname(&db.name);
    if let Some(o) = options {
        config.options(o);
    }
    if let Some(a) = app {
        config.application_name(a);
    }
    let (client, conn) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Expects a login refused by the pooler: FATAL 08P01 with exactly `message`.
fn assert_refused(res: Result<tokio_postgres::Client, tokio_postgres::Error>, message: &str) {
    let err = match res {
        Ok(_) => panic!("login was accepted, expected {message:?}"),
        Err(e) => e,
    };
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {err}"));
    assert_eq!(
        (db.severity(), db.code().code(), db.message()),
        ("FATAL", "08P01", message)
    );
}

/// A raw login with `params` that the pooler must refuse with exactly `message`.
async fn raw_refused(
    pooler: &Pooler,
    params: &[(&str, &str)],
    message: &str,
) -> anyhow::Result<()> {
    let mut c = RawClient::connect(pooler.port).await?;
    c.send_startup(params).await?;
    expect_fatal_then_close(&mut c, message).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_startup_parameters_admits_listed_ones_and_refuses_the_rest() -> anyhow::Result<()> {
    let (db, strict) = setup("params_ignore", "default_pool_size = 1").await?;
    let lenient = start_pooler(
        &db,
        "default_pool_size = 1\nignore_startup_parameters = extra_float_digits",
    )
    .await?;
    let base = [("user", db.user.as_str()), ("database", db.name.as_str())];
    let with = |k: &'static str, v: &'static str| {
        let mut p = base.to_vec();
        p.push((k, v));
        p
    };

    // Listed: the client gets in, and the parameter is dropped, not passed to the server.
    let (mut c, _) = raw_login(&lenient, &db, &[("extra_float_digits", "3")]).await?;
    assert_eq!(
        raw_row(&mut c, "show extra_float_digits").await?,
        ["1"],
        "the server default: the ignored value never reached PostgreSQL"
    );

    // Not listed, not tracked: PgBouncer's refusal.
    raw_refused(
        &lenient,
        &with("geqo", "off"),
        "unsupported startup parameter: geqo",
    )
    .await?;
    raw_refused(
        &strict,
        &with("extra_float_digits", "3"),
        "unsupported startup parameter: extra_float_digits",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_carry_tracked_settings_and_refuse_untracked_ones() -> anyhow::Result<()> {
    let (db, pooler) = setup("params_options", "default_pool_size = 1").await?;

    let client = connect_with(
        &pooler,
        &db,
        Some("-c TimeZone=Asia/Tokyo --intervalstyle=iso_8601"),
        None,
    )
    .await?;
    let row = client
        .query_one(
            "select current_setting('TimeZone'), current_setting('IntervalStyle')",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "Asia/Tokyo");
    assert_eq!(row.get::<_, String>(1), "iso_8601");

    // The runbook's analytics DSN: refused, naming the first untracked setting.
    assert_refused(
        connect_with(
            &pooler,
            &db,
            Some("-c default_transaction_read_only=on -c statement_timeout=30000"),
            None,
        )
        .await,
        "unsupported startup parameter in options: default_transaction_read_only",
    );
    assert_refused(
        connect_with(&pooler, &db, Some("-c TimeZone=UTC --work-mem=64MB"), None).await,
        "unsupported startup parameter in options: work_mem",
    );
    assert_refused(
        connect_with(&pooler, &db, Some("-X"), None).await,
        "unsupported options startup parameter: only '-c config=val' and '--config=val' are allowed",
    );

    // `options` in ignore_startup_parameters: untracked settings are dropped, tracked ones still apply.
    let lenient = start_pooler(
        &db,
        "default_pool_size = 1\nignore_startup_parameters = options",
    )
    .await?;
    let client = connect_with(
        &lenient,
        &db,
        Some("-c statement_timeout=30000 -c TimeZone=Asia/Tokyo"),
        None,
    )
    .await?;
    let row = client
        .query_one(
            "select current_setting('statement_timeout'), current_setting('TimeZone')",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "0", "dropped");
    assert_eq!(row.get::<_, String>(1), "Asia/Tokyo", "tracked");
    Ok(())
}

const SETTINGS_SQL: &str = "select current_setting('TimeZone'), current_setting('DateStyle'), \
     current_setting('IntervalStyle'), current_setting('application_name'), \
     current_setting('client_encoding'), current_setting('standard_conforming_strings'), \
     pg_backend_pid()::text";

/// What a client should see, in SETTINGS_SQL's order (without the pid).
type Expected<'a> = [&'a str; 6];

async fn check_tp(
    client: &tokio_postgres::Client,
    want: Expected<'_>,
    pid: &str,
    step: &str,
) -> anyhow::Result<()> {
    let row = client
        .query_one(SETTINGS_SQL, &[])
        .await
        .context(step.to_owned())?;
    let got: Vec<String> = (0..7).map(|i| row.get::<_, String>(i)).collect();
    assert_eq!(got[..6], want, "client A, {step}");
    assert_eq!(got[6], pid, "client A, {step}: one server for everyone");
    Ok(())
}

async fn check_raw(
    c: &mut RawClient,
    want: Expected<'_>,
    pid: &str,
    step: &str,
) -> anyhow::Result<()> {
    let msgs = c.query(SETTINGS_SQL).await?;
    // Exactly the answer to this query: the pooler's SETs, their CommandComplete, ReadyForQuery and
    // ParameterStatus messages stay hidden.
    assert_eq!(tags(&msgs), "TDCZ", "client B, {step}: {msgs:?}");
    let row = data_rows(&msgs).remove(0);
    let got: Vec<String> = row.into_iter().map(Option::unwrap_or_default).collect();
    assert_eq!(got[..6], want, "client B, {step}");
    assert_eq!(got[6], pid, "client B, {step}: one server for everyone");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_parameters_follow_each_client_on_a_shared_server() -> anyhow::Result<()> {
    let (db, pooler) = setup("params_tracked", "default_pool_size = 1").await?;

    // A: tokio-postgres (client_encoding UTF8), its settings in options, lower-case names.
    let a = connect_with(
        &pooler,
        &db,
        Some("-c timezone=Europe/Berlin -c datestyle=SQL,DMY -c intervalstyle=iso_8601"),
        Some("client-a"),
    )
    .await?;
    // B: raw, every tracked parameter as its own startup parameter.
    let (mut b, welcome) = raw_login(
        &pooler,
        &db,
        &[
            ("TimeZone", "America/New_York"),
            ("DateStyle", "German, DMY"),
            ("IntervalStyle", "postgres_verbose"),
            ("application_name", "client-b"),
            ("client_encoding", "LATIN1"),
            ("standard_conforming_strings", "off"),
        ],
    )
    .await?;
    let told = parameter_statuses(&welcome);
    for (name, value) in [
        ("TimeZone", "America/New_York"),
        ("DateStyle", "German, DMY"),
        ("IntervalStyle", "postgres_verbose"),
        ("application_name", "client-b"),
        ("client_encoding", "LATIN1"),
        ("standard_conforming_strings", "off"),
    ] {
        assert!(
            told.iter().any(|(k, v)| k == name && v == value),
            "B's welcome must report its own {name}={value}: {told:?}"
        );
    }

    let pid = a
        .query_one("select pg_backend_pid()::text", &[])
        .await?
        .get::<_, String>(0);
    let mut want_a = [
        "Europe/Berlin",
        "SQL, DMY",
        "iso_8601",
        "client-a",
        "UTF8",
        "on",
    ];
    let mut want_b = [
        "America/New_York",
        "German, DMY",
        "postgres_verbose",
        "client-b",
        "LATIN1",
        "off",
    ];
    for round in 0..3 {
        check_tp(&a, want_a, &pid, &format!("round {round}")).await?;
        check_raw(&mut b, want_b, &pid, &format!("round {round}")).await?;
    }

    // SHOW, in both protocols' hands.
    let show = |msgs: Vec<tokio_postgres::SimpleQueryMessage>| {
        msgs.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
    };
    assert_eq!(
        show(a.simple_query("SHOW TimeZone").await?).as_deref(),
        Some("Europe/Berlin")
    );
    assert_eq!(
        raw_row(&mut b, "SHOW TimeZone").await?,
        ["America/New_York"]
    );
    assert_eq!(
        show(a.simple_query("SHOW DateStyle").await?).as_deref(),
        Some("SQL, DMY")
    );
    assert_eq!(raw_row(&mut b, "SHOW DateStyle").await?, ["German, DMY"]);

    // A SET outside a transaction is learnt from the server's ParameterStatus and follows the client.
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'").await?;
    want_a[0] = "Asia/Tokyo";
    check_raw(&mut b, want_b, &pid, "after A's SET TimeZone").await?;
    check_tp(&a, want_a, &pid, "after A's SET TimeZone").await?;

    let msgs = b
        .query("SET application_name = 'client-b2'; SET DateStyle = 'Postgres, MDY'")
        .await?;
    let reported = parameter_statuses(&msgs);
    assert_eq!(
        reported,
        vec![
            ("application_name".to_owned(), "client-b2".to_owned()),
            ("DateStyle".to_owned(), "Postgres, MDY".to_owned()),
        ],
        "B's own SETs are reported to B"
    );
    want_b[1] = "Postgres, MDY";
    want_b[3] = "client-b2";
    check_tp(&a, want_a, &pid, "after B's SETs").await?;
    check_raw(&mut b, want_b, &pid, "after B's SETs").await?;

    // A SET rolled back is forgotten again (the server reports the old value at ROLLBACK).
    a.batch_execute("BEGIN; SET TimeZone = 'Asia/Kolkata'; ROLLBACK")
        .await?;
    check_raw(&mut b, want_b, &pid, "after A's rolled-back SET").await?;
    check_tp(&a, want_a, &pid, "after A's rolled-back SET").await?;
    // And a committed one sticks.
    a.batch_execute("BEGIN; SET TimeZone = 'Australia/Sydney'; COMMIT")
        .await?;
    want_a[0] = "Australia/Sydney";
    check_raw(&mut b, want_b, &pid, "after A's committed SET").await?;
    check_tp(&a, want_a, &pid, "after A's committed SET").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn track_extra_parameters_admits_and_tracks_one_more_setting() -> anyhow::Result<()> {
    let (db, plain) = setup("params_extra", "default_pool_size = 1").await?;
    let tracking = start_pooler(
        &db,
        "default_pool_size = 1\ntrack_extra_parameters = IntervalStyle, default_transaction_read_only",
    )
    .await?;
    let params = [
        ("user", db.user.as_str()),
        ("database", db.name.as_str()),
        ("default_transaction_read_only", "on"),
    ];
    raw_refused(
        &plain,
        &params,
        "unsupported startup parameter: default_transaction_read_only",
    )
    .await?;

    let (mut ro, _) = raw_login(&tracking, &db, &params[2..]).await?;
    let rw = connect_with(&tracking, &db, None, None).await?;
    for round in 0..2 {
        let msgs = ro
            .query(&format!("create table ro_{round} (i int)"))
            .await?;
        let e = first_error(&msgs)
            .with_context(|| format!("round {round}: the read-only client could write"))?;
        assert_eq!(e.code, "25006", "round {round}: {e}");
        rw.batch_execute(&format!("create table rw_{round} (i int)"))
            .await
            .with_context(|| format!("round {round}: the other client became read-only"))?;
        assert_eq!(
            raw_row(&mut ro, "show default_transaction_read_only").await?,
            ["on"]
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_name_add_host_appends_the_client_address() -> anyhow::Result<()> {
    let (db, pooler) = setup(
        "params_apphost",
        "default_pool_size = 1\napplication_name_add_host = 1",
    )
    .await?;
    let (mut named, welcome) = raw_login(&pooler, &db, &[("application_name", "myapp")]).await?;
    let addr = named.stream.local_addr()?;
    let expected = format!("myapp - {addr}");
    assert!(expected.starts_with("myapp - 127.0.0.1:"), "{expected}");
    assert!(
        parameter_statuses(&welcome)
            .iter()
            .any(|(k, v)| k == "application_name" && *v == expected),
        "welcome: {:?}",
        parameter_statuses(&welcome)
    );
    assert_eq!(
        raw_row(&mut named, "select current_setting('application_name')").await?,
        [expected.as_str()]
    );

    // A client that sends no application_name is called "app", as PgBouncer does.
    let (mut anonymous, _) = raw_login(&pooler, &db, &[]).await?;
    let addr2 = anonymous.stream.local_addr()?;
    assert_eq!(
        raw_row(&mut anonymous, "select current_setting('application_name')").await?,
        [format!("app - {addr2}")]
    );
    assert_eq!(
        raw_row(&mut named, "select current_setting('application_name')").await?,
        [expected.as_str()],
        "still its own on the shared server"
    );

    // Only at connection start: a later SET is taken as it is.
    named.query("SET application_name = 'renamed'").await?;
    raw_row(&mut anonymous, "select 1").await?;
    assert_eq!(
        raw_row(&mut named, "select current_setting('application_name')").await?,
        ["renamed"]
    );
    Ok(())
}
