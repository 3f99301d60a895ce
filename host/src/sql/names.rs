//! The names that identifier tokens stand for, as the server resolves them.
//!
//! A policy must see `U&"\0073et_config"(` as a call of `set_config`, and `SET "Transaction_Read_Only"` as
//! a setting of `transaction_read_only`: these helpers turn token text into the name the server uses.

/// Folds an unquoted identifier the way the server does in a UTF-8 database: ASCII letters only (a
/// full Unicode fold would turn `ınsert`, with a dotless i, into a keyword the server never sees).
pub(super) fn fold(word: &str) -> std::borrow::Cow<'_, str> {
    if word.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(word.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(word)
    }
}

/// The name a quoted identifier token stands for: `"a""b"` is `a"b`; a `U&"..."` one has its Unicode
/// escapes decoded with `escape` (its `UESCAPE` character, `\` by default). An escape the server would
/// reject leaves the name undecoded: the server refuses the statement, so the name does not matter.
pub(super) fn quoted_name(text: &str, unicode: bool, escape: char) -> String {
    // The `U&` prefix is two ASCII bytes.
    let body = if unicode {
        text.get(2..).unwrap_or("")
    } else {
        text
    };
    let mut name = String::with_capacity(body.len());
    let mut chars = body.chars().skip(1).peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            if chars.peek() == Some(&'"') {
                chars.next();
            } else {
                break;
            }
        }
        name.push(c);
    }
    if unicode {
        decode_unicode_escapes(&name, escape).unwrap_or(name)
    } else {
        name
    }
}

/// Decodes `\XXXX`, `\+XXXXXX` and `\\` (with `escape` in place of `\`), joining UTF-16 surrogate
/// pairs as the server does. `None` where the server would raise an error.
fn decode_unicode_escapes(s: &str, escape: char) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let mut high_surrogate: Option<u32> = None;
    while let Some(c) = chars.next() {
        if c != escape {
            if high_surrogate.is_some() {
                return None;
            }
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&escape) {
            chars.next();
            if high_surrogate.is_some() {
                return None;
            }
            out.push(escape);
            continue;
        }
        let digits = if chars.peek() == Some(&'+') {
            chars.next();
            6
        } else {
            4
        };
        let mut code = 0u32;
        for _ in 0..digits {
            code = code * 16 + chars.next()?.to_digit(16)?;
        }
        match (high_surrogate.take(), code) {
            (None, 0xD800..=0xDBFF) => high_surrogate = Some(code),
            (Some(high), 0xDC00..=0xDFFF) => {
                out.push(char::from_u32(
                    0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00),
                )?);
            }
            (None, _) => out.push(char::from_u32(code)?),
            (Some(_), _) => return None,
        }
    }
    if high_surrogate.is_some() {
        None
    } else {
        Some(out)
    }
}

/// The value of a standard string token: `'it''s'` is `it's`, and continuation segments (`'a'`
/// newline `'b'`) are joined. Used only to read a `UESCAPE` character.
pub(super) fn string_value(text: &str) -> String {
    let mut value = String::new();
    let mut inside = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (inside, c) {
            (false, '\'') => inside = true,
            (false, '-') if chars.peek() == Some(&'-') => {
                // A `--` comment between segments may hold quotes of its own.
                while chars.next_if(|&c| c != '\n' && c != '\r').is_some() {}
            }
            (false, _) => {}
            (true, '\'') if chars.peek() == Some(&'\'') => {
                chars.next();
                value.push('\'');
            }
            (true, '\'') => inside = false,
            (true, _) => value.push(c),
        }
    }
    value
}

/// Whether `c` may be a `UESCAPE` character: the server refuses hex digits, `+`, quotes and whitespace.
pub(super) fn valid_uescape(c: char) -> bool {
    !(c.is_ascii_hexdigit()
        || matches!(c, '+' | '\'' | '"')
        || c.is_ascii_whitespace()
        || c == '\x0b')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_names() {
        assert_eq!(quoted_name(r#""Weird""#, false, '\\'), "Weird");
        assert_eq!(quoted_name(r#""a""b""#, false, '\\'), "a\"b");
        assert_eq!(quoted_name(r#""unterminated"#, false, '\\'), "unterminated");
        assert_eq!(
            quoted_name(r#"U&"\0073et_config""#, true, '\\'),
            "set_config"
        );
        assert_eq!(quoted_name(r#"u&"d!0061ta""#, true, '!'), "data");
        assert_eq!(quoted_name(r#"U&"\+000073x""#, true, '\\'), "sx");
        assert_eq!(quoted_name(r#"U&"a\\b""#, true, '\\'), "a\\b");
        assert_eq!(quoted_name(r#"U&"\D83D\DE00""#, true, '\\'), "\u{1F600}");
        // Invalid escapes are left as written.
        assert_eq!(quoted_name(r#"U&"\00zz""#, true, '\\'), r"\00zz");
        assert_eq!(quoted_name(r#"U&"\D83D""#, true, '\\'), r"\D83D");
        assert_eq!(quoted_name(r#"U&"\DE00""#, true, '\\'), r"\DE00");
    }

    #[test]
    fn string_values() {
        assert_eq!(string_value("'!'"), "!");
        assert_eq!(string_value("'it''s'"), "it's");
        assert_eq!(string_value("'a'\n'b'"), "ab");
        assert_eq!(string_value("'a' -- c\n'b'"), "ab");
        assert_eq!(string_value("'a' -- it's\n'b'"), "ab");
    }

    #[test]
    fn uescape_chars() {
        assert!(valid_uescape('!'));
        assert!(!valid_uescape('a'));
        assert!(!valid_uescape('+'));
        assert!(!valid_uescape(' '));
    }
}
