#!/usr/bin/env bash
# The qtrain CLI and the Node.js example against a mutual-TLS qtrain-server, with certificates
# made here by openssl: flags and $QTRAIN_TLS_* both work, plaintext and certificate-less clients
# are refused, and a certificate without its key is a usage error. Then against a TLS + token
# server whose access file `qtrain token new` wrote: --token, $QTRAIN_TOKEN and --token=@FILE
# work, tenants see only their sessions, roles are enforced, missing tokens are refused.
# Usage: cli_tls_test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: cli_tls_test.sh BUILD_DIR}
Q="$BUILD/bin/qtrain"
TMP=$(mktemp -d)
SERVER_PID=""
trap '[ -n "$SERVER_PID" ] && kill $SERVER_PID 2>/dev/null && wait $SERVER_PID 2>/dev/null; rm -rf "$TMP"' EXIT
# Starts qtrain-server with the flags given (log: $TMP/server.log); sets SERVER_PID and
# QTRAIN_SERVER.
start_server() {
  "$BUILD/bin/qtrain-server" --listen=127.0.0.1:0 --metrics_listen= "$@" > "$TMP/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    grep -q 'listening on port' "$TMP/server.log" && break
    sleep 0.1
  done
  PORT=$(sed -n 's/^qtrain-server listening on port \([0-9]*\).*/\1/p' "$TMP/server.log")
  [ -n "$PORT" ] || { cat "$TMP/server.log"; exit 1; }
  export QTRAIN_SERVER=127.0.0.1:$PORT
}
cd "$TMP"
EC="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $EC -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca 2> /dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
for name in server client; do
  openssl req $EC -keyout $name.key -out $name.csr -subj /CN=$name 2> /dev/null
  ext=""; [ $name = server ] && ext="-extfile san.ext"
  openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -out $name.pem $ext 2> /dev/null
done
cd - > /dev/null

start_server --data_dir="$TMP/data" --tls_cert="$TMP/server.pem" --tls_key="$TMP/server.key" \
  --tls_client_ca="$TMP/ca.pem"

"$Q" info --tls_ca="$TMP/ca.pem" --tls_cert="$TMP/client.pem" --tls_key="$TMP/client.key" \
  | grep -q 'int8 kernels'
echo "cli_tls_test: flags: served over mutual TLS"
QTRAIN_TLS_CA="$TMP/ca.pem" QTRAIN_TLS_CERT="$TMP/client.pem" QTRAIN_TLS_KEY="$TMP/client.key" \
  "$Q" session create tls --preset=mlp > /dev/null
echo "cli_tls_test: \$QTRAIN_TLS_*: served"
if "$Q" session list > /dev/null 2>&1; then
  echo "cli_tls_test: a plaintext client was served" >&2; exit 1
fi
if "$Q" session list --tls_ca="$TMP/ca.pem" > /dev/null 2>&1; then
  echo "cli_tls_test: a client without a certificate was served" >&2; exit 1
fi
set +e
"$Q" session list --tls_ca="$TMP/ca.pem" --tls_cert="$TMP/client.pem" > "$TMP/out" 2>&1
rc=$?
set -e
[ $rc -eq 2 ] && grep -q -- '--tls_cert and --tls_key go together' "$TMP/out" ||
  { cat "$TMP/out"; echo "cli_tls_test: expected a usage error (exit 2), got $rc" >&2; exit 1; }

if [ ! -d client/node/node_modules/@grpc/grpc-js ]; then
  (cd client/node && npm ci --no-audit --no-fund --loglevel=error) ||
    { echo "cli_tls_test: npm ci failed (needs the npm registry)" >&2; exit 1; }
fi
out=$(QTRAIN_TLS_CA="$TMP/ca.pem" QTRAIN_TLS_CERT="$TMP/client.pem" \
  QTRAIN_TLS_KEY="$TMP/client.key" node client/node/example.js --steps=2)
