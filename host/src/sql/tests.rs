//! Tests of the statement summary: the read-only reading is a security boundary, so most of these are
//! bypass attempts that must come out not read-only, next to ordinary queries that must stay read-only.

use super::StatementKind::{
    self, DataChange, Other, Query, SchemaChange, Session, TransactionControl,
};
use super::{Statement, tokens};

/// [`super::summarize_with`], checking on every call that the read-only fast paths (the reading
/// without the summary, and the quick one of plain statements in front of it) agree with the summary:
/// every test here is a test of all three.
fn summarize_with(sql: &str, standard_strings: bool) -> Vec<Statement> {
    let all = super::summarize_with(sql, standard_strings);
    let read_only = all.iter().all(|s| s.read_only);
    assert_eq!(
        super::full_read_only(sql, standard_strings),
        read_only,
        "full_read_only disagrees with the summary of {sql:?} (standard_strings = {standard_strings}): {all:#?}"
    );
    assert_eq!(
        super::read_only_with(sql, standard_strings),
        read_only,
        "read_only_with disagrees with the summary of {sql:?} (standard_strings = {standard_strings}): {all:#?}"
    );
    if super::quick::plainly_read_only(sql, standard_strings) {
        assert!(
            read_only,
            "the quick reading calls {sql:?} read-only (standard_strings = {standard_strings}): {all:#?}"
        );
    }
    all
}

fn summarize(sql: &str) -> Vec<Statement> {
    summarize_with(sql, true)
}

/// The only statement of `sql`.
fn one(sql: &str) -> Statement {
    let mut all = summarize(sql);
    assert_eq!(all.len(), 1, "{sql:?}: {all:#?}");
    all.remove(0)
}

/// Asserts that `sql` is one statement of `kind` that is not read-only.
#[track_caller]
fn writes(kind: StatementKind, sql: &str) {
    let s = one(sql);
    assert!(!s.read_only, "{sql:?} must not be read-only: {s:#?}");
    assert_eq!(s.kind, kind, "{sql:?}: {s:#?}");
}

/// Asserts that `sql` is one read-only statement of `kind`.
#[track_caller]
fn reads(kind: StatementKind, sql: &str) {
    let s = one(sql);
    assert!(s.read_only, "{sql:?} must be read-only: {s:#?}");
    assert_eq!(s.kind, kind, "{sql:?}: {s:#?}");
}

/// Asserts that some statement of `sql` is not read-only (how many there are does not matter).
#[track_caller]
fn blocked(sql: &str) {
    let all = summarize(sql);
    assert!(
        all.iter().any(|s| !s.read_only),
        "{sql:?} must have a statement that is not read-only: {all:#?}"
    );
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

mod basics {
    use super::*;

    #[test]
    fn fields_of_a_simple_query() {
        let s = one("  select a.b, \"C\", count(*) from pg_catalog.t where x = 'y z' ;  ");
        assert_eq!(
            s.text,
            "select a.b, \"C\", count(*) from pg_catalog.t where x = 'y z'"
        );
        assert_eq!(s.command, "SELECT");
        assert_eq!(s.kind, Query);
        assert_eq!(
            s.words,
            strings(&[
                "SELECT",
                "A",
                "B",
                "COUNT",
                "FROM",
                "PG_CATALOG",
                "T",
                "WHERE",
                "X"
            ])
        );
        assert_eq!(s.functions, strings(&["count"]));
        assert!(s.read_only);
    }

    #[test]
    fn text_keeps_comments_but_not_whitespace_or_the_semicolon() {
        let all = summarize("/* c */ SELECT 1 -- x\n; \n\t SELECT 2\n");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].text, "/* c */ SELECT 1 -- x");
        assert_eq!(all[1].text, "SELECT 2");
    }

    #[test]
    fn empty_statements_are_dropped() {
        for sql in [
            "",
            ";",
            " ; ;; ",
            "-- c",
            "/* c */",
            "/* c */ ; -- d\n;",
            "\n\t",
        ] {
            assert!(summarize(sql).is_empty(), "{sql:?}");
        }
        assert_eq!(summarize(";;SELECT 1;;").len(), 1);
        assert_eq!(summarize("SELECT 1; -- done").len(), 1);
    }

    #[test]
    fn statements_without_words() {
        for sql in ["'x'", "(1)", "$1", "1 + 2", "\"t\""] {
            let s = one(sql);
            assert_eq!(s.command, "", "{sql:?}");
            assert_eq!(s.kind, Other, "{sql:?}");
            assert!(!s.read_only, "{sql:?}");
        }
    }

    #[test]
    fn command_is_the_first_word() {
        assert_eq!(one("(SELECT 1) UNION (SELECT 2)").command, "SELECT");
        assert_eq!(one("/* x */ dElEtE FROM t").command, "DELETE");
        assert_eq!(one("with x as (select 1) select * from x").command, "WITH");
        // Something before the first word other than `(` is not a valid statement.
        let s = one("'x' SELECT 1");
        assert_eq!(s.command, "SELECT");
        assert!(!s.read_only);
    }

    #[test]
    fn words_skip_literals_comments_and_quoted_identifiers() {
        let s = one(
            "SELECT 'DELETE', $$INSERT$$, E'UPDATE', \"MERGE\", B'1' /* DROP */ FROM t -- TRUNCATE",
        );
        assert_eq!(s.words, strings(&["SELECT", "FROM", "T"]));
        assert!(s.read_only);
        assert_eq!(
            one("select u&'x' uescape '!'").words,
            strings(&["SELECT", "UESCAPE"])
        );
        assert_eq!(one("SELECT $1::int").words, strings(&["SELECT", "INT"]));
    }

    #[test]
    fn words_upper_case_ascii_only() {
        let s = one("select café, ınsert from t");
        assert_eq!(s.words, strings(&["SELECT", "CAFé", "ıNSERT", "FROM", "T"]));
        // A dotless i does not make INSERT: the server sees an identifier, and so do we.
        assert!(s.read_only);
    }

    #[test]
    fn functions_as_written() {
        let f = |sql: &str| one(sql).functions;
        assert_eq!(
            f("SELECT pg_catalog.set_config('a', 'b', false)"),
            strings(&["pg_catalog.set_config"])
        );
        assert_eq!(
            f("SELECT \"pg_catalog\".\"set_config\"('a', 'b', false)"),
            strings(&["pg_catalog.set_config"])
        );
        assert_eq!(
            f("SELECT \"Weird\"(1), MyFunc(2)"),
            strings(&["Weird", "myfunc"])
        );
        assert_eq!(f("SELECT a . b /* c */ . c (1)"), strings(&["a.b.c"]));
        assert_eq!(f("SELECT upper(lower(x))"), strings(&["upper", "lower"]));
        assert_eq!(
            f("SELECT count(*) FILTER (WHERE x) FROM t"),
            strings(&["count", "filter"])
        );
        assert_eq!(f("SELECT now ()"), strings(&["now"]));
        assert_eq!(
            f("SELECT left('abc', 1), right('abc', 1)"),
            strings(&["left", "right"])
        );
        assert_eq!(f("SELECT U&\"\\0061bc\"(1)"), strings(&["abc"]));
        assert_eq!(f("SELECT U&\"!0061bc\" UESCAPE '!' (1)"), strings(&["abc"]));
        assert_eq!(
            f("SELECT s.U&\"!0061bc\" UESCAPE '!' (1)"),
            strings(&["s.abc"])
        );
        assert_eq!(f("SELECT \"a\"\"b\"(1)"), strings(&["a\"b"]));
    }

    #[test]
    fn reserved_keywords_are_not_functions() {
        let f = |sql: &str| one(sql).functions;
        assert!(f("SELECT 1 WHERE x IN (1, 2) AND y = ANY (z)").is_empty());
        assert!(f("SELECT CAST(x AS int), ARRAY(SELECT 1)").is_empty());
        assert!(f("WITH x AS (SELECT 1) SELECT * FROM x").is_empty());
        assert!(f("VALUES (1), (2)").is_empty());
        assert!(f("SELECT * FROM a JOIN b USING (id)").is_empty());
        // After a dot any keyword is a name.
        assert_eq!(f("SELECT s.in(1)"), strings(&["s.in"]));
    }
}

