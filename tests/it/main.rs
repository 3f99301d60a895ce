//! pgwarden's integration tests: one binary, a throwaway PostgreSQL per process (see `pgwarden_tests::pg`),
//! the pooler started in-process on port 0, and real clients.

mod cancel;
mod harness;
mod params;
mod protocol;
mod smoke;
