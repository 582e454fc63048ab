#!/usr/bin/env bash
# The README's main command: build wk, start a server on loopback with its data under
# ./.wk, apply the sample manifests and list what the cluster holds. The server keeps
# running until Ctrl-C. (Running the Wasm sample arrives with the node agent.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p wk
WK=target/release/wk
export WK_CONFIG="$PWD/.wk/config"
mkdir -p .wk
$WK server --data-dir .wk/data --listen 127.0.0.1:6443 > .wk/server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  grep -q "listening on" .wk/server.log 2>/dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat .wk/server.log; exit 1; }
  sleep 0.1
done
$WK apply -f samples/manifests/
echo
$WK get deployments
echo
$WK get services
echo
$WK get configmaps
cat <<MSG

wk server is running at https://127.0.0.1:6443 (data in .wk/data, log in .wk/server.log).
Try:  WK_CONFIG=$WK_CONFIG $WK get ns
      kubectl --kubeconfig $WK_CONFIG get deploy
Press Ctrl-C to stop.
MSG
wait $SERVER
