"""What the adapters of suites beyond gymnax share (``brax:``, ``craftax:``, ``jumanji:`` ids).

Each adapter is a gymnax ``Environment`` around a suite's environment without its auto-reset or its
own time limit: ``step_env`` reports termination only, the adapter counts steps and reports the time
limit through ``is_truncated``, and gymnax's ``step`` adds the auto-reset and the final observation.
``DeviceEnv`` wraps the result like any gymnax environment.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import jax
from flax import struct

NEVER = 2**31 - 1  # a suite's own time limit, lifted: the adapter keeps it as a truncation


@struct.dataclass
class TimedState:
    """A suite's state and the number of steps taken in its episode."""

    inner: Any
    time: jax.Array


@struct.dataclass
class StepLimit:
    """The episode's step limit: reaching it truncates the episode (it bootstraps)."""

    max_steps_in_episode: int


def require(package: str, env_id: str, extra: str) -> None:
    """A one-line error when ``package`` (the ``extra``) is not installed."""
    if importlib.util.find_spec(package) is None:
        raise ValueError(f"env: {env_id} needs the {extra} extra (pip install 'rlkit[{extra}]')")


def step_limit(default: int, max_steps_in_episode: int | None) -> int:
    """``max_steps_in_episode`` if given (checked), else the suite's ``default``."""
    if max_steps_in_episode is None:
        return int(default)
    if int(max_steps_in_episode) < 1:
        raise ValueError(f"max_steps_in_episode must be >= 1, got {max_steps_in_episode}")
    return int(max_steps_in_episode)

