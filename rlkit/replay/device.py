"""Replay on the device: a pure ring buffer of transitions per environment (flashbax).

``make(spec, example)`` returns ``DeviceReplay(init, add, sample, can_sample)``,
pure functions over a buffer-state pytree that lives in the training carry.
``sample`` returns ``Transition`` batches; with ``spec.n_step > 1`` each is an
n-step transition folded by ``n_step_transition``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flashbax
import jax
import jax.numpy as jnp

from rlkit.types import ExperienceSpec, Trajectory, Transition


class DeviceReplay(NamedTuple):
    init: Callable[[], Any]                          # () -> buffer state
    add: Callable[[Any, Trajectory], Any]            # (state, rollout [T, N]) -> state
    sample: Callable[[Any, jax.Array], Transition]   # (state, key) -> batch [B]
    can_sample: Callable[[Any], jax.Array]           # (state) -> bool


def transitions(rollout: Trajectory) -> Transition:
    """A rollout ``[T, N]`` as transitions ``[T, N]``: discount 0 only at termination."""
    return Transition(
        obs_tm1=rollout.obs,
        action_tm1=rollout.action,
        reward_t=rollout.reward,
        discount_t=1.0 - rollout.terminated.astype(jnp.float32),
        obs_t=rollout.next_obs,
        last_t=rollout.terminated | rollout.truncated,
    )


def n_step_transition(sequence: Transition, gamma: float) -> Transition:
    """Fold a sequence of ``n`` consecutive transitions ``[n]`` into one n-step transition.

    The return sums ``gamma**k * r_k`` up to the first episode end in the
    sequence (or all ``n`` steps); the bootstrap observation is that step's
    ``obs_t`` and ``discount_t`` becomes ``gamma**m * discount`` there, ``m``
    being the number of steps folded (Sutton & Barto, 2018, section 7.1).
    With ``n == 1`` this is the transition itself with ``gamma`` folded in.
    """
    n = sequence.reward_t.shape[0]
    ended = sequence.last_t.astype(jnp.float32)
    # alive[k] = 1 while no earlier step of the sequence ended the episode.
    alive = jnp.cumprod(jnp.concatenate([jnp.ones((1,)), 1.0 - ended[:-1]]))
    powers = gamma ** jnp.arange(n, dtype=jnp.float32)
    reward = jnp.sum(alive * powers * sequence.reward_t)
    last = jnp.sum(alive).astype(jnp.int32) - 1  # index of the step we stop at
    return Transition(
        obs_tm1=sequence.obs_tm1[0],
        action_tm1=sequence.action_tm1[0],
        reward_t=reward,
        discount_t=gamma ** (last + 1).astype(jnp.float32) * sequence.discount_t[last],
        obs_t=sequence.obs_t[last],
        last_t=sequence.last_t[last],
    )


def make(spec: ExperienceSpec, example: Transition) -> DeviceReplay:
    """A uniform replay of ``spec.buffer_size`` transitions, ``spec.num_envs`` rows.

    ``example`` is one unbatched transition (shapes and dtypes of a single step).
    """
    capacity = spec.buffer_size // spec.num_envs
    buffer = flashbax.make_trajectory_buffer(
        add_batch_size=spec.num_envs,
        sample_batch_size=spec.batch_size,
        sample_sequence_length=spec.n_step,
        period=1,
        min_length_time_axis=max(spec.n_step, spec.min_size // spec.num_envs, 1),
        max_length_time_axis=capacity,
    )
    fold = jax.vmap(n_step_transition, in_axes=(0, None))

    def init():
        return buffer.init(example)

    def add(state, rollout: Trajectory):
        # flashbax wants [num_envs, time, ...]; rollouts are [time, num_envs, ...].
        batch = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), transitions(rollout))
        return buffer.add(state, batch)

    def sample(state, key):
        sequences = buffer.sample(state, key).experience  # [B, n, ...]
        return fold(sequences, spec.gamma)

    return DeviceReplay(init, add, sample, buffer.can_sample)
