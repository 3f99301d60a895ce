//! The protocol codec on the forwarding path: framing, the relay's bookkeeping over a pgbench
//! select-only exchange (bytes move as `Bytes` split off the read buffers, never copied), the startup
//! packet, and building an ErrorResponse. Inputs are copied into fresh buffers outside the timed part.

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pgwarden::client::{OutQueue, Relay, ServerCtx};
use pgwarden::params::{ParamValues, Tracked};
use pgwarden::protocol::backend::{self, Severity};
use pgwarden::protocol::{frame, startup};
use pgwarden_bench::messages;

const MAX_PACKET: u32 = 1 << 30;

fn frame_split(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_split");
    for rows in [1, 20] {
        let buf = messages::result_set(rows);
        group.throughput(Throughput::Elements(rows as u64 + 3));
        group.bench_function(format!("result_set_{rows}_rows"), |b| {
            b.iter_batched_ref(
                || buf.clone(),
                |buf| {
                    let mut frames = 0;
                    while let Some(f) = frame::split(buf, MAX_PACKET).expect("valid frames") {
                        black_box(&f);
                        frames += 1;
                    }
                    frames
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// One client/server link mid-session: relay, read buffers, output queues, tracked parameters.
struct Link {
    relay: Relay,
    from_client: BytesMut,
    from_server: BytesMut,
    to_server: OutQueue,
    to_client: OutQueue,
    server_params: ParamValues,
    client_params: ParamValues,
}

impl Link {
    fn new(tracked: &Tracked, request: &BytesMut, response: &BytesMut) -> Self {
        let mut relay = Relay::new();
        relay.add_hidden_query();
        relay.reset();
        Self {
            relay,
            from_client: request.clone(),
            from_server: response.clone(),
            to_server: OutQueue::default(),
            to_client: OutQueue::default(),
            server_params: ParamValues::new(tracked),
            client_params: ParamValues::new(tracked),
        }
    }

    /// The request to the server, then the answer to the client; returns the bytes queued each way.
    fn exchange(&mut self, tracked: &Tracked) -> (usize, usize) {
        self.relay
            .process_client(
                &mut self.from_client,
                &mut self.to_server,
                &mut self.to_client,
                MAX_PACKET,
                None,
                None,
            )
            .expect("valid request");
        let mut ctx = ServerCtx {
            tracked,
            server_params: &mut self.server_params,
            client_params: &mut self.client_params,
            max: MAX_PACKET,
            stmts: None,
        };
        self.relay
            .process_server(&mut self.from_server, &mut self.to_client, &mut ctx)
            .expect("valid response");
        (self.to_server.len(), self.to_client.len())
    }
}

fn relay(c: &mut Criterion) {
    let tracked = Tracked::new(&[]);
    let mut group = c.benchmark_group("relay");
    for (name, request, response) in [
        (
            "select_only_simple",
            messages::select_only_request(),
            messages::select_only_response(),
        ),
        (
            "select_only_prepared",
            messages::prepared_select_only_request(),
            messages::prepared_select_only_response(),
        ),
        (
            "select_20_rows",
            messages::query("SELECT id, name, email, created_at FROM customers LIMIT 20"),
            messages::result_set(20),
        ),
    ] {
        let mut link = Link::new(&tracked, &request, &response);
        assert_eq!(link.exchange(&tracked), (request.len(), response.len()));
        assert!(link.relay.releasable(), "the exchange ends the transaction");
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || Link::new(&tracked, &request, &response),
                |link| link.exchange(&tracked),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn startup_parse(c: &mut Criterion) {
    let packet = messages::startup_packet();
    c.benchmark_group("startup")
        .bench_function("parse_jdbc", |b| {
            b.iter_batched_ref(
                || packet.clone(),
                |buf| startup::parse(buf).expect("valid startup packet"),
                BatchSize::SmallInput,
            );
        });
}

fn error_response(c: &mut Criterion) {
    let mut buf = BytesMut::with_capacity(256);
    c.benchmark_group("error_response")
        .bench_function("write_error", |b| {
            b.iter(|| {
                buf.clear();
                backend::write_error(
                    &mut buf,
                    Severity::Error,
                    black_box("42501"),
                    black_box("permission denied for table customers"),
                );
                buf.len()
            });
        });
}

/// What transaction pooling pays per query to notice session-changing statements: the one-pass word check
/// that rules out most queries, and the full reading of one that has such a word.
fn session_effects(c: &mut Criterion) {
    let large = pgwarden_bench::sql::large_select();
    let mut group = c.benchmark_group("session_effects");
    for (label, text) in [
        ("select_100B", pgwarden_bench::sql::SMALL_SELECT),
        ("select_10KB", large.as_str()),
        ("set_search_path", "SET search_path TO app, public"),
    ] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(label, |b| {
            b.iter(|| pgwarden::sql::session::effects(black_box(text), true));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = frame_split, relay, startup_parse, error_response, session_effects
}
criterion_main!(benches);
