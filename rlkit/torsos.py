"""Observation encoders: the image torsos (MinAtar CNN, Nature CNN, IMPALA ResNet) and ``Encoder``.

Environments keep their observation's shape; a network's torso decides what to do with it. ``mlp``
only flattens (the network's MLP follows); an image torso convolves ``[height, width, channels]``
first. ``Conv`` runs as patches times the kernel on a CPU, where XLA's convolution inside the
training loop's ``lax.scan`` is slow.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rlkit.initializers import orthogonal


def _padded(x: jax.Array, kernel: int, stride: int) -> jax.Array:
    """``x [N, H, W, C]`` padded as XLA pads a "SAME" convolution (output size ``ceil(size / stride)``)."""
    pads = []
    for size in x.shape[1:3]:
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return jnp.pad(x, ((0, 0), *pads, (0, 0)))


def _patches(x: jax.Array, kernel: int, stride: int) -> jax.Array:
    """The ``kernel x kernel`` patches of ``x [N, H, W, C]`` at ``stride``: ``[N, H', W', kernel * kernel * C]``,
    ordered as a ``[kernel, kernel, C, out]`` kernel flattens."""
    rows, cols = (x.shape[1] - kernel) // stride + 1, (x.shape[2] - kernel) // stride + 1
    return jnp.concatenate([
        x[:, i:i + stride * (rows - 1) + 1:stride, j:j + stride * (cols - 1) + 1:stride, :]
        for i in range(kernel) for j in range(kernel)
    ], axis=-1)


class Conv(nn.Module):
    """A 2-D convolution of ``x [N, height, width, channels]``: kernel ``[k, k, channels, features]``
    (orthogonal initialization), bias, ``VALID`` or ``SAME`` padding.

    On a CPU it runs as patches times the flattened kernel: XLA's CPU convolution inside a
    ``lax.scan`` (the training loop) was about 15x slower than this matmul (0.37 s against 0.025 s
    for one gradient of the MinAtar torso on 2,048 observations). Elsewhere ``lax.conv_general_dilated``.
    """

    features: int
    kernel: int
    stride: int = 1
    padding: str = "VALID"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel, self.kernel, x.shape[-1], self.features)
        kernel = self.param("kernel", orthogonal(np.sqrt(2)), shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if jax.default_backend() != "cpu":
            strides = (self.stride, self.stride)
            layout = ("NHWC", "HWIO", "NHWC")
            y = jax.lax.conv_general_dilated(x, kernel, strides, self.padding, dimension_numbers=layout)
        else:
            x = _padded(x, self.kernel, self.stride) if self.padding == "SAME" else x
            y = _patches(x, self.kernel, self.stride) @ kernel.reshape(-1, self.features)
        return y + bias


def _minatar_cnn(x: jax.Array) -> jax.Array:
    """Young & Tian, "MinAtar", 2019 (https://arxiv.org/abs/1903.03176): one 3x3 convolution, 16 channels."""
    return nn.relu(Conv(16, 3)(x))


def _nature_cnn(x: jax.Array) -> jax.Array:
    """Mnih et al., "Human-level control through deep RL", 2015: 8x8/4 (32), 4x4/2 (64), 3x3/1 (64)."""
    for features, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
        x = nn.relu(Conv(features, kernel, stride)(x))
    return x


def _impala_resnet(x: jax.Array) -> jax.Array:
    """Espeholt et al., "IMPALA", 2018 (https://arxiv.org/abs/1802.01561): three stacks (16, 32, 32 channels)
    of a 3x3 convolution, a 3x3/2 max-pool and two residual blocks."""
    for features in (16, 32, 32):
        x = Conv(features, 3, padding="SAME")(x)
        x = nn.max_pool(x, (3, 3), (2, 2), "SAME")
        for _ in range(2):
            h = Conv(features, 3, padding="SAME")(nn.relu(x))
            x = x + Conv(features, 3, padding="SAME")(nn.relu(h))
    return nn.relu(x)


IMAGE_TORSOS = {"minatar_cnn": _minatar_cnn, "nature_cnn": _nature_cnn, "impala_resnet": _impala_resnet}
TORSOS = ("mlp", *IMAGE_TORSOS)
# The smallest image (height and width) each image torso's VALID convolutions leave a pixel of.
_SMALLEST_IMAGE = {"minatar_cnn": 3, "nature_cnn": 36, "impala_resnet": 1}


def check_torso(torso: str, observation_shape: tuple[int, ...] | None = None) -> None:
    """Raise a one-line ValueError if ``torso`` is unknown or cannot read ``observation_shape``.

    ``mlp`` reads any shape (it flattens the observation); an image torso needs ``[height, width,
    channels]`` at least as large as its convolutions. ``observation_shape=None`` checks the name only.
    """
    if torso not in TORSOS:
        raise ValueError(f"torso: {torso!r} is not one of {list(TORSOS)}")
    if torso == "mlp" or observation_shape is None:
        return
    smallest = _SMALLEST_IMAGE[torso]
    if len(observation_shape) != 3 or min(observation_shape[:2]) < smallest:
        raise ValueError(
            f"torso: {torso!r} reads images [height, width, channels] of at least {smallest}x{smallest}, "
            f"but the environment's observations have shape {tuple(observation_shape)}; use torso 'mlp' for them"
        )


def torso_fields(torso: str, spec) -> dict:
    """The ``torso`` and ``observation_ndim`` fields of a network for ``spec``'s observations (checked)."""
    check_torso(torso, tuple(spec.observation_shape))
    return {"torso": torso, "observation_ndim": len(spec.observation_shape)}


class Encoder(nn.Module):
    """An observation ``[..., *observation_shape]`` as flat features ``[..., features]``.

    ``torso``: ``mlp`` only flattens; an image torso (``minatar_cnn``, ``nature_cnn``,
    ``impala_resnet``) runs its convolutions on ``[..., height, width, channels]`` first.
    ``observation_ndim``: how many trailing axes one observation has (the rest are batch axes).
    """

    torso: str = "mlp"
    observation_ndim: int = 1

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        batch_shape = obs.shape[: obs.ndim - self.observation_ndim]
        if self.torso != "mlp":
            obs = IMAGE_TORSOS[self.torso](obs.reshape(-1, *obs.shape[len(batch_shape):]))
        return obs.reshape(*batch_shape, -1)
