#!/usr/bin/env bash
# The one command that runs the test suite, in both pinned worlds:
#   core   (numpy 2, newest jax):  python -m pytest -q tests -m "not slow_learning"
#   reverb (dm-reverb + TF 2.15):  RLKIT_REQUIRE_REVERB=1 python -m pytest -q tests -m "(reverb or both_worlds) and not slow_learning"
# Every test runs once: in the core world, unless it is marked `reverb` (it needs Reverb and must run there,
# not skip); tests marked `both_worlds` (imports, environments, the host loop) run in both. Learning tests
# marked `slow_learning` are left out for CI's time; run them with -m slow_learning in either world. Both
# worlds always run; exit status is non-zero if either failed, including pytest's exit 5 (no tests
# collected). Extra arguments are passed to both pytest runs (a -m there replaces the selection).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/rlkit-test.XXXXXX")"
trap 'rm -rf "$LOGDIR"' EXIT

declare -A SUMMARY=()
status=0

# Build both worlds up front, so a broken lock fails fast and before any test time is spent.
for world in core reverb; do
  if ! bash scripts/env.sh "$world" >/dev/null; then
    SUMMARY[$world]="FAIL (could not build .venv-$world)"
    status=1
  fi
done

run_world() {  # run_world WORLD [pytest args...]
  local world="$1"; shift
  [[ -n "${SUMMARY[$world]:-}" ]] && return   # build failed
  echo "===== [test.sh] $world world: python -m pytest -q tests $* ====="
  local start=$SECONDS rc last
  bash scripts/run.sh "$world" python -m pytest -q tests "$@" 2>&1 | tee "$LOGDIR/$world.log"
  rc=${PIPESTATUS[0]}
  last="$(grep -E '[0-9]+ (passed|failed|error|errors|skipped|deselected)|no tests ran' "$LOGDIR/$world.log" \
          | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')"
  case "$rc" in
    0) SUMMARY[$world]="ok" ;;
    5) SUMMARY[$world]="FAIL (pytest exit 5: no tests collected)"; status=1 ;;
    *) SUMMARY[$world]="FAIL (pytest exit $rc)"; status=1 ;;
  esac
  SUMMARY[$world]+=" in $((SECONDS - start)) s: ${last:-no pytest summary line}"
}

echo "===== [test.sh] lint: ruff check ====="
if ! bash scripts/run.sh core ruff check rlkit tests baselines scripts; then
  SUMMARY[lint]="FAIL (ruff check)"; status=1
else
  SUMMARY[lint]="ok"
fi
run_world core -m "not slow_learning" "$@"
RLKIT_REQUIRE_REVERB=1 run_world reverb -m "(reverb or both_worlds) and not slow_learning" "$@"

echo "===== [test.sh] summary ====="
echo "[test.sh] lint: ${SUMMARY[lint]}"
for world in core reverb; do
  echo "[test.sh] $world world: ${SUMMARY[$world]}"
done
exit "$status"
