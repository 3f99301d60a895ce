//! auth-query's configuration: the global `auth_user` / `auth_query` / `auth_dbname` and their
//! per-database overrides `database.<name>.<key>`.

use pgwarden_plugin_sdk::Config;

/// PgBouncer's default `auth_query`: the role's secret unless it has expired, for roles that may
/// log in.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";

const KEYS: &[&str] = &[
    "auth_user",
    "auth_query",
    "auth_dbname",
    "database.*.auth_user",
    "database.*.auth_query",
    "database.*.auth_dbname",
];

/// What a lookup for one database uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// Who runs the query (needs a secret in pgwarden's `auth_file`).
    pub auth_user: &'a str,
    /// The query; `$1` is the user name being looked up.
    pub auth_query: &'a str,
    /// Where it runs; `None` means the database the client asked for.
    pub auth_dbname: Option<&'a str>,
}

/// Settings that can be given globally or per database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Overrides {
    auth_user: Option<String>,
    auth_query: Option<String>,
    auth_dbname: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The global `auth_user`; a database may have its own instead (PgBouncer allows either alone).
    auth_user: Option<String>,
    auth_query: String,
    auth_dbname: Option<String>,
    /// Per database name, in the order first written.
    databases: Vec<(String, Overrides)>,
}

impl Settings {
    /// Reads and checks the configuration; an error names the key at fault.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        config.reject_unknown(KEYS)?;
        let auth_user = non_blank(config, "auth_user")?;
        let auth_query = match config.get("auth_query") {
            Some(query) => checked_query("auth_query", query)?,
            None => DEFAULT_AUTH_QUERY.to_string(),
        };
        let auth_dbname = non_blank(config, "auth_dbname")?;
        let mut databases: Vec<(String, Overrides)> = Vec::new();
        for (rest, value) in config.with_prefix("database.") {
            let key = format!("database.{rest}");
            let (name, field) = rest
                .rsplit_once('.')
                .filter(|(name, _)| !name.is_empty())
                .ok_or_else(|| {
                    format!(
                        "`{key}`: expected database.<name>.auth_user, .auth_query or .auth_dbname"
                    )
                })?;
            let index = match databases.iter().position(|(n, _)| n == name) {
                Some(index) => index,
                None => {
                    databases.push((name.to_string(), Overrides::default()));
                    databases.len() - 1
                }
            };
            let overrides = &mut databases[index].1;
            let blank = || format!("configuration key `{key}` must not be empty");
            match field {
                "auth_user" if value.trim().is_empty() => return Err(blank()),
                "auth_user" => overrides.auth_user = Some(value.to_string()),
                "auth_query" => overrides.auth_query = Some(checked_query(&key, value)?),
                "auth_dbname" if value.trim().is_empty() => return Err(blank()),
                "auth_dbname" => overrides.auth_dbname = Some(value.to_string()),
                _ => return Err(format!("unknown configuration key `{key}`")),
            }
        }
        if auth_user.is_none() && databases.iter().all(|(_, o)| o.auth_user.is_none()) {
            return Err(
                "missing required configuration key `auth_user` (global, or `database.<name>.auth_user`)"
                    .to_string(),
            );
        }
        Ok(Self {
            auth_user,
            auth_query,
            auth_dbname,
            databases,
        })
    }

    /// The settings for a client of `database`: its overrides, falling back to the global ones
    /// key by key (as PgBouncer falls back from `[databases]` to `[pgbouncer]`); `None` when no
    /// `auth_user` applies to it (only other databases have one): its users are not looked up.
    pub fn for_database(&self, database: &str) -> Option<Resolved<'_>> {
        let overrides = self
            .databases
            .iter()
            .find(|(name, _)| name == database)
            .map(|(_, o)| o);
        let pick =
            |get: fn(&Overrides) -> &Option<String>| overrides.and_then(|o| get(o).as_deref());
        Some(Resolved {
            auth_user: pick(|o| &o.auth_user).or(self.auth_user.as_deref())?,
            auth_query: pick(|o| &o.auth_query).unwrap_or(&self.auth_query),
            auth_dbname: pick(|o| &o.auth_dbname).or(self.auth_dbname.as_deref()),
        })
    }
}

/// An `auth_query` value: not blank, and using `$1` (the user name is always passed as `$1`; a
/// query without it would fail on every login with a parameter-count error from the server).
fn checked_query(key: &str, query: &str) -> Result<String, String> {
    if query.trim().is_empty() {
        return Err(format!("configuration key `{key}` must not be empty"));
    }
    if !query.contains("$1") {
        return Err(format!(
            "configuration key `{key}` must refer to the user name as $1"
        ));
    }
    Ok(query.to_string())
}