mod data_and_schema_changes {
    use super::*;

    #[test]
    fn writes_are_data_changes() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "insert into t select * from u",
            "UPDATE t SET a = 1",
            "DELETE FROM t",
            "dElEtE fRoM t",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            "TRUNCATE t",
            "REFRESH MATERIALIZED VIEW v",
            "LOCK TABLE t IN ACCESS EXCLUSIVE MODE",
            "CREATE TABLE t AS SELECT 1",
            "CREATE TEMP TABLE t AS SELECT 1",
            "create unlogged table t (a) as values (1)",
            "(DELETE FROM t)",
        ] {
            writes(DataChange, sql);
        }
        assert_eq!(one("UPDATE t SET a = 1").command, "UPDATE");
    }

    #[test]
    fn ddl_is_a_schema_change() {
        for sql in [
            "CREATE TABLE t (a int)",
            "CREATE TEMP TABLE t (a int)",
            "CREATE TEMPORARY VIEW v AS SELECT 1",
            "create index on t (a)",
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql",
            "CREATE MATERIALIZED VIEW v AS SELECT 1",
            "DROP TABLE t",
            "DROP TABLE IF EXISTS pg_temp.t",
            "ALTER TABLE t ADD COLUMN b int",
            "ALTER ROLE r SET default_transaction_read_only = off",
            "ALTER DATABASE d SET default_transaction_read_only TO on",
            "ALTER SYSTEM SET default_transaction_read_only = off",
            "GRANT ALL ON t TO PUBLIC",
            "REVOKE SELECT ON t FROM r",
            "COMMENT ON TABLE t IS 'x'",
            "SECURITY LABEL ON TABLE t IS 'x'",
            "REINDEX TABLE t",
            "CLUSTER t USING i",
            "IMPORT FOREIGN SCHEMA s FROM SERVER f INTO l",
            "REASSIGN OWNED BY a TO b",
        ] {
            writes(SchemaChange, sql);
        }
    }

    #[test]
    fn maintenance_and_procedural_commands() {
        for sql in [
            "VACUUM",
            "VACUUM FULL t",
            "ANALYZE t",
            "ANALYSE",
            "DO $$ BEGIN DELETE FROM t; END $$",
            "DO LANGUAGE plpgsql 'BEGIN NULL; END'",
            "CALL p()",
            "call s.p(1)",
            "NOTIFY ch, 'x'",
            "LOAD 'auto_explain'",
            "CHECKPOINT",
            "FROBNICATE t",
            "SELECTX 1",
        ] {
            writes(Other, sql);
        }
        assert_eq!(one("DO $$ SELECT 1 $$").words, strings(&["DO"]));
        assert_eq!(one("CALL s.p(1)").functions, strings(&["s.p"]));
    }

    #[test]
    fn copy_from_and_to_files() {
        writes(DataChange, "COPY t FROM STDIN");
        writes(DataChange, "copy t (a, b) from stdin with (format csv)");
        writes(DataChange, "COPY t FROM '/tmp/data'");
        writes(DataChange, "COPY t FROM PROGRAM 'cat /etc/passwd'");
        writes(DataChange, "COPY BINARY t FROM STDIN");
        writes(Other, "COPY t TO '/tmp/out'");
        writes(Other, "COPY t TO PROGRAM 'rm -rf /'");
        writes(Other, "COPY (SELECT * FROM t) TO '/tmp/out'");
        writes(Other, "COPY t");
        writes(DataChange, "COPY (DELETE FROM t RETURNING *) TO STDOUT");
        writes(
            DataChange,
            "COPY (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) TO STDOUT",
        );
        writes(Query, "COPY (SELECT nextval('s')) TO STDOUT");
    }

    #[test]
    fn copy_to_stdout_reads() {
        reads(Query, "COPY t TO STDOUT");
        reads(Query, "copy t (a, b) to stdout with (format csv, header)");
        reads(Query, "COPY (SELECT a FROM t WHERE b > 1) TO STDOUT");
        reads(Query, "COPY \"from\" TO STDOUT");
        reads(Query, "COPY BINARY t TO STDOUT");
    }

    #[test]
    fn select_into_creates_a_table() {
        writes(DataChange, "SELECT * INTO new_t FROM t");
        writes(DataChange, "SELECT 1 INTO TEMP x");
        writes(DataChange, "select a into unlogged table x from t");
        writes(DataChange, "WITH a AS (SELECT 1) SELECT * INTO t FROM a");
        writes(DataChange, "(SELECT 1 INTO x)");
        writes(DataChange, "VALUES (1) INTO x");
    }

    #[test]
    fn locking_clauses() {
        for sql in [
            "SELECT * FROM t FOR UPDATE",
            "SELECT * FROM t FOR NO KEY UPDATE",
            "SELECT * FROM t FOR SHARE",
            "SELECT * FROM t FOR KEY SHARE",
            "select * from t for update of t nowait",
            "SELECT * FROM t FOR /* c */ UPDATE SKIP LOCKED",
            "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
            "WITH x AS (SELECT * FROM t FOR SHARE) SELECT * FROM x",
        ] {
            writes(Query, sql);
        }
    }

    #[test]
    fn data_modifying_ctes() {
        for sql in [
            "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x",
            "WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT 1",
            "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT 1",
            "WITH x AS (MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE RETURNING *) SELECT 1",
            "WITH RECURSIVE r AS (SELECT 1), d AS (DELETE FROM t) SELECT * FROM r",
            "WITH a AS (WITH b AS (INSERT INTO t DEFAULT VALUES RETURNING 1) SELECT * FROM b) SELECT * FROM a",
            "with x as materialized (delete from t returning *) select * from x",
            "WITH x AS (SELECT 1) DELETE FROM t",
            "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
            "WITH x AS (SELECT 1) UPDATE t SET a = 1",
            "(WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x)",
        ] {
            writes(DataChange, sql);
        }
        writes(Other, "WITH x AS (SELECT 1)");
    }

    #[test]
    fn create_is_never_read_only() {
        for sql in [
            "CREATE TEMP TABLE t (a int)",
            "CREATE TEMP VIEW v AS SELECT 1",
            "CREATE SCHEMA s",
        ] {
            assert!(!one(sql).read_only, "{sql}");
        }
    }
}

