# Shared by scripts/test and scripts/autobahn: installs the test tools that
# are missing, idempotently, into a cache outside the work tree.
#
# Each environment gets a `.complete` stamp as its last step, so an
# interrupted install is rebuilt next time instead of half-used.

HOLDFAST_CACHE="${HOLDFAST_CACHE:-$HOME/.cache/holdfast}"
PY_VENV="$HOLDFAST_CACHE/py"
AB_VENV="$HOLDFAST_CACHE/autobahn"
AB_PACKAGES=(txaio==2.1.0 incremental==16.10.1 pyOpenSSL==19.1.0 cryptography==3.3.2
  Twisted==19.10.0 zope.interface==4.6.0 jinja2==2.11.3 markupsafe==1.1.1 Werkzeug==1.0.1
  klein==17.10.0 service_identity==18.1.0 unittest2==1.1.0 six==1.16.0
  'autobahn[twisted,accelerate]==0.10.9' autobahntestsuite==25.10.1)

die() { echo "error: $*" >&2; exit 1; }

PY_PACKAGES=('websockets>=13,<16' 'pytest>=8,<9' 'pytest-asyncio>=0.23,<2')

# Python venv with the third-party WebSocket client and pytest. The stamp
# holds the package list, so changing the list rebuilds the venv.
ensure_python_venv() {
  [ "$(cat "$PY_VENV/.complete" 2>/dev/null)" = "${PY_PACKAGES[*]}" ] && return 0
  command -v python3 >/dev/null || die "python3 is missing: install it (apt-get install -y python3 python3-venv)"
  echo "installing the Python test venv into $PY_VENV"
  rm -rf "$PY_VENV" && mkdir -p "$HOLDFAST_CACHE"
  python3 -m venv "$PY_VENV" || die "python3 -m venv failed: install python3-venv (apt-get install -y python3-venv)"
  "$PY_VENV/bin/pip" install -q "${PY_PACKAGES[@]}" ||
    die "pip install ${PY_PACKAGES[*]} failed (it needs PyPI)"
  echo "${PY_PACKAGES[*]}" >"$PY_VENV/.complete"
}

# The Autobahn|Testsuite needs Python 2.7 (recipe in shared/TESTING.md).
ensure_autobahn() {
  [ -f "$AB_VENV/.complete" ] && return 0
  local py27
  py27="$(pyenv root 2>/dev/null)/versions/2.7.18/bin/python2.7"
  [ -x "$py27" ] || die "Python 2.7.18 is missing for the Autobahn suite: install it with 'pyenv install 2.7.18'"
  ensure_python_venv
  echo "installing the Autobahn|Testsuite into $AB_VENV (about 40 s)"
  local tools="$HOLDFAST_CACHE/venv-tools"
  if [ ! -x "$tools/bin/virtualenv" ]; then
    rm -rf "$tools"
    python3 -m venv "$tools" && "$tools/bin/pip" install -q 'virtualenv<20.22' ||
      die "pip install 'virtualenv<20.22' failed (needs PyPI)"
  fi
  rm -rf "$AB_VENV"
  "$tools/bin/virtualenv" -q -p "$py27" "$AB_VENV" >/dev/null || die "virtualenv for Python 2.7 failed"
  # pip 20 on Python 2 warns about the legacy resolver; the pinned set works.
  "$AB_VENV/bin/pip" install -q "${AB_PACKAGES[@]}" >"$HOLDFAST_CACHE/autobahn-install.log" 2>&1
  "$AB_VENV/bin/wstest" --help >/dev/null 2>&1 ||
    die "installing autobahntestsuite failed (it needs PyPI); see $HOLDFAST_CACHE/autobahn-install.log"
  touch "$AB_VENV/.complete"
}

# nginx for the doctor's scenario tests (run as the test user, on loopback
# ports of the test's own; the package's own service is not used).
ensure_nginx() {
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing nginx-light"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null ||
      die "apt-get install -y nginx-light failed"
    # The package may start its own service on port 80; the tests do not need it.
    if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; fi
  else
    die "nginx is missing: install it with 'apt-get install -y nginx-light'"
  fi
}
