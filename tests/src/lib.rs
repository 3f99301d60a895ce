//! The harness of pgwarden's integration tests: throwaway PostgreSQL clusters ([`pg`]), real clients
//! ([`clients`]), pgwarden in-process ([`pooler`]) and a raw protocol client ([`raw`]).

pub mod clients;
pub mod pg;
pub mod pooler;
pub mod raw;
