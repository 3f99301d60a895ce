"""Shared by the driver workloads of this directory (run by tests/it/drivers.rs through pgwarden).

Every workload runs the same story on the table `ledger(worker, seq, amount)` the test created: WORKERS
concurrent workers (threads or asyncio tasks), each ITERS iterations of seq = 0, 1, ...; by seq % 4:
  0, 2  a transaction inserting (worker, seq, seq) that commits;
  1     a transaction that inserts, hits `select 1/0` (22012), runs one more statement in the failed
        transaction (25P02), rolls back, then inserts the row again in a new transaction that commits;
  3     a transaction that inserts and rolls back.
After every iteration the worker reads its own count and sum (the same statement every time, so drivers
that prepare statements prepare it) and counts a mismatch when they differ from what it committed. Halfway,
on one connection, it reads them READ_BURST times in a row (psycopg prepares a statement on its 6th run and
forgets everything at each ROLLBACK), records how many statements its server session has prepared
(pg_prepared_statements), then closes that connection and opens a new one.

Settings come from the environment (PGW_HOST, PGW_PORT, PGW_USER, PGW_PASSWORD, PGW_DB, PGW_WORKERS,
PGW_ITERS); argv[1] names the driver settings: `defaults` or `today` (the settings PgBouncer's users run in
transaction mode today). Each worker prints one line for the test to check:
  RESULT worker=W committed=N sum=S states=22012,25P02,... mismatches=M prepared=P pids=1,2
"""

import os
import sys
import threading

_print_lock = threading.Lock()

# More runs than psycopg's default prepare_threshold (5).
READ_BURST = 6


class Config:
    def __init__(self):
        e = os.environ
        self.host = e["PGW_HOST"]
        self.port = int(e["PGW_PORT"])
        self.user = e["PGW_USER"]
        self.password = e["PGW_PASSWORD"]
        self.dbname = e["PGW_DB"]
        self.workers = int(e.get("PGW_WORKERS", "20"))
        self.iters = int(e.get("PGW_ITERS", "16"))
        self.profile = sys.argv[1] if len(sys.argv) > 1 else "defaults"
        if self.profile not in ("defaults", "today"):
            sys.exit(f"unknown settings {self.profile!r}: defaults or today")

    def dsn(self):
        return (
            f"host={self.host} port={self.port} user={self.user} password={self.password} "
            f"dbname={self.dbname} connect_timeout=20"
        )

    def url(self, driver):
        return (
            f"postgresql+{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{self.dbname}"
        )


def kind(seq):
    return ("commit", "error", "commit", "rollback")[seq % 4]


def sqlstate(exc):
    """The SQLSTATE of a driver's error, also when SQLAlchemy wraps it."""
    seen = [exc]
    for e in seen:
        for nxt in (getattr(e, "orig", None), e.__cause__):
            if nxt is not None and nxt not in seen and len(seen) < 8:
                seen.append(nxt)
        for attr in ("sqlstate", "pgcode"):
            code = getattr(e, attr, None)
            if isinstance(code, str):
                return code
    return "none:" + type(exc).__name__


class Result:
    def __init__(self, worker):
        self.worker = worker
        self.committed = 0
        self.sum = 0
        self.states = []
        self.mismatches = 0
        self.prepared = -1
        self.pids = set()

    def commit(self, seq):
        self.committed += 1
        self.sum += seq

    def check(self, count, total):
        if (int(count), int(total)) != (self.committed, self.sum):
            self.mismatches += 1

    def emit(self):
        line = (
            f"RESULT worker={self.worker} committed={self.committed} sum={self.sum} "
            f"states={','.join(self.states)} mismatches={self.mismatches} prepared={self.prepared} "
            f"pids={','.join(str(p) for p in sorted(self.pids))}"
        )
        with _print_lock:
            print(line, flush=True)


def emit(**fields):
    """One RESULT line of free-form fields (for scripts outside the standard workload)."""
    with _print_lock:
        print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
