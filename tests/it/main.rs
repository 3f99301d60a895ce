//! pgwarden's integration tests: one binary, a throwaway PostgreSQL per process (see `pgwarden_tests::pg`),
//! the pooler started in-process on port 0, and real clients.

mod admin;
mod admin_conns;
mod admin_every;
mod admin_live;
mod admin_load;
mod auth;
mod cancel;
mod cli_clients;
mod clients;
mod config_cli;
mod drivers;
mod exporter;
mod harness;
mod lifecycle;
mod logs;
mod metrics;
mod params;
mod parking;
mod plugins;
mod polyglot;
mod pool_support;
mod pooling;
mod prepared;
mod process;
mod protocol;
mod reload;
mod runbook;
mod session_state;
mod settings;
mod sidecar;
mod smoke;
mod timeouts;
