#!/usr/bin/env bash
# Builds the sample Wasm components (samples/) for wasm32-wasip2 and copies them to
# samples/dist/. Used by scripts/test.sh and scripts/demo.sh; safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2 --manifest-path samples/Cargo.toml
mkdir -p samples/dist
cp samples/target/wasm32-wasip2/release/hello_http.wasm samples/dist/hello-http.wasm
cp samples/target/wasm32-wasip2/release/pi.wasm samples/dist/pi.wasm
ls -l samples/dist
