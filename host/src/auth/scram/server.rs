//! The server role of SCRAM-SHA-256: pgwarden verifying a connecting client against a stored secret.

use std::fmt;
use std::sync::OnceLock;

use subtle::{Choice, ConstantTimeEq as _};

use super::ScramError;
use super::common::{self, KEY_LEN, MECHANISM};
use crate::auth::secret::{ScramKeys, Secret};

/// Verifies one client's SCRAM-SHA-256 exchange. Create one per authentication attempt; after a
/// failure or success every further call returns [`ScramError::OutOfOrder`].
pub struct ScramServer {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
    /// Unknown user: go through the motions, then always fail.
    mock: bool,
    /// Server nonce part to use instead of a random one (only set by tests).
    fixed_nonce: Option<String>,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// `"n,,"` or `"y,,"`, which the client must echo base64-encoded in `c=`.
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        /// Client nonce followed by ours.
        nonce: String,
    },
    Finished,
}

impl ScramServer {
    /// `secret`: Plain (a fresh random 16-byte salt and `iterations` are used) or Scram (its own
    /// salt and iterations). An MD5 secret cannot drive SCRAM (PgBouncer's "user has MD5 secret"),
    /// and an empty plain password is refused as PostgreSQL refuses it.
    ///
    /// With a Plain secret this runs PBKDF2 with `iterations`, so it is CPU-heavy.
    pub fn new(secret: &Secret, iterations: u32) -> Result<Self, ScramError> {
        let (iterations, salt, stored_key, server_key) = match secret {
            Secret::Md5(_) => return Err(ScramError::Md5Secret),
            Secret::Plain(password) if password.is_empty() => {
                return Err(ScramError::EmptyPassword);
            }
            Secret::Plain(password) => {
                let salt = common::random_salt();
                let prepared = common::prepare_password(password.as_bytes());
                let keys = common::derive_keys(&prepared, &salt, iterations);
                (iterations.max(1), salt, keys.stored_key, keys.server_key)
            }
            Secret::Scram(v) => (v.iterations, v.salt.clone(), v.stored_key, v.server_key),
        };
        Ok(ScramServer {
            iterations,
            salt,
            stored_key,
            server_key,
            mock: false,
            fixed_nonce: None,
            state: State::AwaitingClientFirst,
        })
    }

    /// For unknown users: behaves identically on the wire (a deterministic fake salt derived from
    /// the user name and a process-random key, so repeated probes see a stable salt just as for a
    /// real user) and always fails at the final step, so an attacker cannot probe which users exist.
    pub fn mock(user: &str, iterations: u32) -> Self {
        let key = mock_key();
        let digest = common::sha256(&[user.as_bytes(), key].concat());
        let salt = digest[..common::SALT_LEN].to_vec();
        // Keys only need to look like real ones to the HMAC code; the exchange fails regardless.
        let stored_key = common::hmac(key, &[b"mock stored key", user.as_bytes()]);
        let server_key = common::hmac(key, &[b"mock server key", user.as_bytes()]);
        ScramServer {
            iterations: iterations.max(1),
            salt,
            stored_key,
            server_key,
            mock: true,
            fixed_nonce: None,
            state: State::AwaitingClientFirst,
        }
    }

