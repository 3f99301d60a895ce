//! The console's grammar, PgBouncer's: one command a query, `;` optional, keywords in any case.
//!
//! - `WORD [WORD]` — a command and its optional argument (`SHOW POOLS`, `PAUSE mydb`, `RELOAD`);
//! - `SET key = value` / `SET key TO value`, the value a word or a `'quoted string'`;
//! - pgwarden's own `WORD [WORD] TIMEOUT n` for the commands that wait (`PAUSE`, `WAIT_CLOSE`): three or
//!   four words, which PgBouncer's grammar never accepts, so nothing written for PgBouncer changes meaning.
//!   `n` is seconds, or milliseconds with `ms` (`500ms`), or seconds with `s`.
//!
//! A word is letters, digits and `_`, or a `"double-quoted"` name (`""` inside for a quote). Nothing else
//! parses: several commands in one query, other punctuation, an empty query.

/// A parsed console query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `NAME [ARG]`: the name lower-cased; the argument as written (unquoted), empty when absent.
    Plain { name: String, arg: String },
    /// `SET key = value`: the key as written (unquoted), the value unquoted.
    Set { key: String, value: String },
    /// `NAME [ARG] TIMEOUT n`: a waiting command that gives up after `timeout`.
    Timed {
        name: String,
        arg: String,
        timeout: std::time::Duration,
    },
}

/// Why a query is not a console command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not the grammar: "invalid command '…', use SHOW HELP;".
    Syntax,
    /// A part longer than PgBouncer takes (command 15, argument or key 63, value 255 bytes as written).
    BadArguments,
}

/// PgBouncer's limits, as written in the query including quotes.
const MAX_NAME: usize = 15;
const MAX_ARG: usize = 63;
const MAX_VALUE: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A bare or double-quoted word: its text (unquoted), whether it was quoted, its length as written.
    Word {
        text: String,
        quoted: bool,
        written: usize,
    },
    /// A single-quoted string: its text and length as written.
    Str {
        text: String,
        written: usize,
    },
    Equals,
    Semicolon,
}

/// A token and whether whitespace came before it.
type Spaced = (Token, bool);

pub fn parse(query: &str) -> Result<Command, ParseError> {
    let mut tokens = tokenize(query).ok_or(ParseError::Syntax)?;
    if matches!(tokens.last(), Some((Token::Semicolon, _))) {
        tokens.pop();
    }
    match tokens.as_slice() {
        [(Token::Word { text, written, .. }, _)] => plain(text, *written, "", 0),
        [
            (Token::Word { text, written, .. }, _),
            (
                Token::Word {
                    text: arg,
                    written: arg_len,
                    ..
                },
                true,
            ),
        ] => plain(text, *written, arg, *arg_len),
        [
            (
                Token::Word {
                    text: set,
                    quoted: false,
                    ..
                },
                _,
            ),
            (
                Token::Word {
                    text: key,
                    written: key_len,
                    ..
                },
                true,
            ),
            (assign, _),
            (value, _),
        ] if set.eq_ignore_ascii_case("set") && is_assign(assign) => {
            set_command(key, *key_len, value)
        }
        [(Token::Word { text, written, .. }, _), rest @ ..] if is_timeout(rest) => {
            let (arg, arg_len) = match rest {
                [
                    (
                        Token::Word {
                            text: arg,
                            written: arg_len,
                            ..
                        },
                        true,
                    ),
                    _,
                    _,
                ] => (arg.as_str(), *arg_len),
                _ => ("", 0),
            };
            let Some((Token::Word { text: n, .. }, _)) = rest.last() else {
                return Err(ParseError::Syntax);
            };
            let timeout = duration(n).ok_or(ParseError::BadArguments)?;
            match plain(text, *written, arg, arg_len)? {
                Command::Plain { name, arg } => Ok(Command::Timed { name, arg, timeout }),
                _ => Err(ParseError::Syntax),
            }
        }
        _ => Err(ParseError::Syntax),
    }
}

