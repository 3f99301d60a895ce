//! The `key=value key='quoted value'` strings used for `[databases]` and `[users]` entries in
//! the ini format.
//!
//! Grammar (PgBouncer's): pairs separated by whitespace; whitespace around `=` is allowed; a
//! value is either a run of non-whitespace characters or a single-quoted string in which `''`
//! stands for one quote. Empty values are refused, as PgBouncer does. Unlike PgBouncer we also
//! insist on whitespace after a closing quote instead of silently eating the next character.

use std::fmt;

/// A syntax error, with the key it concerns when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnStrError {
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConnStrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

fn fail(key: Option<&str>, message: String) -> ConnStrError {
    ConnStrError {
        key: key.map(str::to_owned),
        message,
    }
}

/// Splits a connection string into its pairs, in order.
pub(crate) fn parse(input: &str) -> Result<Vec<(String, String)>, ConnStrError> {
    let mut pairs = Vec::new();
    let mut rest = input.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        if key.is_empty() {
            return Err(fail(
                None,
                "expected key=value, found \"=\" without a key".to_owned(),
            ));
        }
        let after_key = rest[key_end..].trim_start();
        let Some(after_eq) = after_key.strip_prefix('=') else {
            return Err(fail(
                Some(key),
                format!("expected key=value, found \"{key}\" without \"=\""),
            ));
        };
        let (value, remaining) = read_value(key, after_eq.trim_start())?;
        if value.is_empty() {
            return Err(fail(Some(key), "empty value".to_owned()));
        }
        pairs.push((key.to_owned(), value));
        rest = remaining.trim_start();
    }
    Ok(pairs)
}

/// Reads one value; returns it and the text after it.
fn read_value<'a>(key: &str, text: &'a str) -> Result<(String, &'a str), ConnStrError> {
    let Some(quoted) = text.strip_prefix('\'') else {
        let end = text.find(char::is_whitespace).unwrap_or(text.len());
        return Ok((text[..end].to_owned(), &text[end..]));
    };
    let mut value = String::new();
    let mut chars = quoted.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '\'' {
            value.push(c);
            continue;
        }
        if chars.peek().is_some_and(|&(_, next)| next == '\'') {
            chars.next();
            value.push('\'');
            continue;
        }
        let after = &quoted[i + 1..];
        if after.chars().next().is_some_and(|n| !n.is_whitespace()) {
            return Err(fail(
                Some(key),
                "expected whitespace after the closing quote".to_owned(),
            ));
        }
        return Ok((value, after));
    }
    Err(fail(Some(key), "unterminated quoted value".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<(String, String)> {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn plain_pairs() {
        assert_eq!(
            pairs("host=localhost port=5432 dbname=postgres"),
            vec![
                p("host", "localhost"),
                p("port", "5432"),
                p("dbname", "postgres")
            ]
        );
        assert_eq!(pairs(""), vec![]);
        assert_eq!(pairs("   "), vec![]);
        assert_eq!(
            pairs("host = a\tport= 1"),
            vec![p("host", "a"), p("port", "1")]
        );
    }

    #[test]
    fn quoted_values() {
        assert_eq!(
            pairs("connect_query='SELECT 1' user=x"),
            vec![p("connect_query", "SELECT 1"), p("user", "x")]
        );
        assert_eq!(pairs("password='it''s'"), vec![p("password", "it's")]);
        assert_eq!(pairs("a='x=y z'"), vec![p("a", "x=y z")]);
        assert_eq!(pairs("a=it's"), vec![p("a", "it's")]);
    }

    #[test]
    fn syntax_errors_name_the_key() {
        let e = parse("host").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("host"));
        let e = parse("host=").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("host"));
        assert_eq!(e.message, "empty value");
        let e = parse("password=''").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("password"));
        let e = parse("q='unterminated").unwrap_err();
        assert_eq!(
            (e.key.as_deref(), e.message.as_str()),
            (Some("q"), "unterminated quoted value")
        );
        let e = parse("q='a'b=1").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("q"));
        assert!(parse("=x").unwrap_err().key.is_none());
    }

    #[test]
    fn never_panics() {
        for s in crate::config::raw::all_strings(&[' ', '=', '\'', 'a', 'é'], 6) {
            let _ = parse(&s);
        }
    }
}
