"""Learning curves and IQM tables from run directories (``python -m rlkit plot RUN_DIR ...``).

Reads the records ``python -m rlkit train`` writes (``metrics.jsonl``, ``results.json``; see
``rlkit/runs/records.py``). Curves are the mean across seeds with a 95% percentile-bootstrap band;
final returns are summarized by their interquartile mean (IQM) with a 95% percentile-bootstrap
interval, as recommended for few-seed RL results by Agarwal et al. (2021), "Deep Reinforcement
Learning at the Edge of the Statistical Precipice". matplotlib is imported only when plotting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from rlkit.runs.records import METRICS_FILE, RESULTS_FILE, RUN_FILE
from rlkit.stats import bootstrap_interval, curve_band, iqm

DEFAULT_METRIC = "episode_return"
AXIS_LABELS = {"env_steps": "environment steps", "grad_steps": "gradient steps (offline)"}


class Run(NamedTuple):
    name: str                 # the run directory's name (the legend label)
    steps: np.ndarray         # [points]: steps per seed at the end of each chunk (see axis)
    values: np.ndarray        # [seeds, points]: the metric per seed and chunk (NaN where none)
    final_eval: np.ndarray    # [seeds]: final greedy evaluation return per seed (results.json)
    agent: str
    env: str
    metric: str
    axis: str = "env_steps"   # "grad_steps" for an offline run, which takes no environment steps


def _floats(value: Any, what: str) -> np.ndarray:
    """JSON numbers (``null`` for NaN, as records.py writes non-finite values) as float64."""
    try:
        return np.array([np.nan if v is None else v for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{what}: expected a list of numbers, got {value!r}") from None


def load_run(run_dir: str | os.PathLike, metric: str = DEFAULT_METRIC) -> Run:
    """Read one run directory's per-seed curve of ``metric`` and its per-seed final returns.

    Raises FileNotFoundError for a missing directory or records file, ValueError for an unknown
    metric (naming those present) or malformed records.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"run dir {str(run_dir)!r} does not exist (or is not a directory)")
    metrics_path, results_path = path / METRICS_FILE, path / RESULTS_FILE
    for needed in (metrics_path, results_path):
        if not needed.is_file():
            raise FileNotFoundError(
                f"run dir {str(run_dir)!r} has no {needed.name}; plot reads the records that "
                f"'python -m rlkit train --out DIR' writes once a run finishes"
            )
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        lines = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise ValueError(f"run dir {str(run_dir)!r}: unreadable JSON ({error})") from None
    if not lines:
        raise ValueError(f"{metrics_path}: no records")
    present = sorted(lines[0].get("per_seed", {}))
    if metric not in present:
        raise ValueError(
            f"unknown metric {metric!r} in {metrics_path}; metrics present: {', '.join(present) or 'none'}"
        )
    rows = []
    axis = "env_steps" if "env_steps" in lines[0] else "grad_steps"  # offline runs count gradient steps
    for number, line in enumerate(lines, 1):
        if metric not in line.get("per_seed", {}) or axis not in line:
            raise ValueError(f"{metrics_path}, line {number}: no {axis} or per_seed {metric!r}")
        rows.append(_floats(line["per_seed"][metric], f"{metrics_path}, line {number}, per_seed {metric!r}"))
    if len({row.size for row in rows}) != 1:
        raise ValueError(f"{metrics_path}: the number of seeds changes between lines")
    try:
        final = _floats(results["final_eval_return"]["per_seed"], f"{results_path}: final_eval_return")
        agent, env = str(results["agent"]), str(results["env"])
    except (KeyError, TypeError):
        raise ValueError(f"{results_path}: expected 'agent', 'env' and 'final_eval_return': {{'per_seed': [...]}}") from None
    return Run(
        name=path.resolve().name or str(run_dir),
        steps=np.array([line[axis] for line in lines], dtype=np.float64),
        axis=axis,
        values=np.stack(rows, axis=1),
        final_eval=final,
        agent=agent,
        env=env,
        metric=metric,
    )


def _labels(runs: list[Run]) -> list[str]:
    """Legend labels: the run dir name and, unless it says them already, agent and env."""
    labels = []
    for run in runs:
        said = run.agent.lower() in run.name.lower() and run.env.lower().split("-")[0] in run.name.lower()
        labels.append(run.name if said else f"{run.name} ({run.agent}, {run.env})")
    return labels


