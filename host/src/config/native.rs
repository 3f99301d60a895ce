//! pgwarden's native TOML format, read into the shared raw form.
//!
//! ```toml
//! [pgwarden]            # the [pgbouncer] settings, same names, typed values
//! listen_port = 6432
//! [databases.db]        # one table per database, connection-string keys
//! host = "localhost"
//! [users.analytics]
//! pool_mode = "session"
//! ```
//!
//! serde rejects unknown top-level tables and wrong shapes; keys inside the tables are checked
//! by the shared validator so both formats give the same "unknown setting" diagnostics, and so
//! all of them are reported at once rather than serde's first.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::diag::{Diags, Loc};
use super::raw::{RawConfig, RawEntry, RawItem, line_of};
use super::values::RawValue;

type Table = BTreeMap<Spanned<String>, Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlFile {
    #[serde(default)]
    pgwarden: Table,
    #[serde(default)]
    databases: BTreeMap<Spanned<String>, Spanned<Table>>,
    #[serde(default)]
    users: BTreeMap<Spanned<String>, Spanned<Table>>,
    /// `cache_dir = "..."` and one `[plugins.NAME]` table per plugin.
    #[serde(default)]
    plugins: Table,
}

/// Reads and parses a TOML configuration file.
pub(crate) fn read(path: &Path, diags: &mut Diags) -> RawConfig {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text, diags),
        Err(err) => {
            let loc = Loc::new(path, None);
            diags.error(&loc, None, format!("cannot read configuration file: {err}"));
            RawConfig::default()
        }
    }
}

/// Parses TOML `text` that came from `path`.
pub(crate) fn parse(path: &Path, text: &str, diags: &mut Diags) -> RawConfig {
    let file: TomlFile = match toml::from_str(text) {
        Ok(file) => file,
        Err(err) => {
            report_toml_error(path, text, &err, diags);
            return RawConfig::default();
        }
    };
    let at = |offset: usize| Loc::new(path, Some(line_of(text, offset)));
    let (plugins, plugin_runtime) = plugin_tables(&file.plugins, &at, diags);
    RawConfig {
        settings: items(&file.pgwarden, &at),
        databases: entries(&file.databases, &at),
        users: entries(&file.users, &at),
        plugins,
        plugin_runtime,
    }
}

/// `[plugins]`: `cache_dir` and one table per plugin, whose `config` sub-table becomes `config.*` items.
fn plugin_tables(
    table: &Table,
    at: &impl Fn(usize) -> Loc,
    diags: &mut Diags,
) -> (Vec<RawEntry>, Vec<RawItem>) {
    let mut plugins = Vec::new();
    let mut runtime = Vec::new();
    for (name, value) in table {
        let loc = at(name.span().start);
        match value.get_ref() {
            toml::Value::Table(t) => {
                let mut items = Vec::new();
                for (key, v) in t {
                    match (key.as_str(), v) {
                        ("config", toml::Value::Table(cfg)) => {
                            for (k, cv) in cfg {
                                items.push(RawItem {
                                    key: format!("config.{k}"),
                                    value: convert(cv),
                                    loc: loc.clone(),
                                });
                            }
                        }
                        _ => items.push(RawItem {
                            key: key.to_ascii_lowercase(),
                            value: convert(v),
                            loc: loc.clone(),
                        }),
                    }
                }
                plugins.push((
                    name.span().start,
                    RawEntry {
                        name: name.get_ref().clone(),
                        loc,
                        items,
                    },
                ));
            }
            v if name.get_ref() == "cache_dir" => {
                runtime.push(RawItem {
                    key: "cache_dir".into(),
                    value: convert(v),
                    loc,
                });
            }
            _ => diags.error(
                &loc,
                Some(name.get_ref()),
                "expected a [plugins.NAME] table or cache_dir",
            ),
        }
    }
    plugins.sort_by_key(|(start, _)| *start);
    (plugins.into_iter().map(|(_, e)| e).collect(), runtime)
}

fn items(table: &Table, at: &impl Fn(usize) -> Loc) -> Vec<RawItem> {
    let mut items: Vec<(usize, RawItem)> = table
        .iter()
        .map(|(key, value)| {
            let start = key.span().start;
            let item = RawItem {
                key: key.get_ref().to_ascii_lowercase(),
                value: convert(value.get_ref()),
                loc: at(start),
            };
            (start, item)
        })
        .collect();
    // File order, so diagnostics come out in the order the user reads them.
    items.sort_by_key(|(start, _)| *start);
    items.into_iter().map(|(_, item)| item).collect()
}

