//! Stored secrets: what an auth file line or an `auth_query` row holds for a user, classified the
//! way PostgreSQL and PgBouncer classify `rolpassword`.

use std::fmt;

use crate::auth::scram::common::{self, KEY_LEN};

/// Prefix of a SCRAM-SHA-256 verifier in PostgreSQL's text form.
const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// A user's stored secret.
///
/// Equality is a plain comparison meant for configuration reloads; authentication must go through
/// the constant-time functions in [`crate::auth::md5`] and [`crate::auth::scram`].
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A clear-text password.
    Plain(String),
    /// `"md5"` followed by 32 lowercase hex digits of `md5(password + user)`.
    Md5(String),
    /// A SCRAM-SHA-256 verifier.
    Scram(ScramVerifier),
}

impl Secret {
    /// Classifies a raw secret. Anything that is neither a well-formed MD5 hash nor a well-formed
    /// SCRAM verifier is a plain-text password, exactly as PostgreSQL decides, so parsing never fails.
    pub fn parse(raw: &str) -> Secret {
        if is_md5_hash(raw) {
            Secret::Md5(raw.to_owned())
        } else if let Some(verifier) = ScramVerifier::parse(raw) {
            Secret::Scram(verifier)
        } else {
            Secret::Plain(raw.to_owned())
        }
    }

    /// Short name of the kind of secret, for messages that must not reveal the secret itself.
    pub fn kind(&self) -> &'static str {
        match self {
            Secret::Plain(_) => "plain",
            Secret::Md5(_) => "md5",
            Secret::Scram(_) => "scram-sha-256",
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Plain(_) => f.write_str("Plain(<redacted>)"),
            Secret::Md5(_) => f.write_str("Md5(<redacted>)"),
            Secret::Scram(v) => f.debug_tuple("Scram").field(v).finish(),
        }
    }
}

