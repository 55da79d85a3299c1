"""Opening and closing a ``train`` run directory, for both backends.

``open_run_dir`` decides, before anything compiles, what ``--out`` means for this command line:
a fresh run, a resumed one, or one that is already complete. It writes the run's identity to
``run.json`` first, so a run killed before its first checkpoint is still recognised: the same
command plus ``--resume`` then starts it afresh instead of refusing, and a cluster scheduler can
requeue one command line whatever happened to the last attempt. ``finish_run`` prints the
evaluation table and the timings and writes ``results.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rlkit.runs import records
from rlkit.runs.checkpoint import CHECKPOINT_DIR, differences, has_checkpoints

RUN_FILE = "run.json"  # the identity of the run a directory belongs to, written before training


class OpenedRun(NamedTuple):
    """What ``--out`` holds for this command.

    Attributes:
      path: the run directory, created and writable.
      resume: continue from the latest checkpoint.
      complete: the same run already finished here (``results.json``); nothing to train.
    """

    path: Path
    resume: bool
    complete: bool


def _check_writable(run_dir: Path) -> None:
    """A one-line ValueError where ``--out`` cannot be created or written."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".rlkit-write-test-{time.monotonic_ns()}"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"--out {run_dir}: cannot be written ({reason}); choose a writable directory") from None


def _saved_identity(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"--out {run_dir}: {RUN_FILE} is unreadable ({error}); choose another directory") from None


def _refuse_other_run(run_dir: Path, saved: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
    changed = differences(records.jsonable(saved), records.jsonable(identity))
    if changed:
        raise ValueError(f"--resume: {run_dir} holds a different run: " + "; ".join(changed))


def open_run_dir(
    out: str | Path,
    identity: Mapping[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    own_dirs: Sequence[str] = (CHECKPOINT_DIR,),
) -> OpenedRun:
    """Prepare ``out`` for the run described by ``identity`` (agent, env, config, seeds, plan).

    - no records: a fresh run (with or without ``--resume``);
    - checkpoints of an unfinished run: refused unless ``--resume`` (continue) or ``--overwrite``;
    - ``--resume`` with this run's records but no checkpoint yet: started afresh, saying so;
    - ``--resume`` on this run, finished: ``complete``;
    - any other run's records: refused unless ``--overwrite``.

    ``own_dirs`` are the subdirectories a fresh start removes (checkpoints, replay).
    """
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir}: is a file, not a directory")
    finished = (run_dir / records.RESULTS_FILE).exists()
    checkpointed = has_checkpoints(run_dir)
    if resume and not overwrite:
        saved = _saved_identity(run_dir)
        if saved is None and finished:  # a run from before run.json: its results name it
            results = json.loads((run_dir / records.RESULTS_FILE).read_text(encoding="utf-8"))
            saved = {name: results.get(name) for name in identity}
        if saved is not None:
            _refuse_other_run(run_dir, saved, identity)
        if finished:
            return OpenedRun(run_dir, resume=False, complete=True)
        if checkpointed:
            _check_writable(run_dir)
            return OpenedRun(run_dir, resume=True, complete=False)
        if saved is None and (run_dir / records.METRICS_FILE).exists():
            raise ValueError(f"--resume: {run_dir} holds records of an unknown run and no checkpoint; "
                             "pass --overwrite to replace them")
        if saved is not None:
            print(f"--resume: {run_dir} holds no checkpoint of this run yet; starting it afresh", file=sys.stderr,
                  flush=True)  # even with --quiet: it says what happened to the earlier records
        overwrite = True  # this run's own partial records, or nothing at all
    elif checkpointed and not (overwrite or finished):
        raise FileExistsError(f"--out {run_dir}: holds checkpoints of an unfinished run; pass --resume to continue "
                              "it, or choose another directory")
    existing = [name for name in (records.RESULTS_FILE, records.METRICS_FILE) if (run_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"--out {run_dir}: already holds {', '.join(existing)} from an earlier run; "
                              "choose another directory or pass --overwrite")
    _check_writable(run_dir)
    for name in own_dirs:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    (run_dir / records.RESULTS_FILE).unlink(missing_ok=True)
    records.write_json_atomic(run_dir / RUN_FILE, identity)
    return OpenedRun(run_dir, resume=False, complete=False)


def print_complete(run_dir: Path) -> int:
    """For ``--resume`` on a finished run: show its results and succeed (a requeued job is done)."""
    from rlkit.stats import mean_interval

    results = json.loads((run_dir / records.RESULTS_FILE).read_text(encoding="utf-8"))
    per_seed = np.asarray(results["final_eval_return"]["per_seed"], np.float64)
    print(records.format_eval_table(results["seeds"], per_seed, mean_interval(per_seed)))
    print(f"the run in {run_dir} is already complete; nothing to do ({records.RESULTS_FILE} unchanged)")
    return 0


def finish_run(
    run_dir: Path,
    identity: Mapping[str, Any],
    per_seed: np.ndarray,
    *,
    compile_seconds: float,
    run_seconds: float,
    eval_seconds: float,
    resumed_from: int | None,
    started: float,
    versions: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
    metrics_path: Path | None = None,
) -> Path:
    """Print the per-seed evaluation table and the timings, then write ``results.json``."""
    from rlkit.stats import mean_interval

    estimate = mean_interval(per_seed)
    steps_per_second = len(identity["seeds"]) * identity["total_steps"] / max(run_seconds, 1e-9)
    print(records.format_eval_table(identity["seeds"], per_seed, estimate))
    print(f"compile {compile_seconds:.1f} s | run {run_seconds:.1f} s | {steps_per_second:,.0f} steps/s | "
          f"eval {eval_seconds:.1f} s")
    path = records.write_results(run_dir, {
        **identity,
        "final_eval_return": {"per_seed": per_seed, "mean": estimate.mean, "ci95": [estimate.low, estimate.high]},
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
        "eval_seconds": eval_seconds,
        "steps_per_second": steps_per_second,
        "resumed_from_chunk": resumed_from,
        **(extra or {}),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "versions": dict(versions),
    })
    print(f"wrote {path} and {metrics_path or run_dir / records.METRICS_FILE}")
    return path
