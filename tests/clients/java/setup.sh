#!/usr/bin/env bash
# Compiles PgWorkload.java (the pgjdbc workload of the `drivers` integration tests) into a directory outside
# the clone and prints it:
#   ${PGWARDEN_JAVACLIENTS_DIR:-$HOME/.cache/pgwarden-javaclients/<first 16 hex digits of
#     sha256(PgWorkload.java)>}
# The tests compute the same path (or read PGWARDEN_JAVACLIENTS_DIR) and run
#   java -cp <dir>:/usr/share/java/postgresql.jar PgWorkload ...
# pgjdbc is Debian's libpostgresql-jdbc-java, java and javac a JDK (default-jdk-headless); .ci/run installs
# both. Idempotent and quick when compiled: a changed source gets a new directory; a half-built one (no
# stamp) is rebuilt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fail() { echo "setup: $*" >&2; exit 1; }
jar=/usr/share/java/postgresql.jar
command -v javac >/dev/null || fail "javac is needed (Debian: apt-get install default-jdk-headless)"
command -v java >/dev/null || fail "java is needed (Debian: apt-get install default-jdk-headless)"
[ -f "$jar" ] || fail "pgjdbc is needed in $jar (Debian: apt-get install libpostgresql-jdbc-java)"
digest="$(sha256sum "$here/PgWorkload.java" | cut -c1-16)"
dir="${PGWARDEN_JAVACLIENTS_DIR:-$HOME/.cache/pgwarden-javaclients/$digest}"
stamp="$dir/.pgwarden-source.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    echo "setup: compiling $here/PgWorkload.java into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    javac -Xlint:all -Werror -d "$dir" "$here/PgWorkload.java" 1>&2
    # The driver loads from the jar next to the compiled classes; its version goes to the log.
    java -cp "$dir:$jar" PgWorkload version >&2 || fail "pgjdbc does not load from $jar"
    echo "$digest" >"$stamp"
else
    echo "setup: $dir is up to date" >&2
fi
echo "$dir"
