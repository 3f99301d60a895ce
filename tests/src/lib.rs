//! The harness of pgwarden's integration tests: throwaway PostgreSQL clusters ([`pg`]), real clients
//! ([`clients`]), pgwarden in-process ([`pooler`]) or as a real process ([`binary`]), and a raw protocol
//! client ([`raw`]).

pub mod binary;
pub mod clients;
pub mod pg;
pub mod pooler;
pub mod raw;
