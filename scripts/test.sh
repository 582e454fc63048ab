#!/usr/bin/env bash
# The README's test command (also what CI runs): installs what the tests need, then runs
# every test of the workspace with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
# kubectl is preinstalled on these machines; the kubectl tests need it.
command -v kubectl >/dev/null 2>&1 || echo "warning: kubectl not found; the kubectl tests will fail" >&2
# The sample Wasm components the runtime tests run (needs the wasm32-wasip2 target).
bash scripts/build-samples.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
cargo clippy --workspace --all-targets -- -D warnings
cargo nextest run --workspace --no-fail-fast "$@"
