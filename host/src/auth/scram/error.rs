//! Errors of a SCRAM exchange in either role.

/// Why a SCRAM exchange could not go on. Messages are single lines meant for logs; anything that came
/// from the peer has been sanitized before it gets here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The stored secret is an MD5 hash, from which no SCRAM verifier can be made.
    #[error("SCRAM authentication is impossible because the user has an MD5 secret")]
    Md5Secret,
    /// An empty stored password never authenticates anyone (PostgreSQL and PgBouncer refuse it too).
    #[error("SCRAM authentication is impossible because the user's stored password is empty")]
    EmptyPassword,
    /// The client asked for a mechanism we did not offer.
    #[error("unsupported SASL mechanism \"{0}\"")]
    UnsupportedMechanism(String),
    /// The client insists on channel binding (`p=`), which needs TLS.
    #[error("client requires SCRAM channel binding, which is not supported")]
    ChannelBindingRequired,
    /// The client wants to act as another user (`a=` authzid).
    #[error("client uses a SCRAM authorization identity, which is not supported")]
    AuthzidUnsupported,
    /// The message carries a mandatory extension (`m=`) we do not know.
    #[error("peer requires an unsupported SCRAM extension")]
    UnsupportedExtension,
    /// The message does not follow RFC 5802 syntax; the text says what was wrong.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The nonce in a later message does not continue the one agreed earlier.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// A PostgreSQL server asked for more PBKDF2 iterations than we are willing to compute.
    #[error("server asked for {0} SCRAM iterations, more than the allowed maximum of {max}", max = super::MAX_SERVER_ITERATIONS)]
    TooManyIterations(u32),
    /// The client's proof is wrong (wrong password, or an unknown user under mock authentication).
    #[error("SCRAM authentication failed: password does not match")]
    AuthenticationFailed,
    /// The server could not prove that it knows the password: we may be talking to an impostor.
    #[error(
        "SCRAM server signature is invalid: the server did not prove it knows the user's secret"
    )]
    ServerSignatureMismatch,
    /// The server ended the exchange with `e=...`.
    #[error("server reported a SCRAM error: {0}")]
    ServerError(String),
    /// Pass-through keys only work against the very verifier they came from.
    #[error(
        "server's SCRAM secret differs from pgwarden's (salt or iteration count): for SCRAM \
         pass-through the secret stored in pgwarden must be identical to the server's, with the same \
         salt and iterations"
    )]
    VerifierMismatch,
    /// A method was called out of order, or after the exchange had already failed or finished.
    #[error("SCRAM exchange step called out of order")]
    OutOfOrder,
}
