"""Experience on the device: one ``Feeder`` per experience kind, pure functions over a state in the run state.

``make(spec, example)`` looks ``spec.kind`` up in ``FEEDERS`` and returns
``Feeder(init, add, sample, set_priorities, can_sample)``:

- "rollout": nothing is stored; ``sample`` hands the fresh rollout back.
- "transitions": a ring buffer of steps per environment (flashbax); ``sample`` folds
  ``n_step`` consecutive steps into one ``Transition`` (``n_step_transition``).
- "sequences": the same ring buffer; ``sample`` returns ``sequence_length`` consecutive
  steps, time-major, as a ``Trajectory [L, B]`` (starts ``sequence_period`` apart).

Both replays store every field of the rollout, ``extras`` included, and are uniform or
prioritized (``spec.prioritized``: flashbax's sum tree, proportional to
``priority ** priority_exponent``; batches then come as ``WeightedBatch``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import flashbax
import jax
import jax.numpy as jnp

from rlkit import config as cfg
from rlkit.types import ExperienceSpec, Trajectory, Transition, WeightedBatch


class Feeder(NamedTuple):
    """How the loop feeds ``update`` for one experience kind.

    Attributes:
      init: ``() -> state``, the empty store (``()`` for "rollout").
      add: ``(state, rollout [T, N]) -> state``.
      sample: ``(state, rollout, key) -> (batch, indices)``; ``batch`` is what ``update`` takes,
        ``indices`` name the sampled items for ``set_priorities`` (``()`` when not prioritized).
      set_priorities: ``(state, indices, priorities [B]) -> state``.
      can_sample: ``(state) -> bool``.
      stores: False for "rollout", whose batch is always the fresh rollout.
    """

    init: Callable[[], Any]
    add: Callable[[Any, Trajectory], Any]
    sample: Callable[[Any, Trajectory, jax.Array], tuple[Any, Any]]
    set_priorities: Callable[[Any, Any, jax.Array], Any]
    can_sample: Callable[[Any], jax.Array]
    stores: bool = True


def transitions(rollout: Trajectory) -> Transition:
    """Steps ``[T, N]`` as transitions ``[T, N]``: discount 0 only at termination."""
    return Transition(
        obs_tm1=rollout.obs,
        action_tm1=rollout.action,
        reward_t=rollout.reward,
        discount_t=1.0 - rollout.terminated.astype(jnp.float32),
        obs_t=rollout.next_obs,
        last_t=rollout.terminated | rollout.truncated,
        extras=rollout.extras,
    )


def n_step_transition(sequence: Transition, gamma: float) -> Transition:
    """Fold a sequence of ``n`` consecutive transitions ``[n]`` into one n-step transition.

    The return sums ``gamma**k * r_k`` up to the first episode end in the
    sequence (or all ``n`` steps); the bootstrap observation is that step's
    ``obs_t`` and ``discount_t`` becomes ``gamma**m * discount`` there, ``m``
    being the number of steps folded (Sutton & Barto, 2018, section 7.1).
    With ``n == 1`` this is the transition itself with ``gamma`` folded in.
    ``extras`` are the first step's (those of ``action_tm1``).
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
        extras=jax.tree.map(lambda x: x[0], sequence.extras),
    )


def importance_weights(probabilities: jax.Array, exponent: float) -> jax.Array:
    """``(min P / P) ** exponent``: Schaul et al.'s ``(N P) ** -beta`` normalised by the batch's largest weight.

    An item drawn with probability 0 (a sum tree's rounding at a boundary) gets weight 0, not a NaN.
    """
    positive = jnp.where(probabilities > 0, probabilities, jnp.inf)
    return (jnp.min(positive) / positive) ** exponent


