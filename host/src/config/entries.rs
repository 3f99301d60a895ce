//! `[databases]` and `[users]` entries: their typed form and the keys each accepts.
//!
//! As with the global settings, each key is declared once (name, field, parser, type label,
//! default, description) and the setter and the reference table both come from that row.

use std::fmt;
use std::time::Duration;

use super::types::{LoadBalanceHosts, PoolMode, SessionState};
use super::values::{Parsed, RawValue, duration, hosts, opt_string, port, uint, unset_or, word};

/// Metadata of one `[databases]` / `[users]` key, for the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyInfo {
    pub name: &'static str,
    pub type_name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

macro_rules! entry_keys {
    ( $target:ident, $table:ident;
      $( $key:literal => $field:ident, $parse:expr, $label:literal, $default:literal, $doc:literal; )* ) => {
        pub(crate) const $table: &[KeyInfo] = &[
            $( KeyInfo { name: $key, type_name: $label, default: $default, doc: $doc }, )*
        ];

        impl $target {
            /// Parses `raw` into the field for `key`; `None` when the key is unknown.
            pub(crate) fn apply(&mut self, key: &str, raw: &RawValue) -> Option<Parsed<()>> {
                match key {
                    $( $key => Some(($parse)(raw).map(|v| self.$field = v)), )*
                    _ => None,
                }
            }
        }
    };
}

/// One `[databases]` entry: where a client-side database name is routed and its overrides of
/// the global settings. Unset overrides are `None` and inherit the global value.
#[derive(Clone, PartialEq)]
pub struct Database {
    /// Client-side name (the entry's key; `"*"` for the fallback entry).
    pub name: String,
    /// Server hosts; empty means the Unix socket in `unix_socket_dir`, a value starting with
    /// `/` is a socket directory.
    pub host: Vec<String>,
    pub port: u16,
    /// Server-side database name; `None` means the same as `name`.
    pub dbname: Option<String>,
    /// Forced server user: every client shares one pool under this user.
    pub user: Option<String>,
    pub password: Option<String>,
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub auth_dbname: Option<String>,
    pub client_encoding: Option<String>,
    pub datestyle: Option<String>,
    pub timezone: Option<String>,
    pub application_name: Option<String>,
    pub connect_query: Option<String>,
    pub pool_size: Option<u32>,
    pub min_pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub max_db_connections: Option<u32>,
    pub max_db_client_connections: Option<u32>,
    pub pool_mode: Option<PoolMode>,
    pub session_state: Option<SessionState>,
    pub server_lifetime: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub load_balance_hosts: LoadBalanceHosts,
}

impl Database {
    /// An entry with nothing set: Unix socket, port 5432, everything inherited.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            host: Vec::new(),
            port: 5432,
            dbname: None,
            user: None,
            password: None,
            auth_user: None,
            auth_query: None,
            auth_dbname: None,
            client_encoding: None,
            datestyle: None,
            timezone: None,
            application_name: None,
            connect_query: None,
            pool_size: None,
            min_pool_size: None,
            reserve_pool_size: None,
            max_db_connections: None,
            max_db_client_connections: None,
            pool_mode: None,
            session_state: None,
            server_lifetime: None,
            query_wait_timeout: None,
            load_balance_hosts: LoadBalanceHosts::RoundRobin,
        }
    }
}

/// Hand-written so a stray `{:?}` in a log line never prints a password.
impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("auth_user", &self.auth_user)
            .field("auth_query", &self.auth_query)
            .field("auth_dbname", &self.auth_dbname)
            .field("client_encoding", &self.client_encoding)
            .field("datestyle", &self.datestyle)
            .field("timezone", &self.timezone)
            .field("application_name", &self.application_name)
            .field("connect_query", &self.connect_query)
            .field("pool_size", &self.pool_size)
            .field("min_pool_size", &self.min_pool_size)
            .field("reserve_pool_size", &self.reserve_pool_size)
            .field("max_db_connections", &self.max_db_connections)
            .field("max_db_client_connections", &self.max_db_client_connections)
            .field("pool_mode", &self.pool_mode)
            .field("session_state", &self.session_state)
            .field("server_lifetime", &self.server_lifetime)
            .field("query_wait_timeout", &self.query_wait_timeout)
            .field("load_balance_hosts", &self.load_balance_hosts)
            .finish()
    }
}

