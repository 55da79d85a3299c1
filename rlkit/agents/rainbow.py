"""Rainbow: DQN with its six extensions combined.

Hessel et al., "Rainbow: Combining Improvements in Deep Reinforcement Learning", 2018
(https://arxiv.org/abs/1710.02298). This is ``rlkit.agents.dqn`` with Rainbow's defaults: a
categorical value distribution (C51, ``num_atoms`` on [``v_min``, ``v_max``]), 3-step returns,
double Q-learning, a dueling head, proportional prioritized replay whose priorities are the
distributional loss, and noisy output layers (``rlkit.networks.NoisyDense``) that explore
instead of epsilon-greedy (epsilon is 0; ``learning_starts`` steps are still uniform). Every
component is a field, so an ablation is a ``--set`` away (``--set noisy=false``, ``n_step=1``, ...).
"""

from __future__ import annotations

import dataclasses

from rlkit.agents import dqn
from rlkit.agents.dqn import DQNState, experience, make

__all__ = ["Config", "DQNState", "experience", "make"]


@dataclasses.dataclass(frozen=True)
class Config(dqn.Config):
    """Rainbow settings: DQN's fields with the paper's components switched on.

    Set ``v_min``/``v_max`` to cover the environment's discounted returns (CartPole-v1's preset
    in ``rlkit.presets`` uses [0, 100]).
    """

    distribution: str = "categorical"
    n_step: int = 3
    double_q: bool = True
    dueling: bool = True
    prioritized: bool = True
    priority_exponent: float = 0.5
    noisy: bool = True
    epsilon_start: float = 0.0
    epsilon_end: float = 0.0
