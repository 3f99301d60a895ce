"""psycopg 3 changes its application_name while the console watches (run by tests/it/admin_live.rs).

Connects to the pool database (PGW_HOST, PGW_PORT, PGW_USER, PGW_PASSWORD, PGW_DB) with application_name
`ps_start`, autocommit, and to the console (PGW_CONSOLE_USER, PGW_CONSOLE_PASSWORD, database pgbouncer). Finds
its own row of SHOW CLIENTS by its local port, and prints, after each step, what that row's
application_name says:
  RESULT step=start listed=<SHOW CLIENTS' application_name> rows=<rows with that port>
  RESULT step=set listed=...          (after SET application_name = 'ps_set')
  RESULT step=reset listed=... shown=<SHOW application_name through the client>   (after RESET)
"""

import os
import socket

import psycopg


def dsn(user, password, dbname, app=None):
    e = os.environ
    text = (
        f"host={e['PGW_HOST']} port={e['PGW_PORT']} user={user} password={password} "
        f"dbname={dbname} connect_timeout=20"
    )
    if app is not None:
        text += f" application_name={app}"
    return text


def main():
    e = os.environ
    with psycopg.connect(
        dsn(e["PGW_USER"], e["PGW_PASSWORD"], e["PGW_DB"], "ps_start"), autocommit=True
    ) as conn, psycopg.connect(
        dsn(e["PGW_CONSOLE_USER"], e["PGW_CONSOLE_PASSWORD"], "pgbouncer"), autocommit=True
    ) as console:
        sock = socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        my_port = sock.getsockname()[1]
        sock.close()

        def listed():
            cur = console.execute("SHOW CLIENTS")
            names = [d.name for d in cur.description]
            rows = [
                dict(zip(names, r))
                for r in cur.fetchall()
                if r[names.index("port")] == my_port and r[names.index("database")] == e["PGW_DB"]
            ]
            app = rows[0]["application_name"] if rows else "<none>"
            return f"listed={app} rows={len(rows)}"

        conn.execute("SELECT 1")
        print(f"RESULT step=start {listed()}", flush=True)
        conn.execute("SET application_name = 'ps_set'")
        print(f"RESULT step=set {listed()}", flush=True)
        conn.execute("RESET application_name")
        shown = conn.execute("SHOW application_name").fetchone()[0]
        print(f"RESULT step=reset {listed()} shown={shown}", flush=True)


if __name__ == "__main__":
    main()
