#!/usr/bin/env bash
# Compatibility yardstick: run PgBouncer's own pytest suite against a pooler
# binary (pgwarden, or any PgBouncer) and print pass/fail/error/skip per file.
#
# usage: bench/yardstick/run.sh PGBOUNCER_TEST_DIR POOLER_BINARY [test_x.py ...] [-- pytest args]
# (no test files given: every test_*.py, one pytest run per file)
#
# Must be started as root (the suite, PostgreSQL and PgBouncer run as an
# unprivileged user via runuser) or as that unprivileged user itself.
#
# Environment knobs:
#   YARDSTICK_USER     OS user that runs the suite            (postgres)
#   YARDSTICK_VENV     virtualenv for the suite's Python deps (/tmp/pgwarden-yardstick-venv)
#   YARDSTICK_WORK     scratch dir for the copied suite       (mktemp -d)
#   YARDSTICK_TIMEOUT  per-test timeout, seconds              (30)
#   YARDSTICK_FILE_TIMEOUT  wall-clock limit per test file, seconds (900);
#                      pytest-timeout cannot always interrupt a test blocked in libpq
#   YARDSTICK_JOBS     pytest-xdist workers, 0 = sequential   (0)
#   YARDSTICK_PYTHON   interpreter for the venv, must be runnable by that user (/usr/bin/python3)
#   YARDSTICK_PGBIN    PostgreSQL server binaries             (/usr/lib/postgresql/15/bin)
#   YARDSTICK_TLS      yes/no: tell the suite TLS is built in (yes)
#   YARDSTICK_SHIM     1: readiness = TCP port open instead of the admin
#                      console's SHOW VERSION (see yardstick_shim.py); 0: suite as-is (1)
#   YARDSTICK_INI_DROP comma list of keys ("key" or "section.key") to remove from
#                      the suite's base test.ini so an older/partial pooler starts
#                      at all (see ini_adjust.py and the README)       ()
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { sed -n '2,26p' "$0"; exit 2; }
testdir=$(cd "$1" && pwd); shift
bin=$(readlink -f "$1"); shift
files=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do files+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
extra=("$@")

user=${YARDSTICK_USER:-postgres}
venv=${YARDSTICK_VENV:-/tmp/pgwarden-yardstick-venv}
work=${YARDSTICK_WORK:-$(mktemp -d /tmp/yardstick.XXXXXX)}
timeout=${YARDSTICK_TIMEOUT:-30}
jobs=${YARDSTICK_JOBS:-0}
pgbin=${YARDSTICK_PGBIN:-/usr/lib/postgresql/15/bin}
tls=${YARDSTICK_TLS:-yes}
shim=${YARDSTICK_SHIM:-1}

[ -f "$testdir/conftest.py" ] || { echo "no conftest.py in $testdir" >&2; exit 2; }
[ -x "$bin" ] || { echo "not executable: $bin" >&2; exit 2; }

if [ ! -x "$venv/bin/pytest" ]; then
    # a system interpreter, so that the unprivileged user can run it
    "${YARDSTICK_PYTHON:-/usr/bin/python3}" -m venv "$venv"
    "$venv/bin/pip" install -q pytest pytest-asyncio pytest-timeout pytest-xdist \
        'psycopg[binary]' filelock
fi

# The suite finds build features in ../config.mak relative to the test dir
# and its pytest settings in the checkout's pyproject.toml: lay out a copy.
mkdir -p "$work"
rm -rf "$work/test"
cp -r "$testdir" "$work/test"
rm -rf "$work/test/__pycache__" "$work/test/.pytest_cache"
# utils.py also reads ../include/bouncer.h (password length limit)
rm -rf "$work/include"
[ -d "$testdir/../include" ] && cp -r "$testdir/../include" "$work/include"
printf 'tls_support = %s\nldap_support = no\n' "$tls" > "$work/config.mak"
if [ -f "$testdir/../pyproject.toml" ]; then
    cp "$testdir/../pyproject.toml" "$work/pyproject.toml"
else
    printf '[pytest]\nasyncio_mode = auto\naddopts = --import-mode=prepend --tb=short\n' > "$work/pytest.ini"
fi
if [ -n "${YARDSTICK_INI_DROP:-}" ]; then
    python3 "$here/ini_adjust.py" "$work/test/test.ini" "$YARDSTICK_INI_DROP"
fi
cp "$here/yardstick_shim.py" "$work/"
mkdir -p "$work/bin"
rm -f "$work/bin/pooler"
cp "$bin" "$work/bin/pooler"
chmod 755 "$work/bin/pooler"
chown -R "$user" "$work" 2>/dev/null || true

plugin=()
[ "$shim" = 1 ] && plugin=(-p yardstick_shim)
if [ ${#files[@]} -eq 0 ]; then
    files=($(cd "$work/test" && ls test_*.py))
fi

as_user() {
    if [ "$(id -un)" = "$user" ]; then "$@"; else runuser -u "$user" -- "$@"; fi
}
xdist=(-n 0)
[ "$jobs" != 0 ] && xdist=(-n "$jobs")

echo "yardstick: $bin in $work (timeout ${timeout}s/test, shim=$shim)" >&2
# One pytest per file: a hang or an internal pytest error in one file must
# not cost the others their results.  --tb=native (instead of the suite's
# --tb=short --showlocals): pytest's own traceback formatting can die with
# "AST constructor recursion depth mismatch" when a timeout fires mid-test.
rm -rf "$work/junit" "$work/tmp"; mkdir -p "$work/junit" "$work/tmp"
chown "$user" "$work/junit" "$work/tmp" 2>/dev/null || true
: > "$work/pytest.log"; chown "$user" "$work/pytest.log" 2>/dev/null || true
for f in "${files[@]}"; do
    f=${f#test/}
    stem=${f%.py}
    echo "== $f" >> "$work/pytest.log"
    (cd "$work" && as_user env PATH="$pgbin:$PATH" PYTHONPATH="$work" \
        BOUNCER_EXE="$work/bin/pooler" HOME="$work" \
        timeout -k 30 "${YARDSTICK_FILE_TIMEOUT:-900}" \
        "$venv/bin/pytest" "${plugin[@]}" "${xdist[@]}" -o timeout="$timeout" \
        -o asyncio_default_fixture_loop_scope=function \
        -o addopts=--import-mode=prepend --tb=native \
        -q -rN --basetemp="$work/tmp/$stem" --junitxml="$work/junit/$stem.xml" \
        "test/$f" "${extra[@]}" >> "$work/pytest.log" 2>&1) || true
    echo "$f: $(tail -n 1 "$work/pytest.log")" >&2
    # leftovers of a test that crashed or timed out: poolers, PostgreSQL
    for pid in $(pgrep -f "^$work/bin/pooler " || true); do kill -KILL "$pid" 2>/dev/null || true; done
    for pd in "$work/tmp/$stem"/pgdata*; do
        [ -f "$pd/postmaster.pid" ] && as_user "$pgbin/pg_ctl" -D "$pd" -m immediate stop >/dev/null 2>&1 || true
    done
done
ls "$work"/junit/*.xml > /dev/null 2>&1 || { echo "pytest produced no report, see $work/pytest.log" >&2; exit 1; }
"$venv/bin/python" "$here/summarize.py" --failures "$work/failures.txt" "$work"/junit/*.xml
echo "details: $work/pytest.log, failing tests: $work/failures.txt" >&2
exit 0
