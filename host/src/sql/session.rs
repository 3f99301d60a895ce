//! What a client's SQL does to its server session beyond the transaction: settings it changes (to be
//! carried to the next server in transaction pooling) and state that cannot be carried at all (to pin the
//! client to its server, or refuse).
//!
//! A lexical reading, like the rest of this module: it finds the statements that may have such an effect,
//! and the pooler then asks the server what actually holds (a SET in a transaction that rolled back
//! changes nothing; a LISTEN followed by UNLISTEN leaves nothing). Effects hidden in function bodies
//! (`DO`, a function calling set_config) are not seen.

use super::lexer::{StringKind, TokenKind, tokens_with};
use super::summary::{Sig, significant};
use super::{names, split};

/// State a server session can hold that pgwarden cannot recreate on another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sticky {
    /// LISTEN: notifications go to the session that listens.
    Listen,
    /// A session-level advisory lock (`pg_advisory_lock`, `pg_try_advisory_lock`, and `_shared`).
    AdvisoryLock,
    /// A temporary table, view or sequence.
    TempObject,
    /// A cursor declared WITH HOLD (it outlives its transaction).
    HoldCursor,
    /// SET ROLE / SET SESSION AUTHORIZATION (or set_config of either).
    Role,
    /// An SQL-level PREPARE.
    SqlPrepare,
    /// set_config of a setting named by an expression: which one is unknown.
    UnknownSetting,
}

impl Sticky {
    /// The statement that creates it, for error messages.
    pub fn what(self) -> &'static str {
        match self {
            Sticky::Listen => "LISTEN",
            Sticky::AdvisoryLock => "session-level advisory locks",
            Sticky::TempObject => "temporary tables",
            Sticky::HoldCursor => "cursors WITH HOLD",
            Sticky::Role => "SET ROLE and SET SESSION AUTHORIZATION",
            Sticky::SqlPrepare => "SQL PREPARE",
            Sticky::UnknownSetting => "set_config with a computed setting name",
        }
    }
}

/// The session effects of one query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Settings whose session value the SQL may change, as the server names them (lower-cased unless
    /// quoted): SET and RESET without LOCAL, set_config, SET TIME ZONE, SET SESSION CHARACTERISTICS.
    pub settings: Vec<String>,
    /// RESET ALL: every setting back to its default.
    pub reset_all: bool,
    /// The first state it may create that cannot move between servers.
    pub sticky: Option<Sticky>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && !self.reset_all && self.sticky.is_none()
    }

    /// Adds `other`'s effects (a later statement of the same link).
    pub fn merge(&mut self, other: &Effects) {
        for name in &other.settings {
            self.setting(name);
        }
        self.reset_all |= other.reset_all;
        if let Some(s) = other.sticky {
            self.sticky(s);
        }
    }

    fn setting(&mut self, name: &str) {
        if !self.settings.iter().any(|s| s == name) {
            self.settings.push(name.to_owned());
        }
    }

    fn sticky(&mut self, what: Sticky) {
        self.sticky.get_or_insert(what);
    }
}

/// Words whose absence proves a query has no session effect, checked before any lexing (case-insensitive
/// substrings: `set` covers SET, RESET and set_config).
const HINTS: [&[u8]; 6] = [b"set", b"listen", b"lock", b"temp", b"hold", b"prepare"];

/// For each byte, the hints that start with it, either case: bit `i` stands for `HINTS[i]`.
static HINT_STARTS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < HINTS.len() {
        let first = HINTS[i][0];
        table[first as usize] |= 1 << i;
        table[first.to_ascii_uppercase() as usize] |= 1 << i;
        i += 1;
    }
    table
};

