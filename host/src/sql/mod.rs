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
mod quick;
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
    if quick::plainly_read_only(sql, standard_strings) {
        debug_assert!(
            full_read_only(sql, standard_strings),
            "the quick reading calls {sql:?} read-only and the full one does not"
        );
        return true;
    }
    full_read_only(sql, standard_strings)
}

/// [`read_only_with`] without the quick reading of plain statements.
fn full_read_only(sql: &str, standard_strings: bool) -> bool {
    SCRATCH.with_borrow_mut(|scratch| {
        let Scratch {
            tokens,
            pieces,
            sig,
        } = scratch;
        lexer::tokens_into(sql, standard_strings, tokens);
        let diverge = divergence(sql, tokens, standard_strings);
        split_into(sql, tokens, pieces);
        let mut sig = relend(std::mem::take(sig));
        let mut ambiguous = false;
        let mut all = true;
        for piece in pieces.iter() {
            let toks = &tokens[piece.start..piece.end];
            ambiguous |= toks.iter().any(|t| t.ambiguous || t.end > diverge);
            // `None`: only whitespace and comments, which the server ignores.
            if let Some(read_only) = summary::statement_read_only(sql, toks, &mut sig)
                && (!read_only || ambiguous || piece.inner_semicolon)
            {
                all = false;
                break;
            }
        }
        scratch.sig = relend(sig);
        scratch.trim();
        all
    })
}

/// The vectors [`read_only_with`] fills for every query a read-only policy checks, kept per thread so
/// that a check allocates nothing once they have grown to the queries' size (three allocations a query
/// otherwise, a third of the reading's time for a short one).
#[derive(Default)]
struct Scratch {
    tokens: Vec<Token>,
    pieces: Vec<Piece>,
    /// Empty between uses: its elements borrow the query (see [`relend`]).
    sig: Vec<summary::Sig<'static>>,
}

impl Scratch {
    /// Past this many tokens (a long query's), the space is given back rather than kept.
    const KEEP: usize = 4096;

    fn trim(&mut self) {
        self.tokens.clear();
        self.tokens.shrink_to(Self::KEEP);
        self.pieces.clear();
        self.pieces.shrink_to(Self::KEEP);
        self.sig.shrink_to(Self::KEEP);
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// An emptied vector of significant tokens, retyped for another query's lifetime. The standard library
/// collects a `map` over a vector's `into_iter` in place when the element layouts match (they do: only
/// the lifetime differs), so the allocation is kept; were it not, this would only allocate anew.
fn relend<'b>(mut sig: Vec<summary::Sig<'_>>) -> Vec<summary::Sig<'b>> {
    sig.clear();
    sig.into_iter()
        .map(|_| unreachable!("the vector was emptied"))
        .collect()
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
    split_into(sql, toks, &mut pieces);
    pieces
}

/// [`split`] into `pieces` (cleared first), whose allocation a caller may reuse.
fn split_into(sql: &str, toks: &[Token], pieces: &mut Vec<Piece>) {
    pieces.clear();
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
}

/// The randomized tests' generator (xorshift64, seeded, so every run draws the same cases): the closure
/// returns a number below its argument.
#[cfg(test)]
fn test_rng(mut state: u64) -> impl FnMut(usize) -> usize {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    }
}

#[cfg(test)]
mod scratch_tests {
    use super::*;

    #[test]
    fn a_relent_vector_keeps_its_allocation() {
        let sql = String::from("SELECT a FROM t");
        let toks = tokens(&sql);
        let mut sig = Vec::new();
        summary::significant_into(&sql, &toks, &mut sig);
        assert_eq!(sig.len(), 4);
        let capacity = sig.capacity();
        let kept: Vec<summary::Sig<'static>> = relend(sig);
        assert!(kept.is_empty());
        assert_eq!(kept.capacity(), capacity, "collected in place");
    }

    #[test]
    fn readings_in_a_row_do_not_leak_into_each_other() {
        // The scratch vectors of one reading must not carry into the next: a long write, then a short
        // read, then a statement list whose second part writes.
        let long = format!("SELECT {} FROM t; DELETE FROM t", "a, ".repeat(3000) + "b");
        assert!(!read_only_with(&long, true));
        assert!(read_only_with("SELECT 1", true));
        assert!(!read_only_with("SELECT 1; UPDATE t SET a = 1", true));
        assert!(read_only_with("SELECT 1; SELECT 2", true));
        assert!(read_only_with("", true));
        SCRATCH.with_borrow(|s| {
            assert!(s.tokens.is_empty() && s.pieces.is_empty() && s.sig.is_empty());
            assert!(s.tokens.capacity() <= Scratch::KEEP);
        });
    }
}
