"""D4PG: DDPG with a distributional critic and n-step returns.

Barth-Maron et al., "Distributed Distributional Deterministic Policy Gradients", 2018
(https://arxiv.org/abs/1804.08617). This is ``rlkit.agents.td3`` with D4PG's defaults: one
critic whose output is a categorical distribution over ``num_atoms`` returns in
[``v_min``, ``v_max``] (trained with rlax's projected cross-entropy), an actor that ascends
the distribution's mean, 5-step returns, Gaussian exploration noise and Polyak target
networks; ``prioritized=True`` adds the paper's prioritized replay (the per-item loss as the
priority). The paper's many distributed actors are, on the device, many environments.
"""

from __future__ import annotations

import dataclasses

from rlkit.agents import td3
from rlkit.agents.td3 import TD3State, experience, make


@dataclasses.dataclass(frozen=True)
class Config(td3.Config):
    """TD3's fields with D4PG's defaults. Set ``v_min``/``v_max`` to cover the environment's
    discounted returns (Pendulum-v1's preset in ``rlkit.presets`` uses [-1000, 0])."""

    num_critics: int = 1
    target_noise: float = 0.0
    policy_delay: int = 1
    n_step: int = 5
    distribution: str = "categorical"
    num_atoms: int = 51

    def __post_init__(self):
        super().__post_init__()
        if self.distribution != "categorical":
            raise ValueError(f"distribution: d4pg is 'categorical', got {self.distribution!r}; use ddpg or td3")


D4PGState = TD3State

__all__ = ["Config", "D4PGState", "experience", "make"]
