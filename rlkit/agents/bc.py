"""Behaviour cloning: supervised learning of the dataset's actions, discrete or continuous.

Pomerleau, "ALVINN: An Autonomous Land Vehicle in a Neural Network", 1989; as the offline baseline
in Fu et al., "D4RL: Datasets for Deep Data-Driven Reinforcement Learning", 2020
(https://arxiv.org/abs/2004.07219). Discrete actions: a softmax policy trained by the cross-entropy of
the dataset's action (greedy: the most likely action; sampling: from the softmax). Continuous actions:
a deterministic ``tanh`` policy regressing the action rescaled to ``[-1, 1]`` (mean squared error).

BC learns only from a dataset (``ExperienceSpec.needs_dataset``): ``rlkit train --agent bc --dataset D``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rlkit import config as cfg
from rlkit.networks import CategoricalActor, DeterministicActor, activation_fn
from rlkit.torsos import check_torso, torso_fields
from rlkit.types import ActOutput, Agent, EnvSpec, ExperienceSpec, Transition, split_weights


@dataclasses.dataclass(frozen=True)
class Config:
    """Behaviour-cloning settings."""

    batch_size: int = 256
    learning_rate: float = 1e-3
    max_grad_norm: float = 10.0
    hidden_sizes: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    torso: str = "mlp"  # observation encoder: mlp, minatar_cnn, nature_cnn or impala_resnet

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        cfg.check_positive("learning_rate", self.learning_rate)
        cfg.check_positive("max_grad_norm", self.max_grad_norm)
        activation_fn(self.activation)
        check_torso(self.torso)


class BCState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    grad_steps: jax.Array


def experience(config: Config) -> ExperienceSpec:
    """Uniform batches of one-step transitions from a dataset."""
    return ExperienceSpec(kind="transitions", num_envs=1, rollout_length=1, batch_size=config.batch_size,
                          needs_dataset=True)


def make(config: Config, spec: EnvSpec, total_steps: int | None = None) -> Agent:
    """Build BC for ``spec`` (discrete or bounded continuous actions)."""
    del total_steps
    discrete = spec.action_kind == "discrete"
    torso = torso_fields(config.torso, spec)
    if discrete:
        policy = CategoricalActor(spec.num_actions, config.hidden_sizes, config.activation, **torso)
    else:
        center, half = cfg.continuous_bounds(spec, "bc")
        policy = DeterministicActor(spec.num_actions, config.hidden_sizes, config.activation, **torso)
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(config.learning_rate))

    def init(key):
        params = policy.init(key, jnp.zeros((1, *spec.observation_shape), jnp.float32))
        return BCState(params, optimizer.init(params), jnp.zeros((), jnp.int32))

    def act(state, observation, carry, key, deterministic=False):
        out = policy.apply(state.params, observation)
        if not discrete:
            return ActOutput(center + half * out, carry, {})
        action = jnp.argmax(out, -1) if deterministic else jax.random.categorical(key, out)
        return ActOutput(action, carry, {})

    def loss_fn(params, batch: Transition):
        out = policy.apply(params, batch.obs_tm1)
        if discrete:
            log_probs = jax.nn.log_softmax(out)
            loss = -jnp.mean(jnp.take_along_axis(log_probs, batch.action_tm1[:, None], -1))
            accuracy = jnp.mean(jnp.argmax(out, -1) == batch.action_tm1)
            return loss, {"loss": loss, "accuracy": accuracy}
        target = jnp.clip((batch.action_tm1 - center) / half, -1.0, 1.0)
        loss = jnp.mean(jnp.sum(jnp.square(out - target), -1))
        return loss, {"loss": loss}

    def update(state, batch, key):
        del key
        batch, _ = split_weights(batch)
        grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return BCState(optax.apply_updates(state.params, updates), opt_state, state.grad_steps + 1), metrics

    return Agent(init=init, act=act, update=update)
