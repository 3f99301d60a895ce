//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL speaks it: no channel binding, no authzid,
//! and the user name taken from the startup packet rather than from the SCRAM messages.

pub mod client;
pub(crate) mod common;
mod error;
pub mod server;

pub use client::{ScramClient, ScramCredential};
pub use error::ScramError;
pub use server::ScramServer;

/// Largest PBKDF2 iteration count we agree to compute when a server asks for it.
///
/// The count in a server-first message is chosen by the other side, and PBKDF2 time grows linearly
/// with it: a misconfigured or hostile server announcing billions of iterations would pin a CPU for
/// minutes per login attempt. PostgreSQL's default is 4096 and even aggressive hardening guides stay
/// well below a million, so anything above this is treated as an error rather than computed. The cap
/// only applies when we derive keys from a password; pass-through keys need no PBKDF2 at all.
pub const MAX_SERVER_ITERATIONS: u32 = 1_000_000;

#[cfg(test)]
mod tests;
