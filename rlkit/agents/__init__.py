"""The agent zoo. Each module has ``Config``, its state NamedTuple, ``make`` and ``experience``."""

from __future__ import annotations

import difflib
from types import ModuleType

from rlkit.agents import dqn, ppo

REGISTRY: dict[str, ModuleType] = {"ppo": ppo, "dqn": dqn}


def get(name: str) -> ModuleType:
    """The agent module called ``name``; a ValueError lists the known agents."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"agent: unknown agent {name!r}.{hint} Known agents: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


__all__ = ["REGISTRY", "get", "dqn", "ppo"]
