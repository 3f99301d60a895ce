//! pgwarden: a PostgreSQL connection pooler, drop-in for PgBouncer (it reads `pgbouncer.ini` and
//! `userlist.txt` as they are), whose routing, query policies and auth lookup run as sandboxed WebAssembly
//! component plugins.
//!
//! # Layout
//! - [`protocol`]: wire protocol 3.0 as pure bytes (framing, startup packets, messages per direction).
//! - [`config`]: PgBouncer ini + `%include` + `userlist.txt`, or native TOML, into one validated [`Config`].
//! - [`auth`]: secrets (plain, md5, SCRAM verifier), md5, SCRAM-SHA-256 server and client sides.
//! - [`params`]: tracked session parameters (client_encoding, DateStyle, TimeZone, …) per client and server.
//! - [`server`]: a connection to PostgreSQL: login, parameters, health, reset.
//! - [`pool`]: pools per (database, user): fair queue, pool_size + reserve, shared limits, reaping.
//! - [`client`]: one task per client: startup, authentication, welcome, the query loop and pool modes;
//!   idle clients parked without a task.
//! - [`cancel`]: pgwarden's cancel keys, forwarding a CancelRequest to the right server only.
//! - [`state`]: the one shared [`State`] (config generation, pools, counts, lifecycle).
//! - [`listener`]: listening sockets, the accept loop, [`run`], maintenance.
//! - [`sql`]: the lexical summary of SQL that query policies get (statements, kinds, read-only or not).
//! - [`plugin`]: the wasmtime runtime for plugins: engine, instances, limits, failure policy, generations.
//! - [`conns`]: the live client and server connections (SHOW CLIENTS/SERVERS, KILL), cheap on the hot path.
//! - [`admin`]: the admin console (the `pgbouncer` database): SHOW, SET, RELOAD, PAUSE, RESUME, SHUTDOWN.
//! - [`reload`]: SIGHUP: re-read config, auth_file and plugins, swap atomically, re-resolve pools.
//! - [`stats`]: `log_stats` lines every `stats_period`.
//! - [`metrics`]: the HTTP listener for operators: Prometheus `/metrics`, `/healthz`, `/readyz`.
//! - [`net`], [`cli`], [`logging`], [`process`]: sockets, command line, logs, daemon/pidfile/user/signals.

pub mod admin;
pub mod auth;
pub mod cancel;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod conns;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod params;
pub mod plugin;
pub mod pool;
pub mod process;
pub mod protocol;
pub mod reload;
pub mod server;
pub mod sql;
pub mod state;
pub mod stats;

/// std's `HashMap` with foldhash's randomly seeded hasher, for the maps on the paths of a login and a
/// prepared statement: several times cheaper than SipHash on short keys. Keys a client chooses (user and
/// database names) are limited by max_client_conn and hashed with a per-map random seed.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use config::Config;
pub use listener::{Listeners, run};
pub use state::State;
