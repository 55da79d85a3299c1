"""What the updates of the on-policy agents that learn in minibatch epochs share (PPO, recurrent PPO, PQN):
the learning rate annealed over their minibatch steps, and the epochs themselves.

Their configs have ``num_envs``, ``num_steps``, ``num_epochs``, ``num_minibatches``, ``learning_rate`` and
``anneal_lr``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def annealed_rate(config: Any, total_steps: int | None) -> float | optax.Schedule:
    """``learning_rate``, or with ``anneal_lr`` (and a known ``total_steps``) a rate falling linearly to 0
    over the run's minibatch steps (rollouts x ``num_epochs`` x ``num_minibatches``)."""
    if not (config.anneal_lr and total_steps):
        return config.learning_rate
    num_rollouts = max(1, total_steps // (config.num_envs * config.num_steps))
    return optax.linear_schedule(config.learning_rate, 0.0, num_rollouts * config.num_epochs * config.num_minibatches)


def sort_shuffle(key: jax.Array, n: int) -> jax.Array:
    """A random order of ``n`` items by sorting random bits: one sort, cheaper to compile than a permutation."""
    return jnp.argsort(jax.random.bits(key, (n,)))


def minibatch_epochs(config: Any, minibatch_step: Callable, learner: Any, batch: dict, key: jax.Array,
                     shuffle: Callable[[jax.Array, int], jax.Array] = jax.random.permutation):
    """``num_epochs`` passes over ``batch`` (``num_envs * num_steps`` items) in ``num_minibatches`` shuffled
    minibatches, ``(learner, stats) = minibatch_step(learner, minibatch)`` on each: the final learner and the
    stats stacked ``[num_epochs, num_minibatches]``."""
    batch_size = config.num_envs * config.num_steps
    minibatch_size = batch_size // config.num_minibatches

    def epoch(learner, epoch_key):
        order = shuffle(epoch_key, batch_size)
        minibatches = jax.tree.map(
            lambda x: x[order].reshape(config.num_minibatches, minibatch_size, *x.shape[1:]), batch
        )
        return jax.lax.scan(minibatch_step, learner, minibatches)

    return jax.lax.scan(epoch, learner, jax.random.split(key, config.num_epochs))
