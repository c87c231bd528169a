#!/usr/bin/env bash
# Builds the Docker image and checks it end to end on a machine without an image registry:
#  1. starts Debian's docker.io daemon on a private socket (no iptables, no bridge);
#  2. makes the debian:bookworm-slim base image with debootstrap + docker import (once);
#  3. docker build --network host -t qtrain:verify .
#  4. runs the image the secure way (TLS certificates made here by openssl, an access file made by
#     the image's `qtrain token new`, mounted read-only in /etc/qtrain; host network, a
#     bind-mounted data volume), waits for its HEALTHCHECK (the plaintext health port) to say
#     healthy, checks that plaintext and token-less clients are refused, trains a session
#     through the image's own qtrain CLI with TLS and the token, saves a checkpoint into the
#     tenant's directory;
#  5. stops the container (SIGTERM → sessions saved, exit 0), starts it again and checks that the
#     session came back; checks the image runs as non-root and carries no compiler.
# Needs root. Usage: scripts/docker_verify.sh [--keep] (keep the daemon's state for reruns)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${QTRAIN_DOCKER_WORK:-/var/tmp/qtrain-docker}
PORT=${QTRAIN_DOCKER_PORT:-50151}
METRICS=$((PORT + 1))
HEALTH=$((PORT + 2))
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
# /etc/qtrain of the container: a server certificate for 127.0.0.1 from a CA made here, and an
# access file granting one token (tenant "docker", role trainer).
ETC="$WORK/etc"
rm -rf "$ETC" && mkdir -p "$ETC"
(
  cd "$ETC"
  EC="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  openssl req -x509 $EC -keyout ca.key -out ca.crt -days 1 -subj /CN=verify-ca 2> /dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
  openssl req $EC -keyout tls.key -out tls.csr -subj /CN=qtrain 2> /dev/null
  openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out tls.crt \
    -extfile san.ext 2> /dev/null
  rm ca.key tls.csr san.ext
)
made=$(docker run --rm --entrypoint qtrain qtrain:verify token new --tenant=docker --role=trainer --json)
TOKEN=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["token"])' "$made")
python3 -c 'import json,sys; print(json.dumps({"tokens": [json.loads(sys.argv[1])["entry"]]}))' \
  "$made" > "$ETC/access.json"
chown -R 10001:10001 "$ETC" && chmod 0400 "$ETC/tls.key"
run_server() {
  docker run -d --name qtrain-verify --network host -v "$VOL:/var/lib/qtrain" \
    -v "$ETC:/etc/qtrain:ro" -e QTRAIN_HEALTH=127.0.0.1:$HEALTH qtrain:verify \
    --listen=0.0.0.0:$PORT --tls_cert=/etc/qtrain/tls.crt --tls_key=/etc/qtrain/tls.key \
    --auth_tokens=/etc/qtrain/access.json --health_listen=127.0.0.1:$HEALTH \
    --metrics_listen=0.0.0.0:$METRICS --data_dir=/var/lib/qtrain > /dev/null
  for _ in $(seq 1 60); do
    [ "$(docker inspect -f '{{.State.Health.Status}}' qtrain-verify)" = healthy ] && return 0
    sleep 1
  done
  docker logs qtrain-verify
  log "the container never became healthy"
  return 1
}
cli() {
  docker run --rm --network host -v /usr/share/datasets:/data:ro -v "$ETC:/etc/qtrain:ro" \
    -e QTRAIN_TLS_CA=/etc/qtrain/ca.crt -e QTRAIN_TOKEN="$TOKEN" --entrypoint qtrain \
    qtrain:verify --server=127.0.0.1:$PORT --progress=none "$@"
}

log "the image refuses to start without its TLS files and access file"
if docker run --rm --network host qtrain:verify --listen=0.0.0.0:$PORT > "$WORK/bare.log" 2>&1; then
  log "the image served a network port without authentication"; exit 1
fi
grep -q -- '--allow_insecure' "$WORK/bare.log" || { cat "$WORK/bare.log"; exit 1; }

log "run: TLS + token, health check on the plaintext health port"
run_server
# Whole logs into a variable first: `docker logs | head` or `| grep -q` under pipefail fails
# when the reader exits early and docker gets SIGPIPE (exit 141).
server_log=$(docker logs qtrain-verify 2>&1)
sed -n 1,2p <<< "$server_log"
log "plaintext and token-less clients are refused"
if docker run --rm --network host --entrypoint qtrain qtrain:verify \
     --server=127.0.0.1:$PORT session list > /dev/null 2>&1; then
  log "a plaintext client was served"; exit 1
fi
if docker run --rm --network host -v "$ETC:/etc/qtrain:ro" --entrypoint qtrain qtrain:verify \
     --server=127.0.0.1:$PORT --tls_ca=/etc/qtrain/ca.crt session list > "$WORK/anon.log" 2>&1; then
  log "a client without a token was served"; exit 1
fi
grep -q UNAUTHENTICATED "$WORK/anon.log" || { cat "$WORK/anon.log"; exit 1; }
log "train through the image's CLI (host network, port $PORT)"
cli session create docker --preset=mlp
cli train docker --data=/data/fashion-mnist --steps=50 --rules=qat-int8
cli checkpoint save docker
test -s "$VOL/tenants/docker/docker.safetensors"
server_log=$(docker logs qtrain-verify 2>&1)
grep -q '"tenant":"docker","role":"trainer".*"method":"Train"' <<< "$server_log" ||
  { log "no audit line for the Train stream"; exit 1; }
# The same for /metrics: read the whole page before grep.
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
