"""What every kind of Reverb replay shares: items as ``uint8`` vectors, a writer and a sampler that never hang.

Reverb world only (``rlkit.replay.reverb`` is the public module; it re-exports these names). An item is
one ``uint8`` vector, the bytes of one or more unbatched steps (``ItemCodec``): one column instead of one
per field halves the writer's and the sampler's per-item cost, and the bytes round-trip every dtype
exactly. A server that is gone (or a table that will not yield) raises ``ReplayUnavailable`` after a
bounded wait instead of hanging.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import jax
import numpy as np
import rlax  # noqa: F401  (TensorFlow Probability's JAX substrate must load before TensorFlow)

# isort: split
import reverb  # after rlax, on purpose
import tensorflow as tf

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


class ItemCodec:
    """Packs one unbatched item (any pytree of arrays: a ``Transition``, a ``Trajectory`` step, with nested
    ``extras``) into one ``uint8`` vector.

    The leaves come in ``jax.tree``'s fixed order (NamedTuple fields in order, dict keys sorted). ``pack``
    casts each leaf to ``example``'s dtype and concatenates the raw bytes; ``unpack`` turns ``[..., size]``
    rows back into the pytree with leading axes. Exact for every dtype (the bytes are copied, never
    converted).
    """

    def __init__(self, example: Any):
        leaves, self.treedef = jax.tree.flatten(example)
        self.leaves: list[tuple[np.dtype, tuple[int, ...], int, int]] = []  # dtype, shape, byte range
        start = 0
        for value in leaves:
            value = np.asarray(value)
            self.leaves.append((value.dtype, value.shape, start, start + value.nbytes))
            start += value.nbytes
        self.size = start

    def _flatten(self, item: Any, name: str) -> list:
        leaves, treedef = jax.tree.flatten(item)
        if treedef != self.treedef:
            raise ValueError(f"ItemCodec.{name}: the item's structure {treedef} differs from the example's {self.treedef}")
        return leaves

    def pack(self, item: Any) -> np.ndarray:
        """One unbatched item -> ``[size]`` bytes."""
        leaves = self._flatten(item, "pack")
        packed = np.concatenate([
            np.ascontiguousarray(value, dtype).reshape(-1).view(np.uint8)
            for value, (dtype, *_) in zip(leaves, self.leaves)
        ]) if leaves else np.empty(0, np.uint8)
        if packed.size != self.size:
            shapes = [np.shape(value) for value in leaves]
            raise ValueError(f"ItemCodec.pack: leaf shapes {shapes} differ from the example's "
                             f"{[shape for _, shape, _, _ in self.leaves]}")
        return packed

    def pack_batch(self, items: Any) -> np.ndarray:
        """``pack`` for a batch: every leaf of ``items`` has a leading axis ``[N]``; returns ``[N, size]``."""
        leaves = self._flatten(items, "pack_batch")
        rows = None
        for value, (dtype, shape, start, stop) in zip(leaves, self.leaves):
            value = np.ascontiguousarray(value, dtype)
            if rows is None:
                rows = np.empty((value.shape[0] if value.ndim else 0, self.size), np.uint8)
            if value.shape != (rows.shape[0], *shape):
                raise ValueError(
                    f"ItemCodec.pack_batch: a leaf has shape {value.shape}, expected {(rows.shape[0], *shape)} "
                    "(a leading batch axis, then the example's shape)"
                )
            rows[:, start:stop] = value.reshape(rows.shape[0], -1).view(np.uint8)
        return rows

    def unpack(self, rows: np.ndarray, leading: tuple[int, ...] | None = None) -> Any:
        """Rows of packed items (``[..., size]``, or ``[..., k * size]`` for k items a row) -> the pytree with
        leading axes ``leading`` (default one axis over all the items)."""
        rows = np.asarray(rows, np.uint8).reshape(-1, self.size)
        leading = (rows.shape[0],) if leading is None else tuple(leading)
        return jax.tree.unflatten(self.treedef, [
            np.ascontiguousarray(rows[:, start:stop]).view(dtype).reshape(*leading, *shape)
            for dtype, shape, start, stop in self.leaves
        ])


def selector(prioritized: bool, priority_exponent: float) -> Any:
    """Reverb's sampling selector: proportional to ``priority ** priority_exponent``, or uniform."""
    if prioritized:
        return reverb.selectors.Prioritized(priority_exponent)
    return reverb.selectors.Uniform()