/// The `TIMEOUT n` tail (after an optional argument): `[arg] TIMEOUT n`, each part apart from the last.
fn is_timeout(rest: &[Spaced]) -> bool {
    let tail = match rest {
        [_, a, b] => [a, b],
        [a, b] => [a, b],
        _ => return false,
    };
    if rest.len() == 3 && !matches!(rest[0], (Token::Word { .. }, true)) {
        return false;
    }
    matches!(
        tail,
        [
            (
                Token::Word {
                    text: kw,
                    quoted: false,
                    ..
                },
                true
            ),
            (Token::Word { quoted: false, .. }, true)
        ] if kw.eq_ignore_ascii_case("timeout")
    )
}

/// `5`, `5s` or `500ms`: a timeout of more than zero.
fn duration(text: &str) -> Option<std::time::Duration> {
    let lower = text.to_ascii_lowercase();
    let (digits, millis) = if let Some(d) = lower.strip_suffix("ms") {
        (d, true)
    } else if let Some(d) = lower.strip_suffix('s') {
        (d, false)
    } else {
        (lower.as_str(), false)
    };
    let n: u64 = digits.parse().ok().filter(|n| *n > 0)?;
    Some(if millis {
        std::time::Duration::from_millis(n)
    } else {
        std::time::Duration::from_secs(n)
    })
}

fn set_command(key: &str, key_len: usize, value: &Token) -> Result<Command, ParseError> {
    let (value, value_len) = match value {
        Token::Word { text, written, .. } | Token::Str { text, written } => (text, *written),
        _ => return Err(ParseError::Syntax),
    };
    if key.is_empty() || key_len > MAX_ARG || value_len > MAX_VALUE {
        return Err(ParseError::BadArguments);
    }
    Ok(Command::Set {
        key: key.to_owned(),
        value: value.clone(),
    })
}

fn plain(name: &str, name_len: usize, arg: &str, arg_len: usize) -> Result<Command, ParseError> {
    if name_len > MAX_NAME || arg_len > MAX_ARG {
        return Err(ParseError::BadArguments);
    }
    Ok(Command::Plain {
        name: name.to_ascii_lowercase(),
        arg: arg.to_owned(),
    })
}

fn is_assign(t: &Token) -> bool {
    match t {
        Token::Equals => true,
        Token::Word {
            text,
            quoted: false,
            ..
        } => text.eq_ignore_ascii_case("to"),
        _ => false,
    }
}

/// Splits a query into tokens; `None` on anything outside the grammar (a `;` that is not last, stray
/// punctuation, an unterminated quote).
fn tokenize(query: &str) -> Option<Vec<Spaced>> {
    let bytes = query.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut spaced = false;
    while i < bytes.len() {
        let c = bytes[i];
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            spaced = true;
            i += 1;
            continue;
        }
        if matches!(tokens.last(), Some((Token::Semicolon, _))) {
            return None;
        }
        let start = i;
        let token = match c {
            b'=' => {
                i += 1;
                Token::Equals
            }
            b';' => {
                i += 1;
                Token::Semicolon
            }
            b'"' | b'\'' => {
                let (text, end) = quoted(query, i, c)?;
                i = end;
                if c == b'"' {
                    // PgBouncer's quoted word holds at least one character.
                    if text.is_empty() {
                        return None;
                    }
                    Token::Word {
                        text,
                        quoted: true,
                        written: i - start,
                    }
                } else {
                    Token::Str {
                        text,
                        written: i - start,
                    }
                }
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                Token::Word {
                    text: query[start..i].to_owned(),
                    quoted: false,
                    written: i - start,
                }
            }
            _ => return None,
        };
        // Two words must be apart: `a"b"` is not two words.
        let word = |t: &Token| matches!(t, Token::Word { .. } | Token::Str { .. });
        if word(&token) && !spaced && tokens.last().is_some_and(|(t, _)| word(t)) {
            return None;
        }
        tokens.push((token, spaced));
        spaced = false;
    }
    Some(tokens)
}

