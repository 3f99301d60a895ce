#!/usr/bin/env bash
# One command: pgwarden, with examples/quickstart/pgbouncer.ini, in front of PostgreSQL.
#
#   examples/quickstart.sh
#       starts a throwaway PostgreSQL (initdb in a temp dir, a free port; as the postgres OS user when run
#       as root) with a role and database "app" (password "app"), then pgwarden on 127.0.0.1:6432.
#
#   PGHOST=db.internal PGPORT=5432 PGUSER=app PGPASSWORD=secret PGDATABASE=app examples/quickstart.sh
#       uses that PostgreSQL instead (PGUSER/PGPASSWORD must be a role that can log in there).
#
# PGWARDEN_PORT changes the listening port. Ctrl-C stops pgwarden (and the throwaway PostgreSQL).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
run="$repo/.pgwarden-run"
mkdir -p "$run"
listen_port="${PGWARDEN_PORT:-6432}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pg_ctl_stop=()
if [ -n "${PGHOST:-}" ]; then
    pg_host="$PGHOST"; pg_port="${PGPORT:-5432}"
    user="${PGUSER:-app}"; password="${PGPASSWORD:?set PGPASSWORD for the role pgwarden logs in as}"
    dbname="${PGDATABASE:-$user}"
else
    pg_bin=""
    for v in 17 16 15 14; do
        [ -x "/usr/lib/postgresql/$v/bin/initdb" ] && { pg_bin="/usr/lib/postgresql/$v/bin"; break; }
    done
    [ -n "$pg_bin" ] || pg_bin="$(pg_config --bindir 2>/dev/null || true)"
    [ -x "$pg_bin/initdb" ] || { echo "no PostgreSQL server binaries: apt-get install postgresql, or set PGHOST" >&2; exit 1; }
    pg_dir="${TMPDIR:-/tmp}/pgwarden-quickstart-$(id -u)"
    as_pg=()
    if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
    mkdir -p "$pg_dir"
    [ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
    if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
        "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust --no-sync -E UTF8 --locale=C >/dev/null
    fi
    pg_host=127.0.0.1; pg_port="$(free_port)"
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w \
        -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    pg_ctl_stop=("${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast stop)
    trap '"${pg_ctl_stop[@]}" >/dev/null 2>&1 || true' EXIT
    user=app; password=app; dbname=app
    psql -X -q -h "$pg_dir" -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1 <<SQL
SET password_encryption = 'scram-sha-256';
SELECT 'CREATE ROLE app LOGIN PASSWORD ''app''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') \gexec
SELECT 'CREATE DATABASE app OWNER app' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'app') \gexec
SQL
    echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') is running on 127.0.0.1:$pg_port (data in $pg_dir)"
fi

sed -e "s/^app = .*/app = host=$pg_host port=$pg_port dbname=$dbname/" \
    -e "s/^listen_port = .*/listen_port = $listen_port/" \
    "$repo/examples/quickstart/pgbouncer.ini" > "$run/pgbouncer.ini"
printf '"%s" "%s"\n' "$user" "${password//\"/\"\"}" > "$run/userlist.txt"

echo "building pgwarden (release)…"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p pgwarden
bin="${CARGO_TARGET_DIR:-$repo/target}/release/pgwarden"

cat <<MSG

pgwarden is starting on 127.0.0.1:$listen_port with $run/pgbouncer.ini (Ctrl-C stops it).
Connect as you would to PostgreSQL, only the port changes:

    psql "postgres://$user:<password>@127.0.0.1:$listen_port/app"      # the quickstart's password is "app"
    pgbench -i postgres://$user@127.0.0.1:$pg_port/$dbname && pgbench -c 20 -T 10 postgres://$user@127.0.0.1:$listen_port/app

MSG
"$bin" "$run/pgbouncer.ini"