/// `"md5"` + exactly 32 lowercase hex digits. Uppercase is not accepted because PostgreSQL never
/// writes it and would treat such a string as a plain password.
fn is_md5_hash(raw: &str) -> bool {
    raw.strip_prefix("md5").is_some_and(|hex| {
        hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A SCRAM-SHA-256 verifier as stored by PostgreSQL:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (salt and keys in base64).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

impl ScramVerifier {
    /// Parses PostgreSQL's text form; `None` if anything is off (the caller then treats the string
    /// as a plain password). Iterations must be a positive decimal number, the salt valid base64
    /// and both keys exactly 32 bytes.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix(SCRAM_PREFIX)?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored_key, server_key) = keys.split_once(':')?;
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let iterations: u32 = iterations.parse().ok()?;
        if iterations == 0 {
            return None;
        }
        Some(ScramVerifier {
            iterations,
            salt: common::b64_decode(salt)?,
            stored_key: common::b64_decode_key(stored_key)?,
            server_key: common::b64_decode_key(server_key)?,
        })
    }

    /// Builds the verifier PostgreSQL would store for `password` with this salt and iteration
    /// count (SASLprep applied first, as PostgreSQL does). Zero iterations count as one.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let prepared = common::prepare_password(password.as_bytes());
        let keys = common::derive_keys(&prepared, salt, iterations);
        ScramVerifier {
            iterations: iterations.max(1),
            salt: salt.to_vec(),
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        }
    }
}

impl fmt::Display for ScramVerifier {
    /// PostgreSQL's text form, so that `parse(&v.to_string()) == Some(v)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            common::b64_encode(&self.salt),
            common::b64_encode(&self.stored_key),
            common::b64_encode(&self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    /// Salt and iterations are public on the wire anyway; the keys are what an attacker wants.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt_len", &self.salt.len())
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// What a successful client SCRAM exchange lets the pooler keep, so it can log into PostgreSQL as
/// that user without the plain password (PgBouncer's "SCRAM pass-through"). Only works if
/// PostgreSQL's verifier has the same salt and iterations.
///
/// `client_key` is as good as the password for logging in to any server holding this verifier, so
/// it must never be logged or persisted.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub client_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
    pub salt: Vec<u8>,
    pub iterations: u32,
}

impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("client_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by PostgreSQL 15 for password 'secret' (see `scram::tests` for where it came from).
    const PG_VERIFIER: &str = "SCRAM-SHA-256$4096:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=";

    #[test]
    fn classifies_md5() {
        let s = Secret::parse("md545f2603610af569b6155c45067268c6b");
        assert_eq!(s.kind(), "md5");
        assert!(matches!(s, Secret::Md5(ref h) if h == "md545f2603610af569b6155c45067268c6b"));
    }

    #[test]
    fn near_md5_strings_are_plain() {
        for raw in [
            "md545F2603610AF569B6155C45067268C6B",
            "md545f2603610af569b6155c45067268c6",
            "md545f2603610af569b6155c45067268c6bb",
            "md545f2603610af569b6155c45067268c6g",
            "MD545f2603610af569b6155c45067268c6b",
            "md5",
            "",
        ] {
            assert_eq!(Secret::parse(raw).kind(), "plain", "{raw}");
        }
    }

    #[test]
    fn classifies_scram_and_round_trips() {
        let s = Secret::parse(PG_VERIFIER);
        let Secret::Scram(v) = s else {
            panic!("not classified as SCRAM")
        };
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt.len(), 16);
        assert_eq!(v.to_string(), PG_VERIFIER);
        assert_eq!(ScramVerifier::parse(&v.to_string()), Some(v));
    }

    #[test]
    fn malformed_verifiers_are_plain() {
        let good = ScramVerifier::parse(PG_VERIFIER).map(|v| v.to_string());
        assert_eq!(good.as_deref(), Some(PG_VERIFIER));
        let bad = [
            "SCRAM-SHA-1$4096:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=",
            "SCRAM-SHA-256$0:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=",
            "SCRAM-SHA-256$-1:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=",
            "SCRAM-SHA-256$99999999999:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=",
            "SCRAM-SHA-256$4096:Lh!OybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=",
            "SCRAM-SHA-256$4096:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXO==:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=",
            "SCRAM-SHA-256$4096:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=",
            "SCRAM-SHA-256$4096:LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=:x",
            "SCRAM-SHA-256$4096LhOybJm39CDA6CGxKi8zTQ==$8TDCv+GUfZIJKZml8k3INAyoIEA/iM/H9GE2F/gXOpY=:UpCiz3SGKQqC0iTTZY8vYVm5amNPciOOVNDixoclr1I=",
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$$:$:",
        ];
        for raw in bad {
            assert_eq!(Secret::parse(raw).kind(), "plain", "{raw}");
        }
    }

    #[test]
    fn from_password_round_trips_and_zero_iterations_become_one() {
        let v = ScramVerifier::from_password("pencil", b"salty", 0);
        assert_eq!(v.iterations, 1);
        assert_eq!(ScramVerifier::parse(&v.to_string()), Some(v));
    }

    #[test]
    fn from_password_matches_postgres() {
        let pg = ScramVerifier::parse(PG_VERIFIER);
        let salt = pg.as_ref().map(|v| v.salt.clone()).unwrap_or_default();
        assert_eq!(
            Some(ScramVerifier::from_password("secret", &salt, 4096)),
            pg
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let plain = format!("{:?}", Secret::parse("hunter2"));
        assert!(!plain.contains("hunter2"), "{plain}");
        let md5 = format!("{:?}", Secret::parse("md545f2603610af569b6155c45067268c6b"));
        assert!(!md5.contains("45f26"), "{md5}");
        let scram = format!("{:?}", Secret::parse(PG_VERIFIER));
        assert!(
            !scram.contains("8TDCv") && !scram.contains("UpCiz"),
            "{scram}"
        );
        assert!(scram.contains("<redacted>"));
        let keys = ScramKeys {
            client_key: [0xAB; 32],
            server_key: [0xCD; 32],
            salt: vec![1, 2],
            iterations: 7,
        };
        let dbg = format!("{keys:?}");
        assert!(
            !dbg.contains("171") && !dbg.contains("205") && dbg.contains("<redacted>"),
            "{dbg}"
        );
    }
}
