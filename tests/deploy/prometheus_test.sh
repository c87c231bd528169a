#!/usr/bin/env bash
# deploy/prometheus and deploy/grafana against the real thing: promtool checks and unit-tests the
# rules, then Debian's prometheus scrapes a real qtrain-server (1 s interval, the rules loaded)
# while the CLI trains a session, and every rule's and every dashboard panel's PromQL must
# evaluate and return data (tests/deploy/promql_check.py). Usage: prometheus_test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: prometheus_test.sh BUILD_DIR}
TMP=$(mktemp -d)
PIDS=()
# Wait for the processes before removing their files: the server saves its sessions on SIGTERM.
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
      for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT

promtool check rules deploy/prometheus/rules.yml
(cd deploy/prometheus && promtool test rules rules_test.yml)

"$BUILD/bin/qtrain-server" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --data_dir="$TMP/data" --autosave_steps=5 > "$TMP/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q 'metrics on' "$TMP/server.log" && break
  sleep 0.1
done
PORT=$(sed -n 's/^qtrain-server listening on port \([0-9]*\).*/\1/p' "$TMP/server.log")
METRICS=$(sed -n 's|^qtrain-server metrics on http://127.0.0.1:\([0-9]*\)/metrics|\1|p' "$TMP/server.log")
[ -n "$PORT" ] && [ -n "$METRICS" ] || { cat "$TMP/server.log"; exit 1; }
PROM=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$TMP/prometheus.yml" <<YAML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [$PWD/deploy/prometheus/rules.yml]
scrape_configs:
  - job_name: qtrain
    static_configs: [{targets: ["127.0.0.1:$METRICS"]}]
YAML
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
  --web.listen-address="127.0.0.1:$PROM" > "$TMP/prometheus.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PROM/-/ready" > /dev/null && break
  sleep 0.2
done
curl -sf "http://127.0.0.1:$PROM/-/ready" > /dev/null || { cat "$TMP/prometheus.log"; exit 1; }

# A short run that exercises every panel: float and QAT training with autosaves, evaluation.
export QTRAIN_SERVER=127.0.0.1:$PORT
Q="$BUILD/bin/qtrain"
FM=/usr/share/datasets/fashion-mnist
"$Q" session create fm --preset=mlp > /dev/null
for round in 1 2 3; do
  "$Q" train fm --data=$FM --steps=15 > /dev/null
  "$Q" train fm --data=$FM --steps=15 --rules=qat-int8 > /dev/null
  "$Q" eval fm --data=$FM --split=t10k --steps=4 > /dev/null
  sleep 2
done
sleep 3  # a few more scrapes and rule evaluations
/usr/bin/python3 tests/deploy/promql_check.py "http://127.0.0.1:$PROM"
echo "prometheus_test: passed"
