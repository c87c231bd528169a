# Sourced by the shell tests: start_server BUILD_DIR DATA_DIR starts build/bin/qtrain-server on
# 127.0.0.1:0 (metrics on :0), waits for its port and exports QTRAIN_SERVER; the server is stopped
# when the test shell exits.
start_server() {
  local build=$1 data=$2
  mkdir -p "$data"
  : > "$data/server.log"  # exists before the loop below reads it (the child opens it later)
  "$build/bin/qtrain-server" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
    --data_dir="$data" > "$data/server.log" 2>&1 &
  SERVER_PID=$!
  trap 'kill $SERVER_PID 2>/dev/null; wait $SERVER_PID 2>/dev/null' EXIT
  local port=""
  for _ in $(seq 1 100); do
    port=$(sed -n 's/^qtrain-server listening on port \([0-9]*\).*/\1/p' "$data/server.log")
    [ -n "$port" ] && break
    kill -0 $SERVER_PID 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$port" ]; then
    echo "qtrain-server did not start:" >&2
    cat "$data/server.log" >&2
    return 1
  fi
  export QTRAIN_SERVER=127.0.0.1:$port
}
