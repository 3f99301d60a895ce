//! pgwarden's integration tests: one binary, a throwaway PostgreSQL per process (see `pgwarden_tests::pg`),
//! the pooler started in-process on port 0, and real clients.

mod auth;
mod config_cli;
mod harness;
mod process;
mod reload;
mod runbook;
mod smoke;
