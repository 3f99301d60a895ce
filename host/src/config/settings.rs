//! The `[pgbouncer]` (ini) / `[pgwarden]` (TOML) settings, defined once.
//!
//! Each row of the `settings!` table gives the name, Rust type, default (written exactly as it
//! would appear in an ini file), parser, a type label and reload flag for the reference, and a
//! one-line description. From it come the [`Settings`] struct, its `Default` (the default
//! strings run through the same parsers as user input, so they cannot disagree), the key
//! setter used by both front-ends, and the metadata behind `reference_markdown` and
//! `is_reloadable`.

use std::path::PathBuf;
use std::time::Duration;

use super::types::{AuthType, LogFormat, PoolMode, SessionState, TlsMode};
use super::values::{
    Parsed, RawValue, ShowValue, boolean, check_query, count, duration, level, list, octal_mode,
    opt_path, opt_string, port, string, uint, word,
};

/// Settings PgBouncer knows but pgwarden does not act on yet. Setting one of them to a
/// non-default value loads fine but produces a warning. Edit this list as features land.
pub const NOT_IMPLEMENTED: &[&str] = &[
    "syslog",
    "syslog_ident",
    "syslog_facility",
    "auth_hba_file",
    "auth_ident_file",
    "auth_ldap_options",
    "peer_id",
    "so_reuseport",
    "dns_max_ttl",
    "dns_nxdomain_ttl",
    "dns_zone_check_period",
    "resolv_conf",
    "tcp_defer_accept",
    "tcp_socket_buffer",
    "sbuf_loopcnt",
    "pkt_buf",
    "suspend_timeout",
    "service_name",
    "job_name",
    "unix_socket_group",
    "server_round_robin",
    "conffile",
    "client_tls_ca_file",
    "client_tls_cert_file",
    "client_tls_key_file",
    "client_tls_ciphers",
    "client_tls13_ciphers",
    "client_tls_dheparams",
    "client_tls_ecdhcurve",
    "client_tls_protocols",
    "server_tls_ca_file",
    "server_tls_cert_file",
    "server_tls_key_file",
    "server_tls_ciphers",
    "server_tls13_ciphers",
    "server_tls_protocols",
];

/// Metadata of one setting, for the reference and reload decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SettingInfo {
    pub name: &'static str,
    pub type_name: &'static str,
    /// The default as written in an ini file ("" = not set / empty).
    pub default: &'static str,
    pub reloadable: bool,
    pub doc: &'static str,
}

macro_rules! settings {
    ( $( $name:ident : $ty:ty = $default:literal, $parse:expr, $label:literal, $reload:ident, $doc:literal; )* ) => {
        /// Global pooler settings, one field per PgBouncer `[pgbouncer]` key, with PgBouncer's
        /// defaults.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Settings {
            $( #[doc = $doc] pub $name: $ty, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Self {
                    // A default that fails to parse is caught by a unit test; the fallback only
                    // keeps this infallible.
                    $( $name: ($parse)(&RawValue::Str($default.to_owned())).unwrap_or_default(), )*
                }
            }
        }

        /// Every setting, in alphabetical order (PgBouncer's SHOW CONFIG order).
        pub(crate) const SETTINGS: &[SettingInfo] = &[
            $( SettingInfo {
                name: stringify!($name),
                type_name: $label,
                default: $default,
                reloadable: settings!(@reload $reload),
                doc: $doc,
            }, )*
        ];

        impl Settings {
            /// Parses `raw` into the named setting. `None` when the key is unknown; otherwise
            /// the parse result (an "expected ..." message on failure).
            pub(crate) fn set(&mut self, key: &str, raw: &RawValue) -> Option<Parsed<()>> {
                match key {
                    $( stringify!($name) => Some(($parse)(raw).map(|v| self.$name = v)), )*
                    _ => None,
                }
            }

            /// The named setting's value as SHOW CONFIG prints it; `None` for an unknown key.
            pub(crate) fn show(&self, key: &str) -> Option<String> {
                match key {
                    // Two values whose written form is not their type's usual one.
                    "server_check_query" => Some(match &self.server_check_query {
                        None => String::new(),
                        Some(q) if q.is_empty() => "<empty>".to_owned(),
                        Some(q) => q.clone(),
                    }),
                    "unix_socket_mode" => Some(format!("0{:o}", self.unix_socket_mode)),
                    $( stringify!($name) => Some(ShowValue::show(&self.$name)), )*
                    _ => None,
                }
            }

            /// Whether the named setting still has its default value (unknown keys count as
            /// default, so callers never warn about them twice).
            pub(crate) fn is_default(&self, key: &str) -> bool {
                let defaults = Self::default();
                match key {
                    $( stringify!($name) => self.$name == defaults.$name, )*
                    _ => true,
                }
            }
        }
    };
    (@reload reload) => { true };
    (@reload fixed) => { false };
}

