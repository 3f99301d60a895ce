//! pgwarden's SQL lexer and per-statement lexical summary.
//!
//! Every query goes to the policy plugins together with a summary of each of its statements (the
//! `statement` record of the plugin ABI), so that plugins in any language need no SQL lexer. The
//! read-only policy trusts [`Statement::read_only`] to block every way a client could write, so the
//! reading here is conservative: a statement is read-only only when pgwarden can tell, from its tokens
//! alone, that executing it changes no data or schema and cannot re-enable writing for later statements.
//! Anything unrecognised, malformed or ambiguous is not read-only.
//!
//! What a lexical reading cannot see: a user-defined function or view that writes (only a list of known
//! built-in side-effect functions is recognised). The one lexing setting, `standard_conforming_strings`,
//! is the caller's to pass (pgwarden tracks each client's value); since a client could change it in a
//! statement the server has not run yet, any query that would lex differently under the other value is
//! not read-only from the first token where the two readings part, and setting it is never read-only.

mod classify;
mod lexer;
mod names;
mod rules;
pub mod session;
mod summary;
#[cfg(test)]
mod tests;

pub use lexer::{StringKind, Token, TokenKind, tokens, tokens_with};

/// What kind of statement it is, by pgwarden's lexical reading (the ABI's `statement-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// SELECT, VALUES, TABLE, SHOW, EXPLAIN without ANALYZE, FETCH, MOVE, CLOSE, DECLARE, LISTEN, ...
    Query,
    /// INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY ... FROM, SELECT ... INTO, CREATE TABLE ... AS, ...
    DataChange,
    /// CREATE, ALTER, DROP, GRANT, REVOKE, COMMENT, SECURITY LABEL, REINDEX, CLUSTER, IMPORT, ...
    SchemaChange,
    /// BEGIN, START TRANSACTION, COMMIT, ROLLBACK, SAVEPOINT, SET TRANSACTION, ...
    TransactionControl,
    /// SET, RESET, DISCARD.
    Session,
    /// DO, CALL, PREPARE, EXECUTE, VACUUM, ANALYZE, NOTIFY, LOAD, CHECKPOINT, and anything unknown.
    Other,
}

/// The lexical summary of one statement (the ABI's `statement` record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement's own text, without the separating `;` and surrounding whitespace.
    pub text: String,
    /// The first word, upper-cased; "" if the statement has no unquoted word.
    pub command: String,
    /// What kind of statement it is.
    pub kind: StatementKind,
    /// Every unquoted word (keywords and identifiers) in order, upper-cased (ASCII letters only).
    pub words: Vec<String>,
    /// Every name followed by `(`, schema-qualified as written and joined with `.`: unquoted parts
    /// lower-cased, quoted parts verbatim (`U&` escapes decoded). A lone reserved keyword (`IN (`,
    /// `AS (`, `ANY (`) is not a function and is left out.
    pub functions: Vec<String>,
    /// Whether executing it can neither change data or schema nor re-enable writing: conservative.
    pub read_only: bool,
}

/// Splits `sql` at top-level semicolons and summarizes each statement, for a session with
/// `standard_conforming_strings` on (PostgreSQL's default). See [`summarize_with`].
pub fn summarize(sql: &str) -> Vec<Statement> {
    summarize_with(sql, true)
}

/// Splits `sql` at top-level semicolons and summarizes each statement, lexing plain strings as a session
/// whose `standard_conforming_strings` is `standard_strings` would. Statements with nothing but
/// whitespace and comments are dropped, as the server ignores them.
///
/// A semicolon inside parentheses does not split (only `CREATE RULE` has such statements), but a
/// statement holding one is not read-only. Once a token is ambiguous (see [`Token::ambiguous`]), or the
/// input lexes differently under the other `standard_conforming_strings` value (a plain string with a
/// backslash before a quote), the server may split the rest of the input differently, so that statement
/// and all after it are not read-only.
pub fn summarize_with(sql: &str, standard_strings: bool) -> Vec<Statement> {
    let toks = tokens_with(sql, standard_strings);
    let diverge = divergence(sql, &toks, standard_strings);
    let mut out = Vec::new();
    let mut ambiguous = false;
    for piece in split(sql, &toks) {
        let toks = &toks[piece.start..piece.end];
        ambiguous |= toks.iter().any(|t| t.ambiguous || t.end > diverge);
        if let Some(mut statement) = summary::summarize_statement(sql, toks) {
            if ambiguous || piece.inner_semicolon {
                statement.read_only = false;
            }
            out.push(statement);
        }
    }
    out
}

/// Whether every statement of `sql` is read-only: what `summarize_with(sql, standard_strings)` says of
/// each (true when there is no statement), without building the statements' text, words and command.
/// The read-only policy asks only this for nearly every query.
pub fn read_only_with(sql: &str, standard_strings: bool) -> bool {
    let toks = tokens_with(sql, standard_strings);
    let diverge = divergence(sql, &toks, standard_strings);
    let mut ambiguous = false;
    for piece in split(sql, &toks) {
        let toks = &toks[piece.start..piece.end];
        ambiguous |= toks.iter().any(|t| t.ambiguous || t.end > diverge);
        // `None`: only whitespace and comments, which the server ignores.
        if let Some(read_only) = summary::statement_read_only(sql, toks)
            && (!read_only || ambiguous || piece.inner_semicolon)
        {
            return false;
        }
    }
    true
}

/// The byte offset from which `toks` (lexed with `standard_strings`) and a lexing with the other value
/// of `standard_conforming_strings` disagree; `usize::MAX` when they agree. Only a plain string holding a
/// backslash can lex differently, so most queries are lexed once.
fn divergence(sql: &str, toks: &[Token], standard_strings: bool) -> usize {
    let sensitive = toks.iter().any(|t| {
        matches!(
            t.kind,
            TokenKind::String(StringKind::Standard | StringKind::National)
        ) && t.text(sql).contains('\\')
    });
    if !sensitive {
        return usize::MAX;
    }
    let other = tokens_with(sql, !standard_strings);
    toks.iter()
        .zip(&other)
        .find(|(a, b)| (a.kind, a.start, a.end) != (b.kind, b.start, b.end))
        .map_or(usize::MAX, |(a, _)| a.start)
}

/// One statement's tokens: `start..end` in the token list.
struct Piece {
    start: usize,
    end: usize,
    /// The piece holds a `;` inside parentheses.
    inner_semicolon: bool,
}

/// Splits tokens at semicolons outside parentheses. An unmatched `)` does not lower the depth below
/// zero, so it cannot hide the semicolons after it.
fn split(sql: &str, toks: &[Token]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut inner_semicolon = false;
    for (i, t) in toks.iter().enumerate() {
        if t.kind != TokenKind::Punct {
            continue;
        }
        match t.text(sql) {
            "(" => depth += 1,
            ")" => depth = depth.saturating_sub(1),
            ";" if depth > 0 => inner_semicolon = true,
            ";" => {
                pieces.push(Piece {
                    start,
                    end: i,
                    inner_semicolon,
                });
                start = i + 1;
                inner_semicolon = false;
            }
            _ => {}
        }
    }
    pieces.push(Piece {
        start,
        end: toks.len(),
        inner_semicolon,
    });
    pieces
}
