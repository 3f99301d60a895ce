//! Renders `examples/pgwarden.toml`, the fully commented native config, from the same tables as the
//! parsers and the reference, so the example lists every key with its real default.

use std::fmt::Write as _;

use super::entries::{DATABASE_KEYS, KeyInfo, USER_KEYS};
use super::settings::{SETTINGS, is_not_implemented};

/// A loadable TOML file: every `[pgwarden]` setting commented out at its default with its description,
/// and one database and one user entry with their keys.
pub fn commented_toml() -> String {
    let mut out = String::from(HEADER);
    out.push_str("\n[pgwarden]\n");
    for s in SETTINGS {
        let mut doc = s.doc.to_owned();
        if is_not_implemented(s.name) {
            doc.push_str(" (Not implemented by pgwarden yet: setting it warns.)");
        }
        if !s.reloadable {
            doc.push_str(" (Read at start only.)");
        }
        let _ = writeln!(out, "\n# {doc}");
        let _ = writeln!(out, "{}", commented(s.name, s.default, s.type_name));
    }
    out.push_str(DATABASES);
    out.push_str("[databases.app]\nhost = \"localhost\"\nport = 5432\ndbname = \"app\"\n");
    entry_keys(&mut out, DATABASE_KEYS, &["host", "port", "dbname"]);
    out.push_str(USERS);
    out.push_str("[users.analytics]\npool_mode = \"session\"\n");
    entry_keys(&mut out, USER_KEYS, &["pool_mode"]);
    out
}

const HEADER: &str = "\
# pgwarden.toml: every setting, commented out at its default, with what it does.
#
# Generated from pgwarden's settings table (host/src/config/settings.rs); docs/CONFIG.md has the same
# information as tables. A PgBouncer pgbouncer.ini works unchanged too: these are the same keys with the
# same meaning. Durations are seconds (a number) or a string with a unit (\"500ms\", \"2min\").
";

const DATABASES: &str = "
# [databases.NAME]: what clients connecting to database NAME are routed to. A table named \"*\" is the
# fallback for names without their own table.
";

const USERS: &str = "
# [users.NAME]: settings for every pool of user NAME (they win over the database's and the global ones).
";

fn entry_keys(out: &mut String, keys: &[KeyInfo], shown: &[&str]) {
    for k in keys.iter().filter(|k| !shown.contains(&k.name)) {
        let _ = writeln!(out, "# {} Default: {}.", k.doc, k.default);
        let _ = writeln!(out, "# {} = {}", k.name, sample(k.type_name));
    }
}

/// A commented `key = default` line in TOML syntax.
fn commented(name: &str, default: &str, type_name: &str) -> String {
    match (type_name, default) {
        ("list", "") => format!("# {name} = []"),
        ("list", d) => {
            let items: Vec<String> = d.split(',').map(|i| toml_string(i.trim())).collect();
            format!("# {name} = [{}]", items.join(", "))
        }
        ("bool", d) => format!("# {name} = {}", matches!(d, "1" | "yes" | "on" | "true")),
        ("duration" | "integer" | "port", d) if !d.is_empty() => format!("# {name} = {d}"),
        (_, "") => format!("# {name} = \"\"    # not set by default"),
        (_, d) => format!("# {name} = {}", toml_string(d)),
    }
}

/// An illustrative value of a type, for entry keys whose default is another setting.
fn sample(type_name: &str) -> &'static str {
    match type_name {
        "integer" | "port" => "0",
        "duration" => "0",
        "bool" => "false",
        "list" => "[]",
        "PoolMode" => "\"transaction\"",
        "LoadBalanceHosts" => "\"round-robin\"",
        _ => "\"\"",
    }
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// examples/pgwarden.toml is this function's output and loads as a valid config.
    /// Regenerate with `PGWARDEN_BLESS=1 cargo test -p pgwarden --lib example`.
    #[test]
    fn examples_pgwarden_toml_is_current_and_loads() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pgwarden.toml");
        let want = commented_toml();
        if std::env::var_os("PGWARDEN_BLESS").is_some() {
            std::fs::write(&path, &want).expect("write examples/pgwarden.toml");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "examples/pgwarden.toml is out of date: run PGWARDEN_BLESS=1 cargo test -p pgwarden --lib example"
        );
        let loaded = crate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            loaded.config.databases["app"].dbname.as_deref(),
            Some("app")
        );
    }

    /// Every config under examples/ loads, and the runbook's ini and TOML mean the same.
    #[test]
    fn shipped_examples_load() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let load = |rel: &str| {
            crate::config::load(&examples.join(rel))
                .unwrap_or_else(|e| panic!("{rel}: {e}"))
                .config
        };
        for rel in [
            "pgwarden.minimal.toml",
            "runbook-003/pgbouncer.ini",
            "quickstart/pgbouncer.ini",
        ] {
            load(rel);
        }
        let mut ini = load("runbook-000/pgbouncer.ini");
        let toml = load("runbook-000/pgwarden.toml");
        ini.path = toml.path.clone();
        assert_eq!(ini, toml);
    }

    #[test]
    fn every_setting_appears_with_a_toml_default() {
        let t = commented_toml();
        for s in SETTINGS {
            assert!(t.contains(&format!("\n# {} = ", s.name)), "{}", s.name);
        }
        for k in DATABASE_KEYS.iter().chain(USER_KEYS) {
            assert!(t.contains(&format!("{} = ", k.name)), "{}", k.name);
        }
        // Uncommenting the defaults must give a config that means the defaults.
        let mut uncommented = String::from("[pgwarden]\n");
        for s in SETTINGS {
            let line = commented(s.name, s.default, s.type_name);
            let line = line.trim_start_matches("# ");
            let line = line.split("    #").next().unwrap_or(line);
            if !s.default.is_empty() || s.type_name == "list" {
                uncommented.push_str(line);
                uncommented.push('\n');
            }
        }
        let dir = std::env::temp_dir().join(format!("pgwarden-example-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("defaults.toml");
        std::fs::write(&file, &uncommented).unwrap();
        let loaded = crate::config::load(&file).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(loaded.config.settings, crate::config::Settings::default());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
