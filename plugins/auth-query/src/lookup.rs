//! Running `auth_query` for one user and reading its answer the way PgBouncer does.

use pgwarden_plugin_sdk::database::Database;

use crate::settings::Settings;

/// The secret of `user` for a client of `database`: `None` when the query finds no such user or
/// the user has no usable secret (NULL, e.g. an expired `rolvaliduntil` with the default query, or
/// empty); an error when the query fails or answers in a shape that cannot be trusted.
pub fn lookup(
    db: &impl Database,
    settings: &Settings,
    user: &str,
    database: &str,
) -> Result<Option<String>, String> {
    let Some(resolved) = settings.for_database(database) else {
        // No auth_user applies to this database: like PgBouncer, only auth_file users log in here.
        return Ok(None);
    };
    let target = resolved.auth_dbname.unwrap_or(database);
    let rows = db
        .query(
            resolved.auth_user,
            target,
            resolved.auth_query,
            &[Some(user.to_string())],
        )
        .map_err(|why| {
            format!(
                "auth_query as {:?} on database {target:?} failed: {why}",
                resolved.auth_user
            )
        })?;
    let row = match rows.as_slice() {
        [] => return Ok(None),
        [row] => row,
        _ => {
            // Several secrets for one name: picking one would be a guess about who may log in.
            return Err(format!(
                "auth_query returned {} rows for user {user:?}, expected at most one",
                rows.len()
            ));
        }
    };
    match row.as_slice() {
        // The lookup function PgBouncer's documentation suggests (runbook 003's) returns one row of NULLs
        // for a user that does not exist: that is "no such user" (a wrong-password refusal that does not
        // tell who exists), where PgBouncer drops the server connection.
        [None, None] => Ok(None),
        [None, Some(_)] => Err("auth_query response contained null user name".to_string()),
        [Some(_), Some(secret)] => Ok(Some(secret.clone())),
        // The user exists without a usable secret: an empty one, which no password matches (trust only).
        [Some(_), None] => Ok(Some(String::new())),
        other => Err(format!(
            "expected 2 columns from auth_query, not {}",
            other.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::DEFAULT_AUTH_QUERY;
    use pgwarden_plugin_sdk::Config;
    use pgwarden_plugin_sdk::database::Row;
    use std::cell::RefCell;

    /// One query the fake was asked: user, database, SQL, parameters.
    type Call = (String, String, String, Vec<Option<String>>);

    /// Answers every query with `answer` and records what it was asked.
    struct FakeDb {
        answer: Result<Vec<Row>, String>,
        calls: RefCell<Vec<Call>>,
    }

    impl FakeDb {
        fn new(answer: Result<Vec<Row>, String>) -> Self {
            Self {
                answer,
                calls: RefCell::new(Vec::new()),
            }
        }

        fn rows(rows: &[&[Option<&str>]]) -> Self {
            Self::new(Ok(rows
                .iter()
                .map(|row| row.iter().map(|v| v.map(str::to_string)).collect())
                .collect()))
        }
    }

    impl Database for FakeDb {
        fn query(
            &self,
            user: &str,
            database: &str,
            sql: &str,
            params: &[Option<String>],
        ) -> Result<Vec<Row>, String> {
            self.calls.borrow_mut().push((
                user.to_string(),
                database.to_string(),
                sql.to_string(),
                params.to_vec(),
            ));
            self.answer.clone()
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_config(&Config::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
        .unwrap()
    }

    fn basic() -> Settings {
        settings(&[("auth_user", "pgwarden_auth")])
    }

    #[test]
    fn found_user_returns_secret_and_query_is_pgbouncers() {
        let db = FakeDb::rows(&[&[Some("alice"), Some("SCRAM-SHA-256$4096:abc")]]);
        assert_eq!(
            lookup(&db, &basic(), "alice", "app"),
            Ok(Some("SCRAM-SHA-256$4096:abc".to_string()))
        );
        assert_eq!(
            db.calls.borrow().as_slice(),
            &[(
                "pgwarden_auth".to_string(),
                "app".to_string(),
                DEFAULT_AUTH_QUERY.to_string(),
                vec![Some("alice".to_string())],
            )]
        );
    }

    #[test]
    fn unknown_user_is_none_and_null_or_empty_secret_is_empty() {
        assert_eq!(lookup(&FakeDb::rows(&[]), &basic(), "bob", "app"), Ok(None));
        let null = FakeDb::rows(&[&[Some("bob"), None]]);
        assert_eq!(
            lookup(&null, &basic(), "bob", "app"),
            Ok(Some(String::new()))
        );
        let empty = FakeDb::rows(&[&[Some("bob"), Some("")]]);
        assert_eq!(
            lookup(&empty, &basic(), "bob", "app"),
            Ok(Some(String::new()))
        );
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let one = FakeDb::rows(&[&[Some("md5abc")]]);
        assert_eq!(
            lookup(&one, &basic(), "u", "app"),
            Err("expected 2 columns from auth_query, not 1".to_string())
        );
        let three = FakeDb::rows(&[&[Some("u"), Some("md5abc"), Some("x")]]);
        assert_eq!(
            lookup(&three, &basic(), "u", "app"),
            Err("expected 2 columns from auth_query, not 3".to_string())
        );
        let null_name = FakeDb::rows(&[&[None, Some("md5abc")]]);
        assert_eq!(
            lookup(&null_name, &basic(), "u", "app"),
            Err("auth_query response contained null user name".to_string())
        );
        let nulls = FakeDb::rows(&[&[None, None]]);
        assert_eq!(
            lookup(&nulls, &basic(), "u", "app"),
            Ok(None),
            "no such user"
        );
        let two_rows = FakeDb::rows(&[&[Some("u"), Some("a")], &[Some("u"), Some("b")]]);
        let err = lookup(&two_rows, &basic(), "u", "app").unwrap_err();
        assert!(err.contains("returned 2 rows"), "{err}");
    }

    #[test]
    fn query_errors_are_reported_with_context() {
        let db = FakeDb::new(Err("permission denied for table pg_authid".to_string()));
        let err = lookup(&db, &basic(), "u", "app").unwrap_err();
        assert_eq!(
            err,
            "auth_query as \"pgwarden_auth\" on database \"app\" failed: permission denied for table pg_authid"
        );
    }

    #[test]
    fn auth_dbname_and_overrides_choose_where_and_as_whom() {
        let s = settings(&[
            ("auth_user", "global"),
            ("auth_dbname", "postgres"),
            ("database.reports.auth_user", "reports_auth"),
            ("database.reports.auth_dbname", "reports"),
            (
                "database.reports.auth_query",
                "SELECT name, secret FROM app_users WHERE name = $1",
            ),
        ]);
        let db = FakeDb::rows(&[]);
        lookup(&db, &s, "u", "app").unwrap();
        lookup(&db, &s, "u", "reports").unwrap();
        let calls = db.calls.borrow();
        assert_eq!(
            (calls[0].0.as_str(), calls[0].1.as_str()),
            ("global", "postgres")
        );
        assert_eq!(calls[0].2, DEFAULT_AUTH_QUERY);
        assert_eq!(
            (calls[1].0.as_str(), calls[1].1.as_str()),
            ("reports_auth", "reports")
        );
        assert!(calls[1].2.contains("app_users"));
    }
}
