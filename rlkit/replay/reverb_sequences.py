"""Sequences of steps through Reverb: a sliding-window writer, its tables and a time-major sampler.

Reverb world only (re-exported by ``rlkit.replay.reverb``)::

    tables = make_tables(spec, example_step)        # kind "sequences" (replay) or "rollout" (a queue)
    writer = SequenceWriter(client, spec.sequence_length, spec.sequence_period)
    writer.add_batch(steps, env_ids)                # one step of N environments, Trajectory [N] (or Transition [N])
    sampler = SequenceSampler(client, "replay", spec.batch_size, example_step, spec.sequence_length)
    keys, probabilities, batch = sampler.sample()   # a numpy Trajectory [L, B]

Each environment keeps its own stream of steps; every ``period`` steps, once ``length`` are there, the
last ``length`` steps are written as one item (the ``ItemCodec`` bytes of the steps, one after another).
The window slides over episode ends: a step with ``terminated | truncated`` ends its episode and the next
step starts a new one, so sequences never cross an episode end unmarked. With ``period < length``
neighbouring items overlap and each step is stored ``length / period`` times (with ``period > length``
the steps between two items are never stored).
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import jax
import numpy as np

from rlkit.replay.reverb_items import ItemCodec, ItemWriter, Sampler, packed_signature, rate_limiter, reverb, selector
from rlkit.types import ExperienceSpec, Trajectory, Transition


def trajectory_step(step: Trajectory | Transition) -> Trajectory:
    """A ``Transition`` (batched or not) as the ``Trajectory`` step it is; a ``Trajectory`` as it is.

    ``terminated`` where the episode ended with discount 0, ``truncated`` where it ended otherwise.
    """
    if isinstance(step, Trajectory):
        return step
    last = np.asarray(step.last_t, bool)
    terminated = last & (np.asarray(step.discount_t) == 0)
    return Trajectory(step.obs_tm1, step.action_tm1, step.reward_t, terminated, last & ~terminated, step.obs_t,
                      step.extras)


def check_sequences(spec: ExperienceSpec) -> None:
    """One-line ValueErrors for sequence settings a Reverb sequence table cannot hold."""
    length, period = spec.sequence_length, spec.sequence_period
    if length < 1 or period < 1:
        raise ValueError(f"sequence_length and sequence_period must be >= 1 for sequences, got {length} and {period}")
    if length > spec.buffer_size:
        raise ValueError(f"sequence_length={length} is longer than the buffer (buffer_size={spec.buffer_size} "
                         "steps); raise buffer_size or shorten the sequences")


def sequence_table(
    spec: ExperienceSpec, example: Any, name: str, prioritized: bool, priority_exponent: float,
    samples_per_insert: float, error_buffer: float | None,
) -> reverb.Table:
    """A replay of sequences: ``buffer_size / sequence_period`` items (each ``sequence_length`` packed steps),
    FIFO removal, sampling from ``min_size / sequence_period`` items on at ``samples_per_insert``."""
    check_sequences(spec)
    return reverb.Table(
        name=name,
        sampler=selector(prioritized, priority_exponent),
        remover=reverb.selectors.Fifo(),
        max_size=max(1, spec.buffer_size // spec.sequence_period),
        rate_limiter=rate_limiter(samples_per_insert, min_sequences(spec), error_buffer),
        signature=packed_signature(ItemCodec(example), spec.sequence_length),
    )


def min_sequences(spec: ExperienceSpec) -> int:
    """Items in a sequence table once ``spec.min_size`` steps were written: ``ceil(min_size / period)``, >= 1."""
    return max(1, -(-spec.min_size // spec.sequence_period))


def rollout_queue(spec: ExperienceSpec, example: Any, name: str, queue_size: int | None = None) -> reverb.Table:
    """A FIFO queue of ``queue_size`` (default ``2 * num_envs``, at least 8) rollouts of ``rollout_length``
    packed steps each; sampling removes them, inserting into a full queue blocks."""
    if spec.rollout_length < 1:
        raise ValueError(f"rollout_length must be >= 1, got {spec.rollout_length}")
    size = queue_size or max(8, 2 * spec.num_envs)
    return reverb.Table.queue(name, max_size=size, signature=packed_signature(ItemCodec(example), spec.rollout_length))


class SequenceWriter(ItemWriter):
    """An adder writing overlapping sequences of steps: ``Actor(adder=...)`` (one environment) or ``add_batch``.

    Args:
      client: a ``reverb.Client``.
      length: steps per item (``sequence_length``; a rollout's ``rollout_length``).
      period: steps between the starts of two items of one environment (``sequence_period``;
        ``rollout_length`` for a rollout queue: no overlap).
      table: the table to insert into.
      flush_every: at most this many items are left unconfirmed.
      timeout_ms: how long a flush may wait for the server before ``ReplayUnavailable``.
      example: one unbatched ``Trajectory`` step (each step is cast to its dtypes); without it, the first
        step written sets them.

    Steps may come as ``Trajectory`` or ``Transition`` (converted by ``trajectory_step``). The last
    ``length - 1`` steps of each environment wait for the items that will hold them.
    """

    def __init__(
        self, client: reverb.Client, length: int, period: int, table: str = "replay", flush_every: int = 16,
        timeout_ms: int = 5000, example: Trajectory | None = None,
    ):
        if length < 1 or period < 1:
            raise ValueError(f"SequenceWriter: length and period must be >= 1, got {length} and {period}")
        super().__init__(client, table, flush_every, timeout_ms)
        self.length, self.period = length, period
        self.codec = None if example is None else ItemCodec(example)
        self._streams: dict[int, collections.deque[np.ndarray]] = {}
        self._stream_steps: dict[int, int] = collections.defaultdict(int)  # steps since the stream began
        self.steps_written = 0  # steps added (each in the items that hold it, or waiting for them)

    def __call__(self, step: Trajectory | Transition) -> None:
        """Add one environment's step (unbatched)."""
        self._check()
        step = trajectory_step(step)
        if self.codec is None:
            self.codec = ItemCodec(step)
        self._add(0, self.codec.pack(step))

    def add_batch(self, steps: Trajectory | Transition, env_ids: Sequence[int] | None = None) -> None:
        """Add one step of ``N`` environments side by side (every leaf has a leading ``[N]`` axis).

        Each environment keeps its own stream, named by ``env_ids`` (default ``0 .. N-1``).
        """
        self._check()
        steps = trajectory_step(steps)
        if self.codec is None:
            self.codec = ItemCodec(jax.tree.map(lambda x: np.asarray(x)[0], steps))
        rows = self.codec.pack_batch(steps)
        for env, row in zip(range(len(rows)) if env_ids is None else env_ids, rows):
            self._add(int(env), row)

    def _add(self, env: int, row: np.ndarray) -> None:
        stream = self._streams.get(env)
        if stream is None:
            stream = self._streams[env] = collections.deque(maxlen=self.length)
        stream.append(row)
        self.steps_written += 1
        self._stream_steps[env] += 1
        count = self._stream_steps[env]
        if count >= self.length and (count - self.length) % self.period == 0:
            self._write(np.concatenate(stream))

    def end_episode(self) -> None:
        """Drop every stream (steps not yet in an item are never written); the next steps start afresh."""
        self._streams.clear()
        self._stream_steps.clear()


class SequenceSampler(Sampler):
    """Batches of sequences, a numpy ``Trajectory [length, batch_size, ...]`` (time-major), from a table
    of ``SequenceWriter`` items; ``sample()`` returns ``(keys [B], probabilities [B], batch)``.

    Args: as ``Sampler``'s, with ``example`` one unbatched ``Trajectory`` step and ``length`` the steps per
    item. From a rollout queue, every sample takes its items out of the queue (prefetched ones too).
    """

    def __init__(
        self, client: reverb.Client | str, table: str, batch_size: int, example: Trajectory, length: int,
        timeout_s: float = 10.0, max_in_flight: int | None = None,
    ):
        if batch_size < 1 or length < 1:
            raise ValueError(f"SequenceSampler: batch_size and length must be >= 1, got {batch_size} and {length}")
        self._setup(client, table, batch_size, example, timeout_s, max_in_flight, batch_size, length)
        self.length = length

    def _assemble(self, rows: np.ndarray) -> Trajectory:
        batch = self.codec.unpack(rows, leading=(rows.shape[0], self.length))
        return jax.tree.map(lambda x: np.swapaxes(x, 0, 1), batch)
