"""psycopg 3 on pgwarden's admin console through the extended query protocol (run by tests/it/admin.rs).

psycopg 3 sends a query without parameters as a simple query; binary results, prepared statements and
pipelines make it use Parse/Bind/Describe/Execute/Sync instead, which is what this script exercises. It
connects to the console database named by PGW_DB and prints one line per check:
  RESULT check=<name> columns=<comma-separated names> rows=<n> first=<first value of the first row>
and, for the error check, RESULT check=error sqlstate=<code>.
"""

import os

import psycopg


def report(check, cur):
    columns = ",".join(d.name for d in cur.description)
    rows = cur.fetchall()
    first = rows[0][0] if rows else ""
    print(f"RESULT check={check} columns={columns} rows={len(rows)} first={first}", flush=True)


def main():
    e = os.environ
    dsn = (
        f"host={e['PGW_HOST']} port={e['PGW_PORT']} user={e['PGW_USER']} "
        f"password={e['PGW_PASSWORD']} dbname={e['PGW_DB']} connect_timeout=20"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Binary results: Parse, Bind (binary formats), Describe, Execute, Sync.
        report("binary", conn.execute("SHOW POOLS", binary=True))
        # A numeric column in binary (SHOW STATS).
        report("binary_numeric", conn.execute("SHOW STATS", binary=True))
        # A named prepared statement, run twice.
        report("prepared", conn.execute("SHOW VERSION", prepare=True))
        report("prepared_again", conn.execute("SHOW VERSION", prepare=True))
        # A pipeline: several extended-protocol queries before one Sync.
        with conn.pipeline():
            c1 = conn.execute("SHOW DATABASES")
            c2 = conn.execute("SHOW CLIENTS")
        report("pipeline_databases", c1)
        report("pipeline_clients", c2)
        # An error in the extended protocol leaves the connection usable.
        try:
            conn.execute("SHOW nothing", binary=True)
        except psycopg.Error as err:
            print(f"RESULT check=error sqlstate={err.sqlstate}", flush=True)
        # A command that returns no rows.
        cur = conn.execute("RECONNECT", binary=True)
        print(f"RESULT check=command status={cur.statusmessage.replace(' ', '_')}", flush=True)
        # The simple protocol still works after all that.
        report("simple", conn.execute("SHOW VERSION"))


if __name__ == "__main__":
    main()
