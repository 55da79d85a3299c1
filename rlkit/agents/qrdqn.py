"""QR-DQN: DQN with quantile regression over returns.

Dabney et al., "Distributional Reinforcement Learning with Quantile Regression", 2018
(https://arxiv.org/abs/1710.10044). This is ``rlkit.agents.dqn`` with
``distribution="quantile"``: ``num_atoms`` quantile values per action at the midpoints
(2i + 1) / 2N, trained with rlax's quantile Huber Q-learning loss (threshold
``huber_kappa``). Double Q, dueling, n-step returns and the target network work as in
DQN; actions are greedy in the mean of the quantiles.
"""

from __future__ import annotations

import dataclasses

from rlkit.agents import dqn
from rlkit.agents.dqn import DQNState, experience, make

__all__ = ["Config", "DQNState", "experience", "make"]


@dataclasses.dataclass(frozen=True)
class Config(dqn.Config):
    """QR-DQN settings: DQN's fields and defaults, with 51 quantiles and the paper's kappa = 1.

    The Huber threshold is in units of return: on returns of order 100 (CartPole-v1) kappa = 1
    let the values diverge, and the preset in ``rlkit.presets`` uses 10.
    """

    distribution: str = "quantile"

    def __post_init__(self):
        super().__post_init__()
        if self.distribution != "quantile":
            raise ValueError(
                f"distribution: qrdqn is 'quantile', got {self.distribution!r}; use dqn or c51"
            )
