//! The summary of one statement: its text, words, functions, command, kind and read-only reading.

use std::borrow::Cow;

use super::lexer::{StringKind, Token, TokenKind};
use super::{Statement, classify, names, rules};

/// A significant token (not whitespace or a comment), with what the rules need to know about it.
///
/// Nothing is allocated for a word: comparisons with keywords ignore ASCII case on the text as written,
/// and its upper-cased form and folded name are made only where asked ([`Sig::upper`], [`Sig::name`]).
/// This runs for every word of every query a policy checks.
pub(super) struct Sig<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
    /// For a quoted identifier, the name the server sees (quotes removed, escapes decoded).
    quoted: Option<String>,
    /// Parenthesis depth within the statement; a `(` and its `)` have the depth outside them.
    pub depth: usize,
}

impl<'a> Sig<'a> {
    /// `word` must be upper-case: a keyword as the lexer's callers spell them.
    pub fn is_word(&self, word: &str) -> bool {
        debug_assert!(!word.bytes().any(|b| b.is_ascii_lowercase()), "{word}");
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(word)
    }

    /// Each of `words` must be upper-case, as for [`Sig::is_word`].
    pub fn is_word_in(&self, words: &[&str]) -> bool {
        self.kind == TokenKind::Word && words.iter().any(|w| self.is_word(w))
    }

    pub fn is_punct(&self, punct: &str) -> bool {
        self.kind == TokenKind::Punct && self.text == punct
    }

    /// For a word, its text upper-cased (ASCII letters only), borrowed when that changes nothing; ""
    /// for any other token.
    pub fn upper(&self) -> Cow<'a, str> {
        match self.kind {
            TokenKind::Word => upper_case(self.text),
            _ => Cow::Borrowed(""),
        }
    }

    /// For a word or quoted identifier, the name the server sees (a word folded to lower case); `None`
    /// for other tokens.
    pub fn name(&self) -> Option<Cow<'_, str>> {
        match self.kind {
            TokenKind::Word => Some(names::fold(self.text)),
            _ => self.quoted.as_deref().map(Cow::Borrowed),
        }
    }

    /// The name as [`Sig::name`] gives it, for comparisons that ignore ASCII case: a word as written.
    pub fn name_any_case(&self) -> Option<&str> {
        match self.kind {
            TokenKind::Word => Some(self.text),
            _ => self.quoted.as_deref(),
        }
    }

    /// Whether this is a word or quoted identifier naming one of `names` (compared without case, as
    /// the server compares setting and option names).
    pub fn names_any(&self, names: &[&str]) -> bool {
        self.name_any_case()
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
    let side_effects = functions.iter().any(|f| rules::has_side_effects(f));
    let (kind, read_only) = reading(&sig, uncertain, toks, side_effects);
    let words: Vec<String> = sig
        .iter()
        .filter(|s| s.kind == TokenKind::Word)
        .map(|s| s.upper().into_owned())
        .collect();
    let command = words.first().cloned().unwrap_or_default();
    Some(Statement {
        text,
        command,
        kind,
        words,
        functions,
        read_only,
    })
}

/// The `read_only` of [`summarize_statement`] alone; `None` if it has only whitespace and comments.
/// `sig` is scratch space (its allocation reused by the caller).
pub(super) fn statement_read_only<'a>(
    sql: &'a str,
    toks: &[Token],
    sig: &mut Vec<Sig<'a>>,
) -> Option<bool> {
    let uncertain = significant_into(sql, toks, sig);
    let sig = &*sig;
    if sig.is_empty() {
        return None;
    }
    let mut side_effects = false;
    // A function's last name part decides (see `rules::has_side_effects`); no name is built.
    each_function(sig, |parts| {
        side_effects |= rules::has_side_effects(sig[parts[0]].name_any_case().unwrap_or(""));
    });
    Some(reading(sig, uncertain, toks, side_effects).1)
}

/// The kind and the read-only reading of one statement, from its significant tokens, whether a name was
/// uncertain, all its tokens and whether it calls a known side-effect function.
fn reading(
    sig: &[Sig<'_>],
    uncertain: bool,
    toks: &[Token],
    side_effects: bool,
) -> (super::StatementKind, bool) {
    let (kind, read_only) = classify::classify(sig);
    let read_only =
        read_only && !uncertain && !side_effects && !toks.iter().any(|t| t.unterminated);
    (kind, read_only)
}

/// The significant tokens with their names and depths, and whether some name could not be resolved
/// with certainty (a `UESCAPE` the server would read differently from us).
pub(super) fn significant<'a>(sql: &'a str, toks: &[Token]) -> (Vec<Sig<'a>>, bool) {
    let mut sig = Vec::new();
    let uncertain = significant_into(sql, toks, &mut sig);
    (sig, uncertain)
}

/// [`significant`] into `sig` (cleared first), whose allocation a caller may reuse; returns whether a name
/// was uncertain.
pub(super) fn significant_into<'a>(sql: &'a str, toks: &[Token], sig: &mut Vec<Sig<'a>>) -> bool {
    sig.clear();
    sig.reserve(toks.len());
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
        let quoted = match t.kind {
            TokenKind::QuotedIdent { unicode: false } => {
                Some(names::quoted_name(text, false, '\\'))
            }
            _ => None,
        };
        sig.push(Sig {
            kind: t.kind,
            text,
            quoted,
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
        sig[i].quoted = Some(names::quoted_name(
            sig[i].text,
            true,
            escape.unwrap_or('\\'),
        ));
    }
    uncertain
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
    each_function(sig, |parts| {
        let names: Vec<Cow<'_, str>> = parts
            .iter()
            .rev()
            .map(|&k| sig[k].name().unwrap_or_default())
            .collect();
        out.push(names.join("."));
    });
    out
}

/// Calls `f` for each name (possibly dotted) followed by `(`, in order of the `(`, with the indices of its
/// parts' name tokens, last part first.
fn each_function(sig: &[Sig<'_>], mut f: impl FnMut(&[usize])) {
    let mut parts = Vec::new();
    for i in 1..sig.len() {
        if !sig[i].is_punct("(") {
            continue;
        }
        let Some(mut j) = name_ending_at(sig, i - 1) else {
            continue;
        };
        parts.clear();
        parts.push(j);
        while j >= 2 && sig[j - 1].is_punct(".") {
            let Some(k) = name_ending_at(sig, j - 2) else {
                break;
            };
            parts.push(k);
            j = k;
        }
        if parts.len() == 1 && sig[j].kind == TokenKind::Word && rules::is_not_function(sig[j].text)
        {
            continue;
        }
        f(&parts);
    }
}

/// The index of the name whose last token is `end`: its first token, which holds the name. A name is a
/// word, a quoted identifier, or `U&"..." UESCAPE '<c>'`, which the server reads as one identifier:
/// without this, `U&"!0073et_config" UESCAPE '!' (...)` would hide a call behind the string.
fn name_ending_at(sig: &[Sig<'_>], end: usize) -> Option<usize> {
    if matches!(sig[end].kind, TokenKind::String(_)) && end >= 2 && sig[end - 1].is_word("UESCAPE")
    {
        let ident = &sig[end - 2];
        if ident.kind == (TokenKind::QuotedIdent { unicode: true }) {
            return ident.name_any_case().map(|_| end - 2);
        }
    }
    sig[end].name_any_case().map(|_| end)
}
