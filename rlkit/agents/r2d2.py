"""R2D2: recurrent Q-learning from prioritized sequence replay with stored recurrent state and burn-in.

Kapturowski et al., "Recurrent Experience Replay in Distributed Reinforcement
Learning", 2019 (https://openreview.net/forum?id=r1lyTjAqYX). An LSTM Q-network
acts epsilon-greedily (each environment with its own constant epsilon, as in
Ape-X: Horgan et al., 2018) and returns its input recurrent state in ``extras["memory"]``,
so the replay stores it with every step. ``update`` takes sequences ``[L, B]``,
unrolls the online and target networks from the memory stored at the first step
(restarting it where an episode began), lets the first ``burn_in`` steps only
warm the memory up (no gradient, no loss), and learns from n-step double-Q targets
under the invertible value rescaling ``h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x``
(Pohlen et al., 2018; rlax). Each sequence's priority mixes the largest and the
mean absolute TD error, ``eta * max + (1 - eta) * mean``, and is written back to
the replay by the loop; prioritized sampling is corrected with importance weights.

n-step returns never reach across an episode end inside a sequence: a terminated
step bootstraps from nothing, a truncated one from the value of its final
observation (read with the memory after that step).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
import rlax

from rlkit import config as cfg
from rlkit import networks
from rlkit.agents.dqn import require_discrete_actions
from rlkit.networks import RecurrentQNetwork, activation_fn, zero_memory
from rlkit.torsos import check_torso, torso_fields
from rlkit.types import (
    ActOutput,
    Agent,
    EnvSpec,
    ExperienceSpec,
    Trajectory,
    episode_starts,
    epsilon_greedy,
    split_weights,
)


@dataclasses.dataclass(frozen=True)
class Config:
    """R2D2 settings. ``buffer_size``, ``learning_starts``, ``target_update_freq`` and
    ``epsilon_decay_steps`` count environment steps (all environments together)."""

    num_envs: int = 16
    num_steps: int = 8  # env steps per env between updates
    buffer_size: int = 50_000
    batch_size: int = 32  # sequences per update
    learning_starts: int = 5_000
    sequence_length: int = 40
    sequence_period: int = 20
    burn_in: int = 10
    n_step: int = 5
    gamma: float = 0.99
    learning_rate: float = 1e-3
    max_grad_norm: float = 40.0
    target_update_freq: int = 2_500
    epsilon_per_env: bool = True  # each env its own constant epsilon, as R2D2 (and Ape-X) do
    epsilon_base: float = 0.4  # per env: epsilon_i = epsilon_base ** (1 + epsilon_alpha * i / (num_envs - 1))
    epsilon_alpha: float = 7.0
    epsilon_start: float = 1.0  # epsilon_per_env=False: one epsilon decaying linearly
    epsilon_end: float = 0.01
    epsilon_decay_steps: int = 100_000
    prioritized: bool = True
    priority_exponent: float = 0.9
    importance_exponent: float = 0.6
    priority_eta: float = 0.9  # priority = eta * max |td| + (1 - eta) * mean |td|
    value_rescaling: bool = True
    updates_per_rollout: int = 1
    memory_size: int = 64
    hidden_sizes: tuple[int, ...] = (64,)
    activation: str = "relu"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet
    core: str = "lstm"
    dueling: bool = False

    def __post_init__(self):
        for name in ("num_envs", "num_steps", "batch_size", "sequence_length", "sequence_period", "n_step",
                     "target_update_freq", "updates_per_rollout", "memory_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.burn_in < self.sequence_length:
            raise ValueError(
                f"burn_in={self.burn_in} must lie in [0, sequence_length={self.sequence_length}): "
                f"the steps after it are the ones learned from"
            )
        cfg.check_divides("num_envs", self.num_envs, "buffer_size", self.buffer_size)
        if self.learning_starts > self.buffer_size:
            raise ValueError(f"learning_starts={self.learning_starts} must be <= buffer_size={self.buffer_size}")
        cfg.check_positive("learning_rate", self.learning_rate)
        cfg.check_unit_interval("gamma", self.gamma)
        cfg.check_unit_interval("epsilon_base", self.epsilon_base)
        cfg.check_non_negative("epsilon_alpha", self.epsilon_alpha)
        cfg.check_unit_interval("epsilon_start", self.epsilon_start)
        cfg.check_unit_interval("epsilon_end", self.epsilon_end)
        cfg.check_positive("epsilon_decay_steps", self.epsilon_decay_steps)
        cfg.check_unit_interval("priority_exponent", self.priority_exponent)
        cfg.check_unit_interval("importance_exponent", self.importance_exponent)
        cfg.check_unit_interval("priority_eta", self.priority_eta)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)
        check_torso(self.torso)
        if self.core not in ("gru", "lstm"):
            raise ValueError(f"core: {self.core!r} is not one of ['gru', 'lstm']")


class R2D2State(NamedTuple):
    params: dict
    target_params: dict
    opt_state: optax.OptState
    grad_steps: jax.Array  # gradient steps taken


def experience(config: Config) -> ExperienceSpec:
    """Prioritized replay of sequences, ``sequence_period`` apart."""
    return ExperienceSpec(
        kind="sequences", num_envs=config.num_envs, rollout_length=config.num_steps,
        batch_size=config.batch_size, buffer_size=config.buffer_size,
        min_size=max(config.learning_starts, config.sequence_length * config.num_envs),
        updates_per_rollout=config.updates_per_rollout, gamma=config.gamma,
        sequence_length=config.sequence_length, sequence_period=config.sequence_period,
        prioritized=config.prioritized, priority_exponent=config.priority_exponent,
        importance_exponent=config.importance_exponent,
    )


def n_step_double_q_td(
    q_tm1: jax.Array, a_tm1: jax.Array, q_next_online: jax.Array, q_next_target: jax.Array, reward_t: jax.Array,
    terminated_t: jax.Array, truncated_t: jax.Array, gamma: float, n: int, rescale: bool,
) -> jax.Array:
    """TD errors ``[T]`` of one sequence against n-step double-Q targets, cut at episode ends.

    ``q_next_*`` are Q-values of each step's next observation ``[T, A]`` (the final one at an
    episode end); with ``rescale`` the network's values live in h-space (rlax's signed hyperbolic).
    """
    h, h_inverse = (rlax.signed_hyperbolic, rlax.signed_parabolic) if rescale else (lambda x: x, lambda x: x)
    v_t = h_inverse(jnp.take_along_axis(q_next_target, jnp.argmax(q_next_online, -1)[:, None], -1)[:, 0])
    done = terminated_t | truncated_t
    r_t = reward_t + jnp.where(truncated_t & ~terminated_t, gamma * v_t, 0.0)
    discount_t = jnp.where(done, 0.0, gamma) * jnp.ones_like(reward_t)
    returns = rlax.n_step_bootstrapped_returns(r_t, discount_t, v_t, n)
    q_taken = jnp.take_along_axis(q_tm1, a_tm1[:, None], -1)[:, 0]
    return jax.lax.stop_gradient(h(returns)) - q_taken


class RecurrentQ(NamedTuple):
    """R2D2's recurrent Q-network, unrolled over stored sequences from their first memory."""

    network: RecurrentQNetwork
    core: str
    memory_size: int
    burn_in: int

    def init_carry(self, batch_size: int):
        """The zero memory of ``batch_size`` environments."""
        return zero_memory(self.core, self.memory_size, batch_size)

    def q_values(self, params, memory, obs: jax.Array, next_obs: jax.Array, starts: jax.Array):
        """Q of each step's observation and next observation ``[L, B, A]``; the first ``burn_in`` steps
        only warm the memory up, without gradient."""
        step = lambda m, o: self.network.apply(params, m, o)  # noqa: E731
        fresh = self.init_carry(obs.shape[1])
        b = self.burn_in
        if b:
            _, memory_after = networks.unroll(step, memory, obs[:b], starts[:b], fresh)
            memory = jax.lax.stop_gradient(jax.tree.map(lambda m: m[-1], memory_after))
        q, memory_after = networks.unroll(step, memory, obs[b:], starts[b:], fresh)
        flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
        _, q_next = self.network.apply(params, jax.tree.map(flat, memory_after), flat(next_obs[b:]))
        return q, q_next.reshape(q.shape)


