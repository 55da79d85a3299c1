"""Orthogonal initialization (Saxe et al., 2014) that is safe to vmap over seeds on a CPU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


@jax.custom_batching.custom_vmap
def _orthonormal(matrix: jax.Array) -> jax.Array:
    """The Q of ``matrix``'s QR decomposition, signs fixed so that R's diagonal is positive."""
    q, r = jnp.linalg.qr(matrix)
    return q * jnp.sign(jnp.diagonal(r))


@_orthonormal.def_vmap
def _orthonormal_vmap(axis_size, in_batched, matrices):
    # One LAPACK call per matrix, never a batched one: jaxlib's batched CPU QR splits the batch over
    # XLA's thread pool and waits for it, which deadlocked when two such QRs ran at once on a 2-core
    # machine (vmapped seeds initializing two layers side by side).
    return jax.lax.map(_orthonormal, matrices), True


def orthogonal(scale: float = 1.0):
    """Orthogonal initialization (Saxe et al., 2014) for ``[..., out]`` kernels, as flax's
    ``nn.initializers.orthogonal`` draws it, but safe to vmap over seeds on a CPU (see ``_orthonormal``)."""

    def init(key, shape, dtype=jnp.float32):
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = jax.random.normal(key, (cols, rows) if rows < cols else (rows, cols), dtype)
        q = _orthonormal(a)
        return scale * jnp.reshape(q.T if rows < cols else q, shape)

    return init