def rate_limiter(samples_per_insert: float, min_items: int, error_buffer: float | None = None) -> Any:
    """A ``SampleToInsertRatio`` limiter that blocks sampling below ``min_items`` (``MinSize`` at ratio 0).

    ``error_buffer`` (default: 10% of ``min_items`` worth of samples, at least ``2 * max(1, ratio)``) is how
    far sampling and inserting may drift from the ratio before one side blocks.
    """
    if samples_per_insert < 0:
        raise ValueError(f"samples_per_insert must be >= 0, got {samples_per_insert}")
    if samples_per_insert == 0:
        return reverb.rate_limiters.MinSize(min_items)
    if error_buffer is None:
        error_buffer = max(0.1 * min_items * samples_per_insert, 2.0 * max(1.0, samples_per_insert))
    return reverb.rate_limiters.SampleToInsertRatio(
        samples_per_insert=samples_per_insert, min_size_to_sample=min_items, error_buffer=error_buffer
    )


def packed_signature(codec: ItemCodec, steps_per_item: int) -> tf.TensorSpec:
    """The signature of items holding ``steps_per_item`` packed steps."""
    return tf.TensorSpec((steps_per_item * codec.size,), tf.uint8)


class ItemWriter:
    """Writes packed items to one table with a bounded wait; the base of the transition and sequence writers.

    At most ``flush_every`` items are left unconfirmed (a flush every that many); a flush waits
    ``timeout_ms`` at most, then raises ``ReplayUnavailable``. New items get ``priority`` (1 by default; a
    learner writing priorities back raises it to the largest it wrote, so new items are drawn soon). After
    an error the writer is broken: every later call raises ``ReplayUnavailable`` again. It never closes the
    Reverb writer on an error path (that hangs while the server is down).
    """

    def __init__(self, client: reverb.Client, table: str, flush_every: int, timeout_ms: int):
        self.client, self.table = client, table
        self.flush_every, self.timeout_ms = max(1, flush_every), timeout_ms
        self.priority = 1.0
        self.items_written = 0
        self._since_flush = 0
        self._error: ReplayUnavailable | None = None
        self._writer = client.trajectory_writer(num_keep_alive_refs=1)

    def _write(self, packed: np.ndarray) -> None:
        try:
            self._writer.append(packed)
            self._writer.create_item(self.table, priority=self.priority, trajectory=self._writer.history[-1])
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
      batch_size: transitions per ``sample()``.
      example: one unbatched ``Transition`` (the table's item structure and dtypes).
      timeout_s: how long ``sample()`` (and ``update_priorities``) may wait before raising.
      max_in_flight: items prefetched (default two batches' worth); they count as sampled for the
        rate limiter (and a queue hands them over for good).
      transitions_per_item: transitions in each item (the table's ``transitions_per_item``, K): a batch
        is ``batch_size / K`` items, and ``sample``'s keys and probabilities are per item.
    """

    def __init__(
        self, client: reverb.Client | str, table: str, batch_size: int, example: Any,
        timeout_s: float = 10.0, max_in_flight: int | None = None, transitions_per_item: int = 1,
    ):
        if transitions_per_item < 1 or batch_size % transitions_per_item:
            raise ValueError(
                f"Sampler: transitions_per_item={transitions_per_item} must divide batch_size={batch_size} "
                "(and be >= 1)"
            )
        self._setup(client, table, batch_size, example, timeout_s, max_in_flight,
                    batch_size // transitions_per_item, transitions_per_item)
        self.transitions_per_item = transitions_per_item

    def _setup(self, client, table, batch_size, example, timeout_s, max_in_flight, items_per_batch, steps_per_item):
        self.client = reverb.Client(client) if isinstance(client, str) else client
        self.table, self.batch_size, self.timeout_s = table, batch_size, timeout_s
        self.items_per_batch, self.steps_per_item = items_per_batch, steps_per_item
        self.max_in_flight = max_in_flight or 2 * items_per_batch
        self.codec = ItemCodec(example)
        self._sampler = None

    def _assemble(self, rows: np.ndarray) -> Any:
        """``[items, steps_per_item * size]`` rows -> the batch ``sample`` returns."""
        return self.codec.unpack(rows)

    def _fetch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._sampler is None:
            self._sampler, self._num_info = _new_sampler(self.client, self.table, self.max_in_flight)
        next_sample, data = self._sampler.GetNextTrajectory, self._num_info
        items = self.items_per_batch
        keys = np.empty(items, np.uint64)
        probabilities = np.empty(items, np.float64)
        rows = np.empty((items, self.steps_per_item * self.codec.size), np.uint8)
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

    def sample(self, timeout_s: float | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
        """``(keys [I] uint64, probabilities [I] float64, batch)``, ``I`` items of ``B / I`` transitions each
        (``I == B`` with one transition per item); the batch is a numpy ``Transition [B, ...]``.

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
        return keys, probabilities, self._assemble(rows)

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
