#!/usr/bin/env bash
# Many sessions over many replicas: two qtrain-server replicas behind nginx with the upstream of
# deploy/nginx/qtrain.conf (consistent hashing on the qtrain-session header), all on 127.0.0.1,
# in plaintext. 20 sessions created through the proxy spread over both replicas, each lives on
# exactly one, and every later call through the proxy — unary, streams, from the CLI (C++ client)
# and the Python client — lands on its owner. Then a third replica joins the proxy's ring: the
# sessions it now owns are NOT_FOUND through the proxy until `qtrain rebalance` moves them, after
# which all 20 are reachable again, each on one replica, at its step.
# Usage: routing_test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: routing_test.sh BUILD_DIR}
QTRAIN="$BUILD/bin/qtrain"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
fail() {
  echo "routing_test: $*" >&2
  for f in "$TMP"/*.log; do echo "== $f" >&2; tail -5 "$f" >&2; done
  exit 1
}

replica() {  # replica NAME: starts it, prints its port
  local name=$1 port=""
  mkdir -p "$TMP/$name"
  "$BUILD/bin/qtrain-server" --listen=127.0.0.1:0 --metrics_listen= --data_dir="$TMP/$name" \
    --replica_name="$name" > "$TMP/$name.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    port=$(sed -n 's/^qtrain-server listening on port \([0-9]*\).*/\1/p' "$TMP/$name.log")
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || fail "replica $name did not start"
  echo "$port"
}
A=$(replica a)
B=$(replica b)
PROXY=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# deploy/nginx/qtrain.conf with this test's replicas (the ports given), in plaintext, paths
# under $TMP.
proxy_conf() {
  local servers="" p
  for p in "$@"; do servers="${servers}    server 127.0.0.1:$p;\n"; done
  sed -e "/server qtrain-1.qtrain-pods:50051;/d" \
      -e "s#    server qtrain-0.qtrain-pods:50051;#$servers#" \
      -e "s#listen 50051 ssl http2;#listen 127.0.0.1:$PROXY http2;#" \
      -e "/ssl_certificate\|grpc_ssl_/d" -e "s#grpcs://#grpc://#" \
      -e "s#/tmp/nginx#$TMP/nginx#g" -e "s#^worker_processes auto;#worker_processes 1;#" \
      deploy/nginx/qtrain.conf > "$TMP/nginx.conf"
  grep -q "hash \$http_qtrain_session consistent;" "$TMP/nginx.conf" || fail "no consistent hash"
  echo "error_log $TMP/nginx.log;" >> "$TMP/nginx.conf"
}
proxy_conf "$A" "$B"
nginx -t -c "$TMP/nginx.conf" -g "daemon off;" > /dev/null 2>&1 || fail "nginx -t: $(nginx -t -c "$TMP/nginx.conf" 2>&1)"
nginx -c "$TMP/nginx.conf" -g "daemon off;" 2> "$TMP/nginx-stderr.log" &
PIDS+=($!)
for _ in $(seq 1 50); do
  (exec 3<> "/dev/tcp/127.0.0.1/$PROXY") 2>/dev/null && break
  sleep 0.1
done

export QTRAIN_SERVER=127.0.0.1:$PROXY
for i in $(seq 1 20); do
  "$QTRAIN" session create "r$i" --preset=mlp > /dev/null || fail "create r$i through the proxy"
done
ids() { "$QTRAIN" --server="127.0.0.1:$1" session list --json |
        /usr/bin/python3 -c 'import json, sys; print(" ".join(sorted(s["session_id"] for s in json.load(sys.stdin).get("sessions", []))))'; }
ON_A=$(ids "$A")
ON_B=$(ids "$B")
NA=$(wc -w <<< "$ON_A")
NB=$(wc -w <<< "$ON_B")
echo "replica a: $NA sessions, replica b: $NB sessions"
[ "$NA" -gt 0 ] && [ "$NB" -gt 0 ] || fail "sessions did not spread: a=$NA b=$NB"
[ $((NA + NB)) -eq 20 ] || fail "expected 20 sessions in all, got $((NA + NB))"
for id in $ON_A; do
  grep -qw "$id" <<< "$ON_B" && fail "$id lives on both replicas"