mod wrappers {
    use super::*;

    #[test]
    fn explain_analyze_runs_its_statement() {
        writes(DataChange, "EXPLAIN ANALYZE DELETE FROM t");
        writes(DataChange, "EXPLAIN ANALYSE INSERT INTO t VALUES (1)");
        writes(DataChange, "EXPLAIN ANALYZE VERBOSE UPDATE t SET a = 1");
        writes(DataChange, "EXPLAIN (ANALYZE) DELETE FROM t");
        writes(DataChange, "explain (analyze true, buffers) delete from t");
        writes(
            DataChange,
            "EXPLAIN (FORMAT JSON, ANALYZE) UPDATE t SET a = 1",
        );
        writes(DataChange, "EXPLAIN (\"analyze\") DELETE FROM t");
        writes(DataChange, "EXPLAIN (\"ANALYZE\" on) DELETE FROM t");
        writes(DataChange, "EXPLAIN (U&\"an\\0061lyze\") DELETE FROM t");
        // Conservative: an ANALYZE option counts whatever its value.
        writes(DataChange, "EXPLAIN (ANALYZE off) DELETE FROM t");
        writes(DataChange, "EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1");
        writes(DataChange, "EXPLAIN ANALYZE REFRESH MATERIALIZED VIEW v");
        writes(
            DataChange,
            "EXPLAIN ANALYZE WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x",
        );
        writes(Query, "EXPLAIN ANALYZE SELECT nextval('s')");
        writes(Query, "EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE");
        writes(DataChange, "EXPLAIN ANALYZE SELECT 1 INTO x");
        writes(Other, "EXPLAIN ANALYZE");
        writes(Other, "EXPLAIN (ANALYZE");
        writes(Other, "EXPLAIN ANALYZE 'x'");
    }

    #[test]
    fn explain_analyze_of_a_read_reads() {
        reads(Query, "EXPLAIN ANALYZE SELECT 1");
        reads(
            Query,
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM t",
        );
        reads(Query, "EXPLAIN ANALYZE (SELECT 1)");
        reads(
            Query,
            "EXPLAIN (ANALYZE) WITH x AS (SELECT 1) SELECT * FROM x",
        );
        reads(Other, "EXPLAIN ANALYZE EXECUTE p(1)");
    }

    #[test]
    fn explain_without_analyze_only_plans() {
        reads(Query, "EXPLAIN SELECT 1");
        reads(Query, "EXPLAIN VERBOSE SELECT * FROM t");
        reads(Query, "EXPLAIN DELETE FROM t");
        reads(Query, "EXPLAIN (COSTS off) UPDATE t SET a = 1");
        reads(Query, "EXPLAIN (SELECT 1)");
        reads(Query, "EXPLAIN INSERT INTO t VALUES (1)");
        // Side-effect functions are refused even where they would only be planned.
        writes(Query, "EXPLAIN SELECT set_config('a', 'b', false)");
    }

    #[test]
    fn prepare_is_checked_by_its_statement() {
        writes(Other, "PREPARE p AS INSERT INTO t VALUES ($1)");
        writes(
            Other,
            "PREPARE p (int, text) AS UPDATE t SET a = $1 WHERE b = $2",
        );
        writes(Other, "prepare p as delete from t");
        writes(
            Other,
            "PREPARE p AS WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x",
        );
        writes(Other, "PREPARE p AS SELECT * FROM t FOR UPDATE");
        writes(Other, "PREPARE p AS SELECT set_config('a', 'b', false)");
        writes(Other, "PREPARE p AS SELECT 1 INTO x");
        writes(Other, "PREPARE p");
        writes(Other, "PREPARE p AS EXPLAIN SELECT 1");
        writes(Other, "PREPARE p AS PREPARE q AS DELETE FROM t");
        reads(Other, "PREPARE p AS SELECT 1");
        reads(Other, "PREPARE p (int) AS SELECT * FROM t WHERE a = $1");
        reads(Other, "PREPARE p AS VALUES (1)");
        reads(Other, "PREPARE p AS EXPLAIN ANALYZE SELECT 1");
    }

    #[test]
    fn declare_is_checked_by_its_query() {
        writes(Query, "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE");
        writes(Query, "DECLARE c CURSOR FOR SELECT nextval('s')");
        writes(Query, "DECLARE c");
        writes(
            DataChange,
            "DECLARE c CURSOR FOR WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x",
        );
        reads(Query, "DECLARE c CURSOR FOR SELECT * FROM t");
        reads(
            Query,
            "declare c binary insensitive no scroll cursor with hold for select 1",
        );
        reads(Query, "DECLARE c CURSOR WITHOUT HOLD FOR VALUES (1)");
    }

