"""C51: DQN with a categorical distribution over returns.

Bellemare et al., "A Distributional Perspective on Reinforcement Learning", 2017
(https://arxiv.org/abs/1707.06887). This is ``rlkit.agents.dqn`` with
``distribution="categorical"``: ``num_atoms`` logits per action on a fixed support
[``v_min``, ``v_max``], trained with rlax's categorical (double) Q-learning loss, the
projected target's cross-entropy. Double Q, dueling, n-step returns and the target
network work as in DQN; actions are greedy in the expected value.
"""

from __future__ import annotations

import dataclasses

from rlkit.agents import dqn
from rlkit.agents.dqn import DQNState, experience, make

__all__ = ["Config", "DQNState", "experience", "make"]


@dataclasses.dataclass(frozen=True)
class Config(dqn.Config):
    """C51 settings: DQN's fields and defaults, with the paper's 51 atoms on [-10, 10].

    Set ``v_min``/``v_max`` to cover the environment's discounted returns (CartPole-v1's
    preset in ``rlkit.presets`` uses [0, 100]).
    """

    distribution: str = "categorical"

    def __post_init__(self):
        super().__post_init__()
        if self.distribution != "categorical":
            raise ValueError(
                f"distribution: c51 is 'categorical', got {self.distribution!r}; use dqn or qrdqn"
            )
