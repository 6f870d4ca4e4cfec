# Shared by scripts/setup and scripts/test: a venv with the toolkit, then the toolchain.
# Both steps are idempotent and cached (pip's cache, ~/.cache/toolkit, Go's caches).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

ensure_venv() {
  local stamp="$VENV/.toolkit-installed" wanted
  wanted="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    return
  fi
  log "Python environment: $VENV (toolkit[all,test]; about two minutes the first time)"
  [ -x "$VENV/bin/python" ] || "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[all,test]"
  echo "$wanted" > "$stamp"
}

ensure_toolchain() {
  log "Toolchain: Pulumi engine, plugins, Docker engine, runner image (cached in ~/.cache/toolkit)"
  "$VENV/bin/toolkit" toolchain install
}