    /// Mechanisms to offer in `AuthenticationSASL`. No `-PLUS`: channel binding needs TLS.
    pub fn mechanisms() -> &'static [&'static str] {
        &[MECHANISM]
    }

    /// Handles `SASLInitialResponse` (mechanism name and client-first-message) and returns the
    /// server-first-message to send in `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            return Err(ScramError::OutOfOrder);
        }
        // Any error ends the exchange: a client gets exactly one attempt.
        self.state = State::Finished;
        if mechanism != MECHANISM {
            return Err(ScramError::UnsupportedMechanism(
                common::sanitize_peer_text(mechanism),
            ));
        }
        let text = common::message_str(data)?;
        let (gs2_header, bare) = split_gs2_header(text)?;
        let client_nonce = parse_client_first_bare(bare)?;

        let suffix = self.fixed_nonce.take().unwrap_or_else(common::random_nonce);
        let nonce = format!("{client_nonce}{suffix}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            common::b64_encode(&self.salt),
            self.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal {
            gs2_header: gs2_header.to_owned(),
            client_first_bare: bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// Handles the client-final-message (`SASLResponse`). On success returns the
    /// server-final-message to send in `AuthenticationSASLFinal` and the keys that allow SCRAM
    /// pass-through to PostgreSQL.
    pub fn client_final(&mut self, data: &[u8]) -> Result<(Vec<u8>, ScramKeys), ScramError> {
        let State::AwaitingClientFinal {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let text = common::message_str(data)?;
        let parsed = parse_client_final(text, &gs2_header, &nonce)?;
        let auth_message = format!(
            "{client_first_bare},{server_first},{}",
            parsed.without_proof
        );

        let client_signature = common::hmac(&self.stored_key, &[auth_message.as_bytes()]);
        let client_key = common::xor(&parsed.proof, &client_signature);
        let proof_ok = common::sha256(&client_key).ct_eq(&self.stored_key);
        if !bool::from(proof_ok & Choice::from(u8::from(!self.mock))) {
            return Err(ScramError::AuthenticationFailed);
        }

        let server_signature = common::hmac(&self.server_key, &[auth_message.as_bytes()]);
        let reply = format!("v={}", common::b64_encode(&server_signature)).into_bytes();
        let keys = ScramKeys {
            client_key,
            server_key: self.server_key,
            salt: self.salt.clone(),
            iterations: self.iterations,
        };
        Ok((reply, keys))
    }

    /// Like [`ScramServer::new`] but with a fixed server nonce part, to replay published examples.
    #[cfg(test)]
    pub(crate) fn with_nonce(
        secret: &Secret,
        iterations: u32,
        nonce: &str,
    ) -> Result<Self, ScramError> {
        let mut server = Self::new(secret, iterations)?;
        server.fixed_nonce = Some(nonce.to_owned());
        Ok(server)
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::AwaitingClientFirst => "awaiting client-first",
            State::AwaitingClientFinal { .. } => "awaiting client-final",
            State::Finished => "finished",
        };
        f.debug_struct("ScramServer")
            .field("iterations", &self.iterations)
            .field("keys", &"<redacted>")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// Process-wide random key for mock salts. It has to outlive any single exchange so that the fake
/// salt for a given unknown user stays the same across attempts (a salt that changed every time
/// would give the user's absence away), and it must be secret and unpredictable so fake salts
/// cannot be told apart from real random ones. That is why this is the one global cache here.
fn mock_key() -> &'static [u8; KEY_LEN] {
    static MOCK_KEY: OnceLock<[u8; KEY_LEN]> = OnceLock::new();
    MOCK_KEY.get_or_init(common::random_key)
}

/// Splits off the GS2 header (`"n,,"` or `"y,,"`), returning it and the client-first-message-bare.
///
/// `y` means the client could do channel binding but believes we cannot; since we never offer
/// `-PLUS` that belief is right and the exchange may go on. (Once TLS channel binding exists, a `y`
/// while `-PLUS` was offered must be rejected as a downgrade.)
fn split_gs2_header(text: &str) -> Result<(&str, &str), ScramError> {
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(b'n' | b'y') => {}
        Some(b'p') => return Err(ScramError::ChannelBindingRequired),
        _ => return Err(ScramError::Malformed("unexpected channel-binding flag")),
    }
    if bytes.get(1) != Some(&b',') {
        return Err(ScramError::Malformed(
            "expected ',' after channel-binding flag",
        ));
    }
    match bytes.get(2) {
        Some(b',') => Ok((&text[..3], &text[3..])),
        Some(b'a') => Err(ScramError::AuthzidUnsupported),
        _ => Err(ScramError::Malformed("unexpected attribute in GS2 header")),
    }
}

/// Parses `n=<user>,r=<nonce>[,ext...]` and returns the client nonce. The user name is ignored:
/// as in PostgreSQL, the startup packet decides who is logging in.
fn parse_client_first_bare(bare: &str) -> Result<&str, ScramError> {
    if bare.starts_with("m=") {
        return Err(ScramError::UnsupportedExtension);
    }
    let mut items = bare.split(',');
    common::expect_attr(&mut items, b'n', "missing user name attribute")?;
    let nonce = common::expect_attr(&mut items, b'r', "missing nonce attribute")?;
    if nonce.is_empty() || !common::is_printable(nonce) {
        return Err(ScramError::Malformed("nonce is empty or not printable"));
    }
    // Optional extensions we do not support may follow; they only need to be well-formed.
    for item in items {
        common::split_attr(item)?;
    }
    Ok(nonce)
}

struct ClientFinal<'a> {
    without_proof: &'a str,
    proof: [u8; KEY_LEN],
}

