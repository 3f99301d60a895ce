//! Errors of a server connection, answering their own questions: what the client should see, whether the
//! whole pool should fail fast.

use crate::protocol::ProtocolError;
use crate::protocol::backend::ErrorFields;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connect timeout")]
    ConnectTimeout,
    /// PostgreSQL refused the login (bad password, no such database, too many clients, starting up, …).
    #[error("server login failed: {0}")]
    Login(Box<ErrorFields>),
    /// pgwarden holds no secret it could answer the server's authentication request with.
    #[error("{0}")]
    CannotAuthenticate(String),
    #[error("server sent an invalid message: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("server sent unexpected message '{}' during {phase}", char::from(*tag))]
    Unexpected { tag: u8, phase: &'static str },
    #[error("server closed the connection unexpectedly")]
    Eof,
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Query(Box<ErrorFields>),
}

impl ServerError {
    /// Whether every client waiting for this pool should get this error now rather than keep waiting:
    /// the server answered, and another attempt would be answered the same way (PgBouncer kills waiting
    /// logins on any server error except "the database system is starting up", 57P03).
    pub fn fails_waiters(&self) -> bool {
        match self {
            Self::Login(e) => e.code != "57P03",
            Self::CannotAuthenticate(_) => true,
            _ => false,
        }
    }

    /// The host could not be reached or answered nothing (connect refused, DNS, timeout, the connection
    /// dropped before the server spoke): another host of the entry may do better.
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::ConnectTimeout | Self::Eof | Self::Io(_)
        )
    }

    /// The failure as PgBouncer quotes it in "server login has been failing, cached error: ...": the server's
    /// own message when it refused the login, else what went wrong ("connect timeout", ...).
    pub fn cached_message(&self) -> String {
        match self {
            Self::Login(e) => e.message.clone(),
            other => other.to_string(),
        }
    }

    /// SQLSTATE and message a client gets when its login or query dies because of this.
    pub fn client_error(&self) -> (String, String) {
        match self {
            // PostgreSQL's own words, so clients see what a direct connection would have shown.
            Self::Login(e) => (e.code.clone(), e.message.clone()),
            Self::CannotAuthenticate(msg) => ("28000".into(), msg.clone()),
            _ => (crate::protocol::PROTOCOL_VIOLATION.into(), self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_message_quotes_the_server_or_the_failure() {
        let refused = ServerError::Login(Box::new(ErrorFields {
            severity: "FATAL".into(),
            code: "28P01".into(),
            message: "password authentication failed for user \"u\"".into(),
            ..ErrorFields::default()
        }));
        assert_eq!(
            refused.cached_message(),
            "password authentication failed for user \"u\""
        );
        assert_eq!(
            ServerError::ConnectTimeout.cached_message(),
            "connect timeout"
        );
    }
}
