//! The summary of one statement: its text, words, functions, command, kind and read-only reading.

use std::borrow::Cow;

use super::lexer::{StringKind, Token, TokenKind};
use super::{Statement, classify, names, rules};

/// A significant token (not whitespace or a comment), with what the rules need to know about it.
pub(super) struct Sig<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
    /// For a word, its text upper-cased (ASCII letters only); empty otherwise. Borrowed from the SQL when
    /// upper-casing changes nothing (so is `name` when folding changes nothing): this runs for every word
    /// of every query a policy checks.
    pub upper: Cow<'a, str>,
    /// For a word or quoted identifier, the name the server sees; `None` for other tokens.
    pub name: Option<Cow<'a, str>>,
    /// Parenthesis depth within the statement; a `(` and its `)` have the depth outside them.
    pub depth: usize,
}

impl Sig<'_> {
    pub fn is_word(&self, word: &str) -> bool {
        self.kind == TokenKind::Word && self.upper == word
    }

    pub fn is_word_in(&self, words: &[&str]) -> bool {
        self.kind == TokenKind::Word && words.contains(&&*self.upper)
    }

    pub fn is_punct(&self, punct: &str) -> bool {
        self.kind == TokenKind::Punct && self.text == punct
    }

    /// Whether this is a word or quoted identifier naming one of `names` (compared without case, as
    /// the server compares setting and option names).
    pub fn names_any(&self, names: &[&str]) -> bool {
        self.name
            .as_deref()
            .is_some_and(|n| names.iter().any(|x| n.eq_ignore_ascii_case(x)))
    }
}

/// Summarizes the tokens of one statement; `None` if it has only whitespace and comments.
pub(super) fn summarize_statement(sql: &str, toks: &[Token]) -> Option<Statement> {
    let (sig, uncertain) = significant(sql, toks);
    if sig.is_empty() {
        return None;
    }
    let first = toks.iter().position(|t| t.kind != TokenKind::Whitespace)?;
    let last = toks.iter().rposition(|t| t.kind != TokenKind::Whitespace)?;
    let text = sql
        .get(toks[first].start..toks[last].end)
        .unwrap_or("")
        .to_string();
    let functions = functions(&sig);
    let (kind, mut read_only) = classify::classify(&sig);
    let words: Vec<String> = sig
        .into_iter()
        .filter(|s| s.kind == TokenKind::Word)
        .map(|s| s.upper.into_owned())
        .collect();
    let command = words.first().cloned().unwrap_or_default();
    if uncertain
        || toks.iter().any(|t| t.unterminated)
        || functions.iter().any(|f| rules::has_side_effects(f))
    {
        read_only = false;
    }
    Some(Statement {
        text,
        command,
        kind,
        words,
        functions,
        read_only,
    })
}

/// The significant tokens with their names and depths, and whether some name could not be resolved
/// with certainty (a `UESCAPE` the server would read differently from us).
pub(super) fn significant<'a>(sql: &'a str, toks: &[Token]) -> (Vec<Sig<'a>>, bool) {
    let mut sig = Vec::with_capacity(toks.len());
    let mut depth = 0usize;
    for t in toks.iter().filter(|t| !t.is_trivia()) {
        let text = t.text(sql);
        let mut at = depth;
        if t.kind == TokenKind::Punct {
            match text {
                "(" => depth += 1,
                ")" => {
                    depth = depth.saturating_sub(1);
                    at = depth;
                }
                _ => {}
            }
        }
        let (upper, name) = match t.kind {
            TokenKind::Word => (upper_case(text), Some(names::fold(text))),
            TokenKind::QuotedIdent { unicode: false } => (
                Cow::Borrowed(""),
                Some(Cow::Owned(names::quoted_name(text, false, '\\'))),
            ),
            _ => (Cow::Borrowed(""), None),
        };
        sig.push(Sig {
            kind: t.kind,
            text,
            upper,
            name,
            depth: at,
        });
    }
    let mut uncertain = false;
    for i in 0..sig.len() {
        if sig[i].kind != (TokenKind::QuotedIdent { unicode: true }) {
            continue;
        }
        let escape = match (sig.get(i + 1), sig.get(i + 2)) {
            (Some(u), Some(s)) if u.is_word("UESCAPE") => uescape(s),
            (Some(u), None) if u.is_word("UESCAPE") => None,
            _ => Some('\\'),
        };
        uncertain |= escape.is_none();
        sig[i].name = Some(Cow::Owned(names::quoted_name(
            sig[i].text,
            true,
            escape.unwrap_or('\\'),
        )));
    }
    (sig, uncertain)
}

/// `text` with its ASCII letters upper-cased, borrowed when it has no lower-case ones.
fn upper_case(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(text.to_ascii_uppercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// The escape character a `UESCAPE '<c>'` names, if it is one the server accepts.
fn uescape(s: &Sig<'_>) -> Option<char> {
    if s.kind != TokenKind::String(StringKind::Standard) {
        return None;
    }
    let value = names::string_value(s.text);
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if names::valid_uescape(c) => Some(c),
        _ => None,
    }
}

/// Every name (possibly dotted) followed by `(`, in order of the `(`.
fn functions(sig: &[Sig<'_>]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 1..sig.len() {
        if !sig[i].is_punct("(") {
            continue;
        }
        let Some((mut j, last)) = name_ending_at(sig, i - 1) else {
            continue;
        };
        let mut parts = vec![last];
        while j >= 2 && sig[j - 1].is_punct(".") {
            let Some((k, part)) = name_ending_at(sig, j - 2) else {
                break;
            };
            parts.push(part);
            j = k;
        }
        if parts.len() == 1
            && sig[j].kind == TokenKind::Word
            && rules::is_not_function(&sig[j].upper)
        {
            continue;
        }
        parts.reverse();
        out.push(parts.join("."));
    }
    out
}

/// The name whose last token is `end`, and the index of its first token. A name is a word, a quoted
/// identifier, or `U&"..." UESCAPE '<c>'`, which the server reads as one identifier: without this,
/// `U&"!0073et_config" UESCAPE '!' (...)` would hide a call behind the string.
fn name_ending_at<'s>(sig: &'s [Sig<'_>], end: usize) -> Option<(usize, &'s str)> {
    if matches!(sig[end].kind, TokenKind::String(_)) && end >= 2 && sig[end - 1].is_word("UESCAPE")
    {
        let ident = &sig[end - 2];
        if ident.kind == (TokenKind::QuotedIdent { unicode: true }) {
            return Some((end - 2, ident.name.as_deref()?));
        }
    }
    Some((end, sig[end].name.as_deref()?))
}
