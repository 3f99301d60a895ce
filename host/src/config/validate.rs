//! The one validation path both front-ends feed: raw values → typed [`Config`], then the
//! cross-checks that need the whole picture. Every problem is collected, none stops the run.

use std::collections::BTreeMap;
use std::path::Path;

use super::diag::{Diags, Loc};
use super::entries::{Database, UserSettings};
use super::raw::{RawConfig, RawEntry, RawItem, resolve_relative};
use super::settings::{Settings, is_not_implemented};
use super::types::{AuthType, TlsMode};
use super::values::{Parsed, RawValue};
use super::{Config, RESERVED_DATABASE_NAMES, userlist};

/// Where each setting was (last) written, for pointing cross-check errors at a line.
type SetAt = BTreeMap<String, Loc>;

/// Turns the raw form into a [`Config`], reporting into `diags`. The result is only meaningful
/// when `diags` holds no errors.
pub(crate) fn build(path: &Path, raw: &RawConfig, diags: &mut Diags) -> Config {
    let main = Loc::new(path, None);
    let (settings, set_at) = apply_settings(&raw.settings, diags);
    let (databases, fallback) = build_databases(&raw.databases, diags);
    let users = build_users(&raw.users, diags);
    let auth_file = settings.auth_file.as_ref().and_then(|file| {
        let at = set_at.get("auth_file").unwrap_or(&main);
        userlist::load(&resolve_relative(&at.file, file), at, diags)
    });
    let plugins = super::plugins::build(&raw.plugins, &settings, &databases, &main, diags);
    let plugin_cache_dir = super::plugins::runtime_dir(&raw.plugin_runtime, diags);
    let config = Config {
        path: path.to_path_buf(),
        settings,
        databases,
        fallback,
        users,
        auth_file,
        plugins,
        plugin_cache_dir,
    };
    let checks = Checks {
        config: &config,
        raw,
        set_at: &set_at,
        main: &main,
    };
    checks.run(diags);
    config
}

/// What `SET key = value` on the console makes of a running configuration.
#[derive(Debug)]
pub enum SetOutcome {
    /// The new configuration, with the warnings it loads with.
    Changed {
        config: Box<Config>,
        warnings: Vec<super::Diagnostic>,
    },
    /// A setting read only at start: nothing changes (PgBouncer ignores such a SET too).
    Fixed,
}

/// Why a console `SET` changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    #[error("unknown parameter: {0}")]
    Unknown(String),
    #[error("invalid value {value:?} for {key}: {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
    #[error("{0}")]
    Rejected(super::ConfigError),
}

/// `config` with one `[pgbouncer]` setting changed as the console's `SET` does: the same parser as the file,
/// the same cross-checks, `auth_file` read again when it is the setting changed.
pub(crate) fn with_setting(
    config: &Config,
    key: &str,
    value: &str,
) -> Result<SetOutcome, SetError> {
    let key = key.to_ascii_lowercase();
    let info = super::settings::find(&key).ok_or_else(|| SetError::Unknown(key.clone()))?;
    if !info.reloadable {
        return Ok(SetOutcome::Fixed);
    }
    let mut new = config.clone();
    let raw = RawValue::Str(value.to_owned());
    if let Some(Err(expected)) = new.settings.set(&key, &raw) {
        return Err(SetError::Invalid {
            key,
            value: value.to_owned(),
            expected,
        });
    }
    let main = Loc::new(&config.path, None);
    let mut diags = Diags::default();
    if key == "auth_file" {
        new.auth_file = new.settings.auth_file.as_ref().and_then(|file| {
            userlist::load(&resolve_relative(&config.path, file), &main, &mut diags)
        });
    }
    // PgBouncer's auth_user lookup is pgwarden's automatic auth-query plugin: rebuild it.
    if matches!(key.as_str(), "auth_user" | "auth_query" | "auth_dbname") {
        super::plugins::refresh_auth_query(&mut new.plugins, &new.settings, &new.databases, &main);
    }
    let raw = RawConfig::default();
    let set_at = SetAt::new();
    Checks {
        config: &new,
        raw: &raw,
        set_at: &set_at,
        main: &main,
    }
    .run(&mut diags);
    let (errors, warnings) = diags.into_sorted();
    if !errors.is_empty() {
        return Err(SetError::Rejected(super::ConfigError {
            diagnostics: errors,
        }));
    }
    Ok(SetOutcome::Changed {
        config: Box::new(new),
        warnings,
    })
}