/// Parses `c=<b64 gs2 header>,r=<nonce>[,ext...],p=<proof>` and checks `c` and `r`.
fn parse_client_final<'a>(
    text: &'a str,
    gs2_header: &str,
    nonce: &str,
) -> Result<ClientFinal<'a>, ScramError> {
    let mut items = text.split(',');
    let binding = common::expect_attr(&mut items, b'c', "missing channel-binding attribute")?;
    if binding != common::b64_encode(gs2_header.as_bytes()) {
        return Err(ScramError::Malformed(
            "channel-binding attribute does not match the GS2 header",
        ));
    }
    let final_nonce = common::expect_attr(&mut items, b'r', "missing nonce attribute")?;
    if final_nonce != nonce {
        return Err(ScramError::NonceMismatch);
    }
    let mut proof = None;
    for item in items {
        if proof.is_some() {
            return Err(ScramError::Malformed("data after the proof"));
        }
        let (attr, value) = common::split_attr(item)?;
        if attr == b'p' {
            let decoded =
                common::b64_decode_key(value).ok_or(ScramError::Malformed("invalid proof"))?;
            proof = Some((decoded, item.len()));
        }
    }
    let (proof, proof_item_len) = proof.ok_or(ScramError::Malformed("missing proof"))?;
    // The proof is the last item, preceded by a comma.
    let without_proof = &text[..text.len() - proof_item_len - 1];
    Ok(ClientFinal {
        without_proof,
        proof,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> ScramServer {
        let secret = Secret::Scram(crate::auth::ScramVerifier::from_password("pw", b"salt", 2));
        ScramServer::with_nonce(&secret, 0, "SRV").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn mechanisms_offer_only_plain_scram() {
        assert_eq!(ScramServer::mechanisms(), &["SCRAM-SHA-256"]);
    }

    #[test]
    fn new_rejects_md5_and_empty() {
        let md5 = Secret::parse("md545f2603610af569b6155c45067268c6b");
        assert_eq!(
            ScramServer::new(&md5, 4096).err(),
            Some(ScramError::Md5Secret)
        );
        let empty = Secret::parse("");
        assert_eq!(
            ScramServer::new(&empty, 4096).err(),
            Some(ScramError::EmptyPassword)
        );
    }

    #[test]
    fn plain_secret_gets_fresh_salt_and_configured_iterations() {
        let a = ScramServer::new(&Secret::parse("pw"), 7).unwrap_or_else(|e| panic!("{e}"));
        let b = ScramServer::new(&Secret::parse("pw"), 7).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.salt.len(), 16);
        assert_ne!(a.salt, b.salt);
        assert_eq!(a.iterations, 7);
    }

    #[test]
    fn server_first_format() {
        let mut s = server();
        let reply = s.client_first("SCRAM-SHA-256", b"n,,n=x,r=abc");
        assert_eq!(reply.ok().as_deref(), Some(&b"r=abcSRV,s=c2FsdA==,i=2"[..]));
    }

    #[test]
    fn gs2_header_rules() {
        let cases: &[(&[u8], Option<ScramError>)] = &[
            (b"n,,n=,r=abc", None),
            (b"y,,n=,r=abc", None),
            (
                b"p=tls-server-end-point,,n=,r=abc",
                Some(ScramError::ChannelBindingRequired),
            ),
            (b"n,a=bob,n=,r=abc", Some(ScramError::AuthzidUnsupported)),
            (
                b"x,,n=,r=abc",
                Some(ScramError::Malformed("unexpected channel-binding flag")),
            ),
            (
                b"n",
                Some(ScramError::Malformed(
                    "expected ',' after channel-binding flag",
                )),
            ),
            (
                b"n,",
                Some(ScramError::Malformed("unexpected attribute in GS2 header")),
            ),
            (b"n,,m=ext,n=,r=abc", Some(ScramError::UnsupportedExtension)),
            (
                b"n,,r=abc",
                Some(ScramError::Malformed("missing user name attribute")),
            ),
            (
                b"n,,n=",
                Some(ScramError::Malformed("missing nonce attribute")),
            ),
            (
                b"n,,n=,r=",
                Some(ScramError::Malformed("nonce is empty or not printable")),
            ),
            (
                b"n,,n=,r=a b",
                Some(ScramError::Malformed("nonce is empty or not printable")),
            ),
            (b"n,,n=,r=abc,x=1,y=2", None),
            (
                b"n,,n=,r=abc,junk",
                Some(ScramError::Malformed(
                    "expected an attribute of the form a=value",
                )),
            ),
        ];
        for (msg, want) in cases {
            let got = server().client_first("SCRAM-SHA-256", msg).err();
            assert_eq!(&got, want, "{}", String::from_utf8_lossy(msg));
        }
    }

    #[test]
    fn rejects_other_mechanisms_and_out_of_order_calls() {
        let mut s = server();
        let err = s.client_first("SCRAM-SHA-256-PLUS", b"n,,n=,r=abc").err();
        assert_eq!(
            err,
            Some(ScramError::UnsupportedMechanism(
                "SCRAM-SHA-256-PLUS".into()
            ))
        );
        // The failed attempt used up the exchange.
        assert_eq!(
            s.client_first("SCRAM-SHA-256", b"n,,n=,r=abc").err(),
            Some(ScramError::OutOfOrder)
        );
        let mut s = server();
        assert_eq!(
            s.client_final(b"c=biws,r=x,p=").err(),
            Some(ScramError::OutOfOrder)
        );
    }

    #[test]
    fn client_final_syntax_errors() {
        let proof = common::b64_encode(&[0u8; 32]);
        let cases: Vec<(String, ScramError)> = vec![
            (
                format!("c=eSws,r=abcSRV,p={proof}"),
                ScramError::Malformed("channel-binding attribute does not match the GS2 header"),
            ),
            (
                format!("r=abcSRV,p={proof}"),
                ScramError::Malformed("missing channel-binding attribute"),
            ),
            (
                format!("c=biws,r=abcSRX,p={proof}"),
                ScramError::NonceMismatch,
            ),
            (format!("c=biws,r=abc,p={proof}"), ScramError::NonceMismatch),
            (
                "c=biws,r=abcSRV".to_owned(),
                ScramError::Malformed("missing proof"),
            ),
            (
                "c=biws,r=abcSRV,p=AAAA".to_owned(),
                ScramError::Malformed("invalid proof"),
            ),
            (
                "c=biws,r=abcSRV,p=!!".to_owned(),
                ScramError::Malformed("invalid proof"),
            ),
            (
                format!("c=biws,r=abcSRV,p={proof},x=1"),
                ScramError::Malformed("data after the proof"),
            ),
            (
                format!("c=biws,r=abcSRV,,p={proof}"),
                ScramError::Malformed("expected an attribute of the form a=value"),
            ),
            (
                format!("c=biws,r=abcSRV,x=ext,p={proof}"),
                ScramError::AuthenticationFailed,
            ),
        ];
        for (msg, want) in cases {
            let mut s = server();
            assert!(s.client_first("SCRAM-SHA-256", b"n,,n=,r=abc").is_ok());
            assert_eq!(s.client_final(msg.as_bytes()).err(), Some(want), "{msg}");
            // Whatever happened, the exchange is over.
            assert_eq!(
                s.client_final(msg.as_bytes()).err(),
                Some(ScramError::OutOfOrder)
            );
        }
    }

    #[test]
    fn mock_salt_is_stable_per_user_and_differs_between_users() {
        let a1 = ScramServer::mock("alice", 4096);
        let a2 = ScramServer::mock("alice", 4096);
        let b = ScramServer::mock("bob", 4096);
        assert_eq!(a1.salt, a2.salt);
        assert_ne!(a1.salt, b.salt);
        assert_eq!(a1.salt.len(), 16);
        assert_eq!(a1.iterations, 4096);
    }

    #[test]
    fn mock_fails_even_with_a_proof_forged_from_its_own_keys() {
        let mut mock = ScramServer::mock("ghost", 8);
        let first = mock.client_first("SCRAM-SHA-256", b"n,,n=,r=abc");
        let first = String::from_utf8(first.unwrap_or_default()).unwrap_or_default();
        let nonce = first.split(',').next().and_then(|r| r.strip_prefix("r="));
        let without_proof = format!("c=biws,r={}", nonce.unwrap_or_default());
        let auth_message = format!("n=,r=abc,{first},{without_proof}");
        // Plant a stored key we know the preimage of, so the proof itself checks out: only the
        // mock flag is left to refuse the login.
        let client_key = [7u8; 32];
        mock.stored_key = common::sha256(&client_key);
        let signature = common::hmac(&mock.stored_key, &[auth_message.as_bytes()]);
        let proof = common::xor(&client_key, &signature);
        let message = format!("{without_proof},p={}", common::b64_encode(&proof));
        let err = mock.client_final(message.as_bytes()).err();
        assert_eq!(err, Some(ScramError::AuthenticationFailed));
    }

    #[test]
    fn debug_redacts_keys() {
        let dbg = format!("{:?}", server());
        assert!(
            dbg.contains("<redacted>") && dbg.contains("awaiting client-first"),
            "{dbg}"
        );
    }
}
