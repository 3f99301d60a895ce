//! The lists and session rules behind the read-only reading: side-effect functions, reserved keywords,
//! and which SET / RESET / DISCARD statements could re-enable writing.

use super::StatementKind;
use super::lexer::{StringKind, TokenKind};
use super::names;
use super::summary::Sig;

/// PostgreSQL's fully reserved keywords: never function names, so `IN (`, `AS (` or `ANY (` is no call.
const RESERVED: &[&str] = &[
    "ALL",
    "ANALYSE",
    "ANALYZE",
    "AND",
    "ANY",
    "ARRAY",
    "AS",
    "ASC",
    "ASYMMETRIC",
    "BOTH",
    "CASE",
    "CAST",
    "CHECK",
    "COLLATE",
    "COLUMN",
    "CONSTRAINT",
    "CREATE",
    "CURRENT_CATALOG",
    "CURRENT_DATE",
    "CURRENT_ROLE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "DEFAULT",
    "DEFERRABLE",
    "DESC",
    "DISTINCT",
    "DO",
    "ELSE",
    "END",
    "EXCEPT",
    "FALSE",
    "FETCH",
    "FOR",
    "FOREIGN",
    "FROM",
    "GRANT",
    "GROUP",
    "HAVING",
    "IN",
    "INITIALLY",
    "INTERSECT",
    "INTO",
    "LATERAL",
    "LEADING",
    "LIMIT",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "NOT",
    "NULL",
    "OFFSET",
    "ON",
    "ONLY",
    "OR",
    "ORDER",
    "PLACING",
    "PRIMARY",
    "REFERENCES",
    "RETURNING",
    "SELECT",
    "SESSION_USER",
    "SOME",
    "SYMMETRIC",
    "SYSTEM_USER",
    "TABLE",
    "THEN",
    "TO",
    "TRAILING",
    "TRUE",
    "UNION",
    "UNIQUE",
    "USER",
    "USING",
    "VARIADIC",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
];

/// Whether `word` (as written, in any case) followed by `(` is surely no function call: a fully reserved
/// keyword, or `VALUES` (which may not name a function either, and starts every `VALUES (...)` list).
pub(super) fn is_not_function(word: &str) -> bool {
    word.eq_ignore_ascii_case("VALUES") || RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

/// Built-in and contrib functions that write, change server or session state, assign a transaction
/// id, or run SQL handed to them as a string (which the lexer cannot look into).
const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    "set_config",
    "nextval",
    "setval",
    "pg_notify",
    "lowrite",
    "pg_logical_emit_message",
    "pg_switch_wal",
    "pg_switch_xlog",
    "pg_create_restore_point",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "txid_current",
    "pg_current_xact_id",
    "pg_import_system_collations",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_nextoid",
    "pg_sync_replication_slots",
    "pg_log_standby_snapshot",
    "pg_extension_config_dump",
    "pg_stat_statements_reset",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "ts_stat",
    "ts_rewrite",
    "connectby",
];

/// Prefixes of families of such functions (`lo_import`, `pg_stat_reset_shared`, `dblink_exec`, ...).
const SIDE_EFFECT_PREFIXES: &[&str] = &[
    "lo_",
    "dblink",
    "pg_stat_reset",
    "pg_create_",
    "pg_drop_",
    "pg_copy_",
    "pg_replication_",
    "pg_logical_slot_get_",
    "pg_wal_replay_",
    "pg_xlog_replay_",
    "pg_restore_",
    "pg_clear_",
    "pg_set_",
    "binary_upgrade_",
    "crosstab",
    "pg_background_",
];

/// Whether a function (as listed in `functions`, possibly schema-qualified) is a known side-effect
/// function, in any schema and in any case (a quoted `"NEXTVAL"` is matched too: conservative).
/// Only the part after the last `.` counts, so the last name part alone gives the same answer.
pub(super) fn has_side_effects(function: &str) -> bool {
    let name = function.rsplit('.').next().unwrap_or(function);
    // The lists are lower-case ASCII (a test checks): comparing without ASCII case is comparing the
    // lower-cased name, without building it.
    SIDE_EFFECT_FUNCTIONS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
        || SIDE_EFFECT_PREFIXES.iter().any(|p| {
            name.as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes()))
        })
}

/// Settings whose change could let later statements write (or make the server lex differently from
/// pgwarden): setting them is read-only only to a plainly true value.
const GUARDED_SETTINGS: &[&str] = &[
    "default_transaction_read_only",
    "transaction_read_only",
    "standard_conforming_strings",
];

/// Settings that switch identity: a different role may have different defaults and privileges.
const ROLE_SETTINGS: &[&str] = &["role", "session_authorization"];

