//! PgBouncer's ini dialect, including `%include`, read into the shared raw form.
//!
//! Rules: `[section]` headers; `key = value` lines with surrounding whitespace trimmed; lines
//! whose first non-blank character is `;` or `#` are comments (those characters mean nothing
//! later in a line, so `auth_query = SELECT 1 -- ;x` keeps its `;`); `%include file` may appear
//! anywhere and the included file continues in (and may change) the current section.

use std::path::{Path, PathBuf};

use super::connstr;
use super::diag::{Diags, Loc};
use super::raw::{RawConfig, RawEntry, RawItem, line_number, resolve_relative};
use super::values::RawValue;

/// Guards against runaway (acyclic but absurd) include chains; cycles are caught separately.
const MAX_INCLUDE_DEPTH: usize = 32;

/// The key named in diagnostics about include directives.
const INCLUDE: &str = "%include";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    PgBouncer,
    Databases,
    Users,
    Peers,
    PgWarden,
    /// An unknown section: already reported at its header, its lines are skipped silently.
    Invalid,
}

struct Reader<'d> {
    diags: &'d mut Diags,
    raw: RawConfig,
    section: Option<Section>,
    saw_main_section: bool,
    /// Canonical paths of the files being read, outermost first, for cycle detection.
    stack: Vec<PathBuf>,
    /// Lines read so far over all files: the reading-order position of the next line.
    lines_read: u64,
}

/// Reads `path` (and everything it includes) into the raw form, reporting syntax errors.
pub(crate) fn read(path: &Path, diags: &mut Diags) -> RawConfig {
    let mut reader = Reader {
        diags,
        raw: RawConfig::default(),
        section: None,
        saw_main_section: false,
        stack: Vec::new(),
        lines_read: 0,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            let loc = Loc::new(path, None);
            reader
                .diags
                .error(&loc, None, format!("cannot read configuration file: {err}"));
            return reader.raw;
        }
    };
    reader.stack.push(canonical(path));
    reader.read_text(path, &text);
    if !reader.saw_main_section {
        let loc = Loc::new(path, None);
        reader
            .diags
            .error(&loc, None, "no [pgbouncer] section found");
    }
    reader.raw
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl Reader<'_> {
    fn read_text(&mut self, file: &Path, text: &str) {
        // A byte-order mark (editors on Windows add one) is not part of the first line.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (index, line) in text.lines().enumerate() {
            self.lines_read += 1;
            let loc = Loc::at(file, Some(line_number(index)), self.lines_read);
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
                continue;
            }
            if let Some(target) = include_target(trimmed) {
                self.include(&loc, target);
            } else if let Some(header) = trimmed.strip_prefix('[') {
                self.section_header(&loc, header);
            } else {
                match split_key_value(trimmed) {
                    Ok((key, value)) => self.entry(&loc, key, value),
                    Err((key, message)) => self.diags.error(&loc, key.as_deref(), message),
                }
            }
        }
    }

    fn include(&mut self, at: &Loc, target: &str) {
        if target.is_empty() {
            self.diags
                .error(at, Some(INCLUDE), "%include needs a file name");
            return;
        }
        let path = resolve_relative(&at.file, Path::new(target));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) => {
                let message = format!("cannot read included file {}: {err}", path.display());
                self.diags.error(at, Some(INCLUDE), message);
                return;
            }
        };
        let canon = canonical(&path);
        if self.stack.contains(&canon) {
            let mut chain: Vec<String> =
                self.stack.iter().map(|p| p.display().to_string()).collect();
            chain.push(canon.display().to_string());
            let message = format!("include cycle: {}", chain.join(" -> "));
            self.diags.error(at, Some(INCLUDE), message);
            return;
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            let message = format!("includes nested more than {MAX_INCLUDE_DEPTH} deep");
            self.diags.error(at, Some(INCLUDE), message);
            return;
        }
        self.stack.push(canon);
        self.read_text(&path, &text);
        self.stack.pop();
    }

    fn section_header(&mut self, loc: &Loc, header: &str) {
        let Some((name, after)) = header.split_once(']') else {
            self.diags
                .error(loc, None, "section header is missing its closing \"]\"");
            self.section = Some(Section::Invalid);
            return;
        };
        let after = after.trim();
        if !after.is_empty() && !after.starts_with(';') && !after.starts_with('#') {
            self.diags.error(
                loc,
                None,
                format!("unexpected text after section header: {after}"),
            );
        }
        let name = name.trim();
        let section = match name.to_ascii_lowercase().as_str() {
            "pgbouncer" => Section::PgBouncer,
            "databases" => Section::Databases,
            "users" => Section::Users,
            "peers" => Section::Peers,
            "pgwarden" => Section::PgWarden,
            _ => {
                let message = format!(
                    "unknown section [{name}] (expected pgbouncer, databases, users, peers or pgwarden)"
                );
                self.diags.error(loc, Some(name), message);
                Section::Invalid
            }
        };
        if section == Section::PgBouncer {
            self.saw_main_section = true;
        }
        self.section = Some(section);
    }

    fn entry(&mut self, loc: &Loc, key: String, value: &str) {
        match self.section {
            None => self
                .diags
                .error(loc, Some(&key), "setting outside of any [section]"),
            Some(Section::Invalid) => {}
            Some(Section::PgBouncer) => self.raw.settings.push(RawItem {
                key: key.to_ascii_lowercase(),
                value: RawValue::Str(value.to_owned()),
                loc: loc.clone(),
            }),
            Some(Section::Databases) => {
                if let Some(entry) = self.conn_entry(loc, key, value, "database") {
                    self.raw.databases.push(entry);
                }
            }
            Some(Section::Users) => {
                if let Some(entry) = self.conn_entry(loc, key, value, "user") {
                    self.raw.users.push(entry);
                }
            }
            Some(Section::Peers) => self.diags.warn(
                loc,
                Some(&key),
                "[peers] is not supported by pgwarden yet; entry ignored",
            ),
            Some(Section::PgWarden) => self.pgwarden_key(loc, &key, value),
        }
    }

    /// pgwarden's own section: `plugin.NAME.KEY = value` and `plugin_cache_dir`. PgBouncer never reads
    /// this section, so a plain pgbouncer.ini keeps working unchanged.
    fn pgwarden_key(&mut self, loc: &Loc, key: &str, value: &str) {
        let raw_value = RawValue::Str(value.to_owned());
        if key == "plugin_cache_dir" {
            self.raw.plugin_runtime.push(RawItem {
                key: "cache_dir".into(),
                value: raw_value,
                loc: loc.clone(),
            });
            return;
        }
        let Some((name, rest)) = key.strip_prefix("plugin.").and_then(|r| r.split_once('.')) else {
            self.diags.error(
                loc,
                Some(key),
                "unknown [pgwarden] key (expected plugin.<name>.<setting> or plugin_cache_dir)",
            );
            return;
        };
        let item = RawItem {
            key: rest.to_owned(),
            value: raw_value,
            loc: loc.clone(),
        };
        match self.raw.plugins.iter_mut().find(|e| e.name == name) {
            Some(entry) => entry.items.push(item),
            None => self.raw.plugins.push(RawEntry {
                name: name.to_owned(),
                loc: loc.clone(),
                items: vec![item],
            }),
        }
    }

    fn conn_entry(&mut self, loc: &Loc, name: String, value: &str, what: &str) -> Option<RawEntry> {
        match connstr::parse(value) {
            Ok(pairs) => Some(RawEntry {
                items: pairs
                    .into_iter()
                    .map(|(key, value)| RawItem {
                        key: key.to_ascii_lowercase(),
                        value: RawValue::Str(value),
                        loc: loc.clone(),
                    })
                    .collect(),
                name,
                loc: loc.clone(),
            }),
            Err(err) => {
                let key = err.key.as_deref().unwrap_or(&name);
                let message = format!("{what} \"{name}\": {}", err.message);
                self.diags.error(loc, Some(key), message);
                None
            }
        }
    }
}

