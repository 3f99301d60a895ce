//! A one-pass reading for the queries a read-only policy sees most: plain `SELECT`s.
//!
//! [`super::read_only_with`] asks this first. It walks the lexer's tokens once, keeping no list, and
//! answers `true` only for statements whose full reading is plainly read-only: each statement leads with
//! `SELECT`, `VALUES` or `TABLE` (after any opening parentheses), holds no word that could write or lock
//! ([`classify::WRITING_WORDS`]), calls no known side-effect function, and has none of the tokens whose
//! reading takes more care (quoted identifiers, strings with a backslash, unterminated or ambiguous
//! tokens, a `;` inside parentheses). Anything else gets `false`, which means only "ask the full
//! reading": this never decides that a query writes. The same lexer gives both readings their tokens,
//! so they cannot disagree about where a string or comment ends; every test of the read-only reading
//! checks that the two agree, and debug builds check it on every query.

use super::classify;
use super::lexer::{self, TokenKind};
use super::rules;

/// Whether every statement of `sql` is read-only by a reading that only recognises the plain cases;
/// `false` when it cannot tell.
pub(super) fn plainly_read_only(sql: &str, standard_strings: bool) -> bool {
    let mut depth = 0usize;
    // Whether the statement's leading word has been read (it is one of `classify::PLAIN_READS`).
    let mut led = false;
    // The statement's previous significant token: a word before `(` is a function's name.
    let mut prev: Option<lexer::Token> = None;
    for t in lexer::each_nonspace_token(sql, standard_strings) {
        if t.unterminated || t.ambiguous {
            return false;
        }
        let text = t.text(sql);
        match t.kind {
            TokenKind::Comment => continue,
            TokenKind::Word => {
                if !led && !text_in(text, classify::PLAIN_READS) {
                    return false;
                }
                led = true;
                if text_in(text, classify::WRITING_WORDS) {
                    return false;
                }
            }
            TokenKind::Punct => match text {
                "(" => {
                    depth += 1;
                    if let Some(name) = prev.filter(|p| p.kind == TokenKind::Word)
                        && rules::has_side_effects(name.text(sql))
                    {
                        return false;
                    }
                }
                ";" if depth > 0 => return false,
                // Only `(` can come before the leading word: a statement of nothing else has none.
                ";" if prev.is_some() && !led => return false,
                ";" => {
                    led = false;
                    prev = None;
                    continue;
                }
                _ if !led => return false,
                ")" => depth = depth.saturating_sub(1),
                _ => {}
            },
            // A backslash in a string may lex differently under the other `standard_conforming_strings`.
            TokenKind::String(_) if led && !text.contains('\\') => {}
            TokenKind::Number | TokenKind::Param | TokenKind::Operator if led => {}
            _ => return false,
        }
        prev = Some(t);
    }
    led || prev.is_none()
}

/// Whether `text` is one of `words` (upper-case), ignoring ASCII case as keywords do.
fn text_in(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::plainly_read_only;

    #[test]
    fn plain_selects_are_recognised() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
            "select a, b from t where c = $1 and d = 'x' order by a limit 10",
            "(SELECT 1) UNION (SELECT 2); VALUES (1), (2); TABLE t;",
            "SELECT count(*), now() FROM t -- a comment\n WHERE x IN (1, 2)",
            "  ;; SELECT 1 /* c */ ;",
            "",
        ] {
            assert!(plainly_read_only(sql, true), "{sql:?}");
            assert!(super::super::full_read_only(sql, true), "{sql:?}");
        }
    }

    #[test]
    fn everything_else_is_left_to_the_full_reading() {
        for sql in [
            // Writes, and what the full reading must look at.
            "INSERT INTO t VALUES (1)",
            "SELECT a INTO t2 FROM t",
            "SELECT * FROM t FOR UPDATE",
            "SELECT nextval('s')",
            "SELECT pg_catalog.setval('s', 1)",
            "SELECT 1; DELETE FROM t",
            // Read-only, but not plainly so.
            "SHOW work_mem",
            "EXPLAIN SELECT 1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "SELECT \"a\" FROM t",
            "SELECT 'a\\b'",
            "SELECT 'unterminated",
            "SELECT 1 /* unterminated",
            "SELECT (1; 2)",
            "1",
            ") SELECT 1",
            "(",
            "((); SELECT 1",
        ] {
            assert!(!plainly_read_only(sql, true), "{sql:?}");
            assert!(!plainly_read_only(sql, false), "{sql:?}");
        }
    }
}
