# Shared (source it):
#
# await_listening NAME PID OUT ERR waits (up to 20 s) for the process PID to
# print `listening on http://127.0.0.1:PORT` in the file OUT (holdfast and the
# bench peers print it once bound) and sets LISTEN_PORT. Returns 1 with the
# reason and the last lines of ERR when it exits first or stays silent (and
# then stops it).
#
# start_server LOGPREFIX ARGS... starts
#   target/release/holdfast serve --listen 127.0.0.1:0 ARGS...
# in the background with stdout in LOGPREFIX.out and stderr in LOGPREFIX.err,
# waits for it as above and sets SERVER_PID and SERVER_PORT; the caller stops
# the server with `kill "$SERVER_PID"`.
await_listening() {
  local name="$1" pid="$2" out="$3" err="$4" line
  LISTEN_PORT=""
  local deadline=$((SECONDS + 20))
  while [ "$SECONDS" -lt "$deadline" ]; do
    line="$(grep -m1 -o 'listening on http://127\.0\.0\.1:[0-9]\+' "$out" 2>/dev/null || true)"
    if [ -n "$line" ]; then
      LISTEN_PORT="${line##*:}"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: the $name exited at start; its stderr ($err):" >&2
      tail -n 20 "$err" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "error: the $name did not print 'listening on http://127.0.0.1:PORT' within 20 s; its stderr ($err):" >&2
  tail -n 20 "$err" >&2
  kill "$pid" 2>/dev/null || true
  return 1
}

start_server() {
  local log="$1"
  shift
  : >"$log.out"
  target/release/holdfast serve --listen 127.0.0.1:0 "$@" >"$log.out" 2>"$log.err" &
  SERVER_PID=$!
  SERVER_PORT=""
  await_listening server "$SERVER_PID" "$log.out" "$log.err" || return 1
  SERVER_PORT="$LISTEN_PORT"
}
