"""Conservative Q-learning: Q-learning or SAC with a penalty on the values of actions the data lacks.

Kumar et al., "Conservative Q-Learning for Offline Reinforcement Learning", 2020
(https://arxiv.org/abs/2006.04779), CQL(H): the critic loss gains
``penalty_coef * (logsumexp_a Q(s, a) - Q(s, a_data))``, which pushes down the values of every action
(soft maximum) and up those of the dataset's actions, so the greedy policy stays on the data's support.

- Discrete actions: ``rlkit.agents.dqn`` (double Q-learning, target network) with the exact log-sum-exp
  over actions (as in the paper's Atari experiments).
- Continuous actions: ``rlkit.agents.sac`` with the log-sum-exp estimated by importance sampling from
  ``num_sampled_actions`` uniform actions and as many from the policy at ``s`` and at ``s'`` (the paper's
  CQL(H) for continuous control), per critic.

CQL learns from a dataset (``rlkit train --agent cql --dataset D``); ``--steps`` counts gradient steps.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rlkit import config as cfg
from rlkit.agents import dqn, sac
from rlkit.networks import activation_fn
from rlkit.torsos import check_torso
from rlkit.types import Agent, EnvSpec, ExperienceSpec, Transition


@dataclasses.dataclass(frozen=True)
class Config:
    """CQL settings, for both action kinds.

    ``penalty_coef`` is the paper's alpha (5.0 for continuous control in its D4RL runs; 1.0 works on
    CartPole); ``tau`` is the Polyak step of the target network after every gradient step. The
    temperature fields apply to continuous actions (SAC's ``alpha``), ``double_q`` to discrete ones.
    """

    batch_size: int = 256
    learning_rate: float = 3e-4
    gamma: float = 0.99
    n_step: int = 1
    tau: float = 0.005
    penalty_coef: float = 1.0
    double_q: bool = True
    num_sampled_actions: int = 10  # continuous: per kind of sample, for the log-sum-exp
    num_critics: int = 2  # continuous
    autotune: bool = True  # continuous: learn SAC's temperature
    init_alpha: float = 1.0
    target_entropy_scale: float = 1.0
    max_grad_norm: float = 10.0
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet

    def __post_init__(self):
        for name in ("batch_size", "n_step", "num_sampled_actions", "num_critics"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        cfg.check_positive("learning_rate", self.learning_rate)
        cfg.check_unit_interval("gamma", self.gamma)
        cfg.check_unit_interval("tau", self.tau, closed_low=False)
        cfg.check_non_negative("penalty_coef", self.penalty_coef)
        cfg.check_positive("init_alpha", self.init_alpha)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)
        check_torso(self.torso)


def experience(config: Config) -> ExperienceSpec:
    """Uniform batches of n-step transitions from a dataset."""
    return ExperienceSpec(kind="transitions", num_envs=1, rollout_length=1, batch_size=config.batch_size,
                          n_step=config.n_step, gamma=config.gamma, needs_dataset=True)


def _dqn_config(config: Config) -> dqn.Config:
    """DQN updated every gradient step, target Polyak-averaged each step, greedy when acting."""
    return dqn.Config(
        num_envs=1, num_steps=1, batch_size=config.batch_size, buffer_size=max(config.batch_size, config.n_step + 1),
        learning_starts=0, learning_rate=config.learning_rate, anneal_lr=False, gamma=config.gamma,
        n_step=config.n_step, double_q=config.double_q, target_update_freq=1, tau=config.tau,
        epsilon_start=0.0, epsilon_end=0.0, epsilon_decay_steps=1, max_grad_norm=config.max_grad_norm,
        hidden_sizes=config.hidden_sizes, activation=config.activation, torso=config.torso,
    )


def _sac_config(config: Config) -> sac.Config:
    return sac.Config(
        batch_size=config.batch_size, buffer_size=config.batch_size, learning_starts=0, random_warmup=False,
        learning_rate=config.learning_rate, gamma=config.gamma, tau=config.tau, num_critics=config.num_critics,
        autotune=config.autotune, init_alpha=config.init_alpha, target_entropy_scale=config.target_entropy_scale,
        max_grad_norm=config.max_grad_norm, hidden_sizes=config.hidden_sizes, activation=config.activation,
        torso=config.torso,
    )


def discrete_penalty(coef: float):
    """``coef * (logsumexp_a Q(s, a) - Q(s, a_data))`` per transition."""

    def penalty(q_tm1: jax.Array, action_tm1: jax.Array) -> jax.Array:
        data_q = jnp.take_along_axis(q_tm1, action_tm1[:, None], -1)[:, 0]
        return coef * (jax.nn.logsumexp(q_tm1, -1) - data_q)

    return penalty


def continuous_penalty(coef: float, num_samples: int, action_dim: int):
    """CQL(H) for SAC's critics: the log-sum-exp over actions by importance sampling, summed over critics."""
    uniform_log_density = -action_dim * np.log(2.0)  # of uniform actions on [-1, 1]^A

    def penalty(q, policy, batch: Transition, key: jax.Array):
        batch_size = batch.obs_tm1.shape[0]
        repeat = lambda x: jnp.repeat(x, num_samples, axis=0)  # noqa: E731  [B * N, ...]
        obs = repeat(batch.obs_tm1)
        uniform_key, now_key, next_key = jax.random.split(key, 3)
        uniform = jax.random.uniform(uniform_key, (batch_size * num_samples, action_dim), minval=-1.0, maxval=1.0)
        now, now_log_prob = policy(obs, now_key)
        later, later_log_prob = policy(repeat(batch.obs_t), next_key)
        candidates = jnp.concatenate([
            q(obs, uniform) - uniform_log_density,
            q(obs, jax.lax.stop_gradient(now)) - jax.lax.stop_gradient(now_log_prob),
            q(obs, jax.lax.stop_gradient(later)) - jax.lax.stop_gradient(later_log_prob),
        ], axis=-1).reshape(-1, 3, batch_size, num_samples)  # [critics, kind, B, N]
        candidates = jnp.swapaxes(candidates, 1, 2).reshape(candidates.shape[0], batch_size, 3 * num_samples)
        soft_max = jax.nn.logsumexp(candidates, -1) - np.log(3 * num_samples)
        gap = jnp.mean(soft_max - q(batch.obs_tm1, batch.action_tm1), -1)  # [critics]
        return coef * jnp.sum(gap), {"penalty": jnp.mean(gap)}

    return penalty


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build CQL for ``spec``: on DQN for discrete actions, on SAC for bounded continuous ones.

    The agent's state is ``dqn.DQNState`` or ``sac.SACState``.
    """
    if spec.action_kind == "discrete":
        return dqn.make(_dqn_config(config), spec, total_steps, q_regularizer=discrete_penalty(config.penalty_coef))
    cfg.continuous_bounds(spec, "cql")
    penalty = continuous_penalty(config.penalty_coef, config.num_sampled_actions, spec.num_actions)
    return sac.make(_sac_config(config), spec, total_steps, critic_penalty=penalty)
