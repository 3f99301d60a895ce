//! The client role of SCRAM-SHA-256: pgwarden logging into PostgreSQL on a user's behalf.

use std::fmt;

use subtle::ConstantTimeEq as _;

use super::common::{self, KEY_LEN};
use super::{MAX_SERVER_ITERATIONS, ScramError};
use crate::auth::secret::ScramKeys;

/// What we prove knowledge of to the server.
#[derive(Clone)]
pub enum ScramCredential {
    /// The clear-text password (SASLprepped before use, as PostgreSQL does).
    Password(String),
    /// Keys recovered from the client's own SCRAM exchange with us (pass-through). They only fit a
    /// server verifier with the same salt and iteration count.
    Keys(ScramKeys),
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramCredential::Password(_) => f.write_str("Password(<redacted>)"),
            ScramCredential::Keys(keys) => f.debug_tuple("Keys").field(keys).finish(),
        }
    }
}

/// One SCRAM-SHA-256 login to a server: `client_first`, `server_first`, `server_final`, in order.
pub struct ScramClient {
    credential: ScramCredential,
    /// SASL user name; PostgreSQL ignores it, so we send it empty like libpq (tests set it).
    user: String,
    /// Nonce to use instead of a random one (only set by tests).
    fixed_nonce: Option<String>,
    state: State,
}

enum State {
    Initial,
    SentFirst {
        nonce: String,
        client_first_bare: String,
    },
    SentFinal {
        auth_message: String,
        server_key: [u8; KEY_LEN],
    },
    Finished,
}

impl ScramClient {
    pub fn new(credential: ScramCredential) -> Self {
        ScramClient {
            credential,
            user: String::new(),
            fixed_nonce: None,
            state: State::Initial,
        }
    }

    /// The client-first-message, `"n,,n=,r=<nonce>"`, for `SASLInitialResponse` with mechanism
    /// `SCRAM-SHA-256`. We never do channel binding, hence `n`. Calling it again starts over.
    pub fn client_first(&mut self) -> Vec<u8> {
        let nonce = self.fixed_nonce.take().unwrap_or_else(common::random_nonce);
        let client_first_bare = format!("n={},r={nonce}", escape_saslname(&self.user));
        let message = format!("n,,{client_first_bare}").into_bytes();
        self.state = State::SentFirst {
            nonce,
            client_first_bare,
        };
        message
    }

    /// Handles the server-first-message (`AuthenticationSASLContinue`) and returns the
    /// client-final-message to send in `SASLResponse`.
    ///
    /// With a password this runs PBKDF2 with the server's iteration count (CPU-heavy, capped at
    /// [`MAX_SERVER_ITERATIONS`]).
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::SentFirst {
            nonce,
            client_first_bare,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let text = common::message_str(data)?;
        let parsed = parse_server_first(text, &nonce)?;

        let (client_key, server_key) = match &self.credential {
            ScramCredential::Password(password) => {
                if parsed.iterations > MAX_SERVER_ITERATIONS {
                    return Err(ScramError::TooManyIterations(parsed.iterations));
                }
                let prepared = common::prepare_password(password.as_bytes());
                let keys = common::derive_keys(&prepared, &parsed.salt, parsed.iterations);
                (keys.client_key, keys.server_key)
            }
            ScramCredential::Keys(keys) => {
                if keys.salt != parsed.salt || keys.iterations != parsed.iterations {
                    return Err(ScramError::VerifierMismatch);
                }
                (keys.client_key, keys.server_key)
            }
        };

        let without_proof = format!("c=biws,r={}", parsed.server_nonce);
        let auth_message = format!("{client_first_bare},{text},{without_proof}");
        let stored_key = common::sha256(&client_key);
        let client_signature = common::hmac(&stored_key, &[auth_message.as_bytes()]);
        let proof = common::xor(&client_key, &client_signature);
        let message = format!("{without_proof},p={}", common::b64_encode(&proof)).into_bytes();
        self.state = State::SentFinal {
            auth_message,
            server_key,
        };
        Ok(message)
    }

