//! pgwarden's `testing` plugin: a deliberately misbehaving plugin for pgwarden's own tests and
//! benchmarks. It exports every hook (`init`, `router`, `policy`, `auth`) and does what the SQL,
//! application name or user name it sees asks for, so a test can make it trap, spin, exhaust its
//! memory, refuse or log on demand. Never deploy it.
//!
//! Configuration keys (others are ignored, so test harnesses may pass what they like):
//!
//! - `mode`: `allow` (default: behave, apart from the triggers below), `trap_in_init` (`init`
//!   panics, which traps), `init_error` (`init` returns the error `testing: init refused`);
//! - `auth_user`, `auth_dbname`: who runs the query for the `pgwarden_test_query` user, and where
//!   (default: the client's database).
//!
//! Policy (`check`), by what the SQL text contains, first match wins:
//! `pgwarden_test_trap` panics; `pgwarden_test_loop` spins forever (the host's deadline must stop
//! it); `pgwarden_test_oom` allocates until memory runs out; `pgwarden_test_deny` denies with
//! SQLSTATE 42501 and `denied by testing plugin`; `pgwarden_test_log` logs
//! `testing plugin saw: <sql>` at info and allows; anything else is allowed. Sandbox probes, which
//! deny with SQLSTATE 42501 and report what happened in the message: `pgwarden_test_fs:<path>`
//! reads the file (`testing: fs: read N bytes` or `testing: fs: error: <error>`),
//! `pgwarden_test_net:<host:port>` opens a TCP connection (`testing: net: connected` or
//! `testing: net: error: <error>`), `pgwarden_test_clock` reads the wall clock
//! (`testing: clock: <seconds since the Unix epoch>`). A probe's argument ends at whitespace, `'` or
//! `;`.
//!
//! Router (`route`), by the whole application name: `pgwarden_test_route_to=<alias>` routes to
//! database `<alias>`; `pgwarden_test_trap` panics; `pgwarden_test_loop` spins; `pgwarden_test_deny`
//! refuses with SQLSTATE 28000 and `routing refused by testing plugin`; otherwise no change.
//!
//! Auth (`lookup`), by the user name: `pgwarden_test_trap` panics; `pgwarden_test_loop` spins;
//! `pgwarden_test_error` fails with `testing: lookup failed`; `pgwarden_test_secret_<x>` has the
//! plain password `<x>`; `pgwarden_test_query` runs `SELECT $1::text` with `$1 = 'hello'` through
//! the `database` import and returns the value (so the secret is `hello`: proof the import works);
//! anyone else is unknown.
//!
//! Example:
//!
//! ```toml
//! mode = "allow"
//! auth_user = "pgwarden_auth"
//! auth_dbname = "postgres"
//! ```

use std::hint::black_box;

use pgwarden_plugin_sdk::database::{Database, HostDatabase};
use pgwarden_plugin_sdk::policy::{Query, Verdict};
use pgwarden_plugin_sdk::router::Destination;
use pgwarden_plugin_sdk::types::{Denial, SessionInfo};
use pgwarden_plugin_sdk::{Config, State, deny, log, sqlstate};

/// What `init` read.
#[derive(Debug, Default)]
struct Settings {
    auth_user: Option<String>,
    auth_dbname: Option<String>,
}

static SETTINGS: State<Settings> = State::new();

/// The plugin.
struct Testing;

impl pgwarden_plugin_sdk::init::Guest for Testing {
    fn init(config: pgwarden_plugin_sdk::types::Config) -> Result<(), String> {
        let config = Config::new(config);
        match config.get_or("mode", "allow") {
            "allow" => {}
            "trap_in_init" => panic!("testing: trap in init requested"),
            "init_error" => return Err("testing: init refused".to_string()),
            other => {
                return Err(format!(
                    "testing: unknown mode {other:?} (expected allow, trap_in_init or init_error)"
                ));
            }
        }
        SETTINGS.set(Settings {
            auth_user: config.get("auth_user").map(str::to_string),
            auth_dbname: config.get("auth_dbname").map(str::to_string),
        });
        Ok(())
    }
}

impl pgwarden_plugin_sdk::policy::Guest for Testing {
    fn check(_session: SessionInfo, query: Query) -> Verdict {
        let sql = query.sql;
        if let Some(outcome) = probe(&sql) {
            return Verdict::Deny(deny(sqlstate::INSUFFICIENT_PRIVILEGE, outcome));
        }
        if sql.contains("pgwarden_test_trap") {
            panic!("testing: trap requested by the query");
        } else if sql.contains("pgwarden_test_loop") {
            spin();
        } else if sql.contains("pgwarden_test_oom") {
            exhaust_memory();
        } else if sql.contains("pgwarden_test_deny") {
            Verdict::Deny(deny(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "denied by testing plugin",
            ))
        } else {
            if sql.contains("pgwarden_test_log") {
                log!(Info, "testing plugin saw: {sql}");
            }
            Verdict::Allow
        }
    }
}