    #[test]
    fn execute_and_deallocate() {
        reads(Other, "EXECUTE p");
        reads(Other, "EXECUTE p(1, 'x')");
        reads(Other, "DEALLOCATE p");
        reads(Other, "DEALLOCATE PREPARE ALL");
        writes(DataChange, "CREATE TABLE t AS EXECUTE p");
    }

    #[test]
    fn long_wrapper_chains_do_not_recurse() {
        let sql = "EXPLAIN ANALYZE ".repeat(100_000) + "DELETE FROM t";
        writes(DataChange, &sql);
        let sql = "PREPARE p AS ".repeat(100_000) + "SELECT 1";
        reads(Other, &sql);
        // Each EXPLAIN must not look for ANALYZE through the whole rest of the statement again.
        let sql = "EXPLAIN ".repeat(200_000) + "ANALYZE DELETE FROM t";
        writes(DataChange, &sql);
        let sql = "DECLARE c CURSOR ".repeat(100_000) + "FOR SELECT 1";
        reads(Query, &sql);
    }
}

mod functions_with_side_effects {
    use super::*;

    #[test]
    fn set_config_anywhere() {
        for sql in [
            "SELECT set_config('default_transaction_read_only', 'off', false)",
            "SELECT 1 FROM t WHERE set_config('a', 'b', false) IS NOT NULL",
            "WITH x AS (SELECT set_config('a', 'b', false)) SELECT * FROM x",
            "SELECT upper(lower(set_config('a', 'b', false)))",
            "SELECT pg_catalog.set_config('a', 'b', false)",
            "SELECT \"pg_catalog\".\"set_config\"('a', 'b', false)",
            "SELECT \"set_config\"('a', 'b', false)",
            "SELECT SET_CONFIG('a', 'b', false)",
            "SELECT U&\"\\0073et_config\"('a', 'b', false)",
            "SELECT U&\"!0073et_config\" UESCAPE '!' ('a', 'b', false)",
            "SELECT pg_catalog.U&\"!0073et_config\" UESCAPE '!' ('a', 'b', false)",
            "SELECT set_config /* c */ ('a', 'b', false)",
            "SELECT set_config\n('a', 'b', false)",
            "SELECT pg_catalog . set_config ('a', 'b', false)",
            "SELECT * FROM set_config('a', 'b', false)",
            "SELECT * FROM ROWS FROM (set_config('a', 'b', false))",
            "SELECT (SELECT set_config('a', 'b', false))",
            "SELECT * FROM t WHERE a IN (SELECT set_config('a', 'b', false))",
            "VALUES (set_config('a', 'b', false))",
            "SHOW x; SELECT set_config('a', 'b', false)",
        ] {
            blocked(sql);
        }
        assert_eq!(
            one("SELECT U&\"!0073et_config\" UESCAPE '!' ('a', 'b', false)").functions,
            strings(&["set_config"])
        );
    }

    #[test]
    fn known_side_effect_functions() {
        for f in [
            "nextval('s')",
            "setval('s', 1)",
            "pg_notify('c', 'x')",
            "lo_import('/etc/passwd')",
            "lo_export(1, '/tmp/x')",
            "lo_unlink(1)",
            "lo_create(0)",
            "lo_creat(-1)",
            "lo_from_bytea(0, 'x')",
            "lo_put(1, 0, 'x')",
            "lowrite(0, 'x')",
            "lo_truncate(0, 1)",
            "lo_open(1, 131072)",
            "dblink_exec('dbname=x', 'DELETE FROM t')",
            "dblink('dbname=x', 'SELECT 1')",
            "pg_logical_emit_message(true, 'p', 'x')",
            "pg_switch_wal()",
            "pg_create_restore_point('x')",
            "pg_terminate_backend(1)",
            "pg_cancel_backend(1)",
            "pg_reload_conf()",
            "pg_rotate_logfile()",
            "pg_promote()",
            "txid_current()",
            "pg_current_xact_id()",
            "pg_stat_reset()",
            "pg_stat_reset_shared('bgwriter')",
            "pg_stat_reset_single_table_counters(1)",
            "pg_create_logical_replication_slot('s', 'p')",
            "pg_drop_replication_slot('s')",
            "query_to_xml('select set_config(''a'', ''b'', false)', true, true, '')",
            "NEXTVAL('s')",
            "pg_log_standby_snapshot()",
            "ts_stat('select set_config(''a'', ''b'', false)')",
            "crosstab('select 1')",
            "pg_background_launch('delete from t')",
            "public.nextval('s')",
        ] {
            let sql = format!("SELECT {f}");
            writes(Query, &sql);
        }
    }

    #[test]
    fn harmless_functions_stay_read_only() {
        for f in [
            "pg_advisory_lock(1)",
            "pg_try_advisory_xact_lock(1)",
            "pg_advisory_unlock_all()",
            "txid_current_if_assigned()",
            "current_setting('default_transaction_read_only')",
            "now()",
            "count(*)",
            "pg_sleep(0)",
            "currval('s')",
            "nextval_x(1)",
            "my_lo_import(1)",
        ] {
            let sql = format!("SELECT {f}");
            reads(Query, &sql);
        }
    }
}

mod session_settings {
    use super::*;