entry_keys! {
    Database, DATABASE_KEYS;
    "dbname" => dbname, opt_string, "string", "client-side name", "Database name on the server.";
    "host" => host, hosts, "list", "Unix socket", "Server host name, address or socket directory (starting with /); a comma-separated list is used round-robin.";
    "port" => port, port, "port", "5432", "Server port.";
    "user" => user, opt_string, "string", "client's user", "Log in to the server as this user for every client (one pool per database).";
    "password" => password, opt_string, "string", "from auth_file", "Password for user.";
    "auth_user" => auth_user, opt_string, "string", "global auth_user", "Overrides auth_user for this database.";
    "auth_query" => auth_query, opt_string, "string", "global auth_query", "Overrides auth_query for this database; quote it with single quotes.";
    "auth_dbname" => auth_dbname, opt_string, "string", "global auth_dbname", "Overrides auth_dbname for this database.";
    "client_encoding" => client_encoding, opt_string, "string", "not set", "client_encoding requested from the server.";
    "datestyle" => datestyle, opt_string, "string", "not set", "DateStyle requested from the server.";
    "timezone" => timezone, opt_string, "string", "not set", "TimeZone requested from the server.";
    "application_name" => application_name, opt_string, "string", "not set", "application_name sent to the server.";
    "connect_query" => connect_query, opt_string, "string", "not set", "Query run on each new server connection before clients use it.";
    "pool_size" => pool_size, |r: &RawValue| unset_or(r, uint), "integer", "default_pool_size", "Maximum server connections per pool of this database.";
    "min_pool_size" => min_pool_size, |r: &RawValue| unset_or(r, uint), "integer", "global min_pool_size", "Minimum server connections per pool of this database.";
    "reserve_pool_size" => reserve_pool_size, |r: &RawValue| unset_or(r, uint), "integer", "global reserve_pool_size", "Reserve connections per pool of this database.";
    "reserve_pool" => reserve_pool_size, |r: &RawValue| unset_or(r, uint), "integer", "global reserve_pool_size", "Old spelling of reserve_pool_size.";
    "max_db_connections" => max_db_connections, |r: &RawValue| unset_or(r, uint), "integer", "global max_db_connections", "Maximum server connections to this database over all pools.";
    "max_db_client_connections" => max_db_client_connections, |r: &RawValue| unset_or(r, uint), "integer", "global max_db_client_connections", "Maximum client connections to this database.";
    "pool_mode" => pool_mode, |r: &RawValue| unset_or(r, word::<PoolMode>), "PoolMode", "global pool_mode", "Pool mode for this database: session, transaction or statement.";
    "session_state" => session_state, |r: &RawValue| unset_or(r, word::<SessionState>), "SessionState", "global session_state", "pgwarden: pin, reject or allow state that cannot move between servers.";
    "server_lifetime" => server_lifetime, |r: &RawValue| unset_or(r, duration), "duration", "global server_lifetime", "server_lifetime for this database.";
    "query_wait_timeout" => query_wait_timeout, |r: &RawValue| unset_or(r, duration), "duration", "user's or global value", "query_wait_timeout for this database; -1 means not set.";
    "load_balance_hosts" => load_balance_hosts, word::<LoadBalanceHosts>, "LoadBalanceHosts", "round-robin", "With several hosts: round-robin per connection, or disable to stay on one host until it fails.";
}

/// One `[users]` entry: per-user overrides of global settings. `None` inherits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserSettings {
    pub pool_mode: Option<PoolMode>,
    pub pool_size: Option<u32>,
    pub reserve_pool_size: Option<u32>,
    pub max_user_connections: Option<u32>,
    pub max_user_client_connections: Option<u32>,
    pub query_timeout: Option<Duration>,
    pub query_wait_timeout: Option<Duration>,
    pub idle_transaction_timeout: Option<Duration>,
    pub transaction_timeout: Option<Duration>,
    pub client_idle_timeout: Option<Duration>,
}