done

# Every later call through the proxy reaches the owner: a miss would be NOT_FOUND.
for i in $(seq 1 20); do
  "$QTRAIN" session get "r$i" > /dev/null || fail "get r$i through the proxy"
done
for i in 1 2 3 4; do  # streams: Train, Evaluate
  "$QTRAIN" train "r$i" --data=/usr/share/datasets/fashion-mnist --steps=3 --progress=none \
    > /dev/null || fail "train r$i through the proxy"
  "$QTRAIN" eval "r$i" --data=/usr/share/datasets/fashion-mnist --split=t10k --steps=2 \
    --progress=none > /dev/null || fail "eval r$i through the proxy"
done
PYTHONPATH="$BUILD/python:client/python" /usr/bin/python3 - "$PROXY" <<'PY' || fail "python client"
import sys
import qtrain
c = qtrain.Client(f"127.0.0.1:{sys.argv[1]}")
for i in range(1, 21):
    s = c.get_session(f"r{i}")
    assert s.session_id == f"r{i}", s
assert c.get_session("r1").step == 3
print("python client: 20 sessions reached through the proxy")
PY
# The trained sessions moved on their owner only.
for i in 1 2 3 4; do
  owner=$B
  grep -qw "r$i" <<< "$ON_A" && owner=$A
  step=$("$QTRAIN" --server="127.0.0.1:$owner" session get "r$i" --json |
         /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin).get("step", 0))')
  [ "$step" = "3" ] || fail "r$i on its owner is at step $step, expected 3"
done

# A third replica joins the ring. The sessions it now owns are not there yet: NOT_FOUND (exit 4)
# through the proxy, never served by two replicas.
C=$(replica c)
proxy_conf "$A" "$B" "$C"
nginx -c "$TMP/nginx.conf" -s reload 2>> "$TMP/nginx-stderr.log" || fail "nginx reload"
sleep 1
missing=0
for i in $(seq 1 20); do
  rc=0
  "$QTRAIN" session get "r$i" > /dev/null 2>> "$TMP/after_ring.log" || rc=$?
  case $rc in
    0) ;;
    4) missing=$((missing + 1)) ;;  # NOT_FOUND
    *) fail "get r$i after the ring changed: exit $rc: $(tail -1 "$TMP/after_ring.log")" ;;
  esac
done
echo "after adding replica c: $missing of 20 sessions route to it"
[ "$missing" -gt 0 ] || fail "no session moved to the new replica"
"$QTRAIN" rebalance --replicas="127.0.0.1:$A,127.0.0.1:$B,127.0.0.1:$C" > "$TMP/rebalance.txt" ||
  fail "rebalance: $(cat "$TMP/rebalance.txt")"
cat "$TMP/rebalance.txt"
grep -q "^rebalanced 3 replicas: $missing sessions moved, $((20 - missing)) already in place, 0 failed$" \
  "$TMP/rebalance.txt" || fail "unexpected rebalance summary"
for i in $(seq 1 20); do
  "$QTRAIN" session get "r$i" > /dev/null || fail "get r$i after the rebalance"
done
ON_A=$(ids "$A")
ON_B=$(ids "$B")
ON_C=$(ids "$C")
ALL=$(tr ' ' '\n' <<< "$ON_A $ON_B $ON_C" | grep . | sort)
[ "$(wc -l <<< "$ALL")" = 20 ] && [ "$(sort -u <<< "$ALL" | wc -l)" = 20 ] ||
  fail "after the rebalance: $(wc -l <<< "$ALL") sessions, not 20 distinct"
[ "$(wc -w <<< "$ON_C")" = "$missing" ] || fail "replica c hosts $(wc -w <<< "$ON_C"), not $missing"
for i in 1 2 3 4; do
  step=$("$QTRAIN" session get "r$i" --json |
         /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin).get("step", 0))')
  [ "$step" = "3" ] || fail "r$i is at step $step after the rebalance, expected 3"
done
"$QTRAIN" rebalance --replicas="127.0.0.1:$A,127.0.0.1:$B,127.0.0.1:$C" | tail -1 |
  grep -q "0 sessions moved, 20 already in place" || fail "a second rebalance moved sessions"
echo "routing_test: passed"