def recurrent_q(config: Config, spec: EnvSpec) -> RecurrentQ:
    """The MLP, the core and the (dueling) Q head for ``spec``'s actions."""
    network = RecurrentQNetwork(
        spec.num_actions, config.memory_size, config.hidden_sizes, config.activation, config.core, config.dueling,
        **torso_fields(config.torso, spec),
    )
    return RecurrentQ(network, config.core, config.memory_size, config.burn_in)


def sequence_loss(params, target_params, sequences: Trajectory, weights, *, config: Config,
                  model: RecurrentQ) -> tuple[jax.Array, dict]:
    """The n-step double-Q TD loss after the burn-in, per sequence weighted, and each sequence's priority
    (``priority_eta`` x max + (1 - ``priority_eta``) x mean of its |TD errors|)."""
    memory = jax.tree.map(lambda m: m[0], sequences.extras["memory"])
    starts = episode_starts(sequences)
    q, q_next = model.q_values(params, memory, sequences.obs, sequences.next_obs, starts)
    _, q_next_target = model.q_values(target_params, memory, sequences.obs, sequences.next_obs, starts)
    learned = slice(config.burn_in, None)
    td = jax.vmap(n_step_double_q_td, in_axes=(1, 1, 1, 1, 1, 1, 1, None, None, None), out_axes=1)(
        q, sequences.action[learned], jax.lax.stop_gradient(q_next), q_next_target, sequences.reward[learned],
        sequences.terminated[learned], sequences.truncated[learned], config.gamma, config.n_step,
        config.value_rescaling,
    )
    per_sequence = 0.5 * jnp.mean(jnp.square(td), axis=0)
    loss = jnp.mean(per_sequence if weights is None else weights * per_sequence)
    abs_td = jnp.abs(td)
    priorities = config.priority_eta * jnp.max(abs_td, 0) + (1 - config.priority_eta) * jnp.mean(abs_td, 0)
    return loss, {"loss": loss, "q_mean": jnp.mean(q), "priorities": jax.lax.stop_gradient(priorities) + 1e-6}


