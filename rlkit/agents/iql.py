"""Implicit Q-learning: in-sample values by expectile regression, a policy by advantage-weighted regression.

Kostrikov, Nair and Levine, "Offline Reinforcement Learning with Implicit Q-Learning", 2021
(https://arxiv.org/abs/2110.06169). Three losses on one batch of dataset transitions, never querying an
action the data lacks:

- value: ``V(s)`` regresses ``min_i Q_target_i(s, a)`` with the asymmetric expectile loss (``expectile``
  near 1 approaches the maximum over the data's actions; rlax's ``expectile_loss``);
- critics: ``Q_i(s, a)`` regress ``r + discount * V(s')`` (TD with the value as the bootstrap);
- policy: the log-likelihood of the data's action weighted by ``exp(temperature * (Q - V))``, clipped at
  ``max_weight``. Continuous actions: a Gaussian with a ``tanh`` mean on ``[-1, 1]`` and a state-independent
  log-std, as in the paper's code (greedy: the mean);
  discrete actions: a softmax policy and one critic head per action.

IQL learns from a dataset (``rlkit train --agent iql --dataset D``); ``--steps`` counts gradient steps.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import rlax

from rlkit import config as cfg
from rlkit.networks import MLP, CategoricalActor, ContinuousQNetwork, GaussianActor, QNetwork, activation_fn
from rlkit.torsos import Encoder, check_torso, torso_fields
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, Transition, split_weights


@dataclasses.dataclass(frozen=True)
class Config:
    """IQL settings; the defaults are the paper's for locomotion (expectile 0.7, temperature 3)."""

    batch_size: int = 256
    learning_rate: float = 3e-4
    gamma: float = 0.99
    n_step: int = 1
    tau: float = 0.005  # Polyak step of the target critics
    expectile: float = 0.7
    temperature: float = 3.0  # beta of the advantage weights
    max_weight: float = 100.0
    num_critics: int = 2
    max_grad_norm: float = 10.0
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet

    def __post_init__(self):
        for name in ("batch_size", "n_step", "num_critics"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        cfg.check_positive("learning_rate", self.learning_rate)
        cfg.check_unit_interval("gamma", self.gamma)
        cfg.check_unit_interval("tau", self.tau, closed_low=False)
        cfg.check_unit_interval("expectile", self.expectile, closed_low=False)
        cfg.check_non_negative("temperature", self.temperature)
        cfg.check_positive("max_weight", self.max_weight)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)
        check_torso(self.torso)


class IQLState(NamedTuple):
    params: dict  # {"actor", "critic" (stacked over num_critics), "value"}
    target_params: dict  # target critics
    opt_state: optax.OptState
    grad_steps: jax.Array


class ValueNetwork(nn.Module):
    """``V(s)`` from a torso (``rlkit.torsos.Encoder`` then an MLP)."""

    hidden_sizes: tuple[int, ...]
    activation: str
    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        features = Encoder(self.torso, self.observation_ndim)(obs)
        return jnp.squeeze(nn.Dense(1)(MLP(self.hidden_sizes, self.activation)(features)), -1)


def experience(config: Config) -> ExperienceSpec:
    """Uniform batches of n-step transitions from a dataset."""
    return ExperienceSpec(kind="transitions", num_envs=1, rollout_length=1, batch_size=config.batch_size,
                          n_step=config.n_step, gamma=config.gamma, needs_dataset=True)


class IQLNetworks(NamedTuple):
    """IQL's actor, critics and state-value network, for discrete actions or bounded continuous ones (whose
    stored actions are mapped into ``[-1, 1]`` with ``center`` and ``half``)."""

    actor: CategoricalActor | GaussianActor
    critic: QNetwork | ContinuousQNetwork
    value: ValueNetwork
    discrete: bool
    center: np.ndarray | None = None
    half: np.ndarray | None = None

    def critic_values(self, critic_params, obs: jax.Array, action: jax.Array) -> jax.Array:
        """``Q_i(s, a)`` of every critic, ``[num_critics, B]``; ``action`` an index or in ``[-1, 1]``."""
        if self.discrete:
            q = jax.vmap(self.critic.apply, in_axes=(0, None))(critic_params, obs)
            return jnp.take_along_axis(q, jnp.broadcast_to(action[None, :, None], q.shape[:2] + (1,)), -1)[..., 0]
        return jax.vmap(self.critic.apply, in_axes=(0, None, None))(critic_params, obs, action)

    def log_likelihood(self, actor_params, obs: jax.Array, action: jax.Array) -> jax.Array:
        """The policy's log-probability of ``action`` (an index, or in ``[-1, 1]``), ``[B]``."""
        out = self.actor.apply(actor_params, obs)
        if self.discrete:
            return jnp.take_along_axis(jax.nn.log_softmax(out), action[:, None], -1)[:, 0]
        mean, log_std = out
        z = (action - mean) / jnp.exp(log_std)
        return jnp.sum(-0.5 * z**2 - log_std - 0.5 * np.log(2 * np.pi), -1)

    def learned_action(self, stored_action: jax.Array) -> jax.Array:
        """A dataset's action as the networks read it: the index, or clipped into ``[-1, 1]``."""
        if self.discrete:
            return stored_action
        return jnp.clip((stored_action - self.center) / self.half, -1.0, 1.0)