    #[test]
    fn read_only_settings_turned_off() {
        for sql in [
            "SET default_transaction_read_only = off",
            "SET default_transaction_read_only = false",
            "SET default_transaction_read_only TO off",
            "SET default_transaction_read_only = 0",
            "SET default_transaction_read_only = no",
            "SET default_transaction_read_only = 'off'",
            "SET default_transaction_read_only TO 'of'",
            "SET default_transaction_read_only = ' on'",
            "SET default_transaction_read_only = 'on' 'x'",
            "SET default_transaction_read_only = \"on\"",
            "SET default_transaction_read_only = E'on'",
            "SET default_transaction_read_only = $$on$$",
            "SET default_transaction_read_only = DEFAULT",
            "SET default_transaction_read_only TO default",
            "SET default_transaction_read_only = on, off",
            "SET default_transaction_read_only = t",
            "SET default_transaction_read_only = +1",
            "SET default_transaction_read_only",
            "SET default_transaction_read_only FROM CURRENT",
            "SET SESSION default_transaction_read_only = off",
            "SET LOCAL default_transaction_read_only = off",
            "set DEFAULT_TRANSACTION_READ_ONLY = OFF",
            "SET /* a */ default_transaction_read_only /* b */ = /* c */ off",
            "SET\ndefault_transaction_read_only\n=\noff",
            "SET \"default_transaction_read_only\" = off",
            "SET \"Default_Transaction_Read_Only\" = off",
            "SET U&\"default_transaction_read_onl\\0079\" = off",
            "SET U&\"default_transaction_read_onl!0079\" UESCAPE '!' = off",
            "SET transaction_read_only = off",
            "SET transaction_read_only TO false",
            "SET LOCAL transaction_read_only = off",
            "SET SESSION \"transaction_read_only\" = off",
            "SET standard_conforming_strings = off",
            "SET standard_conforming_strings TO DEFAULT",
            "SET LOCAL SESSION default_transaction_read_only = on",
            "SET x.default_transaction_read_only = on",
        ] {
            writes(Session, sql);
        }
    }

    #[test]
    fn read_only_settings_turned_on() {
        for sql in [
            "SET default_transaction_read_only = on",
            "SET default_transaction_read_only TO true",
            "set default_transaction_read_only = YES",
            "SET default_transaction_read_only = 1",
            "SET SESSION default_transaction_read_only = on",
            "SET LOCAL transaction_read_only TO on",
            "SET \"default_transaction_read_only\" = on",
            "SET default_transaction_read_only TO 'on'",
            "SET default_transaction_read_only = 'TRUE'",
            "SET transaction_read_only TO '1'",
            "SET SESSION default_transaction_read_only TO 'yes'",
            "SET standard_conforming_strings = on",
            "SET transaction_read_only = on;",
        ] {
            reads(Session, sql);
        }
    }

    #[test]
    fn reset_of_guarded_settings() {
        for sql in [
            "RESET default_transaction_read_only",
            "reset transaction_read_only",
            "RESET \"transaction_read_only\"",
            "RESET U&\"transaction_read_onl\\0079\"",
            "RESET standard_conforming_strings",
            "RESET ALL",
            "reset all",
            "RESET \"all\"",
            "RESET ROLE",
            "RESET SESSION AUTHORIZATION",
            "RESET session_authorization",
            "RESET \"role\"",
        ] {
            writes(Session, sql);
        }
    }

    #[test]
    fn identity_changes() {
        for sql in [
            "SET ROLE admin",
            "SET ROLE NONE",
            "SET SESSION ROLE admin",
            "SET LOCAL ROLE admin",
            "SET role = 'admin'",
            "SET \"role\" TO admin",
            "SET SESSION AUTHORIZATION admin",
            "SET SESSION AUTHORIZATION DEFAULT",
            "SET LOCAL SESSION AUTHORIZATION 'admin'",
            "SET session_authorization = 'admin'",
            "SET \"Session_Authorization\" TO admin",
        ] {
            writes(Session, sql);
        }
    }

    #[test]
    fn session_characteristics() {
        writes(
            Session,
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        );
        writes(
            Session,
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ WRITE",
        );
        writes(
            Session,
            "SET LOCAL SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        );
        writes(
            Session,
            "set session characteristics as transaction read /* x */ write",
        );
        reads(
            Session,
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        );
        reads(
            Session,
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        );
    }

    #[test]
    fn other_settings_are_read_only() {
        for sql in [
            "SET search_path = a, b",
            "SET search_path TO \"$user\", public",
            "SET statement_timeout TO '5s'",
            "SET LOCAL statement_timeout = 0",
            "SET SESSION work_mem = '64MB'",
            "SET TIME ZONE 'UTC'",
            "SET application_name = 'x'",
            "SET NAMES 'UTF8'",
            "SET client_min_messages TO warning",
            "SET CONSTRAINTS ALL DEFERRED",
            "SET my.setting = 'default_transaction_read_only'",
            "RESET search_path",
            "RESET statement_timeout",
            "RESET TIME ZONE",
            "DISCARD PLANS",
            "DISCARD SEQUENCES",
            "DISCARD TEMP",
            "discard temporary",
        ] {
            reads(Session, sql);
        }
    }

    #[test]
    fn discard_all_resets_everything() {
        // DISCARD ALL includes RESET ALL and SET SESSION AUTHORIZATION DEFAULT.
        writes(Session, "DISCARD ALL");
        writes(Session, "DISCARD");
        writes(Session, "DISCARD PLANS ALL");
    }
}

mod transactions {
    use super::*;

    #[test]
    fn read_write_transactions() {
        for sql in [
            "BEGIN READ WRITE",
            "BEGIN TRANSACTION READ WRITE",
            "BEGIN WORK ISOLATION LEVEL SERIALIZABLE READ WRITE",
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ WRITE",
            "begin isolation level repeatable read, read write, not deferrable",
            "START TRANSACTION READ WRITE",
            "start transaction read /* x */ write",
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "SET TRANSACTION READ WRITE",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            "SET LOCAL TRANSACTION READ WRITE",
            "SET SESSION TRANSACTION READ WRITE",
            "COMMIT PREPARED 'x'",
            "ROLLBACK PREPARED 'x'",
            "PREPARE TRANSACTION 'x'",
        ] {
            writes(TransactionControl, sql);
        }
    }

    #[test]
    fn read_only_transaction_control() {
        for sql in [
            "BEGIN",
            "begin work",
            "BEGIN TRANSACTION",
            "BEGIN READ ONLY",
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
            "START TRANSACTION",
            "START TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            "SET TRANSACTION READ ONLY",
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
            "COMMIT",
            "COMMIT AND CHAIN",
            "END",
            "END TRANSACTION",
            "ROLLBACK",
            "ROLLBACK AND NO CHAIN",
            "ABORT",
            "SAVEPOINT s",
            "RELEASE SAVEPOINT s",
            "RELEASE s",
            "ROLLBACK TO SAVEPOINT s",
            "ROLLBACK TO s",
        ] {
            reads(TransactionControl, sql);
        }
    }
}

mod queries {
    use super::*;

