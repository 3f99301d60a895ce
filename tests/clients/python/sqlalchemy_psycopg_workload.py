"""The workload of _common.py with SQLAlchemy 2 ORM sessions over psycopg 3 (threads sharing one Engine's
connection pool of PGW_SA_POOL_SIZE connections, default 3; no overflow).

`defaults`: psycopg's defaults (server-side prepares after 5 runs of a statement on a connection).
`today`: connect_args prepare_threshold=None, what PgBouncer's users set in transaction mode today.
The halfway reconnect invalidates the pooled connection the worker holds, so the pool opens a new one.
"""

import os
import threading

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from _common import READ_BURST, Config, Result, kind, sqlstate


class Base(DeclarativeBase):
    pass


class Ledger(Base):
    __tablename__ = "ledger"
    worker: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    amount: Mapped[int]


def worker(c, engine, w, failures):
    try:
        r = Result(w)
        hot = select(func.count(), func.coalesce(func.sum(Ledger.amount), 0)).where(Ledger.worker == w)
        for seq in range(c.iters):
            if seq == c.iters // 2:
                with engine.connect() as conn:
                    for _ in range(READ_BURST):
                        r.check(*conn.execute(hot).one())
                    r.prepared = conn.scalar(text("select count(*) from pg_prepared_statements"))
                    conn.invalidate()
            k = kind(seq)
            if k == "error":
                with Session(engine) as s:
                    s.add(Ledger(worker=w, seq=seq, amount=seq))
                    s.flush()
                    for stmt in ("select 1/0", "select 1"):
                        try:
                            s.execute(text(stmt))
                        except DBAPIError as e:
                            r.states.append(sqlstate(e))
                    s.rollback()
            if k in ("commit", "error"):
                with Session(engine) as s, s.begin():
                    s.add(Ledger(worker=w, seq=seq, amount=seq))
                    s.flush()
                    r.pids.add(s.scalar(text("select pg_backend_pid()")))
                r.commit(seq)
            else:
                with Session(engine) as s:
                    s.add(Ledger(worker=w, seq=seq, amount=seq))
                    s.flush()
                    s.rollback()
            with Session(engine) as s:
                r.check(*s.execute(hot).one())
        r.emit()
    except Exception as e:  # reported by main's exit status
        failures.append(f"worker {w}: {e!r}")


def main():
    c = Config()
    connect_args = {"connect_timeout": 20}
    if c.profile == "today":
        connect_args["prepare_threshold"] = None
    size = int(os.environ.get("PGW_SA_POOL_SIZE", "3"))
    engine = create_engine(
        c.url("psycopg"), pool_size=size, max_overflow=0, pool_timeout=30, connect_args=connect_args
    )
    failures = []
    threads = [
        threading.Thread(target=worker, args=(c, engine, w, failures)) for w in range(c.workers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    if failures:
        raise SystemExit("\n".join(failures))


main()
