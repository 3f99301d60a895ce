//! pgwarden's `readonly` policy plugin: refuses every query that could write, so a pool (or a
//! user routed to it) is read-only whatever the server-side role allows.
//!
//! pgwarden's lexer summarises each statement of a query and marks it read-only or not,
//! conservatively: anything it is unsure of counts as a write. This plugin denies a query as soon
//! as one of its statements is not read-only, with SQLSTATE 25006 (read_only_sql_transaction, what
//! PostgreSQL itself answers to a write in a read-only transaction) and the message
//! `cannot execute <COMMAND> in a read-only session (pgwarden readonly policy)`. For a `WITH` query
//! the data-changing command inside it is named (`DELETE`, not `WITH`). Nothing reaches the server,
//! so inside a transaction block the transaction fails as PostgreSQL's own refusal would make it.
//!
//! Configuration keys (any other key refuses the load):
//!
//! - `allow_functions`: comma-separated functions this deployment accepts in read-only sessions,
//!   typically `nextval` for applications that draw ids before writing elsewhere. A `pg_catalog.`
//!   prefix is optional (`nextval` also covers `pg_catalog.nextval`); other schemas must be named
//!   (`app.next_id`). A statement pgwarden flags is let through only when all of these hold: it
//!   is a plain query (SELECT, VALUES, ...: not a data, schema or session change); it calls at
//!   least one allowed function; every function it calls is allowed or on the plugin's built-in
//!   list of functions that cannot write (aggregates, string, number, date, JSON and array
//!   functions: list any other function you call alongside an allowed one); and it has no word that
//!   makes a query write or lock (`INTO`, `FOR UPDATE`, `FOR SHARE`, a data-changing `WITH`, ...).
//!   The plugin cannot see pgwarden's exact reason for flagging a statement, so these checks only
//!   ever keep a statement denied: a doubt is a refusal, never a write.
//! - `message`: replaces the refusal text; `{command}` in it becomes the statement's command.
//!
//! Example:
//!
//! ```toml
//! allow_functions = "nextval, currval"
//! message = "this pool is read-only: {command} refused"
//! ```

mod known;
mod verdict;

use pgwarden_plugin_sdk::query_policy::{Query, Session, Verdict};
use pgwarden_plugin_sdk::{Config, State, deny, log, sqlstate};

use crate::verdict::{Settings, verdict};

static SETTINGS: State<Settings> = State::new();

struct ReadOnly;

impl pgwarden_plugin_sdk::init::Guest for ReadOnly {
    fn init(config: pgwarden_plugin_sdk::types::Config) -> Result<(), String> {
        SETTINGS.clear();
        let settings = Settings::from_config(&Config::new(config))?;
        SETTINGS.set(settings);
        Ok(())
    }
}

impl pgwarden_plugin_sdk::query_policy::Guest for ReadOnly {
    fn check(session: &Session, query: &Query) -> Verdict {
        let Some(settings) = SETTINGS.get() else {
            return Verdict::Deny(deny(
                sqlstate::INTERNAL_ERROR,
                "pgwarden readonly plugin used before it was initialised",
            ));
        };
        // Nearly every query of a read-only client: one question, no statement copied in.
        if query.read_only() {
            return Verdict::Allow;
        }
        let result = verdict(&settings, &query.statements());
        if let Verdict::Deny(denial) = &result {
            log!(
                Debug,
                "readonly: refused for user={:?} database={:?}: {}",
                session.user(),
                session.database(),
                denial.message
            );
        }
        result
    }
}

pgwarden_plugin_sdk::query_policy::export!(ReadOnly);

#[cfg(test)]
mod tests {
    use super::*;
    use pgwarden_plugin_sdk::init::Guest as _;

    #[test]
    fn init_checks_the_configuration() {
        let config = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let err = ReadOnly::init(config("mesage", "x")).unwrap_err();
        assert!(err.contains("unknown configuration key `mesage`"), "{err}");
        assert!(
            SETTINGS.get().is_none(),
            "a refused configuration leaves no settings"
        );
        ReadOnly::init(config("message", "no {command}")).unwrap();
        assert!(SETTINGS.get().is_some());
    }
}
