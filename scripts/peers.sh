# Benchmark peers (bench/peers/README.md), shared by the bench scripts
# (source it; it sources scripts/tools.sh for `die` and the venv helpers):
#
#   ensure_peers [NAME...]   installs what the named peers (default: all) need
#                            when it is missing, into
#                            ${HOLDFAST_CACHE:-$HOME/.cache/holdfast}/peers:
#       node-ws/ socketio/   node_modules from the peer's package.json and
#       uws/                 package-lock.json (npm ci), linked into
#                            bench/peers/NAME/node_modules (ESM imports do not
#                            read NODE_PATH)
#       py/                  Python venv with bench/peers/python-websockets/requirements.txt
#     and builds target/release/bench-bare and bench-tokio-websockets (cargo)
#     for `bare` and `tokio-websockets`; `holdfast` needs
#     target/release/holdfast, which it does not build.
#   start_peer NAME PORT     starts one of holdfast|node-ws|socketio|python-websockets|
#                            bare|tokio-websockets|uws
#                            on 127.0.0.1:PORT (0: any free port) in the background,
#                            pinned to CPU 0 (taskset -c 0), with stdout and stderr in
#                            $PEER_LOG_DIR/NAME.out and .err (default: a directory
#                            under ${TMPDIR:-/tmp}); waits up to 20 s for its
#                            `listening on http://127.0.0.1:PORT` line and sets
#                            PEER_PID and PEER_PORT. Returns 1 with the reason (and
#                            the peer's stderr) when it does not come up; the caller
#                            stops it with `kill "$PEER_PID"`. With PAD_TO=BYTES
#                            set, the bare peers (all but holdfast, socketio and
#                            python-websockets) pad every `message` frame shorter
#                            than BYTES to BYTES (their --pad-to).
#
# Each environment gets a `.complete` stamp holding its recipe as its last
# step (as in tools.sh): a missing or different stamp means it is rebuilt,
# so changing a pin reinstalls it. A missing dependency exits the shell with
# the install step to take (start_peer: run ensure_peers); nothing is skipped.

# shellcheck source=tools.sh
source "$(dirname "${BASH_SOURCE[0]}")/tools.sh"
# shellcheck source=start-server.sh
source "$(dirname "${BASH_SOURCE[0]}")/start-server.sh"

PEERS_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_SRC="$PEERS_REPO/bench/peers"
PEERS_CACHE="$HOLDFAST_CACHE/peers"
PEERS_PY="$PEERS_CACHE/py"
PEERS_ALL=(holdfast node-ws socketio python-websockets bare tokio-websockets uws)

# The peers that take --pad-to (PAD_TO): the bare broadcast servers.
PEERS_PADDED=(node-ws bare tokio-websockets uws)

# The recipe of a node peer: Node's version and a hash of its package files.
node_peer_recipe() {
  local hash
  hash="$(cat "$PEERS_SRC/$1/package.json" "$PEERS_SRC/$1/package-lock.json" | sha256sum)"
  echo "$(node --version) ${hash:0:16}"
}

# node_peer_ready NAME: the node peer's packages were completely installed
# from its current package files.
node_peer_ready() {
  [ -f "$PEERS_CACHE/$1/.complete" ] && [ "$(cat "$PEERS_CACHE/$1/.complete")" = "$(node_peer_recipe "$1")" ]
}

# The recipe of the Python peer's venv: interpreter and pins.
python_peer_recipe() {
  echo "$1 $(tr '\n' ' ' <"$PEERS_SRC/python-websockets/requirements.txt")"
}

# node_modules for a node peer (node-ws, socketio or uws).
ensure_node_peer() {
  local name="$1" dir="$PEERS_CACHE/$1"
  command -v node >/dev/null && command -v npm >/dev/null ||
    die "node and npm are missing: install Node.js 20 (apt-get install -y nodejs npm)"
  if ! node_peer_ready "$name"; then
    echo "installing the $name peer's packages into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$PEERS_SRC/$name/package.json" "$PEERS_SRC/$name/package-lock.json" "$dir/"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error ||
      die "npm ci in $dir (bench/peers/$name/package-lock.json) failed (it needs the npm registry)"
    node_peer_recipe "$name" >"$dir/.complete"
  fi
  local link="$PEERS_SRC/$name/node_modules"
  [ -L "$link" ] || [ ! -e "$link" ] ||
    die "$link is a local install, not the pinned one in $dir: remove it (rm -rf $link) and run ensure_peers again"
  ln -sfn "$dir/node_modules" "$link" ||
    die "cannot link $PEERS_SRC/$name/node_modules to $dir/node_modules"
}

