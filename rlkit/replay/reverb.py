"""Replay through Reverb (host): tables, an n-step transition writer for ``Actor(adder=...)``, a sampler.

Reverb world only (dm-reverb + TensorFlow); the core never imports this module::

    tables = make_tables(spec, example)                         # on the learner / server side
    server = reverb.Server(tables, port=None)
    client = reverb.Client(f"127.0.0.1:{server.port}")
    actor = Actor(agent, state, adder=TransitionWriter(client, spec))
    sampler = Sampler(client, "replay", spec.batch_size, example)
    keys, probabilities, batch = sampler.sample()               # a numpy Transition batch

Each item is one n-step ``Transition`` folded on the host exactly as
``rlkit.replay.n_step_transition`` folds it on the device (``n_step_fold``), never across an
episode end. A server that is gone (or a table that will not yield) raises ``ReplayUnavailable``
after a bounded wait instead of hanging.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Sequence

import numpy as np
import rlax  # noqa: F401  (TensorFlow Probability's JAX substrate must load before TensorFlow)

# isort: split
import reverb  # after rlax, on purpose
import tensorflow as tf

from rlkit.types import ExperienceSpec, Transition

# Reverb objects left behind after a dead server: destroying them could block, so they live on.
_ABANDONED: list = []


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
) -> list[reverb.Table]:
    """Reverb tables for an agent's ``ExperienceSpec``; signatures come from ``example``.

    ``kind="transitions"``: one table of ``spec.buffer_size`` single-step items (``example`` is one
    unbatched ``Transition``), uniform or (``prioritized``) prioritized sampling, FIFO removal, and a
    ``SampleToInsertRatio`` limiter at ``samples_per_insert`` (default the device loop's replay ratio)
    that blocks sampling until ``spec.min_size`` items are in; ``error_buffer`` (default: 10% of
    ``min_size`` worth of samples, at least ``2 * max(1, samples_per_insert)``) is how far sampling
    and inserting may drift from the ratio before one side blocks.

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
    ratio = default_samples_per_insert(spec) if samples_per_insert is None else float(samples_per_insert)
    min_size = max(1, spec.min_size)
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
            max_size=spec.buffer_size,
            rate_limiter=limiter,
            signature=_signature(example),
        )
    ]


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
    """An ``Actor`` adder writing one n-step transition item per environment step to a Reverb table.

    Args:
      client: a ``reverb.Client``.
      spec: the agent's ``ExperienceSpec`` (``n_step``, ``gamma``).
      table: the table to insert into.
      flush_every: at most this many items are left unconfirmed (a flush every that many items).
      timeout_ms: how long a flush may wait for the server before ``ReplayUnavailable``.
      example: if given, each field is cast to its dtype (so it matches the table's signature).

    The item for step ``t`` is written once steps ``t .. t+n-1`` are seen, or at the episode's end
    (then folded over the steps left). After an error the writer is broken: every later call raises
    ``ReplayUnavailable`` again. It never closes the Reverb writer on an error path (that hangs
    while the server is down).
    """

    def __init__(
        self, client: reverb.Client, spec: ExperienceSpec, table: str = "replay", flush_every: int = 16,
        timeout_ms: int = 5000, example: Transition | None = None,
    ):
        if spec.n_step < 1:
            raise ValueError(f"TransitionWriter: spec.n_step must be >= 1, got {spec.n_step}")
        self.client, self.table = client, table
        self.n_step, self.gamma = spec.n_step, spec.gamma
        self.flush_every, self.timeout_ms = max(1, flush_every), timeout_ms
        self._dtypes = None if example is None else [np.asarray(x).dtype for x in example]
        self._window: collections.deque[Transition] = collections.deque()
        self._since_flush = 0
        self._error: ReplayUnavailable | None = None
        self._writer = client.trajectory_writer(num_keep_alive_refs=1)
        self.items_written = 0

    def __call__(self, transition: Transition) -> None:
        self._check()
        if self._dtypes is not None:
            transition = Transition(*(np.asarray(x, d) for x, d in zip(transition, self._dtypes)))
        self._window.append(transition)
        if bool(transition.last_t):
            while self._window:  # the episode's last (shorter) n-step items
                self._write(n_step_fold(list(self._window), self.gamma))
                self._window.popleft()
        elif len(self._window) == self.n_step:
            self._write(n_step_fold(list(self._window), self.gamma))
            self._window.popleft()

    def _write(self, item: Transition) -> None:
        try:
            self._writer.append(item._asdict())
            history = self._writer.history
            self._writer.create_item(
                self.table, priority=1.0, trajectory=Transition(*(history[f][-1] for f in Transition._fields))
            )
        except Exception as error:  # noqa: BLE001
            self._fail(error, "writing")
        self.items_written += 1
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
        _ABANDONED.append(self._writer)
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
    """Batches of ``Transition`` (numpy) from a Reverb table, with a bounded wait.

    Args:
      client: a ``reverb.Client`` or a server address (``"127.0.0.1:PORT"``).
      table: the table's name.
      batch_size: items per ``sample()``.
      example: one unbatched ``Transition`` (the table's item structure).
      timeout_s: how long ``sample()`` may wait for a whole batch before raising.
      max_in_flight: samples prefetched (default ``batch_size``); they count as sampled for the
        rate limiter.
    """

    def __init__(
        self, client: reverb.Client | str, table: str, batch_size: int, example: Transition,
        timeout_s: float = 10.0, max_in_flight: int | None = None,
    ):
        self.client = reverb.Client(client) if isinstance(client, str) else client
        self.table, self.batch_size, self.timeout_s = table, batch_size, timeout_s
        self.max_in_flight = max_in_flight or batch_size
        self._treedef = type(example)
        self._sampler = None

    def _fetch(self) -> list[list[np.ndarray]]:
        if self._sampler is None:
            self._sampler, self._num_info = _new_sampler(self.client, self.table, self.max_in_flight)
        return [self._sampler.GetNextTrajectory() for _ in range(self.batch_size)]

    def sample(self, timeout_s: float | None = None) -> tuple[np.ndarray, np.ndarray, Transition]:
        """``(keys [B] uint64, probabilities [B] float64, Transition batch [B, ...])``.

        Raises ``ReplayNotReady`` when the server answers but the table yields no batch within the
        timeout (its rate limiter: fewer than ``min_size`` items), ``ReplayUnavailable`` when the
        server does not answer.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        # A daemon thread, so a call stuck in C++ (a dead server) never blocks the interpreter's exit.
        result: dict = {}

        def fetch():
            try:
                result["samples"] = self._fetch()
            except Exception as error:  # noqa: BLE001
                result["error"] = error

        thread = threading.Thread(target=fetch, name="rlkit-reverb-sampler", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            _ABANDONED.append(self._sampler)  # stuck in C++: never destroy it under the thread's feet
            self._sampler = None
            self._raise_timeout(timeout)
        if "error" in result:
            self._sampler = None
            error = result["error"]
            raise ReplayUnavailable(
                f"sampling table {self.table!r} from Reverb server {_address(self.client)} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
        samples = result["samples"]
        n = self._num_info
        columns = list(zip(*samples))
        keys = np.asarray([int(np.asarray(k)) for k in columns[0]], np.uint64)
        probabilities = np.asarray(columns[1], np.float64).reshape(-1)
        batch = self._treedef(*(np.stack([np.asarray(x) for x in col]) for col in columns[n:]))
        return keys, probabilities, batch

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

    def update_priorities(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        """Set the priorities of sampled items (prioritized tables).

        Samples already prefetched (up to ``max_in_flight``) were drawn with the old priorities.
        """
        updates = {int(k): float(p) for k, p in zip(np.asarray(keys), np.asarray(priorities))}
        try:
            self.client.mutate_priorities(self.table, updates=updates)
        except Exception as error:  # noqa: BLE001
            raise ReplayUnavailable(
                f"updating priorities in table {self.table!r} on {_address(self.client)} failed: "
                f"{type(error).__name__}: {error}"
            ) from error
