"""psycopg 3 prepared statements (prepare=True) in pipeline mode, with errors mid-pipeline, on autocommit
connections; run by tests/it/prepared.rs through pgwarden in transaction mode and straight to PostgreSQL,
whose outputs must agree.

Each case prints one line: `results` holds what each statement gave, in order: its value, the SQLSTATE of
its error, or `-` for no result in a pipeline (failed or skipped after an error), `|` separating the parts
of a case; `errors` the SQLSTATEs a pipeline raised:
  RESULT case=pipeline_error results=2,-,-,4|5 errors=42P01
With PGW_COUNT_PREPARED=1 (straight to PostgreSQL, one session) a last line counts the session's prepared
statements: RESULT case=server_statements count=N
"""

import os

import psycopg

from _common import Config, emit


SYNC = "sync"


def outcome(fn):
    """What running `fn` gave: its value, or the SQLSTATE of its error."""
    try:
        return str(fn())
    except psycopg.Error as e:
        return e.sqlstate or ("none:" + type(e).__name__)


def value(cur):
    return cur.fetchone()[0]


def pipeline(conn, steps):
    """Runs `steps` in one pipeline: (sql, params) statements, each prepared on its own cursor, or SYNC.
    Returns what each statement's cursor holds afterwards (its value, or `-` for no result: failed or
    skipped after an error) and the SQLSTATEs of the errors raised. Where psycopg raises an error (at an
    execute, a sync, or the end of the pipeline) depends on when the replies arrive, so only which errors
    were raised is recorded, not where."""
    curs, errors = [], []

    def attempt(fn):
        try:
            fn()
        except psycopg.errors.PipelineAborted:
            pass
        except psycopg.Error as e:
            errors.append(e.sqlstate or ("none:" + type(e).__name__))

    def run():
        with conn.pipeline() as p:
            for step in steps:
                if step == SYNC:
                    attempt(p.sync)
                else:
                    cur = conn.cursor()
                    curs.append(cur)
                    attempt(lambda: cur.execute(step[0], step[1], prepare=True))

    attempt(run)
    results = []
    for cur in curs:
        try:
            results.append(str(value(cur)))
        except psycopg.Error:
            results.append("-")
    return results, errors


def pipeline_error(c):
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        results, errors = pipeline(
            conn,
            [
                ("select %s::int + 1", (1,)),
                ("select * from pgw_no_such_table", None),
                ("select %s::int + 2", (2,)),
                SYNC,
                ("select %s::int + 2", (2,)),
            ],
        )
        then = outcome(lambda: value(conn.execute("select %s::int + 1", (4,), prepare=True)))
    emit(case="pipeline_error", results=",".join(results) + "|" + then, errors=",".join(errors))


def failed_prepare(c):
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("drop table if exists pgw_later")
        q = "select count(*) from pgw_later"
        out = [outcome(lambda: value(conn.execute(q, prepare=True)))]
        conn.execute("create table pgw_later (a int)")
        out.append(outcome(lambda: value(conn.execute(q, prepare=True))))
        conn.execute("insert into pgw_later values (1)")
        out.append(outcome(lambda: value(conn.execute(q, prepare=True))))
        conn.execute("drop table pgw_later")
    emit(case="failed_prepare", results=",".join(out), errors="-")


def failed_prepare_pipeline(c):
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        conn.execute("drop table if exists pgw_later2")
        q = ("select count(*) from pgw_later2", None)
        first, errors = pipeline(conn, [("select %s::int", (1,)), q, ("select %s::int + 1", (1,))])
        conn.execute("create table pgw_later2 (a int)")
        second, more = pipeline(conn, [q])
        conn.execute("insert into pgw_later2 values (1)")
        third, still_more = pipeline(conn, [q])
        conn.execute("drop table pgw_later2")
    emit(
        case="failed_prepare_pipeline",
        results=",".join(first) + "|" + ",".join(second + third),
        errors=",".join(errors + more + still_more),
    )


def same_names(c):
    """Two connections whose statements get the same psycopg names (_pg3_0, ...) for different queries."""
    out = []
    with psycopg.connect(c.dsn(), autocommit=True) as a, psycopg.connect(
        c.dsn(), autocommit=True
    ) as b:
        for i in range(1, 4):
            for conn, q in ((a, "select 'a' || %s::text"), (b, "select 'b' || %s::text")):
                results, errors = pipeline(conn, [(q, (i,))])
                out += results + errors
    emit(case="same_names", results=",".join(out), errors="-")


def transaction(c):
    with psycopg.connect(c.dsn(), autocommit=True) as conn:
        q = "select %s::int + 10"
        out = []
        conn.execute("begin")
        with conn.pipeline():
            out.append(outcome(lambda: value(conn.execute(q, (1,), prepare=True))))
        out.append(outcome(lambda: value(conn.execute("select 1 / %s::int", (0,), prepare=True))))
        out.append(outcome(lambda: value(conn.execute(q, (1,), prepare=True))))
        conn.execute("rollback")
        then = outcome(lambda: value(conn.execute(q, (1,), prepare=True)))
        count = value(conn.execute("select count(*) from pg_prepared_statements"))
    emit(case="transaction", results=",".join(out) + "|" + then, errors="-")
    return count


def main():
    c = Config()
    pipeline_error(c)
    failed_prepare(c)
    failed_prepare_pipeline(c)
    same_names(c)
    count = transaction(c)
    if os.environ.get("PGW_COUNT_PREPARED") == "1":
        emit(case="server_statements", count=count)


main()
