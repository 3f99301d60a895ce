#!/usr/bin/env bash
# pgwarden vs PgBouncer side by side with pgbench: a throwaway PostgreSQL, one pgbouncer.ini both poolers
# load unchanged, pgbench against a direct connection, PgBouncer and pgwarden interleaved per round.
#
# usage: bench/sidebyside/run.sh [--quick] [--rounds N] [--duration S] [--only scenario,...] [--help]
#
# Builds pgwarden (release) unless PGWARDEN_BIN names a binary. Writes results/<timestamp>/{report.md,raw.json}
# under bench/sidebyside/ (or --out DIR). Run as root (PostgreSQL and both poolers then run as the `postgres`
# OS user) or as an unprivileged user that can run initdb.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

for a in "$@"; do
    case "$a" in
        -h|--help) exec python3 "$here/sidebyside.py" --help ;;
    esac
done

if [ -z "${PGWARDEN_BIN:-}" ]; then
    (cd "$root" && cargo build --release -p pgwarden --bin pgwarden >&2)
    target=${CARGO_TARGET_DIR:-$root/target}
    PGWARDEN_BIN="$target/release/pgwarden"
fi
export PGWARDEN_BIN
exec python3 "$here/sidebyside.py" "$@"