    /// Handles the server-final-message (`AuthenticationSASLFinal`): the server must prove it
    /// knows the verifier too, otherwise we could be handing a session to an impostor.
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), ScramError> {
        let State::SentFinal {
            auth_message,
            server_key,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let text = common::message_str(data)?;
        if let Some(reason) = text.strip_prefix("e=") {
            return Err(ScramError::ServerError(common::sanitize_peer_text(reason)));
        }
        let mut items = text.split(',');
        let encoded = common::expect_attr(&mut items, b'v', "missing server signature")?;
        if items.next().is_some() {
            return Err(ScramError::Malformed("data after the server signature"));
        }
        let signature = common::b64_decode_key(encoded)
            .ok_or(ScramError::Malformed("invalid server signature"))?;
        let expected = common::hmac(&server_key, &[auth_message.as_bytes()]);
        if bool::from(expected.ct_eq(&signature)) {
            Ok(())
        } else {
            Err(ScramError::ServerSignatureMismatch)
        }
    }

    /// A client with a fixed user name and nonce, to replay published examples.
    #[cfg(test)]
    pub(crate) fn with_user_and_nonce(
        credential: ScramCredential,
        user: &str,
        nonce: &str,
    ) -> Self {
        ScramClient {
            credential,
            user: user.to_owned(),
            fixed_nonce: Some(nonce.to_owned()),
            state: State::Initial,
        }
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Initial => "initial",
            State::SentFirst { .. } => "sent client-first",
            State::SentFinal { .. } => "sent client-final",
            State::Finished => "finished",
        };
        f.debug_struct("ScramClient")
            .field("credential", &self.credential)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// RFC 5802 `saslname`: `,` and `=` must be written as `=2C` and `=3D`.
fn escape_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

struct ServerFirst<'a> {
    server_nonce: &'a str,
    salt: Vec<u8>,
    iterations: u32,
}

/// Parses `r=<nonce>,s=<salt>,i=<iterations>` like libpq: nothing may follow the iteration count.
fn parse_server_first<'a>(text: &'a str, our_nonce: &str) -> Result<ServerFirst<'a>, ScramError> {
    if text.starts_with("m=") {
        return Err(ScramError::UnsupportedExtension);
    }
    let mut items = text.split(',');
    let server_nonce = common::expect_attr(&mut items, b'r', "missing nonce attribute")?;
    // The server must extend our nonce; a server that merely echoes it adds no freshness.
    if server_nonce.len() <= our_nonce.len() || !server_nonce.starts_with(our_nonce) {
        return Err(ScramError::NonceMismatch);
    }
    if !common::is_printable(server_nonce) {
        return Err(ScramError::Malformed("nonce is not printable"));
    }
    let salt = common::expect_attr(&mut items, b's', "missing salt attribute")?;
    let salt = common::b64_decode(salt).ok_or(ScramError::Malformed("invalid salt"))?;
    let iterations = common::expect_attr(&mut items, b'i', "missing iteration count")?;
    let iterations = parse_iterations(iterations)?;
    if items.next().is_some() {
        return Err(ScramError::Malformed("data after the iteration count"));
    }
    Ok(ServerFirst {
        server_nonce,
        salt,
        iterations,
    })
}