grep -q '^QAT int8  step 4 ' <<< "$out" || { echo "$out"; exit 1; }
echo "cli_tls_test: the Node.js example: served over mutual TLS"

# TLS + bearer tokens: an access file made with `qtrain token new`.
kill $SERVER_PID; wait $SERVER_PID 2>/dev/null || true
new_token() {  # TENANT ROLE -> "TOKEN ENTRY" (the entry: JSON without spaces)
  "$Q" token new --tenant="$1" --role="$2" --json | python3 -c \
    'import json,sys; d=json.load(sys.stdin); print(d["token"], json.dumps(d["entry"], separators=(",",":")))'
}
read -r TOKEN_A ENTRY_A <<< "$(new_token team-a trainer)"
read -r TOKEN_B ENTRY_B <<< "$(new_token team-b reader)"
printf '{"tokens": [%s, %s]}\n' "$ENTRY_A" "$ENTRY_B" > "$TMP/access.json"
start_server --data_dir="$TMP/data2" --tls_cert="$TMP/server.pem" --tls_key="$TMP/server.key" \
  --auth_tokens="$TMP/access.json" --audit_log="$TMP/audit.log"
export QTRAIN_TLS_CA="$TMP/ca.pem"
unset QTRAIN_TLS_CERT QTRAIN_TLS_KEY
"$Q" session create mine --preset=mlp --token="$TOKEN_A" > /dev/null
QTRAIN_TOKEN="$TOKEN_A" "$Q" session list | grep -q mine
printf '%s\n' "$TOKEN_A" > "$TMP/token_a"
"$Q" session get mine --token=@"$TMP/token_a" | grep -q 'step 0'
echo "cli_tls_test: --token, \$QTRAIN_TOKEN and --token=@FILE: served"
expect_fail() {  # EXPECTED_TEXT COMMAND...: the command fails and prints EXPECTED_TEXT
  local want=$1; shift
  if "$@" > "$TMP/out" 2>&1; then echo "cli_tls_test: served: $*" >&2; exit 1; fi
  grep -q -- "$want" "$TMP/out" || { cat "$TMP/out"; echo "cli_tls_test: no '$want'" >&2; exit 1; }
}
expect_fail NOT_FOUND "$Q" session get mine --token="$TOKEN_B"  # another tenant's session
QTRAIN_TOKEN="$TOKEN_B" "$Q" session list > "$TMP/out"
! grep -q mine "$TMP/out" || { echo "cli_tls_test: team-b lists team-a's session" >&2; exit 1; }
expect_fail PERMISSION_DENIED "$Q" session create theirs --preset=mlp --token="$TOKEN_B"
expect_fail UNAUTHENTICATED "$Q" session list
set +e; "$Q" session list > /dev/null 2>&1; rc=$?; set -e
[ $rc -eq 9 ] || { echo "cli_tls_test: UNAUTHENTICATED exited $rc, not 9" >&2; exit 1; }
expect_fail UNAUTHENTICATED "$Q" session list --token=qt_not-a-token
expect_fail 'never travel in plaintext' env -u QTRAIN_TLS_CA "$Q" session list --token="$TOKEN_A"
grep -q '"method":"CreateSession".*"code":"PERMISSION_DENIED"' "$TMP/audit.log" ||
  { cat "$TMP/audit.log"; echo "cli_tls_test: the refusal is not audited" >&2; exit 1; }
if grep -q -- "$TOKEN_A" "$TMP/audit.log" "$TMP/server.log"; then
  echo "cli_tls_test: a token was logged" >&2; exit 1
fi
echo "cli_tls_test: tenants, roles, refusals and the audit log"
out=$(QTRAIN_TOKEN="$TOKEN_A" node client/node/example.js --steps=2)
grep -q '^QAT int8  step 4 ' <<< "$out" || { echo "$out"; exit 1; }
expect_fail "needs credentials" node client/node/example.js --steps=2
echo "cli_tls_test: the Node.js example: served over TLS with a token"
echo "cli_tls_test: passed"
