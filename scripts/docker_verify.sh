#!/usr/bin/env bash
# Builds the Docker image and checks it end to end on a machine without an image registry:
#  1. starts Debian's docker.io daemon on a private socket (no iptables, no bridge);
#  2. makes the debian:bookworm-slim base image with debootstrap + docker import (once);
#  3. docker build --network host -t qtrain:verify .
#  4. runs the image (host network, a bind-mounted data volume), waits for its HEALTHCHECK to
#     say healthy, trains a session through the image's own qtrain CLI, saves a checkpoint;
#  5. stops the container (SIGTERM → sessions saved, exit 0), starts it again and checks that the
#     session came back; checks the image runs as non-root and carries no compiler.
# Needs root. Usage: scripts/docker_verify.sh [--keep] (keep the daemon's state for reruns)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${QTRAIN_DOCKER_WORK:-/var/tmp/qtrain-docker}
PORT=${QTRAIN_DOCKER_PORT:-50151}
METRICS=$((PORT + 1))
KEEP=${1:-}

log() { echo "== docker_verify: $*"; }
need=()
command -v dockerd > /dev/null || need+=(docker.io)
command -v debootstrap > /dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

mkdir -p "$WORK"
export DOCKER_HOST=unix://$WORK/docker.sock
# A run that was killed (or kept with --keep) may have left its daemon running: stop it first.
if [ -s "$WORK/dockerd.pid" ] && kill -0 "$(cat "$WORK/dockerd.pid")" 2> /dev/null; then
  kill "$(cat "$WORK/dockerd.pid")"
  for _ in $(seq 1 30); do kill -0 "$(cat "$WORK/dockerd.pid")" 2> /dev/null || break; sleep 1; done
fi
dockerd --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
  --data-root "$WORK/data-root" --exec-root "$WORK/exec-root" -H "$DOCKER_HOST" \
  --pidfile "$WORK/dockerd.pid" > "$WORK/dockerd.log" 2>&1 &
DOCKERD=$!
# Stops the container and the daemon; keeps the script's exit status.
cleanup() {
  local rc=$?
  docker rm -f qtrain-verify > /dev/null 2>&1 || true
  kill $DOCKERD 2> /dev/null && wait $DOCKERD 2> /dev/null || true
  if [ "$KEEP" != "--keep" ]; then
    # dockerd leaves its network namespace mounted under exec-root.
    umount "$WORK"/exec-root/netns/* 2> /dev/null || true
    rm -rf "$WORK" 2> /dev/null || echo "docker_verify: could not remove all of $WORK" >&2
  fi
  exit $rc
}
trap cleanup EXIT
for _ in $(seq 1 60); do docker info > /dev/null 2>&1 && break; sleep 0.5; done
docker info > /dev/null || { cat "$WORK/dockerd.log"; exit 1; }

if ! docker image inspect debian:bookworm-slim > /dev/null 2>&1; then
  log "debootstrap bookworm (minbase) → debian:bookworm-slim"
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" http://deb.debian.org/debian > "$WORK/debootstrap.log"
  tar -C "$WORK/rootfs" -c . | docker import - debian:bookworm-slim
  rm -rf "$WORK/rootfs"
fi

log "docker build"
start=$(date +%s)
docker build --network host -t qtrain:verify . > "$WORK/build.log" 2>&1 || { tail -50 "$WORK/build.log"; exit 1; }
log "built in $(( $(date +%s) - start )) s; image $(docker image inspect -f '{{.Size}}' qtrain:verify | awk '{printf "%.0f MB", $1/1e6}')"

log "the image runs as non-root and carries no compiler"
docker run --rm --entrypoint sh qtrain:verify -c \
  'test "$(id -u)" = 10001 && ! command -v g++ && ! command -v cmake && qtrain --help > /dev/null'

# Every run starts from an empty data volume and no container of an earlier run (the daemon's
# image cache under $WORK may be reused).
docker rm -f qtrain-verify > /dev/null 2>&1 || true
VOL="$WORK/volume"
rm -rf "$VOL"
mkdir -p "$VOL" && chown 10001:10001 "$VOL"
run_server() {
  docker run -d --name qtrain-verify --network host -v "$VOL:/var/lib/qtrain" \
    -e QTRAIN_SERVER=127.0.0.1:$PORT qtrain:verify \
    --listen=0.0.0.0:$PORT --metrics_listen=0.0.0.0:$METRICS --data_dir=/var/lib/qtrain > /dev/null
  for _ in $(seq 1 60); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' qtrain-verify)" = healthy ] && return 0
    sleep 1
  done
  docker logs qtrain-verify
  log "the container never became healthy"
  return 1
}
cli() {
  docker run --rm --network host -v /usr/share/datasets:/data:ro --entrypoint qtrain \
    qtrain:verify --server=127.0.0.1:$PORT --progress=none "$@"
}

log "run: health check"
run_server
docker logs qtrain-verify | head -2
log "train through the image's CLI (host network, port $PORT)"
cli session create docker --preset=mlp
cli train docker --data=/data/fashion-mnist --steps=50 --rules=qat-int8
cli checkpoint save docker
test -s "$VOL/sessions/docker.safetensors"
# Read the whole page first: `curl | grep -q` under pipefail fails when grep exits early and
# curl gets SIGPIPE.
metrics=$(curl -sf "http://127.0.0.1:$METRICS/metrics") || { log "no /metrics on :$METRICS"; exit 1; }
grep -q '^qtrain_steps_total{mode="qat"} 50' <<< "$metrics" || {
  log "no qtrain_steps_total for the 50 QAT steps on :$METRICS"; exit 1; }

log "SIGTERM saves and exits 0; a new container restores the session"
docker stop -t 30 qtrain-verify > /dev/null
[ "$(docker inspect -f '{{.State.ExitCode}}' qtrain-verify)" = 0 ]
docker rm qtrain-verify > /dev/null
run_server
session=$(cli session get docker)
grep -q 'step 50' <<< "$session" || { log "the restored session is not at step 50: $session"; exit 1; }
log "all checks passed"
