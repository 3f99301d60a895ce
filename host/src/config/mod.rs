//! Configuration loading: PgBouncer's ini format (with `%include` and `userlist.txt`) or
//! pgwarden's native TOML, turned into one validated [`Config`].
//!
//! Both formats are first read into a shared untyped form (`raw`), then go through a single
//! validation function, so a setting means the same thing whichever format it came from.
//! Every error in a file is reported at once, each naming the file, line and key.
//!
//! The settings are declared once, in `settings.rs`; the struct, its defaults, the parsers for
//! both formats, [`reference_markdown`] and [`is_reloadable`] are all derived from that table.

mod connstr;
mod diag;
mod entries;
mod example;
mod ini;
mod native;
mod plugins;
mod raw;
mod reference;
mod settings;
mod types;
mod userlist;
mod validate;
mod values;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_toml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use diag::{ConfigError, Diagnostic};
pub use entries::{Database, UserSettings};
pub use example::commented_toml;
pub use plugins::{AUTO_AUTH, Hook, OnError, PluginSource, PluginSpec};
pub use reference::reference_markdown;
pub use settings::{NOT_IMPLEMENTED, Settings, is_reloadable};
pub use types::{AuthType, LoadBalanceHosts, LogFormat, PoolMode, SessionState, TlsMode};
pub use userlist::AuthFile;
pub use validate::{SetError, SetOutcome};

/// Database names taken by the admin console; a `[databases]` entry may not use them.
pub const RESERVED_DATABASE_NAMES: &[&str] = &["pgbouncer", "pgwarden"];

/// A successfully loaded configuration plus the warnings worth logging.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The main configuration file, as given to [`load`].
    pub path: PathBuf,
    /// `[pgbouncer]` (ini) / `[pgwarden]` (TOML).
    pub settings: Settings,
    /// `[databases]`, without the `"*"` entry.
    pub databases: BTreeMap<String, Database>,
    /// The `"*"` entry, used for names not in `databases` (its `name` is `"*"`).
    pub fallback: Option<Database>,
    /// `[users]`.
    pub users: BTreeMap<String, UserSettings>,
    /// The parsed `auth_file`; `None` when `auth_file` is not set.
    pub auth_file: Option<AuthFile>,
    /// Plugins, in the order they run.
    pub plugins: Vec<PluginSpec>,
    /// Where compiled plugins are cached between runs: `None` = the default location, an empty path = no
    /// cache.
    pub plugin_cache_dir: Option<PathBuf>,
}

impl Config {
    /// The definition used for a client-side database name: its own entry, or else the `"*"`
    /// entry renamed to `name` (so `dbname` defaults to the requested name).
    pub fn database(&self, name: &str) -> Option<Database> {
        if let Some(db) = self.databases.get(name) {
            return Some(db.clone());
        }
        let mut db = self.fallback.clone()?;
        db.name = name.to_owned();
        Some(db)
    }

    /// A configuration with nothing in it but default settings (unit tests that need a `State`).
    #[cfg(test)]
    pub(crate) fn empty_for_tests() -> Self {
        Self {
            path: "x.ini".into(),
            settings: Settings::default(),
            databases: BTreeMap::new(),
            fallback: None,
            users: BTreeMap::new(),
            auth_file: None,
            plugins: Vec::new(),
            plugin_cache_dir: Some(PathBuf::new()),
        }
    }
}

impl Config {
    /// This configuration with one `[pgbouncer]` setting changed, as the console's `SET key = value` does:
    /// parsed and checked like the file would be.
    pub fn with_setting(&self, key: &str, value: &str) -> Result<SetOutcome, SetError> {
        validate::with_setting(self, key, value)
    }

    /// Every `[pgbouncer]` setting as SHOW CONFIG lists it: name, value, default, whether a reload (or
    /// `SET`) changes it.
    pub fn settings_table(&self) -> Vec<(&'static str, String, &'static str, bool)> {
        settings::SETTINGS
            .iter()
            .map(|info| {
                let value = self.settings.show(info.name).unwrap_or_default();
                (info.name, value, info.default, info.reloadable)
            })
            .collect()
    }
}

/// Loads and validates a configuration file: `.toml` files as native TOML, anything else as
/// PgBouncer ini. On failure the error lists every problem found.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let mut diags = diag::Diags::default();
    let raw = if is_toml(path) {
        native::read(path, &mut diags)
    } else {
        ini::read(path, &mut diags)
    };
    let config = validate::build(path, &raw, &mut diags);
    let (errors, warnings) = diags.into_sorted();
    if errors.is_empty() {
        Ok(Loaded { config, warnings })
    } else {
        Err(ConfigError {
            diagnostics: errors,
        })
    }
}

fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"))
}
