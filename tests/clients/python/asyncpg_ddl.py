"""asyncpg's statement cache across a schema change; run by tests/it/prepared.rs through pgwarden in
transaction mode and straight to PostgreSQL, whose outputs must agree.

Two connections with asyncpg's default statement cache read `select * from ddl_t` a few times (so the
statement is prepared and reused), then a third connection adds a column. PostgreSQL fails the cached plan
with "cached plan must not change result type" (InvalidCachedStatementError); outside a transaction asyncpg
clears its cache, prepares the statement again and retries on its own, so the application sees the new
column. Inside a transaction it cannot retry: the error reaches the application, and after ROLLBACK the
next read works again. Prints one line per read:
  RESULT conn=A step=before columns=1
  RESULT conn=A step=in_transaction error=InvalidCachedStatementError
"""

import asyncio

import asyncpg

from _common import Config, emit

SELECT = "select * from ddl_t order by a"


async def connect(c):
    return await asyncpg.connect(
        host=c.host, port=c.port, user=c.user, password=c.password, database=c.dbname,
        ssl=False, timeout=20,
    )


async def read(conn, name, step):
    row = await conn.fetchrow(SELECT)
    emit(conn=name, step=step, columns=len(row), last=row[len(row) - 1])


async def main():
    c = Config()
    admin = await connect(c)
    await admin.execute("drop table if exists ddl_t; create table ddl_t (a int); insert into ddl_t values (1)")
    conns = {"A": await connect(c), "B": await connect(c)}
    for name, conn in conns.items():
        for _ in range(3):
            await read(conn, name, "before")

    await admin.execute("alter table ddl_t add column b int default 2")
    for name, conn in conns.items():
        await read(conn, name, "after_ddl")
        await read(conn, name, "again")

    await admin.execute("alter table ddl_t add column c int default 3")
    a = conns["A"]
    tr = a.transaction()
    await tr.start()
    try:
        await a.fetchrow(SELECT)
        emit(conn="A", step="in_transaction", error="none")
    except asyncpg.PostgresError as e:
        emit(conn="A", step="in_transaction", error=type(e).__name__)
    await tr.rollback()
    await read(a, "A", "after_rollback")
    await read(conns["B"], "B", "after_rollback")

    for conn in [admin, *conns.values()]:
        await conn.close()


asyncio.run(main())
