//! Idle clients parked without a task (`pgwarden::client::park`): a client quiet for half a second (5 ms,
//! by itself, if it has sent nothing since its login) gives its task up, and comes back on its next byte as if nothing
//! happened: same session (its settings, its prepared statements, its place in SHOW CLIENTS and in the
//! pool's counts), over TCP or the Unix socket. While parked it still closes, times out, can be killed, and
//! a WAIT_FOR_CLIENTS shutdown waits for it.

use std::time::{Duration, Instant};

use pgwarden::state::ShutdownMode;
use pgwarden_tests::pooler::{Pooler, TestDb};
use pgwarden_tests::raw::{RawClient, frame_bytes};

use super::admin::{console, start, table};
use crate::pool_support::{assert_fatal, ended, scalar, wait_until, watch_end};

/// Long enough for a client to be asked (the lot looks ten times a second) and to park.
const PARKS_WITHIN: Duration = Duration::from_secs(10);

fn parked(pooler: &Pooler) -> usize {
    pooler.state.parking.as_ref().map_or(0, |lot| lot.len())
}

async fn wait_parked(pooler: &Pooler, n: usize) -> anyhow::Result<()> {
    wait_until(&format!("{n} clients parked"), PARKS_WITHIN, || async {
        Ok(parked(pooler) == n)
    })
    .await
}

/// SHOW CLIENTS' rows of `db`'s clients, as (application_name, state).
async fn clients_of(
    admin: &tokio_postgres::Client,
    db: &TestDb,
) -> anyhow::Result<Vec<(String, String)>> {
    let t = table(admin, "SHOW CLIENTS").await?;
    let (d, a, s) = (t.col("database"), t.col("application_name"), t.col("state"));
    let mut rows: Vec<(String, String)> = t
        .rows
        .iter()
        .filter(|r| r[d].as_deref() == Some(db.name.as_str()))
        .map(|r| {
            (
                r[a].clone().unwrap_or_default(),
                r[s].clone().unwrap_or_default(),
            )
        })
        .collect();
    rows.sort();
    Ok(rows)
}