fn apply_settings(items: &[RawItem], diags: &mut Diags) -> (Settings, SetAt) {
    let mut settings = Settings::default();
    let mut set_at = SetAt::new();
    for item in items {
        match settings.set(&item.key, &item.value) {
            None => {
                diags.error(&item.loc, Some(&item.key), "unknown setting");
                continue;
            }
            Some(Err(expected)) => {
                let message = format!("invalid value {}: {expected}", item.value.describe());
                diags.error(&item.loc, Some(&item.key), message);
            }
            Some(Ok(())) => {}
        }
        if let Some(previous) = set_at.insert(item.key.clone(), item.loc.clone()) {
            let message = format!(
                "set more than once (previously at {}); the last value wins",
                previous.display()
            );
            diags.warn(&item.loc, Some(&item.key), message);
        }
    }
    for item in items {
        let is_final = set_at.get(&item.key) == Some(&item.loc);
        if is_final && is_not_implemented(&item.key) && !settings.is_default(&item.key) {
            diags.warn(
                &item.loc,
                Some(&item.key),
                "not implemented by pgwarden yet; ignored",
            );
        }
    }
    (settings, set_at)
}

fn build_databases(
    entries: &[RawEntry],
    diags: &mut Diags,
) -> (BTreeMap<String, Database>, Option<Database>) {
    let mut databases = BTreeMap::new();
    let mut fallback = None;
    let mut seen: BTreeMap<&str, &Loc> = BTreeMap::new();
    for entry in entries {
        let name = entry.name.as_str();
        if RESERVED_DATABASE_NAMES.contains(&name) {
            let message = format!("database name \"{name}\" is reserved for the admin console");
            diags.error(&entry.loc, Some(name), message);
            continue;
        }
        if name.is_empty() {
            diags.error(&entry.loc, None, "empty database name");
            continue;
        }
        let mut db = Database::new(name);
        apply_items(entry, "database", diags, |k, v| db.apply(k, v));
        warn_redefined(&mut seen, entry, "database", diags);
        if name == "*" {
            fallback = Some(db);
        } else {
            databases.insert(name.to_owned(), db);
        }
    }
    (databases, fallback)
}

fn build_users(entries: &[RawEntry], diags: &mut Diags) -> BTreeMap<String, UserSettings> {
    let mut users = BTreeMap::new();
    let mut seen: BTreeMap<&str, &Loc> = BTreeMap::new();
    for entry in entries {
        if entry.name.is_empty() {
            diags.error(&entry.loc, None, "empty user name");
            continue;
        }
        let mut user = UserSettings::default();
        apply_items(entry, "user", diags, |k, v| user.apply(k, v));
        warn_redefined(&mut seen, entry, "user", diags);
        users.insert(entry.name.clone(), user);
    }
    users
}

fn warn_redefined<'a>(
    seen: &mut BTreeMap<&'a str, &'a Loc>,
    entry: &'a RawEntry,
    what: &str,
    diags: &mut Diags,
) {
    if let Some(previous) = seen.insert(&entry.name, &entry.loc) {
        let message = format!(
            "{what} defined more than once (previously at {}); the last definition wins",
            previous.display()
        );
        diags.warn(&entry.loc, Some(&entry.name), message);
    }
}

/// Applies an entry's pairs, reporting unknown keys, bad values and repeats. A faulty entry
/// is still kept (with its valid keys) so one mistake does not cascade into "no such
/// database" errors elsewhere; any error fails the load anyway.
fn apply_items(
    entry: &RawEntry,
    what: &str,
    diags: &mut Diags,
    mut apply: impl FnMut(&str, &RawValue) -> Option<Parsed<()>>,
) {
    let mut seen: Vec<&str> = Vec::new();
    for item in &entry.items {
        let name = &entry.name;
        let message = match apply(&item.key, &item.value) {
            Some(Ok(())) => {
                if seen.contains(&item.key.as_str()) {
                    let message =
                        format!("given more than once for {what} \"{name}\"; the last value wins");
                    diags.warn(&item.loc, Some(&item.key), message);
                }
                seen.push(&item.key);
                continue;
            }
            None => format!("unknown parameter for {what} \"{name}\""),
            Some(Err(expected)) => format!(
                "invalid value {} for {what} \"{name}\": {expected}",
                item.value.describe()
            ),
        };
        diags.error(&item.loc, Some(&item.key), message);
    }
}

/// Checks that look at more than one value at a time.
struct Checks<'a> {
    config: &'a Config,
    raw: &'a RawConfig,
    set_at: &'a SetAt,
    main: &'a Loc,
}

