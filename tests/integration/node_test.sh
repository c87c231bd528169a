#!/usr/bin/env bash
# The Node.js example (client/node) against the real server: installs its npm packages from the
# lock file when they are missing, then checks the example's output. Usage: node_test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: node_test.sh BUILD_DIR}
source "$(dirname "$0")/server_env.sh"
if [ ! -d client/node/node_modules/@grpc/grpc-js ]; then
  (cd client/node && npm ci --no-audit --no-fund --loglevel=error) ||
    { echo "node_test: npm ci failed (needs the npm registry)" >&2; exit 1; }
fi
TMP=$(mktemp -d)
start_server "$BUILD" "$TMP/data"
out=$(node client/node/example.js --steps=20)
echo "$out"
rm -rf "$TMP"
grep -q '^QAT int8  step 40 ' <<< "$out"
grep -q '^eval: 640 examples' <<< "$out"
grep -q '^stat head dot_general0_lhs count 20 scale 0\.' <<< "$out"
echo "node_test: passed"
