"""Replay through Reverb (host): tables for every experience kind, writers for ``Actor(adder=...)``, samplers.

Reverb world only (dm-reverb + TensorFlow); the core never imports this module::

    tables = make_tables(spec, example)                         # on the learner / server side
    server = reverb.Server(tables, port=None)
    client = reverb.Client(f"127.0.0.1:{server.port}")
    actor = Actor(agent, state, adder=TransitionWriter(client, spec))
    sampler = Sampler(client, "replay", spec.batch_size, example)
    keys, probabilities, batch = sampler.sample()               # a numpy Transition batch

``kind="transitions"``: each item is one n-step ``Transition`` (or ``transitions_per_item`` of them)
folded on the host exactly as ``rlkit.replay.n_step_transition`` folds it on the device
(``n_step_fold``), never across an episode end. ``kind="sequences"`` and ``"rollout"``: items of
consecutive steps from ``SequenceWriter``, sampled as ``Trajectory [L, B]`` by ``SequenceSampler``
(``rlkit.replay.reverb_sequences``). Every item is one ``uint8`` vector (``ItemCodec``), ``extras``
included; ``rlkit.replay.reverb_items`` holds what the kinds share (the codec, the bounded waits,
``ReplayUnavailable``).
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import jax
import numpy as np

from rlkit.replay.reverb_items import (  # noqa: F401  (re-exported: the public names of the Reverb replay)
    ItemCodec,
    ItemWriter,
    ReplayNotReady,
    ReplayUnavailable,
    Sampler,
    _new_sampler,
    packed_signature,
    rate_limiter,
    reverb,
    selector,
    tf,
)
from rlkit.replay.reverb_sequences import (  # noqa: F401
    SequenceSampler,
    SequenceWriter,
    check_sequences,
    min_sequences,
    rollout_queue,
    sequence_table,
    trajectory_step,
)
from rlkit.types import ExperienceSpec, Transition


def default_samples_per_insert(spec: ExperienceSpec) -> float:
    """The device loop's replay ratio in items: samples per update batch over items inserted per iteration.

    Transitions: ``batch_size * updates_per_rollout / steps_per_iteration``; sequences, one item every
    ``sequence_period`` steps: that times ``sequence_period``.
    """
    steps_per_item = spec.sequence_period if spec.kind == "sequences" else 1
    return spec.batch_size * spec.updates_per_rollout * steps_per_item / spec.steps_per_iteration


def make_tables(
    spec: ExperienceSpec,
    example: Any,
    name: str = "replay",
    prioritized: bool | None = None,
    samples_per_insert: float | None = None,
    error_buffer: float | None = None,
    priority_exponent: float | None = None,
    queue_size: int | None = None,
    transitions_per_item: int = 1,
) -> list[reverb.Table]:
    """Reverb tables for an agent's ``ExperienceSpec``; item sizes come from ``example``.

    ``kind="transitions"``: one table of ``spec.buffer_size`` single-step items (``example`` is one
    unbatched ``Transition``; items are its ``ItemCodec`` bytes), uniform or prioritized sampling
    (``prioritized`` and ``priority_exponent``, default the spec's), FIFO removal, and a
    ``SampleToInsertRatio`` limiter at ``samples_per_insert`` (default the device loop's replay ratio)
    that blocks sampling until ``spec.min_size`` items are in; ``error_buffer`` (see ``rate_limiter``)
    is how far sampling and inserting may drift from the ratio before one side blocks.
    ``samples_per_insert=0`` keeps no ratio (a ``MinSize`` limiter: inserts never block), e.g. to
    measure an actor alone.

    ``transitions_per_item`` (K) packs K transitions into each item (``TransitionWriter`` and
    ``Sampler`` with the same K): a K-th of the per-item costs of inserting and sampling, for fast
    batched actors. Sizes are then in items: ``buffer_size / K`` of them, sampling from
    ``min_size / K``; the ratio is unchanged (samples and inserts both count items). A batch then
    holds ``batch_size / K`` groups of K transitions written together (from one step of K
    environments, or K steps of one).

    ``kind="sequences"`` (``example`` one unbatched ``Trajectory`` step): the same, with items of
    ``sequence_length`` steps starting ``sequence_period`` apart (``sequence_table``).
    ``kind="rollout"``: a FIFO queue of ``queue_size`` rollouts of ``rollout_length`` steps
    (``rollout_queue``).
    """
    if spec.kind != "transitions" and transitions_per_item != 1:
        raise ValueError(f"transitions_per_item applies to kind 'transitions' only; this spec's kind is {spec.kind!r}")
    if spec.kind == "rollout":
        return [rollout_queue(spec, example, name, queue_size)]
    table = _REPLAY_TABLES.get(spec.kind)
    if table is None:
        raise ValueError(f"make_tables: ExperienceSpec.kind must be one of {['rollout', *_REPLAY_TABLES]}, "
                         f"got {spec.kind!r}")
    if spec.buffer_size < 1:
        raise ValueError(f"make_tables: spec.buffer_size must be >= 1, got {spec.buffer_size}")
    ratio = default_samples_per_insert(spec) if samples_per_insert is None else float(samples_per_insert)
    prioritized = spec.prioritized if prioritized is None else prioritized
    exponent = spec.priority_exponent if priority_exponent is None else priority_exponent
    return [table(spec, example, name, prioritized, exponent, ratio, error_buffer, transitions_per_item)]


def _transition_table(spec, example, name, prioritized, exponent, ratio, error_buffer, per_item) -> reverb.Table:
    per_item = check_transitions_per_item(spec, per_item)
    return reverb.Table(
        name=name,
        sampler=selector(prioritized, exponent),
        remover=reverb.selectors.Fifo(),
        max_size=max(1, spec.buffer_size // per_item),
        rate_limiter=rate_limiter(ratio, max(1, -(-spec.min_size // per_item)), error_buffer),
        signature=packed_signature(ItemCodec(example), per_item),
    )


def _sequence_table(spec, example, name, prioritized, exponent, ratio, error_buffer, per_item) -> reverb.Table:
    del per_item
    return sequence_table(spec, example, name, prioritized, exponent, ratio, error_buffer)


_REPLAY_TABLES = {"transitions": _transition_table, "sequences": _sequence_table}


def check_transitions_per_item(spec: ExperienceSpec, transitions_per_item: int) -> int:
    """``transitions_per_item`` if it is >= 1 and divides ``batch_size``; else a ValueError naming both."""
    if not isinstance(transitions_per_item, (int, np.integer)) or transitions_per_item < 1:
        raise ValueError(f"transitions_per_item must be an integer >= 1, got {transitions_per_item!r}")
    if spec.batch_size % transitions_per_item:
        raise ValueError(
            f"transitions_per_item={transitions_per_item} must divide batch_size={spec.batch_size} "
            "(a batch is made of whole items)"
        )
    return int(transitions_per_item)


def n_step_fold(steps: Sequence[Transition], gamma: float) -> Transition:
    """Numpy twin of ``rlkit.replay.n_step_transition`` for ``m`` consecutive steps of one episode.

    Only the last of ``steps`` may end the episode. Returns one transition: the discounted reward
    sum, ``discount_t = gamma ** m * discount`` of the last step and its ``obs_t`` / ``last_t``; the
    first step's ``obs_tm1``, ``action_tm1`` and ``extras`` (what was acted on).
    """
    m = len(steps)
    rewards = np.asarray([s.reward_t for s in steps], np.float32)
    powers = np.float32(gamma) ** np.arange(m, dtype=np.float32)
    last = steps[-1]
    return Transition(
        obs_tm1=steps[0].obs_tm1,
        action_tm1=steps[0].action_tm1,
        reward_t=np.sum(powers * rewards, dtype=np.float32),
        discount_t=np.float32(np.float32(gamma) ** np.float32(m) * np.float32(last.discount_t)),
        obs_t=last.obs_t,
        last_t=np.asarray(last.last_t, bool),
        extras=steps[0].extras,
    )


class TransitionWriter(ItemWriter):
    """An adder writing n-step transitions to a Reverb table: ``Actor(adder=...)`` or ``add_batch``.

    Args:
      client: a ``reverb.Client``.
      spec: the agent's ``ExperienceSpec`` (``n_step``, ``gamma``).
      table: the table to insert into.
      flush_every: at most this many items are left unconfirmed (a flush every that many items).
      timeout_ms: how long a flush may wait for the server before ``ReplayUnavailable``.
      example: one ``Transition`` giving each leaf's dtype and shape (what the table's items hold,
        ``extras`` included); each step is cast to it. Without it, the first step written sets them.
      transitions_per_item: transitions packed into each item (the table's ``transitions_per_item``).

    The transition for step ``t`` is complete once steps ``t .. t+n-1`` are seen, or at the episode's
    end (then folded over the steps left); it keeps step ``t``'s ``extras``. It is written at once (one
    transition per item), or with ``transitions_per_item=K`` staged until K are complete and written
    as one item; up to K - 1 staged transitions are not in the table yet (nor in its checkpoints)
    until the item fills. Errors and flushes behave as ``ItemWriter``'s.
    """

    def __init__(
        self, client: reverb.Client, spec: ExperienceSpec, table: str = "replay", flush_every: int = 16,
        timeout_ms: int = 5000, example: Transition | None = None, transitions_per_item: int = 1,
    ):
        if spec.n_step < 1:
            raise ValueError(f"TransitionWriter: spec.n_step must be >= 1, got {spec.n_step}")
        self.transitions_per_item = check_transitions_per_item(spec, transitions_per_item)
        super().__init__(client, table, flush_every, timeout_ms)
        self.n_step, self.gamma = spec.n_step, spec.gamma
        self.codec = None if example is None else ItemCodec(example)
        self._windows: dict[int, collections.deque[Transition]] = collections.defaultdict(collections.deque)
        self._staged: np.ndarray | None = None  # [K, codec.size] rows of the item being filled
        self._num_staged = 0

    @property
    def transitions_written(self) -> int:
        """Transitions in the items written so far (staged ones not counted)."""
        return self.items_written * self.transitions_per_item

    def __call__(self, transition: Transition) -> None:
        """Add one environment's step (an unbatched ``Transition``)."""
        self._check()
        self._add(0, transition)

    def add_batch(self, transitions: Transition, env_ids: Sequence[int] | None = None) -> None:
        """Add one step of ``N`` environments side by side (every leaf has a leading ``[N]`` axis).

        Each environment keeps its own n-step window, named by ``env_ids`` (default ``0 .. N-1``; give
        them when batches come from different groups of environments); ``last_t[i]`` ends its episode.
        """
        self._check()
        if self.n_step == 1:  # nothing to wait for: fold the whole batch at once
            folded = transitions._replace(
                discount_t=np.float32(self.gamma) * np.asarray(transitions.discount_t, np.float32)
            )
            self._stage(self._pack_batch(folded))
            return
        ids = range(len(transitions.last_t)) if env_ids is None else env_ids
        extras = transitions.extras
        for i, env in enumerate(ids):
            step = Transition(*(field[i] for field in transitions[:-1]),
                              extras=jax.tree.map(lambda x: x[i], extras) if extras else {})
            self._add(env, step)

    def _add(self, env: int, transition: Transition) -> None:
        window = self._windows[env]
        window.append(transition)
        if bool(transition.last_t):
            while window:  # the episode's last (shorter) n-step transitions
                self._stage(self._pack(self._fold(window)))
                window.popleft()
        elif len(window) == self.n_step:
            self._stage(self._pack(self._fold(window)))
            window.popleft()

    def _fold(self, window) -> Transition:
        if len(window) == 1:  # n_step_fold of one step, without its array work
            step = window[0]
            return step._replace(discount_t=np.float32(self.gamma) * np.float32(step.discount_t))
        return n_step_fold(list(window), self.gamma)

    def end_episode(self) -> None:
        """Drop the steps of unfinished episodes (they are never written); the next steps start afresh."""
        self._windows.clear()

    def _pack(self, item: Transition) -> np.ndarray:
        if self.codec is None:
            self.codec = ItemCodec(item)
        return self.codec.pack(item)[None]

    def _pack_batch(self, items: Transition) -> np.ndarray:
        if self.codec is None:
            self.codec = ItemCodec(jax.tree.map(lambda x: np.asarray(x)[0], items))
        return self.codec.pack_batch(items)

    def _stage(self, rows: np.ndarray) -> None:
        """Write ``rows [m, size]`` of transitions, ``transitions_per_item`` to an item."""
        per_item = self.transitions_per_item
        if per_item == 1:
            for row in rows:
                self._write(row)
            return
        if self._staged is None:
            self._staged = np.empty((per_item, rows.shape[1]), np.uint8)
        done = 0
        while done < len(rows):
            take = min(per_item - self._num_staged, len(rows) - done)
            self._staged[self._num_staged:self._num_staged + take] = rows[done:done + take]
            self._num_staged += take
            done += take
            if self._num_staged == per_item:
                self._write(self._staged.reshape(-1))
                self._num_staged = 0
