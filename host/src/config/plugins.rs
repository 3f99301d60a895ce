//! Plugin configuration, both formats:
//!
//! ```ini
//! [pgwarden]                      ; pgwarden's own section: PgBouncer never reads it
//! plugin_cache_dir = /var/cache/pgwarden
//! plugin.readonly.path = builtin:readonly
//! plugin.readonly.databases = analytics
//! plugin.readonly.config.message = analytics is read-only
//! ```
//! ```toml
//! [plugins]
//! cache_dir = "/var/cache/pgwarden"
//! [plugins.readonly]
//! path = "builtin:readonly"
//! databases = ["analytics"]
//! [plugins.readonly.config]
//! message = "analytics is read-only"
//! ```
//!
//! A `pgbouncer.ini` with `auth_user` gets the shipped `auth-query` plugin by itself (named `auth_query`),
//! configured from `auth_user`, `auth_query` and `auth_dbname`, global and per database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{Diags, Loc};
use super::entries::Database;
use super::raw::{RawEntry, RawItem, resolve_relative};
use super::settings::Settings;
use super::values::{RawValue, duration, list, string};

/// The hooks a plugin can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Router,
    Policy,
    Auth,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Router => "router",
            Self::Policy => "policy",
            Self::Auth => "auth",
        }
    }
}

/// What happens when a plugin traps, runs out of time or memory, or returns garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Fail closed: the query is denied, the connection refused, the login refused.
    #[default]
    Deny,
    /// Fail open: carry on as if the plugin had not been there.
    Allow,
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// A plugin shipped inside pgwarden (`builtin:readonly`).
    Builtin(String),
    /// A `.wasm` component file.
    File(PathBuf),
}

impl std::fmt::Display for PluginSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(name) => write!(f, "builtin:{name}"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One configured plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSpec {
    pub name: String,
    pub source: PluginSource,
    /// The hooks to use; `None` = every hook the component exports.
    pub hooks: Option<Vec<Hook>>,
    /// `[databases]` aliases it applies to; `None` = every database.
    pub databases: Option<Vec<String>>,
    /// Plugins run in ascending order (ties by name).
    pub order: i64,
    pub on_error: OnError,
    /// CPU deadline of one call.
    pub timeout: Duration,
    /// Linear memory cap of one instance, bytes.
    pub memory_limit: u64,
    /// How long an auth lookup's answer is reused; zero = ask every login (PgBouncer's behaviour).
    pub cache_ttl: Duration,
    /// Startup parameters added to the server connections of pools in scope (defence in depth: the
    /// readonly plugin's default is `default_transaction_read_only=on`).
    pub server_parameters: Vec<(String, String)>,
    /// The plugin's own configuration table, handed to its `init`.
    pub config: Vec<(String, String)>,
    /// Where it was configured, for messages.
    pub file: PathBuf,
    pub line: Option<u32>,
}

impl PluginSpec {
    /// Whether this plugin applies to clients of database alias `database`.
    pub fn applies_to(&self, database: &str) -> bool {
        self.databases
            .as_ref()
            .is_none_or(|dbs| dbs.iter().any(|d| d == database))
    }

    /// "file:line" of its configuration.
    pub fn origin(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }
}

/// The plugin section of the configuration reference (docs/CONFIG.md); a test checks it names every key.
pub(crate) const REFERENCE: &str = "
## Plugins

Plugins are WebAssembly components (see `wit/` and docs/PLUGINS.md). In a `pgbouncer.ini` they go in
pgwarden's own `[pgwarden]` section, which PgBouncer never reads, as `plugin.NAME.KEY = value`; in TOML each is
a `[plugins.NAME]` table. Keys of the plugin's own configuration table are `plugin.NAME.config.KEY` (TOML:
a `[plugins.NAME.config]` table). Plugins run in ascending `order`, ties by name.

