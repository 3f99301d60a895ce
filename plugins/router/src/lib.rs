//! pgwarden's `router` plugin: sends each connecting client to a database alias, pool mode or
//! server user chosen by rules, or refuses it.
//!
//! Each rule is a configuration key `rule.N = <conditions> -> <actions>`. Rules are tried in
//! increasing `N` (numeric order: `rule.2` before `rule.10`) and the first whose conditions all hold
//! decides; a client no rule matches goes where the configuration sends it anyway.
//!
//! Conditions (all must hold; none, or `*`, matches every client):
//!
//! - `user=<pattern>`: the user name the client logged in with;
//! - `database=<pattern>`: the database name the client asked for;
//! - `application_name=<pattern>`: from the startup packet (`""` matches a client that sent none);
//! - `client=<network>`: `10.0.0.0/8`, `2001:db8::/32`, one address (`127.0.0.1`), or `unix` for a
//!   Unix-socket client. IPv4 clients arriving as IPv4-mapped IPv6 addresses match IPv4 networks.
//!
//! Patterns match the whole name, case-sensitively; `*` stands for any run of characters and `?`
//! for one. Any condition may list alternatives separated by commas (`user=alice,bob,*_admin`).
//!
//! Actions:
//!
//! - `database=<alias>`: use this `[databases]` alias instead of the one the client asked for;
//! - `pool_mode=<session|transaction|statement>`;
//! - `server_user=<name>`: log in to PostgreSQL as this user (pgwarden must hold its secret);
//! - `deny`: refuse the connection, with SQLSTATE 28000 (invalid_authorization_specification) and
//!   the message `connection refused by pgwarden router (rule.N)` unless `message="..."`,
//!   `sqlstate=<code>`, `detail="..."` or `hint="..."` follow it. `deny` excludes the other actions.
//!
//! Values containing spaces, commas or `->` are written in double quotes, where `\"` and `\\` stand
//! for a quote and a backslash. Every rule is checked when the plugin loads: a rule that does not
//! parse, or a key other than `rule.N`, refuses the load with a message naming it.
//!
//! Example:
//!
//! ```toml
//! rule.1 = 'user=analytics_ro -> database=tracksolid_db_ro pool_mode=session'
//! rule.2 = 'user=etl_* client=10.20.0.0/16 -> server_user=etl pool_mode=session'
//! rule.3 = 'application_name="Legacy Reports*" -> database=reports_replica'
//! rule.4 = 'user=guest,test client=unix -> deny message="no local logins for shared accounts"'
//! ```

mod cidr;
mod rules;
mod tokens;

use pgwarden_plugin_sdk::router::Destination;
use pgwarden_plugin_sdk::types::{Denial, SessionInfo};
use pgwarden_plugin_sdk::{Config, State, deny, log, sqlstate};

use crate::rules::{Outcome, Rule, parse_rules};

/// The rules `init` parsed.
static RULES: State<Vec<Rule>> = State::new();

/// The plugin.
struct Router;

impl pgwarden_plugin_sdk::init::Guest for Router {
    fn init(config: pgwarden_plugin_sdk::types::Config) -> Result<(), String> {
        RULES.clear();
        let rules = parse_rules(&Config::new(config))?;
        log!(Info, "router: {} rule(s) loaded", rules.len());
        RULES.set(rules);
        Ok(())
    }
}

impl pgwarden_plugin_sdk::router::Guest for Router {
    fn route(session: SessionInfo) -> Result<Destination, Denial> {
        let Some(rules) = RULES.get() else {
            return Err(deny(
                sqlstate::INTERNAL_ERROR,
                "pgwarden router plugin used before it was initialised",
            ));
        };
        let (rule, result) = decide(&rules, &session);
        if let Some(rule) = rule {
            log!(
                Debug,
                "router: {} matched user={:?} database={:?} application_name={:?} client={}",
                rule.name,
                session.user,
                session.database,
                session.application_name,
                session.client_address
            );
        }
        result
    }
}

pgwarden_plugin_sdk::router::export!(Router);

/// The first rule matching `session` and what it says; no rule and no change when none matches.
fn decide<'a>(
    rules: &'a [Rule],
    session: &SessionInfo,
) -> (Option<&'a Rule>, Result<Destination, Denial>) {
    match rules.iter().find(|rule| rule.matches(session)) {
        Some(rule) => {
            let result = match &rule.outcome {
                Outcome::Route(destination) => Ok(destination.clone()),
                Outcome::Deny(denial) => Err(denial.clone()),
            };
            (Some(rule), result)
        }
        None => (
            None,
            Ok(Destination {
                database: None,
                pool_mode: None,
                server_user: None,
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwarden_plugin_sdk::init::Guest as _;
    use pgwarden_plugin_sdk::router::Guest as _;
    use pgwarden_plugin_sdk::types::PoolMode;

    fn session(user: &str, client_ip: &str) -> SessionInfo {
        rules::tests::session(user, "tracksolid_db", "psql", client_ip)
    }

    fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn first_match_wins_and_no_match_changes_nothing() {
        let rules = parse_rules(&Config::new(config(&[
            ("rule.2", "user=analytics_* -> database=second"),
            (
                "rule.1",
                "user=analytics_ro -> database=tracksolid_db_ro pool_mode=session",
            ),
            ("rule.3", "client=unix -> deny"),
        ])))
        .unwrap();

        let (rule, result) = decide(&rules, &session("analytics_ro", "10.0.0.1"));
        assert_eq!(rule.map(|r| r.name.as_str()), Some("rule.1"));
        assert_eq!(
            result,
            Ok(Destination {
                database: Some("tracksolid_db_ro".to_string()),
                pool_mode: Some(PoolMode::Session),
                server_user: None,
            })
        );

        let (rule, result) = decide(&rules, &session("analytics_rw", "10.0.0.1"));
        assert_eq!(rule.map(|r| r.name.as_str()), Some("rule.2"));
        assert_eq!(result.map(|d| d.database), Ok(Some("second".to_string())));

        let (rule, result) = decide(&rules, &session("app", ""));
        assert_eq!(rule.map(|r| r.name.as_str()), Some("rule.3"));
        assert_eq!(result.map_err(|d| d.sqlstate), Err("28000".to_string()));

        let (rule, result) = decide(&rules, &session("app", "10.0.0.1"));
        assert!(rule.is_none());
        assert_eq!(
            result,
            Ok(Destination {
                database: None,
                pool_mode: None,
                server_user: None,
            })
        );
    }

    #[test]
    fn hooks_through_the_guest_traits() {
        let bad = Router::init(config(&[("rule.1", "user=a -> frobnicate")])).unwrap_err();
        assert!(bad.starts_with("rule.1: unknown action"), "{bad}");
        assert!(
            Router::route(session("a", "")).is_err(),
            "no rules after a failed init"
        );

        Router::init(config(&[("rule.1", "user=a -> server_user=b")])).unwrap();
        assert_eq!(
            Router::route(session("a", "")).map(|d| d.server_user),
            Ok(Some("b".to_string()))
        );
        assert_eq!(
            Router::route(session("z", "")).map(|d| d.server_user),
            Ok(None)
        );
    }
}
