//! The enumerated setting types. Each one knows its spelling in the configuration file so
//! parsing, error messages ("expected one of ...") and the reference all agree.

use std::fmt;

/// An enum whose values are written as fixed words in the configuration.
pub(crate) trait ConfigEnum: Sized + Copy + 'static {
    /// Every variant with its configuration spelling, in documentation order.
    const NAMES: &'static [(&'static str, Self)];

    /// Looks a word up case-insensitively, as PgBouncer does for its lookup settings.
    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, v)| *v)
    }

    /// "a, b or c", for error messages and the reference.
    fn expected() -> String {
        let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            Some((last, _)) => (*last).to_owned(),
            None => String::new(),
        }
    }
}

macro_rules! config_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[doc = concat!("Written `", $text, "`.")]
                $variant,
            )+
        }

        impl ConfigEnum for $name {
            const NAMES: &'static [(&'static str, Self)] = &[$(($text, Self::$variant)),+];
        }

        impl $name {
            /// The spelling used in configuration files.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

config_enum! {
    /// When a server connection goes back to the pool.
    pub enum PoolMode {
        /// After the client disconnects.
        #[default]
        Session = "session",
        /// After each transaction.
        Transaction = "transaction",
        /// After each statement; multi-statement transactions are refused.
        Statement = "statement",
    }
}

config_enum! {
    /// What transaction and statement pooling do with a client whose server session holds state that cannot
    /// move to another server (LISTEN, session advisory locks, temporary tables, cursors WITH HOLD, SET ROLE,
    /// SQL PREPARE).
    pub enum SessionState {
        /// The client keeps its server until that state is gone or it disconnects.
        #[default]
        Pin = "pin",
        /// The statement is refused with an error naming a session-mode alias.
        Reject = "reject",
        /// Nothing is done (PgBouncer's behaviour): the state stays on the server for whoever gets it next.
        Allow = "allow",
    }
}

config_enum! {
    /// How log lines are written (pgwarden's own setting).
    pub enum LogFormat {
        /// Plain text lines, connection lines in PgBouncer's shape (`C-0x1: db/user@addr:port ...`).
        #[default]
        Text = "text",
        /// One JSON object per line: timestamp, level, message and the connection as keys.
        Json = "json",
    }
}

config_enum! {
    /// How clients authenticate to the pooler.
    pub enum AuthType {
        /// No authentication; the client's user name is ignored.
        Any = "any",
        /// No authentication, but the user must exist.
        Trust = "trust",
        /// Clear-text password.
        Plain = "plain",
        /// MD5 challenge (SCRAM is used instead for users with SCRAM secrets).
        #[default]
        Md5 = "md5",
        /// SCRAM-SHA-256.
        ScramSha256 = "scram-sha-256",
        /// TLS client certificate (not supported by pgwarden).
        Cert = "cert",
        /// Per-connection method from an HBA file (not supported by pgwarden).
        Hba = "hba",
        /// PAM (not supported by pgwarden).
        Pam = "pam",
        /// LDAP (not supported by pgwarden).
        Ldap = "ldap",
    }
}

config_enum! {
    /// TLS policy for a connection side.
    pub enum TlsMode {
        /// No TLS.
        #[default]
        Disable = "disable",
        /// TLS if the peer asks for it.
        Allow = "allow",
        /// TLS preferred, plain accepted.
        Prefer = "prefer",
        /// TLS mandatory, certificate not checked.
        Require = "require",
        /// TLS mandatory, certificate chain checked.
        VerifyCa = "verify-ca",
        /// TLS mandatory, certificate chain and host name checked.
        VerifyFull = "verify-full",
    }
}

config_enum! {
    /// How a new server connection picks a host from a database's host list.
    pub enum LoadBalanceHosts {
        /// Each new connection takes the next host in the list.
        #[default]
        RoundRobin = "round-robin",
        /// Keep using one host until a connection to it fails.
        Disable = "disable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_exact_otherwise() {
        assert_eq!(
            AuthType::from_name("SCRAM-SHA-256"),
            Some(AuthType::ScramSha256)
        );
        assert_eq!(
            PoolMode::from_name(" Transaction "),
            Some(PoolMode::Transaction)
        );
        assert_eq!(TlsMode::from_name("verify_ca"), None);
        assert_eq!(
            LoadBalanceHosts::from_name("round-robin"),
            Some(LoadBalanceHosts::RoundRobin)
        );
    }

    #[test]
    fn defaults_and_names() {
        assert_eq!(PoolMode::default(), PoolMode::Session);
        assert_eq!(AuthType::default(), AuthType::Md5);
        assert_eq!(TlsMode::default(), TlsMode::Disable);
        assert_eq!(LoadBalanceHosts::default(), LoadBalanceHosts::RoundRobin);
        assert_eq!(PoolMode::expected(), "session, transaction or statement");
        assert_eq!(AuthType::ScramSha256.to_string(), "scram-sha-256");
        for (name, v) in AuthType::NAMES {
            assert_eq!(v.as_str(), *name);
        }
    }
}
