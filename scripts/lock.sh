#!/usr/bin/env bash
# Regenerate both pinned worlds from pyproject.toml (needs uv).
#   core:   newest releases (numpy 2, newest jax)   -> requirements/core.lock
#   reverb: dm-reverb 0.14 + tensorflow-cpu 2.15    -> requirements/reverb.lock
# Usage: bash scripts/lock.sh             re-resolve, keeping current pins where still valid
#        bash scripts/lock.sh --upgrade   move everything to the newest allowed releases
#        bash scripts/lock.sh --upgrade-package jax   (any extra uv pip compile args)
# uv is taken from $UV, else `uv` on PATH, else the one scripts/env.sh installs (.venv-tools/bin/uv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

UV="${UV:-}"
if [[ -z "$UV" ]]; then
  if command -v uv >/dev/null 2>&1; then UV=uv
  elif [[ -x .venv-tools/bin/uv ]]; then UV=.venv-tools/bin/uv
  else echo "lock.sh: uv not found (pip install uv, or set UV=/path/to/uv)" >&2; exit 1
  fi
fi

# Lock for Linux x86-64 / Python 3.11 whatever machine runs this, so the files don't
# depend on where they were regenerated.
common=(-q -p 3.11 --python-platform x86_64-manylinux_2_28)

header="# Regenerate both locks: bash scripts/lock.sh   (install: bash scripts/env.sh WORLD)"

# Both worlds carry the host environments (envs: gymnasium, dm-control, mujoco) for rlkit.envs.make_host,
# W&B logging and what executes the quickstart notebook.
# The Reverb world also carries Ray (the distributed extra); the core world does not need it.
# The core world also carries the offline extra (Minari needs numpy 2, so the Reverb world cannot) and the
# on-device suites beyond gymnax (Brax, Craftax, Jumanji).
"$UV" pip compile pyproject.toml --extra dev --extra tensorboard --extra envs --extra wandb --extra notebook \
  --extra offline --extra craftax --extra brax --extra jumanji "${common[@]}" "$@" \
  -o requirements/core.lock
"$UV" pip compile pyproject.toml --extra reverb --extra distributed --extra dev --extra tensorboard --extra envs --extra wandb \
  --extra notebook \
  --override requirements/reverb-overrides.txt "${common[@]}" "$@" \
  -o requirements/reverb.lock

for f in requirements/core.lock requirements/reverb.lock; do
  { echo "$header"; cat "$f"; } > "$f.tmp" && mv "$f.tmp" "$f"
done
echo "lock.sh: wrote requirements/core.lock and requirements/reverb.lock" >&2
