//! pgwarden's integration tests: one binary, a throwaway PostgreSQL per process (see `pgwarden_tests::pg`),
//! the pooler started in-process on port 0, and real clients.

mod harness;
mod lifecycle;
mod pool_support;
mod pooling;
mod smoke;
mod timeouts;
