"""Helpers for configs: frozen dataclasses validated before anything compiles.

Numeric (float) fields may also hold JAX tracers when a run vmaps over
hyperparameters; the checks here skip tracers, since their values were checked
as concrete numbers before the vmap.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import jax


def _concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer)


def check_positive(name: str, value: Any) -> None:
    """Raise a ValueError naming ``name`` unless ``value > 0``."""
    if _concrete(value) and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


# Seeds become uint32 keys, and evaluation keys sit EVAL_SEED and more above them: keep well below 2**32.
MAX_SEED = 2**31


def check_seeds(first_seed: int, num_seeds: int) -> None:
    """One-line errors for ``--seeds``/``--first-seed``: at least one seed, all in ``[0, MAX_SEED)``."""
    if num_seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {num_seeds}")
    if first_seed < 0 or first_seed + num_seeds > MAX_SEED:
        raise ValueError(f"--first-seed {first_seed}: seeds must lie in [0, 2**31), got {first_seed} to "
                         f"{first_seed + num_seeds - 1}")


def check_non_negative(name: str, value: Any) -> None:
    if _concrete(value) and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def check_unit_interval(name: str, value: Any, *, closed_low: bool = True) -> None:
    """Raise unless ``value`` lies in [0, 1] (or (0, 1] with ``closed_low=False``)."""
    if not _concrete(value):
        return
    ok = (0 <= value <= 1) if closed_low else (0 < value <= 1)
    if not ok:
        bounds = "[0, 1]" if closed_low else "(0, 1]"
        raise ValueError(f"{name} must lie in {bounds}, got {value!r}")


def continuous_bounds(spec: Any, agent: str) -> tuple[Any, Any]:
    """``(center, half_width)`` of a bounded continuous action space, as float32 numpy arrays.

    Raises a ValueError naming ``agent`` for a discrete space or infinite bounds. Agents that act
    in ``[-1, 1]`` map to the environment's range with ``center + half_width * action``.
    """
    import numpy as np

    if spec.action_kind != "continuous":
        raise ValueError(
            f"agent {agent}: needs a continuous action space, but the environment's is "
            f"{spec.action_kind} ({spec.num_actions} actions); use dqn or ppo for it"
        )
    low, high = np.asarray(spec.action_low, np.float32), np.asarray(spec.action_high, np.float32)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(f"agent {agent}: needs finite action bounds, got low={low} high={high}")
    return (high + low) / 2, np.where(high > low, (high - low) / 2, 1.0).astype(np.float32)


def check_priorities(config: Any) -> None:
    """Validate a replay agent's ``priority_exponent`` and ``importance_exponent`` (both in [0, 1])."""
    check_unit_interval("priority_exponent", config.priority_exponent)
    check_unit_interval("importance_exponent", config.importance_exponent)


def priority_settings(config: Any) -> dict[str, Any]:
    """The ``ExperienceSpec`` fields of a replay agent's prioritization settings."""
    return {name: getattr(config, name) for name in ("prioritized", "priority_exponent", "importance_exponent")}


def check_counts(config: Any, names: Sequence[str]) -> None:
    """Raise naming the first of ``names`` (integer fields of ``config``) that is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")


def check_replay(config: Any) -> None:
    """A replay agent's sizes: ``num_envs`` divides ``buffer_size``, 0 <= ``learning_starts`` <= ``buffer_size``."""
    check_divides("num_envs", config.num_envs, "buffer_size", config.buffer_size)
    check_non_negative("learning_starts", config.learning_starts)
    if config.learning_starts > config.buffer_size:
        raise ValueError(f"learning_starts={config.learning_starts} must be <= buffer_size={config.buffer_size}")


def check_divides(name: str, divisor: int, total_name: str, total: int) -> None:
    """Raise unless ``divisor`` divides ``total`` exactly."""
    if divisor <= 0 or total % divisor:
        raise ValueError(
            f"{name}={divisor} must divide {total_name}={total} exactly "
            f"(divisors that fit: {_divisors(total)})"
        )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0][:24]


def field_types(config_cls: type) -> dict[str, Any]:
    """The resolved type of each field of a dataclass."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls)}


# Floats that must stay constants of the program: flashbax checks the exponent in Python when it builds the buffer.
COMPILE_TIME_FLOATS = frozenset({"priority_exponent"})


def vmappable_fields(config: Any) -> list[str]:
    """Fields that can be vmapped over, or be runtime inputs of a program (floats: learning rates, coefficients)."""
    return [name for name, t in field_types(type(config)).items() if t is float and name not in COMPILE_TIME_FLOATS]


def parse_value(config_cls: type, name: str, text: str) -> Any:
    """Parse ``text`` as the value of field ``name`` of ``config_cls``."""
    types = field_types(config_cls)
    if name not in types:
        raise ValueError(
            f"--set {name}: {config_cls.__module__}.{config_cls.__name__} has no field "
            f"{name!r}; fields: {', '.join(types)}"
        )
    t = types[name]
    try:
        if t is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if t is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        if t is float:
            return float(text)
        if t is str:
            return text
        if typing.get_origin(t) is tuple:
            return tuple(int(v) for v in text.replace(" ", "").strip("()").split(",") if v)
    except ValueError:
        raise ValueError(f"--set {name}={text}: expected a value of type {t}") from None
    raise ValueError(f"--set {name}: fields of type {t} cannot be set from the command line")


def override(config: Any, values: Mapping[str, str]) -> Any:
    """A copy of ``config`` with fields set from strings (``--set name=value``), validated."""
    parsed = {name: parse_value(type(config), name, text) for name, text in values.items()}
    return dataclasses.replace(config, **parsed)


def _json_field(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan": JSON has no such numbers
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config's fields (tuples as lists, non-finite floats as "inf" and the like)."""
    return {k: _json_field(v) for k, v in dataclasses.asdict(config).items()}


def from_dict(config_cls: type, saved: Mapping[str, Any]) -> Any:
    """``config_cls`` from ``to_dict``'s form, validated as it was built. Fields it lacks take their defaults.

    A float field saved as ``null`` is infinity: rlkit before ``to_dict`` kept non-finite floats wrote them
    as ``null``, and infinity is the one such value a config accepts (``max_grad_norm``: no clipping).
    """
    types = field_types(config_cls)
    values = {}
    for name, value in saved.items():
        if name not in types:
            continue
        if isinstance(value, list):
            value = tuple(value)
        elif types[name] is float and (value is None or isinstance(value, str)):
            value = math.inf if value is None else float(value)
        values[name] = value
    return config_cls(**values)


def parse_steps(text: str) -> int:
    """Parse a step count such as ``500000`` or ``5e5`` (an argparse ``type``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps expects a number such as 500000 or 5e5, got {text!r}") from None
    if not value.is_integer() or value <= 0:
        raise argparse.ArgumentTypeError(f"--steps must be a positive whole number, got {text!r}")
    return int(value)


def parse_indices(text: str) -> tuple[int, ...]:
    """Parse ``0,2`` as ``(0, 2)`` (an argparse ``type`` for ``--observe``)."""
    try:
        return tuple(int(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--observe expects indices such as 0,2, got {text!r}") from None


def parse_assignment(text: str) -> tuple[str, str]:
    """Parse ``name=value`` (an argparse ``type`` for ``--set``)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--set expects name=value, got {text!r}")
    return name.strip(), value.strip()
