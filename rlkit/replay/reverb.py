"""Replay through Reverb (host): tables, an n-step transition writer for ``Actor(adder=...)``, a sampler.

Reverb world only (dm-reverb + TensorFlow); the core never imports this module::

    tables = make_tables(spec, example)                         # on the learner / server side
    server = reverb.Server(tables, port=None)
    client = reverb.Client(f"127.0.0.1:{server.port}")
    actor = Actor(agent, state, adder=TransitionWriter(client, spec))
    sampler = Sampler(client, "replay", spec.batch_size, example)
    keys, probabilities, batch = sampler.sample()               # a numpy Transition batch

Each item is one n-step ``Transition`` (or ``transitions_per_item`` of them) folded on the host exactly as
``rlkit.replay.n_step_transition`` folds it on the device (``n_step_fold``), never across an
episode end. An item is stored as one ``uint8`` vector, the bytes of its fields (``ItemCodec``):
one column instead of six halves the writer's and the sampler's per-item cost, and the bytes
round-trip every dtype exactly. A server that is gone (or a table that will not yield) raises
``ReplayUnavailable`` after a bounded wait instead of hanging.
"""

from __future__ import annotations

import collections
import ctypes
import threading
from typing import Any, Sequence

import numpy as np
import rlax  # noqa: F401  (TensorFlow Probability's JAX substrate must load before TensorFlow)

# isort: split
import reverb  # after rlax, on purpose
import tensorflow as tf

from rlkit.types import ExperienceSpec, Transition

# Reverb objects left behind after an error (a dead server, a blocked table). Their C++ destructors
# flush or join without a deadline, so destroying one could block for ever, even at the interpreter's
# exit; they are leaked on purpose instead (an extra reference that is never dropped).
_ABANDONED: list = []


def _abandon(obj: Any) -> None:
    if obj is not None:
        _ABANDONED.append(obj)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))  # survives the interpreter's final collection


class ReplayUnavailable(RuntimeError):
    """The Reverb server did not answer within the timeout (gone, unreachable, or the table is blocked)."""


class ReplayNotReady(ReplayUnavailable):
    """The server answers but the table did not yield samples in time (its rate limiter blocks:
    fewer than ``min_size_to_sample`` items, or sampling is too far ahead of inserts)."""


def _address(client: reverb.Client) -> str:
    return getattr(client, "_server_address", "?")


def _signature(example: Any, leading: tuple[int, ...] = ()) -> Any:
    import jax  # only for tree mapping

    return jax.tree.map(
        lambda x: tf.TensorSpec(leading + np.shape(x), tf.as_dtype(np.asarray(x).dtype)), example
    )


class ItemCodec:
    """Packs one item (a NamedTuple of arrays, e.g. an unbatched ``Transition``) into one ``uint8`` vector.

    ``pack`` casts each field to ``example``'s dtype and concatenates the raw bytes; ``unpack`` turns
    a ``[B, size]`` batch of such vectors back into the NamedTuple with a leading batch axis. Exact
    for every dtype (the bytes are copied, never converted).
    """

    def __init__(self, example: Any):
        self.type = type(example)
        self.fields: list[tuple[str, np.dtype, tuple[int, ...], int, int]] = []
        start = 0
        for name, value in zip(example._fields, example):
            value = np.asarray(value)
            stop = start + value.nbytes
            self.fields.append((name, value.dtype, value.shape, start, stop))
            start = stop
        self.size = start
        self.signature = tf.TensorSpec((self.size,), tf.uint8)

    def pack(self, item: Any) -> np.ndarray:
        parts = [
            np.ascontiguousarray(value, dtype).reshape(-1).view(np.uint8)
            for value, (_, dtype, _, _, _) in zip(item, self.fields)
        ]
        packed = np.concatenate(parts)
        if packed.size != self.size:
            shapes = {name: np.shape(value) for value, (name, *_) in zip(item, self.fields)}
            expected = {name: shape for name, _, shape, _, _ in self.fields}
            raise ValueError(f"ItemCodec.pack: field shapes {shapes} differ from the example's {expected}")
        return packed

    def pack_batch(self, items: Any) -> np.ndarray:
        """``pack`` for a batch: ``items`` has a leading axis ``[N]`` on every field; returns ``[N, size]``."""
        rows = None
        for value, (name, dtype, shape, start, stop) in zip(items, self.fields):
            value = np.ascontiguousarray(value, dtype)
            if rows is None:
                rows = np.empty((value.shape[0] if value.ndim else 0, self.size), np.uint8)
            if value.shape != (rows.shape[0], *shape):
                raise ValueError(
                    f"ItemCodec.pack_batch: field {name!r} has shape {value.shape}, expected "
                    f"{(rows.shape[0], *shape)} (a leading batch axis, then the example's shape)"
                )
            rows[:, start:stop] = value.reshape(rows.shape[0], -1).view(np.uint8)
        return rows

    def unpack(self, rows: np.ndarray) -> Any:
        rows = np.asarray(rows, np.uint8).reshape(-1, self.size)
        batch = rows.shape[0]
        return self.type(*(
            np.ascontiguousarray(rows[:, start:stop]).view(dtype).reshape(batch, *shape)
            for _, dtype, shape, start, stop in self.fields
        ))


