#!/usr/bin/env bash
# The README's main command: build the sample components and wk, then run a local cluster
# (control plane + node agent in one process, state in ./.wk) serving the hello-http
# sample. It prints where the sample answers; Ctrl-C (or `wk down`) stops it, and running
# this again resumes the same cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-samples.sh >/dev/null
cargo build --release -p wk
export WK_CONFIG="$PWD/.wk/config"
echo "client config: $WK_CONFIG   (e.g. WK_CONFIG=$WK_CONFIG target/release/wk get pods -o wide)"
exec target/release/wk up --data-dir .wk -f samples/manifests/hello.yaml "$@"