/// The text of a quoted part starting at `at` (a doubled quote stands for one), and where it ends.
fn quoted(query: &str, at: usize, quote: u8) -> Option<(String, usize)> {
    let bytes = query.as_bytes();
    let mut text = Vec::new();
    let mut i = at + 1;
    loop {
        let c = *bytes.get(i)?;
        if c == quote {
            if bytes.get(i + 1) == Some(&quote) {
                text.push(quote);
                i += 2;
                continue;
            }
            return Some((String::from_utf8(text).ok()?, i + 1));
        }
        text.push(c);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(name: &str, arg: &str) -> Result<Command, ParseError> {
        Ok(Command::Plain {
            name: name.into(),
            arg: arg.into(),
        })
    }

    fn set(key: &str, value: &str) -> Result<Command, ParseError> {
        Ok(Command::Set {
            key: key.into(),
            value: value.into(),
        })
    }

    #[test]
    fn commands_with_and_without_argument() {
        assert_eq!(parse("SHOW POOLS"), plain("show", "POOLS"));
        assert_eq!(
            parse("  show\tstats_totals ;  "),
            plain("show", "stats_totals")
        );
        assert_eq!(parse("reload;"), plain("reload", ""));
        assert_eq!(parse("PAUSE \"my db\""), plain("pause", "my db"));
        assert_eq!(parse("pause \"a\"\"b\""), plain("pause", "a\"b"));
        assert_eq!(parse("\nRESUME\n"), plain("resume", ""));
    }

    #[test]
    fn set_forms() {
        assert_eq!(
            parse("SET pool_mode = transaction"),
            set("pool_mode", "transaction")
        );
        assert_eq!(
            parse("set default_pool_size=5;"),
            set("default_pool_size", "5")
        );
        assert_eq!(
            parse("SET pool_mode TO session"),
            set("pool_mode", "session")
        );
        assert_eq!(
            parse("set server_check_query = 'select ''x'''"),
            set("server_check_query", "select 'x'")
        );
        assert_eq!(parse("SET \"Admin_Users\" = ''"), set("Admin_Users", ""));
    }

    #[test]
    fn what_does_not_parse() {
        for q in [
            "",
            ";",
            "SHOW POOLS; SHOW STATS",
            "SHOW POOLS;;",
            "SHOW a b",
            "SHOW foo-bar",
            "select 1+1",
            "SET x = 1.5",
            "SET x 5",
            "SET = 5",
            "show \"\"",
            "show 'x'",
            "pause \"unterminated",
        ] {
            assert_eq!(parse(q), Err(ParseError::Syntax), "{q:?}");
        }
        // A lone SET with a word parses as a command; its dispatch rejects it.
        assert_eq!(parse("SET x"), plain("set", "x"));
    }

    #[test]
    fn pgwardens_timeout_tail() {
        use std::time::Duration;
        let timed = |name: &str, arg: &str, ms: u64| {
            Ok(Command::Timed {
                name: name.into(),
                arg: arg.into(),
                timeout: Duration::from_millis(ms),
            })
        };
        assert_eq!(parse("PAUSE TIMEOUT 5"), timed("pause", "", 5000));
        assert_eq!(
            parse("pause mydb timeout 300ms;"),
            timed("pause", "mydb", 300)
        );
        assert_eq!(
            parse("WAIT_CLOSE \"my db\" TIMEOUT 2s"),
            timed("wait_close", "my db", 2000)
        );
        // A database called timeout is still PgBouncer's two-word form.
        assert_eq!(parse("PAUSE timeout"), plain("pause", "timeout"));
        assert_eq!(parse("PAUSE TIMEOUT 0"), Err(ParseError::BadArguments));
        assert_eq!(parse("PAUSE TIMEOUT soon"), Err(ParseError::BadArguments));
        for q in [
            "PAUSE db TIMEOUT",
            "PAUSE db LATER 5",
            "PAUSE \"TIMEOUT\" 5",
            "PAUSE a b TIMEOUT 5",
        ] {
            assert_eq!(parse(q), Err(ParseError::Syntax), "{q:?}");
        }
    }

    #[test]
    fn pgbouncers_length_limits() {
        assert_eq!(parse("abcdefghijklmnop"), Err(ParseError::BadArguments));
        assert_eq!(parse("abcdefghijklmno"), plain("abcdefghijklmno", ""));
        let long = "x".repeat(64);
        assert_eq!(
            parse(&format!("pause {long}")),
            Err(ParseError::BadArguments)
        );
        assert_eq!(
            parse(&format!("pause {}", &long[1..])),
            plain("pause", &long[1..])
        );
        let value = "v".repeat(256);
        assert_eq!(
            parse(&format!("set k = {value}")),
            Err(ParseError::BadArguments)
        );
    }
}