/// Whether SQL text (or any message holding it) may have session effects; most queries are ruled out by
/// this one pass alone. It looks for the hints' first two letters, side by side, sixteen bytes at a time:
/// per block, one bit mask per letter (a comparison the compiler turns into vector instructions), shifted
/// and combined into the places where a hint's first two letters stand. Only there are the whole hints
/// compared, which a plain SELECT rarely asks for (`SELECT` itself is one place). The byte-by-byte scan
/// this replaced looked every byte up in a table of first letters and compared at each of the many bytes
/// where one of five common letters stood: ~1,000 instructions for pgbench's 55-byte SELECT.
pub fn may_have_effects(bytes: &[u8]) -> bool {
    // Blocks overlap by a byte, so a pair that straddles two blocks is whole in the second.
    const STEP: usize = BLOCK - 1;
    let mut start = 0;
    while start + 1 < bytes.len() {
        let block = match bytes[start..].first_chunk::<BLOCK>() {
            Some(whole) => *whole,
            None => {
                // The tail, padded with NULs, which are no letter.
                let mut tail = [0; BLOCK];
                tail[..bytes.len() - start].copy_from_slice(&bytes[start..]);
                tail
            }
        };
        // The last byte's pair is the next block's first.
        let mut at_pairs = hint_pairs(&block) & !(1 << STEP);
        while at_pairs != 0 {
            let at = start + at_pairs.trailing_zeros() as usize;
            at_pairs &= at_pairs - 1;
            if hint_at(bytes, at) {
                return true;
            }
        }
        start += STEP;
    }
    false
}

/// Bytes looked at together by [`may_have_effects`].
const BLOCK: usize = 16;

/// Bit `i` set where `block[i]` and `block[i + 1]` are some hint's first two letters, in either case: with
/// SSE2 (every x86-64 has it), one compare of all sixteen bytes per letter.
#[cfg(target_arch = "x86_64")]
#[allow(
    unsafe_code,
    reason = "SSE2 is part of x86-64: the intrinsics need no check, only an unsafe call"
)]
fn hint_pairs(block: &[u8; BLOCK]) -> u16 {
    #[target_feature(enable = "sse2")]
    fn with_sse2(block: &[u8; BLOCK]) -> u16 {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
            _mm_set1_epi8,
        };
        // SAFETY: `block` is 16 readable bytes, one `__m128i`, which this load needs no alignment for.
        let bytes = unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>()) };
        // ASCII letters differ from their upper case in bit 5 only; no other byte turns into a lower-case
        // letter.
        let lower = _mm_or_si128(bytes, _mm_set1_epi8(0x20));
        // The mask's low 16 bits are the bytes' top bits: set where the byte equals the letter.
        let places = |letter: u8| {
            _mm_movemask_epi8(_mm_cmpeq_epi8(lower, _mm_set1_epi8(letter as i8))) as u16
        };
        HINTS.iter().fold(0, |pairs, hint| {
            pairs | (places(hint[0]) & (places(hint[1]) >> 1))
        })
    }
    const _: () = assert!(cfg!(target_feature = "sse2"), "x86-64 without SSE2");
    // SAFETY: the target has SSE2 (checked above at compile time), all `with_sse2` asks of its caller.
    unsafe { with_sse2(block) }
}

/// [`hint_pairs`] byte by byte, where there is no SSE2 (and in tests, against the SSE2 one).
#[cfg(not(target_arch = "x86_64"))]
fn hint_pairs(block: &[u8; BLOCK]) -> u16 {
    hint_pairs_bytewise(block)
}

#[cfg(any(not(target_arch = "x86_64"), test))]
fn hint_pairs_bytewise(block: &[u8; BLOCK]) -> u16 {
    let lower = block.map(|b| b | 0x20);
    let places = |letter: u8| {
        lower
            .iter()
            .enumerate()
            .fold(0u16, |mask, (i, &b)| mask | (u16::from(b == letter) << i))
    };
    HINTS.iter().fold(0, |pairs, hint| {
        pairs | (places(hint[0]) & (places(hint[1]) >> 1))
    })
}

/// Whether a hint starts at `at`.
fn hint_at(bytes: &[u8], at: usize) -> bool {
    let mut starts = HINT_STARTS[usize::from(bytes[at])];
    while starts != 0 {
        let hint = HINTS[starts.trailing_zeros() as usize];
        starts &= starts - 1;
        if bytes
            .get(at..at + hint.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(hint))
        {
            return true;
        }
    }
    false
}