async fn app_client(
    pooler: &Pooler,
    host: &str,
    db: &TestDb,
    app: &str,
) -> anyhow::Result<(tokio_postgres::Client, crate::pool_support::ConnTask)> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(pooler.port)
        .user(&db.user)
        .password(&db.password)
        .dbname(&db.name)
        .application_name(app);
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    Ok((client, tokio::spawn(conn)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_park_and_come_back_with_their_session() -> anyhow::Result<()> {
    let (db, pooler) = start("park_back", "pool_mode = transaction").await?;
    let admin = console(&pooler).await?;
    let dir = pooler.dir.to_string_lossy().into_owned();
    let (tcp, _t) = app_client(&pooler, "127.0.0.1", &db, "park-tcp").await?;
    let (unix, _u) = app_client(&pooler, &dir, &db, "park-unix").await?;
    // Session state that must survive: a tracked parameter the client set, a prepared statement.
    tcp.batch_execute("SET datestyle = 'German'").await?;
    let stmt = tcp.prepare("SELECT $1::int + 1").await?;
    assert_eq!(scalar(&unix, "SELECT 1").await?, "1");

    wait_parked(&pooler, 2).await?;
    // Still clients everywhere: listed, idle, counted (the console's own client is not parked).
    assert_eq!(
        clients_of(&admin, &db).await?,
        [
            ("park-tcp".to_owned(), "idle".to_owned()),
            ("park-unix".to_owned(), "idle".to_owned())
        ]
    );
    let pools = table(&admin, "SHOW POOLS").await?;
    assert_eq!(pools.get(&db.name, "cl_active"), "2", "{pools:?}");
    let metrics = pgwarden::metrics::render(&pooler.state);
    assert!(
        metrics.contains("\npgwarden_clients_parked 2\n"),
        "{metrics}"
    );

    // Back on the first byte, with everything it had.
    let n: i32 = tcp.query_one(&stmt, &[&41i32]).await?.get(0);
    assert_eq!(n, 42);
    assert_eq!(scalar(&tcp, "SHOW datestyle").await?, "German, DMY");
    assert_eq!(parked(&pooler), 1, "only the client that spoke came back");
    assert_eq!(scalar(&unix, "SELECT 2").await?, "2");
    // A client that comes straight back is not parked meanwhile; one idle again parks again.
    for i in 0..20 {
        assert_eq!(scalar(&unix, &format!("SELECT {i}")).await?, i.to_string());
    }
    wait_parked(&pooler, 2).await?;
    assert_eq!(scalar(&tcp, "SHOW datestyle").await?, "German, DMY");
    assert_eq!(scalar(&unix, "SELECT 3").await?, "3");

    // A client that leaves while parked is gone: from the lot, the list and the counts.
    wait_parked(&pooler, 2).await?;
    drop(unix);
    wait_parked(&pooler, 1).await?;
    wait_until("the client that left unlisted", PARKS_WITHIN, || async {
        Ok(clients_of(&admin, &db).await? == [("park-tcp".to_owned(), "idle".to_owned())])
    })
    .await?;
    let pools = table(&admin, "SHOW POOLS").await?;
    assert_eq!(pools.get(&db.name, "cl_active"), "1", "{pools:?}");
    Ok(())
}

/// A raw client that sends half a message and stalls is not parked (the half is its task's), and is served
/// once the rest comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_half_a_message_keeps_its_task() -> anyhow::Result<()> {
    let (db, pooler) = start("park_half", "pool_mode = transaction").await?;
    let mut raw = RawClient::connect(pooler.port).await?;
    let login = raw
        .login(&[("user", &db.user), ("database", &db.name)], &db.password)
        .await?;
    assert_eq!(login.last().map(|m| m.tag), Some(b'Z'));
    wait_parked(&pooler, 1).await?;
    // A Query message cut after its first bytes.
    let msg = frame_bytes(b'Q', b"SELECT 7\0");
    raw.send(&msg[..3]).await?;
    wait_until("the client resumed", PARKS_WITHIN, || async {
        Ok(parked(&pooler) == 0)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(parked(&pooler), 0, "parked with half a message read");
    raw.send(&msg[3..]).await?;
    let reply = raw.until_ready().await?;
    let tags: Vec<u8> = reply.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"TDCZ", "{reply:?}");
    Ok(())
}

/// Waits for the session behind `end` to end with client_idle_timeout, `timeout` after `since` (its last
/// message, or before its login).
async fn timed_out(
    end: crate::pool_support::EndWatch,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (at, error) = ended(end, Duration::from_secs(10)).await?;
    let after = at - since;
    assert!(
        after >= timeout.mul_f64(0.9) && after < timeout + Duration::from_secs(2),
        "client_idle_timeout fired after {after:?}"
    );
    assert_fatal(&error, "08P01", "client_idle_timeout");
    Ok(())
}

/// While parked, a client still meets its client_idle_timeout (measured from its last message), KILL_CLIENT
/// and an immediate shutdown, each with what it would have got in its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_clients_time_out_and_are_killed() -> anyhow::Result<()> {
    let timeout = Duration::from_secs(3);
    let (db, pooler) = start(
        "park_end",
        "pool_mode = transaction\nclient_idle_timeout = 3",
    )
    .await?;
    let admin = console(&pooler).await?;
    let (sleeper, sleeper_task) = app_client(&pooler, "127.0.0.1", &db, "park-sleeper").await?;
    scalar(&sleeper, "SELECT 1").await?;
    let last_query = Instant::now();
    let sleeper_end = watch_end(sleeper_task);
    wait_parked(&pooler, 1).await?;
    assert!(
        last_query.elapsed() < timeout,
        "parked only after its timeout"
    );
    timed_out(sleeper_end, last_query, timeout).await?;
    assert_eq!(parked(&pooler), 0);
    drop(sleeper);

    // One that has sent nothing since its login parks by itself, well before the lot would ask it
    // (PARK_FRESH_FALLBACK), and its timeout still counts from its login.
    let connecting = Instant::now();
    let (fresh, fresh_task) = app_client(&pooler, "127.0.0.1", &db, "park-fresh").await?;
    let fresh_end = watch_end(fresh_task);
    let by_itself = pgwarden::client::park::PARK_FRESH_FALLBACK / 2;
    wait_until("the fresh client parked by itself", by_itself, || async {
        Ok(parked(&pooler) == 1)
    })
    .await?;
    timed_out(fresh_end, connecting, timeout).await?;
    assert_eq!(parked(&pooler), 0);
    drop(fresh);

    // KILL_CLIENT: the client hears PgBouncer's words.
    let (victim, victim_task) = app_client(&pooler, "127.0.0.1", &db, "park-victim").await?;
    let victim_end = watch_end(victim_task);
    wait_parked(&pooler, 1).await?;
    let t = table(&admin, "SHOW CLIENTS").await?;
    let row = t
        .rows
        .iter()
        .find(|r| r[t.col("application_name")].as_deref() == Some("park-victim"))
        .expect("listed");
    let id = row[t.col("id")].clone().unwrap_or_default();
    admin.simple_query(&format!("KILL_CLIENT {id}")).await?;
    let (_, error) = ended(victim_end, Duration::from_secs(10)).await?;
    assert_fatal(&error, "08P01", "admin forced disconnect");
    assert_eq!(parked(&pooler), 0);
    drop(victim);

    // An immediate shutdown closes parked clients too.
    let (last, last_task) = app_client(&pooler, "127.0.0.1", &db, "park-last").await?;
    let last_end = watch_end(last_task);
    wait_parked(&pooler, 1).await?;
    drop(admin);
    pooler.shutdown(ShutdownMode::Immediate).await?;
    let closed = tokio::time::timeout(Duration::from_secs(10), last_end).await?;
    assert!(closed.is_ok(), "the session ended");
    drop(last);
    Ok(())
}

/// A client that comes back and parks again gets a new client_idle_timeout from its new last message: the
/// deadline it parked with the first time is not held against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_parked_again_keeps_only_its_new_deadline() -> anyhow::Result<()> {
    let timeout = Duration::from_secs(3);
    let (db, pooler) = start(
        "park_again",
        "pool_mode = transaction\nclient_idle_timeout = 3",
    )
    .await?;
    let (client, task) = app_client(&pooler, "127.0.0.1", &db, "park-again").await?;
    scalar(&client, "SELECT 1").await?;
    let first = Instant::now();
    wait_parked(&pooler, 1).await?;
    tokio::time::sleep_until((first + Duration::from_millis(1500)).into()).await;
    assert_eq!(scalar(&client, "SELECT 2").await?, "2");
    let last_query = Instant::now();
    let end = watch_end(task);
    wait_parked(&pooler, 1).await?;
    let (at, error) = ended(end, Duration::from_secs(10)).await?;
    let after = at - last_query;
    assert!(
        after >= timeout.mul_f64(0.9) && after < timeout + Duration::from_secs(2),
        "client_idle_timeout fired {after:?} after the last query ({:?} after the first)",
        at - first
    );
    assert_fatal(&error, "08P01", "client_idle_timeout");
    Ok(())
}

