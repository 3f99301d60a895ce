//! pgwarden's WebAssembly plugin hooks through the pooler, against the real PostgreSQL with real clients:
//! the shipped `readonly`, `router` and `auth-query` plugins, the failure policy and sandbox (with the
//! misbehaving `testing` plugin), plugin generations swapped by reload under load, and `--check`.

mod abi;
mod auth_query;
mod check;
mod failure;
mod readonly;
mod reload;
mod router;
mod support;
