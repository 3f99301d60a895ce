use super::*;

/// A summary built by hand: words and functions are read naively from `text` (the tests use no
/// quotes or comments), `read_only` is what pgwarden would have said.
fn stmt(text: &str, kind: StatementKind, read_only: bool) -> Statement {
    let mut words = Vec::new();
    let mut functions = Vec::new();
    let mut current = String::new();
    for c in text.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            current.push(c);
            continue;
        }
        if !current.is_empty() && !current.chars().all(|c| c.is_ascii_digit()) {
            if c == '(' {
                functions.push(current.to_ascii_lowercase());
            }
            for part in current.split('.') {
                words.push(part.to_ascii_uppercase());
            }
        }
        current.clear();
    }
    Statement {
        text: text.to_string(),
        command: words.first().cloned().unwrap_or_default(),
        kind,
        words,
        functions,
        read_only,
    }
}

/// A query's statements, as `query.statements()` returns them.
fn query(statements: Vec<Statement>) -> Vec<Statement> {
    statements
}

fn settings(pairs: &[(&str, &str)]) -> Settings {
    let config = Config::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    Settings::from_config(&config).unwrap()
}

fn denied_message(verdict: Verdict) -> String {
    match verdict {
        Verdict::Deny(denial) => {
            assert_eq!(denial.sqlstate, "25006");
            assert_eq!((denial.detail, denial.hint), (None, None));
            denial.message
        }
        Verdict::Allow => panic!("allowed"),
    }
}

use StatementKind::{DataChange, Other, Query as Q, SchemaChange, Session, TransactionControl};

#[test]
fn read_only_queries_pass() {
    let q = query(vec![
        stmt("SELECT count(*) FROM t", Q, true),
        stmt("SHOW search_path", Session, true),
        stmt("BEGIN", TransactionControl, true),
        stmt("", Other, true),
    ]);
    assert_eq!(verdict(&Settings::default(), &q), Verdict::Allow);
    assert_eq!(
        verdict(&Settings::default(), &query(vec![])),
        Verdict::Allow
    );
}

#[test]
fn writes_are_denied_naming_the_command() {
    let s = Settings::default();
    let cases = [
        (
            stmt("INSERT INTO t VALUES (1)", DataChange, false),
            "INSERT",
        ),
        (stmt("update t set a = 1", DataChange, false), "UPDATE"),
        (stmt("DROP TABLE t", SchemaChange, false), "DROP"),
        (
            stmt("SET transaction_read_only = off", Session, false),
            "SET",
        ),
        (stmt("VACUUM", Other, false), "VACUUM"),
    ];
    for (statement, command) in cases {
        let message = denied_message(verdict(&s, &query(vec![statement])));
        assert_eq!(
            message,
            format!("cannot execute {command} in a read-only session (pgwarden readonly policy)")
        );
    }
}

#[test]
fn first_offending_statement_of_several_is_named() {
    let q = query(vec![
        stmt("SELECT 1", Q, true),
        stmt("DELETE FROM t", DataChange, false),
        stmt("INSERT INTO t VALUES (1)", DataChange, false),
    ]);
    assert!(denied_message(verdict(&Settings::default(), &q)).contains("DELETE"));
}

#[test]
fn with_names_the_inner_write() {
    let s = Settings::default();
    let cte = stmt(
        "WITH moved AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM moved",
        DataChange,
        false,
    );
    assert!(denied_message(verdict(&s, &query(vec![cte]))).contains("execute DELETE in"));
    let locking = stmt(
        "WITH x AS (SELECT * FROM t FOR UPDATE) UPDATE t SET a = 1",
        DataChange,
        false,
    );
    assert!(denied_message(verdict(&s, &query(vec![locking]))).contains("execute UPDATE in"));
    let lock_only = stmt("WITH x AS (SELECT 1) SELECT * FROM t FOR UPDATE", Q, false);
    assert!(denied_message(verdict(&s, &query(vec![lock_only]))).contains("execute WITH in"));
    let empty = Statement {
        command: String::new(),
        ..stmt("", Other, false)
    };
    assert!(denied_message(verdict(&s, &query(vec![empty]))).contains("execute this statement in"));
}

