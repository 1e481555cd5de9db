#!/usr/bin/env bash
# Checks every benchmark peer by hand, the way `holdfast bench` talks to it:
# installs what is missing (scripts/peers.sh), starts each peer on a free
# loopback port, runs check.py against it, stops it by PID.
#
#   bench/peers/check/run.sh                      all: holdfast node-ws socketio python-websockets bare
#                                                 tokio-websockets uws
#   bench/peers/check/run.sh node-ws bare         only those
#
# Prints the peers' `ok:` lines and a closing `N passed, N failed`; exits 1
# if any peer failed. `holdfast` needs target/release/holdfast (cargo build --release -p holdfast).
set -euo pipefail
cd "$(dirname "$0")/../../.."
source scripts/peers.sh

peers=("$@")
[ ${#peers[@]} -gt 0 ] || peers=("${PEERS_ALL[@]}")
ensure_peers "${peers[@]}"
# check.py runs on the python-websockets peer's venv (it has the client).
ensure_peers python-websockets

PEER_PID=""
stop_peer() {
  if [ -n "$PEER_PID" ]; then
    kill "$PEER_PID" 2>/dev/null || true
    wait "$PEER_PID" 2>/dev/null || true
    PEER_PID=""
  fi
}
trap stop_peer EXIT

passed=0
failed=0
for peer in "${peers[@]}"; do
  echo "== $peer"
  if start_peer "$peer" 0 && "$PEERS_PY/bin/python" bench/peers/check/check.py --peer "$peer" --port "$PEER_PORT"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    if [ -f "${PEER_LOG_DIR:-}/$peer.err" ]; then
      echo "its stderr ($PEER_LOG_DIR/$peer.err):"
      tail -n 20 "$PEER_LOG_DIR/$peer.err"
    fi
  fi
  stop_peer
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
