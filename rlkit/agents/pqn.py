"""PQN: parallelised Q-learning with Q(lambda) returns, no replay buffer and no target network.

Gallici et al., "Simplify and Accelerate Reinforcement Learning" (purejaxql), 2024
(https://arxiv.org/abs/2407.04811): many environments step in parallel under an
epsilon-greedy policy (epsilon decaying linearly); each rollout's Peng Q(lambda) returns
(rlax) are regressed on by a LayerNorm Q-network for several epochs of minibatches, like
PPO; an annealed learning rate, RAdam, global-norm clipping and an optional reward scale.

Time-limit truncation bootstraps: the return at a truncated step uses max_a Q of the final
observation; a terminated step uses none; the lambda-recursion stops at both.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import rlax

from rlkit import config as cfg
from rlkit.agents.dqn import require_discrete_actions
from rlkit.agents.minibatches import annealed_rate, minibatch_epochs, sort_shuffle
from rlkit.networks import QNetwork, activation_fn
from rlkit.torsos import check_torso, torso_fields
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, Trajectory, epsilon_greedy


@dataclasses.dataclass(frozen=True)
class Config:
    """PQN settings; names follow rejax where they overlap, epsilon's follow DQN's.

    The defaults are purejaxql's CartPole-v1 settings with a 64-64 network rather than
    256-256 (which learns as well, about four times slower on CPU); epsilon ending at 0.2
    gave 500 on seeds 0-7, at 0.05 a mean of 485 on seeds 4-7. ``epsilon_decay_steps``
    counts environment steps (all environments together).
    """

    num_envs: int = 32
    num_steps: int = 64  # rollout length per env
    num_epochs: int = 4
    num_minibatches: int = 16
    learning_rate: float = 1e-4
    anneal_lr: bool = True  # linearly to 0 over the run (needs the run's total_steps)
    gamma: float = 0.99
    td_lambda: float = 0.95
    reward_scale: float = 0.1  # rewards are multiplied by this before learning
    epsilon_start: float = 1.0
    epsilon_end: float = 0.2
    epsilon_decay_steps: int = 100_000
    max_grad_norm: float = 10.0
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet
    layer_norm: bool = True

    def __post_init__(self):
        for name in ("num_envs", "num_steps", "num_epochs", "num_minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        cfg.check_divides(
            "num_minibatches", self.num_minibatches,
            "num_envs * num_steps", self.num_envs * self.num_steps,
        )
        cfg.check_positive("learning_rate", self.learning_rate)
        cfg.check_unit_interval("gamma", self.gamma)
        cfg.check_unit_interval("td_lambda", self.td_lambda)
        cfg.check_positive("reward_scale", self.reward_scale)
        cfg.check_unit_interval("epsilon_start", self.epsilon_start)
        cfg.check_unit_interval("epsilon_end", self.epsilon_end)
        cfg.check_positive("epsilon_decay_steps", self.epsilon_decay_steps)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)
        check_torso(self.torso)


class PQNState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    iterations: jax.Array  # loop iterations (rollouts) learned from so far


def experience(config: Config) -> ExperienceSpec:
    """PQN learns from each fresh rollout once."""
    return ExperienceSpec(
        kind="rollout", num_envs=config.num_envs, rollout_length=config.num_steps,
        gamma=config.gamma,
    )


def q_lambda_returns(
    reward_t: jax.Array,
    terminated_t: jax.Array,
    truncated_t: jax.Array,
    v_t: jax.Array,
    gamma: float,
    td_lambda: float,
) -> jax.Array:
    """Peng's Q(lambda) returns for one environment's rollout ``[T]``, correct across episode ends.

    ``v_t`` is max_a Q of the observation that followed each step (the final observation
    at an episode end). G_t = r_t + gamma_t ((1 - lambda_t) v_t + lambda_t G_{t+1}) with
    gamma_t = 0 at a termination (no bootstrap) and lambda_t = 0 at any episode end, so a
    truncated step bootstraps from its final observation and nothing crosses a reset.
    The last step bootstraps from ``v_t``.
    """
    done_t = jnp.logical_or(terminated_t, truncated_t)
    discount_t = jnp.where(terminated_t, 0.0, gamma) * jnp.ones_like(reward_t)
    lambda_t = jnp.where(done_t, 0.0, td_lambda) * jnp.ones_like(reward_t)
    return rlax.lambda_returns(reward_t, discount_t, v_t, lambda_t, stop_target_gradients=True)


def make_optimizer(config: Config, total_steps: int | None) -> optax.GradientTransformation:
    """RAdam after global-norm clipping, its rate annealed over the run's minibatch steps if asked.

    ``optax.flatten``: the optimizer works on one vector instead of one array per layer, which on CPU
    halves its kernels per minibatch (same arithmetic; ~5% faster runs and compiles).
    """
    return optax.flatten(optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.radam(annealed_rate(config, total_steps)),
    ))


def epsilon_schedule(config: Config) -> optax.Schedule:
    """Exploration's epsilon by rollouts learned from: linear from ``epsilon_start`` to ``epsilon_end``."""
    rollouts = max(1, config.epsilon_decay_steps // (config.num_envs * config.num_steps))
    return optax.linear_schedule(config.epsilon_start, config.epsilon_end, rollouts)


def lambda_targets(config: Config, network: QNetwork, params, rollout: Trajectory) -> dict:
    """The rollout as one batch of ``num_envs * num_steps`` items with their Q(lambda) targets."""
    v_t = jnp.max(network.apply(params, rollout.next_obs), axis=-1)
    target = jax.vmap(q_lambda_returns, in_axes=(1, 1, 1, 1, None, None), out_axes=1)(
        config.reward_scale * rollout.reward, rollout.terminated, rollout.truncated,
        v_t, config.gamma, config.td_lambda,
    )
    batch = {"obs": rollout.obs, "action": rollout.action, "target": target}
    return jax.tree.map(lambda x: x.reshape(config.num_envs * config.num_steps, *x.shape[2:]), batch)


def q_loss(params, batch: dict, *, network: QNetwork) -> tuple[jax.Array, dict]:
    """Half the mean squared error of the taken actions' values to their targets."""
    q = network.apply(params, batch["obs"])
    q_a = jnp.take_along_axis(q, batch["action"][:, None], axis=-1)[:, 0]
    loss = 0.5 * jnp.mean(jnp.square(q_a - batch["target"]))
    return loss, {"loss": loss, "q_mean": jnp.mean(q_a)}


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build PQN for ``spec`` (discrete actions only); ``total_steps`` sets the annealing horizon."""
    require_discrete_actions(config, spec)
    network = QNetwork(
        spec.num_actions, config.hidden_sizes, config.activation, layer_norm=config.layer_norm,
        **torso_fields(config.torso, spec),
    )
    optimizer = make_optimizer(config, total_steps)
    epsilon = epsilon_schedule(config)
    loss_grad = jax.grad(functools.partial(q_loss, network=network), has_aux=True)

    def init(key):
        params = network.init(key, jnp.zeros((1, *spec.observation_shape), jnp.float32))
        return PQNState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state, observation, carry, key, deterministic=False):
        greedy = jnp.argmax(network.apply(state.params, observation), axis=-1)
        if deterministic:
            return ActOutput(greedy, carry, {})
        return ActOutput(epsilon_greedy(key, greedy, epsilon(state.iterations), spec.num_actions), carry, {})

    def minibatch_step(learner, batch):
        params, opt_state = learner
        grads, stats = loss_grad(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), stats

    def update(state, rollout: Trajectory, key):
        batch = lambda_targets(config, network, state.params, rollout)
        learner = (state.params, state.opt_state)
        (params, opt_state), stats = minibatch_epochs(config, minibatch_step, learner, batch, key, sort_shuffle)
        metrics = jax.tree.map(jnp.mean, stats)
        count = state.iterations + 1
        metrics["epsilon"] = epsilon(count)
        return PQNState(params, opt_state, count), metrics

    return Agent(init=init, act=act, update=update)
