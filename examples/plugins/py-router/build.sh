#!/usr/bin/env bash
# Builds py-router.wasm (or the path given as $1) from app.py with componentize-py, against world
# `router-plugin` of pgwarden's wit/. Needs componentize-py as pinned in requirements.txt, in .venv here
# (examples/plugins/setup.sh makes it) or on PATH; it downloads nothing: componentize-py ships CPython for
# WebAssembly and its standard library inside its wheel.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/py-router.wasm}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
cd "$here"

fail() { echo "py-router: $*" >&2; exit 1; }
pinned="$(sed -n 's/^componentize-py==\([^ ]*\).*/\1/p' requirements.txt)"
if [ -x .venv/bin/componentize-py ]; then
    cpy=.venv/bin/componentize-py
elif command -v componentize-py >/dev/null; then
    cpy=componentize-py
else
    fail "componentize-py is not installed: run examples/plugins/setup.sh (or: python3 -m venv $here/.venv && $here/.venv/bin/pip install -r $here/requirements.txt)"
fi
installed="$("$cpy" --version 2>/dev/null | awk '{print $2}')"
[ "$installed" = "$pinned" ] || fail "componentize-py ${installed:-?} ($cpy) is installed but requirements.txt pins $pinned: run examples/plugins/setup.sh"

# Keep the host's Python from writing __pycache__ here while componentize-py reads app.py.
export PYTHONDONTWRITEBYTECODE=1
"$cpy" -d ../../../wit -w router-plugin componentize app -p . -o "$out.tmp"
mv "$out.tmp" "$out"
echo "py-router: built $out ($(stat -c %s "$out") bytes)"
