//! The `auth_file` (userlist.txt): `"user" "secret" ...` per line.
//!
//! Secrets are kept exactly as written (plain text, `md5...` or `SCRAM-SHA-256$...`); telling
//! them apart is the authentication code's job.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::diag::{AFTER_CONFIG, Diags, Loc};
use super::raw::line_number;

/// The loaded `auth_file`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthFile {
    /// The file actually read (after resolving a relative `auth_file`).
    pub path: PathBuf,
    /// User name → raw secret string.
    pub entries: BTreeMap<String, String>,
}

/// Hand-written so secrets never reach a log through `{:?}`.
impl fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFile")
            .field("path", &self.path)
            .field("users", &self.entries.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Reads and parses the auth file at `path`. `set_at` is where `auth_file` was configured, so
/// an unreadable file is blamed on that line.
pub(crate) fn load(path: &Path, set_at: &Loc, diags: &mut Diags) -> Option<AuthFile> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(AuthFile {
            path: path.to_path_buf(),
            entries: parse(&text, path, diags),
        }),
        Err(err) => {
            diags.error(
                set_at,
                Some("auth_file"),
                format!("cannot read auth_file {}: {err}", path.display()),
            );
            None
        }
    }
}

/// Parses userlist text; malformed lines are reported against `file` and skipped.
pub(crate) fn parse(text: &str, file: &Path, diags: &mut Diags) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    let mut first_seen: BTreeMap<String, u32> = BTreeMap::new();
    // A byte-order mark (editors on Windows add one) is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (index, line) in text.lines().enumerate() {
        let lineno = line_number(index);
        let loc = Loc::at(file, Some(lineno), AFTER_CONFIG + u64::from(lineno));
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        match parse_line(trimmed) {
            Ok((user, secret)) => {
                if let Some(first) = first_seen.get(&user) {
                    diags.warn(
                        &loc,
                        Some(&user),
                        format!("user listed again (first on line {first}); this entry wins"),
                    );
                } else {
                    first_seen.insert(user.clone(), lineno);
                }
                entries.insert(user, secret);
            }
            Err(message) => diags.error(&loc, None, message),
        }
    }
    entries
}

fn parse_line(line: &str) -> Result<(String, String), String> {
    let (user, rest) = quoted(line).ok_or_else(|| {
        "expected a line of the form \"user\" \"secret\" (user name in double quotes)".to_owned()
    })?;
    if user.is_empty() {
        return Err("empty user name".to_owned());
    }
    let (secret, _ignored) = quoted(rest.trim_start())
        .ok_or_else(|| format!("expected the secret of user \"{user}\" in double quotes"))?;
    Ok((user, secret))
}

/// Reads a `"..."` field (`""` inside is one quote); returns it and the text after it.
fn quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            value.push(c);
        } else if chars.peek().is_some_and(|&(_, n)| n == '"') {
            chars.next();
            value.push('"');
        } else {
            return Some((value, &body[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> (BTreeMap<String, String>, Diags) {
        let mut d = Diags::default();
        let entries = parse(text, Path::new("users.txt"), &mut d);
        (entries, d)
    }

    #[test]
    fn parses_plain_md5_and_scram_secrets() {
        let (e, d) = run(concat!(
            "\"admin\" \"password123\"\n",
            "; comment\n",
            "# comment\n",
            "\n",
            "  \"md5user\" \"md545f2603610af569b6155c45067268c6b\" extra stuff\n",
            "\"pgbouncer_auth\" \"SCRAM-SHA-256$4096:c2FsdA==$abc=:def=\"\r\n",
        ));
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(e["admin"], "password123");
        assert_eq!(e["md5user"], "md545f2603610af569b6155c45067268c6b");
        assert_eq!(e["pgbouncer_auth"], "SCRAM-SHA-256$4096:c2FsdA==$abc=:def=");
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn doubled_quotes_are_one_quote() {
        let (e, d) = run("\"we\"\"ird\" \"pa\"\"ss\"\n");
        assert!(d.errors.is_empty());
        assert_eq!(e["we\"ird"], "pa\"ss");
    }

    #[test]
    fn malformed_lines_are_reported_with_their_line() {
        let (e, d) = run("\"ok\" \"1\"\nuser pass\n\"only\"\n\"open \"x\"\n\"\" \"x\"\n");
        assert_eq!(e.len(), 1);
        let lines: Vec<Option<u32>> = d.errors.iter().map(|x| x.line).collect();
        assert_eq!(lines, vec![Some(2), Some(3), Some(4), Some(5)]);
        assert!(d.errors.iter().all(|x| x.file == Path::new("users.txt")));
        assert!(
            d.errors[1].message.contains("\"only\""),
            "{}",
            d.errors[1].message
        );
    }

    #[test]
    fn duplicate_user_warns_and_last_wins() {
        let (e, d) = run("\"a\" \"1\"\n\"a\" \"2\"\n");
        assert_eq!(e["a"], "2");
        assert_eq!(d.warnings.len(), 1);
        assert_eq!(d.warnings[0].line, Some(2));
    }

    #[test]
    fn debug_hides_secrets() {
        let (entries, _) = run("\"a\" \"topsecret\"\n");
        let f = AuthFile {
            path: PathBuf::from("u.txt"),
            entries,
        };
        let text = format!("{f:?}");
        assert!(
            !text.contains("topsecret") && text.contains("\"a\""),
            "{text}"
        );
    }

    #[test]
    fn never_panics() {
        for s in crate::config::raw::all_strings(&[' ', '"', 'é', ';', '\n'], 6) {
            let _ = run(&s);
        }
    }
}