impl Checks<'_> {
    fn run(&self, diags: &mut Diags) {
        self.unsupported_values(diags);
        self.forced_users_for_auth_any(diags);
        self.auth_dbnames_exist(diags);
        self.password_source(diags);
        self.verifier_only_server_logins(diags);
    }

    fn at(&self, key: &str) -> &Loc {
        self.set_at.get(key).unwrap_or(self.main)
    }

    /// Where a key of a `[databases]` entry was written (the entry itself if not found).
    fn db_item_at(&self, db: &str, key: &str) -> &Loc {
        let entry = self.raw.databases.iter().rev().find(|e| e.name == db);
        match entry {
            Some(e) => e
                .items
                .iter()
                .rev()
                .find(|i| i.key == key)
                .map_or(&e.loc, |i| &i.loc),
            None => self.main,
        }
    }

    fn unsupported_values(&self, diags: &mut Diags) {
        let s = &self.config.settings;
        if matches!(
            s.auth_type,
            AuthType::Cert | AuthType::Hba | AuthType::Pam | AuthType::Ldap
        ) {
            let message = format!("auth_type = {} is not supported by pgwarden", s.auth_type);
            diags.error(self.at("auth_type"), Some("auth_type"), message);
        }
        let strict = |m: TlsMode| {
            matches!(
                m,
                TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull
            )
        };
        for (key, mode) in [
            ("client_tls_sslmode", s.client_tls_sslmode),
            ("server_tls_sslmode", s.server_tls_sslmode),
        ] {
            if strict(mode) {
                let message = format!("{key} = {mode}: TLS is not supported by pgwarden yet");
                diags.error(self.at(key), Some(key), message);
            }
        }
        if matches!(s.client_tls_sslmode, TlsMode::Allow | TlsMode::Prefer) {
            let message = format!(
                "client_tls_sslmode = {}: TLS is not supported by pgwarden yet; clients asking for TLS are told it is unavailable",
                s.client_tls_sslmode
            );
            diags.warn(
                self.at("client_tls_sslmode"),
                Some("client_tls_sslmode"),
                message,
            );
        }
    }

    fn forced_users_for_auth_any(&self, diags: &mut Diags) {
        if self.config.settings.auth_type != AuthType::Any {
            return;
        }
        let all = self
            .config
            .databases
            .values()
            .chain(self.config.fallback.as_ref());
        for db in all.filter(|db| db.user.is_none()) {
            let message = format!(
                "database \"{}\" has no user=, but auth_type = any needs a forced user for every database",
                db.name
            );
            diags.error(self.db_item_at(&db.name, "user"), Some("user"), message);
        }
    }

    fn auth_dbnames_exist(&self, diags: &mut Diags) {
        let exists = |name: &str| self.config.databases.contains_key(name);
        if let Some(name) = &self.config.settings.auth_dbname
            && !exists(name)
        {
            let message = format!("no [databases] entry named \"{name}\"");
            diags.error(self.at("auth_dbname"), Some("auth_dbname"), message);
        }
        let all = self
            .config
            .databases
            .values()
            .chain(self.config.fallback.as_ref());
        for db in all {
            if let Some(name) = &db.auth_dbname
                && !exists(name)
            {
                let message = format!(
                    "database \"{}\": no [databases] entry named \"{name}\"",
                    db.name
                );
                diags.error(
                    self.db_item_at(&db.name, "auth_dbname"),
                    Some("auth_dbname"),
                    message,
                );
            }
        }
    }

    /// A login pgwarden makes on its own (a forced `user=`, or `auth_user`) whose only secret is a SCRAM
    /// verifier cannot answer a server that asks for a password: a verifier alone cannot produce a SCRAM
    /// proof, and the client-side keys that could ("pass-through") only exist for a client's own login.
    /// PgBouncer lets such clients wait for a timeout; say so when the config loads.
    fn verifier_only_server_logins(&self, diags: &mut Diags) {
        let Some(auth_file) = &self.config.auth_file else {
            return;
        };
        let verifier_only = |user: &str| {
            auth_file
                .entries
                .get(user)
                .is_some_and(|s| s.starts_with("SCRAM-SHA-256$"))
        };
        let all = self
            .config
            .databases
            .values()
            .chain(self.config.fallback.as_ref());
        for db in all {
            if let Some(user) = &db.user
                && db.password.is_none()
                && verifier_only(user)
            {
                let message = format!(
                    "database \"{}\" logs in as \"{user}\", whose only secret in {} is a SCRAM verifier: \
                     pgwarden cannot log in with it when PostgreSQL asks for a password (no client SCRAM \
                     login provides keys for a forced user); give the plain-text password in password= or \
                     in the auth_file",
                    db.name,
                    auth_file.path.display()
                );
                diags.warn(self.db_item_at(&db.name, "user"), Some("user"), message);
            }
        }
        if let Some(user) = &self.config.settings.auth_user
            && verifier_only(user)
        {
            let message = format!(
                "auth_user \"{user}\" has only a SCRAM verifier in {}: pgwarden cannot log in as it when \
                 PostgreSQL asks for a password, so auth_query lookups would fail; give its plain-text \
                 password in the auth_file",
                auth_file.path.display()
            );
            diags.warn(self.at("auth_user"), Some("auth_user"), message);
        }
    }

    fn password_source(&self, diags: &mut Diags) {
        let s = &self.config.settings;
        let needs_users = matches!(
            s.auth_type,
            AuthType::Md5 | AuthType::ScramSha256 | AuthType::Plain | AuthType::Trust
        );
        let any_auth_user = s.auth_user.is_some()
            || self
                .config
                .databases
                .values()
                .chain(self.config.fallback.as_ref())
                .any(|d| d.auth_user.is_some());
        if needs_users && s.auth_file.is_none() && !any_auth_user {
            let message = format!(
                "auth_type = {} looks users up in auth_file or through auth_user, but neither is set; no client will be able to log in",
                s.auth_type
            );
            diags.warn(self.main, Some("auth_file"), message);
        }
    }
}
