# Shared by scripts/setup and scripts/test: a venv with the toolkit, then the toolchain.
# Every step is idempotent and cached (pip's and uv's caches, ~/.cache/toolkit, Go's caches).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
UV_VERSION=0.13.9  # the same as tests/prefect/harness.py

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_venv() {
  local stamp="$VENV/.toolkit-installed" wanted
  wanted="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    return
  fi
  log "Python environment: $VENV (toolkit[all,test,docs]; about a minute the first time)"
  [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip "uv==$UV_VERSION"
  # uv resolves and installs in parallel: on a cold cache pip's resolver took over ten minutes here for the same
  # set. The system's certificates, so a TLS-inspecting proxy that pip trusts is trusted too.
  UV_NATIVE_TLS=1 "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -e "$ROOT[all,test,docs]"
  echo "$wanted" > "$stamp"
}

# beside NAME COMMAND...: runs COMMAND in the background, its lines prefixed with [NAME]; `finish NAME` waits.
declare -A BESIDE=()
beside() {
  local name="$1"; shift
  ( "$@" 2>&1 | sed -u "s/^/[$name] /" >&2 ) &
  BESIDE[$name]=$!
}
finish() {
  local name="$1"
  wait "${BESIDE[$name]}" || { log "$name failed (its lines above, prefixed [$name])"; return 1; }
}

ensure_venv_and_cli() {
  # On a machine with no Pulumi CLI at all, its Go build (the longest step the main example needs) starts now,
  # beside the Python environment's install: it needs only the standard library and Go.
  if [ -x "$VENV/bin/toolkit" ] && [ -f "$VENV/.toolkit-installed" ]; then
    ensure_venv
    return
  fi
  beside "pulumi CLI" env PYTHONPATH="$ROOT" "$PYTHON_BIN" -m toolkit.toolchain.pulumi_cli "$ROOT/pyproject.toml"
  ensure_venv
  # A failed head start is not fatal: `toolkit toolchain install` builds the CLI again and says what is wrong.
  finish "pulumi CLI" || true
}

ensure_toolchain() {
  # Arguments: the parts (core, docker, kubernetes, pools); none for all of them.
  log "Toolchain${1:+ ($*)}: cached in ~/.cache/toolkit"
  "$VENV/bin/toolkit" toolchain install "$@"
}

ensure_browser() {
  # Debian's Chromium and its chromedriver, for the dashboard's browser tests (tests/test_ui_browser.py).
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    return
  fi
  if ! command -v apt-get >/dev/null; then
    log "No Chromium here and no apt-get to install it: the browser tests will be skipped"
    return
  fi
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "Chromium and chromedriver for the dashboard's browser tests (Debian packages; a minute the first time)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
}