def plot_runs(
    runs: list[Run], metric: str, out_path: str | os.PathLike, width_px: int = 1200, height_px: int = 800,
) -> dict[str, Any]:
    """Write a PNG of learning curves: per run, the mean across seeds of ``metric`` against
    environment steps with a 95% bootstrap band across seeds (``curve_band``), one colour per run.

    Renders headless with matplotlib's Agg canvas, without pyplot or a global backend switch.
    Returns ``{"curves": runs drawn with at least one value, "path": str, "size": (w, h)}``.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("plot_runs needs at least one run")
    if width_px < 100 or height_px < 100:
        raise ValueError(f"the image must be at least 100x100 pixels, got {width_px}x{height_px}")
    dpi = 100
    figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if len(runs) <= 10:
        colours = [f"C{i}" for i in range(len(runs))]
    else:
        colours = [tuple(c) for c in matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, len(runs)))]
    curves = 0
    for run, label, colour in zip(runs, _labels(runs), colours):
        mean, low, high = curve_band(run.values)
        if not np.isfinite(mean).any():
            continue
        curves += 1
        seeds = run.values.shape[0]
        axes.plot(run.steps, mean, color=colour, linewidth=2, marker="o" if mean.size <= 30 else None,
                  markersize=3, label=f"{label}, {seeds} seed{'s' if seeds != 1 else ''}")
        axes.fill_between(run.steps, low, high, color=colour, alpha=0.2, linewidth=0)
    envs = sorted({run.env for run in runs})
    where = f"{envs[0]}: " if len(envs) == 1 else ""
    axes.set_title(f"{where}{metric}, mean across seeds with 95% bootstrap CI")
    axes.set_xlabel(" / ".join(sorted({AXIS_LABELS[run.axis] for run in runs})))
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
    if curves:
        axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.print_png(str(out))
    return {"curves": curves, "path": str(out), "size": canvas.get_width_height()}


def format_iqm_table(runs: list[Run], confidence: float = 0.95) -> str:
    """Per run: the IQM of the per-seed final evaluation returns with its percentile-bootstrap
    interval (2000 resamples, fixed seed; Agarwal et al., 2021), the mean, and the seed count."""
    header = ["run", "agent", "env", "seeds", "IQM", f"{confidence:.0%} CI (bootstrap)", "mean"]
    rows = []
    for run in runs:
        finite = run.final_eval[np.isfinite(run.final_eval)]
        if finite.size:
            estimate = bootstrap_interval(finite, iqm, confidence=confidence)
            cells = [f"{estimate.mean:.2f}", f"[{estimate.low:.2f}, {estimate.high:.2f}]", f"{finite.mean():.2f}"]
        else:
            cells = ["n/a", "n/a", "n/a"]
        rows.append([run.name, run.agent, run.env, str(finite.size), *cells])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    right = {3, 4, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    note = ("IQM: interquartile mean of the per-seed final evaluation returns (25% trimmed mean); "
            "CI: percentile bootstrap over seeds, 2000 resamples (Agarwal et al., 2021).")
    return "\n".join([line(header), rule, *(line(row) for row in rows), note])


def export_csv(run_dirs: list[str], out: str | os.PathLike) -> tuple[Path, int]:
    """Write the runs' ``metrics.jsonl`` as one long CSV table: a row per run, seed and chunk.

    Columns: ``run, agent, env, seed, chunk, env_steps`` and every per-seed metric (empty where a
    run does not log it). Unfinished runs are exported too (their seeds from ``run.json``).
    Returns the path and the number of rows.
    """
    import csv

    tables = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        metrics_path = path / METRICS_FILE
        if not metrics_path.is_file():
            raise FileNotFoundError(f"run dir {str(run_dir)!r} has no {METRICS_FILE}")
        described, lines = {}, []
        try:
            for name in (RESULTS_FILE, RUN_FILE):
                if (path / name).is_file():
                    described = json.loads((path / name).read_text(encoding="utf-8"))
                    break
            text = metrics_path.read_text(encoding="utf-8")
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise ValueError(f"run dir {str(run_dir)!r}: unreadable JSON ({error})") from None
        tables.append((path.resolve().name, described, lines))
    names = [name for name, _, _ in tables]
    if len(set(names)) < len(names):  # a/run and b/run: label the rows with the paths as given
        tables = [(str(run_dir), described, lines) for run_dir, (_, described, lines) in zip(run_dirs, tables)]
    metrics = sorted({name for _, _, lines in tables for line in lines for name in line.get("per_seed", {})}
                     - {*AXIS_LABELS, "chunk"})
    rows = 0
    out = Path(out)
    with open(out, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        # An online run fills env_steps, an offline one grad_steps (it takes no environment steps).
        writer.writerow(["run", "agent", "env", "seed", "chunk", *AXIS_LABELS, *metrics])
        for name, described, lines in tables:
            for line in lines:
                per_seed = line.get("per_seed", {})
                count = max((len(v) for v in per_seed.values()), default=0)
                seeds = described.get("seeds") or []
                seeds = seeds if len(seeds) == count else list(range(count))  # unknown: by position
                for i in range(count):
                    steps = [_cell(per_seed.get(axis, [line.get(axis)] * count)[i]) for axis in AXIS_LABELS]
                    values = [_cell(per_seed[m][i]) if m in per_seed else "" for m in metrics]
                    writer.writerow([name, described.get("agent", ""), described.get("env", ""), seeds[i],
                                     line.get("chunk", ""), *steps, *values])
                    rows += 1
    return out, rows


def _cell(value: Any) -> Any:
    """A CSV cell: integers as integers, missing values (null) empty."""
    if value is None:
        return ""
    return int(value) if isinstance(value, float) and value.is_integer() else value