settings! {
    admin_users: Vec<String> = "", list, "list", reload,
        "Users allowed to run every admin console command.";
    application_name_add_host: bool = "0", boolean, "bool", reload,
        "Append the client address and port to application_name at connection start.";
    auth_dbname: Option<String> = "", opt_string, "string", reload,
        "The [databases] entry whose server runs auth_query.";
    auth_file: Option<PathBuf> = "", opt_path, "path", reload,
        "File with user names and passwords (userlist.txt format).";
    auth_hba_file: Option<PathBuf> = "", opt_path, "path", reload,
        "HBA file used when auth_type is hba.";
    auth_ident_file: Option<PathBuf> = "", opt_path, "path", reload,
        "Ident map file used with auth_hba_file.";
    auth_ldap_options: Option<String> = "", opt_string, "string", reload,
        "LDAP connection options used when auth_type is ldap.";
    auth_query: String = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin", string, "string", reload,
        "Query run as auth_user to fetch the password of a user missing from auth_file.";
    auth_type: AuthType = "md5", word::<AuthType>, "AuthType", reload,
        "How clients authenticate: any, trust, plain, md5 or scram-sha-256.";
    auth_user: Option<String> = "", opt_string, "string", reload,
        "User that runs auth_query for users not found in auth_file.";
    autodb_idle_timeout: Duration = "3600", duration, "duration", reload,
        "Free pools of databases created from the \"*\" entry after this long unused.";
    cancel_wait_timeout: Duration = "10", duration, "duration", reload,
        "Drop a cancel request that waited this long for a server; 0 waits forever.";
    client_idle_timeout: Duration = "0", duration, "duration", reload,
        "Close client connections idle this long; 0 disables.";
    client_login_timeout: Duration = "60", duration, "duration", reload,
        "Disconnect clients that have not finished logging in after this long.";
    client_tls13_ciphers: Option<String> = "", opt_string, "string", reload,
        "TLS 1.3 cipher suites for client connections.";
    client_tls_ca_file: Option<PathBuf> = "", opt_path, "path", reload,
        "CA certificates used to verify client certificates.";
    client_tls_cert_file: Option<PathBuf> = "", opt_path, "path", reload,
        "Certificate presented to clients.";
    client_tls_ciphers: String = "default", string, "string", reload,
        "TLS 1.2-and-older ciphers for client connections (OpenSSL syntax).";
    client_tls_dheparams: String = "auto", string, "string", reload,
        "DHE key exchange parameters for client connections.";
    client_tls_ecdhcurve: String = "auto", string, "string", reload,
        "ECDH curve for client connections.";
    client_tls_key_file: Option<PathBuf> = "", opt_path, "path", reload,
        "Private key for client_tls_cert_file.";
    client_tls_protocols: String = "secure", string, "string", reload,
        "TLS protocol versions allowed for client connections.";
    client_tls_sslmode: TlsMode = "disable", word::<TlsMode>, "TlsMode", reload,
        "TLS policy for client connections (pgwarden: disable; allow/prefer warn, stricter modes are refused).";
    conffile: Option<PathBuf> = "", opt_path, "path", reload,
        "Configuration file to read on the next reload.";
    default_pool_size: u32 = "20", uint, "integer", reload,
        "Server connections per user/database pool unless overridden.";
    disable_pqexec: bool = "0", boolean, "bool", fixed,
        "Refuse the simple query protocol.";
    dns_max_ttl: Duration = "15", duration, "duration", reload,
        "How long successful DNS lookups are cached.";
    dns_nxdomain_ttl: Duration = "15", duration, "duration", reload,
        "How long failed DNS lookups are cached.";
    dns_zone_check_period: Duration = "0", duration, "duration", reload,
        "How often to check DNS zone serials for changes; 0 disables.";
    idle_transaction_timeout: Duration = "0", duration, "duration", reload,
        "Disconnect clients idle inside a transaction this long; 0 disables.";
    ignore_startup_parameters: Vec<String> = "", list, "list", reload,
        "Startup parameters to accept and ignore instead of rejecting the client.";
    job_name: String = "pgbouncer", string, "string", fixed,
        "Service name (Windows service registration).";
    listen_addr: Vec<String> = "", list, "list", fixed,
        "TCP addresses to listen on; * for all; empty for Unix socket only.";
    listen_backlog: u32 = "128", uint, "integer", fixed,
        "Backlog passed to listen(2).";
    listen_port: u16 = "6432", port, "port", fixed,
        "Port for the TCP listeners and the Unix socket name.";
    log_connections: bool = "1", boolean, "bool", reload,
        "Log client login attempts and failures, and new server connections.";
    log_disconnections: bool = "1", boolean, "bool", reload,
        "Log disconnections of clients and servers, with their reasons.";
    log_format: LogFormat = "text", word::<LogFormat>, "LogFormat", reload,
        "pgwarden: text (PgBouncer's lines) or json (one object per line: timestamp, level, message, and conn, db, user, addr for connection lines).";
    log_pooler_errors: bool = "1", boolean, "bool", reload,
        "Log the error messages sent to clients.";
    log_stats: bool = "1", boolean, "bool", reload,
        "Log aggregated statistics every stats_period: the totals line (xacts, queries, parses, binds per second) and one line per plugin called.";
    logfile: Option<PathBuf> = "", opt_path, "path", reload,
        "File to log to, in addition to stderr; reopened on SIGHUP and RELOAD (log rotation).";
    login_notify_message: Option<String> = "", opt_string, "string", reload,
        "Notice sent to clients after a successful login.";
    max_client_conn: u32 = "100", uint, "integer", reload,
        "Maximum number of client connections.";
    max_db_client_connections: u32 = "0", uint, "integer", reload,
        "Maximum client connections per database; 0 is unlimited.";
    max_db_connections: u32 = "0", uint, "integer", reload,
        "Maximum server connections per database; 0 is unlimited.";
    max_packet_size: u32 = "2147483647", uint, "integer", reload,
        "Largest protocol packet let through, in bytes.";
    max_prepared_statements: u32 = "200", uint, "integer", reload,
        "Prepared statements tracked per server connection in transaction/statement mode; 0 disables.";
    max_user_client_connections: u32 = "0", uint, "integer", reload,
        "Maximum client connections per user; 0 is unlimited.";
    max_user_connections: u32 = "0", uint, "integer", reload,
        "Maximum server connections per user; 0 is unlimited.";
    metrics_listen_addr: Vec<String> = "", list, "list", fixed,
        "pgwarden: addresses of the HTTP listener for operators (GET /metrics in Prometheus' text format, /healthz, /readyz; see docs/METRICS.md); * for all; empty disables it.";
    metrics_listen_port: u16 = "9127", port, "port", fixed,
        "pgwarden: port of the metrics_listen_addr listener (9127 is pgbouncer_exporter's, which pgwarden makes unnecessary).";
    min_pool_size: u32 = "0", uint, "integer", reload,
        "Keep at least this many server connections open per pool (capped at the pool size).";
    peer_id: u32 = "0", count::<0, 16383>, "integer", reload,
        "Identity of this process among peered poolers; 0 disables peering.";
    pidfile: Option<PathBuf> = "", opt_path, "path", fixed,
        "File to write the process id to.";
    pkt_buf: u32 = "4096", uint, "integer", fixed,
        "Internal packet buffer size in bytes.";
    pool_idle_timeout: Duration = "0", duration, "duration", reload,
        "Free a pool with no clients and no servers after this long; 0 disables.";
    pool_mode: PoolMode = "session", word::<PoolMode>, "PoolMode", reload,
        "When a server connection is returned to the pool: session, transaction or statement.";
    query_timeout: Duration = "0", duration, "duration", reload,
        "Cancel queries running longer than this; 0 disables.";
    query_wait_notify: Duration = "5", duration, "duration", reload,
        "Tell a queued client it is waiting after this long; 0 disables.";
    query_wait_timeout: Duration = "120", duration, "duration", reload,
        "Disconnect a client whose query waited this long for a server; 0 waits forever.";
    reserve_pool_size: u32 = "0", uint, "integer", reload,
        "Extra connections a pool may open when clients wait too long; 0 disables.";
    reserve_pool_timeout: Duration = "5", duration, "duration", reload,
        "How long a client waits before the reserve pool is used.";
    resolv_conf: Option<PathBuf> = "", opt_path, "path", fixed,
        "Custom resolv.conf for DNS lookups.";
    sbuf_loopcnt: u32 = "5", uint, "integer", reload,
        "Buffers processed per connection before serving others; 0 is unlimited.";
    scram_iterations: u32 = "4096", count::<1, { u32::MAX }>, "integer", reload,
        "PBKDF2 iterations when creating SCRAM secrets.";
    server_check_delay: Duration = "30", duration, "duration", reload,
        "Reuse a released server without server_check_query within this long.";
    server_check_query: Option<String> = "<empty>", check_query, "string", reload,
        "Query checking a server is alive; empty disables checks, <empty> sends an empty query.";
    server_connect_timeout: Duration = "15", duration, "duration", reload,
        "Give up connecting and logging in to a server after this long.";
    server_fast_close: bool = "0", boolean, "bool", reload,
        "In session mode, close servers marked for reconnect at the next transaction end.";
    server_idle_timeout: Duration = "600", duration, "duration", reload,
        "Close server connections idle this long; 0 disables.";
    server_lifetime: Duration = "3600", duration, "duration", reload,
        "Close unused server connections older than this; 0 uses each once.";
    server_login_retry: Duration = "15", duration, "duration", reload,
        "Wait this long before retrying a server whose login failed.";
    server_reset_query: Option<String> = "DISCARD ALL", opt_string, "string", reload,
        "Query run when a session-mode server is released; empty disables.";
    server_reset_query_always: bool = "0", boolean, "bool", reload,
        "Run server_reset_query in every pool mode, not only session.";
    server_round_robin: bool = "0", boolean, "bool", reload,
        "Reuse server connections round-robin instead of last-in-first-out.";
    server_tls13_ciphers: Option<String> = "", opt_string, "string", reload,
        "TLS 1.3 cipher suites for server connections.";
    server_tls_ca_file: Option<PathBuf> = "", opt_path, "path", reload,
        "CA certificates used to verify server certificates.";
    server_tls_cert_file: Option<PathBuf> = "", opt_path, "path", reload,
        "Client certificate presented to servers.";
    server_tls_ciphers: String = "default", string, "string", reload,
        "TLS 1.2-and-older ciphers for server connections (OpenSSL syntax).";
    server_tls_key_file: Option<PathBuf> = "", opt_path, "path", reload,
        "Private key for server_tls_cert_file.";
    server_tls_protocols: String = "secure", string, "string", reload,
        "TLS protocol versions allowed for server connections.";
    server_tls_sslmode: TlsMode = "prefer", word::<TlsMode>, "TlsMode", reload,
        "TLS policy for server connections (pgwarden: require and stricter are refused).";
    service_name: String = "pgbouncer", string, "string", fixed,
        "Windows service name; alias of job_name.";
    session_state: SessionState = "pin", word::<SessionState>, "SessionState", reload,
        "pgwarden: transaction/statement pooling and state that cannot move servers (LISTEN, advisory locks, temp tables, WITH HOLD, SET ROLE, SQL PREPARE): pin, reject or allow.";
    so_reuseport: bool = "0", boolean, "bool", fixed,
        "Set SO_REUSEPORT on listening sockets.";
    stats_period: Duration = "60", duration, "duration", reload,
        "How often averages are recomputed and statistics logged.";
    stats_users: Vec<String> = "", list, "list", reload,
        "Users allowed to run read-only SHOW commands on the admin console.";
    suspend_timeout: Duration = "10", duration, "duration", reload,
        "How long SUSPEND or online restart waits for buffers to flush.";
    syslog: bool = "0", boolean, "bool", reload,
        "Log to syslog.";
    syslog_facility: String = "daemon", string, "string", reload,
        "Syslog facility.";
    syslog_ident: String = "pgbouncer", string, "string", reload,
        "Program name reported to syslog.";
    tcp_defer_accept: u32 = "1", uint, "integer", reload,
        "Set TCP_DEFER_ACCEPT on listening sockets (Linux).";
    tcp_keepalive: bool = "1", boolean, "bool", reload,
        "Enable TCP keepalive with the OS defaults.";
    tcp_keepcnt: u32 = "0", uint, "integer", reload,
        "TCP keepalive probe count; 0 keeps the OS default.";
    tcp_keepidle: u32 = "0", uint, "integer", reload,
        "Seconds idle before TCP keepalive probes; 0 keeps the OS default.";
    tcp_keepintvl: u32 = "0", uint, "integer", reload,
        "Seconds between TCP keepalive probes; 0 keeps the OS default.";
    tcp_socket_buffer: u32 = "0", uint, "integer", reload,
        "Socket buffer size in bytes; 0 keeps the OS default.";
    tcp_user_timeout: u32 = "0", uint, "integer", reload,
        "TCP_USER_TIMEOUT in milliseconds; 0 keeps the OS default.";
    track_extra_parameters: Vec<String> = "IntervalStyle", list, "list", fixed,
        "Extra server-reported parameters kept per client and restored on each server.";
    transaction_timeout: Duration = "0", duration, "duration", reload,
        "Disconnect clients whose transaction stays open this long; 0 disables.";
    unix_socket_dir: Option<PathBuf> = "/tmp", opt_path, "path", fixed,
        "Directory of the Unix socket (also the default for servers); empty disables Unix sockets.";
    unix_socket_group: Option<String> = "", opt_string, "string", fixed,
        "Group owning the Unix socket.";
    unix_socket_mode: u32 = "0777", octal_mode, "octal mode", fixed,
        "Permissions of the Unix socket.";
    user: Option<String> = "", opt_string, "string", fixed,
        "Unix user to switch to after startup.";
    verbose: u8 = "0", level, "integer", reload,
        "Extra logging verbosity: 0 info, 1 debug, 2 and up trace; the larger of this and -v applies.";
    worker_threads: u32 = "0", uint, "integer", fixed,
        "pgwarden: threads serving connections; 0 is one per CPU the process may use (or TOKIO_WORKER_THREADS when set).";
}

