//! pgwarden's `auth-query` plugin: finds the secret of a user pgwarden's `auth_file` does not list
//! by running a query on PostgreSQL, as PgBouncer's `auth_user` / `auth_query` / `auth_dbname` do.
//!
//! When a client logs in as an unknown user, the plugin runs `auth_query` with the user name as
//! `$1`, logged in as `auth_user` (which must itself be in `auth_file`), on `auth_dbname` or else the
//! database the client asked for, through pgwarden's own pools (the `database` import). The query
//! must return two columns, the name and the secret (a plain password, an `md5…` hash or a
//! `SCRAM-SHA-256$…` verifier):
//!
//! - no row: no such user; the client fails authentication like any unknown user;
//! - one row with a NULL (or empty) secret: the user exists but has no usable secret: the answer is an
//!   empty secret, which no password matches (only `auth_type = trust` lets such a user in, as in
//!   PgBouncer);
//! - one row with a secret: that secret is used (pgwarden may cache it, see `cache_ttl`);
//! - anything else refuses the login and is logged: the query failed, returned other than 2
//!   columns (`expected 2 columns from auth_query, not N`, PgBouncer's words), a NULL name, or
//!   more than one row (the plugin will not guess which secret applies).
//!
//! Configuration keys (any other key refuses the load):
//!
//! - `auth_user` (required): the role that runs the query;
//! - `auth_query`: the query, which must use `$1`; default PgBouncer's
//!   `SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid
//!   WHERE rolname=$1 AND rolcanlogin` (reading `pg_authid` needs a superuser; the usual
//!   alternative is a `SECURITY DEFINER` function, e.g. `SELECT * FROM pgbouncer.get_auth($1)`);
//! - `auth_dbname`: the database to run it on; default the client's;
//! - `database.<name>.auth_user`, `database.<name>.auth_query`, `database.<name>.auth_dbname`:
//!   the same for clients of database `<name>` only (as PgBouncer allows in `[databases]`); keys
//!   not given for a database fall back to the global ones.
//!
//! Example:
//!
//! ```toml
//! auth_user = "pgwarden_auth"
//! auth_query = "SELECT uname, phash FROM pgbouncer.user_lookup($1)"
//! auth_dbname = "postgres"
//! "database.reports.auth_user" = "reports_auth"
//! ```

mod lookup;
mod settings;

use pgwarden_plugin_sdk::database::HostDatabase;
use pgwarden_plugin_sdk::{Config, State, log};

use crate::settings::Settings;

/// What `init` read.
static SETTINGS: State<Settings> = State::new();

/// The plugin.
struct AuthQuery;

impl pgwarden_plugin_sdk::init::Guest for AuthQuery {
    fn init(config: pgwarden_plugin_sdk::types::Config) -> Result<(), String> {
        SETTINGS.clear();
        let settings = Settings::from_config(&Config::new(config))?;
        SETTINGS.set(settings);
        Ok(())
    }
}

impl pgwarden_plugin_sdk::auth::Guest for AuthQuery {
    fn lookup(user: String, database: String) -> Result<Option<String>, String> {
        let settings = SETTINGS
            .get()
            .ok_or_else(|| "auth-query plugin used before it was initialised".to_string())?;
        let result = lookup::lookup(&HostDatabase, &settings, &user, &database);
        if let Ok(None) = result {
            log!(
                Debug,
                "auth-query: no secret for user {user:?} (database {database:?})"
            );
        }
        result
    }
}

pgwarden_plugin_sdk::auth::export!(AuthQuery);

#[cfg(test)]
mod tests {
    use super::*;
    use pgwarden_plugin_sdk::auth::Guest as _;
    use pgwarden_plugin_sdk::init::Guest as _;

    #[test]
    fn hooks_through_the_guest_traits() {
        assert!(AuthQuery::lookup("u".into(), "d".into()).is_err());
        let err = AuthQuery::init(Vec::new()).unwrap_err();
        assert!(err.contains("auth_user"), "{err}");
        AuthQuery::init(vec![("auth_user".into(), "a".into())]).unwrap();
        // Natively there is no pgwarden to run the query: the import's error comes back.
        let err = AuthQuery::lookup("u".into(), "d".into()).unwrap_err();
        assert!(err.contains("only inside pgwarden"), "{err}");
    }
}
