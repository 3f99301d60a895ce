//! Errors pgwarden reports, counted by kind for `pgwarden_errors_total`: refusals that end a client (limits,
//! timeouts, failed logins) and refusals of the plugins (a policy that denies a query, a router that refuses
//! a connection). Counted where they happen, once each; errors of one pool (its server logins failing,
//! query_wait_timeout) are counted by the pool instead ([`crate::pool::PoolStats`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A client's password (or trust) authentication failed.
    AuthFailed,
    /// A client asked for a database with no `[databases]` entry and no `*` fallback.
    UnknownDatabase,
    MaxClientConn,
    MaxDbClientConnections,
    MaxUserClientConnections,
    ClientLoginTimeout,
    ClientIdleTimeout,
    QueryTimeout,
    IdleTransactionTimeout,
    TransactionTimeout,
    /// A client refused at once because its pool's server login keeps failing (server_login_retry).
    ServerLoginFailing,
    /// A policy plugin denied a query.
    PolicyDenial,
    /// A policy plugin failed (trap, timeout) and the query was refused (`on_error = deny`).
    PolicyFailure,
    /// A router plugin refused a connection.
    RouterDenial,
    /// A router plugin failed and the connection was refused.
    RouterFailure,
}

impl ErrorKind {
    pub const ALL: [Self; 15] = [
        Self::AuthFailed,
        Self::UnknownDatabase,
        Self::MaxClientConn,
        Self::MaxDbClientConnections,
        Self::MaxUserClientConnections,
        Self::ClientLoginTimeout,
        Self::ClientIdleTimeout,
        Self::QueryTimeout,
        Self::IdleTransactionTimeout,
        Self::TransactionTimeout,
        Self::ServerLoginFailing,
        Self::PolicyDenial,
        Self::PolicyFailure,
        Self::RouterDenial,
        Self::RouterFailure,
    ];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailed => "auth_failed",
            Self::UnknownDatabase => "unknown_database",
            Self::MaxClientConn => "max_client_conn",
            Self::MaxDbClientConnections => "max_db_client_connections",
            Self::MaxUserClientConnections => "max_user_client_connections",
            Self::ClientLoginTimeout => "client_login_timeout",
            Self::ClientIdleTimeout => "client_idle_timeout",
            Self::QueryTimeout => "query_timeout",
            Self::IdleTransactionTimeout => "idle_transaction_timeout",
            Self::TransactionTimeout => "transaction_timeout",
            Self::ServerLoginFailing => "server_login_failing",
            Self::PolicyDenial => "policy_denial",
            Self::PolicyFailure => "policy_failure",
            Self::RouterDenial => "router_denial",
            Self::RouterFailure => "router_failure",
        }
    }

    /// The kind of a fatal error pgwarden itself tells a client, from its fixed text (PgBouncer's words),
    /// for the errors decided deep in a session that has no other way to report them. `None` for the texts
    /// counted where they arise, and for everything else.
    pub fn of_pooler_message(message: &str) -> Option<Self> {
        Some(match message {
            "no more connections allowed (max_client_conn)" => Self::MaxClientConn,
            "client connections exceeded (max_db_client_connections)" => {
                Self::MaxDbClientConnections
            }
            "client connections exceeded (max_user_client_connections)" => {
                Self::MaxUserClientConnections
            }
            "client_login_timeout" => Self::ClientLoginTimeout,
            "client_idle_timeout" => Self::ClientIdleTimeout,
            // While linked, and while still queued for a server (the pool's CheckoutError::QueryTimeout).
            "query timeout" | "query_timeout" => Self::QueryTimeout,
            "idle transaction timeout" => Self::IdleTransactionTimeout,
            "transaction timeout" => Self::TransactionTimeout,
            m if m.starts_with("no such database: ") => Self::UnknownDatabase,
            m if m.starts_with("server login has been failing") => Self::ServerLoginFailing,
            _ => return None,
        })
    }
}

/// One counter per [`ErrorKind`]. Shared by the [`crate::State`] and every generation of plugins (so a
/// reload never resets it).
#[derive(Debug, Default)]
pub struct ErrorCounts {
    counts: [AtomicU64; ErrorKind::ALL.len()],
}

impl ErrorCounts {
    pub fn count(&self, kind: ErrorKind) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.counts[kind as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_index_their_own_counter() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
        let c = ErrorCounts::default();
        c.count(ErrorKind::PolicyDenial);
        c.count(ErrorKind::PolicyDenial);
        c.count(ErrorKind::QueryTimeout);
        assert_eq!(c.get(ErrorKind::PolicyDenial), 2);
        assert_eq!(c.get(ErrorKind::QueryTimeout), 1);
        assert_eq!(c.get(ErrorKind::AuthFailed), 0);
    }

    #[test]
    fn pooler_texts_map_to_kinds() {
        for (text, kind) in [
            (
                "no more connections allowed (max_client_conn)",
                Some(ErrorKind::MaxClientConn),
            ),
            (
                "client connections exceeded (max_user_client_connections)",
                Some(ErrorKind::MaxUserClientConnections),
            ),
            ("query timeout", Some(ErrorKind::QueryTimeout)),
            ("query_timeout", Some(ErrorKind::QueryTimeout)),
            (
                "idle transaction timeout",
                Some(ErrorKind::IdleTransactionTimeout),
            ),
            ("client_idle_timeout", Some(ErrorKind::ClientIdleTimeout)),
            ("no such database: x", Some(ErrorKind::UnknownDatabase)),
            (
                "server login has been failing, cached error: x (server_login_retry)",
                Some(ErrorKind::ServerLoginFailing),
            ),
            // Counted by the pool.
            ("query_wait_timeout", None),
            ("server shutting down", None),
        ] {
            assert_eq!(ErrorKind::of_pooler_message(text), kind, "{text}");
        }
    }
}