/// `SET ...`: a `TRANSACTION` one is transaction control, the rest session settings.
///
/// Not read-only: anything mentioning `WRITE` (`SET TRANSACTION READ WRITE`, `SET SESSION
/// CHARACTERISTICS AS TRANSACTION READ WRITE`), `ROLE` or `AUTHORIZATION`, or a role setting; and any
/// mention of a guarded setting, unless the statement is exactly `SET [SESSION|LOCAL] <setting> {=|TO}
/// <on|true|yes|1>`, the value bare or a plain quoted string (psycopg2's `set_session(readonly=True)`
/// sends `SET default_transaction_read_only TO 'on'`). Other spellings PostgreSQL accepts (`t`, `y`,
/// `E'on'`, `$$on$$`) stay refused: no driver sends them.
pub(super) fn set(sig: &[Sig<'_>], at: usize) -> (StatementKind, bool) {
    let mut i = at + 1;
    while let Some(s) = sig.get(i) {
        let modifier = s.is_word("LOCAL")
            || (s.is_word("SESSION")
                && !sig
                    .get(i + 1)
                    .is_some_and(|n| n.is_word_in(&["AUTHORIZATION", "CHARACTERISTICS"])));
        if !modifier {
            break;
        }
        i += 1;
    }
    let kind = if sig.get(i).is_some_and(|s| s.is_word("TRANSACTION")) {
        StatementKind::TransactionControl
    } else {
        StatementKind::Session
    };
    let rest = &sig[at..];
    if rest
        .iter()
        .any(|s| s.is_word_in(&["WRITE", "ROLE", "AUTHORIZATION"]) || s.names_any(ROLE_SETTINGS))
    {
        return (kind, false);
    }
    if !rest.iter().any(|s| s.names_any(GUARDED_SETTINGS)) {
        return (kind, true);
    }
    let plain_true = sig.len() == i + 3
        && i <= at + 2
        && sig[i].names_any(GUARDED_SETTINGS)
        && (sig[i + 1].is_word("TO")
            || (sig[i + 1].kind == TokenKind::Operator && sig[i + 1].text == "="))
        && turns_on(&sig[i + 2]);
    (kind, plain_true)
}

/// Whether a SET value means `on` for a boolean setting: `on`, `true`, `yes` or `1`, bare or quoted.
fn turns_on(value: &Sig<'_>) -> bool {
    const ON: &[&str] = &["on", "true", "yes", "1"];
    match value.kind {
        TokenKind::Word => value.is_word_in(&["ON", "TRUE", "YES"]),
        TokenKind::Number => value.text == "1",
        TokenKind::String(StringKind::Standard) => {
            let v = names::string_value(value.text);
            ON.iter().any(|on| v.eq_ignore_ascii_case(on))
        }
        _ => false,
    }
}

/// `RESET ...`: not read-only for `ALL`, roles, and the guarded settings (their reset value may be off).
pub(super) fn reset(sig: &[Sig<'_>], at: usize) -> (StatementKind, bool) {
    let rest = &sig[at..];
    let risky = rest.iter().any(|s| {
        s.is_word_in(&["ALL", "ROLE", "AUTHORIZATION"])
            || s.names_any(GUARDED_SETTINGS)
            || s.names_any(ROLE_SETTINGS)
            || s.names_any(&["all"])
    });
    (StatementKind::Session, !risky)
}

/// `DISCARD ...`: read-only for `PLANS`, `SEQUENCES` and `TEMP`; not for `DISCARD ALL`, which includes
/// `RESET ALL` and `SET SESSION AUTHORIZATION DEFAULT`.
pub(super) fn discard(sig: &[Sig<'_>], at: usize) -> (StatementKind, bool) {
    let harmless =
        sig.len() == at + 2 && sig[at + 1].is_word_in(&["PLANS", "SEQUENCES", "TEMP", "TEMPORARY"]);
    (StatementKind::Session, harmless)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The comparisons above ignore ASCII case on one side only: they rely on these spellings.
    #[test]
    fn lists_are_spelled_as_the_comparisons_expect() {
        for f in SIDE_EFFECT_FUNCTIONS.iter().chain(SIDE_EFFECT_PREFIXES) {
            assert_eq!(
                *f,
                f.to_ascii_lowercase(),
                "side-effect names are lower-case"
            );
        }
        for r in RESERVED {
            assert_eq!(*r, r.to_ascii_uppercase(), "keywords are upper-case");
        }
        assert!(has_side_effects("PG_catalog.NextVal"));
        assert!(has_side_effects("\"x.pg_set_foo\""));
        assert!(!has_side_effects("pg_se"));
        assert!(is_not_function("values") && is_not_function("Select"));
        assert!(!is_not_function("coalesce"));
    }
}
