"""rlkit.networks: the orthogonal draw (flax's, without jaxlib's batched CPU QR under vmap) and the torsos."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlkit import torsos
from rlkit.agents import dqn, ppo
from rlkit.networks import orthogonal
from rlkit.types import EnvSpec


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


# Image torsos ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel, stride, padding, size", [(3, 1, "VALID", 10), (8, 4, "VALID", 40), (3, 1, "SAME", 9),
                                                           (4, 2, "SAME", 11)])
def test_conv_as_patches_matches_xlas_convolution(kernel, stride, padding, size):
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 5))
    expected = jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = jax.jit(lambda x, w: torsos._patches(torsos._padded(x, kernel, stride) if padding == "SAME" else x,
                                                 kernel, stride) @ w.reshape(-1, 5))(x, w)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("torso, image, features", [("minatar_cnn", (10, 10, 4), 8 * 8 * 16),
                                                    ("nature_cnn", (36, 36, 4), 64),
                                                    ("impala_resnet", (10, 10, 6), 2 * 2 * 32)])
def test_image_torsos_flatten_one_observation_behind_any_batch_axes(torso, image, features):
    encoder = torsos.Encoder(torso, observation_ndim=3)
    params = jax.jit(encoder.init)(jax.random.key(0), jnp.zeros((1, *image)))
    obs = jax.random.uniform(jax.random.key(1), (3, 2, *image))  # [time, batch, H, W, C]
    apply = jax.jit(encoder.apply)
    out = apply(params, obs)
    assert out.shape == (3, 2, features)
    np.testing.assert_allclose(out[1, 0], apply(params, obs[1, 0]), rtol=1e-5, atol=1e-5)


def test_mlp_torso_flattens_images_and_keeps_vectors():
    image = jnp.arange(2 * 10 * 10 * 4, dtype=jnp.float32).reshape(2, 10, 10, 4)
    np.testing.assert_array_equal(torsos.Encoder("mlp", 3).apply({}, image), image.reshape(2, 400))
    vector = jnp.ones((5, 3, 4))
    np.testing.assert_array_equal(torsos.Encoder("mlp", 1).apply({}, vector), vector)


def test_a_torso_that_cannot_read_the_observations_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"torso: 'resnet' is not one of \['mlp', 'minatar_cnn'"):
        ppo.Config(torso="resnet")
    spec = EnvSpec((4,), "discrete", 2)
    with pytest.raises(ValueError, match=r"torso: 'minatar_cnn' reads images .* shape \(4,\); use torso 'mlp'"):
        ppo.make(ppo.Config(torso="minatar_cnn"), spec)
    with pytest.raises(ValueError, match=r"torso: 'nature_cnn' reads images .* at least 36x36"):
        dqn.make(dqn.Config(torso="nature_cnn"), EnvSpec((10, 10, 4), "discrete", 3))
