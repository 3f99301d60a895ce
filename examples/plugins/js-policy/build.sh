#!/usr/bin/env bash
# Builds js-policy.wasm (or the path given as $1) from policy.js with componentize-js, against world
# `policy-plugin` of pgwarden's wit/. Needs Node.js and node_modules installed by ../setup.sh;
# it downloads nothing: componentize-js, its SpiderMonkey engine and wizer all come from node_modules.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/js-policy.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"

fail() { echo "js-policy: $*" >&2; exit 1; }
command -v node >/dev/null || fail "Node.js is not installed (Debian: apt-get install nodejs npm; then run examples/plugins/setup.sh)"
pinned="$(node -p 'require("./package.json").devDependencies["@bytecodealliance/componentize-js"]')"
installed="$(node -p 'require("./node_modules/@bytecodealliance/componentize-js/package.json").version' 2>/dev/null || true)"
[ -n "$installed" ] || fail "componentize-js is not installed: run examples/plugins/setup.sh"
[ "$installed" = "$pinned" ] || fail "componentize-js $installed is installed but package.json pins $pinned: run examples/plugins/setup.sh"

# --disable http fetch-event: pgwarden links no wasi:http (plugins have no network), so a component importing it
# would not load. stdio (console.* and uncaught errors go to pgwarden's log), random and clocks (frozen at the
# epoch in pgwarden) stay: pgwarden links them.
node node_modules/@bytecodealliance/componentize-js/src/cli.js policy.js \
    --wit ../../../wit --world-name policy-plugin \
    --disable http fetch-event \
    --out "$out.tmp"
mv "$out.tmp" "$out"
echo "js-policy: built $out ($(stat -c %s "$out") bytes)"
