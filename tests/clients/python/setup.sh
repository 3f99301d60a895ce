#!/usr/bin/env bash
# Installs the Python drivers of requirements.txt (psycopg 3, psycopg2, asyncpg, SQLAlchemy) and the parsers the
# `metrics` and `sidecar` tests use (prometheus_client, PyYAML) into a virtualenv outside the clone, for the
# integration tests, and prints its path:
#   ${PGWARDEN_PYCLIENTS_VENV:-$HOME/.cache/pgwarden-pyclients/<first 16 hex digits of sha256(requirements.txt)>}
# The tests compute the same path (or read PGWARDEN_PYCLIENTS_VENV). Idempotent and quick when installed: a
# changed requirements.txt gets a new directory; a half-built one (no stamp) is rebuilt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fail() { echo "setup: $*" >&2; exit 1; }
command -v python3 >/dev/null || fail "python3 is needed (Debian: apt-get install python3 python3-venv)"
digest="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
venv="${PGWARDEN_PYCLIENTS_VENV:-$HOME/.cache/pgwarden-pyclients/$digest}"
stamp="$venv/.pgwarden-requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    echo "setup: virtualenv with $(grep -v '^#' "$here/requirements.txt" | xargs) in $venv" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" || fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$here/requirements.txt"
    "$venv/bin/python" -c 'import psycopg, psycopg2, asyncpg, sqlalchemy, greenlet, prometheus_client, yaml' ||
        fail "the drivers do not import from $venv"
    echo "$digest" >"$stamp"
else
    echo "setup: $venv is up to date" >&2
fi
echo "$venv"