    #[test]
    fn ordinary_queries_are_read_only() {
        for sql in [
            "SELECT 1",
            "select * from t where a = 1 order by b limit 10",
            "SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > 1",
            "SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN c USING (id)",
            "(SELECT 1) UNION ALL (SELECT 2)",
            "((SELECT 1))",
            "VALUES (1, 'a'), (2, 'b')",
            "TABLE t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "WITH RECURSIVE r(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r",
            "WITH x AS NOT MATERIALIZED (SELECT 1) TABLE x",
            "SELECT 'DELETE FROM t; SET default_transaction_read_only = off'",
            "SELECT * FROM \"delete\" JOIN \"update\" ON true",
            "SELECT 1 AS \"into\", 2 AS \"update\"",
            "SELECT $1, $2::text",
            "SELECT E'\\x41\\'', B'101', X'FF', N'x', U&'\\0041', $$'$$, $q$;$q$",
            "SELECT substring('abc' FROM 1 FOR 2)",
            "SELECT * FROM t WHERE name = 'x; drop table t'",
            "SELECT a::text, b->>'k', c @> '{}' FROM t",
            "SELECT jsonb_path_query(j, '$.a') FROM t",
            "SELECT * FROM t TABLESAMPLE SYSTEM (10)",
            "SELECT * FROM generate_series(1, 10) WITH ORDINALITY",
            "SELECT pg_advisory_lock(1)",
            "SELECT 1 /* /* nested */ ; DELETE FROM t */",
            "SELECT 1 -- ; DELETE FROM t",
        ] {
            reads(Query, sql);
        }
    }

    #[test]
    fn other_read_commands() {
        for sql in [
            "SHOW search_path",
            "SHOW ALL",
            "SHOW default_transaction_read_only",
            "FETCH 10 FROM c",
            "FETCH NEXT IN c",
            "MOVE FORWARD ALL IN c",
            "CLOSE c",
            "CLOSE ALL",
            "LISTEN ch",
            "UNLISTEN *",
        ] {
            reads(Query, sql);
        }
    }

    #[test]
    fn keyword_named_columns_are_refused_conservatively() {
        // `update` and `share` may name columns; the reading cannot tell them from a locking clause.
        writes(Query, "SELECT update FROM t");
        writes(Query, "SELECT 1 AS share");
        writes(DataChange, "SELECT 1 AS into");
    }
}

mod evasions {
    use super::*;

    #[test]
    fn several_statements() {
        let all = summarize("SELECT 1; DELETE FROM t");
        assert_eq!(all.len(), 2);
        assert!(all[0].read_only);
        assert_eq!(all[1].command, "DELETE");
        assert!(!all[1].read_only);
        let all = summarize(";;DELETE FROM t");
        assert_eq!(all.len(), 1);
        assert!(!all[0].read_only);
        let all = summarize("SELECT 1\n;\nSET default_transaction_read_only=off;SELECT 2");
        assert_eq!(
            all.iter().map(|s| s.read_only).collect::<Vec<_>>(),
            [true, false, true]
        );
        blocked("BEGIN; UPDATE t SET a = 1; COMMIT");
        blocked("SELECT 1;RESET ALL");
        blocked("SHOW x;;;; ; TRUNCATE t;");
    }

    #[test]
    fn comments_around_and_inside_keywords() {
        writes(DataChange, "/* x */ DELETE FROM t");
        writes(DataChange, "-- x\nDELETE FROM t");
        writes(DataChange, "/* a /* b */ c */ DELETE FROM t");
        writes(DataChange, "DELETE/**/FROM/**/t");
        writes(DataChange, "--\rDELETE FROM t");
        // Two words, as for the server, which rejects it.
        let s = one("DEL/**/ETE FROM t");
        assert_eq!(s.words, strings(&["DEL", "ETE", "FROM", "T"]));
        assert_eq!(s.kind, Other);
        assert!(!s.read_only);
    }

    #[test]
    fn nested_comments_cannot_hide_their_end() {
        // A lexer that did not nest would end the comment at the first `*/` and see a DELETE.
        reads(Query, "SELECT 1 /* /* */ ; DELETE FROM t */");
        // And one that nested where the server does not could be made to swallow a statement.
        let all = summarize("SELECT 1 /* a */ ; DELETE FROM t /* b */");
        assert_eq!(all.len(), 2);
        assert!(!all[1].read_only);
        let all = summarize("SELECT 1 /* //* */ */ ; DELETE FROM t");
        assert_eq!(all.len(), 2);
        assert!(!all[1].read_only);
        let all = summarize("SELECT '/*'; DELETE FROM t; SELECT '*/'");
        assert_eq!(all.len(), 3);
        assert!(!all[1].read_only);
        let all = summarize("SELECT \"/*\"; DELETE FROM t");
        assert_eq!(all.len(), 2);
        assert!(!all[1].read_only);
        let all = summarize("SELECT 1 --/*\n; DELETE FROM t");
        assert_eq!(all.len(), 2);
        assert!(!all[1].read_only);
    }

    #[test]
    fn strings_hide_semicolons_and_keywords() {
        reads(Query, "SELECT 'x; DELETE FROM t'");
        reads(Query, "SELECT 'it''s; DELETE FROM t'");
        reads(Query, "SELECT 'a */ ; DELETE'");
        reads(Query, "SELECT $$; DELETE FROM t$$");
        reads(Query, "SELECT $a$ $$; DELETE $$ $a$");
        reads(Query, "SELECT $a$ x $b$ ; $a$");
        reads(Query, "SELECT E'\\'; DELETE FROM t; --'");
        reads(Query, "SELECT 'a'\n'b; DELETE FROM t'");
        reads(Query, "SELECT E'a'\n'\\'; DELETE FROM t; --'");
        reads(Query, "SELECT \"x\"\"; DELETE FROM t; --\" FROM t");
        reads(Query, "SELECT U&'\\0041;' UESCAPE '!'");
    }

