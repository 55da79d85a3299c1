"""One run split over devices: the few reductions an agent makes across the whole batch.

Under data parallelism (``make_trainer(..., data_parallel=N)``, ``rlkit train --split envs``)
every device steps its share of a run's environments and computes gradients on its share of
the batch; the gradients are averaged over the devices before the optimizer sees them, so
the parameters stay identical everywhere. An agent takes part by putting
``average_gradients()`` first in its optimizer and by computing batch statistics (advantage
or observation normalization) with ``moments`` and ``count``. On one device, or outside the
trainer, all three are the identity, so the agent's code is the same either way.

The trainer marks the traced code with ``over_devices(DATA_AXIS)``; it is a trace-time
context (nothing is stored in any array), read while ``jax.jit`` traces the update.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import optax

DATA_AXIS = "data"  # the mesh axis one run's environments are split over
_axis: contextvars.ContextVar[str | None] = contextvars.ContextVar("rlkit_data_axis", default=None)


@contextlib.contextmanager
def over_devices(axis_name: str = DATA_AXIS) -> Iterator[None]:
    """Trace the enclosed code as one device's share of a run split over ``axis_name``."""
    token = _axis.set(axis_name)
    try:
        yield
    finally:
        _axis.reset(token)


def axis() -> str | None:
    """The axis the run being traced is split over, or None for a run on one device."""
    return _axis.get()


def mean(x: jax.Array) -> jax.Array:
    """``x`` averaged over the devices of a split run (the identity on one device)."""
    name = _axis.get()
    return x if name is None else jax.lax.pmean(x, name)


def count(n: int) -> int | jax.Array:
    """``n`` items per device, summed over the devices of a split run."""
    name = _axis.get()
    return n if name is None else jax.lax.psum(n, name)


def moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and variance of the batch ``x [B, ...]`` over its first axis, across the devices of a
    split run (each holds ``B`` items); ``jnp.mean`` and ``jnp.var`` on one device."""
    name = _axis.get()
    if name is None:
        return jnp.mean(x, 0), jnp.var(x, 0)
    batch_mean = jax.lax.pmean(jnp.mean(x, 0), name)
    return batch_mean, jax.lax.pmean(jnp.mean((x - batch_mean) ** 2, 0), name)


def device_key(key: jax.Array) -> jax.Array:
    """A key of this device's own in a split run (environments and actions differ per device);
    the key itself on one device, so single-device runs are unchanged."""
    name = _axis.get()
    return key if name is None else jax.random.fold_in(key, jax.lax.axis_index(name))


def average_gradients() -> optax.GradientTransformation:
    """Average the updates over the devices of a split run; the identity on one device.

    Put it first in an optimizer chain, so clipping and Adam see the whole batch's gradient.
    """

    def update(updates, state, params=None):
        del params
        return mean(updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