| Key | Type | Default | Description |
|-----|------|---------|-------------|
| `path` | string | *(required)* | The `.wasm` component, or `builtin:readonly`, `builtin:router`, `builtin:auth-query`. |
| `hooks` | list | every hook it exports | Which of `router`, `policy`, `auth` to use. |
| `databases` | list | `*` | The `[databases]` aliases it applies to (`*` = all). |
| `order` | integer | `0` | Run order among plugins of the same hook. |
| `on_error` | `deny` or `allow` | `deny` | When the plugin traps, runs out of time or memory: deny the query / refuse the connection or login (`deny`), or carry on as if it were not there (`allow`). |
| `timeout` | duration | `100ms` | CPU deadline of one call. |
| `memory_limit` | size | `128MiB` | Linear memory cap of one instance (`64MiB`, `512KiB`, bytes). |
| `cache_ttl` | duration | `0` | Auth plugins: reuse a lookup's answer this long (0: ask at every login, like PgBouncer). |
| `server_parameters` | list of `name=value` | *(none; `builtin:readonly`: `default_transaction_read_only=on`)* | Startup parameters for the server connections of pools it applies to. |
| `config.*` | string | | The plugin's own configuration table, handed to its `init`. |

`plugin_cache_dir` (TOML: `[plugins] cache_dir`): where compiled plugins are cached between runs; default
`$XDG_CACHE_HOME/pgwarden/plugins` or `~/.cache/pgwarden/plugins`, empty for no cache. Read at start only.

A `pgbouncer.ini` that sets `auth_user` (globally or on a database) gets the built-in `auth-query` plugin
by itself, named `auth_query` and configured from `auth_user`, `auth_query` and `auth_dbname`; configure a
plugin of that name to replace it.
";

const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
const DEFAULT_MEMORY: u64 = 128 << 20;
const KEYS: &[&str] = &[
    "path",
    "hooks",
    "databases",
    "order",
    "on_error",
    "timeout",
    "memory_limit",
    "cache_ttl",
    "server_parameters",
];

/// Builds the plugin specs from their raw entries, adding the automatic `auth_query` plugin.
pub(crate) fn build(
    entries: &[RawEntry],
    settings: &Settings,
    databases: &BTreeMap<String, Database>,
    main: &Loc,
    diags: &mut Diags,
) -> Vec<PluginSpec> {
    let mut specs: Vec<PluginSpec> = entries.iter().filter_map(|e| build_one(e, diags)).collect();
    if !specs.iter().any(|s| s.name == AUTO_AUTH)
        && let Some(auto) = auth_query_plugin(settings, databases, main)
    {
        specs.push(auto);
    }
    specs.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.name.cmp(&b.name)));
    specs
}

fn build_one(entry: &RawEntry, diags: &mut Diags) -> Option<PluginSpec> {
    let name = &entry.name;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        diags.error(
            &entry.loc,
            Some(name),
            "plugin names use letters, digits, '_' and '-'",
        );
        return None;
    }
    let mut spec = PluginSpec {
        name: name.clone(),
        source: PluginSource::Builtin(String::new()),
        hooks: None,
        databases: None,
        order: 0,
        on_error: OnError::Deny,
        timeout: DEFAULT_TIMEOUT,
        memory_limit: DEFAULT_MEMORY,
        cache_ttl: Duration::ZERO,
        server_parameters: Vec::new(),
        config: Vec::new(),
        file: entry.loc.file.clone(),
        line: entry.loc.line,
    };
    let mut path_seen = false;
    let mut params_seen = false;
    for item in &entry.items {
        if let Some(key) = item.key.strip_prefix("config.") {
            match config_value(&item.value) {
                Some(v) => spec.config.push((key.to_owned(), v)),
                None => diags.error(
                    &item.loc,
                    Some(&item.key),
                    "a config value must be a string, number or boolean",
                ),
            }
            continue;
        }
        let full_key = format!("plugin.{name}.{}", item.key);
        let result = apply(&mut spec, item, &mut path_seen, &mut params_seen);
        if let Err(message) = result {
            diags.error(&item.loc, Some(&full_key), message);
        }
    }
    if !path_seen {
        diags.error(
            &entry.loc,
            Some(&format!("plugin.{name}.path")),
            "every plugin needs a path (a .wasm file or builtin:<name>)",
        );
        return None;
    }
    if !params_seen && spec.source == PluginSource::Builtin("readonly".into()) {
        spec.server_parameters
            .push(("default_transaction_read_only".into(), "on".into()));
    }
    Some(spec)
}