fn non_blank(config: &Config, key: &str) -> Result<Option<String>, String> {
    match config.get(key) {
        Some(value) if value.trim().is_empty() => {
            Err(format!("configuration key `{key}` must not be empty"))
        }
        value => Ok(value.map(str::to_string)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::from_config(&Config::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    #[test]
    fn defaults() {
        let s = settings(&[("auth_user", "pgwarden_auth")]).unwrap();
        assert_eq!(
            s.for_database("app"),
            Some(Resolved {
                auth_user: "pgwarden_auth",
                auth_query: DEFAULT_AUTH_QUERY,
                auth_dbname: None,
            })
        );
    }

    #[test]
    fn global_settings() {
        let s = settings(&[
            ("auth_user", "a"),
            (
                "auth_query",
                "SELECT usename, passwd FROM pg_shadow WHERE usename = $1",
            ),
            ("auth_dbname", "authdb"),
        ])
        .unwrap();
        let r = s.for_database("app").unwrap();
        assert_eq!(r.auth_user, "a");
        assert!(r.auth_query.contains("pg_shadow"));
        assert_eq!(r.auth_dbname, Some("authdb"));
    }

    #[test]
    fn per_database_overrides_fall_back_key_by_key() {
        let s = settings(&[
            ("auth_user", "global_user"),
            ("auth_dbname", "global_db"),
            ("database.reports.auth_user", "reports_auth"),
            ("database.my.dotted.db.auth_dbname", "dotted_auth"),
            (
                "database.my.dotted.db.auth_query",
                "SELECT u, p FROM users WHERE u = $1",
            ),
        ])
        .unwrap();
        assert_eq!(
            s.for_database("reports"),
            Some(Resolved {
                auth_user: "reports_auth",
                auth_query: DEFAULT_AUTH_QUERY,
                auth_dbname: Some("global_db"),
            })
        );
        assert_eq!(
            s.for_database("my.dotted.db"),
            Some(Resolved {
                auth_user: "global_user",
                auth_query: "SELECT u, p FROM users WHERE u = $1",
                auth_dbname: Some("dotted_auth"),
            })
        );
        assert_eq!(s.for_database("other").unwrap().auth_user, "global_user");
        assert_eq!(s.for_database("Reports").unwrap().auth_user, "global_user");
    }

    #[test]
    fn auth_user_on_some_databases_only() {
        // PgBouncer's own test configuration does this: auth_user on three databases, none global.
        let s = settings(&[("database.authdb.auth_user", "pswcheck")]).unwrap();
        assert_eq!(s.for_database("authdb").unwrap().auth_user, "pswcheck");
        assert_eq!(
            s.for_database("other"),
            None,
            "no lookup for other databases"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "missing required configuration key `auth_user`"),
            (
                &[("database.x.auth_query", "SELECT 1, 2 WHERE $1 = ''")],
                "missing required configuration key `auth_user`",
            ),
            (&[("auth_user", " ")], "`auth_user` must not be empty"),
            (
                &[("auth_user", "a"), ("auth_usr", "b")],
                "unknown configuration key `auth_usr`",
            ),
            (
                &[("auth_user", "a"), ("auth_query", "")],
                "`auth_query` must not be empty",
            ),
            (
                &[("auth_user", "a"), ("auth_query", "SELECT 1, 2")],
                "as $1",
            ),
            (
                &[("auth_user", "a"), ("auth_dbname", "")],
                "`auth_dbname` must not be empty",
            ),
            (
                &[("auth_user", "a"), ("database.x.auth_user", "")],
                "`database.x.auth_user` must not be empty",
            ),
            (
                &[("auth_user", "a"), ("database.x.auth_dbname", " ")],
                "`database.x.auth_dbname` must not be empty",
            ),
            (
                &[("auth_user", "a"), ("database.x.auth_query", "SELECT")],
                "`database.x.auth_query` must refer",
            ),
            (
                &[("auth_user", "a"), ("database..auth_user", "u")],
                "`database..auth_user`: expected",
            ),
            (
                &[("auth_user", "a"), ("database.x.pool_mode", "u")],
                "unknown configuration key `database.x.pool_mode`",
            ),
        ];
        for (pairs, expected) in cases {
            let err = settings(pairs).unwrap_err();
            assert!(err.contains(expected), "{pairs:?}: {err}");
        }
    }
}