def check_spec(spec: ExperienceSpec) -> None:
    """Raise a one-line ValueError for replay sizes that cannot work, before anything compiles."""
    if spec.kind not in FEEDERS:
        raise ValueError(f"experience kind: {spec.kind!r} is not one of {list(FEEDERS)}")
    if spec.kind == "rollout":
        return
    steps_per_env = spec.buffer_size // spec.num_envs
    if spec.kind == "sequences":
        if spec.sequence_length < 1 or spec.sequence_period < 1:
            raise ValueError(
                f"sequence_length and sequence_period must be >= 1 for sequences, got "
                f"{spec.sequence_length} and {spec.sequence_period}"
            )
        if spec.sequence_length > steps_per_env:
            raise ValueError(
                f"sequence_length={spec.sequence_length} is longer than the buffer holds per environment "
                f"(buffer_size // num_envs = {steps_per_env}); raise buffer_size or shorten the sequences"
            )
    if spec.prioritized:  # a traced exponent (a vmapped hyperparameter) was checked before the vmap
        cfg.check_unit_interval("priority_exponent", spec.priority_exponent)


def _rollout_feeder(spec: ExperienceSpec, example: Trajectory) -> Feeder:
    del spec, example
    return Feeder(
        init=lambda: (),
        add=lambda state, rollout: state,
        sample=lambda state, rollout, key: (rollout, ()),
        set_priorities=lambda state, indices, priorities: state,
        can_sample=lambda state: jnp.ones((), bool),
        stores=False,
    )


def _replay(
    spec: ExperienceSpec, example: Trajectory, length: int, period: int, unpack: Callable, batch_shape: tuple[int, ...]
) -> Feeder:
    """A flashbax buffer of steps per environment, sampled as ``length`` steps starting ``period`` apart.

    ``unpack`` turns a sample ``[B, length, ...]`` into the batch ``update`` takes, whose leaves start with
    ``batch_shape`` (checked).
    """
    capacity = spec.buffer_size // spec.num_envs
    capacity -= capacity % period  # the prioritized buffer wants whole periods
    arguments = dict(
        add_batch_size=spec.num_envs,
        sample_batch_size=spec.batch_size,
        sample_sequence_length=length,
        period=period,
        min_length_time_axis=max(length, spec.min_size // spec.num_envs, 1),
        max_length_time_axis=capacity,
    )
    if spec.prioritized:
        buffer = flashbax.make_prioritised_trajectory_buffer(**arguments, priority_exponent=spec.priority_exponent)
    else:
        buffer = flashbax.make_trajectory_buffer(**arguments)

    def add(state, rollout: Trajectory):
        # flashbax wants [num_envs, time, ...]; rollouts are [time, num_envs, ...].
        return buffer.add(state, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), rollout))

    def sample(state, rollout, key):
        del rollout
        drawn = buffer.sample(state, key)
        batch = unpack(drawn.experience)
        chex.assert_tree_shape_prefix(batch, batch_shape)
        if not spec.prioritized:
            return batch, ()
        weights = importance_weights(drawn.probabilities, spec.importance_exponent)
        return WeightedBatch(batch, weights), drawn.indices

    def set_priorities(state, indices, priorities):
        if not spec.prioritized:
            return state
        return buffer.set_priorities(state, indices, priorities)

    return Feeder(lambda: buffer.init(example), add, sample, set_priorities, buffer.can_sample)


def _transition_replay(spec: ExperienceSpec, example: Trajectory) -> Feeder:
    fold = jax.vmap(n_step_transition, in_axes=(0, None))
    fold_steps = lambda steps: fold(transitions(steps), spec.gamma)  # noqa: E731
    return _replay(spec, example, spec.n_step, 1, fold_steps, (spec.batch_size,))


def _sequence_replay(spec: ExperienceSpec, example: Trajectory) -> Feeder:
    time_major = lambda steps: jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), steps)  # noqa: E731
    return _replay(spec, example, spec.sequence_length, spec.sequence_period, time_major,
                   (spec.sequence_length, spec.batch_size))


FEEDERS: dict[str, Callable[[ExperienceSpec, Trajectory], Feeder]] = {
    "rollout": _rollout_feeder,
    "transitions": _transition_replay,
    "sequences": _sequence_replay,
}


def make(spec: ExperienceSpec, example: Trajectory) -> Feeder:
    """The feeder for ``spec.kind``; ``example`` is one unbatched step (a ``Trajectory`` without axes)."""
    check_spec(spec)
    return FEEDERS[spec.kind](spec, example)