impl pgwarden_plugin_sdk::router::Guest for Testing {
    fn route(session: SessionInfo) -> Result<Destination, Denial> {
        let app = session.application_name.as_str();
        let mut destination = Destination {
            database: None,
            pool_mode: None,
            server_user: None,
        };
        match app {
            "pgwarden_test_trap" => panic!("testing: trap requested by the application name"),
            "pgwarden_test_loop" => spin(),
            "pgwarden_test_deny" => {
                return Err(deny(
                    sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                    "routing refused by testing plugin",
                ));
            }
            _ => {
                if let Some(alias) = app.strip_prefix("pgwarden_test_route_to=") {
                    destination.database = Some(alias.to_string());
                }
            }
        }
        Ok(destination)
    }
}

impl pgwarden_plugin_sdk::auth::Guest for Testing {
    fn lookup(user: String, database: String) -> Result<Option<String>, String> {
        let settings = SETTINGS.get().unwrap_or_default();
        lookup_with(&HostDatabase, &settings, &user, &database)
    }
}

pgwarden_plugin_sdk::host::export!(Testing);

/// `lookup` over any [`Database`], so the query path tests natively.
fn lookup_with(
    db: &impl Database,
    settings: &Settings,
    user: &str,
    database: &str,
) -> Result<Option<String>, String> {
    match user {
        "pgwarden_test_trap" => panic!("testing: trap requested by the user name"),
        "pgwarden_test_loop" => spin(),
        "pgwarden_test_error" => Err("testing: lookup failed".to_string()),
        "pgwarden_test_query" => {
            let auth_user = settings.auth_user.as_deref().ok_or_else(|| {
                "testing: pgwarden_test_query needs the auth_user configuration key".to_string()
            })?;
            let target = settings.auth_dbname.as_deref().unwrap_or(database);
            let rows = db.query(
                auth_user,
                target,
                "SELECT $1::text",
                &[Some("hello".to_string())],
            )?;
            match rows.first().and_then(|row| row.first()) {
                Some(Some(value)) => Ok(Some(value.clone())),
                _ => Err(format!(
                    "testing: unexpected answer to SELECT $1::text: {rows:?}"
                )),
            }
        }
        _ => Ok(user
            .strip_prefix("pgwarden_test_secret_")
            .map(str::to_string)),
    }
}

/// The argument following `marker` in `sql`, up to whitespace, `'` or `;`.
fn argument<'a>(sql: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &sql[sql.find(marker)? + marker.len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '\'' || c == ';')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Runs the sandbox probe `sql` asks for, if any, and describes its outcome.
fn probe(sql: &str) -> Option<String> {
    if let Some(path) = argument(sql, "pgwarden_test_fs:") {
        return Some(match std::fs::read(path) {
            Ok(bytes) => format!("testing: fs: read {} bytes", bytes.len()),
            Err(e) => format!("testing: fs: error: {e}"),
        });
    }
    if let Some(addr) = argument(sql, "pgwarden_test_net:") {
        return Some(match std::net::TcpStream::connect(addr) {
            Ok(_) => "testing: net: connected".to_string(),
            Err(e) => format!("testing: net: error: {e}"),
        });
    }
    if sql.contains("pgwarden_test_clock") {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        return Some(match now {
            Ok(d) => format!("testing: clock: {}", d.as_secs()),
            Err(e) => format!("testing: clock: error: {e}"),
        });
    }
    None
}

