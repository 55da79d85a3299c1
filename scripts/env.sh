#!/usr/bin/env bash
# Build (or reuse) one pinned world and print its venv path on stdout.
#
#   bash scripts/env.sh core     -> .venv-core    from requirements/core.lock   (numpy 2, newest jax)
#   bash scripts/env.sh reverb   -> .venv-reverb  from requirements/reverb.lock (dm-reverb + TF 2.15)
#
# Needs only Python 3.11 and pip: the lock is installed with `pip install --no-deps -r
# requirements/WORLD.lock`, then rlkit with `pip install --no-deps -e .`. Where it can, the script
# first puts a pinned uv into .venv-tools and lets it do both installs (uv downloads in parallel:
# 12 s against pip's 99 s for the core world on a fresh machine); if uv cannot be installed, pip does
# the work as before. --no-deps is deliberate: the Reverb world overrides TF's ml-dtypes bound (see
# requirements/reverb-overrides.txt), which pip's resolver would refuse.
#
# Idempotent and fast when built: stamps in the venv hold hashes of
#   - the lock + interpreter version: if changed (or a build was interrupted), the venv is
#     deleted and rebuilt from scratch, so no stale packages survive;
#   - pyproject.toml: if only that changed, just the editable install of rlkit is re-run.
# All progress goes to stderr; stdout is only the venv path, so VENV=$(bash scripts/env.sh core).
#
# Environment: RLKIT_PYTHON      interpreter to build with (default: python3.11)
#              RLKIT_REBUILD=1   force a full rebuild
#              RLKIT_NO_UV=1     install with pip only
set -euo pipefail

usage() { echo "usage: bash scripts/env.sh core|reverb" >&2; exit 2; }
[[ $# -eq 1 ]] || usage
WORLD="$1"
case "$WORLD" in core|reverb) ;; *) usage ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCK="$ROOT/requirements/$WORLD.lock"
VENV="$ROOT/.venv-$WORLD"
LOCK_STAMP="$VENV/.rlkit-lock-stamp"
PROJ_STAMP="$VENV/.rlkit-project-stamp"
PY="${RLKIT_PYTHON:-python3.11}"

log() { echo "[env.sh $WORLD] $*" >&2; }

[[ -f "$LOCK" ]] || { log "missing $LOCK"; exit 1; }
command -v "$PY" >/dev/null 2>&1 || { log "$PY not found (Python 3.11 is required)"; exit 1; }
PYVER="$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
[[ "$PYVER" == 3.11.* ]] || { log "$PY is Python $PYVER; the locks are for Python 3.11"; exit 1; }

# sha256 of files plus a tag (hashlib: no sha256sum needed).
hash_of() {
  "$PY" - "$@" <<'EOF'
import hashlib, sys
h = hashlib.sha256(sys.argv[1].encode())
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        h.update(b"\0" + f.read())
print(h.hexdigest())
EOF
}
WANT_LOCK="$(hash_of "python=$PYVER world=$WORLD" "$LOCK")"
WANT_PROJ="$(hash_of "project" "$ROOT/pyproject.toml")"

stamp_ok() { [[ -f "$1" && "$(cat "$1")" == "$2" ]]; }

export PIP_DISABLE_PIP_VERSION_CHECK=1
VPY="$VENV/bin/python"
# pip in the venv, output on stderr, minus the noise of local file:// indexes lacking a package.
pip_q() {
  "$VPY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file:.*' is ignored" || true; } >&2
}
# uv, pinned, in its own venv beside the worlds (never inside a world); empty if it cannot be had.
UV_VERSION=0.13.9
TOOLS="$ROOT/.venv-tools"
uv_ok() { [[ "$("$TOOLS/bin/uv" --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; }
find_uv() {
  [[ "${RLKIT_NO_UV:-0}" == 1 ]] && return 0
  if ! uv_ok; then
    local fresh="$TOOLS.building.$$"  # built aside, then moved in
    rm -rf "$fresh"
    if ! { "$PY" -m venv "$fresh" \
           && "$fresh/bin/python" -m pip install -q --retries 1 --timeout 30 "uv==$UV_VERSION"; } 2>&1 \
         | { grep -v "^WARNING: Location 'file:.*' is ignored" || true; } >&2; then  # pipefail: pip's status
      log "could not install uv $UV_VERSION; installing with pip"
      rm -rf "$fresh"
      return 0
    fi
    if uv_ok; then  # another build finished first: keep its copy, which may be in use
      rm -rf "$fresh"
    else
      rm -rf "$TOOLS" && mv "$fresh" "$TOOLS" || rm -rf "$fresh"
    fi
    uv_ok || { log "could not set up $TOOLS; installing with pip"; return 0; }
  fi
  echo "$TOOLS/bin/uv"
}
# uv_or_pip_install ARGS...: into the world's venv with uv (bytecode compiled, as pip does), else with
# pip; if uv fails (uv reads neither pip.conf nor PIP_* settings, e.g. a wheel directory or an index
# only pip knows), pip does the same install.
uv_or_pip_install() {
  if [[ -n "$UV" ]]; then
    if UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 "$UV" pip install -q --python "$VPY" "$@" >&2; then
      return 0
    fi
    log "uv could not install that; installing with pip"
  fi
  pip_q install -q "$@"
}
install_project() {
  log "installing rlkit (editable, --no-deps)"
  rm -f "$PROJ_STAMP"
  uv_or_pip_install --no-deps -e "$ROOT"
  echo "$WANT_PROJ" > "$PROJ_STAMP"
}

start=$SECONDS
UV=""
if [[ "${RLKIT_REBUILD:-0}" != 1 ]] && stamp_ok "$LOCK_STAMP" "$WANT_LOCK" \
   && "$VPY" -c '' 2>/dev/null; then
  if ! stamp_ok "$PROJ_STAMP" "$WANT_PROJ"; then
    log "pyproject.toml changed"
    UV="$(find_uv)"
    install_project
    log "updated in $((SECONDS - start)) s"
  fi
  echo "$VENV"
  exit 0
fi

if [[ -e "$VENV" || -L "$VENV" ]]; then
  log "lock or interpreter changed (or last build unfinished): rebuilding $VENV"
  rm -rf "$VENV"
fi

log "creating $VENV with $PY ($PYVER)"
if ! "$PY" -m venv "$VENV" >&2; then
  # Pythons without ensurepip (e.g. Debian's without python3.11-venv): make a bare venv
  # and let the host pip (>= 22.3, for --python) put pip into it.
  log "python -m venv failed; retrying without ensurepip"
  rm -rf "$VENV"
  "$PY" -m venv --without-pip "$VENV" >&2
  "$PY" -m pip --python "$VPY" install -q pip >&2
fi

UV="$(find_uv)"
INSTALLER="pip"; [[ -n "$UV" ]] && INSTALLER="uv $UV_VERSION"
log "installing $(grep -c '^[A-Za-z0-9]' "$LOCK") pinned packages from requirements/$WORLD.lock (--no-deps, $INSTALLER)"
uv_or_pip_install --no-deps -r "$LOCK"
echo "$WANT_LOCK" > "$LOCK_STAMP"
install_project

log "built in $((SECONDS - start)) s"
echo "$VENV"
