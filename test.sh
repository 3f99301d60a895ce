#!/usr/bin/env bash
# Every test of pgwarden: the host workspace (unit tests and the integration suite against a throwaway
# PostgreSQL) and the plugins workspace's native unit tests. See README.md, "Tests".
set -euo pipefail
cd "$(dirname "$0")"
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo test --workspace --locked "$@"
# The plugins are their own workspace (they build for wasm32-wasip2); their logic is tested natively.
(cd plugins && CARGO_TARGET_DIR="$target/plugins-native" cargo test --workspace --locked)