/// Looks up a setting's metadata by canonical (lower-case) name.
pub(crate) fn find(key: &str) -> Option<&'static SettingInfo> {
    SETTINGS.iter().find(|s| s.name == key)
}

/// Whether a `[pgbouncer]` setting can change on reload. Keys that need a restart (listening
/// sockets, process identity, buffer sizes) return false, as do unknown keys.
pub fn is_reloadable(key: &str) -> bool {
    find(&key.to_ascii_lowercase()).is_some_and(|s| s.reloadable)
}

/// Whether pgwarden ignores this setting for now.
pub(crate) fn is_not_implemented(key: &str) -> bool {
    NOT_IMPLEMENTED.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";

    #[test]
    fn every_default_string_parses() {
        let mut s = Settings::default();
        for info in SETTINGS {
            let parsed = s.set(info.name, &RawValue::Str(info.default.to_owned()));
            assert_eq!(parsed, Some(Ok(())), "default of {}", info.name);
        }
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn table_is_sorted_and_unique() {
        let names: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn not_implemented_names_exist() {
        for key in NOT_IMPLEMENTED {
            assert!(find(key).is_some(), "{key}");
        }
        assert!(!is_not_implemented("client_tls_sslmode"));
        assert!(!is_not_implemented("server_tls_sslmode"));
    }

    #[test]
    fn defaults_match_pgbouncer() {
        let d = Settings::default();
        assert_eq!(d.listen_port, 6432);
        assert!(d.listen_addr.is_empty());
        assert_eq!(d.unix_socket_dir, Some(PathBuf::from("/tmp")));
        assert_eq!(d.unix_socket_mode, 0o777);
        assert_eq!(d.pool_mode, PoolMode::Session);
        assert_eq!(d.auth_type, AuthType::Md5);
        assert_eq!(d.auth_query, DEFAULT_AUTH_QUERY);
        assert_eq!(d.auth_file, None);
        assert_eq!(d.max_client_conn, 100);
        assert_eq!(d.default_pool_size, 20);
        assert_eq!(d.min_pool_size, 0);
        assert_eq!(d.reserve_pool_size, 0);
        assert_eq!(d.reserve_pool_timeout, Duration::from_secs(5));
        assert_eq!(d.server_lifetime, Duration::from_secs(3600));
        assert_eq!(d.server_idle_timeout, Duration::from_secs(600));
        assert_eq!(d.server_connect_timeout, Duration::from_secs(15));
        assert_eq!(d.server_login_retry, Duration::from_secs(15));
        assert_eq!(d.server_check_delay, Duration::from_secs(30));
        assert_eq!(d.server_check_query, Some(String::new()));
        assert_eq!(d.server_reset_query.as_deref(), Some("DISCARD ALL"));
        assert!(!d.server_reset_query_always);
        assert_eq!(d.client_login_timeout, Duration::from_secs(60));
        assert_eq!(d.autodb_idle_timeout, Duration::from_secs(3600));
        assert_eq!(d.query_wait_timeout, Duration::from_secs(120));
        assert_eq!(d.cancel_wait_timeout, Duration::from_secs(10));
        assert_eq!(d.query_timeout, Duration::ZERO);
        assert_eq!(d.client_idle_timeout, Duration::ZERO);
        assert_eq!(d.idle_transaction_timeout, Duration::ZERO);
        assert_eq!(d.transaction_timeout, Duration::ZERO);
        assert_eq!(d.query_wait_notify, Duration::from_secs(5));
        assert_eq!(d.stats_period, Duration::from_secs(60));
        assert_eq!(d.track_extra_parameters, vec!["IntervalStyle".to_owned()]);
        assert!(d.ignore_startup_parameters.is_empty());
        assert!(d.admin_users.is_empty() && d.stats_users.is_empty());
        assert!(d.log_connections && d.log_disconnections && d.log_pooler_errors && d.log_stats);
        assert_eq!(d.client_tls_sslmode, TlsMode::Disable);
        assert_eq!(d.server_tls_sslmode, TlsMode::Prefer);
        assert_eq!(d.max_packet_size, 2_147_483_647);
        assert_eq!(d.max_prepared_statements, 200);
        assert_eq!(d.scram_iterations, 4096);
        assert_eq!(d.listen_backlog, 128);
        assert_eq!(d.pkt_buf, 4096);
        assert!(d.tcp_keepalive);
        assert_eq!(d.verbose, 0);
        assert_eq!(d.job_name, "pgbouncer");
        assert!(
            d.metrics_listen_addr.is_empty(),
            "the HTTP listener is off by default"
        );
        assert_eq!(d.metrics_listen_port, 9127);
    }

    #[test]
    fn reload_flags_follow_pgbouncer() {
        for key in [
            "listen_addr",
            "listen_port",
            "unix_socket_dir",
            "unix_socket_mode",
            "unix_socket_group",
            "user",
            "pidfile",
            "pkt_buf",
            "listen_backlog",
            "disable_pqexec",
            "so_reuseport",
            "track_extra_parameters",
            "job_name",
            "service_name",
            "resolv_conf",
            "metrics_listen_addr",
            "metrics_listen_port",
            "worker_threads",
        ] {
            assert!(!is_reloadable(key), "{key}");
        }
        let fixed = SETTINGS.iter().filter(|s| !s.reloadable).count();
        assert_eq!(fixed, 18);
        assert!(is_reloadable("pool_mode"));
        assert!(is_reloadable("Default_Pool_Size"));
        assert!(!is_reloadable("no_such_setting"));
    }

    #[test]
    fn shown_defaults_are_the_written_defaults() {
        let s = Settings::default();
        for info in SETTINGS {
            let shown = s.show(info.name).expect("known key");
            // A list or a duration may be written more than one way; the shown form must parse back to
            // the same value, and for every default it is the default as written.
            assert_eq!(shown, info.default, "{}", info.name);
        }
        assert_eq!(s.show("nope"), None);
        let mut s = Settings::default();
        s.set("server_lifetime", &RawValue::Str("0.5".into()));
        s.set("admin_users", &RawValue::Str("a, b".into()));
        s.set("server_check_query", &RawValue::Str("".into()));
        assert_eq!(s.show("server_lifetime").as_deref(), Some("0.5"));
        assert_eq!(s.show("admin_users").as_deref(), Some("a,b"));
        assert_eq!(s.show("server_check_query").as_deref(), Some(""));
    }

    #[test]
    fn setter_reports_unknown_and_invalid() {
        let mut s = Settings::default();
        assert_eq!(s.set("nope", &RawValue::Str("1".into())), None);
        assert!(matches!(
            s.set("listen_port", &RawValue::Str("x".into())),
            Some(Err(_))
        ));
        assert_eq!(s.set("listen_port", &RawValue::Int(7000)), Some(Ok(())));
        assert_eq!(s.listen_port, 7000);
        assert!(!s.is_default("listen_port"));
        assert!(s.is_default("pool_mode"));
    }
}
