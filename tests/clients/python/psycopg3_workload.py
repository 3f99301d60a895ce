"""The workload of _common.py with psycopg 3 (asyncio, autocommit connections, transaction blocks).

`defaults`: psycopg's defaults, so the hot statement becomes a server-side prepared statement after
prepare_threshold (5) runs, and committing transactions go through pipeline mode.
`today`: prepare_threshold=None, what PgBouncer's users set in transaction mode today (still pipelined).
"""

import asyncio

import psycopg

from _common import READ_BURST, Config, Result, kind, sqlstate

INSERT = "insert into ledger (worker, seq, amount) values (%s, %s, %s)"
HOT = "select count(*), coalesce(sum(amount), 0) from ledger where worker = %s"


async def connect(c):
    kwargs = {"autocommit": True}
    if c.profile == "today":
        kwargs["prepare_threshold"] = None
    return await psycopg.AsyncConnection.connect(c.dsn(), **kwargs)


async def worker(c, w):
    r = Result(w)
    conn = await connect(c)
    try:
        for seq in range(c.iters):
            if seq == c.iters // 2:
                for _ in range(READ_BURST):
                    cur = await conn.execute(HOT, (w,))
                    r.check(*(await cur.fetchone()))
                cur = await conn.execute("select count(*) from pg_prepared_statements")
                r.prepared = (await cur.fetchone())[0]
                await conn.close()
                conn = await connect(c)
            k = kind(seq)
            if k == "error":
                async with conn.transaction():
                    await conn.execute(INSERT, (w, seq, seq))
                    for stmt in ("select 1/0", "select 1"):
                        try:
                            await conn.execute(stmt)
                        except psycopg.Error as e:
                            r.states.append(sqlstate(e))
                    raise psycopg.Rollback()
            if k in ("commit", "error"):
                async with conn.transaction():
                    async with conn.pipeline():
                        await conn.execute(INSERT, (w, seq, seq))
                        pid = await conn.execute("select pg_backend_pid()")
                    r.pids.add((await pid.fetchone())[0])
                r.commit(seq)
            else:
                async with conn.transaction():
                    await conn.execute(INSERT, (w, seq, seq))
                    raise psycopg.Rollback()
            cur = await conn.execute(HOT, (w,))
            r.check(*(await cur.fetchone()))
    finally:
        await conn.close()
    r.emit()


async def main():
    c = Config()
    await asyncio.gather(*(worker(c, w) for w in range(c.workers)))


asyncio.run(main())
