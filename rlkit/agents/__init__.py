"""The agent zoo. Each module has ``Config``, its state NamedTuple, ``make`` and ``experience``."""

from __future__ import annotations

import difflib
from types import ModuleType

from rlkit.agents import (
    bc,
    c51,
    cql,
    d4pg,
    ddpg,
    dqn,
    impala,
    iql,
    mpo,
    ppo,
    pqn,
    qrdqn,
    r2d2,
    rainbow,
    recurrent_ppo,
    sac,
    td3,
)

REGISTRY: dict[str, ModuleType] = {
    "ppo": ppo, "recurrent_ppo": recurrent_ppo, "impala": impala, "dqn": dqn, "c51": c51, "qrdqn": qrdqn,
    "rainbow": rainbow, "r2d2": r2d2, "pqn": pqn, "sac": sac, "td3": td3, "ddpg": ddpg, "d4pg": d4pg, "mpo": mpo,
    "bc": bc, "cql": cql, "iql": iql,
}


def get(name: str) -> ModuleType:
    """The agent module called ``name``; a ValueError lists the known agents."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=2)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"agent: unknown agent {name!r}.{hint} Known agents: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


__all__ = [
    "REGISTRY", "get", "bc", "c51", "cql", "d4pg", "ddpg", "dqn", "impala", "iql", "mpo", "ppo", "pqn", "qrdqn", "r2d2", "rainbow", "recurrent_ppo", "sac", "td3",
]
