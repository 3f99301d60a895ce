"""The workload of _common.py with SQLAlchemy 2 Core over asyncpg (asyncio tasks sharing one AsyncEngine).

`defaults`: a pool of PGW_SA_POOL_SIZE connections (default 3, no overflow) and the dialect's and asyncpg's
statement caches (named server-side prepared statements).
`today`: SQLAlchemy's documented settings for PgBouncer in transaction mode: NullPool, asyncpg's
statement_cache_size=0, the dialect's prepared_statement_cache_size=0, and unique prepared statement names
(prepared_statement_name_func).
The halfway reconnect invalidates the connection the worker holds.
"""

import asyncio
import os
import uuid

from sqlalchemy import Column, Integer, MetaData, Table, func, insert, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from _common import READ_BURST, Config, Result, kind, sqlstate

ledger = Table(
    "ledger",
    MetaData(),
    Column("worker", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("amount", Integer, nullable=False),
)


def row(w, seq):
    return insert(ledger).values(worker=w, seq=seq, amount=seq)


async def worker(c, engine, w):
    r = Result(w)
    hot = select(func.count(), func.coalesce(func.sum(ledger.c.amount), 0)).where(ledger.c.worker == w)
    for seq in range(c.iters):
        if seq == c.iters // 2:
            async with engine.connect() as conn:
                for _ in range(READ_BURST):
                    r.check(*(await conn.execute(hot)).one())
                r.prepared = await conn.scalar(text("select count(*) from pg_prepared_statements"))
                await conn.invalidate()
        k = kind(seq)
        if k == "error":
            async with engine.connect() as conn:
                await conn.execute(row(w, seq))
                for stmt in ("select 1/0", "select 1"):
                    try:
                        await conn.execute(text(stmt))
                    except DBAPIError as e:
                        r.states.append(sqlstate(e))
                await conn.rollback()
        if k in ("commit", "error"):
            async with engine.begin() as conn:
                await conn.execute(row(w, seq))
                r.pids.add(await conn.scalar(text("select pg_backend_pid()")))
            r.commit(seq)
        else:
            async with engine.connect() as conn:
                await conn.execute(row(w, seq))
                await conn.rollback()
        async with engine.connect() as conn:
            r.check(*(await conn.execute(hot)).one())
    r.emit()


async def main():
    c = Config()
    if c.profile == "today":
        engine = create_async_engine(
            c.url("asyncpg") + "?prepared_statement_cache_size=0",
            poolclass=NullPool,
            connect_args={
                "statement_cache_size": 0,
                "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
                "timeout": 20,
            },
        )
    else:
        size = int(os.environ.get("PGW_SA_POOL_SIZE", "3"))
        engine = create_async_engine(
            c.url("asyncpg"), pool_size=size, max_overflow=0, pool_timeout=30,
            connect_args={"timeout": 20},
        )
    try:
        await asyncio.gather(*(worker(c, engine, w) for w in range(c.workers)))
    finally:
        await engine.dispose()


asyncio.run(main())