fn entries(
    tables: &BTreeMap<Spanned<String>, Spanned<Table>>,
    at: &impl Fn(usize) -> Loc,
) -> Vec<RawEntry> {
    let mut entries: Vec<(usize, RawEntry)> = tables
        .iter()
        .map(|(name, table)| {
            let start = name.span().start;
            let entry = RawEntry {
                name: name.get_ref().clone(),
                loc: at(start),
                items: items(table.get_ref(), at),
            };
            (start, entry)
        })
        .collect();
    entries.sort_by_key(|(start, _)| *start);
    entries.into_iter().map(|(_, entry)| entry).collect()
}

fn convert(value: &toml::Value) -> RawValue {
    match value {
        toml::Value::String(s) => RawValue::Str(s.clone()),
        toml::Value::Integer(i) => RawValue::Int(*i),
        toml::Value::Float(f) => RawValue::Float(*f),
        toml::Value::Boolean(b) => RawValue::Bool(*b),
        toml::Value::Array(items) => {
            let strings: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect();
            strings.map_or(RawValue::Other("array of non-strings"), RawValue::List)
        }
        toml::Value::Table(_) => RawValue::Other("table"),
        toml::Value::Datetime(_) => RawValue::Other("datetime"),
    }
}

fn report_toml_error(path: &Path, text: &str, err: &toml::de::Error, diags: &mut Diags) {
    let line = err.span().map(|span| line_of(text, span.start));
    let loc = Loc::new(path, line);
    let message = err.message().trim();
    // serde's unknown-field message lists every alternative; name the culprit instead.
    if let Some(name) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name)
    {
        diags.error(
            &loc,
            Some(name),
            "unknown top-level table (expected [pgwarden], [databases], [users] or [plugins])",
        );
    } else {
        diags.error(&loc, None, message.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (RawConfig, Diags) {
        let mut d = Diags::default();
        let raw = parse(Path::new("c.toml"), text, &mut d);
        (raw, d)
    }

    #[test]
    fn items_carry_lines_and_types() {
        let (raw, d) = run(concat!(
            "[pgwarden]\n",
            "listen_port = 6432\n",
            "Listen_Addr = [\"a\", \"b\"]\n",
            "reserve_pool_timeout = 0.5\n",
            "log_stats = false\n",
            "\n",
            "[databases.db]\n",
            "host = \"localhost\"\n",
            "[databases.\"*\"]\n",
            "port = 1\n",
            "[users.u]\n",
            "pool_mode = \"session\"\n",
        ));
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let got: Vec<(&str, Option<u32>)> = raw
            .settings
            .iter()
            .map(|i| (i.key.as_str(), i.loc.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("listen_port", Some(2)),
                ("listen_addr", Some(3)),
                ("reserve_pool_timeout", Some(4)),
                ("log_stats", Some(5)),
            ]
        );
        assert_eq!(raw.settings[0].value, RawValue::Int(6432));
        assert_eq!(
            raw.settings[1].value,
            RawValue::List(vec!["a".into(), "b".into()])
        );
        assert_eq!(raw.settings[2].value, RawValue::Float(0.5));
        assert_eq!(raw.settings[3].value, RawValue::Bool(false));
        assert_eq!(raw.databases.len(), 2);
        assert_eq!(
            (raw.databases[0].name.as_str(), raw.databases[0].loc.line),
            ("db", Some(7))
        );
        assert_eq!(raw.databases[0].items[0].loc.line, Some(8));
        assert_eq!(raw.databases[1].name, "*");
        assert_eq!(raw.users[0].items[0].value, RawValue::Str("session".into()));
    }

    #[test]
    fn unknown_top_level_table_names_key_and_line() {
        let (_, d) = run("[pgwarden]\nlisten_port = 1\n\n[pgwarden_plugins]\nx = 1\n");
        assert_eq!(d.errors.len(), 1);
        let e = &d.errors[0];
        assert_eq!(e.key.as_deref(), Some("pgwarden_plugins"));
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let (_, d) = run("[pgwarden]\nlisten_port = \n");
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].line, Some(2), "{}", d.errors[0]);
    }

    #[test]
    fn non_table_database_is_an_error_with_a_line() {
        let (_, d) = run("[databases]\ndb = \"host=x\"\n");
        assert_eq!(d.errors.len(), 1);
        assert_eq!(d.errors[0].line, Some(2), "{}", d.errors[0]);
    }

    #[test]
    fn odd_values_are_kept_for_the_validator_to_reject() {
        let (raw, _) = run("[pgwarden]\na = [1, 2]\nb = {x = 1}\nc = 1979-05-27\n");
        let kinds: Vec<&RawValue> = raw.settings.iter().map(|i| &i.value).collect();
        assert_eq!(
            kinds,
            vec![
                &RawValue::Other("array of non-strings"),
                &RawValue::Other("table"),
                &RawValue::Other("datetime"),
            ]
        );
    }
}
