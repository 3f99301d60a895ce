//! The kind and read-only reading of a statement from its significant tokens.
//!
//! The reading is a whitelist: only the commands listed here can be read-only, each under its own
//! conditions, and then only if no word anywhere in the statement could make it write (`INSERT`,
//! `UPDATE`, `DELETE`, `MERGE` in a `WITH`, `INTO` of `SELECT ... INTO`, `UPDATE`/`SHARE` of a locking
//! clause). That word check also catches some harmless statements (a column named `update`): the
//! conservative side is the right one to err on.

use super::StatementKind::{self, DataChange, Other, Query, SchemaChange, TransactionControl};
use super::rules;
use super::summary::Sig;

/// Words that, anywhere in a statement, may mean it writes or locks rows.
pub(super) const WRITING_WORDS: &[&str] = &["INSERT", "UPDATE", "DELETE", "MERGE", "INTO", "SHARE"];

/// Commands that read, whatever follows them, unless a word of [`WRITING_WORDS`] appears: what
/// [`command`] says of them, which [`super::quick`] relies on.
pub(super) const PLAIN_READS: &[&str] = &["SELECT", "VALUES", "TABLE"];

/// Data-modifying statements that may appear inside a `WITH` or `COPY (...)`.
const MODIFYING: &[&str] = &["INSERT", "UPDATE", "DELETE", "MERGE"];

/// Commands that start a query a `WITH` may lead into.
const WITH_MAIN: &[&str] = &[
    "SELECT", "VALUES", "TABLE", "INSERT", "UPDATE", "DELETE", "MERGE",
];

