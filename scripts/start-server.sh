# Shared: start_server LOGPREFIX ARGS... starts target/release/holdfast serve
# on a free loopback port; sets SERVER_PID and SERVER_PORT.
start_server() {
  local log="$1"; shift
  target/release/holdfast serve --listen 127.0.0.1:0 "$@" >"$log.out" 2>"$log.err" &
  SERVER_PID=$!
  SERVER_PORT=""
  for _ in $(seq 1 200); do
    SERVER_PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log.out" 2>/dev/null | grep -o '[0-9]*$' || true)
    [ -n "$SERVER_PORT" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log.err" >&2; echo "error: the server exited at start" >&2; return 1; }
    sleep 0.1
  done
  echo "error: the server did not print its address within 20 s" >&2
  return 1
}
