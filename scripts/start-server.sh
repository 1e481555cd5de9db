# Shared (source it): start_server LOGPREFIX ARGS... starts
#   target/release/holdfast serve --listen 127.0.0.1:0 ARGS...
# in the background with stdout in LOGPREFIX.out and stderr in LOGPREFIX.err,
# waits (up to 20 s) for the `holdfast listening on http://127.0.0.1:PORT`
# line the server prints on stdout once it is bound, and sets SERVER_PID and
# SERVER_PORT. Returns 1 with the reason (and the server's stderr) otherwise;
# the caller stops the server with `kill "$SERVER_PID"`.
start_server() {
  local log="$1" line
  shift
  : >"$log.out"
  target/release/holdfast serve --listen 127.0.0.1:0 "$@" >"$log.out" 2>"$log.err" &
  SERVER_PID=$!
  SERVER_PORT=""
  local deadline=$((SECONDS + 20))
  while [ "$SECONDS" -lt "$deadline" ]; do
    line="$(grep -m1 -o 'listening on http://127\.0\.0\.1:[0-9]\+' "$log.out" 2>/dev/null || true)"
    if [ -n "$line" ]; then
      SERVER_PORT="${line##*:}"
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "error: the server exited at start; its stderr ($log.err):" >&2
      tail -n 20 "$log.err" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "error: the server did not print 'listening on http://127.0.0.1:PORT' within 20 s; its stderr ($log.err):" >&2
  tail -n 20 "$log.err" >&2
  kill "$SERVER_PID" 2>/dev/null || true
  return 1
}