def default_samples_per_insert(spec: ExperienceSpec) -> float:
    """The device loop's replay ratio: ``batch_size * updates_per_rollout / steps_per_update``."""
    return spec.batch_size * spec.updates_per_rollout / spec.steps_per_update


def make_tables(
    spec: ExperienceSpec,
    example: Any,
    name: str = "replay",
    prioritized: bool = False,
    samples_per_insert: float | None = None,
    error_buffer: float | None = None,
    priority_exponent: float = 0.6,
    queue_size: int | None = None,
    transitions_per_item: int = 1,
) -> list[reverb.Table]:
    """Reverb tables for an agent's ``ExperienceSpec``; signatures come from ``example``.

    ``kind="transitions"``: one table of ``spec.buffer_size`` single-step items (``example`` is one
    unbatched ``Transition``; items are its ``ItemCodec`` bytes), uniform or (``prioritized``)
    prioritized sampling, FIFO removal, and a ``SampleToInsertRatio`` limiter at
    ``samples_per_insert`` (default the device loop's replay ratio) that blocks sampling until
    ``spec.min_size`` items are in; ``error_buffer`` (default: 10% of ``min_size`` worth of samples,
    at least ``2 * max(1, samples_per_insert)``) is how far sampling and inserting may drift from the
    ratio before one side blocks. ``samples_per_insert=0`` keeps no ratio (a ``MinSize`` limiter:
    inserts never block), e.g. to measure an actor alone.

    ``transitions_per_item`` (K) packs K transitions into each item (``TransitionWriter`` and
    ``Sampler`` with the same K): a K-th of the per-item costs of inserting and sampling, for fast
    batched actors. Sizes are then in items: ``buffer_size / K`` of them, sampling from
    ``min_size / K``; the ratio is unchanged (samples and inserts both count items). A batch then
    holds ``batch_size / K`` groups of K transitions written together (from one step of K
    environments, or K steps of one).

    ``kind="rollout"``: a queue of ``queue_size`` (default 8) rollouts, each
    ``[spec.rollout_length, ...]`` of the unbatched ``example`` (e.g. one step of a ``Trajectory``).
    """
    if spec.kind == "rollout":
        return [
            reverb.Table.queue(
                name, max_size=queue_size or 8, signature=_signature(example, (spec.rollout_length,))
            )
        ]
    if spec.kind != "transitions":
        raise ValueError(f"make_tables: unknown ExperienceSpec.kind {spec.kind!r}; use 'transitions' or 'rollout'")
    if spec.buffer_size < 1:
        raise ValueError(f"make_tables: spec.buffer_size must be >= 1, got {spec.buffer_size}")
    per_item = check_transitions_per_item(spec, transitions_per_item)
    ratio = default_samples_per_insert(spec) if samples_per_insert is None else float(samples_per_insert)
    min_size = max(1, -(-spec.min_size // per_item))
    if ratio < 0:
        raise ValueError(f"make_tables: samples_per_insert must be >= 0, got {ratio}")
    if ratio == 0:
        limiter = reverb.rate_limiters.MinSize(min_size)
    else:
        if error_buffer is None:
            error_buffer = max(0.1 * min_size * ratio, 2.0 * max(1.0, ratio))
        limiter = reverb.rate_limiters.SampleToInsertRatio(
            samples_per_insert=ratio, min_size_to_sample=min_size, error_buffer=error_buffer
        )
    sampler = (
        reverb.selectors.Prioritized(priority_exponent) if prioritized else reverb.selectors.Uniform()
    )
    return [
        reverb.Table(
            name=name,
            sampler=sampler,
            remover=reverb.selectors.Fifo(),
            max_size=max(1, spec.buffer_size // per_item),
            rate_limiter=limiter,
            signature=tf.TensorSpec((per_item * ItemCodec(example).size,), tf.uint8),
        )
    ]


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
    sum, ``discount_t = gamma ** m * discount`` of the last step and its ``obs_t`` / ``last_t``.
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
    )


class TransitionWriter:
    """An adder writing n-step transitions to a Reverb table: ``Actor(adder=...)`` or ``add_batch``.

    Args:
      client: a ``reverb.Client``.
      spec: the agent's ``ExperienceSpec`` (``n_step``, ``gamma``).
      table: the table to insert into.
      flush_every: at most this many items are left unconfirmed (a flush every that many items).
      timeout_ms: how long a flush may wait for the server before ``ReplayUnavailable``.
      example: one ``Transition`` giving each field's dtype and shape (what the table's items hold);
        each step is cast to it. Without it, the first step written sets them.
      transitions_per_item: transitions packed into each item (the table's ``transitions_per_item``).

    The transition for step ``t`` is complete once steps ``t .. t+n-1`` are seen, or at the episode's
    end (then folded over the steps left). It is written at once (one transition per item), or with
    ``transitions_per_item=K`` staged until K are complete and written as one item; up to K - 1
    staged transitions are not in the table yet (nor in its checkpoints) until the item fills.
    Items have priority 1. After an error the writer is broken: every later call raises
    ``ReplayUnavailable`` again. It never closes the Reverb writer on an error path (that hangs while
    the server is down).
    """

    def __init__(
        self, client: reverb.Client, spec: ExperienceSpec, table: str = "replay", flush_every: int = 16,
        timeout_ms: int = 5000, example: Transition | None = None, transitions_per_item: int = 1,
    ):
        if spec.n_step < 1:
            raise ValueError(f"TransitionWriter: spec.n_step must be >= 1, got {spec.n_step}")
        self.client, self.table = client, table
        self.n_step, self.gamma = spec.n_step, spec.gamma
        self.flush_every, self.timeout_ms = max(1, flush_every), timeout_ms
        self.transitions_per_item = check_transitions_per_item(spec, transitions_per_item)
        self.codec = None if example is None else ItemCodec(example)
        self._windows: dict[int, collections.deque[Transition]] = collections.defaultdict(collections.deque)
        self._staged: np.ndarray | None = None  # [K, codec.size] rows of the item being filled
        self._num_staged = 0
        self._since_flush = 0
        self._error: ReplayUnavailable | None = None
        self._writer = client.trajectory_writer(num_keep_alive_refs=1)
        self.items_written = 0
        self.transitions_written = 0

    def __call__(self, transition: Transition) -> None:
        """Add one environment's step (an unbatched ``Transition``)."""
        self._check()
        self._add(0, transition)

    def add_batch(self, transitions: Transition, env_ids: Sequence[int] | None = None) -> None:
        """Add one step of ``N`` environments side by side (every field has a leading ``[N]`` axis).

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
        for i, env in enumerate(ids):
            self._add(env, Transition(*(field[i] for field in transitions)))

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
            self.codec = ItemCodec(Transition(*(np.asarray(x) for x in item)))
        return self.codec.pack(item)[None]

    def _pack_batch(self, items: Transition) -> np.ndarray:
        if self.codec is None:
            self.codec = ItemCodec(Transition(*(np.asarray(x)[0] for x in items)))
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

    def _write(self, packed: np.ndarray) -> None:
        try:
            self._writer.append(packed)
            self._writer.create_item(self.table, priority=1.0, trajectory=self._writer.history[-1])
        except Exception as error:  # noqa: BLE001
            self._fail(error, "writing")
        self.items_written += 1
        self.transitions_written += self.transitions_per_item
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self._flush(self.flush_every)

    def _flush(self, block_until_num_items: int) -> None:
        try:
            self._writer.flush(block_until_num_items=block_until_num_items, timeout_ms=self.timeout_ms)
        except Exception as error:  # noqa: BLE001  (DeadlineExceededError, or a gRPC error)
            self._fail(error, "flushing")
        self._since_flush = 0

    def flush(self) -> None:
        """Wait until the server confirmed every item written so far (``ReplayUnavailable`` on timeout)."""
        self._check()
        self._flush(0)

    def close(self) -> None:
        """Flush and close the Reverb writer (only when healthy; a broken writer is left alone)."""
        if self._error is None:
            self.flush()
            self._writer.close()

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, error: Exception, doing: str):
        # Closing (also from __del__) hangs while the server is down: disarm close and keep the writer.
        self._writer.close = lambda *args, **kwargs: None
        _abandon(self._writer)
        self._error = ReplayUnavailable(
            f"Reverb server {_address(self.client)} did not confirm items in table {self.table!r} within "
            f"{self.timeout_ms} ms while {doing} ({type(error).__name__}: {error}); is the server running? "
            "(A live server also stalls inserts while the table's rate limiter waits for sampling.)"
        )
        raise self._error from error


# The fast numpy sampling path is Reverb's private pybind sampler (what ``Client.sample`` wraps, one
# sample in flight there); REVERB_NOTES.md measured it 4-5x faster. Everything private is in this
# one function, so a Reverb change breaks here (tests/reverb_world/test_reverb_replay.py tests it).
def _new_sampler(client: reverb.Client, table: str, max_in_flight: int):
    """A private ``reverb.pybind.Sampler`` over ``table``, unlimited samples, ``max_in_flight`` prefetched.

    Its ``GetNextTrajectory()`` returns a list of arrays: ``NUM_INFO_TENSORS`` info arrays (key,
    probability, table_size, priority, times_sampled) then the item's flattened data.
    """
    sampler = client._client.NewSampler(table, -1, max_in_flight)
    return sampler, reverb.pybind.Sampler.NUM_INFO_TENSORS


class Sampler:
    """Batches of ``Transition`` (numpy) from a Reverb table of ``ItemCodec`` items, with a bounded wait.

    Args:
      client: a ``reverb.Client`` or a server address (``"127.0.0.1:PORT"``).
      table: the table's name.
      batch_size: items per ``sample()``.
      example: one unbatched ``Transition`` (the table's item structure and dtypes).
      timeout_s: how long ``sample()`` (and ``update_priorities``) may wait before raising.
      max_in_flight: items prefetched (default two batches' worth); they count as sampled for the
        rate limiter.
      transitions_per_item: transitions in each item (the table's ``transitions_per_item``, K): a batch
        is ``batch_size / K`` items, and ``sample``'s keys and probabilities are per item.
    """

    def __init__(
        self, client: reverb.Client | str, table: str, batch_size: int, example: Transition,
        timeout_s: float = 10.0, max_in_flight: int | None = None, transitions_per_item: int = 1,
    ):
        if transitions_per_item < 1 or batch_size % transitions_per_item:
            raise ValueError(
                f"Sampler: transitions_per_item={transitions_per_item} must divide batch_size={batch_size} "
                "(and be >= 1)"
            )
        self.client = reverb.Client(client) if isinstance(client, str) else client
        self.table, self.batch_size, self.timeout_s = table, batch_size, timeout_s
        self.transitions_per_item = transitions_per_item
        self.items_per_batch = batch_size // transitions_per_item
        self.max_in_flight = max_in_flight or 2 * self.items_per_batch
        self.codec = ItemCodec(example)
        self._sampler = None
        self.samples = 0  # transitions returned so far

    def _fetch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._sampler is None:
            self._sampler, self._num_info = _new_sampler(self.client, self.table, self.max_in_flight)
        next_sample, data = self._sampler.GetNextTrajectory, self._num_info
        items = self.items_per_batch
        keys = np.empty(items, np.uint64)
        probabilities = np.empty(items, np.float64)
        rows = np.empty((items, self.transitions_per_item * self.codec.size), np.uint8)
        for i in range(items):
            sample = next_sample()
            keys[i], probabilities[i], rows[i] = sample[0], sample[1], sample[data]
        return keys, probabilities, rows

    def _call(self, fn, timeout: float, name: str) -> Any:
        """``fn()`` in a daemon thread, so a call stuck in C++ (a dead server) never blocks us or exit."""
        result: dict = {}

        def run():
            try:
                result["value"] = fn()
            except Exception as error:  # noqa: BLE001
                result["error"] = error

        thread = threading.Thread(target=run, name=f"rlkit-reverb-{name}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            return _TIMED_OUT
        if "error" in result:
            raise result["error"]
        return result["value"]

    def sample(self, timeout_s: float | None = None) -> tuple[np.ndarray, np.ndarray, Transition]:
        """``(keys [I] uint64, probabilities [I] float64, Transition batch [B, ...])``, ``I`` items of
        ``B / I`` transitions each (``I == B`` with one transition per item).

        Raises ``ReplayNotReady`` when the server answers but the table yields no batch within the
        timeout (its rate limiter: fewer than ``min_size`` items), ``ReplayUnavailable`` when the
        server does not answer.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            result = self._call(self._fetch, timeout, "sampler")
        except Exception as error:  # noqa: BLE001
            self._sampler = None
            raise ReplayUnavailable(
                f"sampling table {self.table!r} from Reverb server {_address(self.client)} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
        if result is _TIMED_OUT:
            _abandon(self._sampler)  # stuck in C++: never destroy it under the thread's feet
            self._sampler = None
            self._raise_timeout(timeout)
        keys, probabilities, rows = result
        self.samples += self.batch_size
        return keys, probabilities, self.codec.unpack(rows)

    def _raise_timeout(self, timeout: float):
        try:
            info = self.client.server_info(timeout=2)
        except Exception as error:  # noqa: BLE001
            raise ReplayUnavailable(
                f"Reverb server {_address(self.client)} gave no batch from table {self.table!r} within "
                f"{timeout} s and does not answer ({type(error).__name__}); is the server running?"
            ) from None
        table = info.get(self.table)
        size = "unknown" if table is None else table.current_size
        raise ReplayNotReady(
            f"table {self.table!r} on {_address(self.client)} gave no batch of {self.batch_size} within "
            f"{timeout} s (it holds {size} items; its rate limiter blocks sampling until min_size items "
            "are in, or while sampling is too far ahead of inserting)"
        )

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray, timeout_s: float | None = None) -> None:
        """Set the priorities of sampled items (prioritized tables); ``ReplayUnavailable`` after ``timeout_s``.

        Samples already prefetched (up to ``max_in_flight``) were drawn with the old priorities.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        updates = {int(k): float(p) for k, p in zip(np.asarray(keys), np.asarray(priorities))}
        try:
            result = self._call(lambda: self.client.mutate_priorities(self.table, updates=updates), timeout,
                                "priorities")
        except Exception as error:  # noqa: BLE001
            raise ReplayUnavailable(
                f"updating priorities in table {self.table!r} on {_address(self.client)} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
        if result is _TIMED_OUT:
            raise ReplayUnavailable(
                f"updating priorities in table {self.table!r} on {_address(self.client)} did not finish within "
                f"{timeout} s; is the server running?"
            )


_TIMED_OUT = object()