    #[test]
    fn strings_that_end_where_the_server_ends_them() {
        // Standard-conforming strings: the backslash does not escape, so the DELETE is real.
        let all = summarize("SELECT '\\'; DELETE FROM t; --'");
        assert_eq!(all.len(), 2);
        assert!(!all[1].read_only);
        let all = summarize("SELECT e'\\\\'; DELETE FROM t");
        assert_eq!(all.len(), 2);
        assert!(!all[1].read_only);
        // A block comment does not continue a string, so the second one is standard.
        blocked("SELECT E'a' /* c */\n'\\'; DELETE FROM t; --'");
        // Without a newline there is no continuation either.
        blocked("SELECT E'a' '\\'; DELETE FROM t; --'");
        // A `$1` is a parameter, not the start of a dollar quote.
        let all = summarize("SELECT $1; DELETE FROM t; SELECT $1");
        assert_eq!(all.len(), 3);
        assert!(!all[1].read_only);
        // `$a` without a closing `$` quotes nothing.
        let all = summarize("SELECT $a; DELETE FROM t; SELECT $a");
        assert_eq!(all.len(), 3);
        assert!(!all[1].read_only);
        // A dollar quote opens only at the start of a token: `x$$` is an identifier.
        let all = summarize("SELECT x$$; DELETE FROM t; SELECT $$");
        assert_eq!(all.len(), 3);
        assert!(!all[1].read_only);
    }

    #[test]
    fn quoted_identifiers_are_not_keywords() {
        let s = one("SELECT * FROM \"insert\"");
        assert_eq!(s.words, strings(&["SELECT", "FROM"]));
        assert!(s.read_only);
        let s = one("\"DELETE\" FROM t");
        assert_eq!(s.command, "FROM");
        assert!(!s.read_only);
    }

    #[test]
    fn case_does_not_matter() {
        writes(DataChange, "dElEtE FrOm t");
        writes(DataChange, "wItH x aS (dElEtE fRoM t rEtUrNiNg 1) sElEcT 1");
        writes(Session, "rEsEt AlL");
        writes(TransactionControl, "BeGiN rEaD wRiTe");
    }

    #[test]
    fn non_ascii_whitespace_is_part_of_a_word() {
        let s = one("DELETE\u{a0}FROM t");
        assert_eq!(s.command, "DELETE\u{a0}FROM");
        assert!(!s.read_only);
        let s = one("SELECT\u{a0}1");
        assert_eq!(s.words, strings(&["SELECT\u{a0}1"]));
        assert!(!s.read_only);
        let s = one("\u{2003}SELECT 1");
        assert!(!s.read_only);
        // Glued to a function name it makes another name, which the server does not know either.
        let s = one("SELECT set_config\u{a0}('a', 'b', false)");
        assert_eq!(s.functions, strings(&["set_config\u{a0}"]));
        // ASCII vertical tab and form feed are whitespace.
        writes(DataChange, "DELETE\x0bFROM\x0ct");
    }

    #[test]
    fn parenthesized_semicolons_do_not_split_but_refuse() {
        let s = one("SELECT (1; SET default_transaction_read_only = off; SELECT 2)");
        assert!(!s.read_only);
        // An unmatched `)` does not hide the semicolons after it.
        let all = summarize("SELECT 1); DELETE FROM t");
        assert_eq!(all.len(), 2);
        assert!(!all[1].read_only);
        let all = summarize("SELECT ((1))); SET default_transaction_read_only = off");
        assert_eq!(all.len(), 2);
        assert!(!all[1].read_only);
        writes(
            SchemaChange,
            "CREATE RULE r AS ON INSERT TO t DO ALSO (DELETE FROM u; SELECT 1)",
        );
    }

    #[test]
    fn begin_atomic_bodies_split_conservatively() {
        // The server keeps a BEGIN ATOMIC body in its CREATE; splitting it leaves the CREATE refused,
        // while tracking BEGIN ... END here could be fooled by `SELECT 1 AS begin; RESET ALL`.
        let all = summarize(
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
        );
        assert!(!all[0].read_only);
        assert_eq!(all[0].kind, SchemaChange);
        let all = summarize("SELECT 1 AS begin; RESET ALL; SELECT 2 AS end");
        assert_eq!(all.len(), 3);
        assert!(!all[1].read_only);
    }

    #[test]
    fn unterminated_constructs_are_not_read_only() {
        for sql in [
            "SELECT 'abc",
            "SELECT E'abc\\",
            "SELECT E'abc\\'",
            "SELECT \"abc",
            "SELECT $$abc",
            "SELECT $q$abc$q",
            "SELECT 1 /* abc",
            "SELECT 1 /* a /* b */",
            "SELECT U&\"abc",
            "SELECT B'101",
        ] {
            let s = one(sql);
            assert_eq!(s.command, "SELECT", "{sql:?}");
            assert!(!s.read_only, "{sql:?}");
        }
        // A statement after an unterminated comment is part of the comment, as for the server.
        assert_eq!(summarize("SELECT 1; /* ; DELETE FROM t").len(), 1);
    }

    #[test]
    fn ambiguous_escapes_refuse_the_rest_of_the_query() {
        // Under SJIS, 0x95 0x5C is one character: the server would end the string at the quote after
        // it and run the SET. The lexer cannot know the encoding, so everything from there is refused.
        let all = summarize("SELECT E'\u{95}\\'; SET default_transaction_read_only = off; --'");
        assert!(all.iter().all(|s| !s.read_only), "{all:#?}");
        let all = summarize("SELECT 1; SELECT E'é\\\\'; SELECT 2; SELECT 3");
        assert_eq!(
            all.iter().map(|s| s.read_only).collect::<Vec<_>>(),
            [true, false, false, false]
        );
        reads(Query, "SELECT E'café \\n'");
        reads(Query, "SELECT 'café\\\\'");
    }

    #[test]
    fn standard_conforming_strings_off_takes_backslash_escapes() {
        // With it off, `\'` does not end a plain string: the DELETE is inside the string and runs nowhere.
        let sql = "SELECT 'a\\'; DELETE FROM t; --'";
        let off = summarize_with(sql, false);
        assert_eq!(off.len(), 1, "{off:#?}");
        assert_eq!(off[0].kind, Query);
        // With it on (the default), the same text is a SELECT and a DELETE.
        let on = summarize_with(sql, true);
        assert_eq!(
            on.iter().map(|s| s.command.as_str()).collect::<Vec<_>>(),
            ["SELECT", "DELETE"]
        );
        assert!(on.iter().all(|s| !s.read_only), "{on:#?}");
        // N'...' follows the same rule; E'...' always takes escapes.
        assert_eq!(
            summarize_with("SELECT N'a\\'; DELETE FROM t; --'", false).len(),
            1
        );
        assert_eq!(
            summarize_with("SELECT E'a\\'; DELETE FROM t; --'", true).len(),
            1
        );
    }

