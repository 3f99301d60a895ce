"""The workload of _common.py with psycopg2 (threads, DB-API transactions: commit()/rollback()).

psycopg2 never prepares statements on the server, so `defaults` and `today` are the same settings.
"""

import threading

import psycopg2

from _common import READ_BURST, Config, Result, kind, sqlstate

INSERT = "insert into ledger (worker, seq, amount) values (%s, %s, %s)"
HOT = "select count(*), coalesce(sum(amount), 0) from ledger where worker = %s"


def worker(c, w, failures):
    try:
        r = Result(w)
        conn = psycopg2.connect(c.dsn())
        try:
            for seq in range(c.iters):
                if seq == c.iters // 2:
                    with conn.cursor() as cur:
                        for _ in range(READ_BURST):
                            cur.execute(HOT, (w,))
                            r.check(*cur.fetchone())
                        cur.execute("select count(*) from pg_prepared_statements")
                        r.prepared = cur.fetchone()[0]
                    conn.commit()
                    conn.close()
                    conn = psycopg2.connect(c.dsn())
                k = kind(seq)
                with conn.cursor() as cur:
                    if k == "error":
                        cur.execute(INSERT, (w, seq, seq))
                        for stmt in ("select 1/0", "select 1"):
                            try:
                                cur.execute(stmt)
                            except psycopg2.Error as e:
                                r.states.append(sqlstate(e))
                        conn.rollback()
                    cur.execute(INSERT, (w, seq, seq))
                    if k == "rollback":
                        conn.rollback()
                    else:
                        cur.execute("select pg_backend_pid()")
                        r.pids.add(cur.fetchone()[0])
                        conn.commit()
                        r.commit(seq)
                    cur.execute(HOT, (w,))
                    r.check(*cur.fetchone())
                    # Ends the read's transaction, so transaction pooling can hand the server on.
                    conn.commit()
        finally:
            conn.close()
        r.emit()
    except Exception as e:  # reported by main's exit status
        failures.append(f"worker {w}: {e!r}")


def main():
    c = Config()
    failures = []
    threads = [threading.Thread(target=worker, args=(c, w, failures)) for w in range(c.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit("\n".join(failures))


main()