/// The statement's kind and whether it is read-only (before the checks on functions and malformed
/// tokens, which the caller adds).
pub(super) fn classify(sig: &[Sig<'_>]) -> (StatementKind, bool) {
    // Wrappers (EXPLAIN ANALYZE, PREPARE ... AS, DECLARE ... FOR) are peeled in a loop rather than by
    // recursion, so that a long chain of them cannot exhaust the stack.
    let mut pos = 0;
    let mut outer: Option<StatementKind> = None;
    // Found once, so that a chain of EXPLAINs does not rescan the statement for each.
    let last_analyze = sig.iter().rposition(is_analyze);
    let (kind, read_only) = loop {
        let Some(at) = leading_word(sig, pos) else {
            break (Other, false);
        };
        match &*sig[at].upper() {
            "EXPLAIN" => match explain_inner(sig, at, last_analyze.is_some_and(|a| a > at)) {
                // Without ANALYZE nothing is executed: the inner statement is only planned.
                None if outer.is_none() => return (Query, true),
                // No valid statement wraps an EXPLAIN.
                None => break (Other, false),
                Some(inner) => pos = inner,
            },
            "PREPARE" if !sig.get(at + 1).is_some_and(|s| s.is_word("TRANSACTION")) => {
                let Some(as_at) = find_word(sig, at, "AS") else {
                    break (Other, false);
                };
                outer.get_or_insert(Other);
                pos = as_at + 1;
            }
            "DECLARE" => {
                let Some(for_at) = find_word(sig, at, "FOR") else {
                    break (Query, false);
                };
                outer.get_or_insert(Query);
                pos = for_at + 1;
            }
            _ => break command(sig, at),
        }
    };
    let kind = match outer {
        Some(Query) if kind == DataChange => DataChange,
        Some(outer) => outer,
        None => kind,
    };
    let writes = sig.iter().any(|s| s.is_word_in(WRITING_WORDS));
    (kind, read_only && !writes)
}

/// The first word at or after `pos`, if only `(` precede it: every valid statement starts with a
/// keyword, possibly parenthesized (`(SELECT 1)`).
fn leading_word(sig: &[Sig<'_>], pos: usize) -> Option<usize> {
    let offset = sig.get(pos..)?.iter().position(|s| !s.is_punct("("))?;
    let at = pos + offset;
    (sig[at].kind == super::TokenKind::Word).then_some(at)
}

/// The first `word` after `at` at the same parenthesis depth as `at`.
fn find_word(sig: &[Sig<'_>], at: usize, word: &str) -> Option<usize> {
    let depth = sig[at].depth;
    (at + 1..sig.len()).find(|&i| sig[i].depth == depth && sig[i].is_word(word))
}

/// Whether the statement has any word of `words`.
fn has_any(sig: &[Sig<'_>], words: &[&str]) -> bool {
    sig.iter().any(|s| s.is_word_in(words))
}

/// Whether a token is an ANALYZE: a word, or a quoted option name (`EXPLAIN ("analyze") ...` executes).
fn is_analyze(s: &Sig<'_>) -> bool {
    s.is_word_in(&["ANALYZE", "ANALYSE"]) || s.names_any(&["analyze", "analyse"])
}

/// For `EXPLAIN` at `at`: `None` if it does not execute its statement, else where the explained
/// statement starts. `analyze` says whether an ANALYZE follows anywhere in the statement: wherever it
/// is and whatever value it is given, it counts.
fn explain_inner(sig: &[Sig<'_>], at: usize, analyze: bool) -> Option<usize> {
    if !analyze {
        return None;
    }
    let mut i = at + 1;
    let options = sig.get(i).is_some_and(|s| s.is_punct("("))
        && !sig.get(i + 1).is_some_and(|s| {
            s.is_punct("(") || s.is_word_in(&["SELECT", "VALUES", "TABLE", "WITH"])
        });
    if options {
        let depth = sig[i].depth;
        // Past the option list's `)`; with none, past the end, where no statement is found.
        i = (i + 1..sig.len())
            .find(|&j| sig[j].depth == depth && sig[j].is_punct(")"))
            .map_or(sig.len(), |j| j + 1);
    } else {
        while sig
            .get(i)
            .is_some_and(|s| s.is_word_in(&["ANALYZE", "ANALYSE", "VERBOSE"]))
        {
            i += 1;
        }
    }
    Some(i)
}

/// A statement that is not a wrapper, by its command word at `at`.
fn command(sig: &[Sig<'_>], at: usize) -> (StatementKind, bool) {
    match &*sig[at].upper() {
        "SELECT" | "VALUES" | "TABLE" => (
            if has_any(sig, &["INTO"]) {
                DataChange
            } else {
                Query
            },
            true,
        ),
        "WITH" => with(sig, at),
        "SHOW" | "FETCH" | "MOVE" | "CLOSE" | "LISTEN" | "UNLISTEN" => (Query, true),
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "TRUNCATE" | "REFRESH" | "LOCK" => {
            (DataChange, false)
        }
        "COPY" => copy(sig, at),
        "CREATE" => (create_kind(sig, at), false),
        "ALTER" | "DROP" | "GRANT" | "REVOKE" | "COMMENT" | "SECURITY" | "REINDEX" | "CLUSTER"
        | "IMPORT" | "REASSIGN" => (SchemaChange, false),
        "BEGIN" | "START" => (TransactionControl, !has_any(sig, &["WRITE"])),
        // COMMIT PREPARED / ROLLBACK PREPARED finish a transaction some other session prepared.
        "COMMIT" | "END" | "ROLLBACK" | "ABORT" => {
            (TransactionControl, !has_any(sig, &["PREPARED"]))
        }
        "SAVEPOINT" | "RELEASE" => (TransactionControl, true),
        // PREPARE TRANSACTION (the other PREPARE is a wrapper): persists the transaction and its locks.
        "PREPARE" => (TransactionControl, false),
        "SET" => rules::set(sig, at),
        "RESET" => rules::reset(sig, at),
        "DISCARD" => rules::discard(sig, at),
        // EXECUTE runs a statement checked when it was prepared.
        "DEALLOCATE" | "EXECUTE" => (Other, true),
        _ => (Other, false),
    }
}

/// `WITH ... <main statement>`: the kind of the main statement, a data change if a data-modifying
/// statement (or `INTO`) appears anywhere.
fn with(sig: &[Sig<'_>], at: usize) -> (StatementKind, bool) {
    let depth = sig[at].depth;
    let main = (at + 1..sig.len()).find(|&i| sig[i].depth == depth && sig[i].is_word_in(WITH_MAIN));
    let Some(main) = main else {
        return (Other, false);
    };
    if sig[main].is_word_in(MODIFYING) || has_any(sig, MODIFYING) || has_any(sig, &["INTO"]) {
        (DataChange, false)
    } else {
        (Query, true)
    }
}

/// `COPY ... FROM` writes; `COPY ... TO STDOUT` reads; `COPY ... TO` a file or program writes a file.
fn copy(sig: &[Sig<'_>], at: usize) -> (StatementKind, bool) {
    let depth = sig[at].depth;
    let direction =
        (at + 1..sig.len()).find(|&i| sig[i].depth == depth && sig[i].is_word_in(&["FROM", "TO"]));
    let modifying = has_any(sig, MODIFYING);
    match direction {
        Some(i) if sig[i].is_word("TO") && sig.get(i + 1).is_some_and(|s| s.is_word("STDOUT")) => {
            (if modifying { DataChange } else { Query }, true)
        }
        Some(i) if sig[i].is_word("TO") => (if modifying { DataChange } else { Other }, false),
        Some(_) => (DataChange, false),
        None => (Other, false),
    }
}

/// `CREATE [TEMP|UNLOGGED|...] TABLE ... AS` fills a table: a data change; other CREATEs change schema.
fn create_kind(sig: &[Sig<'_>], at: usize) -> StatementKind {
    let mut i = at + 1;
    while sig
        .get(i)
        .is_some_and(|s| s.is_word_in(&["GLOBAL", "LOCAL", "TEMP", "TEMPORARY", "UNLOGGED"]))
    {
        i += 1;
    }
    if sig.get(i).is_some_and(|s| s.is_word("TABLE")) && find_word(sig, at, "AS").is_some() {
        DataChange
    } else {
        SchemaChange
    }
}
