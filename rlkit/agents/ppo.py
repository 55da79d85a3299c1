"""Proximal Policy Optimization for discrete actions.

Schulman et al., "Proximal Policy Optimization Algorithms", 2017
(https://arxiv.org/abs/1707.06347): clipped surrogate objective, generalized
advantage estimation (rlax), several epochs of minibatch updates over each
rollout, an annealed learning rate and global-norm gradient clipping.

Time-limit truncation bootstraps: the advantage at a truncated step uses the
value of the final observation; a terminated step uses none.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
import rlax

from rlkit import config as cfg
from rlkit.networks import CategoricalActorCritic, activation_fn
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, Trajectory


@dataclasses.dataclass(frozen=True)
class Config:
    """PPO settings; names follow rejax where they overlap."""

    num_envs: int = 8
    num_steps: int = 64  # rollout length per env
    num_epochs: int = 4
    num_minibatches: int = 4
    learning_rate: float = 5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    clip_value: bool = True
    normalize_advantages: bool = True
    hidden_sizes: tuple[int, ...] = (64, 64)
    activation: str = "tanh"

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
        cfg.check_unit_interval("gae_lambda", self.gae_lambda)
        cfg.check_positive("clip_eps", self.clip_eps)
        cfg.check_non_negative("ent_coef", self.ent_coef)
        cfg.check_non_negative("vf_coef", self.vf_coef)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)


class PPOState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    updates: jax.Array  # rollouts learned from so far


def experience(config: Config) -> ExperienceSpec:
    """PPO learns from each fresh rollout once."""
    return ExperienceSpec(
        kind="rollout", num_envs=config.num_envs, rollout_length=config.num_steps,
        gamma=config.gamma,
    )


def advantages(
    reward_t: jax.Array,
    terminated_t: jax.Array,
    truncated_t: jax.Array,
    v_tm1: jax.Array,
    v_t: jax.Array,
    gamma: float,
    gae_lambda: float,
) -> jax.Array:
    """GAE for one environment's rollout ``[T]``, correct across episode ends.

    ``v_tm1`` are values of the observations acted in; ``v_t`` values of the
    observations that followed (the final observation at an episode end). A
    truncated step bootstraps from ``v_t``; a terminated one does not; the
    lambda-recursion stops at both.
    """
    done_t = jnp.logical_or(terminated_t, truncated_t)
    # Fold the end-of-episode bootstrap into the reward and cut the recursion there,
    # so rlax's GAE (which bootstraps from the next row of `values`) stays exact.
    bootstrap = jnp.where(truncated_t & ~terminated_t, gamma * v_t, 0.0)
    r_t = reward_t + jnp.where(done_t, bootstrap, 0.0)
    discount_t = jnp.where(done_t, 0.0, gamma) * jnp.ones_like(reward_t)
    values = jnp.concatenate([v_tm1, v_t[-1:]])
    return rlax.truncated_generalized_advantage_estimation(
        r_t, discount_t, gae_lambda, values, stop_target_gradients=True
    )


def _log_prob(logits: jax.Array, action: jax.Array) -> jax.Array:
    return jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], axis=-1)[..., 0]


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build PPO for ``spec``; ``total_steps`` sets the learning-rate annealing horizon."""
    if spec.action_kind != "discrete":
        raise ValueError(
            f"agent ppo: needs a discrete action space, but the environment's is "
            f"{spec.action_kind}; use a continuous-control agent"
        )
    network = CategoricalActorCritic(spec.num_actions, config.hidden_sizes, config.activation)
    batch_size = config.num_envs * config.num_steps
    minibatch_size = batch_size // config.num_minibatches

    if config.anneal_lr and total_steps:
        num_rollouts = max(1, total_steps // batch_size)
        learning_rate = optax.linear_schedule(
            config.learning_rate, 0.0, num_rollouts * config.num_epochs * config.num_minibatches
        )
    else:
        learning_rate = config.learning_rate
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adam(learning_rate, eps=1e-5),
    )

    def init(key):
        params = network.init(key, jnp.zeros((1, *spec.observation_shape), jnp.float32))
        return PPOState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state, observation, carry, key, deterministic=False):
        logits, value = network.apply(state.params, observation)
        if deterministic:
            action = jnp.argmax(logits, axis=-1)
        else:
            action = jax.random.categorical(key, logits)
        log_prob = _log_prob(logits, action)
        return ActOutput(action, carry, {"log_prob": log_prob, "value": value})

    def loss_fn(params, batch):
        logits, value = network.apply(params, batch["obs"])
        log_prob = _log_prob(logits, batch["action"])
        ratio = jnp.exp(log_prob - batch["log_prob"])
        adv = batch["advantage"]
        if config.normalize_advantages:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        policy_loss = rlax.clipped_surrogate_pg_loss(ratio, adv, config.clip_eps)
        value_error = value - batch["target"]
        if config.clip_value:
            clipped = batch["value"] + jnp.clip(
                value - batch["value"], -config.clip_eps, config.clip_eps
            )
            value_loss = 0.5 * jnp.mean(
                jnp.maximum(value_error**2, (clipped - batch["target"]) ** 2)
            )
        else:
            value_loss = 0.5 * jnp.mean(value_error**2)
        log_probs = jax.nn.log_softmax(logits)
        entropy = -jnp.mean(jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1))
        loss = policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy
        stats = {
            "loss": loss,
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "approx_kl": jnp.mean((ratio - 1.0) - jnp.log(ratio)),
            "clip_fraction": jnp.mean(jnp.abs(ratio - 1.0) > config.clip_eps),
        }
        return loss, stats

    def minibatch_step(carry, batch):
        params, opt_state = carry
        grads, stats = jax.grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), stats

    def update(state, rollout: Trajectory, key):
        _, v_t = network.apply(state.params, rollout.next_obs)
        advantage = jax.vmap(advantages, in_axes=(1, 1, 1, 1, 1, None, None), out_axes=1)(
            rollout.reward, rollout.terminated, rollout.truncated,
            rollout.extras["value"], v_t, config.gamma, config.gae_lambda,
        )
        flat = {
            "obs": rollout.obs,
            "action": rollout.action,
            "log_prob": rollout.extras["log_prob"],
            "value": rollout.extras["value"],
            "advantage": advantage,
            "target": advantage + rollout.extras["value"],
        }
        flat = jax.tree.map(lambda x: x.reshape(batch_size, *x.shape[2:]), flat)

        def epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, batch_size)
            minibatches = jax.tree.map(
                lambda x: x[order].reshape(config.num_minibatches, minibatch_size, *x.shape[1:]),
                flat,
            )
            return jax.lax.scan(minibatch_step, carry, minibatches)

        (params, opt_state), stats = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(key, config.num_epochs)
        )
        metrics = jax.tree.map(jnp.mean, stats)
        return PPOState(params, opt_state, state.updates + 1), metrics

    return Agent(init=init, act=act, update=update)