    #[test]
    fn text_that_lexes_differently_under_the_other_setting_is_not_read_only() {
        // A statement the server has not run yet could flip the setting, so a string whose end depends
        // on it makes that statement, and all after it, not read-only under either value.
        for standard in [true, false] {
            let all = summarize_with("SELECT 1; SELECT 'x\\'; SELECT 2; --'", standard);
            assert!(all[0].read_only, "{all:#?}");
            assert!(all[1..].iter().all(|s| !s.read_only), "{all:#?}");
        }
        // Backslashes that do not touch a quote lex the same both ways.
        for standard in [true, false] {
            for sql in [
                "SELECT 'a\\d+' ~ x FROM t",
                "SELECT 'C:\\dir\\file'",
                "SELECT '\\\\'",
            ] {
                let all = summarize_with(sql, standard);
                assert!(all[0].read_only, "{sql} {standard}: {all:#?}");
            }
        }
    }

    #[test]
    fn uncertain_uescape_refuses() {
        // An escape character the server refuses, or that cannot be read, leaves the name unsure.
        writes(Query, "SELECT U&\"a\" UESCAPE 'ab' FROM t");
        writes(Query, "SELECT U&\"a\" UESCAPE '+' FROM t");
        writes(Query, "SELECT U&\"a\" UESCAPE");
        writes(Query, "SELECT U&\"a\" UESCAPE E'!' FROM t");
        reads(Query, "SELECT U&\"!0061\" UESCAPE '!' FROM t");
    }
}

mod robustness {
    use super::*;

    /// A small deterministic generator (xorshift), so that failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Checks what must hold for any input: tokens tile it, statements' texts are parts of it.
    fn check_invariants(sql: &str) {
        let toks = tokens(sql);
        let mut at = 0;
        for t in &toks {
            assert_eq!(t.start, at, "{sql:?}");
            assert!(t.end > t.start, "{sql:?}");
            assert!(
                sql.is_char_boundary(t.start) && sql.is_char_boundary(t.end),
                "{sql:?}"
            );
            at = t.end;
        }
        assert_eq!(at, sql.len(), "{sql:?}");
        for s in summarize(sql) {
            assert!(sql.contains(&s.text), "{sql:?}");
            assert!(!s.text.is_empty(), "{sql:?}");
            let _ = format!("{s:?}");
        }
    }

    #[test]
    fn random_bytes() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3_000 {
            let len = rng.below(64);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check_invariants(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn random_sql_fragments() {
        const PIECES: &[&str] = &[
            "SELECT",
            "DELETE",
            "SET",
            "RESET",
            "ALL",
            "WITH",
            "AS",
            "(",
            ")",
            ";",
            ";",
            "'",
            "''",
            "\"",
            "$$",
            "$a$",
            "$1",
            "$",
            "E'",
            "e'\\",
            "\\",
            "U&\"",
            "U&'",
            "UESCAPE",
            "'!'",
            "B'",
            "X'",
            "N'",
            "/*",
            "*/",
            "--",
            "\n",
            "\r",
            " ",
            "\t",
            "\u{a0}",
            "é",
            "\u{95}",
            "1",
            "1e",
            "0x",
            ".",
            "..",
            "::",
            "=",
            "+",
            "-",
            "*",
            "/",
            "EXPLAIN",
            "ANALYZE",
            "PREPARE",
            "DECLARE",
            "FOR",
            "COPY",
            "TO",
            "STDOUT",
            "set_config",
            "READ",
            "WRITE",
            "default_transaction_read_only",
            "ON",
            "OFF",
            // The quick reading's words: its leads, a writing word, functions with and without effects.
            "select",
            " VALUES ",
            "TABLE",
            " INTO ",
            " Update ",
            "nextval",
            "now",
            "pg_catalog",
            "IN",
            ",",
        ];
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for _ in 0..5_000 {
            let n = rng.below(24);
            let sql: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            check_invariants(&sql);
        }
    }

    #[test]
    fn writes_stay_visible_after_any_prefix() {
        // Whatever read-only-looking prefix comes first, a write after a real semicolon is refused,
        // unless the prefix leaves a string, quote or comment open (then the server sees no write).
        const PREFIXES: &[&str] = &[
            "SELECT 1",
            "SELECT 'a'",
            "SELECT E'\\''",
            "SELECT $$;$$",
            "SELECT \"a\"\"b\"",
            "SELECT 1 /* ; */",
            "SELECT 'a'\n'b'",
            "SELECT $1",
            "SELECT x$$y",
            "SELECT B'1'",
            "SELECT U&'a' UESCAPE '!'",
            "SELECT 1 -- x\n",
            "SELECT (1))",
            "SHOW x",
            "BEGIN",
            "SET search_path = a",
        ];
        for prefix in PREFIXES {
            let sql = format!("{prefix}; DELETE FROM t");
            let all = summarize(&sql);
            assert!(
                all.iter().any(|s| !s.read_only && s.command == "DELETE"),
                "{sql:?}: {all:#?}"
            );
        }
    }

    #[test]
    fn long_inputs() {
        let many = "SELECT 1;".repeat(50_000);
        assert_eq!(summarize(&many).len(), 50_000);
        let deep = "(".repeat(200_000) + "SELECT 1" + &")".repeat(200_000);
        assert!(one(&deep).read_only);
        let opens = "/*".repeat(200_000);
        assert!(summarize(&opens).is_empty());
        let dollars = "$a$".to_string() + &"$".repeat(300_000) + "$a$";
        assert_eq!(tokens(&dollars).len(), 1);
        let tagged = "$".to_string() + &"a".repeat(100_000) + "$" + &"$aaaa".repeat(50_000);
        assert!(tokens(&tagged)[0].unterminated);
        let continued = "SELECT 'a'".to_string() + &"\n'a'".repeat(100_000);
        reads(Query, &continued);
        let spaces = "SELECT 'a'".to_string() + &" ".repeat(300_000) + "x";
        assert_eq!(one(&spaces).words, strings(&["SELECT", "X"]));
        let escapes = "SELECT E'".to_string() + &"\\'".repeat(200_000);
        assert!(!one(&escapes).read_only);
        let calls = "SELECT ".to_string() + &"f(".repeat(100_000);
        assert_eq!(one(&calls).functions.len(), 100_000);
        let dotted = "SELECT ".to_string() + &"a.".repeat(100_000) + "f()";
        assert_eq!(one(&dotted).functions.len(), 1);
    }
}
