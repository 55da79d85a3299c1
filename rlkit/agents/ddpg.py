"""Deep Deterministic Policy Gradient: TD3 with one critic, no target smoothing and no delay.

Lillicrap et al., "Continuous control with deep reinforcement learning", 2016
(https://arxiv.org/abs/1509.02971). The algorithm is ``rlkit.agents.td3``'s; only the
defaults differ (``num_critics=1, target_noise=0, policy_delay=1``). Exploration is Gaussian
noise, as in SB3 and CleanRL, rather than the paper's Ornstein-Uhlenbeck process.
"""

from __future__ import annotations

import dataclasses

from rlkit.agents import td3
from rlkit.agents.td3 import TD3State, experience, make


@dataclasses.dataclass(frozen=True)
class Config(td3.Config):
    """TD3's settings with DDPG's defaults; setting the three back gives TD3."""

    num_critics: int = 1
    target_noise: float = 0.0
    policy_delay: int = 1


DDPGState = TD3State

__all__ = ["Config", "DDPGState", "experience", "make"]