def iql_networks(config: Config, spec: EnvSpec) -> IQLNetworks:
    """The networks for ``spec``'s discrete or bounded continuous actions."""
    torso = torso_fields(config.torso, spec)
    value = ValueNetwork(config.hidden_sizes, config.activation, **torso)
    if spec.action_kind == "discrete":
        actor = CategoricalActor(spec.num_actions, config.hidden_sizes, config.activation, **torso)
        critic = QNetwork(spec.num_actions, config.hidden_sizes, config.activation, **torso)
        return IQLNetworks(actor, critic, value, discrete=True)
    center, half = cfg.continuous_bounds(spec, "iql")
    actor = GaussianActor(spec.num_actions, config.hidden_sizes, config.activation, **torso)
    critic = ContinuousQNetwork(config.hidden_sizes, config.activation, **torso)
    return IQLNetworks(actor, critic, value, discrete=False, center=center, half=half)


def iql_loss(params, target_params, batch: Transition, *, config: Config,
             nets: IQLNetworks) -> tuple[jax.Array, dict]:
    """The value's expectile loss, the critics' TD loss to it and the advantage-weighted actor loss, summed."""
    action = nets.learned_action(batch.action_tm1)
    target_q = jnp.min(nets.critic_values(target_params, batch.obs_tm1, action), 0)
    v_tm1 = nets.value.apply(params["value"], batch.obs_tm1)
    value_loss = jnp.mean(rlax.expectile_loss(v_tm1, target_q, config.expectile))

    v_t = jax.lax.stop_gradient(nets.value.apply(params["value"], batch.obs_t))
    q_tm1 = nets.critic_values(params["critic"], batch.obs_tm1, action)
    td = batch.reward_t + batch.discount_t * v_t - q_tm1
    critic_loss = 0.5 * jnp.sum(jnp.mean(td**2, -1))

    advantage = jax.lax.stop_gradient(target_q - v_tm1)
    weights = jnp.minimum(jnp.exp(config.temperature * advantage), config.max_weight)
    actor_loss = -jnp.mean(weights * nets.log_likelihood(params["actor"], batch.obs_tm1, action))
    return value_loss + critic_loss + actor_loss, {
        "loss": critic_loss, "value_loss": value_loss, "actor_loss": actor_loss,
        "q_mean": jnp.mean(q_tm1), "advantage_mean": jnp.mean(advantage),
    }


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build IQL for ``spec`` (discrete or bounded continuous actions)."""
    del total_steps
    nets = iql_networks(config, spec)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate))
    loss_grad = jax.grad(functools.partial(iql_loss, config=config, nets=nets), has_aux=True)

    def init(key):
        actor_key, critic_key, value_key = jax.random.split(key, 3)
        obs = jnp.zeros((1, *spec.observation_shape), jnp.float32)
        critic_inputs = (obs,) if nets.discrete else (obs, jnp.zeros((1, spec.num_actions)))
        critic_keys = jax.random.split(critic_key, config.num_critics)
        critic_params = jax.vmap(lambda k: nets.critic.init(k, *critic_inputs))(critic_keys)
        params = {"actor": nets.actor.init(actor_key, obs), "critic": critic_params,
                  "value": nets.value.init(value_key, obs)}
        opt_state = {name: optimizer.init(p) for name, p in params.items()}
        return IQLState(params, critic_params, opt_state, jnp.zeros((), jnp.int32))

    def act(state, observation, carry, key, deterministic=False):
        out = nets.actor.apply(state.params["actor"], observation)
        if nets.discrete:
            action = jnp.argmax(out, -1) if deterministic else jax.random.categorical(key, out)
            return ActOutput(action, carry, {})
        action, log_std = out
        if not deterministic:
            action = jnp.clip(action + jnp.exp(log_std) * jax.random.normal(key, action.shape), -1.0, 1.0)
        return ActOutput(nets.center + nets.half * action, carry, {})

    def update(state, batch, key):
        del key
        batch, _ = split_weights(batch)
        grads, metrics = loss_grad(state.params, state.target_params, batch)
        params, opt_state = {}, {}
        for name in state.params:
            updates, opt_state[name] = optimizer.update(grads[name], state.opt_state[name], state.params[name])
            params[name] = optax.apply_updates(state.params[name], updates)
        target_params = optax.incremental_update(params["critic"], state.target_params, config.tau)
        return IQLState(params, target_params, opt_state, state.grad_steps + 1), metrics

    return Agent(init=init, act=act, update=update)
