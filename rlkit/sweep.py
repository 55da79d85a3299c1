"""Grid sweeps: ``python -m rlkit sweep --agent ppo --env CartPole-v1 --grid learning_rate=1e-4,3e-4 --seeds 4``.

The grid is the Cartesian product of every ``--grid name=v1,v2,...``. Float fields (those in
``rlkit.config.vmappable_fields``) vary inside one compile: all their combinations times the
seeds train as one vmapped ``run_training`` call. Every other field (ints, tuples, bools,
strings) changes the program, so each distinct assignment of them is its own *group*: one
``make_trainer`` and one compile. Every combination trains on seeds ``0..N-1``, so
combinations are compared on the same seeds. Everything is validated before anything compiles.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from rlkit import config as cfg
from rlkit.stats import Estimate, iqm, mean_interval

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
