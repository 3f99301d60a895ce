//! PostgreSQL's MD5 password scheme and clear-text password checks against any stored secret.
//!
//! All comparisons are constant-time so that response timing does not reveal how much of a guess
//! was right.

use md5::{Digest as _, Md5};
use subtle::ConstantTimeEq as _;

use crate::auth::scram::common;
use crate::auth::secret::Secret;

/// `"md5" + hex(md5(parts...))`, the shape of every MD5 string PostgreSQL uses.
fn md5_hex(parts: &[&[u8]]) -> [u8; 35] {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut out = [0; 35];
    out[..3].copy_from_slice(b"md5");
    for (pair, byte) in out[3..].chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

fn into_string(md5: [u8; 35]) -> String {
    md5.iter().copied().map(char::from).collect()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The stored MD5 secret for a password: `"md5" + hex(md5(password + user))`.
pub fn md5_secret(password: &str, user: &str) -> String {
    into_string(md5_hex(&[password.as_bytes(), user.as_bytes()]))
}

/// What a client answers to an MD5 challenge: `"md5" + hex(md5(hex_part + salt))`, where
/// `hex_part` is the stored secret without its `"md5"` prefix.
pub fn md5_salted(md5_secret: &str, salt: [u8; 4]) -> String {
    into_string(salted(md5_secret, salt))
}

/// [`md5_salted`] without the string.
fn salted(md5_secret: &str, salt: [u8; 4]) -> [u8; 35] {
    let hex_part = md5_secret.strip_prefix("md5").unwrap_or(md5_secret);
    md5_hex(&[hex_part.as_bytes(), &salt])
}

/// Checks a client's answer to an MD5 challenge with `salt`. A SCRAM secret can never satisfy MD5
/// (the password cannot be recovered from it), and an empty stored password never matches.
pub fn verify_md5(secret: &Secret, user: &str, salt: [u8; 4], response: &[u8]) -> bool {
    let expected = match secret {
        Secret::Plain(password) if password.is_empty() => return false,
        Secret::Plain(password) => salted(&md5_secret(password, user), salt),
        Secret::Md5(hash) => salted(hash, salt),
        Secret::Scram(_) => return false,
    };
    // Every expected answer is 35 bytes, so comparing the lengths first tells nothing about the secret;
    // the digest-hiding compare of `ct_eq_any_len` (two SHA-256 per login) is for lengths that are secret.
    bool::from(expected.as_slice().ct_eq(response))
}

/// Checks a clear-text password (from a `PasswordMessage`) against any kind of stored secret.
///
/// For a SCRAM verifier the password is SASLprepped and run through the verifier's own salt and
/// iterations, and both StoredKey and ServerKey must match. An empty stored password never matches.
pub fn verify_plain(secret: &Secret, user: &str, password: &[u8]) -> bool {
    match secret {
        Secret::Plain(stored) if stored.is_empty() => false,
        Secret::Plain(stored) => ct_eq_any_len(stored.as_bytes(), password),
        Secret::Md5(hash) => {
            let computed = md5_hex(&[password, user.as_bytes()]);
            ct_eq_any_len(hash.as_bytes(), &computed)
        }
        Secret::Scram(verifier) => {
            let prepared = common::prepare_password(password);
            let keys = common::derive_keys(&prepared, &verifier.salt, verifier.iterations);
            let stored_ok = keys.stored_key.ct_eq(&verifier.stored_key);
            let server_ok = keys.server_key.ct_eq(&verifier.server_key);
            bool::from(stored_ok & server_ok)
        }
    }
}

/// Constant-time equality that also hides the lengths: comparing fixed-size digests means the time
/// taken does not depend on where, or whether, the lengths differ.
fn ct_eq_any_len(a: &[u8], b: &[u8]) -> bool {
    let da = common::sha256(a);
    let db = common::sha256(b);
    bool::from(da.ct_eq(&db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::secret::ScramVerifier;

    /// PgBouncer's documented example.
    const ADMIN_1234: &str = "md545f2603610af569b6155c45067268c6b";
    /// PostgreSQL 15, `password_encryption = 'md5'`, role `m`, password 'secret'.
    const PG_MD5_M_SECRET: &str = "md5b52328d7451bfeace80c4b8c338106f9";

    #[test]
    fn md5_secret_matches_pgbouncer_doc() {
        assert_eq!(md5_secret("1234", "admin"), ADMIN_1234);
    }

    #[test]
    fn md5_secret_matches_postgres() {
        assert_eq!(md5_secret("secret", "m"), PG_MD5_M_SECRET);
        assert_eq!(Secret::parse(PG_MD5_M_SECRET).kind(), "md5");
    }

    #[test]
    fn md5_salted_ignores_missing_prefix() {
        let salt = [1, 2, 3, 4];
        assert_eq!(
            md5_salted(ADMIN_1234, salt),
            md5_salted(&ADMIN_1234[3..], salt)
        );
        assert_eq!(md5_salted(ADMIN_1234, salt).len(), 35);
        assert_ne!(
            md5_salted(ADMIN_1234, salt),
            md5_salted(ADMIN_1234, [1, 2, 3, 5])
        );
    }

    #[test]
    fn md5_salted_known_value() {
        // Computed with Python's hashlib: md5(b"45f2...8c6b" + b"\x01\x02\x03\x04").
        assert_eq!(
            md5_salted(ADMIN_1234, [1, 2, 3, 4]),
            "md53db460fcab3fd3a6df7db145a8d8253b"
        );
    }

    #[test]
    fn verify_md5_with_plain_and_md5_secrets() {
        let salt = [0xde, 0xad, 0xbe, 0xef];
        let response = md5_salted(&md5_secret("1234", "admin"), salt);
        assert!(verify_md5(
            &Secret::parse("1234"),
            "admin",
            salt,
            response.as_bytes()
        ));
        assert!(verify_md5(
            &Secret::parse(ADMIN_1234),
            "admin",
            salt,
            response.as_bytes()
        ));
        // Wrong salt, wrong user, wrong password, garbage.
        assert!(!verify_md5(
            &Secret::parse(ADMIN_1234),
            "admin",
            [0; 4],
            response.as_bytes()
        ));
        assert!(!verify_md5(
            &Secret::parse("1234"),
            "root",
            salt,
            response.as_bytes()
        ));
        assert!(!verify_md5(
            &Secret::parse("12345"),
            "admin",
            salt,
            response.as_bytes()
        ));
        assert!(!verify_md5(&Secret::parse("1234"), "admin", salt, b""));
        assert!(!verify_md5(
            &Secret::parse("1234"),
            "admin",
            salt,
            &response.as_bytes()[..34]
        ));
        assert!(!verify_md5(
            &Secret::parse("1234"),
            "admin",
            salt,
            b"\xff\x00"
        ));
    }

    #[test]
    fn verify_md5_rejects_scram_and_empty_secrets() {
        let salt = [1, 1, 1, 1];
        let scram = Secret::Scram(ScramVerifier::from_password("1234", b"salt", 16));
        let response = md5_salted(&md5_secret("1234", "admin"), salt);
        assert!(!verify_md5(&scram, "admin", salt, response.as_bytes()));
        let empty = md5_salted(&md5_secret("", "admin"), salt);
        assert!(!verify_md5(
            &Secret::parse(""),
            "admin",
            salt,
            empty.as_bytes()
        ));
    }

    #[test]
    fn verify_plain_all_kinds() {
        assert!(verify_plain(&Secret::parse("1234"), "admin", b"1234"));
        assert!(!verify_plain(&Secret::parse("1234"), "admin", b"12345"));
        assert!(!verify_plain(&Secret::parse("1234"), "admin", b"123"));
        assert!(verify_plain(&Secret::parse(ADMIN_1234), "admin", b"1234"));
        assert!(!verify_plain(&Secret::parse(ADMIN_1234), "other", b"1234"));
        assert!(!verify_plain(&Secret::parse(ADMIN_1234), "admin", b"4321"));
        let scram = Secret::Scram(ScramVerifier::from_password("1234", b"salt", 16));
        assert!(verify_plain(&scram, "admin", b"1234"));
        assert!(!verify_plain(&scram, "admin", b"1235"));
        assert!(!verify_plain(&scram, "admin", b"\xff"));
        assert!(!verify_plain(&Secret::parse(""), "admin", b""));
    }

    #[test]
    fn verify_plain_scram_applies_saslprep() {
        // U+00AD (soft hyphen) is removed by SASLprep, so both spellings are the same password.
        let scram = Secret::Scram(ScramVerifier::from_password("I\u{AD}X", b"salt", 16));
        assert!(verify_plain(&scram, "u", b"IX"));
        assert!(verify_plain(&scram, "u", "I\u{AD}X".as_bytes()));
    }

    #[test]
    fn verify_plain_scram_needs_both_keys() {
        let Secret::Scram(mut v) = Secret::Scram(ScramVerifier::from_password("pw", b"s", 8))
        else {
            return;
        };
        v.server_key[0] ^= 1;
        assert!(!verify_plain(&Secret::Scram(v.clone()), "u", b"pw"));
        v.server_key[0] ^= 1;
        v.stored_key[31] ^= 1;
        assert!(!verify_plain(&Secret::Scram(v), "u", b"pw"));
    }
}
