//! Renders the configuration reference from the same tables the parsers use, so the
//! documentation cannot list a key, type or default the code does not have.

use std::fmt::Write as _;

use super::entries::{DATABASE_KEYS, KeyInfo, USER_KEYS};
use super::settings::{SETTINGS, is_not_implemented};
use super::types::{AuthType, ConfigEnum, LoadBalanceHosts, LogFormat, PoolMode, TlsMode};

/// The configuration reference as Markdown: one table per section (key, type, default,
/// description), plus a legend for the value types.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    out.push_str(INTRO);

    out.push_str("\n## `[pgbouncer]` settings (TOML: `[pgwarden]`)\n\n");
    out.push_str("| Key | Type | Default | Reload | Description |\n");
    out.push_str("|-----|------|---------|--------|-------------|\n");
    for s in SETTINGS {
        let mut doc = s.doc.to_owned();
        if is_not_implemented(s.name) {
            doc.push_str(" *Not implemented by pgwarden yet; ignored with a warning.*");
        }
        let default = render_default(s.default, s.type_name);
        let reload = if s.reloadable { "yes" } else { "restart" };
        row(
            &mut out,
            &[
                &code(s.name),
                &type_text(s.type_name),
                &default,
                reload,
                &doc,
            ],
        );
    }

    out.push_str("\n## `[databases]` keys\n\n");
    out.push_str(DATABASES_INTRO);
    entry_table(&mut out, DATABASE_KEYS);

    out.push_str("\n## `[users]` keys\n\n");
    out.push_str(USERS_INTRO);
    entry_table(&mut out, USER_KEYS);
    out.push_str(super::plugins::REFERENCE);
    out
}

const INTRO: &str = "\
# pgwarden configuration reference

pgwarden reads PgBouncer's `pgbouncer.ini` (with `%include` and the `userlist.txt` auth file)
or its own TOML format (chosen by a `.toml` extension). Key names and meanings are the same in
both; in TOML the `[pgbouncer]` section is called `[pgwarden]`, each database is a
`[databases.NAME]` table and each user a `[users.NAME]` table.

Value types:

- **duration**: seconds as a number (`15`, `0.5`), or a number with a unit: `us`, `ms`, `s`,
  `min`, `h`, `d` (`500ms`, `2min`).
- **bool**: `0`/`1`, `yes`/`no`, `on`/`off`, `true`/`false` (TOML booleans too).
- **integer**: a non-negative whole number. **port**: 1 to 65535.
- **list**: comma-separated names (TOML: an array of strings or a comma-separated string).
- **path**: a file or directory; relative `auth_file` and `%include` paths are looked up next
  to the file that names them, then in the working directory.
- **octal mode**: a file mode written in octal, as a string in TOML (`\"0777\"`).
";

const DATABASES_INTRO: &str = "\
Each line is `name = key=value ...` (values containing spaces go in single quotes, `''` for a
quote). `*` is the fallback for names without an entry. The names `pgbouncer` and `pgwarden` are
reserved for the admin console. Names with characters other than letters, digits and `_` can be
double-quoted (`\"my db\" = ...`).

";

const USERS_INTRO: &str = "Each line is `username = key=value ...`.\n\n";

fn entry_table(out: &mut String, keys: &[KeyInfo]) {
    out.push_str("| Key | Type | Default | Description |\n");
    out.push_str("|-----|------|---------|-------------|\n");
    for k in keys {
        row(
            out,
            &[&code(k.name), &type_text(k.type_name), k.default, k.doc],
        );
    }
}

fn row(out: &mut String, cells: &[&str]) {
    let escaped: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "| {} |", escaped.join(" | "));
}

fn code(text: &str) -> String {
    format!("`{text}`")
}

fn render_default(default: &str, type_name: &str) -> String {
    match (default, type_name) {
        ("", "list") => "*(empty)*".to_owned(),
        ("", _) => "*(not set)*".to_owned(),
        (value, _) => code(value),
    }
}

/// Enum types are spelled out with their allowed words.
fn type_text(label: &str) -> String {
    fn words<T: ConfigEnum>() -> String {
        let names: Vec<&str> = T::NAMES.iter().map(|(n, _)| *n).collect();
        format!("one of: {}", names.join(", "))
    }
    match label {
        "AuthType" => words::<AuthType>(),
        "PoolMode" => words::<PoolMode>(),
        "TlsMode" => words::<TlsMode>(),
        "LoadBalanceHosts" => words::<LoadBalanceHosts>(),
        "LogFormat" => words::<LogFormat>(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_key_of_every_section() {
        let md = reference_markdown();
        for s in SETTINGS {
            assert!(md.contains(&format!("| `{}` |", s.name)), "{}", s.name);
        }
        for k in DATABASE_KEYS.iter().chain(USER_KEYS) {
            assert!(md.contains(&format!("| `{}` |", k.name)), "{}", k.name);
        }
        assert!(md.contains("## `[databases]` keys") && md.contains("## `[users]` keys"));
    }

    #[test]
    fn rows_show_types_defaults_reload_and_status() {
        let md = reference_markdown();
        let line = |key: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| `{key}` |")))
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(
            line("listen_port"),
            "| `listen_port` | port | `6432` | restart | Port for the TCP listeners and the Unix socket name. |"
        );
        assert!(line("pool_mode").contains("one of: session, transaction, statement"));
        assert!(line("server_check_query").contains("`<empty>`"));
        assert!(line("admin_users").contains("*(empty)*"));
        assert!(line("auth_file").contains("*(not set)*"));
        assert!(line("syslog").contains("Not implemented"));
        assert!(!line("pool_mode").contains("Not implemented"));
        assert!(line("reserve_pool").contains("Old spelling"));
        // Every table row has the same number of cells as its header.
        for l in md.lines().filter(|l| l.starts_with("| `")) {
            let cells = l.replace("\\|", "").matches('|').count();
            assert!(cells == 6 || cells == 5, "{l}");
        }
    }
}

#[cfg(test)]
mod sync_tests {
    /// docs/CONFIG.md is this function's output, so the published reference cannot drift from the code.
    /// Regenerate with `PGWARDEN_BLESS=1 cargo test -p pgwarden --lib reference`.
    #[test]
    fn docs_config_md_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/CONFIG.md");
        let want = super::reference_markdown();
        if std::env::var_os("PGWARDEN_BLESS").is_some() {
            std::fs::write(&path, &want).expect("write docs/CONFIG.md");
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/CONFIG.md is out of date: run PGWARDEN_BLESS=1 cargo test -p pgwarden --lib reference"
        );
    }
}
