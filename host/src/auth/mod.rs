//! Authentication crypto: stored secrets, PostgreSQL's MD5 scheme and SCRAM-SHA-256 in both the
//! server role (verifying clients) and the client role (logging into PostgreSQL). Pure code with no
//! I/O, so the connection handling can drive it from any task and it can be tested in isolation.

pub mod md5;
pub mod scram;
pub mod secret;

pub use md5::{md5_salted, md5_secret, verify_md5, verify_plain};
pub use scram::{ScramClient, ScramCredential, ScramError, ScramServer};
pub use secret::{ScramKeys, ScramVerifier, Secret};
