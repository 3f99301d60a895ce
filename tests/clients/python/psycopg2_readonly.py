"""Runbook 003's analytics client: psycopg2 with set_session(readonly=True, autocommit=True) on a
session-mode alias (psycopg2 then sends SET default_transaction_read_only), reads, a write refused by
PostgreSQL; then, after it disconnects, another client of the same pool writes.

Prints: RESULT client=readonly pid=P setting=on rows=N write_state=25006 write_error=...
        RESULT client=next pid=P setting=off inserted=1
"""

import psycopg2

from _common import Config, emit

c = Config()
a = psycopg2.connect(c.dsn())
a.set_session(readonly=True, autocommit=True)
with a.cursor() as cur:
    cur.execute("select pg_backend_pid(), current_setting('default_transaction_read_only')")
    pid, setting = cur.fetchone()
    cur.execute("select count(*) from ledger")
    rows = cur.fetchone()[0]
    try:
        cur.execute("insert into ledger (worker, seq, amount) values (1, 1, 1)")
        state, error = "none", "none"
    except psycopg2.Error as e:
        state, error = e.pgcode, e.pgerror.splitlines()[0].replace(" ", "_")
a.close()
emit(client="readonly", pid=pid, setting=setting, rows=rows, write_state=state, write_error=error)

b = psycopg2.connect(c.dsn())
b.autocommit = True
with b.cursor() as cur:
    cur.execute("select pg_backend_pid(), current_setting('default_transaction_read_only')")
    pid, setting = cur.fetchone()
    cur.execute("insert into ledger (worker, seq, amount) values (2, 2, 2)")
    inserted = cur.rowcount
b.close()
emit(client="next", pid=pid, setting=setting, inserted=inserted)
