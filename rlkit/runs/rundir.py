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

RUN_FILE = records.RUN_FILE
FINAL_STATES_DIR = "final_states"  # the final agent states, for rlkit.load, eval and render
REPLAY_DIR = "replay"  # Reverb checkpoints of the replay (Reverb and distributed runs)
TENSORBOARD_DIR = "tensorboard"


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


def check_run_options(args: Any) -> None:
    """The ``train`` options that do not depend on the agent, checked before ``--out`` is touched."""
    from rlkit.runs.checkpoint import check_schedule

    check_schedule(args.checkpoint_every_steps, args.checkpoint_every_minutes, args.keep_checkpoints)
    check_trackers(getattr(args, "tensorboard", False), getattr(args, "wandb", False))


def check_trackers(tensorboard: bool, wandb: bool) -> None:
    """A one-line error for ``--tensorboard`` or ``--wandb`` without its extra."""
    import importlib.util

    if wandb and importlib.util.find_spec("wandb") is None:
        raise ValueError("--wandb needs wandb: pip install 'rlkit[wandb]' (or wandb)")
    if tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ValueError("--tensorboard needs tensorboardX: pip install 'rlkit[tensorboard]' (or tensorboardX)")


def check_writable(run_dir: Path) -> None:
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


def open_run_dir(
    out: str | Path,
    identity: Mapping[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    own_dirs: Sequence[str] = (CHECKPOINT_DIR, FINAL_STATES_DIR),
) -> OpenedRun:
    """Prepare ``out`` for the run described by ``identity`` (agent, env, config, seeds, plan).

    - nothing there, or only this run's ``run.json``: a fresh run (with or without ``--resume``);
    - checkpoints of an unfinished run: refused unless ``--resume`` (continue) or ``--overwrite``;
    - ``--resume`` with this run's records but no checkpoint yet: started afresh, saying so;
    - ``--resume`` on this run, finished: ``complete``;
    - any other run's records or ``run.json``: refused unless ``--overwrite``;
    - ``--resume`` with ``--overwrite``: refused (continue, or replace: one of them).

    Starting afresh over earlier records (``--overwrite``, or ``--resume`` before a checkpoint) removes
    them: ``results.json``, ``metrics.jsonl``, ``tensorboard/`` and ``own_dirs`` (checkpoints, final
    states, replay). Nothing is removed otherwise.
    """
    run_dir = Path(out)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite: --resume continues the run in --out, --overwrite replaces it; "
                         "pass one of them")
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"--out {run_dir}: is a file, not a directory")
        finished = (run_dir / records.RESULTS_FILE).exists()
        checkpointed = has_checkpoints(run_dir)
        saved = _saved_identity(run_dir)
        has_metrics = (run_dir / records.METRICS_FILE).exists()
    except OSError as error:
        raise ValueError(f"--out {run_dir}: cannot be read ({error.strerror or error})") from None
    if saved is None and finished:  # a run from before run.json: its results name it
        results = json.loads((run_dir / records.RESULTS_FILE).read_text(encoding="utf-8"))
        saved = {name: results.get(name) for name in identity}
    changed = [] if saved is None else differences(records.jsonable(saved), records.jsonable(identity))
    if resume:
        if changed:
            raise ValueError(f"--resume: {run_dir} holds a different run: " + "; ".join(changed))
        if finished:
            return OpenedRun(run_dir, resume=False, complete=True)
        if checkpointed:
            check_writable(run_dir)
            return OpenedRun(run_dir, resume=True, complete=False)
        if saved is None and has_metrics:
            raise ValueError(f"--resume: {run_dir} holds records of an unknown run and no checkpoint; "
                             "pass --overwrite to replace them")
        if has_metrics:
            print(f"--resume: {run_dir} holds no checkpoint of this run yet; starting it afresh", file=sys.stderr,
                  flush=True)  # even with --quiet: it says what happens to the earlier records
        overwrite = True  # this run's own partial records, or nothing at all
    elif not overwrite:
        if checkpointed and not finished:
            raise FileExistsError(f"--out {run_dir}: holds checkpoints of an unfinished run; pass --resume to "
                                  "continue it, or choose another directory")
        existing = [name for name in (records.RESULTS_FILE, records.METRICS_FILE) if (run_dir / name).exists()]
        if existing:
            raise FileExistsError(f"--out {run_dir}: already holds {', '.join(existing)} from an earlier run; "
                                  "choose another directory or pass --overwrite")
        if changed:
            raise FileExistsError(f"--out {run_dir}: {RUN_FILE} names another run (is it still starting?): "
                                  + "; ".join(changed) + "; choose another directory or pass --overwrite")
    check_writable(run_dir)
    if overwrite:
        for name in (*own_dirs, TENSORBOARD_DIR):
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for name in (records.RESULTS_FILE, records.METRICS_FILE):
            (run_dir / name).unlink(missing_ok=True)
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
