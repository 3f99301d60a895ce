#!/usr/bin/env bash
# Installs the Node.js drivers of package.json/package-lock.json (node-postgres) into a node_modules outside
# the clone, for the `drivers` integration tests, and prints the directory holding it:
#   ${PGWARDEN_NODECLIENTS_DIR:-$HOME/.cache/pgwarden-nodeclients/<first 16 hex digits of
#     sha256(package.json + package-lock.json)>}
# The tests compute the same path (or read PGWARDEN_NODECLIENTS_DIR) and run the scripts with
# NODE_PATH=<dir>/node_modules. Idempotent and quick when installed: a changed manifest gets a new directory;
# a half-built one (no stamp) is rebuilt. Needs Node.js 18+ and npm on PATH (.ci/run puts Node.js 20 there).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
fail() { echo "setup: $*" >&2; exit 1; }
command -v node >/dev/null || fail "node is needed (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null || fail "npm is needed (Debian: apt-get install npm)"
digest="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)"
dir="${PGWARDEN_NODECLIENTS_DIR:-$HOME/.cache/pgwarden-nodeclients/$digest}"
stamp="$dir/.pgwarden-manifest.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    echo "setup: node_modules from $here/package-lock.json in $dir" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$here/package.json" "$here/package-lock.json" "$dir/"
    # Exactly the lock file's versions; npm's output goes to stderr so stdout stays the path.
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error 1>&2)
    NODE_PATH="$dir/node_modules" node -e 'require("pg"); require("pg/package.json")' ||
        fail "node-postgres does not load from $dir/node_modules"
    echo "$digest" >"$stamp"
else
    echo "setup: $dir is up to date" >&2
fi
echo "$dir"
