"""The workload of _common.py with asyncpg (asyncio tasks).

`defaults`: asyncpg's statement cache (every statement a named server-side prepared statement, reused).
`today`: statement_cache_size=0, what PgBouncer's users set in transaction mode today.
"""

import asyncio

import asyncpg

from _common import READ_BURST, Config, Result, kind, sqlstate

INSERT = "insert into ledger (worker, seq, amount) values ($1, $2, $3)"
HOT = "select count(*), coalesce(sum(amount), 0) from ledger where worker = $1"


async def connect(c):
    kwargs = {}
    if c.profile == "today":
        kwargs["statement_cache_size"] = 0
    return await asyncpg.connect(
        host=c.host, port=c.port, user=c.user, password=c.password, database=c.dbname,
        ssl=False, timeout=20, **kwargs
    )


async def worker(c, w):
    r = Result(w)
    conn = await connect(c)
    try:
        for seq in range(c.iters):
            if seq == c.iters // 2:
                for _ in range(READ_BURST):
                    r.check(*(await conn.fetchrow(HOT, w)))
                r.prepared = await conn.fetchval("select count(*) from pg_prepared_statements")
                await conn.close()
                conn = await connect(c)
            k = kind(seq)
            if k == "error":
                tr = conn.transaction()
                await tr.start()
                await conn.execute(INSERT, w, seq, seq)
                for stmt in ("select 1/0", "select 1"):
                    try:
                        await conn.fetchval(stmt)
                    except asyncpg.PostgresError as e:
                        r.states.append(sqlstate(e))
                await tr.rollback()
            if k in ("commit", "error"):
                async with conn.transaction():
                    await conn.execute(INSERT, w, seq, seq)
                    r.pids.add(await conn.fetchval("select pg_backend_pid()"))
                r.commit(seq)
            else:
                tr = conn.transaction()
                await tr.start()
                await conn.execute(INSERT, w, seq, seq)
                await tr.rollback()
            r.check(*(await conn.fetchrow(HOT, w)))
    finally:
        await conn.close()
    r.emit()


async def main():
    c = Config()
    await asyncio.gather(*(worker(c, w) for w in range(c.workers)))


asyncio.run(main())
