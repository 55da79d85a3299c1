"""Grid sweeps: ``python -m rlkit sweep --agent ppo --env CartPole-v1 --grid learning_rate=1e-4,3e-4 --seeds 4``.

The grid is the Cartesian product of every ``--grid name=v1,v2,...``. Float fields (those in
``rlkit.config.vmappable_fields``) vary inside one compile: all their combinations times the
seeds train as one vmapped ``run_training`` call. Every other field (ints, tuples, bools,
strings) changes the program, so each distinct assignment of them is its own *group*: one
``make_trainer`` and one compile. Every combination trains on seeds ``0..N-1``, so
combinations are compared on the same seeds. Everything is validated before anything compiles.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np

from rlkit import config as cfg
from rlkit.runs import records
from rlkit.stats import Estimate, iqm, mean_interval

SWEEP_FILE = "sweep.json"
Combination = dict[str, Any]  # field name -> value, one point of the grid


class ComboGroup(NamedTuple):
    """Combinations that share their non-numeric values, so they share one compile.

    Attributes:
      fixed: the non-numeric grid values of the group (empty when only floats vary).
      combos: the group's combinations (fixed values included), in grid order.
    """

    fixed: Combination
    combos: list[Combination]


class PlannedGroup(NamedTuple):
    """A validated group with its trainer, ready to compile and run."""

    fixed: Combination
    combos: list[Combination]
    trainer: Any  # rlkit.loops.device.Trainer


class GroupReport(NamedTuple):
    """What one group cost: one compile for ``runs`` vmapped runs of ``total_steps`` steps each."""

    index: int
    fixed: Combination
    combinations: int
    runs: int
    total_steps: int
    compile_seconds: float
    run_seconds: float
    eval_seconds: float


class Result(NamedTuple):
    """The final greedy evaluation of one grid combination across seeds.

    Attributes:
      values: the combination's grid values (field name -> value).
      returns: ``[seeds]`` mean final evaluation return of each seed.
      estimate: the mean across seeds and its 95% Student-t interval.
      iqm: the interquartile mean across seeds.
      group: the compile group that trained it.
    """

    values: Combination
    returns: np.ndarray
    estimate: Estimate
    iqm: float
    group: GroupReport


# ----------------------------------------------------------------------------- the grid


def split_values(text: str) -> list[str]:
    """Split ``v1,v2,...`` at commas outside parentheses: ``(8,8),(16,)`` -> ``['(8,8)', '(16,)']``."""
    values, depth, start = [], 0, 0
    for position, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in {text!r}")
        elif char == "," and depth == 0:
            values.append(text[start:position].strip())
            start = position + 1
    if depth:
        raise ValueError(f"unbalanced '(' in {text!r}")
    values.append(text[start:].strip())
    return values


def parse_grid(config_cls: type, specs: Sequence[str]) -> dict[str, list[Any]]:
    """Parse ``--grid name=v1,v2,...`` arguments into ``{name: [values]}`` typed for ``config_cls``.

    Tuple fields take parenthesized values: ``hidden_sizes=(64,64),(32,32)``; a bare
    ``hidden_sizes=8,16`` means ``(8,)`` and ``(16,)``. Raises a ValueError for an unknown
    field (listing the fields), a value that does not parse, an empty or repeated value, or
    a field given twice.
    """
    fields = cfg.field_types(config_cls)
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise ValueError(f"--grid expects name=v1,v2,..., got {spec!r}")
        if name not in fields:
            raise ValueError(
                f"--grid {name}: {config_cls.__module__}.{config_cls.__name__} has no field {name!r}; "
                f"fields: {', '.join(fields)}"
            )
        if name in grid:
            raise ValueError(f"--grid {name} is given twice; list all its values in one --grid {name}=v1,v2,...")
        try:
            texts = split_values(text)
        except ValueError as error:
            raise ValueError(f"--grid {spec}: {error}") from None
        values = []
        for value_text in texts:
            if not value_text:
                raise ValueError(f"--grid {spec}: empty value")
            try:
                value = cfg.parse_value(config_cls, name, value_text)
            except ValueError as error:
                raise ValueError(str(error).replace("--set ", "--grid ", 1)) from None
            if value in values:
                raise ValueError(f"--grid {spec}: value {format_value(value)} is listed twice")
            values.append(value)
        grid[name] = values
    return grid


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[Combination]:
    """The Cartesian product of the grid, as one dict per combination (last name varies fastest)."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[name] for name in names))]