/// Never returns: the host's CPU deadline is what must end the call.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Never returns: grows a heap of 1 MiB blocks, keeping every block alive and touched, until an
/// allocation fails (which aborts, i.e. traps) or the host's memory cap stops the growth.
fn exhaust_memory() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![1u8; 1 << 20]);
        black_box(&mut blocks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwarden_plugin_sdk::database::Row;
    use pgwarden_plugin_sdk::init::Guest as _;
    use pgwarden_plugin_sdk::policy::{Guest as _, Protocol};
    use pgwarden_plugin_sdk::router::Guest as _;
    use pgwarden_plugin_sdk::types::PoolMode;
    use std::cell::RefCell;
    use std::panic::AssertUnwindSafe;

    fn session(app: &str) -> SessionInfo {
        SessionInfo {
            user: "u".to_string(),
            database: "d".to_string(),
            application_name: app.to_string(),
            client_address: "unix".to_string(),
            client_ip: String::new(),
            tls: false,
            startup_parameters: Vec::new(),
            pool_mode: PoolMode::Session,
            in_transaction: false,
        }
    }

    fn query(sql: &str) -> Query {
        Query {
            sql: sql.to_string(),
            protocol: Protocol::Simple,
            statement_name: String::new(),
            statements: Vec::new(),
        }
    }

    struct Echo(RefCell<Vec<(String, String)>>);

    impl Database for Echo {
        fn query(
            &self,
            user: &str,
            database: &str,
            _sql: &str,
            params: &[Option<String>],
        ) -> Result<Vec<Row>, String> {
            self.0
                .borrow_mut()
                .push((user.to_string(), database.to_string()));
            Ok(vec![vec![params.first().cloned().flatten()]])
        }
    }

    #[test]
    fn init_modes() {
        let mode = |m: &str| vec![("mode".to_string(), m.to_string())];
        assert_eq!(Testing::init(Vec::new()), Ok(()));
        assert_eq!(Testing::init(mode("allow")), Ok(()));
        assert_eq!(
            Testing::init(mode("init_error")),
            Err("testing: init refused".to_string())
        );
        assert!(Testing::init(mode("sometimes")).is_err());
        let trapped = std::panic::catch_unwind(|| Testing::init(mode("trap_in_init")));
        assert!(trapped.is_err());
    }

    #[test]
    fn policy_triggers() {
        assert_eq!(
            Testing::check(session(""), query("SELECT 1")),
            Verdict::Allow
        );
        assert_eq!(
            Testing::check(session(""), query("SELECT 'pgwarden_test_log'")),
            Verdict::Allow
        );
        let Verdict::Deny(denial) = Testing::check(session(""), query("SELECT pgwarden_test_deny"))
        else {
            panic!("allowed")
        };
        assert_eq!(
            (denial.sqlstate.as_str(), denial.message.as_str()),
            ("42501", "denied by testing plugin")
        );
        let trapped =
            std::panic::catch_unwind(|| Testing::check(session(""), query("pgwarden_test_trap")));
        assert!(trapped.is_err());
    }

    #[test]
    fn sandbox_probes() {
        assert_eq!(
            argument("SELECT 'pgwarden_test_fs:/a/b' x", "pgwarden_test_fs:"),
            Some("/a/b")
        );
        assert_eq!(
            argument(
                "SELECT 1; -- pgwarden_test_net:127.0.0.1:1",
                "pgwarden_test_net:"
            ),
            Some("127.0.0.1:1")
        );
        assert_eq!(probe("SELECT 1"), None);
        // Natively nothing is sandboxed: the probes work.
        let file = std::env::temp_dir().join("pgwarden_testing_probe");
        std::fs::write(&file, b"four").unwrap();
        assert_eq!(
            probe(&format!("SELECT 'pgwarden_test_fs:{}'", file.display())),
            Some("testing: fs: read 4 bytes".to_string())
        );
        let clock = probe("SELECT 'pgwarden_test_clock'").unwrap();
        assert_ne!(clock, "testing: clock: 0");
        let Verdict::Deny(denial) =
            Testing::check(session(""), query("SELECT 'pgwarden_test_net:127.0.0.1:1'"))
        else {
            panic!("allowed")
        };
        assert!(
            denial.message.starts_with("testing: net: error: "),
            "{}",
            denial.message
        );
    }

    #[test]
    fn router_triggers() {
        let route = |app: &str| Testing::route(session(app));
        assert_eq!(route("psql").map(|d| d.database), Ok(None));
        assert_eq!(
            route("pgwarden_test_route_to=replica").map(|d| d.database),
            Ok(Some("replica".to_string()))
        );
        let denial = route("pgwarden_test_deny").unwrap_err();
        assert_eq!(
            (denial.sqlstate.as_str(), denial.message.as_str()),
            ("28000", "routing refused by testing plugin")
        );
        assert!(std::panic::catch_unwind(|| route("pgwarden_test_trap")).is_err());
    }

    #[test]
    fn auth_triggers() {
        let db = Echo(RefCell::new(Vec::new()));
        let none = Settings::default();
        assert_eq!(lookup_with(&db, &none, "alice", "d"), Ok(None));
        assert_eq!(
            lookup_with(&db, &none, "pgwarden_test_secret_s3cret", "d"),
            Ok(Some("s3cret".to_string()))
        );
        assert!(lookup_with(&db, &none, "pgwarden_test_error", "d").is_err());
        let trapped = std::panic::catch_unwind(AssertUnwindSafe(|| {
            lookup_with(&db, &none, "pgwarden_test_trap", "d")
        }));
        assert!(trapped.is_err());
        assert!(db.0.borrow().is_empty());
    }

    #[test]
    fn auth_query_uses_the_configured_user_and_database() {
        let db = Echo(RefCell::new(Vec::new()));
        let client_db = Settings {
            auth_user: Some("auth".to_string()),
            auth_dbname: None,
        };
        assert_eq!(
            lookup_with(&db, &client_db, "pgwarden_test_query", "client_db"),
            Ok(Some("hello".to_string()))
        );
        let postgres = Settings {
            auth_user: Some("auth".to_string()),
            auth_dbname: Some("postgres".to_string()),
        };
        assert_eq!(
            lookup_with(&db, &postgres, "pgwarden_test_query", "client_db"),
            Ok(Some("hello".to_string()))
        );
        assert_eq!(
            db.0.borrow().as_slice(),
            &[
                ("auth".to_string(), "client_db".to_string()),
                ("auth".to_string(), "postgres".to_string()),
            ]
        );
        let err = lookup_with(&db, &Settings::default(), "pgwarden_test_query", "d").unwrap_err();
        assert!(err.contains("auth_user"), "{err}");
    }
}
