"""rlkit.networks.orthogonal: flax's orthogonal draw, without jaxlib's batched CPU QR under vmap."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit.networks import orthogonal


@pytest.mark.once  # the same in both worlds: runs in the core world only
def test_orthogonal_draws_what_flax_draws():
    key = jax.random.key(3)
    for shape in [(4, 64), (64, 64), (64, 2), (3, 5, 7)]:
        ours, flax = orthogonal(1.4)(key, shape), nn.initializers.orthogonal(1.4)(key, shape)
        assert ours.shape == shape
        np.testing.assert_array_equal(ours, flax)
    q = orthogonal(1.0)(key, (64, 16))
    np.testing.assert_allclose(q.T @ q, np.eye(16), atol=1e-5)


def test_vmapped_orthogonal_makes_one_lapack_call_per_matrix():
    keys = jax.random.split(jax.random.key(0), 4)
    vmapped = jax.jit(jax.vmap(jax.vmap(lambda k: orthogonal(1.0)(k, (8, 8)))))
    batch = jnp.stack([keys, keys[::-1]])
    # A batched QR (num_batch_dims > 0) splits over XLA's CPU thread pool and can deadlock it.
    assert 'num_batch_dims = "0"' in vmapped.lower(batch).as_text()
    assert 'num_batch_dims = "1"' not in vmapped.lower(batch).as_text()
    out = vmapped(batch)
    np.testing.assert_array_equal(out[1, 0], orthogonal(1.0)(keys[3], (8, 8)))