/// `%include path` → `Some(path)`; `%include` must be followed by blank space.
fn include_target(line: &str) -> Option<&str> {
    let rest = line.strip_prefix(INCLUDE)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.starts_with([' ', '\t']).then(|| rest.trim())
}

/// Splits `name = value`. Names may be bare, `"SQL-quoted"` (`""` is one quote), or
/// `'single-quoted'` as PgBouncer's parser allows. Errors carry the name when there is one.
fn split_key_value(line: &str) -> Result<(String, &str), (Option<String>, String)> {
    let unterminated = |what: &str| (None, format!("name has an unterminated {what} quote"));
    let (key, rest) = if let Some(body) = line.strip_prefix('"') {
        double_quoted(body).ok_or_else(|| unterminated("double"))?
    } else if let Some(body) = line.strip_prefix('\'') {
        let (name, rest) = body
            .split_once('\'')
            .ok_or_else(|| unterminated("single"))?;
        (name.to_owned(), rest)
    } else {
        let end = line
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(line.len());
        (line[..end].to_owned(), &line[end..])
    };
    if key.is_empty() {
        return Err((
            None,
            "expected \"name = value\" but the name is empty".to_owned(),
        ));
    }
    match rest.trim_start().strip_prefix('=') {
        Some(value) => Ok((key, value.trim())),
        None => {
            let message = format!("expected \"=\" after \"{key}\"");
            Err((Some(key), message))
        }
    }
}

fn double_quoted(body: &str) -> Option<(String, &str)> {
    let mut name = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            name.push(c);
        } else if chars.peek().is_some_and(|&(_, n)| n == '"') {
            chars.next();
            name.push('"');
        } else {
            return Some((name, &body[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_forms() {
        assert_eq!(split_key_value("a = b c "), Ok(("a".to_owned(), "b c")));
        assert_eq!(split_key_value("a=b"), Ok(("a".to_owned(), "b")));
        assert_eq!(split_key_value("a ="), Ok(("a".to_owned(), "")));
        assert_eq!(
            split_key_value("\"my db\" = x"),
            Ok(("my db".to_owned(), "x"))
        );
        assert_eq!(
            split_key_value("\"a\"\"b\"=x"),
            Ok(("a\"b".to_owned(), "x"))
        );
        assert_eq!(split_key_value("'q=d' = x"), Ok(("q=d".to_owned(), "x")));
        assert_eq!(
            split_key_value("* = host=x"),
            Ok(("*".to_owned(), "host=x"))
        );
        assert!(split_key_value("novalue").is_err());
        assert!(split_key_value("a b = c").is_err());
        assert!(split_key_value("\"open = x").is_err());
        assert!(split_key_value("\"\" = x").is_err());
        assert!(split_key_value("= x").is_err());
    }

    #[test]
    fn include_directive_forms() {
        assert_eq!(include_target("%include a.ini"), Some("a.ini"));
        assert_eq!(include_target("%include\t b c.ini "), Some("b c.ini"));
        assert_eq!(include_target("%include"), Some(""));
        assert_eq!(include_target("%includes x"), None);
        assert_eq!(include_target("key = %include"), None);
    }

    #[test]
    fn scanners_never_panic() {
        for s in crate::config::raw::all_strings(&[' ', '=', '\'', '"', 'é', '%'], 6) {
            let _ = split_key_value(&s);
            let _ = include_target(&s);
        }
    }
}
