"""The ``rlkit sweep`` command: progress lines, the ranked table, ``sweep.json`` and the arguments.

``rlkit.sweep`` plans and trains the grid; this module is what the shell sees of it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from rlkit import config as cfg
from rlkit.runs import records
from rlkit.sweep import (
    GroupReport,
    PlannedGroup,
    Result,
    format_combination,
    format_value,
    groups_of,
    parse_grid,
    plan_sweep,
    rank,
    run_sweep,
)

SWEEP_FILE = "sweep.json"

class ProgressReporter:
    """Progress on stderr: a line per group, then ``records.Progress`` per chunk."""

    def __init__(self, num_groups: int, stream: TextIO | None = None):
        self.num_groups = num_groups
        self.stream = stream or sys.stderr
        self.progress = None
        self.runs = 0
        self.last_steps = 0
        self.last_elapsed = 0.0

    def start_group(self, index: int, group: PlannedGroup, runs: int) -> None:

        label = format_combination(group.fixed) if group.fixed else "all combinations"
        total_steps = group.trainer.plan.total_steps
        print(
            f"group {index + 1}/{self.num_groups} ({label}): {len(group.combos)} combination(s), "
            f"{runs} vmapped run(s) of {total_steps:,} steps; compiling...",
            file=self.stream, flush=True,
        )
        self.progress = records.Progress(total_steps, stream=self.stream, runs=runs)
        self.runs, self.last_steps, self.last_elapsed = runs, 0, 0.0

    def chunk(self, index: int, metrics: Mapping[str, np.ndarray], elapsed: float) -> None:
        from rlkit.runs.runner import summarize_chunk

        env_steps = int(np.max(metrics["env_steps"]))
        sps = (env_steps - self.last_steps) * self.runs / max(elapsed - self.last_elapsed, 1e-9)
        self.last_steps, self.last_elapsed = env_steps, elapsed
        self.progress.update(env_steps, sps, summarize_chunk(metrics)["episode_return"])

    def end_group(self, report: GroupReport | None) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if report is not None:
            print(f"  compile {report.compile_seconds:.1f} s | run {report.run_seconds:.1f} s",
                  file=self.stream, flush=True)


# ----------------------------------------------------------------------------- output


def format_table(results: Sequence[Result], names: Sequence[str]) -> str:
    """A plain-text table, one row per result in the given order: grid values, mean, 95% CI, IQM, per-seed returns."""
    header = ["rank", *names, "mean", "95% CI", "IQM", "per-seed returns"]
    rows = [
        [
            str(position),
            *(format_value(result.values[name]) for name in names),
            f"{result.estimate.mean:.2f}",
            f"[{result.estimate.low:.2f}, {result.estimate.high:.2f}]",
            f"{result.iqm:.2f}",
            " ".join(f"{value:.1f}" for value in result.returns),
        ]
        for position, result in enumerate(results, start=1)
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    numeric_columns = {0, len(header) - 4, len(header) - 2}  # rank, mean, IQM: right-aligned
    lines = []
    for row in [header, None, *rows]:
        if row is None:
            lines.append("  ".join("-" * width for width in widths))
            continue
        cells = [
            cell.rjust(width) if column in numeric_columns else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_summary(results: Sequence[Result], num_seeds: int, total_seconds: float) -> str:
    """One line: combinations, runs, compiles used, compile/run seconds, total time."""
    groups = groups_of(results)
    compile_seconds = sum(group.compile_seconds for group in groups)
    run_seconds = sum(group.run_seconds + group.eval_seconds for group in groups)
    return (
        f"{len(results)} combination(s) x {num_seeds} seed(s) = {len(results) * num_seeds} runs "
        f"in {len(groups)} compile(s) | compile {compile_seconds:.1f} s | run {run_seconds:.1f} s | "
        f"total {total_seconds:.1f} s"
    )


def sweep_record(
    agent: str, env_id: str, base_config: Any, grid: Mapping[str, Sequence[Any]], num_seeds: int,
    run: Any, results: Sequence[Result], total_seconds: float,
) -> dict[str, Any]:
    """The contents of ``sweep.json``: the setup, ranked per-combination results, per-group timings.

    ``steps`` is the requested step count; each group's ``total_steps`` is what its runs trained
    (rounded down to whole loop iterations, which depend on the group's num_envs and num_steps).
    """
    ranked = rank(results)
    return records.jsonable({
        "agent": agent,
        "env": env_id,
        "base_config": cfg.to_dict(base_config),
        "grid": {name: list(values) for name, values in grid.items()},
        "seeds": list(range(num_seeds)),
        "steps": run.total_steps,
        "eval_episodes": run.eval_episodes,
        "results": [
            {
                "rank": position,
                "values": result.values,
                "mean": result.estimate.mean,
                "ci95": [result.estimate.low, result.estimate.high],
                "iqm": result.iqm,
                "per_seed": result.returns,
                "group": result.group.index,
            }
            for position, result in enumerate(ranked, start=1)
        ],
        "groups": [group._asdict() for group in groups_of(results)],
        "compiles": len(groups_of(results)),
        "total_seconds": total_seconds,
        "versions": records.versions(),
    })


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` for ``sweep.json`` and check it can be written; refuse if it already holds one."""
    from rlkit.runs.rundir import check_writable

    out_dir = Path(path)
    if (out_dir / SWEEP_FILE).exists():
        raise FileExistsError(
            f"--out {out_dir}: already holds {SWEEP_FILE} from an earlier sweep; choose another directory"
        )
    check_writable(out_dir)  # before anything trains, not after
    return out_dir


def write_sweep(out_dir: Path, record: Mapping[str, Any]) -> Path:
    """Write ``sweep.json`` atomically (temporary file, then rename); never replaces an existing one."""
    path = out_dir / SWEEP_FILE
    if path.exists():
        raise FileExistsError(f"{path} appeared while the sweep ran; not overwriting it (the table above "
                              "holds the results)")
    try:
        return records.write_json_atomic(path, record)
    except OSError as error:
        raise ValueError(f"--out {out_dir}: {SWEEP_FILE} cannot be written ({error.strerror or error}); the table "
                         "above holds the results") from None


# ----------------------------------------------------------------------------- command line


def add_parser(subcommands: Any, epilog: str | None = None) -> argparse.ArgumentParser:
    """Register the ``sweep`` subcommand on ``subcommands`` (from ``add_subparsers``).

    ``epilog``: text shown after the help, e.g. the catalogue of agents and environments.
    """
    parser = subcommands.add_parser(
        "sweep", help="train a grid of configs on several seeds, ranked by final return",
        description="Train every combination of the --grid values on seeds 0..N-1 and rank them by mean\n"
                    "final greedy evaluation return. Float fields vary inside one compile (vmapped); each\n"
                    "distinct value of the other fields (ints, tuples, bools, strings) compiles once more.",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--agent", required=True, help="agent name (see 'python -m rlkit train --help')")
    parser.add_argument("--env", required=True, help="environment id")
    parser.add_argument(
        "--grid", action="append", required=True, metavar="NAME=V1,V2,...",
        help="values of one config field to sweep (repeatable; the grid is the Cartesian product); "
             "tuples in parentheses, e.g. 'hidden_sizes=(64,64),(32,32)'",
    )
    parser.add_argument("--seeds", type=int, default=4, help="seeds per combination, 0..N-1 (default 4)")
    parser.add_argument("--steps", type=cfg.parse_steps, required=True, help="environment steps per run, e.g. 5e5")
    parser.add_argument(
        "--set", dest="overrides", type=cfg.parse_assignment, action="append", default=[], metavar="NAME=VALUE",
        help="fix a field of the base config for every combination (repeatable)",
    )
    parser.add_argument("--out", help="directory to write sweep.json into (never overwrites one)")
    parser.add_argument("--eval-episodes", type=int, default=32, help="final evaluation episodes per run")
    parser.add_argument("--chunks", type=int, default=10, help="about how many chunks (log points) per run")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def command(args: argparse.Namespace) -> int:
    """Run ``python -m rlkit sweep``; bad input raises ValueError (or FileExistsError) before compiling."""
    from rlkit import agents, envs, presets
    from rlkit.loops.device import RunConfig

    started = time.perf_counter()
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    agent_module = agents.get(args.agent)
    grid = parse_grid(agent_module.Config, args.grid)
    overrides = dict(args.overrides)
    both = [name for name in grid if name in overrides]
    if both:
        raise ValueError(f"{', '.join(both)}: given in both --set and --grid; use one")
    base_config = cfg.override(presets.config_for(args.agent, args.env), overrides)
    env = envs.make(args.env)
    run = RunConfig(total_steps=args.steps, num_chunks=args.chunks, eval_episodes=args.eval_episodes)
    groups = plan_sweep(agent_module, base_config, env, run, grid)
    out_dir = prepare_out_dir(args.out) if args.out else None

    reporter = None if args.quiet else ProgressReporter(len(groups))
    if reporter is not None:
        combos = sum(len(group.combos) for group in groups)
        print(f"rlkit sweep: {args.agent} on {args.env}, {combos} combination(s) x {args.seeds} seed(s) "
              f"in {len(groups)} compile group(s)", file=sys.stderr, flush=True)
    results = run_sweep(groups, args.seeds, reporter)
    total_seconds = time.perf_counter() - started

    print(format_table(rank(results), list(grid)))
    print(format_summary(results, args.seeds, total_seconds))
    if out_dir is not None:
        record = sweep_record(args.agent, args.env, base_config, grid, args.seeds, run, results, total_seconds)
        print(f"wrote {write_sweep(out_dir, record)}")
    return 0