# The Python venv with the pinned websockets.
ensure_python_peer() {
  local py recipe
  py="$(python3_path)" || exit 1
  recipe="$(python_peer_recipe "$py")"
  venv_ready "$PEERS_PY" "$recipe" && return 0
  echo "installing the python-websockets peer's venv into $PEERS_PY"
  rm -rf "$PEERS_PY"
  mkdir -p "$PEERS_CACHE"
  "$py" -m venv "$PEERS_PY" ||
    die "'$py -m venv' failed: install the venv module (apt-get install -y python3-venv, or rebuild the pyenv Python)"
  "$PEERS_PY/bin/pip" install -q -r "$PEERS_SRC/python-websockets/requirements.txt" ||
    die "pip install -r bench/peers/python-websockets/requirements.txt failed (it needs PyPI)"
  "$PEERS_PY/bin/python" -c 'import websockets.asyncio.server' ||
    die "the peer venv $PEERS_PY does not import websockets.asyncio.server"
  echo "$recipe" >"$PEERS_PY/.complete"
}

ensure_peers() {
  local names=("$@") name
  [ ${#names[@]} -gt 0 ] || names=("${PEERS_ALL[@]}")
  command -v taskset >/dev/null || die "taskset is missing: install it with 'apt-get install -y util-linux'"
  for name in "${names[@]}"; do
    case "$name" in
      holdfast)
        [ -x "$PEERS_REPO/target/release/holdfast" ] ||
          die "target/release/holdfast is missing: run 'cargo build --release -p holdfast'"
        ;;
      node-ws | socketio | uws) ensure_node_peer "$name" ;;
      python-websockets) ensure_python_peer ;;
      bare | tokio-websockets)
        (cd "$PEERS_REPO" && cargo build --release -q -p holdfast-bench-bare) ||
          die "'cargo build --release -p holdfast-bench-bare' failed"
        ;;
      *) die "unknown peer '$name' (one of: ${PEERS_ALL[*]})" ;;
    esac
  done
}

# Sets PEER_CMD to the command that runs peer NAME on PORT; exits naming the
# install step when what it needs is missing.
peer_command() {
  local name="$1" port="$2" py
  case "$name" in
    holdfast)
      [ -x "$PEERS_REPO/target/release/holdfast" ] ||
        die "target/release/holdfast is missing: run 'cargo build --release -p holdfast'"
      # The bench publishes over WebSocket: client publishing is off by default.
      PEER_CMD=("$PEERS_REPO/target/release/holdfast" serve --listen "127.0.0.1:$port" --api-key bench --allow-client-publish true
        --commands-per-second 0 --connect-rate-per-ip 1000000 --max-connections-per-ip 1000000)
      ;;
    node-ws | socketio | uws)
      command -v node >/dev/null || die "node is missing: install Node.js 20 (apt-get install -y nodejs npm)"
      node_peer_ready "$name" && [ -d "$PEERS_SRC/$name/node_modules" ] ||
        die "the $name peer's packages are missing or stale:" \
          "run 'source scripts/peers.sh && ensure_peers $name' (npm ci)"
      PEER_CMD=(node "$PEERS_SRC/$name/server.mjs" --port "$port")
      ;;
    python-websockets)
      py="$(python3_path)" || exit 1
      venv_ready "$PEERS_PY" "$(python_peer_recipe "$py")" ||
        die "the python-websockets peer's venv is missing or stale:" \
          "run 'source scripts/peers.sh && ensure_peers python-websockets'" \
          "(pip install -r bench/peers/python-websockets/requirements.txt)"
      PEER_CMD=("$PEERS_PY/bin/python" "$PEERS_SRC/python-websockets/server.py" --port "$port")
      ;;
    bare | tokio-websockets)
      local bin=bench-bare
      [ "$name" = tokio-websockets ] && bin=bench-tokio-websockets
      [ -x "$PEERS_REPO/target/release/$bin" ] ||
        die "target/release/$bin is missing:" \
          "run 'cargo build --release -p holdfast-bench-bare' (or ensure_peers $name)"
      PEER_CMD=("$PEERS_REPO/target/release/$bin" --port "$port")
      ;;
    *) die "unknown peer '$name' (one of: ${PEERS_ALL[*]})" ;;
  esac
}

start_peer() {
  local name="$1" port="$2" out err
  [ -n "$name" ] && [ -n "$port" ] || die "usage: start_peer NAME PORT (NAME: ${PEERS_ALL[*]})"
  command -v taskset >/dev/null || die "taskset is missing: install it with 'apt-get install -y util-linux'"
  peer_command "$name" "$port"
  if [ "${PAD_TO:-0}" != 0 ]; then
    [[ " ${PEERS_PADDED[*]} " == *" $name "* ]] && PEER_CMD+=(--pad-to "$PAD_TO")
  fi
  PEER_LOG_DIR="${PEER_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/holdfast-peers.XXXXXX")}"
  mkdir -p "$PEER_LOG_DIR"
  out="$PEER_LOG_DIR/$name.out"
  err="$PEER_LOG_DIR/$name.err"
  : >"$out"
  PORT="$port" taskset -c 0 "${PEER_CMD[@]}" >"$out" 2>"$err" &
  PEER_PID=$!
  PEER_PORT=""
  await_listening "$name peer" "$PEER_PID" "$out" "$err" || return 1
  PEER_PORT="$LISTEN_PORT"
}
