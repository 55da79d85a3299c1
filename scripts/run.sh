#!/usr/bin/env bash
# Run a command inside one pinned world, building it first if needed.
#   bash scripts/run.sh core   python -m rlkit train ...
#   bash scripts/run.sh reverb python -m pytest -q tests -m reverb
# The world's venv/bin is put first on PATH (and VIRTUAL_ENV set), then CMD is exec'd in
# the current directory with its exit status.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: bash scripts/run.sh core|reverb CMD [ARGS...]" >&2
  exit 2
fi
WORLD="$1"; shift
VENV="$(bash "$(dirname "${BASH_SOURCE[0]}")/env.sh" "$WORLD")"
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
unset PYTHONHOME
exec "$@"
