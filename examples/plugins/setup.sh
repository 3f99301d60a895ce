#!/usr/bin/env bash
# Installs what the example plugins' build scripts need, at the versions their manifests pin:
#   js-policy/node_modules  (componentize-js and its dependencies, as package-lock.json pins them)
#   py-router/.venv         (componentize-py, from requirements.txt)
# Idempotent and quick when already installed: each step runs again only when its manifest changed.
# Needs Node.js 20 or newer with npm, and python3 with venv; .ci/run installs them on a fresh Debian.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

fail() { echo "setup: $*" >&2; exit 1; }
digest() { sha256sum "$1" | cut -d' ' -f1; }

# JavaScript: install package-lock.json's versions when it differs from what was installed. Not `npm ci`: the
# registry this project reaches lacks some optional per-platform packages of jco's dependencies (Windows, musl,
# Android builds), so the lock cannot list them and `npm ci` refuses it as out of sync; `npm install --no-save`
# installs the same locked versions, skips optional packages it cannot have, and never rewrites the lock.
js="$here/js-policy"
command -v node >/dev/null && command -v npm >/dev/null ||
    fail "Node.js and npm are needed for js-policy (Debian: apt-get install nodejs npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
# componentize-js's command line (commander 14) and the bundler jco uses (rolldown) need Node.js 20.
[ "$node_major" -ge 20 ] || fail "Node.js $(node --version) is too old for componentize-js (20 or newer)"
stamp="$js/node_modules/.pgwarden-lock.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$(digest "$js/package-lock.json")" ]; then
    echo "setup: npm install (package-lock.json) in $js"
    (cd "$js" && npm install --no-save --no-audit --no-fund --loglevel=error)
    digest "$js/package-lock.json" >"$stamp"
else
    echo "setup: $js/node_modules is up to date"
fi

# Python: a virtualenv with componentize-py when requirements.txt differs from what was installed.
py="$here/py-router"
command -v python3 >/dev/null || fail "python3 is needed for py-router (Debian: apt-get install python3 python3-venv)"
stamp="$py/.venv/.pgwarden-requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$(digest "$py/requirements.txt")" ]; then
    echo "setup: virtualenv with $(grep -v '^#' "$py/requirements.txt" | xargs) in $py/.venv"
    rm -rf "$py/.venv"
    python3 -m venv "$py/.venv" ||
        fail "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$py/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$py/requirements.txt"
    digest "$py/requirements.txt" >"$stamp"
else
    echo "setup: $py/.venv is up to date"
fi