/// A WAIT_FOR_CLIENTS shutdown (SIGTERM's) waits for a parked client as for any other: it is still served meanwhile, and
/// the pooler exits once it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_clients_waits_for_parked_clients() -> anyhow::Result<()> {
    let (db, pooler) = start("park_wait", "pool_mode = transaction").await?;
    let (first, _t1) = app_client(&pooler, "127.0.0.1", &db, "park-waited-1").await?;
    let (client, _task) = app_client(&pooler, "127.0.0.1", &db, "park-waited").await?;
    wait_parked(&pooler, 2).await?;
    let state = std::sync::Arc::clone(&pooler.state);
    let exit = tokio::spawn(pooler.shutdown(ShutdownMode::WaitForClients));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!exit.is_finished(), "exited with parked clients connected");
    // One comes back, runs something and leaves: the other, still parked, is still waited for (the lot
    // holds one place among the tracked tasks for all its clients).
    assert_eq!(scalar(&first, "SELECT 4").await?, "4");
    drop(first);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state.parking.as_ref().map_or(0, |lot| lot.len()), 1);
    assert!(!exit.is_finished(), "exited with a parked client connected");
    assert_eq!(scalar(&client, "SELECT 5").await?, "5");
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), exit).await???;
    assert_eq!(state.parking.as_ref().map_or(0, |lot| lot.len()), 0);
    Ok(())
}