entry_keys! {
    UserSettings, USER_KEYS;
    "pool_mode" => pool_mode, |r: &RawValue| unset_or(r, word::<PoolMode>), "PoolMode", "database's or global", "Pool mode for every pool of this user.";
    "pool_size" => pool_size, |r: &RawValue| unset_or(r, uint), "integer", "database's or default_pool_size", "Maximum server connections per pool of this user.";
    "reserve_pool_size" => reserve_pool_size, |r: &RawValue| unset_or(r, uint), "integer", "database's or global", "Reserve connections per pool of this user.";
    "max_user_connections" => max_user_connections, |r: &RawValue| unset_or(r, uint), "integer", "global max_user_connections", "Maximum server connections of this user over all pools.";
    "max_user_client_connections" => max_user_client_connections, |r: &RawValue| unset_or(r, uint), "integer", "global max_user_client_connections", "Maximum client connections of this user.";
    "query_timeout" => query_timeout, |r: &RawValue| unset_or(r, duration), "duration", "global query_timeout", "query_timeout for this user.";
    "query_wait_timeout" => query_wait_timeout, |r: &RawValue| unset_or(r, duration), "duration", "database's or global", "query_wait_timeout for this user; -1 means not set.";
    "idle_transaction_timeout" => idle_transaction_timeout, |r: &RawValue| unset_or(r, duration), "duration", "global idle_transaction_timeout", "idle_transaction_timeout for this user.";
    "transaction_timeout" => transaction_timeout, |r: &RawValue| unset_or(r, duration), "duration", "global transaction_timeout", "transaction_timeout for this user.";
    "client_idle_timeout" => client_idle_timeout, |r: &RawValue| unset_or(r, duration), "duration", "global client_idle_timeout", "client_idle_timeout for this user.";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> RawValue {
        RawValue::Str(v.to_owned())
    }

    #[test]
    fn every_database_key_is_settable() {
        let samples = [
            ("host", "h"),
            ("port", "1"),
            ("pool_mode", "session"),
            ("session_state", "reject"),
        ];
        for key in DATABASE_KEYS {
            let value = samples.iter().find(|(k, _)| *k == key.name).map_or(
                if key.type_name == "integer" || key.type_name == "duration" {
                    "1"
                } else {
                    "x"
                },
                |(_, v)| *v,
            );
            let mut db = Database::new("d");
            let got = db.apply(key.name, &s(value));
            if key.name == "load_balance_hosts" {
                assert!(matches!(got, Some(Err(_))));
                assert_eq!(db.apply(key.name, &s("disable")), Some(Ok(())));
            } else {
                assert_eq!(got, Some(Ok(())), "{}", key.name);
            }
            assert_ne!(db, Database::new("d"), "{} changed nothing", key.name);
        }
        assert_eq!(Database::new("d").apply("nope", &s("1")), None);
    }

    #[test]
    fn every_user_key_is_settable() {
        for key in USER_KEYS {
            let value = if key.name == "pool_mode" {
                "transaction"
            } else {
                "2"
            };
            let mut u = UserSettings::default();
            assert_eq!(u.apply(key.name, &s(value)), Some(Ok(())), "{}", key.name);
            assert_ne!(u, UserSettings::default(), "{}", key.name);
        }
        assert_eq!(
            UserSettings::default().apply("max_db_connections", &s("1")),
            None
        );
    }

    #[test]
    fn reserve_pool_alias_and_unset() {
        let mut db = Database::new("d");
        assert_eq!(db.apply("reserve_pool", &s("3")), Some(Ok(())));
        assert_eq!(db.reserve_pool_size, Some(3));
        assert_eq!(db.apply("pool_size", &s("-1")), Some(Ok(())));
        assert_eq!(db.pool_size, None);
    }

    #[test]
    fn debug_hides_password() {
        let mut db = Database::new("d");
        db.password = Some("hunter2".into());
        let text = format!("{db:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}