def exploration(config: Config) -> Callable[[jax.Array, int], jax.Array]:
    """``epsilon(grad_steps, batch_size)``: each environment's exploration rate, decaying with the updates
    (or, with ``epsilon_per_env``, Ape-X's fixed rate per environment)."""
    steps_per_iteration = config.num_envs * config.num_steps
    decaying = optax.linear_schedule(
        config.epsilon_start, config.epsilon_end, max(1, config.epsilon_decay_steps // steps_per_iteration)
    )

    def epsilon(grad_steps: jax.Array, batch_size: int) -> jax.Array:
        if not config.epsilon_per_env:
            return jnp.full((batch_size,), decaying(grad_steps // config.updates_per_rollout))
        position = jnp.arange(batch_size) / max(batch_size - 1, 1)
        return config.epsilon_base ** (1 + config.epsilon_alpha * position)

    return epsilon


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build R2D2 for ``spec`` (discrete actions)."""
    del total_steps
    require_discrete_actions(config, spec, alternatives="recurrent_ppo or ppo")
    model = recurrent_q(config, spec)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate, eps=1e-3))
    target_every = max(1, config.target_update_freq // (config.num_envs * config.num_steps)) * config.updates_per_rollout
    epsilon = exploration(config)
    loss_grad = jax.grad(functools.partial(sequence_loss, config=config, model=model), has_aux=True)

    def init(key):
        params = model.network.init(key, model.init_carry(1), jnp.zeros((1, *spec.observation_shape), jnp.float32))
        return R2D2State(params, params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state, observation, memory, key, deterministic=False):
        next_memory, q = model.network.apply(state.params, memory, observation)
        greedy = jnp.argmax(q, axis=-1)
        extras = {"memory": memory}
        if deterministic:
            return ActOutput(greedy, next_memory, extras)
        action = epsilon_greedy(key, greedy, epsilon(state.grad_steps, greedy.shape[0]), spec.num_actions)
        return ActOutput(action, next_memory, extras)

    def update(state, batch, key):
        del key
        sequences, weights = split_weights(batch)
        grads, metrics = loss_grad(state.params, state.target_params, sequences, weights)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = state.grad_steps + 1
        refresh = count % target_every == 0
        target_params = jax.tree.map(lambda p, t: jnp.where(refresh, p, t), params, state.target_params)
        if not config.prioritized:
            metrics.pop("priorities")
        return R2D2State(params, target_params, opt_state, count), metrics

    return Agent(init=init, act=act, update=update, init_carry=model.init_carry)
