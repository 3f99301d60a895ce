//! Splitting a rule's text into `key=value` words and the `->` arrow.
//!
//! Words are separated by whitespace. A value may be quoted with double quotes, where `\"` and
//! `\\` stand for `"` and `\`, so that messages and application names can hold spaces, commas and
//! arrows. Outside quotes a comma separates alternative values (`user=alice,bob`) and `->` is the
//! arrow even without spaces around it.

/// One piece of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// The `->` between conditions and actions.
    Arrow,
    /// `key` or `key=value[,value...]`.
    Word(Word),
}

/// `key`, with the values after `=` if there was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// Everything before the first unquoted `=`.
    pub key: String,
    /// `None` for a bare word (`deny`); otherwise the comma-separated values, quotes removed.
    pub values: Option<Vec<String>>,
}

/// Splits `text` into tokens, or says what is wrong with it.
pub fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut current: Option<Word> = None;
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => finish(&mut tokens, &mut current)?,
            '-' if chars.peek() == Some(&'>') => {
                chars.next();
                finish(&mut tokens, &mut current)?;
                tokens.push(Token::Arrow);
            }
            '"' => {
                let quoted = read_quoted(&mut chars)?;
                let word = current.get_or_insert_with(empty_word);
                match word.values.as_mut().and_then(|values| values.last_mut()) {
                    Some(value) => value.push_str(&quoted),
                    None => {
                        return Err(format!(
                            "quoted text must follow `key=` (near \"{quoted}\")"
                        ));
                    }
                }
            }
            '=' if current.as_ref().is_none_or(|w| w.values.is_none()) => {
                current.get_or_insert_with(empty_word).values = Some(vec![String::new()]);
            }
            ',' if current.as_ref().is_some_and(|w| w.values.is_some()) => {
                if let Some(values) = current.as_mut().and_then(|w| w.values.as_mut()) {
                    values.push(String::new());
                }
            }
            c => {
                let word = current.get_or_insert_with(empty_word);
                match word.values.as_mut().and_then(|values| values.last_mut()) {
                    Some(value) => value.push(c),
                    None => word.key.push(c),
                }
            }
        }
    }
    finish(&mut tokens, &mut current)?;
    Ok(tokens)
}

fn empty_word() -> Word {
    Word {
        key: String::new(),
        values: None,
    }
}

/// Ends the word being read, if any.
fn finish(tokens: &mut Vec<Token>, current: &mut Option<Word>) -> Result<(), String> {
    if let Some(word) = current.take() {
        if word.key.is_empty() {
            return Err("`=` without a key before it".to_string());
        }
        tokens.push(Token::Word(word));
    }
    Ok(())
}

/// Reads up to the closing quote (the opening one is consumed already).
fn read_quoted(chars: &mut impl Iterator<Item = char>) -> Result<String, String> {
    let mut out = String::new();
    loop {
        match chars.next() {
            Some('"') => return Ok(out),
            Some('\\') => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            },
            Some(c) => out.push(c),
            None => break,
        }
    }
    Err(format!("unterminated quoted text \"{out}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(key: &str, values: Option<&[&str]>) -> Token {
        Token::Word(Word {
            key: key.to_string(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        })
    }

    #[test]
    fn runbook_rule() {
        let tokens =
            tokenize("user=analytics_ro -> database=tracksolid_db_ro pool_mode=session").unwrap();
        assert_eq!(
            tokens,
            vec![
                word("user", Some(&["analytics_ro"])),
                Token::Arrow,
                word("database", Some(&["tracksolid_db_ro"])),
                word("pool_mode", Some(&["session"])),
            ]
        );
    }

    #[test]
    fn arrow_without_spaces_and_bare_words() {
        let tokens = tokenize("user=a,b->deny").unwrap();
        assert_eq!(
            tokens,
            vec![
                word("user", Some(&["a", "b"])),
                Token::Arrow,
                word("deny", None)
            ]
        );
    }

    #[test]
    fn quoted_values_keep_spaces_commas_arrows_and_escapes() {
        let tokens =
            tokenize(r#"application_name="my app, v2 -> x" -> deny message="say \"no\" \\ \n""#)
                .unwrap();
        assert_eq!(
            tokens,
            vec![
                word("application_name", Some(&["my app, v2 -> x"])),
                Token::Arrow,
                word("deny", None),
                word("message", Some(&[r#"say "no" \ \n"#])),
            ]
        );
    }

    #[test]
    fn quoted_and_plain_parts_join() {
        let tokens = tokenize(r#"application_name=pre"fix *",other"#).unwrap();
        assert_eq!(
            tokens,
            vec![word("application_name", Some(&["prefix *", "other"]))]
        );
    }

    #[test]
    fn empty_values() {
        assert_eq!(
            tokenize(r#"application_name="""#).unwrap(),
            vec![word("application_name", Some(&[""]))]
        );
        assert_eq!(
            tokenize("application_name=").unwrap(),
            vec![word("application_name", Some(&[""]))]
        );
        assert_eq!(tokenize("   ").unwrap(), vec![]);
    }

    #[test]
    fn second_equals_is_part_of_the_value() {
        assert_eq!(
            tokenize("application_name=a=b").unwrap(),
            vec![word("application_name", Some(&["a=b"]))]
        );
    }

    #[test]
    fn errors() {
        assert!(
            tokenize(r#"message="open"#)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(
            tokenize(r#"message="trailing\"#)
                .unwrap_err()
                .contains("unterminated")
        );
        assert!(tokenize("=x").unwrap_err().contains("without a key"));
        assert!(tokenize(r#""x""#).unwrap_err().contains("must follow"));
    }
}
