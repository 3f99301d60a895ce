//! Per-call cost of each plugin hook, in-process, on warm instances (criterion's warm-up runs the first
//! calls; a plugin's first instance is made when it loads).
//!
//! - `policy/<query>/…`: one Query frame through `Relay::process_client`, as a session relays it, with
//!   (a) no policy (the relay alone: the pooler does nothing more without a policy), (b) the host's SQL
//!   summary and `policy` query record only, (b2) the host's read-only reading only, (c) the `testing`
//!   plugin in allow mode (a trivial `policy` plugin: what a call with records costs), (d) the shipped
//!   `readonly` plugin (a real policy, through `query-policy` handles). (b)-(a) is the host's share for
//!   a `policy` plugin and (c)-(b) its call's fixed cost; (b2)-(a) is the host's share for `readonly`,
//!   (d)-(b2) its call and its own work.
//! - `policy_call/<query>/…`: `Plugin::check` alone (for `testing`, with the query record built
//!   beforehand): the call (lowering the record or the handles into the guest, the guest's work and the
//!   imports it calls, the verdict back).
//! - `policy_deny/insert_100B/readonly`: a write denied by `readonly`, relayed as the DO block that raises it.
//! - `router/…`: `Plugin::route` (once per client connection).
//! - `auth/…`: `Plugin::lookup` (once per login of a user not in auth_file).

use std::hint::black_box;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pgwarden::client::{OutQueue, QueryPolicy, Relay};
use pgwarden::config::{Hook, PoolMode};
use pgwarden::plugin::DatabaseAccess;
use pgwarden::plugin::bindings::exports::pgwarden::plugin::policy::Verdict;
use pgwarden::plugin::convert;
use pgwarden_bench::plugins::{self, READONLY, ROUTER, TESTING};
use pgwarden_bench::{
    Fixture, NoDatabase, PolicyPlugins, ReadOnlyReading, SummaryOnly, messages, sql,
};

const MAX_PACKET: u32 = 1 << 30;

/// The plugins, compiled once for all the groups.
static FIXTURE: LazyLock<Fixture> = LazyLock::new(Fixture::load);

/// A relay about to read one client frame, with the allocations a long-lived session's relay has.
fn relay_input(frame: &BytesMut) -> (Relay, BytesMut, OutQueue) {
    let mut relay = Relay::new();
    relay.add_hidden_query();
    relay.reset();
    (relay, frame.clone(), OutQueue::default())
}

/// Relays `frame` once with `policy`; returns how many bytes went to the server.
fn relay_once(
    (relay, input, out): &mut (Relay, BytesMut, OutQueue),
    policy: Option<&mut dyn QueryPolicy>,
) -> usize {
    relay
        .process_client(
            input,
            out,
            &mut OutQueue::default(),
            MAX_PACKET,
            policy,
            None,
        )
        .expect("a valid Query frame");
    out.len()
}