#[test]
fn custom_message_with_placeholder() {
    let s = settings(&[("message", "read-only replica: {command} refused")]);
    let q = query(vec![stmt("TRUNCATE t", DataChange, false)]);
    assert_eq!(
        denied_message(verdict(&s, &q)),
        "read-only replica: TRUNCATE refused"
    );
    let s = settings(&[("message", "no writes here")]);
    assert_eq!(denied_message(verdict(&s, &q)), "no writes here");
}

#[test]
fn allowed_function_exempts_a_plain_query() {
    let s = settings(&[("allow_functions", "nextval, pg_catalog.currval")]);
    for text in [
        "SELECT nextval('s')",
        "SELECT pg_catalog.nextval('s'), count(*) FROM t",
        "SELECT currval('s')",
        "SELECT coalesce(max(id), nextval('s')) FROM t WHERE exists (SELECT 1)",
    ] {
        let q = query(vec![stmt(text, Q, false)]);
        assert_eq!(verdict(&s, &q), Verdict::Allow, "{text}");
    }
}

#[test]
fn exemption_needs_every_reason_explained() {
    let s = settings(&[("allow_functions", "nextval")]);
    let cases = [
        // An unknown function might be the reason pgwarden flagged it.
        "SELECT nextval('s'), my_func()",
        // Another schema's function of the same name is a different function.
        "SELECT app.nextval('s')",
        // A side-effect function that is not allowed.
        "SELECT nextval('s'), set_config('a', 'b', false)",
        // Writing or locking words.
        "SELECT nextval('s') INTO new_table",
        "SELECT nextval('s') FROM t FOR UPDATE",
        "SELECT nextval('s') FROM t FOR SHARE",
        // Flagged with no allowed function at all: the reason is something else.
        "SELECT count(*) FROM t",
    ];
    for text in cases {
        let q = query(vec![stmt(text, Q, false)]);
        assert!(matches!(verdict(&s, &q), Verdict::Deny(_)), "{text}");
    }
}

#[test]
fn exemption_only_for_plain_queries() {
    let s = settings(&[("allow_functions", "nextval")]);
    for (text, kind) in [
        ("INSERT INTO t VALUES (nextval('s'))", DataChange),
        ("CREATE TABLE t (id int DEFAULT nextval('s'))", SchemaChange),
        ("DO $$ SELECT nextval('s') $$", Other),
    ] {
        let q = query(vec![stmt(text, kind, false)]);
        assert!(matches!(verdict(&s, &q), Verdict::Deny(_)), "{text}");
    }
    let mixed = query(vec![
        stmt("SELECT nextval('s')", Q, false),
        stmt("INSERT INTO t VALUES (1)", DataChange, false),
    ]);
    assert!(denied_message(verdict(&s, &mixed)).contains("INSERT"));
}

#[test]
fn without_allow_functions_nothing_is_exempt() {
    let q = query(vec![stmt("SELECT nextval('s')", Q, false)]);
    assert!(denied_message(verdict(&Settings::default(), &q)).contains("execute SELECT in"));
}

#[test]
fn configuration_errors() {
    let config = |pairs: &[(&str, &str)]| {
        Config::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    };
    let err = Settings::from_config(&config(&[("allow_function", "nextval")])).unwrap_err();
    assert!(
        err.contains("unknown configuration key `allow_function`"),
        "{err}"
    );
    let err = Settings::from_config(&config(&[("message", " ")])).unwrap_err();
    assert!(err.contains("`message`"), "{err}");
    assert_eq!(Settings::from_config(&config(&[])), Ok(Settings::default()));
}
