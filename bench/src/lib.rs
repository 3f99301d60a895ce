//! Fixtures for pgwarden's criterion benchmarks (`benches/hooks.rs`, `benches/codec.rs`): the SQL, wire
//! messages and plugin configuration they measure, built once so every bench measures the same inputs.
//! Nothing here needs PostgreSQL: the benches drive pgwarden's own code in-process.
//!
//! # Layout
//! - [`sql`]: the queries a policy is asked about (a ~100-byte SELECT, a ~10 KB one, a write).
//! - [`messages`]: wire frames: a pgbench select-only exchange (simple and prepared), a typical result
//!   set, a startup packet.
//! - [`plugins`]: a small TOML configuration with the plugins under test loaded through `config::load`
//!   and `PluginSet::load`, and [`QueryPolicy`](pgwarden::client::QueryPolicy) implementations that ask
//!   them the way a client session does.

pub mod messages;
pub mod plugins;
pub mod sql;

pub use plugins::{Fixture, NoDatabase, PolicyPlugins, ReadOnlyReading, SummaryOnly};
