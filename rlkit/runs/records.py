"""A run directory: metrics written per chunk (JSONL), results.json at the end, progress lines."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"  # the identity of the run a directory belongs to, written before training


def jsonable(value: Any) -> Any:
    """JSON-friendly: tuples and arrays to lists, numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class MetricsWriter:
    """Appends one JSON line per chunk: aggregated means and per-run values.

    ``keep_lines=None`` starts a fresh file; an integer keeps that many lines of an
    existing one (the position a checkpoint recorded) and appends after them.
    """

    def __init__(self, run_dir: Path, keep_lines: int | None = None):
        self.path = run_dir / METRICS_FILE
        kept: list[str] = []
        if keep_lines is not None and self.path.exists():
            kept = self.path.read_text(encoding="utf-8").splitlines(keepends=True)[:keep_lines]
            if len(kept) < keep_lines:
                raise ValueError(
                    f"--resume: {self.path} has {len(kept)} lines but the checkpoint expects "
                    f"{keep_lines}; the run directory was changed by hand"
                )
            # The kept lines replace the file in one rename: a kill or a full disk meanwhile leaves it whole.
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, self.path)
        self._file = open(self.path, "a" if keep_lines is not None else "w", encoding="utf-8")
        self.lines = len(kept)

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
        self._file.flush()
        self.lines += 1

    def close(self) -> None:
        self._file.close()


def write_json_atomic(path: Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as JSON atomically (temporary file, then rename)."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(jsonable(record), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_results(run_dir: Path, results: Mapping[str, Any]) -> Path:
    """Write ``results.json`` atomically."""
    return write_json_atomic(run_dir / RESULTS_FILE, results)


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on, for the records."""
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version()}
    for name in ("jax", "jaxlib", "flax", "optax", "rlax", "gymnax", "numpy", "rlkit"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


class Progress:
    """A tqdm bar on a terminal; plain lines otherwise (CI logs); nothing when quiet.

    ``total_steps`` and the steps given to ``update`` are per run; the steps/s given to ``update`` count
    all ``runs`` (vmapped seeds and combinations) together, as the user's throughput.
    """

    def __init__(self, total_steps: int, quiet: bool = False, stream: TextIO | None = None, initial: int = 0,
                 runs: int = 1):
        self.total = total_steps
        self.runs = runs
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.bar = None
        self._done = initial
        if not quiet and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_steps, initial=initial, unit="step", unit_scale=True, file=self.stream,
                dynamic_ncols=True,
            )

    def update(self, env_steps: int, steps_per_second: float, recent_return: float) -> None:
        if self.quiet:
            return
        ret = "n/a" if not math.isfinite(recent_return) else f"{recent_return:.1f}"
        if self.bar is not None:
            self.bar.update(env_steps - self._done)
            self.bar.set_postfix_str(f"{steps_per_second:,.0f} steps/s, return {ret}")
        else:
            pct = 100.0 * env_steps / max(self.total, 1)
            eta = (self.total - env_steps) * self.runs / max(steps_per_second, 1e-9)
            print(
                f"steps {env_steps:>11,}/{self.total:,} ({pct:5.1f}%) | "
                f"{steps_per_second:>10,.0f} steps/s | ETA {_duration(eta)} | return {ret}",
                file=self.stream, flush=True,
            )
        self._done = env_steps

    def note(self, message: str) -> None:
        """A one-line status message (compiling, evaluating, checkpointing), unless quiet."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def format_eval_table(seeds, returns: np.ndarray, estimate) -> str:
    """A plain-text table of final evaluation returns per seed, then mean and 95% interval."""
    lines = [f"{'seed':>6}  {'eval return':>12}", f"{'-' * 6}  {'-' * 12}"]
    for seed, value in zip(seeds, returns):
        lines.append(f"{seed:>6}  {value:>12.2f}")
    lines.append(f"{'-' * 6}  {'-' * 12}")
    lines.append(f"{'mean':>6}  {estimate.mean:>12.2f}")
    if estimate.n > 1:
        lines.append(f"{'95% CI':>6}  [{estimate.low:.2f}, {estimate.high:.2f}] (Student t, n={estimate.n})")
    return "\n".join(lines)
