#!/usr/bin/env bash
# The README's test command (also what CI runs): installs what the tests need, then runs
# every test of the workspace with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
# A cold build keeps no incremental state: it saves gigabytes of disk (CI once ran out of it)
# and is no slower when everything is compiled once.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# kubectl is preinstalled on these machines; the kubectl tests need it.
command -v kubectl >/dev/null 2>&1 || echo "warning: kubectl not found; the kubectl tests will fail" >&2
# A real OCI registry for the runtimes's pull tests (Debian's docker-registry) and dig (a
# real DNS client) for the cluster DNS tests.
missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
# runc and a static busybox for the container runtime's tests (images are built from it).
command -v runc >/dev/null 2>&1 || missing+=(runc)
# (a static one: the test images hold nothing but /bin/busybox; ldd fails on static binaries)
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then missing+=(busybox-static); fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "warning: ${missing[*]} not installed; the tests that use them will fail" >&2
  fi
fi
# The sample Wasm components the runtime tests run (needs the wasm32-wasip2 target).
bash scripts/build-samples.sh
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo nextest run --workspace --no-fail-fast "$@"