def format_combination(combo: Mapping[str, Any]) -> str:
    """``name=value`` pairs, space separated (``(base config)`` for an empty combination)."""
    return " ".join(f"{name}={format_value(value)}" for name, value in combo.items()) or "(base config)"


def format_value(value: Any) -> str:
    """A grid value as the command line writes it: ``0.001``, ``(64,64)``, ``True``."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ",".join(str(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def validate_combinations(base_config: Any, combos: Sequence[Combination]) -> list[Any]:
    """Build each combination's config (running its validation); a ValueError names the bad one."""
    configs = []
    for combo in combos:
        try:
            configs.append(dataclasses.replace(base_config, **combo))
        except ValueError as error:
            raise ValueError(f"grid combination {format_combination(combo)} is invalid: {error}") from None
    return configs


def split_numeric(base_config: Any, combos: Sequence[Combination]) -> list[ComboGroup]:
    """Group combinations by their non-numeric values; numeric (vmappable) ones vary within a group.

    Groups keep the order in which their first combination appears in ``combos``.
    """
    numeric = set(cfg.vmappable_fields(base_config))
    groups: dict[tuple, ComboGroup] = {}
    for combo in combos:
        fixed = {name: value for name, value in combo.items() if name not in numeric}
        key = tuple(fixed.items())
        if key not in groups:
            groups[key] = ComboGroup(fixed, [])
        groups[key].combos.append(combo)
    return list(groups.values())


def plan_sweep(agent_module: Any, base_config: Any, env: Any, run: Any, grid: Mapping[str, Sequence[Any]]) -> list[PlannedGroup]:
    """Validate every combination and build one trainer per group; nothing compiles here."""
    from rlkit.loops.device import make_trainer

    combos = expand_grid(grid)
    validate_combinations(base_config, combos)
    planned = []
    for group in split_numeric(base_config, combos):
        try:
            trainer = make_trainer(agent_module, dataclasses.replace(base_config, **group.fixed), env, run)
        except ValueError as error:
            where = f"with {format_combination(group.fixed)}: " if group.fixed else ""
            raise ValueError(f"{where}{error}") from None
        planned.append(PlannedGroup(group.fixed, group.combos, trainer))
    return planned


# ----------------------------------------------------------------------------- running


def group_runs(combos: Sequence[Combination], fixed: Mapping[str, Any], num_seeds: int) -> tuple[list[int], dict[str, list[float]]]:
    """The vmapped runs of one group: seeds ``0..num_seeds-1`` for each combination, and per-run hparams.

    Runs are combination-major: run ``c * num_seeds + s`` is combination ``c`` on seed ``s``.
    """
    seeds = [seed for _ in combos for seed in range(num_seeds)]
    numeric_names = [name for name in combos[0] if name not in fixed]
    hparams = {name: [float(combo[name]) for combo in combos for _ in range(num_seeds)] for name in numeric_names}
    return seeds, hparams


def run_sweep(groups: Sequence[PlannedGroup], num_seeds: int, reporter: Any = None) -> list[Result]:
    """Train every group (one compile each) and return one Result per combination, in grid order.

    ``reporter``, if given, has ``start_group(index, group, runs)``, ``chunk(index, metrics,
    elapsed)`` (``run_training``'s ``on_chunk``) and ``end_group(report_or_None)``.
    """
    from rlkit.runs.runner import run_training

    if num_seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {num_seeds}")
    results = []
    for index, group in enumerate(groups):
        seeds, hparams = group_runs(group.combos, group.fixed, num_seeds)
        report = None
        if reporter is not None:
            reporter.start_group(index, group, len(seeds))
        try:
            training = run_training(
                group.trainer, seeds, hparams=hparams or None,
                on_chunk=reporter.chunk if reporter is not None else None,
            )
            report = GroupReport(
                index, group.fixed, len(group.combos), len(seeds), training.total_steps,
                training.compile_seconds, training.run_seconds, training.eval_seconds,
            )
        finally:
            if reporter is not None:
                reporter.end_group(report)
        per_run = training.eval_returns.mean(axis=1).reshape(len(group.combos), num_seeds)
        for combo, returns in zip(group.combos, per_run):
            results.append(Result(combo, returns, mean_interval(returns), iqm(returns), report))
    return results


def rank(results: Sequence[Result]) -> list[Result]:
    """Best first by mean final evaluation return across seeds (ties keep grid order)."""
    return sorted(results, key=lambda result: -result.estimate.mean)


def groups_of(results: Sequence[Result]) -> list[GroupReport]:
    """The distinct compile groups behind ``results``, by index."""
    return sorted({result.group.index: result.group for result in results}.values(), key=lambda g: g.index)


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