fn parse_iterations(text: &str) -> Result<u32, ScramError> {
    const INVALID: ScramError = ScramError::Malformed("invalid iteration count");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(INVALID);
    }
    // All digits, so the only parse failure is overflow: a count that large is over the cap anyway.
    let iterations = text
        .parse::<u32>()
        .map_err(|_| ScramError::TooManyIterations(u32::MAX))?;
    if iterations == 0 {
        return Err(INVALID);
    }
    Ok(iterations)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ScramClient {
        let mut c =
            ScramClient::with_user_and_nonce(ScramCredential::Password("pw".into()), "", "abc");
        assert_eq!(c.client_first(), b"n,,n=,r=abc");
        c
    }

    #[test]
    fn client_first_uses_random_printable_nonce() {
        let mut c = ScramClient::new(ScramCredential::Password("pw".into()));
        let first = String::from_utf8(c.client_first()).unwrap_or_default();
        let nonce = first.strip_prefix("n,,n=,r=").unwrap_or_default();
        assert_eq!(nonce.len(), 24);
        assert!(common::is_printable(nonce));
    }

    #[test]
    fn saslname_is_escaped() {
        assert_eq!(escape_saslname("a=b,c"), "a=3Db=2Cc");
    }

    #[test]
    fn server_first_errors() {
        let cases: &[(&[u8], ScramError)] = &[
            (b"", ScramError::Malformed("empty message")),
            (b"\xff\xfe", ScramError::Malformed("not valid UTF-8")),
            (
                b"r=abcX,s=c2FsdA==,i=1\0",
                ScramError::Malformed("message contains a NUL byte"),
            ),
            (
                b"m=x,r=abcX,s=c2FsdA==,i=1",
                ScramError::UnsupportedExtension,
            ),
            (
                b"s=c2FsdA==,i=1",
                ScramError::Malformed("missing nonce attribute"),
            ),
            (b"r=abc,s=c2FsdA==,i=1", ScramError::NonceMismatch),
            (b"r=abX,s=c2FsdA==,i=1", ScramError::NonceMismatch),
            (b"r=xyzabc,s=c2FsdA==,i=1", ScramError::NonceMismatch),
            (
                b"r=abc X,s=c2FsdA==,i=1",
                ScramError::Malformed("nonce is not printable"),
            ),
            (b"r=abcX", ScramError::Malformed("missing salt attribute")),
            (
                b"r=abcX,s=c2FsdA=,i=1",
                ScramError::Malformed("invalid salt"),
            ),
            (
                b"r=abcX,s=c2FsdA==",
                ScramError::Malformed("missing iteration count"),
            ),
            (
                b"r=abcX,i=1,s=c2FsdA==",
                ScramError::Malformed("missing salt attribute"),
            ),
            (
                b"r=abcX,s=c2FsdA==,i=",
                ScramError::Malformed("invalid iteration count"),
            ),
            (
                b"r=abcX,s=c2FsdA==,i=0",
                ScramError::Malformed("invalid iteration count"),
            ),
            (
                b"r=abcX,s=c2FsdA==,i=-5",
                ScramError::Malformed("invalid iteration count"),
            ),
            (
                b"r=abcX,s=c2FsdA==,i=+5",
                ScramError::Malformed("invalid iteration count"),
            ),
            (
                b"r=abcX,s=c2FsdA==,i=4096,x=1",
                ScramError::Malformed("data after the iteration count"),
            ),
            (
                b"r=abcX,s=c2FsdA==,i=1000001",
                ScramError::TooManyIterations(1_000_001),
            ),
            (
                b"r=abcX,s=c2FsdA==,i=4294967295",
                ScramError::TooManyIterations(u32::MAX),
            ),
            (
                b"r=abcX,s=c2FsdA==,i=99999999999999999999",
                ScramError::TooManyIterations(u32::MAX),
            ),
        ];
        for (msg, want) in cases {
            let got = client().server_first(msg).err();
            assert_eq!(got.as_ref(), Some(want), "{}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn server_first_accepts_empty_salt_and_builds_final() {
        let mut c = client();
        let reply = c.server_first(b"r=abcX,s=,i=1").map(String::from_utf8);
        let reply = reply.ok().and_then(Result::ok).unwrap_or_default();
        assert!(reply.starts_with("c=biws,r=abcX,p="), "{reply}");
    }

    #[test]
    fn server_final_errors() {
        let prepared = || {
            let mut c = client();
            assert!(c.server_first(b"r=abcX,s=c2FsdA==,i=1").is_ok());
            c
        };
        let sig = common::b64_encode(&[0u8; 32]);
        let cases: Vec<(Vec<u8>, ScramError)> = vec![
            (
                b"e=invalid-proof".to_vec(),
                ScramError::ServerError("invalid-proof".into()),
            ),
            (
                b"e=bad\nthing".to_vec(),
                ScramError::ServerError("bad\\nthing".into()),
            ),
            (
                b"v=AAAA".to_vec(),
                ScramError::Malformed("invalid server signature"),
            ),
            (
                b"x=1".to_vec(),
                ScramError::Malformed("missing server signature"),
            ),
            (
                format!("v={sig},x=1").into_bytes(),
                ScramError::Malformed("data after the server signature"),
            ),
            (
                format!("v={sig}").into_bytes(),
                ScramError::ServerSignatureMismatch,
            ),
        ];
        for (msg, want) in cases {
            let mut c = prepared();
            assert_eq!(
                c.server_final(&msg).err(),
                Some(want),
                "{}",
                String::from_utf8_lossy(&msg)
            );
            assert_eq!(c.server_final(&msg).err(), Some(ScramError::OutOfOrder));
        }
    }

    #[test]
    fn out_of_order_calls_fail() {
        let mut c = ScramClient::new(ScramCredential::Password("pw".into()));
        assert_eq!(
            c.server_first(b"r=x,s=,i=1").err(),
            Some(ScramError::OutOfOrder)
        );
        assert_eq!(c.server_final(b"v=").err(), Some(ScramError::OutOfOrder));
        let mut c = client();
        assert_eq!(c.server_final(b"v=").err(), Some(ScramError::OutOfOrder));
    }

    #[test]
    fn keys_skip_the_iteration_cap() {
        // Pass-through needs no PBKDF2, so a huge count is fine as long as it matches the keys.
        let keys = ScramKeys {
            client_key: [1; 32],
            server_key: [2; 32],
            salt: b"salt".to_vec(),
            iterations: 50_000_000,
        };
        let mut c = ScramClient::with_user_and_nonce(ScramCredential::Keys(keys), "", "abc");
        c.client_first();
        assert!(c.server_first(b"r=abcX,s=c2FsdA==,i=50000000").is_ok());
    }

    #[test]
    fn debug_redacts_password() {
        let c = ScramClient::new(ScramCredential::Password("hunter2".into()));
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("hunter2") && dbg.contains("<redacted>"),
            "{dbg}"
        );
    }
}