fn policy(c: &mut Criterion) {
    let fx = &*FIXTURE;
    let large = sql::large_select();
    for (label, text) in [("select_100B", sql::SMALL_SELECT), ("select_10KB", &large)] {
        let frame = messages::query(text);
        let mut testing = PolicyPlugins::new(&fx.plugins, TESTING);
        let mut readonly = PolicyPlugins::new(&fx.plugins, READONLY);
        // Every variant must forward the query unchanged: otherwise it would measure a denial.
        for policy in [
            None,
            Some(&mut SummaryOnly as &mut dyn QueryPolicy),
            Some(&mut ReadOnlyReading as &mut dyn QueryPolicy),
            Some(&mut testing as &mut dyn QueryPolicy),
            Some(&mut readonly as &mut dyn QueryPolicy),
        ] {
            assert_eq!(relay_once(&mut relay_input(&frame), policy), frame.len());
        }

        let mut group = c.benchmark_group(format!("policy/{label}"));
        group.bench_function("a_no_plugin", |b| {
            b.iter_batched_ref(
                || relay_input(&frame),
                |i| relay_once(i, None),
                BatchSize::SmallInput,
            );
        });
        group.bench_function("b_host_summary", |b| {
            b.iter_batched_ref(
                || relay_input(&frame),
                |i| relay_once(i, Some(&mut SummaryOnly)),
                BatchSize::SmallInput,
            );
        });
        group.bench_function("b2_host_read_only", |b| {
            b.iter_batched_ref(
                || relay_input(&frame),
                |i| relay_once(i, Some(&mut ReadOnlyReading)),
                BatchSize::SmallInput,
            );
        });
        group.bench_function("c_testing_allow", |b| {
            b.iter_batched_ref(
                || relay_input(&frame),
                |i| relay_once(i, Some(&mut testing)),
                BatchSize::SmallInput,
            );
        });
        group.bench_function("d_readonly", |b| {
            b.iter_batched_ref(
                || relay_input(&frame),
                |i| relay_once(i, Some(&mut readonly)),
                BatchSize::SmallInput,
            );
        });
        group.finish();

        let mut info = plugins::session("app", TESTING);
        let input = convert::QueryInput {
            sql: text,
            extended: false,
            statement_name: "",
            standard_strings: true,
        };
        let mut record = Some(convert::query(&input));
        let mut group = c.benchmark_group(format!("policy_call/{label}"));
        for (name, database) in [("testing_allow", TESTING), ("readonly", READONLY)] {
            let plugin = fx.plugin(Hook::Policy, database);
            let verdict = plugin.check(&mut info, &input, &mut record);
            assert!(matches!(verdict, Ok(Verdict::Allow)), "{name}: {verdict:?}");
            group.bench_function(name, |b| {
                b.iter(|| plugin.check(&mut info, black_box(&input), &mut record))
            });
        }
        group.finish();
    }

    let frame = messages::query(sql::SMALL_INSERT);
    let mut readonly = PolicyPlugins::new(&fx.plugins, READONLY);
    let denied = relay_once(&mut relay_input(&frame), Some(&mut readonly));
    assert!(
        denied > frame.len(),
        "the INSERT was not replaced by a denial"
    );
    c.benchmark_group("policy_deny/insert_100B")
        .bench_function("readonly", |b| {
            b.iter_batched_ref(
                || relay_input(&frame),
                |i| relay_once(i, Some(&mut readonly)),
                BatchSize::SmallInput,
            );
        });
}

fn router(c: &mut Criterion) {
    let fx = &*FIXTURE;
    let mut group = c.benchmark_group("router");

    let testing = fx.plugin(Hook::Router, TESTING);
    let session = plugins::session("app", TESTING);
    let unchanged = testing.route(&session).expect("call").expect("allowed");
    assert_eq!(unchanged.database, None);
    group.bench_function("testing_allow", |b| {
        b.iter(|| testing.route(black_box(&session)))
    });

    let router = fx.plugin(Hook::Router, ROUTER);
    let session = plugins::session("app", ROUTER);
    let routed = router.route(&session).expect("call").expect("allowed");
    assert_eq!(
        routed.database.as_deref(),
        Some(plugins::PLAIN),
        "rule.3 matches"
    );
    assert_eq!(
        routed.pool_mode.map(convert::from_pool_mode),
        Some(PoolMode::Transaction)
    );
    group.bench_function("builtin_4_rules_match_3rd", |b| {
        b.iter(|| router.route(black_box(&session)));
    });
    group.finish();
}

fn auth(c: &mut Criterion) {
    let fx = &*FIXTURE;
    let plugin = fx.plugin(Hook::Auth, TESTING);
    let db: Arc<dyn DatabaseAccess> = Arc::new(NoDatabase);
    let user = "pgwarden_test_secret_s3cret";
    let secret = plugin.lookup(user, TESTING, Arc::clone(&db));
    assert_eq!(secret, Ok(Ok(Some("s3cret".to_owned()))));
    c.benchmark_group("auth")
        .bench_function("testing_secret", |b| {
            b.iter(|| plugin.lookup(black_box(user), TESTING, Arc::clone(&db)));
        });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = policy, router, auth
}
criterion_main!(benches);