/// The session effects of `sql`, lexed as a session with `standard_conforming_strings` =
/// `standard_strings` would.
pub fn effects(sql: &str, standard_strings: bool) -> Effects {
    let mut out = Effects::default();
    if !may_have_effects(sql.as_bytes()) {
        return out;
    }
    let toks = tokens_with(sql, standard_strings);
    for piece in split(sql, &toks) {
        let (sig, _) = significant(sql, &toks[piece.start..piece.end]);
        statement(&sig, &mut out);
    }
    out
}

fn statement(sig: &[Sig<'_>], out: &mut Effects) {
    let Some(first) = sig.first() else {
        return;
    };
    let word = |i: usize, w: &str| sig.get(i).is_some_and(|s| s.is_word(w));
    match &*first.upper() {
        "SET" => set(sig, 1, out),
        "RESET" => {
            if word(1, "ALL") {
                out.reset_all = true;
            } else if word(1, "ROLE") || (word(1, "SESSION") && word(2, "AUTHORIZATION")) {
                // Back to the login role: no state left to carry (the server is asked anyway).
            } else if word(1, "TIME") && word(2, "ZONE") {
                out.setting("timezone");
            } else if let Some(name) = setting_name(sig, 1) {
                out.setting(&name);
            }
        }
        "LISTEN" => out.sticky(Sticky::Listen),
        "PREPARE" => out.sticky(Sticky::SqlPrepare),
        "DECLARE"
            if sig
                .windows(2)
                .any(|w| w[0].is_word("WITH") && w[1].is_word("HOLD")) =>
        {
            out.sticky(Sticky::HoldCursor);
        }
        "CREATE" => {
            // CREATE [GLOBAL | LOCAL] {TEMP | TEMPORARY} {TABLE | VIEW | SEQUENCE} ...; CREATE [OR REPLACE]
            // TEMP VIEW ...
            let temp = sig[1..]
                .iter()
                .find(|s| !s.is_word_in(&["OR", "REPLACE", "GLOBAL", "LOCAL"]))
                .is_some_and(|s| s.is_word_in(&["TEMP", "TEMPORARY"]));
            if temp {
                out.sticky(Sticky::TempObject);
            }
        }
        _ => {}
    }
    // SELECT ... INTO TEMP t, and functions anywhere in any statement.
    for (i, s) in sig.iter().enumerate() {
        if s.is_word("INTO")
            && sig
                .get(i + 1)
                .is_some_and(|n| n.is_word_in(&["TEMP", "TEMPORARY"]))
        {
            out.sticky(Sticky::TempObject);
        }
        let called = sig.get(i + 1).is_some_and(|n| n.is_punct("("));
        if !called || s.kind != TokenKind::Word {
            continue;
        }
        match s.name().map(|n| n.to_ascii_lowercase()).as_deref() {
            Some(
                "pg_advisory_lock"
                | "pg_advisory_lock_shared"
                | "pg_try_advisory_lock"
                | "pg_try_advisory_lock_shared",
            ) => out.sticky(Sticky::AdvisoryLock),
            Some("set_config") => match sig.get(i + 2).and_then(string_literal) {
                Some(name) => {
                    let name = name.to_ascii_lowercase();
                    if name == "role" || name == "session_authorization" {
                        out.sticky(Sticky::Role);
                    } else {
                        out.setting(&name);
                    }
                }
                None => out.sticky(Sticky::UnknownSetting),
            },
            _ => {}
        }
    }
}

/// `SET [SESSION | LOCAL] ...` from `at`.
fn set(sig: &[Sig<'_>], mut at: usize, out: &mut Effects) {
    let word = |i: usize, w: &str| sig.get(i).is_some_and(|s| s.is_word(w));
    if word(at, "LOCAL") || word(at, "TRANSACTION") || word(at, "CONSTRAINTS") {
        // Gone at the end of the transaction.
        return;
    }
    if word(at, "SESSION") {
        if word(at + 1, "AUTHORIZATION") {
            return out.sticky(Sticky::Role);
        }
        if word(at + 1, "CHARACTERISTICS") {
            for name in [
                "default_transaction_isolation",
                "default_transaction_read_only",
                "default_transaction_deferrable",
            ] {
                out.setting(name);
            }
            return;
        }
        at += 1;
    }
    if word(at, "ROLE") {
        return out.sticky(Sticky::Role);
    }
    if word(at, "TIME") && word(at + 1, "ZONE") {
        return out.setting("timezone");
    }
    if word(at, "NAMES") {
        return out.setting("client_encoding");
    }
    if word(at, "XML") && word(at + 1, "OPTION") {
        return out.setting("xmloption");
    }
    if let Some(name) = setting_name(sig, at) {
        if name == "role" || name == "session_authorization" {
            out.sticky(Sticky::Role);
        } else {
            out.setting(&name);
        }
    }
}

/// A setting name at `at`: `name` or `prefix.name`, as the server folds it.
fn setting_name(sig: &[Sig<'_>], at: usize) -> Option<String> {
    let mut name = sig.get(at)?.name()?.into_owned();
    if sig.get(at + 1).is_some_and(|s| s.is_punct("."))
        && let Some(rest) = sig.get(at + 2).and_then(Sig::name)
    {
        name.push('.');
        name.push_str(&rest);
    }
    Some(name)
}

/// The value of a plain string literal (`'search_path'`); `None` for anything else.
fn string_literal(s: &Sig<'_>) -> Option<String> {
    (s.kind == TokenKind::String(StringKind::Standard)).then(|| names::string_value(s.text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sql: &str) -> Vec<String> {
        effects(sql, true).settings
    }

    fn sticky(sql: &str) -> Option<Sticky> {
        effects(sql, true).sticky
    }

    #[test]
    fn session_settings_are_found_and_local_ones_are_not() {
        assert_eq!(settings("SET search_path TO app, public"), ["search_path"]);
        assert_eq!(
            settings("set SESSION statement_timeout = 5000"),
            ["statement_timeout"]
        );
        assert_eq!(settings("SET \"Search_Path\" = x"), ["Search_Path"]);
        assert_eq!(settings("SET myapp.tenant = '42'"), ["myapp.tenant"]);
        assert_eq!(settings("SET TIME ZONE 'UTC'"), ["timezone"]);
        assert_eq!(
            settings("RESET work_mem; RESET TIME ZONE"),
            ["work_mem", "timezone"]
        );
        assert_eq!(
            settings("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
            [
                "default_transaction_isolation",
                "default_transaction_read_only",
                "default_transaction_deferrable"
            ]
        );
        assert_eq!(
            settings("select set_config('Search_Path', 'x', false), 1"),
            ["search_path"]
        );
        for local in [
            "SET LOCAL search_path = x",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "UPDATE t SET a = 1",
            "select 'SET search_path = x'",
            "-- SET search_path = x\nselect 1",
        ] {
            assert!(effects(local, true).is_empty(), "{local}");
        }
        assert!(effects("RESET ALL", true).reset_all);
    }

    #[test]
    fn state_that_cannot_move_is_found() {
        for (sql, want) in [
            ("LISTEN jobs", Sticky::Listen),
            ("select pg_advisory_lock(42)", Sticky::AdvisoryLock),
            (
                "SELECT pg_try_advisory_lock_shared(1, 2)",
                Sticky::AdvisoryLock,
            ),
            ("CREATE TEMP TABLE t (a int)", Sticky::TempObject),
            (
                "create global temporary table t (a int)",
                Sticky::TempObject,
            ),
            (
                "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
                Sticky::TempObject,
            ),
            ("SELECT 1 INTO TEMP t", Sticky::TempObject),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
                Sticky::HoldCursor,
            ),
            ("SET ROLE admin", Sticky::Role),
            ("SET SESSION AUTHORIZATION bob", Sticky::Role),
            ("select set_config('role', 'x', false)", Sticky::Role),
            ("PREPARE q AS SELECT 1", Sticky::SqlPrepare),
            (
                "select set_config(current_user || '.x', 'y', false)",
                Sticky::UnknownSetting,
            ),
        ] {
            assert_eq!(sticky(sql), Some(want), "{sql}");
        }
        for movable in [
            "select pg_advisory_xact_lock(1)",
            "DECLARE c CURSOR FOR SELECT 1",
            "CREATE TABLE temp (a int)",
            "SET LOCAL ROLE admin",
            "select 'LISTEN x'",
            "UNLISTEN *",
        ] {
            assert_eq!(sticky(movable), None, "{movable}");
        }
    }

    #[test]
    fn the_prefilter_only_rules_out_queries_without_hints() {
        assert!(!may_have_effects(b"select * from orders where id = $1"));
        assert!(may_have_effects(b"UPDATE t SeT a = 1"));
        assert!(effects("select * from orders where id = $1", true).is_empty());
    }

    /// The plain definition of what the prefilter finds: some hint occurs, ignoring ASCII case.
    fn naive(text: &[u8]) -> bool {
        HINTS
            .iter()
            .any(|h| text.windows(h.len()).any(|w| w.eq_ignore_ascii_case(h)))
    }

    #[test]
    fn the_prefilter_agrees_with_the_definition_across_block_edges() {
        // Texts of the hints' starts (whole or cut short, in random case) and of bytes that differ from a
        // letter in bit 5 only, of every length up to several blocks, so that hints and near misses fall on
        // every edge of a block.
        const OTHER: &[u8] = b" .\x00\x13\x05\xd3\xe5aA";
        let mut next = crate::sql::test_rng(0x2545_F491_4F6C_DD1D_u64);
        let mut found = 0;
        for _ in 0..20_000 {
            let len = next(70);
            let mut text = Vec::with_capacity(len + 8);
            while text.len() < len {
                if next(3) == 0 {
                    text.push(OTHER[next(OTHER.len())]);
                } else {
                    let hint = HINTS[next(HINTS.len())];
                    let cut = if next(4) == 0 {
                        hint.len()
                    } else {
                        next(hint.len())
                    };
                    text.extend(hint[..cut].iter().map(|&b| {
                        if next(2) == 0 {
                            b.to_ascii_uppercase()
                        } else {
                            b
                        }
                    }));
                }
            }
            let expected = naive(&text);
            found += usize::from(expected);
            assert_eq!(may_have_effects(&text), expected, "{text:?}");
        }
        // The portable pairs agree with the vector ones, block by block.
        for _ in 0..20_000 {
            let block: [u8; BLOCK] = std::array::from_fn(|_| {
                let hint = HINTS[next(HINTS.len())];
                let b = hint[next(hint.len())];
                match next(4) {
                    0 => b.to_ascii_uppercase(),
                    1 => b ^ 0x80,
                    _ => b,
                }
            });
            assert_eq!(hint_pairs(&block), hint_pairs_bytewise(&block), "{block:?}");
        }
        // Both answers were asked for often.
        assert!((2_000..18_000).contains(&found), "{found}");
        // A hint placed at every offset of a longer text of non-letters.
        for hint in HINTS {
            for at in 0..40 {
                let mut text = vec![b'.'; 48];
                text[at..at + hint.len()].copy_from_slice(hint);
                assert!(may_have_effects(&text), "{hint:?} at {at}");
                text[at + hint.len() - 1] = b'.';
                assert!(!may_have_effects(&text), "cut {hint:?} at {at}");
            }
        }
    }

    #[test]
    fn the_prefilter_finds_every_hint_in_any_case_anywhere() {
        for hint in HINTS {
            let hint = std::str::from_utf8(hint).expect("ASCII hints");
            let upper = hint.to_ascii_uppercase();
            let mixed: String = hint
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            for word in [hint, upper.as_str(), mixed.as_str()] {
                for text in [
                    word.to_owned(),
                    format!("select 1; {word}"),
                    format!("{word} x"),
                    format!("é{word}é"),
                    format!("ss{word}"),
                ] {
                    assert!(may_have_effects(text.as_bytes()), "{text}");
                }
                // Cut short at the end of the input: not a hint.
                let cut = &word[..word.len() - 1];
                let text = format!("select * from t where {cut}");
                assert!(!may_have_effects(text.as_bytes()), "{text}");
            }
        }
        for text in [
            &b""[..],
            b"s",
            b"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            b"presetting the holdings: listed lockers, tempo",
            b"se t l ock te mp",
            b"\xff\xfeSET",
        ] {
            assert_eq!(
                may_have_effects(text),
                naive(text),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}
