#!/usr/bin/env bash
# Runs the README's tour — every "$ " command between <!-- tour:begin --> and <!-- tour:end -->
# — against a real server, so that the documented commands cannot rot. The test starts its own
# server on a free port (the tour's `qtrain-server ... &` and `kill` lines are skipped; the CLI
# finds the server through $QTRAIN_SERVER), runs in a scratch directory, and puts BUILD_DIR/bin
# first on PATH. Usage: readme_tour_test.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "${1:?usage: readme_tour_test.sh BUILD_DIR}" && pwd)
ROOT=$(pwd)
source "$(dirname "$0")/server_env.sh"
TMP=$(mktemp -d)
start_server "$BUILD" "$TMP/data"

commands=$(sed -n '/<!-- tour:begin -->/,/<!-- tour:end -->/p' README.md | sed -n 's/^\$ //p' |
  grep -v -e '^qtrain-server ' -e '^kill ')
n=$(grep -c . <<< "$commands")
[ "$n" -ge 10 ] || { echo "readme_tour_test: found only $n tour commands in README.md" >&2; exit 1; }

cd "$TMP"
export PATH="$BUILD/bin:$PATH"
i=0
while IFS= read -r cmd; do
  i=$((i + 1))
  cmd=${cmd//\$PWD\/build\/bin/$BUILD/bin}
  echo "[$i/$n] \$ $cmd"
  if ! out=$(bash -c "$cmd" 2>&1); then
    echo "$out"
    echo "readme_tour_test: README command failed: $cmd" >&2
    exit 1
  fi
  echo "$out" | tail -4
done <<< "$commands"
cd "$ROOT"
rm -rf "$TMP"
echo "readme_tour_test: all $n README commands passed"
