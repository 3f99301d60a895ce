"""psycopg 3 runs console commands one by one, autocommit, with `conn.execute` (run by tests/it/admin_every.rs).

argv[1] is the protocol: `simple` (psycopg's default for a query without parameters: one Query message) or
`extended` (`binary=True`: Parse, Bind, Describe, Execute, Sync). The commands are the lines of the
environment variable PGW_COMMANDS, run in order on one connection to the console (PGW_HOST, PGW_PORT,
PGW_USER, PGW_PASSWORD, PGW_DB). One line per command:
  RESULT n=<index> columns=<comma-separated names, or -> types=<their type OIDs, or -> rows=<n>
         status=<command tag, spaces as _>
  RESULT n=<index> error=<SQLSTATE> message=<first word of the message>
  RESULT n=<index> lost=1          (the connection closed: what the last command, SHUTDOWN, does)
Notices (SHOW HELP's) are counted: RESULT n=<index> ... notices=<n>.
"""

import os
import sys

import psycopg


def main():
    mode = sys.argv[1]
    if mode not in ("simple", "extended"):
        sys.exit(f"unknown protocol {mode!r}")
    e = os.environ
    dsn = (
        f"host={e['PGW_HOST']} port={e['PGW_PORT']} user={e['PGW_USER']} "
        f"password={e['PGW_PASSWORD']} dbname={e['PGW_DB']} connect_timeout=20"
    )
    commands = [c for c in e["PGW_COMMANDS"].split("\n") if c]
    conn = psycopg.connect(dsn, autocommit=True)
    notices = []
    conn.add_notice_handler(notices.append)
    for n, sql in enumerate(commands):
        notices.clear()
        try:
            cur = conn.execute(sql, binary=True) if mode == "extended" else conn.execute(sql)
        except psycopg.OperationalError as err:
            if conn.closed or conn.broken:
                print(f"RESULT n={n} lost=1", flush=True)
                break
            print(f"RESULT n={n} error={err.sqlstate} message={str(err).split()[0]}", flush=True)
            continue
        except psycopg.Error as err:
            print(f"RESULT n={n} error={err.sqlstate} message={str(err).split()[0]}", flush=True)
            continue
        if cur.description is not None:
            columns = ",".join(d.name for d in cur.description)
            types = ",".join(str(d.type_code) for d in cur.description)
            rows = len(cur.fetchall())
        else:
            columns, types, rows = "-", "-", 0
        status = (cur.statusmessage or "").replace(" ", "_")
        print(
            f"RESULT n={n} columns={columns} types={types} rows={rows} status={status} "
            f"notices={len(notices)}",
            flush=True,
        )
    if not conn.closed:
        conn.close()


if __name__ == "__main__":
    main()