fn apply(
    spec: &mut PluginSpec,
    item: &RawItem,
    path_seen: &mut bool,
    params_seen: &mut bool,
) -> Result<(), String> {
    let v = &item.value;
    match item.key.as_str() {
        "path" => {
            let p = string(v)?;
            spec.source = match p.strip_prefix("builtin:") {
                Some(b) => PluginSource::Builtin(b.to_owned()),
                None if p.is_empty() => return Err("empty path".into()),
                None => PluginSource::File(resolve_relative(&item.loc.file, Path::new(&p))),
            };
            *path_seen = true;
        }
        "hooks" => {
            let hooks = list(v)?
                .iter()
                .map(|h| match h.as_str() {
                    "router" => Ok(Hook::Router),
                    "policy" => Ok(Hook::Policy),
                    "auth" => Ok(Hook::Auth),
                    other => Err(format!(
                        "unknown hook \"{other}\" (expected router, policy, auth)"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if hooks.is_empty() {
                return Err("an empty hooks list would make the plugin do nothing".into());
            }
            spec.hooks = Some(hooks);
        }
        "databases" => {
            let dbs = list(v)?;
            spec.databases = if dbs.iter().any(|d| d == "*") {
                None
            } else {
                Some(dbs)
            };
        }
        "order" => {
            spec.order = match v {
                RawValue::Int(i) => *i,
                other => string(other)?
                    .trim()
                    .parse()
                    .map_err(|_| "expected a whole number".to_owned())?,
            }
        }
        "on_error" => {
            spec.on_error = match string(v)?.as_str() {
                "deny" => OnError::Deny,
                "allow" => OnError::Allow,
                other => return Err(format!("expected deny or allow, got \"{other}\"")),
            }
        }
        "timeout" => {
            let d = duration(v)?;
            if d.is_zero() {
                return Err("a plugin call needs a deadline above zero".into());
            }
            spec.timeout = d;
        }
        "memory_limit" => spec.memory_limit = bytes(v)?,
        "cache_ttl" => spec.cache_ttl = duration(v)?,
        "server_parameters" => {
            *params_seen = true;
            spec.server_parameters = list(v)?
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .filter(|(k, _)| !k.is_empty())
                        .ok_or_else(|| format!("\"{kv}\": expected name=value"))
                })
                .collect::<Result<_, _>>()?;
        }
        other => {
            return Err(format!(
                "unknown plugin setting \"{other}\" (expected one of: {})",
                KEYS.join(", ")
            ));
        }
    }
    Ok(())
}

/// A size like `64MiB`, `512KB`, `1GB` or a plain number of bytes.
fn bytes(v: &RawValue) -> Result<u64, String> {
    if let RawValue::Int(i) = v {
        return u64::try_from(*i).map_err(|_| "a size cannot be negative".to_owned());
    }
    let s = string(v)?;
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{s}\": expected a size such as 64MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "\"{other}\": unknown size unit (use KiB, MiB or GiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| "size too large".to_owned())
}

fn config_value(v: &RawValue) -> Option<String> {
    match v {
        RawValue::Str(s) => Some(s.clone()),
        RawValue::Int(i) => Some(i.to_string()),
        RawValue::Float(f) => Some(f.to_string()),
        RawValue::Bool(b) => Some(b.to_string()),
        RawValue::List(l) => Some(l.join(",")),
        RawValue::Other(_) => None,
    }
}

/// The console's `SET auth_user` / `auth_query` / `auth_dbname`: rebuilds the automatic `auth_query` plugin
/// from the changed settings (added, reconfigured or dropped). A plugin the file defines under that name is
/// the operator's own and is left alone.
pub(crate) fn refresh_auth_query(
    specs: &mut Vec<PluginSpec>,
    settings: &Settings,
    databases: &BTreeMap<String, Database>,
    main: &Loc,
) {
    let is_auto = |s: &PluginSpec| {
        s.name == AUTO_AUTH
            && s.line.is_none()
            && matches!(&s.source, PluginSource::Builtin(b) if b == "auth-query")
    };
    if specs.iter().any(|s| s.name == AUTO_AUTH && !is_auto(s)) {
        return;
    }
    specs.retain(|s| !is_auto(s));
    if let Some(auto) = auth_query_plugin(settings, databases, main) {
        specs.push(auto);
    }
    specs.sort_by(|a, b| a.order.cmp(&b.order).then_with(|| a.name.cmp(&b.name)));
}

/// The name of the plugin pgwarden adds for `auth_user` (define one of that name to replace it).
pub const AUTO_AUTH: &str = "auth_query";

/// PgBouncer's auth_user / auth_query / auth_dbname, global and per database, as the shipped auth-query
/// plugin's configuration; `None` when no auth_user is set anywhere.
fn auth_query_plugin(
    settings: &Settings,
    databases: &BTreeMap<String, Database>,
    main: &Loc,
) -> Option<PluginSpec> {
    let any_db = databases.values().any(|d| d.auth_user.is_some());
    if settings.auth_user.is_none() && !any_db {
        return None;
    }
    let mut config = Vec::new();
    if let Some(u) = &settings.auth_user {
        config.push(("auth_user".to_owned(), u.clone()));
    }
    config.push(("auth_query".to_owned(), settings.auth_query.clone()));
    if let Some(d) = &settings.auth_dbname {
        config.push(("auth_dbname".to_owned(), d.clone()));
    }
    for db in databases.values() {
        for (key, value) in [
            ("auth_user", &db.auth_user),
            ("auth_query", &db.auth_query),
            ("auth_dbname", &db.auth_dbname),
        ] {
            if let Some(v) = value {
                config.push((format!("database.{}.{key}", db.name), v.clone()));
            }
        }
    }
    Some(PluginSpec {
        name: AUTO_AUTH.to_owned(),
        source: PluginSource::Builtin("auth-query".to_owned()),
        hooks: Some(vec![Hook::Auth]),
        databases: None,
        order: 0,
        on_error: OnError::Deny,
        timeout: Duration::from_secs(10),
        memory_limit: 32 << 20,
        cache_ttl: Duration::ZERO,
        server_parameters: Vec::new(),
        config,
        file: main.file.clone(),
        line: None,
    })
}

/// Keys of the ini `[pgwarden]` section that are not per-plugin.
pub(crate) fn runtime_dir(items: &[RawItem], diags: &mut Diags) -> Option<PathBuf> {
    let mut dir = None;
    for item in items {
        match item.key.as_str() {
            "cache_dir" => match string(&item.value) {
                Ok(s) => {
                    dir = Some(if s.is_empty() {
                        PathBuf::new()
                    } else {
                        resolve_relative(&item.loc.file, Path::new(&s))
                    })
                }
                Err(e) => diags.error(&item.loc, Some("plugin_cache_dir"), e),
            },
            other => diags.error(&item.loc, Some(other), "unknown pgwarden setting"),
        }
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes(&RawValue::Str("64MiB".into())), Ok(64 << 20));
        assert_eq!(bytes(&RawValue::Str("512 kb".into())), Ok(512 << 10));
        assert_eq!(bytes(&RawValue::Int(1000)), Ok(1000));
        assert!(bytes(&RawValue::Str("12 parsecs".into())).is_err());
        assert!(bytes(&RawValue::Int(-1)).is_err());
    }
}

#[cfg(test)]
mod reference_tests {
    #[test]
    fn reference_names_every_plugin_key() {
        for key in super::KEYS {
            assert!(super::REFERENCE.contains(&format!("| `{key}` |")), "{key}");
        }
    }
}
