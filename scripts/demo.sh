#!/usr/bin/env bash
# The main job: starts qtrain-server (data in ./qtrain-data, CPU, no other service), runs the
# quantized-training tour against it (client/demo: Fashion-MNIST float → int8 QAT → int8 QT,
# calibration, quant stats, checkpoint download), then stops the server gracefully.
# Usage: scripts/demo.sh [BUILD_DIR] [extra qtrain-demo flags...]; QTRAIN_DATA_DIR overrides
# the data dir.
set -euo pipefail
build=${1:-build}
shift || true
log=$(mktemp)
"$build/bin/qtrain-server" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --data_dir="${QTRAIN_DATA_DIR:-qtrain-data}" \
  >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$log"' EXIT
port=""
for _ in $(seq 1 200); do
  port=$(sed -n 's/^qtrain-server listening on port \([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.05
done
[ -n "$port" ] || { echo "qtrain-server did not start"; cat "$log"; exit 1; }
head -n 2 "$log"
"$build/bin/qtrain-demo" --server="127.0.0.1:$port" "$@"
